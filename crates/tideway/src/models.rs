//! `tideway compile`: the models checked like a compiler would.

use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;
use tideway_models::{Compilation, Models, compile};

use crate::project::Project;

/// How `tideway compile` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompileFormat {
    /// Compiler-style errors and a summary (or one model's schema).
    Text,
    /// One JSON document: every model's schema and upstreams, every diagnostic.
    Json,
}

/// How `tideway lineage` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineageFormat {
    /// An indented tree per column.
    Text,
    /// `{root, direction, start, columns: [{column, kind}], edges: [{from, to}]}`.
    Json,
    /// Graphviz (`| dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
}

pub async fn lineage_command(
    project: &Project,
    target: &str,
    direction: tideway_models::lineage::Direction,
    format: LineageFormat,
) -> Result<()> {
    let (compiled, _) = compile_project(project).await?;
    for d in &compiled.diagnostics {
        eprintln!("{d}\n");
    }
    if !compiled.is_ok() {
        eprintln!(
            "warning: {} model error(s): lineage covers only the models that compiled",
            compiled.diagnostics.len()
        );
    }
    let graph = tideway_models::lineage::Graph::new(&compiled);
    // A model's file name stands for its table (`stg_invoices`, `stg_invoices.amount`).
    let table_of = |name: &str| {
        compiled
            .models
            .find(name)
            .map(|i| compiled.models.models[i].name.to_string())
    };
    let target = match (table_of(target), target.split_once('.')) {
        (Some(table), _) => table,
        (None, Some((stem, column))) if !column.contains('.') && !stem.contains('.') => {
            match table_of(stem) {
                Some(table) => format!("{table}.{column}"),
                None => target.to_string(),
            }
        }
        _ => target.to_string(),
    };
    let start = graph.resolve(&target).map_err(anyhow::Error::msg)?;
    let trace = graph.trace(&target, start, direction);
    match format {
        LineageFormat::Text => print!("{}", trace.to_text()),
        LineageFormat::Json => println!("{}", serde_json::to_string_pretty(&trace)?),
        LineageFormat::Dot => print!("{}", trace.to_dot()),
        LineageFormat::Mermaid => print!("{}", trace.to_mermaid()),
    }
    Ok(())
}

