//! `spillway replay`: dead-lettered messages back to the source queue, or straight to Kafka.
//!
//! Receive → write to the target → delete: a DLQ message is deleted only after its target
//! acknowledged it (delivery rule 2), so an interrupted replay — even `kill -9` — loses nothing;
//! running it again moves what is left. Messages in flight when it stopped may be written twice
//! (at most the in-flight window, 10 per worker); the copies carry the same envelope and so the
//! same `spillway-id`. Messages a run looks at and leaves (skipped by the filters, shown by a dry
//! run, refused by the target) stay hidden until it ends, so it looks at each once; on a FIFO DLQ,
//! where a hidden message holds back its whole group, the skipped ones are made visible at once.
//!
//! Kinesis: Lambda's on-failure records name a shard and a range of sequence numbers; replay reads
//! those records back from the stream and writes them to Kafka or to a stream; the dead letter is
//! deleted once every record in its range was acknowledged. Records the drain dead-lettered itself
//! carry their data (base64 when it was binary) and replay directly.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use buffer_drain::drain::Drain;
use buffer_drain::report::Outcome;
use buffer_drain::source::{Ordering, SourceRecord};
use spillway_core::batch::{answered, pack, Answered};
use spillway_core::envelope::{decode, Decoded, RawMode};

pub mod kinesis;

/// Where replayed messages go.
pub enum Target {
    /// Back to a queue (normally the DLQ's source).
    Queue(String),
    /// Straight to Kafka through the drain's producer.
    Kafka(Box<Drain>),
    /// Back to a Kinesis stream (normally the one the records came from).
    Stream(String),
}

/// The shortest time a received letter stays hidden: long enough for a receive and the calls that
/// keep the letters a run holds hidden.
pub const MIN_VISIBILITY: Duration = Duration::from_secs(10);

/// Records given to the drain at a time.
const KAFKA_CHUNK: usize = 500;
/// `PutRecords` attempts for records the stream throttles.
const STREAM_ATTEMPTS: u32 = 5;

/// Which messages to move.
#[derive(Debug, Clone)]
pub struct Filters {
    /// Only messages whose `spillway-reason` attribute contains this.
    pub reason: Option<String>,
    /// Only messages at least this old.
    pub older_than: Option<Duration>,
    /// At most this many.
    pub max: Option<u64>,
    /// How long a received message stays hidden while it is moved; after an interruption, what was
    /// in flight reappears in the DLQ after this long.
    pub visibility: Duration,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Written to the target and deleted from the DLQ.
    pub moved: u64,
    /// Left in the DLQ by the filters.
    pub skipped: u64,
    /// Not accepted by the target; left in the DLQ.
    pub failed: u64,
    /// `--dry-run`: would have moved.
    pub would_move: u64,
    /// Records written to the target (a Kinesis on-failure record stands for many).
    pub records: u64,
    /// Why messages were not moved (the first few distinct reasons).
    pub errors: Vec<String>,
}

fn reason(m: &Message) -> Option<&str> {
    m.message_attributes()?
        .get(buffer_drain::dlq::REASON_ATTRIBUTE)?
        .string_value()
}

fn age(m: &Message) -> Option<Duration> {
    let sent: u64 = m
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    Some(Duration::from_millis(
        spillway_core::envelope::now_ms().saturating_sub(sent),
    ))
}

fn matches(filters: &Filters, m: &Message) -> bool {
    filters
        .reason
        .as_ref()
        .is_none_or(|r| reason(m).is_some_and(|have| have.contains(r.as_str())))
        && filters
            .older_than
            .is_none_or(|min| age(m).is_some_and(|a| a >= min))
}

/// One replay: where from, where to, what.
pub struct Replay<'a> {
    /// The dead-letter queue's client.
    pub sqs: &'a aws_sdk_sqs::Client,
    /// Reads the ranges Kinesis on-failure records point to, and writes `Target::Stream`.
    pub kinesis: &'a aws_sdk_kinesis::Client,
    /// The dead-letter queue.
    pub dlq_url: &'a str,
    /// Where the messages go.
    pub target: &'a Target,
    /// Which messages.
    pub filters: &'a Filters,
    /// At most this many messages a second.
    pub rate: Option<NonZeroU32>,
    /// Print what would move; move nothing.
    pub dry_run: bool,
    /// The topic plain (raw-mode) letters were for (the drain's `SPILLWAY_TOPIC`). Sent back to a
    /// queue, such a letter is wrapped in an envelope for this topic that keeps its original id —
    /// sent as it was, it would get a new SQS message id and so a new `spillway-id` (rule 7).
    /// Without it, plain letters are not sent to a queue.
    pub raw_topic: Option<&'a str>,
}

