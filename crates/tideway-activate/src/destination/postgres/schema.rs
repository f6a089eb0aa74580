//! Column types: what a JSON value becomes, whether a column takes it, and when a column is
//! widened.
//!
//! | JSON value                                   | new column          |
//! |----------------------------------------------|---------------------|
//! | `true` / `false`                             | `boolean`           |
//! | an integer within `i64`                      | `bigint`            |
//! | any other number                             | `double precision`  |
//! | a string shaped `YYYY-MM-DD[T ]HH:MM...`     | `timestamptz`       |
//! | any other string                             | `text`              |
//! | an object or an array                        | `jsonb`             |
//! | `null`                                       | nothing is learned  |
//!
//! A column takes a value of its own type, an integer into `double precision`, an integral
//! float into `bigint`, anything into `text` (objects as JSON text) and `jsonb`. Otherwise, with
//! `create = true`, the column is widened when the value's type contains the column's:
//! `bigint` → `double precision` for a fractional number, `timestamptz` → `text` for a string
//! that is not an instant (our guess was too narrow). Anything else (a string into `bigint`, a
//! number into `boolean`) refuses the event, naming the column, the value and the type: a
//! column the application reads as numbers must not silently turn into text.

use serde_json::Value;

/// A column type as Tideway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Boolean,
    /// `bigint`, `integer`, `smallint`: Postgres checks the range.
    Integer(String),
    /// `double precision`, `real`, `numeric(...)`.
    Float(String),
    /// `timestamptz`, `timestamp`, `date`.
    Time(String),
    /// `text`, `character varying(...)`, `character(...)`.
    Text(String),
    /// `jsonb` or `json`.
    Json(String),
    /// Any other type (`uuid`, an enum, ...): the value is sent as text and Postgres parses it.
    Other(String),
}

impl PgType {
    /// The type of a column as `format_type()` names it.
    pub fn from_sql(name: &str) -> PgType {
        let base = name.split('(').next().unwrap_or(name).trim();
        let name = name.to_string();
        match base {
            "boolean" => PgType::Boolean,
            "bigint" | "integer" | "smallint" => PgType::Integer(name),
            "double precision" | "real" | "numeric" => PgType::Float(name),
            "timestamp with time zone" | "timestamp without time zone" | "date" => {
                PgType::Time(name)
            }
            "text" | "character varying" | "character" => PgType::Text(name),
            "jsonb" | "json" => PgType::Json(name),
            _ => PgType::Other(name),
        }
    }

    /// The type as SQL (`bigint`, `character varying(20)`, ...).
    pub fn sql(&self) -> &str {
        match self {
            PgType::Boolean => "boolean",
            PgType::Integer(n)
            | PgType::Float(n)
            | PgType::Time(n)
            | PgType::Text(n)
            | PgType::Json(n)
            | PgType::Other(n) => n,
        }
    }

    pub fn bigint() -> PgType {
        PgType::Integer("bigint".into())
    }
    pub fn double() -> PgType {
        PgType::Float("double precision".into())
    }
    pub fn timestamptz() -> PgType {
        PgType::Time("timestamp with time zone".into())
    }
    pub fn text() -> PgType {
        PgType::Text("text".into())
    }
    pub fn jsonb() -> PgType {
        PgType::Json("jsonb".into())
    }
}

/// The type a new column gets for `value`; `None` for `null`.
pub fn infer(value: &Value) -> Option<PgType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => PgType::Boolean,
        Value::Number(n) if n.is_i64() => PgType::bigint(),
        Value::Number(_) => PgType::double(),
        Value::String(s) if tideway_core::time::parse_instant(s).is_some() => PgType::timestamptz(),
        Value::String(_) => PgType::text(),
        Value::Array(_) | Value::Object(_) => PgType::jsonb(),
    })
}

/// What a column of type `column` does with `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// It takes the value as it is.
    Takes,
    /// It takes the value once widened to this type (only with `create = true`).
    Widen(PgType),
    /// It cannot take the value: the message names the value and the type.
    Refuses(String),
}

/// Whether a column of type `column` takes `value`.
pub fn fit(column: &PgType, value: &Value) -> Fit {
    let takes = match (column, value) {
        (_, Value::Null) => true,
        (PgType::Json(_) | PgType::Other(_), _) => true,
        (PgType::Boolean, Value::Bool(_)) => true,
        (PgType::Integer(_), Value::Number(n)) => integral(n).is_some(),
        (PgType::Float(_), Value::Number(_)) => true,
        (PgType::Time(_), Value::String(s)) => tideway_core::time::parse_time(s).is_some(),
        // Text takes anything; an object or array is stored as its JSON text.
        (PgType::Text(_), _) => true,
        _ => false,
    };
    if takes {
        return Fit::Takes;
    }
    match (column, value) {
        (PgType::Integer(n), Value::Number(_)) if n == "bigint" => Fit::Widen(PgType::double()),
        (PgType::Time(n), Value::String(_)) if n == "timestamp with time zone" => {
            Fit::Widen(PgType::text())
        }
        _ => Fit::Refuses(format!(
            "{} does not fit a column of type {}",
            shown(value),
            column.sql()
        )),
    }
}

