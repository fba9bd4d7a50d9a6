//! aws-sdk-sqs against fauxqs. Relies on: SendMessage(Batch), ReceiveMessage, DeleteMessage(Batch),
//! ChangeMessageVisibility, queue attributes (MaximumMessageSize, RedrivePolicy) and fauxqs's
//! checks of body characters and size, which follow SQS's documented rules.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use spillway_core::envelope::{decode, Decoded, Envelope, Header, RawMode};
use spillway_tests::{sqs, unique_name};

async fn create_queue(client: &Client, name: &str, attrs: &[(QueueAttributeName, &str)]) -> String {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), *v);
    }
    req.send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

async fn queue_arn(client: &Client, url: &str) -> String {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("get attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn")
}

fn decode_envelope(body: &str) -> Envelope {
    match decode(body.as_bytes(), RawMode::Reject) {
        Ok(Decoded::Envelope(env)) => env,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

#[tokio::test]
async fn send_receive_delete_keeps_binary_and_awkward_text_intact() {
    let client = sqs().await;
    let url = create_queue(&client, &unique_name("basic"), &[]).await;
    let mut binary = Envelope::new("orders", (0..=255u8).collect::<Vec<u8>>());
    binary.key = Some(vec![0xFF, 0x00, 0xFE]);
    binary.headers = vec![
        Header::new("sig", vec![0x80, 0x81]),
        Header::new("kind", "bin"),
    ];
    let awkward = Envelope::new(
        "orders",
        "nul\u{0} cr\r ffff\u{FFFF} fffe\u{FFFE} emoji 🚀 \u{10FFFF}",
    );
    let sent = [binary, awkward];
    for env in &sent {
        client
            .send_message()
            .queue_url(&url)
            .message_body(env.encode())
            .send()
            .await
            .expect("send");
    }

    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < sent.len() && Instant::now() < deadline {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for msg in out.messages.unwrap_or_default() {
            received.push(decode_envelope(msg.body().expect("body")));
            client
                .delete_message()
                .queue_url(&url)
                .receipt_handle(msg.receipt_handle().expect("receipt handle"))
                .send()
                .await
                .expect("delete");
        }
    }
    received.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(received, sent);

    let left = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(
        left.messages.unwrap_or_default().is_empty(),
        "deleted messages must not come back"
    );
}

#[tokio::test]
async fn the_emulator_enforces_sqs_body_rules_that_the_envelope_respects() {
    let client = sqs().await;
    let url = create_queue(
        &client,
        &unique_name("rules"),
        &[(QueueAttributeName::MaximumMessageSize, "1024")],
    )
    .await;

    // Negative control: the characters the envelope escapes are refused when sent as they are.
    let raw = client
        .send_message()
        .queue_url(&url)
        .message_body("bad \u{FFFF}")
        .send()
        .await;
    assert!(
        raw.is_err(),
        "fauxqs must refuse U+FFFF in a body, as SQS does"
    );

    // Exact size accounting: an envelope of exactly the limit is accepted, one byte more is not.
    let mut env = Envelope::new("t", "");
    env.value = vec![b'x'; 1024 - env.encoded_len()];
    assert_eq!(env.encode().len(), 1024);
    client
        .send_message()
        .queue_url(&url)
        .message_body(env.encode())
        .send()
        .await
        .expect("exactly the limit fits");
    env.value.push(b'x');
    assert_eq!(env.encoded_len(), 1025);
    let over = client
        .send_message()
        .queue_url(&url)
        .message_body(env.encode())
        .send()
        .await;
    assert!(
        over.is_err(),
        "one byte over MaximumMessageSize must be refused"
    );
}

#[tokio::test]
async fn a_message_received_more_than_max_receive_count_lands_in_the_dlq() {
    let client = sqs().await;
    let dlq = create_queue(&client, &unique_name("dlq"), &[]).await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#,
        queue_arn(&client, &dlq).await
    );
    let url = create_queue(
        &client,
        &unique_name("src"),
        &[(QueueAttributeName::RedrivePolicy, &redrive)],
    )
    .await;
    let env = Envelope::new("orders", "poison");
    client
        .send_message()
        .queue_url(&url)
        .message_body(env.encode())
        .send()
        .await
        .expect("send");

    // Receive without deleting, as a drain that keeps failing would; make it visible again at once.
    for attempt in 1..=2 {
        let out = client
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let msgs = out.messages.unwrap_or_default();
        assert_eq!(msgs.len(), 1, "receive {attempt} should see the message");
        client
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(msgs[0].receipt_handle().expect("receipt handle"))
            .visibility_timeout(0)
            .send()
            .await
            .expect("change visibility");
    }
    let third = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(
        third.messages.unwrap_or_default().is_empty(),
        "after maxReceiveCount the source must not deliver it again"
    );

    let moved = client
        .receive_message()
        .queue_url(&dlq)
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive dlq");
    let moved = moved.messages.unwrap_or_default();
    assert_eq!(moved.len(), 1);
    assert_eq!(decode_envelope(moved[0].body().expect("body")), env);
}

const BULK: usize = 20_000;
const WORKERS: usize = 16;

/// Sends `BULK` envelopes with `SendMessageBatch` from `WORKERS` concurrent senders; returns their ids.
async fn send_bulk(client: &Client, url: &str) -> HashSet<String> {
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (client, url) = (client.clone(), url.to_owned());
        senders.spawn(async move {
            let mut ids = Vec::new();
            for batch in (worker..BULK / 10).step_by(WORKERS) {
                let mut entries = Vec::with_capacity(10);
                for i in 0..10 {
                    let env = Envelope::new("bulk", format!("message {}", batch * 10 + i));
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(env.encode());
                    entries.push(entry.build().expect("entry"));
                    ids.push(env.id);
                }
                let out = client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("send batch");
                assert!(
                    out.failed.is_empty(),
                    "batch entries failed: {:?}",
                    out.failed
                );
            }
            ids
        });
    }
    let mut sent = HashSet::new();
    while let Some(ids) = senders.join_next().await {
        sent.extend(ids.expect("sender"));
    }
    sent
}

