//! Kinesis writer: `PutRecords` packing, partition keys, single retries.

use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use futures::stream::{self, StreamExt};
use spillway_core::backoff::Backoff;
use spillway_core::limits::KINESIS_MAX_PARTITION_KEY_CHARS;

use super::{
    classify, id_or_digest, is_throttling_code, pack, Failure, Outgoing, WriteError, RETRY_BASE,
    RETRY_CAP,
};

/// Kinesis: at most 500 records per `PutRecords` call.
const MAX_RECORDS_PER_CALL: usize = 500;
/// Kinesis: at most 5 MiB per `PutRecords` call, data and partition keys included.
const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Concurrent `PutRecords` calls for one request.
const CONCURRENT_CALLS: usize = 4;

/// The partition key: the Kafka key when it is a usable key (so one key's messages share a shard
/// and stay in order), else a digest of it, else the message id.
pub fn partition_key(id: &str, key: Option<&[u8]>) -> String {
    match key {
        Some(key) => id_or_digest(key, KINESIS_MAX_PARTITION_KEY_CHARS, |b| {
            b.is_ascii_graphic() || b == b' '
        }),
        None => id.to_owned(),
    }
}

/// Writes envelopes to one Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisBuffer {
    client: Client,
    stream: String,
    concurrency: usize,
}

impl KinesisBuffer {
    /// A writer for `stream` (a name or an ARN).
    pub fn new(client: Client, stream: String) -> Self {
        Self {
            client,
            stream,
            concurrency: CONCURRENT_CALLS,
        }
    }

    /// One `PutRecords` call at a time: records of one partition key keep their order across
    /// calls (replay writes a shard's records back in sequence order).
    #[must_use]
    pub fn sequential(mut self) -> Self {
        self.concurrency = 1;
        self
    }

    fn is_arn(&self) -> bool {
        self.stream.starts_with("arn:")
    }

    /// Writes `batch`; see the module docs of [`super`].
    pub async fn write(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let keys: Vec<String> = batch
            .iter()
            .map(|m| partition_key(&m.id, m.key.as_deref()))
            .collect();
        let sizes = batch.iter().zip(&keys).map(|(m, k)| m.body.len() + k.len());
        let runs = pack(sizes, MAX_RECORDS_PER_CALL, MAX_BYTES_PER_CALL);
        let keys = &keys;
        let results: Vec<_> = stream::iter(runs)
            .map(|run| async move {
                let outcome = self
                    .put_run(&batch[run.clone()], &keys[run.clone()], deadline)
                    .await;
                (run, outcome)
            })
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut outcomes: Vec<Result<(), WriteError>> = vec![Ok(()); batch.len()];
        for (run, outcome) in results {
            outcomes[run].clone_from_slice(&outcome);
        }
        outcomes
    }

