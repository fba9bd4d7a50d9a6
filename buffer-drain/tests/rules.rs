//! Delivery rules 2–7 and 9 (docs/ARCHITECTURE.md) with real AWS event JSON (SQS standard, SQS
//! FIFO, Kinesis) against librdkafka's own mock cluster, which injects the broker faults; dead
//! letters go to a real queue on fauxqs (local stack).
//!
//! One file over 500 lines on purpose: every test here is one numbered rule, proven with the same
//! mock cluster and drain set-up; the file reads as the rules' checklist, in rule order.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use buffer_drain::dlq::{
    DeadLetters, ENCODING_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_ATTRIBUTE,
};
use buffer_drain::drain::Drain;
use buffer_drain::lambda::{handle_kinesis, handle_sqs};
use buffer_drain::message::Decoding;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaRespErr;
use spillway_core::envelope::{Envelope, RawMode};

const TOPIC: &str = "orders";

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(2).expect("mock cluster");
    cluster.create_topic(TOPIC, 2, 1).expect("topic");
    cluster
}

fn producer(
    bootstrap: &str,
) -> (
    spillway_core::kafka::Producer,
    std::sync::Arc<spillway_core::kafka::context::ClientHealth>,
) {
    producer_with(bootstrap, &[])
}

fn producer_with(
    bootstrap: &str,
    settings: &[(&str, &str)],
) -> (
    spillway_core::kafka::Producer,
    std::sync::Arc<spillway_core::kafka::context::ClientHealth>,
) {
    let config = spillway_tests::plaintext_kafka(bootstrap);
    let mut client = spillway_core::kafka::producer_config(&config).expect("settings");
    // Undeliverable records fail within 2 s here instead of 2 minutes.
    client.set("message.timeout.ms", "2000");
    for (k, v) in settings {
        client.set(*k, *v);
    }
    let context = spillway_core::kafka::context::SpillwayContext::plain();
    let health = context.health();
    (
        client.create_with_context(context).expect("producer"),
        health,
    )
}

fn drain(bootstrap: &str, dead_letters: Option<DeadLetters>, raw: RawMode) -> Drain {
    let decoding = Decoding {
        raw,
        raw_topic: Some(TOPIC.into()),
    };
    let (producer, health) = producer(bootstrap);
    Drain::new(producer, health, dead_letters, decoding)
}

/// A drain that replaces an unusable producer with a new one of the same `settings`, as the
/// Lambda binary does through the connect limiter.
fn drain_with_rebuild(bootstrap: &str, settings: &'static [(&'static str, &'static str)]) -> Drain {
    drain_counting_rebuilds(bootstrap, settings).0
}

/// [`drain_with_rebuild`], and how many producers its rebuild has made.
fn drain_counting_rebuilds(
    bootstrap: &str,
    settings: &'static [(&'static str, &'static str)],
) -> (Drain, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (first, health) = producer_with(bootstrap, settings);
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rebuild: buffer_drain::drain::Rebuild = {
        let (bootstrap, made) = (bootstrap.to_owned(), made.clone());
        std::sync::Arc::new(move || {
            let bootstrap = bootstrap.clone();
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                // As the connect limiter paces it: long enough for the other batches to arrive.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(producer_with(&bootstrap, settings))
            })
        })
    };
    let drain = Drain::new(
        first,
        health,
        None,
        Decoding {
            raw: RawMode::Reject,
            raw_topic: None,
        },
    )
    .with_rebuild(rebuild);
    (drain, made)
}

/// The values on `TOPIC`, sorted, read from the start until nothing new came for two seconds
/// after the first (at most 15 s).
fn values_on_topic(bootstrap: &str, group: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut values = Vec::new();
    let ends = Instant::now() + Duration::from_secs(15);
    let mut last_news = Instant::now();
    while Instant::now() < ends
        && (values.is_empty() || last_news.elapsed() < Duration::from_secs(2))
    {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
            last_news = Instant::now();
        }
    }
    values.sort();
    values
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// An envelope for `TOPIC`, on `partition` when given.
fn envelope(value: &str, partition: Option<i32>) -> String {
    let mut env = Envelope::new(TOPIC, value);
    env.partition = partition;
    env.encode()
}

/// An SQS event in Lambda's shape; `group` makes it a FIFO queue's event.
use spillway_tests::fixtures::{kinesis_event, sqs_event};

fn failed_ids(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn rule_2_and_3_only_unacknowledged_records_are_reported_failed() {
    let cluster = cluster();
    // Partition 0 has no leader: what goes there cannot be acknowledged.
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Reject);
    let event = sqs_event(
        &[
            ("m-1", envelope("a", Some(1))),
            ("m-2", envelope("b", Some(0))),
            ("m-3", envelope("c", Some(1))),
            ("m-4", envelope("d", Some(0))),
        ],
        None,
    );
    let response = handle_sqs(&drain, event, soon())
        .await
        .expect("not every record failed");
    assert_eq!(failed_ids(&response), ["m-2", "m-4"]);
}

