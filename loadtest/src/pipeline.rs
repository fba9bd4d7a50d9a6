//! The pipeline under test, as separate processes like Lambda functions: ingest-api and the
//! drain's local poller (or, for `--direct`, the baseline server), each this binary in a role,
//! over fresh resources of the local stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_kinesis::client::Waiters as _;
use aws_sdk_sqs::types::QueueAttributeName;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use spillway_core::limits::BufferKind;
use tokio::process::{Child, Command};

use crate::scenario::Scenario;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The drain's batch size as infra deploys it (`drainBatchSize`).
pub const DEPLOYED_BATCH_SIZE: usize = 100;
/// The drain's batching window as infra deploys it (`drainBatchingWindowSecs`).
pub const DEPLOYED_BATCH_WINDOW_SECS: u64 = 1;

/// What a run writes to: its own topic, and its own queue + DLQ or stream.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The topic.
    pub topic: String,
    /// The buffer queue (SQS).
    pub queue_url: Option<String>,
    /// The dead-letter queue (the drain's poison fast path and the queue's redrive).
    pub dlq_url: String,
    /// The buffer stream (Kinesis).
    pub stream: Option<String>,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Creates the topic (6 partitions, on the plain broker) and the buffer.
pub async fn create(
    scenario: &Scenario,
    sdk: &aws_config::SdkConfig,
    bootstrap: &str,
) -> Result<Resources, Error> {
    let topic = unique(&format!("lt-{}", scenario.name));
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(&topic, 6, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq_url = sqs
        .create_queue()
        .queue_name(unique("lt-dlq"))
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let (queue_url, stream) = match scenario.buffer {
        BufferKind::Sqs => {
            let dlq_arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await?
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .unwrap_or_default();
            let url = sqs
                .create_queue()
                .queue_name(unique("lt-buffer"))
                // ≥ 6 × the local poller's 5 s function timeout.
                .attributes(QueueAttributeName::VisibilityTimeout, "30")
                .attributes(
                    QueueAttributeName::RedrivePolicy,
                    serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
                        .to_string(),
                )
                .send()
                .await?
                .queue_url
                .unwrap_or_default();
            (Some(url), None)
        }
        BufferKind::Kinesis => {
            let name = unique("lt-stream");
            let kinesis = aws_sdk_kinesis::Client::new(sdk);
            kinesis
                .create_stream()
                .stream_name(&name)
                .shard_count(2)
                .send()
                .await?;
            // CreateStream answers while the stream is CREATING; records put then are refused.
            kinesis
                .wait_until_stream_exists()
                .stream_name(&name)
                .wait(Duration::from_secs(60))
                .await
                .map_err(|e| format!("stream {name} did not become ACTIVE: {e}"))?;
            (None, Some(name))
        }
    };
    Ok(Resources {
        topic,
        queue_url,
        dlq_url,
        stream,
    })
}

/// A free port on loopback.
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The running processes.
pub struct Pipeline {
    exe: PathBuf,
    logs: PathBuf,
    front: Child,
    drain: Option<Child>,
    drain_env: BTreeMap<String, String>,
    drain_starts: u32,
    /// Where the front door listens.
    pub port: u16,
}

impl Pipeline {
    /// Starts ingest-api and the drain (or the baseline server when `direct`), logging to `logs`.
    pub async fn start(
        scenario: &Scenario,
        resources: &Resources,
        stack: &BTreeMap<String, String>,
        direct: bool,
        logs: &Path,
    ) -> Result<Self, Error> {
        let exe = std::env::current_exe()?;
        let port = free_port()?;
        let get = |k: &str| {
            stack
                .get(k)
                .cloned()
                .ok_or_else(|| format!("local/up did not export {k}"))
        };
        let mut kafka = BTreeMap::from([
            (
                "SPILLWAY_KAFKA_BOOTSTRAP".to_owned(),
                get("SPILLWAY_MSK_GATE")?,
            ),
            ("SPILLWAY_KAFKA_AUTH".to_owned(), "iam".to_owned()),
            (
                "SPILLWAY_KAFKA_CA_FILE".to_owned(),
                get("SPILLWAY_KAFKA_CA_FILE")?,
            ),
        ]);
        if scenario.session_secs > 0 {
            kafka.insert(
                "SPILLWAY_KAFKA_TOKEN_REFRESH".into(),
                format!("{}s", scenario.session_secs.max(2) / 2),
            );
        }
        let buffer_env = |mut env: BTreeMap<String, String>| {
            if let Some(url) = &resources.queue_url {
                env.insert("SPILLWAY_SQS_QUEUE_URL".into(), url.clone());
            }
            if let Some(stream) = &resources.stream {
                env.insert("SPILLWAY_KINESIS_STREAM".into(), stream.clone());
            }
            env
        };
        let kind = if scenario.buffer == BufferKind::Sqs {
            "sqs"
        } else {
            "kinesis"
        };
        let front_env = if direct {
            let mut env = kafka.clone();
            env.insert("SPILLWAY_LISTEN".into(), format!("127.0.0.1:{port}"));
            env
        } else {
            buffer_env(BTreeMap::from([
                ("SPILLWAY_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
                ("SPILLWAY_BUFFER".to_owned(), kind.to_owned()),
                ("SPILLWAY_TOPIC".to_owned(), resources.topic.clone()),
            ]))
        };
        let role = if direct { "role-direct" } else { "role-ingest" };
        let front = spawn(&exe, role, &front_env, &logs.join(format!("{role}.log")))?;
        let mut drain_env = buffer_env(kafka);
        drain_env.extend([
            ("SPILLWAY_BUFFER".to_owned(), kind.to_owned()),
            ("SPILLWAY_DLQ_URL".to_owned(), resources.dlq_url.clone()),
            (
                "SPILLWAY_MAX_CONCURRENCY".to_owned(),
                scenario.drain_workers.to_string(),
            ),
            ("SPILLWAY_MAX_CONNECTS_PER_SEC".to_owned(), "10".to_owned()),
            // What infra deploys (infra/lib/settings.ts: drainBatchSize, drainBatchingWindowSecs),
            // not the event source mapping's smaller defaults (test below).
            (
                "SPILLWAY_BATCH_SIZE".to_owned(),
                DEPLOYED_BATCH_SIZE.to_string(),
            ),
            (
                "SPILLWAY_BATCH_WINDOW".to_owned(),
                format!("{DEPLOYED_BATCH_WINDOW_SECS}s"),
            ),
            ("SPILLWAY_FUNCTION_TIMEOUT".to_owned(), "5s".to_owned()),
            ("SPILLWAY_VISIBILITY_TIMEOUT".to_owned(), "30s".to_owned()),
            ("SPILLWAY_DEADLINE_MARGIN".to_owned(), "1s".to_owned()),
        ]);
        let mut pipeline = Self {
            exe,
            logs: logs.to_owned(),
            front,
            drain: None,
            drain_env,
            drain_starts: 0,
            port,
        };
        if !direct {
            pipeline.start_drain()?;
        }
        wait_for_port(port).await?;
        Ok(pipeline)
    }

    fn start_drain(&mut self) -> Result<(), Error> {
        self.drain_starts += 1;
        let log = self
            .logs
            .join(format!("role-drain-{}.log", self.drain_starts));
        self.drain = Some(spawn(&self.exe, "role-drain", &self.drain_env, &log)?);
        Ok(())
    }

    /// `kill -9` of the drain process.
    pub async fn kill_drain(&mut self) {
        if let Some(mut drain) = self.drain.take() {
            let _ = drain.start_kill();
            let _ = drain.wait().await;
        }
    }

    /// Starts a new drain process.
    pub fn restart_drain(&mut self) -> Result<(), Error> {
        self.start_drain()
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        self.kill_drain().await;
        let _ = self.front.start_kill();
        let _ = self.front.wait().await;
    }
}

fn spawn(
    exe: &Path,
    role: &str,
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Result<Child, Error> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(exe)
        .arg(role)
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_for_port(port: u16) -> Result<(), Error> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 20 s (see the role logs)").into())
}

/// msk-gate's admin API.
pub struct Gate {
    admin: String,
    client: reqwest::Client,
}

impl Gate {
    /// The gate whose admin API is at `admin` (`SPILLWAY_MSK_GATE_ADMIN`).
    pub fn new(admin: String) -> Self {
        Self {
            admin,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<(), Error> {
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(format!("msk-gate admin answered {}", response.status()).into());
        }
        Ok(())
    }

    /// Connection quotas.
    pub async fn quotas(&self, max_connections: u64, connects_per_sec: u32) -> Result<(), Error> {
        self.call(
            self.client
                .put(format!("{}/quotas", self.admin))
                .json(&serde_json::json!({
                    "max_connections": max_connections,
                    "max_connects_per_sec": connects_per_sec,
                })),
        )
        .await
    }

    /// Session lifetime (0: until the token expires).
    pub async fn session(&self, secs: u64) -> Result<(), Error> {
        self.call(
            self.client
                .put(format!("{}/session?seconds={secs}", self.admin)),
        )
        .await
    }

    /// Refuse every authentication for `secs` and drop every open connection.
    pub async fn outage(&self, secs: u64) -> Result<(), Error> {
        self.call(
            self.client
                .post(format!("{}/chaos/refuse-auth?seconds={secs}", self.admin)),
        )
        .await?;
        self.call(
            self.client
                .post(format!("{}/chaos/drop-connections", self.admin)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    /// The load test drains as infra deploys: its constants are infra's defaults.
    #[test]
    fn the_load_tests_drain_settings_are_the_deployed_ones() {
        let settings = include_str!("../../infra/lib/settings.ts");
        let default = |name: &str| -> String {
            let at = settings
                .find(&format!("\n  {name}: "))
                .unwrap_or_else(|| panic!("{name} in infra's DEFAULTS"));
            let rest = &settings[at + name.len() + 5..];
            rest[..rest.find(',').expect("a comma")].trim().to_owned()
        };
        assert_eq!(
            default("drainBatchSize"),
            super::DEPLOYED_BATCH_SIZE.to_string()
        );
        assert_eq!(
            default("drainBatchingWindowSecs"),
            super::DEPLOYED_BATCH_WINDOW_SECS.to_string()
        );
    }
}
