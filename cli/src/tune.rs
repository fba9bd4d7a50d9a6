//! `spillway tune`: the drain's event source mapping and rate limits, checked against MSK's quotas.
//!
//! The arithmetic (each line printed with its numbers):
//! * SQS visibility timeout ≥ 6 × the function timeout (AWS's rule for queues Lambda drains: a batch
//!   still being worked on must not reappear to another instance).
//! * Maximum concurrency × connections per instance ≤ 80 % of the cluster's connection quota
//!   (3,000 on MSK Serverless; the rest is left for consumers and other clients).
//! * Scale-up connection attempts: Lambda adds SQS pollers at up to 300 instances a minute (5 a
//!   second); 5 × connections per instance must stay under the cluster's 100 attempts a second.
//!   A reconnect storm of every instance at once is shown as a warning: librdkafka spreads
//!   reconnects with jittered backoff, and the drain backs off after refused authentications.

use serde::Serialize;

use crate::error::{aws, Error};

/// MSK Serverless's quotas (per cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// Client connections.
    pub max_connections: u64,
    /// Connection attempts per second.
    pub max_connects_per_sec: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_connections: 3000,
            max_connects_per_sec: 100,
        }
    }
}

/// Lambda's SQS scale-up on demand: at most 300 new concurrent invokes a minute.
pub const SCALE_UP_PER_SEC: u64 = 5;
/// Provisioned mode's scale-up: up to 1,000 new concurrent invokes a minute (rounded up per second).
pub const PROVISIONED_SCALE_UP_PER_SEC: u64 = 17;
/// Concurrent invokes one provisioned poller drives.
pub const INVOKES_PER_POLLER: u64 = 10;
/// Concurrent invokes an on-demand SQS mapping without a maximum concurrency reaches.
pub const ON_DEMAND_MAX_INVOKES: u64 = 1250;
/// Share of the connection quota the drain may use.
pub const CONNECTION_SHARE_PERCENT: u64 = 80;
/// Hours in an average month (365 × 24 / 12).
pub const HOURS_PER_MONTH: u64 = 730;
/// The minimum pollers provisioned mode takes for SQS.
pub const MIN_POLLERS: std::ops::RangeInclusive<u64> = 2..=200;
/// The most pollers a provisioned mapping may scale to.
pub const MAX_POLLERS: u64 = 2000;
/// The pollers a provisioned SQS mapping scales to when its maximum is not set.
pub const DEFAULT_MAX_POLLERS: u64 = 200;

/// How the mapping scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Scaling {
    /// Lambda adds pollers as the queue grows, up to the mapping's maximum concurrency.
    OnDemand {
        /// Concurrent invokes at most.
        max_concurrency: u64,
    },
    /// Provisioned mode: `min_pollers` always on, scaling to `max_pollers`.
    Provisioned {
        /// Pollers always on.
        min_pollers: u64,
        /// Pollers at most.
        max_pollers: u64,
    },
    /// A stream: one batch per shard at a time, or `parallelization` of them.
    PerShard {
        /// The stream's open shards.
        shards: u64,
        /// The mapping's `ParallelizationFactor` (1 to 10).
        parallelization: u64,
    },
}

impl Scaling {
    /// Concurrent invokes the mapping can reach.
    pub fn max_invokes(self) -> u64 {
        match self {
            Scaling::OnDemand { max_concurrency } => max_concurrency,
            Scaling::Provisioned { max_pollers, .. } => {
                max_pollers.saturating_mul(INVOKES_PER_POLLER)
            }
            Scaling::PerShard {
                shards,
                parallelization,
            } => shards.saturating_mul(parallelization),
        }
    }

    /// New concurrent invokes a second while the mapping scales up.
    pub fn scale_up_per_sec(self) -> u64 {
        match self {
            Scaling::OnDemand { .. } => SCALE_UP_PER_SEC,
            Scaling::Provisioned { .. } => PROVISIONED_SCALE_UP_PER_SEC,
            // Every shard's batches start at once.
            Scaling::PerShard { .. } => self.max_invokes(),
        }
    }
}

impl std::fmt::Display for Scaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scaling::OnDemand { max_concurrency } => {
                write!(f, "on-demand, max concurrency {max_concurrency}")
            }
            Scaling::Provisioned {
                min_pollers,
                max_pollers,
            } => write!(f, "provisioned, pollers {min_pollers}–{max_pollers}"),
            Scaling::PerShard {
                shards,
                parallelization,
            } => write!(
                f,
                "per shard, {shards} shards × parallelization {parallelization}"
            ),
        }
    }
}

