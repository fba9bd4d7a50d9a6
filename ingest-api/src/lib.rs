//! # ingest-api — spillway's HTTP front door
//!
//! One axum `Router` that runs under `lambda_http` in AWS Lambda and as a plain server locally. It
//! wraps each request in a [`spillway_core::envelope::Envelope`] and writes it to the buffer (SQS or
//! Kinesis).
//!
//! Delivery rules implemented here (DESIGN.md, "Delivery rules"):
//! 1. The caller gets 2xx only after the buffer has accepted the message.
//!
//! A message whose encoded size would not fit the buffer's limit is answered with 413 and the limit,
//! using the envelope's exact size accounting.
//!
//! Status: the router arrives with the ingest-api issue; this crate currently holds only its header.
