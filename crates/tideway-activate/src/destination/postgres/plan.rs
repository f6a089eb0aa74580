//! A batch as SQL: which events are refused before anything is sent, the DDL the batch needs
//! (`create = true`), the staging data and the statements of its one transaction. Pure: no IO.
//!
//! The transaction of a batch:
//!
//! ```sql
//! CREATE TEMP TABLE tideway_stage (_tideway_group int, "user_id" text, "plan" text, ...,
//!                                  _tideway_message_id text) ON COMMIT DROP;
//! COPY tideway_stage FROM STDIN;              -- one row per key (the batch merged per key)
//! DELETE FROM t USING tideway_stage s WHERE s._tideway_group = 0 AND t.key = s.key;
//! INSERT INTO t (key, plan, ...) SELECT ... FROM tideway_stage WHERE _tideway_group = 1
//!   ORDER BY key ON CONFLICT (key) DO UPDATE SET plan = EXCLUDED.plan, ...;  -- per group
//! INSERT INTO events (...) SELECT ... FROM tideway_stage_events ON CONFLICT (message_id) DO NOTHING;
//! ```
//!
//! Events of one key are merged in batch order, as if applied one after the other: a later
//! value wins, a field the later event lacks keeps the earlier value, a delete drops what came
//! before it (the key is deleted, then the later upsert inserts afresh). Keys are grouped by
//! the set of fields they carry, and each group's `DO UPDATE SET` names only those columns: a
//! field absent from an event never overwrites the stored value, an explicit `null` does.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::config::{MAX_IDENTIFIER_BYTES, MESSAGE_ID_COLUMN, TableName, UPDATED_AT_COLUMN, quote};
use super::schema::{Fit, PgType, copy_text, fit, infer, push_copy_field, shown};
use crate::destination::{Op, OutboundEvent};

/// The staging table of the upserts and deletes.
pub const STAGE: &str = "tideway_stage";
/// The staging table of appended events.
pub const STAGE_EVENTS: &str = "tideway_stage_events";
/// The group of staged rows that are deletes.
const DELETE_GROUP: usize = 0;

/// The columns of the events table, in order, with their types.
pub const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("message_id", "text"),
    ("type", "text"),
    ("event", "text"),
    ("user_id", "text"),
    ("anonymous_id", "text"),
    ("timestamp", "timestamptz"),
    ("properties", "jsonb"),
    ("context", "jsonb"),
];

/// What the destination writes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub table: TableName,
    pub key: Vec<String>,
    pub events_table: Option<TableName>,
    pub create: bool,
}

/// What is known of the tables in the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    /// The target table's columns and types; `None` when it does not exist.
    pub target: Option<BTreeMap<String, PgType>>,
    /// Whether the events table exists.
    pub events: bool,
}

/// A batch as SQL. See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Per event: why it is refused before anything is sent, or `None`.
    pub refused: Vec<Option<String>>,
    /// Statements that create or change tables first, in their own transaction; empty when
    /// the tables already fit the batch.
    pub ddl: Vec<String>,
    /// `(CREATE TEMP TABLE ..., COPY ... FROM STDIN, data)` per staging table.
    pub stages: Vec<Stage>,
    /// The statements that move staged rows into the tables.
    pub apply: Vec<String>,
}

/// One staging table and its rows in COPY text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub create: String,
    pub copy: String,
    pub data: String,
}

impl Plan {
    /// Whether the transaction has anything to do.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

/// Fields of an event by name, borrowed from the batch.
type Fields<'a> = BTreeMap<&'a str, &'a Value>;

/// What the events of one key come to.
#[derive(Debug, Default)]
struct Merged<'a> {
    key: Vec<Value>,
    /// Delete the stored row first (a delete came, possibly followed by upserts).
    delete: bool,
    /// Upsert these fields (`None`: nothing to upsert after the delete).
    fields: Option<Fields<'a>>,
    message_id: Option<String>,
}

/// What one accepted event asks.
enum Action<'a> {
    Upsert { key: Vec<Value>, fields: Fields<'a> },
    Delete { key: Vec<Value> },
    Append(Vec<Option<String>>),
}