/// `n` as an `i64` if it is integral (`3` or `3.0`).
fn integral(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

/// A value in a message, cut short.
pub fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// `value` as COPY's text format writes it into a column of type `column` (`None`: NULL),
/// or why it cannot be written (a NUL character, which Postgres text cannot hold).
pub fn copy_text(column: &PgType, value: &Value) -> Result<Option<String>, String> {
    let text = match (column, value) {
        (_, Value::Null) => return Ok(None),
        (PgType::Integer(_), Value::Number(n)) => match integral(n) {
            Some(i) => i.to_string(),
            None => n.to_string(),
        },
        (PgType::Json(_), v) => v.to_string(),
        (PgType::Time(_), Value::String(s)) => match tideway_core::time::parse_time(s) {
            // Postgres reads fewer forms than we do (`+0100`): send the instant in RFC 3339.
            Some(t) if column.sql() != "date" => t.to_rfc3339(),
            _ => s.clone(),
        },
        (_, Value::String(s)) => s.clone(),
        (_, v) => v.to_string(),
    };
    if text.contains('\0') || text.contains("\\u0000") {
        return Err(format!(
            "{} holds a NUL character, which Postgres cannot store",
            shown(value)
        ));
    }
    Ok(Some(text))
}

/// Appends `value` to a COPY text-format line (backslash escapes; `\N` for NULL).
pub fn push_copy_field(line: &mut String, value: Option<&str>) {
    let Some(value) = value else {
        line.push_str("\\N");
        return;
    };
    for c in value.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inference() {
        assert_eq!(infer(&json!(true)), Some(PgType::Boolean));
        assert_eq!(infer(&json!(42)), Some(PgType::bigint()));
        assert_eq!(infer(&json!(-7)), Some(PgType::bigint()));
        assert_eq!(infer(&json!(u64::MAX)), Some(PgType::double()));
        assert_eq!(infer(&json!(4.5)), Some(PgType::double()));
        assert_eq!(
            infer(&json!("2026-11-25T14:03:00Z")),
            Some(PgType::timestamptz())
        );
        assert_eq!(
            infer(&json!("2026-11-25 14:03:00+0100")),
            Some(PgType::timestamptz())
        );
        // A date alone, or a number-like string, stays text: only clear instants are guessed.
        assert_eq!(infer(&json!("2026-11-25")), Some(PgType::text()));
        assert_eq!(infer(&json!("42")), Some(PgType::text()));
        assert_eq!(infer(&json!({"a": 1})), Some(PgType::jsonb()));
        assert_eq!(infer(&json!([1, 2])), Some(PgType::jsonb()));
        assert_eq!(infer(&json!(null)), None);
    }

    #[test]
    fn widening_decisions() {
        let bigint = PgType::bigint();
        assert_eq!(fit(&bigint, &json!(3)), Fit::Takes);
        assert_eq!(fit(&bigint, &json!(3.0)), Fit::Takes);
        assert_eq!(fit(&bigint, &json!(null)), Fit::Takes);
        assert_eq!(fit(&bigint, &json!(3.5)), Fit::Widen(PgType::double()));
        assert_eq!(
            fit(&bigint, &json!("abc")),
            Fit::Refuses("\"abc\" does not fit a column of type bigint".into())
        );
        // A narrower integer column the user made is never widened by us.
        let int = PgType::from_sql("integer");
        assert!(matches!(fit(&int, &json!(3.5)), Fit::Refuses(_)));
        assert_eq!(fit(&PgType::double(), &json!(3)), Fit::Takes);
        assert!(matches!(
            fit(&PgType::double(), &json!("3")),
            Fit::Refuses(_)
        ));
        assert_eq!(fit(&PgType::text(), &json!(3)), Fit::Takes);
        assert_eq!(fit(&PgType::text(), &json!(true)), Fit::Takes);
        assert_eq!(fit(&PgType::text(), &json!({"a": 1})), Fit::Takes);
        assert_eq!(fit(&PgType::jsonb(), &json!("x")), Fit::Takes);
        let ts = PgType::timestamptz();
        assert_eq!(fit(&ts, &json!("2026-01-02")), Fit::Takes);
        assert_eq!(fit(&ts, &json!("soon")), Fit::Widen(PgType::text()));
        assert!(matches!(fit(&ts, &json!(5)), Fit::Refuses(_)));
        assert!(matches!(fit(&PgType::Boolean, &json!(1)), Fit::Refuses(_)));
        assert_eq!(fit(&PgType::from_sql("uuid"), &json!("x")), Fit::Takes);
    }

    #[test]
    fn types_from_the_catalog() {
        assert_eq!(PgType::from_sql("bigint"), PgType::bigint());
        assert_eq!(
            PgType::from_sql("numeric(10,2)"),
            PgType::Float("numeric(10,2)".into())
        );
        assert_eq!(
            PgType::from_sql("character varying(20)").sql(),
            "character varying(20)"
        );
        assert_eq!(
            PgType::from_sql("timestamp with time zone"),
            PgType::timestamptz()
        );
        assert_eq!(PgType::from_sql("uuid"), PgType::Other("uuid".into()));
    }

    #[test]
    fn copy_text_escapes() {
        let mut line = String::new();
        push_copy_field(&mut line, Some("a\tb\\c\nd\re"));
        line.push('\t');
        push_copy_field(&mut line, None);
        assert_eq!(line, "a\\tb\\\\c\\nd\\re\t\\N");
        assert_eq!(
            copy_text(&PgType::bigint(), &json!(3.0)),
            Ok(Some("3".into()))
        );
        assert_eq!(
            copy_text(&PgType::jsonb(), &json!({"a": [1]})),
            Ok(Some("{\"a\":[1]}".into()))
        );
        assert_eq!(
            copy_text(&PgType::timestamptz(), &json!("2026-11-25 14:03:00+0100")),
            Ok(Some("2026-11-25T13:03:00+00:00".into()))
        );
        assert!(copy_text(&PgType::text(), &json!("a\u{0}b")).is_err());
        assert!(copy_text(&PgType::jsonb(), &json!({"a": "\u{0}"})).is_err());
    }
}
