//! The report of a run: its accounting ([`accounting`]: lost = accepted − delivered, the
//! percentiles and per-second series) and its rendering ([`render`]: a Markdown summary and PNG
//! plots per run, and a table of all runs).

pub mod accounting;
pub mod render;

pub use accounting::*;
pub use render::*;
