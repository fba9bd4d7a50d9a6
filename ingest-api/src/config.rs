//! ingest-api's settings.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use spillway_core::config::{BufferConfig, ConfigError, Env};
use spillway_core::topic;

/// Which topics callers may write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPolicy {
    /// Any valid Kafka topic name (`SPILLWAY_TOPICS=*`).
    Any,
    /// Only these.
    Only(BTreeSet<String>),
}

impl TopicPolicy {
    /// Whether `topic` may be written to.
    pub fn allows(&self, topic: &str) -> bool {
        match self {
            TopicPolicy::Any => topic::validate(topic).is_ok(),
            TopicPolicy::Only(topics) => topics.contains(topic),
        }
    }
}

/// Where a message's tenant comes from (`SPILLWAY_TENANT_FROM`): on a standard SQS queue the
/// tenant is the message group, so SQS fair queues keep a noisy tenant from pushing up the
/// others' dwell time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantFrom {
    /// No tenant: no message group (the default).
    None,
    /// `api-key`: the API Gateway API key's id the request was made with.
    ApiKey,
    /// `header:<name>`: a request header the caller (or a proxy in front) sets.
    Header(axum::http::HeaderName),
}

/// Everything ingest-api reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// `SPILLWAY_LISTEN`, default `127.0.0.1:8080`: the local server's address (unused in Lambda).
    pub listen: SocketAddr,
    /// `SPILLWAY_TOPIC`: where `POST /messages` writes. Unset, that endpoint answers 404.
    pub default_topic: Option<String>,
    /// `SPILLWAY_TOPICS`: comma-separated allow-list, or `*` for any valid name. Default: just
    /// `SPILLWAY_TOPIC`, so that an API exposed to callers cannot create arbitrary topics.
    pub topics: TopicPolicy,
    /// `SPILLWAY_MAX_BATCH_RECORDS`, default 500: records per `POST /topics/{topic}` request, as
    /// many as one Kinesis `PutRecords` call carries.
    pub max_batch_records: usize,
    /// `SPILLWAY_BUFFER_RETRY_BUDGET`, default `3s`: how long failed buffer writes are retried
    /// before the caller gets 429/503. Short enough for API Gateway's 29 s limit and a caller's own
    /// retry; long enough to ride out a throttling blip.
    pub retry_budget: Duration,
    /// `SPILLWAY_MAX_REQUEST_BYTES`: the largest request body read, answered 413 above it. Default
    /// and ceiling are the host's own limit, so a request the host would cut off is refused here
    /// with a JSON 413 that names the limit: in Lambda (`AWS_LAMBDA_RUNTIME_API` set) the 6 MB an
    /// API Gateway → Lambda invocation carries ([`LAMBDA_MAX_REQUEST_BYTES`]); as a server, API
    /// Gateway's 10 MB ([`SERVER_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// `SPILLWAY_CLUSTER_ID`, default `spillway`: the cluster id REST Proxy v3 clients name in
    /// their paths (`/v3/clusters/{cluster_id}/…`) and discover with `GET /v3/clusters`. 1 to 64
    /// of `a-z A-Z 0-9 . _ -`; set it to the MSK cluster's name to keep clients' paths unchanged.
    pub cluster_id: String,
    /// `SPILLWAY_V3_BATCH_MAX_ENTRIES`, default 10 (REST Proxy's
    /// `api.v3.produce.batch.maximum.entries`), at most 500: entries per `records:batch`.
    pub v3_batch_max_entries: usize,
    /// `SPILLWAY_V3_STREAM_IDLE`, default `60s` (1 s to 1 h): a REST Proxy v3 stream that sends
    /// no bytes for this long is ended with a last line saying so.
    pub v3_stream_idle: Duration,
    /// `SPILLWAY_TENANT_FROM`: `api-key`, `header:<name>` or unset ([`TenantFrom`]).
    pub tenant_from: TenantFrom,
    /// `SPILLWAY_CLAIM_BUCKET`: the S3 bucket for values too large for the buffer (issue 18). Such
    /// a value is stored there (under `claims/`) and the envelope carries a claim check naming
    /// it; the drain produces the whole value and removes the object once Kafka acknowledged the
    /// record. Unset, such a message is answered 413 naming the buffer's limit.
    pub claim_bucket: Option<String>,
    /// `SPILLWAY_CLAIM_THRESHOLD_BYTES`: values longer than this go to the claim bucket even when
    /// they would fit the buffer (fewer, smaller buffer messages); unset, only values that do not
    /// fit. 1,024 or more.
    pub claim_threshold: Option<usize>,
    /// `SPILLWAY_KAFKA_MESSAGE_MAX_BYTES`, default 8 MiB (MSK Serverless's limit), as the drain
    /// reads it: a claim-checked record (value, key and headers) larger than this is answered 413
    /// naming it, since Kafka would refuse it.
    pub kafka_max_bytes: usize,
    /// The buffer (see [`BufferConfig`]).
    pub buffer: BufferConfig,
}

