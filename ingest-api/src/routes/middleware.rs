//! Middleware: the request id every log line and answer carries, and API Gateway's stage taken
//! off the path before routing.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The request's id: API Gateway's when running in Lambda, the caller's `X-Request-Id` when it
/// sent a sane one, else a fresh UUID. Logged with every line and returned as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// lambda_http puts API Gateway's stage in front of the path (`/prod/messages`) unless
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set; the routes are stage-independent.
pub(super) fn strip_api_gateway_stage<B>(mut req: Request<B>) -> Request<B> {
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

pub(super) async fn request_id(mut req: Request, next: Next) -> Response {
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
