//! Kafka topics as a source: read records from explicit per-partition positions, and a small
//! producer for tests, the demo and a later Kafka destination.
//!
//! The client is [`rdkafka`] (librdkafka, built from source by `rdkafka-sys`).
//!
//! # Positions, not consumer-group commits
//!
//! Tideway stores where it is in each partition itself, in the same commit as the data read up to
//! there, so a crash can neither lose nor repeat a record. Kafka's own offset commits are never
//! used: the consumer runs with `enable.auto.commit=false` and is driven by
//! [`KafkaReader::assign`], which takes the *next offset to read* for each partition. The
//! `group_id` only names the client to the brokers (quotas, ACLs, monitoring); no group is joined.
//!
//! A read goes:
//!
//! 1. [`KafkaReader::connect`] checks that the brokers answer and every topic exists.
//! 2. [`KafkaReader::assign`] with the stored positions (empty the first time). Partitions without
//!    a stored position start at [`KafkaSourceConfig::start`]; a stored position outside what the
//!    broker holds (deleted by retention, or a recreated topic) is an error, never a silent jump.
//! 3. [`KafkaReader::poll_batch`] returns records in offset order within each partition;
//!    [`KafkaReader::positions`] then says where the next read starts, which is what to commit
//!    with the batch.
//! 4. Or [`KafkaReader::read_to_end`] / [`KafkaReader::poll_batch_to`]: read up to the high
//!    watermarks taken when the read starts, then stop (a one-shot sync).
//!
//! Lag is [`KafkaReader::high_watermarks`] minus [`KafkaReader::positions`].
//!
//! # Configuration
//!
//! ```toml
//! brokers = ["127.0.0.1:9092"]
//! topics = ["clicks"]
//! group_id = "tideway-clicks"
//! start = "earliest"            # or "latest", or { timestamp_ms = 1767225600000 }
//! max_batch_records = 10000
//! max_wait_ms = 500
//! request_timeout_ms = 10000
//!
//! [properties]                  # passed to librdkafka as they are
//! "security.protocol" = "sasl_plaintext"
//! "sasl.mechanism" = "PLAIN"
//! "sasl.username" = "tideway"
//! "sasl.password" = "${KAFKA_PASSWORD}"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// A topic and a partition.
pub type TopicPartition = (String, i32);

/// Results of this module.
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A Kafka source: which brokers, which topics, where to start and how much to read at once.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topics to read; every partition of each is read.
    pub topics: Vec<String>,
    /// The client's group id, as the brokers see it. No group is joined and no offset is committed
    /// to Kafka: positions are stored by Tideway.
    pub group_id: String,
    /// Where a partition without a stored position starts.
    #[serde(default)]
    pub start: StartOffset,
    /// The most records one [`KafkaReader::poll_batch`] returns.
    #[serde(default = "defaults::max_batch_records")]
    pub max_batch_records: usize,
    /// How long one [`KafkaReader::poll_batch`] waits for records before returning what it has.
    #[serde(
        rename = "max_wait_ms",
        with = "millis",
        default = "defaults::max_wait"
    )]
    pub max_wait: Duration,
    /// How long a metadata or offsets request may take before the brokers count as unreachable.
    #[serde(
        rename = "request_timeout_ms",
        with = "millis",
        default = "defaults::request_timeout"
    )]
    pub request_timeout: Duration,
    /// More librdkafka client properties (`security.protocol`, `sasl.*`, `ssl.*`,
    /// `fetch.max.bytes`...). The properties Tideway manages (see [`MANAGED_PROPERTIES`]) are
    /// refused.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Where a partition without a stored position starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StartOffset {
    /// The oldest record the broker still holds.
    #[default]
    Earliest,
    /// Only records written after the read starts.
    Latest,
    /// The first record whose timestamp is at or after this many milliseconds since the epoch
    /// (nothing yet: the end of the partition).
    #[serde(rename = "timestamp_ms")]
    Timestamp(i64),
}

mod defaults {
    use std::time::Duration;

    pub fn max_batch_records() -> usize {
        10_000
    }
    pub fn max_wait() -> Duration {
        Duration::from_millis(500)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Client properties Tideway sets itself: reading from stored positions depends on them.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

impl KafkaSourceConfig {
    /// A configuration with the defaults for everything but the brokers, topics and group id.
    pub fn new(
        brokers: impl IntoIterator<Item = impl Into<String>>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        group_id: impl Into<String>,
    ) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into_iter().map(Into::into).collect(),
            topics: topics.into_iter().map(Into::into).collect(),
            group_id: group_id.into(),
            start: StartOffset::default(),
            max_batch_records: defaults::max_batch_records(),
            max_wait: defaults::max_wait(),
            request_timeout: defaults::request_timeout(),
            properties: BTreeMap::new(),
        }
    }

