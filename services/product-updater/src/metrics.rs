//! The product-updater's Prometheus metrics, registered in the application's own registry.

use common::metrics::{counter, counter_vec, gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::catalog_changes::ChangeKind;
use crate::product_csv::RejectReason;

#[derive(Clone)]
pub struct Metrics {
    rows_seeded: IntCounter,
    rows_rejected: IntCounterVec,
    seed_completed: IntGauge,
    updates_applied: IntCounterVec,
    updates_dropped: IntCounter,
    database_errors: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Self {
        let metrics = Self {
            rows_seeded: counter(
                registry,
                "product_updater_rows_seeded_total",
                "Valid CSV rows written to the product table (newly inserted, or already there from an earlier run).",
            ),
            rows_rejected: counter_vec(
                registry,
                "product_updater_rows_rejected_total",
                "CSV rows skipped while seeding, by reason.",
                &["reason"],
            ),
            seed_completed: gauge(
                registry,
                "product_updater_seed_completed",
                "1 once seeding from the CSV has finished in this process, else 0.",
            ),
            updates_applied: counter_vec(
                registry,
                "product_updater_updates_applied_total",
                "Catalog changes committed after seeding, by kind (price, category, new_product).",
                &["kind"],
            ),
            updates_dropped: counter(
                registry,
                "product_updater_updates_dropped_total",
                "Changes that fell due but were dropped because the database could not keep up with \
                 UPDATES_PER_SECOND (more than a second behind).",
            ),
            database_errors: counter(
                registry,
                "product_updater_database_errors_total",
                "Failed database operations (connecting, seeding, changing); each is retried after a backoff.",
            ),
        };
        // Export every label value from the start, so rates and alerts see zeros rather than gaps.
        for reason in RejectReason::ALL {
            metrics.rows_rejected.with_label_values(&[reason.label()]);
        }
        for kind in ChangeKind::ALL {
            metrics.updates_applied.with_label_values(&[kind.label()]);
        }
        metrics
    }

    pub fn rows_seeded(&self, rows: u64) {
        self.rows_seeded.inc_by(rows);
    }

    pub fn row_rejected(&self, reason: RejectReason) {
        self.rows_rejected
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn seed_completed(&self) {
        self.seed_completed.set(1);
    }

    pub fn update_applied(&self, kind: ChangeKind) {
        self.updates_applied
            .with_label_values(&[kind.label()])
            .inc();
    }

    pub fn updates_dropped(&self, changes: u64) {
        self.updates_dropped.inc_by(changes);
    }

    pub fn database_error(&self) {
        self.database_errors.inc();
    }
}
