//! An in-process fake of HubSpot's CRM v3 and custom events APIs, for tests and benchmarks.
//!
//! It speaks the shapes of HubSpot's reference
//! (<https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts>,
//! `.../events/send-event-data/guide`, `.../error-handling`, "API usage guidelines and limits"):
//!
//! - `Authorization: Bearer <token>` on every call; a missing or wrong token gets 401
//!   `{"status": "error", "message", "correlationId", "category": "INVALID_AUTHENTICATION"}`.
//! - `GET /crm/v3/objects/contacts?limit=N`: `{"results": [{"id", "properties", "createdAt",
//!   "updatedAt", "archived"}]}`.
//! - `POST /crm/v3/objects/{contacts|companies}/batch/upsert` with `{"inputs": [{"idProperty",
//!   "id", "properties", "objectWriteTraceId"?}]}`: creates or updates each record found by its
//!   `idProperty` value (emails compared case-insensitively) and answers 200 `{"status":
//!   "COMPLETE", "results": [...], "startedAt", "completedAt"}`.
//!   - Refused for the whole batch with 400 `{"status": "error", "category": "VALIDATION_ERROR",
//!     "message", "correlationId"}`, nothing stored: a malformed body, more than 100 inputs, an
//!     `idProperty` that is not a unique-value property ("Unable to perform update/upsert by
//!     non-unique 0-1 property"), or a property that does not exist ("Property values were not
//!     valid: [{\"isValid\":false,\"message\":\"Property \\\"x\\\" does not exist\",\"error\":
//!     \"PROPERTY_DOESNT_EXIST\",\"name\":\"x\"}]").
//!   - A value HubSpot refuses in one input (an invalid email: `INVALID_EMAIL`; an empty `id`):
//!     when every input carries an `objectWriteTraceId` (HubSpot's opt-in to multi-status
//!     answers) the other inputs are stored and the answer is 207 with `"numErrors"` and
//!     `"errors": [{"status": "error", "category": "VALIDATION_ERROR", "message", "context":
//!     {"objectWriteTraceId": [trace], "ids": [id]}}]`; without it the whole batch is refused
//!     with 400, as HubSpot does.
//! - `POST /crm/v3/objects/{contacts|companies}/batch/create` with `{"inputs": [{"properties",
//!   "objectWriteTraceId"?}]}`: creates every record. An input whose unique property (`email`,
//!   or a unique custom property) names a record that exists, or another input of the batch,
//!   refuses the whole batch with 409 `{"status": "error", "category": "CONFLICT", "message":
//!   "Contact already exists. Existing ID: N", "correlationId"}`, nothing stored.
//! - `POST /crm/v3/objects/{contacts|companies}/batch/update` with `{"inputs": [{"id",
//!   "idProperty"?, "properties", "objectWriteTraceId"?}]}`: updates the record named by `id`
//!   (a record id, or the value of `idProperty`, which must be a unique property); creates
//!   nothing. An input naming no record is an `OBJECT_NOT_FOUND` error (207 with trace ids, as
//!   above, else 400); the other inputs are stored.
//! - `POST /events/v3/send` `{"eventName", "email" | "objectId" | "utk", "occurredAt",
//!   "properties", "uuid"}`: 204; 400 for a name that is not `pe{HubID}_{name}` or no contact.
//!   An occurrence whose `uuid` was seen before is dropped as a duplicate.
//! - Over the burst limit (a rolling 10-second window of `requests_per_ten_seconds`): 429
//!   `{"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
//!   "errorType": "RATE_LIMIT", "correlationId", "policyName": "TEN_SECONDLY_ROLLING",
//!   "requestId"}`; over `daily_limit`: the same with `"policyName": "DAILY"`. Every answer
//!   carries `X-HubSpot-RateLimit-Interval-Milliseconds`, `-Max` and `-Remaining` (and `-Daily`,
//!   `-Daily-Remaining` when a daily limit is set). No `Retry-After` is sent (HubSpot documents
//!   none).
//!
//! Records keep the property values as sent (HubSpot itself stores and returns strings); `""`
//! clears a property. The exact wording of messages other than the documented examples, and
//! the `context` keys of a 207 error, are the fake's own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Inputs per batch call.
pub const MAX_BATCH_INPUTS: usize = 100;
/// The burst window.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Contact properties every HubSpot account has (a subset of the defaults).
pub const CONTACT_PROPERTIES: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "company",
    "website",
    "jobtitle",
    "lifecyclestage",
    "address",
    "city",
    "state",
    "zip",
    "country",
];

