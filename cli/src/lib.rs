//! # spillway — the operator CLI
//!
//! `spillway dev` brings up the whole pipeline on one machine (the local stack, ingest-api, the
//! drain's local poller and a consumer, through msk-gate with MSK IAM) and shows live counters;
//! `spillway status` shows the buffer's depth and the dead-letter queue. `replay` (moving
//! dead-lettered messages back, deleting each only after its target acknowledged it — delivery rule
//! 2) and `tune` arrive with the rest of the CLI issue.

pub mod dev;
pub mod replay;
pub mod stack;
pub mod status;
pub mod tune;
