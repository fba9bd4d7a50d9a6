//! Per-record outcomes and the reports Lambda reads from them.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use serde::Serialize;

pub use crate::failure::{Failure, KafkaFailure};
use crate::source::SourceRecord;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Kafka acknowledged it (`acks=all`): it may leave the buffer.
    Delivered,
    /// It can never be delivered and is in the dead-letter queue with this reason: it may leave
    /// the buffer.
    DeadLettered(String),
    /// Not delivered: it stays in the buffer and comes again.
    Failed(Failure),
}

/// The outcome of a batch, in record order.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// One per record, in the batch's order.
    pub outcomes: Vec<Outcome>,
    /// Enqueue-to-acknowledgement time of each delivered record.
    pub produce_latencies: Vec<Duration>,
    /// How long the batch took.
    pub elapsed: Duration,
    /// How long the drain backed off before producing, after authentication failures.
    pub backoff: Option<Duration>,
    /// Authentication failures the producer has seen so far.
    pub auth_failures: u64,
}

impl DrainReport {
    /// Indices of the records that stay in the buffer.
    pub fn failed(&self) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .map(|(i, _)| i)
    }

    /// Delivery rule 3: when every record failed for a retryable broker or authentication reason,
    /// the invocation itself fails, so that the event source mapping backs off instead of
    /// hammering a struggling cluster.
    pub fn every_record_failed_retryably(&self) -> bool {
        !self.outcomes.is_empty()
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Failed(f) if f.is_retryable()))
    }

    /// Some record failed in Kafka or for want of it (not delivered in time, queue full,
    /// refused, producer unusable, backing off): the broker is struggling, whatever the
    /// produce time of the records that were acknowledged.
    pub fn met_broker_trouble(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed(f) if f.is_broker_trouble()))
    }

    /// SQS: exactly the failed message ids (delivery rules 2 and 3).
    pub fn sqs_response(&self, records: &[SourceRecord]) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = self
            .failed()
            .map(|i| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier.clone_from(&records[i].item_id);
                failure
            })
            .collect();
        response
    }

    /// Kinesis: the lowest failed sequence number, where Lambda resumes the shard (rule 4). Later
    /// records that were delivered come again: at-least-once, with their original `spillway-id`.
    pub fn kinesis_response(&self, records: &[SourceRecord]) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        let lowest = self
            .failed()
            .map(|i| records[i].item_id.as_str())
            .min_by(|a, b| (a.len(), *a).cmp(&(b.len(), *b)));
        if let Some(sequence) = lowest {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(sequence.to_owned());
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// Logs the batch's event, prints its EMF line ([`DrainMetrics::emit`]) and records it in the
    /// Prometheus metrics ([`crate::service::metrics`]): one event, so that logs, CloudWatch and
    /// Prometheus cannot drift.
    pub fn publish(&self, source: &str) {
        let event = self.metrics(source);
        event.emit();
        crate::service::metrics().record(&event, &self.produce_latencies);
    }

    /// The batch's metrics as a typed event.
    pub fn metrics(&self, source: &str) -> DrainMetrics {
        let mut failed_by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
        let (mut delivered, mut dead_lettered) = (0, 0);
        for outcome in &self.outcomes {
            match outcome {
                Outcome::Delivered => delivered += 1,
                Outcome::DeadLettered(_) => dead_lettered += 1,
                // Counted by kind, a fixed name, never by the wording of the reason.
                Outcome::Failed(failure) => {
                    *failed_by_reason.entry(failure.kind()).or_default() += 1;
                }
            }
        }
        let mut latencies: Vec<u64> = self
            .produce_latencies
            .iter()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect();
        latencies.sort_unstable();
        DrainMetrics {
            source: source.to_owned(),
            received: self.outcomes.len(),
            delivered,
            dead_lettered,
            failed: failed_by_reason.values().sum(),
            failed_by_reason,
            batch_ms: u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            produce_latency_p50_ms: latencies.get(latencies.len() / 2).copied().unwrap_or(0),
            produce_latency_max_ms: latencies.last().copied().unwrap_or(0),
            backoff_ms: self
                .backoff
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            auth_failures: self.auth_failures,
        }
    }
}

