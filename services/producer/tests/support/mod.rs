//! Shared set-up of the producer's integration tests: a fresh database with the migration
//! applied, a fresh 10-partition topic, an in-process dev registry, a temporary watermark
//! directory, and helpers to run the producer and read what reached the topic.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::avro::{decode_product, unframe};
use common::config::{Env, TopicConfig};
use common::product::Product;
use common::registry::{RegistryClient, RegistryConfig};
use producer::metrics::ProducerMetrics;
use producer::position::{Position, RowKey};
use producer::source::Source;
use producer::{Application, Config, StartupError};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use sqlx::{Connection, MySqlConnection};
use testkit::TestDatabase;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PARTITIONS: i32 = 10;

/// An integer-id PostgreSQL table of the product's shape, under the producer's default names
/// (`timestamptz`: a wall-clock `timestamp` would need `SOURCE_TIMESTAMP_TIME_ZONE`).
pub const PG_PRODUCT_TABLE: &str = "CREATE TABLE product (id INTEGER PRIMARY KEY, \
    name TEXT NOT NULL, category TEXT, price NUMERIC(10,2) NOT NULL, \
    last_updated TIMESTAMPTZ NOT NULL DEFAULT now())";

/// One test's private world.
pub struct TestBed {
    pub db: TestDatabase,
    pub topic: TopicConfig,
    pub registry_url: String,
    pub registry: RegistryClient,
    pub dir: tempfile::TempDir,
}

impl TestBed {
    pub async fn new() -> Self {
        common::telemetry::init(&Env::from_pairs([("RUST_LOG", "info,producer=debug")]))
            .expect("telemetry");
        let db = TestDatabase::create().await;
        let mut conn = db.connect().await;
        sqlx::migrate!("../../schemas/migrations/mysql")
            .run(&mut conn)
            .await
            .expect("migrations apply");
        conn.close().await.ok();
        let topic = testkit::create_topic(PARTITIONS).await;
        let registry_url = testkit::spawn_registry().await;
        Self {
            db,
            topic,
            registry: RegistryClient::new(RegistryConfig::new(&registry_url)),
            registry_url,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn watermark_path(&self) -> PathBuf {
        self.dir.path().join("time_track/last_read_timestamp.json")
    }

    /// The environment a producer of this test bed runs with (short intervals for tests).
    pub fn env(&self) -> Vec<(String, String)> {
        test_env(
            &self.db.url,
            &self.topic,
            &self.registry_url,
            &self.watermark_path(),
        )
    }

    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        config_from(self.env(), overrides)
    }

    pub async fn connect(&self) -> MySqlConnection {
        let mut conn = self.db.connect().await;
        sqlx::query("SET time_zone = '+00:00'")
            .execute(&mut conn)
            .await
            .expect("utc session");
        conn
    }

    /// Reads the topic from the beginning until at least `expected` records came (or 60 s).
    pub async fn read(&self, expected: usize) -> Vec<Received> {
        read_decoded(&self.topic, &self.registry, expected).await
    }

    pub async fn decode(&self, message: &OwnedMessage) -> Received {
        decode(&self.registry, message).await
    }

    pub async fn drop_database(self) {
        self.db.drop_database().await;
    }
}

/// The environment of a test producer capturing from `database_url` (short intervals).
pub fn test_env(
    database_url: &str,
    topic: &TopicConfig,
    registry_url: &str,
    watermark_path: &std::path::Path,
) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), database_url.to_owned()),
        (
            "KAFKA_BOOTSTRAP_SERVERS".into(),
            testkit::kafka().bootstrap_servers,
        ),
        ("SCHEMA_REGISTRY_URL".into(), registry_url.to_owned()),
        ("TOPIC".into(), topic.name.clone()),
        ("TOPIC_PARTITIONS".into(), PARTITIONS.to_string()),
        (
            "WATERMARK_PATH".into(),
            watermark_path.display().to_string(),
        ),
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("POLL_INTERVAL_MS".into(), "100".into()),
        ("CAPTURE_DELAY_MS".into(), "200".into()),
    ]
}

