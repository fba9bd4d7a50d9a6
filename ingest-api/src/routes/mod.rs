//! The router: every route registered once ([`api_router`]) for axum and the OpenAPI document
//! alike; request ids and API Gateway's stage ([`middleware`]); the handlers of single messages
//! ([`messages`]), of REST Proxy v2 batches ([`rest_proxy`]) and of REST Proxy v3 produce
//! ([`rest_v3`]); and what they share below.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::{Json, Router};
use futures::StreamExt as _;
use spillway_core::envelope::Envelope;
use tower::ServiceExt as _;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::buffer::{Buffer, Outgoing, WriteError};
use crate::config::IngestConfig;
use crate::error::{ApiError, ErrorBody};
use crate::records::{self, ProduceResponse, RecordOffset};
use spillway_core::claim::ClaimStore;

mod messages;
mod middleware;
mod rest_proxy;
mod rest_v3;

pub use messages::Accepted;
pub use middleware::RequestId;

/// Everything handlers share: configuration and the buffer writer, built once at start.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: IngestConfig,
    pub(crate) buffer: Buffer,
    /// Where values too large for the buffer go (`SPILLWAY_CLAIM_BUCKET`).
    pub(crate) claims: Option<ClaimStore>,
}

impl AppState {
    /// State from a configuration and a buffer writer; no claim bucket.
    pub fn new(config: IngestConfig, buffer: Buffer) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                buffer,
                claims: None,
            }),
        }
    }

    /// Values too large for the buffer are kept in `claims` (issue 18).
    #[must_use]
    pub fn with_claims(self, claims: ClaimStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                buffer: self.inner.buffer.clone(),
                claims: Some(claims),
            }),
        }
    }
}

/// The API. Tests call it with `oneshot`; `main` serves it locally or under `lambda_http`.
pub fn app(state: AppState) -> Router {
    // The stage prefix must go before routing, so the routes are wrapped rather than layered.
    let routes = routes(state).map_request(middleware::strip_api_gateway_stage);
    Router::new().fallback_service(routes)
}

/// Every route, with its OpenAPI entry: the one place a route is registered.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Frame::openapi())
        .routes(routes!(messages::post_topic_message))
        .routes(routes!(messages::post_default_message))
        .routes(routes!(rest_proxy::post_records))
        .routes(routes!(rest_v3::list_clusters))
        .routes(routes!(rest_v3::get_cluster))
        .routes(routes!(rest_v3::produce))
        .routes(routes!(rest_v3::produce_batch))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
}

fn routes(state: AppState) -> Router {
    let max_request_bytes = state.inner.config.max_request_bytes;
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

/// The OpenAPI document of every route.
pub struct ApiDoc;

impl ApiDoc {
    /// The document, generated from the routes and their handlers' attributes.
    pub fn openapi() -> utoipa::openapi::OpenApi {
        static DOC: LazyLock<utoipa::openapi::OpenApi> =
            LazyLock::new(|| api_router().split_for_parts().1);
        DOC.clone()
    }
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

/// The OpenAPI document's frame: its title and the schemas it names. The paths come from the
/// routes themselves ([`api_router`]), so a route is registered once, for the router and the
/// document alike; [`ApiDoc::openapi`] is the whole document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "spillway ingest-api",
        description = "HTTP front door of spillway: messages are acknowledged only once the buffer (SQS or Kinesis) has them."
    ),
    components(schemas(
        Accepted,
        ErrorBody,
        ProduceResponse,
        RecordOffset,
        records::ProduceRequest,
        records::ProduceRecord,
        records::RecordHeader,
        records::v3::V3Record,
        records::v3::V3Header,
        records::v3::V3Data,
        records::v3::V3Size,
        records::v3::V3Delivery,
        records::v3::V3Failure,
        records::v3::V3BatchRequest,
        records::v3::V3BatchResponse,
        rest_v3::KafkaCluster,
        rest_v3::KafkaClusterList,
        rest_v3::Related,
        rest_v3::ResourceMetadata,
        rest_v3::ListMetadata
    ))
)]
struct Frame;

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

/// The request's tenant ([`crate::config::TenantFrom`]): a standard queue's message group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tenant(pub(crate) Option<String>);

impl axum::extract::FromRequestParts<AppState> for Tenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use crate::config::TenantFrom;
        use lambda_http::request::RequestContext;
        Ok(Tenant(match &state.inner.config.tenant_from {
            TenantFrom::None => None,
            TenantFrom::ApiKey => match parts.extensions.get::<RequestContext>() {
                Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.api_key_id.clone(),
                _ => None,
            },
            TenantFrom::Header(name) => parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }))
    }
}

/// The request's W3C trace context (`traceparent`, with its `tracestate`), or a new trace when
/// it has no valid one (none, a malformed one, or several `traceparent` headers). Several
/// `tracestate` headers are one list, joined by commas, as the specification reads them.
fn trace_context(headers: &HeaderMap) -> (String, Option<String>) {
    use spillway_core::trace::{valid_tracestate, TraceParent};
    let [parent, state] = spillway_core::headers::W3C_TRACE_HEADERS;
    let mut parents = headers.get_all(parent).iter();
    let given = match (parents.next(), parents.next()) {
        (Some(one), None) => one.to_str().ok().and_then(TraceParent::parse),
        _ => None,
    };
    match given {
        Some(tp) => {
            let states: Vec<&str> = headers
                .get_all(state)
                .iter()
                .map(|v| v.to_str().ok())
                .collect::<Option<_>>()
                .unwrap_or_default();
            let joined = states.join(",");
            (tp.to_string(), valid_tracestate(&joined).map(str::to_owned))
        }
        None => (TraceParent::new_random().to_string(), None),
    }
}

