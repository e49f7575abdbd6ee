//! Prometheus helpers. Each application owns its own [`prometheus::Registry`] (so tests can run
//! several applications in one process); these helpers create a metric and register it there.
//!
//! Registering two metrics with the same name in one registry is a programming error and panics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// A new registry that also exports the standard `process_*` metrics (RSS, CPU, open fds).
pub fn new_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registers once per registry");
    registry
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .unwrap_or_else(|e| panic!("metric registration failed: {e}"));
    collector
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric name"),
    )
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

pub fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    register(
        registry,
        prometheus::Gauge::new(name, help).expect("valid metric name"),
    )
}

pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric name"),
    )
}

pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric name"),
    )
}

/// Buckets for latencies from 0.5 ms to about 60 s.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")
}

/// Buckets for batch sizes from 1 to 65536.
pub fn size_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1.0, 4.0, 9).expect("valid buckets")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn registered_metrics_appear_in_the_text_output() {
        let registry = new_registry();
        let c = counter_vec(&registry, "things_total", "Things.", &["reason"]);
        c.with_label_values(&["bad_price"]).inc_by(3);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("things_total{reason=\"bad_price\"} 3"),
            "{text}"
        );
    }
}
