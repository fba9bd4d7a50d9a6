//! The librdkafka client context every spillway Kafka client uses.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::client::OAuthToken;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use super::iam::TokenCache;

/// Counters of a client's connection trouble, read by the drain's backoff and by metrics.
#[derive(Debug, Default)]
pub struct ClientHealth {
    auth_failures: AtomicU64,
    transport_failures: AtomicU64,
    /// The MSK IAM tokens the client authenticates with, if it uses them.
    tokens: Option<TokenCache>,
}

impl ClientHealth {
    /// Authentication failures seen so far (SASL errors, refused tokens, throttled connects).
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }

    /// Connections that failed or were closed by the broker.
    pub fn transport_failures(&self) -> u64 {
        self.transport_failures.load(Ordering::Relaxed)
    }

    /// Why the client could not authenticate a new connection now, if it uses MSK IAM tokens: no
    /// token yet, or the cached one expired (its refreshes are failing). `None`: no token needed,
    /// or a valid one is cached.
    pub fn token_problem(&self) -> Option<String> {
        let tokens = self.tokens.as_ref()?;
        let Some(token) = tokens.current() else {
            return Some("no MSK IAM token yet".into());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        (token.expires_at_ms <= now).then(|| {
            format!(
                "the MSK IAM token expired {} s ago and has not been refreshed",
                (now - token.expires_at_ms) / 1000
            )
        })
    }
}

/// Serves MSK IAM tokens from the cache (never blocking librdkafka's thread) and counts
/// authentication and transport failures.
#[derive(Debug, Clone, Default)]
pub struct SpillwayContext {
    tokens: Option<TokenCache>,
    health: Arc<ClientHealth>,
}

impl SpillwayContext {
    /// A context without IAM tokens (plaintext, SCRAM).
    pub fn plain() -> Self {
        Self::default()
    }

    /// A context serving tokens from `tokens`.
    pub fn with_tokens(tokens: TokenCache) -> Self {
        Self {
            health: Arc::new(ClientHealth {
                tokens: Some(tokens.clone()),
                ..ClientHealth::default()
            }),
            tokens: Some(tokens),
        }
    }

    /// The client's failure counters.
    pub fn health(&self) -> Arc<ClientHealth> {
        self.health.clone()
    }
}

impl ClientContext for SpillwayContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        let token = self
            .tokens
            .as_ref()
            .and_then(TokenCache::current)
            .ok_or("no MSK IAM token in the cache yet")?;
        Ok(OAuthToken {
            token: token.value,
            principal_name: String::new(),
            lifetime_ms: token.expires_at_ms,
        })
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                self.health.auth_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, reason, "Kafka authentication failed");
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
                self.health
                    .transport_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, reason, "Kafka connection failed");
            }
            _ => tracing::warn!(%error, reason, "Kafka client error"),
        }
    }
}

impl ConsumerContext for SpillwayContext {}
