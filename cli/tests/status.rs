//! `spillway status --json` reports what the test put in a queue (fauxqs).

use std::process::Command;

#[tokio::test]
async fn status_json_numbers_match_the_queue() {
    let sqs = spillway_tests::sqs().await;
    let url = sqs
        .create_queue()
        .queue_name(spillway_tests::unique_name("status"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
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
        .args(["status", "--queue-url", &url, "--json"])
        .env("AWS_ENDPOINT_URL_SQS", spillway_tests::sqs_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SPILLWAY_SQS_DLQ_URL")
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
    assert!(status["dead_letters"].is_null());

    let usage = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["status"])
        .env_remove("SPILLWAY_SQS_QUEUE_URL")
        .env_remove("SPILLWAY_SQS_DLQ_URL")
        .output()
        .expect("spillway status");
    assert_eq!(
        usage.status.code(),
        Some(2),
        "no queue given is a usage error"
    );
}
