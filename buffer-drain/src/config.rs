//! The drain's settings: its own ([`DrainConfig`]), those of the event source mapping the local
//! poller plays ([`PollSettings`]) and everything the local poller reads ([`LocalConfig`]). Kafka's
//! and the buffer's settings are shared with other components and live in
//! [`spillway_core::config`].

use std::time::Duration;

use spillway_core::config::{drain_buffer_kind, ConfigError, Env, KafkaConfig};
use spillway_core::envelope::RawMode;
use spillway_core::limits::BufferKind;

/// The drain's own settings (read with [`KafkaConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// `SPILLWAY_BUFFER=sqs|kinesis` ([`drain_buffer_kind`]), the setting ingest-api writes by: which
    /// events the drain receives.
    pub buffer: BufferKind,
    /// `SPILLWAY_RAW_MODE=on|off`, default `off`: forward messages that are not envelopes as they
    /// are. Off by default so that a misrouted producer is noticed (its messages go to the DLQ)
    /// rather than silently forwarded.
    pub raw_mode: RawMode,
    /// `SPILLWAY_DEADLINE_MARGIN`, default `5s`: stop producing this long before the Lambda deadline
    /// and report what is undelivered, leaving time to answer and for in-flight acks to return.
    pub deadline_margin: Duration,
    /// `SPILLWAY_DLQ_URL`: SQS queue for poison records. Unset, poison records are reported as
    /// failures and reach the buffer's own DLQ after `maxReceiveCount` receives.
    pub dlq_url: Option<String>,
    /// `SPILLWAY_DLQ_BUCKET`: S3 bucket for dead letters too large for the DLQ (over 256 KiB with
    /// their attributes); the DLQ gets a claim check naming the object. Unset, such letters are
    /// reported failed.
    pub dlq_bucket: Option<String>,
    /// `SPILLWAY_CLAIM_BUCKET`: the S3 bucket ingest-api keeps values too large for the buffer
    /// in (under `claims/`); the drain reads them from it and removes each object once Kafka
    /// acknowledged its record. Unset, a claim-checked message fails (retryably) and stays.
    pub claim_bucket: Option<String>,
    /// `SPILLWAY_TOPIC`: where raw-mode messages go (they name no topic); required with raw mode.
    pub raw_topic: Option<String>,
}

/// Stop producing this long before the Lambda deadline: time to answer, and for acknowledgements
/// already on their way to arrive, on the 30 s+ timeouts infra deploys.
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

impl DrainConfig {
    /// The settings for `buffer` with everything else at its default: envelopes only, no
    /// dead-letter queue, [`DEFAULT_DEADLINE_MARGIN`].
    pub fn new(buffer: BufferKind) -> Self {
        Self {
            buffer,
            raw_mode: RawMode::Reject,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
            dlq_url: None,
            dlq_bucket: None,
            claim_bucket: None,
            raw_topic: None,
        }
    }

    /// Reads the drain's settings.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            buffer: drain_buffer_kind(env)?,
            raw_mode: env.choice(
                "SPILLWAY_RAW_MODE",
                &[("off", RawMode::Reject), ("on", RawMode::Accept)],
                RawMode::Reject,
            )?,
            deadline_margin: env.duration(
                "SPILLWAY_DEADLINE_MARGIN",
                DEFAULT_DEADLINE_MARGIN,
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            dlq_url: env.string("SPILLWAY_DLQ_URL"),
            dlq_bucket: env.string("SPILLWAY_DLQ_BUCKET"),
            claim_bucket: env.string("SPILLWAY_CLAIM_BUCKET"),
            raw_topic: env.string("SPILLWAY_TOPIC"),
        })
        .and_then(|c: Self| {
            if c.dlq_bucket.is_some() && c.dlq_url.is_none() {
                return Err(ConfigError::Missing {
                    var: "SPILLWAY_DLQ_URL",
                    why: "SPILLWAY_DLQ_BUCKET keeps letters too large for the dead-letter queue, whose claim checks go to that queue".into(),
                });
            }
            if c.raw_mode == RawMode::Accept && c.raw_topic.is_none() {
                return Err(ConfigError::Missing {
                    var: "SPILLWAY_TOPIC",
                    why: "SPILLWAY_RAW_MODE=on needs the topic plain messages go to".into(),
                });
            }
            if let Some(t) = &c.raw_topic {
                spillway_core::topic::validate(t).map_err(|e| ConfigError::Invalid {
                    var: "SPILLWAY_TOPIC",
                    value: t.clone(),
                    expected: e.to_string(),
                })?;
            }
            Ok(c)
        })
    }
}

