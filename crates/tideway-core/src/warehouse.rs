//! The names RudderStack's warehouse destinations give to Segment-spec event fields, reproduced
//! so that Tideway lands events in the lake under the column and table names RudderStack (and,
//! for the common cases, Segment) users already query.
//!
//! These rules are *not* Tideway's own [`naming`](crate::naming) rules: they are a faithful
//! copy of someone else's, quirks included (a 63-byte cut may leave a trailing `_`, `1CComega`
//! becomes `_1_c_comega`, an all-symbol key is dropped rather than renamed). They are those of
//! RudderStack's **Postgres** destination, the lower-case warehouse with the tightest limits.
//!
//! # Sources
//!
//! Two implementations of the same rules were read, and agree:
//!
//! - `rudderlabs/rudder-server` (commit `f2655fbbe2260deb4e01c2a54da1a827291713bb`), the Go
//!   port that now runs in the processor, under
//!   `processor/internal/transformer/destination_transformer/embedded/warehouse/`:
//!   `safe.go` (`transformColumnName`, `transformTableName`, `safeColumnName`,
//!   `safeTableName`), `internal/snakecase/snakecase.go` (the word splitter),
//!   `internal/reservedkeywords/tablescolumns.json` (reserved words), `events.go` and
//!   `internal/utils/utils.go` (`excludeRudderCreatedTableNames`), `set.go` (how nested keys
//!   are joined), `options.go` (`underscoreDivideNumbers`); tests in `safe_test.go`,
//!   `internal/snakecase/snakecase_test.go`, `events_test.go`, `transformer_test.go`.
//! - `rudderlabs/rudder-transformer` (commit `c98d160cfaddc5fe5ddee7891c4f4a23014b9aa8`), the
//!   original JavaScript: `src/warehouse/v1/util.js`, `src/warehouse/snakecase/snakecase.js`
//!   and `unicodeWords.js` (a copy of lodash's `words`), `src/warehouse/index.js`,
//!   `src/warehouse/config/ReservedKeywords.json` (same POSTGRES list as the Go
//!   `tablescolumns.json`); tests in `test/__tests__/warehouse.test.js`,
//!   `test/__tests__/snakecase.test.js` and `test/__tests__/data/warehouse/names.js`.
//! - Schema names: `rudder-server` `warehouse/utils/utils.go` (`ToSafeNamespace`,
//!   `ToProviderCase`), `warehouse/utils/reservedkeywords.go`, tests in
//!   `warehouse/utils/utils_test.go`; it snake-cases with `iancoleman/strcase` v0.3.0
//!   (`snake.go`, `ToSnake`).
//!
//! # The rules
//!
//! **One identifier** ([`safe_name`]) goes through `transformColumnName` then
//! `safeColumnName`:
//!
//! 1. *Symbols.* Only ASCII letters and digits survive; every run of anything else (spaces,
//!    `$`, `-`, `_`, `é`, emoji) separates words, and the runs of letters and digits are joined
//!    with one `_`: `ome$ga` → `ome_ga`, `9mega________-________90` → `9mega_90`, `Cízǔ` →
//!    `C_z`. Nothing left (`@#$%`) gives the empty string: RudderStack **drops** such a field
//!    rather than inventing a name for it. (`safe.go`: `extractAlphanumericValues`.)
//! 2. *Snake case* ([`snake_case`], lodash's `snakeCase`): split into words at case changes
//!    (`camelCase`, `XMLHttp` → `xml_http`, `LETTERSAeiou` → `letters_aeiou`), lower-case them
//!    and join with `_`. Whether a digit run is a word of its own is the destination setting
//!    `underscoreDivideNumbers` ([`Digits`]): RudderStack Postgres destinations created
//!    today do not have it, so digits stay with the letters before or after them
//!    (`omega v2` → `omega_v2`, `CamelCase123Key` → `camel_case123_key`); older destinations
//!    have it set, and digits become words (`omega_v_2`, `camel_case_123_key`). Ordinals stay
//!    whole in both (`1st`, `4TH`). (`internal/snakecase/snakecase.go`; the default is in
//!    `options.go` and, with the comment "for new destinations this config will not be
//!    present which means we will treat it as false", in rudder-transformer
//!    `src/warehouse/index.js`.)
//! 3. *Leading underscores* of the raw name are kept, so keys can be escaped by hand:
//!    `_timestamp` stays `_timestamp`, `__abc_123` stays `__abc_123`.
//! 4. *Leading digit*: a name that starts with a digit gets a `_`: `9mega` → `_9mega`.
//! 5. *Length*: cut to 63 bytes (Postgres' `NAMEDATALEN - 1`), plainly, with no hash: two
//!    long names with the same first 63 bytes become the same column, and the cut can leave
//!    a trailing `_`.
//! 6. *Case*: lower-cased (Postgres; Snowflake would upper-case instead).
//! 7. *Reserved words*: a name that is one of the 93 Postgres reserved words gets a leading
//!    `_`: `select` → `_select`, `user` → `_user`, `current_date` → `_current_date`
//!    ([`is_reserved`]). Words that are reserved only in some positions (`timestamp`,
//!    `event`, `name`) are not on the list and are kept.
//!
//! **A nested field** ([`column_name`]) is the raw keys joined with `_` *before* the rules
//! above are applied to the whole: `context.traits.firstName` → `context_traits_first_name`
//! (`set.go`: `processNestedObject` builds `prefix + key + "_"`). Track properties, identify
//! traits and group traits are top-level (`properties.plan` → `plan`); `context` keeps its
//! name as a prefix (`context.page.url` → `context_page_url`).
//!
//! **A track event's table** ([`table_name`]): the event name goes through rules 1–4 (this is
//! also the value of the `event` column of `tracks`, [`event_value`]), then through all of
//! rules 1–7 again, and finally a name that is one of RudderStack's own tables gets a leading
//! `_`: `users`, `identifies`, `tracks`, `pages`, `screens`, `aliases`, `groups` and
//! `accounts` become `_users`, ... (`events.go`: `excludeRudderCreatedTableNames`, unless the
//! event carries the integration option `skipReservedKeywordsEscaping`). An event name with
//! no letters or digits gets no event table (the empty string), only a `tracks` row.
//!
//! **A schema** ([`schema_name`]), named from the source name or the destination's
//! `namespace` setting (`ToSafeNamespace`): rule 1, then `strcase.ToSnake`, which always
//! splits digits from letters (`k3_namespace` → `k_3_namespace`, `omega v2` → `omega_v_2`),
//! rule 4, an empty result becomes `stringempty`, a reserved word gets a leading `_` (the same
//! list, except that `to` is allowed), and the result is cut to 127 bytes, not 63.
//!
//! Not reproduced here, because they are about which columns exist rather than what they are
//! called: RudderStack drops user properties whose column collides with one it sets itself
//! (`id`, `received_at`, `channel`, ...), flattens cloud-source objects only to three levels,
//! and writes `jsonPaths` keys as JSON strings.