/// Company properties every HubSpot account has (a subset of the defaults).
pub const COMPANY_PROPERTIES: &[&str] = &[
    "name",
    "domain",
    "website",
    "industry",
    "phone",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "numberofemployees",
    "annualrevenue",
    "description",
];

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The private app token it accepts.
    pub access_token: String,
    /// Custom contact properties, beyond [`CONTACT_PROPERTIES`].
    pub contact_properties: Vec<String>,
    /// Custom company properties, beyond [`COMPANY_PROPERTIES`].
    pub company_properties: Vec<String>,
    /// Contact properties with unique values, usable as `idProperty` (`email` always is).
    pub contact_unique_properties: Vec<String>,
    /// Company properties with unique values, usable as `idProperty`.
    pub company_unique_properties: Vec<String>,
    /// Requests per rolling 10 seconds before 429s (HubSpot: 100 for Free and Starter).
    pub requests_per_ten_seconds: u32,
    /// Requests before the `DAILY` 429s; `None` for no daily limit.
    pub daily_limit: Option<u64>,
    /// The share of authorized, unthrottled requests answered 500 (0.0 to 1.0), spread evenly.
    pub failure_rate: f64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            access_token: "pat-na1-fake-token".to_string(),
            contact_properties: Vec::new(),
            company_properties: Vec::new(),
            contact_unique_properties: Vec::new(),
            // Our destination's default `company_id_property`; see the report on whether real
            // HubSpot accepts `domain` as an `idProperty`.
            company_unique_properties: vec!["domain".to_string()],
            requests_per_ten_seconds: 100,
            daily_limit: None,
            failure_rate: 0.0,
        }
    }
}

/// A contact or company the fake holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// HubSpot's record id (`"1"`, `"2"`, ...).
    pub id: String,
    /// The properties, as sent.
    pub properties: Map<String, Value>,
}

/// A custom event occurrence the fake took.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    pub event_name: String,
    pub email: Option<String>,
    pub object_id: Option<String>,
    pub occurred_at: Option<String>,
    pub uuid: Option<String>,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Contacts,
    Companies,
}

impl Kind {
    fn singular(self) -> &'static str {
        match self {
            Kind::Contacts => "contact",
            Kind::Companies => "company",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Contacts => "Contact",
            Kind::Companies => "Company",
        }
    }

    fn type_id(self) -> &'static str {
        match self {
            Kind::Contacts => "0-1",
            Kind::Companies => "0-2",
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    records: BTreeMap<u64, Map<String, Value>>,
    /// (property, value as the index key) -> record id.
    index: HashMap<(String, String), u64>,
    created_at: BTreeMap<u64, String>,
}

impl Table {
    fn key(property: &str, value: &str) -> (String, String) {
        let value = if property == "email" {
            value.trim().to_ascii_lowercase()
        } else {
            value.trim().to_string()
        };
        (property.to_string(), value)
    }
}

#[derive(Debug)]
struct Store {
    contacts: Table,
    companies: Table,
    next_id: u64,
    events: Vec<ReceivedEvent>,
    uuids: HashSet<String>,
    duplicates: u64,
    window: VecDeque<Instant>,
    per_window: u32,
    daily_used: u64,
    requests: u64,
    throttled: u64,
    unauthorized: u64,
    failed: u64,
    failures: super::Failures,
    correlation: u64,
}

#[derive(Debug)]
struct Shared {
    options: FakeOptions,
    contact_properties: BTreeSet<String>,
    company_properties: BTreeSet<String>,
    contact_unique: BTreeSet<String>,
    company_unique: BTreeSet<String>,
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("fake HubSpot store lock poisoned")
    }

    fn known(&self, kind: Kind) -> &BTreeSet<String> {
        match kind {
            Kind::Contacts => &self.contact_properties,
            Kind::Companies => &self.company_properties,
        }
    }

    fn unique(&self, kind: Kind) -> &BTreeSet<String> {
        match kind {
            Kind::Contacts => &self.contact_unique,
            Kind::Companies => &self.company_unique,
        }
    }
}

