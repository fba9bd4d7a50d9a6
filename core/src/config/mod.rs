//! Typed configuration from `SPILLWAY_*` environment variables.
//!
//! Each component parses its settings once, at start, into the structs below; an invalid or
//! contradictory setting stops the process with a [`ConfigError`] that names the variable and what
//! it accepts. Standard AWS variables (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials) keep their
//! standard meaning and are read by the AWS SDK, not here.
//!
//! Settings are read through [`Source`] so tests pass a map instead of mutating the process
//! environment.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use crate::envelope::RawMode;
use crate::limits::{BufferKind, SQS_DEFAULT_MAX_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES_CEILING};

/// A setting that cannot be used, naming the variable and what it accepts.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{var} is not set; {why}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// Why it is needed.
        why: String,
    },
    /// A variable's value cannot be used.
    #[error("{var}={value} is not valid; expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// The value as given (secrets are never echoed: see [`Env::secret`]).
        value: String,
        /// What the variable accepts.
        expected: String,
    },
    /// Settings that are each valid but cannot work together.
    #[error("{vars} do not work together: {why}")]
    Conflict {
        /// The variables involved.
        vars: &'static str,
        /// Why, with the values and what would work.
        why: String,
    },
}

/// Where settings come from.
pub trait Source {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Typed reads from a [`Source`]. An empty value counts as unset.
pub struct Env<'a> {
    source: &'a dyn Source,
}

impl<'a> Env<'a> {
    /// Reads from `source`.
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    /// The raw value, `None` when unset or empty.
    pub fn string(&self, var: &'static str) -> Option<String> {
        self.source
            .get(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A value that must be set.
    pub fn required(&self, var: &'static str, why: &str) -> Result<String, ConfigError> {
        self.string(var).ok_or_else(|| ConfigError::Missing {
            var,
            why: why.to_owned(),
        })
    }

    /// A secret that must be set; never echoed in errors.
    pub fn secret(&self, var: &'static str, why: &str) -> Result<String, ConfigError> {
        self.source
            .get(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::Missing {
                var,
                why: why.to_owned(),
            })
    }

    /// One of a fixed set of words, case-insensitive; `default` when unset.
    pub fn choice<T: Copy>(
        &self,
        var: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&value))
            .map(|(_, v)| *v)
            .ok_or_else(|| ConfigError::Invalid {
                var,
                value,
                expected: format!(
                    "one of {}",
                    choices
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// A number within `min..=max`; `default` when unset.
    pub fn number<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match value.replace('_', "").parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: format!("a whole number from {min} to {max}"),
            }),
        }
    }

