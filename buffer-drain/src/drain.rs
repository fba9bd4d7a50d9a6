//! The drain core: a batch of buffer records in, every record produced to Kafka, one outcome per
//! record out.
//!
//! The whole batch is enqueued, then the delivery reports are awaited together. librdkafka's queue
//! is bounded (see [`spillway_core::kafka::producer_config`]); when it is full the drain waits for
//! the oldest outstanding delivery and enqueues again, so a 10,000-record batch of large messages
//! never grows memory without bound and no record fails for `QueueFull`. Nothing is enqueued after
//! the deadline, and what has not been acknowledged by then is reported undelivered (it returns
//! to the buffer; if it reaches Kafka after all, the retry is a duplicate with the same
//! `spillway-id`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use spillway_core::backoff::Backoff;
use spillway_core::kafka::context::ClientHealth;
use spillway_core::kafka::{classify, Disposition, Producer};

use crate::dlq::DeadLetters;
use crate::message::{to_kafka, Decoding};
use crate::report::{DrainReport, Outcome};
use crate::source::{Ordering, SourceRecord};

/// The drain: one producer per container, created at init and reused by every invocation.
pub struct Drain {
    producer: Producer,
    health: Arc<ClientHealth>,
    dead_letters: Option<DeadLetters>,
    decoding: Decoding,
    auth: Mutex<AuthBackoff>,
    backoffs: std::sync::atomic::AtomicU64,
}

/// Backoff after authentication failures and throttled connections, across invocations.
#[derive(Debug, Default)]
struct AuthBackoff {
    /// Authentication failures already accounted for.
    seen: u64,
    /// Batches in a row that saw new failures.
    streak: u32,
}

/// The first backoff after an authentication failure waits up to this long, doubling per batch
/// that fails again, up to [`AUTH_BACKOFF_CAP`].
const AUTH_BACKOFF_BASE: Duration = Duration::from_millis(250);
const AUTH_BACKOFF_CAP: Duration = Duration::from_secs(10);