/// A running fake. Stops when dropped, or with [`FakeHubSpot::stop`].
#[derive(Debug)]
pub struct FakeHubSpot {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a fake on `127.0.0.1` at a free port.
pub async fn start(options: FakeOptions) -> std::io::Result<FakeHubSpot> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = listener.local_addr()?;
    let set = |defaults: &[&str], extra: &[String]| -> BTreeSet<String> {
        defaults
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .collect()
    };
    let contact_unique = set(&["email"], &options.contact_unique_properties);
    let company_unique = set(&[], &options.company_unique_properties);
    let mut contact_properties = set(CONTACT_PROPERTIES, &options.contact_properties);
    contact_properties.extend(contact_unique.iter().cloned());
    let mut company_properties = set(COMPANY_PROPERTIES, &options.company_properties);
    company_properties.extend(company_unique.iter().cloned());
    let shared = Arc::new(Shared {
        contact_properties,
        company_properties,
        contact_unique,
        company_unique,
        store: Mutex::new(Store {
            contacts: Table::default(),
            companies: Table::default(),
            next_id: 1,
            events: Vec::new(),
            uuids: HashSet::new(),
            duplicates: 0,
            window: VecDeque::new(),
            per_window: options.requests_per_ten_seconds,
            daily_used: 0,
            requests: 0,
            throttled: 0,
            unauthorized: 0,
            failed: 0,
            failures: super::Failures::new(options.failure_rate),
            correlation: 0,
        }),
        options,
    });
    let app = Router::new()
        .route("/crm/v3/objects/contacts", get(list_contacts))
        .route("/crm/v3/objects/{object}/batch/{action}", post(batch))
        .route("/events/v3/send", post(send_event))
        .with_state(shared.clone());
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(FakeHubSpot {
        base_url: format!("http://{address}"),
        shared,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

impl FakeHubSpot {
    /// `http://127.0.0.1:PORT`, to put in `base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The private app token it accepts.
    pub fn access_token(&self) -> &str {
        &self.shared.options.access_token
    }

    /// Every contact, oldest first.
    pub fn contacts(&self) -> Vec<Record> {
        records(&self.shared.store().contacts)
    }

    /// Every company, oldest first.
    pub fn companies(&self) -> Vec<Record> {
        records(&self.shared.store().companies)
    }

    /// The contact whose `property` (a unique one, e.g. `email`) is `value`.
    pub fn contact(&self, property: &str, value: &str) -> Option<Record> {
        find(&self.shared.store().contacts, property, value)
    }

    /// The company whose `property` (a unique one, e.g. `domain`) is `value`.
    pub fn company(&self, property: &str, value: &str) -> Option<Record> {
        find(&self.shared.store().companies, property, value)
    }

    /// Custom event occurrences taken, oldest first (duplicates dropped).
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.shared.store().events.clone()
    }

    /// Occurrences dropped because their `uuid` was seen before.
    pub fn duplicates(&self) -> u64 {
        self.shared.store().duplicates
    }

    /// Requests received, whatever the answer.
    pub fn requests(&self) -> u64 {
        self.shared.store().requests
    }

    /// Requests answered 429.
    pub fn throttled(&self) -> u64 {
        self.shared.store().throttled
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> u64 {
        self.shared.store().unauthorized
    }

    /// Requests answered 500 by the injected failures.
    pub fn failed(&self) -> u64 {
        self.shared.store().failed
    }

    /// Changes the share of requests answered 500.
    pub fn set_failure_rate(&self, rate: f64) {
        let mut store = self.shared.store();
        store.failures = super::Failures::new(rate);
    }

    /// Changes the burst limit to `rate` × 10 requests per rolling 10 seconds (and empties the
    /// window).
    pub fn set_requests_per_second(&self, rate: f64) {
        let mut store = self.shared.store();
        store.per_window = (rate * 10.0).round().max(0.0) as u32;
        store.window.clear();
    }

    /// Stops the server and waits (at most a second) for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeHubSpot {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn records(table: &Table) -> Vec<Record> {
    table
        .records
        .iter()
        .map(|(id, properties)| Record {
            id: id.to_string(),
            properties: properties.clone(),
        })
        .collect()
}

fn find(table: &Table, property: &str, value: &str) -> Option<Record> {
    let id = table.index.get(&Table::key(property, value))?;
    Some(Record {
        id: id.to_string(),
        properties: table.records.get(id)?.clone(),
    })
}

// ----- the gate: auth, rate limits, injected failures -----

fn correlation_id(store: &mut Store) -> String {
    store.correlation += 1;
    format!("00000000-0000-4000-8000-{:012x}", store.correlation)
}

/// HubSpot's rate-limit headers, for an answer.
fn limit_headers(shared: &Shared, store: &Store, response: &mut Response) {
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("digits are a valid header value"),
        );
    };
    put(
        "x-hubspot-ratelimit-interval-milliseconds",
        INTERVAL.as_millis().to_string(),
    );
    put("x-hubspot-ratelimit-max", store.per_window.to_string());
    put(
        "x-hubspot-ratelimit-remaining",
        (store.per_window as usize)
            .saturating_sub(store.window.len())
            .to_string(),
    );
    if let Some(daily) = shared.options.daily_limit {
        put("x-hubspot-ratelimit-daily", daily.to_string());
        put(
            "x-hubspot-ratelimit-daily-remaining",
            daily.saturating_sub(store.daily_used).to_string(),
        );
    }
}

fn error_body(category: &str, message: impl Into<String>, correlation: String) -> Value {
    json!({
        "status": "error",
        "message": message.into(),
        "correlationId": correlation,
        "category": category,
    })
}

/// The answer refusing the request (401, 429 or an injected 500), or `None` to go on.
fn gate(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let mut store = shared.store();
    store.requests += 1;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let expected = format!("Bearer {}", shared.options.access_token);
    if given != Some(expected.as_str()) {
        store.unauthorized += 1;
        let correlation = correlation_id(&mut store);
        let message = if given.is_none() {
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at \
             https://developers.hubspot.com/docs/methods/auth/oauth-overview"
        } else {
            "Authentication credentials not found. The access token is invalid or was rotated."
        };
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(error_body("INVALID_AUTHENTICATION", message, correlation)),
            )
                .into_response(),
        );
    }
    let now = Instant::now();
    while store
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= INTERVAL)
    {
        store.window.pop_front();
    }
    let daily_over = shared
        .options
        .daily_limit
        .is_some_and(|limit| store.daily_used >= limit);
    let burst_over = store.window.len() >= store.per_window as usize;
    if daily_over || burst_over {
        store.throttled += 1;
        let (policy, message) = if daily_over {
            ("DAILY", "You have reached your daily limit.")
        } else {
            (
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            )
        };
        let correlation = correlation_id(&mut store);
        let request = correlation_id(&mut store);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation,
                "policyName": policy,
                "requestId": request,
            })),
        )
            .into_response();
        limit_headers(shared, &store, &mut response);
        return Some(response);
    }
    store.window.push_back(now);
    store.daily_used += 1;
    if store.failures.strike() {
        store.failed += 1;
        let correlation = correlation_id(&mut store);
        let mut response = (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(error_body("INTERNAL_ERROR", "internal error", correlation)),
        )
            .into_response();
        limit_headers(shared, &store, &mut response);
        return Some(response);
    }
    None
}

