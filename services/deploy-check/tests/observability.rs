//! deploy/: the Prometheus scrape config and the Grafana provisioning of the compose
//! `observability` profile, checked against the compose file and the metrics the services export.

use std::collections::BTreeSet;

use deploy_check::{base_metric, metrics_in_promql, non_test_sources, repo_root, Compose};
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/productstream.json"))
        .expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_owned())))
        })
        .collect()
}

/// The non-test sources of the three services and the shared library.
fn service_sources() -> String {
    ["common", "product-updater", "producer", "consumer"]
        .iter()
        .map(|name| non_test_sources(&repo_root().join("services").join(name).join("src")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dashboard_covers_capture_rate_lag_latency_and_rebalances() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "productstream");
    let titles: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for topic in ["capture", "lag", "latency", "rebalance"] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic}: {titles:?}"
        );
    }
    for (title, expr) in expressions(&dashboard) {
        assert!(
            !metrics_in_promql(&expr).is_empty(),
            "panel {title:?} queries no metric: {expr}"
        );
    }
}

#[test]
fn dashboard_queries_only_metrics_the_services_export() {
    let sources = service_sources();
    let mut unknown = BTreeSet::new();
    for (title, expr) in expressions(&dashboard()) {
        for series in metrics_in_promql(&expr) {
            let metric = base_metric(&series);
            let exported = sources.contains(&format!("\"{metric}\""))
                || sources.contains(&format!("\"{series}\""));
            if !exported {
                unknown.insert(format!("{series} (panel {title:?})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no service registers: {unknown:#?}"
    );
}

#[test]
fn dashboard_uses_the_provisioned_datasource() {
    let datasources = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(datasources.contains("uid: prometheus"), "{datasources}");
    assert!(
        datasources.contains("url: http://prometheus:9090"),
        "{datasources}"
    );
    let dashboard = dashboard();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "panel {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "prometheus",
                "panel {}",
                panel["title"]
            );
        }
    }
    // The provider loads dashboards from where compose mounts deploy/grafana/dashboards.
    let providers = read("deploy/grafana/provisioning/dashboards/productstream.yml");
    let config = Compose::find().config(&["observability"]);
    let grafana_mounts = config["services"]["grafana"]["volumes"]
        .as_array()
        .expect("grafana mounts");
    let dashboards_mount = grafana_mounts
        .iter()
        .find(|m| {
            m["source"]
                .as_str()
                .is_some_and(|s| s.ends_with("deploy/grafana/dashboards"))
        })
        .expect("grafana mounts deploy/grafana/dashboards");
    let target = dashboards_mount["target"].as_str().expect("mount target");
    assert!(
        providers.contains(&format!("path: {target}")),
        "provider path is not {target}: {providers}"
    );
}

#[test]
fn prometheus_scrapes_every_service_and_finds_consumers_by_dns() {
    let prometheus = read("deploy/prometheus/prometheus.yml");
    let config = Compose::find().config(&["observability"]);
    for job in ["product-updater", "producer", "consumer"] {
        assert!(
            prometheus.contains(&format!("job_name: {job}")),
            "no scrape job {job}"
        );
    }
    for target in ["product-updater:8080", "producer:8080"] {
        assert!(
            prometheus.contains(&format!("\"{target}\"")),
            "no target {target}"
        );
    }
    // Consumers: every replica behind the service name, whatever --scale says.
    let consumer_job = &prometheus[prometheus.find("job_name: consumer").expect("consumer job")..];
    assert!(consumer_job.contains("dns_sd_configs:"), "{consumer_job}");
    assert!(
        consumer_job.contains("names: [\"consumer\"]"),
        "{consumer_job}"
    );
    assert!(consumer_job.contains("type: A"), "{consumer_job}");
    assert!(consumer_job.contains("port: 8080"), "{consumer_job}");
    assert_eq!(
        config["services"]["consumer"]["environment"]["HTTP_ADDR"],
        "0.0.0.0:8080"
    );
    let mounts = config["services"]["prometheus"]["volumes"]
        .as_array()
        .expect("prometheus mounts");
    assert!(mounts
        .iter()
        .any(|m| m["target"] == "/etc/prometheus/prometheus.yml"
            && m["source"]
                .as_str()
                .is_some_and(|s| s.ends_with("deploy/prometheus/prometheus.yml"))));
}
