//! The SQS side of the local poller: receive a batch as the event source mapping does, invoke the
//! handler, delete what the report says left the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::aimd::{Aimd, Outcome};
use super::heartbeat::{Extensions, Heartbeat};
use super::{Invocation, PollSettings};
use crate::drain::Drain;
use crate::lambda::{deadline, handle_sqs_reporting};

/// SQS: one worker's poll → invoke → delete cycle.
#[derive(Debug, Clone)]
pub struct SqsPoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    settings: PollSettings,
    extensions: Arc<Extensions>,
}

/// What one receive brought.
struct Received {
    messages: Vec<aws_sdk_sqs::types::Message>,
    /// When the call that brought the first message was made: its visibility timeout runs from
    /// about then.
    first: Instant,
    /// Every answer of the last receive was as large as asked (`Some(true)`: more is waiting),
    /// one was short (`Some(false)`), or a call failed or the stop came first (`None`): for the
    /// in-flight limit ([`Aimd`]).
    backlog: Option<bool>,
}

impl SqsPoller {
    /// A poller for `queue_url`; reads the queue's ARN once.
    pub async fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        settings: PollSettings,
    ) -> Result<Self, aws_sdk_sqs::Error> {
        let attrs = client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?;
        let queue_arn = attrs
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        Ok(Self {
            client,
            queue_url,
            queue_arn,
            settings,
            extensions: Arc::default(),
        })
    }

    /// Receives up to a batch, waiting at most the batching window once something arrived; with
    /// when the first of them was received (its visibility timeout started then). The first call
    /// long-polls alone. Once a message arrived:
    /// - while every answer comes back as large as asked (a backlog), the rest of the batch is
    ///   asked for at once, [`RECEIVES_AT_ONCE`] calls at a time;
    /// - after a short answer (the queue was emptied), the poller waits [`PACE`] for more to
    ///   arrive, then asks with as many calls as the last round brought tens of messages (at
    ///   least one): a trickle is taken several messages a call, not one;
    /// - it closes the batch when it is full, when an answer after a wait brought nothing, or
    ///   [`GATHER`] after the first message (or at the end of the window, if sooner) — a batch is
    ///   never held back longer for a trickle.
    ///
    /// A call that fails after something arrived ends the batch with what it has (those messages
    /// are held, not left to reappear). Once `stop` is cancelled it asks for nothing more and
    /// returns what it has.
    async fn receive(
        &self,
        stop: Option<&CancellationToken>,
    ) -> Result<Received, aws_sdk_sqs::Error> {
        let mut batch = Vec::new();
        let mut window_ends = Instant::now() + self.settings.batch_window;
        let mut first = Instant::now();
        // Calls for the next round; `None`: at once, as many as the rest of the batch needs.
        let mut paced: Option<usize> = None;
        loop {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                return Ok(Received {
                    messages: batch,
                    first,
                    backlog: None,
                });
            }
            let asked = Instant::now();
            let wanted = self.settings.batch_size - batch.len();
            // Long-poll for the first message only; then take what is there.
            let (calls, wait_secs) = if batch.is_empty() {
                (1, 1)
            } else {
                let calls = paced.unwrap_or(RECEIVES_AT_ONCE);
                (wanted.div_ceil(10).min(calls), 0)
            };
            let answers = futures::future::join_all((0..calls).map(|i| {
                let n = (wanted - i * 10).min(10);
                self.receive_some(n, wait_secs)
            }))
            .await;
            let mut empty = true;
            let mut failed = None;
            let before = batch.len();
            // Every answer as large as asked: more is waiting (a backlog, for the limit).
            let mut as_asked = true;
            for (i, answer) in answers.into_iter().enumerate() {
                match answer {
                    Ok(got) => {
                        as_asked &= got.len() >= (wanted - i * 10).min(10);
                        if batch.is_empty() && !got.is_empty() {
                            // The window runs from the first message, as Lambda's does; its
                            // visibility clock started when the call was made, at the latest.
                            // A batch gathers at most `GATHER` of it.
                            first = asked;
                            window_ends = asked + self.settings.batch_window.min(GATHER);
                        }
                        empty &= got.is_empty();
                        batch.extend(got);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                if batch.is_empty() {
                    return Err(e);
                }
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), held = batch.len(), "a receive failed; the batch goes on with what arrived");
                return Ok(Received {
                    messages: batch,
                    first,
                    backlog: None,
                });
            }
            let done = |batch: Vec<_>| Received {
                messages: batch,
                first,
                backlog: Some(as_asked),
            };
            if batch.len() >= self.settings.batch_size
                || (empty && paced.is_some())
                || Instant::now() >= window_ends
                || batch.is_empty()
            {
                return Ok(done(batch));
            }
            if as_asked {
                paced = None;
            } else {
                // The queue was emptied: wait for more, then ask with the calls the last round
                // filled (at least one).
                paced = Some(
                    (batch.len() - before)
                        .div_ceil(10)
                        .clamp(1, RECEIVES_AT_ONCE),
                );
                let wait = PACE.min(window_ends.saturating_duration_since(Instant::now()));
                if let Some(stop) = stop {
                    pause(wait, stop).await;
                } else {
                    tokio::time::sleep(wait).await;
                }
                if Instant::now() >= window_ends {
                    return Ok(done(batch));
                }
            }
        }
    }

    /// One `ReceiveMessage` call for up to `n` (≤ 10) messages.
    async fn receive_some(
        &self,
        n: usize,
        wait_secs: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, aws_sdk_sqs::Error> {
        Ok(self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(i32::try_from(n).unwrap_or(10))
            .wait_time_seconds(wait_secs)
            .visibility_timeout(
                i32::try_from(self.settings.visibility_timeout.as_secs()).unwrap_or(30),
            )
            // What the drain reads (`source::from_sqs`), not `All`: less to parse per message.
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .send()
            .await?
            .messages
            .unwrap_or_default())
    }

    /// Receives a batch and keeps it hidden ([`Heartbeat`]) until the [`Held`] is dropped.
    async fn receive_held(
        &self,
        stop: Option<&CancellationToken>,
    ) -> Result<Held, aws_sdk_sqs::Error> {
        let Received {
            messages,
            first,
            backlog,
        } = self.receive(stop).await?;
        let heartbeat = (!messages.is_empty()).then(|| {
            Heartbeat::start(
                self.client.clone(),
                self.queue_url.clone(),
                messages
                    .iter()
                    .filter_map(|m| m.receipt_handle.clone())
                    .collect(),
                self.settings.visibility_timeout,
                first,
                self.extensions.clone(),
            )
        });
        Ok(Held {
            messages,
            heartbeat,
            backlog,
        })
    }

    /// One invocation: receive, drain, delete what Lambda would delete.
    pub async fn poll_once(&self, drain: &Drain) -> Result<Invocation, aws_sdk_sqs::Error> {
        let Held {
            messages,
            heartbeat,
            ..
        } = self.receive_held(None).await?;
        let Some(heartbeat) = heartbeat else {
            return Ok(Invocation::default());
        };
        let records = messages.len();
        let report = self.invoke(drain, messages, &heartbeat).await;
        let done = self.delete(report.delete, Some(&heartbeat)).await;
        Ok(Invocation { records, done })
    }

    /// Polls until `stop`, pipelined: the next batch is received while this one is produced, and
    /// this one's deletes run while the next is produced (after its report, rule 2). An
    /// invocation that failed as a whole (rule 3: every record failed retryably) makes the
    /// worker back off before the next, as the event source mapping does — every receive counts
    /// towards the queue's `maxReceiveCount`. Stopped, it finishes the batch in hand and its
    /// deletes, and hands a batch it had already received for later back to the queue at once
    /// (visibility 0) instead of producing it.
    ///
    /// A held batch is produced once `aimd` admits it ([`Aimd`]: how many batches the workers
    /// produce at once); how it went moves the limit.
    pub async fn run(self: Arc<Self>, drain: Arc<Drain>, aimd: Arc<Aimd>, stop: CancellationToken) {
        // The batch being received for later: in a JoinSet, so that it ends with `run` when a
        // worker is aborted instead of receiving (and hiding) a batch nobody will produce.
        let mut next: tokio::task::JoinSet<Result<Held, aws_sdk_sqs::Error>> =
            tokio::task::JoinSet::new();
        let mut deletes = tokio::task::JoinSet::new();
        // Full-jitter, 1 s doubling to 30 s, while invocations fail in a row.
        let mut backoff: Option<spillway_core::backoff::Backoff> = None;
        loop {
            let held = match next.join_next().await {
                Some(Ok(held)) => held,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "a receive task failed");
                    continue;
                }
                None if stop.is_cancelled() => break,
                None => self.receive_held(Some(&stop)).await,
            };
            let Held {
                messages,
                heartbeat,
                backlog,
            } = match held {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "poll failed");
                    pause(Duration::from_secs(1), &stop).await;
                    continue;
                }
            };
            let Some(heartbeat) = heartbeat else {
                continue;
            };
            let permit = match aimd.admit(&stop).await {
                Some(permit) if !stop.is_cancelled() => permit,
                _ => {
                    // Received for later, after the stop: back to the queue now, its heartbeat
                    // stopped first so that no extension hides it again.
                    drop(heartbeat);
                    self.release(&messages).await;
                    continue;
                }
            };
            let (poller, stopping) = (self.clone(), stop.clone());
            next.spawn(async move { poller.receive_held(Some(&stopping)).await });
            let report = self.invoke(&drain, messages, &heartbeat).await;
            permit.done(Outcome {
                backlog,
                trouble: report.failed_whole || report.trouble,
                produce: report.produce,
            });
            while deletes.len() >= DELETE_JOBS {
                deletes.join_next().await;
            }
            let poller = self.clone();
            deletes.spawn(async move {
                poller.delete(report.delete, Some(&heartbeat)).await;
            });
            if report.failed_whole {
                let wait = backoff
                    .get_or_insert_with(|| {
                        spillway_core::backoff::Backoff::new(
                            Duration::from_secs(1),
                            Duration::from_secs(30),
                            Duration::from_secs(86_400),
                        )
                    })
                    .next_delay()
                    .unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "the invocation failed; backing off before the next"
                );
                pause(wait, &stop).await;
            } else {
                backoff = None;
            }
        }
        while deletes.join_next().await.is_some() {}
    }

    /// Makes `messages` visible again at once (a stopping worker's batch received for later).
    async fn release(&self, messages: &[aws_sdk_sqs::types::Message]) {
        let handles: Vec<String> = messages
            .iter()
            .filter_map(|m| m.receipt_handle.clone())
            .collect();
        in_calls_of_ten(&handles, CALLS_AT_ONCE, |chunk| {
            super::heartbeat::extend(&self.client, &self.queue_url, chunk, Duration::ZERO)
        })
        .await;
    }

    /// Invokes the handler on `messages` as Lambda does. The messages the report failed are no
    /// longer held by `heartbeat` (they reappear when their visibility timeout ends, as with
    /// Lambda); the others are to be deleted.
    async fn invoke(
        &self,
        drain: &Drain,
        messages: Vec<aws_sdk_sqs::types::Message>,
        heartbeat: &Heartbeat,
    ) -> Report {
        let mut event = SqsEvent::default();
        let mut handles = HashMap::new();
        for m in messages {
            let mut msg = SqsMessage::default();
            msg.message_id.clone_from(&m.message_id);
            msg.receipt_handle.clone_from(&m.receipt_handle);
            // Moved, not copied: the body is the largest part of a message.
            msg.body = m.body;
            msg.attributes = m
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect();
            msg.event_source = Some("aws:sqs".into());
            msg.event_source_arn = Some(self.queue_arn.clone());
            if let (Some(id), Some(handle)) = (m.message_id, m.receipt_handle) {
                handles.insert(id, handle);
            }
            event.records.push(msg);
        }
        let ends = deadline(
            self.settings.function_timeout,
            self.settings.deadline_margin,
        );
        let (drained, answer) = handle_sqs_reporting(drain, event, ends).await;
        let (produce, trouble) = (
            drained.produce_latencies.iter().max().copied(),
            drained.backoff.is_some() || drained.met_broker_trouble(),
        );
        let Ok(response) = answer else {
            // A failed invocation deletes nothing: every message reappears after the visibility timeout.
            heartbeat.forget(handles.values());
            return Report {
                delete: Vec::new(),
                failed_whole: true,
                trouble,
                produce,
            };
        };
        let failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .filter_map(|f| handles.remove(&f.item_identifier))
            .collect();
        heartbeat.forget(&failed);
        Report {
            delete: handles.into_values().collect(),
            failed_whole: false,
            trouble,
            produce,
        }
    }
}

