//! Runs the whole pipeline in one process (each service as its own `Application`, exactly as its
//! binary would) against the test bed: for the end-to-end tests and `pipeline-bench`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::Env;
use common::CancellationToken;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// Where the pipeline's pieces live for one run.
pub struct Pipeline {
    pub database: testkit::TestDatabase,
    pub registry_url: String,
    pub topic: String,
    pub group: String,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    pub updater_port: Option<u16>,
    pub producer_port: Option<u16>,
    /// HTTP port of each consumer, by slot name.
    pub consumer_ports: BTreeMap<String, u16>,
}

impl Pipeline {
    /// A fresh database, registry, topic name, group and directory; nothing started yet.
    pub async fn new() -> Self {
        Self {
            database: testkit::TestDatabase::create().await,
            registry_url: testkit::spawn_registry().await,
            topic: testkit::unique_name("ps_e2e"),
            group: testkit::unique_name("ps_group"),
            dir: tempfile::tempdir().expect("temp dir"),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            updater_port: None,
            producer_port: None,
            consumer_ports: BTreeMap::new(),
        }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("consumer_logs")
    }

    /// The environment every service of this run shares, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Env {
        let kafka = testkit::kafka();
        let watermark = self.dir.path().join("time_track/last_read_timestamp.json");
        let logs = self.logs_dir();
        let mut env = Env::from_pairs([
            ("DATABASE_URL", self.database.url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers.as_str()),
            ("SCHEMA_REGISTRY_URL", self.registry_url.as_str()),
            ("TOPIC", self.topic.as_str()),
            ("TOPIC_PARTITIONS", "10"),
            ("TOPIC_REPLICATION_FACTOR", "1"),
            ("CONSUMER_GROUP", self.group.as_str()),
            ("HTTP_ADDR", "127.0.0.1:0"),
            // tansu 0.6 returns nothing of a record batch when a fetch starts in its middle.
            ("CONSUMER_RESUME_REWIND_RECORDS", "1000"),
        ])
        .with("WATERMARK_PATH", &watermark.to_string_lossy())
        .with("CONSUMER_LOGS_DIR", &logs.to_string_lossy())
        .with(
            "PRODUCTS_CSV",
            &repo_file("data/products.csv").to_string_lossy(),
        );
        for (name, value) in extra {
            env = env.with(name, value);
        }
        env
    }

    pub async fn start_updater(&mut self, extra: &[(&str, &str)]) {
        let config = product_updater::Config::from_env(&self.env(extra)).expect("updater config");
        let app = product_updater::Application::build(config)
            .await
            .expect("updater builds");
        self.updater_port = Some(app.port());
        let token = self.shutdown.clone();
        self.spawn("product-updater", async move {
            Ok(app.run_until_stopped(token).await?)
        });
    }

    pub async fn start_producer(&mut self, extra: &[(&str, &str)]) {
        let config = producer::Config::from_env(&self.env(extra)).expect("producer config");
        let app = producer::Application::build(config)
            .await
            .expect("producer builds");
        self.producer_port = Some(app.port());
        let token = self.shutdown.clone();
        self.spawn("producer", async move {
            Ok(app.run_until_stopped(token).await?)
        });
    }

    /// Starts one consumer; it claims the lowest free slot. Returns the slot name.
    pub async fn start_consumer(&mut self, extra: &[(&str, &str)]) -> String {
        let config = consumer::Config::from_env(&self.env(extra)).expect("consumer config");
        let app = consumer::Application::build(config)
            .await
            .expect("consumer builds");
        let slot = app.slot().to_string();
        self.consumer_ports.insert(slot.clone(), app.port());
        let token = self.shutdown.clone();
        self.spawn(&slot.clone(), async move {
            Ok(app.run_until_stopped(token).await?)
        });
        slot
    }

    fn spawn(
        &mut self,
        name: &str,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((name.to_owned(), tokio::spawn(task)));
    }

    /// Stops every service (as SIGTERM would) and waits for each to finish cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (name, task) in self.tasks.drain(..) {
            match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("{name} stopped with an error: {e:#}"),
                Ok(Err(e)) => panic!("{name} panicked: {e}"),
                Err(_) => panic!("{name} did not stop within 60 s of shutdown"),
            }
        }
        self.database.drop_database().await;
    }
}

/// A file of the repository, by its path from the repository root.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// One line of a consumer log, as far as the tests and the benchmark read it.
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    pub id: i32,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub last_updated: String,
    pub discount_price: Option<f64>,
    pub partition: i32,
    pub offset: i64,
    pub written_at: String,
    #[serde(default)]
    pub last_updated_micros: Option<i64>,
}

/// Every line of every `consumer_*/consumer_log.json` under `logs_dir`, with its slot name.
pub fn read_logs(logs_dir: &Path) -> Vec<(String, LogLine)> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(logs_dir) else {
        return lines;
    };
    for entry in entries.flatten() {
        let slot = entry.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(entry.path().join("consumer_log.json")) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed: LogLine = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad log line in {slot}: {e}: {line}"));
            lines.push((slot.clone(), parsed));
        }
    }
    lines
}

/// `GET http://127.0.0.1:{port}{path}` as JSON.
pub async fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}
