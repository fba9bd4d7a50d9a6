//! The SQS side of the local poller: receive a batch as the event source mapping does, invoke the
//! handler, delete what the report says left the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::heartbeat::{Extensions, Heartbeat};
use super::{Invocation, PollSettings};
use crate::drain::Drain;
use crate::lambda::{deadline, handle_sqs};

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
    /// when the first of them was received (its visibility timeout started then).
    async fn receive(&self) -> Result<Received, aws_sdk_sqs::Error> {
        let mut batch = Vec::new();
        let mut window_ends = Instant::now() + self.settings.batch_window;
        let mut first = Instant::now();
        loop {
            let asked = Instant::now();
            let wanted = (self.settings.batch_size - batch.len()).min(10);
            // Long-poll for the first message only; then take what is there.
            let wait_secs = i32::from(batch.is_empty());
            let got = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(i32::try_from(wanted).unwrap_or(10))
                .wait_time_seconds(wait_secs)
                .visibility_timeout(
                    i32::try_from(self.settings.visibility_timeout.as_secs()).unwrap_or(30),
                )
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await?
                .messages
                .unwrap_or_default();
            let empty = got.is_empty();
            if batch.is_empty() && !empty {
                // The window runs from the first message, as Lambda's does; its visibility clock
                // started when the call was made, at the latest.
                first = asked;
                window_ends = asked + self.settings.batch_window;
            }
            batch.extend(got);
            if batch.len() >= self.settings.batch_size
                || (empty && !batch.is_empty())
                || Instant::now() >= window_ends
                || batch.is_empty()
            {
                return Ok(Received {
                    messages: batch,
                    first,
                });
            }
        }
    }

    /// One invocation: receive, drain, delete what Lambda would delete.
    pub async fn poll_once(&self, drain: &Drain) -> Result<Invocation, aws_sdk_sqs::Error> {
        let Received { messages, first } = self.receive().await?;
        if messages.is_empty() {
            return Ok(Invocation::default());
        }
        // Held from here until the deletes are done: kept hidden from other workers meanwhile.
        let _heartbeat = Heartbeat::start(
            self.client.clone(),
            self.queue_url.clone(),
            messages
                .iter()
                .filter_map(|m| m.receipt_handle.clone())
                .collect(),
            self.settings.visibility_timeout,
            first,
            self.extensions.clone(),
        );
        let mut event = SqsEvent::default();
        let mut handles = HashMap::new();
        for m in messages {
            let mut msg = SqsMessage::default();
            msg.message_id.clone_from(&m.message_id);
            msg.receipt_handle.clone_from(&m.receipt_handle);
            msg.body.clone_from(&m.body);
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
        let records = event.records.len();
        let ends = deadline(
            self.settings.function_timeout,
            self.settings.deadline_margin,
        );
        let failed: Vec<String> = match handle_sqs(drain, event, ends).await {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            // A failed invocation deletes nothing: every message reappears after the visibility timeout.
            Err(_) => handles.keys().cloned().collect(),
        };
        for id in &failed {
            handles.remove(id);
        }
        let done = self.delete(handles.into_values().collect()).await;
        Ok(Invocation { records, done })
    }
}

impl SqsPoller {
    /// The heartbeat's counts ([`Heartbeat`]): visibility extensions sent and missed.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Deletes the messages behind `handles` as Lambda does after a report, ten per call; returns how
    /// many the answers name as deleted (rule 10). A call that fails, or entries it does not name,
    /// leave their messages in the queue — they come again after the visibility timeout, as
    /// duplicates with their original `spillway-id` — and never stop the remaining calls.
    async fn delete(&self, handles: Vec<String>) -> usize {
        in_calls_of_ten(&handles, |chunk| self.delete_some(chunk)).await
    }

    /// One `DeleteMessageBatch` call; how many its answer names deleted.
    async fn delete_some(&self, chunk: &[String]) -> usize {
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

/// Runs `call` on `handles` ten at a time (the SQS batch calls' limit), [`CALLS_AT_ONCE`] calls at
/// once, as Lambda's pollers do — one after another, a 10,000-message batch took a thousand calls
/// in a row; returns the sum of what the calls answer (how many they name done).
pub(super) async fn in_calls_of_ten<'h, F, Fut>(handles: &'h [String], call: F) -> usize
where
    F: Fn(&'h [String]) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut done = 0;
    for group in handles.chunks(10 * CALLS_AT_ONCE) {
        let calls: Vec<_> = group.chunks(10).map(&call).collect();
        done += futures::future::join_all(calls)
            .await
            .into_iter()
            .sum::<usize>();
    }
    done
}
