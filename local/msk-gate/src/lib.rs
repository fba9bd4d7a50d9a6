//! # msk-gate — MSK's front door on one machine
//!
//! A Kafka-protocol proxy on 127.0.0.1:9098 that speaks TLS and SASL OAUTHBEARER, verifies MSK IAM
//! tokens, enforces the MSK Serverless connection quotas (100 connection attempts per second,
//! 3,000 connections) with the failures MSK gives, and forwards to the local broker. Chaos switches
//! let fault tests throttle, reject or cut connections.
//!
//! Status: arrives with the MSK IAM issue; this crate currently holds only its header.
