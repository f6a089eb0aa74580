//! Live connections over a real event log: filters, transformations, dead letters, per-user
//! order through a destination outage, and a crash mid-delivery followed by a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tideway_activate::delivery::RetryPolicy;
use tideway_activate::destination::{
    BatchLimits, DeliveryError, Destination, OutboundEvent, Outcome,
};
use tideway_activate::forward::{
    Connection, ConnectionConfig, ForwardOptions, Start, connections, integrations_allow,
};
use tideway_activate::transform::Source;
use tideway_collect::event::{Envelope, check};
use tideway_collect::log::{EventLog, FileLog, FileLogOptions};
use tideway_core::config::TimestampMode;
use tideway_lake::Lake;

use crate::support::dead_letters;

/// A destination that can be switched off, refuses events marked `"refuse": true`, can be
/// slowed down, and records (userId, seq) of what it accepted.
#[derive(Debug, Default)]
struct Switch {
    down: AtomicBool,
    slow: AtomicBool,
    calls: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
}

#[async_trait]
impl Destination for Switch {
    fn name(&self) -> &str {
        "hook"
    }
    fn kind(&self) -> &'static str {
        "webhook"
    }
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Outcome::Retry {
                after: None,
                error: DeliveryError::external(Some(503), "down for the test"),
            }
            .all(batch.len());
        }
        let mut accepted = self.accepted.lock().unwrap();
        batch
            .iter()
            .map(|e| {
                if e.event["properties"]["refuse"] == json!(true) {
                    Outcome::Rejected(DeliveryError::refused(Some(400), "refuse: true is refused"))
                } else {
                    accepted.push(e.event.clone());
                    Outcome::Delivered
                }
            })
            .collect()
    }
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: 7,
            max_bytes: 1 << 20,
            requests_per_second: None,
            rate_window: None,
            concurrency: 3,
        }
    }
}

impl Switch {
    /// seq of each accepted event, per user, in arrival order.
    fn per_user(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in self.accepted.lock().unwrap().iter() {
            out.entry(e["userId"].as_str().unwrap().to_string())
                .or_default()
                .push(e["properties"]["seq"].as_u64().unwrap());
        }
        out
    }
}

fn config(start: Start) -> ConnectionConfig {
    ConnectionConfig {
        name: "web_to_hook".into(),
        source: "web".into(),
        destination: "hook".into(),
        types: Vec::new(),
        events: Vec::new(),
        transformations: Vec::new(),
        start,
        batch_size: 50,
    }
}

fn fast() -> ForwardOptions {
    ForwardOptions {
        wait: Duration::from_millis(20),
        retry: RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        pause: Duration::from_millis(5),
        max_pause: Duration::from_millis(40),
    }
}

/// Appends events as the collector would log them for `source`.
async fn append(log: &FileLog, source: &str, events: &[Value]) {
    let mut records = Vec::new();
    for e in events {
        let text = e.to_string();
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&text).unwrap();
        let env = Envelope {
            source,
            path_type: None,
            received_at: chrono::Utc::now(),
            batch_sent_at: None,
            batch_context: None,
            timestamps: TimestampMode::Segment,
            max_event_bytes: 32 * 1024,
        };
        let meta = check(&raw, &env).unwrap();
        records.push(meta.record(text.as_bytes()));
    }
    log.append(records).await.unwrap();
}

fn track(user: &str, seq: u64) -> Value {
    json!({"type": "track", "userId": user, "event": "Viewed", "properties": {"seq": seq}})
}

struct Setup {
    _dir: tempfile::TempDir,
    log: FileLog,
    lake: Lake,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path().join("log"), FileLogOptions::default()).unwrap();
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .await
    .unwrap();
    Setup {
        _dir: dir,
        log,
        lake,
    }
}

