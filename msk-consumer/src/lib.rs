//! # msk-consumer — the consumer side
//!
//! The MSK event handler for Lambda and a local Kafka consumer that feeds the same handler, plus a
//! `verify` mode that counts unique `spillway-id`s, duplicates, per-key order and end-to-end latency.
//!
//! Delivery rule 7 (at-least-once; duplicates carry the same `spillway-id`) is what this crate
//! measures from the consumer's side.
//!
//! Status: arrives with the msk-consumer issue; this crate currently holds only its header.
