//! Golden payloads (the exact JSON sent, written from HubSpot's API reference) and delivery
//! against the fake HubSpot.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tideway_core::Fault;
use tideway_core::config::Secret;

use super::*;
use crate::destination::http::Answer;
use crate::destination::{Destination, Op, OutboundEvent, Outcome};
use crate::fake::hubspot::{self as fake, FakeHubSpot, FakeOptions};

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

fn defaults() -> HubSpotConfig {
    HubSpotConfig::new(Secret::new("pat-na1-token"))
}

fn identify_jane() -> OutboundEvent {
    upsert(json!({
        "type": "identify",
        "userId": "42",
        "messageId": "m-1",
        "timestamp": "2024-03-01T12:00:00Z",
        "traits": {
            "email": "jane@example.com",
            "firstName": "Jane",
            "lastName": "Doe",
            "Plan Tier": "premium",
            "seats": 5,
            "verified": true,
            "nickname": null,
            "tags": ["vip", "beta"],
            "address": { "street": "1 Main St", "city": "Boston", "postalCode": "02110" },
            "billing": { "cycle": "annual" }
        }
    }))
}

fn group_acme() -> OutboundEvent {
    upsert(json!({
        "type": "group",
        "userId": "42",
        "groupId": "acme-1",
        "traits": { "name": "Acme Corp", "domain": "acme.com", "numberOfEmployees": 50 }
    }))
}

fn track_signup() -> OutboundEvent {
    upsert(json!({
        "type": "track",
        "userId": "42",
        "event": "Signed Up",
        "messageId": "7F3C1A2E-5B6D-4E8F-9A0B-1C2D3E4F5A6B",
        "timestamp": "2024-03-01T12:00:00Z",
        "context": { "traits": { "email": "jane@example.com" } },
        "properties": { "plan": "premium", "trial": true }
    }))
}

fn input(call: Result<Call, String>) -> (Object, Value) {
    match call {
        Ok(Call::Batch {
            object,
            write: Write::Upsert,
            input,
        }) => (object, input),
        other => panic!("expected an upsert input, got {other:?}"),
    }
}

// ----- golden payloads -----
// Batch upsert: https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts
// (request body `{"inputs": [{"id", "properties", "idProperty", "objectWriteTraceId"}]}`;
// `objectWriteTraceId`: "set this field to a unique ID value to enable more granular debugging
// for error responses", see https://developers.hubspot.com/docs/api-reference/error-handling).

#[test]
fn identify_becomes_a_contact_upsert_by_email() {
    let (object, one) = input(plan(&defaults(), &identify_jane()));
    assert_eq!(object, Object::Contacts);
    assert_eq!(
        Write::Upsert.path(object),
        "/crm/v3/objects/contacts/batch/upsert"
    );
    assert_eq!(
        batch_body(Write::Upsert, vec![one]),
        json!({
            "inputs": [{
                "idProperty": "email",
                "id": "jane@example.com",
                "objectWriteTraceId": "0",
                "properties": {
                    "email": "jane@example.com",
                    "firstname": "Jane",
                    "lastname": "Doe",
                    "plan_tier": "premium",
                    "seats": 5,
                    "verified": true,
                    "nickname": "",
                    "tags": "vip;beta",
                    "address": "1 Main St",
                    "city": "Boston",
                    "zip": "02110",
                    "billing_cycle": "annual"
                }
            }]
        })
    );
}

#[test]
fn identify_by_a_custom_unique_property() {
    let mut config = defaults();
    config.contact_id_property = "external_id".into();
    let e = upsert(json!({ "type": "identify", "userId": 42, "traits": { "plan": "free" } }));
    let (_, one) = input(plan(&config, &e));
    assert_eq!(
        one,
        json!({
            "idProperty": "external_id",
            "id": "42",
            "properties": { "plan": "free", "external_id": "42" }
        })
    );
    // An email userId names the contact when upserting by email.
    let e = upsert(json!({ "type": "identify", "userId": "bo@example.com" }));
    let (_, one) = input(plan(&defaults(), &e));
    assert_eq!(one["id"], "bo@example.com");
}

