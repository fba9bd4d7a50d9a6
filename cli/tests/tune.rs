//! `spillway tune` against moto's Lambda and IAM APIs (moto stores functions and event source
//! mappings; it cannot run them, and the mapping stays disabled so it never tries).

use std::process::{Command, Output};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime, ScalingConfig};
use aws_sdk_sqs::types::QueueAttributeName;

/// An empty zip archive: moto needs a package, not a runnable one.
const EMPTY_ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

async fn function_with_mapping() -> (aws_sdk_lambda::Client, String, String) {
    let endpoint = spillway_tests::aws_endpoint();
    spillway_tests::require("moto", &endpoint);
    let sdk = spillway_tests::aws_config(&endpoint).await;
    let (iam, lambda, sqs) = (
        aws_sdk_iam::Client::new(&sdk),
        aws_sdk_lambda::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
    );
    let name = spillway_tests::unique_name("drain");
    let role = iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .expect("role")
        .role
        .expect("role")
        .arn;
    lambda
        .create_function()
        .function_name(&name)
        .runtime(Runtime::Providedal2023)
        .role(role)
        .handler("bootstrap")
        .timeout(30)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(EMPTY_ZIP))
                .build(),
        )
        .send()
        .await
        .expect("function");
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "180")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let mapping = lambda
        .create_event_source_mapping()
        .function_name(&name)
        .event_source_arn(arn)
        .batch_size(10)
        .enabled(false)
        .scaling_config(ScalingConfig::builder().maximum_concurrency(5).build())
        .send()
        .await
        .expect("mapping");
    (lambda, name, mapping.uuid.expect("uuid"))
}

fn tune(args: &[&str]) -> Output {
    spillway("tune", args)
}

fn spillway(command: &str, args: &[&str]) -> Output {
    let endpoint = spillway_tests::aws_endpoint();
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg(command)
        .args(args)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ENDPOINT_URL_SQS", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SPILLWAY_SQS_QUEUE_URL")
        .env_remove("SPILLWAY_SQS_DLQ_URL")
        .env_remove("SPILLWAY_KINESIS_STREAM")
        .output()
        .expect("spillway")
}

#[tokio::test]
async fn tune_refuses_an_unsafe_setting_and_applies_a_safe_one() {
    let (lambda, function, uuid) = function_with_mapping().await;

    let shown = tune(&["--function", &function]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("queue visibility timeout 180 s ≥ 6 × function timeout 30 s = 180 s"),
        "{text}"
    );
    assert!(text.contains("not changed"));

    let unsafe_out = tune(&["--function", &function, "--max-concurrency", "1000"]);
    assert_eq!(unsafe_out.status.code(), Some(3), "refused");
    assert!(String::from_utf8_lossy(&unsafe_out.stdout)
        .contains("FAIL 1000 instances × 3 connections = 3000 ≤ 2400"));
    let mapping = lambda
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect("mapping");
    assert_eq!(
        mapping.scaling_config.and_then(|s| s.maximum_concurrency),
        Some(5),
        "nothing changed"
    );

    let safe = tune(&[
        "--function",
        &function,
        "--max-concurrency",
        "100",
        "--batch-size",
        "50",
        "--batching-window",
        "2",
        "--max-connects-per-sec",
        "4",
        "--json",
    ]);
    assert!(
        safe.status.success(),
        "{}",
        String::from_utf8_lossy(&safe.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&safe.stdout).expect("JSON");
    assert_eq!(outcome["applied"], true);
    let mapping = lambda
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .expect("mapping");
    assert_eq!(
        mapping.scaling_config.and_then(|s| s.maximum_concurrency),
        Some(100)
    );
    assert_eq!(mapping.batch_size, Some(50));
    assert_eq!(mapping.maximum_batching_window_in_seconds, Some(2));
    let config = lambda
        .get_function_configuration()
        .function_name(&function)
        .send()
        .await
        .expect("config");
    let rate = config
        .environment
        .and_then(|e| e.variables)
        .and_then(|v| v.get("SPILLWAY_MAX_CONNECTS_PER_SEC").cloned());
    assert_eq!(rate.as_deref(), Some("4"));

    // `status` shows the drain's settings as they now are.
    let status = spillway("status", &["--function", &function, "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let drain = &status["drain"];
    assert_eq!(drain["timeout_secs"], 30);
    assert_eq!(drain["max_connects_per_sec"], "4");
    assert_eq!(drain["mappings"][0]["uuid"], uuid.as_str());
    assert_eq!(drain["mappings"][0]["batch_size"], 50);
    assert_eq!(drain["mappings"][0]["batching_window_secs"], 2);
    assert_eq!(drain["mappings"][0]["max_concurrency"], 100);
}