/// Lambda's synchronous invocation payload limit (6 MB): the most an API Gateway → Lambda request
/// can carry.
pub const LAMBDA_MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// API Gateway's payload limit (10 MB): the most a request through it can carry.
pub const SERVER_MAX_REQUEST_BYTES: usize = 10 * 1000 * 1000;

impl IngestConfig {
    /// Reads and checks the settings.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let listen = env
            .string("SPILLWAY_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            var: "SPILLWAY_LISTEN",
            value: listen.clone(),
            expected: "an address such as 127.0.0.1:8080".into(),
        })?;
        let default_topic = env.string("SPILLWAY_TOPIC");
        if let Some(t) = &default_topic {
            topic::validate(t).map_err(|e| ConfigError::Invalid {
                var: "SPILLWAY_TOPIC",
                value: t.clone(),
                expected: e.to_string(),
            })?;
        }
        let topics = match env.string("SPILLWAY_TOPICS") {
            Some(list) if list == "*" => TopicPolicy::Any,
            Some(list) => {
                let names: BTreeSet<String> = list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
                if let Some(bad) = names.iter().find_map(|t| topic::validate(t).err()) {
                    return Err(ConfigError::Invalid {
                        var: "SPILLWAY_TOPICS",
                        value: list,
                        expected: format!("a comma-separated list of topic names, or *; {bad}"),
                    });
                }
                TopicPolicy::Only(names.into_iter().chain(default_topic.clone()).collect())
            }
            None => match &default_topic {
                Some(t) => TopicPolicy::Only(BTreeSet::from([t.clone()])),
                None => {
                    return Err(ConfigError::Missing {
                        var: "SPILLWAY_TOPIC",
                        why: "set it (the default topic) or SPILLWAY_TOPICS (the allow-list), or no message could be accepted".into(),
                    })
                }
            },
        };
        Ok(Self {
            listen,
            default_topic,
            topics,
            max_batch_records: env.number("SPILLWAY_MAX_BATCH_RECORDS", 500, 1, 10_000)?,
            retry_budget: env.duration(
                "SPILLWAY_BUFFER_RETRY_BUDGET",
                Duration::from_secs(3),
                Duration::ZERO,
                Duration::from_secs(25),
            )?,
            max_request_bytes: {
                let ceiling = if env.string("AWS_LAMBDA_RUNTIME_API").is_some() {
                    LAMBDA_MAX_REQUEST_BYTES
                } else {
                    SERVER_MAX_REQUEST_BYTES
                };
                env.number("SPILLWAY_MAX_REQUEST_BYTES", ceiling, 1024, ceiling)?
            },
            cluster_id: cluster_id(env)?,
            v3_batch_max_entries: env.number("SPILLWAY_V3_BATCH_MAX_ENTRIES", 10, 1, 500)?,
            v3_stream_idle: env.duration(
                "SPILLWAY_V3_STREAM_IDLE",
                Duration::from_secs(60),
                Duration::from_secs(1),
                Duration::from_secs(3600),
            )?,
            tenant_from: tenant_from(env)?,
            claim_bucket: env.string("SPILLWAY_CLAIM_BUCKET"),
            claim_threshold: match env.string("SPILLWAY_CLAIM_THRESHOLD_BYTES") {
                Some(_) => {
                    Some(env.number("SPILLWAY_CLAIM_THRESHOLD_BYTES", 0, 1024, 1_000_000_000)?)
                }
                None => None,
            },
            kafka_max_bytes: env.number(
                "SPILLWAY_KAFKA_MESSAGE_MAX_BYTES",
                spillway_core::config::MSK_SERVERLESS_MAX_MESSAGE_BYTES,
                1000,
                1_000_000_000,
            )?,
            buffer: BufferConfig::from_env(env)?,
        })
    }
}