/// The settings being checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plan {
    /// The drain function's timeout, seconds.
    pub function_timeout_secs: u64,
    /// The queue's visibility timeout, seconds (when the source is SQS).
    pub visibility_timeout_secs: Option<u64>,
    /// How the mapping scales.
    pub scaling: Scaling,
    /// Records per batch.
    pub batch_size: u64,
    /// Batching window, seconds.
    pub batching_window_secs: u64,
    /// Connections one execution environment keeps (bootstrap plus the brokers it produces to).
    pub connections_per_instance: u64,
    /// Invocations one execution environment serves at once: 1 on Lambda's default compute, more
    /// on Lambda Managed Instances, where they share one producer and its connections.
    pub invocations_per_environment: u64,
    /// What the function is deployed with (its Managed Instances setting, or 1): a plan that counts
    /// on more sharing than that is a what-if, not a setting to write.
    pub deployed_invocations_per_environment: u64,
    /// USD per poller-hour, when given: the always-on cost of provisioned mode in money.
    pub poller_hour_usd: Option<f64>,
}

/// One line of arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it passes; warnings pass.
    pub ok: bool,
    /// The arithmetic, in words.
    pub text: String,
}

impl Check {
    fn info(text: String) -> Self {
        Self { ok: true, text }
    }
}

