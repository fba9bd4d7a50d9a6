//! Writing replayed records: to a queue or a stream through ingest-api's own buffer writers
//! (batching, per-entry answers, throttling retries), to Kafka through the drain.

use std::time::Instant;

use buffer_drain::report::Outcome;
use buffer_drain::source::{Ordering, SourceRecord};
use ingest_api::buffer::{KinesisBuffer, Outgoing, SqsBuffer};

use super::{letter, Item, NotMoved, Target};

/// Records given to the drain at a time.
const KAFKA_CHUNK: usize = 500;

/// Writes `items` to `target`; one outcome per record. `send_ids` are the ids a queue write
/// sends them under (the FIFO deduplication id: one per receive of the letter, so a retry of this
/// very send is deduplicated and a later replay of the same letter is not). Retries of what the
/// target throttles end by `until`.
pub(super) async fn write(
    target: &Target,
    items: &[Item],
    send_ids: &[String],
    raw_topic: Option<&str>,
    until: Instant,
) -> Vec<Result<(), NotMoved>> {
    match target {
        Target::Queue(queue) => to_queue(queue, items, send_ids, raw_topic, until).await,
        Target::Kafka(drain) => to_kafka(drain, items, until).await,
        Target::Stream(stream) => to_stream(stream, items, until).await,
    }
}

async fn to_queue(
    queue: &SqsBuffer,
    items: &[Item],
    send_ids: &[String],
    raw_topic: Option<&str>,
    until: Instant,
) -> Vec<Result<(), NotMoved>> {
    let prepared: Vec<Result<Outgoing, NotMoved>> = items
        .iter()
        .zip(send_ids)
        .map(|(item, id)| {
            let (body, key) = letter::for_queue(item, raw_topic)?;
            Ok(Outgoing {
                id: id.clone(),
                body: body.into(),
                key,
                group: item.group.clone(),
                // A standard queue's letter keeps its tenant (its message group) when it goes back.
                tenant: item.group.clone(),
            })
        })
        .collect();
    let ready: Vec<Outgoing> = prepared.iter().filter_map(|p| p.clone().ok()).collect();
    let mut written = queue.write(&ready, until).await.into_iter();
    prepared
        .into_iter()
        .map(|p| {
            p.and_then(|_| {
                written
                    .next()
                    .unwrap_or_else(|| {
                        Err(ingest_api::buffer::WriteError::Unavailable(
                            "no answer".into(),
                        ))
                    })
                    .map_err(|e| NotMoved::Refused {
                        target: "the queue",
                        detail: e.to_string(),
                    })
            })
        })
        .collect()
}

/// Straight to Kafka through the drain, a chunk at a time.
async fn to_kafka(
    drain: &buffer_drain::drain::Drain,
    items: &[Item],
    until: Instant,
) -> Vec<Result<(), NotMoved>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for chunk in items.chunks(KAFKA_CHUNK) {
        let records: Vec<SourceRecord> = chunk
            .iter()
            .map(|item| SourceRecord {
                item_id: item.id.clone(),
                group: None,
                data: item.data.clone(),
                buffered_at_ms: item.buffered_at_ms,
                trace: None,
                source: "replay".into(),
            })
            .collect();
        let report = drain.drain(&records, Ordering::Unordered, until).await;
        outcomes.extend(report.outcomes.iter().map(|o| match o {
            Outcome::Delivered => Ok(()),
            Outcome::Failed(failure) => Err(NotMoved::Refused {
                target: "Kafka",
                detail: failure.to_string(),
            }),
            Outcome::DeadLettered(reason) => Err(NotMoved::Refused {
                target: "Kafka",
                detail: format!("dead-lettered again: {reason}"),
            }),
        }));
    }
    outcomes
}

/// Back to a Kinesis stream: each record under the partition key it had, else the key ingest-api
/// gives its envelope (the Kafka key, else the id).
async fn to_stream(
    stream: &KinesisBuffer,
    items: &[Item],
    until: Instant,
) -> Vec<Result<(), NotMoved>> {
    let outgoing: Vec<Outgoing> = items
        .iter()
        .map(|item| Outgoing {
            id: item.id.clone(),
            key: item
                .partition_key
                .as_ref()
                .map(|k| k.as_bytes().to_vec())
                .or_else(|| item.envelope_key()),
            body: item.data.clone().into(),
            group: None,
            tenant: None,
        })
        .collect();
    stream
        .write(&outgoing, until)
        .await
        .into_iter()
        .map(|r| {
            r.map_err(|e| NotMoved::Refused {
                target: "the stream",
                detail: e.to_string(),
            })
        })
        .collect()
}
