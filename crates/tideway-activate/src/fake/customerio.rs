//! An in-process fake of Customer.io's Track API, for tests and the demo.
//!
//! It speaks the shapes of the Track API reference (<https://docs.customer.io/api/track/>,
//! `journeys-track.json`):
//!
//! - `GET /api/v1/accounts/region`: `{"url", "region", "environment_id"}`.
//! - `PUT /api/v1/customers/{identifier}`, `DELETE /api/v1/customers/{identifier}`,
//!   `POST /api/v1/customers/{identifier}/events`, `POST /api/v1/events` (anonymous): 200 `{}`,
//!   or 400 `{"meta": {"errors": ["..."]}}`.
//! - `POST /api/v2/entity` (one item) and `POST /api/v2/batch` (`{"batch": [...]}`): 200 `{}`
//!   when every item is valid; 207 `{"errors": [{"batch_index", "reason", "field", "message"}]}`
//!   when some are not (the others are stored); 400 `{"errors": [...]}` when the request itself
//!   is malformed or too large.
//! - Wrong or missing HTTP Basic credentials: 401 `{"meta": {"error": "Unauthorized request"}}`.
//! - Over the rate limit (a token bucket of `requests_per_second`, one second of burst): 429 with
//!   `Retry-After` in seconds.
//!
//! Validation follows the documented limits: one identifier per person (`id`, `email`, `phone`
//! or `cio_id`); ids and attribute names at most 150 bytes; attribute values at most 1000
//! bytes; at most 300 attributes per call; event names at most 100 bytes and event data at most
//! 100,000 bytes; object attributes at most 100 KB in all; batch items at most 32 KB and batches
//! under 500 KB; an event `id` must be a ULID, and an event whose `id` was seen before is dropped
//! as a duplicate. `null` or `""` removes an attribute. What the real API answers in `reason`
//! and `message` is not documented word for word; the fake's wording is its own.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bytes of an id or an attribute name.
pub const MAX_ID_BYTES: usize = 150;
/// Bytes of one attribute value.
pub const MAX_VALUE_BYTES: usize = 1000;
/// Attributes in one call.
pub const MAX_ATTRIBUTES: usize = 300;
/// Bytes of an event name.
pub const MAX_EVENT_NAME_BYTES: usize = 100;
/// Bytes of an event's data.
pub const MAX_EVENT_DATA_BYTES: usize = 100_000;
/// Bytes of all of an object's attributes.
pub const MAX_OBJECT_ATTRIBUTE_BYTES: usize = 100 * 1024;
/// Bytes of one v2 item.
pub const MAX_ITEM_BYTES: usize = 32 * 1024;
/// Bytes of one v2 batch request.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The Site ID it accepts.
    pub site_id: String,
    /// The Track API key it accepts.
    pub api_key: String,
    /// The region `GET /api/v1/accounts/region` reports: `us` or `eu`.
    pub region: String,
    /// Requests per second before 429s (a token bucket holding one second of requests).
    pub requests_per_second: f64,
    /// The share of authorized, unthrottled requests answered 500 (0.0 to 1.0), spread evenly:
    /// 0.25 fails every fourth request.
    pub failure_rate: f64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            site_id: "fake-site-id".to_string(),
            api_key: "fake-track-api-key".to_string(),
            region: "us".to_string(),
            requests_per_second: 100.0,
            failure_rate: 0.0,
        }
    }
}

/// A person the fake holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Person {
    /// The `id` identifier, if the person has one.
    pub id: Option<String>,
    /// Attributes, `email` among them.
    pub attributes: Map<String, Value>,
}

/// An event the fake took.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The person's key (their `id`, else their email or `cio_` id); `None` when anonymous.
    pub person: Option<String>,
    pub anonymous_id: Option<String>,
    /// `event`, `page` or `screen`.
    pub kind: String,
    pub name: String,
    /// The dedupe ULID, if one was sent.
    pub id: Option<String>,
    /// Unix seconds, if sent.
    pub timestamp: Option<i64>,
    pub data: Map<String, Value>,
}

/// An object (a `group`) the fake holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object {
    pub attributes: Map<String, Value>,
    /// Related people: person ids (or emails), and `anonymous:ID` for anonymous relations.
    pub people: BTreeSet<String>,
}

/// What one v2 item or v1 request got wrong.
#[derive(Debug, Clone, PartialEq)]
struct ItemError {
    reason: &'static str,
    field: String,
    message: String,
}

