//! The Kafka destination against a real Kafka-protocol broker (tansu, started by
//! `.ci/kafka.sh`), read back with a plain consumer.
//!
//! Tests that need a broker print why they are skipped when `TIDEWAY_KAFKA` (or
//! `TIDEWAY_KAFKA_SASL`) is unset; the outage test also needs the `tansu` command, as it starts
//! (and kills) a broker of its own. Each test writes its own topics, so they can run at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::kafka::{
    self, KafkaConfig, Sasl, SaslMechanism, SecurityProtocol, TopicTemplate,
};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_core::config::Secret;

fn broker(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            eprintln!("skipped: {var} is unset; `source .ci/kafka.sh` starts a broker and sets it");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn config(brokers: &str, topic: &str) -> KafkaConfig {
    KafkaConfig::new([brokers], TopicTemplate::parse(topic).unwrap())
}

fn sasl(password: &str) -> Sasl {
    Sasl {
        mechanism: SaslMechanism::ScramSha512,
        username: "tideway".into(),
        password: Secret::new(password),
    }
}

/// Client properties for the admin client and the consumer.
fn client(brokers: &str, sasl: Option<&Sasl>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set_log_level(RDKafkaLogLevel::Error);
    if let Some(s) = sasl {
        c.set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanism", s.mechanism.as_str())
            .set("sasl.username", &s.username)
            .set("sasl.password", s.password.expose());
    }
    c
}

async fn create_topics(brokers: &str, sasl: Option<&Sasl>, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(brokers, sasl).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&new, &opts).await? {
        if let Err((name, code)) = r {
            bail!("create topic {name}: {code}");
        }
    }
    Ok(())
}

/// A record read back.
#[derive(Debug, Clone)]
struct Read {
    topic: String,
    partition: i32,
    key: Option<String>,
    value: Option<Value>,
    headers: BTreeMap<String, String>,
}

/// Every record of `topics` (all partitions, from the start), waiting until there are `n`,
/// or for a while longer (to see any extra) once there are.
async fn read(
    brokers: &str,
    sasl: Option<&Sasl>,
    topics: &[String],
    n: usize,
) -> Result<Vec<Read>> {
    let mut c = client(brokers, sasl);
    c.set("group.id", unique("tideway-test"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // tansu serves a large fetch slowly: small ones show progress sooner.
        .set("max.partition.fetch.bytes", "65536");
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = c.create()?;
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
            for p in md.topics()[0].partitions() {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut done_at: Option<Instant> = None;
        while Instant::now() < deadline
            && done_at.is_none_or(|d| d.elapsed() < Duration::from_secs(1))
        {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_string(), v.unwrap_or_default())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                topic: m.topic().to_string(),
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(serde_json::from_slice).transpose()?,
                headers,
            });
            if out.len() >= n && done_at.is_none() {
                done_at = Some(Instant::now());
            }
        }
        Ok(out)
    })
    .await?
}

fn event(op: Op, value: Value) -> OutboundEvent {
    OutboundEvent {
        origin: value["messageId"].as_str().unwrap_or("-").to_string(),
        op,
        event: value,
    }
}

/// Event `seq` of a stream where users take turns and every third event is an identify.
fn stream_event(seq: usize, users: usize, padding: usize) -> OutboundEvent {
    let user = format!("user-{}", seq % users);
    let value = if seq.is_multiple_of(3) {
        json!({"type": "identify", "userId": user, "messageId": format!("m-{seq}"),
               "traits": {"seq": seq, "email": format!("{user}@example.com")}})
    } else {
        json!({"type": "track", "event": "Order Completed", "userId": user,
               "messageId": format!("m-{seq}"),
               "properties": {"seq": seq, "note": "x".repeat(padding)}})
    };
    event(Op::Upsert, value)
}

fn seq_of(r: &Read) -> u64 {
    let v = r.value.as_ref().expect("a value");
    v["traits"]["seq"]
        .as_u64()
        .or_else(|| v["properties"]["seq"].as_u64())
        .expect("a seq")
}

