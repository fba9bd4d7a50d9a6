//! `spillway status`: the buffer's depth and what is in flight, the dead-letter queue, the age of
//! the oldest message and the stream's lag (from CloudWatch), and the drain's settings.
//!
//! CloudWatch figures are `null` when CloudWatch has no recent datapoint (SQS and Kinesis publish
//! them every minute in AWS; a local emulator publishes none).

use crate::error::{aws, Error};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

/// How far back a CloudWatch datapoint still counts as current.
const METRIC_WINDOW: Duration = Duration::from_secs(600);

/// One queue's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// The queue URL.
    pub url: String,
    /// Messages waiting (`ApproximateNumberOfMessages`).
    pub waiting: u64,
    /// Messages received and not yet deleted (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// Messages not yet visible (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
    /// Age of the oldest message, seconds (CloudWatch `ApproximateAgeOfOldestMessage`).
    pub oldest_age_secs: Option<u64>,
}

/// The Kinesis buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    /// The stream name.
    pub name: String,
    /// `ACTIVE`, `UPDATING`, …
    pub state: String,
    /// Open shards.
    pub open_shards: u64,
    /// Retention period, hours: how long a lagging drain or a replay can still read a record.
    pub retention_hours: u64,
    /// How far behind the stream's readers are, ms (CloudWatch
    /// `GetRecords.IteratorAgeMilliseconds`, the maximum over the last minute with data).
    pub lag_ms: Option<u64>,
}

/// One event source mapping of the drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingStatus {
    /// The mapping's id.
    pub uuid: String,
    /// The queue or stream ARN.
    pub source: String,
    /// `Enabled`, `Disabled`, …
    pub state: String,
    /// Records per batch.
    pub batch_size: Option<u64>,
    /// Batching window, seconds.
    pub batching_window_secs: Option<u64>,
    /// `on-demand` or `provisioned` (SQS sources; `None` for others).
    pub mode: Option<&'static str>,
    /// Maximum concurrency (SQS sources on demand).
    pub max_concurrency: Option<u64>,
    /// Provisioned mode: pollers always on and at most.
    pub pollers: Option<Pollers>,
    /// `ReportBatchItemFailures` is on.
    pub reports_item_failures: bool,
}

/// A provisioned mapping's pollers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pollers {
    /// Always on.
    pub min: u64,
    /// At most.
    pub max: u64,
}

/// The drain function's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainStatus {
    /// The function.
    pub function: String,
    /// Timeout, seconds.
    pub timeout_secs: Option<u64>,
    /// Memory, MB.
    pub memory_mb: Option<u64>,
    /// Reserved concurrency, when set.
    pub reserved_concurrency: Option<u64>,
    /// `SPILLWAY_MAX_CONNECTS_PER_SEC` (the drain's connection rate limit), when set.
    pub max_connects_per_sec: Option<String>,
    /// The capacity provider it runs on (Lambda Managed Instances), when it does.
    pub capacity_provider: Option<String>,
    /// Invocations one execution environment serves at once (1 off Managed Instances).
    pub invocations_per_environment: u64,
    /// Its event source mappings.
    pub mappings: Vec<MappingStatus>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The buffer queue, when one is configured.
    pub buffer: Option<QueueStatus>,
    /// The dead-letter queue, when one is configured.
    pub dead_letters: Option<QueueStatus>,
    /// The buffer stream, when one is configured.
    pub stream: Option<StreamStatus>,
    /// The drain function, when one is named.
    pub drain: Option<DrainStatus>,
}

/// What to report on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Targets {
    /// The buffer queue.
    #[arg(long, env = "SPILLWAY_SQS_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// The dead-letter queue.
    #[arg(long, env = "SPILLWAY_SQS_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// The Kinesis buffer stream.
    #[arg(long, env = "SPILLWAY_KINESIS_STREAM")]
    pub stream: Option<String>,
    /// The drain function (its settings and event source mappings).
    #[arg(long, env = "SPILLWAY_DRAIN_FUNCTION")]
    pub function: Option<String>,
}

/// `spillway status`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// What to report on.
    #[command(flatten)]
    pub targets: Targets,
    /// One JSON object per refresh, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Refresh at this interval (e.g. 2s) until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