    /// A duration such as `500ms`, `5s` or `2m` within `min..=max`; `default` when unset.
    pub fn duration(
        &self,
        var: &'static str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match humantime::parse_duration(&value) {
            Ok(d) if d >= min && d <= max => Ok(d),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: format!(
                    "a duration such as 500ms, 5s or 2m, from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            }),
        }
    }
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
    /// Reads `SPILLWAY_BUFFER=sqs|kinesis` (default `sqs`) and the settings of that buffer.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let kind = env.choice(
            "SPILLWAY_BUFFER",
            &[("sqs", BufferKind::Sqs), ("kinesis", BufferKind::Kinesis)],
            BufferKind::Sqs,
        )?;
        Ok(match kind {
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

/// How clients authenticate to Kafka (`SPILLWAY_KAFKA_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaAuth {
    /// MSK IAM: SASL_SSL + OAUTHBEARER with a SigV4-signed token. The only mode MSK Serverless
    /// accepts, hence the default.
    Iam,
    /// SASL_SSL + SCRAM-SHA-512 (MSK provisioned with Secrets Manager credentials).
    Scram {
        /// `SPILLWAY_KAFKA_SCRAM_USERNAME`.
        username: String,
        /// `SPILLWAY_KAFKA_SCRAM_PASSWORD`; never logged or echoed.
        password: String,
    },
    /// No TLS, no authentication: the local broker only.
    Plaintext,
}

/// Compression of produced batches (`SPILLWAY_KAFKA_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: the default — cheap on CPU, which Lambda bills, and decent on JSON.
    Lz4,
    /// Zstandard: smaller batches, more CPU.
    Zstd,
    /// Snappy.
    Snappy,
    /// Gzip: most CPU; for consumers that support nothing else.
    Gzip,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

/// How to reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `SPILLWAY_KAFKA_BOOTSTRAP` (required): comma-separated `host:port` list.
    pub bootstrap: String,
    /// `SPILLWAY_KAFKA_AUTH=iam|scram|plaintext`, default `iam`.
    pub auth: KafkaAuth,
    /// `SPILLWAY_KAFKA_COMPRESSION=lz4|zstd|snappy|gzip|none`, default `lz4`.
    pub compression: Compression,
    /// `SPILLWAY_KAFKA_MESSAGE_MAX_BYTES`, default 8 MiB: MSK Serverless's maximum message size.
    /// The client enforces it so that an oversized record fails at once instead of at the broker.
    pub message_max_bytes: usize,
    /// `SPILLWAY_KAFKA_CA_FILE`: PEM file of the CA to trust for TLS (msk-gate's locally); unset,
    /// the system's roots (what MSK needs in AWS).
    pub ca_file: Option<String>,
    /// `SPILLWAY_KAFKA_TOKEN_REFRESH`, default `5m`: how often the MSK IAM token is refreshed at
    /// most; it is always refreshed well before it (15 min) or its credentials expire.
    pub token_refresh: Duration,
    /// `SPILLWAY_MAX_CONNECTS_PER_SEC`, default 2: Kafka clients this process may create per
    /// second (each opens and authenticates connections to every broker it talks to). MSK
    /// Serverless allows 100 connection attempts per second per cluster, shared by every instance.
    pub max_connects_per_sec: u32,
}

/// MSK Serverless accepts messages of up to 8 MiB.
pub const MSK_SERVERLESS_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

