//! `spillway dev`: the whole pipeline on one machine, in this process — ingest-api, the drain's
//! local poller and a consumer — over the local stack, through msk-gate with MSK IAM by default.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use buffer_drain::config::{DrainConfig, LocalConfig, PollSettings};
use ingest_api::buffer::Buffer;
use ingest_api::config::IngestConfig;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Headers as _, Message as _};
use spillway_core::config::{Env, KafkaAuth, KafkaConfig};
use spillway_core::limits::BufferKind;

/// `spillway dev` options (its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct DevOptions {
    /// Where ingest-api buffers messages: sqs or kinesis.
    #[arg(long, default_value = "sqs", value_parser = buffer_kind)]
    pub buffer: BufferKind,
    /// ingest-api's port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Talk to the broker directly instead of through msk-gate with MSK IAM.
    #[arg(long)]
    pub plaintext: bool,
    /// Drain workers, each a local "Lambda container" with its own producer.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub workers: usize,
    /// Post one sample message at start, to show the pipeline working (--no-demo: do not).
    #[arg(long = "no-demo", action = clap::ArgAction::SetFalse)]
    pub demo: bool,
}

fn buffer_kind(value: &str) -> Result<BufferKind, String> {
    match value.to_ascii_lowercase().as_str() {
        "sqs" => Ok(BufferKind::Sqs),
        "kinesis" => Ok(BufferKind::Kinesis),
        _ => Err("expected sqs or kinesis".into()),
    }
}

/// `spillway dev`: starts the local stack (stopping it at the end if it started it) and runs the
/// pipeline until Ctrl-C.
pub fn command(options: DevOptions) -> Result<(), Error> {
    eprintln!("spillway dev: starting the local stack (local/up)…");
    let stack = crate::stack::up()?;
    // Before any thread exists: the AWS SDK and the MSK IAM signer read the environment.
    for (k, v) in &stack.env {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let result = crate::runtime().block_on(run(options, stack.env.clone()));
    if !stack.was_running {
        eprintln!("spillway dev: stopping the local stack it started (local/down)");
        crate::stack::down();
    }
    result
}

/// Live counters. Delivered = ids accepted by this session that the consumer has seen: exact
/// whatever the timing of the consumer group's first assignment, and blind to older messages.
#[derive(Debug, Default)]
struct Counters {
    accepted: Mutex<HashSet<String>>,
    consumed: Mutex<HashSet<String>>,
}

impl Counters {
    fn accept(&self, id: &str) {
        self.accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
    }

    fn consume(&self, id: &str) {
        self.consumed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
    }

    /// (accepted, delivered)
    fn counts(&self) -> (usize, usize) {
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let consumed = self
            .consumed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            accepted.len(),
            accepted.iter().filter(|id| consumed.contains(*id)).count(),
        )
    }
}

use crate::error::Error;

