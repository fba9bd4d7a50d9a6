//! Processing a batch: the user's [`RecordHandler`] per record, duplicate detection, metrics.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use serde::Serialize;
use spillway_core::envelope::now_ms;

use crate::record::ConsumedRecord;

/// An error from a [`RecordHandler`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What to do with each record. Implement it to plug your processing into both the Lambda handler
/// and the local consumer; they share one code path ([`process_batch`]).
pub trait RecordHandler: Send + Sync {
    /// Handles one record. An error marks this record failed; the rest of the batch still runs.
    fn handle(
        &self,
        record: &ConsumedRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// The default handler: one structured log line per record, never the body (unless a sample
/// rate is set, for debugging a pipeline with test data).
#[derive(Debug, Clone, Default)]
pub struct LoggingHandler {
    /// Fraction of records, 0 to 1, whose value is logged (`SPILLWAY_LOG_BODY_SAMPLE`, default 0).
    pub body_sample: f64,
}

impl RecordHandler for LoggingHandler {
    async fn handle(&self, record: &ConsumedRecord) -> Result<(), HandlerError> {
        let key = record.key.as_deref().map(String::from_utf8_lossy);
        let trace_id = record.traceparent().map(|t| t.trace_id_hex());
        let sampled = self.body_sample > 0.0 && rand_unit() < self.body_sample;
        if sampled {
            let body = record.value.as_deref().map(String::from_utf8_lossy);
            tracing::info!(topic = %record.topic, partition = record.partition, offset = record.offset,
                key = ?key, spillway_id = ?record.spillway_id(), trace_id = ?trace_id, size = record.size(), body = ?body, "record");
        } else {
            tracing::info!(topic = %record.topic, partition = record.partition, offset = record.offset,
                key = ?key, spillway_id = ?record.spillway_id(), trace_id = ?trace_id, size = record.size(), "record");
        }
        Ok(())
    }
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

/// `spillway-id`s seen recently in this container, to count duplicates (bounded memory).
#[derive(Debug)]
pub struct SeenIds(Mutex<LruCache<String, ()>>);

impl SeenIds {
    /// Remembers up to `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self(Mutex::new(LruCache::new(
            NonZeroUsize::new(capacity.max(1)).expect("at least 1"),
        )))
    }

    /// Records `id`; true when it was seen before.
    pub fn seen_before(&self, id: &str) -> bool {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.put(id.to_owned(), ()).is_some()
    }
}

impl Default for SeenIds {
    /// 100,000 ids: a few MB, minutes of traffic for a typical container.
    fn default() -> Self {
        Self::new(100_000)
    }
}

/// A record the handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// `topic-partition@offset`.
    pub position: String,
    /// The handler's error.
    pub error: String,
}

/// What happened to a batch; also the EMF metrics of it.
#[derive(Debug, Default, Clone)]
pub struct BatchReport {
    /// Records handled (failed ones included).
    pub records: usize,
    /// Key and value bytes.
    pub bytes: usize,
    /// Records whose `spillway-id` this container had seen already.
    pub duplicates: usize,
    /// End-to-end latency per record with `spillway-received-at`, in ms.
    pub latencies_ms: Vec<u64>,
    /// Records the handler failed.
    pub failures: Vec<RecordFailure>,
    /// Records the event carried unreadably (`topic-partition@offset: problem`): skipped, as no
    /// retry could read them, and counted.
    pub unreadable: Vec<String>,
}

/// Runs `handler` on every record, in order, and reports. A failure does not stop the batch.
pub async fn process_batch<H: RecordHandler>(
    records: &[ConsumedRecord],
    handler: &H,
    seen: &SeenIds,
) -> BatchReport {
    let mut report = BatchReport::default();
    for record in records {
        report.records += 1;
        report.bytes += record.size();
        if let Some(id) = record.spillway_id() {
            if seen.seen_before(id) {
                report.duplicates += 1;
            }
        }
        if let Some(received) = record.received_at_ms() {
            report.latencies_ms.push(now_ms().saturating_sub(received));
        }
        if let Err(e) = handler.handle(record).await {
            report.failures.push(RecordFailure {
                position: record.position(),
                error: e.to_string(),
            });
        }
    }
    report
}

impl BatchReport {
    /// The batch's metrics as one CloudWatch Embedded Metric Format line (printed to stdout in
    /// Lambda, where CloudWatch Logs turns it into metrics).
    pub fn emf(&self, namespace: &str, function: &str) -> String {
        #[derive(Serialize)]
        struct Metric {
            #[serde(rename = "Name")]
            name: &'static str,
            #[serde(rename = "Unit")]
            unit: &'static str,
        }
        let metrics = [
            Metric {
                name: "Records",
                unit: "Count",
            },
            Metric {
                name: "Bytes",
                unit: "Bytes",
            },
            Metric {
                name: "Duplicates",
                unit: "Count",
            },
            Metric {
                name: "HandlerFailures",
                unit: "Count",
            },
            Metric {
                name: "Unreadable",
                unit: "Count",
            },
            Metric {
                name: "EndToEndLatency",
                unit: "Milliseconds",
            },
        ];
        serde_json::json!({
            "_aws": {
                "Timestamp": now_ms(),
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": metrics,
                }],
            },
            "Function": function,
            "Records": self.records,
            "Bytes": self.bytes,
            "Duplicates": self.duplicates,
            "HandlerFailures": self.failures.len(),
            "Unreadable": self.unreadable.len(),
            "EndToEndLatency": emf_values(&self.latencies_ms),
        })
        .to_string()
    }
}

/// EMF takes at most 100 values per metric: an even sample of the sorted values keeps the shape.
fn emf_values(values: &[u64]) -> Vec<u64> {
    const MAX: usize = 100;
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.len() <= MAX {
        return sorted;
    }
    (0..MAX)
        .map(|i| sorted[i * (sorted.len() - 1) / (MAX - 1)])
        .collect()
}
