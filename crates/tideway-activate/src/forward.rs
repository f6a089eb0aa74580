//! Live forwarding: the events the collector accepts, sent on to destinations within seconds.
//!
//! A connection joins a collect source (a write key) to a destination, in `tideway.toml`:
//!
//! ```toml
//! [connections.web_to_hook]
//! source = "web"                    # a [collect.sources.NAME]
//! destination = "hook"              # a [destinations.NAME]
//! # types = ["track", "identify"]   # event types sent (default: every type)
//! # events = ["Order Completed"]    # track events sent, by name (default: every one)
//! # transformations = ["anonymize"] # transformations/NAME.js, in order
//! # start = "latest"                # where a new connection starts in the log: latest | earliest
//! # batch_size = 1000               # log records read per step
//! ```
//!
//! Each connection is a consumer of the durable event log (`forward:<name>`) with its own
//! offset. A step reads up to `batch_size` records from that offset and keeps the events of
//! its source that pass its filters: the types, the names, and the event's `integrations`
//! object as Segment and RudderStack honor it (`{"All": false, "Webhooks": true}`: a key
//! matches the destination's name in `tideway.toml`, its type, or the vendor's name). The
//! events go through the transformations, then to the destination in order per user
//! ([`Delivery::deliver_in_order`]).
//!
//! - Refused by the destination, or failed by a transformation: written to
//!   `_tideway.dead_letters` (source `forward:<name>`) with the reason.
//! - To retry: sent again, in order, after a pause that doubles up to `max_pause` while the
//!   destination stays down. An outage pauses this connection alone; the log keeps its events
//!   within the log's byte budget (when the budget is full the collector answers 503 and the
//!   SDKs retry).
//! - The offset moves past a record only once each of its events is delivered or
//!   dead-lettered. A crash sends again what was not committed: at least once, each event
//!   with its `messageId`, so a destination that deduplicates sees it once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tideway_collect::event::Meta;
use tideway_collect::log::{EventLog, Record};
use tideway_core::config::{ConfigErrors, Diags, isolate, parse_collecting};
use tideway_lake::Lake;
use toml::Spanned;
use tracing::{info, warn};

use crate::Result;
use crate::delivery::{Delivery, RetryPolicy};
use crate::destination::{Destination, Op, OutboundEvent, Outcome};
use crate::state::{self, DeadRow};
use crate::transform::{Chain, Limits, Source};

/// Metric names of live connections (label `connection`).
pub mod metric {
    /// Events delivered.
    pub const DELIVERED: &str = "tideway_forward_delivered_total";
    /// Events dead-lettered (refused, or failed by a transformation).
    pub const DEAD: &str = "tideway_forward_dead_total";
    /// Events left out by the connection's filters or dropped by a transformation.
    pub const FILTERED: &str = "tideway_forward_filtered_total";
    /// Delivery rounds that ended with events to retry (the destination failing).
    pub const FAILED: &str = "tideway_forward_failed_rounds_total";
    /// Log records the connection has not yet committed.
    pub const LAG: &str = "tideway_forward_lag_events";
    /// Seconds from the collector's ack (`receivedAt`) to delivery.
    pub const DELAY: &str = "tideway_forward_delay_seconds";
}

/// The event types a connection can filter on.
const TYPES: &[&str] = &["track", "identify", "page", "screen", "group", "alias"];

/// Where a new connection starts reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Events accepted from now on.
    Latest,
    /// Every event the log still holds.
    Earliest,
}

/// A checked `[connections.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    pub name: String,
    pub source: String,
    pub destination: String,
    /// Event types sent; empty: every type.
    pub types: Vec<String>,
    /// Track event names sent; empty: every one.
    pub events: Vec<String>,
    pub transformations: Vec<String>,
    pub start: Start,
    pub batch_size: usize,
}

#[derive(Deserialize)]
struct Tables {
    #[serde(default)]
    connections: BTreeMap<String, RawConnection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    source: Spanned<String>,
    destination: Spanned<String>,
    #[serde(default)]
    types: Vec<Spanned<String>>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    transformations: Vec<Spanned<String>>,
    start: Option<Spanned<String>>,
    batch_size: Option<Spanned<usize>>,
}

