//! Golden payloads (the exact JSON sent, written from Customer.io's Track API reference) and
//! delivery against the fake Customer.io.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tideway_core::Fault;
use tideway_core::config::Secret;

use super::*;
use crate::destination::http::Answer;
use crate::destination::{Destination, Op, OutboundEvent, Outcome};
use crate::fake::customerio::{self as fake, FakeCustomerIo, FakeOptions};

fn event(op: Op, event: Value) -> OutboundEvent {
    OutboundEvent {
        origin: "test".to_string(),
        op,
        event,
    }
}

fn upsert(value: Value) -> OutboundEvent {
    event(Op::Upsert, value)
}

fn v2(e: &OutboundEvent) -> Result<Call, String> {
    plan(ApiVersion::V2, "1", e)
}

fn v1(e: &OutboundEvent) -> Result<Call, String> {
    plan(ApiVersion::V1, "1", e)
}

fn request(method: Method, path: &str, body: Option<Value>) -> Call {
    Call::Request {
        method,
        path: path.to_string(),
        body,
    }
}

fn identify_42() -> OutboundEvent {
    upsert(json!({
        "type": "identify",
        "userId": "42",
        "anonymousId": "anon-1",
        "messageId": "m-1",
        "timestamp": "2024-03-01T12:00:00Z",
        "traits": {
            "email": "jane@example.com",
            "first_name": "Jane",
            "plan": "premium",
            "createdAt": "2023-01-15T08:30:00Z"
        },
        "context": { "ip": "203.0.113.7" }
    }))
}

fn track_purchase() -> OutboundEvent {
    upsert(json!({
        "type": "track",
        "userId": "42",
        "event": "purchase",
        "messageId": "01HQZX3K4V5W6X7Y8Z9A0B1C2D",
        "timestamp": "2024-03-01T12:00:00Z",
        "properties": { "product": "socks", "price": 23.45 }
    }))
}

fn group_acme() -> OutboundEvent {
    upsert(json!({
        "type": "group",
        "userId": "42",
        "groupId": "acme",
        "traits": { "name": "Acme Corp", "plan": "enterprise", "seats": 50 }
    }))
}

// ----- golden payloads, v2 -----
// Shapes: https://docs.customer.io/integrations/api/track/tag/track_v2/ (`POST /api/v2/batch`,
// schemas identify_person, person_event, person_page, person_screen, person_delete,
// object_identify, object_delete in https://docs.customer.io/files/journeys-track.json).

#[test]
fn v2_identify() {
    // identify_person: {"type": "person", "identifiers": {"id"}, "action": "identify",
    // "attributes", "timestamp"}; `created_at` is a Unix timestamp.
    assert_eq!(
        v2(&identify_42()),
        Ok(Call::Item(json!({
            "type": "person",
            "identifiers": { "id": "42" },
            "action": "identify",
            "timestamp": 1709294400,
            "attributes": {
                "email": "jane@example.com",
                "first_name": "Jane",
                "plan": "premium",
                "created_at": 1673771400,
                "anonymous_id": "anon-1"
            }
        })))
    );
}

#[test]
fn v2_identify_by_email_when_there_is_no_user_id() {
    let e = upsert(
        json!({ "type": "identify", "traits": { "email": "bo@example.com", "plan": "free" } }),
    );
    assert_eq!(
        v2(&e),
        Ok(Call::Item(json!({
            "type": "person",
            "identifiers": { "email": "bo@example.com" },
            "action": "identify",
            "attributes": { "email": "bo@example.com", "plan": "free" }
        })))
    );
}

#[test]
fn v2_track() {
    // person_event: "name" required, "id" a ULID for dedupe, "timestamp" Unix seconds,
    // "attributes" the event data.
    assert_eq!(
        v2(&track_purchase()),
        Ok(Call::Item(json!({
            "type": "person",
            "identifiers": { "id": "42" },
            "action": "event",
            "name": "purchase",
            "id": "01HQZX3K4V5W6X7Y8Z9A0B1C2D",
            "timestamp": 1709294400,
            "attributes": { "product": "socks", "price": 23.45 }
        })))
    );
}

