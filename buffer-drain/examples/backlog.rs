//! The standing-backlog benchmark (issue 17's figures): a queue on the local stack filled with
//! `--messages` envelopes of `--bytes`, drained once by a bare aws-sdk-sqs receive + delete loop
//! (the emulator's own limit on this machine: no Kafka, no decoding) and once by the release
//! `buffer-drain` binary (`--drain PATH`) as a service, through whatever `SPILLWAY_KAFKA_*` says
//! (bench/run: msk-gate with MSK IAM). Prints one JSON line per run:
//! `{"run", "messages", "seconds", "per_s", "cpu_us_per_msg", "peak_rss_mib", "delivered"}`.
//!
//! ```sh
//! eval "$(local/up)"
//! cargo build --release -p buffer-drain --example backlog --bin buffer-drain
//! SPILLWAY_KAFKA_BOOTSTRAP=$SPILLWAY_MSK_GATE SPILLWAY_KAFKA_AUTH=iam \
//!   $CARGO_TARGET_DIR/release/examples/backlog --messages 50000 --drain $CARGO_TARGET_DIR/release/buffer-drain
//! ```

// Figures for people: counts far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use spillway_core::envelope::Envelope;

struct Options {
    messages: usize,
    bytes: usize,
    /// The drain's `SPILLWAY_MAX_CONCURRENCY`.
    workers: usize,
    batch: usize,
    window: String,
    /// Concurrent receive + delete loops of the bare baseline.
    loops: usize,
    drain: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        messages: 50_000,
        bytes: 1024,
        workers: 4,
        batch: 100,
        window: "1s".into(),
        loops: 16,
        drain: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || value.parse().expect("a number");
        match pair[0].as_str() {
            "--messages" => o.messages = number(),
            "--bytes" => o.bytes = number(),
            "--workers" => o.workers = number(),
            "--batch" => o.batch = number(),
            "--loops" => o.loops = number(),
            "--window" => o.window.clone_from(&value),
            "--drain" => o.drain = Some(value),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// CPU time (user + system) of process `pid` so far.
fn cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// Peak resident set of process `pid`, MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn fill(sqs: &aws_sdk_sqs::Client, url: &str, topic: &str, n: usize, bytes: usize) {
    let body = "x".repeat(bytes);
    let calls: Vec<_> = (0..n.div_ceil(10)).collect();
    for group in calls.chunks(32) {
        let sends = group.iter().map(|&c| {
            let entries = (c * 10..(c * 10 + 10).min(n))
                .map(|i| {
                    let mut env = Envelope::new(topic, body.clone());
                    env.key = Some(format!("k{}", i % 64).into_bytes());
                    SendMessageBatchRequestEntry::builder()
                        .id((i % 10).to_string())
                        .message_body(env.encode())
                        .build()
                        .expect("entry")
                })
                .collect();
            sqs.send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
        });
        for out in futures::future::join_all(sends).await {
            assert!(
                out.expect("send").failed.is_empty(),
                "the queue refused some"
            );
        }
    }
}

/// The baseline: `loops` receive(10) + delete loops until the queue is empty.
async fn bare(sqs: &aws_sdk_sqs::Client, url: &str, loops: usize) -> usize {
    let each = (0..loops).map(|_| async {
        let mut done = 0;
        let mut empty = 0;
        while empty < 2 {
            let got = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(60)
                // What the drain asks for.
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            let entries = got
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = sqs
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("delete");
            done += out.successful.len();
        }
        done
    });
    futures::future::join_all(each).await.into_iter().sum()
}

fn delivered(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"spillway_drain_delivered_total{source="sqs"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn line(run: &str, messages: usize, elapsed: Duration, cpu: Duration, rss: f64, delivered: u64) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "run": run,
            "messages": messages,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "per_s": (messages as f64 / secs).round(),
            "cpu_us_per_msg": (cpu.as_secs_f64() * 1e6 / messages as f64 * 10.0).round() / 10.0,
            "peak_rss_mib": (rss * 10.0).round() / 10.0,
            "delivered": delivered,
        })
    );
}

#[tokio::main]
async fn main() {
    let o = options();
    // The bare loop uses the drain's own SQS client settings.
    let sqs = buffer_drain::lambda::sqs_client(&spillway_tests::sdk().await);
    let url = spillway_tests::fixtures::queue(&sqs, "backlog", false, &[]).await;
    let topic = spillway_tests::unique_name("backlog");

    fill(&sqs, &url, &topic, o.messages, o.bytes).await;
    let (started, cpu0) = (Instant::now(), cpu("self"));
    let done = bare(&sqs, &url, o.loops).await;
    line(
        &format!("bare aws-sdk-sqs receive + delete, {} loops", o.loops),
        done,
        started.elapsed(),
        cpu("self").saturating_sub(cpu0),
        0.0,
        0,
    );

    let Some(binary) = o.drain else { return };
    fill(&sqs, &url, &topic, o.messages, o.bytes).await;
    let addr = format!("127.0.0.1:{}", spillway_tests::free_port());
    let started = Instant::now();
    let mut child = std::process::Command::new(&binary)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("SPILLWAY_DLQ_URL")
        .env_remove("SPILLWAY_DLQ_BUCKET")
        .env("SPILLWAY_BUFFER", "sqs")
        .env("SPILLWAY_SQS_QUEUE_URL", &url)
        .env("SPILLWAY_BATCH_SIZE", o.batch.to_string())
        .env("SPILLWAY_BATCH_WINDOW", &o.window)
        .env("SPILLWAY_MAX_CONCURRENCY", o.workers.to_string())
        .env("SPILLWAY_HTTP_ADDR", &addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the drain");
    let pid = child.id().to_string();
    // Timed from readiness (producers made, MSK IAM tokens signed, a broker answering), counting
    // what was still in the queue then: the start-up is the cold start's figure, not this one's.
    while spillway_tests::http_get(&addr, "/readyz").map(|(code, _)| code) != Some(200) {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the drain was not ready in a minute");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (started, cpu0, waiting) = (
        Instant::now(),
        cpu(&pid),
        spillway_tests::queue_depth(&sqs, &url).await,
    );
    while spillway_tests::queue_depth(&sqs, &url).await > 0 {
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("the backlog was not drained in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let (used, rss) = (cpu(&pid).saturating_sub(cpu0), peak_rss_mib(&pid));
    let count = delivered(
        &spillway_tests::http_get(&addr, "/metrics")
            .unwrap_or_default()
            .1,
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = child.wait();
    line(
        &format!(
            "buffer-drain service, {} workers, batch {}, window {}",
            o.workers, o.batch, o.window
        ),
        usize::try_from(waiting).unwrap_or(usize::MAX),
        elapsed,
        used,
        rss,
        count,
    );
}
