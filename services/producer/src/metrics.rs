//! The producer's Prometheus metrics, registered in the application's own registry.

use common::metrics::{
    counter, counter_vec, float_gauge, gauge, gauge_vec, histogram, latency_buckets, size_buckets,
};
use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use crate::encode::RejectReason;

#[derive(Clone)]
pub struct ProducerMetrics {
    /// Rows read from the source.
    pub rows_captured: IntCounter,
    /// Records Kafka acknowledged on the topic.
    pub records_produced: IntCounter,
    /// Records Kafka did not acknowledge (each leads to a replay from the durable watermark).
    pub delivery_errors: IntCounter,
    /// Rows that could not be encoded, by reason.
    pub rows_rejected: IntCounterVec,
    /// Rows not produced again because the topic already had them (found after a restart).
    pub rows_already_in_topic: IntCounter,
    /// Row versions not produced because the topic already held a later version of the product.
    pub rows_superseded: IntCounter,
    /// Rows per read.
    pub batch_size: Histogram,
    /// Time of one read (horizon query + rows).
    pub poll_duration: Histogram,
    /// Seconds between now and the watermark (or the read horizon, when caught up).
    pub watermark_lag: Gauge,
    /// Batches produced and not yet fully acknowledged.
    pub batches_in_flight: IntGauge,
    /// 1 when open transactions bound the read horizon, 0 when only `CAPTURE_DELAY_MS` does.
    pub horizon_sees_transactions: IntGauge,
    /// 1 while the read horizon is degraded for that reason (see
    /// [`crate::pipeline::HorizonWatch`]).
    pub horizon_degraded: IntGaugeVec,
}

/// The reasons of `producer_horizon_degraded`.
pub const HORIZON_DEGRADED_REASONS: [&str; 4] = [
    "missing_privilege",
    "hidden_sessions",
    "truncated_listing",
    "unreadable_listing",
];

impl ProducerMetrics {
    /// The metrics of table capture (its rejection reasons are listed from the start).
    pub fn new(registry: &Registry) -> Self {
        let labels = RejectReason::ALL.map(RejectReason::label);
        Self::with_reject_reasons(registry, &labels)
    }

    /// The metrics, with `producer_rows_rejected_total` listing `reasons` from the start.
    pub fn with_reject_reasons(registry: &Registry, reasons: &[&str]) -> Self {
        let rows_rejected = counter_vec(
            registry,
            "producer_rows_rejected_total",
            "Rows that could not be encoded and were not produced to the topic, by reason.",
            &["reason"],
        );
        for reason in reasons {
            rows_rejected.with_label_values(&[reason]);
        }
        let horizon_sees_transactions = gauge(
            registry,
            "producer_horizon_sees_transactions",
            "1 when the start of open transactions bounds the read horizon, 0 when only CAPTURE_DELAY_MS does.",
        );
        horizon_sees_transactions.set(1);
        let horizon_degraded = gauge_vec(
            registry,
            "producer_horizon_degraded",
            "1 while the read horizon is degraded for this reason: missing_privilege and hidden_sessions (only CAPTURE_DELAY_MS bounds it: rows of longer transactions can be missed), truncated_listing and unreadable_listing (capture holds at the last safe horizon).",
            &["reason"],
        );
        for reason in HORIZON_DEGRADED_REASONS {
            horizon_degraded.with_label_values(&[reason]).set(0);
        }
        Self {
            rows_captured: counter(registry, "producer_rows_captured_total", "Rows read from the source (table rows or CSV records)."),
            records_produced: counter(
                registry,
                "producer_records_produced_total",
                "Records acknowledged by Kafka on the topic.",
            ),
            delivery_errors: counter(
                registry,
                "producer_delivery_errors_total",
                "Records Kafka failed to acknowledge (capture replays from the durable watermark).",
            ),
            rows_rejected,
            rows_already_in_topic: counter(
                registry,
                "producer_rows_already_in_topic_total",
                "Rows not produced again because the topic already held them (found by the read-back after a restart).",
            ),
            rows_superseded: counter(
                registry,
                "producer_rows_superseded_total",
                "Row versions not produced because the topic already held a later version of the product (after a delivery that failed part-way).",
            ),
            batch_size: histogram(registry, "producer_batch_size_rows", "Rows per read.", size_buckets()),
            poll_duration: histogram(
                registry,
                "producer_poll_duration_seconds",
                "Duration of one read from the source.",
                latency_buckets(),
            ),
            watermark_lag: float_gauge(
                registry,
                "producer_watermark_lag_seconds",
                "Seconds between now and the durable watermark (the read horizon when caught up).",
            ),
            batches_in_flight: gauge(
                registry,
                "producer_batches_in_flight",
                "Batches produced and not yet fully acknowledged.",
            ),
            horizon_sees_transactions,
            horizon_degraded,
        }
    }
}
