//! buffer-drain binary: in Lambda (`AWS_LAMBDA_RUNTIME_API` set) the SQS or Kinesis handler
//! (`SPILLWAY_BUFFER`, [`buffer_drain::lambda::run`]); otherwise the local poller, playing the
//! event source mapping against the local stack ([`buffer_drain::poller::run_local`]). Settings
//! that cannot be used stop it at start with exit code 2.

use aws_config::BehaviorVersion;
use buffer_drain::config::{DrainConfig, LocalConfig};
use spillway_core::config::{ConfigError, Env, KafkaConfig, ProcessEnv};
use spillway_core::telemetry::{self, Logs};

// mimalloc: the drain allocates and frees a few small objects per record on several threads
// (tokio, librdkafka's broker and polling threads); glibc malloc spent about a quarter of the
// drain's CPU there (bench/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn settings<T>(read: Result<T, ConfigError>) -> T {
    read.unwrap_or_else(|e| {
        eprintln!("buffer-drain: {e}");
        std::process::exit(2)
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(Logs::Json, "info");
    let env = Env::new(&ProcessEnv);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let kafka = settings(KafkaConfig::from_env(&env));
        let config = settings(DrainConfig::from_env(&env));
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        // Boxed: the runtime's future is deep enough to overflow the compiler's layout limit inline.
        return Box::pin(buffer_drain::lambda::run(&kafka, &config, &sdk)).await;
    }
    let config = settings(LocalConfig::from_env(&env));
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let mut tasks = buffer_drain::poller::run_local(&config, &sdk).await?;
    tracing::info!(tasks = tasks.len(), buffer = ?config.drain.buffer, "local poller running; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    tasks.shutdown().await;
    Ok(())
}
