//! The `[unify]` section of `tideway.toml`.
//!
//! ```toml
//! [unify]
//! priority = ["user_id", "email", "kustomer_id", "phone", "anonymous_id"]
//! blocked = ["test@test.com"]            # on top of the built-in placeholders
//! blocked_patterns = ["^test-"]
//! max_ids = 1000                         # per profile
//! max_merges = 100                       # per profile
//! default_country = "1"                  # national phone numbers are +1
//!
//! [unify.types.email]
//! limit = 5
//! [unify.types.anonymous_id]
//! limit = { max = 5, window = "7d" }     # five seen within any week
//! [unify.types.kustomer_id]
//! normalize = "trim"                     # trim | lower | email | phone
//! [unify.types.user_id]
//! limit = false                          # no limit (the default is 1)
//!
//! [[unify.sources]]                      # the warehouse tables of every collect source are
//! table = "kustomer.customers"           # sources already (`defaults = false` to turn off)
//! ids = { email = "email", kustomer_id = "id", user_id = "external_id" }
//! time = "updated_at"                    # when the row happened (default: timestamp columns)
//! key = "id"                             # the row's key, for provenance
//!
//! [[unify.sources]]                      # tables that carry the type as data
//! table = "crm.identity_edges"
//! typed = [["id_type_a", "id_a"], ["id_type_b", "id_b"]]
//! ```

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use tideway_core::config::{ConfigErrors, Diags, isolate, parse_collecting};
use tideway_core::time::parse_interval;
use toml::Spanned;

use crate::rules::{Limit, Normalize, Rules, TypeRule};

/// Where identifiers come from: one table and the columns that carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// The table, `schema.table`.
    pub table: String,
    /// `(type, column)`: the column holds identifiers of that type.
    pub ids: Vec<(String, String)>,
    /// `(type column, value column)`: the type is data.
    pub typed: Vec<(String, String)>,
    /// The column with the row's time, if not the default.
    pub time: Option<String>,
    /// The column with the row's key, if any.
    pub key: Option<String>,
}

/// The parsed `[unify]` section.
#[derive(Debug, Clone)]
pub struct UnifyConfig {
    /// The rules: types, priorities, limits, blocked values, caps.
    pub rules: Rules,
    /// Tables named in `[[unify.sources]]`.
    pub sources: Vec<SourceTable>,
    /// Whether the warehouse tables of every collect source are sources too.
    pub defaults: bool,
    /// Whether `tideway.toml` has a `[unify]` section (`tideway serve` runs unify only then).
    pub declared: bool,
}

impl Default for UnifyConfig {
    fn default() -> Self {
        UnifyConfig {
            rules: Rules::default(),
            sources: Vec::new(),
            defaults: true,
            declared: false,
        }
    }
}

#[derive(Deserialize, Default)]
struct Top {
    #[serde(default)]
    unify: Option<RawUnify>,
}

