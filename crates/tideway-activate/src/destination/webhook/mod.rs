//! A generic webhook: events POSTed as JSON, in batches or one per request, signed with
//! HMAC-SHA256 when a secret is set.
//!
//! ```toml
//! [destinations.hook]
//! type = "webhook"
//! url = "https://hooks.example.com/tideway"
//! # method = "POST"                        # POST | PUT
//! # headers = { "X-Team" = "growth", Authorization = "Bearer ${HOOK_TOKEN}" }
//! # secret = "${HOOK_SECRET}"              # X-Tideway-Signature: sha256=<hex HMAC of the body>
//! # batch_size = 100                       # 1: the body is the event itself
//! # requests_per_second = 50
//! # concurrency = 4
//! ```
//!
//! A batch's body is `{"batch": [event, ...], "sentAt": "<ISO-8601>"}` (the shape of Segment's
//! batch call); with `batch_size = 1` the body is the event. Any 2xx accepts every event of the
//! call; 429, 408 and 5xx are retried (honoring `Retry-After`); another 4xx refuses the call
//! (the delivery layer then splits the batch to find the events at fault).

use std::collections::BTreeMap;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde::Deserialize;
use sha2::Sha256;
use tideway_core::config::{Diags, Secret};
use toml::Spanned;

use super::http::{Client, Exchange, send_all};
use super::{BatchLimits, DeliveryError, Destination, OutboundEvent, Outcome};

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Tideway-Signature";

/// `[destinations.NAME]` with `type = "webhook"`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub method: Method,
    pub headers: BTreeMap<String, Secret>,
    pub secret: Option<Secret>,
    pub batch_size: usize,
    pub requests_per_second: Option<f64>,
    pub concurrency: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    _kind: String,
    url: Spanned<String>,
    method: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    secret: Option<Spanned<String>>,
    batch_size: Option<Spanned<usize>>,
    requests_per_second: Option<Spanned<f64>>,
    concurrency: Option<usize>,
}

impl WebhookConfig {
    /// Checks `[destinations.NAME]` of `only` (see [`crate::config::destinations`]).
    pub fn parse(
        name: &str,
        only: &str,
        diags: &mut Diags<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<WebhookConfig> {
        let raw: Raw = crate::config::parse_one(only, name, diags)?;
        let url = diags.plain(&raw.url, env).unwrap_or_default();
        match reqwest::Url::parse(&url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => diags.at(
                Some(raw.url.span()),
                format!("`{url}` is not an http(s) URL, e.g. `https://hooks.example.com/tideway`"),
            ),
        }
        let method = match raw
            .method
            .as_ref()
            .map(|m| m.get_ref().to_ascii_uppercase())
        {
            None => Method::POST,
            Some(m) if m == "POST" => Method::POST,
            Some(m) if m == "PUT" => Method::PUT,
            Some(m) => {
                diags.at(
                    raw.method.as_ref().map(Spanned::span),
                    format!("webhook method `{m}` is not supported; use POST or PUT"),
                );
                Method::POST
            }
        };
        let headers = raw
            .headers
            .iter()
            .map(|(k, v)| {
                let value = diags.plain(v, env).unwrap_or_default();
                (k.clone(), Secret::new(value))
            })
            .collect();
        let secret = raw.secret.as_ref().map(|s| diags.secret("secret", s, env));
        let batch_size = match raw.batch_size {
            Some(b) if *b.get_ref() == 0 || *b.get_ref() > 10_000 => {
                diags.at(
                    Some(b.span()),
                    "`batch_size` is the events per request, from 1 to 10000",
                );
                1
            }
            Some(b) => b.into_inner(),
            None => 100,
        };
        let requests_per_second = match raw.requests_per_second {
            Some(r) if *r.get_ref() <= 0.0 => {
                diags.at(Some(r.span()), "`requests_per_second` must be above 0");
                None
            }
            r => r.map(Spanned::into_inner),
        };
        Some(WebhookConfig {
            url,
            method,
            headers,
            secret,
            batch_size,
            requests_per_second,
            concurrency: raw.concurrency.unwrap_or(4).clamp(1, 64),
        })
    }
}

/// The webhook destination.
#[derive(Debug)]
pub struct Webhook {
    name: String,
    config: WebhookConfig,
    client: Client,
}

impl Webhook {
    pub fn new(name: &str, config: WebhookConfig) -> Webhook {
        let mut secrets: Vec<String> = config
            .headers
            .values()
            .map(|s| s.expose().to_string())
            .collect();
        secrets.extend(config.secret.as_ref().map(|s| s.expose().to_string()));
        Webhook {
            name: name.to_string(),
            client: Client::new(secrets),
            config,
        }
    }

    /// The request body for `batch`.
    pub fn body(&self, batch: &[OutboundEvent]) -> String {
        if self.config.batch_size == 1 && batch.len() == 1 {
            return event_json(&batch[0]).to_string();
        }
        serde_json::json!({
            "batch": batch.iter().map(event_json).collect::<Vec<_>>(),
            "sentAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .to_string()
    }

    fn request(&self, body: String) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(self.config.method.clone(), &self.config.url)
            .header("Content-Type", "application/json");
        for (k, v) in &self.config.headers {
            request = request.header(k, v.expose());
        }
        if let Some(secret) = &self.config.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret.expose(), &body));
        }
        request.body(body)
    }
}

/// An event as the webhook sends it: a delete carries `"tideway": {"op": "delete"}`.
fn event_json(e: &OutboundEvent) -> serde_json::Value {
    let mut event = e.event.clone();
    if e.op != super::Op::Upsert
        && let Some(map) = event.as_object_mut()
    {
        map.insert("tideway".into(), serde_json::json!({"op": e.op.name()}));
    }
    event
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Destination for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        // A webhook has no read-only call: an empty batch is the write that changes nothing.
        let body =
            serde_json::json!({"batch": [], "sentAt": chrono::Utc::now().to_rfc3339()}).to_string();
        let answer = self.client.send(self.request(body.clone()), &body).await?;
        match answer.outcome() {
            Outcome::Delivered => Ok(()),
            Outcome::Retry { error, .. } | Outcome::Rejected(error) => Err(error),
        }
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let body = self.body(batch);
        send_all(&self.client, self.request(body.clone()), &body, batch.len()).await
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.config.batch_size,
            max_bytes: 4 * 1024 * 1024,
            requests_per_second: self.config.requests_per_second,
            rate_window: None,
            concurrency: self.config.concurrency,
        }
    }

    fn inspect(&self) -> Vec<Exchange> {
        self.client.exchanges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
