//! `tideway bench sync-diff | deliver | transform | rate-budget`: the reverse-ETL paths on the
//! shared workloads, each printing its figures for BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_activate::fake::webhook::{SinkOptions, WebhookSink};
use tideway_activate::transform::{Source, Transformation};
use tideway_activate::{RunOptions, SyncConfig, SyncJob};
use tideway_core::config::Secret;
use tideway_lake::{Lake, TableName};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The diff of a table against a sync's state: day 1 is imported and recorded as sent
/// (`backfill = "skip_existing"`, timed apart), then day 2 replaces it and a dry run classifies
/// every row (hash, join with the state, events for the changed rows), `runs` times.
pub async fn sync_diff(day1: &Path, day2: &Path, key: &str, runs: usize, dir: &Path) -> Result<()> {
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).await?;
    let table: TableName = "bench.traits".parse()?;
    let t = Instant::now();
    lake.import(&[day1.to_path_buf()], &table, true).await?;
    let import1 = t.elapsed();
    let sink = WebhookSink::start(SinkOptions::default()).await?;
    let text = format!(
        "source = \"bench.traits\"\nkey = \"{key}\"\ndestination = \"hook\"\ntype = \"identify\"\nbackfill = \"skip_existing\"\n"
    );
    let config = SyncConfig::parse(&text, "syncs/bench.toml", &["hook".to_string()], &[])?;
    let hook = tideway_activate::destination::webhook::Webhook::new(
        "hook",
        tideway_activate::destination::webhook::WebhookConfig {
            url: sink.url.clone(),
            method: reqwest::Method::POST,
            headers: Default::default(),
            secret: None,
            batch_size: 500,
            requests_per_second: None,
            concurrency: 4,
        },
    );
    let job = SyncJob::new(config, Arc::new(hook), &[], Default::default())?;
    let t = Instant::now();
    let first = job.run(&lake, &RunOptions::default(), &|_| {}).await?;
    let snapshot = t.elapsed();
    let t = Instant::now();
    lake.import(&[day2.to_path_buf()], &table, true).await?;
    let import2 = t.elapsed();
    let options = RunOptions {
        dry_run: true,
        samples: 0,
        ..Default::default()
    };
    // The peak RSS printed below is the diffs' own: Linux resets the high-water mark on "5".
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let r = job.run(&lake, &options, &|_| {}).await?;
        times.push(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let r = report.expect("at least one run");
    // The differ alone (what DuckDB's EXCEPT is compared with): the rows that are new,
    // changed or gone, with their columns, and nothing made of them.
    let mut differ_times = Vec::new();
    let mut differ_rows = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let mut differ = job.differ(&lake).await?;
        differ_rows = 0;
        while let Some(batch) = differ.next().await? {
            differ_rows += batch.num_rows();
        }
        differ_times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "sync-diff: day 1 {} rows imported in {:.2} s, recorded as the sync's state in {:.2} s (first run, skip_existing: {} rows)",
        first.counts.skipped,
        import1.as_secs_f64(),
        snapshot.as_secs_f64(),
        first.counts.skipped
    );
    println!("  day 2 imported in {:.2} s", import2.as_secs_f64());
    println!(
        "  diff (dry run: hash every row, compare with the state, events for the changed rows): median {:.3} s of {:?}",
        median(times.clone()),
        times
            .iter()
            .map(|t| (t * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "  the differ alone (new, changed and gone rows with their columns; {differ_rows} rows): median {:.3} s of {:?}",
        median(differ_times.clone()),
        differ_times
            .iter()
            .map(|t| (t * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    println!(
        "  found {} added, {} changed, {} removed, {} invalid; peak RSS {:.0} MiB ({})",
        r.counts.added,
        r.counts.changed,
        r.counts.removed,
        r.counts.invalid,
        peak_rss_mib(),
        if peak_reset {
            "during the diffs"
        } else {
            "of the whole process"
        }
    );
    sink.stop();
    Ok(())
}

fn track(i: usize) -> OutboundEvent {
    OutboundEvent {
        origin: format!("u{}", i % 100_000),
        op: Op::Upsert,
        event: json!({
            "type": "track",
            "event": "Order Completed",
            "userId": format!("u{}", i % 100_000),
            "messageId": format!("bench-{i}"),
            "timestamp": "2026-12-01T10:00:00.000Z",
            "properties": {"order_id": format!("o{i}"), "revenue": 42.5, "currency": "EUR", "products": [{"sku": "a", "price": 10}]},
            "context": {
                "library": {"name": "analytics.js", "version": "2.11.1"},
                "page": {"path": "/checkout", "url": "https://shop.example.com/checkout", "referrer": "https://www.google.com/"},
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                "ip": "203.0.113.7", "locale": "en-US", "timezone": "Europe/Paris",
                "campaign": {"name": "winter", "source": "newsletter", "medium": "email"}
            }
        }),
    }
}

/// The webhook destination to a local receiver: events/s through the delivery layer.
pub async fn deliver(events: usize, batch_size: usize, concurrency: usize) -> Result<()> {
    let sink = WebhookSink::start(SinkOptions::default()).await?;
    let hook = tideway_activate::destination::webhook::Webhook::new(
        "bench-hook",
        tideway_activate::destination::webhook::WebhookConfig {
            url: sink.url.clone(),
            method: reqwest::Method::POST,
            headers: Default::default(),
            secret: Some(Secret::new("bench-secret")),
            batch_size,
            requests_per_second: None,
            concurrency,
        },
    );
    let all: Vec<OutboundEvent> = (0..events).map(track).collect();
    let delivery = Delivery::new(Arc::new(hook), RetryPolicy::default());
    let t = Instant::now();
    let out = delivery.deliver(&all, &|_| {}).await;
    let took = t.elapsed().as_secs_f64();
    let delivered = out
        .iter()
        .filter(|d| d.outcome == Outcome::Delivered)
        .count();
    anyhow::ensure!(
        sink.event_count() == events,
        "the receiver got {} of {events}",
        sink.event_count()
    );
    println!(
        "deliver: {delivered} events to a local webhook (signed, batches of {batch_size}, {concurrency} in flight) in {took:.2} s = {:.0} events/s; {} requests; peak RSS {:.0} MiB",
        delivered as f64 / took,
        sink.counts().0,
        peak_rss_mib()
    );
    sink.stop();
    Ok(())
}

/// A trivial transformation on one core: events/s.
pub fn transform(events: usize) -> Result<()> {
    let main = Source {
        name: "bench".into(),
        file: "transformations/bench.js".into(),
        text: "export function transformEvent(event, metadata) { event.properties.x = 1; return event; }".into(),
    };
    let mut t = Transformation::load(&main, &[], Default::default())?;
    let metadata = json!({"sourceId": "s", "sourceName": "web", "destinationId": "d", "destinationType": "webhook", "messageId": "m", "jobId": 1});
    let inputs: Vec<(serde_json::Value, serde_json::Value)> = (0..events)
        .map(|i| (track(i).event, metadata.clone()))
        .collect();
    let bytes: usize = inputs.iter().map(|(e, _)| e.to_string().len()).sum();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let out = t.run(&inputs);
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(out.iter().all(|o| o.is_ok()), "a transformation failed");
        rates.push(events as f64 / took);
    }
    println!(
        "transform: a trivial transformation on {events} events of {} bytes on average, one core: median {:.0} events/s of {:?}",
        bytes / events.max(1),
        median(rates.clone()),
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
    Ok(())
}

/// Which destination's fake [`rate_budget`] runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateBudgetTarget {
    /// Customer.io's Track API v1: one request per event, a steady requests-per-second limit.
    Customerio,
    /// HubSpot's batch upsert of contacts: 100 inputs per request, a rolling 10-second window.
    Hubspot,
}

/// A destination's fake at its real rate limit, `seconds` of traffic after a 5 s warm-up: the
/// share of the budget used and the share of requests answered 429. Fails when a row is lost.
pub async fn rate_budget(target: RateBudgetTarget, seconds: u64, rps: f64) -> Result<()> {
    use tideway_activate::destination::{customerio, hubspot};
    use tideway_activate::fake;
    /// The destination, the events a request carries, the fake's (requests, throttled)
    /// counters, and what it is.
    type Bench = (
        Arc<dyn Destination>,
        usize,
        Box<dyn Fn() -> (u64, u64)>,
        String,
    );
    let (destination, per_request, counters, label): Bench = match target {
        RateBudgetTarget::Customerio => {
            let fake = fake::customerio::start(fake::customerio::FakeOptions {
                requests_per_second: rps,
                ..Default::default()
            })
            .await
            .context("cannot start the Customer.io fake")?;
            let mut config =
                customerio::CustomerIoConfig::new(fake.site_id(), Secret::new(fake.api_key()));
            config.base_url = Some(fake.base_url().to_string());
            config.api = customerio::ApiVersion::V1;
            config.requests_per_second = rps;
            let destination = Arc::new(customerio::build("cio-bench", config));
            let fake = Arc::new(fake);
            let counters = move || (fake.requests(), fake.throttled());
            let label = format!("Customer.io fake at {rps} requests/s, v1 (one request per event)");
            (destination, 1, Box::new(counters), label)
        }
        RateBudgetTarget::Hubspot => {
            let window = (rps * 10.0).round() as u32;
            let fake = fake::hubspot::start(fake::hubspot::FakeOptions {
                requests_per_ten_seconds: window,
                ..Default::default()
            })
            .await
            .context("cannot start the HubSpot fake")?;
            let mut config = hubspot::HubSpotConfig::new(Secret::new(fake.access_token()));
            config.base_url = Some(fake.base_url().to_string());
            config.requests_per_second = rps;
            let destination = Arc::new(hubspot::build("hubspot-bench", config));
            let fake = Arc::new(fake);
            let counters = move || (fake.requests(), fake.throttled());
            let label = format!(
                "HubSpot fake at {window} requests per rolling 10 s, contacts batch upsert ({} inputs a request)",
                hubspot::MAX_BATCH_INPUTS
            );
            (
                destination,
                hubspot::MAX_BATCH_INPUTS,
                Box::new(counters),
                label,
            )
        }
    };
    let warmup = rps as usize * 5 * per_request;
    let events = (rps * seconds as f64) as usize * per_request;
    let all: Vec<OutboundEvent> = (0..warmup + events)
        .map(|i| {
            let mut e = track(i);
            e.event["type"] = json!("identify");
            e.event["traits"] = json!({"email": format!("u{i}@example.com"), "firstname": "Ada", "lastname": format!("L{i}")});
            e.origin = format!("u{i}");
            e.event["userId"] = json!(format!("u{i}"));
            e
        })
        .collect();
    let delivery = Delivery::new(destination, RetryPolicy::default());
    delivery.deliver(&all[..warmup], &|_| {}).await;
    let (r0, t0) = counters();
    let start = Instant::now();
    let out = delivery.deliver(&all[warmup..], &|_| {}).await;
    let took = start.elapsed().as_secs_f64();
    let (r1, t1) = counters();
    let (r1, t1) = (r1 - r0, t1 - t0);
    let delivered = out
        .iter()
        .filter(|d| d.outcome == Outcome::Delivered)
        .count();
    let accepted_rate = (r1 - t1) as f64 / took;
    println!(
        "rate-budget: {label}, {delivered} of {events} delivered in {took:.1} s after a 5 s warm-up: {accepted_rate:.1} accepted requests/s = {:.1}% of the budget, {t1} of {r1} requests answered 429 ({:.2}%)",
        100.0 * accepted_rate / rps,
        100.0 * t1 as f64 / r1.max(1) as f64
    );
    if let Some(refused) = out.iter().find(|d| d.outcome != Outcome::Delivered) {
        anyhow::bail!(
            "rows were lost: {} of {events} not delivered, e.g. {:?}",
            events - delivered,
            refused.outcome
        );
    }
    Ok(())
}

/// Where the shared traits tables are, from the workload directory.
pub fn traits_paths(data: &Path) -> (PathBuf, PathBuf) {
    let t = data.join("warehouse/traits");
    (
        t.join("users_traits_day1.parquet"),
        t.join("users_traits_day2.parquet"),
    )
}