#[tokio::test]
async fn rule_3_the_invocation_fails_when_every_record_failed_retryably() {
    let cluster = cluster();
    for p in 0..2 {
        cluster
            .partition_leader(TOPIC, p, None)
            .expect("leaderless");
    }
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Reject);
    let event = sqs_event(
        &[("m-1", envelope("a", None)), ("m-2", envelope("b", None))],
        None,
    );
    let err = handle_sqs(&drain, event, soon())
        .await
        .expect_err("every record failed");
    assert_eq!(err.records, 2);
}

/// Two transient produce errors, then success: librdkafka's idempotent retries deliver every
/// record exactly once. The test proves the errors fired (with a 500 ms retry backoff the first
/// acknowledgement cannot come before the retries: a clean produce here takes milliseconds) and
/// reads the topic back to prove nothing was written twice.
#[tokio::test]
async fn rule_3_retryable_produce_errors_injected_by_the_broker_are_retried_by_librdkafka() {
    let cluster = cluster();
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let (producer, health) = producer_with(
        &cluster.bootstrap_servers(),
        &[
            ("retry.backoff.ms", "500"),
            ("retry.backoff.max.ms", "1000"),
            // Two retries 500 ms+ apart need more than the 2 s default here on a busy machine.
            ("message.timeout.ms", "15000"),
        ],
    );
    let drain = Drain::new(
        producer,
        health,
        None,
        Decoding {
            raw: RawMode::Reject,
            raw_topic: None,
        },
    );
    let event = sqs_event(
        &[
            ("m-1", envelope("a", Some(1))),
            ("m-2", envelope("b", Some(1))),
        ],
        None,
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let report = drain.drain(&records, ordering, soon()).await;
    assert_eq!(report.failed().count(), 0, "{:?}", report.outcomes);
    let fastest = report
        .produce_latencies
        .iter()
        .min()
        .copied()
        .unwrap_or_default();
    assert!(
        fastest >= Duration::from_millis(400),
        "acknowledged after {fastest:?}: the injected errors did not fire"
    );

    let ids = values_on_topic(&cluster.bootstrap_servers(), "rule-3-check");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), 2, "each record once, no duplicates: {ids:?}");
    assert_eq!(unique, ids);
}

#[tokio::test]
async fn rule_4_fifo_a_failed_record_stops_its_group_and_nothing_later_of_it_is_produced() {
    let cluster = cluster();
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Reject);
    let event = sqs_event(
        &[
            ("a-1", envelope("a1", Some(1))),
            ("b-1", envelope("b1", Some(1))),
            ("a-2", envelope("a2", Some(0))), // fails: partition 0 has no leader
            ("b-2", envelope("b2", Some(1))),
            ("a-3", envelope("a3", Some(1))), // would succeed, but a-2 failed before it
            ("b-3", envelope("b3", Some(1))),
        ],
        Some(&["A", "B", "A", "B", "A", "B"]),
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    assert_eq!(ordering, buffer_drain::source::Ordering::FifoGroups);
    let report = drain.drain(&records, ordering, soon()).await;
    assert_eq!(failed_ids(&report.sqs_response(&records)), ["a-2", "a-3"]);
    match &report.outcomes[4] {
        buffer_drain::report::Outcome::Failed(failure) => {
            assert_eq!(
                failure,
                &buffer_drain::report::Failure::GroupBlocked,
                "a-3 was never produced"
            );
        }
        other => panic!("a-3: {other:?}"),
    }
}

/// Issue 14 item 7: a record whose acknowledgement had not come by the deadline returns to the
/// queue, so no later record of its group may leave it — not even as a dead letter in the next
/// wave (it used to be dead-lettered and deleted while the earlier one came again).
#[tokio::test]
async fn rule_4_fifo_a_record_unsettled_at_the_deadline_blocks_its_group() {
    let cluster = cluster();
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    let event = sqs_event(
        &[
            ("a-1", envelope("a1", Some(0))), // unacknowledged at the deadline
            ("a-2", "garbage".to_owned()),    // poison, but after a-1 in its group
            ("b-1", envelope("b1", Some(1))),
        ],
        Some(&["A", "A", "B"]),
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    // message.timeout.ms is 2 s: a-1 is still unsettled at this deadline.
    let report = drain
        .drain(
            &records,
            ordering,
            Instant::now() + Duration::from_millis(1200),
        )
        .await;
    assert_eq!(failed_ids(&report.sqs_response(&records)), ["a-1", "a-2"]);
    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "a-2 was not dead-lettered ahead of a-1"
    );
}