fn item_error(reason: &'static str, field: &str, message: impl Into<String>) -> ItemError {
    ItemError {
        reason,
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Bucket {
            tokens: capacity,
            capacity,
            rate,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

#[derive(Debug)]
struct Store {
    people: BTreeMap<String, Person>,
    events: Vec<ReceivedEvent>,
    event_ids: HashSet<String>,
    duplicates: u64,
    deletes: Vec<String>,
    objects: BTreeMap<(String, String), Object>,
    deleted_objects: Vec<(String, String)>,
    requests: u64,
    throttled: u64,
    unauthorized: u64,
    failed: u64,
    bucket: Bucket,
    failures: super::Failures,
}

#[derive(Debug)]
struct Shared {
    options: FakeOptions,
    /// `Basic base64(site_id:api_key)`.
    authorization: String,
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .expect("fake Customer.io store lock poisoned")
    }
}

/// A running fake. Stops when dropped, or with [`FakeCustomerIo::stop`].
#[derive(Debug)]
pub struct FakeCustomerIo {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a fake on `127.0.0.1` at a free port.
pub async fn start(options: FakeOptions) -> std::io::Result<FakeCustomerIo> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = listener.local_addr()?;
    let credentials = format!("{}:{}", options.site_id, options.api_key);
    let shared = Arc::new(Shared {
        authorization: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ),
        store: Mutex::new(Store {
            people: BTreeMap::new(),
            events: Vec::new(),
            event_ids: HashSet::new(),
            duplicates: 0,
            deletes: Vec::new(),
            objects: BTreeMap::new(),
            deleted_objects: Vec::new(),
            requests: 0,
            throttled: 0,
            unauthorized: 0,
            failed: 0,
            bucket: Bucket::new(options.requests_per_second),
            failures: super::Failures::new(options.failure_rate),
        }),
        options,
    });
    let app = Router::new()
        .route("/api/v1/accounts/region", get(region))
        .route(
            "/api/v1/customers/{identifier}",
            put(v1_identify).delete(v1_delete),
        )
        .route("/api/v1/customers/{identifier}/events", post(v1_event))
        .route("/api/v1/events", post(v1_anonymous_event))
        .route("/api/v2/entity", post(v2_entity))
        .route("/api/v2/batch", post(v2_batch))
        .with_state(shared.clone());
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(FakeCustomerIo {
        base_url: format!("http://{address}"),
        shared,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

impl FakeCustomerIo {
    /// `http://127.0.0.1:PORT`, to put in `base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The Site ID it accepts.
    pub fn site_id(&self) -> &str {
        &self.shared.options.site_id
    }

    /// The Track API key it accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.options.api_key
    }

    /// Every person, by key (their `id`, else the email or `cio_` id they were created with).
    pub fn people(&self) -> BTreeMap<String, Person> {
        self.shared.store().people.clone()
    }

    /// One person by key.
    pub fn person(&self, key: &str) -> Option<Person> {
        self.shared.store().people.get(key).cloned()
    }

    /// Every person's attributes, by key: what a test compares with what was synced.
    pub fn attributes(&self) -> BTreeMap<String, Map<String, Value>> {
        self.shared
            .store()
            .people
            .iter()
            .map(|(k, p)| (k.clone(), p.attributes.clone()))
            .collect()
    }

    /// Events taken, oldest first (duplicates dropped).
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.shared.store().events.clone()
    }

    /// Events dropped because their `id` was seen before.
    pub fn duplicates(&self) -> u64 {
        self.shared.store().duplicates
    }

    /// Keys of the people deleted, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.shared.store().deletes.clone()
    }

    /// Every object, by `(object_type_id, object_id)`.
    pub fn objects(&self) -> BTreeMap<(String, String), Object> {
        self.shared.store().objects.clone()
    }

    /// Objects deleted, `(object_type_id, object_id)`, in order.
    pub fn deleted_objects(&self) -> Vec<(String, String)> {
        self.shared.store().deleted_objects.clone()
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

    /// Changes the rate limit (and refills the bucket).
    pub fn set_requests_per_second(&self, rate: f64) {
        self.shared.store().bucket = Bucket::new(rate);
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

impl Drop for FakeCustomerIo {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// ----- the gate: auth, rate limit, injected failures -----

/// The answer refusing the request (401, 429 or an injected 500), or `None` to go on.
fn gate(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let mut store = shared.store();
    store.requests += 1;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(shared.authorization.as_str()) {
        store.unauthorized += 1;
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "meta": { "error": "Unauthorized request" } })),
            )
                .into_response(),
        );
    }
    if let Err(wait) = store.bucket.take() {
        store.throttled += 1;
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({ "meta": { "error": "Too many requests" } })),
        )
            .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
        );
        return Some(response);
    }
    if store.failures.strike() {
        store.failed += 1;
        return Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "meta": { "error": "Internal server error" } })),
            )
                .into_response(),
        );
    }
    None
}

