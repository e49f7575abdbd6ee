//! Capture from a PostgreSQL table: `product` by default, or e.g. prototype 002's `products`
//! (`product_id VARCHAR` key, `updated_timestamp`), see [`TableSpec`].
//!
//! * Ids: integer columns (`smallint`, `integer`, `bigint`) or text columns (`varchar`,
//!   `text`). Text ids are ordered by their bytes: `ORDER BY ts, id COLLATE "C"` and the same
//!   `COLLATE "C"` in the keyset comparison, whatever the column's own collation, so the order
//!   is deterministic and the same as Rust's `String` order (which the producer uses when it
//!   compares positions, e.g. after a read-back).
//! * Timestamps: `timestamptz` columns are converted to UTC (`AT TIME ZONE 'UTC'`). A
//!   `timestamp` column holds each writer's wall-clock time: it is read at the offset
//!   `SOURCE_TIMESTAMP_TIME_ZONE` states, and refused without it (see
//!   [`super::timestamp_offset`]). The producer's sessions run with `TimeZone = UTC`.
//! * `price` is read as text and parsed into the nearest double (a `NUMERIC(10,2)` converts as
//!   `float8` would). A `NUMERIC` beyond a double's range (`1e400`) becomes infinite and its
//!   row is set aside, where a cast to `float8` would fail the whole read, again and again.
//!
//! The read horizon: `now()` / `CURRENT_TIMESTAMP` is the start time of the writing transaction,
//! so a row a transaction writes is stamped at or after the transaction's start (its
//! `pg_stat_activity.xact_start`). Rows stamped before the start of the oldest open transaction
//! in this database can therefore no longer appear; the horizon is
//! `min(clock_timestamp(), min(xact_start)) - CAPTURE_DELAY_MS`. Every open transaction counts,
//! also one that has not written yet (no `backend_xid`): it may write later, stamped with its
//! old start time. A session whose `xact_start` the producer's user cannot see (another role's
//! session, without `pg_read_all_stats`; `pg_stat_activity` then shows its `state` and
//! `backend_type` as NULL) makes that read fall back to the window alone, which the capture loop
//! makes visible. A transaction prepared for two-phase commit (`PREPARE TRANSACTION`) leaves
//! `pg_stat_activity` but keeps its start's stamps until `COMMIT PREPARED`: while
//! `pg_prepared_xacts` lists it, the horizon stays where it was when it was first listed there.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{FixedOffset, NaiveDateTime};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::changes::{read_batch_by_batch, ChangeReader};
use super::{
    nothing_below, timestamp_offset, Batch, Blind, ColumnTime, HorizonBound, IdKind, Source,
    SourceError, SourceRow, TableSpec, TimestampColumn,
};
use crate::position::{read_horizon, Position, RowKey};

/// The database clock (not `now()`, which stands still inside a transaction).
const NOW_SQL: &str = "SELECT (clock_timestamp() AT TIME ZONE 'UTC') AS db_now";

/// The start of the oldest open transaction of another client session of this database, how
/// many such sessions hide their state from us (for another role's session, without
/// `pg_read_all_stats`, `pg_stat_activity` shows `state`, `xact_start` and `backend_type` as
/// NULL; only the database and the role stay visible), and the ids of this database's
/// transactions prepared for two-phase commit. A transaction leaves `pg_stat_activity` at
/// `PREPARE TRANSACTION` only once it is listed in `pg_prepared_xacts`; the prepared ones are read
/// in a subquery that depends on the sessions' row, so after the sessions, and none is missed in
/// between.
const ACTIVITY_SQL: &str = "\
    SELECT a.oldest, a.hidden, \
           (SELECT array_agg(p.transaction::text) FROM pg_prepared_xacts p \
             WHERE p.database = current_database() AND a.hidden >= 0) AS prepared \
      FROM (SELECT (min(xact_start) AT TIME ZONE 'UTC') AS oldest, \
                   count(*) FILTER (WHERE state IS NULL) AS hidden \
              FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() \
               AND (backend_type = 'client backend' OR backend_type IS NULL) \
               AND datname = current_database() \
               AND (xact_start IS NOT NULL OR state IS NULL)) a";

