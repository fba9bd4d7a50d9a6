//! Issue 18 item 3: a value too large for the buffer goes to S3 (moto) and the queue (fauxqs)
//! gets its claim check; over Kafka's own limit it is 413 naming that limit; a write that went
//! unanswered keeps its object (the message may be in the queue all the same).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{call, closed_port_buffer, config, json, receive, sqs_queue, QUEUE_MAX};
use ingest_api::buffer::{Buffer, SqsBuffer};
use ingest_api::{app, AppState};

fn post(body: Vec<u8>) -> Request<Body> {
    Request::post("/v1/topics/orders/messages")
        .header("content-type", "application/octet-stream")
        .header("kafka-key", "k")
        .body(Body::from(body))
        .expect("request")
}

/// 2.5 MB of every byte value, repeated.
fn large() -> Vec<u8> {
    (0..2_500_000_u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_value_too_large_for_the_queue_goes_to_s3_and_the_queue_gets_its_claim() {
    let (client, url) = sqs_queue(false).await;
    let (s3, bucket, store) =
        spillway_tests::fixtures::claim_store_under("values", spillway_core::claim::VALUE_PREFIX)
            .await;
    let buffer = Buffer::Sqs(SqsBuffer::new(
        client.clone(),
        url.clone(),
        false,
        QUEUE_MAX,
    ));
    let router = app(AppState::new(config(&[]), buffer).with_claims(store));
    let value = large();
    let (status, _, body) = call(router.clone(), post(value.clone())).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let env = receive(&client, &url, 1).await.remove(0);
    assert_eq!(env.id, json(&body)["id"].as_str().unwrap_or_default());
    assert!(env.value.is_empty(), "the value is in S3, not in the queue");
    assert_eq!(env.key.as_deref(), Some(&b"k"[..]));
    let claim = env.value_claim.expect("a claim check");
    assert_eq!(claim.bucket, bucket);
    assert!(claim.key.starts_with("claims/"), "{}", claim.key);
    assert_eq!(
        spillway_core::claim::fetch(&s3, &claim)
            .await
            .expect("the object"),
        value,
        "byte for byte"
    );

    // A small value stays in the queue.
    let (status, _, _) = call(router, post(b"small".to_vec())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let env = receive(&client, &url, 1).await.remove(0);
    assert_eq!(
        (env.value.as_slice(), env.value_claim),
        (&b"small"[..], None)
    );
}

#[tokio::test]
async fn over_kafkas_limit_is_413_naming_it_and_an_unanswered_write_keeps_its_object() {
    let (client, url) = sqs_queue(false).await;
    let (s3, bucket, store) =
        spillway_tests::fixtures::claim_store_under("values", spillway_core::claim::VALUE_PREFIX)
            .await;
    let buffer = Buffer::Sqs(SqsBuffer::new(client, url, false, QUEUE_MAX));
    let router = app(AppState::new(
        config(&[("SPILLWAY_KAFKA_MESSAGE_MAX_BYTES", "1000000")]),
        buffer,
    )
    .with_claims(store.clone()));
    // Over the limit, and just under it: the drain's own headers would take it over.
    for value in [large(), vec![b'v'; 999_000]] {
        let (status, _, body) = call(router.clone(), post(value)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let message = json(&body)["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("1000000") && message.contains("SPILLWAY_KAFKA_MESSAGE_MAX_BYTES"),
            "{message}"
        );
    }

    // The buffer does not answer: 503, and the object stays (a write that went unanswered may
    // have reached the queue all the same; the bucket's lifecycle removes what nothing names).
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "200ms")]),
        closed_port_buffer(),
    )
    .with_claims(store));
    let (status, _, _) = call(router, post(large())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.key_count(), Some(1), "{:?}", listed.contents());
}

#[tokio::test]
async fn without_a_claim_bucket_a_value_too_large_is_413_naming_the_buffers_limit() {
    let (client, url) = sqs_queue(false).await;
    let buffer = Buffer::Sqs(SqsBuffer::new(client, url, false, QUEUE_MAX));
    let router = app(AppState::new(config(&[]), buffer));
    let (status, _, body) = call(router, post(large())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = json(&body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains(&QUEUE_MAX.to_string()), "{message}");
}
