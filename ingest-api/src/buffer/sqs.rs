//! SQS writer: `SendMessageBatch` packing, FIFO group and deduplication ids, single retries.

use std::time::Instant;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use futures::stream::{self, StreamExt};
use spillway_core::backoff::Backoff;

use super::{classify, id_or_digest, pack, Failure, Outgoing, WriteError, RETRY_BASE, RETRY_CAP};

/// Concurrent `SendMessageBatch` calls for one request to a standard queue.
const CONCURRENT_CALLS: usize = 8;
/// SQS: at most 10 entries per batch call.
const MAX_BATCH_ENTRIES: usize = 10;
/// FIFO `MessageGroupId` / `MessageDeduplicationId`: up to 128 characters, alphanumeric or punctuation.
const MAX_FIFO_ID: usize = 128;

fn fifo_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b.is_ascii_punctuation()
}

/// Writes envelopes to one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsBuffer {
    client: Client,
    queue_url: String,
    fifo: bool,
    max_message_bytes: usize,
}

impl SqsBuffer {
    /// A writer for `queue_url`, whose `MaximumMessageSize` is `max_message_bytes`.
    pub fn new(client: Client, queue_url: String, fifo: bool, max_message_bytes: usize) -> Self {
        Self {
            client,
            queue_url,
            fifo,
            max_message_bytes,
        }
    }

    /// The queue's per-message limit, which also bounds one batch call's total.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    fn entry(&self, index: usize, msg: &Outgoing) -> SendMessageBatchRequestEntry {
        let (group, dedup) = self.fifo_ids(msg);
        SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&msg.body)
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
            .build()
            .expect("id and body are set")
    }

    /// FIFO: the group is the Kafka key (so one key's messages stay in order) or, without a key, the
    /// message id (no ordering asked for, no head-of-line blocking); deduplication uses the
    /// idempotency key, else the message id.
    fn fifo_ids(&self, msg: &Outgoing) -> (Option<String>, Option<String>) {
        if !self.fifo {
            return (None, None);
        }
        let group = id_or_digest(
            msg.key.as_deref().unwrap_or(msg.id.as_bytes()),
            MAX_FIFO_ID,
            fifo_id_char,
        );
        let dedup = id_or_digest(
            msg.idempotency_key.as_deref().unwrap_or(&msg.id).as_bytes(),
            MAX_FIFO_ID,
            fifo_id_char,
        );
        (Some(group), Some(dedup))
    }

    /// Writes `batch`; see the module docs of [`super`].
    pub async fn write(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let runs = pack(
            batch.iter().map(|m| m.body.len()),
            MAX_BATCH_ENTRIES,
            self.max_message_bytes,
        );
        // A FIFO queue keeps the order of calls within a group only if they are not concurrent.
        let concurrency = if self.fifo { 1 } else { CONCURRENT_CALLS };
        let mut outcomes: Vec<Result<(), WriteError>> = vec![Ok(()); batch.len()];
        let results: Vec<_> = stream::iter(runs)
            .map(|run| async move {
                let outcome = self
                    .send_run(&batch[run.clone()], run.start, deadline)
                    .await;
                (run, outcome)
            })
            .buffered(concurrency)
            .collect()
            .await;
        for (run, outcome) in results {
            outcomes[run].clone_from_slice(&outcome);
        }
        outcomes
    }

    /// One `SendMessageBatch` call; entries that fail in it are retried alone.
    async fn send_run(
        &self,
        run: &[Outgoing],
        first: usize,
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let entries: Vec<_> = run
            .iter()
            .enumerate()
            .map(|(i, m)| self.entry(first + i, m))
            .collect();
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let mut outcomes = vec![Ok(()); run.len()];
        let mut retry = Vec::new();
        match sent {
            Ok(out) => {
                for failed in out.failed {
                    let Some(i) = failed
                        .id
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| i.checked_sub(first))
                        .filter(|i| *i < run.len())
                    else {
                        continue;
                    };
                    if failed.sender_fault {
                        outcomes[i] = Err(WriteError::Refused(failed.code));
                    } else {
                        let failure = if super::is_throttling_code(&failed.code) {
                            Failure::Throttled
                        } else {
                            Failure::Transient
                        };
                        retry.push((i, failure.into_error(failed.code)));
                    }
                }
            }
            Err(err) => match classify(&err) {
                (Failure::Permanent, detail) => {
                    tracing::error!(queue = %self.queue_url, %detail, "SendMessageBatch refused");
                    return vec![Err(WriteError::Refused(detail)); run.len()];
                }
                (failure, detail) => {
                    let error = failure.into_error(detail);
                    retry.extend((0..run.len()).map(|i| (i, error.clone())));
                }
            },
        }
        // Retried one after another: for a FIFO queue this keeps the group's order among retries.
        for (i, last) in retry {
            outcomes[i] = self.send_alone(&run[i], last, deadline).await;
        }
        outcomes
    }

    /// `SendMessage` for one entry, with backoff until `deadline`; `last` is why the batch call
    /// did not take it, the answer when no retry fits in the budget.
    async fn send_alone(
        &self,
        msg: &Outgoing,
        mut last: WriteError,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let mut backoff = Backoff::until(RETRY_BASE, RETRY_CAP, deadline);
        let (group, dedup) = self.fifo_ids(msg);
        while let Some(delay) = backoff.next_delay() {
            tokio::time::sleep(delay).await;
            let sent = self
                .client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&msg.body)
                .set_message_group_id(group.clone())
                .set_message_deduplication_id(dedup.clone())
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(err) => {
                    let (failure, detail) = classify(&err);
                    tracing::warn!(attempt = backoff.attempts(), %detail, "SendMessage retry failed");
                    last = failure.into_error(detail);
                    if failure == Failure::Permanent {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}
