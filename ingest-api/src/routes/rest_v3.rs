//! Confluent REST Proxy v3 produce: `POST /v3/clusters/{cluster_id}/topics/{topic_name}/records`
//! (one record, or a stream of them), `…/records:batch`, and the cluster discovery a v3 client
//! starts with, `GET /v3/clusters` and `GET /v3/clusters/{cluster_id}`.
//!
//! The same buffer rules as everywhere: a record is reported accepted only once the buffer holds
//! it, and an answer in which no record was accepted carries the status of the first failure
//! (413, 429, 503, with `Retry-After`), except in streaming mode, where REST Proxy answers 200
//! before the first record and every record's outcome is in its own line.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    body_error, check_topic, outcome_status, path_error, set_trace, trace_context,
    with_retry_after, write_each, AppState, RequestId, Tenant,
};
use crate::error::{ApiError, ErrorBody};
use crate::records::v3::{
    self, Parsed, Split, Splitter, V3BatchRequest, V3BatchResponse, V3Delivery, V3Failure, V3Record,
};

/// What `…/records` reads.
const CONTENT_TYPE: &str = "application/json";

/// A link to a related collection (REST Proxy serves them; spillway names them for clients that
/// read the shape, and serves only produce).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Related {
    /// The collection's URL.
    related: String,
}

/// A resource's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ResourceMetadata {
    /// This resource's URL.
    #[serde(rename = "self")]
    self_url: String,
    /// Confluent resource name.
    resource_name: String,
}

/// A list's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ListMetadata {
    /// This list's URL.
    #[serde(rename = "self")]
    self_url: String,
    /// The next page: always null (one cluster).
    next: Option<String>,
}

/// The cluster this API produces to, as REST Proxy v3 describes one.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KafkaCluster {
    /// `KafkaCluster`.
    kind: &'static str,
    /// Its URL and resource name.
    metadata: ResourceMetadata,
    /// The id clients put in their paths (`SPILLWAY_CLUSTER_ID`).
    cluster_id: String,
    /// Not served by spillway.
    acls: Related,
    /// Not served by spillway.
    brokers: Related,
    /// Not served by spillway.
    broker_configs: Related,
    /// Not served by spillway.
    consumer_groups: Related,
    /// The topics; their `records` and `records:batch` are served.
    topics: Related,
    /// Not served by spillway.
    partition_reassignments: Related,
}

/// Every cluster this API produces to: one.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KafkaClusterList {
    /// `KafkaClusterList`.
    kind: &'static str,
    /// The list's URL.
    metadata: ListMetadata,
    /// The one cluster.
    data: Vec<KafkaCluster>,
}

/// The clusters (REST Proxy v3)
///
/// The one cluster this API produces to, so that a v3 client can discover its id.
#[utoipa::path(
    get,
    path = "/v3/clusters",
    responses((status = 200, description = "The cluster", body = KafkaClusterList))
)]
pub(super) async fn list_clusters(State(state): State<AppState>, parts: Parts) -> Response {
    let base = base_url(&parts);
    Json(KafkaClusterList {
        kind: "KafkaClusterList",
        metadata: ListMetadata {
            self_url: format!("{base}/v3/clusters"),
            next: None,
        },
        data: vec![cluster(&state, &base)],
    })
    .into_response()
}

