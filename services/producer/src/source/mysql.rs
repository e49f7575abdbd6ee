//! Capture from a MySQL/MariaDB table (`product` by default, see [`TableSpec`]). The id column
//! must be an integer column (text ids are supported with PostgreSQL only).

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
use super::{Batch, HorizonBound, IdKind, Source, SourceError, SourceRow, TableSpec};
use crate::position::{read_horizon, Position, RowKey};

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

/// The capture queries for one table, built once its columns are checked.
#[derive(Debug)]
struct Queries {
    /// `(ts, id) > (?, ?)` below the horizon. `ts >= ?` lets the `(ts, id)` index serve the
    /// range; the `OR` then skips the rows of the cursor's own timestamp up to its id.
    after: String,
    /// Rows stamped after `?` (a watermark holding only a timestamp) below the horizon.
    after_timestamp: String,
    /// Everything below the horizon.
    from_start: String,
}

impl Queries {
    fn new(spec: &TableSpec) -> Self {
        let q = |name: &str| format!("`{name}`");
        let table = match &spec.schema {
            Some(schema) => format!("{}.{}", q(schema), q(&spec.table)),
            None => q(&spec.table),
        };
        let (id, ts) = (q(&spec.id_column), q(&spec.timestamp_column));
        let select = format!(
            "SELECT {id} AS id, `name` AS name, `category` AS category, `price` AS price, \
             {ts} AS last_updated FROM {table}"
        );
        let order = format!("ORDER BY {ts}, {id} LIMIT ?");
        Self {
            after: format!(
                "{select} WHERE {ts} >= ? AND {ts} < ? AND ({ts} > ? OR {id} > ?) {order}"
            ),
            after_timestamp: format!("{select} WHERE {ts} > ? AND {ts} < ? {order}"),
            from_start: format!("{select} WHERE {ts} < ? {order}"),
        }
    }
}

/// The table's columns and their types (`information_schema.COLUMNS`); the default database
/// when the spec names no schema.
const COLUMNS_SQL: &str = "\
    SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(DATA_TYPE AS CHAR) AS data_type, \
           CAST(COLUMN_TYPE AS CHAR) AS column_type \
      FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";

/// Checks the table's columns (the names are compared exactly) and builds its queries.
fn check_columns(
    spec: &TableSpec,
    columns: &[(String, String, String)],
) -> Result<Queries, SourceError> {
    if columns.is_empty() {
        return Err(SourceError::Table(format!(
            "table {spec} (SOURCE_TABLE) does not exist in the database, or the producer's user \
             cannot see it"
        )));
    }
    let find = |name: &str| columns.iter().find(|(n, _, _)| n == name);
    super::missing_columns(spec, |name| find(name).is_some())?;
    let (_, id_type, id_column_type) = find(&spec.id_column).expect("checked above");
    let id_type = id_type.to_ascii_lowercase();
    // Read as a signed 64-bit integer: unsigned columns do not decode into it.
    let unsigned = id_column_type.to_ascii_lowercase().contains("unsigned");
    if ![
        "tinyint",
        "smallint",
        "mediumint",
        "int",
        "integer",
        "bigint",
    ]
    .contains(&id_type.as_str())
        || unsigned
    {
        return Err(SourceError::Table(format!(
            "column {}.{} (SOURCE_ID_COLUMN) is {id_column_type}: MySQL/MariaDB capture needs a \
             signed integer id column (text ids are supported with PostgreSQL)",
            spec, spec.id_column
        )));
    }
    let (_, ts_type, ts_column_type) = find(&spec.timestamp_column).expect("checked above");
    if !["timestamp", "datetime"].contains(&ts_type.to_ascii_lowercase().as_str()) {
        return Err(SourceError::Table(format!(
            "column {}.{} (SOURCE_TIMESTAMP_COLUMN) is {ts_column_type}, not a TIMESTAMP or \
             DATETIME column",
            spec, spec.timestamp_column
        )));
    }
    Ok(Queries::new(spec))
}

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
            id: RowKey::Int(row.id),
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

/// A table of a MySQL or MariaDB database.
#[derive(Clone)]
pub struct MySqlSource {
    pool: MySqlPool,
    spec: Arc<TableSpec>,
    /// Set by the first successful [`Source::inspect`].
    queries: Arc<tokio::sync::OnceCell<Queries>>,
    delay: Duration,
    /// False once reading `INNODB_TRX` was refused: the horizon is then the window alone.
    transactions_visible: Arc<AtomicBool>,
    horizon_state: Arc<Mutex<HorizonState>>,
}