/// `tideway compile --watch`: a compile, then a re-check each time a model file changes,
/// until interrupted.
pub async fn watch_command(project: &Project) -> Result<()> {
    let lake = project.lake().await?;
    let mut watcher = tideway_models::watch::Watcher::new(&project.dir);
    eprintln!(
        "watching {} for changes (Ctrl-C stops)",
        project.dir.join("models").display()
    );
    let mut first = true;
    loop {
        let started = Instant::now();
        let changes = watcher.scan();
        if first || !changes.is_empty() {
            let compiled = watcher.check(Some(&lake)).await?;
            let elapsed = started.elapsed();
            for d in &compiled.diagnostics {
                eprintln!("{d}\n");
            }
            let what = if first {
                "compiled".to_string()
            } else {
                format!("{}: re-checked", changes.describe())
            };
            eprintln!(
                "{what} {} model(s) in {:.1} ms ({} planned again): {} error(s)",
                compiled.models.len(),
                elapsed.as_secs_f64() * 1000.0,
                watcher.planned(),
                compiled.diagnostics.len()
            );
            first = false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The models' scheduler inside `tideway serve`: every `every`, re-checks the model files
/// (only what changed) and runs each model whose window is over and whose upstreams
/// succeeded for it. Problems are logged; the next tick tries again.
pub async fn schedule_loop(project: Project, every: std::time::Duration) {
    let lake = match project.lake().await {
        Ok(lake) => lake,
        Err(e) => {
            tracing::error!("models scheduler: cannot open the lake: {e:#}");
            return;
        }
    };
    let mut watcher = tideway_models::watch::Watcher::new(&project.dir);
    loop {
        watcher.scan();
        match watcher.check(Some(&lake)).await {
            Ok(compiled) if compiled.models.is_empty() => {}
            Ok(compiled) if !compiled.is_ok() => tracing::warn!(
                "models scheduler: {} compile error(s); `tideway compile` shows them; nothing runs until they are fixed",
                compiled.diagnostics.len()
            ),
            Ok(compiled) => {
                match tideway_models::schedule::tick(&lake, &compiled, chrono::Utc::now()).await {
                    Ok(runs) => {
                        for r in &runs {
                            match r.status {
                                tideway_models::run::Status::Failed => tracing::warn!(
                                    model = %r.model, window_start = %r.window_start, window_end = %r.window_end,
                                    "model run failed: {}", r.error.clone().unwrap_or_default()
                                ),
                                _ => tracing::info!(
                                    model = %r.model, window_start = %r.window_start, window_end = %r.window_end,
                                    rows = r.rows, "model window ran"
                                ),
                            }
                        }
                    }
                    Err(e) => tracing::warn!("models scheduler: {e}"),
                }
            }
            Err(e) => tracing::warn!("models scheduler: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// `1h`, `15m`, `1d`, `90s`.
fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `tideway status`: each model's freshness, and the recent failures.
pub async fn status_command(project: &Project, format: CompileFormat) -> Result<()> {
    let lake = project.lake().await?;
    let (compiled, _) = compile_in(project, &lake).await?;
    for d in &compiled.diagnostics {
        eprintln!("{d}\n");
    }
    let now = chrono::Utc::now();
    let fresh = tideway_models::schedule::freshness(&lake, &compiled, now).await?;
    let failures = tideway_models::schedule::recent_failures(&lake, 10).await?;
    if format == CompileFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "now": now,
                "models": fresh,
                "recent_failures": failures,
                "diagnostics": compiled.diagnostics,
            }))?
        );
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "model",
        "kind",
        "every",
        "fresh up to",
        "state",
        "waiting on",
    ]);
    for f in &fresh {
        let view = f.materialized == tideway_models::Materialized::View;
        let state = match (f.failed, f.windows_behind) {
            (true, _) => "failed".to_string(),
            _ if view && f.waiting_on.is_empty() => "view: current".to_string(),
            _ if view => "view: waiting".to_string(),
            (_, -1) => "never built".to_string(),
            (_, 0) => "fresh".to_string(),
            (_, n) => format!(
                "{n} window(s) behind ({})",
                short_duration(std::time::Duration::from_secs(
                    (f.due - f.reached.unwrap_or(f.due)).num_seconds().max(0) as u64
                ))
            ),
        };
        table.add_row([
            f.model.clone(),
            tideway_models::diagnostic::label(&f.materialized),
            short_duration(f.interval),
            f.reached
                .map(|r| r.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into()),
            state,
            f.waiting_on.join(", "),
        ]);
    }
    println!("{table}");
    if failures.is_empty() {
        println!("no failed runs");
    } else {
        println!("recent failures:");
        for f in &failures {
            println!(
                "  {} [{} .. {}) at {}: {}",
                f["model"], f["window_start"], f["window_end"], f["finished_at"], f["error"]
            );
        }
    }
    Ok(())
}

/// `tideway plan`: what the models in the project change against what is deployed.
pub async fn plan_command(project: &Project, format: CompileFormat) -> Result<()> {
    use tideway_models::plan::{ModelStatus, plan, read_deployed};
    let lake = project.lake().await?;
    // The deployed state is read while the models compile.
    let reading = tokio::spawn({
        let lake = lake.clone();
        async move { read_deployed(&lake).await }
    });
    let (compiled, _) = compile_in(project, &lake).await?;
    let started = Instant::now();
    let deployed = reading.await??;
    let plan = plan(&compiled, &deployed);
    let elapsed = started.elapsed();
    let refused = !plan.is_safe() || !compiled.is_ok();
    match format {
        CompileFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": !refused,
                "plan": plan,
                "breaking": plan.breaking,
                "diagnostics": compiled.diagnostics,
            }))?
        ),
        CompileFormat::Text => {
            match plan.deployed_at {
                Some(at) => println!(
                    "plan against the models deployed (last at {}):",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => println!("plan: nothing is deployed yet; every model is new"),
            }
            for m in &plan.models {
                let (mark, what) = match m.status {
                    ModelStatus::Added => ("+", "added".to_string()),
                    ModelStatus::Removed => ("-", "removed".to_string()),
                    ModelStatus::Modified => ("~", "modified".to_string()),
                    ModelStatus::Recompute if m.because.is_empty() => {
                        ("↻", "recompute: its columns change".to_string())
                    }
                    ModelStatus::Recompute => (
                        "↻",
                        format!("recompute: upstream {} changed", m.because.join(", ")),
                    ),
                };
                println!("  {mark} {} ({what})", m.model);
                for c in &m.columns {
                    let read_by: Vec<String> = plan
                        .impacts
                        .iter()
                        .filter(|i| i.column.table == m.model && i.change == *c)
                        .map(|i| {
                            format!(
                                "{} {}:{}{}",
                                i.reader,
                                i.reader_file,
                                i.line,
                                if i.reader_changed {
                                    " (changed too)"
                                } else {
                                    ""
                                }
                            )
                        })
                        .collect();
                    let note = match (c.breaks_readers(), read_by.is_empty()) {
                        (true, false) => format!("; read by {}", read_by.join(", ")),
                        (true, true) => "; no downstream model reads it".to_string(),
                        _ => String::new(),
                    };
                    println!("      {}: {}{note}", c.column(), c.describe());
                }
            }
            if plan.models.is_empty() {
                println!("  no changes");
            }
            for d in plan.breaking.iter().chain(&compiled.diagnostics) {
                eprintln!("\n{d}");
            }
            eprintln!(
                "\n{} added, {} modified, {} removed, {} to recompute; {} breaking, {} compile error(s) ({} ms){}",
                plan.count(ModelStatus::Added),
                plan.count(ModelStatus::Modified),
                plan.count(ModelStatus::Removed),
                plan.count(ModelStatus::Recompute),
                plan.breaking.len(),
                compiled.diagnostics.len(),
                elapsed.as_millis(),
                if refused { ": refused" } else { "" }
            );
        }
    }
    if refused {
        bail!(
            "the plan is refused: {} breaking change(s), {} compile error(s)",
            plan.breaking.len(),
            compiled.diagnostics.len()
        );
    }
    Ok(())
}