/// `env` with `overrides` applied, as a config.
pub fn config_from(env: Vec<(String, String)>, overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = env.into_iter().collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_env(&Env::from_pairs(
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
    .expect("valid test config")
}

/// Reads `topic` from the beginning until at least `expected` records came (or 60 s), decoding
/// each value with its writer schema from `registry`.
pub async fn read_decoded(
    topic: &TopicConfig,
    registry: &RegistryClient,
    expected: usize,
) -> Vec<Received> {
    let messages = testkit::read_topic(topic, expected, Duration::from_secs(60)).await;
    let mut received = Vec::with_capacity(messages.len());
    for message in messages {
        received.push(decode(registry, &message).await);
    }
    received
}

/// Decodes one record with its writer schema from `registry`.
pub async fn decode(registry: &RegistryClient, message: &OwnedMessage) -> Received {
    let payload = message.payload().expect("record has a value");
    let (schema_id, datum) = unframe(payload).expect("Confluent wire format");
    let schema = registry
        .schema(schema_id)
        .await
        .expect("writer schema from the registry");
    Received {
        key: testkit::key_text(message),
        partition: message.partition(),
        offset: message.offset(),
        schema_id,
        product: decode_product(&schema, datum).expect("value decodes"),
    }
}

/// One record read from the topic, decoded.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    /// The writer schema's registry id.
    pub schema_id: u32,
    pub product: Product,
}

impl Received {
    /// The integer product id (the MySQL tests' tables have integer ids).
    pub fn id(&self) -> i32 {
        self.product.id.as_int().expect("an integer id")
    }

    /// The row version it carries.
    pub fn version(&self) -> (i32, i64) {
        (
            self.id(),
            self.product.last_updated_micros.expect("exact timestamp"),
        )
    }
}

/// Counts how often each row version arrived.
pub fn count_versions(received: &[Received]) -> HashMap<(i32, i64), usize> {
    let mut counts = HashMap::new();
    for r in received {
        *counts.entry(r.version()).or_insert(0) += 1;
    }
    counts
}

/// The row versions `(id, last_updated micros)` the table holds now.
pub async fn table_versions(conn: &mut MySqlConnection) -> Vec<(i32, i64)> {
    let rows: Vec<(i32, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, last_updated FROM product ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .expect("read product table");
    rows.into_iter()
        .map(|(id, t)| (id, t.timestamp_micros()))
        .collect()
}

/// Inserts `count` generated products with ids `first..first+count`, in multi-row statements of
/// `per_statement` rows (every row of a statement gets the same `last_updated`).
pub async fn insert_products(
    conn: &mut MySqlConnection,
    first: i32,
    count: i32,
    per_statement: i32,
) {
    let mut id = first;
    while id < first + count {
        let end = (id + per_statement).min(first + count);
        let values: Vec<String> = (id..end)
            .map(|i| {
                format!(
                    "({i}, 'Product_{i}', 'Cat_{}', {}.{:02})",
                    i % 10,
                    10 + i % 90,
                    i % 100
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO product (id, name, category, price) VALUES {}",
            values.join(",")
        ))
        .execute(&mut *conn)
        .await
        .expect("insert products");
        id = end;
    }
}

/// `data/products.csv` as `(id, name, category, price, last_updated)`.
pub fn seed_products() -> Vec<(i32, String, String, f64, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/products.csv");
    let text = std::fs::read_to_string(path).expect("data/products.csv");
    text.lines()
        .skip(1)
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            (
                f[0].parse().expect("id"),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().expect("price"),
                f[4].to_owned(),
            )
        })
        .collect()
}

/// Runs a producer with `config` and returns its startup error.
pub async fn startup_error(config: Config) -> StartupError {
    let app = Application::build(config).await.expect("builds");
    let shutdown = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(30), app.run_until_stopped(shutdown))
        .await
        .expect("fails fast")
        .expect_err("a startup error")
}

/// Asserts that `text` (an error message) mentions every one of `parts`.
pub fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} in: {text}");
    }
}

/// Reads the topic until every row version the table holds now has arrived (or 60 s), and
/// returns what was read. Panics naming the versions still missing.
pub async fn read_until_table_arrived(bed: &TestBed, conn: &mut MySqlConnection) -> Vec<Received> {
    let table = table_versions(conn).await;
    let received = bed.read(table.len()).await;
    let counts = count_versions(&received);
    let missing: Vec<_> = table.iter().filter(|v| !counts.contains_key(v)).collect();
    assert!(
        missing.is_empty(),
        "row versions (id, last_updated µs) that never reached the topic: {missing:?}"
    );
    received
}

/// Reads everything `source` has after `after` in one read (MySQL: one listing), and
/// returns the new position and the `(id, price)` of each row read.
pub async fn read_once(
    source: &impl Source,
    after: Option<Position>,
) -> (Option<Position>, Vec<(i64, f64)>) {
    try_read_once(source, after).await.expect("read")
}

