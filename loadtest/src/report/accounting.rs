//! The accounting: lost = accepted − delivered, from what the generator sent and what the
//! consumer observed, with the latency percentiles and per-second series of a run.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::generator::Sent;
use crate::observe::Observed;
use crate::scenario::Scenario;

/// Requests the generator keeps in flight at most (its connections).
pub const MAX_IN_FLIGHT: usize = 512;

/// Percentiles, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p99_9: f64,
}

/// Nearest-rank percentiles of `values` (sorted here).
pub fn percentiles(values: &mut [f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    Some(Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        p99_9: at(0.999),
    })
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// What it does.
    pub title: String,
    /// `spillway` or `direct (AWS sample pattern)`.
    pub mode: String,
    /// `sqs` or `kinesis` (`-` for direct).
    pub buffer: String,
    /// Requests the schedule offered.
    pub offered: u64,
    /// Requests sent.
    pub sent: u64,
    /// Not sent: the generator was at its connection limit.
    pub not_sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    /// Other answers by status ("no answer" for transport errors and timeouts).
    pub rejected: BTreeMap<String, u64>,
    /// Accepted ids the consumer saw.
    pub delivered: u64,
    /// Accepted and never delivered. Must be 0.
    pub lost: u64,
    /// Records whose id had been seen before.
    pub duplicates: u64,
    /// Delivered ids the live consumer never saw, found by re-reading the topic at the end (the
    /// broker's doing, not the pipeline's: they are counted delivered).
    #[serde(default)]
    pub missed_by_live_consumer: u64,
    /// Ids delivered that no 2xx reported (a request that timed out at the client after the API
    /// had accepted it).
    pub delivered_unacknowledged: u64,
    /// Messages in the dead-letter queue at the end.
    pub dead_lettered: u64,
    /// Ingest latency (request → answer), 2xx answers.
    pub ingest_latency_ms: Option<Percentiles>,
    /// End-to-end latency (accepted → consumed).
    pub e2e_latency_ms: Option<Percentiles>,
    /// Seconds after the start when the burst ended.
    pub burst_end_s: f64,
    /// From the end of the burst until the last accepted message was delivered (the backlog was
    /// empty); `None` when something was lost.
    pub drained_after_burst_s: Option<f64>,
    /// From the end of the burst until the backlog was back to its steady level (the deepest it
    /// was in any second before the burst): 0 or 1 when the drain kept up (back within the
    /// burst's last second or the next one); `None` when it never got
    /// back (or there was no steady traffic before the burst to compare with).
    #[serde(default)]
    pub backlog_gone_after_burst_s: Option<f64>,
    /// Deepest backlog (accepted, not yet delivered).
    pub max_backlog: u64,
    /// Accepted and not yet delivered when the burst ended.
    #[serde(default)]
    pub backlog_at_burst_end: u64,
    /// What the burst left above the steady level over the time it took to get back there: the
    /// drain's rate once nothing competes with it; `None` when it was back within one sample or
    /// left fewer than 100 (the drain kept up, and what is left is the last batches' latency, not
    /// a rate), or when it never got back.
    #[serde(default)]
    pub drain_rate_after_burst_per_s: Option<f64>,
    /// Offered and achieved rate, for the emulator note.
    pub peak_offered_per_s: u64,
    /// Highest accepted rate in any second.
    pub peak_accepted_per_s: u64,
}

/// The backlog at the end of second `at_s`.
fn backlog_at(backlog: &[u64], at_s: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (at_s as usize).saturating_sub(1);
    backlog.get(i).copied().unwrap_or(0)
}

/// The steady level: the deepest backlog of the seconds before `burst_start_s`.
fn steady_level(backlog: &[u64], burst_start_s: u64) -> Option<u64> {
    let start = usize::try_from(burst_start_s).ok()?;
    backlog.get(..start)?.iter().copied().max()
}

/// Seconds from the end of second `burst_end_s` until the first second whose backlog is back to
/// the steady level, the deepest of the seconds before `burst_start_s`.
fn backlog_gone(backlog: &[u64], burst_start_s: u64, burst_end_s: u64) -> Option<f64> {
    let steady = steady_level(backlog, burst_start_s)?;
    let end = usize::try_from(burst_end_s).ok()?;
    // Second i (0-based) ends at i + 1 s; the burst's last second is end − 1.
    let back = backlog
        .iter()
        .enumerate()
        .skip(end.saturating_sub(1))
        .find(|(_, b)| **b <= steady)?
        .0;
    #[allow(clippy::cast_precision_loss)]
    Some((back + 1).saturating_sub(end) as f64)
}