/// Checks `plan` against `quotas`.
pub fn check(plan: &Plan, quotas: &Quotas) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(visibility) = plan.visibility_timeout_secs {
        let need = 6 * plan.function_timeout_secs;
        checks.push(Check {
            ok: visibility >= need,
            text: format!(
                "queue visibility timeout {visibility} s ≥ 6 × function timeout {} s = {need} s",
                plan.function_timeout_secs
            ),
        });
    }
    let invokes = plan.scaling.max_invokes();
    if let Scaling::Provisioned {
        min_pollers,
        max_pollers,
    } = plan.scaling
    {
        let hours = min_pollers.saturating_mul(HOURS_PER_MONTH);
        let money = plan
            .poller_hour_usd
            .map(|usd| {
                format!(
                    " × ${usd} = ${:.2}",
                    usd * f64::from(u32::try_from(hours).unwrap_or(u32::MAX))
                )
            })
            .unwrap_or_default();
        checks.push(Check::info(format!(
            "always on: {min_pollers} pollers × {HOURS_PER_MONTH} h = {hours} poller-hours a month{money}, billed whether or not messages flow"
        )));
        checks.push(Check::info(format!(
            "{max_pollers} pollers × {INVOKES_PER_POLLER} invokes = {invokes} concurrent invokes at most"
        )));
    }
    let per_environment = plan.invocations_per_environment.max(1);
    let environments = invokes.div_ceil(per_environment);
    let instances = if per_environment == 1 {
        format!("{invokes} instances")
    } else {
        format!(
            "{invokes} invokes ÷ {per_environment} per environment = {environments} environments"
        )
    };
    if per_environment > plan.deployed_invocations_per_environment.max(1) {
        checks.push(Check {
            ok: false,
            text: format!(
                "{per_environment} invocations per environment ≤ the function's own {} (its Lambda Managed Instances setting; 1 on default compute)",
                plan.deployed_invocations_per_environment.max(1)
            ),
        });
    }
    let connections = environments.saturating_mul(plan.connections_per_instance);
    let allowed = quotas.max_connections * CONNECTION_SHARE_PERCENT / 100;
    checks.push(Check {
        ok: connections <= allowed,
        text: format!(
            "{instances} × {} connections = {connections} ≤ {allowed} ({CONNECTION_SHARE_PERCENT} % of {} connections)",
            plan.connections_per_instance, quotas.max_connections
        ),
    });
    let new_per_sec = plan
        .scaling
        .scale_up_per_sec()
        .min(invokes)
        .div_ceil(per_environment);
    let scale_up = new_per_sec.saturating_mul(plan.connections_per_instance);
    checks.push(Check {
        ok: scale_up <= quotas.max_connects_per_sec,
        text: format!(
            "scale-up: {new_per_sec} new {}/s × {} connections = {scale_up} attempts/s ≤ {} attempts/s",
            if per_environment == 1 { "instances" } else { "environments" },
            plan.connections_per_instance,
            quotas.max_connects_per_sec
        ),
    });
    if per_environment > 1 {
        checks.push(Check::info(format!(
            "warning: Managed Instances also scale on CPU and can spread invokes over more environments than {environments}; the function's maximum execution environments × {} connections is the bound (infra sets {} = {allowed} ÷ 3)",
            plan.connections_per_instance, allowed / 3
        )));
    }
    if connections > quotas.max_connects_per_sec {
        checks.push(Check::info(format!(
            "warning: if all {environments} {} reconnect at once that is {connections} attempts (> {} /s); jittered reconnect backoff and the drain's auth backoff spread them",
            if per_environment == 1 { "instances" } else { "environments" },
            quotas.max_connects_per_sec
        )));
    }
    if plan.batch_size > 10
        && plan.batching_window_secs == 0
        && plan.visibility_timeout_secs.is_some()
    {
        checks.push(Check {
            ok: false,
            text: format!("batch size {} > 10 needs a batching window of at least 1 s (Lambda's rule for SQS)", plan.batch_size),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max_concurrency: u64) -> Plan {
        Plan {
            function_timeout_secs: 30,
            visibility_timeout_secs: Some(180),
            scaling: Scaling::OnDemand { max_concurrency },
            batch_size: 10,
            batching_window_secs: 0,
            connections_per_instance: 3,
            invocations_per_environment: 1,
            deployed_invocations_per_environment: 64,
            poller_hour_usd: None,
        }
    }

    fn failing(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.text.as_str())
            .collect()
    }

    #[test]
    fn the_arithmetic_refuses_what_the_quotas_cannot_take() {
        let q = Quotas::default();
        assert!(check(&plan(100), &q).iter().all(|c| c.ok));
        let too_many = check(&plan(1000), &q);
        assert!(too_many.iter().any(|c| !c.ok
            && c.text
                .starts_with("1000 instances × 3 connections = 3000 ≤ 2400")));
        let short_visibility = Plan {
            visibility_timeout_secs: Some(60),
            ..plan(10)
        };
        assert!(check(&short_visibility, &q)
            .iter()
            .any(|c| !c.ok && c.text.contains("6 × function timeout 30 s = 180 s")));
        let fat = Plan {
            connections_per_instance: 30,
            ..plan(10)
        };
        assert!(check(&fat, &q).iter().any(|c| !c.ok
            && c.text
                .starts_with("scale-up: 5 new instances/s × 30 connections = 150")));
    }

    #[test]
    fn provisioned_pollers_count_ten_invokes_each_and_scale_up_faster() {
        let q = Quotas::default();
        let provisioned = |min_pollers, max_pollers, connections| Plan {
            scaling: Scaling::Provisioned {
                min_pollers,
                max_pollers,
            },
            connections_per_instance: connections,
            poller_hour_usd: Some(0.5),
            ..plan(0)
        };
        let fits = check(&provisioned(2, 80, 3), &q);
        assert!(failing(&fits).is_empty(), "{fits:?}");
        let texts: Vec<&str> = fits.iter().map(|c| c.text.as_str()).collect();
        assert!(texts.contains(
            &"always on: 2 pollers × 730 h = 1460 poller-hours a month × $0.5 = $730.00, billed whether or not messages flow"
        ), "{texts:?}");
        assert!(texts.contains(&"80 pollers × 10 invokes = 800 concurrent invokes at most"));
        assert!(texts
            .contains(&"800 instances × 3 connections = 2400 ≤ 2400 (80 % of 3000 connections)"));
        // 1,000 invokes a minute is 17 a second: 17 × 3 = 51 attempts.
        assert!(texts.contains(
            &"scale-up: 17 new instances/s × 3 connections = 51 attempts/s ≤ 100 attempts/s"
        ));

        // One poller more is past the quota; six connections each make the scale-up too fast.
        assert_eq!(
            failing(&check(&provisioned(2, 81, 3), &q)),
            ["810 instances × 3 connections = 2430 ≤ 2400 (80 % of 3000 connections)"]
        );
        assert!(failing(&check(&provisioned(2, 10, 6), &q)).contains(
            &"scale-up: 17 new instances/s × 6 connections = 102 attempts/s ≤ 100 attempts/s"
        ));
    }

    #[test]
    fn managed_instances_count_connections_per_environment() {
        let q = Quotas::default();
        let shared = Plan {
            invocations_per_environment: 10,
            ..plan(1000)
        };
        let checks = check(&shared, &q);
        assert!(failing(&checks).is_empty(), "{checks:?}");
        let texts: Vec<&str> = checks.iter().map(|c| c.text.as_str()).collect();
        assert!(texts.contains(
            &"1000 invokes ÷ 10 per environment = 100 environments × 3 connections = 300 ≤ 2400 (80 % of 3000 connections)"
        ), "{texts:?}");
        assert!(texts.contains(
            &"scale-up: 1 new environments/s × 3 connections = 3 attempts/s ≤ 100 attempts/s"
        ));
        // A share that does not divide evenly still needs a whole environment for the rest.
        let uneven = Plan {
            invocations_per_environment: 3,
            ..plan(10)
        };
        assert!(check(&uneven, &q).iter().any(|c| c
            .text
            .starts_with("10 invokes ÷ 3 per environment = 4 environments × 3 connections = 12")));
        // Provisioned pollers on managed instances: 200 × 10 = 2,000 invokes, 64 to an environment.
        let both = Plan {
            scaling: Scaling::Provisioned {
                min_pollers: 2,
                max_pollers: 200,
            },
            invocations_per_environment: 64,
            ..plan(0)
        };
        assert!(check(&both, &q).iter().any(|c| c.ok
            && c.text.starts_with(
                "2000 invokes ÷ 64 per environment = 32 environments × 3 connections = 96"
            )));
    }

    #[test]
    fn a_stream_mapping_counts_one_batch_per_shard_at_once() {
        let q = Quotas::default();
        let stream = |shards, parallelization| Plan {
            scaling: Scaling::PerShard {
                shards,
                parallelization,
            },
            visibility_timeout_secs: None,
            ..plan(0)
        };
        let two = check(&stream(2, 1), &q);
        assert!(failing(&two).is_empty(), "{two:?}");
        assert!(two.iter().any(|c| c.text
            == "scale-up: 2 new instances/s × 3 connections = 6 attempts/s ≤ 100 attempts/s"));
        // 500 shards × 10: 5,000 batches at once, all starting together.
        assert_eq!(
            failing(&check(&stream(500, 10), &q)),
            [
                "5000 instances × 3 connections = 15000 ≤ 2400 (80 % of 3000 connections)",
                "scale-up: 5000 new instances/s × 3 connections = 15000 attempts/s ≤ 100 attempts/s"
            ]
        );
        // Numbers past any real setting saturate and fail, never wrap round to "ok".
        let huge = Plan {
            connections_per_instance: u64::MAX / 2,
            ..stream(u64::MAX, u64::MAX)
        };
        assert_eq!(failing(&check(&huge, &q)).len(), 2);
    }

    #[test]
    fn a_change_of_scaling_mode_is_checked_before_anything_is_read_or_written() {
        let sqs = "arn:aws:sqs:us-east-1:000000000000:q";
        let on_demand = Scaling::OnDemand { max_concurrency: 5 };
        let provisioned = Scaling::Provisioned {
            min_pollers: 2,
            max_pollers: 10,
        };
        let asked = |max_concurrency, min_pollers, max_pollers| Changes {
            max_concurrency,
            min_pollers,
            max_pollers,
            ..Changes::default()
        };
        let refused = |current, changes: &Changes, source| match scaling(current, changes, source) {
            Err(Error::Usage(text)) => text,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            scaling(on_demand, &asked(None, Some(3), Some(30)), sqs).ok(),
            Some(Scaling::Provisioned {
                min_pollers: 3,
                max_pollers: 30
            })
        );
        assert_eq!(
            scaling(provisioned, &asked(None, None, Some(40)), sqs).ok(),
            Some(Scaling::Provisioned {
                min_pollers: 2,
                max_pollers: 40
            })
        );
        assert_eq!(
            scaling(on_demand, &asked(Some(50), None, None), sqs).ok(),
            Some(Scaling::OnDemand {
                max_concurrency: 50
            })
        );
        assert!(refused(on_demand, &asked(Some(50), Some(2), Some(10)), sqs)
            .contains("a mapping takes one"));
        assert!(refused(provisioned, &asked(Some(50), None, None), sqs)
            .contains("is in provisioned mode (pollers 2–10)"));
        assert!(refused(on_demand, &asked(None, Some(2), None), sqs)
            .contains("needs both --min-pollers and --max-pollers"));
        assert!(refused(
            on_demand,
            &asked(None, Some(2), Some(10)),
            "arn:aws:kinesis:us-east-1:000000000000:stream/s"
        )
        .contains("only for an SQS mapping"));
        assert_eq!(
            refused(on_demand, &asked(None, Some(1), Some(10)), sqs),
            "--min-pollers 1 is out of range: 2 to 200"
        );
        assert_eq!(
            refused(on_demand, &asked(None, Some(201), Some(300)), sqs),
            "--min-pollers 201 is out of range: 2 to 200"
        );
        assert_eq!(
            refused(on_demand, &asked(None, Some(20), Some(10)), sqs),
            "--max-pollers 10 is out of range: 20 (the minimum pollers) to 2000"
        );
        assert_eq!(
            refused(provisioned, &asked(None, None, Some(2001)), sqs),
            "--max-pollers 2001 is out of range: 2 (the minimum pollers) to 2000"
        );
        assert_eq!(
            refused(on_demand, &asked(Some(1), None, None), sqs),
            "--max-concurrency 1 is out of range: 2 to 1000"
        );
        assert_eq!(
            refused(on_demand, &asked(Some(1001), None, None), sqs),
            "--max-concurrency 1001 is out of range: 2 to 1000"
        );
        let stream = Scaling::PerShard {
            shards: 2,
            parallelization: 1,
        };
        assert!(refused(
            stream,
            &asked(Some(5), None, None),
            "arn:aws:kinesis:us-east-1:000000000000:stream/s"
        )
        .contains("is for an SQS mapping"));
    }
}

