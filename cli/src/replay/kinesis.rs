//! Kinesis on-failure records.
//!
//! When a Kinesis event source mapping gives up on a batch (retries or record age exhausted), Lambda
//! sends its on-failure destination only where the batch was — `KinesisBatchInfo`: stream, shard,
//! first and last sequence number — not the data. Replay reads that range back from the stream,
//! which works while the records are within the stream's retention period.

use std::cmp::Ordering;

use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Deserialize;

use super::Item;

/// `GetRecords` calls that return nothing before a range is given up as read to the tip.
const EMPTY_READS: u32 = 3;

/// The part of Lambda's on-failure record that says where the batch was.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    /// The shard.
    pub shard_id: String,
    /// The batch's first sequence number.
    pub start_sequence_number: String,
    /// The batch's last sequence number.
    pub end_sequence_number: String,
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    pub stream_arn: String,
    /// Records in the batch.
    #[serde(default)]
    pub batch_size: Option<u64>,
}

#[derive(Deserialize)]
struct OnFailure {
    #[serde(rename = "KinesisBatchInfo")]
    batch: BatchInfo,
}

/// The batch an on-failure record points to, or `None` when `body` is not one.
pub fn batch_info(body: &str) -> Option<BatchInfo> {
    if !body.trim_start().starts_with('{') || !body.contains("KinesisBatchInfo") {
        return None;
    }
    serde_json::from_str::<OnFailure>(body)
        .ok()
        .map(|f| f.batch)
}

/// The stream name in a stream ARN.
pub fn stream_name(arn: &str) -> Option<&str> {
    arn.rsplit_once(":stream/").map(|(_, name)| name)
}

/// Orders Kinesis sequence numbers: decimal strings of up to 128 digits, too long for an integer.
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn sdk_error<E: std::error::Error + 'static>(what: &str, e: E) -> String {
    format!(
        "{what}: {}",
        aws_sdk_kinesis::error::DisplayErrorContext(&e)
    )
}

/// Reads the records `info` names, in sequence order.
pub async fn read(
    kinesis: &aws_sdk_kinesis::Client,
    info: &BatchInfo,
) -> Result<Vec<Item>, String> {
    let stream = stream_name(&info.stream_arn)
        .ok_or_else(|| format!("not a Kinesis stream ARN: {}", info.stream_arn))?;
    let where_ = format!(
        "{stream}/{} from {}",
        info.shard_id, info.start_sequence_number
    );
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(&info.shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(&info.start_sequence_number)
        .send()
        .await
        .map_err(|e| {
            sdk_error(
                &format!("cannot read {where_} (past the stream's retention?)"),
                e,
            )
        })?
        .shard_iterator;
    let mut items = Vec::new();
    let mut empty = 0;
    while let Some(it) = iterator {
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .limit(1000)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("cannot read {where_}"), e))?;
        if out.records.is_empty() {
            empty += 1;
            if empty >= EMPTY_READS || out.millis_behind_latest == Some(0) {
                break;
            }
        }
        for r in out.records {
            if compare_sequence(&r.sequence_number, &info.end_sequence_number) == Ordering::Greater
            {
                return Ok(items);
            }
            items.push(Item {
                buffered_at_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| u64::try_from(t.to_millis().ok()?).ok()),
                partition_key: Some(r.partition_key.unwrap_or_else(|| r.sequence_number.clone())),
                id: r.sequence_number,
                data: r.data.into_inner(),
            });
        }
        iterator = out.next_shard_iterator;
    }
    if items.is_empty() {
        return Err(format!(
            "{where_}: no records left in the range (past the stream's retention?)"
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_on_failure_records_are_recognised() {
        let body = r#"{"requestContext":{"requestId":"r","functionArn":"arn:aws:lambda:us-east-1:123456789012:function:drain","condition":"RetryAttemptsExhausted","approximateInvokeCount":3},"version":"1.0","timestamp":"2026-11-27T00:38:06.021Z","KinesisBatchInfo":{"shardId":"shardId-000000000001","startSequenceNumber":"49601189658422359378836298521827638475320189012309704722","endSequenceNumber":"49601189658422359378836298522902373528957594348623495186","approximateArrivalOfFirstRecord":"2026-11-27T00:38:04.835Z","approximateArrivalOfLastRecord":"2026-11-27T00:38:05.580Z","batchSize":500,"streamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/spillway-stream"}}"#;
        let info = batch_info(body).expect("an on-failure record");
        assert_eq!(info.shard_id, "shardId-000000000001");
        assert_eq!(info.batch_size, Some(500));
        assert_eq!(stream_name(&info.stream_arn), Some("spillway-stream"));
        assert_eq!(batch_info(r#"{"spillway":1,"id":"x"}"#), None);
        assert_eq!(batch_info("KinesisBatchInfo as text"), None);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence("010", "10"), Ordering::Equal);
        assert_eq!(
            compare_sequence(
                "49601189658422359378836298522902373528957594348623495186",
                "49601189658422359378836298521827638475320189012309704722"
            ),
            Ordering::Greater
        );
    }
}
