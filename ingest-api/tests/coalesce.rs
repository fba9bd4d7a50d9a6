//! Issue 17 (spike ingest p99): on a standard queue, messages of concurrent requests share
//! `SendMessageBatch` calls. One call per request cost ~350 µs of ingest CPU per request in the
//! spike (the SDK's per-call work: signing, serialising, the orchestrator), and as many again in
//! the emulator; packed ten to a call, the burst fits the machine. Each message is still reported
//! accepted only once SQS named it under `Successful` (rule 1).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_api::buffer::{Outgoing, SqsBuffer, WriteError};

fn message(i: usize) -> Outgoing {
    Outgoing {
        id: format!("m-{i}"),
        body: bytes::Bytes::from(format!("{{\"n\":{i}}}")),
        key: None,
        group: None,
        tenant: None,
    }
}

/// A standard-queue writer whose SQS answers from `answer` (entries in, JSON out), counting
/// `SendMessageBatch` calls in `calls` and the entries they carried in `entries`.
fn buffer(
    fifo: bool,
    calls: &Arc<AtomicUsize>,
    entries: &Arc<AtomicUsize>,
    fail_ids: fn(&str) -> bool,
) -> SqsBuffer {
    slow_buffer(fifo, calls, entries, fail_ids, Duration::ZERO)
}

/// [`buffer`], each call taking `round_trip` (the script blocks its own worker thread that long).
fn slow_buffer(
    fifo: bool,
    calls: &Arc<AtomicUsize>,
    entries: &Arc<AtomicUsize>,
    fail_ids: fn(&str) -> bool,
    round_trip: Duration,
) -> SqsBuffer {
    let (calls, entries) = (calls.clone(), entries.clone());
    let client = spillway_tests::scripted::sqs(move |target: &str, request: &serde_json::Value| {
        if target != "SendMessageBatch" {
            return (400, serde_json::json!({"__type": "InvalidAction"}));
        }
        calls.fetch_add(1, Ordering::SeqCst);
        let list = request["Entries"].as_array().cloned().unwrap_or_default();
        entries.fetch_add(list.len(), Ordering::SeqCst);
        if !round_trip.is_zero() {
            std::thread::sleep(round_trip);
        }
        let (failed, ok): (Vec<_>, Vec<_>) = list.iter().partition(|e| {
            let body = e["MessageBody"].as_str().unwrap_or_default();
            fail_ids(body)
        });
        let ok: Vec<_> = ok
            .iter()
            .map(|e| serde_json::json!({"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}))
            .collect();
        let failed: Vec<_> = failed
            .iter()
            .map(|e| serde_json::json!({"Id": e["Id"], "Code": "InvalidMessageContents", "SenderFault": true}))
            .collect();
        (200, serde_json::json!({"Successful": ok, "Failed": failed}))
    });
    let url = if fifo {
        "https://sqs.us-east-1.amazonaws.com/1/q.fifo"
    } else {
        "https://sqs.us-east-1.amazonaws.com/1/q"
    };
    SqsBuffer::new(client, url.into(), fifo, 262_144)
}

async fn forty_at_once(buffer: &SqsBuffer) -> Vec<Vec<Result<(), WriteError>>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let messages: Vec<Outgoing> = (0..40).map(message).collect();
    futures::future::join_all(
        messages
            .iter()
            .map(|m| buffer.write(std::slice::from_ref(m), deadline)),
    )
    .await
}

#[tokio::test]
async fn forty_concurrent_one_message_requests_share_batch_calls() {
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = buffer(false, &calls, &entries, |_| false);
    let outcomes = forty_at_once(&sqs).await;
    assert!(
        outcomes.iter().all(|o| o.len() == 1 && o[0].is_ok()),
        "{outcomes:?}"
    );
    assert_eq!(entries.load(Ordering::SeqCst), 40, "each message sent once");
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        calls <= 8,
        "40 concurrent messages took {calls} SendMessageBatch calls"
    );
}

#[tokio::test]
async fn a_coalesced_entry_refused_is_reported_to_its_own_request_only() {
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Messages 7 and 23 are refused by SQS; the others in the same calls are written.
    let sqs = buffer(false, &calls, &entries, |body| {
        body == "{\"n\":7}" || body == "{\"n\":23}"
    });
    let outcomes = forty_at_once(&sqs).await;
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.len(), 1);
        if i == 7 || i == 23 {
            assert!(
                matches!(o[0], Err(WriteError::Refused(_))),
                "{i}: {:?}",
                o[0]
            );
        } else {
            assert!(o[0].is_ok(), "{i}: {:?}", o[0]);
        }
    }
    assert!(calls.load(Ordering::SeqCst) <= 8);
}

