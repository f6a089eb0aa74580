//! Upserts per second through the Postgres destination, next to a bare `COPY` of the same rows
//! into an unindexed table, in the same run against the same server.
//!
//! ```sh
//! source .ci/postgres.sh
//! cargo run --release -p tideway-activate --example postgres_bench -- \
//!     [--events 1000000] [--keys 200000] [--batch 5000] [--concurrency 4]
//! ```
//!
//! The events are identify calls with 8 traits (text, bigint, double, boolean, timestamptz,
//! jsonb); event `i` is about key `i % keys`, so after the first `keys` events every upsert
//! updates a stored row. They go through the delivery layer (`Delivery::deliver`) in chunks of
//! 200,000, as a sync run sends them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::postgres::{self, PostgresConfig, TableName};
use tideway_activate::destination::{Op, OutboundEvent, Outcome};
use tideway_core::config::Secret;

const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const CITIES: [&str; 5] = ["Oslo", "Lima", "Pune", "Accra", "Quito"];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v}"))
        })
        .unwrap_or(default)
}

fn traits(i: usize) -> Value {
    json!({
        "email": format!("user{i}@example.com"),
        "plan": PLANS[i % 4],
        "score": (i * 7) % 1000,
        "ltv": (i % 10_000) as f64 * 1.25,
        "active": i.is_multiple_of(3),
        "city": CITIES[i % 5],
        "signed_up": format!("2026-{:02}-{:02}T10:00:00Z", i % 12 + 1, i % 28 + 1),
        "tags": ["a", PLANS[i % 4]],
    })
}

fn event(i: usize, keys: usize) -> OutboundEvent {
    let user = format!("user-{}", i % keys);
    OutboundEvent {
        origin: user.clone(),
        op: Op::Upsert,
        event: json!({"type": "identify", "userId": user, "messageId": format!("m-{i}"),
                      "timestamp": "2026-12-01T10:00:00.000Z", "traits": traits(i)}),
    }
}

/// The same row as COPY text (tab-separated), columns as the destination stores them.
fn copy_line(i: usize, keys: usize, out: &mut String) {
    use std::fmt::Write;
    writeln!(
        out,
        "user-{}\tuser{i}@example.com\t{}\t{}\t{}\t{}\t{}\t2026-{:02}-{:02}T10:00:00Z\t[\"a\", \"{}\"]\tm-{i}",
        i % keys,
        PLANS[i % 4],
        (i * 7) % 1000,
        (i % 10_000) as f64 * 1.25,
        i.is_multiple_of(3),
        CITIES[i % 5],
        i % 12 + 1,
        i % 28 + 1,
        PLANS[i % 4],
    )
    .unwrap();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut url = std::env::var("TIDEWAY_POSTGRES")
        .map_err(|_| "TIDEWAY_POSTGRES is unset; `source .ci/postgres.sh` starts a server")?;
    // Both sides on the same transport: the peer's COPY below is plain, so is the destination
    // unless the URL asks for TLS.
    if !url.contains("sslmode=") {
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("sslmode=disable");
    }
    let events = arg("--events", 1_000_000);
    let keys = arg("--keys", 200_000);
    let batch = arg("--batch", 5000);
    let concurrency = arg("--concurrency", 4);
    let stamp = std::process::id();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    // The peer: one bare COPY of the same rows into an unindexed table.
    let copy_table = format!("bench_copy_{stamp}");
    client
        .batch_execute(&format!(
            "CREATE TABLE {copy_table} (user_id text, email text, plan text, score bigint, \
             ltv double precision, active boolean, city text, signed_up timestamptz, tags jsonb, \
             _tideway_message_id text)"
        ))
        .await?;
    let mut data = String::with_capacity(events * 160);
    for i in 0..events {
        copy_line(i, keys, &mut data);
    }
    let start = Instant::now();
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {copy_table} FROM STDIN"))
        .await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in data.as_bytes().chunks(1 << 20) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    let copied = sink.as_mut().finish().await?;
    let copy_time = start.elapsed();
    drop(data);

    // The destination: upserts by key through the delivery layer.
    let table = format!("bench_upsert_{stamp}");
    let mut config = PostgresConfig::new(
        Secret::new(url.clone()),
        TableName::parse(&table)?,
        &["user_id"],
    );
    config.batch_size = batch;
    config.concurrency = concurrency;
    let destination = Arc::new(postgres::build("bench", config));
    let delivery = Delivery::new(
        destination,
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
    );
    let mut delivered = 0usize;
    let mut failed = 0usize;
    let mut busy = Duration::ZERO;
    const CHUNK: usize = 200_000;
    for from in (0..events).step_by(CHUNK) {
        let chunk: Vec<OutboundEvent> = (from..(from + CHUNK).min(events))
            .map(|i| event(i, keys))
            .collect();
        let start = Instant::now();
        let out = delivery.deliver(&chunk, &|_| {}).await;
        busy += start.elapsed();
        for d in out {
            match d.outcome {
                Outcome::Delivered => delivered += 1,
                other => {
                    if failed == 0 {
                        eprintln!("first failure: {other:?}");
                    }
                    failed += 1;
                }
            }
        }
    }
    let stored: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    let copy_rate = copied as f64 / copy_time.as_secs_f64();
    let upsert_rate = delivered as f64 / busy.as_secs_f64();
    println!(
        "postgres_bench: {events} identify events (8 traits) over {keys} keys, batch {batch}, concurrency {concurrency}"
    );
    println!(
        "  bare COPY into an unindexed table: {copied} rows in {:.2}s = {:.0} rows/s",
        copy_time.as_secs_f64(),
        copy_rate
    );
    println!(
        "  destination upserts:               {delivered} events in {:.2}s = {:.0} upserts/s ({failed} failed, {stored} rows stored)",
        busy.as_secs_f64(),
        upsert_rate
    );
    println!(
        "  upserts / bare COPY: {:.2} ({:.1}x slower)",
        upsert_rate / copy_rate,
        copy_rate / upsert_rate
    );
    client
        .batch_execute(&format!("DROP TABLE {copy_table}; DROP TABLE {table}"))
        .await?;
    if failed > 0 || stored != keys.min(events) as i64 {
        return Err(format!("{failed} events failed; {stored} rows stored for {keys} keys").into());
    }
    Ok(())
}
