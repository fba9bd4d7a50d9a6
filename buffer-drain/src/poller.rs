//! The local poller: plays the event source mapping on one machine. It polls the buffer like
//! Lambda's pollers do, builds real `SqsEvent` / `KinesisEvent` values, calls the same handlers as
//! the Lambda binary and applies the reports exactly as Lambda does: SQS successes are deleted and
//! failures are left to reappear after the visibility timeout; a Kinesis shard resumes at the
//! lowest failed sequence number. Each worker owns its own [`Drain`] (producer and connections),
//! as a separate Lambda container would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::drain::Drain;
use crate::lambda::{deadline, handle_kinesis, handle_sqs};

/// How the poller batches and times invocations.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// Most records per invocation (`SPILLWAY_BATCH_SIZE`).
    pub batch_size: usize,
    /// Longest wait to fill a batch (`SPILLWAY_BATCH_WINDOW`).
    pub batch_window: Duration,
    /// SQS visibility timeout of received messages (`SPILLWAY_VISIBILITY_TIMEOUT`).
    pub visibility_timeout: Duration,
    /// The simulated function timeout: each invocation's time budget (`SPILLWAY_FUNCTION_TIMEOUT`).
    pub function_timeout: Duration,
    /// `SPILLWAY_DEADLINE_MARGIN`.
    pub deadline_margin: Duration,
}

/// What one invocation did, for counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Records in the batch.
    pub records: usize,
    /// Records that left the buffer (delivered or dead-lettered).
    pub done: usize,
}

/// SQS: one worker's poll → invoke → delete cycle.
#[derive(Debug, Clone)]
pub struct SqsPoller {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    settings: PollSettings,
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
        })
    }

    /// Receives up to a batch, waiting at most the batching window once something arrived.
    async fn receive(&self) -> Result<Vec<aws_sdk_sqs::types::Message>, aws_sdk_sqs::Error> {
        let mut batch = Vec::new();
        let window_ends = Instant::now() + self.settings.batch_window;
        loop {
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
            batch.extend(got);
            if batch.len() >= self.settings.batch_size
                || (empty && !batch.is_empty())
                || Instant::now() >= window_ends
            {
                return Ok(batch);
            }
            if batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// One invocation: receive, drain, delete what Lambda would delete.
    pub async fn poll_once(&self, drain: &Drain) -> Result<Invocation, aws_sdk_sqs::Error> {
        let messages = self.receive().await?;
        if messages.is_empty() {
            return Ok(Invocation::default());
        }
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
    /// Deletes the messages behind `handles` as Lambda does after a report, ten per call; returns how
    /// many the answers name as deleted (rule 10). A call that fails, or entries it does not name,
    /// leave their messages in the queue — they come again after the visibility timeout, as
    /// duplicates with their original `spillway-id` — and never stop the remaining calls.
    async fn delete(&self, handles: Vec<String>) -> usize {
        let mut deleted = 0;
        for chunk in handles.chunks(10) {
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
                    deleted += done;
                }
                Err(e) => tracing::warn!(
                    error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                    messages = chunk.len(),
                    "DeleteMessageBatch failed; the messages come again"
                ),
            }
        }
        deleted
    }
}

/// Kinesis: one shard, iterated with a checkpoint kept in memory.
#[derive(Debug, Clone)]
pub struct KinesisPoller {
    client: aws_sdk_kinesis::Client,
    stream: String,
    stream_arn: String,
    shard_id: String,
    settings: PollSettings,
    /// Where the next batch starts: after this sequence number, at it, or at the trim horizon.
    checkpoint: Checkpoint,
    /// The iterator to read next, while reading on from the checkpoint: real Kinesis returns empty
    /// pages inside a shard, and only `NextShardIterator` leads past them.
    iterator: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Checkpoint {
    TrimHorizon,
    At(String),
    After(String),
}

impl KinesisPoller {
    /// A poller for one shard of `stream`, from the trim horizon.
    pub async fn new(
        client: aws_sdk_kinesis::Client,
        stream: String,
        shard_id: String,
        settings: PollSettings,
    ) -> Result<Self, aws_sdk_kinesis::Error> {
        let summary = client
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await?;
        let stream_arn = summary
            .stream_description_summary
            .map(|s| s.stream_arn)
            .unwrap_or_default();
        Ok(Self {
            client,
            stream,
            stream_arn,
            shard_id,
            settings,
            checkpoint: Checkpoint::TrimHorizon,
            iterator: None,
        })
    }

    /// The shards of `stream`.
    pub async fn shards(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
    ) -> Result<Vec<String>, aws_sdk_kinesis::Error> {
        let out = client.list_shards().stream_name(stream).send().await?;
        Ok(out
            .shards
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.shard_id)
            .collect())
    }

