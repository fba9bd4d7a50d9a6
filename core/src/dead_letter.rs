//! The dead-letter contract: what a message in spillway's SQS dead-letter queue carries. The
//! drain writes letters by it, `spillway replay` reads them by it; neither has a copy of its own.
//!
//! A DLQ holds three kinds of message:
//!
//! * **Letters the drain wrote** (poison, delivery rule 6): the record's data as the body —
//!   as it was when it is text SQS takes, else base64 (`spillway-body-encoding: base64`), else,
//!   when the letter would not fit the queue, a [`Claim`] naming an S3 object
//!   (`spillway-body-encoding: s3-claim`) — and the attributes [`REASON_ATTRIBUTE`] (why, never
//!   what), [`SOURCE_ATTRIBUTE`] (the queue or stream) and [`ORIGINAL_ID_ATTRIBUTE`].
//! * **Messages SQS moved** after `maxReceiveCount` receives: the message as it was, with no
//!   spillway attributes; its id is its SQS message id, which a redrive keeps.
//! * **Kinesis on-failure records** Lambda wrote when it gave up on a batch: no data, only where
//!   the batch was ([`BatchInfo`]); replay reads the range back from the stream.
//!
//! Attribute values are always text SQS accepts and never carry message content (docs/ARCHITECTURE.md, "Dead letters and claim checks").

use std::cmp::Ordering;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use crate::claim::Claim;

/// Attribute naming why the record was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "spillway-reason";
/// Attribute naming the queue or stream the record came from.
pub const SOURCE_ATTRIBUTE: &str = "spillway-source";
/// Attribute holding the record's SQS message id or Kinesis sequence number.
pub const ORIGINAL_ID_ATTRIBUTE: &str = "spillway-original-id";
/// Attribute saying how the body holds the data, when not as it is ([`Encoding`]).
pub const ENCODING_ATTRIBUTE: &str = "spillway-body-encoding";

/// The largest letter a dead-letter queue takes: body and attributes together (SQS's default
/// `MaximumMessageSize`, which infra leaves the DLQ at). Letters past it become claim checks.
pub const MAX_LETTER_BYTES: usize = 262_144;
/// The most characters an attribute value carries.
pub const MAX_ATTRIBUTE_CHARS: usize = 160;
/// The key prefix of dead letters kept in S3.
pub const CLAIM_PREFIX: &str = "dead-letters/";

/// How a letter's body holds the record's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The data itself (text SQS accepts).
    Text,
    /// The base64 of the data (binary Kinesis data, or text SQS refuses).
    Base64,
    /// A [`Claim`]: the data is in S3.
    Claim,
}

impl Encoding {
    /// The value of [`ENCODING_ATTRIBUTE`]; `None` for [`Encoding::Text`], which sets none.
    pub fn attribute(self) -> Option<&'static str> {
        match self {
            Encoding::Text => None,
            Encoding::Base64 => Some("base64"),
            Encoding::Claim => Some("s3-claim"),
        }
    }

    /// The encoding [`ENCODING_ATTRIBUTE`]'s value names.
    pub fn from_attribute(value: Option<&str>) -> Result<Self, String> {
        match value {
            None => Ok(Encoding::Text),
            Some("base64") => Ok(Encoding::Base64),
            Some("s3-claim") => Ok(Encoding::Claim),
            Some(_) => Err(format!(
                "{ENCODING_ATTRIBUTE} names an encoding this build does not know (base64, s3-claim)"
            )),
        }
    }
}

/// `data` as a letter's body: as it is when it is text SQS accepts, else base64.
pub fn encode_body(data: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(data) {
        Ok(text) if text.chars().all(sqs_text_char) => (text.to_owned(), Encoding::Text),
        _ => (STANDARD.encode(data), Encoding::Base64),
    }
}

