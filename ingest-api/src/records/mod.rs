//! Request bodies and the envelopes made from them: one raw message, a REST Proxy v2 batch, or
//! REST Proxy v3 records ([`v3`]).

pub mod v3;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spillway_core::envelope::{Envelope, Header};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Request header that carries the Kafka key of a single message (wins over `?key=`).
pub const KEY_HEADER: &str = "kafka-key";
/// Prefix of request headers that become Kafka headers: `Kafka-Header-Source: web` → `source: web`.
pub const KAFKA_HEADER_PREFIX: &str = "kafka-header-";
/// The idempotency header.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Namespace of ids derived from idempotency keys (a fixed, random UUID).
const IDEMPOTENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1f_0a4e_5b0d_4f7e_9a57_2d5e_8f31_c2a9);

/// Query parameters of the single-message endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// The Kafka key, percent-encoded, so any bytes can be given. The `Kafka-Key` header takes
    /// precedence.
    #[param(value_type = Option<String>)]
    pub key: Option<Vec<u8>>,
}

impl MessageQuery {
    /// Reads `key` from a raw query string. Decoded to bytes, not text, so that a binary key is
    /// kept exactly instead of having its invalid UTF-8 replaced. Unknown parameters are ignored.
    pub fn parse(query: Option<&str>) -> Self {
        let key = query.unwrap_or("").split('&').find_map(|pair| {
            let value = pair.strip_prefix("key=")?;
            Some(
                percent_encoding::percent_decode_str(&value.replace('+', " ")).collect::<Vec<u8>>(),
            )
        });
        Self { key }
    }
}

/// One raw message: the body is the value; key, headers and idempotency key come from the request.
pub fn single(
    topic: &str,
    query: &MessageQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Envelope, ApiError> {
    let mut env = Envelope::new(topic, body);
    env.key = headers
        .get(KEY_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| query.key.clone());
    env.headers = headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix(KAFKA_HEADER_PREFIX)?;
            Some(reserved_check(name).map(|()| Header::new(name, value.as_bytes())))
        })
        .collect::<Result<_, String>>()
        .map_err(ApiError::BadRequest)?;
    if let Some(value) = headers.get(IDEMPOTENCY_HEADER) {
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY
                    && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ))
            })?;
        set_idempotency_key(&mut env, key);
    }
    Ok(env)
}

/// Rule 8: header names the pipeline sets (`spillway-*`, the trace context) are refused, so no
/// caller can forge the id or receive time readers deduplicate and measure by.
fn reserved_check(name: &str) -> Result<(), String> {
    if spillway_core::headers::is_reserved(name) {
        Err(format!(
            "Kafka header `{}` is reserved for the pipeline (spillway-*, x-amzn-trace-id, traceparent, tracestate are set by spillway); rename it",
            name.chars().take(100).collect::<String>()
        ))
    } else {
        Ok(())
    }
}

/// Retries of one request carry the same idempotency key; giving them the same id makes them
/// duplicates a consumer recognises by `spillway-id` (and a FIFO queue drops by deduplication id).
fn set_idempotency_key(env: &mut Envelope, key: &str) {
    let name = format!("{}\n{key}", env.topic);
    env.id = uuid::Uuid::new_v5(&IDEMPOTENT_ID_NAMESPACE, name.as_bytes()).to_string();
    env.idempotency_key = Some(key.to_owned());
}

/// How a REST Proxy batch encodes keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddedFormat {
    /// `application/vnd.kafka.json.v2+json` and `application/json`: any JSON, produced as its JSON text.
    Json,
    /// `application/vnd.kafka.binary.v2+json`: base64 strings, produced as the decoded bytes.
    Binary,
}

/// Content types `POST /topics/{topic}` reads.
pub const BATCH_CONTENT_TYPES: &str =
    "application/vnd.kafka.json.v2+json, application/vnd.kafka.binary.v2+json or application/json";