    /// An iterator at the checkpoint.
    async fn iterator_at_checkpoint(&self) -> Result<Option<String>, aws_sdk_kinesis::Error> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let request = match &self.checkpoint {
            Checkpoint::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Checkpoint::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            Checkpoint::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
        };
        Ok(request.send().await?.shard_iterator)
    }

    /// One invocation: read on (or from the checkpoint), drain, move the checkpoint as Lambda would.
    pub async fn poll_once(&mut self, drain: &Drain) -> Result<Invocation, aws_sdk_kinesis::Error> {
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => match self.iterator_at_checkpoint().await? {
                Some(iterator) => iterator,
                None => return Ok(Invocation::default()),
            },
        };
        // On an error (an expired iterator among them) the next poll starts again at the checkpoint.
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(self.settings.batch_size).unwrap_or(100))
            .send()
            .await?;
        if out.records.is_empty() {
            // An empty page is not the end of the shard: read on from where it points. `None`: the
            // shard is closed and fully read; the checkpoint stays.
            self.iterator = out.next_shard_iterator;
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(Invocation::default());
        }
        // Built as Lambda's JSON, so the event is exactly what the function would receive.
        let json_records: Vec<serde_json::Value> = out
            .records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r.partition_key,
                        "sequenceNumber": r.sequence_number,
                        "data": STANDARD.encode(r.data.as_ref()),
                        "approximateArrivalTimestamp": r.approximate_arrival_timestamp.map_or(0, |t| t.secs()),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("{}:{}", self.shard_id, r.sequence_number),
                    "eventName": "aws:kinesis:record",
                    "eventSourceARN": self.stream_arn,
                })
            })
            .collect();
        let event: KinesisEvent =
            serde_json::from_value(serde_json::json!({ "Records": json_records }))
                .expect("the poller writes the Kinesis event shape");
        let records = event.records.len();
        let last = out
            .records
            .last()
            .map(|r| r.sequence_number.clone())
            .unwrap_or_default();
        let ends = deadline(
            self.settings.function_timeout,
            self.settings.deadline_margin,
        );
        let done = match handle_kinesis(drain, event, ends).await {
            Ok(response) => {
                let lowest = response
                    .batch_item_failures
                    .into_iter()
                    .find_map(|f| f.item_identifier);
                if let Some(lowest) = lowest {
                    let done = out
                        .records
                        .iter()
                        .take_while(|r| r.sequence_number != lowest)
                        .count();
                    self.checkpoint = Checkpoint::At(lowest);
                    done
                } else {
                    self.checkpoint = Checkpoint::After(last);
                    self.iterator = out.next_shard_iterator;
                    records
                }
            }
            // A failed invocation is retried from the same place.
            Err(_) => 0,
        };
        Ok(Invocation { records, done })
    }
}

