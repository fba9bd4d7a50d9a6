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

/// Lambda's SQS scale-up: at most 300 new concurrent instances a minute.
pub const SCALE_UP_PER_SEC: u64 = 5;
/// Share of the connection quota the drain may use.
pub const CONNECTION_SHARE_PERCENT: u64 = 80;

/// The settings being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The drain function's timeout, seconds.
    pub function_timeout_secs: u64,
    /// The queue's visibility timeout, seconds (when the source is SQS).
    pub visibility_timeout_secs: Option<u64>,
    /// The mapping's maximum concurrency (instances).
    pub max_concurrency: u64,
    /// Records per batch.
    pub batch_size: u64,
    /// Batching window, seconds.
    pub batching_window_secs: u64,
    /// Connections one drain instance keeps (bootstrap plus the brokers it produces to).
    pub connections_per_instance: u64,
}

/// One line of arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it passes; warnings pass.
    pub ok: bool,
    /// The arithmetic, in words.
    pub text: String,
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
    let connections = plan.max_concurrency * plan.connections_per_instance;
    let allowed = quotas.max_connections * CONNECTION_SHARE_PERCENT / 100;
    checks.push(Check {
        ok: connections <= allowed,
        text: format!(
            "{} instances × {} connections = {connections} ≤ {allowed} ({CONNECTION_SHARE_PERCENT} % of {} connections)",
            plan.max_concurrency, plan.connections_per_instance, quotas.max_connections
        ),
    });
    let scale_up = SCALE_UP_PER_SEC.min(plan.max_concurrency) * plan.connections_per_instance;
    checks.push(Check {
        ok: scale_up <= quotas.max_connects_per_sec,
        text: format!(
            "scale-up: {} new instances/s × {} connections = {scale_up} attempts/s ≤ {} attempts/s",
            SCALE_UP_PER_SEC.min(plan.max_concurrency),
            plan.connections_per_instance,
            quotas.max_connects_per_sec
        ),
    });
    let storm = connections;
    if storm > quotas.max_connects_per_sec {
        checks.push(Check {
            ok: true,
            text: format!(
                "warning: if all {} instances reconnect at once that is {storm} attempts (> {} /s); jittered reconnect backoff and the drain's auth backoff spread them",
                plan.max_concurrency, quotas.max_connects_per_sec
            ),
        });
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
            max_concurrency,
            batch_size: 10,
            batching_window_secs: 0,
            connections_per_instance: 3,
        }
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
}

/// What `tune` was asked to change.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Changes {
    /// New maximum concurrency (instances).
    #[arg(long)]
    pub max_concurrency: Option<u64>,
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
    /// Connections one drain instance keeps (bootstrap plus brokers).
    #[arg(long, default_value_t = 3)]
    pub connections_per_instance: u64,
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
    let outcome = run(
        &lambda,
        &sqs,
        &args.function,
        args.uuid.as_deref(),
        args.connections_per_instance,
        &args.changes,
        args.force,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
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

/// Reads the function and its mapping, checks the changed settings, and writes them when they are
/// safe (or `force`).
pub async fn run(
    lambda: &aws_sdk_lambda::Client,
    sqs: &aws_sdk_sqs::Client,
    function: &str,
    uuid: Option<&str>,
    connections_per_instance: u64,
    changes: &Changes,
    force: bool,
) -> Result<Outcome, Error> {
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
    let visibility_timeout_secs = visibility_timeout(sqs, &source).await?;
    let current_concurrency = mapping
        .scaling_config()
        .and_then(aws_sdk_lambda::types::ScalingConfig::maximum_concurrency)
        .map_or(1000, |c| u64::try_from(c).unwrap_or(1000));
    let plan = Plan {
        function_timeout_secs: config
            .timeout()
            .map_or(3, |t| u64::try_from(t).unwrap_or(3)),
        visibility_timeout_secs,
        max_concurrency: changes.max_concurrency.unwrap_or(current_concurrency),
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
        connections_per_instance,
    };
    let checks = check(&plan, &Quotas::default());
    let unsafe_settings = checks.iter().any(|c| !c.ok);
    let wants_change = changes.max_concurrency.is_some()
        || changes.batch_size.is_some()
        || changes.batching_window_secs.is_some()
        || changes.max_connects_per_sec.is_some();
    let uuid = mapping.uuid().unwrap_or_default().to_owned();
    let applied = wants_change && (!unsafe_settings || force);
    if applied {
        apply(lambda, &config, function, &uuid, &plan, changes).await?;
    }
    Ok(Outcome {
        uuid,
        plan,
        checks,
        applied,
        unsafe_settings,
    })
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

/// Writes the mapping's new settings and, when asked, the function's connection rate.
async fn apply(
    lambda: &aws_sdk_lambda::Client,
    config: &aws_sdk_lambda::types::FunctionConfiguration,
    function: &str,
    uuid: &str,
    plan: &Plan,
    changes: &Changes,
) -> Result<(), Error> {
    let mut update = lambda
        .update_event_source_mapping()
        .uuid(uuid)
        .batch_size(i32::try_from(plan.batch_size).map_err(out_of_range("batch size"))?)
        .maximum_batching_window_in_seconds(
            i32::try_from(plan.batching_window_secs).map_err(out_of_range("batching window"))?,
        );
    if changes.max_concurrency.is_some() {
        update = update.scaling_config(
            aws_sdk_lambda::types::ScalingConfig::builder()
                .maximum_concurrency(
                    i32::try_from(plan.max_concurrency)
                        .map_err(out_of_range("maximum concurrency"))?,
                )
                .build(),
        );
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