/// Plans `batch` against the tables as known.
pub fn plan(target: &Target, tables: &Tables, batch: &[OutboundEvent]) -> Plan {
    let mut columns: Option<BTreeMap<String, PgType>> = tables.target.clone();
    let mut refused = Vec::with_capacity(batch.len());
    let mut actions = Vec::with_capacity(batch.len());
    let mut appends = false;
    for event in batch {
        match action(target, tables, &mut columns, event) {
            Ok(a) => {
                appends |= matches!(a, Action::Append(_));
                actions.push(Some((a, message_id(event))));
                refused.push(None);
            }
            Err(message) => {
                actions.push(None);
                refused.push(Some(message));
            }
        }
    }
    let mut plan = Plan {
        refused,
        ..Plan::default()
    };
    // DDL: what the accepted events need that the tables lack.
    if target.create {
        plan.ddl = ddl(target, tables.target.as_ref(), columns.as_ref());
        if appends
            && !tables.events
            && let Some(events) = &target.events_table
        {
            let cols: Vec<String> = EVENT_COLUMNS
                .iter()
                .map(|(n, t)| match *n {
                    "message_id" => format!("{} {t} PRIMARY KEY", quote(n)),
                    "type" => format!("{} {t} NOT NULL", quote(n)),
                    _ => format!("{} {t}", quote(n)),
                })
                .collect();
            plan.ddl.push(format!(
                "CREATE TABLE IF NOT EXISTS {} ({}, \"_tideway_received_at\" timestamptz NOT NULL DEFAULT now())",
                events.sql(),
                cols.join(", ")
            ));
        }
    }
    let columns = columns.unwrap_or_default();
    // Merge per key, in batch order.
    let mut merged: Vec<Merged> = Vec::new();
    let mut index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    let mut event_rows = String::new();
    for (action, message_id) in actions.into_iter().flatten() {
        let (key, fields) = match action {
            Action::Append(row) => {
                push_row(&mut event_rows, row.iter().map(Option::as_deref));
                continue;
            }
            Action::Upsert { key, fields } => (key, Some(fields)),
            Action::Delete { key } => (key, None),
        };
        let canonical: Vec<Option<String>> = key
            .iter()
            .zip(&target.key)
            .map(|(v, k)| copy_text(&columns[k], v).ok().flatten())
            .collect();
        let slot = *index.entry(canonical).or_insert_with(|| {
            merged.push(Merged {
                key,
                ..Merged::default()
            });
            merged.len() - 1
        });
        let m = &mut merged[slot];
        match fields {
            Some(fields) => {
                m.fields.get_or_insert_with(BTreeMap::new).extend(fields);
                m.message_id = message_id;
            }
            None => {
                m.delete = true;
                m.fields = None;
                m.message_id = None;
            }
        }
    }
    if !merged.is_empty() {
        stage_rows(target, &columns, &merged, &mut plan);
    }
    if !event_rows.is_empty() {
        let events = target
            .events_table
            .as_ref()
            .expect("appends are planned only with an events table");
        let names: Vec<String> = EVENT_COLUMNS.iter().map(|(n, _)| quote(n)).collect();
        let typed: Vec<String> = EVENT_COLUMNS
            .iter()
            .map(|(n, t)| format!("{} {t}", quote(n)))
            .collect();
        plan.stages.push(Stage {
            create: format!(
                "CREATE TEMP TABLE {STAGE_EVENTS} ({}) ON COMMIT DROP",
                typed.join(", ")
            ),
            copy: format!("COPY {STAGE_EVENTS} FROM STDIN"),
            data: event_rows,
        });
        plan.apply.push(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {STAGE_EVENTS} ON CONFLICT (\"message_id\") DO NOTHING",
            events.sql(),
            cols = names.join(", ")
        ));
    }
    plan
}

