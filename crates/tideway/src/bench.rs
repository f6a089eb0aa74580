//! `tideway bench`: end-to-end benchmarks, each measured side by side with its physical limit
//! or peer in the same run (machines are noisy: compare ratios, not absolute figures).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tideway_lake::Lake;
use tideway_lake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tideway_lake::deltalake::parquet::arrow::ArrowWriter;
use tideway_lake::deltalake::parquet::basic::{Compression, ZstdLevel};
use tideway_lake::deltalake::parquet::file::properties::WriterProperties;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append event-like batches into a Delta table vs. writing them as plain Parquet files.
    LakeAppend {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 50)]
        columns: usize,
        #[arg(long, default_value_t = 65_536)]
        batch_rows: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Scratch directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The collector end to end on loopback: events/s, ack latency, lag to the lake, RSS, next
    /// to the disk's fsync rate and an empty handler's requests/s.
    Collect {
        /// The shared workload directory (`../shared/bench/data/<size>`).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = crate::bench_collect::Shape::Batch)]
        shape: crate::bench_collect::Shape,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Pace requests at this many per second (for latency at a given load).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Live forwarding end to end: collector -> event log -> connection -> a webhook on
    /// loopback. Delay from ack to delivery at light load, and forwarded events/s next to the
    /// collector's own ack rate.
    Forward {
        /// Single events sent at `--rate` per second, for the delay.
        #[arg(long, default_value_t = 1000)]
        light: usize,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Events sent in batches as fast as acknowledged, for the throughput.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Forward to this Kafka broker (topic `bench.events`) instead of a webhook.
        #[arg(long)]
        kafka: Option<String>,
        /// Log records the connection reads per step (its `batch_size`).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The nested-JSON normalizer alone, on one core: recorded JSON:API pages (parse, unwrap,
    /// flatten into Arrow tables), in MB of JSON per second.
    Normalize {
        /// Folders of `page-*.json` files (e.g. ../shared/bench/data/small/kustomer/day1/customers).
        #[arg(required = true)]
        pages: Vec<PathBuf>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// An extract run with no mock in the way: recorded JSON:API pages served from memory on
    /// loopback, read by the real engine (pagination, JSON:API, normalizer, Delta commits).
    Extract {
        /// A folder with `customers/` and `conversations/` of `page-*.json`
        /// (e.g. ../shared/bench/data/medium/kustomer/day1).
        pages: PathBuf,
        /// Scratch directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// `tideway compile --watch` re-checking a DAG after one model file changes: an edit that
    /// keeps the model's columns (re-plans it alone) and one that adds a column (re-plans its
    /// readers too), each on different models of the middle layers. Works on a copy.
    ModelsWatch {
        /// A Tideway project with models (e.g. ../shared/bench/out/dag1000/dbt).
        project: PathBuf,
        #[arg(long, default_value_t = 20)]
        edits: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The reverse-ETL differ: a table's day-2 version against the state of day 1 (the shared
    /// traits tables: ../shared/bench/data/SIZE/warehouse/traits).
    SyncDiff {
        /// The shared workload directory (`../shared/bench/data/<size>`), or use --day1/--day2.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, requires = "day2")]
        day1: Option<PathBuf>,
        #[arg(long)]
        day2: Option<PathBuf>,
        #[arg(long, default_value = "user_id")]
        key: String,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The webhook destination through the delivery layer to a local receiver.
    Deliver {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// A trivial JavaScript transformation on one core.
    Transform {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// A destination's fake at its real rate limit: the share of the budget used, and of 429s.
    RateBudget {
        #[arg(long, value_enum, default_value = "customerio")]
        destination: crate::bench_sync::RateBudgetTarget,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 100.0)]
        rps: f64,
    },
    /// A Kafka source into the lake next to a bare rdkafka consumer of the same topic, same
    /// broker, same run (the workload's Segment events, produced once to a new topic).
    KafkaSource {
        /// The shared workload directory (`../shared/bench/data/<size>`).
        #[arg(long)]
        data: PathBuf,
        /// The broker, `host:port`.
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The Profile API (`GET /v1/profiles/email:...`) at a steady rate on loopback, latency
    /// percentiles next to an empty handler at the same rate.
    ProfileApi {
        /// People in the lake (one profile each, stitched by a real unify run).
        #[arg(long, default_value_t = 100_000)]
        profiles: usize,
        /// Requests per second, in all.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Merge (upsert by key) changed rows into a large table.
    LakeMerge {
        #[arg(long, default_value_t = 10_000_000)]
        table_rows: usize,
        #[arg(long, default_value_t = 100_000)]
        changed: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Normalize { pages, runs } => normalize(&pages, runs),
        BenchCommand::KafkaSource {
            data,
            brokers,
            records,
            runs,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            crate::bench_kafka::run(&data, &brokers, records, runs, scratch.path()).await
        }
        BenchCommand::ProfileApi {
            profiles,
            rate,
            seconds,
            connections,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            let options = crate::bench_profile::Options {
                profiles,
                rate,
                seconds,
                connections,
            };
            crate::bench_profile::run(options, scratch.path()).await
        }
        BenchCommand::Extract { pages, dir } => {
            let scratch = Scratch::new(dir)?;
            extract_pages(&pages, scratch.path()).await
        }
        BenchCommand::Collect {
            data,
            shape,
            events,
            connections,
            rate,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            crate::bench_collect::run(crate::bench_collect::Options {
                data,
                shape,
                events,
                connections,
                rate,
                dir: scratch.path().to_path_buf(),
            })
            .await
        }
        BenchCommand::Forward {
            light,
            rate,
            events,
            kafka,
            batch,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            crate::bench_forward::run(scratch.path(), light, rate, events, kafka, batch).await
        }
        BenchCommand::ModelsWatch {
            project,
            edits,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            models_watch(&project, edits, scratch.path()).await
        }
        BenchCommand::LakeAppend {
            rows,
            columns,
            batch_rows,
            runs,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            lake_append(scratch.path(), rows, columns, batch_rows, runs).await
        }
        BenchCommand::SyncDiff {
            data,
            day1,
            day2,
            key,
            runs,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            let (day1, day2) = match (data, day1, day2) {
                (_, Some(a), Some(b)) => (a, b),
                (Some(data), _, _) => crate::bench_sync::traits_paths(&data),
                _ => anyhow::bail!("give --data DIR (a shared workload) or --day1 and --day2"),
            };
            crate::bench_sync::sync_diff(&day1, &day2, &key, runs, scratch.path()).await
        }
        BenchCommand::Deliver {
            events,
            batch_size,
            concurrency,
        } => crate::bench_sync::deliver(events, batch_size, concurrency).await,
        BenchCommand::Transform { events } => crate::bench_sync::transform(events),
        BenchCommand::RateBudget {
            destination,
            seconds,
            rps,
        } => crate::bench_sync::rate_budget(destination, seconds, rps).await,
        BenchCommand::LakeMerge {
            table_rows,
            changed,
            runs,
            dir,
        } => {
            let scratch = Scratch::new(dir)?;
            lake_merge(scratch.path(), table_rows, changed, runs).await
        }
    }
}

/// The writer settings both sides use, so the comparison is of the write paths alone.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("a valid level"),
        ))
        .build()
}

async fn lake_append(
    dir: &Path,
    rows: usize,
    columns: usize,
    batch_rows: usize,
    runs: usize,
) -> Result<()> {
    let batches = event_like_batches(rows, columns, batch_rows);
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    println!(
        "lake-append: {rows} rows x {columns} columns in {} batches ({:.0} MiB in memory), {runs} runs",
        batches.len(),
        bytes as f64 / 1048576.0
    );
    let mut parquet = Vec::new();
    let mut delta = Vec::new();
    for run in 0..runs {
        // Plain Parquet: the physical limit of this path (encode + write, no log, no commit).
        let path = dir.join(format!("plain-{run}.parquet"));
        let started = Instant::now();
        let file = std::fs::File::create(&path)?;
        let mut writer =
            ArrowWriter::try_new(file, batches[0].schema(), Some(writer_properties()))?;
        for b in &batches {
            writer.write(b)?;
        }
        writer.close()?;
        parquet.push(started.elapsed());

        let lake = Lake::open(
            &dir.join(format!("lake-{run}")).display().to_string(),
            Default::default(),
        )
        .await?;
        let table = "bench.events".parse()?;
        let started = Instant::now();
        lake.append(&table, batches.clone())
            .with_writer_properties(writer_properties())
            .await?;
        delta.push(started.elapsed());
        println!(
            "  run {}: parquet {:>8.2?}  delta {:>8.2?}",
            run + 1,
            parquet[run],
            delta[run]
        );
    }
    let (p, d) = (median(&mut parquet), median(&mut delta));
    let rate = |t: Duration| rows as f64 / t.as_secs_f64();
    println!(
        "median: plain parquet {:.0} rows/s, delta append {:.0} rows/s: delta at {:.0}% of plain parquet",
        rate(p),
        rate(d),
        100.0 * p.as_secs_f64() / d.as_secs_f64()
    );
    Ok(())
}

async fn lake_merge(dir: &Path, table_rows: usize, changed: usize, runs: usize) -> Result<()> {
    println!(
        "lake-merge: {changed} changed rows (half updates, half inserts) into {table_rows} rows, {runs} runs"
    );
    let mut times = Vec::new();
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).await?;
    let table = "bench.users".parse()?;
    let started = Instant::now();
    for chunk in user_batches(0, table_rows, 0).chunks(16) {
        lake.append(&table, chunk.to_vec())
            .with_writer_properties(writer_properties())
            .await?;
    }
    println!(
        "  built the {table_rows}-row table in {:.1?}",
        started.elapsed()
    );
    for run in 0..runs {
        let mut rng = StdRng::seed_from_u64(run as u64);
        let updates = changed / 2;
        let mut ids: Vec<i64> = (0..updates)
            .map(|_| rng.random_range(0..table_rows as i64))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let inserts =
            (0..(changed - ids.len()) as i64).map(|i| (table_rows + run * changed) as i64 + i);
        ids.extend(inserts);
        let batch = users(&ids, run as i64 + 1);
        let started = Instant::now();
        let commit = lake
            .merge(&table, vec![batch], &["id"])
            .with_writer_properties(writer_properties())
            .await?;
        times.push(started.elapsed());
        println!(
            "  run {}: {:>8.2?} ({} updated, {} inserted)",
            run + 1,
            times[run],
            commit.updated,
            commit.inserted
        );
    }
    println!("median merge: {:.2?}", median(&mut times));
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// Event-like columns: ids, names and URLs as text, counters, amounts, timestamps, flags.
pub fn event_like_batches(rows: usize, columns: usize, batch_rows: usize) -> Vec<RecordBatch> {
    let mut rng = StdRng::seed_from_u64(42);
    let fields: Vec<Field> = (0..columns)
        .map(|i| match i % 5 {
            0 | 1 => Field::new(format!("text_{i}"), DataType::Utf8, true),
            2 => Field::new(format!("int_{i}"), DataType::Int64, true),
            3 => Field::new(format!("float_{i}"), DataType::Float64, true),
            _ if i % 10 == 4 => Field::new(
                format!("ts_{i}"),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            _ => Field::new(format!("flag_{i}"), DataType::Boolean, true),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let vocabulary: Vec<String> = (0..500)
        .map(|i| format!("https://example.com/page/{i}?utm_source=newsletter"))
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = batch_rows.min(rows - start);
        let cols: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| -> ArrayRef {
                match f.data_type() {
                    DataType::Utf8 if i % 10 == 0 => Arc::new(StringArray::from_iter_values(
                        (0..n).map(|_| format!("{:016x}", rng.random::<u64>())),
                    )),
                    DataType::Utf8 => {
                        Arc::new(StringArray::from_iter_values((0..n).map(|_| {
                            vocabulary[rng.random_range(0..vocabulary.len())].as_str()
                        })))
                    }
                    DataType::Int64 => Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|_| rng.random_range(0..1_000_000)),
                    )),
                    DataType::Float64 => Arc::new(Float64Array::from_iter_values(
                        (0..n).map(|_| rng.random::<f64>() * 1000.0),
                    )),
                    DataType::Boolean => Arc::new(BooleanArray::from_iter(
                        (0..n).map(|_| Some(rng.random::<bool>())),
                    )),
                    _ => Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            (0..n).map(|j| 1_764_000_000_000_000 + (start + j) as i64 * 1000),
                        )
                        .with_timezone("UTC"),
                    ),
                }
            })
            .collect();
        out.push(RecordBatch::try_new(schema.clone(), cols).expect("columns match the schema"));
        start += n;
    }
    out
}

