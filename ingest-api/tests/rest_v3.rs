//! REST Proxy v3 produce (issue 18 item 1) and W3C trace context (item 2), with request bodies as
//! Confluent documents them, written to fauxqs (local stack); the streaming form over a real
//! connection; the 503 case points the writer at a closed port.

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{call, closed_port_buffer, config, json, receive, sqs_app, sqs_queue};
use ingest_api::{app, AppState};

const RECORDS: &str = "/v3/clusters/spillway/topics/orders/records";
const BATCH: &str = "/v3/clusters/spillway/topics/orders/records:batch";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

/// The JSON lines of a v3 answer (each result followed by CRLF).
fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
    text.split_terminator("\r\n")
        .map(|l| json(l.as_bytes()))
        .collect()
}

/// Confluent's documented example: a BINARY key, a JSON value, a header, a partition and a
/// timestamp, answered as REST Proxy answers (offset null: the record is in the buffer).
#[tokio::test]
async fn a_record_as_confluent_documents_it_is_in_the_queue_when_answered() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let body = r#"{
        "partition_id": 1,
        "headers": [{"name": "Header-1", "value": "SGVhZGVyLTE="}, {"name": "Header-2", "value": null}],
        "key": {"type": "BINARY", "data": "Zm9vYmFy"},
        "value": {"type": "JSON", "data": {"foo": "bar"}},
        "timestamp": "2021-02-05T19:14:42Z"
    }"#;
    let req = Request::post(RECORDS)
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "rojo=00f067aa0ba902b7")
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(Body::from(body))
        .expect("request");
    let (status, headers, answer) = call(router, req).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(headers["content-type"], "application/json");
    let answer = lines(&answer);
    assert_eq!(answer.len(), 1);
    let a = &answer[0];
    assert_eq!(a["error_code"], 200);
    assert_eq!(a["cluster_id"], "spillway");
    assert_eq!(a["topic_name"], "orders");
    assert_eq!(a["partition_id"], 1);
    assert!(a["offset"].is_null());
    assert_eq!(a["timestamp"], "2021-02-05T19:14:42Z");
    assert_eq!(a["key"], serde_json::json!({"type": "BINARY", "size": 6}));
    assert_eq!(a["value"], serde_json::json!({"type": "JSON", "size": 13}));

    let got = receive(&client, &url, 1).await;
    let env = &got[0];
    assert_eq!(env.id, a["spillway_id"].as_str().expect("id"));
    assert_eq!(env.key.as_deref(), Some(&b"foobar"[..]));
    assert_eq!(env.value, br#"{"foo":"bar"}"#);
    assert_eq!(env.partition, Some(1));
    assert_eq!(env.timestamp_ms, Some(1_612_552_482_000));
    assert_eq!(env.headers.len(), 2);
    assert_eq!(env.headers[0].value, b"Header-1");
    assert!(env.headers[1].value.is_empty());
    assert_eq!(env.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(
        env.tracestate.as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        "two tracestate headers are one list"
    );
}

/// Records one after another in one body: one result per record, in order; a bad record is
/// answered alone and the others still go.
#[tokio::test]
async fn concatenated_records_get_one_result_each_in_order() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let body = concat!(
        r#"{"value":{"type":"STRING","data":"first"}}"#,
        r#"{"value":{"type":"BINARY","data":"not base64!"}}"#,
        "\r\n",
        r#"{"key":{"type":"STRING","data":"k"},"value":{"type":"STRING","data":"third"}}"#,
    );
    let (status, _, answer) = call(router.clone(), post(RECORDS, body)).await;
    assert_eq!(status, StatusCode::OK);
    let answer = lines(&answer);
    assert_eq!(answer.len(), 3, "{answer:?}");
    assert_eq!(answer[0]["error_code"], 200);
    assert_eq!(answer[1]["error_code"], 40000);
    assert!(
        answer[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a base64 string")),
        "{answer:?}"
    );
    assert_eq!(answer[2]["error_code"], 200);
    let got = receive(&client, &url, 2).await;
    let mut values: Vec<&[u8]> = got.iter().map(|e| e.value.as_slice()).collect();
    values.sort_unstable();
    assert_eq!(values, [&b"first"[..], b"third"]);

    // Bytes that are not JSON end the body: what came before is answered, then the error.
    let (status, _, answer) = call(
        router.clone(),
        post(RECORDS, r#"{"value":{"data":"YQ=="}} not json"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer = lines(&answer);
    assert_eq!(answer.len(), 2);
    assert_eq!(answer[1]["error_code"], 40000);
    receive(&client, &url, 1).await;

    // One record that is refused: its status, not 200.
    let (status, _, answer) = call(
        router,
        post(RECORDS, r#"{"value":{"type":"AVRO","data":{}}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = lines(&answer)[0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(message.contains("Schema Registry"), "{message}");
}

/// A `records:batch` answered 207 with each entry by its id; a batch that breaks REST Proxy's
/// rules is refused whole with 422.
#[tokio::test]
async fn a_batch_is_answered_207_entry_by_entry() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(
        &client,
        &url,
        false,
        &[("SPILLWAY_V3_BATCH_MAX_ENTRIES", "3")],
    );
    let body = r#"{"entries": [
        {"id": "1", "value": {"type": "STRING", "data": "My first message"}},
        {"id": "2", "value": {"type": "BINARY", "data": 1}},
        {"id": "third-entry_3", "key": {"type": "JSON", "data": 42}, "value": {"type": "JSON", "data": [1, 2]}}
    ]}"#;
    let (status, _, answer) = call(router.clone(), post(BATCH, body)).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let answer = json(&answer);
    let successes = answer["successes"].as_array().expect("successes");
    let failures = answer["failures"].as_array().expect("failures");
    assert_eq!(
        successes
            .iter()
            .map(|s| s["id"].clone())
            .collect::<Vec<_>>(),
        ["1", "third-entry_3"]
    );
    assert!(successes.iter().all(|s| s.get("error_code").is_none()
        && s["offset"].is_null()
        && s["topic_name"] == "orders"));
    assert_eq!(
        successes[1]["key"],
        serde_json::json!({"type": "JSON", "size": 2})
    );
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["id"], "2");
    assert_eq!(failures[0]["error_code"], 40000);
    let got = receive(&client, &url, 2).await;
    let mut values: Vec<&[u8]> = got.iter().map(|e| e.value.as_slice()).collect();
    values.sort_unstable();
    assert_eq!(values, [&b"My first message"[..], b"[1,2]"]);

    for (body, says) in [
        (
            r#"{"entries":[{"id":"a","value":{}},{"id":"b","value":{}},{"id":"c","value":{}},{"id":"d","value":{}}]}"#,
            "at most 3",
        ),
        (
            r#"{"entries":[{"id":"a","value":{}},{"id":"a","value":{}}]}"#,
            "more than once",
        ),
        (
            r#"{"entries":[{"id":7,"value":{}}]}"#,
            "`id` must be a string",
        ),
        (r#"{"records":[{"value":{}}]}"#, "unknown member `records`"),
        (r#"{"entries":[]}"#, "empty"),
    ] {
        let (status, _, answer) = call(router.clone(), post(BATCH, body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let answer = json(&answer);
        assert_eq!(answer["error_code"], 42208, "{body}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains(says)),
            "{answer}"
        );
    }
}

/// `GET /v3/clusters` names the one cluster; any other cluster id is 404, for discovery and
/// produce alike.
#[tokio::test]
async fn clients_discover_the_cluster_id_and_other_ids_are_404() {
    let router = app(AppState::new(
        config(&[("SPILLWAY_CLUSTER_ID", "lkc-abc123")]),
        closed_port_buffer(),
    ));
    let req = Request::get("/v3/clusters")
        .header("host", "api.example.com")
        .header("x-forwarded-proto", "https")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = call(router.clone(), req).await;
    assert_eq!(status, StatusCode::OK);
    let list = json(&body);
    assert_eq!(list["kind"], "KafkaClusterList");
    assert_eq!(
        list["metadata"]["self"],
        "https://api.example.com/v3/clusters"
    );
    assert!(list["metadata"]["next"].is_null());
    let cluster = &list["data"][0];
    assert_eq!(cluster["kind"], "KafkaCluster");
    assert_eq!(cluster["cluster_id"], "lkc-abc123");
    assert_eq!(
        cluster["topics"]["related"],
        "https://api.example.com/v3/clusters/lkc-abc123/topics"
    );
    for field in [
        "acls",
        "brokers",
        "broker_configs",
        "consumer_groups",
        "partition_reassignments",
    ] {
        assert!(cluster[field]["related"].is_string(), "{field}");
    }

    let one = Request::get("/v3/clusters/lkc-abc123")
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = call(router.clone(), one).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["cluster_id"], "lkc-abc123");

    for req in [
        Request::get("/v3/clusters/other")
            .body(Body::empty())
            .expect("request"),
        post(
            "/v3/clusters/other/topics/orders/records",
            r#"{"value":{"data":"YQ=="}}"#,
        ),
        post(
            "/v3/clusters/other/topics/orders/records:batch",
            r#"{"entries":[{"id":"1","value":{"data":"YQ=="}}]}"#,
        ),
    ] {
        let (status, _, body) = call(router.clone(), req).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json(&body)["error_code"], 40404);
    }
    let unknown_topic = post(
        "/v3/clusters/lkc-abc123/topics/nope/records",
        r#"{"value":{"data":"YQ=="}}"#,
    );
    let (status, _, body) = call(router, unknown_topic).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error_code"], 40401);
}

#[tokio::test]
async fn content_types_and_empty_bodies_are_refused_before_anything_is_read() {
    let router = app(AppState::new(config(&[]), closed_port_buffer()));
    for uri in [RECORDS, BATCH] {
        for content_type in ["text/plain", "application/json; charset=latin1", ""] {
            let mut req = Request::post(uri);
            if !content_type.is_empty() {
                req = req.header("content-type", content_type);
            }
            let req = req.body(Body::from("{}")).expect("request");
            let (status, _, body) = call(router.clone(), req).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{uri} {content_type}"
            );
            assert!(String::from_utf8_lossy(&body).contains("application/json"));
        }
        let (status, _, body) = call(router.clone(), post(uri, " \n")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
        assert!(json(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("empty")));
    }
    let (status, _, _) = call(
        router,
        Request::post(RECORDS)
            .header("content-type", "Application/JSON; charset=UTF-8")
            .body(Body::from(r#"{"value":{"data":"YQ=="}}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "read, then the buffer is down"
    );
}

/// Nothing is reported accepted that the buffer does not hold: a record is 503 with
/// Retry-After; a batch too, with every entry in `failures`.
#[tokio::test]
async fn an_unreachable_buffer_is_503_and_nothing_is_reported_accepted() {
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "200ms")]),
        closed_port_buffer(),
    ));
    let (status, headers, body) = call(
        router.clone(),
        post(RECORDS, r#"{"value":{"data":"YQ=="}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(lines(&body)[0]["error_code"], 50300);

    let body =
        r#"{"entries":[{"id":"1","value":{"data":"YQ=="}},{"id":"2","value":{"data":"Yg=="}}]}"#;
    let (status, headers, body) = call(router, post(BATCH, body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let answer = json(&body);
    assert_eq!(answer["successes"], serde_json::json!([]));
    assert_eq!(answer["failures"].as_array().map(Vec::len), Some(2));
}

/// A record the buffer cannot hold is 413 naming the size and the limit.
#[tokio::test]
async fn a_record_too_large_for_the_buffer_is_413() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let big = "x".repeat(common::QUEUE_MAX);
    let body = format!(r#"{{"value":{{"type":"STRING","data":"{big}"}}}}"#);
    let (status, _, answer) = call(router, post(RECORDS, body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = lines(&answer)[0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        message.contains(&common::QUEUE_MAX.to_string()),
        "{message}"
    );
}

/// Item 2: a request without a valid `traceparent` starts a trace; a malformed one is not
/// carried, nor its tracestate; v2 and single messages carry it too.
#[tokio::test]
async fn every_envelope_carries_a_valid_trace_context() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[]);
    let valid = |tp: &str| spillway_core::trace::TraceParent::parse(tp).is_some();

    let (status, _, _) = call(
        router.clone(),
        post(RECORDS, r#"{"value":{"data":"YQ=="}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let new = receive(&client, &url, 1).await.remove(0);
    assert!(
        new.traceparent.as_deref().is_some_and(valid),
        "{:?}",
        new.traceparent
    );
    assert_eq!(new.tracestate, None);

    let req = Request::post("/v1/topics/orders/messages")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        )
        .header("tracestate", "rojo=1")
        .body(Body::from("v"))
        .expect("request");
    assert_eq!(call(router.clone(), req).await.0, StatusCode::ACCEPTED);
    let replaced = receive(&client, &url, 1).await.remove(0);
    let tp = replaced.traceparent.clone().unwrap_or_default();
    assert!(
        valid(&tp) && !tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{tp}"
    );
    assert_eq!(
        replaced.tracestate, None,
        "no tracestate without its traceparent"
    );

    let req = Request::post("/topics/orders")
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .body(Body::from(r#"{"records":[{"value":1},{"value":2}]}"#))
        .expect("request");
    assert_eq!(call(router, req).await.0, StatusCode::OK);
    for env in receive(&client, &url, 2).await {
        assert_eq!(env.traceparent.as_deref(), Some(TRACEPARENT));
    }
}

/// The streaming form over one real connection: each record's result comes back while the
/// request is still open, before the next record is sent.
#[tokio::test]
async fn a_stream_of_records_is_answered_record_by_record_over_one_connection() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(
        &client,
        &url,
        false,
        &[("SPILLWAY_MAX_REQUEST_BYTES", "4096")],
    );
    let addr = serve(router).await;

    let results = tokio::task::spawn_blocking(move || {
        let mut conn = open_stream(addr);
        let mut seen = String::new();
        let chunk = |conn: &mut std::net::TcpStream, data: &str| {
            write!(conn, "{:x}\r\n{data}\r\n", data.len()).expect("chunk");
        };
        let read_until = |conn: &mut std::net::TcpStream, seen: &mut String, count: usize| {
            while seen.matches("\"error_code\"").count() < count {
                let mut buf = [0u8; 4096];
                let n = conn
                    .read(&mut buf)
                    .expect("the answer arrives while the stream is open");
                assert!(n > 0, "closed early: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        for i in 0..3 {
            chunk(
                &mut conn,
                &format!(r#"{{"value":{{"type":"STRING","data":"m{i}"}}}}"#),
            );
            read_until(&mut conn, &mut seen, i + 1);
        }
        // A record split across chunks, then one that never ends within the limit.
        chunk(&mut conn, r#"{"value":{"type":"STRING","#);
        chunk(&mut conn, r#""data":"m3"}}"#);
        read_until(&mut conn, &mut seen, 4);
        chunk(
            &mut conn,
            &format!(
                r#"{{"value":{{"type":"STRING","data":"{}"#,
                "y".repeat(5000)
            ),
        );
        read_until(&mut conn, &mut seen, 5);
        let _ = conn.write_all(b"0\r\n\r\n");
        seen
    })
    .await
    .expect("client");
    assert!(results.starts_with("HTTP/1.1 200"), "{results}");
    assert_eq!(
        results.matches(r#""error_code":200"#).count(),
        4,
        "{results}"
    );
    assert!(results.contains(r#""error_code":41302"#), "{results}");
    let got = receive(&client, &url, 4).await;
    let mut values: Vec<Vec<u8>> = got.into_iter().map(|e| e.value).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        [
            b"m0".to_vec(),
            b"m1".to_vec(),
            b"m2".to_vec(),
            b"m3".to_vec()
        ]
    );
}

/// Review of issue 18: when nothing was accepted, a retryable refusal (429/503) wins over a
/// record's own 400, so a client that reads the status retries the throttled record.
#[tokio::test]
async fn a_retryable_refusal_wins_over_a_bad_record_when_nothing_was_accepted() {
    let router = app(AppState::new(
        config(&[("SPILLWAY_BUFFER_RETRY_BUDGET", "200ms")]),
        closed_port_buffer(),
    ));
    let (status, headers, body) =
        call(router, post(RECORDS, r#"{}{"value":{"data":"YQ=="}}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let answer = lines(&body);
    assert_eq!(answer[0]["error_code"], 40000);
    assert_eq!(answer[1]["error_code"], 50300);
}

/// Review of issue 18: a body of more records than SPILLWAY_MAX_BATCH_RECORDS is refused whole,
/// as a v2 batch is; a partition out of range and a timestamp brokers refuse are named.
#[tokio::test]
async fn records_past_the_limits_are_refused_with_the_limit_named() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[("SPILLWAY_MAX_BATCH_RECORDS", "2")]);
    let three = r#"{"value":{"data":"YQ=="}}{"value":{"data":"YQ=="}}{"value":{"data":"YQ=="}}"#;
    let (status, _, body) = call(router.clone(), post(RECORDS, three)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = json(&body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("at most 2") && message.contains("SPILLWAY_MAX_BATCH_RECORDS"),
        "{message}"
    );
    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "nothing written"
    );

    let far = rfc3339_hours_from_now(2);
    for (record, says) in [
        (
            r#"{"value":{"data":"YQ=="},"partition_id":4294967296}"#.to_owned(),
            "`partition_id`",
        ),
        (
            format!(r#"{{"value":{{"data":"YQ=="}},"timestamp":"{far}"}}"#),
            "ahead",
        ),
    ] {
        let (status, _, body) = call(router.clone(), post(RECORDS, record.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{record}");
        let message = lines(&body)[0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{record}: {message}");
    }
}

/// An RFC 3339 time `hours` from now.
fn rfc3339_hours_from_now(hours: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(hours * 3600);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Review of issue 18: a stream that goes quiet mid-record is ended after
/// SPILLWAY_V3_STREAM_IDLE with a last line saying so, and the connection closes.
#[tokio::test]
async fn a_stream_that_goes_quiet_is_ended_with_a_last_line() {
    let (client, url) = sqs_queue(false).await;
    let router = sqs_app(&client, &url, false, &[("SPILLWAY_V3_STREAM_IDLE", "1s")]);
    let addr = serve(router).await;
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = open_stream(addr);
        let part = r#"{"value":{"data":"#;
        write!(conn, "{:x}\r\n{part}\r\n", part.len()).expect("chunk");
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        // Read until the server ends the response (the terminating chunk).
        while !seen.ends_with("0\r\n\r\n") {
            let n = conn
                .read(&mut buf)
                .expect("the server answers within the idle limit");
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    })
    .await
    .expect("client");
    assert!(answer.contains("no bytes for 1s"), "{answer}");
}

/// `router` served on a port of its own, as `cargo run -p ingest-api` serves it.
async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A connection with the head of a chunked `POST` to [`RECORDS`] sent: the body's chunks follow.
fn open_stream(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        conn,
        "POST {RECORDS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .expect("head");
    conn
}
