//! The buffers' size limits, and the check ingest-api answers with 413.

use thiserror::Error;

/// Kinesis Data Streams: at most 1 MiB per record, data blob plus partition key.
pub const KINESIS_MAX_RECORD_BYTES: usize = 1_048_576;

/// Kinesis partition keys are 1 to 256 Unicode characters.
pub const KINESIS_MAX_PARTITION_KEY_CHARS: usize = 256;

/// SQS `MaximumMessageSize` when a queue does not set it: 256 KiB, the limit on most queues.
/// AWS raised the ceiling to 1 MiB in 2025; a queue configured higher says so in its attributes.
pub const SQS_DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;

/// The largest `MaximumMessageSize` SQS accepts (1 MiB, since 2025).
pub const SQS_MAX_MESSAGE_BYTES_CEILING: usize = 1_048_576;

/// Whether a queue name, URL or ARN names an SQS FIFO queue. AWS requires FIFO queue names to end
/// in the lower-case suffix `.fifo`, so the comparison is case-sensitive on purpose.
#[allow(clippy::case_sensitive_file_extension_comparisons)]
pub fn is_fifo_queue(queue: &str) -> bool {
    queue.trim_end_matches('/').ends_with(".fifo")
}

/// Where messages are buffered between the API and the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    /// An SQS queue (standard or FIFO).
    Sqs,
    /// A Kinesis data stream.
    Kinesis,
}

impl std::fmt::Display for BufferKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BufferKind::Sqs => "SQS",
            BufferKind::Kinesis => "Kinesis",
        })
    }
}

/// One buffer's per-message size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimit {
    /// Which buffer.
    pub kind: BufferKind,
    /// The most bytes one message may take, counted the way that buffer counts.
    pub max_bytes: usize,
}

/// A message that the buffer would refuse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("message is {size} bytes once encoded ({counted}); the {kind} buffer accepts at most {limit} bytes")]
pub struct TooLarge {
    /// The size as the buffer counts it.
    pub size: usize,
    /// The limit it exceeds.
    pub limit: usize,
    /// Which buffer.
    pub kind: BufferKind,
    /// What was counted, in words.
    pub counted: &'static str,
}

impl BufferLimit {
    /// An SQS queue whose `MaximumMessageSize` attribute is `max_message_size`.
    pub fn sqs(max_message_size: usize) -> Self {
        Self {
            kind: BufferKind::Sqs,
            max_bytes: max_message_size,
        }
    }

    /// A Kinesis stream.
    pub fn kinesis() -> Self {
        Self {
            kind: BufferKind::Kinesis,
            max_bytes: KINESIS_MAX_RECORD_BYTES,
        }
    }

    /// Checks a message of `encoded_len` bytes (the envelope, see
    /// [`crate::envelope::Envelope::encoded_len`]) plus `extra` bytes the buffer also counts:
    /// for SQS the message attributes (names, types and values), for Kinesis the partition key.
    /// Returns the counted size when it fits.
    pub fn check(&self, encoded_len: usize, extra: usize) -> Result<usize, TooLarge> {
        let size = encoded_len.saturating_add(extra);
        if size <= self.max_bytes {
            return Ok(size);
        }
        Err(TooLarge {
            size,
            limit: self.max_bytes,
            kind: self.kind,
            counted: match self.kind {
                BufferKind::Sqs => "body plus message attributes",
                BufferKind::Kinesis => "data plus partition key",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_itself_fits_one_byte_more_does_not() {
        let sqs = BufferLimit::sqs(SQS_DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(sqs.check(262_000, 144), Ok(262_144));
        let err = sqs.check(262_000, 145).unwrap_err();
        assert_eq!(err.size, 262_145);
        assert_eq!(
            err.to_string(),
            "message is 262145 bytes once encoded (body plus message attributes); \
             the SQS buffer accepts at most 262144 bytes"
        );
        let kinesis = BufferLimit::kinesis();
        assert!(kinesis.check(KINESIS_MAX_RECORD_BYTES - 36, 36).is_ok());
        assert!(kinesis.check(KINESIS_MAX_RECORD_BYTES - 36, 37).is_err());
    }
}
