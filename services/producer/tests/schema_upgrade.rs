//! Records written before an upgrade of the value schema (`last_updated_micros` was the
//! `timestamp-micros` logical type, now a plain `long`): the read-back after a restart still
//! recognises them, so an upgrade right after a crash produces nothing twice.

mod support;

use std::collections::BTreeMap;

use common::avro::{encode_product, IdKind, PRODUCT_SCHEMA_JSON};
use common::product::Product;
use producer::position::RowKey;
use producer::readback::read_back;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::{TestBed, PARTITIONS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_finds_records_written_with_the_earlier_schema() {
    let bed = TestBed::new().await;
    let subject = format!("{}-value", bed.topic.name);
    let earlier_id = bed
        .registry
        .register(&subject, testkit::EARLIER_PRODUCT_SCHEMA_JSON)
        .await
        .expect("register the earlier schema");

    let time =
        chrono::NaiveDateTime::parse_from_str("2024-05-01 10:00:00.123456", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
    let products: Vec<Product> = (1..=20)
        .map(|id| Product::new(id, format!("Product_{id}"), Some("Cat_5".into()), 1.5, time))
        .collect();
    let producer: FutureProducer = testkit::kafka()
        .client_config()
        .set("partitioner", "murmur2_random")
        .create()
        .expect("test producer");
    for product in &products {
        let key = product.id.to_string();
        let value = encode_product(earlier_id, product);
        producer
            .send(
                FutureRecord::to(&bed.topic.name).key(&key).payload(&value),
                std::time::Duration::from_secs(30),
            )
            .await
            .expect("record acknowledged");
    }

    // The upgraded producer registers the current schema: a new version, accepted under the
    // default compatibility (BACKWARD).
    let current_id = bed
        .registry
        .register(&subject, PRODUCT_SCHEMA_JSON)
        .await
        .expect("the current schema is compatible with the earlier one");
    assert_ne!(current_id, earlier_id, "a new schema version");

    let from: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let delivered = read_back(
        &testkit::kafka(),
        &bed.topic.name,
        &from,
        &bed.registry,
        current_id,
        IdKind::Int,
    )
    .await
    .expect("read back");
    assert_eq!(
        delivered.len(),
        products.len(),
        "every earlier record recognised"
    );
    for product in &products {
        let id = i64::from(product.id.as_int().unwrap());
        assert!(
            delivered.contains(&RowKey::Int(id), product.last_updated_micros.unwrap()),
            "product {id}"
        );
    }
    bed.drop_database().await;
}