impl Top {
    fn unify_declared(&self) -> bool {
        self.unify.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUnify {
    defaults: Option<bool>,
    priority: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    blocked: Vec<String>,
    #[serde(default)]
    blocked_patterns: Vec<Spanned<String>>,
    max_ids: Option<u32>,
    max_merges: Option<u32>,
    default_country: Option<Spanned<String>>,
    #[serde(default)]
    types: BTreeMap<String, RawType>,
    #[serde(default)]
    sources: Vec<RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    normalize: Option<Spanned<String>>,
    limit: Option<RawLimit>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawLimit {
    /// `limit = false`: no limit (the built-in types have one).
    Off(bool),
    Max(u32),
    Windowed {
        max: u32,
        window: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    table: Spanned<String>,
    #[serde(default)]
    ids: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    typed: Vec<(String, String)>,
    time: Option<String>,
    key: Option<String>,
}

impl UnifyConfig {
    /// Parses the `[unify]` section of `text` (a whole `tideway.toml`, named `file`); the
    /// defaults when there is none.
    pub fn parse(text: &str, file: &str) -> Result<UnifyConfig, ConfigErrors> {
        let mut diags = Diags::new(text, file);
        let only = isolate(text, &["unify"]);
        let (raw, declared) = match parse_collecting::<Top>(&only) {
            Ok(top) => {
                let declared = top.unify_declared();
                (top.unify.unwrap_or_default(), declared)
            }
            Err(errors) => {
                diags.extend(errors);
                return diags.finish(None);
            }
        };
        let mut rules = Rules::default();
        // Types: the built-in ones, then the declared ones by name, then `priority` reorders.
        for (name, t) in &raw.types {
            let i = rules.type_index_or_add(name);
            if let Some(n) = &t.normalize {
                match Normalize::named(n.get_ref()) {
                    Some(norm) => rules.types[i].normalize = norm,
                    None => diags.at(
                        Some(n.span()),
                        format!(
                            "unknown normalize `{}` for type `{name}`; known: {}",
                            n.get_ref(),
                            Normalize::NAMES.join(", ")
                        ),
                    ),
                }
            }
            match &t.limit {
                None => {}
                Some(RawLimit::Off(on)) => {
                    if *on {
                        diags.at(
                            None,
                            format!("`limit` of `{name}` is a number, `{{ max = 5, window = \"7d\" }}`, or false for none"),
                        );
                    }
                    rules.types[i].limit = None;
                }
                Some(RawLimit::Max(max)) => {
                    rules.types[i].limit = Some(Limit {
                        max: *max,
                        window_ms: None,
                    })
                }
                Some(RawLimit::Windowed { max, window }) => match parse_interval(window) {
                    Some(d) => {
                        rules.types[i].limit = Some(Limit {
                            max: *max,
                            window_ms: Some(d.as_millis() as i64),
                        })
                    }
                    None => diags.at(
                        None,
                        format!(
                            "limit window `{window}` of `{name}` is not a duration such as \"7d\", \"24h\" or \"weekly\""
                        ),
                    ),
                },
            }
        }
        if let Some(priority) = &raw.priority {
            let mut ordered: Vec<TypeRule> = Vec::new();
            for name in priority.get_ref() {
                if ordered.iter().any(|t| &t.name == name) {
                    diags.at(
                        Some(priority.span()),
                        format!("`{name}` is listed twice in `priority`"),
                    );
                    continue;
                }
                let i = rules.type_index_or_add(name);
                ordered.push(rules.types[i].clone());
            }
            for t in &rules.types {
                if !ordered.iter().any(|o| o.name == t.name) {
                    ordered.push(t.clone());
                }
            }
            rules.types = ordered;
        }
        for b in raw.blocked {
            rules.blocked.insert(b.trim().to_lowercase());
        }
        for p in &raw.blocked_patterns {
            match Regex::new(p.get_ref()) {
                Ok(re) => rules.blocked_patterns.push(re),
                Err(e) => diags.at(
                    Some(p.span()),
                    format!("blocked pattern `{}`: {e}", p.get_ref()),
                ),
            }
        }
        if let Some(m) = raw.max_ids {
            rules.max_ids = m;
        }
        if let Some(m) = raw.max_merges {
            rules.max_merges = m;
        }
        if let Some(cc) = &raw.default_country {
            let v = cc.get_ref().trim_start_matches('+');
            if v.is_empty() || v.len() > 3 || !v.bytes().all(|b| b.is_ascii_digit()) {
                diags.at(
                    Some(cc.span()),
                    format!(
                        "default_country `{}` is not a calling code such as \"1\" or \"44\"",
                        cc.get_ref()
                    ),
                );
            }
            rules.default_country = Some(v.to_string());
        }
        let mut sources = Vec::new();
        for s in raw.sources {
            let table = s.table.get_ref().clone();
            if !table.contains('.') {
                diags.at(
                    Some(s.table.span()),
                    format!("source table `{table}` needs its schema: `schema.table`"),
                );
            }
            let mut ids = Vec::new();
            for (kind, cols) in s.ids {
                rules.type_index_or_add(&kind);
                match cols {
                    OneOrMany::One(c) => ids.push((kind, c)),
                    OneOrMany::Many(cs) => ids.extend(cs.into_iter().map(|c| (kind.clone(), c))),
                }
            }
            if ids.is_empty() && s.typed.is_empty() {
                diags.at(
                    Some(s.table.span()),
                    format!(
                        "source `{table}` names no identifier columns: add `ids = {{ email = \"email_column\" }}` or `typed = [[\"type_column\", \"value_column\"]]`"
                    ),
                );
            }
            sources.push(SourceTable {
                table,
                ids,
                typed: s.typed,
                time: s.time,
                key: s.key,
            });
        }
        diags.finish(Some(UnifyConfig {
            rules,
            sources,
            defaults: raw.defaults.unwrap_or(true),
            declared,
        }))
    }
}

/// The identifier columns of a warehouse table (`identifies`, `tracks`, ...) of a collect
/// source, as `(type, column)`, among `columns` (the table's own).
pub fn warehouse_ids(table: &str, columns: &[String]) -> Vec<(String, String)> {
    let wanted: &[(&str, &str)] = match table {
        "identifies" => &[
            ("user_id", "user_id"),
            ("anonymous_id", "anonymous_id"),
            ("email", "email"),
            ("email", "context_traits_email"),
            ("phone", "phone"),
            ("phone", "context_traits_phone"),
        ],
        "users" => &[("user_id", "id"), ("email", "email"), ("phone", "phone")],
        // `alias(userId, previousId)`: the previous id is the anonymous id the user had.
        "aliases" => &[("user_id", "user_id"), ("anonymous_id", "previous_id")],
        "tracks" | "pages" | "screens" | "groups" => {
            &[("user_id", "user_id"), ("anonymous_id", "anonymous_id")]
        }
        _ => &[],
    };
    wanted
        .iter()
        .filter(|(_, c)| columns.iter().any(|have| have == c))
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect()
}

/// The tables of a collect source's schema that [`warehouse_ids`] knows.
pub const WAREHOUSE_TABLES: &[&str] = &[
    "identifies",
    "users",
    "aliases",
    "tracks",
    "pages",
    "screens",
    "groups",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_section_parses() {
        let text = r#"
[unify]
priority = ["user_id", "email", "kustomer_id"]
blocked = ["Test@Test.com"]
blocked_patterns = ["^test-"]
max_ids = 50
default_country = "+1"
[unify.types.anonymous_id]
limit = { max = 5, window = "7d" }
[unify.types.kustomer_id]
normalize = "lower"
[[unify.sources]]
table = "kustomer.customers"
ids = { email = ["email", "secondary_email"], kustomer_id = "id" }
time = "updated_at"
key = "id"
"#;
        let c = UnifyConfig::parse(text, "tideway.toml").unwrap();
        let names: Vec<_> = c.rules.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["user_id", "email", "kustomer_id", "phone", "anonymous_id"]
        );
        assert_eq!(
            c.rules.types[4].limit,
            Some(Limit {
                max: 5,
                window_ms: Some(7 * 86_400_000)
            })
        );
        assert_eq!(c.rules.types[2].normalize, Normalize::Lower);
        assert!(c.rules.blocked.contains("test@test.com"));
        assert_eq!(c.rules.max_ids, 50);
        assert_eq!(c.rules.default_country.as_deref(), Some("1"));
        assert_eq!(c.sources[0].ids.len(), 3);
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let text = "[unify]\nmax_ids = 5\n[unify.types.email]\nnormalize = \"upper\"\n[[unify.sources]]\ntable = \"customers\"\n";
        let e = UnifyConfig::parse(text, "tideway.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tideway.toml:4"), "{e}");
        assert!(e.contains("unknown normalize `upper`"), "{e}");
        assert!(e.contains("needs its schema"), "{e}");
        assert!(e.contains("names no identifier columns"), "{e}");
    }

    #[test]
    fn no_section_means_defaults() {
        let c = UnifyConfig::parse("[project]\nname = \"x\"\n", "tideway.toml").unwrap();
        assert!(c.defaults);
        assert!(c.sources.is_empty());
    }
}
