//! Where changes come from. A [`Source`] reads the rows changed after a [`Position`], in
//! `(last_updated, id)` order, up to a read horizon below which no uncommitted change can still
//! appear. MySQL/MariaDB is implemented ([`mysql::MySqlSource`]); a PostgreSQL source would
//! implement the same trait with its own horizon query (`pg_stat_activity.xact_start`).

pub mod mysql;
pub mod open_transactions;

use chrono::NaiveDateTime;
use futures::future::BoxFuture;

use crate::position::Position;

/// One changed row as the source stores it, before validation. Values the Avro schema cannot
/// carry (a NULL name, a NaN price) are still represented, so they can be reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    pub id: i64,
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<f64>,
    /// UTC, microsecond precision.
    pub last_updated: NaiveDateTime,
}

impl SourceRow {
    pub fn position(&self) -> Position {
        Position::new(self.last_updated, self.id)
    }
}

/// What bounded a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonBound {
    /// `now - CAPTURE_DELAY_MS`: no transaction was open.
    Window,
    /// The start of the oldest open transaction (minus the delay).
    OpenTransaction,
    /// The window alone, because open transactions cannot be seen (missing privilege).
    WindowOnly,
    /// The last safe horizon again: the list of open transactions could not be trusted (the
    /// server truncated it).
    IncompleteTransactionList,
}

/// The rows of one read, in `(last_updated, id)` order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub rows: Vec<SourceRow>,
    /// Rows stamped at or after this were not read.
    pub horizon: NaiveDateTime,
    pub bound: HorizonBound,
    /// The limit the read used.
    pub limit: u32,
}

impl Batch {
    /// A full batch means more rows may be waiting below the horizon: read again at once.
    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.limit as usize
    }

    /// The position of the last row (where the next read starts).
    pub fn end(&self) -> Option<Position> {
        self.rows.last().map(SourceRow::position)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database URL is invalid: {0}")]
    Url(String),
}

/// A table to capture changes from. Methods return `'static` futures (implementations hold
/// cheap handles such as a connection pool), so callers can keep a read in flight while doing
/// other work.
pub trait Source: Send + Sync {
    /// A short description for logs, without credentials (e.g. `mysql product table`).
    fn describe(&self) -> String;

    /// Up to `limit` rows after `after` (`None` = from the beginning) and below the read horizon,
    /// ordered by `(last_updated, id)`.
    fn read_batch(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> BoxFuture<'static, Result<Batch, SourceError>>;

    /// A cheap round trip, for readiness.
    fn ping(&self) -> BoxFuture<'static, Result<(), SourceError>>;
}
