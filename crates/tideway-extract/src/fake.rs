//! An in-process server that speaks Kustomer's REST API, for tests and the demo.
//!
//! It serves what Tideway's Kustomer source reads, in Kustomer's shapes: JSON:API documents
//! with relative `links.next`, `GET /v1/{customers,conversations,companies,users,teams,tags}`
//! pages in creation order, `POST /v1/{customers,conversations,companies}/search` with
//! Kustomer's search body (`{"and": [{"customer_updated_at": {"gte": ISO}}], "sort": ...}`)
//! sorted by `(updatedAt, id)` and **capped at 10,000 results** (a page past the cap is a 400,
//! as Kustomer answers), `GET /v1/conversations/{id}/messages`, `GET /v1/customers/{id}/notes`,
//! bearer authentication (401 otherwise) and `X-RateLimit-*` headers.
//!
//! Faults are injected deterministically: every `n`th request a 429 (with `Retry-After`) or a
//! 500, or, after a number of requests, 503 for every request (a dead API).
//!
//! The data is generated from a seed, irregular on purpose: sparse custom attributes, fields
//! whose type changes between records (`zipCode` a number or a string, `preferences` an
//! object or a string), lists of any length, and many records sharing one `updatedAt`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The token the fake accepts.
pub const TOKEN: &str = "fake-kustomer-key";

/// Kustomer's search cap.
pub const CAP: usize = 10_000;

/// Injected faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every `n`th request answers 429 with `Retry-After: 0`.
    pub every_429: Option<u64>,
    /// Every `n`th request answers 500.
    pub every_500: Option<u64>,
    /// After this many requests, every request answers 503.
    pub dead_after: Option<u64>,
}

/// The fake's data and faults; change them between runs through [`FakeKustomer::store`].
#[derive(Debug, Default)]
pub struct Store {
    /// Records per kind, in creation order.
    pub records: BTreeMap<String, Vec<Value>>,
    /// Messages per conversation id.
    pub messages: BTreeMap<String, Vec<Value>>,
    /// Notes per customer id.
    pub notes: BTreeMap<String, Vec<Value>>,
    /// Faults to inject.
    pub faults: Faults,
}

/// A running fake Kustomer API.
#[derive(Debug, Clone)]
pub struct FakeKustomer {
    /// `http://127.0.0.1:PORT/v1/`.
    pub base_url: String,
    /// The data and faults.
    pub store: Arc<Mutex<Store>>,
    /// Requests answered so far.
    pub requests: Arc<AtomicU64>,
}

#[derive(Clone)]
struct App {
    store: Arc<Mutex<Store>>,
    requests: Arc<AtomicU64>,
}

impl FakeKustomer {
    /// Starts the fake on a free loopback port with `customers` customers and
    /// `conversations` conversations generated from `seed`.
    pub async fn start(
        customers: usize,
        conversations: usize,
        seed: u64,
    ) -> std::io::Result<FakeKustomer> {
        let store = Arc::new(Mutex::new(Store::generate(customers, conversations, seed)));
        Self::serve(store, "127.0.0.1:0".parse().expect("an address")).await
    }

    /// Serves `store` on `addr`.
    pub async fn serve(
        store: Arc<Mutex<Store>>,
        addr: SocketAddr,
    ) -> std::io::Result<FakeKustomer> {
        let requests = Arc::new(AtomicU64::new(0));
        let app = App {
            store: store.clone(),
            requests: requests.clone(),
        };
        let router = Router::new()
            .route("/v1/{kind}", get(list))
            .route("/v1/{kind}/search", post(search))
            .route("/v1/{kind}/{id}/{sub}", get(sub_list))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeKustomer {
            base_url: format!("http://{addr}/v1/"),
            store,
            requests,
        })
    }

    /// Updates `updated` records of each searchable kind and adds `added` new ones, all with
    /// an `updatedAt` later than any before (a day-2 delta).
    pub fn advance(&self, updated: usize, added: usize, seed: u64) {
        self.store
            .lock()
            .expect("store lock")
            .advance(updated, added, seed);
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.store.lock().expect("store lock").faults = faults;
    }
}

