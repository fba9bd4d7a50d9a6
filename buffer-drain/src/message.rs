//! From a buffer record to the Kafka record it becomes.

use rdkafka::message::{Header, OwnedHeaders};
use spillway_core::envelope::{decode, DecodeError, Decoded, RawMode};
use spillway_core::kafka::{ID_HEADER, RECEIVED_AT_HEADER, TRACE_HEADER};
use spillway_core::trace::TraceParent;

use crate::source::SourceRecord;

/// A Kafka record ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaMessage {
    /// Topic.
    pub topic: String,
    /// Key; `None` lets the partitioner spread.
    pub key: Option<Vec<u8>>,
    /// Partition asked for by the caller.
    pub partition: Option<i32>,
    /// Value (empty while it is in S3: see `value_claim`).
    pub value: Vec<u8>,
    /// Where the value is when ingest-api kept it in S3 (issue 18): fetched before producing.
    pub value_claim: Option<spillway_core::claim::Claim>,
    /// The record timestamp the caller asked for, ms since the Unix epoch; `None` for the
    /// produce time.
    pub timestamp_ms: Option<i64>,
    /// Headers: the caller's (without any pipeline-owned name), then `spillway-id`,
    /// `spillway-received-at`, the W3C trace context (`traceparent`, `tracestate`) and the X-Ray
    /// trace header.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl KafkaMessage {
    /// The headers in rdkafka's form.
    pub fn owned_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(
            OwnedHeaders::new_with_capacity(self.headers.len()),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                })
            },
        )
    }
}

/// How the drain reads messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoding {
    /// Whether plain messages are accepted.
    pub raw: RawMode,
    /// Where plain messages go (`SPILLWAY_TOPIC`).
    pub raw_topic: Option<String>,
}

/// Why a record cannot become a Kafka record: permanent, so it is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// The envelope decoder's verdict.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An envelope for a topic Kafka would refuse. The reason does not quote the name: it is the
    /// producer's text, and reasons go to dead-letter attributes and logs.
    #[error("the envelope's topic is not a valid Kafka topic name (Kafka allows 1 to {} characters from a-z, A-Z, 0-9, '.', '_' and '-')", spillway_core::topic::MAX_TOPIC_LEN)]
    Topic(#[from] spillway_core::topic::InvalidTopic),
}

/// The Kafka record for `record`.
pub fn to_kafka(record: &SourceRecord, decoding: &Decoding) -> Result<KafkaMessage, Undecodable> {
    let raw = match decoding.raw_topic {
        Some(_) => decoding.raw,
        None => RawMode::Reject,
    };
    match decode(&record.data, raw)? {
        Decoded::Envelope(env) => {
            spillway_core::topic::validate(&env.topic)?;
            let mut headers = Vec::with_capacity(env.headers.len() + 5);
            // Rule 8: names the pipeline sets are its own; a copy from the producer is dropped.
            headers.extend(
                env.headers
                    .into_iter()
                    .filter(|h| !spillway_core::headers::is_reserved(&h.name))
                    .map(|h| (h.name, h.value)),
            );
            let w3c = w3c_trace(
                &env.id,
                env.traceparent.as_deref(),
                env.tracestate.as_deref(),
            );
            headers.push((ID_HEADER.to_owned(), env.id.into_bytes()));
            headers.push((
                RECEIVED_AT_HEADER.to_owned(),
                env.received_at_ms.to_string().into_bytes(),
            ));
            headers.extend(w3c);
            push_trace(&mut headers, record);
            Ok(KafkaMessage {
                topic: env.topic,
                key: env.key,
                partition: env.partition,
                value: env.value,
                value_claim: env.value_claim,
                timestamp_ms: env.timestamp_ms,
                headers,
            })
        }
        Decoded::Raw(bytes) => {
            let mut headers = vec![(ID_HEADER.to_owned(), record.item_id.clone().into_bytes())];
            if let Some(at) = record.buffered_at_ms {
                headers.push((RECEIVED_AT_HEADER.to_owned(), at.to_string().into_bytes()));
            }
            push_trace(&mut headers, record);
            Ok(KafkaMessage {
                topic: decoding.raw_topic.clone().unwrap_or_default(),
                key: None,
                partition: None,
                value: bytes.to_vec(),
                value_claim: None,
                timestamp_ms: None,
                headers,
            })
        }
    }
}