/// What a dead-letter message carries.
enum Letter {
    /// The record itself: an SQS dead letter, or a Kinesis record the drain dead-lettered.
    Data(Item),
    /// A Kinesis on-failure record: only where the batch was.
    Range(kinesis::BatchInfo),
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its id in the buffer (SQS message id, Kinesis sequence number).
    pub id: String,
    /// The bytes the buffer held.
    pub data: Vec<u8>,
    /// The Kinesis partition key it had; `None` for a dead letter, whose key is derived only when it
    /// goes to a stream ([`Item::stream_key`]).
    pub partition_key: Option<String>,
    /// When the buffer took it, ms since the Unix epoch.
    pub buffered_at_ms: Option<u64>,
}

impl Item {
    /// The partition key for a stream: the one it had, else the one ingest-api would give its
    /// envelope (the Kafka key, else the id). Decodes the envelope only here, where it is needed.
    pub fn stream_key(&self) -> String {
        self.partition_key.clone().unwrap_or_else(|| {
            let key = match decode(&self.data, RawMode::Reject) {
                Ok(Decoded::Envelope(env)) => env.key,
                _ => None,
            };
            ingest_api::buffer::kinesis::partition_key(&self.id, key.as_deref())
        })
    }
}

fn attribute<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.message_attributes()?.get(name)?.string_value()
}

fn letter(m: &Message) -> Result<Letter, String> {
    let body = m.body().unwrap_or_default();
    if let Some(info) = kinesis::batch_info(body) {
        return Ok(Letter::Range(info));
    }
    let data = if attribute(m, buffer_drain::dlq::ENCODING_ATTRIBUTE) == Some("base64") {
        STANDARD
            .decode(body)
            .map_err(|e| format!("the body is marked base64 but is not: {e}"))?
    } else {
        body.as_bytes().to_vec()
    };
    let id = attribute(m, buffer_drain::dlq::ORIGINAL_ID_ATTRIBUTE)
        .or(m.message_id())
        .unwrap_or_default()
        .to_owned();
    Ok(Letter::Data(Item {
        partition_key: None,
        buffered_at_ms: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|t| t.parse().ok()),
        id,
        data,
    }))
}

