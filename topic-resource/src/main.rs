//! topic-resource binary: the CDK provider's `onEvent` handler in Lambda.

use lambda_runtime::{service_fn, LambdaEvent};
use topic_resource::{handle, Request};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Json, "info");
    lambda_runtime::run(service_fn(|event: LambdaEvent<Request>| async move {
        handle(event.payload).await.map_err(|e| {
            tracing::error!(error = %e, "request failed");
            Box::new(e) as Error
        })
    }))
    .await
}
