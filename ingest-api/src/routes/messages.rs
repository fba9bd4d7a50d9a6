//! Single messages: `POST /v1/topics/{topic}/messages` and the AWS sample's `POST /messages`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    body_error, check_topic, path_error, set_trace, trace_context, write_each, AppState, RequestId,
    Tenant,
};
use crate::error::{ApiError, ErrorBody};
use crate::records::{self, MessageQuery};

/// A single message was accepted by the buffer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The message id: the `spillway-id` header of the Kafka record.
    pub id: String,
    /// The topic it is for.
    pub topic: String,
}

/// Post one message to a topic
///
/// The body is the Kafka value, byte for byte, whatever its content type. The key comes from the
/// `Kafka-Key` header or the `key` query parameter; each `Kafka-Header-<name>` request header becomes a
/// Kafka header `<name>` (lower-cased, as HTTP header names are case-insensitive). An
/// `Idempotency-Key` makes retries of the same request share one message id (and one FIFO
/// deduplication id). 202 means the buffer has the message.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/messages",
    params(
        ("topic" = String, Path, description = "Kafka topic"),
        ("Kafka-Key" = Option<String>, Header, description = "The Kafka key (wins over ?key=)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; retries with the same key get the same message id"),
        ("Kafka-Header-{name}" = Option<String>, Header, description = "Becomes Kafka header {name} (lower-cased)"),
        MessageQuery,
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "The Kafka value"),
    responses(
        (status = 202, description = "The buffer accepted the message", body = Accepted),
        (status = 400, description = "Malformed key, header or idempotency key", body = ErrorBody),
        (status = 404, description = "Topic not in the allow-list", body = ErrorBody),
        (status = 413, description = "The message would exceed the buffer's limit", body = ErrorBody),
        (status = 429, description = "The buffer throttled past the retry budget; see Retry-After", body = ErrorBody),
        (status = 503, description = "The buffer is unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub(super) async fn post_topic_message(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    tenant: Tenant,
    topic: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Path(topic) = topic.map_err(path_error)?;
    accept_one(&state, &request_id, &tenant, &topic, query, &headers, body).await
}

/// Post one message to the default topic
///
/// Same as `POST /v1/topics/{topic}/messages`, to `SPILLWAY_TOPIC`: a client of the AWS sample
/// (`{"payload": "Hello World"}` posted as JSON) works unchanged.
#[utoipa::path(
    post,
    path = "/messages",
    params(
        ("Kafka-Key" = Option<String>, Header, description = "The Kafka key (wins over ?key=)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; retries with the same key get the same message id"),
        ("Kafka-Header-{name}" = Option<String>, Header, description = "Becomes Kafka header {name} (lower-cased)"),
        MessageQuery,
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "The Kafka value"),
    responses(
        (status = 202, description = "The buffer accepted the message", body = Accepted),
        (status = 404, description = "No default topic configured", body = ErrorBody),
        (status = 413, description = "The message would exceed the buffer's limit", body = ErrorBody),
        (status = 429, description = "The buffer throttled past the retry budget", body = ErrorBody),
        (status = 503, description = "The buffer is unavailable", body = ErrorBody),
    )
)]
pub(super) async fn post_default_message(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    tenant: Tenant,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let topic = state
        .inner
        .config
        .default_topic
        .clone()
        .ok_or(ApiError::NoDefaultTopic)?;
    accept_one(&state, &request_id, &tenant, &topic, query, &headers, body).await
}

async fn accept_one(
    state: &AppState,
    request_id: &RequestId,
    tenant: &Tenant,
    topic: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    check_topic(state, topic)?;
    let query = MessageQuery::parse(query.as_deref());
    let body = body.map_err(|r| body_error(state, r))?;
    let mut env = records::single(topic, &query, headers, &body)?;
    set_trace(&mut env, &trace_context(headers));
    let outcome = write_each(state, request_id, tenant, [Ok(&env)]).await;
    match outcome
        .into_iter()
        .next()
        .unwrap_or(Err(ApiError::Unavailable))
    {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                id: env.id,
                topic: env.topic,
            }),
        )),
        Err(e) => Err(e),
    }
}
