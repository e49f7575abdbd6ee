//! Running a real product-updater against a real database, and talking to it over HTTP.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::config::Env;
use common::CancellationToken;
use product_updater::{Application, Config};
use rust_decimal::Decimal;
use sqlx::{MySqlConnection, Row};
use testkit::TestDatabase;
use tokio::task::JoinHandle;

/// How long a test waits for something that normally takes well under a second.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The repository's seed file.
pub fn repository_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/products.csv")
}

/// `(id, name, category, price)` for every row of the repository's CSV, read independently of the
/// service's own reader.
pub fn repository_rows() -> Vec<(i32, String, Option<String>, Decimal)> {
    let mut reader = csv::Reader::from_path(repository_csv()).expect("open data/products.csv");
    reader
        .records()
        .map(|record| {
            let record = record.expect("CSV record");
            (
                record[0].parse().expect("id"),
                record[1].to_owned(),
                Some(record[2].to_owned()).filter(|c| !c.is_empty()),
                Decimal::from_str(&record[3]).expect("price"),
            )
        })
        .collect()
}

/// The environment for an app on an ephemeral port seeding `db` from `csv`.
pub fn env_for(database_url: &str, csv: &Path, updates_per_second: &str) -> Env {
    Env::default()
        .with("DATABASE_URL", database_url)
        .with("PRODUCTS_CSV", csv.to_str().expect("UTF-8 path"))
        .with("UPDATES_PER_SECOND", updates_per_second)
        .with("HTTP_ADDR", "127.0.0.1:0")
        .with("DATABASE_RETRY_MAX_MS", "500")
}

/// A product-updater running in this process.
pub struct RunningApp {
    pub address: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), product_updater::Error>>,
}

impl RunningApp {
    pub async fn start(env: Env) -> Self {
        // Logs only when asked for: TEST_LOG=1 cargo test -p product-updater
        if std::env::var_os("TEST_LOG").is_some() {
            common::telemetry::init(&Env::from_process()).expect("telemetry");
        }
        let config = Config::from_env(&env).expect("valid test configuration");
        let application = Application::build(config)
            .await
            .expect("application builds");
        let address = format!("http://127.0.0.1:{}", application.port());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Self {
            address,
            client: reqwest::Client::new(),
            shutdown,
            handle,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("HTTP request")
    }

    pub async fn metrics_text(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics body")
    }

    /// The value of one sample, such as `product_updater_rows_rejected_total{reason="empty_name"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics_text().await, sample)
            .unwrap_or_else(|| panic!("/metrics has no sample {sample}"))
    }

    /// Waits until seeding has finished, as `/metrics` reports it.
    pub async fn wait_for_seed(&self) {
        testkit::wait_until(PATIENCE, "seeding to finish", || async {
            (self.metric("product_updater_seed_completed").await == 1.0).then_some(())
        })
        .await;
    }

    /// Cancels the app and waits for it to stop.
    pub async fn stop(self) -> Result<(), product_updater::Error> {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the app stops after shutdown")
            .expect("the app task does not panic")
    }
}

/// Finds `sample` (name plus labels exactly as printed) in Prometheus text.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().expect("numeric sample"))
        })
}

/// One row of the `product` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProduct {
    pub id: i32,
    pub name: String,
    pub category: Option<String>,
    pub price: Decimal,
    pub last_updated: DateTime<Utc>,
}

pub async fn products(conn: &mut MySqlConnection) -> Vec<StoredProduct> {
    sqlx::query("SELECT id, name, category, price, last_updated FROM product ORDER BY id")
        .fetch_all(conn)
        .await
        .expect("read products")
        .into_iter()
        .map(|row| StoredProduct {
            id: row.get("id"),
            name: row.get("name"),
            category: row.get("category"),
            price: row.get("price"),
            last_updated: row.get("last_updated"),
        })
        .collect()
}

pub async fn database_now(conn: &mut MySqlConnection) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT NOW(6)")
        .fetch_one(conn)
        .await
        .expect("database clock")
}

/// A fresh database, and a connection to it.
pub async fn fresh_database() -> (TestDatabase, MySqlConnection) {
    let db = TestDatabase::create().await;
    let conn = db.connect().await;
    (db, conn)
}
