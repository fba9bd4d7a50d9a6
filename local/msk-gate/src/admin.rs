//! The chaos switches and counters, over HTTP on loopback.
//!
//! | request | effect |
//! |---|---|
//! | `GET /stats` | counters and quotas, JSON |
//! | `PUT /quotas` `{"max_connections": 3000, "max_connects_per_sec": 100}` | change the quotas |
//! | `POST /chaos/refuse-auth?seconds=30` | refuse every authentication for that long |
//! | `POST /chaos/drop-connections` | close every open connection |
//! | `PUT /chaos/latency?ms=200` | delay each forwarded request |
//! | `PUT /session?seconds=10` | sessions end after that long (clients must re-authenticate); 0: at token expiry |

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use crate::state::{Gate, Quotas};

#[derive(Deserialize)]
struct Seconds {
    seconds: u64,
}

#[derive(Deserialize)]
struct Millis {
    ms: u64,
}

/// The admin API.
pub fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/stats", get(stats))
        .route("/quotas", put(set_quotas))
        .route("/chaos/refuse-auth", post(refuse_auth))
        .route("/chaos/drop-connections", post(drop_connections))
        .route("/chaos/latency", put(latency))
        .route("/session", put(session))
        .with_state(gate)
}

async fn stats(State(gate): State<Arc<Gate>>) -> Json<serde_json::Value> {
    let c = &gate.counters;
    Json(serde_json::json!({
        "connections_accepted": c.connections_accepted.load(Ordering::Relaxed),
        "connections_throttled": c.connections_throttled.load(Ordering::Relaxed),
        "connections_open": c.connections_open.load(Ordering::Relaxed),
        "auth_accepted": c.auth_accepted.load(Ordering::Relaxed),
        "auth_refused": c.auth_refused.load(Ordering::Relaxed),
        "quotas": gate.quotas(),
        "refusing_auth": gate.refusing_auth(),
        "latency_ms": u64::try_from(gate.latency().as_millis()).unwrap_or(u64::MAX),
        "max_session_secs": gate.max_session().as_secs(),
    }))
}

async fn set_quotas(State(gate): State<Arc<Gate>>, Json(quotas): Json<Quotas>) -> Json<Quotas> {
    gate.set_quotas(quotas);
    Json(gate.quotas())
}

async fn refuse_auth(State(gate): State<Arc<Gate>>, Query(q): Query<Seconds>) -> &'static str {
    gate.refuse_auth(Duration::from_secs(q.seconds));
    "refusing"
}

async fn drop_connections(State(gate): State<Arc<Gate>>) -> &'static str {
    gate.drop_connections();
    "dropped"
}

async fn latency(State(gate): State<Arc<Gate>>, Query(q): Query<Millis>) -> &'static str {
    gate.set_latency(Duration::from_millis(q.ms));
    "ok"
}

async fn session(State(gate): State<Arc<Gate>>, Query(q): Query<Seconds>) -> &'static str {
    gate.set_max_session(Duration::from_secs(q.seconds));
    "ok"
}
