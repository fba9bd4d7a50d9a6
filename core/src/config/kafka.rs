//! How to reach Kafka: brokers, authentication, compression and the client's limits.

use std::time::Duration;

use super::{ConfigError, Env};

/// MSK Serverless accepts messages of up to 8 MiB.
pub const MSK_SERVERLESS_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// How often the MSK IAM token is refreshed at most: a third of its 15-minute life, so a refresh
/// that fails has two more chances before the token expires.
pub const DEFAULT_TOKEN_REFRESH: Duration = Duration::from_secs(300);

/// Kafka clients one process may create per second. MSK Serverless allows 100 connection attempts
/// per second per cluster, shared by every drain instance: at 2 each, 50 new instances starting in
/// the same second stay within it.
pub const DEFAULT_MAX_CONNECTS_PER_SEC: u32 = 2;

/// Compression when `SPILLWAY_KAFKA_COMPRESSION` is unset: LZ4, cheap on the CPU Lambda bills.
pub const DEFAULT_COMPRESSION: Compression = Compression::Lz4;

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

impl KafkaConfig {
    /// `bootstrap` with `auth` and every other setting at its default: what [`KafkaConfig::from_env`]
    /// reads when only `SPILLWAY_KAFKA_BOOTSTRAP` and `SPILLWAY_KAFKA_AUTH` are set.
    pub fn new(bootstrap: impl Into<String>, auth: KafkaAuth) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            auth,
            compression: DEFAULT_COMPRESSION,
            message_max_bytes: MSK_SERVERLESS_MAX_MESSAGE_BYTES,
            ca_file: None,
            token_refresh: DEFAULT_TOKEN_REFRESH,
            max_connects_per_sec: DEFAULT_MAX_CONNECTS_PER_SEC,
        }
    }

    /// MSK IAM (OAUTHBEARER over TLS) to `bootstrap`.
    pub fn iam(bootstrap: impl Into<String>) -> Self {
        Self::new(bootstrap, KafkaAuth::Iam)
    }

    /// No TLS and no authentication: a local broker.
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        Self::new(bootstrap, KafkaAuth::Plaintext)
    }

    /// Trusts the CA in the PEM file at `path` for TLS.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<String>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Compresses produced batches with `compression`.
    #[must_use]
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Refuses records over `bytes` in the client (set it to the broker's own limit).
    #[must_use]
    pub fn with_message_max_bytes(mut self, bytes: usize) -> Self {
        self.message_max_bytes = bytes;
        self
    }

    /// Creates at most `n` clients per second.
    #[must_use]
    pub fn with_max_connects_per_sec(mut self, n: u32) -> Self {
        self.max_connects_per_sec = n;
        self
    }

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
            DEFAULT_COMPRESSION,
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
                DEFAULT_TOKEN_REFRESH,
                Duration::from_secs(1),
                // The token lives 15 minutes; a refresh must come before it expires.
                Duration::from_secs(840),
            )?,
            max_connects_per_sec: env.number(
                "SPILLWAY_MAX_CONNECTS_PER_SEC",
                DEFAULT_MAX_CONNECTS_PER_SEC,
                1,
                100,
            )?,
        })
    }
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
