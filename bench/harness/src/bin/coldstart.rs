//! Cold start and memory of a Lambda binary under a local Lambda Runtime API.
//!
//! Starts the binary with `AWS_LAMBDA_RUNTIME_API` pointing here and measures the time from exec
//! to its first `GET /runtime/invocation/next` — "ready for the first event": for the drain that
//! is after its producer was created and its MSK IAM token made. Then, with `--event FILE`, hands
//! it that event, waits for the answer and reads its peak RSS (`VmHWM`). Prints one JSON object.
//!
//! `coldstart --binary target/release/buffer-drain --runs 5 [--event sqs-10k.json]`
//! `coldstart --write-sqs-event FILE --records 10000 --bytes 1024 --topic T`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use spillway_bench::runtime_api::RuntimeApi;

#[derive(Parser)]
struct Args {
    /// The Lambda binary (a `bootstrap`).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Cold starts to measure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// An event to hand it after the cold starts, for the peak RSS during one invocation.
    #[arg(long)]
    event: Option<PathBuf>,
    /// Write an SQS event of envelopes to this file and exit.
    #[arg(long)]
    write_sqs_event: Option<PathBuf>,
    /// Records in the written event.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    bytes: usize,
    /// Topic of the envelopes.
    #[arg(long, default_value = "bench")]
    topic: String,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

struct Start {
    ready_ms: f64,
    idle_rss_kib: u64,
    peak_rss_kib: Option<u64>,
    answer: Option<String>,
}

async fn one(binary: &PathBuf, event: Option<String>) -> Result<Start, String> {
    let rt = RuntimeApi::start().await;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", rt.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().unwrap_or(0);
    let (init, ready) = rt
        .wait_until(Duration::from_secs(60), |s| {
            s.first_poll.is_some() || s.init_error.is_some()
        })
        .await;
    if let Some(error) = init.init_error {
        return Err(format!("init error: {error}"));
    }
    let ready = init
        .first_poll
        .filter(|_| ready)
        .ok_or("not ready within 60 s")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss_kib = status_kib(pid, "VmRSS:");
    let mut peak = None;
    let mut answer = None;
    if let Some(event) = event {
        // The binary is parked in its first /next; the event answers it.
        rt.invoke("bench-1", event, Duration::from_secs(300));
        let (done, answered) = rt
            .wait_until(Duration::from_secs(300), |s| {
                s.answers.contains_key("bench-1")
            })
            .await;
        if !answered {
            return Err("no answer within 300 s".to_owned());
        }
        peak = Some(status_kib(pid, "VmHWM:"));
        answer = done.answers.get("bench-1").map(|a| {
            format!(
                "{}: {}",
                if a.ok { "response" } else { "error" },
                a.body.len()
            )
        });
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    #[allow(clippy::cast_precision_loss)]
    let ready_ms = ready.duration_since(started).as_micros() as f64 / 1000.0;
    Ok(Start {
        ready_ms,
        idle_rss_kib,
        peak_rss_kib: peak,
        answer,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(file) = &args.write_sqs_event {
        std::fs::write(
            file,
            spillway_bench::sqs_event(args.records, args.bytes, &args.topic),
        )
        .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let binary = args.binary.ok_or("--binary is required")?;
    let mut ready = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..args.runs.max(1) {
        let s = one(&binary, None).await?;
        ready.push(s.ready_ms);
        #[allow(clippy::cast_precision_loss)]
        idle.push(s.idle_rss_kib as f64);
    }
    let mut out = serde_json::json!({
        "binary": binary.display().to_string(),
        "ready_ms_median": median(ready.clone()),
        "ready_ms_runs": ready,
        "idle_rss_kib_median": median(idle),
        "size_bytes": std::fs::metadata(&binary).map_or(0, |m| m.len()),
    });
    if let Some(event) = &args.event {
        let event = std::fs::read_to_string(event).map_err(|e| e.to_string())?;
        let s = one(&binary, Some(event)).await?;
        out["peak_rss_kib_batch"] = serde_json::json!(s.peak_rss_kib);
        out["batch_answer"] = serde_json::json!(s.answer);
    }
    println!("{out}");
    Ok(())
}
