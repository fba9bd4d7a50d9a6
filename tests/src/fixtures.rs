//! Fixtures the crates' integration tests share: queues, envelopes sent to them, messages read
//! back, Lambda event JSON as AWS sends it, and an msk-gate of a test's own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_kinesis::types::{Record, Shard, ShardIteratorType};
use aws_sdk_sqs::types::{
    Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use base64::Engine as _;
use spillway_core::config::KafkaConfig;
use spillway_core::envelope::Envelope;

/// A new queue named after `prefix` (FIFO when `fifo`), with `attributes`; its URL.
pub async fn queue(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    fifo: bool,
    attributes: &[(QueueAttributeName, &str)],
) -> String {
    let name = crate::unique_name(prefix);
    let mut request =
        sqs.create_queue()
            .queue_name(if fifo { format!("{name}.fifo") } else { name });
    if fifo {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    for (attribute, value) in attributes {
        request = request.attributes(attribute.clone(), *value);
    }
    request
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// A new Kinesis stream on kinesalite named after `prefix`, with `shards` shards; its name.
pub async fn stream(kinesis: &aws_sdk_kinesis::Client, prefix: &str, shards: i32) -> String {
    let stream = crate::unique_name(prefix);
    create_stream(kinesis, &stream, shards).await;
    stream
}

/// Creates the Kinesis stream `name` with `shards` shards and returns once it is ACTIVE, or
/// panics after 20 s. Even with `--createStreamMs 0`, kinesalite answers CreateStream while the
/// stream is still CREATING, and a PutRecord in that moment is refused as an unknown stream. (The
/// SDK's own waiter sleeps 10 s between attempts, so it is not used here.)
pub async fn create_stream(kinesis: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    wait_active(kinesis, name).await;
}

/// Returns once the Kinesis stream `name` is ACTIVE (after a create or a reshard), or panics after
/// 20 s.
pub async fn wait_active(kinesis: &aws_sdk_kinesis::Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe stream")
            .stream_description_summary
            .map(|s| s.stream_status);
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} is still {status:?} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shards of `stream`, as ListShards answers them.
pub async fn shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Shard> {
    kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards")
        .shards
        .unwrap_or_default()
}

/// Every record of shard `shard_id` of `stream` from its trim horizon, in order. Reads until an
/// answer comes back empty once at least `at_least` records have arrived (or the shard is closed
/// and read to its end); panics when fewer than `at_least` arrive within 30 s.
pub async fn shard_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    at_least: usize,
) -> Vec<Record> {
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("shard iterator")
        .shard_iterator;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while let Some(it) = iterator {
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .send()
            .await
            .expect("get records");
        if out.records.is_empty() && records.len() >= at_least {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {at_least} records arrived in shard {shard_id} of {stream} in 30 s",
            records.len()
        );
        records.extend(out.records);
        iterator = out.next_shard_iterator;
    }
    assert!(
        records.len() >= at_least,
        "shard {shard_id} of {stream} closed after {} of {at_least} records",
        records.len()
    );
    records
}

/// Puts envelopes for `topic` into `stream` in one call, record `i` with value `record {i}`
/// under the Kafka key (and partition key) `key_of(i)`.
pub async fn put_envelopes(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    topic: &str,
    n: usize,
    key_of: impl Fn(usize) -> String,
) {
    let entries = (0..n)
        .map(|i| {
            let key = key_of(i);
            let mut env = Envelope::new(topic, format!("record {i}"));
            env.key = Some(key.clone().into_bytes());
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(aws_sdk_kinesis::primitives::Blob::new(env.encode()))
                .build()
                .expect("entry")
        })
        .collect();
    let out = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(
        out.failed_record_count.unwrap_or(0),
        0,
        "the stream refused records"
    );
}

/// A new S3 bucket on moto named after `prefix`, and a claim store in it under the drain's
/// dead-letter prefix: (client, bucket, store).
pub async fn claim_store(
    prefix: &str,
) -> (aws_sdk_s3::Client, String, spillway_core::claim::ClaimStore) {
    claim_store_under(prefix, spillway_core::dead_letter::CLAIM_PREFIX).await
}

/// The same, with keys under `keys` (`claim::VALUE_PREFIX`: ingest-api's values).
pub async fn claim_store_under(
    prefix: &str,
    keys: &str,
) -> (aws_sdk_s3::Client, String, spillway_core::claim::ClaimStore) {
    let s3 = crate::s3().await;
    let bucket = crate::unique_name(prefix);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let store = spillway_core::claim::ClaimStore::new(s3.clone(), &bucket, keys);
    (s3, bucket, store)
}

/// Sends `n` envelopes for `topic` (values `message 0`, `message 1`, …), ten to a call;
/// `key_of(i)` gives the Kafka key, which is also the FIFO group (`g` without one). Returns the
/// envelopes' ids in order.
pub async fn send_envelopes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    topic: &str,
    n: usize,
    key_of: impl Fn(usize) -> Option<String>,
) -> Vec<String> {
    let fifo = spillway_core::limits::is_fifo_queue(url);
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|&i| {
                let mut env = Envelope::new(topic, format!("message {i}"));
                env.key = key_of(i).map(String::into_bytes);
                ids.push(env.id.clone());
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id((i % 10).to_string())
                    .message_body(env.encode());
                if fifo {
                    entry = entry
                        .message_group_id(key_of(i).unwrap_or_else(|| "g".into()))
                        .message_deduplication_id(env.id.clone());
                }
                entry.build().expect("entry")
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
        assert!(out.failed.is_empty(), "the queue refused {:?}", out.failed);
    }
    ids
}

/// Receives until `n` messages arrived (with every attribute), failing the test after `timeout`;
/// deletes them when `delete`.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: usize,
    timeout: Duration,
    delete: bool,
) -> Vec<Message> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived in {timeout:?}",
            out.len()
        );
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        for m in got {
            if delete {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().expect("receipt handle"))
                    .send()
                    .await
                    .expect("delete");
            }
            out.push(m);
        }
    }
    out
}

