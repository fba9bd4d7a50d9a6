//! The envelope: what ingest-api writes to the buffer and the drain reads back.
//!
//! # Wire format, version 1
//!
//! An envelope is one compact JSON object whose first bytes are always `{"spillway":` followed by
//! the format version:
//!
//! ```json
//! {"spillway":1,"id":"0193a3c4-…","topic":"orders","key":"customer-42","partition":3,"received_at_ms":1764211200123,
//!  "idempotency_key":"b7c1…","timestamp_ms":1764211200000,
//!  "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"rojo=00f067aa0ba902b7",
//!  "headers":[["source","web"],["sig",{"b64":"AAEC"}]],"value":"{\"total\":12}"}
//! ```
//!
//! `key`, `partition`, `idempotency_key`, `timestamp_ms` (the Kafka record's timestamp asked for),
//! `traceparent`, `tracestate` (W3C Trace Context, [`crate::trace`]) and `headers` are left out
//! when the message has none.
//!
//! * Every byte field (`key`, `value`, header values) is a JSON string when its bytes are valid
//!   UTF-8, and `{"b64":"<standard base64>"}` otherwise. Text payloads — the common case — therefore
//!   cost no base64 inflation, and arbitrary binary payloads still round-trip exactly.
//! * The output is valid UTF-8 that uses only the characters an SQS body may carry
//!   (`#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`): JSON escapes control
//!   characters, the two noncharacters SQS rejects, U+FFFE and U+FFFF, are written as `\ufffe` /
//!   `\uffff`, and characters beyond U+FFFF as surrogate-pair escapes (SQS accepts them, but some
//!   SQS-compatible servers do not). The same text is a valid Kinesis record.
//! * The format is plain JSON so that an API Gateway mapping template (direct service integration,
//!   no Lambda in the hot path) can write it too: `"value":{"b64":"$util.base64Encode($input.body)"}`.
//! * Unknown fields are ignored, so fields can be added within a version; a change that old
//!   readers would misread bumps the version, and readers reject versions they do not know.
//!
//! # Raw mode
//!
//! A message that is not a JSON object with a `spillway` member was written by some other producer.
//! In raw mode the drain forwards its bytes unchanged as the Kafka value; otherwise it is
//! undecodable. Readers accept any valid JSON form of an envelope (whitespace, member order), not
//! only the compact one written here. A message that starts like an envelope (`{`, whitespace,
//! `"spillway"`) but does not parse is always undecodable (poison), so a damaged envelope is never
//! forwarded as if it were someone's payload.
//!
//! # Size accounting
//!
//! [`Envelope::encoded_len`] is the exact length of [`Envelope::encode`]'s output, computed without
//! building it; [`crate::limits::BufferLimit`] checks it against the buffer's own limit.

mod wire;

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// The envelope format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The bytes every encoded envelope starts with.
pub const PREFIX: &[u8] = b"{\"spillway\":";

/// One Kafka record header: a UTF-8 name and arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (Kafka header keys are strings).
    pub name: String,
    /// Header value, any bytes.
    pub value: Vec<u8>,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A message accepted by spillway, on its way from the buffer to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id, time-ordered when spillway made it (UUIDv7); becomes the `spillway-id` header.
    pub id: String,
    /// Kafka topic the message is for.
    pub topic: String,
    /// Kafka key; `None` lets the partitioner spread messages.
    pub key: Option<Vec<u8>>,
    /// Kafka partition the caller asked for (REST Proxy's `partition`); `None` lets the key decide.
    pub partition: Option<i32>,
    /// Kafka value: the bytes as the caller sent them.
    pub value: Vec<u8>,
    /// The caller's Kafka headers, in order.
    pub headers: Vec<Header>,
    /// When the buffer writer accepted the message, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The caller's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// The Kafka record's timestamp the caller asked for (REST Proxy v3's `timestamp`), in
    /// milliseconds since the Unix epoch; `None` leaves it to the producer (the produce time).
    pub timestamp_ms: Option<i64>,
    /// The caller's W3C `traceparent`, or the one spillway started ([`crate::trace`]).
    pub traceparent: Option<String>,
    /// The caller's W3C `tracestate`, beside a `traceparent`.
    pub tracestate: Option<String>,
    /// Where the value is when it was too large for the buffer (issue 18): an S3 object the
    /// claim check names; `value` is then empty. On the wire, `"value":{"claim":{…}}`, which a
    /// reader that predates claims refuses as malformed (dead-letters) instead of producing an
    /// empty value.
    pub value_claim: Option<crate::claim::Claim>,
}