impl EmbeddedFormat {
    /// The format named by a `Content-Type` header value.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let got = content_type.unwrap_or("");
        let essence = got
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/vnd.kafka.json.v2+json" | "application/json" => Ok(EmbeddedFormat::Json),
            "application/vnd.kafka.binary.v2+json" => Ok(EmbeddedFormat::Binary),
            _ => Err(ApiError::UnsupportedMediaType {
                got: if got.is_empty() {
                    "(none)".into()
                } else {
                    got.chars().take(100).collect()
                },
                accepted: BATCH_CONTENT_TYPES,
            }),
        }
    }
}

/// A REST Proxy v2 produce request.
#[derive(Debug, ToSchema)]
pub struct ProduceRequest {
    /// The records, produced in this order.
    pub records: Vec<ProduceRecord>,
}

/// One record of a produce request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProduceRecord {
    /// The key: any JSON (json formats) or a base64 string (binary format); absent or null for none.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub key: Option<Box<RawValue>>,
    /// The value: any JSON (json formats) or a base64 string (binary format).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<Box<RawValue>>,
    /// Kafka partition to write to; absent for the partitioner's choice.
    #[serde(default)]
    pub partition: Option<i32>,
    /// Kafka headers: values are strings (json formats) or base64 (binary format).
    #[serde(default)]
    pub headers: Vec<RecordHeader>,
}

/// A Kafka header of a produce request record.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RecordHeader {
    /// Header name.
    pub name: String,
    /// Header value; null for an empty one.
    pub value: Option<String>,
}

/// The answer to a produce request: one entry per record, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProduceResponse {
    /// Always null: spillway keeps no schemas.
    pub key_schema_id: Option<i32>,
    /// Always null: spillway keeps no schemas.
    pub value_schema_id: Option<i32>,
    /// One per record, in request order.
    pub offsets: Vec<RecordOffset>,
}

/// What became of one record. Unlike REST Proxy, `offset` is always null: the record is in the
/// buffer, not yet in Kafka, so its offset is not known when the request is answered. `id` is
/// the `spillway-id` header the Kafka record will carry.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordOffset {
    /// The partition asked for, if any.
    pub partition: Option<i32>,
    /// Always null (see above).
    pub offset: Option<i64>,
    /// The message id, when the record was accepted.
    pub id: Option<String>,
    /// Why the record was not accepted: REST Proxy-style code.
    pub error_code: Option<u32>,
    /// Why the record was not accepted, in words.
    pub error: Option<String>,
}

/// Envelopes from a produce request; any malformed record fails the whole request.
///
/// Memory stays a small multiple of the body: parsing stops at the first record past
/// `max_records` (a 10 MB body of `{}` records costs no more than `max_records` of them), and
/// embedded JSON keys and values are kept as their text, never as a tree of values.
pub fn batch(
    topic: &str,
    format: EmbeddedFormat,
    body: &[u8],
    max_records: usize,
) -> Result<Vec<Envelope>, ApiError> {
    let records = match bounded_list::<ProduceRecord>(body, "records", max_records, false) {
        Ok(records) => records,
        Err(None) => return Err(ApiError::TooManyRecords { max: max_records }),
        Err(Some(e)) => {
            return Err(ApiError::BadRequest(format!(
                "the body is not a valid produce request: {e}"
            )))
        }
    };
    if records.is_empty() {
        return Err(ApiError::BadRequest(
            "`records` is empty; send at least one record".into(),
        ));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            envelope(topic, format, record)
                .map_err(|e| ApiError::BadRequest(format!("record {i}: {e}")))
        })
        .collect()
}

/// The elements of the array in `{"<member>": [...]}`, read one by one and stopping past `max`
/// (so that memory stays a small multiple of `max` elements whatever the body's length); other
/// members are skipped, or refused when `strict`. `Err(None)`: more than `max` elements.
pub(crate) fn bounded_list<T: de::DeserializeOwned>(
    body: &[u8],
    member: &'static str,
    max: usize,
    strict: bool,
) -> Result<Vec<T>, Option<serde_json::Error>> {
    let too_many = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    ListSeed {
        member,
        max,
        strict,
        too_many: &too_many,
        element: std::marker::PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|list| de.end().map(|()| list))
    .map_err(|e| (!too_many.get()).then_some(e))
}