/// Characters SQS accepts in bodies and attribute values (kept to the Basic Multilingual Plane,
/// like the envelope: some SQS-compatible servers refuse characters beyond it).
fn sqs_text_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
}

/// `value` as an attribute value SQS takes whatever it holds: characters SQS refuses become `?`,
/// it is cut to [`MAX_ATTRIBUTE_CHARS`], and an empty value becomes `-` (SQS refuses empty ones).
pub fn attribute_text(value: &str) -> String {
    let safe: String = value
        .chars()
        .take(MAX_ATTRIBUTE_CHARS)
        .map(|c| if sqs_text_char(c) { c } else { '?' })
        .collect();
    if safe.is_empty() {
        "-".to_owned()
    } else {
        safe
    }
}

/// The bytes SQS counts for a letter: the body, and each attribute's name, data type (`String`)
/// and value.
pub fn letter_bytes<N: AsRef<str>, V: AsRef<str>>(
    body: &str,
    attributes: impl IntoIterator<Item = (N, V)>,
) -> usize {
    body.len()
        + attributes
            .into_iter()
            .map(|(name, value)| name.as_ref().len() + "String".len() + value.as_ref().len())
            .sum::<usize>()
}

/// What a dead-letter message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The record's data.
    Data(Vec<u8>),
    /// The record's data is in S3.
    Claim(Claim),
    /// A Kinesis on-failure record: only where the batch was.
    Pointer(BatchInfo),
}

/// Reads a letter's body. `encoding` is the [`ENCODING_ATTRIBUTE`] value; `drain_written` whether
/// it has a [`REASON_ATTRIBUTE`]. Only a message without one (Lambda wrote it) is read as a
/// Kinesis on-failure record: a record whose data looks like one is still data.
pub fn read_body(
    body: &str,
    encoding: Option<&str>,
    drain_written: bool,
) -> Result<Content, String> {
    match Encoding::from_attribute(encoding)? {
        Encoding::Text => Ok(match (!drain_written).then(|| batch_info(body)).flatten() {
            Some(info) => Content::Pointer(info),
            None => Content::Data(body.as_bytes().to_vec()),
        }),
        Encoding::Base64 => STANDARD
            .decode(body)
            .map(Content::Data)
            .map_err(|e| format!("the body is marked base64 but is not: {e}")),
        Encoding::Claim => Claim::parse(body).map(Content::Claim),
    }
}

/// The part of Lambda's on-failure record that says where a Kinesis batch was.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    /// The shard.
    pub shard_id: String,
    /// The batch's first sequence number.
    pub start_sequence_number: String,
    /// The batch's last sequence number.
    pub end_sequence_number: String,
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    pub stream_arn: String,
    /// Records in the batch.
    #[serde(default)]
    pub batch_size: Option<u64>,
}

#[derive(Deserialize)]
struct OnFailure {
    #[serde(rename = "KinesisBatchInfo")]
    batch: BatchInfo,
}

/// The batch an on-failure record points to, or `None` when `body` is not one.
pub fn batch_info(body: &str) -> Option<BatchInfo> {
    if !body.trim_start().starts_with('{') || !body.contains("KinesisBatchInfo") {
        return None;
    }
    serde_json::from_str::<OnFailure>(body)
        .ok()
        .map(|f| f.batch)
}

/// The stream name in a stream ARN.
pub fn stream_name(arn: &str) -> Option<&str> {
    arn.rsplit_once(":stream/").map(|(_, name)| name)
}

