//! The drain with its local poller against the local stack: fauxqs (SQS), kinesalite (Kinesis) and
//! Tansu (Kafka). Faults use a broker of the test's own, paused and resumed, so other tests are
//! not disturbed. Records are counted back from Kafka with msk-consumer's verifier.

use std::time::{Duration, Instant};

use buffer_drain::config::DrainConfig;
use buffer_drain::drain::Drain;
use buffer_drain::lambda::build_drain;
use buffer_drain::poller::checkpoints::CheckpointsAt;
use buffer_drain::poller::{KinesisPoller, PollSettings, SqsPoller};
use spillway_core::limits::BufferKind;

mod common;
use common::{consume, kafka};

async fn drain(bootstrap: &str, source: BufferKind, dlq_url: Option<String>) -> Drain {
    let config = DrainConfig {
        deadline_margin: Duration::from_millis(500),
        dlq_url,
        ..DrainConfig::new(source)
    };
    build_drain(
        &kafka(bootstrap),
        &config,
        Some(&spillway_tests::sdk().await),
    )
    .await
    .expect("drain")
}

/// The visibility timeout is 6× the function timeout, as AWS requires of a queue a Lambda drains
/// (the poller's heartbeat would keep a batch hidden with less).
fn settings(batch_size: usize, function_timeout: Duration) -> PollSettings {
    PollSettings {
        batch_size,
        batch_window: Duration::from_millis(50),
        visibility_timeout: function_timeout * 6,
        function_timeout,
        deadline_margin: Duration::from_millis(500),
    }
}

async fn queue(sqs: &aws_sdk_sqs::Client, fifo: bool) -> String {
    spillway_tests::fixtures::queue(sqs, "drain", fifo, &[]).await
}

use spillway_tests::fixtures::send_envelopes as send;

/// The local poller draining every shard of `stream` into the broker at `bootstrap`, `batch_size`
/// records per invocation.
async fn kinesis_poller(
    bootstrap: &str,
    stream: &str,
    batch_size: usize,
) -> buffer_drain::poller::Running {
    kinesis_poller_keeping(bootstrap, stream, batch_size, CheckpointsAt::Memory).await
}

/// [`kinesis_poller`], keeping the shards' checkpoints `at`.
async fn kinesis_poller_keeping(
    bootstrap: &str,
    stream: &str,
    batch_size: usize,
    at: CheckpointsAt,
) -> buffer_drain::poller::Running {
    let config = buffer_drain::config::LocalConfig {
        kafka: kafka(bootstrap),
        drain: DrainConfig {
            deadline_margin: Duration::from_millis(500),
            ..DrainConfig::new(BufferKind::Kinesis)
        },
        poll: settings(batch_size, Duration::from_secs(3)),
        workers: 1,
        source: stream.to_owned(),
        kinesis_checkpoints: at,
    };
    buffer_drain::poller::run_local(&config, &spillway_tests::sdk().await)
        .await
        .expect("poller")
}

