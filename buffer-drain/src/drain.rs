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
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use spillway_core::kafka::{classify, Disposition, Producer};

use crate::dlq::DeadLetters;
use crate::message::{to_kafka, Decoding};
use crate::report::{DrainReport, Outcome};
use crate::source::{Ordering, SourceRecord};

/// The drain: one producer per container, created at init and reused by every invocation.
pub struct Drain {
    producer: Producer,
    dead_letters: Option<DeadLetters>,
    decoding: Decoding,
}

impl Drain {
    /// A drain producing with `producer`; poison records go to `dead_letters` when given, else they
    /// are reported failed (and reach the buffer's own DLQ after `maxReceiveCount`).
    pub fn new(producer: Producer, dead_letters: Option<DeadLetters>, decoding: Decoding) -> Self {
        Self {
            producer,
            dead_letters,
            decoding,
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
