//! # ingest-api — spillway's HTTP front door
//!
//! One axum [`Router`](axum::Router) ([`app`]) that runs under `lambda_http` in AWS Lambda (API
//! Gateway REST and HTTP API payloads) and as a plain server locally. Each request becomes one or
//! more [`spillway_core::envelope::Envelope`]s written to the buffer, SQS or Kinesis
//! ([`buffer`]).
//!
//! Delivery rules implemented here (DESIGN.md, "Delivery rules"):
//! 1. The caller gets 2xx only after the buffer has accepted the message. A batch reports each record;
//!    when the buffer throttles past the retry budget the caller gets 429/503 with `Retry-After`, and
//!    nothing is reported accepted that was not.
//! 7. At-least-once: a request retried with the same `Idempotency-Key` yields the same message id, so
//!    the duplicate is recognisable downstream by its `spillway-id`.
//!
//! A message whose encoded envelope would exceed the buffer's limit is answered with 413 naming the
//! size and the limit (exact size accounting; see [`spillway_core::limits`]). Bad input gets a
//! REST Proxy-style JSON error; no input panics a handler; message bodies are never logged.

pub mod buffer;
pub mod config;
pub mod error;
pub mod records;
mod routes;

pub use routes::{app, Accepted, ApiDoc, AppState, RequestId, MAX_REQUEST_BYTES};
