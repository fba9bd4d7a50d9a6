//! The poison fast path: records that can never be delivered go to an SQS dead-letter queue at
//! once, with their reason, instead of cycling until `maxReceiveCount` (delivery rule 6).

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use std::time::Instant;

use spillway_core::batch::pack;
use spillway_core::claim::ClaimStore;
use spillway_core::dead_letter::{self as contract, attribute_text, encode_body, Encoding};
pub use spillway_core::dead_letter::{
    ENCODING_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_ATTRIBUTE,
};

use crate::source::SourceRecord;

/// Why a letter is not in the dead-letter queue: its record is reported failed and comes again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    /// Over the queue's limit and no bucket to keep it in.
    #[error("the letter is {bytes} bytes, over the dead-letter queue's {limit}; set SPILLWAY_DLQ_BUCKET to keep such letters in S3", limit = contract::MAX_LETTER_BYTES)]
    TooLarge {
        /// The letter's size as SQS counts it.
        bytes: usize,
    },
    /// The S3 claim check could not be written.
    #[error("the letter is too large for the dead-letter queue and its S3 claim check could not be written")]
    ClaimNotWritten,
    /// S3 did not answer in the time the claim check had.
    #[error("the S3 claim check of a letter too large for the dead-letter queue did not answer before the deadline")]
    ClaimTimedOut,
    /// The deadline came before the letter's write started.
    #[error("no time was left to write it to the dead-letter queue")]
    NoTimeLeft,
    /// The queue's answer named the letter as failed, with this code.
    #[error("the dead-letter queue refused it: {0}")]
    Refused(String),
    /// The queue's answer named neither success nor failure for it (rule 10).
    #[error("the dead-letter queue's answer did not name it")]
    Unanswered,
    /// The call failed.
    #[error("the dead-letter queue could not be written")]
    WriteFailed,
    /// The call was unanswered at the deadline.
    #[error("the dead-letter queue did not answer before the deadline")]
    TimedOut,
}

/// SQS batch calls: at most 10 entries and 256 KiB (the limit of queues that were not raised).
const MAX_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = contract::MAX_LETTER_BYTES;

/// A dead-letter queue, and where letters too large for it go.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    client: aws_sdk_sqs::Client,
    url: String,
    claims: Option<ClaimStore>,
}

/// One letter as the queue gets it.
struct Prepared {
    body: String,
    encoding: Encoding,
    reason: String,
    source: String,
    original_id: String,
}

impl Prepared {
    fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (REASON_ATTRIBUTE, self.reason.as_str()),
            (SOURCE_ATTRIBUTE, self.source.as_str()),
            (ORIGINAL_ID_ATTRIBUTE, self.original_id.as_str()),
        ]
        .into_iter()
        .chain(self.encoding.attribute().map(|e| (ENCODING_ATTRIBUTE, e)))
    }

    fn bytes(&self) -> usize {
        contract::letter_bytes(&self.body, self.attributes())
    }
}

