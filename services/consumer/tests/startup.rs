//! Start order: a consumer started before its topic exists, or before the schema registry
//! answers, waits (with `/health` 200 and `/ready` 503 naming what it waits for) instead of
//! subscribing to a topic that does not exist, and consumes once the dependency is there.

mod support;

use std::time::Duration;

use common::avro::PRODUCT_SCHEMA_JSON;
use common::config::TopicConfig;
use common::registry::{RegistryClient, RegistryConfig};
use support::{Bed, TestApp, LONG};

/// `GET path` on the consumer: status and body.
async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Waits while the consumer keeps `/ready` at 503 with `expected` in its `startup` check, then
/// checks it stays so for a few seconds more (longer than its statistics interval, after which
/// a consumer that only watched the broker used to call itself ready).
async fn assert_waiting_for(port: u16, expected: &str) {
    testkit::wait_until(
        Duration::from_secs(30),
        &format!("/ready 503 naming {expected}"),
        || async {
            let (status, body) = get(port, "/ready").await;
            (status == 503 && body.contains(expected)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, body) = get(port, "/ready").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["checks"]["startup"]["ok"], false, "{body}");
    assert!(
        ready["checks"]["startup"]["detail"]
            .as_str()
            .unwrap()
            .contains(expected),
        "{body}"
    );
    let (health, _) = get(port, "/health").await;
    assert_eq!(health, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_started_before_its_topic_exists_waits_then_consumes() {
    let bed = Bed::new(2).await;
    let later = TopicConfig {
        name: testkit::unique_name("ps_later"),
        partitions: 2,
    };
    let app = TestApp::spawn(bed.config_with(&[("TOPIC", later.name.as_str())])).await;
    assert_waiting_for(
        app.port,
        &format!("topic {} does not exist yet", later.name),
    )
    .await;

    // The producer creates the topic and registers its schema.
    common::kafka::ensure_topic(&testkit::kafka(), &later, 1)
        .await
        .unwrap();
    let schema_id = RegistryClient::new(RegistryConfig::new(&bed.registry_url))
        .register(&format!("{}-value", later.name), PRODUCT_SCHEMA_JSON)
        .await
        .unwrap();
    support::produce_products_to(&later.name, schema_id, 1..=20).await;
    bed.wait_for_ids(&(1..=20).collect(), LONG).await;
    testkit::wait_until(Duration::from_secs(30), "/ready 200", || async {
        (get(app.port, "/ready").await.0 == 200).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_started_before_the_registry_answers_waits_then_consumes() {
    // A registry address where nothing listens yet.
    let port = testkit::free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let bed = Bed::new(2).await;
    bed.produce_products(1..=10).await;
    let app =
        TestApp::spawn(bed.config_with(&[("SCHEMA_REGISTRY_URL", registry_url.as_str())])).await;
    assert_waiting_for(app.port, "the schema registry at").await;
    assert!(
        bed.log_lines().is_empty(),
        "nothing consumed before the registry answers"
    );

    // The registry comes up there, with the schema the records were written with.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, dev_schema_registry::router())
            .await
            .unwrap();
    });
    let schema_id = RegistryClient::new(RegistryConfig::new(&registry_url))
        .register(&format!("{}-value", bed.topic.name), PRODUCT_SCHEMA_JSON)
        .await
        .unwrap();
    assert_eq!(schema_id, bed.schema_id, "the same id the records carry");
    bed.wait_for_ids(&(1..=10).collect(), LONG).await;
    app.stop().await;
}

/// `TOPIC` becomes a directory of the stage sink (`STAGE_DIR/<topic>/`): a value that is not a
/// Kafka topic name, such as `../outside`, must stop the start with an error naming the
/// variable, before anything is created outside `STAGE_DIR`.
#[test]
fn a_topic_that_is_not_a_kafka_topic_name_stops_the_start_before_any_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let logs = dir.path().join("logs");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .env_clear()
        .env("TOPIC", "../outside")
        .env("CONSUMER_SINK", "stage")
        .env("STAGE_DIR", &stage)
        .env("CONSUMER_LOGS_DIR", &logs)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            testkit::kafka().bootstrap_servers,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("the consumer started with TOPIC=../outside:\n{stderr}"));
    assert!(!status.success());
    assert!(
        stderr.contains("TOPIC=\"../outside\"") && stderr.contains("Kafka topic name"),
        "{stderr}"
    );
    assert!(!dir.path().join("outside").exists());
    assert!(!stage.exists(), "nothing written");
}
