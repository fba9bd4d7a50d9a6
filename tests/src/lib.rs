//! # spillway-tests — tests against the local stack
//!
//! Shared helpers for the workspace's integration tests (a dev-dependency of ingest-api,
//! buffer-drain, msk-consumer, the CLI, topic-resource and msk-gate) and for the stack tests in
//! `tests/tests/`: clients pointed at the services `local/up` starts on 127.0.0.1 (overridable
//! with the variables it exports), a broker of a test's own, AWS clients with scripted answers,
//! queue and SQS event fixtures, and random resource names so runs never collide.
//!
//! What each test relies on is stated in the test; no emulator is the real service.

pub mod fixtures;
pub mod scripted;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::{Credentials, Region};

/// fauxqs, the SQS emulator (`AWS_ENDPOINT_URL_SQS`).
pub fn sqs_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4576")
}

/// kinesalite, the Kinesis emulator (`AWS_ENDPOINT_URL_KINESIS`).
pub fn kinesis_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4567")
}

/// moto server: S3, Lambda control plane, CloudWatch (`AWS_ENDPOINT_URL`).
pub fn aws_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
}

/// The plaintext Kafka broker (Tansu).
pub fn kafka_bootstrap() -> String {
    env_or("SPILLWAY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Panics with a message that says how to start the stack when `endpoint` does not answer.
pub fn require(service: &str, endpoint: &str) {
    let authority = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let authority = authority.split('/').next().unwrap_or(authority);
    let reachable = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr: SocketAddr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "{service} is not answering at {endpoint}; start the local stack with `local/up` (the test command does)"
    );
}

/// A name no other test run uses: `prefix-` plus a random suffix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The test region and credentials.
fn local_defaults() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "spillway-tests",
        ))
}

/// SDK configuration for a local endpoint with the test credentials.
pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    local_defaults().endpoint_url(endpoint).load().await
}

/// SDK configuration for the whole local stack, from `local/up`'s environment: SQS at fauxqs
/// (`AWS_ENDPOINT_URL_SQS`), Kinesis at kinesalite (`AWS_ENDPOINT_URL_KINESIS`), every other
/// service at moto (`AWS_ENDPOINT_URL`).
pub async fn sdk() -> aws_config::SdkConfig {
    require("SQS (fauxqs)", &sqs_endpoint());
    require("Kinesis (kinesalite)", &kinesis_endpoint());
    require("moto", &aws_endpoint());
    local_defaults().load().await
}

/// An S3 client for moto.
pub async fn s3() -> aws_sdk_s3::Client {
    let endpoint = aws_endpoint();
    require("S3 (moto)", &endpoint);
    spillway_core::claim::ClaimStore::client(&aws_config(&endpoint).await)
}

/// An SQS client for fauxqs.
pub async fn sqs() -> aws_sdk_sqs::Client {
    let endpoint = sqs_endpoint();
    require("SQS (fauxqs)", &endpoint);
    aws_sdk_sqs::Client::new(&aws_config(&endpoint).await)
}

/// An SQS client for fauxqs whose calls fail before they are sent when `fail` says so, shown each
/// call's operation (`X-Amz-Target` after its last `.`, e.g. `ChangeMessageVisibilityBatch`): a
/// call that never reached SQS, as after a dropped connection or an outage, against the real
/// queue's semantics otherwise. Retries are off, so a failed call is what a caller sees after all
/// of its attempts.
pub async fn sqs_failing(
    fail: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> aws_sdk_sqs::Client {
    let endpoint = sqs_endpoint();
    require("SQS (fauxqs)", &endpoint);
    let config = aws_sdk_sqs::config::Builder::from(&aws_config(&endpoint).await)
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .interceptor(FailCalls(Box::new(fail)))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// [`sqs_failing`]'s interceptor.
struct FailCalls(Box<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for FailCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailCalls")
    }
}

impl aws_sdk_sqs::config::Intercept for FailCalls {
    fn name(&self) -> &'static str {
        "FailCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default();
        if (self.0)(operation) {
            return Err(format!("{operation} failed by the test").into());
        }
        Ok(())
    }
}

/// A Kinesis client for kinesalite.
pub async fn kinesis() -> aws_sdk_kinesis::Client {
    let endpoint = kinesis_endpoint();
    require("Kinesis (kinesalite)", &endpoint);
    aws_sdk_kinesis::Client::new(&aws_config(&endpoint).await)
}

/// The Tansu binary `local/up` installed (`SPILLWAY_TANSU_BIN`, else its default cache path).
pub fn tansu_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SPILLWAY_TANSU_BIN") {
        return path.into();
    }
    let cache = std::env::var_os("SPILLWAY_CACHE").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/spillway")
        },
        std::path::PathBuf::from,
    );
    cache.join("bin/tansu-0.6.0")
}

