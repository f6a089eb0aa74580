//! `tideway bench forward`: live forwarding end to end on loopback. SDK-shaped requests go to
//! the real collector (every ack durable: fsync before the answer), a live connection reads
//! the event log and delivers to a webhook receiver in this process, or with `--kafka
//! BROKERS` to the topic `bench.events` of that broker. An event counts as delivered when the
//! connection announces it so (the destination accepted it: the receiver answered, or the
//! broker acknowledged the record).
//!
//! - Light load: single `/v1/track` requests paced at `--rate` per second; the delay of each
//!   event is from its ack to its delivery (median and p99).
//! - Throughput: `/v1/batch` requests of 100 events from 8 senders as fast as they are
//!   acknowledged; forwarded events per second next to the collector's own ack rate in the
//!   same run (forwarding cannot outrun what is acknowledged).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// The webhook receiver: takes every call.
async fn receive() -> &'static str {
    "ok"
}

/// A bare rdkafka producer at full speed with the destination's settings (idempotent,
/// `acks=all`, lz4, `linger.ms=5`): `n` records like the forwarded events, keyed by user, with
/// the destination's two headers (`messageId`, `type`), to the topic `bench.bare`; records per second from the first send to the last delivery report.
async fn bare_producer(brokers: &str, n: usize) -> Result<f64> {
    use futures::StreamExt;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let writer =
        tideway_extract::kafka::KafkaWriter::new(&[brokers.to_string()], &Default::default())
            .await?;
    writer.create_topic("bench.bare", 3).await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()?;
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let event = json!({"type": "track", "userId": format!("u{}", i % 5000),
                "event": "Order Completed", "messageId": format!("bare-{i}"),
                "properties": {"revenue": 12.5, "currency": "USD", "sku": format!("sku-{}", i % 100)},
                "timestamp": "2026-12-02T12:00:00.000Z", "receivedAt": "2026-12-02T12:00:00.012Z",
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"}}});
            (format!("u{}", i % 5000), event.to_string().into_bytes())
        })
        .collect();
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for (i, (key, value)) in records.iter().enumerate() {
        // The destination's headers too: the broker stores each one (tansu: a row apiece).
        let id = format!("bare-{i}");
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "messageId",
                value: Some(id.as_bytes()),
            })
            .insert(rdkafka::message::Header {
                key: "type",
                value: Some("track".as_bytes()),
            });
        let mut record = FutureRecord::to("bench.bare")
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if let Some(report) = pending.next().await {
                        report?.map_err(|(e, _)| e)?;
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    while let Some(report) = pending.next().await {
        report?.map_err(|(e, _)| e)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(
    dir: &Path,
    light: usize,
    rate: f64,
    events: usize,
    kafka: Option<String>,
    batch: usize,
) -> Result<()> {
    let arrivals: Arrivals = Arc::default();
    let destination = match &kafka {
        Some(brokers) => {
            let writer = tideway_extract::kafka::KafkaWriter::new(
                std::slice::from_ref(brokers),
                &Default::default(),
            )
            .await?;
            writer.create_topic("bench.events", 3).await?;
            format!(
                "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"bench.events\"\nbatch_size = 5000\n"
            )
        }
        None => {
            let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let hook = format!("http://{}/hook", receiver.local_addr()?);
            let app = Router::new().route("/hook", post(receive));
            tokio::spawn(async move { axum::serve(receiver, app).await });
            format!("type = \"webhook\"\nurl = \"{hook}\"\nbatch_size = 500\nconcurrency = 4\n")
        }
    };
    std::fs::write(
        dir.join("tideway.toml"),
        format!(
            "[project]\nname = \"bench-forward\"\n\n[collect]\nload_batch_seconds = 1.0\n\n\
             [collect.sources.web]\nwrite_key = \"wk_bench\"\n\n\
             [destinations.out]\n{destination}\n\
             [connections.web_out]\nsource = \"web\"\ndestination = \"out\"\nbatch_size = {batch}\n"
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
    // Delivered events, as the connection announces them.
    let mut sent = running[0].subscribe();
    let noted = arrivals.clone();
    let watching = tokio::spawn(async move {
        loop {
            match sent.recv().await {
                Ok(s) if s.outcome == "delivered" => {
                    if let Some(id) = s.message_id {
                        noted
                            .lock()
                            .expect("arrivals lock")
                            .entry(id)
                            .or_insert_with(Instant::now);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
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
        "only {} of {light} light-load events were delivered (connection at offset {}, log end {})",
        delays.len(),
        running[0].position(),
        log.stats().end
    );
    delays.sort();
    // The throughput phase goes unwatched: with nobody subscribed the connection announces
    // nothing, as in production without `tideway tail`.
    watching.abort();

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
    // Every record the log holds has reached its final outcome at the connection.
    let end = log.stats().end;
    let deadline = Instant::now() + Duration::from_secs(600);
    while running.iter().any(|c| c.position() < end) {
        ensure!(
            Instant::now() < deadline,
            "forwarding did not finish within 600 s"
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
    let to = match &kafka {
        Some(b) => format!("Kafka at {b}, topic bench.events"),
        None => "a webhook on loopback".to_string(),
    };
    println!("live forwarding (collector -> event log -> connection -> {to})");
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
    if let Some(brokers) = &kafka {
        let bare = bare_producer(brokers, batches * 100).await?;
        println!(
            "  bare rdkafka producer, same broker, same run, {} records: {:.0} records/s; end to end = {:.2}x of it",
            batches * 100,
            bare,
            fwd_rate / bare
        );
    }
    Ok(())
}
