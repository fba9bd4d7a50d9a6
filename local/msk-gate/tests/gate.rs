//! Through a gate of the test's own (test credentials `test`/`test`, us-east-1, in front of the
//! broker `local/up` runs): MSK IAM clients produce and consume; a wrong secret is refused with
//! nothing delivered. The gate's counters are the test's alone.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;
use rdkafka::Message as _;
use spillway_core::kafka::context::SpillwayContext;
use spillway_core::kafka::iam::{start_refresher, MskSigner};
use spillway_core::kafka::{client_config, producer_config, Consumer, Producer};

mod common;
use common::PrivateGate;

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

#[tokio::test]
async fn iam_clients_produce_and_consume_through_the_gate() {
    let gate = PrivateGate::start(common::GATE, &[]);
    let topic = spillway_tests::unique_name("gate");
    let producer: Producer = producer_config(&gate.kafka())
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
    let mut settings = client_config(&gate.kafka()).expect("settings");
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
        gate.stat("auth_accepted") >= 2,
        "the gate authenticated both clients"
    );
    assert_eq!(gate.stat("auth_refused"), 0);
}

#[tokio::test]
async fn a_token_signed_with_the_wrong_secret_delivers_nothing() {
    let gate = PrivateGate::start(common::GATE, &[]);
    let context = context("wrong-secret").await;
    let health = context.health();
    let mut settings = producer_config(&gate.kafka()).expect("settings");
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
    assert!(gate.stat("auth_refused") > 0, "the gate refused the token");
    assert_eq!(gate.stat("auth_accepted"), 0, "and accepted none");
    assert!(
        health.auth_failures() > 0,
        "the client saw the authentication failure"
    );
}