/// Longest identifier Postgres keeps (`NAMEDATALEN - 1`); RudderStack cuts column and table
/// names to it.
pub const POSTGRES_MAX_IDENTIFIER_LEN: usize = 63;

/// Longest identifier RudderStack writes to any warehouse; also the limit for schema names.
pub const MAX_IDENTIFIER_LEN: usize = 127;

/// The schema name RudderStack uses when nothing is left of the source name.
pub const EMPTY_SCHEMA: &str = "stringempty";

/// How [`snake_case`] treats digits: RudderStack's per-destination `underscoreDivideNumbers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Digits {
    /// Digits stay in the word they touch: `omega v2` → `omega_v2`, `abc123def456` →
    /// `abc123_def456`. The setting absent, i.e. false: destinations created since
    /// RudderStack introduced it (rudder-transformer #3752) do not carry it. Segment's own
    /// `segmentio/go-snakecase` also keeps digits attached (`Base64Encode` → `base64_encode`).
    #[default]
    Attached,
    /// Digit runs are words of their own: `omega v2` → `omega_v_2`, `9mega` → `_9_mega`.
    /// `underscoreDivideNumbers: true`, as set on older RudderStack destinations.
    Divided,
}

/// The warehouse naming rules for one destination setting; the free functions of this module
/// use [`WarehouseNaming::default`] (digits [`Digits::Attached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WarehouseNaming {
    /// Whether digits are words of their own.
    pub digits: Digits,
}

