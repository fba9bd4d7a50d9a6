//! Confluent REST Proxy v3 produce bodies: one record (`…/records`, several concatenated in
//! streaming mode) or a batch (`…/records:batch`), and the answers to them.
//!
//! A record is `{partition_id?, headers?: [{name, value (base64)}], key?: {type, data},
//! value: {type, data}, timestamp?}`. Types are `BINARY` (data: a base64 string; the default when
//! `type` is left out, as REST Proxy does without a schema), `JSON` (data: any JSON, produced as
//! its compact text) and `STRING` (data: a string, produced as its UTF-8 bytes). spillway keeps
//! no Schema Registry: `AVRO`, `JSONSCHEMA`, `PROTOBUF` and the schema fields (`subject`,
//! `schema_id`, …) are refused with a 400 that says so, as Confluent Cloud does. A record's
//! problems are its own: in a stream or a batch the other records still go.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spillway_core::envelope::{Envelope, Header};
use utoipa::ToSchema;

use super::{compact, reserved_check};
use crate::error::ApiError;

/// How far ahead of now a record's timestamp may be: Kafka's default
/// `log.message.timestamp.after.max.ms` (since 4.0), past which brokers refuse the record.
const MAX_TIMESTAMP_AHEAD_MS: i64 = 3_600_000;

/// Longest client-supplied batch entry id (REST Proxy's limit).
pub const MAX_ENTRY_ID: usize = 80;

/// One record of a v3 produce request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct V3Record {
    /// The batch entry's id (`records:batch` only): 1 to 80 of `a-z A-Z 0-9 _ -`, unique in
    /// the request.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub id: Option<IgnoredAny>,
    /// Kafka partition, 0 to 2,147,483,647; absent or null for the partitioner's choice.
    #[serde(default)]
    #[schema(value_type = Option<i32>)]
    pub partition_id: Option<i64>,
    /// Kafka headers; values are base64 (null for an empty value).
    #[serde(default)]
    pub headers: Option<Vec<V3Header>>,
    /// The key; absent, or `data` null, for none.
    #[serde(default)]
    pub key: Option<V3Data>,
    /// The value (required: null values are not supported).
    #[serde(default)]
    pub value: Option<V3Data>,
    /// The record's timestamp, RFC 3339 (`2021-02-05T19:14:42Z`); absent for the produce time.
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A Kafka header of a v3 record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct V3Header {
    /// Header name.
    pub name: String,
    /// Header value, base64; null for an empty one.
    #[serde(default)]
    pub value: Option<String>,
}

/// A v3 key or value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct V3Data {
    /// `BINARY` (default), `JSON` or `STRING`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The data: a base64 string (`BINARY`), any JSON (`JSON`), a string (`STRING`).
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<Box<RawValue>>,
    /// Refused: spillway keeps no Schema Registry.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub subject: Option<IgnoredAny>,
    /// Refused: spillway keeps no Schema Registry.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub subject_name_strategy: Option<IgnoredAny>,
    /// Refused: spillway keeps no Schema Registry.
    #[serde(default)]
    #[schema(value_type = Option<i32>)]
    pub schema_id: Option<IgnoredAny>,
    /// Refused: spillway keeps no Schema Registry.
    #[serde(default)]
    #[schema(value_type = Option<i32>)]
    pub schema_version: Option<IgnoredAny>,
    /// Refused: spillway keeps no Schema Registry.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub schema: Option<IgnoredAny>,
}

/// The type and size of a key or value as the answer names them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct V3Size {
    /// `BINARY`, `JSON` or `STRING`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Bytes produced.
    pub size: usize,
}

/// A record accepted by the buffer, as REST Proxy v3 answers a delivered one. `partition_id`
/// is the partition asked for (null when the partitioner chooses) and `offset` is always null:
/// the record is in the buffer, not yet in Kafka. `spillway_id` is the `spillway-id` header the
/// Kafka record will carry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct V3Delivery {
    /// 200 (not in a batch's `successes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    /// The batch entry's id (in a batch's `successes` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The cluster id of the path.
    pub cluster_id: String,
    /// The topic.
    pub topic_name: String,
    /// The partition asked for; null when the partitioner chooses.
    pub partition_id: Option<i32>,
    /// Always null: not known until the drain delivers the record.
    pub offset: Option<i64>,
    /// The timestamp asked for; null for the produce time.
    pub timestamp: Option<String>,
    /// The key's type and size; absent without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<V3Size>,
    /// The value's type and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<V3Size>,
    /// The message id: the `spillway-id` header of the Kafka record.
    pub spillway_id: String,
}

