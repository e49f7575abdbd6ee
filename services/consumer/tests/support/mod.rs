//! Helpers for the consumer's integration tests: a topic + registry + logs directory per test,
//! consumers in-process ([`Application`]) or as the real binary, producing records, reading logs
//! and HTTP endpoints.
#![allow(dead_code)] // each test file uses a different part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use common::avro::{encode_product, PRODUCT_SCHEMA_JSON};
use common::config::{Env, TopicConfig};
use common::product::Product;
use common::registry::{RegistryClient, RegistryConfig};
use common::CancellationToken;
use consumer::sink::{Positions, Sink, SinkBatch, SinkError};
use consumer::{Application, Config};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

/// Bound for group changes: tansu takes up to ~3 minutes to expire a departed static member.
pub const LONG: Duration = Duration::from_secs(360);

/// A topic, a dev registry with the product schema registered, a consumer group name and an
/// empty logs directory: everything a group of consumers needs, fresh for one test.
pub struct Bed {
    pub topic: TopicConfig,
    pub registry_url: String,
    pub schema_id: u32,
    pub group: String,
    /// Removed at the end of a passing test; kept (and printed) when the test fails.
    logs: Option<tempfile::TempDir>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(logs) = self.logs.take() {
                eprintln!("test failed: logs kept in {}", logs.keep().display());
            }
        }
    }
}

impl Bed {
    pub async fn new(partitions: i32) -> Self {
        let registry_url = testkit::spawn_registry().await;
        Self::with_registry(partitions, registry_url).await
    }

    pub async fn with_registry(partitions: i32, registry_url: String) -> Self {
        let topic = testkit::create_topic(partitions).await;
        let schema_id = RegistryClient::new(RegistryConfig::new(&registry_url))
            .register(&format!("{}-value", topic.name), PRODUCT_SCHEMA_JSON)
            .await
            .expect("register the product schema");
        Self {
            topic,
            registry_url,
            schema_id,
            group: testkit::unique_name("ps_group"),
            logs: Some(tempfile::tempdir().expect("logs dir")),
        }
    }

    pub fn logs_dir(&self) -> &Path {
        self.logs
            .as_ref()
            .expect("logs dir exists while the bed lives")
            .path()
    }

