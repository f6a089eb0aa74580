//! The lake loader: tails the event log and writes each source's events into its schema of the
//! lake, in the warehouse layout of [`crate::warehouse`].
//!
//! # Exactly once
//! A batch covers log offsets `[from, to)`. Every table written for it carries the Delta
//! transaction `("collect", to)` in the same commit as its rows, and the log's `lake` consumer
//! offset moves to `to` only after every table has committed. After a crash the loader starts
//! again from the committed offset; for each table it skips the records below that table's
//! own recorded transaction version. So a crash between any two commits, then a restart, gives
//! every event exactly once in every table, even though the batches after the restart need not
//! have the same boundaries as before.
//!
//! # Types
//! A column's type is the table's type when the table has the column, else the type of the
//! batch's first value (integers and decimals together make a double; text absorbs times). A
//! text column takes any scalar as text, as RudderStack's warehouses do. A value that fits
//! no other way goes to the variant column `<column>__v_<type>` and a row in
//! `_tideway.dead_letters` says so: nothing becomes NULL silently.
//!
//! # Bounded width
//! A table has at most [`MAX_TABLE_COLUMNS`] columns: fields past it (a source whose keys
//! never repeat) go to the JSON text column [`OVERFLOW_COLUMN`] of their row, with a warning.
//!
//! # Users
//! `users` keeps one row per `userId` with the latest non-null value of each trait by
//! `received_at`: the batch's identifies are folded in order, then over the stored row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};
use tideway_core::naming::variant_column;
use tideway_core::{Fault, Faulty};
use tideway_lake::dead_letters;
use tideway_lake::{Lake, LakeError, SYSTEM_SCHEMA, TableName, Txn};
use tracing::{debug, info, warn};

use crate::event::{Meta, parse_time, rfc3339};
use crate::log::{EventLog, LogError, Record};
use crate::metrics as m;
use crate::warehouse::{self, Cell, Col, Names, Row};

/// The transaction application id of the loader's commits is this prefix and the log's id
/// (`collect:<uuid>`): offsets of a new log (a lost or replaced log directory) start again at
/// 0 and must not be mistaken for ones the lake already holds.
pub const TXN_APP: &str = "collect";
/// The log consumer name of the lake loader.
pub const CONSUMER: &str = "lake";
/// The dead-letter table.
pub use tideway_lake::dead_letters::DEAD_LETTERS;
/// At most this many columns per table: fields past it land in [`OVERFLOW_COLUMN`].
pub const MAX_TABLE_COLUMNS: usize = 1000;
/// The JSON text column that holds a row's fields past [`MAX_TABLE_COLUMNS`].
pub const OVERFLOW_COLUMN: &str = "_tideway_overflow";

/// Why loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the log or committing its offset failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Writing the lake failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
}

impl Faulty for LoadError {
    fn fault(&self) -> Fault {
        match self {
            LoadError::Log(e) => e.fault(),
            LoadError::Lake(e) => e.fault(),
        }
    }
}

/// When the loader commits a batch.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// Commit once this many events are waiting...
    pub batch_events: usize,
    /// ...or once the oldest has waited this long.
    pub batch_age: Duration,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_events: 50_000,
            batch_age: Duration::from_secs(3),
        }
    }
}

/// What one committed batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Log offsets covered.
    pub from: u64,
    /// End of the covered range (exclusive).
    pub to: u64,
    /// Events loaded (rows in `tracks`, `identifies`, ... not counting per-event tables).
    pub events: u64,
    /// Records already in the lake (a rerun after a crash) or repeated in the batch.
    pub skipped: u64,
    /// Dead-letter rows written.
    pub dead_letters: u64,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct TableState {
    /// The transaction version last committed to the table (`None`: never).
    version: Option<i64>,
    schema: Option<SchemaRef>,
    loaded: bool,
}

/// Tails a log into the lake. See the module docs.
#[derive(Debug)]
pub struct Loader {
    lake: Lake,
    log: Arc<dyn EventLog>,
    options: LoaderOptions,
    next: u64,
    tables: HashMap<TableName, TableState>,
    txn_app: String,
    names: Names,
}

/// A row bound for a table, with the log offset it came from and its raw event (for dead
/// letters).
struct Pending<'a> {
    offset: u64,
    row: Row,
    meta: &'a Meta,
    body: &'a [u8],
}

