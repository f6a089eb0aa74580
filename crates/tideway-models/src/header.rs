//! A model's configuration, from its header block.
//!
//! Three spellings are accepted, so that models can be brought from where they were written:
//!
//! **Native** (TOML in a block comment that starts with `tideway`):
//! ```sql
//! /* tideway
//! materialized = "incremental"   # table (default) | view | incremental
//! unique_key = "customer_id"     # or a list; incremental models merge by it
//! time_column = "event_at"       # incremental models replace each [start, end) window by it
//! interval = "1h"                # how often a window closes: 15m, 1h, 1d, ...
//! owner = "growth"
//! description = "One row per customer."
//! [tests]
//! customer_id = ["not_null", "unique"]
//! plan = [{ accepted_values = ["free", "pro", "enterprise"] }]
//! account_id = [{ relationships = "crm.accounts.id" }]
//! */
//! select ...
//! ```
//!
//! **Datacoral** annotations in any leading comment: `@matview-schema`, `@matview-name`,
//! `@matview-type` (`regular` = table, `incremental`, `view`), `@interval-in-minutes`
//! (`@datacoral O-1.0.0` version markers are accepted and ignored).
//!
//! **dbt** `{{ config(materialized='table', unique_key='id', schema='marts') }}` anywhere in
//! the file (see [`crate::template`]).
//!
//! Unknown keys are errors that list the known ones.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::diagnostic::{Code, Diagnostic, Lines};

/// How a model's table is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    /// The whole table is rebuilt each run and replaces the old one atomically.
    #[default]
    Table,
    /// No data is stored: readers run the query.
    View,
    /// Each run adds the rows of its window (by `time_column`) or merges by `unique_key`.
    Incremental,
}

impl Materialized {
    pub const CHOICES: &str = "table, view, incremental";

    pub fn parse(s: &str) -> Option<Materialized> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Some(Materialized::Table),
            "view" => Some(Materialized::View),
            "incremental" => Some(Materialized::Incremental),
            _ => None,
        }
    }
}

/// A data test on one column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnTest {
    NotNull,
    Unique,
    AcceptedValues(Vec<String>),
    /// Every non-null value is in `table.column` (`schema.table.column`).
    Relationships {
        table: String,
        column: String,
    },
}

/// A model's configuration, with defaults applied.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// Overrides the schema taken from the model's folder.
    pub schema: Option<String>,
    /// Overrides the table name taken from the file name.
    pub name: Option<String>,
    pub materialized: Materialized,
    pub unique_key: Vec<String>,
    pub time_column: Option<String>,
    /// How often a window closes (default: one day).
    #[serde(serialize_with = "serialize_seconds")]
    pub interval: Option<Duration>,
    pub owner: Option<String>,
    pub description: Option<String>,
    /// Column tests, by column name.
    pub tests: BTreeMap<String, Vec<ColumnTest>>,
    /// Custom assertions: queries whose rows are failures.
    pub assertions: Vec<String>,
}

fn serialize_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

/// The native header's TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Native {
    schema: Option<String>,
    name: Option<String>,
    materialized: Option<toml::Spanned<String>>,
    unique_key: Option<OneOrMany>,
    time_column: Option<String>,
    interval: Option<toml::Spanned<String>>,
    owner: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tests: BTreeMap<String, Vec<toml::Spanned<TestSpec>>>,
    #[serde(default)]
    assertions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TestSpec {
    Name(String),
    Table(BTreeMap<String, toml::Value>),
}

const TEST_CHOICES: &str =
    "not_null, unique, { accepted_values = [...] }, { relationships = \"schema.table.column\" }";

impl TestSpec {
    fn into_test(self) -> Result<ColumnTest, String> {
        match self {
            TestSpec::Name(name) => match name.as_str() {
                "not_null" => Ok(ColumnTest::NotNull),
                "unique" => Ok(ColumnTest::Unique),
                other => Err(format!(
                    "unknown test `{other}`; known tests: {TEST_CHOICES}"
                )),
            },
            TestSpec::Table(table) => {
                let mut entries = table.into_iter();
                let (Some((kind, value)), None) = (entries.next(), entries.next()) else {
                    return Err(format!("a test table has exactly one key: {TEST_CHOICES}"));
                };
                match (kind.as_str(), value) {
                    ("accepted_values", toml::Value::Array(values)) => values
                        .into_iter()
                        .map(|v| match v {
                            toml::Value::String(s) => Ok(s),
                            toml::Value::Integer(i) => Ok(i.to_string()),
                            toml::Value::Boolean(b) => Ok(b.to_string()),
                            other => Err(format!(
                                "accepted_values takes strings, numbers or booleans, not `{other}`"
                            )),
                        })
                        .collect::<Result<_, _>>()
                        .map(ColumnTest::AcceptedValues),
                    ("relationships", toml::Value::String(target)) => {
                        match target.rsplit_once('.') {
                            Some((table, column)) if table.contains('.') => {
                                Ok(ColumnTest::Relationships {
                                    table: table.to_string(),
                                    column: column.to_string(),
                                })
                            }
                            _ => Err(format!(
                                "relationships names `schema.table.column`, not `{target}`"
                            )),
                        }
                    }
                    (kind, _) => Err(format!(
                        "unknown or malformed test `{kind}`; known tests: {TEST_CHOICES}"
                    )),
                }
            }
        }
    }
}