/// Loads and compiles the project's models against its lake.
pub async fn compile_project(project: &Project) -> Result<(Compilation, std::time::Duration)> {
    let started = Instant::now();
    let lake = project.lake().await?;
    let (compiled, _) = compile_in(project, &lake).await?;
    Ok((compiled, started.elapsed()))
}

/// Loads and compiles the project's models against `lake` (already open).
pub async fn compile_in(
    project: &Project,
    lake: &tideway_lake::Lake,
) -> Result<(Compilation, std::time::Duration)> {
    let started = Instant::now();
    let (models, errors) = Models::load(&project.dir);
    let read = started.elapsed();
    let compiled = compile::compile(models, errors, Some(lake)).await?;
    tracing::debug!(read_ms = read.as_millis() as u64, "read the model files");
    Ok((compiled, started.elapsed()))
}

pub async fn compile_command(
    project: &Project,
    model: Option<&str>,
    format: CompileFormat,
) -> Result<()> {
    let (compiled, elapsed) = compile_project(project).await?;
    let sync_problems = crate::sync::check_syncs(project, &compiled).await?;
    let unify_problems = crate::unify::check(project);
    if let Some(name) = model
        && compiled.models.find(name).is_none()
    {
        let names = compiled.models.names();
        let hint = tideway_lake::closest(name, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        bail!(
            "no model named `{name}`{hint} ({} models in models/)",
            names.len()
        );
    }
    match format {
        CompileFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&compiled, elapsed))?
        ),
        CompileFormat::Text => {
            for d in &compiled.diagnostics {
                eprintln!("{d}\n");
            }
            for (i, because) in &compiled.not_checked {
                eprintln!(
                    "note: {} was not checked: its upstream {} has errors",
                    compiled.models.models[*i].name, compiled.models.models[*because].name
                );
            }
            if let Some(c) = model.and_then(|m| compiled.get(m)) {
                let m = &compiled.models.models[c.index];
                println!(
                    "{} ({}, {:?})",
                    m.name,
                    m.file.display(),
                    m.config.materialized
                );
                let mut reads: Vec<String> = c
                    .upstream_models
                    .iter()
                    .map(|&u| compiled.models.models[u].name.to_string())
                    .collect();
                reads.extend(c.upstream_sources.iter().cloned());
                println!(
                    "reads: {}",
                    if reads.is_empty() {
                        "-".into()
                    } else {
                        reads.join(", ")
                    }
                );
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                table.set_header(["column", "type", "nullable"]);
                for f in c.schema.fields() {
                    table.add_row([
                        f.name().clone(),
                        f.data_type().to_string(),
                        if f.is_nullable() { "yes" } else { "no" }.to_string(),
                    ]);
                }
                println!("{table}");
            }
            let checked = compiled.compiled.iter().flatten().count();
            eprintln!(
                "compiled {} of {} model(s) in {} ms: {} error(s){}",
                checked,
                compiled.models.len(),
                elapsed.as_millis(),
                compiled.diagnostics.len(),
                if compiled.not_checked.is_empty() {
                    String::new()
                } else {
                    format!(", {} not checked", compiled.not_checked.len())
                }
            );
        }
    }
    for d in &sync_problems {
        eprintln!("error[sync]: {d}\n");
    }
    if !compiled.is_ok() {
        bail!(
            "the models have {} error(s); nothing was run",
            compiled.diagnostics.len()
        );
    }
    for d in &unify_problems {
        eprintln!("error[unify]: {d}\n");
    }
    if !sync_problems.is_empty() {
        bail!("the sync files have {} error(s)", sync_problems.len());
    }
    if !unify_problems.is_empty() {
        bail!("the [unify] section has {} error(s)", unify_problems.len());
    }
    Ok(())
}