/// The cluster (REST Proxy v3)
#[utoipa::path(
    get,
    path = "/v3/clusters/{cluster_id}",
    params(("cluster_id" = String, Path, description = "The id GET /v3/clusters names")),
    responses(
        (status = 200, description = "The cluster", body = KafkaCluster),
        (status = 404, description = "Not this API's cluster", body = ErrorBody),
    )
)]
pub(super) async fn get_cluster(
    State(state): State<AppState>,
    cluster_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<Response, ApiError> {
    let Path(cluster_id) = cluster_id.map_err(path_error)?;
    check_cluster(&state, &cluster_id)?;
    Ok(Json(cluster(&state, &base_url(&parts))).into_response())
}

/// Produce records (REST Proxy v3)
///
/// One record `{partition_id?, headers?: [{name, value (base64)}], key?: {type, data}, value:
/// {type, data}, timestamp?}`, types `BINARY` (base64, the default), `JSON` or `STRING`. Several
/// records may follow one another in the body (JSON objects one after another); the answer has
/// one result per record, in order, each followed by CRLF.
///
/// With `Transfer-Encoding: chunked` and no `Content-Length` the request is a stream, as in REST
/// Proxy: each record is written to the buffer as soon as it has arrived and its result is sent
/// at once, over the same connection, for as long as the caller keeps sending. The status is then
/// 200 from the start and each result carries its own `error_code`; a record larger than
/// `SPILLWAY_MAX_REQUEST_BYTES` or bytes that are not JSON end the stream with a last error.
/// Otherwise the status is 200 when any record was accepted, else the first failure's (400, 413,
/// 429, 503).
///
/// A result says `error_code` 200 once the buffer holds the record; `offset` is null and
/// `partition_id` is the partition asked for (null when the partitioner chooses), because the
/// record is in the buffer, not yet in Kafka. `spillway_id` is its `spillway-id` header.
#[utoipa::path(
    post,
    path = "/v3/clusters/{cluster_id}/topics/{topic_name}/records",
    params(
        ("cluster_id" = String, Path, description = "The id GET /v3/clusters names"),
        ("topic_name" = String, Path, description = "Kafka topic"),
    ),
    request_body(content = V3Record, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per record, each followed by CRLF: a V3Delivery (error_code 200), or a V3Failure", body = V3Delivery),
        (status = 400, description = "No record could be read", body = V3Failure),
        (status = 404, description = "Unknown cluster, or topic not in the allow-list", body = ErrorBody),
        (status = 413, description = "No record fits the buffer, or the body is over SPILLWAY_MAX_REQUEST_BYTES", body = V3Failure),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "The body is empty", body = ErrorBody),
        (status = 429, description = "The buffer throttled past the retry budget; see Retry-After", body = V3Failure),
        (status = 503, description = "The buffer is unavailable; see Retry-After", body = V3Failure),
    )
)]
pub(super) async fn produce(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    tenant: Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    let target = Target::of(&state, path, &headers, tenant)?;
    // Under Lambda the body arrives whole: answered as a whole, with a status that tells.
    let in_lambda = extensions
        .get::<lambda_http::request::RequestContext>()
        .is_some();
    let streaming = !in_lambda
        && !headers.contains_key(header::CONTENT_LENGTH)
        && headers.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
    if streaming {
        return Ok(stream(state, request_id, target, body));
    }
    let limit = state.inner.config.max_request_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // `to_bytes` names only the length limit among its errors; anything else is the read.
        if std::error::Error::source(&e)
            .is_some_and(<dyn std::error::Error>::is::<http_body_util::LengthLimitError>)
        {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BadRequest("the request body could not be read".into())
        }
    })?;
    let mut splitter = Splitter::default();
    splitter.push(&body);
    if splitter.is_blank() {
        return Err(ApiError::Payload(
            "the request body is empty; send one or more records".into(),
        ));
    }
    let (texts, last) = take_records(&mut splitter, true);
    let max = state.inner.config.max_batch_records;
    if texts.len() > max {
        return Err(ApiError::TooManyRecords { max });
    }
    let mut parsed: Vec<Result<Parsed, ApiError>> = texts
        .into_iter()
        .map(|text| text.and_then(|t| target.parse(&t, false)))
        .collect();
    if let Some(error) = last {
        parsed.push(Err(error));
    }
    let (lines, results) = target.answer(&state, &request_id, parsed).await;
    let status = outcome_status(&results, StatusCode::OK);
    Ok(with_retry_after(
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            lines.concat(),
        )
            .into_response(),
    ))
}

