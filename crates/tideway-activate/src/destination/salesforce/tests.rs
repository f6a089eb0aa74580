//! Golden payloads (the exact bodies sent, checked against the examples of Salesforce's REST API
//! and Bulk API 2.0 developer guides) and delivery against the fake Salesforce.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tideway_core::Fault;
use tideway_core::config::Secret;

use super::*;
use crate::destination::http::Answer;
use crate::destination::{Destination, Op, OutboundEvent, Outcome};
use crate::fake::salesforce::{self as fake, FakeOptions, FakeSalesforce};

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

fn config() -> SalesforceConfig {
    SalesforceConfig::new(
        "https://acme.my.salesforce.com",
        Auth::AccessToken(Secret::new("token")),
    )
}

fn planned(config: &SalesforceConfig, events: &[OutboundEvent]) -> Vec<Write> {
    events.iter().map(|e| plan(config, e).unwrap()).collect()
}

fn refs(writes: &[Write]) -> Vec<&Write> {
    writes.iter().collect()
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

// ----- golden payloads -----

#[test]
fn collection_upsert_body_matches_the_docs_example() {
    // https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html
    // "Example Request Body" for PATCH .../composite/sobjects/Account/MyExtId__c.
    let expected = r#"{
        "allOrNone" : false,
        "records" : [{
            "attributes" : {"type" : "Account"},
            "Name" : "Company One",
            "MyExtId__c" : "AAA"
        }, {
            "attributes" : {"type" : "Account"},
            "Name" : "Company Two",
            "MyExtId__c" : "BBB"
        }]
    }"#;
    let mut config = config();
    config.group_external_id_field = "MyExtId__c".into();
    let events = [
        upsert(json!({ "type": "group", "groupId": "AAA", "traits": { "Name": "Company One" } })),
        upsert(json!({ "type": "group", "groupId": "BBB", "traits": { "Name": "Company Two" } })),
    ];
    let writes = planned(&config, &events);
    assert_eq!(
        collection_upsert_body(&refs(&writes)),
        serde_json::from_str::<Value>(expected).unwrap()
    );
}

#[test]
fn collection_update_body_matches_the_docs_example() {
    // https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
    // "Example Request Body" (its first record), PATCH .../composite/sobjects.
    let expected = r#"{
       "allOrNone" : false,
       "records" : [{
          "attributes" : {"type" : "Account"},
          "id" : "001xx000003DGb2AAG",
          "NumberOfEmployees" : 27000
       }]
    }"#;
    let e = upsert(json!({
        "type": "group",
        "groupId": "001xx000003DGb2AAG",
        "traits": { "NumberOfEmployees": 27000 }
    }));
    let writes = planned(&config(), &[e]);
    assert_eq!(
        collection_update_body(&refs(&writes)),
        serde_json::from_str::<Value>(expected).unwrap()
    );
}

fn docs_accounts() -> Vec<OutboundEvent> {
    [
        ("123", "GenePoint", 800),
        ("234", "United Oil & Gas, UK", 1467),
        ("345", "United Oil & Gas, Singapore", 348),
    ]
    .into_iter()
    .map(|(id, name, employees)| {
        upsert(json!({
            "type": "group",
            "groupId": id,
            "traits": { "name": name, "NumberOfEmployees": employees }
        }))
    })
    .collect()
}

#[test]
fn bulk_job_body_and_csv_match_the_docs_walkthrough() {
    // https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/walkthrough_upsert.htm
    // ("Step 5: Bulk Upsert"): newupsertjob.json and the first rows of accountupsert.csv.
    let job = r#"{
    "object" : "Account",
    "externalIdFieldName" : "customExtIdField__c",
    "contentType" : "CSV",
    "operation" : "upsert",
    "lineEnding" : "LF"
}"#;
    let csv = "customExtIdField__c,name,NumberOfEmployees\n\
               123,GenePoint,800\n\
               234,\"United Oil & Gas, UK\",1467\n\
               345,\"United Oil & Gas, Singapore\",348\n";
    let mut config = config();
    config.group_external_id_field = "customExtIdField__c".into();
    let writes = planned(&config, &docs_accounts());
    assert_eq!(
        bulk_job_body(&writes[0]),
        serde_json::from_str::<Value>(job).unwrap()
    );
    assert_eq!(bulk_csv(&refs(&writes)), csv);
}