#[test]
fn group_becomes_a_company_upsert() {
    // https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/upsert-companies
    let (object, one) = input(plan(&defaults(), &group_acme()));
    assert_eq!(object, Object::Companies);
    assert_eq!(
        Write::Upsert.path(object),
        "/crm/v3/objects/companies/batch/upsert"
    );
    assert_eq!(
        batch_body(Write::Upsert, vec![one]),
        json!({
            "inputs": [{
                "idProperty": "domain",
                "id": "acme.com",
                "objectWriteTraceId": "0",
                "properties": { "name": "Acme Corp", "domain": "acme.com", "numberofemployees": 50 }
            }]
        })
    );
    let mut config = defaults();
    config.company_id_property = "account_id".into();
    let (_, one) = input(plan(&config, &group_acme()));
    assert_eq!(one["idProperty"], "account_id");
    assert_eq!(one["id"], "acme-1", "the groupId when the trait is absent");
}

#[test]
fn track_becomes_a_custom_event_occurrence() {
    // https://developers.hubspot.com/docs/api-reference/legacy/events/send-event-data/guide:
    // POST /events/v3/send {"eventName": "pe{HubID}_{name}", "email", "occurredAt",
    // "properties", "uuid"}.
    let mut config = defaults();
    config.event_prefix = Some("pe1234567_".into());
    assert_eq!(
        plan(&config, &track_signup()),
        Ok(Call::Event(json!({
            "eventName": "pe1234567_signed_up",
            "email": "jane@example.com",
            "occurredAt": "2024-03-01T12:00:00.000Z",
            "properties": { "plan": "premium", "trial": true },
            "uuid": "7f3c1a2e-5b6d-4e8f-9a0b-1c2d3e4f5a6b"
        })))
    );
    // A fully qualified name needs no prefix.
    let e = upsert(json!({
        "type": "track", "userId": "jane@example.com", "event": "pe99_login", "messageId": "m-2"
    }));
    assert_eq!(
        plan(&defaults(), &e),
        Ok(Call::Event(
            json!({ "eventName": "pe99_login", "email": "jane@example.com" })
        ))
    );
}

#[test]
fn events_that_cannot_be_mapped_say_why() {
    let cases = [
        (
            upsert(json!({ "type": "identify", "userId": "42", "traits": { "plan": "x" } })),
            "needs `traits.email`",
        ),
        (
            upsert(json!({ "type": "group", "userId": "42" })),
            "`traits.domain` or a `groupId`",
        ),
        (
            upsert(json!({ "type": "track", "userId": "jane@example.com", "event": "Signed Up" })),
            "set `event_prefix",
        ),
        (
            upsert(json!({ "type": "track", "userId": "42", "event": "pe1_x" })),
            "the contact's email",
        ),
        (
            upsert(json!({ "type": "identify", "traits": [1] })),
            "`traits` must be an object",
        ),
        (
            upsert(json!({ "type": "page", "userId": "42" })),
            "`page` is not sent to HubSpot",
        ),
        (
            event(
                Op::Delete,
                json!({ "type": "identify", "traits": { "email": "a@b.co" } }),
            ),
            "`on_delete` to `ignore`, `clear_fields`",
        ),
    ];
    for (e, expected) in cases {
        let err = plan(&defaults(), &e).unwrap_err();
        assert!(err.contains(expected), "{}: {err}", e.event);
    }
}