/// The time zone this database sets for its sessions (`ALTER DATABASE ... SET TimeZone`), and
/// whether the server's configuration files may be read (`pg_file_settings`).
const DATABASE_ZONE_SQL: &str = "\
    SELECT (SELECT o.option_value \
              FROM pg_db_role_setting s, pg_options_to_table(s.setconfig) o \
             WHERE s.setrole = 0 \
               AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND lower(o.option_name) = 'timezone') AS database_zone, \
           pg_has_role('pg_read_all_settings', 'USAGE') AS reads_settings";

/// The time zone the server's configuration sets (`postgresql.conf`, `ALTER SYSTEM`).
const SERVER_ZONE_SQL: &str = "\
    SELECT setting FROM pg_file_settings WHERE lower(name) = 'timezone' AND applied \
     ORDER BY seqno DESC LIMIT 1";

/// The table's columns, their type names and type modifiers (a timestamp's precision, -1 when
/// not given: 6); none when the table does not exist.
const COLUMNS_SQL: &str = "\
    SELECT a.attname::text AS name, t.typname::text AS type_name, \
           format_type(a.atttypid, a.atttypmod) AS type, a.atttypmod AS typmod \
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/// A column: name, type name, type as shown, type modifier.
type Column = (String, String, String, i32);

/// How the timestamp column stores time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimestampKind {
    /// `timestamp without time zone`: wall-clock time (UTC, or at `Queries::offset`).
    Naive,
    /// `timestamp with time zone`.
    Zoned,
}

/// The capture queries for one table, built once its columns are checked.
#[derive(Debug)]
struct Queries {
    id_kind: IdKind,
    /// `(ts, id) > ($1, $3)` and `ts < $2`, limit `$4`.
    after: String,
    /// `ts > $1` and `ts < $2`, limit `$3` (a watermark holding only a timestamp).
    after_timestamp: String,
    /// `ts < $1`, limit `$2`.
    from_start: String,
    /// Counts the rows whose timestamp is NULL (they cannot be captured).
    null_timestamps: String,
    ts_kind: TimestampKind,
    /// The offset of the wall-clock time a `timestamp` column holds (`None`: UTC, or
    /// `timestamptz`).
    offset: Option<FixedOffset>,
}

fn quote(name: &str) -> String {
    // TableSpec only admits plain identifiers; doubling quotes keeps this safe regardless.
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified_table(spec: &TableSpec) -> String {
    match &spec.schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(&spec.table)),
        None => quote(&spec.table),
    }
}

impl Queries {
    fn new(spec: &TableSpec, id_kind: IdKind, ts_kind: TimestampKind) -> Self {
        let table = qualified_table(spec);
        let (id, ts) = (quote(&spec.id_column), quote(&spec.timestamp_column));
        let (id_select, id_order) = match id_kind {
            IdKind::Int => (format!("{id}::int8"), id.clone()),
            IdKind::Text => (format!("{id}::text"), format!("{id} COLLATE \"C\"")),
        };
        let (ts_select, param): (String, fn(u8) -> String) = match ts_kind {
            TimestampKind::Naive => (ts.clone(), |n: u8| format!("${n}::timestamp")),
            TimestampKind::Zoned => (format!("({ts} AT TIME ZONE 'UTC')"), |n: u8| {
                format!("(${n}::timestamp AT TIME ZONE 'UTC')")
            }),
        };
        let select = format!(
            "SELECT {id_select} AS id, \"name\"::text AS name, \"category\"::text AS category, \
             \"price\"::text AS price, {ts_select} AS last_updated FROM {table}"
        );
        let order = format!("ORDER BY {ts}, {id_order}");
        Self {
            id_kind,
            after: format!(
                "{select} WHERE {ts} >= {p1} AND {ts} < {p2} AND ({ts} > {p1} OR {id_order} > $3) \
                 {order} LIMIT $4",
                p1 = param(1),
                p2 = param(2),
            ),
            after_timestamp: format!(
                "{select} WHERE {ts} > {p1} AND {ts} < {p2} {order} LIMIT $3",
                p1 = param(1),
                p2 = param(2),
            ),
            from_start: format!("{select} WHERE {ts} < {p1} {order} LIMIT $2", p1 = param(1)),
            null_timestamps: format!("SELECT count(*) FROM {table} WHERE {ts} IS NULL"),
            ts_kind,
            offset: None,
        }
    }
}