    /// The consumer's environment (HTTP on an ephemeral port).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KAFKA_BOOTSTRAP_SERVERS".into(),
                testkit::kafka().bootstrap_servers,
            ),
            ("SCHEMA_REGISTRY_URL".into(), self.registry_url.clone()),
            ("TOPIC".into(), self.topic.name.clone()),
            ("CONSUMER_GROUP".into(), self.group.clone()),
            (
                "CONSUMER_LOGS_DIR".into(),
                self.logs_dir().display().to_string(),
            ),
            ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
            // tansu 0.6 returns nothing of a record batch when a fetch starts in its middle.
            ("CONSUMER_RESUME_REWIND_RECORDS".into(), "1000".into()),
        ]
    }

    pub fn config(&self) -> Config {
        self.config_with(&[])
    }

    /// The consumer's configuration with extra (or overriding) environment variables.
    pub fn config_with(&self, extra: &[(&str, &str)]) -> Config {
        let mut env = self.env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Config::from_env(&Env::from_pairs(
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
        .expect("test config")
    }

    /// Starts a consumer in this process.
    pub async fn spawn_app(&self) -> TestApp {
        TestApp::spawn(self.config()).await
    }

    /// Starts a consumer in this process with extra environment variables.
    pub async fn spawn_app_with(&self, extra: &[(&str, &str)]) -> TestApp {
        TestApp::spawn(self.config_with(extra)).await
    }

    /// Starts the real `consumer` binary with this bed's environment, listening on `port`; its
    /// logs go to `CONSUMER_LOGS_DIR/<name>.stderr`.
    pub fn spawn_binary(&self, name: &str, port: u16) -> Process {
        self.spawn_binary_with(name, port, &[])
    }

    /// Like [`Bed::spawn_binary`], with extra environment variables.
    pub fn spawn_binary_with(&self, name: &str, port: u16, extra: &[(&str, &str)]) -> Process {
        let stderr = std::fs::File::create(self.logs_dir().join(format!("{name}.stderr")))
            .expect("stderr file");
        Command::new(env!("CARGO_BIN_EXE_consumer"))
            .envs(self.env())
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(Process)
            .expect("start the consumer binary")
    }

    pub fn product(id: i32) -> Product {
        let category = format!("Cat_{}", id % 10);
        let time =
            NaiveDateTime::parse_from_str("2024-05-01 10:00:00.000000", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        Product::new(
            id,
            format!("Product_{id}"),
            Some(category),
            10.0 + f64::from(id % 1000) * 0.25,
            time,
        )
    }

    /// Produces products with the given ids (key = id), waiting for every acknowledgement.
    /// At most 1000 records are in flight, so no record batch holds more than the 1000 records
    /// a consumer re-reads before its resume point (`CONSUMER_RESUME_REWIND_RECORDS`): a resume
    /// inside a batch then needs no look back (a fetch that starts inside a batch gets nothing of
    /// it on tansu 0.6).
    pub async fn produce_products(&self, ids: impl IntoIterator<Item = i32>) {
        produce_products_to(&self.topic.name, self.schema_id, ids).await;
    }

    /// Produces products with the given ids to `partition` as one record batch (one linger of
    /// the producer, no count or size limit reached), waiting for every acknowledgement.
    pub async fn produce_one_batch(&self, partition: i32, ids: impl IntoIterator<Item = i32>) {
        let records = ids
            .into_iter()
            .map(|id| (id, encode_product(self.schema_id, &Bed::product(id))));
        self.produce_one_batch_of(partition, records).await;
    }

    /// Produces `(key, value)` records to `partition` as one record batch, waiting for every
    /// acknowledgement.
    pub async fn produce_one_batch_of(
        &self,
        partition: i32,
        records: impl IntoIterator<Item = (i32, Vec<u8>)>,
    ) {
        let producer: FutureProducer = testkit::kafka()
            .client_config()
            .set("linger.ms", "2000")
            .set("batch.num.messages", "1000000")
            .set("batch.size", "1000000")
            .set("enable.idempotence", "true")
            .create()
            .expect("batching producer");
        let mut deliveries = Vec::new();
        for (key, value) in records {
            let key = key.to_string();
            deliveries.push(
                producer
                    .send_result(
                        FutureRecord::to(&self.topic.name)
                            .partition(partition)
                            .key(&key)
                            .payload(&value),
                    )
                    .expect("enqueue"),
            );
        }
        await_all(deliveries).await;
    }

    /// Deletes the topic and creates it again under the same name, with a new topic id and its
    /// offsets starting again at 0 (as `docker compose down && up` does to a broker without a
    /// volume). Stop every consumer of it first (see [`testkit::delete_topic`]).
    pub async fn recreate_topic(&self) {
        testkit::delete_topic(&self.topic.name).await;
        common::kafka::ensure_topic(&testkit::kafka(), &self.topic, 1)
            .await
            .expect("create the topic again");
    }

    /// Produces one raw record.
    pub async fn produce_raw(&self, key: &str, value: &[u8]) {
        let producer = producer();
        await_all(vec![producer
            .send_result(FutureRecord::to(&self.topic.name).key(key).payload(value))
            .expect("enqueue")])
        .await;
    }

    /// Every line of every slot's log.
    pub fn log_lines(&self) -> Vec<LogLine> {
        read_log_lines(self.logs_dir())
    }

    /// Waits until the logs hold every id of `ids`.
    pub async fn wait_for_ids(&self, ids: &BTreeSet<i32>, timeout: Duration) {
        testkit::wait_until(
            timeout,
            &format!("{} ids in the logs", ids.len()),
            || async {
                let seen: BTreeSet<i32> = self.log_lines().iter().map(|l| l.id).collect();
                ids.is_subset(&seen).then_some(())
            },
        )
        .await;
    }
}

/// Produces products with the given ids (key = id) to `topic`, values written with `schema_id`,
/// waiting for every acknowledgement.
pub async fn produce_products_to(topic: &str, schema_id: u32, ids: impl IntoIterator<Item = i32>) {
    let producer = producer();
    let mut deliveries = Vec::new();
    for id in ids {
        let value = encode_product(schema_id, &Bed::product(id));
        let key = id.to_string();
        deliveries.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                .expect("enqueue"),
        );
        // At most 1000 in flight, so no record batch is longer than the 1000 records a consumer
        // re-reads before its resume point (a fetch starting inside a batch gets nothing of it on
        // tansu 0.6).
        if deliveries.len() >= 1000 {
            await_all(std::mem::take(&mut deliveries)).await;
        }
    }
    await_all(deliveries).await;
}

fn producer() -> FutureProducer {
    testkit::kafka()
        .client_config()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

async fn await_all(deliveries: Vec<rdkafka::producer::DeliveryFuture>) {
    for delivery in futures::future::join_all(deliveries).await {
        delivery
            .expect("delivery future")
            .expect("record acknowledged");
    }
}

/// A child process that is killed if the test ends (or fails) while it still runs.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A log line, as tests read it back.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LogLine {
    pub id: i32,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub last_updated: String,
    pub last_updated_micros: Option<i64>,
    pub discount_price: Option<f64>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub written_at: String,
    #[serde(skip)]
    pub slot: String,
}

pub fn read_log_lines(logs_dir: &Path) -> Vec<LogLine> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(logs_dir) else {
        return lines;
    };
    for entry in entries.flatten() {
        let slot = entry.file_name().to_string_lossy().into_owned();
        let path: PathBuf = entry.path().join("consumer_log.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            // A line being written right now may be incomplete: only complete lines count.
            if let Ok(mut parsed) = serde_json::from_str::<LogLine>(line) {
                parsed.slot.clone_from(&slot);
                lines.push(parsed);
            }
        }
    }
    lines
}