fn ok() -> Response {
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

fn v1_error(message: impl Into<String>) -> Response {
    let message: String = message.into();
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "meta": { "errors": [message] } })),
    )
        .into_response()
}

fn v1_item_error(error: ItemError) -> Response {
    if error.field.is_empty() {
        v1_error(error.message)
    } else {
        v1_error(format!("{}: {}", error.field, error.message))
    }
}

fn v2_errors(status: StatusCode, errors: Vec<Value>) -> Response {
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

fn error_json(error: &ItemError, index: Option<usize>) -> Value {
    let mut value = json!({
        "reason": error.reason,
        "field": error.field,
        "message": error.message,
    });
    if let Some(index) = index {
        value["batch_index"] = index.into();
    }
    value
}

fn parse_body(body: &[u8]) -> Result<Value, ItemError> {
    serde_json::from_slice(body)
        .map_err(|e| item_error("invalid", "", format!("the body is not valid JSON: {e}")))
}

// ----- routes -----

async fn region(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let region = shared.options.region.as_str();
    let url = if region == "eu" {
        "https://track-eu.customer.io"
    } else {
        "https://track.customer.io"
    };
    (
        StatusCode::OK,
        axum::Json(json!({ "url": url, "region": region, "environment_id": 1 })),
    )
        .into_response()
}

async fn v1_identify(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let result = parse_body(&body).and_then(|body| {
        let who = path_person(&identifier)?;
        let Value::Object(mut attributes) = body else {
            return Err(item_error("invalid", "", "the body must be a JSON object"));
        };
        let update_only = attributes.remove("_update").and_then(|v| v.as_bool()) == Some(true);
        attributes.remove("_timestamp");
        let relationships = attributes.remove("cio_relationships");
        check_attributes(&attributes, "")?;
        let relationships = match relationships {
            None => Vec::new(),
            Some(r) => v1_relationships(&r)?,
        };
        let mut store = shared.store();
        let key = identify_person(&mut store, &who, attributes, update_only);
        if let Some(key) = key {
            for (type_id, object_id) in relationships {
                store
                    .objects
                    .entry((type_id, object_id))
                    .or_default()
                    .people
                    .insert(key.clone());
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ok(),
        Err(error) => v1_item_error(error),
    }
}

async fn v1_delete(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    match path_person(&identifier) {
        Ok(who) => {
            delete_person(&mut shared.store(), &who);
            ok()
        }
        Err(error) => v1_item_error(error),
    }
}

async fn v1_event(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let result = parse_body(&body).and_then(|body| {
        let who = path_person(&identifier)?;
        let event = v1_event_fields(&body, None)?;
        record_event(&mut shared.store(), Some(&who), event);
        Ok(())
    });
    match result {
        Ok(()) => ok(),
        Err(error) => v1_item_error(error),
    }
}

async fn v1_anonymous_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    let result = parse_body(&body).and_then(|body| {
        let anonymous = match body.get("anonymous_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(item_error(
                    "invalid",
                    "anonymous_id",
                    "anonymous_id must be a non-empty string",
                ));
            }
        };
        let event = v1_event_fields(&body, anonymous)?;
        record_event(&mut shared.store(), None, event);
        Ok(())
    });
    match result {
        Ok(()) => ok(),
        Err(error) => v1_item_error(error),
    }
}

async fn v2_entity(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    if body.len() > MAX_ITEM_BYTES {
        let error = item_error("too_large", "", "the request must be 32kb or smaller");
        return v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]);
    }
    let result = parse_body(&body).and_then(|item| apply_item(&mut shared.store(), &item));
    match result {
        Ok(()) => ok(),
        Err(error) => v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]),
    }
}

async fn v2_batch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = gate(&shared, &headers) {
        return response;
    }
    if body.len() >= MAX_BATCH_BYTES {
        let error = item_error(
            "too_large",
            "batch",
            "the batch request must be smaller than 500kb",
        );
        return v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]);
    }
    let items = match parse_body(&body) {
        Ok(Value::Object(mut body)) => match body.remove("batch") {
            Some(Value::Array(items)) => items,
            _ => {
                let error = item_error("required", "batch", "batch must be an array of requests");
                return v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]);
            }
        },
        Ok(_) => {
            let error = item_error("invalid", "", "the body must be a JSON object");
            return v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]);
        }
        Err(error) => return v2_errors(StatusCode::BAD_REQUEST, vec![error_json(&error, None)]),
    };
    let mut errors = Vec::new();
    let mut store = shared.store();
    for (index, item) in items.iter().enumerate() {
        let size = item.to_string().len();
        let result = if size > MAX_ITEM_BYTES {
            Err(item_error(
                "too_large",
                "",
                format!(
                    "each request in a batch must be 32kb or smaller; this one is {size} bytes"
                ),
            ))
        } else {
            apply_item(&mut store, item)
        };
        if let Err(error) = result {
            errors.push(error_json(&error, Some(index)));
        }
    }
    drop(store);
    if errors.is_empty() {
        ok()
    } else {
        v2_errors(StatusCode::MULTI_STATUS, errors)
    }
}

