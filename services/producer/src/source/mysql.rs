//! Capture from a MySQL/MariaDB table (`product` by default, see [`TableSpec`]). The id column
//! must be an integer column (text ids are supported with PostgreSQL only).

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::Row;

use super::changes::{BatchSender, ChangeReader};
use super::open_transactions::{
    parse_innodb_status, HorizonBounds, Listing, ListingError, RunningStatement, ServerStart,
};
use super::{
    nothing_below, timestamp_offset, Batch, Blind, ColumnTime, HorizonBound, IdKind,
    ListingProblem, Source, SourceError, SourceRow, TableSpec, TimestampColumn,
};
use crate::position::{read_horizon, Position, RowKey};

/// MySQL error 1227 (`ER_SPECIFIC_ACCESS_DENIED_ERROR`): e.g. `SHOW ENGINE INNODB STATUS` without
/// the `PROCESS` privilege.
const ACCESS_DENIED: u16 = 1227;
/// MySQL error 1142 (`ER_TABLEACCESS_DENIED_ERROR`).
const TABLE_ACCESS_DENIED: u16 = 1142;
/// MySQL error 1176 (`ER_KEY_DOES_NOT_EXITS`, the same in MariaDB): the index a query forces
/// does not exist (any more).
const KEY_DOES_NOT_EXIST: u16 = 1176;

/// The process-list entries (`information_schema.PROCESSLIST AS p`) that are statements which
/// may stamp rows: every command but the idle ones, so that no way of running a statement is
/// missed (MariaDB's `Bulk_execute` for array binding, an event's statement shown as `Connect`,
/// `Query`, `Execute`, ...). Left out, because their time grows while they wait for work and
/// would hold the horizon forever: idle connections (`Sleep`), the event scheduler (`Daemon`),
/// a replica's connection to this server (`Binlog Dump`), `INSERT DELAYED`'s handler thread
/// (MyISAM and Aria only), and replication appliers (`USER` `system user`; MariaDB's `Slave_IO`,
/// `Slave_SQL`, `Slave_worker`). What an applier writes carries its source's stamps, which no
/// horizon of this server bounds: capture from the source, not a replica.
macro_rules! running_statements {
    () => {
        "p.ID <> CONNECTION_ID() \
         AND p.COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID', \
                               'Delayed insert', 'Slave_IO', 'Slave_SQL', 'Slave_worker') \
         AND NOT (p.USER <=> 'system user')"
    };
}

/// See [`running_statements`].
pub const RUNNING_STATEMENTS: &str = running_statements!();

/// The database clock, the reader's own connection and the statements running on the other
/// connections, read just before each listing (one row at least: the clock's). MariaDB reports a
/// statement's running time in `TIME_MS` (milliseconds with microsecond precision, not changed
/// by `SET TIMESTAMP`); `QUERY_ID` is not used, because a stored procedure's statements get new
/// ids while their command's time runs on.
pub const ROUND_SQL_MARIADB: &str = concat!(
    "SELECT UTC_TIMESTAMP(6) AS db_now, CONNECTION_ID() AS own_connection_id, \
            CAST(p.ID AS SIGNED) AS connection_id, \
            CAST(p.TIME_MS * 1000 AS SIGNED) AS running_micros \
       FROM (SELECT 1) AS clock \
       LEFT JOIN information_schema.PROCESSLIST AS p ON ",
    running_statements!()
);

/// The same for MySQL, whose process list has whole seconds only (`TIME`).
pub const ROUND_SQL_MYSQL: &str = concat!(
    "SELECT UTC_TIMESTAMP(6) AS db_now, CONNECTION_ID() AS own_connection_id, \
            CAST(p.ID AS SIGNED) AS connection_id, \
            CAST(p.TIME AS SIGNED) * 1000000 AS running_micros \
       FROM (SELECT 1) AS clock \
       LEFT JOIN information_schema.PROCESSLIST AS p ON ",
    running_statements!()
);

/// InnoDB's live transaction list is part of this output (see [`super::open_transactions`]).
const LISTING_SQL: &str = "SHOW ENGINE INNODB STATUS";

/// The server's kind and the time zone a session gets unless it sets one.
const SERVER_SQL: &str = "\
    SELECT CAST(VERSION() AS CHAR) AS version, CAST(@@global.time_zone AS CHAR) AS time_zone, \
           CAST(@@system_time_zone AS CHAR) AS system_time_zone";

/// How long capture uses the window alone after listing was refused before it asks again (a
/// `GRANT PROCESS` takes effect without a restart).
const LISTING_RETRY: Duration = Duration::from_secs(60);

const NOW_SQL: &str = "SELECT UTC_TIMESTAMP(6) AS db_now";

/// How long the server has been up, in whole seconds (no privilege needed; MySQL and MariaDB
/// alike). Asked only when the open-transaction bookkeeping needs to know whether the server
/// restarted ([`HorizonBounds::wants_server_start`]).
const UPTIME_SQL: &str = "SHOW GLOBAL STATUS LIKE 'Uptime'";

