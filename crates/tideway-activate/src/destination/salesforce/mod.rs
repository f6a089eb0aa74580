//! Salesforce: identify and group calls written to records through the REST API (sObject
//! Collections) or, for large batches, Bulk API 2.0.
//!
//! References (Salesforce REST API Developer Guide and Bulk API 2.0 Developer Guide):
//! - Upsert: <https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html>
//!   (`PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExternalIdField}`, at most 200
//!   records, "only external ids are supported, don't use record ids").
//! - Update by Id: <https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html>
//!   (`PATCH /services/data/vXX.X/composite/sobjects`, each record with `attributes.type` and
//!   `id`).
//! - Delete: <https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-delete.html>
//!   (`DELETE /services/data/vXX.X/composite/sobjects?ids=...`) and, by external id, one
//!   <https://developer.salesforce.com/docs/platform/api-rest/guide/resources-sobject-upsert-delete.html>
//!   (`DELETE /services/data/vXX.X/sobjects/{Object}/{field}/{value}`) per record.
//! - Bulk API 2.0 ingest: create a job (`POST .../jobs/ingest`), upload CSV
//!   (`PUT .../jobs/ingest/{id}/batches`), close it (`PATCH` `{"state": "UploadComplete"}`), poll
//!   (`GET .../jobs/ingest/{id}`) until `JobComplete`, `Failed` or `Aborted`, then read
//!   `failedResults/` (`sf__Id`, `sf__Error`, then the uploaded columns; "the order of records
//!   in the response is not guaranteed", so rows are matched back by their key column).
//! - Token: the OAuth 2.0 client credentials flow, `POST {login_url}/services/oauth2/token`
//!   with `grant_type=client_credentials&client_id&client_secret`.
//!
//! | Segment message                | Salesforce                                                                  |
//! |--------------------------------|-----------------------------------------------------------------------------|
//! | `identify`                     | upsert of `object` (default Contact) keyed by `external_id_field` = `userId`  |
//! | `group`                        | upsert of `group_object` (default Account) keyed by `group_external_id_field` = `groupId` |
//! | with `context.externalId` `[{type: "Salesforce-<Object>", id, identifierType}]` | that object, keyed by `identifierType` (`Id` or an external id field) = `id` |
//! | key field `Id`                 | update by Salesforce Id (sObject Collections update, Bulk `update`)           |
//! | `Op::Update` (`mode = "update"`), keyed by an external id | the records' Ids looked up (`GET /query`, SOQL `SELECT Id, <field> FROM <Object> WHERE <field> IN (...)`, 200 values a query), then updated by Id; a value no record holds is refused, nothing is created |
//! | `Op::Insert` (a sync's `mode = "insert"`) | create (sObject Collections create, Bulk `insert`) with the external id field set; a record that holds the value already is refused (`DUPLICATE_VALUE`) |
//! | `Op::Delete`                   | delete by Id (collections), or by external id (one request each)            |
//!
//! `traits` become fields, names as written (custom fields end in `__c`); `null` clears a field.
//! Values must be strings, numbers or booleans. In Bulk CSV, `null` and `""` are written as
//! `#N/A` (Salesforce's "set to null"), and a field one record lacks is left empty (unchanged).
//! `integrations` is not read here: which events reach a destination is the sync's business.
//!
//! Events are grouped into lanes (same operation, object and key field); a lane with the same
//! record twice is sent in waves so that no call holds a record twice (later events win). A
//! lane of more than `bulk_threshold` events becomes one Bulk API 2.0 job; smaller ones go in
//! sObject Collections calls of at most 200.
//!
//! Answers: per-record errors reject that record only (`UNABLE_TO_LOCK_ROW` is retried); a
//! 400 rejects the call's records (the delivery loop splits the batch); a 401 renews the
//! token once, then rejects naming the credentials to check; `REQUEST_LIMIT_EXCEEDED` (403),
//! 429 and 5xx are retried, a used-up daily API allocation with a message that says so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value, json};
use tideway_core::Fault;
use tideway_core::config::Secret;
use tokio::sync::Mutex;

use crate::config::Mode;
use crate::destination::http::{self, Answer, Client};
use crate::destination::{BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome};

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    Auth, DEFAULT_API_VERSION, DEFAULT_BULK_THRESHOLD, DEFAULT_CONCURRENCY,
    DEFAULT_REQUESTS_PER_SECOND, EXAMPLE, SalesforceConfig, is_api_name,
};

/// The sync modes Salesforce writes records with.
pub const MODES: &[Mode] = &[Mode::Upsert, Mode::Update, Mode::Insert, Mode::Mirror];
/// Records per sObject Collections call ("The list can contain up to 200 objects").
pub const MAX_COLLECTION_RECORDS: usize = 200;
/// Events per call of the destination (one Bulk API 2.0 job at most).
pub const MAX_BULK_ROWS: usize = 10_000;
/// Bytes per call. Bulk API 2.0 takes up to 150 MB per upload (base64-encoded, so about
/// 100 MB of CSV); 10 MB keeps one job's upload and its results quick to move and retry.
pub const MAX_BULK_BYTES: usize = 10 * 1024 * 1024;
/// How long to wait after `REQUEST_LIMIT_EXCEEDED` for the daily allocation
/// (`TotalRequests`): calls are counted over a rolling 24 hours, so some free up over time.
pub const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);

/// Per-record error codes that are worth retrying.
const RETRYABLE_CODES: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "REQUEST_LIMIT_EXCEEDED",
    "SERVER_UNAVAILABLE",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "REQUEST_RUNNING_TOO_LONG",
];