/// `response` with the rate-limit headers.
fn answer(shared: &Shared, status: StatusCode, body: Option<Value>) -> Response {
    let mut response = match body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    };
    limit_headers(shared, &shared.store(), &mut response);
    response
}

fn validation_error(shared: &Shared, message: impl Into<String>) -> Response {
    let correlation = correlation_id(&mut shared.store());
    answer(
        shared,
        StatusCode::BAD_REQUEST,
        Some(error_body("VALIDATION_ERROR", message, correlation)),
    )
}

/// "Property values were not valid: [...]" for `(name, message, error)` triples.
fn property_errors(items: &[(String, String, &str)]) -> String {
    let list: Vec<Value> = items
        .iter()
        .map(|(name, message, error)| {
            json!({
                "isValid": false,
                "message": message,
                "error": error,
                "name": name,
                "localizedErrorMessage": message,
            })
        })
        .collect();
    format!("Property values were not valid: {}", Value::Array(list))
}

// ----- routes -----

async fn list_contacts(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .min(100);
    let results: Vec<Value> = {
        let store = shared.store();
        store
            .contacts
            .records
            .iter()
            .take(limit)
            .map(|(id, properties)| {
                let created = store
                    .contacts
                    .created_at
                    .get(id)
                    .cloned()
                    .unwrap_or_default();
                json!({
                    "id": id.to_string(),
                    "properties": properties,
                    "createdAt": created,
                    "updatedAt": created,
                    "archived": false,
                })
            })
            .collect()
    };
    answer(&shared, StatusCode::OK, Some(json!({ "results": results })))
}

/// One input, checked.
struct Input {
    id: String,
    trace: Option<String>,
    properties: Map<String, Value>,
}

/// What a batch call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Upsert,
    Create,
    Update,
}

