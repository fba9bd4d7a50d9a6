//! ingest-api against the local stack: what each endpoint accepts is in SQS (standard and FIFO) and
//! Kinesis byte for byte, batches are packed and reported per record, and a client nobody here
//! wrote (curl) gets 202 from the running binary for the AWS sample's request.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{call, json, kinesis_app, read_stream, receive, sqs_app, sqs_queue};
use spillway_core::envelope::Header;

fn single(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/octet-stream")
        .header("kafka-key", "customer-42")
        .header("kafka-header-source", "web")
        .body(Body::from(vec![0u8, 0xFF, b'{', 0xFE]))
        .expect("request")
}

fn binary_batch() -> Request<Body> {
    let body = serde_json::json!({"records": [
        {"key": STANDARD.encode("k1"), "value": STANDARD.encode([0u8, 1, 2]), "partition": 1,
         "headers": [{"name": "h", "value": STANDARD.encode([0xFFu8])}]},
        {"value": STANDARD.encode("plain text")},
    ]});
    Request::post("/topics/orders")
        .header("content-type", "application/vnd.kafka.binary.v2+json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn every_endpoint_lands_byte_for_byte_in_sqs_standard_and_fifo() {
    for fifo in [false, true] {
        let (client, url) = sqs_queue(fifo).await;
        let router = sqs_app(&client, &url, fifo, &[]);
        let (status, _, body) = call(router.clone(), single("/v1/topics/orders/messages")).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "fifo={fifo}: {}",
            String::from_utf8_lossy(&body)
        );
        let sample = Request::post("/messages")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"payload": "Hello World"}"#))
            .expect("request");
        assert_eq!(call(router.clone(), sample).await.0, StatusCode::ACCEPTED);
        let (status, _, body) = call(router.clone(), binary_batch()).await;
        assert_eq!(status, StatusCode::OK);
        let offsets = json(&body)["offsets"].as_array().expect("offsets").clone();
        assert!(offsets
            .iter()
            .all(|o| o["id"].is_string() && o["offset"].is_null()));
        assert_eq!(offsets[0]["partition"], 1);

        let got: HashMap<String, _> = receive(&client, &url, 4)
            .await
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let by_value = |v: &[u8]| {
            got.values()
                .find(|e| e.value == v)
                .unwrap_or_else(|| panic!("fifo={fifo}: value {v:?} missing"))
        };
        let one = by_value(&[0, 0xFF, b'{', 0xFE]);
        assert_eq!(
            (one.topic.as_str(), one.key.as_deref()),
            ("orders", Some(&b"customer-42"[..]))
        );
        assert_eq!(one.headers, vec![Header::new("source", "web")]);
        let sample = by_value(br#"{"payload": "Hello World"}"#);
        assert_eq!(
            sample.topic, "events",
            "POST /messages writes to the default topic"
        );
        let first = by_value(&[0, 1, 2]);
        assert_eq!(
            (first.key.as_deref(), first.partition),
            (Some(&b"k1"[..]), Some(1))
        );
        assert_eq!(first.headers, vec![Header::new("h", vec![0xFF])]);
        assert_eq!(by_value(b"plain text").key, None);
        assert_eq!(
            got[offsets[1]["id"].as_str().expect("id")].value,
            b"plain text"
        );
    }
}

#[tokio::test]
async fn every_endpoint_lands_byte_for_byte_in_kinesis() {
    let (client, stream, router) = kinesis_app(&[]).await;
    let (status, _, body) = call(router.clone(), single("/v1/topics/orders/messages")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = call(router.clone(), binary_batch()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let got = read_stream(&client, &stream, 3).await;
    assert_eq!(got[0].value, vec![0u8, 0xFF, b'{', 0xFE]);
    assert_eq!(got[0].key.as_deref(), Some(&b"customer-42"[..]));
    assert_eq!(
        (got[1].value.as_slice(), got[1].partition),
        (&[0u8, 1, 2][..], Some(1))
    );
    assert_eq!(got[2].value, b"plain text");
}

fn mixed_batch(oversize_at: Option<usize>) -> String {
    let records: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let len = if Some(i) == oversize_at { 300_000 } else { 10 + (i * 997) % 20_000 };
            serde_json::json!({"key": format!("k{}", i % 13), "value": {"i": i, "pad": "x".repeat(len)}})
        })
        .collect();
    serde_json::json!({ "records": records }).to_string()
}