/// `spillway status`.
pub async fn command(args: &StatusArgs) -> Result<(), Error> {
    if args.targets.is_empty() {
        return Err(Error::Usage("give --queue-url, --dlq-url, --stream or --function (or SPILLWAY_SQS_QUEUE_URL, SPILLWAY_SQS_DLQ_URL, SPILLWAY_KINESIS_STREAM, SPILLWAY_DRAIN_FUNCTION)".into()));
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    run(&Clients::new(&sdk), &args.targets, args.json, args.watch).await
}

impl Targets {
    /// Whether there is anything to report on.
    pub fn is_empty(&self) -> bool {
        self.queue_url.is_none()
            && self.dlq_url.is_none()
            && self.stream.is_none()
            && self.function.is_none()
    }
}

/// The clients `status` reads with.
pub struct Clients {
    /// Queues.
    pub sqs: aws_sdk_sqs::Client,
    /// The stream.
    pub kinesis: aws_sdk_kinesis::Client,
    /// Ages and lag.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// The drain's settings.
    pub lambda: aws_sdk_lambda::Client,
}

impl Clients {
    /// Clients for one SDK configuration.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            kinesis: aws_sdk_kinesis::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
        }
    }
}

/// Reads a queue's numbers (no CloudWatch: cheap enough for a live counter).
pub async fn queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueStatus, Error> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(aws(format!("read the attributes of {url}")))?
        .attributes
        .unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueStatus {
        url: url.to_owned(),
        waiting: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        oldest_age_secs: None,
    })
}

/// The newest datapoint's maximum of `namespace`/`metric` for one dimension, within
/// [`METRIC_WINDOW`]; `None` when CloudWatch has none or cannot be read.
pub async fn latest_maximum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimension: (&str, &str),
) -> Option<f64> {
    let now = SystemTime::now();
    let out = cloudwatch
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name(dimension.0)
                .value(dimension.1)
                .build(),
        )
        .start_time((now - METRIC_WINDOW).into())
        // A minute ahead: the query protocol sends whole seconds, and a datapoint from this very
        // second must not fall past the end.
        .end_time((now + Duration::from_secs(60)).into())
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(metric, error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "CloudWatch not readable");
            return None;
        }
    };
    out.datapoints
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| Some((d.timestamp?, d.maximum?)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

fn whole(v: f64) -> u64 {
    // Ages and lags are non-negative and far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = v.max(0.0).round() as u64;
    whole
}

/// A queue's numbers with the age of its oldest message.
async fn queue_with_age(clients: &Clients, url: &str) -> Result<QueueStatus, Error> {
    let mut status = queue(&clients.sqs, url).await?;
    let name = url.rsplit('/').next().unwrap_or(url);
    status.oldest_age_secs = latest_maximum(
        &clients.cloudwatch,
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        ("QueueName", name),
    )
    .await
    .map(whole);
    Ok(status)
}

async fn stream(clients: &Clients, name: &str) -> Result<StreamStatus, Error> {
    let summary = clients
        .kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(aws(format!("describe the stream {name}")))?
        .stream_description_summary
        .ok_or_else(|| {
            Error::Unsuitable(format!("Kinesis gave no description of the stream {name}"))
        })?;
    let lag_ms = latest_maximum(
        &clients.cloudwatch,
        "AWS/Kinesis",
        "GetRecords.IteratorAgeMilliseconds",
        ("StreamName", name),
    )
    .await
    .map(whole);
    Ok(StreamStatus {
        name: name.to_owned(),
        state: summary.stream_status.as_str().to_owned(),
        open_shards: u64::try_from(summary.open_shard_count).unwrap_or(0),
        retention_hours: u64::try_from(summary.retention_period_hours).unwrap_or(0),
        lag_ms,
    })
}

fn count(v: Option<i32>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

async fn drain(lambda: &aws_sdk_lambda::Client, function: &str) -> Result<DrainStatus, Error> {
    let crate::tune::DrainFunction {
        config,
        reserved_concurrency,
        mappings,
    } = crate::tune::read_function(lambda, function).await?;
    Ok(DrainStatus {
        function: function.to_owned(),
        invocations_per_environment: crate::tune::invocations_per_environment(&config),
        capacity_provider: config
            .capacity_provider_config()
            .and_then(|c| c.lambda_managed_instances_capacity_provider_config())
            .map(|c| c.capacity_provider_arn().to_owned()),
        timeout_secs: count(config.timeout),
        memory_mb: count(config.memory_size),
        reserved_concurrency: count(reserved_concurrency),
        max_connects_per_sec: config
            .environment
            .and_then(|e| e.variables)
            .and_then(|mut v| v.remove("SPILLWAY_MAX_CONNECTS_PER_SEC")),
        mappings: mappings
            .into_iter()
            .map(|m| {
                let sqs = m
                    .event_source_arn()
                    .is_some_and(|a| a.starts_with("arn:aws:sqs:"));
                let pollers = match crate::tune::current_scaling(&m) {
                    crate::tune::Scaling::Provisioned {
                        min_pollers,
                        max_pollers,
                    } => Some(Pollers {
                        min: min_pollers,
                        max: max_pollers,
                    }),
                    _ => None,
                };
                MappingStatus {
                    mode: sqs.then_some(if pollers.is_some() {
                        "provisioned"
                    } else {
                        "on-demand"
                    }),
                    pollers,
                    reports_item_failures: m.function_response_types().iter().any(|t| {
                        *t == aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures
                    }),
                    uuid: m.uuid.unwrap_or_default(),
                    source: m.event_source_arn.unwrap_or_default(),
                    state: m.state.unwrap_or_default(),
                    batch_size: count(m.batch_size),
                    batching_window_secs: count(m.maximum_batching_window_in_seconds),
                    max_concurrency: count(m.scaling_config.and_then(|s| s.maximum_concurrency)),
                }
            })
            .collect(),
    })
}

/// Reads everything `targets` names.
pub async fn read(clients: &Clients, targets: &Targets) -> Result<Status, Error> {
    Ok(Status {
        buffer: match &targets.queue_url {
            Some(url) => Some(queue_with_age(clients, url).await?),
            None => None,
        },
        dead_letters: match &targets.dlq_url {
            Some(url) => Some(queue_with_age(clients, url).await?),
            None => None,
        },
        stream: match &targets.stream {
            Some(name) => Some(stream(clients, name).await?),
            None => None,
        },
        drain: match &targets.function {
            Some(function) => Some(drain(&clients.lambda, function).await?),
            None => None,
        },
    })
}

fn optional<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v}{unit}"))
}

