//! Packing messages into service calls that cap both a count and a byte total.

use std::ops::Range;

/// Splits items of the given sizes, in order, into consecutive runs of at most `max_count` items
/// and `max_bytes` bytes (SQS `SendMessageBatch`: 10 entries and the queue's byte limit; Kinesis
/// `PutRecords`: 500 records and 5 MiB). An item larger than `max_bytes` gets a run of its own, for
/// the service to judge.
pub fn pack(
    sizes: impl IntoIterator<Item = usize>,
    max_count: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut count, mut bytes) = (0, 0, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        if count > 0 && (count == max_count || bytes + size > max_bytes) {
            runs.push(start..i);
            (start, count, bytes) = (i, 0, 0);
        }
        count += 1;
        bytes += size;
    }
    if count > 0 {
        runs.push(start..start + count);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_respects_count_and_bytes_and_keeps_order() {
        assert_eq!(pack([1; 25], 10, 1000), vec![0..10, 10..20, 20..25]);
        assert_eq!(pack([400, 400, 400, 100], 10, 1000), vec![0..2, 2..4]);
        assert_eq!(
            pack([2000, 1, 1], 10, 1000),
            vec![0..1, 1..3],
            "an oversized item stands alone"
        );
        assert_eq!(
            pack(Vec::<usize>::new(), 10, 1000),
            Vec::<Range<usize>>::new()
        );
    }
}