/// Polls with `pollers` (each with its own drain) until the queue at `url` is empty.
async fn drain_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    pollers: Vec<(SqsPoller, Drain)>,
    timeout: Duration,
) {
    let workers = pollers
        .into_iter()
        .map(|pair| {
            let pair = std::sync::Arc::new(pair);
            move || {
                let pair = pair.clone();
                async move {
                    pair.0.poll_once(&pair.1).await.expect("poll");
                }
            }
        })
        .collect();
    spillway_tests::poll_until_empty(sqs, url, workers, std::future::ready(()), timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_from_sqs_each_arrive_in_kafka() {
    let sqs = spillway_tests::sqs().await;
    let bootstrap = spillway_tests::kafka_bootstrap();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("drained");
    send(&sqs, &url, &topic, 10_000, |i| Some(format!("k{}", i % 50))).await;

    let mut pollers = Vec::new();
    for _ in 0..2 {
        let poller = SqsPoller::new(
            sqs.clone(),
            url.clone(),
            settings(100, Duration::from_secs(30)),
        )
        .await
        .expect("poller");
        pollers.push((poller, drain(&bootstrap, BufferKind::Sqs, None).await));
    }
    drain_queue(&sqs, &url, pollers, Duration::from_secs(180)).await;

    let summary = consume(&bootstrap, &topic, 10_000, Duration::from_secs(120)).await;
    assert_eq!(summary.unique_ids, 10_000, "{summary:?}");
    assert_eq!(summary.without_id, 0);
    // A standard queue promises no order, and two workers drain it at once: order is not checked
    // here (the FIFO and Kinesis tests check it).
}

#[tokio::test]
async fn a_paused_broker_fails_the_batch_and_every_record_arrives_after_it_resumes() {
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("paused");
    send(&sqs, &url, &topic, 200, |i| Some(format!("k{}", i % 5))).await;
    let drain = drain(&broker.bootstrap, BufferKind::Sqs, None).await;
    let poller = SqsPoller::new(
        sqs.clone(),
        url.clone(),
        settings(100, Duration::from_secs(3)),
    )
    .await
    .expect("poller");

    // Connect first, then freeze the broker mid-stream.
    let first = poller.poll_once(&drain).await.expect("poll");
    assert!(first.done > 0, "connected: {first:?}");
    broker.pause();
    let during = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(
        during.done, 0,
        "nothing leaves the queue while Kafka does not acknowledge"
    );
    broker.resume();
    let rest = vec![(
        SqsPoller::new(
            sqs.clone(),
            url.clone(),
            settings(100, Duration::from_secs(10)),
        )
        .await
        .expect("poller"),
        drain,
    )];
    drain_queue(&sqs, &url, rest, Duration::from_secs(120)).await;

    let summary = consume(&broker.bootstrap, &topic, 200, Duration::from_secs(60)).await;
    assert_eq!(summary.unique_ids, 200, "none lost: {summary:?}");
}

#[tokio::test]
async fn fifo_order_per_group_survives_a_failure() {
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, true).await;
    let topic = spillway_tests::unique_name("fifo");
    send(&sqs, &url, &topic, 60, |i| Some(format!("group-{}", i % 3))).await;
    let drain = drain(&broker.bootstrap, BufferKind::Sqs, None).await;
    let poller = SqsPoller::new(
        sqs.clone(),
        url.clone(),
        settings(10, Duration::from_secs(3)),
    )
    .await
    .expect("poller");
    let first = poller.poll_once(&drain).await.expect("poll");
    broker.pause();
    let during = poller.poll_once(&drain).await.expect("poll");
    broker.resume();
    assert!(first.done + during.done < 60, "the pause failed a batch");
    drain_queue(&sqs, &url, vec![(poller, drain)], Duration::from_secs(120)).await;

    let summary = consume(&broker.bootstrap, &topic, 60, Duration::from_secs(60)).await;
    assert_eq!(summary.unique_ids, 60, "{summary:?}");
    assert_eq!(
        summary.order_violations, 0,
        "each group's order is kept in Kafka: {summary:?}"
    );
}

#[tokio::test]
async fn kinesis_resumes_at_its_checkpoint_after_a_failure() {
    let kinesis = spillway_tests::kinesis().await;
    let broker = spillway_tests::PrivateBroker::start();
    let stream = spillway_tests::fixtures::stream(&kinesis, "drain", 1).await;
    let topic = spillway_tests::unique_name("from-kinesis");
    spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, 300, |_| "one-key".into())
        .await;
    let shard = KinesisPoller::shards(&kinesis, &stream)
        .await
        .expect("shards")
        .remove(0)
        .id;
    let drain = drain(&broker.bootstrap, BufferKind::Kinesis, None).await;
    let mut poller = KinesisPoller::new(
        kinesis.clone(),
        stream.clone(),
        shard,
        settings(100, Duration::from_secs(3)),
    )
    .await
    .expect("poller");

    let mut done = poller.poll_once(&drain).await.expect("poll").done;
    broker.pause();
    let during = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(
        during.done, 0,
        "a failed batch does not move the checkpoint"
    );
    broker.resume();
    let ends = Instant::now() + Duration::from_secs(120);
    while done < 300 && Instant::now() < ends {
        done += poller.poll_once(&drain).await.expect("poll").done;
    }
    assert_eq!(done, 300);
    let summary = consume(&broker.bootstrap, &topic, 300, Duration::from_secs(60)).await;
    assert_eq!(summary.unique_ids, 300, "{summary:?}");
    assert_eq!(
        summary.order_violations, 0,
        "one shard, one key: order kept"
    );
}

#[tokio::test]
async fn a_poison_message_lands_in_the_dlq_and_leaves_the_queue() {
    let sqs = spillway_tests::sqs().await;
    let bootstrap = spillway_tests::kafka_bootstrap();
    let url = queue(&sqs, false).await;
    let dlq = queue(&sqs, false).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body("this is not an envelope")
        .send()
        .await
        .expect("send");
    let topic = spillway_tests::unique_name("poison");
    send(&sqs, &url, &topic, 5, |_| None).await;
    let poller = SqsPoller::new(
        sqs.clone(),
        url.clone(),
        settings(10, Duration::from_secs(10)),
    )
    .await
    .expect("poller");
    drain_queue(
        &sqs,
        &url,
        vec![(
            poller,
            drain(&bootstrap, BufferKind::Sqs, Some(dlq.clone())).await,
        )],
        Duration::from_secs(60),
    )
    .await;
    let letters = sqs
        .receive_message()
        .queue_url(&dlq)
        .wait_time_seconds(2)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body(), Some("this is not an envelope"));
    let reason = letters[0]
        .message_attributes()
        .and_then(|a| a.get("spillway-reason"))
        .and_then(|v| v.string_value());
    assert!(
        reason.is_some_and(|r| r.starts_with("undecodable")),
        "{reason:?}"
    );
    assert_eq!(
        consume(&bootstrap, &topic, 5, Duration::from_secs(60))
            .await
            .unique_ids,
        5
    );
}

