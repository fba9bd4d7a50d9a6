//! The custom resource's requests against the local broker through msk-gate, with MSK IAM
//! (the environment `local/up` exports): Create makes the topic, Update never deletes, Delete removes the topic only when `DeleteOnStackDelete` is true.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use topic_resource::{handle, Request};

fn request(kind: &str, topic: &str, partitions: u32, delete_with_stack: bool) -> Request {
    let gate = std::env::var("SPILLWAY_MSK_GATE").unwrap_or_else(|_| "127.0.0.1:9098".into());
    spillway_tests::require("msk-gate", &gate);
    serde_json::from_value(serde_json::json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/spillway/1",
        "RequestId": "r-1",
        "LogicalResourceId": "Topic",
        "PhysicalResourceId": "spillway-topic/Topic",
        "ResourceType": "Custom::SpillwayTopic",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
            "Topic": topic,
            "Partitions": partitions.to_string(),
            "Bootstrap": gate,
            "DeleteOnStackDelete": delete_with_stack.to_string(),
            "Config": {"retention.ms": "3600000"}
        }
    }))
    .expect("a request")
}

/// Partitions of `topic` as the plain broker sees it, `None` when it does not exist.
fn partitions(topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", spillway_tests::kafka_bootstrap())
        .create()
        .expect("client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_and_delete_follow_the_stack_without_losing_the_topic() {
    let topic = spillway_tests::unique_name("cr");
    let created = handle(request("Create", &topic, 3, false))
        .await
        .expect("create");
    assert_eq!(created.physical_id, "spillway-topic/Topic");
    assert!(!created.data.bootstrap.is_empty());
    assert_eq!(partitions(&topic), Some(3));

    // Creating again (a retried request) and an Update with the same settings change nothing.
    handle(request("Create", &topic, 3, false))
        .await
        .expect("create again");
    let updated = handle(request("Update", &topic, 3, false))
        .await
        .expect("update");
    assert_eq!(
        updated.physical_id, created.physical_id,
        "stable physical id"
    );
    assert_eq!(partitions(&topic), Some(3));
    // More partitions go through CreatePartitions, which the local broker (Tansu 0.6) does not
    // implement: the Update fails with the operation and the broker's answer, and deletes nothing.
    let refused = handle(request("Update", &topic, 4, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with(&format!("add partitions to topic {topic}:")),
        "{refused}"
    );
    assert_eq!(partitions(&topic), Some(3));

    // A renamed topic: the new one is made, the old one stays.
    let renamed = spillway_tests::unique_name("cr-renamed");
    handle(request("Update", &renamed, 2, false))
        .await
        .expect("rename");
    assert_eq!(partitions(&renamed), Some(2));
    assert_eq!(partitions(&topic), Some(3), "Update never deletes");

    // Stack delete: kept unless configured.
    handle(request("Delete", &renamed, 2, false))
        .await
        .expect("delete, kept");
    assert_eq!(partitions(&renamed), Some(2));
    handle(request("Delete", &renamed, 2, true))
        .await
        .expect("delete");
    assert_eq!(partitions(&renamed), None);

    let bad = handle(request("Create", "no spaces allowed", 3, false))
        .await
        .unwrap_err();
    assert!(bad.to_string().starts_with("property Topic:"), "{bad}");
}
