//! Router tests with `oneshot`: every status code ingest-api answers, both API Gateway payload
//! versions, and arbitrary input. Requests that reach the buffer write to fauxqs (local stack);
//! the 503 case points the writer at a closed port; the 429 case replays an SQS throttling answer
//! through the SDK's own test HTTP client, because no local SQS server throttles.
//!
//! Over 500 lines on purpose: one test per status code and payload shape of the one router, so
//! the file is the API's answer table; the shared set-up lives in `common`.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::{call, closed_port_buffer, config, json, receive, sqs_app, sqs_queue};
use ingest_api::buffer::{Buffer, SqsBuffer};
use ingest_api::{app, AppState};
use proptest::prelude::*;

fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn a_single_message_is_acknowledged_only_with_what_the_queue_holds() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let req = Request::post("/v1/topics/orders/messages?key=ignored-query-key")
        .header("content-type", "application/octet-stream")
        .header("kafka-key", "customer-42")
        .header("kafka-header-Source", "web")
        .body(Body::from(vec![0u8, 1, 2, 0xFF]))
        .expect("request");
    let (status, headers, body) = call(router, req).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(headers.contains_key("x-request-id"));
    let accepted = json(&body);
    let got = receive(&client, &url, 1).await;
    assert_eq!(got[0].id, accepted["id"].as_str().expect("id"));
    assert_eq!(got[0].topic, "orders");
    assert_eq!(got[0].value, vec![0u8, 1, 2, 0xFF]);
    assert_eq!(
        got[0].key.as_deref(),
        Some(&b"customer-42"[..]),
        "the header wins over ?key="
    );
    assert_eq!(
        got[0].headers,
        vec![spillway_core::envelope::Header::new("source", "web")]
    );
}

