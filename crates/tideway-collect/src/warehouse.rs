//! The warehouse schema: which tables and columns an event becomes.
//!
//! The same layout Segment and RudderStack load into warehouses, so existing SQL works:
//!
//! | event | rows |
//! |---|---|
//! | track | `tracks` (no properties) and `<event name>` (properties as columns) |
//! | identify | `identifies` (traits as columns) and `users` (latest non-null trait per user) |
//! | page, screen | `pages` / `screens` (properties as columns) |
//! | group | `groups` (traits as columns) |
//! | alias | `aliases` |
//!
//! Every row has `id` (the `messageId`), `anonymous_id`, `user_id`, `received_at`, `sent_at`,
//! `original_timestamp`, `timestamp`, `context_*`, `channel` when sent, and `uuid_ts` (when it
//! was loaded). Nested objects flatten into columns joined by `_` (`context_page_url`), arrays
//! are JSON text, names follow [`tideway_core::warehouse`] (RudderStack's rules). The
//! `users` row's `id` is the `userId`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;

use tideway_core::warehouse;

use crate::event::{Meta, parse_time};

/// A typed value of one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text (also arrays and objects past the depth limit, as JSON).
    Str(String),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or out of `i64` range.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A time, microseconds since the epoch (UTC).
    Time(i64),
}

/// One row for one table: (column, value) pairs, without nulls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The columns and their values; a later duplicate name replaces an earlier one.
    pub cells: Vec<(String, Cell)>,
}

impl Row {
    fn set(&mut self, column: String, cell: Cell) {
        if let Some(slot) = self.cells.iter_mut().find(|(c, _)| *c == column) {
            slot.1 = cell;
        } else {
            self.cells.push((column, cell));
        }
    }

    /// The value of `column`.
    pub fn get(&self, column: &str) -> Option<&Cell> {
        self.cells.iter().find(|(c, _)| c == column).map(|(_, v)| v)
    }
}

thread_local! {
    /// Names already computed: the same few hundred keys repeat in every event, and the
    /// naming rules are far slower than a lookup.
    static NAMES: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

/// Distinct names remembered per thread; past this the cache starts over (memory bound
/// against events with unbounded key sets).
const NAME_CACHE: usize = 100_000;

fn cached(key: String, compute: impl FnOnce() -> String) -> String {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(name) = names.get(&key) {
            return name.clone();
        }
        if names.len() >= NAME_CACHE {
            names.clear();
        }
        let name = compute();
        names.insert(key, name.clone());
        name
    })
}

fn column_name(path: &[String]) -> String {
    cached(path.join("\u{1}"), || {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        warehouse::column_name(&parts)
    })
}

fn table_name(event: &str) -> String {
    cached(format!("\u{2}t{event}"), || warehouse::table_name(event))
}

fn event_value(event: &str) -> String {
    cached(format!("\u{2}e{event}"), || warehouse::event_value(event))
}

/// Objects deeper than this stay JSON text.
pub const MAX_DEPTH: usize = 10;

