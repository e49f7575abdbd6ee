//! The original Python prototype's clients against ours, with the libraries it used
//! (confluent-kafka's `AvroDeserializer` and `AvroSerializer`, see `services/e2e/python/`):
//!
//! - its consumer reads what our producer produced: it decodes with the *latest registered*
//!   schema of the value subject as its reader schema and `json.dump`s the result, so every
//!   field must decode to a JSON-native value;
//! - our consumer reads what its producer produced with the prototype's schema.
//!
//! They need a Python with those libraries: `scripts/test.sh` makes one (`.venv`) and runs
//! these tests with `ORIGINAL_CLIENTS_PYTHON` set to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::avro::PRODUCT_SCHEMA_JSON;
use common::config::TopicConfig;
use common::registry::{RegistryClient, RegistryConfig};
use e2e::{get_json, read_logs, repo_file, Pipeline};
use serde_json::Value;

const IGNORED: &str = "needs ORIGINAL_CLIENTS_PYTHON (a Python with services/e2e/python/requirements.txt); scripts/test.sh runs it";

/// Runs one of `services/e2e/python/*.py` with the prototype's libraries and returns its JSON
/// summary (the last line of its standard output).
async fn run_python(script: &str, args: &[(&str, &str)]) -> Value {
    let python = std::env::var("ORIGINAL_CLIENTS_PYTHON")
        .unwrap_or_else(|_| panic!("ORIGINAL_CLIENTS_PYTHON is not set: {IGNORED}"));
    let mut command = tokio::process::Command::new(&python);
    command.arg(repo_file(&format!("services/e2e/python/{script}")));
    for (name, value) in args {
        command.arg(format!("--{name}")).arg(value);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 300 s"))
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(summary)
        .unwrap_or_else(|e| panic!("{script} printed no JSON summary ({e}):\n{stdout}\n{stderr}"))
}

/// id -> (name, category, price, last_updated) of the seed file.
fn seed_rows() -> BTreeMap<i64, (String, String, f64, String)> {
    let text = std::fs::read_to_string(repo_file("data/products.csv")).expect("seed file");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[0].parse().expect("id"),
                (
                    f[1].to_owned(),
                    f[2].to_owned(),
                    f[3].parse().expect("price"),
                    f[4].to_owned(),
                ),
            )
        })
        .collect()
}