/// Orders Kinesis sequence numbers: decimal strings of up to 128 digits, too long for an integer.
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 8: whatever a reason holds, the attribute is text SQS takes, and short.
    #[test]
    fn attribute_values_are_always_text_sqs_takes() {
        assert_eq!(attribute_text("a\u{1}b\u{FFFF}c\u{1F600}\td"), "a?b?c?\td");
        assert_eq!(attribute_text(""), "-");
        assert_eq!(
            attribute_text(&"x".repeat(10_000)).len(),
            MAX_ATTRIBUTE_CHARS
        );
    }

    #[test]
    fn binary_data_is_base64_and_text_is_kept() {
        assert_eq!(
            encode_body(b"plain {json}"),
            ("plain {json}".into(), Encoding::Text)
        );
        assert_eq!(
            encode_body(&[0xFF, 0x00]),
            ("/wA=".into(), Encoding::Base64)
        );
        assert_eq!(
            encode_body("nul\u{0}".as_bytes()),
            ("bnVsAA==".into(), Encoding::Base64)
        );
    }

    #[test]
    fn every_encoding_reads_back_as_it_was_written() {
        for data in [b"text".to_vec(), vec![0xFF, 0, 1], Vec::new()] {
            let (body, encoding) = encode_body(&data);
            assert_eq!(
                read_body(&body, encoding.attribute(), true),
                Ok(Content::Data(data))
            );
        }
        let claim = Claim::new("b", "k", b"x");
        assert_eq!(
            read_body(&claim.encode(), Encoding::Claim.attribute(), true),
            Ok(Content::Claim(claim))
        );
        assert!(read_body("x", Some("rot13"), true).is_err());
        assert!(read_body("%%%", Some("base64"), true).is_err());
    }

    /// Data that looks like an on-failure record is data when the drain wrote the letter: a
    /// caller cannot make replay read (and count) a range of someone else's stream.
    #[test]
    fn only_lambda_letters_are_read_as_on_failure_records() {
        let body = r#"{"KinesisBatchInfo":{"shardId":"s","startSequenceNumber":"1","endSequenceNumber":"2","streamArn":"arn:aws:kinesis:r:1:stream/x","batchSize":2}}"#;
        assert!(matches!(
            read_body(body, None, false),
            Ok(Content::Pointer(_))
        ));
        assert_eq!(
            read_body(body, None, true),
            Ok(Content::Data(body.as_bytes().to_vec()))
        );
    }

    #[test]
    fn letter_size_counts_attributes() {
        assert_eq!(letter_bytes("abc", [("n", "v")]), 3 + 1 + 6 + 1);
    }

    #[test]
    fn lambda_on_failure_records_are_recognised() {
        let body = r#"{"requestContext":{"requestId":"r","functionArn":"arn:aws:lambda:us-east-1:123456789012:function:drain","condition":"RetryAttemptsExhausted","approximateInvokeCount":3},"version":"1.0","timestamp":"2026-11-27T00:38:06.021Z","KinesisBatchInfo":{"shardId":"shardId-000000000001","startSequenceNumber":"49601189658422359378836298521827638475320189012309704722","endSequenceNumber":"49601189658422359378836298522902373528957594348623495186","approximateArrivalOfFirstRecord":"2026-11-27T00:38:04.835Z","approximateArrivalOfLastRecord":"2026-11-27T00:38:05.580Z","batchSize":500,"streamArn":"arn:aws:kinesis:us-east-1:123456789012:stream/spillway-stream"}}"#;
        let info = batch_info(body).expect("an on-failure record");
        assert_eq!(info.shard_id, "shardId-000000000001");
        assert_eq!(info.batch_size, Some(500));
        assert_eq!(stream_name(&info.stream_arn), Some("spillway-stream"));
        assert_eq!(batch_info(r#"{"spillway":1,"id":"x"}"#), None);
        assert_eq!(batch_info("KinesisBatchInfo as text"), None);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequence("9", "10"), Ordering::Less);
        assert_eq!(compare_sequence("010", "10"), Ordering::Equal);
        assert_eq!(
            compare_sequence(
                "49601189658422359378836298522902373528957594348623495186",
                "49601189658422359378836298521827638475320189012309704722"
            ),
            Ordering::Greater
        );
        assert_eq!(stream_name("arn:aws:kinesis:r:1:stream/s-1"), Some("s-1"));
    }
}