#[test]
fn bulk_update_by_id_and_nulls() {
    // Bulk API 2.0 "update" needs an Id column; `#N/A` sets a field to null, an empty cell
    // leaves it alone (Bulk API 2.0 Developer Guide, "Prepare CSV Files").
    let events = [
        upsert(json!({ "type": "group", "groupId": "001xx000003DGb2AAG",
                       "traits": { "Website": null, "Industry": "Retail" } })),
        upsert(json!({ "type": "group", "groupId": "001xx000003DGb3AAG",
                       "traits": { "Industry": "" } })),
    ];
    let writes = planned(&config(), &events);
    assert_eq!(
        bulk_job_body(&writes[0]),
        json!({ "object": "Account", "contentType": "CSV", "operation": "update", "lineEnding": "LF" })
    );
    assert_eq!(
        bulk_csv(&refs(&writes)),
        "Id,Industry,Website\n001xx000003DGb2AAG,Retail,#N/A\n001xx000003DGb3AAG,#N/A,\n"
    );
}

// ----- mapping -----

#[test]
fn identify_and_group_keys() {
    let mut config = config();
    config.external_id_field = "External_Id__c".into();
    let identify = upsert(json!({
        "type": "identify", "userId": 42,
        "traits": { "Email": "jane@example.com", "LastName": "Doe", "External_Id__c": "other", "id": 1 }
    }));
    assert_eq!(
        plan(&config, &identify),
        Ok(Write::Upsert {
            key: Key {
                object: "Contact".into(),
                field: "External_Id__c".into(),
                value: "42".into()
            },
            fields: json!({ "Email": "jane@example.com", "LastName": "Doe" })
                .as_object()
                .unwrap()
                .clone(),
        })
    );
    // context.externalId names the object and the key field.
    let lead = upsert(json!({
        "type": "identify", "userId": "u-1",
        "context": { "externalId": [
            { "type": "hubspot", "id": "9" },
            { "type": "Salesforce-Lead", "id": "L-7", "identifierType": "External_Id__c" }
        ] }
    }));
    assert_eq!(
        plan(&config, &lead).unwrap().key(),
        &Key {
            object: "Lead".into(),
            field: "External_Id__c".into(),
            value: "L-7".into()
        }
    );
}

#[test]
fn events_that_cannot_be_mapped_say_why() {
    let cases = [
        (
            json!({ "type": "track", "userId": "1", "event": "x" }),
            "takes identify",
        ),
        (
            json!({ "type": "identify", "anonymousId": "a" }),
            "needs a `userId`",
        ),
        (
            json!({ "type": "identify", "userId": "42" }),
            "not a Salesforce Contact Id",
        ),
        (
            json!({ "type": "group", "groupId": "001xx000003DGb2AAG", "traits": { "Tags": ["a"] } }),
            "trait `Tags` is an array",
        ),
        (
            json!({ "type": "group", "groupId": "001xx000003DGb2AAG", "traits": { "Bad Name": 1 } }),
            "not a Salesforce field name",
        ),
        (
            json!({ "type": "group", "groupId": "g",
                    "context": { "externalId": [{ "type": "Salesforce-Account" }] } }),
            "has no `id`",
        ),
    ];
    for (value, expected) in cases {
        let err = plan(&config(), &upsert(value.clone())).unwrap_err();
        assert!(err.contains(expected), "{value}: {err}");
    }
}

#[test]
fn duplicate_records_go_in_separate_waves() {
    let mut config = config();
    config.external_id_field = "External_Id__c".into();
    let events = [
        upsert(json!({ "type": "identify", "userId": "a" })),
        upsert(json!({ "type": "identify", "userId": "b" })),
        upsert(json!({ "type": "identify", "userId": "a" })),
        upsert(json!({ "type": "group", "groupId": "001xx000003DGb2AAG" })),
        event(Op::Delete, json!({ "type": "identify", "userId": "c" })),
    ];
    let writes: Vec<(usize, Write)> = planned(&config, &events).into_iter().enumerate().collect();
    assert_eq!(lanes(&writes), vec![vec![0, 1], vec![2], vec![3], vec![4]]);
}