/// The staging table, its rows and the delete/upsert statements for the merged keys.
fn stage_rows(
    target: &Target,
    columns: &BTreeMap<String, PgType>,
    merged: &[Merged<'_>],
    plan: &mut Plan,
) {
    let bookkeeping = columns.contains_key(MESSAGE_ID_COLUMN);
    let stamped = columns.contains_key(UPDATED_AT_COLUMN);
    // Groups: the field sets of the upserts, numbered from 1 in order of appearance. A field
    // that is `null` for a column that does not exist (and got no type) is left out.
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let mut group_of: HashMap<Vec<&str>, usize> = HashMap::new();
    let mut row_group: Vec<usize> = Vec::with_capacity(merged.len());
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for m in merged {
        let Some(fields) = &m.fields else {
            row_group.push(DELETE_GROUP);
            continue;
        };
        let set: Vec<&str> = fields
            .keys()
            .copied()
            .filter(|c| columns.contains_key(*c))
            .collect();
        let group = match group_of.get(&set) {
            Some(g) => *g,
            None => {
                used.extend(set.iter().copied());
                groups.push(set.clone());
                group_of.insert(set, groups.len());
                groups.len()
            }
        };
        row_group.push(group);
    }
    let staged: Vec<&str> = target
        .key
        .iter()
        .map(String::as_str)
        .chain(used.iter().copied())
        .collect();
    let mut typed: Vec<String> = vec!["_tideway_group int".to_string()];
    typed.extend(
        staged
            .iter()
            .map(|c| format!("{} {}", quote(c), columns[*c].sql())),
    );
    typed.push(format!("{MESSAGE_ID_COLUMN} text"));
    let mut data = String::new();
    for (m, group) in merged.iter().zip(row_group) {
        let key = || {
            m.key
                .iter()
                .zip(&target.key)
                .map(|(v, k)| text(&columns[k], v))
        };
        if m.delete {
            let row = std::iter::once(Some(DELETE_GROUP.to_string()))
                .chain(key())
                .chain(used.iter().map(|_| None))
                .chain([None]);
            push_row(&mut data, row);
        }
        if let Some(fields) = &m.fields {
            let values = used
                .iter()
                .map(|c| fields.get(*c).and_then(|v| text(&columns[*c], v)));
            let row = std::iter::once(Some(group.to_string()))
                .chain(key())
                .chain(values)
                .chain([m.message_id.clone()]);
            push_row(&mut data, row);
        }
    }
    plan.stages.push(Stage {
        create: format!(
            "CREATE TEMP TABLE {STAGE} ({}) ON COMMIT DROP",
            typed.join(", ")
        ),
        copy: format!("COPY {STAGE} FROM STDIN"),
        data,
    });
    let table = target.table.sql();
    let keys: Vec<String> = target.key.iter().map(|k| quote(k)).collect();
    if merged.iter().any(|m| m.delete) {
        let on: Vec<String> = keys.iter().map(|k| format!("t.{k} = s.{k}")).collect();
        plan.apply.push(format!(
            "DELETE FROM {table} AS t USING {STAGE} AS s WHERE s._tideway_group = {DELETE_GROUP} AND {}",
            on.join(" AND ")
        ));
    }
    for (i, group) in groups.iter().enumerate() {
        let mut into: Vec<String> = keys.clone();
        into.extend(group.iter().map(|c| quote(c)));
        let mut select = into.clone();
        let mut set: Vec<String> = group
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
            .collect();
        if bookkeeping {
            into.push(quote(MESSAGE_ID_COLUMN));
            select.push(quote(MESSAGE_ID_COLUMN));
            set.push(format!("{0} = EXCLUDED.{0}", quote(MESSAGE_ID_COLUMN)));
        }
        if stamped {
            into.push(quote(UPDATED_AT_COLUMN));
            select.push("now()".to_string());
            set.push(format!("{0} = EXCLUDED.{0}", quote(UPDATED_AT_COLUMN)));
        }
        let conflict = if set.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", set.join(", "))
        };
        plan.apply.push(format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {STAGE} WHERE _tideway_group = {} ORDER BY {} ON CONFLICT ({}) {conflict}",
            into.join(", "),
            select.join(", "),
            i + 1,
            keys.join(", "),
            keys.join(", "),
        ));
    }
}

/// The DDL that turns the table `before` into `after`.
fn ddl(
    target: &Target,
    before: Option<&BTreeMap<String, PgType>>,
    after: Option<&BTreeMap<String, PgType>>,
) -> Vec<String> {
    let Some(after) = after else {
        return Vec::new();
    };
    let table = target.table.sql();
    let Some(before) = before else {
        let mut cols: Vec<String> = target
            .key
            .iter()
            .map(|k| format!("{} {} NOT NULL", quote(k), after[k].sql()))
            .collect();
        cols.extend(
            after
                .iter()
                .filter(|(c, _)| !target.key.contains(c) && !c.starts_with("_tideway_"))
                .map(|(c, t)| format!("{} {}", quote(c), t.sql())),
        );
        cols.push(format!("{} text", quote(MESSAGE_ID_COLUMN)));
        cols.push(format!(
            "{} timestamptz NOT NULL DEFAULT now()",
            quote(UPDATED_AT_COLUMN)
        ));
        let keys: Vec<String> = target.key.iter().map(|k| quote(k)).collect();
        return vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} ({}, PRIMARY KEY ({}))",
            cols.join(", "),
            keys.join(", ")
        )];
    };
    let mut changes = Vec::new();
    for (column, ty) in after {
        match before.get(column) {
            None => changes.push(format!(
                "ADD COLUMN IF NOT EXISTS {} {}",
                quote(column),
                ty.sql()
            )),
            Some(old) if old != ty => {
                changes.push(format!("ALTER COLUMN {} TYPE {}", quote(column), ty.sql()))
            }
            Some(_) => {}
        }
    }
    if changes.is_empty() {
        Vec::new()
    } else {
        vec![format!("ALTER TABLE {table} {}", changes.join(", "))]
    }
}

