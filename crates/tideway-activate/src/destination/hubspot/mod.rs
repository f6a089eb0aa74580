//! HubSpot: contacts and companies through the CRM v3 batch upsert API, tracks as custom
//! event occurrences.
//!
//! References: the CRM v3 object APIs
//! (<https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/batch/upsert-contacts>,
//! `.../companies/batch/upsert-companies`), "Send custom event occurrences"
//! (<https://developers.hubspot.com/docs/api-reference/legacy/events/send-event-data/guide>),
//! "Error handling" (<https://developers.hubspot.com/docs/api-reference/error-handling>) and "API
//! usage guidelines and limits". Authentication is `Authorization: Bearer <private app token>`.
//!
//! | Segment message      | HubSpot call                                                             |
//! |----------------------|--------------------------------------------------------------------------|
//! | `identify`           | `POST /crm/v3/objects/contacts/batch/upsert`, one input per event         |
//! | `group`              | `POST /crm/v3/objects/companies/batch/upsert`, one input per event        |
//! | `Op::Update` (a sync's `mode = "update"`) | `.../batch/update`: the record named by the id property, never created |
//! | `Op::Insert` (`mode = "insert"`) | `.../batch/create`: a 409 `CONFLICT` for a record that exists |
//! | `track`              | `POST /events/v3/send`, one request per event                             |
//! | any, `Op::Delete`    | refused: see below                                                       |
//!
//! An upsert input is `{"idProperty", "id", "objectWriteTraceId", "properties"}`. The contact is
//! named by `contact_id_property` (default `email`): its value is `traits.<property>`, else (for
//! `email`) a `userId` that is an email address, else (for a custom property) the `userId`. The
//! company is named by `company_id_property` (default `domain`): `traits.<property>`, else the
//! `groupId`. The id is also written into `properties`, so a new record gets it. An update input
//! has the same shape (`batch/update` takes `idProperty` for a unique property); a create input
//! is `{"objectWriteTraceId", "properties"}`. HubSpot answers a create of a record that exists
//! (its email or other unique property taken) with 409 for the whole batch: the delivery loop
//! splits it down to that record, which is refused.
//!
//! **Properties** (traits of an identify or group, properties of a track) follow one rule, so a
//! column always lands in the same HubSpot property:
//! - a key becomes HubSpot's internal-name form: lower-cased, every character other than
//!   `a-z`, `0-9` and `_` replaced by `_` (`firstName` → `firstname`, `Plan Tier` →
//!   `plan_tier`); a key starting with a digit gets a `p_` prefix;
//! - a nested object is flattened with `_` (`{"address": {"city": "X"}}` → `address_city`),
//!   except Segment's reserved `address` trait, whose `street`, `city`, `state`, `postalCode`
//!   and `country` become HubSpot's `address`, `city`, `state`, `zip` and `country`;
//! - strings, numbers and booleans are sent as JSON values (HubSpot accepts them for text,
//!   number, date, datetime and checkbox properties; dates as ISO 8601 or epoch milliseconds);
//!   `null` becomes `""`, which clears the property; an array of strings, numbers or booleans
//!   becomes a `;`-joined string (HubSpot's format for multiple-checkbox properties); any other
//!   array is sent as its JSON text.
//!
//! Every property must exist in HubSpot (Settings > Properties): HubSpot refuses the whole
//! batch (400 `VALIDATION_ERROR`, `PROPERTY_DOESNT_EXIST`) for one unknown name.
//!
//! **Track**: a custom event occurrence `{"eventName", "email", "occurredAt", "properties",
//! "uuid"}`. `eventName` is the event's fully qualified name `pe{HubID}_{name}`: the `event`
//! itself when it has that form, else `event_prefix` + the normalized `event`. The contact is
//! `properties.email`, `context.traits.email` or an email `userId`. `uuid` is the `messageId`
//! when that is a UUID (HubSpot's dedupe key). Custom events need an Enterprise subscription and
//! an event defined in HubSpot with those properties.
//!
//! **Deletes** are refused: `POST /crm/v3/objects/contacts/batch/archive` takes HubSpot record
//! ids, which a sync does not know (the GDPR delete endpoint takes an email but deletes
//! permanently, one contact per call). Use `on_delete = "ignore"`, `"clear_fields"` (blanks the
//! synced properties) or `"event:<name>"`: a sync to HubSpot with `on_delete = "delete"` is a
//! configuration error at its `on_delete` line (`DestinationConfig::refuses_deletes`).
//!
//! **Answers**: 200/201 deliver every input; 207 Multi-Status rejects the inputs its `errors`
//! name (by `context.objectWriteTraceId`, which we set to the input's position, or by
//! `context.ids`) and delivers the others; 400 rejects the whole batch (the delivery loop splits
//! it to find the input at fault); 401/403 name the token and the scopes to grant; 429 is
//! retried after `Retry-After` when sent, else after `X-HubSpot-RateLimit-Interval-Milliseconds`
//! (the rolling window, 10 s), or after an hour for the `DAILY` policy; 408 and 5xx are retried.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Map, Value, json};
use tideway_core::config::Secret;

