use testkit::{mysql_server_url, unique_name, TestDatabase};

use crate::helpers::{env_for, fresh_database, products, repository_csv, RunningApp, PATIENCE};

#[tokio::test]
async fn health_answers_at_once_and_ready_once_the_database_is_reachable() {
    let (db, _conn) = fresh_database().await;
    let app = RunningApp::start(env_for(&db.url, &repository_csv(), "0")).await;
    assert_eq!(app.get("/health").await.status(), 200);

    let body = testkit::wait_until(PATIENCE, "/ready to answer 200", || async {
        let response = app.get("/ready").await;
        if response.status() == 200 {
            Some(
                response
                    .json::<serde_json::Value>()
                    .await
                    .expect("JSON body"),
            )
        } else {
            None
        }
    })
    .await;
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");

    let metrics = app.metrics_text().await;
    for name in [
        "product_updater_rows_seeded_total",
        "product_updater_rows_rejected_total",
        "product_updater_updates_applied_total",
        "product_updater_database_errors_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} counter")),
            "{name} missing:\n{metrics}"
        );
    }

    app.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_database_is_retried_with_ready_false_and_shutdown_still_works() {
    // Nothing listens on port 1: every connection attempt is refused.
    let env = env_for(
        "mysql://root@127.0.0.1:1/unreachable",
        &repository_csv(),
        "2",
    );
    let app = RunningApp::start(env).await;
    assert_eq!(app.get("/health").await.status(), 200);

    let errors = testkit::wait_until(PATIENCE, "two failed connection attempts", || async {
        let errors = app.metric("product_updater_database_errors_total").await;
        (errors >= 2.0).then_some(errors)
    })
    .await;
    assert!(errors >= 2.0);
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    let detail = body["checks"]["database"]["detail"]
        .as_str()
        .expect("detail");
    assert!(detail.starts_with("unreachable"), "{body}");

    app.stop()
        .await
        .expect("stopping while waiting for the database is a clean stop");
}

/// Started before its database server listens (as with `docker compose up` and no health
/// conditions): `/health` 200 and `/ready` 503 while it waits, then it migrates and seeds once the
/// server is there.
#[tokio::test]
async fn started_before_the_database_server_it_waits_then_seeds() {
    let (db, mut conn) = fresh_database().await;
    let port = testkit::free_port();
    let upstream = db.url.strip_prefix("mysql://root@").unwrap();
    let (server, name) = upstream.split_once('/').unwrap();
    let url = format!("mysql://root@127.0.0.1:{port}/{name}");
    let app = RunningApp::start(env_for(&url, &repository_csv(), "0")).await;
    let errors = testkit::wait_until(PATIENCE, "a failed connection attempt", || async {
        let errors = app.metric("product_updater_database_errors_total").await;
        (errors >= 1.0).then_some(errors)
    })
    .await;
    assert!(errors >= 1.0);
    assert_eq!(app.get("/health").await.status(), 200);
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);

    testkit::forward_port(port, server).await;
    app.wait_for_seed().await;
    assert_eq!(products(&mut conn).await.len(), 50);
    testkit::wait_until(PATIENCE, "/ready to answer 200", || async {
        (app.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    app.stop().await.expect("clean stop");
    db.drop_database().await;
}

#[tokio::test]
async fn a_missing_database_is_created() {
    let name = unique_name("ps_test");
    let db = TestDatabase {
        url: format!("{}/{name}", mysql_server_url().trim_end_matches('/')),
        name,
    };
    let app = RunningApp::start(env_for(&db.url, &repository_csv(), "0")).await;
    app.wait_for_seed().await;
    let mut conn = db.connect().await;
    assert_eq!(products(&mut conn).await.len(), 50);

    app.stop().await.expect("clean stop");
    db.drop_database().await;
}