/// Issue 14 item 10 (rule 9): when every record of a batch is refused with the same
/// authorization error, that is IAM or the cluster, not the records: the batch fails (the mapping
/// backs off), nothing is dead-lettered, and the next batch backs off too. A record refused alone
/// is still poison (rule 6, above).
#[tokio::test]
async fn rule_9_a_batch_refused_whole_with_one_authorization_error_is_systemic() {
    let (_cluster, drain, client, url) = with_a_forbidden_topic().await;
    let forbidden = |n: &str| (n.to_owned(), Envelope::new("forbidden", n).encode());
    let bodies: Vec<(String, String)> =
        ["m-1", "m-2", "m-3"].iter().map(|n| forbidden(n)).collect();
    let refs: Vec<(&str, String)> = bodies
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    let err = handle_sqs(&drain, sqs_event(&refs, None), soon())
        .await
        .expect_err("the whole batch fails: back off");
    assert_eq!(err.records, 3);
    assert!(err.first.contains("systemic"), "{}", err.first);
    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "nothing was dead-lettered"
    );
    let (records, ordering) =
        buffer_drain::source::from_sqs(sqs_event(&[("m-4", envelope("ok", Some(1)))], None));
    let next = drain.drain(&records, ordering, soon()).await;
    assert!(next.backoff.is_some(), "the next batch backs off first");
    assert_eq!(next.failed().count(), 0);
}