pub use tideway_core::time::parse_interval;

const INTERVAL_HELP: &str =
    "an interval is a number and a unit: 15m, 1h, 6 hours, 1d (or hourly, daily, weekly)";

/// The leading comments of a SQL text: (byte offset of the comment's body, body, is block).
fn leading_comments(sql: &str) -> Vec<(usize, &str, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = sql.as_bytes();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if sql[i..].starts_with("--") {
            let end = sql[i..].find('\n').map_or(sql.len(), |e| i + e);
            out.push((i + 2, &sql[i + 2..end], false));
            i = end;
        } else if sql[i..].starts_with("/*") {
            let Some(e) = sql[i + 2..].find("*/") else {
                break;
            };
            out.push((i + 2, &sql[i + 2..i + 2 + e], true));
            i = i + 2 + e + 2;
        } else if sql[i..].starts_with("{#") {
            // A dbt comment before the query.
            let Some(e) = sql[i..].find("#}") else { break };
            i += e + 2;
        } else {
            break;
        }
    }
    out
}

/// Reads the header of `source` (the file's text). Problems become diagnostics; the config
/// returned has whatever could be read.
pub fn parse(file: &std::path::Path, source: &str) -> (ModelConfig, Vec<Diagnostic>) {
    let mut config = ModelConfig::default();
    let mut errors = Vec::new();
    let lines = Lines::new(source);
    for (start, body, block) in leading_comments(source) {
        if block && body.trim_start().starts_with("tideway") {
            let skip = body.find("tideway").unwrap_or(0) + "tideway".len();
            native(
                file,
                source,
                &lines,
                start + skip,
                &body[skip..],
                &mut config,
                &mut errors,
            );
        } else if body.contains("@matview-")
            || body.contains("@interval-in-minutes")
            || body.contains("@datacoral")
        {
            datacoral(file, source, &lines, start, body, &mut config, &mut errors);
        }
    }
    (config, errors)
}

fn native(
    file: &std::path::Path,
    source: &str,
    lines: &Lines,
    start: usize,
    body: &str,
    config: &mut ModelConfig,
    errors: &mut Vec<Diagnostic>,
) {
    let at = |offset: usize, len: usize, message: String| {
        Diagnostic::at(
            Code::Header,
            file,
            source,
            lines.position(start + offset),
            len,
            message,
        )
    };
    let native: Native = match toml::from_str(body) {
        Ok(n) => n,
        Err(e) => {
            let (offset, len) = e.span().map_or((0, 1), |s| (s.start, s.len()));
            let message = e.message().replace('\n', " ");
            let message = message.replace("expected one of", "the header keys are");
            errors.push(at(offset, len, format!("in the model header: {message}")));
            return;
        }
    };
    config.schema = native.schema.or(config.schema.take());
    config.name = native.name.or(config.name.take());
    if let Some(m) = native.materialized {
        match Materialized::parse(m.get_ref()) {
            Some(v) => config.materialized = v,
            None => errors.push(at(
                m.span().start,
                m.span().len(),
                format!(
                    "unknown materialization `{}`; choose one of {}",
                    m.get_ref(),
                    Materialized::CHOICES
                ),
            )),
        }
    }
    if let Some(k) = native.unique_key {
        config.unique_key = k.into_vec();
    }
    config.time_column = native.time_column.or(config.time_column.take());
    if let Some(i) = native.interval {
        match parse_interval(i.get_ref()) {
            Some(d) => config.interval = Some(d),
            None => errors.push(
                at(
                    i.span().start,
                    i.span().len(),
                    format!("`{}` is not an interval", i.get_ref()),
                )
                .with_help(INTERVAL_HELP),
            ),
        }
    }
    config.owner = native.owner.or(config.owner.take());
    config.description = native.description.or(config.description.take());
    for (column, tests) in native.tests {
        for spec in tests {
            let span = spec.span();
            match spec.into_inner().into_test() {
                Ok(t) => config.tests.entry(column.clone()).or_default().push(t),
                Err(message) => errors.push(at(span.start, span.len(), message)),
            }
        }
    }
    config.assertions.extend(native.assertions);
}

const DATACORAL_KEYS: &str = "@matview-schema, @matview-name, @matview-type, @interval-in-minutes";

