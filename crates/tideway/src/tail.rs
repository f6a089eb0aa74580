//! `tideway tail`: live events as the collector accepts them and as each live connection
//! delivers them. `tideway serve` streams them as NDJSON at `GET /v1/tail` (behind the admin
//! token, like the Profile API); the command prints them a line each.
//!
//! ```text
//! 12:00:01.201  received   web   track "Order Completed"  user cus_00042   #1041
//! 12:00:01.262  delivered  web_to_hook -> hook  track "Order Completed"   #1041
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tideway_activate::forward::Connection;
use tideway_collect::event::Meta;
use tideway_collect::log::EventLog;

#[derive(Clone)]
struct Tail {
    log: Arc<dyn EventLog>,
    connections: Arc<Vec<Arc<Connection>>>,
    token: Arc<str>,
}

/// The `/v1/tail` route over `log` and the running `connections`.
pub fn routes(log: Arc<dyn EventLog>, connections: Vec<Arc<Connection>>, token: String) -> Router {
    Router::new()
        .route("/v1/tail", get(stream))
        .with_state(Tail {
            log,
            connections: Arc::new(connections),
            token: token.into(),
        })
}

/// One received record as a tail line.
fn received(offset: u64, payload: &[u8]) -> Option<Value> {
    let (meta, body) = Meta::parse(payload).ok()?;
    let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = meta.kind.clone().unwrap_or_default();
    Some(json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "kind": if meta.k == "event" { "received" } else { "rejected" },
        "source": meta.source,
        "event": match event.get("event").and_then(Value::as_str) {
            Some(name) if kind == "track" => format!("track \"{name}\""),
            _ => kind,
        },
        "user": event.get("userId").or_else(|| event.get("anonymousId")),
        "messageId": meta.message_id,
        "reason": meta.reason,
        "offset": offset,
    }))
}

async fn stream(State(tail): State<Tail>, headers: HeaderMap) -> Response {
    if !crate::profile_api::authorized(&headers, &tail.token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": "unauthorized", "message": format!("the tail needs the admin token (${}) as HTTP Basic user or Bearer token", crate::profile_api::TOKEN_VAR)})),
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(1024);
    // Arrivals: a reader of the log from its end that never commits.
    let log = tail.log.clone();
    let arrivals = tx.clone();
    tokio::spawn(async move {
        let mut from = log.stats().end;
        loop {
            let Ok(records) = log.read(from, 500, Duration::from_millis(500)).await else {
                return;
            };
            for r in records {
                from = r.offset + 1;
                if let Some(line) = received(r.offset, &r.payload)
                    && arrivals.send(line).await.is_err()
                {
                    return;
                }
            }
            if arrivals.is_closed() {
                return;
            }
        }
    });
    // Each connection's deliveries.
    for connection in tail.connections.iter() {
        let mut sent = connection.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match sent.recv().await {
                    Ok(s) => {
                        let mut line = serde_json::to_value(&s).unwrap_or(Value::Null);
                        line["kind"] = json!(s.outcome);
                        line["at"] = json!(
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        );
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let line = json!({"kind": "skipped", "message": format!("{n} lines skipped: the tail reads slower than events arrive")});
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }
    drop(tx);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(bytes::Bytes::from(bytes)), rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// A tail line as text.
pub fn text(line: &Value) -> String {
    let s = |k: &str| {
        line.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let at = s("at");
    let clock = at.get(11..23).unwrap_or(&at);
    let offset = line
        .get("offset")
        .and_then(Value::as_u64)
        .map(|o| format!("#{o}"))
        .unwrap_or_default();
    match s("kind").as_str() {
        "received" => format!(
            "{clock}  received   {:<6} {:<28} user {:<14} {offset}",
            s("source"),
            s("event"),
            line.get("user").map_or(String::new(), |u| u
                .as_str()
                .map_or(u.to_string(), str::to_string))
        ),
        "rejected" => format!(
            "{clock}  rejected   {:<6} {}  {offset}",
            s("source"),
            s("reason")
        ),
        "skipped" => format!("{clock}  {}", s("message")),
        kind => {
            let message = s("message");
            format!(
                "{clock}  {kind:<10} {} -> {}  {:<28} {offset}{}",
                s("connection"),
                s("destination"),
                s("event"),
                if message.is_empty() {
                    String::new()
                } else {
                    format!("  {message}")
                }
            )
        }
    }
}

/// `tideway tail`: connects to `url` (a running `tideway serve`) and prints each line.
pub async fn run(url: &str, token: &str, json_lines: bool) -> Result<()> {
    let client = reqwest::Client::new();
    let mut response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}: is `tideway serve` running there?"))?;
    if response.status() == StatusCode::UNAUTHORIZED {
        bail!(
            "{url} refused the admin token: set ${} to the token `tideway serve` was started with",
            crate::profile_api::TOKEN_VAR
        );
    }
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    eprintln!("tailing {url}; Ctrl-C to stop");
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(n) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=n).collect();
            let Ok(value) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if json_lines {
                println!("{value}");
            } else {
                println!("{}", text(&value));
            }
        }
    }
    Ok(())
}
