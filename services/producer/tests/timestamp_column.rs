//! The timestamp column is checked at start-up (MariaDB): a precision too coarse for exact
//! capture and wall-clock time of an unknown zone are refused with a message naming the column,
//! its type and the fix; a stated writers' offset is honoured.

mod support;

use std::time::Duration;

use sqlx::MySqlConnection;
use support::{
    assert_mentions, count_versions, insert_products, startup_error, RunningProducer, TestBed,
};

/// MySQL's default precision for `last_updated`.
const WHOLE_SECONDS: &str = "ALTER TABLE product MODIFY last_updated TIMESTAMP NOT NULL \
                             DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP";

async fn execute(conn: &mut MySqlConnection, sql: &str) {
    sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_column_in_whole_seconds_is_refused_naming_it_its_type_and_the_fix() {
    // MySQL's default precision: a product changed twice in one second keeps the (ts, id)
    // capture already passed, and its final state would never be read.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    execute(&mut conn, WHOLE_SECONDS).await;
    insert_products(&mut conn, 1, 3, 3).await;
    let err = startup_error(bed.config(&[])).await.to_string();
    assert_mentions(
        &err,
        &[
            "column product.last_updated (SOURCE_TIMESTAMP_COLUMN) is timestamp",
            "whole seconds",
            "ALTER TABLE `product` MODIFY `last_updated` TIMESTAMP(6)",
            "CAPTURE_DELAY_MS to at least 1000",
        ],
    );
    assert!(!bed.watermark_path().exists(), "nothing was captured");
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_seconds_with_a_delay_of_a_second_capture_the_last_of_two_changes_in_one_second() {
    // The other fix the message offers: CAPTURE_DELAY_MS covers one unit of the precision.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    execute(&mut conn, WHOLE_SECONDS).await;
    let producer = RunningProducer::start(bed.config(&[("CAPTURE_DELAY_MS", "1000")])).await;
    producer.wait_ready_status(200).await;
    // Insert, then change twice 300 ms apart within one second (another product if the second
    // changed in between).
    let mut id = 1;
    loop {
        insert_products(&mut conn, id, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        execute(
            &mut conn,
            &format!("UPDATE product SET price = 2.00 WHERE id = {id}"),
        )
        .await;
        let (first,): (i64,) = sqlx::query_as(&format!(
            "SELECT UNIX_TIMESTAMP(last_updated) FROM product WHERE id = {id}"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        execute(
            &mut conn,
            &format!("UPDATE product SET price = 3.00 WHERE id = {id}"),
        )
        .await;
        let (second,): (i64,) = sqlx::query_as(&format!(
            "SELECT UNIX_TIMESTAMP(last_updated) FROM product WHERE id = {id}"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if first == second {
            break;
        }
        id += 1;
        assert!(id < 10, "two changes within one second");
    }
    producer.wait_produced(u64::try_from(id).unwrap()).await;
    let received = bed.read(usize::try_from(id).unwrap()).await;
    producer.stop().await.unwrap();
    let last = received
        .iter()
        .filter(|r| r.id() == id)
        .max_by_key(|r| r.offset)
        .expect("the product arrived");
    assert_eq!(last.product.price, 3.0, "its last change arrived");
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datetime_column_written_in_local_time_is_read_at_the_stated_offset() {
    // Writers in India (+05:30, no daylight saving time) stamp DATETIME(6) with their
    // wall-clock time; the producer is told their offset.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    execute(
        &mut conn,
        "ALTER TABLE product MODIFY last_updated DATETIME(6) NOT NULL \
         DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
    )
    .await;
    let mut writer = bed.connect().await;
    execute(&mut writer, "SET time_zone = '+05:30'").await;
    insert_products(&mut writer, 1, 10, 5).await;
    let producer =
        RunningProducer::start(bed.config(&[("SOURCE_TIMESTAMP_TIME_ZONE", "+05:30")])).await;
    producer.wait_produced(10).await;
    // Changes while it runs arrive too (the horizon is compared in the writers' time).
    insert_products(&mut writer, 11, 5, 1).await;
    producer.wait_produced(15).await;
    let received = bed.read(15).await;
    producer.stop().await.unwrap();
    // The instants, as the writers' own session reads them.
    let instants: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT id, CAST(UNIX_TIMESTAMP(last_updated) * 1000000 AS SIGNED) FROM product",
    )
    .fetch_all(&mut writer)
    .await
    .unwrap();
    let counts = count_versions(&received);
    assert_eq!(counts.len(), 15);
    for version in instants {
        assert_eq!(
            counts.get(&version),
            Some(&1),
            "{version:?} at its true instant"
        );
    }
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datetime_column_is_refused_without_the_writers_zone_even_on_a_utc_server() {
    // Review findings 6 and 7: the test server's default zone is UTC (SYSTEM, system zone
    // UTC), which proves nothing about the zone each writer's session sets.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    execute(
        &mut conn,
        "ALTER TABLE product MODIFY last_updated DATETIME(6) NOT NULL \
         DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
    )
    .await;
    insert_products(&mut conn, 1, 3, 3).await;
    let err = startup_error(bed.config(&[])).await.to_string();
    assert_mentions(
        &err,
        &[
            "column product.last_updated (SOURCE_TIMESTAMP_COLUMN) is datetime(6)",
            "any session may set its own",
            "ALTER TABLE `product` MODIFY `last_updated` TIMESTAMP(6)",
            "set SOURCE_TIMESTAMP_TIME_ZONE",
        ],
    );
    assert!(!bed.watermark_path().exists(), "nothing was captured");
    bed.drop_database().await;
}