/// A record that was not accepted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct V3Failure {
    /// The batch entry's id (in a batch's `failures` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HTTP status × 100 plus a case number, as the other endpoints' errors.
    pub error_code: u32,
    /// What went wrong, and the limit where there is one.
    pub message: String,
}

/// The answer to `records:batch`: every entry in one of the two lists, each in request order.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct V3BatchResponse {
    /// Entries the buffer holds.
    pub successes: Vec<V3Delivery>,
    /// Entries it does not.
    pub failures: Vec<V3Failure>,
}

/// A `records:batch` request.
#[derive(Debug, ToSchema)]
pub struct V3BatchRequest {
    /// The records, each with its `id`.
    pub entries: Vec<V3Record>,
}

/// A parsed record: its envelope and what the answer says of it.
#[derive(Debug)]
pub struct Parsed {
    /// The envelope to write.
    pub envelope: Envelope,
    /// The key's type and size.
    pub key: Option<V3Size>,
    /// The value's type and size.
    pub value: V3Size,
    /// The timestamp as asked for.
    pub timestamp: Option<String>,
}

/// The envelope of one record's JSON text (`batch`: whether an `id` member is allowed).
pub fn record(topic: &str, json: &str, batch: bool) -> Result<Parsed, ApiError> {
    // serde would also read a struct from an array of its fields.
    if !json.trim_start().starts_with('{') {
        return Err(ApiError::BadRequest(
            "not a valid produce record: a record is a JSON object {\"partition_id\", \"headers\", \"key\", \"value\", \"timestamp\"}".into(),
        ));
    }
    let record: V3Record = serde_json::from_str(json).map_err(|e| {
        ApiError::BadRequest(format!(
            "not a valid produce record: {}; a record is {{\"partition_id\", \"headers\", \"key\", \"value\", \"timestamp\"}}",
            describe(&e)
        ))
    })?;
    if record.id.is_some() && !batch {
        return Err(ApiError::BadRequest(
            "`id` belongs to entries of records:batch, not to a single record".into(),
        ));
    }
    let Some(value) = record.value else {
        return Err(ApiError::BadRequest(
            "`value` is required (null values are not supported)".into(),
        ));
    };
    let Some((value_bytes, value_kind)) = embedded(&value, "value")? else {
        return Err(ApiError::BadRequest(
            "`value.data` is required (null values are not supported)".into(),
        ));
    };
    let key = match &record.key {
        Some(data) => embedded(data, "key")?,
        None => None,
    };
    let mut envelope = Envelope::new(topic, value_bytes);
    let value = V3Size {
        kind: value_kind,
        size: envelope.value.len(),
    };
    let key = key.map(|(bytes, kind)| {
        let size = V3Size {
            kind,
            size: bytes.len(),
        };
        envelope.key = Some(bytes);
        size
    });
    envelope.partition = match record.partition_id {
        None => None,
        Some(p) => Some(i32::try_from(p).ok().filter(|p| *p >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`partition_id` must be 0 or more, at most {}, not {p}",
                i32::MAX
            ))
        })?),
    };
    envelope.headers = record
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|h| {
            reserved_check(&h.name).map_err(ApiError::BadRequest)?;
            let value = match h.value {
                None => Vec::new(),
                Some(v) => STANDARD.decode(v.as_bytes()).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "header `{}` is not valid base64: {e}",
                        h.name.chars().take(100).collect::<String>()
                    ))
                })?,
            };
            Ok(Header::new(h.name, value))
        })
        .collect::<Result<_, ApiError>>()?;
    if let Some(text) = &record.timestamp {
        envelope.timestamp_ms = Some(timestamp_ms(text)?);
    }
    Ok(Parsed {
        envelope,
        key,
        value,
        timestamp: record.timestamp,
    })
}

/// Milliseconds since the Unix epoch of an RFC 3339 date-time, 1970 or later (Kafka's range).
fn timestamp_ms(text: &str) -> Result<i64, ApiError> {
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "`timestamp` is not an RFC 3339 date-time such as 2021-02-05T19:14:42Z: {e}"
        ))
    })?;
    let ms = at.timestamp_millis();
    let now = i64::try_from(spillway_core::envelope::now_ms()).unwrap_or(i64::MAX);
    if ms > now.saturating_add(MAX_TIMESTAMP_AHEAD_MS) {
        return Err(ApiError::BadRequest(
            "`timestamp` is more than 1 hour ahead of now; brokers refuse such records (Kafka's log.message.timestamp.after.max.ms default)".into(),
        ));
    }
    if ms < 0 {
        return Err(ApiError::BadRequest(
            "`timestamp` is before 1970-01-01T00:00:00Z; Kafka timestamps start there".into(),
        ));
    }
    Ok(ms)
}