/// Produce a batch of records (REST Proxy v3)
///
/// `{"entries": [{"id": "1", …record}, …]}`: ids of 1 to 80 characters from `a-z A-Z 0-9 _ -`,
/// distinct in the request; at most `SPILLWAY_V3_BATCH_MAX_ENTRIES` entries (default 10, REST
/// Proxy's default) and `SPILLWAY_MAX_REQUEST_BYTES` in all. Answered 207 with every entry in
/// `successes` (the buffer holds it) or `failures` (with `error_code` and `message`), each in
/// request order; when no entry was accepted, with the first failure's status (400, 413, 429,
/// 503) and the same body. A batch that cannot be read, is empty, too long, or has a bad or
/// repeated id is refused whole with 422 (`error_code` 42208).
#[utoipa::path(
    post,
    path = "/v3/clusters/{cluster_id}/topics/{topic_name}/records:batch",
    params(
        ("cluster_id" = String, Path, description = "The id GET /v3/clusters names"),
        ("topic_name" = String, Path, description = "Kafka topic"),
    ),
    request_body(content = V3BatchRequest, content_type = "application/json"),
    responses(
        (status = 207, description = "Each entry in successes or failures", body = V3BatchResponse),
        (status = 400, description = "No entry could be read", body = V3BatchResponse),
        (status = 404, description = "Unknown cluster, or topic not in the allow-list", body = ErrorBody),
        (status = 413, description = "No entry fits the buffer, or the body is over SPILLWAY_MAX_REQUEST_BYTES", body = V3BatchResponse),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "The batch is refused whole (42208)", body = ErrorBody),
        (status = 429, description = "The buffer throttled past the retry budget; see Retry-After", body = V3BatchResponse),
        (status = 503, description = "The buffer is unavailable; see Retry-After", body = V3BatchResponse),
    )
)]
pub(super) async fn produce_batch(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    tenant: Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let target = Target::of(&state, path, &headers, tenant)?;
    let body = body.map_err(|r| body_error(&state, r))?;
    let entries = v3::batch_entries(&body, state.inner.config.v3_batch_max_entries)?;
    let parsed: Vec<Result<Parsed, ApiError>> = entries
        .iter()
        .map(|(_, raw)| target.parse(raw.get(), true))
        .collect();
    let envelopes = parsed.iter().map(|p| match p {
        Ok(p) => Ok(&p.envelope),
        Err(e) => Err(e.clone()),
    });
    let results = write_each(&state, &request_id, &target.tenant, envelopes).await;
    let mut answer = V3BatchResponse::default();
    for (((id, _), parsed), result) in entries.into_iter().zip(parsed).zip(&results) {
        match (parsed, result) {
            (Ok(p), Ok(())) => answer.successes.push(V3Delivery {
                error_code: None,
                id: Some(id),
                ..target.delivery(p)
            }),
            (_, Err(e)) => answer.failures.push(V3Failure {
                id: Some(id),
                ..failure(e)
            }),
            (Err(e), Ok(())) => answer.failures.push(V3Failure {
                id: Some(id),
                ..failure(&e)
            }),
        }
    }
    let status = outcome_status(&results, StatusCode::MULTI_STATUS);
    Ok(with_retry_after((status, Json(answer)).into_response()))
}

/// The cluster and topic of a produce path, checked, with the request's trace context and
/// tenant.
struct Target {
    cluster_id: String,
    topic: String,
    trace: (String, Option<String>),
    tenant: Tenant,
}

