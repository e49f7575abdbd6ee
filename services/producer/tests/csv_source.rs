//! `SOURCE=csv` against the real broker: a CSV file streamed to a topic (typed JSON or Avro via
//! the registry), bad rows reported and skipped, restarts that neither resend nor skip, follow
//! mode, a changed file refused at start, and the real binary killed with SIGKILL mid-file.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use common::avro::unframe;
use common::config::{Env, TopicConfig};
use common::registry::{RegistryClient, RegistryConfig};
use producer::csv_source::position::CsvPosition;
use producer::{Application, Config};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use support::RunningProducer;

const PARTITIONS: i32 = 4;

/// One test's private world: a topic, a registry, a directory for the CSV and position files.
struct CsvBed {
    topic: TopicConfig,
    registry_url: String,
    dir: tempfile::TempDir,
}

impl CsvBed {
    async fn new() -> Self {
        common::telemetry::init(&Env::from_pairs([("RUST_LOG", "info,producer=debug")]))
            .expect("telemetry");
        Self {
            topic: testkit::create_topic(PARTITIONS).await,
            registry_url: testkit::spawn_registry().await,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn csv_path(&self) -> PathBuf {
        self.dir.path().join("customers.csv")
    }

    fn position_path(&self) -> PathBuf {
        self.dir.path().join("time_track/csv_position.json")
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("SOURCE", "csv".to_owned()),
            ("CSV_PATH", self.csv_path().display().to_string()),
            ("CSV_KEY_COLUMN", "customer_id".to_owned()),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                testkit::kafka().bootstrap_servers,
            ),
            ("SCHEMA_REGISTRY_URL", self.registry_url.clone()),
            ("TOPIC", self.topic.name.clone()),
            ("TOPIC_PARTITIONS", PARTITIONS.to_string()),
            ("WATERMARK_PATH", self.position_path().display().to_string()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("POLL_INTERVAL_MS", "100".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn config(&self, overrides: &[(&str, &str)]) -> Config {
        let mut vars: HashMap<String, String> = self.env().into_iter().collect();
        for (k, v) in overrides {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        Config::from_env(&Env::from_pairs(
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
        .expect("valid test config")
    }

    /// Runs the producer to the end of the file (CSV_FOLLOW=false) and returns its metrics.
    async fn run_to_end(&self, overrides: &[(&str, &str)]) -> producer::metrics::ProducerMetrics {
        let app = Application::build(self.config(overrides))
            .await
            .expect("producer builds");
        let metrics = app.metrics();
        tokio::time::timeout(
            Duration::from_secs(60),
            app.run_until_stopped(tokio_util::sync::CancellationToken::new()),
        )
        .await
        .expect("the producer stops by itself at the end of the file")
        .expect("the producer stops without an error");
        metrics
    }

    async fn read(&self, expected: usize) -> Vec<OwnedMessage> {
        testkit::read_topic(&self.topic, expected, Duration::from_secs(60)).await
    }
}

fn customers_csv() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/customers.csv"
    ))
    .expect("data/customers.csv")
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn json_value(message: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(message.payload().expect("a value")).expect("the value is JSON")
}

/// Keys and how often each arrived.
fn key_counts(messages: &[OwnedMessage]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in messages {
        *counts.entry(testkit::key_text(m)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_csv_arrives_once_as_typed_json_keyed_by_customer_id_and_a_restart_resends_nothing(
) {
    let bed = CsvBed::new().await;
    let text = customers_csv();
    std::fs::write(bed.csv_path(), &text).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 99);

    let metrics = bed.run_to_end(&[("BATCH_SIZE", "30")]).await;
    assert_eq!(metrics.rows_captured.get(), 99);
    assert_eq!(metrics.records_produced.get(), 99);

    let messages = bed.read(99).await;
    assert_eq!(messages.len(), 99, "every row once");
    let by_key: HashMap<String, &OwnedMessage> =
        messages.iter().map(|m| (testkit::key_text(m), m)).collect();
    assert_eq!(by_key.len(), 99, "no key twice");
    for row in &rows {
        let message = by_key[row[0]];
        assert_eq!(
            message.partition(),
            common::kafka::partition_for_key(row[0].as_bytes(), PARTITIONS),
            "murmur2 partition of the key"
        );
        let value = json_value(message);
        assert_eq!(value["customer_id"], row[0].parse::<i64>().unwrap());
        assert_eq!(value["name"], row[1]);
        assert_eq!(value["city"], row[2]);
        assert_eq!(value["registration_date"], row[5]);
        assert_eq!(value["is_active"], row[6] == "True", "{value}");
        assert!(value["is_active"].is_boolean());
        assert_eq!(
            value.as_object().unwrap().keys().len(),
            7,
            "one field per column"
        );
        assert_eq!(
            header(message, "csv_path").as_deref(),
            Some(
                std::fs::canonicalize(bed.csv_path())
                    .unwrap()
                    .to_str()
                    .unwrap()
            )
        );
        assert!(header(message, "csv_offset").is_some());
    }
    let position = CsvPosition::load(&bed.position_path()).unwrap().unwrap();
    assert_eq!(position.byte_offset, text.len() as u64);
    assert_eq!(position.line, 101);

    // A restart after completion sends nothing again.
    let metrics = bed.run_to_end(&[("BATCH_SIZE", "30")]).await;
    assert_eq!(metrics.rows_captured.get(), 0);
    assert_eq!(metrics.records_produced.get(), 0);
    assert_eq!(bed.read(99).await.len(), 99);
}

const CUSTOMER_SCHEMA: &str = r#"{
  "type": "record", "name": "Customer", "namespace": "com.example.ecommerce",
  "fields": [
    {"name": "customer_id", "type": "int"},
    {"name": "name", "type": "string"},
    {"name": "city", "type": ["null", "string"], "default": null},
    {"name": "registration_date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "is_active", "type": "boolean"}
  ]}"#;

async fn decode_avro(registry: &RegistryClient, message: &OwnedMessage) -> Vec<(String, Avro)> {
    let (schema_id, mut datum) = unframe(message.payload().expect("value")).expect("wire format");
    let schema = registry.schema(schema_id).await.expect("writer schema");
    match apache_avro::from_avro_datum(&schema, &mut datum, None).expect("value decodes") {
        Avro::Record(fields) => fields,
        other => panic!("not a record: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_values_decode_with_the_schema_from_the_registry() {
    let bed = CsvBed::new().await;
    std::fs::write(bed.csv_path(), customers_csv()).unwrap();
    let schema_path = bed.dir.path().join("customer.avsc");
    std::fs::write(&schema_path, CUSTOMER_SCHEMA).unwrap();
    let schema_env = schema_path.display().to_string();
    bed.run_to_end(&[("VALUE_FORMAT", "avro"), ("VALUE_SCHEMA", &schema_env)])
        .await;

    let registry = RegistryClient::new(RegistryConfig::new(&bed.registry_url));
    let messages = bed.read(99).await;
    assert_eq!(messages.len(), 99);
    let epoch = chrono::NaiveDate::default();
    let mut seen = HashSet::new();
    for message in &messages {
        let fields = decode_avro(&registry, message).await;
        let key = testkit::key_text(message);
        assert_eq!(
            fields[0],
            ("customer_id".into(), Avro::Int(key.parse().unwrap()))
        );
        assert!(seen.insert(key));
        if key_text_is(message, "0") {
            let days = (chrono::NaiveDate::from_ymd_opt(2023, 6, 29).unwrap() - epoch).num_days();
            assert_eq!(
                fields,
                vec![
                    ("customer_id".into(), Avro::Int(0)),
                    ("name".into(), Avro::String("Customer_0".into())),
                    (
                        "city".into(),
                        Avro::Union(1, Box::new(Avro::String("Pune".into())))
                    ),
                    ("registration_date".into(), Avro::Date(days as i32)),
                    ("is_active".into(), Avro::Boolean(false)),
                ]
            );
        }
    }
    assert!(seen.contains("0"));
    // Registered under {TOPIC}-value.
    let versions: Vec<u32> = reqwest::get(format!(
        "{}/subjects/{}-value/versions",
        bed.registry_url, bed.topic.name
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(versions, vec![1]);
}

fn key_text_is(message: &OwnedMessage, key: &str) -> bool {
    testkit::key_text(message) == key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_with_their_line_numbers_and_skipped() {
    let bed = CsvBed::new().await;
    let dead_letters = testkit::create_topic(1).await;
    let mut text = b"customer_id,name,city,state,country,registration_date,is_active\n".to_vec();
    text.extend_from_slice(b"1,Customer_1,Pune,Maharashtra,India,2023-06-29,True\n"); // line 2
    text.extend_from_slice(b"2,Customer_2,Pune\n"); // line 3: short row
    text.extend_from_slice(b"x3,Customer_3,Pune,MH,India,2023-06-29,True\n"); // line 4: bad int
    text.extend_from_slice(b",Customer_4,Pune,MH,India,2023-06-29,True\n"); // line 5: empty key
    text.extend_from_slice(b"5,Customer_\xff5,Pune,MH,India,2023-06-29,True\n"); // line 6: not UTF-8
    text.extend_from_slice(b"6,\"Customer\n6\",,MH,India,2023-06-29,false\n"); // lines 7-8: fine
    text.extend_from_slice(b"7,Customer_7,Pune,MH,India,29/06/2023,True\n"); // line 9: bad date
    text.extend_from_slice(b"8,Customer_8,Pune,MH,India,2023-06-30,FALSE"); // line 10, no newline
    std::fs::write(bed.csv_path(), &text).unwrap();
    let schema_path = bed.dir.path().join("customer.avsc");
    std::fs::write(&schema_path, CUSTOMER_SCHEMA).unwrap();
    let schema_env = schema_path.display().to_string();
    let metrics = bed
        .run_to_end(&[
            ("VALUE_FORMAT", "avro"),
            ("VALUE_SCHEMA", &schema_env),
            ("DEAD_LETTER_TOPIC", &dead_letters.name),
            ("BATCH_SIZE", "3"),
        ])
        .await;

    let registry = RegistryClient::new(RegistryConfig::new(&bed.registry_url));
    let messages = bed.read(3).await;
    let keys: HashSet<String> = messages.iter().map(testkit::key_text).collect();
    assert_eq!(keys, HashSet::from(["1".into(), "6".into(), "8".into()]));
    assert_eq!(messages.len(), 3);
    for message in &messages {
        let fields = decode_avro(&registry, message).await;
        if key_text_is(message, "6") {
            assert_eq!(fields[1].1, Avro::String("Customer\n6".into()));
            assert_eq!(fields[2].1, Avro::Union(0, Box::new(Avro::Null)));
        }
    }

    let rejected = |reason: &str| metrics.rows_rejected.with_label_values(&[reason]).get();
    assert_eq!(rejected("column_count"), 1);
    assert_eq!(rejected("invalid_value"), 2);
    assert_eq!(rejected("empty_key"), 1);
    assert_eq!(rejected("non_utf8"), 1);
    assert_eq!(metrics.rows_captured.get(), 8);

    let reports = testkit::read_topic(&dead_letters, 5, Duration::from_secs(60)).await;
    let mut by_line: HashMap<u64, serde_json::Value> = HashMap::new();
    for report in &reports {
        let value = json_value(report);
        by_line.insert(value["line"].as_u64().unwrap(), value);
    }
    let expected = [
        (3, "column_count", "the row has 3 fields, the header 7"),
        (4, "invalid_value", "customer_id"),
        (5, "empty_key", "customer_id"),
        (6, "non_utf8", "column name"),
        (9, "invalid_value", "registration_date"),
    ];
    assert_eq!(by_line.len(), expected.len(), "{by_line:?}");
    for (line, reason, detail) in expected {
        let report = &by_line[&line];
        assert_eq!(report["reason"], reason, "line {line}: {report}");
        assert!(
            report["detail"].as_str().unwrap().contains(detail),
            "line {line}: {report}"
        );
    }
    assert_eq!(by_line[&3]["row"], "2,Customer_2,Pune");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_sends_appended_rows_and_a_restart_resumes_after_them() {
    let bed = CsvBed::new().await;
    let header = "customer_id,name,city,state,country,registration_date,is_active\n";
    let row = |i: usize| format!("{i},Customer_{i},Pune,MH,India,2023-06-29,True\n");
    let first: String = (0..20).map(row).collect();
    std::fs::write(bed.csv_path(), format!("{header}{first}")).unwrap();

    let producer = RunningProducer::start(bed.config(&[("CSV_FOLLOW", "true")])).await;
    producer.wait_produced(20).await;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(bed.csv_path())
        .unwrap();
    let second: String = (20..30).map(row).collect();
    file.write_all(second.as_bytes()).unwrap();
    // Half a line: it must wait for the rest.
    let line_30 = row(30);
    let (head, tail) = line_30.split_at(12);
    file.write_all(head.as_bytes()).unwrap();
    file.flush().unwrap();
    producer.wait_produced(30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        producer.metrics.records_produced.get(),
        30,
        "the half-written line is not sent"
    );
    file.write_all(tail.as_bytes()).unwrap();
    producer.wait_produced(31).await;
    let (status, body) = producer.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    producer.stop().await.expect("stops cleanly");

    let messages = bed.read(31).await;
    let counts = key_counts(&messages);
    assert_eq!(counts.len(), 31);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(messages
        .iter()
        .any(|m| key_text_is(m, "30") && json_value(m)["name"] == "Customer_30"));

    // Partial progress, then more rows: a restart sends only the new ones.
    let third: String = (31..40).map(row).collect();
    file.write_all(third.as_bytes()).unwrap();
    let metrics = bed.run_to_end(&[]).await;
    assert_eq!(metrics.rows_captured.get(), 9);
    assert_eq!(metrics.records_produced.get(), 9);
    let messages = bed.read(40).await;
    let counts = key_counts(&messages);
    assert_eq!(counts.len(), 40);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_or_a_missing_key_column_stops_the_start_with_a_clear_error() {
    let bed = CsvBed::new().await;
    let text = customers_csv();
    std::fs::write(bed.csv_path(), &text).unwrap();
    bed.run_to_end(&[]).await;

    // The same path, other contents: refused, nothing sent.
    std::fs::write(
        bed.csv_path(),
        text.replace("Customer_50,", "Customer_Fifty,"),
    )
    .unwrap();
    let err = Application::build(bed.config(&[]))
        .await
        .err()
        .expect("a changed file is refused")
        .to_string();
    assert!(
        err.contains("changed since") && err.contains("customers.csv"),
        "{err}"
    );

    // Truncated.
    std::fs::write(bed.csv_path(), &text[..text.len() / 2]).unwrap();
    let err = Application::build(bed.config(&[]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fewer than"), "{err}");

    // A key column the header does not have: named, with the header.
    std::fs::write(bed.csv_path(), &text).unwrap();
    let err = Application::build(bed.config(&[("CSV_KEY_COLUMN", "id")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("\"id\"") && err.contains("customer_id, name, city"),
        "{err}"
    );

    // A missing file.
    let err = Application::build(bed.config(&[("CSV_PATH", "/nonexistent/c.csv")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("CSV_PATH") && err.contains("/nonexistent/c.csv"),
        "{err}"
    );
}

/// The producer binary; killed when dropped.
struct ProducerProcess(Child);

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_binary(bed: &CsvBed, log: &Path) -> ProducerProcess {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_producer"))
        .env_clear()
        .envs(bed.env())
        .env("BATCH_SIZE", "500")
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map(ProducerProcess)
        .expect("start the producer binary")
}

fn durable_offset(bed: &CsvBed) -> u64 {
    CsvPosition::load(&bed.position_path())
        .ok()
        .flatten()
        .map_or(0, |p| p.byte_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_file_loses_nothing_and_the_read_back_prevents_duplicates() {
    const ROWS: usize = 40_000;
    const KILLS: usize = 4;
    let bed = CsvBed::new().await;
    let log = bed.dir.path().join("producer.log");
    let mut text =
        String::from("customer_id,name,city,state,country,registration_date,is_active\n");
    for i in 0..ROWS {
        text.push_str(&format!(
            "{i},Customer_{i},City_{},State,India,2023-06-29,{}\n",
            i % 97,
            if i % 2 == 0 { "True" } else { "False" }
        ));
    }
    std::fs::write(bed.csv_path(), &text).unwrap();
    let len = text.len() as u64;

    for kill in 1..=KILLS {
        let target = len * kill as u64 / (KILLS as u64 + 1);
        let mut process = spawn_binary(&bed, &log);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while durable_offset(&bed) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress to byte {target}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Land the kill at different moments of the next batch (enqueued, partly acknowledged).
        tokio::time::sleep(Duration::from_millis(3 + 9 * kill as u64)).await;
        process.0.kill().expect("SIGKILL");
        process.0.wait().unwrap();
    }
    let mut last = spawn_binary(&bed, &log);
    let status = tokio::task::spawn_blocking(move || {
        let status = last.0.wait();
        (status, last)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "exits 0 at the end of the file");
    assert_eq!(durable_offset(&bed), len);

    let messages = bed.read(ROWS).await;
    let counts = key_counts(&messages);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let log_text = std::fs::read_to_string(&log).unwrap();
    let read_back: Vec<u64> = log_text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "read back the topic after the CSV position")
        .filter_map(|v| v["rows_already_in_topic"].as_u64())
        .collect();
    println!(
        "{KILLS} kills: {} records for {ROWS} rows, {duplicates} duplicates; rows found by the read-backs: {read_back:?}",
        messages.len()
    );
    assert_eq!(counts.len(), ROWS, "every row arrived");
    assert_eq!(duplicates, 0, "no row twice");
}
