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

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};
use tideway_core::warehouse;

use crate::event::{Meta, parse_time};

/// A typed value of one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text (also arrays and objects past the depth limit, as JSON). Shared: a track event's
    /// `tracks` row and its event-table row hold the same strings.
    Str(Arc<str>),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or out of `i64` range.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A time, microseconds since the epoch (UTC).
    Time(i64),
}

/// A column, by its id in [`Names`].
pub type Col = u32;

/// One row for one table: (column, value) pairs, without nulls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The columns and their values; a later value of the same column replaces an earlier one.
    pub cells: Vec<(Col, Cell)>,
}

impl Row {
    /// Sets `column` (ids compare as integers: rows of ~50 columns need no index).
    pub fn set(&mut self, column: Col, cell: Cell) {
        if let Some(slot) = self.cells.iter_mut().find(|(c, _)| *c == column) {
            slot.1 = cell;
        } else {
            self.cells.push((column, cell));
        }
    }

    /// The value of `column`.
    pub fn get(&self, column: Col) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| v)
    }
}

/// Interned column names, and the names of JSON paths already seen: the same few hundred
/// keys repeat in every event, and the naming rules cost far more than a lookup. Paths are a
/// trie of keys, so a lookup never builds a string. Memory is bounded: past
/// [`Names::MAX_PATHS`] paths the path cache starts over (column ids stay valid).
#[derive(Debug)]
pub struct Names {
    names: Vec<String>,
    ids: FxHashMap<String, Col>,
    /// Trie nodes: children by raw key, and the column of the path ending here.
    nodes: Vec<(FxHashMap<String, u32>, Option<Col>)>,
    events: FxHashMap<String, (String, String)>,
    /// Standard columns.
    pub std: Std,
}

/// The ids of the columns every row can have.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct Std {
    pub id: Col,
    pub anonymous_id: Col,
    pub user_id: Col,
    pub channel: Col,
    pub received_at: Col,
    pub sent_at: Col,
    pub original_timestamp: Col,
    pub timestamp: Col,
    pub uuid_ts: Col,
    pub event: Col,
    pub event_text: Col,
    pub name: Col,
    pub category: Col,
    pub group_id: Col,
    pub previous_id: Col,
}

impl Default for Names {
    fn default() -> Self {
        Names::new()
    }
}

impl Names {
    /// Paths remembered before the path cache starts over.
    pub const MAX_PATHS: usize = 200_000;

    /// An empty set of names.
    pub fn new() -> Names {
        let mut n = Names {
            names: Vec::new(),
            ids: FxHashMap::default(),
            nodes: vec![(FxHashMap::default(), None)],
            events: FxHashMap::default(),
            std: Std {
                id: 0,
                anonymous_id: 0,
                user_id: 0,
                channel: 0,
                received_at: 0,
                sent_at: 0,
                original_timestamp: 0,
                timestamp: 0,
                uuid_ts: 0,
                event: 0,
                event_text: 0,
                name: 0,
                category: 0,
                group_id: 0,
                previous_id: 0,
            },
        };
        n.std = Std {
            id: n.id("id"),
            anonymous_id: n.id("anonymous_id"),
            user_id: n.id("user_id"),
            channel: n.id("channel"),
            received_at: n.id("received_at"),
            sent_at: n.id("sent_at"),
            original_timestamp: n.id("original_timestamp"),
            timestamp: n.id("timestamp"),
            uuid_ts: n.id("uuid_ts"),
            event: n.id("event"),
            event_text: n.id("event_text"),
            name: n.id("name"),
            category: n.id("category"),
            group_id: n.id("group_id"),
            previous_id: n.id("previous_id"),
        };
        n
    }

    /// The id of the column `name`.
    pub fn id(&mut self, name: &str) -> Col {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as Col;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The id of the column `name`, if it has one.
    pub fn ids_of(&self, name: &str) -> Option<Col> {
        self.ids.get(name).copied()
    }

    /// The name of column `id`.
    pub fn name(&self, id: Col) -> &str {
        &self.names[id as usize]
    }

    /// How many column ids exist.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no column exists (never: the standard columns always do).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn child(&mut self, node: u32, key: &str) -> u32 {
        if let Some(c) = self.nodes[node as usize].0.get(key) {
            return *c;
        }
        let c = self.nodes.len() as u32;
        self.nodes.push((FxHashMap::default(), None));
        self.nodes[node as usize].0.insert(key.to_string(), c);
        c
    }

    /// The column of the path ending at trie `node`; `None` when the rules drop the field.
    fn column(&mut self, node: u32, path: &[&str]) -> Option<Col> {
        if let Some(col) = self.nodes[node as usize].1 {
            return Some(col);
        }
        let name = warehouse::column_name(path);
        if name.is_empty() {
            return None;
        }
        let col = self.id(&name);
        self.nodes[node as usize].1 = Some(col);
        Some(col)
    }

    /// The (table, `event` column value) of a track event name.
    fn event(&mut self, name: &str) -> (String, String) {
        if let Some(e) = self.events.get(name) {
            return e.clone();
        }
        let e = (warehouse::table_name(name), warehouse::event_value(name));
        if self.events.len() >= Self::MAX_PATHS {
            self.events.clear();
        }
        self.events.insert(name.to_string(), e.clone());
        e
    }

    fn trim(&mut self) {
        if self.nodes.len() > Self::MAX_PATHS {
            self.nodes.clear();
            self.nodes.push((FxHashMap::default(), None));
        }
    }
}

/// Objects deeper than this stay JSON text.
pub const MAX_DEPTH: usize = 10;

