//! Why a record was not delivered: one type, so that reports, logs and metrics agree.
//!
//! A [`Failure`] is what [`crate::report::Outcome::Failed`] carries. Its [`Display`] is the text
//! operators read (in logs and in the invocation error); its [`Failure::kind`] is the metric
//! dimension (`FailedByReason` in the EMF line), a fixed name per variant, so that a metric or an
//! alarm never depends on how an error message is worded.
//!
//! [`Display`]: std::fmt::Display

use crate::dlq::DeadLetterError;

/// What Kafka's error said about retrying the record ([`spillway_core::kafka::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFailure {
    /// Transient broker trouble: the record comes again.
    Retry,
    /// Authentication failed or the cluster throttles: the record comes again after a backoff.
    BackOff,
    /// Kafka took nothing of the batch and refused every record as unauthorised or unknown: the
    /// cluster's or IAM's fault, not the records' (rule 9).
    Systemic,
}

/// Why a record stays in the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The producer is in librdkafka's fatal state (or was purged) and no new one could be made.
    #[error("the Kafka producer is unusable; a new one could not be made yet")]
    ProducerUnusable,
    /// The backoff after authentication failures would pass the deadline.
    #[error("backing off: Kafka refused authentication or throttled connections")]
    BackingOff,
    /// The deadline came before the record was enqueued.
    #[error("not produced: the invocation's deadline was near")]
    DeadlineNear,
    /// librdkafka's queue stayed full until the deadline.
    #[error("not produced: Kafka's queue stayed full until the deadline")]
    QueueFull,
    /// Enqueued, but not acknowledged by the deadline (rule 5).
    #[error("undelivered at the deadline")]
    Unacknowledged,
    /// An earlier record of its FIFO message group did not leave the queue (rule 4).
    #[error("an earlier record of its message group failed")]
    GroupBlocked,
    /// The producer dropped the delivery report.
    #[error("the producer dropped the delivery report")]
    ReportDropped,
    /// Kafka refused or lost the record; `detail` is Kafka's error (or, when systemic, the reason
    /// the record would have been dead-lettered with).
    #[error("{}{detail}", match disposition {
        KafkaFailure::Retry => "kafka: ",
        KafkaFailure::BackOff => "kafka (back off): ",
        KafkaFailure::Systemic => "kafka (systemic, back off): ",
    })]
    Kafka {
        /// What the error means for retrying.
        disposition: KafkaFailure,
        /// Kafka's error text.
        detail: String,
    },
    /// A poison record whose dead-letter write failed: it comes again and is dead-lettered then.
    #[error("{reason}; {error}")]
    DeadLetterWrite {
        /// The reason it would be dead-lettered with.
        reason: String,
        /// Why the write failed.
        error: DeadLetterError,
    },
    /// The value of a claim-checked record could not be read from S3 yet (S3 unavailable, or
    /// `SPILLWAY_CLAIM_BUCKET` not set): the record comes again; the object stays.
    #[error("the value in S3 could not be read: {0}")]
    ClaimUnavailable(String),
    /// A poison record without a dead-letter queue configured: it stays until the buffer's own
    /// redrive policy moves it (`maxReceiveCount`).
    #[error("{0}")]
    PoisonWithoutDeadLetterQueue(String),
}

impl Failure {
    /// The metric dimension: a fixed name per kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::ProducerUnusable => "producer-unusable",
            Failure::BackingOff => "backing-off",
            Failure::DeadlineNear => "deadline-near",
            Failure::QueueFull => "queue-full",
            Failure::Unacknowledged => "unacknowledged-at-deadline",
            Failure::GroupBlocked => "group-blocked",
            Failure::ReportDropped => "report-dropped",
            Failure::Kafka {
                disposition: KafkaFailure::Retry,
                ..
            } => "kafka-retry",
            Failure::Kafka {
                disposition: KafkaFailure::BackOff,
                ..
            } => "kafka-back-off",
            Failure::Kafka {
                disposition: KafkaFailure::Systemic,
                ..
            } => "kafka-systemic",
            Failure::DeadLetterWrite { .. } => "dead-letter-write",
            Failure::ClaimUnavailable(_) => "claim-unavailable",
            Failure::PoisonWithoutDeadLetterQueue(_) => "poison-without-dlq",
        }
    }

    /// Whether the failure is Kafka's (or the producer's) rather than the record's own or the
    /// dead-letter queue's.
    pub fn is_broker_trouble(&self) -> bool {
        !matches!(
            self,
            Failure::GroupBlocked
                | Failure::DeadLetterWrite { .. }
                | Failure::ClaimUnavailable(_)
                | Failure::PoisonWithoutDeadLetterQueue(_)
        )
    }

    /// Whether the broker or authentication may let the record through later (rule 3: a batch
    /// whose every record failed retryably fails the invocation, so the mapping backs off).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Failure::PoisonWithoutDeadLetterQueue(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_does_not_depend_on_the_wording() {
        let kafka = |detail: &str| Failure::Kafka {
            disposition: KafkaFailure::Retry,
            detail: detail.into(),
        };
        assert_eq!(kafka("a: b; c (d)").kind(), kafka("other").kind());
        assert_eq!(
            kafka("Broker: transport failure").to_string(),
            "kafka: Broker: transport failure"
        );
        let every = [
            Failure::ProducerUnusable,
            Failure::BackingOff,
            Failure::DeadlineNear,
            Failure::QueueFull,
            Failure::Unacknowledged,
            Failure::GroupBlocked,
            Failure::ReportDropped,
            kafka(""),
            Failure::Kafka {
                disposition: KafkaFailure::BackOff,
                detail: String::new(),
            },
            Failure::Kafka {
                disposition: KafkaFailure::Systemic,
                detail: String::new(),
            },
            Failure::DeadLetterWrite {
                reason: String::new(),
                error: DeadLetterError::Unanswered,
            },
            Failure::PoisonWithoutDeadLetterQueue(String::new()),
        ];
        let kinds: std::collections::BTreeSet<_> = every.iter().map(Failure::kind).collect();
        assert_eq!(kinds.len(), every.len(), "every kind has its own name");
        assert!(kinds
            .iter()
            .all(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')));
    }
}
