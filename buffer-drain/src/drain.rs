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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use spillway_core::backoff::Backoff;
use spillway_core::kafka::context::ClientHealth;
use spillway_core::kafka::{classify, is_systemic_when_shared, Disposition, Producer};

/// A record on its way to the dead-letter queue.
#[derive(Debug)]
struct Letter {
    /// Its index in the batch.
    index: usize,
    /// The reason the dead letter carries.
    reason: String,
    /// Kafka refused it with an error that is systemic when every record shares it (rule 9).
    systemic_when_shared: bool,
}

impl Letter {
    fn poison(index: usize, reason: String) -> Self {
        Self {
            index,
            reason,
            systemic_when_shared: false,
        }
    }
}

use crate::dlq::DeadLetters;
use crate::message::{to_kafka, Decoding};
use crate::report::{DrainReport, Failure, KafkaFailure, Outcome};
use crate::source::{Ordering, SourceRecord};

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
        }
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
    #[allow(clippy::too_many_lines)] // the FIFO waves read best next to the unordered case
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
        // Records are decoded as they are enqueued, so librdkafka's thread sends the first ones while
        // the rest are still being decoded. `false`: produced already, or never to be produced.
        let mut plans: Vec<bool> = vec![true; records.len()];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        let mut latencies = Vec::new();
        match ordering {
            Ordering::Unordered | Ordering::Shard => {
                let all: Vec<usize> = (0..records.len()).collect();
                self.wave(
                    &client,
                    records,
                    &all,
                    &mut plans,
                    &mut outcomes,
                    &mut latencies,
                    deadline,
                )
                .await;
            }
            Ordering::FifoGroups => {
                // Wave k holds the k-th record of every group still going: a group's next record is
                // produced only once its previous one left the queue (acknowledged, dead-lettered);
                // a failure or a record unsettled at the deadline blocks the rest of its group.
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, r) in records.iter().enumerate() {
                    groups
                        .entry(r.group.as_deref().unwrap_or(""))
                        .or_default()
                        .push(i);
                }
                let longest = groups.values().map(Vec::len).max().unwrap_or(0);
                for k in 0..longest {
                    let wave: Vec<usize> =
                        groups.values().filter_map(|g| g.get(k).copied()).collect();
                    self.wave(
                        &client,
                        records,
                        &wave,
                        &mut plans,
                        &mut outcomes,
                        &mut latencies,
                        deadline,
                    )
                    .await;
                    for g in groups.values() {
                        let left = |i: &usize| {
                            matches!(
                                outcomes[*i],
                                Some(Outcome::Delivered | Outcome::DeadLettered(_))
                            )
                        };
                        let blocked = g.get(k).is_some_and(|i| !left(i));
                        if blocked {
                            for later in &g[k + 1..] {
                                outcomes[*later] = Some(Outcome::Failed(Failure::GroupBlocked));
                                plans[*later] = false;
                            }
                        }
                    }
                }
            }
        }
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
            produce_latencies: latencies,
            elapsed: started.elapsed(),
            backoff,
            auth_failures: client.health.auth_failures(),
        }
    }

    /// Produces the planned records among `indices` (skipping those already decided), then
    /// dead-letters those Kafka refused for good together with the undecodable ones.
    #[allow(clippy::too_many_arguments)]
    async fn wave(
        &self,
        client: &Arc<KafkaClient>,
        records: &[SourceRecord],
        indices: &[usize],
        plans: &mut [bool],
        outcomes: &mut [Option<Outcome>],
        latencies: &mut Vec<Duration>,
        deadline: Instant,
    ) {
        let producer = client.producer();
        let mut letters: Vec<Letter> = Vec::new();
        let mut sent_to_kafka: Vec<usize> = Vec::new();
        let mut pending = FuturesUnordered::new();
        for &i in indices {
            if outcomes[i].is_some() {
                continue;
            }
            if !std::mem::replace(&mut plans[i], false) {
                continue;
            }
            match to_kafka(&records[i], &self.decoding) {
                Err(e) => letters.push(Letter::poison(i, format!("undecodable: {e}"))),
                Ok(message) => {
                    if Instant::now() >= deadline {
                        outcomes[i] = Some(Outcome::Failed(Failure::DeadlineNear));
                        continue;
                    }
                    let headers = message.owned_headers();
                    let mut record = FutureRecord::to(&message.topic)
                        .payload(&message.value)
                        .headers(headers);
                    if let Some(key) = &message.key {
                        record = record.key(key);
                    }
                    if let Some(partition) = message.partition {
                        record = record.partition(partition);
                    }
                    let enqueued = Instant::now();
                    sent_to_kafka.push(i);
                    loop {
                        match producer.send_result(record) {
                            Ok(delivery) => {
                                pending.push(async move { (i, enqueued, delivery.await) });
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) => {
                                record = back;
                                // Make room: take the next acknowledgement, or wait a moment.
                                let next = tokio::time::timeout_at(deadline.into(), async {
                                    let done = pending.next().await;
                                    if done.is_none() {
                                        tokio::time::sleep(Duration::from_millis(5)).await;
                                    }
                                    done
                                })
                                .await;
                                match next {
                                    Ok(Some((j, at, result))) => {
                                        settle(j, at, result, outcomes, &mut letters, latencies);
                                    }
                                    Ok(None) => {}
                                    Err(_) => {
                                        outcomes[i] = Some(Outcome::Failed(Failure::QueueFull));
                                        break;
                                    }
                                }
                            }
                            Err((e, _)) => {
                                decide(i, &e, outcomes, &mut letters);
                                break;
                            }
                        }
                    }
                }
            }
        }
        while let Ok(Some((i, at, result))) =
            tokio::time::timeout_at(deadline.into(), pending.next()).await
        {
            settle(i, at, result, outcomes, &mut letters, latencies);
        }
        // Whatever is still pending is reported undelivered by `drain`, and comes again.
        if !pending.is_empty() {
            drop(pending);
            self.purge(client).await;
        }
        let letters = self.systemic_check(&sent_to_kafka, letters, outcomes);
        self.dead_letter(
            records,
            letters,
            outcomes,
            deadline + self.dead_letter_grace,
        )
        .await;
    }

    /// Rule 5: a record still in librdkafka at the deadline is reported undelivered and comes
    /// again from the buffer, so this copy must never be sent too: Lambda freezes the container
    /// after the invocation, and once thawed, librdkafka would send it — after newer records, out
    /// of order in its FIFO group or shard. It is purged (queued and in flight: an answer to a
    /// request already sent no longer matters). A purge leaves a gap in the idempotent producer's
    /// sequence numbers, which the broker would refuse (and librdkafka then turns fatal), so the
    /// purged producer is replaced before the next batch. Without a way to replace it (no
    /// [`Drain::with_rebuild`]) nothing is purged.
    async fn purge(&self, client: &Arc<KafkaClient>) {
        use rdkafka::producer::{Producer as _, PurgeConfig};
        if self.rebuild.is_none() {
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

    /// Rule 9: when Kafka took none of the batch's records and every record of this wave it
    /// refused for good was refused with an error that can be the cluster's or IAM's
    /// ([`spillway_core::kafka::is_systemic_when_shared`]: not authorised, unknown topic), the
    /// records are not poison: they fail retryably (the batch fails, the mapping backs off) and
    /// the next batch backs off too, instead of the whole stream going to the DLQ. Records that
    /// failed transiently or were still unacknowledged at the deadline do not make a refusal
    /// per-record; one record of the batch Kafka took does (in a FIFO batch, in any wave).
    fn systemic_check(
        &self,
        produced: &[usize],
        letters: Vec<Letter>,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<Letter> {
        let mut in_wave = vec![false; outcomes.len()];
        for &i in produced {
            in_wave[i] = true;
        }
        let refused: Vec<&Letter> = letters.iter().filter(|l| in_wave[l.index]).collect();
        let took_any = outcomes
            .iter()
            .any(|o| matches!(o, Some(Outcome::Delivered)));
        let systemic =
            !took_any && !refused.is_empty() && refused.iter().all(|l| l.systemic_when_shared);
        if !systemic {
            return letters;
        }
        self.systemic
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(records = refused.len(), reason = %refused[0].reason, "Kafka took nothing and refused the records as unauthorised or unknown: systemic, backing off");
        letters
            .into_iter()
            .filter(|l| {
                if in_wave[l.index] {
                    outcomes[l.index] = Some(Outcome::Failed(Failure::Kafka {
                        disposition: KafkaFailure::Systemic,
                        detail: l.reason.clone(),
                    }));
                    false
                } else {
                    true
                }
            })
            .collect()
    }

    async fn dead_letter(
        &self,
        records: &[SourceRecord],
        letters: Vec<Letter>,
        outcomes: &mut [Option<Outcome>],
        until: Instant,
    ) {
        if letters.is_empty() {
            return;
        }
        let Some(dlq) = &self.dead_letters else {
            for Letter { index, reason, .. } in letters {
                tracing::warn!(item = %records[index].item_id, %reason, "poison record, no SPILLWAY_DLQ_URL: reported failed");
                outcomes[index] = Some(Outcome::Failed(Failure::PoisonWithoutDeadLetterQueue(
                    reason,
                )));
            }
            return;
        };
        let batch: Vec<(&SourceRecord, String)> = letters
            .iter()
            .map(|l| (&records[l.index], l.reason.clone()))
            .collect();
        for (Letter { index, reason, .. }, sent) in
            letters.into_iter().zip(dlq.send(&batch, until).await)
        {
            outcomes[index] = Some(match sent {
                Ok(()) => Outcome::DeadLettered(reason),
                Err(error) => Outcome::Failed(Failure::DeadLetterWrite { reason, error }),
            });
        }
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

type Delivery = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

fn settle(
    i: usize,
    enqueued: Instant,
    result: Delivery,
    outcomes: &mut [Option<Outcome>],
    letters: &mut Vec<Letter>,
    latencies: &mut Vec<Duration>,
) {
    match result {
        Ok(Ok(_)) => {
            latencies.push(enqueued.elapsed());
            outcomes[i] = Some(Outcome::Delivered);
        }
        Ok(Err((e, _))) => decide(i, &e, outcomes, letters),
        Err(_) => {
            outcomes[i] = Some(Outcome::Failed(Failure::ReportDropped));
        }
    }
}

fn decide(
    i: usize,
    error: &KafkaError,
    outcomes: &mut [Option<Outcome>],
    letters: &mut Vec<Letter>,
) {
    match classify(error) {
        Disposition::DeadLetter(reason) => letters.push(Letter {
            index: i,
            reason: format!("kafka: {reason} ({error})"),
            systemic_when_shared: is_systemic_when_shared(error),
        }),
        Disposition::BackOff => {
            outcomes[i] = Some(Outcome::Failed(Failure::Kafka {
                disposition: KafkaFailure::BackOff,
                detail: error.to_string(),
            }));
        }
        Disposition::Retry => {
            outcomes[i] = Some(Outcome::Failed(Failure::Kafka {
                disposition: KafkaFailure::Retry,
                detail: error.to_string(),
            }));
        }
    }
}
