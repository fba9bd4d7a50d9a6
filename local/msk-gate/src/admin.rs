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
use axum::http::StatusCode;
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

/// The longest any switch can be set for: a day (a test needs far less; anything longer is a typo
/// or an attack, and answered 400 instead of overflowing a clock).
pub const MAX_SWITCH_SECS: u64 = 86_400;

type Answer = (StatusCode, String);

fn bounded(value: u64, max: u64, name: &str) -> Result<u64, Answer> {
    if value <= max {
        Ok(value)
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            format!("{name}={value} is over the limit of {max}"),
        ))
    }
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

async fn refuse_auth(
    State(gate): State<Arc<Gate>>,
    Query(q): Query<Seconds>,
) -> Result<&'static str, Answer> {
    let seconds = bounded(q.seconds, MAX_SWITCH_SECS, "seconds")?;
    gate.refuse_auth(Duration::from_secs(seconds));
    Ok("refusing")
}

async fn drop_connections(State(gate): State<Arc<Gate>>) -> &'static str {
    gate.drop_connections();
    "dropped"
}

async fn latency(
    State(gate): State<Arc<Gate>>,
    Query(q): Query<Millis>,
) -> Result<&'static str, Answer> {
    let ms = bounded(q.ms, MAX_SWITCH_SECS * 1000, "ms")?;
    gate.set_latency(Duration::from_millis(ms));
    Ok("ok")
}

async fn session(
    State(gate): State<Arc<Gate>>,
    Query(q): Query<Seconds>,
) -> Result<&'static str, Answer> {
    let seconds = bounded(q.seconds, MAX_SWITCH_SECS, "seconds")?;
    gate.set_max_session(Duration::from_secs(seconds));
    Ok("ok")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Quotas;
    use crate::token::Verifier;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    /// Issue 14 item 12: `refuse-auth?seconds=<huge>` used to overflow the clock and panic the gate.
    #[tokio::test]
    async fn huge_switch_values_are_400_not_a_panic() {
        let gate = Arc::new(Gate::new(
            Verifier::new("test", "test", "us-east-1"),
            "127.0.0.1:9".into(),
            "127.0.0.1".into(),
            9098,
            Quotas::default(),
            Duration::ZERO,
        ));
        let call = |method: &'static str, uri: &str| {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("request");
            router(gate.clone()).oneshot(request)
        };
        for (method, uri) in [
            ("POST", "/chaos/refuse-auth?seconds=18446744073709551615"),
            ("POST", "/chaos/refuse-auth?seconds=86401"),
            ("PUT", "/session?seconds=18446744073709551615"),
            ("PUT", "/chaos/latency?ms=18446744073709551615"),
        ] {
            let response = call(method, uri).await.expect("answered");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
        assert!(!gate.refusing_auth());
        let response = call("POST", "/chaos/refuse-auth?seconds=86400")
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(gate.refusing_auth());
    }
}
