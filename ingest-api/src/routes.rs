//! The router: endpoints, request ids, fallbacks.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use spillway_core::envelope::Envelope;
use tower::ServiceExt as _;
use tracing::Instrument as _;
use utoipa::{OpenApi, ToSchema};

use crate::buffer::{Buffer, Outgoing, WriteError};
use crate::config::IngestConfig;
use crate::error::{ApiError, ErrorBody};
use crate::records::{self, EmbeddedFormat, MessageQuery, ProduceResponse, RecordOffset};

/// Everything handlers share: configuration and the buffer writer, built once at start.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: IngestConfig,
    buffer: Buffer,
}

impl AppState {
    /// State from a configuration and a buffer writer.
    pub fn new(config: IngestConfig, buffer: Buffer) -> Self {
        Self {
            inner: Arc::new(Inner { config, buffer }),
        }
    }
}

/// The request's id: API Gateway's when running in Lambda, the caller's `X-Request-Id` when it
/// sent a sane one, else a fresh UUID. Logged with every line and returned as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The API. Tests call it with `oneshot`; `main` serves it locally or under `lambda_http`.
pub fn app(state: AppState) -> Router {
    // The stage prefix must go before routing, so the routes are wrapped rather than layered.
    let routes = routes(state).map_request(strip_api_gateway_stage);
    Router::new().fallback_service(routes)
}

/// lambda_http puts API Gateway's stage in front of the path (`/prod/messages`) unless
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set; the routes are stage-independent.
fn strip_api_gateway_stage<B>(mut req: Request<B>) -> Request<B> {
    use lambda_http::request::RequestContext;
    if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_some() {
        return req;
    }
    let stage = match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return req;
    };
    let prefix = format!("/{stage}");
    let Some(rest) = req
        .uri()
        .path()
        .strip_prefix(&prefix)
        .filter(|r| r.starts_with('/'))
    else {
        return req;
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

fn routes(state: AppState) -> Router {
    let max_request_bytes = state.inner.config.max_request_bytes;
    Router::new()
        .route("/v1/topics/{topic}/messages", post(post_topic_message))
        .route("/messages", post(post_default_message))
        .route("/topics/{topic}", post(post_records))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let from_gateway = gateway_request_id(req.extensions());
    let from_caller = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    let id = from_gateway
        .or(from_caller)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis(),
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// API Gateway's request id, when running in Lambda behind it.
fn gateway_request_id(extensions: &axum::http::Extensions) -> Option<String> {
    use lambda_http::request::RequestContext;
    match extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(ctx) => ctx.request_id.clone(),
        RequestContext::ApiGatewayV2(ctx) => ctx.request_id.clone(),
        _ => None,
    }
}

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
async fn post_topic_message(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    topic: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Path(topic) = topic.map_err(path_error)?;
    accept_one(&state, &request_id, &topic, query, &headers, body).await
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
async fn post_default_message(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
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
    accept_one(&state, &request_id, &topic, query, &headers, body).await
}

async fn accept_one(
    state: &AppState,
    request_id: &RequestId,
    topic: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    check_topic(state, topic)?;
    let query = MessageQuery::parse(query.as_deref());
    let body = body.map_err(|r| body_error(state, r))?;
    let env = records::single(topic, &query, headers, &body)?;
    let outgoing = prepare(state, &env)?;
    let deadline = Instant::now() + state.inner.config.retry_budget;
    let outcome = state
        .inner
        .buffer
        .write(std::slice::from_ref(&outgoing), deadline)
        .await;
    match outcome
        .into_iter()
        .next()
        .unwrap_or(Err(WriteError::Unavailable("no outcome".into())))
    {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                id: env.id,
                topic: env.topic,
            }),
        )),
        Err(e) => Err(write_error(request_id, e)),
    }
}

