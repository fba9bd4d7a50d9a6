//! Local mode and `verify` against the local broker (Tansu), with random topic names.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use msk_consumer::config::consumer;
use msk_consumer::handler::{HandlerError, RecordHandler};
use msk_consumer::local::{run, Batching};
use msk_consumer::record::ConsumedRecord;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use spillway_core::config::{Compression, KafkaConfig};
use spillway_core::envelope::now_ms;

fn kafka() -> KafkaConfig {
    let bootstrap = spillway_tests::kafka_bootstrap();
    spillway_tests::require("Kafka (Tansu)", &bootstrap);
    spillway_tests::plaintext_kafka(&bootstrap).with_compression(Compression::None)
}

/// Produces `(id, key)` records to `topic` with spillway headers, acks=all, one at a time.
async fn produce(topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka().bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let received_at = now_ms().to_string();
    for (id, key) in records {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "spillway-id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "spillway-received-at",
                value: Some(received_at.as_str()),
            });
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(id)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<ConsumedRecord>>);

impl RecordHandler for Collect {
    async fn handle(&self, record: &ConsumedRecord) -> Result<(), HandlerError> {
        self.0.lock().expect("lock").push(record.clone());
        Ok(())
    }
}

#[tokio::test]
async fn local_mode_sees_every_record_once() {
    let topic = spillway_tests::unique_name("consume");
    let sent: Vec<(String, String)> = (0..200)
        .map(|i| (format!("id-{i:04}"), format!("key-{}", i % 7)))
        .collect();
    produce(&topic, &sent).await;

    let consumer = consumer(&kafka(), &spillway_tests::unique_name("group"))
        .await
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let handler = Collect::default();
    let done = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while handler.0.lock().expect("lock").len() < sent.len()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut batches = 0;
    run(&consumer, &handler, Batching::default(), done, |report| {
        batches += 1;
        assert!(report.failures.is_empty());
    })
    .await
    .expect("consume");
    let got = handler.0.lock().expect("lock").clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for record in &got {
        *counts.entry(record.spillway_id().expect("id")).or_default() += 1;
    }
    assert_eq!(counts.len(), sent.len(), "every record arrived");
    assert!(counts.values().all(|n| *n == 1), "each exactly once");
    assert!(
        batches >= 2,
        "records were grouped into batches of at most 100"
    );
    for record in &got {
        assert_eq!(
            record.value.as_deref(),
            Some(record.spillway_id().expect("id").as_bytes())
        );
    }
}

#[tokio::test]
async fn verify_reports_injected_duplicates_and_order_violations() {
    let topic = spillway_tests::unique_name("verify");
    // One partition, so the produced order is the consumed order.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", kafka().bootstrap)
            .create()
            .expect("admin");
    let topics = [rdkafka::admin::NewTopic::new(
        &topic,
        1,
        rdkafka::admin::TopicReplication::Fixed(1),
    )];
    admin
        .create_topics(&topics, &rdkafka::admin::AdminOptions::new())
        .await
        .expect("create topic");
    let mut records: Vec<(String, String)> = (0..50)
        .map(|i| (format!("id-{i:04}"), "k".to_owned()))
        .collect();
    records.push(("id-0010".into(), "k".into())); // duplicate
    records.push(("id-0011".into(), "k".into())); // duplicate
    records.push(("id-0005a".into(), "k".into())); // new id sorting before id-0049 in key k: out of order
    produce(&topic, &records).await;

    let out = Command::new(env!("CARGO_BIN_EXE_msk-consumer"))
        .args([
            "verify",
            "--topic",
            &topic,
            "--expect",
            "51",
            "--timeout",
            "60s",
        ])
        .env("SPILLWAY_KAFKA_BOOTSTRAP", kafka().bootstrap)
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    assert_eq!(summary["unique_ids"], 51);
    assert_eq!(summary["duplicates"], 2);
    assert_eq!(summary["order_violations"], 1);
    assert_eq!(summary["timed_out"], false);
    assert!(summary["latency_ms"]["p50"].is_u64());
    assert!(summary["latency_ms"]["max"].as_u64() >= summary["latency_ms"]["p99"].as_u64());
}
