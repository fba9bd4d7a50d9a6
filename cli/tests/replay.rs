//! `spillway replay` against the local stack: 1,000 dead letters back to their queue and to Kafka,
//! a dry run that moves nothing, and a replay killed halfway (`kill -9`) then run again — nothing
//! lost, duplicates carrying their original `spillway-id`. Kinesis on-failure records (shard and
//! sequence range only) read back from a moto stream and replayed to Kafka and to a stream.
//!
//! Over 500 lines on purpose: each target (queue, Kafka, stream) gets its full round trip against
//! the local stack here, side by side, so a difference between targets shows.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use rdkafka::consumer::Consumer as _;
use spillway_core::envelope::{decode, Decoded, Envelope, RawMode};

const N: usize = 1000;

async fn queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    spillway_tests::fixtures::queue(sqs, prefix, false, &[]).await
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
        .env("AWS_ENDPOINT_URL", spillway_tests::aws_endpoint())
        .env(
            "AWS_ENDPOINT_URL_KINESIS",
            spillway_tests::kinesis_endpoint(),
        )
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

/// The first `n` distinct spillway ids on `topic`.
async fn kafka_ids(topic: &str, n: usize) -> HashSet<String> {
    let kafka = spillway_tests::plaintext_kafka(&spillway_tests::kafka_bootstrap())
        .with_compression(spillway_core::config::Compression::None);
    let consumer =
        msk_consumer::config::consumer(&kafka, &spillway_tests::unique_name("replay-check"))
            .await
            .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut ids = HashSet::new();
    while ids.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("in time")
            .expect("consume");
        if let Some(id) = msk_consumer::local::to_record(&message).spillway_id() {
            ids.insert(id.to_owned());
        }
    }
    ids
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
        "10s",
    ])
    .spawn()
    .expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status()
        .expect("kill");
    let _ = first.wait();
    // What the killed run had in flight reappears after its visibility timeout (10 s, the least
    // replay takes).
    tokio::time::sleep(Duration::from_secs(11)).await;
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

    let got = kafka_ids(&topic, N).await;
    assert_eq!(got, sent);
}

/// A stream of `N` envelopes over two shards: the envelopes' ids, and per shard its sequence numbers
/// in order.
async fn fill_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    topic: &str,
) -> (HashSet<String>, Vec<(String, Vec<String>)>) {
    spillway_tests::fixtures::create_stream(kinesis, stream, 2).await;
    let mut ids = HashSet::new();
    let mut shards = std::collections::BTreeMap::<String, Vec<String>>::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(250) {
        let mut entries = Vec::new();
        for i in chunk {
            let env = Envelope::new(topic, format!("kinesis record {i}"));
            entries.push(
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(env.encode()))
                    .partition_key(&env.id)
                    .build()
                    .expect("entry"),
            );
            ids.insert(env.id);
        }
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put");
        for r in out.records {
            shards
                .entry(r.shard_id.expect("shard"))
                .or_default()
                .push(r.sequence_number.expect("sequence number"));
        }
    }
    (ids, shards.into_iter().collect())
}

/// Lambda's on-failure record for a Kinesis batch: where it was, no data.
fn on_failure(stream_arn: &str, shard: &str, first: &str, last: &str, size: usize) -> String {
    serde_json::json!({
        "requestContext": {
            "requestId": "c9b2f1e4-0000-0000-0000-000000000000",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:spillway-drain",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-27T00:38:06.021Z",
        "KinesisBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": first,
            "endSequenceNumber": last,
            "approximateArrivalOfFirstRecord": "2026-11-27T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2026-11-27T00:38:05.580Z",
            "batchSize": size,
            "streamArn": stream_arn
        }
    })
    .to_string()
}

/// The spillway ids of the envelopes in a one-shard stream, in order.
async fn stream_ids(kinesis: &aws_sdk_kinesis::Client, target: &str) -> Vec<String> {
    let shards = spillway_tests::fixtures::shards(kinesis, target).await;
    spillway_tests::fixtures::shard_records(kinesis, target, shards[0].shard_id(), 0)
        .await
        .iter()
        .filter_map(|r| match decode(r.data.as_ref(), RawMode::Reject) {
            Ok(Decoded::Envelope(env)) => Some(env.id),
            _ => None,
        })
        .collect()
}