fn describe(m: &Message) -> String {
    let what = match letter(m) {
        Ok(Letter::Range(info)) => format!(
            "Kinesis {} records of {}/{} from {} to {}",
            info.batch_size
                .map_or_else(|| "?".into(), |n| n.to_string()),
            kinesis::stream_name(&info.stream_arn).unwrap_or("?"),
            info.shard_id,
            info.start_sequence_number,
            info.end_sequence_number
        ),
        Ok(Letter::Data(item)) => format!("{} bytes", item.data.len()),
        Err(e) => e,
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

impl Replay<'_> {
    /// Moves the messages; `progress` counts moved messages.
    pub async fn run(&self, progress: &indicatif::ProgressBar) -> Result<Summary, String> {
        // Not SQS's own redrive (StartMessageMoveTask), even for a whole DLQ: it gives every
        // message a new message id (a plain letter would get a new spillway-id, rule 7) and
        // moves what no queue can use (Kinesis on-failure records, binary data) unchecked.
        let filters = self.filters;
        let limiter = self
            .rate
            .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r)));
        let mut summary = Summary::default();
        // Every message looked at and not deleted (skipped by the filters, shown by a dry run,
        // not taken by the target) stays hidden until the run ends — its visibility extended as
        // the run goes on — so receives only ever return messages not yet looked at, and the
        // run ends when the DLQ has none left; then they are all made visible again.
        let mut held = Held::new(filters.visibility.max(MIN_VISIBILITY));
        let mut empty_receives = 0;
        loop {
            let taken = summary.moved + summary.would_move;
            if filters.max.is_some_and(|max| taken >= max) || empty_receives >= 2 {
                held.release_all(self.sqs, self.dlq_url).await;
                return Ok(summary);
            }
            held.keep_hidden(self.sqs, self.dlq_url).await;
            let received = self
                .receive(filters.max.map_or(10, |max| (max - taken).min(10)))
                .await?;
            // One held before whose hiding lapsed: hidden again by this receive, already counted.
            // A receive with nothing new counts as empty: the run ends when nothing new comes.
            let (fresh, again): (Vec<Message>, Vec<Message>) =
                received.into_iter().partition(|m| !held.contains(m));
            let mut passed_again = Vec::new();
            for m in again {
                if held.holds(&m) {
                    held.hold(m);
                } else {
                    passed_again.push(m);
                }
            }
            if !passed_again.is_empty() {
                let refs: Vec<&Message> = passed_again.iter().collect();
                set_visibility(self.sqs, self.dlq_url, &refs, Duration::ZERO).await;
            }
            if fresh.is_empty() {
                empty_receives += 1;
                continue;
            }
            empty_receives = 0;
            let (chosen, rest): (Vec<Message>, Vec<Message>) =
                fresh.into_iter().partition(|m| matches(filters, m));
            summary.skipped += rest.len() as u64;
            let shown = if self.dry_run {
                for m in &chosen {
                    progress.println(describe(m));
                }
                summary.would_move += chosen.len() as u64;
                chosen.clone()
            } else {
                Vec::new()
            };
            self.pass_over(&mut held, rest.into_iter().chain(shown).collect())
                .await;
            if self.dry_run {
                continue;
            }
            if let Some(limiter) = &limiter {
                for _ in &chosen {
                    limiter.until_ready().await;
                }
            }
            let outcomes = self.write(&chosen).await;
            let mut written = Vec::new();
            let note = |summary: &mut Summary, e: String| {
                summary.failed += 1;
                if summary.errors.len() < 10 && !summary.errors.contains(&e) {
                    progress.println(format!("not moved: {e}"));
                    summary.errors.push(e);
                }
            };
            for (m, outcome) in chosen.into_iter().zip(outcomes) {
                match outcome {
                    Ok(records) => written.push((m, records)),
                    Err(e) => {
                        note(&mut summary, e);
                        held.hold(m);
                    }
                }
            }
            let refs: Vec<&Message> = written.iter().map(|(m, _)| m).collect();
            let deleted = delete(self.sqs, self.dlq_url, &refs).await;
            for ((m, records), deleted) in written.into_iter().zip(deleted) {
                match deleted {
                    Ok(()) => {
                        summary.moved += 1;
                        summary.records += records;
                        progress.inc(1);
                    }
                    Err(e) => {
                        note(
                            &mut summary,
                            format!("written to the target but still in the DLQ (it will be replayed again): {e}"),
                        );
                        held.hold(m);
                    }
                }
            }
        }
    }

    /// Letters looked at and left in the DLQ: held hidden until the run ends. On a FIFO DLQ,
    /// which hands out nothing more of a message group while one of its messages is hidden, they
    /// go back at once (and, seen, are not counted again), or the rest of their group would never
    /// be looked at.
    async fn pass_over(&self, held: &mut Held, letters: Vec<Message>) {
        if spillway_core::limits::is_fifo_queue(self.dlq_url) {
            let refs: Vec<&Message> = letters.iter().collect();
            set_visibility(self.sqs, self.dlq_url, &refs, Duration::ZERO).await;
            for m in &letters {
                held.seen(m);
            }
        } else {
            for m in letters {
                held.hold(m);
            }
        }
    }

    async fn receive(&self, want: u64) -> Result<Vec<Message>, String> {
        Ok(self
            .sqs
            .receive_message()
            .queue_url(self.dlq_url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(10))
            .wait_time_seconds(1)
            .visibility_timeout(
                i32::try_from(self.filters.visibility.max(MIN_VISIBILITY).as_secs()).unwrap_or(30),
            )
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot receive from {}: {}",
                    self.dlq_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })?
            .messages
            .unwrap_or_default())
    }

    /// Writes each message to the target: `Ok(records written)` once the target acknowledged all
    /// of the message's records, else why not.
    async fn write(&self, messages: &[Message]) -> Vec<Result<u64, String>> {
        if let Target::Queue(url) = self.target {
            return to_queue(self.sqs, url, messages, self.raw_topic).await;
        }
        // Each message's records, read back from the stream for on-failure records.
        let mut outcomes: Vec<Result<u64, String>> = Vec::with_capacity(messages.len());
        let mut items: Vec<Item> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let read = match letter(m) {
                Ok(Letter::Data(item)) => Ok(vec![item]),
                Ok(Letter::Range(info)) => kinesis::read(self.kinesis, &info).await,
                Err(e) => Err(e),
            };
            outcomes.push(read.map(|records| {
                owner.extend(std::iter::repeat_n(i, records.len()));
                items.extend(records);
                0
            }));
        }
        let written = match self.target {
            Target::Kafka(drain) => to_kafka(drain, &items).await,
            Target::Stream(stream) => to_stream(self.kinesis, stream, &items).await,
            Target::Queue(_) => unreachable!("handled above"),
        };
        for (i, ok) in owner.into_iter().zip(written) {
            if let Ok(n) = &mut outcomes[i] {
                match ok {
                    Ok(()) => *n += 1,
                    Err(e) => outcomes[i] = Err(e),
                }
            }
        }
        outcomes
    }
}