/// Builds the destination named `name` (`[destinations.NAME]`) from a checked configuration
/// ([`SalesforceConfig::parse`], or [`SalesforceConfig::problems`] empty); this does not fail.
pub fn build(name: &str, config: SalesforceConfig) -> Salesforce {
    let secrets = match &config.auth {
        Auth::ClientCredentials { client_secret, .. } => vec![client_secret.expose().to_string()],
        Auth::AccessToken(token) => vec![token.expose().to_string()],
    };
    Salesforce {
        name: name.to_string(),
        base_url: config.instance_url(),
        client: Client::new(secrets),
        token: Mutex::new(None),
        config,
    }
}

/// A Salesforce destination. See the module docs.
pub struct Salesforce {
    name: String,
    config: SalesforceConfig,
    base_url: String,
    client: Client,
    /// The current access token and how many times one was issued (to renew only once when
    /// several calls see the same expired token).
    token: Mutex<Option<(Secret, u64)>>,
}

impl fmt::Debug for Salesforce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Salesforce")
            .field("name", &self.name)
            .field("instance_url", &self.base_url)
            .field("object", &self.config.object)
            .field("group_object", &self.config.group_object)
            .finish_non_exhaustive()
    }
}

/// The record an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The object's API name (`Contact`, `Account`, `Person__c`).
    pub object: String,
    /// `Id`, or the external id field the record is matched on.
    pub field: String,
    pub value: String,
}

impl Key {
    /// Whether the record is named by its Salesforce Id.
    pub fn by_id(&self) -> bool {
        self.field.eq_ignore_ascii_case("id")
    }
}

/// What one event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create or update the record (update only, when keyed by Id) with these fields.
    Upsert {
        key: Key,
        fields: Map<String, Value>,
    },
    /// Update the record whose external id field holds the key's value; create none.
    Update {
        key: Key,
        fields: Map<String, Value>,
    },
    /// Create the record, its key field set to the key's value.
    Insert {
        key: Key,
        fields: Map<String, Value>,
    },
    /// Delete the record.
    Delete { key: Key },
}

impl Write {
    pub fn key(&self) -> &Key {
        match self {
            Write::Upsert { key, .. }
            | Write::Update { key, .. }
            | Write::Insert { key, .. }
            | Write::Delete { key } => key,
        }
    }

    /// The fields written (none for a delete).
    pub fn fields(&self) -> Option<&Map<String, Value>> {
        match self {
            Write::Upsert { fields, .. }
            | Write::Update { fields, .. }
            | Write::Insert { fields, .. } => Some(fields),
            Write::Delete { .. } => None,
        }
    }

    /// The Bulk API 2.0 operation of a lane of these writes.
    fn operation(&self) -> &'static str {
        match self {
            Write::Upsert { key, .. } if key.by_id() => "update",
            Write::Update { .. } => "update",
            Write::Upsert { .. } => "upsert",
            Write::Insert { .. } => "insert",
            Write::Delete { .. } => "delete",
        }
    }
}

/// The body of a call, with its content type.
enum Body<'a> {
    None,
    Json(&'a str),
    Csv(&'a str),
}

impl Body<'_> {
    fn text(&self) -> &str {
        match self {
            Body::None => "",
            Body::Json(t) | Body::Csv(t) => t,
        }
    }
}

impl Salesforce {
    /// The configuration the destination was built with.
    pub fn config(&self) -> &SalesforceConfig {
        &self.config
    }

    /// What `event` becomes, or why it cannot be sent.
    pub fn plan(&self, event: &OutboundEvent) -> Result<Write, String> {
        plan(&self.config, event)
    }

    fn data_path(&self, rest: &str) -> String {
        format!("/services/data/{}{rest}", self.config.api_version)
    }

    // ----- auth -----

