//! The drain with MSK IAM through gates of the tests' own (each in front of the shared local
//! broker, with its own quotas and chaos switches): bursts over the connection-attempt quota,
//! authentication refused for 30 s, and sessions shorter than a test — nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buffer_drain::config::DrainConfig;
use buffer_drain::drain::Drain;
use buffer_drain::lambda::build_drain;
use buffer_drain::poller::{PollSettings, SqsPoller};
use msk_consumer::local::to_record;
use msk_consumer::verify::Verifier;
use rdkafka::consumer::Consumer as _;
use spillway_core::limits::BufferKind;

mod common;
use common::PrivateGate;

async fn iam_drain(gate: &PrivateGate) -> Drain {
    let config = DrainConfig {
        deadline_margin: Duration::from_millis(500),
        ..DrainConfig::new(BufferKind::Sqs)
    };
    build_drain(&gate.kafka(), &config, None)
        .await
        .expect("IAM drain")
}

/// The visibility timeout is 6× the function timeout, as AWS requires of a queue a Lambda drains
/// (the poller's heartbeat would keep a batch hidden with less).
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
    spillway_tests::fixtures::queue(sqs, "gate-burst", false, &[]).await
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, topic: &str, n: usize) {
    spillway_tests::fixtures::send_envelopes(sqs, url, topic, n, |_| None).await;
}

/// Counts distinct ids on `topic`, read from the broker directly.
async fn count(topic: &str, expect: u64) -> u64 {
    let kafka = spillway_tests::plaintext_kafka(&spillway_tests::kafka_bootstrap());
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

/// Runs `workers` (poller, drain) pairs until the queue at `url` is empty (once `sent` is done)
/// or `timeout`; returns the backoffs the drains made. A failed poll (the gate refusing) is
/// simply polled again.
async fn run_workers(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    workers: Vec<(SqsPoller, Drain)>,
    sent: impl std::future::Future<Output = ()>,
    timeout: Duration,
) -> u64 {
    let pairs: Vec<Arc<(SqsPoller, Drain)>> = workers.into_iter().map(Arc::new).collect();
    let polls = pairs
        .iter()
        .map(|pair| {
            let pair = pair.clone();
            move || {
                let pair = pair.clone();
                async move {
                    let _ = pair.0.poll_once(&pair.1).await;
                }
            }
        })
        .collect();
    spillway_tests::poll_until_empty(sqs, url, polls, sent, timeout).await;
    pairs.iter().map(|pair| pair.1.backoffs()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_connection_quota_loses_nothing() {
    let gate = PrivateGate::start(common::GATE, &["--max-connects-per-sec", "5"]);
    let sqs = spillway_tests::sqs().await;
    let url = queue(&sqs).await;
    let topic = spillway_tests::unique_name("burst");
    send(&sqs, &url, &topic, 1000).await;
    let mut workers = Vec::new();
    for _ in 0..50 {
        let poller = SqsPoller::new(sqs.clone(), url.clone(), settings())
            .await
            .expect("poller");
        workers.push((poller, iam_drain(&gate).await));
    }
    let backoffs = run_workers(
        &sqs,
        &url,
        workers,
        std::future::ready(()),
        Duration::from_secs(240),
    )
    .await;
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
    let gate = PrivateGate::start(common::GATE, &[]);
    let sqs = spillway_tests::sqs().await;
    let url = queue(&sqs).await;
    let topic = spillway_tests::unique_name("refused");
    send(&sqs, &url, &topic, 100).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let poller = SqsPoller::new(sqs.clone(), url.clone(), settings())
            .await
            .expect("poller");
        workers.push((poller, iam_drain(&gate).await));
    }
    // Mid-stream: refuse every authentication for 30 s and cut every connection; keep sending.
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        gate.admin("POST", "/chaos/refuse-auth?seconds=30");
        gate.admin("POST", "/chaos/drop-connections");
        send(&sqs, &url, &topic, 200).await;
    };
    let backoffs = run_workers(&sqs, &url, workers, chaos, Duration::from_secs(180)).await;
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
    let gate = PrivateGate::start(common::GATE, &["--max-session-secs", "3"]);
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
