//! Through the gate `local/up` runs (127.0.0.1:9098, test credentials `test`/`test`, us-east-1):
//! MSK IAM clients produce and consume; a wrong secret is refused with nothing delivered.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;
use rdkafka::Message as _;
use spillway_core::config::{Compression, KafkaAuth, KafkaConfig};
use spillway_core::kafka::context::SpillwayContext;
use spillway_core::kafka::iam::{start_refresher, MskSigner};
use spillway_core::kafka::{client_config, producer_config, Consumer, Producer};

fn gate() -> String {
    let gate = std::env::var("SPILLWAY_MSK_GATE").unwrap_or_else(|_| "127.0.0.1:9098".into());
    spillway_tests::require("msk-gate", &gate);
    gate
}

fn config() -> KafkaConfig {
    let ca = std::env::var("SPILLWAY_KAFKA_CA_FILE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/spillway/run/msk-gate-ca.pem",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    KafkaConfig {
        bootstrap: gate(),
        auth: KafkaAuth::Iam,
        compression: Compression::Lz4,
        message_max_bytes: 1_000_000,
        ca_file: Some(ca),
        token_refresh: Duration::from_secs(300),
        max_connects_per_sec: 100,
    }
}

async fn context(secret: &str) -> SpillwayContext {
    let credentials =
        SharedCredentialsProvider::new(Credentials::new("test", secret, None, None, "test"));
    let signer = Arc::new(MskSigner::new(
        aws_types::region::Region::new("us-east-1"),
        credentials,
    ));
    let (tokens, _refresher) = start_refresher(signer, Duration::from_secs(300))
        .await
        .expect("token");
    SpillwayContext::with_tokens(tokens)
}

fn stat(name: &str) -> u64 {
    let admin =
        std::env::var("SPILLWAY_MSK_GATE_ADMIN").unwrap_or_else(|_| "http://127.0.0.1:9099".into());
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{admin}/stats")])
        .output()
        .expect("curl");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    stats[name].as_u64().expect("counter")
}

#[tokio::test]
async fn iam_clients_produce_and_consume_through_the_gate() {
    let accepted_before = stat("auth_accepted");
    let topic = spillway_tests::unique_name("gate");
    let producer: Producer = producer_config(&config())
        .expect("settings")
        .create_with_context(context("test").await)
        .expect("producer");
    for i in 0..100 {
        let value = format!("through the gate {i}");
        let record = FutureRecord::to(&topic).key("k").payload(&value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered through the gate");
    }
    let mut settings = client_config(&config()).expect("settings");
    settings
        .set("group.id", spillway_tests::unique_name("gate-group"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    let consumer: Consumer = settings
        .create_with_context(context("test").await)
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = 0;
    while seen < 100 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("in time")
            .expect("consume");
        assert!(message.payload().is_some());
        seen += 1;
    }
    assert!(
        stat("auth_accepted") > accepted_before,
        "the gate authenticated the clients"
    );
}

#[tokio::test]
async fn a_token_signed_with_the_wrong_secret_delivers_nothing() {
    let refused_before = stat("auth_refused");
    let context = context("wrong-secret").await;
    let health = context.health();
    let mut settings = producer_config(&config()).expect("settings");
    settings.set("message.timeout.ms", "3000");
    let producer: Producer = settings.create_with_context(context).expect("producer");
    let topic = spillway_tests::unique_name("refused");
    let result = producer
        .send(
            FutureRecord::to(&topic).key("k").payload("nope"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        result.is_err(),
        "nothing is delivered without a valid token"
    );
    assert!(
        stat("auth_refused") > refused_before,
        "the gate refused the token"
    );
    assert!(
        health.auth_failures() > 0,
        "the client saw the authentication failure"
    );
}
