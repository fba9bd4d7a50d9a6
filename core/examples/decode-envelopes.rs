//! Decodes buffer messages with the drain's codec: one message per stdin line, one JSON result per
//! stdout line — `{"id","topic","key_b64","value_b64","received_at_ms","traceparent","tracestate"}`
//! or `{"error"}`. The infra
//! tests feed it what API Gateway's direct-integration mapping templates produce.
//!
//! `cargo run -q -p spillway-core --example decode-envelopes < bodies.txt`

use std::io::{BufRead as _, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use spillway_core::envelope::{decode, Decoded, RawMode};

fn main() {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let result = match decode(line.as_bytes(), RawMode::Reject) {
            Ok(Decoded::Envelope(env)) => serde_json::json!({
                "id": env.id,
                "topic": env.topic,
                "key_b64": env.key.map(|k| STANDARD.encode(k)),
                "value_b64": STANDARD.encode(&env.value),
                "received_at_ms": env.received_at_ms,
                "traceparent": env.traceparent,
                "tracestate": env.tracestate,
            }),
            Ok(Decoded::Raw(_)) => serde_json::json!({ "error": "not an envelope" }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let _ = writeln!(out, "{result}");
    }
}
