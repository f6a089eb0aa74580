//! The `[destinations.NAME]` table of a Kafka destination (`type = "kafka"`).
//!
//! ```toml
//! [destinations.bus]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"              # or ["b1:9092", "b2:9092"], or "${KAFKA_BROKERS}"
//! topic = "events.{type}"                 # a template: {type}, {event}, {context.app.name}, ...
//! # key = "userId"                        # userId (else anonymousId) | anonymousId | messageId | a path: "traits.account_id"
//! # compression = "lz4"                   # none | gzip | snappy | lz4
//! # acks = "all"                          # the only choice: the idempotent producer needs it
//! # security_protocol = "sasl_ssl"        # plaintext | ssl | sasl_plaintext | sasl_ssl (default: sasl_ssl with [sasl], else plaintext)
//! # batch_size = 5000                     # events per delivery call
//! # linger_ms = 5                         # how long the producer waits to fill a request
//! # message_timeout_ms = 30000            # how long the producer retries one record itself
//! # concurrency = 4                       # delivery calls in flight at once
//! # client_id = "tideway"
//!
//! # [destinations.bus.sasl]
//! # mechanism = "SCRAM-SHA-512"           # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
//! # username = "tideway"
//! # password = "${KAFKA_PASSWORD}"
//!
//! # [destinations.bus.properties]         # more librdkafka properties, e.g. TLS
//! # "ssl.ca.location" = "/etc/ssl/certs/kafka-ca.pem"
//! ```
//!
//! The topic template's placeholders are paths into the event; each value is snake-cased and
//! kept to `[a-z0-9._-]` (`Order Completed` → `order_completed`), and an event without one of
//! them is rejected naming it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

/// Events per delivery call, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 5000;
/// The most events per delivery call: the producer's local queue holds 100,000 records.
pub const MAX_BATCH_SIZE: usize = 20_000;
/// Delivery calls in flight at once, unless configured.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// How long the producer retries one record before it reports it failed, unless configured.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// librdkafka properties the destination sets from its own keys (or must keep as they are for
/// its guarantees); `[properties]` may not set them.
pub const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "client.id",
    "partitioner",
    "transactional.id",
];

/// An example table, parsed by a test.
pub const EXAMPLE: &str = r#"
[destinations.bus]
type = "kafka"
brokers = "${KAFKA_BROKERS}"
topic = "events.{type}"
key = "userId"
compression = "lz4"
security_protocol = "sasl_ssl"
batch_size = 5000
linger_ms = 5

[destinations.bus.sasl]
mechanism = "SCRAM-SHA-512"
username = "tideway"
password = "${KAFKA_PASSWORD}"

[destinations.bus.properties]
"ssl.ca.location" = "/etc/ssl/certs/kafka-ca.pem"
"#;

/// A checked `[destinations.NAME]` table with `type = "kafka"`: produces each event as JSON to
/// a topic named from the event.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic each event goes to.
    pub topic: TopicTemplate,
    /// What keys a record (records with one key go to one partition, in order).
    pub key: KeyChoice,
    pub compression: Compression,
    pub security_protocol: SecurityProtocol,
    pub sasl: Option<Sasl>,
    /// Events per delivery call.
    pub batch_size: usize,
    /// How long the producer waits to fill a request (`linger.ms`).
    pub linger_ms: u64,
    /// How long the producer retries one record itself before the delivery layer's own retries
    /// take over (`message.timeout.ms`).
    pub message_timeout_ms: u64,
    /// Delivery calls in flight at once.
    pub concurrency: usize,
    pub client_id: String,
    /// More librdkafka properties, `${VAR}` replaced (never shown: they may hold TLS secrets).
    pub properties: BTreeMap<String, Secret>,
}

/// SASL authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// A SASL mechanism this build of librdkafka has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// As librdkafka (and Kafka) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// As librdkafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A compression codec this build of librdkafka has (zstd is not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    /// Every choice, for messages.
    pub const CHOICES: &str = "none, gzip, snappy, lz4";

    /// As librdkafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// What keys a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// `userId`, else `anonymousId` (`key = "userId"`, the default).
    User,
    /// `anonymousId` only.
    Anonymous,
    /// `messageId`: records spread over partitions, no order per user.
    Message,
    /// A field of the event, by a dotted path (`traits.account_id`).
    Path(Vec<String>),
}