impl WarehouseNaming {
    /// The rules of a destination with `underscoreDivideNumbers: true` (older destinations).
    pub const DIVIDED_DIGITS: WarehouseNaming = WarehouseNaming {
        digits: Digits::Divided,
    };

    /// Column name for a nested field: the raw keys joined with `_`, then [`Self::safe_name`].
    /// Empty when RudderStack would drop the field.
    pub fn column_name<S: AsRef<str>>(&self, path: &[S]) -> String {
        let joined = path.iter().map(AsRef::as_ref).collect::<Vec<_>>().join("_");
        self.safe_name(&joined)
    }

    /// Table name for a track event name; empty when RudderStack writes no event table.
    pub fn table_name(&self, event: &str) -> String {
        let value = self.event_value(event);
        if value.trim().is_empty() {
            return String::new();
        }
        let table = provider_name(&self.transform(&value, true));
        if RUDDER_TABLES.contains(&table.as_str()) {
            format!("_{table}")
        } else {
            table
        }
    }

    /// The value RudderStack writes to the `event` column of `tracks` for an event name
    /// (`transformTableName`: rules 1–4, not cut, not checked against reserved words).
    pub fn event_value(&self, event: &str) -> String {
        self.transform(event, false)
    }

    /// One identifier (`transformColumnName` then `safeColumnName`); empty when nothing is
    /// left of it, in which case RudderStack drops the field.
    pub fn safe_name(&self, raw: &str) -> String {
        let name = self.transform(raw, true);
        if name.is_empty() {
            return name;
        }
        provider_name(&name)
    }

    /// `transformName`: rules 1–4, and the 63-byte cut of rule 5 when `cut` is set.
    fn transform(&self, raw: &str, cut: bool) -> String {
        let key = alphanumeric_runs(raw).join("_");
        let leading = raw.len() - raw.trim_start_matches('_').len();
        let mut name = "_".repeat(leading) + &snake_case(&key, self.digits);
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if cut {
            name.truncate(POSTGRES_MAX_IDENTIFIER_LEN);
        }
        name
    }
}

/// Column name for a flattened property path, e.g. `["context", "page", "url"]` →
/// `context_page_url`; empty when RudderStack would drop the field (see the module docs).
pub fn column_name(path: &[&str]) -> String {
    WarehouseNaming::default().column_name(path)
}

/// Table name for a track event name, e.g. `"Order Completed"` → `order_completed`; empty when
/// RudderStack writes no event table for it.
pub fn table_name(event: &str) -> String {
    WarehouseNaming::default().table_name(event)
}

/// The value of the `event` column of `tracks` for an event name, e.g. `"Order Completed"` →
/// `order_completed` (not cut to 63 bytes, reserved words kept).
pub fn event_value(event: &str) -> String {
    WarehouseNaming::default().event_value(event)
}

/// Single identifier transform for a Postgres-like lower-case warehouse: RudderStack's
/// `transformColumnName` followed by `safeColumnName` (rules 1–7 of the module docs).
pub fn safe_name(raw: &str) -> String {
    WarehouseNaming::default().safe_name(raw)
}

/// The last step alone (RudderStack's `safeColumnName` / `safeTableName` for Postgres), for a
/// name that is already snake-cased: cut to 63 bytes, lower-case, `_` before a reserved word
/// (and cut to 127, which cannot matter after 63).
pub fn provider_name(name: &str) -> String {
    let mut name = name.to_string();
    truncate(&mut name, POSTGRES_MAX_IDENTIFIER_LEN);
    name.make_ascii_lowercase();
    if is_reserved(&name) {
        name.insert(0, '_');
    }
    truncate(&mut name, MAX_IDENTIFIER_LEN);
    name
}