#[test]
fn v2_page_and_screen() {
    let page = upsert(json!({
        "type": "page",
        "userId": "42",
        "name": "Pricing",
        "timestamp": "2024-03-01T12:00:00Z",
        "properties": { "url": "https://example.com/pricing", "referrer": "https://example.com" }
    }));
    // person_page: "name" is "the name of the page or page path".
    assert_eq!(
        v2(&page),
        Ok(Call::Item(json!({
            "type": "person",
            "identifiers": { "id": "42" },
            "action": "page",
            "name": "https://example.com/pricing",
            "timestamp": 1709294400,
            "attributes": { "url": "https://example.com/pricing", "referrer": "https://example.com" }
        })))
    );
    let screen = upsert(json!({
        "type": "screen", "userId": "42", "name": "Dashboard",
        "properties": { "app_version": "2.1.0" }
    }));
    assert_eq!(
        v2(&screen),
        Ok(Call::Item(json!({
            "type": "person",
            "identifiers": { "id": "42" },
            "action": "screen",
            "name": "Dashboard",
            "attributes": { "app_version": "2.1.0" }
        })))
    );
}

#[test]
fn v2_group() {
    // object_identify with cio_relationships to the person.
    assert_eq!(
        v2(&group_acme()),
        Ok(Call::Item(json!({
            "type": "object",
            "identifiers": { "object_type_id": "1", "object_id": "acme" },
            "action": "identify",
            "attributes": { "name": "Acme Corp", "plan": "enterprise", "seats": 50 },
            "cio_relationships": [{ "identifiers": { "id": "42" } }]
        })))
    );
    // object_identify_anonymous for a group call of an anonymous visitor.
    let anonymous = upsert(json!({ "type": "group", "anonymousId": "anon-1", "groupId": 7 }));
    assert_eq!(
        plan(ApiVersion::V2, "2", &anonymous),
        Ok(Call::Item(json!({
            "type": "object",
            "identifiers": { "object_type_id": "2", "object_id": "7" },
            "action": "identify_anonymous",
            "attributes": {},
            "cio_relationships": [{ "identifiers": { "anonymous_id": "anon-1" } }]
        })))
    );
}

#[test]
fn v2_delete() {
    // person_delete and object_delete.
    let person = event(Op::Delete, json!({ "type": "identify", "userId": "42" }));
    assert_eq!(
        v2(&person),
        Ok(Call::Item(
            json!({ "type": "person", "identifiers": { "id": "42" }, "action": "delete" })
        ))
    );
    let object = event(
        Op::Delete,
        json!({ "type": "group", "userId": "42", "groupId": "acme" }),
    );
    assert_eq!(
        v2(&object),
        Ok(Call::Item(json!({
            "type": "object",
            "identifiers": { "object_type_id": "1", "object_id": "acme" },
            "action": "delete"
        })))
    );
}

// ----- golden payloads, v1 -----
// Shapes: https://docs.customer.io/integrations/api/track/tag/track-customers/ (operations
// `identify`: PUT /api/v1/customers/{identifier}, `delete`) and
// https://docs.customer.io/integrations/api/track/tag/track-events/ (`track`: POST
// /api/v1/customers/{identifier}/events, `trackAnonymous`: POST /api/v1/events).

#[test]
fn v1_identify() {
    // The body is the attributes; `created_at` and `_timestamp` are Unix timestamps.
    assert_eq!(
        v1(&identify_42()),
        Ok(request(
            Method::PUT,
            "/api/v1/customers/42",
            Some(json!({
                "email": "jane@example.com",
                "first_name": "Jane",
                "plan": "premium",
                "created_at": 1673771400,
                "anonymous_id": "anon-1",
                "_timestamp": 1709294400
            }))
        ))
    );
}

#[test]
fn v1_track() {
    assert_eq!(
        v1(&track_purchase()),
        Ok(request(
            Method::POST,
            "/api/v1/customers/42/events",
            Some(json!({
                "name": "purchase",
                "id": "01HQZX3K4V5W6X7Y8Z9A0B1C2D",
                "timestamp": 1709294400,
                "data": { "product": "socks", "price": 23.45 }
            }))
        ))
    );
}