async fn batch(
    State(shared): State<Arc<Shared>>,
    Path((object, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let action = match action.as_str() {
        "upsert" => Action::Upsert,
        "create" => Action::Create,
        "update" => Action::Update,
        _ => return answer(&shared, StatusCode::NOT_FOUND, None),
    };
    let kind = match object.as_str() {
        "contacts" | "contact" | "0-1" => Kind::Contacts,
        "companies" | "company" | "0-2" => Kind::Companies,
        other => {
            let correlation = correlation_id(&mut shared.store());
            return answer(
                &shared,
                StatusCode::NOT_FOUND,
                Some(error_body(
                    "OBJECT_NOT_FOUND",
                    format!("Unable to infer object type from: {other}"),
                    correlation,
                )),
            );
        }
    };
    let inputs = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut body)) => match body.remove("inputs") {
            Some(Value::Array(inputs)) => inputs,
            _ => return validation_error(&shared, "Invalid input JSON: `inputs` must be an array"),
        },
        Ok(_) => return validation_error(&shared, "Invalid input JSON: expected an object"),
        Err(e) => return validation_error(&shared, format!("Invalid input JSON: {e}")),
    };
    if inputs.len() > MAX_BATCH_INPUTS {
        return validation_error(
            &shared,
            format!(
                "Batch input size {} exceeds the limit of {MAX_BATCH_INPUTS}",
                inputs.len()
            ),
        );
    }

    // Whole-batch checks: the shape, the idProperty, unknown properties.
    let known = shared.known(kind);
    let mut checked = Vec::with_capacity(inputs.len());
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    let mut id_property: Option<String> = None;
    for input in &inputs {
        let Some(fields) = input.as_object() else {
            return validation_error(&shared, "Invalid input JSON: each input must be an object");
        };
        let property = match (action, fields.get("idProperty").and_then(Value::as_str)) {
            (Action::Create, _) => "",
            (Action::Update, None) => RECORD_ID,
            (_, property) => property.unwrap_or(RECORD_ID),
        };
        let by_record_id = action == Action::Update && property == RECORD_ID;
        if action != Action::Create && !by_record_id && !shared.unique(kind).contains(property) {
            return validation_error(
                &shared,
                format!(
                    "Unable to perform update/upsert by non-unique {} property",
                    kind.type_id()
                ),
            );
        }
        if id_property.as_deref().is_some_and(|p| p != property) {
            return validation_error(&shared, "All inputs must use the same idProperty");
        }
        id_property = Some(property.to_string());
        let properties = match fields.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => {
                return validation_error(
                    &shared,
                    "Invalid input JSON: `properties` must be an object",
                );
            }
        };
        for name in properties.keys() {
            if !known.contains(name) {
                unknown.insert(name.clone());
            }
        }
        let id = match fields.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let trace = fields
            .get("objectWriteTraceId")
            .and_then(Value::as_str)
            .map(str::to_string);
        checked.push(Input {
            id,
            trace,
            properties,
        });
    }
    if !unknown.is_empty() {
        let items: Vec<(String, String, &str)> = unknown
            .into_iter()
            .map(|name| {
                let message = format!("Property \"{name}\" does not exist");
                (name, message, "PROPERTY_DOESNT_EXIST")
            })
            .collect();
        return validation_error(&shared, property_errors(&items));
    }
    let id_property = id_property.unwrap_or_else(|| "email".to_string());

    // Per-input checks.
    let mut problems: Vec<Option<String>> = checked
        .iter()
        .map(|input| input_problem(kind, action, &id_property, input))
        .collect();
    // Which record each input writes: for an update, the one it names (or a problem); for a
    // create, none, and a conflict refuses the batch.
    let mut targets: Vec<Option<u64>> = vec![None; checked.len()];
    let mut missing = vec![false; checked.len()];
    {
        let mut store = shared.store();
        match action {
            Action::Upsert => {}
            Action::Update => {
                for (k, input) in checked.iter().enumerate() {
                    if problems[k].is_some() {
                        continue;
                    }
                    targets[k] = lookup(table(&mut store, kind), &id_property, &input.id);
                    if targets[k].is_none() {
                        missing[k] = true;
                        problems[k] = Some(format!(
                            "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                            kind.singular().to_ascii_uppercase()
                        ));
                    }
                }
            }
            Action::Create => {
                let unique = shared.unique(kind);
                let mut claimed: HashMap<(String, String), u64> = HashMap::new();
                for input in &checked {
                    for (name, value) in &input.properties {
                        let Some(text) = scalar(value).filter(|t| !t.is_empty()) else {
                            continue;
                        };
                        if !unique.contains(name) {
                            continue;
                        }
                        let key = Table::key(name, &text);
                        let existing = table(&mut store, kind).index.get(&key).copied();
                        if let Some(id) = existing.or_else(|| claimed.get(&key).copied()) {
                            let correlation = correlation_id(&mut store);
                            drop(store);
                            let message =
                                format!("{} already exists. Existing ID: {id}", kind.title());
                            return answer(
                                &shared,
                                StatusCode::CONFLICT,
                                Some(error_body("CONFLICT", message, correlation)),
                            );
                        }
                        // A record created earlier in this batch: its id is not known yet,
                        // 0 stands for it.
                        claimed.insert(key, 0);
                    }
                }
            }
        }
    }
    let multi_status = !checked.is_empty() && checked.iter().all(|i| i.trace.is_some());
    if !multi_status && let Some(problem) = problems.iter().flatten().next() {
        return validation_error(&shared, problem.clone());
    }

    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    {
        let mut store = shared.store();
        for (k, (input, problem)) in checked.into_iter().zip(problems).enumerate() {
            if let Some(message) = problem {
                let category = if missing[k] {
                    "OBJECT_NOT_FOUND"
                } else {
                    "VALIDATION_ERROR"
                };
                errors.push(json!({
                    "status": "error",
                    "category": category,
                    "message": message,
                    "context": {
                        "objectWriteTraceId": [input.trace.clone().unwrap_or_default()],
                        "ids": [input.id.clone()],
                    },
                }));
                continue;
            }
            let (id, new, properties) = match action {
                Action::Upsert => upsert(&mut store, kind, &id_property, &input, &now),
                Action::Create => write(&mut store, kind, None, None, &input, &now),
                Action::Update => write(&mut store, kind, targets[k], None, &input, &now),
            };
            let mut result = json!({
                "id": id.to_string(),
                "properties": properties,
                "createdAt": now,
                "updatedAt": now,
                "archived": false,
                "new": new,
            });
            if let Some(trace) = &input.trace {
                result["objectWriteTraceId"] = trace.clone().into();
            }
            results.push(result);
        }
    }
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    });
    if errors.is_empty() {
        answer(&shared, StatusCode::OK, Some(body))
    } else {
        body["numErrors"] = errors.len().into();
        body["errors"] = Value::Array(errors);
        answer(&shared, StatusCode::MULTI_STATUS, Some(body))
    }
}

