//! Lower bounds on the start of the open transactions, from successive snapshots of
//! `information_schema.INNODB_TRX` (pure bookkeeping; the queries live in [`super::mysql`]).
//!
//! Two properties of that table shape this:
//!
//! * `trx_started` has whole-second precision. Taken alone, it floors the horizon to the start of
//!   the current second whenever any transaction is open.
//! * The table is served from a cache (`TRX_I_S_CACHE`) that InnoDB refreshes only when it has
//!   **not been read for 0.1 s** — by anyone. Polled more often than that (by this producer or
//!   any other client), it never refreshes, and an empty snapshot can stay "current" while long
//!   transactions run. So a snapshot is trusted only when it proves itself fresh: the reader
//!   opens its own transaction just before reading, and the snapshot is fresh if that
//!   transaction is listed (the cache was filled after it started). A fresh snapshot lists every
//!   transaction open at some moment after `fresh_from` (the database clock read before the
//!   probe transaction started).
//!
//! Hence: a transaction listed now but not in the previous fresh snapshot was not open at that
//! snapshot's fill time, which is after its `fresh_from`; it started after that, so its start is
//! at least `max(trx_started, previous fresh_from)`. A transaction already listed keeps the
//! bound computed when it was first seen. Transactions are identified by connection id and
//! `trx_started`, not by `trx_id`: a transaction that starts read-only and then writes changes
//! its `trx_id` while it stays the same transaction. Two transactions of one connection that
//! started within the same second share a key; the later one then keeps the earlier one's
//! (lower, so safe) bound.

use std::collections::HashMap;

use chrono::NaiveDateTime;

/// An open transaction, as one snapshot lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenTransaction {
    /// `trx_mysql_thread_id`.
    pub connection_id: u64,
    /// `trx_started`, UTC, truncated to the second.
    pub started: NaiveDateTime,
}

/// One fresh snapshot of the open transactions (other than the reader's own).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Database clock read before the probe transaction started: every transaction open at some
    /// moment after this is listed.
    pub fresh_from: NaiveDateTime,
    pub open: Vec<OpenTransaction>,
}

/// The bounds remembered between snapshots.
#[derive(Debug, Default, Clone)]
pub struct TransactionBounds {
    previous_fresh_from: Option<NaiveDateTime>,
    bounds: HashMap<OpenTransaction, NaiveDateTime>,
}

impl TransactionBounds {
    /// Takes in a fresh snapshot and returns the earliest moment an open transaction may have
    /// started (`None`: no transaction is open). Transactions no longer listed are forgotten.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Option<NaiveDateTime> {
        let previous = self.previous_fresh_from;
        let mut bounds = HashMap::with_capacity(snapshot.open.len());
        for trx in &snapshot.open {
            let bound = self.bounds.get(trx).copied().unwrap_or(match previous {
                Some(p) => trx.started.max(p),
                None => trx.started,
            });
            bounds.insert(*trx, bound);
        }
        self.bounds = bounds;
        self.previous_fresh_from = Some(snapshot.fresh_from);
        self.bounds.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn trx(connection_id: u64, started: &str) -> OpenTransaction {
        OpenTransaction {
            connection_id,
            started: t(started),
        }
    }

    fn snapshot(fresh_from: &str, open: &[OpenTransaction]) -> Snapshot {
        Snapshot {
            fresh_from: t(fresh_from),
            open: open.to_vec(),
        }
    }

    #[test]
    fn the_first_snapshot_trusts_trx_started_alone() {
        let mut bounds = TransactionBounds::default();
        let s = snapshot("2024-05-01 10:47:04.215", &[trx(7, "2024-05-01 10:47:03")]);
        assert_eq!(bounds.observe(&s), Some(t("2024-05-01 10:47:03")));
    }

    #[test]
    fn a_transaction_new_since_the_previous_snapshot_started_after_it() {
        let mut bounds = TransactionBounds::default();
        bounds.observe(&snapshot("2024-05-01 10:47:04.100", &[]));
        let s = snapshot("2024-05-01 10:47:04.215", &[trx(7, "2024-05-01 10:47:04")]);
        assert_eq!(
            bounds.observe(&s),
            Some(t("2024-05-01 10:47:04.100")),
            "not listed at 10:47:04.100, so it started after that, not at the truncated second"
        );
    }

    #[test]
    fn a_carried_over_transaction_keeps_its_first_bound() {
        let mut bounds = TransactionBounds::default();
        let long = trx(7, "2024-05-01 10:47:03");
        bounds.observe(&snapshot("2024-05-01 10:47:04.000", &[]));
        assert_eq!(
            bounds.observe(&snapshot("2024-05-01 10:47:04.200", &[long])),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Still open a second later: the bound must not move up with the snapshots.
        assert_eq!(
            bounds.observe(&snapshot(
                "2024-05-01 10:47:05.300",
                &[long, trx(8, "2024-05-01 10:47:04")]
            )),
            Some(t("2024-05-01 10:47:04.000"))
        );
        // Once it ends, it is forgotten and only the newer one counts.
        assert_eq!(
            bounds.observe(&snapshot("2024-05-01 10:47:05.500", &[trx(8, "2024-05-01 10:47:04")])),
            Some(t("2024-05-01 10:47:04.200")),
            "transaction 8 was first seen at 10:47:05.300 with the previous snapshot from 10:47:04.200"
        );
        assert_eq!(
            bounds.observe(&snapshot("2024-05-01 10:47:05.700", &[])),
            None
        );
    }

    #[test]
    fn a_transaction_reappearing_after_being_forgotten_is_bounded_by_the_snapshot_before() {
        // Same connection, same truncated second, but a new transaction (the old one ended):
        // it started after the snapshot that did not list it.
        let mut bounds = TransactionBounds::default();
        let a = trx(7, "2024-05-01 10:47:04");
        bounds.observe(&snapshot("2024-05-01 10:47:04.100", &[a]));
        bounds.observe(&snapshot("2024-05-01 10:47:04.300", &[]));
        assert_eq!(
            bounds.observe(&snapshot("2024-05-01 10:47:04.500", &[a])),
            Some(t("2024-05-01 10:47:04.300"))
        );
    }

    #[test]
    fn a_stale_trx_started_never_raises_the_bound_above_its_own_value() {
        // trx_started later than the previous snapshot: trx_started is the better bound.
        let mut bounds = TransactionBounds::default();
        bounds.observe(&snapshot("2024-05-01 10:47:03.900", &[]));
        assert_eq!(
            bounds.observe(&snapshot(
                "2024-05-01 10:47:04.200",
                &[trx(7, "2024-05-01 10:47:04")]
            )),
            Some(t("2024-05-01 10:47:04"))
        );
    }
}
