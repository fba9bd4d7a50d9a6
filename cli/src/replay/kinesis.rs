//! Kinesis on-failure records.
//!
//! When a Kinesis event source mapping gives up on a batch (retries or record age exhausted), Lambda
//! sends its on-failure destination only where the batch was — `KinesisBatchInfo`: stream, shard,
//! first and last sequence number — not the data. Replay reads that range back from the stream,
//! which works while the records are within the stream's retention period.

use std::cmp::Ordering;

use aws_sdk_kinesis::types::ShardIteratorType;
use spillway_core::dead_letter::{compare_sequence, stream_name, BatchInfo};

use super::{Item, NotMoved};

/// `GetRecords` calls one range may take before it is given up as unreadable (the letter stays).
const MAX_CALLS: u32 = 2_000;
/// The pause after an empty page inside a range (a shard allows five `GetRecords` a second).
const EMPTY_PAGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

fn sdk_error<E: std::error::Error + 'static>(what: &str, e: E) -> NotMoved {
    NotMoved::Range(format!(
        "{what}: {}",
        aws_sdk_kinesis::error::DisplayErrorContext(&e)
    ))
}

/// Reads the records `info` names, in sequence order.
pub async fn read(
    kinesis: &aws_sdk_kinesis::Client,
    info: &BatchInfo,
) -> Result<Vec<Item>, NotMoved> {
    let stream = stream_name(&info.stream_arn)
        .ok_or_else(|| NotMoved::Range(format!("not a Kinesis stream ARN: {}", info.stream_arn)))?;
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
    let mut items: Vec<Item> = Vec::new();
    for _ in 0..MAX_CALLS {
        let Some(it) = iterator else {
            return Err(NotMoved::Range(format!(
                "{where_}: the shard ended before the range did; {} records read",
                items.len()
            )));
        };
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .limit(1000)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("cannot read {where_}"), e))?;
        // Real Kinesis always says how far behind the tip a page is; a server that does not is
        // taken to be at its tip.
        let (empty, at_tip) = (
            out.records.is_empty(),
            out.millis_behind_latest.unwrap_or(0) == 0,
        );
        for r in out.records {
            if items.is_empty()
                && compare_sequence(&r.sequence_number, &info.start_sequence_number)
                    != Ordering::Equal
            {
                return Err(NotMoved::Range(format!(
                    "{where_}: the range's first record is gone (past the stream's retention?)"
                )));
            }
            let end = compare_sequence(&r.sequence_number, &info.end_sequence_number);
            if end == Ordering::Greater {
                return Err(NotMoved::Range(format!(
                    "{where_}: the range's last record is missing; {} records read",
                    items.len()
                )));
            }
            items.push(Item {
                buffered_at_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| u64::try_from(t.to_millis().ok()?).ok()),
                partition_key: Some(r.partition_key.unwrap_or_else(|| r.sequence_number.clone())),
                id: r.sequence_number,
                data: r.data.into_inner(),
                group: None,
            });
            if end == Ordering::Equal {
                return whole(items, info, &where_);
            }
        }
        if empty && at_tip {
            return Err(NotMoved::Range(format!(
                "{where_}: read to the stream's tip without reaching the range's end; {} records read",
                items.len()
            )));
        }
        if empty {
            tokio::time::sleep(EMPTY_PAGE_PAUSE).await;
        }
        iterator = out.next_shard_iterator;
    }
    Err(NotMoved::Range(format!(
        "{where_}: not read to its end in {MAX_CALLS} calls; {} records read",
        items.len()
    )))
}

/// A range read from its first record to its last: whole when it holds as many records as the
/// on-failure record says the batch had.
fn whole(items: Vec<Item>, info: &BatchInfo, where_: &str) -> Result<Vec<Item>, NotMoved> {
    match info.batch_size {
        Some(size) if size != items.len() as u64 => Err(NotMoved::Range(format!(
            "{where_}: {} records read where the on-failure record names {size}",
            items.len()
        ))),
        _ => Ok(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(start: u32, end: u32, size: u64) -> BatchInfo {
        BatchInfo {
            shard_id: "shardId-000000000000".into(),
            start_sequence_number: start.to_string(),
            end_sequence_number: end.to_string(),
            stream_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
            batch_size: Some(size),
        }
    }

    /// A shard as `GetRecords` pages, one iterator per page (`it-0`, `it-1`, ...); a record is
    /// its sequence number. The last page is the tip (`MillisBehindLatest` 0).
    fn shard(pages: Vec<Vec<u32>>) -> aws_sdk_kinesis::Client {
        spillway_tests::scripted::kinesis(move |target: &str, request: &serde_json::Value| {
            match target {
                "GetShardIterator" => (200, serde_json::json!({"ShardIterator": "it-0"})),
                "GetRecords" => {
                    let page: usize = request["ShardIterator"]
                        .as_str()
                        .and_then(|it| it.strip_prefix("it-"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    let records: Vec<_> = pages
                        .get(page)
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|n| serde_json::json!({"SequenceNumber": n.to_string(), "Data": "eA==", "PartitionKey": "k"}))
                        .collect();
                    let behind = if page + 1 >= pages.len() { 0 } else { 5000 };
                    (
                        200,
                        serde_json::json!({"Records": records,
                            "NextShardIterator": format!("it-{}", page + 1), "MillisBehindLatest": behind}),
                    )
                }
                other => panic!("unexpected call {other}"),
            }
        })
    }

    fn ids(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    /// Issue 15 item 1: real Kinesis returns empty pages inside a range; the range is read to its
    /// end sequence number. (It used to stop after three empty pages and return the first half
    /// of the range as whole — and the letter was deleted.)
    #[tokio::test]
    async fn a_range_is_read_past_empty_pages_to_its_end() {
        let kinesis = shard(vec![
            vec![1, 2],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![3, 4],
            vec![5],
        ]);
        let items = read(&kinesis, &info(1, 4, 4))
            .await
            .expect("the whole range");
        assert_eq!(ids(&items), ["1", "2", "3", "4"]);
    }

    /// Issue 15 item 1: a range that cannot be read whole is an error (the letter stays): the
    /// tip comes before its end, its first record is gone, or it holds fewer records than the
    /// on-failure record names.
    #[tokio::test]
    async fn a_range_not_read_whole_is_an_error() {
        let tip_first = read(&shard(vec![vec![1, 2], vec![]]), &info(1, 4, 4)).await;
        assert!(
            tip_first.is_err(),
            "{:?}",
            tip_first.map(|i| ids(&i).join(","))
        );
        let trimmed = read(&shard(vec![vec![2, 3, 4]]), &info(1, 4, 3)).await;
        assert!(trimmed.is_err(), "{:?}", trimmed.map(|i| ids(&i).join(",")));
        let short = read(&shard(vec![vec![1, 4]]), &info(1, 4, 4)).await;
        assert!(short.is_err(), "{:?}", short.map(|i| ids(&i).join(",")));
        let past = read(&shard(vec![vec![1, 2, 6]]), &info(1, 4, 4)).await;
        assert!(past.is_err(), "{:?}", past.map(|i| ids(&i).join(",")));
    }
}