fn user_batches(from: usize, to: usize, version: i64) -> Vec<RecordBatch> {
    let ids: Vec<i64> = (from as i64..to as i64).collect();
    ids.chunks(262_144).map(|c| users(c, version)).collect()
}

/// A users/traits table: an id and a handful of traits.
fn users(ids: &[i64], version: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("plan", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("logins", DataType::Int64, true),
        Field::new("version", DataType::Int64, true),
    ]));
    let plans = ["free", "starter", "pro", "enterprise"];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("user{i}@example.com")),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter()
                .map(|i| plans[((*i as usize) + version as usize) % 4]),
        )),
        Arc::new(Float64Array::from_iter_values(
            ids.iter()
                .map(|i| (*i % 1000) as f64 / 10.0 + version as f64),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i % 97 + version),
        )),
        Arc::new(Int64Array::from(vec![version; ids.len()])),
    ];
    RecordBatch::try_new(schema, cols).expect("columns match the schema")
}

/// A scratch directory: the given one, or a temporary one removed afterwards.
struct Scratch {
    _temp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new(dir: Option<PathBuf>) -> Result<Scratch> {
        match dir {
            Some(path) => {
                std::fs::create_dir_all(&path)?;
                Ok(Scratch { _temp: None, path })
            }
            None => {
                let temp = tempfile::tempdir()?;
                let path = temp.path().to_path_buf();
                Ok(Scratch {
                    _temp: Some(temp),
                    path,
                })
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// `tideway bench models-watch`: see [`BenchCommand::ModelsWatch`].
async fn models_watch(project: &Path, edits: usize, scratch: &Path) -> Result<()> {
    use tideway_models::watch::Watcher;
    let copy = scratch.join("project");
    copy_dir(project, &copy)?;
    let project = crate::project::Project::find(Some(&copy))?;
    let lake = project.lake().await?;
    let mut watcher = Watcher::new(&copy);
    let started = Instant::now();
    watcher.scan();
    let first = watcher.check(Some(&lake)).await?;
    let cold = started.elapsed();
    anyhow::ensure!(
        first.is_ok(),
        "the project does not compile: {}",
        first
            .diagnostics
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    let n = first.models.len();
    // Models of the middle layers: the middle of the DAG order.
    let files: Vec<PathBuf> = first.order[n / 3..]
        .iter()
        .take(edits)
        .map(|&i| copy.join(&first.models.models[i].file))
        .collect();
    drop(first);
    let mut report = Vec::new();
    for (kind, edit) in [
        (
            "same columns (a comment added: rendered, parsed, planned again)",
            0,
        ),
        ("one column added", 1),
    ] {
        let mut times = Vec::new();
        let mut planned = Vec::new();
        for (k, file) in files.iter().enumerate() {
            let original = std::fs::read_to_string(file)?;
            let edited = match edit {
                0 => format!("{original}\n-- edited {k}\n"),
                _ => {
                    let at = original
                        .to_uppercase()
                        .find("SELECT")
                        .context("a model without SELECT")?
                        + "SELECT".len();
                    format!("{} {k} AS added_{k},{}", &original[..at], &original[at..])
                }
            };
            std::fs::write(file, edited)?;
            let t = Instant::now();
            let changes = watcher.scan();
            let c = watcher.check(Some(&lake)).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            planned.push(watcher.planned());
            anyhow::ensure!(
                changes.changed.len() == 1,
                "expected one changed file: {changes:?}"
            );
            anyhow::ensure!(
                c.is_ok(),
                "the edit broke the project: {:?}",
                c.diagnostics.first().map(ToString::to_string)
            );
            std::fs::write(file, &original)?;
            watcher.scan();
            watcher.check(Some(&lake)).await?;
        }
        times.sort_by(f64::total_cmp);
        planned.sort();
        report.push(format!(
            "  {kind}: median {:.1} ms, max {:.1} ms over {} edits; models planned again: median {} (of {n})",
            times[times.len() / 2],
            times[times.len() - 1],
            times.len(),
            planned[planned.len() / 2],
        ));
    }
    println!(
        "compile --watch on {n} models (cold first check {:.0} ms):\n{}",
        cold.as_secs_f64() * 1000.0,
        report.join("\n")
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != ".tideway" && entry.file_name() != "target" {
                copy_dir(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `tideway bench normalize`: see [`BenchCommand::Normalize`].
fn normalize(dirs: &[PathBuf], runs: usize) -> Result<()> {
    use tideway_extract::jsonapi;
    use tideway_extract::normalize::{NormalizeOptions, Normalizer};
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let pages: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let bytes: usize = pages.iter().map(Vec::len).sum();
        let mut best = f64::MAX;
        let (mut records, mut rows) = (0, 0);
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let mut n =
                Normalizer::new("records", NormalizeOptions::default()).with_primary_key("id");
            rows = 0;
            for page in &pages {
                let mut doc: serde_json::Value = serde_json::from_slice(page)?;
                if let serde_json::Value::Array(list) = doc["data"].take() {
                    for record in list {
                        n.push(&jsonapi::unwrap(record))?;
                    }
                }
                if n.buffered_bytes() > 16 << 20 {
                    rows += n.finish().iter().map(|t| t.batch.num_rows()).sum::<usize>();
                }
            }
            rows += n.finish().iter().map(|t| t.batch.num_rows()).sum::<usize>();
            records = n.records();
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{}: {} pages, {:.1} MB of JSON, {records} records -> {rows} rows; best of {runs}: {:.3}s = {:.0} MB/s, {:.0} records/s (one core)",
            dir.display(),
            pages.len(),
            bytes as f64 / 1e6,
            best,
            bytes as f64 / 1e6 / best,
            records as f64 / best
        );
    }
    Ok(())
}

/// `tideway bench extract`: see [`BenchCommand::Extract`].
async fn extract_pages(pages: &Path, scratch: &Path) -> Result<()> {
    use axum::extract::{Path as UrlPath, Query, State};
    use std::collections::HashMap;
    type Pages = Arc<HashMap<String, Vec<bytes::Bytes>>>;
    let mut served: HashMap<String, Vec<bytes::Bytes>> = HashMap::new();
    let mut bytes_total = 0usize;
    for kind in ["customers", "conversations"] {
        let dir = pages.join(kind);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let list: Vec<bytes::Bytes> = files
            .iter()
            .map(|f| std::fs::read(f).map(bytes::Bytes::from))
            .collect::<Result<_, _>>()?;
        bytes_total += list.iter().map(|b| b.len()).sum::<usize>();
        served.insert(kind.to_string(), list);
    }
    let served: Pages = Arc::new(served);
    async fn page(
        State(pages): State<Pages>,
        UrlPath(kind): UrlPath<String>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let n: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        match pages.get(&kind).and_then(|l| l.get(n.saturating_sub(1))) {
            Some(body) => ([("content-type", "application/json")], body.clone()).into_response(),
            None => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/v1/{kind}", axum::routing::get(page))
        .with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let text = format!(
        "type = \"rest\"\nbase_url = \"http://{addr}/v1/\"\n\
         [resources.customers]\npath = \"customers\"\nparams = {{ page = \"1\", pageSize = \"100\" }}\n\
         records = \"data\"\nprimary_key = \"id\"\njsonapi = true\npagination = {{ kind = \"json_link\" }}\n\
         [resources.conversations]\npath = \"conversations\"\nparams = {{ page = \"1\", pageSize = \"100\" }}\n\
         records = \"data\"\nprimary_key = \"id\"\njsonapi = true\npagination = {{ kind = \"json_link\" }}\n"
    );
    let source = tideway_extract::SourceConfig::parse(&text, "sources/kustomer.toml", &|_| None)?;
    let lake = Lake::open(
        scratch.join("lake").to_str().context("a UTF-8 path")?,
        Default::default(),
    )
    .await?;
    let started = Instant::now();
    let report =
        tideway_extract::Extractor::new(lake, source, tideway_extract::RunOptions::default())?
            .run()
            .await?;
    let secs = started.elapsed().as_secs_f64();
    let records: u64 = report.resources.iter().map(|r| r.records).sum();
    let rows: u64 = report
        .resources
        .iter()
        .flat_map(|r| r.tables.values())
        .sum();
    println!(
        "extract from recorded pages ({:.0} MB of JSON served from memory): {records} records, {rows} rows in {secs:.2}s = {:.0} records/s, {:.0} rows/s, {:.0} MB/s",
        bytes_total as f64 / 1e6,
        records as f64 / secs,
        rows as f64 / secs,
        bytes_total as f64 / 1e6 / secs
    );
    crate::extract::print_report(&report);
    Ok(())
}
