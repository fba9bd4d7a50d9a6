//! Service mode: the drain outside Lambda (ECS, Kubernetes, a VM next to MSK), supervised like a
//! service. With `SPILLWAY_HTTP_ADDR` set, the binary answers
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the workers run (liveness); 503 once one ended unexpectedly (a panic: its share of the buffer is no longer read) or none runs |
//! | `GET /readyz` | 200 when every producer is usable, its MSK IAM token is valid and a broker answered a metadata request in the last [`PROBE_EVERY`] × 3; else 503 with the reasons (also while shutting down) |
//! | `GET /metrics` | Prometheus / OpenMetrics text: the same typed events as the EMF line ([`crate::report::DrainMetrics`]), the backlog, the heartbeat's extensions |
//!
//! On SIGTERM (or Ctrl-C) it stops receiving, finishes the batches in flight, deletes what Kafka
//! acknowledged, hands batches received for later back, and exits 0 — within
//! [`crate::config::PollSettings::shutdown_bound`]; a batch still busy then is abandoned (it comes
//! again after its visibility timeout) and the exit code is 1.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::drain::Drain;
use crate::report::DrainMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    source: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

/// The drain's Prometheus metrics, recorded by every batch ([`DrainMetrics::emit`]) in Lambda and
/// out of it, served by `/metrics`.
pub struct Metrics {
    registry: Registry,
    batches: Family<SourceLabel, Counter>,
    received: Family<SourceLabel, Counter>,
    delivered: Family<SourceLabel, Counter>,
    dead_lettered: Family<SourceLabel, Counter>,
    failed: Family<ReasonLabel, Counter>,
    batch_duration: Family<SourceLabel, Histogram>,
    produce_latency: Family<SourceLabel, Histogram>,
    backoffs: Family<SourceLabel, Counter>,
    backoff_seconds: Family<SourceLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// SQS: messages waiting in the queue (`ApproximateNumberOfMessages`).
    pub(crate) backlog: Gauge,
    /// SQS: messages received and not yet deleted, by any consumer
    /// (`ApproximateNumberOfMessagesNotVisible`).
    pub(crate) in_flight: Gauge,
    /// Kinesis: how far each shard's reader is behind the stream's tip (`MillisBehindLatest`).
    behind_latest: Family<ShardLabel, Gauge>,
    visibility: Family<ResultLabel, Counter>,
    workers: Gauge,
    /// SQS: batches the poller may produce at once ([`crate::poller::Aimd`]).
    pub(crate) concurrency_limit: Gauge,
}

