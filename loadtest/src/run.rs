//! One run: resources, processes, load, faults, the wait for the backlog to drain, the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pipeline::{Gate, Pipeline};
use crate::report::Summary;
use crate::scenario::{Fault, Scenario};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How a run is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// The baseline instead of spillway.
    pub direct: bool,
    /// Where results go (`<out>/<scenario>[-direct]/`).
    pub out: PathBuf,
    /// Longest wait for the backlog to drain after the load ends.
    pub drain_timeout: Duration,
    /// The command line, for the report.
    pub command: String,
}

/// The command that runs `scenario` again.
pub fn reproduce(scenario: &Scenario, direct: bool, quick: bool) -> String {
    format!(
        "cargo run --release -p loadtest -- run {}{}{}",
        scenario.name,
        if direct { " --direct" } else { "" },
        if quick { " --quick" } else { "" }
    )
}

/// Runs `scenario`; returns its summary (also written to `summary.json` with the report).
pub async fn run(
    scenario: &Scenario,
    stack: &BTreeMap<String, String>,
    options: &Options,
) -> Result<Summary, Error> {
    let dir = options.out.join(if options.direct {
        format!("{}-direct", scenario.name)
    } else {
        scenario.name.to_owned()
    });
    std::fs::create_dir_all(&dir)?;
    let get = |k: &str| {
        stack
            .get(k)
            .cloned()
            .ok_or_else(|| format!("local/up did not export {k}"))
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let bootstrap = get("SPILLWAY_KAFKA_BOOTSTRAP")?;
    let resources = crate::pipeline::create(scenario, &sdk, &bootstrap).await?;
    let gate = Gate::new(get("SPILLWAY_MSK_GATE_ADMIN")?);
    gate.quotas(3000, scenario.connects_per_sec).await?;
    gate.session(scenario.session_secs).await?;

    let result = drive(
        scenario, stack, options, &resources, &gate, &sdk, &bootstrap, &dir,
    )
    .await;
    // Whatever happened, the shared gate goes back to MSK Serverless's defaults.
    gate.quotas(3000, 100).await?;
    gate.session(0).await?;
    let summary = result?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    scenario: &Scenario,
    stack: &BTreeMap<String, String>,
    options: &Options,
    resources: &crate::pipeline::Resources,
    gate: &Gate,
    sdk: &aws_config::SdkConfig,
    bootstrap: &str,
    dir: &Path,
) -> Result<Summary, Error> {
    let mut pipeline = Pipeline::start(scenario, resources, stack, options.direct, dir).await?;
    // The drain's producers settle and the verifier's consumer gets its partitions before the
    // load starts (it reads from the start of the topic, so it would miss nothing, but what
    // arrived before it had partitions would show the group's formation as latency).
    let settled = Instant::now() + Duration::from_secs(3);
    let started = crate::observe::Start::default();
    let (observed, consumer, assigned) =
        crate::observe::spawn(bootstrap, &resources.topic, started.clone())?;
    tokio::time::sleep_until(settled.into()).await;
    let waiting = Instant::now();
    while !assigned.load(std::sync::atomic::Ordering::Relaxed)
        && waiting.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !assigned.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("loadtest: the verifier's consumer has no partitions after 30 s; starting anyway (early latencies include its group's formation)");
    }
    let start = *started.get_or_init(Instant::now);
    let target = crate::generator::Target {
        url: format!(
            "http://127.0.0.1:{}/v1/topics/{}/messages",
            pipeline.port, resources.topic
        ),
        message_bytes: scenario.message_bytes,
        keys: scenario.keys,
        max_in_flight: crate::report::MAX_IN_FLIGHT,
        timeout: Duration::from_secs(10),
    };
    let faults = scenario.faults.clone();
    let load = crate::generator::run(&scenario.phases, &target, start);
    let chaos = async {
        for timed in &faults {
            tokio::time::sleep_until((start + Duration::from_secs(timed.at_secs)).into()).await;
            match timed.fault {
                Fault::BrokerOutage { secs } => {
                    eprintln!("loadtest: t={}s broker outage for {secs}s", timed.at_secs);
                    gate.outage(secs).await?;
                }
                Fault::KillDrain { restart_after_secs } => {
                    eprintln!("loadtest: t={}s kill -9 the drain", timed.at_secs);
                    pipeline.kill_drain().await;
                    tokio::time::sleep(Duration::from_secs(restart_after_secs)).await;
                    eprintln!("loadtest: drain restarted");
                    pipeline.restart_drain()?;
                }
            }
        }
        Ok::<_, Error>(())
    };
    let (sent, chaos) = tokio::join!(load, chaos);
    chaos?;
    eprintln!(
        "loadtest: load done ({} requests); waiting for the backlog to drain",
        sent.len()
    );
    let accepted: Vec<&str> = sent
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .filter_map(|s| s.id.as_deref())
        .collect();
    await_delivery(
        &observed,
        &accepted,
        bootstrap,
        &resources.topic,
        start,
        options.drain_timeout,
    )
    .await;
    // A moment for duplicates still in flight to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.abort();
    // The accounting counts what the topic holds, not only what the live consumer saw.
    reread_into(&observed, bootstrap, &resources.topic, start).await;
    pipeline.stop().await;
    let dead_lettered = spillway::status::queue(&aws_sdk_sqs::Client::new(sdk), &resources.dlq_url)
        .await
        .map_or(0, |q| q.waiting + q.in_flight);
    let observed = crate::observe::lock(&observed);
    let (summary, series) =
        crate::report::account(scenario, options.direct, &sent, &observed, dead_lettered);
    let label = format!("{} ({})", scenario.name, summary.mode);
    let plots = crate::report::register_font()
        && crate::report::plot(dir, &label, &series)
            .map_err(|e| eprintln!("loadtest: no plots: {e}"))
            .is_ok();
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    std::fs::write(
        dir.join("README.md"),
        crate::report::markdown(&summary, plots, &options.command),
    )?;
    Ok(summary)
}