const T0: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a valid instant")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn object_id(n: u64, salt: u64) -> String {
    format!("{:08x}{:016x}", salt as u32, n)
}

impl Store {
    /// Generated data (see the module docs).
    pub fn generate(customers: usize, conversations: usize, seed: u64) -> Store {
        let mut r = StdRng::seed_from_u64(seed);
        let mut store = Store::default();
        let users: Vec<Value> = (0..5)
            .map(|i| {
                json!({"type": "user", "id": format!("user_{i}"),
                       "attributes": {"name": format!("Agent {i}"), "email": format!("agent{i}@support.example"),
                                      "createdAt": iso(T0), "updatedAt": iso(T0)}})
            })
            .collect();
        store.records.insert("users".into(), users);
        store.records.insert(
            "teams".into(),
            (0..3)
                .map(|i| json!({"type": "team", "id": format!("team_{i}"), "attributes": {"name": format!("Tier {i}"), "members": [format!("user_{i}")], "updatedAt": iso(T0)}}))
                .collect(),
        );
        store.records.insert(
            "tags".into(),
            ["vip", "churn-risk", "beta", "shipping", "refund"]
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"type": "tag", "id": format!("tag_{i}"), "attributes": {"name": t, "updatedAt": iso(T0)}}))
                .collect(),
        );
        store
            .records
            .insert("companies".into(), (0..4).map(|i| company(i, T0)).collect());
        let mut cust = Vec::with_capacity(customers);
        for i in 0..customers {
            // Timestamps on a coarse grid: many customers share one updatedAt.
            let updated = T0 + (i as i64 / 7) * 60_000;
            let c = customer(&mut r, i, updated);
            let id = c["id"].as_str().expect("an id").to_string();
            if i % 3 == 0 {
                store.notes.insert(
                    id.clone(),
                    vec![json!({"type": "note", "id": format!("note_{i}"),
                                "attributes": {"body": format!("called customer {i}"), "createdAt": iso(updated), "updatedAt": iso(updated)},
                                "relationships": {"customer": {"data": {"type": "customer", "id": id}}}})],
                );
            }
            cust.push(c);
        }
        let mut conv = Vec::with_capacity(conversations);
        for j in 0..conversations {
            let updated = T0 + (j as i64 / 5) * 60_000 + 30_000;
            let customer_id = cust
                .get(j % customers.max(1))
                .and_then(|c| c["id"].as_str())
                .unwrap_or("none")
                .to_string();
            let (v, messages) = conversation(&mut r, j, updated, &customer_id);
            store
                .messages
                .insert(v["id"].as_str().expect("an id").to_string(), messages);
            conv.push(v);
        }
        store.records.insert("customers".into(), cust);
        store.records.insert("conversations".into(), conv);
        store
    }

    fn advance(&mut self, updated: usize, added: usize, seed: u64) {
        let mut r = StdRng::seed_from_u64(seed);
        let latest = ["customers", "conversations"]
            .iter()
            .flat_map(|k| self.records[*k].iter())
            .filter_map(|v| v["attributes"]["updatedAt"].as_str())
            .filter_map(tideway_core::time::parse_time)
            .max()
            .map_or(T0, |t| t.timestamp_millis());
        let later = latest + 3_600_000;
        for kind in ["customers", "conversations"] {
            let n = self.records[kind].len();
            for k in 0..updated.min(n) {
                let i = (k * 7919) % n;
                let record = &mut self.records.get_mut(kind).expect("a kind")[i];
                let a = &mut record["attributes"];
                a["updatedAt"] = json!(iso(later + (k as i64 / 3) * 1000));
                a["rev"] = json!(a["rev"].as_i64().unwrap_or(0) + 1);
                if kind == "customers" {
                    // Lists change length: a new tag, one email fewer.
                    if let Some(tags) = a["tags"].as_array_mut() {
                        tags.push(json!("reopened"));
                    }
                    if let Some(emails) = a["emails"].as_array_mut() {
                        emails.truncate(1);
                    }
                    a["custom"]["lastSyncNum"] = json!(k);
                } else {
                    a["status"] = json!("done");
                    let id = record["id"].as_str().expect("an id").to_string();
                    let msgs = self.messages.entry(id.clone()).or_default();
                    let n = msgs.len();
                    msgs.push(message(&id, n, later, "out", "following up, thanks"));
                }
            }
            for k in 0..added {
                let i = n + k;
                let at = later + 500_000 + k as i64 * 1000;
                if kind == "customers" {
                    let c = customer(&mut r, i, at);
                    self.records.get_mut(kind).expect("a kind").push(c);
                } else {
                    let customer_id = self.records["customers"]
                        [k % self.records["customers"].len().max(1)]["id"]
                        .as_str()
                        .unwrap_or("none")
                        .to_string();
                    let (v, msgs) = conversation(&mut r, i, at, &customer_id);
                    self.messages
                        .insert(v["id"].as_str().expect("an id").to_string(), msgs);
                    self.records.get_mut(kind).expect("a kind").push(v);
                }
            }
        }
    }
}

