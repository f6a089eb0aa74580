//! Identifier types and the rules that protect the graph from bad merges: how each type's
//! values are normalized, which values are never identifiers, and how many of a type one
//! profile may hold.

use std::borrow::Cow;
use std::collections::HashSet;

use regex::Regex;

/// Values that are never identifiers, whatever their type (compared case-insensitively after
/// trimming). SDKs and forms produce them when a field is unset.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "",
    "null",
    "nil",
    "none",
    "undefined",
    "unknown",
    "anonymous",
    "n/a",
    "na",
    "nan",
    "-1",
    "0",
    "[object object]",
];

/// All-zero ids (`0`, `000`, `00000000-0000-0000-0000-000000000000`) are placeholders, not ids.
pub const DEFAULT_BLOCKED_PATTERN: &str = r"^[0\-]+$";

/// Default hard cap on the identifiers of one profile.
pub const DEFAULT_MAX_IDS: u32 = 1_000;
/// Default hard cap on the merges one profile may absorb.
pub const DEFAULT_MAX_MERGES: u32 = 100;

/// How the values of one identifier type are made comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalize {
    /// Trimmed, case kept (ids are case-sensitive in most systems).
    #[default]
    Trim,
    /// Trimmed and lower-cased.
    Lower,
    /// Trimmed and lower-cased; a value without exactly one `@` between a local part and a
    /// domain is refused.
    Email,
    /// To E.164 (`+` and 8 to 15 digits) where the value is parseable; kept trimmed otherwise.
    Phone,
}

impl Normalize {
    /// The names accepted in `tideway.toml`.
    pub const NAMES: &[&str] = &["trim", "lower", "email", "phone"];

    /// The normalization named `name`, if any.
    pub fn named(name: &str) -> Option<Normalize> {
        Some(match name {
            "trim" => Normalize::Trim,
            "lower" => Normalize::Lower,
            "email" => Normalize::Email,
            "phone" => Normalize::Phone,
            _ => return None,
        })
    }

    /// `raw` normalized, or why it is not an identifier of this kind.
    pub fn apply<'a>(
        self,
        raw: &'a str,
        default_country: Option<&str>,
    ) -> Result<Cow<'a, str>, String> {
        let v = raw.trim();
        match self {
            Normalize::Trim => Ok(Cow::Borrowed(v)),
            Normalize::Lower => Ok(lower(v)),
            Normalize::Email => {
                let v = lower(v);
                let ok = v.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains('@')
                }) && !v.contains(char::is_whitespace);
                if ok {
                    Ok(v)
                } else {
                    Err(format!(
                        "`{raw}` is not an e-mail address (expected local@domain.tld)"
                    ))
                }
            }
            Normalize::Phone => Ok(e164(v, default_country).map_or(Cow::Borrowed(v), Cow::Owned)),
        }
    }
}

fn lower(v: &str) -> Cow<'_, str> {
    if v.bytes().any(|b| b.is_ascii_uppercase()) || !v.is_ascii() {
        Cow::Owned(v.to_lowercase())
    } else {
        Cow::Borrowed(v)
    }
}

/// `v` as E.164 (`+` then 8 to 15 digits), if it is a phone number written with the usual
/// separators: `+1 (415) 555-0100`, `0044 20 7946 0958`, or ten national digits when a
/// default country code is configured.
pub fn e164(v: &str, default_country: Option<&str>) -> Option<String> {
    let mut digits = String::with_capacity(v.len());
    let mut plus = false;
    for (i, c) in v.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '(' | ')' | '.' | '/' => {}
            _ => return None,
        }
    }
    if !plus && digits.starts_with("00") {
        digits.drain(..2);
        plus = true;
    }
    if !plus {
        let cc = default_country?;
        let national = digits.strip_prefix('0').unwrap_or(&digits);
        digits = format!("{cc}{national}");
    }
    ((8..=15).contains(&digits.len()) && !digits.starts_with('0')).then(|| format!("+{digits}"))
}

/// How many identifiers of one type a profile may hold: at most `max`, counting only those
/// seen within `window_ms` of the edge being added when a window is set ("5 anonymous ids a
/// week").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The most identifiers of the type one profile may hold.
    pub max: u32,
    /// Count only identifiers last seen within this many milliseconds.
    pub window_ms: Option<i64>,
}

/// One identifier type.
#[derive(Debug, Clone)]
pub struct TypeRule {
    /// The type's name (`email`, `user_id`, `kustomer_id`, ...).
    pub name: String,
    /// How values are normalized.
    pub normalize: Normalize,
    /// How many a profile may hold.
    pub limit: Option<Limit>,
}