impl MySqlSource {
    pub fn new(pool: MySqlPool, spec: TableSpec, capture_delay: Duration) -> Self {
        Self {
            pool,
            spec: Arc::new(spec),
            queries: Arc::default(),
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

    async fn queries(&self) -> Result<&Queries, SourceError> {
        self.queries
            .get_or_try_init(|| async {
                let columns: Vec<(String, String, String)> = sqlx::query_as(COLUMNS_SQL)
                    .bind(self.spec.schema.as_deref())
                    .bind(&self.spec.table)
                    .fetch_all(&self.pool)
                    .await?;
                check_columns(&self.spec, &columns)
            })
            .await
    }

    async fn read(&self, after: Option<Position>, limit: u32) -> Result<Batch, SourceError> {
        let queries = self.queries().await?;
        // The horizon first, then the rows: a transaction that commits in between is either
        // visible to the read or was open when the horizon was taken.
        let (horizon, bound) = self.horizon().await?;
        let horizon_utc = horizon.and_utc();
        let rows: Vec<ProductRow> = match after {
            None => {
                sqlx::query_as(&queries.from_start)
                    .bind(horizon_utc)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(Position {
                last_updated,
                id: None,
            }) => {
                sqlx::query_as(&queries.after_timestamp)
                    .bind(last_updated.and_utc())
                    .bind(horizon_utc)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(Position {
                last_updated,
                id: Some(id),
            }) => {
                let RowKey::Int(id) = id else {
                    return Err(SourceError::KeyKind {
                        id,
                        kind: IdKind::Int,
                    });
                };
                let from = last_updated.and_utc();
                sqlx::query_as(&queries.after)
                    .bind(from)
                    .bind(horizon_utc)
                    .bind(from)
                    .bind(id)
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
        format!("mysql table {}", self.spec)
    }

    fn inspect(&self) -> BoxFuture<'static, Result<IdKind, SourceError>> {
        let this = self.clone();
        async move {
            this.queries().await?;
            Ok(IdKind::Int)
        }
        .boxed()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        list.iter()
            .map(|(n, t, c)| (n.to_string(), t.to_string(), c.to_string()))
            .collect()
    }

    fn product() -> Vec<(String, String, String)> {
        columns(&[
            ("id", "int", "int(11)"),
            ("name", "varchar", "varchar(255)"),
            ("category", "varchar", "varchar(255)"),
            ("price", "decimal", "decimal(10,2)"),
            ("last_updated", "timestamp", "timestamp(6)"),
        ])
    }

    #[test]
    fn the_configured_names_are_quoted_into_the_queries() {
        let spec = TableSpec::new("shop.items", "item_id", "changed_at").unwrap();
        let mut cols = product();
        cols[0].0 = "item_id".into();
        cols[4].0 = "changed_at".into();
        let q = check_columns(&spec, &cols).unwrap();
        assert!(
            q.after.contains("FROM `shop`.`items`")
                && q.after.contains("(`changed_at` > ? OR `item_id` > ?)")
                && q.after
                    .ends_with("ORDER BY `changed_at`, `item_id` LIMIT ?"),
            "{}",
            q.after
        );
        let default = check_columns(&TableSpec::default(), &product()).unwrap();
        assert!(
            default.from_start.contains("`id` AS id"),
            "{}",
            default.from_start
        );
    }

    #[test]
    fn missing_columns_and_unusable_ids_are_named() {
        let spec = TableSpec::default();
        let err = check_columns(&spec, &[]).err().unwrap().to_string();
        assert!(err.contains("table product (SOURCE_TABLE)"), "{err}");
        let cols: Vec<_> = product().into_iter().filter(|c| c.0 != "id").collect();
        let err = check_columns(&spec, &cols).err().unwrap().to_string();
        assert!(err.contains("no column id (SOURCE_ID_COLUMN)"), "{err}");
        for (data_type, column_type) in [("varchar", "varchar(50)"), ("int", "int(10) unsigned")] {
            let mut cols = product();
            cols[0] = ("id".into(), data_type.into(), column_type.into());
            let err = check_columns(&spec, &cols).err().unwrap().to_string();
            assert!(
                err.contains("SOURCE_ID_COLUMN") && err.contains(column_type),
                "{err}"
            );
        }
    }
}
