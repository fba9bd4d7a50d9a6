//! Fuzzing (issue 14): generated SQS and Kinesis events — arbitrary bytes, JSON of the events'
//! shape with arbitrary fields, arbitrary message bodies — through the drain's event parsing,
//! envelope decoder and Kafka-record builder, the handler's path up to the producer. Nothing may
//! panic; every record either becomes a Kafka record or gets a decode error (its dead-letter
//! reason). `SPILLWAY_FUZZ_CASES` sets the number of inputs per test.

use aws_lambda_events::event::sqs::SqsEvent;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use buffer_drain::message::{to_kafka, Decoding};
use buffer_drain::source::{from_kinesis, from_sqs, kinesis_event};
use proptest::prelude::*;
use spillway_core::envelope::{Envelope, Header, RawMode};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: spillway_tests::fuzz_cases(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Message bodies: arbitrary bytes, text, envelopes and envelopes cut or changed at one byte.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let envelope = (
        any::<String>(),
        any::<Vec<u8>>(),
        any::<Vec<(String, Vec<u8>)>>(),
    )
        .prop_map(|(key, value, headers)| {
            let mut env = Envelope::new("orders", value);
            env.key = Some(key.into_bytes());
            env.headers = headers
                .into_iter()
                .map(|(n, v)| Header::new(n, v))
                .collect();
            env.encode().into_bytes()
        });
    prop_oneof![
        any::<Vec<u8>>(),
        any::<String>().prop_map(String::into_bytes),
        envelope.clone(),
        (envelope.clone(), any::<prop::sample::Index>())
            .prop_map(|(b, cut)| b[..cut.index(b.len() + 1)].to_vec()),
        (envelope, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, at, byte)| {
            let i = at.index(b.len());
            b[i] = byte;
            b
        }),
        "[ {}:,\"a-z0-9]{0,80}".prop_map(|s| format!("{{\"spillway\":1,{s}").into_bytes()),
        "[ {}:,\"a-z0-9]{0,80}".prop_map(|s| format!("  {{ \"spillway\" : {s}").into_bytes()),
    ]
}

fn decoding() -> impl Strategy<Value = Decoding> {
    prop_oneof![
        Just(Decoding {
            raw: RawMode::Reject,
            raw_topic: None
        }),
        Just(Decoding {
            raw: RawMode::Accept,
            raw_topic: Some("raw".into())
        }),
    ]
}

fn json_text() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_sqs_events_never_panic_the_drain(
        bodies in prop::collection::vec((body(), any::<Option<String>>(), any::<bool>()), 0..6),
        extra in json_text(),
        garbage in any::<Vec<u8>>(),
        decoding in decoding(),
    ) {
        let _ = serde_json::from_slice::<SqsEvent>(&garbage);
        let records: Vec<serde_json::Value> = bodies.iter().enumerate().map(|(i, (b, group, fifo))| {
            let mut attributes = serde_json::json!({"SentTimestamp": extra.clone(), "AWSTraceHeader": extra.clone()});
            if let Some(g) = group { attributes["MessageGroupId"] = g.clone().into(); }
            serde_json::json!({
                "messageId": format!("m-{i}"), "receiptHandle": "h", "body": String::from_utf8_lossy(b),
                "attributes": attributes, "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": if *fifo { "arn:aws:sqs:us-east-1:1:q.fifo" } else { "arn:aws:sqs:us-east-1:1:q" },
                "awsRegion": "us-east-1", "extra": extra.clone(),
            })
        }).collect();
        if let Ok(event) = serde_json::from_value::<SqsEvent>(serde_json::json!({"Records": records})) {
            let (records, _) = from_sqs(event);
            for record in &records {
                let _ = to_kafka(record, &decoding);
            }
        }
    }

    #[test]
    fn fuzz_kinesis_events_never_panic_the_drain(
        bodies in prop::collection::vec(body(), 0..6),
        sequence in "[0-9]{0,60}",
        // Any number at all: aws_lambda_events 1.2.1 alone panics on some (found by this test);
        // the drain reads the event through `kinesis_event`, as the Lambda binary does.
        arrival in prop_oneof![any::<f64>(), 0.0f64..4.0e9, Just(1.764_211_200_123_456_7e9)],
        garbage in any::<Vec<u8>>(),
        decoding in decoding(),
    ) {
        if let Ok(garbage) = serde_json::from_slice::<serde_json::Value>(&garbage) {
            let _ = kinesis_event(garbage);
        }
        let records: Vec<serde_json::Value> = bodies.iter().map(|b| serde_json::json!({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": sequence,
                "data": STANDARD.encode(b), "approximateArrivalTimestamp": arrival},
            "eventSource": "aws:kinesis", "eventID": "shardId-0:1", "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s",
        })).collect();
        if let Ok(event) = kinesis_event(serde_json::json!({"Records": records})) {
            let (records, _) = from_kinesis(event);
            for record in &records {
                let _ = to_kafka(record, &decoding);
            }
        }
    }
}
