//! MSK IAM tokens: fetched in the background, read from a cache.
//!
//! librdkafka asks for an OAUTHBEARER token through a synchronous callback
//! ([`rdkafka::ClientContext::generate_oauth_token`]) on its own thread, while the signer
//! (`aws-msk-iam-sasl-signer`) and the AWS credential chain are async. Blocking on the async signer
//! inside the callback can deadlock the runtime (rust-rdkafka #727). So a background task fetches a
//! token before the first connection and refreshes it ahead of expiry, and the callback only reads
//! the cache: it never waits for the network or the runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_types::region::Region;

use crate::backoff::Backoff;

/// A signed token and when it stops being valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The base64url presigned `kafka-cluster:Connect` URL.
    pub value: String,
    /// Expiry, ms since the Unix epoch: the earlier of the token's and its credentials' expiry.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Token {
    /// Never prints the token: it is a bearer credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// Where tokens come from.
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a fresh token.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Token, String>> + Send + '_>>;
}

/// The MSK signer over a credentials provider (the Lambda role in AWS; static test keys locally).
pub struct MskSigner {
    region: Region,
    credentials: SharedCredentialsProvider,
}

impl MskSigner {
    /// A signer for `region` using `credentials`.
    pub fn new(region: Region, credentials: SharedCredentialsProvider) -> Self {
        Self {
            region,
            credentials,
        }
    }
}

impl TokenSource for MskSigner {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Token, String>> + Send + '_>> {
        Box::pin(async move {
            let credentials = self
                .credentials
                .provide_credentials()
                .await
                .map_err(|e| format!("no AWS credentials for the MSK IAM token: {e}"))?;
            let credentials_expiry = credentials.expiry().map(ms_since_epoch);
            let (value, token_expiry) =
                aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
                    self.region.clone(),
                    SharedCredentialsProvider::new(credentials),
                )
                .await
                .map_err(|e| format!("signing the MSK IAM token failed: {e}"))?;
            // A token is no good after the credentials that signed it expire.
            let expires_at_ms = credentials_expiry.map_or(token_expiry, |c| c.min(token_expiry));
            Ok(Token {
                value,
                expires_at_ms,
            })
        })
    }
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The latest token, shared by the refresher and the librdkafka callback.
#[derive(Debug, Clone, Default)]
pub struct TokenCache {
    current: Arc<RwLock<Option<Token>>>,
}

impl TokenCache {
    /// The cached token, if any. Takes a read lock held only for a clone: never waits on I/O.
    pub fn current(&self) -> Option<Token> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, token: Token) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
    }
}

/// When to refresh: `refresh_every`, but always a minute (or a fifth of the lifetime, if shorter)
/// before expiry.
fn next_refresh(token: &Token, refresh_every: Duration) -> Duration {
    let now = ms_since_epoch(SystemTime::now());
    let lifetime = u64::try_from(token.expires_at_ms - now).unwrap_or(0);
    let margin = (lifetime / 5).min(60_000);
    Duration::from_millis(lifetime.saturating_sub(margin)).min(refresh_every)
}

