//! Issue 18 item 4: with `SPILLWAY_TENANT_FROM` the tenant becomes a standard queue's message
//! group, which SQS fair queues balance by. fauxqs accepts `MessageGroupId` on a standard queue
//! but drops it (it implements no fair queues), so these tests read the `SendMessageBatch`
//! requests themselves, through the SDK's own test HTTP client, answering as SQS does.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{call, config};
use ingest_api::buffer::{Buffer, SqsBuffer};
use ingest_api::{app, AppState};

fn post(tenant: Option<&str>, body: &'static str) -> Request<Body> {
    let mut req = Request::post("/v1/topics/orders/messages");
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    req.body(Body::from(body)).expect("request")
}

/// A router on a standard queue whose `SendMessageBatch` calls are kept in `sent`.
fn router(pairs: &[(&str, &str)], sent: &Arc<Mutex<Vec<serde_json::Value>>>) -> axum::Router {
    let seen = sent.clone();
    let client = spillway_tests::scripted::sqs(move |target: &str, request: &serde_json::Value| {
        seen.lock().expect("lock").push(request.clone());
        let ok: Vec<serde_json::Value> = request["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| serde_json::json!({"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}))
            .collect();
        match target {
            "SendMessageBatch" => (200, serde_json::json!({"Successful": ok, "Failed": []})),
            _ => (200, serde_json::json!({})),
        }
    });
    let buffer = Buffer::Sqs(SqsBuffer::new(
        client,
        "https://sqs.us-east-1.amazonaws.com/1/q".into(),
        false,
        262_144,
    ));
    app(AppState::new(config(pairs), buffer))
}

/// The `MessageGroupId` of every entry sent so far.
fn groups(sent: &Arc<Mutex<Vec<serde_json::Value>>>) -> Vec<Option<String>> {
    sent.lock()
        .expect("lock")
        .iter()
        .flat_map(|r| r["Entries"].as_array().cloned().unwrap_or_default())
        .map(|e| e["MessageGroupId"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_tenant_header_becomes_the_message_group_of_a_standard_queue() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let with = router(&[("SPILLWAY_TENANT_FROM", "header:X-Tenant")], &sent);
    let long = "t".repeat(300);
    for tenant in [Some("acme"), Some("globex"), None, Some(long.as_str())] {
        let (status, _, _) = call(with.clone(), post(tenant, "v")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let got = groups(&sent);
    assert_eq!(got[..3], [Some("acme".into()), Some("globex".into()), None]);
    let digest = got[3].clone().unwrap_or_default();
    assert!(
        (1..=128).contains(&digest.len()) && digest != long,
        "a tenant too long for a group id is digested: {digest}"
    );

    // Without the setting, no group: a standard queue as before.
    let sent = Arc::new(Mutex::new(Vec::new()));
    let without = router(&[], &sent);
    let (status, _, _) = call(without, post(Some("acme"), "v")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(groups(&sent), [None]);
}

/// `api-key`: the id of the API Gateway API key the request was made with (REST API payload).
#[tokio::test]
async fn the_api_key_id_becomes_the_message_group() {
    let event = r#"{
      "resource": "/{proxy+}", "path": "/v1/topics/orders/messages", "httpMethod": "POST",
      "headers": {"Content-Type": "text/plain"}, "multiValueHeaders": {"Content-Type": ["text/plain"]},
      "queryStringParameters": null, "multiValueQueryStringParameters": null,
      "pathParameters": {"proxy": "v1/topics/orders/messages"}, "stageVariables": null,
      "requestContext": {"accountId": "123456789012", "resourceId": "abc123", "stage": "prod",
        "requestId": "r-1", "identity": {"sourceIp": "203.0.113.9", "apiKeyId": "key-tenant-7"},
        "resourcePath": "/{proxy+}", "httpMethod": "POST", "apiId": "1234567890",
        "path": "/prod/v1/topics/orders/messages", "protocol": "HTTP/1.1", "requestTimeEpoch": 1764211200123},
      "body": "v", "isBase64Encoded": false
    }"#;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let with = router(&[("SPILLWAY_TENANT_FROM", "api-key")], &sent);
    let req = lambda_http::request::from_str(event)
        .expect("a valid API Gateway event")
        .map(|body| Body::from(body.to_vec()));
    let (status, _, body) = call(with, req).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(groups(&sent), [Some("key-tenant-7".to_owned())]);
}