    /// The current token, getting one first if there is none.
    async fn token(&self) -> Result<(Secret, u64), DeliveryError> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref() {
            return Ok(t.clone());
        }
        let fresh = self.issue().await?;
        *token = Some((fresh, 1));
        Ok(token.clone().expect("the token was just set"))
    }

    /// A new token unless another call renewed `stale` already; `None` when tokens cannot be
    /// renewed (a given `access_token`).
    async fn renew(&self, stale: u64) -> Result<Option<(Secret, u64)>, DeliveryError> {
        if matches!(self.config.auth, Auth::AccessToken(_)) {
            return Ok(None);
        }
        let mut token = self.token.lock().await;
        if let Some((t, generation)) = token.as_ref()
            && *generation != stale
        {
            return Ok(Some((t.clone(), *generation)));
        }
        let fresh = self.issue().await?;
        *token = Some((fresh, stale + 1));
        Ok(token.clone())
    }

    /// Asks the token endpoint for a token (client credentials), or hands out the given one.
    /// The exchange is not kept by the inspector: its answer holds the token.
    async fn issue(&self) -> Result<Secret, DeliveryError> {
        let (client_id, client_secret) = match &self.config.auth {
            Auth::AccessToken(token) => return Ok(token.clone()),
            Auth::ClientCredentials {
                client_id,
                client_secret,
                ..
            } => (client_id, client_secret),
        };
        let url = format!("{}/services/oauth2/token", self.config.login_url());
        let request = self
            .client
            .request(Method::POST, &url)
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
            ]);
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer in time".to_string()
            } else if e.is_connect() {
                "cannot connect (is `login_url` or `instance_url` right and the org up?)"
                    .to_string()
            } else {
                e.without_url().to_string()
            };
            DeliveryError::external(
                None,
                format!("getting a Salesforce token from {url}: {why}"),
            )
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
        if status.is_success()
            && let Some(token) = parsed.get("access_token").and_then(Value::as_str)
        {
            return Ok(Secret::new(token));
        }
        let code = status.as_u16();
        let said = match (
            parsed.get("error").and_then(Value::as_str),
            parsed.get("error_description").and_then(Value::as_str),
        ) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(e), None) => e.to_string(),
            _ => format!("HTTP {status}"),
        };
        if status.is_server_error() || code == 429 {
            return Err(DeliveryError::external(
                Some(code),
                format!("Salesforce's token endpoint failed ({said}); retrying"),
            ));
        }
        Err(DeliveryError::refused(
            Some(code),
            format!(
                "Salesforce refused the client credentials ({said}): check `client_id` (the \
                 consumer key) and `client_secret` (the consumer secret) of an external client \
                 app with the client credentials flow enabled and a run-as user, and that \
                 {url} is the org's My Domain address (`login_url`, default `instance_url`)"
            ),
        ))
    }

    // ----- calls -----

    /// Sends a call with the current token; on a 401, renews the token once and sends it again.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Answer, DeliveryError> {
        let url = format!("{}{path}", self.base_url);
        let (token, generation) = self.token().await?;
        let answer = self.send(&method, &url, &body, &token).await?;
        if answer.status.as_u16() != 401 {
            return Ok(answer);
        }
        match self.renew(generation).await? {
            Some((token, _)) => self.send(&method, &url, &body, &token).await,
            None => Ok(answer),
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        body: &Body<'_>,
        token: &Secret,
    ) -> Result<Answer, DeliveryError> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(ACCEPT, "application/json");
        request = match body {
            Body::None => request,
            Body::Json(text) => request
                .header(CONTENT_TYPE, "application/json")
                .body(text.to_string()),
            Body::Csv(text) => request
                .header(CONTENT_TYPE, "text/csv")
                .body(text.to_string()),
        };
        self.client.send(request, body.text()).await
    }

    /// The outcome of a call that failed as a whole, or `None` for a 2xx answer.
    fn failure(&self, answer: &Answer) -> Option<Outcome> {
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return None;
        }
        let errors = api_errors(&answer.body);
        let code = errors.first().map(|(c, _)| c.as_str()).unwrap_or("");
        let said = if errors.is_empty() {
            answer.message()
        } else {
            errors
                .iter()
                .map(|(c, m)| format!("{c}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Some(match (status, code) {
            (401, _) => Outcome::Rejected(DeliveryError::refused(
                Some(status),
                self.credentials_message(&said),
            )),
            (403, "REQUEST_LIMIT_EXCEEDED") => {
                let daily = said.contains("TotalRequests");
                let message = if daily {
                    format!(
                        "the org's daily Salesforce API allocation is used up ({said}); calls are \
                         counted over a rolling 24 hours, so this retries later; see Setup > \
                         System Overview > API Requests, or buy more calls"
                    )
                } else {
                    format!(
                        "Salesforce is limiting concurrent calls ({said}); lower `concurrency` \
                         if this persists"
                    )
                };
                Outcome::Retry {
                    after: http::retry_after(&answer.headers).or(daily.then_some(DAILY_LIMIT_WAIT)),
                    error: DeliveryError::external(Some(status), message),
                }
            }
            (403, _) => Outcome::Rejected(DeliveryError::refused(
                Some(status),
                format!(
                    "Salesforce refused the call ({said}): the integration user needs API access \
                     and permission to edit the object"
                ),
            )),
            (404, _) => Outcome::Rejected(DeliveryError::refused(
                Some(status),
                format!(
                    "Salesforce has no such resource ({said}): check `object`, `group_object`, \
                     the external id fields and `api_version`"
                ),
            )),
            (400, _) => Outcome::Rejected(DeliveryError::refused(
                Some(status),
                format!("Salesforce refused the call ({said})"),
            )),
            _ => match answer.outcome() {
                Outcome::Retry { after, .. } => Outcome::Retry {
                    after,
                    error: DeliveryError::external(Some(status), format!("Salesforce: {said}")),
                },
                Outcome::Rejected(_) => Outcome::Rejected(DeliveryError::refused(
                    Some(status),
                    format!("Salesforce refused the call ({said})"),
                )),
                Outcome::Delivered => Outcome::Delivered,
            },
        })
    }

    fn credentials_message(&self, said: &str) -> String {
        match &self.config.auth {
            Auth::ClientCredentials { .. } => format!(
                "Salesforce refused the access token even after renewing it ({said}): check that \
                 `client_id` and `client_secret` belong to an external client app of the org at \
                 `instance_url` with the client credentials flow enabled and a run-as user"
            ),
            Auth::AccessToken(_) => format!(
                "Salesforce refused `access_token` ({said}): it expired or was revoked, and a \
                 given token cannot be renewed; get a new one, or set `client_id` and \
                 `client_secret` instead"
            ),
        }
    }

    // ----- sObject Collections -----

    /// Upserts (or updates, keyed by Id) at most 200 records of one lane.
    async fn collection_write(&self, writes: &[&Write]) -> Vec<Outcome> {
        let n = writes.len();
        let key = writes[0].key();
        let (path, body) = if key.by_id() {
            (
                self.data_path("/composite/sobjects"),
                collection_update_body(writes),
            )
        } else {
            (
                self.data_path(&format!("/composite/sobjects/{}/{}", key.object, key.field)),
                collection_upsert_body(writes),
            )
        };
        let body = body.to_string();
        match self.call(Method::PATCH, &path, Body::Json(&body)).await {
            Ok(answer) => self
                .failure(&answer)
                .map(|o| o.all(n))
                .unwrap_or_else(|| record_outcomes(&answer, writes, false)),
            Err(error) => failed(error).all(n),
        }
    }

    /// Updates the records a lane names by external id: their Ids are looked up, 200 values a
    /// query, then the records found are updated by Id (Bulk API 2.0 past `bulk_threshold`);
    /// a value no record holds, or several do, is refused.
    async fn update_by_external_id(&self, writes: &[&Write]) -> Vec<Outcome> {
        let key = writes[0].key();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
        let mut found: Vec<(usize, Write)> = Vec::new();
        for (c, chunk) in writes.chunks(MAX_COLLECTION_RECORDS).enumerate() {
            let values: Vec<&str> = chunk.iter().map(|w| w.key().value.as_str()).collect();
            let ids = self.lookup_ids(&key.object, &key.field, &values).await;
            for (k, write) in chunk.iter().enumerate() {
                let at = c * MAX_COLLECTION_RECORDS + k;
                let value = &write.key().value;
                let refuse = |message: String| {
                    Some(Outcome::Rejected(DeliveryError::refused(None, message)))
                };
                outcomes[at] = match ids.as_ref().map(|ids| ids.get(value)) {
                    Err(outcome) => Some(outcome.clone()),
                    Ok(None) => refuse(format!(
                        "no Salesforce {} has {} `{value}`; `mode = \"update\"` creates no record",
                        key.object, key.field
                    )),
                    Ok(Some(ids)) if ids.len() > 1 => refuse(format!(
                        "{} Salesforce {}s have {} `{value}` ({}); an update names one record",
                        ids.len(),
                        key.object,
                        key.field,
                        ids.join(", ")
                    )),
                    Ok(Some(ids)) => {
                        let by_id = Key {
                            object: key.object.clone(),
                            field: "Id".to_string(),
                            value: ids[0].clone(),
                        };
                        let fields = write.fields().cloned().unwrap_or_default();
                        found.push((at, Write::Upsert { key: by_id, fields }));
                        None
                    }
                };
            }
        }
        let lane: Vec<&Write> = found.iter().map(|(_, w)| w).collect();
        let results = if lane.len() > self.config.bulk_threshold {
            self.bulk_write(&lane).await
        } else {
            let mut results = Vec::with_capacity(lane.len());
            for chunk in lane.chunks(MAX_COLLECTION_RECORDS) {
                results.extend(self.collection_write(chunk).await);
            }
            results
        };
        for ((at, _), outcome) in found.iter().zip(results) {
            outcomes[*at] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every write was refused, failed or sent"))
            .collect()
    }

    /// The Ids of the `object` records whose `field` holds each of `values` (SOQL through
    /// `GET /query`, following `nextRecordsUrl`).
    async fn lookup_ids(
        &self,
        object: &str,
        field: &str,
        values: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, Outcome> {
        let list: Vec<String> = values.iter().map(|v| soql_string(v)).collect();
        let soql = format!(
            "SELECT Id, {field} FROM {object} WHERE {field} IN ({})",
            list.join(", ")
        );
        let mut path = self.data_path(&format!("/query?q={}", segment(&soql)));
        let mut ids: HashMap<String, Vec<String>> = HashMap::new();
        loop {
            let answer = self
                .call(Method::GET, &path, Body::None)
                .await
                .map_err(failed)?;
            if let Some(outcome) = self.failure(&answer) {
                return Err(outcome);
            }
            let page: Value = serde_json::from_str(&answer.body).map_err(|e| {
                failed(DeliveryError::external(
                    Some(answer.status.as_u16()),
                    format!("Salesforce answered a query with no JSON: {e}"),
                ))
            })?;
            for record in page["records"].as_array().into_iter().flatten() {
                let value = record
                    .as_object()
                    .and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)))
                    .map(|(_, v)| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                if let (Some(value), Some(id)) = (value, record["Id"].as_str()) {
                    ids.entry(value).or_default().push(id.to_string());
                }
            }
            match page["nextRecordsUrl"].as_str() {
                Some(next) if page["done"] == false => path = next.to_string(),
                _ => return Ok(ids),
            }
        }
    }

    /// Creates at most 200 records of one lane (`POST /composite/sobjects`).
    async fn collection_create(&self, writes: &[&Write]) -> Vec<Outcome> {
        let n = writes.len();
        let body = collection_upsert_body(writes).to_string();
        let path = self.data_path("/composite/sobjects");
        match self.call(Method::POST, &path, Body::Json(&body)).await {
            Ok(answer) => self
                .failure(&answer)
                .map(|o| o.all(n))
                .unwrap_or_else(|| record_outcomes(&answer, writes, false)),
            Err(error) => failed(error).all(n),
        }
    }

    /// Deletes at most 200 records by Id.
    async fn collection_delete(&self, writes: &[&Write]) -> Vec<Outcome> {
        let ids = writes
            .iter()
            .map(|w| w.key().value.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let path = self.data_path(&format!("/composite/sobjects?ids={ids}&allOrNone=false"));
        match self.call(Method::DELETE, &path, Body::None).await {
            Ok(answer) => self
                .failure(&answer)
                .map(|o| o.all(writes.len()))
                .unwrap_or_else(|| record_outcomes(&answer, writes, true)),
            Err(error) => failed(error).all(writes.len()),
        }
    }

    /// Deletes one record by external id (`DELETE /sobjects/{Object}/{field}/{value}`).
    async fn delete_by_external_id(&self, key: &Key) -> Outcome {
        let path = self.data_path(&format!(
            "/sobjects/{}/{}/{}",
            key.object,
            key.field,
            segment(&key.value)
        ));
        match self.call(Method::DELETE, &path, Body::None).await {
            // Already gone: the record is absent, which is what a delete asks for.
            Ok(answer) if answer.status.as_u16() == 404 => Outcome::Delivered,
            Ok(answer) => self.failure(&answer).unwrap_or(Outcome::Delivered),
            Err(error) => failed(error),
        }
    }

    // ----- Bulk API 2.0 -----

    /// Upserts (or updates) one lane's records as one Bulk API 2.0 job.
    async fn bulk_write(&self, writes: &[&Write]) -> Vec<Outcome> {
        let n = writes.len();
        let job_body = bulk_job_body(writes[0]).to_string();
        let created = match self
            .call(
                Method::POST,
                &self.data_path("/jobs/ingest"),
                Body::Json(&job_body),
            )
            .await
        {
            Ok(answer) => match self.failure(&answer) {
                Some(outcome) => return outcome.all(n),
                None => answer,
            },
            Err(error) => return failed(error).all(n),
        };
        let Some(id) = serde_json::from_str::<Value>(&created.body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        else {
            return Outcome::Retry {
                after: None,
                error: DeliveryError::external(
                    Some(created.status.as_u16()),
                    format!(
                        "Salesforce created a bulk job but named no id: {}",
                        created.message()
                    ),
                ),
            }
            .all(n);
        };
        let job = self.data_path(&format!("/jobs/ingest/{id}"));
        let csv = bulk_csv(writes);
        let steps = [
            (Method::PUT, format!("{job}/batches"), Body::Csv(&csv)),
            (
                Method::PATCH,
                job.clone(),
                Body::Json(r#"{"state":"UploadComplete"}"#),
            ),
        ];
        for (method, path, body) in steps {
            let outcome = match self.call(method, &path, body).await {
                Ok(answer) => self.failure(&answer),
                Err(error) => Some(failed(error)),
            };
            if let Some(outcome) = outcome {
                self.abort(&job).await;
                return outcome.all(n);
            }
        }
        let info = match self.wait(&job).await {
            Ok(info) => info,
            Err(outcome) => return outcome.all(n),
        };
        let text = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or("");
        let count = |k: &str| info.get(k).and_then(Value::as_u64).unwrap_or(0);
        match text("state") {
            "JobComplete" => {}
            "Aborted" => {
                return Outcome::Retry {
                    after: None,
                    error: DeliveryError::external(
                        None,
                        format!("bulk job {id} was aborted in Salesforce before it finished"),
                    ),
                }
                .all(n);
            }
            _ => {
                let message = text("errorMessage");
                let error = format!("Salesforce bulk job {id} failed: {message}");
                let refused = [
                    "InvalidBatch",
                    "ClientInputError",
                    "Field name not found",
                    "InvalidJob",
                ]
                .iter()
                .any(|m| message.contains(m));
                return if refused {
                    Outcome::Rejected(DeliveryError::refused(None, error)).all(n)
                } else {
                    Outcome::Retry {
                        after: None,
                        error: DeliveryError::external(None, error),
                    }
                    .all(n)
                };
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut rows = RowIndex::new(writes);
        if count("numberRecordsFailed") > 0 {
            match self.results(&job, "failedResults").await {
                Ok(failed_rows) => {
                    for row in failed_rows {
                        let Some(i) = rows.take(&row.key) else {
                            continue;
                        };
                        let (code, message) = split_bulk_error(&row.error);
                        outcomes[i] =
                            Some(error_outcome(writes[i].key(), &code, &message, &[], false));
                    }
                }
                Err(outcome) => return outcome.all(n),
            }
        }
        let unsure = (count("numberRecordsProcessed") as usize) < n;
        if unsure {
            // Some rows were not processed: only those Salesforce lists as successful count.
            match self.results(&job, "successfulResults").await {
                Ok(ok_rows) => {
                    for row in ok_rows {
                        if let Some(i) = rows.take(&row.key) {
                            outcomes[i] = Some(Outcome::Delivered);
                        }
                    }
                }
                Err(outcome) => return outcome.all(n),
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    if unsure {
                        Outcome::Retry {
                            after: None,
                            error: DeliveryError::external(
                                None,
                                format!("bulk job {id} did not process this record"),
                            ),
                        }
                    } else {
                        Outcome::Delivered
                    }
                })
            })
            .collect()
    }

    /// Polls the job until it is in a final state; on timeout aborts it.
    async fn wait(&self, job: &str) -> Result<Value, Outcome> {
        let start = Instant::now();
        loop {
            tokio::time::sleep(self.config.bulk_poll).await;
            let answer = self
                .call(Method::GET, job, Body::None)
                .await
                .map_err(failed)?;
            if let Some(outcome) = self.failure(&answer) {
                return Err(outcome);
            }
            let info: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
            let state = info.get("state").and_then(Value::as_str).unwrap_or("");
            if matches!(state, "JobComplete" | "Failed" | "Aborted") {
                return Ok(info);
            }
            if start.elapsed() >= self.config.bulk_timeout {
                self.abort(job).await;
                return Err(Outcome::Retry {
                    after: None,
                    error: DeliveryError::external(
                        None,
                        format!(
                            "the Salesforce bulk job was still `{state}` after {}s \
                             (`bulk_timeout_seconds`); it was aborted",
                            self.config.bulk_timeout.as_secs()
                        ),
                    ),
                });
            }
        }
    }

    /// Best effort: the job's events get their outcome whatever this answers.
    async fn abort(&self, job: &str) {
        let _ = self
            .call(Method::PATCH, job, Body::Json(r#"{"state":"Aborted"}"#))
            .await;
    }

    async fn results(&self, job: &str, which: &str) -> Result<Vec<ResultRow>, Outcome> {
        let answer = self
            .call(Method::GET, &format!("{job}/{which}/"), Body::None)
            .await
            .map_err(failed)?;
        if let Some(outcome) = self.failure(&answer) {
            return Err(outcome);
        }
        parse_results(&answer.body).map_err(|e| Outcome::Retry {
            after: None,
            error: DeliveryError::external(
                None,
                format!("cannot read the bulk job's {which}: {e}"),
            ),
        })
    }
}

#[async_trait]
impl Destination for Salesforce {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "salesforce"
    }

    /// Gets a token and reads `GET /services/data/vXX.X/limits` (changes nothing); fails when
    /// the org's daily API allocation is used up.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let answer = self
            .call(Method::GET, &self.data_path("/limits"), Body::None)
            .await?;
        if let Some(Outcome::Rejected(error) | Outcome::Retry { error, .. }) = self.failure(&answer)
        {
            return Err(error);
        }
        let limits: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        let daily = limits.get("DailyApiRequests");
        let number = |k: &str| daily.and_then(|d| d.get(k)).and_then(Value::as_u64);
        if let (Some(0), Some(max)) = (number("Remaining"), number("Max")) {
            return Err(DeliveryError::external(
                Some(answer.status.as_u16()),
                format!(
                    "the org's daily Salesforce API allocation ({max} calls per rolling 24 hours) \
                     is used up; calls will fail until some free up"
                ),
            ));
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut writes = Vec::new();
        for (i, event) in batch.iter().enumerate() {
            match self.plan(event) {
                Ok(write) => writes.push((i, write)),
                Err(message) => {
                    outcomes[i] = Some(Outcome::Rejected(DeliveryError::refused(None, message)));
                }
            }
        }
        for wave in lanes(&writes) {
            let lane: Vec<&Write> = wave.iter().map(|&k| &writes[k].1).collect();
            let positions: Vec<usize> = wave.iter().map(|&k| writes[k].0).collect();
            let results = match lane[0] {
                Write::Upsert { .. } | Write::Insert { .. }
                    if lane.len() > self.config.bulk_threshold =>
                {
                    self.bulk_write(&lane).await
                }
                Write::Update { .. } => self.update_by_external_id(&lane).await,
                Write::Insert { .. } => {
                    let mut results = Vec::with_capacity(lane.len());
                    for chunk in lane.chunks(MAX_COLLECTION_RECORDS) {
                        results.extend(self.collection_create(chunk).await);
                    }
                    results
                }
                Write::Upsert { .. } => {
                    let mut results = Vec::with_capacity(lane.len());
                    for chunk in lane.chunks(MAX_COLLECTION_RECORDS) {
                        results.extend(self.collection_write(chunk).await);
                    }
                    results
                }
                Write::Delete { key } if key.by_id() => {
                    let mut results = Vec::with_capacity(lane.len());
                    for chunk in lane.chunks(MAX_COLLECTION_RECORDS) {
                        results.extend(self.collection_delete(chunk).await);
                    }
                    results
                }
                Write::Delete { .. } => {
                    let mut results = Vec::with_capacity(lane.len());
                    for write in &lane {
                        results.push(self.delete_by_external_id(write.key()).await);
                    }
                    results
                }
            };
            for (k, outcome) in results.into_iter().enumerate() {
                outcomes[positions[k]] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("deliver gives every event an outcome: planned, then sent"))
            .collect()
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: MAX_BULK_ROWS,
            max_bytes: MAX_BULK_BYTES,
            requests_per_second: Some(self.config.requests_per_second),
            rate_window: None,
            concurrency: self.config.concurrency.max(1),
        }
    }

    fn inspect(&self) -> Vec<http::Exchange> {
        self.client.exchanges()
    }
}

fn failed(error: DeliveryError) -> Outcome {
    match error.fault {
        Fault::User => Outcome::Rejected(error),
        _ => Outcome::Retry { after: None, error },
    }
}

// ----- mapping -----

/// What `event` becomes under `config`; `Err` says why it cannot be sent.
pub fn plan(config: &SalesforceConfig, event: &OutboundEvent) -> Result<Write, String> {
    let (object, field, id_key) = match event.kind() {
        "identify" => (&config.object, &config.external_id_field, "userId"),
        "group" => (
            &config.group_object,
            &config.group_external_id_field,
            "groupId",
        ),
        "" => return Err("the event has no `type`; Salesforce takes identify and group".into()),
        other => {
            return Err(format!(
                "a `{other}` call is not sent to Salesforce, which takes identify (a {}) and \
                 group (an {})",
                config.object, config.group_object
            ));
        }
    };
    let key = match external_id(event, object)? {
        Some(key) => key,
        None => Key {
            object: object.clone(),
            field: field.clone(),
            value: event.id_field(id_key).ok_or_else(|| {
                format!(
                    "a {} needs a `{id_key}` (or a `context.externalId` of type \
                     `Salesforce-{object}`) to name the Salesforce {object}",
                    event.kind()
                )
            })?,
        },
    };
    if key.by_id() && !is_salesforce_id(&key.value) {
        return Err(format!(
            "`{}` is not a Salesforce {} Id (15 or 18 letters and digits); to match records on \
             your own ids, set `{}` to an external id field such as `External_Id__c`",
            key.value,
            key.object,
            if event.kind() == "group" {
                "group_external_id_field"
            } else {
                "external_id_field"
            }
        ));
    }
    match event.op {
        Op::Delete => return Ok(Write::Delete { key }),
        Op::Insert if key.by_id() => {
            return Err(format!(
                "`mode = \"insert\"` creates records, and `{}` names an existing {} by its Id; \
                 name new records by an external id field (`external_id_field`)",
                key.value, key.object
            ));
        }
        Op::Upsert | Op::Insert | Op::Update => {}
    }
    let mut fields = match event.event.get("traits") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("`traits` must be an object".to_string()),
    };
    // The key is set from the id; a trait of the same name would contradict it.
    fields.retain(|name, _| {
        !name.eq_ignore_ascii_case(&key.field) && !name.eq_ignore_ascii_case("id")
    });
    for (name, value) in &fields {
        if name == "attributes" || !is_api_name(name) {
            return Err(format!(
                "trait `{name}` is not a Salesforce field name (letters, digits and underscores, \
                 starting with a letter; custom fields end in `__c`)"
            ));
        }
        if value.is_object() || value.is_array() {
            return Err(format!(
                "trait `{name}` is {}; Salesforce fields take a string, number, boolean or null \
                 (a multi-select picklist is one string, values separated by `;`)",
                if value.is_object() {
                    "an object"
                } else {
                    "an array"
                }
            ));
        }
    }
    Ok(match event.op {
        Op::Insert => Write::Insert { key, fields },
        // By Id, an upsert is an update already (Salesforce upserts by external id only).
        Op::Update if !key.by_id() => Write::Update { key, fields },
        _ => Write::Upsert { key, fields },
    })
}

/// The record named by `context.externalId` (`[{type: "Salesforce-<Object>", id,
/// identifierType}]`), preferring an entry for `object`.
fn external_id(event: &OutboundEvent, object: &str) -> Result<Option<Key>, String> {
    let Some(entries) = event
        .event
        .pointer("/context/externalId")
        .and_then(Value::as_array)
    else {
        return Ok(None);
    };
    let salesforce: Vec<(&str, &Value)> = entries
        .iter()
        .filter_map(|e| {
            let kind = e.get("type")?.as_str()?;
            let prefix = kind.get(..11)?;
            prefix
                .eq_ignore_ascii_case("salesforce-")
                .then(|| (&kind[11..], e))
        })
        .collect();
    let Some(&(entry_object, entry)) = salesforce
        .iter()
        .find(|(o, _)| *o == object)
        .or(salesforce.first())
    else {
        return Ok(None);
    };
    let value = match entry.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(format!(
                "`context.externalId` of type `Salesforce-{entry_object}` has no `id`"
            ));
        }
    };
    let field = entry
        .get("identifierType")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("Id");
    for (what, name) in [("object", entry_object), ("identifierType", field)] {
        if !is_api_name(name) {
            return Err(format!(
                "`context.externalId` {what} `{name}` is not a Salesforce API name"
            ));
        }
    }
    Ok(Some(Key {
        object: entry_object.to_string(),
        field: if field.eq_ignore_ascii_case("id") {
            "Id".to_string()
        } else {
            field.to_string()
        },
        value,
    }))
}

