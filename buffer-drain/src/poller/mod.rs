//! The local poller: plays the event source mapping on one machine. It polls the buffer like
//! Lambda's pollers do, builds real `SqsEvent` / `KinesisEvent` values, calls the same handlers as
//! the Lambda binary and applies the reports exactly as Lambda does: SQS successes are deleted and
//! failures are left to reappear after the visibility timeout; a Kinesis shard resumes at the
//! lowest failed sequence number. Each worker owns its own [`Drain`] (producer and connections),
//! as a separate Lambda container would.

use std::time::Duration;

mod kinesis;
mod sqs;

pub use crate::config::{LocalConfig, PollSettings, AFTER_INVOCATION};
pub use kinesis::KinesisPoller;
pub use sqs::SqsPoller;

/// What one invocation did, for counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Records in the batch.
    pub records: usize,
    /// Records that left the buffer (delivered or dead-lettered).
    pub done: usize,
}

/// The local poller: `config.workers` local "Lambda containers", each with its own producer,
/// polling the SQS queue at `config.source` (a URL); for a Kinesis drain, one per shard of the
/// stream `config.source`, every shard. Returns the running workers; settings that
/// cannot work together ([`PollSettings::check`]) are an error before anything starts.
pub async fn run_local(
    config: &LocalConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<tokio::task::JoinSet<()>, Box<dyn std::error::Error + Send + Sync>> {
    let LocalConfig {
        kafka,
        drain: config,
        poll: settings,
        workers,
        source,
    } = config;
    let (settings, workers) = (*settings, *workers);
    settings.check()?;
    let sqs = crate::lambda::sqs_client(sdk);
    let mut tasks = tokio::task::JoinSet::new();
    match config.buffer {
        spillway_core::limits::BufferKind::Sqs => {
            for _ in 0..workers {
                let drain = crate::lambda::build_drain(kafka, config, Some(sdk)).await?;
                let poller = SqsPoller::new(sqs.clone(), source.to_owned(), settings).await?;
                tasks.spawn(async move {
                    loop {
                        if let Err(e) = poller.poll_once(&drain).await {
                            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "poll failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
            }
        }
        spillway_core::limits::BufferKind::Kinesis => {
            let kinesis = aws_sdk_kinesis::Client::new(sdk);
            // Every shard, each read in order by a worker of its own, as a Kinesis mapping runs
            // one batch per shard at a time: SPILLWAY_MAX_CONCURRENCY does not apply (a cap would
            // leave the shards beyond it unread).
            let shards = KinesisPoller::shards(&kinesis, source).await?;
            if shards.is_empty() {
                return Err(format!("the stream {source} has no shards to read").into());
            }
            for shard in shards {
                let drain = crate::lambda::build_drain(kafka, config, Some(sdk)).await?;
                let mut poller =
                    KinesisPoller::new(kinesis.clone(), source.to_owned(), shard, settings).await?;
                tasks.spawn(async move {
                    loop {
                        if let Err(e) = poller.poll_once(&drain).await {
                            tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "poll failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
            }
        }
    }
    Ok(tasks)
}
