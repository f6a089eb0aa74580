//! The Kafka destination against a bare rdkafka producer, in the same run, on the same broker.
//!
//! ```text
//! source .ci/kafka.sh
//! cargo run --release -p tideway-activate --example kafka_bench -- [EVENTS] [CONCURRENCY] [ROUNDS]
//! ```
//!
//! Both sides produce the same records (one topic each, 3 partitions, ~500-byte JSON values
//! keyed by user, `messageId` and `type` headers) with the same librdkafka settings (the
//! destination's own: idempotent, `acks=all`, lz4, `linger.ms=5`). The destination goes
//! through the delivery layer (batches of 5000, CONCURRENCY calls in flight) from events as
//! JSON values; the bare producer sends bytes serialized before its clock starts, and counts
//! delivery reports in a callback. Rounds alternate (bare, destination, bare, ...) and the best
//! of each side is compared.
//!
//! Run it against a broker of its own, not the one the tests use: tansu 0.6 keeps record
//! headers in an SQLite table without an index, so after a million records every fetch on that
//! broker (and deleting the topics) slows to a crawl.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde_json::json;
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::kafka::{self, KafkaConfig, TopicTemplate};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn event(seq: usize) -> OutboundEvent {
    let user = format!("user-{}", seq % 10_000);
    OutboundEvent {
        origin: seq.to_string(),
        op: Op::Upsert,
        event: json!({
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "anonymousId": format!("anon-{:08x}", seq.wrapping_mul(2_654_435_761) % 0xffff_ffff),
            "messageId": format!("bench-{seq:012}"),
            "timestamp": "2026-01-15T10:20:30.123Z",
            "context": {"library": {"name": "tideway-bench", "version": "1.0.0"}, "ip": "203.0.113.7"},
            "properties": {
                "order_id": format!("o-{seq}"),
                "total": (seq % 997) as f64 + 0.99,
                "currency": "EUR",
                "products": [{"sku": format!("sku-{}", seq % 311), "quantity": 1 + seq % 4}],
                "coupon": "WINTER26",
                "note": "padding to about five hundred bytes per event, as a typical track call",
            },
        }),
    }
}

async fn create_topic(brokers: &str, topic: &str) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?
    {
        r.map_err(|(t, code)| format!("create topic {t}: {code}"))?;
    }
    Ok(())
}

/// Counts delivery reports.
#[derive(Default)]
struct Counter {
    done: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The bare producer: pre-serialized records, sent as fast as the queue takes them.
fn bare(
    config: &ClientConfig,
    topic: &str,
    records: &[(String, Vec<u8>, String)],
) -> Result<Duration, Error> {
    let producer: ThreadedProducer<Counter> = config.create_with_context(Counter::default())?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let start = Instant::now();
    for (key, value, id) in records {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "messageId",
                value: Some(id.as_bytes()),
            })
            .insert(Header {
                key: "type",
                value: Some("track".as_bytes()),
            });
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(600))?;
    let elapsed = start.elapsed();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 || ctx.done.load(Ordering::Relaxed) != records.len() as u64 {
        return Err(format!("bare producer: {failed} failed").into());
    }
    Ok(elapsed)
}

async fn through_destination(
    delivery: &Delivery,
    events: &[OutboundEvent],
) -> Result<Duration, Error> {
    let start = Instant::now();
    let results = delivery.deliver(events, &|_| {}).await;
    let elapsed = start.elapsed();
    let failed = results
        .iter()
        .filter(|d| d.outcome != Outcome::Delivered)
        .count();
    if failed > 0 {
        return Err(format!(
            "destination: {failed} not delivered, e.g. {:?}",
            results.iter().find(|d| d.outcome != Outcome::Delivered)
        )
        .into());
    }
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let brokers =
        std::env::var("TIDEWAY_KAFKA").map_err(|_| "set TIDEWAY_KAFKA (source .ci/kafka.sh)")?;
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(2), |a| a.parse())?;

    let events: Vec<OutboundEvent> = (0..n).map(event).collect();
    let records: Vec<(String, Vec<u8>, String)> = events
        .iter()
        .map(|e| {
            (
                e.user_id().unwrap_or_default(),
                serde_json::to_vec(&e.event).unwrap(),
                e.origin.clone(),
            )
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.1.len()).sum();
    println!(
        "{n} events, {} bytes each on average, broker {brokers}, concurrency {concurrency}",
        bytes / n.max(1)
    );

    let run = format!("bench-{}", std::process::id());
    let (mut best_bare, mut best_dest) = (Duration::MAX, Duration::MAX);
    for round in 0..rounds {
        let topic = format!("{run}-bare-{round}");
        create_topic(&brokers, &topic).await?;
        let mut config = KafkaConfig::new([brokers.as_str()], TopicTemplate::parse(&topic)?);
        config.batch_size = 5000;
        config.concurrency = concurrency;
        let client_config = kafka::build("bare", config).client_config();
        let t = tokio::task::block_in_place(|| bare(&client_config, &topic, &records))?;
        println!(
            "round {round}: bare rdkafka producer: {:>9.0} events/s ({:.1} s)",
            n as f64 / t.as_secs_f64(),
            t.as_secs_f64()
        );
        best_bare = best_bare.min(t);

        let topic = format!("{run}-dest-{round}");
        create_topic(&brokers, &topic).await?;
        let mut config = KafkaConfig::new([brokers.as_str()], TopicTemplate::parse(&topic)?);
        config.batch_size = 5000;
        config.concurrency = concurrency;
        let dest: Arc<dyn Destination> = Arc::new(kafka::build("bench", config));
        dest.healthcheck().await?;
        let delivery = Delivery::new(dest, RetryPolicy::default());
        let t = through_destination(&delivery, &events).await?;
        println!(
            "round {round}: kafka destination:    {:>9.0} events/s ({:.1} s)",
            n as f64 / t.as_secs_f64(),
            t.as_secs_f64()
        );
        best_dest = best_dest.min(t);
    }
    // The destination's own work per event (topic, key, JSON, headers), without the producer:
    // its ceiling where the broker is not the limit.
    let own = kafka::build(
        "cpu",
        KafkaConfig::new([brokers.as_str()], TopicTemplate::parse("t.{type}")?),
    );
    let start = Instant::now();
    let built = events.iter().filter(|e| own.record(e).is_ok()).count();
    let t = start.elapsed();
    println!(
        "the destination's own work (records built, one thread): {:.0} events/s",
        built as f64 / t.as_secs_f64()
    );
    let bare_rate = n as f64 / best_bare.as_secs_f64();
    let dest_rate = n as f64 / best_dest.as_secs_f64();
    println!(
        "best: bare {bare_rate:.0} events/s ({:.1} MB/s), destination {dest_rate:.0} events/s; ratio {:.2}",
        bare_rate * (bytes / n.max(1)) as f64 / 1e6,
        dest_rate / bare_rate
    );
    Ok(())
}