/// What goes back to a queue for a letter: the envelope it holds, or a plain (raw-mode) letter
/// wrapped in an envelope for `raw_topic` that keeps the letter's original id and time.
fn queue_body(m: &Message, raw_topic: Option<&str>) -> Result<String, String> {
    let body = m.body().unwrap_or_default();
    match letter(m)? {
        Letter::Range(_) => Err("a Kinesis on-failure record holds no data for a queue; replay it with --to-kafka or --to-stream".into()),
        Letter::Data(_) if attribute(m, buffer_drain::dlq::ENCODING_ATTRIBUTE).is_some() => Err("binary Kinesis data cannot go to an SQS queue; replay it with --to-kafka or --to-stream".into()),
        Letter::Data(item) => match decode(body.as_bytes(), RawMode::Accept) {
            Ok(Decoded::Raw(_)) => {
                let topic = raw_topic.ok_or_else(|| {
                    "a plain (raw-mode) letter sent back to a queue as it is would get a new message id and so a new spillway-id; give --raw-topic (the drain's SPILLWAY_TOPIC) to send it in an envelope that keeps its id, or replay it --to-kafka".to_owned()
                })?;
                let mut env = spillway_core::envelope::Envelope::new(topic, item.data);
                env.id = item.id;
                if let Some(at) = item.buffered_at_ms {
                    env.received_at_ms = at;
                }
                Ok(env.encode())
            }
            // An envelope, or a damaged one (it dead-letters again: the operator's call).
            _ => Ok(body.to_owned()),
        },
    }
}

