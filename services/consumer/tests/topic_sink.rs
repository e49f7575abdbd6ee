//! `CONSUMER_SINK=topic` (prototype 004's Kafka-to-Kafka processing): records are filtered,
//! enriched and produced to the output topic keyed like the input; undecodable input goes to the
//! dead-letter topic; a restart after a graceful stop produces nothing twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::config::TopicConfig;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use support::{metric, Bed, LONG};

fn headers(message: &OwnedMessage) -> BTreeMap<String, String> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                    (h.key.to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn value(message: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(message.payload().expect("a value")).expect("the value is JSON")
}

fn login(n: usize, locale: &str) -> serde_json::Value {
    serde_json::json!({
        "user_id": format!("user-{n}"),
        "app_version": "2.3.0",
        "device_type": if n % 2 == 0 { "android" } else { "iOS" },
        "ip": "199.172.111.135",
        "locale": locale,
        "device_id": format!("593-47-{n:04}"),
        "timestamp": (1_694_479_551 + n).to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_events_are_filtered_enriched_and_keyed_like_the_input() {
    let bed = Bed::new(3).await;
    let output = TopicConfig {
        name: testkit::unique_name("ps_processed"),
        partitions: 3,
    };
    let mut kept = BTreeSet::new();
    for n in 0..30 {
        let locale = ["RU", "US", "DE"][n % 3];
        if locale == "RU" {
            kept.insert(format!("user-{n}"));
        }
        let event = login(n, locale).to_string();
        bed.produce_raw(&format!("user-{n}"), event.as_bytes())
            .await;
    }
    bed.produce_raw("broken", b"{\"user_id\": ").await;

    let app = bed
        .spawn_app_with(&[
            ("INPUT_FORMAT", "json"),
            ("CONSUMER_SINK", "topic"),
            ("OUTPUT_TOPIC", &output.name),
            ("CONSUMER_FILTER", "locale == \"RU\""),
        ])
        .await;
    let processed = testkit::read_topic(&output, kept.len(), LONG).await;
    let port = app.port;
    let filtered = metric(port, "consumer_records_filtered_total").await;
    let dead = metric(port, "consumer_dlq_records_total{reason=\"decode\"}").await;
    app.stop().await;

    assert_eq!(processed.len(), kept.len(), "each RU event once");
    let mut seen = BTreeSet::new();
    for message in &processed {
        let key = testkit::key_text(message);
        let value = value(message);
        assert_eq!(value["user_id"], key.as_str(), "keyed like the input");
        assert_eq!(value["locale"], "RU");
        assert_eq!(
            message.partition(),
            common::kafka::partition_for_key(key.as_bytes(), output.partitions),
            "same murmur2 partitioning as Java clients"
        );
        let n: i64 = key.trim_start_matches("user-").parse().unwrap();
        let expected_time = chrono::DateTime::from_timestamp(1_694_479_551 + n, 0).unwrap();
        assert_eq!(
            value["event_time"],
            expected_time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
        assert!(value["processed_at"].as_str().unwrap().ends_with('Z'));
        let headers = headers(message);
        assert_eq!(headers["source.topic"], bed.topic.name);
        assert!(headers["source.offset"].parse::<i64>().is_ok());
        assert!(headers["source.partition"].parse::<i32>().is_ok());
        seen.insert(key);
    }
    assert_eq!(seen, kept);
    assert_eq!(filtered, 20.0, "20 events of other locales filtered out");
    assert_eq!(dead, 1.0, "the broken record went to the dead-letter topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn products_by_category_and_a_restart_produces_nothing_twice() {
    let bed = Bed::new(3).await;
    let output = TopicConfig {
        name: testkit::unique_name("ps_processed"),
        partitions: 3,
    };
    let settings = [
        ("CONSUMER_SINK", "topic"),
        ("OUTPUT_TOPIC", output.name.as_str()),
        ("CONSUMER_FILTER", "category in (\"Cat_5\", \"Cat_7\")"),
    ];
    // Bed::product(id) has category Cat_{id % 10}.
    let wanted = |ids: std::ops::RangeInclusive<i32>| -> BTreeSet<i64> {
        ids.filter(|id| id % 10 == 5 || id % 10 == 7)
            .map(i64::from)
            .collect()
    };
    bed.produce_products(1..=200).await;
    let app = bed.spawn_app_with(&settings).await;
    let first = testkit::read_topic(&output, wanted(1..=200).len(), LONG).await;
    app.stop().await;
    assert_eq!(first.len(), wanted(1..=200).len());

    bed.produce_products(201..=300).await;
    let app = bed.spawn_app_with(&settings).await;
    let all = testkit::read_topic(&output, wanted(1..=300).len(), LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.stop().await;

    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for message in &all {
        let value = value(message);
        let id = value["id"].as_i64().unwrap();
        assert_eq!(testkit::key_text(message), id.to_string());
        let category = value["category"].as_str().unwrap();
        assert!(category == "CAT_5" || category == "CAT_7", "{value}");
        let price = value["price"].as_f64().unwrap();
        match category {
            "CAT_5" => assert_eq!(
                value["discount_price"].as_f64(),
                Some((price * 0.8 * 100.0).round() / 100.0)
            ),
            _ => assert!(value["discount_price"].is_null()),
        }
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<BTreeSet<_>>(),
        wanted(1..=300)
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "nothing produced twice: {counts:?}"
    );
}
