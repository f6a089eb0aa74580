//! What syncs keep in the lake, under `_tideway`:
//!
//! - `sync_state`: one row per (sync, key) the destination holds or that is waiting for a
//!   retry: `hash` and `payload` of the version the destination last accepted (NULL if never),
//!   `status` (`accepted`, `rejected`, `dead`, or `sending` while a chunk is being delivered:
//!   written ahead, so a crash mid-delivery makes the next run send or remove the row again
//!   even if it was never accepted; a refusal keeps it, as the destination may still hold what
//!   the crashed run sent, until a delivery is accepted), `attempts` (refusals since the last
//!   acceptance), `refused_since` (when the first of them happened), `dead_hash` (the version
//!   dead-lettered: not retried until it changes), the last `run` and `message`. Merged by (sync, key) under the Delta transaction
//!   `sync:<name>`, so the state moves exactly once per committed chunk.
//! - `sync_log`: one row per row acted on per run: `op` (added, changed, removed, invalid),
//!   `status` (delivered, filtered, skipped, rejected, failed, dead, invalid), the destination's
//!   `message`, `attempts`, `latency_ms`, `message_id`. A chunk's log rows (and dead letters)
//!   commit with its state, as one transaction ([`commit`]): they are staged as data files
//!   first, the state commit names them, and they are added to their tables under the same
//!   transaction version right after. A crash before the state commit leaves neither (the
//!   rerun sends and logs the rows again); a crash after it leaves the state's commit naming
//!   files not yet added, which the next run of the sync adds first ([`roll_forward`]).
//! - `sync_runs`: one row per run with its counts.
//! - `dead_letters` (shared with the collector): rows refused `dead_letter_after` runs in a
//!   row (or for `dead_letter_after` days, hours...), with the event and the destination's
//!   last message; `tideway sync replay` resends.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::json;
use tideway_lake::dead_letters::{self, DeadLetter};
use tideway_lake::{Lake, SYSTEM_SCHEMA, TableName, Txn};

use crate::{ActivateError, Result};

pub const STATE: &str = "sync_state";
pub const LOG: &str = "sync_log";
pub const RUNS: &str = "sync_runs";
pub use tideway_lake::dead_letters::DEAD_LETTERS;

/// The column of `sync_state` saying when a key's current streak of refusals began.
pub const REFUSED_SINCE: &str = "refused_since";

/// The status of a state row whose delivery a run had started (see the module docs).
pub const SENDING: &str = "sending";

/// `_tideway.<table>`.
pub fn table(name: &str) -> TableName {
    TableName::new(SYSTEM_SCHEMA, name).expect("system table names are valid")
}

/// The Delta transaction id of a sync's state commits.
pub fn txn_app(sync: &str) -> String {
    format!("sync:{sync}")
}

/// The `commitInfo` key of a sync's state commits: `{"sync", "run", "txn", "staged"}`, where
/// `staged` lists the log and dead-letter files that belong to the commit.
pub const COMMIT_KEY: &str = "tideway.sync";