/// A key's or value's bytes and type name; `None` for null data.
fn embedded(data: &V3Data, field: &str) -> Result<Option<(Vec<u8>, &'static str)>, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    if data.subject.is_some()
        || data.subject_name_strategy.is_some()
        || data.schema_id.is_some()
        || data.schema_version.is_some()
        || data.schema.is_some()
    {
        return Err(bad(format!(
            "`{field}` names a schema; spillway keeps no Schema Registry: send type BINARY, JSON or STRING"
        )));
    }
    let kind = match data.kind.as_deref() {
        None => "BINARY",
        Some(k) if k.eq_ignore_ascii_case("BINARY") => "BINARY",
        Some(k) if k.eq_ignore_ascii_case("JSON") => "JSON",
        Some(k) if k.eq_ignore_ascii_case("STRING") => "STRING",
        Some(k)
            if ["AVRO", "JSONSCHEMA", "PROTOBUF"]
                .iter()
                .any(|s| k.eq_ignore_ascii_case(s)) =>
        {
            return Err(bad(format!(
                "`{field}.type` {} needs a Schema Registry, which spillway does not keep: send type BINARY, JSON or STRING",
                k.to_ascii_uppercase()
            )))
        }
        Some(k) => {
            return Err(bad(format!(
                "`{field}.type` must be BINARY, JSON or STRING, not `{}`",
                k.chars().take(40).collect::<String>()
            )))
        }
    };
    let Some(json) = data.data.as_deref().map(RawValue::get) else {
        return Ok(None);
    };
    if json == "null" {
        return Ok(None);
    }
    let bytes = if kind == "JSON" {
        compact(json)
    } else {
        let Ok(text) = serde_json::from_str::<std::borrow::Cow<'_, str>>(json) else {
            return Err(bad(format!(
                "`{field}.data` must be a string for type {kind}"
            )));
        };
        if kind == "BINARY" {
            STANDARD
                .decode(text.as_bytes())
                .map_err(|e| bad(format!("`{field}.data` is not a base64 string: {e}")))?
        } else {
            text.into_owned().into_bytes()
        }
    };
    Ok(Some((bytes, kind)))
}

/// The entries of a `records:batch` body, each as its JSON text with its id, or the reason the
/// whole batch is refused (422, as REST Proxy: malformed, empty, too many, an id missing,
/// malformed or repeated).
pub fn batch_entries(body: &[u8], max: usize) -> Result<Vec<(String, Box<RawValue>)>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Payload(
            "the request body is empty; send {\"entries\": [...]}".into(),
        ));
    }
    let entries = match super::bounded_list::<Box<RawValue>>(body, "entries", max, true) {
        Ok(entries) => entries,
        Err(None) => {
            return Err(ApiError::Batch(format!(
                "too many entries in the batch: at most {max} (SPILLWAY_V3_BATCH_MAX_ENTRIES)"
            )))
        }
        Err(Some(e)) => {
            return Err(ApiError::Batch(format!(
                "the body is not a valid batch: {}; a batch is {{\"entries\": [{{\"id\": \"1\", \"value\": {{...}}}}]}}",
                describe(&e)
            )))
        }
    };
    if entries.is_empty() {
        return Err(ApiError::Batch(
            "the batch is empty; send 1 or more entries".into(),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    entries
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            #[derive(Deserialize)]
            struct IdOnly {
                #[serde(default)]
                id: Option<serde_json::Value>,
            }
            let id = serde_json::from_str::<IdOnly>(raw.get())
                .ok()
                .and_then(|e| e.id);
            let id = match id {
                Some(serde_json::Value::String(id))
                    if (1..=MAX_ENTRY_ID).contains(&id.len())
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    id
                }
                _ => {
                    return Err(ApiError::Batch(format!(
                        "entry {i}: `id` must be a string of 1 to {MAX_ENTRY_ID} characters from a-z A-Z 0-9 _ -"
                    )))
                }
            };
            if !seen.insert(id.clone()) {
                return Err(ApiError::Batch(format!(
                    "entry {i}: id `{id}` appears more than once; entry ids must be distinct"
                )));
            }
            Ok((id, raw))
        })
        .collect()
}