use crate::config::Mode;
use crate::destination::http::{self, Answer, Client};
use crate::destination::{BatchLimits, DeliveryError, Destination, Op, OutboundEvent, Outcome};

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_BASE_URL, DEFAULT_COMPANY_ID_PROPERTY, DEFAULT_CONTACT_ID_PROPERTY,
    DEFAULT_REQUESTS_PER_SECOND, EXAMPLE, HubSpotConfig, is_event_prefix, is_property_name,
};

/// Inputs per batch call ("Batch operations are limited to 100 records per request").
pub const MAX_BATCH_INPUTS: usize = 100;
/// Bytes of serialized events per call. HubSpot documents no body limit for batch upserts; this
/// keeps a full batch of wide rows well under any proxy's limit.
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// The wait after a `DAILY` 429: the limit resets at midnight in the account's time zone, which
/// the answer does not give.
pub const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(3600);
/// HubSpot's burst window, when the answer does not name it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Why a delete is refused, at compile time and for each row.
pub const DELETES_REFUSED: &str = "HubSpot deletes (batch archive) need HubSpot record ids, \
     which this destination does not look up; set the sync's `on_delete` to `ignore`, \
     `clear_fields` (blanks the synced properties) or `event:<name>`";
/// The sync modes HubSpot writes records with (a mirror deletes: see [`DELETES_REFUSED`]).
pub const MODES: &[Mode] = &[Mode::Upsert, Mode::Update, Mode::Insert];
/// The scopes a private app needs for this destination.
pub const SCOPES: &str = "crm.objects.contacts.write, crm.objects.companies.write (and \
                          crm.objects.contacts.read for the healthcheck)";

/// Builds the destination named `name` (`[destinations.NAME]`) from a checked configuration
/// ([`HubSpotConfig::parse`], or [`HubSpotConfig::problems`] empty); this does not fail.
pub fn build(name: &str, config: HubSpotConfig) -> HubSpot {
    let client = Client::new(vec![config.access_token.expose().to_string()]);
    HubSpot {
        name: name.to_string(),
        base_url: config.base_url(),
        authorization: Secret::new(format!("Bearer {}", config.access_token.expose())),
        client,
        config,
    }
}

/// A HubSpot destination. See the module docs.
pub struct HubSpot {
    name: String,
    config: HubSpotConfig,
    base_url: String,
    /// `Bearer <token>`.
    authorization: Secret,
    client: Client,
}

impl fmt::Debug for HubSpot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpot")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("contact_id_property", &self.config.contact_id_property)
            .field("company_id_property", &self.config.company_id_property)
            .finish_non_exhaustive()
    }
}

/// A CRM object type this destination writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    Contacts,
    Companies,
}

impl Object {
    /// `contacts` or `companies`, as in the API's paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Object::Contacts => "contacts",
            Object::Companies => "companies",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Object::Contacts => "contact",
            Object::Companies => "company",
        }
    }
}

/// The batch call a record goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Write {
    Upsert,
    Create,
    Update,
}

impl Write {
    /// The batch endpoint of `object` (`POST`).
    pub fn path(self, object: Object) -> String {
        let action = match self {
            Write::Upsert => "upsert",
            Write::Create => "create",
            Write::Update => "update",
        };
        format!("/crm/v3/objects/{}/batch/{action}", object.as_str())
    }
}

/// What one event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// An input of a batch write: `{"idProperty", "id", "properties"}` (a create sends only
    /// `properties`; the position in the request, `objectWriteTraceId`, is added when the
    /// batch is sent).
    Batch {
        object: Object,
        write: Write,
        input: Value,
    },
    /// A custom event occurrence, `POST /events/v3/send` on its own.
    Event(Value),
}

