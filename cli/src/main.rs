//! The `spillway` command. Exit codes: 0 success, 1 a failure while running, 2 bad usage or
//! configuration.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use spillway::dev::DevOptions;
use spillway::{dev, stack, status};
use spillway_core::limits::BufferKind;

#[derive(Parser)]
#[command(
    name = "spillway",
    version,
    about = "Burst-proof HTTP → Kafka for Amazon MSK with IAM: operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Buffer {
    Sqs,
    Kinesis,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine, with live counters; Ctrl-C stops it.
    ///
    /// Starts the local stack (local/up installs what is missing), then ingest-api, the drain's
    /// local poller and a consumer in this process, through msk-gate with MSK IAM.
    ///
    /// Example: spillway dev --buffer kinesis --port 8081
    Dev {
        /// Where ingest-api buffers messages.
        #[arg(long, value_enum, default_value = "sqs")]
        buffer: Buffer,
        /// ingest-api's port on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Drain workers, each a local "Lambda container" with its own producer.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Talk to the broker directly instead of through msk-gate with MSK IAM.
        #[arg(long)]
        plaintext: bool,
        /// Do not post the sample message at start.
        #[arg(long)]
        no_demo: bool,
    },
    /// Show the buffer queue's depth and the dead-letter queue.
    ///
    /// Example: spillway status --watch 2s --json
    Status {
        /// The buffer queue.
        #[arg(long, env = "SPILLWAY_SQS_QUEUE_URL")]
        queue_url: Option<String>,
        /// The dead-letter queue.
        #[arg(long, env = "SPILLWAY_SQS_DLQ_URL")]
        dlq_url: Option<String>,
        /// One JSON object per refresh, for scripts.
        #[arg(long)]
        json: bool,
        /// Refresh at this interval (e.g. 2s) until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Dev {
            buffer,
            port,
            workers,
            plaintext,
            no_demo,
        } => {
            eprintln!("spillway dev: starting the local stack (local/up)…");
            let stack = match stack::up() {
                Ok(stack) => stack,
                Err(e) => {
                    eprintln!("spillway dev: {e}");
                    return ExitCode::from(1);
                }
            };
            // Before any thread exists: the AWS SDK and the MSK IAM signer read the environment.
            for (k, v) in &stack.env {
                if std::env::var_os(k).is_none() {
                    std::env::set_var(k, v);
                }
            }
            let options = DevOptions {
                buffer: match buffer {
                    Buffer::Sqs => BufferKind::Sqs,
                    Buffer::Kinesis => BufferKind::Kinesis,
                },
                port,
                plaintext,
                workers: workers.max(1),
                demo: !no_demo,
            };
            let result = runtime().block_on(dev::run(options, stack.env.clone()));
            if !stack.was_running {
                eprintln!("spillway dev: stopping the local stack it started (local/down)");
                stack::down();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spillway dev: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Status {
            queue_url,
            dlq_url,
            json,
            watch,
        } => {
            if queue_url.is_none() && dlq_url.is_none() {
                eprintln!("spillway status: give --queue-url and/or --dlq-url (or SPILLWAY_SQS_QUEUE_URL / SPILLWAY_SQS_DLQ_URL)");
                return ExitCode::from(2);
            }
            let result = runtime().block_on(async {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let sqs = aws_sdk_sqs::Client::new(&sdk);
                status::run(&sqs, queue_url.as_deref(), dlq_url.as_deref(), json, watch).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spillway status: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
