//! Reading dead letters, by the contract in `spillway_core::dead_letter`: what a letter holds, which
//! the filters take, and what goes back to a queue for it.

use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use spillway_core::claim::Claim;
use spillway_core::dead_letter::{
    read_body, BatchInfo, Content, ENCODING_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE,
};
use spillway_core::envelope::{decode, Decoded, Envelope, RawMode};

use super::{Filters, Item, NotMoved};

/// What a dead-letter message carries.
pub(super) enum Letter {
    /// The record itself: an SQS dead letter, or a Kinesis record the drain dead-lettered.
    Data(Item),
    /// The record is in S3 ([`Item::data`] is empty until it is read back).
    Claimed(Item, Claim),
    /// A Kinesis on-failure record: only where the batch was.
    Range(BatchInfo),
}

pub(super) fn attribute<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.message_attributes()?.get(name)?.string_value()
}

pub(super) fn reason(m: &Message) -> Option<&str> {
    attribute(m, REASON_ATTRIBUTE)
}

fn sent_at_ms(m: &Message) -> Option<u64> {
    m.attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()
}

fn age(m: &Message) -> Option<Duration> {
    Some(Duration::from_millis(
        spillway_core::envelope::now_ms().saturating_sub(sent_at_ms(m)?),
    ))
}

/// Whether the filters take `m`.
pub(super) fn matches(filters: &Filters, m: &Message) -> bool {
    filters
        .reason
        .as_ref()
        .is_none_or(|r| reason(m).is_some_and(|have| have.contains(r.as_str())))
        && filters
            .older_than
            .is_none_or(|min| age(m).is_some_and(|a| a >= min))
}

/// What `m` holds.
pub(super) fn letter(m: &Message) -> Result<Letter, NotMoved> {
    let body = m.body().unwrap_or_default();
    let content = read_body(body, attribute(m, ENCODING_ATTRIBUTE), reason(m).is_some())
        .map_err(NotMoved::Unreadable)?;
    let item = |data: Vec<u8>| Item {
        // The drain names the record's own id; a message SQS moved keeps its message id.
        id: attribute(m, ORIGINAL_ID_ATTRIBUTE)
            .or(m.message_id())
            .unwrap_or_default()
            .to_owned(),
        data,
        partition_key: None,
        buffered_at_ms: sent_at_ms(m),
        group: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned(),
    };
    Ok(match content {
        Content::Data(data) => Letter::Data(item(data)),
        Content::Claim(claim) => Letter::Claimed(item(Vec::new()), claim),
        Content::Pointer(info) => Letter::Range(info),
    })
}

/// One line for `--dry-run`: the letter's id, what it holds (never its content), reason and age.
pub(super) fn describe(m: &Message) -> String {
    let what = match letter(m) {
        Ok(Letter::Range(info)) => format!(
            "Kinesis {} records of {}/{} from {} to {}",
            info.batch_size
                .map_or_else(|| "?".into(), |n| n.to_string()),
            spillway_core::dead_letter::stream_name(&info.stream_arn).unwrap_or("?"),
            info.shard_id,
            info.start_sequence_number,
            info.end_sequence_number
        ),
        Ok(Letter::Data(item)) => match decode(&item.data, RawMode::Accept) {
            // A message whose value ingest-api kept in S3: it goes back as it is, and the drain
            // reads the value again (the object stays until the record is delivered).
            Ok(Decoded::Envelope(Envelope {
                value_claim: Some(claim),
                ..
            })) => format!(
                "{} bytes, its value ({} bytes) in s3://{}/{}",
                item.data.len(),
                claim.bytes,
                claim.bucket,
                claim.key
            ),
            _ => format!("{} bytes", item.data.len()),
        },
        Ok(Letter::Claimed(_, claim)) => format!(
            "{} bytes in s3://{}/{}",
            claim.bytes, claim.bucket, claim.key
        ),
        Err(e) => e.to_string(),
    };
    format!(
        "would move {} ({what}; reason: {}, age: {})",
        m.message_id().unwrap_or("?"),
        reason(m).unwrap_or("-"),
        age(m).map_or_else(
            || "?".to_owned(),
            |a| humantime::format_duration(Duration::from_secs(a.as_secs())).to_string()
        )
    )
}

/// What goes back to a queue for a record: the envelope it holds (with its Kafka key, so a FIFO
/// queue groups it as ingest did), or a plain (raw-mode) record wrapped in an envelope for
/// `raw_topic` that keeps its original id and time — sent as it is, it would get a new message
/// id and so a new `spillway-id` (rule 7). The envelope is binary-safe, so binary plain data goes
/// too; other binary data the queue writer refuses (an SQS body is text).
pub(super) fn for_queue(
    item: &Item,
    raw_topic: Option<&str>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), NotMoved> {
    match decode(&item.data, RawMode::Accept) {
        Ok(Decoded::Raw(_)) => {
            let topic = raw_topic.ok_or(NotMoved::PlainWithoutTopic)?;
            let mut env = Envelope::new(topic, item.data.clone());
            env.id.clone_from(&item.id);
            if let Some(at) = item.buffered_at_ms {
                env.received_at_ms = at;
            }
            Ok((env.encode().into_bytes(), None))
        }
        Ok(Decoded::Envelope(env)) => Ok((item.data.clone(), env.key)),
        // A damaged envelope: it dead-letters again (the operator's call).
        Err(_) => Ok((item.data.clone(), None)),
    }
}
