//! Whole-pipeline benchmark: product-updater changing the catalog at a steady rate, the producer
//! and five consumers, all with their default settings, against the test bed
//! (`scripts/testbed.sh up`). Prints the end-to-end latency from each row's `last_updated` to the
//! moment its log line was written (p50, p99, max) and the sustained throughput.
//!
//! ```sh
//! cargo run --release -p e2e --bin pipeline-bench            # 1000 changes/s for 60 s
//! BENCH_RATE=2000 BENCH_SECONDS=30 cargo run --release -p e2e --bin pipeline-bench
//! ```
//!
//! Latency is measured on the records written during the measuring window only (after the seed
//! and a 10 s warm-up), so start-up and the group's first rebalance are not counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use e2e::{get_json, read_logs, Pipeline};
use rdkafka::Message;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let rate: f64 = env_or("BENCH_RATE", 1000.0)?;
    let seconds: u64 = env_or("BENCH_SECONDS", 60)?;
    let consumers: usize = env_or("BENCH_CONSUMERS", 5)?;
    let warmup = Duration::from_secs(10);

    let mut pipeline = Pipeline::new().await;
    // Seed only, so the group can settle before the measured stream starts.
    pipeline.start_updater(&[("UPDATES_PER_SECOND", "0")]).await;
    let updater = pipeline.updater_port.expect("updater port");
    testkit::wait_until(Duration::from_secs(60), "seeding", || async move {
        get_json(updater, "/ready").await
    })
    .await;
    pipeline.start_producer(&[]).await;
    for _ in 0..consumers {
        pipeline.start_consumer(&[]).await;
    }
    let ports: Vec<u16> = pipeline.consumer_ports.values().copied().collect();
    let settle = Instant::now();
    testkit::wait_until(Duration::from_secs(240), "the group to settle", || {
        let ports = ports.clone();
        async move {
            let mut total = 0;
            for port in &ports {
                total += get_json(*port, "/assignments").await?["partitions"]
                    .as_array()?
                    .len();
            }
            (total == 10).then_some(())
        }
    })
    .await;
    eprintln!(
        "group settled in {:.1} s; starting {rate} changes/s",
        settle.elapsed().as_secs_f64()
    );

    // The measured stream: a second updater would fight over ids, so restart the one we have
    // with the benchmark rate (it skips rows already seeded).
    let rate_text = rate.to_string();
    pipeline
        .start_updater(&[("UPDATES_PER_SECOND", rate_text.as_str())])
        .await;
    tokio::time::sleep(warmup).await;
    let window_start = Utc::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let window_end = Utc::now();
    // Let the last changes of the window drain through.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // When the producer handed each record to Kafka (its CreateTime), to split the latency into
    // capture (change -> produced) and delivery (produced -> log line written).
    let lines = read_logs(&pipeline.logs_dir());
    let topic = common::config::TopicConfig {
        name: pipeline.topic.clone(),
        partitions: 10,
    };
    let produced_at: HashMap<(i32, i64), i64> =
        testkit::read_topic(&topic, lines.len(), Duration::from_secs(60))
            .await
            .iter()
            .filter_map(|m| Some(((m.partition(), m.offset()), m.timestamp().to_millis()?)))
            .collect();

    let mut latencies = Vec::new();
    let mut capture = Vec::new();
    let mut delivery = Vec::new();
    for (_, line) in lines {
        let Some(changed) = line
            .last_updated_micros
            .and_then(DateTime::<Utc>::from_timestamp_micros)
        else {
            continue;
        };
        if changed < window_start || changed >= window_end {
            continue;
        }
        let written: DateTime<Utc> = line.written_at.parse()?;
        latencies.push((written - changed).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        if let Some(&produced) = produced_at.get(&(line.partition, line.offset)) {
            let written_ms = written.timestamp_micros() as f64 / 1000.0;
            let changed_ms = changed.timestamp_micros() as f64 / 1000.0;
            capture.push(produced as f64 - changed_ms);
            delivery.push(written_ms - produced as f64);
        }
    }
    pipeline.stop().await;
    anyhow::ensure!(
        !latencies.is_empty(),
        "no records were written during the measuring window"
    );
    latencies.sort_by(f64::total_cmp);
    capture.sort_by(f64::total_cmp);
    delivery.sort_by(f64::total_cmp);
    let pick = |q: f64| quantile(&latencies, q);
    let window = (window_end - window_start).num_milliseconds() as f64 / 1000.0;
    println!(
        "pipeline-bench: {consumers} consumers, updater at {rate} changes/s, {window:.1} s window"
    );
    println!("  records written in window : {}", latencies.len());
    println!(
        "  sustained throughput      : {:.0} records/s",
        latencies.len() as f64 / window
    );
    println!("  end-to-end latency p50    : {:.1} ms", pick(0.50));
    println!("  end-to-end latency p99    : {:.1} ms", pick(0.99));
    println!(
        "  end-to-end latency max    : {:.1} ms",
        latencies[latencies.len() - 1]
    );
    if !capture.is_empty() {
        println!(
            "  of which capture (change -> produced, Kafka CreateTime, ms resolution): p50 {:.1} ms, p99 {:.1} ms",
            quantile(&capture, 0.5),
            quantile(&capture, 0.99)
        );
        println!(
            "  of which delivery (produced -> log line written):                     p50 {:.1} ms, p99 {:.1} ms",
            quantile(&delivery, 0.5),
            quantile(&delivery, 0.99)
        );
    }
    println!("  (several changes of one product between two captures reach the log once, as its latest state)");
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}
