//! Capture from the MySQL/MariaDB `product` table.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::Connection;

use super::open_transactions::{OpenTransaction, Snapshot, TransactionBounds};
use super::{Batch, HorizonBound, Source, SourceError, SourceRow};
use crate::position::{read_horizon, Position};

/// MySQL error 1227 (`ER_SPECIFIC_ACCESS_DENIED_ERROR`): e.g. reading `INNODB_TRX` without the
/// `PROCESS` privilege.
const ACCESS_DENIED: u16 = 1227;
/// MySQL error 1142 (`ER_TABLEACCESS_DENIED_ERROR`).
const TABLE_ACCESS_DENIED: u16 = 1142;

/// A snapshot of the open transactions that may write, plus the reader's own (the freshness
/// proof, see [`super::open_transactions`]) and the database clock, in one statement. The
/// `LEFT JOIN` keeps one row even when nothing is listed. `trx_started` is in the server's system
/// time zone, hence `CONVERT_TZ`. Read-only transactions and autocommit non-locking reads cannot
/// write rows, so they do not hold capture back.
const SNAPSHOT_SQL: &str = "\
    SELECT n.db_now, CONNECTION_ID() AS own_connection_id, \
           t.trx_mysql_thread_id AS connection_id, \
           CONVERT_TZ(t.trx_started, 'SYSTEM', '+00:00') AS started \
      FROM (SELECT UTC_TIMESTAMP(6) AS db_now) AS n \
      LEFT JOIN information_schema.INNODB_TRX AS t \
        ON t.trx_mysql_thread_id = CONNECTION_ID() \
        OR (t.trx_is_read_only = 0 AND t.trx_autocommit_non_locking = 0)";

/// InnoDB refreshes the `INNODB_TRX` cache only when it has not been read for 100 ms; reading
/// it more often would keep it stale. Between snapshots the last horizon is reused.
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(110);

const NOW_SQL: &str = "SELECT UTC_TIMESTAMP(6) AS db_now";

/// `last_updated >= ?` lets the `(last_updated, id)` index serve the range; the `OR` then skips
/// the rows of the cursor's own timestamp up to its id.
const READ_AFTER_SQL: &str = "\
    SELECT id, name, category, price, last_updated FROM product \
     WHERE last_updated >= ? AND last_updated < ? AND (last_updated > ? OR id > ?) \
     ORDER BY last_updated, id LIMIT ?";

const READ_FROM_START_SQL: &str = "\
    SELECT id, name, category, price, last_updated FROM product \
     WHERE last_updated < ? \
     ORDER BY last_updated, id LIMIT ?";

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: i64,
    name: Option<String>,
    category: Option<String>,
    price: Option<Decimal>,
    last_updated: DateTime<Utc>,
}

impl From<ProductRow> for SourceRow {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            category: row.category,
            // DECIMAL(10,2) always converts; a failed conversion shows up as NaN and is rejected.
            price: row.price.map(|p| p.to_f64().unwrap_or(f64::NAN)),
            last_updated: row.last_updated.naive_utc(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    db_now: NaiveDateTime,
    own_connection_id: u64,
    connection_id: Option<u64>,
    started: Option<NaiveDateTime>,
}

/// What the horizon needs between reads.
#[derive(Default)]
struct HorizonState {
    bounds: TransactionBounds,
    /// When the last snapshot was taken (fresh or not: any read delays the cache refresh).
    last_snapshot_at: Option<Instant>,
    /// The last horizon computed from a fresh snapshot; it stays safe forever.
    last: Option<(NaiveDateTime, HorizonBound)>,
}

/// Connection pool options: every connection's session runs in UTC, so `TIMESTAMP` values and
/// `NOW()` are UTC.
pub fn pool_options() -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET time_zone = '+00:00'")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
}

/// A lazily connecting pool for `url` (the producer starts even while the database is down).
pub fn connect_lazy(url: &str) -> Result<MySqlPool, SourceError> {
    let options =
        MySqlConnectOptions::from_str(url).map_err(|e| SourceError::Url(e.to_string()))?;
    Ok(pool_options().connect_lazy_with(options))
}

/// The `product` table of a MySQL or MariaDB database.
#[derive(Clone)]
pub struct MySqlSource {
    pool: MySqlPool,
    delay: Duration,
    /// False once reading `INNODB_TRX` was refused: the horizon is then the window alone.
    transactions_visible: Arc<AtomicBool>,
    horizon_state: Arc<Mutex<HorizonState>>,
}

