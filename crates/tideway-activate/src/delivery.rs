//! The delivery layer, one for every destination: batching by count and bytes, a rate limiter
//! per destination shared by everything that sends to it, retries with exponential backoff and
//! full jitter (honoring the destination's `Retry-After`), splitting a refused batch to find
//! the rows at fault, and one final [`Delivered`] per event.
//!
//! ```text
//! events ─► batches (limits: events, bytes) ─► rate limiter (GCRA; paused by Retry-After)
//!        ─► Destination::deliver ─► per-event outcomes
//!              Retry    ─► backoff, again (up to max_attempts)
//!              Rejected ─► final, unless the whole batch was refused: split it in two, again
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;

use crate::destination::{BatchLimits, DeliveryError, Destination, OutboundEvent, Outcome};

/// How often and how patiently a batch is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per event within one delivery, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles per attempt, with full jitter.
    pub base: Duration,
    /// The longest wait between attempts (a longer `Retry-After` is honored up to this).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(60),
        }
    }
}

/// The final fate of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// `Delivered`, `Rejected`, or `Retry` when the attempts ran out.
    pub outcome: Outcome,
    /// Calls that carried the event.
    pub attempts: u32,
    /// From the first call to the final answer.
    pub latency: Duration,
}

/// A GCRA rate limiter (a token bucket without a timer): calls are spaced `interval` apart on
/// average, with bursts of up to `burst` calls; a destination's `Retry-After` pauses it. With a
/// rolling window (HubSpot counts calls per rolling 10 s), it also keeps the start times of the
/// window's calls and holds a call while the window is full, so no window of the destination's
/// ever sees more than its limit, whatever the bursts.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// The rolling window and the calls it allows.
    window: Option<(Duration, usize)>,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    /// The theoretical arrival time of the next call.
    tat: Instant,
    paused_until: Option<Instant>,
    /// With a window: when each of its latest calls started, oldest first.
    started: VecDeque<Instant>,
}

/// How much longer than the destination's window a full window waits: a call's request
/// reaches the destination some time after it starts here, and an earlier call that took
/// longer to arrive would otherwise still count in the destination's window.
const WINDOW_MARGIN: u32 = 40;

impl RateLimiter {
    /// `per_second` calls a second on average, bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second.max(1e-3)),
            burst: burst.max(1),
            window: None,
            state: Mutex::new(LimiterState {
                tat: Instant::now(),
                paused_until: None,
                started: VecDeque::new(),
            }),
        }
    }

    /// As [`RateLimiter::new`], and never more than `per_second` × `window` calls in any
    /// rolling `window` (plus a margin of 1/40 of it for the requests' travel time).
    pub fn with_window(per_second: f64, burst: u32, window: Duration) -> Self {
        let calls = ((per_second * window.as_secs_f64()).floor() as usize).max(1);
        RateLimiter {
            window: Some((window + window / WINDOW_MARGIN, calls)),
            ..RateLimiter::new(per_second, burst)
        }
    }

    /// Waits until a call is allowed.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter lock poisoned");
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        s.paused_until = None;
                        let tat = s.tat.max(now);
                        let mut allowed_at = tat
                            .checked_sub(self.interval * (self.burst - 1))
                            .unwrap_or(now);
                        if let Some((window, calls)) = self.window {
                            while s.started.front().is_some_and(|t| *t + window <= now) {
                                s.started.pop_front();
                            }
                            if s.started.len() >= calls {
                                allowed_at = allowed_at.max(s.started[0] + window);
                            }
                        }
                        if allowed_at <= now {
                            s.tat = tat + self.interval;
                            if self.window.is_some() {
                                s.started.push_back(now);
                            }
                            return;
                        }
                        allowed_at - now
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// No call before `after` from now (the destination said so).
    pub fn pause(&self, after: Duration) {
        let mut s = self.state.lock().expect("limiter lock poisoned");
        let until = Instant::now() + after;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }
}

