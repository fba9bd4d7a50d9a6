//! `spillway replay`: dead-lettered messages back to a queue, into a Kinesis stream, or straight to
//! Kafka.
//!
//! (This file is the run's loop and its steps, about 500 lines; the letter contract, the targets,
//! the DLQ calls and Kinesis ranges are in the submodules.)
//!
//! Receive → write to the target → delete: a DLQ message is deleted only after its target
//! acknowledged it (delivery rule 2), so an interrupted replay — even `kill -9` — loses nothing;
//! running it again moves what is left. Messages in flight when it stopped may be written twice
//! (at most the in-flight window, [`RECEIVE_AT_ONCE`] letters); the copies carry the same envelope and so the
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

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use buffer_drain::drain::Drain;
use ingest_api::buffer::{KinesisBuffer, SqsBuffer};
use spillway_core::claim::Claim;
use spillway_core::envelope::{decode, Decoded, RawMode};

use crate::error::{aws, Error};
use held::{delete, set_visibility, Held};
use letter::{describe, letter, matches, Letter};

mod command;
mod error;
mod held;
pub mod kinesis;
mod letter;
mod target;

pub use command::{command, ReplayArgs, TargetArgs};
pub use error::NotMoved;

/// Where replayed messages go.
pub enum Target {
    /// Back to a queue (normally the DLQ's source), through ingest-api's writer.
    Queue(SqsBuffer),
    /// Straight to Kafka through the drain's producer.
    Kafka(Box<Drain>),
    /// Back to a Kinesis stream (normally the one the records came from), through ingest-api's
    /// writer.
    Stream(KinesisBuffer),
}

impl Target {
    /// A queue target for `url`, its message size limit read from the queue.
    pub async fn queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Self, Error> {
        let limit = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(aws(format!("read the attributes of {url}")))?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(spillway_core::limits::SQS_DEFAULT_MAX_MESSAGE_BYTES);
        Ok(Target::Queue(SqsBuffer::new(
            sqs.clone(),
            url.to_owned(),
            spillway_core::limits::is_fifo_queue(url),
            limit,
        )))
    }

    /// A stream target (a name or an ARN), written one call at a time so that records keep
    /// their order per partition key.
    pub fn stream(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Self {
        Target::Stream(KinesisBuffer::new(kinesis.clone(), stream.to_owned()).sequential())
    }
}

/// The shortest time a received letter stays hidden: long enough for a receive and the calls that
/// keep the letters a run holds hidden.
pub const MIN_VISIBILITY: Duration = Duration::from_secs(10);

/// The most letters one step of a run receives, writes and deletes: ten to a call, the calls
/// concurrent; a run starts at ten and doubles while the receives come back full.
/// Also the most a run killed part-way can have written and not deleted (written again by the
/// next run, with the same envelope id).
const RECEIVE_AT_ONCE: u64 = 80;

/// Letters whose records (an S3 object, a Kinesis range) are read at the same time.
const READS_AT_ONCE: usize = 8;

/// Which messages to move.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// Only messages whose spillway-reason attribute contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only messages at least this old (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Move at most this many.
    #[arg(long)]
    pub max: Option<u64>,
    /// How long received messages stay hidden while being moved (what was in flight when a
    /// replay was interrupted reappears after this long); at least 10s.
    #[arg(long = "visibility-timeout", default_value = "30s", value_parser = humantime::parse_duration)]
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

/// One replay: where from, where to, what.
pub struct Replay<'a> {
    /// The dead-letter queue's client.
    pub sqs: &'a aws_sdk_sqs::Client,
    /// Reads the ranges Kinesis on-failure records point to.
    pub kinesis: &'a aws_sdk_kinesis::Client,
    /// Reads back (and, once they are moved, removes) letters kept in S3 behind a claim check.
    pub s3: &'a aws_sdk_s3::Client,
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
    /// The drain's dead-letter bucket: claim checks are read only from it, under
    /// `dead-letters/` (a letter SQS moved keeps its sender's attributes, so a claim check
    /// naming some other object may not be the drain's). Without it, claim checks are not read.
    pub dlq_bucket: Option<&'a str>,
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its id in the buffer (SQS message id, Kinesis sequence number).
    pub id: String,
    /// The bytes the buffer held.
    pub data: Vec<u8>,
    /// The Kinesis partition key it had; `None` for a dead letter, whose key is derived only when it
    /// goes to a stream (ingest-api's rule: the envelope's Kafka key, else the id).
    pub partition_key: Option<String>,
    /// When the buffer took it, ms since the Unix epoch.
    pub buffered_at_ms: Option<u64>,
    /// The FIFO message group the letter had (kept when it goes back to a FIFO queue).
    pub group: Option<String>,
}

