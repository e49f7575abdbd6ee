//! First-run benchmark: how long `scripts/run-native.sh` takes, on a machine where everything is
//! built and installed, from its start until all 50 seed products are in the consumer logs, and
//! where that time goes. Each run uses a fresh database, topic, consumer group and output
//! directory (a true first run), on the test bed's broker and database (`scripts/testbed.sh up`),
//! with the services' defaults otherwise.
//!
//! It binds the native ports (9101, 9102, 8081, 9111+): hold the machine's port lock.
//!
//! ```sh
//! cargo build --release -p e2e --bin first-run-bench
//! flock /tmp/productstream-ports.lock target/release/first-run-bench     # 3 runs
//! BENCH_RUNS=5 flock /tmp/productstream-ports.lock target/release/first-run-bench
//! ```
//!
//! Every part is the moment, counted from the script's start, at which the benchmark (polling
//! every 20 ms) first saw it: the registry, the updater and the producer answering, seeding done,
//! the topic's first record acknowledged (first capture), the first and the last consumer serving
//! `/assignments`, the group settled (all 10 partitions assigned), the first record and the 50th
//! seed product in a log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::repo_file;
use serde::Deserialize;

const UPDATER: &str = "http://127.0.0.1:9101";
const PRODUCER: &str = "http://127.0.0.1:9102";
const REGISTRY: &str = "http://127.0.0.1:8081";
const CONSUMERS: u16 = 5;
const SEED_PRODUCTS: usize = 50;
const POLL: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of one run, in the order they usually happen.
const PARTS: [&str; 9] = [
    "registry up",
    "updater up",
    "seeded",
    "producer up",
    "first consumer up",
    "all consumers up",
    "first capture",
    "group settled",
    "first record logged",
];
const DONE: &str = "50th product logged";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("BENCH_RUNS must be a whole number")?
        .unwrap_or(3);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    for url in [UPDATER, PRODUCER, REGISTRY] {
        anyhow::ensure!(
            http.get(format!("{url}/health")).send().await.is_err(),
            "{url} already answers: is a pipeline running? (stop it first)"
        );
    }
    let mut results: Vec<BTreeMap<&'static str, f64>> = Vec::new();
    for run in 1..=runs {
        let result = one_run(&http, run).await?;
        print_run(run, &result);
        results.push(result);
        // Let the previous run's processes and sockets go before the next one starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!();
    println!(
        "first run, {runs} runs: seconds from the start of run-native.sh (min / median / max)"
    );
    for part in PARTS.iter().chain([&DONE]) {
        let mut values: Vec<f64> = results
            .iter()
            .filter_map(|r| r.get(part).copied())
            .collect();
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            println!("  {part:<22} never seen");
            continue;
        }
        println!(
            "  {part:<22} {:>6.2} / {:>6.2} / {:>6.2}",
            values[0],
            values[values.len() / 2],
            values[values.len() - 1]
        );
    }
    Ok(())
}

fn print_run(run: usize, result: &BTreeMap<&'static str, f64>) {
    let parts: Vec<String> = PARTS
        .iter()
        .map(|part| match result.get(part) {
            Some(t) => format!("{part} {t:.2}"),
            None => format!("{part} -"),
        })
        .collect();
    match result.get(DONE) {
        Some(t) => println!(
            "run {run}: 50th product logged at {t:.2} s ({})",
            parts.join(", ")
        ),
        None => println!(
            "run {run}: the 50 products were not all logged ({})",
            parts.join(", ")
        ),
    }
}

