//! Typed configuration from `SPILLWAY_*` environment variables.
//!
//! Each component parses its settings once, at start, into typed structs; an invalid or
//! contradictory setting stops the process with a [`ConfigError`] that names the variable and what
//! it accepts (exit code 2). Standard AWS variables (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials)
//! keep their standard meaning and are read by the AWS SDK, not here.
//!
//! Settings are read through [`Source`] so tests pass a map instead of mutating the process
//! environment. This module holds the reader ([`env`]) and the settings more than one component
//! shares: the buffer ([`buffer`]) and Kafka ([`kafka`]). Each component's own settings live with
//! it (`buffer_drain::config`, `ingest_api::config`, `msk_consumer::config`).

pub mod buffer;
pub mod env;
pub mod kafka;

pub use buffer::{buffer_kind, drain_buffer_kind, BufferConfig};
pub use env::{ConfigError, Env, ProcessEnv, Source};
pub use kafka::{Compression, KafkaAuth, KafkaConfig, MSK_SERVERLESS_MAX_MESSAGE_BYTES};

#[cfg(test)]
mod tests;
