//! `spillway replay` against the local stack: 1,000 dead letters back to their queue and to Kafka,
//! a dry run that moves nothing, and a replay killed halfway (`kill -9`) then run again — nothing
//! lost, duplicates carrying their original `spillway-id`.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use rdkafka::consumer::Consumer as _;
use spillway_core::envelope::{decode, Decoded, Envelope, RawMode};

const N: usize = 1000;

async fn queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    sqs.create_queue()
        .queue_name(spillway_tests::unique_name(prefix))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url")
}

/// Fills a DLQ with `N` envelopes for `topic`; one in ten has the reason "kafka: not authorised".
async fn fill_dlq(sqs: &aws_sdk_sqs::Client, dlq: &str, topic: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let env = Envelope::new(topic, format!("dead letter {i}"));
                ids.insert(env.id.clone());
                let reason = if i % 10 == 0 {
                    "kafka: not authorised"
                } else {
                    "undecodable: malformed envelope"
                };
                let attr = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(reason)
                    .build()
                    .expect("attr");
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(env.encode())
                    .message_attributes("spillway-reason", attr)
                    .build()
                    .expect("entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(dlq)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
    }
    ids
}

fn spillway(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spillway"));
    command
        .arg("replay")
        .args(args)
        .env("AWS_ENDPOINT_URL_SQS", spillway_tests::sqs_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    command
}

fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}

async fn drain_ids(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
        }
        for m in messages {
            if let Ok(Decoded::Envelope(env)) =
                decode(m.body().unwrap_or_default().as_bytes(), RawMode::Reject)
            {
                ids.push(env.id);
            }
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_then_a_replay_to_the_source_queue_moves_every_message_once() {
    let sqs = spillway_tests::sqs().await;
    let (dlq, source) = (
        queue(&sqs, "replay-dlq").await,
        queue(&sqs, "replay-src").await,
    );
    let sent = fill_dlq(&sqs, &dlq, "orders").await;

    let dry = summary(
        &spillway(&[
            "--dlq-url",
            &dlq,
            "--to-queue",
            &source,
            "--reason",
            "not authorised",
            "--dry-run",
        ])
        .output()
        .expect("run"),
    );
    assert_eq!(dry["would_move"], 100, "{dry}");
    assert_eq!(dry["moved"], 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        spillway_tests::queue_depth(&sqs, &source).await,
        0,
        "a dry run moves nothing"
    );

    let done = summary(
        &spillway(&["--dlq-url", &dlq, "--to-queue", &source])
            .output()
            .expect("run"),
    );
    assert_eq!(done["moved"], N, "{done}");
    let ids = drain_ids(&sqs, &source).await;
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        sent,
        "every dead letter is back, with its id"
    );
    assert_eq!(spillway_tests::queue_depth(&sqs, &dlq).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_halfway_and_run_again_loses_nothing() {
    let sqs = spillway_tests::sqs().await;
    let (dlq, source) = (
        queue(&sqs, "replay-dlq").await,
        queue(&sqs, "replay-src").await,
    );
    let sent = fill_dlq(&sqs, &dlq, "orders").await;

    let mut first = spillway(&[
        "--dlq-url",
        &dlq,
        "--to-queue",
        &source,
        "--rate",
        "200",
        "--visibility-timeout",
        "2s",
    ])
    .spawn()
    .expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .expect("kill");
    let _ = first.wait();
    // What the killed run had in flight reappears after its visibility timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    summary(
        &spillway(&["--dlq-url", &dlq, "--to-queue", &source])
            .output()
            .expect("rerun"),
    );

    let ids = drain_ids(&sqs, &source).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique, sent, "nothing lost");
    assert!(
        ids.len() - unique.len() <= 10,
        "duplicates at most the in-flight window: {}",
        ids.len() - unique.len()
    );
    assert_eq!(spillway_tests::queue_depth(&sqs, &dlq).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_to_kafka_produces_every_message_with_its_id() {
    let sqs = spillway_tests::sqs().await;
    let dlq = queue(&sqs, "replay-dlq").await;
    let topic = spillway_tests::unique_name("replayed");
    let sent = fill_dlq(&sqs, &dlq, &topic).await;
    let bootstrap = spillway_tests::kafka_bootstrap();
    let out = spillway(&["--dlq-url", &dlq, "--to-kafka"])
        .env("SPILLWAY_KAFKA_BOOTSTRAP", &bootstrap)
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .output()
        .expect("run");
    assert_eq!(summary(&out)["moved"], N);
    assert_eq!(spillway_tests::queue_depth(&sqs, &dlq).await, 0);

    let kafka = spillway_core::config::KafkaConfig {
        bootstrap,
        auth: spillway_core::config::KafkaAuth::Plaintext,
        compression: spillway_core::config::Compression::None,
        message_max_bytes: 1_000_000,
        ca_file: None,
        token_refresh: Duration::from_secs(300),
        max_connects_per_sec: 100,
    };
    let consumer =
        msk_consumer::config::consumer(&kafka, &spillway_tests::unique_name("replay-check"))
            .await
            .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut verifier = msk_consumer::verify::Verifier::default();
    while verifier.unique() < N as u64 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("in time")
            .expect("consume");
        verifier.observe(&msk_consumer::local::to_record(&message), 0);
    }
    assert_eq!(verifier.unique(), sent.len() as u64);
}