#[test]
fn bulk_errors_and_results_are_read() {
    // failedResults: "sf__Id","sf__Error", then the uploaded columns.
    let text = "\"sf__Id\",\"sf__Error\",\"External_Id__c\",\"LastName\"\n\
                \"\",\"REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --\",\"u-1\",\"\"\n";
    let rows = parse_results(text).unwrap();
    assert_eq!(rows[0].key, "u-1");
    assert_eq!(
        split_bulk_error(&rows[0].error),
        (
            "REQUIRED_FIELD_MISSING".to_string(),
            "Required fields are missing: [LastName]:LastName --".to_string()
        )
    );
    assert_eq!(split_bulk_error("boom").0, "BULK_ERROR");
}

#[test]
fn per_record_errors_are_classified() {
    let writes = planned(
        &config(),
        &[
            upsert(json!({ "type": "group", "groupId": "001xx000003DGb2AAG" })),
            upsert(json!({ "type": "group", "groupId": "001xx000003DGb3AAG" })),
            upsert(json!({ "type": "group", "groupId": "001xx000003DGb4AAG" })),
        ],
    );
    // The documented partial-failure answer shape (see the upsert page), plus a lock error.
    let body = r#"[
       { "id" : "001xx000003DGb2AAG", "success" : true, "errors" : [ ] },
       { "success" : false, "errors" : [ { "statusCode" : "MALFORMED_ID",
            "message" : "Account ID: id value of incorrect type: 001xx000003DGb3AAG", "fields" : [ "Id" ] } ] },
       { "success" : false, "errors" : [ { "statusCode" : "UNABLE_TO_LOCK_ROW",
            "message" : "unable to obtain exclusive access to this record", "fields" : [ ] } ] }
    ]"#;
    let answer = Answer {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: body.to_string(),
    };
    let outcomes = record_outcomes(&answer, &refs(&writes), false);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(
        rejected(&outcomes[1]).message,
        "Salesforce refused the Account with Id `001xx000003DGb3AAG`: MALFORMED_ID: Account ID: \
         id value of incorrect type: 001xx000003DGb3AAG (fields: Id)"
    );
    assert!(
        retried(&outcomes[2])
            .1
            .message
            .contains("UNABLE_TO_LOCK_ROW")
    );
}

// ----- delivery against the fake -----

async fn fake_with(options: FakeOptions) -> FakeSalesforce {
    fake::start(options).await.expect("the fake starts")
}

fn destination(fake: &FakeSalesforce) -> Salesforce {
    build("crm", fake_config(fake, fake.client_secret()))
}

fn fake_config(fake: &FakeSalesforce, secret: &str) -> SalesforceConfig {
    let mut config = SalesforceConfig::new(
        fake.base_url(),
        Auth::ClientCredentials {
            client_id: fake.client_id().to_string(),
            client_secret: Secret::new(secret),
            login_url: None,
        },
    );
    config.external_id_field = "External_Id__c".into();
    config.bulk_poll = Duration::from_millis(5);
    config
}

fn contact(id: &str, traits: Value) -> OutboundEvent {
    upsert(json!({ "type": "identify", "userId": id, "traits": traits }))
}

fn paths(fake: &FakeSalesforce) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn an_unknown_field_rejects_that_record_only() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    let batch = [
        contact(
            "u-1",
            json!({ "LastName": "Doe", "Email": "jane@example.com" }),
        ),
        contact(
            "u-2",
            json!({ "LastName": "Roe", "Favorite_Color__c": "blue" }),
        ),
        contact("u-3", json!({ "LastName": "Poe" })),
    ];
    let outcomes = sf.deliver(&batch).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(outcomes[2], Outcome::Delivered);
    let error = rejected(&outcomes[1]);
    assert_eq!(error.fault, Fault::User);
    assert_eq!(
        error.message,
        "Salesforce refused the Contact with External_Id__c `u-2`: INVALID_FIELD: No such column \
         'Favorite_Color__c' on sobject of type Contact"
    );
    assert_eq!(
        paths(&fake),
        [
            "POST /services/oauth2/token",
            "PATCH /services/data/v62.0/composite/sobjects/Contact/External_Id__c"
        ]
    );
    // The token request is the client credentials flow's form.
    let token = &fake.requests()[0];
    assert_eq!(
        token.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        token.body,
        "grant_type=client_credentials&client_id=3MVG9fake-consumer-key&client_secret=fake-consumer-secret"
    );
    let stored = fake.records("Contact");
    assert_eq!(stored.len(), 2);
    let jane = fake.find("Contact", "External_Id__c", "u-1").unwrap();
    assert_eq!(jane["Email"], "jane@example.com");
    fake.stop().await;
}

