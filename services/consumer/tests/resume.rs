//! Resuming at a committed offset that falls in the middle of a record batch: every record from
//! that offset on is written once, and none before it.
//!
//! On tansu 0.6 a fetch that starts in the middle of a batch returns nothing of that batch, so a
//! consumer fetching exactly from its resume point would silently skip the rest of the batch;
//! `CONSUMER_RESUME_REWIND_RECORDS` (set by the test bed) re-reads from earlier and skips what
//! precedes the resume point. On Kafka the same test passes with or without it.

mod support;

use std::time::Duration;

use support::{metric, Bed, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumes_at_a_committed_offset_inside_a_batch() {
    let bed = Bed::new(1).await;
    // Sent together, so librdkafka puts them in one batch (offsets 0..=39).
    bed.produce_products(1..=40).await;

    // The group has already handled offsets 0..=14.
    support::commit_offsets(&bed.group, &bed.topic.name, &[(0, 15)]);

    let app = bed.spawn_app().await;
    bed.wait_for_ids(&(16..=40).collect(), LONG).await;
    // Records 1..=15 (offsets 0..=14) were fetched again but only skipped.
    testkit::wait_until(LONG, "the re-read records counted as skipped", || async {
        (metric(app.port, "consumer_records_skipped_total").await >= 15.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show by now
    app.stop().await;

    let lines = bed.log_lines();
    let mut ids: Vec<i32> = lines.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (16..=40).collect::<Vec<_>>(),
        "from the committed offset on, once"
    );
    let offsets: Vec<i64> = lines.iter().map(|l| l.offset).collect();
    assert_eq!(offsets, (15..40).collect::<Vec<_>>(), "in offset order");
}

/// A record batch longer than `CONSUMER_RESUME_REWIND_RECORDS` (a producer's catch-up after a
/// broker restart, a burst), and a group whose position lies in its middle. On tansu 0.6 the
/// consumer's fetch, starting 1000 records before the resume point but still inside the batch,
/// got nothing of it: on partition 0 the first record was the next batch's, and the rest of the
/// big batch was skipped; on partition 1, where the big batch is the last one, nothing came at
/// all. The consumer now looks further back until its fetch shows a record at or before the
/// resume point, writing nothing of the partition before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumes_inside_a_record_batch_longer_than_the_rewind() {
    common::telemetry::init(&common::config::Env::from_pairs([("RUST_LOG", "info")])).unwrap();
    let bed = Bed::new(2).await;
    // Partition 0: a batch of 3000 records (offsets 0..3000), then one of 10 (3000..3010).
    bed.produce_one_batch(0, 1..=3000).await;
    bed.produce_one_batch(0, 3001..=3010).await;
    // Partition 1: a batch of 3000 records, the partition's last.
    bed.produce_one_batch(1, 5001..=8000).await;

    // The group has already handled offsets 0..1500 of both.
    support::commit_offsets(&bed.group, &bed.topic.name, &[(0, 1500), (1, 1500)]);

    let app = bed.spawn_app().await;
    let expected: std::collections::BTreeSet<i32> = (1501..=3010).chain(6501..=8000).collect();
    bed.wait_for_ids(&expected, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show by now
    let lookbacks = metric(app.port, "consumer_resume_lookbacks_total").await;
    app.stop().await;

    let lines = bed.log_lines();
    for (partition, end) in [(0, 3010), (1, 3000)] {
        let offsets: Vec<i64> = lines
            .iter()
            .filter(|l| l.partition == partition)
            .map(|l| l.offset)
            .collect();
        assert_eq!(
            offsets,
            (1500..end).collect::<Vec<_>>(),
            "partition {partition}: from the committed offset on, once, in order"
        );
    }
    assert_eq!(lines.len(), expected.len(), "nothing else");
    assert!(lookbacks >= 2.0, "each partition looked back: {lookbacks}");
}

/// The topic is deleted and created again under the same name between two runs of a consumer
/// with the same logs directory (as `docker compose down && up` does to a broker without a
/// volume): its offsets start again at 0, below the log's positions. The consumer notices that
/// the checkpoint was written for another topic, says so, and reads the new topic from its
/// beginning instead of skipping its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_created_again_under_the_same_name_is_read_from_its_beginning() {
    let bed = Bed::new(2).await;
    bed.produce_products(1..=100).await;
    let app = bed.spawn_app().await;
    bed.wait_for_ids(&(1..=100).collect(), LONG).await;
    app.stop().await;

    bed.recreate_topic().await;
    // Fewer records than before: every new offset is below the old positions.
    bed.produce_products(101..=130).await;
    let port = support::free_port();
    let mut consumer = bed.spawn_binary("after-recreate", port);
    bed.wait_for_ids(&(101..=130).collect(), Duration::from_secs(90))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show by now
    consumer.0.kill().unwrap();
    consumer.0.wait().unwrap();

    let lines = bed.log_lines();
    let counts = support::count_by_id(&lines);
    assert_eq!(
        counts.len(),
        130,
        "the old topic's lines stay, the new one's follow"
    );
    assert!(counts.values().all(|&n| n == 1), "each record once");
    support::assert_warned_for_each_partition(
        &bed.logs_dir().join("after-recreate.stderr"),
        "written for another topic of this name",
        2,
        &["checkpoint_topic_id=", " topic_id="],
    );
}