    /// Every problem with this configuration, or `Ok`.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            problems.push("`brokers` needs at least one `host:port` and no empty entry".to_owned());
        }
        if self.topics.is_empty() {
            problems.push("`topics` needs at least one topic".to_owned());
        }
        if let Some(t) = self.topics.iter().find(|t| t.trim().is_empty()) {
            problems.push(format!("`topics` has an empty name: `{t}`"));
        }
        if self.group_id.trim().is_empty() {
            problems.push("`group_id` is empty".to_owned());
        }
        if self.max_batch_records == 0 {
            problems.push("`max_batch_records` must be at least 1".to_owned());
        }
        if self.request_timeout.is_zero() {
            problems.push("`request_timeout_ms` must be at least 1".to_owned());
        }
        problems.extend(managed_property_problems(&self.properties));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KafkaError::Config {
                message: problems.join("; "),
            })
        }
    }

    fn broker_list(&self) -> String {
        self.brokers.join(",")
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", self.broker_list())
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A position outside what the broker holds is an error, not a silent jump.
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        if !self.properties.contains_key("client.id") {
            c.set("client.id", "tideway");
        }
        c
    }
}

fn managed_property_problems(props: &BTreeMap<String, String>) -> Vec<String> {
    props
        .keys()
        .filter(|k| MANAGED_PROPERTIES.contains(&k.as_str()))
        .map(|k| {
            format!(
                "property `{k}` is managed by Tideway (it stores positions itself); remove it \
                 (the managed properties are {})",
                MANAGED_PROPERTIES.join(", ")
            )
        })
        .collect()
}

pub(crate) fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "key.pem", "private"]
        .iter()
        .any(|s| k.contains(s))
}

/// Property values that look like secrets are printed as `<redacted>`.
struct RedactedProperties<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for RedactedProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &str = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v
                };
                (k, v)
            }))
            .finish()
    }
}

