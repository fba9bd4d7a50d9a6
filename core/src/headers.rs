//! Kafka header names that belong to the pipeline (delivery rule 8).
//!
//! The drain sets `spillway-id` and `spillway-received-at` on every record, and `x-amzn-trace-id`
//! when the buffered message carried an X-Ray trace header (SQS `AWSTraceHeader`);
//! readers deduplicate and measure latency by them, so a caller must not be able to supply them.
//! ingest-api refuses a request that names one ([`is_reserved`]) with a 400 naming the header, and
//! the drain drops any copy it finds in an envelope written by another producer before it adds its
//! own. Names are compared case-insensitively, as HTTP header names are.

/// Header carrying the envelope id; duplicates carry the same one (delivery rule 7).
pub const ID_HEADER: &str = "spillway-id";
/// Header carrying when the buffer writer accepted the message, ms since the Unix epoch.
pub const RECEIVED_AT_HEADER: &str = "spillway-received-at";
/// Header carrying the AWS X-Ray trace context of the buffered message, when it had one.
pub const TRACE_HEADER: &str = "x-amzn-trace-id";
/// Every header whose name starts with this belongs to the pipeline.
pub const RESERVED_PREFIX: &str = "spillway-";
/// W3C Trace Context headers: reserved for the pipeline (refused from callers, dropped from
/// envelopes).
pub const W3C_TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether `name` is a header only the pipeline may set.
pub fn is_reserved(name: &str) -> bool {
    let starts_reserved = name
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX));
    starts_reserved
        || name.eq_ignore_ascii_case(TRACE_HEADER)
        || W3C_TRACE_HEADERS
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_names_are_reserved_in_any_case() {
        for name in [
            "spillway-id",
            "Spillway-Id",
            "SPILLWAY-RECEIVED-AT",
            "spillway-anything",
            "X-Amzn-Trace-Id",
            "traceparent",
            "TraceState",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in [
            "source",
            "spillway",
            "spillwayid",
            "x-amzn-other",
            "é-spillway-id",
            "",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}