/// The rows an event becomes: (table, row) pairs.
pub fn rows(
    names: &mut Names,
    meta: &Meta,
    event: &Map<String, Value>,
    loaded_at: DateTime<Utc>,
) -> Vec<(String, Row)> {
    names.trim();
    let s = names.std;
    let kind = meta.kind.as_deref().unwrap_or("track");
    let mut base = Row::default();
    let context = names.child(0, "context");
    if let Some(ctx) = meta
        .batch_context
        .as_ref()
        .and_then(|c| serde_json::from_str::<Map<String, Value>>(c.get()).ok())
    {
        flatten_into(names, &mut base, context, &mut vec!["context"], &ctx, 1);
    }
    if let Some(Value::Object(ctx)) = event.get("context") {
        flatten_into(names, &mut base, context, &mut vec!["context"], ctx, 1);
    }
    for (key, column) in [
        ("anonymousId", s.anonymous_id),
        ("userId", s.user_id),
        ("channel", s.channel),
    ] {
        if let Some(v) = event.get(key).and_then(id_text) {
            base.set(column, Cell::Str(v.into()));
        }
    }
    base.set(
        s.id,
        Cell::Str(meta.message_id.as_deref().unwrap_or_default().into()),
    );
    for (column, value) in [
        (s.received_at, Some(&meta.received_at)),
        (s.sent_at, meta.sent_at.as_ref()),
        (s.original_timestamp, meta.original_timestamp.as_ref()),
        (s.timestamp, meta.timestamp.as_ref()),
    ] {
        if let Some(t) = value.and_then(|v| parse_time(v)) {
            base.set(column, Cell::Time(t.timestamp_micros()));
        }
    }
    base.set(s.uuid_ts, Cell::Time(loaded_at.timestamp_micros()));

    let object = |key: &str| match event.get(key) {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let with = |names: &mut Names, mut row: Row, top: Option<&Map<String, Value>>| {
        // Payload fields first, so the standard columns above win a name clash.
        let standard = std::mem::take(&mut row.cells);
        if let Some(top) = top {
            flatten_into(names, &mut row, 0, &mut Vec::new(), top, 0);
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
            let (table, value) = names.event(name);
            let mut track = base;
            track.set(s.event_text, Cell::Str(name.into()));
            track.set(s.event, Cell::Str(value.into()));
            // RudderStack writes no event table for a name without letters or digits.
            if !table.is_empty() {
                let properties = object("properties");
                out.push((table, with(names, track.clone(), properties)));
            }
            out.insert(0, ("tracks".to_string(), track));
        }
        "identify" => {
            let traits = object("traits").or_else(|| {
                object("context").and_then(|c| match c.get("traits") {
                    Some(Value::Object(t)) => Some(t),
                    _ => None,
                })
            });
            let identify = with(names, base.clone(), traits);
            if let Some(user_id) = event.get("userId").and_then(id_text) {
                let mut user = Row::default();
                if let Some(t) = traits {
                    flatten_into(names, &mut user, 0, &mut Vec::new(), t, 0);
                }
                for (c, v) in &base.cells {
                    if *c == s.received_at
                        || *c == s.uuid_ts
                        || names.name(*c).starts_with("context_")
                    {
                        user.set(*c, v.clone());
                    }
                }
                user.set(s.id, Cell::Str(user_id.into()));
                out.push(("identifies".to_string(), identify));
                out.push(("users".to_string(), user));
            } else {
                out.push(("identifies".to_string(), identify));
            }
        }
        "page" | "screen" => {
            let mut row = base;
            if let Some(name) = event.get("name").and_then(Value::as_str) {
                row.set(s.name, Cell::Str(name.into()));
            }
            if let Some(category) = event.get("category").and_then(Value::as_str) {
                row.set(s.category, Cell::Str(category.into()));
            }
            let properties = object("properties");
            out.push((format!("{kind}s"), with(names, row, properties)));
        }
        "group" => {
            let mut row = base;
            if let Some(g) = event.get("groupId").and_then(id_text) {
                row.set(s.group_id, Cell::Str(g.into()));
            }
            let traits = object("traits");
            out.push(("groups".to_string(), with(names, row, traits)));
        }
        "alias" => {
            let mut row = base;
            if let Some(p) = event.get("previousId").and_then(id_text) {
                row.set(s.previous_id, Cell::Str(p.into()));
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

/// Flattens `object` into `row`; `node` is the trie node of `path`.
fn flatten_into<'a>(
    names: &mut Names,
    row: &mut Row,
    node: u32,
    path: &mut Vec<&'a str>,
    object: &'a Map<String, Value>,
    depth: usize,
) {
    for (key, value) in object {
        path.push(key);
        let child = names.child(node, key);
        match value {
            Value::Null => {}
            Value::Object(inner) if depth < MAX_DEPTH => {
                flatten_into(names, row, child, path, inner, depth + 1);
            }
            other => {
                if let Some(cell) = cell_of(other)
                    && let Some(column) = names.column(child, path)
                {
                    row.set(column, cell);
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
            None => Cell::Str(s.as_str().into()),
        },
        Value::Array(_) | Value::Object(_) => Cell::Str(value.to_string().into()),
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

    fn rows_of(text: &str, kind: Option<&'static str>) -> Vec<(String, NamedRow)> {
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
        let mut names = Names::new();
        rows(
            &mut names,
            &meta,
            &map,
            parse_time("2026-11-25T12:00:01Z").unwrap(),
        )
        .into_iter()
        .map(|(t, r)| {
            let cells = r
                .cells
                .into_iter()
                .map(|(c, v)| (names.name(c).to_string(), v))
                .collect();
            (t, NamedRow { cells })
        })
        .collect()
    }

    struct NamedRow {
        cells: Vec<(String, Cell)>,
    }

    impl NamedRow {
        fn get(&self, column: &str) -> Option<&Cell> {
            self.cells.iter().find(|(c, _)| c == column).map(|(_, v)| v)
        }
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
