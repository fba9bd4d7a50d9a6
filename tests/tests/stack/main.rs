//! Proves the one-machine stack is real: the AWS SDKs and rdkafka against the servers `local/up`
//! starts, with random resource names per test.

mod kafka;
mod kinesis;
mod sqs;
