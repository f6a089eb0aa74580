//! Customer.io: people, events and objects through the Track API.
//!
//! Reference: the Track API's OpenAPI document (<https://docs.customer.io/api/track/>,
//! `journeys-track.json`). Authentication is HTTP Basic with `site_id:api_key`.
//!
//! | Segment message                     | v2 (`POST /api/v2/batch` item)                  | v1 request                                   |
//! |-------------------------------------|-------------------------------------------------|----------------------------------------------|
//! | `identify`                          | `person` / `identify`, `attributes` = traits    | `PUT /api/v1/customers/{id}`, body = traits   |
//! | `track`                             | `person` / `event`, `name`, `attributes`        | `POST /api/v1/customers/{id}/events`, `data`  |
//! | `page`, `screen`                    | `person` / `page`, `screen`                     | the same, with `"type": "page"` / `"screen"`  |
//! | `track`/`page`/`screen`, anonymous  | `POST /api/v1/events` with `anonymous_id`       | the same                                     |
//! | `group`                             | `object` / `identify` + relationship to userId  | relationship only (no object attributes)     |
//! | any, `Op::Delete`                   | `person` / `delete` (`object` / `delete` for a group) | `DELETE /api/v1/customers/{id}`        |
//!
//! The person is `userId` (`identifiers.id`), or `traits.email` when there is no `userId`.
//! Timestamps become Unix seconds. `traits.createdAt` becomes `created_at`. A `messageId`
//! becomes the event's dedupe `id`: Customer.io wants a ULID there, so a `messageId` that is
//! not one is turned into a ULID made of the event time and a hash of the `messageId` (the same
//! message always gets the same ULID, so a retried event is dropped as a duplicate).
//!
//! The v2 Track API has no anonymous person events, so anonymous events go to the v1
//! `POST /api/v1/events` in both modes, one request each. `alias` is not sent: Customer.io's
//! counterpart (`merge`) deletes the secondary person, which a sync must not do implicitly.
//!
//! Answers: a v2 batch answered 207 (or 200) with `{"errors": [{"batch_index", "reason",
//! "field", "message"}]}` rejects the listed items and delivers the others; 400 rejects the
//! whole batch (the delivery loop splits it); 401 names the credentials to check; 429, 408 and
//! 5xx are retried, honoring `Retry-After`.

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value, json};
use tideway_core::config::Secret;

use crate::destination::http::{self, Answer, Client};
use crate::destination::{BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome};

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    ApiVersion, CustomerIoConfig, DEFAULT_OBJECT_TYPE_ID, DEFAULT_REQUESTS_PER_SECOND, EXAMPLE,
    Region,
};

/// Items per v2 batch request.
pub const MAX_BATCH_ITEMS: usize = 100;
/// Bytes per v2 batch request: "Your batch request must be smaller than 500kb".
pub const MAX_BATCH_BYTES: usize = 500_000;
/// Bytes per item of a v2 batch: "Each of the requests within the batch must also be 32kb or
/// smaller".
pub const MAX_ITEM_BYTES: usize = 32_000;
/// Bytes of one v1 event's data ("Event Data: 100000 bytes").
pub const MAX_V1_EVENT_BYTES: usize = 100_000;

/// Builds the destination named `name` (`[destinations.NAME]`) from a checked configuration
/// ([`CustomerIoConfig::parse`], or [`CustomerIoConfig::problems`] empty); this does not fail.
pub fn build(name: &str, config: CustomerIoConfig) -> CustomerIo {
    let credentials = format!("{}:{}", config.site_id, config.api_key.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let client = Client::new(vec![config.api_key.expose().to_string(), encoded.clone()]);
    CustomerIo {
        name: name.to_string(),
        base_url: config.base_url(),
        authorization: Secret::new(format!("Basic {encoded}")),
        client,
        config,
    }
}

/// A Customer.io destination. See the module docs.
pub struct CustomerIo {
    name: String,
    config: CustomerIoConfig,
    base_url: String,
    /// `Basic base64(site_id:api_key)`.
    authorization: Secret,
    client: Client,
}

impl fmt::Debug for CustomerIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerIo")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api", &self.config.api)
            .field("site_id", &self.config.site_id)
            .finish_non_exhaustive()
    }
}

/// What one event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// An item of a v2 batch (`POST /api/v2/batch`).
    Item(Value),
    /// One request of its own (v1), `path` percent-encoded.
    Request {
        method: Method,
        path: String,
        body: Option<Value>,
    },
}

impl CustomerIo {
    /// The configuration the destination was built with.
    pub fn config(&self) -> &CustomerIoConfig {
        &self.config
    }