/// What an invocation's report leaves to the poller.
struct Report {
    /// Receipt handles of the messages that may leave the queue.
    delete: Vec<String>,
    /// The invocation failed as a whole.
    failed_whole: bool,
    /// The drain backed off for authentication failures before producing, or a record failed in
    /// Kafka or for want of it ([`crate::report::DrainReport::met_broker_trouble`]).
    trouble: bool,
    /// The longest enqueue-to-acknowledgement time of the batch's records.
    produce: Option<Duration>,
}

/// Sleeps `wait`, or until `stop`.
async fn pause(wait: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

/// A received batch, kept hidden by its heartbeat until dropped.
struct Held {
    messages: Vec<aws_sdk_sqs::types::Message>,
    heartbeat: Option<Heartbeat>,
    /// [`Received::backlog`].
    backlog: Option<bool>,
}

/// `ReceiveMessage` calls one poller makes at once to fill a batch once messages are there.
const RECEIVES_AT_ONCE: usize = 4;

/// How long a batch being gathered waits for more after the queue came back short: long enough
/// that a call brings several messages of a trickle, short beside a produce.
const PACE: Duration = Duration::from_millis(20);

/// The longest a batch is gathered after its first message (the window, if shorter): the latency
/// a trickle pays for fuller batches.
const GATHER: Duration = Duration::from_millis(100);

/// Batches whose deletes may still be running while the next one is produced.
const DELETE_JOBS: usize = 2;

impl SqsPoller {
    /// The heartbeat's counts ([`Heartbeat`]): visibility extensions sent and missed.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Deletes the messages behind `handles` as Lambda does after a report, ten per call; returns how
    /// many the answers name as deleted (rule 10). A call that fails, or entries it does not name,
    /// leave their messages in the queue — they come again after the visibility timeout, as
    /// duplicates with their original `spillway-id` — and never stop the remaining calls.
    /// Deleted messages are no longer held by `heartbeat`.
    async fn delete(&self, handles: Vec<String>, heartbeat: Option<&Heartbeat>) -> usize {
        in_calls_of_ten(&handles, CALLS_AT_ONCE, |chunk| {
            self.delete_some(chunk, heartbeat)
        })
        .await
    }

    /// One `DeleteMessageBatch` call; how many its answer names deleted.
    async fn delete_some(&self, chunk: &[String], heartbeat: Option<&Heartbeat>) -> usize {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        match self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                use spillway_core::batch::{answered, Answered};
                let answers = answered(
                    0..chunk.len(),
                    out.successful.iter().map(|e| e.id.as_str()),
                    out.failed.iter().map(|e| (e.id.as_str(), ())),
                );
                let deleted = chunk
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| **a == Answered::Done)
                    .map(|(h, _)| h);
                if let Some(heartbeat) = heartbeat {
                    heartbeat.forget(deleted);
                }
                let done = answers.iter().filter(|a| **a == Answered::Done).count();
                if done < chunk.len() {
                    tracing::warn!(
                        deleted = done,
                        failed = out.failed.len(),
                        of = chunk.len(),
                        "DeleteMessageBatch left messages in the queue; they come again"
                    );
                }
                done
            }
            Err(e) => {
                tracing::warn!(
                    error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                    messages = chunk.len(),
                    "DeleteMessageBatch failed; the messages come again"
                );
                0
            }
        }
    }
}

/// Batch calls (`DeleteMessageBatch`, `ChangeMessageVisibilityBatch`) one poller has in flight at
/// once.
const CALLS_AT_ONCE: usize = 8;

/// Runs `call` on `handles` ten at a time (the SQS batch calls' limit), `at_once` calls at
/// once, as Lambda's pollers do — one after another, a 10,000-message batch took a thousand calls
/// in a row; returns the sum of what the calls answer (how many they name done).
pub(super) async fn in_calls_of_ten<'h, F, Fut>(
    handles: &'h [String],
    at_once: usize,
    call: F,
) -> usize
where
    F: Fn(&'h [String]) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut done = 0;
    for group in handles.chunks(10 * at_once.max(1)) {
        let calls: Vec<_> = group.chunks(10).map(&call).collect();
        done += futures::future::join_all(calls)
            .await
            .into_iter()
            .sum::<usize>();
    }
    done
}
