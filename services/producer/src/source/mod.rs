//! Where changes come from. A [`Source`] reads the rows changed after a [`Position`], in
//! `(last_updated, id)` order, up to a read horizon below which no uncommitted change can still
//! appear. Two implementations: MySQL/MariaDB ([`mysql::MySqlSource`], horizon from InnoDB's
//! transaction list and the process list) and PostgreSQL ([`postgres::PgSource`], horizon from
//! `pg_stat_activity.xact_start`). Both read the table [`TableSpec`] names.

pub mod changes;
pub mod mysql;
pub mod open_transactions;
pub mod postgres;

use std::fmt;
use std::time::Duration;

use chrono::NaiveDateTime;
pub use common::avro::IdKind;
use futures::future::BoxFuture;

use self::changes::ChangeReader;
use crate::position::{Position, RowKey};

/// The table capture reads and its key columns (`SOURCE_TABLE`, `SOURCE_ID_COLUMN`,
/// `SOURCE_TIMESTAMP_COLUMN`). The columns `name`, `category` and `price` keep their names.
/// Every name is a plain identifier (checked by [`TableSpec::new`]), so quoting it is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// `schema` of `schema.table`, or `None` for the connection's default schema/database.
    pub schema: Option<String>,
    pub table: String,
    pub id_column: String,
    pub timestamp_column: String,
}

impl TableSpec {
    pub const DEFAULT_TABLE: &'static str = "product";
    pub const DEFAULT_ID_COLUMN: &'static str = "id";
    pub const DEFAULT_TIMESTAMP_COLUMN: &'static str = "last_updated";
    /// The value columns, read under these names.
    pub const VALUE_COLUMNS: [&'static str; 3] = ["name", "category", "price"];

    /// `table` may be `schema.table`. Returns `Err((which, reason))` naming the bad argument
    /// (`table`, `id_column` or `timestamp_column`).
    pub fn new(
        table: &str,
        id_column: &str,
        timestamp_column: &str,
    ) -> Result<Self, (&'static str, String)> {
        let (schema, table_name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table),
        };
        if let Some(schema) = schema {
            check_identifier(schema).map_err(|e| ("table", e))?;
        }
        check_identifier(table_name).map_err(|e| ("table", e))?;
        check_identifier(id_column).map_err(|e| ("id_column", e))?;
        check_identifier(timestamp_column).map_err(|e| ("timestamp_column", e))?;
        if id_column == timestamp_column {
            return Err((
                "timestamp_column",
                "must be another column than the id column".into(),
            ));
        }
        Ok(Self {
            schema: schema.map(str::to_owned),
            table: table_name.to_owned(),
            id_column: id_column.to_owned(),
            timestamp_column: timestamp_column.to_owned(),
        })
    }
}

impl Default for TableSpec {
    fn default() -> Self {
        Self::new(
            Self::DEFAULT_TABLE,
            Self::DEFAULT_ID_COLUMN,
            Self::DEFAULT_TIMESTAMP_COLUMN,
        )
        .expect("the defaults are valid")
    }
}

impl fmt::Display for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}.")?;
        }
        f.write_str(&self.table)
    }
}

/// A plain SQL identifier: a letter or `_`, then letters, digits, `_` or `$`, at most 63
/// bytes (PostgreSQL's limit; MySQL allows 64). Names are used exactly as given (quoted), so in
/// PostgreSQL they are case-sensitive.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && name.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plain identifier (a letter or _, then letters, digits, _ or $; at \
             most 63 characters)"
        ))
    }
}

/// Fails naming the columns of `spec` that `exists` does not know, and the variables that
/// name them.
fn missing_columns(spec: &TableSpec, exists: impl Fn(&str) -> bool) -> Result<(), SourceError> {
    let wanted = [
        (spec.id_column.as_str(), " (SOURCE_ID_COLUMN)"),
        (spec.timestamp_column.as_str(), " (SOURCE_TIMESTAMP_COLUMN)"),
    ]
    .into_iter()
    .chain(TableSpec::VALUE_COLUMNS.map(|c| (c, "")));
    let missing: Vec<String> = wanted
        .filter(|(name, _)| !exists(name))
        .map(|(name, variable)| format!("{name}{variable}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Table(format!(
            "table {spec} has no column {} (column names are matched exactly)",
            missing.join(", no column ")
        )))
    }
}

/// What a source knows about its timestamp column, for [`timestamp_offset`].
#[derive(Debug, Clone)]
pub(crate) struct TimestampColumn {
    /// Its type as the database shows it (`timestamp(6)`, `timestamp without time zone`).
    pub shown_type: String,
    /// Digits after the second.
    pub precision: u32,
    pub time: ColumnTime,
    /// The statement that gives it microseconds.
    pub to_microseconds: String,
}