impl Item {
    /// The Kafka key of the envelope the record holds, if it holds one that has a key.
    fn envelope_key(&self) -> Option<Vec<u8>> {
        match decode(&self.data, RawMode::Reject) {
            Ok(Decoded::Envelope(env)) => env.key,
            _ => None,
        }
    }
}

impl Replay<'_> {
    /// Moves the messages; `progress` counts moved messages.
    pub async fn run(&self, progress: &indicatif::ProgressBar) -> Result<Summary, Error> {
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
        let mut width = 10;
        loop {
            let taken = summary.moved + summary.would_move;
            if filters.max.is_some_and(|max| taken >= max) || empty_receives >= 2 {
                held.release_all(self.sqs, self.dlq_url).await;
                return Ok(summary);
            }
            held.keep_hidden(self.sqs, self.dlq_url).await;
            let mut want = filters.max.map_or(width, |max| (max - taken).min(width));
            if let (Some(limiter), Some(rate), false) = (&limiter, self.rate, self.dry_run) {
                // Before the receive, not after: a letter's visibility timeout starts when it is
                // received, and all of it is for moving it. At most a second's worth at a time.
                want = want.min(u64::from(rate.get()));
                let n = NonZeroU32::new(u32::try_from(want).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN);
                let _ = limiter.until_n_ready(n).await;
            }
            let until = Instant::now() + filters.visibility.max(MIN_VISIBILITY) / 2;
            let received = self.receive(want).await?;
            // Wider while receives come back full, one call again once they do not (a DLQ
            // nearly empty gets one long poll, not eight).
            width = if received.len() as u64 >= want {
                (width * 2).min(RECEIVE_AT_ONCE)
            } else {
                10
            };
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
                    let refused = match letter(m) {
                        Ok(Letter::Claimed(_, claim)) => self.claim_allowed(&claim).err(),
                        _ => None,
                    };
                    if let Some(e) = refused {
                        note(&mut summary, progress, &e);
                    } else {
                        say(progress, describe(m));
                        summary.would_move += 1;
                    }
                }
                chosen.clone()
            } else {
                Vec::new()
            };
            self.pass_over(&mut held, rest.into_iter().chain(shown).collect())
                .await;
            if self.dry_run {
                continue;
            }
            self.move_letters(chosen, until, &mut summary, &mut held, progress)
                .await;
            if Instant::now() >= until {
                // The step needed all its time: take fewer letters at once.
                width = 10;
            }
        }
    }

    /// Writes `chosen` to the target and deletes from the DLQ what the target took; what is not
    /// deleted is held (and counted failed).
    async fn move_letters(
        &self,
        chosen: Vec<Message>,
        until: Instant,
        summary: &mut Summary,
        held: &mut Held,
        progress: &indicatif::ProgressBar,
    ) {
        // `until` is half the visibility timeout after the receive: reading and writing end
        // with half of it left, so the delete uses receipt handles that still hold (after that,
        // another reader could hold the letter and the delete would silently take nothing while
        // the S3 object was removed).
        let outcomes = self.write(&chosen, until).await;
        let mut written = Vec::new();
        for (m, outcome) in chosen.into_iter().zip(outcomes) {
            match outcome {
                Ok(done) => written.push((m, done)),
                Err(e) => {
                    note(summary, progress, &e);
                    held.hold(m);
                }
            }
        }
        let refs: Vec<&Message> = written.iter().map(|(m, _)| m).collect();
        let deleted = delete(self.sqs, self.dlq_url, &refs).await;
        for ((m, (records, claim)), deleted) in written.into_iter().zip(deleted) {
            match deleted {
                Ok(()) => {
                    summary.moved += 1;
                    summary.records += records;
                    progress.inc(1);
                    // Only now that the letter is gone: the object was its only copy. If this
                    // fails, the bucket's lifecycle removes it.
                    if let Some(claim) = claim {
                        if let Err(e) = spillway_core::claim::remove(self.s3, &claim).await {
                            say(progress, format!("moved, but its S3 object stays: {e}"));
                        }
                    }
                }
                Err(e) => {
                    note(summary, progress, &e);
                    held.hold(m);
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

    /// Up to `want` letters: `ReceiveMessage` calls of ten, at the same time.
    async fn receive(&self, want: u64) -> Result<Vec<Message>, Error> {
        let calls = (0..want.div_ceil(10)).map(|k| self.receive_some((want - 10 * k).min(10)));
        let mut messages: Vec<Message> = Vec::new();
        for received in futures::future::join_all(calls).await {
            for m in received? {
                // SQS may hand one message to two receives (at-least-once): the later copy's
                // receipt handle is the one that deletes it.
                match messages
                    .iter_mut()
                    .find(|have| have.message_id() == m.message_id())
                {
                    Some(have) => *have = m,
                    None => messages.push(m),
                }
            }
        }
        Ok(messages)
    }

    async fn receive_some(&self, want: u64) -> Result<Vec<Message>, Error> {
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
            .map_err(aws(format!("receive from {}", self.dlq_url)))?
            .messages
            .unwrap_or_default())
    }

    /// Claim checks are read only from the drain's bucket, under `dead-letters/`.
    fn claim_allowed(&self, claim: &Claim) -> Result<(), NotMoved> {
        if self.dlq_bucket == Some(claim.bucket.as_str())
            && claim
                .key
                .starts_with(spillway_core::dead_letter::CLAIM_PREFIX)
        {
            return Ok(());
        }
        Err(NotMoved::ClaimOutsideBucket {
            bucket: claim.bucket.clone(),
            key: claim.key.clone(),
            allowed: self.dlq_bucket.map_or_else(String::new, |b| {
                format!(" {b}/{}", spillway_core::dead_letter::CLAIM_PREFIX)
            }),
        })
    }

    /// The records `m` holds: its data, read back from S3 for a claim check or from the stream
    /// for a Kinesis on-failure record; and the claim, to remove once the letter is gone.
    async fn records(&self, m: &Message) -> Result<(Vec<Item>, Option<Claim>), NotMoved> {
        match letter(m)? {
            Letter::Data(item) => Ok((vec![item], None)),
            Letter::Claimed(mut item, claim) => {
                self.claim_allowed(&claim)?;
                item.data = spillway_core::claim::fetch(self.s3, &claim).await?;
                Ok((vec![item], Some(claim)))
            }
            Letter::Range(_) if matches!(self.target, Target::Queue(_)) => {
                Err(NotMoved::RangeToQueue)
            }
            Letter::Range(info) => Ok((kinesis::read(self.kinesis, &info).await?, None)),
        }
    }

    /// Writes each message to the target: `Ok((records written, claim))` once the target
    /// acknowledged all of the message's records, else why not.
    async fn write(
        &self,
        messages: &[Message],
        until: Instant,
    ) -> Vec<Result<(u64, Option<Claim>), NotMoved>> {
        use futures::StreamExt as _;
        // Reads (S3 objects, Kinesis ranges) a few at a time, within half the step's time: the
        // rest is the target's.
        let read_until = Instant::now() + until.saturating_duration_since(Instant::now()) / 2;
        let reads: Vec<_> = futures::stream::iter(messages)
            .map(|m| async move {
                tokio::time::timeout_at(read_until.into(), self.records(m))
                    .await
                    .unwrap_or(Err(NotMoved::NotReadInTime))
            })
            .buffered(READS_AT_ONCE)
            .collect()
            .await;
        let mut outcomes = Vec::with_capacity(messages.len());
        let (mut items, mut owner, mut send_ids) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (m, read)) in messages.iter().zip(reads).enumerate() {
            outcomes.push(read.map(|(records, claim)| {
                // One id per receive of the letter (see `target::write`).
                let send_id = uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    m.receipt_handle().unwrap_or_default().as_bytes(),
                )
                .simple()
                .to_string();
                for (k, _) in records.iter().enumerate() {
                    owner.push(i);
                    send_ids.push(if k == 0 {
                        send_id.clone()
                    } else {
                        format!("{send_id}-{k}")
                    });
                }
                items.extend(records);
                (0, claim)
            }));
        }
        let written = target::write(self.target, &items, &send_ids, self.raw_topic, until).await;
        for (i, ok) in owner.into_iter().zip(written) {
            if let Ok((n, _)) = &mut outcomes[i] {
                match ok {
                    Ok(()) => *n += 1,
                    Err(e) => outcomes[i] = Err(e),
                }
            }
        }
        outcomes
    }
}

/// Counts a letter not moved, and says why (the first few distinct reasons).
fn note(summary: &mut Summary, progress: &indicatif::ProgressBar, e: &NotMoved) {
    let e = e.to_string();
    summary.failed += 1;
    if summary.errors.len() < 10 && !summary.errors.contains(&e) {
        say(progress, format!("not moved: {e}"));
        summary.errors.push(e);
    }
}

/// A line for the operator: above the progress bar, or on stderr when there is none (a hidden
/// bar prints nothing — `--dry-run` used to show no letter at all).
fn say(progress: &indicatif::ProgressBar, line: String) {
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
    }
}

/// Messages waiting in the DLQ now (for the progress bar).
pub async fn waiting(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<u64> {
    crate::status::queue(sqs, url).await.ok().map(|q| q.waiting)
}