/// Commits one chunk of a run: `states` merged into `sync_state` (appended when `fresh`: no
/// key of the sync is there yet), and with them, in the same transaction, `logs` into
/// `sync_log` and `dead` into `dead_letters` (see the module docs). Without state rows the
/// log and dead letters are appended on their own.
pub async fn commit(
    lake: &Lake,
    sync: &str,
    run: i64,
    states: &[StateRow],
    logs: &[LogRow],
    (dead, source): (&[DeadRow], &str),
    fresh: bool,
) -> Result<()> {
    let dead = (!dead.is_empty()).then(|| dead_batch(&format!("sync:{sync}"), source, dead));
    let log = (!logs.is_empty()).then(|| log_batch(sync, run, logs));
    let with_state = [(DEAD_LETTERS, dead), (LOG, log)]
        .into_iter()
        .filter_map(|(t, batch)| batch.map(|b| (table(t), b)));
    if states.is_empty() {
        for (name, batch) in with_state {
            lake.append(&name, vec![batch]).await?;
        }
        return Ok(());
    }
    let mut staged = Vec::new();
    for (name, batch) in with_state {
        staged.push(lake.stage(&name, vec![batch]).await?);
    }
    let name = table(STATE);
    let app = txn_app(sync);
    let version = lake.txn_version(&name, &app).await?.unwrap_or(0) + 1;
    let batch = state_batch(sync, run, states);
    let write = if fresh {
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != DELETE)
            .collect();
        let batch = batch
            .project(&keep)
            .map_err(|e| ActivateError::Internal(e.to_string()))?;
        lake.append(&name, vec![batch])
    } else {
        lake.merge(&name, vec![batch], &["sync", "key"])
            .with_delete_column(DELETE)
            .with_kept_when_null("payload")
    };
    let mut meta = serde_json::Map::new();
    meta.insert("sync".into(), json!(sync));
    meta.insert("run".into(), json!(run));
    meta.insert("txn".into(), json!(version));
    lake.commit_with_staged(write, Txn::new(app, version), COMMIT_KEY, meta, staged)
        .await?;
    Ok(())
}

/// Finishes the last chunk of `sync` that a crash cut between its state commit and the
/// commits of its log and dead letters (see the module docs); returns the rows it added. A
/// run calls it before its first commit, so only the sync's newest state commit can be
/// unfinished.
pub async fn roll_forward(lake: &Lake, sync: &str) -> Result<u64> {
    let ours = |m: &serde_json::Value| m["sync"] == sync;
    let finished = lake
        .roll_forward_staged(&table(STATE), &txn_app(sync), COMMIT_KEY, ours)
        .await?;
    Ok(finished.map_or(0, |(_, rows)| rows))
}

/// Data files of `sync_state` past which a run compacts it. Every chunk a run commits adds a
/// file; a diff reads the whole table, and a thousand small files read several times slower
/// than a few large ones.
pub const STATE_FILES_BEFORE_COMPACTION: u64 = 64;

/// Compacts `sync_state` when it has grown fragmented. Another sync's commit at the same time
/// can make the compaction conflict: it is then left for a later run (the state is correct
/// either way), with a warning.
pub async fn compact(lake: &Lake) {
    let name = table(STATE);
    let files = match lake.info(&name).await {
        Ok(info) => info.files,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the sync state's file count");
            return;
        }
    };
    tracing::debug!(files, "sync state data files");
    if files <= STATE_FILES_BEFORE_COMPACTION {
        return;
    }
    match lake.optimize(&name, None).await {
        Ok(report) => tracing::info!(
            files_removed = report.files_removed,
            files_added = report.files_added,
            "compacted the sync state"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "compacting the sync state failed; a later run retries")
        }
    }
}

/// A row's new state, one per row acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub key: String,
    pub hash: Option<Vec<u8>>,
    pub payload: Option<String>,
    pub dead_hash: Option<Vec<u8>>,
    pub status: &'static str,
    pub attempts: i64,
    /// When the first of `attempts` refusals happened (micros since the epoch).
    pub refused_since: Option<i64>,
    pub message: Option<String>,
    /// Delete the state row (accepted removal, or a pending row whose source row is gone).
    pub delete: bool,
}

/// One line of the sync log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub key: Option<String>,
    pub op: &'static str,
    pub status: &'static str,
    pub message: Option<String>,
    pub attempts: i64,
    pub latency_ms: i64,
    pub message_id: Option<String>,
}

