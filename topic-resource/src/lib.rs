//! # topic-resource — the spillway topic as a CloudFormation custom resource
//!
//! The `onEvent` handler of a CDK `Provider`: it creates the topic on MSK over IAM (rdkafka admin
//! client, SASL OAUTHBEARER) and returns the cluster's IAM bootstrap string
//! (`GetBootstrapBrokers`), which the stack hands to the drain and the consumer.
//!
//! What it does per request, unlike the AWS sample's handler (whose Update falls through into its
//! Delete branch and deletes the topic):
//! * **Create**: creates the topic if it is missing; an existing topic with fewer partitions than
//!   asked gets more (Kafka cannot take partitions away, so never fewer).
//! * **Update**: the same as Create for the new properties. It never deletes anything: a renamed
//!   topic leaves the old one in place.
//! * **Delete**: deletes the topic only when `DeleteOnStackDelete` is `true`; otherwise the data
//!   outlives the stack.
//!
//! The physical id is stable (`spillway-topic/<logical id>`), so CloudFormation never replaces the
//! resource and never sends a clean-up Delete for an old id. The region comes from the
//! environment (`AWS_REGION`, set by Lambda).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use spillway_core::config::{Env, KafkaConfig, ProcessEnv, Source};
use spillway_core::kafka::context::SpillwayContext;

/// How long one admin operation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed; CloudFormation shows the text.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A property is missing or wrong.
    #[error("property {name}: {problem}")]
    Property {
        /// The property.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `GetBootstrapBrokers` failed or returned no IAM string.
    #[error("cannot get the cluster's IAM bootstrap brokers: {0}")]
    Bootstrap(String),
    /// The Kafka settings or client.
    #[error("{0}")]
    Kafka(String),
    /// The broker refused an admin operation.
    #[error("{operation} topic {topic}: {error}")]
    Admin {
        /// What was being done.
        operation: &'static str,
        /// The topic.
        topic: String,
        /// The broker's answer.
        error: String,
    },
}

/// The resource's properties. CloudFormation passes every value as a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Properties {
    /// The topic.
    pub topic: String,
    /// Partitions, at least 1.
    pub partitions: String,
    /// Replication factor; unset, the cluster's default (MSK Serverless decides it itself).
    #[serde(default)]
    pub replication_factor: Option<String>,
    /// The MSK cluster whose IAM bootstrap string to use.
    #[serde(default)]
    pub cluster_arn: Option<String>,
    /// Brokers to use instead of asking for the cluster's (an existing cluster reached otherwise,
    /// or a local broker).
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// `true`: delete the topic when the stack is deleted.
    #[serde(default)]
    pub delete_on_stack_delete: Option<String>,
    /// Topic configuration (e.g. `retention.ms`), applied at creation.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A provider framework `onEvent` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "RequestType")]
pub enum Request {
    /// The resource is being created.
    Create {
        /// The resource's logical id in the template.
        #[serde(rename = "LogicalResourceId")]
        logical_id: String,
        /// Its properties.
        #[serde(rename = "ResourceProperties")]
        properties: Properties,
    },
    /// Its properties changed.
    Update {
        /// The resource's logical id in the template.
        #[serde(rename = "LogicalResourceId")]
        logical_id: String,
        /// The new properties.
        #[serde(rename = "ResourceProperties")]
        properties: Properties,
    },
    /// The resource (the stack) is being deleted.
    Delete {
        /// The resource's logical id in the template.
        #[serde(rename = "LogicalResourceId")]
        logical_id: String,
        /// Its properties.
        #[serde(rename = "ResourceProperties")]
        properties: Properties,
    },
}

/// What the handler returns to the provider framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    /// Stable: `spillway-topic/<logical id>`.
    #[serde(rename = "PhysicalResourceId")]
    pub physical_id: String,
    /// `Fn::GetAtt` attributes.
    #[serde(rename = "Data")]
    pub data: Data,
}

/// The resource's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Data {
    /// The IAM bootstrap string.
    #[serde(rename = "BootstrapBrokers")]
    pub bootstrap: String,
    /// The topic.
    #[serde(rename = "Topic")]
    pub topic: String,
}

fn property(name: &'static str, problem: impl Into<String>) -> ResourceError {
    ResourceError::Property {
        name,
        problem: problem.into(),
    }
}

