//! # ingest-api — spillway's HTTP front door
//!
//! One axum [`Router`](axum::Router) ([`app`]) that runs under `lambda_http` in AWS Lambda (API
//! Gateway REST and HTTP API payloads) and as a plain server locally. Each request becomes one or
//! more [`spillway_core::envelope::Envelope`]s written to the buffer, SQS or Kinesis
//! ([`buffer`]).
//!
//! Delivery rules implemented here (docs/ARCHITECTURE.md, "Delivery rules"):
//! 1. The caller gets 2xx only after the buffer has accepted the message. A batch reports each record;
//!    when the buffer throttles past the retry budget the caller gets 429/503 with `Retry-After`, and
//!    nothing is reported accepted that was not.
//! 7. At-least-once: a request retried with the same `Idempotency-Key` yields the same message id, so
//!    the duplicate is recognisable downstream by its `spillway-id`.
//! 8. Header names the pipeline sets (`spillway-*`, `x-amzn-trace-id`, `traceparent`, `tracestate`)
//!    are refused with 400 naming the header.
//! 10. A write counts only when the buffer's answer names it as written; an entry missing from a
//!     `SendMessageBatch` or `PutRecords` answer is not accepted.
//!
//! A message whose encoded envelope would exceed the buffer's limit is answered with 413 naming the
//! size and the limit (exact size accounting; see [`spillway_core::limits`]). Bad input gets a
//! REST Proxy-style JSON error; no input panics a handler; message bodies are never logged.

pub mod buffer;
pub mod config;
pub mod error;
pub mod records;
mod routes;

pub use routes::{app, Accepted, ApiDoc, AppState, RequestId};

use std::time::Duration;

/// The AWS SDK settings ingest-api runs with: no SDK retries (the buffer writer retries within its
/// own budget, and the SDK's retries would hide that time), 2 s to connect, 5 s per attempt.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        .load()
        .await
}

/// The router for `config`, writing to its buffer with [`sdk_config`]'s clients.
pub async fn router(config: config::IngestConfig) -> axum::Router {
    let sdk = sdk_config().await;
    let buffer = buffer::Buffer::new(&config.buffer, &sdk);
    app(state(config, buffer, &sdk))
}

/// The handlers' state for `config`: its buffer writer, and its claim bucket when
/// `SPILLWAY_CLAIM_BUCKET` names one (values too large for the buffer go there, under
/// `claims/`).
pub fn state(
    config: config::IngestConfig,
    buffer: buffer::Buffer,
    sdk: &aws_config::SdkConfig,
) -> AppState {
    let claims = config.claim_bucket.as_ref().map(|bucket| {
        spillway_core::claim::ClaimStore::new(
            spillway_core::claim::ClaimStore::client(sdk),
            bucket,
            spillway_core::claim::VALUE_PREFIX,
        )
    });
    let state = AppState::new(config, buffer);
    match claims {
        Some(claims) => state.with_claims(claims),
        None => state,
    }
}

/// Serves `config` on its `SPILLWAY_LISTEN` address until Ctrl-C (the local mode).
pub async fn serve_local(config: config::IngestConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "ingest-api listening");
    axum::serve(listener, router(config).await)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
