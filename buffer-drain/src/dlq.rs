//! The poison fast path: records that can never be delivered go to an SQS dead-letter queue at
//! once, with their reason, instead of cycling until `maxReceiveCount` (delivery rule 6).

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::time::Instant;

use spillway_core::batch::pack;

use crate::source::SourceRecord;

/// Attribute naming why the record was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "spillway-reason";
/// Attribute naming the queue or stream the record came from.
pub const SOURCE_ATTRIBUTE: &str = "spillway-source";
/// Attribute holding the record's SQS message id or Kinesis sequence number.
pub const ORIGINAL_ID_ATTRIBUTE: &str = "spillway-original-id";
/// Attribute present, with value `base64`, when the body is the base64 of data that an SQS body
/// could not carry as it was (binary Kinesis data).
pub const ENCODING_ATTRIBUTE: &str = "spillway-body-encoding";

/// SQS batch calls: at most 10 entries and 256 KiB (the limit of queues that were not raised).
const MAX_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 262_144;

/// A dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl DeadLetters {
    /// Writes to the queue at `url`.
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }

    /// Sends each `(record, reason)`; one outcome per letter, in order. `Err` means the letter is
    /// not in the queue and the record must be reported failed. A letter counts as written only
    /// when the queue's answer names it under `Successful` (rule 10). No call starts, or runs,
    /// past `until` (rule 5: work after the deadline is bounded): letters left then are `Err`.
    pub async fn send(
        &self,
        letters: &[(&SourceRecord, String)],
        until: Instant,
    ) -> Vec<Result<(), String>> {
        let bodies: Vec<(String, bool)> = letters.iter().map(|(r, _)| body(&r.data)).collect();
        let fifo = spillway_core::limits::is_fifo_queue(&self.url);
        let mut outcomes: Vec<Result<(), String>> =
            vec![
                Err("no time was left to write it to the dead-letter queue".into());
                letters.len()
            ];
        for run in pack(
            bodies.iter().map(|(b, _)| b.len() + 256),
            MAX_ENTRIES,
            MAX_BATCH_BYTES,
        ) {
            if Instant::now() >= until {
                break;
            }
            let entries: Vec<_> = run
                .clone()
                .map(|i| {
                    let (record, reason) = &letters[i];
                    let (body, encoded) = &bodies[i];
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .message_attributes(REASON_ATTRIBUTE, text(reason))
                        .message_attributes(SOURCE_ATTRIBUTE, text(&record.source))
                        .message_attributes(ORIGINAL_ID_ATTRIBUTE, text(&record.item_id));
                    if *encoded {
                        entry = entry.message_attributes(ENCODING_ATTRIBUTE, text("base64"));
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
                        run.clone(),
                        out.successful.iter().map(|ok| ok.id.as_str()),
                        out.failed.iter().map(|f| (f.id.as_str(), f.code.as_str())),
                    );
                    for (i, answer) in run.clone().zip(answers) {
                        outcomes[i] = match answer {
                            Answered::Done => Ok(()),
                            Answered::Failed(code) => {
                                Err(format!("the dead-letter queue refused it: {code}"))
                            }
                            Answered::Unanswered => {
                                Err("the dead-letter queue's answer did not name it".into())
                            }
                        };
                    }
                }
                Ok(Err(e)) => {
                    let detail = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                    tracing::error!(dlq = %self.url, error = %detail, "dead-letter write failed");
                    for i in run {
                        outcomes[i] = Err("the dead-letter queue could not be written".into());
                    }
                }
                Err(_) => {
                    tracing::error!(dlq = %self.url, "dead-letter write still unanswered at the deadline");
                    for i in run {
                        outcomes[i] =
                            Err("the dead-letter queue did not answer before the deadline".into());
                    }
                }
            }
        }
        outcomes
    }
}

/// The most characters an attribute value of a dead letter carries (the batch packing allows
/// 256 bytes of attributes beside the body).
const MAX_ATTRIBUTE_CHARS: usize = 160;

/// An attribute value SQS takes whatever `value` holds: characters SQS refuses in message text
/// (control characters, U+FFFE, U+FFFF) become `?`, characters beyond U+FFFF too (some
/// SQS-compatible servers refuse them), and it is cut to [`MAX_ATTRIBUTE_CHARS`].
fn text(value: &str) -> MessageAttributeValue {
    let safe: String = value
        .chars()
        .take(MAX_ATTRIBUTE_CHARS)
        .map(|c| match c {
            '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' => c,
            _ => '?',
        })
        .collect();
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(if safe.is_empty() {
            "-".to_owned()
        } else {
            safe
        })
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

/// The body as SQS can carry it: the data itself when it is text SQS accepts, else base64.
fn body(data: &[u8]) -> (String, bool) {
    match std::str::from_utf8(data) {
        Ok(text) if text.chars().all(sqs_body_char) => (text.to_owned(), false),
        _ => (STANDARD.encode(data), true),
    }
}

/// Characters an SQS body may contain (kept to the Basic Multilingual Plane, like the envelope).
fn sqs_body_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 8: whatever a reason holds, the attribute is text SQS takes, and short.
    #[test]
    fn attribute_values_are_always_text_sqs_takes() {
        let value = text("a\u{1}b\u{FFFF}c\u{1F600}\td");
        assert_eq!(value.string_value(), Some("a?b?c?\td"));
        assert_eq!(text("").string_value(), Some("-"));
        let long = text(&"x".repeat(10_000));
        assert_eq!(long.string_value().map(str::len), Some(MAX_ATTRIBUTE_CHARS));
    }

    #[test]
    fn binary_data_is_base64_and_text_is_kept() {
        assert_eq!(body(b"plain {json}"), ("plain {json}".into(), false));
        assert_eq!(body(&[0xFF, 0x00]), ("/wA=".into(), true));
        assert_eq!(body("nul\u{0}".as_bytes()), ("bnVsAA==".into(), true));
    }
}
