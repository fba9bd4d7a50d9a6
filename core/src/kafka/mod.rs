//! Kafka clients: librdkafka settings from [`KafkaConfig`], the client context that serves MSK IAM
//! tokens ([`context`], [`iam`]), and the one [`classify`] that decides what a produce error means.

pub mod admin;
pub mod context;
pub mod iam;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::config::{KafkaAuth, KafkaConfig};

pub use crate::headers::{ID_HEADER, RECEIVED_AT_HEADER, TRACE_HEADER};

/// A Kafka client that could not be set up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KafkaSetupError {
    /// The first MSK IAM token could not be made.
    #[error("SPILLWAY_KAFKA_AUTH=iam: {0}")]
    Token(String),
    /// librdkafka refused the settings.
    #[error("the Kafka client could not be created: {0}")]
    Client(String),
}

/// The producer spillway uses everywhere.
pub type Producer = rdkafka::producer::FutureProducer<context::SpillwayContext>;
/// The consumer spillway uses everywhere.
pub type Consumer = rdkafka::consumer::StreamConsumer<context::SpillwayContext>;

/// The context for clients of `config`: for IAM, a token cache filled before this returns and kept
/// fresh by a background task for the life of the process (dropping the handle detaches it).
pub async fn context_for(
    config: &KafkaConfig,
) -> Result<
    (
        context::SpillwayContext,
        Option<tokio::task::JoinHandle<()>>,
    ),
    KafkaSetupError,
> {
    if config.auth != KafkaAuth::Iam {
        return Ok((context::SpillwayContext::plain(), None));
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = sdk
        .region()
        .cloned()
        .ok_or_else(|| KafkaSetupError::Token("no AWS region (set AWS_REGION)".into()))?;
    let credentials = sdk
        .credentials_provider()
        .ok_or_else(|| KafkaSetupError::Token("no AWS credentials provider".into()))?;
    let signer = std::sync::Arc::new(iam::MskSigner::new(region, credentials));
    let (tokens, refresher) = iam::start_refresher(signer, config.token_refresh)
        .await
        .map_err(KafkaSetupError::Token)?;
    Ok((
        context::SpillwayContext::with_tokens(tokens),
        Some(refresher),
    ))
}

/// Paces the creation of Kafka clients in this process: each new client opens (and, with IAM,
/// authenticates) connections, and MSK Serverless caps connection attempts per second across the
/// whole cluster. Workers that start together — the local poller's, or a process's consumers —
/// wait their turn instead of connecting in one burst.
pub async fn pace_connects(per_sec: u32) {
    use std::num::NonZeroU32;
    use std::sync::OnceLock;
    static LIMITER: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();
    let limiter = LIMITER.get_or_init(|| {
        let rate = NonZeroU32::new(per_sec.max(1)).expect("at least 1");
        governor::RateLimiter::direct(governor::Quota::per_second(rate))
    });
    limiter.until_ready().await;
}

/// The drain's producer ([`producer_config`]) and its failure counters, with its IAM token
/// refresher running when needed.
pub async fn producer(
    config: &KafkaConfig,
) -> Result<(Producer, std::sync::Arc<context::ClientHealth>), KafkaSetupError> {
    pace_connects(config.max_connects_per_sec).await;
    let (context, _refresher) = context_for(config).await?;
    let health = context.health();
    let producer = producer_config(config)?
        .create_with_context(context)
        .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
    Ok((producer, health))
}

/// A consumer with `settings` on top of [`client_config`], with its IAM token refresher running
/// when needed.
pub async fn consumer(
    config: &KafkaConfig,
    settings: &[(&str, &str)],
) -> Result<Consumer, KafkaSetupError> {
    pace_connects(config.max_connects_per_sec).await;
    let (context, _refresher) = context_for(config).await?;
    let mut client = client_config(config)?;
    for (k, v) in settings {
        client.set(*k, *v);
    }
    client
        .create_with_context(context)
        .map_err(|e| KafkaSetupError::Client(e.to_string()))
}

/// The settings every client shares: brokers, authentication, TLS, and connection behaviour.
///
/// `socket.nagle.disable`: see the comment at its setting (a benchmark decided it).
///
/// `reconnect.backoff.ms` starts at 1 s, as AWS recommends for MSK, so that a fleet of clients
/// that lost the cluster together does not reconnect in a burst. Idle connections are left to the
/// broker's own idle limit (librdkafka's `connections.max.idle.ms` stays 0) — unlike the AWS
/// sample's `connections.max.idle.ms=60`, which closes the connection after 60 ms and so forces a
/// new connection and authentication on nearly every invocation.
pub fn client_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap)
        .set("reconnect.backoff.ms", "1000")
        .set("reconnect.backoff.max.ms", "10000")
        .set("message.max.bytes", config.message_max_bytes.to_string());
    match &config.auth {
        KafkaAuth::Plaintext => {
            client.set("security.protocol", "plaintext");
        }
        KafkaAuth::Scram { username, password } => {
            client
                .set("security.protocol", "sasl_ssl")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", username)
                .set("sasl.password", password);
        }
        KafkaAuth::Iam => {
            client
                .set("security.protocol", "sasl_ssl")
                .set("sasl.mechanism", "OAUTHBEARER");
        }
    }
    if config.auth != KafkaAuth::Plaintext {
        // A CA file locally (msk-gate writes one); the system's roots in AWS.
        client.set(
            "ssl.ca.location",
            config.ca_file.as_deref().unwrap_or("probe"),
        );
    }
    // Nagle off: over TLS librdkafka writes a request as several TLS records, and with Nagle on
    // every record after the first waits for the broker's delayed ACK. Measured through msk-gate
    // (TLS, MSK IAM; `cargo bench -p msk-gate --bench latency`): one 1 KiB produce took 48 ms p50
    // with Nagle and 6.5 ms without, a batch of 100 51 ms and 9 ms; plaintext was the same either
    // way. A request is one write the broker waits for, so nothing is gained by coalescing.
    client
        .set("socket.keepalive.enable", "true")
        .set("socket.nagle.disable", "true");
    Ok(client)
}