#[test]
fn v1_page_and_screen() {
    // "Page view": {"name", "type": "page", "data"}.
    let page = upsert(json!({
        "type": "page", "userId": "42",
        "context": { "page": { "url": "https://example.com/pricing" } }
    }));
    assert_eq!(
        v1(&page),
        Ok(request(
            Method::POST,
            "/api/v1/customers/42/events",
            Some(json!({ "name": "https://example.com/pricing", "type": "page" }))
        ))
    );
    let screen = upsert(json!({ "type": "screen", "userId": "42", "name": "Dashboard" }));
    assert_eq!(
        v1(&screen),
        Ok(request(
            Method::POST,
            "/api/v1/customers/42/events",
            Some(json!({ "name": "Dashboard", "type": "screen" }))
        ))
    );
}

#[test]
fn v1_delete() {
    let e = event(Op::Delete, json!({ "type": "identify", "userId": "42" }));
    assert_eq!(
        v1(&e),
        Ok(request(Method::DELETE, "/api/v1/customers/42", None))
    );
}

#[test]
fn v1_group_adds_the_relationship_only() {
    // The identify body's cio_relationships: {"action": "add_relationships", "relationships"}.
    let e = upsert(json!({ "type": "group", "userId": "42", "groupId": "acme" }));
    assert_eq!(
        v1(&e),
        Ok(request(
            Method::PUT,
            "/api/v1/customers/42",
            Some(json!({
                "cio_relationships": {
                    "action": "add_relationships",
                    "relationships": [{ "identifiers": { "object_type_id": "1", "object_id": "acme" } }]
                }
            }))
        ))
    );
    let err = v1(&group_acme()).unwrap_err();
    assert!(err.contains("api = \"v2\""), "{err}");
}

#[test]
fn anonymous_events_go_to_v1_events_in_both_modes() {
    // trackAnonymous: {"anonymous_id", "name", "data"}; "type" only for page and screen.
    let e = upsert(json!({
        "type": "track", "anonymousId": "anon-1", "event": "watched_video",
        "properties": { "video": "intro-to-platform" }
    }));
    let expected = request(
        Method::POST,
        "/api/v1/events",
        Some(json!({
            "anonymous_id": "anon-1",
            "name": "watched_video",
            "data": { "video": "intro-to-platform" }
        })),
    );
    assert_eq!(v1(&e), Ok(expected.clone()));
    assert_eq!(v2(&e), Ok(expected));
    let page = upsert(json!({ "type": "page", "anonymousId": "anon-1", "name": "Home" }));
    assert_eq!(
        v2(&page),
        Ok(request(
            Method::POST,
            "/api/v1/events",
            Some(json!({ "anonymous_id": "anon-1", "name": "Home", "type": "page" }))
        ))
    );
}

#[test]
fn ids_are_percent_encoded_in_paths() {
    let e = event(
        Op::Delete,
        json!({ "type": "identify", "userId": "a b/c?d" }),
    );
    assert_eq!(
        v1(&e),
        Ok(request(
            Method::DELETE,
            "/api/v1/customers/a%20b%2Fc%3Fd",
            None
        ))
    );
}

#[test]
fn events_that_cannot_be_mapped_say_why() {
    let cases = [
        (json!({ "type": "track", "userId": "42" }), "`event` name"),
        (
            json!({ "type": "track", "event": "x" }),
            "`userId` or an `anonymousId`",
        ),
        (
            json!({ "type": "identify", "anonymousId": "a" }),
            "needs a `userId`",
        ),
        (json!({ "type": "group", "userId": "42" }), "`groupId`"),
        (
            json!({ "type": "identify", "userId": "42", "traits": [1] }),
            "`traits` must be an object",
        ),
        (
            json!({ "type": "alias", "userId": "42", "previousId": "7" }),
            "merge",
        ),
        (
            json!({ "type": "idenitfy", "userId": "42" }),
            "unknown message type `idenitfy`; known types",
        ),
        (json!({ "userId": "42" }), "no `type`"),
    ];
    for (value, expected) in cases {
        let err = v2(&upsert(value.clone())).unwrap_err();
        assert!(err.contains(expected), "{value}: {err}");
    }
}

