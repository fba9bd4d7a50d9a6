//! What msk-gate adds to a produce request, and what Nagle's algorithm costs the product's
//! producer: produce round trips straight to the broker (plaintext) and through a gate of the
//! bench's own (TLS, MSK IAM), side by side in one run, with librdkafka's `socket.nagle.disable`
//! off (its default) and on.
//!
//! Two shapes: one 1 KiB record at a time (each awaited before the next: the request's own round
//! trip), and the drain's shape, batches of 100 × 1 KiB enqueued at once and awaited together.
//! Medians and p90 in ms; "added" is the gate's median less the broker's.
//!
//! Run: `eval "$(local/up)" && cargo bench -p msk-gate --bench latency`

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use spillway_core::config::KafkaConfig;
use spillway_core::kafka::context::SpillwayContext;
use spillway_tests::fixtures::PrivateGate;

const SINGLES: usize = 300;
const BATCHES: usize = 40;
const BATCH: usize = 100;

async fn producer(kafka: &KafkaConfig, nagle_disabled: bool) -> FutureProducer<SpillwayContext> {
    let (context, _refresher) = spillway_core::kafka::context_for(kafka)
        .await
        .expect("context");
    spillway_core::kafka::producer_config(kafka)
        .expect("config")
        .set("socket.nagle.disable", nagle_disabled.to_string())
        .create_with_context(context)
        .expect("producer")
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i]
}

/// (single p50, single p90, batch p50, batch p90), ms.
async fn measure(producer: &FutureProducer<SpillwayContext>, topic: &str) -> [f64; 4] {
    let value = vec![b'x'; 1024];
    let send = |i: usize| {
        let key = i.to_string();
        let record = FutureRecord::to(topic).payload(&value).key(&key);
        producer.send_result(record).expect("enqueued")
    };
    // Warm up: metadata, connections, the first token.
    for i in 0..20 {
        send(i).await.expect("delivered").expect("acknowledged");
    }
    let mut singles = Vec::with_capacity(SINGLES);
    for i in 0..SINGLES {
        let started = Instant::now();
        send(i).await.expect("delivered").expect("acknowledged");
        singles.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut batches = Vec::with_capacity(BATCHES);
    for b in 0..BATCHES {
        let started = Instant::now();
        let pending: Vec<_> = (0..BATCH).map(|i| send(b * BATCH + i)).collect();
        for delivery in futures::future::join_all(pending).await {
            delivery.expect("delivered").expect("acknowledged");
        }
        batches.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    [
        quantile(&mut singles, 0.5),
        quantile(&mut singles, 0.9),
        quantile(&mut batches, 0.5),
        quantile(&mut batches, 0.9),
    ]
}

#[tokio::main]
async fn main() {
    let gate = PrivateGate::start(env!("CARGO_BIN_EXE_msk-gate"), &[]);
    let broker = spillway_tests::plaintext_kafka(&spillway_tests::kafka_bootstrap());
    let topic = format!("gate-latency-{}", std::process::id());
    let mut rows = Vec::new();
    for (path, kafka) in [
        ("broker, plaintext", &broker),
        ("msk-gate, MSK IAM", &gate.kafka()),
    ] {
        for nagle_disabled in [false, true] {
            let producer = producer(kafka, nagle_disabled).await;
            let figures = measure(&producer, &topic).await;
            rows.push((path, nagle_disabled, figures));
        }
    }
    println!("| path | socket.nagle.disable | 1 record p50 ms | p90 | added p50 | batch of {BATCH} p50 ms | p90 | added p50 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (path, nagle, [s50, s90, b50, b90]) in &rows {
        let base = rows
            .iter()
            .find(|(p, n, _)| p.starts_with("broker") && n == nagle)
            .map(|(_, _, f)| *f)
            .unwrap_or_default();
        println!(
            "| {path} | {nagle} | {s50:.2} | {s90:.2} | {:.2} | {b50:.2} | {b90:.2} | {:.2} |",
            s50 - base[0],
            b50 - base[2]
        );
    }
}