async fn open(
    s: &Setup,
    config: ConnectionConfig,
    dest: Arc<Switch>,
    scripts: &[Source],
) -> Connection {
    Connection::open(
        config,
        dest,
        scripts,
        Arc::new(s.log.clone()),
        s.lake.clone(),
        fast(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_connection_forwards_its_sources_events_through_filters_and_transformations() {
    let s = setup().await;
    // Before the connection exists: not sent (it starts at the log's end).
    append(&s.log, "web", &[track("early", 0)]).await;
    let script = Source {
        name: "tag".into(),
        file: "transformations/tag.js".into(),
        text: "export function transformEvent(e, m) {\n  if (e.properties && e.properties.drop) return null;\n  if (e.properties && e.properties.boom) throw new Error('boom');\n  e.context = e.context || {};\n  e.context.forwardedBy = m(e).destinationName;\n  return e;\n}\n".into(),
    };
    let mut cfg = config(Start::Latest);
    cfg.types = vec!["track".into(), "identify".into()];
    cfg.events = vec!["Viewed".into()];
    cfg.transformations = vec!["tag".into()];
    let dest = Arc::new(Switch::default());
    let conn = open(&s, cfg, dest.clone(), &[script]).await;
    let start = conn.position();
    append(
        &s.log,
        "web",
        &[
            track("u1", 1),
            json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "properties": {"seq": 2}}),
            json!({"type": "page", "userId": "u1", "name": "Home"}),
            json!({"type": "track", "userId": "u1", "event": "Clicked", "properties": {"seq": 3}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 4}, "integrations": {"All": false}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 5}, "integrations": {"All": false, "Webhooks": true}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 6}, "integrations": {"hook": false}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 7, "drop": true}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 8, "boom": true}}),
            json!({"type": "track", "userId": "u1", "event": "Viewed", "properties": {"seq": 9, "refuse": true}}),
            track("u1", 10),
        ],
    )
    .await;
    append(&s.log, "app", &[track("u1", 11)]).await;
    let report = conn.step().await.unwrap();
    assert_eq!(report.records, 12);
    assert_eq!(
        (report.delivered, report.dead, report.filtered),
        (4, 2, 6),
        "{report:?}"
    );
    assert_eq!(conn.position(), s.log.stats().end);
    assert!(conn.position() > start);
    let per_user = dest.per_user();
    assert_eq!(
        per_user.get("u1"),
        Some(&vec![1, 2, 5, 10]),
        "type, name and integrations filters; a transformation's drop; refused and failed ones out"
    );
    assert!(
        !per_user.contains_key("early"),
        "a new connection starts at the log's end"
    );
    let accepted = dest.accepted.lock().unwrap().clone();
    for e in &accepted {
        assert_eq!(
            e["context"]["forwardedBy"], "hook",
            "the transformation ran: {e}"
        );
        assert!(
            e["messageId"]
                .as_str()
                .is_some_and(|m| m.starts_with("tw-"))
        );
        assert!(e["receivedAt"].is_string() && e["timestamp"].is_string());
    }
    let dead = dead_letters(&s.lake).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .all(|(source, _)| source == "forward:web_to_hook")
    );
    assert!(
        dead[0]
            .1
            .contains("refused by destination `hook`: refuse: true is refused"),
        "{dead:?}"
    );
    assert!(
        dead[1].1.contains("transformation `tag`") && dead[1].1.contains("boom"),
        "{dead:?}"
    );
}

#[tokio::test]
async fn an_outage_pauses_the_connection_and_it_catches_up_in_order_per_user() {
    let s = setup().await;
    let dest = Arc::new(Switch::default());
    let conn = Arc::new(open(&s, config(Start::Earliest), dest.clone(), &[]).await);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.run(async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let users = ["ana", "bo", "cy", "di", "ed"];
    let mut seq = 0u64;
    for round in 0..6 {
        if round == 2 {
            dest.down.store(true, Ordering::SeqCst);
        }
        let events: Vec<Value> = (0..40)
            .map(|i| {
                seq += 1;
                track(users[(i * 7 + round) % users.len()], seq)
            })
            .collect();
        append(&s.log, "web", &events).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Down: the connection holds its place in the log.
    let held = conn.position();
    assert!(
        held < s.log.stats().end,
        "nothing past the outage is committed"
    );
    let before = dest.accepted.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dest.accepted.lock().unwrap().len(), before);
    dest.down.store(false, Ordering::SeqCst);
    let end = s.log.stats().end;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while conn.position() < end {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).unwrap();
    runner.await.unwrap();
    let per_user = dest.per_user();
    let mut all = BTreeSet::new();
    for (user, seqs) in &per_user {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{user}'s events arrive in order, once each: {seqs:?}"
        );
        all.extend(seqs.iter().copied());
    }
    assert_eq!(all.len() as u64, seq, "every event is delivered");
    assert_eq!(
        dest.accepted.lock().unwrap().len() as u64,
        seq,
        "none twice: an outage refuses whole calls"
    );
}