impl KeyChoice {
    /// The key of `event`, if it has one (a string or a number; empty strings count as none).
    pub fn of(&self, event: &Value) -> Option<String> {
        let path = match self {
            KeyChoice::User => {
                return ["userId", "anonymousId"]
                    .iter()
                    .find_map(|k| event.get(*k).and_then(scalar_text));
            }
            KeyChoice::Anonymous => return event.get("anonymousId").and_then(scalar_text),
            KeyChoice::Message => return event.get("messageId").and_then(scalar_text),
            KeyChoice::Path(path) => path,
        };
        lookup(event, path).and_then(scalar_text)
    }
}

/// A topic name made from the event: literal text and `{path}` placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A dotted path into the event, as written and split.
    Field(String, Vec<String>),
}

impl fmt::Debug for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl TopicTemplate {
    /// Parses `text`; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    return Err(format!("unclosed `{{` in the topic `{text}`"));
                };
                let field = after[..end].trim();
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                if field.is_empty() || path.iter().any(String::is_empty) || field.contains('{') {
                    return Err(format!(
                        "`{{{field}}}` in the topic `{text}` is not a path into the event, e.g. \
                         `{{type}}`, `{{event}}` or `{{context.app.name}}`"
                    ));
                }
                parts.push(Part::Field(field.to_string(), path));
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if let Some(bad) = literal.chars().find(|c| !is_topic_char(*c)) {
                    return Err(format!(
                        "the topic `{text}` has `{bad}`; a Kafka topic name has only letters, \
                         digits, `.`, `_` and `-` (placeholders go in braces: `events.{{type}}`)"
                    ));
                }
                parts.push(Part::Literal(literal.to_string()));
                rest = &rest[end..];
            }
        }
        let template = TopicTemplate {
            text: text.to_string(),
            parts,
        };
        if template.is_static() {
            check_topic(text)?;
        } else if template.literal_len() > MAX_TOPIC_LEN {
            return Err(format!(
                "the topic `{text}` is longer than Kafka's {MAX_TOPIC_LEN} characters"
            ));
        }
        Ok(template)
    }

    /// Whether every event goes to the same topic.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    fn literal_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Field(..) => 0,
            })
            .sum()
    }

    /// The topic of `event`; `Err` names the placeholder the event lacks, or why the name is
    /// not a valid topic.
    pub fn render(&self, event: &Value) -> Result<String, String> {
        let mut topic = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(l) => topic.push_str(l),
                Part::Field(field, path) => {
                    let value = lookup(event, path)
                        .and_then(scalar_text)
                        .map(|v| snake_case(&v))
                        .filter(|v| !v.is_empty());
                    let Some(value) = value else {
                        return Err(format!(
                            "the topic `{}` needs `{field}`, which the event does not have (or \
                             it is empty, or not a string or number)",
                            self.text
                        ));
                    };
                    topic.push_str(&value);
                }
            }
        }
        check_topic(&topic).map(|()| topic)
    }
}

fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a valid Kafka topic name"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "the topic `{topic}` is longer than Kafka's {MAX_TOPIC_LEN} characters"
        ));
    }
    Ok(())
}

/// The value at a dotted `path` of `event`.
fn lookup<'a>(event: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(event, |v, k| v.get(k))
}

/// A string, number or boolean as text; `None` for anything else or an empty string.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `Order Completed` → `order_completed`, `orderCompleted` → `order_completed`: lowercase, a
/// `_` at each word break, and only `[a-z0-9._-]` (anything else becomes a `_`).
pub fn snake_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase()
                && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
            {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if matches!(c, '.' | '-') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
        prev = Some(c);
    }
    out.trim_matches('_').to_string()
}

// ----- parsing -----

