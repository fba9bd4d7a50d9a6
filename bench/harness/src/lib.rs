//! Shared pieces of spillway's benchmarks.

pub mod runtime_api;

/// An SQS event as Lambda delivers it: `records` envelopes for `topic`, each with a JSON value of
/// `bytes` bytes.
pub fn sqs_event(records: usize, bytes: usize, topic: &str) -> String {
    let records: Vec<serde_json::Value> = (0..records)
        .map(|i| {
            let mut value = format!("{{\"order\":{i},\"pad\":\"");
            while value.len() < bytes.saturating_sub(2) {
                value.push('x');
            }
            value.push_str("\"}");
            let mut env = spillway_core::envelope::Envelope::new(topic, value);
            env.key = Some(format!("customer-{}", i % 100).into_bytes());
            serde_json::json!({
                "messageId": format!("m-{i}"),
                "receiptHandle": format!("r-{i}"),
                "body": env.encode(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764211200000"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}