/// What HubSpot would refuse in one input, as its error message.
fn input_problem(kind: Kind, action: Action, id_property: &str, input: &Input) -> Option<String> {
    if action != Action::Create && input.id.trim().is_empty() {
        return Some(format!("Missing id for idProperty {id_property}"));
    }
    if action != Action::Create
        && id_property != RECORD_ID
        && let Some(Value::String(value)) = input.properties.get(id_property)
        && !value.is_empty()
        && Table::key(id_property, value) != Table::key(id_property, &input.id)
    {
        return Some(format!(
            "The value of {id_property} in properties ({value}) differs from the id ({})",
            input.id
        ));
    }
    if kind == Kind::Contacts {
        let mut emails = vec![];
        if id_property == "email" && action != Action::Create {
            emails.push(input.id.clone());
        }
        if let Some(Value::String(email)) = input.properties.get("email")
            && !email.is_empty()
        {
            emails.push(email.clone());
        }
        if let Some(bad) = emails.into_iter().find(|e| !is_email(e)) {
            return Some(property_errors(&[(
                "email".to_string(),
                format!("Email address {bad} is invalid"),
                "INVALID_EMAIL",
            )]));
        }
    }
    None
}

/// HubSpot's email check, approximately: one `@`, a local part, a dotted domain with a
/// letters-only top-level domain of two letters or more, no spaces.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let Some((_, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !text.chars().any(char::is_whitespace)
        && !domain.starts_with('.')
        && !domain.contains("..")
        && tld.len() >= 2
        && tld.chars().all(|c| c.is_ascii_alphabetic())
}

/// The property an update names records by when it gives no `idProperty`: the record id.
const RECORD_ID: &str = "hs_object_id";

fn table(store: &mut Store, kind: Kind) -> &mut Table {
    match kind {
        Kind::Contacts => &mut store.contacts,
        Kind::Companies => &mut store.companies,
    }
}

/// The record whose `property` is `value` (`hs_object_id`: the record id).
fn lookup(table: &Table, property: &str, value: &str) -> Option<u64> {
    if property == RECORD_ID {
        let id = value.trim().parse().ok()?;
        return table.records.contains_key(&id).then_some(id);
    }
    table.index.get(&Table::key(property, value)).copied()
}