/// Counts what ingest-api accepted: 202s, and the ids in REST Proxy answers (v2 `offsets`, v3
/// result lines and batch `successes`). The body passes through chunk by chunk, so a v3 stream
/// stays a stream (a whole answer is counted at once); each chunk of a stream holds whole lines.
async fn count_accepted(counters: Arc<Counters>, req: Request, next: Next) -> Response {
    use futures::StreamExt as _;
    let response = next.run(req).await;
    if !matches!(response.status().as_u16(), 200 | 202 | 207) {
        return response;
    }
    let (parts, body) = response.into_parts();
    if axum::body::HttpBody::size_hint(&body).exact().is_some() {
        // A whole answer: counted now, whether or not the caller reads it.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        count_documents(&bytes, &counters);
        return Response::from_parts(parts, Body::from(bytes));
    }
    let chunks = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            count_documents(bytes, &counters);
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// Counts the ids of each JSON document (one per line) in `bytes`.
fn count_documents(bytes: &[u8], counters: &Counters) {
    for document in bytes.split(|&b| b == b'\n') {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(document) {
            accepted_ids(&json, counters);
        }
    }
}

/// The ids an answer reports accepted.
fn accepted_ids(json: &serde_json::Value, counters: &Counters) {
    if let Some(id) = json["id"].as_str().filter(|_| json["topic"].is_string()) {
        counters.accept(id);
    }
    if json["error_code"] == 200 {
        if let Some(id) = json["spillway_id"].as_str() {
            counters.accept(id);
        }
    }
    let v2 = json["offsets"].as_array().into_iter().flatten();
    let v3 = json["successes"].as_array().into_iter().flatten();
    for entry in v2.chain(v3) {
        if let Some(id) = entry["id"]
            .as_str()
            .filter(|_| entry["error_code"].is_null())
        {
            counters.accept(entry["spillway_id"].as_str().unwrap_or(id));
        }
    }
}

/// Runs until Ctrl-C. `env` is the local stack's environment (already in the process environment
/// too, for the AWS SDK and the MSK IAM signer).
pub async fn run(options: DevOptions, env: BTreeMap<String, String>) -> Result<(), Error> {
    buffer_drain::report::print_emf(false);
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .ok_or_else(|| Error::Stack(format!("local/up did not export {k}")))
    };
    let topic = get("SPILLWAY_TOPIC")?;
    let mut settings = env.clone();
    settings.insert(
        "SPILLWAY_LISTEN".into(),
        format!("127.0.0.1:{}", options.port),
    );
    settings.insert(
        "SPILLWAY_BUFFER".into(),
        if options.buffer == BufferKind::Sqs {
            "sqs"
        } else {
            "kinesis"
        }
        .into(),
    );
    if options.plaintext {
        settings.insert("SPILLWAY_KAFKA_AUTH".into(), "plaintext".into());
    } else {
        settings.insert("SPILLWAY_KAFKA_BOOTSTRAP".into(), get("SPILLWAY_MSK_GATE")?);
        settings.insert("SPILLWAY_KAFKA_AUTH".into(), "iam".into());
    }
    settings.insert("SPILLWAY_DLQ_URL".into(), get("SPILLWAY_SQS_DLQ_URL")?);
    // Values too large for the buffer go to the stack's bucket (under claims/), as infra deploys.
    if let Some(bucket) = env.get("SPILLWAY_DLQ_BUCKET") {
        settings
            .entry("SPILLWAY_CLAIM_BUCKET".into())
            .or_insert_with(|| bucket.clone());
    }
    let source = Env::new(&settings);
    let ingest = IngestConfig::from_env(&source)?;
    let kafka = KafkaConfig::from_env(&source)?;
    let drain_config = DrainConfig {
        buffer: options.buffer,
        ..DrainConfig::from_env(&source)?
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let counters = Arc::new(Counters::default());
    let mut tasks = tokio::task::JoinSet::new();

    // ingest-api
    let listener = tokio::net::TcpListener::bind(ingest.listen)
        .await
        .map_err(|e| {
            Error::Dev(format!(
                "cannot listen on {} ({e}); choose another --port",
                ingest.listen
            ))
        })?;
    let buffer = Buffer::new(&ingest.buffer, &sdk);
    let counting = counters.clone();
    let app = ingest_api::app(ingest_api::state(ingest.clone(), buffer, &sdk)).layer(
        axum::middleware::from_fn(move |req, next| count_accepted(counting.clone(), req, next)),
    );
    let demo_app = app.clone();
    tasks.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    start_consumer(&kafka, &topic, counters.clone(), &mut tasks).await?;

    let drain = start_drain(&options, &ingest.buffer, &kafka, &drain_config, &sdk).await?;

    let endpoint = format!("http://127.0.0.1:{}", options.port);
    let via = if kafka.auth == KafkaAuth::Iam {
        format!("msk-gate {} with MSK IAM", kafka.bootstrap)
    } else {
        format!("the broker {} (plaintext)", kafka.bootstrap)
    };
    println!("spillway dev: ready — ingest-api on {endpoint}, buffer {:?}, Kafka through {via}, topic {topic}", options.buffer);
    println!("  try: curl -X POST -H 'Content-Type: application/json' -d '{{\"payload\": \"Hello World\"}}' {endpoint}/messages");
    println!("  Ctrl-C stops everything spillway dev started");
    if options.demo {
        // The consumer group forms a few seconds after start; post once it can see the message.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let request = axum::http::Request::post("/messages")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"payload": "Hello from spillway dev"}"#))
            .map_err(|e| Error::Dev(format!("the demo request: {e}")))?;
        let answer = tower::ServiceExt::oneshot(demo_app, request)
            .await
            .unwrap_or_else(|never| match never {});
        println!("  demo: POST /messages {{\"payload\": \"Hello from spillway dev\"}} → {} (watch delivered=)", answer.status());
    }

    let queue_url = match &ingest.buffer {
        spillway_core::config::BufferConfig::Sqs { queue_url, .. } => Some(queue_url.clone()),
        spillway_core::config::BufferConfig::Kinesis { .. } => None,
    };
    show_counters(&sqs, queue_url, drain_config.dlq_url.clone(), &counters).await;
    // As the drain stops on SIGTERM: the batches in flight finish and what Kafka acknowledged is
    // deleted, so nothing comes again as a duplicate after the next start.
    drain
        .stop(poll_settings(options.buffer).shutdown_bound())
        .await;
    tasks.shutdown().await;
    Ok(())
}

/// (visible, in flight) of a queue.
async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<(u64, u64)> {
    let q = crate::status::queue(sqs, url).await.ok()?;
    Some((q.waiting, q.in_flight))
}

async fn start_consumer(
    kafka: &KafkaConfig,
    topic: &str,
    counters: Arc<Counters>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), Error> {
    // The consumer: a group of its own, reading the topic from the start and noting ids.
    let consumer = spillway_core::kafka::consumer(
        kafka,
        &[
            ("group.id", &format!("spillway-dev-{}", std::process::id())),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
        ],
    )
    .await
    .map_err(|e| Error::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::Kafka(format!("cannot subscribe to {topic}: {e}")))?;
    let delivered = counters;
    tasks.spawn(async move {
        loop {
            if let Ok(message) = consumer.recv().await {
                let id = message.headers().and_then(|h| {
                    h.iter().find(|h| h.key == "spillway-id").and_then(|h| {
                        h.value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_owned)
                    })
                });
                if let Some(id) = id {
                    delivered.consume(&id);
                }
            }
        }
    });

    Ok(())
}