#[tokio::test]
async fn a_batch_of_500_mixed_size_records_arrives_whole_with_one_oversize_record_reported() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let req = Request::post("/topics/orders")
        .header("content-type", "application/vnd.kafka.json.v2+json")
        .body(Body::from(mixed_batch(Some(123))))
        .expect("request");
    let (status, _, body) = call(router, req).await;
    assert_eq!(status, StatusCode::OK, "some records were accepted");
    let offsets = json(&body)["offsets"].as_array().expect("offsets").clone();
    assert_eq!(offsets.len(), 500);
    assert_eq!(offsets[123]["error_code"], 41301);
    assert!(offsets[123]["error"]
        .as_str()
        .expect("error")
        .contains("at most 262144 bytes"));
    assert!(offsets[123]["id"].is_null());
    let ids: Vec<&str> = offsets.iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids.len(), 499);

    let got = receive(&client, &url, 499).await;
    let got: HashMap<_, _> = got.into_iter().map(|e| (e.id.clone(), e)).collect();
    for (i, offset) in offsets.iter().enumerate().filter(|(i, _)| *i != 123) {
        let env = &got[offset["id"].as_str().expect("id")];
        let value: serde_json::Value = serde_json::from_slice(&env.value).expect("JSON value");
        assert_eq!(value["i"], i, "record {i} arrived with its own value");
        assert_eq!(
            env.key.as_deref(),
            Some(format!("\"k{}\"", i % 13).as_bytes()),
            "JSON-embedded key"
        );
    }
}

#[tokio::test]
async fn a_batch_of_500_records_arrives_whole_in_kinesis() {
    let (client, stream, router) = kinesis_app(&[]).await;
    let req = Request::post("/topics/orders")
        .header("content-type", "application/json")
        .body(Body::from(mixed_batch(None)))
        .expect("request");
    let (status, _, body) = call(router, req).await;
    assert_eq!(status, StatusCode::OK);
    let offsets = json(&body)["offsets"].as_array().expect("offsets").clone();
    assert!(offsets.iter().all(|o| o["id"].is_string()));
    let got = read_stream(&client, &stream, 500).await;
    for (i, env) in got.iter().enumerate() {
        assert_eq!(
            env.id,
            offsets[i]["id"].as_str().expect("id"),
            "one shard keeps request order"
        );
    }
}

/// The ingest-api binary under test, killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[tokio::test]
async fn curl_posts_the_aws_sample_request_to_the_running_server_and_gets_202() {
    let (client, url) = sqs_queue(false).await;
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ingest-api"))
        .env("SPILLWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("SPILLWAY_TOPIC", "events")
        .env("SPILLWAY_SQS_QUEUE_URL", &url)
        .env("AWS_ENDPOINT_URL_SQS", spillway_tests::sqs_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ingest-api");
    let _server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[&format!("{base}/healthz")]).0 != "200" {
        assert!(
            Instant::now() < deadline,
            "ingest-api did not answer /healthz"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"payload": "Hello World"}"#,
        &format!("{base}/messages"),
    ]);
    assert_eq!(code, "202", "{body}");
    let id = json(body.as_bytes())["id"].as_str().expect("id").to_owned();
    let got = receive(&client, &url, 1).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].value.as_slice()),
        (id.as_str(), &br#"{"payload": "Hello World"}"#[..])
    );

    let (code, body) = curl(&[&format!("{base}/openapi.json")]);
    assert_eq!(code, "200");
    assert_eq!(
        json(body.as_bytes())["openapi"]
            .as_str()
            .map(|v| v.starts_with('3')),
        Some(true)
    );
}

/// Issue 14 item 1: on a FIFO buffer, one `Idempotency-Key` used on two topics is two messages
/// (both answered 202, both in the queue); a retry to the same topic is one.
#[tokio::test]
async fn fifo_one_idempotency_key_on_two_topics_keeps_both_messages() {
    let (client, url) = sqs_queue(true).await;
    let router = sqs_app(&client, &url, true, &[("SPILLWAY_TOPICS", "*")]);
    let post = |topic: &str| {
        Request::post(format!("/v1/topics/{topic}/messages"))
            .header("idempotency-key", "k1")
            .body(Body::from(format!("for {topic}")))
            .expect("request")
    };
    let mut ids = Vec::new();
    for topic in ["orders", "payments", "orders"] {
        let (status, _, body) = call(router.clone(), post(topic)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{topic}");
        ids.push(json(&body)["id"].as_str().expect("id").to_owned());
    }
    assert_ne!(ids[0], ids[1], "ids are scoped by topic");
    assert_eq!(ids[0], ids[2], "a retry to the same topic shares the id");
    let mut got: Vec<(String, Vec<u8>)> = receive(&client, &url, 2)
        .await
        .into_iter()
        .map(|e| (e.topic, e.value))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("orders".to_owned(), b"for orders".to_vec()),
            ("payments".to_owned(), b"for payments".to_vec())
        ]
    );
    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "the retry to orders was deduplicated"
    );
}
