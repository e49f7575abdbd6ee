//! No configured secret appears in any log line or HTTP answer of the real binary, whichever way
//! it is given: the password in `DATABASE_URL` (with an unencoded `@`), a `password` or
//! `sslpassword` query parameter, `KAFKA_SASL_PASSWORD`, `SCHEMA_REGISTRY_PASSWORD`, or a
//! `key:secret@` in `SCHEMA_REGISTRY_URL`; also when the start fails on a bad value.

mod support;

use std::process::Command;
use std::time::Duration;

use testkit::{assert_no_secret, run_and_collect, TestPgDatabase};

const ENDPOINTS: [&str; 3] = ["/health", "/ready", "/metrics"];

fn producer(port: u16, dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_producer"));
    command
        .env_clear()
        .env("RUST_LOG", "debug")
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "WATERMARK_PATH",
            dir.join("time_track/watermark.json").display().to_string(),
        )
        .env("POLL_INTERVAL_MS", "100")
        .envs(env.iter().copied());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_urls_and_query_parameters_never_reach_logs_or_endpoints() {
    let db = TestPgDatabase::create().await;
    let mut conn = db.connect().await;
    sqlx::query(support::PG_PRODUCT_TABLE)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO product (id, name, price) VALUES (1, 'One', 1.00)")
        .execute(&mut conn)
        .await
        .unwrap();
    let registry = testkit::spawn_registry().await;
    let registry_with_key = registry.replace("http://", "http://registry-key:Reg%40Secret1@");
    // Trust authentication on the test server: the passwords are sent and ignored.
    let database_url = format!(
        "{}?password=QueryPassw0rd&sslpassword=SslPassw0rd&application_name=secrets_test",
        db.url
            .replace("postgres://postgres@", "postgres://postgres:UrlPassw0rd@")
    );
    let topic = testkit::create_topic(2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let command = producer(
        port,
        dir.path(),
        &[
            ("DATABASE_URL", &database_url),
            ("SCHEMA_REGISTRY_URL", &registry_with_key),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                &testkit::kafka().bootstrap_servers,
            ),
            ("TOPIC", &topic.name),
            ("TOPIC_PARTITIONS", "2"),
        ],
    );
    let text = run_and_collect(command, port, &ENDPOINTS, Duration::from_secs(8)).await;
    assert!(
        text.contains("producer_records_produced_total 1"),
        "the run captured its row:\n{text}"
    );
    assert_no_secret(
        &text,
        &[
            "UrlPassw0rd",
            "QueryPassw0rd",
            "SslPassw0rd",
            "Reg%40Secret1",
            "Reg@Secret1",
        ],
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_unreachable_or_refusing_services_never_reach_logs_or_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let nothing_there = testkit::free_port();
    let command = producer(
        port,
        dir.path(),
        &[
            // An unencoded `@` in the password, and a password parameter, to a closed port.
            (
                "DATABASE_URL",
                "mysql://root:p@ss@Unencoded9@127.0.0.1:1/nowhere?password=Param9Secret",
            ),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                &testkit::kafka().bootstrap_servers,
            ),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "api-key"),
            ("KAFKA_SASL_PASSWORD", "Sasl9Secret"),
            (
                "SCHEMA_REGISTRY_URL",
                &format!("http://127.0.0.1:{nothing_there}"),
            ),
            ("SCHEMA_REGISTRY_USERNAME", "registry-key"),
            ("SCHEMA_REGISTRY_PASSWORD", "Registry9Secret"),
            ("TOPIC", &testkit::unique_name("ps_secrets")),
        ],
    );
    let text = run_and_collect(command, port, &ENDPOINTS, Duration::from_secs(8)).await;
    assert!(
        text.contains("127.0.0.1:1/nowhere"),
        "the database URL is shown (redacted):\n{text}"
    );
    assert_no_secret(
        &text,
        &[
            "p@ss@Unencoded9",
            "ss@Unencoded9",
            "Unencoded9",
            "Param9Secret",
            "Sasl9Secret",
            "Registry9Secret",
        ],
    );
}

#[test]
fn a_bad_value_stops_the_start_without_showing_the_secret_in_it() {
    for (name, value, secret) in [
        (
            "DATABASE_URL",
            "oracle://u:Oracle9Secret@h/db",
            "Oracle9Secret",
        ),
        (
            "DATABASE_URL",
            "mysql://u:Port9Secret@h:port/db",
            "Port9Secret",
        ),
        (
            "SCHEMA_REGISTRY_URL",
            "ftp://key:Ftp9Secret@registry",
            "Ftp9Secret",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_producer"))
            .env_clear()
            .env(name, value)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value} is refused");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains(name), "the error names {name}: {text}");
        assert_no_secret(&text, &[secret]);
    }
}
