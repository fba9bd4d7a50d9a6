//! The baseline: what the AWS sample does — a function that produces each request straight to
//! Kafka and flushes before answering, with the sample's connection settings
//! (`connections.max.idle.ms=60`), one producer per function instance, a new instance for each
//! request that finds all busy (as Lambda scales), through the same msk-gate with MSK IAM.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use spillway_core::config::KafkaConfig;
use spillway_core::kafka::context::SpillwayContext;

/// Lambda's default account concurrency.
const MAX_INSTANCES: usize = 1000;

struct Instances {
    kafka: KafkaConfig,
    idle: Mutex<Vec<FutureProducer<SpillwayContext>>>,
    created: AtomicUsize,
}

/// The baseline's router.
pub fn app(kafka: KafkaConfig) -> Router {
    let state = Arc::new(Instances {
        kafka,
        idle: Mutex::new(Vec::new()),
        created: AtomicUsize::new(0),
    });
    Router::new()
        .route("/v1/topics/{topic}/messages", post(produce))
        .with_state(state)
}

async fn instance(state: &Instances) -> Result<FutureProducer<SpillwayContext>, String> {
    if let Some(p) = state
        .idle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
    {
        return Ok(p);
    }
    if state.created.fetch_add(1, Ordering::Relaxed) >= MAX_INSTANCES {
        state.created.fetch_sub(1, Ordering::Relaxed);
        return Err("too many instances (Lambda would throttle: 429)".into());
    }
    // A cold start: a new producer, its own token, its own connections.
    let (context, _refresher) = spillway_core::kafka::context_for(&state.kafka)
        .await
        .map_err(|e| e.to_string())?;
    let mut config =
        spillway_core::kafka::client_config(&state.kafka).map_err(|e| e.to_string())?;
    config
        .set("connections.max.idle.ms", "60")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000");
    config
        .create_with_context(context)
        .map_err(|e| e.to_string())
}

async fn produce(
    State(state): State<Arc<Instances>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let producer = match instance(&state).await {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(serde_json::json!({ "message": e })),
            )
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let received = spillway_core::envelope::now_ms().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: spillway_core::kafka::ID_HEADER,
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: spillway_core::kafka::RECEIVED_AT_HEADER,
            value: Some(received.as_str()),
        });
    let sent = producer
        .send(
            FutureRecord::<(), _>::to(&topic)
                .payload(&body[..])
                .headers(headers),
            Duration::from_secs(10),
        )
        .await;
    let flushed = producer.flush(Duration::from_secs(10));
    state
        .idle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(producer);
    match (sent, flushed) {
        (Ok(_), Ok(())) => (
            StatusCode::OK,
            Json(serde_json::json!({ "id": id, "topic": topic })),
        ),
        (Err((e, _)), _) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "message": format!("produce failed: {e}") })),
        ),
        (_, Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "message": format!("flush failed: {e}") })),
        ),
    }
}
