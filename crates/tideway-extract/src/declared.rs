//! Declared field types for sources whose records are JSON documents (a Kafka source's
//! `[schema]`): each declared field is checked, and coerced where the value says the same
//! thing in another form (`"120"` for a `bigint`, `1767225600000` for a `timestamp`). A record
//! with a value that cannot be the declared type is refused whole, naming the field.
//!
//! ```toml
//! [schema]
//! user_id = "string"
//! response_time_ms = "bigint"     # "120" becomes 120; "fast" refuses the record
//! price = "double"
//! mobile = "boolean"              # true, false, "true", "false"
//! datetime = "timestamp"          # ISO 8601 text, or milliseconds since the epoch
//! "device.os" = "string"          # a dotted path reaches into nested objects
//! ```
//!
//! A missing field or a `null` is always accepted.

use serde_json::{Map, Number, Value};
use tideway_core::time::parse_instant;

/// A declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    String,
    Bigint,
    Double,
    Boolean,
    Timestamp,
}

/// The type names a file may use.
pub const TYPES: &[&str] = &["string", "bigint", "double", "boolean", "timestamp"];

impl Declared {
    /// The type called `name` (`int` and `integer` are `bigint`, `float` is `double`...).
    pub fn parse(name: &str) -> Option<Declared> {
        Some(match name.to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" => Declared::String,
            "bigint" | "int" | "integer" | "long" => Declared::Bigint,
            "double" | "float" | "number" => Declared::Double,
            "boolean" | "bool" => Declared::Boolean,
            "timestamp" => Declared::Timestamp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Declared::String => "string",
            Declared::Bigint => "bigint",
            Declared::Double => "double",
            Declared::Boolean => "boolean",
            Declared::Timestamp => "timestamp",
        }
    }

    /// `value` as this type, or `None` if it cannot be.
    fn coerce(self, value: &Value) -> Option<Value> {
        match (self, value) {
            (Declared::String, Value::String(_)) => Some(value.clone()),
            (Declared::String, Value::Number(_) | Value::Bool(_)) => {
                Some(Value::String(value.to_string()))
            }
            (Declared::Bigint, Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .map(Value::from),
            (Declared::Bigint, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
            (Declared::Double, Value::Number(n)) => {
                n.as_f64().and_then(Number::from_f64).map(Value::Number)
            }
            (Declared::Double, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number),
            (Declared::Boolean, Value::Bool(_)) => Some(value.clone()),
            (Declared::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            (Declared::Timestamp, Value::String(s)) => parse_instant(s.trim())
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
            (Declared::Timestamp, Value::Number(n)) => n
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
            _ => None,
        }
    }
}

/// The declared fields of a source: (dotted path, type).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema(pub Vec<(String, Declared)>);

impl Schema {
    /// Checks and coerces the declared fields of `record` in place; `Err((field, reason))`
    /// for the first value that cannot be its type.
    pub fn apply(&self, record: &mut Map<String, Value>) -> Result<(), (String, String)> {
        for (path, declared) in &self.0 {
            let Some(slot) = find(record, path) else {
                continue;
            };
            if slot.is_null() {
                continue;
            }
            match declared.coerce(slot) {
                Some(v) => *slot = v,
                None => {
                    let mut shown = slot.to_string();
                    if shown.len() > 80 {
                        shown = format!("{}...", &shown[..shown.floor_char_boundary(77)]);
                    }
                    return Err((
                        path.clone(),
                        format!(
                            "`{path}` is {shown}, which is not a {} (declared in [schema])",
                            declared.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The value at a dotted path, if every step is there.
fn find<'a>(record: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let mut node = record.get_mut(parts.next()?)?;
    for part in parts {
        node = node.as_object_mut()?.get_mut(part)?;
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(schema: &[(&str, Declared)], record: Value) -> Result<Value, (String, String)> {
        let schema = Schema(schema.iter().map(|(p, d)| (p.to_string(), *d)).collect());
        let Value::Object(mut map) = record else {
            panic!("an object")
        };
        schema.apply(&mut map).map(|_| Value::Object(map))
    }

    #[test]
    fn values_in_another_form_are_coerced() {
        let schema = [
            ("ms", Declared::Bigint),
            ("price", Declared::Double),
            ("mobile", Declared::Boolean),
            ("at", Declared::Timestamp),
            ("since", Declared::Timestamp),
            ("zip", Declared::String),
            ("device.os", Declared::String),
        ];
        let out = apply(
            &schema,
            json!({"ms": "120", "price": "9.5", "mobile": "TRUE", "at": "2026-01-01 10:00:00",
                   "since": 1767225600000_i64, "zip": 69001, "device": {"os": "iOS"}, "other": "x"}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"ms": 120, "price": 9.5, "mobile": true, "at": "2026-01-01T10:00:00Z",
                   "since": "2026-01-01T00:00:00.000Z", "zip": "69001", "device": {"os": "iOS"}, "other": "x"})
        );
        assert_eq!(
            apply(&schema, json!({"ms": null})).unwrap(),
            json!({"ms": null})
        );
        assert_eq!(
            apply(&schema, json!({"ms": 7.0})).unwrap(),
            json!({"ms": 7})
        );
    }

    #[test]
    fn a_value_that_cannot_be_its_type_names_the_field() {
        let schema = [("ms", Declared::Bigint), ("device.os", Declared::String)];
        assert_eq!(
            apply(&schema, json!({"ms": "fast"})).unwrap_err(),
            (
                "ms".to_string(),
                "`ms` is \"fast\", which is not a bigint (declared in [schema])".to_string()
            )
        );
        assert_eq!(apply(&schema, json!({"ms": 1.5})).unwrap_err().0, "ms");
        assert_eq!(
            apply(&schema, json!({"device": {"os": ["a"]}}))
                .unwrap_err()
                .1,
            "`device.os` is [\"a\"], which is not a string (declared in [schema])"
        );
    }
}
