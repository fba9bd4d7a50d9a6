//! # loadtest — bursts and faults, end to end, with a report
//!
//! Shows the product's promise — a burst becomes a backlog, never a loss — on this machine: an
//! open-loop generator ([`generator`]) drives ingest-api and the drain as separate processes
//! ([`pipeline`]) through msk-gate with MSK IAM, while faults strike on schedule ([`scenario`]);
//! a consumer ([`observe`]) accounts for every accepted id, and [`report`] writes a Markdown
//! summary and plots per run. `--direct` runs the same burst against the AWS sample's pattern
//! ([`direct`]) for a side-by-side baseline.

pub mod direct;
pub mod generator;
pub mod observe;
pub mod pipeline;
pub mod report;
pub mod roles;
pub mod run;
pub mod scenario;