impl HubSpot {
    /// The configuration the destination was built with.
    pub fn config(&self) -> &HubSpotConfig {
        &self.config
    }

    /// What `event` becomes, or why it cannot be sent.
    pub fn plan(&self, event: &OutboundEvent) -> Result<Call, String> {
        plan(&self.config, event)
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

    async fn send_batch(&self, object: Object, write: Write, inputs: Vec<Value>) -> Vec<Outcome> {
        let ids: Vec<String> = inputs
            .iter()
            .map(|i| i["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let body = batch_body(write, inputs).to_string();
        let request = self.request(Method::POST, &write.path(object), &body);
        match self.client.send(request, &body).await {
            Ok(answer) => batch_outcomes(&answer, object, &ids),
            Err(error) => Outcome::Retry { after: None, error }.all(ids.len()),
        }
    }

    async fn send_event(&self, occurrence: Value) -> Outcome {
        let body = occurrence.to_string();
        let request = self.request(Method::POST, "/events/v3/send", &body);
        match self.client.send(request, &body).await {
            Ok(answer) => single_outcome(&answer),
            Err(error) => Outcome::Retry { after: None, error },
        }
    }
}

#[async_trait]
impl Destination for HubSpot {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "hubspot"
    }

    /// `GET /crm/v3/objects/contacts?limit=1`: a read that changes nothing and answers 200 only
    /// for a valid token with access to contacts.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let request = self.request(Method::GET, "/crm/v3/objects/contacts?limit=1", "");
        let answer = self.client.send(request, "").await?;
        match single_outcome(&answer) {
            Outcome::Delivered => Ok(()),
            Outcome::Retry { error, .. } | Outcome::Rejected(error) => Err(error),
        }
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        // Inputs and their positions per batch call, in the order calls first appear.
        let mut calls: Vec<((Object, Write), Vec<Value>, Vec<usize>)> = Vec::new();
        let mut events = Vec::new();
        for (i, event) in batch.iter().enumerate() {
            match self.plan(event) {
                Ok(Call::Batch {
                    object,
                    write,
                    input,
                }) => {
                    let at = match calls.iter().position(|(c, ..)| *c == (object, write)) {
                        Some(at) => at,
                        None => {
                            calls.push(((object, write), Vec::new(), Vec::new()));
                            calls.len() - 1
                        }
                    };
                    calls[at].1.push(input);
                    calls[at].2.push(i);
                }
                Ok(Call::Event(occurrence)) => events.push((i, occurrence)),
                Err(message) => {
                    outcomes[i] = Some(Outcome::Rejected(DeliveryError::refused(None, message)));
                }
            }
        }
        for ((object, write), inputs, positions) in calls {
            // The delivery loop sends at most `max_events` events; stay under the API's limit
            // even if it is configured otherwise.
            for (inputs, positions) in inputs
                .chunks(MAX_BATCH_INPUTS)
                .zip(positions.chunks(MAX_BATCH_INPUTS))
            {
                let answers = self.send_batch(object, write, inputs.to_vec()).await;
                for (k, outcome) in answers.into_iter().enumerate() {
                    outcomes[positions[k]] = Some(outcome);
                }
            }
        }
        for (i, occurrence) in events {
            outcomes[i] = Some(self.send_event(occurrence).await);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("deliver gives every event an outcome: planned, batched or sent"))
            .collect()
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: MAX_BATCH_INPUTS,
            max_bytes: MAX_BATCH_BYTES,
            requests_per_second: Some(self.config.requests_per_second),
            rate_window: Some(DEFAULT_INTERVAL),
            concurrency: self.config.concurrency.max(1),
        }
    }

    fn inspect(&self) -> Vec<http::Exchange> {
        self.client.exchanges()
    }
}

/// The body of a batch write: `{"inputs": [...]}`, each input given its position in the
/// request as `objectWriteTraceId`, so that a 207's errors can be mapped back to it. A create
/// names no record: its inputs lose `idProperty` and `id` (the id is in `properties`).
pub fn batch_body(write: Write, inputs: Vec<Value>) -> Value {
    let inputs: Vec<Value> = inputs
        .into_iter()
        .enumerate()
        .map(|(k, mut input)| {
            if write == Write::Create
                && let Some(fields) = input.as_object_mut()
            {
                fields.remove("idProperty");
                fields.remove("id");
            }
            input["objectWriteTraceId"] = k.to_string().into();
            input
        })
        .collect();
    json!({ "inputs": inputs })
}

// ----- answers -----