impl KafkaConfig {
    /// Reads the `SPILLWAY_KAFKA_*` settings.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        #[derive(Clone, Copy)]
        enum Mode {
            Iam,
            Scram,
            Plaintext,
        }
        let bootstrap = env.required(
            "SPILLWAY_KAFKA_BOOTSTRAP",
            "set it to the brokers' host:port list",
        )?;
        if let Some(bad) = bootstrap
            .split(',')
            .map(str::trim)
            .find(|b| !valid_host_port(b))
        {
            return Err(ConfigError::Invalid {
                var: "SPILLWAY_KAFKA_BOOTSTRAP",
                value: bootstrap.clone(),
                expected: format!("a comma-separated list of host:port (`{bad}` is not)"),
            });
        }
        let mode = env.choice(
            "SPILLWAY_KAFKA_AUTH",
            &[
                ("iam", Mode::Iam),
                ("scram", Mode::Scram),
                ("plaintext", Mode::Plaintext),
            ],
            Mode::Iam,
        )?;
        let auth = match mode {
            Mode::Iam => KafkaAuth::Iam,
            Mode::Plaintext => KafkaAuth::Plaintext,
            Mode::Scram => KafkaAuth::Scram {
                username: env.required(
                    "SPILLWAY_KAFKA_SCRAM_USERNAME",
                    "SPILLWAY_KAFKA_AUTH=scram needs it",
                )?,
                password: env.secret(
                    "SPILLWAY_KAFKA_SCRAM_PASSWORD",
                    "SPILLWAY_KAFKA_AUTH=scram needs it",
                )?,
            },
        };
        let compression = env.choice(
            "SPILLWAY_KAFKA_COMPRESSION",
            &[
                ("lz4", Compression::Lz4),
                ("zstd", Compression::Zstd),
                ("snappy", Compression::Snappy),
                ("gzip", Compression::Gzip),
                ("none", Compression::None),
            ],
            Compression::Lz4,
        )?;
        let message_max_bytes = env.number(
            "SPILLWAY_KAFKA_MESSAGE_MAX_BYTES",
            MSK_SERVERLESS_MAX_MESSAGE_BYTES,
            1000,
            1_000_000_000,
        )?;
        Ok(Self {
            bootstrap,
            auth,
            compression,
            message_max_bytes,
            ca_file: env.string("SPILLWAY_KAFKA_CA_FILE"),
            token_refresh: env.duration(
                "SPILLWAY_KAFKA_TOKEN_REFRESH",
                Duration::from_secs(300),
                Duration::from_secs(1),
                Duration::from_secs(840),
            )?,
            max_connects_per_sec: env.number("SPILLWAY_MAX_CONNECTS_PER_SEC", 2, 1, 100)?,
        })
    }
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// The drain's own settings (buffer-drain reads these with [`KafkaConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// `SPILLWAY_SOURCE=sqs|kinesis`, default `sqs`: which event the drain receives.
    pub source: BufferKind,
    /// `SPILLWAY_RAW_MODE=on|off`, default `off`: forward messages that are not envelopes as they
    /// are. Off by default so that a misrouted producer is noticed (its messages go to the DLQ)
    /// rather than silently forwarded.
    pub raw_mode: RawMode,
    /// `SPILLWAY_DEADLINE_MARGIN`, default `5s`: stop producing this long before the Lambda deadline
    /// and report what is undelivered, leaving time to answer and for in-flight acks to return.
    pub deadline_margin: Duration,
    /// `SPILLWAY_DLQ_URL`: SQS queue for poison records. Unset, poison records are reported as
    /// failures and reach the buffer's own DLQ after `maxReceiveCount` receives.
    pub dlq_url: Option<String>,
    /// `SPILLWAY_DLQ_BUCKET`: S3 bucket for dead letters too large for the DLQ (over 256 KiB with
    /// their attributes); the DLQ gets a claim check naming the object. Unset, such letters are
    /// reported failed.
    pub dlq_bucket: Option<String>,
    /// `SPILLWAY_TOPIC`: where raw-mode messages go (they name no topic); required with raw mode.
    pub raw_topic: Option<String>,
}

impl DrainConfig {
    /// Reads the drain's settings.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            source: env.choice(
                "SPILLWAY_SOURCE",
                &[("sqs", BufferKind::Sqs), ("kinesis", BufferKind::Kinesis)],
                BufferKind::Sqs,
            )?,
            raw_mode: env.choice(
                "SPILLWAY_RAW_MODE",
                &[("off", RawMode::Reject), ("on", RawMode::Accept)],
                RawMode::Reject,
            )?,
            deadline_margin: env.duration(
                "SPILLWAY_DEADLINE_MARGIN",
                Duration::from_secs(5),
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            dlq_url: env.string("SPILLWAY_DLQ_URL"),
            dlq_bucket: env.string("SPILLWAY_DLQ_BUCKET"),
            raw_topic: env.string("SPILLWAY_TOPIC"),
        })
        .and_then(|c: Self| {
            if c.dlq_bucket.is_some() && c.dlq_url.is_none() {
                return Err(ConfigError::Missing {
                    var: "SPILLWAY_DLQ_URL",
                    why: "SPILLWAY_DLQ_BUCKET keeps letters too large for the dead-letter queue, whose claim checks go to that queue".into(),
                });
            }
            if c.raw_mode == RawMode::Accept && c.raw_topic.is_none() {
                return Err(ConfigError::Missing {
                    var: "SPILLWAY_TOPIC",
                    why: "SPILLWAY_RAW_MODE=on needs the topic plain messages go to".into(),
                });
            }
            if let Some(t) = &c.raw_topic {
                crate::topic::validate(t).map_err(|e| ConfigError::Invalid {
                    var: "SPILLWAY_TOPIC",
                    value: t.clone(),
                    expected: e.to_string(),
                })?;
            }
            Ok(c)
        })
    }
}

#[cfg(test)]
mod tests;
