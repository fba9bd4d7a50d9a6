//! The local poller: plays the event source mapping on one machine. It polls the buffer like
//! Lambda's pollers do, builds real `SqsEvent` / `KinesisEvent` values, calls the same handlers as
//! the Lambda binary and applies the reports exactly as Lambda does: SQS successes are deleted and
//! failures are left to reappear after the visibility timeout; a Kinesis shard resumes at the
//! lowest failed sequence number. Each worker owns its own [`Drain`] (producer and connections),
//! as a separate Lambda container would.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use spillway_core::config::KafkaConfig;
use tokio_util::sync::CancellationToken;

use crate::config::DrainConfig;
use crate::service::Health;

mod aimd;
pub mod checkpoints;
mod heartbeat;
mod kinesis;
mod sqs;

pub use crate::config::{LocalConfig, PollSettings, AFTER_INVOCATION};
pub use aimd::Aimd;
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
/// polling the SQS queue at `config.source` (a URL), as many of them producing at once as one
/// shared [`Aimd`] limit allows; for a Kinesis drain, one task that reads
/// every shard of the stream `config.source` ([`ShardReaders`]). Returns the running workers; settings that
/// cannot work together ([`PollSettings::check`]) are an error before anything starts.
pub async fn run_local(
    config: &LocalConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let LocalConfig {
        kafka,
        drain: config,
        poll: settings,
        workers,
        source,
        kinesis_checkpoints,
    } = config;
    let (settings, workers) = (*settings, *workers);
    settings.check(config.buffer)?;
    let sqs = crate::lambda::sqs_client(sdk);
    let mut running = Running {
        tasks: tokio::task::JoinSet::new(),
        stop: CancellationToken::new(),
        health: Arc::default(),
        concurrency: None,
    };
    match config.buffer {
        spillway_core::limits::BufferKind::Sqs => {
            let aimd = Arc::new(Aimd::new(workers));
            running.concurrency = Some(aimd.clone());
            for _ in 0..workers {
                let drain = Arc::new(crate::lambda::build_drain(kafka, config, Some(sdk)).await?);
                running.health.watch(&drain);
                let poller =
                    Arc::new(SqsPoller::new(sqs.clone(), source.to_owned(), settings).await?);
                let (stop, worker, aimd) =
                    (running.stop.clone(), running.health.worker(), aimd.clone());
                running.tasks.spawn(async move {
                    let _worker = worker;
                    // Stopped, a worker finishes the batch in hand (its deletes too) and ends.
                    poller.run(drain, aimd, stop).await;
                });
            }
            running
                .tasks
                .spawn(watch_backlog(sqs, source.to_owned(), running.stop.clone()));
        }
        spillway_core::limits::BufferKind::Kinesis => {
            let kinesis = crate::lambda::kinesis_client(sdk);
            let listed = KinesisPoller::shards(&kinesis, source).await?;
            if listed.is_empty() {
                return Err(format!("the stream {source} has no shards to read").into());
            }
            let readers = ShardReaders {
                kinesis,
                checkpoints: Arc::new(checkpoints::CheckpointStore::new(kinesis_checkpoints, sdk)),
                stream: source.to_owned(),
                kafka: kafka.clone(),
                drain: config.clone(),
                settings,
                sdk: sdk.clone(),
                stop: running.stop.clone(),
                health: running.health.clone(),
            };
            running.tasks.spawn(readers.run(listed));
        }
    }
    Ok(running)
}

/// The local poller's workers, running until stopped.
pub struct Running {
    tasks: tokio::task::JoinSet<()>,
    stop: CancellationToken,
    health: Arc<Health>,
    /// SQS: how many batches the workers produce at once.
    concurrency: Option<Arc<Aimd>>,
}

impl Running {
    /// Liveness and readiness of the workers, for [`crate::service::serve`].
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// SQS: the workers' in-flight limit ([`Aimd`]); `None` for a Kinesis drain (one batch per
    /// shard at a time).
    pub fn concurrency(&self) -> Option<&Arc<Aimd>> {
        self.concurrency.as_ref()
    }

