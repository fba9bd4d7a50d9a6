//! `verify`: reads a topic until N unique `spillway-id`s arrived (or a timeout) and summarises
//! what a consumer saw: duplicates, per-key order violations, trace context and end-to-end latency.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::record::ConsumedRecord;

/// Accumulates records; [`Verifier::summary`] reports.
#[derive(Debug, Default)]
pub struct Verifier {
    ids: HashSet<String>,
    records: u64,
    duplicates: u64,
    without_id: u64,
    traced: u64,
    order_violations: u64,
    last_id_per_key: HashMap<Vec<u8>, String>,
    latencies_ms: Vec<u64>,
    first_arrival_ms: Option<u64>,
    last_arrival_ms: Option<u64>,
}

/// Latency percentiles, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Maximum.
    pub max: u64,
}

/// The machine-readable summary `verify` prints (one JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Distinct `spillway-id`s seen.
    pub unique_ids: u64,
    /// Records read.
    pub records: u64,
    /// Records whose id had been seen before.
    pub duplicates: u64,
    /// Records without a `spillway-id`.
    pub without_id: u64,
    /// Distinct ids whose record carried a valid W3C `traceparent`.
    pub with_trace_context: u64,
    /// Records of a key whose id sorts before the previous new id of that key (ids are UUIDv7:
    /// time-ordered, so a producer that sends a key's messages one after another sees none).
    pub order_violations: u64,
    /// End-to-end latency from `spillway-received-at` to arrival here; absent without that header.
    pub latency_ms: Option<Latency>,
    /// First arrival, ms since the Unix epoch.
    pub first_arrival_ms: Option<u64>,
    /// Last arrival, ms since the Unix epoch.
    pub last_arrival_ms: Option<u64>,
    /// Whether it stopped on the timeout rather than on reaching the expected count.
    pub timed_out: bool,
}

impl Verifier {
    /// Takes one record that arrived at `arrival_ms`.
    pub fn observe(&mut self, record: &ConsumedRecord, arrival_ms: u64) {
        self.records += 1;
        self.first_arrival_ms.get_or_insert(arrival_ms);
        self.last_arrival_ms = Some(arrival_ms);
        if let Some(received) = record.received_at_ms() {
            self.latencies_ms.push(arrival_ms.saturating_sub(received));
        }
        let Some(id) = record.spillway_id() else {
            self.without_id += 1;
            return;
        };
        if !self.ids.insert(id.to_owned()) {
            self.duplicates += 1;
            return;
        }
        self.traced += u64::from(record.traceparent().is_some());
        if let Some(key) = &record.key {
            match self.last_id_per_key.get_mut(key) {
                Some(last) if id < last.as_str() => self.order_violations += 1,
                Some(last) => id.clone_into(last),
                None => {
                    self.last_id_per_key.insert(key.clone(), id.to_owned());
                }
            }
        }
    }

    /// Distinct ids so far.
    pub fn unique(&self) -> u64 {
        self.ids.len() as u64
    }

    /// The summary so far.
    pub fn summary(&self, timed_out: bool) -> Summary {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> u64 {
            // Nearest rank: the smallest value with at least q of the values at or below it.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Summary {
            unique_ids: self.unique(),
            records: self.records,
            duplicates: self.duplicates,
            without_id: self.without_id,
            with_trace_context: self.traced,
            order_violations: self.order_violations,
            latency_ms: (!sorted.is_empty()).then(|| Latency {
                p50: at(0.5),
                p99: at(0.99),
                p99_9: at(0.999),
                max: sorted[sorted.len() - 1],
            }),
            first_arrival_ms: self.first_arrival_ms,
            last_arrival_ms: self.last_arrival_ms,
            timed_out,
        }
    }
}

/// Reads `topic` with a consumer group of its own until `expect` unique ids arrived or `timeout`
/// passed; the summary says which.
pub async fn until(
    kafka: &spillway_core::config::KafkaConfig,
    topic: &str,
    expect: u64,
    timeout: std::time::Duration,
) -> Result<Summary, Box<dyn std::error::Error + Send + Sync>> {
    use rdkafka::consumer::Consumer as _;
    let group = format!("spillway-verify-{}", std::process::id());
    let consumer = crate::config::consumer(kafka, &group).await?;
    consumer.subscribe(&[topic])?;
    let mut verifier = Verifier::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = loop {
        if verifier.unique() >= expect {
            break false;
        }
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break true,
            Ok(message) => verifier.observe(
                &crate::local::to_record(&message?),
                spillway_core::envelope::now_ms(),
            ),
        }
    };
    Ok(verifier.summary(timed_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, key: &str, received_at: u64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(key.as_bytes().to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                ("spillway-id".into(), id.as_bytes().to_vec()),
                (
                    "spillway-received-at".into(),
                    received_at.to_string().into_bytes(),
                ),
            ],
        }
    }

    #[test]
    fn duplicates_order_and_latency_are_counted() {
        let mut v = Verifier::default();
        v.observe(&record("01", "a", 1000), 1010);
        v.observe(&record("02", "a", 1000), 1020);
        v.observe(&record("02", "a", 1000), 1030); // duplicate
        v.observe(&record("01b", "b", 1000), 1040);
        v.observe(&record("00", "a", 1000), 1050); // new id that sorts before "02" in key a
        let mut traced = record("03", "c", 1020);
        traced.headers.push((
            "traceparent".into(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
        ));
        v.observe(&traced, 1050);
        v.observe(&traced, 1050); // a duplicate is not counted twice
        let s = v.summary(false);
        assert_eq!(
            (s.unique_ids, s.records, s.duplicates, s.order_violations),
            (5, 7, 2, 1)
        );
        assert_eq!(s.with_trace_context, 1);
        assert_eq!(
            s.latency_ms,
            Some(Latency {
                p50: 30,
                p99: 50,
                p99_9: 50,
                max: 50
            })
        );
        assert_eq!(
            (s.first_arrival_ms, s.last_arrival_ms),
            (Some(1010), Some(1050))
        );
    }
}
