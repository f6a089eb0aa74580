//! An in-process fake of the Salesforce APIs a destination uses, for tests and the demo.
//!
//! It speaks the shapes of the REST API and Bulk API 2.0 developer guides:
//!
//! - `POST /services/oauth2/token` (form: `grant_type=client_credentials`, `client_id`,
//!   `client_secret`): `{"access_token", "signature", "scope", "instance_url", "id",
//!   "token_type": "Bearer", "issued_at"}`, or 400 `{"error": "invalid_client",
//!   "error_description": "invalid client credentials"}`.
//! - Every other call needs `Authorization: Bearer <token>`, else 401
//!   `[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`. A token
//!   expires after [`FakeOptions::token_uses`] calls.
//! - `GET /services/data/vXX.X/limits`: `{"DailyApiRequests": {"Max", "Remaining"}, ...}`.
//!   Every authorized call counts against `DailyApiRequests`; past it, 403
//!   `[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]`.
//! - `PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExternalIdField}` (upsert),
//!   `PATCH /services/data/vXX.X/composite/sobjects` (update by `id`),
//!   `POST /services/data/vXX.X/composite/sobjects` (create),
//!   `DELETE /services/data/vXX.X/composite/sobjects?ids=...`: 200 with one result per record,
//!   in order, `{"id", "success", "errors": [{"statusCode", "message", "fields"}]}` (`created`
//!   for upserts); `allOrNone: true` rolls back on any error. More than 200 records: 400.
//! - `DELETE /services/data/vXX.X/sobjects/{Object}/{field}/{value}`: 204, or 404.
//! - `GET /services/data/vXX.X/query?q=SELECT Id, <field> FROM <Object> WHERE <field> IN
//!   ('a', 'b')` (the one SOQL shape the destination sends): `{"totalSize", "done": true,
//!   "records": [{"attributes": {"type", "url"}, "Id", <field>}]}`; any other query is 400
//!   `MALFORMED_QUERY`, an unknown object `INVALID_TYPE`, an unknown field `INVALID_FIELD`.
//! - Bulk API 2.0 ingest: `POST .../jobs/ingest` (job info, state `Open`), `PUT
//!   .../jobs/ingest/{id}/batches` (`text/csv`, 201), `PATCH .../jobs/ingest/{id}`
//!   (`UploadComplete` or `Aborted`), `GET .../jobs/ingest/{id}` (the job moves to `InProgress`,
//!   then `JobComplete` or `Failed` after [`FakeOptions::polls_to_complete`] reads),
//!   `GET .../failedResults/` (`"sf__Id","sf__Error",<uploaded columns>`, in reverse upload
//!   order: the API does not promise any order), `successfulResults/` (`sf__Id`,
//!   `sf__Created`, ...), `unprocessedrecords/`. A CSV column the object does not have fails
//!   the whole job (`InvalidBatch : Field name not found : X`); row errors fail rows. In CSV,
//!   `#N/A` sets a field to null and an empty cell leaves it unchanged.
//!
//! Records are validated as Salesforce does: a field the object does not have is
//! `INVALID_FIELD`, a required field missing on create (or cleared) is
//! `REQUIRED_FIELD_MISSING`, a created record holding the value of an External ID field that
//! another record holds is `DUPLICATE_VALUE` (the fake's External ID fields are all marked
//! Unique), an `Email` without `@` is `INVALID_EMAIL_ADDRESS`, an Id of the
//! wrong shape is `MALFORMED_ID`, an Id that names nothing is `INVALID_CROSS_REFERENCE_KEY`
//! (`ENTITY_IS_DELETED` once deleted). The status codes are Salesforce's; the messages are
//! close to Salesforce's but not promised word for word. Unlike the fake, Salesforce may refuse
//! a whole collections call (400) for an unknown field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Records per sObject Collections call.
pub const MAX_COLLECTION_RECORDS: usize = 200;

/// The fields of an object the fake knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectSchema {
    /// The first three characters of its record Ids (`003` for Contact).
    pub key_prefix: String,
    /// Every field, `Id` among them.
    pub fields: BTreeSet<String>,
    /// Fields a record must have when created.
    pub required: BTreeSet<String>,
    /// Fields marked External ID (upserts can match on them).
    pub external_ids: BTreeSet<String>,
}

impl ObjectSchema {
    fn new(prefix: &str, fields: &[&str], required: &[&str], external_ids: &[&str]) -> Self {
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        let mut schema = ObjectSchema {
            key_prefix: prefix.to_string(),
            fields: set(fields),
            required: set(required),
            external_ids: set(external_ids),
        };
        schema.fields.insert("Id".into());
        schema.fields.extend(schema.required.clone());
        schema.fields.extend(schema.external_ids.clone());
        schema
    }

    /// The field's name as the object spells it (field names are case-insensitive).
    fn field(&self, name: &str) -> Option<&String> {
        self.fields.iter().find(|f| f.eq_ignore_ascii_case(name))
    }
}

