//! Kafka: each event produced as one JSON record to a topic named from the event.
//!
//! ```toml
//! [destinations.bus]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"
//! topic = "events.{type}"          # identify → events.identify, track → events.track
//! # key = "userId"                 # userId (else anonymousId) | anonymousId | messageId | "traits.account_id"
//! # compression = "lz4"            # none | gzip | snappy | lz4
//! ```
//!
//! Every key is in [`config`]'s docs. The client is librdkafka ([`rdkafka`]).
//!
//! # Records
//!
//! | part      | what                                                                        |
//! |-----------|-----------------------------------------------------------------------------|
//! | topic     | the `topic` template rendered from the event (placeholders snake-cased)     |
//! | key       | the `key` choice's value as UTF-8; no value: a null key (a random partition) |
//! | value     | the event as JSON, exactly as the destination got it                        |
//! | headers   | `messageId` and `type` of the event, when it has them; `op: delete` on deletes |
//! | timestamp | when it was produced (the event's own `timestamp` is in the value)           |
//!
//! A delete (a sync's `on_delete = "delete"`) with a key is a **tombstone**: the key and a null
//! value, which a compacted topic reads as "forget this key". Without a key a tombstone means
//! nothing, so the event is produced as JSON with `"tideway": {"op": "delete"}` added (as the
//! webhook does) and its `type` kept, and a consumer can still tell it is a delete.
//!
//! Keys are partitioned with `murmur2_random`, the Java client's partitioner, so Tideway and a
//! Java producer put one key in the same partition.
//!
//! # Delivery and order
//!
//! One idempotent producer per destination (`enable.idempotence=true`, `acks=all`, at most 5
//! requests in flight), made on first use. A delivery call queues its whole batch (waiting when
//! the producer's queue is full), then waits for every record's delivery report:
//!
//! - delivered → `Delivered`;
//! - a refusal that repeating cannot change (record too large, invalid record or topic name,
//!   topic authorization failed, unknown topic on brokers that do not create topics, policy
//!   violation, ...) → `Rejected`, naming the topic and the broker's error;
//! - anything else (brokers unreachable, `message_timeout_ms` passed, not enough replicas, a
//!   failed SASL login, ...) → `Retry`.
//!
//! Records with one key go to one partition and are written in the order they were given: the
//! queueing of one call is not interleaved with another's, so calls in flight at once keep
//! their order too. Within `message_timeout_ms` the producer retries by itself, and its
//! idempotence makes those retries exact: the broker drops a record it already has (same
//! producer id and sequence number) and refuses one out of order, so an outage shorter than
//! `message_timeout_ms` costs neither order nor a duplicate.
//!
//! What idempotence does not cover: a record that was reported failed (`Retry`) after
//! `message_timeout_ms` may still have been written: the broker can have stored it and the
//! answer been lost. When the delivery layer sends it again it is a new record (the producer
//! has moved on to a new epoch), so it can be written **twice**, and after records of the same
//! key that came later and were written on the first try. The same holds when Tideway itself
//! restarts mid-call. Consumers that must not see a duplicate drop records whose `messageId`
//! header they have already seen; a longer `message_timeout_ms` makes this rarer.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde_json::json;

use super::{BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome};

pub mod config;
#[cfg(test)]
mod tests;

pub use config::{
    Compression, EXAMPLE, KafkaConfig, KeyChoice, Sasl, SaslMechanism, SecurityProtocol,
    TopicTemplate,
};

/// The most bytes of serialized events per delivery call.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// How long a healthcheck waits for the brokers.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the destination named `name` (`[destinations.NAME]`) from a checked configuration.
/// This does not connect: the producer is made on the first delivery or healthcheck.
pub fn build(name: &str, config: KafkaConfig) -> Kafka {
    Kafka {
        name: name.to_string(),
        brokers: config.broker_list(),
        config,
        producer: Mutex::new(None),
        queueing: tokio::sync::Mutex::new(()),
    }
}