/// Rule 9 with noise: records of the batch that fail transiently (here: no leader until the
/// deadline) do not turn the others' shared authorization refusal into poison — Kafka took
/// nothing, so nothing is dead-lettered and the whole batch comes again.
#[tokio::test]
async fn rule_9_a_systemic_refusal_mixed_with_transient_failures_is_still_systemic() {
    let cluster = cluster_with_a_forbidden_topic();
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    let event = sqs_event(
        &[
            ("m-1", Envelope::new("forbidden", "1").encode()),
            ("m-2", envelope("2", Some(0))),
            ("m-3", Envelope::new("forbidden", "3").encode()),
        ],
        None,
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let report = drain
        .drain(&records, ordering, Instant::now() + Duration::from_secs(2))
        .await;
    assert!(
        report.every_record_failed_retryably(),
        "{:?}",
        report.outcomes
    );
    assert_eq!(
        spillway_tests::queue_depth(&client, &url).await,
        0,
        "nothing was dead-lettered"
    );
}

/// Rule 9 across FIFO waves: a group whose earlier records Kafka took, then refused one alone
/// (its topic is forbidden, the others' is not), is a per-record refusal — the record is poison
/// and goes to the DLQ; it used to be judged on its wave alone, called systemic, and come again
/// until `maxReceiveCount`, blocking its group.
#[tokio::test]
async fn rule_9_a_fifo_record_refused_alone_after_its_group_was_taken_is_poison() {
    let (_cluster, drain, client, url) = with_a_forbidden_topic().await;
    let event = sqs_event(
        &[
            ("m-1", envelope("1", Some(1))),
            ("m-2", envelope("2", Some(1))),
            ("m-3", Envelope::new("forbidden", "3").encode()),
        ],
        Some(&["g", "g", "g"]),
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let report = drain.drain(&records, ordering, soon()).await;
    assert!(
        matches!(
            report.outcomes[..],
            [
                buffer_drain::report::Outcome::Delivered,
                buffer_drain::report::Outcome::Delivered,
                buffer_drain::report::Outcome::DeadLettered(_)
            ]
        ),
        "{:?}",
        report.outcomes
    );
    assert_eq!(spillway_tests::queue_depth(&client, &url).await, 1);
}

/// Issue 14 item 9: an idempotent producer whose sequence numbers desynchronise enters
/// librdkafka's fatal state and refuses every record from then on. The batch it failed comes
/// again (retryable), and the drain replaces the producer — through the rebuild, as the Lambda
/// binary does through the connect limiter — so a warm container does not fail forever.
#[tokio::test]
async fn a_fatal_producer_fails_its_batch_retryably_and_is_replaced() {
    let cluster = cluster();
    let drain = drain_with_rebuild(&cluster.bootstrap_servers(), &[]);
    let batch =
        |id: &str| buffer_drain::source::from_sqs(sqs_event(&[(id, envelope(id, Some(1)))], None));
    let (warm, ordering) = batch("m-warm");
    assert_eq!(
        drain.drain(&warm, ordering, soon()).await.failed().count(),
        0
    );

    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let (records, ordering) = batch("m-1");
    let failed = drain.drain(&records, ordering, soon()).await;
    assert!(
        failed.every_record_failed_retryably(),
        "{:?}",
        failed.outcomes
    );
    for id in ["m-1", "m-2"] {
        let (records, ordering) = batch(id);
        let report = drain.drain(&records, ordering, soon()).await;
        assert_eq!(report.failed().count(), 0, "{id}: {:?}", report.outcomes);
    }
    assert_eq!(
        drain.rebuilds(),
        1,
        "the fatal producer was replaced, once, by the next batch"
    );
}

/// Batches that find the producer fatal at once (concurrent invocations of one environment) wait
/// for one replacement instead of each making a producer — each one more connections and an
/// authentication, through the connect limiter — and discarding all but one.
#[tokio::test]
async fn concurrent_batches_that_find_the_producer_fatal_make_one_replacement() {
    let cluster = cluster();
    let (drain, made) = drain_counting_rebuilds(&cluster.bootstrap_servers(), &[]);
    let batch =
        |id: &str| buffer_drain::source::from_sqs(sqs_event(&[(id, envelope(id, Some(1)))], None));
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let (records, ordering) = batch("m-fatal");
    assert!(drain
        .drain(&records, ordering, soon())
        .await
        .every_record_failed_retryably());
    let batches: Vec<_> = (0..4).map(|i| batch(&format!("m-{i}"))).collect();
    let reports = futures::future::join_all(
        batches
            .iter()
            .map(|(records, ordering)| drain.drain(records, *ordering, soon())),
    )
    .await;
    for report in &reports {
        assert_eq!(report.failed().count(), 0, "{:?}", report.outcomes);
    }
    assert_eq!(
        made.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "producers made for four batches at once"
    );
    assert_eq!(drain.rebuilds(), 1);
}

/// Issue 14 item 9: a record still in librdkafka at the deadline is reported undelivered and
/// comes again from the buffer, so that copy must never reach Kafka later (a container frozen
/// after the invocation and thawed minutes later would send it after newer records). The drain
/// purges it, replaces the purged producer, and the record's next delivery is its only one.
/// An SQS event of `(id, partition)` envelopes; `fifo`: from a FIFO queue, one message group per
/// partition.
fn partitioned(
    ids: &[(&str, i32)],
    fifo: bool,
) -> (
    Vec<buffer_drain::source::SourceRecord>,
    buffer_drain::source::Ordering,
) {
    let bodies: Vec<(&str, String)> = ids
        .iter()
        .map(|(id, p)| (*id, envelope(id, Some(*p))))
        .collect();
    let groups: Vec<String> = ids.iter().map(|(_, p)| format!("g-{p}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    buffer_drain::source::from_sqs(sqs_event(&bodies, fifo.then_some(groups.as_slice())))
}

/// Rule 5's sequence on `drain` (whose librdkafka would keep a record 30 s): `m-0` warms it on
/// partition 1 while partition 0 has no leader; `m-1` (partition 1) and `m-2` (partition 0) get
/// 500 ms; partition 0 gets its leader back. `m-2` is reported failed, and two seconds later the
/// topic holds only `m-0` and `m-1` (read as consumer group `group`).
async fn a_record_held_at_the_deadline_is_not_sent_later(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    drain: &Drain,
    fifo: bool,
    group: &str,
) {
    // Leaderless before the producer first learns the metadata (librdkafka's mock broker crashes
    // answering a produce for a partition whose leader it took away).
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let (warm, ordering) = partitioned(&[("m-0", 1)], fifo);
    assert_eq!(
        drain.drain(&warm, ordering, soon()).await.failed().count(),
        0
    );
    let (records, ordering) = partitioned(&[("m-1", 1), ("m-2", 0)], fifo);
    let deadline = Instant::now() + Duration::from_millis(500);
    let report = drain.drain(&records, ordering, deadline).await;
    assert_eq!(failed_ids(&report.sqs_response(&records)), ["m-2"]);
    cluster
        .partition_leader(TOPIC, 0, Some(1))
        .expect("leader back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        values_on_topic(&cluster.bootstrap_servers(), group),
        ["m-0", "m-1"],
        "the record handed back at the deadline was sent anyway"
    );
}

/// Issue 14 item 9: a record still in librdkafka at the deadline is reported undelivered and
/// comes again from the buffer, so that copy must never reach Kafka later (a container frozen
/// after the invocation and thawed minutes later would send it after newer records). The drain
/// purges it, replaces the purged producer, and the record's next delivery is its only one.
#[tokio::test]
async fn rule_5_a_record_undelivered_at_the_deadline_is_never_sent_later() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    // librdkafka would keep the record for 30 s, long after the partition has a leader again.
    let drain = drain_with_rebuild(&bootstrap, &[("message.timeout.ms", "30000")]);
    a_record_held_at_the_deadline_is_not_sent_later(&cluster, &drain, false, "rule-5-stale").await;

    // The buffer delivers it again: now it is written, once, by a new producer.
    let (again, ordering) = partitioned(&[("m-2", 0)], false);
    let report = drain.drain(&again, ordering, soon()).await;
    assert_eq!(report.failed().count(), 0, "{:?}", report.outcomes);
    assert_eq!(drain.rebuilds(), 1, "the purged producer was replaced");
    assert_eq!(
        values_on_topic(&bootstrap, "rule-5-again"),
        ["m-0", "m-1", "m-2"]
    );
}

/// Rule 5 on a producer shared by concurrent invocations (Lambda Managed Instances): an unordered
/// batch leaves a record undelivered at its deadline in the producer (the environment is not
/// frozen, and a purge would fail the other invocations' records), but an ordered one — a FIFO
/// group here, a Kinesis shard likewise — still purges it: its copy sent again may be produced by
/// another environment's producer, and the held one must not follow it there.
#[tokio::test]
async fn rule_5_holds_for_ordered_batches_on_a_producer_shared_by_concurrent_invocations() {
    let cluster = cluster();
    let drain = drain_with_rebuild(
        &cluster.bootstrap_servers(),
        &[("message.timeout.ms", "30000")],
    )
    .shared_by_concurrent_invocations();
    a_record_held_at_the_deadline_is_not_sent_later(&cluster, &drain, true, "rule-5-shared-fifo")
        .await;
}

#[tokio::test]
async fn rule_4_kinesis_reports_the_lowest_failed_sequence_number() {
    let cluster = cluster();
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Reject);
    let seq = |n: u32| format!("4959033827149025660855969253836157109592157598913658{n:04}");
    let (s1, s2, s3, s4) = (seq(8898), seq(8899), seq(8900), seq(8901));
    let event = kinesis_event(&[
        (&s1, envelope("1", Some(1)).into_bytes()),
        (&s2, envelope("2", Some(0)).into_bytes()),
        (&s3, envelope("3", Some(1)).into_bytes()),
        (&s4, envelope("4", Some(0)).into_bytes()),
    ]);
    let response = handle_kinesis(&drain, event, soon())
        .await
        .expect("not all failed");
    let ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        ids,
        [s2],
        "Lambda resumes the shard at the lowest failed sequence number"
    );
}

#[tokio::test]
async fn rule_5_the_drain_stops_at_its_deadline_and_reports_what_is_undelivered() {
    let cluster = cluster();
    cluster
        .partition_leader(TOPIC, 0, None)
        .expect("leaderless");
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Reject);
    // Warm up: the producer's first batch also pays for connecting and the idempotent producer id.
    let (warm, ordering) =
        buffer_drain::source::from_sqs(sqs_event(&[("m-0", envelope("w", Some(1)))], None));
    assert_eq!(
        drain.drain(&warm, ordering, soon()).await.failed().count(),
        0
    );
    let event = sqs_event(
        &[
            ("m-1", envelope("a", Some(1))),
            ("m-2", envelope("b", Some(0))),
        ],
        None,
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let deadline = Instant::now() + Duration::from_millis(500);
    let report = drain.drain(&records, ordering, deadline).await;
    // The undeliverable record would time out only after 2 s (message.timeout.ms): the drain
    // answered at its deadline instead.
    assert!(
        report.elapsed < Duration::from_millis(1900),
        "{:?}",
        report.elapsed
    );
    assert_eq!(failed_ids(&report.sqs_response(&records)), ["m-2"]);
    assert!(matches!(
        &report.outcomes[1],
        buffer_drain::report::Outcome::Failed(buffer_drain::report::Failure::Unacknowledged)
    ));

    let late = drain.drain(&records, ordering, Instant::now()).await;
    assert_eq!(
        late.failed().count(),
        2,
        "nothing is produced once the deadline has passed"
    );
}

/// A mock cluster with `TOPIC` and a topic "forbidden" that refuses every produce as not
/// authorised.
fn cluster_with_a_forbidden_topic(
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = cluster();
    cluster.create_topic("forbidden", 1, 1).expect("topic");
    cluster
        .topic_error(
            "forbidden",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .expect("topic error");
    cluster
}

/// That cluster, a drain of it, and the DLQ (client, URL) the drain writes to.
async fn with_a_forbidden_topic() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Drain,
    aws_sdk_sqs::Client,
    String,
) {
    let cluster = cluster_with_a_forbidden_topic();
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    (cluster, drain, client, url)
}

async fn dlq() -> (aws_sdk_sqs::Client, String) {
    let client = spillway_tests::sqs().await;
    let url = spillway_tests::fixtures::queue(&client, "drain-dlq", false, &[]).await;
    (client, url)
}

/// Issue 15 item 8: a dead letter's reason names the problem, never the content — not a
/// topic's or a version's text (they are the producer's bytes) — and is always text SQS takes:
/// a control character in a bad topic used to make the dead-letter write itself fail.
#[tokio::test]
async fn rule_6_reasons_name_the_problem_never_the_content() {
    let cluster = cluster();
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    let event = sqs_event(
        &[
            ("m-topic", Envelope::new("secret\u{1}topic", "x").encode()),
            (
                "m-version",
                r#"{"spillway":"secret-version","id":"x"}"#.to_owned(),
            ),
        ],
        None,
    );
    let response = handle_sqs(&drain, event, soon()).await.expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "both dead-lettered: {:?}",
        failed_ids(&response)
    );
    let reasons: Vec<String> =
        spillway_tests::fixtures::receive(&client, &url, 2, Duration::from_secs(10), false)
            .await
            .iter()
            .filter_map(|m| spillway_tests::fixtures::attribute(m, REASON_ATTRIBUTE))
            .map(str::to_owned)
            .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for reason in &reasons {
        assert!(!reason.contains("secret"), "content in a reason: {reason}");
    }
}

