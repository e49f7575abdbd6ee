//! Records written with our product schema as registered before `last_updated_micros` became a
//! plain `long` (it was the `timestamp-micros` logical type) are still in topics after an
//! upgrade: they are read like the current ones, not sent to the dead-letter topic.

mod support;

use std::time::Duration;

use common::avro::encode_product;
use common::registry::{RegistryClient, RegistryConfig};

use support::{metric, Bed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_written_with_the_earlier_schema_are_logged_like_current_ones() {
    let bed = Bed::new(1).await;
    let earlier_id = RegistryClient::new(RegistryConfig::new(&bed.registry_url))
        .register(
            &format!("{}-value", bed.topic.name),
            testkit::EARLIER_PRODUCT_SCHEMA_JSON,
        )
        .await
        .expect("register the earlier schema");
    assert_ne!(earlier_id, bed.schema_id);
    // Written before the upgrade (earlier schema), then after it (current schema).
    bed.produce_raw("1", &encode_product(earlier_id, &Bed::product(1)))
        .await;
    bed.produce_raw("2", &encode_product(earlier_id, &Bed::product(2)))
        .await;
    bed.produce_products([3]).await;

    let app = bed.spawn_app().await;
    bed.wait_for_ids(&[1, 2, 3].into(), Duration::from_secs(120))
        .await;
    let lines = bed.log_lines();
    assert_eq!(lines.iter().map(|l| l.id).collect::<Vec<_>>(), [1, 2, 3]);
    for line in &lines {
        assert_eq!(
            line.last_updated_micros,
            Bed::product(line.id).last_updated_micros,
            "exact change time of product {}",
            line.id
        );
    }
    assert_eq!(
        metric(app.port, "consumer_dlq_records_total").await,
        0.0,
        "no dead letters"
    );
    app.stop().await;
}