/// The producer and what its context saw (librdkafka keeps the context out of reach).
#[derive(Clone)]
struct Client {
    producer: FutureProducer<Context>,
    seen: Arc<Seen>,
}

/// A Kafka destination. See the module docs.
pub struct Kafka {
    name: String,
    config: KafkaConfig,
    brokers: String,
    /// Made on first use; replaced after a fatal error (the idempotent producer stops for good
    /// on, e.g., a sequence gap it cannot repair).
    producer: Mutex<Option<Client>>,
    /// Held while one call queues its batch, so calls in flight at once do not interleave.
    queueing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

/// One event as a record, before it is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub key: Option<String>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// `(name, value)` pairs.
    pub headers: Vec<(&'static str, String)>,
}

impl Kafka {
    /// The configuration the destination was built with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// What `event` becomes, or why it cannot be sent (the message names what is missing).
    pub fn record(&self, event: &OutboundEvent) -> Result<Record, String> {
        let topic = self.config.topic.render(&event.event)?;
        let key = self.config.key.of(&event.event);
        let mut headers = Vec::with_capacity(3);
        if let Some(id) = event.id_field("messageId") {
            headers.push(("messageId", id));
        }
        if !event.kind().is_empty() {
            headers.push(("type", event.kind().to_string()));
        }
        if event.op == Op::Delete {
            headers.push(("op", "delete".to_string()));
        }
        event.op.upsert_or_delete("kafka")?;
        let value = match event.op {
            // A tombstone.
            Op::Delete if key.is_some() => None,
            Op::Delete => {
                let mut marked = event.event.clone();
                if let Some(map) = marked.as_object_mut() {
                    map.insert("tideway".into(), json!({"op": "delete"}));
                }
                Some(serde_json::to_vec(&marked))
            }
            Op::Upsert | Op::Insert | Op::Update => Some(serde_json::to_vec(&event.event)),
        };
        let value = value
            .transpose()
            .map_err(|e| format!("the event cannot be written as JSON: {e}"))?;
        Ok(Record {
            topic,
            key,
            value,
            headers,
        })
    }

    /// The producer, made now if there is none yet or the last one failed fatally.
    fn producer(&self) -> Result<Client, DeliveryError> {
        let mut slot = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            match p.producer.client().fatal_error() {
                None => return Ok(p.clone()),
                Some((code, reason)) => tracing::warn!(
                    destination = %self.name, %code, reason,
                    "the kafka producer stopped on a fatal error; making a new one"
                ),
            }
        }
        let seen = Arc::new(Seen::default());
        let producer = self
            .client_config()
            .create_with_context(Context { seen: seen.clone() })
            .map_err(|e| self.creation_error(e))?;
        let client = Client { producer, seen };
        *slot = Some(client.clone());
        Ok(client)
    }

