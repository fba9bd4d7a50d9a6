//! `spillway replay` against answers the real SQS and Kinesis may give and no local emulator does
//! (issue 15 items 4–6): a delete answer that names a letter failed, a stream that throttles a
//! record once, and a DLQ that hands back a letter already looked at before the last unseen one.
//! Each answer is scripted through the SDK's own test HTTP client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spillway::replay::{Filters, Replay, Summary, Target};
use spillway_core::envelope::Envelope;

const DLQ: &str = "https://sqs.us-east-1.amazonaws.com/1/dlq";

/// A dead letter as `ReceiveMessage` answers it.
fn letter(id: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "MessageId": id, "ReceiptHandle": format!("h-{id}"), "MD5OfBody": "x",
        "Body": Envelope::new("orders", id).encode(),
        "Attributes": {"SentTimestamp": "1764211200123"},
        "MessageAttributes": {"spillway-reason": {"DataType": "String", "StringValue": reason}}
    })
}

/// A DLQ whose `ReceiveMessage` calls get `receives` in turn (then nothing), whose other batch
/// calls succeed for every entry but what `delete_fails` names; the ids it was asked to delete
/// are kept in `deleted`.
fn dlq(
    receives: Vec<Vec<serde_json::Value>>,
    delete_fails: &'static [&'static str],
    deleted: Arc<Mutex<Vec<String>>>,
) -> aws_sdk_sqs::Client {
    let call = AtomicUsize::new(0);
    spillway_tests::scripted::sqs(move |target: &str, request: &serde_json::Value| {
        let entries = request["Entries"].as_array().cloned().unwrap_or_default();
        let all_ok = || {
            let ok: Vec<_> = entries
                .iter()
                .map(|e| serde_json::json!({"Id": e["Id"], "MessageId": "new", "MD5OfMessageBody": "x"}))
                .collect();
            (200, serde_json::json!({"Successful": ok, "Failed": []}))
        };
        match target {
            "ReceiveMessage" => {
                let n = call.fetch_add(1, Ordering::SeqCst);
                let messages = receives.get(n).cloned().unwrap_or_default();
                (200, serde_json::json!({ "Messages": messages }))
            }
            "DeleteMessageBatch" => {
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                for e in &entries {
                    let handle = e["ReceiptHandle"].as_str().unwrap_or_default();
                    let id = handle.trim_start_matches("h-").to_owned();
                    if delete_fails.contains(&id.as_str()) {
                        failed.push(serde_json::json!({"Id": e["Id"], "Code": "InternalError", "SenderFault": false}));
                    } else {
                        deleted.lock().expect("lock").push(id);
                        ok.push(serde_json::json!({"Id": e["Id"]}));
                    }
                }
                (200, serde_json::json!({"Successful": ok, "Failed": failed}))
            }
            "SendMessageBatch" | "ChangeMessageVisibilityBatch" => all_ok(),
            "ChangeMessageVisibility" => (200, serde_json::json!({})),
            // No `StartMessageMoveTask` here: replay moves message by message.
            _ => (
                400,
                serde_json::json!({"__type": "com.amazonaws.sqs#InvalidAction", "message": "no"}),
            ),
        }
    })
}

fn filters(reason: Option<&str>) -> Filters {
    Filters {
        reason: reason.map(str::to_owned),
        older_than: None,
        max: None,
        visibility: Duration::from_secs(30),
    }
}

async fn run(
    sqs: &aws_sdk_sqs::Client,
    kinesis: &aws_sdk_kinesis::Client,
    target: &Target,
    filters: &Filters,
) -> Summary {
    Replay {
        sqs,
        kinesis,
        dlq_url: DLQ,
        target,
        filters,
        rate: None,
        dry_run: false,
    }
    .run(&indicatif::ProgressBar::hidden())
    .await
    .expect("replay")
}

fn no_kinesis() -> aws_sdk_kinesis::Client {
    spillway_tests::scripted::kinesis(|target: &str, _: &serde_json::Value| -> (u16, &str) {
        panic!("unexpected Kinesis call {target}")
    })
}

/// Item 4: a letter the `DeleteMessageBatch` answer names failed is still in the DLQ: not moved
/// (it used to be counted moved, and is replayed again by the next run).
#[tokio::test]
async fn a_letter_the_delete_answer_names_failed_is_not_counted_moved() {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let sqs = dlq(
        vec![vec![letter("a", "r"), letter("b", "r")]],
        &["b"],
        deleted.clone(),
    );
    let target = Target::Queue("https://sqs.us-east-1.amazonaws.com/1/source".into());
    let summary = run(&sqs, &no_kinesis(), &target, &filters(None)).await;
    assert_eq!((summary.moved, summary.failed), (1, 1), "{summary:?}");
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.contains("still in the DLQ")),
        "{summary:?}"
    );
    assert_eq!(*deleted.lock().expect("lock"), ["a"]);
}

/// Item 5: a record the stream throttles once and takes on the retry is written: the letter is
/// moved (it used to stay failed, be written again by the next run, and exit 1).
#[tokio::test]
async fn a_record_throttled_once_then_written_counts_as_written() {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let sqs = dlq(vec![vec![letter("a", "r")]], &[], deleted.clone());
    let puts = AtomicUsize::new(0);
    let kinesis = spillway_tests::scripted::kinesis(move |target: &str, _: &serde_json::Value| {
        assert_eq!(target, "PutRecords");
        if puts.fetch_add(1, Ordering::SeqCst) == 0 {
            (
                200,
                serde_json::json!({"FailedRecordCount": 1, "Records": [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}]}),
            )
        } else {
            (
                200,
                serde_json::json!({"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "shardId-0"}]}),
            )
        }
    });
    let target = Target::Stream("s".into());
    let summary = run(&sqs, &kinesis, &target, &filters(None)).await;
    assert_eq!((summary.moved, summary.failed), (1, 0), "{summary:?}");
    assert_eq!(*deleted.lock().expect("lock"), ["a"]);
}

/// Item 6: a filtered run goes on past a receive that hands back only a letter it already looked
/// at (SQS returns messages in no set order): the matching letter after it is moved too. It used
/// to stop there with exit 0 and the matching letter left behind.
#[tokio::test]
async fn a_filtered_run_does_not_stop_at_a_letter_it_has_seen() {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let sqs = dlq(
        vec![
            vec![letter("skip", "undecodable")],
            vec![letter("skip", "undecodable")],
            vec![letter("match", "kafka: not authorised")],
        ],
        &[],
        deleted.clone(),
    );
    let target = Target::Queue("https://sqs.us-east-1.amazonaws.com/1/source".into());
    let summary = run(
        &sqs,
        &no_kinesis(),
        &target,
        &filters(Some("not authorised")),
    )
    .await;
    assert_eq!((summary.moved, summary.skipped), (1, 1), "{summary:?}");
    assert_eq!(*deleted.lock().expect("lock"), ["match"]);
}
