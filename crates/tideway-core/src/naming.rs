//! The naming rules every loader applies to the names it writes into the lake.
//!
//! Source systems name things however they like (`firstName`, `First Name`, `2fa-enabled`,
//! `customAttributes.plan`); analysts write SQL. One set of rules, used by the collector, the
//! extractors, the Kafka source and `lake import`, turns every source name into a lake name:
//!
//! 1. Accented Latin letters fold to ASCII (`é` → `e`); `camelCase` and `PascalCase` split into words: `firstName` → `first_name`,
//!    `HTTPServer` → `http_server`.
//! 2. Lower case; every character other than `a-z`, `0-9` and `_` becomes `_`; runs of `_`
//!    collapse to one, trailing `_` are dropped (a leading `_` is kept: `_id` stays `_id`).
//! 3. A name that starts with a digit gets a leading `_` (`2fa` → `_2fa`); an empty name
//!    becomes `_empty`.
//! 4. A reserved SQL word gets a trailing `_` (`select` → `select_`), so it can be used
//!    unquoted. Words that are only keywords in some positions (`timestamp`, `event`, `name`)
//!    are left alone: the warehouse schema uses them.
//! 5. A name longer than [`NamingRules::max_len`] is cut and ends with `_` and eight hex digits
//!    of a hash of the whole name, so two long names that share a prefix stay distinct.
//!
//! Nested paths join normalized parts with [`PATH_SEPARATOR`] (`__`): `address.city` →
//! `address__city`, `customer.lineItems` → `customer__line_items`. A value whose type conflicts
//! with its column goes to a *variant column*, [`variant_column`]: `age` → `age__v_string`.
//!
//! Within one table, [`NameMap`] keeps names unique: when two source names normalize to the
//! same lake name (`userId` and `user_id`), the later one gets a suffix (`user_id_2`).

use std::collections::HashMap;

/// Joins the normalized parts of a nested path (`address` + `city` → `address__city`).
pub const PATH_SEPARATOR: &str = "__";

/// Prefix of the columns Tideway adds itself (`_tideway_id`, `_tideway_loaded_at`, ...).
pub const SYSTEM_PREFIX: &str = "_tideway_";

/// Words that cannot be used as an unquoted column or table name in DataFusion, Postgres or
/// Spark SQL. Sorted, for binary search.
const RESERVED: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "in",
    "inner",
    "intersect",
    "interval",
    "into",
    "is",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "natural",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "some",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "using",
    "when",
    "where",
    "window",
    "with",
];

/// The limits of the naming rules; [`NamingRules::default`] suits every engine Tideway writes
/// for (Postgres, the most restrictive destination, allows 63 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamingRules {
    /// The longest name, in bytes (names are ASCII after normalization).
    pub max_len: usize,
}

impl Default for NamingRules {
    fn default() -> Self {
        NamingRules { max_len: 63 }
    }
}

impl NamingRules {
    /// Normalizes one name (one part of a path) by the rules in the module docs.
    pub fn normalize(&self, name: &str) -> String {
        let mut out = String::with_capacity(name.len() + 4);
        let chars: Vec<char> = name.chars().flat_map(fold_latin).collect();
        for (i, &c) in chars.iter().enumerate() {
            if c.is_ascii_uppercase() {
                let prev = i.checked_sub(1).map(|p| chars[p]);
                let next = chars.get(i + 1).copied();
                let after_lower =
                    prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
                let acronym_end = prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase());
                if after_lower || acronym_end {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                out.push(c);
            } else {
                out.push('_');
            }
        }
        // Collapse runs of `_`, keep one leading `_` if the source had one, drop trailing ones.
        let leading = name.starts_with('_');
        let mut collapsed = String::with_capacity(out.len());
        for part in out.split('_').filter(|p| !p.is_empty()) {
            if !collapsed.is_empty() {
                collapsed.push('_');
            }
            collapsed.push_str(part);
        }
        let mut name = if leading {
            format!("_{collapsed}")
        } else {
            collapsed
        };
        if name.is_empty() || name == "_" {
            name = "_empty".to_string();
        }
        if name.as_bytes()[0].is_ascii_digit() {
            name.insert(0, '_');
        }
        if RESERVED.binary_search(&name.as_str()).is_ok() {
            name.push('_');
        }
        self.shorten(name)
    }

    /// Normalizes each part of a nested path and joins them with [`PATH_SEPARATOR`].
    pub fn path<S: AsRef<str>>(&self, parts: &[S]) -> String {
        let joined = parts
            .iter()
            .map(|p| self.normalize(p.as_ref()))
            .collect::<Vec<_>>()
            .join(PATH_SEPARATOR);
        self.shorten(joined)
    }

    /// Cuts a name to [`NamingRules::max_len`], ending it with a hash of the whole name.
    pub fn shorten(&self, name: String) -> String {
        if name.len() <= self.max_len {
            return name;
        }
        let hash = format!("_{:08x}", fnv1a32(name.as_bytes()));
        let keep = self.max_len.saturating_sub(hash.len());
        let mut cut = name[..keep].to_string();
        while cut.ends_with('_') {
            cut.pop();
        }
        cut + &hash
    }
}

/// Normalizes a name with the default rules (see the module docs).
pub fn normalize(name: &str) -> String {
    NamingRules::default().normalize(name)
}

/// The name of the variant column that holds values of `type_name` that conflict with the
/// type of `column`: `variant_column("age", "string")` is `age__v_string`.
pub fn variant_column(column: &str, type_name: &str) -> String {
    NamingRules::default().shorten(format!("{column}{PATH_SEPARATOR}v_{type_name}"))
}

