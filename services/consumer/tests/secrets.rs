//! No configured secret appears in any log line or HTTP answer (`/health`, `/ready`, `/metrics`,
//! `/assignments`) of the real binary: a `key:secret@` in `SCHEMA_REGISTRY_URL`,
//! `SCHEMA_REGISTRY_PASSWORD`, `KAFKA_SASL_PASSWORD` (with every librdkafka debug context on).

mod support;

use std::process::Command;
use std::time::Duration;

use support::Bed;
use testkit::{assert_no_secret, run_and_collect};

const ENDPOINTS: [&str; 4] = ["/health", "/ready", "/metrics", "/assignments"];

fn consumer(bed: &Bed, port: u16, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consumer"));
    command
        .env_clear()
        .envs(bed.env())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied());
    command
}

/// The registry answers only after 12 s (longer than joining the group and fetching the first
/// records takes, so its errors are logged meanwhile), then the records are consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_key_and_secret_in_the_url_never_reach_logs_or_endpoints() {
    let bed = Bed::new(2).await;
    bed.produce_products(1..=5).await;
    let registry_port = testkit::free_port();
    let url = format!("http://registry-key:Url9Secret%40x@127.0.0.1:{registry_port}");
    let subject = format!("{}-value", bed.topic.name);
    let schema_id = bed.schema_id;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        let registry = testkit::spawn_registry_on(registry_port).await;
        let id =
            common::registry::RegistryClient::new(common::registry::RegistryConfig::new(&registry))
                .register(&subject, common::avro::PRODUCT_SCHEMA_JSON)
                .await
                .unwrap();
        assert_eq!(id, schema_id);
    });
    let port = testkit::free_port();
    let command = consumer(&bed, port, &[("SCHEMA_REGISTRY_URL", &url)]);
    let text = run_and_collect(command, port, &ENDPOINTS, Duration::from_secs(30)).await;
    assert_eq!(bed.log_lines().len(), 5, "the run consumed:\n{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{registry_port}")),
        "the registry's (unreachable) address is logged:\n{text}"
    );
    assert_no_secret(&text, &["Url9Secret", "registry-key:"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sasl_and_registry_passwords_never_reach_logs_or_endpoints() {
    let bed = Bed::new(2).await;
    let port = testkit::free_port();
    let command = consumer(
        &bed,
        port,
        &[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "api-key"),
            ("KAFKA_SASL_PASSWORD", "Sasl9Secret"),
            ("SCHEMA_REGISTRY_USERNAME", "registry-key"),
            ("SCHEMA_REGISTRY_PASSWORD", "Registry9Secret"),
            ("CONSUMER_KAFKA_DEBUG", "all"),
        ],
    );
    let text = run_and_collect(command, port, &ENDPOINTS, Duration::from_secs(8)).await;
    assert!(
        text.contains("librdkafka"),
        "librdkafka's debug lines are in:\n{text}"
    );
    assert_no_secret(&text, &["Sasl9Secret", "Registry9Secret"]);
}