/// The column marking state rows to delete (not stored).
pub const DELETE: &str = "__delete";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub fn state_batch(sync: &str, run: i64, rows: &[StateRow]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("sync", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("hash", DataType::Binary, true),
        Field::new("payload", DataType::Utf8, true),
        Field::new("dead_hash", DataType::Binary, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("attempts", DataType::Int64, false),
        Field::new("run", DataType::Int64, false),
        Field::new("updated_at", ts(), false),
        Field::new("message", DataType::Utf8, true),
        Field::new(REFUSED_SINCE, ts(), true),
        Field::new(DELETE, DataType::Boolean, false),
    ]);
    let binary = |f: &dyn Fn(&StateRow) -> Option<&Vec<u8>>| {
        let mut b = BinaryBuilder::new();
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let now = now_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![sync; rows.len()])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.key))),
        binary(&|r| r.hash.as_ref()),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.payload.as_deref()),
        )),
        binary(&|r| r.dead_hash.as_ref()),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.attempts),
        )),
        Arc::new(Int64Array::from(vec![run; rows.len()])),
        Arc::new(TimestampMicrosecondArray::from(vec![now; rows.len()]).with_timezone("UTC")),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.message.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.refused_since))
                .with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.delete)))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("state columns match their schema")
}

pub fn log_batch(sync: &str, run: i64, rows: &[LogRow]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("sync", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("op", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("attempts", DataType::Int64, false),
        Field::new("latency_ms", DataType::Int64, false),
        Field::new("message_id", DataType::Utf8, true),
        Field::new("at", ts(), false),
    ]);
    let now = now_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![sync; rows.len()])),
        Arc::new(Int64Array::from(vec![run; rows.len()])),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.key.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.op))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.message.as_deref()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.attempts),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.latency_ms),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.message_id.as_deref()),
        )),
        Arc::new(TimestampMicrosecondArray::from(vec![now; rows.len()]).with_timezone("UTC")),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("log columns match their schema")
}

/// A dead-lettered row or event, in the collector's `dead_letters` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRow {
    pub key: String,
    pub code: String,
    pub reason: String,
    pub message_id: Option<String>,
    pub payload: String,
}

/// `origin` is who gave up on the rows (`sync:<name>`, `forward:<connection>`), `table` what
/// they came from (a sync's source table, a connection's collect source).
pub fn dead_batch(origin: &str, table: &str, rows: &[DeadRow]) -> RecordBatch {
    let letters: Vec<DeadLetter> = rows
        .iter()
        .map(|r| DeadLetter {
            source: origin.to_string(),
            table: Some(table.to_string()),
            stage: "deliver".into(),
            code: r.code.clone(),
            field: Some(r.key.clone()),
            reason: r.reason.clone(),
            message_id: r.message_id.clone(),
            payload: r.payload.clone(),
            ..Default::default()
        })
        .collect();
    dead_letters::batch(&letters)
}

/// One row of `sync_runs`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunCounts {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub invalid: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub skipped: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dead: u64,
    pub forgotten: u64,
    /// Refused rows whose source went back to the version the destination holds.
    pub reverted: u64,
}

pub fn runs_batch(
    sync: &str,
    run: i64,
    started: chrono::DateTime<chrono::Utc>,
    counts: &RunCounts,
    error: Option<&str>,
    after_version: Option<i64>,
) -> RecordBatch {
    let c = counts;
    let mut fields = vec![
        Field::new("sync", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("started_at", ts(), false),
        Field::new("finished_at", ts(), false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![sync])),
        Arc::new(Int64Array::from(vec![run])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![started.timestamp_micros()]).with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![now_micros()]).with_timezone("UTC")),
    ];
    for (name, v) in [
        ("added", c.added),
        ("changed", c.changed),
        ("removed", c.removed),
        ("invalid", c.invalid),
        ("delivered", c.delivered),
        ("filtered", c.filtered),
        ("skipped", c.skipped),
        ("rejected", c.rejected),
        ("failed", c.failed),
        ("dead", c.dead),
    ] {
        fields.push(Field::new(name, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(vec![v as i64])));
    }
    fields.push(Field::new("error", DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from(vec![error])));
    fields.push(Field::new("after_version", DataType::Int64, true));
    columns.push(Arc::new(Int64Array::from(vec![after_version])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("run columns match their schema")
}
