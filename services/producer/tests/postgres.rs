//! The producer capturing from the real local PostgreSQL (`TEST_POSTGRES_URL`), into tansu, with
//! the dev schema registry: prototype 002's `products` table (text ids, `updated_timestamp`) and
//! an integer-id table.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use common::avro::{own_schema, product_schema, product_text_id_schema};
use common::config::TopicConfig;
use common::kafka::partition_for_key;
use common::product::ProductId;
use common::registry::{RegistryClient, RegistryConfig};
use producer::position::RowKey;
use producer::watermark::Watermark;
use producer::Config;
use sqlx::{Connection, PgConnection};
use support::{
    assert_mentions, config_from, read_decoded, startup_error, test_env, Received, RunningProducer,
    PARTITIONS,
};
use testkit::TestPgDatabase;

/// Prototype 002's table, as its README creates it.
const PROTOTYPE_002_TABLE: &str = "CREATE TABLE products (
    product_id VARCHAR(50) PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    category VARCHAR(100),
    price NUMERIC(10,2) NOT NULL,
    updated_timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP)";

const PROTOTYPE_002_VARS: [(&str, &str); 3] = [
    ("SOURCE_TABLE", "products"),
    ("SOURCE_ID_COLUMN", "product_id"),
    ("SOURCE_TIMESTAMP_COLUMN", "updated_timestamp"),
];

/// Its `updated_timestamp` holds wall-clock time: the tests' writers connect with sqlx, which
/// sets `TimeZone` to UTC, and the producer must be told so.
const WRITERS_IN_UTC: (&str, &str) = ("SOURCE_TIMESTAMP_TIME_ZONE", "UTC");

/// One test's private world on PostgreSQL.
struct PgBed {
    db: TestPgDatabase,
    topic: TopicConfig,
    registry_url: String,
    registry: RegistryClient,
    dir: tempfile::TempDir,
}

