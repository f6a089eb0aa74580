//! Requests to a source's API: authentication, a request budget, retries.
//!
//! - **Budget.** With `requests_per_minute`, requests are paced evenly (one every `60 / rpm`
//!   seconds) before the API has to say 429: Kustomer's limit is per organization, and other
//!   jobs share it.
//! - **Rate limits.** A 429 waits for `Retry-After` (seconds or an HTTP date), else for
//!   `X-RateLimit-Reset` (seconds, or a Unix time); a success with `X-RateLimit-Remaining: 0`
//!   holds the next request until the reset. The wait pauses every request of the source.
//! - **Retries.** 429, 5xx, timeouts and refused connections are retried with exponential
//!   backoff and full jitter, up to `max_attempts`; then the run stops with an error that
//!   names the URL and the last failure. 401 and 403 stop at once (the credentials are
//!   wrong); any other 4xx too, with the API's message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::config::{Auth, KeyLocation, Method, RestSource};
use crate::error::{ExtractError, Result};

/// The first backoff; each retry doubles it (with full jitter), up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait a 429 may ask for before the run gives up waiting.
const MAX_RATE_WAIT: Duration = Duration::from_secs(300);

/// A page as the API sent it.
#[derive(Debug)]
pub struct Response {
    /// The URL that answered.
    pub url: Url,
    /// Response headers (pagination may read `Link`).
    pub headers: HeaderMap,
    /// The body.
    pub body: bytes::Bytes,
}

/// Counters of one source's requests.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Requests sent (attempts).
    pub requests: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
    /// Retried failures other than 429 (5xx, timeouts, connection errors).
    pub retried: AtomicU64,
    /// Response bytes.
    pub bytes: AtomicU64,
}

/// The HTTP client of one source.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: String,
    http: reqwest::Client,
    auth: Auth,
    headers: Vec<(String, String)>,
    max_attempts: u32,
    /// Time between two requests, from the budget.
    interval: Option<Duration>,
    /// When the next request may start (budget and rate-limit pauses).
    next_slot: Mutex<Instant>,
    token: Mutex<Option<(String, Instant)>>,
    stats: RequestStats,
}

impl Client {
    /// A client for `rest`, the source named `source`.
    pub fn new(source: &str, rest: &RestSource) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(rest.timeout)
            .user_agent(concat!("tideway/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(rest.concurrency.max(4))
            .build()
            .map_err(|e| ExtractError::RetriesExhausted {
                source_name: source.to_string(),
                method: "GET",
                url: rest.base_url.to_string(),
                attempts: 0,
                last: format!("cannot build an HTTP client: {e}"),
            })?;
        let interval = rest
            .requests_per_minute
            .filter(|rpm| *rpm > 0)
            .map(|rpm| Duration::from_secs_f64(60.0 / rpm as f64));
        Ok(Client {
            inner: Arc::new(Inner {
                source: source.to_string(),
                http,
                auth: rest.auth.clone(),
                headers: rest.headers.clone().into_iter().collect(),
                max_attempts: rest.max_attempts,
                interval,
                next_slot: Mutex::new(Instant::now()),
                token: Mutex::new(None),
                stats: RequestStats::default(),
            }),
        })
    }

    /// The request counters.
    pub fn stats(&self) -> &RequestStats {
        &self.inner.stats
    }

    /// Sends a request, retrying as the module docs say, and returns the successful answer.
    pub async fn send(&self, method: Method, url: &Url, body: Option<&str>) -> Result<Response> {
        let inner = &self.inner;
        let verb = match method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        let mut last = String::new();
        for attempt in 1..=inner.max_attempts {
            self.wait_for_slot().await;
            inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let request = self.request(method, url, body).await?;
            let outcome = request.send().await;
            let response = match outcome {
                Ok(r) => r,
                Err(e) => {
                    last = describe(&e);
                    inner.stats.retried.fetch_add(1, Ordering::Relaxed);
                    warn!(source = %inner.source, url = %url, attempt, error = %last, "request failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            if status.is_success() {
                let bytes = match response.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        last = describe(&e);
                        inner.stats.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                };
                inner
                    .stats
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if remaining(&headers) == Some(0)
                    && let Some(wait) = reset_wait(&headers)
                {
                    debug!(source = %inner.source, wait_ms = wait.as_millis() as u64, "rate limit spent; pausing until it resets");
                    self.pause(wait).await;
                }
                return Ok(Response {
                    url: url.clone(),
                    headers,
                    body: bytes,
                });
            }
            let text = response.text().await.unwrap_or_default();
            let snippet = clip(&text);
            match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    inner.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let wait = retry_after(&headers)
                        .or_else(|| reset_wait(&headers))
                        .unwrap_or_else(|| backoff(attempt))
                        .min(MAX_RATE_WAIT);
                    last = format!("429 Too Many Requests (waited {:.1}s)", wait.as_secs_f64());
                    debug!(source = %inner.source, url = %url, attempt, wait_ms = wait.as_millis() as u64, "rate limited; waiting");
                    self.pause(wait).await;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(ExtractError::Unauthorized {
                        source_name: inner.source.clone(),
                        url: url.to_string(),
                        status: status.as_u16(),
                        hint: match &inner.auth {
                            Auth::None => "whether the API needs an `[auth]` section".into(),
                            Auth::Bearer { .. } => {
                                "the token (or the Kustomer `api_key`) and its environment variable"
                                    .into()
                            }
                            Auth::Basic { username, .. } => {
                                format!("the password of user `{username}`")
                            }
                            Auth::ApiKey { name, .. } => format!("the API key `{name}`"),
                            Auth::OAuth2 { client_id, .. } => {
                                format!("the client secret of `{client_id}` and its scopes")
                            }
                        },
                    });
                }
                s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                    inner.stats.retried.fetch_add(1, Ordering::Relaxed);
                    last = format!("{status}: {snippet}");
                    warn!(source = %inner.source, url = %url, attempt, status = status.as_u16(), "server error; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                _ => {
                    return Err(ExtractError::Rejected {
                        source_name: inner.source.clone(),
                        method: verb,
                        url: url.to_string(),
                        status: status.as_u16(),
                        body: snippet,
                    });
                }
            }
        }
        Err(ExtractError::RetriesExhausted {
            source_name: inner.source.clone(),
            method: verb,
            url: url.to_string(),
            attempts: inner.max_attempts,
            last,
        })
    }