#[test]
fn property_names() {
    assert_eq!(property_name("firstName"), "firstname");
    assert_eq!(property_name("Plan Tier"), "plan_tier");
    assert_eq!(property_name("2fa"), "p_2fa");
    assert_eq!(property_name("a.b-c"), "a_b_c");
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

fn retried(outcome: &Outcome) -> (Option<Duration>, &DeliveryError) {
    match outcome {
        Outcome::Retry { after, error } => (*after, error),
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_207_rejects_the_inputs_its_errors_name() {
    let body = r#"{"status":"COMPLETE","results":[{"id":"1","objectWriteTraceId":"0"}],"numErrors":2,
        "errors":[{"status":"error","category":"VALIDATION_ERROR",
                   "message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address b@x is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]",
                   "context":{"objectWriteTraceId":["1"]}},
                  {"status":"error","category":"VALIDATION_ERROR","message":"bad","context":{"ids":["C@EXAMPLE.COM"]}}]}"#;
    let outcomes = batch_outcomes(
        &answer(207, &[], body),
        Object::Contacts,
        &ids(&["a@example.com", "b@x", "c@example.com"]),
    );
    assert_eq!(outcomes[0], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.status, Some(207));
    assert_eq!(error.fault, Fault::User);
    assert_eq!(
        error.message,
        "HubSpot refused the contact: VALIDATION_ERROR: property values were not valid: \
         `email`: Email address b@x is invalid (INVALID_EMAIL) (context {\"objectWriteTraceId\":[\"1\"]})"
    );
    assert!(rejected(&outcomes[2]).message.contains("bad"), "by `ids`");
    // Errors that name no input refuse the batch, for the delivery loop to split.
    let body = r#"{"status":"COMPLETE","results":[],"errors":[{"status":"error","message":"?"}]}"#;
    let outcomes = batch_outcomes(&answer(207, &[], body), Object::Contacts, &ids(&["a", "b"]));
    assert!(
        rejected(&outcomes[0])
            .message
            .contains("without naming them")
    );
    // A 200 delivers everything.
    assert_eq!(
        batch_outcomes(
            &answer(200, &[], r#"{"status":"COMPLETE","results":[]}"#),
            Object::Companies,
            &ids(&["a", "b"])
        ),
        Outcome::Delivered.all(2)
    );
}

#[test]
fn a_400_rejects_the_whole_batch_and_names_a_missing_property() {
    let body = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"plan\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"plan\"}]","correlationId":"c","category":"VALIDATION_ERROR"}"#;
    let outcomes = batch_outcomes(&answer(400, &[], body), Object::Contacts, &ids(&["a", "b"]));
    for outcome in &outcomes {
        let error = rejected(outcome);
        assert!(
            error.message.starts_with(
                "HubSpot refused the whole batch of contacts: VALIDATION_ERROR: property values \
                 were not valid: `plan`: Property \"plan\" does not exist (PROPERTY_DOESNT_EXIST) \
                 — create the property"
            ),
            "{}",
            error.message
        );
    }
}

#[test]
fn a_429_waits_for_retry_after_the_window_or_the_day() {
    let ten_secondly = r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"TEN_SECONDLY_ROLLING","requestId":"r"}"#;
    let window = answer(
        429,
        &[
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
            ("x-hubspot-ratelimit-remaining", "0"),
        ],
        ten_secondly,
    );
    let outcomes = batch_outcomes(&window, Object::Contacts, &ids(&["a"]));
    let (after, error) = retried(&outcomes[0]);
    assert_eq!(after, Some(Duration::from_secs(10)));
    assert_eq!(error.status, Some(429));
    assert_eq!(error.fault, Fault::External);
    assert!(error.message.contains("TEN_SECONDLY_ROLLING"));
    let with_retry_after = answer(429, &[("retry-after", "3")], ten_secondly);
    assert_eq!(
        retried(&single_outcome(&with_retry_after)).0,
        Some(Duration::from_secs(3))
    );
    let daily = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"DAILY","requestId":"r"}"#;
    let outcome = single_outcome(&answer(429, &[], daily));
    let (after, error) = retried(&outcome);
    assert_eq!(after, Some(DAILY_LIMIT_WAIT));
    assert!(
        error.message.contains("daily API limit is used up"),
        "{}",
        error.message
    );
}

#[test]
fn server_errors_are_retried() {
    let outcome = single_outcome(&answer(502, &[], "bad gateway"));
    let (after, error) = retried(&outcome);
    assert_eq!(after, None);
    assert_eq!(error.status, Some(502));
}

// ----- delivery against the fake -----

async fn fake_with(options: FakeOptions) -> FakeHubSpot {
    fake::start(options).await.expect("the fake starts")
}

fn destination(fake: &FakeHubSpot, config: HubSpotConfig) -> HubSpot {
    let mut config = HubSpotConfig {
        access_token: Secret::new(fake.access_token()),
        ..config
    };
    config.base_url = Some(fake.base_url().to_string());
    build("crm", config)
}

