//! A consumed Kafka record, whether it came in an MSK Lambda event or from a local consumer.

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub use spillway_core::kafka::{ID_HEADER, RECEIVED_AT_HEADER};

/// One Kafka record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The `spillway-id`, when present and UTF-8.
    pub fn spillway_id(&self) -> Option<&str> {
        self.header(ID_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `spillway-received-at`, when present and a number.
    pub fn received_at_ms(&self) -> Option<u64> {
        std::str::from_utf8(self.header(RECEIVED_AT_HEADER)?)
            .ok()?
            .parse()
            .ok()
    }

    /// The W3C `traceparent` the drain set (issue 18), when present and valid.
    pub fn traceparent(&self) -> Option<spillway_core::trace::TraceParent> {
        let [name, _] = spillway_core::headers::W3C_TRACE_HEADERS;
        spillway_core::trace::TraceParent::parse(std::str::from_utf8(self.header(name)?).ok()?)
    }

    /// The W3C `tracestate`, when present and UTF-8.
    pub fn tracestate(&self) -> Option<&str> {
        let [_, name] = spillway_core::headers::W3C_TRACE_HEADERS;
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// Key and value bytes.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }

    /// `topic-partition@offset`, for logs and failure reports.
    pub fn position(&self) -> String {
        format!("{}-{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A record of an MSK event that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: {problem}")]
pub struct MalformedRecord {
    /// Where the record is.
    pub position: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Every record of every topic-partition in an MSK event, ordered by topic, partition and offset.
/// (The AWS sample read only partition 0 and failed any batch without it.)
pub fn from_event(event: KafkaEvent) -> (Vec<ConsumedRecord>, Vec<MalformedRecord>) {
    let mut records = Vec::new();
    let mut malformed = Vec::new();
    for (group, batch) in event.records {
        for record in batch {
            // The map key is "topic-partition"; older events omit the record's own topic.
            let topic = record.topic.clone().unwrap_or_else(|| {
                group
                    .rsplit_once('-')
                    .map_or(group.clone(), |(t, _)| t.to_owned())
            });
            let position = format!("{topic}-{}@{}", record.partition, record.offset);
            let decode =
                |field: &str, v: Option<String>| -> Result<Option<Vec<u8>>, MalformedRecord> {
                    v.map(|text| STANDARD.decode(text.as_bytes()))
                        .transpose()
                        .map_err(|e| MalformedRecord {
                            position: position.clone(),
                            problem: format!("{field} is not valid base64: {e}"),
                        })
                };
            let parsed = (|| {
                let partition = i32::try_from(record.partition).map_err(|_| MalformedRecord {
                    position: position.clone(),
                    problem: "partition out of range".into(),
                })?;
                Ok(ConsumedRecord {
                    topic: topic.clone(),
                    partition,
                    offset: record.offset,
                    timestamp_ms: record.timestamp.0.timestamp_millis(),
                    key: decode("key", record.key.clone())?,
                    value: decode("value", record.value.clone())?,
                    // Lambda sends header values as arrays of Java (signed) bytes.
                    headers: record
                        .headers
                        .iter()
                        .flat_map(|h| h.iter())
                        .map(|(name, bytes)| {
                            (
                                name.clone(),
                                bytes.iter().map(|b| b.to_le_bytes()[0]).collect(),
                            )
                        })
                        .collect(),
                })
            })();
            match parsed {
                Ok(r) => records.push(r),
                Err(e) => malformed.push(e),
            }
        }
    }
    records
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    (records, malformed)
}
