//! The Lambda side: events in, reports out; shared by the local poller.

use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::KinesisEventResponse;
use spillway_core::config::{DrainConfig, KafkaConfig};

use crate::dlq::DeadLetters;
use crate::drain::Drain;
use crate::message::Decoding;
use crate::report::DrainReport;
use crate::source::{from_kinesis, from_sqs};

/// Every record failed for a retryable reason: the invocation fails so the mapping backs off.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("all {records} records failed for retryable reasons (first: {first}); the event source mapping will retry")]
pub struct AllFailed {
    /// Records in the batch.
    pub records: usize,
    /// The first reason.
    pub first: String,
}

impl From<AllFailed> for lambda_runtime::Diagnostic {
    fn from(e: AllFailed) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "AllRecordsFailed".into(),
            error_message: e.to_string(),
        }
    }
}

/// The drain for this container: its producer and dead-letter queue, built once at init.
pub async fn build_drain(
    kafka: &KafkaConfig,
    config: &DrainConfig,
    sqs: Option<aws_sdk_sqs::Client>,
) -> Result<Drain, Box<dyn std::error::Error + Send + Sync>> {
    let (producer, health) = spillway_core::kafka::producer(kafka).await?;
    let dead_letters = match (&config.dlq_url, sqs) {
        (Some(url), Some(client)) => Some(DeadLetters::new(client, url.clone())),
        _ => None,
    };
    let decoding = Decoding {
        raw: config.raw_mode,
        raw_topic: config.raw_topic.clone(),
    };
    Ok(Drain::new(producer, health, dead_letters, decoding))
}

/// When to stop producing: `remaining` from now, less `margin` (never in the past).
pub fn deadline(remaining: Duration, margin: Duration) -> Instant {
    Instant::now() + remaining.saturating_sub(margin)
}

fn verdict(report: &DrainReport) -> Result<(), AllFailed> {
    if report.every_record_failed_retryably() {
        let first = match report.outcomes.first() {
            Some(crate::report::Outcome::Failed { reason, .. }) => reason.clone(),
            _ => String::new(),
        };
        return Err(AllFailed {
            records: report.outcomes.len(),
            first,
        });
    }
    Ok(())
}

/// Handles an SQS event.
pub async fn handle_sqs(
    drain: &Drain,
    event: SqsEvent,
    deadline: Instant,
) -> Result<SqsBatchResponse, AllFailed> {
    let (records, ordering) = from_sqs(event);
    let report = drain.drain(&records, ordering, deadline).await;
    report.metrics("sqs").emit();
    verdict(&report)?;
    Ok(report.sqs_response(&records))
}

/// Handles a Kinesis event.
pub async fn handle_kinesis(
    drain: &Drain,
    event: KinesisEvent,
    deadline: Instant,
) -> Result<KinesisEventResponse, AllFailed> {
    let (records, ordering) = from_kinesis(event);
    let report = drain.drain(&records, ordering, deadline).await;
    report.metrics("kinesis").emit();
    verdict(&report)?;
    Ok(report.kinesis_response(&records))
}
