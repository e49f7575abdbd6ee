//! A broker outage: the producer keeps running, `/ready` turns false, and once the broker is
//! reachable again everything captured meanwhile arrives. Uses a private tansu behind a TCP
//! proxy (cut and restored by the test), so the shared test broker is not disturbed.

mod support;

use std::collections::HashSet;

use producer::watermark::Watermark;
use support::{
    count_versions, insert_products, table_versions, PrivateBroker, RunningProducer, TestBed,
    PARTITIONS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_turns_readiness_off_loses_nothing_and_catches_up() {
    let bed = TestBed::new().await;
    let broker = PrivateBroker::start().await;
    // The producer creates the topic itself here (TOPIC_REPLICATION_FACTOR default: -1).
    let topic = testkit::unique_name("ps_outage");
    let bootstrap = broker.bootstrap();
    let producer = RunningProducer::start(bed.config(&[
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("TOPIC", topic.as_str()),
        ("BATCH_SIZE", "20"),
    ]))
    .await;

    let mut conn = bed.connect().await;
    insert_products(&mut conn, 1, 40, 10).await;
    producer.wait_produced(40).await;
    producer.wait_ready_status(200).await;
    let before = Watermark::load(&bed.watermark_path()).unwrap().unwrap();

    broker.proxy.cut();
    let body = producer.wait_ready_status(503).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["kafka"]["ok"], false, "{body}");
    assert_eq!(ready["checks"]["database"]["ok"], true, "{body}");

    // Changes keep coming while the broker is away.
    insert_products(&mut conn, 41, 60, 10).await;
    sqlx::query("UPDATE product SET price = price + 1 WHERE id <= 5")
        .execute(&mut conn)
        .await
        .unwrap();
    let metrics = producer.metrics.clone();
    testkit::wait_until(
        std::time::Duration::from_secs(30),
        "the new rows to be captured",
        || {
            let captured = metrics.rows_captured.get();
            async move { (captured >= 40 + 20).then_some(()) }
        },
    )
    .await;
    let (status, _) = producer.get("/health").await;
    assert_eq!(status, 200, "alive while the broker is away");
    let during = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    assert_eq!(
        during.position, before.position,
        "the watermark waits for acknowledgements"
    );

    broker.proxy.restore();
    producer.wait_ready_status(200).await;
    producer.wait_produced(105).await;
    producer.stop().await.unwrap();

    let expected: HashSet<(i32, i64)> = table_versions(&mut conn).await.into_iter().collect();
    let messages = broker.read(&topic, PARTITIONS, 105).await;
    let mut received = Vec::new();
    for m in &messages {
        received.push(bed.decode(m).await);
    }
    let counts = count_versions(&received);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "broker outage: {} records, {} versions, {duplicates} duplicates",
        received.len(),
        counts.len()
    );
    assert!(
        expected.iter().all(|v| counts.contains_key(v)),
        "every current row version arrived"
    );
    assert_eq!(counts.len(), 105, "100 rows and 5 updates");
    assert_eq!(duplicates, 0);
    bed.drop_database().await;
}

/// A restart while the topic cannot be read (its partitions have no leader: the broker answers
/// metadata and takes records, but fails every fetch). The producer used to take a partition
/// that stayed silent for 5 s as read to its end, or give the read-back up after five attempts,
/// and then produce again what the topic already held. Now it waits for the read-back, not ready
/// meanwhile, and produces nothing before it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_topic_cannot_be_read_waits_for_the_read_back_and_duplicates_nothing() {
    let bed = TestBed::new().await;
    let broker = PrivateBroker::start().await;
    let topic = testkit::unique_name("ps_restart_outage");
    let bootstrap = broker.bootstrap();
    let config = || {
        bed.config(&[
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("TOPIC", topic.as_str()),
            ("BATCH_SIZE", "10"),
        ])
    };
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 1, 30, 10).await;
    let first = RunningProducer::start(config()).await;
    first.wait_produced(30).await;
    first.stop().await.unwrap();

    // A kill can leave the watermark file behind what reached the topic (it is written after the
    // acknowledgements): here all the way back to the beginning.
    let path = bed.watermark_path();
    let mut watermark = Watermark::load(&path).unwrap().unwrap();
    watermark.position = None;
    watermark.next_offsets = (0..PARTITIONS).map(|p| (p, 0)).collect();
    watermark.store(&path).unwrap();

    broker.proxy.block_reads();
    let second = RunningProducer::start(config()).await;
    let (health, _) = second.get("/health").await;
    assert_eq!(health, 200);
    // Longer than the old give-up: five attempts 0.5 to 4 s apart, or 5 s of silence.
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    let (status, body) = second.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["capture"]["ok"], false, "{body}");
    assert!(
        ready["checks"]["capture"]["detail"]
            .as_str()
            .unwrap()
            .contains("read-back"),
        "{body}"
    );
    assert_eq!(
        second.metrics.rows_captured.get(),
        0,
        "nothing read before the read-back"
    );
    assert_eq!(second.metrics.records_produced.get(), 0);

    broker.proxy.allow_reads();
    second.wait_ready_status(200).await;
    insert_products(&mut conn, 31, 5, 5).await;
    second.wait_produced(5).await;
    let metrics = second.metrics.clone();
    second.stop().await.unwrap();
    assert_eq!(metrics.records_produced.get(), 5, "only the new rows");
    assert_eq!(metrics.rows_already_in_topic.get(), 30);

    let messages = broker.read(&topic, PARTITIONS, 35).await;
    let mut received = Vec::new();
    for m in &messages {
        received.push(bed.decode(m).await);
    }
    let counts = count_versions(&received);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert_eq!(counts.len(), 35, "every row version arrived");
    assert_eq!(duplicates, 0, "no row version twice");
    bed.drop_database().await;
}