fn company(i: usize, at: i64) -> Value {
    json!({"type": "company", "id": format!("company_{i}"),
           "attributes": {"name": (["Acme", "Globex", "Initech", "Umbrella"][i % 4]), "domains": [format!("c{i}.example")],
                          "createdAt": iso(at), "updatedAt": iso(at)}})
}

fn customer(r: &mut StdRng, i: usize, updated: i64) -> Value {
    let id = object_id(i as u64, 0x5f1a);
    let mut emails = vec![
        json!({"type": "home", "email": format!("customer{i}@example.com"), "verified": r.random_bool(0.7)}),
    ];
    if r.random_bool(0.25) {
        emails.push(
            json!({"type": "work", "email": format!("c{i}@acme.example"), "verified": false}),
        );
    }
    let phones: Vec<Value> = (0..r.random_range(0..3))
        .map(|k| json!({"type": (["mobile", "work", "home"][k % 3]), "phone": format!("+1202555{:04}", r.random_range(0..10_000))}))
        .collect();
    let tags: Vec<Value> = ["vip", "beta", "churn-risk"]
        .iter()
        .filter(|_| r.random_bool(0.3))
        .map(|t| json!(t))
        .collect();
    let mut custom = serde_json::Map::new();
    if r.random_bool(0.6) {
        custom.insert(
            "planStr".into(),
            json!((["free", "pro", "enterprise"][i % 3])),
        );
    }
    if r.random_bool(0.45) {
        let points = r.random_range(0..50_000);
        let text = format!("{points:.0}");
        custom.insert(
            "loyaltyPoints".into(),
            number_or_text(r, 0.85, points, text),
        );
    }
    if r.random_bool(0.25) {
        let zip = r.random_range(501..99_950);
        let text = format!("{zip:05}");
        custom.insert("zipCode".into(), number_or_text(r, 0.5, zip, text));
    }
    if r.random_bool(0.1) {
        custom.insert(
            "preferences".into(),
            if r.random_bool(0.7) {
                json!({"channel": "email", "marketingOptIn": r.random_bool(0.5)})
            } else {
                json!("email-only")
            },
        );
    }
    if r.random_bool(0.3) {
        custom.insert(
            "ltvNum".into(),
            json!((r.random_range(0..100_000) as f64) / 100.0),
        );
    }
    json!({
        "type": "customer", "id": id,
        "attributes": {
            "name": format!("Customer {i}"), "displayName": format!("Customer {i}"),
            "externalId": format!("usr_{i:08}"),
            "emails": emails, "phones": phones, "tags": tags, "custom": custom,
            "locale": if r.random_bool(0.7) { json!("en") } else { Value::Null },
            "createdAt": iso(T0 - 86_400_000 + i as i64), "updatedAt": iso(updated),
            "lastActivityAt": iso(updated - 60_000),
            "sentiment": {"polarity": r.random_range(-1..=1), "confidence": (r.random_range(0..1000) as f64) / 1000.0},
            "conversationCounts": {"all": r.random_range(0..10), "open": r.random_range(0..3)},
            "verified": r.random_bool(0.5), "rev": 1
        },
        "relationships": {
            "org": {"data": {"type": "org", "id": "org_1"}},
            "createdBy": {"data": {"type": "user", "id": format!("user_{}", i % 5)}}
        },
        "links": {"self": format!("/v1/customers/{id}")}
    })
}