async fn send(sqs: &aws_sdk_sqs::Client, queue: &str, bodies: Vec<(String, bool)>) {
    for (i, (body, base64)) in bodies.into_iter().enumerate() {
        let mut request = sqs.send_message().queue_url(queue).message_body(body);
        if base64 {
            request = request.message_attributes(
                "spillway-body-encoding",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("base64")
                    .build()
                    .expect("attr"),
            );
        }
        request
            .message_attributes(
                "spillway-original-id",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(format!("dead-lettered-{i}"))
                    .build()
                    .expect("attr"),
            )
            .send()
            .await
            .expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_on_failure_records_are_read_back_from_the_stream_and_replayed() {
    use base64::Engine as _;
    let (sqs, kinesis) = (spillway_tests::sqs().await, spillway_tests::kinesis().await);
    let topic = spillway_tests::unique_name("kinesis-replayed");
    let stream = spillway_tests::unique_name("replay-stream");
    let (mut sent, shards) = fill_stream(&kinesis, &stream, &topic).await;
    let arn = kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("describe")
        .stream_description_summary
        .expect("summary")
        .stream_arn;
    // Pointers to batches of at most 100 records, as Lambda writes them.
    let mut letters = Vec::new();
    for (shard, sequence) in &shards {
        for batch in sequence.chunks(100) {
            let (first, last) = (&batch[0], &batch[batch.len() - 1]);
            letters.push((on_failure(&arn, shard, first, last, batch.len()), false));
        }
    }
    let pointers = letters.len();
    // And 20 records the drain dead-lettered with their data, half of them base64-encoded.
    for i in 0..20 {
        let env = Envelope::new(&topic, format!("drain dead letter {i}"));
        sent.insert(env.id.clone());
        let body = env.encode();
        letters.push(if i % 2 == 0 {
            (base64::engine::general_purpose::STANDARD.encode(body), true)
        } else {
            (body, false)
        });
    }
    let dlq = queue(&sqs, "on-failure").await;
    send(&sqs, &dlq, letters.clone()).await;

    let done = summary(
        &spillway(&[
            "--dlq-url",
            &dlq,
            "--to-kafka",
            "--visibility-timeout",
            "5s",
        ])
        .env(
            "SPILLWAY_KAFKA_BOOTSTRAP",
            spillway_tests::kafka_bootstrap(),
        )
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .output()
        .expect("run"),
    );
    assert_eq!(done["moved"], pointers + 20, "{done}");
    assert_eq!(done["records"], N + 20, "{done}");
    assert_eq!(spillway_tests::queue_depth(&sqs, &dlq).await, 0);
    assert_eq!(
        kafka_ids(&topic, N + 20).await,
        sent,
        "every record, with its id"
    );

    // The same pointers replayed into a stream: every record once.
    let dlq = queue(&sqs, "on-failure").await;
    send(&sqs, &dlq, letters[..pointers].to_vec()).await;
    // A queue cannot take an on-failure record: it says so, and the letters stay.
    let refused = spillway(&["--dlq-url", &dlq, "--to-queue", &queue(&sqs, "wrong").await])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(1));
    let refused: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("summary");
    assert_eq!(refused["failed"], pointers, "{refused}");
    assert!(refused["errors"][0]
        .as_str()
        .is_some_and(|e| e.contains("--to-kafka or --to-stream")));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let target = spillway_tests::unique_name("replay-target");
    spillway_tests::fixtures::create_stream(&kinesis, &target, 1).await;
    let done = summary(
        &spillway(&["--dlq-url", &dlq, "--to-stream", &target])
            .output()
            .expect("run"),
    );
    assert_eq!(done["records"], N, "{done}");
    let ids = stream_ids(&kinesis, &target).await;
    assert_eq!(ids.len(), N);
    assert!(ids.iter().all(|id| sent.contains(id)));
}

/// Issue 15 item 7: plain (raw-mode) letters replay `--to-kafka` to the topic they were for
/// (`--raw-topic`, the drain's `SPILLWAY_TOPIC`), each with its original message id as
/// `spillway-id` — the id the drain gave it the first time (rule 7). They used to be refused:
/// replay forced raw mode off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_letters_replay_to_their_topic_with_their_original_ids() {
    let sqs = spillway_tests::sqs().await;
    let dlq = queue(&sqs, "replay-raw").await;
    let topic = spillway_tests::unique_name("raw-replayed");
    let mut originals = HashSet::new();
    let entries: Vec<_> = (0..5)
        .map(|i| {
            let original = format!("original-{i}-{}", spillway_tests::unique_name("m"));
            originals.insert(original.clone());
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(original)
                .build()
                .expect("attr");
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(format!("plain text {i}"))
                .message_attributes("spillway-original-id", attr)
                .build()
                .expect("entry")
        })
        .collect();
    sqs.send_message_batch()
        .queue_url(&dlq)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("send");
    let out = spillway(&["--dlq-url", &dlq, "--to-kafka", "--raw-topic", &topic])
        .env(
            "SPILLWAY_KAFKA_BOOTSTRAP",
            spillway_tests::kafka_bootstrap(),
        )
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .output()
        .expect("run");
    assert_eq!(summary(&out)["moved"], 5);
    assert_eq!(kafka_ids(&topic, 5).await, originals);
}