/// The rows an event becomes: (table, row) pairs.
pub fn rows(
    meta: &Meta,
    event: &Map<String, Value>,
    loaded_at: DateTime<Utc>,
) -> Vec<(String, Row)> {
    let kind = meta.kind.as_deref().unwrap_or("track");
    let mut base = Row::default();
    if let Some(ctx) = meta
        .batch_context
        .as_ref()
        .and_then(|c| serde_json::from_str::<Map<String, Value>>(c.get()).ok())
    {
        flatten_into(&mut base, &mut vec!["context".to_string()], &ctx, 1);
    }
    if let Some(Value::Object(ctx)) = event.get("context") {
        flatten_into(&mut base, &mut vec!["context".to_string()], ctx, 1);
    }
    for (key, column) in [
        ("anonymousId", "anonymous_id"),
        ("userId", "user_id"),
        ("channel", "channel"),
    ] {
        if let Some(v) = event.get(key).and_then(id_text) {
            base.set(column.into(), Cell::Str(v));
        }
    }
    base.set(
        "id".into(),
        Cell::Str(meta.message_id.clone().unwrap_or_default()),
    );
    for (column, value) in [
        ("received_at", Some(&meta.received_at)),
        ("sent_at", meta.sent_at.as_ref()),
        ("original_timestamp", meta.original_timestamp.as_ref()),
        ("timestamp", meta.timestamp.as_ref()),
    ] {
        if let Some(t) = value.and_then(|v| parse_time(v)) {
            base.set(column.into(), Cell::Time(t.timestamp_micros()));
        }
    }
    base.set("uuid_ts".into(), Cell::Time(loaded_at.timestamp_micros()));

    let object = |key: &str| match event.get(key) {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let with = |mut row: Row, top: Option<&Map<String, Value>>| {
        // Payload fields first, so the standard columns above win a name clash.
        let standard = std::mem::take(&mut row.cells);
        if let Some(top) = top {
            flatten_into(&mut row, &mut Vec::new(), top, 0);
        }
        for (c, v) in standard {
            row.set(c, v);
        }
        row
    };
    let mut out = Vec::with_capacity(2);
    match kind {
        "track" => {
            let name = event
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut track = base.clone();
            track.set("event_text".into(), Cell::Str(name.to_string()));
            track.set("event".into(), Cell::Str(event_value(name)));
            out.push(("tracks".to_string(), track.clone()));
            // RudderStack writes no event table for a name without letters or digits.
            let table = table_name(name);
            if !table.is_empty() {
                out.push((table, with(track, object("properties"))));
            }
        }
        "identify" => {
            let traits = object("traits").or_else(|| {
                object("context").and_then(|c| match c.get("traits") {
                    Some(Value::Object(t)) => Some(t),
                    _ => None,
                })
            });
            let identify = with(base.clone(), traits);
            if let Some(user_id) = event.get("userId").and_then(id_text) {
                let mut user = Row::default();
                if let Some(t) = traits {
                    flatten_into(&mut user, &mut Vec::new(), t, 0);
                }
                for (c, v) in &base.cells {
                    if c.starts_with("context_") || c == "received_at" || c == "uuid_ts" {
                        user.set(c.clone(), v.clone());
                    }
                }
                user.set("id".into(), Cell::Str(user_id));
                out.push(("identifies".to_string(), identify));
                out.push(("users".to_string(), user));
            } else {
                out.push(("identifies".to_string(), identify));
            }
        }
        "page" | "screen" => {
            let mut row = base;
            if let Some(name) = event.get("name").and_then(Value::as_str) {
                row.set("name".into(), Cell::Str(name.to_string()));
            }
            if let Some(category) = event.get("category").and_then(Value::as_str) {
                row.set("category".into(), Cell::Str(category.to_string()));
            }
            out.push((format!("{kind}s"), with(row, object("properties"))));
        }
        "group" => {
            let mut row = base;
            if let Some(g) = event.get("groupId").and_then(id_text) {
                row.set("group_id".into(), Cell::Str(g));
            }
            out.push(("groups".to_string(), with(row, object("traits"))));
        }
        "alias" => {
            let mut row = base;
            if let Some(p) = event.get("previousId").and_then(id_text) {
                row.set("previous_id".into(), Cell::Str(p));
            }
            out.push(("aliases".to_string(), row));
        }
        _ => {}
    }
    out
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Flattens `object` into `row`, prefixing names with `path`.
pub fn flatten_into(
    row: &mut Row,
    path: &mut Vec<String>,
    object: &Map<String, Value>,
    depth: usize,
) {
    for (key, value) in object {
        path.push(key.clone());
        match value {
            Value::Null => {}
            Value::Object(inner) if depth < MAX_DEPTH => {
                flatten_into(row, path, inner, depth + 1);
            }
            other => {
                if let Some(cell) = cell_of(other) {
                    let column = column_name(path);
                    if !column.is_empty() {
                        row.set(column, cell);
                    }
                }
            }
        }
        path.pop();
    }
}

/// The cell of a JSON value; arrays and objects become JSON text, ISO-8601 strings with a
/// time become times.
pub fn cell_of(value: &Value) -> Option<Cell> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => match looks_like_time(s) {
            Some(t) => Cell::Time(t),
            None => Cell::Str(s.clone()),
        },
        Value::Array(_) | Value::Object(_) => Cell::Str(value.to_string()),
    })
}

