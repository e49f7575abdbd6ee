//! Poison pills go to the dead-letter topic and the partition keeps flowing; a schema registry
//! outage is not a poison pill (records wait and are written once it is back).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::avro::{encode_product, frame, PRODUCT_SCHEMA_JSON};
use common::config::TopicConfig;
use common::registry::{RegistryClient, RegistryConfig};
use common::CancellationToken;
use rdkafka::message::Headers;
use rdkafka::Message;
use support::{metric, Bed, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_pills_go_to_the_dead_letter_topic_and_the_partition_continues() {
    let bed = Bed::new(3).await;
    let good = |id| encode_product(bed.schema_id, &Bed::product(id));
    let mut nan_price = Bed::product(3);
    nan_price.price = f64::NAN;
    let valid = good(9);
    let pills: Vec<(&str, Vec<u8>)> = vec![
        (
            "wire_format",
            b"{\"id\": 1, \"name\": \"plain JSON\"}".to_vec(),
        ),
        ("unknown_schema", frame(9999, &valid[5..])),
        ("decode", valid[..8].to_vec()),
        ("transform", encode_product(bed.schema_id, &nan_price)),
    ];
    // All on one key, so on one partition, between two good records.
    bed.produce_raw("same-key", &good(1)).await;
    for (_, value) in &pills {
        bed.produce_raw("same-key", value).await;
    }
    bed.produce_raw("same-key", &good(2)).await;

    let app = bed.spawn_app().await;
    bed.wait_for_ids(&[1, 2].into(), LONG).await;
    let lines = bed.log_lines();
    assert_eq!(
        lines.iter().map(|l| l.id).collect::<Vec<_>>(),
        [1, 2],
        "good records around the pills, in order"
    );
    assert_eq!(
        lines[1].offset - lines[0].offset,
        5,
        "the four pills sit between them"
    );

    let dlq = TopicConfig {
        name: format!("{}.dlq", bed.topic.name),
        partitions: 1,
    };
    let dead = testkit::read_topic(&dlq, pills.len(), Duration::from_secs(60)).await;
    assert_eq!(dead.len(), pills.len(), "one dead letter per pill");
    for (message, (reason, value)) in dead.iter().zip(&pills) {
        assert_eq!(message.key(), Some(&b"same-key"[..]));
        assert_eq!(message.payload(), Some(&value[..]), "original value kept");
        let headers: BTreeMap<String, String> = message
            .headers()
            .expect("dead letters carry headers")
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers["dlq.error.reason"], *reason);
        assert!(!headers["dlq.error.message"].is_empty());
        assert_eq!(headers["dlq.source.topic"], bed.topic.name);
        assert_eq!(
            headers["dlq.source.partition"],
            lines[0].partition.to_string()
        );
        let offset: i64 = headers["dlq.source.offset"].parse().unwrap();
        assert!(
            offset > lines[0].offset && offset < lines[1].offset,
            "{headers:?}"
        );
        let counted = metric(
            app.port,
            &format!("consumer_dlq_records_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(counted, 1.0, "{reason}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_outage_pauses_the_partition_instead_of_dead_lettering() {
    let mut registry = StoppableRegistry::start().await;
    let registry_url = registry.url.clone();
    let bed = Bed::with_registry(2, registry_url.clone()).await;
    RegistryClient::new(RegistryConfig::new(&registry_url))
        .register("other-value", PRODUCT_SCHEMA_JSON)
        .await
        .unwrap();
    // The consumer starts while the registry answers (it waits for it at start), then the
    // registry goes away before any record came.
    let app = bed.spawn_app().await;
    testkit::wait_until(LONG, "the consumer to be ready", || async {
        let ready = reqwest::get(format!("http://127.0.0.1:{}/ready", app.port))
            .await
            .ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    registry.stop().await;

    bed.produce_products(1..=20).await;
    testkit::wait_until(
        LONG,
        "the consumer retrying the unreachable registry",
        || async {
            let failures = metric(
                app.port,
                "schema_registry_requests_total{operation=\"get_schema\",outcome=\"error\"}",
            )
            .await;
            (failures >= 3.0).then_some(())
        },
    )
    .await;
    assert!(metric(app.port, "consumer_schema_registry_retries_total").await >= 3.0);
    assert_eq!(
        metric(app.port, "consumer_dlq_records_total").await,
        0.0,
        "nothing dead-lettered"
    );
    assert!(
        bed.log_lines().is_empty(),
        "nothing written without the schema"
    );

    registry.restart().await;
    bed.wait_for_ids(&(1..=20).collect(), LONG).await;
    app.stop().await;
    let lines = bed.log_lines();
    assert_eq!(lines.len(), 20, "each record once");
    registry.stop().await;
}

/// A registry outage that begins inside a record batch of 3000: the partition was rewound to
/// the record whose schema could not be fetched (offset 2001), in the middle of the batch. On
/// tansu 0.6 that fetch returned nothing of the batch, its last, and the batch's last 1000
/// records were never read, even once the registry was back. Now the retry fetches from before
/// the record and checks that the fetch covers it, looking further back when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_outage_inside_a_record_batch_loses_nothing_of_the_batch() {
    let mut registry = StoppableRegistry::start().await;
    let registry_url = registry.url.clone();
    let bed = Bed::with_registry(1, registry_url.clone()).await;
    // A second writer schema the consumer has not fetched yet: the product schema's earlier
    // version, whose records encode the same bytes.
    let earlier = RegistryClient::new(RegistryConfig::new(&registry_url))
        .register(
            "earlier-value",
            include_str!("../../../schemas/history/product_value.timestamp-micros.avsc"),
        )
        .await
        .unwrap();
    assert_ne!(earlier, bed.schema_id);
    // The consumer fetches the current schema while the registry answers.
    let app = bed.spawn_app().await;
    bed.produce_one_batch(0, [0]).await;
    bed.wait_for_ids(&[0].into(), LONG).await;
    registry.stop().await;

    // One batch (offsets 1..=3000): 2000 records of the fetched schema, then 1000 of the other.
    let records = (1..=3000).map(|id| {
        let schema = if id <= 2000 { bed.schema_id } else { earlier };
        (id, encode_product(schema, &Bed::product(id)))
    });
    bed.produce_one_batch_of(0, records).await;
    bed.wait_for_ids(&(0..=2000).collect(), LONG).await;
    testkit::wait_until(LONG, "the consumer retrying the registry", || async {
        let retries = metric(app.port, "consumer_schema_registry_retries_total").await;
        (retries >= 1.0).then_some(())
    })
    .await;

    registry.restart().await;
    bed.wait_for_ids(&(0..=3000).collect(), Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show by now
    let lookbacks = metric(app.port, "consumer_resume_lookbacks_total").await;
    app.stop().await;
    assert!(
        lookbacks >= 1.0,
        "the rewound fetch looked back: {lookbacks}"
    );
    let offsets: Vec<i64> = bed.log_lines().iter().map(|l| l.offset).collect();
    assert_eq!(
        offsets,
        (0..=3000).collect::<Vec<_>>(),
        "each record once, in order"
    );
    registry.stop().await;
}

/// A dev registry that can be stopped and started again on the same port, keeping its schemas.
struct StoppableRegistry {
    url: String,
    address: std::net::SocketAddr,
    router: axum::Router,
    /// While it serves: how to stop it, and its task.
    serving: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl StoppableRegistry {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut registry = Self {
            url: format!("http://{address}"),
            address,
            router: dev_schema_registry::router(),
            serving: None,
        };
        registry.serve(listener);
        registry
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_until(listener, self.router.clone(), stop.clone()));
        self.serving = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.serving.take() {
            stop.cancel();
            task.await.unwrap();
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.address).await.unwrap();
        self.serve(listener);
    }
}

async fn serve_until(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .unwrap();
}

/// A poison pill larger than the dead-letter producer takes (its value plus the `dlq.*` headers
/// over `message.max.bytes`) used to stop the consumer with an error, again after every restart.
/// Now it goes to the dead-letter topic without its value, and the partition keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_pill_too_large_for_the_dead_letter_topic_goes_there_without_its_value() {
    let bed = Bed::new(1).await;
    let good = |id| encode_product(bed.schema_id, &Bed::product(id));
    let huge = vec![b'{'; 1_500_000];
    let producer: rdkafka::producer::FutureProducer = testkit::kafka()
        .client_config()
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for value in [good(1), huge.clone(), good(2)] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&bed.topic.name)
                    .key("k")
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("the test broker takes the record");
    }

    let app = bed.spawn_app().await;
    bed.wait_for_ids(&[1, 2].into(), LONG).await;
    let dlq = TopicConfig {
        name: format!("{}.dlq", bed.topic.name),
        partitions: 1,
    };
    let dead = testkit::read_topic(&dlq, 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key(), Some(&b"k"[..]));
    assert_eq!(dead[0].payload(), None, "the value is left out");
    let headers: BTreeMap<String, String> = dead[0]
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers["dlq.error.reason"], "wire_format");
    assert!(
        headers["dlq.payload.omitted"].starts_with("1500000 bytes"),
        "{headers:?}"
    );
    assert_eq!(headers["dlq.source.offset"], "1");
    app.stop().await;
}