/// The settings of the drain's local poller in `spillway dev`.
fn poll_settings(buffer: BufferKind) -> PollSettings {
    PollSettings {
        batch_size: if buffer == BufferKind::Sqs { 10 } else { 100 },
        batch_window: Duration::ZERO,
        visibility_timeout: Duration::from_secs(30),
        function_timeout: Duration::from_secs(5),
        deadline_margin: Duration::from_secs(1),
    }
}

/// The drain's local poller: each worker a container with its own producer; a Kinesis drain
/// reads every shard.
async fn start_drain(
    options: &DevOptions,
    buffer: &spillway_core::config::BufferConfig,
    kafka: &KafkaConfig,
    drain_config: &DrainConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<buffer_drain::poller::Running, Error> {
    let poll = poll_settings(options.buffer);
    let (source, workers) = match buffer {
        spillway_core::config::BufferConfig::Sqs { queue_url, .. } => (queue_url, options.workers),
        spillway_core::config::BufferConfig::Kinesis { stream } => (stream, usize::MAX),
    };
    let config = LocalConfig {
        kafka: kafka.clone(),
        drain: drain_config.clone(),
        poll,
        workers,
        source: source.clone(),
        kinesis_checkpoints: buffer_drain::poller::checkpoints::CheckpointsAt::Memory,
    };
    buffer_drain::poller::run_local(&config, sdk)
        .await
        .map_err(|e| Error::Dev(format!("the drain did not start: {e}")))
}

/// Prints the counters every second (a spinner line on a terminal) until Ctrl-C.
async fn show_counters(
    sqs: &aws_sdk_sqs::Client,
    queue_url: Option<String>,
    dlq_url: Option<String>,
    counters: &Counters,
) {
    let spinner = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let show = async {
        loop {
            let (buffered, backlog) = match &queue_url {
                Some(url) => depth(sqs, url)
                    .await
                    .map_or((None, None), |(v, f)| (Some(v + f), Some(v))),
                None => (None, None),
            };
            let dead = match &dlq_url {
                Some(url) => depth(sqs, url).await.map(|(v, f)| v + f),
                None => None,
            };
            let show = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let (accepted, delivered) = counters.counts();
            let line = format!(
                "accepted={accepted} buffered={} delivered={delivered} dead_lettered={} backlog={}",
                show(buffered),
                show(dead),
                show(backlog),
            );
            match &spinner {
                Some(bar) => bar.set_message(line),
                None => println!("{line}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = show => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
}
