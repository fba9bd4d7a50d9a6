//! `spillway replay`: dead-lettered messages back to the source queue, or straight to Kafka.
//!
//! Receive → write to the target → delete: a DLQ message is deleted only after its target
//! acknowledged it (delivery rule 2), so an interrupted replay — even `kill -9` — loses nothing;
//! running it again moves what is left. Messages in flight when it stopped may be written twice
//! (at most the in-flight window, 10 per worker); the copies carry the same envelope and so the
//! same `spillway-id`. Messages the filters skip are made visible again at once.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use buffer_drain::drain::Drain;
use buffer_drain::report::Outcome;
use buffer_drain::source::{Ordering, SourceRecord};

/// Where replayed messages go.
pub enum Target {
    /// Back to a queue (normally the DLQ's source).
    Queue(String),
    /// Straight to Kafka through the drain's producer.
    Kafka(Box<Drain>),
}

/// Which messages to move.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Only messages whose `spillway-reason` attribute contains this.
    pub reason: Option<String>,
    /// Only messages at least this old.
    pub older_than: Option<Duration>,
    /// At most this many.
    pub max: Option<u64>,
    /// How long a received message stays hidden while it is moved; after an interruption, what was
    /// in flight reappears in the DLQ after this long.
    pub visibility: Duration,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Written to the target and deleted from the DLQ.
    pub moved: u64,
    /// Left in the DLQ by the filters.
    pub skipped: u64,
    /// Not accepted by the target; left in the DLQ.
    pub failed: u64,
    /// `--dry-run`: would have moved.
    pub would_move: u64,
}

fn reason(m: &Message) -> Option<&str> {
    m.message_attributes()?
        .get(buffer_drain::dlq::REASON_ATTRIBUTE)?
        .string_value()
}

fn age(m: &Message) -> Option<Duration> {
    let sent: u64 = m
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    Some(Duration::from_millis(
        spillway_core::envelope::now_ms().saturating_sub(sent),
    ))
}

fn matches(filters: &Filters, m: &Message) -> bool {
    filters
        .reason
        .as_ref()
        .is_none_or(|r| reason(m).is_some_and(|have| have.contains(r.as_str())))
        && filters
            .older_than
            .is_none_or(|min| age(m).is_some_and(|a| a >= min))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .ok()?
        .attributes?;
    attrs.get(&QueueAttributeName::QueueArn).cloned()
}

/// SQS's own redrive (`StartMessageMoveTask`), for a whole DLQ back to a queue without filters.
/// `None` when the endpoint does not offer it (the local emulator does not): the caller falls back
/// to receive → send → delete.
async fn move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    rate: Option<NonZeroU32>,
) -> Option<Summary> {
    let (source, destination) = (
        queue_arn(sqs, dlq_url).await?,
        queue_arn(sqs, queue_url).await?,
    );
    let before = waiting(sqs, dlq_url).await.unwrap_or(0);
    let mut request = sqs
        .start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination);
    if let Some(rate) = rate {
        request = request
            .max_number_of_messages_per_second(i32::try_from(rate.get()).unwrap_or(i32::MAX));
    }
    let handle = match request.send().await {
        Ok(out) => out.task_handle?,
        Err(e) => {
            tracing::info!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "StartMessageMoveTask unavailable; moving message by message");
            return None;
        }
    };
    tracing::info!(%handle, "StartMessageMoveTask started");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tasks = sqs
            .list_message_move_tasks()
            .source_arn(&source)
            .send()
            .await
            .ok()?;
        let task = tasks
            .results
            .unwrap_or_default()
            .into_iter()
            .find(|t| t.task_handle() == Some(handle.as_str()))?;
        match task.status() {
            Some("COMPLETED") => {
                let moved =
                    u64::try_from(task.approximate_number_of_messages_moved()).unwrap_or(before);
                return Some(Summary {
                    moved,
                    ..Summary::default()
                });
            }
            Some("FAILED" | "CANCELLED") => {
                let failed = before.saturating_sub(
                    u64::try_from(task.approximate_number_of_messages_moved()).unwrap_or(0),
                );
                return Some(Summary {
                    failed,
                    ..Summary::default()
                });
            }
            _ => {}
        }
    }
}