fn credentials_error(answer: &Answer) -> DeliveryError {
    let status = answer.status.as_u16();
    let what = if status == 401 {
        "refused the access token"
    } else {
        "refused the request for missing permissions"
    };
    DeliveryError::refused(
        Some(status),
        format!(
            "HubSpot {what} ({}): check `access_token` (a private app's token, Settings > \
             Integrations > Private Apps > Auth) and that the app has the scopes {SCOPES}",
            answer.message()
        ),
    )
}

/// The wait a 429 asks for, and what to say about it.
fn rate_limited(answer: &Answer) -> Outcome {
    let headers = &answer.headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
    let daily = policy.eq_ignore_ascii_case("DAILY")
        || header("x-hubspot-ratelimit-daily-remaining") == Some("0");
    let status = Some(429);
    if daily {
        return Outcome::Retry {
            after: Some(DAILY_LIMIT_WAIT),
            error: DeliveryError::external(
                status,
                format!(
                    "HubSpot's daily API limit is used up ({}); it resets at midnight in the \
                     HubSpot account's time zone: sync less often, or raise the limit (API \
                     Limit Increase pack)",
                    answer.message()
                ),
            ),
        };
    }
    let after = if header("retry-after").is_some() {
        http::retry_after(headers)
    } else {
        let interval = header("x-hubspot-ratelimit-interval-milliseconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_INTERVAL, Duration::from_millis);
        Some(interval)
    };
    Outcome::Retry {
        after,
        error: DeliveryError::external(
            status,
            format!(
                "HubSpot's rate limit was reached ({}); lower `requests_per_second` if this \
                 repeats",
                answer.message()
            ),
        ),
    }
}

/// One answer to one request (a custom event, the healthcheck) as an outcome.
fn single_outcome(answer: &Answer) -> Outcome {
    match answer.status.as_u16() {
        401 | 403 => Outcome::Rejected(credentials_error(answer)),
        429 => rate_limited(answer),
        400 => Outcome::Rejected(DeliveryError::refused(
            Some(400),
            format!("HubSpot refused the request: {}", error_text(&answer.body)),
        )),
        _ => answer.outcome(),
    }
}

/// One outcome per input of a batch upsert of the inputs named `ids`, in order.
fn batch_outcomes(answer: &Answer, object: Object, ids: &[String]) -> Vec<Outcome> {
    let n = ids.len();
    let status = answer.status.as_u16();
    match status {
        401 | 403 => Outcome::Rejected(credentials_error(answer)).all(n),
        429 => rate_limited(answer).all(n),
        200..=299 => {
            let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
            let errors = body
                .get("errors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut outcomes = Outcome::Delivered.all(n);
            if errors.is_empty() {
                return outcomes;
            }
            let mut mapped = false;
            for error in &errors {
                let message = format!(
                    "HubSpot refused the {}: {}",
                    object.singular(),
                    error_text(&error.to_string())
                );
                for k in error_inputs(error, ids) {
                    mapped = true;
                    outcomes[k] =
                        Outcome::Rejected(DeliveryError::refused(Some(status), message.clone()));
                }
            }
            if !mapped {
                // Errors that name no input: refuse the batch, so that the delivery loop splits
                // it down to the inputs at fault.
                let message = format!(
                    "HubSpot refused some {} of the batch without naming them: {}",
                    object.as_str(),
                    error_text(&Value::Array(errors).to_string())
                );
                return Outcome::Rejected(DeliveryError::refused(Some(status), message)).all(n);
            }
            outcomes
        }
        400 | 409 => Outcome::Rejected(DeliveryError::refused(
            Some(status),
            format!(
                "HubSpot refused the whole batch of {}: {}",
                object.as_str(),
                error_text(&answer.body)
            ),
        ))
        .all(n),
        _ => answer.outcome().all(n),
    }
}

/// The positions of the inputs a 207 error names: `context.objectWriteTraceId` (our positions),
/// else the error's own `objectWriteTraceId`, else `context.ids` matched against `ids` (the
/// inputs' `id`s, case-insensitively, as HubSpot compares emails).
fn error_inputs(error: &Value, ids: &[String]) -> Vec<usize> {
    let n = ids.len();
    let texts = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(x) => Some(x.to_string()),
                    _ => None,
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Number(x)) => vec![x.to_string()],
            _ => Vec::new(),
        }
    };
    let context = error.get("context");
    let mut traces = texts(context.and_then(|c| c.get("objectWriteTraceId")));
    traces.extend(texts(error.get("objectWriteTraceId")));
    let mut found: Vec<usize> = traces
        .iter()
        .filter_map(|t| t.parse::<usize>().ok())
        .filter(|k| *k < n)
        .collect();
    if found.is_empty() {
        for id in texts(context.and_then(|c| c.get("ids"))) {
            found.extend(
                ids.iter()
                    .enumerate()
                    .filter(|(_, sent)| sent.eq_ignore_ascii_case(&id))
                    .map(|(k, _)| k),
            );
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// A HubSpot error body as one readable line: `CATEGORY: message`, with the property errors of
/// "Property values were not valid: [...]" written out (`name`: message (ERROR)).
pub fn error_text(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        let body = body.trim();
        return if body.is_empty() {
            "no details".to_string()
        } else {
            body.chars().take(500).collect()
        };
    };
    let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("");
    let mut message = text("message").to_string();
    if let Some(list) = message.strip_prefix("Property values were not valid: ")
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(list)
    {
        let parts: Vec<String> = items
            .iter()
            .map(|i| {
                let get = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("");
                let mut part = format!("`{}`: {}", get("name"), get("message"));
                if !get("error").is_empty() {
                    part.push_str(&format!(" ({})", get("error")));
                }
                if get("error") == "PROPERTY_DOESNT_EXIST" {
                    part.push_str(
                        " — create the property in HubSpot (Settings > Properties) or rename \
                         the column",
                    );
                }
                part
            })
            .collect();
        message = format!("property values were not valid: {}", parts.join("; "));
    }
    if message.is_empty() {
        message = value.to_string().chars().take(500).collect();
    }
    let category = text("category");
    let mut out = if category.is_empty() {
        message
    } else {
        format!("{category}: {message}")
    };
    if let Some(context) = value.get("context").filter(|c| c.is_object())
        && !context.as_object().is_some_and(Map::is_empty)
    {
        out.push_str(&format!(" (context {context})"));
    }
    out
}

// ----- mapping -----

/// What `event` becomes under `config`; `Err` says why it cannot be sent.
pub fn plan(config: &HubSpotConfig, event: &OutboundEvent) -> Result<Call, String> {
    if event.op == Op::Delete {
        return Err(DELETES_REFUSED.to_string());
    }
    let write = match event.op {
        Op::Upsert | Op::Delete => Write::Upsert,
        Op::Insert => Write::Create,
        Op::Update => Write::Update,
    };
    match event.kind() {
        "identify" => identify(config, event, write),
        "group" => group(config, event, write),
        "track" => track(config, event),
        "" => Err("the event has no `type`; known types: identify, group, track".to_string()),
        other => Err(format!(
            "message type `{other}` is not sent to HubSpot; known types: identify, group, track"
        )),
    }
}

fn identify(config: &HubSpotConfig, event: &OutboundEvent, write: Write) -> Result<Call, String> {
    let id_property = config.contact_id_property.as_str();
    let mut properties = properties(event, "traits")?;
    let id = match properties.get(id_property).and_then(scalar_text) {
        Some(id) => Some(id),
        None if id_property == "email" => event.user_id().filter(|u| u.contains('@')),
        None => event.id_field("userId"),
    };
    let id = id.ok_or_else(|| {
        if id_property == "email" {
            "an identify needs `traits.email` (or an email as `userId`): contacts are upserted \
             by email; set `contact_id_property` to a unique property to upsert by `userId`"
                .to_string()
        } else {
            format!("an identify needs `traits.{id_property}` or a `userId` to name the contact")
        }
    })?;
    properties.insert(id_property.to_string(), Value::String(id.clone()));
    Ok(Call::Batch {
        object: Object::Contacts,
        write,
        input: json!({ "idProperty": id_property, "id": id, "properties": properties }),
    })
}

fn group(config: &HubSpotConfig, event: &OutboundEvent, write: Write) -> Result<Call, String> {
    let id_property = config.company_id_property.as_str();
    let mut properties = properties(event, "traits")?;
    let id = properties
        .get(id_property)
        .and_then(scalar_text)
        .or_else(|| event.id_field("groupId"))
        .ok_or_else(|| {
            format!("a group needs `traits.{id_property}` or a `groupId` to name the company")
        })?;
    properties.insert(id_property.to_string(), Value::String(id.clone()));
    Ok(Call::Batch {
        object: Object::Companies,
        write,
        input: json!({ "idProperty": id_property, "id": id, "properties": properties }),
    })
}

fn track(config: &HubSpotConfig, event: &OutboundEvent) -> Result<Call, String> {
    let name = event
        .event
        .get("event")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "a track needs an `event` name".to_string())?;
    let event_name = if is_qualified_event_name(name) {
        name.to_string()
    } else if let Some(prefix) = &config.event_prefix {
        format!("{prefix}{}", property_name(name))
    } else {
        return Err(format!(
            "the track `{name}` is not a HubSpot custom event's fully qualified name \
             (pe{{HubID}}_{{name}}); set `event_prefix = \"pe<HubID>_\"` or name the event so"
        ));
    };
    let e = &event.event;
    let email = [
        e.pointer("/properties/email"),
        e.pointer("/context/traits/email"),
        e.pointer("/traits/email"),
    ]
    .into_iter()
    .flatten()
    .find_map(scalar_text)
    .or_else(|| event.user_id().filter(|u| u.contains('@')))
    .ok_or_else(|| {
        "a track needs the contact's email (`properties.email`, `context.traits.email` or an \
         email `userId`) to attach the HubSpot custom event"
            .to_string()
    })?;
    let mut properties = properties(event, "properties")?;
    properties.remove("email");
    let mut occurrence = json!({ "eventName": event_name, "email": email });
    if let Some(time) = timestamp(event) {
        occurrence["occurredAt"] = time.into();
    }
    if !properties.is_empty() {
        occurrence["properties"] = Value::Object(properties);
    }
    if let Some(id) = event.id_field("messageId").filter(|m| is_uuid(m)) {
        occurrence["uuid"] = id.to_ascii_lowercase().into();
    }
    Ok(Call::Event(occurrence))
}