/// The whole rule set: the types in priority order (first = highest; when an edge must be
/// refused, the one to the lower-priority identifier loses), the blocked values, the caps.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Identifier types, highest priority first.
    pub types: Vec<TypeRule>,
    /// Values refused for every type (lower-cased).
    pub blocked: HashSet<String>,
    /// Patterns refused for every type.
    pub blocked_patterns: Vec<Regex>,
    /// The most identifiers a profile may hold.
    pub max_ids: u32,
    /// The most merges a profile may absorb.
    pub max_merges: u32,
    /// Country calling code for national phone numbers (`1`, `44`), if any.
    pub default_country: Option<String>,
}

impl Default for Rules {
    /// The types of the warehouse schema with safe limits: one `user_id`, five e-mails and
    /// five phones per profile; anonymous ids bounded only by the profile cap.
    fn default() -> Self {
        let t = |name: &str, normalize, limit: Option<u32>| TypeRule {
            name: name.into(),
            normalize,
            limit: limit.map(|max| Limit {
                max,
                window_ms: None,
            }),
        };
        Rules {
            types: vec![
                t("user_id", Normalize::Trim, Some(1)),
                t("email", Normalize::Email, Some(5)),
                t("phone", Normalize::Phone, Some(5)),
                t("anonymous_id", Normalize::Trim, None),
            ],
            blocked: DEFAULT_BLOCKED.iter().map(|s| s.to_string()).collect(),
            blocked_patterns: vec![Regex::new(DEFAULT_BLOCKED_PATTERN).expect("a valid pattern")],
            max_ids: DEFAULT_MAX_IDS,
            max_merges: DEFAULT_MAX_MERGES,
            default_country: None,
        }
    }
}

/// Why a value was not taken as an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The rule: `blocked_value`, `blocked_pattern` or `invalid_value`.
    pub rule: &'static str,
    /// What was wrong, naming the value.
    pub detail: String,
}

impl Rules {
    /// The index of the type `name`, if declared.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }

    /// The index of the type `name`, declaring it (lowest priority, no limit, trimmed) when
    /// it is new: tables that carry the type in a column may name types the configuration
    /// does not.
    pub fn type_index_or_add(&mut self, name: &str) -> usize {
        match self.type_index(name) {
            Some(i) => i,
            None => {
                self.types.push(TypeRule {
                    name: name.to_string(),
                    normalize: Normalize::Trim,
                    limit: None,
                });
                self.types.len() - 1
            }
        }
    }

    /// `raw`, an identifier of type `kind`, normalized; or why it is refused.
    pub fn accept<'a>(&self, kind: usize, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
        let rule = &self.types[kind];
        let value = rule
            .normalize
            .apply(raw, self.default_country.as_deref())
            .map_err(|detail| Rejection {
                rule: "invalid_value",
                detail,
            })?;
        // Blocked values are short: only short values need the lower-cased lookup.
        if value.len() <= 64 && self.blocked.contains(lower(&value).as_ref()) {
            return Err(Rejection {
                rule: "blocked_value",
                detail: format!("`{raw}` is a blocked value (a placeholder, not an identifier)"),
            });
        }
        if let Some(p) = self.blocked_patterns.iter().find(|p| p.is_match(&value)) {
            return Err(Rejection {
                rule: "blocked_pattern",
                detail: format!("`{raw}` matches the blocked pattern `{}`", p.as_str()),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        let r = Rules::default();
        let email = r.type_index("email").unwrap();
        assert_eq!(
            r.accept(email, "  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        let e = r.accept(email, "ann.example.com").unwrap_err();
        assert_eq!(e.rule, "invalid_value");
        assert!(e.detail.contains("`ann.example.com`"), "{}", e.detail);
        assert!(r.accept(email, "a@b").is_err());
    }

    #[test]
    fn phones_become_e164_where_parseable() {
        assert_eq!(
            e164("+1 (415) 555-0100", None).as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            e164("0044 20 7946 0958", None).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            e164("(415) 555-0100", Some("1")).as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            e164("020 7946 0958", Some("44")).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164("(415) 555-0100", None), None);
        assert_eq!(e164("call me", Some("1")), None);
        let r = Rules::default();
        let phone = r.type_index("phone").unwrap();
        assert_eq!(r.accept(phone, "ext. 12").unwrap(), "ext. 12");
    }

    #[test]
    fn placeholders_are_blocked() {
        let r = Rules::default();
        let uid = r.type_index("user_id").unwrap();
        for v in [
            "",
            " ",
            "null",
            "NULL",
            "undefined",
            "Unknown",
            "anonymous",
            "0",
            "-1",
            "NaN",
        ] {
            let e = r.accept(uid, v).unwrap_err();
            assert_eq!(e.rule, "blocked_value", "{v:?}");
        }
        let e = r
            .accept(uid, "00000000-0000-0000-0000-000000000000")
            .unwrap_err();
        assert_eq!(e.rule, "blocked_pattern");
        assert_eq!(r.accept(uid, "u-0").unwrap(), "u-0");
    }
}
