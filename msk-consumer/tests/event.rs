//! The Lambda handler with the real MSK event shape: several partitions, headers as Java byte
//! arrays, a null key, base64 keys and values.

use std::sync::Mutex;

use aws_lambda_events::event::kafka::KafkaEvent;
use msk_consumer::handler::{HandlerError, RecordHandler, SeenIds};
use msk_consumer::lambda::handle_event;
use msk_consumer::record::{from_event, ConsumedRecord};

const EVENT: &str = r#"{
  "eventSource": "aws:kafka",
  "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/demo/abc-1",
  "bootstrapServers": "b-1.demo.kafka.us-east-1.amazonaws.com:9098",
  "records": {
    "orders-0": [
      {"topic": "orders", "partition": 0, "offset": 15, "timestamp": 1764211200123, "timestampType": "CREATE_TIME",
       "key": "Y3VzdG9tZXItNDI=", "value": "eyJ0b3RhbCI6MTJ9",
       "headers": [{"spillway-id": [48, 49, 57, 51]}, {"spillway-received-at": [49, 55, 54, 52, 50, 49, 49, 50, 48, 48, 49, 50, 51]}, {"bin": [-1, 0, 127, -128]}]},
      {"topic": "orders", "partition": 0, "offset": 16, "timestamp": 1764211200124, "timestampType": "CREATE_TIME",
       "key": null, "value": "AAEC", "headers": []}
    ],
    "orders-3": [
      {"topic": "orders", "partition": 3, "offset": 7, "timestamp": 1764211200125, "timestampType": "CREATE_TIME",
       "key": "aw==", "value": "dg==", "headers": [{"spillway-id": [48, 49, 57, 51]}]}
    ]
  }
}"#;

#[test]
fn every_partition_is_read_with_keys_values_and_headers() {
    let event: KafkaEvent = serde_json::from_str(EVENT).expect("MSK event");
    let (records, malformed) = from_event(event);
    assert!(malformed.is_empty());
    let positions: Vec<String> = records.iter().map(ConsumedRecord::position).collect();
    assert_eq!(positions, ["orders-0@15", "orders-0@16", "orders-3@7"]);
    assert_eq!(records[0].key.as_deref(), Some(&b"customer-42"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&br#"{"total":12}"#[..]));
    assert_eq!(records[0].spillway_id(), Some("0193"));
    assert_eq!(records[0].received_at_ms(), Some(1_764_211_200_123));
    assert_eq!(
        records[0].header("bin"),
        Some(&[0xFF, 0x00, 0x7F, 0x80][..]),
        "Java bytes are signed"
    );
    assert_eq!(
        (records[1].key.as_deref(), records[1].value.as_deref()),
        (None, Some(&[0u8, 1, 2][..]))
    );
    assert_eq!(records[2].partition, 3);
}

/// Fails the record at a chosen offset and remembers what it saw.
#[derive(Default)]
struct Picky {
    fail_offset: Option<i64>,
    seen: Mutex<Vec<String>>,
}

impl RecordHandler for Picky {
    async fn handle(&self, record: &ConsumedRecord) -> Result<(), HandlerError> {
        self.seen.lock().expect("lock").push(record.position());
        if Some(record.offset) == self.fail_offset {
            return Err("downstream said no".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_record_fails_the_invocation_without_skipping_the_rest() {
    let handler = Picky {
        fail_offset: Some(15),
        ..Picky::default()
    };
    let event: KafkaEvent = serde_json::from_str(EVENT).expect("MSK event");
    let err = handle_event(event, &handler, &SeenIds::new(10), "test")
        .await
        .expect_err("a record failed");
    assert_eq!((err.failed, err.records), (1, 3));
    assert_eq!(err.first, "orders-0@15: downstream said no");
    assert_eq!(
        handler.seen.lock().expect("lock").len(),
        3,
        "every record was handled"
    );

    let event: KafkaEvent = serde_json::from_str(EVENT).expect("MSK event");
    let report = handle_event(event, &Picky::default(), &SeenIds::new(10), "test")
        .await
        .expect("all handled");
    assert_eq!(
        (report.records, report.duplicates),
        (3, 1),
        "offset 7 repeats offset 15's spillway-id"
    );
    assert_eq!(report.latencies_ms.len(), 1);
}

/// Issue 15 item 13: a record Lambda's event cannot carry readably (here a value that is not
/// base64) can never be handled, however often the batch is retried; on an on-demand MSK mapping
/// (no retry limit, no bisect, no on-failure destination) failing the batch for it stopped its
/// partition for good. It is counted (`Unreadable`, alarmed on) and named by position in the log;
/// the rest of the batch is handled and the partition moves on.
#[tokio::test]
async fn an_undecodable_record_is_counted_and_does_not_stop_its_partition() {
    let broken = EVENT.replace("\"dg==\"", "\"not base64!\"");
    let event: KafkaEvent = serde_json::from_str(&broken).expect("MSK event");
    let handler = Picky::default();
    let report = handle_event(event, &handler, &SeenIds::new(10), "test")
        .await
        .expect("the batch is not failed for a record no retry can read");
    assert_eq!(report.unreadable.len(), 1);
    assert!(
        report.unreadable[0].starts_with("orders-3@7: value is not valid base64"),
        "{:?}",
        report.unreadable
    );
    assert_eq!(
        handler.seen.lock().expect("lock").len(),
        2,
        "the others were handled"
    );
    assert!(report.emf("spillway", "test").contains("\"Unreadable\":1"));
}
