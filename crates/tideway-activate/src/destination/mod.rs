//! Destinations: where events go.
//!
//! A destination is one folder under `destination/` with a config half (a serde struct with
//! `deny_unknown_fields`, read from `[destinations.NAME]` in `tideway.toml`) and a runtime half
//! (one [`Destination`] implementation), plus one line in [`registry`]. Batching, rate
//! limiting, retries, splitting refused batches and metrics live once, in
//! [`crate::delivery`]; a destination only turns a batch into requests and each answer into
//! one [`Outcome`] per event, in order.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tideway_core::{Fault, Faulty};

pub mod customerio;
pub mod http;
pub mod hubspot;
pub mod kafka;
pub mod postgres;
pub mod redis;
pub mod salesforce;
pub mod webhook;

use std::sync::Arc;

use tideway_core::config::Diags;

use crate::config::Mode;
use toml::Spanned;

/// Every destination type, for messages. Adding a destination: a folder here, a variant of
/// [`DestinationConfig`], and one line in each match below.
pub const DESTINATION_TYPES: &[&str] = &[
    "customerio",
    "hubspot",
    "kafka",
    "postgres",
    "redis",
    "salesforce",
    "webhook",
];

/// A checked `[destinations.NAME]` table, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationConfig {
    CustomerIo(customerio::CustomerIoConfig),
    HubSpot(hubspot::HubSpotConfig),
    Kafka(kafka::KafkaConfig),
    Postgres(postgres::PostgresConfig),
    Redis(redis::RedisConfig),
    Salesforce(salesforce::SalesforceConfig),
    Webhook(webhook::WebhookConfig),
}

