//! # loadtest — burst generator and end-to-end verifier
//!
//! Sends bounded bursts to ingest-api on loopback, verifies on the Kafka side that every accepted
//! message arrived (lost = 0, duplicates counted by `spillway-id`), and writes a report.
//!
//! Status: arrives with the load-test issue; this crate currently holds only its header.
