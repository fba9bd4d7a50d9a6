//! The consumer's settings.

use spillway_core::config::{ConfigError, Env, KafkaConfig};

/// Everything msk-consumer reads from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// Brokers and authentication (see [`KafkaConfig`]), for local mode and `verify`; `None` in
    /// Lambda when unset, where the MSK event source mapping reads Kafka, not this process.
    pub kafka: Option<KafkaConfig>,
    /// `SPILLWAY_TOPIC`: the topic local mode and `verify` read.
    pub topic: Option<String>,
    /// `SPILLWAY_CONSUMER_GROUP`, default `spillway-consumer`.
    pub group: String,
    /// `SPILLWAY_LOG_BODY_SAMPLE`, default 0: the fraction of records whose body is logged. Bodies
    /// can hold personal data; keep it 0 outside test pipelines.
    pub body_sample: f64,
}

impl ConsumerConfig {
    /// Reads the settings. Kafka settings are needed only outside Lambda, so `in_lambda` relaxes them.
    pub fn from_env(env: &Env<'_>, in_lambda: bool) -> Result<Self, ConfigError> {
        let kafka = if in_lambda && env.string("SPILLWAY_KAFKA_BOOTSTRAP").is_none() {
            None
        } else {
            Some(KafkaConfig::from_env(env)?)
        };
        let body_sample = match env.string("SPILLWAY_LOG_BODY_SAMPLE") {
            None => 0.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or(ConfigError::Invalid {
                    var: "SPILLWAY_LOG_BODY_SAMPLE",
                    value: v,
                    expected: "a fraction from 0 to 1".into(),
                })?,
        };
        Ok(Self {
            kafka,
            topic: env.string("SPILLWAY_TOPIC"),
            group: env
                .string("SPILLWAY_CONSUMER_GROUP")
                .unwrap_or_else(|| "spillway-consumer".into()),
            body_sample,
        })
    }
}

/// A consumer-group member reading from the earliest offset, committing only when told to.
pub async fn consumer(
    kafka: &KafkaConfig,
    group: &str,
) -> Result<spillway_core::kafka::Consumer, spillway_core::kafka::KafkaSetupError> {
    spillway_core::kafka::consumer(
        kafka,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            // Brokers' minimum; it also shortens the first join on Tansu, whose coordinator waits
            // half the session timeout before forming the group.
            ("session.timeout.ms", "6000"),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_settings_are_optional_only_in_lambda() {
        let none: [(&str, &str); 0] = [];
        let lambda =
            ConsumerConfig::from_env(&Env::new(&none), true).expect("lambda needs no brokers");
        assert_eq!(lambda.kafka, None);
        assert_eq!(lambda.group, "spillway-consumer");
        let err = ConsumerConfig::from_env(&Env::new(&none), false)
            .expect_err("local mode needs brokers");
        assert!(err
            .to_string()
            .starts_with("SPILLWAY_KAFKA_BOOTSTRAP is not set"));
        let sampled = [
            ("SPILLWAY_KAFKA_BOOTSTRAP", "b:9092"),
            ("SPILLWAY_LOG_BODY_SAMPLE", "1.5"),
        ];
        assert!(
            ConsumerConfig::from_env(&Env::new(&sampled), false).is_err(),
            "a fraction from 0 to 1"
        );
    }
}