#[tokio::test]
async fn idempotency_keys_give_retries_the_same_id() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let req = Request::post("/messages")
            .header("idempotency-key", "order-7-attempt")
            .body(Body::from("x"))
            .expect("request");
        let (status, _, body) = call(router.clone(), req).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(json(&body)["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    let got = receive(&client, &url, 2).await;
    assert!(got
        .iter()
        .all(|e| e.id == ids[0] && e.idempotency_key.as_deref() == Some("order-7-attempt")));

    let req = Request::post("/messages")
        .header("idempotency-key", "has space")
        .body(Body::from("x"))
        .expect("request");
    let (status, _, body) = call(router, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error_code"], 40000);
}

#[tokio::test]
async fn bad_requests_get_400_with_the_problem_named() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[("SPILLWAY_MAX_BATCH_RECORDS", "3")]);
    let cases = [
        (
            "{not json",
            "application/vnd.kafka.json.v2+json",
            "not a valid produce request",
        ),
        (
            r#"{"records":[]}"#,
            "application/json",
            "`records` is empty",
        ),
        (
            r#"{"records":[{"value":1},{"value":2},{"value":3},{"value":4}]}"#,
            "application/json",
            "more than 3 records in one request; at most 3",
        ),
        (
            r#"{"records":[{"value":"!!"}]}"#,
            "application/vnd.kafka.binary.v2+json",
            "record 0: `value` is not valid base64",
        ),
        (
            r#"{"records":[{"value":{"a":1}}]}"#,
            "application/vnd.kafka.binary.v2+json",
            "must be a base64 string",
        ),
        (
            r#"{"records":[{"key":"k"}]}"#,
            "application/json",
            "`value` is required",
        ),
        (
            r#"{"records":[{"value":1,"partition":-1}]}"#,
            "application/json",
            "`partition` must be 0 or more",
        ),
    ];
    for (body, content_type, expected) in cases {
        let (status, _, response) =
            call(router.clone(), post("/topics/orders", content_type, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = json(&response)["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(message.contains(expected), "{body}: {message}");
    }
}

/// Issue 14 item 2 / rule 8: a caller cannot set the headers the pipeline owns — a forged
/// `spillway-id` would make readers count an accepted message as never delivered.
#[tokio::test]
async fn reserved_header_names_are_refused_with_the_header_named() {
    let router = app(AppState::new(config(&[]), closed_port_buffer()));
    for name in [
        "Spillway-Id",
        "spillway-received-at",
        "x-amzn-trace-id",
        "traceparent",
    ] {
        let req = Request::post("/v1/topics/orders/messages")
            .header(format!("kafka-header-{name}"), "forged")
            .body(Body::from("x"))
            .expect("request");
        let (status, _, body) = call(router.clone(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        let message = json(&body)["message"].as_str().expect("message").to_owned();
        assert!(
            message.contains(&name.to_ascii_lowercase()) && message.contains("reserved"),
            "{name}: {message}"
        );
    }
    for (format, value) in [
        ("application/json", "\"forged\""),
        ("application/vnd.kafka.binary.v2+json", "\"Zm9yZ2Vk\""),
    ] {
        let batch = format!(
            r#"{{"records":[{{"value":"AA==","headers":[{{"name":"spillway-id","value":{value}}}]}}]}}"#
        );
        let (status, _, body) = call(router.clone(), post("/topics/orders", format, batch)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{format}");
        let message = json(&body)["message"].as_str().expect("message").to_owned();
        assert!(
            message.contains("record 0") && message.contains("`spillway-id` is reserved"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn query_keys_are_percent_decoded_to_exact_bytes() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let req = Request::post("/messages?other=1&key=%FF%00a+b")
        .body(Body::from("x"))
        .expect("request");
    let (status, _, _) = call(router, req).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = receive(&client, &url, 1).await;
    assert_eq!(
        got[0].key.as_deref(),
        Some(&[0xFF, 0x00, b'a', b' ', b'b'][..])
    );
}

#[tokio::test]
async fn a_topic_that_is_not_utf8_gets_a_json_400() {
    // Found by `no_input_panics_the_router`: axum's own path rejection answered in plain text.
    for path in ["/v1/topics/%FF/messages", "/topics/%C3%28"] {
        let router = app(AppState::new(config(&[]), closed_port_buffer()));
        let req = Request::post(path).body(Body::from("x")).expect("request");
        let (status, _, body) = call(router, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let body = json(&body);
        assert!(body["error_code"].is_u64(), "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the topic in the path could not be read")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_topics_routes_and_methods() {
    let router = app(AppState::new(
        config(&[("SPILLWAY_TOPICS", "orders"), ("SPILLWAY_TOPIC", "")]),
        closed_port_buffer(),
    ));
    let (status, _, body) = call(
        router.clone(),
        post("/v1/topics/payments/messages", "text/plain", "x"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error_code"], 40401);
    assert!(json(&body)["message"]
        .as_str()
        .expect("message")
        .contains("`payments`"));

    let (status, _, body) = call(
        router.clone(),
        post(
            "/messages",
            "application/json",
            r#"{"payload":"Hello World"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error_code"], 40402, "no default topic");

    let (status, _, body) = call(router.clone(), post("/nowhere", "text/plain", "x")).await;
    assert_eq!(
        (status, json(&body)["error_code"].clone()),
        (StatusCode::NOT_FOUND, 40400.into())
    );

    let get = Request::get("/v1/topics/orders/messages")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = call(router.clone(), get).await;
    assert_eq!(
        (status, json(&body)["error_code"].clone()),
        (StatusCode::METHOD_NOT_ALLOWED, 40500.into())
    );

    let (status, _, body) = call(
        router,
        Request::get("/healthz")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn too_large_for_the_buffer_is_413_with_size_and_limit() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let (status, _, body) = call(
        router.clone(),
        post("/messages", "text/plain", "x".repeat(262_144)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = json(&body)["message"].as_str().expect("message").to_owned();
    assert!(
        message.contains("the SQS buffer accepts at most 262144 bytes"),
        "{message}"
    );
    assert_eq!(json(&body)["error_code"], 41301);

    let huge = vec![b'x'; ingest_api::config::SERVER_MAX_REQUEST_BYTES + 1];
    let (status, _, body) = call(router, post("/messages", "text/plain", huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json(&body)["message"]
        .as_str()
        .expect("message")
        .contains("10000000 bytes"));
}

/// Issue 14 item 5: in Lambda the body limit is the 6 MB an invocation carries, answered with a
/// JSON 413 naming it (not a gateway error after the host cut the request off).
#[tokio::test]
async fn in_lambda_the_body_limit_is_the_invocation_payload_limit() {
    let lambda = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]);
    assert_eq!(
        lambda.max_request_bytes,
        ingest_api::config::LAMBDA_MAX_REQUEST_BYTES
    );
    let router = app(AppState::new(lambda, closed_port_buffer()));
    let body = vec![b'x'; ingest_api::config::LAMBDA_MAX_REQUEST_BYTES + 1];
    let (status, _, body) = call(router, post("/messages", "text/plain", body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = json(&body)["message"].as_str().expect("message").to_owned();
    assert!(message.contains("6291456 bytes"), "{message}");
    let over = [
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("SPILLWAY_MAX_REQUEST_BYTES", "10000000"),
        ("SPILLWAY_SQS_QUEUE_URL", "http://unused"),
        ("SPILLWAY_TOPIC", "events"),
    ];
    let err = ingest_api::config::IngestConfig::from_env(&spillway_core::config::Env::new(&over))
        .expect_err("more than Lambda can carry");
    assert!(
        err.to_string().contains("SPILLWAY_MAX_REQUEST_BYTES"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_batch_content_types_are_415() {
    let router = app(AppState::new(config(&[]), closed_port_buffer()));
    for content_type in ["text/plain", "application/vnd.kafka.avro.v2+json", ""] {
        let (status, _, body) = call(
            router.clone(),
            post("/topics/orders", content_type, r#"{"records":[]}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert!(json(&body)["message"]
            .as_str()
            .expect("message")
            .contains("application/vnd.kafka.binary.v2+json"));
    }
}

/// A writer whose queue is on a port nothing listens on: every write is a connection failure.
#[tokio::test]
async fn an_unreachable_buffer_is_503_with_retry_after_and_nothing_reported_accepted() {
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "200ms")]),
        closed_port_buffer(),
    ));
    let (status, headers, body) =
        call(router.clone(), post("/messages", "application/json", "{}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii")),
        Some("1")
    );
    assert_eq!(json(&body)["error_code"], 50300);

    let batch = r#"{"records":[{"value":1},{"value":2}]}"#;
    let (status, headers, body) =
        call(router, post("/topics/orders", "application/json", batch)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let offsets = json(&body)["offsets"].as_array().expect("offsets").clone();
    assert_eq!(offsets.len(), 2);
    assert!(offsets
        .iter()
        .all(|o| o["id"].is_null() && o["error_code"] == 50300));
}

#[tokio::test]
async fn a_throttling_buffer_is_429_once_the_retry_budget_is_spent() {
    let client = spillway_tests::scripted::sqs(|_: &str, _: &serde_json::Value| {
        axum::http::Response::builder()
            .status(400)
            .header(
                "x-amzn-query-error",
                "AWS.SimpleQueueService.RequestThrottled;Sender",
            )
            .body(
                r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#
                    .to_owned(),
            )
            .expect("response")
    });
    let buffer = Buffer::Sqs(SqsBuffer::new(
        client,
        "https://sqs.us-east-1.amazonaws.com/1/q".into(),
        false,
        262_144,
    ));
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "300ms")]),
        buffer,
    ));
    let (status, headers, body) = call(
        router,
        post("/v1/topics/orders/messages", "text/plain", "x"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        headers
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii")),
        Some("1")
    );
    assert_eq!(json(&body)["error_code"], 42900);
}

const REST_V1_EVENT: &str = r#"{
  "resource": "/{proxy+}", "path": "/v1/topics/orders/messages", "httpMethod": "POST",
  "headers": {"Content-Type": "application/octet-stream", "Kafka-Key": "customer-42"},
  "multiValueHeaders": {"Content-Type": ["application/octet-stream"], "Kafka-Key": ["customer-42"]},
  "queryStringParameters": null, "multiValueQueryStringParameters": null,
  "pathParameters": {"proxy": "v1/topics/orders/messages"}, "stageVariables": null,
  "requestContext": {"accountId": "123456789012", "resourceId": "abc123", "stage": "prod",
    "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "identity": {"sourceIp": "203.0.113.9"},
    "resourcePath": "/{proxy+}", "httpMethod": "POST", "apiId": "1234567890",
    "path": "/prod/v1/topics/orders/messages", "protocol": "HTTP/1.1", "requestTimeEpoch": 1764211200123},
  "body": "AAEC/w==", "isBase64Encoded": true
}"#;

const HTTP_V2_EVENT: &str = r#"{
  "version": "2.0", "routeKey": "$default", "rawPath": "/v1/topics/orders/messages", "rawQueryString": "key=k2",
  "headers": {"content-type": "application/octet-stream", "kafka-header-trace": "t-1"},
  "requestContext": {"accountId": "123456789012", "apiId": "api-id", "domainName": "id.execute-api.us-east-1.amazonaws.com",
    "domainPrefix": "id", "http": {"method": "POST", "path": "/v1/topics/orders/messages", "protocol": "HTTP/1.1",
    "sourceIp": "203.0.113.9", "userAgent": "agent"}, "requestId": "id-v2-request", "routeKey": "$default",
    "stage": "$default", "time": "27/Nov/2026:19:03:58 +0000", "timeEpoch": 1764211200123},
  "body": "AAEC/w==", "isBase64Encoded": true
}"#;

/// Issue 15 item 10: behind `binaryMediaTypes: */*` API Gateway hands every body over
/// base64-encoded, whatever its type (protobuf, an image, text): each is buffered as the very bytes
/// the caller sent.
#[tokio::test]
async fn bodies_of_any_type_behind_binary_media_types_arrive_byte_for_byte() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let samples: [(&str, &[u8]); 3] = [
        (
            "application/x-protobuf",
            &[0x08, 0x96, 0x01, 0x12, 0x02, 0xff, 0x00],
        ),
        (
            "image/png",
            &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a],
        ),
        ("text/plain; charset=utf-8", "ü 😀 'quoted'".as_bytes()),
    ];
    for (content_type, bytes) in samples {
        let body = base64::engine::general_purpose::STANDARD.encode(bytes);
        let event = REST_V1_EVENT
            .replace("application/octet-stream", content_type)
            .replace("AAEC/w==", &body);
        let req = lambda_http::request::from_str(&event).expect("a valid API Gateway event");
        let req = req.map(|body| Body::from(body.to_vec()));
        let (status, _, answer) = call(router.clone(), req).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{content_type}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let got = receive(&client, &url, 3).await;
    let mut values: Vec<Vec<u8>> = got.into_iter().map(|e| e.value).collect();
    values.sort();
    let mut sent: Vec<Vec<u8>> = samples.iter().map(|(_, b)| b.to_vec()).collect();
    sent.sort();
    assert_eq!(values, sent);
}

#[tokio::test]
async fn api_gateway_rest_and_http_api_payloads_with_base64_bodies() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    for (event, request_id) in [
        (REST_V1_EVENT, "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"),
        (HTTP_V2_EVENT, "id-v2-request"),
    ] {
        let req = lambda_http::request::from_str(event).expect("a valid API Gateway event");
        let req = req.map(|body| Body::from(body.to_vec()));
        let (status, headers, body) = call(router.clone(), req).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            headers
                .get("x-request-id")
                .map(|v| v.to_str().expect("ascii")),
            Some(request_id)
        );
    }
    let mut got = receive(&client, &url, 2).await;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode("AAEC/w==")
        .expect("base64");
    assert!(got.iter().all(|e| e.value == bytes && e.topic == "orders"));
    assert_eq!(got[0].key.as_deref(), Some(&b"customer-42"[..]));
    assert_eq!(got[1].key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(
        got[1].headers,
        vec![spillway_core::envelope::Header::new("trace", "t-1")]
    );
}

fn any_request() -> impl Strategy<Value = Request<Body>> {
    let path = prop_oneof![
        Just("/messages".to_owned()),
        Just("/topics/orders".to_owned()),
        Just("/v1/topics/orders/messages".to_owned()),
        "/[a-z/{}%.]{0,40}".prop_map(|p| p),
        "/v1/topics/[ -~]{0,20}/messages".prop_map(|p| p
            .replace(' ', "%20")
            .replace('#', "%23")
            .replace('?', "%3F")),
    ];
    let method = prop_oneof![Just("POST"), Just("GET"), Just("PUT"), Just("DELETE")];
    let content_type = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/vnd.kafka.binary.v2+json".to_owned()),
        Just("application/vnd.kafka.json.v2+json".to_owned()),
        "[ -~]{0,30}",
    ];
    let headers = proptest::collection::vec(
        (
            prop_oneof![
                Just("kafka-key"),
                Just("idempotency-key"),
                Just("kafka-header-x"),
                Just("kafka-header-spillway-id"),
                Just("x-request-id")
            ],
            // Mostly values a header can carry (the rest are filtered out as unbuildable).
            prop_oneof![
                3 => "[ -~]{0,40}".prop_map(String::into_bytes),
                1 => any::<Vec<u8>>(),
            ],
        ),
        0..4,
    );
    let body = prop_oneof![
        any::<Vec<u8>>(),
        Just(
            br#"{"records":[{"key":"a","value":{"x":1},"headers":[{"name":"h","value":null}]}]}"#
                .to_vec()
        ),
        Just(br#"{"records":[{"key":"!!","value":"AA==","partition":2}]}"#.to_vec()),
        Just(br#"{"records":[{},{},{"value":[1,{"a":null}]}],"x":{}}"#.to_vec()),
        "[ -~]{0,200}".prop_map(|s| format!(r#"{{"records":[{{"value":{s}}}]}}"#).into_bytes()),
    ];
    (path, method, content_type, headers, body).prop_filter_map(
        "a buildable request",
        |(path, method, ct, headers, body)| {
            let mut builder = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header("content-type", ct.as_str());
            for (name, value) in headers {
                let value = axum::http::HeaderValue::from_bytes(&value).ok()?;
                builder = builder.header(name, value);
            }
            builder.body(Body::from(body)).ok()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: spillway_tests::fuzz_cases(300),
        // Unbuildable requests are skipped, not failures: allow as many skips as cases (the
        // default, 65,536, ended a million-case run early).
        max_global_rejects: spillway_tests::fuzz_cases(300).max(65_536),
        max_local_rejects: spillway_tests::fuzz_cases(300).max(65_536),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Fuzzing (issue 14): whatever comes in — method, path, headers, body — the router answers,
    /// with a client error or the buffer's own failure (the writer here has no server behind it),
    /// never a panic or a 500. `SPILLWAY_FUZZ_CASES` sets the number of inputs.
    #[test]
    fn fuzz_no_input_panics_the_router(req in any_request()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let router = app(AppState::new(config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "0s")]), closed_port_buffer()));
        let (status, _, body) = runtime.block_on(call(router, req));
        prop_assert!(status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE, "{status}");
        prop_assert!(json(&body)["error_code"].is_u64() || json(&body)["offsets"].is_array());
    }
}

/// An SQS client whose every call gets `answer(operation)`.
fn scripted_sqs(answer: fn(&str) -> (u16, &'static str)) -> aws_sdk_sqs::Client {
    spillway_tests::scripted::sqs(move |target: &str, _: &serde_json::Value| answer(target))
}

/// Issue 14 item 6 (rule 10): a `SendMessageBatch` answer that names neither success nor failure
/// for an entry, or names ids that were never sent, is not a write; the caller must not get 202.
#[tokio::test]
async fn sqs_entries_missing_from_the_answer_are_not_accepted() {
    // `SendMessage` (the single retries) answers without a `MessageId` in both.
    let nothing_named: fn(&str) -> (u16, &'static str) = |t| match t {
        "SendMessageBatch" => (200, r#"{"Successful":[],"Failed":[]}"#),
        _ => (200, "{}"),
    };
    let strangers_named: fn(&str) -> (u16, &'static str) = |t| match t {
        "SendMessageBatch" => (
            200,
            r#"{"Successful":[{"Id":"77","MessageId":"m","MD5OfMessageBody":"x"}],"Failed":[{"Id":"78","Code":"InternalError","SenderFault":false}]}"#,
        ),
        _ => (200, "{}"),
    };
    for (batch_answer, answer) in [
        ("nothing named", nothing_named),
        ("strangers named", strangers_named),
    ] {
        let buffer = Buffer::Sqs(SqsBuffer::new(
            scripted_sqs(answer),
            "https://sqs.us-east-1.amazonaws.com/1/q".into(),
            false,
            262_144,
        ));
        let router = app(AppState::new(
            config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "100ms")]),
            buffer,
        ));
        let (status, _, body) = call(
            router.clone(),
            post("/v1/topics/orders/messages", "text/plain", "x"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{batch_answer}: {}",
            String::from_utf8_lossy(&body)
        );
        let batch = r#"{"records":[{"value":1},{"value":2}]}"#;
        let (status, _, body) =
            call(router, post("/topics/orders", "application/json", batch)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{batch_answer}");
        assert!(json(&body)["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .all(|o| o["id"].is_null()));
    }
}

/// Issue 14 item 6 (rule 10): a `PutRecords` answer whose `Records` list is shorter than the
/// request leaves the records it does not reach unwritten.
#[tokio::test]
async fn kinesis_records_missing_from_a_short_answer_are_not_accepted() {
    let kinesis = spillway_tests::scripted::kinesis(|target: &str, _: &serde_json::Value| {
        if target == "PutRecords" {
            (
                200,
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-0"}]}"#,
            )
        } else {
            // The single retries (`PutRecord`) answer without a sequence number.
            (200, r#"{"ShardId":"shardId-0"}"#)
        }
    });
    let buffer = Buffer::Kinesis(ingest_api::buffer::KinesisBuffer::new(kinesis, "s".into()));
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "100ms")]),
        buffer,
    ));
    let batch = r#"{"records":[{"value":1},{"value":2},{"value":3}]}"#;
    let (status, _, body) = call(router, post("/topics/orders", "application/json", batch)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let offsets = json(&body)["offsets"].as_array().expect("offsets").clone();
    assert!(offsets[0]["id"].is_string(), "the one the answer named");
    assert!(
        offsets[1..]
            .iter()
            .all(|o| o["id"].is_null() && o["error_code"] == 50300),
        "{offsets:?}"
    );
}