/// A value's COPY text for a column the plan already checked it fits.
fn text(column: &PgType, value: &Value) -> Option<String> {
    copy_text(column, value).ok().flatten()
}

fn push_row<'a>(data: &mut String, row: impl Iterator<Item = Option<impl AsRef<str> + 'a>>) {
    for (i, field) in row.enumerate() {
        if i > 0 {
            data.push('\t');
        }
        push_copy_field(data, field.as_ref().map(AsRef::as_ref));
    }
    data.push('\n');
}

fn message_id(event: &OutboundEvent) -> Option<String> {
    event.id_field("messageId")
}

/// What `event` asks, with its values checked against (and, with `create`, added to or widened
/// in) `columns`; `Err` says why it is refused.
fn action<'a>(
    target: &Target,
    tables: &Tables,
    columns: &mut Option<BTreeMap<String, PgType>>,
    event: &'a OutboundEvent,
) -> Result<Action<'a>, String> {
    let kind = event.kind();
    let (fields_name, id_name) = match kind {
        "identify" => ("traits", "userId"),
        "group" => ("traits", "groupId"),
        "track" | "page" | "screen" => ("properties", "userId"),
        "" => {
            return Err(
                "the event has no `type`; known types: identify, group, track, page, screen".into(),
            );
        }
        other => {
            return Err(format!(
                "message type `{other}` is not written to Postgres; known types: identify, \
                 group, track, page, screen"
            ));
        }
    };
    if event.op == Op::Upsert && fields_name == "properties" && target.events_table.is_some() {
        return append(target, tables, event);
    }
    let fields = match event.event.get(fields_name) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return Err(format!(
                "`{fields_name}` must be an object, not {}",
                shown(other)
            ));
        }
    };
    if columns.is_none() && !target.create {
        return Err(format!(
            "table {} does not exist and `create = false`; create it or set `create = true`",
            target.table.display()
        ));
    }
    let known = columns.get_or_insert_with(BTreeMap::new);
    // Columns to add or widen, applied only when the whole event is accepted.
    let mut changes: Vec<(&str, PgType)> = Vec::new();
    let mut key = Vec::with_capacity(target.key.len());
    for k in &target.key {
        let value = match fields.and_then(|f| f.get(k)) {
            Some(v) if !v.is_null() => v.clone(),
            _ => match event.id_field(id_name) {
                Some(id) => Value::String(id),
                None => {
                    return Err(format!(
                        "the event has no `{k}` in `{fields_name}` and no `{id_name}` to fill the \
                         key column `{k}`"
                    ));
                }
            },
        };
        if let Some(ty) = check(target, known, k, &value, true)? {
            changes.push((k, ty));
        }
        key.push(value);
    }
    let mut values = Fields::new();
    if event.op == Op::Upsert {
        for (name, value) in fields.into_iter().flatten() {
            if target.key.contains(name) {
                continue;
            }
            check_column_name(name)?;
            if let Some(ty) = check(target, known, name, value, false)? {
                changes.push((name, ty));
            }
            values.insert(name.as_str(), value);
        }
    }
    for (column, ty) in changes {
        known.insert(column.to_string(), ty);
    }
    if target.create && !known.contains_key(MESSAGE_ID_COLUMN) {
        known.insert(MESSAGE_ID_COLUMN.to_string(), PgType::text());
        known.insert(UPDATED_AT_COLUMN.to_string(), PgType::timestamptz());
    }
    event.op.upsert_or_delete("postgres")?;
    Ok(match event.op {
        Op::Delete => Action::Delete { key },
        Op::Upsert | Op::Insert | Op::Update => Action::Upsert {
            key,
            fields: values,
        },
    })
}