/// Fetches the first token (so the first connection has one), then keeps the cache fresh from a
/// background task until the returned handle is aborted, every copy of the cache is dropped, or
/// the runtime ends. Failed refreshes are
/// retried with backoff while the old token is still valid.
pub async fn start_refresher(
    source: Arc<dyn TokenSource>,
    refresh_every: Duration,
) -> Result<(TokenCache, tokio::task::JoinHandle<()>), String> {
    let cache = TokenCache::default();
    let first = source.fetch().await?;
    let mut wait = next_refresh(&first, refresh_every);
    cache.set(first);
    // The task holds the cache weakly: once every client that reads it is gone (a replaced
    // producer), the task ends instead of signing tokens for nobody.
    let refresher = Arc::downgrade(&cache.current);
    let handle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(wait).await;
            if refresher.strong_count() == 0 {
                return;
            }
            let mut backoff = Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(10),
                Duration::from_secs(600),
            );
            loop {
                match source.fetch().await {
                    Ok(token) => {
                        wait = next_refresh(&token, refresh_every);
                        let Some(current) = refresher.upgrade() else {
                            return;
                        };
                        TokenCache { current }.set(token);
                        tracing::debug!(
                            next_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                            "MSK IAM token refreshed"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "MSK IAM token refresh failed; retrying");
                        tokio::time::sleep(backoff.next_delay().unwrap_or(Duration::from_secs(10)))
                            .await;
                    }
                }
            }
        }
    });
    Ok((cache, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientContext as _;

    /// Hands out a token at once, then takes `slow` for every later one.
    struct SlowAfterFirst {
        slow: Duration,
        calls: std::sync::atomic::AtomicU32,
    }

    impl TokenSource for SlowAfterFirst {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Token, String>> + Send + '_>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n > 0 {
                    tokio::time::sleep(self.slow).await;
                }
                Ok(Token {
                    value: format!("token-{n}"),
                    expires_at_ms: ms_since_epoch(SystemTime::now()) + 900_000,
                })
            })
        }
    }

    /// librdkafka calls `generate_oauth_token` synchronously; it must answer from the cache even
    /// while a refresh is in flight on a single-threaded runtime, never wait for that runtime.
    #[tokio::test(flavor = "current_thread")]
    async fn the_token_callback_never_waits_for_the_runtime() {
        let source = Arc::new(SlowAfterFirst {
            slow: Duration::from_secs(30),
            calls: std::sync::atomic::AtomicU32::new(0),
        });
        let (cache, refresher) = start_refresher(source.clone(), Duration::from_millis(10))
            .await
            .expect("first token");
        let context = crate::kafka::context::SpillwayContext::with_tokens(cache);
        // Let the refresher start its (slow) second fetch on this very thread.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            source.calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "a refresh is in flight"
        );
        let started = std::time::Instant::now();
        let token = context.generate_oauth_token(None).expect("a cached token");
        assert_eq!(token.token, "token-0");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "answered from the cache"
        );
        refresher.abort();
    }

    /// A replaced producer drops its context and with it the cache: its refresher ends instead of
    /// signing tokens for nobody for the rest of the process (one task leaked per replacement).
    #[tokio::test]
    async fn the_refresher_ends_once_nobody_reads_its_cache() {
        let source = Arc::new(SlowAfterFirst {
            slow: Duration::ZERO,
            calls: std::sync::atomic::AtomicU32::new(0),
        });
        let (cache, refresher) = start_refresher(source.clone(), Duration::from_millis(10))
            .await
            .expect("first token");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !refresher.is_finished(),
            "refreshing while the cache is read"
        );
        drop(cache);
        tokio::time::timeout(Duration::from_secs(2), refresher)
            .await
            .expect("the refresher ended")
            .expect("cleanly");
    }

    #[test]
    fn refreshes_before_expiry_and_never_later_than_asked() {
        let now = ms_since_epoch(SystemTime::now());
        let token = |in_ms: i64| Token {
            value: String::new(),
            expires_at_ms: now + in_ms,
        };
        let long = next_refresh(&token(900_000), Duration::from_secs(3600));
        assert!(
            long <= Duration::from_secs(840) && long > Duration::from_secs(830),
            "{long:?}"
        );
        assert_eq!(
            next_refresh(&token(900_000), Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let short = next_refresh(&token(10_000), Duration::from_secs(3600));
        assert!(
            short <= Duration::from_secs(8),
            "a fifth of a short lifetime: {short:?}"
        );
        assert_eq!(
            next_refresh(&token(-5), Duration::from_secs(5)),
            Duration::ZERO
        );
        assert!(
            !format!("{:?}", token(1)).contains("value"),
            "tokens are never printed"
        );
    }
}
