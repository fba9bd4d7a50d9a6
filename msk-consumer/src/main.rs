//! msk-consumer binary: the MSK event handler in Lambda (`AWS_LAMBDA_RUNTIME_API` set); outside
//! Lambda a local consumer group (`run`, the default) or `verify`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use lambda_runtime::{service_fn, LambdaEvent};
use msk_consumer::config::{consumer, ConsumerConfig};
use msk_consumer::handler::{LoggingHandler, SeenIds};
use msk_consumer::verify::Verifier;
use msk_consumer::{lambda, local};
use rdkafka::consumer::Consumer as _;
use spillway_core::config::{Env, ProcessEnv};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "spillway's consumer: MSK events in Lambda, a consumer group locally, or verify")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume SPILLWAY_TOPIC as a consumer group, in batches, with the Lambda handler's code path.
    Run,
    /// Read a topic until N unique spillway-ids arrived, then print a JSON summary.
    Verify {
        /// Topic (default: SPILLWAY_TOPIC).
        #[arg(long)]
        topic: Option<String>,
        /// Unique ids to wait for.
        #[arg(long)]
        expect: u64,
        /// Give up after this long, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = humantime_duration)]
        timeout: Duration,
    },
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 500ms, 60s or 5m"))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Json, "info");
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let config = ConsumerConfig::from_env(&Env::new(&ProcessEnv), in_lambda).unwrap_or_else(|e| {
        eprintln!("msk-consumer: {e}");
        std::process::exit(2);
    });
    let handler = LoggingHandler {
        body_sample: config.body_sample,
    };
    if in_lambda {
        let seen = SeenIds::default();
        let function =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "msk-consumer".into());
        let (handler, seen, function) = (&handler, &seen, function.as_str());
        return lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
            lambda::handle_event(event.payload, handler, seen, function)
                .await
                .map(|_| ())
        }))
        .await;
    }
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let topic = config
                .topic
                .clone()
                .ok_or("SPILLWAY_TOPIC is not set; local mode needs the topic to read")?;
            let kafka = config
                .kafka
                .as_ref()
                .ok_or("SPILLWAY_KAFKA_BOOTSTRAP is not set")?;
            let consumer = consumer(kafka, &config.group).await?;
            consumer.subscribe(&[&topic])?;
            tracing::info!(%topic, group = %config.group, "consuming");
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            local::run(
                &consumer,
                &handler,
                local::Batching::default(),
                stop,
                |report| {
                    println!("{}", report.emf("spillway", "msk-consumer-local"));
                },
            )
            .await?;
            Ok(())
        }
        Command::Verify {
            topic,
            expect,
            timeout,
        } => {
            let topic = topic
                .or(config.topic.clone())
                .ok_or("give --topic or set SPILLWAY_TOPIC")?;
            let group = format!("spillway-verify-{}", std::process::id());
            let kafka = config
                .kafka
                .as_ref()
                .ok_or("SPILLWAY_KAFKA_BOOTSTRAP is not set")?;
            let consumer = consumer(kafka, &group).await?;
            consumer.subscribe(&[&topic])?;
            let mut verifier = Verifier::default();
            let deadline = tokio::time::Instant::now() + timeout;
            let timed_out = loop {
                if verifier.unique() >= expect {
                    break false;
                }
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Err(_) => break true,
                    Ok(message) => verifier.observe(
                        &local::to_record(&message?),
                        spillway_core::envelope::now_ms(),
                    ),
                }
            };
            let summary = verifier.summary(timed_out);
            println!("{}", serde_json::to_string(&summary)?);
            if summary.unique_ids < expect {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
