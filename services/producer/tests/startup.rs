//! Start order: started together with everything else (no health conditions), the producer used
//! to exit at once when its table did not exist yet. Now it waits for the database, the table and
//! the schema registry in turn, serving `/health` 200 and `/ready` 503 naming what it waits for,
//! and captures once they are there.

mod support;

use std::time::Duration;

use common::registry::{RegistryClient, RegistryConfig};
use sqlx::Connection;
use support::{
    config_from, count_versions, insert_products, read_decoded, table_versions, test_env,
    RunningProducer, PARTITIONS,
};
use testkit::{mysql_server_url, unique_name, TestDatabase};

/// Waits until `/ready` answers 503 with `expected` in its body, and checks the producer is
/// alive meanwhile.
async fn wait_waiting_for(producer: &RunningProducer, expected: &str) {
    testkit::wait_until(
        Duration::from_secs(60),
        &format!("/ready 503 naming {expected}"),
        || async {
            let (status, body) = producer.get("/ready").await;
            (status == 503 && body.contains(expected)).then_some(())
        },
    )
    .await;
    let (health, _) = producer.get("/health").await;
    assert_eq!(health, 200);
    assert!(!producer.handle.is_finished(), "still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_started_before_its_database_table_and_registry_waits_then_captures() {
    common::telemetry::init(&common::config::Env::from_pairs([("RUST_LOG", "info")])).unwrap();
    // Nothing exists yet: not the database (the product-updater creates it), not its table, and
    // nothing listens where the registry will be.
    let name = unique_name("ps_test");
    let db = TestDatabase {
        url: format!("{}/{name}", mysql_server_url().trim_end_matches('/')),
        name,
    };
    let topic = testkit::create_topic(PARTITIONS).await;
    let registry_port = testkit::free_port();
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let dir = tempfile::tempdir().unwrap();
    let watermark = dir.path().join("time_track/last_read_timestamp.json");
    let config = config_from(test_env(&db.url, &topic, &registry_url, &watermark), &[]);
    let producer = RunningProducer::start(config).await;

    wait_waiting_for(&producer, "Unknown database").await;
    let mut server = sqlx::MySqlConnection::connect(&mysql_server_url())
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE `{}`", db.name))
        .execute(&mut server)
        .await
        .unwrap();

    wait_waiting_for(&producer, "table product (SOURCE_TABLE) does not exist").await;
    let mut conn = db.connect().await;
    sqlx::migrate!("../../schemas/migrations/mysql")
        .run(&mut conn)
        .await
        .unwrap();
    insert_products(&mut conn, 1, 5, 5).await;

    wait_waiting_for(&producer, "the schema registry at").await;
    assert_eq!(producer.metrics.records_produced.get(), 0);
    testkit::spawn_registry_on(registry_port).await;

    producer.wait_produced(5).await;
    producer.wait_ready_status(200).await;
    producer.stop().await.unwrap();
    db.drop_database().await;
}

/// The producer forces the capture index it finds at start-up. Started after the product table's
/// first migration but before the second, which replaces 0001's `(last_updated, id)` index with
/// the covering one (as compose may: the producer waits for the table, not for the migrations),
/// every capture query failed afterwards (`1176: Key 'idx_product_last_updated_id' doesn't
/// exist`) until a restart. Now it looks the index up again and goes on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_started_between_the_migrations_goes_on_after_its_index_is_dropped() {
    common::telemetry::init(&common::config::Env::from_pairs([("RUST_LOG", "info")])).unwrap();
    let db = TestDatabase::create().await;
    let mut conn = db.connect().await;
    sqlx::query("SET time_zone = '+00:00'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(include_str!(
        "../../../schemas/migrations/mysql/0001_create_product.sql"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    insert_products(&mut conn, 1, 20, 5).await;
    let topic = testkit::create_topic(PARTITIONS).await;
    let registry_url = testkit::spawn_registry().await;
    let registry = RegistryClient::new(RegistryConfig::new(&registry_url));
    let dir = tempfile::tempdir().unwrap();
    let watermark = dir.path().join("time_track/last_read_timestamp.json");
    let config = config_from(test_env(&db.url, &topic, &registry_url, &watermark), &[]);
    let producer = RunningProducer::start(config).await;
    producer.wait_produced(20).await;

    sqlx::raw_sql(include_str!(
        "../../../schemas/migrations/mysql/0002_capture_covering_index.sql"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS \
          WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'product'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    indexes.sort();
    assert_eq!(
        indexes,
        [("PRIMARY".to_owned(),), ("idx_product_capture".to_owned(),)],
        "0002 replaced the index the producer forces"
    );
    // Changes after the migration, in two reads: 20 seeded, 10 updated, 10 inserted are 40
    // versions, each to arrive once.
    sqlx::query("UPDATE product SET price = price + 1 WHERE id <= 10")
        .execute(&mut conn)
        .await
        .unwrap();
    producer.wait_produced(30).await;
    insert_products(&mut conn, 21, 10, 5).await;
    producer.wait_produced(40).await;

    let table = table_versions(&mut conn).await;
    let received = read_decoded(&topic, &registry, 40).await;
    let counts = count_versions(&received);
    let missing: Vec<_> = table.iter().filter(|v| !counts.contains_key(v)).collect();
    assert!(missing.is_empty(), "never captured: {missing:?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "captured more than once: {twice:?}");
    assert_eq!(received.len(), 40, "every version once");
    assert_eq!(producer.metrics.records_produced.get(), 40);
    producer.wait_ready_status(200).await;
    producer.stop().await.unwrap();
    db.drop_database().await;
}