#[tokio::test]
async fn a_bulk_job_rejects_exactly_its_failed_rows() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    let bad = [17, 250, 499];
    let batch: Vec<OutboundEvent> = (0..500)
        .map(|i| {
            let traits = match i {
                17 | 250 => json!({ "FirstName": format!("F{i}") }), // no LastName: required
                499 => json!({ "LastName": "Bad", "Email": "not-an-email" }),
                _ => json!({ "LastName": format!("L{i}"), "Email": format!("p{i}@example.com") }),
            };
            contact(&format!("u-{i}"), traits)
        })
        .collect();
    let outcomes = sf.deliver(&batch).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        if bad.contains(&i) {
            let error = rejected(outcome);
            assert!(
                error.message.contains(&format!("`u-{i}`")),
                "{}",
                error.message
            );
        } else {
            assert_eq!(*outcome, Outcome::Delivered, "row {i}");
        }
    }
    assert!(
        rejected(&outcomes[17])
            .message
            .contains("REQUIRED_FIELD_MISSING")
    );
    assert!(
        rejected(&outcomes[499])
            .message
            .contains("INVALID_EMAIL_ADDRESS")
    );
    assert_eq!(fake.records("Contact").len(), 497);
    let jobs = fake.jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.state, "JobComplete");
    assert_eq!(
        job.create_body,
        json!({ "object": "Contact", "externalIdFieldName": "External_Id__c",
                "contentType": "CSV", "operation": "upsert", "lineEnding": "LF" })
    );
    let mut lines = job.csv.lines();
    assert_eq!(
        lines.next(),
        Some("External_Id__c,Email,FirstName,LastName")
    );
    assert_eq!(lines.next(), Some("u-0,p0@example.com,,L0"));
    assert_eq!(job.csv.lines().count(), 501);
    let calls = paths(&fake);
    let id = &job.id;
    let v = "/services/data/v62.0/jobs/ingest";
    assert_eq!(calls[1], format!("POST {v}"));
    assert_eq!(calls[2], format!("PUT {v}/{id}/batches"));
    assert_eq!(calls[3], format!("PATCH {v}/{id}"));
    assert_eq!(
        calls.last().unwrap(),
        &format!("GET {v}/{id}/failedResults/")
    );
    assert_eq!(fake.requests()[2].content_type.as_deref(), Some("text/csv"));
    fake.stop().await;
}

