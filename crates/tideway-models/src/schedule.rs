//! Freshness and the scheduler: each model kept current on its interval.
//!
//! A model has *reached* the end of the newest window its table committed (the `high_water`
//! in the Delta commit that wrote it, so a crash between the commit and the run history does
//! not make a window run twice). A model is *ready* up to the end of its last interval window
//! that is over, and no further than every upstream model has reached: a window runs when it
//! is over **and** its upstreams succeeded for it. A view has no table; it has reached what
//! the models under it have. Lake tables no model builds (extracted, collected) gate nothing.
//!
//! A model whose last run failed (its query, its write or its data tests) has not succeeded
//! for anything past its last successful run: its readers wait, and each tick retries it, its
//! windows since that last success in one batch (so rows a failing test found are replaced
//! once the source is fixed).
//!
//! [`tick`] runs, in DAG order, every model that is ready beyond what it has reached (an
//! incremental model catches up window by window, each with its own label); `tideway serve`
//! calls it on a timer. [`freshness`] is what `tideway status` shows.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tideway_lake::{Lake, LakeError};

use crate::compile::Compilation;
use crate::header::Materialized;
use crate::run::{self, DEFAULT_INTERVAL, ModelRun, RunError, RunOptions, Status, floor};

/// One model's freshness at some instant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Freshness {
    pub model: String,
    pub materialized: Materialized,
    #[serde(serialize_with = "seconds")]
    pub interval: Duration,
    /// The end of the newest window it committed; `None`: never built (or a view, which
    /// stores nothing: it is as fresh as what it reads).
    pub reached: Option<DateTime<Utc>>,
    /// The end of its newest window that is over.
    pub due: DateTime<Utc>,
    /// Whole intervals between `reached` and `due` (0: fresh).
    pub windows_behind: i64,
    /// Its newest run failed (its readers wait for it).
    pub failed: bool,
    /// Upstream models that are behind, failed or never built, at this instant.
    pub waiting_on: Vec<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// What the run history says of a model.
#[derive(Debug, Clone, Copy, Default)]
struct History {
    /// Its newest run failed.
    failed: bool,
    /// The end of the newest window of a run that succeeded as a whole.
    last_success: Option<DateTime<Utc>>,
}

async fn history(lake: &Lake) -> Result<HashMap<String, History>, LakeError> {
    let name: tideway_lake::TableName = run::HISTORY_TABLE.parse()?;
    if lake.load(&name).await?.is_none() {
        return Ok(HashMap::new());
    }
    // A run's windows count as succeeded only if none of that run failed: data tests run
    // after a run's last window and judge the rows of all of them.
    let sql = format!(
        "SELECT model, CAST(max(last_success) AS VARCHAR) AS last_success, \
         array_agg(last_status ORDER BY finished DESC)[1] = 'failed' AS failed \
         FROM (SELECT model, run_id, max(finished_at) AS finished, \
               CASE WHEN bool_and(status <> 'failed') \
                    THEN max(CASE WHEN status = 'success' THEN window_end END) END AS last_success, \
               array_agg(status ORDER BY window_end DESC)[1] AS last_status \
               FROM {} GROUP BY model, run_id) AS runs \
         GROUP BY model",
        run::HISTORY_TABLE
    );
    let mut out = HashMap::new();
    for row in text_rows(lake, &sql).await? {
        let last_success = row
            .get("last_success")
            .and_then(|t| tideway_core::time::parse_time(t));
        out.insert(
            row.get("model").cloned().unwrap_or_default(),
            History {
                failed: row.get("failed").is_some_and(|f| f == "true"),
                last_success,
            },
        );
    }
    Ok(out)
}

