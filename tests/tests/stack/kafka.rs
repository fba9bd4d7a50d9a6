//! rdkafka against Tansu. Relies on: CreateTopics, idempotent produce with acks=all (InitProducerId),
//! record headers, consumer groups (join, sync, offset commit). Tansu's ListOffsets(LATEST) can be
//! off by a batch, so the test counts consumed records instead of reading the high watermark.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use spillway_tests::{kafka_bootstrap, require, unique_name};

const RECORDS: usize = 300;

fn client_config() -> ClientConfig {
    let bootstrap = kafka_bootstrap();
    require("Kafka (Tansu)", &bootstrap);
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &bootstrap);
    config
}

#[tokio::test]
async fn idempotent_produce_then_consumer_group_consume_with_headers() {
    let topic = unique_name("topic");
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let key = format!("key-{}", i % 10);
        let value = format!("value-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "spillway-id",
                value: Some(&format!("id-{i}")),
            })
            .insert(Header {
                key: "binary",
                value: Some(&[0u8, 0xFF][..]),
            });
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        deliveries.push(producer.send_result(record).expect("enqueue"));
    }
    for delivery in deliveries {
        let delivered = delivery.await.expect("delivery future");
        assert!(
            delivered.is_ok(),
            "acks=all delivery failed: {:?}",
            delivered.err()
        );
    }

    // session.timeout.ms=6000: Tansu's coordinator waits half of it before the first join.
    let consumer: StreamConsumer = client_config()
        .set("group.id", unique_name("group"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "true")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < RECORDS {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {RECORDS} records consumed in time", seen.len()))
            .expect("consume");
        let headers = message.headers().expect("headers");
        let mut by_name = HashMap::new();
        for header in headers.iter() {
            by_name.insert(header.key.to_owned(), header.value.map(<[u8]>::to_vec));
        }
        assert_eq!(by_name.get("binary"), Some(&Some(vec![0u8, 0xFF])));
        let id =
            String::from_utf8(by_name["spillway-id"].clone().expect("id value")).expect("utf-8 id");
        let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
        let value =
            String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf-8 value");
        seen.insert(id, (key, value));
    }
    for i in 0..RECORDS {
        assert_eq!(
            seen[&format!("id-{i}")],
            (format!("key-{}", i % 10), format!("value-{i}"))
        );
    }
}