    async fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<&str>,
    ) -> Result<reqwest::RequestBuilder> {
        let inner = &self.inner;
        let mut url = url.clone();
        if let Auth::ApiKey {
            name,
            value,
            location: KeyLocation::Query,
        } = &inner.auth
        {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        let mut request = match method {
            Method::Get => inner.http.get(url),
            Method::Post => inner.http.post(url),
        };
        for (k, v) in &inner.headers {
            request = request.header(k, v);
        }
        request = match &inner.auth {
            Auth::None => request,
            Auth::Bearer { token } => request.bearer_auth(token.expose()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            Auth::ApiKey {
                name,
                value,
                location: KeyLocation::Header,
            } => request.header(name, value.expose()),
            Auth::ApiKey { .. } => request,
            Auth::OAuth2 { .. } => request.bearer_auth(self.oauth_token().await?),
        };
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        Ok(request)
    }

    /// The OAuth2 client-credentials token, fetched or renewed a minute before it expires.
    async fn oauth_token(&self) -> Result<String> {
        let inner = &self.inner;
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
        } = &inner.auth
        else {
            unreachable!("oauth_token is only called for OAuth2 sources");
        };
        let mut token = inner.token.lock().await;
        if let Some((t, expires)) = token.as_ref()
            && Instant::now() + Duration::from_secs(60) < *expires
        {
            return Ok(t.clone());
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.expose().to_string()),
        ];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let fail = |last: String| ExtractError::RetriesExhausted {
            source_name: inner.source.clone(),
            method: "POST",
            url: token_url.to_string(),
            attempts: 1,
            last,
        };
        let response = inner
            .http
            .post(token_url.clone())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            return Err(ExtractError::Unauthorized {
                source_name: inner.source.clone(),
                url: token_url.to_string(),
                status: status.as_u16(),
                hint: format!("the client id `{client_id}` and its secret"),
            });
        }
        let json: serde_json::Value = response
            .json()
            .await
            .map_err(|e| fail(format!("the token answer is not JSON: {e}")))?;
        let access = json["access_token"]
            .as_str()
            .ok_or_else(|| {
                fail(format!(
                    "the token answer has no `access_token`: {}",
                    clip(&json.to_string())
                ))
            })?
            .to_string();
        let lifetime = json["expires_in"].as_u64().unwrap_or(3600);
        *token = Some((
            access.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        Ok(access)
    }

    /// Waits for the next request slot of the budget.
    async fn wait_for_slot(&self) {
        let inner = &self.inner;
        let slot = {
            let mut next = inner.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + inner.interval.unwrap_or(Duration::ZERO);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Holds every request of the source for `wait`.
    async fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut next = self.inner.next_slot.lock().await;
            *next = (*next).max(until);
        }
    }
}

/// Exponential backoff with full jitter: a random wait up to `BASE * 2^(attempt-1)`.
fn backoff(attempt: u32) -> Duration {
    let cap = BASE_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    cap.mul_f64(rand::random::<f64>().max(0.1))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// `X-RateLimit-Reset`: seconds until the reset, or the Unix time of the reset.
fn reset_wait(headers: &HeaderMap) -> Option<Duration> {
    let value: f64 = header_number(headers, &["x-ratelimit-reset", "ratelimit-reset"])?;
    let now = chrono::Utc::now().timestamp() as f64;
    let seconds = if value > 1e9 { value - now } else { value };
    Some(Duration::from_secs_f64(
        seconds.clamp(0.0, MAX_RATE_WAIT.as_secs_f64()),
    ))
}

fn remaining(headers: &HeaderMap) -> Option<u64> {
    header_number(headers, &["x-ratelimit-remaining", "ratelimit-remaining"]).map(|v| v as u64)
}

fn header_number(headers: &HeaderMap, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn clip(text: &str) -> String {
    let text = text.trim();
    if text.len() <= 300 {
        return text.to_string();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers_are_read_in_both_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", "3".parse().unwrap());
        assert_eq!(reset_wait(&h), Some(Duration::from_secs(3)));
        let at = chrono::Utc::now().timestamp() + 5;
        h.insert("x-ratelimit-reset", at.to_string().parse().unwrap());
        let wait = reset_wait(&h).unwrap();
        assert!(
            wait <= Duration::from_secs(5) && wait >= Duration::from_secs(3),
            "{wait:?}"
        );
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert_eq!(remaining(&h), Some(0));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let b = backoff(attempt);
            assert!(b <= MAX_BACKOFF, "{attempt}: {b:?}");
            assert!(b <= BASE_BACKOFF * (1 << (attempt - 1).min(16)));
        }
    }
}
