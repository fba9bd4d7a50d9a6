//! Helpers shared by ingest-api's tests: routers over real queues and streams of the local stack.
#![allow(dead_code, unreachable_pub, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use ingest_api::buffer::{Buffer, KinesisBuffer, SqsBuffer};
use ingest_api::config::IngestConfig;
use ingest_api::{app, AppState};
use spillway_core::config::Env;
use spillway_core::envelope::{decode, Decoded, Envelope, RawMode};
use tower::ServiceExt as _;

/// The queues' `MaximumMessageSize`, set explicitly because tests rely on it.
pub const QUEUE_MAX: usize = 262_144;

/// ingest-api's configuration from `pairs`, with a queue URL placeholder if none is given.
pub fn config(pairs: &[(&str, &str)]) -> IngestConfig {
    let mut map: BTreeMap<String, String> = BTreeMap::from([
        (
            "SPILLWAY_SQS_QUEUE_URL".to_owned(),
            "http://unused".to_owned(),
        ),
        ("SPILLWAY_TOPICS".to_owned(), "orders,events".to_owned()),
        ("SPILLWAY_TOPIC".to_owned(), "events".to_owned()),
    ]);
    for (k, v) in pairs {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    IngestConfig::from_env(&Env::new(&map)).expect("test configuration")
}

/// A fresh SQS queue on fauxqs.
pub async fn sqs_queue(fifo: bool) -> (aws_sdk_sqs::Client, String) {
    let client = spillway_tests::sqs().await;
    let max = QUEUE_MAX.to_string();
    let url = spillway_tests::fixtures::queue(
        &client,
        "ingest",
        fifo,
        &[(QueueAttributeName::MaximumMessageSize, &max)],
    )
    .await;
    (client, url)
}

/// A router writing to `url`.
pub fn sqs_app(
    client: &aws_sdk_sqs::Client,
    url: &str,
    fifo: bool,
    pairs: &[(&str, &str)],
) -> Router {
    let buffer = Buffer::Sqs(SqsBuffer::new(
        client.clone(),
        url.to_owned(),
        fifo,
        QUEUE_MAX,
    ));
    app(AppState::new(config(pairs), buffer))
}

/// A fresh one-shard Kinesis stream on kinesalite, and a router writing to it.
pub async fn kinesis_app(pairs: &[(&str, &str)]) -> (aws_sdk_kinesis::Client, String, Router) {
    let client = spillway_tests::kinesis().await;
    let stream = spillway_tests::unique_name("ingest");
    spillway_tests::fixtures::create_stream(&client, &stream, 1).await;
    let buffer = Buffer::Kinesis(KinesisBuffer::new(client.clone(), stream.clone()));
    (
        client,
        stream.clone(),
        app(AppState::new(config(pairs), buffer)),
    )
}

/// Sends `req` through `router`; returns status, headers and body.
pub async fn call(router: Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router.oneshot(req).await.expect("infallible router");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

/// The JSON body of a response.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Receives (and deletes) `n` envelopes from `url`, or panics after 30 s.
pub async fn receive(client: &aws_sdk_sqs::Client, url: &str, n: usize) -> Vec<Envelope> {
    spillway_tests::fixtures::receive(client, url, n, Duration::from_secs(30), true)
        .await
        .iter()
        .map(|m| envelope(m.body().expect("body").as_bytes()))
        .collect()
}

/// Reads every record of a one-shard stream, or panics when fewer than `n` arrive in 30 s.
pub async fn read_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    n: usize,
) -> Vec<Envelope> {
    let shards = spillway_tests::fixtures::shards(client, stream).await;
    spillway_tests::fixtures::shard_records(client, stream, shards[0].shard_id(), n)
        .await
        .iter()
        .map(|r| envelope(r.data.as_ref()))
        .collect()
}

fn envelope(bytes: &[u8]) -> Envelope {
    match decode(bytes, RawMode::Reject) {
        Ok(Decoded::Envelope(env)) => env,
        other => panic!("the buffer holds something that is not an envelope: {other:?}"),
    }
}

/// A buffer writer pointed at a closed port: every write fails as unreachable (503).
pub fn closed_port_buffer() -> Buffer {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    Buffer::Sqs(SqsBuffer::new(
        client,
        "http://127.0.0.1:9/000000000000/q".into(),
        false,
        262_144,
    ))
}