async fn one_run(
    http: &reqwest::Client,
    run: usize,
) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let id = testkit::unique_name("first_run");
    // An empty database, as run-native.sh would create it.
    let database = testkit::TestDatabase::create().await;
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("consumer_logs");
    let output = dir.path().join("run-native.out");

    let started = Instant::now();
    let mut child = tokio::process::Command::new(repo_file("scripts/run-native.sh"))
        .env("TOPIC", &id)
        .env("CONSUMER_GROUP", &id)
        .env("DATABASE_URL", &database.url)
        .env("CONSUMER_LOGS_DIR", &logs)
        .env(
            "WATERMARK_PATH",
            dir.path().join("time_track/last_read_timestamp.json"),
        )
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output)?)
        .stderr(std::fs::File::create(dir.path().join("run-native.err"))?)
        .spawn()
        .context("start scripts/run-native.sh")?;

    let mut seen: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mark = |seen: &mut BTreeMap<&'static str, f64>, part: &'static str, happened: bool| {
        if happened && !seen.contains_key(part) {
            seen.insert(part, started.elapsed().as_secs_f64());
        }
    };
    while !seen.contains_key(DONE) && started.elapsed() < TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "run {run}: run-native.sh exited early ({status}); its output: {}",
                output.display()
            );
            break;
        }
        mark(
            &mut seen,
            "registry up",
            ok(http, &format!("{REGISTRY}/health")).await,
        );
        mark(
            &mut seen,
            "updater up",
            ok(http, &format!("{UPDATER}/health")).await,
        );
        mark(
            &mut seen,
            "seeded",
            metric(http, UPDATER, "product_updater_seed_completed").await >= 1.0,
        );
        mark(
            &mut seen,
            "producer up",
            ok(http, &format!("{PRODUCER}/health")).await,
        );
        mark(
            &mut seen,
            "first capture",
            metric(http, PRODUCER, "producer_records_produced_total").await >= 1.0,
        );
        let mut answering = 0;
        let mut partitions = 0;
        for slot in 1..=CONSUMERS {
            if let Some(assignment) = assignments(http, slot).await {
                answering += 1;
                partitions += assignment.partitions.len();
            }
        }
        mark(&mut seen, "first consumer up", answering >= 1);
        mark(&mut seen, "all consumers up", answering == CONSUMERS);
        mark(&mut seen, "group settled", partitions == 10);
        let logged = seed_ids_logged(&logs);
        mark(&mut seen, "first record logged", !logged.is_empty());
        mark(&mut seen, DONE, logged.len() >= SEED_PRODUCTS);
        tokio::time::sleep(POLL).await;
    }

    // Ctrl-C's path: SIGTERM stops everything the script started.
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    match tokio::time::timeout(Duration::from_secs(90), child.wait()).await {
        Ok(status) => {
            status?;
        }
        Err(_) => anyhow::bail!("run-native.sh did not stop within 90 s of SIGTERM"),
    }
    database.drop_database().await;
    if !seen.contains_key(DONE) {
        let kept = dir.keep();
        eprintln!(
            "run {run}: output of run-native.sh kept in {} (process logs: .testbed/logs/)",
            kept.display()
        );
    }
    Ok(seen)
}

async fn ok(http: &reqwest::Client, url: &str) -> bool {
    http.get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The value of an unlabelled sample in `base`'s `/metrics`, or 0.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[derive(Deserialize)]
struct Assignment {
    partitions: Vec<i32>,
}

async fn assignments(http: &reqwest::Client, slot: u16) -> Option<Assignment> {
    let url = format!("http://127.0.0.1:{}/assignments", 9110 + slot);
    http.get(url).send().await.ok()?.json().await.ok()
}

/// The seed products (ids 1 to 50) found in the logs under `logs`.
fn seed_ids_logged(logs: &Path) -> BTreeSet<i64> {
    #[derive(Deserialize)]
    struct Line {
        id: i64,
    }
    let mut ids = BTreeSet::new();
    let Ok(slots) = std::fs::read_dir(logs) else {
        return ids;
    };
    for slot in slots.flatten() {
        let path: PathBuf = slot.path().join("consumer_log.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            // A line being written may be cut: skip it, it is read whole next time.
            if let Ok(line) = serde_json::from_str::<Line>(line) {
                if (1..=SEED_PRODUCTS as i64).contains(&line.id) {
                    ids.insert(line.id);
                }
            }
        }
    }
    ids
}