/// Reads `{"<member>": [...]}` (the object) or, nested, the array itself.
struct ListSeed<'a, T> {
    member: &'static str,
    max: usize,
    strict: bool,
    too_many: &'a std::cell::Cell<bool>,
    element: std::marker::PhantomData<T>,
}

impl<T> ListSeed<'_, T> {
    fn array(&self) -> ArraySeed<'_, T> {
        ArraySeed(self)
    }
}

impl<'de, T: de::DeserializeOwned> DeserializeSeed<'de> for ListSeed<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, T: de::DeserializeOwned> Visitor<'de> for ListSeed<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, r#"an object {{"{}": [...]}}"#, self.member)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut list = None;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == self.member {
                if list.is_some() {
                    return Err(de::Error::duplicate_field(self.member));
                }
                list = Some(map.next_value_seed(self.array())?);
            } else if self.strict {
                return Err(de::Error::custom(format_args!(
                    "unknown member `{}`",
                    name.chars().take(40).collect::<String>()
                )));
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        list.ok_or_else(|| de::Error::missing_field(self.member))
    }
}

struct ArraySeed<'s, T>(&'s ListSeed<'s, T>);

impl<'de, T: de::DeserializeOwned> DeserializeSeed<'de> for ArraySeed<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de, T: de::DeserializeOwned> Visitor<'de> for ArraySeed<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array of {}", self.0.member)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(element) = seq.next_element::<T>()? {
            if list.len() == self.0.max {
                self.0.too_many.set(true);
                return Err(de::Error::custom(format_args!(
                    "too many {}",
                    self.0.member
                )));
            }
            list.push(element);
        }
        Ok(list)
    }
}

fn envelope(
    topic: &str,
    format: EmbeddedFormat,
    record: ProduceRecord,
) -> Result<Envelope, String> {
    let value = match record.value.as_deref().map(RawValue::get) {
        None | Some("null") => {
            return Err("`value` is required (null values are not supported)".into())
        }
        Some(v) => embedded(format, v, "value")?,
    };
    let mut env = Envelope::new(topic, value);
    env.key = match record.key.as_deref().map(RawValue::get) {
        None | Some("null") => None,
        Some(k) => Some(embedded(format, k, "key")?),
    };
    env.partition = match record.partition {
        Some(p) if p < 0 => return Err(format!("`partition` must be 0 or more, not {p}")),
        p => p,
    };
    env.headers = record
        .headers
        .into_iter()
        .map(|h| {
            reserved_check(&h.name)?;
            let value = match (format, h.value) {
                (_, None) => Vec::new(),
                (EmbeddedFormat::Json, Some(v)) => v.into_bytes(),
                (EmbeddedFormat::Binary, Some(v)) => STANDARD
                    .decode(v.as_bytes())
                    .map_err(|e| format!("header `{}` is not valid base64: {e}", h.name))?,
            };
            Ok(Header::new(h.name, value))
        })
        .collect::<Result<_, String>>()?;
    Ok(env)
}

/// An embedded key or value from its JSON text: in the JSON formats, the text without the
/// whitespace between tokens (members keep the caller's order); in the binary format, the bytes
/// of a base64 string.
fn embedded(format: EmbeddedFormat, json: &str, field: &str) -> Result<Vec<u8>, String> {
    match format {
        EmbeddedFormat::Json => Ok(compact(json)),
        EmbeddedFormat::Binary => match serde_json::from_str::<std::borrow::Cow<'_, str>>(json) {
            Ok(s) => STANDARD
                .decode(s.as_bytes())
                .map_err(|e| format!("`{field}` is not valid base64: {e}")),
            Err(_) => Err(format!(
                "`{field}` must be a base64 string in the binary format"
            )),
        },
    }
}

/// Valid JSON text without the whitespace outside its strings.
fn compact(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_is_compacted_outside_strings_only() {
        assert_eq!(
            compact("{ \"a b\" : [1, 2],\n \"c\":\"x \\\" y\" }"),
            br#"{"a b":[1,2],"c":"x \" y"}"#.to_vec()
        );
    }
}