/// Whether `text` looks like a Salesforce record Id: 15 or 18 letters and digits.
pub fn is_salesforce_id(text: &str) -> bool {
    matches!(text.len(), 15 | 18) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Groups writes (given with their batch position) into lanes of one operation, object and
/// key field, then into waves in which no record appears twice; returns indexes into
/// `writes`, each lane-wave in batch order.
fn lanes(writes: &[(usize, Write)]) -> Vec<Vec<usize>> {
    // (Bulk operation, object, key field) and the writes of that lane.
    type Lane<'a> = (&'a str, String, String);
    let mut lanes: Vec<(Lane, Vec<usize>)> = Vec::new();
    for (k, (_, write)) in writes.iter().enumerate() {
        let key = write.key();
        let lane = (write.operation(), key.object.clone(), key.field.clone());
        match lanes.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, members)) => members.push(k),
            None => lanes.push((lane, vec![k])),
        }
    }
    let mut out = Vec::new();
    for (_, members) in lanes {
        let mut waves: Vec<(HashSet<&str>, Vec<usize>)> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for k in members {
            let value = writes[k].1.key().value.as_str();
            let wave = seen.get(value).map_or(0, |w| w + 1);
            seen.insert(value, wave);
            if waves.len() <= wave {
                waves.push((HashSet::new(), Vec::new()));
            }
            waves[wave].0.insert(value);
            waves[wave].1.push(k);
        }
        out.extend(waves.into_iter().map(|(_, w)| w));
    }
    out
}