impl fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSourceConfig")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start", &self.start)
            .field("max_batch_records", &self.max_batch_records)
            .field("max_wait", &self.max_wait)
            .field("request_timeout", &self.request_timeout)
            .field("properties", &RedactedProperties(&self.properties))
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Who is at fault for a [`KafkaError`] (the same three kinds as `tideway_core::Fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KafkaFault {
    /// The configuration or the stored positions are wrong: fix them, retrying will not help.
    User,
    /// The brokers or the network failed: retrying may help.
    External,
    /// Tideway is wrong: likely a bug, please report it.
    Internal,
}

/// A Kafka error. Each variant names the brokers, topic or partition it is about.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The configuration is wrong (every problem, joined with `; `).
    #[error("invalid kafka configuration: {message}")]
    Config { message: String },
    /// No broker answered.
    #[error(
        "cannot reach the kafka brokers {brokers}: {cause}; check `brokers`, that the brokers \
         are running and reachable from here, and `security.protocol` (a broker that wants TLS \
         or SASL drops other connections)"
    )]
    Unreachable { brokers: String, cause: String },
    /// The brokers refused the credentials (SASL or TLS).
    #[error(
        "the kafka brokers {brokers} refused to authenticate: {cause}; check the \
         `security.protocol`, `sasl.*` and `ssl.*` properties"
    )]
    Authentication { brokers: String, cause: String },
    /// Authenticated, but not allowed (ACLs).
    #[error(
        "the kafka brokers {brokers} denied {operation}: {cause}; grant the principal access \
         (ACLs) or use another `group_id`"
    )]
    Authorization {
        brokers: String,
        operation: String,
        cause: String,
    },
    /// A configured topic does not exist.
    #[error("unknown kafka topic `{topic}`; topics on {brokers}: {known}")]
    UnknownTopic {
        topic: String,
        brokers: String,
        known: String,
    },
    /// A stored position is outside the offsets the broker holds.
    #[error(
        "stored position {offset} for kafka topic `{topic}` partition {partition} is outside \
         the offsets the broker holds ({low}..{high}): records were deleted by retention or the \
         topic was recreated; reset this source's positions to read from {low}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        low: i64,
        high: i64,
    },
    /// The broker reported a position out of range while reading (after the start checks).
    #[error(
        "kafka {brokers}: a position went out of range while reading ({cause}): records were \
         deleted by retention faster than they were read; positions: {positions}"
    )]
    OutOfRangeWhileReading {
        brokers: String,
        cause: String,
        positions: String,
    },
    /// A record could not be encoded as JSON.
    #[error("cannot encode a record for kafka topic `{topic}` as JSON: {cause}")]
    Encode { topic: String, cause: String },
    /// Records could not be delivered.
    #[error("{failed} record(s) were not delivered to kafka {brokers}; first failure: {first}")]
    Delivery {
        brokers: String,
        failed: u64,
        first: String,
    },
    /// Any other broker or client failure.
    #[error("kafka {operation} on {brokers} failed: {cause}")]
    Broker {
        brokers: String,
        operation: String,
        cause: String,
        fault: KafkaFault,
    },
    /// A broken invariant in this module.
    #[error("{0} (likely a bug in Tideway, please report it)")]
    Internal(String),
}

impl KafkaError {
    /// Who is at fault.
    pub fn fault(&self) -> KafkaFault {
        match self {
            KafkaError::Config { .. }
            | KafkaError::Authentication { .. }
            | KafkaError::Authorization { .. }
            | KafkaError::UnknownTopic { .. }
            | KafkaError::OffsetOutOfRange { .. }
            | KafkaError::OutOfRangeWhileReading { .. }
            | KafkaError::Encode { .. } => KafkaFault::User,
            KafkaError::Unreachable { .. } | KafkaError::Delivery { .. } => KafkaFault::External,
            KafkaError::Broker { fault, .. } => *fault,
            KafkaError::Internal(_) => KafkaFault::Internal,
        }
    }

    /// Whether the same call, retried unchanged, can succeed.
    pub fn retryable(&self) -> bool {
        self.fault() == KafkaFault::External
    }
}

/// The last error librdkafka reported on its error callback (refused connections, failed SASL
/// handshakes): request errors alone only say "timed out".
#[derive(Debug, Default)]
struct LastError(Mutex<Option<(RDKafkaErrorCode, String)>>);

impl LastError {
    fn set(&self, code: RDKafkaErrorCode, reason: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((code, reason.to_owned()));
        }
    }
    fn get(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

fn is_auth_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
            | RDKafkaErrorCode::SSL
    )
}

fn is_authz_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

fn is_fatal(err: &RdError) -> bool {
    matches!(err, RdError::MessageConsumptionFatal(_))
        || err.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
}

fn is_unreachable_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::MessageTimedOut
    )
}

/// Turns a client error into one that says who is at fault, using what the error callback saw.
fn classify(brokers: &str, operation: &str, err: &RdError, last: &LastError) -> KafkaError {
    let code = err.rdkafka_error_code();
    let seen = last.get();
    let cause = match &seen {
        Some((_, reason)) if code.is_none_or(is_unreachable_code) => format!("{err} ({reason})"),
        _ => err.to_string(),
    };
    let brokers = brokers.to_owned();
    // An auth failure surfaces on the error callback; the request itself then just times out.
    let auth_seen = seen.as_ref().is_some_and(|(c, _)| is_auth_code(*c));
    match code {
        Some(c) if is_auth_code(c) => KafkaError::Authentication { brokers, cause },
        Some(c) if is_authz_code(c) => KafkaError::Authorization {
            brokers,
            operation: operation.to_owned(),
            cause,
        },
        Some(c) if is_unreachable_code(c) && auth_seen => {
            KafkaError::Authentication { brokers, cause }
        }
        Some(c) if is_unreachable_code(c) => KafkaError::Unreachable { brokers, cause },
        _ => {
            let fault = match err {
                RdError::ClientConfig(..) | RdError::ClientCreation(_) | RdError::Nul(_) => {
                    KafkaFault::User
                }
                _ => KafkaFault::External,
            };
            KafkaError::Broker {
                brokers,
                operation: operation.to_owned(),
                cause,
                fault,
            }
        }
    }
}

fn client_creation_error(brokers: &str, err: RdError) -> KafkaError {
    match err {
        RdError::ClientConfig(_, description, key, value) => KafkaError::Config {
            message: format!(
                "property `{key}` = `{}`: {description}",
                if is_secret_property(&key) {
                    "<redacted>"
                } else {
                    &value
                }
            ),
        },
        RdError::ClientCreation(message) => KafkaError::Config {
            message: format!("the client for {brokers} could not be created: {message}"),
        },
        other => classify(brokers, "client creation", &other, &LastError::default()),
    }
}

// ---------------------------------------------------------------------------------------------
// Client context: librdkafka's logs and errors into `tracing`
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Context {
    last_error: LastError,
    /// Records whose delivery failed (producer only), and the first failure.
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Connection failures ("Connect to ipv4#127.0.0.1:1 failed: Connection refused") are only
        // logged; keep the last one to explain a request that then times out.
        if fac == "FAIL" && (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            let lower = log_message.to_ascii_lowercase();
            let code = if lower.contains("authentication") || lower.contains("ssl handshake") {
                RDKafkaErrorCode::Authentication
            } else {
                RDKafkaErrorCode::BrokerTransportFailure
            };
            self.last_error.set(code, log_message);
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
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility = fac, detail = log_message, "librdkafka notice")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(facility = fac, detail = log_message, "librdkafka debug")
            }
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        tracing::warn!(%error, reason, "kafka client error");
        // "1/1 brokers are down" says less than the connection failure logged before it.
        if code != RDKafkaErrorCode::AllBrokersDown {
            self.last_error.set(code, reason);
        }
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, msg)) = result {
            let n = self.failed.fetch_add(1, Ordering::Relaxed);
            if n == 0
                && let Ok(mut first) = self.first_failure.lock()
            {
                *first = Some(format!("topic `{}`: {err}", msg.topic()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// One record read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Create or log-append time, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    fn from_message(m: &BorrowedMessage<'_>) -> Record {
        Record {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        }
    }
}

type ReaderConsumer = StreamConsumer<Context>;

/// Reads the configured topics from positions that the caller stores.
pub struct KafkaReader {
    config: KafkaSourceConfig,
    brokers: String,
    consumer: Arc<ReaderConsumer>,
    /// Positions asked for by [`KafkaReader::assign`], not yet handed to the consumer.
    requested: Option<BTreeMap<TopicPartition, i64>>,
    /// The next offset to read in every assigned partition.
    positions: BTreeMap<TopicPartition, i64>,
    /// Partitions paused at the end of a bounded read ([`KafkaReader::poll_batch_to`]).
    held: BTreeSet<TopicPartition>,
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader")
            .field("brokers", &self.brokers)
            .field("topics", &self.config.topics)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking client call off the async runtime's worker threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaError::Internal(format!("a kafka client call panicked: {e}")))?
}

/// Every topic's partition ids, from one metadata request for all topics (asking for named
/// topics could make a broker auto-create them).
fn fetch_topics(
    consumer: &ReaderConsumer,
    brokers: &str,
    timeout: Duration,
    last: &LastError,
) -> Result<BTreeMap<String, Result<Vec<i32>, RDKafkaErrorCode>>> {
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| classify(brokers, "metadata request", &e, last))?;
    Ok(md
        .topics()
        .iter()
        .map(|t| {
            let parts = match t.error() {
                Some(e) => Err(RDKafkaErrorCode::from(e)),
                None => {
                    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    ids.sort_unstable();
                    Ok(ids)
                }
            };
            (t.name().to_owned(), parts)
        })
        .collect())
}

fn known_topics<V>(topics: &BTreeMap<String, V>) -> String {
    let names: Vec<&str> = topics
        .keys()
        .map(String::as_str)
        .filter(|t| !t.starts_with("__"))
        .collect();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

impl KafkaReader {
    /// Connects, and checks that the brokers answer and that every configured topic exists.
    pub async fn connect(config: KafkaSourceConfig) -> Result<Self> {
        config.validate()?;
        let brokers = config.broker_list();
        let consumer: ReaderConsumer = config
            .client_config()
            .create_with_context(Context::default())
            .map_err(|e| client_creation_error(&brokers, e))?;
        let reader = KafkaReader {
            config,
            brokers,
            consumer: Arc::new(consumer),
            requested: Some(BTreeMap::new()),
            positions: BTreeMap::new(),
            held: BTreeSet::new(),
        };
        let partitions = match reader.partitions().await {
            Ok(p) => p,
            Err(e) => return Err(reader.explain_connect_failure(e).await),
        };
        tracing::info!(
            brokers = %reader.brokers,
            topics = ?reader.config.topics,
            partitions = partitions.len(),
            "connected to kafka"
        );
        Ok(reader)
    }

    /// A metadata request that timed out may hide a refused login: the consumer learns of it as
    /// an error event on its queue, which nothing has polled yet (nothing is assigned, so no
    /// record can be taken by this).
    async fn explain_connect_failure(&self, err: KafkaError) -> KafkaError {
        if !matches!(err, KafkaError::Unreachable { .. }) {
            return err;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(received) = tokio::time::timeout_at(until, self.consumer.recv()).await {
            if let Err(e) = received
                && e.rdkafka_error_code().is_some_and(is_auth_code)
            {
                let reason = self
                    .consumer
                    .context()
                    .last_error
                    .get()
                    .filter(|(c, _)| is_auth_code(*c))
                    .map(|(_, r)| format!(" ({r})"))
                    .unwrap_or_default();
                return KafkaError::Authentication {
                    brokers: self.brokers.clone(),
                    cause: format!("{e}{reason}"),
                };
            }
        }
        // The connection failure may have been logged after the request gave up.
        match (err, self.consumer.context().last_error.get()) {
            (KafkaError::Unreachable { brokers, cause }, Some((_, reason)))
                if !cause.contains(&reason) =>
            {
                KafkaError::Unreachable {
                    brokers,
                    cause: format!("{cause} ({reason})"),
                }
            }
            (err, _) => err,
        }
    }

    /// The configuration this reader was connected with.
    pub fn config(&self) -> &KafkaSourceConfig {
        &self.config
    }

    /// Every partition of the configured topics, in topic order then partition order.
    pub async fn partitions(&self) -> Result<Vec<TopicPartition>> {
        let consumer = Arc::clone(&self.consumer);
        let brokers = self.brokers.clone();
        let timeout = self.config.request_timeout;
        let all = blocking(move || {
            fetch_topics(&consumer, &brokers, timeout, &consumer.context().last_error)
        })
        .await?;
        let mut out = Vec::new();
        for topic in &self.config.topics {
            match all.get(topic) {
                Some(Ok(ids)) if !ids.is_empty() => {
                    out.extend(ids.iter().map(|&p| (topic.clone(), p)));
                }
                None
                | Some(Ok(_))
                | Some(Err(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                )) => {
                    return Err(KafkaError::UnknownTopic {
                        topic: topic.clone(),
                        brokers: self.brokers.clone(),
                        known: known_topics(&all),
                    });
                }
                Some(Err(code)) if is_authz_code(*code) => {
                    return Err(KafkaError::Authorization {
                        brokers: self.brokers.clone(),
                        operation: format!("reading topic `{topic}`"),
                        cause: code.to_string(),
                    });
                }
                Some(Err(code)) => {
                    return Err(KafkaError::Broker {
                        brokers: self.brokers.clone(),
                        operation: format!("metadata of topic `{topic}`"),
                        cause: code.to_string(),
                        fault: KafkaFault::External,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The low and high watermarks (first offset held, offset after the last record) of every
    /// partition of the configured topics.
    pub async fn watermarks(&self) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
        let partitions = self.partitions().await?;
        let consumer = Arc::clone(&self.consumer);
        let brokers = self.brokers.clone();
        let timeout = self.config.request_timeout;
        blocking(move || {
            let last = &consumer.context().last_error;
            let mut out = BTreeMap::new();
            for (topic, partition) in partitions {
                let marks = consumer
                    .fetch_watermarks(&topic, partition, timeout)
                    .map_err(|e| {
                        classify(
                            &brokers,
                            &format!("offsets request for `{topic}` partition {partition}"),
                            &e,
                            last,
                        )
                    })?;
                out.insert((topic, partition), marks);
            }
            Ok(out)
        })
        .await
    }

    /// The high watermark (the offset the next record will get) of every partition.
    pub async fn high_watermarks(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(self
            .watermarks()
            .await?
            .into_iter()
            .map(|(tp, (_, high))| (tp, high))
            .collect())
    }

    /// Sets where to read next: the next offset to read per partition. Partitions absent from
    /// `positions` start at [`KafkaSourceConfig::start`]. Takes effect at the next poll, which
    /// checks the positions against what the brokers hold.
    pub fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) {
        self.requested = Some(positions.clone());
    }

    /// The next offset to read in each partition: what to store with the records returned so far.
    /// Empty until the first poll after [`KafkaReader::assign`] resolved the start positions.
    pub fn positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.positions
    }

    /// Resolves requested positions and start offsets to concrete offsets and assigns them.
    async fn apply_assignment(&mut self) -> Result<()> {
        let Some(requested) = self.requested.take() else {
            return Ok(());
        };
        match self.resolve(&requested).await {
            Ok(resolved) => {
                if !self.held.is_empty() {
                    let mut held = TopicPartitionList::new();
                    for (topic, partition) in &self.held {
                        held.add_partition(topic, *partition);
                    }
                    self.consumer.resume(&held).map_err(|e| {
                        classify(&self.brokers, "resume", &e, &LastError::default())
                    })?;
                }
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), offset) in &resolved {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                        .map_err(|e| {
                            classify(&self.brokers, "assign", &e, &LastError::default())
                        })?;
                }
                self.consumer
                    .assign(&tpl)
                    .map_err(|e| classify(&self.brokers, "assign", &e, &LastError::default()))?;
                tracing::debug!(brokers = %self.brokers, positions = ?resolved, "assigned kafka partitions");
                self.positions = resolved;
                self.held.clear();
                Ok(())
            }
            Err(e) => {
                // Try again at the next poll (the error may be a passing broker failure).
                self.requested = Some(requested);
                Err(e)
            }
        }
    }

    async fn resolve(
        &self,
        requested: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let marks = self.watermarks().await?;
        for (topic, partition) in requested.keys() {
            if !self.config.topics.contains(topic) {
                tracing::warn!(
                    topic,
                    partition,
                    "ignoring a stored kafka position for a topic no longer in `topics`"
                );
            } else if !marks.contains_key(&(topic.clone(), *partition)) {
                tracing::warn!(
                    topic,
                    partition,
                    "ignoring a stored kafka position for a partition the topic no longer has"
                );
            }
        }
        let mut resolved = BTreeMap::new();
        let mut by_time = Vec::new();
        for (tp, &(low, high)) in &marks {
            if let Some(&offset) = requested.get(tp) {
                if offset < low || offset > high {
                    return Err(KafkaError::OffsetOutOfRange {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset,
                        low,
                        high,
                    });
                }
                resolved.insert(tp.clone(), offset);
            } else {
                match self.config.start {
                    StartOffset::Earliest => {
                        resolved.insert(tp.clone(), low);
                    }
                    StartOffset::Latest => {
                        resolved.insert(tp.clone(), high);
                    }
                    StartOffset::Timestamp(_) => by_time.push((tp.clone(), high)),
                }
            }
        }
        if let (StartOffset::Timestamp(ts), false) = (self.config.start, by_time.is_empty()) {
            let consumer = Arc::clone(&self.consumer);
            let brokers = self.brokers.clone();
            let timeout = self.config.request_timeout;
            let found = blocking(move || {
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), _) in &by_time {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(ts))
                        .map_err(|e| {
                            classify(&brokers, "offsets by time", &e, &LastError::default())
                        })?;
                }
                let answer = consumer.offsets_for_times(tpl, timeout).map_err(|e| {
                    classify(
                        &brokers,
                        "offsets by time",
                        &e,
                        &consumer.context().last_error,
                    )
                })?;
                let mut out = Vec::new();
                for ((topic, partition), high) in by_time {
                    let offset = answer
                        .find_partition(&topic, partition)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|&o| o >= 0)
                        // No record at or after the time yet: start at the end.
                        .unwrap_or(high);
                    out.push(((topic, partition), offset));
                }
                Ok(out)
            })
            .await?;
            resolved.extend(found);
        }
        Ok(resolved)
    }

    /// Up to `max_batch_records` records, or what arrived within `max_wait`; in offset order
    /// within each partition. Advances [`KafkaReader::positions`].
    pub async fn poll_batch(&mut self) -> Result<Vec<Record>> {
        if !self.held.is_empty() {
            // A bounded read paused partitions and may have fetched past their positions.
            self.requested.get_or_insert_with(|| self.positions.clone());
        }
        self.apply_assignment().await?;
        let mut batch = Vec::new();
        self.fill(&mut batch, None).await?;
        Ok(batch)
    }

    /// Like [`KafkaReader::poll_batch`], but stops at `end` (per partition, exclusive; usually
    /// [`KafkaReader::high_watermarks`] taken when the read started): `None` once every
    /// partition's position has reached its end. Records past an end are not returned and do
    /// not advance the positions; a partition that reaches its end is paused.
    pub async fn poll_batch_to(
        &mut self,
        end: &BTreeMap<TopicPartition, i64>,
    ) -> Result<Option<Vec<Record>>> {
        let behind = |tp: &TopicPartition| {
            let pos = self.positions.get(tp).copied().unwrap_or(i64::MAX);
            end.get(tp).is_some_and(|&e| pos < e)
        };
        if self.held.iter().any(behind) {
            // A later end than the one these partitions were paused at.
            self.requested.get_or_insert_with(|| self.positions.clone());
        }
        self.apply_assignment().await?;
        if self.reached(end) {
            return Ok(None);
        }
        let done: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(tp, pos)| end.get(*tp).is_none_or(|e| *pos >= e))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in done {
            self.hold(tp)?;
        }
        let mut batch = Vec::new();
        self.fill(&mut batch, Some(end)).await?;
        Ok(Some(batch))
    }

    /// Reads every record up to the high watermarks taken now, from the assigned positions,
    /// then stops. For small topics and tests: a large read should loop on
    /// [`KafkaReader::poll_batch_to`] and store each batch with its positions.
    pub async fn read_to_end(&mut self) -> Result<Vec<Record>> {
        let end = self.high_watermarks().await?;
        let mut all = Vec::new();
        while let Some(batch) = self.poll_batch_to(&end).await? {
            all.extend(batch);
        }
        Ok(all)
    }

    fn reached(&self, end: &BTreeMap<TopicPartition, i64>) -> bool {
        self.positions
            .iter()
            .all(|(tp, pos)| end.get(tp).is_none_or(|e| pos >= e))
    }

    /// Pauses a partition that reached the end of a bounded read.
    fn hold(&mut self, tp: TopicPartition) -> Result<()> {
        if self.held.contains(&tp) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        self.consumer
            .pause(&tpl)
            .map_err(|e| classify(&self.brokers, "pause", &e, &LastError::default()))?;
        self.held.insert(tp);
        Ok(())
    }

    async fn fill(
        &mut self,
        batch: &mut Vec<Record>,
        end: Option<&BTreeMap<TopicPartition, i64>>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        let max = self.config.max_batch_records;
        while batch.len() < max {
            let received = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(r) => r,
            };
            let message = match received {
                Ok(m) => m,
                Err(e) => {
                    self.on_receive_error(e)?;
                    continue;
                }
            };
            let tp = (message.topic().to_owned(), message.partition());
            let offset = message.offset();
            let Some(pos) = self.positions.get_mut(&tp) else {
                tracing::debug!(
                    topic = tp.0,
                    partition = tp.1,
                    "dropping a kafka record from an unassigned partition"
                );
                continue;
            };
            if offset < *pos {
                // Fetched before a re-assignment: already returned or not wanted.
                continue;
            }
            let stop = end.and_then(|e| e.get(&tp)).copied();
            if stop.is_some_and(|e| offset >= e) {
                // Past this read's end: not returned; a later read re-seeks to the position.
                self.hold(tp)?;
                continue;
            }
            *pos = offset + 1;
            let at_end = stop.is_some_and(|e| *pos >= e);
            batch.push(Record::from_message(&message));
            drop(message);
            if at_end {
                self.hold(tp)?;
                if end.is_some_and(|e| self.reached(e)) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn on_receive_error(&self, err: RdError) -> Result<()> {
        let last = &self.consumer.context().last_error;
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
                Err(KafkaError::OutOfRangeWhileReading {
                    brokers: self.brokers.clone(),
                    cause: err.to_string(),
                    positions: format!("{:?}", self.positions),
                })
            }
            Some(c) if is_auth_code(c) || is_authz_code(c) || is_fatal(&err) => {
                Err(classify(&self.brokers, "fetch", &err, last))
            }
            _ => {
                // librdkafka retries transport errors by itself.
                tracing::warn!(brokers = %self.brokers, error = %err, "kafka fetch error, retrying");
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// A producer: idempotent, lz4-compressed, batching (`linger.ms=5`). Records are queued by
/// `send*` and confirmed by [`KafkaWriter::flush`], which reports any that failed.
pub struct KafkaWriter {
    brokers: String,
    properties: BTreeMap<String, String>,
    producer: ThreadedProducer<Context>,
    timeout: Duration,
}

impl fmt::Debug for KafkaWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaWriter")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaWriter {
    /// A producer for `brokers`, with more librdkafka `properties` (which win over the defaults
    /// `enable.idempotence=true`, `compression.type=lz4`, `linger.ms=5`). Checks that the brokers
    /// answer.
    pub async fn new(brokers: &[String], properties: &BTreeMap<String, String>) -> Result<Self> {
        let list = brokers.join(",");
        if brokers.is_empty() {
            return Err(KafkaError::Config {
                message: "`brokers` needs at least one `host:port`".to_owned(),
            });
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &list)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("client.id", "tideway")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in properties {
            c.set(k, v);
        }
        // Connecting, metadata and topic creation wait as long as librdkafka's own request timeout
        // when one is set, else 10 s.
        let timeout = properties
            .get("request.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let producer: ThreadedProducer<Context> = c
            .create_with_context(Context::default())
            .map_err(|e| client_creation_error(&list, e))?;
        let writer = KafkaWriter {
            brokers: list,
            properties: properties.clone(),
            producer,
            timeout,
        };
        let producer = writer.producer.clone();
        let brokers = writer.brokers.clone();
        blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| {
                    classify(
                        &brokers,
                        "metadata request",
                        &e,
                        &producer.context().last_error,
                    )
                })
        })
        .await?;
        Ok(writer)
    }

    /// Queues `value` as JSON, keyed by `key` (records with one key go to one partition).
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| KafkaError::Encode {
            topic: topic.to_owned(),
            cause: e.to_string(),
        })?;
        self.send(topic, key.map(str::as_bytes), Some(&bytes)).await
    }

    /// Queues one record; waits while the local queue is full.
    pub async fn send(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        self.check_failures()?;
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic);
        record.key = key;
        record.payload = value;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    return Err(classify(
                        &self.brokers,
                        &format!("produce to `{topic}`"),
                        &e,
                        &self.producer.context().last_error,
                    ));
                }
            }
        }
    }

    /// Waits until every queued record is delivered or has failed; an error names how many failed.
    pub async fn flush(&self) -> Result<()> {
        let producer = self.producer.clone();
        let brokers = self.brokers.clone();
        blocking(move || {
            producer
                .flush(Timeout::Never)
                .map_err(|e| classify(&brokers, "flush", &e, &producer.context().last_error))
        })
        .await?;
        self.check_failures()
    }

    fn check_failures(&self) -> Result<()> {
        let ctx = self.producer.context();
        let failed = ctx.failed.swap(0, Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = ctx
            .first_failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_else(|| "(not recorded)".to_owned());
        Err(KafkaError::Delivery {
            brokers: self.brokers.clone(),
            failed,
            first,
        })
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1) unless it exists.
    /// For tests and the demo; production topics are made by their owners.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set_log_level(RDKafkaLogLevel::Warning);
        let admin: AdminClient<DefaultClientContext> = c
            .create()
            .map_err(|e| client_creation_error(&self.brokers, e))?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        let results = admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| classify(&self.brokers, "create topic", &e, &LastError::default()))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::Broker {
                        brokers: self.brokers.clone(),
                        operation: format!("create topic `{name}`"),
                        cause: code.to_string(),
                        fault: if is_authz_code(code) {
                            KafkaFault::User
                        } else {
                            KafkaFault::External
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
brokers = ["127.0.0.1:9092"]
topics = ["clicks"]
group_id = "tideway-clicks"
start = "earliest"
max_batch_records = 10000
max_wait_ms = 500
request_timeout_ms = 10000

[properties]
"security.protocol" = "sasl_plaintext"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "tideway"
"sasl.password" = "${KAFKA_PASSWORD}"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c: KafkaSourceConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c.topics, ["clicks"]);
        assert_eq!(c.max_wait, Duration::from_millis(500));
        c.validate().unwrap();
        let doc = include_str!("kafka.rs");
        assert!(
            doc.contains("//! max_wait_ms = 500"),
            "keep the module doc's example in sync"
        );
    }

    #[test]
    fn start_offsets_parse() {
        let c: KafkaSourceConfig = toml::from_str(
            "brokers=['b:9092']\ntopics=['t']\ngroup_id='g'\nstart={timestamp_ms=1700000000000}",
        )
        .unwrap();
        assert_eq!(c.start, StartOffset::Timestamp(1_700_000_000_000));
        let c: KafkaSourceConfig =
            toml::from_str("brokers=['b:9092']\ntopics=['t']\ngroup_id='g'\nstart='latest'")
                .unwrap();
        assert_eq!(c.start, StartOffset::Latest);
        assert_eq!(c.max_batch_records, 10_000);
        let e = toml::from_str::<KafkaSourceConfig>(
            "brokers=['b:9092']\ntopics=['t']\ngroup_id='g'\nstrat='latest'",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `strat`"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem_and_refuses_managed_properties() {
        let mut c = KafkaSourceConfig::new(Vec::<String>::new(), Vec::<String>::new(), "");
        c.max_batch_records = 0;
        c.properties
            .insert("enable.auto.commit".into(), "true".into());
        let msg = c.validate().unwrap_err().to_string();
        for needle in [
            "`brokers`",
            "`topics`",
            "`group_id`",
            "`max_batch_records`",
            "enable.auto.commit",
        ] {
            assert!(msg.contains(needle), "{needle} missing from: {msg}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let c: KafkaSourceConfig =
            toml::from_str(&EXAMPLE.replace("${KAFKA_PASSWORD}", "hunter2")).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<redacted>") && d.contains("tideway"), "{d}");
    }

    #[test]
    fn errors_say_who_is_at_fault() {
        let last = LastError::default();
        last.set(
            RDKafkaErrorCode::BrokerTransportFailure,
            "Connect to ipv4#127.0.0.1:1 failed: Connection refused",
        );
        let e = classify(
            "127.0.0.1:1",
            "metadata request",
            &RdError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
            &last,
        );
        assert!(matches!(e, KafkaError::Unreachable { .. }), "{e:?}");
        assert!(e.retryable());
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("Connection refused"),
            "{text}"
        );

        last.set(
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: bad password",
        );
        let e = classify(
            "b:9092",
            "metadata request",
            &RdError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
            &last,
        );
        assert!(matches!(e, KafkaError::Authentication { .. }), "{e:?}");
        assert_eq!(e.fault(), KafkaFault::User);
    }
}
