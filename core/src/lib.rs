//! # spillway-core
//!
//! What every spillway component shares:
//!
//! * [`envelope`] — the versioned, binary-safe message format that ingest-api writes to the buffer
//!   and the drain reads, with exact size accounting and raw mode for other producers' messages.
//! * [`headers`] — the Kafka header names that belong to the pipeline (rule 8).
//! * [`limits`] — the buffers' per-message size limits.
//! * [`topic`] — Kafka topic name rules.
//! * [`trace`] — W3C Trace Context: `traceparent` and `tracestate`, read and started.
//! * [`config`] — typed configuration from `SPILLWAY_*` environment variables.
//! * `kafka` (feature `kafka`) — librdkafka client settings from [`config::KafkaConfig`].
//! * [`batch`] — packing messages into calls capped by count and bytes.
//! * [`dead_letter`] — what a dead letter carries: written by the drain, read by replay.
//! * [`claim`] — claim checks: data too large for a queue kept in S3 (the store: feature `claims`).
//! * [`backoff`] — exponential backoff with full jitter inside a time budget.
//! * `telemetry` (feature `telemetry`) — the log set-up every binary calls.
//!
//! Delivery rules this crate underpins (docs/ARCHITECTURE.md, "Delivery rules"): rule 7 — every
//! envelope carries a unique id that travels to Kafka as `spillway-id`, so duplicates are
//! recognisable; rule 6 — a message that cannot be decoded is reported with a permanent
//! [`envelope::DecodeError`] whose text is its dead-letter reason (the decoder never panics,
//! whatever the input); rule 8 — [`headers`]; rules 6 and 9 — `kafka::classify`; rule 10 —
//! [`batch::answered`]; rule 11 — [`config`].

pub mod backoff;
pub mod batch;
pub mod claim;
pub mod config;
pub mod dead_letter;
pub mod envelope;
pub mod headers;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod limits;
#[cfg(feature = "telemetry")]
pub mod telemetry;
pub mod topic;
pub mod trace;
