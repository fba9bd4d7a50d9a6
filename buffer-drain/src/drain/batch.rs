//! One batch on its way through the producer: what is planned, what became of each record, and
//! the waves that produce it (one for an unordered batch or a shard; one per position in the
//! message groups of a FIFO batch).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use spillway_core::kafka::{classify, is_systemic_when_shared, Disposition};

use super::{Drain, KafkaClient};
use crate::message::to_kafka;
use crate::report::{Failure, KafkaFailure, Outcome};
use crate::source::SourceRecord;

/// A record on its way to the dead-letter queue.
#[derive(Debug)]
struct Letter {
    /// Its index in the batch.
    index: usize,
    /// The reason the dead letter carries.
    reason: String,
    /// Kafka refused it with an error that is systemic when every record shares it (rule 9).
    systemic_when_shared: bool,
}

impl Letter {
    fn poison(index: usize, reason: String) -> Self {
        Self {
            index,
            reason,
            systemic_when_shared: false,
        }
    }
}

type Delivery = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

/// One batch: the drain and producer it goes through, and what became of each record so far.
pub(super) struct Batch<'a> {
    drain: &'a Drain,
    client: &'a Arc<KafkaClient>,
    records: &'a [SourceRecord],
    deadline: Instant,
    /// `false`: produced already, or never to be produced.
    plans: Vec<bool>,
    /// One per record; `None` while undecided (undecided at the end: unacknowledged).
    pub(super) outcomes: Vec<Option<Outcome>>,
    /// Enqueue-to-acknowledgement time of each delivered record.
    pub(super) latencies: Vec<Duration>,
    /// Refused for good in the current wave: dead-lettered at its end.
    letters: Vec<Letter>,
    /// The claim check of each record whose value was read from S3: its object is removed once
    /// the record is delivered.
    pub(super) value_claims: Vec<Option<spillway_core::claim::Claim>>,
    /// A FIFO group's or a shard's batch: its order must hold across the copies sent again.
    ordered: bool,
}

impl<'a> Batch<'a> {
    pub(super) fn new(
        drain: &'a Drain,
        client: &'a Arc<KafkaClient>,
        records: &'a [SourceRecord],
        deadline: Instant,
        ordered: bool,
    ) -> Self {
        Self {
            ordered,
            drain,
            client,
            records,
            deadline,
            plans: vec![true; records.len()],
            outcomes: vec![None; records.len()],
            latencies: Vec::new(),
            letters: Vec::new(),
            value_claims: vec![None; records.len()],
        }
    }

    /// A FIFO batch: wave k holds the k-th record of every group still going. A group's next
    /// record is produced only once its previous one left the queue (acknowledged,
    /// dead-lettered); a failure or a record unsettled at the deadline blocks the rest of its
    /// group (rule 4).
    pub(super) async fn fifo_waves(&mut self) {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in self.records.iter().enumerate() {
            groups
                .entry(r.group.as_deref().unwrap_or(""))
                .or_default()
                .push(i);
        }
        let longest = groups.values().map(Vec::len).max().unwrap_or(0);
        for k in 0..longest {
            let wave: Vec<usize> = groups.values().filter_map(|g| g.get(k).copied()).collect();
            self.wave(&wave).await;
            for g in groups.values() {
                let left = |i: usize| {
                    matches!(
                        self.outcomes[i],
                        Some(Outcome::Delivered | Outcome::DeadLettered(_))
                    )
                };
                if g.get(k).is_some_and(|&i| !left(i)) {
                    for &later in &g[k + 1..] {
                        self.outcomes[later] = Some(Outcome::Failed(Failure::GroupBlocked));
                        self.plans[later] = false;
                    }
                }
            }
        }
    }

