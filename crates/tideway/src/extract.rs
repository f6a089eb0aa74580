//! `tideway extract` and `tideway sources check`: running the sources of `sources/*.toml`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use tideway_extract::kafka::KafkaReader;
use tideway_extract::kafka_load::KafkaSource;
use tideway_extract::{
    ExtractError, Extractor, KafkaLoader, RunOptions, RunProgress, RunReport, SourceConfig,
    SourceKind,
};
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
        let result = match &source.kind {
            SourceKind::Kafka(kafka) => {
                let loader = KafkaLoader::new(lake.clone(), &name, kafka.clone(), options.clone());
                let bar = progress_bar(&name, loader.progress());
                let result = loader.run().await;
                bar.finish_and_clear();
                result
            }
            SourceKind::Rest(_) => {
                let extractor = Extractor::new(lake.clone(), source, options.clone())?;
                let bar = progress_bar(&name, extractor.progress());
                let result = extractor.run().await;
                bar.finish_and_clear();
                result
            }
        };
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
        let started = Instant::now();
        let checked = match &source.kind {
            SourceKind::Kafka(kafka) => check_kafka(&name, kafka).await,
            SourceKind::Rest(_) => Extractor::new(lake.clone(), source, RunOptions::default())?
                .check()
                .await
                .map(|pages| {
                    pages
                        .into_iter()
                        .map(|(r, n)| (r, format!("{n} records on the first page")))
                        .collect()
                }),
        };
        match checked {
            Ok(pages) => {
                let detail: Vec<String> = pages.iter().map(|(r, n)| format!("{r}: {n}")).collect();
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

/// A Kafka source's check: the brokers answer and every topic exists; the records each
/// topic holds.
async fn check_kafka(
    name: &str,
    source: &KafkaSource,
) -> tideway_extract::Result<Vec<(String, String)>> {
    let kafka = |error| ExtractError::Kafka {
        source_name: name.to_string(),
        error,
    };
    let reader = KafkaReader::connect(source.config.clone())
        .await
        .map_err(kafka)?;
    let marks = reader.watermarks().await.map_err(kafka)?;
    let mut per_topic: std::collections::BTreeMap<String, (usize, i64)> = Default::default();
    for ((topic, _), (low, high)) in marks {
        let t = per_topic.entry(topic).or_default();
        t.0 += 1;
        t.1 += high - low;
    }
    Ok(per_topic
        .into_iter()
        .map(|(topic, (partitions, held))| {
            (
                topic,
                format!("{partitions} partitions, {held} records held"),
            )
        })
        .collect())
}

/// Follows every Kafka source of the project (for `tideway serve`), each on its own task:
/// records are committed as they arrive. Aborting a task loses nothing: the next start reads
/// on from the positions committed with the rows. A broken Kafka source file is an error; the
/// other source files are not read (`tideway extract` runs them).
pub async fn follow_kafka(
    project: &Project,
    lake: &Lake,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let dir = project.dir.join(SOURCES_DIR);
    let env = |v: &str| std::env::var(v).ok();
    let mut tasks = Vec::new();
    for source in tideway_extract::config::load_dir_of_type(&dir, &env, Some("kafka"))? {
        let SourceKind::Kafka(kafka) = source.kind else {
            continue;
        };
        eprintln!(
            "following Kafka topic(s) {} into the lake schema `{}`",
            kafka.config.topics.join(", "),
            source.name
        );
        let (lake, name) = (lake.clone(), source.name.clone());
        tasks.push(tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let loader =
                    KafkaLoader::new(lake.clone(), &name, kafka.clone(), RunOptions::default());
                if let Err(e) = loader.follow(std::future::pending()).await {
                    tracing::warn!(source = name, error = %e, retry_in = ?wait, "the Kafka source stopped; it starts again from its committed positions");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }));
    }
    Ok(tasks)
}
