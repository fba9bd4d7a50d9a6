//! The drain core: a batch of buffer records in, every record produced to Kafka, one outcome per
//! record out.
//!
//! The whole batch is enqueued, then the delivery reports are awaited together. librdkafka's queue
//! is bounded (see [`spillway_core::kafka::producer_config`]); when it is full the drain waits for
//! the oldest outstanding delivery and enqueues again, so a 10,000-record batch of large messages
//! never grows memory without bound and no record fails for `QueueFull`. Nothing is enqueued after
//! the deadline, and what has not been acknowledged by then is reported undelivered (it returns
//! to the buffer; if it reaches Kafka after all, the retry is a duplicate with the same
//! `spillway-id`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_core::backoff::Backoff;
use spillway_core::kafka::context::ClientHealth;
use spillway_core::kafka::Producer;

mod batch;

use crate::dlq::DeadLetters;
use crate::message::Decoding;
use crate::report::{DrainReport, Failure, Outcome};
use crate::source::{Ordering, SourceRecord};
use batch::Batch;

/// The drain: one producer per container, created at init and reused by every invocation.
pub struct Drain {
    /// The producer in use; replaced when librdkafka puts it in its fatal state or the drain
    /// purged it at a deadline.
    client: Mutex<Arc<KafkaClient>>,
    /// Makes a new producer (through the connect limiter) to replace an unusable one.
    rebuild: Option<Rebuild>,
    dead_letters: Option<DeadLetters>,
    decoding: Decoding,
    auth: Mutex<AuthBackoff>,
    backoffs: std::sync::atomic::AtomicU64,
    /// Batches that every record failed with one systemic error (rule 9): counted with
    /// authentication failures, so the next batch backs off the same way.
    systemic: std::sync::atomic::AtomicU64,
    rebuilds: std::sync::atomic::AtomicU64,
    /// Authentication failures of the producers replaced so far: backoff keeps counting across a
    /// replacement (a new producer's own counter starts at zero).
    retired_auth_failures: std::sync::atomic::AtomicU64,
    /// How long dead-letter writes may run past the deadline (rule 5: bounded work after it).
    dead_letter_grace: Duration,
    /// Where claim-checked values are read from (`SPILLWAY_CLAIM_BUCKET`).
    value_claims: Option<ValueClaims>,
    /// Purge what the producer still holds when a batch reaches its deadline ([`Drain::purge`]);
    /// off when concurrent invocations share the producer
    /// ([`Drain::shared_by_concurrent_invocations`]).
    purge_at_deadline: bool,
    /// One replacement of the producer at a time: batches that find it unusable together wait
    /// for the first one's replacement instead of each making (and discarding) their own.
    replacing: tokio::sync::Mutex<()>,
}