// ----- people, events, objects -----

/// A person an object is related to.
#[derive(Debug)]
enum Relation {
    Known(Who),
    /// `anonymous:ID`.
    Anonymous(String),
}

/// Who a person call is about.
#[derive(Debug, Clone, PartialEq)]
enum Who {
    Id(String),
    Email(String),
    CioId(String),
    Phone(String),
}

/// The person named in a v1 path: `cio_…` is a `cio_id`, a value with `@` an email, anything
/// else an `id`.
fn path_person(identifier: &str) -> Result<Who, ItemError> {
    check_id(identifier, "identifier")?;
    Ok(if let Some(cio) = identifier.strip_prefix("cio_") {
        Who::CioId(cio.to_string())
    } else if identifier.contains('@') {
        Who::Email(identifier.to_string())
    } else {
        Who::Id(identifier.to_string())
    })
}

/// The person named by v2 `identifiers`: exactly one of `id`, `email`, `phone`, `cio_id`.
fn v2_person(identifiers: Option<&Value>) -> Result<Who, ItemError> {
    let Some(Value::Object(identifiers)) = identifiers else {
        return Err(item_error(
            "required",
            "identifiers",
            "identifiers must be an object with one of id, email, phone or cio_id",
        ));
    };
    let known: Vec<(&String, &Value)> = identifiers
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "id" | "email" | "phone" | "cio_id"))
        .collect();
    let [(key, value)] = known.as_slice() else {
        return Err(if known.is_empty() {
            item_error(
                "required",
                "identifiers",
                "identifiers must include one of id, email, phone or cio_id",
            )
        } else {
            item_error(
                "invalid",
                "identifiers",
                "you cannot pass multiple identifiers",
            )
        });
    };
    let field = format!("identifiers.{key}");
    let Some(value) = value.as_str().filter(|s| !s.is_empty()) else {
        return Err(item_error(
            "invalid",
            &field,
            format!("{key} must be a non-empty string"),
        ));
    };
    check_id(value, &field)?;
    Ok(match key.as_str() {
        "id" => Who::Id(value.to_string()),
        "email" => Who::Email(value.to_string()),
        "phone" => Who::Phone(value.to_string()),
        _ => Who::CioId(value.to_string()),
    })
}

fn check_id(id: &str, field: &str) -> Result<(), ItemError> {
    if id.is_empty() {
        return Err(item_error("required", field, "the identifier is empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(item_error(
            "too_long",
            field,
            format!(
                "identifiers are at most {MAX_ID_BYTES} bytes; this one is {}",
                id.len()
            ),
        ));
    }
    Ok(())
}

fn check_attributes(attributes: &Map<String, Value>, field: &str) -> Result<(), ItemError> {
    let at = |name: &str| {
        if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        }
    };
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(item_error(
            "too_many",
            field,
            format!(
                "at most {MAX_ATTRIBUTES} attributes per call; got {}",
                attributes.len()
            ),
        ));
    }
    for (name, value) in attributes {
        if name.len() > MAX_ID_BYTES {
            return Err(item_error(
                "too_long",
                &at(name),
                format!("attribute names are at most {MAX_ID_BYTES} bytes"),
            ));
        }
        let size = match value {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if size > MAX_VALUE_BYTES {
            return Err(item_error(
                "too_long",
                &at(name),
                format!("attribute values are at most {MAX_VALUE_BYTES} bytes; this one is {size}"),
            ));
        }
    }
    Ok(())
}

/// The key of the person `who` names, if they exist.
fn find_person(store: &Store, who: &Who) -> Option<String> {
    match who {
        Who::Id(id) => store.people.contains_key(id).then(|| id.clone()),
        Who::Email(email) | Who::Phone(email) => {
            let attribute = if matches!(who, Who::Email(_)) {
                "email"
            } else {
                "phone"
            };
            store
                .people
                .iter()
                .find(|(_, p)| p.attributes.get(attribute).and_then(Value::as_str) == Some(email))
                .map(|(k, _)| k.clone())
                .or_else(|| store.people.contains_key(email).then(|| email.clone()))
        }
        Who::CioId(cio) => {
            let key = format!("cio_{cio}");
            store.people.contains_key(&key).then_some(key)
        }
    }
}