#[test]
fn message_ids_become_stable_ulids() {
    // A ULID messageId is kept; any other becomes a ULID of the event time and a hash of it.
    assert_eq!(
        dedupe_id("01hqzx3k4v5w6x7y8z9a0b1c2d", 0),
        "01HQZX3K4V5W6X7Y8Z9A0B1C2D"
    );
    let uuid = "7f3c1a2e-5b6d-4e8f-9a0b-1c2d3e4f5a6b";
    // Computed independently (FNV-1a 128 + Crockford base 32, in Python).
    assert_eq!(
        dedupe_id(uuid, 1_709_294_400_000),
        "01HQWY5CG0YYYP5ZETP2N9105H"
    );
    assert_eq!(dedupe_id("m-1", 0), "0000000000B0H86VDWF5GWCA7T");
    assert!(is_ulid(&dedupe_id(uuid, 1_709_294_400_000)));
    assert_ne!(dedupe_id("m-2", 0), dedupe_id("m-1", 0));
    assert!(!is_ulid(uuid));
    assert!(
        !is_ulid("81HQZX3K4V5W6X7Y8Z9A0B1C2D"),
        "above the largest ULID"
    );
    assert!(
        !is_ulid("01HQZX3K4V5W6X7Y8Z9A0B1C2U"),
        "U is not Crockford base 32"
    );
}

// ----- answers -----

fn answer(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Answer {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, HeaderValue::from_static(v));
    }
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        headers: map,
        body: body.to_string(),
    }
}

fn rejected(outcome: &Outcome) -> &DeliveryError {
    match outcome {
        Outcome::Rejected(e) => e,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn a_207_rejects_the_listed_items_only() {
    // The documented 207 body: {"errors": [{"batch_index", "reason", "field", "message"}]}.
    let body = r#"{"errors":[{"batch_index":1,"reason":"required","field":"name","message":"Name is required"},
                              {"batch_index":9,"reason":"invalid","message":"out of range"}]}"#;
    let outcomes = batch_outcomes(&answer(207, &[], body), 3, Region::Us);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(outcomes[2], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.status, Some(207));
    assert_eq!(error.fault, Fault::User);
    assert_eq!(
        error.message,
        "Customer.io refused the item (field `name`): required: Name is required"
    );
    // A 200 with no body delivers everything.
    assert_eq!(
        batch_outcomes(&answer(200, &[], "{}"), 2, Region::Us),
        Outcome::Delivered.all(2)
    );
}

#[test]
fn a_400_rejects_the_whole_batch() {
    let body = r#"{"errors":[{"reason":"invalid","field":"batch","message":"malformed"}]}"#;
    let outcomes = batch_outcomes(&answer(400, &[], body), 2, Region::Us);
    for outcome in &outcomes {
        let error = rejected(outcome);
        assert!(
            error
                .message
                .starts_with("Customer.io refused the whole batch (HTTP 400"),
            "{}",
            error.message
        );
    }
}

#[test]
fn a_429_is_retried_after_retry_after() {
    let outcomes = batch_outcomes(&answer(429, &[("retry-after", "7")], ""), 2, Region::Us);
    for outcome in outcomes {
        match outcome {
            Outcome::Retry { after, error } => {
                assert_eq!(after, Some(Duration::from_secs(7)));
                assert_eq!(error.status, Some(429));
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }
}

// ----- delivery against the fake -----

async fn fake_with(options: FakeOptions) -> FakeCustomerIo {
    fake::start(options).await.expect("the fake starts")
}

fn destination(fake: &FakeCustomerIo, api: ApiVersion) -> CustomerIo {
    let mut config = CustomerIoConfig::new(fake.site_id(), Secret::new(fake.api_key()));
    config.base_url = Some(fake.base_url().to_string());
    config.api = api;
    build("crm", config)
}

fn long_id() -> String {
    "x".repeat(200)
}

#[tokio::test]
async fn one_invalid_item_is_rejected_and_the_others_are_stored() {
    let fake = fake_with(FakeOptions::default()).await;
    let cio = destination(&fake, ApiVersion::V2);
    let batch = [
        identify_42(),
        upsert(json!({ "type": "identify", "userId": long_id(), "traits": { "plan": "free" } })),
        track_purchase(),
        group_acme(),
    ];
    let outcomes = cio.deliver(&batch).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.status, Some(207));
    assert!(
        error.message.contains("identifiers.id"),
        "{}",
        error.message
    );
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert_eq!(outcomes[3], Outcome::Delivered);
    assert_eq!(fake.requests(), 1, "one batch request");

    // Exactly the people and attributes that were synced.
    let people = fake.attributes();
    assert_eq!(people.len(), 1, "{people:#?}");
    assert_eq!(
        Value::Object(people["42"].clone()),
        json!({
            "email": "jane@example.com",
            "first_name": "Jane",
            "plan": "premium",
            "created_at": 1673771400,
            "anonymous_id": "anon-1"
        })
    );
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].person.as_deref(), Some("42"));
    assert_eq!(events[0].name, "purchase");
    assert_eq!(events[0].timestamp, Some(1709294400));
    let objects = fake.objects();
    let acme = &objects[&("1".to_string(), "acme".to_string())];
    assert_eq!(acme.attributes["seats"], 50);
    assert!(acme.people.contains("42"));
    fake.stop().await;
}

