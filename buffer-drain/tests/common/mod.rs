//! What the drain's stack tests share: the broker settings and reading a topic back.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use msk_consumer::local::to_record;
use msk_consumer::verify::{Summary, Verifier};
use rdkafka::consumer::Consumer as _;
use spillway_core::config::KafkaConfig;

/// Plaintext to the broker at `bootstrap`, once it answers.
pub fn kafka(bootstrap: &str) -> KafkaConfig {
    spillway_tests::require("Kafka", bootstrap);
    spillway_tests::plaintext_kafka(bootstrap)
}

/// Reads `topic` until `expect` unique ids or `timeout`.
pub async fn consume(bootstrap: &str, topic: &str, expect: u64, timeout: Duration) -> Summary {
    let consumer =
        msk_consumer::config::consumer(&kafka(bootstrap), &spillway_tests::unique_name("check"))
            .await
            .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut verifier = Verifier::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while verifier.unique() < expect {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                verifier.observe(&to_record(&message), spillway_core::envelope::now_ms());
            }
            // Subscribed before the drain's first record created the topic.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => {}
            Ok(Err(e)) => panic!("consume: {e}"),
            Err(_) => return verifier.summary(true),
        }
    }
    // Linger briefly so duplicates right behind the last new id are counted too.
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
    {
        verifier.observe(&to_record(&message), spillway_core::envelope::now_ms());
    }
    verifier.summary(false)
}

/// Reads `n` records of `topic` (each as msk-consumer sees it), or panics after `timeout`.
pub async fn records(
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<msk_consumer::record::ConsumedRecord> {
    let consumer =
        msk_consumer::config::consumer(&kafka(bootstrap), &spillway_tests::unique_name("check"))
            .await
            .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut records = Vec::with_capacity(n);
    while records.len() < n {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => records.push(to_record(&message)),
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => {}
            Ok(Err(e)) => panic!("consume: {e}"),
            Err(elapsed) => panic!(
                "{} of {n} records of {topic} arrived ({elapsed})",
                records.len()
            ),
        }
    }
    records
}