/// The objects of a fresh fake: Contact, Account and Lead with a few standard fields and an
/// `External_Id__c` external id field each.
pub fn default_objects() -> BTreeMap<String, ObjectSchema> {
    BTreeMap::from([
        (
            "Contact".to_string(),
            ObjectSchema::new(
                "003",
                &[
                    "FirstName",
                    "Email",
                    "Phone",
                    "Title",
                    "AccountId",
                    "Plan__c",
                    "Lead_Score__c",
                ],
                &["LastName"],
                &["External_Id__c"],
            ),
        ),
        (
            "Account".to_string(),
            ObjectSchema::new(
                "001",
                &[
                    "Industry",
                    "Website",
                    "NumberOfEmployees",
                    "AnnualRevenue",
                    "Phone",
                    "BillingCity",
                    "Plan__c",
                    "Tier__c",
                ],
                &["Name"],
                &["External_Id__c"],
            ),
        ),
        (
            "Lead".to_string(),
            ObjectSchema::new(
                "00Q",
                &["FirstName", "Email", "Status"],
                &["LastName", "Company"],
                &["External_Id__c"],
            ),
        ),
    ])
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The consumer key it accepts.
    pub client_id: String,
    /// The consumer secret it accepts.
    pub client_secret: String,
    /// A token accepted without the token endpoint (an `access_token` config); `None`: none.
    pub static_token: Option<String>,
    /// Calls a token serves before it expires (then 401 `INVALID_SESSION_ID`); `None`: never.
    pub token_uses: Option<u64>,
    /// The org's daily API allocation (`DailyApiRequests.Max`).
    pub daily_api_requests: u64,
    /// Job reads before a closed bulk job is done (the first ones answer `InProgress`).
    pub polls_to_complete: u32,
    /// The objects and their fields.
    pub objects: BTreeMap<String, ObjectSchema>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            client_id: "3MVG9fake-consumer-key".to_string(),
            client_secret: "fake-consumer-secret".to_string(),
            static_token: None,
            token_uses: None,
            daily_api_requests: 100_000,
            polls_to_complete: 2,
            objects: default_objects(),
        }
    }
}

/// A call the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    pub method: String,
    /// The path and query.
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
}

/// A Bulk API 2.0 ingest job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub object: String,
    /// `insert`, `update`, `upsert` or `delete`.
    pub operation: String,
    pub external_id_field: Option<String>,
    /// `Open`, `UploadComplete`, `InProgress`, `JobComplete`, `Failed` or `Aborted`.
    pub state: String,
    /// Every upload, joined.
    pub csv: String,
    /// The job create body as received.
    pub create_body: Value,
    pub error_message: Option<String>,
    pub processed: u64,
    /// Failed rows: the uploaded cells and `sf__Error`.
    pub failed: Vec<(Vec<String>, String)>,
    /// Successful rows: `sf__Id`, `sf__Created` and the uploaded cells.
    pub succeeded: Vec<(String, bool, Vec<String>)>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    polls: u32,
}

/// What a record call got wrong.
#[derive(Debug, Clone, PartialEq)]
struct RecordError {
    code: &'static str,
    message: String,
    fields: Vec<String>,
}

fn record_error(code: &'static str, message: impl Into<String>, fields: &[&str]) -> RecordError {
    RecordError {
        code,
        message: message.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
    }
}

/// How a record is named.
enum Lookup {
    Id(String),
    External(String, String),
    /// None: the record is created.
    Create,
}

#[derive(Debug, Clone)]
struct Store {
    objects: BTreeMap<String, ObjectSchema>,
    /// Object -> Id (18 characters) -> fields (with `Id`).
    records: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    deleted: BTreeSet<String>,
    next_id: u64,
    /// Token -> calls left (`None`: unlimited).
    tokens: HashMap<String, Option<u64>>,
    issued: u64,
    token_uses: Option<u64>,
    requests: Vec<ReceivedRequest>,
    jobs: BTreeMap<String, Job>,
    next_job: u64,
    daily_max: u64,
    used: u64,
    polls_to_complete: u32,
    limit_exceeded: u32,
    concurrent_exceeded: u32,
    unavailable: u32,
}

#[derive(Debug)]
struct Shared {
    options: FakeOptions,
    base_url: String,
    store: Mutex<Store>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .expect("fake Salesforce store lock poisoned")
    }
}

/// A running fake. Stops when dropped, or with [`FakeSalesforce::stop`].
#[derive(Debug)]
pub struct FakeSalesforce {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a fake on `127.0.0.1` at a free port.
pub async fn start(options: FakeOptions) -> std::io::Result<FakeSalesforce> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = listener.local_addr()?;
    let base_url = format!("http://{address}");
    let mut tokens = HashMap::new();
    if let Some(token) = &options.static_token {
        tokens.insert(token.clone(), None);
    }
    let shared = Arc::new(Shared {
        store: Mutex::new(Store {
            objects: options.objects.clone(),
            records: BTreeMap::new(),
            deleted: BTreeSet::new(),
            next_id: 1,
            tokens,
            issued: 0,
            token_uses: options.token_uses,
            requests: Vec::new(),
            jobs: BTreeMap::new(),
            next_job: 1,
            daily_max: options.daily_api_requests,
            used: 0,
            polls_to_complete: options.polls_to_complete,
            limit_exceeded: 0,
            concurrent_exceeded: 0,
            unavailable: 0,
        }),
        base_url: base_url.clone(),
        options,
    });
    let data = "/services/data/{version}";
    let app = Router::new()
        .route("/services/oauth2/token", post(token))
        .route(&format!("{data}/limits"), get(limits))
        .route(&format!("{data}/limits/"), get(limits))
        .route(
            &format!("{data}/composite/sobjects"),
            patch(update_or_create)
                .delete(delete_ids)
                .post(update_or_create),
        )
        .route(
            &format!("{data}/composite/sobjects/{{object}}/{{field}}"),
            patch(upsert),
        )
        .route(
            &format!("{data}/sobjects/{{object}}/{{field}}/{{value}}"),
            delete(delete_external),
        )
        .route(&format!("{data}/query"), get(query))
        .route(&format!("{data}/query/"), get(query))
        .route(&format!("{data}/jobs/ingest"), post(create_job))
        .route(&format!("{data}/jobs/ingest/"), post(create_job))
        .route(
            &format!("{data}/jobs/ingest/{{id}}"),
            get(job_info).patch(close_job),
        )
        .route(&format!("{data}/jobs/ingest/{{id}}/batches"), put(upload))
        .route(&format!("{data}/jobs/ingest/{{id}}/batches/"), put(upload))
        .route(
            &format!("{data}/jobs/ingest/{{id}}/{{which}}"),
            get(results),
        )
        .route(
            &format!("{data}/jobs/ingest/{{id}}/{{which}}/"),
            get(results),
        )
        .with_state(shared.clone());
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(FakeSalesforce {
        base_url,
        shared,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

impl FakeSalesforce {
    /// `http://127.0.0.1:PORT`, to put in `instance_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The consumer key it accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.options.client_id
    }

    /// The consumer secret it accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.options.client_secret
    }

    /// Every record of `object`, by Id. Values written through Bulk API 2.0 are strings, as
    /// they came in the CSV.
    pub fn records(&self, object: &str) -> BTreeMap<String, Map<String, Value>> {
        self.shared
            .store()
            .records
            .get(object)
            .cloned()
            .unwrap_or_default()
    }

    /// The record of `object` whose `field` is `value` (`Id` or any field).
    pub fn find(&self, object: &str, field: &str, value: &str) -> Option<Map<String, Value>> {
        let store = self.shared.store();
        let records = store.records.get(object)?;
        if field == "Id" {
            return records.get(&full_id(value)?).cloned();
        }
        records
            .values()
            .find(|r| r.get(field).is_some_and(|v| text(v) == value))
            .cloned()
    }

    /// Creates a record as it is (no validation) and answers its Id, e.g. to update it later.
    pub fn insert(&self, object: &str, fields: Map<String, Value>) -> String {
        let mut store = self.shared.store();
        let id = store.new_id(object);
        let mut record = fields;
        record.insert("Id".into(), Value::String(id.clone()));
        store
            .records
            .entry(object.to_string())
            .or_default()
            .insert(id.clone(), record);
        id
    }

    /// Every call received, oldest first, the token endpoint's included.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.store().requests.clone()
    }

