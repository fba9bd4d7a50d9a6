//! Exponential backoff with full jitter, inside a time budget.
//!
//! Full jitter (a delay drawn uniformly from zero to the exponential ceiling) spreads retries of
//! many clients that failed together — a burst of Lambda instances throttled by the same queue or
//! cluster — instead of having them retry in lock-step. The budget keeps retries inside the time
//! the caller has (an HTTP request, a Lambda invocation): when the next sleep would end past it,
//! there is no next attempt and the caller reports the failure instead.

use std::time::{Duration, Instant};

use rand::Rng as _;

/// Delays for successive retries of one operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    deadline: Instant,
    attempt: u32,
}

impl Backoff {
    /// Retries starting at up to `base`, doubling up to `cap`, all ending within `budget` from now.
    pub fn new(base: Duration, cap: Duration, budget: Duration) -> Self {
        Self::until(base, cap, Instant::now() + budget)
    }

    /// Like [`Backoff::new`], with an absolute deadline.
    pub fn until(base: Duration, cap: Duration, deadline: Instant) -> Self {
        Self {
            base,
            cap,
            deadline,
            attempt: 0,
        }
    }

    /// The delay before the next attempt, or `None` when waiting it would pass the deadline.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let ceiling = self
            .base
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.cap);
        self.attempt += 1;
        let delay = rand::rng().random_range(Duration::ZERO..=ceiling);
        (Instant::now() + delay < self.deadline).then_some(delay)
    }

    /// Retries handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Time left until the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_jittered_below_it() {
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(80),
            Duration::from_secs(60),
        );
        let ceilings = [10, 20, 40, 80, 80, 80];
        for ceiling in ceilings {
            let delay = backoff.next_delay().expect("inside the budget");
            assert!(
                delay <= Duration::from_millis(ceiling),
                "{delay:?} > {ceiling} ms"
            );
        }
        assert_eq!(backoff.attempts(), 6);
    }

    #[test]
    fn no_retry_once_the_budget_is_spent() {
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.remaining(), Duration::ZERO);
    }

    #[test]
    fn full_jitter_uses_the_whole_range() {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        let delays: Vec<_> = (0..200).filter_map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(25)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(75)));
    }
}
