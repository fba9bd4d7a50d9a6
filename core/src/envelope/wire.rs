//! JSON reading and writing for the envelope (format described in the parent module).

use std::fmt;
use std::io;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct, SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::ser::Formatter;

use super::{DecodeError, Envelope, Header, VERSION};

/// Writes `env` to `out`. Writing to memory or to a counter cannot fail.
pub(super) fn write<W: io::Write>(env: &Envelope, out: W) {
    let mut ser = serde_json::Serializer::with_formatter(out, SqsSafe);
    WireOut(env)
        .serialize(&mut ser)
        .expect("the envelope serialises into an infallible writer");
}

/// Parses a whole envelope (prefix and version already checked by the caller).
pub(super) fn read(body: &[u8]) -> Result<Envelope, DecodeError> {
    let wire: WireIn =
        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(describe(&e)))?;
    if wire.id.is_empty() {
        return Err(DecodeError::Malformed("`id` is empty".into()));
    }
    if wire.topic.is_empty() {
        return Err(DecodeError::Malformed("`topic` is empty".into()));
    }
    let ValueIn(value, value_claim) = wire.value;
    if let Some(claim) = &value_claim {
        claim
            .validate()
            .map_err(|e| DecodeError::Malformed(format!("`value`: {e}")))?;
    }
    Ok(Envelope {
        id: wire.id,
        topic: wire.topic,
        key: wire.key.map(|k| k.0),
        partition: wire.partition,
        value,
        headers: wire
            .headers
            .into_iter()
            .map(|(name, value)| Header {
                name,
                value: value.0,
            })
            .collect(),
        received_at_ms: wire.received_at_ms,
        idempotency_key: wire.idempotency_key,
        timestamp_ms: wire.timestamp_ms,
        traceparent: wire.traceparent,
        tracestate: wire.tracestate,
        value_claim,
    })
}

/// What a message that lacks the compact prefix turned out to be.
pub(super) enum Probe {
    /// A valid JSON object with a `spillway` member: the member's value.
    Envelope(serde_json::Value),
    /// Starts like an envelope (`{`, whitespace, `"spillway"`) but is not valid JSON.
    Damaged,
    /// Anything else: another producer's message.
    NotAnEnvelope,
}

/// Looks at a message that lacks the compact prefix. Only messages that start with `{` are parsed
/// (once, without keeping anything but the version), so other producers' plain text costs nothing.
pub(super) fn probe_version(body: &[u8]) -> Probe {
    #[derive(Deserialize)]
    struct Version {
        spillway: Option<serde_json::Value>,
    }
    let trimmed = body.trim_ascii_start();
    if trimmed.first() != Some(&b'{') {
        return Probe::NotAnEnvelope;
    }
    let looks_like = trimmed[1..].trim_ascii_start().starts_with(b"\"spillway\"");
    match serde_json::from_slice::<Version>(body) {
        Ok(Version {
            spillway: Some(version),
        }) => Probe::Envelope(version),
        _ if looks_like => Probe::Damaged,
        _ => Probe::NotAnEnvelope,
    }
}

/// A parse error described without quoting the message: serde_json's own text can contain
/// field values, and decode errors end up in DLQ reason attributes and logs.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let what = match e.classify() {
        Category::Syntax => "invalid JSON",
        Category::Eof => "truncated JSON",
        Category::Io => "unreadable input",
        Category::Data if text.starts_with("missing field") => {
            return text;
        }
        Category::Data
            if text.starts_with("invalid base64") || text.starts_with("a binary field") =>
        {
            return text;
        }
        Category::Data => "a field has the wrong type or value",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Counts bytes instead of storing them: [`Envelope::encoded_len`] without an allocation.
#[derive(Default)]
pub(super) struct ByteCounter(pub(super) usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// serde_json's compact output, plus `\u` escapes for the characters of valid UTF-8 text that an SQS
/// body may not carry once JSON has escaped the control characters: U+FFFE and U+FFFF. Characters
/// beyond U+FFFF are escaped as surrogate pairs too: SQS accepts them, but SQS-compatible servers
/// that check the body one UTF-16 unit at a time (fauxqs 2.4.1 does) reject them, and an envelope
/// must be accepted wherever the queue is.
struct SqsSafe;

impl Formatter for SqsSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let (mut start, mut scan) = (0, 0);
        // Every character to escape has a lead byte of 0xEF or above (never a continuation byte),
        // which is rare in most text: a fast scan finds the few places to look at.
        while let Some(offset) = bytes[scan..].iter().position(|&b| b >= 0xEF) {
            let at = scan + offset;
            let Some(ch) = fragment[at..].chars().next() else {
                break;
            };
            scan = at + ch.len_utf8();
            if matches!(ch, '\u{FFFE}' | '\u{FFFF}') || ch.len_utf8() == 4 {
                writer.write_all(&bytes[start..at])?;
                for unit in ch.encode_utf16(&mut [0; 2]) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = scan;
            }
        }
        writer.write_all(&bytes[start..])
    }
}

struct WireOut<'a>(&'a Envelope);

