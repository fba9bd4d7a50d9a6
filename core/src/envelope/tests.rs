use proptest::prelude::*;

use super::*;

fn sample() -> Envelope {
    Envelope {
        id: "0193a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into(),
        topic: "orders".into(),
        key: Some(b"customer-42".to_vec()),
        partition: Some(3),
        value: br#"{"total":12}"#.to_vec(),
        headers: vec![
            Header::new("source", "web"),
            Header::new("sig", vec![0u8, 1, 2, 0xFF]),
        ],
        received_at_ms: 1_764_211_200_123,
        idempotency_key: Some("b7c1".into()),
        timestamp_ms: None,
        traceparent: None,
        tracestate: None,
        value_claim: None,
    }
}

/// Issue 18 item 3: a value in S3 travels as `{"claim": {…}}` in place of the value, and only
/// there; a claim this build cannot read is malformed, never an empty value.
#[test]
fn a_claimed_value_travels_as_its_claim_check() {
    let claim = crate::claim::Claim::new("bucket", "claims/0193", b"the large value");
    let env = sample().claimed(claim.clone());
    assert!(env.value.is_empty());
    let body = env.encode();
    assert!(
        body.ends_with(&format!(r#""value":{{"claim":{}}}}}"#, claim.encode())),
        "{body}"
    );
    assert_eq!(body.len(), env.encoded_len());
    assert_eq!(
        decode(body.as_bytes(), RawMode::Reject),
        Ok(Decoded::Envelope(env))
    );
    for bad in [
        body.replace(r#""spillwayClaim":1"#, r#""spillwayClaim":2"#),
        body.replace(r#""bucket":"bucket""#, r#""bucket":"""#),
        body.replace(
            r#""key":"customer-42""#,
            &format!(r#""key":{{"claim":{}}}"#, claim.encode()),
        ),
        body.replace(r#"{"claim":"#, r#"{"claims":"#),
    ] {
        assert!(
            matches!(
                decode(bad.as_bytes(), RawMode::Reject),
                Err(DecodeError::Malformed(_))
            ),
            "{bad}"
        );
    }
}

/// SQS accepts #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF; the
/// envelope also keeps to the Basic Multilingual Plane (see the module docs).
fn sqs_allowed(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
}

#[test]
fn text_payloads_are_written_verbatim_and_binary_ones_as_base64() {
    let body = sample().encode();
    assert_eq!(
        body,
        r#"{"spillway":1,"id":"0193a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d","topic":"orders","key":"customer-42","partition":3,"received_at_ms":1764211200123,"idempotency_key":"b7c1","headers":[["source","web"],["sig",{"b64":"AAEC/w=="}]],"value":"{\"total\":12}"}"#
    );
    assert_eq!(
        decode(body.as_bytes(), RawMode::Reject),
        Ok(Decoded::Envelope(sample()))
    );
}

#[test]
fn optional_fields_are_omitted_and_read_back_as_absent() {
    let mut env = Envelope::new("t", vec![0xC3, 0x28]);
    env.id = "x".into();
    env.received_at_ms = 5;
    assert_eq!(
        env.encode(),
        r#"{"spillway":1,"id":"x","topic":"t","received_at_ms":5,"value":{"b64":"wyg="}}"#
    );
    assert_eq!(
        decode(env.encode().as_bytes(), RawMode::Reject),
        Ok(Decoded::Envelope(env))
    );
}

#[test]
fn new_envelopes_get_time_ordered_unique_ids() {
    let a = Envelope::new("t", "1");
    let b = Envelope::new("t", "2");
    assert_ne!(a.id, b.id);
    assert!(a.id < b.id, "UUIDv7 strings sort by creation time");
    assert_eq!(
        uuid::Uuid::parse_str(&a.id).map(|u| u.get_version_num()),
        Ok(7)
    );
    assert!(a.received_at_ms > 1_700_000_000_000);
}

#[test]
fn characters_sqs_rejects_are_escaped() {
    let env = Envelope {
        headers: vec![Header::new("n\u{FFFF}", "v\u{FFFE}")],
        value: "a\u{FFFE}b\u{FFFF}c\r\n\u{0}\u{1F}\u{10FFFF}".into(),
        ..sample()
    };
    let body = env.encode();
    assert!(
        body.contains(r"a\ufffeb\uffffc\r\n\u0000\u001f\udbff\udfff"),
        "{body}"
    );
    assert!(
        body.is_ascii(),
        "everything outside the BMP is escaped: {body}"
    );
    assert!(body.chars().all(sqs_allowed));
    assert_eq!(body.len(), env.encoded_len());
    assert_eq!(
        decode(body.as_bytes(), RawMode::Reject),
        Ok(Decoded::Envelope(env))
    );
}

#[test]
fn plain_messages_pass_through_only_in_raw_mode() {
    let body = br#"{"payload":"Hello World"}"#;
    assert_eq!(decode(body, RawMode::Accept), Ok(Decoded::Raw(&body[..])));
    let err = decode(body, RawMode::Reject).unwrap_err();
    assert_eq!(err, DecodeError::NotAnEnvelope);
    assert!(err.to_string().contains("SPILLWAY_RAW_MODE=on"));
    assert_eq!(decode(b"", RawMode::Accept), Ok(Decoded::Raw(&b""[..])));
}

#[test]
fn a_damaged_envelope_is_never_forwarded_as_raw() {
    let body = sample().encode();
    let truncated = &body.as_bytes()[..body.len() - 5];
    assert!(matches!(
        decode(truncated, RawMode::Accept),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn unknown_versions_are_named() {
    let body = sample().encode().replacen(":1,", ":2,", 1);
    assert_eq!(
        decode(body.as_bytes(), RawMode::Accept),
        Err(DecodeError::UnsupportedVersion { found: "2".into() })
    );
    assert_eq!(
        decode(br#"{"spillway":"one"}"#, RawMode::Accept)
            .unwrap_err()
            .to_string(),
        "envelope version (a string) is not supported; this build reads version 1"
    );
    assert!(matches!(
        decode(br#"{"spillway":10,"x":1}"#, RawMode::Reject),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
}

#[test]
fn parse_errors_name_the_problem_without_quoting_values() {
    let missing = br#"{"spillway":1,"id":"a","received_at_ms":1,"value":"v"}"#;
    assert_eq!(
        decode(missing, RawMode::Reject).unwrap_err().to_string(),
        "malformed envelope: missing field `topic` at line 1 column 54"
    );
    let wrong_type =
        br#"{"spillway":1,"id":"a","topic":"t","received_at_ms":"secret-value","value":"v"}"#;
    let text = decode(wrong_type, RawMode::Reject).unwrap_err().to_string();
    assert!(!text.contains("secret-value"), "{text}");
    assert!(text.contains("wrong type"), "{text}");
    let bad_b64 = br#"{"spillway":1,"id":"a","topic":"t","received_at_ms":1,"value":{"b64":"!!"}}"#;
    assert!(decode(bad_b64, RawMode::Reject)
        .unwrap_err()
        .to_string()
        .contains("invalid base64"));
    let extra_key =
        br#"{"spillway":1,"id":"a","topic":"t","received_at_ms":1,"value":{"b64":"","x":1}}"#;
    assert!(decode(extra_key, RawMode::Reject)
        .unwrap_err()
        .to_string()
        .contains("exactly"));
    let empty_topic = br#"{"spillway":1,"id":"a","topic":"","received_at_ms":1,"value":""}"#;
    assert_eq!(
        decode(empty_topic, RawMode::Reject),
        Err(DecodeError::Malformed("`topic` is empty".into()))
    );
}

#[test]
fn unknown_fields_and_whitespace_are_accepted_within_a_version() {
    // What an API Gateway mapping template may write: spaced out, with fields of its own.
    let body = br#"{"spillway":1, "id": "req-1", "topic": "t", "received_at_ms": 7,
        "source_ip": "203.0.113.9", "value": {"b64": "SGk="}}"#;
    let Ok(Decoded::Envelope(env)) = decode(body, RawMode::Reject) else {
        panic!("expected an envelope");
    };
    assert_eq!(env.value, b"Hi");
    assert_eq!(env.id, "req-1");
}

fn any_envelope() -> impl Strategy<Value = Envelope> {
    let bytes = || {
        prop_oneof![
            any::<Vec<u8>>(),
            any::<String>().prop_map(String::into_bytes)
        ]
    };
    (
        any::<String>(),
        any::<String>(),
        proptest::option::of(bytes()),
        bytes(),
        proptest::collection::vec((any::<String>(), bytes()), 0..4),
        any::<u64>(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<i32>()),
        (
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            proptest::option::of((any::<String>(), any::<String>(), any::<u64>())),
        ),
    )
        .prop_map(
            |(
                id,
                topic,
                key,
                value,
                headers,
                received_at_ms,
                idempotency_key,
                partition,
                (timestamp_ms, traceparent, tracestate, claim),
            )| {
                let value_claim = claim.map(|(bucket, key, bytes)| crate::claim::Claim {
                    spillway_claim: 1,
                    bucket: format!("b{bucket}"),
                    key: format!("k{key}"),
                    bytes,
                    sha256: "0".repeat(64),
                });
                let value = if value_claim.is_some() {
                    Vec::new()
                } else {
                    value
                };
                Envelope {
                    id: format!("i{id}"),
                    topic: format!("t{topic}"),
                    key,
                    partition,
                    value,
                    headers: headers
                        .into_iter()
                        .map(|(n, v)| Header::new(n, v))
                        .collect(),
                    received_at_ms,
                    idempotency_key,
                    timestamp_ms,
                    traceparent,
                    tracestate,
                    value_claim,
                }
            },
        )
}

/// Cases per property: `SPILLWAY_FUZZ_CASES` when set (the long run in the README), else 2,000.
/// (`spillway_tests::fuzz_cases` for the other crates; core cannot depend on it.)
fn fuzz_cases() -> u32 {
    std::env::var("SPILLWAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn any_envelope_round_trips(env in any_envelope()) {
        let body = env.encode();
        prop_assert_eq!(decode(body.as_bytes(), RawMode::Reject), Ok(Decoded::Envelope(env.clone())));
        prop_assert_eq!(decode(body.as_bytes(), RawMode::Accept), Ok(Decoded::Envelope(env)));
    }

    #[test]
    fn encoded_len_is_exact_and_the_body_is_sqs_safe(env in any_envelope()) {
        let body = env.encode();
        prop_assert_eq!(body.len(), env.encoded_len());
        prop_assert!(body.chars().all(sqs_allowed));
        prop_assert!(body.as_bytes().starts_with(PREFIX));
    }

    #[test]
    fn fuzz_decode_never_panics_on_arbitrary_bytes(body in any::<Vec<u8>>()) {
        let _ = decode(&body, RawMode::Accept);
        let _ = decode(&body, RawMode::Reject);
    }

    #[test]
    fn fuzz_decode_never_panics_on_damaged_envelopes(
        env in any_envelope(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut body = env.encode().into_bytes();
        for (at, byte) in flips {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let _ = decode(&body, RawMode::Accept);
    }

    #[test]
    fn raw_messages_come_back_unchanged(body in any::<Vec<u8>>()) {
        prop_assume!(!body.starts_with(PREFIX));
        prop_assert_eq!(decode(&body, RawMode::Accept), Ok(Decoded::Raw(&body[..])));
    }
}

/// Issue 14 item 4: another producer's `json.dumps` of a valid envelope (spaces after `:` and `,`,
/// members in another order) is an envelope, not "not a spillway envelope".
#[test]
fn any_valid_json_form_of_an_envelope_is_read() {
    let spaced =
        br#"{"spillway": 1, "id": "py-1", "topic": "orders", "received_at_ms": 7, "value": "hi"}"#;
    let reordered = br#"{"id": "py-2", "value": {"b64": "SGk="}, "topic": "orders", "received_at_ms": 7, "spillway": 1}"#;
    let indented = b"\n  {\n  \"spillway\" : 1,\n  \"id\": \"py-3\",\n  \"topic\": \"orders\",\n  \"received_at_ms\": 7,\n  \"value\": \"hi\"\n}\n";
    for (body, id) in [
        (&spaced[..], "py-1"),
        (&reordered[..], "py-2"),
        (&indented[..], "py-3"),
    ] {
        for raw in [RawMode::Reject, RawMode::Accept] {
            match decode(body, raw) {
                Ok(Decoded::Envelope(env)) => assert_eq!(env.id, id),
                other => panic!("{id} ({raw:?}): {other:?}"),
            }
        }
    }
    // A spaced-out envelope of an unknown version is refused as such, not forwarded.
    assert!(matches!(
        decode(br#"{"spillway": 2, "id": "x"}"#, RawMode::Accept),
        Err(DecodeError::UnsupportedVersion { found }) if found == "2"
    ));
}

/// Still never forward a damaged envelope as raw, whatever its whitespace; other JSON stays raw.
#[test]
fn a_damaged_spaced_envelope_is_poison_and_plain_json_stays_raw() {
    for damaged in [
        &br#"{ "spillway": 1, "id": "py-1", "topic": "orders", "value": "#[..],
        br#"{"spillway" : 1, "id": "py-1", "topic": "orders"}"#, // missing fields
        br#"  {"spillway": null}"#,
    ] {
        assert!(
            matches!(
                decode(damaged, RawMode::Accept),
                Err(DecodeError::Malformed(_) | DecodeError::UnsupportedVersion { .. })
            ),
            "{}",
            String::from_utf8_lossy(damaged)
        );
    }
    let plain = br#"{"payload": "Hello World", "spillway_like": 1}"#;
    assert_eq!(decode(plain, RawMode::Accept), Ok(Decoded::Raw(&plain[..])));
    let broken_plain = br#"{"payload": "#;
    assert_eq!(
        decode(broken_plain, RawMode::Accept),
        Ok(Decoded::Raw(&broken_plain[..]))
    );
}
