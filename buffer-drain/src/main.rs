//! buffer-drain binary: in Lambda (`AWS_LAMBDA_RUNTIME_API` set) the SQS or Kinesis handler
//! (`SPILLWAY_BUFFER`, [`buffer_drain::lambda::run`]); otherwise the poller, playing the event
//! source mapping ([`buffer_drain::poller::run_local`]) — against the local stack, or as a
//! service next to MSK ([`buffer_drain::service`]: `/healthz`, `/readyz`, `/metrics` on
//! `SPILLWAY_HTTP_ADDR`; graceful shutdown on SIGTERM). Settings that cannot be used stop it at
//! start with exit code 2; a shutdown that had to abandon a batch exits 1.

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

fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(Logs::Json, "info");
    let env = Env::new(&ProcessEnv);
    let threads = settings(buffer_drain::config::runtime_threads(&env));
    buffer_drain::runtime(threads)?.block_on(drain(&env))
}

async fn drain(env: &Env<'_>) -> Result<(), lambda_runtime::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let kafka = settings(KafkaConfig::from_env(env));
        let config = settings(DrainConfig::from_env(env));
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        // Boxed: the runtime's future is deep enough to overflow the compiler's layout limit inline.
        return Box::pin(buffer_drain::lambda::run(&kafka, &config, &sdk)).await;
    }
    let config = settings(LocalConfig::from_env(env));
    // Bound before anything starts, so that a port in use stops the drain at once (exit 2).
    let listener = match env.string("SPILLWAY_HTTP_ADDR") {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(&addr)
                .await
                .unwrap_or_else(|e| {
                    eprintln!("buffer-drain: SPILLWAY_HTTP_ADDR={addr} cannot be listened on: {e}");
                    std::process::exit(2)
                }),
        ),
        None => None,
    };
    // Listened for before the first worker starts: a SIGTERM or Ctrl-C while the others are
    // still being set up stops them all gracefully too, instead of killing a batch in flight.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (interrupted, mut ctrl_c) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                let _ = interrupted.send(());
            }
            Err(e) => {
                // Without Ctrl-C, SIGTERM still stops it: keep the sender, never send.
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    });
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let running = buffer_drain::poller::run_local(&config, &sdk).await?;
    if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        buffer_drain::service::serve(listener, running.health().clone());
        tracing::info!(%addr, "health and metrics: http://{addr}/healthz, /readyz, /metrics");
    }
    tracing::info!(workers = running.health().workers(), buffer = ?config.drain.buffer, "drain running; SIGTERM or Ctrl-C stops it");
    tokio::select! {
        _ = term.recv() => {}
        _ = &mut ctrl_c => {}
    }
    let bound = config.poll.shutdown_bound();
    tracing::info!(
        bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        "stopping: no new batches; finishing the batches in flight"
    );
    if running.stop(bound).await {
        tracing::info!("stopped: every batch in flight finished");
        Ok(())
    } else {
        // Their messages come again after the visibility timeout (duplicates, never a loss).
        std::process::exit(1)
    }
}
