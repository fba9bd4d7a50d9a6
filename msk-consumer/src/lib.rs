//! # msk-consumer — the consumer side
//!
//! The MSK event handler for Lambda ([`lambda::handle_event`]) and a local consumer group
//! ([`local::run`]) that feed the same [`handler::process_batch`] with the same
//! [`record::ConsumedRecord`]s — one code path, two hosts. Plug your own processing in with
//! [`handler::RecordHandler`]; the default [`handler::LoggingHandler`] logs one line per record
//! (never the body unless sampling is configured). [`verify`] reads a topic until N unique ids
//! arrived and summarises duplicates, per-key order and end-to-end latency.
//!
//! Delivery rules, seen from the consumer (docs/ARCHITECTURE.md): rule 7 — delivery is at-least-once and
//! duplicates carry the same `spillway-id`: this crate counts them (per container, bounded LRU) and
//! `verify` reports them. A batch with a failed record fails as a whole (Lambda's MSK event source
//! retries it; the local consumer retries it before committing). Records the MSK event carries
//! unreadably are the exception: they are skipped, logged by position (never content) and counted
//! (`Unreadable`), so one cannot stop its partition.

pub mod config;
pub mod handler;
pub mod lambda;
pub mod local;
pub mod record;
pub mod verify;
