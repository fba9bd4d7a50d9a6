//! `spillway replay`'s command line: the options, the target they name (a queue, a stream, or
//! Kafka through the drain's own producer) and the progress bar around [`super::Replay::run`].

use std::num::NonZeroU32;
use std::time::Duration;

use spillway_core::envelope::RawMode;
use spillway_core::limits::BufferKind;

use super::{Filters, Replay, Target};
use crate::error::Error;

/// How long the drain may take for one chunk of replayed records past its own deadline.
const KAFKA_DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// Where the letters go: exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Send the messages to this queue (normally the buffer the DLQ belongs to).
    #[arg(long)]
    pub to_queue: Option<String>,
    /// Produce the messages straight to Kafka with the drain's producer (SPILLWAY_KAFKA_*).
    #[arg(long)]
    pub to_kafka: bool,
    /// Put the records back into this Kinesis stream (for Kinesis on-failure records and
    /// records the drain dead-lettered from a stream).
    #[arg(long)]
    pub to_stream: Option<String>,
}

/// `spillway replay`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The dead-letter queue.
    #[arg(long, env = "SPILLWAY_SQS_DLQ_URL")]
    pub dlq_url: String,
    /// Where the letters go.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which letters.
    #[command(flatten)]
    pub filters: Filters,
    /// At most this many messages per second.
    #[arg(long)]
    pub rate: Option<NonZeroU32>,
    /// Print what would move; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The topic plain (raw-mode) letters are for: the drain's SPILLWAY_TOPIC. With
    /// --to-kafka they are produced to it, with their original message id as spillway-id; with
    /// --to-queue they are sent in an envelope for it that keeps that id (sent as they were,
    /// they would get a new one). Without it, plain letters are not moved.
    #[arg(long, env = "SPILLWAY_TOPIC")]
    pub raw_topic: Option<String>,
    /// The bucket the drain keeps dead letters too large for the DLQ in (the drain's
    /// SPILLWAY_DLQ_BUCKET; infra's DeadLetterBucket output). A letter whose claim check names
    /// another bucket, or a key outside dead-letters/, is not read: only the drain writes there.
    #[arg(long, env = "SPILLWAY_DLQ_BUCKET")]
    pub dlq_bucket: Option<String>,
}

/// `spillway replay`: moves the letters, prints the summary as JSON on stdout, and fails when
/// any letter stays in the DLQ.
pub async fn command(args: &ReplayArgs) -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let s3 = spillway_core::claim::ClaimStore::client(&sdk);
    let target = target(&args.target, args.raw_topic.as_deref(), &sdk, &sqs).await?;
    let total = match args.filters.max {
        Some(max) => Some(max),
        None => super::waiting(&sqs, &args.dlq_url).await,
    };
    let progress = progress_bar(total, args.dry_run);
    let summary = Replay {
        sqs: &sqs,
        kinesis: &kinesis,
        s3: &s3,
        dlq_url: &args.dlq_url,
        target: &target,
        filters: &args.filters,
        rate: args.rate,
        dry_run: args.dry_run,
        raw_topic: args.raw_topic.as_deref(),
        dlq_bucket: args.dlq_bucket.as_deref(),
    }
    .run(&progress)
    .await;
    progress.finish_and_clear();
    let summary = summary?;
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    if summary.failed > 0 {
        return Err(Error::NotAllMoved {
            failed: summary.failed,
        });
    }
    Ok(())
}

async fn target(
    to: &TargetArgs,
    raw_topic: Option<&str>,
    sdk: &aws_config::SdkConfig,
    sqs: &aws_sdk_sqs::Client,
) -> Result<Target, Error> {
    if to.to_kafka {
        let env = spillway_core::config::Env::new(&spillway_core::config::ProcessEnv);
        let kafka = spillway_core::config::KafkaConfig::from_env(&env)?;
        let config = buffer_drain::config::DrainConfig {
            // Plain letters are produced only to the topic they were for.
            raw_mode: if raw_topic.is_some() {
                RawMode::Accept
            } else {
                RawMode::Reject
            },
            deadline_margin: KAFKA_DEADLINE_MARGIN,
            raw_topic: raw_topic.map(str::to_owned),
            ..buffer_drain::config::DrainConfig::new(BufferKind::Sqs)
        };
        let drain = buffer_drain::lambda::build_drain(&kafka, &config, None)
            .await
            .map_err(|e| Error::Kafka(e.to_string()))?;
        return Ok(Target::Kafka(Box::new(drain)));
    }
    if let Some(stream) = &to.to_stream {
        return Ok(Target::stream(&aws_sdk_kinesis::Client::new(sdk), stream));
    }
    Target::queue(sqs, to.to_queue.as_deref().unwrap_or_default()).await
}

/// A bar counting moved letters on a terminal; hidden otherwise and for a dry run, whose lines
/// are the output.
fn progress_bar(total: Option<u64>, dry_run: bool) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) || dry_run {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} moved, {per_sec}, eta {eta}")
            .expect("a valid template"),
    );
    bar
}