// ----- bodies -----

/// `{"allOrNone": false, "records": [{"attributes": {"type"}, <ExternalIdField>: value, ...}]}`
/// for `PATCH /composite/sobjects/{Object}/{ExternalIdField}`.
pub fn collection_upsert_body(writes: &[&Write]) -> Value {
    let records = writes
        .iter()
        .map(|w| {
            let key = w.key();
            let mut record = Map::new();
            record.insert("attributes".into(), json!({ "type": key.object }));
            record.insert(key.field.clone(), Value::String(key.value.clone()));
            if let Some(fields) = w.fields() {
                record.extend(fields.clone());
            }
            Value::Object(record)
        })
        .collect::<Vec<_>>();
    json!({ "allOrNone": false, "records": records })
}

/// `{"allOrNone": false, "records": [{"attributes": {"type"}, "id", ...}]}` for
/// `PATCH /composite/sobjects`.
pub fn collection_update_body(writes: &[&Write]) -> Value {
    let records = writes
        .iter()
        .map(|w| {
            let key = w.key();
            let mut record = Map::new();
            record.insert("attributes".into(), json!({ "type": key.object }));
            record.insert("id".into(), Value::String(key.value.clone()));
            if let Some(fields) = w.fields() {
                record.extend(fields.clone());
            }
            Value::Object(record)
        })
        .collect::<Vec<_>>();
    json!({ "allOrNone": false, "records": records })
}

