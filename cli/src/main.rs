//! The `spillway` command. Exit codes: 0 success, 1 a failure while running, 2 bad usage or
//! configuration, 3 `tune` refused an unsafe setting.

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
    /// Move dead-lettered messages back to a queue, or straight to Kafka.
    ///
    /// Each message is deleted from the dead-letter queue only after its target acknowledged it,
    /// so an interrupted replay loses nothing: run it again. Filters pick by reason and age.
    /// Kinesis on-failure records (shard and sequence range only) are read back from the stream.
    ///
    /// Examples:
    ///   spillway replay --dlq-url "$ON_FAILURE_QUEUE_URL" --to-stream spillway-stream
    ///   spillway replay --to-queue "$SPILLWAY_SQS_QUEUE_URL" --reason "kafka: not authorised" --dry-run
    ///   spillway replay --to-kafka --older-than 10m --max 1000 --rate 200
    #[command(group(clap::ArgGroup::new("target").required(true)))]
    Replay {
        /// The dead-letter queue.
        #[arg(long, env = "SPILLWAY_SQS_DLQ_URL")]
        dlq_url: String,
        /// Send the messages to this queue (normally the buffer the DLQ belongs to).
        #[arg(long, group = "target")]
        to_queue: Option<String>,
        /// Produce the messages straight to Kafka with the drain's producer (SPILLWAY_KAFKA_*).
        #[arg(long, group = "target")]
        to_kafka: bool,
        /// Put the records back into this Kinesis stream (for Kinesis on-failure records and
        /// records the drain dead-lettered from a stream).
        #[arg(long, group = "target")]
        to_stream: Option<String>,
        /// Only messages whose spillway-reason attribute contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Only messages at least this old (e.g. 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Move at most this many.
        #[arg(long)]
        max: Option<u64>,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<std::num::NonZeroU32>,
        /// Print what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long received messages stay hidden while being moved (what was in flight when a
        /// replay was interrupted reappears after this long); at least 10s.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        visibility_timeout: Duration,
        /// The topic plain (raw-mode) letters are for: the drain's SPILLWAY_TOPIC. With
        /// --to-kafka they are produced to it, with their original message id as spillway-id; with
        /// --to-queue they are sent in an envelope for it that keeps that id (sent as they were,
        /// they would get a new one). Without it, plain letters are not moved.
        #[arg(long, env = "SPILLWAY_TOPIC")]
        raw_topic: Option<String>,
        /// The bucket the drain keeps dead letters too large for the DLQ in (the drain's
        /// SPILLWAY_DLQ_BUCKET; infra's DeadLetterBucket output). A letter whose claim check names
        /// another bucket, or a key outside dead-letters/, is not read: only the drain writes there.
        #[arg(long, env = "SPILLWAY_DLQ_BUCKET")]
        dlq_bucket: Option<String>,
    },
    /// Show or change the drain's event source mapping, checked against MSK's quotas.
    ///
    /// Prints the arithmetic for each check; an unsafe combination is refused (exit 3) unless
    /// --force.
    ///
    /// Examples:
    ///   spillway tune --function spillway-drain
    ///   spillway tune --function spillway-drain --max-concurrency 200 --batch-size 100 --batching-window 1
    Tune {
        /// The drain function.
        #[arg(long)]
        function: String,
        /// The mapping, when the function has several.
        #[arg(long)]
        uuid: Option<String>,
        /// New maximum concurrency (instances).
        #[arg(long)]
        max_concurrency: Option<u64>,
        /// New batch size.
        #[arg(long)]
        batch_size: Option<u64>,
        /// New batching window, in seconds.
        #[arg(long)]
        batching_window: Option<u64>,
        /// New SPILLWAY_MAX_CONNECTS_PER_SEC for the function.
        #[arg(long)]
        max_connects_per_sec: Option<u32>,
        /// Connections one drain instance keeps (bootstrap plus brokers).
        #[arg(long, default_value_t = 3)]
        connections_per_instance: u64,
        /// Apply even when a check fails.
        #[arg(long)]
        force: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the buffer's depth, in-flight and oldest message, the dead-letter queue, the stream's
    /// lag and the drain's settings.
    ///
    /// Ages and lag come from CloudWatch and are "-" (null in JSON) when it has no recent
    /// datapoint. Give any of the four; each is read when given.
    ///
    /// Examples:
    ///   spillway status --watch 2s
    ///   spillway status --stream spillway-stream --function spillway-drain --json
    Status {
        /// The buffer queue.
        #[arg(long, env = "SPILLWAY_SQS_QUEUE_URL")]
        queue_url: Option<String>,
        /// The dead-letter queue.
        #[arg(long, env = "SPILLWAY_SQS_DLQ_URL")]
        dlq_url: Option<String>,
        /// The Kinesis buffer stream.
        #[arg(long, env = "SPILLWAY_KINESIS_STREAM")]
        stream: Option<String>,
        /// The drain function (its settings and event source mappings).
        #[arg(long, env = "SPILLWAY_DRAIN_FUNCTION")]
        function: Option<String>,
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
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Text, "warn");
    match Cli::parse().command {
        Command::Dev {
            buffer,
            port,
            workers,
            plaintext,
            no_demo,
        } => dev_command(DevOptions {
            buffer: match buffer {
                Buffer::Sqs => BufferKind::Sqs,
                Buffer::Kinesis => BufferKind::Kinesis,
            },
            port,
            plaintext,
            workers: workers.max(1),
            demo: !no_demo,
        }),
        Command::Replay {
            dlq_url,
            to_queue,
            to_kafka,
            to_stream,
            reason,
            older_than,
            max,
            rate,
            dry_run,
            visibility_timeout,
            raw_topic,
            dlq_bucket,
        } => replay(
            &dlq_url,
            &ReplayTarget {
                to_queue,
                to_kafka,
                to_stream,
                raw_topic,
                dlq_bucket,
            },
            &spillway::replay::Filters {
                reason,
                older_than,
                max,
                visibility: visibility_timeout,
            },
            rate,
            dry_run,
        ),
        Command::Tune {
            function,
            uuid,
            max_concurrency,
            batch_size,
            batching_window,
            max_connects_per_sec,
            connections_per_instance,
            force,
            json,
        } => tune(
            &function,
            uuid.as_deref(),
            &spillway::tune::Changes {
                max_concurrency,
                batch_size,
                batching_window_secs: batching_window,
                max_connects_per_sec,
            },
            connections_per_instance,
            force,
            json,
        ),
        Command::Status {
            queue_url,
            dlq_url,
            stream,
            function,
            json,
            watch,
        } => status_command(
            &status::Targets {
                queue_url,
                dlq_url,
                stream,
                function,
            },
            json,
            watch,
        ),
    }
}