    /// What `event` becomes, or why it cannot be sent (the message names the missing or bad
    /// field).
    pub fn plan(&self, event: &OutboundEvent) -> Result<Call, String> {
        plan(self.config.api, &self.config.object_type_id, event)
    }

    fn request(&self, method: Method, path: &str, body: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base_url);
        let request = self
            .client
            .request(method, &url)
            .header(AUTHORIZATION, self.authorization.expose());
        if body.is_empty() {
            request
        } else {
            request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string())
        }
    }

    async fn send_batch(&self, items: Vec<Value>) -> Vec<Outcome> {
        let n = items.len();
        let body = json!({ "batch": items }).to_string();
        let request = self.request(Method::POST, "/api/v2/batch", &body);
        match self.client.send(request, &body).await {
            Ok(answer) => batch_outcomes(&answer, n, self.config.region),
            Err(error) => Outcome::Retry { after: None, error }.all(n),
        }
    }

    async fn send_one(&self, method: Method, path: &str, body: Option<Value>) -> Outcome {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = self.request(method, path, &body);
        match self.client.send(request, &body).await {
            Ok(answer) => single_outcome(&answer, self.config.region),
            Err(error) => Outcome::Retry { after: None, error },
        }
    }
}

#[async_trait]
impl Destination for CustomerIo {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "customerio"
    }

    /// `GET /api/v1/accounts/region`: answers 200 only for a valid Site ID and Track API key,
    /// and names the account's region, which must match `region`.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let request = self.request(Method::GET, "/api/v1/accounts/region", "");
        let answer = self.client.send(request, "").await?;
        if is_credentials_error(&answer) {
            return Err(credentials_error(&answer, self.config.region));
        }
        if let Outcome::Retry { error, .. } | Outcome::Rejected(error) = answer.outcome() {
            return Err(error);
        }
        let region = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("region").and_then(Value::as_str).map(str::to_string));
        match region {
            Some(region) if region != self.config.region.as_str() => Err(DeliveryError::refused(
                Some(answer.status.as_u16()),
                format!(
                    "the Customer.io account of these credentials is in region `{region}`, \
                         not `{}`; set `region = \"{region}\"`",
                    self.config.region.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut items = Vec::new();
        let mut positions = Vec::new();
        let mut requests = Vec::new();
        for (i, event) in batch.iter().enumerate() {
            match self.plan(event) {
                Ok(Call::Item(item)) => {
                    let size = item.to_string().len();
                    if size > MAX_ITEM_BYTES {
                        outcomes[i] = Some(Outcome::Rejected(DeliveryError::refused(
                            None,
                            format!(
                                "the Customer.io item is {size} bytes; the Track API takes at \
                                 most {MAX_ITEM_BYTES} per item: send fewer or shorter \
                                 attributes"
                            ),
                        )));
                    } else {
                        items.push(item);
                        positions.push(i);
                    }
                }
                Ok(Call::Request { method, path, body }) => requests.push((i, method, path, body)),
                Err(message) => {
                    outcomes[i] = Some(Outcome::Rejected(DeliveryError::refused(None, message)));
                }
            }
        }
        if !items.is_empty() {
            for (k, outcome) in self.send_batch(items).await.into_iter().enumerate() {
                outcomes[positions[k]] = Some(outcome);
            }
        }
        for (i, method, path, body) in requests {
            outcomes[i] = Some(self.send_one(method, &path, body).await);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("deliver gives every event an outcome: planned, batched or sent"))
            .collect()
    }

    fn limits(&self) -> BatchLimits {
        let (max_events, max_bytes) = match self.config.api {
            ApiVersion::V2 => (MAX_BATCH_ITEMS, MAX_BATCH_BYTES),
            // One request per event: one event per call keeps the rate limit exact.
            ApiVersion::V1 => (1, MAX_V1_EVENT_BYTES),
        };
        BatchLimits {
            max_events,
            max_bytes,
            requests_per_second: Some(self.config.requests_per_second),
            rate_window: None,
            concurrency: self.config.concurrency.max(1),
        }
    }

    fn inspect(&self) -> Vec<http::Exchange> {
        self.client.exchanges()
    }
}

// ----- answers -----

fn is_credentials_error(answer: &Answer) -> bool {
    matches!(answer.status.as_u16(), 401 | 403)
}

fn credentials_error(answer: &Answer, region: Region) -> DeliveryError {
    DeliveryError::refused(
        Some(answer.status.as_u16()),
        format!(
            "Customer.io refused the credentials ({}): check `site_id` and `api_key` (a Track \
             API key from Settings > API Credentials > Track API Keys, not an App API key) and \
             that the account is in region `{}`",
            answer.message(),
            region.as_str()
        ),
    )
}

/// One v1 answer as an outcome.
fn single_outcome(answer: &Answer, region: Region) -> Outcome {
    if is_credentials_error(answer) {
        return Outcome::Rejected(credentials_error(answer, region));
    }
    answer.outcome()
}

/// One outcome per item of a v2 batch of `n` items.
fn batch_outcomes(answer: &Answer, n: usize, region: Region) -> Vec<Outcome> {
    let status = answer.status.as_u16();
    if is_credentials_error(answer) {
        return Outcome::Rejected(credentials_error(answer, region)).all(n);
    }
    let item_errors = item_errors(&answer.body, n);
    match status {
        200..=299 => {
            let mut outcomes = Outcome::Delivered.all(n);
            for (index, message) in item_errors {
                outcomes[index] = Outcome::Rejected(DeliveryError::refused(Some(status), message));
            }
            outcomes
        }
        400 => {
            // "The entire request was malformed or invalid": nothing was taken.
            let whole = format!("Customer.io refused the whole batch ({})", answer.message());
            let mut outcomes =
                Outcome::Rejected(DeliveryError::refused(Some(status), whole)).all(n);
            for (index, message) in item_errors {
                outcomes[index] = Outcome::Rejected(DeliveryError::refused(Some(status), message));
            }
            outcomes
        }
        _ => answer.outcome().all(n),
    }
}

/// The per-item errors of a v2 answer, `(batch_index, message)`, ignoring indexes outside the
/// batch.
fn item_errors(body: &str, n: usize) -> Vec<(usize, String)> {
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let Some(errors) = body.get("errors").and_then(Value::as_array) else {
        return Vec::new();
    };
    errors
        .iter()
        .filter_map(|e| {
            let index = usize::try_from(e.get("batch_index")?.as_u64()?).ok()?;
            (index < n).then(|| (index, item_error_message(e)))
        })
        .collect()
}

fn item_error_message(error: &Value) -> String {
    let text = |k: &str| {
        error
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut message = String::from("Customer.io refused the item");
    if let Some(field) = text("field") {
        message.push_str(&format!(" (field `{field}`)"));
    }
    match (text("reason"), text("message")) {
        (Some(reason), Some(detail)) => message.push_str(&format!(": {reason}: {detail}")),
        (Some(one), None) | (None, Some(one)) => message.push_str(&format!(": {one}")),
        (None, None) => message.push_str(&format!(": {error}")),
    }
    message
}

// ----- mapping -----

/// What `event` becomes for `api`; `Err` says why it cannot be sent.
pub fn plan(api: ApiVersion, object_type_id: &str, event: &OutboundEvent) -> Result<Call, String> {
    let kind = event.kind();
    event.op.upsert_or_delete("customerio")?;
    if event.op == Op::Delete {
        return delete(api, object_type_id, event);
    }
    match kind {
        "identify" => identify(api, event),
        "track" | "page" | "screen" => person_event(api, event),
        "group" => group(api, object_type_id, event),
        "alias" => Err(
            "`alias` is not sent to Customer.io: its counterpart, merge, deletes the secondary \
             person"
                .to_string(),
        ),
        "" => {
            Err("the event has no `type`; known types: identify, track, page, screen, group".into())
        }
        other => Err(format!(
            "unknown message type `{other}`; known types: identify, track, page, screen, group"
        )),
    }
}

/// The person an event is about: `{"id": userId}`, else `{"email": traits.email}`.
fn person(event: &OutboundEvent) -> Option<(&'static str, String)> {
    if let Some(id) = event.id_field("userId") {
        return Some(("id", id));
    }
    let email = event.event.get("traits")?.get("email")?.as_str()?;
    (!email.is_empty()).then(|| ("email", email.to_string()))
}

fn identifiers(key: &str, value: &str) -> Value {
    json!({ key: value })
}

fn identify(api: ApiVersion, event: &OutboundEvent) -> Result<Call, String> {
    let (key, id) = person(event).ok_or_else(|| {
        "an identify needs a `userId` (or `traits.email`) to name the person in Customer.io"
            .to_string()
    })?;
    let mut attributes = fields(event, "traits")?;
    if let Some(created) = attributes
        .remove("createdAt")
        .or_else(|| attributes.remove("created_at"))
    {
        match unix_seconds(&created) {
            Some(secs) => attributes.insert("created_at".into(), secs.into()),
            None => attributes.insert("created_at".into(), created),
        };
    }
    if key == "id"
        && let Some(anonymous) = event.id_field("anonymousId")
    {
        attributes.entry("anonymous_id").or_insert(anonymous.into());
    }
    let timestamp = timestamp(event).map(|t| t.timestamp());
    match api {
        ApiVersion::V2 => {
            let mut item = json!({
                "type": "person",
                "identifiers": identifiers(key, &id),
                "action": "identify",
                "attributes": attributes,
            });
            if let Some(ts) = timestamp {
                item["timestamp"] = ts.into();
            }
            Ok(Call::Item(item))
        }
        ApiVersion::V1 => {
            if let Some(ts) = timestamp {
                attributes.insert("_timestamp".into(), ts.into());
            }
            Ok(Call::Request {
                method: Method::PUT,
                path: format!("/api/v1/customers/{}", segment(&id)),
                body: Some(Value::Object(attributes)),
            })
        }
    }
}

fn person_event(api: ApiVersion, event: &OutboundEvent) -> Result<Call, String> {
    let kind = event.kind();
    let name = event_name(event)?;
    let data = fields(event, "properties")?;
    let time = timestamp(event);
    let dedupe = event
        .id_field("messageId")
        .map(|m| dedupe_id(&m, time.map_or(0, |t| t.timestamp_millis())));
    let action = if kind == "track" { "event" } else { kind };

    let user = event.id_field("userId");
    let anonymous = event.id_field("anonymousId");
    if user.is_none() {
        let Some(anonymous) = anonymous else {
            return Err(format!(
                "a {kind} needs a `userId` or an `anonymousId` to attribute it in Customer.io"
            ));
        };
        // Anonymous events: v1 only, in both modes.
        let mut body = json!({ "anonymous_id": anonymous, "name": name });
        if action != "event" {
            body["type"] = action.into();
        }
        return Ok(Call::Request {
            method: Method::POST,
            path: "/api/v1/events".into(),
            body: Some(event_body(body, dedupe, time, "data", data)),
        });
    }
    let id = user.unwrap_or_default();
    match api {
        ApiVersion::V2 => {
            let item = json!({
                "type": "person",
                "identifiers": { "id": id },
                "action": action,
                "name": name,
            });
            Ok(Call::Item(event_body(
                item,
                dedupe,
                time,
                "attributes",
                data,
            )))
        }
        ApiVersion::V1 => {
            let mut body = json!({ "name": name });
            if action != "event" {
                body["type"] = action.into();
            }
            Ok(Call::Request {
                method: Method::POST,
                path: format!("/api/v1/customers/{}/events", segment(&id)),
                body: Some(event_body(body, dedupe, time, "data", data)),
            })
        }
    }
}

fn event_body(
    mut body: Value,
    dedupe: Option<String>,
    time: Option<chrono::DateTime<chrono::Utc>>,
    data_key: &str,
    data: Map<String, Value>,
) -> Value {
    if let Some(id) = dedupe {
        body["id"] = id.into();
    }
    if let Some(t) = time {
        body["timestamp"] = t.timestamp().into();
    }
    if !data.is_empty() {
        body[data_key] = Value::Object(data);
    }
    body
}

/// The name Customer.io files an event under: `event` for a track; for a page the URL
/// (`properties.url`, `context.page.url`), else its `name`; for a screen its `name`.
fn event_name(event: &OutboundEvent) -> Result<String, String> {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let e = &event.event;
    let found = match event.kind() {
        "track" => text(e.get("event")),
        "page" => text(e.pointer("/properties/url"))
            .or_else(|| text(e.pointer("/context/page/url")))
            .or_else(|| text(e.get("name"))),
        _ => text(e.get("name")).or_else(|| text(e.pointer("/properties/name"))),
    };
    found.ok_or_else(|| match event.kind() {
        "track" => "a track needs an `event` name".to_string(),
        "page" => "a page needs `properties.url` or a `name`".to_string(),
        kind => format!("a {kind} needs a `name`"),
    })
}

fn group(api: ApiVersion, object_type_id: &str, event: &OutboundEvent) -> Result<Call, String> {
    let group_id = event
        .id_field("groupId")
        .ok_or_else(|| "a group needs a `groupId` to name the Customer.io object".to_string())?;
    let attributes = fields(event, "traits")?;
    let object = json!({ "object_type_id": object_type_id, "object_id": group_id });
    match api {
        ApiVersion::V2 => {
            let mut item = json!({
                "type": "object",
                "identifiers": object,
                "action": "identify",
                "attributes": attributes,
            });
            if let Some(user) = event.id_field("userId") {
                item["cio_relationships"] = json!([{ "identifiers": { "id": user } }]);
            } else if let Some(anonymous) = event.id_field("anonymousId") {
                item["action"] = "identify_anonymous".into();
                item["cio_relationships"] =
                    json!([{ "identifiers": { "anonymous_id": anonymous } }]);
            }
            Ok(Call::Item(item))
        }
        ApiVersion::V1 => {
            if !attributes.is_empty() {
                return Err(
                    "a group with traits needs `api = \"v2\"`: the v1 Track API cannot set \
                     object attributes"
                        .to_string(),
                );
            }
            let user = event.id_field("userId").ok_or_else(|| {
                "a group needs a `userId` with `api = \"v1\"` (it adds the person to the object)"
                    .to_string()
            })?;
            Ok(Call::Request {
                method: Method::PUT,
                path: format!("/api/v1/customers/{}", segment(&user)),
                body: Some(json!({
                    "cio_relationships": {
                        "action": "add_relationships",
                        "relationships": [{ "identifiers": object }],
                    }
                })),
            })
        }
    }
}

fn delete(api: ApiVersion, object_type_id: &str, event: &OutboundEvent) -> Result<Call, String> {
    if event.kind() == "group" {
        let group_id = event.id_field("groupId").ok_or_else(|| {
            "deleting a group needs its `groupId` to name the Customer.io object".to_string()
        })?;
        return match api {
            ApiVersion::V2 => Ok(Call::Item(json!({
                "type": "object",
                "identifiers": { "object_type_id": object_type_id, "object_id": group_id },
                "action": "delete",
            }))),
            ApiVersion::V1 => Err(
                "deleting a group (object) needs `api = \"v2\"`: the v1 Track API has no \
                 object calls"
                    .to_string(),
            ),
        };
    }
    let (key, id) = person(event).ok_or_else(|| {
        "a delete needs a `userId` (or `traits.email`) to name the person in Customer.io"
            .to_string()
    })?;
    match api {
        ApiVersion::V2 => Ok(Call::Item(json!({
            "type": "person",
            "identifiers": identifiers(key, &id),
            "action": "delete",
        }))),
        ApiVersion::V1 => Ok(Call::Request {
            method: Method::DELETE,
            path: format!("/api/v1/customers/{}", segment(&id)),
            body: None,
        }),
    }
}

/// The object under `key` (`traits`, `properties`), empty when absent or null.
fn fields(event: &OutboundEvent, key: &str) -> Result<Map<String, Value>, String> {
    match event.event.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(format!(
            "`{key}` must be an object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        )),
    }
}

/// The event's `timestamp` (RFC 3339, or Unix seconds or milliseconds).
fn timestamp(event: &OutboundEvent) -> Option<chrono::DateTime<chrono::Utc>> {
    let millis = unix_millis(event.event.get("timestamp")?)?;
    chrono::DateTime::from_timestamp_millis(millis)
}

fn unix_seconds(value: &Value) -> Option<i64> {
    unix_millis(value).map(|ms| ms.div_euclid(1000))
}

fn unix_millis(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => {
            let n = n.as_f64()?;
            // Above 1e11 it is milliseconds (1e11 seconds is the year 5138).
            let ms = if n.abs() > 1e11 { n } else { n * 1000.0 };
            ms.is_finite().then_some(ms as i64)
        }
        _ => None,
    }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
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

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Whether `text` is a ULID: 26 Crockford base-32 characters, the first at most `7`.
pub fn is_ulid(text: &str) -> bool {
    text.len() == 26
        && text.as_bytes()[0] <= b'7'
        && text
            .bytes()
            .all(|b| CROCKFORD.contains(&b.to_ascii_uppercase()))
}

/// The dedupe `id` for a message: the `messageId` itself when it is a ULID, else a ULID of the
/// event time (`millis`) and 80 bits of an FNV-1a hash of the `messageId`.
pub fn dedupe_id(message_id: &str, millis: i64) -> String {
    if is_ulid(message_id) {
        return message_id.to_ascii_uppercase();
    }
    const TIME_BITS: u128 = (1 << 48) - 1;
    const RANDOM_BITS: u128 = (1 << 80) - 1;
    let time = u128::from(u64::try_from(millis).unwrap_or(0)) & TIME_BITS;
    let value = (time << 80) | (fnv1a_128(message_id.as_bytes()) & RANDOM_BITS);
    (0..26)
        .map(|i| CROCKFORD[((value >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}
