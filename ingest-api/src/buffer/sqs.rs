//! SQS writer: `SendMessageBatch` packing, FIFO group and deduplication ids, single retries.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use futures::stream::{self, StreamExt};
use spillway_core::backoff::Backoff;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{classify, id_or_digest, pack, Failure, Outgoing, WriteError, RETRY_BASE, RETRY_CAP};

/// Calls in flight at once for the messages of all requests to a standard queue (see
/// [`SqsBuffer::write_shared`]); while one is in flight, a new call gathers what arrives for up to
/// [`LINGER`], and when every one is busy, waiting messages go up to ten to a call.
const SHARED_CALLS: usize = 16;
/// Messages that may wait for a shared call; past it a write is throttled (429, retry) rather than
/// queued without end. At 10 a call and 16 calls in flight this is ~26 rounds of calls.
const LANE_CAPACITY: usize = 4096;
/// How long a call that is not full waits for more messages while another call is in flight:
/// Kafka's `linger.ms` default. In the spike (2,000 one-message requests/s) calls sent as soon as a
/// slot was free carried 2.7 messages on average; the SDK's per-call work (signing, serialising,
/// the orchestrator) was a third of ingest's CPU.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
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
    /// Standard queues: where messages wait for a shared call; started by the first write, and
    /// again by the next one if its task is gone (the runtime that ran it ended).
    lane: Arc<Mutex<Option<mpsc::Sender<Waiting>>>>,
}

/// A message waiting for a shared `SendMessageBatch` call, with its request's deadline and the
/// channel its outcome goes back on.
#[derive(Debug)]
struct Waiting {
    msg: Outgoing,
    deadline: Instant,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// The outcome of a message whose shared call never reported: it was not accepted.
fn stopped() -> WriteError {
    WriteError::Unavailable("the SQS writer stopped before it reported".into())
}

impl SqsBuffer {
    /// A writer for `queue_url`, whose `MaximumMessageSize` is `max_message_bytes`.
    pub fn new(client: Client, queue_url: String, fifo: bool, max_message_bytes: usize) -> Self {
        Self {
            client,
            queue_url,
            fifo,
            max_message_bytes,
            lane: Arc::default(),
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
            .message_body(text(&msg.body))
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
            .build()
            .expect("id and body are set")
    }

    /// FIFO: the group is the Kafka key (so one key's messages stay in order) or, without a key, the
    /// message id (no ordering asked for, no head-of-line blocking). Deduplication uses the message
    /// id, never the raw idempotency key: the id of a message with an `Idempotency-Key` is derived
    /// from its topic and key, so the same key on two topics is two messages (SQS deduplicates per
    /// queue, across groups), while retries to one topic share the id and are dropped.
    /// A standard queue: no deduplication, and the tenant, if any, as the message group (fair
    /// queues).
    fn fifo_ids(&self, msg: &Outgoing) -> (Option<String>, Option<String>) {
        if !self.fifo {
            let tenant = msg
                .tenant
                .as_deref()
                .map(|t| id_or_digest(t.as_bytes(), MAX_FIFO_ID, fifo_id_char));
            return (tenant, None);
        }
        let group = id_or_digest(
            msg.group.as_deref().map_or(
                msg.key.as_deref().unwrap_or(msg.id.as_bytes()),
                str::as_bytes,
            ),
            MAX_FIFO_ID,
            fifo_id_char,
        );
        let dedup = id_or_digest(msg.id.as_bytes(), MAX_FIFO_ID, fifo_id_char);
        (Some(group), Some(dedup))
    }

    /// Writes `batch`; see the module docs of [`super`]. A body that is not text (only replay
    /// can give one) is refused: an SQS message body is text.
    pub async fn write(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        if batch.iter().all(|m| std::str::from_utf8(&m.body).is_ok()) {
            return self.write_text(batch, deadline).await;
        }
        let (text, binary): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| std::str::from_utf8(&batch[i].body).is_ok());
        let subset: Vec<Outgoing> = text.iter().map(|&i| batch[i].clone()).collect();
        let mut outcomes = vec![Ok(()); batch.len()];
        for i in binary {
            outcomes[i] = Err(WriteError::Refused(
                "binary data: an SQS message body is text".into(),
            ));
        }
        for (i, outcome) in text
            .into_iter()
            .zip(self.write_text(&subset, deadline).await)
        {
            outcomes[i] = outcome;
        }
        outcomes
    }

