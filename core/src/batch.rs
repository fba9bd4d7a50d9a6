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

/// What a batch call's answer says of one entry (SQS `SendMessageBatch`, `DeleteMessageBatch`,
/// `ChangeMessageVisibilityBatch`: `Successful` and `Failed` entries named by their request ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered<F> {
    /// The answer names it done.
    Done,
    /// The answer names it failed, with this.
    Failed(F),
    /// The answer does not name it: not done (delivery rule 10 — only an explicit success counts).
    Unanswered,
}

/// What the answer to a call for the entries `run` (request ids: their indices, as decimal text)
/// says of each, in order: `done` and `failed` are the ids the answer names. An id the request
/// never sent, or one that is not a number, names nothing.
pub fn answered<'a, F>(
    run: Range<usize>,
    done: impl IntoIterator<Item = &'a str>,
    failed: impl IntoIterator<Item = (&'a str, F)>,
) -> Vec<Answered<F>> {
    let position = |id: &str| {
        id.parse::<usize>()
            .ok()
            .filter(|i| run.contains(i))
            .map(|i| i - run.start)
    };
    let mut answers: Vec<Answered<F>> = run.clone().map(|_| Answered::Unanswered).collect();
    for id in done {
        if let Some(i) = position(id) {
            answers[i] = Answered::Done;
        }
    }
    for (id, why) in failed {
        if let Some(i) = position(id) {
            answers[i] = Answered::Failed(why);
        }
    }
    answers
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

    #[test]
    fn only_what_the_answer_names_done_is_done() {
        let answers = answered(
            10..14,
            ["10", "99", "x", "13"],
            [("11", "InternalError"), ("3", "stranger")],
        );
        assert_eq!(
            answers,
            [
                Answered::Done,
                Answered::Failed("InternalError"),
                Answered::Unanswered,
                Answered::Done
            ]
        );
    }
}