/// Checks that each key's records (in the order read, which is offset order per partition)
/// are all in one partition of a topic and in increasing `seq`.
fn assert_in_order_per_key(reads: &[Read]) {
    let mut last: BTreeMap<(String, String), (i32, u64)> = BTreeMap::new();
    for r in reads.iter().filter(|r| r.value.is_some()) {
        let key = (r.topic.clone(), r.key.clone().expect("keyed"));
        let seq = seq_of(r);
        if let Some((partition, prev)) = last.insert(key.clone(), (r.partition, seq)) {
            assert_eq!(partition, r.partition, "{key:?} is in one partition");
            assert!(prev < seq, "{key:?}: seq {seq} came after {prev}");
        }
    }
}

#[tokio::test]
async fn events_go_to_topics_by_type_keyed_by_user_in_order() -> Result<()> {
    let Some(brokers) = broker("TIDEWAY_KAFKA") else {
        return Ok(());
    };
    let prefix = unique("kafka-types");
    let topics = vec![format!("{prefix}.identify"), format!("{prefix}.track")];
    create_topics(&brokers, None, &topics).await?;
    let mut c = config(&brokers, &format!("{prefix}.{{type}}"));
    c.batch_size = 100;
    let dest = Arc::new(kafka::build("bus", c));
    dest.healthcheck().await?;
    let events: Vec<OutboundEvent> = (0..600).map(|seq| stream_event(seq, 7, 50)).collect();
    for batch in events.chunks(100) {
        let outcomes = dest.deliver(batch).await;
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Delivered),
            "{outcomes:?}"
        );
    }

    let reads = read(&brokers, None, &topics, events.len()).await?;
    assert_eq!(reads.len(), events.len());
    let sent: BTreeMap<&str, &OutboundEvent> =
        events.iter().map(|e| (e.origin.as_str(), e)).collect();
    for r in &reads {
        let id = &r.headers["messageId"];
        let e = sent[id.as_str()];
        assert_eq!(
            r.value.as_ref(),
            Some(&e.event),
            "the value is the event as sent"
        );
        assert_eq!(r.headers["type"], e.kind());
        assert_eq!(r.topic, format!("{prefix}.{}", e.kind()));
        assert_eq!(r.key, e.user_id());
    }
    assert_in_order_per_key(&reads);
    Ok(())
}

#[tokio::test]
async fn a_delete_is_a_tombstone_for_its_key() -> Result<()> {
    let Some(brokers) = broker("TIDEWAY_KAFKA") else {
        return Ok(());
    };
    let topic = unique("kafka-delete");
    create_topics(&brokers, None, std::slice::from_ref(&topic)).await?;
    let dest = kafka::build("bus", config(&brokers, &topic));
    let upsert =
        json!({"type": "identify", "userId": "u-1", "messageId": "m-1", "traits": {"seq": 1}});
    let delete =
        json!({"type": "identify", "userId": "u-1", "messageId": "m-2", "traits": {"seq": 2}});
    let outcomes = dest
        .deliver(&[event(Op::Upsert, upsert.clone()), event(Op::Delete, delete)])
        .await;
    assert_eq!(outcomes, [Outcome::Delivered, Outcome::Delivered]);

    let reads = read(&brokers, None, std::slice::from_ref(&topic), 2).await?;
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[0].value.as_ref(), Some(&upsert));
    assert_eq!(reads[1].key.as_deref(), Some("u-1"));
    assert_eq!(reads[1].value, None, "a tombstone has no value");
    assert_eq!(reads[1].headers["messageId"], "m-2");
    assert_eq!(reads[1].headers["op"], "delete");
    assert_eq!(reads[0].partition, reads[1].partition);
    Ok(())
}

