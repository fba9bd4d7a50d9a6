//! The DLQ side of a replay: deleting what was moved, and keeping what a run looked at and left
//! hidden until it ends.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
};
use spillway_core::batch::{answered, Answered};

use super::NotMoved;

/// Deletes `messages` from the DLQ: for each, `Ok` only when the answer names it deleted.
pub(super) async fn delete(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[&Message],
) -> Vec<Result<(), NotMoved>> {
    let calls = messages
        .chunks(10)
        .map(|chunk| delete_some(sqs, url, chunk));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One `DeleteMessageBatch` call.
async fn delete_some(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    chunk: &[&Message],
) -> Vec<Result<(), NotMoved>> {
    let entries = chunk
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .expect("set")
        })
        .collect();
    match sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => answered(
            0..chunk.len(),
            out.successful.iter().map(|e| e.id.as_str()),
            out.failed.iter().map(|e| (e.id.as_str(), e.code.as_str())),
        )
        .into_iter()
        .map(|answer| match answer {
            Answered::Done => Ok(()),
            Answered::Failed(code) => Err(NotMoved::NotDeleted(format!(
                "{url} did not delete it: {code}"
            ))),
            Answered::Unanswered => Err(NotMoved::NotDeleted(format!(
                "{url}'s DeleteMessageBatch answer did not name it"
            ))),
        })
        .collect(),
        Err(e) => {
            let e = NotMoved::NotDeleted(format!(
                "cannot delete from {url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            ));
            chunk.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

/// Sets the visibility timeout of `messages`, ten to a call; what fails simply becomes visible
/// when its current timeout ends.
pub(super) async fn set_visibility(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[&Message],
    timeout: Duration,
) {
    let seconds = i32::try_from(timeout.as_secs()).unwrap_or(43_200);
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(seconds)
                    .build()
                    .expect("set")
            })
            .collect();
        let _ = sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
    }
}

/// The messages a run looked at and left in the DLQ, kept hidden until it ends (on a FIFO DLQ,
/// only remembered as seen).
pub(super) struct Held {
    visibility: Duration,
    /// By message id: the latest copy (its receipt handle) and when its hiding lapses.
    messages: std::collections::HashMap<String, (Message, Instant)>,
    /// Looked at and made visible again (FIFO DLQs).
    seen: std::collections::HashSet<String>,
}

impl Held {
    pub(super) fn new(visibility: Duration) -> Self {
        Self {
            visibility,
            messages: std::collections::HashMap::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    pub(super) fn contains(&self, m: &Message) -> bool {
        let id = m.message_id().unwrap_or_default();
        self.messages.contains_key(id) || self.seen.contains(id)
    }

    /// Whether `m` is held hidden (not only seen).
    pub(super) fn holds(&self, m: &Message) -> bool {
        self.messages
            .contains_key(m.message_id().unwrap_or_default())
    }

    /// Remembers `m` as looked at, without holding it.
    pub(super) fn seen(&mut self, m: &Message) {
        self.seen
            .insert(m.message_id().unwrap_or_default().to_owned());
    }

    /// Holds `m`, just received (so hidden for the visibility timeout from now).
    pub(super) fn hold(&mut self, m: Message) {
        let id = m.message_id().unwrap_or_default().to_owned();
        self.messages
            .insert(id, (m, Instant::now() + self.visibility));
    }

    /// Extends the hiding of the messages whose hiding lapses within half the visibility timeout.
    pub(super) async fn keep_hidden(&mut self, sqs: &aws_sdk_sqs::Client, url: &str) {
        let soon = Instant::now() + self.visibility / 2;
        let lapsing: Vec<&Message> = self
            .messages
            .values()
            .filter(|(_, until)| *until <= soon)
            .map(|(m, _)| m)
            .collect();
        if lapsing.is_empty() {
            return;
        }
        let until = Instant::now() + self.visibility;
        set_visibility(sqs, url, &lapsing, self.visibility).await;
        for (_, lapses) in self.messages.values_mut().filter(|(_, u)| *u <= soon) {
            *lapses = until;
        }
    }

    /// Makes every held message visible again at once.
    pub(super) async fn release_all(&mut self, sqs: &aws_sdk_sqs::Client, url: &str) {
        let all: Vec<&Message> = self.messages.values().map(|(m, _)| m).collect();
        set_visibility(sqs, url, &all, Duration::ZERO).await;
        self.messages.clear();
    }
}