/// Creates or updates a person; `None` when `update_only` and there is no such person.
fn identify_person(
    store: &mut Store,
    who: &Who,
    attributes: Map<String, Value>,
    update_only: bool,
) -> Option<String> {
    let key = match find_person(store, who) {
        Some(key) => key,
        None if update_only => return None,
        None => {
            let (key, person) = match who {
                Who::Id(id) => (
                    id.clone(),
                    Person {
                        id: Some(id.clone()),
                        attributes: Map::new(),
                    },
                ),
                Who::Email(email) => (email.clone(), person_with("email", email)),
                Who::Phone(phone) => (phone.clone(), person_with("phone", phone)),
                Who::CioId(cio) => (format!("cio_{cio}"), Person::default()),
            };
            store.people.insert(key.clone(), person);
            key
        }
    };
    let person = store
        .people
        .get_mut(&key)
        .expect("the person was found or inserted just above");
    for (name, value) in attributes {
        if value.is_null() || value.as_str() == Some("") {
            person.attributes.remove(&name);
        } else {
            person.attributes.insert(name, value);
        }
    }
    Some(key)
}

fn person_with(attribute: &str, value: &str) -> Person {
    let mut attributes = Map::new();
    attributes.insert(attribute.to_string(), value.into());
    Person {
        id: None,
        attributes,
    }
}

fn delete_person(store: &mut Store, who: &Who) {
    let key = find_person(store, who).unwrap_or_else(|| match who {
        Who::Id(k) | Who::Email(k) | Who::Phone(k) => k.clone(),
        Who::CioId(cio) => format!("cio_{cio}"),
    });
    store.people.remove(&key);
    for object in store.objects.values_mut() {
        object.people.remove(&key);
    }
    store.deletes.push(key);
}

/// The fields of a v1 event body (`name`, `type`, `id`, `timestamp`, `data`).
fn v1_event_fields(body: &Value, anonymous_id: Option<String>) -> Result<ReceivedEvent, ItemError> {
    if !body.is_object() {
        return Err(item_error("invalid", "", "the body must be a JSON object"));
    }
    let kind = match body.get("type").and_then(Value::as_str) {
        None => "event",
        Some(kind @ ("event" | "page" | "screen")) => kind,
        Some(other) => {
            return Err(item_error(
                "invalid",
                "type",
                format!("type `{other}` is not one of event, page, screen"),
            ));
        }
    };
    event_fields(body, kind, "data", anonymous_id)
}

fn event_fields(
    body: &Value,
    kind: &str,
    data_key: &str,
    anonymous_id: Option<String>,
) -> Result<ReceivedEvent, ItemError> {
    let name = match body.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        _ => return Err(item_error("required", "name", "name is required")),
    };
    if name.len() > MAX_EVENT_NAME_BYTES {
        return Err(item_error(
            "too_long",
            "name",
            format!("event names are at most {MAX_EVENT_NAME_BYTES} bytes"),
        ));
    }
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if is_ulid(id) => Some(id.clone()),
        Some(_) => return Err(item_error("invalid", "id", "id must be a valid ULID")),
    };
    let timestamp = match body.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(t.as_i64().ok_or_else(|| {
            item_error(
                "invalid",
                "timestamp",
                "timestamp must be an integer (Unix seconds)",
            )
        })?),
    };
    let data = match body.get(data_key) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data.clone(),
        Some(_) => {
            return Err(item_error(
                "invalid",
                data_key,
                format!("{data_key} must be an object"),
            ));
        }
    };
    let size = Value::Object(data.clone()).to_string().len();
    if size > MAX_EVENT_DATA_BYTES {
        return Err(item_error(
            "too_long",
            data_key,
            format!("event data is at most {MAX_EVENT_DATA_BYTES} bytes; this is {size}"),
        ));
    }
    Ok(ReceivedEvent {
        // Set when stored: the key of the person, created if need be.
        person: None,
        anonymous_id,
        kind: kind.to_string(),
        name,
        id,
        timestamp,
        data,
    })
}

/// Whether `text` is a ULID (<https://github.com/ulid/spec>): 26 Crockford base-32 characters,
/// the first at most `7`.
fn is_ulid(text: &str) -> bool {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    text.len() == 26
        && text.as_bytes()[0] <= b'7'
        && text
            .bytes()
            .all(|b| CROCKFORD.contains(&b.to_ascii_uppercase()))
}

/// Stores an event for `who` (creating the person, as the Track API does), dropping duplicates.
fn record_event(store: &mut Store, who: Option<&Who>, mut event: ReceivedEvent) {
    if let Some(id) = &event.id
        && !store.event_ids.insert(id.to_ascii_uppercase())
    {
        store.duplicates += 1;
        return;
    }
    event.person = who.and_then(|who| identify_person(store, who, Map::new(), false));
    store.events.push(event);
}