/// Moves messages from `dlq_url` to `target`; `rate` messages per second at most.
pub async fn run(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    target: &Target,
    filters: &Filters,
    rate: Option<NonZeroU32>,
    dry_run: bool,
    progress: &indicatif::ProgressBar,
) -> Result<Summary, String> {
    let unfiltered =
        filters.reason.is_none() && filters.older_than.is_none() && filters.max.is_none();
    if let (Target::Queue(queue_url), true, false) = (target, unfiltered, dry_run) {
        if let Some(summary) = move_task(sqs, dlq_url, queue_url, rate).await {
            return Ok(summary);
        }
    }
    let limiter = rate.map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r)));
    let mut summary = Summary::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut empty_receives = 0;
    loop {
        let taken = summary.moved + summary.would_move;
        if filters.max.is_some_and(|max| taken >= max) || empty_receives >= 2 {
            return Ok(summary);
        }
        let want = filters.max.map_or(10, |max| (max - taken).min(10));
        let received = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(10))
            .wait_time_seconds(1)
            .visibility_timeout(
                i32::try_from(filters.visibility.as_secs())
                    .unwrap_or(30)
                    .max(1),
            )
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot receive from {dlq_url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })?
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            empty_receives += 1;
            continue;
        }
        let fresh = received
            .iter()
            .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_owned()))
            .count();
        if fresh == 0 && (dry_run || filters.reason.is_some() || filters.older_than.is_some()) {
            // Only messages already looked at come back: everything that matches has been handled.
            release(sqs, dlq_url, &received).await;
            return Ok(summary);
        }
        let (chosen, rest): (Vec<Message>, Vec<Message>) =
            received.into_iter().partition(|m| matches(filters, m));
        summary.skipped += rest.len() as u64;
        release(sqs, dlq_url, &rest).await;
        if dry_run {
            for m in &chosen {
                progress.println(format!(
                    "would move {} (reason: {}, age: {})",
                    m.message_id().unwrap_or("?"),
                    reason(m).unwrap_or("-"),
                    age(m).map_or_else(
                        || "?".to_owned(),
                        |a| humantime::format_duration(Duration::from_secs(a.as_secs()))
                            .to_string()
                    )
                ));
            }
            summary.would_move += chosen.len() as u64;
            release(sqs, dlq_url, &chosen).await;
            continue;
        }
        if let Some(limiter) = &limiter {
            for _ in &chosen {
                limiter.until_ready().await;
            }
        }
        let accepted = write(sqs, target, &chosen).await;
        let done: Vec<&Message> = chosen
            .iter()
            .zip(&accepted)
            .filter(|(_, ok)| **ok)
            .map(|(m, _)| m)
            .collect();
        delete(sqs, dlq_url, &done).await?;
        summary.moved += done.len() as u64;
        summary.failed += (chosen.len() - done.len()) as u64;
        progress.inc(done.len() as u64);
    }
}

/// Writes to the target; one "acknowledged" per message.
async fn write(sqs: &aws_sdk_sqs::Client, target: &Target, messages: &[Message]) -> Vec<bool> {
    match target {
        Target::Queue(url) => {
            let fifo = spillway_core::limits::is_fifo_queue(url);
            let entries: Vec<_> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(m.body().unwrap_or_default());
                    if fifo {
                        let group = m
                            .attributes()
                            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                            .cloned();
                        entry = entry
                            .message_group_id(group.unwrap_or_else(|| "replay".into()))
                            .message_deduplication_id(m.message_id().unwrap_or_default());
                    }
                    entry.build().expect("id and body are set")
                })
                .collect();
            match sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    let failed: HashSet<usize> = out
                        .failed
                        .iter()
                        .filter_map(|f| f.id.parse().ok())
                        .collect();
                    (0..messages.len()).map(|i| !failed.contains(&i)).collect()
                }
                Err(_) => vec![false; messages.len()],
            }
        }
        Target::Kafka(drain) => {
            let records: Vec<SourceRecord> = messages
                .iter()
                .map(|m| SourceRecord {
                    item_id: m.message_id().unwrap_or_default().to_owned(),
                    group: None,
                    data: m.body().unwrap_or_default().as_bytes().to_vec(),
                    buffered_at_ms: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .and_then(|t| t.parse().ok()),
                    trace: None,
                    source: "replay".into(),
                })
                .collect();
            let report = drain
                .drain(
                    &records,
                    Ordering::Unordered,
                    Instant::now() + Duration::from_secs(30),
                )
                .await;
            report
                .outcomes
                .iter()
                .map(|o| matches!(o, Outcome::Delivered))
                .collect()
        }
    }
}

async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, messages: &[&Message]) -> Result<(), String> {
    if messages.is_empty() {
        return Ok(());
    }
    let entries = messages
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
    sqs.delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "cannot delete from {url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
}

/// Makes skipped messages visible again at once.
async fn release(sqs: &aws_sdk_sqs::Client, url: &str, messages: &[Message]) {
    for m in messages {
        let _ = sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await;
    }
}

/// Messages waiting in the DLQ now (for the progress bar).
pub async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<u64> {
    crate::status::queue(sqs, url).await.ok().map(|q| q.waiting)
}
