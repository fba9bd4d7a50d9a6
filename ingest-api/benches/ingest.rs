//! ingest-api's own cost per request, without network: parsing, envelope encoding, the size check
//! and batch packing, for one 1 KiB message and for a 500-record REST Proxy batch — each next to
//! its baseline, one `serde_json::Value` parse of the same request body (the least a JSON API
//! does with it).
//!
//! `cargo bench -p ingest-api --bench ingest`

use std::hint::black_box;

use axum::http::HeaderMap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest_api::buffer::pack;
use ingest_api::records::{self, EmbeddedFormat, MessageQuery};
use spillway_core::limits::BufferLimit;

const SQS_BATCH_ENTRIES: usize = 10;

fn json_value(i: usize, len: usize) -> String {
    let mut s = format!("{{\"order\":{i},\"note\":\"");
    while s.len() < len - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    s
}

fn bench(c: &mut Criterion) {
    let limit = BufferLimit::sqs(262_144);
    let mut group = c.benchmark_group("ingest");

    let body = json_value(1, 1024).into_bytes();
    let mut headers = HeaderMap::new();
    headers.insert("kafka-key", "customer-42".parse().expect("header"));
    headers.insert("kafka-header-source", "web".parse().expect("header"));
    let query = MessageQuery::default();
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_1KiB", |b| {
        b.iter(|| {
            let env = records::single("orders", &query, black_box(&headers), black_box(&body))
                .expect("valid");
            let encoded = env.encode();
            limit.check(encoded.len(), 0).expect("fits");
            black_box(encoded)
        });
    });

    group.bench_function("baseline_parse_1KiB", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("JSON"))
        });
    });

    let records: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{"key":"customer-{}","value":{}}}"#,
                i % 50,
                json_value(i, 64 + (i * 37) % 2048)
            )
        })
        .collect();
    let batch = format!(r#"{{"records":[{}]}}"#, records.join(","));
    group.throughput(Throughput::Elements(500));
    group.bench_function("batch_500_mixed", |b| {
        b.iter(|| {
            let envs = records::batch(
                "orders",
                EmbeddedFormat::Json,
                black_box(batch.as_bytes()),
                500,
            )
            .expect("valid");
            let bodies: Vec<String> = envs
                .iter()
                .map(spillway_core::envelope::Envelope::encode)
                .collect();
            for body in &bodies {
                limit.check(body.len(), 0).expect("fits");
            }
            black_box(pack(
                bodies.iter().map(String::len),
                SQS_BATCH_ENTRIES,
                262_144,
            ))
        });
    });
    group.bench_function("baseline_parse_batch_500", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(batch.as_bytes()))
                    .expect("JSON"),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