fn status_command(targets: &status::Targets, json: bool, watch: Option<Duration>) -> ExitCode {
    if targets.is_empty() {
        eprintln!("spillway status: give --queue-url, --dlq-url, --stream or --function (or SPILLWAY_SQS_QUEUE_URL, SPILLWAY_SQS_DLQ_URL, SPILLWAY_KINESIS_STREAM, SPILLWAY_DRAIN_FUNCTION)");
        return ExitCode::from(2);
    }
    let result = runtime().block_on(async {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        status::run(&status::Clients::new(&sdk), targets, json, watch).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spillway status: {e}");
            ExitCode::from(1)
        }
    }
}

/// Where `replay` sends letters, as the command line says.
struct ReplayTarget {
    to_queue: Option<String>,
    to_kafka: bool,
    to_stream: Option<String>,
    raw_topic: Option<String>,
    dlq_bucket: Option<String>,
}

fn replay(
    dlq_url: &str,
    to: &ReplayTarget,
    filters: &spillway::replay::Filters,
    rate: Option<std::num::NonZeroU32>,
    dry_run: bool,
) -> ExitCode {
    let max = filters.max;
    let result = runtime().block_on(async {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let target = if to.to_kafka {
            let env = spillway_core::config::Env::new(&spillway_core::config::ProcessEnv);
            let kafka =
                spillway_core::config::KafkaConfig::from_env(&env).map_err(|e| e.to_string())?;
            let config = buffer_drain::config::DrainConfig {
                // Plain letters are produced only to the topic they were for.
                raw_mode: if to.raw_topic.is_some() {
                    spillway_core::envelope::RawMode::Accept
                } else {
                    spillway_core::envelope::RawMode::Reject
                },
                deadline_margin: Duration::from_secs(1),
                raw_topic: to.raw_topic.clone(),
                ..buffer_drain::config::DrainConfig::new(BufferKind::Sqs)
            };
            let drain = buffer_drain::lambda::build_drain(&kafka, &config, None)
                .await
                .map_err(|e| e.to_string())?;
            spillway::replay::Target::Kafka(Box::new(drain))
        } else if let Some(stream) = &to.to_stream {
            spillway::replay::Target::stream(&aws_sdk_kinesis::Client::new(&sdk), stream)
        } else {
            spillway::replay::Target::queue(&sqs, to.to_queue.as_deref().unwrap_or_default())
                .await?
        };
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        let s3 = spillway_core::claim::ClaimStore::client(&sdk);
        let total = match max {
            Some(max) => Some(max),
            None => spillway::replay::waiting(&sqs, dlq_url).await,
        };
        let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !dry_run {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} moved, {per_sec}, eta {eta}",
                )
                .expect("a valid template"),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let summary = spillway::replay::Replay {
            sqs: &sqs,
            kinesis: &kinesis,
            s3: &s3,
            dlq_url,
            target: &target,
            filters,
            rate,
            dry_run,
            raw_topic: to.raw_topic.as_deref(),
            dlq_bucket: to.dlq_bucket.as_deref(),
        }
        .run(&progress)
        .await;
        progress.finish_and_clear();
        summary
    });
    match result {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            if summary.failed > 0 {
                eprintln!("spillway replay: {} messages were not accepted by the target and stay in the DLQ", summary.failed);
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spillway replay: {e}");
            ExitCode::from(1)
        }
    }
}

fn tune(
    function: &str,
    uuid: Option<&str>,
    changes: &spillway::tune::Changes,
    connections_per_instance: u64,
    force: bool,
    json: bool,
) -> ExitCode {
    let result = runtime().block_on(async {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        spillway::tune::run(
            &lambda,
            &sqs,
            function,
            uuid,
            connections_per_instance,
            changes,
            force,
        )
        .await
    });
    match result {
        Ok(outcome) => {
            if json {
                println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
            } else {
                for c in &outcome.checks {
                    println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.text);
                }
                println!(
                    "{}",
                    if outcome.applied {
                        "applied"
                    } else {
                        "not changed"
                    }
                );
            }
            if outcome.unsafe_settings && !force {
                eprintln!(
                    "spillway tune: refused: a check failed (see above); --force applies anyway"
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spillway tune: {e}");
            ExitCode::from(1)
        }
    }
}

fn dev_command(options: DevOptions) -> ExitCode {
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
