//! Service mode (issue 17 item 4): the buffer-drain binary outside Lambda, as a supervisor runs it —
//! `/healthz`, `/readyz`, `/metrics` on `SPILLWAY_HTTP_ADDR`, and a graceful stop on SIGTERM —
//! against the local stack: fauxqs, msk-gate with MSK IAM in front of Tansu.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// The buffer-drain binary, its log file and its HTTP address.
struct Service {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts the drain on the queue at `url` with `env` on top of the stack's environment.
    fn start(url: &str, env: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{}", spillway_tests::free_port());
        let log = std::env::temp_dir().join(format!(
            "{}.log",
            spillway_tests::unique_name("buffer-drain")
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_buffer-drain"))
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("SPILLWAY_DLQ_BUCKET")
            .env_remove("SPILLWAY_DLQ_URL")
            .env("SPILLWAY_BUFFER", "sqs")
            .env("SPILLWAY_SQS_QUEUE_URL", url)
            .env("SPILLWAY_HTTP_ADDR", &addr)
            .env("SPILLWAY_BATCH_SIZE", "10")
            .env("SPILLWAY_MAX_CONCURRENCY", "2")
            .env("SPILLWAY_FUNCTION_TIMEOUT", "5s")
            .env("SPILLWAY_DEADLINE_MARGIN", "1s")
            .envs(env.iter().copied())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start buffer-drain");
        Self { child, addr, log }
    }

    /// Through msk-gate with MSK IAM, as next to MSK.
    fn through_gate(url: &str) -> Self {
        let gate = std::env::var("SPILLWAY_MSK_GATE").unwrap_or_else(|_| "127.0.0.1:9098".into());
        spillway_tests::require("msk-gate", &gate);
        Self::start(
            url,
            &[
                ("SPILLWAY_KAFKA_BOOTSTRAP", &gate),
                ("SPILLWAY_KAFKA_AUTH", "iam"),
            ],
        )
    }

    /// `GET path`: the status code and body; `None` while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        spillway_tests::http_get(&self.addr, path)
    }

    /// Waits until `path` answers `status`; panics with the last answer and the log after `timeout`.
    fn wait_for(&self, path: &str, status: u16, timeout: Duration) -> String {
        self.wait_for_saying(path, status, "", timeout)
    }

    /// Waits until `path` answers `status` with a body containing `saying`.
    fn wait_for_saying(&self, path: &str, status: u16, saying: &str, timeout: Duration) -> String {
        let ends = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < ends {
            last = self.get(path);
            if let Some((code, body)) = &last {
                if *code == status && body.contains(saying) {
                    return body.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{path} did not answer {status} within {timeout:?}; last: {last:?}\nlog:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends the drain the signal `name` (`TERM`, `STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let ends = Instant::now() + timeout;
        while Instant::now() < ends {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "still running {timeout:?} after SIGTERM\nlog:\n{}",
            self.log()
        );
    }
}

/// The value of the sample `name` (with its labels, as written) in a `/metrics` answer: a count.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// A supervisor's view: live and ready once connected through msk-gate with MSK IAM; `/metrics`
/// counts what the EMF lines count; on SIGTERM, in the middle of a backlog, it finishes the batches
/// in flight, deletes what Kafka acknowledged and exits 0 — so every message is either in Kafka or
/// still in the queue, never both. (Before, the binary knew only Ctrl-C and died of SIGTERM
/// mid-batch, leaving delivered messages in the queue to come again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_ready_counts_in_metrics_and_stops_gracefully_on_sigterm() {
    let sqs = spillway_tests::sqs().await;
    let url = spillway_tests::fixtures::queue(&sqs, "service", false, &[]).await;
    let topic = spillway_tests::unique_name("service");
    spillway_tests::fixtures::send_envelopes(&sqs, &url, &topic, 300, |i| Some(format!("k{i}")))
        .await;
    let mut service = Service::through_gate(&url);
    let live = service.wait_for("/healthz", 200, Duration::from_secs(60));
    assert!(live.contains("2 workers"), "{live}");
    service.wait_for("/readyz", 200, Duration::from_secs(30));

    let ends = Instant::now() + Duration::from_secs(60);
    while spillway_tests::queue_depth(&sqs, &url).await > 0 && Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, metrics) = service.get("/metrics").expect("metrics");
    assert_eq!(status, 200);
    let count =
        |name: &str| sample(&metrics, name).unwrap_or_else(|| panic!("{name} in:\n{metrics}"));
    assert_eq!(count(r#"spillway_drain_received_total{source="sqs"}"#), 300);
    assert_eq!(
        count(r#"spillway_drain_delivered_total{source="sqs"}"#),
        300
    );
    assert_eq!(
        count(r#"spillway_drain_dead_lettered_total{source="sqs"}"#),
        0
    );
    assert_eq!(
        count(r#"spillway_drain_produce_latency_seconds_count{source="sqs"}"#),
        300
    );
    assert!(count(r#"spillway_drain_batches_total{source="sqs"}"#) >= 30);
    assert_eq!(count("spillway_drain_workers"), 2);
    assert!(
        metrics.contains("spillway_drain_backlog_messages "),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text");

    // SIGTERM in the middle of a backlog. The drain keeps pace with a sender, so it is paused
    // while the second wave goes in: the whole wave is waiting when it resumes.
    service.signal("STOP");
    spillway_tests::fixtures::send_envelopes(&sqs, &url, &topic, 1_000, |i| Some(format!("k{i}")))
        .await;
    service.signal("CONT");
    let ends = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = service.get("/metrics").expect("metrics");
        if sample(&metrics, r#"spillway_drain_delivered_total{source="sqs"}"#) > Some(400)
            || Instant::now() > ends
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the bound (20 s): a 5 s batch, then 15 s for the receive under way and handing it back.
    let status = service.terminate(Duration::from_secs(25));
    assert_eq!(status.code(), Some(0), "log:\n{}", service.log());
    assert!(service.get("/healthz").is_none(), "stopped listening");

    let left = spillway_tests::queue_depth(&sqs, &url).await;
    assert!(left > 0, "stopped before the backlog was gone: {left}");
    let summary = common::consume(
        &spillway_tests::kafka_bootstrap(),
        &topic,
        1_300,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(summary.duplicates, 0, "{summary:?}");
    assert_eq!(
        summary.with_trace_context, summary.unique_ids,
        "every record carries a traceparent: {summary:?}"
    );
    assert_eq!(
        summary.unique_ids + left,
        1_300,
        "every message in Kafka or in the queue, never both: {summary:?}, {left} in the queue"
    );
}

/// `/readyz` answers 503 and says why while no broker answers; `/healthz` still says live (the
/// workers run and would deliver once the broker is back). A port in use stops the drain at start.
#[tokio::test]
async fn without_a_broker_the_service_is_live_but_not_ready_and_says_why() {
    let sqs = spillway_tests::sqs().await;
    let url = spillway_tests::fixtures::queue(&sqs, "service", false, &[]).await;
    let nowhere = format!("127.0.0.1:{}", spillway_tests::free_port());
    let mut service = Service::start(
        &url,
        &[
            ("SPILLWAY_KAFKA_BOOTSTRAP", &nowhere),
            ("SPILLWAY_KAFKA_AUTH", "plaintext"),
        ],
    );
    service.wait_for("/healthz", 200, Duration::from_secs(60));
    // First "not probed yet", then the probe's finding.
    service.wait_for_saying(
        "/readyz",
        503,
        "no broker answered a metadata request",
        Duration::from_secs(30),
    );
    let status = service.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", service.log());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("address").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_buffer-drain"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("SPILLWAY_BUFFER", "sqs")
        .env("SPILLWAY_SQS_QUEUE_URL", &url)
        .env("SPILLWAY_KAFKA_BOOTSTRAP", &nowhere)
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .env("SPILLWAY_HTTP_ADDR", &addr)
        .stdout(Stdio::null())
        .output()
        .expect("run buffer-drain");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SPILLWAY_HTTP_ADDR"), "{stderr}");
}
