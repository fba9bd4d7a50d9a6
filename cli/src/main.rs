//! The `spillway` command: parses the command line and runs the command. Exit codes (one place:
//! [`spillway::error::Error::exit_code`]): 0 success, 1 a failure while running, 2 bad usage or
//! configuration, 3 `tune` refused an unsafe setting.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spillway::{dev, replay, runtime, status, tune};

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

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine, with live counters; Ctrl-C stops it.
    ///
    /// Starts the local stack (local/up installs what is missing), then ingest-api, the drain's
    /// local poller and a consumer in this process, through msk-gate with MSK IAM.
    ///
    /// Example: spillway dev --buffer kinesis --port 8081
    Dev(dev::DevOptions),
    /// Move dead-lettered messages back to a queue, into a Kinesis stream, or straight to Kafka.
    ///
    /// Each message is deleted from the dead-letter queue only after its target acknowledged it,
    /// so an interrupted replay loses nothing: run it again. Filters pick by reason and age.
    /// Kinesis on-failure records (shard and sequence range only) are read back from the stream.
    ///
    /// Examples:
    ///   spillway replay --dlq-url "$ON_FAILURE_QUEUE_URL" --to-stream spillway-stream
    ///   spillway replay --to-queue "$SPILLWAY_SQS_QUEUE_URL" --reason "kafka: not authorised" --dry-run
    ///   spillway replay --to-kafka --older-than 10m --max 1000 --rate 200
    Replay(replay::ReplayArgs),
    /// Show or change the drain's event source mapping, checked against MSK's quotas.
    ///
    /// Prints the arithmetic for each check; an unsafe combination is refused (exit 3) unless
    /// --force.
    ///
    /// Examples:
    ///   spillway tune --function spillway-drain
    ///   spillway tune --function spillway-drain --max-concurrency 200 --batch-size 100 --batching-window 1
    Tune(tune::TuneArgs),
    /// Show the buffer's depth, in-flight and oldest message, the dead-letter queue, the stream's
    /// lag and the drain's settings.
    ///
    /// Ages and lag come from CloudWatch and are "-" (null in JSON) when it has no recent
    /// datapoint. Give any of the four; each is read when given.
    ///
    /// Examples:
    ///   spillway status --watch 2s
    ///   spillway status --stream spillway-stream --function spillway-drain --json
    Status(status::StatusArgs),
}

fn main() -> ExitCode {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Text, "warn");
    let (name, result) = match Cli::parse().command {
        Command::Dev(options) => ("dev", dev::command(options)),
        Command::Replay(args) => ("replay", runtime().block_on(replay::command(&args))),
        Command::Tune(args) => ("tune", runtime().block_on(tune::command(&args))),
        Command::Status(args) => ("status", runtime().block_on(status::command(&args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spillway {name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