/// One dead-letter row.
struct DeadLetter {
    offset: u64,
    source: String,
    table: Option<String>,
    stage: &'static str,
    code: String,
    field: Option<String>,
    reason: String,
    message_id: Option<String>,
    received_at: Option<String>,
    payload: String,
}

impl DeadLetter {
    /// A dead letter for the event at `offset`, with its raw bytes.
    fn event(
        offset: u64,
        meta: &Meta,
        body: &[u8],
        stage: &'static str,
        code: impl Into<String>,
        reason: impl Into<String>,
    ) -> DeadLetter {
        DeadLetter {
            offset,
            source: meta.source.clone(),
            table: None,
            stage,
            code: code.into(),
            field: None,
            reason: reason.into(),
            message_id: meta.message_id.clone(),
            received_at: Some(meta.received_at.clone()),
            payload: String::from_utf8_lossy(body).into_owned(),
        }
    }

    fn at(mut self, table: impl Into<String>, field: Option<String>) -> DeadLetter {
        self.table = Some(table.into());
        self.field = field;
        self
    }
}

impl Loader {
    /// A loader that resumes where the last one committed.
    pub async fn new(
        lake: Lake,
        log: Arc<dyn EventLog>,
        options: LoaderOptions,
    ) -> Result<Loader, LoadError> {
        let next = match log.committed(CONSUMER) {
            Some(offset) => offset,
            None => {
                let start = log.stats().start;
                log.commit(CONSUMER, start).await?;
                start
            }
        };
        info!(offset = next, "lake loader: resuming");
        let txn_app = format!("{TXN_APP}:{}", log.id());
        Ok(Loader {
            lake,
            log,
            options,
            next,
            tables: HashMap::new(),
            txn_app,
            names: Names::new(),
        })
    }