#[tokio::test]
async fn an_event_missing_a_part_of_the_topic_is_rejected_alone() -> Result<()> {
    let Some(brokers) = broker("TIDEWAY_KAFKA") else {
        return Ok(());
    };
    let prefix = unique("kafka-parts");
    let topic = format!("{prefix}.order_completed");
    create_topics(&brokers, None, std::slice::from_ref(&topic)).await?;
    let dest = kafka::build("bus", config(&brokers, &format!("{prefix}.{{event}}")));
    let batch = vec![
        stream_event(1, 3, 10),
        stream_event(0, 3, 10), // an identify: no `event`
        stream_event(2, 3, 10),
    ];
    let outcomes = dest.deliver(&batch).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(outcomes[2], Outcome::Delivered);
    let Outcome::Rejected(error) = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    assert!(error.message.contains("needs `event`"), "{error}");
    assert_eq!(read(&brokers, None, &[topic], 2).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_topic_that_does_not_exist_is_rejected_naming_it() -> Result<()> {
    let Some(brokers) = broker("TIDEWAY_KAFKA") else {
        return Ok(());
    };
    let prefix = unique("kafka-missing");
    create_topics(&brokers, None, &[format!("{prefix}.identify")]).await?;
    let mut c = config(&brokers, &format!("{prefix}.{{type}}"));
    // How long librdkafka waits for a missing topic to appear (default 30 s).
    c.properties.insert(
        "topic.metadata.propagation.max.ms".into(),
        Secret::new("1000"),
    );
    let dest = kafka::build("bus", c);
    let outcomes = dest
        .deliver(&[stream_event(0, 2, 10), stream_event(1, 2, 10)])
        .await;
    assert_eq!(outcomes[0], Outcome::Delivered, "{outcomes:?}");
    let Outcome::Rejected(error) = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    assert!(
        error.message.contains(&format!("topic `{prefix}.track`"))
            && error.message.contains("create the topic"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_broker_is_retry_for_every_event_in_bounded_time() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    let mut c = config(&address, "events.{type}");
    c.message_timeout_ms = 1500;
    let dest = kafka::build("bus", c);
    let events: Vec<OutboundEvent> = (0..50).map(|seq| stream_event(seq, 5, 10)).collect();
    let start = Instant::now();
    let outcomes = dest.deliver(&events).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(outcomes.len(), events.len());
    for o in &outcomes {
        let Outcome::Retry { error, .. } = o else {
            panic!("an unreachable broker is a retry: {o:?}");
        };
        assert!(error.message.contains(&address), "{error}");
    }
    let error = dest.healthcheck().await.unwrap_err();
    assert!(
        error
            .message
            .contains(&format!("cannot reach the kafka brokers {address}")),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn sasl_the_right_password_delivers_and_a_wrong_one_fails_the_healthcheck() -> Result<()> {
    let Some(brokers) = broker("TIDEWAY_KAFKA_SASL") else {
        return Ok(());
    };
    let right = sasl("tideway-secret");
    let topic = unique("kafka-sasl");
    create_topics(&brokers, Some(&right), std::slice::from_ref(&topic)).await?;
    let mut c = config(&brokers, &topic);
    c.security_protocol = SecurityProtocol::SaslPlaintext;
    c.sasl = Some(right.clone());
    let dest = kafka::build("bus", c.clone());
    dest.healthcheck().await?;
    let events: Vec<OutboundEvent> = (0..20).map(|seq| stream_event(seq, 4, 10)).collect();
    let outcomes = dest.deliver(&events).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(read(&brokers, Some(&right), &[topic], 20).await?.len(), 20);

    c.sasl = Some(sasl("not-the-password"));
    c.message_timeout_ms = 2000;
    let wrong = kafka::build("bus", c);
    // Events wait for the credentials to be fixed rather than being dead-lettered.
    let outcomes = wrong.deliver(&events[..2]).await;
    for o in &outcomes {
        let Outcome::Retry { error, .. } = o else {
            panic!("a refused login is a retry: {o:?}");
        };
        assert!(error.message.contains("login of user `tideway`"), "{error}");
    }
    let error = wrong.healthcheck().await.unwrap_err();
    assert!(
        error
            .message
            .contains("SASL SCRAM-SHA-512 login of user `tideway`")
            && error.message.contains("`sasl.password`"),
        "{error}"
    );
    assert!(!error.message.contains("not-the-password"));
    Ok(())
}

/// A tansu broker of the test's own, storing in SQLite in `dir`, so it can be killed and
/// started again with its data.
struct OwnBroker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    fn start() -> Result<Option<OwnBroker>> {
        if Command::new("tansu").arg("--version").output().is_err() {
            eprintln!("skipped: the `tansu` command is missing; `source .ci/kafka.sh` installs it");
            return Ok(None);
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut broker = OwnBroker {
            dir: tempfile::tempdir()?,
            port,
            child: None,
        };
        broker.restart()?;
        Ok(Some(broker))
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) -> Result<()> {
        let url = format!("tcp://{}", self.address());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))?;
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://outage.db"])
            .current_dir(self.dir.path())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting tansu")?;
        self.child = Some(child);
        wait_for_port(self.port, self.dir.path())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_port(port: u16, dir: &Path) -> Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default();
    bail!("tansu did not listen on {port}: {log}")
}

#[tokio::test]
async fn a_broker_outage_mid_load_loses_nothing_duplicates_nothing_and_keeps_order() -> Result<()> {
    if broker("TIDEWAY_KAFKA").is_none() {
        return Ok(());
    }
    let Some(own) = OwnBroker::start()? else {
        return Ok(());
    };
    let brokers = own.address();
    let topic = unique("kafka-outage");
    create_topics(&brokers, None, std::slice::from_ref(&topic)).await?;
    let mut c = config(&brokers, &topic);
    c.batch_size = 200;
    c.concurrency = 4;
    c.message_timeout_ms = 60_000; // longer than the outage: the producer rides it out
    let dest: Arc<dyn Destination> = Arc::new(kafka::build("bus", c));
    let delivery = Delivery::new(
        dest,
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
    );
    let events: Vec<OutboundEvent> = (0..6_000).map(|seq| stream_event(seq, 40, 100)).collect();
    let chunks: Vec<&[OutboundEvent]> = events.chunks(600).collect();
    let mut retried = 0;
    let mut longest = Duration::ZERO;
    let mut own = Some(own);
    let mut outage = None;
    for (n, chunk) in chunks.iter().enumerate() {
        if n == 3 {
            // Mid-chunk: the broker dies with records in flight and comes back 2 s later.
            let mut broker = own.take().expect("the broker");
            outage = Some(std::thread::spawn(move || -> Result<OwnBroker> {
                std::thread::sleep(Duration::from_millis(20));
                broker.kill();
                std::thread::sleep(Duration::from_secs(2));
                broker.restart()?;
                Ok(broker)
            }));
        }
        let mut todo: Vec<OutboundEvent> = chunk.to_vec();
        let start = Instant::now();
        for _round in 0..10 {
            let results = delivery.deliver_in_order(&todo, &|_| {}).await;
            let mut again = Vec::new();
            for (e, d) in todo.iter().zip(results) {
                match d.outcome {
                    Outcome::Delivered => {}
                    Outcome::Retry { .. } => again.push(e.clone()),
                    Outcome::Rejected(error) => panic!("{}: rejected: {error}", e.origin),
                }
            }
            retried += again.len();
            todo = again;
            if todo.is_empty() {
                break;
            }
        }
        assert!(todo.is_empty(), "{} events never delivered", todo.len());
        longest = longest.max(start.elapsed());
    }
    let own = outage
        .expect("an outage")
        .join()
        .expect("the outage thread")?;
    assert!(
        longest > Duration::from_millis(1500),
        "a chunk was being delivered during the outage (the longest took {longest:?})"
    );
    let log = std::fs::read_to_string(own.dir.path().join("tansu.log"))?;
    eprintln!(
        "longest chunk: {longest:?}; duplicates the broker dropped: {}",
        log.matches("DuplicateSequenceNumber").count()
    );
    eprintln!("events retried by the delivery layer: {retried}");

    let reads = read(&brokers, None, std::slice::from_ref(&topic), events.len()).await?;
    let ids: BTreeSet<&str> = reads
        .iter()
        .map(|r| r.headers["messageId"].as_str())
        .collect();
    assert_eq!(ids.len(), events.len(), "every event is there");
    assert_eq!(reads.len(), events.len(), "and none twice");
    assert_in_order_per_key(&reads);
    Ok(())
}
