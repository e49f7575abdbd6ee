//! The HTTP surface over real HTTP: health, readiness, assignments and the metrics a running
//! consumer exports.

mod support;

use support::{metric, Bed, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_assignments_and_metrics() {
    let bed = Bed::new(2).await;
    bed.produce_products(1..=50).await;
    let app = bed.spawn_app().await;
    let base = format!("http://127.0.0.1:{}", app.port);

    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    let ready: serde_json::Value = testkit::wait_until(LONG, "/ready to answer 200", || async {
        let response = reqwest::get(format!("{base}/ready")).await.ok()?;
        (response.status() == 200).then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(ready["checks"]["kafka"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["sink"]["ok"], true, "{ready}");

    bed.wait_for_ids(&(1..=50).collect(), LONG).await;
    let assignment = support::assignment(app.port).await.unwrap();
    assert_eq!(assignment.slot, "consumer_1");
    assert_eq!(assignment.partitions, [0, 1]);

    // consumer_lag needs librdkafka's statistics (every 2 s) to carry the watermarks.
    testkit::wait_until(LONG, "consumer_lag samples", || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("consumer_lag{partition=\"0\"}").then_some(())
    })
    .await;
    // The writer thread reports a batch durable a moment after its lines are in the file.
    testkit::wait_until(LONG, "50 records counted as written", || async {
        (metric(app.port, "consumer_records_written_total").await == 50.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(app.port, "consumer_records_consumed_total").await,
        50.0
    );
    assert_eq!(
        metric(app.port, "consumer_end_to_end_latency_seconds_count").await,
        50.0
    );
    assert!(metric(app.port, "consumer_write_duration_seconds_count").await >= 1.0);
    assert_eq!(metric(app.port, "consumer_assigned_partitions").await, 2.0);
    assert!(metric(app.port, "consumer_rebalances_total").await >= 1.0);
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "consumer_commit_failures_total",
        "consumer_schema_registry_retries_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    app.stop().await;
}

/// `/assignments` names the member id the group coordinator gave the replica, also for a dynamic
/// member on a broker that reports no client ids (tansu), and never shows an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assignments_show_the_member_id_the_coordinator_gave() {
    let bed = Bed::new(2).await;
    // tansu describes a group only once it committed offsets.
    bed.produce_products(1..=5).await;
    let app = bed
        .spawn_app_with(&[("CONSUMER_STATIC_MEMBERSHIP", "false")])
        .await;
    let url = format!("http://127.0.0.1:{}/assignments", app.port);
    let member_id = testkit::wait_until(LONG, "a member id in /assignments", || async {
        let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        match body.get("member_id") {
            None => None,
            Some(id) => {
                let id = id.as_str().expect("member_id is a string");
                assert!(!id.is_empty(), "an empty member id is shown: {body}");
                Some(id.to_owned())
            }
        }
    })
    .await;

    // The same id as in the coordinator's description of the group (tansu describes a group
    // only once it has committed offsets).
    let described = testkit::wait_until(LONG, "the group's description", || async {
        let group = bed.group.clone();
        let members = tokio::task::spawn_blocking(move || {
            let admin: rdkafka::consumer::BaseConsumer =
                testkit::kafka().client_config().create().unwrap();
            let groups = rdkafka::consumer::Consumer::fetch_group_list(
                &admin,
                None,
                std::time::Duration::from_secs(10),
            )
            .ok()?;
            Some(
                groups
                    .groups()
                    .iter()
                    .filter(|g| g.name() == group)
                    .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap()?;
        (!members.is_empty()).then_some(members)
    })
    .await;
    assert_eq!(
        described,
        std::slice::from_ref(&member_id),
        "the group's only member"
    );
    assert!(member_id.starts_with("consumer_1-"), "{member_id}");
    app.stop().await;
}
