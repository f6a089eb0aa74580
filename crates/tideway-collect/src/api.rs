//! The HTTP API: Segment's Tracking API and RudderStack's data plane, as the SDKs call them.
//!
//! | path | what |
//! |---|---|
//! | `POST /v1/{track,identify,page,screen,group,alias}` and `/v1/{t,i,p,s,g,a}` | one event |
//! | `POST /v1/batch`, `/v1/b`, `/v1/import`, `/beacon/v1/batch?writeKey=` | `{"batch": [...], "sentAt": ..., "context": ...}` |
//! | `GET /v1/projects/{writeKey}/settings` | the settings analytics.js boots from |
//! | `GET /health`, `GET /metrics` | liveness and Prometheus metrics |
//!
//! The write key comes as HTTP Basic (the key is the user), as `writeKey` in the body, or as
//! `?writeKey=` (RudderStack's beacon). The
//! body is JSON whatever the `Content-Type` says, gzip when `Content-Encoding: gzip`.
//!
//! Answers: `200 {"success":true}` once every accepted event is durable in the log, with
//! `"rejected": [{"index", "field", "code", "message"}]` when some events of a batch were
//! refused (those go to the dead-letter table). `400 {"code","message"}` when nothing in the
//! request is valid, `401` for a missing or unknown write key, `413` past the request limit,
//! `429` with `Retry-After` when the log is full, `503` when the disk fails.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tideway_core::config::CollectConfig;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tracing::warn;

use crate::dedupe::{self, Dedupe};
use crate::event::{self, Envelope, Rejection};
use crate::log::{EventLog, LogError};
use crate::metrics as m;

/// Seconds a client is told to wait when the log is full.
const RETRY_AFTER_SECS: u64 = 5;

/// The collector's shared state: configuration, the log, the dedupe index.
#[derive(Debug)]
pub struct Collector {
    config: CollectConfig,
    /// write key -> source name
    keys: HashMap<String, String>,
    log: Arc<dyn EventLog>,
    dedupe: Mutex<Dedupe>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Per source: events received, duplicates (registered once: a labelled lookup per
    /// request costs more than the rest of a small request's bookkeeping).
    counters: HashMap<String, (metrics::Counter, metrics::Counter)>,
    requests_ok: metrics::Counter,
    request_seconds: metrics::Histogram,
    bytes_received: metrics::Counter,
}

impl Collector {
    /// A collector over `log`, with the dedupe index `dedupe` (see [`crate::dedupe`]).
    pub fn new(config: CollectConfig, log: Arc<dyn EventLog>, dedupe: Dedupe) -> Collector {
        let keys = config
            .sources
            .iter()
            .map(|(name, s)| (s.write_key.expose().to_string(), name.clone()))
            .collect();
        // The recorder must exist before the counters below are registered with it.
        let handle = crate::service::metrics_handle();
        let counters = config
            .sources
            .keys()
            .map(|name| {
                let received = metrics::counter!(m::EVENTS_RECEIVED, "source" => name.clone());
                let duplicate = metrics::counter!(m::EVENTS_DUPLICATE, "source" => name.clone());
                (name.clone(), (received, duplicate))
            })
            .collect();
        Collector {
            config,
            keys,
            log,
            dedupe: Mutex::new(dedupe),
            metrics: handle,
            counters,
            requests_ok: metrics::counter!(m::REQUESTS, "status" => "200"),
            request_seconds: metrics::histogram!(m::REQUEST_SECONDS),
            bytes_received: metrics::counter!(m::BYTES_RECEIVED),
        }
    }

    /// The log events are appended to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Writes the dedupe index (covering the log up to its current end) next to the log.
    pub fn snapshot_dedupe(&self, path: &std::path::Path) -> std::io::Result<u64> {
        let (frozen, end) = {
            let dedupe = self.dedupe.lock().expect("dedupe lock");
            // Every id settled so far has its record below `end`: an id that settles later
            // has its record at or after it, and the replay from `end` finds it.
            (dedupe.freeze(), self.log.stats().end)
        };
        frozen.write(path, end)?;
        Ok(end)
    }

