//! Buffer records as the drain sees them, whichever buffer they came from.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;

/// One message from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// What Lambda expects in `batchItemFailures`: the SQS message id or the Kinesis sequence number.
    pub item_id: String,
    /// SQS FIFO message group.
    pub group: Option<String>,
    /// The message: SQS body or Kinesis data.
    pub data: Vec<u8>,
    /// When the buffer took the message, ms since the Unix epoch (SQS `SentTimestamp`, Kinesis
    /// approximate arrival): the `spillway-received-at` of a raw message.
    pub buffered_at_ms: Option<u64>,
    /// The X-Ray trace header the buffer carried (SQS `AWSTraceHeader`).
    pub trace: Option<String>,
    /// The queue or stream ARN, named in dead letters.
    pub source: String,
}

/// How a batch must be ordered when it is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// SQS standard: no order to keep.
    Unordered,
    /// SQS FIFO: order within each message group; a group stops at its first failure.
    FifoGroups,
    /// Kinesis: one shard's records, in sequence order.
    Shard,
}

/// The records of an SQS event, in event order.
pub fn from_sqs(event: SqsEvent) -> (Vec<SourceRecord>, Ordering) {
    let mut fifo = false;
    let records = event
        .records
        .into_iter()
        .map(|m| {
            let source = m.event_source_arn.unwrap_or_default();
            fifo |= spillway_core::limits::is_fifo_queue(&source);
            SourceRecord {
                item_id: m.message_id.unwrap_or_default(),
                group: m.attributes.get("MessageGroupId").cloned(),
                data: m.body.unwrap_or_default().into_bytes(),
                buffered_at_ms: m
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|t| t.parse().ok()),
                trace: m.attributes.get("AWSTraceHeader").cloned(),
                source,
            }
        })
        .collect();
    (
        records,
        if fifo {
            Ordering::FifoGroups
        } else {
            Ordering::Unordered
        },
    )
}

/// The records of a Kinesis event (one shard), in sequence order.
pub fn from_kinesis(event: KinesisEvent) -> (Vec<SourceRecord>, Ordering) {
    let records = event
        .records
        .into_iter()
        .map(|r| SourceRecord {
            item_id: r.kinesis.sequence_number,
            group: None,
            data: r.kinesis.data.0,
            buffered_at_ms: u64::try_from(
                r.kinesis.approximate_arrival_timestamp.0.timestamp_millis(),
            )
            .ok(),
            trace: None,
            source: r.event_source_arn.unwrap_or_default(),
        })
        .collect();
    (records, Ordering::Shard)
}