    /// The next log offset to load.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Loads until `stop` resolves, committing batches by size and age.
    pub async fn run(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), LoadError> {
        tokio::pin!(stop);
        let mut pending: Vec<Record> = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            let wait = match first_at {
                Some(t) => self.options.batch_age.saturating_sub(t.elapsed()),
                None => Duration::from_millis(500),
            };
            let want = self
                .options
                .batch_events
                .saturating_sub(pending.len())
                .max(1);
            let from = self.next + pending.len() as u64;
            let read = tokio::select! {
                r = self.log.read(from, want.min(50_000), wait.max(Duration::from_millis(1))) => Some(r),
                () = &mut stop => None,
            };
            let read = match read {
                Some(Ok(records)) => Some(records),
                Some(Err(e)) => {
                    // The loader must not stop while the API accepts events: retry.
                    metrics::counter!(m::LOADER_ERRORS, "fault" => e.fault().to_string())
                        .increment(1);
                    tracing::error!(error = %e, "lake loader: reading the event log failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => None,
            };
            let stopping = read.is_none();
            if let Some(records) = read {
                if !records.is_empty() && first_at.is_none() {
                    first_at = Some(Instant::now());
                }
                pending.extend(records);
            }
            let due = pending.len() >= self.options.batch_events
                || first_at.is_some_and(|t| t.elapsed() >= self.options.batch_age);
            if !pending.is_empty() && (due || stopping) {
                let batch = std::mem::take(&mut pending);
                first_at = None;
                self.load_retrying(&batch).await;
            }
            let end = self.log.stats().end;
            metrics::gauge!(m::LOADER_LAG_EVENTS).set(end.saturating_sub(self.next) as f64);
            if stopping {
                return Ok(());
            }
        }
    }

    /// Loads one batch, retrying with backoff until it commits: while the lake is unreachable
    /// the log holds the events, and once it is full the API answers 429 (back-pressure).
    async fn load_retrying(&mut self, batch: &[Record]) {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.load(batch).await {
                Ok(_) => return,
                Err(e) => {
                    metrics::counter!(m::LOADER_ERRORS, "fault" => e.fault().to_string())
                        .increment(1);
                    tracing::error!(error = %e, retry_in = ?delay, "lake loader: the batch did not commit; retrying");
                    // Another attempt starts from what each table recorded.
                    for state in self.tables.values_mut() {
                        state.loaded = false;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Loads everything in the log now, in batches; returns what each batch did.
    pub async fn drain(&mut self) -> Result<Vec<LoadReport>, LoadError> {
        let mut reports = Vec::new();
        loop {
            let records = self
                .log
                .read(self.next, self.options.batch_events, Duration::ZERO)
                .await?;
            if records.is_empty() {
                return Ok(reports);
            }
            reports.push(self.load(&records).await?);
        }
    }

    /// Loads one batch of consecutive records starting at the loader's position.
    pub async fn load(&mut self, records: &[Record]) -> Result<LoadReport, LoadError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(LoadReport::default());
        };
        let from = first.offset;
        let to = last.offset + 1;
        let loaded_at = Utc::now();
        let started = Instant::now();
        let mut report = LoadReport {
            from,
            to,
            ..LoadReport::default()
        };

        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut parsed: Vec<(u64, Meta, &[u8])> = Vec::with_capacity(records.len());
        for r in records {
            match Meta::parse(&r.payload) {
                Ok((meta, body)) => parsed.push((r.offset, meta, body)),
                // Only a bug or a damaged disk can get here; the record is kept, not skipped.
                Err(reason) => dead.push(DeadLetter {
                    offset: r.offset,
                    source: String::new(),
                    table: None,
                    stage: "load",
                    code: "unreadable_record".into(),
                    field: None,
                    reason,
                    message_id: None,
                    received_at: None,
                    payload: String::from_utf8_lossy(&r.payload).into_owned(),
                }),
            }
        }
        let mut by_table: BTreeMap<TableName, Vec<Pending<'_>>> = BTreeMap::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (offset, meta, body) in &parsed {
            if meta.k == "reject" {
                let reason = meta.reason.clone().unwrap_or_default();
                let code = reason.split_once(':').map_or("invalid_event", |(c, _)| c);
                let mut letter = DeadLetter::event(*offset, meta, body, "collect", code, &reason);
                letter.field = meta.field.clone();
                dead.push(letter);
                continue;
            }
            let id = meta.message_id.as_deref().unwrap_or("");
            if !seen.insert((meta.source.as_str(), id)) {
                report.skipped += 1;
                continue;
            }
            // The API checked the fields it knows; a value no JSON number type can hold
            // (`1e999`) only shows here. Such an event is a dead letter, never a stuck loader.
            let event: Map<String, Value> = match serde_json::from_slice(body) {
                Ok(e) => e,
                Err(e) => {
                    dead.push(DeadLetter::event(
                        *offset,
                        meta,
                        body,
                        "load",
                        "unreadable_event",
                        format!("the event cannot be read as JSON values: {e}"),
                    ));
                    continue;
                }
            };
            report.events += 1;
            for (table, row) in warehouse::rows(&mut self.names, meta, &event, loaded_at) {
                let name = match TableName::new(&meta.source, &table) {
                    Ok(n) => n,
                    Err(e) => {
                        dead.push(
                            DeadLetter::event(
                                *offset,
                                meta,
                                body,
                                "load",
                                "invalid_table_name",
                                e.to_string(),
                            )
                            .at(table, Some("event".into())),
                        );
                        continue;
                    }
                };
                by_table.entry(name).or_default().push(Pending {
                    offset: *offset,
                    row,
                    meta,
                    body,
                });
            }
        }

        // Build every table's rows first: conflicts found while building are dead letters,
        // which commit before the tables, so a crash cannot lose them.
        let rows_done = started.elapsed();
        let mut writes: Vec<(TableName, RecordBatch, bool)> = Vec::new();
        for (name, rows) in by_table {
            let state = self.state(&name).await?;
            let done = state.version.unwrap_or(-1);
            let rows: Vec<Pending<'_>> = rows
                .into_iter()
                .filter(|p| (p.offset as i64) >= done)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let is_users = name.table() == "users";
            let t = Instant::now();
            let rows = if is_users {
                self.fold_users(&name, rows).await?
            } else {
                rows
            };
            let folded = t.elapsed();
            let schema = self.state(&name).await?.schema.clone();
            let batch = build(&mut self.names, &name, &rows, schema.as_deref(), &mut dead);
            debug!(table = %name, rows = rows.len(), ?folded, built = ?t.elapsed(), "lake loader: table built");
            *report.rows.entry(name.to_string()).or_default() += batch.num_rows() as u64;
            writes.push((name, batch, is_users));
        }
        let dl_name = TableName::new(SYSTEM_SCHEMA, DEAD_LETTERS)?;
        let dl_done = self.state(&dl_name).await?.version.unwrap_or(-1);
        dead.retain(|d| (d.offset as i64) >= dl_done);
        if !dead.is_empty() {
            report.dead_letters = dead.len() as u64;
            for d in &dead {
                metrics::counter!(m::LOADER_DEAD_LETTERS, "code" => d.code.clone()).increment(1);
            }
            let batch = dead_letter_batch(&dead);
            self.commit(&dl_name, batch, false, to).await?;
        }
        let built = started.elapsed();
        for (name, batch, is_users) in writes {
            let t = Instant::now();
            let rows = batch.num_rows();
            metrics::counter!(m::LOADER_ROWS, "table" => name.to_string())
                .increment(batch.num_rows() as u64);
            self.commit(&name, batch, is_users, to).await?;
            debug!(table = %name, rows, took = ?t.elapsed(), "lake loader: table committed");
        }
        self.log.commit(CONSUMER, to).await?;
        info!(
            from, to, events = report.events, dead_letters = report.dead_letters,
            rows_in = ?rows_done, built_in = ?built, total = ?started.elapsed(),
            "lake loader: batch committed"
        );
        self.next = to;
        if let Some(received) = parsed
            .first()
            .and_then(|(_, m, _)| parse_time(&m.received_at))
        {
            let waited = (Utc::now() - received).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!(m::LOADER_LAG_SECONDS).set(waited);
        }
        Ok(report)
    }

    async fn state(&mut self, name: &TableName) -> Result<&TableState, LoadError> {
        let loaded = self.tables.get(name).is_some_and(|s| s.loaded);
        if !loaded {
            let (version, schema) = match self.lake.load(name).await? {
                Some(table) => (
                    self.lake.txn_version(name, &self.txn_app).await?,
                    Some(Lake::schema_of(name, &table)?),
                ),
                None => (None, None),
            };
            self.tables.insert(
                name.clone(),
                TableState {
                    version,
                    schema,
                    loaded: true,
                },
            );
        }
        Ok(self.tables.get(name).expect("inserted above"))
    }

    async fn commit(
        &mut self,
        name: &TableName,
        batch: RecordBatch,
        merge: bool,
        to: u64,
    ) -> Result<(), LoadError> {
        let written = batch.schema();
        let write = if merge {
            self.lake.merge(name, vec![batch], &["id"])
        } else {
            self.lake.append(name, vec![batch])
        };
        let commit = write.with_txn(Txn::new(&self.txn_app, to as i64)).await?;
        let state = self.tables.entry(name.clone()).or_default();
        state.version = Some(to as i64);
        if commit.variant_columns.is_empty() && commit.widened_columns.is_empty() {
            // The table now has its old columns plus the batch's new ones, with the batch's
            // types: no need to read its log again before the next batch.
            let mut fields: Vec<Field> = state
                .schema
                .as_ref()
                .map(|s| s.fields().iter().map(|f| f.as_ref().clone()).collect())
                .unwrap_or_default();
            for f in written.fields() {
                if !fields.iter().any(|g| g.name() == f.name()) {
                    fields.push(f.as_ref().clone());
                }
            }
            state.schema = Some(Arc::new(Schema::new(fields)));
        } else {
            // Someone else's writes made the table differ from what this loader thought.
            warn!(table = %name, variants = ?commit.variant_columns, widened = ?commit.widened_columns,
                "lake loader: the table's schema differed from the loader's view; reloading it");
            state.loaded = false;
        }
        Ok(())
    }

    /// Folds the batch's `users` rows per id in order, then over the stored rows.
    async fn fold_users<'a>(
        &mut self,
        name: &TableName,
        rows: Vec<Pending<'a>>,
    ) -> Result<Vec<Pending<'a>>, LoadError> {
        let mut order: Vec<String> = Vec::new();
        let mut folded: HashMap<String, Pending<'a>> = HashMap::new();
        for p in rows {
            let Some(Cell::Str(id)) = p.row.get(self.names.std.id) else {
                continue;
            };
            let id = id.to_string();
            match folded.get_mut(&id) {
                Some(current) => {
                    overlay(&mut current.row, &p.row);
                    current.offset = p.offset;
                    current.meta = p.meta;
                    current.body = p.body;
                }
                None => {
                    order.push(id.clone());
                    folded.insert(id, p);
                }
            }
        }
        if self.tables.get(name).is_some_and(|s| s.schema.is_some()) && !order.is_empty() {
            // A semi-join with the batch's ids: an `IN (...)` list of thousands of ids
            // overflows the stack when delta-rs turns it into a file-skipping predicate.
            let ids = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "__tideway_id",
                    DataType::Utf8,
                    false,
                )])),
                vec![
                    Arc::new(deltalake::arrow::array::StringArray::from(order.clone())) as ArrayRef,
                ],
            )
            .expect("one column of the declared type");
            let ctx = self.lake.session();
            self.lake.refresh().await?;
            let stored = ctx
                .table(format!("lake.\"{}\".\"{}\"", name.schema(), name.table()))
                .await
                .map_err(LakeError::from)?;
            let batches = stored
                .join(
                    ctx.read_batch(ids).map_err(LakeError::from)?,
                    deltalake::datafusion::prelude::JoinType::LeftSemi,
                    &["id"],
                    &["__tideway_id"],
                    None,
                )
                .map_err(LakeError::from)?
                .collect()
                .await
                .map_err(LakeError::from)?;
            {
                for batch in &batches {
                    let (id_col, received_col) = (self.names.std.id, self.names.std.received_at);
                    for stored in rows_of(&mut self.names, batch) {
                        let Some(Cell::Str(id)) = stored.get(id_col) else {
                            continue;
                        };
                        let id = id.to_string();
                        if let Some(p) = folded.get_mut(&id) {
                            let newer = p.row.get(received_col) >= stored.get(received_col);
                            let mut merged = stored;
                            if newer {
                                overlay(&mut merged, &p.row);
                                p.row = merged;
                            } else {
                                overlay(&mut p.row, &merged);
                            }
                        }
                    }
                }
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|id| folded.remove(&id))
            .collect())
    }
}

