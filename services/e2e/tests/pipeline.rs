//! The whole pipeline against the real test bed: product-updater seeds MariaDB from
//! `data/products.csv`, the producer captures the rows into a fresh 10-partition topic, and five
//! consumers in one group write them to their logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::{get_json, read_logs, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_seed_product_lands_once_transformed_and_each_consumer_owns_two_partitions() {
    let mut pipeline = Pipeline::new().await;
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
    let producer = pipeline.producer_port.unwrap();
    testkit::wait_until(
        Duration::from_secs(60),
        "the producer to be ready",
        || async move { get_json(producer, "/ready").await },
    )
    .await;

    let mut slots = Vec::new();
    for _ in 0..5 {
        slots.push(pipeline.start_consumer(&[]).await);
    }
    assert_eq!(
        slots,
        [
            "consumer_1",
            "consumer_2",
            "consumer_3",
            "consumer_4",
            "consumer_5"
        ]
    );

    // The group settles on two partitions each, together all ten.
    let ports = pipeline.consumer_ports.clone();
    let assignments = testkit::wait_until(
        Duration::from_secs(180),
        "five consumers with two partitions each",
        || {
            let ports = ports.clone();
            async move {
                let mut owned = BTreeMap::new();
                for (slot, port) in &ports {
                    let body = get_json(*port, "/assignments").await?;
                    assert_eq!(body["slot"], slot.as_str());
                    let partitions: Vec<i64> = body["partitions"]
                        .as_array()?
                        .iter()
                        .filter_map(serde_json::Value::as_i64)
                        .collect();
                    if partitions.len() != 2 {
                        return None;
                    }
                    owned.insert(slot.clone(), partitions);
                }
                Some(owned)
            }
        },
    )
    .await;
    let all: BTreeSet<i64> = assignments.values().flatten().copied().collect();
    assert_eq!(
        all,
        (0..10).collect(),
        "together the ten partitions, no overlap: {assignments:?}"
    );

    // All 50 products arrive exactly once, transformed, in the partition their key maps to.
    let logs_dir = pipeline.logs_dir();
    let lines = testkit::wait_until(
        Duration::from_secs(120),
        "50 records in the consumer logs",
        || {
            let logs_dir = logs_dir.clone();
            async move {
                let lines = read_logs(&logs_dir);
                (lines.len() >= 50).then_some(lines)
            }
        },
    )
    .await;
    // Give a late duplicate the chance to show up before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = if read_logs(&logs_dir).len() == lines.len() {
        lines
    } else {
        read_logs(&logs_dir)
    };
    assert_eq!(lines.len(), 50, "each product exactly once");

    let expected = seed_rows();
    let mut seen = BTreeSet::new();
    for (slot, line) in &lines {
        assert!(seen.insert(line.id), "product {} written twice", line.id);
        let (name, category, price) = &expected[&line.id];
        assert_eq!(&line.name, name);
        assert_eq!(line.price, *price);
        assert_eq!(
            line.category.as_deref(),
            Some(category.to_uppercase().as_str())
        );
        if category == "Cat_5" {
            let discounted = (price * 0.8 * 100.0).round() / 100.0;
            assert_eq!(line.discount_price, Some(discounted), "product {}", line.id);
        } else {
            assert_eq!(line.discount_price, None, "product {}", line.id);
        }
        let partition = common::kafka::partition_for_key(line.id.to_string().as_bytes(), 10);
        assert_eq!(
            line.partition, partition,
            "product {} is in the murmur2 partition of its key",
            line.id
        );
        assert!(
            assignments[slot].contains(&i64::from(partition)),
            "{slot} wrote partition {partition} it does not own: {assignments:?}"
        );
    }
    assert_eq!(seen, expected.keys().copied().collect());

    pipeline.stop().await;
}

/// id -> (name, category, price) from the repository's seed file.
fn seed_rows() -> BTreeMap<i32, (String, String, f64)> {
    let text = std::fs::read_to_string(e2e::repo_file("data/products.csv")).expect("seed file");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (
                fields[0].parse().expect("id"),
                (
                    fields[1].to_owned(),
                    fields[2].to_owned(),
                    fields[3].parse().expect("price"),
                ),
            )
        })
        .collect()
}
