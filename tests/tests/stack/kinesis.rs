//! aws-sdk-kinesis against kinesalite. Relies on: CreateStream, DescribeStreamSummary, ListShards,
//! PutRecords, GetShardIterator(TRIM_HORIZON), GetRecords. kinesalite does not throttle shards; it
//! refuses records over 1 MiB, and spillway enforces that limit itself first (`limits::BufferLimit`).

use std::collections::HashMap;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use spillway_core::envelope::{decode, Decoded, Envelope, RawMode};
use spillway_tests::fixtures::create_stream;
use spillway_tests::{kinesis, unique_name};

#[tokio::test]
async fn put_records_then_get_records_returns_every_envelope_intact() {
    let client = kinesis().await;
    let stream = unique_name("stream");
    create_stream(&client, &stream, 2).await;

    let mut sent = HashMap::new();
    let mut entries = Vec::new();
    for i in 0..500u32 {
        // Half text, half binary: both must come back byte for byte.
        let value = if i % 2 == 0 {
            format!("event {i}").into_bytes()
        } else {
            i.to_be_bytes().repeat(3)
        };
        let mut env = Envelope::new("orders", value);
        env.key = Some(format!("customer-{}", i % 7).into_bytes());
        entries.push(
            PutRecordsRequestEntry::builder()
                .partition_key(format!("customer-{}", i % 7))
                .data(Blob::new(env.encode()))
                .build()
                .expect("entry"),
        );
        sent.insert(env.id.clone(), env);
    }
    let out = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(out.failed_record_count, Some(0));

    let shards = spillway_tests::fixtures::shards(&client, &stream).await;
    assert_eq!(shards.len(), 2);
    let mut received = HashMap::new();
    for shard in shards {
        let records =
            spillway_tests::fixtures::shard_records(&client, &stream, shard.shard_id(), 0).await;
        let mut last_sequence = String::new();
        for record in records {
            // Sequence numbers are decimal strings of up to 128 digits: compare them as numbers.
            let order = |s: &str| (s.len(), s.to_owned());
            assert!(
                order(&record.sequence_number) > order(&last_sequence),
                "records of a shard arrive in sequence order: {} after {last_sequence}",
                record.sequence_number
            );
            last_sequence = record.sequence_number.clone();
            let Ok(Decoded::Envelope(env)) = decode(record.data.as_ref(), RawMode::Reject) else {
                panic!("record {} is not an envelope", record.sequence_number);
            };
            received.insert(env.id.clone(), env);
        }
    }
    assert_eq!(received, sent);
}