/// Back to an SQS queue, each letter's envelope and FIFO group as they were.
async fn to_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[Message],
    raw_topic: Option<&str>,
) -> Vec<Result<u64, String>> {
    let fifo = spillway_core::limits::is_fifo_queue(url);
    let bodies: Vec<Result<String, String>> =
        messages.iter().map(|m| queue_body(m, raw_topic)).collect();
    let mut outcomes: Vec<Result<u64, String>> = bodies
        .iter()
        .map(|b| b.as_ref().map(|_| 1).map_err(Clone::clone))
        .collect();
    let entries: Vec<(usize, usize, SendMessageBatchRequestEntry)> = messages
        .iter()
        .zip(&bodies)
        .enumerate()
        .filter_map(|(i, (m, body))| Some((i, m, body.as_ref().ok()?)))
        .map(|(i, m, body)| {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body);
            if fifo {
                let group = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned();
                // Not the letter's message id: SQS keeps a message's id when it redrives it to
                // the DLQ, so a letter replayed, failed and dead-lettered again within SQS's five
                // minutes would be dropped as a duplicate of itself — and deleted from the DLQ.
                // One id per receive: a retry of this very send is still deduplicated.
                let dedup = uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    m.receipt_handle().unwrap_or_default().as_bytes(),
                )
                .simple()
                .to_string();
                entry = entry
                    .message_group_id(group.unwrap_or_else(|| "replay".into()))
                    .message_deduplication_id(dedup);
            }
            (i, body.len(), entry.build().expect("id and body are set"))
        })
        .collect();
    // SQS caps a whole batch at 256 KiB, as it does one message: one large letter must not fail
    // nine others with it.
    let runs = pack(entries.iter().map(|(_, len, _)| len + 200), 10, 262_144);
    let mut entries = entries.into_iter();
    for run in runs {
        let batch: Vec<(usize, usize, SendMessageBatchRequestEntry)> =
            entries.by_ref().take(run.len()).collect();
        let sent: Vec<usize> = batch.iter().map(|(i, _, _)| *i).collect();
        match sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(batch.into_iter().map(|(_, _, e)| e).collect()))
            .send()
            .await
        {
            Ok(out) => {
                let answers = answered(
                    0..messages.len(),
                    out.successful.iter().map(|e| e.id.as_str()),
                    out.failed.iter().map(|e| (e.id.as_str(), e.code.as_str())),
                );
                for (i, answer) in answers.into_iter().enumerate() {
                    if !sent.contains(&i) {
                        continue;
                    }
                    match answer {
                        Answered::Done => {}
                        Answered::Failed(code) => {
                            outcomes[i] = Err(format!("{url} refused it: {code}"));
                        }
                        Answered::Unanswered => {
                            outcomes[i] =
                                Err(format!("{url}'s SendMessageBatch answer did not name it"));
                        }
                    }
                }
            }
            Err(e) => {
                let e = format!(
                    "cannot send to {url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                );
                for &i in &sent {
                    outcomes[i] = Err(e.clone());
                }
            }
        }
    }
    outcomes
}

/// Straight to Kafka through the drain, a chunk at a time.
async fn to_kafka(drain: &Drain, items: &[Item]) -> Vec<Result<(), String>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for chunk in items.chunks(KAFKA_CHUNK) {
        let records: Vec<SourceRecord> = chunk
            .iter()
            .map(|item| SourceRecord {
                item_id: item.id.clone(),
                group: None,
                data: item.data.clone(),
                buffered_at_ms: item.buffered_at_ms,
                trace: None,
                source: "replay".into(),
            })
            .collect();
        let report = drain
            .drain(
                &records,
                Ordering::Unordered,
                Instant::now() + Duration::from_secs(60),
            )
            .await;
        outcomes.extend(report.outcomes.iter().map(|o| match o {
            Outcome::Delivered => Ok(()),
            other => Err(format!("Kafka did not take it: {other:?}")),
        }));
    }
    outcomes
}

/// Back to a Kinesis stream with `PutRecords`; records the stream throttles are retried.
async fn to_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    items: &[Item],
) -> Vec<Result<(), String>> {
    let mut outcomes: Vec<Result<(), String>> =
        vec![Err(format!("{stream} did not take it")); items.len()];
    let keys: Vec<String> = items.iter().map(Item::stream_key).collect();
    let runs = pack(
        items.iter().zip(&keys).map(|(i, k)| i.data.len() + k.len()),
        500,
        5 * 1024 * 1024,
    );
    for run in runs {
        let mut pending: Vec<usize> = run.collect();
        for attempt in 0..STREAM_ATTEMPTS {
            let entries: Vec<_> = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(items[i].data.clone()))
                        .partition_key(&keys[i])
                        .build()
                        .expect("data and key are set")
                })
                .collect();
            match kinesis
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    // Written only where the answer names it written (a sequence number, no
                    // error); a record a retry wrote is written, whatever the attempt before said.
                    let mut still = Vec::new();
                    for (k, &i) in pending.iter().enumerate() {
                        outcomes[i] = match out.records.get(k) {
                            Some(r) if r.error_code.is_none() && r.sequence_number.is_some() => {
                                Ok(())
                            }
                            Some(r) => Err(format!(
                                "{stream} refused it: {}",
                                r.error_code.as_deref().unwrap_or("no sequence number")
                            )),
                            None => Err(format!("{stream}'s PutRecords answer did not name it")),
                        };
                        if outcomes[i].is_err() {
                            still.push(i);
                        }
                    }
                    pending = still;
                }
                Err(e) => {
                    let e = format!(
                        "cannot write to {stream}: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(&e)
                    );
                    for &i in &pending {
                        outcomes[i] = Err(e.clone());
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }
    outcomes
}