#[tokio::test]
async fn a_bulk_job_with_an_unknown_column_fails_as_a_whole() {
    let fake = fake_with(FakeOptions::default()).await;
    let mut config = fake_config(&fake, fake.client_secret());
    config.bulk_threshold = 1;
    let sf = build("crm", config);
    let batch = [
        contact("u-1", json!({ "LastName": "A" })),
        contact("u-2", json!({ "LastName": "B", "Shoe_Size__c": 44 })),
    ];
    for outcome in sf.deliver(&batch).await {
        let error = rejected(&outcome);
        assert!(
            error
                .message
                .contains("InvalidBatch : Field name not found : Shoe_Size__c"),
            "{}",
            error.message
        );
    }
    assert!(fake.records("Contact").is_empty());
    fake.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_once() {
    let fake = fake_with(FakeOptions {
        token_uses: Some(2),
        ..FakeOptions::default()
    })
    .await;
    let sf = destination(&fake);
    for i in 0..3 {
        let outcomes = sf
            .deliver(&[contact(&format!("u-{i}"), json!({ "LastName": "X" }))])
            .await;
        assert_eq!(outcomes, [Outcome::Delivered], "call {i}");
    }
    assert_eq!(fake.tokens_issued(), 2);
    let calls = paths(&fake);
    let token = "POST /services/oauth2/token";
    assert_eq!(calls.iter().filter(|c| *c == token).count(), 2);
    // The third call was refused once (401 INVALID_SESSION_ID), then sent again.
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert_eq!(calls[4], token);
    assert_eq!(fake.records("Contact").len(), 3);
    fake.stop().await;
}

#[tokio::test]
async fn the_old_new_truth_output_updates_an_account_by_id() {
    let fake = fake_with(FakeOptions::default()).await;
    let id = fake.insert(
        "Account",
        json!({ "Name": "Acme", "Industry": "Retail", "Website": "https://acme.example" })
            .as_object()
            .unwrap()
            .clone(),
    );
    // What tests/fixtures/transformations/old_new_truth.js returns for a changed row: a group
    // call with the changed traits only, `null` for a trait gone from the new truth.
    let group = upsert(json!({
        "type": "group",
        "messageId": "m-1",
        "groupId": id,
        "userId": "sync",
        "traits": { "Industry": "Technology", "NumberOfEmployees": 120, "Website": null },
        "context": {
            "library": { "name": "tideway" },
            "externalId": [{ "type": "Salesforce-Account", "id": id, "identifierType": "Id" }]
        },
        "integrations": { "All": false, "Salesforce": true }
    }));
    // The default configuration: group_object Account, matched on Id.
    let mut config = fake_config(&fake, fake.client_secret());
    config.group_external_id_field = "Id".into();
    let sf = build("crm", config);
    assert_eq!(sf.deliver(&[group]).await, [Outcome::Delivered]);
    let account = fake.find("Account", "Id", &id).unwrap();
    assert_eq!(
        Value::Object(account),
        json!({ "Id": id, "Name": "Acme", "Industry": "Technology", "NumberOfEmployees": 120 })
    );
    assert_eq!(
        paths(&fake)[1],
        "PATCH /services/data/v62.0/composite/sobjects"
    );
    assert_eq!(fake.records("Account").len(), 1, "updated, not created");
    fake.stop().await;
}

#[tokio::test]
async fn deletes_by_id_and_by_external_id() {
    let fake = fake_with(FakeOptions::default()).await;
    let fields = |v: Value| v.as_object().unwrap().clone();
    let account = fake.insert("Account", fields(json!({ "Name": "Gone" })));
    fake.insert(
        "Contact",
        fields(json!({ "LastName": "Gone", "External_Id__c": "u-9" })),
    );
    let sf = destination(&fake);
    let batch = [
        event(
            Op::Delete,
            json!({ "type": "group", "groupId": "x",
            "context": { "externalId": [{ "type": "Salesforce-Account", "id": account, "identifierType": "Id" }] } }),
        ),
        event(Op::Delete, json!({ "type": "identify", "userId": "u-9" })),
        event(
            Op::Delete,
            json!({ "type": "identify", "userId": "u-never" }),
        ),
    ];
    assert_eq!(sf.deliver(&batch).await, Outcome::Delivered.all(3));
    assert!(fake.records("Account").is_empty());
    assert!(fake.records("Contact").is_empty());
    let calls = paths(&fake);
    assert_eq!(
        calls[1],
        format!("DELETE /services/data/v62.0/composite/sobjects?ids={account}&allOrNone=false")
    );
    assert_eq!(
        calls[2],
        "DELETE /services/data/v62.0/sobjects/Contact/External_Id__c/u-9"
    );
    fake.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_names_what_to_check() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = build("crm", fake_config(&fake, "not-the-secret"));
    let outcomes = sf
        .deliver(&[contact("u-1", json!({ "LastName": "X" }))])
        .await;
    let error = rejected(&outcomes[0]);
    assert_eq!(error.status, Some(400));
    assert_eq!(error.fault, Fault::User);
    assert!(
        error
            .message
            .contains("invalid_client: invalid client credentials"),
        "{}",
        error.message
    );
    assert!(error.message.contains("`client_id`") && error.message.contains("`client_secret`"));
    let error = sf.healthcheck().await.unwrap_err();
    assert!(error.message.contains("`client_secret`"));
    assert!(fake.records("Contact").is_empty());
    assert!(!format!("{:?}", sf.inspect()).contains("not-the-secret"));
    fake.stop().await;
}

#[tokio::test]
async fn a_refused_access_token_names_it() {
    let fake = fake_with(FakeOptions {
        static_token: Some("00Dgiven!token".into()),
        ..FakeOptions::default()
    })
    .await;
    let mut config = fake_config(&fake, "");
    config.auth = Auth::AccessToken(Secret::new("00Dgiven!token"));
    let sf = build("crm", config.clone());
    assert_eq!(sf.healthcheck().await, Ok(()));
    config.auth = Auth::AccessToken(Secret::new("00Dstale!token"));
    let sf = build("crm", config);
    let outcomes = sf
        .deliver(&[contact("u-1", json!({ "LastName": "X" }))])
        .await;
    let error = rejected(&outcomes[0]);
    assert_eq!(error.status, Some(401));
    assert!(
        error
            .message
            .contains("refused `access_token` (INVALID_SESSION_ID: Session expired or invalid)"),
        "{}",
        error.message
    );
    assert_eq!(fake.tokens_issued(), 0);
    fake.stop().await;
}

#[tokio::test]
async fn limits_and_outages_are_retried() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    let one = [contact("u-1", json!({ "LastName": "X" }))];
    fake.set_request_limit_exceeded(1);
    let outcomes = sf.deliver(&one).await;
    let (after, error) = retried(&outcomes[0]);
    assert_eq!(after, Some(DAILY_LIMIT_WAIT));
    assert_eq!(error.status, Some(403));
    assert!(
        error
            .message
            .contains("daily Salesforce API allocation is used up"),
        "{}",
        error.message
    );

    fake.set_concurrent_limit_exceeded(1);
    let outcomes = sf.deliver(&one).await;
    let (after, error) = retried(&outcomes[0]);
    assert_eq!(after, None);
    assert!(error.message.contains("concurrent"), "{}", error.message);

    fake.set_unavailable(1);
    let outcomes = sf.deliver(&one).await;
    let (_, error) = retried(&outcomes[0]);
    assert_eq!(error.status, Some(503));
    assert_eq!(error.fault, Fault::External);

    assert_eq!(sf.deliver(&one).await, [Outcome::Delivered]);
    fake.stop().await;
}