    /// Adds the ids of events already in the log (replay after a restart).
    pub fn remember(&self, source: &str, message_id: &str, unix_secs: i64) {
        let key = dedupe::key(source, message_id);
        let mut d = self.dedupe.lock().expect("dedupe lock");
        d.insert(key, unix_secs);
        d.settle(key);
    }
}

/// The router of the whole API over `collector`.
pub fn router(collector: Arc<Collector>) -> Router {
    let limit = collector.config.max_request_bytes;
    let mut app = Router::new();
    for (paths, kind) in [
        (&["/v1/track", "/v1/t"][..], Some("track")),
        (&["/v1/identify", "/v1/i"][..], Some("identify")),
        (&["/v1/page", "/v1/p"][..], Some("page")),
        (&["/v1/screen", "/v1/s"][..], Some("screen")),
        (&["/v1/group", "/v1/g"][..], Some("group")),
        (&["/v1/alias", "/v1/a"][..], Some("alias")),
        (
            &["/v1/batch", "/v1/b", "/v1/import", "/beacon/v1/batch"][..],
            None,
        ),
    ] {
        for path in paths {
            app = app.route(
                path,
                post(move |state, query, headers, body| ingest(state, kind, query, headers, body)),
            );
        }
    }
    // Browsers preflight because SDKs send `Authorization`, `X-Retry-Count`, RudderStack's
    // `AnonymousId`, `SentAt` and `Rsa-*`: every requested header is allowed.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(86_400));
    app.route("/v1/projects/{write_key}/settings", get(settings))
        // analytics.js telemetry: accepted and dropped (its settings turn it off).
        .route("/v1/m", post(|| async { StatusCode::OK }))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .with_state(collector)
}

/// An error answer: status, machine code, and a message naming the field.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    fail(status, code, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&RETRY_AFTER_SECS.to_string()).expect("digits"),
            );
        }
        r
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Top<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    write_key: Option<&'a RawValue>,
    #[serde(borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
}