/// The S3 bucket ingest-api keeps values too large for the buffer in (issue 18): the drain
/// reads a claim-checked value from it before producing, and removes the object once Kafka
/// acknowledged the record. Only objects under [`spillway_core::claim::VALUE_PREFIX`] of this
/// bucket are read, whatever a message names: a producer that can write to the buffer cannot
/// make the drain forward other objects.
#[derive(Debug, Clone)]
pub struct ValueClaims {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ValueClaims {
    /// Claims in `bucket`, read with `client`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

/// Why a claim-checked value is not there to produce.
enum Unfetched {
    /// For good (gone, changed, outside the bucket): the record is dead-lettered with this
    /// reason, and its object, if any, stays for the lifecycle (or a replay) to find.
    Poison(String),
    /// For now: the record comes again.
    Retry(Failure),
    /// Delivered before: the object is the drain's marker ([`spillway_core::claim::DELIVERED_METADATA`]).
    Delivered,
}

/// A producer and its failure counters.
struct KafkaClient {
    /// `None` only while it is being dropped.
    producer: Option<Producer>,
    health: Arc<ClientHealth>,
    /// What librdkafka still held at a batch's deadline was purged: the idempotent producer's
    /// sequence numbers now have a gap, so it is replaced before the next batch.
    purged: std::sync::atomic::AtomicBool,
}

impl KafkaClient {
    fn new(producer: Producer, health: Arc<ClientHealth>) -> Arc<Self> {
        Arc::new(Self {
            producer: Some(producer),
            health,
            purged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn producer(&self) -> &Producer {
        self.producer
            .as_ref()
            .expect("the producer is there until the client is dropped")
    }
}

impl Drop for KafkaClient {
    /// Dropping a producer flushes for up to 500 ms and waits for librdkafka's threads to end:
    /// never on an async worker thread.
    fn drop(&mut self) {
        if let (Some(producer), Ok(runtime)) =
            (self.producer.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn_blocking(move || drop(producer));
        }
    }
}

/// Makes a replacement producer: [`spillway_core::kafka::producer`] for the drain's settings.
pub type Rebuild = Arc<
    dyn Fn() -> futures::future::BoxFuture<
            'static,
            Result<(Producer, Arc<ClientHealth>), spillway_core::kafka::KafkaSetupError>,
        > + Send
        + Sync,
>;

/// Backoff after authentication failures and throttled connections, across invocations.
#[derive(Debug, Default)]
struct AuthBackoff {
    /// Authentication failures already accounted for.
    seen: u64,
    /// Batches in a row that saw new failures.
    streak: u32,
}

/// The first backoff after an authentication failure waits up to this long, doubling per batch
/// that fails again, up to [`AUTH_BACKOFF_CAP`].
const AUTH_BACKOFF_BASE: Duration = Duration::from_millis(250);
const AUTH_BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Dead-letter writes may run this long past the deadline unless [`Drain::with_dead_letter_grace`]
/// says otherwise: the Lambda binary gives them half of `SPILLWAY_DEADLINE_MARGIN`.
const DEFAULT_DEAD_LETTER_GRACE: Duration = Duration::from_secs(1);

impl Drain {
    /// A drain producing with `producer`; poison records go to `dead_letters` when given, else they
    /// are reported failed (and reach the buffer's own DLQ after `maxReceiveCount`).
    pub fn new(
        producer: Producer,
        health: Arc<ClientHealth>,
        dead_letters: Option<DeadLetters>,
        decoding: Decoding,
    ) -> Self {
        Self {
            client: Mutex::new(KafkaClient::new(producer, health)),
            rebuild: None,
            dead_letters,
            decoding,
            auth: Mutex::default(),
            backoffs: std::sync::atomic::AtomicU64::new(0),
            systemic: std::sync::atomic::AtomicU64::new(0),
            rebuilds: std::sync::atomic::AtomicU64::new(0),
            retired_auth_failures: std::sync::atomic::AtomicU64::new(0),
            dead_letter_grace: DEFAULT_DEAD_LETTER_GRACE,
            value_claims: None,
            purge_at_deadline: true,
            replacing: tokio::sync::Mutex::new(()),
        }
    }

    /// The drain of an environment that serves several invocations at once (Lambda Managed
    /// Instances): an unordered batch that reaches its deadline with records still in the
    /// producer reports them undelivered as always, but does not purge the producer — that would
    /// fail the records of every other invocation in flight, and purge-and-replace the one
    /// producer they share. Purging is for the environment Lambda freezes after an invocation,
    /// whose held records would be sent when it thaws, after newer ones; this one is not frozen,
    /// and a held record of a standard queue has no order to keep: it is sent (or times out) now,
    /// a duplicate of the same id at most (rule 7). An ordered batch (a FIFO group, a shard) still
    /// purges: its records come again, perhaps to another environment's producer, and the held
    /// copy must not land after them. The other invocations' records then fail retryably (they
    /// come again; throughput, not order, pays).
    #[must_use]
    pub fn shared_by_concurrent_invocations(mut self) -> Self {
        self.purge_at_deadline = false;
        self
    }

    /// Claim-checked values are read from (and, once delivered, removed from) `claims`.
    #[must_use]
    pub fn with_value_claims(mut self, claims: ValueClaims) -> Self {
        self.value_claims = Some(claims);
        self
    }

    /// The value `claim` names, checked against its length and digest, by `deadline`.
    async fn fetch_value(
        &self,
        claim: &spillway_core::claim::Claim,
        deadline: Instant,
    ) -> Result<Vec<u8>, Unfetched> {
        let Some(claims) = &self.value_claims else {
            return Err(Unfetched::Retry(Failure::ClaimUnavailable(
                "SPILLWAY_CLAIM_BUCKET is not set, so values kept in S3 cannot be read".into(),
            )));
        };
        if claim.bucket != claims.bucket
            || !claim.key.starts_with(spillway_core::claim::VALUE_PREFIX)
        {
            return Err(Unfetched::Poison(format!(
                "the claim check names an object outside s3://{}/{} (SPILLWAY_CLAIM_BUCKET)",
                claims.bucket,
                spillway_core::claim::VALUE_PREFIX
            )));
        }
        let get = async {
            use spillway_core::claim::ReadError;
            match spillway_core::claim::read(&claims.client, claim).await {
                Ok(Some(data)) => Ok(data),
                Ok(None) => Err(Unfetched::Delivered),
                Err(ReadError::Gone(m) | ReadError::Changed(m)) => Err(Unfetched::Poison(m)),
                Err(ReadError::Unavailable(m)) => {
                    Err(Unfetched::Retry(Failure::ClaimUnavailable(m)))
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), get)
            .await
            .unwrap_or(Err(Unfetched::Retry(Failure::DeadlineNear)))
    }

    /// Replaces the values of claim-checked records Kafka acknowledged with the delivered marker
    /// ([`spillway_core::claim::DELIVERED_METADATA`]: an empty object), within the dead-letter
    /// grace after `deadline`: the value is gone, and a copy of the message that comes again is
    /// known as delivered. An object left as it was (S3 down, the grace spent) is produced again
    /// if its message comes again (a duplicate with the same `spillway-id`), else the bucket's
    /// lifecycle removes it.
    async fn mark_values_delivered(
        &self,
        delivered: Vec<spillway_core::claim::Claim>,
        deadline: Instant,
    ) {
        let Some(claims) = &self.value_claims else {
            return;
        };
        if delivered.is_empty() {
            return;
        }
        let until = deadline + self.dead_letter_grace;
        let marks = delivered.iter().map(|claim| async move {
            let mark = claims
                .client
                .put_object()
                .bucket(&claim.bucket)
                .key(&claim.key)
                .metadata(spillway_core::claim::DELIVERED_METADATA, "1")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
                .send();
            if !matches!(tokio::time::timeout_at(until.into(), mark).await, Ok(Ok(_))) {
                tracing::warn!(bucket = %claim.bucket, key = %claim.key, "the delivered value's object was kept; the bucket's lifecycle removes it");
            }
        });
        futures::future::join_all(marks).await;
    }

    /// Dead-letter writes of a batch end at most `grace` after its deadline; what is not written by
    /// then is reported failed (and comes again), never dropped.
    #[must_use]
    pub fn with_dead_letter_grace(mut self, grace: Duration) -> Self {
        self.dead_letter_grace = grace;
        self
    }

    /// A producer in librdkafka's fatal state (an idempotent producer whose sequence numbers
    /// desynchronised) fails every record from then on; `rebuild` makes its replacement.
    #[must_use]
    pub fn with_rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    fn current(&self) -> Arc<KafkaClient> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Why the producer must be replaced before it is used again: librdkafka put it in its fatal
    /// state, or the drain purged it at a deadline.
    fn unusable(client: &KafkaClient) -> Option<String> {
        use rdkafka::producer::Producer as _;
        if client.purged.load(std::sync::atomic::Ordering::Relaxed) {
            return Some("what it still held at a deadline was purged".into());
        }
        client
            .producer()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("fatal state, {code:?}: {reason}"))
    }

    /// Replaces the unusable producer `old` (unless another batch already did). `false` when there
    /// is no way to (no rebuild given) or it failed; the next batch tries again.
    async fn replace(&self, old: &Arc<KafkaClient>, why: &str) -> bool {
        if !Arc::ptr_eq(old, &self.current()) {
            return true;
        }
        let Some(rebuild) = &self.rebuild else {
            tracing::error!(%why, "the Kafka producer is unusable and cannot be rebuilt");
            return false;
        };
        let _one_at_a_time = self.replacing.lock().await;
        if !Arc::ptr_eq(old, &self.current()) {
            return true; // replaced while this batch waited for the other's replacement
        }
        tracing::warn!(%why, "replacing the Kafka producer");
        match rebuild().await {
            Ok((producer, health)) => {
                let mut current = self
                    .client
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !Arc::ptr_eq(old, &current) {
                    return true; // another batch replaced it meanwhile; this one is dropped
                }
                // The new producer's counter starts at zero: the old one's count is kept, so a
                // backoff streak goes on across the replacement.
                self.retired_auth_failures.fetch_add(
                    old.health.auth_failures(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                *current = KafkaClient::new(producer, health);
                drop(current);
                self.rebuilds
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the replacement Kafka producer could not be made");
                false
            }
        }
    }

    /// The producer to use: the current one, or its replacement when it is unusable (made
    /// before `deadline`, or not at all). `Err`: unusable and not replaced; the batch comes again.
    async fn usable_client(&self, deadline: Instant) -> Result<Arc<KafkaClient>, Arc<KafkaClient>> {
        let client = self.current();
        let Some(why) = Self::unusable(&client) else {
            return Ok(client);
        };
        let replaced = tokio::time::timeout_at(deadline.into(), self.replace(&client, &why)).await;
        let current = self.current();
        match replaced {
            Ok(true) if Self::unusable(&current).is_none() => Ok(current),
            Ok(_) => Err(client),
            Err(_) => {
                tracing::warn!("no new Kafka producer before the deadline");
                Err(client)
            }
        }
    }

    /// Readiness ([`crate::service`]): the producer is usable — one in librdkafka's fatal state
    /// or purged at a deadline is replaced here, within `timeout`, rather than by the next batch
    /// — and its MSK IAM token (if it uses one) has not expired; with `ask_broker`, a broker also
    /// answers a metadata request within `timeout`. `Err` says which failed.
    pub async fn probe(&self, timeout: Duration, ask_broker: bool) -> Result<(), String> {
        let client = self
            .usable_client(Instant::now() + timeout)
            .await
            .map_err(|old| {
                format!(
                    "the producer is unusable ({}) and was not replaced",
                    Self::unusable(&old).unwrap_or_default()
                )
            })?;
        if let Some(problem) = client.health.token_problem() {
            return Err(problem);
        }
        if !ask_broker {
            return Ok(());
        }
        // A blocking librdkafka call: off the async worker threads.
        let answer = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            client
                .producer()
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
        })
        .await;
        match answer {
            Ok(Ok(brokers)) if brokers > 0 => Ok(()),
            Ok(Ok(_)) => Err("the cluster's metadata names no broker".into()),
            Ok(Err(e)) => Err(format!(
                "no broker answered a metadata request within {} ms: {e}",
                timeout.as_millis()
            )),
            Err(e) => Err(format!("the metadata probe failed: {e}")),
        }
    }

    /// Producers replaced (after librdkafka's fatal state or a purge at a deadline), since
    /// creation.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Failures that call for a backoff: authentication failures (of every producer so far) and
    /// systemic batch failures.
    fn backoff_signals(&self) -> u64 {
        self.current().health.auth_failures()
            + self
                .retired_auth_failures
                .load(std::sync::atomic::Ordering::Relaxed)
            + self.systemic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Backoffs (waits or handed-back batches) after authentication failures, since creation.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After authentication failures or throttled connections, waits a full-jitter exponential
    /// delay before producing — nothing is produced meanwhile. `Err` when that delay would pass
    /// the deadline: the batch is then handed back undelivered.
    async fn back_off_if_needed(&self, deadline: Instant) -> Result<Option<Duration>, ()> {
        let delay = {
            let mut auth = self
                .auth
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let failures = self.backoff_signals();
            if failures > auth.seen {
                auth.seen = failures;
                auth.streak = auth.streak.saturating_add(1);
            }
            if auth.streak == 0 {
                return Ok(None);
            }
            self.backoffs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut backoff = Backoff::until(AUTH_BACKOFF_BASE, AUTH_BACKOFF_CAP, deadline);
            let mut delay = None;
            for _ in 0..auth.streak {
                delay = backoff.next_delay();
            }
            delay
        };
        match delay {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(Some(delay))
            }
            None => Err(()),
        }
    }

    /// A batch that delivered something ends the backoff streak (unless it saw new failures). A
    /// producer that turned fatal or was purged during the batch is replaced by the next batch,
    /// within that batch's time (what it did not deliver already failed retryably: classify()
    /// calls `Fatal` and purges Retry).
    fn after_batch(&self, delivered_any: bool) {
        if delivered_any {
            self.settle_backoff();
        }
    }

    /// A batch without new authentication failures ends the backoff streak.
    fn settle_backoff(&self) {
        let mut auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.backoff_signals() == auth.seen {
            auth.streak = 0;
        }
    }

    /// Produces `records`, keeping `ordering`, and stops at `deadline`.
    pub async fn drain(
        &self,
        records: &[SourceRecord],
        ordering: Ordering,
        deadline: Instant,
    ) -> DrainReport {
        let started = Instant::now();
        let client = match self.usable_client(deadline).await {
            Ok(client) => client,
            Err(fatal) => return failed_whole(records, Failure::ProducerUnusable, started, &fatal),
        };
        let Ok(backoff) = self.back_off_if_needed(deadline).await else {
            return failed_whole(records, Failure::BackingOff, started, &client);
        };
        let mut batch = Batch::new(
            self,
            &client,
            records,
            deadline,
            ordering != Ordering::Unordered,
        );
        match ordering {
            Ordering::Unordered | Ordering::Shard => {
                let all: Vec<usize> = (0..records.len()).collect();
                batch.wave(&all).await;
            }
            Ordering::FifoGroups => batch.fifo_waves().await,
        }
        let outcomes = batch.outcomes;
        let delivered_values = batch
            .value_claims
            .into_iter()
            .zip(&outcomes)
            .filter_map(|(claim, o)| claim.filter(|_| matches!(o, Some(Outcome::Delivered))))
            .collect();
        self.mark_values_delivered(delivered_values, deadline).await;
        self.after_batch(
            outcomes
                .iter()
                .any(|o| matches!(o, Some(Outcome::Delivered))),
        );
        DrainReport {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Outcome::Failed(Failure::Unacknowledged)))
                .collect(),
            produce_latencies: batch.latencies,
            elapsed: started.elapsed(),
            backoff,
            auth_failures: client.health.auth_failures(),
        }
    }

    /// Rule 5: a record still in librdkafka at the deadline is reported undelivered and comes
    /// again from the buffer, so this copy must never be sent too: Lambda freezes the container
    /// after the invocation, and once thawed, librdkafka would send it — after newer records, out
    /// of order in its FIFO group or shard. It is purged (queued and in flight: an answer to a
    /// request already sent no longer matters). A purge leaves a gap in the idempotent producer's
    /// sequence numbers, which the broker would refuse (and librdkafka then turns fatal), so the
    /// purged producer is replaced before the next batch. Without a way to replace it (no
    /// [`Drain::with_rebuild`]) nothing is purged.
    /// Shared by concurrent invocations, only an `ordered` batch purges (see
    /// [`Drain::shared_by_concurrent_invocations`]).
    async fn purge(&self, client: &Arc<KafkaClient>, ordered: bool) {
        use rdkafka::producer::{Producer as _, PurgeConfig};
        if self.rebuild.is_none() || !(self.purge_at_deadline || ordered) {
            return;
        }
        client
            .purged
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // The purge waits for librdkafka's broker threads: not on an async worker thread.
        let purged = client.clone();
        let done = tokio::task::spawn_blocking(move || {
            purged
                .producer()
                .purge(PurgeConfig::default().queue().inflight());
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "purging the Kafka producer failed");
        }
    }

    /// Rule 9: Kafka took none of the batch and refused it as unauthorised or unknown.
    fn count_systemic(&self) {
        self.systemic
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every record of the batch failed retryably with `failure`, before anything was produced.
fn failed_whole(
    records: &[SourceRecord],
    failure: Failure,
    started: Instant,
    client: &KafkaClient,
) -> DrainReport {
    DrainReport {
        outcomes: vec![Outcome::Failed(failure); records.len()],
        produce_latencies: Vec::new(),
        elapsed: started.elapsed(),
        backoff: None,
        auth_failures: client.health.auth_failures(),
    }
}