impl Target {
    fn of(
        state: &AppState,
        path: Result<Path<(String, String)>, PathRejection>,
        headers: &HeaderMap,
        tenant: Tenant,
    ) -> Result<Self, ApiError> {
        let Path((cluster_id, topic)) = path.map_err(path_error)?;
        check_cluster(state, &cluster_id)?;
        check_topic(state, &topic)?;
        let got = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut params = got.split(';');
        let essence = params.next().unwrap_or("").trim();
        let charset_ok = params.all(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            !name.trim().eq_ignore_ascii_case("charset")
                || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        });
        if !essence.eq_ignore_ascii_case(CONTENT_TYPE) || !charset_ok {
            return Err(ApiError::UnsupportedMediaType {
                got: if got.is_empty() {
                    "(none)".into()
                } else {
                    got.chars().take(100).collect()
                },
                accepted: "application/json (UTF-8)",
            });
        }
        Ok(Self {
            cluster_id,
            topic,
            trace: trace_context(headers),
            tenant,
        })
    }

    /// One record's envelope, with the request's trace context.
    fn parse(&self, json: &str, batch: bool) -> Result<Parsed, ApiError> {
        let mut parsed = v3::record(&self.topic, json, batch)?;
        set_trace(&mut parsed.envelope, &self.trace);
        Ok(parsed)
    }

    /// REST Proxy's answer for a record the buffer holds.
    fn delivery(&self, parsed: Parsed) -> V3Delivery {
        V3Delivery {
            error_code: Some(200),
            id: None,
            cluster_id: self.cluster_id.clone(),
            topic_name: self.topic.clone(),
            partition_id: parsed.envelope.partition,
            offset: None,
            timestamp: parsed.timestamp,
            key: parsed.key,
            value: Some(parsed.value),
            spillway_id: parsed.envelope.id,
        }
    }

    /// Writes what was parsed; each record's result line (JSON then CRLF), and the outcomes.
    async fn answer(
        &self,
        state: &AppState,
        request_id: &RequestId,
        parsed: Vec<Result<Parsed, ApiError>>,
    ) -> (Vec<Vec<u8>>, Vec<Result<(), ApiError>>) {
        let envelopes = parsed.iter().map(|p| match p {
            Ok(p) => Ok(&p.envelope),
            Err(e) => Err(e.clone()),
        });
        let results = write_each(state, request_id, &self.tenant, envelopes).await;
        let lines = parsed
            .into_iter()
            .zip(&results)
            .map(|(parsed, result)| {
                let mut line = match (parsed, result) {
                    (Ok(p), Ok(())) => serde_json::to_vec(&self.delivery(p)),
                    (_, Err(e)) => serde_json::to_vec(&failure(e)),
                    (Err(e), Ok(())) => serde_json::to_vec(&failure(&e)),
                }
                .expect("answers serialise");
                line.extend_from_slice(b"\r\n");
                line
            })
            .collect();
        (lines, results)
    }
}

/// Every whole record at the front of `splitter` (its text, or why it cannot be read), and
/// the error that ends the body if one does: bytes that are not a JSON object, or (at `end` of
/// the body) a record cut short.
fn take_records(
    splitter: &mut Splitter,
    end: bool,
) -> (Vec<Result<String, ApiError>>, Option<ApiError>) {
    let mut texts = Vec::new();
    loop {
        match splitter.next_record() {
            Split::Record(text) => texts.push(Ok(text)),
            Split::NotUtf8 => texts.push(Err(ApiError::BadRequest(
                "not a valid produce record: its bytes are not UTF-8".into(),
            ))),
            Split::Malformed(m) => return (texts, Some(ApiError::BadRequest(m))),
            Split::Incomplete if end && !splitter.is_blank() => {
                return (
                    texts,
                    Some(ApiError::BadRequest(
                        "the body ends inside a record (truncated JSON)".into(),
                    )),
                )
            }
            Split::Incomplete => return (texts, None),
        }
    }
}

