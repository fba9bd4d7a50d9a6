//! Why one letter was not moved: it stays in the dead-letter queue, the run counts it failed and
//! names the first few distinct reasons (never a letter's content).

/// Why a letter stays in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotMoved {
    /// Its body or attributes break the dead-letter contract (`spillway_core::dead_letter`).
    #[error("{0}")]
    Unreadable(String),
    /// Its claim check names an object outside the drain's dead-letter bucket.
    #[error("its claim check names s3://{bucket}/{key}, not an object of the dead-letter bucket{allowed}: not read (give the drain's SPILLWAY_DLQ_BUCKET as --dlq-bucket)")]
    ClaimOutsideBucket {
        /// The bucket it names.
        bucket: String,
        /// The key it names.
        key: String,
        /// ` bucket/prefix` of the bucket given, or empty when none was.
        allowed: String,
    },
    /// Its S3 object could not be read, or is not what the claim says.
    #[error("{0}")]
    Claim(#[from] spillway_core::claim::ClaimError),
    /// A Kinesis on-failure record going to a queue.
    #[error("a Kinesis on-failure record holds no data for a queue; replay it with --to-kafka or --to-stream")]
    RangeToQueue,
    /// The range a Kinesis on-failure record names could not be read whole.
    #[error("{0}")]
    Range(String),
    /// Its records were not read before half its visibility timeout was gone.
    #[error("not read in time: its visibility timeout would run out")]
    NotReadInTime,
    /// A plain (raw-mode) letter for a queue, without `--raw-topic`.
    #[error("a plain (raw-mode) letter sent back to a queue as it is would get a new message id and so a new spillway-id; give --raw-topic (the drain's SPILLWAY_TOPIC) to send it in an envelope that keeps its id, or replay it --to-kafka")]
    PlainWithoutTopic,
    /// The target did not take one of its records.
    #[error("{target} did not take it: {detail}")]
    Refused {
        /// `the queue`, `the stream` or `Kafka`.
        target: &'static str,
        /// The target's answer.
        detail: String,
    },
    /// Written to the target, but the DLQ did not delete it: it will be replayed again.
    #[error("written to the target but still in the DLQ (it will be replayed again): {0}")]
    NotDeleted(String),
}