/// Schema name for a source name or a configured namespace, as RudderStack's
/// `ToSafeNamespace` (and `ToProviderCase`, a no-op for Postgres) make it.
pub fn schema_name(raw: &str) -> String {
    let mut name = strcase_to_snake(&alphanumeric_runs(raw).join("_"));
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    if name.is_empty() {
        name = EMPTY_SCHEMA.to_string();
    }
    // `warehouse/utils/reservedkeywords.go` lists the same POSTGRES words as the column list
    // except `TO`.
    if name != "to" && is_reserved(&name) {
        name.insert(0, '_');
    }
    truncate(&mut name, MAX_IDENTIFIER_LEN);
    name
}

/// Whether `word` (any case) is one of the Postgres reserved words RudderStack escapes.
pub fn is_reserved(word: &str) -> bool {
    RESERVED_POSTGRES
        .binary_search(&word.to_ascii_lowercase().as_str())
        .is_ok()
}

/// Snake case as RudderStack's copy of lodash's `snakeCase` makes it: apostrophes removed,
/// split into words, words lower-cased and joined with `_`.
///
/// Reproduced for ASCII input only, which is all the naming rules ever give it (rule 1 keeps
/// only ASCII letters and digits). Other characters separate words here, whereas lodash keeps
/// Latin-1 letters (`æiou`) and emoji as words.
pub fn snake_case(s: &str, digits: Digits) -> String {
    let s = s.replace(['\'', '\u{2019}'], "");
    words(s.as_bytes(), digits)
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

/// Postgres reserved words (RudderStack's `tablescolumns.json` / `ReservedKeywords.json`,
/// key `POSTGRES`), lower case, sorted for binary search.
const RESERVED_POSTGRES: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "new",
    "not",
    "notnull",
    "null",
    "off",
    "offset",
    "old",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "verbose",
    "when",
    "where",
];

/// Tables RudderStack creates itself; an event table with one of these names gets a leading
/// `_` (`rudderCreatedTables` and `rudderIsolatedTables` in `internal/utils/utils.go`).
const RUDDER_TABLES: &[&str] = &[
    "tracks",
    "pages",
    "screens",
    "aliases",
    "groups",
    "accounts",
    "users",
    "identifies",
];

/// Cuts an ASCII name to `max` bytes (Go's `misc.TruncateStr`, JavaScript's `substr`).
fn truncate(name: &mut String, max: usize) {
    if name.len() > max {
        // Names are ASCII by now; back off to a char boundary all the same.
        let mut end = max;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
}

/// The runs of ASCII letters and digits in `raw`, in order (`extractAlphanumericValues`).
fn alphanumeric_runs(raw: &str) -> Vec<&str> {
    raw.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| !run.is_empty())
        .collect()
}

