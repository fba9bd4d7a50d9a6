//! The drain on Lambda Managed Instances, where one execution environment serves several
//! invocations at once (`AWS_LAMBDA_MAX_CONCURRENCY`): the buffer-drain binary under a Lambda
//! Runtime API stand-in (`spillway_bench::runtime_api`; Lambda cannot run here) that hands out
//! concurrent invocations, producing with MSK IAM through an msk-gate of the test's own in front
//! of the local broker, so that the gate's counters are this drain's alone.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use spillway_bench::runtime_api::{RuntimeApi, Snapshot};
use spillway_core::envelope::Envelope;
use spillway_tests::fixtures::{sqs_event, PrivateGate};

/// The drain binary in a Lambda execution environment, killed when dropped.
struct Environment {
    child: Child,
    log: std::path::PathBuf,
}

impl Environment {
    /// Starts the drain against `rt`, serving `concurrency` invocations at once, producing through
    /// `gate`; waits until it polls for them (its init is done: producer made, IAM token signed).
    async fn start(rt: &RuntimeApi, gate: &PrivateGate, concurrency: usize) -> Self {
        let log = std::env::temp_dir().join(format!(
            "{}.log",
            spillway_tests::unique_name("managed-drain")
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_buffer-drain"))
            .env("AWS_LAMBDA_RUNTIME_API", rt.address())
            .env("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "drain")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST.PUBLISHED")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("SPILLWAY_DLQ_URL")
            .env_remove("SPILLWAY_DLQ_BUCKET")
            .env_remove("SPILLWAY_CLAIM_BUCKET")
            .env("SPILLWAY_BUFFER", "sqs")
            .env("SPILLWAY_KAFKA_BOOTSTRAP", gate.bootstrap())
            .env("SPILLWAY_KAFKA_AUTH", "iam")
            .env("SPILLWAY_KAFKA_CA_FILE", gate.ca_file())
            .env("SPILLWAY_DEADLINE_MARGIN", "2s")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start buffer-drain");
        let env = Self { child, log };
        let (ready, polling) = rt
            .wait_until(Duration::from_secs(30), |s| {
                s.polls_waiting >= concurrency || s.init_error.is_some()
            })
            .await;
        assert!(
            polling && ready.init_error.is_none(),
            "the drain did not poll for {concurrency} invocations: {ready:?}\nlog:\n{}",
            env.log()
        );
        env
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Queues `invocations` SQS events for `topic`: invocation `k` carries `k + 1` envelopes
/// (`inv{k}-ok{i}`) and `k` bodies that are no envelope (`inv{k}-bad{j}`), which the drain,
/// without a dead-letter queue, reports failed. Returns each invocation's failed ids and the
/// envelopes in all.
fn invoke(rt: &RuntimeApi, topic: &str, invocations: usize) -> (Vec<BTreeSet<String>>, u64) {
    invoke_with_timeouts(rt, topic, &vec![Duration::from_secs(60); invocations])
}

/// [`invoke`], invocation `k` with `timeouts[k]` to run.
fn invoke_with_timeouts(
    rt: &RuntimeApi,
    topic: &str,
    timeouts: &[Duration],
) -> (Vec<BTreeSet<String>>, u64) {
    let mut failing = Vec::new();
    let mut envelopes = 0;
    for (k, timeout) in timeouts.iter().enumerate() {
        let mut bodies: Vec<(String, String)> = (0..=k)
            .map(|i| {
                let mut env = Envelope::new(topic, format!("{k}-{i}"));
                env.key = Some(format!("inv{k}").into_bytes());
                (format!("inv{k}-ok{i}"), env.encode())
            })
            .collect();
        envelopes += k as u64 + 1;
        let bad: Vec<(String, String)> = (0..k)
            .map(|j| (format!("inv{k}-bad{j}"), format!("not an envelope {k}-{j}")))
            .collect();
        failing.push(bad.iter().map(|(id, _)| id.clone()).collect());
        bodies.extend(bad);
        let bodies: Vec<(&str, String)> = bodies
            .iter()
            .map(|(id, body)| (id.as_str(), body.clone()))
            .collect();
        let event = serde_json::to_string(&sqs_event(&bodies, None)).expect("event");
        rt.invoke(&format!("inv-{k}"), event, *timeout);
    }
    (failing, envelopes)
}

/// Waits for `n` answers; panics with the state and the log when they do not come.
async fn answers(rt: &RuntimeApi, n: usize, env: &Environment) -> Snapshot {
    let (done, all) = rt
        .wait_until(Duration::from_secs(60), |s| s.answers.len() >= n)
        .await;
    assert!(
        all,
        "{} of {n} invocations answered: {done:?}\nlog:\n{}",
        done.answers.len(),
        env.log()
    );
    done
}

/// The ids one invocation's answer reports failed.
fn reported_failed(done: &Snapshot, id: &str) -> BTreeSet<String> {
    let answer = &done.answers[id];
    assert!(answer.ok, "{id} failed: {}", answer.body);
    let response: SqsBatchResponse = serde_json::from_str(&answer.body).expect("a batch response");
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_environment_serves_concurrent_invocations_through_one_producer_each_with_its_own_report(
) {
    const CONCURRENCY: usize = 4;
    const INVOCATIONS: usize = 8;
    let gate_bin = spillway_tests::msk_gate_bin();
    let topic = spillway_tests::unique_name("managed");

    // What one environment serving one invocation at a time opens at the gate: its producer's
    // connections and authentications.
    let single = PrivateGate::start(&gate_bin, &[]);
    let rt = RuntimeApi::start().await;
    let env = Environment::start(&rt, &single, 1).await;
    let (failing, _) = invoke(&rt, &topic, 1);
    let done = answers(&rt, 1, &env).await;
    assert_eq!(reported_failed(&done, "inv-0"), failing[0]);
    let one_producer = (
        single.stat("connections_accepted"),
        single.stat("auth_accepted"),
    );
    drop(env);
    assert!(
        one_producer.0 >= 1 && one_producer.1 >= 1,
        "{one_producer:?}"
    );
    eprintln!("one producer: {one_producer:?} (connections, authentications)");

    // Every produce request waits 300 ms in the gate, so that invocations handed out together
    // are still producing together.
    let gate = PrivateGate::start(&gate_bin, &[]);
    gate.admin("PUT", "/chaos/latency?ms=300");
    let rt = RuntimeApi::start().await;
    let env = Environment::start(&rt, &gate, CONCURRENCY).await;
    let (failing, envelopes) = invoke(&rt, &topic, INVOCATIONS);
    let done = answers(&rt, INVOCATIONS, &env).await;

    assert_eq!(
        done.peak_in_flight,
        CONCURRENCY,
        "invocations served at once by one environment\nlog:\n{}",
        env.log()
    );
    assert!(
        done.protocol_errors.is_empty(),
        "{:?}",
        done.protocol_errors
    );
    // Each answer names exactly its own invocation's failures: no record of one is reported in
    // another, none is missing.
    for (k, expected) in failing.iter().enumerate() {
        assert_eq!(
            &reported_failed(&done, &format!("inv-{k}")),
            expected,
            "invocation {k}"
        );
    }
    // All of it through one producer: no more connections or authentications than one
    // invocation at a time made.
    assert_eq!(
        (
            gate.stat("connections_accepted"),
            gate.stat("auth_accepted")
        ),
        one_producer,
        "connections and authentications for {CONCURRENCY} concurrent invocations"
    );
    // And every envelope is in Kafka once (the first run's one too).
    let summary = common::consume(
        &spillway_tests::kafka_bootstrap(),
        &topic,
        envelopes + 1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(summary.unique_ids, envelopes + 1, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
}

/// On Lambda's default compute the drain purges its producer when an invocation ends with records
/// still unacknowledged (the frozen environment would send them later, out of order). Shared by
/// concurrent invocations, that purge would fail the others' records in flight: here it must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_past_its_deadline_does_not_fail_the_others_in_flight() {
    const CONCURRENCY: usize = 4;
    let topic = spillway_tests::unique_name("managed-deadline");
    let gate = PrivateGate::start(&spillway_tests::msk_gate_bin(), &[]);
    // Each produce request waits 1.5 s in the gate: the first invocation, with 2.5 s to run less
    // the drain's 2 s margin, reaches its deadline with its records in flight; the others have a
    // minute.
    gate.admin("PUT", "/chaos/latency?ms=1500");
    let rt = RuntimeApi::start().await;
    let env = Environment::start(&rt, &gate, CONCURRENCY).await;
    let mut timeouts = vec![Duration::from_secs(60); CONCURRENCY];
    timeouts[0] = Duration::from_millis(2500);
    let (failing, _) = invoke_with_timeouts(&rt, &topic, &timeouts);
    let done = answers(&rt, CONCURRENCY, &env).await;
    assert_eq!(done.peak_in_flight, CONCURRENCY);
    // The first fails whole, its one envelope undelivered at its deadline (it comes again from
    // the queue)…
    let first = &done.answers["inv-0"];
    assert!(
        !first.ok && first.body.contains("undelivered at the deadline"),
        "{first:?}\nlog:\n{}",
        env.log()
    );
    // …and the others only their own bad bodies: nothing of theirs was purged.
    for (k, expected) in failing.iter().enumerate().skip(1) {
        assert_eq!(
            &reported_failed(&done, &format!("inv-{k}")),
            expected,
            "invocation {k}\nlog:\n{}",
            env.log()
        );
    }
}