/// The `[connections.NAME]` tables of `tideway.toml` (`text`, read from `file`), checked
/// against the collect sources, destinations and transformations the project has. Every
/// problem of every connection at once, each at its line.
pub fn connections(
    text: &str,
    file: &str,
    sources: &[String],
    destinations: &[String],
    transformations: &[String],
) -> std::result::Result<Vec<ConnectionConfig>, ConfigErrors> {
    let mut diags = Diags::new(text, file);
    let names: Vec<String> = match toml::from_str::<toml::Table>(text) {
        Ok(t) => match t.get("connections") {
            Some(toml::Value::Table(c)) => c.keys().cloned().collect(),
            _ => Vec::new(),
        },
        Err(e) => {
            diags.at(e.span(), e.message().trim().to_string());
            return diags.finish(None);
        }
    };
    let mut out = Vec::new();
    for name in names {
        let only = isolate(text, &["connections", &name]);
        let raw = match parse_collecting::<Tables>(&only) {
            Ok(mut t) => t.connections.remove(&name),
            Err(errors) => {
                diags.extend(errors);
                None
            }
        };
        let Some(raw) = raw else { continue };
        let mut known = |what: &str, value: &Spanned<String>, list: &[String], add: &str| {
            let v = value.get_ref();
            if !list.contains(v) {
                let hint = tideway_lake::closest(v, list)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                let have = if list.is_empty() {
                    format!("there is none: {add}")
                } else {
                    format!("known: {}", list.join(", "))
                };
                diags.at(
                    Some(value.span()),
                    format!("[connections.{name}]: unknown {what} `{v}`; {hint}{have}"),
                );
            }
        };
        known(
            "source",
            &raw.source,
            sources,
            "add a [collect.sources.NAME] table with its write_key",
        );
        known(
            "destination",
            &raw.destination,
            destinations,
            "add a [destinations.NAME] table",
        );
        for t in &raw.transformations {
            known(
                "transformation",
                t,
                transformations,
                "add transformations/NAME.js",
            );
        }
        for t in &raw.types {
            if !TYPES.contains(&t.get_ref().as_str()) {
                diags.at(
                    Some(t.span()),
                    format!(
                        "[connections.{name}]: `{}` is not an event type; valid types: {}",
                        t.get_ref(),
                        TYPES.join(", ")
                    ),
                );
            }
        }
        let start = match raw.start.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("latest") => Start::Latest,
            Some("earliest") => Start::Earliest,
            Some(other) => {
                diags.at(
                    raw.start.as_ref().map(Spanned::span),
                    format!("[connections.{name}]: `start = \"{other}\"` is not valid; use \"latest\" (events from now on) or \"earliest\" (every event the log holds)"),
                );
                Start::Latest
            }
        };
        let batch_size = match raw.batch_size {
            Some(b) if *b.get_ref() == 0 || *b.get_ref() > 100_000 => {
                diags.at(
                    Some(b.span()),
                    format!("[connections.{name}]: `batch_size` is the log records read per step, from 1 to 100000"),
                );
                1000
            }
            Some(b) => b.into_inner(),
            None => 1000,
        };
        out.push(ConnectionConfig {
            name: name.clone(),
            source: raw.source.into_inner(),
            destination: raw.destination.into_inner(),
            types: raw.types.into_iter().map(Spanned::into_inner).collect(),
            events: raw.events,
            transformations: raw
                .transformations
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            start,
            batch_size,
        });
    }
    diags.finish(Some(out))
}