/// Sets every cell of `newer` over `row` (nulls are absent, so they never overwrite).
fn overlay(row: &mut Row, newer: &Row) {
    for (c, v) in &newer.cells {
        if let Some(slot) = row.cells.iter_mut().find(|(k, _)| k == c) {
            slot.1 = v.clone();
        } else {
            row.cells.push((*c, v.clone()));
        }
    }
}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Cell::Time(a), Cell::Time(b)) | (Cell::Int(a), Cell::Int(b)) => a.partial_cmp(b),
            (Cell::Float(a), Cell::Float(b)) => a.partial_cmp(b),
            (Cell::Str(a), Cell::Str(b)) => a.partial_cmp(b),
            (Cell::Bool(a), Cell::Bool(b)) => a.partial_cmp(b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Time,
}

impl Kind {
    fn of(cell: &Cell) -> Kind {
        match cell {
            Cell::Str(_) => Kind::Str,
            Cell::Int(_) => Kind::Int,
            Cell::Float(_) => Kind::Float,
            Cell::Bool(_) => Kind::Bool,
            Cell::Time(_) => Kind::Time,
        }
    }

    fn of_type(ty: &DataType) -> Option<Kind> {
        Some(match ty {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Str,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Kind::Int,
            DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Boolean => Kind::Bool,
            DataType::Timestamp(..) => Kind::Time,
            _ => return None,
        })
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Str => "text",
            Kind::Int => "bigint",
            Kind::Float => "double",
            Kind::Bool => "bool",
            Kind::Time => "timestamp",
        }
    }

    /// Whether a value of kind `value` is stored in a column of this kind (perhaps converted).
    fn accepts(self, value: Kind) -> bool {
        matches!(
            (self, value),
            (Kind::Str, _)
                | (Kind::Float, Kind::Int | Kind::Float)
                | (Kind::Int, Kind::Int)
                | (Kind::Bool, Kind::Bool)
                | (Kind::Time, Kind::Time)
        )
    }
}