/// Deletes `messages` from the DLQ: for each, `Ok` only when the answer names it deleted.
async fn delete(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[&Message],
) -> Vec<Result<(), String>> {
    let mut outcomes = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .expect("set")
            })
            .collect();
        match sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => outcomes.extend(
                answered(
                    0..chunk.len(),
                    out.successful.iter().map(|e| e.id.as_str()),
                    out.failed.iter().map(|e| (e.id.as_str(), e.code.as_str())),
                )
                .into_iter()
                .map(|answer| match answer {
                    Answered::Done => Ok(()),
                    Answered::Failed(code) => Err(format!("{url} did not delete it: {code}")),
                    Answered::Unanswered => {
                        Err(format!("{url}'s DeleteMessageBatch answer did not name it"))
                    }
                }),
            ),
            Err(e) => {
                let e = format!(
                    "cannot delete from {url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                );
                outcomes.extend(chunk.iter().map(|_| Err(e.clone())));
            }
        }
    }
    outcomes
}

/// Sets the visibility timeout of `messages`, ten to a call; what fails simply becomes visible
/// when its current timeout ends.
async fn set_visibility(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[&Message],
    timeout: Duration,
) {
    let seconds = i32::try_from(timeout.as_secs()).unwrap_or(43_200);
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(seconds)
                    .build()
                    .expect("set")
            })
            .collect();
        let _ = sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
    }
}

/// The messages a run looked at and left in the DLQ, kept hidden until it ends (on a FIFO DLQ,
/// only remembered as seen).
struct Held {
    visibility: Duration,
    /// By message id: the latest copy (its receipt handle) and when its hiding lapses.
    messages: std::collections::HashMap<String, (Message, Instant)>,
    /// Looked at and made visible again (FIFO DLQs).
    seen: std::collections::HashSet<String>,
}

impl Held {
    fn new(visibility: Duration) -> Self {
        Self {
            visibility,
            messages: std::collections::HashMap::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    fn contains(&self, m: &Message) -> bool {
        let id = m.message_id().unwrap_or_default();
        self.messages.contains_key(id) || self.seen.contains(id)
    }

    /// Whether `m` is held hidden (not only seen).
    fn holds(&self, m: &Message) -> bool {
        self.messages
            .contains_key(m.message_id().unwrap_or_default())
    }

    /// Remembers `m` as looked at, without holding it.
    fn seen(&mut self, m: &Message) {
        self.seen
            .insert(m.message_id().unwrap_or_default().to_owned());
    }

    /// Holds `m`, just received (so hidden for the visibility timeout from now).
    fn hold(&mut self, m: Message) {
        let id = m.message_id().unwrap_or_default().to_owned();
        self.messages
            .insert(id, (m, Instant::now() + self.visibility));
    }

    /// Extends the hiding of the messages whose hiding lapses within half the visibility timeout.
    async fn keep_hidden(&mut self, sqs: &aws_sdk_sqs::Client, url: &str) {
        let soon = Instant::now() + self.visibility / 2;
        let lapsing: Vec<&Message> = self
            .messages
            .values()
            .filter(|(_, until)| *until <= soon)
            .map(|(m, _)| m)
            .collect();
        if lapsing.is_empty() {
            return;
        }
        let until = Instant::now() + self.visibility;
        set_visibility(sqs, url, &lapsing, self.visibility).await;
        for (_, lapses) in self.messages.values_mut().filter(|(_, u)| *u <= soon) {
            *lapses = until;
        }
    }

    /// Makes every held message visible again at once.
    async fn release_all(&mut self, sqs: &aws_sdk_sqs::Client, url: &str) {
        let all: Vec<&Message> = self.messages.values().map(|(m, _)| m).collect();
        set_visibility(sqs, url, &all, Duration::ZERO).await;
        self.messages.clear();
    }
}

/// Messages waiting in the DLQ now (for the progress bar).
pub async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<u64> {
    crate::status::queue(sqs, url).await.ok().map(|q| q.waiting)
}
