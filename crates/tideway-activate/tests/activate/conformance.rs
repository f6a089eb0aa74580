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
    /// A valid event for this destination, the `i`-th.
    event: fn(usize) -> OutboundEvent,
    /// How many of the conformance events the service holds.
    stored: Box<dyn Fn() -> usize>,
    /// Make the service refuse calls for a while as it does when a limit is reached (429, or
    /// the vendor's own code), or lift that (`false`).
    throttle: Box<dyn Fn(bool)>,
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
    let mut events: Vec<OutboundEvent> = (0..25).map(s.event).collect();
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

    // Rate limits: refusals for a limit are retried after their wait and nothing is lost.
    (s.throttle)(true);
    let more: Vec<OutboundEvent> = (100..112).map(s.event).collect();
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
    (s.throttle)(false);

    // An unreachable service is an outage: retried, never refused.
    let out = s.unreachable.deliver(&[(s.event)(1)]).await;
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
        event: identify,
        throttle: Box::new(move |on| throttled.set_requests_per_second(on.then_some(5.0))),
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
        event: identify,
        stored: Box::new(move || counted.people().len()),
        throttle: Box::new(move |on| {
            throttled.set_requests_per_second(if on { 5.0 } else { 10_000.0 })
        }),
    })
    .await;
}

/// A contact with HubSpot's default properties (an unknown property fails the whole batch).
fn hubspot_contact(i: usize) -> OutboundEvent {
    let mut e = identify(i);
    e.event["traits"] =
        json!({"email": format!("u{i}@example.com"), "firstname": format!("Ann {i}")});
    e
}

#[tokio::test]
async fn hubspot_conforms() {
    use tideway_activate::destination::hubspot::{self, HubSpotConfig};
    use tideway_activate::fake::hubspot::{FakeOptions, start};
    let fake = Arc::new(start(FakeOptions::default()).await.unwrap());
    let token = fake.access_token().to_string();
    let config = |url: &str, token: &str| {
        let mut c = HubSpotConfig::new(Secret::new(token));
        c.base_url = Some(url.to_string());
        c
    };
    // HubSpot refuses a contact whose email is not an email (a per-input error).
    let mut invalid = hubspot_contact(999);
    invalid.event["traits"]["email"] = json!("not-an-email");
    let (counted, throttled) = (fake.clone(), fake.clone());
    conformance(Subject {
        destination: Arc::new(hubspot::build("hs", config(fake.base_url(), &token))),
        wrong_key: Arc::new(hubspot::build(
            "hs",
            config(fake.base_url(), "pat-na1-wrong-0000"),
        )),
        unreachable: Arc::new(hubspot::build("hs", config("http://127.0.0.1:9", &token))),
        secret: token.clone(),
        invalid,
        event: hubspot_contact,
        stored: Box::new(move || counted.contacts().len()),
        // HubSpot limits a rolling 10 s window: 8 calls in 10 s.
        throttle: Box::new(move |on| {
            throttled.set_requests_per_second(if on { 0.8 } else { 1000.0 })
        }),
    })
    .await;
}

/// A Contact as the Salesforce fake's schema takes it (LastName is required there).
fn contact(i: usize) -> OutboundEvent {
    OutboundEvent {
        origin: format!("c{i}"),
        op: Op::Upsert,
        event: json!({
            "type": "identify",
            "userId": format!("c{i}"),
            "messageId": format!("m-{i}"),
            "traits": {"LastName": format!("Doe {i}"), "Email": format!("c{i}@example.com"), "Lead_Score__c": i},
        }),
    }
}

#[tokio::test]
async fn salesforce_conforms() {
    use tideway_activate::destination::salesforce::{self, Auth, SalesforceConfig};
    use tideway_activate::fake::salesforce::{FakeOptions, start};
    let fake = Arc::new(start(FakeOptions::default()).await.unwrap());
    let secret = fake.client_secret().to_string();
    let client_id = fake.client_id().to_string();
    let config = |url: &str, secret: &str| {
        let mut c = SalesforceConfig::new(
            url,
            Auth::ClientCredentials {
                client_id: client_id.clone(),
                client_secret: Secret::new(secret),
                login_url: None,
            },
        );
        c.external_id_field = "External_Id__c".into();
        c
    };
    // Salesforce refuses a field the object does not have (INVALID_FIELD for that record).
    let mut invalid = contact(999);
    invalid.event["traits"]["Favourite_Colour__c"] = json!("teal");
    let (counted, throttled) = (fake.clone(), fake.clone());
    conformance(Subject {
        destination: Arc::new(salesforce::build("sf", config(fake.base_url(), &secret))),
        wrong_key: Arc::new(salesforce::build(
            "sf",
            config(fake.base_url(), "wrong-secret-0000"),
        )),
        unreachable: Arc::new(salesforce::build(
            "sf",
            config("http://127.0.0.1:9", &secret),
        )),
        secret: secret.clone(),
        invalid,
        event: contact,
        stored: Box::new(move || counted.records("Contact").len()),
        // Salesforce meters API calls per org: REQUEST_LIMIT_EXCEEDED for the next calls.
        throttle: Box::new(move |on| throttled.set_request_limit_exceeded(if on { 3 } else { 0 })),
    })
    .await;
}