    /// Every bulk job, oldest first.
    pub fn jobs(&self) -> Vec<Job> {
        self.shared.store().jobs.values().cloned().collect()
    }

    /// Tokens issued by the token endpoint.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.store().issued
    }

    /// Calls counted against the daily API allocation.
    pub fn api_requests_used(&self) -> u64 {
        self.shared.store().used
    }

    /// Calls a token issued from now on serves before it expires; `None`: never expires.
    pub fn set_token_uses(&self, uses: Option<u64>) {
        self.shared.store().token_uses = uses;
    }

    /// Expires every token issued so far (not the static one).
    pub fn expire_tokens(&self) {
        let mut store = self.shared.store();
        let keep = self.shared.options.static_token.clone();
        for (token, left) in store.tokens.iter_mut() {
            if Some(token) != keep.as_ref() {
                *left = Some(0);
            }
        }
    }

    /// Makes `field` of `object` required (adding it if unknown).
    pub fn set_required(&self, object: &str, field: &str) {
        let mut store = self.shared.store();
        let schema = store.objects.entry(object.to_string()).or_default();
        schema.fields.insert(field.to_string());
        schema.required.insert(field.to_string());
    }

    /// Adds `field` to `object`, marked External ID when `external_id`.
    pub fn add_field(&self, object: &str, field: &str, external_id: bool) {
        let mut store = self.shared.store();
        let schema = store.objects.entry(object.to_string()).or_default();
        schema.fields.insert(field.to_string());
        if external_id {
            schema.external_ids.insert(field.to_string());
        }
    }

    /// The next `n` calls answer 403 `REQUEST_LIMIT_EXCEEDED` (`TotalRequests Limit exceeded.`).
    pub fn set_request_limit_exceeded(&self, n: u32) {
        self.shared.store().limit_exceeded = n;
    }

    /// The next `n` calls answer 403 `REQUEST_LIMIT_EXCEEDED` (`ConcurrentPerOrgLongTxn Limit
    /// exceeded.`).
    pub fn set_concurrent_limit_exceeded(&self, n: u32) {
        self.shared.store().concurrent_exceeded = n;
    }

    /// The next `n` calls answer 503.
    pub fn set_unavailable(&self, n: u32) {
        self.shared.store().unavailable = n;
    }

    /// Changes the daily API allocation (calls already used still count).
    pub fn set_daily_api_requests(&self, max: u64) {
        self.shared.store().daily_max = max;
    }

    /// Job reads before a closed bulk job is done.
    pub fn set_polls_to_complete(&self, polls: u32) {
        self.shared.store().polls_to_complete = polls;
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

impl Drop for FakeSalesforce {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// ----- Ids -----

const ID_SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 18-character form of a 15- or 18-character Id, or `None` when `id` is not one.
fn full_id(id: &str) -> Option<String> {
    if !matches!(id.len(), 15 | 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let base = &id.as_bytes()[..15];
    let mut out = String::from_utf8(base.to_vec()).ok()?;
    for chunk in base.chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        out.push(ID_SUFFIX[bits] as char);
    }
    Some(out)
}

impl Store {
    fn new_id(&mut self, object: &str) -> String {
        let prefix = self
            .objects
            .get(object)
            .map_or("a00".to_string(), |s| s.key_prefix.clone());
        let n = self.next_id;
        self.next_id += 1;
        full_id(&format!("{prefix}5g{n:010}")).expect("a generated Id has 15 alphanumerics")
    }

    /// The object holding record `id`.
    fn object_of(&self, id: &str) -> Option<String> {
        self.records
            .iter()
            .find(|(_, records)| records.contains_key(id))
            .map(|(object, _)| object.clone())
    }

    /// Validates and applies one create-or-update; `update_only` when the record must exist.
    /// Answers the record's Id and whether it was created. Nothing changes on an error.
    fn write(
        &mut self,
        object: &str,
        lookup: Lookup,
        fields: &Map<String, Value>,
        update_only: bool,
    ) -> Result<(String, bool), RecordError> {
        let schema = self
            .objects
            .get(object)
            .ok_or_else(|| {
                record_error(
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported."),
                    &[],
                )
            })?
            .clone();
        let mut clean = Map::new();
        for (name, value) in fields {
            let Some(field) = schema.field(name) else {
                return Err(record_error(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type {object}"),
                    &[],
                ));
            };
            if field == "Id" {
                continue;
            }
            if field == "Email"
                && let Value::String(email) = value
                && !email.is_empty()
                && !email.contains('@')
            {
                return Err(record_error(
                    "INVALID_EMAIL_ADDRESS",
                    format!("Email: invalid email address: {email}"),
                    &["Email"],
                ));
            }
            clean.insert(field.clone(), value.clone());
        }
        let records = self.records.entry(object.to_string()).or_default();
        let existing = match &lookup {
            Lookup::Id(id) => {
                let Some(id) = full_id(id) else {
                    return Err(record_error(
                        "MALFORMED_ID",
                        format!("{object} ID: id value of incorrect type: {id}"),
                        &["Id"],
                    ));
                };
                if !records.contains_key(&id) {
                    return Err(if self.deleted.contains(&id) {
                        record_error("ENTITY_IS_DELETED", "entity is deleted", &[])
                    } else {
                        record_error(
                            "INVALID_CROSS_REFERENCE_KEY",
                            "invalid cross reference id",
                            &[],
                        )
                    });
                }
                Some(id)
            }
            Lookup::Create => None,
            Lookup::External(field, value) => {
                let matches: Vec<&String> = records
                    .iter()
                    .filter(|(_, r)| r.get(field).is_some_and(|v| text(v) == *value))
                    .map(|(id, _)| id)
                    .collect();
                match matches.as_slice() {
                    [] => None,
                    [one] => Some((*one).clone()),
                    _ => {
                        return Err(record_error(
                            "DUPLICATE_EXTERNAL_ID",
                            format!(
                                "{field}: more than one record found for external id field: {value}"
                            ),
                            &[field],
                        ));
                    }
                }
            }
        };
        if existing.is_none() && update_only {
            return Err(record_error(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[],
            ));
        }
        let mut record = existing
            .as_ref()
            .and_then(|id| records.get(id).cloned())
            .unwrap_or_default();
        if let Lookup::External(field, value) = &lookup {
            record.insert(field.clone(), Value::String(value.clone()));
        }
        for (name, value) in clean {
            if value.is_null() {
                record.remove(&name);
            } else {
                record.insert(name, value);
            }
        }
        let missing: Vec<&str> = schema
            .required
            .iter()
            .filter(|f| {
                record
                    .get(*f)
                    .is_none_or(|v| v.is_null() || text(v).is_empty())
            })
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(record_error(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        if existing.is_none() {
            for field in &schema.external_ids {
                let Some(value) = record.get(field).map(text).filter(|v| !v.is_empty()) else {
                    continue;
                };
                if let Some((other, _)) = records
                    .iter()
                    .find(|(_, r)| r.get(field).is_some_and(|v| text(v) == value))
                {
                    return Err(record_error(
                        "DUPLICATE_VALUE",
                        format!(
                            "duplicate value found: {field} duplicates value on record with id: {other}"
                        ),
                        &[field],
                    ));
                }
            }
        }
        let created = existing.is_none();
        let id = match existing {
            Some(id) => id,
            None => self.new_id(object),
        };
        record.insert("Id".into(), Value::String(id.clone()));
        self.records
            .entry(object.to_string())
            .or_default()
            .insert(id.clone(), record);
        Ok((id, created))
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ----- answers -----

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{ "message": message, "errorCode": code }])),
    )
        .into_response()
}

fn result_json(result: &Result<(String, bool), RecordError>, upsert: bool) -> Value {
    match result {
        Ok((id, created)) => {
            let mut v = json!({ "id": id, "success": true, "errors": [] });
            if upsert {
                v["created"] = (*created).into();
            }
            v
        }
        Err(e) => json!({
            "success": false,
            "errors": [{ "statusCode": e.code, "message": e.message, "fields": e.fields }]
        }),
    }
}

/// Records the call and checks the token, the injected failures and the daily allocation:
/// the answer refusing it, or `None` to go on.
fn gate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let mut store = shared.store();
    store.requests.push(ReceivedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or(uri.path(), |p| p.as_str())
            .to_string(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(body).into_owned(),
    });
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match store.tokens.get_mut(token) {
        Some(Some(0)) | None => {
            return Some(errors(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            ));
        }
        Some(Some(left)) => *left -= 1,
        Some(None) => {}
    }
    if store.unavailable > 0 {
        store.unavailable -= 1;
        return Some(errors(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server is temporarily unavailable; try again later",
        ));
    }
    if store.concurrent_exceeded > 0 {
        store.concurrent_exceeded -= 1;
        return Some(errors(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        ));
    }
    if store.limit_exceeded > 0 || store.used >= store.daily_max {
        store.limit_exceeded = store.limit_exceeded.saturating_sub(1);
        return Some(errors(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    store.used += 1;
    None
}

/// Adds `Sforce-Limit-Info: api-usage=USED/MAX`, as Salesforce does on every answer.
fn with_usage(shared: &Shared, mut response: Response) -> Response {
    let store = shared.store();
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", store.used, store.daily_max)) {
        response.headers_mut().insert("sforce-limit-info", v);
    }
    response
}

macro_rules! gated {
    ($shared:expr, $method:expr, $uri:expr, $headers:expr, $body:expr) => {
        if let Some(refused) = gate(&$shared, &$method, &$uri, &$headers, &$body) {
            return with_usage(&$shared, refused);
        }
    };
}

// ----- routes: auth and limits -----

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((decode(k), decode(v)))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let mut store = shared.store();
    store.requests.push(ReceivedRequest {
        method: "POST".into(),
        path: uri.path().to_string(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "client_credentials" {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "unsupported_grant_type", "error_description": "grant type not supported" })),
        )
            .into_response();
    }
    if get("client_id") != shared.options.client_id
        || get("client_secret") != shared.options.client_secret
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_client", "error_description": "invalid client credentials" })),
        )
            .into_response();
    }
    store.issued += 1;
    let token = format!("00D5g000000fake!AQ4AQ{:08}", store.issued);
    let uses = store.token_uses;
    store.tokens.insert(token.clone(), uses);
    axum::Json(json!({
        "access_token": token,
        "signature": "fake-signature",
        "scope": "api",
        "instance_url": shared.base_url,
        "id": format!("{}/id/00D5g000000fakeEAA/0055g000000fakeAAA", shared.base_url),
        "token_type": "Bearer",
        "issued_at": chrono::Utc::now().timestamp_millis().to_string(),
    }))
    .into_response()
}

