use super::*;

#[test]
fn sqs_is_the_default_buffer_and_fifo_follows_the_queue_name() {
    let env = [(
        "SPILLWAY_SQS_QUEUE_URL",
        "http://127.0.0.1:4576/000000000000/q.fifo",
    )];
    assert_eq!(
        BufferConfig::from_env(&Env::new(&env)),
        Ok(BufferConfig::Sqs {
            queue_url: "http://127.0.0.1:4576/000000000000/q.fifo".into(),
            fifo: true,
            max_message_bytes: 262_144,
        })
    );
}

#[test]
fn errors_name_the_variable_and_what_it_accepts() {
    let env = [("SPILLWAY_BUFFER", "kafka")];
    assert_eq!(
        BufferConfig::from_env(&Env::new(&env))
            .unwrap_err()
            .to_string(),
        "SPILLWAY_BUFFER=kafka is not valid; expected one of sqs, kinesis"
    );
    let env = [("SPILLWAY_BUFFER", "Kinesis")];
    assert_eq!(
        BufferConfig::from_env(&Env::new(&env)).unwrap_err().to_string(),
        "SPILLWAY_KINESIS_STREAM is not set; SPILLWAY_BUFFER=kinesis needs the stream's name or ARN"
    );
    let env = [
        ("SPILLWAY_SQS_QUEUE_URL", "u"),
        ("SPILLWAY_SQS_MAX_MESSAGE_BYTES", "2MiB"),
    ];
    assert_eq!(
        BufferConfig::from_env(&Env::new(&env)).unwrap_err().to_string(),
        "SPILLWAY_SQS_MAX_MESSAGE_BYTES=2MiB is not valid; expected a whole number from 1024 to 1048576"
    );
}

#[test]
fn kafka_defaults_suit_msk_serverless() {
    let env = [(
        "SPILLWAY_KAFKA_BOOTSTRAP",
        "b-1.example:9098,b-2.example:9098",
    )];
    let kafka = KafkaConfig::from_env(&Env::new(&env)).unwrap();
    assert_eq!(kafka.auth, KafkaAuth::Iam);
    assert_eq!(kafka.compression, Compression::Lz4);
    assert_eq!(kafka.message_max_bytes, 8 * 1024 * 1024);
}

#[test]
fn bootstrap_must_be_host_port_pairs() {
    for bad in ["broker", "broker:", ":9092", "a:9092,b", "a:99999"] {
        let env = [("SPILLWAY_KAFKA_BOOTSTRAP", bad)];
        let err = KafkaConfig::from_env(&Env::new(&env)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "SPILLWAY_KAFKA_BOOTSTRAP",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    let env: [(&str, &str); 0] = [];
    assert_eq!(
        KafkaConfig::from_env(&Env::new(&env))
            .unwrap_err()
            .to_string(),
        "SPILLWAY_KAFKA_BOOTSTRAP is not set; set it to the brokers' host:port list"
    );
}

#[test]
fn scram_needs_both_credentials_and_never_echoes_the_password() {
    let env = [
        ("SPILLWAY_KAFKA_BOOTSTRAP", "b:9096"),
        ("SPILLWAY_KAFKA_AUTH", "scram"),
        ("SPILLWAY_KAFKA_SCRAM_USERNAME", "alice"),
    ];
    assert_eq!(
        KafkaConfig::from_env(&Env::new(&env))
            .unwrap_err()
            .to_string(),
        "SPILLWAY_KAFKA_SCRAM_PASSWORD is not set; SPILLWAY_KAFKA_AUTH=scram needs it"
    );
    let env = [
        ("SPILLWAY_KAFKA_BOOTSTRAP", "b:9096"),
        ("SPILLWAY_KAFKA_AUTH", "scram"),
        ("SPILLWAY_KAFKA_SCRAM_USERNAME", "alice"),
        ("SPILLWAY_KAFKA_SCRAM_PASSWORD", " s3cret "),
    ];
    let kafka = KafkaConfig::from_env(&Env::new(&env)).unwrap();
    assert_eq!(
        kafka.auth,
        KafkaAuth::Scram {
            username: "alice".into(),
            password: " s3cret ".into(),
        },
        "passwords are taken verbatim, spaces included"
    );
}

#[test]
fn one_setting_names_the_buffer_and_its_old_name_still_works_alone_for_the_drain() {
    let ingest = |env: &[(&str, &str); 1]| buffer_kind(&Env::new(env));
    assert_eq!(
        ingest(&[("SPILLWAY_SOURCE", "kinesis")]),
        Ok(crate::limits::BufferKind::Sqs),
        "ingest-api never read the drain's old name"
    );
    let kind = |env: &[(&str, &str); 2]| drain_buffer_kind(&Env::new(env));
    assert_eq!(
        kind(&[("SPILLWAY_BUFFER", "kinesis"), ("X", "")]),
        Ok(crate::limits::BufferKind::Kinesis)
    );
    assert_eq!(
        kind(&[("SPILLWAY_SOURCE", "kinesis"), ("X", "")]),
        Ok(crate::limits::BufferKind::Kinesis),
        "a drain whose infrastructure still sets the old name"
    );
    assert_eq!(
        kind(&[("SPILLWAY_SOURCE", "sqs"), ("SPILLWAY_BUFFER", "sqs")]),
        Ok(crate::limits::BufferKind::Sqs)
    );
    let err = kind(&[("SPILLWAY_SOURCE", "s3"), ("SPILLWAY_BUFFER", "sqs")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SPILLWAY_SOURCE=s3 is not valid; expected one of sqs, kinesis",
        "a bad old name stops the drain at start (rule 11), even beside a good new one"
    );
    let err = kind(&[("SPILLWAY_SOURCE", "sqs"), ("SPILLWAY_BUFFER", "kinesis")]).unwrap_err();
    assert!(
        err.to_string().contains("SPILLWAY_SOURCE is the old name"),
        "{err}"
    );
}