#[derive(Deserialize)]
#[serde(untagged)]
enum Brokers {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSasl {
    mechanism: Spanned<String>,
    username: Spanned<String>,
    password: Spanned<String>,
}

/// The table as written; see the module docs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    brokers: Spanned<Brokers>,
    topic: Spanned<String>,
    key: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    acks: Option<Spanned<String>>,
    security_protocol: Option<Spanned<SecurityProtocol>>,
    sasl: Option<Spanned<RawSasl>>,
    batch_size: Option<Spanned<usize>>,
    linger_ms: Option<Spanned<u64>>,
    message_timeout_ms: Option<Spanned<u64>>,
    concurrency: Option<Spanned<usize>>,
    client_id: Option<Spanned<String>>,
    #[serde(default)]
    properties: BTreeMap<String, Spanned<String>>,
}

impl KafkaConfig {
    /// A configuration with every default, for `brokers` and `topic`.
    pub fn new(brokers: impl IntoIterator<Item = impl Into<String>>, topic: TopicTemplate) -> Self {
        KafkaConfig {
            brokers: brokers.into_iter().map(Into::into).collect(),
            topic,
            key: KeyChoice::User,
            compression: Compression::Lz4,
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            batch_size: DEFAULT_BATCH_SIZE,
            linger_ms: 5,
            message_timeout_ms: DEFAULT_MESSAGE_TIMEOUT_MS,
            concurrency: DEFAULT_CONCURRENCY,
            client_id: "tideway".to_string(),
            properties: BTreeMap::new(),
        }
    }

    /// The brokers as librdkafka takes them, `a:9092,b:9092`.
    pub fn broker_list(&self) -> String {
        self.brokers.join(",")
    }

    /// Checks `[destinations.NAME]` of `only` (a text where everything else is blanked),
    /// reporting every problem into `diags` at its key; `${VAR}` is read from `env`, and the
    /// SASL password must come from it.
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<KafkaConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let brokers = parse_brokers(&raw.brokers, diags, env);
        let topic = match TopicTemplate::parse(raw.topic.get_ref()) {
            Ok(t) => t,
            Err(message) => {
                diags.at(Some(raw.topic.span()), message);
                TopicTemplate::parse("invalid").expect("a literal topic parses")
            }
        };
        let mut config = KafkaConfig::new(brokers, topic);
        if let Some(key) = &raw.key {
            match parse_key(key.get_ref()) {
                Ok(k) => config.key = k,
                Err(message) => diags.at(Some(key.span()), message),
            }
        }
        if let Some(c) = &raw.compression {
            match parse_compression(c.get_ref()) {
                Ok(c) => config.compression = c,
                Err(message) => diags.at(Some(c.span()), message),
            }
        }
        if let Some(acks) = &raw.acks
            && !matches!(acks.get_ref().as_str(), "all" | "-1")
        {
            diags.at(
                Some(acks.span()),
                format!(
                    "`acks` `{}` is not supported: the idempotent producer (no duplicates, no \
                     reordering when it retries) needs `acks = \"all\"`",
                    acks.get_ref()
                ),
            );
        }
        if let Some(sasl) = &raw.sasl {
            config.sasl = parse_sasl(sasl.get_ref(), diags, env);
            config.security_protocol = SecurityProtocol::SaslSsl;
        }
        if let Some(p) = &raw.security_protocol {
            config.security_protocol = *p.get_ref();
            if p.get_ref().is_sasl() != raw.sasl.is_some() {
                diags.at(
                    Some(p.span()),
                    if raw.sasl.is_some() {
                        format!(
                            "`security_protocol` `{}` does not authenticate, but a `[sasl]` \
                             table is set; use `sasl_ssl` or `sasl_plaintext`",
                            p.get_ref().as_str()
                        )
                    } else {
                        format!(
                            "`security_protocol` `{}` needs a `[sasl]` table (mechanism, \
                             username, password)",
                            p.get_ref().as_str()
                        )
                    },
                );
            }
        }
        if let Some(b) = &raw.batch_size {
            config.batch_size = *b.get_ref();
            if !(1..=MAX_BATCH_SIZE).contains(b.get_ref()) {
                diags.at(
                    Some(b.span()),
                    format!("`batch_size` is the events per call, from 1 to {MAX_BATCH_SIZE}"),
                );
            }
        }
        if let Some(l) = &raw.linger_ms {
            config.linger_ms = *l.get_ref();
            if *l.get_ref() > 60_000 {
                diags.at(Some(l.span()), "`linger_ms` must be from 0 to 60000");
            }
        }
        if let Some(t) = &raw.message_timeout_ms {
            config.message_timeout_ms = *t.get_ref();
            if !(1_000..=3_600_000).contains(t.get_ref()) {
                diags.at(
                    Some(t.span()),
                    "`message_timeout_ms` must be from 1000 to 3600000 (one hour)",
                );
            }
        }
        if let Some(n) = &raw.concurrency {
            config.concurrency = *n.get_ref();
            if !(1..=64).contains(n.get_ref()) {
                diags.at(Some(n.span()), "`concurrency` must be from 1 to 64");
            }
        }
        if let Some(id) = &raw.client_id {
            config.client_id = diags.plain(id, env).unwrap_or_default();
        }
        for (key, value) in &raw.properties {
            if MANAGED_PROPERTIES.contains(&key.as_str()) || key.starts_with("sasl.") {
                diags.at(
                    Some(value.span()),
                    format!(
                        "property `{key}` is set by the destination itself; remove it (use the \
                         table's own keys: brokers, compression, linger_ms, message_timeout_ms, \
                         security_protocol, [sasl], client_id)"
                    ),
                );
                continue;
            }
            let v = diags.plain(value, env).unwrap_or_default();
            config.properties.insert(key.clone(), Secret::new(v));
        }
        Some(config)
    }
}