/// What a timestamp column's values mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnTime {
    /// Instants (MySQL `TIMESTAMP`, PostgreSQL `timestamptz`), whatever each writer's zone.
    Instants,
    /// The wall-clock time of each writer's session time zone (MySQL `DATETIME`, PostgreSQL
    /// `timestamp`).
    WallClock {
        /// The time zone a writer's session gets unless it sets one (`Err`: why the producer
        /// cannot tell), for the message only: any session may set its own.
        default_zone: Result<String, String>,
        /// The statement that makes it a column of instants, for the message.
        to_instants: String,
    },
}

/// Checks that the timestamp column can key exact capture, and returns the offset of the
/// wall-clock time it holds (`None`: its values are UTC). Refused:
///
/// * a precision coarser than `capture_delay`: a row is stamped up to one unit of the column's
///   precision before its statement began, and the read horizon allows for no more than the
///   delay. Then a row changed twice within one unit can keep the `(last_updated, id)` capture
///   has already passed, and its last change is never read. Microseconds (6) are exact with any
///   delay; milliseconds (3) need a delay of at least 1 ms; whole seconds at least 1000 ms.
/// * wall-clock time (no time zone) unless `writer_time_zone` states the writers' offset. No
///   server setting can prove the zone every writer's session uses: any session may set its own
///   (PgJDBC sends the JVM's zone at connect, MySQL clients `SET time_zone`), role settings
///   override the database's, and MySQL's `SYSTEM` zone changes with daylight saving time;
/// * `writer_time_zone` with a column of instants (it would mean nothing).
pub(crate) fn timestamp_offset(
    spec: &TableSpec,
    column: &TimestampColumn,
    capture_delay: Duration,
    writer_time_zone: Option<chrono::FixedOffset>,
) -> Result<Option<chrono::FixedOffset>, SourceError> {
    let name = format!(
        "column {spec}.{} (SOURCE_TIMESTAMP_COLUMN)",
        spec.timestamp_column
    );
    let unit_micros = 10u64.pow(6u32.saturating_sub(column.precision));
    if column.precision < 6 && u128::from(unit_micros) > capture_delay.as_micros() {
        let unit = match column.precision {
            0 => "whole seconds".to_owned(),
            p => format!("{p} digit(s) after the second"),
        };
        return Err(SourceError::Table(format!(
            "{name} is {} and keeps {unit}: a row changed twice within {} gets the same \
             (last_updated, id) both times, and capture, having read the first change, never \
             reads the last one. Give it microseconds: {}; or set CAPTURE_DELAY_MS to at least \
             {} (one unit of its precision; every change then waits that long)",
            column.shown_type,
            if column.precision == 0 {
                "one second".to_owned()
            } else {
                format!("{} µs", unit_micros)
            },
            column.to_microseconds,
            unit_micros.div_ceil(1000),
        )));
    }
    match (&column.time, writer_time_zone) {
        (ColumnTime::Instants, None) => Ok(None),
        (ColumnTime::Instants, Some(_)) => Err(SourceError::Table(format!(
            "SOURCE_TIMESTAMP_TIME_ZONE is set, but {name} is {}, which stores instants: unset \
             SOURCE_TIMESTAMP_TIME_ZONE",
            column.shown_type
        ))),
        (ColumnTime::WallClock { .. }, Some(offset)) => {
            Ok((offset.local_minus_utc() != 0).then_some(offset))
        }
        (
            ColumnTime::WallClock {
                default_zone,
                to_instants,
            },
            None,
        ) => {
            let default = match default_zone {
                Ok(zone) => format!("the server's default time zone is {zone}"),
                Err(reason) => format!("the server's default time zone cannot be read ({reason})"),
            };
            Err(SourceError::Table(format!(
                "{name} is {}: it holds the wall-clock time of each writer's session time zone, \
                 which no server setting can prove ({default}, but any session may set its own), \
                 so capture cannot tell when a change happened. Store instants: {}; or, if every \
                 writer writes in one zone without daylight saving time, set \
                 SOURCE_TIMESTAMP_TIME_ZONE to its offset (UTC, +05:30, ...)",
                column.shown_type, to_instants
            )))
        }
    }
}

/// Whether no row can lie after `after` and below `horizon`: then a read runs no query (a
/// horizon held at the start, [`NaiveDateTime::MIN`], is no value a database can compare).
pub(crate) fn nothing_below(after: Option<&Position>, horizon: NaiveDateTime) -> bool {
    horizon == NaiveDateTime::MIN || after.is_some_and(|p| p.last_updated >= horizon)
}

/// One changed row as the source stores it, before validation. Values the Avro schema cannot
/// carry (a NULL name, a NaN price) are still represented, so they can be reported.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    pub id: RowKey,
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<f64>,
    /// UTC, microsecond precision.
    pub last_updated: NaiveDateTime,
}

