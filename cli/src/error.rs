//! What stops a `spillway` command, and the exit code each means — mapped here and nowhere else:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | a failure while running: an AWS call, Kafka, the local stack, letters left in the DLQ |
//! | 2 | bad usage or configuration: nothing was done |
//! | 3 | `tune` refused a setting that breaks a quota (nothing was changed; `--force` applies it) |

use spillway_core::config::ConfigError;

/// A command's failure, worded for the operator: what could not be done and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting from the environment cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// An AWS call failed; `detail` is the SDK's full error context.
    #[error("cannot {action}: {detail}")]
    Aws {
        /// What was being done, with the resource's name.
        action: String,
        /// The SDK's error, with its causes.
        detail: String,
    },
    /// A resource is not what the command needs (no event source mapping, a setting out of range).
    #[error("{0}")]
    Unsuitable(String),
    /// The Kafka producer could not be made.
    #[error("cannot make the Kafka producer: {0}")]
    Kafka(String),
    /// The local stack did not start.
    #[error("{0}")]
    Stack(String),
    /// A component of `spillway dev` stopped.
    #[error("{0}")]
    Dev(String),
    /// `tune`: a check failed and `--force` was not given.
    #[error("refused: a check failed (see above); --force applies anyway")]
    Refused,
    /// `replay`: letters the target did not take; they stay in the dead-letter queue.
    #[error("{failed} messages were not accepted by the target and stay in the DLQ")]
    NotAllMoved {
        /// Letters left.
        failed: u64,
    },
}

impl Error {
    /// The process's exit code for this failure (see the table above).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            Error::Refused => 3,
            Error::Aws { .. }
            | Error::Unsuitable(_)
            | Error::Kafka(_)
            | Error::Stack(_)
            | Error::Dev(_)
            | Error::NotAllMoved { .. } => 1,
        }
    }
}

/// `map_err` for an AWS SDK call: `action` says what was being done ("read queue X").
pub fn aws<E: std::error::Error>(action: impl Into<String>) -> impl FnOnce(E) -> Error {
    move |e| Error::Aws {
        action: action.into(),
        detail: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_configuration_exit_2_a_refusal_3_the_rest_1() {
        let config = ConfigError::Missing {
            var: "SPILLWAY_KAFKA_BOOTSTRAP",
            why: "set it".into(),
        };
        assert_eq!(Error::from(config).exit_code(), 2);
        assert_eq!(Error::Usage("give --function".into()).exit_code(), 2);
        assert_eq!(Error::Refused.exit_code(), 3);
        let aws = aws::<std::io::Error>("read queue q")(std::io::Error::other("throttled"));
        assert_eq!(aws.exit_code(), 1);
        assert!(
            aws.to_string()
                .starts_with("cannot read queue q: throttled"),
            "{aws}"
        );
        assert_eq!(Error::NotAllMoved { failed: 2 }.exit_code(), 1);
    }
}
