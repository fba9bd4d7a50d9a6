//! Envelope encode / decode cost per 1 KiB message: a JSON text value (written verbatim) and a
//! binary value (written as base64), with a key and two headers as ingest-api would write them.
//!
//! `cargo bench -p spillway-core --bench envelope`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spillway_core::envelope::{decode, Envelope, Header, RawMode};

fn message(value: Vec<u8>) -> Envelope {
    let mut env = Envelope::new("orders", value);
    env.key = Some(b"customer-42".to_vec());
    env.headers = vec![
        Header::new("content-type", "application/json"),
        Header::new(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    env
}

fn json_1kib() -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::from("{\"items\":[");
    for i in 0..18 {
        let _ = write!(
            s,
            "{{\"sku\":\"SKU-{i:05}\",\"qty\":{i},\"note\":\"caf\u{e9} \\\"x\\\"\"}},"
        );
    }
    s.pop();
    s.push_str("],\"pad\":\"");
    while s.len() < 1022 {
        s.push('.');
    }
    s.push_str("\"}");
    assert_eq!(s.len(), 1024);
    s.into_bytes()
}

fn binary_1kib() -> Vec<u8> {
    // Deterministic bytes that are not UTF-8.
    (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 0x80)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_1KiB");
    group.throughput(Throughput::Elements(1));
    for (name, value) in [("text", json_1kib()), ("binary", binary_1kib())] {
        let env = message(value);
        let body = env.encode();
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(&env).encode());
        });
        group.bench_function(format!("encoded_len/{name}"), |b| {
            b.iter(|| black_box(&env).encoded_len());
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched(
                || body.as_bytes(),
                |bytes| decode(black_box(bytes), RawMode::Reject),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
