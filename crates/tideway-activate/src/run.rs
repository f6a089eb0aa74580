//! A sync run: diff, build events, transform, deliver, commit what was accepted.
//!
//! The diff (see [`crate::diff`]) streams; rows are taken in chunks (`chunk_rows`), and each
//! chunk is turned into events, transformed, delivered, and committed before the next one is
//! read: its state, log rows and dead letters as one transaction `sync:<name>` (see
//! [`crate::state::commit`]). The state moves only for rows whose every event the destination
//! accepted (or that a transformation dropped); a refused row keeps its last accepted version,
//! so the next run sends its latest values again, until it has been refused
//! `dead_letter_after` runs in a row (or for that long). A crash at any point, then a rerun,
//! re-sends at most the chunk in flight and loses nothing.

use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::datatypes::DataType;
use serde_json::{Map, Value, json};
use tideway_lake::{Lake, TableName};

use crate::config::{Backfill, EventType, Field, Mode, OnDelete, SyncConfig};
use crate::delivery::{Delivery, RetryPolicy};
use crate::destination::{Destination, Op, OutboundEvent, Outcome};
use crate::diff::{self, Bytes, Text, col};
use crate::state::{self, DeadRow, LogRow, RunCounts, SENDING, StateRow};
use crate::transform::{Chain, Limits, Source};
use crate::{ActivateError, Result};

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Classify and transform, deliver nothing, commit nothing (`tideway sync plan`).
    pub dry_run: bool,
    /// Sample payloads kept (after transformation) for the report.
    pub samples: usize,
    /// Rows delivered and committed together.
    pub chunk_rows: usize,
    pub retry: RetryPolicy,
    pub limits: Limits,
    /// The run's start time, which a time-based `dead_letter_after` counts from; `None`: now
    /// (tests set it to move the clock).
    pub started: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            samples: 20,
            chunk_rows: 10_000,
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            started: None,
        }
    }
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunReport {
    pub sync: String,
    pub run: i64,
    pub source: String,
    pub destination: String,
    pub dry_run: bool,
    pub counts: RunCounts,
    /// Events after transformation, for the first rows.
    pub samples: Vec<Value>,
    /// Rows refused or invalid: (key, message), the first few.
    pub problems: Vec<(String, String)>,
    /// Events that go (or would go) to the destination, and the calls that takes.
    pub events: u64,
    pub calls: u64,
    /// At the destination's rate budget, how long the calls take, in seconds.
    pub eta_seconds: Option<f64>,
    pub elapsed_ms: u64,
}

/// What a progress callback sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows: u64,
    pub delivered: u64,
}

/// One changed row, as the diff gave it.
#[derive(Debug, Clone)]
struct DiffRow {
    key: Option<String>,
    hash: Option<Vec<u8>>,
    /// The source row's read columns; `None` when the row is gone.
    values: Option<Map<String, Value>>,
    old_hash: Option<Vec<u8>>,
    old_key: Option<String>,
    old_payload: Option<String>,
    attempts: i64,
    /// When the current streak of `attempts` refusals began (micros).
    refused_since: Option<i64>,
    /// The state row's status: `sending` when a run crashed while delivering this row.
    old_status: Option<String>,
    /// Source rows holding this row's key.
    copies: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Changed,
    Removed,
    /// A never-accepted row that left the source: its pending retry is dropped.
    Forgotten,
    /// A refused row whose source went back to the version the destination holds: its
    /// pending retry is dropped and nothing is sent.
    Reverted,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
            Change::Forgotten => "forgotten",
            Change::Reverted => "reverted",
        }
    }
}

/// A sync ready to run: its config, destination and transformations.
pub struct SyncJob {
    pub config: SyncConfig,
    destination: Arc<dyn Destination>,
    transforms: Chain,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("config", &self.config.name)
            .field("destination", &self.destination.name())
            .finish_non_exhaustive()
    }
}

/// More keys held by several rows than this, and the sync stops: the key is not unique.
const MAX_DUPLICATED_KEYS: usize = 100_000;

/// Everything about the rows of one run that does not change per row.
struct Plan {
    read: Vec<String>,
    fields: Vec<Field>,
    seed: u64,
    run: i64,
    first_run: bool,
    started: chrono::DateTime<chrono::Utc>,
}

impl SyncJob {
    /// `config` sending to `destination`, through the transformations it names (loaded from
    /// `scripts`, the files of `transformations/`).
    pub fn new(
        config: SyncConfig,
        destination: Arc<dyn Destination>,
        scripts: &[Source],
        limits: Limits,
    ) -> Result<SyncJob> {
        let transforms = Chain::load(&config.name, &config.transformations, scripts, limits)?;
        Ok(SyncJob {
            config,
            destination,
            transforms,
        })
    }

    pub fn destination(&self) -> &Arc<dyn Destination> {
        &self.destination
    }