/// Messages drained per second after the burst: what the burst left above the steady level over
/// the seconds it took to get back there. `None` when it was back within one sample (the drain
/// kept up; what is left is the last batches' latency, not a rate), when it left fewer than 100,
/// or when it never got back.
fn drain_rate(backlog: &[u64], burst_start_s: u64, burst_end_s: u64) -> Option<f64> {
    let steady = steady_level(backlog, burst_start_s)?;
    let gone = backlog_gone(backlog, burst_start_s, burst_end_s).filter(|g| *g > 1.0)?;
    #[allow(clippy::cast_precision_loss)]
    let left = backlog_at(backlog, burst_end_s as f64).saturating_sub(steady);
    #[allow(clippy::cast_precision_loss)]
    (left >= 100).then(|| left as f64 / gone)
}

/// Per-second series for the plots.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Requests the generator offered, per second.
    pub offered: Vec<u64>,
    /// Requests ingest-api accepted, per second.
    pub accepted: Vec<u64>,
    /// Accepted messages the consumer saw, per second of arrival.
    pub delivered: Vec<u64>,
    /// Accepted and not yet delivered, at the end of each second.
    pub backlog: Vec<u64>,
    /// Ingest latency p99 per second, ms.
    pub ingest_p99: Vec<Option<f64>>,
    /// End-to-end latency p50 per second, ms.
    pub e2e_p50: Vec<Option<f64>>,
    /// End-to-end latency p99 per second, ms.
    pub e2e_p99: Vec<Option<f64>>,
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

fn per_second_p(values: &[(u64, f64)], seconds: usize, q: usize) -> Vec<Option<f64>> {
    let mut buckets = vec![Vec::new(); seconds];
    for (at_ms, v) in values {
        let i = usize::try_from(at_ms / 1000).unwrap_or(usize::MAX);
        if i < seconds {
            buckets[i].push(*v);
        }
    }
    buckets
        .into_iter()
        .map(|mut b| percentiles(&mut b).map(|p| if q == 50 { p.p50 } else { p.p99 }))
        .collect()
}

#[allow(clippy::cast_precision_loss)]
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Accounts for every request and every arrival.
pub fn account(
    scenario: &Scenario,
    direct: bool,
    sent: &[Sent],
    observed: &Observed,
    dead_lettered: u64,
) -> (Summary, Series) {
    let accepted_ids: HashSet<&str> = sent
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .filter_map(|s| s.id.as_deref())
        .collect();
    let mut rejected = BTreeMap::new();
    for s in sent
        .iter()
        .filter(|s| !s.skipped && !(200..300).contains(&s.status))
    {
        let key = if s.status == 0 {
            "no answer".to_owned()
        } else {
            s.status.to_string()
        };
        *rejected.entry(key).or_insert(0) += 1;
    }
    let delivered = accepted_ids
        .iter()
        .filter(|id| observed.arrivals.contains_key(**id))
        .count() as u64;
    let lost = accepted_ids.len() as u64 - delivered;
    let unacknowledged = observed
        .arrivals
        .keys()
        .filter(|id| !accepted_ids.contains(id.as_str()))
        .count() as u64;

    let (series, ingest, e2e, last_arrival) = build_series(sent, observed, &accepted_ids);
    #[allow(clippy::cast_precision_loss)]
    let burst_end_s = scenario.burst_end_secs() as f64;
    #[allow(clippy::cast_precision_loss)]
    let drained = (lost == 0 && !accepted_ids.is_empty())
        .then(|| (last_arrival as f64 / 1000.0 - burst_end_s).max(0.0));
    let summary = Summary {
        scenario: scenario.name.to_owned(),
        title: scenario.title.to_owned(),
        mode: if direct {
            "direct (AWS sample pattern)".into()
        } else {
            "spillway".into()
        },
        buffer: if direct {
            "-".into()
        } else {
            format!("{:?}", scenario.buffer).to_lowercase()
        },
        offered: scenario.offered(),
        sent: sent.iter().filter(|s| !s.skipped).count() as u64,
        not_sent: sent.iter().filter(|s| s.skipped).count() as u64,
        accepted: accepted_ids.len() as u64,
        rejected,
        delivered,
        lost,
        duplicates: observed.verifier.summary(false).duplicates,
        missed_by_live_consumer: observed.missed_live,
        delivered_unacknowledged: unacknowledged,
        dead_lettered,
        ingest_latency_ms: percentiles(&mut ingest.iter().map(|(_, l)| *l).collect::<Vec<_>>()),
        e2e_latency_ms: percentiles(&mut e2e.iter().map(|(_, l)| *l).collect::<Vec<_>>()),
        burst_end_s,
        drained_after_burst_s: drained,
        backlog_gone_after_burst_s: backlog_gone(
            &series.backlog,
            scenario.burst_start_secs(),
            scenario.burst_end_secs(),
        ),
        max_backlog: series.backlog.iter().copied().max().unwrap_or(0),
        backlog_at_burst_end: backlog_at(&series.backlog, burst_end_s),
        drain_rate_after_burst_per_s: drain_rate(
            &series.backlog,
            scenario.burst_start_secs(),
            scenario.burst_end_secs(),
        ),
        peak_offered_per_s: series.offered.iter().copied().max().unwrap_or(0),
        peak_accepted_per_s: series.accepted.iter().copied().max().unwrap_or(0),
    };
    (summary, series)
}

