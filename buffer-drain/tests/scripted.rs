//! The drain and the local poller against AWS answers no local emulator gives but the real
//! services may: answers that leave entries out (rule 10), failing delete calls, and Kinesis's
//! empty pages inside a shard. Each answer is scripted through the SDK's own test HTTP client;
//! Kafka is librdkafka's mock cluster. Every test here failed on the code before issue 14.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use buffer_drain::dlq::DeadLetters;
use buffer_drain::drain::Drain;
use buffer_drain::lambda::handle_sqs;
use buffer_drain::message::Decoding;
use buffer_drain::poller::{KinesisPoller, PollSettings, SqsPoller};
use rdkafka::mocking::MockCluster;
use spillway_core::envelope::{Envelope, RawMode};
use spillway_tests::scripted::{kinesis, sqs};

const TOPIC: &str = "orders";

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    cluster
}

fn drain(bootstrap: &str, dead_letters: Option<DeadLetters>) -> Drain {
    let config = spillway_tests::plaintext_kafka(bootstrap);
    let context = spillway_core::kafka::context::SpillwayContext::plain();
    let health = context.health();
    let producer = spillway_core::kafka::producer_config(&config)
        .expect("settings")
        .create_with_context(context)
        .expect("producer");
    let decoding = Decoding {
        raw: RawMode::Reject,
        raw_topic: None,
    };
    Drain::new(producer, health, dead_letters, decoding)
}

fn settings(batch_size: usize) -> PollSettings {
    PollSettings {
        batch_size,
        batch_window: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(60),
        function_timeout: Duration::from_secs(10),
        deadline_margin: Duration::from_secs(1),
    }
}

/// A `DeleteMessageBatch` answer naming every entry of the request as deleted.
fn every_delete_succeeded(request: &serde_json::Value) -> (u16, serde_json::Value) {
    let successful: Vec<_> = request["Entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| serde_json::json!({"Id": e["Id"]}))
        .collect();
    (
        200,
        serde_json::json!({"Successful": successful, "Failed": []}),
    )
}

fn sqs_message(n: usize, body: &str) -> serde_json::Value {
    serde_json::json!({"MessageId": format!("m-{n}"), "ReceiptHandle": format!("h-{n}"),
        "MD5OfBody": "x", "Body": body, "Attributes": {"SentTimestamp": "1764211200123"}})
}

/// Issue 14 item 6 (rule 10): a dead-letter write whose answer names the letter neither written
/// nor failed is not a dead letter — the record is reported failed and stays in the buffer
/// (it used to count as dead-lettered and be deleted).
#[tokio::test]
async fn a_dead_letter_missing_from_the_answer_is_reported_failed() {
    let cluster = cluster();
    let dlq = sqs(|_: &str, _: &serde_json::Value| {
        (200, serde_json::json!({"Successful": [], "Failed": []}))
    });
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(
            dlq,
            "https://sqs.us-east-1.amazonaws.com/1/dlq".into(),
        )),
    );
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(serde_json::json!({
        "Records": [
            {"messageId": "m-ok", "receiptHandle": "h1", "body": Envelope::new(TOPIC, "fine").encode(),
             "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
             "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"},
            {"messageId": "m-garbage", "receiptHandle": "h2", "body": "garbage",
             "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
             "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"}
        ]
    }))
    .expect("event");
    let response = handle_sqs(&drain, event, Instant::now() + Duration::from_secs(10))
        .await
        .expect("one delivered");
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-garbage"]);
}

