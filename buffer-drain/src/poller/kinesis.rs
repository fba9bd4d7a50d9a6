//! The Kinesis side of the local poller: read a shard from a checkpoint kept in memory, invoke the
//! handler, move the checkpoint as Lambda does after the report.

use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_kinesis::types::ShardIteratorType;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{Invocation, PollSettings};
use crate::drain::Drain;
use crate::lambda::{deadline, handle_kinesis};

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