#[tokio::test]
async fn rule_6_poison_goes_to_the_dlq_with_its_reason_and_counts_as_handled() {
    let (_cluster, drain, client, url) = with_a_forbidden_topic().await;
    let forbidden = Envelope::new("forbidden", "x").encode();
    let event = sqs_event(
        &[
            ("m-ok", envelope("fine", Some(1))),
            ("m-garbage", "not an envelope".to_owned()),
            ("m-broken", r#"{"spillway":1,"id":"x""#.to_owned()),
            ("m-forbidden", forbidden),
        ],
        None,
    );
    let response = handle_sqs(&drain, event, soon()).await.expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "poison counts as handled: {:?}",
        failed_ids(&response)
    );

    let letters =
        spillway_tests::fixtures::receive(&client, &url, 3, Duration::from_secs(10), false).await;
    let attr = |m: &aws_sdk_sqs::types::Message, name: &str| {
        m.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    let mut by_id: Vec<(String, String, String)> = letters
        .iter()
        .map(|m| {
            (
                attr(m, ORIGINAL_ID_ATTRIBUTE),
                attr(m, REASON_ATTRIBUTE),
                attr(m, SOURCE_ATTRIBUTE),
            )
        })
        .collect();
    by_id.sort();
    assert_eq!(by_id[0].0, "m-broken");
    assert!(
        by_id[0].1.starts_with("undecodable: malformed envelope"),
        "{}",
        by_id[0].1
    );
    assert_eq!(by_id[1].0, "m-forbidden");
    assert!(
        by_id[1].1.starts_with("kafka: not authorised"),
        "{}",
        by_id[1].1
    );
    assert_eq!(by_id[2].0, "m-garbage");
    assert!(
        by_id[2]
            .1
            .starts_with("undecodable: not a spillway envelope"),
        "{}",
        by_id[2].1
    );
    assert!(by_id
        .iter()
        .all(|l| l.2 == "arn:aws:sqs:us-east-2:123456789012:orders"));
    let garbage = letters
        .iter()
        .find(|m| attr(m, ORIGINAL_ID_ATTRIBUTE) == "m-garbage")
        .expect("letter");
    assert_eq!(
        garbage.body(),
        Some("not an envelope"),
        "the original body travels"
    );
}

#[tokio::test]
async fn rule_6_poison_whose_dlq_write_fails_is_reported_failed_never_dropped() {
    let cluster = cluster();
    let client = spillway_tests::sqs().await;
    let missing = format!(
        "{}/000000000000/{}",
        spillway_tests::sqs_endpoint(),
        spillway_tests::unique_name("no-such-queue")
    );
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client, missing)),
        RawMode::Reject,
    );
    let event = sqs_event(
        &[
            ("m-ok", envelope("fine", Some(1))),
            ("m-garbage", "garbage".to_owned()),
        ],
        None,
    );
    let response = handle_sqs(&drain, event, soon())
        .await
        .expect("one delivered");
    assert_eq!(failed_ids(&response), ["m-garbage"]);
}