impl Serialize for WireOut<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut s = ser.serialize_struct("Envelope", 12)?;
        s.serialize_field("spillway", &VERSION)?;
        s.serialize_field("id", &e.id)?;
        s.serialize_field("topic", &e.topic)?;
        if let Some(key) = &e.key {
            s.serialize_field("key", &WireBytes(key))?;
        }
        if let Some(partition) = e.partition {
            s.serialize_field("partition", &partition)?;
        }
        s.serialize_field("received_at_ms", &e.received_at_ms)?;
        if let Some(idempotency_key) = &e.idempotency_key {
            s.serialize_field("idempotency_key", idempotency_key)?;
        }
        if let Some(timestamp_ms) = e.timestamp_ms {
            s.serialize_field("timestamp_ms", &timestamp_ms)?;
        }
        if let Some(traceparent) = &e.traceparent {
            s.serialize_field("traceparent", traceparent)?;
        }
        if let Some(tracestate) = &e.tracestate {
            s.serialize_field("tracestate", tracestate)?;
        }
        if !e.headers.is_empty() {
            s.serialize_field("headers", &WireHeaders(&e.headers))?;
        }
        match &e.value_claim {
            Some(claim) => s.serialize_field("value", &WireClaim(claim))?,
            None => s.serialize_field("value", &WireBytes(&e.value))?,
        }
        s.end()
    }
}

/// A value kept in S3: `{"claim": {…}}`.
struct WireClaim<'a>(&'a crate::claim::Claim);

impl Serialize for WireClaim<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(Some(1))?;
        map.serialize_entry("claim", self.0)?;
        map.end()
    }
}

/// Bytes as a JSON string when they are UTF-8, else as `{"b64": "..."}`.
struct WireBytes<'a>(&'a [u8]);

impl Serialize for WireBytes<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if let Ok(text) = std::str::from_utf8(self.0) {
            ser.serialize_str(text)
        } else {
            let mut map = ser.serialize_map(Some(1))?;
            map.serialize_entry("b64", &Base64Str(self.0))?;
            map.end()
        }
    }
}

/// Streams base64 into the output without an intermediate `String`.
struct Base64Str<'a>(&'a [u8]);

impl Serialize for Base64Str<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

struct WireHeaders<'a>(&'a [Header]);

impl Serialize for WireHeaders<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for header in self.0 {
            seq.serialize_element(&WireHeader(header))?;
        }
        seq.end()
    }
}

struct WireHeader<'a>(&'a Header);

impl Serialize for WireHeader<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut pair = ser.serialize_tuple(2)?;
        pair.serialize_element(&self.0.name)?;
        pair.serialize_element(&WireBytes(&self.0.value))?;
        pair.end()
    }
}

#[derive(Deserialize)]
struct WireIn {
    #[allow(dead_code)]
    // checked by `decode` before parsing; required here so it cannot be omitted
    spillway: u32,
    id: String,
    topic: String,
    #[serde(default)]
    key: Option<BytesIn>,
    #[serde(default)]
    partition: Option<i32>,
    received_at_ms: u64,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    tracestate: Option<String>,
    #[serde(default)]
    headers: Vec<(String, BytesIn)>,
    value: ValueIn,
}

/// Reads what [`WireBytes`] writes.
struct BytesIn(Vec<u8>);

impl<'de> Deserialize<'de> for BytesIn {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(BytesInVisitor { claims: false })
            .map(|ValueIn(bytes, _)| BytesIn(bytes))
    }
}

/// Reads the `value`: what [`WireBytes`] writes, or what [`WireClaim`] writes.
struct ValueIn(Vec<u8>, Option<crate::claim::Claim>);

impl<'de> Deserialize<'de> for ValueIn {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(BytesInVisitor { claims: true })
    }
}

/// `claims`: whether `{"claim": {…}}` is read too (the value only).
struct BytesInVisitor {
    claims: bool,
}

const EXACTLY_B64: &str = r#"a binary field must be exactly {"b64": "<base64>"}"#;

impl<'de> Visitor<'de> for BytesInVisitor {
    type Value = ValueIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string or {"b64": "<base64>"}"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueIn, E> {
        Ok(ValueIn(v.as_bytes().to_vec(), None))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<ValueIn, E> {
        Ok(ValueIn(v.into_bytes(), None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueIn, A::Error> {
        let mut read = None;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if read.is_some() {
                return Err(de::Error::custom(EXACTLY_B64));
            }
            read = Some(match name.as_ref() {
                "b64" => {
                    let text: std::borrow::Cow<'de, str> = map.next_value()?;
                    let decoded = STANDARD.decode(text.as_bytes()).map_err(|e| {
                        de::Error::custom(format_args!("invalid base64 in a binary field: {e}"))
                    })?;
                    ValueIn(decoded, None)
                }
                "claim" if self.claims => ValueIn(Vec::new(), Some(map.next_value()?)),
                _ => return Err(de::Error::custom(EXACTLY_B64)),
            });
        }
        read.ok_or_else(|| de::Error::custom(EXACTLY_B64))
    }
}