impl DeadLetters {
    /// Writes to the queue at `url`; letters too large for it are reported failed unless
    /// [`DeadLetters::with_claims`] gives them somewhere to go.
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self {
            client,
            url,
            claims: None,
        }
    }

    /// Letters over [`contract::MAX_LETTER_BYTES`] are kept in `claims` (an S3 bucket) and the
    /// queue gets a claim check naming the object (rule 6; `spillway_core::claim`).
    #[must_use]
    pub fn with_claims(mut self, claims: ClaimStore) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Each letter as the queue takes it: a claim check when it would not fit (written to S3
    /// now, within half the time to `until`), else `Err` saying why it cannot be written.
    async fn prepare(
        &self,
        letters: &[(&SourceRecord, String)],
        until: Instant,
    ) -> Vec<Result<Prepared, DeadLetterError>> {
        // Claim checks get half the time left: an S3 that does not answer must leave the rest for
        // the queue write of every other letter.
        let claims_until = Instant::now() + until.saturating_duration_since(Instant::now()) / 2;
        let prepared: Vec<Prepared> = letters
            .iter()
            .map(|(record, reason)| {
                let (body, encoding) = encode_body(&record.data);
                Prepared {
                    body,
                    encoding,
                    reason: attribute_text(reason),
                    source: attribute_text(&record.source),
                    original_id: attribute_text(&record.item_id),
                }
            })
            .collect();
        let claimed = prepared.into_iter().zip(letters).map(|(mut p, (record, _))| async move {
            if p.bytes() <= contract::MAX_LETTER_BYTES {
                return Ok(p);
            }
            let Some(claims) = &self.claims else {
                return Err(DeadLetterError::TooLarge { bytes: p.bytes() });
            };
            let put = claims.put(&record.data);
            match tokio::time::timeout_at(claims_until.into(), put).await {
                Ok(Ok(claim)) => {
                    p.body = claim.encode();
                    p.encoding = Encoding::Claim;
                    Ok(p)
                }
                Ok(Err(e)) => {
                    tracing::error!(bucket = %claims.bucket(), error = %e, "claim check write failed");
                    Err(DeadLetterError::ClaimNotWritten)
                }
                Err(_) => Err(DeadLetterError::ClaimTimedOut),
            }
        });
        futures::future::join_all(claimed).await
    }

    /// Sends each `(record, reason)`; one outcome per letter, in order. `Err` means the letter is
    /// not in the queue and the record must be reported failed. A letter counts as written only
    /// when the queue's answer names it under `Successful` (rule 10). No call starts, or runs,
    /// past `until` (rule 5: work after the deadline is bounded): letters left then are `Err`.
    pub async fn send(
        &self,
        letters: &[(&SourceRecord, String)],
        until: Instant,
    ) -> Vec<Result<(), DeadLetterError>> {
        let fifo = spillway_core::limits::is_fifo_queue(&self.url);
        let mut outcomes: Vec<Result<(), DeadLetterError>> = Vec::with_capacity(letters.len());
        // The letters that can be written, with their index and size.
        let mut ready: Vec<(usize, usize, Prepared)> = Vec::new();
        for (i, prepared) in self.prepare(letters, until).await.into_iter().enumerate() {
            match prepared {
                Ok(p) => {
                    outcomes.push(Err(DeadLetterError::NoTimeLeft));
                    ready.push((i, p.bytes(), p));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        for run in pack(
            ready.iter().map(|(_, bytes, _)| *bytes),
            MAX_ENTRIES,
            MAX_BATCH_BYTES,
        ) {
            if Instant::now() >= until {
                break;
            }
            let run = &ready[run];
            let entries: Vec<_> = run
                .iter()
                .enumerate()
                .map(|(k, (i, _, p))| {
                    let record = letters[*i].0;
                    // Entry ids are positions in this call.
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(k.to_string())
                        .message_body(&p.body);
                    for (name, value) in p.attributes() {
                        entry = entry.message_attributes(name, text(value));
                    }
                    if fifo {
                        entry = entry
                            .message_group_id(
                                record
                                    .group
                                    .clone()
                                    .unwrap_or_else(|| "spillway-dead-letters".into()),
                            )
                            .message_deduplication_id(dedup_id(&record.item_id));
                    }
                    entry.build().expect("id and body are set")
                })
                .collect();
            let call = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send();
            match tokio::time::timeout_at(until.into(), call).await {
                Ok(Ok(out)) => {
                    use spillway_core::batch::{answered, Answered};
                    let answers = answered(
                        0..run.len(),
                        out.successful.iter().map(|ok| ok.id.as_str()),
                        out.failed.iter().map(|f| (f.id.as_str(), f.code.as_str())),
                    );
                    for ((i, _, _), answer) in run.iter().zip(answers) {
                        outcomes[*i] = match answer {
                            Answered::Done => Ok(()),
                            Answered::Failed(code) => {
                                Err(DeadLetterError::Refused(code.to_owned()))
                            }
                            Answered::Unanswered => Err(DeadLetterError::Unanswered),
                        };
                    }
                }
                Ok(Err(e)) => {
                    let detail = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                    tracing::error!(dlq = %self.url, error = %detail, "dead-letter write failed");
                    for (i, _, _) in run {
                        outcomes[*i] = Err(DeadLetterError::WriteFailed);
                    }
                }
                Err(_) => {
                    tracing::error!(dlq = %self.url, "dead-letter write still unanswered at the deadline");
                    for (i, _, _) in run {
                        outcomes[*i] = Err(DeadLetterError::TimedOut);
                    }
                }
            }
        }
        outcomes
    }
}

/// An attribute value (already [`attribute_text`]).
fn text(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

/// FIFO deduplication ids allow 128 characters; sequence numbers and message ids fit.
fn dedup_id(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(128)
        .collect::<String>()
        + "-dlq"
}
