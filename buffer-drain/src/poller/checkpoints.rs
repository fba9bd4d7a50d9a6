//! Where the drain as a service keeps each Kinesis shard's checkpoint (`SPILLWAY_KINESIS_CHECKPOINTS`),
//! so that a restarted or replaced process reads on after the last batch it reported instead of
//! from the trim horizon (every record of the stream's retention again): a directory on a disk
//! that outlives the process (a VM, a Kubernetes volume), or `s3://bucket/prefix` (ECS, any
//! replica with a role that may read and write there). Unset, checkpoints live in memory, as the
//! local stack's poller has always kept them.
//!
//! One process reads a stream at a time: the checkpoints are its own, not leases shared between
//! replicas (run one replica per stream, or the Lambda mapping, which keeps them itself).

use std::path::PathBuf;

use spillway_core::config::ConfigError;

/// A shard's checkpoint: where its next batch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing read yet: the oldest record.
    TrimHorizon,
    /// At this sequence number (a record the drain reported failed comes again).
    At(String),
    /// After this sequence number (everything up to it has left the buffer).
    After(String),
}

impl Checkpoint {
    fn encode(&self) -> String {
        match self {
            Checkpoint::TrimHorizon => "trim-horizon".into(),
            Checkpoint::At(seq) => format!("at {seq}"),
            Checkpoint::After(seq) => format!("after {seq}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let text = text.trim();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match text.split_once(' ') {
            Some(("at", seq)) if digits(seq) => Some(Checkpoint::At(seq.to_owned())),
            Some(("after", seq)) if digits(seq) => Some(Checkpoint::After(seq.to_owned())),
            None if text == "trim-horizon" => Some(Checkpoint::TrimHorizon),
            _ => None,
        }
    }
}

/// `SPILLWAY_KINESIS_CHECKPOINTS`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointsAt {
    /// In memory: lost with the process.
    Memory,
    /// One file per stream and shard under this directory.
    Dir(PathBuf),
    /// One object per stream and shard under `prefix` in `bucket`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (empty, or ending in `/`).
        prefix: String,
    },
}

impl CheckpointsAt {
    /// Reads `value` (`None`: in memory): `s3://bucket[/prefix]` or an absolute directory.
    pub fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Self::Memory);
        };
        let invalid = || ConfigError::Invalid {
            var: "SPILLWAY_KINESIS_CHECKPOINTS",
            value: value.to_owned(),
            expected: "s3://<bucket>[/<prefix>] or an absolute directory".into(),
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid());
            }
            let prefix = prefix.trim_matches('/');
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                },
            });
        }
        let dir = PathBuf::from(value);
        if !dir.is_absolute() {
            return Err(invalid());
        }
        Ok(Self::Dir(dir))
    }
}