/// The relationships of a v1 `cio_relationships` (`{"action", "relationships"}`).
fn v1_relationships(value: &Value) -> Result<Vec<(String, String)>, ItemError> {
    let field = "cio_relationships";
    if value.get("action").and_then(Value::as_str) != Some("add_relationships") {
        return Err(item_error(
            "invalid",
            "cio_relationships.action",
            "the fake supports only add_relationships",
        ));
    }
    let Some(relationships) = value.get("relationships").and_then(Value::as_array) else {
        return Err(item_error(
            "required",
            field,
            "relationships must be an array",
        ));
    };
    relationships
        .iter()
        .map(|r| object_identifiers(r.get("identifiers"), "cio_relationships.relationships"))
        .collect()
}

fn object_identifiers(
    identifiers: Option<&Value>,
    field: &str,
) -> Result<(String, String), ItemError> {
    let text = |k: &str| identifiers.and_then(|i| i.get(k)).and_then(Value::as_str);
    match (text("object_type_id"), text("object_id")) {
        (Some(type_id), Some(object_id)) => {
            if type_id.is_empty() || !type_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(item_error(
                    "invalid",
                    &format!("{field}.object_type_id"),
                    "object_type_id must be a string-formatted integer",
                ));
            }
            check_id(object_id, &format!("{field}.object_id"))?;
            Ok((type_id.to_string(), object_id.to_string()))
        }
        _ => Err(item_error(
            "required",
            &format!("{field}.identifiers"),
            "identifiers must include object_type_id and object_id (strings)",
        )),
    }
}

/// The item's `attributes` object (empty when absent).
fn attributes_of(item: &Value) -> Result<Map<String, Value>, ItemError> {
    match item.get("attributes") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(attributes)) => Ok(attributes.clone()),
        Some(_) => Err(item_error(
            "invalid",
            "attributes",
            "attributes must be an object",
        )),
    }
}

