//! `spillway status --json` reports what the test put in a queue (fauxqs), a stream (kinesalite) and
//! CloudWatch (moto: the test publishes the datapoints AWS would).

use std::process::Command;

async fn publish(namespace: &str, metric: &str, dimension: (&str, &str), value: f64) {
    let sdk = spillway_tests::aws_config(&spillway_tests::aws_endpoint()).await;
    aws_sdk_cloudwatch::Client::new(&sdk)
        .put_metric_data()
        .namespace(namespace)
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name(metric)
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name(dimension.0)
                        .value(dimension.1)
                        .build(),
                )
                .value(value)
                .timestamp(std::time::SystemTime::now().into())
                .build(),
        )
        .send()
        .await
        .expect("put metric data");
}

#[tokio::test]
async fn status_json_numbers_match_the_queue_the_stream_and_cloudwatch() {
    let sqs = spillway_tests::sqs().await;
    let url = spillway_tests::fixtures::queue(&sqs, "status", false, &[]).await;
    let name = url.rsplit('/').next().expect("queue name").to_owned();
    let stream = spillway_tests::unique_name("status-stream");
    spillway_tests::fixtures::create_stream(&spillway_tests::kinesis().await, &stream, 3).await;
    publish(
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        ("QueueName", &name),
        42.0,
    )
    .await;
    publish(
        "AWS/Kinesis",
        "GetRecords.IteratorAgeMilliseconds",
        ("StreamName", &stream),
        1500.0,
    )
    .await;
    for i in 0..3 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("m{i}"))
            .send()
            .await
            .expect("send");
    }
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(1)
        .send()
        .await
        .expect("receive");
    assert_eq!(received.messages.unwrap_or_default().len(), 1);

    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["status", "--queue-url", &url, "--stream", &stream, "--json"])
        .env("AWS_ENDPOINT_URL_SQS", spillway_tests::sqs_endpoint())
        .env("AWS_ENDPOINT_URL", spillway_tests::aws_endpoint())
        .env(
            "AWS_ENDPOINT_URL_KINESIS",
            spillway_tests::kinesis_endpoint(),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SPILLWAY_SQS_DLQ_URL")
        .env_remove("SPILLWAY_DRAIN_FUNCTION")
        .output()
        .expect("spillway status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["buffer"]["waiting"], 2);
    assert_eq!(status["buffer"]["in_flight"], 1);
    assert_eq!(status["buffer"]["oldest_age_secs"], 42);
    assert!(status["dead_letters"].is_null());
    assert_eq!(status["stream"]["open_shards"], 3);
    assert_eq!(status["stream"]["retention_hours"], 24);
    assert_eq!(status["stream"]["lag_ms"], 1500);
    assert!(status["drain"].is_null());

    let usage = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["status"])
        .env_remove("SPILLWAY_SQS_QUEUE_URL")
        .env_remove("SPILLWAY_SQS_DLQ_URL")
        .env_remove("SPILLWAY_KINESIS_STREAM")
        .env_remove("SPILLWAY_DRAIN_FUNCTION")
        .output()
        .expect("spillway status");
    assert_eq!(
        usage.status.code(),
        Some(2),
        "no queue given is a usage error"
    );
}
