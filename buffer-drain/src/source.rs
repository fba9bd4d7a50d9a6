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

/// A Kinesis event from the JSON Lambda hands over. `aws_lambda_events` 1.2 reads the fraction
/// of `approximateArrivalTimestamp` digit by digit as milliseconds and multiplies without a check:
/// a timestamp with many fraction digits or far past year 2500 overflows (a panic in a debug
/// build, a wrong time or a refused event in a release one). Each timestamp is first rounded to
/// the millisecond, and one outside 0 to 10^11 s (year 5138) is read as 0, unknown: whatever the
/// timestamps, the event is read and nothing panics. (A time AWS writes has three fraction
/// digits, which the crate reads right.)
pub fn kinesis_event(mut event: serde_json::Value) -> Result<KinesisEvent, serde_json::Error> {
    if let Some(records) = event
        .get_mut("Records")
        .and_then(serde_json::Value::as_array_mut)
    {
        for record in records {
            let Some(at) = record.pointer_mut("/kinesis/approximateArrivalTimestamp") else {
                continue;
            };
            let seconds = match at {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            if let Some(seconds) = seconds {
                let ms = (seconds * 1000.0).round();
                let ms = if (0.0..=1e14).contains(&ms) { ms } else { 0.0 };
                *at = serde_json::json!(ms / 1000.0);
            }
        }
    }
    serde_json::from_value(event)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: &serde_json::Value) -> serde_json::Value {
        serde_json::json!({"Records": [{
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k",
                "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "data": "aGk=", "approximateArrivalTimestamp": at},
            "eventSource": "aws:kinesis", "eventID": "shardId-0:1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s"}]})
    }

    /// Timestamps `aws_lambda_events` alone panics on (many fraction digits, found by the fuzz
    /// test) or cannot place are read; AWS's own three-digit form keeps its milliseconds.
    #[test]
    fn any_arrival_timestamp_is_read_and_aws_form_keeps_its_milliseconds() {
        for at in [
            serde_json::json!(1_764_211_200.123_456_7),
            serde_json::json!(1e300),
            serde_json::json!(-5),
            serde_json::json!("1764211200.9999999"),
        ] {
            let parsed = kinesis_event(event(&at));
            assert!(parsed.is_ok(), "{at}: {parsed:?}");
        }
        let (records, _) = from_kinesis(
            kinesis_event(event(&serde_json::json!(1_764_211_200.123))).expect("event"),
        );
        assert_eq!(records[0].buffered_at_ms, Some(1_764_211_200_123));
    }
}
