//! The load generator the HTTP benchmarks share: open-loop requests from a pool of
//! connections, latency counted from when each request was due.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

/// What a load run measured.
pub struct Run {
    /// Requests answered with a 2xx.
    pub requests: u64,
    /// Events those requests carried (as the request builder counted them).
    pub events: u64,
    /// Requests that failed or were not answered with a 2xx.
    pub failed: u64,
    /// From the first request due to the last answer.
    pub elapsed: Duration,
    /// One per answered request, from when it was due (see [`drive`]).
    pub latencies: Vec<Duration>,
    /// One per answered request, from when it was sent: what the server and the network
    /// took, without the load generator's own lateness in sending.
    pub service: Vec<Duration>,
}

impl Run {
    /// The `p` quantile (0.0-1.0) of the latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        quantile(&self.latencies, p)
    }

    /// The `p` quantile of the latencies from send (see [`Run::service`]).
    pub fn service_percentile(&self, p: f64) -> Duration {
        quantile(&self.service, p)
    }

    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn quantile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut l = values.to_vec();
    l.sort();
    l[((l.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `total` requests over `connections` connections, each built by `request(client, i)`
/// (which also says how many events request `i` carries). With `rate` (requests per second in
/// all) every connection sends on its own schedule whatever the answers do, and latency
/// counts from when a request was due, so a late start is latency too (no coordinated
/// omission); without it, each connection sends as soon as its last answer arrived.
pub async fn drive<F>(
    total: usize,
    connections: usize,
    rate: Option<f64>,
    request: F,
) -> Result<Run>
where
    F: Fn(&reqwest::Client, usize) -> (reqwest::RequestBuilder, u64) + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, request, next, events, failed) = (
            client.clone(),
            request.clone(),
            next.clone(),
            events.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut service) = (Vec::new(), Vec::new());
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut due = started
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let scheduled = match interval {
                    Some(iv) => {
                        let at = due;
                        tokio::time::sleep_until(at.into()).await;
                        due += iv;
                        Some(at)
                    }
                    None => None,
                };
                let (builder, carried) = request(&client, i);
                let sent = Instant::now();
                match builder.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(scheduled.unwrap_or(sent).elapsed());
                        service.push(sent.elapsed());
                        events.fetch_add(carried, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (latencies, service)
        }));
    }
    let (mut latencies, mut service) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, s) = t.await?;
        latencies.extend(l);
        service.extend(s);
    }
    Ok(Run {
        requests: latencies.len() as u64,
        events: events.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
        service,
    })
}
