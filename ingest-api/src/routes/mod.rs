//! The router: every route registered once ([`api_router`]) for axum and the OpenAPI document
//! alike; request ids and API Gateway's stage ([`middleware`]); the handlers of single messages
//! ([`messages`]) and of REST Proxy v2 batches ([`rest_proxy`]); and what they share below.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::{Json, Router};
use spillway_core::envelope::Envelope;
use tower::ServiceExt as _;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::buffer::{Buffer, Outgoing, WriteError};
use crate::config::IngestConfig;
use crate::error::{ApiError, ErrorBody};
use crate::records::{self, ProduceResponse, RecordOffset};

mod messages;
mod middleware;
mod rest_proxy;

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
}

impl AppState {
    /// State from a configuration and a buffer writer.
    pub fn new(config: IngestConfig, buffer: Buffer) -> Self {
        Self {
            inner: Arc::new(Inner { config, buffer }),
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
        records::RecordHeader
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