/// Accumulates the kind of a new column over its values: the first value's kind, except that
/// integers and doubles together make doubles and text absorbs times.
fn widen(kind: Option<Kind>, value: Kind) -> Kind {
    match (kind, value) {
        (None, v) => v,
        (Some(Kind::Int), Kind::Float) => Kind::Float,
        (Some(Kind::Time), Kind::Str) => Kind::Str,
        (Some(k), _) => k,
    }
}

/// Builds the Arrow batch of `rows` for table `name`, sending values that fit no column to
/// variant columns and reporting them in `dead`. One pass to find the columns and their
/// kinds, one to place the values.
fn build(
    names: &mut Names,
    name: &TableName,
    rows: &[Pending<'_>],
    table: Option<&Schema>,
    dead: &mut Vec<DeadLetter>,
) -> RecordBatch {
    // Columns in order of first appearance; `pos[col]` is a column's place in the batch.
    // Past MAX_TABLE_COLUMNS, new columns overflow into one JSON column (memory and schema
    // stay bounded against sources with unbounded key sets).
    const OVERFLOW: u32 = u32::MAX - 1;
    let mut pos: Vec<u32> = vec![u32::MAX; names.len()];
    let mut columns: Vec<Col> = Vec::new();
    let mut seen: Vec<Option<Kind>> = Vec::new();
    let mut room = MAX_TABLE_COLUMNS.saturating_sub(table.map_or(0, |s| s.fields().len()));
    for p in rows {
        for (c, v) in &p.row.cells {
            let slot = &mut pos[*c as usize];
            if *slot == OVERFLOW {
                continue;
            }
            if *slot == u32::MAX {
                let known = table.is_some_and(|s| s.index_of(names.name(*c)).is_ok());
                if !known {
                    if room == 0 {
                        *slot = OVERFLOW;
                        continue;
                    }
                    room -= 1;
                }
                *slot = columns.len() as u32;
                columns.push(*c);
                seen.push(None);
            }
            let i = *slot as usize;
            seen[i] = Some(widen(seen[i], Kind::of(v)));
        }
    }
    let mut overflow: Vec<Option<Map<String, Value>>> = vec![None; rows.len()];
    let kinds: Vec<Kind> = columns
        .iter()
        .zip(&seen)
        .map(|(c, k)| {
            table
                .and_then(|s| s.field_with_name(names.name(*c)).ok())
                .and_then(|f| Kind::of_type(f.data_type()))
                .unwrap_or(k.unwrap_or(Kind::Str))
        })
        .collect();
    // Values that conflict go to variant columns, added at the end.
    let mut cells: Vec<Vec<Option<&Cell>>> = vec![vec![None; rows.len()]; columns.len()];
    let mut variants: HashMap<(usize, Kind), usize> = HashMap::new();
    let mut extra: Vec<(String, Kind, Vec<Option<&Cell>>)> = Vec::new();
    for (r, p) in rows.iter().enumerate() {
        for (c, v) in &p.row.cells {
            if pos[*c as usize] == OVERFLOW {
                overflow[r]
                    .get_or_insert_with(Map::new)
                    .insert(names.name(*c).to_string(), json_of(v));
                continue;
            }
            let ci = pos[*c as usize] as usize;
            let vk = Kind::of(v);
            if kinds[ci].accepts(vk) {
                cells[ci][r] = Some(v);
                continue;
            }
            let column = names.name(*c).to_string();
            let vname = variant_column(&column, vk.label());
            let existing = names
                .ids_of(&vname)
                .and_then(|vc| pos.get(vc as usize).copied())
                .filter(|vi| *vi != u32::MAX && kinds[*vi as usize].accepts(vk));
            let target = match existing {
                // The variant column is already among the batch's columns (a stored `users`
                // row carries it): the value joins it.
                Some(vi) => {
                    cells[vi as usize][r] = Some(v);
                    vname
                }
                None => {
                    let vi = *variants.entry((ci, vk)).or_insert_with(|| {
                        extra.push((vname, vk, vec![None; rows.len()]));
                        extra.len() - 1
                    });
                    extra[vi].2[r] = Some(v);
                    extra[vi].0.clone()
                }
            };
            let reason = format!(
                "`{column}` is {} in {name}, the value {} is {}; it went to `{target}`",
                kinds[ci].label(),
                show(v),
                vk.label(),
            );
            dead.push(
                DeadLetter::event(p.offset, p.meta, p.body, "load", "type_conflict", reason)
                    .at(name.to_string(), Some(column)),
            );
        }
    }
    let mut fields = Vec::with_capacity(columns.len() + extra.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + extra.len());
    for (ci, column) in columns.iter().enumerate() {
        fields.push(Field::new(names.name(*column), kinds[ci].data_type(), true));
        arrays.push(array(kinds[ci], &cells[ci]));
    }
    for (column, kind, values) in &extra {
        fields.push(Field::new(column, kind.data_type(), true));
        arrays.push(array(*kind, values));
    }
    if overflow.iter().any(Option::is_some) {
        let n = pos.iter().filter(|p| **p == OVERFLOW).count();
        warn!(table = %name, columns = n, limit = MAX_TABLE_COLUMNS,
            "lake loader: the table is at its column limit; new fields go to `{OVERFLOW_COLUMN}` as JSON");
        let mut b = StringBuilder::new();
        for o in &overflow {
            b.append_option(o.as_ref().map(|m| Value::Object(m.clone()).to_string()));
        }
        fields.push(Field::new(OVERFLOW_COLUMN, DataType::Utf8, true));
        arrays.push(Arc::new(b.finish()));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .expect("columns are built to the schema")
}

fn json_of(cell: &Cell) -> Value {
    match cell {
        Cell::Str(s) => Value::String(s.to_string()),
        Cell::Int(i) => Value::from(*i),
        Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cell::Bool(b) => Value::Bool(*b),
        Cell::Time(_) => Value::String(as_text(cell)),
    }
}

fn show(cell: &Cell) -> String {
    let text = match cell {
        Cell::Str(s) => format!("{s:?}"),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Time(t) => DateTime::from_timestamp_micros(*t).map_or(t.to_string(), rfc3339),
    };
    if text.len() > 80 {
        let mut end = 80;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}

fn as_text(cell: &Cell) -> String {
    match cell {
        Cell::Str(s) => s.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Time(t) => DateTime::from_timestamp_micros(*t).map_or(t.to_string(), |d| {
            d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }),
    }
}

fn array(kind: Kind, values: &[Option<&Cell>]) -> ArrayRef {
    match kind {
        Kind::Str => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match v {
                    Some(Cell::Str(s)) => b.append_value(&**s),
                    Some(other) => b.append_value(as_text(other)),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Some(Cell::Int(i)) => Some(*i),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Some(Cell::Int(i)) => Some(*i as f64),
                    Some(Cell::Float(f)) => Some(*f),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for v in values {
                b.append_option(match v {
                    Some(Cell::Bool(x)) => Some(*x),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Time => {
            let mut b =
                TimestampMicrosecondBuilder::with_capacity(values.len()).with_timezone("UTC");
            for v in values {
                b.append_option(match v {
                    Some(Cell::Time(t)) => Some(*t),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
    }
}

/// Rows of a stored batch, as cells (types the loader does not write become text).
fn rows_of(names: &mut Names, batch: &RecordBatch) -> Vec<Row> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let mut rows = vec![Row::default(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let col = names.id(field.name());
        let kind = Kind::of_type(field.data_type());
        let column: ArrayRef = match kind {
            Some(Kind::Int) => cast(column, &DataType::Int64).unwrap_or_else(|_| column.clone()),
            Some(Kind::Float) => {
                cast(column, &DataType::Float64).unwrap_or_else(|_| column.clone())
            }
            Some(Kind::Time) => {
                cast(column, &Kind::Time.data_type()).unwrap_or_else(|_| column.clone())
            }
            Some(Kind::Bool) => column.clone(),
            _ => cast(column, &DataType::Utf8).unwrap_or_else(|_| column.clone()),
        };
        for (i, row) in rows.iter_mut().enumerate() {
            if column.is_null(i) {
                continue;
            }
            let cell = match column.data_type() {
                DataType::Int64 => Cell::Int(column.as_primitive::<Int64Type>().value(i)),
                DataType::Float64 => Cell::Float(column.as_primitive::<Float64Type>().value(i)),
                DataType::Boolean => Cell::Bool(column.as_boolean().value(i)),
                DataType::Timestamp(..) => {
                    Cell::Time(column.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                DataType::Utf8 => Cell::Str(column.as_string::<i32>().value(i).into()),
                _ => continue,
            };
            row.cells.push((col, cell));
        }
    }
    rows
}

fn dead_letter_batch(dead: &[DeadLetter]) -> RecordBatch {
    let letters: Vec<dead_letters::DeadLetter> = dead
        .iter()
        .map(|d| dead_letters::DeadLetter {
            source: d.source.clone(),
            table: d.table.clone(),
            stage: d.stage.to_string(),
            code: d.code.clone(),
            field: d.field.clone(),
            reason: d.reason.clone(),
            message_id: d.message_id.clone(),
            received_at: d
                .received_at
                .as_deref()
                .and_then(parse_time)
                .map(|t| t.timestamp_micros()),
            offset: Some(d.offset as i64),
            payload: d.payload.clone(),
        })
        .collect();
    dead_letters::batch(&letters)
}
