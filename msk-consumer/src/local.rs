//! Local mode: a consumer group on a broker, grouping records into batches that go through the
//! same [`process_batch`] as Lambda's MSK events. Offsets are committed only after a batch was
//! processed, as the MSK event source mapping does.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use spillway_core::kafka::Consumer as KafkaConsumer;

use crate::handler::{process_batch, BatchReport, RecordHandler, SeenIds};
use crate::record::ConsumedRecord;

/// How local batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most records per batch (MSK's event source mapping default is 100).
    pub max_records: usize,
    /// Longest wait for a batch to fill once it has a first record.
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_records: 100,
            max_wait: Duration::from_millis(500),
        }
    }
}

/// A consumed message as a [`ConsumedRecord`].
pub fn to_record(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    ConsumedRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Receives the next batch: waits for a first record as long as `idle`, then fills the batch for
/// up to `batching.max_wait`. An empty batch means nothing arrived.
pub async fn next_batch(
    consumer: &KafkaConsumer,
    batching: Batching,
    idle: Duration,
) -> Result<Vec<ConsumedRecord>, rdkafka::error::KafkaError> {
    let mut batch = Vec::new();
    match tokio::time::timeout(idle, consumer.recv()).await {
        Ok(message) => batch.push(to_record(&message?)),
        Err(_) => return Ok(batch),
    }
    let deadline = tokio::time::Instant::now() + batching.max_wait;
    while batch.len() < batching.max_records {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => batch.push(to_record(&message?)),
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// Consumes until `stop` resolves: batch, process, commit; returns the first Kafka error. A batch
/// with handler failures is processed again (after a pause) until it succeeds and only then
/// committed, as the MSK event source mapping retries a failed batch: at-least-once, in order.
pub async fn run<H: RecordHandler>(
    consumer: &KafkaConsumer,
    handler: &H,
    batching: Batching,
    stop: impl std::future::Future<Output = ()>,
    mut on_batch: impl FnMut(&BatchReport),
) -> Result<(), rdkafka::error::KafkaError> {
    let seen = SeenIds::default();
    tokio::pin!(stop);
    loop {
        let batch = tokio::select! {
            () = &mut stop => return Ok(()),
            batch = next_batch(consumer, batching, Duration::from_secs(1)) => batch?,
        };
        if batch.is_empty() {
            continue;
        }
        loop {
            let report = process_batch(&batch, handler, &seen).await;
            on_batch(&report);
            if report.failures.is_empty() {
                break;
            }
            tracing::warn!(failures = report.failures.len(), first = %report.failures[0].position, "batch failed; retrying");
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        consumer.commit_consumer_state(CommitMode::Async)?;
    }
}

/// Local mode: consumes `topic` as `group` until Ctrl-C, printing each batch's EMF line.
pub async fn consume<H: RecordHandler>(
    kafka: &spillway_core::config::KafkaConfig,
    topic: &str,
    group: &str,
    handler: &H,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let consumer = crate::config::consumer(kafka, group).await?;
    consumer.subscribe(&[topic])?;
    tracing::info!(%topic, %group, "consuming");
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(&consumer, handler, Batching::default(), stop, |report| {
        println!("{}", report.emf("spillway", "msk-consumer-local"));
    })
    .await?;
    Ok(())
}