/// Producer settings for the drain: idempotent, `acks=all`, batched, with a bounded queue.
///
/// * `enable.idempotence` + `acks=all`: no duplicates or reordering from librdkafka's own retries,
///   and a record counts as delivered only once every in-sync replica has it (delivery rule 2).
/// * `linger.ms=5`: the drain enqueues a whole batch at once, so a short linger is enough to fill
///   large produce requests without adding latency to small batches.
/// * `queue.buffering.max.kbytes=65536`: at most 64 MiB waits in librdkafka, so a 10,000-record batch
///   of large messages cannot grow memory without bound; the drain waits on `QueueFull`.
/// * `message.timeout.ms=120000`: a record that cannot be delivered fails within two minutes; the
///   drain stops waiting earlier, at its own deadline, and reports the record undelivered.
/// * `topic.metadata.propagation.max.ms=2000`: a record for a topic the cluster does not have is
///   refused ("unknown topic", rule 9) within 2 s, not held for librdkafka's default 30 s — which
///   is longer than a batch has: such a record would end every batch unsettled at the deadline,
///   be purged with its producer, and start the 30 s again in the next one, never decided.
pub fn producer_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = client_config(config)?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", config.compression.as_librdkafka())
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("queue.buffering.max.messages", "100000")
        .set("message.timeout.ms", "120000")
        .set("topic.metadata.propagation.max.ms", "2000");
    Ok(client)
}

/// What to do about a record Kafka did not take. The one place that decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Kafka refuses this record for good: dead-letter it with this reason.
    DeadLetter(&'static str),
    /// Authentication failed or the cluster throttles: report it failed and back off.
    BackOff,
    /// Transient broker trouble (unreachable, leader moving, timed out): report it failed, retry later.
    Retry,
}

impl Disposition {
    /// Whether the record may succeed later.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Disposition::DeadLetter(_))
    }
}

