//! Connection and authentication attempts per 10,000 messages through a gate of its own, in one
//! run: spillway's drain (one producer per container, batches of 100) vs. a producer configured
//! like the AWS sample (`connections.max.idle.ms=60`, one message and one flush per invocation).
//! Invocations are 100 ms apart, like a steady trickle of Lambda invocations.
//!
//! `cargo bench -p msk-gate --bench connections` (needs `local/up` and its environment). Prints a
//! table; asserts nothing.

// Counts here are far below 2^52: converting them to f64 loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use buffer_drain::drain::Drain;
use buffer_drain::message::Decoding;
use buffer_drain::source::{Ordering, SourceRecord};
use rdkafka::producer::{FutureRecord, Producer as _};
use spillway_core::config::KafkaConfig;
use spillway_core::envelope::{Envelope, RawMode};
use spillway_tests::fixtures::PrivateGate;

const GAP: Duration = Duration::from_millis(100);
const SPILLWAY_MESSAGES: usize = 10_000;
const BATCH: usize = 100;
/// The sample pays a new connection per invocation; 100 invocations already show the rate.
const SAMPLE_MESSAGES: usize = 100;

/// The gate's (connection attempts, authentication attempts) so far.
fn stats(gate: &PrivateGate) -> (u64, u64) {
    (
        gate.stat("connections_accepted") + gate.stat("connections_throttled"),
        gate.stat("auth_accepted") + gate.stat("auth_refused"),
    )
}

#[tokio::main]
async fn main() {
    let gate = PrivateGate::start(env!("CARGO_BIN_EXE_msk-gate"), &[]);
    let kafka = gate.kafka();
    let topic = format!("connections-{}", std::process::id());

    let spillway = measure_spillway(&kafka, &gate, &topic).await;
    let aws_sample = measure_sample(&kafka, &gate, &topic).await;

    let per_10k = |n: u64, messages: usize| n as f64 * 10_000.0 / messages as f64;
    println!(
        "connection and authentication attempts at the gate, invocations {} ms apart",
        GAP.as_millis()
    );
    println!("| producer | messages | connections | authentications | connections per 10k msgs | authentications per 10k msgs |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| spillway drain (batches of {BATCH}) | {SPILLWAY_MESSAGES} | {} | {} | {:.0} | {:.0} |",
        spillway.0,
        spillway.1,
        per_10k(spillway.0, SPILLWAY_MESSAGES),
        per_10k(spillway.1, SPILLWAY_MESSAGES)
    );
    println!(
        "| AWS-sample-style (idle 60 ms, flush per message) | {SAMPLE_MESSAGES} | {} | {} | {:.0} | {:.0} |",
        aws_sample.0,
        aws_sample.1,
        per_10k(aws_sample.0, SAMPLE_MESSAGES),
        per_10k(aws_sample.1, SAMPLE_MESSAGES)
    );
}

/// spillway: one producer for the container, a batch per invocation. Returns the gate's
/// (connections, authentications) during the run.
async fn measure_spillway(kafka: &KafkaConfig, gate: &PrivateGate, topic: &str) -> (u64, u64) {
    let before = stats(gate);
    let (producer, health) = spillway_core::kafka::producer(kafka)
        .await
        .expect("producer");
    let drain = Drain::new(
        producer,
        health,
        None,
        Decoding {
            raw: RawMode::Reject,
            raw_topic: None,
        },
    );
    for batch in 0..SPILLWAY_MESSAGES / BATCH {
        let records: Vec<SourceRecord> = (0..BATCH)
            .map(|i| SourceRecord {
                item_id: format!("m-{batch}-{i}"),
                group: None,
                data: Envelope::new(topic, format!("message {batch}/{i}"))
                    .encode()
                    .into_bytes(),
                buffered_at_ms: None,
                trace: None,
                source: "bench".into(),
            })
            .collect();
        let report = drain
            .drain(
                &records,
                Ordering::Unordered,
                Instant::now() + Duration::from_secs(30),
            )
            .await;
        assert_eq!(report.failed().count(), 0);
        tokio::time::sleep(GAP).await;
    }
    let after = stats(gate);
    (after.0 - before.0, after.1 - before.1)
}

/// The AWS sample's producer: connections idle out after 60 ms, librdkafka's default reconnect
/// backoff (100 ms), one message and one flush per invocation.
async fn measure_sample(kafka: &KafkaConfig, gate: &PrivateGate, topic: &str) -> (u64, u64) {
    let before = stats(gate);
    let mut settings = spillway_core::kafka::client_config(kafka).expect("settings");
    settings
        .set("connections.max.idle.ms", "60")
        .set("reconnect.backoff.ms", "100")
        .set("acks", "all");
    let (context, _refresher) = spillway_core::kafka::context_for(kafka)
        .await
        .expect("context");
    let sample: spillway_core::kafka::Producer =
        settings.create_with_context(context).expect("producer");
    for i in 0..SAMPLE_MESSAGES {
        let value = format!("sample {i}");
        sample
            .send(
                FutureRecord::to(topic).key("k").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
        sample.flush(Duration::from_secs(10)).expect("flush");
        tokio::time::sleep(GAP).await;
    }
    let after = stats(gate);
    (after.0 - before.0, after.1 - before.1)
}
