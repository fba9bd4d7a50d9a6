//! ingest-api binary: in Lambda when `AWS_LAMBDA_RUNTIME_API` is set, else a local server on
//! `SPILLWAY_LISTEN`. Builds the clients once, then hands over to the library's router.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use ingest_api::buffer::Buffer;
use ingest_api::config::IngestConfig;
use ingest_api::{app, AppState};
use spillway_core::config::{Env, ProcessEnv};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(true)
        .init();
    let config = match IngestConfig::from_env(&Env::new(&ProcessEnv)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ingest-api: {e}");
            std::process::exit(2);
        }
    };
    // The buffer writer retries within its own budget; the SDK's retries would hide that time.
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        .load()
        .await;
    let buffer = Buffer::new(&config.buffer, &sdk);
    let listen = config.listen;
    let router = app(AppState::new(config, buffer));

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        lambda_http::run(router).await
    } else {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(address = %listener.local_addr()?, "ingest-api listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    }
}