/// Lines per id, for loss and duplicate checks.
pub fn count_by_id(lines: &[LogLine]) -> HashMap<i32, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        *counts.entry(line.id).or_default() += 1;
    }
    counts
}

/// A sink that fails its `fail_at`-th write of records (the first is 1) after a pause, as a
/// slow fsync that fails would, without writing any of it, then works again. What the failed
/// batch held is kept in `failed` as (partition, offset) pairs.
pub struct FailingSink {
    inner: Box<dyn Sink>,
    writes: usize,
    fail_at: usize,
    failed: Arc<Mutex<Vec<(i32, i64)>>>,
}

impl FailingSink {
    pub fn wrap(
        fail_at: usize,
        failed: Arc<Mutex<Vec<(i32, i64)>>>,
    ) -> impl FnOnce(Box<dyn Sink>) -> Box<dyn Sink> {
        move |inner| {
            Box::new(Self {
                inner,
                writes: 0,
                fail_at,
                failed,
            })
        }
    }
}

impl Sink for FailingSink {
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError> {
        if !batch.records.is_empty() {
            self.writes += 1;
            if self.writes == self.fail_at {
                std::thread::sleep(Duration::from_millis(300));
                self.failed
                    .lock()
                    .unwrap()
                    .extend(batch.records.iter().map(|r| (r.partition, r.offset)));
                return Err(SinkError::Io {
                    action: "fsync",
                    path: PathBuf::from("injected"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "no space left on device (injected once)",
                    ),
                });
            }
        }
        self.inner.write(batch)
    }

    fn resume_positions(&self, partitions: &[i32]) -> Result<Positions, SinkError> {
        self.inner.resume_positions(partitions)
    }

    fn needs_keys(&self) -> bool {
        self.inner.needs_keys()
    }
}

/// The lowest offset per partition among `(partition, offset)` pairs.
pub fn first_offsets(pairs: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    for &(partition, offset) in pairs {
        let entry = first.entry(partition).or_insert(offset);
        *entry = (*entry).min(offset);
    }
    first
}

/// The group's committed offsets of `topic`'s `partitions` (absent: none committed).
pub async fn committed_offsets(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = testkit::kafka()
            .client_config()
            .set("group.id", &group)
            .create()
            .expect("consumer to read committed offsets");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for partition in 0..partitions {
            tpl.add_partition(&topic, partition);
        }
        consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets")
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    })
    .await
    .expect("committed offsets thread")
}

/// A consumer running in this process.
pub struct TestApp {
    pub port: u16,
    pub slot: String,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), consumer::RunError>>>,
}

