//! Keyset arithmetic: where capture stands in the `(last_updated, id)` order, and how far it may
//! read (the read horizon).

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;

/// A row's key in the source table: an integer, or text (prototype 002's `product_id`).
///
/// Text keys are ordered by their bytes (`COLLATE "C"` in PostgreSQL), in SQL and here alike, so
/// this order is the order capture reads rows in. Keys of one table are all of one kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum RowKey {
    Int(i64),
    Text(String),
}

impl RowKey {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Int(_) => "integer",
            Self::Text(_) => "text",
        }
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(id) => write!(f, "{id}"),
            Self::Text(id) => f.write_str(id),
        }
    }
}

impl From<i64> for RowKey {
    fn from(id: i64) -> Self {
        Self::Int(id)
    }
}

impl From<i32> for RowKey {
    fn from(id: i32) -> Self {
        Self::Int(i64::from(id))
    }
}

impl From<&str> for RowKey {
    fn from(id: &str) -> Self {
        Self::Text(id.to_owned())
    }
}

impl From<String> for RowKey {
    fn from(id: String) -> Self {
        Self::Text(id)
    }
}

/// A point in the capture order. Rows are read in `(last_updated, id)` order, so "after this
/// position" means a later timestamp, or the same timestamp and a larger id. Two rows can share
/// a timestamp (a multi-row statement stamps them all alike); the id breaks the tie, so a batch
/// boundary between them loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The row's `last_updated` (UTC, microsecond precision).
    pub last_updated: NaiveDateTime,
    /// The row's primary key; `None` stands after every key of `last_updated` (a watermark that
    /// holds only a timestamp, see [`Position::after_timestamp`]).
    pub id: Option<RowKey>,
}

impl Position {
    pub fn new(last_updated: NaiveDateTime, id: impl Into<RowKey>) -> Self {
        Self {
            last_updated,
            id: Some(id.into()),
        }
    }

    /// The position right after every row stamped `last_updated`, whatever its id. A watermark
    /// file written by the original prototype holds only a timestamp, meaning "rows after it".
    pub fn after_timestamp(last_updated: NaiveDateTime) -> Self {
        Self {
            last_updated,
            id: None,
        }
    }

    /// Whether a row at `self` comes after `cursor` (`None` = the beginning: everything does).
    pub fn is_after(&self, cursor: Option<&Position>) -> bool {
        cursor.is_none_or(|c| self > c)
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.last_updated
            .cmp(&other.last_updated)
            .then_with(|| match (&self.id, &other.id) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The read horizon: rows stamped at or after it are not read yet, because a transaction that
/// has not committed yet may still add rows stamped in that range.
///
/// It is `min(now, start of the oldest open writing transaction) - delay`, all on the database
/// clock. Any row an open transaction writes is stamped at or after its statement's start, which
/// is at or after the transaction's start (minus the time a statement spends before its
/// transaction starts, covered by `delay`); `oldest_open_transaction` is a lower bound on that
/// start (see `source::open_transactions`). Without the transaction bound (no privilege to see them), only `delay`
/// protects rows whose transaction stays open longer than it.
pub fn read_horizon(
    db_now: NaiveDateTime,
    oldest_open_transaction: Option<NaiveDateTime>,
    delay: Duration,
) -> NaiveDateTime {
    let bound = match oldest_open_transaction {
        Some(started) if started < db_now => started,
        _ => db_now,
    };
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    bound
        .checked_sub_signed(delay)
        .unwrap_or(NaiveDateTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn order_is_timestamp_then_id() {
        let a = Position::new(t("2023-10-13 10:00:00"), 7);
        let b = Position::new(t("2023-10-13 10:00:00"), 8);
        let c = Position::new(t("2023-10-13 10:00:00.000001"), 1);
        assert!(a < b && b < c);
        assert!(b.is_after(Some(&a)));
        assert!(!a.is_after(Some(&a)), "a position is not after itself");
        assert!(c.is_after(Some(&b)));
        assert!(a.is_after(None), "everything is after the beginning");

        let p1 = Position::new(t("2023-10-13 10:00:00"), "P0001");
        let p2 = Position::new(t("2023-10-13 10:00:00"), "P0002");
        let lower = Position::new(t("2023-10-13 10:00:00"), "p0000");
        assert!(p1 < p2, "text keys in byte order");
        assert!(
            p2 < lower,
            "byte order: upper case before lower case (COLLATE \"C\")"
        );
        assert!(Position::after_timestamp(t("2023-10-13 10:00:00")) > lower);
    }

    #[test]
    fn a_timestamp_only_watermark_means_rows_after_that_timestamp() {
        let cursor = Position::after_timestamp(t("2023-10-13 10:00:00"));
        assert!(
            !Position::new(t("2023-10-13 10:00:00"), i64::from(i32::MAX)).is_after(Some(&cursor))
        );
        assert!(Position::new(t("2023-10-13 10:00:00.000001"), 1).is_after(Some(&cursor)));
    }

    #[test]
    fn horizon_is_the_window_when_no_transaction_is_open() {
        let now = t("2023-10-13 10:00:05.5");
        assert_eq!(
            read_horizon(now, None, Duration::from_millis(1500)),
            t("2023-10-13 10:00:04")
        );
        assert_eq!(read_horizon(now, None, Duration::ZERO), now);
    }

    #[test]
    fn an_open_transaction_holds_the_horizon_back() {
        let now = t("2023-10-13 10:00:30");
        let started = t("2023-10-13 10:00:02");
        assert_eq!(
            read_horizon(now, Some(started), Duration::from_secs(1)),
            t("2023-10-13 10:00:01"),
            "the delay also applies below the transaction start (second-truncated start time)"
        );
        // A transaction that started "after now" (clock skew between the two reads) does not
        // move the horizon forward.
        assert_eq!(
            read_horizon(now, Some(t("2023-10-13 10:00:31")), Duration::from_secs(1)),
            t("2023-10-13 10:00:29")
        );
    }

    #[test]
    fn absurd_delays_saturate_instead_of_panicking() {
        let now = t("2023-10-13 10:00:00");
        assert_eq!(read_horizon(now, None, Duration::MAX), NaiveDateTime::MIN);
    }
}
