//! Test support shared by the services' integration tests. Everything here talks to the real
//! test bed started by `scripts/testbed.sh up`: tansu on `TEST_KAFKA_BOOTSTRAP`
//! (default `127.0.0.1:9092`), MariaDB on `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`)
//! and PostgreSQL on `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`).
//! Each test gets its own database, topic names and schema registry, so tests never interfere.

use std::future::Future;
use std::time::{Duration, Instant};

use common::config::TopicConfig;
use common::kafka::KafkaConfig;
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::{Connection, MySqlConnection, PgConnection};

/// Our product value schema as registered before `last_updated_micros` became a plain `long`
/// (it carried the `timestamp-micros` logical type). Records written with it stay in topics and
/// must still be read.
pub const EARLIER_PRODUCT_SCHEMA_JSON: &str =
    include_str!("../../../schemas/history/product_value.timestamp-micros.avsc");

/// The test broker.
pub fn kafka() -> KafkaConfig {
    KafkaConfig::plaintext(
        &std::env::var("TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    )
}

/// The test MySQL/MariaDB server URL, without a database.
pub fn mysql_server_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// `prefix_` followed by random hex: unique per call, valid as a database, topic or group name.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{:012x}",
        rand::rng().random::<u64>() & 0xffff_ffff_ffff
    )
}

/// A fresh, empty database on the test server. It is dropped by [`TestDatabase::drop_database`]
/// (tests call it at the end; a failed test leaves its database behind for inspection).
pub struct TestDatabase {
    pub name: String,
    /// URL of this database, for `DATABASE_URL`.
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = unique_name("ps_test");
        let server = mysql_server_url();
        let mut conn = MySqlConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("test MySQL at {server} unreachable ({e}); run scripts/testbed.sh up")
        });
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        Self {
            url: format!("{}/{name}", server.trim_end_matches('/')),
            name,
        }
    }

    pub async fn connect(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    pub async fn drop_database(self) {
        let mut conn = MySqlConnection::connect(&mysql_server_url())
            .await
            .expect("connect");
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .execute(&mut conn)
            .await
            .expect("drop test database");
    }
}

/// The test PostgreSQL server URL, without a database.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, empty PostgreSQL database on the test server (the PostgreSQL twin of
/// [`TestDatabase`]). Dropped by [`TestPgDatabase::drop_database`].
pub struct TestPgDatabase {
    pub name: String,
    /// URL of this database, for `DATABASE_URL`.
    pub url: String,
}

impl TestPgDatabase {
    pub async fn create() -> Self {
        let name = unique_name("ps_test");
        let server = postgres_server_url().trim_end_matches('/').to_owned();
        // A server URL without a database connects to the user's database, which may not
        // exist: use the always present `postgres` database for administration.
        let mut conn = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("test PostgreSQL at {server} unreachable ({e})"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    pub async fn drop_database(self) {
        let server = postgres_server_url().trim_end_matches('/').to_owned();
        let mut conn = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("connect");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .expect("drop test database");
    }
}

/// A new topic with a unique name and `partitions` partitions on the test broker.
pub async fn create_topic(partitions: i32) -> TopicConfig {
    let topic = TopicConfig {
        name: unique_name("ps_topic"),
        partitions,
    };
    common::kafka::ensure_topic(&kafka(), &topic, 1)
        .await
        .unwrap_or_else(|e| panic!("create topic on test broker ({e}); run scripts/testbed.sh up"));
    topic
}

/// Starts an in-process dev schema registry on an ephemeral port and returns its URL. It lives as
/// long as the test's runtime.
pub async fn spawn_registry() -> String {
    spawn_registry_on(0).await
}

/// A port nothing listens on right now (for a dependency a test starts later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts forwarding TCP connections from `port` of 127.0.0.1 to `upstream` (e.g. the test
/// database): a dependency that appears where a service already expects it. Lives as long as the
/// test's runtime.
pub async fn forward_port(port: u16, upstream: &str) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the forwarded port");
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

/// Like [`spawn_registry`], on `port` of 127.0.0.1 (0: any free port): a registry that comes up
/// where a service already expects it.
pub async fn spawn_registry_on(port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind registry");
    let addr = listener.local_addr().expect("registry address");
    tokio::spawn(async move {
        axum::serve(listener, dev_schema_registry::router())
            .await
            .expect("dev registry serves");
    });
    format!("http://{addr}")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every record of `topic` from the beginning of all its partitions (no consumer group)
/// until `expected` records arrived and no more come for a second, or `timeout` passes.
/// Returns what was read; callers assert on it.
pub async fn read_topic(
    topic: &TopicConfig,
    expected: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let kafka = kafka();
    let topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", unique_name("ps_reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("reader consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..topic.partitions {
            assignment
                .add_partition_offset(&topic.name, p, Offset::Beginning)
                .expect("partition offset");
        }
        consumer.assign(&assignment).expect("assign partitions");
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    records.push(message.detach());
                    quiet_since = Instant::now();
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reader poll error"),
                None => {
                    if records.len() >= expected && quiet_since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
            }
        }
        records
    })
    .await
    .expect("reader thread")
}

/// The key of `message` as UTF-8 text.
pub fn key_text(message: &OwnedMessage) -> String {
    String::from_utf8(message.key().expect("record has a key").to_vec()).expect("key is UTF-8")
}

/// Runs a service binary (`command`, its HTTP on `port`) for `run_for`, reading each of `paths`
/// over HTTP every half second once it answers, then stops it with SIGTERM. Returns everything
/// it wrote (stdout and stderr) followed by every body the endpoints answered: the text a test
/// searches for secrets.
pub async fn run_and_collect(
    mut command: std::process::Command,
    port: u16,
    paths: &[&str],
    run_for: Duration,
) -> String {
    let output = tempfile::NamedTempFile::new().expect("output file");
    let child_output = output.reopen().expect("output file");
    let child_errors = output.reopen().expect("output file");
    let mut child = command
        .stdout(child_output)
        .stderr(child_errors)
        .spawn()
        .expect("start the service binary");
    let deadline = Instant::now() + run_for;
    let mut bodies = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for path in paths {
            if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
                bodies.push_str(&format!("\n--- GET {path}: {}\n", response.status()));
                bodies.push_str(&response.text().await.unwrap_or_default());
            }
        }
    }
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    let waited = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let (mut child, status) = tokio::time::timeout(Duration::from_secs(30), waited)
        .await
        .unwrap_or_else(|_| panic!("the service did not stop within 30 s of SIGTERM"))
        .expect("wait thread");
    if status.is_err() {
        let _ = child.kill();
    }
    let logs = std::fs::read_to_string(output.path()).expect("read the output");
    assert!(
        bodies.contains("GET /health: 200"),
        "the service never answered /health:\n{logs}"
    );
    format!("{logs}{bodies}")
}

/// Fails naming the secret and the lines that show it, if `text` contains any of `secrets`.
pub fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        let shown: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            shown.is_empty(),
            "secret {secret:?} appears in {} line(s), e.g.:\n{}",
            shown.len(),
            shown.iter().take(3).copied().collect::<Vec<_>>().join("\n")
        );
    }
}