/// A JSON error without any of the caller's data (a type error's text quotes the value): what
/// kind of error, and where; the names of unknown, missing or repeated members are kept.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    let what = match e.classify() {
        Category::Syntax => "invalid JSON".to_owned(),
        Category::Eof => "truncated JSON".to_owned(),
        Category::Io => "unreadable input".to_owned(),
        Category::Data
            if ["unknown ", "missing field", "duplicate field", "too many"]
                .iter()
                .any(|p| text.starts_with(p)) =>
        {
            // A member name is the caller's text: kept, but short.
            text.split(" at line ")
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect()
        }
        Category::Data => "a member has the wrong type or value".to_owned(),
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Splits concatenated JSON objects (REST Proxy's streaming form: records one after another,
/// whitespace or nothing between them) off the front of the bytes that arrived. Linear in the
/// input however it is cut: each byte is scanned once (the scan of an unfinished record resumes
/// where it stopped), and handed-out bytes are dropped in bulk.
#[derive(Debug, Default)]
pub struct Splitter {
    buffer: Vec<u8>,
    /// The first byte not handed out yet.
    start: usize,
    /// How far the record at `start` has been scanned, and the scan's state there.
    scanned: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

/// What [`Splitter::next_record`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// One whole object's text (its JSON is for [`record`] to judge).
    Record(String),
    /// One whole object whose bytes are not UTF-8: a bad record; the next one can be read.
    NotUtf8,
    /// The rest is not yet a whole object: more bytes are needed.
    Incomplete,
    /// The rest does not start an object: nothing after it can be read.
    Malformed(String),
}

impl Splitter {
    /// Appends bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes waiting to form a record.
    pub fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Whether only whitespace is left.
    pub fn is_blank(&self) -> bool {
        self.buffer[self.start..]
            .iter()
            .all(u8::is_ascii_whitespace)
    }

    /// The next whole record, if the bytes so far hold one.
    pub fn next_record(&mut self) -> Split {
        if self.depth == 0 {
            while self
                .buffer
                .get(self.start)
                .is_some_and(u8::is_ascii_whitespace)
            {
                self.start += 1;
            }
            match self.buffer.get(self.start) {
                None => {
                    self.buffer.clear();
                    self.start = 0;
                    self.scanned = 0;
                    return Split::Incomplete;
                }
                Some(b'{') => self.scanned = self.start,
                Some(_) => {
                    return Split::Malformed(
                        "the body is not a sequence of JSON objects: a record is an object {...}"
                            .into(),
                    )
                }
            }
        }
        while let Some(&b) = self.buffer.get(self.scanned) {
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return self.take();
                    }
                }
                _ => {}
            }
        }
        Split::Incomplete
    }

    /// Hands out `start..scanned`, dropping handed-out bytes once they are half the buffer.
    fn take(&mut self) -> Split {
        let record = std::str::from_utf8(&self.buffer[self.start..self.scanned])
            .map_or(Split::NotUtf8, |text| Split::Record(text.to_owned()));
        self.start = self.scanned;
        if self.start * 2 > self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
            self.scanned = 0;
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splitter_cuts_concatenated_records_however_the_bytes_arrive() {
        let body = br#"{"value":{"data":"YQ=="}}{"value":{"type":"STRING","data":"b }{"}}
  {"value":{"type":"JSON","data":[1, 2]}}  "#;
        for chunk in [1, 2, 7, body.len()] {
            let mut splitter = Splitter::default();
            let mut records = Vec::new();
            for piece in body.chunks(chunk) {
                splitter.push(piece);
                while let Split::Record(r) = splitter.next_record() {
                    records.push(r);
                }
            }
            assert!(splitter.is_blank(), "chunk {chunk}");
            assert_eq!(records.len(), 3, "chunk {chunk}: {records:?}");
            assert_eq!(records[1], r#"{"value":{"type":"STRING","data":"b }{"}}"#);
        }
        let mut splitter = Splitter::default();
        splitter.push(br#"{"value":1} ]"#);
        assert!(matches!(splitter.next_record(), Split::Record(_)));
        assert!(matches!(splitter.next_record(), Split::Malformed(_)));
    }

    #[test]
    fn types_decode_as_rest_proxy_does() {
        let parsed = record(
            "t",
            r#"{"key":{"type":"STRING","data":"k é"},"value":{"type":"JSON","data":{ "a" : [1, 2] }},
               "headers":[{"name":"h","value":"AAE="},{"name":"e","value":null}],"partition_id":2,
               "timestamp":"2021-02-05T19:14:42.5+01:00"}"#,
            false,
        )
        .expect("valid");
        assert_eq!(parsed.envelope.key.as_deref(), Some("k é".as_bytes()));
        assert_eq!(parsed.envelope.value, br#"{"a":[1,2]}"#);
        assert_eq!(parsed.envelope.headers[0].value, [0, 1]);
        assert!(parsed.envelope.headers[1].value.is_empty());
        assert_eq!(parsed.envelope.partition, Some(2));
        assert_eq!(parsed.envelope.timestamp_ms, Some(1_612_548_882_500));
        assert_eq!((parsed.value.kind, parsed.value.size), ("JSON", 11));
        assert_eq!(parsed.key.map(|k| (k.kind, k.size)), Some(("STRING", 4)));
        // No type: BINARY, as REST Proxy without a schema.
        let parsed = record("t", r#"{"value":{"data":"Zm9vYmFy"}}"#, false).expect("valid");
        assert_eq!(parsed.envelope.value, b"foobar");
        assert!(parsed.key.is_none() && parsed.envelope.key.is_none());
    }

    #[test]
    fn a_bad_record_is_refused_with_its_problem_named() {
        for (json, says) in [
            (
                r#"{"value":{"type":"BINARY","data":1}}"#,
                "must be a string",
            ),
            (
                r#"{"value":{"type":"BINARY","data":"***"}}"#,
                "not a base64",
            ),
            (r#"{"value":{"type":"AVRO","data":{}}}"#, "Schema Registry"),
            (
                r#"{"value":{"type":"JSON","data":{},"schema_id":3}}"#,
                "Schema Registry",
            ),
            (
                r#"{"value":{"type":"XML","data":"<a/>"}}"#,
                "BINARY, JSON or STRING",
            ),
            (r#"{"key":{"data":"YQ=="}}"#, "`value` is required"),
            (r#"{"value":{"type":"JSON","data":null}}"#, "null values"),
            (
                r#"{"value":{"data":"YQ=="},"partition_id":-1}"#,
                "0 or more",
            ),
            (
                r#"{"value":{"data":"YQ=="},"timestamp":"yesterday"}"#,
                "RFC 3339",
            ),
            (
                r#"{"value":{"data":"YQ=="},"timestamp":"1969-12-31T23:59:59Z"}"#,
                "before 1970",
            ),
            (
                r#"{"value":{"data":"YQ=="},"headers":[{"name":"traceparent","value":"YQ=="}]}"#,
                "reserved",
            ),
            (
                r#"{"value":{"data":"YQ=="},"records":[]}"#,
                "unknown field `records`",
            ),
            (r#"{"value":{"data":"YQ=="},"id":"1"}"#, "records:batch"),
            ("[1]", "not a valid produce record"),
        ] {
            let err = record("t", json, false).expect_err(json).to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    #[test]
    fn batch_ids_and_sizes_are_checked_as_rest_proxy_does() {
        let ok = br#"{"entries":[{"id":"a-1","value":{"data":"YQ=="}},{"id":"B_2","value":{"data":"Yg=="}}]}"#;
        let entries = batch_entries(ok, 2).expect("valid");
        assert_eq!(
            entries
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["a-1", "B_2"]
        );
        let long = format!(
            r#"{{"entries":[{{"id":"{}","value":{{}}}}]}}"#,
            "x".repeat(81)
        );
        for (body, says) in [
            (&ok[..], "at most 1"),
            (br#"{"entries":[]}"#, "empty"),
            (b"  ", "body is empty"),
            (br#"{"records":[]}"#, "unknown member `records`"),
            (
                br#"{"entries":[{"id":1,"value":{}}]}"#,
                "`id` must be a string",
            ),
            (br#"{"entries":[{"value":{}}]}"#, "`id` must be a string"),
            (
                br#"{"entries":[{"id":"a b","value":{}}]}"#,
                "`id` must be a string",
            ),
            (long.as_bytes(), "`id` must be a string"),
            (
                br#"{"entries":[{"id":"a","value":{}},{"id":"a","value":{}}]}"#,
                "more than once",
            ),
        ] {
            let max = if body == &ok[..] { 1 } else { 10 };
            let err = batch_entries(body, max).expect_err("refused");
            assert_eq!(err.status().as_u16(), 422, "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