/// The local poller: `workers` local "Lambda containers", each with its own producer, polling the
/// SQS queue at `source` (a URL) or, for a Kinesis drain, one shard each of the stream `source`
/// (at most `workers` shards). Returns the running workers; settings that cannot work together
/// ([`PollSettings::check`]) are an error before anything starts.
pub async fn run_local(
    kafka: &spillway_core::config::KafkaConfig,
    config: &spillway_core::config::DrainConfig,
    settings: PollSettings,
    workers: usize,
    source: &str,
    sdk: &aws_config::SdkConfig,
) -> Result<tokio::task::JoinSet<()>, Box<dyn std::error::Error + Send + Sync>> {
    settings.check()?;
    let sqs = crate::lambda::sqs_client(sdk);
    let mut tasks = tokio::task::JoinSet::new();
    match config.source {
        spillway_core::limits::BufferKind::Sqs => {
            for _ in 0..workers {
                let drain = crate::lambda::build_drain(kafka, config, Some(sdk)).await?;
                let poller = SqsPoller::new(sqs.clone(), source.to_owned(), settings).await?;
                tasks.spawn(async move {
                    loop {
                        if let Err(e) = poller.poll_once(&drain).await {
                            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "poll failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
            }
        }
        spillway_core::limits::BufferKind::Kinesis => {
            let kinesis = aws_sdk_kinesis::Client::new(sdk);
            for shard in KinesisPoller::shards(&kinesis, source)
                .await?
                .into_iter()
                .take(workers)
            {
                let drain = crate::lambda::build_drain(kafka, config, Some(sdk)).await?;
                let mut poller =
                    KinesisPoller::new(kinesis.clone(), source.to_owned(), shard, settings).await?;
                tasks.spawn(async move {
                    loop {
                        if let Err(e) = poller.poll_once(&drain).await {
                            tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "poll failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
            }
        }
    }
    Ok(tasks)
}

/// Time the poller allows itself after an invocation's deadline for the deletes (and the dead-letter
/// writes' tail): what the visibility timeout must cover beyond the batching window and the
/// function timeout.
pub const AFTER_INVOCATION: Duration = Duration::from_secs(5);

impl PollSettings {
    /// Reads `SPILLWAY_BATCH_SIZE`, `SPILLWAY_BATCH_WINDOW`, `SPILLWAY_VISIBILITY_TIMEOUT` and
    /// `SPILLWAY_FUNCTION_TIMEOUT` (the settings of the event source mapping the poller plays), then
    /// [`PollSettings::check`]s them. The visibility timeout defaults to 6 × the function timeout,
    /// what AWS asks of a queue a Lambda function drains.
    pub fn from_env(
        env: &spillway_core::config::Env<'_>,
        drain: &spillway_core::config::DrainConfig,
    ) -> Result<Self, spillway_core::config::ConfigError> {
        let default_batch = if drain.source == spillway_core::limits::BufferKind::Sqs {
            10
        } else {
            100
        };
        let function_timeout = env.duration(
            "SPILLWAY_FUNCTION_TIMEOUT",
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(900),
        )?;
        let settings = Self {
            batch_size: env.number("SPILLWAY_BATCH_SIZE", default_batch, 1, 10_000)?,
            batch_window: env.duration(
                "SPILLWAY_BATCH_WINDOW",
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(300),
            )?,
            visibility_timeout: env.duration(
                "SPILLWAY_VISIBILITY_TIMEOUT",
                (function_timeout * 6).min(Duration::from_secs(43_200)),
                Duration::from_secs(1),
                Duration::from_secs(43_200),
            )?,
            function_timeout,
            deadline_margin: drain.deadline_margin,
        };
        settings.check()?;
        Ok(settings)
    }

    /// Rule 11: settings that cannot work together stop the poller at start instead of
    /// dead-lettering everything. The deadline margin must leave at least half of each invocation
    /// for producing (a margin as long as the timeout ends every batch "not produced", and after
    /// `maxReceiveCount` the whole queue is in the DLQ); the visibility timeout must cover the
    /// batching window, the invocation and [`AFTER_INVOCATION`], or a batch still being worked on
    /// reappears and a second worker produces it again.
    pub fn check(&self) -> Result<(), spillway_core::config::ConfigError> {
        use spillway_core::config::ConfigError;
        if self.deadline_margin * 2 > self.function_timeout {
            return Err(ConfigError::Conflict {
                vars: "SPILLWAY_DEADLINE_MARGIN and SPILLWAY_FUNCTION_TIMEOUT",
                why: format!(
                    "a margin of {} leaves less than half of a {} invocation for producing; make the margin at most half the timeout",
                    humantime::format_duration(self.deadline_margin),
                    humantime::format_duration(self.function_timeout)
                ),
            });
        }
        let needed = self.batch_window + self.function_timeout + AFTER_INVOCATION;
        if self.visibility_timeout < needed {
            return Err(ConfigError::Conflict {
                vars: "SPILLWAY_VISIBILITY_TIMEOUT, SPILLWAY_BATCH_WINDOW and SPILLWAY_FUNCTION_TIMEOUT",
                why: format!(
                    "a visibility timeout of {} is shorter than window + timeout + {} for deletes ({}); a batch would reappear while it is being produced",
                    humantime::format_duration(self.visibility_timeout),
                    humantime::format_duration(AFTER_INVOCATION),
                    humantime::format_duration(needed)
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::config::{DrainConfig, Env};

    fn settings(pairs: &[(&str, &str)]) -> Result<PollSettings, String> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = Env::new(&map);
        let drain = DrainConfig::from_env(&env).map_err(|e| e.to_string())?;
        PollSettings::from_env(&env, &drain).map_err(|e| e.to_string())
    }

    /// Issue 14 item 3: a 5 s function timeout with the default 5 s margin used to start and then
    /// dead-letter all 20,000 messages of a test; now it stops at start naming both variables.
    #[test]
    fn contradictory_settings_stop_the_poller_naming_the_variables() {
        let err = settings(&[("SPILLWAY_FUNCTION_TIMEOUT", "5s")]).expect_err("no time left");
        assert!(
            err.contains("SPILLWAY_DEADLINE_MARGIN") && err.contains("SPILLWAY_FUNCTION_TIMEOUT"),
            "{err}"
        );
        let err = settings(&[
            ("SPILLWAY_FUNCTION_TIMEOUT", "30s"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "30s"),
        ])
        .expect_err("visibility shorter than an invocation");
        assert!(err.contains("SPILLWAY_VISIBILITY_TIMEOUT"), "{err}");
        let ok = settings(&[("SPILLWAY_FUNCTION_TIMEOUT", "10s")]).expect("default margin fits");
        assert_eq!(
            ok.visibility_timeout,
            Duration::from_secs(60),
            "6 × the timeout"
        );
        settings(&[]).expect("the defaults work together");
    }
}