    /// librdkafka's settings for the producer.
    pub fn client_config(&self) -> ClientConfig {
        let c = &self.config;
        let mut cc = ClientConfig::new();
        for (k, v) in &c.properties {
            cc.set(k, v.expose());
        }
        cc.set("bootstrap.servers", &self.brokers)
            .set("client.id", &c.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", c.compression.as_str())
            .set("linger.ms", c.linger_ms.to_string())
            .set("message.timeout.ms", c.message_timeout_ms.to_string())
            .set("partitioner", "murmur2_random")
            .set("security.protocol", c.security_protocol.as_str())
            .set_log_level(RDKafkaLogLevel::Warning);
        if let Some(sasl) = &c.sasl {
            cc.set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        cc
    }

    fn creation_error(&self, e: KafkaError) -> DeliveryError {
        let message = match e {
            KafkaError::ClientConfig(_, description, key, _) => format!(
                "the kafka producer for {} refused property `{key}`: {description}",
                self.brokers
            ),
            other => format!(
                "the kafka producer for {} cannot be made: {other}",
                self.brokers
            ),
        };
        DeliveryError::refused(None, message)
    }

    /// The outcome of a record of `topic` that failed with `e`.
    fn failure(&self, producer: &Client, topic: &str, e: &KafkaError) -> Outcome {
        let code = e.rdkafka_error_code();
        let seen = producer.seen.get();
        if let Some(code) = code.filter(|c| is_permanent(*c)) {
            let hint = match code {
                RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition => {
                    "; create the topic, or let the brokers create topics on first write"
                }
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                    "; grant the client's principal Write on the topic (ACLs)"
                }
                RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize => {
                    "; the event is larger than the topic's `max.message.bytes` (or the \
                     producer's `message.max.bytes`)"
                }
                _ => "",
            };
            return Outcome::Rejected(DeliveryError::refused(
                None,
                format!("kafka refused the record for topic `{topic}`: {e}{hint}"),
            ));
        }
        let mut message = format!(
            "kafka {}: the record for topic `{topic}` failed: {e}",
            self.brokers
        );
        if let Some((seen_code, reason)) = seen {
            if is_auth(seen_code) {
                message.push_str(&format!(" ({}; {reason})", self.credential()));
            } else if !message.contains(&reason) {
                message.push_str(&format!(" (last broker error: {reason})"));
            }
        }
        Outcome::Retry {
            after: None,
            error: DeliveryError::external(None, message),
        }
    }

    /// Which credentials the brokers refused, for messages (never the password).
    fn credential(&self) -> String {
        match &self.config.sasl {
            Some(s) => format!(
                "the brokers refused the SASL {} login of user `{}`: check `sasl.username` \
                 and `sasl.password` of [destinations.{}]",
                s.mechanism.as_str(),
                s.username,
                self.name
            ),
            None => format!(
                "the brokers refused to authenticate the client: check `security_protocol` and \
                 the `ssl.*` properties of [destinations.{}]",
                self.name
            ),
        }
    }

    /// Queues every record of `batch` (in order) and answers, per event, its delivery report to
    /// wait for or its outcome already known.
    async fn queue(&self, producer: &Client, batch: &[OutboundEvent]) -> Vec<Queued> {
        let _turn = self.queueing.lock().await;
        let mut queued = Vec::with_capacity(batch.len());
        for event in batch {
            let record = match self.record(event) {
                Ok(r) => r,
                Err(message) => {
                    queued.push(Queued::Done(Outcome::Rejected(DeliveryError::refused(
                        None, message,
                    ))));
                    continue;
                }
            };
            let headers = record
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    })
                });
            let mut future: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&record.topic).headers(headers);
            future.key = record.key.as_deref();
            future.payload = record.value.as_deref();
            queued.push(loop {
                match producer.producer.send_result(future) {
                    Ok(report) => break Queued::Sent(record.topic, report),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        future = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => break Queued::Done(self.failure(producer, &record.topic, &e)),
                }
            });
        }
        queued
    }

    async fn check(&self) -> Result<(), DeliveryError> {
        let producer = self.producer()?;
        let topic = self
            .config
            .topic
            .is_static()
            .then(|| self.config.topic.to_string());
        let deadline = Instant::now() + HEALTHCHECK_TIMEOUT;
        loop {
            let p = producer.producer.clone();
            let t = topic.clone();
            // Short tries, so a refused login is reported as soon as it is seen.
            let answer = tokio::task::spawn_blocking(move || {
                p.client()
                    .fetch_metadata(t.as_deref(), Duration::from_millis(1000))
            })
            .await
            .map_err(|e| {
                DeliveryError::external(None, format!("the metadata request panicked: {e}"))
            })?;
            let seen = producer.seen.get();
            match answer {
                Ok(md) => {
                    // Only the named topic: with none named, every topic is listed.
                    let mut named = md.topics().iter().filter(|_| topic.is_some());
                    let missing = named.find_map(|t| {
                        t.error()
                            .map(RDKafkaErrorCode::from)
                            .map(|code| (t.name().to_string(), code))
                    });
                    return match missing {
                        None => Ok(()),
                        Some((name, code)) => Err(DeliveryError::refused(
                            None,
                            format!(
                                "kafka {}: topic `{name}`: {code}; create it, or let the \
                                 brokers create topics on first write",
                                self.brokers
                            ),
                        )),
                    };
                }
                Err(_) if seen.as_ref().is_some_and(|(c, _)| is_auth(*c)) => {
                    let reason = seen.map(|(_, r)| r).unwrap_or_default();
                    return Err(DeliveryError::refused(
                        None,
                        format!("kafka {}: {} ({reason})", self.brokers, self.credential()),
                    ));
                }
                Err(e) if Instant::now() >= deadline => {
                    let reason = seen.map(|(_, r)| format!(" ({r})")).unwrap_or_default();
                    return Err(DeliveryError::external(
                        None,
                        format!(
                            "cannot reach the kafka brokers {}: {e}{reason}; check `brokers`, \
                             that they are running and reachable from here, and \
                             `security_protocol` (a broker that wants TLS or SASL drops other \
                             connections)",
                            self.brokers
                        ),
                    ));
                }
                Err(_) => {}
            }
        }
    }
}