/// [`read_once`], failing with the source's error.
pub async fn try_read_once(
    source: &impl Source,
    after: Option<Position>,
) -> Result<(Option<Position>, Vec<(i64, f64)>), producer::source::SourceError> {
    let mut reader = source.read_changes(after.clone(), 1000);
    let mut after = after;
    let mut ids = Vec::new();
    while let Some(batch) = reader.next().await {
        let batch = batch?;
        for row in &batch.rows {
            match row.id {
                RowKey::Int(id) => ids.push((id, row.price.unwrap_or(f64::NAN))),
                ref other => panic!("{other:?}"),
            }
        }
        if let Some(end) = batch.end() {
            after = Some(end);
        }
        if batch.caught_up {
            break;
        }
    }
    Ok((after, ids))
}

/// Reads, listing afresh each time, until the rows read include `(id, price)` (other tests'
/// transactions on the shared server may hold the horizon for a while), or fails naming it
/// after 30 s: a row the watermark has passed is never read. Returns the position and the rows.
pub async fn read_until(
    source: &impl Source,
    mut after: Option<Position>,
    id: i64,
    price: f64,
) -> (Option<Position>, Vec<(i64, f64)>) {
    let mut all = Vec::new();
    for _ in 0..300 {
        let (end, rows) = read_once(source, after).await;
        after = end;
        all.extend(rows);
        if all.contains(&(id, price)) {
            return (after, all);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("row {id} at price {price} was never read: {all:?}");
}

/// A producer running in this process.
pub struct RunningProducer {
    pub port: u16,
    pub metrics: ProducerMetrics,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), StartupError>>,
}

impl RunningProducer {
    pub async fn start(config: Config) -> Self {
        let app = Application::build(config).await.expect("producer builds");
        let shutdown = CancellationToken::new();
        Self {
            port: app.port(),
            metrics: app.metrics(),
            handle: tokio::spawn(app.run_until_stopped(shutdown.clone())),
            shutdown,
        }
    }

    /// Stops it gracefully and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> Result<(), StartupError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("producer stops within 30 s")
            .expect("producer task does not panic")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("HTTP body"))
    }

    /// Waits until `producer_records_produced_total` reaches `n`.
    pub async fn wait_produced(&self, n: u64) {
        let metrics = self.metrics.clone();
        testkit::wait_until(
            Duration::from_secs(60),
            &format!("{n} records produced"),
            || {
                let produced = metrics.records_produced.get();
                async move { (produced >= n).then_some(()) }
            },
        )
        .await;
    }

    /// Waits until `/ready` answers `status`, returning the body.
    pub async fn wait_ready_status(&self, status: u16) -> String {
        let url = self.url("/ready");
        testkit::wait_until(
            Duration::from_secs(60),
            &format!("/ready to answer {status}"),
            || {
                let url = url.clone();
                async move {
                    let response = reqwest::get(&url).await.ok()?;
                    (response.status().as_u16() == status).then_some(response.text().await.ok()?)
                }
            },
        )
        .await
    }
}

