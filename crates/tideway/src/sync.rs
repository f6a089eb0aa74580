//! `tideway sync plan|run|status|replay` and `tideway transform test`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tideway_activate::{Project as Activation, RunOptions, RunReport};
use tideway_lake::{Lake, SqlOutput};

use crate::models::CompileFormat;
use crate::project::Project;

#[derive(Debug, clap::Subcommand)]
pub enum SyncCommand {
    /// A dry run: what a run would send (counts, sample payloads after the transformations,
    /// the calls it makes and how long they take at the destination's rate budget).
    Plan {
        name: String,
        #[arg(long, short = 'f', value_enum, default_value_t = CompileFormat::Text)]
        format: CompileFormat,
    },
    /// Send the new and changed rows (every sync, or the ones named).
    Run {
        names: Vec<String>,
        #[arg(long, short = 'f', value_enum, default_value_t = CompileFormat::Text)]
        format: CompileFormat,
        /// Print the last requests made to the destination (secrets redacted).
        #[arg(long)]
        inspect: bool,
    },
    /// Each sync's last run and how many rows the destination holds, is refusing, or
    /// dead-lettered.
    Status {
        #[arg(long, short = 'f', value_enum, default_value_t = CompileFormat::Text)]
        format: CompileFormat,
    },
    /// Send the dead-lettered rows of a sync again (with their current values).
    Replay { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TransformCommand {
    /// Run a transformation on one event and print what comes out.
    Test {
        /// transformations/NAME.js (or NAME).
        file: String,
        /// The event (JSON).
        #[arg(long)]
        event: String,
        /// Metadata given to the transformation (JSON object).
        #[arg(long, default_value = "{}")]
        metadata: String,
    },
}

fn activation(project: &Project) -> Result<Activation> {
    Ok(Activation::load(&project.dir, &|v| std::env::var(v).ok())?)
}

pub async fn command(project: &Project, command: SyncCommand) -> Result<()> {
    let lake = project.lake().await?;
    if let SyncCommand::Status { format } = command {
        // The lake alone: no destination or secret is needed to say what happened.
        return status(&lake, format).await;
    }
    let activation = activation(project)?;
    match command {
        SyncCommand::Plan { name, format } => {
            let options = RunOptions {
                dry_run: true,
                ..Default::default()
            };
            let report = run_one(&activation, &lake, &name, &options, false).await?;
            print_report(&report, format)
        }
        SyncCommand::Run {
            names,
            format,
            inspect,
        } => {
            let names = if names.is_empty() {
                activation.syncs.iter().map(|s| s.name.clone()).collect()
            } else {
                names
            };
            if names.is_empty() {
                bail!("there is no sync: add a file to syncs/ (see `tideway init`)");
            }
            let mut failed = 0;
            for name in names {
                let job = activation.job(&name)?;
                let report = run_job(&job, &lake, &RunOptions::default(), true).await?;
                failed += report.counts.rejected + report.counts.failed + report.counts.dead;
                print_report(&report, format)?;
                if inspect {
                    for e in job.destination().inspect() {
                        println!(
                            "  {} {} -> {} ({} ms)\n    > {}\n    < {}",
                            e.method, e.url, e.status, e.millis, e.request, e.response
                        );
                    }
                }
            }
            if failed > 0 && format == CompileFormat::Text {
                eprintln!(
                    "{failed} rows were not accepted; they are retried on the next run (see `tideway sync status`)"
                );
            }
            Ok(())
        }
        SyncCommand::Status { format } => status(&lake, format).await,
        SyncCommand::Replay { name } => {
            let job = activation.job(&name)?;
            let n = tideway_activate::run::replay(&lake, &job.config.name).await?;
            println!("{n} dead-lettered rows of `{name}` will be sent again");
            let report = run_one(&activation, &lake, &name, &RunOptions::default(), true).await?;
            print_report(&report, CompileFormat::Text)
        }
    }
}

async fn run_one(
    activation: &Activation,
    lake: &Lake,
    name: &str,
    options: &RunOptions,
    show_progress: bool,
) -> Result<RunReport> {
    run_job(&activation.job(name)?, lake, options, show_progress).await
}

async fn run_job(
    job: &tideway_activate::SyncJob,
    lake: &Lake,
    options: &RunOptions,
    show_progress: bool,
) -> Result<RunReport> {
    let name = job.config.name.clone();
    let bar = if show_progress {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .expect("the template is valid"),
        );
        bar.set_prefix(name.clone());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let b = Arc::new(bar.clone());
    let report = job
        .run(lake, options, &move |p| {
            b.set_message(format!(
                "{} changed rows read, {} events delivered",
                p.rows, p.delivered
            ))
        })
        .await
        .with_context(|| format!("sync `{name}`"));
    bar.finish_and_clear();
    report
}

fn print_report(report: &RunReport, format: CompileFormat) -> Result<()> {
    if format == CompileFormat::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let c = &report.counts;
    let verb = if report.dry_run { "would send" } else { "sent" };
    println!(
        "sync {} (run {}): {} -> {}",
        report.sync, report.run, report.source, report.destination
    );
    println!(
        "  rows: {} added, {} changed, {} removed, {} invalid",
        c.added, c.changed, c.removed, c.invalid
    );
    if report.dry_run {
        let eta = report.eta_seconds.map_or("no rate limit".to_string(), |s| {
            format!("about {s:.1} s at the destination's rate budget")
        });
        println!(
            "  {verb}: {} events in {} calls ({eta})",
            report.events, report.calls
        );
        for (i, s) in report.samples.iter().enumerate() {
            println!("  sample {}: {}", i + 1, s);
        }
    } else {
        println!(
            "  delivered {}, dropped by transformations {}, skipped (backfill) {}, refused {}, failed {}, dead-lettered {} ({} ms)",
            c.delivered, c.filtered, c.skipped, c.rejected, c.failed, c.dead, report.elapsed_ms
        );
    }
    for (key, message) in &report.problems {
        println!("  ! {key}: {message}");
    }
    Ok(())
}

async fn status(lake: &Lake, format: CompileFormat) -> Result<()> {
    let runs = lake
        .load(&tideway_activate::state::table(
            tideway_activate::state::RUNS,
        ))
        .await?;
    if runs.is_none() {
        println!("no sync has run yet");
        return Ok(());
    }
    let sql = "WITH last AS (SELECT sync, max(run) AS run FROM _tideway.sync_runs GROUP BY sync) \
         SELECT r.sync, r.run, r.finished_at, r.added, r.changed, r.removed, r.delivered, r.rejected, r.failed, r.dead, r.error \
         FROM _tideway.sync_runs r JOIN last USING (sync, run) ORDER BY r.sync";
    let SqlOutput::Rows(rows) = lake.sql(sql).await? else {
        bail!("the status query returned no rows");
    };
    let state = if lake
        .load(&tideway_activate::state::table(
            tideway_activate::state::STATE,
        ))
        .await?
        .is_some()
    {
        let sql = "SELECT sync, status, count(*) AS n FROM _tideway.sync_state GROUP BY 1, 2 ORDER BY 1, 2";
        match lake.sql(sql).await? {
            SqlOutput::Rows(r) => Some(r),
            _ => None,
        }
    } else {
        None
    };
    match format {
        CompileFormat::Json => {
            let mut out = Vec::new();
            let mut w = tideway_lake::arrow::json::ArrayWriter::new(&mut out);
            for b in &rows.batches {
                w.write(b)?;
            }
            w.finish()?;
            println!("{}", String::from_utf8_lossy(&out));
        }
        CompileFormat::Text => {
            crate::output::print_rows(&rows)?;
            if let Some(state) = state {
                println!("rows held per sync and status (accepted = the destination has it):");
                crate::output::print_rows(&state)?;
            }
        }
    }
    Ok(())
}

pub fn transform_command(project: &Project, command: TransformCommand) -> Result<()> {
    let TransformCommand::Test {
        file,
        event,
        metadata,
    } = command;
    let scripts = tideway_activate::scripts(&project.dir)?;
    let stem = std::path::Path::new(&file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or(file.clone());
    let Some(main) = scripts.iter().find(|s| s.name == stem) else {
        let names: Vec<String> = scripts.iter().map(|s| s.name.clone()).collect();
        bail!(
            "no transformation `{stem}` in transformations/; files there: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let libraries: Vec<_> = scripts.iter().filter(|s| s.name != stem).cloned().collect();
    let event: serde_json::Value = serde_json::from_str(&event).context("--event is not JSON")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("--metadata is not JSON")?;
    let mut t =
        tideway_activate::transform::Transformation::load(main, &libraries, Default::default())?;
    let mut out = t.run(&[(event, metadata)]);
    let out = out.remove(0)?;
    for line in &out.logs {
        eprintln!("log: {line}");
    }
    match out.events.len() {
        0 => println!("(dropped: the transformation returned nothing)"),
        1 => println!("{}", serde_json::to_string_pretty(&out.events[0])?),
        _ => println!("{}", serde_json::to_string_pretty(&out.events)?),
    }
    Ok(())
}

/// The syncs' scheduler inside `tideway serve`: every `every`, re-reads the sync files and runs
/// each sync whose schedule is due. Problems are logged; the next tick tries again.
pub async fn schedule_loop(project: Project, every: std::time::Duration) {
    let lake = match project.lake().await {
        Ok(lake) => lake,
        Err(e) => {
            tracing::error!("sync scheduler: cannot open the lake: {e:#}");
            return;
        }
    };
    loop {
        match Activation::load(&project.dir, &|v| std::env::var(v).ok()) {
            Ok(activation) => {
                for (name, result) in
                    tideway_activate::schedule::tick(&lake, &activation, chrono::Utc::now()).await
                {
                    match result {
                        Ok(r) => tracing::info!(
                            sync = %name, run = r.run, added = r.counts.added, changed = r.counts.changed,
                            removed = r.counts.removed, delivered = r.counts.delivered,
                            refused = r.counts.rejected + r.counts.dead, failed = r.counts.failed,
                            "sync ran"
                        ),
                        Err(e) => tracing::warn!(sync = %name, "sync failed: {e:#}"),
                    }
                }
            }
            Err(e) => tracing::warn!("sync scheduler: {e:#}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// What `tideway compile` says about the sync files: their own problems (unknown destination,
/// transformation, bad values), columns the source lacks (a model's inferred schema, or a lake
/// table's), and a key that is not unique in the data already in the lake.
pub async fn check_syncs(
    project: &Project,
    compiled: &tideway_models::Compilation,
) -> Result<Vec<tideway_core::config::Diagnostic>> {
    if !project.dir.join("syncs").is_dir() {
        return Ok(Vec::new());
    }
    // Compile checks shapes, not credentials: a secret not set in this shell is no error here
    // (`tideway sync run` still needs it).
    let env = |v: &str| Some(std::env::var(v).unwrap_or_else(|_| format!("unset-{v}")));
    let activation = match Activation::load(&project.dir, &env) {
        Ok(a) => a,
        Err(tideway_activate::ActivateError::Config(e)) => return Ok(e.0),
        Err(e) => return Err(e.into()),
    };
    let lake = project.lake().await?;
    let mut out = Vec::new();
    for sync in &activation.syncs {
        let name: tideway_lake::TableName = match sync.source.parse() {
            Ok(n) => n,
            Err(_) => continue,
        };
        let in_lake = lake.load(&name).await?.is_some();
        let columns: Option<Vec<String>> = match compiled.get(&sync.source) {
            Some(c) => Some(c.schema.fields().iter().map(|f| f.name().clone()).collect()),
            None if in_lake => Some(
                lake.schema(&name)
                    .await?
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            ),
            None => None,
        };
        let Some(columns) = columns else {
            out.push(sync.source_diagnostic(format!(
                "`{}` is neither a model in models/ nor a table in the lake",
                sync.source
            )));
            continue;
        };
        let problems = sync.check_columns(&columns);
        let key_ok = sync.key.iter().all(|k| columns.contains(k));
        out.extend(problems);
        if in_lake && key_ok {
            let sql = tideway_activate::diff::duplicates_sql(&sync.source, &sync.key, 1);
            if let SqlOutput::Rows(rows) = lake.sql(&sql).await?
                && let Some(batch) = rows.batches.iter().find(|b| b.num_rows() > 0)
            {
                use tideway_lake::arrow::array::AsArray;
                use tideway_lake::arrow::compute::cast;
                use tideway_lake::arrow::datatypes::{DataType, Int64Type};
                let key = cast(batch.column(0), &DataType::Utf8)?;
                let key = key.as_string::<i32>().value(0).to_string();
                let count = |i: usize| -> Result<i64> {
                    Ok(cast(batch.column(i), &DataType::Int64)?
                        .as_primitive::<Int64Type>()
                        .value(0))
                };
                let (rows_of_key, keys) = (count(1)?, count(2)?);
                let others = match keys - 1 {
                    0 => String::new(),
                    1 => ", and so is 1 other key value".to_string(),
                    n => format!(", and so are {n} other key values"),
                };
                out.push(sync.key_diagnostic(format!(
                    "the key ({}) is not unique in `{}`: `{}` is held by several rows ({rows_of_key}){others}; a sync sends one event per key, pick the column(s) that identify a row",
                    sync.key.join(", "),
                    sync.source,
                    tideway_activate::diff::display_key(&key),
                )));
            }
        }
    }
    Ok(out)
}

/// Starts the project's live connections (`[connections.NAME]`) on the collector's event log,
/// one task each. Connections no longer in `tideway.toml` are unregistered from the log, so
/// they stop holding its segments.
pub async fn start_connections(
    project: &Project,
    log: Arc<dyn tideway_collect::log::EventLog>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(
    Vec<tokio::task::JoinHandle<()>>,
    Vec<Arc<tideway_activate::forward::Connection>>,
)> {
    use tideway_activate::forward::{Connection, ForwardOptions};
    let activation = Activation::load(&project.dir, env)?;
    let wanted: Vec<String> = activation
        .connections
        .iter()
        .map(|c| Connection::consumer(&c.name))
        .collect();
    for (consumer, _) in log.stats().consumers {
        if consumer.starts_with("forward:") && !wanted.contains(&consumer) {
            log.forget(&consumer).await?;
            tracing::info!(%consumer, "live connection removed from tideway.toml: unregistered from the event log");
        }
    }
    let mut tasks = Vec::new();
    let mut running = Vec::new();
    if activation.connections.is_empty() {
        return Ok((tasks, running));
    }
    let lake = project.lake().await?;
    for config in &activation.connections {
        let name = config.name.clone();
        let destination =
            activation.destination(&config.destination, &format!("live connection `{name}`"))?;
        let connection = Connection::open(
            config.clone(),
            destination,
            &activation.scripts,
            log.clone(),
            lake.clone(),
            ForwardOptions::default(),
        )
        .await
        .with_context(|| format!("cannot start live connection `{name}`"))?;
        eprintln!(
            "forwarding source `{}` to destination `{}` (connection `{name}`, from offset {})",
            config.source,
            config.destination,
            connection.position()
        );
        let connection = Arc::new(connection);
        running.push(connection.clone());
        tasks.push(tokio::spawn(async move {
            connection.run(std::future::pending()).await;
        }));
    }
    Ok((tasks, running))
}