fn histogram_seconds() -> Histogram {
    // 1 ms to ~17 min: the longest function timeout is 15 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 21))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("spillway_drain");
        let mut m = Self {
            batches: Family::default(),
            received: Family::default(),
            delivered: Family::default(),
            dead_lettered: Family::default(),
            failed: Family::default(),
            batch_duration: Family::new_with_constructor(histogram_seconds),
            produce_latency: Family::new_with_constructor(histogram_seconds),
            backoffs: Family::default(),
            backoff_seconds: Family::default(),
            backlog: Gauge::default(),
            in_flight: Gauge::default(),
            behind_latest: Family::default(),
            visibility: Family::default(),
            workers: Gauge::default(),
            concurrency_limit: Gauge::default(),
            registry: Registry::default(),
        };
        // The metrics are registered below, each a handle on the one counter `m` keeps.
        registry.register(
            "batches",
            "Batches (invocations) drained",
            m.batches.clone(),
        );
        registry.register(
            "received",
            "Records received from the buffer",
            m.received.clone(),
        );
        registry.register(
            "delivered",
            "Records Kafka acknowledged",
            m.delivered.clone(),
        );
        registry.register(
            "dead_lettered",
            "Records written to the dead-letter queue",
            m.dead_lettered.clone(),
        );
        registry.register(
            "failed",
            "Records left in the buffer, by reason (they come again)",
            m.failed.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "How long a batch took",
            m.batch_duration.clone(),
        );
        registry.register(
            "produce_latency_seconds",
            "Enqueue-to-acknowledgement time of each delivered record",
            m.produce_latency.clone(),
        );
        registry.register(
            "backoffs",
            "Backoffs after authentication failures or throttled connections",
            m.backoffs.clone(),
        );
        registry.register(
            "backoff_seconds",
            "Time spent backing off",
            m.backoff_seconds.clone(),
        );
        registry.register(
            "backlog_messages",
            "SQS: messages waiting in the queue",
            m.backlog.clone(),
        );
        registry.register(
            "in_flight_messages",
            "SQS: messages received and not yet deleted",
            m.in_flight.clone(),
        );
        registry.register(
            "behind_latest_milliseconds",
            "Kinesis: how far a shard's reader is behind the stream's tip",
            m.behind_latest.clone(),
        );
        registry.register(
            "visibility_extensions",
            "Held SQS messages whose visibility the heartbeat extended or missed",
            m.visibility.clone(),
        );
        registry.register("workers", "Workers running", m.workers.clone());
        registry.register(
            "concurrency_limit",
            "SQS: batches the poller may produce at once (AIMD, 1 to SPILLWAY_MAX_CONCURRENCY)",
            m.concurrency_limit.clone(),
        );
        m.registry = registry;
        m
    }

    /// Records one batch's event and its per-record produce latencies.
    pub fn record(&self, event: &DrainMetrics, latencies: &[Duration]) {
        let source = SourceLabel {
            source: event.source.clone(),
        };
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.batches.get_or_create(&source).inc();
        self.received
            .get_or_create(&source)
            .inc_by(count(event.received));
        self.delivered
            .get_or_create(&source)
            .inc_by(count(event.delivered));
        self.dead_lettered
            .get_or_create(&source)
            .inc_by(count(event.dead_lettered));
        for (reason, n) in &event.failed_by_reason {
            self.failed
                .get_or_create(&ReasonLabel {
                    source: event.source.clone(),
                    reason: (*reason).to_owned(),
                })
                .inc_by(count(*n));
        }
        #[allow(clippy::cast_precision_loss)]
        let seconds = |ms: u64| ms as f64 / 1000.0;
        self.batch_duration
            .get_or_create(&source)
            .observe(seconds(event.batch_ms));
        let latency = self.produce_latency.get_or_create(&source);
        for l in latencies {
            latency.observe(l.as_secs_f64());
        }
        if let Some(ms) = event.backoff_ms {
            self.backoffs.get_or_create(&source).inc();
            self.backoff_seconds
                .get_or_create(&source)
                .inc_by(seconds(ms));
        }
    }

    /// Kinesis: `shard`'s reader is `ms` behind the stream's tip.
    pub fn behind_latest(&self, shard: &str, ms: i64) {
        self.behind_latest
            .get_or_create(&ShardLabel {
                shard: shard.to_owned(),
            })
            .set(ms);
    }

    /// Kinesis: `shard` is closed and read to its end; its gauge goes.
    pub fn shard_finished(&self, shard: &str) {
        self.behind_latest.remove(&ShardLabel {
            shard: shard.to_owned(),
        });
    }

    /// The heartbeat extended `extended` held messages and missed `missed`.
    pub fn visibility(&self, extended: u64, missed: u64) {
        self.visibility
            .get_or_create(&ResultLabel { result: "extended" })
            .inc_by(extended);
        self.visibility
            .get_or_create(&ResultLabel { result: "missed" })
            .inc_by(missed);
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// How often `/readyz`'s probe asks each producer's broker for metadata.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long one probe waits for a broker's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Liveness and readiness of the running workers.
#[derive(Default)]
pub struct Health {
    drains: Mutex<Vec<Weak<Drain>>>,
    /// The last probe: when it ended and what was wrong (empty: ready).
    probe: Mutex<Option<(Instant, Vec<String>)>>,
    stopping: std::sync::atomic::AtomicBool,
    workers: std::sync::atomic::AtomicUsize,
    /// Workers that ended while not stopping, without [`WorkerGuard::done`]: a panic.
    lost: std::sync::atomic::AtomicUsize,
}

/// Counts a running worker until dropped — also when its task panics or is aborted.
pub struct WorkerGuard {
    health: Arc<Health>,
    done: bool,
}

impl WorkerGuard {
    /// The worker's work is over (a Kinesis shard closed and read to its end).
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let health = &self.health;
        health
            .workers
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        metrics().workers.dec();
        if !self.done && !health.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            health
                .lost
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tracing::error!("a worker ended unexpectedly; /healthz answers 503 from now on");
        }
    }
}

impl Health {
    /// A worker starts: counted until the guard is dropped.
    pub fn worker(self: &Arc<Self>) -> WorkerGuard {
        self.workers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        metrics().workers.inc();
        WorkerGuard {
            health: self.clone(),
            done: false,
        }
    }