fn read_json_lines(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            other => panic!("not a JSON object: {line} ({other:?})"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs ORIGINAL_CLIENTS_PYTHON; scripts/test.sh runs it"]
async fn the_original_consumer_reads_what_our_producer_produced() {
    let mut pipeline = Pipeline::new().await;
    let subject = format!("{}-value", pipeline.topic);
    // The subject as an earlier version of our producer left it (last_updated_micros was a
    // timestamp-micros then): our producer registers the current schema as a new version,
    // which becomes the reader schema of the original consumer.
    let registry = RegistryClient::new(RegistryConfig::new(&pipeline.registry_url));
    let earlier_id = registry
        .register(&subject, testkit::EARLIER_PRODUCT_SCHEMA_JSON)
        .await
        .expect("register the earlier schema");

    pipeline.start_updater(&[("UPDATES_PER_SECOND", "0")]).await;
    let updater = pipeline.updater_port.unwrap();
    testkit::wait_until(
        Duration::from_secs(60),
        "the updater to be ready",
        || async move { get_json(updater, "/ready").await },
    )
    .await;
    pipeline
        .start_producer(&[("CAPTURE_DELAY_MS", "100"), ("POLL_INTERVAL_MS", "100")])
        .await;
    let topic = TopicConfig {
        name: pipeline.topic.clone(),
        partitions: 10,
    };
    let records = testkit::read_topic(&topic, 50, Duration::from_secs(120)).await;
    assert_eq!(
        records.len(),
        50,
        "our producer produced the 50 seed products"
    );
    let current_id = registry
        .register(&subject, PRODUCT_SCHEMA_JSON)
        .await
        .expect("the current schema is registered");

    let out = pipeline.dir.path().join("original_consumer_log.json");
    let summary = run_python(
        "original_consumer.py",
        &[
            ("bootstrap", &testkit::kafka().bootstrap_servers),
            ("registry", &pipeline.registry_url),
            ("topic", &pipeline.topic),
            ("group", &testkit::unique_name("original_consumer")),
            ("out", &out.to_string_lossy()),
            ("expect", "50"),
        ],
    )
    .await;
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["written"], 50, "{summary}");

    let seed = seed_rows();
    let lines = read_json_lines(&out);
    let mut ids = BTreeSet::new();
    for line in &lines {
        let id = line["id"].as_i64().expect("id is a number");
        assert!(ids.insert(id), "product {id} twice");
        let (name, category, price, _) = &seed[&id];
        assert_eq!(line["name"], name.as_str());
        assert_eq!(line["category"], category.to_uppercase());
        assert_eq!(line["price"].as_f64(), Some(*price));
        // The exact change time is a number of microseconds, in the second the text names.
        let micros = line["last_updated_micros"]
            .as_i64()
            .unwrap_or_else(|| panic!("last_updated_micros is an integer: {line:?}"));
        let time = chrono::DateTime::from_timestamp_micros(micros).expect("valid time");
        assert_eq!(
            time.format("%Y-%m-%d %H:%M:%S").to_string(),
            line["last_updated"].as_str().expect("last_updated is text"),
            "product {id}"
        );
    }
    assert_eq!(ids, seed.keys().copied().collect::<BTreeSet<_>>());
    assert_ne!(
        current_id, earlier_id,
        "the current schema is a new version"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs ORIGINAL_CLIENTS_PYTHON; scripts/test.sh runs it"]
async fn our_consumer_reads_what_the_original_producer_produced() {
    let mut pipeline = Pipeline::new().await;
    let topic = TopicConfig {
        name: pipeline.topic.clone(),
        partitions: 10,
    };
    common::kafka::ensure_topic(&testkit::kafka(), &topic, 1)
        .await
        .expect("create the topic");
    let summary = run_python(
        "original_producer.py",
        &[
            ("bootstrap", &testkit::kafka().bootstrap_servers),
            ("registry", &pipeline.registry_url),
            ("topic", &pipeline.topic),
            (
                "schema",
                &repo_file("schemas/prototype_product_value.avsc").to_string_lossy(),
            ),
            (
                "products",
                &repo_file("data/products.csv").to_string_lossy(),
            ),
        ],
    )
    .await;
    assert_eq!(summary["produced"], 50, "{summary}");

    pipeline.start_consumer(&[]).await;
    let logs_dir = pipeline.logs_dir();
    let lines = testkit::wait_until(
        Duration::from_secs(120),
        "50 records in our consumer's log",
        || {
            let logs_dir = logs_dir.clone();
            async move {
                let lines = read_logs(&logs_dir);
                (lines.len() >= 50).then_some(lines)
            }
        },
    )
    .await;
    assert_eq!(lines.len(), 50);
    let seed = seed_rows();
    let mut ids = BTreeSet::new();
    for (_, line) in &lines {
        assert!(ids.insert(line.id), "product {} twice", line.id);
        let (name, category, price, last_updated) = &seed[&i64::from(line.id)];
        assert_eq!(&line.name, name);
        assert_eq!(
            line.category.as_deref(),
            Some(category.to_uppercase().as_str())
        );
        assert_eq!(line.price, *price);
        assert_eq!(&line.last_updated, last_updated);
        assert_eq!(
            line.last_updated_micros, None,
            "the prototype's records have none"
        );
        let discount = (category == "Cat_5").then(|| (price * 0.8 * 100.0).round() / 100.0);
        assert_eq!(line.discount_price, discount, "product {}", line.id);
    }
    assert_eq!(ids.len(), 50);
    pipeline.stop().await;
}