/// What each model has reached, by model index (views: what their upstreams have), and
/// whether its newest run failed.
async fn reached(
    lake: &Lake,
    compilation: &Compilation,
) -> Result<(Vec<Option<DateTime<Utc>>>, Vec<History>), LakeError> {
    let n = compilation.models.len();
    let history = history(lake).await?;
    let mut out: Vec<Option<DateTime<Utc>>> = vec![None; n];
    let mut histories = vec![History::default(); n];
    for &i in &compilation.order {
        let model = &compilation.models.models[i];
        histories[i] = history
            .get(&model.name.to_string())
            .copied()
            .unwrap_or_default();
        out[i] = if model.config.materialized == Materialized::View {
            view_reached(compilation, i, &out)
        } else {
            run::high_water(lake, &model.name).await?
        };
    }
    Ok((out, histories))
}

/// Rows of a query, every value as text (empty for NULL).
async fn text_rows(lake: &Lake, sql: &str) -> Result<Vec<HashMap<String, String>>, LakeError> {
    use tideway_lake::arrow::array::Array;
    let tideway_lake::SqlOutput::Rows(rows) = lake.sql(sql).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for batch in &rows.batches {
        let schema = batch.schema();
        let mut columns = Vec::new();
        for column in batch.columns() {
            let text = tideway_lake::arrow::compute::cast(
                column,
                &tideway_lake::arrow::datatypes::DataType::Utf8,
            )
            .map_err(|e| LakeError::Sql(e.to_string()))?;
            columns.push(text);
        }
        for row in 0..batch.num_rows() {
            let mut fields = HashMap::new();
            for (c, field) in schema.fields().iter().enumerate() {
                let value = columns[c]
                    .as_any()
                    .downcast_ref::<tideway_lake::arrow::array::StringArray>()
                    .filter(|a| !a.is_null(row))
                    .map(|a| a.value(row).to_string())
                    .unwrap_or_default();
                fields.insert(field.name().clone(), value);
            }
            out.push(fields);
        }
    }
    Ok(out)
}

/// A view is as current as the models it reads; one that reads only lake tables is always
/// current.
fn view_reached(
    compilation: &Compilation,
    i: usize,
    reached: &[Option<DateTime<Utc>>],
) -> Option<DateTime<Utc>> {
    upstream_reached(compilation, i, reached).unwrap_or(Some(DateTime::<Utc>::MAX_UTC))
}

/// The earliest that model `i`'s upstream models have reached: `Some(None)` if one never ran,
/// `None` if it reads no model.
fn upstream_reached(
    compilation: &Compilation,
    i: usize,
    reached: &[Option<DateTime<Utc>>],
) -> Option<Option<DateTime<Utc>>> {
    let c = compilation.compiled[i].as_ref()?;
    c.upstream_models
        .iter()
        .map(|&u| reached[u])
        .reduce(|a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        })
}

fn interval_of(compilation: &Compilation, i: usize) -> Duration {
    compilation.models.models[i]
        .config
        .interval
        .unwrap_or(DEFAULT_INTERVAL)
}

/// Every model's freshness at `now`, in DAG order.
pub async fn freshness(
    lake: &Lake,
    compilation: &Compilation,
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>, LakeError> {
    let (reached, history) = reached(lake, compilation).await?;
    let mut out = Vec::with_capacity(compilation.order.len());
    let mut behind: Vec<bool> = vec![false; compilation.models.len()];
    for &i in &compilation.order {
        let model = &compilation.models.models[i];
        let interval = interval_of(compilation, i);
        let due = floor(now, interval);
        let step = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::days(1));
        let view = model.config.materialized == Materialized::View;
        let windows_behind = match reached[i] {
            _ if view => 0,
            Some(r) if r >= due => 0,
            Some(r) => ((due - r).num_seconds() + step.num_seconds() - 1) / step.num_seconds(),
            None => -1,
        };
        let waiting_on: Vec<String> = compilation.compiled[i]
            .iter()
            .flat_map(|c| c.upstream_models.iter())
            .filter(|&&u| behind[u])
            .map(|&u| compilation.models.models[u].name.to_string())
            .collect();
        behind[i] = windows_behind != 0 || history[i].failed || (view && !waiting_on.is_empty());
        out.push(Freshness {
            model: model.name.to_string(),
            materialized: model.config.materialized,
            interval,
            reached: reached[i].filter(|_| !view),
            due,
            windows_behind,
            failed: history[i].failed,
            waiting_on,
        });
    }
    Ok(out)
}