/// Issue 15 item 2: a letter the drain kept in S3 (too large for the DLQ) is read back through its
/// claim check and replayed to Kafka with its id; the DLQ ends empty and the S3 object is removed
/// once the letter is gone. A dry run names where the data is and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_kept_in_s3_is_replayed_to_kafka_and_its_object_removed() {
    let sqs = spillway_tests::sqs().await;
    let dlq = queue(&sqs, "replay-claim-dlq").await;
    let (s3, bucket, _) = spillway_tests::fixtures::claim_store("claims").await;
    let topic = spillway_tests::unique_name("replayed-large");
    let env = Envelope::new(&topic, vec![b'x'; 300_000]);
    let record = buffer_drain::source::SourceRecord {
        item_id: "m-1".into(),
        group: None,
        data: env.encode().into_bytes(),
        buffered_at_ms: None,
        trace: None,
        source: "arn:aws:sqs:us-east-1:000000000000:buffer".into(),
    };
    let store = spillway_core::claim::ClaimStore::new(
        s3.clone(),
        &bucket,
        spillway_core::dead_letter::CLAIM_PREFIX,
    );
    let written = buffer_drain::dlq::DeadLetters::new(sqs.clone(), dlq.clone())
        .with_claims(store)
        .send(
            &[(&record, "kafka: unknown topic".to_owned())],
            std::time::Instant::now() + Duration::from_secs(30),
        )
        .await;
    assert_eq!(written, [Ok(())]);
    let objects = |s3: aws_sdk_s3::Client, bucket: String| async move {
        s3.list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list")
            .key_count
            .unwrap_or_default()
    };
    assert_eq!(objects(s3.clone(), bucket.clone()).await, 1);

    let dry = spillway(&[
        "--dlq-url",
        &dlq,
        "--to-kafka",
        "--dry-run",
        "--dlq-bucket",
        &bucket,
    ])
    .env(
        "SPILLWAY_KAFKA_BOOTSTRAP",
        spillway_tests::kafka_bootstrap(),
    )
    .env("SPILLWAY_KAFKA_AUTH", "plaintext")
    .output()
    .expect("run");
    assert_eq!(summary(&dry)["would_move"], 1);
    let shown =
        String::from_utf8_lossy(&dry.stderr).into_owned() + &String::from_utf8_lossy(&dry.stdout);
    assert!(shown.contains(&format!("s3://{bucket}/")), "{shown}");

    let out = spillway(&["--dlq-url", &dlq, "--to-kafka", "--dlq-bucket", &bucket])
        .env(
            "SPILLWAY_KAFKA_BOOTSTRAP",
            spillway_tests::kafka_bootstrap(),
        )
        .env("SPILLWAY_KAFKA_AUTH", "plaintext")
        .output()
        .expect("run");
    assert_eq!(summary(&out)["moved"], 1);
    assert_eq!(spillway_tests::queue_depth(&sqs, &dlq).await, 0);
    assert_eq!(kafka_ids(&topic, 1).await, HashSet::from([env.id.clone()]));
    assert_eq!(objects(s3, bucket).await, 0, "the object is removed");
}