/// A record queued (its delivery report to come) or its outcome already known.
enum Queued {
    Sent(String, DeliveryFuture),
    Done(Outcome),
}

#[async_trait]
impl Destination for Kafka {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    /// A metadata request: the brokers answer and take the credentials; for a topic without
    /// placeholders, the topic exists (or the brokers create it, as a first write would).
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.check().await
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let producer = match self.producer() {
            Ok(p) => p,
            Err(error) => return Outcome::Rejected(error).all(batch.len()),
        };
        let queued = self.queue(&producer, batch).await;
        let mut outcomes = Vec::with_capacity(batch.len());
        for q in queued {
            outcomes.push(match q {
                Queued::Done(outcome) => outcome,
                Queued::Sent(topic, report) => match report.await {
                    Ok(Ok(_)) => Outcome::Delivered,
                    Ok(Err((e, _))) => self.failure(&producer, &topic, &e),
                    Err(_) => Outcome::Retry {
                        after: None,
                        error: DeliveryError::external(
                            None,
                            format!(
                                "the kafka producer for {} stopped before reporting the record \
                                 for topic `{topic}`",
                                self.brokers
                            ),
                        ),
                    },
                },
            });
        }
        outcomes
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.config.batch_size,
            max_bytes: MAX_BATCH_BYTES,
            requests_per_second: None,
            rate_window: None,
            concurrency: self.config.concurrency,
        }
    }
}

// ----- errors -----

/// Errors that sending the same record again cannot change.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidRecord
            | C::InvalidTopic
            | C::InvalidTimestamp
            | C::InvalidRequiredAcks
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::PolicyViolation
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopic
            | C::UnknownPartition
            | C::UnknownTopicOrPartition
            | C::BadMessage
            | C::InvalidArgument
    )
}

fn is_auth(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::SSL
    )
}

/// The last connection or login failure, which explains a record that then only "timed out".
#[derive(Debug, Default)]
struct Seen(Mutex<Option<(RDKafkaErrorCode, String)>>);

impl Seen {
    fn get(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }

    fn set(&self, code: RDKafkaErrorCode, reason: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((code, reason.to_string()));
        }
    }
}

/// The producer's context: librdkafka's logs into `tracing`, failures into [`Seen`].
#[derive(Debug)]
struct Context {
    seen: Arc<Seen>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL" && (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            let lower = log_message.to_ascii_lowercase();
            let code = if lower.contains("authentication") || lower.contains("ssl handshake") {
                RDKafkaErrorCode::Authentication
            } else {
                RDKafkaErrorCode::BrokerTransportFailure
            };
            self.seen.set(code, log_message);
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, detail = log_message, "librdkafka error")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(facility = fac, detail = log_message, "librdkafka warning")
            }
            _ => tracing::debug!(facility = fac, detail = log_message, "librdkafka notice"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        tracing::warn!(%error, reason, "kafka client error");
        // "1/1 brokers are down" says less than the connection failure logged before it.
        if code != RDKafkaErrorCode::AllBrokersDown {
            self.seen.set(code, reason);
        }
    }
}