fn parse_brokers(
    raw: &Spanned<Brokers>,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let listed = match raw.get_ref() {
        Brokers::One(s) => vec![s.clone()],
        Brokers::Many(v) => v.clone(),
    };
    let mut brokers = Vec::new();
    for entry in listed {
        let value = Spanned::new(raw.span(), entry);
        let Some(text) = diags.plain(&value, env) else {
            return brokers;
        };
        brokers.extend(
            text.split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_string),
        );
    }
    if brokers.is_empty() {
        diags.at(
            Some(raw.span()),
            "`brokers` needs at least one `host:port`, e.g. `brokers = \"127.0.0.1:9092\"`",
        );
    }
    if let Some(bad) = brokers.iter().find(|b| b.contains(char::is_whitespace)) {
        diags.at(
            Some(raw.span()),
            format!("broker `{bad}` is not a `host:port`"),
        );
    }
    brokers
}

fn parse_key(text: &str) -> Result<KeyChoice, String> {
    Ok(match text {
        "userId" => KeyChoice::User,
        "anonymousId" => KeyChoice::Anonymous,
        "messageId" => KeyChoice::Message,
        path => {
            let parts: Vec<String> = path.split('.').map(str::to_string).collect();
            if parts.iter().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "`key` `{path}` is not a path into the event; use userId (else \
                     anonymousId), anonymousId, messageId, or a path such as \
                     `traits.account_id`"
                ));
            }
            KeyChoice::Path(parts)
        }
    })
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => {
            return Err(format!(
                "`compression` `zstd` is not built into this Tideway (its librdkafka is built \
                 without zstd); use one of {}",
                Compression::CHOICES
            ));
        }
        other => {
            return Err(format!(
                "unknown `compression` `{other}`; use one of {}",
                Compression::CHOICES
            ));
        }
    })
}

