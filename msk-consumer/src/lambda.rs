//! The Lambda side: an MSK event in, the same batch processing as local mode.

use aws_lambda_events::event::kafka::KafkaEvent;
use thiserror::Error;

use crate::handler::{process_batch, BatchReport, RecordHandler, SeenIds};
use crate::record::from_event;

/// The invocation failed, so that the event source mapping retries the batch.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{failed} of {records} records failed (first: {first}); the batch will be retried")]
pub struct BatchFailed {
    /// Records that failed or could not be read.
    pub failed: usize,
    /// Records in the event.
    pub records: usize,
    /// The first failure, `topic-partition@offset: error`.
    pub first: String,
}

/// Handles one MSK event: every record of every topic-partition, EMF metrics on stdout.
pub async fn handle_event<H: RecordHandler>(
    event: KafkaEvent,
    handler: &H,
    seen: &SeenIds,
    function: &str,
) -> Result<BatchReport, BatchFailed> {
    let (records, malformed) = from_event(event);
    let mut report = process_batch(&records, handler, seen).await;
    // A record the event carries unreadably stays unreadable however often the batch comes
    // again: failing the batch for it would stop its partition for good (an on-demand MSK mapping
    // has no retry limit). It is skipped, named by position (never content) and counted.
    report.unreadable = malformed.iter().map(ToString::to_string).collect();
    for problem in &report.unreadable {
        tracing::error!(record = %problem, "unreadable record skipped");
    }
    println!("{}", report.emf("spillway", function));
    match report.failures.first() {
        None => Ok(report),
        Some(first) => Err(BatchFailed {
            failed: report.failures.len(),
            records: records.len() + malformed.len(),
            first: format!("{}: {}", first.position, first.error),
        }),
    }
}

impl From<BatchFailed> for lambda_runtime::Diagnostic {
    fn from(e: BatchFailed) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "BatchFailed".into(),
            error_message: e.to_string(),
        }
    }
}

/// Serves the runtime's MSK invocations until the container ends.
pub async fn run<H: RecordHandler + Sync>(handler: &H) -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{service_fn, LambdaEvent};
    let seen = SeenIds::default();
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "msk-consumer".into());
    let (seen, function) = (&seen, function.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        handle_event(event.payload, handler, seen, function)
            .await
            .map(|_| ())
    }))
    .await
}
