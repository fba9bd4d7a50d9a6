//! The Lambda side: events in, reports out; shared by the local poller.

use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::KinesisEventResponse;
use spillway_core::config::KafkaConfig;
use spillway_core::limits::BufferKind;

use crate::config::DrainConfig;

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

/// The drain for this container: its producer and dead-letter queue (and the S3 bucket for
/// letters too large for it), built once at init. Without `aws` there is no dead-letter queue.
pub async fn build_drain(
    kafka: &KafkaConfig,
    config: &DrainConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<Drain, Box<dyn std::error::Error + Send + Sync>> {
    let (producer, health) = spillway_core::kafka::producer(kafka).await?;
    let dead_letters = match (&config.dlq_url, aws) {
        (Some(url), Some(sdk)) => {
            let dlq = DeadLetters::new(sqs_client(sdk), url.clone());
            Some(match &config.dlq_bucket {
                Some(bucket) => dlq.with_claims(spillway_core::claim::ClaimStore::new(
                    spillway_core::claim::ClaimStore::client(sdk),
                    bucket,
                    spillway_core::dead_letter::CLAIM_PREFIX,
                )),
                None => dlq,
            })
        }
        _ => None,
    };
    let decoding = Decoding {
        raw: config.raw_mode,
        raw_topic: config.raw_topic.clone(),
    };
    let rebuild: crate::drain::Rebuild = {
        let kafka = kafka.clone();
        std::sync::Arc::new(move || {
            let kafka = kafka.clone();
            Box::pin(async move { spillway_core::kafka::producer(&kafka).await })
        })
    };
    let drain = Drain::new(producer, health, dead_letters, decoding)
        .with_dead_letter_grace(config.deadline_margin / 2)
        .with_rebuild(rebuild);
    Ok(match (&config.claim_bucket, aws) {
        (Some(bucket), Some(sdk)) => drain.with_value_claims(crate::drain::ValueClaims::new(
            spillway_core::claim::ClaimStore::client(sdk),
            bucket.clone(),
        )),
        _ => drain,
    })
}

/// Runs the drain in Lambda: builds it once (producer, dead-letter queue) and serves the runtime's
/// SQS or Kinesis invocations (`config.buffer`) until the container ends.
///
/// On Lambda Managed Instances an execution environment serves up to `AWS_LAMBDA_MAX_CONCURRENCY`
/// invocations at once (the runtime polls for that many, `lambda_runtime::run_concurrent`; without
/// the variable, one at a time as on Lambda's default compute). They all share this one [`Drain`]
/// — one producer, one set of MSK connections, one connection-rate limiter and auth backoff —
/// while each invocation drains its own records and answers its own report.
pub async fn run(
    kafka: &KafkaConfig,
    config: &DrainConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
    let drain = build_drain(kafka, config, Some(sdk)).await?;
    let concurrent = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 1);
    let drain = std::sync::Arc::new(if concurrent {
        drain.shared_by_concurrent_invocations()
    } else {
        drain
    });
    let margin = config.deadline_margin;
    let remaining = |context: &lambda_runtime::Context| {
        let now = spillway_core::envelope::now_ms();
        Duration::from_millis(context.deadline.saturating_sub(now))
    };
    match config.buffer {
        BufferKind::Sqs => {
            lambda_runtime::run_concurrent(service_fn(move |e: LambdaEvent<SqsEvent>| {
                let drain = drain.clone();
                async move {
                    let ends = invocation_deadline(remaining(&e.context), margin)?;
                    handle_sqs(&drain, e.payload, ends)
                        .await
                        .map_err(Diagnostic::from)
                }
            }))
            .await
        }
        BufferKind::Kinesis => {
            // Read from JSON by the drain, not the runtime: see `source::kinesis_event`.
            lambda_runtime::run_concurrent(service_fn(move |e: LambdaEvent<serde_json::Value>| {
                let drain = drain.clone();
                async move {
                    let ends = invocation_deadline(remaining(&e.context), margin)?;
                    let event =
                        crate::source::kinesis_event(e.payload).map_err(|e| Diagnostic {
                            error_type: "UnreadableEvent".into(),
                            error_message: format!("not a Kinesis event: {e}"),
                        })?;
                    handle_kinesis(&drain, event, ends)
                        .await
                        .map_err(Diagnostic::from)
                }
            }))
            .await
        }
    }
}