/// The status as text.
pub fn render(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, q) in [
        ("buffer", &status.buffer),
        ("dead letters", &status.dead_letters),
    ] {
        if let Some(q) = q {
            let _ = writeln!(
                out,
                "{name:<13} waiting {:>8}   in flight {:>8}   delayed {:>6}   oldest {:>7}   {}",
                q.waiting,
                q.in_flight,
                q.delayed,
                optional(q.oldest_age_secs, " s"),
                q.url
            );
        }
    }
    if let Some(s) = &status.stream {
        let _ = writeln!(
            out,
            "{:<13} {}   {} open shards   retention {} h   lag {}",
            "stream",
            s.state,
            s.open_shards,
            s.retention_hours,
            optional(s.lag_ms, " ms"),
        );
    }
    if let Some(d) = &status.drain {
        let _ =
            writeln!(
            out,
            "{:<13} {}   timeout {}   memory {}   reserved concurrency {}   max connects/s {}{}",
            "drain",
            d.function,
            optional(d.timeout_secs, " s"),
            optional(d.memory_mb, " MB"),
            optional(d.reserved_concurrency, ""),
            d.max_connects_per_sec.as_deref().unwrap_or("default"),
            d.capacity_provider.as_ref().map_or_else(String::new, |c| format!(
                "   managed instances {c}, {} invocations per environment",
                d.invocations_per_environment
            )),
        );
        for m in &d.mappings {
            let _ = writeln!(
                out,
                "{:<13} {} {}   batch {}   window {}   {}   item failures {}   {}",
                "  mapping",
                m.uuid,
                m.state,
                optional(m.batch_size, ""),
                optional(m.batching_window_secs, " s"),
                match (m.mode, m.pollers) {
                    (_, Some(p)) => format!("provisioned, pollers {}–{}", p.min, p.max),
                    (Some(mode), None) => format!(
                        "{mode}, max concurrency {}",
                        optional(m.max_concurrency, "")
                    ),
                    (None, None) => format!("max concurrency {}", optional(m.max_concurrency, "")),
                },
                if m.reports_item_failures { "on" } else { "OFF" },
                m.source,
            );
        }
    }
    out
}

/// Prints once, or every `watch` until Ctrl-C.
pub async fn run(
    clients: &Clients,
    targets: &Targets,
    json: bool,
    watch: Option<Duration>,
) -> Result<(), Error> {
    loop {
        let status = read(clients, targets).await?;
        if json {
            println!("{}", serde_json::to_string(&status).unwrap_or_default());
        } else {
            print!("{}", render(&status));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