/// Issue 17 item 5: the local poller reads every shard of a stream, each in order, whatever
/// `SPILLWAY_MAX_CONCURRENCY` says (a Kinesis mapping runs one batch per shard at a time). It used
/// to start one worker per shard up to that number and never read the other shards: with the
/// default of 2 workers, the records of a third shard stayed in the stream.
#[tokio::test]
async fn the_local_poller_drains_every_shard_with_fewer_workers_than_shards() {
    let kinesis = spillway_tests::kinesis().await;
    let broker = spillway_tests::PrivateBroker::start();
    let stream = spillway_tests::fixtures::stream(&kinesis, "drain-shards", 3).await;
    let topic = spillway_tests::unique_name("from-shards");
    spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, 90, |i| format!("key-{i}"))
        .await;
    let tasks = kinesis_poller(&broker.bootstrap, &stream, 100).await;
    let summary = consume(&broker.bootstrap, &topic, 90, Duration::from_secs(60)).await;
    tasks.abort().await;
    assert_eq!(
        summary.unique_ids, 90,
        "records of every shard: {summary:?}"
    );
}

/// Issue 17 item 4 (service mode): a Kinesis drain keeps its shards' checkpoints where they
/// outlive the process (`SPILLWAY_KINESIS_CHECKPOINTS`, here a directory), so a restarted one reads
/// on after its last report. With checkpoints in memory it read the whole stream again: every
/// record delivered before the restart was delivered a second time.
#[tokio::test]
async fn a_restarted_kinesis_drain_reads_on_from_the_checkpoints_it_saved() {
    let kinesis = spillway_tests::kinesis().await;
    let broker = spillway_tests::PrivateBroker::start();
    let stream = spillway_tests::fixtures::stream(&kinesis, "drain-restart", 2).await;
    let topic = spillway_tests::unique_name("restarted");
    let dir = std::env::temp_dir().join(spillway_tests::unique_name("checkpoints"));
    let put = |n| {
        spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, n, |i| {
            format!("key-{i}")
        })
    };
    put(60).await;
    let first = kinesis_poller_keeping(
        &broker.bootstrap,
        &stream,
        100,
        CheckpointsAt::Dir(dir.clone()),
    )
    .await;
    let before = consume(&broker.bootstrap, &topic, 60, Duration::from_secs(60)).await;
    assert_eq!(before.unique_ids, 60, "{before:?}");
    assert!(
        first.stop(Duration::from_secs(10)).await,
        "stopped gracefully"
    );
    let saved = std::fs::read_dir(&dir)
        .expect("checkpoints")
        .flat_map(|d| std::fs::read_dir(d.expect("entry").path()).expect("stream's"))
        .count();
    assert_eq!(saved, 2, "one checkpoint per shard");

    put(30).await;
    let second = kinesis_poller_keeping(
        &broker.bootstrap,
        &stream,
        100,
        CheckpointsAt::Dir(dir.clone()),
    )
    .await;
    let after = consume(&broker.bootstrap, &topic, 90, Duration::from_secs(60)).await;
    assert!(second.stop(Duration::from_secs(10)).await);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(after.unique_ids, 90, "{after:?}");
    assert_eq!(
        after.duplicates, 0,
        "the restarted drain read the stream from its start again: {after:?}"
    );
}

/// The same checkpoints in S3 (moto): none before the first save, then what was saved.
#[tokio::test]
async fn kinesis_checkpoints_in_s3_read_back_as_saved() {
    use buffer_drain::poller::checkpoints::{Checkpoint, CheckpointStore};
    let s3 = spillway_tests::s3().await;
    let bucket = spillway_tests::unique_name("checkpoints");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let store = CheckpointStore::new(
        &CheckpointsAt::parse(Some(&format!("s3://{bucket}/drains/a/"))).expect("setting"),
        &spillway_tests::sdk().await,
    );
    assert_eq!(store.load("s", "shardId-1").await.expect("load"), None);
    for saved in [Checkpoint::After("17".into()), Checkpoint::At("18".into())] {
        store.save("s", "shardId-1", &saved).await.expect("save");
        assert_eq!(
            store.load("s", "shardId-1").await.expect("load"),
            Some(saved)
        );
    }
    assert!(
        spillway_tests::fixtures::object_exists(&s3, &bucket, "drains/a/stream=s/shard=shardId-1")
            .await
    );
    assert_eq!(store.load("s", "shardId-2").await.expect("load"), None);
}

