//! Confluent REST Proxy v2 produce: `POST /topics/{topic}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{
    body_error, check_topic, outcome_status, path_error, set_trace, trace_context,
    with_retry_after, write_each, AppState, RequestId, Tenant,
};
use crate::error::{ApiError, ErrorBody};
use crate::records::{self, EmbeddedFormat, ProduceResponse, RecordOffset};

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
pub(super) async fn post_records(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    tenant: Tenant,
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
    let mut envelopes =
        records::batch(&topic, format, &body, state.inner.config.max_batch_records)?;
    let trace = trace_context(&headers);
    for env in &mut envelopes {
        set_trace(env, &trace);
    }
    let results = write_each(&state, &request_id, &tenant, envelopes.iter().map(Ok)).await;
    let status = outcome_status(&results, StatusCode::OK);
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
    Ok(with_retry_after(
        (
            status,
            Json(ProduceResponse {
                key_schema_id: None,
                value_schema_id: None,
                offsets,
            }),
        )
            .into_response(),
    ))
}