fn custom_properties() -> FakeOptions {
    FakeOptions {
        contact_properties: [
            "plan_tier",
            "seats",
            "verified",
            "nickname",
            "tags",
            "billing_cycle",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..FakeOptions::default()
    }
}

#[tokio::test]
async fn one_invalid_input_is_rejected_and_the_others_are_stored() {
    let fake = fake_with(custom_properties()).await;
    let hubspot = destination(&fake, defaults());
    let batch = [
        identify_jane(),
        upsert(
            json!({ "type": "identify", "traits": { "email": "bo@example", "firstName": "Bo" } }),
        ),
        upsert(
            json!({ "type": "identify", "traits": { "email": "al@example.com", "firstName": "Al" } }),
        ),
        group_acme(),
    ];
    let outcomes = hubspot.deliver(&batch).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.status, Some(207));
    assert!(error.message.contains("INVALID_EMAIL"), "{}", error.message);
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert_eq!(outcomes[3], Outcome::Delivered);
    assert_eq!(fake.requests(), 2, "one batch per object type");

    // Exactly the contacts and properties that were synced.
    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 2, "{contacts:#?}");
    let jane = fake.contact("email", "jane@example.com").unwrap();
    assert_eq!(
        Value::Object(jane.properties),
        json!({
            "email": "jane@example.com",
            "firstname": "Jane",
            "lastname": "Doe",
            "plan_tier": "premium",
            "seats": 5,
            "verified": true,
            "tags": "vip;beta",
            "address": "1 Main St",
            "city": "Boston",
            "zip": "02110",
            "billing_cycle": "annual"
        })
    );
    let al = fake.contact("email", "AL@example.com").unwrap();
    assert_eq!(
        Value::Object(al.properties),
        json!({ "email": "al@example.com", "firstname": "Al" })
    );
    let acme = fake.company("domain", "acme.com").unwrap();
    assert_eq!(
        Value::Object(acme.properties),
        json!({ "name": "Acme Corp", "domain": "acme.com", "numberofemployees": 50 })
    );

    // Upserting again updates, and `null` clears.
    let again = upsert(json!({
        "type": "identify", "traits": { "email": "al@example.com", "firstName": null, "lastName": "Smith" }
    }));
    assert_eq!(hubspot.deliver(&[again]).await, vec![Outcome::Delivered]);
    assert_eq!(
        Value::Object(fake.contact("email", "al@example.com").unwrap().properties),
        json!({ "email": "al@example.com", "lastname": "Smith" })
    );
    assert_eq!(fake.contacts().len(), 2);
    fake.stop().await;
}