/// Splits every open shard of `stream` at the middle of its hash range and waits until the
/// stream is active again.
async fn split_open_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) {
    for shard in spillway_tests::fixtures::shards(kinesis, stream).await {
        let open = shard
            .sequence_number_range
            .as_ref()
            .is_some_and(|r| r.ending_sequence_number.is_none());
        if !open {
            continue;
        }
        let range = shard.hash_key_range.expect("hash key range");
        let start: u128 = range.starting_hash_key.parse().expect("hash key");
        let end: u128 = range.ending_hash_key.parse().expect("hash key");
        kinesis
            .split_shard()
            .stream_name(stream)
            .shard_to_split(&shard.shard_id)
            .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
            .send()
            .await
            .expect("split shard");
        spillway_tests::fixtures::wait_active(kinesis, stream).await;
    }
}

// Rule 4 across resharding: Kinesis keeps a key's order only for a reader that finishes a parent
// shard before its children; and shards opened after the poller started are read too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_the_local_poller_reads_parents_before_children_and_finds_new_shards() {
    let kinesis = spillway_tests::kinesis().await;
    let broker = spillway_tests::PrivateBroker::start();
    let stream = spillway_tests::fixtures::stream(&kinesis, "drain-reshard", 1).await;
    let topic = spillway_tests::unique_name("resharded");
    let key = |i: usize| format!("key-{}", i % 4);
    spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, 200, key).await;
    split_open_shards(&kinesis, &stream).await;
    spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, 200, key).await;
    // Small batches: the parent takes twenty invocations, time for children read too early to
    // overtake it.
    let tasks = kinesis_poller(&broker.bootstrap, &stream, 10).await;
    let before = consume(&broker.bootstrap, &topic, 400, Duration::from_secs(60)).await;
    assert_eq!(before.unique_ids, 400, "parent and children: {before:?}");
    assert_eq!(before.order_violations, 0, "per-key order: {before:?}");

    // The children split while the poller runs: their children open later than it started.
    split_open_shards(&kinesis, &stream).await;
    spillway_tests::fixtures::put_envelopes(&kinesis, &stream, &topic, 200, key).await;
    let after = consume(&broker.bootstrap, &topic, 600, Duration::from_secs(60)).await;
    tasks.abort().await;
    assert_eq!(after.unique_ids, 600, "shards opened later: {after:?}");
    assert_eq!(after.order_violations, 0, "per-key order: {after:?}");
}

/// Issue 17 item 3: a batch held longer than its visibility timeout (the broker frozen for 24 s,
/// visibility 18 s) is kept hidden by the poller's heartbeat, so a second worker polling the same
/// queue never receives it and nothing reaches Kafka twice. Without the heartbeat the second
/// worker took the 10 messages when their timeout ended and both workers produced them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_outlives_its_visibility_timeout_is_kept_from_a_second_worker() {
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("held");
    let held = PollSettings {
        batch_size: 10,
        batch_window: Duration::ZERO,
        visibility_timeout: Duration::from_secs(18),
        function_timeout: Duration::from_secs(30),
        deadline_margin: Duration::from_millis(500),
    };
    held.check(BufferKind::Sqs)
        .expect("settings the poller accepts");
    let worker = || async {
        let poller = SqsPoller::new(sqs.clone(), url.clone(), held)
            .await
            .expect("poller");
        std::sync::Arc::new((
            poller,
            drain(&broker.bootstrap, BufferKind::Sqs, None).await,
        ))
    };
    let (a, b) = (worker().await, worker().await);
    // Both workers connected to the broker first.
    send(&sqs, &url, &topic, 20, |i| Some(format!("k{i}"))).await;
    while spillway_tests::queue_depth(&sqs, &url).await > 0 {
        for w in [&a, &b] {
            w.0.poll_once(&w.1).await.expect("poll");
        }
    }

    send(&sqs, &url, &topic, 10, |i| Some(format!("k{i}"))).await;
    broker.pause();
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.0.poll_once(&a.1).await.expect("poll") })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = {
        let b = b.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(26);
            let mut received = 0;
            while Instant::now() < until {
                received += b.0.poll_once(&b.1).await.expect("poll").records;
            }
            received
        })
    };
    tokio::time::sleep(Duration::from_secs(24)).await;
    broker.resume();
    let first = first.await.expect("first worker");
    assert_eq!(first.records, 10, "{first:?}");
    assert_eq!(first.done, 10, "{first:?}");
    assert_eq!(
        second.await.expect("second worker"),
        0,
        "the held batch was received by a second worker"
    );
    assert!(
        a.0.extensions()
            .extended
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 10,
        "the heartbeat extended the batch"
    );

    let summary = consume(&broker.bootstrap, &topic, 30, Duration::from_secs(60)).await;
    assert_eq!(summary.unique_ids, 30, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
}

