//! buffer-drain binary: in Lambda (`AWS_LAMBDA_RUNTIME_API` set) the SQS or Kinesis handler
//! (`SPILLWAY_SOURCE`); otherwise the local poller, playing the event source mapping against the
//! local stack with `SPILLWAY_MAX_CONCURRENCY` workers, each with its own producer.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_lambda_events::event::sqs::SqsEvent;
use buffer_drain::lambda::{build_drain, handle_kinesis, handle_sqs, invocation_deadline};
use buffer_drain::poller::PollSettings;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use spillway_core::config::{ConfigError, DrainConfig, Env, KafkaConfig, ProcessEnv};
use spillway_core::limits::BufferKind;

// mimalloc: the drain allocates and frees a few small objects per record on several threads
// (tokio, librdkafka's broker and polling threads); glibc malloc spent about a quarter of the
// drain's CPU there (bench/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn remaining(context: &lambda_runtime::Context) -> Duration {
    let now = spillway_core::envelope::now_ms();
    Duration::from_millis(context.deadline.saturating_sub(now))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = Env::new(&ProcessEnv);
    let fail = |e: ConfigError| -> ! {
        eprintln!("buffer-drain: {e}");
        std::process::exit(2)
    };
    let kafka = KafkaConfig::from_env(&env).unwrap_or_else(|e| fail(e));
    let config = DrainConfig::from_env(&env).unwrap_or_else(|e| fail(e));
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let drain = build_drain(&kafka, &config, Some(&sdk)).await?;
        let (drain, margin) = (&drain, config.deadline_margin);
        return match config.source {
            BufferKind::Sqs => {
                lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| async move {
                    let ends = invocation_deadline(remaining(&e.context), margin)?;
                    handle_sqs(drain, e.payload, ends)
                        .await
                        .map_err(Diagnostic::from)
                }))
                .await
            }
            BufferKind::Kinesis => {
                // Read from JSON by the drain, not the runtime: see `source::kinesis_event`.
                lambda_runtime::run(service_fn(
                    move |e: LambdaEvent<serde_json::Value>| async move {
                        let ends = invocation_deadline(remaining(&e.context), margin)?;
                        let event =
                            buffer_drain::source::kinesis_event(e.payload).map_err(|e| {
                                Diagnostic {
                                    error_type: "UnreadableEvent".into(),
                                    error_message: format!("not a Kinesis event: {e}"),
                                }
                            })?;
                        handle_kinesis(drain, event, ends)
                            .await
                            .map_err(Diagnostic::from)
                    },
                ))
                .await
            }
        };
    }

    let settings = PollSettings::from_env(&env, &config).unwrap_or_else(|e| fail(e));
    let workers: usize = env
        .number("SPILLWAY_MAX_CONCURRENCY", 2, 1, 1000)
        .unwrap_or_else(|e| fail(e));
    let queue_or_stream = match config.source {
        BufferKind::Sqs => env.required(
            "SPILLWAY_SQS_QUEUE_URL",
            "the local poller needs the queue to drain",
        ),
        BufferKind::Kinesis => env.required(
            "SPILLWAY_KINESIS_STREAM",
            "the local poller needs the stream to drain",
        ),
    }
    .unwrap_or_else(|e| fail(e));
    let tasks =
        buffer_drain::poller::run_local(&kafka, &config, settings, workers, &queue_or_stream, &sdk)
            .await?;
    tracing::info!(workers = tasks.len(), source = ?config.source, "local poller running; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    let mut tasks = tasks;
    tasks.shutdown().await;
    Ok(())
}