/// The msk-gate binary `local/up` built and runs (`SPILLWAY_MSK_GATE_BIN`, else cargo's debug
/// build in `CARGO_TARGET_DIR` or `target/`), for tests outside msk-gate's own crate that need a
/// gate of their own ([`fixtures::PrivateGate`]).
///
/// # Panics
/// When there is no such file, saying how to make it.
pub fn msk_gate_bin() -> String {
    let path = std::env::var_os("SPILLWAY_MSK_GATE_BIN").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(
                    || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                    std::path::PathBuf::from,
                )
                .join("debug/msk-gate")
        },
        std::path::PathBuf::from,
    );
    assert!(
        path.exists(),
        "no msk-gate binary at {}; `local/up` builds it (the test command runs it)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A Tansu broker of a test's own, on a free loopback port, for faults that must not disturb
/// other tests: pausing it (SIGSTOP) makes it unresponsive while keeping its data, as a hung
/// broker would; resuming (SIGCONT) lets it carry on. Killed when dropped.
pub struct PrivateBroker {
    child: std::process::Child,
    /// `127.0.0.1:port`.
    pub bootstrap: String,
}

impl PrivateBroker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(tansu_bin())
            .args([
                "broker",
                "--silent",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run local/up first",
                    tansu_bin().display()
                )
            });
        // From here on `Drop` kills and reaps the process, whatever happens.
        let broker = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let addr: SocketAddr = broker.bootstrap.parse().expect("address");
        for _ in 0..100 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private broker did not open {}", broker.bootstrap);
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Freezes the broker: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker carry on.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages in an SQS queue, waiting plus in flight: 0 once everything was deleted.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let (waiting, in_flight) = queue_counts(client, url).await;
    waiting + in_flight
}

/// Messages in an SQS queue: (waiting, in flight — received and not yet deleted).
pub async fn queue_counts(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let count = |name| attrs.get(&name).map_or(0, |v| v.parse().expect("a count"));
    (
        count(A::ApproximateNumberOfMessages),
        count(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Runs `workers` (each call is one poll of the queue at `url`) side by side until the queue is
/// empty — nothing waiting, nothing in flight — or `timeout` passed, then asserts it is empty.
/// An empty queue counts only once `sent` (the caller's sending, if it goes on meanwhile) is done.
/// It counts neither receives nor deletes: a record received or deleted twice cannot end the run
/// before every record left the queue (what reached Kafka is for the caller to count, by id).
pub async fn poll_until_empty<W, F>(
    client: &aws_sdk_sqs::Client,
    url: &str,
    workers: Vec<W>,
    sent: impl std::future::Future<Output = ()>,
    timeout: Duration,
) where
    W: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let empty = std::sync::Arc::new(AtomicBool::new(false));
    let ends = tokio::time::Instant::now() + timeout;
    let mut tasks = tokio::task::JoinSet::new();
    for mut poll in workers {
        let empty = empty.clone();
        tasks.spawn(async move {
            while !empty.load(Ordering::SeqCst) && tokio::time::Instant::now() < ends {
                poll().await;
            }
        });
    }
    sent.await;
    while tokio::time::Instant::now() < ends && queue_depth(client, url).await > 0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    empty.store(true, Ordering::SeqCst);
    while let Some(worker) = tasks.join_next().await {
        worker.expect("worker");
    }
    assert_eq!(
        queue_depth(client, url).await,
        0,
        "records still in the queue after {timeout:?}"
    );
}

/// The client's record limit in tests: librdkafka's own default `message.max.bytes`, well above
/// any record a test produces (MSK's 8 MiB would only make librdkafka's buffers larger).
pub const LOCAL_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// A Kafka config for a plaintext broker at `bootstrap` (the local Tansu, librdkafka's mock
/// cluster): what every test that needs no IAM uses.
pub fn plaintext_kafka(bootstrap: &str) -> spillway_core::config::KafkaConfig {
    spillway_core::config::KafkaConfig::plaintext(bootstrap)
        .with_message_max_bytes(LOCAL_MESSAGE_MAX_BYTES)
        .with_max_connects_per_sec(100)
}

/// Cases each fuzz test runs: `SPILLWAY_FUZZ_CASES` when set (the long run:
/// `SPILLWAY_FUZZ_CASES=1000000 cargo test --release --workspace fuzz_`), else `default` — the
/// short run every `./run-tests` makes.
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("SPILLWAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `GET path` from the HTTP server at `addr` (`host:port`), one request on its own connection:
/// the status code and the body; `None` while nothing listens there or the answer is not HTTP.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A port on 127.0.0.1 that nothing listens on now (the OS's pick), for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