/// When to stop producing: `remaining` from now, less `margin` (never in the past).
pub fn deadline(remaining: Duration, margin: Duration) -> Instant {
    Instant::now() + remaining.saturating_sub(margin)
}

/// The invocation's time is shorter than `SPILLWAY_DEADLINE_MARGIN`: nothing could be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("SPILLWAY_DEADLINE_MARGIN={margin} leaves no time to produce: the invocation had {remaining} left; set the margin to at most half the function timeout")]
pub struct NoTimeLeft {
    /// The margin, as configured.
    pub margin: String,
    /// What the invocation had left when it started.
    pub remaining: String,
}

impl From<NoTimeLeft> for lambda_runtime::Diagnostic {
    fn from(e: NoTimeLeft) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "SettingsLeaveNoTime".into(),
            error_message: e.to_string(),
        }
    }
}

/// Rule 11 in Lambda, where the function timeout is only known from the first invocation: a
/// margin that leaves no time to produce fails the invocation with an error that names the
/// variable (nothing is produced or dead-lettered; the records come again) instead of ending every
/// batch "not produced" until `maxReceiveCount` moves the whole queue to its DLQ.
pub fn invocation_deadline(remaining: Duration, margin: Duration) -> Result<Instant, NoTimeLeft> {
    if remaining <= margin {
        let err = NoTimeLeft {
            margin: humantime::format_duration(margin).to_string(),
            remaining: humantime::format_duration(Duration::from_millis(
                u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
            ))
            .to_string(),
        };
        tracing::error!(error = %err, "the drain's settings leave no time");
        return Err(err);
    }
    Ok(deadline(remaining, margin))
}

/// The SQS client the drain writes dead letters (and the local poller receives and deletes) with:
/// every call bounded — 1 s to connect, 3 s per attempt (more than the poller's 1 s long poll),
/// 5 s in all — so that no call after the deadline can outlast the function (rule 5).
pub fn sqs_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::from(sdk)
        .timeout_config(bounded_calls())
        // Every call is bounded above, which stalled-stream protection would only repeat at a
        // cost on every poll of every body.
        .stalled_stream_protection(aws_sdk_sqs::config::StalledStreamProtectionConfig::disabled())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// 1 s to connect, 3 s per attempt, 5 s in all ([`crate::poller::CALL_BOUND`]).
fn bounded_calls() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(crate::poller::CALL_BOUND)
        .build()
}

/// The Kinesis client of the poller outside Lambda, bounded as [`sqs_client`]'s calls are, so that
/// a stuck `GetRecords` or `ListShards` cannot hold a reader past a shutdown's bound.
pub fn kinesis_client(sdk: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::config::Builder::from(sdk)
        .timeout_config(bounded_calls())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

fn verdict(report: &DrainReport) -> Result<(), AllFailed> {
    if report.every_record_failed_retryably() {
        let first = match report.outcomes.first() {
            Some(crate::report::Outcome::Failed(failure)) => failure.to_string(),
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
    handle_sqs_reporting(drain, event, deadline).await.1
}

/// [`handle_sqs`], with the drain's report beside the answer (the local poller's in-flight
/// limit reads its produce times).
pub async fn handle_sqs_reporting(
    drain: &Drain,
    event: SqsEvent,
    deadline: Instant,
) -> (DrainReport, Result<SqsBatchResponse, AllFailed>) {
    let (records, ordering) = from_sqs(event);
    let report = drain.drain(&records, ordering, deadline).await;
    report.publish("sqs");
    let answer = verdict(&report).map(|()| report.sqs_response(&records));
    (report, answer)
}

/// Handles a Kinesis event.
pub async fn handle_kinesis(
    drain: &Drain,
    event: KinesisEvent,
    deadline: Instant,
) -> Result<KinesisEventResponse, AllFailed> {
    let (records, ordering) = from_kinesis(event);
    let report = drain.drain(&records, ordering, deadline).await;
    report.publish("kinesis");
    verdict(&report)?;
    Ok(report.kinesis_response(&records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_margin_as_long_as_the_invocation_is_refused_naming_the_variable() {
        let err = invocation_deadline(Duration::from_secs(5), Duration::from_secs(5))
            .expect_err("no time left");
        assert!(
            err.to_string().contains("SPILLWAY_DEADLINE_MARGIN=5s"),
            "{err}"
        );
        assert!(invocation_deadline(Duration::from_secs(30), Duration::from_secs(5)).is_ok());
    }
}
