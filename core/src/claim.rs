//! The claim check: data too large for the queue it must go through is kept in S3, and the queue
//! message carries a [`Claim`] naming the object instead. The drain uses it for dead letters that
//! do not fit a dead-letter queue; `spillway replay` reads them back.
//!
//! A claim names its bucket, key, length and SHA-256, so a reader refuses an object that was
//! changed or cut short rather than forwarding it. Every put is an object of its own (a random,
//! time-ordered key that carries nothing of the record): the same record dead-lettered twice is
//! two letters, and the reader that removes one letter's object must not take the other's. An
//! object whose letter was never written is left to the bucket's lifecycle.

use serde::{Deserialize, Serialize};

/// The claim's format version.
const VERSION: u32 = 1;

/// Where the data is, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claim {
    /// Format version (1).
    pub spillway_claim: u32,
    /// The S3 bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The data's length in bytes.
    pub bytes: u64,
    /// The data's SHA-256, lower-case hex.
    pub sha256: String,
}

impl Claim {
    /// The claim for `data` stored at `bucket`/`key`.
    pub fn new(bucket: &str, key: &str, data: &[u8]) -> Self {
        Self {
            spillway_claim: VERSION,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            bytes: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    /// The claim as the queue message carries it (compact JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a claim is always serialisable")
    }

    /// Reads a claim; the error names what is wrong, never the text itself.
    pub fn parse(text: &str) -> Result<Self, String> {
        let claim: Self = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a claim check (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        claim.validate()?;
        Ok(claim)
    }

    /// Whether this build reads the claim: its version, a bucket and a key.
    pub fn validate(&self) -> Result<(), String> {
        let claim = self;
        if claim.spillway_claim != VERSION {
            return Err(format!(
                "claim check version {} is not supported (this build reads {VERSION})",
                claim.spillway_claim
            ));
        }
        if claim.bucket.is_empty() || claim.key.is_empty() {
            return Err("the claim check names no bucket or no key".into());
        }
        Ok(())
    }

    /// Whether `data` is what the claim says it is.
    pub fn check(&self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 != self.bytes {
            return Err(format!(
                "s3://{}/{} holds {} bytes, the claim check says {}",
                self.bucket,
                self.key,
                data.len(),
                self.bytes
            ));
        }
        if sha256_hex(data) != self.sha256 {
            return Err(format!(
                "s3://{}/{} does not match the claim check's SHA-256 (changed since it was written)",
                self.bucket, self.key
            ));
        }
        Ok(())
    }
}

/// Where ingest-api keeps values too large for the buffer (issue 18), in the claim bucket.
pub const VALUE_PREFIX: &str = "claims/";

/// User metadata of a value's object once its record was delivered: the drain overwrites the
/// value with an empty object carrying it, so that a copy of the message delivered again (a
/// Kinesis batch resumed below it, a delete that failed) is known as delivered rather than
/// taken for a value that was lost; the bucket's lifecycle removes the marker.
pub const DELIVERED_METADATA: &str = "spillway-delivered";

/// A new object key under `prefix`.
pub fn new_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// The SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(feature = "claims")]
pub use store::{fetch, read, remove, ClaimError, ClaimStore, ReadError};

#[cfg(feature = "claims")]
mod store {
    use super::{new_key, Claim};

    /// Why a claim could not be written or read. The text names the object, never the data.
    #[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
    #[error("{0}")]
    pub struct ClaimError(pub String);

    /// Claims in one S3 bucket.
    #[derive(Debug, Clone)]
    pub struct ClaimStore {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    }

    impl ClaimStore {
        /// Claims in `bucket`, under keys starting with `prefix`.
        pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
            Self {
                client,
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            }
        }

        /// An S3 client for `sdk`: path-style addressing when an endpoint is set (local S3
        /// servers such as moto answer on one host name, not one per bucket).
        pub fn client(sdk: &aws_types::SdkConfig) -> aws_sdk_s3::Client {
            let config = aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(
                    sdk.endpoint_url().is_some()
                        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some(),
                )
                .build();
            aws_sdk_s3::Client::from_conf(config)
        }

        /// The bucket claims are written to.
        pub fn bucket(&self) -> &str {
            &self.bucket
        }

        /// Stores `data` as a new object; the claim once S3 confirmed it.
        pub async fn put(&self, data: &[u8]) -> Result<Claim, ClaimError> {
            let key = new_key(&self.prefix);
            let claim = Claim::new(&self.bucket, &key, data);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/octet-stream")
                .body(aws_sdk_s3::primitives::ByteStream::from(data.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    ClaimError(format!(
                        "cannot write s3://{}/{key}: {}",
                        self.bucket,
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    ))
                })?;
            Ok(claim)
        }
    }

    /// Why the data a claim names could not be read.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ReadError {
        /// No such object (removed, or expired by the bucket's lifecycle): for good.
        Gone(String),
        /// The object is not what the claim says (length or SHA-256): for good.
        Changed(String),
        /// S3 did not answer, or the read broke off: it may work later.
        Unavailable(String),
    }