/// The names a destination answers to in an event's `integrations` object, normalized
/// (lowercase letters and digits only).
fn integration_names(name: &str, kind: &str) -> Vec<String> {
    let vendor: &[&str] = match kind {
        "webhook" => &["Webhooks", "Webhook"],
        "customerio" => &["Customer.io", "Customer IO"],
        "hubspot" => &["HubSpot"],
        "salesforce" => &["Salesforce"],
        "kafka" => &["Kafka"],
        "redis" => &["Redis"],
        "postgres" => &["PostgreSQL", "Postgres"],
        _ => &[],
    };
    let mut out: Vec<String> = [name, kind]
        .into_iter()
        .chain(vendor.iter().copied())
        .map(normalize)
        .collect();
    out.dedup();
    out
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether an event's `integrations` object lets it go to the destination known by `names`:
/// a key naming it decides (`false` keeps the event out; `true` or an options object lets
/// it through), else `All` (default: through).
pub fn integrations_allow(event: &Map<String, Value>, names: &[String]) -> bool {
    let Some(Value::Object(integrations)) = event.get("integrations") else {
        return true;
    };
    let verdict = |v: &Value| !matches!(v, Value::Bool(false));
    if let Some((_, v)) = integrations
        .iter()
        .find(|(k, _)| names.contains(&normalize(k)))
    {
        return verdict(v);
    }
    integrations.get("All").is_none_or(verdict)
}

/// How a connection runs.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// How long a read waits for the first new record.
    pub wait: Duration,
    /// Retries within one delivery round.
    pub retry: RetryPolicy,
    /// The first pause after a round that left events to retry; it doubles per round.
    pub pause: Duration,
    /// The longest pause between rounds while the destination stays down.
    pub max_pause: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            wait: Duration::from_millis(200),
            retry: RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(30),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StepReport {
    /// Log records read.
    pub records: u64,
    /// Events sent to the destination (after the transformations).
    pub events: u64,
    pub delivered: u64,
    /// Left out by the filters, of another source, or dropped by a transformation.
    pub filtered: u64,
    /// Dead-lettered: refused, unreadable, or failed by a transformation.
    pub dead: u64,
    /// Delivery rounds that left events to retry.
    pub failed_rounds: u64,
    /// The committed offset after the step.
    pub position: u64,
}

/// What `tideway tail` shows: one event's fate at one connection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub connection: String,
    pub destination: String,
    pub offset: u64,
    pub message_id: Option<String>,
    /// `type`, and the name for a track event.
    pub event: String,
    /// `delivered`, `dead` or `filtered`.
    pub outcome: &'static str,
    pub message: Option<String>,
}

/// Log records `from..to`, turned into events, on their way to the destination.
#[derive(Debug)]
struct Batch {
    from: u64,
    /// The offset after the last record read (`from` when none was).
    to: u64,
    events: Vec<OutboundEvent>,
    /// When the collector received each event (for the delay metric).
    received: Vec<Option<String>>,
    dead: Vec<DeadRow>,
    report: StepReport,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.to == self.from
    }
}

