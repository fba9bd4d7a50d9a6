//! The verifier's side: a consumer on the run's topic (straight to the broker, so observing is not
//! itself throttled by the gate) noting when each `spillway-id` first arrived, fed to
//! msk-consumer's `Verifier` for duplicates and end-to-end latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use msk_consumer::verify::Verifier;
use rdkafka::consumer::{Consumer as _, StreamConsumer};

use crate::generator::elapsed_ms;

/// What the consumer saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each id's first arrival, ms after the start.
    pub arrivals: HashMap<String, u64>,
    /// (arrival ms after the start, end-to-end latency ms) of each record with its receive time.
    pub e2e: Vec<(u64, u64)>,
    /// Duplicates, latency percentiles, order.
    pub verifier: Verifier,
}

/// Shared view of what arrived.
pub type Shared = Arc<Mutex<Observed>>;

/// Locks the view.
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Observed> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When the load started (set once the consumer has its partitions), for arrival times.
pub type Start = Arc<std::sync::OnceLock<Instant>>;

/// Consumes `topic` from the start until the task is aborted; the flag turns true once the group
/// has given it partitions, so that the load can wait for it: otherwise the first seconds of
/// records arrive as late as the group takes to form, and the end-to-end latency measures the
/// verifier's start rather than the pipeline.
pub fn spawn(
    bootstrap: &str,
    topic: &str,
    start: Start,
) -> Result<
    (
        Shared,
        tokio::task::JoinHandle<()>,
        Arc<std::sync::atomic::AtomicBool>,
    ),
    rdkafka::error::KafkaError,
> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("loadtest-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let shared: Shared = Arc::default();
    let view = shared.clone();
    let assigned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ready = assigned.clone();
    let task = tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        loop {
            if !ready.load(Ordering::Relaxed) && consumer.assignment().is_ok_and(|a| a.count() > 0)
            {
                ready.store(true, Ordering::Relaxed);
            }
            // Bounded, so that the assignment is seen while nothing arrives yet.
            let Ok(Ok(message)) =
                tokio::time::timeout(std::time::Duration::from_millis(100), consumer.recv()).await
            else {
                continue;
            };
            let record = msk_consumer::local::to_record(&message);
            let now_epoch = spillway_core::envelope::now_ms();
            // Nothing arrives before the load starts (the topic is the run's own).
            let at = start.get().map_or(0, |s| elapsed_ms(*s));
            let mut o = lock(&view);
            o.verifier.observe(&record, now_epoch);
            if let Some(received) = record.received_at_ms() {
                o.e2e.push((at, now_epoch.saturating_sub(received)));
            }
            if let Some(id) = record.spillway_id() {
                o.arrivals.entry(id.to_owned()).or_insert(at);
            }
        }
    });
    Ok((shared, task, assigned))
}