static EMF_TO_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether batch metrics are printed as EMF lines on stdout (on by default: that is how Lambda
/// turns them into CloudWatch metrics). `spillway dev` turns it off; its terminal shows counters.
pub fn print_emf(on: bool) {
    EMF_TO_STDOUT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// One batch's numbers: logged and counted together, so logs and metrics cannot drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainMetrics {
    /// `sqs` or `kinesis`.
    pub source: String,
    /// Records in the batch.
    pub received: usize,
    /// Acknowledged by Kafka.
    pub delivered: usize,
    /// Sent to the dead-letter queue.
    pub dead_lettered: usize,
    /// Left in the buffer.
    pub failed: usize,
    /// Failures by [`Failure::kind`].
    pub failed_by_reason: BTreeMap<&'static str, usize>,
    /// Batch duration.
    pub batch_ms: u64,
    /// Median enqueue-to-ack time.
    pub produce_latency_p50_ms: u64,
    /// Slowest enqueue-to-ack time.
    pub produce_latency_max_ms: u64,
    /// Backoff before producing, after authentication failures or throttled connections.
    pub backoff_ms: Option<u64>,
    /// Authentication failures the producer has seen since it was created.
    pub auth_failures: u64,
}

impl DrainMetrics {
    /// The event as a CloudWatch Embedded Metric Format line.
    pub fn emf(&self) -> String {
        let unit = |name: &str, unit: &str| serde_json::json!({"Name": name, "Unit": unit});
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": spillway_core::envelope::now_ms(),
                "CloudWatchMetrics": [{
                    "Namespace": "spillway",
                    "Dimensions": [["Source"]],
                    "Metrics": [
                        unit("Received", "Count"), unit("Delivered", "Count"), unit("DeadLettered", "Count"),
                        unit("Failed", "Count"), unit("BatchDuration", "Milliseconds"),
                        unit("ProduceLatencyP50", "Milliseconds"), unit("ProduceLatencyMax", "Milliseconds"),
                        unit("Backoffs", "Count"), unit("BackoffDuration", "Milliseconds"),
                    ],
                }],
            },
            "Source": self.source,
            "Received": self.received,
            "Delivered": self.delivered,
            "DeadLettered": self.dead_lettered,
            "Failed": self.failed,
            "BatchDuration": self.batch_ms,
            "ProduceLatencyP50": self.produce_latency_p50_ms,
            "ProduceLatencyMax": self.produce_latency_max_ms,
            "Backoffs": u64::from(self.backoff_ms.is_some()),
            "BackoffDuration": self.backoff_ms.unwrap_or(0),
            "AuthFailures": self.auth_failures,
        });
        line["FailedByReason"] = serde_json::json!(self.failed_by_reason);
        line.to_string()
    }

    /// Logs the event and prints its EMF line (unless [`print_emf`] turned that off).
    pub fn emit(&self) {
        tracing::info!(source = %self.source, received = self.received, delivered = self.delivered,
            dead_lettered = self.dead_lettered, failed = self.failed, batch_ms = self.batch_ms, "batch drained");
        if EMF_TO_STDOUT.load(std::sync::atomic::Ordering::Relaxed) {
            println!("{}", self.emf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_met_broker_trouble_when_any_record_failed_in_or_for_kafka() {
        let with = |failures: Vec<Failure>| DrainReport {
            outcomes: std::iter::once(Outcome::Delivered)
                .chain(failures.into_iter().map(Outcome::Failed))
                .collect(),
            ..DrainReport::default()
        };
        for trouble in [
            Failure::ProducerUnusable,
            Failure::BackingOff,
            Failure::DeadlineNear,
            Failure::QueueFull,
            Failure::Unacknowledged,
            Failure::ReportDropped,
            Failure::Kafka {
                disposition: KafkaFailure::Retry,
                detail: "Broker: Request timed out".into(),
            },
        ] {
            let kind = trouble.kind();
            assert!(with(vec![trouble]).met_broker_trouble(), "{kind}");
        }
        // Failures of the records themselves or of the dead-letter queue say nothing of Kafka.
        let own = with(vec![
            Failure::GroupBlocked,
            Failure::PoisonWithoutDeadLetterQueue("not an envelope".into()),
        ]);
        assert!(!own.met_broker_trouble());
        assert!(!with(Vec::new()).met_broker_trouble());
    }

    #[test]
    fn failures_of_different_kinds_are_counted_apart() {
        let kafka = |disposition, detail: &str| {
            Outcome::Failed(Failure::Kafka {
                disposition,
                detail: detail.into(),
            })
        };
        let report = DrainReport {
            outcomes: vec![
                Outcome::Failed(Failure::DeadlineNear),
                Outcome::Failed(Failure::QueueFull),
                kafka(KafkaFailure::BackOff, "authentication failed"),
                kafka(KafkaFailure::Retry, "broker transport failure"),
                kafka(KafkaFailure::Retry, "message timed out"),
            ],
            ..DrainReport::default()
        };
        let metrics = report.metrics("sqs");
        assert_eq!(
            metrics.failed_by_reason,
            BTreeMap::from([
                ("deadline-near", 1),
                ("queue-full", 1),
                ("kafka-back-off", 1),
                ("kafka-retry", 2)
            ])
        );
    }
}