/// What `tune` was asked to change.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Changes {
    /// New maximum concurrency (instances), on-demand mode.
    #[arg(long)]
    pub max_concurrency: Option<u64>,
    /// Provisioned mode: pollers always on, 2 to 200 (billed whether or not messages flow).
    #[arg(long)]
    pub min_pollers: Option<u64>,
    /// Provisioned mode: pollers at most, up to 2000; each drives up to 10 concurrent invokes.
    #[arg(long)]
    pub max_pollers: Option<u64>,
    /// New batch size.
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// New batching window, in seconds.
    #[arg(long = "batching-window")]
    pub batching_window_secs: Option<u64>,
    /// New SPILLWAY_MAX_CONNECTS_PER_SEC for the function.
    #[arg(long)]
    pub max_connects_per_sec: Option<u32>,
}

impl Changes {
    fn any(&self) -> bool {
        self.max_concurrency.is_some()
            || self.min_pollers.is_some()
            || self.max_pollers.is_some()
            || self.batch_size.is_some()
            || self.batching_window_secs.is_some()
            || self.max_connects_per_sec.is_some()
    }
}

/// The mapping's scaling after `changes`, or why they cannot be made: the two modes are exclusive,
/// provisioned mode is only for SQS, and each number has AWS's range.
fn scaling(current: Scaling, changes: &Changes, source: &str) -> Result<Scaling, Error> {
    let usage = |text: String| Err(Error::Usage(text));
    if changes.min_pollers.is_none() && changes.max_pollers.is_none() {
        return match (changes.max_concurrency, current) {
            (None, _) => Ok(current),
            (Some(c), _) if !(2..=1000).contains(&c) => {
                usage(format!("--max-concurrency {c} is out of range: 2 to 1000"))
            }
            (Some(c), Scaling::OnDemand { .. }) => Ok(Scaling::OnDemand { max_concurrency: c }),
            (Some(_), Scaling::PerShard { .. }) => usage(format!(
                "--max-concurrency is for an SQS mapping; this one reads {source}, one batch per shard (its ParallelizationFactor sets more)"
            )),
            (Some(_), provisioned) => usage(format!(
                "the mapping is in provisioned mode ({}), where concurrency follows the pollers: change --min-pollers/--max-pollers; tune does not leave provisioned mode (remove the mapping's ProvisionedPollerConfig with Lambda's UpdateEventSourceMapping, then set --max-concurrency)",
                provisioned.to_string().trim_start_matches("provisioned, ")
            )),
        };
    }
    if changes.max_concurrency.is_some() {
        return usage(
            "--max-concurrency (on-demand) and --min-pollers/--max-pollers (provisioned mode) are two ways to scale, and a mapping takes one"
                .into(),
        );
    }
    if !source.starts_with("arn:aws:sqs:") {
        return usage(format!(
            "provisioned pollers are only for an SQS mapping here; this one reads {source}"
        ));
    }
    let (min_pollers, max_pollers) = match (current, changes.min_pollers, changes.max_pollers) {
        (_, Some(min), Some(max)) => (min, max),
        (
            Scaling::Provisioned {
                min_pollers,
                max_pollers,
            },
            min,
            max,
        ) => (min.unwrap_or(min_pollers), max.unwrap_or(max_pollers)),
        _ => {
            return usage(
                "moving an on-demand mapping to provisioned mode needs both --min-pollers and --max-pollers"
                    .into(),
            )
        }
    };
    if !MIN_POLLERS.contains(&min_pollers) {
        return usage(format!(
            "--min-pollers {min_pollers} is out of range: {} to {}",
            MIN_POLLERS.start(),
            MIN_POLLERS.end()
        ));
    }
    if !(min_pollers..=MAX_POLLERS).contains(&max_pollers) {
        return usage(format!(
            "--max-pollers {max_pollers} is out of range: {min_pollers} (the minimum pollers) to {MAX_POLLERS}"
        ));
    }
    Ok(Scaling::Provisioned {
        min_pollers,
        max_pollers,
    })
}

