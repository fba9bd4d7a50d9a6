//! The Kinesis side of the local poller: read a shard from its checkpoint (kept in memory, or in
//! a [`CheckpointStore`] that outlives the process), invoke the handler, move the checkpoint as
//! Lambda does after the report; and, as a Kinesis mapping does
//! across resharding, start a shard only once the shards it was split or merged from are read to
//! their end (a key's records are in order within the parent, then within the child).

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_kinesis::types::ShardIteratorType;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::checkpoints::{Checkpoint, CheckpointError, CheckpointStore};
use super::{Invocation, PollSettings};
use crate::drain::Drain;
use crate::lambda::{deadline, handle_kinesis};

/// Kinesis: one shard, iterated from its checkpoint.
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
    /// The shard is closed (split or merged) and every record in it has left the buffer.
    finished: bool,
    /// Where the checkpoint is kept beyond the process.
    store: std::sync::Arc<CheckpointStore>,
    /// The checkpoint moved and its last save failed: saved again before anything else.
    unsaved: bool,
}

/// A shard as ListShards names it: its id and the shards it was split or merged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's id.
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId`, where present.
    pub parents: Vec<String>,
}

/// The shards in `listed` that may be read now: not `started` yet, and every parent the stream
/// still lists is `finished` (a parent past the retention period is no longer listed, and nothing
/// of it is left to read first).
pub fn ready<'a, S: std::hash::BuildHasher>(
    listed: &'a [Shard],
    started: &HashSet<String, S>,
    finished: &HashSet<String, S>,
) -> Vec<&'a Shard> {
    let ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    listed
        .iter()
        .filter(|s| !started.contains(&s.id))
        .filter(|s| {
            s.parents
                .iter()
                .all(|p| finished.contains(p) || !ids.contains(p.as_str()))
        })
        .collect()
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
            finished: false,
            store: std::sync::Arc::new(CheckpointStore::Memory),
            unsaved: false,
        })
    }

    /// Keeps the checkpoint in `store`, starting from the one saved there (if any).
    pub async fn with_checkpoints(
        mut self,
        store: std::sync::Arc<CheckpointStore>,
    ) -> Result<Self, CheckpointError> {
        if let Some(saved) = store.load(&self.stream, &self.shard_id).await? {
            tracing::info!(shard = %self.shard_id, checkpoint = ?saved, "reading on from the saved checkpoint");
            self.checkpoint = saved;
        }
        self.store = store;
        Ok(self)
    }

    /// Saves the checkpoint; a failure is logged and the next batch's save tries again (until
    /// then a restart reads the batches since the last save again: duplicates, never a gap).
    async fn save(&mut self) {
        self.unsaved = match self
            .store
            .save(&self.stream, &self.shard_id, &self.checkpoint)
            .await
        {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(shard = %self.shard_id, error = %e, "the checkpoint was not saved");
                true
            }
        };
    }

    /// The shard this poller reads.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Whether the shard is closed and read to its end: nothing more will come from it.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Every shard of `stream`, open and closed, over all of ListShards' pages.
    pub async fn shards(
        client: &aws_sdk_kinesis::Client,
        stream: &str,
    ) -> Result<Vec<Shard>, aws_sdk_kinesis::Error> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            // A page after the first names only the token (ListShards refuses both).
            let request = match &next {
                Some(token) => client.list_shards().next_token(token),
                None => client.list_shards().stream_name(stream),
            };
            let out = request.send().await?;
            shards.extend(out.shards.unwrap_or_default().into_iter().map(|s| {
                Shard {
                    parents: [s.parent_shard_id, s.adjacent_parent_shard_id]
                        .into_iter()
                        .flatten()
                        .collect(),
                    id: s.shard_id,
                }
            }));
            match out.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(shards),
            }
        }
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
        if self.unsaved {
            // A shard is finished only with its last checkpoint saved: its children's newer
            // records must not be followed, after a restart, by its last batch again.
            self.save().await;
            if self.unsaved {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Ok(Invocation::default());
            }
        }
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
        if let Some(ms) = out.millis_behind_latest {
            crate::service::metrics().behind_latest(&self.shard_id, ms);
        }
        if out.records.is_empty() {
            // An empty page is not the end of the shard: read on from where it points. `None`: the
            // shard is closed and everything before the checkpoint has left the buffer.
            self.finished = out.next_shard_iterator.is_none();
            self.iterator = out.next_shard_iterator;
            if !self.finished {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
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
        if done > 0 {
            self.save().await;
        }
        Ok(Invocation { records, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard {
            id: id.to_owned(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn ids(shards: Vec<&Shard>) -> Vec<&str> {
        shards.into_iter().map(|s| s.id.as_str()).collect()
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn children_wait_for_every_parent_the_stream_still_lists() {
        // 0 split into 1 and 2; 1 and 2 merged into 3; 9's parent is past retention.
        let listed = [
            shard("0", &[]),
            shard("1", &["0"]),
            shard("2", &["0"]),
            shard("3", &["1", "2"]),
            shard("9", &["8"]),
        ];
        let none = HashSet::new();
        assert_eq!(ids(ready(&listed, &none, &none)), ["0", "9"]);
        assert_eq!(
            ids(ready(&listed, &set(&["0", "9"]), &none)),
            Vec::<&str>::new()
        );
        let started = set(&["0", "9"]);
        assert_eq!(ids(ready(&listed, &started, &set(&["0"]))), ["1", "2"]);
        let started = set(&["0", "1", "2", "9"]);
        assert!(ready(&listed, &started, &set(&["0", "1"])).is_empty());
        assert_eq!(ids(ready(&listed, &started, &set(&["0", "1", "2"]))), ["3"]);
    }
}