/// Produce records (Confluent REST Proxy v2)
///
/// Keys and values are embedded JSON (`application/vnd.kafka.json.v2+json` or `application/json`:
/// produced as their JSON text) or base64 (`application/vnd.kafka.binary.v2+json`). Header values are
/// strings, or base64 in the binary format. The answer has one entry per record in request order: its
/// id, or `error_code` and `error`. The Kafka offset is not known yet — the record is in the buffer —
/// so `offset` is always null. 200 when at least one record was accepted; when none was, the status
/// of the first failure (413, 429, 503) with the same body.
#[utoipa::path(
    post,
    path = "/topics/{topic}",
    params(("topic" = String, Path, description = "Kafka topic")),
    request_body(content = records::ProduceRequest, content_type = "application/vnd.kafka.json.v2+json"),
    responses(
        (status = 200, description = "Per-record outcomes; at least one accepted", body = ProduceResponse),
        (status = 400, description = "Malformed request or too many records", body = ErrorBody),
        (status = 404, description = "Topic not in the allow-list", body = ErrorBody),
        (status = 413, description = "No record fits the buffer", body = ProduceResponse),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 429, description = "The buffer throttled past the retry budget", body = ProduceResponse),
        (status = 503, description = "The buffer is unavailable", body = ProduceResponse),
    )
)]
async fn post_records(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(topic) = topic.map_err(path_error)?;
    check_topic(&state, &topic)?;
    let format = EmbeddedFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let body = body.map_err(|r| body_error(&state, r))?;
    let envelopes = records::batch(&topic, format, &body, state.inner.config.max_batch_records)?;

    let mut results: Vec<Result<(), ApiError>> = Vec::with_capacity(envelopes.len());
    let mut outgoing = Vec::with_capacity(envelopes.len());
    let mut slots = Vec::with_capacity(envelopes.len());
    for (i, env) in envelopes.iter().enumerate() {
        match prepare(&state, env) {
            Ok(out) => {
                outgoing.push(out);
                slots.push(i);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let deadline = Instant::now() + state.inner.config.retry_budget;
    let outcomes = state.inner.buffer.write(&outgoing, deadline).await;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        if let Err(e) = outcome {
            results[slot] = Err(write_error(&request_id, e));
        }
    }

    let status = if results.iter().any(Result::is_ok) {
        StatusCode::OK
    } else {
        results
            .iter()
            .find_map(|r| r.as_ref().err())
            .map_or(StatusCode::OK, ApiError::status)
    };
    let offsets = envelopes
        .into_iter()
        .zip(&results)
        .map(|(env, result)| match result {
            Ok(()) => RecordOffset {
                partition: env.partition,
                offset: None,
                id: Some(env.id),
                error_code: None,
                error: None,
            },
            Err(e) => RecordOffset {
                partition: env.partition,
                offset: None,
                id: None,
                error_code: Some(e.error_code()),
                error: Some(e.to_string()),
            },
        })
        .collect();
    let mut response = (
        status,
        Json(ProduceResponse {
            key_schema_id: None,
            value_schema_id: None,
            offsets,
        }),
    )
        .into_response();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::RETRY_AFTER_SECS),
        );
    }
    Ok(response)
}

/// Liveness
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is up", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// This document
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "spillway ingest-api",
        description = "HTTP front door of spillway: messages are acknowledged only once the buffer (SQS or Kinesis) has them."
    ),
    paths(
        post_topic_message,
        post_default_message,
        post_records,
        healthz,
        openapi_json
    ),
    components(schemas(
        Accepted,
        ErrorBody,
        ProduceResponse,
        RecordOffset,
        records::ProduceRequest,
        records::ProduceRecord,
        records::RecordHeader
    ))
)]
pub struct ApiDoc;

fn check_topic(state: &AppState, topic: &str) -> Result<(), ApiError> {
    if state.inner.config.topics.allows(topic) {
        Ok(())
    } else {
        Err(ApiError::UnknownTopic(topic.chars().take(249).collect()))
    }
}

/// A path the router matched but whose topic segment cannot be read (e.g. percent-encoded bytes
/// that are not UTF-8): a JSON 400 like every other error, not axum's plain-text rejection.
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest(format!(
        "the topic in the path could not be read: {}; a topic is 1 to 249 of a-z A-Z 0-9 . _ -",
        rejection.body_text()
    ))
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn body_error(state: &AppState, rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge {
            limit: state.inner.config.max_request_bytes,
        }
    } else {
        ApiError::BadRequest(format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ))
    }
}

/// Encodes once and checks the buffer's limit, counting what the buffer counts.
fn prepare(state: &AppState, env: &Envelope) -> Result<Outgoing, ApiError> {
    let body = env.encode();
    let buffer = &state.inner.buffer;
    buffer
        .limit()
        .check(body.len(), buffer.extra_bytes(&env.id, env.key.as_deref()))?;
    Ok(Outgoing {
        id: env.id.clone(),
        body: body.into(),
        key: env.key.clone(),
        group: None,
    })
}

fn write_error(request_id: &RequestId, error: WriteError) -> ApiError {
    match error {
        WriteError::Throttled => ApiError::Throttled,
        WriteError::Unavailable(detail) => {
            tracing::warn!(request_id = %request_id.0, %detail, "buffer unavailable");
            ApiError::Unavailable
        }
        WriteError::Refused(detail) => {
            tracing::error!(request_id = %request_id.0, %detail, "buffer refused a message");
            ApiError::Internal {
                request_id: request_id.0.clone(),
            }
        }
    }
}