/// Whether `column` is a variant column (see [`variant_column`]), and if so of which column.
pub fn variant_of(column: &str) -> Option<(&str, &str)> {
    let (base, suffix) = column.rsplit_once(PATH_SEPARATOR)?;
    let type_name = suffix.strip_prefix("v_")?;
    (!base.is_empty() && !type_name.is_empty()).then_some((base, type_name))
}

/// Assigns unique lake names to the source names of one table, stably: a source name keeps the
/// lake name it was first given, and a later source name that normalizes to a taken lake name
/// gets the first free suffix `_2`, `_3`, ...
#[derive(Debug, Clone, Default)]
pub struct NameMap {
    rules: NamingRules,
    by_source: HashMap<String, String>,
    taken: HashMap<String, String>,
}

impl NameMap {
    /// A map that already holds `existing` lake names (e.g. the columns of an existing table),
    /// each mapped from a source name equal to itself.
    pub fn with_existing<S: AsRef<str>>(rules: NamingRules, existing: &[S]) -> Self {
        let mut map = NameMap {
            rules,
            ..NameMap::default()
        };
        for name in existing {
            let name = name.as_ref().to_string();
            map.by_source.insert(name.clone(), name.clone());
            map.taken.insert(name.clone(), name);
        }
        map
    }

    /// The lake name of `source`, assigning one if it has none yet.
    pub fn name(&mut self, source: &str) -> String {
        if let Some(name) = self.by_source.get(source) {
            return name.clone();
        }
        let base = self.rules.normalize(source);
        let mut candidate = base.clone();
        let mut n = 2;
        while let Some(owner) = self.taken.get(&candidate) {
            if owner == source {
                break;
            }
            let suffix = format!("_{n}");
            candidate = self.rules.shorten(base.clone() + &suffix);
            if candidate.len() > self.rules.max_len || !candidate.ends_with(&suffix) {
                let keep = self.rules.max_len - suffix.len();
                candidate = base[..keep.min(base.len())].to_string() + &suffix;
            }
            n += 1;
        }
        self.taken.insert(candidate.clone(), source.to_string());
        self.by_source.insert(source.to_string(), candidate.clone());
        candidate
    }
}

/// Folds accented Latin letters to their ASCII base (`é` → `e`, `ß` → `ss`), so that
/// `Straße` becomes `strasse` rather than `stra_e`.
fn fold_latin(c: char) -> impl Iterator<Item = char> {
    let folded: &str = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => "a",
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' => "A",
        'æ' => "ae",
        'Æ' => "AE",
        'ç' | 'č' | 'ć' => "c",
        'Ç' | 'Č' | 'Ć' => "C",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ę' | 'Ě' => "E",
        'ì' | 'í' | 'î' | 'ï' | 'ī' => "i",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' => "I",
        'ñ' | 'ń' | 'ň' => "n",
        'Ñ' | 'Ń' | 'Ň' => "N",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => "o",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' => "O",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' => "u",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' => "U",
        'ý' | 'ÿ' => "y",
        'Ý' => "Y",
        'ß' => "ss",
        'š' | 'ś' => "s",
        'Š' | 'Ś' => "S",
        'ž' | 'ź' | 'ż' => "z",
        'Ž' | 'Ź' | 'Ż' => "Z",
        'ł' => "l",
        'Ł' => "L",
        _ => "",
    };
    let single = folded.is_empty().then_some(c);
    single.into_iter().chain(folded.chars())
}

/// 32-bit FNV-1a: a stable hash for name suffixes (std's hasher is not stable across releases).
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_are_sorted_for_binary_search() {
        let mut sorted = RESERVED.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, RESERVED);
    }

    #[test]
    fn camel_case_and_acronyms_split_into_words() {
        assert_eq!(normalize("firstName"), "first_name");
        assert_eq!(normalize("HTTPServer"), "http_server");
        assert_eq!(normalize("userID"), "user_id");
        assert_eq!(normalize("updatedAt"), "updated_at");
        assert_eq!(normalize("address2Line"), "address2_line");
    }

    #[test]
    fn leading_underscore_kept_and_digits_prefixed() {
        assert_eq!(normalize("_id"), "_id");
        assert_eq!(normalize("2fa-enabled"), "_2fa_enabled");
        assert_eq!(normalize("  "), "_empty");
        assert_eq!(normalize("name__"), "name");
        assert_eq!(normalize("Straße"), "strasse");
    }

    #[test]
    fn reserved_words_get_a_suffix() {
        assert_eq!(normalize("Select"), "select_");
        assert_eq!(normalize("order"), "order_");
        assert_eq!(normalize("timestamp"), "timestamp");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let rules = NamingRules { max_len: 20 };
        let a = rules.normalize("a_very_long_column_name_number_one");
        let b = rules.normalize("a_very_long_column_name_number_two");
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert_eq!(a, rules.normalize("a_very_long_column_name_number_one"));
    }

    #[test]
    fn paths_and_variants() {
        assert_eq!(
            NamingRules::default().path(&["customAttributes", "planTier"]),
            "custom_attributes__plan_tier"
        );
        assert_eq!(variant_column("age", "string"), "age__v_string");
        assert_eq!(variant_of("age__v_string"), Some(("age", "string")));
        assert_eq!(variant_of("address__city"), None);
    }

    #[test]
    fn collisions_get_stable_suffixes() {
        let mut map = NameMap::with_existing(NamingRules::default(), &["user_id"]);
        assert_eq!(map.name("user_id"), "user_id");
        assert_eq!(map.name("userId"), "user_id_2");
        assert_eq!(map.name("USER_ID"), "user_id_3");
        assert_eq!(map.name("userId"), "user_id_2");
    }
}
