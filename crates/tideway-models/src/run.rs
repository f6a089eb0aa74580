//! Runs: the selected models executed against the lake, upstreams first, each written as its
//! materialization says, its data tests checked, and every run recorded.
//!
//! | materialized | each run |
//! |---|---|
//! | `table` | the query's rows replace the table, in one commit (readers see the old or the new table) |
//! | `view` | nothing is stored; models that read it run its query in theirs |
//! | `incremental` + `time_column` | the rows of the window `[start, end)` replace that window's rows, in one commit: a window run twice is stored once |
//! | `incremental` + `unique_key` | the rows are merged by the key (`{% if is_incremental() %}` can limit what the query reads) |
//!
//! **Windows.** Each model has an interval (default one day). A run covers the windows that are
//! over: from where the model's last run ended up to `now` rounded down to the interval (all of
//! history on a model's first run). The window commits with the rows (`tideway.model` in the
//! Delta commit), so a crash after the commit does not run it again and a crash before it
//! leaves the window to the next run. `start`/`end` backfill a given window.
//!
//! **History.** Every model run (window, status, rows, time, error, failed tests) is appended to
//! `_tideway.model_runs`.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tideway_lake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tideway_lake::arrow::util::pretty::pretty_format_batches;
use tideway_lake::datafusion::sql::sqlparser::ast::{
    Ident, ObjectNamePart, Query, Statement, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use tideway_lake::{Executed, Lake, LakeError, TableName};

use crate::compile::Compilation;
use crate::header::{ColumnTest, Materialized};
use crate::project::Model;
use crate::template::Context;

/// The table that holds the run history.
pub const HISTORY_TABLE: &str = "_tideway.model_runs";
/// The commit metadata key of a model's window.
pub const WINDOW_KEY: &str = "tideway.model";
/// The interval of a model that names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(86_400);

/// What went wrong in a run as a whole (a model's own failure is in its [`ModelRun`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown model `{selector}` in the selection{hint}; models: {known}")]
    UnknownSelector {
        selector: String,
        hint: String,
        known: String,
    },
    #[error("the models have {0} compile error(s); nothing was run (`tideway compile` shows them)")]
    NotCompiled(usize),
    #[error("the change breaks {} downstream read(s) of deployed models; nothing was run (`tideway plan` shows the plan)", .0.len())]
    Breaking(Vec<crate::Diagnostic>),
    #[error("a window's start ({start}) is not before its end ({end})")]
    EmptyWindow { start: String, end: String },
    #[error(transparent)]
    Lake(Box<LakeError>),
}

impl From<LakeError> for RunError {
    fn from(e: LakeError) -> Self {
        RunError::Lake(Box::new(e))
    }
}

impl tideway_core::Faulty for RunError {
    fn fault(&self) -> tideway_core::Fault {
        match self {
            RunError::Lake(e) => e.fault(),
            _ => tideway_core::Fault::User,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// dbt-style selectors: `m` (a model's file name or `schema.table`), `+m` (and everything
    /// it reads), `m+` (and everything that reads it), `schema.*`. Empty: every model.
    pub select: Vec<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Backfill this window instead of the windows that are due.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The clock: windows that end after it are not over.
    pub now: DateTime<Utc>,
    /// The caller already refused breaking changes (the scheduler checks once per tick).
    pub plan_checked: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            select: Vec::new(),
            full_refresh: false,
            window: None,
            now: Utc::now(),
            plan_checked: false,
        }
    }
}

/// How a model's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    /// The query, the write or a data test failed.
    Failed,
    /// An upstream model failed in this run.
    Skipped,
    /// No window of this incremental model is over since its last run.
    UpToDate,
}

/// A data test that failed, with sample rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestFailure {
    /// `not_null(customer_id)`, `assertion 1`, ...
    pub test: String,
    pub failing_rows: u64,
    /// Up to five offending rows, as a table.
    pub sample: String,
}

/// One model's run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRun {
    pub model: String,
    pub materialized: Materialized,
    pub status: Status,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub rows: u64,
    pub version: Option<u64>,
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
    pub error: Option<String>,
    pub failed_tests: Vec<TestFailure>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Which models a selection means, in DAG order.
