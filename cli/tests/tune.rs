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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn scaling_of(
    lambda: &aws_sdk_lambda::Client,
    uuid: &str,
) -> (Option<i32>, Option<(i32, i32)>) {
    let mapping = lambda
        .get_event_source_mapping()
        .uuid(uuid)
        .send()
        .await
        .expect("mapping");
    (
        mapping.scaling_config.and_then(|s| s.maximum_concurrency),
        mapping
            .provisioned_poller_config
            .and_then(|p| Some((p.minimum_pollers?, p.maximum_pollers?))),
    )
}

#[tokio::test]
async fn tune_moves_a_mapping_to_provisioned_pollers_within_the_quotas_and_status_shows_the_mode() {
    let (lambda, function, uuid) = function_with_mapping().await;
    let f = function.as_str();

    refuses_two_modes_and_pollers_out_of_range(f);
    assert_eq!(scaling_of(&lambda, &uuid).await, (Some(5), None));

    // 300 pollers drive up to 3,000 invokes: 9,000 connections, past 80 % of the quota.
    let too_many = tune(&[
        "--function",
        f,
        "--min-pollers",
        "2",
        "--max-pollers",
        "300",
    ]);
    assert_eq!(too_many.status.code(), Some(3));
    assert!(stdout(&too_many).contains("FAIL 3000 instances × 3 connections = 9000 ≤ 2400"));
    assert_eq!(
        scaling_of(&lambda, &uuid).await,
        (Some(5), None),
        "nothing changed"
    );

    let moved = tune(&[
        "--function",
        f,
        "--min-pollers",
        "2",
        "--max-pollers",
        "50",
        "--poller-hour-usd",
        "0.2",
    ]);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let text = stdout(&moved);
    assert!(text.contains("mode provisioned, pollers 2–50"), "{text}");
    assert!(text.contains(
        "always on: 2 pollers × 730 h = 1460 poller-hours a month × $0.2 = $292.00, billed whether or not messages flow"
    ), "{text}");
    assert!(
        text.contains("ok   500 instances × 3 connections = 1500 ≤ 2400"),
        "{text}"
    );
    assert!(
        text.contains("ok   scale-up: 17 new instances/s × 3 connections = 51 attempts/s"),
        "{text}"
    );
    assert!(text.contains("applied"));
    // The maximum concurrency is gone: AWS takes one of the two.
    assert_eq!(scaling_of(&lambda, &uuid).await, (None, Some((2, 50))));

    // Concurrency now follows the pollers; a maximum concurrency is refused.
    let on_demand = tune(&["--function", f, "--max-concurrency", "20"]);
    assert_eq!(on_demand.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&on_demand.stderr)
        .contains("is in provisioned mode (pollers 2–50)"));

    // One bound alone changes that bound; the other stays.
    let raised = tune(&["--function", f, "--max-pollers", "60", "--json"]);
    assert!(
        raised.status.success(),
        "{}",
        String::from_utf8_lossy(&raised.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&raised.stdout).expect("JSON");
    assert_eq!(outcome["plan"]["scaling"]["mode"], "provisioned");
    assert_eq!(scaling_of(&lambda, &uuid).await, (None, Some((2, 60))));

    managed_instances_count_connections_per_environment(&lambda, f, &uuid).await;

    let status = spillway("status", &["--function", f, "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let mapping = &status["drain"]["mappings"][0];
    assert_eq!(mapping["mode"], "provisioned");
    assert_eq!(mapping["pollers"], serde_json::json!({"min": 2, "max": 60}));
    assert_eq!(mapping["max_concurrency"], serde_json::Value::Null);
    let text = stdout(&spillway("status", &["--function", f]));
    assert!(text.contains("provisioned, pollers 2–60"), "{text}");
}

/// On Lambda Managed Instances one environment serves many invokes over one producer: 2,000
/// pollers (20,000 invokes) would fit at 64 invokes an environment, not at 10 — but only a
/// function deployed with that sharing may be set so.
async fn managed_instances_count_connections_per_environment(
    lambda: &aws_sdk_lambda::Client,
    f: &str,
    uuid: &str,
) {
    let shared = |per_environment: &str| {
        tune(&[
            "--function",
            f,
            "--max-pollers",
            "2000",
            "--invocations-per-environment",
            per_environment,
        ])
    };
    let ten = shared("10");
    assert_eq!(ten.status.code(), Some(3));
    assert!(stdout(&ten).contains(
        "FAIL 20000 invokes ÷ 10 per environment = 2000 environments × 3 connections = 6000 ≤ 2400"
    ));
    // The function here runs on default compute (one invocation per environment): 64 is a
    // what-if — its arithmetic is shown, and it is not written.
    let sixty_four = shared("64");
    assert_eq!(sixty_four.status.code(), Some(3), "{}", stdout(&sixty_four));
    let text = stdout(&sixty_four);
    assert!(text.contains(
        "ok   20000 invokes ÷ 64 per environment = 313 environments × 3 connections = 939 ≤ 2400"
    ), "{text}");
    assert!(text.contains(
        "FAIL 64 invocations per environment ≤ the function's own 1 (its Lambda Managed Instances setting; 1 on default compute)"
    ), "{text}");
    assert_eq!(scaling_of(lambda, uuid).await, (None, Some((2, 60))));
}

/// Both modes at once, half a poller setting, or pollers past AWS's range: refused as usage
/// (exit 2) before anything is written.
fn refuses_two_modes_and_pollers_out_of_range(f: &str) {
    for (args, says) in [
        (
            &[
                "--min-pollers",
                "2",
                "--max-pollers",
                "10",
                "--max-concurrency",
                "5",
            ][..],
            "a mapping takes one",
        ),
        (
            &["--min-pollers", "2"][..],
            "needs both --min-pollers and --max-pollers",
        ),
        (
            &["--min-pollers", "2", "--max-pollers", "2001"][..],
            "--max-pollers 2001 is out of range: 2 (the minimum pollers) to 2000",
        ),
    ] {
        let out = tune(&[&["--function", f][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
