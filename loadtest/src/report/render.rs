//! The rendering: a Markdown summary and PNG plots per run, and the row of the table of all runs.

use std::path::Path;

use plotters::prelude::*;

use super::accounting::{Percentiles, Series, Summary, MAX_IN_FLIGHT};

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

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |d| format!("{d:.1} s"))
}

/// A table row for `summary`.
pub fn row(s: &Summary) -> String {
    let rejected: u64 = s.rejected.values().sum();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} |",
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
        seconds(s.backlog_gone_after_burst_s),
        seconds(s.drained_after_burst_s),
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "| scenario | mode | buffer | sent | accepted | rejected / not sent | delivered | lost | duplicates | ingest p99 ms | end-to-end p99 ms | backlog gone after burst | last delivery after burst |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

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
    if s.missed_by_live_consumer > 0 {
        let _ = writeln!(
            out,
            "- {} delivered ids were missed by the live consumer and found by re-reading the topic (the broker's doing; their latency is not counted)",
            s.missed_by_live_consumer
        );
    }
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
        "- deepest backlog {} messages; burst ended at {:.0} s with {} left, back to its steady level {} later (the last accepted message arrived {} after it), drained {}",
        s.max_backlog,
        s.burst_end_s,
        s.backlog_at_burst_end,
        s.backlog_gone_after_burst_s.map_or_else(
            || "– (not back, or no steady traffic before the burst)".to_owned(),
            |d| format!("{d:.0} s")
        ),
        seconds(s.drained_after_burst_s),
        s.drain_rate_after_burst_per_s.map_or_else(
            || "as it came (the drain kept up)".to_owned(),
            |r| format!("at {r:.0} msg/s")
        )
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
                "; here the limit is the emulator: the Kinesis emulator answers each PutRecords in about that p50, where the SQS emulator answers in about 1 ms (see the spike run)"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spike() -> Summary {
        serde_json::from_value(serde_json::json!({
            "scenario": "spike", "title": "a burst", "mode": "spillway", "buffer": "sqs",
            "offered": 10, "sent": 10, "not_sent": 0, "accepted": 10, "rejected": {},
            "delivered": 10, "lost": 0, "duplicates": 0, "delivered_unacknowledged": 0,
            "dead_lettered": 0, "ingest_latency_ms": null, "e2e_latency_ms": null,
            "burst_end_s": 40.0, "drained_after_burst_s": 10.2,
            "backlog_gone_after_burst_s": 1.0, "max_backlog": 662, "backlog_at_burst_end": 230,
            "drain_rate_after_burst_per_s": null, "peak_offered_per_s": 5,
            "peak_accepted_per_s": 5
        }))
        .expect("a summary")
    }

    #[test]
    fn the_table_shows_when_the_backlog_was_gone_beside_the_last_delivery() {
        let header = HEADER.lines().next().expect("a header");
        let cells = |line: &str| -> Vec<String> {
            line.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        let (names, values) = (cells(header), cells(&row(&spike())));
        assert_eq!(names.len(), values.len(), "{header}\n{}", row(&spike()));
        let at = |name: &str| {
            let i = names.iter().position(|n| n == name).expect(name);
            values[i].clone()
        };
        // The target (back to the steady level ≤ 5 s after the burst) is this column,
        // not the last delivery, which includes the steady traffic after the burst.
        assert_eq!(at("backlog gone after burst"), "1.0 s");
        assert_eq!(at("last delivery after burst"), "10.2 s");
        assert_eq!(
            HEADER
                .lines()
                .nth(1)
                .expect("a rule")
                .matches("---")
                .count(),
            names.len()
        );
    }

    #[test]
    fn a_drain_that_kept_up_has_no_rate() {
        let text = markdown(&spike(), false, "loadtest run spike");
        assert!(
            text.contains("back to its steady level 1 s later"),
            "{text}"
        );
        assert!(text.contains("drained as it came"), "{text}");
    }
}
