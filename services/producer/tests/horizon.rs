//! The read horizon against the real MariaDB: transactions listed behind a lock wait, statement
//! text that imitates InnoDB's listing, and statements that wait for a table lock before their
//! transaction begins. Each time, every row must reach the topic exactly once.

mod support;

use std::time::Duration;

use sqlx::MySqlConnection;
use support::{
    count_versions, insert_products, read_once, read_until, read_until_table_arrived,
    RunningProducer, TestBed,
};

/// A statement whose text imitates InnoDB's listing: dashes (the line InnoDB prints after a lock
/// wait), the next section's header, a transaction and its connection, both spellings of a
/// truncation, and the monitor's last lines. Sent as text (`raw_sql`), so the server keeps the
/// comment.
const IMITATING: &str = "UPDATE product /*
-------------------------------
------------------
--------
FILE I/O
--------
---TRANSACTION 5, ACTIVE 0 sec
MariaDB thread id 1, OS thread handle 1, query id 1 localhost root
... truncated...
...truncated...
----------------------------
END OF INNODB MONITOR OUTPUT
============================
*/ SET price = price + 1 WHERE id = 100";

async fn begin(conn: &mut MySqlConnection) {
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
}

/// Rows `ids` committed one by one, 200 ms apart.
async fn commit_one_by_one(conn: &mut MySqlConnection, ids: std::ops::Range<i32>) {
    for id in ids {
        insert_products(&mut *conn, id, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn commit(conn: &mut MySqlConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_an_old_transaction_arrives_while_a_newer_one_waits_for_a_row_lock() {
    // The interleaving: A inserts and stays open 8 s; B holds a row lock; C waits for
    // it; other rows keep committing. In MariaDB's listing the newest connection comes first,
    // and a lock wait ends with a line of dashes, before B and A.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 100, 1, 1).await;
    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(1).await;

    let mut a = bed.connect().await;
    let mut b = bed.connect().await;
    let mut c = bed.connect().await;
    begin(&mut a).await;
    sqlx::query("INSERT INTO product (id, name, category, price) VALUES (1, 'A', 'Cat_1', 1.00)")
        .execute(&mut a)
        .await
        .unwrap();
    commit_one_by_one(&mut conn, 2..12).await;
    // 2 s later, B takes a row lock and C waits for it; C's text imitates the listing.
    begin(&mut b).await;
    sqlx::query("UPDATE product SET price = 2.00 WHERE id = 100")
        .execute(&mut b)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        // A query without arguments goes as text (COM_QUERY): the server keeps its comment.
        sqlx::Executor::execute(&mut c, IMITATING).await.unwrap();
        c
    });
    commit_one_by_one(&mut conn, 12..42).await;
    assert!(!waiting.is_finished(), "C still waits for B's row lock");
    assert_eq!(
        producer.metrics.rows_captured.get(),
        1,
        "rows stamped after A's start wait for A (only the first row 100 was read)"
    );

    commit(&mut a).await;
    commit(&mut b).await;
    waiting.await.unwrap();
    let received = read_until_table_arrived(&bed, &mut conn).await;
    producer.stop().await.unwrap();
    assert!(
        received
            .iter()
            .any(|r| r.product.id == 1 && r.product.name == "A"),
        "A's row reached the topic"
    );
    assert!(
        count_versions(&received).values().all(|&n| n == 1),
        "no row version twice"
    );
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_lock_tables_write_for_3_s_are_not_lost() {
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 100, 1, 1).await;
    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(1).await;

    let mut holder = bed.connect().await;
    sqlx::raw_sql("LOCK TABLES product WRITE")
        .execute(&mut holder)
        .await
        .unwrap();
    // Writers queue behind the lock, stamped when their statements start: one in an explicit
    // transaction (it stays open after the wait), one autocommit.
    let mut in_transaction = bed.connect().await;
    begin(&mut in_transaction).await;
    let queued_in_transaction = tokio::spawn(async move {
        sqlx::query(
            "INSERT INTO product (id, name, category, price) VALUES (1, 'Queued', 'Cat_1', 1.00)",
        )
        .execute(&mut in_transaction)
        .await
        .unwrap();
        in_transaction
    });
    let mut autocommit = bed.connect().await;
    let queued_autocommit = tokio::spawn(async move {
        sqlx::query(
            "INSERT INTO product (id, name, category, price) VALUES (2, 'Queued too', NULL, 2.00)",
        )
        .execute(&mut autocommit)
        .await
        .unwrap();
    });
    // The lock's holder writes meanwhile: later stamps, committed before the queued rows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    insert_products(&mut holder, 3, 1, 1).await;
    sqlx::query("UPDATE product SET price = 5.00 WHERE id = 100")
        .execute(&mut holder)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut holder)
        .await
        .unwrap();

    queued_autocommit.await.unwrap();
    let mut in_transaction = queued_in_transaction.await.unwrap();
    // Rows keep committing while the queued transaction stays open.
    for id in 4..=10 {
        insert_products(&mut conn, id, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    commit(&mut in_transaction).await;
    let received = read_until_table_arrived(&bed, &mut conn).await;
    producer.stop().await.unwrap();
    assert!(
        received.iter().any(|r| r.product.name == "Queued"),
        "the row queued in a transaction arrived"
    );
    assert!(count_versions(&received).values().all(|&n| n == 1));
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_waiting_for_a_metadata_lock_holds_capture_back_until_it_commits() {
    // The statement reads another table that `LOCK TABLES` holds: stamped when it starts, it
    // waits for that table's metadata lock before its transaction begins, while other rows of
    // `product` commit and capture reads on.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    sqlx::raw_sql(
        "CREATE TABLE price_list (id INT PRIMARY KEY, price DECIMAL(10, 2) NOT NULL); \
         INSERT INTO price_list VALUES (1, 9.99)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    insert_products(&mut conn, 100, 1, 1).await;
    let producer = RunningProducer::start(bed.config(&[])).await;
    producer.wait_produced(1).await;

    let mut holder = bed.connect().await;
    sqlx::raw_sql("LOCK TABLES price_list WRITE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut writer = bed.connect().await;
    let waiting = tokio::spawn(async move {
        sqlx::query(
            "INSERT INTO product (id, name, category, price) \
             SELECT 1, 'Waited', 'Cat_1', price FROM price_list WHERE id = 1",
        )
        .execute(&mut writer)
        .await
        .unwrap();
    });
    for id in 2..=21 {
        insert_products(&mut conn, id, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(!waiting.is_finished(), "the statement still waits");
    assert_eq!(
        producer.metrics.rows_captured.get(),
        1,
        "rows stamped after the waiting statement's start wait for it"
    );
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut holder)
        .await
        .unwrap();
    waiting.await.unwrap();
    let received = read_until_table_arrived(&bed, &mut conn).await;
    producer.stop().await.unwrap();
    assert!(received.iter().any(|r| r.product.name == "Waited"));
    assert!(count_versions(&received).values().all(|&n| n == 1));
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_process_list_queries_list_a_running_statement_with_its_running_time() {
    // MySQL's variant uses only the columns MariaDB shares with it (`TIME`), so both can be
    // checked here; the producer picks one by the server's VERSION().
    use producer::source::mysql::{ROUND_SQL_MARIADB, ROUND_SQL_MYSQL};
    let bed = TestBed::new().await;
    let mut sleeper = bed.connect().await;
    let (id,): (u64,) = sqlx::query_as("SELECT CONNECTION_ID()")
        .fetch_one(&mut sleeper)
        .await
        .unwrap();
    let sleeping = tokio::spawn(async move {
        sqlx::query("SELECT SLEEP(2.5)")
            .execute(&mut sleeper)
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = bed.connect().await;
    for (sql, resolution_us) in [(ROUND_SQL_MARIADB, 1_000), (ROUND_SQL_MYSQL, 1_000_000)] {
        let rows: Vec<(chrono::NaiveDateTime, u64, Option<i64>, Option<i64>)> =
            sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
        let own = rows[0].1;
        assert!(rows.iter().all(|r| r.1 == own && r.2 != Some(own as i64)));
        let micros = rows
            .iter()
            .find(|r| r.2 == Some(id as i64))
            .and_then(|r| r.3)
            .unwrap_or_else(|| panic!("the sleeping statement is listed: {rows:?}"));
        assert!(
            (1_500_000 - resolution_us..2_500_000).contains(&micros),
            "{micros} µs"
        );
    }
    sleeping.await.unwrap();
    bed.drop_database().await;
}

/// A source on the test bed's database, as the producer builds it (50 ms delay).
async fn source_of(bed: &TestBed) -> producer::source::mysql::MySqlSource {
    use producer::source::Source;
    let pool = producer::source::mysql::connect_lazy(&bed.db.url).unwrap();
    let source = producer::source::mysql::MySqlSource::new(
        pool,
        producer::source::TableSpec::default(),
        Duration::from_millis(50),
        None,
    );
    source.inspect().await.unwrap();
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_waited_for_a_lock_between_two_listings_seconds_apart_is_not_skipped() {
    // Review finding 1. Listings 3 s apart (a catch-up read, Kafka backpressure, a listing that
    // failed): the statement starts (its row's stamp), waits for another table's metadata lock
    // and finishes entirely between them, so no process list shows it; its transaction stays
    // open and looks 0 s old at the next listing. InnoDB's age dates the transaction, not the
    // row: only "not listed at the previous listing" bounds it.
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 100, 1, 1).await;
    sqlx::raw_sql("CREATE TABLE other (i INT) ENGINE=InnoDB; INSERT INTO other VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let source = source_of(&bed).await;
    let (after, _) = read_until(&source, None, 100, 20.0).await;

    let mut holder = bed.connect().await;
    sqlx::raw_sql("LOCK TABLES other WRITE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut writer = bed.connect().await;
    begin(&mut writer).await;
    let waiting = tokio::spawn(async move {
        sqlx::Executor::execute(
            &mut writer,
            "UPDATE product SET price = 7.00 WHERE id = 100 AND (SELECT COUNT(*) FROM other) >= 0",
        )
        .await
        .unwrap();
        writer
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another writer commits a row stamped after the waiting statement's start.
    insert_products(&mut conn, 2, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(2700)).await;
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut writer = waiting.await.unwrap();
    // The updating transaction stays open across the next listing.
    let (after, mut rows) = read_once(&source, after).await;
    commit(&mut writer).await;
    let (_, later) = read_until(&source, after, 100, 7.0).await;
    rows.extend(later);
    assert!(rows.iter().any(|r| r.0 == 2), "{rows:?}");
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_xa_transaction_that_left_its_connection_is_not_skipped() {
    // Its read-write id ties it to what the listing showed while its connection was open.
    use sqlx::Connection;
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    insert_products(&mut conn, 100, 1, 1).await;
    let source = source_of(&bed).await;
    let (after, _) = read_until(&source, None, 100, 20.0).await;
    let mut xa = bed.connect().await;
    let xid = testkit::unique_name("xa");
    sqlx::raw_sql(&format!("XA START '{xid}'"))
        .execute(&mut xa)
        .await
        .unwrap();
    insert_products(&mut xa, 1, 1, 1).await;
    sqlx::raw_sql(&format!("XA END '{xid}'"))
        .execute(&mut xa)
        .await
        .unwrap();
    let (after, _) = read_once(&source, after).await;
    sqlx::raw_sql(&format!("XA PREPARE '{xid}'"))
        .execute(&mut xa)
        .await
        .unwrap();
    xa.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    insert_products(&mut conn, 2, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (after, mut rows) = read_once(&source, after).await;
    sqlx::raw_sql(&format!("XA COMMIT '{xid}'"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, later) = read_until(&source, after, 1, 11.01).await;
    rows.extend(later);
    assert!(rows.iter().any(|r| r.0 == 2), "{rows:?}");
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_list_keeps_every_way_of_running_a_statement_and_leaves_idle_threads_out() {
    // Review findings 4 and 5. Most of these threads cannot be made to appear on the shared
    // server (array binding needs MariaDB's bulk protocol, replication an applier, events the
    // event scheduler, which it runs without), so the server evaluates the filter both
    // process-list queries use on the entries such threads show.
    use producer::source::mysql::RUNNING_STATEMENTS;
    let bed = TestBed::new().await;
    let mut conn = bed.connect().await;
    let entries = [
        ("Query", "app", true),
        ("Execute", "app", true),
        // MariaDB's COM_STMT_BULK_EXECUTE: Connector/J batches, Python executemany, ...
        ("Bulk_execute", "app", true),
        // A scheduled event's statement runs in a worker shown as `Connect`.
        ("Connect", "app", true),
        ("Sleep", "app", false),
        ("Daemon", "event_scheduler", false),
        ("Binlog Dump", "replica", false),
        ("Binlog Dump GTID", "replica", false),
        ("Delayed insert", "DELAYED", false),
        // Replication appliers: waiting for work, their time grows forever.
        ("Slave_SQL", "system user", false),
        ("Slave_worker", "system user", false),
        ("Slave_IO", "system user", false),
        ("Query", "system user", false),
        ("Connect", "system user", false),
    ];
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 0 AS ID, ? AS COMMAND, ? AS USER) AS p \
         WHERE {RUNNING_STATEMENTS}"
    );
    for (command, user, running) in entries {
        let count: i64 = sqlx::query_scalar(&sql)
            .bind(command)
            .bind(user)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(count == 1, running, "COMMAND {command}, USER {user}");
    }
    bed.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_xa_transaction_keeps_holding_capture_back_across_a_server_crash() {
    // Review finding 2, on a MariaDB of the test's own (the shared one must not crash): InnoDB
    // recovers a prepared XA transaction with the recovery time as its start, so its age no
    // longer fits what the producer remembered of it.
    use producer::source::mysql::{connect_lazy, MySqlSource};
    use producer::source::{Source, TableSpec};
    use sqlx::Connection;
    use support::{try_read_once, PrivateMariaDb};
    let mut server = PrivateMariaDb::start().await;
    let url = server.create_database("restart").await;
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    insert_products(&mut conn, 100, 1, 1).await;
    let source = MySqlSource::new(
        connect_lazy(&url).unwrap(),
        TableSpec::default(),
        Duration::from_millis(50),
        None,
    );
    source.inspect().await.unwrap();
    let (after, _) = read_until(&source, None, 100, 20.0).await;

    let mut xa = sqlx::MySqlConnection::connect(&url).await.unwrap();
    for sql in [
        "XA START 'crash'",
        "INSERT INTO product (id, name, category, price) VALUES (1, 'prepared', 'Cat_1', 11.01)",
        "XA END 'crash'",
        "XA PREPARE 'crash'",
    ] {
        sqlx::raw_sql(sql).execute(&mut xa).await.unwrap();
    }
    let (after, mut rows) = read_once(&source, after).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    insert_products(&mut conn, 2, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Listed again, the prepared transaction holds row 2 back; then the server crashes.
    let (after, more) = read_once(&source, after).await;
    rows.extend(more);
    assert!(rows.is_empty(), "{rows:?}");
    drop(xa);
    drop(conn);
    server.crash_and_restart().await;
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let (recovered,): (String,) = sqlx::query_as("SHOW ENGINE INNODB STATUS")
        .fetch_one(&mut conn)
        .await
        .map(|(_, _, status): (String, String, String)| (status,))
        .unwrap();
    assert!(
        recovered.contains("recovered trx"),
        "the prepared transaction was recovered: {recovered}"
    );
    // The first reads after the restart may meet the pool's dead connections.
    let mut after = after;
    for _ in 0..50 {
        match try_read_once(&source, after.clone()).await {
            Ok((end, more)) => {
                after = end;
                rows.extend(more);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let (end, more) = read_once(&source, after).await;
    rows.extend(more);
    assert!(
        rows.is_empty(),
        "the recovered transaction still holds row 2 back: {rows:?}"
    );
    sqlx::raw_sql("XA COMMIT 'crash'")
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, more) = read_until(&source, end, 1, 11.01).await;
    rows.extend(more);
    assert!(rows.contains(&(2, 12.02)), "{rows:?}");
}
