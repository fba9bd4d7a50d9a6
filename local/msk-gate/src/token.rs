//! Checking MSK IAM tokens as MSK does.
//!
//! A token is the base64url (unpadded) text of a SigV4 *presigned* URL:
//! `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=…&
//! X-Amz-Credential=<key>/<date>/<region>/kafka-cluster/aws4_request&X-Amz-Date=…&X-Amz-Expires=…&
//! X-Amz-SignedHeaders=host&X-Amz-Signature=…` (plus an unsigned `User-Agent`). The gate signs the same
//! request with the secret it knows for the key and compares signatures, then checks the action,
//! the region and service of the credential scope, and the expiry.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

/// The action a token must allow.
pub const CONNECT_ACTION: &str = "kafka-cluster:Connect";
/// The SigV4 service name of MSK IAM.
pub const SERVICE: &str = "kafka-cluster";
/// Clock skew tolerated for tokens dated in the future, as AWS allows.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// The longest validity MSK accepts for a token (`X-Amz-Expires`), and what the AWS signer asks for.
pub const MAX_EXPIRES_SECS: u64 = 900;

/// Why a token is refused. The client only ever sees "Access denied"; the reason is logged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not base64url, not UTF-8, or not a URL.
    #[error("not a presigned URL")]
    Garbage,
    /// A required query parameter is missing or malformed.
    #[error("missing or malformed {0}")]
    Malformed(&'static str),
    /// The token allows something other than connecting.
    #[error("wrong action {0}")]
    WrongAction(String),
    /// Signed for another region or service, or by an unknown key.
    #[error("wrong credential scope {0}")]
    WrongScope(String),
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
    /// Past its expiry (or dated too far in the future).
    #[error("expired")]
    Expired,
}

/// The credentials tokens must be signed with, and the region.
#[derive(Clone)]
pub struct Verifier {
    access_key: String,
    secret_key: String,
    region: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A token that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// When it expires.
    pub expires_at: SystemTime,
}

impl Verifier {
    /// Accepts tokens signed with `access_key`/`secret_key` for `region`.
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Self {
        Self {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: region.to_owned(),
        }
    }

    /// Checks `token` at time `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Accepted, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| TokenError::Garbage)?;
        let text = String::from_utf8(bytes).map_err(|_| TokenError::Garbage)?;
        let url = url::Url::parse(&text).map_err(|_| TokenError::Garbage)?;
        let host = url.host_str().ok_or(TokenError::Garbage)?.to_owned();
        // A parameter given twice is refused: which copy a signer, a verifier or MSK reads would
        // differ, and a token is either exactly one presigned URL or nothing.
        let mut names: Vec<_> = url.query_pairs().map(|(k, _)| k).collect();
        names.sort();
        if let Some([twice, _]) = names.windows(2).find(|w| w[0] == w[1]) {
            tracing::debug!(parameter = %twice, "a token names a parameter twice");
            return Err(TokenError::Malformed("a query parameter (given twice)"));
        }
        let param = |name: &'static str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .ok_or(TokenError::Malformed(name))
        };
        let action = param("Action")?;
        if action != CONNECT_ACTION {
            return Err(TokenError::WrongAction(action));
        }
        if param("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err(TokenError::Malformed("X-Amz-Algorithm"));
        }
        let credential = param("X-Amz-Credential")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let expected_host = format!("kafka.{}.amazonaws.com", self.region);
        if scope.len() != 5
            || scope[0] != self.access_key
            || scope[2] != self.region
            || scope[3] != SERVICE
            || scope[4] != "aws4_request"
            || host != expected_host
        {
            return Err(TokenError::WrongScope(format!(
                "{}/{} for {host}",
                scope.get(2).unwrap_or(&"?"),
                scope.get(3).unwrap_or(&"?")
            )));
        }
        let date = param("X-Amz-Date")?;
        let signed_at = parse_amz_date(&date).ok_or(TokenError::Malformed("X-Amz-Date"))?;
        let expires_in: u64 = param("X-Amz-Expires")?
            .parse()
            .ok()
            .filter(|secs| (1..=MAX_EXPIRES_SECS).contains(secs))
            .ok_or(TokenError::Malformed("X-Amz-Expires (1 to 900 seconds)"))?;
        let signature = param("X-Amz-Signature")?;
        let session_token = param("X-Amz-Security-Token").ok();

        let expected = self
            .signature(&host, signed_at, expires_in, session_token)
            .ok_or(TokenError::BadSignature)?;
        if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Err(TokenError::BadSignature);
        }
        let expires_at = signed_at
            .checked_add(Duration::from_secs(expires_in))
            .ok_or(TokenError::Malformed("X-Amz-Date"))?;
        let too_early = now
            .checked_add(MAX_SKEW)
            .is_none_or(|late| signed_at > late);
        if now > expires_at || too_early {
            return Err(TokenError::Expired);
        }
        Ok(Accepted { expires_at })
    }

    /// The signature a presigned connect URL for `host` made at `time` must carry.
    fn signature(
        &self,
        host: &str,
        time: SystemTime,
        expires_in: u64,
        session_token: Option<String>,
    ) -> Option<String> {
        let base = format!("https://{host}/?Action=kafka-cluster%3AConnect");
        let identity = Credentials::new(
            &self.access_key,
            &self.secret_key,
            session_token,
            None,
            "msk-gate",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires_in));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(settings)
            .build()
            .ok()?;
        let request =
            SignableRequest::new("GET", &base, std::iter::empty(), SignableBody::Bytes(&[]))
                .ok()?;
        let (_, signature) = sign(request, &params.into()).ok()?.into_parts();
        Some(signature)
    }
}

/// `20261127T045200Z` → a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = time::PrimitiveDateTime::parse(text, format)
        .ok()?
        .assume_utc();
    let secs = u64::try_from(parsed.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