async fn limits(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let store = shared.store();
    let jobs = store.jobs.len() as u64;
    let answer = axum::Json(json!({
        "DailyApiRequests": { "Max": store.daily_max, "Remaining": store.daily_max.saturating_sub(store.used) },
        "DailyBulkApiBatches": { "Max": 15000, "Remaining": 15000u64.saturating_sub(jobs) },
        "DailyBulkV2QueryJobs": { "Max": 10000, "Remaining": 10000 },
        "DailyBulkV2QueryFileStorageMB": { "Max": 976562, "Remaining": 976562 },
    }))
    .into_response();
    drop(store);
    with_usage(&shared, answer)
}

// ----- routes: SOQL -----

/// `SELECT Id, <field> FROM <object> WHERE <field> IN (<string literals>)`, parsed; `Err` says
/// what is malformed.
fn parse_lookup(soql: &str) -> Result<(String, String, Vec<String>), String> {
    let words: Vec<&str> = soql.splitn(8, ' ').collect();
    let [select, id, field, from, object, r#where, field2, rest] = words[..] else {
        return Err(format!("unexpected query: {soql}"));
    };
    let field = field.to_string();
    let shape = select.eq_ignore_ascii_case("SELECT")
        && id.eq_ignore_ascii_case("Id,")
        && from.eq_ignore_ascii_case("FROM")
        && r#where.eq_ignore_ascii_case("WHERE")
        && field2 == field;
    let list = rest
        .strip_prefix("IN (")
        .or_else(|| rest.strip_prefix("in ("))
        .and_then(|l| l.strip_suffix(')'));
    let (true, Some(list)) = (shape, list) else {
        return Err(format!("unexpected query: {soql}"));
    };
    let mut values = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('\'') => {}
            Some(c) => return Err(format!("unexpected token: {c}")),
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated string literal".into()),
                Some('\\') => value.extend(chars.next()),
                Some('\'') => break,
                Some(c) => value.push(c),
            }
        }
        values.push(value);
    }
    Ok((object.to_string(), field, values))
}