#[tokio::test]
async fn v1_and_v2_store_the_same_people() {
    let events = [
        identify_42(),
        upsert(
            json!({ "type": "identify", "userId": "43", "traits": { "email": "bo@example.com", "plan": "free" } }),
        ),
        upsert(json!({ "type": "identify", "userId": "44", "traits": { "plan": "gone" } })),
        track_purchase(),
        event(Op::Delete, json!({ "type": "identify", "userId": "44" })),
        // `null` removes an attribute.
        upsert(json!({ "type": "identify", "userId": "43", "traits": { "plan": null } })),
    ];
    let mut held = Vec::new();
    for api in [ApiVersion::V1, ApiVersion::V2] {
        let fake = fake_with(FakeOptions::default()).await;
        let cio = destination(&fake, api);
        for chunk in events.chunks(cio.limits().max_events) {
            let outcomes = cio.deliver(chunk).await;
            assert_eq!(outcomes, Outcome::Delivered.all(chunk.len()), "{api:?}");
        }
        assert_eq!(fake.deletes(), vec!["44".to_string()]);
        assert_eq!(fake.events().len(), 1);
        held.push(fake.attributes());
        fake.stop().await;
    }
    assert_eq!(held[0], held[1]);
    assert_eq!(
        Value::Object(held[0]["43"].clone()),
        json!({ "email": "bo@example.com" })
    );
    assert_eq!(held[0].keys().collect::<Vec<_>>(), ["42", "43"]);
}

#[tokio::test]
async fn retried_events_are_not_stored_twice() {
    let fake = fake_with(FakeOptions::default()).await;
    let cio = destination(&fake, ApiVersion::V2);
    let uuid = upsert(json!({
        "type": "track", "userId": "42", "event": "signup",
        "messageId": "7f3c1a2e-5b6d-4e8f-9a0b-1c2d3e4f5a6b", "timestamp": "2024-03-01T12:00:00Z"
    }));
    for _ in 0..2 {
        assert_eq!(
            cio.deliver(&[uuid.clone(), track_purchase()]).await,
            Outcome::Delivered.all(2)
        );
    }
    assert_eq!(fake.events().len(), 2);
    assert_eq!(fake.duplicates(), 2);
    assert_eq!(
        fake.events()[0].id.as_deref(),
        Some("01HQWY5CG0YYYP5ZETP2N9105H")
    );
    fake.stop().await;
}

#[tokio::test]
async fn anonymous_events_and_oversized_items_in_a_v2_batch() {
    let fake = fake_with(FakeOptions::default()).await;
    let cio = destination(&fake, ApiVersion::V2);
    let huge = upsert(json!({
        "type": "track", "userId": "42", "event": "big",
        "properties": { "blob": "y".repeat(40_000) }
    }));
    let anonymous = upsert(json!({ "type": "track", "anonymousId": "anon-9", "event": "visited" }));
    let outcomes = cio.deliver(&[huge, anonymous, track_purchase()]).await;
    let error = rejected(&outcomes[0]);
    assert!(error.message.contains("at most 32000"), "{}", error.message);
    assert_eq!(outcomes[1..], [Outcome::Delivered, Outcome::Delivered]);
    assert_eq!(fake.requests(), 2, "the batch and the anonymous event");
    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| e.anonymous_id.as_deref() == Some("anon-9") && e.person.is_none())
    );
    fake.stop().await;
}