#[tokio::test]
async fn rule_6_kinesis_poison_keeps_its_data_in_the_dead_letter() {
    let cluster = cluster();
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    let binary = vec![0u8, 0xFF, 0x10];
    let event = kinesis_event(&[("100", binary.clone())]);
    let response = handle_kinesis(&drain, event, soon())
        .await
        .expect("handled");
    assert!(response.batch_item_failures.is_empty());
    let out = client
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive");
    let letter = &out.messages.unwrap_or_default()[0];
    assert_eq!(
        STANDARD
            .decode(letter.body().expect("body"))
            .expect("base64"),
        binary
    );
    let encoding = letter
        .message_attributes()
        .and_then(|a| a.get("spillway-body-encoding"))
        .and_then(|v| v.string_value());
    assert_eq!(encoding, Some("base64"));
}

/// Issue 15 item 2: a poison record too large for the dead-letter queue (here binary Kinesis data
/// whose base64 is over 256 KiB) is kept in S3 and the DLQ gets a claim check naming it, with
/// its reason; a small one beside it is still written whole. Before, the large one was reported
/// failed on every retry until the stream's retention took it.
#[tokio::test]
async fn rule_6_poison_too_large_for_the_dlq_is_kept_in_s3_behind_a_claim_check() {
    use spillway_core::claim::Claim;
    let cluster = cluster();
    let (client, url) = dlq().await;
    let (s3, bucket, store) = spillway_tests::fixtures::claim_store("dlq").await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone()).with_claims(store)),
        RawMode::Reject,
    );
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let small = vec![0u8, 0xFF];
    let event = kinesis_event(&[("100", large.clone()), ("101", small.clone())]);
    let response = handle_kinesis(&drain, event, soon())
        .await
        .expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "both are dead letters: {:?}",
        response.batch_item_failures
    );
    let letters =
        spillway_tests::fixtures::receive(&client, &url, 2, Duration::from_secs(10), false).await;
    assert_eq!(letters.len(), 2);
    let attr = |m: &aws_sdk_sqs::types::Message, name: &str| {
        m.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_owned)
    };
    let claimed = letters
        .iter()
        .find(|m| attr(m, "spillway-body-encoding").as_deref() == Some("s3-claim"))
        .expect("a claim check");
    assert_eq!(attr(claimed, ORIGINAL_ID_ATTRIBUTE).as_deref(), Some("100"));
    assert!(attr(claimed, REASON_ATTRIBUTE).is_some());
    let claim = Claim::parse(claimed.body().expect("body")).expect("claim");
    assert_eq!(claim.bucket, bucket);
    assert_eq!(
        spillway_core::claim::fetch(&s3, &claim)
            .await
            .expect("object"),
        large
    );
    let whole = letters
        .iter()
        .find(|m| attr(m, ORIGINAL_ID_ATTRIBUTE).as_deref() == Some("101"))
        .expect("the small one");
    assert_eq!(
        STANDARD
            .decode(whole.body().expect("body"))
            .expect("base64"),
        small
    );
}

