//! The one error type of the HTTP edge, and its mapping to status codes.
//!
//! Bodies follow Confluent REST Proxy's style, `{"error_code": 41301, "message": "…"}`, where
//! `error_code` is the HTTP status followed by two digits that tell cases apart. Messages name the
//! problem and the limit; internal errors are logged with the request id and answered without
//! internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use spillway_core::limits::TooLarge;
use thiserror::Error;
use utoipa::ToSchema;

/// Seconds a throttled caller is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Everything a request can fail with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed JSON, base64 or fields.
    #[error("{0}")]
    BadRequest(String),
    /// A batch with more records than allowed.
    #[error(
        "more than {max} records in one request; at most {max} are accepted (SPILLWAY_MAX_BATCH_RECORDS)"
    )]
    TooManyRecords {
        /// The limit.
        max: usize,
    },
    /// A topic outside the allow-list.
    #[error("topic `{0}` is not accepted by this API (see SPILLWAY_TOPICS)")]
    UnknownTopic(String),
    /// `POST /messages` without a configured default topic.
    #[error(
        "no default topic is configured (SPILLWAY_TOPIC); post to /v1/topics/{{topic}}/messages"
    )]
    NoDefaultTopic,
    /// A REST Proxy v3 path naming a cluster other than this API's (`SPILLWAY_CLUSTER_ID`).
    #[error("cluster `{0}` is not served here; GET /v3/clusters names the one that is (SPILLWAY_CLUSTER_ID)")]
    UnknownCluster(String),
    /// A v3 request without any record (REST Proxy's 42206, payload error).
    #[error("payload error: {0}")]
    Payload(String),
    /// A v3 `records:batch` refused as a whole (REST Proxy's 42208): malformed, empty, too many
    /// entries, or an entry id missing, malformed or repeated.
    #[error("batch error: {0}")]
    Batch(String),
    /// No such route.
    #[error("no such endpoint; see /openapi.json")]
    NoRoute,
    /// A route that exists, with another method.
    #[error("method not allowed on this endpoint; see /openapi.json")]
    MethodNotAllowed,
    /// The message would not fit the buffer.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// A claim-checked record over Kafka's own limit: no buffer can carry it to Kafka.
    #[error("the record would be {size} bytes in Kafka (value, key, headers and 2,048 for the pipeline's headers and overhead); Kafka accepts at most {limit} (SPILLWAY_KAFKA_MESSAGE_MAX_BYTES)")]
    OverKafkaLimit {
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The HTTP body itself is over the request limit.
    #[error("request body is over {limit} bytes, the most one request may carry (SPILLWAY_MAX_REQUEST_BYTES)")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A record of a v3 stream still unfinished past the request limit: the stream ends there.
    #[error("a record of the stream is over {limit} bytes and has not ended, the most one record may carry (SPILLWAY_MAX_REQUEST_BYTES); the stream ends here")]
    StreamRecordTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A v3 stream that sent nothing for `SPILLWAY_V3_STREAM_IDLE`.
    #[error("no bytes for {}; the stream ends here (SPILLWAY_V3_STREAM_IDLE)", humantime::format_duration(*idle))]
    StreamIdle {
        /// The limit.
        idle: std::time::Duration,
    },
    /// A content type this endpoint does not read.
    #[error("content type `{got}` is not supported here; use {accepted}")]
    UnsupportedMediaType {
        /// What the caller sent.
        got: String,
        /// What the endpoint accepts.
        accepted: &'static str,
    },
    /// The buffer kept throttling until the retry budget ran out. Nothing was accepted.
    #[error(
        "the buffer is throttling writes; nothing was accepted, retry after {RETRY_AFTER_SECS} s"
    )]
    Throttled,
    /// The buffer did not answer within the retry budget. Nothing was accepted.
    #[error("the buffer is unavailable; nothing was accepted, retry after {RETRY_AFTER_SECS} s")]
    Unavailable,
    /// Anything else; details are in the log under the request id.
    #[error("internal error; quote request id {request_id} when reporting it")]
    Internal {
        /// The request id.
        request_id: String,
    },
}

/// An error response body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// HTTP status times 100 plus a case number, as in Confluent REST Proxy.
    pub error_code: u32,
    /// What went wrong, and the limit where there is one.
    pub message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::TooManyRecords { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownTopic(_)
            | ApiError::UnknownCluster(_)
            | ApiError::NoDefaultTopic
            | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Payload(_) | ApiError::Batch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::StreamIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_)
            | ApiError::OverKafkaLimit { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::StreamRecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// REST Proxy-style error code: status × 100 + case.
    pub fn error_code(&self) -> u32 {
        let case = match self {
            ApiError::TooManyRecords { .. } | ApiError::UnknownTopic(_) | ApiError::TooLarge(_) => {
                1
            }
            ApiError::NoDefaultTopic | ApiError::StreamRecordTooLarge { .. } => 2,
            ApiError::OverKafkaLimit { .. } => 3,
            ApiError::UnknownCluster(_) => 4,
            ApiError::Payload(_) => 6,
            ApiError::Batch(_) => 8,
            _ => 0,
        };
        u32::from(self.status().as_u16()) * 100 + case
    }

    /// The response body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error_code: self.error_code(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Throttled | ApiError::Unavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