#[tokio::test]
async fn wrong_credentials_name_what_to_check() {
    let fake = fake_with(FakeOptions::default()).await;
    let mut config = CustomerIoConfig::new(fake.site_id(), Secret::new("not-the-key"));
    config.base_url = Some(fake.base_url().to_string());
    let cio = build("crm", config);
    let outcomes = cio.deliver(&[identify_42(), track_purchase()]).await;
    for outcome in &outcomes {
        let error = rejected(outcome);
        assert_eq!(error.status, Some(401));
        assert_eq!(error.fault, Fault::User);
        assert!(
            error.message.contains("`site_id` and `api_key`"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("Unauthorized request"),
            "{}",
            error.message
        );
    }
    let error = cio.healthcheck().await.unwrap_err();
    assert_eq!(error.status, Some(401));
    assert!(error.message.contains("`site_id` and `api_key`"));
    // The key is never in what the inspector keeps.
    let exchanges = cio.inspect();
    assert_eq!(exchanges.len(), 2);
    assert!(!format!("{exchanges:?}").contains("not-the-key"));
    assert!(fake.people().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn healthcheck_checks_credentials_and_region() {
    let fake = fake_with(FakeOptions::default()).await;
    let cio = destination(&fake, ApiVersion::V2);
    assert_eq!(cio.healthcheck().await, Ok(()));
    assert_eq!(fake.requests(), 1);
    assert!(fake.people().is_empty(), "a healthcheck changes nothing");
    fake.stop().await;

    let fake = fake_with(FakeOptions {
        region: "eu".into(),
        ..FakeOptions::default()
    })
    .await;
    let error = destination(&fake, ApiVersion::V2)
        .healthcheck()
        .await
        .unwrap_err();
    assert!(
        error.message.contains("set `region = \"eu\"`"),
        "{}",
        error.message
    );
    fake.stop().await;
}

#[tokio::test]
async fn rate_limited_calls_are_retried_after_retry_after() {
    let fake = fake_with(FakeOptions {
        requests_per_second: 1.0,
        ..FakeOptions::default()
    })
    .await;
    let cio = destination(&fake, ApiVersion::V2);
    assert_eq!(
        cio.deliver(&[identify_42()]).await,
        vec![Outcome::Delivered]
    );
    let outcomes = cio.deliver(&[track_purchase(), group_acme()]).await;
    for outcome in outcomes {
        match outcome {
            Outcome::Retry { after, error } => {
                assert_eq!(after, Some(Duration::from_secs(1)));
                assert_eq!(error.status, Some(429));
                assert_eq!(error.fault, Fault::External);
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }
    assert_eq!(fake.throttled(), 1);
    assert!(fake.events().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    let fake = fake_with(FakeOptions {
        failure_rate: 1.0,
        ..FakeOptions::default()
    })
    .await;
    let cio = destination(&fake, ApiVersion::V1);
    match &cio.deliver(&[identify_42()]).await[0] {
        Outcome::Retry { after: None, error } => assert_eq!(error.status, Some(500)),
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_eq!(fake.failed(), 1);
    fake.stop().await;
}

#[tokio::test]
async fn unreachable_is_retried() {
    // A port that was free a moment ago: connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut config = CustomerIoConfig::new("site", Secret::new("key"));
    config.base_url = Some(format!("http://{address}"));
    let cio = build("crm", config);
    let outcomes = cio.deliver(&[identify_42(), track_purchase()]).await;
    for outcome in outcomes {
        match outcome {
            Outcome::Retry { after: None, error } => {
                assert_eq!(error.status, None);
                assert!(
                    error.message.contains("cannot connect"),
                    "{}",
                    error.message
                );
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }
    assert!(cio.healthcheck().await.is_err());
}

#[test]
fn limits() {
    let mut config = CustomerIoConfig::new("s", Secret::new("k"));
    let v2 = build("crm", config.clone()).limits();
    assert_eq!(v2.max_events, 100);
    assert_eq!(v2.max_bytes, 500_000);
    assert_eq!(v2.requests_per_second, Some(100.0));
    config.api = ApiVersion::V1;
    assert_eq!(build("crm", config).limits().max_events, 1);
}
