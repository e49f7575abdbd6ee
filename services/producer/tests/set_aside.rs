//! Bad input is set aside, never crash-looped on: rows the value schema cannot carry (an id over
//! 2^31-1, a negative price), a row whose record is larger than Kafka takes, and a record the
//! broker itself refuses. Each is logged naming the row, counted by reason, and sent to the
//! dead-letter topic (`{TOPIC}.dlq` by default); every other row, and every later change of the
//! same product, still arrives, once and in order.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use common::config::TopicConfig;
use rdkafka::Message;
use support::{
    count_versions, decode, insert_products, PrivateBroker, RunningProducer, TestBed, PARTITIONS,
};

/// A table of the product's shape whose columns can hold what the `product` table cannot: a
/// BIGINT id and a name of megabytes.
const WIDE_TABLE: &str = "CREATE TABLE wide_product (
    id BIGINT NOT NULL PRIMARY KEY,
    name MEDIUMTEXT NOT NULL,
    category VARCHAR(255) NULL,
    price DECIMAL(10, 2) NOT NULL,
    last_updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    INDEX capture_order (last_updated, id))";

/// The dead letters of `topic`, by key: `(reason, the letter as JSON, the reason header)`.
async fn dead_letters(topic: &str, expected: usize) -> HashMap<String, serde_json::Value> {
    let letters = testkit::read_topic(
        &TopicConfig {
            name: topic.to_owned(),
            partitions: 1,
        },
        expected,
        Duration::from_secs(30),
    )
    .await;
    let mut by_key = HashMap::new();
    for letter in &letters {
        let mut value: serde_json::Value =
            serde_json::from_slice(letter.payload().expect("a dead letter has a value")).unwrap();
        let header =
            rdkafka::message::Headers::iter(letter.headers().expect("a dead letter has headers"))
                .find(|h| h.key == "dlq.error.reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
        value["header_reason"] = serde_json::json!(header);
        assert!(
            by_key.insert(testkit::key_text(letter), value).is_none(),
            "one dead letter per row"
        );
    }
    by_key
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    let sample = format!("producer_rows_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_kafka_or_the_schema_cannot_take_go_to_the_dead_letter_topic_and_capture_goes_on() {
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    sqlx::query(WIDE_TABLE).execute(&mut conn).await.unwrap();
    let huge_name = "x".repeat(1_500_000);
    sqlx::query(
        "INSERT INTO wide_product (id, name, category, price) VALUES
            (1, 'Fine', 'Cat_1', 1.00),
            (2, ?, 'Cat_2', 2.00),
            (3000000000, 'Id over 2^31-1', 'Cat_3', 3.00),
            (4, 'Refund', 'Cat_4', -4.00),
            (5, 'Fine too', 'Cat_5', 5.00)",
    )
    .bind(&huge_name)
    .execute(&mut conn)
    .await
    .unwrap();
    let producer = RunningProducer::start(bed.config(&[("SOURCE_TABLE", "wide_product")])).await;
    producer.wait_produced(2).await;

    // Later changes of the products set aside are produced as usual.
    sqlx::query("UPDATE wide_product SET name = 'Short again' WHERE id = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE wide_product SET price = 4.50 WHERE id = 4")
        .execute(&mut conn)
        .await
        .unwrap();
    producer.wait_produced(4).await;
    let received = bed.read(4).await;
    let counts = count_versions(&received);
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "no duplicates: {counts:?}"
    );
    let mut ids: Vec<(i32, String)> = received
        .iter()
        .map(|r| (r.id(), r.product.name.clone()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            (1, "Fine".to_owned()),
            (2, "Short again".to_owned()),
            (4, "Refund".to_owned()),
            (5, "Fine too".to_owned())
        ]
    );

    let (_, metrics) = producer.get("/metrics").await;
    for reason in ["record_too_large", "id_out_of_range", "price_out_of_range"] {
        assert_eq!(rejected(&metrics, reason), 1.0, "{reason}: {metrics}");
    }
    let (ready, body) = producer.get("/ready").await;
    assert_eq!(ready, 200, "{body}");

    let letters = dead_letters(&format!("{}.dlq", bed.topic.name), 3).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (key, reason) in [
        ("2", "record_too_large"),
        ("3000000000", "id_out_of_range"),
        ("4", "price_out_of_range"),
    ] {
        let letter = &letters[key];
        assert_eq!(letter["reason"], reason, "{letter}");
        assert_eq!(letter["header_reason"], reason, "{letter}");
        assert_eq!(letter["source"], "mysql table wide_product", "{letter}");
    }
    // The huge row's dead letter is small: its name is cut, its length kept.
    assert_eq!(letters["2"]["truncated"]["name"], 1_500_000);
    assert_eq!(letters["3000000000"]["row"]["id"], 3_000_000_000_i64);
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

/// A broker that refuses a record (here tansu's validation of keys against a JSON schema, with
/// `INVALID_RECORD`) refuses the whole batch it came in: every record of it fails. The producer
/// used to replay that batch forever. Now it sends each refused record alone, sets aside the
/// one the broker refuses alone too, and delivers the others exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_is_found_in_its_batch_and_set_aside() {
    let bed = TestBed::new().await;
    let topic = testkit::unique_name("ps_refused");
    let schemas = tempfile::tempdir().unwrap();
    // Keys are product ids: the broker refuses ids over 1000.
    std::fs::write(
        schemas.path().join(format!("{topic}.json")),
        r#"{"type": "object", "properties": {"key": {"type": "number", "maximum": 1000}}}"#,
    )
    .unwrap();
    let broker = PrivateBroker::start_with_schemas(Some(schemas.path())).await;
    let mut conn = bed.connect().await;
    // One statement: the refused row shares its batches with good ones.
    insert_products(&mut conn, 995, 12, 12).await;
    let bootstrap = broker.bootstrap();
    let producer = RunningProducer::start(bed.config(&[
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("TOPIC", topic.as_str()),
    ]))
    .await;
    // 995..=1000 are accepted, 1001..=1006 refused.
    producer.wait_produced(6).await;
    testkit::wait_until(
        Duration::from_secs(60),
        "the refused rows to be set aside",
        || async {
            let (_, metrics) = producer.get("/metrics").await;
            (rejected(&metrics, "refused_by_kafka") >= 6.0).then_some(())
        },
    )
    .await;
    // Capture goes on after them.
    insert_products(&mut conn, 1, 3, 3).await;
    producer.wait_produced(9).await;
    producer.stop().await.unwrap();

    let messages = broker.read(&topic, PARTITIONS, 9).await;
    let mut received = Vec::new();
    for message in &messages {
        received.push(decode(&bed.registry, message).await);
    }
    let counts = count_versions(&received);
    assert!(
        counts.values().all(|n| *n == 1),
        "no duplicates: {counts:?}"
    );
    let mut ids: Vec<i32> = received.iter().map(support::Received::id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 995, 996, 997, 998, 999, 1000]);

    let dead_letters_topic = format!("{topic}.dlq");
    let letters = broker.read(&dead_letters_topic, 1, 6).await;
    let mut refused: Vec<i64> = letters
        .iter()
        .map(|m| {
            let json: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(json["reason"], "refused_by_kafka", "{json}");
            json["row"]["id"].as_i64().unwrap()
        })
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, [1001, 1002, 1003, 1004, 1005, 1006]);
    bed.drop_database().await;
}