#[tokio::test]
async fn healthcheck_reads_the_limits() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    assert_eq!(sf.healthcheck().await, Ok(()));
    assert_eq!(
        paths(&fake),
        [
            "POST /services/oauth2/token",
            "GET /services/data/v62.0/limits"
        ]
    );
    assert!(
        fake.records("Contact").is_empty(),
        "a healthcheck changes nothing"
    );
    fake.set_daily_api_requests(fake.api_requests_used() + 1);
    let error = sf.healthcheck().await.unwrap_err();
    assert!(error.message.contains("is used up"), "{}", error.message);
    fake.stop().await;
}

#[tokio::test]
async fn unreachable_is_retried() {
    // A port that was free a moment ago: connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    for auth in [
        Auth::AccessToken(Secret::new("token")),
        Auth::ClientCredentials {
            client_id: "id".into(),
            client_secret: Secret::new("secret"),
            login_url: None,
        },
    ] {
        let sf = build(
            "crm",
            SalesforceConfig::new(format!("http://{address}"), auth),
        );
        let e = upsert(json!({ "type": "group", "groupId": "001xx000003DGb2AAG" }));
        let outcomes = sf.deliver(&[e.clone(), e]).await;
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
        assert!(sf.healthcheck().await.is_err());
    }
}

#[test]
fn limits() {
    let limits = build("crm", config()).limits();
    assert_eq!(limits.max_events, 10_000);
    assert_eq!(limits.max_bytes, 10 * 1024 * 1024);
    assert_eq!(limits.requests_per_second, Some(10.0));
    assert_eq!(limits.concurrency, 2);
}

