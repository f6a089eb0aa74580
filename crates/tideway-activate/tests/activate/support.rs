//! A destination that records what it is sent and refuses or fails the keys a test names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deltalake::arrow::array::AsArray;
use serde_json::Value;
use tideway_activate::destination::{
    BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome,
};
use tideway_lake::{Lake, SqlOutput};

/// The first value of a query giving one integer (`SELECT count(*) ...`).
pub async fn count(lake: &Lake, sql: &str) -> i64 {
    lake.scalar_i64(sql)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("`{sql}` gives no integer"))
}

/// `(source, reason)` of every dead letter, by reason.
pub async fn dead_letters(lake: &Lake) -> Vec<(String, String)> {
    let sql = "SELECT source, reason FROM _tideway.dead_letters ORDER BY reason";
    let SqlOutput::Rows(rows) = lake.sql(sql).await.unwrap() else {
        panic!("rows")
    };
    let mut out = Vec::new();
    for b in &rows.batches {
        let text = |i: usize| {
            deltalake::arrow::compute::cast(
                b.column(i),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap()
        };
        let (a, r) = (text(0), text(1));
        let (a, r) = (a.as_string::<i32>(), r.as_string::<i32>());
        for i in 0..b.num_rows() {
            out.push((a.value(i).to_string(), r.value(i).to_string()));
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct Recorder {
    /// Keys refused (as a 400) and keys failed (as a 503), by event origin.
    pub refuse: Mutex<BTreeSet<String>>,
    pub fail: Mutex<BTreeSet<String>>,
    /// Every event accepted, in order.
    pub accepted: Mutex<Vec<OutboundEvent>>,
    /// What the destination holds per key: the last accepted event (removed on a delete).
    pub holds: Mutex<BTreeMap<String, Value>>,
    /// Events per call.
    pub max_events: usize,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            max_events: 3,
            ..Default::default()
        }
    }

    pub fn take(&self) -> Vec<OutboundEvent> {
        std::mem::take(&mut self.accepted.lock().unwrap())
    }
}

#[async_trait]
impl Destination for Recorder {
    fn name(&self) -> &str {
        "rec"
    }
    fn kind(&self) -> &'static str {
        "recorder"
    }
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let refuse = self.refuse.lock().unwrap().clone();
        let fail = self.fail.lock().unwrap().clone();
        batch
            .iter()
            .map(|e| {
                let held = self.holds.lock().unwrap().contains_key(&e.origin);
                if refuse.contains(&e.origin) {
                    Outcome::Rejected(DeliveryError::refused(
                        Some(400),
                        format!("key {} refused by the test", e.origin),
                    ))
                } else if e.op == Op::Insert && held {
                    Outcome::Rejected(DeliveryError::refused(
                        Some(409),
                        format!("key {} exists: an insert cannot create it", e.origin),
                    ))
                } else if e.op == Op::Update && !held {
                    Outcome::Rejected(DeliveryError::refused(
                        Some(404),
                        format!(
                            "key {} does not exist: an update cannot create it",
                            e.origin
                        ),
                    ))
                } else if fail.contains(&e.origin) {
                    Outcome::Retry {
                        after: Some(Duration::from_millis(1)),
                        error: DeliveryError::external(Some(503), "down for the test"),
                    }
                } else {
                    self.accepted.lock().unwrap().push(e.clone());
                    let mut holds = self.holds.lock().unwrap();
                    match e.op {
                        Op::Delete => {
                            holds.remove(&e.origin);
                        }
                        Op::Upsert | Op::Insert | Op::Update => {
                            holds.insert(e.origin.clone(), e.event.clone());
                        }
                    }
                    Outcome::Delivered
                }
            })
            .collect()
    }
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events.max(1),
            max_bytes: 1 << 20,
            requests_per_second: None,
            rate_window: None,
            concurrency: 2,
        }
    }
}

/// An event without what changes from run to run (times, the library version).
pub fn stable(event: &Value) -> Value {
    let mut e = event.clone();
    if let Some(map) = e.as_object_mut() {
        map.remove("timestamp");
        map.remove("originalTimestamp");
        map.remove("messageId");
        if let Some(ctx) = map.get_mut("context").and_then(Value::as_object_mut) {
            ctx.remove("library");
        }
    }
    e
}