/// Lambda's default batch size for an SQS event source mapping.
pub const DEFAULT_SQS_BATCH_SIZE: usize = 10;
/// Lambda's default batch size for a Kinesis event source mapping.
pub const DEFAULT_KINESIS_BATCH_SIZE: usize = 100;
/// The simulated function timeout when `SPILLWAY_FUNCTION_TIMEOUT` is unset: the drain function's
/// timeout in infra.
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// AWS asks that a queue a Lambda function drains have a visibility timeout of six times the
/// function timeout: the default here too.
pub const VISIBILITY_PER_FUNCTION_TIMEOUT: u32 = 6;
/// SQS's longest visibility timeout: 12 hours.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(43_200);
/// Workers of the local poller when `SPILLWAY_MAX_CONCURRENCY` is unset.
pub const DEFAULT_WORKERS: usize = 2;

/// How the poller batches and times invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// Most records per invocation (`SPILLWAY_BATCH_SIZE`).
    pub batch_size: usize,
    /// Longest wait to fill a batch (`SPILLWAY_BATCH_WINDOW`).
    pub batch_window: Duration,
    /// SQS visibility timeout of received messages (`SPILLWAY_VISIBILITY_TIMEOUT`).
    pub visibility_timeout: Duration,
    /// The simulated function timeout: each invocation's time budget (`SPILLWAY_FUNCTION_TIMEOUT`).
    pub function_timeout: Duration,
    /// `SPILLWAY_DEADLINE_MARGIN`.
    pub deadline_margin: Duration,
}

/// Time the poller allows itself after an invocation's deadline for the deletes (and the dead-letter
/// writes' tail): with the function timeout, how long a graceful shutdown may wait for a batch.
pub const AFTER_INVOCATION: Duration = Duration::from_secs(5);

/// The time the settings check allows each SQS call around the heartbeat: a call's bound
/// ([`crate::poller::CALL_BOUND`]) and a second.
pub const HEARTBEAT_LEAD: Duration = Duration::from_secs(crate::poller::CALL_BOUND.as_secs() + 1);

impl PollSettings {
    /// Reads `SPILLWAY_BATCH_SIZE`, `SPILLWAY_BATCH_WINDOW`, `SPILLWAY_VISIBILITY_TIMEOUT` and
    /// `SPILLWAY_FUNCTION_TIMEOUT` (the settings of the event source mapping the poller plays), then
    /// [`PollSettings::check`]s them. The visibility timeout defaults to 6 × the function timeout,
    /// what AWS asks of a queue a Lambda function drains.
    pub fn from_env(env: &Env<'_>, drain: &DrainConfig) -> Result<Self, ConfigError> {
        let default_batch = match drain.buffer {
            BufferKind::Sqs => DEFAULT_SQS_BATCH_SIZE,
            BufferKind::Kinesis => DEFAULT_KINESIS_BATCH_SIZE,
        };
        let function_timeout = env.duration(
            "SPILLWAY_FUNCTION_TIMEOUT",
            DEFAULT_FUNCTION_TIMEOUT,
            Duration::from_secs(1),
            Duration::from_secs(900),
        )?;
        let batch_window = env.duration(
            "SPILLWAY_BATCH_WINDOW",
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(300),
        )?;
        let settings = Self {
            batch_size: env.number("SPILLWAY_BATCH_SIZE", default_batch, 1, 10_000)?,
            batch_window,
            // Never a default the check refuses: at least what the heartbeat needs.
            visibility_timeout: env.duration(
                "SPILLWAY_VISIBILITY_TIMEOUT",
                (function_timeout * VISIBILITY_PER_FUNCTION_TIMEOUT)
                    .max(whole_seconds_up(Self::heartbeat_needs(batch_window)))
                    .min(MAX_VISIBILITY_TIMEOUT),
                Duration::from_secs(1),
                MAX_VISIBILITY_TIMEOUT,
            )?,
            function_timeout,
            deadline_margin: drain.deadline_margin,
        };
        settings.check(drain.buffer)?;
        Ok(settings)
    }

