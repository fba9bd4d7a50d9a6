//! The accounting (lost = accepted − delivered), the per-second series, and the report: a
//! Markdown summary and PNG plots per run, and a table of all runs.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use plotters::prelude::*;
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
    /// Deepest backlog (accepted, not yet delivered).
    pub max_backlog: u64,
    /// Offered and achieved rate, for the emulator note.
    pub peak_offered_per_s: u64,
    /// Highest accepted rate in any second.
    pub peak_accepted_per_s: u64,
}

/// Per-second series for the plots.
#[derive(Debug, Clone, Default)]
pub struct Series {
    offered: Vec<u64>,
    accepted: Vec<u64>,
    delivered: Vec<u64>,
    backlog: Vec<u64>,
    ingest_p99: Vec<Option<f64>>,
    e2e_p50: Vec<Option<f64>>,
    e2e_p99: Vec<Option<f64>>,
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
        delivered_unacknowledged: unacknowledged,
        dead_lettered,
        ingest_latency_ms: percentiles(&mut ingest.iter().map(|(_, l)| *l).collect::<Vec<_>>()),
        e2e_latency_ms: percentiles(&mut e2e.iter().map(|(_, l)| *l).collect::<Vec<_>>()),
        burst_end_s,
        drained_after_burst_s: drained,
        max_backlog: series.backlog.iter().copied().max().unwrap_or(0),
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

/// Registers the font plots are labelled with; `false` when none is found (plots are skipped).
pub fn register_font() -> bool {
    for path in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

#[allow(clippy::cast_precision_loss)]
fn lines(
    file: &Path,
    title: &str,
    y_label: &str,
    series: &[(&str, RGBColor, Vec<Option<f64>>)],
) -> PlotResult {
    let root = BitMapBackend::new(file, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = series.iter().map(|s| s.2.len()).max().unwrap_or(1).max(1) as f64;
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().flatten().copied())
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()?;
    for (name, color, values) in series {
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
            .collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn some(v: &[u64]) -> Vec<Option<f64>> {
    v.iter().map(|x| Some(*x as f64)).collect()
}

/// Writes `rates.png`, `backlog.png` and `latency.png` into `dir`.
pub fn plot(dir: &Path, label: &str, series: &Series) -> PlotResult {
    lines(
        &dir.join("rates.png"),
        &format!("{label}: offered, accepted and delivered per second"),
        "messages / s",
        &[
            ("offered", RGBColor(120, 120, 120), some(&series.offered)),
            (
                "accepted (2xx)",
                RGBColor(31, 119, 180),
                some(&series.accepted),
            ),
            (
                "delivered to Kafka",
                RGBColor(44, 160, 44),
                some(&series.delivered),
            ),
        ],
    )?;
    lines(
        &dir.join("backlog.png"),
        &format!("{label}: backlog (accepted, not yet delivered)"),
        "messages",
        &[("backlog", RGBColor(214, 39, 40), some(&series.backlog))],
    )?;
    lines(
        &dir.join("latency.png"),
        &format!("{label}: latency per second"),
        "ms",
        &[
            (
                "ingest p99",
                RGBColor(31, 119, 180),
                series.ingest_p99.clone(),
            ),
            (
                "end-to-end p50",
                RGBColor(44, 160, 44),
                series.e2e_p50.clone(),
            ),
            (
                "end-to-end p99",
                RGBColor(214, 39, 40),
                series.e2e_p99.clone(),
            ),
        ],
    )
}

fn p(v: Option<Percentiles>, pick: fn(&Percentiles) -> f64) -> String {
    v.map_or_else(|| "–".into(), |p| format!("{:.1}", pick(&p)))
}

/// A table row for `summary`.
pub fn row(s: &Summary) -> String {
    let rejected: u64 = s.rejected.values().sum();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} |",
        s.scenario,
        s.mode,
        s.buffer,
        s.sent,
        s.accepted,
        rejected + s.not_sent,
        s.delivered,
        s.lost,
        s.duplicates,
        p(s.ingest_latency_ms, |p| p.p99),
        p(s.e2e_latency_ms, |p| p.p99),
        s.drained_after_burst_s
            .map_or_else(|| "–".into(), |d| format!("{d:.1} s")),
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "| scenario | mode | buffer | sent | accepted | rejected / not sent | delivered | lost | duplicates | ingest p99 ms | end-to-end p99 ms | drained after burst |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// The run's README.md.
pub fn markdown(s: &Summary, plots: bool, command: &str) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "# {} — {} ({})\n\n{}\n\nReproduce: `{command}`\n\n{HEADER}\n{}\n\n",
        s.scenario,
        s.mode,
        s.buffer,
        s.title,
        row(s)
    );
    let _ = writeln!(
        out,
        "- offered {} requests (peak {}/s offered, {}/s accepted); {} not sent (generator at its connection limit)",
        s.offered, s.peak_offered_per_s, s.peak_accepted_per_s, s.not_sent
    );
    let _ = writeln!(out, "- rejected by status: {:?}", s.rejected);
    let _ = writeln!(
        out,
        "- lost = accepted − delivered = {} − {} = **{}**; duplicates {}; delivered but not acknowledged to the caller {}; dead-lettered {}",
        s.accepted, s.delivered, s.lost, s.duplicates, s.delivered_unacknowledged, s.dead_lettered
    );
    let _ = writeln!(
        out,
        "- ingest latency ms p50/p99/p99.9: {}/{}/{}; end-to-end: {}/{}/{}",
        p(s.ingest_latency_ms, |p| p.p50),
        p(s.ingest_latency_ms, |p| p.p99),
        p(s.ingest_latency_ms, |p| p.p99_9),
        p(s.e2e_latency_ms, |p| p.p50),
        p(s.e2e_latency_ms, |p| p.p99),
        p(s.e2e_latency_ms, |p| p.p99_9),
    );
    let _ = writeln!(
        out,
        "- deepest backlog {} messages; burst ended at {:.0} s",
        s.max_backlog, s.burst_end_s
    );
    #[allow(clippy::cast_precision_loss)]
    if s.not_sent > 0 && s.mode == "spillway" {
        let p50 = s.ingest_latency_ms.map_or(0.0, |p| p.p50);
        let _ = writeln!(
            out,
            "- note: {} requests were not sent because all {MAX_IN_FLIGHT} of the generator's connections were waiting for answers: at an ingest p50 of {p50:.0} ms they carry at most ~{:.0} requests/s. On this 2-core machine the generator, ingest-api, the emulators, the broker, msk-gate and the drain share the CPU{}.",
            s.not_sent,
            if p50 > 0.0 { MAX_IN_FLIGHT as f64 * 1000.0 / p50 } else { 0.0 },
            if s.buffer == "kinesis" {
                "; here the limit is the emulator: moto's Kinesis answers each PutRecords in about that p50, where the SQS emulator answers in about 1 ms (see the spike run)"
            } else {
                ""
            }
        );
    }
    if plots {
        out += "\n![rates](rates.png)\n\n![backlog](backlog.png)\n\n![latency](latency.png)\n";
    }
    out
}
