//! The drain's own cost per record, without Kafka: an SQS event's records decoded into Kafka
//! messages (envelope decode, headers) and the report bookkeeping (outcomes, the partial-batch
//! response, the metrics), side by side with the least any handler does — one `serde_json::Value`
//! parse of each body.
//!
//! Timing: `cargo run --release -p buffer-drain --example overhead -- --rounds 9 [--bytes 16384]`
//! Instructions (callgrind): `overhead --once spillway --records 10000` (and `baseline`, and
//! `none`, which only builds the event).

#![allow(clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;

// The allocator the drain binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use buffer_drain::message::{to_kafka, Decoding};
use buffer_drain::report::{DrainReport, Outcome};
use buffer_drain::source::from_sqs;
use spillway_core::envelope::RawMode;

fn spillway(event: SqsEvent) -> usize {
    let decoding = Decoding {
        raw: RawMode::Reject,
        raw_topic: None,
    };
    let (records, _) = from_sqs(event);
    let mut outcomes = Vec::with_capacity(records.len());
    for r in &records {
        let message = to_kafka(r, &decoding).expect("an envelope");
        black_box(message.owned_headers());
        black_box(&message.value);
        outcomes.push(Outcome::Delivered);
    }
    let report = DrainReport {
        outcomes,
        produce_latencies: vec![Duration::from_millis(3); records.len()],
        elapsed: Duration::from_millis(50),
        backoff: None,
        auth_failures: 0,
    };
    black_box(report.sqs_response(&records));
    black_box(report.metrics("bench").emf()).len()
}

// By value like `spillway`, which consumes the event: both pay for dropping it.
#[allow(clippy::needless_pass_by_value)]
fn baseline(event: SqsEvent) -> usize {
    event
        .records
        .iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_slice(m.body.as_deref().unwrap_or_default().as_bytes())
                    .expect("JSON");
            usize::from(black_box(v).is_object())
        })
        .sum()
}

fn event(records: usize, bytes: usize) -> SqsEvent {
    serde_json::from_str(&spillway_bench::sqs_event(records, bytes, "bench")).expect("an SQS event")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let records: usize = arg("--records")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    // Value size: 1 KiB by default (`bench/run`'s row); `--bytes 16384` for the 16 KiB rows.
    let bytes: usize = arg("--bytes").and_then(|n| n.parse().ok()).unwrap_or(1024);
    if let Some(which) = arg("--once") {
        let e = event(records, bytes);
        // `none`: only the event is built, so its instructions can be subtracted.
        let n = match which.as_str() {
            "baseline" => baseline(e),
            "none" => black_box(e).records.len(),
            _ => spillway(e),
        };
        println!("{n}");
        return;
    }
    let rounds: usize = arg("--rounds").and_then(|n| n.parse().ok()).unwrap_or(9);
    let (mut s, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // Events are built outside the timed part; each round times both, side by side.
        let (e1, e2) = (event(records, bytes), event(records, bytes));
        let t = Instant::now();
        black_box(spillway(e1));
        s.push(t.elapsed().as_nanos() as f64 / records as f64);
        let t = Instant::now();
        black_box(baseline(e2));
        b.push(t.elapsed().as_nanos() as f64 / records as f64);
    }
    println!(
        "{}",
        serde_json::json!({"records": records, "bytes": bytes, "rounds": rounds, "spillway_ns_per_record": median(s), "baseline_ns_per_record": median(b)})
    );
}
