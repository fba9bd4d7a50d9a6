//! The local poller: plays the event source mapping on one machine. It polls the buffer like
//! Lambda's pollers do, builds real `SqsEvent` / `KinesisEvent` values, calls the same handlers as
//! the Lambda binary and applies the reports exactly as Lambda does: SQS successes are deleted and
//! failures are left to reappear after the visibility timeout; a Kinesis shard resumes at the
//! lowest failed sequence number. Each worker owns its own [`Drain`] (producer and connections),
//! as a separate Lambda container would.

use std::collections::HashSet;
use std::time::Duration;

use spillway_core::config::KafkaConfig;

use crate::config::DrainConfig;

mod heartbeat;
mod kinesis;
mod sqs;

pub use crate::config::{LocalConfig, PollSettings, AFTER_INVOCATION};
pub use heartbeat::{Extensions, CALL_BOUND};
pub use kinesis::{ready, KinesisPoller, Shard};
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
/// polling the SQS queue at `config.source` (a URL); for a Kinesis drain, one task that reads
/// every shard of the stream `config.source` ([`ShardReaders`]). Returns the running workers; settings that
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
            let listed = KinesisPoller::shards(&kinesis, source).await?;
            if listed.is_empty() {
                return Err(format!("the stream {source} has no shards to read").into());
            }
            let readers = ShardReaders {
                kinesis,
                stream: source.to_owned(),
                kafka: kafka.clone(),
                drain: config.clone(),
                settings,
                sdk: sdk.clone(),
            };
            tasks.spawn(readers.run(listed));
        }
    }
    Ok(tasks)
}

/// How often the Kinesis poller looks for shards opened by a reshard (also at once whenever a
/// shard is read to its end, which is when its children become readable).
pub const SHARD_REFRESH: Duration = Duration::from_secs(5);

/// The Kinesis side of the local poller: one reader per shard, each with its own producer and in
/// order, as a Kinesis mapping runs one batch per shard at a time (SPILLWAY_MAX_CONCURRENCY does
/// not apply: a cap would leave the shards beyond it unread). A shard is started once its parents
/// are read to their end ([`ready`]); a reader stops when its shard is closed and read.
struct ShardReaders {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    kafka: KafkaConfig,
    drain: DrainConfig,
    settings: PollSettings,
    sdk: aws_config::SdkConfig,
}

impl ShardReaders {
    /// Reads the stream, starting from the shards `listed` at start.
    async fn run(self, listed: Vec<kinesis::Shard>) {
        let mut started = HashSet::new();
        let mut finished = HashSet::new();
        // Each reader returns its shard's id when the shard is closed and read to its end.
        let mut readers: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
        let mut listing = Ok(listed);
        loop {
            match listing {
                Ok(listed) => {
                    for shard in kinesis::ready(&listed, &started, &finished) {
                        match self.reader(&shard.id).await {
                            Ok(reader) => {
                                started.insert(shard.id.clone());
                                readers.spawn(reader);
                            }
                            Err(e) => {
                                tracing::warn!(shard = %shard.id, error = %e, "cannot start the shard's reader; retrying");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "listing shards failed");
                }
            }
            tokio::select! {
                Some(Ok(done)) = readers.join_next() => {
                    tracing::info!(shard = %done, "shard closed and read to its end");
                    finished.insert(done);
                }
                () = tokio::time::sleep(SHARD_REFRESH) => {}
            }
            listing = KinesisPoller::shards(&self.kinesis, &self.stream).await;
        }
    }

    /// A reader for `shard`: polls until the shard is closed and read, then returns its id.
    async fn reader(
        &self,
        shard: &str,
    ) -> Result<impl std::future::Future<Output = String>, Box<dyn std::error::Error + Send + Sync>>
    {
        let drain = crate::lambda::build_drain(&self.kafka, &self.drain, Some(&self.sdk)).await?;
        let mut poller = KinesisPoller::new(
            self.kinesis.clone(),
            self.stream.clone(),
            shard.to_owned(),
            self.settings,
        )
        .await?;
        Ok(async move {
            while !poller.finished() {
                if let Err(e) = poller.poll_once(&drain).await {
                    tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "poll failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            poller.shard_id().to_owned()
        })
    }
}
