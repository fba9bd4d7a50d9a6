//! ingest-api binary: in Lambda when `AWS_LAMBDA_RUNTIME_API` is set, else a local server on
//! `SPILLWAY_LISTEN`. Builds the clients once, then hands over to the library's router.

use ingest_api::config::IngestConfig;
use spillway_core::config::{Env, ProcessEnv};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Json, "info");
    let config = match IngestConfig::from_env(&Env::new(&ProcessEnv)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ingest-api: {e}");
            std::process::exit(2);
        }
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        lambda_http::run(ingest_api::router(config).await).await
    } else {
        Ok(ingest_api::serve_local(config).await?)
    }
}