    /// Workers running now.
    pub fn workers(&self) -> usize {
        self.workers.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Liveness: `Ok(workers running)`, or why the process should be restarted — a worker ended
    /// unexpectedly (it panicked: its share of the buffer is no longer read), or none runs.
    pub fn liveness(&self) -> Result<usize, String> {
        let lost = self.lost.load(std::sync::atomic::Ordering::SeqCst);
        let workers = self.workers();
        if lost > 0 {
            return Err(format!(
                "{lost} workers ended unexpectedly; {workers} still run"
            ));
        }
        if workers == 0 && !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("no worker running".into());
        }
        Ok(workers)
    }

    /// Probes `drain` while it lives.
    pub fn watch(&self, drain: &Arc<Drain>) {
        let mut drains = self
            .drains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drains.retain(|d| d.strong_count() > 0);
        drains.push(Arc::downgrade(drain));
    }

    /// Shutting down: no longer ready.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Probes every watched drain once.
    pub async fn probe(&self) {
        let drains: Vec<Arc<Drain>> = self
            .drains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        // Every producer is checked; one asks a broker for metadata (all topics' — for the
        // process, not per producer, as the producers share the cluster).
        let answers = futures::future::join_all(
            drains
                .iter()
                .enumerate()
                .map(|(i, d)| d.probe(PROBE_TIMEOUT, i == 0)),
        )
        .await;
        let mut problems: Vec<String> = answers.into_iter().filter_map(Result::err).collect();
        problems.sort();
        problems.dedup();
        if drains.is_empty() {
            problems.push("no producer yet".into());
        }
        let lost = self.lost.load(std::sync::atomic::Ordering::SeqCst);
        if lost > 0 {
            problems.push(format!("{lost} workers ended unexpectedly"));
        }
        *self
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), problems));
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(vec!["shutting down".into()]);
        }
        match &*self
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => Err(vec!["not probed yet".into()]),
            Some((at, _)) if at.elapsed() > PROBE_EVERY * 3 => Err(vec![format!(
                "the last probe ended {}s ago",
                at.elapsed().as_secs()
            )]),
            Some((_, problems)) if problems.is_empty() => Ok(()),
            Some((_, problems)) => Err(problems.clone()),
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the process ends, and probes
/// readiness every [`PROBE_EVERY`].
pub fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let prober = health.clone();
    tokio::spawn(async move {
        loop {
            prober.probe().await;
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
    let live = health.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let answer = live.liveness();
                async move {
                    match answer {
                        Ok(workers) => (StatusCode::OK, format!("live: {workers} workers\n")),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let answer = health.readiness();
                async move {
                    match answer {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {}\n", why.join("; ")),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics().encode(),
                )
                    .into_response()
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: drain\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("request");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("answer");
        let code = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a status line in {answer:?}"));
        (code, answer)
    }

    /// A worker whose task panics (its share of the buffer is no longer read) turns `/healthz`
    /// into 503 for good, so that the supervisor restarts the process, while the others still
    /// run; a worker that ends because the process is stopping does not.
    #[tokio::test]
    async fn a_worker_that_panicked_turns_healthz_503() {
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("address");
        let _server = serve(listener, health.clone());
        let _running = health.worker();
        let doomed = health.worker();
        let (code, answer) = status(addr, "/healthz").await;
        assert_eq!(code, 200, "{answer}");
        assert!(answer.contains("live: 2 workers"), "{answer}");

        let panicked = tokio::spawn(async move {
            let _worker = doomed;
            panic!("a bug in a worker");
        })
        .await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        let (code, answer) = status(addr, "/healthz").await;
        assert_eq!(code, 503, "{answer}");
        assert!(
            answer.contains("1 workers ended unexpectedly; 1 still run"),
            "{answer}"
        );
        health.probe().await;
        let (code, answer) = status(addr, "/readyz").await;
        assert_eq!(code, 503, "{answer}");
        assert!(answer.contains("1 workers ended unexpectedly"), "{answer}");
    }

    /// Workers that end while the process stops (or a Kinesis shard read to its end) are not a
    /// failure.
    #[tokio::test]
    async fn workers_that_end_on_the_stop_or_when_done_keep_the_process_live() {
        let health = Arc::new(Health::default());
        let (done, stopped) = (health.worker(), health.worker());
        done.done();
        assert_eq!(health.liveness(), Ok(1));
        health.stopping();
        drop(stopped);
        assert_eq!(health.liveness(), Ok(0));
    }
}
