//! The drain with MSK IAM through gates of the tests' own (each in front of the shared local
//! broker, with its own quotas and chaos switches): bursts over the connection-attempt quota,
//! authentication refused for 30 s, and sessions shorter than a test — nothing is lost.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use buffer_drain::drain::Drain;
use buffer_drain::lambda::build_drain;
use buffer_drain::poller::{PollSettings, SqsPoller};
use msk_consumer::local::to_record;
use msk_consumer::verify::Verifier;
use rdkafka::consumer::Consumer as _;
use spillway_core::config::{Compression, DrainConfig, KafkaAuth, KafkaConfig};
use spillway_core::envelope::{Envelope, RawMode};
use spillway_core::limits::BufferKind;

/// An msk-gate of the test's own, killed when dropped.
struct PrivateGate {
    child: Child,
    bootstrap: String,
    admin: String,
    ca_file: String,
}

impl PrivateGate {
    fn start(extra: &[&str]) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("port")
        };
        let (listen, admin) = (
            format!("127.0.0.1:{}", port()),
            format!("127.0.0.1:{}", port()),
        );
        let ca_file =
            std::env::temp_dir().join(format!("{}.pem", spillway_tests::unique_name("gate-ca")));
        let broker = spillway_tests::kafka_bootstrap();
        spillway_tests::require("Kafka (Tansu)", &broker);
        let child = Command::new(env!("CARGO_BIN_EXE_msk-gate"))
            .args(["--listen", &listen, "--admin", &admin, "--broker", &broker])
            .args([
                "--ca-file",
                &ca_file.to_string_lossy(),
                "--access-key",
                "test",
                "--secret-key",
                "test",
                "--region",
                "us-east-1",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start msk-gate");
        let gate = Self {
            child,
            bootstrap: listen,
            admin: format!("http://{admin}"),
            ca_file: ca_file.to_string_lossy().into_owned(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&gate.bootstrap).is_ok()
                && std::path::Path::new(&gate.ca_file).exists()
            {
                return gate;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private gate did not start");
    }

    fn kafka(&self) -> KafkaConfig {
        KafkaConfig {
            bootstrap: self.bootstrap.clone(),
            auth: KafkaAuth::Iam,
            compression: Compression::Lz4,
            message_max_bytes: 1_000_000,
            ca_file: Some(self.ca_file.clone()),
            token_refresh: Duration::from_secs(300),
            max_connects_per_sec: 100,
        }
    }

    fn admin(&self, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", "-X", method, &format!("{}{path}", self.admin)])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn stat(&self, name: &str) -> u64 {
        self.admin("GET", "/stats")[name].as_u64().expect("counter")
    }
}

impl Drop for PrivateGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

async fn iam_drain(gate: &PrivateGate, sqs: &aws_sdk_sqs::Client) -> Drain {
    let config = DrainConfig {
        source: BufferKind::Sqs,
        raw_mode: RawMode::Reject,
        deadline_margin: Duration::from_millis(500),
        dlq_url: None,
        raw_topic: None,
    };
    build_drain(&gate.kafka(), &config, Some(sqs.clone()))
        .await
        .expect("IAM drain")
}

/// The visibility timeout is 6× the function timeout, as AWS requires of a queue a Lambda drains:
/// a batch still being worked on never reappears to another worker.
fn settings() -> PollSettings {
    PollSettings {
        batch_size: 10,
        batch_window: Duration::ZERO,
        visibility_timeout: Duration::from_secs(12),
        function_timeout: Duration::from_secs(2),
        deadline_margin: Duration::from_millis(500),
    }
}

async fn queue(sqs: &aws_sdk_sqs::Client) -> String {
    let name = spillway_tests::unique_name("gate-burst");
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url")
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, topic: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let env = Envelope::new(topic, format!("burst {i}"));
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(env.encode())
                    .build()
                    .expect("entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
    }
}

/// Counts distinct ids on `topic`, read from the broker directly.
async fn count(topic: &str, expect: u64) -> u64 {
    let kafka = KafkaConfig {
        bootstrap: spillway_tests::kafka_bootstrap(),
        auth: KafkaAuth::Plaintext,
        compression: Compression::None,
        message_max_bytes: 1_000_000,
        ca_file: None,
        token_refresh: Duration::from_secs(300),
        max_connects_per_sec: 100,
    };
    let consumer = msk_consumer::config::consumer(&kafka, &spillway_tests::unique_name("count"))
        .await
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut verifier = Verifier::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while verifier.unique() < expect {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(m) => verifier.observe(&to_record(&m.expect("consume")), 0),
            Err(_) => break,
        }
    }
    verifier.unique()
}

/// Runs `workers` (poller, drain) pairs until `total` records left the queue or `timeout`;
/// returns the drains' backoff count.
async fn run_workers(workers: Vec<(SqsPoller, Drain)>, total: usize, timeout: Duration) -> u64 {
    let done = Arc::new(AtomicUsize::new(0));
    let ends = Instant::now() + timeout;
    let mut set = tokio::task::JoinSet::new();
    for (poller, drain) in workers {
        let done = done.clone();
        set.spawn(async move {
            while done.load(Ordering::SeqCst) < total && Instant::now() < ends {
                if let Ok(invocation) = poller.poll_once(&drain).await {
                    done.fetch_add(invocation.done, Ordering::SeqCst);
                }
            }
            drain.backoffs()
        });
    }
    let mut backoffs = 0;
    while let Some(b) = set.join_next().await {
        backoffs += b.expect("worker");
    }
    // At least once: a record can leave the queue twice if its first batch outlived the
    // visibility timeout; the consumer-side count below checks that none is missing.
    assert!(
        done.load(Ordering::SeqCst) >= total,
        "every record left the queue"
    );
    backoffs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_connection_quota_loses_nothing() {
    let gate = PrivateGate::start(&["--max-connects-per-sec", "5"]);
    let sqs = spillway_tests::sqs().await;
    let url = queue(&sqs).await;
    let topic = spillway_tests::unique_name("burst");
    send(&sqs, &url, &topic, 1000).await;
    let mut workers = Vec::new();
    for _ in 0..50 {
        let poller = SqsPoller::new(sqs.clone(), url.clone(), settings())
            .await
            .expect("poller");
        workers.push((poller, iam_drain(&gate, &sqs).await));
    }
    let backoffs = run_workers(workers, 1000, Duration::from_secs(240)).await;
    assert!(
        gate.stat("connections_throttled") > 0,
        "the burst went over the quota"
    );
    assert!(
        backoffs > 0,
        "the drains backed off after refused connections"
    );
    assert_eq!(count(&topic, 1000).await, 1000, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_refused_authentication_loses_nothing() {
    let gate = PrivateGate::start(&[]);
    let sqs = spillway_tests::sqs().await;
    let url = queue(&sqs).await;
    let topic = spillway_tests::unique_name("refused");
    send(&sqs, &url, &topic, 100).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let poller = SqsPoller::new(sqs.clone(), url.clone(), settings())
            .await
            .expect("poller");
        workers.push((poller, iam_drain(&gate, &sqs).await));
    }
    // Mid-stream: refuse every authentication for 30 s and cut every connection; keep sending.
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        gate.admin("POST", "/chaos/refuse-auth?seconds=30");
        gate.admin("POST", "/chaos/drop-connections");
        send(&sqs, &url, &topic, 200).await;
    };
    let (backoffs, ()) = tokio::join!(run_workers(workers, 300, Duration::from_secs(180)), chaos);
    assert!(
        gate.stat("auth_refused") > 0,
        "authentications were refused"
    );
    assert!(backoffs > 0, "the drains backed off");
    assert_eq!(
        count(&topic, 300).await,
        300,
        "nothing lost; delivery resumed by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_sessions_and_token_refreshes_keep_producing() {
    let gate = PrivateGate::start(&["--max-session-secs", "3"]);
    let mut kafka = gate.kafka();
    kafka.token_refresh = Duration::from_secs(2);
    let (producer, _health) = spillway_core::kafka::producer(&kafka)
        .await
        .expect("producer");
    let topic = spillway_tests::unique_name("sessions");
    let ends = Instant::now() + Duration::from_secs(12);
    let mut sent = 0;
    while Instant::now() < ends {
        let value = format!("m{sent}");
        let record = rdkafka::producer::FutureRecord::to(&topic)
            .key("k")
            .payload(&value);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered across re-authentications");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        gate.stat("auth_accepted") >= 3,
        "sessions of 3 s over 12 s mean re-authentication"
    );
    assert!(sent > 30);
}