/// `?writeKey=` (RudderStack's beacon requests cannot set headers).
#[derive(Deserialize, Default)]
struct KeyQuery {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

async fn ingest(
    State(c): State<Arc<Collector>>,
    path_type: Option<&'static str>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = ingest_inner(&c, path_type, query.write_key, &headers, body).await;
    if response.status() == StatusCode::OK {
        c.requests_ok.increment(1);
    } else {
        let status = response.status().as_u16().to_string();
        metrics::counter!(m::REQUESTS, "status" => status).increment(1);
    }
    c.request_seconds.record(started.elapsed().as_secs_f64());
    response
}

async fn ingest_inner(
    c: &Collector,
    path_type: Option<&'static str>,
    query_key: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let limit = c.config.max_request_bytes;
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!(
                    "the request body is over the limit of {limit} bytes; send smaller batches"
                ),
            );
        }
        Err(rejection) => {
            return error(rejection.status(), "bad_request", rejection.body_text());
        }
    };
    let body = match decode(headers, body, limit) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    c.bytes_received.increment(body.len() as u64);
    // Invalid UTF-8 would make the whole body unreadable; instead the bad bytes become U+FFFD
    // and the events that hold them are rejected below, so the rest of a batch is kept.
    let invalid_utf8 = std::str::from_utf8(&body).is_err();
    let body: Bytes = if invalid_utf8 {
        String::from_utf8_lossy(&body).into_owned().into()
    } else {
        body
    };
    let top: Top<'_> = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            let (code, message) = if e.is_data() && body.first().is_some_and(|b| *b != b'{') {
                ("invalid_json", "the body must be a JSON object".to_string())
            } else {
                ("invalid_json", format!("the body is not valid JSON: {e}"))
            };
            return error(StatusCode::BAD_REQUEST, code, message);
        }
    };
    let source = match authenticate(c, headers, top.write_key, query_key) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let received_at = Utc::now();
    let batch_sent_at = match top.sent_at.map(|r| r.get()) {
        Some(text) if text.starts_with('"') => serde_json::from_str::<String>(text)
            .ok()
            .and_then(|s| event::parse_time(&s)),
        _ => None,
    };
    let env = Envelope {
        source,
        path_type,
        received_at,
        batch_sent_at,
        batch_context: if path_type.is_none() {
            top.context
        } else {
            None
        },
        timestamps: c.config.timestamps,
        max_event_bytes: c.config.max_event_bytes,
    };
    let events: Vec<&RawValue> = match (path_type, top.batch) {
        (None, Some(batch)) => batch,
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "a batch request needs `batch`: an array of events",
            );
        }
        (Some(_), _) => {
            let whole: &RawValue = match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
            };
            vec![whole]
        }
    };
    if events.is_empty() {
        return success();
    }

    let mut records = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    let mut duplicates = 0u64;
    {
        let now = received_at.timestamp();
        let mut checked = Vec::with_capacity(events.len());
        for (index, raw) in events.iter().enumerate() {
            let checked_event = if invalid_utf8 && raw.get().contains('\u{FFFD}') {
                Err(Rejection {
                    field: String::new(),
                    code: "invalid_utf8",
                    message: "the event is not valid UTF-8; its bad bytes are shown as U+FFFD in the dead-letter table".into(),
                })
            } else {
                event::check(raw, &env)
            };
            match checked_event {
                Ok(meta) => checked.push((meta, *raw)),
                Err(r) => {
                    let claimed = claimed_type(raw);
                    records.push(
                        event::rejected(claimed.as_deref(), &r, &env).record(raw.get().as_bytes()),
                    );
                    rejected.push((index, r));
                }
            }
        }
        let mut dedupe = c.dedupe.lock().expect("dedupe lock");
        for (meta, raw) in checked {
            let key = dedupe::key(
                source,
                meta.message_id.as_deref().expect("checked events have ids"),
            );
            if dedupe.insert(key, now) {
                keys.push(key);
                records.push(meta.record(raw.get().as_bytes()));
            } else {
                duplicates += 1;
            }
        }
    }
    let accepted = keys.len() as u64;
    for (_, r) in &rejected {
        metrics::counter!(m::EVENTS_REJECTED, "source" => source.to_string(), "reason" => r.code)
            .increment(1);
    }
    if duplicates > 0 {
        c.counters[source].1.increment(duplicates);
    }
    let mut in_flight = InFlight {
        dedupe: &c.dedupe,
        keys,
        durable: false,
    };
    if !records.is_empty() {
        match c.log.append(records).await {
            Ok(_) => in_flight.durable = true,
            Err(e) => {
                return match e {
                    LogError::Full { .. } => {
                        error(StatusCode::TOO_MANY_REQUESTS, "log_full", e.to_string())
                    }
                    other => {
                        warn!(error = %other, "collect: could not store events");
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "storage_unavailable",
                            "the events could not be stored; retry later",
                        )
                    }
                };
            }
        }
    }
    drop(in_flight);
    c.counters[source].0.increment(accepted);
    if accepted == 0 && duplicates == 0 && !rejected.is_empty() {
        let (index, r) = &rejected[0];
        let at = if path_type.is_none() {
            format!("batch[{index}]: ")
        } else {
            String::new()
        };
        let mut resp = error(
            StatusCode::BAD_REQUEST,
            r.code,
            format!("{at}{}", r.message),
        );
        if let Ok(v) = HeaderValue::from_str(&r.field) {
            resp.headers_mut().insert("x-tideway-field", v);
        }
        return resp;
    }
    if rejected.is_empty() {
        return success();
    }
    let mut answer = json!({"success": true});
    answer["rejected"] = rejected
        .iter()
        .map(|(i, r)| json!({"index": i, "field": r.field, "code": r.code, "message": r.message}))
        .collect();
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// `200 {"success":true}`, as Segment answers.
fn success() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"success":true}"#,
    )
        .into_response()
}