/// RFC 3339 date-times (with `T` and a zone) become times; anything looser stays text.
fn looks_like_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 35 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Envelope, check};
    use tideway_core::config::TimestampMode;

    fn rows_of(text: &str, kind: Option<&'static str>) -> Vec<(String, Row)> {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(text).unwrap();
        let env = Envelope {
            source: "web",
            path_type: kind,
            received_at: parse_time("2026-11-25T12:00:00Z").unwrap(),
            batch_sent_at: None,
            batch_context: None,
            timestamps: TimestampMode::Segment,
            max_event_bytes: 1 << 20,
        };
        let meta = check(&raw, &env).unwrap();
        let map: Map<String, Value> = serde_json::from_str(text).unwrap();
        rows(&meta, &map, parse_time("2026-11-25T12:00:01Z").unwrap())
    }

    #[test]
    fn a_track_becomes_tracks_and_its_event_table() {
        let out = rows_of(
            r#"{"userId":"u1","event":"Order Completed","messageId":"m1",
                "properties":{"revenue":12.5,"items":[1,2],"coupon":{"code":"X"},"timestamp":"nope"},
                "context":{"page":{"url":"https://a.b/c"},"library":{"name":"analytics.js"}}}"#,
            Some("track"),
        );
        let tables: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tables, ["tracks", "order_completed"]);
        let tracks = &out[0].1;
        assert_eq!(
            tracks.get("event"),
            Some(&Cell::Str("order_completed".into()))
        );
        assert_eq!(
            tracks.get("event_text"),
            Some(&Cell::Str("Order Completed".into()))
        );
        assert_eq!(
            tracks.get("context_page_url"),
            Some(&Cell::Str("https://a.b/c".into()))
        );
        assert_eq!(tracks.get("revenue"), None);
        let event = &out[1].1;
        assert_eq!(event.get("revenue"), Some(&Cell::Float(12.5)));
        assert_eq!(event.get("items"), Some(&Cell::Str("[1,2]".into())));
        assert_eq!(event.get("coupon_code"), Some(&Cell::Str("X".into())));
        assert_eq!(event.get("id"), Some(&Cell::Str("m1".into())));
        // The standard column wins over a property of the same name.
        assert!(matches!(event.get("timestamp"), Some(Cell::Time(_))));
    }

    #[test]
    fn an_identify_becomes_identifies_and_users() {
        let out = rows_of(
            r#"{"userId":"u1","traits":{"email":"a@b.c","plan":"pro","createdAt":"2026-01-01T00:00:00Z"}}"#,
            Some("identify"),
        );
        let (t, users) = &out[1];
        assert_eq!(t, "users");
        assert_eq!(users.get("id"), Some(&Cell::Str("u1".into())));
        assert_eq!(users.get("email"), Some(&Cell::Str("a@b.c".into())));
        assert!(matches!(users.get("created_at"), Some(Cell::Time(_))));
        assert_eq!(out[0].1.get("user_id"), Some(&Cell::Str("u1".into())));
    }

    #[test]
    fn anonymous_identifies_have_no_user_row() {
        let out = rows_of(r#"{"anonymousId":"a1","traits":{"x":1}}"#, Some("identify"));
        assert_eq!(out.len(), 1);
    }
}
