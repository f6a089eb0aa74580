//! What HTTP destinations share: one client, the mapping of an answer to an [`Outcome`], and
//! the inspector of the last requests (secrets redacted).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};

use super::{DeliveryError, Outcome};

/// Requests the inspector keeps per destination.
pub const INSPECTED: usize = 20;
/// Bytes of a request or answer body the inspector keeps.
const EXCERPT: usize = 2048;
/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One request and its answer, as the inspector shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exchange {
    pub at: chrono::DateTime<chrono::Utc>,
    pub method: String,
    pub url: String,
    /// The answer's status, or 0 when no answer came (timeout, refused connection).
    pub status: u16,
    pub millis: u64,
    /// The first bytes of the request body.
    pub request: String,
    /// The first bytes of the answer, or the transport error.
    pub response: String,
}

/// An answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The answer as one outcome: 2xx delivered; 429 (honoring `Retry-After` and
    /// `X-RateLimit-Reset`), 408 and 5xx retried; any other status rejected with the body.
    pub fn outcome(&self) -> Outcome {
        let status = self.status.as_u16();
        if self.status.is_success() {
            Outcome::Delivered
        } else if status == 429 || status == 408 || self.status.is_server_error() {
            Outcome::Retry {
                after: retry_after(&self.headers),
                error: DeliveryError::external(Some(status), self.message()),
            }
        } else {
            Outcome::Rejected(DeliveryError::refused(Some(status), self.message()))
        }
    }

    /// `HTTP <status>: <body excerpt>`.
    pub fn message(&self) -> String {
        let body = self.body.trim();
        if body.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {}", self.status, excerpt(body, 500))
        }
    }
}

/// The wait a destination asked for: `Retry-After` (seconds or an HTTP date), else
/// `X-RateLimit-Reset` (seconds, or a Unix time), when `X-RateLimit-Remaining` is 0 or absent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
        }
        if let Ok(date) = chrono::DateTime::parse_from_rfc2822(v) {
            let wait = date.timestamp() - chrono::Utc::now().timestamp();
            return Some(Duration::from_secs(wait.clamp(0, 3600) as u64));
        }
    }
    if get("x-ratelimit-remaining").is_some_and(|r| r != "0") {
        return None;
    }
    let reset = get("x-ratelimit-reset")?.parse::<f64>().ok()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // Above a billion it is a Unix time, else seconds from now.
    let wait = if reset > 1e9 { reset - now } else { reset };
    Some(Duration::from_secs_f64(wait.clamp(0.0, 3600.0)))
}

fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// An HTTP client that remembers its last requests for the inspector.
#[derive(Debug)]
pub struct Client {
    client: reqwest::Client,
    /// Strings to blank out of everything the inspector keeps (API keys, tokens).
    secrets: Vec<String>,
    log: Mutex<VecDeque<Exchange>>,
}

impl Client {
    /// A client whose inspector blanks out `secrets`.
    pub fn new(secrets: Vec<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("tideway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds: no TLS or proxy setting can fail here");
        Client {
            client,
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
            log: Mutex::new(VecDeque::with_capacity(INSPECTED)),
        }
    }

    /// A request to complete with headers and a body, then [`Client::send`].
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends `request` (whose body is `body`, kept for the inspector). A transport failure
    /// (timeout, refused connection) is an `Err` that is worth retrying.
    pub async fn send(&self, request: RequestBuilder, body: &str) -> Result<Answer, DeliveryError> {
        let request = request
            .build()
            .map_err(|e| DeliveryError::external(None, format!("cannot build the request: {e}")))?;
        let method = request.method().to_string();
        let url = request.url().to_string();
        let start = Instant::now();
        let result = match self.client.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                match response.text().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(DeliveryError::external(
                        Some(status.as_u16()),
                        format!("the answer could not be read: {e}"),
                    )),
                }
            }
            Err(e) => Err(DeliveryError::external(
                None,
                format!("{method} {} failed: {}", self.redact(&url), transport(&e)),
            )),
        };
        let exchange = Exchange {
            at: chrono::Utc::now(),
            method,
            url: self.redact(&url),
            status: result.as_ref().map_or(0, |a| a.status.as_u16()),
            millis: start.elapsed().as_millis() as u64,
            request: self.redact(&excerpt(body, EXCERPT)),
            response: self.redact(&match &result {
                Ok(a) => excerpt(&a.body, EXCERPT),
                Err(e) => e.message.clone(),
            }),
        };
        let mut log = self.log.lock().expect("inspector lock poisoned");
        if log.len() == INSPECTED {
            log.pop_front();
        }
        log.push_back(exchange);
        result
    }

    /// The last requests, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log
            .lock()
            .expect("inspector lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect (is the address right and the service up?)".to_string()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let part = s.to_string();
            if !text.contains(&part) {
                text = format!("{text}: {part}");
            }
            source = s.source();
        }
        text
    }
}

/// Sends a request and maps the whole answer to one outcome for each of `n` events.
pub async fn send_all(
    client: &Client,
    request: RequestBuilder,
    body: &str,
    n: usize,
) -> Vec<Outcome> {
    match client.send(request, body).await {
        Ok(answer) => answer.outcome().all(n),
        Err(error) => Outcome::Retry { after: None, error }.all(n),
    }
}