/// A field whose type changes between records: the number with probability `p`, else text.
fn number_or_text(r: &mut StdRng, p: f64, number: i64, text: String) -> Value {
    if r.random_bool(p) {
        json!(number)
    } else {
        json!(text)
    }
}

fn message(conversation: &str, k: usize, at: i64, direction: &str, body: &str) -> Value {
    json!({"type": "message", "id": format!("{conversation}_m{k}"),
           "attributes": {"direction": direction, "channel": "email", "body": body, "createdAt": iso(at), "updatedAt": iso(at),
                          "attachments": if k % 4 == 3 { json!([{"name": format!("img_{k}.png"), "contentType": "image/png", "size": 1000 + k}]) } else { json!([]) }},
           "relationships": {"conversation": {"data": {"type": "conversation", "id": conversation}}}})
}

fn conversation(r: &mut StdRng, j: usize, updated: i64, customer_id: &str) -> (Value, Vec<Value>) {
    let id = object_id(j as u64, 0x6a00);
    let n = r.random_range(1..5);
    let messages: Vec<Value> = (0..n)
        .map(|k| {
            message(
                &id,
                k,
                updated - 3_600_000 + k as i64 * 60_000,
                if k % 2 == 0 { "in" } else { "out" },
                "where is my order",
            )
        })
        .collect();
    let custom = match j % 3 {
        0 => json!({"orderNumberStr": format!("#{}", 100_000 + j)}),
        1 => json!({"orderNumberStr": 100_000 + j, "refundAmountNum": 19.99}),
        _ => Value::Null,
    };
    let v = json!({
        "type": "conversation", "id": id,
        "attributes": {
            "name": format!("Conversation {j}"), "customer": customer_id,
            "channels": ["email"], "status": if j.is_multiple_of(2) { "open" } else { "done" },
            "priority": 1 + (j % 5), "messageCount": n,
            "satisfaction": if j.is_multiple_of(4) { json!({"score": 1 + j % 5}) } else { Value::Null },
            "custom": custom,
            "createdAt": iso(updated - 3_600_000), "updatedAt": iso(updated), "rev": 1
        },
        "relationships": {
            "customer": {"data": {"type": "customer", "id": customer_id}},
            "org": {"data": {"type": "org", "id": "org_1"}}
        },
        "links": {"self": format!("/v1/conversations/{id}")}
    });
    (v, messages)
}

fn error(status: StatusCode, title: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": [{"status": status.as_u16(), "title": title}]})),
    )
        .into_response()
}

/// Auth and faults; `Some(response)` stops the request.
fn guard(app: &App, headers: &HeaderMap) -> Option<Response> {
    let n = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let faults = app.store.lock().expect("store lock").faults.clone();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if faults.dead_after.is_some_and(|d| n > d) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        ));
    }
    if faults.every_429.is_some_and(|k| n.is_multiple_of(k)) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        r.headers_mut()
            .insert("retry-after", "0".parse().expect("a header value"));
        return Some(r);
    }
    if faults.every_500.is_some_and(|k| n.is_multiple_of(k)) {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    }
    None
}

