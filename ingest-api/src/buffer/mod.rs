//! Buffer writers: envelopes into SQS (standard or FIFO) or Kinesis.
//!
//! A request's messages are packed into as few calls as the service allows (`SendMessageBatch`: 10
//! entries and the queue's byte limit; `PutRecords`: 500 records and 5 MiB). Entries that fail inside
//! a batch call are retried alone with exponential backoff and full jitter until the retry budget is
//! spent; then the entry's outcome is [`WriteError::Throttled`] or [`WriteError::Unavailable`] and
//! the caller is told it was not accepted. An outcome is `Ok` only after the service accepted the
//! message (delivery rule 1).

pub mod kinesis;
mod sqs;

use std::time::{Duration, Instant};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::error::SdkError;
use spillway_core::config::BufferConfig;
use spillway_core::limits::BufferLimit;
use thiserror::Error;

pub use spillway_core::batch::pack;

pub use kinesis::KinesisBuffer;
pub use sqs::SqsBuffer;

/// The first retry waits up to this long; later ones up to twice as long as the one before.
const RETRY_BASE: Duration = Duration::from_millis(25);
/// No single retry waits longer than this.
const RETRY_CAP: Duration = Duration::from_secs(1);

/// A message ready for the buffer: encoded once, its size already checked.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The envelope id; also the FIFO deduplication id. With an `Idempotency-Key` it is derived
    /// from the topic and the key, so retries share it and the same key on two topics does not.
    pub id: String,
    /// What the buffer holds: the encoded envelope from ingest; replay also writes plain records
    /// (binary data only to Kinesis: an SQS body is text, and a binary one is refused).
    pub body: bytes::Bytes,
    /// The Kafka key: the FIFO message group and the Kinesis partition key.
    pub key: Option<Vec<u8>>,
    /// A FIFO message group that is not derived from the key: replay keeps the group a letter
    /// had (another producer's, in raw mode). `None` from ingest.
    pub group: Option<String>,
    /// The tenant (`SPILLWAY_TENANT_FROM`): a standard queue's message group, which SQS fair
    /// queues balance by. FIFO queues keep their key-derived groups; Kinesis ignores it.
    pub tenant: Option<String>,
}

/// Why the buffer did not take a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The service kept throttling until the retry budget was spent.
    #[error("throttled by the buffer until the retry budget ran out")]
    Throttled,
    /// The service did not answer, or answered with server errors, until the budget was spent.
    #[error("the buffer did not answer: {0}")]
    Unavailable(String),
    /// The service refused the message for good (configuration or content).
    #[error("refused by the buffer: {0}")]
    Refused(String),
}

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Buffer {
    /// An SQS queue.
    Sqs(SqsBuffer),
    /// A Kinesis stream.
    Kinesis(KinesisBuffer),
}

impl Buffer {
    /// A writer for the configured buffer, with clients built from `sdk`.
    pub fn new(config: &BufferConfig, sdk: &aws_config::SdkConfig) -> Self {
        match config {
            BufferConfig::Sqs {
                queue_url,
                fifo,
                max_message_bytes,
            } => Buffer::Sqs(SqsBuffer::new(
                aws_sdk_sqs::Client::new(sdk),
                queue_url.clone(),
                *fifo,
                *max_message_bytes,
            )),
            BufferConfig::Kinesis { stream } => Buffer::Kinesis(KinesisBuffer::new(
                aws_sdk_kinesis::Client::new(sdk),
                stream.clone(),
            )),
        }
    }

    /// The per-message limit.
    pub fn limit(&self) -> BufferLimit {
        match self {
            Buffer::Sqs(sqs) => BufferLimit::sqs(sqs.max_message_bytes()),
            Buffer::Kinesis(_) => BufferLimit::kinesis(),
        }
    }

    /// Bytes the buffer counts besides the encoded envelope: the Kinesis partition key (spillway
    /// sets no SQS message attributes).
    pub fn extra_bytes(&self, id: &str, key: Option<&[u8]>) -> usize {
        match self {
            Buffer::Sqs(_) => 0,
            Buffer::Kinesis(_) => kinesis::partition_key(id, key).len(),
        }
    }

    /// Writes `batch`, returning one outcome per message, in order. Retries end by `deadline`.
    pub async fn write(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        match self {
            Buffer::Sqs(sqs) => sqs.write(batch, deadline).await,
            Buffer::Kinesis(kinesis) => kinesis.write(batch, deadline).await,
        }
    }
}

/// How a failed call or entry should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Throttled,
    Transient,
    Permanent,
}

/// Error codes AWS services use for throttling. SQS's query-compatible codes carry a namespace
/// (`AWS.SimpleQueueService.RequestThrottled`), so only the last segment is compared.
fn is_throttling_code(code: &str) -> bool {
    matches!(
        code.rsplit('.').next().unwrap_or(code),
        "ThrottlingException"
            | "Throttling"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "KmsThrottled"
            | "SlowDown"
    )
}

/// Classifies an SDK error: throttling, transient (network, timeouts, 5xx) or permanent.
fn classify<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> (Failure, String) {
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let failure = if is_throttling_code(&code) {
                Failure::Throttled
            } else if code.starts_with("InternalError")
                || code == "ServiceUnavailable"
                || code == "InternalFailure"
            {
                Failure::Transient
            } else {
                Failure::Permanent
            };
            (failure, code)
        }
        SdkError::TimeoutError(_) => (Failure::Transient, "timeout".into()),
        SdkError::DispatchFailure(e) => (Failure::Transient, format!("dispatch failure: {e:?}")),
        SdkError::ResponseError(_) => (Failure::Transient, "unreadable response".into()),
        _ => (Failure::Permanent, "request could not be built".into()),
    }
}

impl Failure {
    fn into_error(self, detail: String) -> WriteError {
        match self {
            Failure::Throttled => WriteError::Throttled,
            Failure::Transient => WriteError::Unavailable(detail),
            Failure::Permanent => WriteError::Refused(detail),
        }
    }
}

/// `value` when it fits an identifier field (1 to `max` characters from `allowed`), else a stable
/// SHA-256 hex digest of it (64 characters), so equal inputs still map to equal identifiers.
fn id_or_digest(value: &[u8], max: usize, allowed: impl Fn(u8) -> bool) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.is_empty() && text.len() <= max && text.bytes().all(allowed) => {
            text.to_owned()
        }
        _ => spillway_core::claim::sha256_hex(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_kept_when_valid_and_digested_otherwise() {
        let alnum = |b: u8| b.is_ascii_alphanumeric();
        assert_eq!(id_or_digest(b"customer42", 128, alnum), "customer42");
        let digested = id_or_digest(b"customer 42", 128, alnum);
        assert_eq!(digested.len(), 64);
        assert_eq!(digested, id_or_digest(b"customer 42", 128, alnum), "stable");
        assert_eq!(id_or_digest(&[0xFF; 3], 128, alnum).len(), 64);
        assert_eq!(id_or_digest(&[b'a'; 129], 128, alnum).len(), 64);
    }
}
