//! topic-resource binary: the CDK provider's `onEvent` handler in Lambda.

use lambda_runtime::{service_fn, LambdaEvent};
use topic_resource::{handle, Request};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Request>| async move {
        handle(event.payload).await.map_err(|e| {
            tracing::error!(error = %e, "request failed");
            Box::new(e) as Error
        })
    }))
    .await
}
