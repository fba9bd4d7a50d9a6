//! Admin clients (creating and growing topics), with the one workaround they need for MSK IAM.

use rdkafka::admin::AdminClient;

use super::context::SpillwayContext;
use super::{client_config, context_for, KafkaSetupError};
use crate::config::{KafkaAuth, KafkaConfig};

/// An admin client for `config`. With MSK IAM it holds a token from the start (see
/// [`set_token`]); it is meant for a few operations, well within the token's 15 minutes.
pub async fn client(config: &KafkaConfig) -> Result<AdminClient<SpillwayContext>, KafkaSetupError> {
    let (context, _refresher) = context_for(config).await?;
    let admin: AdminClient<SpillwayContext> =
        client_config(config)?
            .create_with_context(context)
            .map_err(|e| KafkaSetupError::Client(e.to_string()))?;
    if config.auth == KafkaAuth::Iam {
        set_token(&admin)?;
    }
    Ok(admin)
}

/// librdkafka asks for OAUTHBEARER tokens with an event on the client's main queue, which
/// rust-rdkafka's admin client never polls (its thread polls only the admin results queue), so an
/// MSK IAM admin client would wait for a token until it times out. This hands the client its token
/// directly, once: an admin client is for a few operations (the topic custom resource's lives for
/// seconds), the token for 15 minutes.
/// rust-rdkafka has no safe wrapper for `rd_kafka_oauthbearer_set_token`, hence the one FFI call.
#[allow(unsafe_code)]
fn set_token(admin: &AdminClient<SpillwayContext>) -> Result<(), KafkaSetupError> {
    use rdkafka::client::ClientContext as _;
    use std::ffi::{c_char, CStr, CString};
    let token = admin
        .inner()
        .context()
        .generate_oauth_token(None)
        .map_err(|e| KafkaSetupError::Token(format!("no MSK IAM token: {e}")))?;
    let value = CString::new(token.token).map_err(|e| KafkaSetupError::Token(e.to_string()))?;
    let principal =
        CString::new(token.principal_name).map_err(|e| KafkaSetupError::Token(e.to_string()))?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: the client handle is alive (owned by `admin`); the strings are NUL-terminated and
    // outlive the call, which copies them; no extensions are passed (null pointer, size 0); the
    // error buffer is writable for the size given.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            admin.inner().native_ptr(),
            value.as_ptr(),
            token.lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    // SAFETY: librdkafka wrote a NUL-terminated message into the buffer (zeroed beforehand).
    let text = unsafe { CStr::from_ptr(errstr.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Err(KafkaSetupError::Token(format!(
        "cannot give the admin client its MSK IAM token: {text}"
    )))
}