/// Streaming mode: the response's lines come as the request's records are read and written.
fn stream(state: AppState, request_id: RequestId, target: Target, body: Body) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(4);
    tokio::spawn(async move {
        let limit = state.inner.config.max_request_bytes;
        let mut frames = body.into_data_stream();
        let mut splitter = Splitter::default();
        let mut records = 0_u64;
        let (idle, max) = (
            state.inner.config.v3_stream_idle,
            state.inner.config.max_batch_records,
        );
        loop {
            let (end, read_error) = match tokio::time::timeout(idle, frames.next()).await {
                Ok(Some(Ok(bytes))) => {
                    splitter.push(&bytes);
                    (false, None)
                }
                Ok(Some(Err(_))) => (
                    true,
                    Some(ApiError::BadRequest(
                        "the request body could not be read to its end".into(),
                    )),
                ),
                Ok(None) => (true, None),
                Err(_) => (true, Some(ApiError::StreamIdle { idle })),
            };
            let (texts, mut last) = take_records(&mut splitter, end && read_error.is_none());
            if last.is_none() && splitter.pending() > limit {
                last = Some(ApiError::StreamRecordTooLarge { limit });
            }
            let last = last.or(read_error);
            records += texts.len() as u64;
            let mut texts = texts.into_iter().peekable();
            while texts.peek().is_some() {
                // At most SPILLWAY_MAX_BATCH_RECORDS per write, as in a v2 batch.
                let parsed = texts
                    .by_ref()
                    .take(max)
                    .map(|text| text.and_then(|t| target.parse(&t, false)))
                    .collect();
                let (lines, _) = target.answer(&state, &request_id, parsed).await;
                for line in lines {
                    if tx.send(Ok(line)).await.is_err() {
                        return; // The caller went away; what was written is in the buffer.
                    }
                }
            }
            let last = last.or_else(|| {
                (end && records == 0).then(|| {
                    ApiError::Payload("the request body is empty; send one or more records".into())
                })
            });
            if let Some(error) = last {
                let mut line = serde_json::to_vec(&failure(&error)).expect("answers serialise");
                line.extend_from_slice(b"\r\n");
                let _ = tx.send(Ok(line)).await;
                return;
            }
            if end {
                return;
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|line| (line, rx))
        })),
    )
        .into_response()
}

fn failure(error: &ApiError) -> V3Failure {
    V3Failure {
        id: None,
        error_code: error.error_code(),
        message: error.to_string(),
    }
}

fn check_cluster(state: &AppState, cluster_id: &str) -> Result<(), ApiError> {
    if cluster_id == state.inner.config.cluster_id {
        Ok(())
    } else {
        Err(ApiError::UnknownCluster(
            cluster_id.chars().take(64).collect(),
        ))
    }
}

fn cluster(state: &AppState, base: &str) -> KafkaCluster {
    let id = &state.inner.config.cluster_id;
    let url = format!("{base}/v3/clusters/{id}");
    let related = |tail: &str| Related {
        related: format!("{url}/{tail}"),
    };
    KafkaCluster {
        kind: "KafkaCluster",
        metadata: ResourceMetadata {
            self_url: url.clone(),
            resource_name: format!("crn:///kafka={id}"),
        },
        cluster_id: id.clone(),
        acls: related("acls"),
        brokers: related("brokers"),
        broker_configs: related("broker-configs"),
        consumer_groups: related("consumer-groups"),
        topics: related("topics"),
        partition_reassignments: related("topics/-/partitions/-/reassignment"),
    }
}

/// The URL the caller reached this API at: `X-Forwarded-Proto` (else http), the `Host`, and API
/// Gateway's stage when the path had one.
fn base_url(parts: &Parts) -> String {
    use lambda_http::request::RequestContext;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
    };
    let Some(host) = header("host") else {
        return String::new();
    };
    let proto = match header("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let stage = match parts.extensions.get::<RequestContext>() {
        _ if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_some() => None,
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    match stage.filter(|s| s != "$default") {
        Some(stage) => format!("{proto}://{host}/{stage}"),
        None => format!("{proto}://{host}"),
    }
}
