//! Capture from the MySQL/MariaDB `product` table.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::Row;

use super::open_transactions::{parse_innodb_status, Listing, ListingError, TransactionBounds};
use super::{Batch, HorizonBound, Source, SourceError, SourceRow};
use crate::position::{read_horizon, Position};

/// MySQL error 1227 (`ER_SPECIFIC_ACCESS_DENIED_ERROR`): e.g. `SHOW ENGINE INNODB STATUS` without
/// the `PROCESS` privilege.
const ACCESS_DENIED: u16 = 1227;
/// MySQL error 1142 (`ER_TABLEACCESS_DENIED_ERROR`).
const TABLE_ACCESS_DENIED: u16 = 1142;

/// The database clock and the reader's own connection, read just before each listing.
const CLOCK_SQL: &str = "SELECT UTC_TIMESTAMP(6) AS db_now, CONNECTION_ID() AS own_connection_id";

/// InnoDB's live transaction list is part of this output (see [`super::open_transactions`]).
const LISTING_SQL: &str = "SHOW ENGINE INNODB STATUS";

const NOW_SQL: &str = "SELECT UTC_TIMESTAMP(6) AS db_now";

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

/// What the horizon needs between reads.
#[derive(Default)]
struct HorizonState {
    bounds: TransactionBounds,
    /// The last horizon computed from a complete listing; it stays safe forever.
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
    /// False once listing InnoDB's transactions was refused: the horizon is then the window alone.
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
            match self.listing().await {
                Ok(listing) => {
                    let mut state = self.horizon_state.lock().expect("horizon state lock");
                    let listing = match listing {
                        Ok(listing) => listing,
                        Err(e) => {
                            // Transactions may be missing: keep the last safe horizon (or read
                            // nothing yet), so capture slows down but never skips a row.
                            tracing::debug!(error = %e, "cannot use the open-transaction list");
                            return Ok(state
                                .last
                                .map(|(horizon, _)| {
                                    (horizon, HorizonBound::IncompleteTransactionList)
                                })
                                .unwrap_or((
                                    NaiveDateTime::MIN,
                                    HorizonBound::IncompleteTransactionList,
                                )));
                        }
                    };
                    let oldest = state.bounds.observe(&listing);
                    let bound = match oldest {
                        Some(started) if started < listing.listed_after => {
                            HorizonBound::OpenTransaction
                        }
                        _ => HorizonBound::Window,
                    };
                    let horizon = read_horizon(listing.listed_after, oldest, self.delay);
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
                        "cannot list InnoDB's open transactions (grant the PROCESS privilege to the \
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

    /// The open transactions of the server (other than this connection's), listed after the
    /// returned clock reading; the inner error says why a listing cannot be trusted.
    async fn listing(&self) -> Result<Result<Listing, ListingError>, SourceError> {
        let mut conn = self.pool.acquire().await?;
        let (listed_after, own_connection): (NaiveDateTime, u64) =
            sqlx::query_as(CLOCK_SQL).fetch_one(&mut *conn).await?;
        let row = sqlx::query(LISTING_SQL).fetch_one(&mut *conn).await?;
        // Columns `Type`, `Name`, `Status` (by position: prepared, the names may be missing).
        let status: String = row.try_get(2)?;
        Ok(parse_innodb_status(&status, own_connection).map(|open| Listing { listed_after, open }))
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
