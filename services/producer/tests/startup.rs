//! Start order: started together with everything else (no health conditions), the producer used
//! to exit at once when its table did not exist yet. Now it waits for the database, the table and
//! the schema registry in turn, serving `/health` 200 and `/ready` 503 naming what it waits for,
//! and captures once they are there.

mod support;

use std::time::Duration;

use sqlx::Connection;
use support::{config_from, insert_products, test_env, RunningProducer, PARTITIONS};
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
