//! Consumer throughput against the real broker, compared with a bare rdkafka consumer reading the
//! same records in the same run (the ceiling).
//!
//! ```text
//! cargo bench -p consumer --bench consumer-bench                  # 200 000 records, 3 rounds
//! BENCH_RECORDS=1000000 BENCH_ROUNDS=1 cargo bench -p consumer --bench consumer-bench
//! ```
//!
//! Needs the test broker (tansu on `TEST_KAFKA_BOOTSTRAP`, default 127.0.0.1:9092); starts its own
//! dev schema registry. Steps: preload N products (Avro, Confluent wire format) into a fresh
//! 10-partition topic; then `BENCH_ROUNDS` times: read them all with a bare `BaseConsumer`
//! (assign all partitions from the beginning, touch every payload), and run the real `consumer`
//! binary (default settings, a fresh group and logs directory: decode with the registry schema,
//! transform, write, fsync, checkpoint, commit) until its `consumer_records_written_total`
//! reaches N; finally one more bare read. Each side is timed from its first record, the
//! consumer until its last batch is durable; each side's best run counts (the cores are shared
//! with the broker). Prints both rates, their ratio (target ≥ 50 %) and the consumer's peak RSS
//! (`VmHWM`, the highest of its runs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use common::avro::{encode_product, PRODUCT_SCHEMA_JSON};
use common::config::TopicConfig;
use common::product::Product;
use common::registry::{RegistryClient, RegistryConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 10;

fn main() {
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .map(|v| v.parse().expect("BENCH_RECORDS: a whole number of records"))
        .unwrap_or(200_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("BENCH_ROUNDS: a whole number of rounds"))
        .unwrap_or(3)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(records, rounds));
}

async fn run(records: usize, rounds: usize) {
    let registry_url = testkit::spawn_registry().await;
    let topic = testkit::create_topic(PARTITIONS).await;
    let schema_id = RegistryClient::new(RegistryConfig::new(&registry_url))
        .register(&format!("{}-value", topic.name), PRODUCT_SCHEMA_JSON)
        .await
        .expect("register schema");

    let started = Instant::now();
    preload(&topic, schema_id, records).await;
    println!(
        "preloaded {records} records into {} ({PARTITIONS} partitions) in {:.1} s",
        topic.name,
        started.elapsed().as_secs_f64()
    );

    // Alternate bare and consumer runs and keep each side's best: the cores are shared with the
    // broker, and single runs of a fraction of a second vary by ±25 %.
    let mut bare = Vec::new();
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let raw = bare_read(&topic, records).await;
        println!(
            "round {round}: bare rdkafka consumer: {:>9.0} records/s",
            rate(records, raw)
        );
        bare.push(raw);
        let run = consumer_read(&topic, &registry_url, records).await;
        println!(
            "round {round}: consumer (decode, transform, write, fsync, commit): {:>9.0} records/s, peak RSS {:.1} MiB",
            rate(records, run.elapsed),
            run.peak_rss_kib as f64 / 1024.0
        );
        runs.push(run);
    }
    let raw = bare_read(&topic, records).await;
    println!(
        "last:    bare rdkafka consumer: {:>9.0} records/s",
        rate(records, raw)
    );
    bare.push(raw);

    let ceiling = rate(records, bare.iter().copied().min().expect("bare runs"));
    let best = runs
        .iter()
        .min_by_key(|run| run.elapsed)
        .expect("consumer runs");
    let consumer_rate = rate(records, best.elapsed);
    let peak_rss_kib = runs.iter().map(|run| run.peak_rss_kib).max().unwrap_or(0);
    println!();
    println!(
        "records:                {records} (best of {rounds} consumer runs, {} bare runs)",
        bare.len()
    );
    println!("ceiling (bare, best):   {ceiling:.0} records/s");
    println!("consumer (best):        {consumer_rate:.0} records/s");
    println!(
        "ratio:                  {:.1} % (target >= 50 %)",
        100.0 * consumer_rate / ceiling
    );
    println!(
        "consumer peak RSS:      {:.1} MiB (highest of the runs)",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "batches written:        {} (mean write+fsync {:.2} ms, best run)",
        best.batches, best.mean_write_ms
    );
}

/// One run of the consumer binary.
struct ConsumerRun {
    /// From its first consumed record to its last durable batch, scaled to all records.
    elapsed: Duration,
    peak_rss_kib: u64,
    mean_write_ms: f64,
    batches: u64,
}