/// Gives `env` the request's trace context (from [`trace_context`]).
fn set_trace(env: &mut Envelope, trace: &(String, Option<String>)) {
    env.traceparent = Some(trace.0.clone());
    env.tracestate.clone_from(&trace.1);
}

/// Writes the envelopes that were read (`Ok`) to the buffer in one call and gives each item its
/// outcome, in order: its own error, the buffer's refusal, or `Ok`. A value too large for the
/// buffer (or over `SPILLWAY_CLAIM_THRESHOLD_BYTES`) goes to the claim bucket first and the
/// buffer gets its claim check.
async fn write_each<'a>(
    state: &AppState,
    request_id: &RequestId,
    tenant: &Tenant,
    items: impl IntoIterator<Item = Result<&'a Envelope, ApiError>>,
) -> Vec<Result<(), ApiError>> {
    let items: Vec<Result<&Envelope, ApiError>> = items.into_iter().collect();
    let claimed = claim_values(state, request_id, &items).await;
    let mut results: Vec<Result<(), ApiError>> = Vec::with_capacity(items.len());
    let mut outgoing = Vec::new();
    let mut slots = Vec::new();
    for (item, claimed) in items.into_iter().zip(&claimed) {
        let prepared = item.and_then(|env| match claimed {
            Some(Ok(pointer)) => prepare(state, pointer),
            Some(Err(e)) => Err(e.clone()),
            None => prepare(state, env),
        });
        match prepared {
            Ok(mut out) => {
                out.tenant.clone_from(&tenant.0);
                outgoing.push(out);
                slots.push(results.len());
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if !outgoing.is_empty() {
        let deadline = Instant::now() + state.inner.config.retry_budget;
        let outcomes = state.inner.buffer.write(&outgoing, deadline).await;
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            if let Err(e) = outcome {
                results[slot] = Err(write_error(request_id, e));
            }
        }
    }
    // A value's object stays even when its message's write failed: a write that timed out or
    // went unanswered may have reached the buffer all the same, and the message would then name
    // an object that is gone. What no message names is the bucket lifecycle's to remove.
    results
}

/// Bytes kept free under `SPILLWAY_KAFKA_MESSAGE_MAX_BYTES` for the headers the drain adds (at
/// most ~700: id, receive time, traceparent, a 512-character tracestate, X-Ray) and the record's
/// own overhead in Kafka's format.
const KAFKA_RECORD_HEADROOM: usize = 2048;
/// Values uploaded at once for one request.
const CLAIM_PUTS_AT_ONCE: usize = 8;

/// For each envelope whose value goes to the claim bucket: its pointer envelope once S3 has the
/// value, or why not (over Kafka's limit: 413; S3 unavailable: 503). `None`: the value stays in
/// the envelope (no bucket, or small enough).
async fn claim_values(
    state: &AppState,
    request_id: &RequestId,
    items: &[Result<&Envelope, ApiError>],
) -> Vec<Option<Result<Envelope, ApiError>>> {
    let Some(store) = &state.inner.claims else {
        return items.iter().map(|_| None).collect();
    };
    let puts: Vec<_> = items
        .iter()
        .map(|item| claim_value(state, request_id, store, item))
        .collect();
    // In order, a few at a time: a batch of large values must not open hundreds of uploads.
    futures::stream::iter(puts)
        .buffered(CLAIM_PUTS_AT_ONCE)
        .collect()
        .await
}

/// [`claim_values`] for one item.
async fn claim_value(
    state: &AppState,
    request_id: &RequestId,
    store: &ClaimStore,
    item: &Result<&Envelope, ApiError>,
) -> Option<Result<Envelope, ApiError>> {
    let config = &state.inner.config;
    let env = item.as_ref().ok()?;
    let over_threshold = config.claim_threshold.is_some_and(|t| env.value.len() > t);
    if !over_threshold && prepare(state, env).is_ok() {
        return None;
    }
    let size = env.value.len()
        + env.key.as_ref().map_or(0, Vec::len)
        + env
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>();
    // The drain adds its own headers (id, receive time, trace context), and Kafka counts
    // record overhead: a record this close to the limit would be refused in Kafka after the
    // caller was told 2xx.
    if size + KAFKA_RECORD_HEADROOM > config.kafka_max_bytes {
        return Some(Err(ApiError::OverKafkaLimit {
            size: size + KAFKA_RECORD_HEADROOM,
            limit: config.kafka_max_bytes,
        }));
    }
    Some(match store.put(&env.value).await {
        Ok(claim) => Ok(env.claimed(claim)),
        Err(e) => {
            tracing::warn!(request_id = %request_id.0, error = %e, "the claim bucket refused a value");
            Err(ApiError::Unavailable)
        }
    })
}

/// The status of an answer with one outcome per record: `ok` when any record was accepted;
/// when none was, the status of the first 429 or 503, else of the first failure (400, 413, …),
/// so that a client that reads only the status does not take a refusal for success.
fn outcome_status(results: &[Result<(), ApiError>], ok: StatusCode) -> StatusCode {
    if results.iter().any(Result::is_ok) {
        return ok;
    }
    let statuses = || {
        results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ApiError::status))
    };
    // A refusal worth retrying (429, 503) wins over a record's own error, so that a client that
    // reads only the status retries after Retry-After instead of dropping the throttled records.
    statuses()
        .find(|s| {
            matches!(
                *s,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
        })
        .or_else(|| statuses().next())
        .unwrap_or(ok)
}

/// `response` with `Retry-After` when its status asks the caller to come back (429, 503).
fn with_retry_after(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::RETRY_AFTER_SECS),
        );
    }
    response
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
        tenant: None,
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