// sObject Collections create:
// https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
// (`POST /composite/sobjects`, `{"allOrNone", "records": [{"attributes": {"type"}, ...}]}`, one
// result per record, in order); Bulk API 2.0 `insert` jobs take no `externalIdFieldName`.
#[tokio::test]
async fn inserts_create_records_and_refuse_an_external_id_that_exists() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    let insert = |id: &str, last: &str| {
        let mut e = contact(id, json!({ "LastName": last }));
        e.op = Op::Insert;
        e
    };
    // u-1 exists (someone created it), u-2 is new.
    sf.deliver(&[contact("u-1", json!({ "LastName": "Theirs" }))])
        .await;
    let outcomes = sf
        .deliver(&[insert("u-1", "Mine"), insert("u-2", "New")])
        .await;
    assert_eq!(outcomes[1], Outcome::Delivered);
    let error = rejected(&outcomes[0]);
    assert!(
        error.message.starts_with(
            "Salesforce refused the Contact with External_Id__c `u-1`: DUPLICATE_VALUE: duplicate value found: External_Id__c"
        ),
        "{}",
        error.message
    );
    assert_eq!(
        fake.find("Contact", "External_Id__c", "u-1").unwrap()["LastName"],
        "Theirs",
        "an insert never overwrites"
    );
    assert_eq!(
        fake.find("Contact", "External_Id__c", "u-2").unwrap()["LastName"],
        "New"
    );
    assert_eq!(
        paths(&fake).last().unwrap(),
        "POST /services/data/v62.0/composite/sobjects"
    );
    let body: Value = serde_json::from_str(&fake.requests().last().unwrap().body).unwrap();
    assert_eq!(
        body,
        json!({ "allOrNone": false, "records": [
            { "attributes": { "type": "Contact" }, "External_Id__c": "u-1", "LastName": "Mine" },
            { "attributes": { "type": "Contact" }, "External_Id__c": "u-2", "LastName": "New" }
        ]})
    );

    // A large lane is one Bulk API 2.0 insert job; its failed rows are matched back by key.
    let batch: Vec<OutboundEvent> = (0..300)
        .map(|i| insert(&format!("b-{i}"), &format!("L{i}")))
        .chain([insert("u-2", "Again")])
        .collect();
    let outcomes = sf.deliver(&batch).await;
    assert!(outcomes[..300].iter().all(|o| *o == Outcome::Delivered));
    assert!(
        rejected(&outcomes[300])
            .message
            .contains("`u-2`: DUPLICATE_VALUE"),
        "{:?}",
        outcomes[300]
    );
    let job = fake.jobs().pop().unwrap();
    assert_eq!(
        job.create_body,
        json!({ "object": "Contact", "contentType": "CSV", "operation": "insert", "lineEnding": "LF" })
    );
    assert_eq!(job.csv.lines().next(), Some("External_Id__c,LastName"));
    assert_eq!(fake.records("Contact").len(), 302);

    // A record named by its Id exists already: an insert of it is refused before any call.
    let mut by_id = contact("003xx000004TmiQAAS", json!({}));
    by_id.event["context"] = json!({ "externalId": [{ "type": "Salesforce-Contact", "id": "003xx000004TmiQAAS", "identifierType": "Id" }] });
    by_id.op = Op::Insert;
    let error = plan(&fake_config(&fake, "x"), &by_id).unwrap_err();
    assert!(
        error.contains("names an existing Contact by its Id"),
        "{error}"
    );
    fake.stop().await;
}

// SOQL through REST: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
// (`GET /services/data/vXX.X/query?q=...`, `{"totalSize", "done", "records": [{"attributes",
// ...}], "nextRecordsUrl"?}`); then sObject Collections update by Id.
#[tokio::test]
async fn updates_by_external_id_look_up_the_ids_and_create_nothing() {
    let fake = fake_with(FakeOptions::default()).await;
    let sf = destination(&fake);
    let update = |id: &str, last: &str| {
        let mut e = contact(id, json!({ "LastName": last }));
        e.op = Op::Update;
        e
    };
    sf.deliver(&[
        contact("u-1", json!({ "LastName": "One" })),
        contact("o'brien", json!({ "LastName": "Two" })),
    ])
    .await;
    let before = fake.requests().len();
    let outcomes = sf
        .deliver(&[
            update("u-1", "Uno"),
            update("nobody", "X"),
            update("o'brien", "Dos"),
        ])
        .await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert_eq!(outcomes[2], Outcome::Delivered);
    assert_eq!(
        rejected(&outcomes[1]).message,
        "no Salesforce Contact has External_Id__c `nobody`; `mode = \"update\"` creates no record"
    );
    assert_eq!(
        fake.find("Contact", "External_Id__c", "u-1").unwrap()["LastName"],
        "Uno"
    );
    assert_eq!(
        fake.find("Contact", "External_Id__c", "o'brien").unwrap()["LastName"],
        "Dos"
    );
    assert!(fake.find("Contact", "External_Id__c", "nobody").is_none());
    assert_eq!(fake.records("Contact").len(), 2);
    let calls: Vec<String> = paths(&fake)[before..].to_vec();
    assert_eq!(
        calls,
        [
            "GET /services/data/v62.0/query?q=SELECT%20Id%2C%20External_Id__c%20FROM%20Contact%20WHERE%20External_Id__c%20IN%20%28%27u-1%27%2C%20%27nobody%27%2C%20%27o%5C%27brien%27%29",
            "PATCH /services/data/v62.0/composite/sobjects"
        ]
    );
    fake.stop().await;
}
