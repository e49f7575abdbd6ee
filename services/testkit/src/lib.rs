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

/// Deletes `name` from the test broker and waits until its metadata no longer lists it. Drop
/// every client that fetches from the topic first: librdkafka 2.12 crashed (SIGSEGV) in a
/// consumer whose assigned topic was deleted on tansu 0.6.
pub async fn delete_topic(name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        kafka().client_config().create().expect("admin client");
    let results = admin
        .delete_topics(&[name], &AdminOptions::new())
        .await
        .expect("delete topics request");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("cannot delete topic {topic}: {code}"));
    }
    wait_until(
        Duration::from_secs(30),
        &format!("{name} deleted"),
        || async {
            let partitions = common::kafka::partition_count(&kafka(), name)
                .await
                .expect("topic metadata");
            partitions.is_none().then_some(())
        },
    )
    .await;
}

/// Starts an in-process dev schema registry on an ephemeral port and returns its URL. It lives as
/// long as the test's runtime.
pub async fn spawn_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
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