/// The Bulk API 2.0 create-job body of a lane of writes like `write`: `upsert` on an external
/// id field, `update` by Id, or `insert`.
pub fn bulk_job_body(write: &Write) -> Value {
    let key = write.key();
    if key.by_id() || matches!(write, Write::Insert { .. }) {
        json!({
            "object": key.object,
            "contentType": "CSV",
            "operation": write.operation(),
            "lineEnding": "LF",
        })
    } else {
        json!({
            "object": key.object,
            "externalIdFieldName": key.field,
            "contentType": "CSV",
            "operation": "upsert",
            "lineEnding": "LF",
        })
    }
}

/// The CSV of a bulk job: the key column first, then every field any record has, sorted
/// (case-insensitively); LF line endings; `null` and `""` as `#N/A` (set to null); a field a record
/// lacks is empty (left unchanged).
pub fn bulk_csv(writes: &[&Write]) -> String {
    let key_column = writes.first().map_or("Id", |w| {
        if w.key().by_id() {
            "Id"
        } else {
            w.key().field.as_str()
        }
    });
    let mut names: Vec<&str> = Vec::new();
    for write in writes {
        if let Some(fields) = write.fields() {
            names.extend(fields.keys().map(String::as_str));
        }
    }
    // Sorted, so the columns do not depend on how a JSON map orders its keys.
    names.sort_by(|a, b| {
        a.to_ascii_lowercase()
            .cmp(&b.to_ascii_lowercase())
            .then(a.cmp(b))
    });
    names.dedup();
    let mut columns: Vec<&str> = vec![key_column];
    columns.extend(names);
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let written = out.write_record(&columns).and_then(|_| {
        writes.iter().try_for_each(|write| {
            let empty = Map::new();
            let fields = write.fields().unwrap_or(&empty);
            let mut row = vec![write.key().value.clone()];
            row.extend(columns[1..].iter().map(|c| match fields.get(*c) {
                None => String::new(),
                Some(Value::Null) => "#N/A".to_string(),
                Some(Value::String(s)) if s.is_empty() => "#N/A".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }));
            out.write_record(&row)
        })
    });
    written.expect("writing CSV into memory does not fail");
    let bytes = out
        .into_inner()
        .expect("flushing CSV into memory does not fail");
    String::from_utf8(bytes).expect("the CSV is made of UTF-8 strings")
}