/// The envelope's W3C trace context headers when its `traceparent` is valid (with its
/// `tracestate`, when that is too); else a `traceparent` derived from the message id, the same on
/// every delivery.
fn w3c_trace(
    id: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> impl Iterator<Item = (String, Vec<u8>)> {
    let [parent, state] = spillway_core::headers::W3C_TRACE_HEADERS;
    let (tp, ts) = match traceparent.and_then(TraceParent::parse) {
        Some(tp) => (
            tp,
            tracestate
                .and_then(spillway_core::trace::valid_tracestate)
                .map(|ts| (state.to_owned(), ts.as_bytes().to_vec())),
        ),
        None => (TraceParent::from_message_id(id), None),
    };
    std::iter::once((parent.to_owned(), tp.header_bytes().to_vec())).chain(ts)
}

fn push_trace(headers: &mut Vec<(String, Vec<u8>)>, record: &SourceRecord) {
    if let Some(trace) = &record.trace {
        headers.push((TRACE_HEADER.to_owned(), trace.clone().into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::envelope::{Envelope, Header as EnvHeader};

    /// Issue 14 item 2 / rule 8: an envelope written by another producer with its own
    /// `spillway-id`, `spillway-received-at` or trace headers: the drain's are the only ones.
    #[test]
    fn caller_copies_of_pipeline_headers_are_dropped() {
        let mut env = Envelope::new("orders", "v");
        env.headers = vec![
            EnvHeader::new("Spillway-Id", "forged"),
            EnvHeader::new("spillway-received-at", "1"),
            EnvHeader::new("x-amzn-trace-id", "Root=forged"),
            EnvHeader::new("traceparent", "00-forged"),
            EnvHeader::new("source", "web"),
        ];
        let record = SourceRecord {
            item_id: "m-1".into(),
            group: None,
            data: env.encode().into_bytes(),
            buffered_at_ms: None,
            trace: Some("Root=1-real".into()),
            source: "arn:aws:sqs:us-east-1:1:q".into(),
        };
        let decoding = Decoding {
            raw: RawMode::Reject,
            raw_topic: None,
        };
        let message = to_kafka(&record, &decoding).expect("an envelope");
        let names: Vec<&str> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "source",
                ID_HEADER,
                RECEIVED_AT_HEADER,
                "traceparent",
                TRACE_HEADER
            ],
            "one of each pipeline header, the drain's"
        );
        assert_eq!(message.headers[1].1, env.id.as_bytes());
        assert_eq!(
            message.headers[3].1,
            TraceParent::from_message_id(&env.id).to_string().as_bytes()
        );
        assert_eq!(message.headers[4].1, b"Root=1-real");
    }

    fn kafka_of(env: &Envelope) -> KafkaMessage {
        let record = SourceRecord {
            item_id: "m-1".into(),
            group: None,
            data: env.encode().into_bytes(),
            buffered_at_ms: None,
            trace: None,
            source: "arn:aws:sqs:us-east-1:1:q".into(),
        };
        let decoding = Decoding {
            raw: RawMode::Reject,
            raw_topic: None,
        };
        to_kafka(&record, &decoding).expect("an envelope")
    }

    fn header<'a>(message: &'a KafkaMessage, name: &str) -> Option<&'a [u8]> {
        message
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Issue 18 item 2: the envelope's trace context becomes the record's headers; a malformed
    /// one is replaced by the trace derived from the message id, and a tracestate without a valid
    /// traceparent goes with it. Issue 18 item 1: the timestamp asked for is the record's.
    #[test]
    fn the_envelopes_trace_context_and_timestamp_reach_the_record() {
        let mut env = Envelope::new("orders", "v");
        env.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        env.tracestate = Some("rojo=00f067aa0ba902b7".into());
        env.timestamp_ms = Some(1_612_552_482_000);
        let message = kafka_of(&env);
        assert_eq!(
            header(&message, "traceparent"),
            Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
        );
        assert_eq!(
            header(&message, "tracestate"),
            Some(&b"rojo=00f067aa0ba902b7"[..])
        );
        assert_eq!(message.timestamp_ms, Some(1_612_552_482_000));

        env.traceparent = Some("00-not-a-trace".into());
        let message = kafka_of(&env);
        let derived = TraceParent::from_message_id(&env.id).to_string();
        assert_eq!(header(&message, "traceparent"), Some(derived.as_bytes()));
        assert_eq!(header(&message, "tracestate"), None);

        env.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        env.tracestate = Some("not a list member".into());
        assert_eq!(header(&kafka_of(&env), "tracestate"), None);
    }
}