    /// The shortest visibility timeout the heartbeat can keep a batch hidden with, for a batching
    /// window `window`. The first extension may start only when the batch closes — the window
    /// and its last receive after the first message — and fail; the next comes a third of the
    /// timeout later and must land before the timeout ends: V > W + 2·lead + V/3 + lead, so
    /// V ≥ 1.5 × (W + 2·lead), and at least 3·lead (a failed extension later on).
    fn heartbeat_needs(window: Duration) -> Duration {
        ((window + HEARTBEAT_LEAD * 2) * 3 / 2).max(HEARTBEAT_LEAD * 3)
    }

    /// The longest a graceful shutdown waits for a worker: a batch's whole time (function
    /// timeout) and its deletes ([`AFTER_INVOCATION`]), beside the receive under way (its long
    /// poll and the batching window, one bounded call each) and handing what it brought back to
    /// the queue (one more call, [`crate::poller::CALL_BOUND`]). Deletes slower than that (a
    /// struggling SQS) are cut off: their messages come again as duplicates.
    pub fn shutdown_bound(&self) -> Duration {
        self.function_timeout
            + AFTER_INVOCATION.max(self.batch_window + crate::poller::CALL_BOUND * 3)
    }

    /// Rule 11: settings that cannot work together stop the poller at start instead of
    /// dead-lettering everything. The deadline margin must leave at least half of each invocation
    /// for producing (a margin as long as the timeout ends every batch "not produced", and after
    /// `maxReceiveCount` the whole queue is in the DLQ). The visibility timeout need not cover a
    /// whole invocation — the poller's heartbeat extends it every third of the timeout while it
    /// holds a batch — but it must leave time for the calls ([`HEARTBEAT_LEAD`] each): the batch's
    /// last receive and its first extension after the batching window, and a failed extension
    /// followed by the next one; else received messages reappear while held and a second worker
    /// produces them again.
    ///
    /// The visibility timeout is an SQS setting: a Kinesis drain's is not checked.
    pub fn check(&self, buffer: BufferKind) -> Result<(), ConfigError> {
        if self.deadline_margin * 2 > self.function_timeout {
            return Err(ConfigError::Conflict {
                vars: "SPILLWAY_DEADLINE_MARGIN and SPILLWAY_FUNCTION_TIMEOUT",
                why: format!(
                    "a margin of {} leaves less than half of a {} invocation for producing; make the margin at most half the timeout",
                    humantime::format_duration(self.deadline_margin),
                    humantime::format_duration(self.function_timeout)
                ),
            });
        }
        let needed = Self::heartbeat_needs(self.batch_window);
        // SQS takes whole seconds.
        if buffer == BufferKind::Sqs
            && Duration::from_secs(self.visibility_timeout.as_secs()) < needed
        {
            return Err(ConfigError::Conflict {
                vars: "SPILLWAY_VISIBILITY_TIMEOUT and SPILLWAY_BATCH_WINDOW",
                why: format!(
                    "a visibility timeout of {} leaves no time to extend it ({} per call: the last receive and the first extension after the batching window, and one failed extension every third of the timeout); received messages would reappear while held; make it at least {}",
                    humantime::format_duration(self.visibility_timeout),
                    humantime::format_duration(HEARTBEAT_LEAD),
                    humantime::format_duration(needed)
                ),
            });
        }
        Ok(())
    }
}