/// Whether `column` takes `value`: `Ok(Some(type))` when it must first be added or widened to
/// `type` (only with `create`), `Err` naming the column, the value and the type when not.
fn check(
    target: &Target,
    columns: &BTreeMap<String, PgType>,
    column: &str,
    value: &Value,
    is_key: bool,
) -> Result<Option<PgType>, String> {
    if has_nul(value) {
        return Err(format!(
            "column `{column}`: {} holds a NUL character, which Postgres cannot store",
            shown(value)
        ));
    }
    let table = || target.table.display();
    let Some(existing) = columns.get(column) else {
        if !target.create {
            return Err(format!(
                "column `{column}` does not exist in {} and `create = false`; add it to the \
                 table or leave the field out",
                table()
            ));
        }
        return Ok(match infer(value) {
            // A key is text unless it is a number: an id that looks like a date is still an id.
            Some(PgType::Time(_)) if is_key => Some(PgType::text()),
            // `null` for a column that does not exist yet: nothing to store, nothing learned.
            ty => ty,
        });
    };
    // Ids arrive as strings (`userId`): a key column of integers takes one that is an integer.
    let integer_id = is_key
        && matches!(existing, PgType::Integer(_))
        && value.as_str().is_some_and(|s| s.parse::<i64>().is_ok());
    match fit(existing, value) {
        _ if integer_id => Ok(None),
        Fit::Takes => Ok(None),
        Fit::Widen(wider) if target.create && !is_key => Ok(Some(wider)),
        Fit::Widen(wider) => Err(format!(
            "column `{column}` of {}: {} does not fit its type {}{}",
            table(),
            shown(value),
            existing.sql(),
            if is_key {
                " (key columns are never widened)".to_string()
            } else {
                format!(
                    " (with `create = true` it would be widened to {})",
                    wider.sql()
                )
            }
        )),
        Fit::Refuses(why) => Err(format!("column `{column}` of {}: {why}", table())),
    }
}

/// Whether a NUL character is anywhere in `value` (Postgres text and jsonb cannot hold one).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn check_column_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("`{name}` cannot be a column name"));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "field `{name}` is longer than Postgres's {MAX_IDENTIFIER_BYTES}-byte column names"
        ));
    }
    if name.starts_with("_tideway_") {
        return Err(format!(
            "field `{name}`: names starting with `_tideway_` are Tideway's bookkeeping columns"
        ));
    }
    Ok(())
}

/// An appended event's row for the events table.
fn append<'a>(
    target: &Target,
    tables: &Tables,
    event: &'a OutboundEvent,
) -> Result<Action<'a>, String> {
    let events = target.events_table.as_ref().expect("checked by the caller");
    if !tables.events && !target.create {
        return Err(format!(
            "events table {} does not exist and `create = false`; create it or set `create = true`",
            events.display()
        ));
    }
    let e = &event.event;
    let message_id = message_id(event).unwrap_or_else(|| {
        // No messageId: one derived from the event itself, so a redelivery is still a no-op.
        let hash = xxhash_rust::xxh3::xxh3_128(e.to_string().as_bytes());
        format!("tideway-{hash:032x}")
    });
    let timestamp = match e.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match tideway_core::time::parse_time(s) {
            Some(t) => Some(t.to_rfc3339()),
            None => {
                return Err(format!(
                    "`timestamp` {} is not an ISO-8601 instant",
                    shown(&Value::String(s.clone()))
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "`timestamp` {} is not an ISO-8601 instant",
                shown(other)
            ));
        }
    };
    let json = |name: &str| -> Result<Option<String>, String> {
        match e.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => copy_text(&PgType::jsonb(), v).map_err(|why| format!("`{name}`: {why}")),
        }
    };
    let name = ["event", "name"]
        .iter()
        .find_map(|k| e.get(*k).and_then(Value::as_str))
        .map(str::to_string);
    let row = vec![
        Some(message_id),
        Some(event.kind().to_string()),
        name,
        event.id_field("userId"),
        event.id_field("anonymousId"),
        timestamp,
        json("properties")?,
        json("context")?,
    ];
    if let Some(bad) = row.iter().flatten().find(|v| v.contains('\0')) {
        return Err(format!(
            "{} holds a NUL character, which Postgres cannot store",
            shown(&Value::String(bad.clone()))
        ));
    }
    Ok(Action::Append(row))
}