async fn query(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let soql = params.get("q").cloned().unwrap_or_default();
    let (object, field, values) = match parse_lookup(&soql) {
        Ok(parsed) => parsed,
        Err(message) => {
            return with_usage(
                &shared,
                errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &message),
            );
        }
    };
    let store = shared.store();
    let Some(schema) = store.objects.get(&object) else {
        drop(store);
        return with_usage(
            &shared,
            errors(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{object}' is not supported."),
            ),
        );
    };
    let Some(field) = schema.field(&field).cloned() else {
        drop(store);
        return with_usage(
            &shared,
            errors(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{field}' on entity '{object}'"),
            ),
        );
    };
    let version = uri
        .path()
        .split('/')
        .find(|s| s.starts_with('v'))
        .unwrap_or("v62.0")
        .to_string();
    let records: Vec<Value> = store
        .records
        .get(&object)
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.get(&field).is_some_and(|v| values.contains(&text(v))))
        .map(|(id, r)| {
            let mut record = Map::new();
            record.insert(
                "attributes".into(),
                json!({ "type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}") }),
            );
            record.insert("Id".into(), Value::String(id.clone()));
            record.insert(field.clone(), r[&field].clone());
            Value::Object(record)
        })
        .collect();
    drop(store);
    let answer = json!({ "totalSize": records.len(), "done": true, "records": records });
    with_usage(&shared, axum::Json(answer).into_response())
}

// ----- routes: sObject Collections -----

/// The `records` of a collections body, or the 400 refusing it.
fn collection_records(body: &[u8]) -> Result<(bool, Vec<Value>), Box<Response>> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(errors(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &format!("The request body is not valid JSON: {e}"),
        ))
    })?;
    let all_or_none = parsed
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(records) = parsed.get("records").and_then(Value::as_array) else {
        return Err(Box::new(errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "records: required field is missing",
        )));
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return Err(Box::new(errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )));
    }
    Ok((all_or_none, records.clone()))
}

