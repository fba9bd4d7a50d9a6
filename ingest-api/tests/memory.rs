//! Issue 14 item 5: what a batch request costs in memory while it is parsed. A 10 MB body of empty
//! records used to raise peak memory by ~130 MB before the record-count check answered 400; the
//! parser now stops at the limit and keeps embedded JSON as text, so the peak stays a small
//! multiple of the body. Measured with a counting global allocator (bytes, not time: no noise).

use ingest_api::error::ApiError;
use ingest_api::records::{batch, EmbeddedFormat};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATED: PeakAlloc = PeakAlloc;

/// Bytes allocated at the peak of `f`, above what was allocated before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    // `PeakAlloc` reports in whole bytes through f32 MiB helpers; `peak_usage` is exact bytes.
    let before = ALLOCATED.current_usage();
    ALLOCATED.reset_peak_usage();
    let out = f();
    (out, ALLOCATED.peak_usage().saturating_sub(before))
}

/// One test, so no other test allocates while it measures.
#[test]
fn batch_parsing_memory_is_a_small_multiple_of_the_body() {
    const BODY: usize = 10_000_000;

    // 10 MB of `{}` records, limit 500: stops at record 501.
    let mut empty = String::with_capacity(BODY + 20);
    empty.push_str(r#"{"records":["#);
    while empty.len() < BODY - 3 {
        empty.push_str("{},");
    }
    empty.push_str("{}]}");
    let (result, peak) = peak_during(|| batch("t", EmbeddedFormat::Json, empty.as_bytes(), 500));
    assert!(
        matches!(result, Err(ApiError::TooManyRecords { max: 500 })),
        "{result:?}"
    );
    assert!(
        peak < 1_000_000,
        "{peak} bytes at the peak for a {} byte body of empty records",
        empty.len()
    );

    // One record whose value is a 6 MB JSON array of numbers: kept as text, not as a tree.
    let mut array = String::with_capacity(6_000_100);
    array.push_str(r#"{"records":[{"value":["#);
    while array.len() < 6_000_000 {
        array.push_str("0,");
    }
    array.push_str("0]}]}");
    let (result, peak) = peak_during(|| batch("t", EmbeddedFormat::Json, array.as_bytes(), 500));
    let envelopes = result.expect("one valid record");
    assert_eq!(envelopes.len(), 1);
    assert!(
        peak < 3 * array.len(),
        "{peak} bytes at the peak for a {} byte body",
        array.len()
    );
}
