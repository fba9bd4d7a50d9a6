//! The accounting counts what the topic holds. A live consumer can miss records that are in the
//! topic (seen in a spike run on Tansu: `lost` 20 while a re-read of the topic found all 62,000
//! ids); the re-read finds them, and a record delivered twice is counted once more as a duplicate.
//! Needs the local stack's plain broker (`SPILLWAY_KAFKA_BOOTSTRAP`).

use std::time::{Duration, Instant};

use loadtest::observe::{reread, Observed};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn ids_the_live_consumer_missed_are_found_in_the_topic_and_not_counted_lost() {
    let bootstrap = std::env::var("SPILLWAY_KAFKA_BOOTSTRAP")
        .expect("SPILLWAY_KAFKA_BOOTSTRAP: start the stack with local/up");
    let topic = format!("reread-{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin");
    // Four partitions, one of which stays empty (its high watermark is 0: nothing to wait for).
    admin
        .create_topics(
            [&NewTopic::new(&topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("topic");
    let start = Instant::now();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    let ids: Vec<String> = (0..300).map(|n| format!("id-{n:04}")).collect();
    // Every id once, and id-0007 a second time (a redelivery).
    for (n, id) in ids.iter().chain(std::iter::once(&ids[7])).enumerate() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "spillway-id",
            value: Some(id.as_bytes()),
        });
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(i32::try_from(n % 3).expect("small"))
                    .payload("v")
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }

    let all = reread(&bootstrap, &topic, start, Duration::from_secs(30))
        .await
        .expect("re-read");
    assert_eq!(all.arrivals.len(), 300, "every id is in the topic");
    assert_eq!(all.verifier.summary(false).duplicates, 1);
    assert!(
        all.arrivals.values().all(|&at| at < 60_000),
        "arrivals are ms after the start"
    );

    // The live consumer saw all but the last 50, and none twice.
    let mut live = Observed::default();
    for id in &ids[..250] {
        live.arrivals.insert(id.clone(), 1);
    }
    assert_eq!(live.complete(all), 50);
    assert_eq!(live.missed_live, 50);
    assert!(ids.iter().all(|id| live.arrivals.contains_key(id)));
    assert_eq!(
        live.arrivals[&ids[0]], 1,
        "what the live consumer saw keeps its time"
    );
    assert_eq!(
        live.verifier.summary(false).duplicates,
        1,
        "duplicates are counted from the re-read"
    );
}