impl DestinationConfig {
    /// Checks the table `[destinations.NAME]` of `only` (a text where everything else is
    /// blanked) for the type `kind`, reporting problems into `diags`.
    pub fn parse(
        name: &str,
        kind: &Spanned<String>,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<DestinationConfig> {
        match kind.get_ref().as_str() {
            "customerio" => {
                customerio::CustomerIoConfig::parse(name, only, diags, env).map(Self::CustomerIo)
            }
            "hubspot" => hubspot::HubSpotConfig::parse(name, only, diags, env).map(Self::HubSpot),
            "kafka" => kafka::KafkaConfig::parse(name, only, diags, env).map(Self::Kafka),
            "postgres" => {
                postgres::PostgresConfig::parse(name, only, diags, env).map(Self::Postgres)
            }
            "redis" => redis::RedisConfig::parse(name, only, diags, env).map(Self::Redis),
            "salesforce" => {
                salesforce::SalesforceConfig::parse(name, only, diags, env).map(Self::Salesforce)
            }
            "webhook" => webhook::WebhookConfig::parse(name, only, diags, env).map(Self::Webhook),
            other => {
                let hint = tideway_lake::closest(
                    other,
                    &DESTINATION_TYPES
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
                diags.at(
                    Some(kind.span()),
                    format!(
                        "unknown destination type `{other}`; {hint}known types: {}",
                        DESTINATION_TYPES.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Why this destination cannot delete a record (a sync's `on_delete = "delete"`), or
    /// `None` when it can.
    pub fn refuses_deletes(&self) -> Option<&'static str> {
        match self {
            DestinationConfig::HubSpot(_) => Some(hubspot::DELETES_REFUSED),
            DestinationConfig::CustomerIo(_)
            | DestinationConfig::Kafka(_)
            | DestinationConfig::Postgres(_)
            | DestinationConfig::Redis(_)
            | DestinationConfig::Salesforce(_)
            | DestinationConfig::Webhook(_) => None,
        }
    }

    /// The object modes (a sync's `mode`) this destination writes records with.
    pub fn modes(&self) -> &'static [Mode] {
        match self {
            DestinationConfig::HubSpot(_) => hubspot::MODES,
            DestinationConfig::Salesforce(_) => salesforce::MODES,
            DestinationConfig::CustomerIo(_)
            | DestinationConfig::Kafka(_)
            | DestinationConfig::Postgres(_)
            | DestinationConfig::Redis(_)
            | DestinationConfig::Webhook(_) => &[Mode::Upsert, Mode::Mirror],
        }
    }

    /// The destination type (`hubspot`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            DestinationConfig::CustomerIo(_) => "customerio",
            DestinationConfig::HubSpot(_) => "hubspot",
            DestinationConfig::Kafka(_) => "kafka",
            DestinationConfig::Postgres(_) => "postgres",
            DestinationConfig::Redis(_) => "redis",
            DestinationConfig::Salesforce(_) => "salesforce",
            DestinationConfig::Webhook(_) => "webhook",
        }
    }

    /// The destination `name` of this configuration.
    pub fn build(&self, name: &str) -> Arc<dyn Destination> {
        match self {
            DestinationConfig::CustomerIo(c) => Arc::new(customerio::build(name, c.clone())),
            DestinationConfig::HubSpot(c) => Arc::new(hubspot::build(name, c.clone())),
            DestinationConfig::Kafka(c) => Arc::new(kafka::build(name, c.clone())),
            DestinationConfig::Postgres(c) => Arc::new(postgres::build(name, c.clone())),
            DestinationConfig::Redis(c) => Arc::new(redis::Redis::new(name, c.clone())),
            DestinationConfig::Salesforce(c) => Arc::new(salesforce::build(name, c.clone())),
            DestinationConfig::Webhook(c) => Arc::new(webhook::Webhook::new(name, c.clone())),
        }
    }
}

/// What a sync row or a live event asks of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create or update (identify, track, group, an object upsert).
    Upsert,
    /// Update the record if it exists; never create it (a sync's `mode = "update"`). Only
    /// destinations whose [`DestinationConfig::modes`] include `update` receive it.
    Update,
    /// Create the record; one that exists is refused (a sync's `mode = "insert"`). Only
    /// destinations whose [`DestinationConfig::modes`] include `insert` receive it.
    Insert,
    /// The row is gone from the source and the sync's `on_delete = "delete"` says to delete it.
    Delete,
}

impl Op {
    /// For a destination that writes by upsert and delete only (its
    /// [`DestinationConfig::modes`] are `upsert` and `mirror`): why it refuses an insert-only
    /// or update-only write. A sync's configuration check keeps these from reaching it.
    pub fn upsert_or_delete(self, kind: &str) -> Result<(), String> {
        let what = match self {
            Op::Upsert | Op::Delete => return Ok(()),
            Op::Insert => "insert-only",
            Op::Update => "update-only",
        };
        Err(format!(
            "{kind} writes by upsert and delete only, not {what}: set the sync's `mode` to `upsert` or `mirror`"
        ))
    }

    /// The op's name in a message (`upsert`, `insert`, `update`, `delete`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One event on its way to a destination: a Segment-shaped message (`type`, `userId`,
/// `traits` / `properties`, `messageId`, `timestamp`, `context`, `integrations`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// What identifies the event's origin in logs and outcomes: a sync row's key, or the log
    /// offset of a live event.
    pub origin: String,
    pub op: Op,
    pub event: Value,
}

impl OutboundEvent {
    /// The message's `type` (`identify`, `track`, `group`, ...), or `""`.
    pub fn kind(&self) -> &str {
        self.event.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// `userId`, else `anonymousId`, as text (numbers are written out), if present.
    pub fn user_id(&self) -> Option<String> {
        ["userId", "anonymousId"]
            .iter()
            .find_map(|k| self.event.get(*k).and_then(id_text))
    }

    /// A field of the event as an id (a string, or a number written out).
    pub fn id_field(&self, name: &str) -> Option<String> {
        self.event.get(name).and_then(id_text)
    }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a destination did not take an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// The HTTP status (or protocol code) the destination answered with, if any.
    pub status: Option<u16>,
    /// What the destination said, or what went wrong reaching it; never contains a secret.
    pub message: String,
    /// Who is at fault: the data or configuration (User), the destination (External).
    pub fault: Fault,
}

impl DeliveryError {
    /// The destination refused the data: fix the data or the mapping.
    pub fn refused(status: Option<u16>, message: impl Into<String>) -> Self {
        DeliveryError {
            status,
            message: message.into(),
            fault: Fault::User,
        }
    }

    /// The destination or the network failed: retrying may help.
    pub fn external(status: Option<u16>, message: impl Into<String>) -> Self {
        DeliveryError {
            status,
            message: message.into(),
            fault: Fault::External,
        }
    }
}

impl Faulty for DeliveryError {
    fn fault(&self) -> Fault {
        self.fault
    }
}

/// The fate of one event in one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination accepted it.
    Delivered,
    /// It may succeed later (rate limit, outage, timeout); `after` is the destination's
    /// `Retry-After` when it gave one.
    Retry {
        after: Option<Duration>,
        error: DeliveryError,
    },
    /// The destination refused it; retrying the same data will not help.
    Rejected(DeliveryError),
}

impl Outcome {
    /// The same outcome for each of `n` events.
    pub fn all(self, n: usize) -> Vec<Outcome> {
        vec![self; n]
    }
}

/// How a destination wants its traffic shaped. The delivery layer enforces these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLimits {
    /// Events per call.
    pub max_events: usize,
    /// Bytes of serialized events per call.
    pub max_bytes: usize,
    /// Calls per second allowed for the destination's account (shared by every sync using
    /// it); `None` for no limit.
    pub requests_per_second: Option<f64>,
    /// The account's limit is counted over a rolling window of this length (HubSpot: 10 s):
    /// then no window ever holds more than `requests_per_second` × the window's calls, however
    /// the calls bunch. `None`: the limit is a steady rate, bursts of `concurrency` allowed.
    pub rate_window: Option<Duration>,
    /// Calls in flight at once.
    pub concurrency: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_events: 100,
            max_bytes: 512 * 1024,
            requests_per_second: None,
            rate_window: None,
            concurrency: 4,
        }
    }
}

/// A place events are delivered to. See the module docs.
#[async_trait]
pub trait Destination: Send + Sync + fmt::Debug {
    /// The destination's name in `tideway.toml` (`[destinations.NAME]`).
    fn name(&self) -> &str;
    /// The destination type (`webhook`, `customerio`, ...).
    fn kind(&self) -> &'static str;
    /// Checks the credentials and the address with a request that mimics a real write but
    /// changes nothing (or as little as the API allows).
    async fn healthcheck(&self) -> Result<(), DeliveryError>;
    /// Delivers `batch` (at most [`BatchLimits::max_events`] events) and answers one outcome
    /// per event, in order.
    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome>;
    /// How traffic to this destination must be shaped.
    fn limits(&self) -> BatchLimits;
    /// The last requests made, secrets redacted, newest last.
    fn inspect(&self) -> Vec<http::Exchange> {
        Vec::new()
    }
}