/// Batches one capture query reads at most. Its rows are streamed (cut into batches as they
/// arrive); a read goes on with another query while queries come back full. Bounding a query
/// keeps its snapshot short under a large backlog; at 20 batches the round trip and the horizon
/// of a new query cost little (producer bench: 100 000 rows, one query instead of 21).
pub const BATCHES_PER_QUERY: u32 = 20;

/// The capture queries for one table, built once its columns are checked (and again when the
/// index they force is gone: [`MySqlSource::replace_index`]).
#[derive(Debug)]
struct Queries {
    /// The index the queries force (`None`: no hint).
    index: Option<String>,
    /// `(ts, id) > (?, ?)` below the horizon. `ts >= ?` lets the `(ts, id)` index serve the
    /// range; the `OR` then skips the rows of the cursor's own timestamp up to its id.
    after: String,
    /// Rows stamped after `?` (a watermark holding only a timestamp) below the horizon.
    after_timestamp: String,
    /// Everything below the horizon.
    from_start: String,
    /// The offset of the wall-clock time a timestamp column without time zone holds (`None`:
    /// UTC or instants).
    offset: Option<FixedOffset>,
    server: Server,
}

/// MySQL and MariaDB report running statements differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    MariaDb,
    MySql,
}

impl Server {
    fn of_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Self::MariaDb
        } else {
            Self::MySql
        }
    }

    fn round_sql(self) -> &'static str {
        match self {
            Self::MariaDb => ROUND_SQL_MARIADB,
            Self::MySql => ROUND_SQL_MYSQL,
        }
    }

    /// The unit of the statements' running times.
    fn resolution(self) -> Duration {
        match self {
            Self::MariaDb => Duration::from_millis(1),
            Self::MySql => Duration::from_secs(1),
        }
    }
}

impl Queries {
    /// `index`: the index that serves the `(ts, id)` order (see [`keyset_index`]), which the
    /// queries force.
    fn new(
        spec: &TableSpec,
        index: Option<&str>,
        offset: Option<FixedOffset>,
        server: Server,
    ) -> Self {
        let q = |name: &str| format!("`{}`", name.replace('`', "``"));
        let table = match &spec.schema {
            Some(schema) => format!("{}.{}", q(schema), q(&spec.table)),
            None => q(&spec.table),
        };
        // Without the hint, a query whose LIMIT exceeds about half the table (catching up on a
        // small table, or one query of 100 000 rows in the benchmark) is planned as a full scan
        // and a sort: the server sends nothing until it has read and sorted every row.
        let table = match index {
            Some(index) => format!("{table} FORCE INDEX ({})", q(index)),
            None => table,
        };
        let (id, ts) = (q(&spec.id_column), q(&spec.timestamp_column));
        // The column order is what `ProductRow` reads.
        let select = format!(
            "SELECT {id} AS id, `name` AS name, `category` AS category, `price` AS price, \
             {ts} AS last_updated FROM {table}"
        );
        let order = format!("ORDER BY {ts}, {id} LIMIT ?");
        Self {
            index: index.map(str::to_owned),
            after: format!(
                "{select} WHERE {ts} >= ? AND {ts} < ? AND ({ts} > ? OR {id} > ?) {order}"
            ),
            after_timestamp: format!("{select} WHERE {ts} > ? AND {ts} < ? {order}"),
            from_start: format!("{select} WHERE {ts} < ? {order}"),
            offset,
            server,
        }
    }
}

/// The table's columns and their types (`information_schema.COLUMNS`); the default database
/// when the spec names no schema.
const COLUMNS_SQL: &str = "\
    SELECT CAST(COLUMN_NAME AS CHAR) AS name, CAST(DATA_TYPE AS CHAR) AS data_type, \
           CAST(COLUMN_TYPE AS CHAR) AS column_type, \
           CAST(DATETIME_PRECISION AS SIGNED) AS datetime_precision \
      FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";

/// The table's indexes, column by column (`information_schema.STATISTICS`).
const INDEXES_SQL: &str = "\
    SELECT CAST(INDEX_NAME AS CHAR) AS index_name, CAST(COLUMN_NAME AS CHAR) AS column_name \
      FROM information_schema.STATISTICS \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
     ORDER BY INDEX_NAME, SEQ_IN_INDEX";

/// The name of an index that serves capture's `(ts, id)` order, from `(index, column)` pairs in
/// index and column order: one that starts with the timestamp column and the id column, or with
/// the timestamp column alone when the id column is the primary key (InnoDB appends the primary
/// key to every secondary index). One that also holds the value columns is preferred: reads are
/// then served from the index alone.
fn keyset_index(spec: &TableSpec, indexes: &[(String, String)]) -> Option<String> {
    let columns_of = |name: &str| -> Vec<&str> {
        indexes
            .iter()
            .filter(|(index, _)| index == name)
            .map(|(_, column)| column.as_str())
            .collect()
    };
    let id_is_primary_key = columns_of("PRIMARY") == [spec.id_column.as_str()];
    let mut names: Vec<&str> = indexes.iter().map(|(index, _)| index.as_str()).collect();
    names.dedup();
    let serving: Vec<(&str, Vec<&str>)> = names
        .into_iter()
        .map(|name| (name, columns_of(name)))
        .filter(|(_, columns)| match columns.as_slice() {
            [ts, id, ..] => *ts == spec.timestamp_column && *id == spec.id_column,
            [ts] => *ts == spec.timestamp_column && id_is_primary_key,
            [] => false,
        })
        .collect();
    let covers = |columns: &[&str]| {
        TableSpec::VALUE_COLUMNS
            .iter()
            .all(|value| columns.contains(value))
    };
    serving
        .iter()
        .find(|(_, columns)| covers(columns))
        .or(serving.first())
        .map(|(name, _)| (*name).to_owned())
}

