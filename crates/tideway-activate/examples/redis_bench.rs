//! Throughput of the Redis destination: delivers hash-mode `identify` events (one `HSET` of two
//! traits each) in pipelines of 1000 events, 4 pipelines in flight, and prints events/s.
//!
//! ```sh
//! source .ci/redis.sh                       # or any server: TIDEWAY_REDIS=redis://host:port
//! cargo run --release --example redis_bench [-- EVENTS]     # EVENTS: 1000000 by default
//! redis-benchmark -h 127.0.0.1 -p PORT -q -n 1000000 -P 1000 -t hset   # the peer, same server
//! ```
//!
//! It writes the keys `tideway-bench:profile:<n>` and removes them at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use tideway_activate::destination::redis::{KeyTemplate, Redis, RedisConfig};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_core::config::Secret;

const BATCH: usize = 1000;
const CONCURRENCY: usize = 4;
const PREFIX: &str = "tideway-bench:profile:";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("TIDEWAY_REDIS") else {
        eprintln!("set TIDEWAY_REDIS=redis://host:port (`source .ci/redis.sh` starts a server)");
        std::process::exit(2);
    };
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1_000_000,
    };
    let mut config = RedisConfig::new(
        Secret::new(url.as_str()),
        KeyTemplate::parse(&format!("{PREFIX}{{userId}}"))?,
    );
    config.batch_size = BATCH;
    config.concurrency = CONCURRENCY;
    let redis = Arc::new(Redis::new("bench", config));
    redis.healthcheck().await?;

    let events: Arc<Vec<OutboundEvent>> = Arc::new(
        (0..n)
            .map(|i| OutboundEvent {
                origin: i.to_string(),
                op: Op::Upsert,
                event: json!({
                    "type": "identify",
                    "userId": i.to_string(),
                    "traits": { "churn_score": (i % 1000) as f64 / 1000.0, "plan": "pro" },
                }),
            })
            .collect(),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..redis.limits().concurrency)
        .map(|_| {
            let (redis, events, next) = (redis.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                let mut not_delivered = 0;
                loop {
                    let start = next.fetch_add(BATCH, Ordering::Relaxed);
                    if start >= events.len() {
                        return not_delivered;
                    }
                    let batch = &events[start..(start + BATCH).min(events.len())];
                    let outcomes = redis.deliver(batch).await;
                    not_delivered += outcomes
                        .iter()
                        .filter(|o| **o != Outcome::Delivered)
                        .count();
                }
            })
        })
        .collect();
    let mut not_delivered = 0;
    for worker in workers {
        not_delivered += worker.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "redis destination: {n} events in {seconds:.2} s: {:.0} events/s (hash mode, batch \
         {BATCH}, concurrency {CONCURRENCY}, {not_delivered} not delivered)",
        n as f64 / seconds
    );

    // Check one, then remove what was written.
    let client = ::redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let score: Option<String> = ::redis::cmd("HGET")
        .arg(format!("{PREFIX}{}", n - 1))
        .arg("churn_score")
        .query_async(&mut con)
        .await?;
    assert_eq!(
        score.as_deref().map(str::parse::<f64>),
        Some(Ok(((n - 1) % 1000) as f64 / 1000.0))
    );
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut unlink = ::redis::cmd("UNLINK");
        for i in chunk {
            unlink.arg(format!("{PREFIX}{i}"));
        }
        unlink.query_async::<()>(&mut con).await?;
    }
    if not_delivered > 0 {
        return Err(format!("{not_delivered} events were not delivered").into());
    }
    Ok(())
}