    /// Waits until every worker has ended (they end only when stopped, or when one panics).
    pub async fn join(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Graceful shutdown: the workers stop receiving, finish the batches in hand — produce them,
    /// delete what Kafka acknowledged, leave the rest to come again — and end. Waits at most
    /// `bound` ([`PollSettings::shutdown_bound`]: a batch's longest time), then aborts what is
    /// left, whose messages come again after their visibility timeout (duplicates with their
    /// `spillway-id`, never a loss). `true` when every worker ended in time.
    pub async fn stop(mut self, bound: Duration) -> bool {
        self.health.stopping();
        self.stop.cancel();
        let ended = tokio::time::timeout(bound, self.join()).await.is_ok();
        if !ended {
            tracing::warn!(
                bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                "workers still busy at the shutdown bound were aborted; their batches come again"
            );
            self.tasks.shutdown().await;
        }
        ended
    }

    /// Stops every worker at once, mid-batch: what was received and not deleted comes again after
    /// its visibility timeout.
    pub async fn abort(mut self) {
        self.health.stopping();
        self.tasks.shutdown().await;
    }
}

/// How often the backlog gauges ([`crate::service::Metrics`]) are read from the queue.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(10);

/// Keeps the SQS backlog gauges current until stopped.
async fn watch_backlog(sqs: aws_sdk_sqs::Client, queue_url: String, stop: CancellationToken) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    while !stop.is_cancelled() {
        match sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
        {
            Ok(out) => {
                let attrs = out.attributes.unwrap_or_default();
                let read = |name: &A| attrs.get(name).and_then(|v| v.parse::<i64>().ok());
                let metrics = crate::service::metrics();
                // An answer without the figure leaves the gauge as it was.
                if let Some(n) = read(&A::ApproximateNumberOfMessages) {
                    metrics.backlog.set(n);
                }
                if let Some(n) = read(&A::ApproximateNumberOfMessagesNotVisible) {
                    metrics.in_flight.set(n);
                }
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "reading the backlog failed; its gauges keep their last value");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(BACKLOG_EVERY) => {}
            () = stop.cancelled() => {}
        }
    }
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
    checkpoints: Arc<checkpoints::CheckpointStore>,
    stream: String,
    kafka: KafkaConfig,
    drain: DrainConfig,
    settings: PollSettings,
    sdk: aws_config::SdkConfig,
    stop: CancellationToken,
    health: Arc<Health>,
}

impl ShardReaders {
    /// Reads the stream, starting from the shards `listed` at start. Counted as a worker itself,
    /// so that the process is live while readers are being built or between a shard's end and
    /// its children's start.
    async fn run(self, listed: Vec<kinesis::Shard>) {
        let _worker = self.health.worker();
        let mut started = HashSet::new();
        let mut finished = HashSet::new();
        // Each reader returns its shard's id when the shard is closed and read to its end (`None`
        // when stopped before).
        let mut readers: tokio::task::JoinSet<Option<String>> = tokio::task::JoinSet::new();
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
                Some(Ok(Some(done))) = readers.join_next() => {
                    tracing::info!(shard = %done, "shard closed and read to its end");
                    crate::service::metrics().shard_finished(&done);
                    finished.insert(done);
                }
                () = tokio::time::sleep(SHARD_REFRESH) => {}
                () = self.stop.cancelled() => {
                    // Every reader finishes the batch in hand and ends.
                    while readers.join_next().await.is_some() {}
                    return;
                }
            }
            listing = KinesisPoller::shards(&self.kinesis, &self.stream).await;
        }
    }

    /// A reader for `shard`: polls until the shard is closed and read, then returns its id.
    async fn reader(
        &self,
        shard: &str,
    ) -> Result<
        impl std::future::Future<Output = Option<String>>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        // The checkpoint first: a store that cannot be read is retried without making (and
        // dropping) a producer each time.
        let mut poller = KinesisPoller::new(
            self.kinesis.clone(),
            self.stream.clone(),
            shard.to_owned(),
            self.settings,
        )
        .await?
        .with_checkpoints(self.checkpoints.clone())
        .await?;
        let drain =
            Arc::new(crate::lambda::build_drain(&self.kafka, &self.drain, Some(&self.sdk)).await?);
        self.health.watch(&drain);
        let (stop, worker) = (self.stop.clone(), self.health.worker());
        Ok(async move {
            while !poller.finished() {
                if stop.is_cancelled() {
                    return None;
                }
                if let Err(e) = poller.poll_once(&drain).await {
                    tracing::warn!(error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "poll failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
            worker.done();
            Some(poller.shard_id().to_owned())
        })
    }
}
