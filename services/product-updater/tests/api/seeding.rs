use std::io::Write;

use product_updater::product_csv::RejectReason;
use product_updater::{Application, Config};
use rust_decimal::Decimal;

use crate::helpers::{
    database_now, env_for, fresh_database, products, repository_csv, repository_rows, RunningApp,
};

fn temp_csv(contents: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .expect("temp file");
    file.write_all(contents).expect("write temp CSV");
    file.flush().expect("flush temp CSV");
    file
}

async fn total_rejected(app: &RunningApp) -> f64 {
    let mut total = 0.0;
    for reason in RejectReason::ALL {
        total += app
            .metric(&format!(
                "product_updater_rows_rejected_total{{reason=\"{}\"}}",
                reason.label()
            ))
            .await;
    }
    total
}

#[tokio::test]
async fn seeding_the_repository_csv_stores_every_row_stamped_by_the_database() {
    let (db, mut conn) = fresh_database().await;
    let before = database_now(&mut conn).await;
    let app = RunningApp::start(env_for(&db.url, &repository_csv(), "0")).await;
    app.wait_for_seed().await;

    let stored = products(&mut conn).await;
    let after = database_now(&mut conn).await;
    let expected = repository_rows();
    assert_eq!(expected.len(), 50, "data/products.csv has 50 rows");
    let stored_values: Vec<_> = stored
        .iter()
        .map(|p| (p.id, p.name.clone(), p.category.clone(), p.price))
        .collect();
    assert_eq!(stored_values, expected);
    for product in &stored {
        assert!(
            before <= product.last_updated && product.last_updated <= after,
            "product {} is stamped {} (the CSV's time), not by the database during the seed ({before} .. {after})",
            product.id,
            product.last_updated
        );
    }
    assert_eq!(app.metric("product_updater_rows_seeded_total").await, 50.0);
    assert_eq!(total_rejected(&app).await, 0.0);

    app.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn seeding_again_neither_duplicates_nor_resets_rows() {
    let (db, mut conn) = fresh_database().await;
    let first = RunningApp::start(env_for(&db.url, &repository_csv(), "0")).await;
    first.wait_for_seed().await;
    first.stop().await.expect("clean stop");

    // A change made after the first seed (as the update loop would) must survive the second seed.
    sqlx::query("UPDATE product SET price = 12345.67, category = NULL WHERE id = 7")
        .execute(&mut conn)
        .await
        .expect("change a product");
    let before_reseed = products(&mut conn).await;
    assert_eq!(before_reseed.len(), 50);

    let second = RunningApp::start(env_for(&db.url, &repository_csv(), "0")).await;
    second.wait_for_seed().await;
    let after_reseed = products(&mut conn).await;
    assert_eq!(
        after_reseed, before_reseed,
        "rows, values and last_updated are unchanged"
    );
    let changed = after_reseed.iter().find(|p| p.id == 7).expect("product 7");
    assert_eq!(
        (changed.price, changed.category.as_deref()),
        (Decimal::new(1_234_567, 2), None)
    );
    assert_eq!(
        second.metric("product_updater_rows_seeded_total").await,
        50.0
    );

    second.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn bad_rows_are_skipped_and_counted_while_every_good_row_is_stored() {
    let mut contents = b"id,name,category,price,last_updated\n\
        1,Good_1,Cat_1,1.00,2023-10-13 10:01:05\n\
        2,Good_2,,2.50,\n\
        x,Bad_id,Cat_1,1.00,2023-10-13 10:01:05\n\
        3,Good_3,Cat_3,3.00,2023-10-13 10:01:05\n\
        4,,Cat_4,4.00,2023-10-13 10:01:05\n\
        5,Bad_price,Cat_5,abc,2023-10-13 10:01:05\n\
        6,Negative,Cat_6,-1.00,2023-10-13 10:01:05\n\
        7,Good_7,Cat_7,7.77,2023-10-13 10:01:05\n\
        8,Short,Cat_8,8.00\n\
        9,Bad_time,Cat_1,9.00,not a time\n"
        .to_vec();
    contents.extend_from_slice(b"10,Caf\xe9,Cat_2,10.00,2023-10-13 10:01:05\n");
    contents.extend_from_slice(
        b"1,Duplicate_1,Cat_2,11.00,2023-10-13 10:01:05\n\
        11,Precise,Cat_3,1.001,2023-10-13 10:01:05\n\
        12,Huge,Cat_4,100000000,2023-10-13 10:01:05\n\
        13,Good_13,Cat_5,13.00,2023-10-13 10:01:05\n",
    );
    contents.extend_from_slice(format!("14,{},Cat_6,14.00,\n", "n".repeat(256)).as_bytes());
    let csv = temp_csv(&contents);
    let (db, mut conn) = fresh_database().await;
    // Three rows per INSERT, so bad rows fall in the middle of batches.
    let app =
        RunningApp::start(env_for(&db.url, csv.path(), "0").with("SEED_BATCH_ROWS", "3")).await;
    app.wait_for_seed().await;

    let stored: Vec<_> = products(&mut conn)
        .await
        .into_iter()
        .map(|p| (p.id, p.name, p.category, p.price))
        .collect();
    let expected = vec![
        (
            1,
            "Good_1".to_owned(),
            Some("Cat_1".to_owned()),
            Decimal::new(100, 2),
        ),
        (2, "Good_2".to_owned(), None, Decimal::new(250, 2)),
        (
            3,
            "Good_3".to_owned(),
            Some("Cat_3".to_owned()),
            Decimal::new(300, 2),
        ),
        (
            7,
            "Good_7".to_owned(),
            Some("Cat_7".to_owned()),
            Decimal::new(777, 2),
        ),
        (
            13,
            "Good_13".to_owned(),
            Some("Cat_5".to_owned()),
            Decimal::new(1300, 2),
        ),
    ];
    assert_eq!(stored, expected);

    let metrics = app.metrics_text().await;
    assert_eq!(
        crate::helpers::sample_value(&metrics, "product_updater_rows_seeded_total"),
        Some(5.0)
    );
    for reason in RejectReason::ALL {
        let expected = match reason {
            RejectReason::DatabaseRejected => 0.0,
            _ => 1.0,
        };
        let sample = format!(
            "product_updater_rows_rejected_total{{reason=\"{}\"}}",
            reason.label()
        );
        assert_eq!(
            crate::helpers::sample_value(&metrics, &sample),
            Some(expected),
            "{sample}\n{metrics}"
        );
    }

    app.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn a_row_the_database_refuses_does_not_sink_its_batch() {
    let (db, mut conn) = fresh_database().await;
    // The same table as the migration (which then finds it present), plus a constraint the CSV
    // validation knows nothing about.
    sqlx::query(
        "CREATE TABLE product (
            id INT NOT NULL PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            category VARCHAR(255) NULL,
            price DECIMAL(10, 2) NOT NULL CHECK (price < 1000),
            last_updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
        )",
    )
    .execute(&mut conn)
    .await
    .expect("create constrained table");
    let csv = temp_csv(
        b"id,name,category,price,last_updated\n\
          1,A,Cat_1,1.00,\n\
          2,B,Cat_2,2.00,\n\
          3,Too_dear,Cat_3,5000.00,\n\
          4,D,Cat_4,4.00,\n\
          5,E,Cat_5,5.00,\n",
    );
    let app =
        RunningApp::start(env_for(&db.url, csv.path(), "0").with("SEED_BATCH_ROWS", "5")).await;
    app.wait_for_seed().await;

    let ids: Vec<_> = products(&mut conn)
        .await
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, [1, 2, 4, 5]);
    assert_eq!(app.metric("product_updater_rows_seeded_total").await, 4.0);
    assert_eq!(
        app.metric("product_updater_rows_rejected_total{reason=\"database_rejected\"}")
            .await,
        1.0
    );

    app.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn a_csv_without_a_required_column_fails_at_start_naming_file_and_column() {
    let csv = temp_csv(b"id,name,category,last_updated\n1,A,Cat_1,\n");
    // The header is checked before the database is touched, so no database is needed here.
    let env = env_for("mysql://root@127.0.0.1:1/never_used", csv.path(), "0");
    let error = Application::build(Config::from_env(&env).unwrap())
        .await
        .err()
        .expect("build fails");
    let message = error.to_string();
    assert!(
        message.contains(&csv.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("`price`"), "{message}");
}