    impl ReadError {
        /// The text: names the object, never the data.
        pub fn message(&self) -> &str {
            match self {
                ReadError::Gone(m) | ReadError::Changed(m) | ReadError::Unavailable(m) => m,
            }
        }
    }

    /// The data `claim` names, checked against its length and digest, read from the claim's own
    /// bucket; `None` when the object is the drain's delivered marker
    /// ([`super::DELIVERED_METADATA`]).
    pub async fn read(
        client: &aws_sdk_s3::Client,
        claim: &Claim,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let object = client
            .get_object()
            .bucket(&claim.bucket)
            .key(&claim.key)
            .send()
            .await
            .map_err(|e| {
                let gone = e
                    .as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key);
                let text = format!(
                    "cannot read s3://{}/{} ({}): {}",
                    claim.bucket,
                    claim.key,
                    if gone {
                        "removed, or expired by the bucket's lifecycle"
                    } else {
                        "S3 did not answer"
                    },
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                );
                if gone {
                    ReadError::Gone(text)
                } else {
                    ReadError::Unavailable(text)
                }
            })?;
        if object
            .metadata()
            .is_some_and(|m| m.contains_key(super::DELIVERED_METADATA))
        {
            return Ok(None);
        }
        let data = object
            .body
            .collect()
            .await
            .map_err(|e| {
                ReadError::Unavailable(format!(
                    "reading s3://{}/{} broke off: {e}",
                    claim.bucket, claim.key
                ))
            })?
            .into_bytes()
            .to_vec();
        claim.check(&data).map_err(ReadError::Changed)?;
        Ok(Some(data))
    }

    /// The data `claim` names ([`read`]); a delivered marker is an error here (dead letters are
    /// never marked).
    pub async fn fetch(client: &aws_sdk_s3::Client, claim: &Claim) -> Result<Vec<u8>, ClaimError> {
        match read(client, claim).await {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(ClaimError(format!(
                "s3://{}/{} holds only the delivered marker: its record was delivered",
                claim.bucket, claim.key
            ))),
            Err(e) => Err(ClaimError(e.message().to_owned())),
        }
    }

    /// Removes the object `claim` names, once nothing needs it. Removing one that is gone already
    /// succeeds.
    pub async fn remove(client: &aws_sdk_s3::Client, claim: &Claim) -> Result<(), ClaimError> {
        client
            .delete_object()
            .bucket(&claim.bucket)
            .key(&claim.key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                ClaimError(format!(
                    "cannot remove s3://{}/{}: {}",
                    claim.bucket,
                    claim.key,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_reads_back_as_written_and_checks_its_data() {
        let claim = Claim::new("b", &new_key("dead-letters/"), b"data");
        assert!(claim.key.starts_with("dead-letters/"));
        assert_ne!(new_key("p/"), new_key("p/"));
        assert_eq!(Claim::parse(&claim.encode()), Ok(claim.clone()));
        assert_eq!(claim.check(b"data"), Ok(()));
        assert!(claim.check(b"dat").unwrap_err().contains("3 bytes"));
        assert!(claim.check(b"datA").unwrap_err().contains("SHA-256"));
    }

    #[test]
    fn text_that_is_not_a_claim_is_refused_without_being_quoted() {
        for text in ["", "secret", "{\"spillwayClaim\":2,\"bucket\":\"b\",\"key\":\"k\",\"bytes\":1,\"sha256\":\"x\"}",
            "{\"spillwayClaim\":1,\"bucket\":\"\",\"key\":\"k\",\"bytes\":1,\"sha256\":\"x\"}",
            "{\"spillwayClaim\":1,\"bucket\":\"b\",\"key\":\"k\",\"bytes\":1,\"sha256\":\"x\",\"extra\":\"secret\"}"] {
            let e = Claim::parse(text).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
