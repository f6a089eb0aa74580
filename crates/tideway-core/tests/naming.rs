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
