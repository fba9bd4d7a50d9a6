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
    /// Ids in the topic that the live consumer never saw, found by re-reading it ([`reread`]).
    pub missed_live: u64,
}

impl Observed {
    /// Completes what the live consumer saw with a re-read of the whole topic: ids it missed get
    /// the re-read's arrival (the record's timestamp), and duplicates and order are counted from
    /// the re-read, which saw every stored record once. Returns how many ids it added.
    pub fn complete(&mut self, reread: Observed) -> u64 {
        let mut added = 0;
        for (id, at) in reread.arrivals {
            if let std::collections::hash_map::Entry::Vacant(e) = self.arrivals.entry(id) {
                e.insert(at);
                added += 1;
            }
        }
        if reread.verifier.unique() >= self.verifier.unique() {
            self.verifier = reread.verifier;
        }
        self.missed_live += added;
        added
    }
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
    let consumer: StreamConsumer = config(bootstrap, "loadtest")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
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

/// A consumer's settings: the broker, a group of its own (`prefix`-…), no commits.
fn config(bootstrap: &str, prefix: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("{prefix}-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("enable.auto.commit", "false");
    config
}

/// Reads every partition of `topic` from its start to the high watermark it had when the read
/// began, with a consumer of its own: the accounting's source of truth. A live consumer can miss a
/// record that is in the topic (a broker that makes a later batch of a partition visible before an
/// earlier one moves its fetch position past the earlier one), and a record missed that way must
/// not be counted lost. Arrivals are the records' timestamps, in ms after `start`.
pub async fn reread(
    bootstrap: &str,
    topic: &str,
    start: Instant,
    timeout: std::time::Duration,
) -> Result<Observed, rdkafka::error::KafkaError> {
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: StreamConsumer = config(bootstrap, "loadtest-reread").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata
        .topics()
        .iter()
        .flat_map(rdkafka::metadata::MetadataTopic::partitions)
    {
        let (_, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        if high > 0 {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let start_epoch = spillway_core::envelope::now_ms().saturating_sub(elapsed_ms(start));
    let mut observed = Observed::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while !ends.is_empty() {
        let Ok(message) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
            return Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        };
        let message = message?;
        let record = msk_consumer::local::to_record(&message);
        if ends
            .get(&record.partition)
            .is_some_and(|&end| record.offset + 1 >= end)
        {
            ends.remove(&record.partition);
        }
        let at_epoch = u64::try_from(record.timestamp_ms).unwrap_or(0);
        observed.verifier.observe(&record, at_epoch);
        if let Some(id) = record.spillway_id() {
            observed
                .arrivals
                .entry(id.to_owned())
                .or_insert(at_epoch.saturating_sub(start_epoch));
        }
    }
    Ok(observed)
}
