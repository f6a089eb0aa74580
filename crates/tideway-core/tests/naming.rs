//! Golden test of the naming rules: `tests/golden/naming.tsv` holds `source<TAB>lake name`
//! pairs; `TIDEWAY_BLESS=1` rewrites the right-hand side from the current rules.

use std::path::PathBuf;

use tideway_core::naming::{NameMap, NamingRules};

#[test]
fn naming_rules_golden() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/naming.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let rules = NamingRules::default();
    let mut out = String::new();
    let mut failures = Vec::new();
    // All names in the file form one table, so collisions get suffixes in file order.
    let mut map = NameMap::with_existing(rules, &[] as &[&str]);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let (source, expected) = line.split_once('\t').unwrap_or((line, ""));
        let source = source.replace("\\t", "\t");
        let actual = map.name(&source);
        if actual != expected {
            failures.push(format!("{source:?}: expected {expected:?}, got {actual:?}"));
        }
        out.push_str(&format!("{}\t{actual}\n", source.replace('\t', "\\t")));
    }
    if std::env::var_os("TIDEWAY_BLESS").is_some() {
        std::fs::write(&path, out).unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "naming golden mismatch (TIDEWAY_BLESS=1 regenerates):\n{}",
        failures.join("\n")
    );
}

/// Golden test of the RudderStack warehouse naming rules: `tests/golden/warehouse_naming.tsv`
/// holds `kind<TAB>input<TAB>expected` lines copied from RudderStack's own tests (the file's
/// header names each source). Unlike `naming.tsv` there is no `TIDEWAY_BLESS`: the expected
/// names are RudderStack's, so a mismatch is a bug here, not a new truth.
#[test]
fn warehouse_naming_golden() {
    use tideway_core::warehouse::{self, WarehouseNaming};

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/warehouse_naming.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(kind), Some(input), Some(expected), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!(
                "line {}: expected kind<TAB>input<TAB>expected: {line:?}",
                n + 1
            );
        };
        let (kind, rules) = match kind.strip_suffix(":divided") {
            Some(kind) => (kind, WarehouseNaming::DIVIDED_DIGITS),
            None => (kind, WarehouseNaming::default()),
        };
        let actual = match kind {
            "safe" => rules.safe_name(input),
            "column" => rules.column_name(&input.split('.').collect::<Vec<_>>()),
            "table" => rules.table_name(input),
            "event" => rules.event_value(input),
            "provider" => warehouse::provider_name(input),
            "schema" => warehouse::schema_name(input),
            "snake" => warehouse::snake_case(input, rules.digits),
            other => panic!("line {}: unknown kind {other:?}", n + 1),
        };
        cases += 1;
        if actual != expected {
            failures.push(format!(
                "line {}: {kind} {input:?}: expected {expected:?}, got {actual:?}",
                n + 1
            ));
        }
    }
    assert!(cases >= 40, "only {cases} cases in {}", path.display());
    assert!(
        failures.is_empty(),
        "warehouse naming golden mismatch ({} of {cases}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
