//! A local webhook receiver: stores what it is sent, checks signatures, and can refuse bad
//! events or throttle, for tests, benchmarks and the demo.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

/// How the receiver behaves.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// When set, requests must carry a valid `X-Tideway-Signature` for this secret (else 401).
    pub secret: Option<String>,
    /// Requests per second accepted before answering 429 with `Retry-After: 1`.
    pub requests_per_second: Option<f64>,
    /// A request holding an event whose `traits.bad` or `properties.bad` is true gets a 400.
    pub refuse_bad: bool,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Value>,
    requests: u64,
    throttled: u64,
    refused: u64,
    headers: Vec<HeaderMap>,
    window: Option<(Instant, f64)>,
    requests_per_second: Option<f64>,
}

/// A running receiver.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    options: SinkOptions,
    stop: Arc<tokio::sync::Notify>,
}

impl WebhookSink {
    /// Starts a receiver on 127.0.0.1 at a free port.
    pub async fn start(options: SinkOptions) -> std::io::Result<WebhookSink> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let sink = WebhookSink {
            url: format!("http://{addr}/hook"),
            inner: Arc::new(Mutex::new(Inner {
                requests_per_second: options.requests_per_second,
                ..Default::default()
            })),
            options,
            stop: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(receive).put(receive))
            .with_state(sink.clone());
        let stop = sink.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await;
        });
        Ok(sink)
    }

    /// Every event received and accepted, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().expect("sink lock").events.clone()
    }

    pub fn event_count(&self) -> usize {
        self.inner.lock().expect("sink lock").events.len()
    }

    /// (requests, answered 429, answered 400).
    pub fn counts(&self) -> (u64, u64, u64) {
        let i = self.inner.lock().expect("sink lock");
        (i.requests, i.throttled, i.refused)
    }

    /// The headers of every request.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.inner.lock().expect("sink lock").headers.clone()
    }

    /// Changes the rate limit (`None`: no limit).
    pub fn set_requests_per_second(&self, rps: Option<f64>) {
        let mut inner = self.inner.lock().expect("sink lock");
        inner.requests_per_second = rps;
        inner.window = None;
    }

    pub fn stop(&self) {
        self.stop.notify_waiters();
    }
}

async fn receive(State(sink): State<WebhookSink>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = sink.inner.lock().expect("sink lock");
    inner.requests += 1;
    inner.headers.push(headers.clone());
    if let Some(rps) = inner.requests_per_second {
        // A one-second fixed window.
        let now = Instant::now();
        let (start, used) = inner.window.get_or_insert((now, 0.0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *used = 0.0;
        }
        *used += 1.0;
        if *used > rps {
            inner.throttled += 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("Retry-After", "1")],
                "slow down",
            )
                .into_response();
        }
    }
    if let Some(secret) = &sink.options.secret {
        let body = String::from_utf8_lossy(&body);
        let expected = crate::destination::webhook::signature(secret, &body);
        let sent = headers
            .get(crate::destination::webhook::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        if sent != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    let events = match value.get("batch").and_then(Value::as_array) {
        Some(batch) => batch.clone(),
        None => vec![value],
    };
    let bad = |e: &Value| {
        e["traits"]["bad"] == Value::Bool(true) || e["properties"]["bad"] == Value::Bool(true)
    };
    if sink.options.refuse_bad && events.iter().any(bad) {
        inner.refused += 1;
        return (StatusCode::BAD_REQUEST, "an event is marked bad").into_response();
    }
    inner.events.extend(events);
    (StatusCode::OK, "{\"ok\":true}").into_response()
}