pub fn select(compilation: &Compilation, selectors: &[String]) -> Result<Vec<usize>, RunError> {
    let models = &compilation.models;
    if selectors.is_empty() {
        return Ok(compilation.order.clone());
    }
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); models.len()];
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); models.len()];
    for c in compilation.compiled.iter().flatten() {
        for &u in &c.upstream_models {
            downstream[u].push(c.index);
            upstream[c.index].push(u);
        }
    }
    let walk = |start: usize, edges: &Vec<Vec<usize>>, out: &mut BTreeSet<usize>| {
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for &j in &edges[i] {
                if out.insert(j) {
                    stack.push(j);
                }
            }
        }
    };
    let mut chosen = BTreeSet::new();
    for selector in selectors {
        let (up, rest) = match selector.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, selector.as_str()),
        };
        let (down, name) = match rest.strip_suffix('+') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let roots: Vec<usize> = if let Some(schema) = name.strip_suffix(".*") {
            (0..models.len())
                .filter(|&i| models.models[i].name.schema() == schema)
                .collect()
        } else {
            models.find(&name.to_lowercase()).into_iter().collect()
        };
        if roots.is_empty() {
            let names = models.names();
            let mut candidates = names.clone();
            candidates.extend(models.models.iter().map(|m| m.stem.clone()));
            let hint = tideway_lake::closest(name, &candidates)
                .and_then(|c| models.find(c))
                .map(|i| format!("; did you mean `{}`?", models.models[i].name))
                .unwrap_or_default();
            return Err(RunError::UnknownSelector {
                selector: selector.clone(),
                hint,
                known: names
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for r in roots {
            chosen.insert(r);
            if up {
                walk(r, &upstream, &mut chosen);
            }
            if down {
                walk(r, &downstream, &mut chosen);
            }
        }
    }
    Ok(compilation
        .order
        .iter()
        .copied()
        .filter(|i| chosen.contains(i))
        .collect())
}

/// Rounds `t` down to a multiple of `interval` since the Unix epoch.
pub fn floor(t: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = interval.as_micros().max(1) as i64;
    let micros = t.timestamp_micros().div_euclid(step) * step;
    Utc.timestamp_micros(micros).single().unwrap_or(t)
}

/// `t` as a literal of the column type `ty`, in the form Delta's predicate parser reads back.
fn typed_literal(t: DateTime<Utc>, ty: &DataType) -> String {
    match ty {
        DataType::Date32 | DataType::Date64 => {
            format!("arrow_cast('{}', '{ty}')", t.format("%Y-%m-%d"))
        }
        DataType::Timestamp(unit, tz) => format!(
            "arrow_cast('{}', 'Timestamp({unit:?}, {})')",
            t.format("%Y-%m-%dT%H:%M:%S%.6f"),
            match tz {
                Some(tz) => format!("Some(\"{tz}\")"),
                None => "None".to_string(),
            }
        ),
        _ => literal(t),
    }
}

fn literal(t: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// Progress of a run, for a progress bar.
#[derive(Debug)]
pub enum Event<'a> {
    Started {
        model: &'a str,
        index: usize,
        of: usize,
    },
    Finished(&'a ModelRun),
}

/// Runs the selected models of a compiled project. A model that fails stops the models that
/// read it, not the others. The history is written at the end.
pub async fn run(
    lake: &Lake,
    compilation: &Compilation,
    options: &RunOptions,
    mut progress: impl FnMut(Event<'_>),
) -> Result<Vec<ModelRun>, RunError> {
    if !compilation.is_ok() {
        return Err(RunError::NotCompiled(compilation.diagnostics.len()));
    }
    if let Some((start, end)) = options.window
        && start >= end
    {
        return Err(RunError::EmptyWindow {
            start: start.to_rfc3339(),
            end: end.to_rfc3339(),
        });
    }
    let selected = select(compilation, &options.select)?;
    // A breaking change to a deployed model is refused before anything runs. The deployed
    // state is read for that check, and on a whole-project run to forget removed models; the
    // scheduler, which checked once for its tick and runs one model at a time, needs neither.
    let deployed = if !options.plan_checked || options.select.is_empty() {
        crate::plan::read_deployed(lake).await?
    } else {
        HashMap::new()
    };
    if !options.plan_checked {
        let plan = crate::plan::plan(compilation, &deployed);
        if !plan.is_safe() {
            return Err(RunError::Breaking(plan.breaking));
        }
    }
    for f in crate::dialect::functions() {
        lake.session().register_udf(f);
    }
    let run_id = format!("{}", options.now.format("%Y%m%dT%H%M%S%.3fZ"));
    // Views: their queries, with the views they read already inlined, by table name.
    let mut views: HashMap<String, Query> = HashMap::new();
    for &i in &compilation.order {
        let m = &compilation.models.models[i];
        if m.config.materialized == Materialized::View
            && let Some(c) = &compilation.compiled[i]
            && let Some(query) = &c.view_query
            && let Statement::Query(q) = inline_views(query.clone(), &views)
        {
            views.insert(m.name.to_string(), *q);
        }
    }
    let mut failed: Vec<bool> = vec![false; compilation.models.len()];
    let mut runs = Vec::with_capacity(selected.len());
    for (n, &i) in selected.iter().enumerate() {
        let model = &compilation.models.models[i];
        let compiled = compilation.compiled[i]
            .as_ref()
            .expect("a compilation without errors compiled every model");
        progress(Event::Started {
            model: &model.name.to_string(),
            index: n,
            of: selected.len(),
        });
        let started = Instant::now();
        let interval = model.config.interval.unwrap_or(DEFAULT_INTERVAL);
        let mut result = ModelRun {
            model: model.name.to_string(),
            materialized: model.config.materialized,
            status: Status::Success,
            window_start: floor(options.now, interval)
                - chrono::Duration::from_std(interval).unwrap_or_default(),
            window_end: floor(options.now, interval),
            rows: 0,
            version: None,
            elapsed: Duration::ZERO,
            error: None,
            failed_tests: Vec::new(),
        };
        if let Some(&u) = compiled.upstream_models.iter().find(|&&u| failed[u]) {
            result.status = Status::Skipped;
            result.error = Some(format!(
                "not run: its upstream {} failed",
                compilation.models.models[u].name
            ));
            failed[i] = true;
            result.elapsed = started.elapsed();
            progress(Event::Finished(&result));
            runs.push(result);
            continue;
        }
        let mut state = match TableState::read(lake, model, options).await {
            Ok(state) => state,
            Err(e) => {
                result.status = Status::Failed;
                result.error = Some(error_text(&e));
                failed[i] = true;
                result.elapsed = started.elapsed();
                progress(Event::Finished(&result));
                runs.push(result);
                continue;
            }
        };
        let windows = windows(model, &state, options, interval);
        if windows.is_empty() {
            result.status = Status::UpToDate;
            result.elapsed = started.elapsed();
            progress(Event::Finished(&result));
            runs.push(result);
            continue;
        }
        let last = windows.len() - 1;
        for (w, (start, end)) in windows.into_iter().enumerate() {
            let window_started = Instant::now();
            let mut run = result.clone();
            run.window_start = start;
            run.window_end = end;
            match run_window(
                lake,
                compilation,
                model,
                &views,
                options,
                &mut state,
                &mut run,
            )
            .await
            {
                Ok(()) if w == last && model.config.materialized != Materialized::View => {
                    match run_tests(lake, model).await {
                        Ok(failures) if failures.is_empty() => {}
                        Ok(failures) => {
                            run.status = Status::Failed;
                            run.error = Some(format!("{} data test(s) failed", failures.len()));
                            run.failed_tests = failures;
                        }
                        Err(e) => {
                            run.status = Status::Failed;
                            run.error =
                                Some(format!("a data test could not run: {}", error_text(&e)));
                        }
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    run.status = Status::Failed;
                    run.error = Some(error_text(&e));
                }
            }
            run.elapsed = window_started.elapsed();
            let stop = run.status == Status::Failed;
            failed[i] |= stop;
            progress(Event::Finished(&run));
            runs.push(run);
            if stop {
                break;
            }
        }
    }
    write_history(lake, &run_id, options.now, &runs).await?;
    // Deployed: each model whose every window succeeded (an up-to-date model keeps what its
    // last build deployed); on a run of the whole project, models whose files are gone.
    let built: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| {
            let name = compilation.models.models[i].name.to_string();
            let mine = runs.iter().filter(|r| r.model == name);
            mine.clone().any(|r| r.status == Status::Success)
                && mine.clone().all(|r| r.status == Status::Success)
        })
        .collect();
    let removed: Vec<String> = if options.select.is_empty() {
        deployed
            .keys()
            .filter(|m| compilation.models.find(m).is_none())
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    crate::plan::record_deployed(lake, compilation, &built, &removed, options.now).await?;
    Ok(runs)
}

/// An error and its causes, each once.
fn error_text(e: &LakeError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// The render context of a run.
struct RunContext<'a> {
    compilation: &'a Compilation,
    this: String,
    incremental: bool,
    window: (DateTime<Utc>, DateTime<Utc>),
}

impl Context for RunContext<'_> {
    fn model(&self, name: &str) -> Option<String> {
        let models = &self.compilation.models;
        models.find(name).map(|i| models.models[i].name.to_string())
    }
    fn this(&self) -> String {
        self.this.clone()
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn is_incremental(&self) -> bool {
        self.incremental
    }
    fn window(&self) -> (String, String) {
        (literal(self.window.0), literal(self.window.1))
    }
}

/// The window a model's last run reached, from its newest commit.
pub(crate) async fn high_water(
    lake: &Lake,
    name: &TableName,
) -> Result<Option<DateTime<Utc>>, LakeError> {
    let meta = lake.commit_metadata(name, WINDOW_KEY, 100).await?;
    Ok(meta
        .and_then(|m| {
            m.get("high_water")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// The windows a run of `model` covers, oldest first: the given backfill window; else, for a
/// model that has run, each interval window that is over since its last run (one
/// micro-batch each, so catching up after downtime keeps every window's label); on a first
/// run (or a full refresh), all of history up to the last window that is over, at once.
fn windows(
    model: &Model,
    state: &TableState,
    options: &RunOptions,
    interval: Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if let Some(w) = options.window {
        return vec![w];
    }
    let due_end = floor(options.now, interval);
    let step = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::days(1));
    let by_time = model.config.materialized == Materialized::Incremental
        && model.config.time_column.is_some();
    if !by_time {
        return vec![(due_end - step, due_end)];
    }
    let Some(mut start) = state.high_water else {
        return vec![(DateTime::<Utc>::UNIX_EPOCH, due_end)];
    };
    let mut out = Vec::new();
    while start < due_end {
        let end = (start + step).min(due_end);
        out.push((start, end));
        start = end;
    }
    out
}

/// What a run needs to know of a model's table, read once per model and kept current as its
/// windows commit.
#[derive(Debug, Clone, Copy)]
struct TableState {
    exists: bool,
    /// The end of the newest window committed (ignored by a full refresh).
    high_water: Option<DateTime<Utc>>,
}

impl TableState {
    async fn read(
        lake: &Lake,
        model: &Model,
        options: &RunOptions,
    ) -> Result<TableState, LakeError> {
        if model.config.materialized == Materialized::View {
            return Ok(TableState {
                exists: false,
                high_water: None,
            });
        }
        let exists = lake.load(&model.name).await?.is_some();
        let high_water = if exists && !options.full_refresh {
            high_water(lake, &model.name).await?
        } else {
            None
        };
        Ok(TableState { exists, high_water })
    }
}

async fn run_window(
    lake: &Lake,
    compilation: &Compilation,
    model: &Model,
    views: &HashMap<String, Query>,
    options: &RunOptions,
    state: &mut TableState,
    result: &mut ModelRun,
) -> Result<(), LakeError> {
    // The window to run is the one `result` is labelled with.
    let (start, end) = (result.window_start, result.window_end);
    let config = &model.config;
    if config.materialized == Materialized::View {
        return Ok(());
    }
    let TableState {
        exists,
        high_water: previous,
    } = *state;
    let incremental =
        config.materialized == Materialized::Incremental && exists && !options.full_refresh;
    let by_time = config.materialized == Materialized::Incremental && config.time_column.is_some();
    // Render and plan the query against the real tables.
    let ctx = RunContext {
        compilation,
        this: model.name.to_string(),
        incremental,
        window: (start, end),
    };
    let rendered = model.render(&ctx).map_err(|d| {
        LakeError::Sql(
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let statement =
        crate::project::parse_query(model, &rendered).map_err(|d| LakeError::Sql(d.to_string()))?;
    let mut statement = inline_views(statement, views);
    crate::dialect::rewrite(&mut statement);
    // The same query with its distinct counts made fast, when that applies; the query as
    // written if the faster one does not plan.
    let mut fast = statement.clone();
    let rewritten = crate::dialect::rewrite_distinct_counts(&mut fast);
    let windowed = |sql: String| match by_time {
        true => {
            let column = config.time_column.as_deref().unwrap_or_default();
            format!(
                "SELECT * FROM ({sql}) AS model WHERE \"{column}\" >= {} AND \"{column}\" < {}",
                literal(start),
                literal(end)
            )
        }
        false => sql,
    };
    let collect = |sql: String| async move {
        let Executed::Query(df) = lake.execute(&sql).await? else {
            return Err(LakeError::Sql("a model is one query".into()));
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok::<_, LakeError>((schema, df.collect().await?))
    };
    let (schema, mut batches) = match rewritten {
        true => match collect(windowed(fast.to_string())).await {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(model = %model.name, "the distinct-count rewrite failed ({e}); running the query as written");
                collect(windowed(statement.to_string())).await?
            }
        },
        false => collect(windowed(statement.to_string())).await?,
    };
    batches.retain(|b| b.num_rows() > 0);
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    result.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let high = match previous {
        Some(p) if p > end => p,
        _ => end,
    };
    let window = serde_json::json!({
        "window_start": start.to_rfc3339(),
        "window_end": end.to_rfc3339(),
        "high_water": high.to_rfc3339(),
        "file": model.file,
    });
    let write = match (config.materialized, by_time) {
        (Materialized::Incremental, true) if exists && !options.full_refresh => {
            let column = config.time_column.as_deref().unwrap_or_default();
            let ty = batches[0]
                .schema()
                .field_with_name(column)
                .map(|f| f.data_type().clone())
                .map_err(|e| LakeError::Sql(e.to_string()))?;
            let (lo, hi) = (typed_literal(start, &ty), typed_literal(end, &ty));
            lake.replace_where(
                &model.name,
                batches,
                format!("\"{column}\" >= {lo} AND \"{column}\" < {hi}"),
            )
        }
        (Materialized::Incremental, false) if incremental => {
            let keys: Vec<&str> = config.unique_key.iter().map(String::as_str).collect();
            lake.merge(&model.name, batches, &keys)
        }
        _ => lake.overwrite(&model.name, batches),
    };
    let commit = write.with_metadata(WINDOW_KEY, window).await?;
    result.version = commit.version;
    *state = TableState {
        exists: true,
        high_water: Some(high),
    };
    Ok(())
}

/// Replaces each reference to a view model with the view's query.
fn inline_views(mut statement: Statement, views: &HashMap<String, Query>) -> Statement {
    struct Inline<'a>(&'a HashMap<String, Query>);
    impl VisitorMut for Inline<'_> {
        type Break = ();
        fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = factor
            {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .filter_map(ObjectNamePart::as_ident)
                    .map(|i| {
                        if i.quote_style.is_some() {
                            i.value.clone()
                        } else {
                            i.value.to_lowercase()
                        }
                    })
                    .collect();
                let key = parts.join(".");
                let key = key.strip_prefix("lake.").unwrap_or(&key);
                if let Some(q) = self.0.get(key) {
                    let alias = alias.clone().unwrap_or_else(|| TableAlias {
                        explicit: true,
                        name: Ident::new(parts.last().cloned().unwrap_or_default()),
                        columns: vec![],
                        at: None,
                    });
                    *factor = TableFactor::Derived {
                        lateral: false,
                        subquery: Box::new(q.clone()),
                        alias: Some(alias),
                        sample: None,
                    };
                }
            }
            ControlFlow::Continue(())
        }
    }
    if !views.is_empty() {
        let _ = statement.visit(&mut Inline(views));
    }
    statement
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The queries of a model's data tests: (name, query whose rows are failures).
pub fn test_queries(model: &Model) -> Vec<(String, String)> {
    let t = model.name.to_string();
    let mut out = Vec::new();
    for (column, tests) in &model.config.tests {
        let c = quote_ident(column);
        for test in tests {
            let (name, sql) = match test {
                ColumnTest::NotNull => (
                    format!("not_null({column})"),
                    format!("SELECT * FROM {t} WHERE {c} IS NULL"),
                ),
                ColumnTest::Unique => (
                    format!("unique({column})"),
                    format!(
                        "SELECT {c}, count(*) AS occurrences FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1"
                    ),
                ),
                ColumnTest::AcceptedValues(values) => (
                    format!("accepted_values({column})"),
                    format!(
                        "SELECT {c}, count(*) AS occurrences FROM {t} WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN ({}) GROUP BY {c}",
                        values
                            .iter()
                            .map(|v| quote_literal(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                ColumnTest::Relationships { table, column: to } => (
                    format!("relationships({column} -> {table}.{to})"),
                    format!(
                        "SELECT c.{c} FROM {t} c LEFT JOIN (SELECT DISTINCT {} AS k FROM {table}) p ON c.{c} = p.k WHERE c.{c} IS NOT NULL AND p.k IS NULL",
                        quote_ident(to)
                    ),
                ),
            };
            out.push((name, sql));
        }
    }
    for (n, assertion) in model.config.assertions.iter().enumerate() {
        out.push((
            format!("assertion {}", n + 1),
            assertion.replace("{{ this }}", &t).replace("{{this}}", &t),
        ));
    }
    out
}

async fn run_tests(lake: &Lake, model: &Model) -> Result<Vec<TestFailure>, LakeError> {
    let mut failures = Vec::new();
    for (test, sql) in test_queries(model) {
        let counted = format!("SELECT count(*) AS n FROM ({sql}) AS failures");
        let n = match lake.sql(&counted).await? {
            tideway_lake::SqlOutput::Rows(r) => r
                .batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0),
            _ => 0,
        };
        if n == 0 {
            continue;
        }
        let sample = match lake
            .sql(&format!("SELECT * FROM ({sql}) AS failures LIMIT 5"))
            .await?
        {
            tideway_lake::SqlOutput::Rows(r) => pretty_format_batches(&r.batches)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        failures.push(TestFailure {
            test,
            failing_rows: n as u64,
            sample,
        });
    }
    Ok(failures)
}

async fn write_history(
    lake: &Lake,
    run_id: &str,
    now: DateTime<Utc>,
    runs: &[ModelRun],
) -> Result<(), LakeError> {
    if runs.is_empty() {
        return Ok(());
    }
    let ts = |t: DateTime<Utc>| t.timestamp_micros();
    let utc = Some(Arc::<str>::from("UTC"));
    let micros = DataType::Timestamp(TimeUnit::Microsecond, utc.clone());
    let schema = Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("materialized", DataType::Utf8, false),
        Field::new("window_start", micros.clone(), false),
        Field::new("window_end", micros.clone(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("version", DataType::Int64, true),
        Field::new("elapsed_ms", DataType::Int64, false),
        Field::new("finished_at", micros, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("failed_tests", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; runs.len()])),
        Arc::new(StringArray::from_iter_values(
            runs.iter().map(|r| r.model.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            runs.iter().map(|r| label(&r.materialized)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(runs.iter().map(|r| ts(r.window_start)))
                .with_timezone_opt(utc.clone()),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(runs.iter().map(|r| ts(r.window_end)))
                .with_timezone_opt(utc.clone()),
        ),
        Arc::new(StringArray::from_iter_values(
            runs.iter().map(|r| label(&r.status)),
        )),
        Arc::new(Int64Array::from_iter_values(
            runs.iter().map(|r| r.rows as i64),
        )),
        Arc::new(Int64Array::from_iter(
            runs.iter().map(|r| r.version.map(|v| v as i64)),
        )),
        Arc::new(Int64Array::from_iter_values(
            runs.iter().map(|r| r.elapsed.as_millis() as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(runs.iter().map(|_| ts(now)))
                .with_timezone_opt(utc),
        ),
        Arc::new(StringArray::from_iter(runs.iter().map(|r| r.error.clone()))),
        Arc::new(StringArray::from_iter(runs.iter().map(|r| {
            (!r.failed_tests.is_empty()).then(|| {
                r.failed_tests
                    .iter()
                    .map(|t| format!("{} ({} rows)", t.test, t.failing_rows))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        }))),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns)
        .expect("the history columns match their schema");
    let table: TableName = HISTORY_TABLE.parse()?;
    lake.append(&table, vec![batch]).await?;
    Ok(())
}

use crate::diagnostic::label;