    async fn write_text(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        if !self.fifo {
            return self.write_shared(batch, deadline).await;
        }
        let runs = pack(
            batch.iter().map(|m| m.body.len()),
            MAX_BATCH_ENTRIES,
            self.max_message_bytes,
        );
        // Only a FIFO queue comes here (standard queues share calls): it keeps the order of calls
        // within a group only if they are not concurrent.
        let concurrency = 1;
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

    /// A standard queue: the messages join those of every other request waiting for a call, and
    /// each outcome is the one its entry got (rule 1: `Ok` only when SQS named it written). One
    /// call per request cost the ingest ~350 µs of CPU per request in the load test's spike (the
    /// SDK's signing, serialising and orchestration), as much again in the queue's server, and the
    /// burst's p99 with it. A FIFO queue does not come here: calls within a group must not overlap.
    async fn write_shared(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let lane = self.lane();
        let waits: Vec<_> = batch
            .iter()
            .map(|msg| {
                let (done, outcome) = oneshot::channel();
                let queued = lane.try_send(Waiting {
                    msg: msg.clone(),
                    deadline,
                    done,
                });
                match queued {
                    Ok(()) => Ok(outcome),
                    Err(mpsc::error::TrySendError::Full(_)) => Err(WriteError::Throttled),
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
                }
            })
            .collect();
        let mut outcomes = Vec::with_capacity(waits.len());
        for wait in waits {
            outcomes.push(match wait {
                Ok(outcome) => outcome.await.unwrap_or_else(|_| Err(stopped())),
                Err(refused) => Err(refused),
            });
        }
        outcomes
    }

    /// The lane's sender, its task started if there is none running.
    fn lane(&self) -> mpsc::Sender<Waiting> {
        let mut lane = self
            .lane
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match lane.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(LANE_CAPACITY);
                // A writer without this lane: the task must not keep its own channel open.
                let writer = Self {
                    lane: Arc::default(),
                    ..self.clone()
                };
                tokio::spawn(writer.run_lane(rx));
                *lane = Some(tx.clone());
                tx
            }
        }
    }