/// Issue 14 item 11: the poller counts as done only what `DeleteMessageBatch` names deleted; a
/// failed delete call does not skip the calls after it.
#[tokio::test]
async fn the_poller_counts_only_deletes_the_answer_names_and_keeps_going_after_a_failed_call() {
    let cluster = cluster();
    let received = Arc::new(AtomicUsize::new(0));
    let delete_calls = Arc::new(AtomicUsize::new(0));
    let body = Envelope::new(TOPIC, "v").encode();
    let script = {
        let (received, delete_calls) = (received.clone(), delete_calls.clone());
        move |target: &str, request: &serde_json::Value| match target {
            "GetQueueAttributes" => (
                200,
                serde_json::json!({"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:1:q"}}),
            ),
            "ReceiveMessage" => {
                let first = received.fetch_add(10, AtomicOrdering::SeqCst);
                if first >= 30 {
                    return (200, serde_json::json!({}));
                }
                let messages: Vec<_> = (first..first + 10).map(|n| sqs_message(n, &body)).collect();
                (200, serde_json::json!({ "Messages": messages }))
            }
            "DeleteMessageBatch" => {
                let call = delete_calls.fetch_add(1, AtomicOrdering::SeqCst);
                let entries = request["Entries"].as_array().cloned().unwrap_or_default();
                match call {
                    // The first call fails outright.
                    0 => (
                        500,
                        serde_json::json!({"__type": "InternalError", "message": "boom"}),
                    ),
                    // The second names one entry failed and leaves one out.
                    1 => {
                        let ids: Vec<&str> =
                            entries.iter().filter_map(|e| e["Id"].as_str()).collect();
                        let successful: Vec<_> = ids[2..]
                            .iter()
                            .map(|id| serde_json::json!({"Id": id}))
                            .collect();
                        (
                            200,
                            serde_json::json!({"Successful": successful,
                            "Failed": [{"Id": ids[0], "Code": "ReceiptHandleIsInvalid", "SenderFault": true}]}),
                        )
                    }
                    _ => every_delete_succeeded(request),
                }
            }
            other => panic!("unexpected call {other}"),
        }
    };
    let poller = SqsPoller::new(
        sqs(script),
        "https://sqs.us-east-1.amazonaws.com/1/q".into(),
        settings(30),
    )
    .await
    .expect("poller");
    let drain = drain(&cluster.bootstrap_servers(), None);
    let invocation = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(invocation.records, 30);
    assert_eq!(
        delete_calls.load(AtomicOrdering::SeqCst),
        3,
        "no call skipped"
    );
    assert_eq!(
        invocation.done, 18,
        "10 lost to the failed call, 2 to the partial answer"
    );
}

/// Issue 14 item 11: real Kinesis returns empty pages inside a shard; the poller reads on from
/// `NextShardIterator` instead of asking for the same empty page forever.
#[tokio::test]
async fn the_kinesis_poller_reads_past_an_empty_page() {
    let cluster = cluster();
    let data = STANDARD.encode(Envelope::new(TOPIC, "after the gap").encode());
    let script = move |target: &str, request: &serde_json::Value| match target {
        "DescribeStreamSummary" => (
            200,
            serde_json::json!({"StreamDescriptionSummary": {"StreamName": "s",
                "StreamARN": "arn:aws:kinesis:us-east-1:1:stream/s", "StreamStatus": "ACTIVE",
                "RetentionPeriodHours": 24, "StreamCreationTimestamp": 1_764_211_200,
                "EnhancedMonitoring": [], "OpenShardCount": 1}}),
        ),
        "GetShardIterator" => (200, serde_json::json!({"ShardIterator": "it-0"})),
        "GetRecords" => match request["ShardIterator"].as_str() {
            Some("it-0") => (
                200,
                serde_json::json!({"Records": [], "NextShardIterator": "it-1", "MillisBehindLatest": 1000}),
            ),
            Some("it-1") => (
                200,
                serde_json::json!({"Records": [{"SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                    "ApproximateArrivalTimestamp": 1_764_211_200.5, "Data": data, "PartitionKey": "k"}],
                    "NextShardIterator": "it-2", "MillisBehindLatest": 0}),
            ),
            _ => (
                200,
                serde_json::json!({"Records": [], "NextShardIterator": "it-2", "MillisBehindLatest": 0}),
            ),
        },
        other => panic!("unexpected call {other}"),
    };
    let mut poller = KinesisPoller::new(
        kinesis(script),
        "s".into(),
        "shardId-000000000000".into(),
        settings(100),
    )
    .await
    .expect("poller");
    let drain = drain(&cluster.bootstrap_servers(), None);
    let empty = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(empty.records, 0);
    let next = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(
        (next.records, next.done),
        (1, 1),
        "the record after the empty page"
    );
}

/// Issue 14 item 8: a dead-letter write that gets no answer at all ends at the deadline plus the
/// grace the drain gives it: the letter is reported failed (it stays in the buffer and comes
/// again) and the invocation answers in time, instead of waiting on the call past the function's
/// timeout.
#[tokio::test]
async fn a_dead_letter_write_without_an_answer_ends_at_the_deadline_and_its_grace() {
    // Takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = silent.local_addr().expect("address");
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(format!("http://{address}"))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    let dlq = DeadLetters::new(
        aws_sdk_sqs::Client::from_conf(config),
        format!("http://{address}/1/dlq"),
    );
    let cluster = cluster();
    let drain = drain(&cluster.bootstrap_servers(), Some(dlq))
        .with_dead_letter_grace(Duration::from_millis(300));
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(serde_json::json!({
            "Records": [{"messageId": "m-garbage", "receiptHandle": "h", "body": "garbage",
                "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"}]
        }))
        .expect("event");
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        drain.drain(&records, ordering, started + Duration::from_secs(1)),
    )
    .await
    .expect("the drain answered");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &report.outcomes[0],
            buffer_drain::report::Outcome::Failed(f) if f.is_retryable()
        ),
        "{:?}",
        report.outcomes
    );
    drop(silent);
}

