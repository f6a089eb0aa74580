//! A unify run: read the identifier columns of every source table written since the last run,
//! apply them to the identity graph, and write the graph's tables to the lake.
//!
//! A run is planned before it starts: the plan (run number, each source's version range) is
//! committed to `_tideway.unify_runs`, then every output is written under the Delta
//! transaction `unify` at the run's number, then the run is marked done with the versions of
//! the state tables it produced. A crash anywhere leaves the last done run intact; the next
//! start replays the unfinished plan from that state, which gives the same tables as an
//! uninterrupted run (history appends already committed are skipped by their transaction).

use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::datafusion::prelude::{cast, ident, lit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tideway_lake::{Lake, TableName, Txn};
use tracing::info;

use crate::config::{SourceTable, UnifyConfig, WAREHOUSE_TABLES, warehouse_ids};
use crate::error::{Result, UnifyError};
use crate::graph::{Applied, Batch, Graph, Ident, ProfileId, ProfileRow, Provenance, Restore};

/// The schema of the unify tables.
pub const SCHEMA: &str = "profiles";
/// `identity_map(id_type, id_value, profile_id, first_seen, last_seen, source_table)`.
pub const IDENTITY_MAP: &str = "identity_map";
/// One row per profile.
pub const PROFILES: &str = "profiles";
/// Every merge, with the edge that caused it.
pub const MERGES: &str = "profile_merges";
/// Every refused edge and value, with the rule that refused it.
pub const REFUSED: &str = "refused_edges";
/// The edges that joined identifiers into profiles, with provenance.
pub const LINKS: &str = "identity_links";
/// Run plans and results.
pub const RUNS: &str = "unify_runs";
/// The Delta transaction id every output is written under.
pub const TXN: &str = "unify";

/// A table of the `profiles` schema.
pub fn table(name: &str) -> TableName {
    TableName::new(SCHEMA, name).expect("a valid table name")
}

/// `a` as a `Utf8` array (the lake's scans may give `Utf8View`).
pub(crate) fn utf8(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(deltalake::arrow::compute::cast(a, &DataType::Utf8)?)
}

/// A string column as a scan gives it (`Utf8`, `LargeUtf8` or `Utf8View`), read in place.
pub(crate) enum Text<'a> {
    Small(&'a StringArray),
    Large(&'a deltalake::arrow::array::LargeStringArray),
    View(&'a deltalake::arrow::array::StringViewArray),
}

impl<'a> Text<'a> {
    pub(crate) fn is_text(t: &DataType) -> bool {
        matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    }

    pub(crate) fn of(a: &'a ArrayRef) -> Result<Text<'a>> {
        Ok(match a.data_type() {
            DataType::Utf8 => Text::Small(a.as_string::<i32>()),
            DataType::LargeUtf8 => Text::Large(a.as_string::<i64>()),
            DataType::Utf8View => Text::View(a.as_string_view()),
            other => {
                return Err(UnifyError::Internal(format!(
                    "a text column was read as {other}"
                )));
            }
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Text::Small(a) => a.is_valid(i).then(|| a.value(i)),
            Text::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Text::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn runs_table() -> TableName {
    TableName::new(tideway_lake::SYSTEM_SCHEMA, RUNS).expect("a valid table name")
}

/// One source's part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSource {
    /// The table.
    pub table: String,
    /// Rows written after this version (all rows if `None`)...
    pub from: Option<i64>,
    /// ...up to this one.
    pub to: i64,
}

/// A run's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The run's number.
    pub run: i64,
    /// What each source contributes.
    pub sources: Vec<PlannedSource>,
    /// The state to start from: versions of `identity_map` and `profiles`, if any run is done.
    pub state: Option<(i64, i64)>,
    /// Whether this plan was left unfinished by a run that crashed.
    pub resumed: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The run's number.
    pub run: i64,
    /// Whether it finished a plan a crashed run left.
    pub resumed: bool,
    /// Nothing was written to any source since the last run, so nothing ran.
    pub up_to_date: bool,
    /// Rows read per source table.
    pub rows: Vec<(String, u64)>,
    /// Observations applied, identifiers and profiles created, merges, refusals.
    pub observations: u64,
    /// See `observations`.
    pub new_ids: u64,
    /// See `observations`.
    pub new_profiles: u64,
    /// See `observations`.
    pub merges: u64,
    /// See `observations`.
    pub refused: u64,
    /// Identifiers and live profiles after the run.
    pub identifiers: u64,
    /// See `identifiers`.
    pub profiles: u64,
    /// Seconds spent reading, stitching and writing.
    pub read_seconds: f64,
    /// See `read_seconds`.
    pub stitch_seconds: f64,
    /// See `read_seconds`.
    pub write_seconds: f64,
}

/// Progress callbacks for long runs: rows read so far.
pub trait Progress: Send + Sync {
    /// `rows` more rows were read from `table`.
    fn rows(&self, table: &str, rows: u64);
}

impl Progress for () {
    fn rows(&self, _: &str, _: u64) {}
}

/// The source tables in force: those configured, then (with `defaults`) the warehouse tables
/// of each collect source that exist in the lake.
pub async fn source_tables(
    lake: &Lake,
    config: &UnifyConfig,
    collect_sources: &[String],
) -> Result<Vec<SourceTable>> {
    let mut out = config.sources.clone();
    if config.defaults {
        for source in collect_sources {
            let schema = tideway_core::warehouse::schema_name(source);
            for t in WAREHOUSE_TABLES {
                let Ok(name) = TableName::new(&schema, t) else {
                    continue;
                };
                let full = name.to_string();
                if out.iter().any(|s| s.table == full) {
                    continue;
                }
                let Some(delta) = lake.load(&name).await? else {
                    continue;
                };
                let columns: Vec<String> = Lake::schema_of(&name, &delta)?
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let ids = warehouse_ids(t, &columns);
                if ids.is_empty() {
                    continue;
                }
                out.push(SourceTable {
                    table: full,
                    ids,
                    typed: Vec::new(),
                    time: None,
                    key: columns.iter().any(|c| c == "id").then(|| "id".to_string()),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
struct RunRow {
    run: i64,
    status: String,
    sources: String,
    identity_map_version: Option<i64>,
    profiles_version: Option<i64>,
}

async fn run_rows(lake: &Lake) -> Result<Vec<RunRow>> {
    if lake.load(&runs_table()).await?.is_none() {
        return Ok(Vec::new());
    }
    let result = lake
        .sql(&format!(
            "SELECT run, status, sources, identity_map_version, profiles_version \
             FROM {} ORDER BY run",
            runs_table()
        ))
        .await?;
    let tideway_lake::SqlOutput::Rows(rows) = result else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in &rows.batches {
        let run = b
            .column(0)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let (status, sources) = (utf8(b.column(1))?, utf8(b.column(2))?);
        let (status, sources) = (status.as_string::<i32>(), sources.as_string::<i32>());
        let im = b
            .column(3)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let pv = b
            .column(4)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            out.push(RunRow {
                run: run.value(i),
                status: status.value(i).to_string(),
                sources: sources.value(i).to_string(),
                identity_map_version: im.is_valid(i).then(|| im.value(i)),
                profiles_version: pv.is_valid(i).then(|| pv.value(i)),
            });
        }
    }
    Ok(out)
}

/// The next run's plan: an unfinished plan if a run crashed, else a new one covering every
/// source's versions since the last done run.
pub async fn plan(lake: &Lake, sources: &[SourceTable]) -> Result<Plan> {
    let rows = run_rows(lake).await?;
    let done = rows.iter().rev().find(|r| r.status == "done");
    let state = done.and_then(|d| Some((d.identity_map_version?, d.profiles_version?)));
    let last_done = done.map_or(0, |d| d.run);
    if let Some(p) = rows
        .iter()
        .rev()
        .find(|r| r.status == "planned" && r.run > last_done)
    {
        let sources: Vec<PlannedSource> = serde_json::from_str(&p.sources).map_err(|e| {
            UnifyError::Internal(format!("unreadable plan of unify run {}: {e}", p.run))
        })?;
        return Ok(Plan {
            run: p.run,
            sources,
            state,
            resumed: true,
        });
    }
    let before: Vec<PlannedSource> = match done {
        Some(d) => serde_json::from_str(&d.sources).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut planned = Vec::new();
    for s in sources {
        let name: TableName = s.table.parse()?;
        let Some(t) = lake.load(&name).await? else {
            return Err(lake.unknown_table(&s.table).await.into());
        };
        let to = t.version().unwrap_or(0) as i64;
        let from = before.iter().find(|b| b.table == s.table).map(|b| b.to);
        planned.push(PlannedSource {
            table: s.table.clone(),
            from,
            to,
        });
    }
    Ok(Plan {
        run: last_done + 1,
        sources: planned,
        state,
        resumed: false,
    })
}

/// Where a test may make a run stop as if the process had been killed.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the plan is committed.
    Planned,
    /// After the history tables (merges, refusals, links) are appended (the identity map,
    /// written at the same time, may or may not be).
    History,
    /// After `profiles` is written.
    Profiles,
    /// After `identity_map` is written, before the run is marked done.
    IdentityMap,
}

fn crash(at: Option<CrashPoint>, here: CrashPoint) -> Result<()> {
    if at == Some(here) {
        return Err(UnifyError::Internal(format!(
            "simulated crash after {here:?}"
        )));
    }
    Ok(())
}

/// Runs unify once: plans (or resumes), reads, stitches, writes.
pub async fn run(
    lake: &Lake,
    config: &UnifyConfig,
    collect_sources: &[String],
    progress: &dyn Progress,
) -> Result<RunReport> {
    run_until(lake, config, collect_sources, progress, None).await
}

/// [`run`], stopping at `crash_at` as if killed there (for tests).
#[doc(hidden)]
pub async fn run_until(
    lake: &Lake,
    config: &UnifyConfig,
    collect_sources: &[String],
    progress: &dyn Progress,
    crash_at: Option<CrashPoint>,
) -> Result<RunReport> {
    let sources = source_tables(lake, config, collect_sources).await?;
    let plan = plan(lake, &sources).await?;
    let nothing_new = plan.sources.iter().all(|s| s.from == Some(s.to));
    if !plan.resumed && nothing_new && plan.state.is_some() {
        return Ok(RunReport {
            run: plan.run - 1,
            up_to_date: true,
            ..RunReport::default()
        });
    }
    if !plan.resumed {
        write_run_row(lake, &plan, "planned", None).await?;
    }
    crash(crash_at, CrashPoint::Planned)?;
    let mut report = RunReport {
        run: plan.run,
        resumed: plan.resumed,
        ..RunReport::default()
    };
    let started = Instant::now();
    let mut graph = restore(lake, config, plan.state).await?;
    let mut batch = Batch::default();
    for p in &plan.sources {
        let source = sources
            .iter()
            .find(|s| s.table == p.table)
            .cloned()
            .ok_or_else(|| {
                UnifyError::User(format!(
                    "unify run {} was planned with source `{}`, which is no longer configured; \
                     put it back to finish that run",
                    plan.run, p.table
                ))
            })?;
        let rows = read_source(lake, &source, p, &mut graph, &mut batch, progress).await?;
        report.rows.push((p.table.clone(), rows));
    }
    report.read_seconds = started.elapsed().as_secs_f64();
    let stitch = Instant::now();
    let applied: Applied = graph.apply(batch);
    report.observations = applied.observations;
    report.new_ids = applied.new_ids;
    report.new_profiles = applied.new_profiles;
    report.merges = applied.merges;
    report.refused = applied.refused;
    report.stitch_seconds = stitch.elapsed().as_secs_f64();
    let write = Instant::now();
    let versions = write_outputs(lake, graph, plan.run, &mut report, crash_at).await?;
    write_run_row(lake, &plan, "done", Some((versions, &report))).await?;
    report.write_seconds = write.elapsed().as_secs_f64();
    info!(
        run = plan.run,
        observations = report.observations,
        merges = report.merges,
        refused = report.refused,
        "unify run done"
    );
    Ok(report)
}

/// The graph as the last done run left it.
pub async fn restore(
    lake: &Lake,
    config: &UnifyConfig,
    state: Option<(i64, i64)>,
) -> Result<Graph> {
    let Some((im, pv)) = state else {
        return Ok(Graph::new(config.rules.clone()));
    };
    let profiles_df = lake
        .read_range(&table(PROFILES), None, pv)
        .await?
        .select(vec![
            ident("profile_id"),
            cast(
                cast(
                    ident("created_at"),
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                DataType::Int64,
            ),
            cast(
                cast(
                    ident("updated_at"),
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                DataType::Int64,
            ),
            cast(ident("merges"), DataType::UInt32),
        ])?;
    let mut profiles = Vec::new();
    for b in profiles_df.collect().await? {
        let id = utf8(b.column(0))?;
        let id = id.as_string::<i32>();
        let c = b
            .column(1)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let u = b
            .column(2)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let m = b
            .column(3)
            .as_primitive::<deltalake::arrow::datatypes::UInt32Type>();
        for i in 0..b.num_rows() {
            let pid = ProfileId::parse(id.value(i)).ok_or_else(|| {
                UnifyError::Internal(format!(
                    "profiles.profiles holds a malformed id `{}`",
                    id.value(i)
                ))
            })?;
            profiles.push((pid, c.value(i), u.value(i), m.value(i)));
        }
    }
    let map = lake
        .read_range(&table(IDENTITY_MAP), None, im)
        .await?
        .select(vec![
            ident("id_type"),
            ident("id_value"),
            ident("profile_id"),
            cast(
                cast(
                    ident("first_seen"),
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                DataType::Int64,
            ),
            cast(
                cast(
                    ident("last_seen"),
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                DataType::Int64,
            ),
            ident("source_table"),
        ])?;
    let mut restore = Restore::new(config.rules.clone(), profiles);
    let mut stream = map.execute_stream().await?;
    while let Some(b) = stream.next().await {
        let b = b?;
        let (kind, value, pid) = (
            Text::of(b.column(0))?,
            Text::of(b.column(1))?,
            Text::of(b.column(2))?,
        );
        let first = b
            .column(3)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let last = b
            .column(4)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let source = Text::of(b.column(5))?;
        for i in 0..b.num_rows() {
            let (Some(kind), Some(value), Some(pid), Some(source)) =
                (kind.get(i), value.get(i), pid.get(i), source.get(i))
            else {
                return Err(UnifyError::Internal(
                    "profiles.identity_map holds a row with a null id_type, id_value, \
                     profile_id or source_table"
                        .into(),
                ));
            };
            let profile = ProfileId::parse(pid).ok_or_else(|| {
                UnifyError::Internal(format!(
                    "profiles.identity_map holds a malformed profile id `{pid}`"
                ))
            })?;
            restore.add(kind, value, profile, first.value(i), last.value(i), source);
        }
    }
    Ok(restore.finish())
}

/// The default time columns, in order of preference.
const TIME_COLUMNS: &[&str] = &[
    "timestamp",
    "received_at",
    "updated_at",
    "created_at",
    "_tideway_loaded_at",
];

async fn read_source(
    lake: &Lake,
    source: &SourceTable,
    planned: &PlannedSource,
    graph: &mut Graph,
    batch: &mut Batch,
    progress: &dyn Progress,
) -> Result<u64> {
    let name: TableName = source.table.parse()?;
    let df = lake.read_range(&name, planned.from, planned.to).await?;
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let need = |c: &str, what: &str| -> Result<()> {
        if columns.iter().any(|have| have == c) {
            Ok(())
        } else {
            Err(UnifyError::User(format!(
                "unify source `{}`: its {what} column `{c}` does not exist; the table has: {}",
                source.table,
                columns.join(", ")
            )))
        }
    };
    // String columns are read as the scan gives them (no copy); others as text.
    let text = |c: &str| {
        let is_text = df
            .schema()
            .field_with_unqualified_name(c)
            .is_ok_and(|f| Text::is_text(f.data_type()));
        if is_text {
            ident(c)
        } else {
            cast(ident(c), DataType::Utf8)
        }
    };
    let mut exprs = Vec::new();
    let mut kinds = Vec::new();
    for (kind, column) in &source.ids {
        need(column, &format!("`{kind}`"))?;
        exprs.push(text(column));
        kinds.push(Some(graph.type_index(kind)));
    }
    for (type_column, value_column) in &source.typed {
        need(type_column, "type")?;
        need(value_column, "value")?;
        exprs.push(text(type_column));
        exprs.push(text(value_column));
    }
    let time = match &source.time {
        Some(t) => {
            need(t, "time")?;
            Some(t.clone())
        }
        None => TIME_COLUMNS
            .iter()
            .find(|t| columns.iter().any(|c| c == *t))
            .map(|t| t.to_string()),
    };
    exprs.push(match &time {
        Some(t) => cast(
            cast(ident(t), DataType::Timestamp(TimeUnit::Millisecond, None)),
            DataType::Int64,
        ),
        None => lit(0i64),
    });
    if let Some(k) = &source.key {
        need(k, "key")?;
    }
    exprs.push(match &source.key {
        Some(k) => text(k),
        None => lit(""),
    });
    // Two roles may read one column (an id that is also the key): name each output.
    let exprs = exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("c{i}")))
        .collect::<Vec<_>>();
    let df = df.select(exprs)?;
    let src = graph.source_index(&source.table);
    let fixed = source.ids.len();
    let typed = source.typed.len();
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    let mut typed_kinds: Vec<Vec<Option<usize>>> = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let mut ids: Vec<(usize, &str)> = Vec::new();
        let strings: Vec<Text> = (0..fixed + 2 * typed)
            .map(|i| Text::of(b.column(i)))
            .collect::<Result<_>>()?;
        // Types that are data: resolve each run of one name once.
        typed_kinds.clear();
        for t in 0..typed {
            let col = &strings[fixed + 2 * t];
            let mut last: Option<(&str, usize)> = None;
            typed_kinds.push(
                (0..b.num_rows())
                    .map(|i| {
                        let name = col.get(i)?;
                        Some(match last {
                            Some((l, k)) if l == name => k,
                            _ => {
                                let k = graph.type_index(name);
                                last = Some((name, k));
                                k
                            }
                        })
                    })
                    .collect(),
            );
        }
        let ts = b
            .column(fixed + 2 * typed)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let key = Text::of(b.column(fixed + 2 * typed + 1))?;
        for i in 0..b.num_rows() {
            ids.clear();
            for (c, kind) in kinds.iter().enumerate() {
                if let Some(v) = strings[c].get(i) {
                    ids.push((kind.expect("fixed kinds are resolved"), v));
                }
            }
            for (t, kinds_of) in typed_kinds.iter().enumerate() {
                if let (Some(kind), Some(v)) = (kinds_of[i], strings[fixed + 2 * t + 1].get(i)) {
                    ids.push((kind, v));
                }
            }
            let ts = if ts.is_valid(i) { ts.value(i) } else { 0 };
            let row = key.get(i).unwrap_or("");
            graph.observe(batch, src, row, ts, &ids);
        }
        rows += b.num_rows() as u64;
        progress.rows(&source.table, b.num_rows() as u64);
    }
    Ok(rows)
}

fn micros(ms: i64) -> i64 {
    ms.saturating_mul(1000)
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

fn ts_array(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .into_iter()
            .map(|v| v.map(micros))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn strings<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>())
}

const CHUNK: usize = 1 << 20;

/// The identity map's rows among nodes `range`, built straight from the graph.
fn identity_batch(graph: &mut Graph, range: std::ops::Range<usize>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id_type", DataType::Utf8, false),
        Field::new("id_value", DataType::Utf8, false),
        Field::new("profile_id", DataType::Utf8, false),
        ts_field("first_seen", false),
        ts_field("last_seen", false),
        Field::new("source_table", DataType::Utf8, false),
    ]));
    let n = range.len();
    let mut kind = StringBuilder::with_capacity(n, n * 8);
    let mut value = StringBuilder::with_capacity(n, n * 16);
    let mut profile = StringBuilder::with_capacity(n, n * 25);
    let mut source = StringBuilder::with_capacity(n, n * 16);
    let (mut first, mut last) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut pid = String::with_capacity(25);
    graph.identity_rows(range, |i| {
        kind.append_value(i.kind);
        value.append_value(i.value);
        pid.clear();
        i.profile.push_to(&mut pid);
        profile.append_value(&pid);
        first.push(micros(i.first_seen));
        last.push(micros(i.last_seen));
        source.append_value(i.source);
    });
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(kind.finish()),
            Arc::new(value.finish()),
            Arc::new(profile.finish()),
            utc(first),
            utc(last),
            Arc::new(source.finish()),
        ],
    )?)
}

/// Microseconds since the epoch as a UTC timestamp column.
fn utc(micros: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
}

fn profile_batches(graph: &Graph, rows: &[ProfileRow]) -> Result<Vec<RecordBatch>> {
    let types = &graph.rules().types;
    let mut fields = vec![
        Field::new("profile_id", DataType::Utf8, false),
        ts_field("created_at", false),
        ts_field("updated_at", false),
        Field::new("identifiers", DataType::UInt32, false),
        Field::new("merges", DataType::UInt32, false),
    ];
    for t in types {
        fields.push(Field::new(
            format!("{}_count", t.name),
            DataType::UInt32,
            false,
        ));
    }
    for t in types {
        fields.push(Field::new(t.name.clone(), DataType::Utf8, true));
    }
    let schema = Arc::new(Schema::new(fields));
    rows.chunks(CHUNK)
        .map(|c| {
            let mut ids = StringBuilder::with_capacity(c.len(), c.len() * 25);
            let mut pid = String::with_capacity(25);
            for p in c {
                pid.clear();
                p.id.push_to(&mut pid);
                ids.append_value(&pid);
            }
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(ids.finish()),
                ts_array(c.iter().map(|p| Some(p.created_at))),
                ts_array(c.iter().map(|p| Some(p.updated_at))),
                Arc::new(
                    c.iter()
                        .map(|p| p.counts.iter().sum::<u32>())
                        .collect::<UInt32Array>(),
                ),
                Arc::new(c.iter().map(|p| p.merges).collect::<UInt32Array>()),
            ];
            for k in 0..types.len() {
                columns.push(Arc::new(
                    c.iter()
                        .map(|p| p.counts.get(k).copied().unwrap_or(0))
                        .collect::<UInt32Array>(),
                ));
            }
            for k in 0..types.len() {
                columns.push(strings(
                    c.iter().map(|p| p.latest.get(k).and_then(|v| v.as_deref())),
                ));
            }
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

fn provenance_columns(at: &[&Provenance], run: i64) -> Vec<ArrayRef> {
    vec![
        strings(at.iter().map(|p| Some(p.source.as_str()))),
        strings(
            at.iter()
                .map(|p| (!p.row.is_empty()).then_some(p.row.as_str())),
        ),
        ts_array(at.iter().map(|p| Some(p.ts))),
        Arc::new(Int64Array::from(vec![run; at.len()])),
    ]
}

fn provenance_fields() -> Vec<Field> {
    vec![
        Field::new("source_table", DataType::Utf8, false),
        Field::new("row_key", DataType::Utf8, true),
        ts_field("at", false),
        Field::new("run", DataType::Int64, false),
    ]
}

fn history_batches(graph: &Graph, run: i64) -> Result<[(&'static str, Vec<RecordBatch>); 3]> {
    let edge = |prefix: &str| {
        vec![
            Field::new(format!("{prefix}_type"), DataType::Utf8, true),
            Field::new(format!("{prefix}_value"), DataType::Utf8, true),
        ]
    };
    fn kind(i: Option<&Ident>) -> Option<&str> {
        i.map(|i| i.kind.as_str())
    }
    fn value(i: Option<&Ident>) -> Option<&str> {
        i.map(|i| i.value.as_str())
    }

    let m = &graph.merges;
    let mut fields = vec![
        Field::new("profile_id", DataType::Utf8, false),
        Field::new("absorbed_profile_id", DataType::Utf8, false),
    ];
    fields.extend(edge("from"));
    fields.extend(edge("to"));
    fields.extend(provenance_fields());
    let (s, a): (Vec<String>, Vec<String>) = m
        .iter()
        .map(|m| (m.survivor.to_string(), m.absorbed.to_string()))
        .unzip();
    let mut cols = vec![
        strings(s.iter().map(|v| Some(v.as_str()))),
        strings(a.iter().map(|v| Some(v.as_str()))),
        strings(m.iter().map(|m| kind(Some(&m.from)))),
        strings(m.iter().map(|m| value(Some(&m.from)))),
        strings(m.iter().map(|m| kind(Some(&m.to)))),
        strings(m.iter().map(|m| value(Some(&m.to)))),
    ];
    cols.extend(provenance_columns(
        &m.iter().map(|m| &m.at).collect::<Vec<_>>(),
        run,
    ));
    let merges = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;

    let r = &graph.refusals;
    let mut fields = edge("from");
    fields.extend(edge("to"));
    fields.push(Field::new("rule", DataType::Utf8, false));
    fields.push(Field::new("detail", DataType::Utf8, false));
    fields.extend(provenance_fields());
    let mut cols = vec![
        strings(r.iter().map(|r| kind(r.from.as_ref()))),
        strings(r.iter().map(|r| value(r.from.as_ref()))),
        strings(r.iter().map(|r| kind(Some(&r.to)))),
        strings(r.iter().map(|r| value(Some(&r.to)))),
        strings(r.iter().map(|r| Some(r.rule.as_str()))),
        strings(r.iter().map(|r| Some(r.detail.as_str()))),
    ];
    cols.extend(provenance_columns(
        &r.iter().map(|r| &r.at).collect::<Vec<_>>(),
        run,
    ));
    let refused = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;

    let mut links = Vec::new();
    let mut fields = edge("from");
    fields.extend(edge("to"));
    fields.extend(provenance_fields());
    let schema = Arc::new(Schema::new(fields));
    for start in (0..graph.link_count().max(1)).step_by(CHUNK) {
        let n = CHUNK.min(graph.link_count() - start);
        let mut cols: [StringBuilder; 6] =
            std::array::from_fn(|_| StringBuilder::with_capacity(n, n * 12));
        let mut at = Vec::with_capacity(n);
        graph.link_rows(start..start + n, |l| {
            cols[0].append_value(l.from.0);
            cols[1].append_value(l.from.1);
            cols[2].append_value(l.to.0);
            cols[3].append_value(l.to.1);
            cols[4].append_value(l.source);
            cols[5].append_option((!l.row.is_empty()).then_some(l.row));
            at.push(micros(l.ts));
        });
        let mut cols: Vec<ArrayRef> = cols
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        cols.push(utc(at));
        cols.push(Arc::new(Int64Array::from(vec![run; n])));
        links.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok([
        (MERGES, vec![merges]),
        (REFUSED, vec![refused]),
        (LINKS, links),
    ])
}

async fn version_after(
    lake: &Lake,
    name: &TableName,
    commit: &tideway_lake::Commit,
) -> Result<i64> {
    Ok(match commit.version {
        Some(v) => v as i64,
        None => lake.table(name).await?.version().unwrap_or(0) as i64,
    })
}

/// Writes every output of the run under the `unify` transaction at `run`; the versions of
/// `identity_map` and `profiles` written.
///
/// The history tables and `profiles` are written while the identity map's rows are built,
/// then the graph is dropped and the identity map written. Every write is exactly-once under
/// the run's transaction, so a crash between any of the commits is finished by the rerun.
async fn write_outputs(
    lake: &Lake,
    mut graph: Graph,
    run: i64,
    report: &mut RunReport,
    crash_at: Option<CrashPoint>,
) -> Result<(i64, i64)> {
    graph.sort_links();
    let history = history_batches(&graph, run)?;
    let profiles = graph.profiles();
    report.profiles = profiles.len() as u64;
    let profile_batches = profile_batches(&graph, &profiles)?;
    drop(profiles);
    // The history and `profiles` are written (on the runtime's workers) while the identity
    // map's rows are built here.
    let rest = tokio::spawn({
        let lake = lake.clone();
        async move {
            for (name, batches) in history {
                // An empty append still commits, so that the table exists with its schema
                // for the queries users write against it.
                lake.append(&table(name), batches)
                    .with_txn(Txn::new(TXN, run))
                    .await?;
            }
            crash(crash_at, CrashPoint::History)?;
            let pt = table(PROFILES);
            let commit = lake
                .overwrite(&pt, profile_batches)
                .with_txn(Txn::new(TXN, run))
                .await?;
            let pv = version_after(&lake, &pt, &commit).await?;
            crash(crash_at, CrashPoint::Profiles)?;
            Ok::<_, UnifyError>(pv)
        }
    });
    let identity_map = async {
        let mut batches = Vec::new();
        for start in (0..graph.len()).step_by(CHUNK) {
            let b = identity_batch(&mut graph, start..start + CHUNK)?;
            report.identifiers += b.num_rows() as u64;
            batches.push(b);
        }
        drop(graph);
        let it = table(IDENTITY_MAP);
        let commit = lake
            .overwrite(&it, batches)
            .with_txn(Txn::new(TXN, run))
            .await?;
        version_after(lake, &it, &commit).await
    };
    // Both finish (or fail) before the run goes on: nothing is left writing behind it.
    let iv = identity_map.await;
    let pv = rest
        .await
        .map_err(|e| UnifyError::Internal(format!("the unify history writer stopped: {e}")))?;
    let (iv, pv) = (iv?, pv?);
    crash(crash_at, CrashPoint::IdentityMap)?;
    Ok((iv, pv))
}

async fn write_run_row(
    lake: &Lake,
    plan: &Plan,
    status: &str,
    done: Option<((i64, i64), &RunReport)>,
) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("run", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        ts_field("at", false),
        Field::new("sources", DataType::Utf8, false),
        Field::new("identity_map_version", DataType::Int64, true),
        Field::new("profiles_version", DataType::Int64, true),
        Field::new("report", DataType::Utf8, true),
    ]));
    let sources = serde_json::to_string(&plan.sources).expect("plans serialize");
    let report = done.map(|(_, r)| serde_json::to_string(r).expect("reports serialize"));
    let now = chrono::Utc::now().timestamp_millis();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![plan.run])),
            strings([Some(status)]),
            ts_array([Some(now)]),
            strings([Some(sources.as_str())]),
            Arc::new(Int64Array::from(vec![done.map(|((i, _), _)| i)])),
            Arc::new(Int64Array::from(vec![done.map(|((_, p), _)| p)])),
            strings([report.as_deref()]),
        ],
    )?;
    lake.append(&runs_table(), vec![batch])
        .with_txn(Txn::new(format!("unify-{status}"), plan.run))
        .await?;
    Ok(())
}