/// Runs every model whose next window is over and whose upstreams succeeded for it, upstreams
/// first; returns the runs (empty when everything is fresh or waiting).
pub async fn tick(
    lake: &Lake,
    compilation: &Compilation,
    now: DateTime<Utc>,
) -> Result<Vec<ModelRun>, RunError> {
    if !compilation.is_ok() {
        return Err(RunError::NotCompiled(compilation.diagnostics.len()));
    }
    // A breaking change stops the scheduler until it is fixed, as it stops `tideway run`.
    let deployed = crate::plan::read_deployed(lake).await?;
    let plan = crate::plan::plan(compilation, &deployed);
    if !plan.is_safe() {
        return Err(RunError::Breaking(plan.breaking));
    }
    let (mut reached, history) = reached(lake, compilation).await?;
    // Gating sees a model that failed as having succeeded only up to its last success.
    let mut gate: Vec<Option<DateTime<Utc>>> = reached
        .iter()
        .zip(&history)
        .map(|(r, h)| if h.failed { h.last_success.min(*r) } else { *r })
        .collect();
    let mut runs = Vec::new();
    for &i in &compilation.order {
        let model = &compilation.models.models[i];
        if model.config.materialized == Materialized::View {
            reached[i] = view_reached(compilation, i, &gate);
            gate[i] = reached[i];
            continue;
        }
        let interval = interval_of(compilation, i);
        let mut ready = floor(now, interval);
        match upstream_reached(compilation, i, &gate) {
            Some(None) => continue, // an upstream has not succeeded yet: wait for it
            Some(Some(upstream)) => ready = floor(ready.min(upstream), interval),
            None => {}
        }
        if ready <= DateTime::<Utc>::UNIX_EPOCH {
            continue;
        }
        let by_time = model.config.materialized == Materialized::Incremental
            && model.config.time_column.is_some();
        let window = match (reached[i], history[i].failed) {
            // A failed model: retry everything since its last success, in one batch, so the
            // rows a failing test found are replaced.
            (Some(_), true) if by_time => {
                let since = history[i]
                    .last_success
                    .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
                    .min(ready);
                (since < ready).then_some((since, ready))
            }
            (Some(_), true) | (None, _) => None,
            (Some(r), false) if r < ready => None,
            (Some(_), false) => continue,
        };
        let options = RunOptions {
            select: vec![model.name.to_string()],
            now: ready,
            window,
            plan_checked: true,
            ..RunOptions::default()
        };
        let model_runs = run::run(lake, compilation, &options, |_| {}).await?;
        let ok = model_runs.iter().all(|r| r.status == Status::Success);
        reached[i] = run::high_water(lake, &model.name).await?;
        // After a failure, it has succeeded up to where it had before.
        gate[i] = if ok {
            reached[i]
        } else {
            history[i]
                .last_success
                .map(|g| reached[i].map_or(g, |r| g.min(r)))
        };
        runs.extend(model_runs);
    }
    Ok(runs)
}

/// Recent failed runs, newest first: `model`, `window_start`, `window_end`, `finished_at`,
/// `error`.
pub async fn recent_failures(
    lake: &Lake,
    limit: usize,
) -> Result<Vec<HashMap<String, String>>, LakeError> {
    let name: tideway_lake::TableName = run::HISTORY_TABLE.parse()?;
    if lake.load(&name).await?.is_none() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT model, window_start, window_end, finished_at, coalesce(error, '') AS error \
         FROM {} WHERE status = 'failed' ORDER BY finished_at DESC LIMIT {limit}",
        run::HISTORY_TABLE
    );
    text_rows(lake, &sql).await
}
