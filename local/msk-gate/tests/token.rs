//! Token checks. Every token here comes from the AWS signer (`aws-msk-iam-sasl-signer`), the one
//! MSK clients use — never from the verifier's own signing routine, which would make the tests
//! circular. Negative cases are the signer's token tampered with: expired, another action, another
//! region, a changed parameter, a parameter given twice, an expiry past MSK's 900 s, a session
//! token (what Lambda roles sign with) swapped, and garbage.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use msk_gate::token::{TokenError, Verifier};

const REGION: &str = "us-east-1";

fn verifier() -> Verifier {
    Verifier::new("AKIDTEST", "test-secret", REGION)
}

async fn signer_token_with(secret: &str, session_token: Option<&str>) -> String {
    let credentials = SharedCredentialsProvider::new(Credentials::new(
        "AKIDTEST",
        secret,
        session_token.map(str::to_owned),
        None,
        "test",
    ));
    aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
        aws_types::region::Region::new(REGION),
        credentials,
    )
    .await
    .expect("token")
    .0
}

async fn signer_token(secret: &str) -> String {
    signer_token_with(secret, None).await
}

/// The presigned URL inside a token.
fn url_of(token: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).expect("base64url")).expect("utf-8")
}

fn token_of(url: &str) -> String {
    URL_SAFE_NO_PAD.encode(url)
}

/// `url` with the value of query parameter `name` replaced by `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

fn param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map_or_else(|| panic!("{name} in {url}"), |(_, v)| v.into_owned())
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

/// Lambda functions sign with a role's temporary credentials: the token then carries
/// `X-Amz-Security-Token`, which is signed too.
#[tokio::test]
async fn a_session_token_signed_by_the_aws_signer_passes_and_a_swapped_one_is_refused() {
    let token = signer_token_with("test-secret", Some("FwoGZXIvYXdzEJr//session")).await;
    let url = url_of(&token);
    assert_eq!(
        param(&url, "X-Amz-Security-Token"),
        "FwoGZXIvYXdzEJr//session"
    );
    verifier()
        .verify(&token, SystemTime::now())
        .expect("a token with a session token");
    let swapped = with_param(&url, "X-Amz-Security-Token", "another-session");
    assert_eq!(
        verifier().verify(&token_of(&swapped), SystemTime::now()),
        Err(TokenError::BadSignature)
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

#[tokio::test]
async fn a_signer_token_is_refused_once_expired_and_valid_while_young() {
    let token = signer_token("test-secret").await;
    let now = SystemTime::now();
    assert!(verifier()
        .verify(&token, now + Duration::from_secs(60))
        .is_ok());
    assert_eq!(
        verifier().verify(&token, now + Duration::from_secs(20 * 60)),
        Err(TokenError::Expired)
    );
    // Dated too far in the future for the clock skew AWS allows.
    assert_eq!(
        verifier().verify(&token, now - Duration::from_secs(10 * 60)),
        Err(TokenError::Expired)
    );
}

#[tokio::test]
async fn tampered_signer_tokens_are_refused() {
    let url = url_of(&signer_token("test-secret").await);
    let now = SystemTime::now();
    let verify = |url: &str| verifier().verify(&token_of(url), now);

    assert_eq!(
        verify(&with_param(&url, "Action", "kafka-cluster:AlterCluster")),
        Err(TokenError::WrongAction("kafka-cluster:AlterCluster".into()))
    );
    let date = param(&url, "X-Amz-Date");
    let seconds = if date.ends_with("00Z") { "01Z" } else { "00Z" };
    let earlier = format!("{}{seconds}", &date[..date.len() - 3]);
    assert_eq!(
        verify(&with_param(&url, "X-Amz-Date", &earlier)),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        verify(&with_param(&url, "X-Amz-Expires", "899")),
        Err(TokenError::BadSignature)
    );
    assert!(matches!(
        verify(&url.replace("kafka.us-east-1", "kafka.eu-west-1")),
        Err(TokenError::WrongScope(_))
    ));
    let credential = param(&url, "X-Amz-Credential");
    assert!(matches!(
        verify(&with_param(
            &url,
            "X-Amz-Credential",
            &credential.replace("AKIDTEST", "AKIDOTHER")
        )),
        Err(TokenError::WrongScope(_))
    ));
    let mut signature = param(&url, "X-Amz-Signature");
    let last = if signature.ends_with('0') { "1" } else { "0" };
    signature.replace_range(signature.len() - 1.., last);
    assert_eq!(
        verify(&with_param(&url, "X-Amz-Signature", &signature)),
        Err(TokenError::BadSignature)
    );
}

/// Issue 14 item 12: an expiry past MSK's 900 s is refused (it used to overflow the clock and
/// panic the gate), and a parameter given twice is refused rather than one copy ignored.
#[tokio::test]
async fn huge_expiries_and_repeated_parameters_are_refused_without_a_panic() {
    let url = url_of(&signer_token("test-secret").await);
    let now = SystemTime::now();
    for expires in [
        "901",
        "9000",
        "18446744073709551615",
        "99999999999999999999",
        "0",
        "-1",
    ] {
        let verdict =
            verifier().verify(&token_of(&with_param(&url, "X-Amz-Expires", expires)), now);
        assert!(
            matches!(verdict, Err(TokenError::Malformed(_))),
            "X-Amz-Expires={expires}: {verdict:?}"
        );
    }
    for (name, value) in [
        ("Action", "kafka-cluster%3AConnect"),
        ("X-Amz-Expires", "900"),
        ("X-Amz-Signature", "00"),
    ] {
        let twice = format!("{url}&{name}={value}");
        assert!(
            matches!(
                verifier().verify(&token_of(&twice), now),
                Err(TokenError::Malformed(_))
            ),
            "{name} twice"
        );
    }
    let far_date = with_param(&url, "X-Amz-Date", "99991231T235959Z");
    assert!(verifier().verify(&token_of(&far_date), now).is_err());
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
