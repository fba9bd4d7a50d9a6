//! # spillway-tests — tests against the local stack
//!
//! Shared helpers for the integration tests in `tests/tests/`: clients pointed at the services that
//! `local/up` starts on 127.0.0.1, and random resource names so runs never collide.