impl Drain {
    /// A drain producing with `producer`; poison records go to `dead_letters` when given, else they
    /// are reported failed (and reach the buffer's own DLQ after `maxReceiveCount`).
    pub fn new(
        producer: Producer,
        health: Arc<ClientHealth>,
        dead_letters: Option<DeadLetters>,
        decoding: Decoding,
    ) -> Self {
        Self {
            producer,
            health,
            dead_letters,
            decoding,
            auth: Mutex::default(),
            backoffs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Backoffs (waits or handed-back batches) after authentication failures, since creation.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After authentication failures or throttled connections, waits a full-jitter exponential
    /// delay before producing — nothing is produced meanwhile. `Err` when that delay would pass
    /// the deadline: the batch is then handed back undelivered.
    async fn back_off_if_needed(&self, deadline: Instant) -> Result<Option<Duration>, ()> {
        let delay = {
            let mut auth = self
                .auth
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let failures = self.health.auth_failures();
            if failures > auth.seen {
                auth.seen = failures;
                auth.streak = auth.streak.saturating_add(1);
            }
            if auth.streak == 0 {
                return Ok(None);
            }
            self.backoffs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut backoff = Backoff::until(AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, deadline);
            let mut delay = None;
            for _ in 0..auth.streak {
                delay = backoff.next_delay();
            }
            delay
        };
        match delay {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(Some(delay))
            }
            None => Err(()),
        }
    }

    /// A batch without new authentication failures ends the backoff streak.
    fn settle_backoff(&self) {
        let mut auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.health.auth_failures() == auth.seen {
            auth.streak = 0;
        }
    }

    /// Produces `records`, keeping `ordering`, and stops at `deadline`.
    pub async fn drain(
        &self,
        records: &[SourceRecord],
        ordering: Ordering,
        deadline: Instant,
    ) -> DrainReport {
        let started = Instant::now();
        let Ok(backoff) = self.back_off_if_needed(deadline).await else {
            return DrainReport {
                outcomes: vec![
                    Outcome::Failed {
                        reason:
                            "backing off: Kafka refused authentication or throttled connections"
                                .into(),
                        retryable: true,
                    };
                    records.len()
                ],
                produce_latencies: Vec::new(),
                elapsed: started.elapsed(),
                backoff: None,
                auth_failures: self.health.auth_failures(),
            };
        };
        // Records are decoded as they are enqueued, so librdkafka's thread sends the first ones while
        // the rest are still being decoded. `false`: produced already, or never to be produced.
        let mut plans: Vec<bool> = vec![true; records.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        let mut latencies = Vec::new();
        match ordering {
            Ordering::Unordered | Ordering::Shard => {
                let all: Vec<usize> = (0..records.len()).collect();
                self.wave(
                    records,
                    &all,
                    &mut plans,
                    &mut outcomes,
                    &mut latencies,
                    deadline,
                )
                .await;
            }
            Ordering::FifoGroups => {
                // Wave k holds the k-th record of every group still going: a group's next record is
                // produced only after its previous one was acknowledged, and not at all after a failure.
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, r) in records.iter().enumerate() {
                    groups
                        .entry(r.group.as_deref().unwrap_or(""))
                        .or_default()
                        .push(i);
                }
                let longest = groups.values().map(Vec::len).max().unwrap_or(0);
                for k in 0..longest {
                    let wave: Vec<usize> =
                        groups.values().filter_map(|g| g.get(k).copied()).collect();
                    self.wave(
                        records,
                        &wave,
                        &mut plans,
                        &mut outcomes,
                        &mut latencies,
                        deadline,
                    )
                    .await;
                    for g in groups.values() {
                        let failed = g
                            .get(k)
                            .is_some_and(|i| matches!(outcomes[*i], Some(Outcome::Failed { .. })));
                        if failed {
                            for later in &g[k + 1..] {
                                outcomes[*later] = Some(Outcome::Failed {
                                    reason: "an earlier record of its message group failed".into(),
                                    retryable: true,
                                });
                                plans[*later] = false;
                            }
                        }
                    }
                }
            }
        }
        if outcomes
            .iter()
            .any(|o| matches!(o, Some(Outcome::Delivered)))
        {
            self.settle_backoff();
        }
        DrainReport {
            outcomes: outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome::Failed {
                        reason: "undelivered at the deadline".into(),
                        retryable: true,
                    })
                })
                .collect(),
            produce_latencies: latencies,
            elapsed: started.elapsed(),
            backoff,
            auth_failures: self.health.auth_failures(),
        }
    }

    /// Produces the planned records among `indices` (skipping those already decided), then
    /// dead-letters those Kafka refused for good together with the undecodable ones.
    async fn wave(
        &self,
        records: &[SourceRecord],
        indices: &[usize],
        plans: &mut [bool],
        outcomes: &mut [Option<Outcome>],
        latencies: &mut Vec<Duration>,
        deadline: Instant,
    ) {
        let mut letters: Vec<(usize, String)> = Vec::new();
        let mut pending = FuturesUnordered::new();
        for &i in indices {
            if outcomes[i].is_some() {
                continue;
            }
            if !std::mem::replace(&mut plans[i], false) {
                continue;
            }
            match to_kafka(&records[i], &self.decoding) {
                Err(e) => letters.push((i, format!("undecodable: {e}"))),
                Ok(message) => {
                    if Instant::now() >= deadline {
                        outcomes[i] = Some(Outcome::Failed {
                            reason: "not produced: the invocation's deadline was near".into(),
                            retryable: true,
                        });
                        continue;
                    }
                    let headers = message.owned_headers();
                    let mut record = FutureRecord::to(&message.topic)
                        .payload(&message.value)
                        .headers(headers);
                    if let Some(key) = &message.key {
                        record = record.key(key);
                    }
                    if let Some(partition) = message.partition {
                        record = record.partition(partition);
                    }
                    let enqueued = Instant::now();
                    loop {
                        match self.producer.send_result(record) {
                            Ok(delivery) => {
                                pending.push(async move { (i, enqueued, delivery.await) });
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) => {
                                record = back;
                                // Make room: take the next acknowledgement, or wait a moment.
                                let next = tokio::time::timeout_at(deadline.into(), async {
                                    let done = pending.next().await;
                                    if done.is_none() {
                                        tokio::time::sleep(Duration::from_millis(5)).await;
                                    }
                                    done
                                })
                                .await;
                                match next {
                                    Ok(Some((j, at, result))) => {
                                        settle(j, at, result, outcomes, &mut letters, latencies);
                                    }
                                    Ok(None) => {}
                                    Err(_) => {
                                        outcomes[i] = Some(Outcome::Failed {
                                            reason: "not produced: Kafka's queue stayed full until the deadline".into(),
                                            retryable: true,
                                        });
                                        break;
                                    }
                                }
                            }
                            Err((e, _)) => {
                                decide(i, &e, outcomes, &mut letters);
                                break;
                            }
                        }
                    }
                }
            }
        }
        while let Ok(Some((i, at, result))) =
            tokio::time::timeout_at(deadline.into(), pending.next()).await
        {
            settle(i, at, result, outcomes, &mut letters, latencies);
        }
        // Whatever is still pending is reported undelivered by `drain`.
        drop(pending);
        self.dead_letter(records, letters, outcomes).await;
    }

    async fn dead_letter(
        &self,
        records: &[SourceRecord],
        letters: Vec<(usize, String)>,
        outcomes: &mut [Option<Outcome>],
    ) {
        if letters.is_empty() {
            return;
        }
        let Some(dlq) = &self.dead_letters else {
            for (i, reason) in letters {
                tracing::warn!(item = %records[i].item_id, %reason, "poison record, no SPILLWAY_DLQ_URL: reported failed");
                outcomes[i] = Some(Outcome::Failed {
                    reason,
                    retryable: false,
                });
            }
            return;
        };
        let batch: Vec<(&SourceRecord, String)> = letters
            .iter()
            .map(|(i, reason)| (&records[*i], reason.clone()))
            .collect();
        for ((i, reason), sent) in letters.into_iter().zip(dlq.send(&batch).await) {
            outcomes[i] = Some(match sent {
                Ok(()) => Outcome::DeadLettered(reason),
                Err(e) => Outcome::Failed {
                    reason: format!("{reason}; {e}"),
                    retryable: true,
                },
            });
        }
    }
}

