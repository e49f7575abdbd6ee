//! Producer throughput against its ceiling, on the running test bed (MariaDB on 127.0.0.1:3306,
//! a Kafka broker on 127.0.0.1:9092, see `scripts/`):
//!
//! ```text
//! cargo bench -p producer --bench throughput
//! BENCH_ROWS=200000 KAFKA_COMPRESSION=lz4 cargo bench -p producer --bench throughput
//! ```
//!
//! 1. Inserts `BENCH_ROWS` (default 100 000) rows into a fresh database.
//! 2. `BENCH_ROUNDS` rounds (default 3) of two runs, each to a fresh topic:
//!    - raw ceiling: librdkafka (a `ThreadedProducer` with the producer's own settings) produces
//!      the same rows, pre-encoded; timed from the first send to the last ack;
//!    - the real producer (`Application`, default `BATCH_SIZE` unless set) captures the table
//!      from the beginning; timed from the start of its first read to the last ack.
//!
//! Prints rows/s of every run, the ratio of the best producer run to the best raw run (target:
//! at least 80 %), and each round's own ratio with their median.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::avro::PRODUCT_SCHEMA_JSON;
use common::config::Env;
use common::registry::{RegistryClient, RegistryConfig};
use producer::config::Compression;
use producer::encode::{encode_row, EncodedRecord};
use producer::sink::producer_client_config;
use producer::source::SourceRow;
use producer::{Application, Config};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let env = Env::from_process();
    // `cargo bench` passes `--bench`; nothing else is expected.
    let rows: i32 = env
        .parse("BENCH_ROWS", 100_000, "a number of rows")
        .expect("BENCH_ROWS");
    let compression: Compression = env
        .one_of("KAFKA_COMPRESSION", "none", &Compression::NAMES)
        .expect("KAFKA_COMPRESSION")
        .parse()
        .expect("known compression");
    let rounds: u32 = env
        .parse_checked("BENCH_ROUNDS", 3, "a number of rounds from 1 to 20", |n| {
            (1..=20).contains(n)
        })
        .expect("BENCH_ROUNDS");
    let batch_size = env.string("BATCH_SIZE", &Config::DEFAULT_BATCH_SIZE.to_string());
    common::telemetry::init(&Env::from_pairs([("RUST_LOG", "warn")])).expect("telemetry");

    println!("producer throughput benchmark: {rows} rows, {rounds} rounds, compression {compression}, BATCH_SIZE {batch_size}");
    let db = testkit::TestDatabase::create().await;
    let mut conn = db.connect().await;
    sqlx::migrate!("../../schemas/migrations/mysql")
        .run(&mut conn)
        .await
        .expect("migrations");
    let started = Instant::now();
    insert_rows(&mut conn, rows).await;
    println!(
        "inserted {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let registry_url = testkit::spawn_registry().await;
    let registry = RegistryClient::new(RegistryConfig::new(&registry_url));

    // The same payloads the producer will send, encoded up front for the raw runs.
    let source_rows = read_rows(&mut conn).await;
    conn.close().await.ok();

    // The raw runs send the producer's payloads: encoded with the id the producer's schema gets.
    let schema_id = registry
        .register("throughput-bench-value", PRODUCT_SCHEMA_JSON)
        .await
        .expect("register schema");
    let encoding = Instant::now();
    let records: Vec<EncodedRecord> = source_rows
        .iter()
        .map(|row| encode_row(schema_id, row).expect("benchmark rows encode"))
        .collect();
    println!(
        "Avro encoding alone (one thread): {:.0} rows/s",
        rate(rows, encoding.elapsed())
    );

    // Rounds alternate raw and producer runs on fresh topics, so both meet the broker in the
    // same states; the best round of each is compared (like the consumer benchmark): on a shared
    // 2-core machine a single run of either varies by a third.
    let mut raw_times = Vec::new();
    let mut producer_times = Vec::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let raw_topic = testkit::create_topic(10).await;
        let cpu = cpu_seconds();
        let raw =
            tokio::task::block_in_place(|| raw_produce(&raw_topic.name, &records, compression));
        println!(
            "  raw librdkafka:            {:>8.0} rows/s  ({:.2} s)",
            rate(rows, raw),
            raw.as_secs_f64()
        );
        println!("    CPU seconds: {}", cpu_used_since(&cpu));
        raw_times.push(raw);

        if round == 1 {
            // Let the rows age past the producer's capture delay so only throughput is measured.
            tokio::time::sleep(Config::DEFAULT_CAPTURE_DELAY).await;
        }
        let cpu = cpu_seconds();
        let (producer_time, producer_total) =
            run_producer(&db.url, &registry_url, rows, &batch_size, compression).await;
        println!(
            "  producer (MySQL -> acked): {:>8.0} rows/s  ({:.2} s; {:.2} s including start-up)",
            rate(rows, producer_time),
            producer_time.as_secs_f64(),
            producer_total.as_secs_f64()
        );
        println!(
            "    CPU seconds (including start-up): {}",
            cpu_used_since(&cpu)
        );
        producer_times.push(producer_time);
    }

    let ceiling = *raw_times.iter().min().expect("at least one round");
    let producer_best = *producer_times.iter().min().expect("at least one round");
    println!(
        "best of {rounds}: raw librdkafka {:.0} rows/s, producer {:.0} rows/s",
        rate(rows, ceiling),
        rate(rows, producer_best)
    );
    let mut round_ratios: Vec<f64> = raw_times
        .iter()
        .zip(&producer_times)
        .map(|(raw, producer)| raw.as_secs_f64() / producer.as_secs_f64())
        .collect();
    round_ratios.sort_by(f64::total_cmp);
    println!(
        "rounds' own ratios: {} (median {:.0} %)",
        round_ratios
            .iter()
            .map(|r| format!("{:.0} %", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * round_ratios[round_ratios.len() / 2]
    );
    println!(
        "ratio producer / raw ceiling: {:.0} % (target >= 80 %)",
        100.0 * ceiling.as_secs_f64() / producer_best.as_secs_f64()
    );
    db.drop_database().await;
}

fn rate(rows: i32, took: Duration) -> f64 {
    f64::from(rows) / took.as_secs_f64()
}

async fn insert_rows(conn: &mut sqlx::MySqlConnection, rows: i32) {
    const PER_STATEMENT: i32 = 2000;
    let mut id = 1;
    while id <= rows {
        let end = (id + PER_STATEMENT).min(rows + 1);
        let values: Vec<String> = (id..end)
            .map(|i| {
                format!(
                    "({i}, 'Product_{i}', 'Cat_{}', {}.{:02})",
                    i % 10,
                    1 + i % 500,
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
        .expect("insert rows");
        id = end;
    }
}

/// `(id, name, category, price, last_updated)` as selected below.
type BenchRow = (
    i64,
    String,
    Option<String>,
    f64,
    chrono::DateTime<chrono::Utc>,
);

async fn read_rows(conn: &mut sqlx::MySqlConnection) -> Vec<SourceRow> {
    let rows: Vec<BenchRow> = sqlx::query_as(
        "SELECT id, name, category, CAST(price AS DOUBLE), last_updated FROM product ORDER BY last_updated, id",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("read rows");
    rows.into_iter()
        .map(|(id, name, category, price, last_updated)| SourceRow {
            id: producer::position::RowKey::Int(id),
            name: Some(name),
            category,
            price: Some(price),
            last_updated: last_updated.naive_utc(),
        })
        .collect()
}

/// Counts acknowledgements.
struct AckCounter {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for AckCounter {}

impl ProducerContext for AckCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces `records` to `topic` with the producer's settings; returns the time from the first
/// send to the last acknowledgement.
fn raw_produce(topic: &str, records: &[EncodedRecord], compression: Compression) -> Duration {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<AckCounter> =
        producer_client_config(&testkit::kafka(), compression)
            .create_with_context(AckCounter {
                acked: Arc::clone(&acked),
                failed: Arc::clone(&failed),
            })
            .expect("raw producer");
    // Warm up before timing: connect, learn the topic's partitions and get the idempotent
    // producer id (librdkafka may otherwise spend ~0.5 s on that inside the timed part). The
    // producer measured below is warm as well: its clock starts at its first read.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    producer
        .send(BaseRecord::to(topic).key("warm-up").payload("warm-up"))
        .map_err(|(e, _)| e)
        .expect("warm-up record");
    producer
        .flush(Duration::from_secs(30))
        .expect("warm-up flush");
    acked.store(0, Ordering::Relaxed);
    let started = Instant::now();
    for record in records {
        loop {
            match producer.send(
                BaseRecord::to(topic)
                    .key(record.key.as_bytes())
                    .payload(&record.value),
            ) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err((e, _)) => panic!("raw produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let took = started.elapsed();
    assert_eq!(
        acked.load(Ordering::Relaxed),
        records.len() as u64,
        "every raw record acknowledged"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    took
}

/// Runs the real producer until it acknowledged `rows` records. Returns the time from the start
/// of its first read to the last ack, and the time including start-up.
async fn run_producer(
    database_url: &str,
    registry_url: &str,
    rows: i32,
    batch_size: &str,
    compression: Compression,
) -> (Duration, Duration) {
    let topic = testkit::create_topic(10).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let watermark = dir.path().join("watermark.json");
    let kafka = testkit::kafka().bootstrap_servers;
    let config = Config::from_env(&Env::from_pairs([
        ("DATABASE_URL", database_url),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.as_str()),
        ("SCHEMA_REGISTRY_URL", registry_url),
        ("TOPIC", topic.name.as_str()),
        ("WATERMARK_PATH", watermark.to_str().expect("UTF-8 path")),
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("BATCH_SIZE", batch_size),
        ("KAFKA_COMPRESSION", compression.as_str()),
    ]))
    .expect("config");
    let app = Application::build(config).await.expect("producer builds");
    let metrics = app.metrics();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    // Sample the metrics every millisecond: the first read's end minus its duration is when
    // capture started.
    let mut capture_started = None;
    // CPU used from the end of the first read on: start-up excluded.
    let mut cpu_after_first_read = None;
    loop {
        if capture_started.is_none() && metrics.poll_duration.get_sample_count() > 0 {
            let first_read = Duration::from_secs_f64(metrics.poll_duration.get_sample_sum());
            capture_started = Some(Instant::now() - first_read);
            cpu_after_first_read = Some((cpu_seconds(), Instant::now()));
        }
        if metrics.records_produced.get() >= rows as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "producer did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let finished = Instant::now();
    println!(
        "  producer reads: {} batches, {:.2} s reading them in total",
        metrics.poll_duration.get_sample_count(),
        metrics.poll_duration.get_sample_sum()
    );
    if let Some((cpu, at)) = &cpu_after_first_read {
        let window = finished - *at;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // One reading for both figures.
        let now = cpu_seconds();
        let busy =
            now.get(MACHINE).copied().unwrap_or(0.0) - cpu.get(MACHINE).copied().unwrap_or(0.0);
        println!(
            "  CPU seconds after the first read ({:.2} s): {}; the machine was busy {:.1} of its {cores} cores",
            window.as_secs_f64(),
            cpu_used_between(cpu, &now),
            busy / window.as_secs_f64()
        );
    }
    shutdown.cancel();
    task.await.expect("producer task").expect("producer ran");
    let capture_started = capture_started.expect("at least one read");
    (finished - capture_started, finished - started)
}

/// CPU seconds used since `before`, per process group, as text.
fn cpu_used_since(before: &std::collections::BTreeMap<String, f64>) -> String {
    cpu_used_between(before, &cpu_seconds())
}

/// CPU seconds used from `before` to `now` (two [`cpu_seconds`] readings), as text.
fn cpu_used_between(
    before: &std::collections::BTreeMap<String, f64>,
    now: &std::collections::BTreeMap<String, f64>,
) -> String {
    let used: Vec<String> = now
        .iter()
        .map(|(name, now)| {
            format!(
                "{name} {:.2}",
                now - before.get(name).copied().unwrap_or(0.0)
            )
        })
        .collect();
    used.join(", ")
}

/// The key of [`cpu_seconds`] for every process of the machine together.
const MACHINE: &str = "machine";

/// CPU seconds (user + system) used so far by this process (the producer runs in it), MariaDB,
/// tansu (all tansu processes together) and the whole machine (every process and the kernel,
/// [`MACHINE`]), read from `/proc` (Linux; empty elsewhere).
fn cpu_seconds() -> std::collections::BTreeMap<String, f64> {
    let mut used = std::collections::BTreeMap::new();
    // The first line of /proc/stat: `cpu  user nice system idle iowait irq softirq steal ...`.
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        if ticks.len() >= 5 {
            let idle = ticks[3] + ticks[4];
            used.insert(
                MACHINE.to_owned(),
                (ticks.iter().sum::<f64>() - idle) / 100.0,
            );
        }
    }
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = match &stat[open + 1..close] {
            _ if pid == me => "this process",
            "mariadbd" | "mysqld" => "database",
            "tansu" => "broker",
            _ => continue,
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
        });
        *used.entry(name.to_owned()).or_insert(0.0) += ticks / 100.0;
    }
    used
}