/// The ids a request added to the dedupe index: settled once its events are durable, and
/// forgotten otherwise, also when the request is dropped half-way (the client went away), so
/// that a retry is accepted. (If the append still lands after such a drop, the retry is stored
/// twice: at least once, never lost.)
struct InFlight<'a> {
    dedupe: &'a Mutex<Dedupe>,
    keys: Vec<u64>,
    durable: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut d = self.dedupe.lock().expect("dedupe lock");
        for key in &self.keys {
            if self.durable {
                d.settle(*key);
            } else {
                d.remove(*key);
            }
        }
    }
}

fn claimed_type(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct T {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    serde_json::from_str::<T>(raw.get())
        .ok()
        .and_then(|t| t.kind)
        .and_then(|k| k.as_str().map(str::to_string))
}

/// Decompresses a gzip body; refuses other encodings and bodies over `limit`.
fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            let read = flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Err(e) => Err(fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_gzip",
                    format!("the body says Content-Encoding: gzip but does not decompress: {e}"),
                )),
                Ok(n) if n > limit => Err(fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    format!(
                        "the decompressed body is over the limit of {limit} bytes; send smaller batches"
                    ),
                )),
                Ok(_) => Ok(out.into()),
            }
        }
        other => Err(fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported; send gzip or no encoding"),
        )),
    }
}

/// The source of the request's write key: HTTP Basic user first, then `writeKey` in the body.
fn authenticate<'c>(
    c: &'c Collector,
    headers: &HeaderMap,
    body_key: Option<&RawValue>,
    query_key: Option<String>,
) -> Result<&'c str, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|userpass| {
            userpass
                .split_once(':')
                .map_or(userpass.clone(), |(u, _)| u.to_string())
        });
    let from_body = body_key.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    let key = match from_header
        .filter(|k| !k.is_empty())
        .or(from_body)
        .or(query_key)
    {
        Some(k) => k,
        None => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "missing_write_key",
                "no write key: send it as the HTTP Basic user (`Authorization: Basic base64(KEY:)`) or as `writeKey` in the body",
            ));
        }
    };
    match c.keys.get(&key) {
        Some(source) => Ok(source.as_str()),
        None => Err(fail(
            StatusCode::UNAUTHORIZED,
            "invalid_write_key",
            format!(
                "unknown write key `{}`; each source's key is under [collect.sources.NAME] write_key in tideway.toml",
                redact(&key)
            ),
        )),
    }
}

/// Shows enough of a key to recognize it, not enough to use it.
fn redact(key: &str) -> String {
    let shown: String = key.chars().take(4).collect();
    format!("{shown}…")
}

async fn settings(
    State(c): State<Arc<Collector>>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !c.keys.contains_key(&write_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_write_key",
            format!("unknown write key `{}`", redact(&write_key)),
        );
    }
    let header_text = |name: &str| headers.get(name).and_then(|h| h.to_str().ok());
    let host = header_text("x-forwarded-host")
        .or(header_text("host"))
        .unwrap_or("127.0.0.1:8080");
    // Behind a TLS proxy the page is https: http would be blocked as mixed content.
    let protocol = header_text("x-forwarded-proto").unwrap_or("http");
    // analytics.js posts to `${protocol}://${apiHost}/t` etc.; it reads everything else here
    // and needs `plan` and `integrations` to be objects.
    axum::Json(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    }))
    .into_response()
}

async fn health(State(c): State<Arc<Collector>>) -> Response {
    let stats = c.log.stats();
    axum::Json(json!({
        "status": "ok",
        "log_end": stats.end,
        "log_bytes": stats.bytes,
        "loader_offset": c.log.committed(crate::loader::CONSUMER),
    }))
    .into_response()
}

async fn metrics_text(State(c): State<Arc<Collector>>) -> Response {
    let stats = c.log.stats();
    metrics::gauge!(m::LOG_BYTES).set(stats.bytes as f64);
    metrics::gauge!(m::LOG_END_OFFSET).set(stats.end as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
        .into_response()
}