impl Properties {
    fn partitions(&self) -> Result<i32, ResourceError> {
        match self.partitions.trim().parse::<i32>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(property(
                "Partitions",
                format!("`{}` is not a number from 1 to 10000", self.partitions),
            )),
        }
    }

    fn replication(&self) -> Result<TopicReplication<'static>, ResourceError> {
        match self.replication_factor.as_deref().map(str::trim) {
            None | Some("" | "-1") => Ok(TopicReplication::Fixed(-1)),
            Some(n) => n
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=10).contains(n))
                .map(TopicReplication::Fixed)
                .ok_or_else(|| property("ReplicationFactor", format!("`{n}` is not 1 to 10"))),
        }
    }

    fn deletes_with_stack(&self) -> bool {
        self.delete_on_stack_delete
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn check(&self) -> Result<(), ResourceError> {
        spillway_core::topic::validate(&self.topic)
            .map_err(|e| property("Topic", e.to_string()))?;
        self.partitions()?;
        self.replication()?;
        if self.cluster_arn.is_none() && self.bootstrap.is_none() {
            return Err(property("ClusterArn", "give ClusterArn or Bootstrap"));
        }
        Ok(())
    }
}

/// The environment with the bootstrap the request resolved.
struct WithBootstrap(String);

impl Source for WithBootstrap {
    fn get(&self, name: &str) -> Option<String> {
        if name == "SPILLWAY_KAFKA_BOOTSTRAP" {
            Some(self.0.clone())
        } else {
            ProcessEnv.get(name)
        }
    }
}

/// The IAM bootstrap string: the `Bootstrap` property, else `GetBootstrapBrokers`.
async fn bootstrap(properties: &Properties) -> Result<String, ResourceError> {
    if let Some(b) = properties.bootstrap.as_deref().filter(|b| !b.is_empty()) {
        return Ok(b.to_owned());
    }
    let arn = properties
        .cluster_arn
        .as_deref()
        .ok_or_else(|| property("ClusterArn", "give ClusterArn or Bootstrap"))?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let out = aws_sdk_kafka::Client::new(&sdk)
        .get_bootstrap_brokers()
        .cluster_arn(arn)
        .send()
        .await
        .map_err(|e| {
            ResourceError::Bootstrap(aws_sdk_kafka::error::DisplayErrorContext(&e).to_string())
        })?;
    out.bootstrap_broker_string_sasl_iam
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ResourceError::Bootstrap(format!("{arn} has no IAM (SASL/IAM) listener")))
}

async fn admin(bootstrap: &str) -> Result<AdminClient<SpillwayContext>, ResourceError> {
    let source = WithBootstrap(bootstrap.to_owned());
    let config = KafkaConfig::from_env(&Env::new(&source))
        .map_err(|e| ResourceError::Kafka(e.to_string()))?;
    spillway_core::kafka::admin::client(&config)
        .await
        .map_err(|e| ResourceError::Kafka(e.to_string()))
}

/// The topic's partition count, or `None` when it does not exist.
fn partition_count(
    admin: &AdminClient<SpillwayContext>,
    topic: &str,
) -> Result<Option<i32>, ResourceError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|e| ResourceError::Admin {
            operation: "describe",
            topic: topic.to_owned(),
            error: e.to_string(),
        })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
}

/// Creates the topic, or raises its partition count to `properties.partitions`.
async fn ensure(
    admin: &AdminClient<SpillwayContext>,
    properties: &Properties,
) -> Result<(), ResourceError> {
    let topic = properties.topic.as_str();
    let wanted = properties.partitions()?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let admin_error = |operation, error: String| ResourceError::Admin {
        operation,
        topic: topic.to_owned(),
        error,
    };
    let mut new = NewTopic::new(topic, wanted, properties.replication()?);
    for (k, v) in &properties.config {
        new = new.set(k, v);
    }
    let created = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| admin_error("create", e.to_string()))?;
    match created.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic, partitions = wanted, "topic created");
            return Ok(());
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
        Some(Err((_, code))) => return Err(admin_error("create", code.to_string())),
        None => return Err(admin_error("create", "no answer".into())),
    }
    let have = partition_count(admin, topic)?.unwrap_or(wanted);
    if have >= wanted {
        if have > wanted {
            tracing::warn!(
                topic,
                have,
                wanted,
                "the topic has more partitions than asked; Kafka cannot remove partitions"
            );
        }
        return Ok(());
    }
    let more = NewPartitions::new(topic, usize::try_from(wanted).unwrap_or(1));
    let raised = admin
        .create_partitions([&more], &options)
        .await
        .map_err(|e| admin_error("add partitions to", e.to_string()))?;
    match raised.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic, from = have, to = wanted, "partitions added");
            Ok(())
        }
        Some(Err((_, code))) => Err(admin_error("add partitions to", code.to_string())),
        None => Err(admin_error("add partitions to", "no answer".into())),
    }
}