/// Review of issue 15: the same record dead-lettered twice (a Kinesis retry after a later record
/// failed, an SQS timeout after the DLQ write) makes two letters; each has an object of its own,
/// so replaying one — which removes its object — leaves the other readable. They shared one key,
/// and the second letter could never be replayed.
#[tokio::test]
async fn a_record_dead_lettered_twice_has_two_objects() {
    use spillway_core::claim::{fetch, remove, Claim};
    let (client, url) = dlq().await;
    let (s3, _, store) = spillway_tests::fixtures::claim_store("dlq").await;
    let letters = DeadLetters::new(client.clone(), url.clone()).with_claims(store);
    let (records, _) =
        buffer_drain::source::from_kinesis(kinesis_event(&[("100", vec![7u8; 300_000])]));
    for _ in 0..2 {
        let sent = letters
            .send(&[(&records[0], "poison".to_owned())], soon())
            .await;
        assert_eq!(sent, [Ok(())]);
    }
    let mut claims = Vec::new();
    while claims.len() < 2 {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let got = out.messages.unwrap_or_default();
        assert!(!got.is_empty(), "two letters");
        claims.extend(
            got.iter()
                .map(|m| Claim::parse(m.body().unwrap_or_default()).expect("claim")),
        );
    }
    assert_ne!(claims[0].key, claims[1].key);
    remove(&s3, &claims[0]).await.expect("remove");
    assert_eq!(
        fetch(&s3, &claims[1]).await.expect("still there").len(),
        300_000
    );
}