// ----- answers -----

/// The `[{"errorCode", "message"}]` of a REST error answer.
fn api_errors(body: &str) -> Vec<(String, String)> {
    let Ok(Value::Array(errors)) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    errors
        .iter()
        .filter_map(|e| {
            let code = e.get("errorCode")?.as_str()?.to_string();
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Some((code, message))
        })
        .collect()
}

/// One outcome per record of a 200 sObject Collections answer (a list of SaveResult,
/// UpsertResult or DeleteResult in request order). For deletes, `ENTITY_IS_DELETED` counts as
/// done.
fn record_outcomes(answer: &Answer, writes: &[&Write], delete: bool) -> Vec<Outcome> {
    let results = match serde_json::from_str::<Value>(&answer.body) {
        Ok(Value::Array(results)) => results,
        _ => {
            return Outcome::Retry {
                after: None,
                error: DeliveryError::external(
                    Some(answer.status.as_u16()),
                    format!(
                        "Salesforce answered no list of results: {}",
                        answer.message()
                    ),
                ),
            }
            .all(writes.len());
        }
    };
    writes
        .iter()
        .enumerate()
        .map(|(i, write)| {
            let Some(result) = results.get(i) else {
                return Outcome::Retry {
                    after: None,
                    error: DeliveryError::external(
                        Some(answer.status.as_u16()),
                        format!(
                            "Salesforce answered {} results for {} records",
                            results.len(),
                            writes.len()
                        ),
                    ),
                };
            };
            if result.get("success").and_then(Value::as_bool) == Some(true) {
                return Outcome::Delivered;
            }
            let error = result
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .cloned()
                .unwrap_or(Value::Null);
            let code = error
                .get("statusCode")
                .and_then(Value::as_str)
                .unwrap_or("UNKNOWN");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let fields: Vec<&str> = error
                .get("fields")
                .and_then(Value::as_array)
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            error_outcome(write.key(), code, message, &fields, delete)
        })
        .collect()
}