/// A column as `information_schema.COLUMNS` describes it: name, `DATA_TYPE`, `COLUMN_TYPE`,
/// `DATETIME_PRECISION`.
type Column = (String, String, String, Option<i64>);

/// Checks the table's columns (the names are compared exactly).
fn check_columns(spec: &TableSpec, columns: &[Column]) -> Result<(), SourceError> {
    if columns.is_empty() {
        return Err(SourceError::TableMissing(format!(
            "table {spec} (SOURCE_TABLE) does not exist in the database, or the producer's user \
             cannot see it"
        )));
    }
    let find = |name: &str| columns.iter().find(|(n, ..)| n == name);
    super::missing_columns(spec, |name| find(name).is_some())?;
    let (_, id_type, id_column_type, _) = find(&spec.id_column).expect("checked above");
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
    let (_, price_type, price_column_type, _) = find("price").expect("checked above");
    if !price_type.eq_ignore_ascii_case("decimal") {
        return Err(SourceError::Table(format!(
            "column {spec}.price is {price_column_type}: MySQL/MariaDB capture needs a DECIMAL \
             (NUMERIC) price column"
        )));
    }
    let (_, ts_type, ts_column_type, _) = find(&spec.timestamp_column).expect("checked above");
    if !["timestamp", "datetime"].contains(&ts_type.to_ascii_lowercase().as_str()) {
        return Err(SourceError::Table(format!(
            "column {}.{} (SOURCE_TIMESTAMP_COLUMN) is {ts_column_type}, not a TIMESTAMP or \
             DATETIME column",
            spec, spec.timestamp_column
        )));
    }
    Ok(())
}

/// The server's time zone settings: `@@global.time_zone` and `@@system_time_zone`.
struct ServerZone {
    time_zone: String,
    system_time_zone: String,
}

impl ServerZone {
    /// The zone a session gets unless it sets one.
    fn default_zone(&self) -> String {
        if self.time_zone.eq_ignore_ascii_case("SYSTEM") {
            format!("SYSTEM ({})", self.system_time_zone)
        } else {
            self.time_zone.clone()
        }
    }
}

/// What [`timestamp_offset`] needs to know of the (checked) timestamp column.
fn timestamp_column(spec: &TableSpec, columns: &[Column], zone: &ServerZone) -> TimestampColumn {
    let (_, ts_type, ts_column_type, precision) = columns
        .iter()
        .find(|(n, ..)| *n == spec.timestamp_column)
        .expect("checked by check_columns");
    let q = |name: &str| format!("`{}`", name.replace('`', "``"));
    let table = match &spec.schema {
        Some(schema) => format!("{}.{}", q(schema), q(&spec.table)),
        None => q(&spec.table),
    };
    let ts = q(&spec.timestamp_column);
    let datetime = ts_type.eq_ignore_ascii_case("datetime");
    let (kind, default) = if datetime {
        ("DATETIME", "")
    } else {
        (
            "TIMESTAMP",
            " NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
        )
    };
    TimestampColumn {
        shown_type: ts_column_type.clone(),
        precision: precision.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        time: if datetime {
            ColumnTime::WallClock {
                default_zone: Ok(zone.default_zone()),
                to_instants: format!(
                    "ALTER TABLE {table} MODIFY {ts} TIMESTAMP(6) (after converting its values \
                     to the session time zone the writers use)"
                ),
            }
        } else {
            ColumnTime::Instants
        },
        to_microseconds: format!(
            "ALTER TABLE {table} MODIFY {ts} {kind}(6){default} (keeping the column's own NULL \
             and DEFAULT clauses)"
        ),
    }
}

/// A captured row, read by column position (the queries select `id, name, category, price,
/// last_updated` in this order): no lookup of each column by name for every row.
struct ProductRow(SourceRow);

impl<'r> sqlx::FromRow<'r, MySqlRow> for ProductRow {
    fn from_row(row: &'r MySqlRow) -> Result<Self, sqlx::Error> {
        // A DECIMAL arrives as its decimal text, in both protocols (the column type is checked
        // at start-up: `check_columns`). Parsed as f64 it becomes the nearest double, as a
        // `Decimal` converted to f64 would, without the `Decimal`; a failed parse shows up as
        // NaN and is rejected.
        let price: Option<&str> = row.try_get_unchecked(3)?;
        let last_updated: DateTime<Utc> = row.try_get(4)?;
        Ok(Self(SourceRow {
            id: RowKey::Int(row.try_get(0)?),
            name: row.try_get(1)?,
            category: row.try_get(2)?,
            price: price.map(|p| p.parse().unwrap_or(f64::NAN)),
            last_updated: last_updated.naive_utc(),
        }))
    }
}

