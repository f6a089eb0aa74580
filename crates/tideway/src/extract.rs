//! `tideway extract` and `tideway sources check`: running the sources of `sources/*.toml`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use tideway_extract::{Extractor, RunOptions, RunProgress, RunReport, SourceConfig};
use tideway_lake::Lake;

use crate::output::human_bytes;
use crate::project::Project;

/// The folder of source files in a project.
pub const SOURCES_DIR: &str = "sources";

/// The project's sources, or only `name`.
pub fn sources(project: &Project, name: Option<&str>) -> Result<Vec<SourceConfig>> {
    let dir = project.dir.join(SOURCES_DIR);
    let all = tideway_extract::config::load_dir(&dir, &|v| std::env::var(v).ok())?;
    if all.is_empty() {
        bail!(
            "no sources in {}: add a file such as `{SOURCES_DIR}/kustomer.toml` (`type = \"kustomer\"`, `api_key = \"${{KUSTOMER_API_KEY}}\"`)",
            dir.display()
        );
    }
    match name {
        None => Ok(all),
        Some(name) => {
            let known: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
            match all.into_iter().find(|s| s.name == name) {
                Some(s) => Ok(vec![s]),
                None => bail!(tideway_extract::ExtractError::UnknownSource {
                    name: name.to_string(),
                    dir: dir.display().to_string(),
                    known: known.join(", "),
                }),
            }
        }
    }
}

/// Runs each source with a live progress line and prints a summary.
pub async fn run(
    lake: &Lake,
    sources: Vec<SourceConfig>,
    options: RunOptions,
) -> Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    for source in sources {
        let name = source.name.clone();
        let extractor = Extractor::new(lake.clone(), source, options.clone())?;
        let bar = progress_bar(&name, extractor.progress());
        let result = extractor.run().await;
        bar.finish_and_clear();
        let report = result?;
        print_report(&report);
        reports.push(report);
    }
    Ok(reports)
}

fn progress_bar(source: &str, progress: Arc<RunProgress>) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix}: {msg} {elapsed}")
            .expect("a valid template"),
    );
    bar.set_prefix(source.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let ticker = bar.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        while !ticker.is_finished() {
            let records = progress.records.load(Ordering::Relaxed);
            let pages = progress.pages.load(Ordering::Relaxed);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let rows: u64 = progress.rows.lock().map(|r| r.values().sum()).unwrap_or(0);
            let resource = progress
                .resource
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            let rate = records as f64 / started.elapsed().as_secs_f64().max(0.001);
            ticker.set_message(format!(
                "{resource}: {pages} pages, {records} records ({rate:.0}/s), {rows} rows committed, {}",
                human_bytes(bytes)
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    bar
}

/// The closing summary of one source's run.
pub fn print_report(report: &RunReport) {
    let records: u64 = report.resources.iter().map(|r| r.records).sum();
    println!(
        "{}: {} records in {:.1}s ({:.0} records/s), {} requests ({} rate-limited, {} retried), {} read",
        report.source,
        records,
        report.seconds,
        records as f64 / report.seconds.max(0.001),
        report.requests,
        report.rate_limited,
        report.retried,
        human_bytes(report.bytes)
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "resource", "mode", "pages", "records", "table", "rows", "cursor",
    ]);
    for r in &report.resources {
        let mut first = true;
        for (t, rows) in &r.tables {
            let (resource, mode, pages, records, cursor) = if first {
                (
                    r.resource.clone(),
                    r.mode.to_string(),
                    r.pages.to_string(),
                    r.records.to_string(),
                    r.cursor.clone().unwrap_or_default(),
                )
            } else {
                Default::default()
            };
            table.add_row(vec![
                resource,
                mode,
                pages,
                records,
                t.clone(),
                rows.to_string(),
                cursor,
            ]);
            first = false;
        }
        if r.tables.is_empty() {
            table.add_row(vec![
                r.resource.clone(),
                r.mode.to_string(),
                r.pages.to_string(),
                r.records.to_string(),
                "(nothing new)".into(),
                "0".into(),
                r.cursor.clone().unwrap_or_default(),
            ]);
        }
    }
    println!("{table}");
}

/// `tideway sources check`: every file parses, and each source's API answers its first page.
pub async fn check(lake: &Lake, sources: Vec<SourceConfig>) -> Result<()> {
    let mut failed = 0;
    for source in sources {
        let name = source.name.clone();
        let file = source.file.clone();
        let extractor = Extractor::new(lake.clone(), source, RunOptions::default())?;
        let started = Instant::now();
        match extractor.check().await {
            Ok(pages) => {
                let detail: Vec<String> = pages
                    .iter()
                    .map(|(r, n)| format!("{r}: {n} records on the first page"))
                    .collect();
                println!(
                    "ok    {name} ({file}) in {:.0?}: {}",
                    started.elapsed(),
                    detail.join("; ")
                );
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name} ({file}): {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} source(s) failed the check");
    }
    Ok(())
}
