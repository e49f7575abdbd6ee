//! How many catalog changes per second the product-updater sustains against the test MariaDB.
//!
//! `cargo bench -p product-updater --bench update_rate` (needs MariaDB on 127.0.0.1:3306).
//! `BENCH_SECONDS` (default 10) sets how long each run lasts, `BENCH_RATES` (default
//! `1000,100000`) the `UPDATES_PER_SECOND` targets; a target far above what the database can do
//! measures the ceiling. `BENCH_CONNECTIONS` (default: the service's default) sets
//! `DATABASE_MAX_CONNECTIONS`, which is also the number of change workers.
//!
//! Baseline, measured in the same run on the same server: one connection issuing autocommitted
//! single-row `UPDATE`s back to back, which is what one commit (and its log flush) costs here.

use std::path::Path;
use std::time::{Duration, Instant};

use common::config::Env;
use common::CancellationToken;
use product_updater::{Application, Config};
use sqlx::Connection;
use testkit::TestDatabase;

#[tokio::main]
async fn main() {
    // Logs only when asked for, e.g. TEST_LOG=1 RUST_LOG=warn.
    if std::env::var_os("TEST_LOG").is_some() {
        common::telemetry::init(&Env::from_process()).expect("telemetry");
    }
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|r| r.trim().parse().expect("BENCH_RATES is a list of numbers"))
        .collect();
    let window = Duration::from_secs_f64(seconds);
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/products.csv");

    let baseline = sequential_commits_per_second(&csv, window).await;
    println!("baseline: one connection, sequential autocommit UPDATEs: {baseline:.0}/s");

    for rate in rates {
        let run = measure_app(&csv, rate, window).await;
        println!(
            "UPDATES_PER_SECOND={rate}: applied {:.0}/s ({:.1}% of target, {:.2}x baseline), \
             dropped {:.0}, database errors {:.0}",
            run.applied_per_second,
            100.0 * run.applied_per_second / rate,
            run.applied_per_second / baseline,
            run.dropped,
            run.errors,
        );
    }
}

async fn seeded_database(csv: &Path) -> TestDatabase {
    let db = TestDatabase::create().await;
    let app = start(&db, csv, 0.0).await;
    wait_for_sample(&app.address, "product_updater_seed_completed", 1.0).await;
    app.stop().await;
    db
}

async fn sequential_commits_per_second(csv: &Path, window: Duration) -> f64 {
    let db = seeded_database(csv).await;
    let mut conn = db.connect().await;
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed() < window {
        let id = (commits % 50) as i32 + 1;
        sqlx::query("UPDATE product SET price = price + 0.01 WHERE id = ?")
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("baseline update");
        commits += 1;
    }
    let rate = commits as f64 / started.elapsed().as_secs_f64();
    conn.close().await.expect("close");
    db.drop_database().await;
    rate
}

struct Run {
    applied_per_second: f64,
    dropped: f64,
    errors: f64,
}

async fn measure_app(csv: &Path, rate: f64, window: Duration) -> Run {
    let db = seeded_database(csv).await;
    let app = start(&db, csv, rate).await;
    wait_for_sample(&app.address, "product_updater_seed_completed", 1.0).await;
    // Let the pacing settle, then measure a window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = snapshot(&app.address).await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = snapshot(&app.address).await;
    let elapsed = started.elapsed().as_secs_f64();
    app.stop().await;
    db.drop_database().await;
    Run {
        applied_per_second: (after.applied - before.applied) / elapsed,
        dropped: after.dropped - before.dropped,
        errors: after.errors - before.errors,
    }
}

struct Snapshot {
    applied: f64,
    dropped: f64,
    errors: f64,
}

async fn snapshot(address: &str) -> Snapshot {
    let text = metrics(address).await;
    let applied = ["price", "category", "new_product"]
        .iter()
        .map(|kind| {
            sample(
                &text,
                &format!("product_updater_updates_applied_total{{kind=\"{kind}\"}}"),
            )
        })
        .sum();
    Snapshot {
        applied,
        dropped: sample(&text, "product_updater_updates_dropped_total"),
        errors: sample(&text, "product_updater_database_errors_total"),
    }
}

struct RunningApp {
    address: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), product_updater::Error>>,
}

impl RunningApp {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("app task")
            .expect("app stops cleanly");
    }
}

async fn start(db: &TestDatabase, csv: &Path, rate: f64) -> RunningApp {
    let mut env = Env::default()
        .with("DATABASE_URL", &db.url)
        .with("PRODUCTS_CSV", csv.to_str().expect("UTF-8 path"))
        .with("UPDATES_PER_SECOND", &rate.to_string())
        .with("HTTP_ADDR", "127.0.0.1:0");
    if let Ok(connections) = std::env::var("BENCH_CONNECTIONS") {
        env = env.with("DATABASE_MAX_CONNECTIONS", &connections);
    }
    let application = Application::build(Config::from_env(&env).expect("config"))
        .await
        .expect("build");
    let address = format!("http://127.0.0.1:{}", application.port());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    RunningApp {
        address,
        shutdown,
        handle,
    }
}

async fn metrics(address: &str) -> String {
    reqwest::get(format!("{address}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            (sample == name).then(|| value.parse().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("no sample {name}"))
}

async fn wait_for_sample(address: &str, name: &str, value: f64) {
    testkit::wait_until(Duration::from_secs(60), name, || async {
        (sample(&metrics(address).await, name) == value).then_some(())
    })
    .await;
}