/// What the horizon needs between reads.
#[derive(Default)]
struct HorizonState {
    bounds: HorizonBounds,
    /// The last horizon computed from a complete listing; it stays safe forever.
    last: Option<NaiveDateTime>,
    /// Set while listing is refused (no `PROCESS` privilege): when to ask again.
    blind_until: Option<Instant>,
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
    /// Set by the first successful [`Source::inspect`]; replaced when the index its queries
    /// force is dropped ([`MySqlSource::replace_index`]).
    queries: Arc<tokio::sync::Mutex<Option<Arc<Queries>>>>,
    delay: Duration,
    /// `SOURCE_TIMESTAMP_TIME_ZONE`.
    writer_time_zone: Option<FixedOffset>,
    horizon_state: Arc<Mutex<HorizonState>>,
}

impl MySqlSource {
    pub fn new(
        pool: MySqlPool,
        spec: TableSpec,
        capture_delay: Duration,
        writer_time_zone: Option<FixedOffset>,
    ) -> Self {
        Self {
            pool,
            spec: Arc::new(spec),
            queries: Arc::default(),
            delay: capture_delay,
            writer_time_zone,
            horizon_state: Arc::default(),
        }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn horizon(&self, server: Server) -> Result<(NaiveDateTime, HorizonBound), SourceError> {
        let blind = {
            let state = self.horizon_state.lock().expect("horizon state lock");
            state
                .blind_until
                .is_some_and(|until| Instant::now() < until)
        };
        if !blind {
            match self.listing(server).await {
                Ok(listing) => {
                    let wants_server_start = {
                        let mut state = self.horizon_state.lock().expect("horizon state lock");
                        if state.blind_until.take().is_some() {
                            tracing::info!("listing InnoDB's open transactions works again");
                        }
                        match &listing {
                            Ok(listing) => state.bounds.wants_server_start(listing),
                            Err(_) => false,
                        }
                    };
                    let mut listing = match listing {
                        Ok(listing) => listing,
                        Err(e) => {
                            // Transactions may be missing: keep the last safe horizon (or read
                            // nothing yet), so capture stops moving but never skips a row. The
                            // capture loop makes this visible.
                            tracing::debug!(error = %e, "cannot use the open-transaction list");
                            let problem = match e {
                                ListingError::Truncated => ListingProblem::Truncated,
                                ListingError::NoTransactionList | ListingError::Incomplete => {
                                    ListingProblem::Unreadable
                                }
                            };
                            let state = self.horizon_state.lock().expect("horizon state lock");
                            return Ok((
                                state.last.unwrap_or(NaiveDateTime::MIN),
                                HorizonBound::IncompleteTransactionList(problem),
                            ));
                        }
                    };
                    if wants_server_start {
                        listing.server_start = Some(self.server_start().await?);
                    }
                    let mut state = self.horizon_state.lock().expect("horizon state lock");
                    let oldest = state.bounds.observe(&listing);
                    let bound = match oldest {
                        Some(started) if started < listing.listed_after => {
                            HorizonBound::OpenTransaction
                        }
                        _ => HorizonBound::Window,
                    };
                    let horizon = read_horizon(listing.listed_after, oldest, self.delay);
                    // A horizon never has to move back (each one stays safe); keep the later.
                    let horizon = state.last.map_or(horizon, |h| h.max(horizon));
                    state.last = Some(horizon);
                    return Ok((horizon, bound));
                }
                Err(SourceError::Database(e)) if is_privilege_error(&e) => {
                    let mut state = self.horizon_state.lock().expect("horizon state lock");
                    if state.blind_until.is_none() {
                        tracing::warn!(
                            error = %e,
                            "SHOW ENGINE INNODB STATUS refused: the producer's database user \
                             lacks the PROCESS privilege"
                        );
                    }
                    state.blind_until = Some(Instant::now() + LISTING_RETRY);
                }
                Err(e) => return Err(e),
            }
        }
        let (db_now,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&self.pool).await?;
        Ok((
            read_horizon(db_now, None, self.delay),
            HorizonBound::WindowOnly(Blind::MissingPrivilege),
        ))
    }

    /// When the server started (see [`ServerStart`]).
    async fn server_start(&self) -> Result<ServerStart, SourceError> {
        let mut conn = self.pool.acquire().await?;
        let (clock,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&mut *conn).await?;
        let started = Instant::now();
        let (_, uptime): (String, String) =
            sqlx::query_as(UPTIME_SQL).fetch_one(&mut *conn).await?;
        let uptime: u64 = uptime.trim().parse().map_err(|_| {
            SourceError::Database(sqlx::Error::Protocol(format!(
                "the server's Uptime is not a number: {uptime:?}"
            )))
        })?;
        let at = ServerStart::from_uptime(clock, uptime);
        // The status was read up to `took` after the clock: the start may be that much later.
        let took =
            chrono::Duration::from_std(started.elapsed()).unwrap_or(chrono::Duration::MAX / 2);
        Ok(ServerStart {
            earliest: at.earliest,
            latest: at.latest + took,
        })
    }

    /// The open transactions and running statements of the server (other than this
    /// connection's), listed after the returned clock reading; the inner error says why a
    /// listing cannot be trusted.
    async fn listing(&self, server: Server) -> Result<Result<Listing, ListingError>, SourceError> {
        let mut conn = self.pool.acquire().await?;
        let started = Instant::now();
        let rows: Vec<(NaiveDateTime, u64, Option<i64>, Option<i64>)> =
            sqlx::query_as(server.round_sql())
                .fetch_all(&mut *conn)
                .await?;
        let row = sqlx::query(LISTING_SQL).fetch_one(&mut *conn).await?;
        let took = started.elapsed();
        let Some(&(listed_after, own_connection, _, _)) = rows.first() else {
            return Err(SourceError::Database(sqlx::Error::RowNotFound));
        };
        let statements = rows
            .iter()
            .filter_map(|&(_, _, connection, micros)| {
                Some(RunningStatement {
                    connection: u64::try_from(connection?).ok()?,
                    running_for: Duration::from_micros(u64::try_from(micros?).unwrap_or(0)),
                    resolution: server.resolution(),
                })
            })
            .collect();
        // Columns `Type`, `Name`, `Status` (by position: prepared, the names may be missing).
        // As bytes: statement text is printed in its client's character set; the server converts
        // the output for this connection, and a byte that is not UTF-8 must not fail every read.
        let status: &[u8] = row.try_get_unchecked(2)?;
        let listed_before =
            listed_after + chrono::Duration::from_std(took).unwrap_or(chrono::Duration::MAX / 2);
        Ok(
            parse_innodb_status(status, own_connection).map(|transactions| Listing {
                listed_after,
                listed_before,
                statements,
                transactions,
                server_start: None,
            }),
        )
    }

    async fn queries(&self) -> Result<Arc<Queries>, SourceError> {
        let mut queries = self.queries.lock().await;
        if let Some(queries) = &*queries {
            return Ok(Arc::clone(queries));
        }
        let columns: Vec<Column> = sqlx::query_as(COLUMNS_SQL)
            .bind(self.spec.schema.as_deref())
            .bind(&self.spec.table)
            .fetch_all(&self.pool)
            .await?;
        check_columns(&self.spec, &columns)?;
        let (version, time_zone, system_time_zone): (String, String, String) =
            sqlx::query_as(SERVER_SQL).fetch_one(&self.pool).await?;
        let zone = ServerZone {
            time_zone,
            system_time_zone,
        };
        let column = timestamp_column(&self.spec, &columns, &zone);
        let offset = timestamp_offset(&self.spec, &column, self.delay, self.writer_time_zone)?;
        if let ColumnTime::WallClock { .. } = column.time {
            tracing::info!(
                column = %self.spec.timestamp_column,
                column_type = %column.shown_type,
                writers_offset = %offset.map_or("+00:00".to_owned(), |o| o.to_string()),
                server_time_zone = %zone.default_zone(),
                "the timestamp column holds wall-clock time: read as written at this \
                 offset from UTC (writers must not change their session's time zone)"
            );
        }
        let index = self.capture_index().await?;
        let built = Arc::new(Queries::new(
            &self.spec,
            index.as_deref(),
            offset,
            Server::of_version(&version),
        ));
        *queries = Some(Arc::clone(&built));
        Ok(built)
    }

    /// The index capture's queries force (see [`keyset_index`]); warns when there is none.
    async fn capture_index(&self) -> Result<Option<String>, SourceError> {
        let indexes: Vec<(String, String)> = sqlx::query_as(INDEXES_SQL)
            .bind(self.spec.schema.as_deref())
            .bind(&self.spec.table)
            .fetch_all(&self.pool)
            .await?;
        let index = keyset_index(&self.spec, &indexes);
        if index.is_none() {
            tracing::warn!(
                table = %self.spec,
                "the table has no index on ({ts}, {id}): every capture query reads and \
                 sorts all rows below the read horizon; create one: CREATE INDEX \
                 capture_order ON {table} ({ts}, {id})",
                ts = self.spec.timestamp_column,
                id = self.spec.id_column,
                table = self.spec,
            );
        }
        Ok(index)
    }

    /// The queries again, forcing the index that serves capture now, after `failed`'s forced
    /// index turned out to be gone (`error`): a migration dropped it while the producer ran
    /// (the product table's 0002 replaces 0001's index). Another read may have replaced them
    /// already; then those are returned.
    async fn replace_index(
        &self,
        failed: &Arc<Queries>,
        error: &sqlx::Error,
    ) -> Result<Arc<Queries>, SourceError> {
        let mut queries = self.queries.lock().await;
        if let Some(current) = &*queries {
            if !Arc::ptr_eq(current, failed) {
                return Ok(Arc::clone(current));
            }
        }
        let index = self.capture_index().await?;
        tracing::warn!(
            table = %self.spec,
            %error,
            gone = failed.index.as_deref().unwrap_or("none"),
            now = index.as_deref().unwrap_or("none (no hint)"),
            "the index capture forced is gone (dropped by a migration?): capture forces the one \
             that serves its order now"
        );
        let replaced = Arc::new(Queries::new(
            &self.spec,
            index.as_deref(),
            failed.offset,
            failed.server,
        ));
        *queries = Some(Arc::clone(&replaced));
        Ok(replaced)
    }

    /// Streams the rows after `after` below one horizon to `out`, cut into batches of
    /// `batch_size` rows as they arrive, so that the first batch is produced while the server
    /// still sends the next ones. One query covers up to [`BATCHES_PER_QUERY`] batches; while
    /// queries come back full the next one goes on from the last row, under the same horizon
    /// (listing the open transactions costs the server more than a query; an older horizon is
    /// always safe, only less far, and the next read takes a fresh one).
    async fn stream(
        &self,
        mut after: Option<Position>,
        batch_size: u32,
        out: &BatchSender,
    ) -> Result<(), SourceError> {
        // A batch's read time runs from the end of the previous one (the first: from here).
        let mut started = std::time::Instant::now();
        let mut queries = self.queries().await?;
        // The horizon first, then the rows: a transaction that commits in between is either
        // visible to the read or was open when the horizon was taken.
        let (horizon, bound) = self.horizon(queries.server).await?;
        if nothing_below(after.as_ref(), horizon) {
            out.send(Batch {
                rows: Vec::new(),
                horizon,
                bound,
                caught_up: true,
                read_time: started.elapsed(),
            })
            .await;
            return Ok(());
        }
        // The values the column holds are UTC, or wall-clock time at `offset`.
        let shift = queries
            .offset
            .map(|o| chrono::Duration::seconds(i64::from(o.local_minus_utc())));
        let to_column = |t: NaiveDateTime| shift.map_or(t, |d| t + d).and_utc();
        let horizon_utc = to_column(horizon);
        let batch_size = batch_size.max(1);
        let query_rows = batch_size.saturating_mul(BATCHES_PER_QUERY);
        // One connection for the read's queries: a query run on the pool itself passes every
        // row through one more stream (the pool's, around the connection's).
        let mut conn = self.pool.acquire().await?;
        let batch = |mut rows: Vec<SourceRow>, caught_up, started: std::time::Instant| {
            if let Some(shift) = shift {
                for row in &mut rows {
                    row.last_updated -= shift;
                }
            }
            Batch {
                rows,
                horizon,
                bound,
                caught_up,
                read_time: started.elapsed(),
            }
        };
        // Once per read: a read whose new index is gone too fails, and the next one looks again.
        let mut index_replaced = false;
        loop {
            let query = match after {
                None => sqlx::query_as(&queries.from_start).bind(horizon_utc),
                Some(Position {
                    last_updated,
                    id: None,
                }) => sqlx::query_as(&queries.after_timestamp)
                    .bind(to_column(last_updated))
                    .bind(horizon_utc),
                Some(Position {
                    last_updated,
                    id: Some(ref id),
                }) => {
                    let RowKey::Int(id) = *id else {
                        return Err(SourceError::KeyKind {
                            id: id.clone(),
                            kind: IdKind::Int,
                        });
                    };
                    let from = to_column(last_updated);
                    sqlx::query_as(&queries.after)
                        .bind(from)
                        .bind(horizon_utc)
                        .bind(from)
                        .bind(id)
                }
            };
            let mut rows = query.bind(query_rows).fetch(&mut *conn);
            let mut pending = Vec::with_capacity(batch_size as usize);
            let mut read: u32 = 0;
            let failed = loop {
                let row = match rows.try_next().await {
                    Ok(Some(ProductRow(row))) => row,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                };
                read += 1;
                pending.push(row);
                if pending.len() == batch_size as usize {
                    let rows =
                        std::mem::replace(&mut pending, Vec::with_capacity(batch_size as usize));
                    let full = batch(rows, false, started);
                    after = full.end();
                    if !out.send(full).await {
                        return Ok(());
                    }
                    started = std::time::Instant::now();
                }
            };
            drop(rows);
            if let Some(error) = failed {
                if index_replaced || !is_missing_index(&error) {
                    return Err(error.into());
                }
                // The query goes again from the end of the last batch handed over, forcing the
                // index there is now; its rows not handed over yet are read again.
                queries = self.replace_index(&queries, &error).await?;
                index_replaced = true;
                continue;
            }
            let caught_up = read < query_rows;
            if caught_up || !pending.is_empty() {
                let rest = batch(pending, caught_up, started);
                if let Some(end) = rest.end() {
                    after = Some(end);
                }
                if !out.send(rest).await || caught_up {
                    return Ok(());
                }
                started = std::time::Instant::now();
            }
        }
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

/// Whether a capture query failed because the index it forces does not exist: dropped since
/// the queries were built.
fn is_missing_index(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == KEY_DOES_NOT_EXIST),
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

    fn read_changes(&self, after: Option<Position>, batch_size: u32) -> ChangeReader {
        let this = self.clone();
        ChangeReader::spawn(move |out| async move { this.stream(after, batch_size, &out).await })
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

    fn columns(list: &[(&str, &str, &str)]) -> Vec<Column> {
        list.iter()
            .map(|(n, t, c)| {
                let precision = ["timestamp", "datetime"].contains(t).then(|| {
                    c.split_once('(')
                        .and_then(|(_, p)| p.trim_end_matches(')').parse().ok())
                        .unwrap_or(0)
                });
                (n.to_string(), t.to_string(), c.to_string(), precision)
            })
            .collect()
    }

    fn product() -> Vec<Column> {
        columns(&[
            ("id", "int", "int(11)"),
            ("name", "varchar", "varchar(255)"),
            ("category", "varchar", "varchar(255)"),
            ("price", "decimal", "decimal(10,2)"),
            ("last_updated", "timestamp", "timestamp(6)"),
        ])
    }

    fn zone(time_zone: &str, system_time_zone: &str) -> ServerZone {
        ServerZone {
            time_zone: time_zone.into(),
            system_time_zone: system_time_zone.into(),
        }
    }

    /// The offset [`timestamp_offset`] decides for `product` with this timestamp column.
    fn offset_for(
        ts: (&str, &str),
        zone: &ServerZone,
        delay_ms: u64,
        writers: Option<FixedOffset>,
    ) -> Result<Option<FixedOffset>, String> {
        let spec = TableSpec::default();
        let mut cols = product();
        cols[4] = columns(&[("last_updated", ts.0, ts.1)]).remove(0);
        check_columns(&spec, &cols).unwrap();
        let column = timestamp_column(&spec, &cols, zone);
        timestamp_offset(&spec, &column, Duration::from_millis(delay_ms), writers)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn our_migration_and_exact_timestamp_columns_pass() {
        let utc = zone("SYSTEM", "UTC");
        let berlin = zone("SYSTEM", "CET");
        // schemas/migrations/mysql: TIMESTAMP(6), in any server time zone.
        assert_eq!(
            offset_for(("timestamp", "timestamp(6)"), &berlin, 50, None),
            Ok(None)
        );
        assert_eq!(
            offset_for(("timestamp", "timestamp(6)"), &utc, 0, None),
            Ok(None)
        );
        // Milliseconds are exact when the delay covers one of them.
        assert_eq!(
            offset_for(("timestamp", "timestamp(3)"), &utc, 50, None),
            Ok(None)
        );
        // A DATETIME with its writers' zone stated.
        assert_eq!(
            offset_for(
                ("datetime", "datetime(6)"),
                &utc,
                50,
                FixedOffset::east_opt(0)
            ),
            Ok(None)
        );
    }

    #[test]
    fn a_timestamp_column_too_coarse_for_the_delay_is_refused_naming_it_and_the_fix() {
        let utc = zone("SYSTEM", "UTC");
        for (ts, delay_ms, needed) in [
            (("timestamp", "timestamp"), 50, "1000"),
            (("datetime", "datetime"), 999, "1000"),
            (("timestamp", "timestamp(1)"), 50, "100"),
            (("timestamp", "timestamp(3)"), 0, "1"),
        ] {
            let err = offset_for(ts, &utc, delay_ms, None).unwrap_err();
            assert!(
                err.contains("column product.last_updated (SOURCE_TIMESTAMP_COLUMN)")
                    && err.contains(&format!("is {}", ts.1))
                    && err.contains("MODIFY `last_updated`")
                    && err.contains("(6)")
                    && err.contains(&format!("CAPTURE_DELAY_MS to at least {needed}")),
                "{ts:?}, {delay_ms} ms: {err}"
            );
        }
        // Whole seconds with a delay of a second or more are exact (at that latency).
        assert_eq!(
            offset_for(("timestamp", "timestamp"), &utc, 1000, None),
            Ok(None)
        );
    }

    #[test]
    fn datetime_is_refused_unless_the_writers_offset_is_stated_whatever_the_server_zone() {
        let err = offset_for(
            ("datetime", "datetime(6)"),
            &zone("SYSTEM", "CET"),
            50,
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("column product.last_updated (SOURCE_TIMESTAMP_COLUMN) is datetime(6)")
                && err.contains("SYSTEM (CET)")
                && err.contains("SOURCE_TIMESTAMP_TIME_ZONE")
                && err.contains("MODIFY `last_updated` TIMESTAMP(6)"),
            "{err}"
        );
        let err = offset_for(
            ("datetime", "datetime(6)"),
            &zone("+02:00", "UTC"),
            50,
            None,
        )
        .unwrap_err();
        assert!(err.contains("+02:00"), "{err}");
        // Review findings 6 and 7: a UTC default proves nothing. `SYSTEM` with `GMT` is a
        // Europe/London server started in winter (it writes BST all summer); any session may
        // `SET time_zone`.
        for utc_default in [
            zone("SYSTEM", "GMT"),
            zone("SYSTEM", "UTC"),
            zone("+00:00", "CET"),
        ] {
            let err = offset_for(("datetime", "datetime(6)"), &utc_default, 50, None).unwrap_err();
            assert!(
                err.contains("any session may set its own")
                    && err.contains("SOURCE_TIMESTAMP_TIME_ZONE"),
                "{err}"
            );
        }
        let ist = FixedOffset::east_opt(5 * 3600 + 1800);
        assert_eq!(
            offset_for(("datetime", "datetime(6)"), &zone("SYSTEM", "CET"), 50, ist),
            Ok(ist)
        );
        assert_eq!(
            offset_for(
                ("datetime", "datetime(6)"),
                &zone("SYSTEM", "CET"),
                50,
                FixedOffset::east_opt(0)
            ),
            Ok(None),
            "stated UTC"
        );
        // The setting means nothing for a column of instants: refused rather than ignored.
        let err = offset_for(
            ("timestamp", "timestamp(6)"),
            &zone("SYSTEM", "UTC"),
            50,
            ist,
        )
        .unwrap_err();
        assert!(
            err.contains("SOURCE_TIMESTAMP_TIME_ZONE is set") && err.contains("timestamp(6)"),
            "{err}"
        );
    }

    #[test]
    fn the_configured_names_are_quoted_into_the_queries() {
        let spec = TableSpec::new("shop.items", "item_id", "changed_at").unwrap();
        let mut cols = product();
        cols[0].0 = "item_id".into();
        cols[4].0 = "changed_at".into();
        check_columns(&spec, &cols).unwrap();
        let q = Queries::new(&spec, Some("by`change"), None, Server::MariaDb);
        assert!(
            q.after
                .contains("FROM `shop`.`items` FORCE INDEX (`by``change`) WHERE")
                && q.after.contains("(`changed_at` > ? OR `item_id` > ?)")
                && q.after
                    .ends_with("ORDER BY `changed_at`, `item_id` LIMIT ?"),
            "{}",
            q.after
        );
        check_columns(&TableSpec::default(), &product()).unwrap();
        let default = Queries::new(&TableSpec::default(), None, None, Server::MySql);
        assert!(
            default.from_start.contains("`id` AS id")
                && default.from_start.contains("FROM `product` WHERE"),
            "{}",
            default.from_start
        );
    }

    #[test]
    fn the_index_forced_is_one_that_serves_the_capture_order() {
        let spec = TableSpec::default();
        let indexes = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(i, c)| (i.to_string(), c.to_string()))
                .collect()
        };
        // The first migration's index (0002 replaces it with a covering one).
        let ours = indexes(&[
            ("PRIMARY", "id"),
            ("idx_product_last_updated_id", "last_updated"),
            ("idx_product_last_updated_id", "id"),
        ]);
        assert_eq!(
            keyset_index(&spec, &ours).as_deref(),
            Some("idx_product_last_updated_id")
        );
        // More columns after (ts, id) still serve the order; an index holding every column read
        // wins over one listed before it.
        let covering = indexes(&[
            ("by_name", "name"),
            ("a_partly", "last_updated"),
            ("a_partly", "id"),
            ("a_partly", "price"),
            ("covering", "last_updated"),
            ("covering", "id"),
            ("covering", "name"),
            ("covering", "category"),
            ("covering", "price"),
        ]);
        assert_eq!(keyset_index(&spec, &covering).as_deref(), Some("covering"));
        assert_eq!(
            keyset_index(&spec, &covering[..4]).as_deref(),
            Some("a_partly")
        );
        // The timestamp alone serves it only when the id is the primary key.
        let ts_only = [("PRIMARY", "id"), ("by_ts", "last_updated")];
        assert_eq!(
            keyset_index(&spec, &indexes(&ts_only)).as_deref(),
            Some("by_ts")
        );
        let ts_only_other_key = [("PRIMARY", "sku"), ("by_ts", "last_updated")];
        assert_eq!(keyset_index(&spec, &indexes(&ts_only_other_key)), None);
        // Wrong order or other columns do not.
        for wrong in [
            &[("PRIMARY", "id"), ("i", "id"), ("i", "last_updated")][..],
            &[("i", "last_updated"), ("i", "name")][..],
            &[("PRIMARY", "id")][..],
            &[][..],
        ] {
            assert_eq!(keyset_index(&spec, &indexes(wrong)), None, "{wrong:?}");
        }
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
            cols[0] = ("id".into(), data_type.into(), column_type.into(), None);
            let err = check_columns(&spec, &cols).err().unwrap().to_string();
            assert!(
                err.contains("SOURCE_ID_COLUMN") && err.contains(column_type),
                "{err}"
            );
        }
        let mut cols = product();
        cols[3] = ("price".into(), "double".into(), "double".into(), None);
        let err = check_columns(&spec, &cols).err().unwrap().to_string();
        assert!(
            err.contains("product.price is double") && err.contains("DECIMAL"),
            "{err}"
        );
        let mut cols = product();
        cols[3] = (
            "price".into(),
            "DECIMAL".into(),
            "decimal(12,4)".into(),
            None,
        );
        check_columns(&spec, &cols).unwrap();
    }
}