/// The claim check's threshold is the letter as SQS counts it, body and attributes: a letter of
/// exactly 262,144 bytes goes to the queue whole (and the queue takes it), one byte more goes to S3.
#[tokio::test]
async fn a_letter_at_the_queue_limit_is_written_whole_and_one_byte_more_is_claimed() {
    use spillway_core::dead_letter::{letter_bytes, MAX_LETTER_BYTES};
    let (client, url) = dlq().await;
    let (_, _, store) = spillway_tests::fixtures::claim_store("dlq").await;
    let letters = DeadLetters::new(client.clone(), url.clone()).with_claims(store);
    let (probe, _) = buffer_drain::source::from_kinesis(kinesis_event(&[("100", Vec::new())]));
    let attributes = [
        (REASON_ATTRIBUTE, "poison"),
        (SOURCE_ATTRIBUTE, probe[0].source.as_str()),
        (ORIGINAL_ID_ATTRIBUTE, "100"),
    ];
    let overhead = letter_bytes("", attributes);
    for (extra, encoding) in [(0, None), (1, Some("s3-claim"))] {
        let data = vec![b'x'; MAX_LETTER_BYTES - overhead + extra];
        let (records, _) = buffer_drain::source::from_kinesis(kinesis_event(&[("100", data)]));
        let sent = letters
            .send(&[(&records[0], "poison".to_owned())], soon())
            .await;
        assert_eq!(sent, [Ok(())], "{extra} byte(s) over");
        let out = client
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(2)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let letter = &out.messages.unwrap_or_default()[0];
        let got = letter
            .message_attributes()
            .and_then(|a| a.get(ENCODING_ATTRIBUTE))
            .and_then(|v| v.string_value());
        assert_eq!(got, encoding, "{extra} byte(s) over");
        client
            .delete_message()
            .queue_url(&url)
            .receipt_handle(letter.receipt_handle().unwrap_or_default())
            .send()
            .await
            .expect("delete");
    }
}

/// Review of issue 15: an S3 that does not answer costs only the large letter. The claim-check
/// write gets half the time left, so the small letters beside it are still written; they used to
/// wait for the S3 call until the deadline and be reported failed with it.
#[tokio::test]
async fn an_s3_that_does_not_answer_fails_only_the_letter_that_needs_it() {
    let (client, url) = dlq().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let s3 = spillway_core::claim::ClaimStore::client(&spillway_tests::aws_config(&endpoint).await);
    let store =
        spillway_core::claim::ClaimStore::new(s3, "b", spillway_core::dead_letter::CLAIM_PREFIX);
    let letters = DeadLetters::new(client.clone(), url.clone()).with_claims(store);
    let (records, _) = buffer_drain::source::from_kinesis(kinesis_event(&[
        ("100", vec![1u8; 300_000]),
        ("101", vec![1u8, 2]),
    ]));
    let sent = letters
        .send(
            &[
                (&records[0], "poison".to_owned()),
                (&records[1], "poison".to_owned()),
            ],
            Instant::now() + Duration::from_secs(3),
        )
        .await;
    assert!(sent[0].is_err(), "{sent:?}");
    assert_eq!(sent[1], Ok(()), "{sent:?}");
    assert_eq!(spillway_tests::queue_depth(&client, &url).await, 1);
}

/// Without a bucket, a letter too large for the DLQ is reported failed (never dropped), and the
/// reason says what to set.
#[tokio::test]
async fn rule_6_poison_too_large_for_the_dlq_without_a_bucket_is_reported_failed() {
    let cluster = cluster();
    let (client, url) = dlq().await;
    let drain = drain(
        &cluster.bootstrap_servers(),
        Some(DeadLetters::new(client.clone(), url.clone())),
        RawMode::Reject,
    );
    let (records, ordering) = buffer_drain::source::from_kinesis(kinesis_event(&[
        ("100", vec![0u8; 200_000]),
        ("101", vec![0u8, 0xFF]),
    ]));
    let report = drain.drain(&records, ordering, soon()).await;
    match &report.outcomes[0] {
        buffer_drain::report::Outcome::Failed(failure) => {
            let reason = failure.to_string();
            assert!(reason.contains("SPILLWAY_DLQ_BUCKET"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn raw_mode_produces_plain_messages_with_the_message_id_as_spillway_id() {
    let cluster = cluster();
    let drain = drain(&cluster.bootstrap_servers(), None, RawMode::Accept);
    let event = sqs_event(
        &[("m-raw", r#"{"payload":"Hello World"}"#.to_owned())],
        None,
    );
    let (records, ordering) = buffer_drain::source::from_sqs(event);
    let message = buffer_drain::message::to_kafka(
        &records[0],
        &Decoding {
            raw: RawMode::Accept,
            raw_topic: Some(TOPIC.into()),
        },
    )
    .expect("raw");
    assert_eq!(message.value, br#"{"payload":"Hello World"}"#);
    assert_eq!(
        message.headers[0],
        ("spillway-id".to_owned(), b"m-raw".to_vec())
    );
    assert_eq!(
        message.headers[1],
        ("spillway-received-at".to_owned(), b"1545082649183".to_vec())
    );
    assert_eq!(message.headers[2].0, "x-amzn-trace-id");
    let report = drain.drain(&records, ordering, soon()).await;
    assert_eq!(report.outcomes, [buffer_drain::report::Outcome::Delivered]);
}
