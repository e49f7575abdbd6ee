//! After a failure nothing more is written or committed: a batch whose write failed once (a full
//! disk, an fsync error, an output topic that timed out) is read again after a restart, never
//! skipped by a later batch; a poison pill the dead-letter topic did not take is not forgotten.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::config::TopicConfig;
use consumer::decode::{Poison, PoisonReason};
use consumer::dlq::DeadLetterQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{committed_offsets, first_offsets, Bed, FailingSink, TestApp, LONG};

/// Nothing of the failed batch's partitions at or after its first offset is in `positions`
/// (the (partition, offset) pairs that were written or committed).
fn assert_nothing_past(
    failed_from: &BTreeMap<i32, i64>,
    positions: impl IntoIterator<Item = (i32, i64)>,
    what: &str,
) {
    let past: Vec<(i32, i64)> = positions
        .into_iter()
        .filter(|(p, o)| failed_from.get(p).is_some_and(|first| o >= first))
        .collect();
    assert!(
        past.is_empty(),
        "{what} past the failed batch (which began at {failed_from:?}): {} records, e.g. {:?}",
        past.len(),
        &past[..past.len().min(5)]
    );
}

/// Starts a consumer whose `fail_at`-th write fails, waits until it stops, and checks that
/// nothing was committed past the failed batch. Returns the failed batch's (partition, offset)
/// pairs.
async fn run_until_the_write_fails(
    bed: &Bed,
    extra: &[(&str, &str)],
    fail_at: usize,
) -> Vec<(i32, i64)> {
    let failed = Arc::new(Mutex::new(Vec::new()));
    let app = TestApp::spawn_wrapping_sink(
        bed.config_with(extra),
        FailingSink::wrap(fail_at, Arc::clone(&failed)),
    )
    .await;
    let error = app
        .exited(LONG)
        .await
        .expect_err("a failed write stops the consumer")
        .to_string();
    assert!(error.contains("injected once"), "{error}");
    let failed = failed.lock().unwrap().clone();
    assert!(!failed.is_empty(), "the failing write held records");
    let committed = committed_offsets(&bed.group, &bed.topic.name, bed.topic.partitions).await;
    // A committed offset is the next one to read: committing the failed batch's first offset is
    // right, anything above skips it.
    let failed_from = first_offsets(&failed);
    assert_nothing_past(
        &failed_from.iter().map(|(&p, &o)| (p, o + 1)).collect(),
        committed.clone(),
        "offsets committed",
    );
    println!(
        "failed batch: {} records from {failed_from:?}; committed: {committed:?}",
        failed.len()
    );
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_write_that_fails_once_is_written_once_after_the_restart() {
    const RECORDS: i32 = 20_000;
    let bed = Bed::new(3).await;
    bed.produce_products(1..=RECORDS).await;

    let failed = run_until_the_write_fails(&bed, &[], 2).await;
    let failed_from = first_offsets(&failed);
    let logged = bed.log_lines();
    assert!(!logged.is_empty(), "the first batch was written");
    assert_nothing_past(
        &failed_from,
        logged.iter().map(|l| (l.partition, l.offset)),
        "log lines",
    );

    // Repaired (the sink works again): the restarted consumer writes the failed batch and the
    // rest, each record once.
    let app = bed.spawn_app().await;
    bed.wait_for_ids(&(1..=RECORDS).collect(), LONG).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show by now
    app.stop().await;
    let lines = bed.log_lines();
    let counts = support::count_by_id(&lines);
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    assert_eq!(counts.len(), usize::try_from(RECORDS).unwrap());
    let positions: BTreeSet<(i32, i64)> = lines.iter().map(|l| (l.partition, l.offset)).collect();
    for position in &failed {
        assert!(
            positions.contains(position),
            "{position:?} of the failed batch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_topic_write_that_fails_once_is_produced_after_the_restart() {
    const RECORDS: i32 = 10_000;
    let bed = Bed::new(3).await;
    let output = TopicConfig {
        name: testkit::unique_name("ps_processed"),
        partitions: 3,
    };
    let settings = [
        ("CONSUMER_SINK", "topic"),
        ("OUTPUT_TOPIC", output.name.as_str()),
    ];
    bed.produce_products(1..=RECORDS).await;

    let failed = run_until_the_write_fails(&bed, &settings, 2).await;
    let failed_from = first_offsets(&failed);
    let source = |message: &rdkafka::message::OwnedMessage| -> (i32, i64) {
        let header = |key: &str| -> String {
            let headers = message.headers().expect("source headers");
            let h = headers.iter().find(|h| h.key == key).expect(key);
            String::from_utf8(h.value.unwrap().to_vec()).unwrap()
        };
        (
            header("source.partition").parse().unwrap(),
            header("source.offset").parse().unwrap(),
        )
    };
    let produced = testkit::read_topic(&output, 1, Duration::from_secs(20)).await;
    assert!(!produced.is_empty(), "the first batch was produced");
    assert_nothing_past(
        &failed_from,
        produced.iter().map(source),
        "records produced",
    );

    let app = bed.spawn_app_with(&settings).await;
    let all = testkit::read_topic(&output, usize::try_from(RECORDS).unwrap(), LONG).await;
    app.stop().await;
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for message in &all {
        *counts.entry(source(message)).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        usize::try_from(RECORDS).unwrap(),
        "every record"
    );
    // At least once: the first batch may come again if its commit did not reach the broker
    // before the failure; from the failed batch on, everything exactly once.
    let twice: Vec<_> = counts
        .iter()
        .filter(|(&(p, o), &n)| n > 1 && failed_from.get(&p).is_some_and(|&first| o >= first))
        .collect();
    assert!(twice.is_empty(), "produced twice: {twice:?}");
}

/// A poison pill the dead-letter topic did not acknowledge (here: a topic that does not exist,
/// so the delivery times out) fails every later wait too, not just the one that waited for it:
/// the batch after it must not store offsets past the pill. (Through the whole consumer this
/// cannot be staged on tansu 0.6: the consumer creates its dead-letter topic at start, and a
/// producer that knew a topic keeps producing to it after it was deleted, which tansu accepts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_delivery_that_failed_fails_every_later_wait() {
    let bed = Bed::new(1).await;
    bed.produce_raw("pill", b"not the wire format").await;
    let missing = testkit::unique_name("ps_missing_dlq");
    let topic = bed.topic.name.clone();
    let runtime = tokio::runtime::Handle::current();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = testkit::kafka()
            .client_config()
            .set("group.id", testkit::unique_name("ps_reader"))
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let message = loop {
            if let Some(polled) = consumer.poll(Duration::from_millis(100)) {
                break polled.expect("the pill");
            }
        };
        let mut dlq = DeadLetterQueue::new(&testkit::kafka(), &missing, runtime).unwrap();
        dlq.send(&message, &Poison::new(PoisonReason::WireFormat, "test"))
            .unwrap();
        (dlq.wait_delivered(), dlq.wait_delivered())
    })
    .await
    .unwrap();
    let first = first.expect_err("the missing topic does not acknowledge");
    assert!(first.to_string().contains("ps_missing_dlq"), "{first}");
    let second = second.expect_err("the failure is not forgotten");
    assert_eq!(second.to_string(), first.to_string());
}