/// Checks the table's columns and builds its queries.
fn check_columns(spec: &TableSpec, columns: &[Column]) -> Result<Queries, SourceError> {
    if columns.is_empty() {
        return Err(SourceError::TableMissing(format!(
            "table {spec} (SOURCE_TABLE) does not exist in the database (names are \
             case-sensitive; an unqualified name is looked up on the search_path)"
        )));
    }
    let find = |name: &str| columns.iter().find(|(n, ..)| n == name);
    super::missing_columns(spec, |name| find(name).is_some())?;
    let (_, id_type, id_shown, _) = find(&spec.id_column).expect("checked above");
    let id_kind = match id_type.as_str() {
        "int2" | "int4" | "int8" => IdKind::Int,
        "varchar" | "text" => IdKind::Text,
        _ => {
            return Err(SourceError::Table(format!(
                "column {spec}.{} (SOURCE_ID_COLUMN) is {id_shown}: the id column must be \
                 smallint, integer, bigint, varchar or text",
                spec.id_column
            )))
        }
    };
    let (_, ts_type, ts_shown, _) = find(&spec.timestamp_column).expect("checked above");
    let ts_kind = match ts_type.as_str() {
        "timestamp" => TimestampKind::Naive,
        "timestamptz" => TimestampKind::Zoned,
        _ => {
            return Err(SourceError::Table(format!(
                "column {spec}.{} (SOURCE_TIMESTAMP_COLUMN) is {ts_shown}, not a timestamp or \
                 timestamptz column",
                spec.timestamp_column
            )))
        }
    };
    let (_, price_type, price_shown, _) = find("price").expect("checked above");
    if !["numeric", "float4", "float8", "int2", "int4", "int8"].contains(&price_type.as_str()) {
        return Err(SourceError::Table(format!(
            "column {spec}.price is {price_shown}, not a number column"
        )));
    }
    Ok(Queries::new(spec, id_kind, ts_kind))
}

/// What [`timestamp_offset`] needs to know of the (checked) timestamp column; `default_zone`
/// is asked only for a `timestamp` column.
fn timestamp_column(
    spec: &TableSpec,
    columns: &[Column],
    kind: TimestampKind,
    default_zone: impl FnOnce() -> Result<String, String>,
) -> TimestampColumn {
    let (_, _, shown, typmod) = columns
        .iter()
        .find(|(n, ..)| *n == spec.timestamp_column)
        .expect("checked by check_columns");
    let (table, ts) = (qualified_table(spec), quote(&spec.timestamp_column));
    let type_name = match kind {
        TimestampKind::Naive => "timestamp",
        TimestampKind::Zoned => "timestamptz",
    };
    TimestampColumn {
        shown_type: shown.clone(),
        // No modifier: the default, microseconds.
        precision: u32::try_from(*typmod).unwrap_or(6),
        time: match kind {
            TimestampKind::Zoned => ColumnTime::Instants,
            TimestampKind::Naive => {
                let default_zone = default_zone();
                let zone = match &default_zone {
                    Ok(zone) => zone.clone(),
                    Err(_) => "<the writers' time zone>".to_owned(),
                };
                ColumnTime::WallClock {
                    default_zone,
                    to_instants: format!(
                        "ALTER TABLE {table} ALTER COLUMN {ts} TYPE timestamptz USING {ts} AT \
                         TIME ZONE '{zone}'"
                    ),
                }
            }
        },
        to_microseconds: format!("ALTER TABLE {table} ALTER COLUMN {ts} TYPE {type_name}(6)"),
    }
}

fn source_row(row: &PgRow, id_kind: IdKind) -> Result<SourceRow, sqlx::Error> {
    Ok(SourceRow {
        id: match id_kind {
            IdKind::Int => RowKey::Int(row.try_get("id")?),
            IdKind::Text => RowKey::Text(row.try_get("id")?),
        },
        name: row.try_get("name")?,
        category: row.try_get("category")?,
        price: row
            .try_get::<Option<&str>, _>("price")?
            .map(|p| p.parse().unwrap_or(f64::NAN)),
        last_updated: row.try_get("last_updated")?,
    })
}

/// Connection pool options: sessions run in UTC and show up as `productstream-producer`.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET TIME ZONE 'UTC'").execute(conn).await?;
                Ok(())
            })
        })
}