/// The pipelined poller of `run_local` (the next batch received while one is produced, deletes
/// overlapping the next batch, a backoff after a batch that failed as a whole) keeps each FIFO
/// group's order through a broker pause, delivers everything, and stops gracefully with nothing
/// left in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipelined_poller_keeps_fifo_order_through_a_pause_and_stops_cleanly() {
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, true).await;
    let topic = spillway_tests::unique_name("fifo-pipelined");
    send(&sqs, &url, &topic, 300, |i| {
        Some(format!("group-{}", i % 3))
    })
    .await;
    let poll = PollSettings {
        visibility_timeout: Duration::from_secs(20),
        ..settings(10, Duration::from_secs(3))
    };
    let config = buffer_drain::config::LocalConfig {
        kafka: kafka(&broker.bootstrap),
        drain: DrainConfig {
            deadline_margin: Duration::from_millis(500),
            ..DrainConfig::new(BufferKind::Sqs)
        },
        poll,
        workers: 2,
        source: url.clone(),
        kinesis_checkpoints: buffer_drain::poller::checkpoints::CheckpointsAt::Memory,
    };
    let running = buffer_drain::poller::run_local(&config, &spillway_tests::sdk().await)
        .await
        .expect("poller");
    tokio::time::sleep(Duration::from_millis(700)).await;
    broker.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker.resume();

    let summary = consume(&broker.bootstrap, &topic, 300, Duration::from_secs(120)).await;
    assert_eq!(summary.unique_ids, 300, "{summary:?}");
    assert_eq!(
        summary.order_violations, 0,
        "each group's order is kept in Kafka: {summary:?}"
    );
    let ends = Instant::now() + Duration::from_secs(30);
    while spillway_tests::queue_depth(&sqs, &url).await > 0 && Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        running.stop(poll.shutdown_bound()).await,
        "every worker ended within the bound"
    );
    assert_eq!(spillway_tests::queue_depth(&sqs, &url).await, 0);
}