/// Applies each record (`apply`), rolling everything back on any error when `all_or_none`.
fn apply_all(
    store: &mut Store,
    records: &[Value],
    all_or_none: bool,
    upsert: bool,
    mut apply: impl FnMut(&mut Store, &Value) -> Result<(String, bool), RecordError>,
) -> Value {
    let before = all_or_none.then(|| store.records.clone());
    let results: Vec<Result<(String, bool), RecordError>> =
        records.iter().map(|r| apply(store, r)).collect();
    if let Some(before) = before
        && results.iter().any(Result::is_err)
    {
        store.records = before;
        return Value::Array(
            results
                .iter()
                .map(|r| match r {
                    Ok(_) => result_json(
                        &Err(record_error(
                            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                            "Record rolled back because not all records were valid and the request was using AllOrNone header",
                            &[],
                        )),
                        upsert,
                    ),
                    err => result_json(err, upsert),
                })
                .collect(),
        );
    }
    Value::Array(results.iter().map(|r| result_json(r, upsert)).collect())
}

/// The fields of a record (everything but `attributes` and `id`), checking `attributes.type`.
fn record_fields(
    record: &Value,
    object: Option<&str>,
) -> Result<(String, Map<String, Value>), RecordError> {
    let Some(map) = record.as_object() else {
        return Err(record_error(
            "JSON_PARSER_ERROR",
            "a record must be an object",
            &[],
        ));
    };
    let kind = map
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| record_error("INVALID_TYPE", "Must send a concrete entity type.", &[]))?;
    if let Some(object) = object
        && kind != object
    {
        return Err(record_error(
            "INVALID_TYPE",
            format!("The list can contain objects only of type {object}, not {kind}"),
            &[],
        ));
    }
    let fields = map
        .iter()
        .filter(|(k, _)| *k != "attributes" && !k.eq_ignore_ascii_case("id"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((kind.to_string(), fields))
}

async fn upsert(
    State(shared): State<Arc<Shared>>,
    Path((_version, object, field)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated!(shared, method, uri, headers, body);
    let (all_or_none, records) = match collection_records(&body) {
        Ok(r) => r,
        Err(refused) => return with_usage(&shared, *refused),
    };
    let mut store = shared.store();
    let Some(schema) = store.objects.get(&object).cloned() else {
        drop(store);
        return with_usage(
            &shared,
            errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            ),
        );
    };
    let Some(field) = schema
        .external_ids
        .iter()
        .find(|f| f.eq_ignore_ascii_case(&field))
        .cloned()
    else {
        drop(store);
        let message = if field.eq_ignore_ascii_case("id") {
            "Only external ids are supported. Don't use record ids.".to_string()
        } else {
            format!("Field {field} is not an External ID field of {object}")
        };
        return with_usage(
            &shared,
            errors(StatusCode::BAD_REQUEST, "INVALID_FIELD", &message),
        );
    };
    let answer = apply_all(&mut store, &records, all_or_none, true, |store, record| {
        let (_, mut fields) = record_fields(record, Some(&object))?;
        let key = fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&field))
            .map(|(k, v)| (k.clone(), text(v)));
        let Some((name, value)) = key.filter(|(_, v)| !v.is_empty()) else {
            return Err(record_error(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{field}]"),
                &[&field],
            ));
        };
        fields.remove(&name);
        store.write(
            &object,
            Lookup::External(field.clone(), value),
            &fields,
            false,
        )
    });
    drop(store);
    with_usage(&shared, axum::Json(answer).into_response())
}

/// `PATCH /composite/sobjects` updates records by `id`; `POST` creates them.
async fn update_or_create(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let create = method == Method::POST;
    gated!(shared, method, uri, headers, body);
    let (all_or_none, records) = match collection_records(&body) {
        Ok(r) => r,
        Err(refused) => return with_usage(&shared, *refused),
    };
    let mut store = shared.store();
    let answer = apply_all(&mut store, &records, all_or_none, false, |store, record| {
        let (object, fields) = record_fields(record, None)?;
        let id = record
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("id")))
            .map(|(_, v)| text(v));
        match (create, id) {
            (true, None) => store.write(&object, Lookup::Create, &fields, false),
            (true, Some(_)) => Err(record_error(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
                &["Id"],
            )),
            (false, Some(id)) => store.write(&object, Lookup::Id(id), &fields, true),
            (false, None) => Err(record_error(
                "MISSING_ARGUMENT",
                "Id not specified in an update call",
                &[],
            )),
        }
    });
    drop(store);
    with_usage(&shared, axum::Json(answer).into_response())
}