/// Issue 17 (the drain at a small backlog): messages that arrive one by one while a batch is being
/// gathered are gathered into calls that carry several, not taken by one call each. The queue
/// here gets a message every millisecond; the poller is set as infra deploys it (batch 100,
/// window 1 s). Before: once the first answer came back short, each round asked four calls at
/// once and each brought one or two messages: 49 `ReceiveMessage` calls for 80 messages.
#[tokio::test]
async fn a_trickle_is_gathered_into_batches_not_received_one_message_a_call() {
    const TOTAL: usize = 80;
    let cluster = cluster();
    let calls = Arc::new(AtomicUsize::new(0));
    let given = Arc::new(std::sync::Mutex::new(0_usize));
    let start = Instant::now();
    let body = Envelope::new(TOPIC, "v").encode();
    let script = {
        let (calls, given) = (calls.clone(), given.clone());
        move |target: &str, request: &serde_json::Value| match target {
            "GetQueueAttributes" => (
                200,
                serde_json::json!({"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:1:q"}}),
            ),
            "ReceiveMessage" => {
                calls.fetch_add(1, AtomicOrdering::SeqCst);
                let arrived = usize::try_from(start.elapsed().as_millis())
                    .unwrap_or(usize::MAX)
                    .saturating_add(1)
                    .min(TOTAL);
                let asked = request["MaxNumberOfMessages"]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(1);
                let mut given = given.lock().expect("lock");
                let from = *given;
                let to = arrived.max(from).min(from + asked);
                *given = to;
                let messages: Vec<_> = (from..to).map(|n| sqs_message(n, &body)).collect();
                (200, serde_json::json!({ "Messages": messages }))
            }
            "DeleteMessageBatch" => every_delete_succeeded(request),
            other => panic!("unexpected call {other}"),
        }
    };
    let poller = SqsPoller::new(
        sqs(script),
        "https://sqs.us-east-1.amazonaws.com/1/q".into(),
        settings(100),
    )
    .await
    .expect("poller");
    let drain = drain(&cluster.bootstrap_servers(), None);
    let mut batches = Vec::new();
    while batches.iter().sum::<usize>() < TOTAL && start.elapsed() < Duration::from_secs(20) {
        let invocation = poller.poll_once(&drain).await.expect("poll");
        assert_eq!(invocation.done, invocation.records, "all delivered");
        if invocation.records > 0 {
            batches.push(invocation.records);
        }
    }
    assert_eq!(batches.iter().sum::<usize>(), TOTAL, "batches {batches:?}");
    let calls = calls.load(AtomicOrdering::SeqCst);
    assert!(
        batches[0] >= 20 && calls <= 30,
        "batches {batches:?} took {calls} ReceiveMessage calls for {TOTAL} messages"
    );
}
