//! # spillway — the operator CLI
//!
//! - `spillway dev` ([`dev`]) brings up the whole pipeline on one machine (the local stack,
//!   ingest-api, the drain's local poller and a consumer, through msk-gate with MSK IAM) and shows
//!   live counters.
//! - `spillway replay` ([`replay`]) moves dead-lettered messages back to a queue, a stream or
//!   Kafka, deleting each only after its target acknowledged it (delivery rule 2, see
//!   `docs/ARCHITECTURE.md`).
//! - `spillway tune` ([`tune`]) shows and changes the drain's event source mapping, checked
//!   against MSK's quotas.
//! - `spillway status` ([`status`]) shows the buffer's depth, the dead-letter queue, the stream's
//!   lag and the drain's settings.
//!
//! Each command's options are a `clap::Args` struct next to its code; [`error::Error`] says what
//! stopped a command and maps it to the exit code.

pub mod dev;
pub mod error;
pub mod replay;
pub mod stack;
pub mod status;
pub mod tune;

/// The runtime the commands run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
