//! `tideway bench kafka-source`: the Kafka source into the lake next to a bare rdkafka
//! consumer reading the same topic from the same broker, in the same run.
//!
//! The workload's Segment events (`<data>/events/ndjson/*.ndjson`) are produced once to a new
//! topic; then, alternately, the bare consumer (`KafkaReader` from the earliest offsets to the
//! end, records counted and dropped) and a `KafkaLoader` run into an empty lake (JSON parsed,
//! normalized, committed with the positions) read all of it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tideway_extract::kafka::{KafkaReader, KafkaSourceConfig, KafkaWriter};
use tideway_extract::kafka_load::KafkaSource;
use tideway_extract::{KafkaLoader, RunOptions};
use tideway_lake::Lake;

/// Reads up to `limit` lines of the workload's NDJSON events.
fn events(data: &Path, limit: usize) -> Result<Vec<String>> {
    let dir = data.join("events/ndjson");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {} (run gen.py first)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f)?.lines() {
            if out.len() == limit {
                return Ok(out);
            }
            if !line.trim().is_empty() {
                out.push(line.to_string());
            }
        }
    }
    Ok(out)
}

pub async fn run(
    data: &Path,
    brokers: &str,
    records: usize,
    runs: usize,
    dir: &Path,
) -> Result<()> {
    let lines = events(data, records)?;
    let bytes: usize = lines.iter().map(String::len).sum();
    let topic = format!("bench-kafka-source-{}", std::process::id());
    let brokers = vec![brokers.to_string()];
    let writer = KafkaWriter::new(&brokers, &Default::default()).await?;
    writer.create_topic(&topic, 3).await?;
    let clock = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        let key = format!("k{}", i % 1000);
        writer
            .send(&topic, Some(key.as_bytes()), Some(line.as_bytes()))
            .await?;
    }
    writer.flush().await?;
    println!(
        "produced {} events ({:.1} MB) to {topic} in {:.1} s",
        lines.len(),
        bytes as f64 / 1e6,
        clock.elapsed().as_secs_f64()
    );
    let config = |group: &str| {
        let mut c = KafkaSourceConfig::new(brokers.clone(), [topic.clone()], group);
        c.max_batch_records = 10_000;
        c
    };
    println!("| run | bare consumer | tideway extract (into Delta) | ratio |");
    println!("|---|---|---|---|");
    for run in 1..=runs {
        let clock = Instant::now();
        let mut reader = KafkaReader::connect(config(&format!("bench-bare-{run}"))).await?;
        reader.assign(&Default::default());
        let end = reader.high_watermarks().await?;
        let mut read = 0usize;
        while let Some(batch) = reader.poll_batch_to(&end).await? {
            read += batch.len();
        }
        let bare = read as f64 / clock.elapsed().as_secs_f64();
        drop(reader);

        let lake_dir = dir.join(format!("lake-{run}"));
        let lake = Lake::open(&lake_dir.display().to_string(), Default::default()).await?;
        let source = KafkaSource {
            config: config(&format!("bench-tideway-{run}")),
            commit_records: None,
            schema: Default::default(),
        };
        let clock = Instant::now();
        let report = KafkaLoader::new(lake, "bench", source, RunOptions::default())
            .run()
            .await?;
        let loaded: u64 = report.resources.iter().map(|r| r.records).sum();
        let ours = loaded as f64 / clock.elapsed().as_secs_f64();
        anyhow::ensure!(
            read == lines.len() && loaded as usize == lines.len(),
            "read {read} and loaded {loaded} of {} events",
            lines.len()
        );
        println!(
            "| {run} | {bare:.0} records/s | {ours:.0} records/s | {:.2} |",
            ours / bare
        );
    }
    Ok(())
}