fn rate(records: usize, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

fn product(id: i32) -> Product {
    let time = NaiveDateTime::parse_from_str("2024-05-01 10:00:00.000000", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    Product::new(
        id,
        format!("Product_{id}"),
        Some(format!("Cat_{}", id % 10)),
        10.0 + f64::from(id % 1000) * 0.25,
        time,
    )
}

async fn preload(topic: &TopicConfig, schema_id: u32, records: usize) {
    let producer: FutureProducer = testkit::kafka()
        .client_config()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(20_000);
    for id in 1..=i32::try_from(records).expect("records fit in i32") {
        let value = encode_product(schema_id, &product(id));
        let key = id.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::to(&topic.name).key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() == 20_000 {
            for delivery in futures::future::join_all(std::mem::take(&mut pending)).await {
                delivery.expect("delivery").expect("acknowledged");
            }
        }
    }
    for delivery in futures::future::join_all(pending).await {
        delivery.expect("delivery").expect("acknowledged");
    }
}

/// Time for a bare consumer to receive `records` records, from its first record on (connection
/// set-up excluded, as for the consumer).
async fn bare_read(topic: &TopicConfig, records: usize) -> Duration {
    let topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = testkit::kafka()
            .client_config()
            .set("group.id", testkit::unique_name("bench_bare"))
            .set("enable.auto.commit", "false")
            // The consumer's own fetch settings (services/consumer/src/group.rs), so both read alike.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.queue.backoff.ms", "20")
            .create()
            .expect("bare consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..topic.partitions {
            assignment
                .add_partition_offset(&topic.name, p, Offset::Beginning)
                .expect("offset");
        }
        consumer.assign(&assignment).expect("assign");
        let mut started = None;
        let mut seen = 0usize;
        let mut bytes = 0usize;
        while seen < records {
            match consumer.poll(Duration::from_secs(30)) {
                Some(Ok(message)) => {
                    started.get_or_insert_with(Instant::now);
                    bytes += message.payload().map_or(0, <[u8]>::len);
                    seen += 1;
                }
                Some(Err(e)) => eprintln!("bare consumer error: {e}"),
                None => panic!("bare consumer: no record for 30 s after {seen}"),
            }
        }
        let elapsed = started.expect("records were read").elapsed();
        assert!(bytes > 0);
        // The first record started the clock: N − 1 records in `elapsed`.
        elapsed.mul_f64(records as f64 / (records - 1) as f64)
    })
    .await
    .expect("bare reader")
}

/// Runs the consumer binary (a fresh group and logs directory) until it wrote `records` records.
async fn consumer_read(topic: &TopicConfig, registry_url: &str, records: usize) -> ConsumerRun {
    let logs = tempfile::tempdir().expect("logs dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_consumer"))
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            testkit::kafka().bootstrap_servers,
        )
        .env("SCHEMA_REGISTRY_URL", registry_url)
        .env("TOPIC", &topic.name)
        .env("CONSUMER_GROUP", testkit::unique_name("bench_group"))
        .env("CONSUMER_LOGS_DIR", logs.path())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the consumer binary");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    let scrape = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    // Start the clock at the first consumed record (group join and connection set-up excluded).
    let wait_started = Instant::now();
    let (started, consumed_at_start) = loop {
        if let Some(text) = scrape().await {
            let consumed = sum(&text, "consumer_records_consumed_total");
            if consumed > 0.0 {
                break (Instant::now(), consumed);
            }
        }
        assert!(
            wait_started.elapsed() < Duration::from_secs(300),
            "the consumer never started consuming"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Until the end, the bench stats the slot's checkpoint (no work for the consumer) every
    // millisecond and scrapes /metrics only every 100 ms: each scrape costs the consumer CPU
    // (gathering every metric, reading /proc), which at a scrape every few ms was a visible
    // share of the run. The checkpoint is replaced (a new file) after each batch's fsync: the
    // end is the moment its last version appeared.
    let checkpoint = logs.path().join("consumer_1/consumer_log.checkpoint.json");
    let checkpoint_version = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&checkpoint).map_or((0, 0, 0), |m| (m.ino(), m.mtime(), m.mtime_nsec()))
    };
    let (mut seen, mut replaced_at) = (checkpoint_version(), Instant::now());
    let mut next_scrape = Instant::now();
    let metrics = loop {
        let version = checkpoint_version();
        if version != seen {
            (seen, replaced_at) = (version, Instant::now());
        }
        if Instant::now() >= next_scrape {
            let text = scrape().await.expect("metrics");
            if sum(&text, "consumer_records_written_total") >= records as f64 {
                break text;
            }
            next_scrape = Instant::now() + Duration::from_millis(100);
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "consumer too slow or stuck"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    // The last checkpoint may have appeared after the last stat.
    if checkpoint_version() != seen {
        replaced_at = Instant::now();
    }
    let measured = replaced_at - started;
    let elapsed = measured.mul_f64(records as f64 / (records as f64 - consumed_at_start));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("child status");
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let batches = sum(&metrics, "consumer_write_duration_seconds_count");
    let mean_write_ms =
        1000.0 * sum(&metrics, "consumer_write_duration_seconds_sum") / batches.max(1.0);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("SIGTERM");
    let exit = child.wait().expect("consumer exit");
    assert!(exit.success(), "consumer exited with {exit:?}");
    let lines = std::fs::read_to_string(logs.path().join("consumer_1/consumer_log.json"))
        .expect("log")
        .lines()
        .count();
    assert_eq!(lines, records, "every record written once");
    ConsumerRun {
        elapsed,
        peak_rss_kib,
        mean_write_ms,
        batches: batches as u64,
    }
}

/// Sum of all samples of metric `name` (any labels).
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
