//! Fuzzing (issue 14): generated MSK events — arbitrary bytes, and events of MSK's shape with
//! arbitrary keys, values (base64 or not) and headers — through the consumer's event parsing.
//! Nothing may panic: a record is read or reported malformed. `SPILLWAY_FUZZ_CASES` sets the
//! number of inputs.

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;

fn base64_or_not() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(|b| STANDARD.encode(b)),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: spillway_tests::fuzz_cases(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_msk_events_never_panic_the_consumer(
        garbage in any::<Vec<u8>>(),
        records in prop::collection::vec(
            (proptest::option::of(base64_or_not()), proptest::option::of(base64_or_not()),
             prop::collection::vec(("[ -~]{0,12}", any::<Vec<u8>>()), 0..3), any::<i64>(), any::<i32>()),
            0..5,
        ),
    ) {
        let _ = serde_json::from_slice::<KafkaEvent>(&garbage);
        let records: Vec<serde_json::Value> = records.into_iter().map(|(key, value, headers, offset, partition)| {
            let headers: Vec<serde_json::Value> = headers.into_iter()
                .map(|(name, bytes)| serde_json::json!({ name: bytes }))
                .collect();
            serde_json::json!({"topic": "orders", "partition": partition, "offset": offset,
                "timestamp": offset, "timestampType": "CREATE_TIME", "key": key, "value": value,
                "headers": headers})
        }).collect();
        let event = serde_json::json!({"eventSource": "aws:kafka",
            "eventSourceArn": "arn:aws:kafka:us-east-1:1:cluster/c/u", "bootstrapServers": "b:9098",
            "records": {"orders-0": records}});
        if let Ok(event) = serde_json::from_value::<KafkaEvent>(event) {
            let _ = msk_consumer::record::from_event(event);
        }
    }
}