/// A message's string attribute `name`, if it has one.
pub fn attribute<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

/// An SQS event as Lambda sends it (the shape of AWS's documented example): one record per
/// `(message id, body)`, from a FIFO queue with these message groups when `groups` is given.
pub fn sqs_event(bodies: &[(&str, String)], groups: Option<&[&str]>) -> SqsEvent {
    let arn = if groups.is_some() {
        "arn:aws:sqs:us-east-2:123456789012:orders.fifo"
    } else {
        "arn:aws:sqs:us-east-2:123456789012:orders"
    };
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            let mut attributes = serde_json::json!({
                "ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185",
                "AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            });
            if let Some(groups) = groups {
                attributes["MessageGroupId"] = groups[i].into();
                attributes["MessageDeduplicationId"] = (*id).into();
                attributes["SequenceNumber"] = format!("1862726920311470{i:04}").into();
            }
            serde_json::json!({
                "messageId": id, "receiptHandle": format!("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a{i}"),
                "body": body, "attributes": attributes, "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3", "eventSource": "aws:sqs",
                "eventSourceARN": arn, "awsRegion": "us-east-2"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("SQS event")
}

/// A Kinesis event as Lambda sends it: one record per `(sequence number, data)` of one shard.
pub fn kinesis_event(records: &[(&str, Vec<u8>)]) -> KinesisEvent {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(seq, data)| {
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "1", "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1_545_084_650.987},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("shardId-000000000006:{seq}"), "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role", "awsRegion": "us-east-2",
                "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("Kinesis event")
}

/// An msk-gate of a test's own (the binary at `binary`, e.g. `env!("CARGO_BIN_EXE_msk-gate")`) in
/// front of the shared local broker, with its own quotas, chaos switches and counters (no other
/// test's traffic in them); killed when dropped.
pub struct PrivateGate {
    child: Child,
    bootstrap: String,
    admin: String,
    ca_file: String,
}

impl PrivateGate {
    /// Starts the gate with `extra` arguments (quotas, chaos) and waits until it listens.
    pub fn start(binary: &str, extra: &[&str]) -> Self {
        let (listen, admin) = (
            format!("127.0.0.1:{}", crate::free_port()),
            format!("127.0.0.1:{}", crate::free_port()),
        );
        let ca_file = std::env::temp_dir().join(format!("{}.pem", crate::unique_name("gate-ca")));
        let broker = crate::kafka_bootstrap();
        crate::require("Kafka (Tansu)", &broker);
        let child = Command::new(binary)
            .args(["--listen", &listen, "--admin", &admin, "--broker", &broker])
            .args(["--ca-file", &ca_file.to_string_lossy()])
            .args([
                "--access-key",
                "test",
                "--secret-key",
                "test",
                "--region",
                "us-east-1",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start msk-gate");
        let gate = Self {
            child,
            bootstrap: listen,
            admin: format!("http://{admin}"),
            ca_file: ca_file.to_string_lossy().into_owned(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&gate.bootstrap).is_ok()
                && std::path::Path::new(&gate.ca_file).exists()
            {
                return gate;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private gate did not start");
    }

    /// MSK IAM through this gate.
    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::iam(self.bootstrap.clone())
            .with_ca_file(self.ca_file.clone())
            .with_message_max_bytes(crate::LOCAL_MESSAGE_MAX_BYTES)
            .with_max_connects_per_sec(100)
    }

    /// Where clients connect: `127.0.0.1:port`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The CA of the gate's TLS certificate, a PEM file.
    pub fn ca_file(&self) -> &str {
        &self.ca_file
    }

    /// An admin call (`/stats`, `/chaos/...`); `Null` when it did not answer JSON.
    pub fn admin(&self, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", "-X", method, &format!("{}{path}", self.admin)])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// One of the gate's counters.
    pub fn stat(&self, name: &str) -> u64 {
        self.admin("GET", "/stats")[name].as_u64().expect("counter")
    }
}

impl Drop for PrivateGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// Whether `bucket` holds `key` (moto).
pub async fn object_exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found) =>
        {
            false
        }
        Err(e) => panic!(
            "head {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ),
    }
}