/// The URL query parameters sqlx's PostgreSQL driver understands (0.8); it logs any other one
/// with its value, which may be a secret (libpq's `sslpassword`).
fn sqlx_knows_parameter(name: &str) -> bool {
    const KNOWN: [&str; 17] = [
        "sslmode",
        "ssl-mode",
        "sslrootcert",
        "ssl-root-cert",
        "ssl-ca",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
        "statement-cache-capacity",
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "application_name",
    ];
    KNOWN.contains(&name) || name == "options" || name.starts_with("options[")
}

/// A lazily connecting pool for `url` (the producer starts even while the database is down).
/// Query parameters the driver does not know are dropped, with a warning naming them.
pub fn connect_lazy(url: &str) -> Result<PgPool, SourceError> {
    let (url, dropped) = common::config::drop_unknown_parameters(url, sqlx_knows_parameter);
    if !dropped.is_empty() {
        tracing::warn!(
            parameters = ?dropped,
            "DATABASE_URL: ignoring query parameters the PostgreSQL driver does not support"
        );
    }
    let options = PgConnectOptions::from_str(&url)
        .map_err(|e| SourceError::Url(e.to_string()))?
        .application_name("productstream-producer");
    Ok(pool_options().connect_lazy_with(options))
}

/// A table of a PostgreSQL database.
#[derive(Clone)]
pub struct PgSource {
    pool: PgPool,
    spec: Arc<TableSpec>,
    /// Set by the first successful [`Source::inspect`].
    queries: Arc<tokio::sync::OnceCell<Queries>>,
    delay: Duration,
    /// `SOURCE_TIMESTAMP_TIME_ZONE`.
    writer_time_zone: Option<FixedOffset>,
    horizon_state: Arc<Mutex<HorizonState>>,
}

/// What the horizon needs between reads.
#[derive(Default)]
struct HorizonState {
    /// The last horizon; a horizon never has to move back (each one stays safe).
    last: Option<NaiveDateTime>,
    /// The transactions prepared for two-phase commit (by id) and the horizon each holds.
    prepared: HashMap<String, NaiveDateTime>,
}