fn to_json(compiled: &Compilation, elapsed: std::time::Duration) -> serde_json::Value {
    let models: Vec<serde_json::Value> = compiled
        .order
        .iter()
        .filter_map(|&i| compiled.compiled[i].as_ref())
        .map(|c| {
            let m = &compiled.models.models[c.index];
            json!({
                "name": m.name.to_string(),
                "file": m.file,
                "config": m.config,
                "columns": c.schema.fields().iter().map(|f| json!({
                    "name": f.name(),
                    "type": f.data_type().to_string(),
                    "nullable": f.is_nullable(),
                })).collect::<Vec<_>>(),
                "reads_models": c.upstream_models.iter().map(|&u| compiled.models.models[u].name.to_string()).collect::<Vec<_>>(),
                "reads_tables": c.upstream_sources,
            })
        })
        .collect();
    json!({
        "ok": compiled.is_ok(),
        "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
        "models": models,
        "diagnostics": compiled.diagnostics,
        "not_checked": compiled.not_checked.iter().map(|(i, u)| json!({
            "model": compiled.models.models[*i].name.to_string(),
            "because": compiled.models.models[*u].name.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// Parses a window bound: an RFC 3339 / ISO-8601 instant or a date (midnight UTC).
fn parse_bound(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Some(t) = tideway_core::time::parse_time(text) {
        return Ok(t);
    }
    bail!("--{flag} `{text}` is not a date or an instant; write 2025-06-01 or 2025-06-01T12:00:00Z")
}

/// `tideway run`: compile, then run the selected models and print a summary.
pub async fn run_command(
    project: &Project,
    select: Vec<String>,
    full_refresh: bool,
    start: Option<String>,
    end: Option<String>,
) -> Result<()> {
    let window = match (start, end) {
        (Some(s), Some(e)) => Some((parse_bound("start", &s)?, parse_bound("end", &e)?)),
        (None, None) => None,
        _ => bail!("a backfill needs both --start and --end"),
    };
    let lake = project.lake().await?;
    let (compiled, elapsed) = compile_in(project, &lake).await?;
    if !compiled.is_ok() {
        for d in &compiled.diagnostics {
            eprintln!("{d}\n");
        }
        bail!(
            "the models have {} error(s); nothing was run",
            compiled.diagnostics.len()
        );
    }
    let options = tideway_models::run::RunOptions {
        select,
        full_refresh,
        window,
        now: chrono::Utc::now(),
        plan_checked: false,
    };
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
            .expect("a valid template"),
    );
    let runs = tideway_models::run::run(&lake, &compiled, &options, |event| match event {
        tideway_models::run::Event::Started { model, index, of } => {
            bar.set_length(of as u64);
            bar.set_position(index as u64);
            bar.set_message(format!("running {model}"));
        }
        tideway_models::run::Event::Finished(_) => bar.inc(1),
    })
    .await;
    let runs = match runs {
        Err(tideway_models::run::RunError::Breaking(breaking)) => {
            bar.finish_and_clear();
            for d in &breaking {
                eprintln!("{d}\n");
            }
            bail!(
                "the change breaks {} read(s) by downstream models that do not change with it; nothing was run (`tideway plan` shows the whole plan)",
                breaking.len()
            );
        }
        runs => runs?,
    };
    bar.finish_and_clear();
    print_runs(&runs);
    let failed = runs
        .iter()
        .filter(|r| r.status == tideway_models::run::Status::Failed)
        .count();
    let skipped = runs
        .iter()
        .filter(|r| r.status == tideway_models::run::Status::Skipped)
        .count();
    eprintln!(
        "ran {} model(s) in {:.1} s (compile {} ms): {} failed, {} skipped; history in {}",
        runs.len(),
        started.elapsed().as_secs_f64(),
        elapsed.as_millis(),
        failed,
        skipped,
        tideway_models::run::HISTORY_TABLE
    );
    if failed > 0 {
        bail!("{failed} model(s) failed");
    }
    Ok(())
}

pub fn print_runs(runs: &[tideway_models::run::ModelRun]) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["model", "materialized", "status", "window", "rows", "time"]);
    for r in runs {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let materialized = format!("{:?}", r.materialized).to_lowercase();
        table.add_row([
            r.model.clone(),
            materialized,
            status,
            format!(
                "[{}, {})",
                r.window_start.format("%Y-%m-%d %H:%M"),
                r.window_end.format("%Y-%m-%d %H:%M")
            ),
            r.rows.to_string(),
            format!("{} ms", r.elapsed.as_millis()),
        ]);
    }
    println!("{table}");
    for r in runs {
        if let Some(e) = &r.error {
            eprintln!("{}: {e}", r.model);
        }
        for t in &r.failed_tests {
            eprintln!(
                "  test {} failed on {} row(s):\n{}",
                t.test, t.failing_rows, t.sample
            );
        }
    }
}