/// Classifies a produce error, one record at a time.
///
/// The rule (delivery rules 6 and 9): an error that belongs to the record — too large, invalid,
/// refused by policy — dead-letters it. An error that belongs to the connection — authentication,
/// throttling — backs off. Anything else is transient and retried. Two per-record verdicts depend
/// on the batch: "unknown topic" and "not authorised" dead-letter a record when only some records
/// of a batch get them, but when *every* record of a batch is refused with the same one
/// ([`is_systemic_when_shared`]), it is the cluster or IAM (a missing policy, a topic not yet
/// created), not the records: the drain fails the batch retryably and backs off instead of
/// dead-lettering the whole stream.
pub fn classify(error: &KafkaError) -> Disposition {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return Disposition::Retry;
    };
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Disposition::DeadLetter("too large for the cluster")
        }
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => {
            Disposition::DeadLetter("unknown topic or partition")
        }
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => {
            Disposition::DeadLetter("not authorised")
        }
        C::InvalidRecord | C::PolicyViolation => {
            Disposition::DeadLetter("rejected by the broker as invalid")
        }
        // The caller's timestamp (REST Proxy v3) outside the topic's
        // `message.timestamp.{before,after}.max.ms`: it would be refused on every retry.
        C::InvalidTimestamp => Disposition::DeadLetter("timestamp outside the broker's window"),
        C::SaslAuthenticationFailed | C::Authentication | C::ThrottlingQuotaExceeded => {
            Disposition::BackOff
        }
        // Everything else is transient — including `Fatal` and the purges: the producer's fault,
        // not the record's (the drain replaces a fatal producer, and purged records were never
        // sent), so the record comes again.
        _ => Disposition::Retry,
    }
}

/// Whether `error`, when every record of a batch shares it, is systemic (see [`classify`]).
pub fn is_systemic_when_shared(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_settings_and_reconnect_backoff() {
        let config = KafkaConfig::new(
            "b:9096",
            KafkaAuth::Scram {
                username: "u".into(),
                password: "p".into(),
            },
        );
        let client = client_config(&config).unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("reconnect.backoff.ms"), Some("1000"));
        assert_eq!(client.get("socket.nagle.disable"), Some("true"));
        assert_eq!(
            client.get("message.max.bytes"),
            Some("8388608"),
            "MSK Serverless's limit by default"
        );
        assert_eq!(client.get("ssl.ca.location"), Some("probe"));
    }

    #[test]
    fn iam_is_sasl_ssl_oauthbearer_with_the_given_ca() {
        let config = KafkaConfig::iam("127.0.0.1:9098").with_ca_file("/tmp/ca.pem");
        let client = client_config(&config).unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(client.get("ssl.ca.location"), Some("/tmp/ca.pem"));
        assert_eq!(
            client.get("connections.max.idle.ms"),
            None,
            "not the AWS sample's 60 ms"
        );
    }

    #[test]
    fn permanent_errors_dead_letter_and_the_rest_retry() {
        use RDKafkaErrorCode as C;
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            classify(&produce(C::MessageSizeTooLarge)),
            Disposition::DeadLetter("too large for the cluster")
        );
        assert_eq!(
            classify(&produce(C::UnknownTopicOrPartition)),
            Disposition::DeadLetter("unknown topic or partition")
        );
        assert_eq!(
            classify(&produce(C::TopicAuthorizationFailed)),
            Disposition::DeadLetter("not authorised")
        );
        assert_eq!(
            classify(&produce(C::SaslAuthenticationFailed)),
            Disposition::BackOff
        );
        assert_eq!(
            classify(&produce(C::ThrottlingQuotaExceeded)),
            Disposition::BackOff
        );
        for code in [
            C::MessageTimedOut,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::NotEnoughReplicas,
            C::RequestTimedOut,
            C::Fatal,
            C::PurgeQueue,
        ] {
            assert_eq!(classify(&produce(code)), Disposition::Retry, "{code:?}");
        }
        assert!(Disposition::Retry.is_retryable() && !Disposition::DeadLetter("x").is_retryable());
    }
}