impl Envelope {
    /// A new envelope for `topic` with a fresh UUIDv7 id, received now.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            topic: topic.into(),
            key: None,
            partition: None,
            value: value.into(),
            headers: Vec::new(),
            received_at_ms: now_ms(),
            idempotency_key: None,
            timestamp_ms: None,
            traceparent: None,
            tracestate: None,
            value_claim: None,
        }
    }

    /// This envelope with its value in S3: the same message, the value replaced by `claim`.
    #[must_use]
    pub fn claimed(&self, claim: crate::claim::Claim) -> Self {
        Self {
            id: self.id.clone(),
            topic: self.topic.clone(),
            key: self.key.clone(),
            partition: self.partition,
            value: Vec::new(),
            headers: self.headers.clone(),
            received_at_ms: self.received_at_ms,
            idempotency_key: self.idempotency_key.clone(),
            timestamp_ms: self.timestamp_ms,
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            value_claim: Some(claim),
        }
    }

    /// The wire form (see the module docs): SQS-safe UTF-8 text, also used as Kinesis data.
    pub fn encode(&self) -> String {
        // A close upper estimate for text payloads; counting exactly first would double the work.
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 8)
            .sum();
        let key = self.key.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(self.value.len() + key + headers + 160);
        wire::write(self, &mut out);
        // The writer emits only JSON produced from `&str`s and ASCII escapes.
        String::from_utf8(out).expect("the envelope writer emits UTF-8")
    }

    /// Exact length in bytes of [`Envelope::encode`]'s output, computed without building it.
    pub fn encoded_len(&self) -> usize {
        let mut counter = wire::ByteCounter::default();
        wire::write(self, &mut counter);
        counter.0
    }
}

/// What a buffer message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
// Returned once per message and taken apart at once: boxing the envelope would cost an allocation
// per message for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'a> {
    /// A spillway envelope.
    Envelope(Envelope),
    /// A plain message from another producer (raw mode): its bytes are the Kafka value.
    Raw(&'a [u8]),
}

/// Whether messages that are not envelopes are accepted (`SPILLWAY_RAW_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RawMode {
    /// Only envelopes are accepted; anything else is undecodable (and goes to the DLQ).
    #[default]
    Reject,
    /// Messages without the envelope prefix are forwarded unchanged.
    Accept,
}

/// Why a buffer message could not be decoded. Every variant is permanent: retrying the same bytes
/// gives the same answer, so the drain dead-letters the message with this text as its reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not an envelope, and raw mode is off.
    #[error("not a spillway envelope (not a JSON object with a \"spillway\" version member) and raw mode is off (SPILLWAY_RAW_MODE=on accepts plain messages)")]
    NotAnEnvelope,
    /// An envelope of a version this build does not read.
    #[error("envelope version {found} is not supported; this build reads version {VERSION}")]
    UnsupportedVersion {
        /// The version the message claims.
        found: String,
    },
    /// Starts like an envelope but is not a valid one.
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

/// Decodes a buffer message (an SQS body or a Kinesis record's data).
///
/// An envelope is any valid JSON object whose `spillway` member is the format version: the compact
/// form this crate writes (`{"spillway":1,…}`, recognised by its prefix without a second look) and
/// the same object written by another producer with whitespace or its members in another order
/// (`{"spillway": 1, …}` from Python's `json.dumps`). A message that starts like an envelope —
/// `{`, optional whitespace, `"spillway"` — but is not a valid one is always undecodable, in raw
/// mode too: a damaged envelope is never forwarded as if it were someone's payload.
///
/// Never panics, whatever the input; memory use is bounded by a small multiple of the input size.
pub fn decode(body: &[u8], raw: RawMode) -> Result<Decoded<'_>, DecodeError> {
    // The compact form: the prefix then the version's digits. Anything else after the prefix
    // (whitespace, `null`, a string) is for the JSON probe below to judge.
    if let Some(rest) = body.strip_prefix(PREFIX) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            let version = &rest[..digits];
            if version != VERSION.to_string().as_bytes() {
                return Err(DecodeError::UnsupportedVersion {
                    found: String::from_utf8_lossy(&version[..digits.min(16)]).into_owned(),
                });
            }
            return wire::read(body).map(Decoded::Envelope);
        }
    }
    match wire::probe_version(body) {
        wire::Probe::Envelope(v) if v.as_u64() == Some(u64::from(VERSION)) => {
            wire::read(body).map(Decoded::Envelope)
        }
        // Named by its number, or by its kind: a string's text is the producer's, never quoted.
        wire::Probe::Envelope(found) => Err(DecodeError::UnsupportedVersion {
            found: match found {
                serde_json::Value::Number(n) => n.to_string().chars().take(16).collect(),
                serde_json::Value::String(_) => "(a string)".into(),
                serde_json::Value::Null => "null".into(),
                serde_json::Value::Bool(_) => "(true or false)".into(),
                serde_json::Value::Array(_) => "(an array)".into(),
                serde_json::Value::Object(_) => "(an object)".into(),
            },
        }),
        wire::Probe::Damaged => Err(DecodeError::Malformed(
            "it starts like an envelope ({\"spillway\") but is not valid JSON".into(),
        )),
        wire::Probe::NotAnEnvelope => match raw {
            RawMode::Accept => Ok(Decoded::Raw(body)),
            RawMode::Reject => Err(DecodeError::NotAnEnvelope),
        },
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
