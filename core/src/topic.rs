//! Kafka topic names.

use thiserror::Error;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_LEN: usize = 249;

/// Why a string is not a usable Kafka topic name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("`{shown}` is not a valid Kafka topic name: use 1 to {MAX_TOPIC_LEN} characters from a-z, A-Z, 0-9, '.', '_' and '-', and not `.` or `..`")]
pub struct InvalidTopic {
    /// The name, shortened for display.
    pub shown: String,
}

/// Checks `name` against Kafka's rules for topic names.
pub fn validate(name: &str) -> Result<(), InvalidTopic> {
    let legal = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(InvalidTopic {
            shown: name.chars().take(64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        for ok in ["orders", "a.b_c-D9", &"x".repeat(249)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "ä", "a/b", &"x".repeat(250)] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
