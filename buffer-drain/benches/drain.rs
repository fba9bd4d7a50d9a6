//! Drain throughput against the local broker, side by side with a plain rdkafka producer sending
//! the same records (the limit on this machine), and the drain's peak RSS for one batch.
//!
//! `cargo bench -p buffer-drain --bench drain` (needs `local/up`). Prints a table; asserts nothing.
//! `SPILLWAY_BENCH_PROFILE=30` drains 30 batches and nothing else, for `perf record`.

// Counts here are far below 2^52: converting them to f64 loses nothing.
#![allow(clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use buffer_drain::drain::Drain;
use buffer_drain::message::{to_kafka, Decoding};
use buffer_drain::source::{Ordering, SourceRecord};
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use spillway_core::config::{Compression, KafkaConfig};
use spillway_core::envelope::{Envelope, RawMode};
use spillway_core::kafka::Producer;

// mimalloc: the drain allocates and frees a few small objects per record on several threads
// (tokio, librdkafka's broker and polling threads); glibc malloc spent about a quarter of the
// drain's CPU there (bench/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 10_000;
const VALUE_BYTES: usize = 1024;
/// Value sizes measured: 1 KiB and 16 KiB.
const SIZES: [usize; 2] = [1024, 16_384];
const ROUNDS: usize = 5;

fn kafka(compression: Compression) -> KafkaConfig {
    let bootstrap =
        std::env::var("SPILLWAY_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    spillway_tests::plaintext_kafka(&bootstrap).with_compression(compression)
}

async fn producer(compression: Compression) -> Producer {
    spillway_core::kafka::producer(&kafka(compression))
        .await
        .expect("producer")
        .0
}

async fn new_drain(compression: Compression) -> Drain {
    let (producer, health) = spillway_core::kafka::producer(&kafka(compression))
        .await
        .expect("producer");
    Drain::new(producer, health, None, decoding())
}

fn batch(topic: &str, value_bytes: usize) -> Vec<SourceRecord> {
    (0..RECORDS)
        .map(|i| {
            let mut value = format!("{{\"order\":{i},\"pad\":\"");
            while value.len() < value_bytes - 2 {
                value.push('x');
            }
            value.push_str("\"}");
            let mut env = Envelope::new(topic, value);
            env.key = Some(format!("customer-{}", i % 100).into_bytes());
            SourceRecord {
                item_id: format!("m-{i}"),
                group: None,
                data: env.encode().into_bytes(),
                buffered_at_ms: None,
                trace: None,
                source: "bench".into(),
            }
        })
        .collect()
}

fn decoding() -> Decoding {
    Decoding {
        raw: RawMode::Reject,
        raw_topic: None,
    }
}

async fn run_drain(drain: &Drain, records: &[SourceRecord]) -> Duration {
    let started = Instant::now();
    let report = drain
        .drain(
            records,
            Ordering::Unordered,
            Instant::now() + Duration::from_secs(120),
        )
        .await;
    assert_eq!(report.failed().count(), 0, "the drain failed records");
    started.elapsed()
}

/// The baseline: the same envelopes decoded into Kafka records and sent with a plain
/// `FutureProducer` — decoding inside the clock, as the drain's own is (a producer fed already
/// decoded records was timed for less work than the drain, which made the 16 KiB rows, where
/// decoding is 7.5 µs a record, look slower than they are: bench/PROFILE.md).
async fn run_plain(producer: &Producer, records: &[SourceRecord]) -> Duration {
    let started = Instant::now();
    let messages: Vec<_> = records
        .iter()
        .map(|r| to_kafka(r, &decoding()).expect("envelope"))
        .collect();
    let deliveries: Vec<_> = messages
        .iter()
        .map(|m| {
            let record = FutureRecord::to(&m.topic)
                .payload(&m.value)
                .key(m.key.as_deref().unwrap_or_default())
                .headers(m.owned_headers());
            producer.send(record, Duration::from_secs(60))
        })
        .collect();
    for delivery in join_all(deliveries).await {
        assert!(delivery.is_ok(), "plain producer failed");
    }
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let topic = format!("bench-{}", std::process::id());
    if let Some(batches) = std::env::var("SPILLWAY_BENCH_PROFILE")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        // Only the drain, batch after batch (10,000 × 1 KiB, lz4): for a sampling profiler.
        let drain = new_drain(Compression::Lz4).await;
        let records = batch(&topic, VALUE_BYTES);
        for _ in 0..batches {
            run_drain(&drain, &records).await;
        }
        return;
    }
    if std::env::var_os("SPILLWAY_BENCH_RSS_ONLY").is_some() {
        // One 10,000 × 1 KiB batch in a fresh process: its peak RSS is the drain's.
        let drain = new_drain(Compression::Lz4).await;
        let records = batch(&topic, VALUE_BYTES);
        run_drain(&drain, &records).await;
        println!("{}", peak_rss_kib());
        return;
    }
    println!("drain vs plain rdkafka producer, {RECORDS} records per batch, local broker, median of {ROUNDS} rounds");
    println!(
        "| value | compression | drain rec/s | drain MB/s | plain rec/s | plain MB/s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for value_bytes in SIZES {
        let records = batch(&topic, value_bytes);
        let per = value_bytes as f64 / 1e6;
        for compression in [Compression::Lz4, Compression::None] {
            let drain = new_drain(compression).await;
            let plain = producer(compression).await;
            // Warm-up: connections, metadata, producer ids.
            run_drain(&drain, &records[..100]).await;
            run_plain(&plain, &records[..100]).await;
            let (mut d, mut p) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                d.push(RECORDS as f64 / run_drain(&drain, &records).await.as_secs_f64());
                p.push(RECORDS as f64 / run_plain(&plain, &records).await.as_secs_f64());
            }
            let (d, p) = (median(d), median(p));
            let name = compression.as_librdkafka();
            println!(
                "| {} KiB | {name} | {d:.0} | {:.1} | {p:.0} | {:.1} | {:.2} |",
                value_bytes / 1024,
                d * per,
                p * per,
                d / p
            );
            rows.push(serde_json::json!({
                "row": format!("drain throughput, {RECORDS} × {} KiB, {name}", value_bytes / 1024),
                "spillway": d, "baseline": p, "unit": "records/s",
                "baseline_is": "plain rdkafka FutureProducer, the same envelopes decoded inside its clock",
            }));
        }
    }
    for row in rows {
        println!("ROW {row}");
    }
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("SPILLWAY_BENCH_RSS_ONLY", "1")
        .output()
        .expect("rss run");
    let rss = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    println!("peak RSS of one process draining one {RECORDS} × {VALUE_BYTES} B batch: {rss} KiB");
    println!(
        "ROW {}",
        serde_json::json!({"row": format!("drain peak RSS, one {RECORDS} × 1 KiB batch (bench process)"), "spillway": rss.parse::<f64>().unwrap_or(0.0) / 1024.0, "unit": "MiB"})
    );
}
