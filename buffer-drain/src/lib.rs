//! # buffer-drain — SQS / Kinesis → Kafka
//!
//! The drain Lambda: receives SQS or Kinesis batches from the event source mapping ([`source`]),
//! turns each [`spillway_core::envelope::Envelope`] (or, in raw mode, a plain message) into a Kafka
//! record ([`message`]), produces the whole batch ([`drain::Drain`]) and reports per record
//! ([`report`]). Outside Lambda, [`poller`] plays the event source mapping against the local stack
//! and applies the reports exactly as Lambda does.
//!
//! Delivery rules implemented here (docs/ARCHITECTURE.md, "Delivery rules"):
//! 2. A record leaves the buffer only after Kafka acknowledged it (`acks=all`, idempotent producer)
//!    or after it was written to the dead-letter queue with its reason.
//! 3. Failures are reported per record (`batchItemFailures`); when every record failed for a
//!    retryable broker or authentication reason, the invocation fails, so the mapping backs off.
//! 4. SQS FIFO: after the first failure in a message group, every later record of that group fails
//!    too and is not produced. Kinesis: the report makes Lambda resume at the lowest failed
//!    sequence number.
//! 5. Before the deadline (minus `SPILLWAY_DEADLINE_MARGIN`) the drain stops and reports what is
//!    undelivered.
//! 6. Poison records (undecodable, or refused by Kafka for good: too large, unknown topic, not
//!    authorised — decided by [`spillway_core::kafka::classify`]) go straight to the dead-letter
//!    queue with a reason; if that write fails they are reported failed, never dropped.
//! 7. Delivery is at-least-once; duplicates carry the same `spillway-id`.
//! 8. Pipeline header names in an envelope are dropped; the drain sets its own ([`message`]).
//! 9. When Kafka took none of a batch and refused every record as unknown topic or not authorised,
//!    the batch fails retryably and the drain backs off ([`drain`]).
//! 10. Dead-letter writes and the local poller's deletes count only what the answer names
//!     ([`dlq`], [`poller`]).
//! 11. Settings that cannot work together stop the drain at start ([`config`]); in Lambda a margin
//!     that leaves no time fails the invocation ([`lambda::invocation_deadline`]).
//!
//! Why a record was not delivered is a [`failure::Failure`]: its text for operators, its fixed
//! [`failure::Failure::kind`] for the metric dimension.

pub mod config;
pub mod dlq;
pub mod drain;
pub mod failure;
pub mod lambda;
pub mod message;
pub mod poller;
pub mod report;
pub mod service;
pub mod source;

/// The drain process's tokio runtime with `threads` workers ([`config::runtime_threads`]): one is a
/// single-threaded runtime, more a work-stealing one.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