    /// Produces the planned records among `indices` (skipping those already decided), then
    /// dead-letters those Kafka refused for good together with the undecodable ones. Records are
    /// decoded as they are enqueued, so librdkafka's thread sends the first ones while the rest
    /// are still being decoded.
    pub(super) async fn wave(&mut self, indices: &[usize]) {
        let client = self.client;
        let producer = client.producer();
        let mut sent_to_kafka: Vec<usize> = Vec::new();
        let mut pending = FuturesUnordered::new();
        for &i in indices {
            if self.outcomes[i].is_some() || !std::mem::replace(&mut self.plans[i], false) {
                continue;
            }
            let mut message = match to_kafka(&self.records[i], &self.drain.decoding) {
                Ok(message) => message,
                Err(e) => {
                    self.letters
                        .push(Letter::poison(i, format!("undecodable: {e}")));
                    continue;
                }
            };
            if let Some(claim) = message.value_claim.take() {
                match self.drain.fetch_value(&claim, self.deadline).await {
                    Ok(value) => {
                        message.value = value;
                        self.value_claims[i] = Some(claim);
                    }
                    Err(super::Unfetched::Poison(reason)) => {
                        self.letters.push(Letter::poison(i, reason));
                        continue;
                    }
                    Err(super::Unfetched::Retry(failure)) => {
                        self.outcomes[i] = Some(Outcome::Failed(failure));
                        continue;
                    }
                    Err(super::Unfetched::Delivered) => {
                        // In Kafka already: this copy leaves the buffer without a duplicate.
                        self.outcomes[i] = Some(Outcome::Delivered);
                        continue;
                    }
                }
            }
            if Instant::now() >= self.deadline {
                self.outcomes[i] = Some(Outcome::Failed(Failure::DeadlineNear));
                continue;
            }
            let mut record = FutureRecord::to(&message.topic)
                .payload(&message.value)
                .headers(message.owned_headers());
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            if let Some(partition) = message.partition {
                record = record.partition(partition);
            }
            if let Some(timestamp) = message.timestamp_ms {
                record = record.timestamp(timestamp);
            }
            let enqueued = Instant::now();
            sent_to_kafka.push(i);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(async move { (i, enqueued, delivery.await) });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        // Make room: take the next acknowledgement, or wait a moment.
                        let next = tokio::time::timeout_at(self.deadline.into(), async {
                            let done = pending.next().await;
                            if done.is_none() {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            done
                        })
                        .await;
                        match next {
                            Ok(Some((j, at, result))) => self.settle(j, at, result),
                            Ok(None) => {}
                            Err(_) => {
                                self.outcomes[i] = Some(Outcome::Failed(Failure::QueueFull));
                                break;
                            }
                        }
                    }
                    Err((e, _)) => {
                        self.decide(i, &e);
                        break;
                    }
                }
            }
        }
        while let Ok(Some((i, at, result))) =
            tokio::time::timeout_at(self.deadline.into(), pending.next()).await
        {
            self.settle(i, at, result);
        }
        // Whatever is still pending is reported undelivered by `drain`, and comes again.
        if !pending.is_empty() {
            drop(pending);
            self.drain.purge(client, self.ordered).await;
        }
        self.systemic_check(&sent_to_kafka);
        self.dead_letter().await;
    }

    /// Rule 9: when Kafka took none of the batch's records and every record of this wave it
    /// refused for good was refused with an error that can be the cluster's or IAM's
    /// ([`spillway_core::kafka::is_systemic_when_shared`]: not authorised, unknown topic), the
    /// records are not poison: they fail retryably (the batch fails, the mapping backs off) and
    /// the next batch backs off too, instead of the whole stream going to the DLQ. Records that
    /// failed transiently or were still unacknowledged at the deadline do not make a refusal
    /// per-record; one record of the batch Kafka took does (in a FIFO batch, in any wave).
    fn systemic_check(&mut self, produced: &[usize]) {
        let outcomes = &mut self.outcomes;
        let letters = std::mem::take(&mut self.letters);
        let mut in_wave = vec![false; outcomes.len()];
        for &i in produced {
            in_wave[i] = true;
        }
        let refused: Vec<&Letter> = letters.iter().filter(|l| in_wave[l.index]).collect();
        let took_any = outcomes
            .iter()
            .any(|o| matches!(o, Some(Outcome::Delivered)));
        let systemic =
            !took_any && !refused.is_empty() && refused.iter().all(|l| l.systemic_when_shared);
        if !systemic {
            self.letters = letters;
            return;
        }
        self.drain.count_systemic();
        tracing::warn!(records = refused.len(), reason = %refused[0].reason, "Kafka took nothing and refused the records as unauthorised or unknown: systemic, backing off");
        self.letters = letters
            .into_iter()
            .filter(|l| {
                if in_wave[l.index] {
                    outcomes[l.index] = Some(Outcome::Failed(Failure::Kafka {
                        disposition: KafkaFailure::Systemic,
                        detail: l.reason.clone(),
                    }));
                    false
                } else {
                    true
                }
            })
            .collect();
    }

    /// The wave's letters to the dead-letter queue, within the grace after the deadline (rule 5:
    /// bounded work after it); a letter not written is reported failed, never dropped.
    async fn dead_letter(&mut self) {
        let letters = std::mem::take(&mut self.letters);
        if letters.is_empty() {
            return;
        }
        let (records, outcomes) = (self.records, &mut self.outcomes);
        let until = self.deadline + self.drain.dead_letter_grace;
        let Some(dlq) = &self.drain.dead_letters else {
            for Letter { index, reason, .. } in letters {
                tracing::warn!(item = %records[index].item_id, %reason, "poison record, no SPILLWAY_DLQ_URL: reported failed");
                outcomes[index] = Some(Outcome::Failed(Failure::PoisonWithoutDeadLetterQueue(
                    reason,
                )));
            }
            return;
        };
        let batch: Vec<(&SourceRecord, String)> = letters
            .iter()
            .map(|l| (&records[l.index], l.reason.clone()))
            .collect();
        for (Letter { index, reason, .. }, sent) in
            letters.into_iter().zip(dlq.send(&batch, until).await)
        {
            outcomes[index] = Some(match sent {
                Ok(()) => Outcome::DeadLettered(reason),
                Err(error) => Outcome::Failed(Failure::DeadLetterWrite { reason, error }),
            });
        }
    }

    /// Takes a delivery report: acknowledged, or Kafka's error for [`Batch::decide`].
    fn settle(&mut self, i: usize, enqueued: Instant, result: Delivery) {
        match result {
            Ok(Ok(_)) => {
                self.latencies.push(enqueued.elapsed());
                self.outcomes[i] = Some(Outcome::Delivered);
            }
            Ok(Err((e, _))) => self.decide(i, &e),
            Err(_) => {
                self.outcomes[i] = Some(Outcome::Failed(Failure::ReportDropped));
            }
        }
    }

    /// What Kafka's error means for the record (rules 6 and 9): a letter, or a failure.
    fn decide(&mut self, i: usize, error: &KafkaError) {
        match classify(error) {
            Disposition::DeadLetter(reason) => self.letters.push(Letter {
                index: i,
                reason: format!("kafka: {reason} ({error})"),
                systemic_when_shared: is_systemic_when_shared(error),
            }),
            Disposition::BackOff => {
                self.outcomes[i] = Some(Outcome::Failed(Failure::Kafka {
                    disposition: KafkaFailure::BackOff,
                    detail: error.to_string(),
                }));
            }
            Disposition::Retry => {
                self.outcomes[i] = Some(Outcome::Failed(Failure::Kafka {
                    disposition: KafkaFailure::Retry,
                    detail: error.to_string(),
                }));
            }
        }
    }
}