/// Item 2's AIMD: under a backlog the pipelined poller's in-flight limit climbs from one batch to
/// `SPILLWAY_MAX_CONCURRENCY`; a broker that stops answering makes the batches slow and the limit
/// halves; a trickle (no backlog) brings it down to one; everything arrives once, nothing is left
/// in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_climbs_under_a_backlog_and_halves_when_the_broker_stalls() {
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("aimd");
    send(&sqs, &url, &topic, 3_000, |i| Some(format!("k{}", i % 20))).await;
    let poll = PollSettings {
        visibility_timeout: Duration::from_secs(30),
        ..settings(10, Duration::from_secs(10))
    };
    let config = buffer_drain::config::LocalConfig {
        kafka: kafka(&broker.bootstrap),
        drain: DrainConfig {
            deadline_margin: Duration::from_millis(500),
            ..DrainConfig::new(BufferKind::Sqs)
        },
        poll,
        workers: 4,
        source: url.clone(),
        kinesis_checkpoints: buffer_drain::poller::checkpoints::CheckpointsAt::Memory,
    };
    let running = buffer_drain::poller::run_local(&config, &spillway_tests::sdk().await)
        .await
        .expect("poller");
    let aimd = running.concurrency().expect("an SQS poller").clone();
    let ends = Instant::now() + Duration::from_secs(30);
    while aimd.peak() < 4 && Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        aimd.peak(),
        4,
        "the limit reached the maximum under a backlog"
    );
    broker.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.resume();

    let summary = consume(&broker.bootstrap, &topic, 3_000, Duration::from_secs(120)).await;
    assert_eq!(summary.unique_ids, 3_000, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
    assert!(
        aimd.cuts() >= 1,
        "the batches the stall slowed cut the limit (limit {}, peak {})",
        aimd.limit(),
        aimd.peak()
    );
    // A trickle: every batch comes back short, no backlog, and the limit falls to one.
    let trickle = spillway_tests::unique_name("aimd-trickle");
    for _ in 0..6 {
        send(&sqs, &url, &trickle, 1, |_| None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let summary = consume(&broker.bootstrap, &trickle, 6, Duration::from_secs(60)).await;
    assert_eq!(summary.unique_ids, 6, "{summary:?}");
    assert_eq!(aimd.limit(), 1, "no backlog: one batch at a time");
    let ends = Instant::now() + Duration::from_secs(30);
    while spillway_tests::queue_depth(&sqs, &url).await > 0 && Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.stop(poll.shutdown_bound()).await);
    assert_eq!(spillway_tests::queue_depth(&sqs, &url).await, 0);
}

/// Issue 18: the envelope's W3C trace context becomes the record's `traceparent` and
/// `tracestate`; an envelope without a valid one gets the trace derived from its id; the
/// timestamp asked for (REST Proxy v3) is the record's.
#[tokio::test]
async fn trace_context_and_timestamps_reach_the_kafka_record() {
    use spillway_core::envelope::Envelope;
    use spillway_core::trace::TraceParent;
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("traced");
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = Envelope::new(&topic, "traced");
    traced.traceparent = Some(caller.into());
    traced.tracestate = Some("rojo=00f067aa0ba902b7".into());
    traced.timestamp_ms = Some(1_612_552_482_000);
    let mut malformed = Envelope::new(&topic, "malformed");
    malformed.traceparent = Some("00-not-a-trace-01".into());
    malformed.tracestate = Some("rojo=1".into());
    let plain = Envelope::new(&topic, "plain");
    for env in [&traced, &malformed, &plain] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(env.encode())
            .send()
            .await
            .expect("send");
    }
    let drain = drain(&broker.bootstrap, BufferKind::Sqs, None).await;
    let poller = SqsPoller::new(
        sqs.clone(),
        url.clone(),
        settings(10, Duration::from_secs(5)),
    )
    .await
    .expect("poller");
    drain_queue(&sqs, &url, vec![(poller, drain)], Duration::from_secs(60)).await;

    let got = common::records(&broker.bootstrap, &topic, 3, Duration::from_secs(60)).await;
    let of = |value: &[u8]| {
        got.iter()
            .find(|r| r.value.as_deref() == Some(value))
            .unwrap_or_else(|| panic!("{value:?} not in {got:?}"))
    };
    let record = of(b"traced");
    assert_eq!(
        record.traceparent().map(|t| t.to_string()).as_deref(),
        Some(caller)
    );
    assert_eq!(record.tracestate(), Some("rojo=00f067aa0ba902b7"));
    assert_eq!(record.timestamp_ms, 1_612_552_482_000);
    for (value, env) in [(&b"malformed"[..], &malformed), (b"plain", &plain)] {
        let record = of(value);
        assert_eq!(
            record.traceparent(),
            Some(TraceParent::from_message_id(&env.id)),
            "{value:?}"
        );
        assert_eq!(record.tracestate(), None);
        assert!(record.timestamp_ms > 1_700_000_000_000, "the produce time");
    }
}

/// Issue 18 item 3: a claim-checked message's value is read from S3 and produced whole; the
/// object is removed only once Kafka acknowledged the record: through a broker outage both the
/// message and its object stay.
#[tokio::test]
async fn a_value_kept_in_s3_is_produced_whole_and_its_object_removed_only_after_the_ack() {
    use spillway_core::envelope::Envelope;
    let sqs = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&sqs, false).await;
    let topic = spillway_tests::unique_name("claimed");
    let (s3, bucket, store) =
        spillway_tests::fixtures::claim_store_under("values", spillway_core::claim::VALUE_PREFIX)
            .await;
    // 3.5 times the queue's limit. (MSK Serverless takes records up to 8 MiB; the local broker,
    // Tansu, refuses records over 1 MB whatever the topic's `max.message.bytes`.)
    let value: Vec<u8> = (0..900_000_u32).map(|i| (i % 251) as u8).collect();
    let claim = store.put(&value).await.expect("put");
    let env = Envelope::new(&topic, Vec::new()).claimed(claim.clone());
    sqs.send_message()
        .queue_url(&url)
        .message_body(env.encode())
        .send()
        .await
        .expect("send");
    let config = DrainConfig {
        claim_bucket: Some(bucket.clone()),
        ..DrainConfig::new(BufferKind::Sqs)
    };
    let (poller, drain) = claim_drain(&sqs, &url, &broker.bootstrap, &config).await;

    broker.pause();
    let during = poller.poll_once(&drain).await.expect("poll");
    assert_eq!(during.done, 0, "nothing delivered while the broker is down");
    assert!(
        spillway_tests::fixtures::object_exists(&s3, &bucket, &claim.key).await,
        "the object stays while its record is undelivered"
    );
    broker.resume();
    drain_queue(&sqs, &url, vec![(poller, drain)], Duration::from_secs(120)).await;

    let got = common::records(&broker.bootstrap, &topic, 1, Duration::from_secs(60)).await;
    assert_eq!(
        got[0].value.as_deref(),
        Some(value.as_slice()),
        "byte for byte"
    );
    assert_eq!(got[0].spillway_id(), Some(env.id.as_str()));
    let marker = s3
        .get_object()
        .bucket(&bucket)
        .key(&claim.key)
        .send()
        .await
        .expect("the delivered marker");
    assert_eq!(
        marker.content_length(),
        Some(0),
        "the value is gone once Kafka acknowledged it"
    );
    assert!(marker
        .metadata()
        .is_some_and(|m| m.contains_key(spillway_core::claim::DELIVERED_METADATA)));

    // The same message again (a delete that failed, a Kinesis batch resumed below it): known as
    // delivered, not dead-lettered as a lost value, and not produced twice.
    sqs.send_message()
        .queue_url(&url)
        .message_body(env.encode())
        .send()
        .await
        .expect("send");
    let again = claim_drain(&sqs, &url, &broker.bootstrap, &config).await;
    drain_queue(&sqs, &url, vec![again], Duration::from_secs(60)).await;
    let summary = consume(&broker.bootstrap, &topic, 2, Duration::from_secs(10)).await;
    assert_eq!((summary.records, summary.duplicates), (1, 0), "{summary:?}");
}