/// `spillway tune`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// The drain function.
    #[arg(long)]
    pub function: String,
    /// The mapping, when the function has several.
    #[arg(long)]
    pub uuid: Option<String>,
    /// The settings to change.
    #[command(flatten)]
    pub changes: Changes,
    /// Connections one drain execution environment keeps (bootstrap plus brokers), 1 to 100.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub connections_per_instance: u64,
    /// Invocations one execution environment serves at once (Lambda Managed Instances), 1 to
    /// 1600; default: the function's capacity provider setting, or 1. More than the function's
    /// own is a what-if: checked, and failing, so not written without --force.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1600))]
    pub invocations_per_environment: Option<u64>,
    /// Price of a provisioned poller-hour in USD (see Lambda's pricing page for the region), to
    /// state provisioned mode's always-on cost in money.
    #[arg(long)]
    pub poller_hour_usd: Option<f64>,
    /// Apply even when a check fails.
    #[arg(long)]
    pub force: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `spillway tune`: reads, checks, applies what is safe and prints the arithmetic.
pub async fn command(args: &TuneArgs) -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let outcome = run(&lambda, &sqs, &kinesis, args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        println!("mode {}", outcome.plan.scaling);
        for c in &outcome.checks {
            println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.text);
        }
        println!(
            "{}",
            if outcome.applied {
                "applied"
            } else {
                "not changed"
            }
        );
    }
    if outcome.unsafe_settings && !args.force {
        return Err(Error::Refused);
    }
    Ok(())
}

