//! The producer against the real test bed: MariaDB, tansu and the dev schema registry.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::kafka::partition_for_key;
use producer::source::mysql::BATCHES_PER_QUERY;
use producer::watermark::Watermark;
use producer::Application;
use rdkafka::Message;
use support::{
    count_versions, insert_products, seed_products, table_versions, RunningProducer, TestBed,
    PARTITIONS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_seed_products_arrive_decodable_keyed_and_partitioned_like_the_java_client() {
    let bed = TestBed::new().await;
    let seeds = seed_products();
    assert_eq!(seeds.len(), 50);
    let mut conn = bed.connect().await;
    for (id, name, category, price, last_updated) in &seeds {
        sqlx::query(
            "INSERT INTO product (id, name, category, price, last_updated) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(name)
        .bind(category)
        .bind(price)
        .bind(last_updated)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(50).await;
    let received = bed.read(50).await;

    assert_eq!(received.len(), 50, "each seed product exactly once");
    let by_id: HashMap<i32, _> = received.iter().map(|r| (r.id(), r)).collect();
    assert_eq!(by_id.len(), 50);
    for (id, name, category, price, last_updated) in &seeds {
        let r = by_id[id];
        assert_eq!(r.key, id.to_string(), "key is the id as text");
        assert_eq!(
            r.partition,
            partition_for_key(r.key.as_bytes(), PARTITIONS),
            "murmur2 partition of key {}",
            r.key
        );
        assert_eq!(&r.product.name, name);
        assert_eq!(r.product.category.as_ref(), Some(category));
        assert_eq!(r.product.price, *price);
        assert_eq!(
            &r.product.last_updated, last_updated,
            "the prototype's text timestamp"
        );
    }
    let partitions: HashSet<i32> = received.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 5,
        "keys spread over the partitions: {partitions:?}"
    );

    // HTTP surface.
    let (status, _) = producer.get("/health").await;
    assert_eq!(status, 200);
    let body = producer.wait_ready_status(200).await;
    assert!(
        body.contains("\"database\"") && body.contains("\"kafka\""),
        "{body}"
    );
    assert!(body.contains("\"capture_horizon\""), "{body}");
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains("producer_rows_captured_total 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_records_produced_total 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_delivery_errors_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_poll_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_batch_size_rows_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_watermark_lag_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("schema_registry_requests_total{operation=\"register\",outcome=\"ok\"} 1"),
        "{metrics}"
    );

    producer.stop().await.unwrap();
    let watermark = Watermark::load(&bed.watermark_path())
        .unwrap()
        .expect("watermark written");
    let last = seeds
        .iter()
        .max_by(|a, b| a.4.cmp(&b.4).then(a.0.cmp(&b.0)))
        .unwrap();
    let position = watermark.position.expect("a position");
    assert_eq!(position.id, Some(last.0.into()));
    assert_eq!(
        position
            .last_updated
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        last.4
    );
    assert_eq!(watermark.topic.as_deref(), Some(bed.topic.name.as_str()));
    assert_eq!(watermark.next_offsets.len(), PARTITIONS as usize);
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_sharing_one_timestamp_across_batch_and_query_boundaries_are_each_produced_once() {
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    // Batches of 20 rows, and more rows than two queries read: both the batches cut from one
    // query's rows and the next query's start fall inside the one timestamp.
    let batch_size = 20;
    let rows = 2 * BATCHES_PER_QUERY as i32 * batch_size + batch_size / 2;
    // One statement: every row gets the same CURRENT_TIMESTAMP(6).
    insert_products(&mut conn, 1, rows, rows).await;
    let (distinct,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT last_updated) FROM product")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(distinct, 1, "the test needs all rows on one timestamp");

    let producer =
        RunningProducer::start(bed.config(&[("BATCH_SIZE", &batch_size.to_string())])).await;
    producer.wait_produced(rows as u64).await;
    let received = bed.read(rows as usize).await;
    producer.stop().await.unwrap();

    let counts = count_versions(&received);
    let expected: HashSet<(i32, i64)> = table_versions(&mut conn).await.into_iter().collect();
    assert_eq!(expected.len(), rows as usize);
    assert_eq!(
        counts.keys().copied().collect::<HashSet<_>>(),
        expected,
        "every row arrived"
    );
    assert!(counts.values().all(|&n| n == 1), "no row twice");
    assert_eq!(received.len(), rows as usize);
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_a_transaction_held_open_for_seconds_still_arrives() {
    let bed = TestBed::new().await;
    let producer = RunningProducer::start(bed.config(&[("CAPTURE_DELAY_MS", "200")])).await;
    producer.wait_ready_status(200).await;

    // A transaction writes row 1 (stamped now) and stays open.
    let mut open_conn = bed.connect().await;
    let mut open = sqlx::Connection::begin(&mut open_conn).await.unwrap();
    sqlx::query(
        "INSERT INTO product (id, name, category, price) VALUES (1, 'Held', 'Cat_1', 1.00)",
    )
    .execute(&mut *open)
    .await
    .unwrap();

    // Later rows commit one by one while it stays open: with a window alone (200 ms) they would
    // move the watermark past row 1's timestamp.
    let mut conn = bed.connect().await;
    for id in 2..=21 {
        insert_products(&mut conn, id, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Let several reads happen after the last row left the 200 ms window.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reads_before = producer.metrics.poll_duration.get_sample_count();
    let metrics = producer.metrics.clone();
    testkit::wait_until(Duration::from_secs(10), "three more reads", || {
        let reads = metrics.poll_duration.get_sample_count();
        async move { (reads >= reads_before + 3).then_some(()) }
    })
    .await;
    assert_eq!(
        producer.metrics.rows_captured.get(),
        0,
        "rows stamped after the open transaction's start wait for it"
    );

    open.commit().await.unwrap();
    producer.wait_produced(21).await;
    let received = bed.read(21).await;
    producer.stop().await.unwrap();

    let counts = count_versions(&received);
    let expected: HashSet<(i32, i64)> = table_versions(&mut conn).await.into_iter().collect();
    assert_eq!(counts.keys().copied().collect::<HashSet<_>>(), expected);
    assert!(counts.values().all(|&n| n == 1));
    assert!(received
        .iter()
        .any(|r| r.product.id == 1 && r.product.name == "Held"));
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_watermark_without_sending_anything_again() {
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 1, 100, 10).await;

    let first = RunningProducer::start(bed.config(&[("BATCH_SIZE", "30")])).await;
    first.wait_produced(100).await;
    first.stop().await.unwrap();
    let watermark = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    assert!(watermark.position.is_some());

    // While it is stopped: 50 new rows and 10 updates.
    insert_products(&mut conn, 101, 50, 10).await;
    sqlx::query("UPDATE product SET price = price + 1 WHERE id <= 10")
        .execute(&mut conn)
        .await
        .unwrap();

    let second = RunningProducer::start(bed.config(&[("BATCH_SIZE", "30")])).await;
    second.wait_produced(60).await;
    let received = bed.read(160).await;
    let captured = second.metrics.rows_captured.get();
    second.stop().await.unwrap();

    assert_eq!(
        captured, 60,
        "the second run read only the rows changed after the watermark"
    );
    let counts = count_versions(&received);
    assert_eq!(received.len(), 160, "100 + 50 new + 10 updated");
    assert!(counts.values().all(|&n| n == 1), "nothing sent twice");
    for (id, micros) in table_versions(&mut conn).await {
        assert_eq!(
            counts.get(&(id, micros)),
            Some(&1),
            "current version of row {id}"
        );
    }
    // Per product, versions arrive in order (same key, same partition, increasing offsets).
    let mut by_id: HashMap<i32, Vec<&support::Received>> = HashMap::new();
    for r in &received {
        by_id.entry(r.id()).or_default().push(r);
    }
    for versions in by_id.values().filter(|v| v.len() > 1) {
        let mut v = versions.clone();
        v.sort_by_key(|r| r.offset);
        assert!(v.windows(2).all(|w| w[0].partition == w[1].partition
            && w[0].product.last_updated_micros < w[1].product.last_updated_micros));
    }
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_be_encoded_are_rejected_counted_and_dead_lettered_while_the_rest_flows() {
    let bed = TestBed::new().await;
    let dead_letters = testkit::create_topic(1).await;
    let mut conn = bed.connect().await;
    sqlx::query("ALTER TABLE product MODIFY name VARCHAR(255) NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    insert_products(&mut conn, 1, 4, 4).await;
    sqlx::query("INSERT INTO product (id, name, category, price) VALUES (5, NULL, 'Cat_5', 9.99)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO product (id, name, category, price) VALUES (6, 'Refund', 'Cat_6', -5.00)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    insert_products(&mut conn, 7, 4, 4).await;

    let producer =
        RunningProducer::start(bed.config(&[("DEAD_LETTER_TOPIC", dead_letters.name.as_str())]))
            .await;
    producer.wait_produced(8).await;
    let received = bed.read(8).await;
    let ids: HashSet<i32> = received.iter().map(|r| r.id()).collect();
    assert_eq!(ids, HashSet::from([1, 2, 3, 4, 7, 8, 9, 10]));

    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains("producer_rows_rejected_total{reason=\"null_name\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("producer_rows_rejected_total{reason=\"price_out_of_range\"} 1"),
        "{metrics}"
    );

    let letters = testkit::read_topic(&dead_letters, 2, Duration::from_secs(30)).await;
    let mut reasons: Vec<(String, i64)> = letters
        .iter()
        .map(|m| {
            let json: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            (
                json["reason"].as_str().unwrap().to_owned(),
                json["row"]["id"].as_i64().unwrap(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("null_name".to_owned(), 5),
            ("price_out_of_range".to_owned(), 6)
        ]
    );

    // Capture went past the rejected rows: the watermark covers row 10.
    producer.stop().await.unwrap();
    let watermark = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    assert_eq!(watermark.position.unwrap().id, Some(10.into()));
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_watermark_file_is_a_clear_startup_error() {
    let bed = TestBed::new().await;
    let path = bed.watermark_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"last_read_timestamp\": \"2023-10-13 10:0").unwrap();

    let err = match Application::build(bed.config(&[])).await {
        Ok(_) => panic!("a corrupt watermark must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"last_read_timestamp\": \"2023-10-13 10:0",
        "the file is left alone"
    );
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prototype_watermark_file_resumes_after_its_timestamp() {
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    for (id, ts) in [
        (1, "2023-10-13 10:00:00"),
        (2, "2023-10-13 10:00:05"),
        (3, "2023-10-13 10:00:05"),
        (4, "2023-10-13 10:00:06"),
    ] {
        sqlx::query("INSERT INTO product (id, name, category, price, last_updated) VALUES (?, 'p', NULL, 1, ?)")
            .bind(id)
            .bind(ts)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let path = bed.watermark_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, r#"{"last_read_timestamp": "2023-10-13 10:00:05"}"#).unwrap();

    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(1).await;
    let received = bed.read(1).await;
    producer.stop().await.unwrap();
    let ids: Vec<i32> = received.iter().map(|r| r.id()).collect();
    assert_eq!(ids, vec![4], "rows after the prototype's timestamp only");
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_process_privilege_the_horizon_falls_back_to_the_window() {
    let bed = TestBed::new().await;
    let user = testkit::unique_name("ps_noproc");
    let mut conn = bed.connect().await;
    sqlx::query(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'secret-pw'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "GRANT SELECT ON `{}`.* TO '{user}'@'%'",
        bed.db.name
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    insert_products(&mut conn, 1, 20, 5).await;

    let server = testkit::mysql_server_url();
    let host = server.rsplit('@').next().unwrap().trim_end_matches('/');
    let url = format!("mysql://{user}:secret-pw@{host}/{}", bed.db.name);
    let producer = RunningProducer::start(bed.config(&[("DATABASE_URL", url.as_str())])).await;
    producer.wait_produced(20).await;
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains("producer_horizon_sees_transactions 0"),
        "{metrics}"
    );
    // Not silent: not ready, saying why and how to fix it, and a gauge naming the reason.
    let (status, body) = producer.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let check = &ready["checks"]["capture_horizon"];
    assert_eq!(check["ok"], false, "{body}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("missing_privilege") && detail.contains("GRANT PROCESS"),
        "{detail}"
    );
    assert_eq!(ready["checks"]["database"]["ok"], true, "{body}");
    assert!(
        metrics.contains("producer_horizon_degraded{reason=\"missing_privilege\"} 1"),
        "{metrics}"
    );
    producer.stop().await.unwrap();
    let received = bed.read(20).await;
    assert_eq!(count_versions(&received).len(), 20);

    sqlx::query(&format!("DROP USER '{user}'@'%'"))
        .execute(&mut conn)
        .await
        .unwrap();
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_turns_readiness_off_and_capture_catches_up_afterwards() {
    let bed = TestBed::new().await;
    let server = testkit::mysql_server_url();
    let host = server
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let proxy = support::Proxy::start(host.clone()).await;
    let via_proxy = bed
        .db
        .url
        .replace(&host, &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(via_proxy, bed.db.url);

    let mut conn = bed.connect().await;
    insert_products(&mut conn, 1, 30, 10).await;
    let producer =
        RunningProducer::start(bed.config(&[("DATABASE_URL", via_proxy.as_str())])).await;
    producer.wait_produced(30).await;
    producer.wait_ready_status(200).await;

    proxy.cut();
    let body = producer.wait_ready_status(503).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["database"]["ok"], false, "{body}");
    assert_eq!(ready["checks"]["kafka"]["ok"], true, "{body}");
    insert_products(&mut conn, 31, 30, 10).await;
    let (status, _) = producer.get("/health").await;
    assert_eq!(status, 200, "alive while the database is away");

    proxy.restore();
    producer.wait_ready_status(200).await;
    producer.wait_produced(60).await;
    let received = bed.read(60).await;
    producer.stop().await.unwrap();

    let counts = count_versions(&received);
    assert_eq!(counts.len(), 60);
    assert!(counts.values().all(|&n| n == 1));
    bed.drop_database().await;
}