type Delivery = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

fn settle(
    i: usize,
    enqueued: Instant,
    result: Delivery,
    outcomes: &mut [Option<Outcome>],
    letters: &mut Vec<(usize, String)>,
    latencies: &mut Vec<Duration>,
) {
    match result {
        Ok(Ok(_)) => {
            latencies.push(enqueued.elapsed());
            outcomes[i] = Some(Outcome::Delivered);
        }
        Ok(Err((e, _))) => decide(i, &e, outcomes, letters),
        Err(_) => {
            outcomes[i] = Some(Outcome::Failed {
                reason: "the producer dropped the delivery report".into(),
                retryable: true,
            });
        }
    }
}

fn decide(
    i: usize,
    error: &KafkaError,
    outcomes: &mut [Option<Outcome>],
    letters: &mut Vec<(usize, String)>,
) {
    match classify(error) {
        Disposition::DeadLetter(reason) => letters.push((i, format!("kafka: {reason} ({error})"))),
        Disposition::BackOff => {
            outcomes[i] = Some(Outcome::Failed {
                reason: format!("kafka (back off): {error}"),
                retryable: true,
            });
        }
        Disposition::Retry => {
            outcomes[i] = Some(Outcome::Failed {
                reason: format!("kafka: {error}"),
                retryable: true,
            });
        }
    }
}