    /// Sends what waits in the lane: a call as soon as one of [`SHARED_CALLS`] is free, carrying
    /// every message waiting then, up to ten and the queue's byte limit; while another call is in
    /// flight, one that is not full first waits up to [`LINGER`] for more. Without load a message
    /// goes alone at once; under load calls fill up instead of queueing behind each other.
    async fn run_lane(self, mut waiting: mpsc::Receiver<Waiting>) {
        let calls = Arc::new(Semaphore::new(SHARED_CALLS));
        let mut carried: Option<Waiting> = None;
        loop {
            let Ok(call) = calls.clone().acquire_owned().await else {
                return;
            };
            let first = match carried.take() {
                Some(w) => w,
                None => match waiting.recv().await {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut bytes = first.msg.body.len();
            let mut run = vec![first];
            // Alone, a message goes at once; while another call is in flight, a call that is not
            // full waits up to LINGER for more.
            let linger_ends = (calls.available_permits() + 1 < SHARED_CALLS)
                .then(|| tokio::time::Instant::now() + LINGER);
            while run.len() < MAX_BATCH_ENTRIES {
                let next = match (waiting.try_recv(), linger_ends) {
                    (Ok(w), _) => w,
                    (Err(mpsc::error::TryRecvError::Empty), Some(ends)) => {
                        match tokio::time::timeout_at(ends, waiting.recv()).await {
                            Ok(Some(w)) => w,
                            _ => break,
                        }
                    }
                    (Err(_), _) => break,
                };
                if bytes + next.msg.body.len() <= self.max_message_bytes {
                    bytes += next.msg.body.len();
                    run.push(next);
                } else {
                    carried = Some(next);
                    break;
                }
            }
            // A request that has gone (its client hung up) has no one to tell: not sent.
            run.retain(|w| !w.done.is_closed());
            if run.is_empty() {
                continue;
            }
            let writer = self.clone();
            tokio::spawn(async move {
                let (msgs, mut dones): (Vec<Outgoing>, Vec<_>) = run
                    .into_iter()
                    .map(|w| (w.msg, Some((w.done, w.deadline))))
                    .unzip();
                // Always one attempt, even with a zero retry budget or a deadline already past.
                let (outcomes, retry) = writer.call_batch(&msgs, 0).await;
                drop(call);
                for (i, outcome) in outcomes.into_iter().enumerate() {
                    if !retry.iter().any(|(r, _)| *r == i) {
                        if let Some((done, _)) = dones[i].take() {
                            let _ = done.send(outcome);
                        }
                    }
                }
                // Each retried entry against its own request's deadline, side by side: one
                // request's short budget does not cut another's.
                let retries = retry.into_iter().filter_map(|(i, last)| {
                    let (done, deadline) = dones[i].take()?;
                    let msg = &msgs[i];
                    let writer = &writer;
                    Some(async move {
                        let _ = done.send(writer.send_alone(msg, last, deadline).await);
                    })
                });
                futures::future::join_all(retries).await;
            });
        }
    }

    /// One `SendMessageBatch` call; entries that fail in it are retried alone.
    async fn send_run(
        &self,
        run: &[Outgoing],
        first: usize,
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let (mut outcomes, retry) = self.call_batch(run, first).await;
        // Retried one after another: for a FIFO queue this keeps the group's order among retries.
        for (i, last) in retry {
            outcomes[i] = self.send_alone(&run[i], last, deadline).await;
        }
        outcomes
    }

    /// The `SendMessageBatch` call alone: each entry's outcome, and the entries to retry (their
    /// outcome `Ok` until retried) with why the call did not take them.
    async fn call_batch(
        &self,
        run: &[Outgoing],
        first: usize,
    ) -> (Vec<Result<(), WriteError>>, Vec<(usize, WriteError)>) {
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
                for (i, settled) in settle_batch(&out, first, run.len()).into_iter().enumerate() {
                    match settled {
                        Ok(()) => {}
                        Err((Failure::Permanent, code)) => {
                            outcomes[i] = Err(WriteError::Refused(code));
                        }
                        Err((failure, code)) => retry.push((i, failure.into_error(code))),
                    }
                }
            }
            Err(err) => match classify(&err) {
                (Failure::Permanent, detail) => {
                    tracing::error!(queue = %self.queue_url, %detail, "SendMessageBatch refused");
                    return (
                        vec![Err(WriteError::Refused(detail)); run.len()],
                        Vec::new(),
                    );
                }
                (failure, detail) => {
                    let error = failure.into_error(detail);
                    retry.extend((0..run.len()).map(|i| (i, error.clone())));
                }
            },
        }
        (outcomes, retry)
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
                .message_body(text(&msg.body))
                .set_message_group_id(group.clone())
                .set_message_deduplication_id(dedup.clone())
                .send()
                .await;
            match sent {
                Ok(out) if out.message_id.as_deref().is_some_and(|id| !id.is_empty()) => {
                    return Ok(())
                }
                Ok(_) => {
                    last =
                        WriteError::Unavailable("SendMessage answered without a message id".into());
                }
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

/// A body [`SqsBuffer::write`] has checked is text.
fn text(body: &[u8]) -> &str {
    std::str::from_utf8(body).unwrap_or_default()
}

/// Each entry of a `SendMessageBatch` answer for a run starting at request id `first`: `Ok` only
/// when the answer lists it under `Successful` (rule 10); listed under `Failed`, the failure as
/// SQS gave it (sender faults are permanent); named nowhere — or both written and failed — a
/// transient failure, so it is retried alone rather than reported accepted.
fn settle_batch(
    out: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput,
    first: usize,
    len: usize,
) -> Vec<Result<(), (Failure, String)>> {
    use spillway_core::batch::{answered, Answered};
    answered(
        first..first + len,
        out.successful.iter().map(|ok| ok.id.as_str()),
        out.failed.iter().map(|f| (f.id.as_str(), f)),
    )
    .into_iter()
    .map(|answer| match answer {
        Answered::Done => Ok(()),
        Answered::Failed(failed) => Err((
            if failed.sender_fault {
                Failure::Permanent
            } else if super::is_throttling_code(&failed.code) {
                Failure::Throttled
            } else {
                Failure::Transient
            },
            failed.code.clone(),
        )),
        Answered::Unanswered => Err((
            Failure::Transient,
            "not named in the SendMessageBatch answer".to_owned(),
        )),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};

    fn written(id: &str) -> SendMessageBatchResultEntry {
        SendMessageBatchResultEntry::builder()
            .id(id)
            .message_id(format!("m-{id}"))
            .md5_of_message_body("x")
            .build()
            .expect("entry")
    }

    fn failed(id: &str, code: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .sender_fault(sender_fault)
            .build()
            .expect("entry")
    }

    /// Issue 14 item 6: an entry counts as written only when the answer names it as written. An
    /// answer that leaves entries out, or names ids that are not in the request, leaves those
    /// entries to be retried — never 202.
    #[test]
    fn only_entries_named_successful_count_as_written() {
        let out = SendMessageBatchOutput::builder()
            .successful(written("10"))
            .failed(failed("12", "RequestThrottled", false))
            .failed(failed("13", "InvalidMessageContents", true))
            .failed(failed("99", "InternalError", false)) // not in this run
            .build()
            .expect("output");
        let settled = settle_batch(&out, 10, 5);
        assert_eq!(settled[0], Ok(()));
        assert!(
            matches!(&settled[1], Err((Failure::Transient, why)) if why.contains("not named")),
            "missing from the answer: {:?}",
            settled[1]
        );
        assert_eq!(
            settled[2],
            Err((Failure::Throttled, "RequestThrottled".into()))
        );
        assert_eq!(
            settled[3],
            Err((Failure::Permanent, "InvalidMessageContents".into()))
        );
        assert!(settled[4].is_err(), "missing from the answer");
        let empty = SendMessageBatchOutput::builder()
            .set_successful(Some(Vec::new()))
            .set_failed(Some(Vec::new()))
            .build()
            .expect("output");
        assert!(settle_batch(&empty, 0, 3).iter().all(Result::is_err));
    }
}