#[tokio::test]
async fn a_crash_mid_delivery_then_a_restart_loses_nothing() {
    let s = setup().await;
    let dest = Arc::new(Switch::default());
    dest.slow.store(true, Ordering::SeqCst);
    let events: Vec<Value> = (1..=120)
        .map(|i| track(["x", "y", "z"][i as usize % 3], i))
        .collect();
    {
        let conn = open(&s, config(Start::Earliest), dest.clone(), &[]).await;
        append(&s.log, "web", &events).await;
        // Dropped after a few calls, like a process killed while delivering.
        let step = conn.step();
        tokio::pin!(step);
        let crashed = tokio::select! {
            _ = &mut step => false,
            () = async {
                while dest.calls.load(Ordering::SeqCst) < 3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => true,
        };
        assert!(crashed, "the step was cut short");
        assert_eq!(conn.position(), 0, "nothing committed by the crashed step");
    }
    let delivered_before = dest.accepted.lock().unwrap().len();
    assert!(delivered_before > 0 && delivered_before < 120);
    dest.slow.store(false, Ordering::SeqCst);
    // The restart: a new connection on the same log resumes at the committed offset.
    let conn = open(&s, config(Start::Latest), dest.clone(), &[]).await;
    while conn.position() < s.log.stats().end {
        conn.step().await.unwrap();
    }
    let per_user = dest.per_user();
    let got: BTreeSet<u64> = per_user.values().flatten().copied().collect();
    assert_eq!(got, (1..=120).collect::<BTreeSet<u64>>(), "nothing lost");
    // At least once: what the crashed step delivered is sent again, in order after it.
    assert_eq!(dest.accepted.lock().unwrap().len(), 120 + delivered_before);
}

#[test]
fn connections_are_checked_with_every_problem_at_its_line() {
    let text = r#"[collect.sources.web]
write_key = "k"

[connections.a]
source = "wbe"
destination = "hook"
types = ["track", "clicks"]
start = "now"

[connections.b]
source = "web"
destination = "nowhere"
transformations = ["missing"]

[connections.c]
source = "web"
destination = "hook"
colour = "red"
"#;
    let err = connections(
        text,
        "tideway.toml",
        &["web".into()],
        &["hook".into()],
        &["tag".into()],
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "tideway.toml:5:10: [connections.a]: unknown source `wbe`; did you mean `web`? known: web",
        "tideway.toml:7:19: [connections.a]: `clicks` is not an event type; valid types: track, identify, page, screen, group, alias",
        "tideway.toml:8:9: [connections.a]: `start = \"now\"` is not valid",
        "tideway.toml:12:15: [connections.b]: unknown destination `nowhere`; known: hook",
        "[connections.b]: unknown transformation `missing`; known: tag",
        "tideway.toml:18:1: unknown field `colour`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let ok = connections(
        "[connections.a]\nsource = \"web\"\ndestination = \"hook\"\n",
        "tideway.toml",
        &["web".into()],
        &["hook".into()],
        &[],
    )
    .unwrap();
    assert_eq!(ok[0].start, Start::Latest);
    assert_eq!(ok[0].batch_size, 1000);
}

#[test]
fn the_integrations_object_decides_as_segment_does() {
    let names = vec![
        "hook".to_string(),
        "webhook".to_string(),
        "webhooks".to_string(),
    ];
    let allow = |v: Value| integrations_allow(v.as_object().unwrap(), &names);
    assert!(allow(json!({})));
    assert!(allow(json!({"integrations": {}})));
    assert!(!allow(json!({"integrations": {"All": false}})));
    assert!(allow(
        json!({"integrations": {"All": false, "Webhooks": true}})
    ));
    assert!(allow(
        json!({"integrations": {"All": false, "Webhooks": {"x": 1}}})
    ));
    assert!(!allow(json!({"integrations": {"Webhooks": false}})));
    assert!(!allow(
        json!({"integrations": {"hook": false, "All": true}})
    ));
    assert!(allow(json!({"integrations": {"Salesforce": false}})));
}
