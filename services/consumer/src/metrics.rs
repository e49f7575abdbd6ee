//! The consumer's Prometheus metrics (one registry per application instance).

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use common::metrics as m;

#[derive(Clone)]
pub struct ConsumerMetrics {
    pub records_consumed: IntCounterVec,
    pub records_written: IntCounterVec,
    pub records_skipped: IntCounterVec,
    pub records_filtered: IntCounter,
    pub dlq_records: IntCounterVec,
    pub write_duration: Histogram,
    pub batch_records: Histogram,
    pub commit_failures: IntCounter,
    pub rebalances: IntCounter,
    pub assigned_partitions: IntGauge,
    pub lag: IntGaugeVec,
    pub end_to_end_latency: Histogram,
    pub registry_retries: IntCounter,
    pub resumed_past_commit: IntCounter,
    pub resume_lookbacks: IntCounter,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            records_consumed: m::counter_vec(
                registry,
                "consumer_records_consumed_total",
                "Records read from Kafka and handled (written or dead-lettered), by partition.",
                &["partition"],
            ),
            records_written: m::counter_vec(
                registry,
                "consumer_records_written_total",
                "Records durably written to the sink (fsync'd to the log or a stage file, or acknowledged by the output topic), by partition.",
                &["partition"],
            ),
            records_skipped: m::counter_vec(
                registry,
                "consumer_records_skipped_total",
                "Records delivered again by Kafka that the log already holds (skipped, not written twice), by partition.",
                &["partition"],
            ),
            records_filtered: m::counter(
                registry,
                "consumer_records_filtered_total",
                "Records that did not match CONSUMER_FILTER: handled (their offsets are committed), not written.",
            ),
            dlq_records: m::counter_vec(
                registry,
                "consumer_dlq_records_total",
                "Poison pills sent to the dead-letter topic, by reason (wire_format, unknown_schema, decode, transform).",
                &["reason"],
            ),
            write_duration: m::histogram(
                registry,
                "consumer_write_duration_seconds",
                "Time to make one batch durable in the sink (write and fsync, or produce and wait for the acknowledgements).",
                m::latency_buckets(),
            ),
            batch_records: m::histogram(
                registry,
                "consumer_batch_records",
                "Records per written batch.",
                m::size_buckets(),
            ),
            commit_failures: m::counter(
                registry,
                "consumer_commit_failures_total",
                "Offset commits the broker rejected or that failed (the log's own positions still prevent duplicates).",
            ),
            rebalances: m::counter(
                registry,
                "consumer_rebalances_total",
                "Rebalance events (partitions assigned or revoked) this replica took part in.",
            ),
            assigned_partitions: m::gauge(
                registry,
                "consumer_assigned_partitions",
                "Partitions this replica owns now.",
            ),
            lag: m::gauge_vec(
                registry,
                "consumer_lag",
                "Records in the partition not yet handled by this replica: high watermark minus next offset (the watermark is librdkafka's last fetched view, refreshed every 2 s; tansu understates it by up to one batch).",
                &["partition"],
            ),
            end_to_end_latency: m::histogram(
                registry,
                "consumer_end_to_end_latency_seconds",
                "Time from a product's last_updated to its record being written to the log.",
                m::latency_buckets(),
            ),
            registry_retries: m::counter(
                registry,
                "consumer_schema_registry_retries_total",
                "Times a partition was paused because the schema registry could not be reached (records are retried, never dead-lettered for this).",
            ),
            resumed_past_commit: m::counter(
                registry,
                "consumer_resumed_past_commit_records_total",
                "Records already in the logs beyond the committed offset when a partition was assigned (written, then the writer died or lost the partition before committing): skipped by resuming where the logs end, i.e. duplicates avoided.",
            ),
            resume_lookbacks: m::counter(
                registry,
                "consumer_resume_lookbacks_total",
                "Times a partition was fetched again from further back because its fetch showed no record at or before its resume point (tansu 0.6 leaves out a record batch that a fetch starts inside).",
            ),
        }
    }
}