    async fn put_run(
        &self,
        run: &[Outgoing],
        keys: &[String],
        deadline: Instant,
    ) -> Vec<Result<(), WriteError>> {
        let entries: Vec<_> = run
            .iter()
            .zip(keys)
            .map(|(m, k)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(m.body.to_vec()))
                    .partition_key(k)
                    .build()
                    .expect("data and partition key are set")
            })
            .collect();
        let request = self.client.put_records().set_records(Some(entries));
        let request = if self.is_arn() {
            request.stream_arn(&self.stream)
        } else {
            request.stream_name(&self.stream)
        };
        let mut outcomes = vec![Ok(()); run.len()];
        let mut retry = Vec::new();
        match request.send().await {
            Ok(out) => {
                for (i, settled) in settle_records(&out.records, run.len())
                    .into_iter()
                    .enumerate()
                {
                    if let Err((failure, code)) = settled {
                        retry.push((i, failure.into_error(code)));
                    }
                }
            }
            Err(err) => match classify(&err) {
                (Failure::Permanent, detail) => {
                    tracing::error!(stream = %self.stream, %detail, "PutRecords refused");
                    return vec![Err(WriteError::Refused(detail)); run.len()];
                }
                (failure, detail) => {
                    let error = failure.into_error(detail);
                    retry.extend((0..run.len()).map(|i| (i, error.clone())));
                }
            },
        }
        for (i, last) in retry {
            outcomes[i] = self.put_alone(&run[i], &keys[i], last, deadline).await;
        }
        outcomes
    }

    /// `PutRecord` for one record, with backoff until `deadline`; `last` is the answer when no
    /// retry fits in the budget.
    async fn put_alone(
        &self,
        msg: &Outgoing,
        key: &str,
        mut last: WriteError,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let mut backoff = Backoff::until(RETRY_BASE, RETRY_CAP, deadline);
        while let Some(delay) = backoff.next_delay() {
            tokio::time::sleep(delay).await;
            let request = self
                .client
                .put_record()
                .data(Blob::new(msg.body.to_vec()))
                .partition_key(key);
            let request = if self.is_arn() {
                request.stream_arn(&self.stream)
            } else {
                request.stream_name(&self.stream)
            };
            match request.send().await {
                Ok(out) if !out.sequence_number.is_empty() => return Ok(()),
                Ok(_) => {
                    last = WriteError::Unavailable(
                        "PutRecord answered without a sequence number".into(),
                    );
                }
                Err(err) => {
                    let (failure, detail) = classify(&err);
                    tracing::warn!(attempt = backoff.attempts(), %detail, "PutRecord retry failed");
                    last = failure.into_error(detail);
                    if failure == Failure::Permanent {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// Each record of a `PutRecords` answer, which lists results in request order: `Ok` only for a
/// result with a sequence number and no error code (rule 10). A short `Records` list leaves the
/// records it does not reach failed (retried alone), never accepted.
fn settle_records(
    results: &[aws_sdk_kinesis::types::PutRecordsResultEntry],
    len: usize,
) -> Vec<Result<(), (Failure, String)>> {
    (0..len)
        .map(|i| match results.get(i) {
            None => Err((
                Failure::Transient,
                "not named in the PutRecords answer".to_owned(),
            )),
            Some(r) => match (r.error_code(), r.sequence_number()) {
                (Some(code), _) => Err((
                    if is_throttling_code(code) {
                        Failure::Throttled
                    } else {
                        Failure::Transient
                    },
                    code.to_owned(),
                )),
                (None, Some(seq)) if !seq.is_empty() => Ok(()),
                (None, _) => Err((
                    Failure::Transient,
                    "a PutRecords result without a sequence number".to_owned(),
                )),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::PutRecordsResultEntry;

    /// Issue 14 item 6: a short `Records` list or a result without a sequence number is not a write.
    #[test]
    fn only_results_with_a_sequence_number_count_as_written() {
        let results = [
            PutRecordsResultEntry::builder()
                .sequence_number("1")
                .shard_id("s")
                .build(),
            PutRecordsResultEntry::builder()
                .error_code("ProvisionedThroughputExceededException")
                .build(),
            PutRecordsResultEntry::builder().build(),
        ];
        let settled = settle_records(&results, 4);
        assert_eq!(settled[0], Ok(()));
        assert!(matches!(settled[1], Err((Failure::Throttled, _))));
        assert!(settled[2].is_err(), "no sequence number");
        assert!(settled[3].is_err(), "missing from the answer");
    }

    #[test]
    fn partition_keys_follow_the_kafka_key() {
        assert_eq!(partition_key("id-1", Some(b"customer 42")), "customer 42");
        assert_eq!(partition_key("id-1", None), "id-1");
        let long = partition_key("id-1", Some(&[b'k'; 300]));
        assert_eq!(long.len(), 64, "over 256 characters: a digest");
        assert_eq!(
            partition_key("id-1", Some(&[0xFF, 0x00])).len(),
            64,
            "binary: a digest"
        );
    }
}