    /// Runs the sync once (or plans it, with `options.dry_run`).
    pub async fn run(
        &self,
        lake: &Lake,
        options: &RunOptions,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<RunReport> {
        let started = options.started.unwrap_or_else(chrono::Utc::now);
        let clock = Instant::now();
        let after_version = match &self.config.schedule {
            crate::schedule::Schedule::After(table) => table_version(lake, table).await?,
            _ => None,
        };
        let plan = self.plan(lake, started).await?;
        if !options.dry_run {
            state::roll_forward(lake, &self.config.name).await?;
        }
        tracing::debug!(
            sync = self.config.name,
            ms = clock.elapsed().as_millis() as u64,
            "run planned"
        );
        let sync = &self.config;
        let mut report = RunReport {
            sync: sync.name.clone(),
            run: plan.run,
            source: sync.source.clone(),
            destination: sync.destination.clone(),
            dry_run: options.dry_run,
            ..Default::default()
        };
        let result = self
            .run_chunks(lake, options, &plan, &mut report, progress)
            .await;
        report.elapsed_ms = clock.elapsed().as_millis() as u64;
        let limits = self.destination.limits();
        report.eta_seconds = limits
            .requests_per_second
            .map(|rps| report.calls as f64 / rps);
        if !options.dry_run {
            let error = result.as_ref().err().map(|e| format!("{e:#}"));
            let batch = state::runs_batch(
                &sync.name,
                plan.run,
                started,
                &report.counts,
                error.as_deref(),
                after_version,
            );
            lake.append(&state::table(state::RUNS), vec![batch]).await?;
            if result.is_ok() {
                state::compact(lake).await;
            }
        }
        result.map(|()| report)
    }

    /// The differ of this sync's next run, started as a run starts it: the rows a run would
    /// act on, for benchmarks and tools, with nothing sent or committed.
    pub async fn differ(&self, lake: &Lake) -> Result<diff::Differ> {
        let plan = self.plan(lake, chrono::Utc::now()).await?;
        self.start_diff(lake, &plan).await
    }

    async fn start_diff(&self, lake: &Lake, plan: &Plan) -> Result<diff::Differ> {
        let sync = &self.config;
        let source: TableName = sync.source.parse()?;
        diff::Differ::start(lake, &sync.name, &source, &sync.key, &plan.read, plan.seed).await
    }

    async fn plan(&self, lake: &Lake, started: chrono::DateTime<chrono::Utc>) -> Result<Plan> {
        let sync = &self.config;
        let source: TableName = sync.source.parse()?;
        let Some(table) = lake.load(&source).await? else {
            return Err(ActivateError::Source {
                sync: sync.name.clone(),
                message: format!(
                    "the source table `{}` does not exist; if it is a model, build it first (`tideway run {}`)",
                    sync.source, sync.source
                ),
            });
        };
        let schema = Lake::schema_of(&source, &table)?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let problems = sync.check_columns(&columns);
        if !problems.is_empty() {
            return Err(tideway_core::config::ConfigErrors(problems).into());
        }
        let mapped = sync.mapped_columns(&columns);
        let fields = sync.fields(&mapped);
        let mut needed: Vec<&String> = mapped.iter().chain(&sync.key).collect();
        needed.extend(
            [
                &sync.user_id,
                &sync.anonymous_id,
                &sync.group_id,
                &sync.time_column,
                &sync.event_column,
            ]
            .into_iter()
            .flatten(),
        );
        let read: Vec<String> = columns
            .iter()
            .filter(|c| needed.contains(c))
            .cloned()
            .collect();
        let fingerprint = json!({
            "type": sync.event.name(),
            "event": match &sync.event { EventType::Track { event } => Some(event), _ => None },
            "fields": fields.iter().map(|f| (&f.column, &f.path)).collect::<Vec<_>>(),
            "constants": &sync.constants,
            "ids": [&sync.user_id, &sync.anonymous_id, &sync.group_id],
        });
        let seed = xxhash_rust::xxh3::xxh3_64(fingerprint.to_string().as_bytes()) >> 1;
        let state_table = state::table(state::STATE);
        let first_run = lake
            .txn_version(&state_table, &state::txn_app(&sync.name))
            .await?
            .is_none();
        let run = match lake.load(&state::table(state::RUNS)).await? {
            None => 1,
            Some(_) => {
                let sql = format!(
                    "SELECT max(run) FROM _tideway.{} WHERE sync = {}",
                    state::RUNS,
                    diff::literal(&sync.name)
                );
                lake.scalar_i64(&sql).await?.unwrap_or(0) + 1
            }
        };
        Ok(Plan {
            read,
            fields,
            seed: seed as u64,
            run,
            first_run,
            started,
        })
    }

    async fn run_chunks(
        &self,
        lake: &Lake,
        options: &RunOptions,
        plan: &Plan,
        report: &mut RunReport,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        let sync = &self.config;
        let mut differ = self.start_diff(lake, plan).await?;
        if differ.duplicated_keys > MAX_DUPLICATED_KEYS {
            return Err(ActivateError::Source {
                sync: sync.name.clone(),
                message: format!(
                    "{} values of the key ({}) are held by several rows: the key is not unique; pick the column(s) that identify a row",
                    differ.duplicated_keys,
                    sync.key.join(", ")
                ),
            });
        }
        let previous = differ.previous();
        let delivery = Delivery::new(self.destination.clone(), options.retry);
        let mut chunk: Vec<DiffRow> = Vec::new();
        let mut seen = Progress::default();
        let mut more = true;
        while more {
            match differ.next().await? {
                Some(batch) => chunk.extend(diff_rows(&batch, &plan.read)?),
                None => more = false,
            }
            if chunk.len() >= options.chunk_rows || (!more && !chunk.is_empty()) {
                let mut rows = std::mem::take(&mut chunk);
                seen.rows += rows.len() as u64;
                self.previous(lake, &previous, &mut rows).await?;
                self.chunk(
                    lake, options, plan, &delivery, rows, report, &mut seen, progress,
                )
                .await?;
                progress(seen);
            }
        }
        Ok(())
    }

    /// Fills in the values the destination last accepted for the rows that need them: for
    /// `metadata.previous` when transformations run, and for removals that send the old values.
    async fn previous(
        &self,
        lake: &Lake,
        reader: &diff::Previous,
        rows: &mut [DiffRow],
    ) -> Result<()> {
        let removal_needs_values = self.config.on_delete != OnDelete::Ignore;
        let keys: Vec<String> = rows
            .iter()
            .filter(|r| !self.transforms.is_empty() || (r.values.is_none() && removal_needs_values))
            .filter_map(|r| r.old_key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut previous = reader.read(lake, &keys).await?;
        for row in rows.iter_mut() {
            if let Some(key) = &row.old_key {
                row.old_payload = previous.remove(key);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn chunk(
        &self,
        lake: &Lake,
        options: &RunOptions,
        plan: &Plan,
        delivery: &Delivery,
        rows: Vec<DiffRow>,
        report: &mut RunReport,
        seen: &mut Progress,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        let sync = &self.config;
        let mut logs: Vec<LogRow> = Vec::new();
        let mut states: Vec<StateRow> = Vec::new();
        let mut dead: Vec<DeadRow> = Vec::new();
        // Rows that produce events: (row index, change, event, metadata).
        let mut outgoing: Vec<(usize, Change, Value, Value)> = Vec::new();
        let counts = &mut report.counts;
        for (i, row) in rows.iter().enumerate() {
            // A row a crashed run was delivering may be at the destination: gone now, it is
            // removed there too.
            let sending = row.old_status.as_deref() == Some(SENDING);
            let change = match (&row.values, &row.old_key, &row.old_hash) {
                (Some(_), _, None) => Change::Added,
                (Some(_), _, Some(old)) if !sending && row.hash.as_ref() == Some(old) => {
                    Change::Reverted
                }
                (Some(_), _, Some(_)) => Change::Changed,
                (None, Some(_), Some(_)) => Change::Removed,
                (None, Some(_), None) if sending => Change::Removed,
                (None, Some(_), None) => Change::Forgotten,
                (None, None, _) => continue,
            };
            if let (Some(_), None) = (&row.values, &row.key) {
                counts.invalid += 1;
                let message = if sync.key.len() == 1 {
                    format!("the key `{}` is null", sync.key[0])
                } else {
                    format!("the key ({}) has a null part", sync.key.join(", "))
                };
                push_problem(&mut report.problems, "(null)", &message);
                logs.push(log(None, "invalid", "invalid", Some(message), 0, 0, None));
                continue;
            }
            let key = row
                .key
                .clone()
                .or_else(|| row.old_key.clone())
                .unwrap_or_default();
            if row.values.is_some() && row.copies > 1 {
                let n = row.copies;
                counts.invalid += 1;
                let message = format!(
                    "duplicate key `{}`: {n} rows have it; none of them is sent",
                    diff::display_key(&key)
                );
                push_problem(&mut report.problems, &key, &message);
                logs.push(log(
                    Some(&key),
                    "invalid",
                    "invalid",
                    Some(message),
                    0,
                    0,
                    None,
                ));
                continue;
            }
            let count = |counts: &mut RunCounts| match change {
                Change::Added => counts.added += 1,
                Change::Changed => counts.changed += 1,
                Change::Removed => counts.removed += 1,
                Change::Forgotten => counts.forgotten += 1,
                Change::Reverted => counts.reverted += 1,
            };
            if change == Change::Forgotten {
                count(counts);
                states.push(StateRow {
                    key: key.clone(),
                    hash: None,
                    payload: None,
                    dead_hash: None,
                    status: "forgotten",
                    attempts: 0,
                    refused_since: None,
                    message: None,
                    delete: true,
                });
                continue;
            }
            if change == Change::Reverted {
                count(counts);
                states.push(accepted(&key, row));
                logs.push(log(
                    Some(&key),
                    change.label(),
                    "skipped",
                    Some("the source is back at the version the destination holds".into()),
                    0,
                    0,
                    None,
                ));
                continue;
            }
            if change == Change::Added && plan.first_run && self.skipped_by_backfill(row) {
                count(counts);
                counts.skipped += 1;
                states.push(accepted(&key, row));
                logs.push(log(Some(&key), "added", "skipped", None, 0, 0, None));
                continue;
            }
            if change == Change::Changed && sync.mode == Mode::Insert && !sending {
                count(counts);
                counts.skipped += 1;
                states.push(accepted(&key, row));
                logs.push(log(
                    Some(&key),
                    change.label(),
                    "skipped",
                    Some("`mode = \"insert\"` creates records for new rows only".into()),
                    0,
                    0,
                    None,
                ));
                continue;
            }
            match self.event(plan, &key, change, row) {
                Ok(Some(event)) => {
                    count(counts);
                    let metadata = self.metadata(plan, &key, change, row, &event);
                    outgoing.push((i, change, event, metadata));
                }
                Ok(None) => {
                    // on_delete = ignore: forget the row, send nothing.
                    count(counts);
                    counts.skipped += 1;
                    states.push(StateRow {
                        delete: true,
                        ..accepted(&key, row)
                    });
                    logs.push(log(Some(&key), change.label(), "skipped", None, 0, 0, None));
                }
                Err(message) => {
                    counts.invalid += 1;
                    push_problem(&mut report.problems, &key, &message);
                    logs.push(log(
                        Some(&key),
                        change.label(),
                        "invalid",
                        Some(message),
                        0,
                        0,
                        None,
                    ));
                }
            }
        }
        // Transformations, off the async threads.
        let inputs: Vec<(Value, Value)> = outgoing
            .iter()
            .map(|(_, _, e, m)| (e.clone(), m.clone()))
            .collect();
        let transformed = self.transforms.run(inputs).await?;
        // One entry per outgoing row: its events, or why the transformation failed.
        let mut events: Vec<OutboundEvent> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        let mut row_error: Vec<Option<String>> = vec![None; outgoing.len()];
        for (n, ((i, change, _, _), result)) in outgoing.iter().zip(transformed).enumerate() {
            let key = rows[*i]
                .key
                .clone()
                .or_else(|| rows[*i].old_key.clone())
                .unwrap_or_default();
            match result {
                Ok(out) => {
                    for e in out {
                        if report.samples.len() < options.samples {
                            report.samples.push(e.clone());
                        }
                        events.push(OutboundEvent {
                            origin: key.clone(),
                            op: self.op(*change, &rows[*i]),
                            event: e,
                        });
                        owner.push(n);
                    }
                }
                Err(message) => row_error[n] = Some(message),
            }
        }
        report.events += events.len() as u64;
        let limits = self.destination.limits();
        report.calls += events.len().div_ceil(limits.max_events.max(1)) as u64;
        if options.dry_run {
            return Ok(());
        }
        // Write ahead: the rows about to go out are marked `sending` (their accepted version
        // kept), so that after a crash mid-delivery the next run sends them again, or removes
        // them if they left the source, even when they were never accepted. Removals too: a
        // crash after the destination took a delete, then the row coming back as it was,
        // must send the row again rather than find it "unchanged".
        let intents: Vec<StateRow> = outgoing
            .iter()
            .map(|(i, _, _, _)| {
                let row = &rows[*i];
                StateRow {
                    key: row
                        .key
                        .clone()
                        .or_else(|| row.old_key.clone())
                        .unwrap_or_default(),
                    hash: row.old_hash.clone(),
                    // The version the destination may hold: the accepted one (kept as it is
                    // in the state: null means unchanged), or, never accepted, this one.
                    payload: match row.old_hash {
                        Some(_) => None,
                        None => row
                            .values
                            .as_ref()
                            .map(|v| Value::Object(v.clone()).to_string()),
                    },
                    dead_hash: None,
                    status: SENDING,
                    attempts: row.attempts,
                    refused_since: row.refused_since,
                    message: None,
                    delete: false,
                }
            })
            .collect();
        let fresh = outgoing.iter().all(|(i, ..)| rows[*i].old_key.is_none());
        self.commit(lake, plan, Vec::new(), intents, Vec::new(), fresh)
            .await?;
        let base = seen.delivered;
        let delivered_so_far = std::sync::atomic::AtomicU64::new(0);
        let outcomes = delivery
            .deliver(&events, &|n| {
                let d = delivered_so_far.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed)
                    + n as u64;
                progress(Progress {
                    rows: seen.rows,
                    delivered: base + d,
                });
            })
            .await;
        seen.delivered = base + events.len() as u64;
        // Fold event outcomes per row: refused beats failed beats delivered.
        let mut per_row: Vec<(Option<Outcome>, u32, u64, Option<String>)> =
            vec![(None, 0, 0, None); outgoing.len()];
        for ((n, d), e) in owner.iter().zip(outcomes).zip(&events) {
            let slot = &mut per_row[*n];
            slot.1 = slot.1.max(d.attempts);
            slot.2 = slot.2.max(d.latency.as_millis() as u64);
            slot.3 = e
                .event
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string);
            let rank = |o: &Option<Outcome>| match o {
                Some(Outcome::Rejected(_)) => 3,
                Some(Outcome::Retry { .. }) => 2,
                Some(Outcome::Delivered) => 1,
                None => 0,
            };
            let new = Some(d.outcome);
            if rank(&new) > rank(&slot.0) {
                slot.0 = new;
            }
        }
        for (n, (i, change, event, _)) in outgoing.iter().enumerate() {
            let row = &rows[*i];
            let key = row
                .key
                .clone()
                .or_else(|| row.old_key.clone())
                .unwrap_or_default();
            let (outcome, attempts, latency, message_id) = per_row[n].clone();
            let message_id = message_id.or_else(|| {
                event
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let refusal = match (&row_error[n], outcome) {
                (Some(message), _) => Some(("transform".to_string(), message.clone())),
                (None, Some(Outcome::Rejected(e))) => Some((
                    e.status.map_or("refused".into(), |s| s.to_string()),
                    e.message,
                )),
                (None, Some(Outcome::Retry { error, .. })) => {
                    report.counts.failed += 1;
                    push_problem(&mut report.problems, &key, &error.message);
                    logs.push(log(
                        Some(&key),
                        change.label(),
                        "failed",
                        Some(error.message),
                        attempts as i64,
                        latency as i64,
                        message_id,
                    ));
                    continue;
                }
                (None, outcome) => {
                    let status = if outcome.is_none() {
                        "filtered"
                    } else {
                        "delivered"
                    };
                    if outcome.is_none() {
                        report.counts.filtered += 1;
                    } else {
                        report.counts.delivered += 1;
                    }
                    let mut st = accepted(&key, row);
                    st.delete = *change == Change::Removed;
                    states.push(st);
                    logs.push(log(
                        Some(&key),
                        change.label(),
                        status,
                        None,
                        attempts as i64,
                        latency as i64,
                        message_id,
                    ));
                    continue;
                }
            };
            let (code, message) = refusal.expect("the other cases continue");
            push_problem(&mut report.problems, &key, &message);
            let tries = row.attempts + 1;
            let now = plan.started.timestamp_micros();
            let since = row.refused_since.unwrap_or(now);
            let is_dead = sync.dead_letter_after.is_dead(tries, since, now);
            // A row a crashed run was delivering may be at the destination in a version the
            // state does not know: it stays `sending` until a delivery of it is accepted, so
            // that its removal, or its return to the accepted version, is still sent.
            let was_sending = row.old_status.as_deref() == Some(SENDING);
            let mut st = StateRow {
                key: key.clone(),
                hash: row.old_hash.clone(),
                // Null: the accepted version's values stay as the state holds them.
                payload: None,
                dead_hash: None,
                status: if was_sending { SENDING } else { "rejected" },
                attempts: tries,
                refused_since: Some(since),
                message: Some(message.clone()),
                delete: false,
            };
            if is_dead {
                report.counts.dead += 1;
                st.status = "dead";
                st.dead_hash = row.hash.clone();
                st.delete = *change == Change::Removed;
                dead.push(DeadRow {
                    key: key.clone(),
                    code,
                    reason: format!(
                        "refused {tries} runs in a row since {}; last: {message}",
                        chrono::DateTime::from_timestamp_micros(since)
                            .unwrap_or_default()
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    message_id: message_id.clone(),
                    payload: event.to_string(),
                });
            } else {
                report.counts.rejected += 1;
            }
            states.push(st);
            logs.push(log(
                Some(&key),
                change.label(),
                if is_dead { "dead" } else { "rejected" },
                Some(message),
                attempts as i64,
                latency as i64,
                message_id,
            ));
        }
        // Nothing was written ahead and no key is in the state yet (a first run that records
        // what exists, `backfill = "skip_existing"`): the new states are appended.
        let fresh = outgoing.is_empty() && rows.iter().all(|r| r.old_key.is_none());
        self.commit(lake, plan, logs, states, dead, fresh).await
    }

    /// What the destination is asked to do with the events of a row.
    fn op(&self, change: Change, row: &DiffRow) -> Op {
        let sync = &self.config;
        match (change, &sync.on_delete, sync.mode) {
            (Change::Removed, OnDelete::Delete, _) => Op::Delete,
            (Change::Removed, OnDelete::Event(_), _) => Op::Upsert,
            (_, _, Mode::Update) => Op::Update,
            // Blanking the fields of an inserted record never creates one.
            (Change::Removed, OnDelete::ClearFields, Mode::Insert) => Op::Update,
            // A row a crashed run was inserting may be there already: it is upserted.
            (Change::Added, _, Mode::Insert) if row.old_status.as_deref() != Some(SENDING) => {
                Op::Insert
            }
            _ => Op::Upsert,
        }
    }

    fn skipped_by_backfill(&self, row: &DiffRow) -> bool {
        match &self.config.backfill {
            Backfill::All => false,
            Backfill::SkipExisting => true,
            Backfill::Since(t) => {
                let column = self.config.time_column.as_deref().unwrap_or_default();
                let at = row
                    .values
                    .as_ref()
                    .and_then(|v| v.get(column))
                    .and_then(Value::as_str)
                    .and_then(tideway_core::time::parse_instant);
                at.is_none_or(|at| at < *t)
            }
        }
    }

    async fn commit(
        &self,
        lake: &Lake,
        plan: &Plan,
        logs: Vec<LogRow>,
        states: Vec<StateRow>,
        dead: Vec<DeadRow>,
        fresh: bool,
    ) -> Result<()> {
        let sync = &self.config;
        state::commit(
            lake,
            &sync.name,
            plan.run,
            &states,
            &logs,
            (&dead, &sync.source),
            fresh,
        )
        .await
    }

    /// The event a changed row becomes; `Ok(None)` when nothing is sent (`on_delete =
    /// "ignore"`); `Err` names what makes the row unsendable.
    fn event(
        &self,
        plan: &Plan,
        key: &str,
        change: Change,
        row: &DiffRow,
    ) -> std::result::Result<Option<Value>, String> {
        let sync = &self.config;
        let previous: Option<Map<String, Value>> = row
            .old_payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok());
        let (values, kind) = match change {
            Change::Removed => match &sync.on_delete {
                OnDelete::Ignore => return Ok(None),
                OnDelete::Delete | OnDelete::ClearFields => {
                    (previous.clone().unwrap_or_default(), sync.event.clone())
                }
                OnDelete::Event(name) => (
                    previous.clone().unwrap_or_default(),
                    EventType::Track {
                        event: name.clone(),
                    },
                ),
            },
            _ => (row.values.clone().unwrap_or_default(), sync.event.clone()),
        };
        let id = |column: &Option<String>| -> Option<Value> {
            match column {
                Some(c) => values.get(c).filter(|v| !v.is_null()).cloned(),
                None => Some(Value::String(diff::display_key(key))),
            }
        };
        let mut event = Map::new();
        event.insert("type".into(), kind.name().into());
        if let EventType::Track { event: name } = &kind {
            // An event table names each row's event in a column (a removal sent as an event
            // keeps the name `on_delete` gives it).
            let name = match (&sync.event_column, change) {
                (Some(column), c) if c != Change::Removed => match values.get(column) {
                    Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
                    Some(Value::Null) | None => {
                        return Err(format!("`{column}` is null: a track event needs a name"));
                    }
                    Some(Value::String(_)) => {
                        return Err(format!("`{column}` is empty: a track event needs a name"));
                    }
                    Some(other) => other.to_string(),
                },
                _ => name.clone(),
            };
            event.insert("event".into(), name.into());
        }
        match &kind {
            EventType::Group => {
                let group = id(&sync.group_id).ok_or_else(|| {
                    format!(
                        "`{}` is null: a group call needs a groupId",
                        sync.group_id.as_deref().unwrap_or("key")
                    )
                })?;
                event.insert("groupId".into(), group);
                if let Some(u) = sync
                    .user_id
                    .as_ref()
                    .and_then(|c| values.get(c))
                    .filter(|v| !v.is_null())
                {
                    event.insert("userId".into(), u.clone());
                }
            }
            _ => {
                let user = id(&sync.user_id);
                let anonymous = sync
                    .anonymous_id
                    .as_ref()
                    .and_then(|c| values.get(c))
                    .filter(|v| !v.is_null())
                    .cloned();
                if user.is_none() && anonymous.is_none() {
                    return Err(format!(
                        "`{}` is null and there is no anonymous id: {} {} call needs a userId or an anonymousId",
                        sync.user_id.as_deref().unwrap_or("key"),
                        if kind.name() == "identify" { "an" } else { "a" },
                        kind.name()
                    ));
                }
                if let Some(u) = user {
                    event.insert("userId".into(), u);
                }
                if let Some(a) = anonymous {
                    event.insert("anonymousId".into(), a);
                }
            }
        }
        let mut event = Value::Object(event);
        let payload = kind.payload_field();
        event[payload] = json!({});
        for f in &plan.fields {
            let mut v = values.get(&f.column).cloned().unwrap_or(Value::Null);
            if change == Change::Removed
                && sync.on_delete == OnDelete::ClearFields
                && !sync.key.contains(&f.column)
            {
                v = Value::Null;
            }
            let mut path = f.path.clone();
            if matches!(&sync.on_delete, OnDelete::Event(_))
                && change == Change::Removed
                && path[0] == "traits"
            {
                path[0] = "properties".into();
            }
            set_path(&mut event, &path, v);
        }
        if change != Change::Removed {
            for (k, v) in &sync.constants {
                let mut path: Vec<String> = k.split('.').map(str::to_string).collect();
                if !(["traits", "properties", "context"].contains(&path[0].as_str())
                    && path.len() > 1)
                {
                    path.insert(0, payload.to_string());
                }
                set_path(&mut event, &path, v.clone());
            }
        }
        let digest = match change {
            Change::Removed => format!(
                "removed:{}",
                hex::encode(row.old_hash.as_deref().unwrap_or_default())
            ),
            _ => hex::encode(row.hash.as_deref().unwrap_or_default()),
        };
        let message_id = format!(
            "tw-{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{}\u{0}{key}\u{0}{digest}", sync.name).as_bytes())
        );
        // A track event happened at its row's time (an event table's own timestamp); other
        // calls, and rows without a time, are stamped with the run's start.
        let row_time = match (&kind, &sync.time_column, change) {
            (EventType::Track { .. }, Some(column), c) if c != Change::Removed => values
                .get(column)
                .and_then(Value::as_str)
                .and_then(tideway_core::time::parse_instant),
            _ => None,
        };
        let at = row_time
            .unwrap_or(plan.started)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        event["messageId"] = message_id.into();
        event["timestamp"] = at.clone().into();
        event["originalTimestamp"] = at.into();
        event["context"]["library"] =
            json!({"name": "tideway", "version": env!("CARGO_PKG_VERSION")});
        event["context"]["sources"] = json!({
            "job_id": plan.run.to_string(),
            "sync": sync.name,
            "table": sync.source,
            "op": change.label(),
        });
        Ok(Some(event))
    }

    /// RudderStack's transformation metadata, plus `op`, `key` and `previous` (the values last
    /// accepted by the destination, or null).
    fn metadata(
        &self,
        plan: &Plan,
        key: &str,
        change: Change,
        row: &DiffRow,
        event: &Value,
    ) -> Value {
        let previous: Value = row
            .old_payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        json!({
            "sourceId": self.config.name,
            "sourceName": self.config.name,
            "sourceType": "tideway-sync",
            "sourceCategory": "warehouse",
            "destinationId": self.config.destination,
            "destinationName": self.config.destination,
            "destinationType": self.destination.kind(),
            "messageId": event.get("messageId").cloned().unwrap_or(Value::Null),
            "jobId": plan.run,
            "op": change.label(),
            "key": diff::display_key(key),
            "previous": previous,
        })
    }
}

fn push_problem(problems: &mut Vec<(String, String)>, key: &str, message: &str) {
    if problems.len() < 20 {
        problems.push((diff::display_key(key), message.to_string()));
    }
}

fn log(
    key: Option<&str>,
    op: &'static str,
    status: &'static str,
    message: Option<String>,
    attempts: i64,
    latency_ms: i64,
    message_id: Option<String>,
) -> LogRow {
    LogRow {
        key: key.map(str::to_string),
        op,
        status,
        message,
        attempts,
        latency_ms,
        message_id,
    }
}

/// The state of a row the destination now holds in its current version.
fn accepted(key: &str, row: &DiffRow) -> StateRow {
    StateRow {
        key: key.to_string(),
        hash: row.hash.clone(),
        payload: row
            .values
            .as_ref()
            .map(|v| Value::Object(v.clone()).to_string()),
        dead_hash: None,
        status: "accepted",
        attempts: 0,
        refused_since: None,
        message: None,
        delete: false,
    }
}

/// Sets `value` at `path` in `target`, creating objects on the way.
pub fn set_path(target: &mut Value, path: &[String], value: Value) {
    let mut node = target;
    for (i, part) in path.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let map = node.as_object_mut().expect("made an object above");
        if i + 1 == path.len() {
            map.insert(part.clone(), value);
            return;
        }
        node = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The column `name` of the diff's `batch`.
fn diff_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ActivateError::Internal(format!("the diff lacks the column `{name}`")))
}

/// The diff's rows: key, hashes, old state, and the source columns as JSON objects.
fn diff_rows(batch: &RecordBatch, read: &[String]) -> Result<Vec<DiffRow>> {
    let text = |name| diff_column(batch, name).and_then(Text::of);
    let bytes = |name| diff_column(batch, name).and_then(Bytes::of);
    let (keys, old_keys) = (text(col::KEY)?, text(col::OLD_KEY)?);
    let (hashes, old_hashes) = (bytes(col::HASH)?, bytes(col::OLD_HASH)?);
    let (old_payloads, old_statuses) = (text(col::OLD_PAYLOAD)?, text(col::OLD_STATUS)?);
    let int64 = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| deltalake::arrow::compute::cast(c, &DataType::Int64))
            .transpose()
            .map_err(|e| ActivateError::Internal(format!("{name}: {e}")))
    };
    let attempts = int64(col::ATTEMPTS)?;
    let refused_since = int64(col::REFUSED_SINCE)?;
    let copies = int64(col::COPIES)?;
    let value = |column: &Option<ArrayRef>, i: usize, default: i64| {
        column.as_ref().map_or(default, |a| {
            a.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                .value(i)
        })
    };
    let owned = |text: &Text, i| text.get(i).map(str::to_string);
    let values = json_rows(batch, read)?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, values)| {
            let hash = hashes.get(i).map(<[u8]>::to_vec);
            DiffRow {
                key: owned(&keys, i),
                values: hash.is_some().then_some(values),
                hash,
                old_hash: old_hashes.get(i).map(<[u8]>::to_vec),
                old_key: owned(&old_keys, i),
                old_payload: owned(&old_payloads, i),
                old_status: owned(&old_statuses, i),
                attempts: value(&attempts, i, 0),
                refused_since: refused_since.as_ref().and_then(|a| {
                    let a = a.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
                    a.is_valid(i).then(|| a.value(i))
                }),
                copies: value(&copies, i, 1),
            }
        })
        .collect())
}