impl TestApp {
    pub async fn spawn(config: Config) -> Self {
        Self::spawn_wrapping_sink(config, |sink| sink).await
    }

    /// Starts a consumer whose sink is passed through `wrap` (fault injection).
    pub async fn spawn_wrapping_sink(
        config: Config,
        wrap: impl FnOnce(Box<dyn Sink>) -> Box<dyn Sink>,
    ) -> Self {
        let app = Application::build_wrapping_sink(config, wrap)
            .await
            .expect("consumer builds");
        let port = app.port();
        let slot = app.slot().name();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            port,
            slot,
            shutdown,
            task: Some(task),
        }
    }

    /// Waits until the consumer stops on its own (a fatal error), and returns how it ended.
    pub async fn exited(mut self, timeout: Duration) -> Result<(), consumer::RunError> {
        let task = self.task.take().expect("not stopped yet");
        tokio::time::timeout(timeout, task)
            .await
            .expect("the consumer stops within the timeout")
            .expect("consumer task")
    }

    /// Graceful stop (as on SIGTERM).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("not stopped yet");
        task.await
            .expect("consumer task")
            .expect("consumer stops cleanly");
    }
}

impl Drop for TestApp {
    /// A failing test drops its apps without `stop`: stop their poll loops anyway, or the
    /// runtime would wait for those blocking threads forever.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Assignment {
    pub slot: String,
    pub group: String,
    /// Absent until the consumer knows it.
    #[serde(default)]
    pub member_id: Option<String>,
    pub partitions: Vec<i32>,
}

pub async fn assignment(port: u16) -> Option<Assignment> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/assignments"))
        .await
        .ok()?;
    response.json().await.ok()
}

/// Each port's partitions, when every port answers.
pub async fn assignments(ports: &[u16]) -> Option<Vec<Assignment>> {
    let mut all = Vec::new();
    for &port in ports {
        all.push(assignment(port).await?);
    }
    Some(all)
}

/// True when the assignments cover `0..partitions` exactly once.
pub fn covers_exactly(assignments: &[Assignment], partitions: i32) -> bool {
    let mut all: Vec<i32> = assignments
        .iter()
        .flat_map(|a| a.partitions.iter().copied())
        .collect();
    all.sort_unstable();
    all == (0..partitions).collect::<Vec<_>>()
}

/// The value of the metric sample `name{labels}` (exact text before the value), or 0 if absent.
/// A bare `name` sums all of its label sets.
pub async fn metric(port: u16, sample: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    metric_in(&text, sample)
}

pub fn metric_in(text: &str, sample: &str) -> f64 {
    let any_labels = !sample.contains('{');
    text.lines()
        .filter_map(|line| line.strip_prefix(sample))
        .filter_map(|rest| match rest.strip_prefix(' ') {
            Some(value) => Some(value),
            None if any_labels && rest.starts_with('{') => {
                rest.split_once("} ").map(|(_, value)| value)
            }
            None => None,
        })
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `line` without its ANSI colour codes (`ESC [ ... m`).
pub fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Commits `offsets` (`(partition, next offset)`) of `topic` for `group`, as a group that had
/// handled everything before them.
pub fn commit_offsets(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let committer: BaseConsumer = testkit::kafka()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("committing consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for &(partition, offset) in offsets {
        list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
            .expect("partition offset");
    }
    committer
        .commit(&list, CommitMode::Sync)
        .expect("commit offsets");
}

/// Asserts that the warnings containing `message` in the stderr file `path` name each partition
/// of `0..partitions` (`partition=N`), each together with every one of `fields`.
pub fn assert_warned_for_each_partition(
    path: &Path,
    message: &str,
    partitions: i32,
    fields: &[&str],
) {
    let stderr = std::fs::read_to_string(path).expect("stderr file");
    let warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(message))
        .map(without_colours)
        .collect();
    for partition in 0..partitions {
        assert!(
            warnings.iter().any(|l| {
                l.contains(&format!("partition={partition}"))
                    && fields.iter().all(|field| l.contains(field))
            }),
            "a warning names partition {partition} and {fields:?}: {warnings:?}"
        );
    }
}
