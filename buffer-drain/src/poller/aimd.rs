//! How many batches the SQS poller produces at once: additive increase, multiplicative decrease
//! (AIMD), between 1 and `SPILLWAY_MAX_CONCURRENCY` (the workers, each with its own producer and
//! connections, all made through the connect limiter at start).
//!
//! A worker holding a received batch waits its turn (first come, first served) before it
//! produces it, and reports how the batch went when it is done ([`Permit::done`]):
//! - a batch that found a backlog (it came back full, or every answer of its last receive was as
//!   large as asked), that had to wait for its slot, and was produced as fast as usual raises
//!   the limit by one per round: one such batch for each slot of the limit (a batch that found a
//!   slot free was not held back by the limit, and raising it would change nothing);
//! - a batch that found no backlog (an answer came back short) lowers it by one: fewer, fuller
//!   batches do the work;
//! - a batch that failed as a whole, that the drain backed off for (authentication failures),
//!   any of whose records failed in Kafka or for want of it (refused, not acknowledged in time,
//!   queue full), or whose produce took more than three times the usual time and more than
//!   20 ms (a saturated broker) halves it, once per round: batches admitted before the last cut
//!   move the limit neither way. Every decrease starts the count towards the next raise anew.
//!
//! A batch's produce time is the longest enqueue-to-acknowledgement time among its records (not
//! its decoding or dead-letter writes). The usual time is the (upper) median of the last 32
//! produce times of batches that found a backlog and were not slow, so one batch in a latency
//! tail is not three times a median, and the batches of a saturated broker do not make
//! saturation the usual. At a limit of 1 slow times count too: a broker that is merely farther
//! away (a constant added latency) becomes the usual within about 16 batches instead of being
//! cut for ever.
//!
//! Known limits: a receive that returns short although the queue holds more (SQS samples a
//! subset of its servers; a short poll can come back empty) reads as no backlog and lowers the
//! limit by one, which the next full batches win back; with a batch size of 1 every batch received is
//! full, so a trickle never lowers it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

/// A batch this many times slower than the usual time is a sign of saturation.
const SLOWER: u32 = 3;

/// Produce times up to this are never called slow: a few milliseconds of noise is not saturation.
const NOISE: Duration = Duration::from_millis(20);

/// Produce times the usual time is the median of.
const SAMPLES: usize = 32;

/// The in-flight limit and the batches in flight. Slots are a fair semaphore: a batch waiting
/// for one is admitted before any batch that started waiting after it.
#[derive(Debug)]
pub struct Aimd {
    max: usize,
    slots: Semaphore,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Slots to take back as batches return them: the limit was cut below the slots in use.
    owed: usize,
    /// Batches that found a backlog and waited for their slots since the limit last moved.
    credit: usize,
    /// Incremented at every cut: a permit of an older round moves nothing.
    round: u64,
    /// The produce times of the last batches that found a backlog.
    recent: VecDeque<Duration>,
    peak: usize,
}

/// How an admitted batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The receive found a backlog (`Some(true)`), found none (`Some(false)`), or cannot say (a
    /// receive call failed).
    pub backlog: Option<bool>,
    /// It failed as a whole, the drain backed off for authentication failures before it, or some
    /// of its records failed in Kafka or for want of it (not acknowledged in time, queue full).
    pub trouble: bool,
    /// Its produce time: the longest enqueue-to-acknowledgement time of its records (`None`:
    /// nothing was acknowledged).
    pub produce: Option<Duration>,
}

/// A batch admitted to be produced; [`Permit::done`] (or dropping it) hands the slot back.
#[derive(Debug)]
pub struct Permit<'a> {
    aimd: &'a Aimd,
    slot: Option<SemaphorePermit<'a>>,
    round: u64,
    /// It waited for its slot: the limit held it back.
    bound: bool,
}