/// A value as the text an index holds.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Creates or updates the record `input` names; `(record id, created, properties)`.
fn upsert(
    store: &mut Store,
    kind: Kind,
    id_property: &str,
    input: &Input,
    now: &str,
) -> (u64, bool, Map<String, Value>) {
    let existing = lookup(table(store, kind), id_property, &input.id);
    write(
        store,
        kind,
        existing,
        Some((id_property, &input.id)),
        input,
        now,
    )
}

/// Writes `input`'s properties into the record `existing`, or a new one (given `named`, the
/// unique property and value it was named by); `(record id, created, properties)`.
fn write(
    store: &mut Store,
    kind: Kind,
    existing: Option<u64>,
    named: Option<(&str, &str)>,
    input: &Input,
    now: &str,
) -> (u64, bool, Map<String, Value>) {
    let (id, new) = match existing {
        Some(id) => (id, false),
        None => {
            let id = store.next_id;
            store.next_id += 1;
            (id, true)
        }
    };
    let table = table(store, kind);
    let record = table.records.entry(id).or_default();
    if new {
        if let Some((property, value)) = named {
            record.insert(property.to_string(), Value::String(value.to_string()));
        }
        table.created_at.insert(id, now.to_string());
    }
    for (name, value) in &input.properties {
        if value.as_str() == Some("") {
            record.remove(name);
        } else {
            record.insert(name.clone(), value.clone());
        }
    }
    let properties = record.clone();
    // Keep the unique-property index current.
    table.index.retain(|_, v| *v != id);
    for (name, value) in &properties {
        if let Some(text) = scalar(value) {
            table.index.insert(Table::key(name, &text), id);
        }
    }
    if let Some((property, value)) = named {
        table.index.insert(Table::key(property, value), id);
    }
    (id, new, properties)
}

