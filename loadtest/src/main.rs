//! `loadtest`: one scenario (`run`), every scenario with the baseline (`all`), or a role of the
//! pipeline under test (started by `run` as a separate process).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::run::Options;
use loadtest::scenario::Scenario;
use spillway_core::config::{Env, KafkaConfig, ProcessEnv};

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

type Error = Box<dyn std::error::Error + Send + Sync>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> ExitCode {
    spillway_core::telemetry::init(spillway_core::telemetry::Logs::Text, "warn");
    let result = match Cli::parse().command {
        Command::RoleIngest => runtime().block_on(role_ingest()),
        Command::Report { out } => loadtest::run::rerender(&out).map(|index| println!("{index}")),
        Command::RoleDrain => runtime().block_on(role_drain()),
        Command::RoleDirect => runtime().block_on(role_direct()),
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
            let command = loadtest::run::reproduce(&scenario, direct, quick);
            with_stack(|stack| {
                runtime().block_on(async {
                    let options = Options {
                        direct,
                        out: out.clone(),
                        drain_timeout,
                        command,
                    };
                    let summary = loadtest::run::run(&scenario, stack, &options).await?;
                    loadtest::run::index(&out)?;
                    if summary.lost > 0 && !direct {
                        return Err(format!("{} accepted messages were lost", summary.lost).into());
                    }
                    Ok(())
                })
            })
        }
        Command::All { quick, out } => with_stack(|stack| {
            runtime().block_on(async {
                let mut lost = 0;
                for scenario in Scenario::all(quick) {
                    let baseline = matches!(scenario.name, "spike" | "spike-outage");
                    for direct in [false, true].into_iter().filter(|d| !d || baseline) {
                        let options = Options {
                            direct,
                            out: out.clone(),
                            drain_timeout: Duration::from_secs(300),
                            command: loadtest::run::reproduce(&scenario, direct, quick),
                        };
                        let summary = loadtest::run::run(&scenario, stack, &options).await?;
                        if !direct {
                            lost += summary.lost;
                        }
                    }
                }
                println!("{}", loadtest::run::index(&out)?);
                if lost > 0 {
                    return Err(format!("{lost} accepted messages were lost").into());
                }
                Ok(())
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts (or finds) the local stack and puts its environment in this process's, before any thread
/// exists: the AWS SDK and the MSK IAM signer read it.
fn with_stack(
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

async fn role_ingest() -> Result<(), Error> {
    let config = ingest_api::config::IngestConfig::from_env(&Env::new(&ProcessEnv))?;
    Ok(ingest_api::serve_local(config).await?)
}

async fn role_drain() -> Result<(), Error> {
    let config = buffer_drain::config::LocalConfig::from_env(&Env::new(&ProcessEnv))?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    buffer_drain::report::print_emf(false);
    let mut tasks = buffer_drain::poller::run_local(&config, &sdk).await?;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn role_direct() -> Result<(), Error> {
    let env = Env::new(&ProcessEnv);
    let kafka = KafkaConfig::from_env(&env)?;
    let listen = env.string("SPILLWAY_LISTEN").ok_or("SPILLWAY_LISTEN")?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, loadtest::direct::app(kafka)).await?;
    Ok(())
}