/// What `tune` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The mapping.
    pub uuid: String,
    /// The settings after the changes.
    pub plan: Plan,
    /// The arithmetic.
    pub checks: Vec<Check>,
    /// Whether the changes were written.
    pub applied: bool,
    /// Whether any check failed.
    pub unsafe_settings: bool,
}

/// A planned setting that Lambda's API cannot take.
fn out_of_range<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Unsuitable(format!("{what} out of range: {e}"))
}

/// The drain function as Lambda describes it.
pub struct DrainFunction {
    /// Its configuration.
    pub config: aws_sdk_lambda::types::FunctionConfiguration,
    /// Its reserved concurrency, when set.
    pub reserved_concurrency: Option<i32>,
    /// Its event source mappings.
    pub mappings: Vec<aws_sdk_lambda::types::EventSourceMappingConfiguration>,
}

/// Reads `function`'s configuration and event source mappings.
pub async fn read_function(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<DrainFunction, Error> {
    let out = lambda
        .get_function()
        .function_name(function)
        .send()
        .await
        .map_err(aws(format!("read function {function}")))?;
    let mappings = lambda
        .list_event_source_mappings()
        .function_name(function)
        .send()
        .await
        .map_err(aws(format!("list the event source mappings of {function}")))?
        .event_source_mappings
        .unwrap_or_default();
    Ok(DrainFunction {
        config: out
            .configuration
            .unwrap_or_else(|| aws_sdk_lambda::types::FunctionConfiguration::builder().build()),
        reserved_concurrency: out
            .concurrency
            .and_then(|c| c.reserved_concurrent_executions),
        mappings,
    })
}

/// How `mapping` scales now: provisioned when it has a poller configuration, else on demand (up
/// to its maximum concurrency, or Lambda's own ceiling without one).
pub fn current_scaling(
    mapping: &aws_sdk_lambda::types::EventSourceMappingConfiguration,
) -> Scaling {
    let count = |v: Option<i32>| v.and_then(|v| u64::try_from(v).ok());
    match mapping.provisioned_poller_config() {
        Some(p) if p.minimum_pollers().is_some() || p.maximum_pollers().is_some() => {
            let min_pollers = count(p.minimum_pollers()).unwrap_or(*MIN_POLLERS.start());
            Scaling::Provisioned {
                min_pollers,
                // Unset, AWS's maximum for SQS is 200 pollers.
                max_pollers: count(p.maximum_pollers())
                    .unwrap_or(DEFAULT_MAX_POLLERS)
                    .max(min_pollers),
            }
        }
        _ => Scaling::OnDemand {
            max_concurrency: count(
                mapping
                    .scaling_config()
                    .and_then(aws_sdk_lambda::types::ScalingConfig::maximum_concurrency),
            )
            .unwrap_or(ON_DEMAND_MAX_INVOKES),
        },
    }
}

/// Invocations one execution environment of the function serves at once: its Lambda Managed
/// Instances setting, or 1 on Lambda's default compute.
pub fn invocations_per_environment(config: &aws_sdk_lambda::types::FunctionConfiguration) -> u64 {
    config
        .capacity_provider_config()
        .and_then(aws_sdk_lambda::types::CapacityProviderConfig::lambda_managed_instances_capacity_provider_config)
        .and_then(aws_sdk_lambda::types::LambdaManagedInstancesCapacityProviderConfig::per_execution_environment_max_concurrency)
        .and_then(|c| u64::try_from(c).ok())
        .unwrap_or(1)
        .max(1)
}

/// Reads the function and its mapping, checks the changed settings, and writes them when they are
/// safe (or `--force`).
pub async fn run(
    lambda: &aws_sdk_lambda::Client,
    sqs: &aws_sdk_sqs::Client,
    kinesis: &aws_sdk_kinesis::Client,
    args: &TuneArgs,
) -> Result<Outcome, Error> {
    let (function, uuid, changes) = (&args.function, args.uuid.as_deref(), &args.changes);
    if let Some(usd) = args.poller_hour_usd.filter(|p| !p.is_finite() || *p < 0.0) {
        return Err(Error::Usage(format!(
            "--poller-hour-usd {usd}: expected a price of 0 or more"
        )));
    }
    let DrainFunction {
        config, mappings, ..
    } = read_function(lambda, function).await?;
    let mapping = match uuid {
        Some(u) => mappings.into_iter().find(|m| m.uuid() == Some(u)),
        None => mappings.into_iter().next(),
    }
    .ok_or_else(|| {
        Error::Unsuitable(format!(
            "{function} has no event source mapping{}",
            uuid.map(|u| format!(" {u}")).unwrap_or_default()
        ))
    })?;
    let source = mapping.event_source_arn().unwrap_or_default().to_owned();
    let current = match (
        current_scaling(&mapping),
        kinesis_shards(kinesis, &source).await?,
    ) {
        (_, Some(shards)) => Scaling::PerShard {
            shards,
            parallelization: mapping
                .parallelization_factor()
                .and_then(|p| u64::try_from(p).ok())
                .unwrap_or(1)
                .max(1),
        },
        (scaling, None) => scaling,
    };
    let planned = scaling(current, changes, &source)?;
    let visibility_timeout_secs = visibility_timeout(sqs, &source).await?;
    let plan = Plan {
        function_timeout_secs: config
            .timeout()
            .map_or(3, |t| u64::try_from(t).unwrap_or(3)),
        visibility_timeout_secs,
        scaling: planned,
        batch_size: changes.batch_size.unwrap_or_else(|| {
            mapping
                .batch_size()
                .map_or(10, |b| u64::try_from(b).unwrap_or(10))
        }),
        batching_window_secs: changes.batching_window_secs.unwrap_or_else(|| {
            mapping
                .maximum_batching_window_in_seconds()
                .map_or(0, |w| u64::try_from(w).unwrap_or(0))
        }),
        connections_per_instance: args.connections_per_instance,
        invocations_per_environment: args
            .invocations_per_environment
            .unwrap_or_else(|| invocations_per_environment(&config))
            .max(1),
        deployed_invocations_per_environment: invocations_per_environment(&config),
        poller_hour_usd: args.poller_hour_usd,
    };
    let checks = check(&plan, &Quotas::default());
    let unsafe_settings = checks.iter().any(|c| !c.ok);
    let uuid = mapping.uuid().unwrap_or_default().to_owned();
    let applied = changes.any() && (!unsafe_settings || args.force);
    if applied {
        let switched = std::mem::discriminant(&current) != std::mem::discriminant(&planned);
        apply(lambda, &config, function, &uuid, &plan, changes, switched).await?;
    }
    Ok(Outcome {
        uuid,
        plan,
        checks,
        applied,
        unsafe_settings,
    })
}

/// The open shards of the Kinesis stream `source` names, or `None` for other sources.
async fn kinesis_shards(
    kinesis: &aws_sdk_kinesis::Client,
    source: &str,
) -> Result<Option<u64>, Error> {
    let Some((_, name)) = source
        .strip_prefix("arn:aws:kinesis:")
        .and_then(|rest| rest.split_once(":stream/"))
    else {
        return Ok(None);
    };
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(aws(format!("describe the stream {source}")))?;
    Ok(summary
        .stream_description_summary
        .and_then(|s| u64::try_from(s.open_shard_count).ok()))
}

/// The visibility timeout of the SQS queue `source` names, or `None` for other sources.
async fn visibility_timeout(sqs: &aws_sdk_sqs::Client, source: &str) -> Result<Option<u64>, Error> {
    if !source.starts_with("arn:aws:sqs:") {
        return Ok(None);
    }
    let mut parts = source.split(':').skip(4);
    let (account, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(aws(format!("find the queue {name}")))?
        .queue_url
        .unwrap_or_default();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(aws(format!("read the attributes of {url}")))?
        .attributes
        .unwrap_or_default();
    Ok(attrs
        .get(&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse().ok()))
}

/// Writes the mapping's new settings and, when asked, the function's connection rate. `switched`:
/// the mapping moves from on-demand to provisioned mode, so its maximum concurrency is removed
/// (AWS takes one of the two).
async fn apply(
    lambda: &aws_sdk_lambda::Client,
    config: &aws_sdk_lambda::types::FunctionConfiguration,
    function: &str,
    uuid: &str,
    plan: &Plan,
    changes: &Changes,
    switched: bool,
) -> Result<(), Error> {
    let int = |v: u64, what: &'static str| i32::try_from(v).map_err(out_of_range(what));
    let mut update = lambda
        .update_event_source_mapping()
        .uuid(uuid)
        .batch_size(int(plan.batch_size, "batch size")?)
        .maximum_batching_window_in_seconds(int(plan.batching_window_secs, "batching window")?);
    match plan.scaling {
        Scaling::OnDemand { max_concurrency } if changes.max_concurrency.is_some() => {
            update = update.scaling_config(
                aws_sdk_lambda::types::ScalingConfig::builder()
                    .maximum_concurrency(int(max_concurrency, "maximum concurrency")?)
                    .build(),
            );
        }
        Scaling::Provisioned {
            min_pollers,
            max_pollers,
        } if changes.min_pollers.is_some() || changes.max_pollers.is_some() => {
            update = update.provisioned_poller_config(
                aws_sdk_lambda::types::ProvisionedPollerConfig::builder()
                    .minimum_pollers(int(min_pollers, "minimum pollers")?)
                    .maximum_pollers(int(max_pollers, "maximum pollers")?)
                    .build(),
            );
            if switched {
                update =
                    update.scaling_config(aws_sdk_lambda::types::ScalingConfig::builder().build());
            }
        }
        _ => {}
    }
    update
        .send()
        .await
        .map_err(aws(format!("update the event source mapping {uuid}")))?;
    if let Some(rate) = changes.max_connects_per_sec {
        let mut variables = config
            .environment()
            .and_then(|e| e.variables())
            .cloned()
            .unwrap_or_default();
        variables.insert("SPILLWAY_MAX_CONNECTS_PER_SEC".into(), rate.to_string());
        lambda
            .update_function_configuration()
            .function_name(function)
            .environment(
                aws_sdk_lambda::types::Environment::builder()
                    .set_variables(Some(variables))
                    .build(),
            )
            .send()
            .await
            .map_err(aws(format!("update the configuration of {function}")))?;
    }
    Ok(())
}