fn datacoral(
    file: &std::path::Path,
    source: &str,
    lines: &Lines,
    start: usize,
    body: &str,
    config: &mut ModelConfig,
    errors: &mut Vec<Diagnostic>,
) {
    // `@key value` pairs, whitespace separated, possibly several per line.
    let mut rest = body;
    let mut offset = 0;
    while let Some(i) = rest.find('@') {
        let key_start = offset + i;
        let after = &rest[i..];
        let key_end = after
            .find(|c: char| c.is_whitespace())
            .unwrap_or(after.len());
        let key = &after[..key_end];
        let value_part = after[key_end..].trim_start();
        let value_end = value_part
            .find(|c: char| c.is_whitespace() || c == '*')
            .unwrap_or(value_part.len());
        let value = value_part[..value_end].trim();
        let value_offset = start + key_start + (after.len() - value_part.len());
        let err = |offset: usize, len: usize, message: String| {
            Diagnostic::at(
                Code::Header,
                file,
                source,
                lines.position(offset),
                len,
                message,
            )
        };
        match key {
            "@matview-schema" => config.schema = Some(value.to_string()),
            "@matview-name" => config.name = Some(value.to_string()),
            "@matview-type" => match value.to_ascii_lowercase().as_str() {
                "regular" | "table" => config.materialized = Materialized::Table,
                "incremental" | "partitioned" => config.materialized = Materialized::Incremental,
                "view" => config.materialized = Materialized::View,
                _ => errors.push(err(
                    value_offset,
                    value.len(),
                    format!(
                        "unknown @matview-type `{value}`; choose one of regular, incremental, view"
                    ),
                )),
            },
            "@interval-in-minutes" => match value.parse::<u64>() {
                Ok(m) if m > 0 => config.interval = Some(Duration::from_secs(m * 60)),
                _ => errors.push(err(
                    value_offset,
                    value.len(),
                    format!("@interval-in-minutes takes a whole number of minutes, not `{value}`"),
                )),
            },
            "@datacoral" => {}
            k if (k.starts_with("@matview-") || k.starts_with("@interval"))
                && k[1..].chars().all(|c| c.is_ascii_lowercase() || c == '-') =>
            {
                errors.push(err(
                    start + key_start,
                    key.len(),
                    format!("unknown annotation `{k}`; known: {DATACORAL_KEYS}"),
                ))
            }
            // An `@` in prose (an e-mail address in a comment) is not an annotation.
            _ => {}
        }
        let consumed = i + key_end.max(1);
        offset += consumed;
        rest = &rest[consumed..];
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn header(sql: &str) -> (ModelConfig, Vec<String>) {
        let (c, e) = parse(Path::new("m.sql"), sql);
        (c, e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_native_header_sets_every_key() {
        let (c, e) = header(
            "/* tideway\nmaterialized = \"incremental\"\nunique_key = [\"a\", \"b\"]\ntime_column = \"ts\"\ninterval = \"15m\"\nowner = \"growth\"\n[tests]\na = [\"not_null\", \"unique\", { accepted_values = [\"x\", 1] }]\nb = [{ relationships = \"crm.accounts.id\" }]\n*/\nselect 1",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.materialized, Materialized::Incremental);
        assert_eq!(c.unique_key, ["a", "b"]);
        assert_eq!(c.interval, Some(Duration::from_secs(900)));
        assert_eq!(
            c.tests["a"],
            [
                ColumnTest::NotNull,
                ColumnTest::Unique,
                ColumnTest::AcceptedValues(vec!["x".into(), "1".into()])
            ]
        );
        assert_eq!(
            c.tests["b"],
            [ColumnTest::Relationships {
                table: "crm.accounts".into(),
                column: "id".into()
            }]
        );
    }

    #[test]
    fn a_bad_header_value_names_the_line_and_the_choices() {
        let (_, e) = header("-- a model\n/* tideway\nmaterialized = \"tabel\"\n*/\nselect 1");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains(
                "unknown materialization `tabel`; choose one of table, view, incremental"
            ),
            "{}",
            e[0]
        );
        assert!(e[0].contains("m.sql:3:16"), "{}", e[0]);
        let (_, e) = header("/* tideway\nmaterialised = \"table\"\n*/\nselect 1");
        assert!(e[0].contains("unknown field `materialised`"), "{}", e[0]);
        assert!(e[0].contains("m.sql:2:1"), "{}", e[0]);
        let (_, e) = header("/* tideway\ninterval = \"often\"\n*/\nselect 1");
        assert!(e[0].contains("`often` is not an interval"), "{}", e[0]);
    }

    #[test]
    fn datacoral_annotations_are_read() {
        let (c, e) = header(
            "/*\n * @datacoral O-1.0.0\n * @matview-schema analytics\n * @matview-name customer_health\n * @matview-type regular\n * @interval-in-minutes 60\n */\nselect 1",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.schema.as_deref(), Some("analytics"));
        assert_eq!(c.name.as_deref(), Some("customer_health"));
        assert_eq!(c.materialized, Materialized::Table);
        assert_eq!(c.interval, Some(Duration::from_secs(3600)));
        let (_, e) = header("-- @matview-kind regular\nselect 1");
        assert!(
            e[0].contains("unknown annotation `@matview-kind`"),
            "{}",
            e[0]
        );
        // Prose about annotations is not an annotation.
        let (_, e) =
            header("-- dbt's config() and Datacoral's @matview-* annotations work too\nselect 1");
        assert!(e.is_empty(), "{e:?}");
        let (_, e) = header("-- @interval-in-minutes soon\nselect 1");
        assert!(e[0].contains("m.sql:1:25"), "{}", e[0]);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_interval("6 hours"),
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(parse_interval("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("daily"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("0m"), None);
        assert_eq!(parse_interval("5 fortnights"), None);
    }
}