/// `SPILLWAY_CLUSTER_ID`, checked.
fn cluster_id(env: &Env<'_>) -> Result<String, ConfigError> {
    let id = env
        .string("SPILLWAY_CLUSTER_ID")
        .unwrap_or_else(|| "spillway".into());
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(ConfigError::Invalid {
            var: "SPILLWAY_CLUSTER_ID",
            value: id,
            expected: "1 to 64 of a-z A-Z 0-9 . _ -".into(),
        });
    }
    Ok(id)
}

/// `SPILLWAY_TENANT_FROM`, checked.
fn tenant_from(env: &Env<'_>) -> Result<TenantFrom, ConfigError> {
    Ok(match env.string("SPILLWAY_TENANT_FROM") {
        None => TenantFrom::None,
        Some(v) if v == "api-key" => TenantFrom::ApiKey,
        Some(v) => match v
            .strip_prefix("header:")
            .and_then(|h| axum::http::HeaderName::try_from(h.trim()).ok())
        {
            Some(name) => TenantFrom::Header(name),
            None => {
                return Err(ConfigError::Invalid {
                    var: "SPILLWAY_TENANT_FROM",
                    value: v,
                    expected: "api-key, or header:<name> with a valid header name".into(),
                })
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_defaults_to_the_default_topic() {
        let env = [
            ("SPILLWAY_TOPIC", "events"),
            ("SPILLWAY_SQS_QUEUE_URL", "http://q"),
        ];
        let cfg = IngestConfig::from_env(&Env::new(&env)).unwrap();
        assert!(cfg.topics.allows("events"));
        assert!(!cfg.topics.allows("other"));
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.max_batch_records, 500);
        assert_eq!(cfg.cluster_id, "spillway");
        assert_eq!(cfg.v3_batch_max_entries, 10);
    }

    #[test]
    fn the_tenant_comes_from_an_api_key_or_a_named_header() {
        let with = |v: &str| {
            let env = [
                ("SPILLWAY_TOPIC", "events"),
                ("SPILLWAY_SQS_QUEUE_URL", "http://q"),
                ("SPILLWAY_TENANT_FROM", v),
            ];
            IngestConfig::from_env(&Env::new(&env)).map(|c| c.tenant_from)
        };
        assert_eq!(with("api-key"), Ok(TenantFrom::ApiKey));
        assert_eq!(
            with("header:X-Tenant"),
            Ok(TenantFrom::Header(axum::http::HeaderName::from_static(
                "x-tenant"
            )))
        );
        for bad in ["header:", "header:bad name", "tenant"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.starts_with("SPILLWAY_TENANT_FROM="), "{bad}: {err}");
        }
    }

    #[test]
    fn the_cluster_id_must_be_fit_for_a_path() {
        for bad in ["a/b", "x y", &"c".repeat(65)] {
            let env = [
                ("SPILLWAY_TOPIC", "events"),
                ("SPILLWAY_SQS_QUEUE_URL", "http://q"),
                ("SPILLWAY_CLUSTER_ID", bad),
            ];
            let err = IngestConfig::from_env(&Env::new(&env))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("SPILLWAY_CLUSTER_ID="), "{bad:?}: {err}");
        }
    }

    #[test]
    fn star_allows_any_valid_topic_and_lists_are_checked() {
        let env = [
            ("SPILLWAY_TOPICS", "*"),
            ("SPILLWAY_SQS_QUEUE_URL", "http://q"),
        ];
        let cfg = IngestConfig::from_env(&Env::new(&env)).unwrap();
        assert!(cfg.topics.allows("anything.goes"));
        assert!(!cfg.topics.allows("not valid"));
        let env = [
            ("SPILLWAY_TOPICS", "a,b c"),
            ("SPILLWAY_SQS_QUEUE_URL", "http://q"),
        ];
        let err = IngestConfig::from_env(&Env::new(&env))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SPILLWAY_TOPICS=a,b c is not valid"),
            "{err}"
        );
    }

    #[test]
    fn some_topic_must_be_acceptable() {
        let env = [("SPILLWAY_SQS_QUEUE_URL", "http://q")];
        let err = IngestConfig::from_env(&Env::new(&env))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SPILLWAY_TOPIC is not set"), "{err}");
    }
}