async fn delete_ids(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let ids: Vec<String> = query
        .get("ids")
        .map(|s| {
            s.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_COLLECTION_RECORDS {
        return with_usage(
            &shared,
            errors(
                StatusCode::BAD_REQUEST,
                "EXCEEDED_ID_LIMIT",
                "give from 1 to 200 ids",
            ),
        );
    }
    let mut store = shared.store();
    let results: Vec<Value> = ids
        .iter()
        .map(|given| {
            let found = full_id(given).and_then(|id| store.object_of(&id).map(|o| (id, o)));
            match found {
                Some((id, object)) => {
                    store.records.get_mut(&object).map(|r| r.remove(&id));
                    store.deleted.insert(id.clone());
                    json!({ "id": id, "success": true, "errors": [] })
                }
                None => json!({
                    "id": given,
                    "success": false,
                    "errors": [{ "statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": [] }]
                }),
            }
        })
        .collect();
    drop(store);
    with_usage(&shared, axum::Json(Value::Array(results)).into_response())
}

async fn delete_external(
    State(shared): State<Arc<Shared>>,
    Path((_version, object, field, value)): Path<(String, String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let mut store = shared.store();
    let found = store.records.get(&object).and_then(|records| {
        records
            .iter()
            .find(|(_, r)| r.get(&field).is_some_and(|v| text(v) == value))
            .map(|(id, _)| id.clone())
    });
    let answer = match found {
        Some(id) => {
            store.records.get_mut(&object).map(|r| r.remove(&id));
            store.deleted.insert(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {value}"),
        ),
    };
    drop(store);
    with_usage(&shared, answer)
}

// ----- routes: Bulk API 2.0 -----

fn job_json(job: &Job, version: &str) -> Value {
    let mut v = json!({
        "id": job.id,
        "operation": job.operation,
        "object": job.object,
        "createdById": "0055g000000fakeAAA",
        "createdDate": "2024-03-01T12:00:00.000+0000",
        "systemModstamp": "2024-03-01T12:00:00.000+0000",
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": version.trim_start_matches('v').parse::<f64>().unwrap_or(62.0),
        "jobType": "V2Ingest",
        "contentUrl": format!("services/data/{version}/jobs/ingest/{}/batches", job.id),
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
        "numberRecordsProcessed": job.processed,
        "numberRecordsFailed": job.failed.len(),
        "retries": 0,
        "totalProcessingTime": 0,
        "apiActiveProcessingTime": 0,
        "apexProcessingTime": 0,
    });
    if let Some(field) = &job.external_id_field {
        v["externalIdFieldName"] = field.clone().into();
    }
    if let Some(message) = &job.error_message {
        v["errorMessage"] = message.clone().into();
    }
    v
}

async fn create_job(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated!(shared, method, uri, headers, body);
    let refuse = |code: &str, message: &str| {
        with_usage(&shared, errors(StatusCode::BAD_REQUEST, code, message))
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse("JSON_PARSER_ERROR", "The request body is not valid JSON");
    };
    let get = |k: &str| request.get(k).and_then(Value::as_str).map(str::to_string);
    let object = get("object").unwrap_or_default();
    let operation = get("operation").unwrap_or_default();
    let mut store = shared.store();
    let Some(schema) = store.objects.get(&object).cloned() else {
        drop(store);
        return refuse(
            "INVALIDENTITY",
            &format!("sObject type '{object}' is not supported."),
        );
    };
    if !matches!(
        operation.as_str(),
        "insert" | "update" | "upsert" | "delete"
    ) {
        drop(store);
        return refuse(
            "INVALIDJOB",
            &format!("InvalidJob : Invalid operation: {operation}"),
        );
    }
    if get("contentType").is_some_and(|c| c != "CSV")
        || get("lineEnding").is_some_and(|l| l != "LF" && l != "CRLF")
    {
        drop(store);
        return refuse(
            "INVALIDJOB",
            "InvalidJob : contentType must be CSV and lineEnding LF or CRLF",
        );
    }
    let external = get("externalIdFieldName");
    if operation == "upsert" {
        match &external {
            Some(f) if schema.external_ids.contains(f) => {}
            Some(f) => {
                drop(store);
                return refuse(
                    "INVALIDJOB",
                    &format!("InvalidJob : Field {f} is not an External ID field of {object}"),
                );
            }
            None => {
                drop(store);
                return refuse(
                    "INVALIDJOB",
                    "InvalidJob : External ID field name is required for upsert",
                );
            }
        }
    }
    let id =
        full_id(&format!("7505g{:010}", store.next_job)).expect("a job Id has 15 alphanumerics");
    store.next_job += 1;
    let job = Job {
        id: id.clone(),
        object,
        operation,
        external_id_field: external,
        state: "Open".into(),
        csv: String::new(),
        create_body: request,
        error_message: None,
        processed: 0,
        failed: Vec::new(),
        succeeded: Vec::new(),
        header: Vec::new(),
        rows: Vec::new(),
        polls: 0,
    };
    let answer = job_json(&job, &version);
    store.jobs.insert(id, job);
    drop(store);
    with_usage(&shared, axum::Json(answer).into_response())
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path((_version, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated!(shared, method, uri, headers, body);
    let csv_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/csv"));
    let mut store = shared.store();
    let answer = match store.jobs.get_mut(&id) {
        None => errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
        Some(_) if !csv_type => errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "Content-Type must be text/csv",
        ),
        Some(job) if job.state != "Open" => errors(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            &format!("Job is not in the Open state: {}", job.state),
        ),
        Some(job) => {
            job.csv.push_str(&String::from_utf8_lossy(&body));
            StatusCode::CREATED.into_response()
        }
    };
    drop(store);
    with_usage(&shared, answer)
}

async fn close_job(
    State(shared): State<Arc<Shared>>,
    Path((version, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated!(shared, method, uri, headers, body);
    let state = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let mut store = shared.store();
    let answer = match store.jobs.get_mut(&id) {
        None => errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
        Some(job) => match state.as_str() {
            "UploadComplete" if job.state == "Open" => {
                job.state = "UploadComplete".into();
                axum::Json(job_json(job, &version)).into_response()
            }
            "Aborted" if matches!(job.state.as_str(), "Open" | "UploadComplete" | "InProgress") => {
                job.state = "Aborted".into();
                axum::Json(job_json(job, &version)).into_response()
            }
            _ => errors(
                StatusCode::BAD_REQUEST,
                "INVALIDJOBSTATE",
                &format!("Cannot change a {} job to `{state}`", job.state),
            ),
        },
    };
    drop(store);
    with_usage(&shared, answer)
}

async fn job_info(
    State(shared): State<Arc<Shared>>,
    Path((version, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let mut store = shared.store();
    let polls_to_complete = store.polls_to_complete;
    let Some(mut job) = store.jobs.get(&id).cloned() else {
        drop(store);
        return with_usage(
            &shared,
            errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            ),
        );
    };
    if matches!(job.state.as_str(), "UploadComplete" | "InProgress") {
        job.polls += 1;
        if job.polls >= polls_to_complete {
            process(&mut store, &mut job);
        } else {
            job.state = "InProgress".into();
        }
    }
    let answer = job_json(&job, &version);
    store.jobs.insert(id, job);
    drop(store);
    with_usage(&shared, axum::Json(answer).into_response())
}

/// Runs a closed job: the whole job fails on a bad header, else each row succeeds or fails.
fn process(store: &mut Store, job: &mut Job) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(job.csv.as_bytes());
    let parsed = reader.headers().cloned().and_then(|header| {
        let rows = reader
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_string).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((header.iter().map(str::to_string).collect::<Vec<_>>(), rows))
    });
    let (header, rows) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            job.state = "Failed".into();
            job.error_message = Some(format!(
                "ClientInputError : LineEnding is invalid on user data or the CSV is malformed: {e}"
            ));
            return;
        }
    };
    job.header = header.clone();
    job.rows = rows.clone();
    let schema = store.objects.get(&job.object).cloned().unwrap_or_default();
    if let Some(unknown) = header.iter().find(|h| schema.field(h).is_none()) {
        job.state = "Failed".into();
        job.error_message = Some(format!("InvalidBatch : Field name not found : {unknown}"));
        return;
    }
    let key_column = match job.operation.as_str() {
        "upsert" => job.external_id_field.clone().unwrap_or_default(),
        _ => "Id".to_string(),
    };
    // An insert names no record: every column is a field.
    let key = match header
        .iter()
        .position(|h| h.eq_ignore_ascii_case(&key_column))
    {
        Some(key) => Some(key),
        None if job.operation == "insert" => None,
        None => {
            job.state = "Failed".into();
            job.error_message = Some(format!(
                "InvalidBatch : Field name not found : {key_column}"
            ));
            return;
        }
    };
    for row in rows {
        let mut fields = Map::new();
        for (i, cell) in row.iter().enumerate() {
            if Some(i) == key || cell.is_empty() {
                continue;
            }
            let value = if cell == "#N/A" {
                Value::Null
            } else {
                Value::String(cell.clone())
            };
            fields.insert(header[i].clone(), value);
        }
        let key_value = key.and_then(|k| row.get(k).cloned()).unwrap_or_default();
        let result = match job.operation.as_str() {
            "upsert" if key_value.is_empty() => Err(record_error(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{key_column}]"),
                &[&key_column],
            )),
            "upsert" => store.write(
                &job.object,
                Lookup::External(key_column.clone(), key_value),
                &fields,
                false,
            ),
            "update" => store.write(&job.object, Lookup::Id(key_value), &fields, true),
            "insert" if key.is_some() => Err(record_error(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
                &["Id"],
            )),
            "insert" => store.write(&job.object, Lookup::Create, &fields, false),
            _ => match full_id(&key_value).filter(|id| store.object_of(id).is_some()) {
                Some(id) => {
                    let object = job.object.clone();
                    store.records.get_mut(&object).map(|r| r.remove(&id));
                    store.deleted.insert(id.clone());
                    Ok((id, false))
                }
                None => Err(record_error("ENTITY_IS_DELETED", "entity is deleted", &[])),
            },
        };
        job.processed += 1;
        match result {
            Ok((id, created)) => job.succeeded.push((id, created, row)),
            Err(e) => {
                let error = format!("{}:{}:{} --", e.code, e.message, e.fields.join(","));
                job.failed.push((row, error));
            }
        }
    }
    job.state = "JobComplete".into();
}

async fn results(
    State(shared): State<Arc<Shared>>,
    Path((_version, id, which)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    gated!(shared, method, uri, headers, []);
    let store = shared.store();
    let Some(job) = store.jobs.get(&id).cloned() else {
        drop(store);
        return with_usage(
            &shared,
            errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            ),
        );
    };
    drop(store);
    let mut out = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header = |first: &[&str]| {
        first
            .iter()
            .map(|s| s.to_string())
            .chain(job.header.iter().cloned())
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    match which.as_str() {
        "failedResults" => {
            rows.push(header(&["sf__Id", "sf__Error"]));
            // Newest first: Salesforce does not promise the upload order.
            for (row, error) in job.failed.iter().rev() {
                let mut line = vec![String::new(), error.clone()];
                line.extend(row.iter().cloned());
                rows.push(line);
            }
        }
        "successfulResults" => {
            rows.push(header(&["sf__Id", "sf__Created"]));
            for (sf_id, created, row) in &job.succeeded {
                let mut line = vec![sf_id.clone(), created.to_string()];
                line.extend(row.iter().cloned());
                rows.push(line);
            }
        }
        "unprocessedrecords" => {
            rows.push(job.header.clone());
            if job.state != "JobComplete" {
                rows.extend(job.rows.iter().cloned());
            }
        }
        _ => {
            return with_usage(
                &shared,
                errors(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "The requested resource does not exist",
                ),
            );
        }
    }
    for row in rows {
        if out.write_record(&row).is_err() {
            return errors(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_EXCEPTION",
                "cannot write CSV",
            );
        }
    }
    let bytes = out.into_inner().unwrap_or_default();
    let response = ([(header::CONTENT_TYPE, "text/csv")], bytes).into_response();
    with_usage(&shared, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_salesforce_checksums() {
        // Per 5-character chunk, a bit per uppercase letter, as a letter of A-Z0-5.
        assert_eq!(
            full_id("001D000000INjVe").as_deref(),
            Some("001D000000INjVeIAL")
        );
        assert_eq!(
            full_id("001D000000INjVeIAL").as_deref(),
            Some("001D000000INjVeIAL")
        );
        assert_eq!(full_id("42"), None);
    }

    #[test]
    fn forms_are_decoded() {
        let f = form(b"grant_type=client_credentials&client_secret=a%2Bb+c");
        assert_eq!(f["grant_type"], "client_credentials");
        assert_eq!(f["client_secret"], "a+b c");
    }
}