/// A TCP proxy that can be cut (every connection dropped, new ones refused by closing them at
/// once) and restored, to simulate a database or broker outage. In front of a Kafka broker it
/// can also refuse reads only ([`Proxy::block_reads`]): a connection that sends a Fetch or
/// ListOffsets request is closed, as when partitions have no leader, while metadata, topic
/// creation and produce requests pass.
pub struct Proxy {
    pub port: u16,
    up: Arc<Mutex<bool>>,
    reads_blocked: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Kafka API keys of the requests [`Proxy::block_reads`] refuses: Fetch and ListOffsets.
const READ_API_KEYS: [i16; 2] = [1, 2];

/// Copies Kafka requests (size-prefixed frames) from `inbound` to `outbound`, until one is a
/// read while reads are blocked.
async fn forward_requests(
    mut inbound: tokio::net::tcp::OwnedReadHalf,
    mut outbound: tokio::net::tcp::OwnedWriteHalf,
    reads_blocked: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut size = [0u8; 4];
        if inbound.read_exact(&mut size).await.is_err() {
            return;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
        if inbound.read_exact(&mut frame).await.is_err() || frame.len() < 2 {
            return;
        }
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        if READ_API_KEYS.contains(&api_key)
            && reads_blocked.load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        if outbound.write_all(&size).await.is_err() || outbound.write_all(&frame).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::serve(listener, upstream)
    }

    /// A proxy on a given listener (when the port must be known before the upstream starts).
    pub fn serve(listener: TcpListener, upstream: String) -> Self {
        Self::serve_as(listener, upstream, false)
    }

    /// A proxy in front of a Kafka broker: it reads the requests' frames, so that
    /// [`Proxy::block_reads`] can refuse reads.
    pub fn serve_kafka(listener: TcpListener, upstream: String) -> Self {
        Self::serve_as(listener, upstream, true)
    }

    fn serve_as(listener: TcpListener, upstream: String, kafka: bool) -> Self {
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(Mutex::new(true));
        let reads_blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, connections2) = (Arc::clone(&up), Arc::clone(&connections));
        let reads_blocked2 = Arc::clone(&reads_blocked);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*up2.lock().unwrap() {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let reads_blocked = Arc::clone(&reads_blocked2);
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if !kafka {
                        let mut inbound = inbound;
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    let (in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        () = forward_requests(in_read, out_write, reads_blocked) => {}
                        _ = tokio::io::copy(&mut out_read, &mut in_write) => {}
                    }
                });
                connections2.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            up,
            reads_blocked,
            connections,
        }
    }

    /// Closes every connection that sends a Fetch or ListOffsets request from now on, as a broker
    /// whose partitions have no leader would fail them (a Kafka proxy only:
    /// [`Proxy::serve_kafka`]).
    pub fn block_reads(&self) {
        self.reads_blocked
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn allow_reads(&self) {
        self.reads_blocked
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn cut(&self) {
        *self.up.lock().unwrap() = false;
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        *self.up.lock().unwrap() = true;
    }
}

/// A tansu broker of one test's own, reachable only through a [`Proxy`] (its advertised address),
/// so the test can cut the broker off without disturbing the shared one. Killed on drop.
pub struct PrivateBroker {
    pub proxy: Proxy,
    child: std::process::Child,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        Self::start_with_schemas(None).await
    }

    /// A private broker that validates the records of topics with a schema in `schemas`
    /// (tansu's `--schema-registry`: `<topic>.json` holds a JSON schema of `key` and `value`).
    pub async fn start_with_schemas(schemas: Option<&std::path::Path>) -> Self {
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy_port = proxy_listener.local_addr().expect("proxy address").port();
        let broker_port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("probe address").port()
        };
        let tansu = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let mut command = std::process::Command::new(&tansu);
        command.args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{broker_port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{proxy_port}"),
            "--storage-engine",
            "memory://tansu/",
        ]);
        if let Some(schemas) = schemas {
            // tansu 0.6 takes the path of a file:// URL relative to its working directory.
            let name = schemas.file_name().expect("a schema directory name");
            command
                .current_dir(schemas.parent().expect("a schema directory parent"))
                .args([
                    "--schema-registry",
                    &format!("file://./{}", name.to_string_lossy()),
                ]);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {tansu} (install it with scripts/install-tansu.sh): {e}")
            });
        let upstream = format!("127.0.0.1:{broker_port}");
        testkit::wait_until(
            Duration::from_secs(30),
            "the private broker to listen",
            || {
                let upstream = upstream.clone();
                async move { TcpStream::connect(&upstream).await.ok().map(|_| ()) }
            },
        )
        .await;
        Self {
            proxy: Proxy::serve_kafka(proxy_listener, upstream),
            child,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }

    /// Reads every record of `topic` from the beginning until `expected` came and a second
    /// passed without more, or 60 s.
    pub async fn read(&self, topic: &str, partitions: i32, expected: usize) -> Vec<OwnedMessage> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let kafka = common::kafka::KafkaConfig::plaintext(&self.bootstrap());
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = kafka
                .client_config()
                .set("group.id", testkit::unique_name("ps_reader"))
                .set("enable.auto.commit", "false")
                .create()
                .expect("reader");
            let mut assignment = rdkafka::TopicPartitionList::new();
            for p in 0..partitions {
                assignment
                    .add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                    .expect("partition offset");
            }
            consumer.assign(&assignment).expect("assign");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut quiet_since = std::time::Instant::now();
            let mut records = Vec::new();
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        records.push(m.detach());
                        quiet_since = std::time::Instant::now();
                    }
                    Some(Err(_)) => {}
                    None if records.len() >= expected
                        && quiet_since.elapsed() > Duration::from_secs(1) =>
                    {
                        break
                    }
                    None => {}
                }
            }
            records
        })
        .await
        .expect("reader thread")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server of one test's own, for settings the shared one must not be given (it is