impl Aimd {
    /// A controller allowing between 1 and `max` batches at once, starting at 1.
    pub fn new(max: usize) -> Self {
        publish(1);
        Self {
            max: max.max(1),
            slots: Semaphore::new(1),
            state: Mutex::new(State {
                limit: 1,
                owed: 0,
                credit: 0,
                round: 0,
                recent: VecDeque::with_capacity(SAMPLES),
                peak: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// The highest limit so far.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// How many batches so far were slow or in trouble in a round of their own (each a halving,
    /// counted also at a limit of 1, where the limit stays).
    pub fn cuts(&self) -> u64 {
        self.lock().round
    }

    /// Waits for a slot, in turn; `None` once `stop` is cancelled.
    pub async fn admit(&self, stop: &CancellationToken) -> Option<Permit<'_>> {
        // A free slot is taken at once (the semaphore is fair: none is free while batches wait).
        if let Ok(slot) = self.slots.try_acquire() {
            return Some(self.permit(slot, false));
        }
        let slot = tokio::select! {
            slot = self.slots.acquire() => slot.ok()?,
            () = stop.cancelled() => return None,
        };
        Some(self.permit(slot, true))
    }

    fn permit<'a>(&'a self, slot: SemaphorePermit<'a>, waited: bool) -> Permit<'a> {
        Permit {
            aimd: self,
            slot: Some(slot),
            round: self.lock().round,
            bound: waited,
        }
    }

    #[cfg(test)]
    fn try_admit(&self) -> Option<Permit<'_>> {
        self.slots
            .try_acquire()
            .ok()
            .map(|slot| self.permit(slot, false))
    }

    fn settle(&self, permit: &mut Permit<'_>, outcome: Option<Outcome>) {
        let mut s = self.lock();
        let before = s.limit;
        if let Some(outcome) = outcome {
            self.react(&mut s, permit, outcome);
        }
        // Move the slots to the new limit: new ones are added; cut ones are taken from the free
        // slots, and what is missing is owed by the batches still in flight.
        if s.limit > before {
            let mut add = s.limit - before;
            let repaid = add.min(s.owed);
            s.owed -= repaid;
            add -= repaid;
            self.slots.add_permits(add);
        } else if s.limit < before {
            let cut = before - s.limit;
            let taken = self.slots.forget_permits(cut);
            s.owed += cut - taken;
        }
        if let Some(slot) = permit.slot.take() {
            if s.owed > 0 {
                s.owed -= 1;
                slot.forget();
            }
        }
        s.peak = s.peak.max(s.limit);
        publish(s.limit);
    }

    fn react(&self, s: &mut State, permit: &Permit<'_>, outcome: Outcome) {
        let slow = match (outcome.produce, median(&s.recent)) {
            (Some(produce), Some(usual)) => produce > NOISE.max(usual * SLOWER),
            _ => false,
        };
        // A slow time becomes a sample only at a limit of 1, where no cut can help any more: a
        // broker that is farther away becomes the usual, a saturated one does not while the
        // limit is being cut (by the batches of a higher limit, stale after the first cut).
        if outcome.backlog == Some(true) && !outcome.trouble && (!slow || s.limit == 1) {
            if let Some(produce) = outcome.produce {
                if s.recent.len() == SAMPLES {
                    s.recent.pop_front();
                }
                s.recent.push_back(produce);
            }
        }
        if permit.round != s.round {
            // Admitted before the last cut: its news is of the old limit, already acted on.
            return;
        }
        if outcome.trouble || slow {
            s.limit = (s.limit / 2).max(1);
            s.round += 1;
            s.credit = 0;
            return;
        }
        match outcome.backlog {
            Some(true) if permit.bound => {
                s.credit += 1;
                if s.credit >= s.limit {
                    s.limit = (s.limit + 1).min(self.max);
                    s.credit = 0;
                }
            }
            Some(false) => {
                s.limit = s.limit.saturating_sub(1).max(1);
                s.credit = 0;
            }
            _ => {}
        }
    }
}

/// The median of `recent` (the upper one of an even count).
fn median(recent: &VecDeque<Duration>) -> Option<Duration> {
    if recent.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = recent.iter().copied().collect();
    sorted.sort_unstable();
    Some(sorted[sorted.len() / 2])
}

/// The limit, on `/metrics`.
fn publish(limit: usize) {
    crate::service::metrics()
        .concurrency_limit
        .set(i64::try_from(limit).unwrap_or(i64::MAX));
}

impl Permit<'_> {
    /// The batch is done: its slot is free, and the limit moves by how it went.
    pub fn done(mut self, outcome: Outcome) {
        let aimd = self.aimd;
        aimd.settle(&mut self, Some(outcome));
    }
}

impl Drop for Permit<'_> {
    /// A permit dropped without [`Permit::done`] (a stop, or its task aborted) frees its slot only.
    fn drop(&mut self) {
        if self.slot.is_some() {
            let aimd = self.aimd;
            aimd.settle(self, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USUAL: Duration = Duration::from_millis(40);

    fn backlog(produce: Duration) -> Outcome {
        Outcome {
            backlog: Some(true),
            trouble: false,
            produce: Some(produce),
        }
    }

    /// A batch admitted after waiting for its slot (the limit held it back).
    fn queued(aimd: &Aimd) -> Permit<'_> {
        let mut permit = aimd.try_admit().expect("admitted");
        permit.bound = true;
        permit
    }

    /// A batch whose receive came back short.
    fn short(aimd: &Aimd) {
        queued(aimd).done(Outcome {
            backlog: Some(false),
            trouble: false,
            produce: Some(USUAL),
        });
    }

    /// Admits `n` at once (all must be admitted), as batches that waited for their slots, and
    /// reports `outcome` for each.
    fn round(aimd: &Aimd, n: usize, outcome: Outcome) {
        let permits: Vec<Permit<'_>> = (0..n).map(|_| queued(aimd)).collect();
        for p in permits {
            p.done(outcome);
        }
    }

    /// Rounds of as many batches as the limit allows.
    fn rounds(aimd: &Aimd, n: usize, outcome: Outcome) {
        for _ in 0..n {
            let limit = aimd.limit();
            round(aimd, limit, outcome);
        }
    }

    #[test]
    fn a_backlog_raises_the_limit_by_one_per_round_to_the_maximum_and_never_past_it() {
        let aimd = Aimd::new(4);
        assert_eq!(aimd.limit(), 1);
        let mut seen = vec![aimd.limit()];
        for _ in 0..6 {
            let limit = aimd.limit();
            round(&aimd, limit, backlog(USUAL));
            seen.push(aimd.limit());
        }
        // A round of batches that each waited for a slot: one step.
        assert_eq!(seen, [1, 2, 3, 4, 4, 4, 4]);
        rounds(&aimd, 40, backlog(USUAL));
        assert_eq!(aimd.limit(), 4);
    }

    #[test]
    fn when_every_slot_stays_busy_one_batch_per_slot_raises_the_limit_by_one() {
        let aimd = Aimd::new(8);
        // Steady state under a backlog: each batch is admitted into the last free slot.
        let mut held: VecDeque<Permit<'_>> = VecDeque::new();
        let mut seen = Vec::new();
        for _ in 0..10 {
            while aimd.slots.available_permits() > 0 {
                held.push_back(queued(&aimd));
            }
            let limit = aimd.limit();
            // Each done batch is replaced at once by a waiting one.
            for _ in 0..limit {
                let done = held.pop_front().expect("in flight");
                done.done(backlog(USUAL));
                if aimd.slots.available_permits() > 0 {
                    held.push_back(queued(&aimd));
                }
            }
            seen.push(aimd.limit());
        }
        assert!(
            seen.windows(2).all(|w| w[1] <= w[0] + 1),
            "one step per round at most: {seen:?}"
        );
        assert!(*seen.last().expect("rounds") >= 5, "{seen:?}");
    }

    #[test]
    fn the_limit_rises_only_when_it_held_batches_back() {
        let aimd = Aimd::new(8);
        rounds(&aimd, 6, backlog(USUAL));
        let limit = aimd.limit();
        assert!(limit >= 3, "{limit}");
        // One batch at a time while more are allowed: the limit is not what holds them back.
        for _ in 0..20 {
            aimd.try_admit().expect("free").done(backlog(USUAL));
        }
        assert_eq!(aimd.limit(), limit);
    }

    #[test]
    fn no_more_than_the_limit_is_admitted_and_a_dropped_batch_frees_its_slot() {
        let aimd = Aimd::new(4);
        let first = aimd.try_admit().expect("one at start");
        assert!(aimd.try_admit().is_none(), "the limit is 1");
        drop(first);
        assert_eq!(aimd.limit(), 1, "an aborted batch moves nothing");
        assert!(aimd.try_admit().is_some(), "and frees its slot");
    }

    #[test]
    fn a_cut_below_the_slots_in_use_is_repaid_as_batches_return() {
        let aimd = Aimd::new(8);
        rounds(&aimd, 60, backlog(USUAL));
        assert_eq!(aimd.limit(), 8);
        let mut permits: Vec<Permit<'_>> =
            (0..8).map(|_| aimd.try_admit().expect("slot")).collect();
        permits.remove(0).done(Outcome {
            backlog: Some(true),
            trouble: true,
            produce: None,
        });
        assert_eq!(aimd.limit(), 4);
        assert!(
            aimd.try_admit().is_none(),
            "seven in flight, the limit is 4"
        );
        for _ in 0..3 {
            permits.remove(0).done(backlog(USUAL));
        }
        assert!(aimd.try_admit().is_none(), "four in flight: still full");
        permits.remove(0).done(backlog(USUAL));
        let again = aimd.try_admit();
        assert!(again.is_some(), "three in flight: a slot is free");
        assert!(aimd.try_admit().is_none());
    }

    #[test]
    fn a_slow_or_backed_off_batch_halves_the_limit_once_per_round() {
        let aimd = Aimd::new(8);
        rounds(&aimd, 60, backlog(USUAL));
        assert_eq!(aimd.limit(), 8);
        // Eight batches in flight meet a saturated broker: one cut, not eight.
        round(&aimd, 8, backlog(USUAL * (SLOWER + 1)));
        assert_eq!(aimd.limit(), 4);
        // The next round is of the new limit, and cuts again while it stays slow.
        round(&aimd, 4, backlog(USUAL * (SLOWER + 1)));
        assert_eq!(aimd.limit(), 2);
        let backed_off = Outcome {
            backlog: Some(true),
            trouble: true,
            produce: None,
        };
        round(&aimd, 2, backed_off);
        round(&aimd, 1, backed_off);
        round(&aimd, 1, backed_off);
        assert_eq!(aimd.limit(), 1, "never below one");
        assert_eq!(aimd.cuts(), 5);
    }

    #[test]
    fn a_farther_broker_becomes_the_usual_and_the_limit_climbs_back() {
        let aimd = Aimd::new(4);
        rounds(&aimd, 40, backlog(USUAL));
        assert_eq!(aimd.limit(), 4);
        // Latency rises by a constant step: cuts at first, then the step is the usual time and
        // the limit climbs back to the maximum.
        let farther = USUAL * SLOWER + Duration::from_millis(10);
        rounds(&aimd, 200, backlog(farther));
        assert_eq!(aimd.limit(), 4);
    }

    #[test]
    fn without_a_backlog_the_limit_falls_to_one_and_unknowns_move_nothing() {
        let aimd = Aimd::new(4);
        rounds(&aimd, 40, backlog(USUAL));
        assert_eq!(aimd.limit(), 4);
        let unknown = Outcome {
            backlog: None,
            trouble: false,
            produce: Some(USUAL),
        };
        round(&aimd, 4, unknown);
        assert_eq!(aimd.limit(), 4);
        let none = Outcome {
            backlog: Some(false),
            trouble: false,
            produce: Some(USUAL),
        };
        for _ in 0..5 {
            round(&aimd, 1, none);
        }
        assert_eq!(aimd.limit(), 1);
    }

    #[test]
    fn noise_of_milliseconds_and_a_single_tail_are_not_saturation() {
        let aimd = Aimd::new(4);
        rounds(&aimd, 40, backlog(Duration::from_millis(1)));
        round(&aimd, 4, backlog(Duration::from_millis(15)));
        assert_eq!(aimd.limit(), 4);
        let tailed = Aimd::new(4);
        for i in 0..200u32 {
            let limit = tailed.limit();
            // Every tenth batch is at 2.5 × the usual: a tail, not saturation.
            let t = if i % 10 == 0 { USUAL * 5 / 2 } else { USUAL };
            round(&tailed, limit, backlog(t));
        }
        assert_eq!(tailed.limit(), 4);
        assert_eq!(tailed.cuts(), 0);
    }

    #[test]
    fn a_lone_batch_that_nobody_waited_behind_does_not_raise_the_limit() {
        let aimd = Aimd::new(4);
        // One worker at a time: each batch takes the only slot without waiting for it.
        for _ in 0..20 {
            aimd.try_admit().expect("free").done(backlog(USUAL));
        }
        assert_eq!(aimd.limit(), 1, "the limit held nothing back");
    }

    #[test]
    fn a_short_receive_clears_the_credit_towards_the_next_raise() {
        let aimd = Aimd::new(8);
        rounds(&aimd, 3, backlog(USUAL));
        let limit = aimd.limit();
        assert!(limit >= 3, "{limit}");
        // All but one of the batches a raise needs, then a short receive lowers the limit.
        let held: Vec<Permit<'_>> = (0..limit).map(|_| queued(&aimd)).collect();
        for p in held.into_iter().take(limit - 1) {
            p.done(backlog(USUAL));
        }
        assert_eq!(aimd.limit(), limit);
        short(&aimd);
        assert_eq!(aimd.limit(), limit - 1);
        // The credit of before the fall is gone: one more batch is not a round of the new limit.
        queued(&aimd).done(backlog(USUAL));
        assert_eq!(aimd.limit(), limit - 1);
    }

    #[test]
    fn a_stalled_broker_does_not_become_the_usual_while_the_limit_is_being_cut() {
        let aimd = Aimd::new(8);
        rounds(&aimd, 60, backlog(USUAL));
        assert_eq!(aimd.limit(), 8);
        let stalled = backlog(USUAL * (SLOWER + 1));
        // Every batch in flight meets the stall; the limit halves to 1.
        while aimd.limit() > 1 {
            let limit = aimd.limit();
            let held: Vec<Permit<'_>> = (0..limit).map(|_| queued(&aimd)).collect();
            for p in held {
                p.done(stalled);
            }
        }
        let cuts = aimd.cuts();
        // At 1, the stall is still called slow for several batches: the batches of the higher
        // limits, stale after the first cut of each round, did not make it the usual time.
        for _ in 0..8 {
            queued(&aimd).done(stalled);
        }
        assert_eq!(aimd.cuts(), cuts + 8, "each still seen as a stall");
    }

    #[tokio::test]
    async fn waiting_batches_are_admitted_in_turn_and_not_after_the_stop() {
        let aimd = std::sync::Arc::new(Aimd::new(2));
        let stop = CancellationToken::new();
        let first = aimd.try_admit().expect("first");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (aimd, stop, tx) = (aimd.clone(), stop.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                if let Some(p) = aimd.admit(&stop).await {
                    tx.send(i).expect("send");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    drop(p);
                }
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for w in waiters {
            w.await.expect("waiter");
        }
        let order: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2], "first come, first served");

        let _held = aimd.try_admit().expect("slot");
        let waiter = {
            let (aimd, stop) = (aimd.clone(), stop.clone());
            tokio::spawn(async move { aimd.admit(&stop).await.is_some() })
        };
        stop.cancel();
        assert!(!waiter.await.expect("task"), "stopped: not admitted");
    }
}