fn parse_sasl(
    raw: &RawSasl,
    diags: &mut Diags<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Sasl> {
    let mechanism = match raw.mechanism.get_ref().to_ascii_uppercase().as_str() {
        "PLAIN" => SaslMechanism::Plain,
        "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
        "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
        other => {
            let why = match other {
                "GSSAPI" | "OAUTHBEARER" => "is not built into this Tideway",
                _ => "is unknown",
            };
            diags.at(
                Some(raw.mechanism.span()),
                format!(
                    "SASL `mechanism` `{}` {why}; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    raw.mechanism.get_ref()
                ),
            );
            return None;
        }
    };
    let username = diags.plain(&raw.username, env).unwrap_or_default();
    if username.is_empty() {
        diags.at(Some(raw.username.span()), "SASL `username` is empty");
    }
    let password = diags.secret("password", &raw.password, env);
    Some(Sasl {
        mechanism,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "KAFKA_BROKERS" => Some("b1:9092, b2:9092".to_string()),
            "KAFKA_PASSWORD" => Some("pw-123".to_string()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<KafkaConfig, Vec<String>> {
        let mut diags = Diags::new(text, "tideway.toml");
        let config = KafkaConfig::parse("bus", text, &mut diags, &env);
        diags
            .finish(config)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn minimal(extra: &str) -> String {
        format!(
            "[destinations.bus]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n\
             topic = \"events.{{type}}\"\n{extra}"
        )
    }

    #[test]
    fn the_example_parses() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.brokers, ["b1:9092", "b2:9092"]);
        assert_eq!(config.topic.to_string(), "events.{type}");
        assert_eq!(config.compression, Compression::Lz4);
        assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
        let sasl = config.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "pw-123");
        assert!(!format!("{config:?}").contains("pw-123"), "{config:?}");
    }

    #[test]
    fn defaults() {
        let config = parse(&minimal("")).unwrap();
        let expected = KafkaConfig::new(
            ["127.0.0.1:9092"],
            TopicTemplate::parse("events.{type}").unwrap(),
        );
        assert_eq!(config, expected);
        assert_eq!(config.key, KeyChoice::User);
        assert_eq!(config.compression, Compression::Lz4);
        assert_eq!(config.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(config.batch_size, 5000);
        assert_eq!(config.linger_ms, 5);
    }

    #[test]
    fn brokers_may_be_a_list() {
        let text =
            "[destinations.bus]\ntype = \"kafka\"\nbrokers = [\"a:1\", \"b:2\"]\ntopic = \"t\"\n";
        assert_eq!(parse(text).unwrap().brokers, ["a:1", "b:2"]);
    }

    #[test]
    fn every_problem_is_reported_at_its_line() {
        let text = r#"[destinations.bus]
type = "kafka"
brokers = ""
topic = "events {type}"
compression = "brotli"
acks = "1"
batch_size = 0
concurrency = 100
key = "traits..x"
"#;
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems[0].starts_with("tideway.toml:3:11: `brokers` needs at least one"));
        assert!(problems[1].starts_with("tideway.toml:4:9: the topic `events {type}` has ` `"));
        assert!(problems[2].starts_with("tideway.toml:9:7: `key` `traits..x`"));
        assert!(
            problems[3]
                .starts_with("tideway.toml:5:15: unknown `compression` `brotli`; use one of none, gzip, snappy, lz4"),
            "{problems:#?}"
        );
        assert!(problems[4].starts_with("tideway.toml:6:8: `acks` `1` is not supported"));
        assert!(problems[5].starts_with("tideway.toml:7:14: `batch_size`"));
        assert!(problems[6].starts_with("tideway.toml:8:15: `concurrency`"));
    }

    #[test]
    fn zstd_is_refused_as_not_built_in() {
        let problems = parse(&minimal("compression = \"zstd\"\n")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("tideway.toml:5:15: `compression` `zstd` is not built into"),
            "{problems:#?}"
        );
        assert!(problems[0].contains("none, gzip, snappy, lz4"));
    }

    #[test]
    fn unknown_fields_and_a_missing_brokers_are_refused() {
        let text = "[destinations.bus]\ntype = \"kafka\"\ntopic = \"t\"\nbroker = \"a:1\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(
            problems.contains("tideway.toml:4:1: unknown field `broker`"),
            "{problems}"
        );
        let text = "[destinations.bus]\ntype = \"kafka\"\ntopic = \"t\"\n";
        let problems = parse(text).unwrap_err().join("\n");
        assert!(problems.contains("missing field `brokers`"), "{problems}");
    }

    #[test]
    fn sasl_checks() {
        let sasl = "[destinations.bus.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"plain\"\n";
        let problems = parse(&minimal(sasl)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("`GSSAPI` is not built into"),
            "{problems:#?}"
        );
        let sasl = "[destinations.bus.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"plain\"\n";
        let problems = parse(&minimal(sasl)).unwrap_err();
        assert!(
            problems[0].starts_with("tideway.toml:8:12: `password` is a secret"),
            "{problems:#?}"
        );
        let problems = parse(&minimal("security_protocol = \"sasl_plaintext\"\n")).unwrap_err();
        assert!(
            problems[0].contains("needs a `[sasl]` table"),
            "{problems:#?}"
        );
        let sasl = "security_protocol = \"sasl_plaintext\"\n[destinations.bus.sasl]\nmechanism = \"scram-sha-256\"\nusername = \"u\"\npassword = \"${KAFKA_PASSWORD}\"\n";
        let config = parse(&minimal(sasl)).unwrap();
        assert_eq!(config.security_protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(config.sasl.unwrap().mechanism, SaslMechanism::ScramSha256);
    }

    #[test]
    fn managed_properties_are_refused() {
        let props = "[destinations.bus.properties]\n\"enable.idempotence\" = \"false\"\n\"ssl.ca.location\" = \"/ca.pem\"\n";
        let problems = parse(&minimal(props)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("tideway.toml:6:24: property `enable.idempotence`"));
    }

    #[test]
    fn topic_templates_render_from_the_event() {
        let t = TopicTemplate::parse("events.{type}").unwrap();
        assert!(!t.is_static());
        assert_eq!(
            t.render(&json!({"type": "identify"})).unwrap(),
            "events.identify"
        );
        let t = TopicTemplate::parse("{context.app.name}.{event}").unwrap();
        let e = json!({"type": "track", "event": "Order Completed!", "context": {"app": {"name": "ShopApp"}}});
        assert_eq!(t.render(&e).unwrap(), "shop_app.order_completed");
        let missing = t
            .render(&json!({"type": "track", "event": "x"}))
            .unwrap_err();
        assert!(missing.contains("needs `context.app.name`"), "{missing}");
        let empty = TopicTemplate::parse("e.{event}")
            .unwrap()
            .render(&json!({"event": "!!"}));
        assert!(empty.unwrap_err().contains("needs `event`"));
        assert!(TopicTemplate::parse("clicks").unwrap().is_static());
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(
            TopicTemplate::parse("events.{type")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            TopicTemplate::parse("events.{}")
                .unwrap_err()
                .contains("not a path")
        );
        assert!(
            TopicTemplate::parse("events/{type}")
                .unwrap_err()
                .contains("has `/`")
        );
        assert!(
            TopicTemplate::parse("..")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(
            TopicTemplate::parse(&"x".repeat(250))
                .unwrap_err()
                .contains("249")
        );
    }

    #[test]
    fn snake_case_keeps_topic_characters() {
        assert_eq!(snake_case("Order Completed"), "order_completed");
        assert_eq!(snake_case("orderCompleted"), "order_completed");
        assert_eq!(snake_case("page-view.v2"), "page-view.v2");
        assert_eq!(snake_case("  Café   au lait "), "caf_au_lait");
        assert_eq!(snake_case("ID"), "id");
    }

    #[test]
    fn the_key_is_chosen_from_the_event() {
        let e = json!({"userId": 42, "anonymousId": "a-1", "messageId": "m-1", "traits": {"account_id": "acc"}});
        assert_eq!(KeyChoice::User.of(&e).as_deref(), Some("42"));
        assert_eq!(KeyChoice::Anonymous.of(&e).as_deref(), Some("a-1"));
        assert_eq!(KeyChoice::Message.of(&e).as_deref(), Some("m-1"));
        assert_eq!(
            parse_key("traits.account_id").unwrap().of(&e).as_deref(),
            Some("acc")
        );
        let anonymous = json!({"userId": "", "anonymousId": "a-2"});
        assert_eq!(KeyChoice::User.of(&anonymous).as_deref(), Some("a-2"));
        assert_eq!(KeyChoice::User.of(&json!({"type": "track"})), None);
        assert_eq!(parse_key("traits.missing").unwrap().of(&e), None);
    }
}