/// The `read` columns of `batch`, one JSON object per row (nulls kept as null).
fn json_rows(batch: &RecordBatch, read: &[String]) -> Result<Vec<Map<String, Value>>> {
    let indices: Vec<usize> = read
        .iter()
        .map(|c| {
            batch.schema().index_of(c).map_err(|_| {
                ActivateError::Internal(format!("the diff lacks the source column `{c}`"))
            })
        })
        .collect::<Result<_>>()?;
    let projected = batch
        .project(&indices)
        .map_err(|e| ActivateError::Internal(e.to_string()))?;
    // View types are written by the JSON writer as well, but dictionary and view columns are
    // cast to their plain forms first so every type reads the same.
    let projected = plain_types(&projected)?;
    let mut buf = Vec::with_capacity(projected.num_rows() * 64);
    {
        let mut writer = deltalake::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, deltalake::arrow::json::writer::JsonArray>(&mut buf);
        writer
            .write(&projected)
            .map_err(|e| ActivateError::Internal(format!("rows to JSON: {e}")))?;
        writer
            .finish()
            .map_err(|e| ActivateError::Internal(format!("rows to JSON: {e}")))?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| ActivateError::Internal(format!("rows to JSON: {e}")))
}

fn plain_types(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let target = match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
            DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
            DataType::Dictionary(_, v) => Some(v.as_ref().clone()),
            _ => None,
        };
        match target {
            Some(t) => {
                columns.push(
                    deltalake::arrow::compute::cast(c, &t)
                        .map_err(|e| ActivateError::Internal(e.to_string()))?,
                );
                fields.push(f.as_ref().clone().with_data_type(t));
            }
            None => {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(
        Arc::new(deltalake::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .map_err(|e| ActivateError::Internal(e.to_string()))
}

/// The Delta version of `table`, if it exists.
pub async fn table_version(lake: &Lake, table: &str) -> Result<Option<i64>> {
    let name: TableName = table.parse()?;
    Ok(match lake.load(&name).await? {
        Some(t) => t.version().map(|v| v as i64),
        None => None,
    })
}

/// Marks the dead-lettered rows of `sync` for sending again on its next run; how many.
pub async fn replay(lake: &Lake, sync: &str) -> Result<u64> {
    if lake.load(&state::table(state::STATE)).await?.is_none() {
        return Ok(0);
    }
    let filter = format!("sync = {} AND status = 'dead'", diff::literal(sync));
    let n = lake
        .scalar_i64(&format!(
            "SELECT count(*) FROM _tideway.sync_state WHERE {filter}"
        ))
        .await?
        .unwrap_or(0);
    if n > 0 {
        // A replayed row starts a new streak of refusals (a state written before
        // `refused_since` existed has no such column).
        let has_since = lake
            .schema(&state::table(state::STATE))
            .await?
            .column_with_name(state::REFUSED_SINCE)
            .is_some();
        let since = if has_since {
            format!(", {} = NULL", state::REFUSED_SINCE)
        } else {
            String::new()
        };
        lake.execute(&format!(
            "UPDATE _tideway.sync_state SET dead_hash = NULL, attempts = 0{since}, status = 'rejected' WHERE {filter}"
        ))
        .await?;
    }
    Ok(n as u64)
}