/// Validates and applies one v2 item; nothing is stored when it is invalid.
fn apply_item(store: &mut Store, item: &Value) -> Result<(), ItemError> {
    if !item.is_object() {
        return Err(item_error(
            "invalid",
            "",
            "each request must be a JSON object",
        ));
    }
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
    let action = item.get("action").and_then(Value::as_str).unwrap_or("");
    match (kind, action) {
        ("person", "identify") => {
            let who = v2_person(item.get("identifiers"))?;
            let attributes = attributes_of(item)?;
            check_attributes(&attributes, "attributes")?;
            let update_only = attributes.get("_update").and_then(Value::as_bool) == Some(true);
            let mut attributes = attributes;
            attributes.remove("_update");
            identify_person(store, &who, attributes, update_only);
            Ok(())
        }
        ("person", "delete") => {
            let who = v2_person(item.get("identifiers"))?;
            delete_person(store, &who);
            Ok(())
        }
        ("person", kind @ ("event" | "page" | "screen")) => {
            let who = v2_person(item.get("identifiers"))?;
            let event = event_fields(item, kind, "attributes", None)?;
            record_event(store, Some(&who), event);
            Ok(())
        }
        ("object", "identify" | "identify_anonymous") => {
            let key = object_identifiers(item.get("identifiers"), "identifiers")?;
            let attributes = attributes_of(item)?;
            check_attributes(&attributes, "attributes")?;
            let total = Value::Object(attributes.clone()).to_string().len();
            if total > MAX_OBJECT_ATTRIBUTE_BYTES {
                return Err(item_error(
                    "too_long",
                    "attributes",
                    format!(
                        "an object's attributes are at most 100 KB in all; these are {total} bytes"
                    ),
                ));
            }
            let mut people = Vec::new();
            let relationships = match item.get("cio_relationships") {
                None | Some(Value::Null) => &Vec::new(),
                Some(Value::Array(r)) => r,
                Some(_) => {
                    return Err(item_error(
                        "invalid",
                        "cio_relationships",
                        "cio_relationships must be an array",
                    ));
                }
            };
            for relationship in relationships {
                let identifiers = relationship.get("identifiers");
                if action == "identify_anonymous" {
                    match identifiers
                        .and_then(|i| i.get("anonymous_id"))
                        .and_then(Value::as_str)
                    {
                        Some(anonymous) if !anonymous.is_empty() => {
                            people.push(Relation::Anonymous(format!("anonymous:{anonymous}")));
                        }
                        _ => {
                            return Err(item_error(
                                "required",
                                "cio_relationships.identifiers.anonymous_id",
                                "identify_anonymous relationships need an anonymous_id",
                            ));
                        }
                    }
                } else {
                    people.push(Relation::Known(v2_person(identifiers)?));
                }
            }
            let mut keys = Vec::new();
            for who in people {
                match who {
                    Relation::Known(who) => {
                        if let Some(key) = identify_person(store, &who, Map::new(), false) {
                            keys.push(key);
                        }
                    }
                    Relation::Anonymous(key) => keys.push(key),
                }
            }
            let object = store.objects.entry(key).or_default();
            for (name, value) in attributes {
                if value.is_null() || value.as_str() == Some("") {
                    object.attributes.remove(&name);
                } else {
                    object.attributes.insert(name, value);
                }
            }
            object.people.extend(keys);
            Ok(())
        }
        ("object", "delete") => {
            let key = object_identifiers(item.get("identifiers"), "identifiers")?;
            store.objects.remove(&key);
            store.deleted_objects.push(key);
            Ok(())
        }
        ("person" | "object" | "delivery", other) => Err(item_error(
            "invalid",
            "action",
            format!("the fake Customer.io does not implement `{kind}` action `{other}`"),
        )),
        (other, _) => Err(item_error(
            "invalid",
            "type",
            format!("type `{other}` is not one of person, object, delivery"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Client {
        http: reqwest::Client,
        base: String,
        auth: (String, String),
    }

    impl Client {
        fn new(fake: &FakeCustomerIo) -> Self {
            Client {
                http: reqwest::Client::new(),
                base: fake.base_url().to_string(),
                auth: (fake.site_id().to_string(), fake.api_key().to_string()),
            }
        }

        async fn send(
            &self,
            method: reqwest::Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, HeaderMap, Value) {
            let mut request = self
                .http
                .request(method, format!("{}{path}", self.base))
                .basic_auth(&self.auth.0, Some(&self.auth.1));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("the fake answers");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        }

        async fn put(&self, path: &str, body: Value) -> u16 {
            self.send(reqwest::Method::PUT, path, Some(body)).await.0
        }

        async fn batch(&self, items: Value) -> (u16, Value) {
            let (status, _, body) = self
                .send(
                    reqwest::Method::POST,
                    "/api/v2/batch",
                    Some(json!({ "batch": items })),
                )
                .await;
            (status, body)
        }
    }

    async fn fake() -> FakeCustomerIo {
        start(FakeOptions::default()).await.unwrap()
    }

    #[tokio::test]
    async fn wrong_or_missing_credentials_get_401() {
        let fake = fake().await;
        let mut client = Client::new(&fake);
        client.auth.1 = "wrong".into();
        let (status, _, body) = client
            .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
            .await;
        assert_eq!(status, 401);
        assert_eq!(body, json!({ "meta": { "error": "Unauthorized request" } }));
        let response = reqwest::get(format!("{}/api/v1/accounts/region", fake.base_url()))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(fake.unauthorized(), 2);
        let (status, _, body) = Client::new(&fake)
            .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "url": "https://track.customer.io", "region": "us", "environment_id": 1 })
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn invalid_items_get_per_item_errors_and_the_others_are_stored() {
        let fake = fake().await;
        let client = Client::new(&fake);
        let (status, body) = client
            .batch(json!([
                { "type": "person", "identifiers": { "id": "1" }, "action": "identify", "attributes": { "plan": "pro" } },
                { "type": "person", "action": "identify", "attributes": { "plan": "pro" } },
                { "type": "person", "identifiers": { "id": "2", "email": "a@b.c" }, "action": "identify" },
                { "type": "person", "identifiers": { "id": "3" }, "action": "identify", "attributes": { "bio": "z".repeat(1001) } },
                { "type": "person", "identifiers": { "id": "4" }, "action": "identify", "attributes": { "n".repeat(151): 1 } },
                { "type": "person", "identifiers": { "id": "5" }, "action": "event" },
                { "type": "person", "identifiers": { "id": "6" }, "action": "event", "name": "e", "id": "not-a-ulid" },
                { "type": "person", "identifiers": { "id": "7" }, "action": "event", "name": "e", "attributes": { "blob": "b".repeat(33_000) } },
                { "type": "object", "identifiers": { "object_type_id": "companies", "object_id": "acme" }, "action": "identify" },
                { "type": "object", "identifiers": { "object_type_id": "1", "object_id": "acme" }, "action": "identify",
                  "attributes": { "name": "Acme" }, "cio_relationships": [{ "identifiers": { "id": "1" } }] }
            ]))
            .await;
        assert_eq!(status, 207);
        let errors = body["errors"].as_array().unwrap();
        let got: Vec<(u64, &str, &str)> = errors
            .iter()
            .map(|e| {
                (
                    e["batch_index"].as_u64().unwrap(),
                    e["reason"].as_str().unwrap(),
                    e["field"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "required", "identifiers"),
                (2, "invalid", "identifiers"),
                (3, "too_long", "attributes.bio"),
                (
                    4,
                    "too_long",
                    &format!("attributes.{}", "n".repeat(151))[..]
                ),
                (5, "required", "name"),
                (6, "invalid", "id"),
                (7, "too_large", ""),
                (8, "invalid", "identifiers.object_type_id"),
            ]
        );
        assert!(
            errors
                .iter()
                .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty()))
        );
        assert_eq!(fake.attributes().keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(fake.person("1").unwrap().attributes["plan"], "pro");
        assert!(
            fake.objects()[&("1".into(), "acme".into())]
                .people
                .contains("1")
        );
        fake.stop().await;
    }

    #[tokio::test]
    async fn malformed_and_oversized_batches_get_400() {
        let fake = fake().await;
        let client = Client::new(&fake);
        let (status, _, body) = client
            .send(
                reqwest::Method::POST,
                "/api/v2/batch",
                Some(json!({ "items": [] })),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["field"], "batch");
        let item = json!({ "type": "person", "identifiers": { "id": "1" }, "action": "identify",
                           "attributes": { "a": "x".repeat(900) } });
        let (status, body) = client.batch(Value::Array(vec![item; 600])).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"][0]["reason"], "too_large");
        assert!(fake.people().is_empty());
        fake.stop().await;
    }

    #[tokio::test]
    async fn v1_calls() {
        let fake = fake().await;
        let client = Client::new(&fake);
        assert_eq!(
            client
                .put(
                    "/api/v1/customers/5",
                    json!({ "email": "e@x.io", "plan": "basic", "_timestamp": 1 })
                )
                .await,
            200
        );
        assert_eq!(
            client
                .put("/api/v1/customers/5", json!({ "plan": "" }))
                .await,
            200
        );
        // An email in the path finds the person with that email.
        assert_eq!(
            client
                .put("/api/v1/customers/e@x.io", json!({ "seats": 3 }))
                .await,
            200
        );
        assert_eq!(
            Value::Object(fake.person("5").unwrap().attributes),
            json!({ "email": "e@x.io", "seats": 3 })
        );
        let (status, _, body) = client
            .send(
                reqwest::Method::POST,
                "/api/v1/customers/5/events",
                Some(json!({ "data": {} })),
            )
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({ "meta": { "errors": ["name: name is required"] } })
        );
        let (status, _, _) = client
            .send(
                reqwest::Method::POST,
                "/api/v1/customers/5/events",
                Some(json!({ "name": "purchase", "type": "page", "timestamp": 1700000000 })),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _, _) = client
            .send(
                reqwest::Method::POST,
                "/api/v1/events",
                Some(json!({ "name": "visit", "anonymous_id": "a1" })),
            )
            .await;
        assert_eq!(status, 200);
        let events = fake.events();
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].kind.as_str(), events[0].person.as_deref()),
            ("page", Some("5"))
        );
        assert_eq!(events[1].anonymous_id.as_deref(), Some("a1"));
        let long = format!("/api/v1/customers/{}", "i".repeat(151));
        assert_eq!(client.put(&long, json!({})).await, 400);
        assert_eq!(
            client
                .send(reqwest::Method::DELETE, "/api/v1/customers/5", None)
                .await
                .0,
            200
        );
        assert!(fake.people().is_empty());
        assert_eq!(fake.deletes(), ["5"]);
        fake.stop().await;
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let fake = start(FakeOptions {
            requests_per_second: 2.0,
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        let client = Client::new(&fake);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let (status, headers, _) = client
                .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
                .await;
            statuses.push(status);
            if status == 429 {
                assert_eq!(headers.get("retry-after").unwrap(), "1");
            }
        }
        assert_eq!(statuses, [200, 200, 429]);
        assert_eq!((fake.requests(), fake.throttled()), (3, 1));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (status, _, _) = client
            .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
            .await;
        assert_eq!(status, 200, "the bucket refills");
        fake.stop().await;
    }

    #[tokio::test]
    async fn injected_failures_are_spread_evenly() {
        let fake = start(FakeOptions {
            failure_rate: 0.5,
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        let client = Client::new(&fake);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(
                client
                    .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [200, 500, 200, 500]);
        fake.set_failure_rate(0.0);
        assert_eq!(
            client
                .send(reqwest::Method::GET, "/api/v1/accounts/region", None)
                .await
                .0,
            200
        );
        assert_eq!(fake.failed(), 2);
        fake.stop().await;
    }
}