/// The outcome of a record-level error.
fn error_outcome(key: &Key, code: &str, message: &str, fields: &[&str], delete: bool) -> Outcome {
    if delete && code == "ENTITY_IS_DELETED" {
        return Outcome::Delivered;
    }
    let mut text = format!(
        "Salesforce refused the {} with {} `{}`: {code}",
        key.object, key.field, key.value
    );
    if !message.is_empty() {
        text.push_str(&format!(": {message}"));
    }
    if !fields.is_empty() {
        text.push_str(&format!(" (fields: {})", fields.join(", ")));
    }
    if RETRYABLE_CODES.contains(&code) {
        Outcome::Retry {
            after: None,
            error: DeliveryError::external(None, text),
        }
    } else {
        Outcome::Rejected(DeliveryError::refused(None, text))
    }
}

/// `("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]:LastName --")` of an
/// `sf__Error` value.
fn split_bulk_error(error: &str) -> (String, String) {
    match error.split_once(':') {
        Some((code, message))
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            (code.to_string(), message.trim().to_string())
        }
        _ => ("BULK_ERROR".to_string(), error.trim().to_string()),
    }
}

/// A row of `failedResults/` or `successfulResults/`: the key column's value and `sf__Error`.
#[derive(Debug, Clone, PartialEq)]
struct ResultRow {
    key: String,
    error: String,
}

/// The rows of a results CSV. The key column is the first uploaded column, the one after the
/// `sf__` columns.
fn parse_results(text: &str) -> Result<Vec<ResultRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let key = headers
        .iter()
        .position(|h| !h.starts_with("sf__"))
        .ok_or_else(|| "it has no uploaded columns".to_string())?;
    let error = headers.iter().position(|h| h == "sf__Error");
    reader
        .records()
        .map(|row| {
            let row = row.map_err(|e| e.to_string())?;
            Ok(ResultRow {
                key: row.get(key).unwrap_or("").to_string(),
                error: error.and_then(|i| row.get(i)).unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Finds the write a result row is about, each write at most once.
struct RowIndex {
    by_key: BTreeMap<String, Vec<usize>>,
}

impl RowIndex {
    fn new(writes: &[&Write]) -> Self {
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, w) in writes.iter().enumerate().rev() {
            by_key.entry(w.key().value.clone()).or_default().push(i);
        }
        RowIndex { by_key }
    }

    fn take(&mut self, key: &str) -> Option<usize> {
        self.by_key.get_mut(key)?.pop()
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
/// `text` as a SOQL string literal: quoted, with `\` and `'` escaped.
fn soql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
