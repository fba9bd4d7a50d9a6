//! Token checks: a token made by `aws-msk-iam-sasl-signer` passes; expired, wrongly signed,
//! wrong-action, tampered and garbage tokens are refused.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use msk_gate::token::{TokenError, Verifier};

const REGION: &str = "us-east-1";

fn verifier() -> Verifier {
    Verifier::new("AKIDTEST", "test-secret", REGION)
}

async fn signer_token(secret: &str) -> String {
    let credentials =
        SharedCredentialsProvider::new(Credentials::new("AKIDTEST", secret, None, None, "test"));
    aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
        aws_types::region::Region::new(REGION),
        credentials,
    )
    .await
    .expect("token")
    .0
}

/// A presigned URL built like the signer builds it, with a chosen action and signing time.
fn hand_token(action: &str, time: SystemTime) -> String {
    let mut url = url::Url::parse(&format!("https://kafka.{REGION}.amazonaws.com/")).expect("url");
    url.query_pairs_mut().append_pair("Action", action);
    let identity = Credentials::new("AKIDTEST", "test-secret", None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(900));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kafka-cluster")
        .time(time)
        .settings(settings)
        .build()
        .expect("params");
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .expect("request");
    let (instructions, _) = sign(request, &params.into()).expect("sign").into_parts();
    for (k, v) in instructions.params() {
        url.query_pairs_mut().append_pair(k, v);
    }
    URL_SAFE_NO_PAD.encode(url.as_str())
}

#[tokio::test]
async fn a_token_from_the_aws_signer_passes() {
    let token = signer_token("test-secret").await;
    let accepted = verifier()
        .verify(&token, SystemTime::now())
        .expect("valid token");
    let left = accepted
        .expires_at
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(
        left > Duration::from_secs(890) && left <= Duration::from_secs(900),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let token = signer_token("not-the-secret").await;
    assert_eq!(
        verifier().verify(&token, SystemTime::now()),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn an_expired_token_is_refused() {
    let signed = SystemTime::now() - Duration::from_secs(20 * 60);
    let token = hand_token("kafka-cluster:Connect", signed);
    assert_eq!(
        verifier().verify(&token, SystemTime::now()),
        Err(TokenError::Expired)
    );
    assert!(
        verifier()
            .verify(&token, signed + Duration::from_secs(60))
            .is_ok(),
        "valid while it was young"
    );
}

#[test]
fn a_token_for_another_action_is_refused() {
    let token = hand_token("kafka-cluster:AlterCluster", SystemTime::now());
    assert_eq!(
        verifier().verify(&token, SystemTime::now()),
        Err(TokenError::WrongAction("kafka-cluster:AlterCluster".into()))
    );
}

#[test]
fn a_tampered_token_is_refused() {
    let token = hand_token("kafka-cluster:Connect", SystemTime::now());
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(&token).expect("base64")).expect("utf-8");
    let tampered = url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000");
    assert_ne!(url, tampered);
    assert_eq!(
        verifier().verify(&URL_SAFE_NO_PAD.encode(tampered), SystemTime::now()),
        Err(TokenError::BadSignature)
    );
    let other_region = url.replace("kafka.us-east-1", "kafka.eu-west-1");
    assert!(matches!(
        verifier().verify(&URL_SAFE_NO_PAD.encode(other_region), SystemTime::now()),
        Err(TokenError::WrongScope(_))
    ));
}

#[test]
fn garbage_is_refused() {
    for garbage in [
        "",
        "!!!",
        "bm90IGEgdXJs",
        &URL_SAFE_NO_PAD
            .encode("https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect"),
    ] {
        assert!(
            verifier().verify(garbage, SystemTime::now()).is_err(),
            "{garbage}"
        );
    }
}