async fn send_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return validation_error(&shared, "Invalid input JSON: expected an object"),
        Err(e) => return validation_error(&shared, format!("Invalid input JSON: {e}")),
    };
    let text = |k: &str| {
        body.get(k).and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let Some(event_name) = text("eventName") else {
        return validation_error(&shared, "eventName is required");
    };
    let qualified = event_name.strip_prefix("pe").is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].len() > 1 && rest[digits..].starts_with('_')
    });
    if !qualified {
        return validation_error(
            &shared,
            format!(
                "Event {event_name} not found: eventName must be the fully qualified name pe{{HubID}}_{{name}}"
            ),
        );
    }
    let email = text("email");
    let object_id = text("objectId");
    if email.is_none() && object_id.is_none() && text("utk").is_none() {
        return validation_error(
            &shared,
            "One of email, objectId or utk is required to attach the event to a record",
        );
    }
    if let Some(email) = &email
        && !is_email(email)
    {
        return validation_error(&shared, format!("Email address {email} is invalid"));
    }
    let properties = match body.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return validation_error(&shared, "properties must be an object"),
    };
    let event = ReceivedEvent {
        event_name,
        email,
        object_id,
        occurred_at: text("occurredAt"),
        uuid: text("uuid"),
        properties,
    };
    {
        let mut store = shared.store();
        match &event.uuid {
            Some(uuid) if !store.uuids.insert(uuid.clone()) => store.duplicates += 1,
            _ => store.events.push(event),
        }
    }
    answer(&shared, StatusCode::NO_CONTENT, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(
        fake: &FakeHubSpot,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, HeaderMap, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", fake.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, body)
    }

    #[tokio::test]
    async fn upserts_update_by_the_id_property() {
        let fake = start(FakeOptions::default()).await.unwrap();
        let token = fake.access_token().to_string();
        let first = json!({ "inputs": [
            { "idProperty": "email", "id": "Jane@Example.com", "properties": { "firstname": "Jane" } }
        ]});
        let (status, headers, body) = post(
            &fake,
            "/crm/v3/objects/contacts/batch/upsert",
            &token,
            first,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["new"], true);
        assert_eq!(
            headers["x-hubspot-ratelimit-interval-milliseconds"],
            "10000"
        );
        let second = json!({ "inputs": [
            { "idProperty": "email", "id": "jane@example.com", "properties": { "lastname": "Doe", "firstname": "" } }
        ]});
        let (_, _, body) = post(
            &fake,
            "/crm/v3/objects/contacts/batch/upsert",
            &token,
            second,
        )
        .await;
        assert_eq!(body["results"][0]["new"], false);
        let contacts = fake.contacts();
        assert_eq!(contacts.len(), 1);
        assert_eq!(
            Value::Object(contacts[0].properties.clone()),
            json!({ "email": "Jane@Example.com", "lastname": "Doe" })
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn unknown_properties_and_non_unique_id_properties_refuse_the_batch() {
        let fake = start(FakeOptions::default()).await.unwrap();
        let token = fake.access_token().to_string();
        let body = json!({ "inputs": [
            { "idProperty": "email", "id": "a@example.com", "properties": { "plan": "pro" } },
            { "idProperty": "email", "id": "b@example.com", "properties": {} }
        ]});
        let (status, _, body) =
            post(&fake, "/crm/v3/objects/contacts/batch/upsert", &token, body).await;
        assert_eq!(status, 400);
        assert_eq!(body["category"], "VALIDATION_ERROR");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("Property values were not valid: "));
        assert!(message.contains("PROPERTY_DOESNT_EXIST"), "{message}");
        let body = json!({ "inputs": [
            { "idProperty": "firstname", "id": "Jane", "properties": {} }
        ]});
        let (status, _, body) =
            post(&fake, "/crm/v3/objects/contacts/batch/upsert", &token, body).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            "Unable to perform update/upsert by non-unique 0-1 property"
        );
        assert!(fake.contacts().is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn an_invalid_email_is_a_207_with_trace_ids_and_a_400_without() {
        let fake = start(FakeOptions::default()).await.unwrap();
        let token = fake.access_token().to_string();
        let inputs = |traced: bool| {
            let mut inputs = json!([
                { "idProperty": "email", "id": "a@example.com", "properties": {} },
                { "idProperty": "email", "id": "bad@example", "properties": {} }
            ]);
            if traced {
                inputs[0]["objectWriteTraceId"] = "0".into();
                inputs[1]["objectWriteTraceId"] = "1".into();
            }
            json!({ "inputs": inputs })
        };
        let (status, _, body) = post(
            &fake,
            "/crm/v3/objects/contacts/batch/upsert",
            &token,
            inputs(false),
        )
        .await;
        assert_eq!(status, 400);
        assert!(body["message"].as_str().unwrap().contains("INVALID_EMAIL"));
        assert!(fake.contacts().is_empty());
        let (status, _, body) = post(
            &fake,
            "/crm/v3/objects/contacts/batch/upsert",
            &token,
            inputs(true),
        )
        .await;
        assert_eq!(status, 207, "{body}");
        assert_eq!(body["numErrors"], 1);
        assert_eq!(
            body["errors"][0]["context"]["objectWriteTraceId"],
            json!(["1"])
        );
        assert_eq!(body["results"][0]["objectWriteTraceId"], "0");
        assert_eq!(fake.contacts().len(), 1);
        fake.stop().await;
    }

    #[tokio::test]
    async fn wrong_tokens_get_401_and_the_window_gets_429() {
        let fake = start(FakeOptions {
            requests_per_ten_seconds: 2,
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        let event = json!({ "eventName": "pe1_signup", "email": "a@example.com" });
        let (status, _, body) = post(&fake, "/events/v3/send", "nope", event.clone()).await;
        assert_eq!(status, 401);
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        let token = fake.access_token().to_string();
        for _ in 0..2 {
            assert_eq!(
                post(&fake, "/events/v3/send", &token, event.clone())
                    .await
                    .0,
                204
            );
        }
        let (status, headers, body) = post(&fake, "/events/v3/send", &token, event).await;
        assert_eq!(status, 429);
        assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(body["errorType"], "RATE_LIMIT");
        assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
        assert_eq!(headers["x-hubspot-ratelimit-max"], "2");
        assert_eq!(fake.throttled(), 1);
        assert_eq!(fake.events().len(), 2);
        fake.stop().await;
    }

    #[tokio::test]
    async fn the_daily_limit() {
        let fake = start(FakeOptions {
            daily_limit: Some(1),
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        let token = fake.access_token().to_string();
        let event = json!({ "eventName": "pe1_signup", "email": "a@example.com", "uuid": "u" });
        assert_eq!(
            post(&fake, "/events/v3/send", &token, event.clone())
                .await
                .0,
            204
        );
        let (status, headers, body) = post(&fake, "/events/v3/send", &token, event).await;
        assert_eq!(status, 429);
        assert_eq!(body["policyName"], "DAILY");
        assert_eq!(headers["x-hubspot-ratelimit-daily-remaining"], "0");
        fake.stop().await;
    }
}