impl MySqlSource {
    pub fn new(pool: MySqlPool, capture_delay: Duration) -> Self {
        Self {
            pool,
            delay: capture_delay,
            transactions_visible: Arc::new(AtomicBool::new(true)),
            horizon_state: Arc::default(),
        }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Whether open transactions bound the read horizon (false after a privilege error).
    pub fn sees_open_transactions(&self) -> bool {
        self.transactions_visible.load(Ordering::Relaxed)
    }

    async fn horizon(&self) -> Result<(NaiveDateTime, HorizonBound), SourceError> {
        if self.transactions_visible.load(Ordering::Relaxed) {
            let reuse = {
                let state = self.horizon_state.lock().expect("horizon state lock");
                match (state.last_snapshot_at, state.last) {
                    (Some(at), Some(last)) if at.elapsed() < MIN_SNAPSHOT_INTERVAL => Some(last),
                    _ => None,
                }
            };
            if let Some(last) = reuse {
                return Ok(last);
            }
            match self.snapshot().await {
                Ok(snapshot) => {
                    let mut state = self.horizon_state.lock().expect("horizon state lock");
                    state.last_snapshot_at = Some(Instant::now());
                    let Some(snapshot) = snapshot else {
                        // Stale cache (someone read it within the last 100 ms): keep the last
                        // safe horizon, or read nothing yet.
                        return Ok(state
                            .last
                            .map(|(horizon, _)| (horizon, HorizonBound::StaleTransactionList))
                            .unwrap_or((NaiveDateTime::MIN, HorizonBound::StaleTransactionList)));
                    };
                    let oldest = state.bounds.observe(&snapshot);
                    let bound = match oldest {
                        Some(started) if started < snapshot.fresh_from => {
                            HorizonBound::OpenTransaction
                        }
                        _ => HorizonBound::Window,
                    };
                    let horizon = read_horizon(snapshot.fresh_from, oldest, self.delay);
                    // A horizon never has to move back (each one stays safe); keep the later.
                    let horizon = state.last.map_or(horizon, |(h, _)| h.max(horizon));
                    state.last = Some((horizon, bound));
                    return Ok((horizon, bound));
                }
                Err(SourceError::Database(e)) if is_privilege_error(&e) => {
                    self.transactions_visible.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        delay_ms = self.delay.as_millis(),
                        "cannot read information_schema.INNODB_TRX (grant the PROCESS privilege to the \
                         producer's database user and restart); falling back to CAPTURE_DELAY_MS alone: \
                         a row whose transaction stays open longer than that can be missed"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let (db_now,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&self.pool).await?;
        Ok((
            read_horizon(db_now, None, self.delay),
            HorizonBound::WindowOnly,
        ))
    }

    /// A snapshot of the open transactions, or `None` when it cannot be proven fresh (the
    /// probe transaction opened just before is not listed: the cache predates it).
    async fn snapshot(&self) -> Result<Option<Snapshot>, SourceError> {
        let mut conn = self.pool.acquire().await?;
        let (fresh_from,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&mut *conn).await?;
        // Dropping the transaction (also on error) rolls it back.
        let mut probe = conn
            .begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        let rows: Vec<SnapshotRow> = sqlx::query_as(SNAPSHOT_SQL).fetch_all(&mut *probe).await?;
        probe.rollback().await?;
        let mut fresh = false;
        let mut open = Vec::with_capacity(rows.len());
        for row in rows {
            match (row.connection_id, row.started) {
                (Some(id), _) if id == row.own_connection_id => fresh = true,
                (Some(connection_id), Some(started)) => open.push(OpenTransaction {
                    connection_id,
                    started,
                }),
                // A start time the time-zone conversion cannot place: assume the worst.
                (Some(connection_id), None) => open.push(OpenTransaction {
                    connection_id,
                    started: NaiveDateTime::MIN,
                }),
                (None, _) => {}
            }
            debug_assert!(row.db_now >= fresh_from);
        }
        Ok(fresh.then_some(Snapshot { fresh_from, open }))
    }

    async fn read(&self, after: Option<Position>, limit: u32) -> Result<Batch, SourceError> {
        // The horizon first, then the rows: a transaction that commits in between is either
        // visible to the read or was open when the horizon was taken.
        let (horizon, bound) = self.horizon().await?;
        let horizon_utc = horizon.and_utc();
        let rows: Vec<ProductRow> = match after {
            None => {
                sqlx::query_as(READ_FROM_START_SQL)
                    .bind(horizon_utc)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(cursor) => {
                let from = cursor.last_updated.and_utc();
                sqlx::query_as(READ_AFTER_SQL)
                    .bind(from)
                    .bind(horizon_utc)
                    .bind(from)
                    .bind(cursor.id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(Batch {
            rows: rows.into_iter().map(SourceRow::from).collect(),
            horizon,
            bound,
            limit,
        })
    }
}

fn is_privilege_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), ACCESS_DENIED | TABLE_ACCESS_DENIED)),
        _ => false,
    }
}

impl Source for MySqlSource {
    fn describe(&self) -> String {
        "mysql product table".into()
    }

    fn read_batch(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> BoxFuture<'static, Result<Batch, SourceError>> {
        let this = self.clone();
        async move { this.read(after, limit).await }.boxed()
    }

    fn ping(&self) -> BoxFuture<'static, Result<(), SourceError>> {
        let pool = self.pool.clone();
        async move {
            sqlx::query("SELECT 1").execute(&pool).await?;
            Ok(())
        }
        .boxed()
    }
}
