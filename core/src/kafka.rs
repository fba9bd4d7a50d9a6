//! librdkafka client settings from [`KafkaConfig`], shared by every Kafka client spillway builds.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::config::{KafkaAuth, KafkaConfig};

/// Header carrying the envelope id; duplicates carry the same one (delivery rule 7).
pub const ID_HEADER: &str = "spillway-id";
/// Header carrying when the buffer writer accepted the message, ms since the Unix epoch.
pub const RECEIVED_AT_HEADER: &str = "spillway-received-at";
/// Header carrying the AWS X-Ray trace context of the buffered message, when it had one.
pub const TRACE_HEADER: &str = "x-amzn-trace-id";

/// A Kafka setting this build cannot honour.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KafkaSetupError {
    /// The authentication mode is not available in this component yet.
    #[error(
        "SPILLWAY_KAFKA_AUTH={0} is not supported by this component yet; use plaintext or scram"
    )]
    UnsupportedAuth(&'static str),
}

/// The settings every client shares: brokers, authentication, TLS, and connection behaviour.
///
/// `reconnect.backoff.ms` starts at 1 s, as AWS recommends for MSK, so that a fleet of clients
/// that lost the cluster together does not reconnect in a burst; idle connections are kept for
/// the broker's own idle limit instead of being torn down between invocations.
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
        KafkaAuth::Iam => return Err(KafkaSetupError::UnsupportedAuth("iam")),
    }
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
        .set("message.timeout.ms", "120000");
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

/// Classifies a produce error.
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
        C::SaslAuthenticationFailed | C::Authentication | C::ThrottlingQuotaExceeded => {
            Disposition::BackOff
        }
        _ => Disposition::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;

    #[test]
    fn scram_settings_and_reconnect_backoff() {
        let config = KafkaConfig {
            bootstrap: "b:9096".into(),
            auth: KafkaAuth::Scram {
                username: "u".into(),
                password: "p".into(),
            },
            compression: Compression::Lz4,
            message_max_bytes: 1_000_000,
        };
        let client = client_config(&config).unwrap();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("reconnect.backoff.ms"), Some("1000"));
        assert_eq!(client.get("message.max.bytes"), Some("1000000"));
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
        ] {
            assert_eq!(classify(&produce(code)), Disposition::Retry, "{code:?}");
        }
        assert!(Disposition::Retry.is_retryable() && !Disposition::DeadLetter("x").is_retryable());
    }
}
