//! The visibility heartbeat: while a worker holds a batch (being produced, or its deletes running),
//! the messages' visibility timeout is extended every third of the timeout, so that a slow broker never
//! makes them visible to a second worker, which would produce them again. Redpanda Connect's
//! `aws_sqs` input does the same; Lambda's own pollers do not, which is why a Lambda drain's
//! queue needs a visibility timeout of six function timeouts instead.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;

/// The longest one `ChangeMessageVisibilityBatch` call can take: the SQS client's operation
/// timeout ([`crate::lambda::sqs_client`]). An extension must be sent this long before the
/// messages would become visible.
pub const CALL_BOUND: Duration = Duration::from_secs(5);

/// Visibility extensions sent and the messages they kept hidden, for metrics.
#[derive(Debug, Default)]
pub struct Extensions {
    /// Messages whose visibility an answer named extended.
    pub extended: AtomicU64,
    /// Messages an extension did not reach (the call failed, or its answer did not name them):
    /// they may become visible while held, and be produced twice (a duplicate, never a loss).
    pub missed: AtomicU64,
}

/// Keeps a batch hidden while it lives; stops when dropped.
pub(crate) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    /// The receipt handles still held: a deleted message, or one the report failed (it must
    /// reappear as Lambda lets it), is forgotten.
    held: Arc<Mutex<Holding>>,
}

/// A batch's receipt handles in the order received (the earliest received is extended first:
/// its timeout ends first) and those no longer held.
struct Holding {
    order: Vec<String>,
    gone: HashSet<String>,
}

impl Holding {
    /// How many are still held (every forgotten handle is one of `order`).
    fn count(&self) -> usize {
        self.order.len().saturating_sub(self.gone.len())
    }

    fn held(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|h| !self.gone.contains(*h))
            .cloned()
            .collect()
    }
}

/// `ChangeMessageVisibilityBatch` calls the heartbeat makes at once: a 10,000-message batch is
/// extended in 32 rounds.
const EXTENSIONS_AT_ONCE: usize = 32;

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    /// Extends the visibility of `handles` to `visibility` from now, first at
    /// `received + visibility / 3` (the first message of the batch became invisible at `received`),
    /// then every third of the timeout, so that one extension that fails is made good by the
    /// next before the messages reappear (what the settings check asks of the timeout).
    pub(crate) fn start(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        handles: Vec<String>,
        visibility: Duration,
        received: Instant,
        counts: Arc<Extensions>,
    ) -> Self {
        let held = Arc::new(Mutex::new(Holding {
            order: handles,
            gone: HashSet::new(),
        }));
        let holding = held.clone();
        let task = tokio::spawn(async move {
            // SQS takes whole seconds.
            let visibility = Duration::from_secs(visibility.as_secs());
            let every = visibility / 3;
            let mut next = received + every;
            loop {
                tokio::time::sleep_until(next.into()).await;
                next = Instant::now() + every;
                let handles = holding
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .held();
                let extended = super::sqs::in_calls_of_ten(&handles, EXTENSIONS_AT_ONCE, |chunk| {
                    extend(&client, &queue_url, chunk, visibility)
                })
                .await;
                // A message deleted while its extension was on its way is no longer held.
                let still = holding
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .count();
                let missed = still.min(handles.len()).saturating_sub(extended);
                let (extended, missed) = (extended as u64, missed as u64);
                counts.extended.fetch_add(extended, Ordering::Relaxed);
                counts.missed.fetch_add(missed, Ordering::Relaxed);
                crate::service::metrics().visibility(extended, missed);
                if missed > 0 {
                    tracing::warn!(
                        extended,
                        missed,
                        "some held messages' visibility was not extended; the next extension tries again"
                    );
                }
            }
        });
        Self { task, held }
    }

    /// No longer holds `handles` (deleted, or failed by the report and left to reappear).
    pub(crate) fn forget<'h>(&self, handles: impl IntoIterator<Item = &'h String>) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in handles {
            held.gone.insert(h.clone());
        }
    }
}

/// One `ChangeMessageVisibilityBatch` call setting `chunk`'s visibility to `visibility` from now;
/// how many entries its answer names done (rule 10).
pub(super) async fn extend(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    chunk: &[String],
    visibility: Duration,
) -> usize {
    let seconds = i32::try_from(visibility.as_secs()).unwrap_or(43_200);
    let entries = chunk
        .iter()
        .enumerate()
        .map(|(i, h)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .visibility_timeout(seconds)
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    match client
        .change_message_visibility_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => {
            use spillway_core::batch::{answered, Answered};
            answered(
                0..chunk.len(),
                out.successful.iter().map(|e| e.id.as_str()),
                out.failed.iter().map(|e| (e.id.as_str(), ())),
            )
            .iter()
            .filter(|a| **a == Answered::Done)
            .count()
        }
        Err(e) => {
            tracing::warn!(
                error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                messages = chunk.len(),
                "ChangeMessageVisibilityBatch failed"
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule 10 for the heartbeat: an answer that names some entries done, one failed and leaves
    /// one out counts only the named ones extended, the other two missed, and the next round
    /// sends all three again (a message is forgotten only when deleted or failed by its report).
    #[tokio::test]
    async fn an_answer_that_leaves_entries_out_counts_them_missed_and_the_next_round_sends_them_again(
    ) {
        let calls = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let seen = calls.clone();
        let client = spillway_tests::scripted::sqs(move |target, body| {
            assert_eq!(target, "ChangeMessageVisibilityBatch");
            let handles = body["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["ReceiptHandle"].as_str().map(str::to_owned))
                .collect();
            seen.lock().expect("calls").push(handles);
            (
                200,
                serde_json::json!({
                    "Successful": [{"Id": "0"}],
                    "Failed": [{"Id": "2", "Code": "ReceiptHandleIsInvalid", "SenderFault": true,
                        "Message": "The input receipt handle is invalid."}]
                }),
            )
        });
        let counts = Arc::new(Extensions::default());
        let heartbeat = Heartbeat::start(
            client,
            "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
            vec!["a".into(), "b".into(), "c".into()],
            Duration::from_secs(3),
            Instant::now(),
            counts.clone(),
        );
        let ends = Instant::now() + Duration::from_secs(20);
        while counts.extended.load(Ordering::Relaxed) + counts.missed.load(Ordering::Relaxed) < 6 {
            assert!(
                Instant::now() < ends,
                "two rounds of extensions within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(heartbeat);
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(calls[..2], [["a", "b", "c"], ["a", "b", "c"]]);
        assert_eq!(counts.extended.load(Ordering::Relaxed), 2);
        assert_eq!(counts.missed.load(Ordering::Relaxed), 4);
    }
}
