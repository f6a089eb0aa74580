//! The conformance suite every destination passes, against its fake: one outcome per event in
//! order; a refused event found and refused alone, the others delivered once; a rate limit
//! answered with a retry that waits; an unreachable service retried, never refused; a
//! healthcheck that tells good credentials from bad; no secret in what the inspector keeps.
//!
//! Adding a destination: add a `Subject` for it below and call [`conformance`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tideway_activate::delivery::{Delivery, RetryPolicy};
use tideway_activate::destination::customerio::{self, CustomerIoConfig};
use tideway_activate::destination::webhook::{Webhook, WebhookConfig};
use tideway_activate::destination::{Destination, Op, OutboundEvent, Outcome};
use tideway_activate::fake::customerio::{FakeOptions, start as start_customerio};
use tideway_activate::fake::webhook::{SinkOptions, WebhookSink};
use tideway_core::config::Secret;

struct Subject {
    destination: Arc<dyn Destination>,
    /// The same destination with a wrong credential.
    wrong_key: Arc<dyn Destination>,
    /// The same destination pointed at a closed port.
    unreachable: Arc<dyn Destination>,
    secret: String,
    /// An event this destination's API refuses.
    invalid: OutboundEvent,
    /// How many of the conformance events the service holds.
    stored: Box<dyn Fn() -> usize>,
    /// Limit the service to this many requests per second (its 429s).
    throttle: Box<dyn Fn(f64)>,
}

fn identify(i: usize) -> OutboundEvent {
    OutboundEvent {
        origin: format!("u{i}"),
        op: Op::Upsert,
        event: json!({
            "type": "identify",
            "userId": format!("u{i}"),
            "messageId": format!("m-{i}"),
            "timestamp": "2026-12-01T10:00:00.000Z",
            "traits": {"email": format!("u{i}@example.com"), "score": i},
        }),
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base: Duration::from_millis(5),
        max: Duration::from_secs(2),
    }
}

async fn conformance(s: Subject) {
    // Credentials.
    s.destination
        .healthcheck()
        .await
        .expect("good credentials pass the healthcheck");
    let err = s
        .wrong_key
        .healthcheck()
        .await
        .expect_err("a wrong key fails the healthcheck");
    assert!(!err.message.contains(&s.secret), "{err}");

    // One outcome per event, in order; the refused event alone is refused.
    let mut events: Vec<OutboundEvent> = (0..25).map(identify).collect();
    events.insert(7, s.invalid.clone());
    let out = s
        .destination
        .deliver(&events[..events.len().min(s.destination.limits().max_events)])
        .await;
    assert_eq!(
        out.len(),
        events.len().min(s.destination.limits().max_events)
    );
    let delivery = Delivery::new(s.destination.clone(), fast());
    let results = delivery.deliver(&events, &|_| {}).await;
    assert_eq!(results.len(), events.len());
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(r.outcome, Outcome::Rejected(_)),
                "the invalid event is refused: {r:?}"
            );
        } else {
            assert_eq!(r.outcome, Outcome::Delivered, "event {i}");
        }
    }
    assert_eq!((s.stored)(), 25, "each valid event stored once");

    // Rate limits: 429s are retried after their wait and nothing is lost.
    (s.throttle)(5.0);
    let more: Vec<OutboundEvent> = (100..112).map(identify).collect();
    let single = Arc::new(OneByOne(s.destination.clone()));
    let results = Delivery::new(single, fast()).deliver(&more, &|_| {}).await;
    assert!(
        results.iter().all(|r| r.outcome == Outcome::Delivered),
        "{results:?}"
    );
    assert!(
        results.iter().any(|r| r.attempts > 1),
        "some calls met the rate limit"
    );
    assert_eq!((s.stored)(), 37);
    (s.throttle)(10_000.0);

    // An unreachable service is an outage: retried, never refused.
    let out = s.unreachable.deliver(&[identify(1)]).await;
    assert!(matches!(&out[0], Outcome::Retry { .. }), "{out:?}");

    // The inspector keeps requests, never the secret.
    let exchanges = s.destination.inspect();
    assert!(!exchanges.is_empty());
    for e in exchanges {
        for text in [&e.url, &e.request, &e.response] {
            assert!(
                !text.contains(&s.secret),
                "the secret leaked into the inspector: {text}"
            );
        }
    }
}

/// A destination that sends one event per call, to reach a rate limit with few events.
#[derive(Debug)]
struct OneByOne(Arc<dyn Destination>);

#[async_trait::async_trait]
impl Destination for OneByOne {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    async fn healthcheck(&self) -> Result<(), tideway_activate::destination::DeliveryError> {
        self.0.healthcheck().await
    }
    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        self.0.deliver(batch).await
    }
    fn limits(&self) -> tideway_activate::destination::BatchLimits {
        let mut l = self.0.limits();
        l.max_events = 1;
        l.requests_per_second = None;
        l
    }
}

#[tokio::test]
async fn the_webhook_conforms() {
    let secret = "whsec-conformance-1234";
    let sink = WebhookSink::start(SinkOptions {
        secret: Some(secret.into()),
        refuse_bad: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let config = |url: &str, secret: &str| WebhookConfig {
        url: url.to_string(),
        method: reqwest::Method::POST,
        headers: Default::default(),
        secret: Some(Secret::new(secret)),
        batch_size: 10,
        requests_per_second: None,
        concurrency: 2,
    };
    let mut invalid = identify(999);
    invalid.event["traits"]["bad"] = json!(true);
    let counted = sink.clone();
    let throttled = sink.clone();
    conformance(Subject {
        destination: Arc::new(Webhook::new("hook", config(&sink.url, secret))),
        wrong_key: Arc::new(Webhook::new("hook", config(&sink.url, "wrong-secret"))),
        unreachable: Arc::new(Webhook::new(
            "hook",
            config("http://127.0.0.1:9/hook", secret),
        )),
        secret: secret.into(),
        invalid,
        stored: Box::new(move || {
            counted
                .events()
                .iter()
                .filter(|e| e["type"] == "identify")
                .count()
        }),
        throttle: Box::new(move |rps| throttled.set_requests_per_second(Some(rps))),
    })
    .await;
}

#[tokio::test]
async fn customerio_conforms() {
    let fake = Arc::new(start_customerio(FakeOptions::default()).await.unwrap());
    let site = fake.site_id().to_string();
    let config = |url: &str, key: &str| {
        let mut c = CustomerIoConfig::new(site.clone(), Secret::new(key));
        c.base_url = Some(url.to_string());
        c
    };
    let key = fake.api_key().to_string();
    // Customer.io refuses an attribute value over 1000 bytes.
    let mut invalid = identify(999);
    invalid.event["traits"]["bio"] = json!("x".repeat(2000));
    let (counted, throttled) = (fake.clone(), fake.clone());
    conformance(Subject {
        destination: Arc::new(customerio::build("cio", config(fake.base_url(), &key))),
        wrong_key: Arc::new(customerio::build(
            "cio",
            config(fake.base_url(), "wrong-key-0000"),
        )),
        unreachable: Arc::new(customerio::build("cio", config("http://127.0.0.1:9", &key))),
        secret: key.clone(),
        invalid,
        stored: Box::new(move || counted.people().len()),
        throttle: Box::new(move |rps| throttled.set_requests_per_second(rps)),
    })
    .await;
}