impl PgSource {
    pub fn new(
        pool: PgPool,
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

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn queries(&self) -> Result<&Queries, SourceError> {
        self.queries
            .get_or_try_init(|| async {
                let columns: Vec<Column> = sqlx::query_as(COLUMNS_SQL)
                    .bind(qualified_table(&self.spec))
                    .fetch_all(&self.pool)
                    .await?;
                let mut queries = check_columns(&self.spec, &columns)?;
                let default_zone = match queries.ts_kind {
                    TimestampKind::Naive => Some(self.default_zone().await?),
                    TimestampKind::Zoned => None,
                };
                let column = timestamp_column(&self.spec, &columns, queries.ts_kind, || {
                    default_zone.clone().expect("asked for timestamp columns only")
                });
                queries.offset =
                    timestamp_offset(&self.spec, &column, self.delay, self.writer_time_zone)?;
                if let ColumnTime::WallClock { .. } = column.time {
                    tracing::info!(
                        column = %self.spec.timestamp_column,
                        column_type = %column.shown_type,
                        writers_offset = %queries.offset.map_or("+00:00".to_owned(), |o| o.to_string()),
                        "the timestamp column holds wall-clock time: read as written at this \
                         offset from UTC (writers must not change their session's TimeZone)"
                    );
                }
                let (nulls,): (i64,) = sqlx::query_as(&queries.null_timestamps)
                    .fetch_one(&self.pool)
                    .await?;
                if nulls > 0 {
                    tracing::warn!(
                        table = %self.spec,
                        column = %self.spec.timestamp_column,
                        rows = nulls,
                        "rows with a NULL timestamp cannot be captured until they get one"
                    );
                }
                Ok(queries)
            })
            .await
    }

    /// The time zone a session of this database gets unless it or its role sets one, for the
    /// message that refuses a `timestamp` column (with the `ALTER` that converts it): the
    /// database's own setting, else the server's configuration (readable with
    /// `pg_read_all_settings`). The producer's own sessions cannot show it: the client library
    /// sets `TimeZone` when it connects, which overrides both.
    async fn default_zone(&self) -> Result<Result<String, String>, SourceError> {
        let (database_zone, reads_settings): (Option<String>, bool) =
            sqlx::query_as(DATABASE_ZONE_SQL)
                .fetch_one(&self.pool)
                .await?;
        let zone = match database_zone {
            Some(zone) => zone,
            None if reads_settings => {
                let configured: Option<(String,)> = sqlx::query_as(SERVER_ZONE_SQL)
                    .fetch_optional(&self.pool)
                    .await?;
                // Not configured at all: the built-in default.
                configured.map_or_else(|| "GMT".to_owned(), |(zone,)| zone)
            }
            None => {
                return Ok(Err(
                    "the producer's role may not read the server's configuration".to_owned(),
                ))
            }
        };
        Ok(Ok(zone))
    }

    async fn horizon(&self) -> Result<(NaiveDateTime, HorizonBound), SourceError> {
        let mut conn = self.pool.acquire().await?;
        // The clock first, then the sessions: a transaction that started before `db_now` (less
        // the moment between its first statement's arrival and its start being published,
        // covered by the delay) is listed, or has ended.
        let (db_now,): (NaiveDateTime,) = sqlx::query_as(NOW_SQL).fetch_one(&mut *conn).await?;
        let (oldest, hidden, prepared): (Option<NaiveDateTime>, i64, Option<Vec<String>>) =
            sqlx::query_as(ACTIVITY_SQL).fetch_one(&mut *conn).await?;
        drop(conn);
        let mut state = self.horizon_state.lock().expect("horizon lock");
        // A prepared transaction has left pg_stat_activity, but its rows keep the stamps of its
        // start. One not listed as prepared before was open (and listed) at the previous read if
        // it started before it, or started after it: either way, the previous horizon is below
        // its rows, and it holds there until it is committed or rolled back.
        let first_seen = state.last.unwrap_or(NaiveDateTime::MIN);
        let prepared: HashMap<String, NaiveDateTime> = prepared
            .unwrap_or_default()
            .into_iter()
            .map(|id| {
                let held = state.prepared.get(&id).copied().unwrap_or(first_seen);
                (id, held)
            })
            .collect();
        let held = prepared.values().min().copied();
        state.prepared = prepared;
        let bound = if hidden > 0 {
            HorizonBound::WindowOnly(Blind::HiddenSessions)
        } else {
            match oldest {
                _ if held.is_some() => HorizonBound::OpenTransaction,
                Some(started) if started < db_now => HorizonBound::OpenTransaction,
                _ => HorizonBound::Window,
            }
        };
        let horizon = read_horizon(db_now, oldest, self.delay);
        let horizon = held.map_or(horizon, |held| horizon.min(held));
        let horizon = state.last.map_or(horizon, |h| h.max(horizon));
        state.last = Some(horizon);
        Ok((horizon, bound))
    }

    /// Up to `limit` rows after `after`, below a fresh horizon.
    async fn read(&self, after: Option<Position>, limit: u32) -> Result<Batch, SourceError> {
        let started = std::time::Instant::now();
        let queries = self.queries().await?;
        // The horizon first, then the rows: a transaction that commits in between is either
        // visible to the read or was open when the horizon was taken.
        let (horizon, bound) = self.horizon().await?;
        if nothing_below(after.as_ref(), horizon) {
            return Ok(Batch {
                rows: Vec::new(),
                horizon,
                bound,
                caught_up: true,
                read_time: started.elapsed(),
            });
        }
        // A `timestamp` column holds wall-clock time at `offset`.
        let shift = queries
            .offset
            .map(|o| chrono::Duration::seconds(i64::from(o.local_minus_utc())));
        let to_column = |t: NaiveDateTime| shift.map_or(t, |d| t + d);
        let limit_param = i64::from(limit);
        let rows: Vec<PgRow> = match after {
            None => {
                sqlx::query(&queries.from_start)
                    .bind(to_column(horizon))
                    .bind(limit_param)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(Position {
                last_updated,
                id: None,
            }) => {
                sqlx::query(&queries.after_timestamp)
                    .bind(to_column(last_updated))
                    .bind(to_column(horizon))
                    .bind(limit_param)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(Position {
                last_updated,
                id: Some(id),
            }) => {
                let query = sqlx::query(&queries.after)
                    .bind(to_column(last_updated))
                    .bind(to_column(horizon));
                let query = match (id, queries.id_kind) {
                    (RowKey::Int(id), IdKind::Int) => query.bind(id),
                    (RowKey::Text(id), IdKind::Text) => query.bind(id),
                    (id, kind) => return Err(SourceError::KeyKind { id, kind }),
                };
                query.bind(limit_param).fetch_all(&self.pool).await?
            }
        };
        let mut rows = rows
            .iter()
            .map(|row| source_row(row, queries.id_kind))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(shift) = shift {
            for row in &mut rows {
                row.last_updated -= shift;
            }
        }
        Ok(Batch {
            caught_up: rows.len() < limit as usize,
            rows,
            horizon,
            bound,
            read_time: started.elapsed(),
        })
    }
}

impl Source for PgSource {
    fn describe(&self) -> String {
        format!("postgres table {}", self.spec)
    }

    fn inspect(&self) -> BoxFuture<'static, Result<IdKind, SourceError>> {
        let this = self.clone();
        async move { Ok(this.queries().await?.id_kind) }.boxed()
    }

    fn read_changes(&self, after: Option<Position>, batch_size: u32) -> ChangeReader {
        let this = self.clone();
        read_batch_by_batch(after, move |after| {
            let this = this.clone();
            async move { this.read(after, batch_size).await }.boxed()
        })
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

    fn columns(list: &[(&str, &str)]) -> Vec<Column> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string(), t.to_string(), -1))
            .collect()
    }