async fn delete(admin: &AdminClient<SpillwayContext>, topic: &str) -> Result<(), ResourceError> {
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let deleted =
        admin
            .delete_topics(&[topic], &options)
            .await
            .map_err(|e| ResourceError::Admin {
                operation: "delete",
                topic: topic.to_owned(),
                error: e.to_string(),
            })?;
    match deleted.into_iter().next() {
        Some(Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) | None => Ok(()),
        Some(Err((_, code))) => Err(ResourceError::Admin {
            operation: "delete",
            topic: topic.to_owned(),
            error: code.to_string(),
        }),
    }
}

/// Handles one request.
pub async fn handle(request: Request) -> Result<Response, ResourceError> {
    let (logical_id, properties, deleting) = match &request {
        Request::Create {
            logical_id,
            properties,
        }
        | Request::Update {
            logical_id,
            properties,
        } => (logical_id, properties, false),
        Request::Delete {
            logical_id,
            properties,
        } => (logical_id, properties, true),
    };
    let physical_id = format!("spillway-topic/{logical_id}");
    if deleting && !properties.deletes_with_stack() {
        tracing::info!(topic = %properties.topic, "stack delete: the topic is kept (DeleteOnStackDelete is not true)");
        return Ok(Response {
            physical_id,
            data: Data {
                bootstrap: String::new(),
                topic: properties.topic.clone(),
            },
        });
    }
    properties.check()?;
    let bootstrap = bootstrap(properties).await?;
    let admin = admin(&bootstrap).await?;
    if deleting {
        delete(&admin, &properties.topic).await?;
        tracing::info!(topic = %properties.topic, "topic deleted with the stack");
    } else {
        ensure(&admin, properties).await?;
    }
    Ok(Response {
        physical_id,
        data: Data {
            bootstrap,
            topic: properties.topic.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_the_provider_framework_sends_them() {
        let update: Request = serde_json::from_str(
            r#"{"RequestType":"Update","ServiceToken":"arn","ResponseURL":"https://x","StackId":"s","RequestId":"r","LogicalResourceId":"Topic","PhysicalResourceId":"spillway-topic/Topic","ResourceType":"Custom::SpillwayTopic","ResourceProperties":{"ServiceToken":"arn","Topic":"orders","Partitions":"6","ClusterArn":"arn:aws:kafka:us-east-1:1:cluster/c/u","DeleteOnStackDelete":"false"},"OldResourceProperties":{"Topic":"orders","Partitions":"3"}}"#,
        )
        .expect("an Update request");
        let Request::Update { properties, .. } = update else {
            panic!("not an update")
        };
        assert_eq!(properties.partitions().expect("6"), 6);
        assert!(!properties.deletes_with_stack());
        assert!(properties.check().is_ok());
    }

    #[test]
    fn bad_properties_name_the_property_and_the_limit() {
        let props = |partitions: &str, topic: &str| Properties {
            topic: topic.into(),
            partitions: partitions.into(),
            replication_factor: None,
            cluster_arn: Some("arn".into()),
            bootstrap: None,
            delete_on_stack_delete: None,
            config: BTreeMap::new(),
        };
        assert_eq!(
            props("0", "t").check().unwrap_err().to_string(),
            "property Partitions: `0` is not a number from 1 to 10000"
        );
        assert!(props("3", "bad topic")
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("property Topic:"));
        let no_cluster = Properties {
            cluster_arn: None,
            ..props("3", "t")
        };
        assert_eq!(
            no_cluster.check().unwrap_err().to_string(),
            "property ClusterArn: give ClusterArn or Bootstrap"
        );
    }
}