/// A poller on `url` and a drain built as the binary builds it from `config` (with AWS: the
/// claim bucket's reader).
async fn claim_drain(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    bootstrap: &str,
    config: &DrainConfig,
) -> (SqsPoller, Drain) {
    let sdk = spillway_tests::sdk().await;
    let drain = build_drain(&kafka(bootstrap), config, Some(&sdk))
        .await
        .expect("drain");
    let poller = SqsPoller::new(
        sqs.clone(),
        url.to_owned(),
        settings(10, Duration::from_secs(5)),
    )
    .await
    .expect("poller");
    (poller, drain)
}

/// Messages `sqs` receives from `url` in `for_how_long` (each hidden 60 s, never deleted): what a
/// second worker would take.
async fn taken_by_a_second_worker(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    for_how_long: Duration,
) -> usize {
    let until = Instant::now() + for_how_long;
    let mut taken = 0;
    while Instant::now() < until {
        taken += sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
            .len();
    }
    taken
}

/// Issue 17: a worker stopped with a batch received for later hands it back at once (visibility
/// 0). When that call fails, the batch is neither produced nor deleted and the worker still ends
/// at once: the batch stays hidden until its visibility timeout ends and then comes again, whole
/// — nothing lost, nothing produced twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_release_fails_at_the_stop_comes_again_after_its_visibility_timeout() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let plain = spillway_tests::sqs().await;
    let url = queue(&plain, false).await;
    let topic = spillway_tests::unique_name("release-fails");
    send(&plain, &url, &topic, 20, |i| Some(format!("k{i}"))).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (receives, changes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sqs = spillway_tests::sqs_failing({
        let (stop, receives, changes) = (stop.clone(), receives.clone(), changes.clone());
        move |operation| match operation {
            // The second receive is the batch for later: the stop comes while it is answered.
            "ReceiveMessage" => {
                if receives.fetch_add(1, Ordering::SeqCst) == 1 {
                    stop.cancel();
                }
                false
            }
            // Every visibility change fails: the release among them.
            "ChangeMessageVisibilityBatch" => {
                changes.fetch_add(1, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    })
    .await;
    let poll = PollSettings {
        batch_size: 10,
        batch_window: Duration::ZERO,
        visibility_timeout: Duration::from_secs(18),
        function_timeout: Duration::from_secs(3),
        deadline_margin: Duration::from_millis(500),
    };
    poll.check(BufferKind::Sqs)
        .expect("settings the poller accepts");
    let kafka = spillway_tests::kafka_bootstrap();
    let poller = Arc::new(
        SqsPoller::new(sqs, url.clone(), poll)
            .await
            .expect("poller"),
    );
    let worker = tokio::spawn(poller.run(
        Arc::new(drain(&kafka, BufferKind::Sqs, None).await),
        Arc::new(buffer_drain::poller::Aimd::new(1)),
        stop.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker ended after the stop")
        .expect("the worker");
    assert_eq!(
        receives.load(Ordering::SeqCst),
        2,
        "one batch produced, one for later"
    );
    assert!(changes.load(Ordering::SeqCst) >= 1, "the release was tried");
    // The batch for later is still hidden (its release failed), not deleted: it comes again.
    assert_eq!(spillway_tests::queue_counts(&plain, &url).await.1, 10);
    assert_eq!(spillway_tests::queue_depth(&plain, &url).await, 10);
    assert_eq!(
        taken_by_a_second_worker(&plain, &url, Duration::from_secs(2)).await,
        0,
        "hidden until its visibility timeout ends"
    );
    let first = consume(&kafka, &topic, 10, Duration::from_secs(30)).await;
    assert_eq!(first.unique_ids, 10, "the batch in hand: {first:?}");
    let again = (
        SqsPoller::new(plain.clone(), url.clone(), poll)
            .await
            .expect("poller"),
        drain(&kafka, BufferKind::Sqs, None).await,
    );
    drain_queue(&plain, &url, vec![again], Duration::from_secs(60)).await;
    let summary = consume(&kafka, &topic, 20, Duration::from_secs(30)).await;
    assert_eq!(summary.unique_ids, 20, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
}

/// Issue 17: the pipelined poller set for a long batching window (2 s, with the shortest
/// visibility timeout the settings check allows for it: 21 s) keeps both the batch it produces
/// and the one received for later hidden through a broker stall longer than the timeout, although the first
/// visibility extension of each fails: the next one, a third of the timeout later, lands in time.
/// A second worker polling the queue all along takes nothing, and nothing reaches Kafka twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_extension_in_a_pipelined_run_with_a_long_window_is_made_good_in_time() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let plain = spillway_tests::sqs().await;
    let broker = spillway_tests::PrivateBroker::start();
    let url = queue(&plain, false).await;
    let topic = spillway_tests::unique_name("extension-fails");
    // Armed after the warm-up batch: then the first extension of each of the two batches fails.
    let (armed, changes) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sqs = spillway_tests::sqs_failing({
        let (armed, changes) = (armed.clone(), changes.clone());
        move |operation| {
            operation == "ChangeMessageVisibilityBatch"
                && armed.load(Ordering::SeqCst)
                && changes.fetch_add(1, Ordering::SeqCst) < 2
        }
    })
    .await;
    let window = Duration::from_secs(2);
    let poll = PollSettings {
        batch_size: 10,
        batch_window: window,
        visibility_timeout: Duration::from_secs(21),
        function_timeout: Duration::from_secs(40),
        deadline_margin: Duration::from_millis(500),
    };
    poll.check(BufferKind::Sqs)
        .expect("settings the poller accepts");
    assert!(
        PollSettings {
            visibility_timeout: Duration::from_secs(20),
            ..poll
        }
        .check(BufferKind::Sqs)
        .is_err(),
        "21 s is the shortest timeout allowed with this window"
    );
    let poller = Arc::new(
        SqsPoller::new(sqs, url.clone(), poll)
            .await
            .expect("poller"),
    );
    let drain = Arc::new(drain(&broker.bootstrap, BufferKind::Sqs, None).await);
    // Connected to the broker first.
    send(&plain, &url, &topic, 1, |_| Some("warm".into())).await;
    poller.poll_once(&drain).await.expect("poll");
    armed.store(true, Ordering::SeqCst);

    broker.pause();
    send(&plain, &url, &topic, 20, |i| Some(format!("k{i}"))).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(poller.clone().run(
        drain,
        Arc::new(buffer_drain::poller::Aimd::new(1)),
        stop.clone(),
    ));
    // Both batches received (the second while the first is produced), then held through more
    // than the visibility timeout.
    let ends = Instant::now() + Duration::from_secs(15);
    while spillway_tests::queue_counts(&plain, &url).await.1 < 20 {
        assert!(Instant::now() < ends, "the worker received both batches");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        taken_by_a_second_worker(&plain, &url, Duration::from_secs(27)).await,
        0,
        "a held batch reappeared while held"
    );
    broker.resume();
    let summary = consume(&broker.bootstrap, &topic, 21, Duration::from_secs(90)).await;
    assert_eq!(summary.unique_ids, 21, "{summary:?}");
    assert_eq!(summary.duplicates, 0, "{summary:?}");
    let ends = Instant::now() + Duration::from_secs(30);
    while spillway_tests::queue_depth(&plain, &url).await > 0 && Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    tokio::time::timeout(poll.shutdown_bound(), worker)
        .await
        .expect("the worker ended within the bound")
        .expect("the worker");
    let extensions = poller.extensions();
    assert!(
        extensions.missed.load(Ordering::Relaxed) >= 20,
        "the first extension of both batches failed: {extensions:?}"
    );
    assert!(
        extensions.extended.load(Ordering::Relaxed) >= 20,
        "the next ones landed: {extensions:?}"
    );
    assert_eq!(spillway_tests::queue_depth(&plain, &url).await, 0);
}