/// The one rate limiter of the destination `name` in this process, shared by every sync and
/// connection that sends to it; `None` when its limits set no rate.
pub fn limiter_for(name: &str, limits: &BatchLimits) -> Option<Arc<RateLimiter>> {
    static LIMITERS: OnceLock<Mutex<HashMap<String, Arc<RateLimiter>>>> = OnceLock::new();
    let per_second = limits.requests_per_second?;
    let burst = limits.concurrency.max(1) as u32;
    let mut all = LIMITERS
        .get_or_init(Default::default)
        .lock()
        .expect("limiter registry lock poisoned");
    Some(
        all.entry(format!("{name}@{per_second}/{:?}", limits.rate_window))
            .or_insert_with(|| {
                Arc::new(match limits.rate_window {
                    Some(window) => RateLimiter::with_window(per_second, burst, window),
                    None => RateLimiter::new(per_second, burst),
                })
            })
            .clone(),
    )
}

/// Delivers events to one destination.
#[derive(Debug, Clone)]
pub struct Delivery {
    destination: Arc<dyn Destination>,
    limiter: Option<Arc<RateLimiter>>,
    policy: RetryPolicy,
}

impl Delivery {
    /// The delivery loop for `destination`, with its shared rate limiter.
    pub fn new(destination: Arc<dyn Destination>, policy: RetryPolicy) -> Self {
        let limiter = limiter_for(destination.name(), &destination.limits());
        Delivery {
            destination,
            limiter,
            policy,
        }
    }

    pub fn destination(&self) -> &Arc<dyn Destination> {
        &self.destination
    }

