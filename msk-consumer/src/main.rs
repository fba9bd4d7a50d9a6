//! msk-consumer binary: the MSK event handler in Lambda (`AWS_LAMBDA_RUNTIME_API` set); outside
//! Lambda a local consumer group (`run`, the default) or `verify`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use msk_consumer::config::ConsumerConfig;
use msk_consumer::handler::LoggingHandler;
use msk_consumer::{lambda, local};
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
        return lambda::run(&handler).await;
    }
    let kafka = config
        .kafka
        .as_ref()
        .ok_or("SPILLWAY_KAFKA_BOOTSTRAP is not set")?;
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let topic = config
                .topic
                .as_deref()
                .ok_or("SPILLWAY_TOPIC is not set; local mode needs the topic to read")?;
            local::consume(kafka, topic, &config.group, &handler).await
        }
        Command::Verify {
            topic,
            expect,
            timeout,
        } => {
            let topic = topic
                .or(config.topic.clone())
                .ok_or("give --topic or set SPILLWAY_TOPIC")?;
            let summary = msk_consumer::verify::until(kafka, &topic, expect, timeout).await?;
            println!("{}", serde_json::to_string(&summary)?);
            if summary.unique_ids < expect {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