/// The store the readers load and save checkpoints with.
#[derive(Debug, Clone)]
pub enum CheckpointStore {
    /// Nothing kept.
    Memory,
    /// Files under a directory.
    Dir(PathBuf),
    /// Objects in S3.
    S3 {
        /// The client.
        client: aws_sdk_s3::Client,
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

/// A checkpoint could not be read or written; the message names the place, never a record.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {place}: {reason}")]
pub struct CheckpointError {
    place: String,
    reason: String,
}

/// A name for `stream`/`shard` that is safe as a file name and an S3 key (no component of only
/// dots, no separators).
fn name(stream: &str, shard: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("stream={}/shard={}", clean(stream), clean(shard))
}

impl CheckpointStore {
    /// The store `at` names, with S3 clients made from `sdk`.
    pub fn new(at: &CheckpointsAt, sdk: &aws_config::SdkConfig) -> Self {
        match at {
            CheckpointsAt::Memory => Self::Memory,
            CheckpointsAt::Dir(dir) => Self::Dir(dir.clone()),
            CheckpointsAt::S3 { bucket, prefix } => Self::S3 {
                client: spillway_core::claim::ClaimStore::client(sdk),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            },
        }
    }

    /// The checkpoint saved for `shard` of `stream`, or `None` (never saved: start at the trim
    /// horizon). An unreadable store is an error, not a fresh start.
    pub async fn load(
        &self,
        stream: &str,
        shard: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let key = name(stream, shard);
        let text = match self {
            Self::Memory => return Ok(None),
            Self::Dir(dir) => {
                let path = dir.join(&key);
                match tokio::fs::read_to_string(&path).await {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => {
                        return Err(CheckpointError {
                            place: path.display().to_string(),
                            reason: e.to_string(),
                        })
                    }
                }
            }
            Self::S3 {
                client,
                bucket,
                prefix,
            } => {
                let place = format!("s3://{bucket}/{prefix}{key}");
                match client
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{key}"))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let bytes = out.body.collect().await.map_err(|e| CheckpointError {
                            place: place.clone(),
                            reason: e.to_string(),
                        })?;
                        String::from_utf8_lossy(&bytes.into_bytes()).into_owned()
                    }
                    Err(e)
                        if e.as_service_error().is_some_and(
                            aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                        ) =>
                    {
                        return Ok(None)
                    }
                    Err(e) => {
                        return Err(CheckpointError {
                            place,
                            reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                        })
                    }
                }
            }
        };
        Checkpoint::decode(&text)
            .map(Some)
            .ok_or_else(|| CheckpointError {
                place: key,
                reason: "not a checkpoint (expected `at <sequence number>` or `after <sequence number>`)"
                    .into(),
            })
    }

    /// Saves `checkpoint` for `shard` of `stream`: a file replaced whole (written aside and
    /// synced, renamed, the directory synced: a crash leaves the old checkpoint or the new one,
    /// never an empty file), or an object.
    pub async fn save(
        &self,
        stream: &str,
        shard: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let key = name(stream, shard);
        let text = checkpoint.encode();
        match self {
            Self::Memory => Ok(()),
            Self::Dir(dir) => {
                let path = dir.join(&key);
                let failed = |e: std::io::Error| CheckpointError {
                    place: path.display().to_string(),
                    reason: e.to_string(),
                };
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(failed)?;
                }
                let aside = path.with_extension("new");
                let (aside_, path_) = (aside.clone(), path.clone());
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write as _;
                    let mut file = std::fs::File::create(&aside_)?;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    std::fs::rename(&aside_, &path_)?;
                    if let Some(dir) = path_.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| failed(std::io::Error::other(e)))?
                .map_err(failed)
            }
            Self::S3 {
                client,
                bucket,
                prefix,
            } => client
                .put_object()
                .bucket(bucket)
                .key(format!("{prefix}{key}"))
                .body(text.into_bytes().into())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| CheckpointError {
                    place: format!("s3://{bucket}/{prefix}{key}"),
                    reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_a_bucket_or_an_absolute_directory() {
        assert_eq!(CheckpointsAt::parse(None).ok(), Some(CheckpointsAt::Memory));
        assert_eq!(
            CheckpointsAt::parse(Some(" ")).ok(),
            Some(CheckpointsAt::Memory)
        );
        assert_eq!(
            CheckpointsAt::parse(Some("s3://b/drains/one/")).ok(),
            Some(CheckpointsAt::S3 {
                bucket: "b".into(),
                prefix: "drains/one/".into()
            })
        );
        assert_eq!(
            CheckpointsAt::parse(Some("s3://b")).ok(),
            Some(CheckpointsAt::S3 {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            CheckpointsAt::parse(Some("/var/lib/spillway")).ok(),
            Some(CheckpointsAt::Dir("/var/lib/spillway".into()))
        );
        for bad in ["s3://", "s3:///prefix", "relative/dir"] {
            let err = CheckpointsAt::parse(Some(bad)).expect_err(bad).to_string();
            assert!(err.contains("SPILLWAY_KINESIS_CHECKPOINTS"), "{err}");
        }
    }

    #[test]
    fn checkpoints_read_back_as_written_and_anything_else_is_refused() {
        for c in [
            Checkpoint::TrimHorizon,
            Checkpoint::At("49590338271490256608559692538361571095921575989136588898".into()),
            Checkpoint::After("1".into()),
        ] {
            assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        }
        for bad in ["", "after", "after x1", "at -1", "before 1"] {
            assert_eq!(Checkpoint::decode(bad), None, "{bad}");
        }
        assert_eq!(
            name("s/../t", "shardId-000000000001"),
            "stream=s_.._t/shard=shardId-000000000001"
        );
        assert_eq!(name("..", ".."), "stream=../shard=..");
    }
}
