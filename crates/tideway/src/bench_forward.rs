//! `tideway bench forward`: live forwarding end to end on loopback. SDK-shaped requests go to
//! the real collector (every ack durable: fsync before the answer), a live connection reads
//! the event log and delivers to a webhook receiver in this process, which notes when each
//! `messageId` arrives.
//!
//! - Light load: single `/v1/track` requests paced at `--rate` per second; the delay of each
//!   event is from its ack to its arrival at the receiver (median and p99).
//! - Throughput: `/v1/batch` requests of 100 events from 8 senders as fast as they are
//!   acknowledged; forwarded events per second next to the collector's own ack rate in the
//!   same run (forwarding cannot outrun what is acknowledged).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, body: axum::body::Bytes) -> &'static str {
    let now = Instant::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        let mut a = arrivals.lock().expect("arrivals lock");
        let events = v["batch"].as_array().cloned().unwrap_or_else(|| vec![v]);
        for e in events {
            if let Some(id) = e["messageId"].as_str() {
                a.entry(id.to_string()).or_insert(now);
            }
        }
    }
    "ok"
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(dir: &Path, light: usize, rate: f64, events: usize) -> Result<()> {
    let arrivals: Arrivals = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });

    std::fs::write(
        dir.join("tideway.toml"),
        format!(
            "[project]\nname = \"bench-forward\"\n\n[collect]\nload_batch_seconds = 1.0\n\n\
             [collect.sources.web]\nwrite_key = \"wk_bench\"\n\n\
             [destinations.hook]\ntype = \"webhook\"\nurl = \"{hook}\"\nbatch_size = 500\nconcurrency = 4\n\n\
             [connections.web_to_hook]\nsource = \"web\"\ndestination = \"hook\"\nbatch_size = 5000\n"
        ),
    )?;
    let project = crate::project::Project::open(dir)?;
    let lake = project.lake().await?;
    let config = project.config.collect.clone();
    let service =
        tideway_collect::service::Service::start(lake, &config, &project.dir.join(&config.log_dir))
            .await?;
    let log = service.log();
    let (tasks, running) =
        crate::sync::start_connections(&project, log.clone(), &|v| std::env::var(v).ok()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("wk_bench", Some(""));

    // Light load: paced single events.
    eprintln!("light load: {light} single /v1/track requests at {rate}/s");
    let mut acked: Vec<(String, Instant)> = Vec::with_capacity(light);
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for i in 0..light {
        let due = start + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let id = format!("light-{i}");
        let body = json!({"userId": format!("u{}", i % 50), "event": "Viewed", "messageId": id,
                          "properties": {"i": i}});
        let r = auth(client.post(format!("{base}/v1/track")))
            .json(&body)
            .send()
            .await?;
        ensure!(
            r.status().is_success(),
            "the collector answered {}",
            r.status()
        );
        acked.push((id, Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").len() < light && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delays: Vec<Duration> = {
        let a = arrivals.lock().expect("lock");
        acked
            .iter()
            .filter_map(|(id, at)| a.get(id).map(|t| t.saturating_duration_since(*at)))
            .collect()
    };
    ensure!(
        delays.len() == light,
        "only {} of {light} light-load events arrived",
        delays.len()
    );
    delays.sort();

    // Throughput: batches as fast as acknowledged.
    eprintln!("throughput: {events} events in /v1/batch requests of 100, 8 senders");
    let batches = events / 100;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let batch: Vec<Value> = (0..100)
                    .map(|k| {
                        json!({"type": "track", "userId": format!("u{}", (b * 100 + k) % 5000),
                               "event": "Order Completed", "messageId": format!("t-{b}-{k}"),
                               "properties": {"revenue": 12.5, "currency": "USD", "sku": format!("sku-{k}")}})
                    })
                    .collect();
                let r = client
                    .post(format!("{base}/v1/batch"))
                    .basic_auth("wk_bench", Some(""))
                    .json(&json!({"batch": batch}))
                    .send()
                    .await?;
                ensure!(r.status().is_success(), "the collector answered {}", r.status());
            }
        }));
    }
    for s in senders {
        s.await??;
    }
    let acked_in = t0.elapsed();
    let want = light + batches * 100;
    let deadline = Instant::now() + Duration::from_secs(300);
    while arrivals.lock().expect("lock").len() < want {
        ensure!(
            Instant::now() < deadline,
            "forwarding did not finish within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let forwarded_in = t0.elapsed();
    let positions: Vec<u64> = running.iter().map(|c| c.position()).collect();
    tasks.iter().for_each(|t| t.abort());
    let _ = stop.send(());
    serving.await.context("the collector task failed")??;

    let n = (batches * 100) as f64;
    let ack_rate = n / acked_in.as_secs_f64();
    let fwd_rate = n / forwarded_in.as_secs_f64();
    println!("live forwarding (collector -> event log -> connection -> webhook on loopback)");
    println!(
        "  light load, {light} events at {rate}/s: delay from ack to delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3,
        delays.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  throughput, {} events: acked {:.0} events/s (collector alone, fsync per group commit); \
         forwarded {:.0} events/s end to end = {:.2}x of the ack rate",
        batches * 100,
        ack_rate,
        fwd_rate,
        fwd_rate / ack_rate
    );
    println!("  connection positions at the end: {positions:?}");
    Ok(())
}
