//! Capture from the MySQL/MariaDB `product` table.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};

use super::{Batch, HorizonBound, Source, SourceError, SourceRow};
use crate::position::{read_horizon, Position};

/// MySQL error 1227 (`ER_SPECIFIC_ACCESS_DENIED_ERROR`): e.g. reading `INNODB_TRX` without the
/// `PROCESS` privilege.
const ACCESS_DENIED: u16 = 1227;
/// MySQL error 1142 (`ER_TABLEACCESS_DENIED_ERROR`).
const TABLE_ACCESS_DENIED: u16 = 1142;

/// The database clock and the start of the oldest open transaction that may write (other than
/// our own). `trx_started` is in the server's system time zone, hence `CONVERT_TZ`. Read-only
/// transactions and autocommit non-locking reads cannot write rows, so they do not hold capture
/// back.
const HORIZON_SQL: &str = "\
    SELECT UTC_TIMESTAMP(6) AS db_now, \
           (SELECT CONVERT_TZ(MIN(trx_started), 'SYSTEM', '+00:00') \
              FROM information_schema.INNODB_TRX \
             WHERE trx_mysql_thread_id <> CONNECTION_ID() \
               AND trx_is_read_only = 0 \
               AND trx_autocommit_non_locking = 0) AS oldest_open_transaction";

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
struct HorizonRow {
    db_now: NaiveDateTime,
    oldest_open_transaction: Option<NaiveDateTime>,
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
}

impl MySqlSource {
    pub fn new(pool: MySqlPool, capture_delay: Duration) -> Self {
        Self {
            pool,
            delay: capture_delay,
            transactions_visible: Arc::new(AtomicBool::new(true)),
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
            match sqlx::query_as::<_, HorizonRow>(HORIZON_SQL)
                .fetch_one(&self.pool)
                .await
            {
                Ok(row) => {
                    let bound = match row.oldest_open_transaction {
                        Some(started) if started < row.db_now => HorizonBound::OpenTransaction,
                        _ => HorizonBound::Window,
                    };
                    return Ok((
                        read_horizon(row.db_now, row.oldest_open_transaction, self.delay),
                        bound,
                    ));
                }
                Err(e) if is_privilege_error(&e) => {
                    self.transactions_visible.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        delay_ms = self.delay.as_millis(),
                        "cannot read information_schema.INNODB_TRX (grant the PROCESS privilege to the \
                         producer's database user and restart); falling back to CAPTURE_DELAY_MS alone: \
                         a row whose transaction stays open longer than that can be missed"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (db_now,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&self.pool).await?;
        Ok((
            read_horizon(db_now, None, self.delay),
            HorizonBound::WindowOnly,
        ))
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