impl SourceRow {
    pub fn position(&self) -> Position {
        Position::new(self.last_updated, self.id.clone())
    }
}

/// What bounded a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HorizonBound {
    /// `now - CAPTURE_DELAY_MS`: no transaction was open.
    Window,
    /// The start of the oldest open transaction or running statement (minus the delay).
    OpenTransaction,
    /// The window alone, because open transactions cannot be seen: a row whose transaction
    /// stays open longer than `CAPTURE_DELAY_MS` can be missed.
    WindowOnly(Blind),
    /// The last safe horizon again: the list of open transactions could not be used, so
    /// capture holds where it was.
    IncompleteTransactionList(ListingProblem),
}

/// Why open transactions cannot be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blind {
    /// MySQL/MariaDB: the user lacks the `PROCESS` privilege.
    MissingPrivilege,
    /// PostgreSQL: other roles' sessions hide when their transactions started (no
    /// `pg_read_all_stats`).
    HiddenSessions,
}

/// Why a transaction list could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingProblem {
    /// The server cut it (over 1 MiB).
    Truncated,
    /// It is not in the expected shape.
    Unreadable,
}

/// Consecutive rows of a read, in `(last_updated, id)` order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub rows: Vec<SourceRow>,
    /// Rows stamped at or after this were not read.
    pub horizon: NaiveDateTime,
    pub bound: HorizonBound,
    /// No row below the horizon follows these: capture has caught up (and waits
    /// `POLL_INTERVAL_MS` before it reads again). Otherwise more rows may be waiting.
    pub caught_up: bool,
    /// How long reading these rows took.
    pub read_time: Duration,
}

impl Batch {
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
    /// The configured table does not exist (yet): the producer waits for it, e.g. while the
    /// product-updater's migrations have not run.
    #[error("{0}")]
    TableMissing(String),
    /// The configured columns do not exist or cannot be captured (a configuration problem:
    /// retrying does not help).
    #[error("{0}")]
    Table(String),
    /// A cursor whose key is of the other kind than the table's id column (a watermark file of
    /// another table).
    #[error(
        "the capture position's id {id:?} is {} but the id column holds {} values: the watermark \
         file belongs to another table (delete it to capture from the beginning)",
        id.kind(),
        match kind { IdKind::Int => "integer", IdKind::Text => "text" }
    )]
    KeyKind { id: RowKey, kind: IdKind },
}

/// A table to capture changes from. Methods return `'static` futures (implementations hold
/// cheap handles such as a connection pool), so callers can keep a read in flight while doing
/// other work.
pub trait Source: Send + Sync {
    /// A short description for logs, without credentials (e.g. `mysql table product`).
    fn describe(&self) -> String;

    /// Checks that the table and its columns exist and can be captured, and returns the kind of
    /// id (which decides the value schema). The result is kept: reads need it too (a read calls
    /// it first if nobody did). Errors other than [`SourceError::Table`] are worth retrying
    /// ([`SourceError::TableMissing`]: until the table is created).
    fn inspect(&self) -> BoxFuture<'static, Result<IdKind, SourceError>>;

    /// Starts reading the rows after `after` (`None` = from the beginning) that lie below a read
    /// horizon, in batches of up to `batch_size` rows; the read ends with a caught-up batch (see
    /// [`ChangeReader`]). Must be called from within a tokio runtime.
    fn read_changes(&self, after: Option<Position>, batch_size: u32) -> ChangeReader;

    /// A cheap round trip, for readiness.
    fn ping(&self) -> BoxFuture<'static, Result<(), SourceError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        let spec = TableSpec::new("products", "product_id", "updated_timestamp").unwrap();
        assert_eq!(spec.schema, None);
        assert_eq!(spec.to_string(), "products");
        let spec = TableSpec::new("shop.products", "product_id", "updated_timestamp").unwrap();
        assert_eq!(spec.schema.as_deref(), Some("shop"));
        assert_eq!(spec.table, "products");
        assert_eq!(spec.to_string(), "shop.products");
        assert_eq!(TableSpec::default().table, "product");

        for (table, id, ts, which) in [
            ("prod\"ucts", "id", "ts", "table"),
            ("a.b.c", "id", "ts", "table"),
            ("", "id", "ts", "table"),
            ("products", "1id", "ts", "id_column"),
            ("products", "id; DROP TABLE x", "ts", "id_column"),
            ("products", "id", "`ts`", "timestamp_column"),
            ("products", "id", "id", "timestamp_column"),
            ("products", &"x".repeat(64), "ts", "id_column"),
        ] {
            let (bad, reason) = TableSpec::new(table, id, ts).unwrap_err();
            assert_eq!(bad, which, "{table} {id} {ts}: {reason}");
        }
    }
}