#[tokio::test]
async fn an_unknown_property_refuses_the_whole_batch() {
    let fake = fake_with(FakeOptions::default()).await;
    let hubspot = destination(&fake, defaults());
    let outcomes = hubspot.deliver(&[identify_jane(), group_acme()]).await;
    let error = rejected(&outcomes[0]);
    assert_eq!(error.status, Some(400));
    assert!(
        error.message.contains("`billing_cycle`")
            && error.message.contains("PROPERTY_DOESNT_EXIST"),
        "{}",
        error.message
    );
    assert_eq!(
        outcomes[1],
        Outcome::Delivered,
        "companies are another call"
    );
    assert!(fake.contacts().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn tracks_are_sent_one_per_request() {
    let fake = fake_with(FakeOptions::default()).await;
    let mut config = defaults();
    config.event_prefix = Some("pe1234567_".into());
    let hubspot = destination(&fake, config);
    let outcomes = hubspot.deliver(&[track_signup(), track_signup()]).await;
    assert_eq!(outcomes, Outcome::Delivered.all(2));
    assert_eq!(fake.requests(), 2);
    let events = fake.events();
    assert_eq!(events.len(), 1, "the same uuid is taken once");
    assert_eq!(fake.duplicates(), 1);
    assert_eq!(events[0].event_name, "pe1234567_signed_up");
    assert_eq!(events[0].email.as_deref(), Some("jane@example.com"));
    assert_eq!(
        events[0].occurred_at.as_deref(),
        Some("2024-03-01T12:00:00.000Z")
    );
    fake.stop().await;
}

#[tokio::test]
async fn a_wrong_token_names_the_token_and_the_scopes() {
    let fake = fake_with(FakeOptions::default()).await;
    let mut config = defaults();
    config.base_url = Some(fake.base_url().to_string());
    config.access_token = Secret::new("pat-na1-wrong");
    let hubspot = build("crm", config);
    let outcomes = hubspot.deliver(&[group_acme()]).await;
    let error = rejected(&outcomes[0]);
    assert_eq!(error.status, Some(401));
    assert_eq!(error.fault, Fault::User);
    assert!(
        error.message.contains("`access_token`"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("crm.objects.contacts.write, crm.objects.companies.write"),
        "{}",
        error.message
    );
    let error = hubspot.healthcheck().await.unwrap_err();
    assert_eq!(error.status, Some(401));
    // The token is never in what the inspector keeps.
    let exchanges = hubspot.inspect();
    assert_eq!(exchanges.len(), 2);
    assert!(!format!("{exchanges:?}").contains("pat-na1-wrong"));
    assert_eq!(fake.unauthorized(), 2);
    assert!(fake.companies().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn healthcheck_reads_and_changes_nothing() {
    let fake = fake_with(FakeOptions::default()).await;
    let hubspot = destination(&fake, defaults());
    assert_eq!(hubspot.healthcheck().await, Ok(()));
    assert_eq!(fake.requests(), 1);
    assert!(fake.contacts().is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn rate_limited_calls_are_retried_after_the_window() {
    let fake = fake_with(FakeOptions {
        requests_per_ten_seconds: 1,
        ..FakeOptions::default()
    })
    .await;
    let hubspot = destination(&fake, defaults());
    assert_eq!(
        hubspot.deliver(&[group_acme()]).await,
        vec![Outcome::Delivered]
    );
    let outcomes = hubspot.deliver(&[group_acme(), group_acme()]).await;
    for outcome in &outcomes {
        let (after, error) = retried(outcome);
        assert_eq!(after, Some(Duration::from_secs(10)));
        assert_eq!(error.status, Some(429));
        assert!(
            error.message.contains("TEN_SECONDLY_ROLLING"),
            "{}",
            error.message
        );
    }
    assert_eq!(fake.throttled(), 1);
    fake.set_requests_per_second(10.0);
    assert_eq!(
        hubspot.deliver(&[group_acme()]).await,
        vec![Outcome::Delivered]
    );
    fake.stop().await;
}

#[tokio::test]
async fn server_errors_from_the_fake_are_retried() {
    let fake = fake_with(FakeOptions {
        failure_rate: 1.0,
        ..FakeOptions::default()
    })
    .await;
    let hubspot = destination(&fake, defaults());
    let outcomes = hubspot.deliver(&[group_acme()]).await;
    let (after, error) = retried(&outcomes[0]);
    assert_eq!(after, None);
    assert_eq!(error.status, Some(500));
    assert_eq!(fake.failed(), 1);
    fake.stop().await;
}

#[tokio::test]
async fn unreachable_is_retried() {
    // A port that was free a moment ago: connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut config = defaults();
    config.base_url = Some(format!("http://{address}"));
    let hubspot = build("crm", config);
    let outcomes = hubspot.deliver(&[identify_jane(), group_acme()]).await;
    for outcome in &outcomes {
        let (after, error) = retried(outcome);
        assert_eq!(after, None);
        assert_eq!(error.status, None);
        assert!(
            error.message.contains("cannot connect"),
            "{}",
            error.message
        );
    }
    assert!(hubspot.healthcheck().await.is_err());
}

#[test]
fn limits() {
    let limits = build("crm", defaults()).limits();
    assert_eq!(limits.max_events, 100);
    assert_eq!(limits.requests_per_second, Some(10.0));
    assert_eq!(limits.concurrency, 4);
}

#[test]
fn the_limits_count_calls_over_hubspots_rolling_window() {
    let limits = build("crm", defaults()).limits();
    assert_eq!(limits.rate_window, Some(DEFAULT_INTERVAL));
}

/// Loads a project whose `tideway.toml` defines `hs` (HubSpot) and `cio` (Customer.io) and whose
/// one sync file is `syncs/leads.toml`: `marts.leads` by `email` as identify calls, then `rest`.
fn load_sync(rest: &str) -> Result<crate::Project, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tideway.toml"),
        "[destinations.hs]\ntype = \"hubspot\"\naccess_token = \"${HS_TOKEN}\"\n\n[destinations.cio]\ntype = \"customerio\"\nsite_id = \"s\"\napi_key = \"${CIO_KEY}\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    std::fs::write(
        dir.path().join("syncs/leads.toml"),
        format!("source = \"marts.leads\"\nkey = \"email\"\ntype = \"identify\"\n{rest}"),
    )
    .unwrap();
    let env = |v: &str| match v {
        "HS_TOKEN" => Some("pat-na1-x".to_string()),
        "CIO_KEY" => Some("k".to_string()),
        _ => None,
    };
    crate::Project::load(dir.path(), &env).map_err(|e| e.to_string())
}

#[test]
fn a_sync_that_deletes_in_hubspot_is_refused_at_its_on_delete_line() {
    let err = load_sync("destination = \"hs\"\non_delete = \"delete\"\n").unwrap_err();
    assert!(
        err.contains(
            "leads.toml:5:13: `on_delete = \"delete\"`, but the destination `hs` cannot delete: HubSpot deletes (batch archive) need HubSpot record ids"
        ),
        "{err}"
    );
    let project = load_sync("destination = \"hs\"\non_delete = \"clear_fields\"\n").unwrap();
    assert_eq!(
        project.syncs[0].on_delete,
        crate::config::OnDelete::ClearFields
    );
}

// Batch update: https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/update-contacts
// (`{"inputs": [{"id", "idProperty", "properties", "objectWriteTraceId"}]}`, `idProperty` a
// unique property); batch create: `.../batch/create-contacts` (`{"inputs": [{"properties",
// "objectWriteTraceId", "associations"}]}`, no id).
#[test]
fn update_and_insert_become_batch_update_and_batch_create() {
    let mut e = identify_jane();
    e.op = Op::Update;
    let Ok(Call::Batch {
        object,
        write,
        input,
    }) = plan(&defaults(), &e)
    else {
        panic!("an update is a batch input")
    };
    assert_eq!(write, Write::Update);
    assert_eq!(write.path(object), "/crm/v3/objects/contacts/batch/update");
    let body = batch_body(write, vec![input]);
    assert_eq!(body["inputs"][0]["idProperty"], "email");
    assert_eq!(body["inputs"][0]["id"], "jane@example.com");
    assert_eq!(body["inputs"][0]["properties"]["firstname"], "Jane");

    e.op = Op::Insert;
    let Ok(Call::Batch {
        object,
        write,
        input,
    }) = plan(&defaults(), &e)
    else {
        panic!("an insert is a batch input")
    };
    assert_eq!(write.path(object), "/crm/v3/objects/contacts/batch/create");
    let body = batch_body(write, vec![input]);
    let keys: Vec<&String> = body["inputs"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["objectWriteTraceId", "properties"]);
    assert_eq!(
        body["inputs"][0]["properties"]["email"], "jane@example.com",
        "the record's unique property is one of its properties"
    );
    // A group in update mode updates the company.
    let mut g = group_acme();
    g.op = Op::Update;
    let Ok(Call::Batch { object, write, .. }) = plan(&defaults(), &g) else {
        panic!("a group is a batch input")
    };
    assert_eq!(write.path(object), "/crm/v3/objects/companies/batch/update");
}

#[test]
fn modes_hubspot_cannot_write_are_refused_at_the_mode_line() {
    let sync = |destination: &str, mode: &str| {
        load_sync(&format!(
            "destination = \"{destination}\"\nmode = \"{mode}\"\n"
        ))
    };
    let err = sync("hs", "mirror").unwrap_err();
    assert!(
        err.contains("leads.toml:5:8: `mode = \"mirror\"`, but the destination `hs` (hubspot) writes records with mode `upsert`, `update`, `insert` (a mirror deletes: HubSpot deletes"),
        "{err}"
    );
    let err = sync("cio", "update").unwrap_err();
    assert!(
        err.contains("`mode = \"update\"`, but the destination `cio` (customerio) writes records with mode `upsert`, `mirror`"),
        "{err}"
    );
    let project = sync("hs", "insert").unwrap();
    assert_eq!(project.syncs[0].mode, crate::config::Mode::Insert);
}
