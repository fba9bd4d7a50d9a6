//! Which buffer sits between the callers and Kafka: one setting, `SPILLWAY_BUFFER`, read by
//! ingest-api (where it writes) and by the drain (which events it receives).

use super::{ConfigError, Env};
use crate::limits::{BufferKind, SQS_DEFAULT_MAX_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES_CEILING};

/// The buffer when `SPILLWAY_BUFFER` is unset: SQS, which needs no shard planning and scales its
/// throughput on its own.
pub const DEFAULT_BUFFER: BufferKind = BufferKind::Sqs;

const CHOICES: [(&str, BufferKind); 2] =
    [("sqs", BufferKind::Sqs), ("kinesis", BufferKind::Kinesis)];

/// `SPILLWAY_BUFFER=sqs|kinesis`, default [`DEFAULT_BUFFER`].
pub fn buffer_kind(env: &Env<'_>) -> Result<BufferKind, ConfigError> {
    env.choice("SPILLWAY_BUFFER", &CHOICES, DEFAULT_BUFFER)
}

/// The drain's [`buffer_kind`]. The drain used to read `SPILLWAY_SOURCE`; that name is still
/// accepted when `SPILLWAY_BUFFER` is unset, so a drain deployed before its infrastructure keeps
/// working, and refused when the two disagree. (ingest-api never read it, and does not.)
pub fn drain_buffer_kind(env: &Env<'_>) -> Result<BufferKind, ConfigError> {
    let Some(_) = env.string("SPILLWAY_SOURCE") else {
        return buffer_kind(env);
    };
    let old = env.choice("SPILLWAY_SOURCE", &CHOICES, DEFAULT_BUFFER)?;
    if env.string("SPILLWAY_BUFFER").is_none() {
        return Ok(old);
    }
    let kind = buffer_kind(env)?;
    if old != kind {
        return Err(ConfigError::Conflict {
            vars: "SPILLWAY_BUFFER and SPILLWAY_SOURCE",
            why: "SPILLWAY_SOURCE is the old name of SPILLWAY_BUFFER and names the other buffer; unset it".into(),
        });
    }
    Ok(kind)
}

/// Where ingest-api writes and what limit it enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferConfig {
    /// An SQS queue.
    Sqs {
        /// `SPILLWAY_SQS_QUEUE_URL` (required).
        queue_url: String,
        /// FIFO queue: derived from the `.fifo` suffix AWS requires of FIFO queue names.
        fifo: bool,
        /// `SPILLWAY_SQS_MAX_MESSAGE_BYTES`, default 262144: the queue's `MaximumMessageSize`
        /// (body plus attributes). 256 KiB is the limit on most queues; set it to the queue's
        /// own value (up to 1 MiB) when the queue was configured higher.
        max_message_bytes: usize,
    },
    /// A Kinesis data stream.
    Kinesis {
        /// `SPILLWAY_KINESIS_STREAM` (required): stream name or ARN.
        stream: String,
    },
}

impl BufferConfig {
    /// Reads [`buffer_kind`] and the settings of that buffer.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(match buffer_kind(env)? {
            BufferKind::Sqs => {
                let queue_url = env.required(
                    "SPILLWAY_SQS_QUEUE_URL",
                    "SPILLWAY_BUFFER=sqs needs the queue's URL",
                )?;
                let fifo = crate::limits::is_fifo_queue(&queue_url);
                let max_message_bytes = env.number(
                    "SPILLWAY_SQS_MAX_MESSAGE_BYTES",
                    SQS_DEFAULT_MAX_MESSAGE_BYTES,
                    1024,
                    SQS_MAX_MESSAGE_BYTES_CEILING,
                )?;
                BufferConfig::Sqs {
                    queue_url,
                    fifo,
                    max_message_bytes,
                }
            }
            BufferKind::Kinesis => BufferConfig::Kinesis {
                stream: env.required(
                    "SPILLWAY_KINESIS_STREAM",
                    "SPILLWAY_BUFFER=kinesis needs the stream's name or ARN",
                )?,
            },
        })
    }

    /// Which buffer this is.
    pub fn kind(&self) -> BufferKind {
        match self {
            BufferConfig::Sqs { .. } => BufferKind::Sqs,
            BufferConfig::Kinesis { .. } => BufferKind::Kinesis,
        }
    }
}
