//! # buffer-drain — SQS / Kinesis → Kafka
//!
//! The drain Lambda: receives SQS or Kinesis batches from the event source mapping, decodes each
//! [`spillway_core::envelope::Envelope`] (or a plain message in raw mode), produces it to Kafka and
//! reports partial-batch failures.
//!
//! Delivery rules implemented here (DESIGN.md, "Delivery rules"): 2 (leave the buffer only after the
//! Kafka ack or a DLQ write), 3 (per-record failures; fail the invocation when every record failed
//! for a retryable reason), 4 (FIFO group ordering, Kinesis lowest failed sequence number), 5 (stop
//! before the deadline), 6 (poison records to the DLQ with a reason), 7 (at-least-once).
//!
//! Status: the drain arrives with the buffer-drain issue; this crate currently holds only its header.
