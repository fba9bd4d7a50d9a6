//! `loadtest`: one scenario (`run`), every scenario with the baseline (`all`), or a role of the
//! pipeline under test (started by `run` as a separate process).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::roles::{self, with_stack};
use loadtest::scenario::Scenario;

#[derive(Parser)]
#[command(
    about = "spillway's load test: bursts and faults end to end, lost = accepted − delivered, a report with plots",
    after_help = "Scenarios: steady, spike, spike-outage, iam-throttle, token-expiry, drain-kill, kinesis-spike.\n\nExamples:\n  cargo run --release -p loadtest -- run spike\n  cargo run --release -p loadtest -- run spike --direct\n  cargo run --release -p loadtest -- all --out loadtest/results"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario and write its report.
    Run {
        /// The scenario.
        scenario: String,
        /// The baseline: the AWS sample's produce-and-flush per request, same gate, same burst.
        #[arg(long)]
        direct: bool,
        /// The short version (CI's).
        #[arg(long)]
        quick: bool,
        /// Results folder.
        #[arg(long, default_value = "loadtest/results")]
        out: PathBuf,
        /// Longest wait for the backlog to drain after the load, e.g. 300s.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
    },
    /// Every scenario, plus the spike and spike-outage baselines, and the index table.
    All {
        /// The short versions.
        #[arg(long)]
        quick: bool,
        /// Results folder.
        #[arg(long, default_value = "loadtest/results")]
        out: PathBuf,
    },
    /// Rewrite the reports under --out from their summary.json files (no load is run).
    Report {
        /// Results folder.
        #[arg(long, default_value = "loadtest/results")]
        out: PathBuf,
    },
    /// (internal) ingest-api's local server, from the environment.
    #[command(hide = true)]
    RoleIngest,
    /// (internal) the drain's local poller, from the environment.
    #[command(hide = true)]
    RoleDrain,
    /// (internal) the baseline server, from the environment.
    #[command(hide = true)]
    RoleDirect,
}

// The drain's allocator (this binary hosts the drain role).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> ExitCode {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Text, "warn");
    let result = match Cli::parse().command {
        Command::RoleIngest => runtime().block_on(roles::ingest()),
        Command::Report { out } => loadtest::run::rerender(&out).map(|index| println!("{index}")),
        Command::RoleDrain => roles::drain_on_its_runtime(),
        Command::RoleDirect => runtime().block_on(roles::direct()),
        Command::Run {
            scenario,
            direct,
            quick,
            out,
            drain_timeout,
        } => {
            let Some(scenario) = Scenario::named(&scenario, quick) else {
                eprintln!("loadtest: no scenario {scenario}; see --help for the list");
                return ExitCode::from(2);
            };
            with_stack(|stack| {
                runtime().block_on(loadtest::run::one(
                    &scenario,
                    stack,
                    direct,
                    quick,
                    &out,
                    drain_timeout,
                ))
            })
        }
        Command::All { quick, out } => {
            with_stack(|stack| runtime().block_on(loadtest::run::all(stack, quick, &out)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(1)
        }
    }
}