/// Whether `name` is `pe{HubID}_{name}`.
fn is_qualified_event_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("pe") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0
        && rest[digits..]
            .strip_prefix('_')
            .is_some_and(|n| !n.is_empty())
}

/// The event's `timestamp` as ISO 8601 with milliseconds, UTC.
fn timestamp(event: &OutboundEvent) -> Option<String> {
    let value = event.event.get("timestamp")?;
    let time = match value {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()?
            .with_timezone(&chrono::Utc),
        Value::Number(n) => {
            let n = n.as_f64()?;
            // Above 1e11 it is milliseconds (1e11 seconds is the year 5138).
            let ms = if n.abs() > 1e11 { n } else { n * 1000.0 };
            chrono::DateTime::from_timestamp_millis(ms as i64)?
        }
        _ => return None,
    };
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A scalar as an id: a non-empty string, or a number written out.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The object under `key` (`traits`, `properties`) as HubSpot properties (see the module docs).
fn properties(event: &OutboundEvent, key: &str) -> Result<Map<String, Value>, String> {
    match event.event.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(hubspot_properties(map)),
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

/// Segment's `address` trait's fields, as HubSpot's contact and company properties.
const ADDRESS: &[(&str, &str)] = &[
    ("street", "address"),
    ("city", "city"),
    ("state", "state"),
    ("postalcode", "zip"),
    ("postal_code", "zip"),
    ("country", "country"),
];

/// Traits or properties as HubSpot properties: see the module docs for the rule.
pub fn hubspot_properties(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        let name = property_name(key);
        if name == "address"
            && let Value::Object(address) = value
        {
            for (k, v) in address {
                let k = property_name(k);
                match ADDRESS.iter().find(|(from, _)| *from == k) {
                    Some((_, to)) => flatten(to, v, &mut out),
                    None => flatten(&format!("address_{k}"), v, &mut out),
                }
            }
            continue;
        }
        flatten(&name, value, &mut out);
    }
    out
}

fn flatten(name: &str, value: &Value, out: &mut Map<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{name}_{}", property_name(k)), v, out);
            }
        }
        Value::Null => {
            out.insert(name.to_string(), Value::String(String::new()));
        }
        Value::Array(items) => {
            let scalars: Option<Vec<String>> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            let text = match scalars {
                Some(parts) => parts.join(";"),
                None => value.to_string(),
            };
            out.insert(name.to_string(), Value::String(text));
        }
        scalar => {
            out.insert(name.to_string(), scalar.clone());
        }
    }
}

/// A key in HubSpot's internal-name form: lower case, `[a-z0-9_]`, not starting with a digit.
pub fn property_name(key: &str) -> String {
    let mut name: String = key
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "p_");
    }
    name
}