/// A live connection, ready to run.
pub struct Connection {
    pub config: ConnectionConfig,
    delivery: Delivery,
    chain: Chain,
    log: Arc<dyn EventLog>,
    lake: Lake,
    names: Vec<String>,
    options: ForwardOptions,
    /// Where each event's fate is announced (for `tideway tail`); nobody listening is fine.
    sent: tokio::sync::broadcast::Sender<Sent>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.config.name)
            .field("destination", &self.config.destination)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The log consumer name of connection `name`.
    pub fn consumer(name: &str) -> String {
        format!("forward:{name}")
    }

    /// The connection `config` to `destination`, registered as a consumer of `log` (at the
    /// log's end, or its start for `start = "earliest"`) if it never was.
    pub async fn open(
        config: ConnectionConfig,
        destination: Arc<dyn Destination>,
        scripts: &[Source],
        log: Arc<dyn EventLog>,
        lake: Lake,
        options: ForwardOptions,
    ) -> Result<Connection> {
        let chain = Chain::load(
            &config.name,
            &config.transformations,
            scripts,
            Limits::default(),
        )?;
        let consumer = Self::consumer(&config.name);
        if log.committed(&consumer).is_none() {
            let stats = log.stats();
            let at = match config.start {
                Start::Latest => stats.end,
                Start::Earliest => stats.start,
            };
            log.commit(&consumer, at).await?;
            info!(connection = %config.name, offset = at, "live connection registered");
        }
        let names = integration_names(&config.destination, destination.kind());
        let (sent, _) = tokio::sync::broadcast::channel(4096);
        Ok(Connection {
            delivery: Delivery::new(destination, options.retry),
            config,
            chain,
            log,
            lake,
            names,
            options,
            sent,
        })
    }

    /// Each event's fate from now on, for `tideway tail`.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Sent> {
        self.sent.subscribe()
    }

    /// The committed offset: every record below it reached a final outcome.
    pub fn position(&self) -> u64 {
        self.log
            .committed(&Self::consumer(&self.config.name))
            .unwrap_or(0)
    }

    /// Runs until `stop` resolves. While one batch is being delivered the next is read and
    /// prepared (filters, transformations), so the destination is not left idle between
    /// batches; delivery itself stays in log order, one batch after the other. A failing round
    /// (the lake unreachable for dead letters, ...) is logged and tried again after a pause;
    /// nothing is committed past it.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut pause = self.options.pause;
        let mut ahead: Option<Batch> = None;
        loop {
            let current = ahead.take();
            tokio::select! {
                biased;
                () = &mut stop => return,
                result = self.round(current) => match result {
                    Ok(next) => {
                        ahead = next;
                        pause = self.options.pause;
                    }
                    Err(e) => {
                        warn!(connection = %self.config.name, error = %e, retry_in = ?pause, "live connection: the step failed; retrying");
                        tokio::select! {
                            () = &mut stop => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(self.options.max_pause);
                    }
                },
            }
        }
    }

    /// Delivers `current` (or the next batch from the committed offset) while reading the one
    /// after it, commits, and returns that next batch if it holds records.
    async fn round(&self, current: Option<Batch>) -> Result<Option<Batch>> {
        let mut batch = match current {
            Some(batch) => batch,
            None => self.read(self.position(), self.options.wait).await?,
        };
        if batch.is_empty() {
            self.commit(batch).await?;
            return Ok(None);
        }
        let to = batch.to;
        let ((), next) = tokio::join!(self.deliver(&mut batch), self.read(to, Duration::ZERO));
        self.commit(batch).await?;
        // A next batch that failed to read is read again from the committed offset.
        Ok(next.ok().filter(|b| !b.is_empty()))
    }

    /// Reads the next records, sends their events until each is delivered or dead-lettered
    /// (waiting out destination outages), then commits the offset past them.
    pub async fn step(&self) -> Result<StepReport> {
        let mut batch = self.read(self.position(), self.options.wait).await?;
        self.deliver(&mut batch).await;
        self.commit(batch).await
    }

    /// Up to `batch_size` records from `from`, waiting up to `wait` for the first, turned into
    /// the events to send.
    async fn read(&self, from: u64, wait: Duration) -> Result<Batch> {
        let records = self.log.read(from, self.config.batch_size, wait).await?;
        let mut batch = Batch {
            to: records.last().map_or(from, |r| r.offset + 1),
            from,
            events: Vec::new(),
            received: Vec::new(),
            dead: Vec::new(),
            report: StepReport {
                records: records.len() as u64,
                position: from,
                ..Default::default()
            },
        };
        if !records.is_empty() {
            let (events, received) = self
                .prepare(&records, &mut batch.report, &mut batch.dead)
                .await?;
            batch.report.events = events.len() as u64;
            batch.events = events;
            batch.received = received;
        }
        Ok(batch)
    }

    /// Sends the batch's events until each is delivered or refused.
    async fn deliver(&self, batch: &mut Batch) {
        let events = std::mem::take(&mut batch.events);
        let received = std::mem::take(&mut batch.received);
        self.send(events, received, &mut batch.report, &mut batch.dead)
            .await;
    }

    /// Writes the batch's dead letters, then moves the offset past its records.
    async fn commit(&self, batch: Batch) -> Result<StepReport> {
        if batch.is_empty() {
            self.gauge_lag(batch.from);
            return Ok(batch.report);
        }
        let mut report = batch.report;
        if !batch.dead.is_empty() {
            let origin = Self::consumer(&self.config.name);
            let dead = state::dead_batch(&origin, &self.config.source, &batch.dead);
            self.lake
                .append(&state::table(state::DEAD_LETTERS), vec![dead])
                .await?;
        }
        self.log
            .commit(&Self::consumer(&self.config.name), batch.to)
            .await?;
        report.position = batch.to;
        let label = [("connection", self.config.name.clone())];
        metrics::counter!(metric::DELIVERED, &label).increment(report.delivered);
        metrics::counter!(metric::DEAD, &label).increment(report.dead);
        metrics::counter!(metric::FILTERED, &label).increment(report.filtered);
        self.gauge_lag(batch.to);
        Ok(report)
    }

    fn gauge_lag(&self, position: u64) {
        let lag = self.log.stats().end.saturating_sub(position);
        metrics::gauge!(metric::LAG, "connection" => self.config.name.clone()).set(lag as f64);
    }

    fn announce(&self, offset: u64, event: &Value, outcome: &'static str, message: Option<String>) {
        if self.sent.receiver_count() == 0 {
            return;
        }
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let label = match event.get("event").and_then(Value::as_str) {
            Some(name) if kind == "track" => format!("track \"{name}\""),
            _ => kind.to_string(),
        };
        let _ = self.sent.send(Sent {
            connection: self.config.name.clone(),
            destination: self.config.destination.clone(),
            offset,
            message_id: event
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string),
            event: label,
            outcome,
            message,
        });
    }

    /// The events the records become, after the filters and the transformations, with the
    /// time each was received (for the delay metric).
    async fn prepare(
        &self,
        records: &[Record],
        report: &mut StepReport,
        dead: &mut Vec<DeadRow>,
    ) -> Result<(Vec<OutboundEvent>, Vec<Option<String>>)> {
        let mut kept: Vec<(u64, Value, Value)> = Vec::new();
        for r in records {
            let event = match Meta::parse(&r.payload) {
                Ok((meta, _)) if meta.k != "event" || meta.source != self.config.source => {
                    report.filtered += 1;
                    continue;
                }
                Ok((meta, body)) => meta.event(body),
                Err(e) => Err(e),
            };
            let event = match event {
                Ok(event) => event,
                Err(reason) => {
                    report.dead += 1;
                    dead.push(DeadRow {
                        key: format!("offset {}", r.offset),
                        code: "unreadable".into(),
                        reason,
                        message_id: None,
                        payload: String::from_utf8_lossy(&r.payload).into_owned(),
                    });
                    continue;
                }
            };
            if !self.passes(&event) {
                report.filtered += 1;
                self.announce(r.offset, &Value::Object(event), "filtered", None);
                continue;
            }
            if self.chain.is_empty() {
                // No transformation: the event goes as it is, with nothing built or copied.
                kept.push((r.offset, Value::Object(event), Value::Null));
                continue;
            }
            let metadata = json!({
                "sourceId": self.config.source,
                "sourceName": self.config.source,
                "sourceType": "tideway-collect",
                "destinationId": self.config.destination,
                "destinationName": self.config.destination,
                "destinationType": self.delivery.destination().kind(),
                "messageId": event.get("messageId"),
                "offset": r.offset,
            });
            kept.push((r.offset, Value::Object(event), metadata));
        }
        // Per event, what the transformations made of it; `None`: there are none.
        let results: Vec<Option<crate::transform::ChainResult>> = if self.chain.is_empty() {
            kept.iter().map(|_| None).collect()
        } else {
            let inputs = kept
                .iter()
                .map(|(_, e, m)| (e.clone(), m.clone()))
                .collect();
            self.chain
                .run(inputs)
                .await?
                .into_iter()
                .map(Some)
                .collect()
        };
        let mut events = Vec::new();
        let mut received = Vec::new();
        let received_at = |e: &Value| {
            e.get("receivedAt")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        for ((offset, original, _), result) in kept.into_iter().zip(results) {
            match result {
                None => {
                    received.push(received_at(&original));
                    events.push(OutboundEvent {
                        origin: offset.to_string(),
                        op: Op::Upsert,
                        event: original,
                    });
                }
                Some(Ok(out)) if out.is_empty() => {
                    report.filtered += 1;
                    self.announce(
                        offset,
                        &original,
                        "filtered",
                        Some("dropped by a transformation".into()),
                    );
                }
                Some(Ok(out)) => {
                    for event in out {
                        received.push(received_at(&original));
                        events.push(OutboundEvent {
                            origin: offset.to_string(),
                            op: Op::Upsert,
                            event,
                        });
                    }
                }
                Some(Err(message)) => {
                    report.dead += 1;
                    self.announce(offset, &original, "dead", Some(message.clone()));
                    dead.push(DeadRow {
                        key: format!("offset {offset}"),
                        code: "transform".into(),
                        reason: message,
                        message_id: original
                            .get("messageId")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        payload: original.to_string(),
                    });
                }
            }
        }
        Ok((events, received))
    }

    /// Whether an event passes the connection's filters.
    fn passes(&self, event: &Map<String, Value>) -> bool {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if !self.config.types.is_empty() && !self.config.types.iter().any(|t| t == kind) {
            return false;
        }
        if kind == "track" && !self.config.events.is_empty() {
            let name = event.get("event").and_then(Value::as_str).unwrap_or("");
            if !self.config.events.iter().any(|e| e == name) {
                return false;
            }
        }
        integrations_allow(event, &self.names)
    }

    /// Delivers `events` until each is delivered or refused; the refused go to `dead`.
    async fn send(
        &self,
        mut events: Vec<OutboundEvent>,
        mut received: Vec<Option<String>>,
        report: &mut StepReport,
        dead: &mut Vec<DeadRow>,
    ) {
        let mut pause = self.options.pause;
        let label = [("connection", self.config.name.clone())];
        while !events.is_empty() {
            let outcomes = self.delivery.deliver_in_order(&events, &|_| {}).await;
            let now = chrono::Utc::now();
            let mut again = Vec::new();
            let mut again_received = Vec::new();
            for ((event, d), at) in events.into_iter().zip(outcomes).zip(received) {
                let offset: u64 = event.origin.parse().unwrap_or_default();
                match d.outcome {
                    Outcome::Delivered => {
                        report.delivered += 1;
                        if let Some(t) = at.as_deref().and_then(tideway_core::time::parse_instant) {
                            let delay = (now - t).num_microseconds().unwrap_or(0) as f64 / 1e6;
                            metrics::histogram!(metric::DELAY, &label).record(delay.max(0.0));
                        }
                        self.announce(offset, &event.event, "delivered", None);
                    }
                    Outcome::Rejected(e) => {
                        report.dead += 1;
                        self.announce(offset, &event.event, "dead", Some(e.message.clone()));
                        dead.push(DeadRow {
                            key: format!("offset {offset}"),
                            code: e.status.map_or("refused".into(), |s| s.to_string()),
                            reason: format!(
                                "refused by destination `{}`: {}",
                                self.config.destination, e.message
                            ),
                            message_id: event
                                .event
                                .get("messageId")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            payload: event.event.to_string(),
                        });
                    }
                    Outcome::Retry { error, .. } => {
                        if d.attempts > 0 {
                            tracing::debug!(connection = %self.config.name, error = %error, "live connection: event to retry");
                        }
                        again.push(event);
                        again_received.push(at);
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            report.failed_rounds += 1;
            metrics::counter!(metric::FAILED, &label).increment(1);
            warn!(
                connection = %self.config.name,
                destination = %self.config.destination,
                pending = again.len(),
                retry_in = ?pause,
                "live connection: the destination is failing; its events wait in the log"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.max_pause);
            events = again;
            received = again_received;
        }
    }
}