    /// Delivers every event and answers one [`Delivered`] per event, in order. `progress` is
    /// called with the count of events that reached their final outcome.
    pub async fn deliver(
        &self,
        events: &[OutboundEvent],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Delivered> {
        let batches = batches(events, self.destination.limits());
        let concurrency = self.destination.limits().concurrency.max(1);
        let mut results: Vec<Option<Delivered>> = vec![None; events.len()];
        let mut stream = futures::stream::iter(batches.into_iter().map(|range| async move {
            let idx: Vec<usize> = range.collect();
            let out = self.deliver_batch(events, idx.clone()).await;
            (idx, out)
        }))
        .buffer_unordered(concurrency);
        while let Some((idx, out)) = stream.next().await {
            progress(idx.len());
            for (i, d) in idx.into_iter().zip(out) {
                results[i] = Some(d);
            }
        }
        results
            .into_iter()
            .map(|d| d.expect("every event of every batch has an outcome"))
            .collect()
    }

    /// Delivers `events` keeping each user's events in order, for live forwarding. Events go
    /// into lanes by a hash of their user (`userId`, else `anonymousId`); a lane's batches are
    /// sent one after another, lanes side by side up to the destination's concurrency. A lane
    /// stops at its first batch that ends with an event still to retry: every later event of
    /// that lane comes back as `Retry` with `attempts == 0`, unsent, so a caller that sends
    /// the events still to retry again, in order, never lets a later event of a user overtake
    /// an earlier one.
    pub async fn deliver_in_order(
        &self,
        events: &[OutboundEvent],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Delivered> {
        let limits = self.destination.limits();
        let lanes = limits.concurrency.max(1);
        let mut by_lane: Vec<Vec<usize>> = vec![Vec::new(); lanes];
        for (i, e) in events.iter().enumerate() {
            let user = e.user_id().unwrap_or_default();
            let lane = xxhash_rust::xxh3::xxh3_64(user.as_bytes()) as usize % lanes;
            by_lane[lane].push(i);
        }
        let mut results: Vec<Option<Delivered>> = vec![None; events.len()];
        let mut stream = futures::stream::iter(by_lane.into_iter().filter(|l| !l.is_empty()).map(
            |lane| async move {
                let mut out: Vec<Delivered> = Vec::with_capacity(lane.len());
                for range in batches(lane.iter().map(|&i| &events[i]), limits) {
                    if out.iter().any(|d| matches!(d.outcome, Outcome::Retry { .. })) {
                        let error = DeliveryError::external(
                            None,
                            "not sent yet: an earlier event of the same user is waiting to be retried",
                        );
                        out.extend(range.map(|_| Delivered {
                            outcome: Outcome::Retry {
                                after: None,
                                error: error.clone(),
                            },
                            attempts: 0,
                            latency: Duration::ZERO,
                        }));
                        continue;
                    }
                    let n = range.len();
                    out.extend(self.deliver_batch(events, lane[range].to_vec()).await);
                    progress(n);
                }
                (lane, out)
            },
        ))
        .buffer_unordered(lanes);
        while let Some((lane, out)) = stream.next().await {
            for (i, d) in lane.into_iter().zip(out) {
                results[i] = Some(d);
            }
        }
        results
            .into_iter()
            .map(|d| d.expect("every event of every lane has an outcome"))
            .collect()
    }

    /// One batch (indexes into `events`), retried and split until every event is final.
    async fn deliver_batch(&self, events: &[OutboundEvent], idx: Vec<usize>) -> Vec<Delivered> {
        let start = Instant::now();
        let mut finals: HashMap<usize, Delivered> = HashMap::new();
        // Work list: (indexes, attempts so far).
        let mut pending: Vec<(Vec<usize>, u32)> = vec![(idx.clone(), 0)];
        while let Some((batch, attempts)) = pending.pop() {
            if let Some(l) = &self.limiter {
                l.acquire().await;
            }
            let slice: Vec<OutboundEvent> = batch.iter().map(|&i| events[i].clone()).collect();
            let mut outcomes = self.destination.deliver(&slice).await;
            if outcomes.len() != slice.len() {
                let error = DeliveryError::external(
                    None,
                    format!(
                        "internal error (likely a bug in Tideway, please report it): destination `{}` answered {} outcomes for {} events",
                        self.destination.name(),
                        outcomes.len(),
                        slice.len()
                    ),
                );
                outcomes = Outcome::Retry { after: None, error }.all(slice.len());
            }
            let attempts = attempts + 1;
            let whole_batch_refused = batch.len() > 1
                && outcomes.iter().all(|o| matches!(o, Outcome::Rejected(_)))
                && outcomes.windows(2).all(|w| w[0] == w[1]);
            if whole_batch_refused {
                // One bad row can make an API refuse a whole batch: halve until it is alone.
                let (a, b) = batch.split_at(batch.len() / 2);
                pending.push((b.to_vec(), attempts - 1));
                pending.push((a.to_vec(), attempts - 1));
                continue;
            }
            let mut retry = Vec::new();
            let mut wait: Option<Duration> = None;
            for (&i, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Outcome::Retry { after, error } if attempts < self.policy.max_attempts => {
                        retry.push(i);
                        if let Some(after) = after {
                            wait = Some(wait.map_or(after, |w| w.max(after)));
                        }
                        tracing::debug!(destination = self.destination.name(), attempt = attempts, error = %error, "delivery will be retried");
                    }
                    outcome => {
                        finals.insert(
                            i,
                            Delivered {
                                outcome,
                                attempts,
                                latency: start.elapsed(),
                            },
                        );
                    }
                }
            }
            if !retry.is_empty() {
                let backoff = self.backoff(attempts);
                let wait = match wait {
                    Some(after) => {
                        let after = after.min(self.policy.max);
                        if let Some(l) = &self.limiter {
                            l.pause(after);
                        }
                        after.max(backoff / 4)
                    }
                    None => backoff,
                };
                tokio::time::sleep(wait).await;
                pending.push((retry, attempts));
            }
        }
        idx.iter()
            .map(|i| {
                finals
                    .remove(i)
                    .expect("each event ends with a final outcome")
            })
            .collect()
    }

    /// Exponential backoff with full jitter for the attempt just failed.
    fn backoff(&self, attempts: u32) -> Duration {
        let cap = self
            .policy
            .base
            .saturating_mul(1 << attempts.min(16))
            .min(self.policy.max);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

/// Splits `events` into runs that fit the limits (count, and bytes of the serialized events);
/// the ranges are positions in `events`.
fn batches<'a>(
    events: impl IntoIterator<Item = &'a OutboundEvent>,
    limits: crate::destination::BatchLimits,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut n) = (0, 0usize, 0);
    for (i, e) in events.into_iter().enumerate() {
        let size = serde_json::to_vec(&e.event).map_or(0, |v| v.len());
        let full =
            i - start >= limits.max_events.max(1) || (i > start && bytes + size > limits.max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
        n = i + 1;
    }
    if start < n {
        out.push(start..n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::{BatchLimits, Op};
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Refuses any batch holding an event with `"bad": true` (as a whole), answers 429 to
    /// the first `throttle` calls, and remembers what it accepted.
    #[derive(Debug, Default)]
    struct Picky {
        throttle: usize,
        calls: AtomicUsize,
        accepted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Destination for Picky {
        fn name(&self) -> &str {
            "picky"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn healthcheck(&self) -> Result<(), DeliveryError> {
            Ok(())
        }
        async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.throttle {
                return Outcome::Retry {
                    after: Some(Duration::from_millis(5)),
                    error: DeliveryError::external(Some(429), "slow down"),
                }
                .all(batch.len());
            }
            if batch.iter().any(|e| e.event["bad"] == json!(true)) {
                return Outcome::Rejected(DeliveryError::refused(Some(400), "bad batch"))
                    .all(batch.len());
            }
            let mut accepted = self.accepted.lock().unwrap();
            accepted.extend(batch.iter().map(|e| e.origin.clone()));
            Outcome::Delivered.all(batch.len())
        }
        fn limits(&self) -> BatchLimits {
            BatchLimits {
                max_events: 8,
                max_bytes: 1 << 20,
                requests_per_second: None,
                rate_window: None,
                concurrency: 2,
            }
        }
    }

    fn events(n: usize, bad: &[usize]) -> Vec<OutboundEvent> {
        (0..n)
            .map(|i| OutboundEvent {
                origin: i.to_string(),
                op: Op::Upsert,
                event: json!({"type": "identify", "userId": i.to_string(), "bad": bad.contains(&i)}),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refused_batch_is_split_until_the_bad_rows_are_alone() {
        let dest = Arc::new(Picky::default());
        let d = Delivery::new(dest.clone(), RetryPolicy::default());
        let out = d.deliver(&events(30, &[3, 17, 18]), &|_| {}).await;
        for (i, o) in out.iter().enumerate() {
            let bad = [3, 17, 18].contains(&i);
            assert_eq!(
                matches!(o.outcome, Outcome::Rejected(_)),
                bad,
                "event {i}: {o:?}"
            );
        }
        let mut accepted = dest.accepted.lock().unwrap().clone();
        accepted.sort_by_key(|s| s.parse::<usize>().unwrap());
        assert_eq!(accepted.len(), 27, "each good event delivered exactly once");
    }

    #[tokio::test]
    async fn rate_limited_calls_are_retried_after_the_wait() {
        let dest = Arc::new(Picky {
            throttle: 3,
            ..Default::default()
        });
        let d = Delivery::new(dest.clone(), RetryPolicy::default());
        let out = d.deliver(&events(5, &[]), &|_| {}).await;
        assert!(
            out.iter().all(|o| o.outcome == Outcome::Delivered),
            "{out:?}"
        );
        assert_eq!(out[0].attempts, 4);
    }

    #[tokio::test]
    async fn retries_give_up_after_the_budget_and_say_why() {
        let dest = Arc::new(Picky {
            throttle: usize::MAX,
            ..Default::default()
        });
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(10),
        };
        let out = Delivery::new(dest, policy)
            .deliver(&events(2, &[]), &|_| {})
            .await;
        assert!(
            matches!(&out[0].outcome, Outcome::Retry { error, .. } if error.status == Some(429))
        );
        assert_eq!(out[0].attempts, 3);
    }

    /// Down for any batch holding an event marked `"down": true`; remembers (user, seq).
    #[derive(Debug, Default)]
    struct Outage {
        accepted: Mutex<Vec<(String, u64)>>,
    }

    #[async_trait]
    impl Destination for Outage {
        fn name(&self) -> &str {
            "outage"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn healthcheck(&self) -> Result<(), DeliveryError> {
            Ok(())
        }
        async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
            if batch.iter().any(|e| e.event["down"] == json!(true)) {
                return Outcome::Retry {
                    after: None,
                    error: DeliveryError::external(Some(503), "down"),
                }
                .all(batch.len());
            }
            let mut accepted = self.accepted.lock().unwrap();
            for e in batch {
                accepted.push((e.user_id().unwrap(), e.event["seq"].as_u64().unwrap()));
            }
            Outcome::Delivered.all(batch.len())
        }
        fn limits(&self) -> BatchLimits {
            BatchLimits {
                max_events: 2,
                max_bytes: 1 << 20,
                requests_per_second: None,
                rate_window: None,
                concurrency: 2,
            }
        }
    }

    #[tokio::test]
    async fn in_order_delivery_stops_a_users_lane_at_its_first_retry() {
        let lane = |u: &str| xxhash_rust::xxh3::xxh3_64(u.as_bytes()) % 2;
        let other = ["b", "c", "d", "e", "f", "g"]
            .into_iter()
            .find(|u| lane(u) != lane("a"))
            .unwrap();
        let mut events = Vec::new();
        for seq in 0..6u64 {
            for user in ["a", other] {
                events.push(OutboundEvent {
                    origin: format!("{user}{seq}"),
                    op: Op::Upsert,
                    event: json!({"type": "track", "userId": user, "seq": seq, "down": user == "a" && seq == 2}),
                });
            }
        }
        let dest = Arc::new(Outage::default());
        let policy = RetryPolicy {
            max_attempts: 2,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        let out = Delivery::new(dest.clone(), policy)
            .deliver_in_order(&events, &|_| {})
            .await;
        let accepted = dest.accepted.lock().unwrap().clone();
        let seqs = |u: &str| -> Vec<u64> {
            accepted
                .iter()
                .filter(|(x, _)| x == u)
                .map(|(_, s)| *s)
                .collect()
        };
        assert_eq!(seqs("a"), vec![0, 1], "a stops before its failing event");
        assert_eq!(seqs(other), vec![0, 1, 2, 3, 4, 5], "another lane goes on");
        for (e, d) in events.iter().zip(&out) {
            let seq = e.event["seq"].as_u64().unwrap();
            match (e.user_id().as_deref(), seq) {
                // The batch holding the failing event: tried, then given up.
                (Some("a"), 2 | 3) => assert_eq!(d.attempts, 2, "{d:?}"),
                (Some("a"), s) if s > 3 => {
                    assert!(matches!(d.outcome, Outcome::Retry { .. }));
                    assert_eq!(d.attempts, 0, "later events of a are not sent: {d:?}");
                }
                _ => assert_eq!(d.outcome, Outcome::Delivered, "{e:?}"),
            }
        }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let limits = BatchLimits {
            max_events: 4,
            max_bytes: 150,
            requests_per_second: None,
            rate_window: None,
            concurrency: 1,
        };
        let b = batches(&events(10, &[]), limits);
        assert!(b.iter().all(|r| r.len() <= 4));
        assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), 10);
        assert!(b.len() > 3, "bytes cut batches too: {b:?}");
    }

    #[tokio::test]
    async fn a_windowed_limiter_never_lets_a_window_hold_more_than_its_calls() {
        // 100 calls/s over a 100 ms window: 10 calls a window, bursts of up to 50 allowed by
        // the rate alone, so only the window holds them back.
        let l = RateLimiter::with_window(100.0, 50, Duration::from_millis(100));
        let mut started = Vec::new();
        for _ in 0..35 {
            l.acquire().await;
            started.push(Instant::now());
        }
        for (i, pair) in started.windows(11).enumerate() {
            let span = pair[10] - pair[0];
            assert!(
                span >= Duration::from_millis(100),
                "calls {i} and {} are {span:?} apart: 11 calls in one 100 ms window",
                i + 10
            );
        }
        // The first 10 go at once: the window is used, not only the rate.
        assert!(started[9] - started[0] < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_limiter_spaces_calls() {
        let l = RateLimiter::new(200.0, 1);
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(95),
            "{:?}",
            start.elapsed()
        );
    }
}
