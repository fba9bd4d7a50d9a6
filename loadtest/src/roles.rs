//! The pipeline's roles, each started by `run` as a separate process of this binary (so that
//! the drain's CPU and memory are its own): ingest-api's local server, the drain's local poller
//! and the baseline server, each configured from the environment.

use spillway_core::config::{Env, KafkaConfig, ProcessEnv};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Starts (or finds) the local stack and puts its environment in this process's, before any thread
/// exists: the AWS SDK and the MSK IAM signer read it.
pub fn with_stack(
    f: impl FnOnce(&std::collections::BTreeMap<String, String>) -> Result<(), Error>,
) -> Result<(), Error> {
    let stack = spillway::stack::up()?;
    for (k, v) in &stack.env {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    f(&stack.env)
}

/// ingest-api's local server.
pub async fn ingest() -> Result<(), Error> {
    let config = ingest_api::config::IngestConfig::from_env(&Env::new(&ProcessEnv))?;
    Ok(ingest_api::serve_local(config).await?)
}

/// The drain role on the runtime the buffer-drain binary builds (`SPILLWAY_RUNTIME_THREADS`).
pub fn drain_on_its_runtime() -> Result<(), Error> {
    let threads = buffer_drain::config::runtime_threads(&Env::new(&ProcessEnv))?;
    buffer_drain::runtime(threads)?.block_on(drain())
}

/// The drain's local poller, without EMF lines (the load test counts on its own).
pub async fn drain() -> Result<(), Error> {
    let config = buffer_drain::config::LocalConfig::from_env(&Env::new(&ProcessEnv))?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    buffer_drain::report::print_emf(false);
    let mut running = buffer_drain::poller::run_local(&config, &sdk).await?;
    running.join().await;
    Ok(())
}

/// The baseline: the AWS sample's produce-and-flush per request.
pub async fn direct() -> Result<(), Error> {
    let env = Env::new(&ProcessEnv);
    let kafka = KafkaConfig::from_env(&env)?;
    let listen = env.string("SPILLWAY_LISTEN").ok_or("SPILLWAY_LISTEN")?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, crate::direct::app(kafka)).await?;
    Ok(())
}