    fn prototype_002() -> Vec<Column> {
        columns(&[
            ("product_id", "varchar"),
            ("name", "varchar"),
            ("category", "varchar"),
            ("price", "numeric"),
            ("updated_timestamp", "timestamp"),
        ])
    }

    fn spec() -> TableSpec {
        TableSpec::new("products", "product_id", "updated_timestamp").unwrap()
    }

    #[test]
    fn text_ids_compare_and_order_in_byte_order() {
        let q = check_columns(&spec(), &prototype_002()).unwrap();
        assert_eq!(q.id_kind, IdKind::Text);
        assert!(
            q.after.contains(
                r#"("updated_timestamp" > $1::timestamp OR "product_id" COLLATE "C" > $3)"#
            ),
            "{}",
            q.after
        );
        assert!(
            q.after
                .contains(r#"ORDER BY "updated_timestamp", "product_id" COLLATE "C" LIMIT $4"#),
            "{}",
            q.after
        );
        assert!(q.after.contains(r#"FROM "products""#), "{}", q.after);
    }

    #[test]
    fn zoned_timestamps_are_converted_to_utc_both_ways() {
        let mut cols = prototype_002();
        cols[4].1 = "timestamptz".into();
        cols[0].1 = "int4".into();
        let q = check_columns(&spec(), &cols).unwrap();
        assert_eq!(q.id_kind, IdKind::Int);
        assert!(
            q.from_start
                .contains(r#"("updated_timestamp" AT TIME ZONE 'UTC') AS last_updated"#)
                && q.from_start
                    .contains(r#"WHERE "updated_timestamp" < ($1::timestamp AT TIME ZONE 'UTC')"#),
            "{}",
            q.from_start
        );
        assert!(q.after.contains(r#""product_id" > $3"#), "{}", q.after);
    }

    #[test]
    fn missing_tables_columns_and_unusable_types_are_named() {
        let err = check_columns(&spec(), &[]).err().unwrap().to_string();
        assert!(
            err.contains("products") && err.contains("SOURCE_TABLE"),
            "{err}"
        );

        let cols: Vec<_> = prototype_002()
            .into_iter()
            .filter(|c| c.0 != "updated_timestamp" && c.0 != "price")
            .collect();
        let err = check_columns(&spec(), &cols).err().unwrap().to_string();
        assert!(
            err.contains("updated_timestamp (SOURCE_TIMESTAMP_COLUMN)") && err.contains("price"),
            "{err}"
        );

        let mut cols = prototype_002();
        cols[0] = ("product_id".into(), "uuid".into(), "uuid".into(), -1);
        let err = check_columns(&spec(), &cols).err().unwrap().to_string();
        assert!(
            err.contains("SOURCE_ID_COLUMN") && err.contains("uuid"),
            "{err}"
        );

        let mut cols = prototype_002();
        cols[4] = ("updated_timestamp".into(), "date".into(), "date".into(), -1);
        let err = check_columns(&spec(), &cols).err().unwrap().to_string();
        assert!(err.contains("SOURCE_TIMESTAMP_COLUMN"), "{err}");
    }
}
