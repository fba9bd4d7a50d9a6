//! The open-loop generator: requests leave on a schedule paced by `governor`, whether or not
//! earlier ones were answered; each carries a sequence number, so every request is accounted for.
//! Bounded in count (the schedule) and time (a per-request timeout).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::scenario::Phase;

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Sequence number.
    pub seq: u64,
    /// When it was sent, ms after the start.
    pub at_ms: u64,
    /// Until the answer (or the failure), µs.
    pub latency_us: u64,
    /// HTTP status; 0 when no answer came (connection refused, timeout) or it was not sent.
    pub status: u16,
    /// The message id the API answered with.
    pub id: Option<String>,
    /// Not sent: the generator was at its connection limit (the schedule is kept, not delayed).
    pub skipped: bool,
}

/// Where and what to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:port/v1/topics/<topic>/messages`.
    pub url: String,
    /// Value size, bytes.
    pub message_bytes: usize,
    /// Distinct keys (0: none).
    pub keys: u32,
    /// Most requests in flight at once (connections).
    pub max_in_flight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

fn body(seq: u64, size: usize) -> String {
    let head = format!("{{\"seq\":{seq},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Runs the schedule against `target`; returns every request, in sequence order.
pub async fn run(phases: &[Phase], target: &Target, start: Instant) -> Vec<Sent> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(target.max_in_flight)
        .timeout(target.timeout)
        .build()
        .expect("an HTTP client");
    let results = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    let mut phase_start = Instant::now();
    for phase in phases {
        let Some(rate) = NonZeroU32::new(phase.rate) else {
            tokio::time::sleep(Duration::from_secs(phase.secs)).await;
            continue;
        };
        // Requests leave evenly spaced, as the schedule says; a burst allowance of 50 ms worth
        // lets the generator catch up after a short stall instead of losing those slots.
        let burst = NonZeroU32::new(phase.rate / 20).unwrap_or(NonZeroU32::MIN);
        let limiter =
            governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst));
        let ends = phase_start + Duration::from_secs(phase.secs);
        let mut sent = 0u64;
        let quota = u64::from(phase.rate) * phase.secs;
        while sent < quota && Instant::now() < ends {
            limiter.until_ready().await;
            sent += 1;
            seq += 1;
            let at_ms = elapsed_ms(start);
            if in_flight.load(Ordering::Relaxed) >= target.max_in_flight {
                lock(&results).push(Sent {
                    seq,
                    at_ms,
                    latency_us: 0,
                    status: 0,
                    id: None,
                    skipped: true,
                });
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let mut request = client
                .post(&target.url)
                .header("content-type", "application/json")
                .body(body(seq, target.message_bytes));
            if target.keys > 0 {
                request =
                    request.header("kafka-key", format!("key-{}", seq % u64::from(target.keys)));
            }
            let (results, in_flight) = (results.clone(), in_flight.clone());
            tasks.spawn(async move {
                let sent_at = Instant::now();
                let (status, id) = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let id = response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned));
                        (status, id)
                    }
                    Err(_) => (0, None),
                };
                let latency_us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                in_flight.fetch_sub(1, Ordering::Relaxed);
                lock(&results).push(Sent {
                    seq,
                    at_ms,
                    latency_us,
                    status,
                    id,
                    skipped: false,
                });
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        // The next phase starts on schedule even if this one could not send all it should have.
        tokio::time::sleep_until(ends.into()).await;
        phase_start = ends;
    }
    while tasks.join_next().await.is_some() {}
    let mut all = std::mem::take(&mut *lock(&results));
    all.sort_by_key(|s| s.seq);
    all
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ms since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_size_and_carry_the_sequence_number() {
        let b = body(42, 1024);
        assert_eq!(b.len(), 1024);
        let v: serde_json::Value = serde_json::from_str(&b).expect("JSON");
        assert_eq!(v["seq"], 42);
    }
}