/// The per-second series, the ingest and end-to-end latencies (with their times), and the last
/// arrival of an accepted id.
#[allow(clippy::type_complexity)]
fn build_series(
    sent: &[Sent],
    observed: &Observed,
    accepted_ids: &HashSet<&str>,
) -> (Series, Vec<(u64, f64)>, Vec<(u64, f64)>, u64) {
    let mut series = Series::default();
    let mut ingest = Vec::new();
    for s in sent {
        let i = usize::try_from(s.at_ms / 1000).unwrap_or(0);
        bump(&mut series.offered, i);
        if (200..300).contains(&s.status) {
            bump(&mut series.accepted, i);
            ingest.push((s.at_ms, ms(s.latency_us)));
        }
    }
    let mut last_arrival = 0;
    for (id, at) in &observed.arrivals {
        if accepted_ids.contains(id.as_str()) {
            bump(
                &mut series.delivered,
                usize::try_from(at / 1000).unwrap_or(0),
            );
            last_arrival = last_arrival.max(*at);
        }
    }
    let seconds = series
        .offered
        .len()
        .max(series.accepted.len())
        .max(series.delivered.len());
    for v in [
        &mut series.offered,
        &mut series.accepted,
        &mut series.delivered,
    ] {
        v.resize(seconds, 0);
    }
    let (mut in_total, mut out_total) = (0u64, 0u64);
    for i in 0..seconds {
        in_total += series.accepted[i];
        out_total += series.delivered[i];
        series.backlog.push(in_total.saturating_sub(out_total));
    }
    #[allow(clippy::cast_precision_loss)]
    let e2e: Vec<(u64, f64)> = observed
        .e2e
        .iter()
        .map(|(at, l)| (*at, *l as f64))
        .collect();
    series.ingest_p99 = per_second_p(&ingest, seconds, 99);
    series.e2e_p50 = per_second_p(&e2e, seconds, 50);
    series.e2e_p99 = per_second_p(&e2e, seconds, 99);
    (series, ingest, e2e, last_arrival)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_gone_when_it_is_back_to_its_steady_level() {
        // Steady for 3 s (in flight at most 2), a burst over seconds 3–5, then steady again.
        let backlog = [1, 2, 1, 60, 150, 240, 120, 9, 2, 1];
        assert_eq!(
            backlog_gone(&backlog, 3, 6),
            Some(3.0),
            "back in the second ending at 9 s"
        );
        // The drain kept up: back at once.
        assert_eq!(backlog_gone(&[1, 2, 1, 2, 1, 2, 1], 3, 6), Some(0.0));
        // Never back, or nothing to compare with.
        assert_eq!(backlog_gone(&[1, 2, 1, 60, 150, 240, 120], 3, 6), None);
        assert_eq!(backlog_gone(&[60, 150, 2], 0, 2), None);
    }

    #[test]
    fn the_drain_rate_is_the_backlog_over_the_time_it_took_to_go() {
        // 240 left at the end of the burst (steady level 2), back 3 s later: (240 − 2) / 3.
        let backlog = [1, 2, 1, 60, 150, 240, 120, 9, 2, 1];
        let rate = drain_rate(&backlog, 3, 6).expect("a rate");
        assert!((rate - 238.0 / 3.0).abs() < 1e-9, "{rate}");
        // Gone within one sample: the drain kept up, there is no rate to speak of (the old
        // figure divided the backlog by the time to the last delivery, steady tail included).
        assert_eq!(drain_rate(&[1, 2, 1, 60, 150, 240, 2, 1, 1, 1], 3, 6), None);
        // A backlog too small to be a rate, or one that never went.
        assert_eq!(drain_rate(&[1, 2, 1, 20, 40, 60, 30, 2], 3, 6), None);
        assert_eq!(drain_rate(&[1, 2, 1, 60, 150, 240, 120], 3, 6), None);
    }
}
