//! # spillway — the operator CLI
//!
//! `spillway dev` brings up the whole pipeline on one machine; `replay` moves dead-lettered
//! messages back (deleting a DLQ message only after its target acknowledged it — delivery rule 2);
//! `tune` computes and applies safe drain concurrency from the MSK quotas; `status` shows backlog
//! and delivery counters.
//!
//! Status: arrives with the CLI issue; until then the local stack is started with `local/up`.