#[allow(clippy::result_large_err)] // an axum answer, returned as is
fn paging(q: &BTreeMap<String, String>) -> Result<(usize, usize), Response> {
    let page = q.get("page").map_or(Ok(1), |p| p.parse::<usize>());
    let size = q.get("pageSize").map_or(Ok(100), |p| p.parse::<usize>());
    match (page, size) {
        (Ok(p), Ok(s)) if p >= 1 && (1..=1000).contains(&s) => Ok((p, s)),
        _ => Err(error(StatusCode::BAD_REQUEST, "Bad page or pageSize")),
    }
}

fn page_doc(records: &[Value], page: usize, size: usize, total: usize, path: &str) -> Response {
    let start = (page - 1) * size;
    let data: Vec<Value> = records.iter().skip(start).take(size).cloned().collect();
    let link = |p: usize| format!("{path}?page={p}&pageSize={size}");
    let next = (start + size < total).then(|| link(page + 1));
    let body = json!({
        "data": data,
        "links": {"self": link(page), "first": link(1), "prev": (page > 1).then(|| link(page - 1)), "next": next},
        "meta": {"pageSize": size, "page": page}
    });
    let mut response = axum::Json(body).into_response();
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", "1000".parse().expect("a header value"));
    h.insert(
        "x-ratelimit-remaining",
        "999".parse().expect("a header value"),
    );
    response
}

async fn list(
    State(app): State<App>,
    Path(kind): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guard(&app, &headers) {
        return r;
    }
    let (page, size) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = app.store.lock().expect("store lock");
    match store.records.get(&kind) {
        Some(records) => page_doc(records, page, size, records.len(), &format!("/v1/{kind}")),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn search(
    State(app): State<App>,
    Path(kind): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = guard(&app, &headers) {
        return r;
    }
    let (page, size) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if page * size > CAP && (page - 1) * size >= CAP {
        return error(
            StatusCode::BAD_REQUEST,
            "search results are limited to 10000; narrow the query",
        );
    }
    let Ok(query) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Body is not JSON");
    };
    let field = format!(
        "{}_updated_at",
        kind.trim_end_matches('s').replace("companie", "company")
    );
    let mut gte: Option<chrono::DateTime<chrono::Utc>> = None;
    for criterion in query["and"].as_array().into_iter().flatten() {
        if let Some(v) = criterion[&field]["gte"].as_str() {
            gte = tideway_core::time::parse_time(v);
        }
    }
    let store = app.store.lock().expect("store lock");
    let Some(records) = store.records.get(&kind) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut hits: Vec<(chrono::DateTime<chrono::Utc>, &str, &Value)> = records
        .iter()
        .filter_map(|r| {
            let at = tideway_core::time::parse_time(r["attributes"]["updatedAt"].as_str()?)?;
            Some((at, r["id"].as_str()?, r))
        })
        .filter(|(at, _, _)| gte.is_none_or(|g| *at >= g))
        .collect();
    hits.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let total = hits.len().min(CAP);
    let sorted: Vec<Value> = hits
        .into_iter()
        .take(CAP)
        .map(|(_, _, r)| r.clone())
        .collect();
    page_doc(&sorted, page, size, total, &format!("/v1/{kind}/search"))
}

async fn sub_list(
    State(app): State<App>,
    Path((kind, id, sub)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = guard(&app, &headers) {
        return r;
    }
    let (page, size) = match paging(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = app.store.lock().expect("store lock");
    let records = match (kind.as_str(), sub.as_str()) {
        ("conversations", "messages") => store.messages.get(&id),
        ("customers", "notes") => store.notes.get(&id),
        _ => return error(StatusCode::NOT_FOUND, "Not Found"),
    };
    let empty = Vec::new();
    let records = records.unwrap_or(&empty);
    page_doc(
        records,
        page,
        size,
        records.len(),
        &format!("/v1/{kind}/{id}/{sub}"),
    )
}