/// Waits until every accepted id arrived, or `drain_timeout`; when the count of missing ids stays
/// unchanged for [`REREAD_AFTER`], the topic is re-read for what the live consumer missed.
async fn await_delivery(
    observed: &crate::observe::Shared,
    accepted: &[&str],
    bootstrap: &str,
    topic: &str,
    start: Instant,
    drain_timeout: Duration,
) {
    let waited = Instant::now();
    // The last time the count of missing ids changed, and that count.
    let mut progress = (Instant::now(), usize::MAX);
    loop {
        let missing = {
            let o = crate::observe::lock(observed);
            accepted
                .iter()
                .filter(|id| !o.arrivals.contains_key(**id))
                .count()
        };
        if missing == 0 || waited.elapsed() > drain_timeout {
            break;
        }
        if missing != progress.1 {
            progress = (Instant::now(), missing);
        } else if progress.0.elapsed() >= REREAD_AFTER {
            // Nothing new for a while: what the live consumer may have missed is in the topic.
            reread_into(observed, bootstrap, topic, start).await;
            progress.0 = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the count of missing ids stays unchanged before the topic is re-read for them.
const REREAD_AFTER: Duration = Duration::from_secs(10);

/// Re-reads the topic and completes the live view with what it missed (see
/// [`crate::observe::reread`]); a failed re-read leaves the live view as it is, and says so.
async fn reread_into(
    observed: &crate::observe::Shared,
    bootstrap: &str,
    topic: &str,
    start: Instant,
) {
    match crate::observe::reread(bootstrap, topic, start, Duration::from_secs(60)).await {
        Ok(reread) => {
            let added = crate::observe::lock(observed).complete(reread);
            if added > 0 {
                eprintln!(
                    "loadtest: {added} ids are in the topic that the live consumer never saw"
                );
            }
        }
        Err(e) => eprintln!(
            "loadtest: re-reading the topic failed ({e}); counting what the live consumer saw"
        ),
    }
}

/// One scenario (or its baseline, `direct`), its report and the index; an error when the pipeline
/// lost an accepted message.
pub async fn one(
    scenario: &Scenario,
    stack: &BTreeMap<String, String>,
    direct: bool,
    quick: bool,
    out: &Path,
    drain_timeout: Duration,
) -> Result<(), Error> {
    let options = Options {
        direct,
        out: out.to_owned(),
        drain_timeout,
        command: reproduce(scenario, direct, quick),
    };
    let summary = run(scenario, stack, &options).await?;
    index(out)?;
    if summary.lost > 0 && !direct {
        return Err(format!("{} accepted messages were lost", summary.lost).into());
    }
    Ok(())
}

/// Every scenario, and the baselines of spike and spike-outage; prints the index; an error when
/// the pipeline lost an accepted message in any of them.
pub async fn all(stack: &BTreeMap<String, String>, quick: bool, out: &Path) -> Result<(), Error> {
    let mut lost = 0;
    for scenario in Scenario::all(quick) {
        let baseline = matches!(scenario.name, "spike" | "spike-outage");
        for direct in [false, true].into_iter().filter(|d| !d || baseline) {
            let options = Options {
                direct,
                out: out.to_owned(),
                drain_timeout: Duration::from_secs(300),
                command: reproduce(&scenario, direct, quick),
            };
            let summary = run(&scenario, stack, &options).await?;
            if !direct {
                lost += summary.lost;
            }
        }
    }
    println!("{}", index(out)?);
    if lost > 0 {
        return Err(format!("{lost} accepted messages were lost").into());
    }
    Ok(())
}

/// Rewrites every run's README.md under `out` from its `summary.json` (and the plots beside it),
/// then the index: for when the report's wording changes, without running the load again.
pub fn rerender(out: &Path) -> Result<String, Error> {
    for entry in std::fs::read_dir(out)?.filter_map(Result::ok) {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join("summary.json")) else {
            continue;
        };
        let s: Summary = serde_json::from_str(&text)?;
        let direct = s.mode != "spillway";
        let quick = s.offered < Scenario::named(&s.scenario, false).map_or(0, |f| f.offered());
        let command = Scenario::named(&s.scenario, quick)
            .map(|scenario| reproduce(&scenario, direct, quick))
            .unwrap_or_default();
        let plots = dir.join("rates.png").is_file();
        std::fs::write(
            dir.join("README.md"),
            crate::report::markdown(&s, plots, &command),
        )?;
    }
    index(out)
}

/// Writes `<out>/README.md`: one table of every run's `summary.json` found under `out`.
pub fn index(out: &Path) -> Result<String, Error> {
    let mut rows = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(out)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        if let Ok(text) = std::fs::read_to_string(dir.join("summary.json")) {
            let s: Summary = serde_json::from_str(&text)?;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            rows.push(format!(
                "{} [report]({name}/README.md) |",
                crate::report::row(&s)
            ));
        }
    }
    let text = format!(
        "# Load test results\n\nEach run: `cargo run --release -p loadtest -- run <scenario> [--direct]`; all of them: `cargo run --release -p loadtest -- all`. lost = accepted − delivered.\n\n{} report |\n{}---|\n{}\n",
        crate::report::HEADER.lines().next().unwrap_or_default(),
        crate::report::HEADER.lines().nth(1).unwrap_or_default(),
        rows.join("\n")
    );
    std::fs::write(out.join("README.md"), &text)?;
    Ok(text)
}