impl PgBed {
    async fn new(ddl: &str) -> Self {
        common::telemetry::init(&common::config::Env::from_pairs([(
            "RUST_LOG",
            "info,producer=debug",
        )]))
        .expect("telemetry");
        let db = TestPgDatabase::create().await;
        let mut conn = db.connect().await;
        sqlx::query(ddl)
            .execute(&mut conn)
            .await
            .expect("create table");
        conn.close().await.ok();
        let topic = testkit::create_topic(PARTITIONS).await;
        let registry_url = testkit::spawn_registry().await;
        Self {
            db,
            topic,
            registry: RegistryClient::new(RegistryConfig::new(&registry_url)),
            registry_url,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn watermark_path(&self) -> PathBuf {
        self.dir.path().join("time_track/last_read_timestamp.json")
    }

    fn config(&self, overrides: &[(&str, &str)]) -> Config {
        let env = test_env(
            &self.db.url,
            &self.topic,
            &self.registry_url,
            &self.watermark_path(),
        );
        config_from(env, overrides)
    }

    /// Prototype 002's variables, its writers' zone (UTC) and `overrides`.
    fn prototype_config(&self, overrides: &[(&str, &str)]) -> Config {
        let mut all = vec![WRITERS_IN_UTC];
        all.extend_from_slice(overrides);
        self.prototype_config_without_zone(&all)
    }

    /// Prototype 002's variables plus `overrides`, the writers' zone not stated.
    fn prototype_config_without_zone(&self, overrides: &[(&str, &str)]) -> Config {
        let mut all = PROTOTYPE_002_VARS.to_vec();
        all.extend_from_slice(overrides);
        self.config(&all)
    }

    async fn connect(&self) -> PgConnection {
        self.db.connect().await
    }

    async fn read(&self, expected: usize) -> Vec<Received> {
        read_decoded(&self.topic, &self.registry, expected).await
    }

    async fn drop_database(self) {
        self.db.drop_database().await;
    }
}

fn text_id(r: &Received) -> String {
    r.product
        .id
        .as_text()
        .unwrap_or_else(|| panic!("a text id, got {:?}", r.product.id))
        .to_owned()
}

/// `(id, last_updated micros)` of every row of `products` now.
async fn product_versions(conn: &mut PgConnection) -> HashSet<(String, i64)> {
    let rows: Vec<(String, chrono::NaiveDateTime)> =
        sqlx::query_as("SELECT product_id, updated_timestamp FROM products")
            .fetch_all(conn)
            .await
            .expect("read products");
    rows.into_iter()
        .map(|(id, t)| (id, t.and_utc().timestamp_micros()))
        .collect()
}

fn received_versions(received: &[Received]) -> Vec<(String, i64)> {
    received
        .iter()
        .map(|r| {
            (
                text_id(r),
                r.product.last_updated_micros.expect("exact timestamp"),
            )
        })
        .collect()
}

/// Asserts no row version arrived twice and the table's current versions all arrived;
/// returns the versions received.
async fn assert_table_arrived_once(
    conn: &mut PgConnection,
    received: &[Received],
) -> HashSet<(String, i64)> {
    let versions = received_versions(received);
    let unique: HashSet<_> = versions.iter().cloned().collect();
    assert_eq!(unique.len(), versions.len(), "no row version twice");
    let table = product_versions(conn).await;
    let missing: Vec<_> = table.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "row versions that never arrived: {missing:?}"
    );
    unique
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prototype_002_products_arrive_once_keyed_by_product_id_and_restart_from_the_watermark() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let mut conn = bed.connect().await;
    // 50 products over 5 timestamps (10 per statement: equal timestamps), one without category.
    for group in 0..5 {
        let values: Vec<String> = (1..=10)
            .map(|i| {
                let n = group * 10 + i;
                let category = if n == 7 {
                    "NULL".to_owned()
                } else {
                    format!("'Cat_{}'", n % 10)
                };
                format!("('P{n:04}', 'Product_{n}', {category}, {n}.25)")
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO products (product_id, name, category, price) VALUES {}",
            values.join(",")
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let producer = RunningProducer::start(bed.prototype_config(&[])).await;
    producer.wait_produced(50).await;
    let received = bed.read(50).await;
    assert_eq!(received.len(), 50, "each product exactly once");
    let versions = assert_table_arrived_once(&mut conn, &received).await;
    assert_eq!(versions.len(), 50);
    for r in &received {
        let id = text_id(r);
        let n: u32 = id[1..].parse().unwrap();
        assert_eq!(r.key, id, "key is product_id");
        assert_eq!(
            r.partition,
            partition_for_key(r.key.as_bytes(), PARTITIONS),
            "murmur2 partition of key {}",
            r.key
        );
        assert_eq!(r.product.name, format!("Product_{n}"));
        assert_eq!(
            r.product.category,
            (n != 7).then(|| format!("Cat_{}", n % 10))
        );
        assert_eq!(r.product.price, f64::from(n) + 0.25, "NUMERIC read exactly");
        let schema = bed.registry.schema(r.schema_id).await.unwrap();
        assert!(
            std::ptr::eq(own_schema(&schema).unwrap(), product_text_id_schema()),
            "written with the text-id schema"
        );
    }
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains("producer_horizon_sees_transactions 1"),
        "{metrics}"
    );
    producer.stop().await.unwrap();

    let watermark = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    let position = watermark.position.expect("a position");
    assert_eq!(position.id, Some(RowKey::Text("P0050".into())));
    let text = std::fs::read_to_string(bed.watermark_path()).unwrap();
    assert!(text.contains(r#""last_read_id": "P0050""#), "{text}");

    // Changes while stopped: an update and new products; a restart sends only those.
    sqlx::query(
        "UPDATE products SET price = 1.5, updated_timestamp = CURRENT_TIMESTAMP \
         WHERE product_id IN ('P0003', 'P0042')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO products (product_id, name, category, price) VALUES \
         ('P0051', 'Product_51', 'Cat_1', 51.25), ('A0001', 'Early id', 'Cat_1', 2.00)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let producer = RunningProducer::start(bed.prototype_config(&[])).await;
    producer.wait_produced(4).await;
    let all = bed.read(54).await;
    assert_eq!(all.len(), 54, "50 + 4 new versions, none sent again");
    assert_table_arrived_once(&mut conn, &all).await;
    for id in ["P0003", "P0042"] {
        let updated = all
            .iter()
            .filter(|r| r.product.id == id && r.product.price == 1.5)
            .count();
        assert_eq!(updated, 1, "the update of {id} arrives once");
    }
    // A0001 sorts before every P id but was stamped later: it arrives after them.
    let a = all.iter().find(|r| r.product.id == "A0001").expect("A0001");
    assert_eq!(a.key, "A0001");
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_rows_with_one_timestamp_cross_batch_boundaries_exactly_once_in_byte_order() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let mut conn = bed.connect().await;
    // 600 rows in one statement: one updated_timestamp. Mixed-case and non-ASCII ids, whose
    // order differs between collations; capture orders them by bytes (COLLATE "C").
    let ids: Vec<String> = (0..600)
        .map(|i| match i % 4 {
            0 => format!("P{i:04}"),
            1 => format!("p{i:04}"),
            2 => format!("_{i}"),
            _ => format!("é{i}"),
        })
        .collect();
    let values: Vec<String> = ids
        .iter()
        .map(|id| format!("('{id}', 'Name {id}', 'Cat_5', 9.99)"))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO products (product_id, name, category, price) VALUES {}",
        values.join(",")
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let stamps: Vec<(i64,)> =
        sqlx::query_as("SELECT count(DISTINCT updated_timestamp) FROM products")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(stamps[0].0, 1, "all rows share one timestamp");

    let producer = RunningProducer::start(bed.prototype_config(&[("BATCH_SIZE", "64")])).await;
    producer.wait_produced(600).await;
    let received = bed.read(600).await;
    assert_eq!(received.len(), 600, "each row once");
    assert_table_arrived_once(&mut conn, &received).await;
    producer.stop().await.unwrap();
    let mut sorted = ids.clone();
    sorted.sort(); // byte order
    let watermark = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    assert_eq!(
        watermark.position.unwrap().id,
        Some(RowKey::Text(sorted.last().unwrap().clone())),
        "the last row in byte order is the watermark"
    );
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_holds_capture_back_and_its_row_still_arrives() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let producer = RunningProducer::start(bed.prototype_config(&[])).await;
    producer.wait_ready_status(200).await;

    // The held transaction: its row is stamped with the transaction's start time.
    let mut held = bed.connect().await;
    sqlx::query("BEGIN").execute(&mut held).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("INSERT INTO products (product_id, name, price) VALUES ('HELD', 'Held', 1.00)")
        .execute(&mut held)
        .await
        .unwrap();
    // Later rows, committed at once, stamped after the held row.
    let mut conn = bed.connect().await;
    for i in 1..=5 {
        sqlx::query(&format!(
            "INSERT INTO products (product_id, name, category, price)              VALUES ('P{i:04}', 'Product_{i}', 'Cat_1', {i}.00)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        producer.metrics.records_produced.get(),
        0,
        "the open transaction holds the horizon below the later rows"
    );
    sqlx::query("COMMIT").execute(&mut held).await.unwrap();

    producer.wait_produced(6).await;
    let received = bed.read(6).await;
    assert_eq!(received.len(), 6);
    assert_table_arrived_once(&mut conn, &received).await;
    assert_eq!(
        text_id(
            received
                .iter()
                .min_by_key(|r| r.product.last_updated_micros)
                .unwrap()
        ),
        "HELD",
        "the held row is the oldest"
    );
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_a_null_price_or_name_are_rejected_and_counted_while_the_others_arrive() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let mut conn = bed.connect().await;
    sqlx::query(
        "ALTER TABLE products ALTER COLUMN price DROP NOT NULL,          ALTER COLUMN name DROP NOT NULL",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO products (product_id, name, category, price) VALUES          ('P0001', 'Good', 'Cat_1', 1.00), ('P0002', 'No price', 'Cat_1', NULL),          ('P0003', NULL, 'Cat_1', 3.00), ('P0004', 'Also good', NULL, 4.00)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let dead_letters = testkit::create_topic(1).await;
    let producer = RunningProducer::start(
        bed.prototype_config(&[("DEAD_LETTER_TOPIC", dead_letters.name.as_str())]),
    )
    .await;
    producer.wait_produced(2).await; // dead letters are not counted as produced
    let received = bed.read(2).await;
    let ids: HashSet<String> = received.iter().map(text_id).collect();
    assert_eq!(ids, HashSet::from(["P0001".into(), "P0004".into()]));
    assert_eq!(received.len(), 2);
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains(r#"producer_rows_rejected_total{reason="null_price"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"producer_rows_rejected_total{reason="null_name"} 1"#),
        "{metrics}"
    );
    let letters = testkit::read_topic(&dead_letters, 2, Duration::from_secs(30)).await;
    let mut by_id: HashMap<String, serde_json::Value> = HashMap::new();
    for letter in &letters {
        let value: serde_json::Value =
            serde_json::from_slice(rdkafka::Message::payload(letter).unwrap()).unwrap();
        by_id.insert(testkit::key_text(letter), value);
    }
    assert_eq!(by_id["P0002"]["reason"], "null_price");
    assert_eq!(by_id["P0002"]["row"]["id"], "P0002");
    assert_eq!(by_id["P0003"]["reason"], "null_name");
    assert_eq!(by_id["P0003"]["source"], "postgres table products");

    // Capture goes on past them.
    sqlx::query("INSERT INTO products (product_id, name, price) VALUES ('P0005', 'Later', 5.00)")
        .execute(&mut conn)
        .await
        .unwrap();
    producer.wait_produced(3).await;
    let received = bed.read(3).await;
    assert_eq!(received.len(), 3, "each good row once");
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_or_an_unusable_id_type_is_a_clear_startup_error() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let err = startup_error(bed.prototype_config(&[("SOURCE_TIMESTAMP_COLUMN", "changed_at")]))
        .await
        .to_string();
    assert!(
        err.contains("products") && err.contains("changed_at (SOURCE_TIMESTAMP_COLUMN)"),
        "{err}"
    );
    let err = startup_error(bed.prototype_config(&[("SOURCE_ID_COLUMN", "price")]))
        .await
        .to_string();
    assert!(
        err.contains("SOURCE_ID_COLUMN") && err.contains("numeric"),
        "{err}"
    );
    assert!(
        !bed.watermark_path().exists(),
        "nothing was captured or written"
    );
    bed.drop_database().await;
}

/// Started before its table exists (as with `docker compose up` and no health conditions), the
/// producer waits, serving `/health` 200 and `/ready` 503 naming the table, and captures once
/// the table is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_waited_for_and_captured_once_created() {
    // The defaults (product, id, last_updated) do not exist in prototype 002's database.
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let producer = RunningProducer::start(bed.config(&[])).await;
    let body = producer.wait_ready_status(503).await;
    let (health, _) = producer.get("/health").await;
    assert_eq!(health, 200);
    testkit::wait_until(
        Duration::from_secs(30),
        "/ready to name the missing table",
        || async {
            let (status, body) = producer.get("/ready").await;
            (status == 503 && body.contains("table product (SOURCE_TABLE) does not exist"))
                .then_some(())
        },
    )
    .await;
    assert!(!producer.handle.is_finished(), "still running: {body}");

    let mut conn = bed.connect().await;
    sqlx::query(support::PG_PRODUCT_TABLE)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO product (id, name, category, price) VALUES (1, 'One', 'Cat_1', 1.50)")
        .execute(&mut conn)
        .await
        .unwrap();
    producer.wait_produced(1).await;
    producer.wait_ready_status(200).await;
    let received = bed.read(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].product.id, ProductId::Int(1));
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

/// A NUMERIC too large for a double used to fail every read (`price::float8` overflows), so
/// capture stalled on it forever; now its row is set aside and capture goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_too_large_for_a_double_is_set_aside_and_capture_goes_on() {
    let bed = PgBed::new(
        "CREATE TABLE product (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT, \
         price NUMERIC NOT NULL, last_updated TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await;
    let mut conn = bed.connect().await;
    for (id, price) in [(1, "1.50"), (2, "1e400"), (3, "2.25")] {
        sqlx::query(&format!(
            "INSERT INTO product (id, name, category, price) VALUES ({id}, 'P{id}', 'Cat_1', {price}::numeric)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let dead_letters = format!("{}.dlq", bed.topic.name);
    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(2).await;
    // A later change of the product set aside is produced as usual.
    sqlx::query("UPDATE product SET price = 3.00, last_updated = now() WHERE id = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    producer.wait_produced(3).await;
    let received = bed.read(3).await;
    let mut prices: Vec<(ProductId, f64)> = received
        .iter()
        .map(|r| (r.product.id.clone(), r.product.price))
        .collect();
    prices.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(
        prices,
        [
            (ProductId::Int(1), 1.5),
            (ProductId::Int(2), 3.0),
            (ProductId::Int(3), 2.25)
        ]
    );
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains(r#"producer_rows_rejected_total{reason="price_not_finite"} 1"#),
        "{metrics}"
    );
    let letters = testkit::read_topic(
        &TopicConfig {
            name: dead_letters,
            partitions: 1,
        },
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(letters.len(), 1);
    let letter: serde_json::Value =
        serde_json::from_slice(rdkafka::Message::payload(&letters[0]).unwrap()).unwrap();
    assert_eq!(letter["reason"], "price_not_finite");
    assert_eq!(letter["row"]["id"], 2);
    assert_eq!(testkit::key_text(&letters[0]), "2");
    producer.stop().await.unwrap();
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_id_table_with_timestamptz_uses_the_int_schema() {
    let bed = PgBed::new(
        "CREATE TABLE product (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            category TEXT,
            price NUMERIC(10,2) NOT NULL,
            last_updated TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await;
    let mut conn = bed.connect().await;
    // A session in another time zone: timestamptz values are instants, captured as UTC.
    sqlx::query("SET TIME ZONE 'America/New_York'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO product (id, name, category, price)          SELECT i, 'Product_' || i, 'Cat_' || (i % 10), i + 0.5 FROM generate_series(1, 30) i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let producer = RunningProducer::start(bed.config(&[("BATCH_SIZE", "7")])).await;
    producer.wait_produced(30).await;
    let received = bed.read(30).await;
    assert_eq!(received.len(), 30);
    let ids: HashSet<i32> = received.iter().map(Received::id).collect();
    assert_eq!(ids, (1..=30).collect());
    let stamps: Vec<(chrono::DateTime<chrono::Utc>,)> =
        sqlx::query_as("SELECT last_updated FROM product WHERE id = 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for r in &received {
        assert_eq!(r.key, r.id().to_string());
        assert_eq!(r.partition, partition_for_key(r.key.as_bytes(), PARTITIONS));
        assert_eq!(r.product.price, f64::from(r.id()) + 0.5);
        assert_eq!(
            r.product.last_updated_micros,
            Some(stamps[0].0.timestamp_micros()),
            "one statement, one instant, in UTC"
        );
        let schema = bed.registry.schema(r.schema_id).await.unwrap();
        assert!(std::ptr::eq(own_schema(&schema).unwrap(), product_schema()));
        assert!(matches!(r.product.id, ProductId::Int(_)));
    }
    producer.stop().await.unwrap();
    let watermark = Watermark::load(&bed.watermark_path()).unwrap().unwrap();
    assert_eq!(watermark.position.unwrap().id, Some(RowKey::Int(30)));
    bed.drop_database().await;
}

/// Runs `sql` statements on the server's `postgres` database (roles, grants, database settings).
async fn as_admin(statements: &[String]) {
    let server = testkit::postgres_server_url()
        .trim_end_matches('/')
        .to_owned();
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("admin connection");
    for sql in statements {
        sqlx::raw_sql(sql).execute(&mut admin).await.expect(sql);
    }
    admin.close().await.ok();
}

/// `url` of `db` for another role (trust authentication on the test server).
fn url_as(db: &TestPgDatabase, role: &str) -> String {
    let server = testkit::postgres_server_url();
    let rest = server
        .trim_start_matches("postgres://")
        .trim_end_matches('/');
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("postgres://{role}@{host}/{}", db.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_roles_the_producer_may_not_see_turn_readiness_off_and_say_why() {
    // Without pg_read_all_stats the producer's role sees neither the state nor the transaction
    // start, nor the backend_type, of another role's session: the fallback must notice it.
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    let producer_role = testkit::unique_name("ps_producer");
    let writer_role = testkit::unique_name("ps_writer");
    as_admin(&[
        format!("CREATE ROLE {producer_role} LOGIN"),
        format!("CREATE ROLE {writer_role} LOGIN"),
    ])
    .await;
    let mut conn = bed.connect().await;
    sqlx::raw_sql(&format!(
        "GRANT SELECT ON products TO {producer_role}; GRANT INSERT ON products TO {writer_role}"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO products (product_id, name, price) VALUES ('P0001', 'First', 1.00)")
        .execute(&mut conn)
        .await
        .unwrap();
    // Any session of another role hides whether it is in a transaction, even an idle one.
    conn.close().await.unwrap();

    let producer = RunningProducer::start(
        bed.prototype_config(&[("DATABASE_URL", url_as(&bed.db, &producer_role).as_str())]),
    )
    .await;
    producer.wait_produced(1).await;
    producer.wait_ready_status(200).await;

    // Another role holds a transaction open.
    let mut writer = PgConnection::connect(&url_as(&bed.db, &writer_role))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("INSERT INTO products (product_id, name, price) VALUES ('HELD', 'Held', 2.00)")
        .execute(&mut writer)
        .await
        .unwrap();
    let body = producer.wait_ready_status(503).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = ready["checks"]["capture_horizon"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.starts_with("hidden_sessions") && detail.contains("pg_read_all_stats"),
        "{body}"
    );
    let (_, metrics) = producer.get("/metrics").await;
    assert!(
        metrics.contains("producer_horizon_sees_transactions 0")
            && metrics.contains("producer_horizon_degraded{reason=\"hidden_sessions\"} 1"),
        "{metrics}"
    );

    // Once the session is gone, the horizon is sound again and the row arrives.
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    writer.close().await.unwrap();
    producer.wait_ready_status(200).await;
    producer.wait_produced(2).await;
    let received = bed.read(2).await;
    producer.stop().await.unwrap();
    let mut conn = bed.connect().await;
    assert_table_arrived_once(&mut conn, &received).await;
    conn.close().await.ok();
    bed.drop_database().await;
    as_admin(&[
        format!("DROP ROLE {producer_role}"),
        format!("DROP ROLE {writer_role}"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_column_of_a_database_in_another_zone_is_refused_unless_the_offset_is_stated() {
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    as_admin(&[format!(
        "ALTER DATABASE \"{}\" SET TimeZone = 'Asia/Kolkata'",
        bed.db.name
    )])
    .await;
    let err = startup_error(bed.prototype_config_without_zone(&[]))
        .await
        .to_string();
    assert_mentions(
        &err,
        &[
            "column products.updated_timestamp (SOURCE_TIMESTAMP_COLUMN) is timestamp without time zone",
            "the server's default time zone is Asia/Kolkata",
            "TYPE timestamptz USING \"updated_timestamp\" AT TIME ZONE 'Asia/Kolkata'",
            "SOURCE_TIMESTAMP_TIME_ZONE",
        ],
    );

    // A writer that keeps the database's zone (the client library here sets UTC when it
    // connects, so the session sets it back, as psql would have it) writes Indian time.
    let mut writer = bed.connect().await;
    sqlx::raw_sql("SET TIME ZONE 'Asia/Kolkata'")
        .execute(&mut writer)
        .await
        .unwrap();
    for i in 1..=5 {
        sqlx::query(&format!(
            "INSERT INTO products (product_id, name, price) VALUES ('P{i:04}', 'Product_{i}', {i}.00)"
        ))
        .execute(&mut writer)
        .await
        .unwrap();
    }
    let producer =
        RunningProducer::start(bed.prototype_config(&[("SOURCE_TIMESTAMP_TIME_ZONE", "+05:30")]))
            .await;
    producer.wait_produced(5).await;
    let received = bed.read(5).await;
    producer.stop().await.unwrap();
    let instants: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT product_id, updated_timestamp AT TIME ZONE 'Asia/Kolkata' FROM products",
    )
    .fetch_all(&mut writer)
    .await
    .unwrap();
    let got: HashSet<(String, i64)> = received_versions(&received).into_iter().collect();
    assert_eq!(got.len(), 5);
    for (id, instant) in instants {
        assert!(
            got.contains(&(id.clone(), instant.timestamp_micros())),
            "{id} at {instant}: {got:?}"
        );
    }
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_column_in_whole_seconds_is_refused() {
    let bed = PgBed::new(&PROTOTYPE_002_TABLE.replace(
        "updated_timestamp TIMESTAMP DEFAULT",
        "updated_timestamp TIMESTAMP(0) DEFAULT",
    ))
    .await;
    let err = startup_error(bed.prototype_config(&[])).await.to_string();
    assert_mentions(
        &err,
        &[
            "column products.updated_timestamp (SOURCE_TIMESTAMP_COLUMN) is timestamp(0) without time zone",
            "whole seconds",
            "ALTER TABLE \"products\" ALTER COLUMN \"updated_timestamp\" TYPE timestamp(6)",
            "CAPTURE_DELAY_MS to at least 1000",
        ],
    );
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_prepared_for_two_phase_commit_is_not_skipped() {
    // Review finding 3. After PREPARE TRANSACTION the transaction is no longer in
    // pg_stat_activity, but its rows keep the now() of its start and become visible only at
    // COMMIT PREPARED, after later rows were read. Needs max_prepared_transactions > 0 (off by
    // default): a server of the test's own.
    use producer::source::postgres::{connect_lazy, PgSource};
    use producer::source::{Source, TableSpec};
    use support::{read_once, read_until, PrivatePostgres};
    let server = PrivatePostgres::start(&[("max_prepared_transactions", "5")]);
    let url = server.create_database("two_phase").await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE product (id int PRIMARY KEY, name text NOT NULL, category text, \
         price numeric(10,2) NOT NULL, last_updated timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO product (id, name, price) VALUES (100, 'first', 1.00)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let source = PgSource::new(
        connect_lazy(&url).unwrap(),
        TableSpec::default(),
        Duration::from_millis(50),
        None,
    );
    source.inspect().await.unwrap();
    let (after, _) = read_until(&source, None, 100, 1.0).await;

    let mut two_phase = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; INSERT INTO product (id, name, price) VALUES (1, 'prepared', 2.00)")
        .execute(&mut two_phase)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::raw_sql("PREPARE TRANSACTION 'two_phase_test'")
        .execute(&mut two_phase)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::raw_sql("INSERT INTO product (id, name, price) VALUES (2, 'later', 3.00)")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (after, mut rows) = read_once(&source, after).await;
    assert!(
        rows.is_empty(),
        "the prepared transaction holds the later row back: {rows:?}"
    );
    sqlx::raw_sql("COMMIT PREPARED 'two_phase_test'")
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, later) = read_until(&source, after, 1, 2.0).await;
    rows.extend(later);
    assert!(rows.contains(&(2, 3.0)), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_column_is_refused_without_the_writers_zone_even_when_the_default_is_utc() {
    // Review finding 7: the database's default zone proves nothing about its writers (PgJDBC
    // sends the JVM's zone at connect, a role may set its own): a wall-clock column needs
    // SOURCE_TIMESTAMP_TIME_ZONE, whatever the default.
    let bed = PgBed::new(PROTOTYPE_002_TABLE).await;
    as_admin(&[format!(
        "ALTER DATABASE \"{}\" SET TimeZone = 'UTC'",
        bed.db.name
    )])
    .await;
    let err = startup_error(bed.prototype_config_without_zone(&[]))
        .await
        .to_string();
    assert_mentions(
        &err,
        &[
            "column products.updated_timestamp (SOURCE_TIMESTAMP_COLUMN) is timestamp without time zone",
            "the server's default time zone is UTC, but any session may set its own",
            "ALTER TABLE \"products\" ALTER COLUMN \"updated_timestamp\" TYPE timestamptz",
            "set SOURCE_TIMESTAMP_TIME_ZONE",
        ],
    );
    assert!(!bed.watermark_path().exists(), "nothing was captured");
    bed.drop_database().await;
}