/// never reconfigured or restarted): `initdb` into a temporary directory (trust authentication,
/// superuser `postgres`), started on a free loopback port with `settings`, as the `postgres`
/// user when the test runs as root (PostgreSQL refuses to run as root). The binaries come from
/// `TEST_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/*/bin` (Debian's, which
/// `scripts/testbed.sh up` installs). Stopped on drop.
pub struct PrivatePostgres {
    /// The server's URL without a database.
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let bin = std::env::var_os("TEST_POSTGRES_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .filter_map(|e| Some(e.ok()?.path().join("bin")))
                    .filter(|bin| bin.join("initdb").exists())
                    .collect();
                found.sort_by_key(|bin| {
                    bin.parent()
                        .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                });
                found.pop()
            })
            .expect(
                "PostgreSQL's initdb and pg_ctl (TEST_POSTGRES_BIN, or /usr/lib/postgresql/*/bin)",
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = running_as_root();
        if as_postgres {
            give_to(dir.path(), "postgres");
        }
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let server = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}"),
            bin,
            data,
            as_postgres,
            _dir: dir,
        };
        let data = server.data.display().to_string();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            server.data.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let log = server.data.join("server.log").display().to_string();
        server.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        server
    }

    /// One of the server's programs, to run as `postgres` when running as root.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    /// Runs one of the server's programs; panics with its output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A new database on it, and its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.url))
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        format!("{}/{name}", self.url)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// A MariaDB server of one test's own, for what must not be done to the shared one (a crash and
/// a restart): `mariadb-install-db` into a temporary directory (root without a password), then
/// `/usr/sbin/mariadbd` on a free loopback port, as the `mysql` user when the test runs as root.
/// Killed on drop.
pub struct PrivateMariaDb {
    /// The server's URL without a database.
    pub url: String,
    port: u16,
    /// `--user=mysql` when running as root.
    user_args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateMariaDb {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut user_args = Vec::new();
        if running_as_root() {
            give_to(dir.path(), "mysql");
            user_args.push("--user=mysql".to_owned());
        }
        let data = dir.path().join("data").display().to_string();
        let output = std::process::Command::new("mariadb-install-db")
            .args(["--no-defaults", &format!("--datadir={data}")])
            .args(&user_args)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db (package mariadb-server)");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self {
            url: format!("mysql://root@127.0.0.1:{port}"),
            port,
            user_args,
            dir,
            child: None,
        };
        server.run().await;
        server
    }

    async fn run(&mut self) {
        let dir = self.dir.path().display().to_string();
        let child = std::process::Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults".to_owned(),
                format!("--datadir={dir}/data"),
                format!("--port={}", self.port),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--socket={dir}/mariadbd.sock"),
                format!("--pid-file={dir}/mariadbd.pid"),
                format!("--log-error={dir}/error.log"),
                "--innodb-buffer-pool-size=16M".to_owned(),
                "--skip-log-bin".to_owned(),
            ])
            .args(&self.user_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start /usr/sbin/mariadbd");
        self.child = Some(child);
        let url = self.url.clone();
        testkit::wait_until(
            Duration::from_secs(60),
            "the private MariaDB to answer",
            || {
                let url = url.clone();
                async move {
                    let mut conn = MySqlConnection::connect(&url).await.ok()?;
                    sqlx::query("SELECT 1").execute(&mut conn).await.ok()?;
                    conn.close().await.ok()
                }
            },
        )
        .await;
    }

    /// Kills the server (SIGKILL: InnoDB recovers at the next start) and starts it again.
    pub async fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill mariadbd");
            child.wait().expect("reap mariadbd");
        }
        self.run().await;
    }

    /// A new database on it with the `product` table's migrations, and its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = MySqlConnection::connect(&self.url)
            .await
            .expect("connect to the private MariaDB");
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        let url = format!("{}/{name}", self.url);
        let mut conn = MySqlConnection::connect(&url).await.expect("connect");
        sqlx::migrate!("../../schemas/migrations/mysql")
            .run(&mut conn)
            .await
            .expect("migrations apply");
        conn.close().await.ok();
        url
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn running_as_root() -> bool {
    command_output("id", &["-u"]) == "0"
}

/// Gives `path` to the system user `user` (a database server refuses to run as root).
fn give_to(path: &std::path::Path, user: &str) {
    let id = |flag| {
        command_output("id", &[flag, user])
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("a {user} user (the server's package creates it)"))
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .unwrap_or_else(|e| panic!("give {} to {user}: {e}", path.display()));
}

/// The trimmed standard output of a command that must succeed.
fn command_output(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
