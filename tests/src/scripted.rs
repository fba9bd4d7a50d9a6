//! AWS clients whose every call gets a scripted answer, through the SDK's own test HTTP client:
//! for answers the real services may give and no local emulator does (entries left out of a
//! batch answer, throttling, empty pages). Each script sees the operation (`X-Amz-Target` after
//! its last `.`, e.g. `SendMessageBatch`) and the request's JSON body. Retries are off, so every
//! call reaches the script once.

use std::sync::Arc;

use aws_smithy_http_client::test_util::infallible_client_fn;

/// An answer: status and body (JSON, or text already JSON), or a whole response.
pub trait IntoAnswer {
    /// The HTTP response, with `content_type` unless it sets its own.
    fn into_response(self, content_type: &str) -> http::Response<String>;
}

impl IntoAnswer for (u16, serde_json::Value) {
    fn into_response(self, content_type: &str) -> http::Response<String> {
        (self.0, self.1.to_string()).into_response(content_type)
    }
}

impl IntoAnswer for (u16, &str) {
    fn into_response(self, content_type: &str) -> http::Response<String> {
        (self.0, self.1.to_owned()).into_response(content_type)
    }
}

impl IntoAnswer for (u16, String) {
    fn into_response(self, content_type: &str) -> http::Response<String> {
        http::Response::builder()
            .status(self.0)
            .header("content-type", content_type)
            .body(self.1)
            .expect("response")
    }
}

impl IntoAnswer for http::Response<String> {
    fn into_response(mut self, content_type: &str) -> http::Response<String> {
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            self.headers_mut()
                .entry(http::header::CONTENT_TYPE)
                .or_insert(value);
        }
        self
    }
}

fn http_client<A: IntoAnswer>(
    script: impl Fn(&str, &serde_json::Value) -> A + Send + Sync + 'static,
    content_type: &'static str,
) -> aws_sdk_sqs::config::SharedHttpClient {
    let script = Arc::new(script);
    infallible_client_fn(move |req| {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_owned();
        let body: serde_json::Value = req
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        script(&target, &body).into_response(content_type)
    })
}

/// An SQS client answered by `script`.
pub fn sqs<A: IntoAnswer>(
    script: impl Fn(&str, &serde_json::Value) -> A + Send + Sync + 'static,
) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(http_client(script, "application/x-amz-json-1.0"))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A Kinesis client answered by `script`.
pub fn kinesis<A: IntoAnswer>(
    script: impl Fn(&str, &serde_json::Value) -> A + Send + Sync + 'static,
) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(http_client(script, "application/x-amz-json-1.1"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}