/// `d` rounded up to whole seconds, as SQS takes them.
fn whole_seconds_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// Everything the local poller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The `SPILLWAY_KAFKA_*` settings.
    pub kafka: KafkaConfig,
    /// The drain's own.
    pub drain: DrainConfig,
    /// The event source mapping's.
    pub poll: PollSettings,
    /// `SPILLWAY_MAX_CONCURRENCY`, default [`DEFAULT_WORKERS`]: local "containers", each with its
    /// own producer, polling the queue; at most that many batches are produced at once, as the
    /// poller's AIMD limit ([`crate::poller::Aimd`]) allows. A stream gets one per shard instead,
    /// every shard.
    pub workers: usize,
    /// What to poll: `SPILLWAY_SQS_QUEUE_URL`, or `SPILLWAY_KINESIS_STREAM` for a Kinesis drain.
    pub source: String,
    /// `SPILLWAY_KINESIS_CHECKPOINTS`: where a Kinesis drain keeps its shards' checkpoints
    /// (`s3://bucket/prefix` or a directory; unset: in memory).
    pub kinesis_checkpoints: crate::poller::checkpoints::CheckpointsAt,
}

impl LocalConfig {
    /// Reads every setting of the local poller.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let kafka = KafkaConfig::from_env(env)?;
        let drain = DrainConfig::from_env(env)?;
        let poll = PollSettings::from_env(env, &drain)?;
        let workers = env.number("SPILLWAY_MAX_CONCURRENCY", DEFAULT_WORKERS, 1, 1000)?;
        let source = match drain.buffer {
            BufferKind::Sqs => env.required(
                "SPILLWAY_SQS_QUEUE_URL",
                "the local poller needs the queue to drain",
            )?,
            BufferKind::Kinesis => env.required(
                "SPILLWAY_KINESIS_STREAM",
                "the local poller needs the stream to drain",
            )?,
        };
        Ok(Self {
            kafka,
            drain,
            poll,
            workers,
            source,
            kinesis_checkpoints: crate::poller::checkpoints::CheckpointsAt::parse(
                env.string("SPILLWAY_KINESIS_CHECKPOINTS").as_deref(),
            )?,
        })
    }
}

