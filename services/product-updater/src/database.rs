//! Getting a migrated database: create it if missing, connect, run the migrations, retrying with
//! backoff (and readiness false) while the server is unreachable. Also the readiness watch and
//! the classification of database errors.

use std::str::FromStr;
use std::time::Duration;

use common::http::Readiness;
use common::CancellationToken;
use sqlx::migrate::{MigrateDatabase, MigrateError, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{MySql, MySqlPool};

use crate::metrics::Metrics;
use common::backoff::Backoff;

/// The `product` table and its index (`schemas/migrations/mysql`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../schemas/migrations/mysql");

/// The readiness check this service reports.
pub const READINESS_CHECK: &str = "database";

/// How often the readiness watch pings the database.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// The longest a connection attempt (including creating the database) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait after a failed connection attempt; it doubles up to `DATABASE_RETRY_MAX_MS`.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Migration problems that retrying cannot fix (the database holds a different history).
#[derive(Debug, thiserror::Error)]
#[error("cannot migrate database {database}: {error}")]
pub struct MigrationError {
    database: String,
    error: MigrateError,
}

/// Connects to `database_url` (creating the database if it does not exist) and runs the
/// migrations. While that fails for reasons that may pass (server down, network, timeouts), it logs,
/// counts a database error, reports readiness false, and tries again after a backoff.
/// Returns `Ok(None)` if `shutdown` is cancelled first.
pub async fn connect_and_migrate(
    database_url: &str,
    max_connections: u32,
    retry_max: Duration,
    readiness: &Readiness,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Option<MySqlPool>, MigrationError> {
    let shown_url = common::config::redact_url(database_url);
    let mut backoff = Backoff::new(FIRST_RETRY, retry_max);
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(database_url, max_connections)) => connected,
        };
        let outcome = match connected {
            Err(_elapsed) => Err(Failure::Retry(format!(
                "no answer within {CONNECT_TIMEOUT:?}"
            ))),
            Ok(Err(error)) => Err(Failure::Retry(error.to_string())),
            // Not interrupted by shutdown: a migration stopped half-way would leave the database
            // marked dirty. It is one quick statement.
            Ok(Ok(pool)) => match MIGRATOR.run(&pool).await {
                Ok(()) => Ok(pool),
                Err(MigrateError::Execute(e)) if is_transient(&e) => {
                    Err(Failure::Retry(e.to_string()))
                }
                Err(error) => Err(Failure::Fatal(error)),
            },
        };
        match outcome {
            Ok(pool) => {
                tracing::info!(database = %shown_url, "connected to the database and applied migrations");
                readiness.set(READINESS_CHECK, true, "connected");
                return Ok(Some(pool));
            }
            Err(Failure::Fatal(error)) => {
                readiness.set(READINESS_CHECK, false, format!("migration failed: {error}"));
                return Err(MigrationError {
                    database: shown_url,
                    error,
                });
            }
            Err(Failure::Retry(error)) => {
                metrics.database_error();
                let delay = backoff.next_delay();
                readiness.set(READINESS_CHECK, false, format!("unreachable: {error}"));
                tracing::warn!(
                    database = %shown_url,
                    %error,
                    retry_in_ms = delay.as_millis(),
                    "database unreachable, retrying (not ready meanwhile)"
                );
                if !Backoff::sleep(delay, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

enum Failure {
    Retry(String),
    Fatal(MigrateError),
}

async fn connect(database_url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    if !MySql::database_exists(database_url).await? {
        if let Err(error) = MySql::create_database(database_url).await {
            // Another instance may have created it meanwhile.
            if !MySql::database_exists(database_url).await? {
                return Err(error);
            }
        }
        tracing::info!(database = %common::config::redact_url(database_url), "created the database");
    }
    let options = MySqlConnectOptions::from_str(database_url)?;
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Pings the database every [`READINESS_INTERVAL`] and reports the outcome as readiness, until
/// `shutdown` is cancelled.
pub async fn watch_readiness(pool: MySqlPool, readiness: Readiness, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(READINESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let ping =
            tokio::time::timeout(READINESS_INTERVAL, sqlx::query("SELECT 1").execute(&pool)).await;
        match ping {
            Ok(Ok(_)) => readiness.set(READINESS_CHECK, true, "connected"),
            Ok(Err(error)) => {
                readiness.set(READINESS_CHECK, false, format!("unreachable: {error}"))
            }
            Err(_) => readiness.set(READINESS_CHECK, false, "no answer to a ping"),
        }
    }
}

/// MySQL/MariaDB server errors that say "try again later" rather than "this statement is wrong".
const TRANSIENT_SERVER_ERRORS: [u16; 6] = [
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1317, // query interrupted
    1927, // connection was killed (MariaDB)
];

/// Whether `error` may pass on its own (connection trouble, timeouts, deadlocks), as opposed to
/// the server refusing this particular statement.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| TRANSIENT_SERVER_ERRORS.contains(&e.number())),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Whether `error` is a duplicate-key violation.
pub fn is_duplicate_key(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