#[tokio::test]
async fn a_fifo_queue_keeps_one_call_per_request() {
    // A FIFO queue keeps the order of calls within a group only when they are not concurrent:
    // requests are not merged there.
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = buffer(true, &calls, &entries, |_| false);
    let outcomes = forty_at_once(&sqs).await;
    assert!(outcomes.iter().all(|o| o[0].is_ok()));
    assert_eq!(calls.load(Ordering::SeqCst), 40);
}

#[tokio::test]
async fn a_zero_retry_budget_still_makes_the_first_call() {
    // SPILLWAY_BUFFER_RETRY_BUDGET=0s: no retries, but the message is still sent once (it was
    // refused unsent by the first version of the shared calls).
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = buffer(false, &calls, &entries, |_| false);
    let outcome = sqs.write(&[message(1)], Instant::now()).await;
    assert_eq!(outcome, vec![Ok(())]);
    assert_eq!(entries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn past_the_lane_s_bound_a_message_is_throttled_not_queued_without_end() {
    // 5,000 one-message requests at once against a lane of 4,096 waiting messages: the rest are
    // told to retry (429), and exactly the accepted ones were sent.
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = buffer(false, &calls, &entries, |_| false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let messages: Vec<Outgoing> = (0..5000).map(message).collect();
    let outcomes = futures::future::join_all(
        messages
            .iter()
            .map(|m| sqs.write(std::slice::from_ref(m), deadline)),
    )
    .await;
    let ok = outcomes.iter().filter(|o| o[0].is_ok()).count();
    let throttled = outcomes
        .iter()
        .filter(|o| o[0] == Err(WriteError::Throttled))
        .count();
    assert_eq!(ok + throttled, 5000, "{outcomes:?}");
    assert!(throttled >= 5000 - 4096, "{throttled} throttled");
    assert_eq!(entries.load(Ordering::SeqCst), ok, "sent = accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 24)]
async fn a_trickle_while_a_call_is_in_flight_is_gathered_not_sent_one_by_one() {
    // The spike's shape: messages arrive one by one, a little apart, while calls are in flight
    // (each takes 20 ms here). Sent as each arrives, 30 messages over 30 ms took a call each
    // until the 16 call slots ran out; a call that is not full waits a few milliseconds for more
    // while another is in flight (as Kafka's linger.ms), so they share calls.
    let (calls, entries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = slow_buffer(
        false,
        &calls,
        &entries,
        |_| false,
        Duration::from_millis(20),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let writes = (0..30u64).map(|i| {
        let sqs = sqs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i)).await;
            sqs.write(&[message(usize::try_from(i).unwrap_or(0))], deadline)
                .await
        })
    });
    let outcomes = futures::future::join_all(writes).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(v) if v == &vec![Ok(())])),
        "{outcomes:?}"
    );
    assert_eq!(entries.load(Ordering::SeqCst), 30, "each message sent once");
    let calls = calls.load(Ordering::SeqCst);
    assert!(
        calls <= 12,
        "30 messages arriving 1 ms apart took {calls} SendMessageBatch calls"
    );
}