/// lodash's `words` as RudderStack copied it, restricted to ASCII: the ASCII words if the
/// string needs no case splitting, else the matches of the "unicode words" regex.
fn words(s: &[u8], digits: Digits) -> Vec<&[u8]> {
    if !has_unicode_word(s) {
        // `reAsciiWord`: runs of characters outside \x00-\x2f \x3a-\x40 \x5b-\x60 \x7b-\x7f.
        return s
            .split(|b| !b.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let found = (pos..s.len()).find_map(|start| word_at(s, start, digits).map(|e| (start, e)));
        let Some((start, end)) = found else { break };
        out.push(&s[start..end]);
        pos = end;
    }
    out
}

/// `hasUnicodeWord`: `[a-z][A-Z]|[A-Z]{2}[a-z]|[0-9][a-zA-Z]|[a-zA-Z][0-9]|[^a-zA-Z0-9 ]`.
fn has_unicode_word(s: &[u8]) -> bool {
    let lower_upper = s
        .windows(2)
        .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
    let acronym_end = s.windows(3).any(|w| {
        w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase() && w[2].is_ascii_lowercase()
    });
    let digit_letter = s.windows(2).any(|w| {
        (w[0].is_ascii_digit() && w[1].is_ascii_alphabetic())
            || (w[0].is_ascii_alphabetic() && w[1].is_ascii_digit())
    });
    let other = s.iter().any(|&b| !(b.is_ascii_alphanumeric() || b == b' '));
    lower_upper || acronym_end || digit_letter || other
}

/// The end of the word the "unicode words" regex matches at `i`, if any. For ASCII the
/// regex's alternatives, tried in order, come down to (`break` = any non-alphanumeric):
///
/// ```text
/// [A-Z]?[a-z]+\d+ | [A-Z]+\d+ | \d+[A-Z]?[a-z]+ | \d+[A-Z]+        (Attached digits only)
/// [A-Z]?[a-z]+(?=break|[A-Z]|$) | [A-Z]+(?=break|[A-Z][a-z]|$) | [A-Z]?[a-z]+ | [A-Z]+
/// \d*(?:1ST|2ND|3RD|(?![123])\dTH)(?=\b|[a-z_]) | \d*(?:1st|2nd|3rd|(?![123])\dth)(?=\b|[A-Z_])
/// \d+
/// ```
fn word_at(s: &[u8], i: usize, digits: Digits) -> Option<usize> {
    let at = |k: usize, f: fn(&u8) -> bool| s.get(k).is_some_and(f);
    let run =
        |k: usize, f: fn(&u8) -> bool| k + s[k.min(s.len())..].iter().take_while(|b| f(b)).count();
    let upper: fn(&u8) -> bool = u8::is_ascii_uppercase;
    let lower: fn(&u8) -> bool = u8::is_ascii_lowercase;
    let digit: fn(&u8) -> bool = u8::is_ascii_digit;
    let is_break = |k: usize| at(k, |b| !b.is_ascii_alphanumeric());
    // `[A-Z]?[a-z]+`: backtracking over the optional capital never helps, as `[a-z]+` cannot
    // start on a capital.
    let lowers_from = if at(i, upper) { i + 1 } else { i };
    let lowers_end = run(lowers_from, lower);
    let has_lowers = lowers_end > lowers_from;
    let uppers_end = run(i, upper);
    let digits_end = run(i, digit);

    if digits == Digits::Attached {
        if has_lowers && run(lowers_end, digit) > lowers_end {
            return Some(run(lowers_end, digit));
        }
        if uppers_end > i && run(uppers_end, digit) > uppers_end {
            return Some(run(uppers_end, digit));
        }
        if digits_end > i {
            let from = if at(digits_end, upper) {
                digits_end + 1
            } else {
                digits_end
            };
            let end = run(from, lower);
            if end > from {
                return Some(end);
            }
            let end = run(digits_end, upper);
            if end > digits_end {
                return Some(end);
            }
        }
    }
    // Regular word; backtracking to fewer lower-case letters leaves a lower-case letter next,
    // which the lookahead rejects.
    if has_lowers && (lowers_end == s.len() || is_break(lowers_end) || at(lowers_end, upper)) {
        return Some(lowers_end);
    }
    // Upper-case run, backing off until the lookahead holds (`XMLHttp` → `XML`).
    for end in (i + 1..=uppers_end).rev() {
        if end == s.len() || is_break(end) || (at(end, upper) && at(end + 1, lower)) {
            return Some(end);
        }
    }
    if has_lowers {
        return Some(lowers_end);
    }
    if uppers_end > i {
        return Some(uppers_end);
    }
    if digits_end > i {
        for upper_case in [true, false] {
            if let Some(end) = ordinal_at(s, i, digits_end, upper_case) {
                return Some(end);
            }
        }
        return Some(digits_end);
    }
    None
}

/// `\d*(?:1st|2nd|3rd|(?![123])\dth)` followed by a word boundary, `_` or a letter of the
/// other case, starting at `i` (digits up to `digits_end`).
fn ordinal_at(s: &[u8], i: usize, digits_end: usize, upper_case: bool) -> Option<usize> {
    let suffixes: [&[u8]; 3] = if upper_case {
        [b"1ST", b"2ND", b"3RD"]
    } else {
        [b"1st", b"2nd", b"3rd"]
    };
    let th: &[u8] = if upper_case { b"TH" } else { b"th" };
    let lookahead = |e: usize| match s.get(e) {
        None => true,
        Some(&b) => {
            let other_case = if upper_case {
                b.is_ascii_lowercase()
            } else {
                b.is_ascii_uppercase()
            };
            // `(?=\b|[a-z_])`: the ordinal ends in a letter, so `\b` is any non-word character
            // (not alphanumeric, not `_`); with the `_` alternative that is any
            // non-alphanumeric.
            !b.is_ascii_alphanumeric() || other_case
        }
    };
    // `\d*` is greedy: try the longest digit prefix first.
    for p in (i..=digits_end).rev() {
        let rest = &s[p..];
        let fixed = suffixes.iter().any(|suffix| rest.starts_with(suffix));
        let nth = rest
            .first()
            .is_some_and(|b| matches!(b, b'0' | b'4'..=b'9'))
            && rest.get(1..3) == Some(th);
        if (fixed || nth) && lookahead(p + 3) {
            return Some(p + 3);
        }
    }
    None
}

/// `strcase.ToSnake` (iancoleman/strcase v0.3.0, `ToScreamingDelimited(s, '_', "", false)`),
/// byte for byte.
fn strcase_to_snake(s: &str) -> String {
    let s = s.trim().as_bytes();
    let mut out = Vec::with_capacity(s.len() + 2);
    for (i, &b) in s.iter().enumerate() {
        let is_cap = b.is_ascii_uppercase();
        let is_low = b.is_ascii_lowercase();
        let v = b.to_ascii_lowercase();
        if let Some(&next) = s.get(i + 1) {
            let is_num = v.is_ascii_digit();
            let next_cap = next.is_ascii_uppercase();
            let next_low = next.is_ascii_lowercase();
            let next_num = next.is_ascii_digit();
            if (is_cap && (next_low || next_num))
                || (is_low && (next_cap || next_num))
                || (is_num && (next_cap || next_low))
            {
                if is_cap && next_low && i > 0 && s[i - 1].is_ascii_uppercase() {
                    out.push(b'_');
                }
                out.push(v);
                if is_low || is_num || next_num {
                    out.push(b'_');
                }
                continue;
            }
        }
        out.push(if matches!(v, b' ' | b'_' | b'-' | b'.') {
            b'_'
        } else {
            v
        });
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIVIDED: WarehouseNaming = WarehouseNaming::DIVIDED_DIGITS;

    #[test]
    fn reserved_words_are_sorted_for_binary_search() {
        let mut sorted = RESERVED_POSTGRES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, RESERVED_POSTGRES);
        assert_eq!(RESERVED_POSTGRES.len(), 93);
        assert!(is_reserved("SELECT") && is_reserved("Select") && !is_reserved("not_reserved"));
    }

    #[test]
    fn symbols_separate_words_and_an_all_symbol_key_is_dropped() {
        assert_eq!(safe_name("ome$ga"), "ome_ga");
        assert_eq!(safe_name("mega&"), "mega");
        assert_eq!(safe_name("Cízǔ"), "c_z");
        assert_eq!(safe_name("@#$%"), "");
        assert_eq!(column_name(&["properties", "@#$%"]), "properties");
        assert_eq!(table_name("@#$%"), "");
    }

    #[test]
    fn digits_attached_by_default_divided_on_request() {
        assert_eq!(safe_name("omega v2"), "omega_v2");
        assert_eq!(DIVIDED.safe_name("omega v2"), "omega_v_2");
        assert_eq!(safe_name("9mega"), "_9mega");
        assert_eq!(DIVIDED.safe_name("9mega"), "_9_mega");
        assert_eq!(safe_name("CamelCase123Key"), "camel_case123_key");
        assert_eq!(DIVIDED.safe_name("CamelCase123Key"), "camel_case_123_key");
        assert_eq!(DIVIDED.safe_name("1CComega"), "_1_c_comega");
    }

    #[test]
    fn words_split_like_lodash() {
        let split = |s| snake_case(s, Digits::Divided);
        assert_eq!(split("XMLHttp"), "xml_http");
        assert_eq!(split("isISO8601"), "is_iso_8601");
        assert_eq!(snake_case("isISO8601", Digits::Attached), "is_iso8601");
        assert_eq!(split("LETTERSAeiouAreVowels"), "letters_aeiou_are_vowels");
        assert_eq!(split("enable 24H format"), "enable_24_h_format");
        assert_eq!(split("4th"), "4th");
        assert_eq!(split("21ST"), "21st");
        assert_eq!(split("11th"), "11_th");
        assert_eq!(split("a b's c"), "a_bs_c");
        assert_eq!(split("--foo-bar--"), "foo_bar");
    }

    #[test]
    fn leading_underscores_are_kept() {
        assert_eq!(safe_name("_timestamp"), "_timestamp");
        assert_eq!(safe_name("__abc_123_def_456"), "__abc_123_def_456");
        assert_eq!(safe_name("_$"), "_");
    }

    #[test]
    fn reserved_words_get_a_leading_underscore() {
        assert_eq!(safe_name("select"), "_select");
        assert_eq!(safe_name("USER"), "_user");
        assert_eq!(safe_name("currentDate"), "_current_date");
        assert_eq!(safe_name("timestamp"), "timestamp");
        assert_eq!(provider_name("Select"), "_select");
    }

    #[test]
    fn names_are_cut_to_63_bytes_without_a_hash() {
        assert_eq!(safe_name(&"a".repeat(70)), "a".repeat(63));
        let cut = DIVIDED.safe_name(&format!("x{}", "a1".repeat(40)));
        assert_eq!(cut.len(), 63);
        assert!(cut.ends_with('_'), "{cut}");
        assert_eq!(event_value(&"a".repeat(70)), "a".repeat(70));
    }

    #[test]
    fn nested_paths_join_raw_keys_before_the_rules() {
        assert_eq!(column_name(&["context", "page", "url"]), "context_page_url");
        assert_eq!(
            column_name(&["context", "traits", "firstName"]),
            "context_traits_first_name"
        );
        assert_eq!(column_name(&["context", "_b"]), "context_b");
        assert_eq!(column_name(&["_a", "b"]), "_a_b");
    }

    #[test]
    fn event_tables() {
        assert_eq!(table_name("Order Completed"), "order_completed");
        assert_eq!(table_name("Product Viewed v2"), "product_viewed_v2");
        assert_eq!(table_name("users"), "_users");
        assert_eq!(table_name("Tracks"), "_tracks");
        assert_eq!(table_name("group"), "_group");
        assert_eq!(table_name("   "), "");
        assert_eq!(event_value("Order Completed"), "order_completed");
    }

    #[test]
    fn strcase_port_passes_strcase_own_tests() {
        // iancoleman/strcase v0.3.0 snake_test.go, `toSnake`.
        let cases = [
            ("testCase", "test_case"),
            ("TestCase", "test_case"),
            ("Test Case", "test_case"),
            (" Test Case ", "test_case"),
            ("test_case", "test_case"),
            ("", ""),
            ("ManyManyWords", "many_many_words"),
            ("AnyKind of_string", "any_kind_of_string"),
            ("numbers2and55with000", "numbers_2_and_55_with_000"),
            ("JSONData", "json_data"),
            ("userID", "user_id"),
            ("AAAbbb", "aa_abbb"),
            ("1A2", "1_a_2"),
            ("A1B", "a_1_b"),
            ("A1A2A3", "a_1_a_2_a_3"),
            ("AB1 AB2 AB3", "ab_1_ab_2_ab_3"),
        ];
        for (input, expected) in cases {
            assert_eq!(strcase_to_snake(input), expected, "{input:?}");
        }
    }

    #[test]
    fn schema_names() {
        assert_eq!(schema_name("omega v2 "), "omega_v_2");
        assert_eq!(schema_name("k3_namespace"), "k_3_namespace");
        assert_eq!(schema_name("JSONData"), "json_data");
        assert_eq!(schema_name("___"), EMPTY_SCHEMA);
        assert_eq!(schema_name("group"), "_group");
        assert_eq!(schema_name("to"), "to");
        assert_eq!(schema_name(&"a".repeat(200)).len(), MAX_IDENTIFIER_LEN);
    }
}
