//! librdkafka client settings from [`KafkaConfig`], shared by every Kafka client spillway builds.

use rdkafka::config::ClientConfig;
use thiserror::Error;

use crate::config::{KafkaAuth, KafkaConfig};

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
}