/// Receives and batch-deletes from `WORKERS` concurrent receivers until `BULK` distinct ids were
/// seen or two minutes passed; returns the ids seen.
async fn receive_bulk(client: &Client, url: &str) -> HashSet<String> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (client, url, seen) = (client.clone(), url.to_owned(), seen.clone());
        receivers.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.lock().expect("lock").len() < BULK && Instant::now() < deadline {
                let out = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive");
                let msgs = out.messages.unwrap_or_default();
                if msgs.is_empty() {
                    continue;
                }
                let mut deletes = Vec::with_capacity(msgs.len());
                for (i, msg) in msgs.iter().enumerate() {
                    seen.lock()
                        .expect("lock")
                        .insert(decode_envelope(msg.body().expect("body")).id);
                    let handle = msg.receipt_handle().expect("receipt handle");
                    let entry = DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle);
                    deletes.push(entry.build().expect("entry"));
                }
                let out = client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(deletes))
                    .send()
                    .await
                    .expect("delete batch");
                assert!(
                    out.failed.is_empty(),
                    "delete entries failed: {:?}",
                    out.failed
                );
            }
        });
    }
    while let Some(done) = receivers.join_next().await {
        done.expect("receiver");
    }
    let seen = seen.lock().expect("lock").clone();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_messages_in_and_out() {
    let client = sqs().await;
    let url = create_queue(&client, &unique_name("bulk"), &[]).await;

    let started = Instant::now();
    let sent = send_bulk(&client, &url).await;
    let send_secs = started.elapsed().as_secs_f64();
    assert_eq!(sent.len(), BULK);

    let started = Instant::now();
    let seen = receive_bulk(&client, &url).await;
    let receive_secs = started.elapsed().as_secs_f64();
    assert_eq!(seen, sent, "every message sent is received, by id");

    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "nothing waiting or in flight after deleting everything"
    );
    // A figure for the record, not an assertion: this machine is shared and noisy.
    let count = f64::from(u32::try_from(BULK).expect("fits"));
    eprintln!(
        "sqs bulk: {BULK} messages sent in {send_secs:.1}s ({:.0}/s), received+deleted in {receive_secs:.1}s ({:.0}/s)",
        count / send_secs,
        count / receive_secs
    );
}