/// Tokio worker threads of the drain process (`SPILLWAY_RUNTIME_THREADS`, 1 to 256): by default one
/// fewer than the CPUs, at least one. librdkafka compresses, encrypts and sends on threads of its
/// own; the runtime's share is the SQS or Kinesis calls and the decoding. With one thread the
/// runtime is single-threaded ([`crate::runtime`]): on 2 CPUs that drained a standing backlog at
/// the same rate for ~13 % less CPU per message than two work-stealing threads waking each other
/// (bench/PROFILE.md).
pub fn runtime_threads(env: &Env<'_>) -> Result<usize, ConfigError> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    env.number(
        "SPILLWAY_RUNTIME_THREADS",
        cpus.saturating_sub(1).max(1),
        1,
        256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<PollSettings, String> {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = Env::new(&map);
        let drain = DrainConfig::from_env(&env).map_err(|e| e.to_string())?;
        PollSettings::from_env(&env, &drain).map_err(|e| e.to_string())
    }

    /// Issue 14 item 3: a 5 s function timeout with the default 5 s margin used to start and then
    /// dead-letter all 20,000 messages of a test; now it stops at start naming both variables.
    #[test]
    fn runtime_threads_default_to_one_fewer_than_the_cpus_and_refuse_zero() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            runtime_threads(&Env::new(&none)).unwrap(),
            (cpus - 1).max(1)
        );
        let env = [("SPILLWAY_RUNTIME_THREADS", "3")];
        assert_eq!(runtime_threads(&Env::new(&env)).unwrap(), 3);
        let env = [("SPILLWAY_RUNTIME_THREADS", "0")];
        assert_eq!(
            runtime_threads(&Env::new(&env)).unwrap_err().to_string(),
            "SPILLWAY_RUNTIME_THREADS=0 is not valid; expected a whole number from 1 to 256"
        );
    }

    #[test]
    fn contradictory_settings_stop_the_poller_naming_the_variables() {
        let err = settings(&[("SPILLWAY_FUNCTION_TIMEOUT", "5s")]).expect_err("no time left");
        assert!(
            err.contains("SPILLWAY_DEADLINE_MARGIN") && err.contains("SPILLWAY_FUNCTION_TIMEOUT"),
            "{err}"
        );
        let err = settings(&[("SPILLWAY_VISIBILITY_TIMEOUT", "10s")])
            .expect_err("no time for the heartbeat's extensions");
        assert!(
            err.contains("SPILLWAY_VISIBILITY_TIMEOUT") && err.contains("at least 18s"),
            "{err}"
        );
        let err = settings(&[
            ("SPILLWAY_BATCH_WINDOW", "30s"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "30s"),
        ])
        .expect_err("visibility ends before the window closes");
        assert!(err.contains("at least 1m 3s"), "{err}");
        // SQS takes whole seconds: 27.9 s is 27 s, short of the 27.75 s a 6.5 s window needs.
        settings(&[
            ("SPILLWAY_BATCH_WINDOW", "6500ms"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "27900ms"),
        ])
        .expect_err("27 s");
        settings(&[
            ("SPILLWAY_BATCH_WINDOW", "6500ms"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "28s"),
        ])
        .expect("28 s");
        // A short function timeout gets a default the heartbeat can work with, not 6 × 2 s.
        let short = settings(&[
            ("SPILLWAY_FUNCTION_TIMEOUT", "2s"),
            ("SPILLWAY_DEADLINE_MARGIN", "1s"),
        ])
        .expect("the default follows the heartbeat's needs");
        assert_eq!(short.visibility_timeout, Duration::from_secs(18));
        // Kinesis has no visibility timeout to check.
        settings(&[
            ("SPILLWAY_BUFFER", "kinesis"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "5s"),
        ])
        .expect("not an SQS drain");
        // Shorter than an invocation is fine: the heartbeat keeps a held batch hidden.
        settings(&[
            ("SPILLWAY_FUNCTION_TIMEOUT", "30s"),
            ("SPILLWAY_VISIBILITY_TIMEOUT", "18s"),
        ])
        .expect("the heartbeat covers the invocation");
        let ok = settings(&[("SPILLWAY_FUNCTION_TIMEOUT", "10s")]).expect("default margin fits");
        assert_eq!(
            ok.visibility_timeout,
            Duration::from_secs(60),
            "6 × the timeout"
        );
        settings(&[]).expect("the defaults work together");
    }

    #[test]
    fn drain_settings_parse_with_units() {
        let env = [
            ("SPILLWAY_BUFFER", "kinesis"),
            ("SPILLWAY_RAW_MODE", "ON"),
            ("SPILLWAY_DEADLINE_MARGIN", "1500ms"),
            ("SPILLWAY_DLQ_URL", ""),
            ("SPILLWAY_TOPIC", "raw-events"),
        ];
        assert_eq!(
            DrainConfig::from_env(&Env::new(&env)),
            Ok(DrainConfig {
                buffer: BufferKind::Kinesis,
                raw_mode: RawMode::Accept,
                deadline_margin: Duration::from_millis(1500),
                dlq_url: None,
                dlq_bucket: None,
                claim_bucket: None,
                raw_topic: Some("raw-events".into()),
            })
        );
        let env = [("SPILLWAY_DEADLINE_MARGIN", "5")];
        assert_eq!(
            DrainConfig::from_env(&Env::new(&env)).unwrap_err().to_string(),
            "SPILLWAY_DEADLINE_MARGIN=5 is not valid; expected a duration such as 500ms, 5s or 2m, from 100ms to 10m"
        );
        let env = [("SPILLWAY_RAW_MODE", "on")];
        assert_eq!(
            DrainConfig::from_env(&Env::new(&env))
                .unwrap_err()
                .to_string(),
            "SPILLWAY_TOPIC is not set; SPILLWAY_RAW_MODE=on needs the topic plain messages go to"
        );
        // Rule 11: a bucket for letters too large for the DLQ, but no DLQ to put their claim
        // checks in, would silently report those records failed.
        let env = [("SPILLWAY_DLQ_BUCKET", "dead-letters")];
        assert_eq!(
            DrainConfig::from_env(&Env::new(&env))
                .unwrap_err()
                .to_string(),
            "SPILLWAY_DLQ_URL is not set; SPILLWAY_DLQ_BUCKET keeps letters too large for the dead-letter queue, whose claim checks go to that queue"
        );
    }
}
