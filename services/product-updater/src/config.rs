//! Configuration from environment variables. Every variable has a default:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | MySQL/MariaDB database to create (if missing), migrate, seed and change | `mysql://root@127.0.0.1:3306/buy_online_db` |
//! | `PRODUCTS_CSV` | CSV file the catalog is seeded from | `data/products.csv` |
//! | `UPDATES_PER_SECOND` | catalog changes per second after seeding; `0` = seed only, then serve HTTP idle until shutdown | `2` |
//! | `HTTP_ADDR` | where `/health`, `/ready` and `/metrics` listen | `127.0.0.1:9101` |
//! | `SEED_BATCH_ROWS` | CSV rows per multi-row `INSERT` while seeding | `500` |
//! | `DATABASE_MAX_CONNECTIONS` | connection pool size, which is also the number of concurrent change workers | `4` |
//! | `DATABASE_RETRY_MAX_MS` | longest wait between retries while the database is unavailable (100 to 3600000) | `10000` |

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use common::config::{redact_url, ConfigError, Env};
use sqlx::mysql::MySqlConnectOptions;

/// The product-updater's settings.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// A `mysql://` or `mariadb://` URL that names a database.
    pub database_url: String,
    pub products_csv: PathBuf,
    /// Changes per second after seeding; `0.0` means seed only.
    pub updates_per_second: f64,
    pub http_addr: SocketAddr,
    pub seed_batch_rows: usize,
    pub database_max_connections: u32,
    pub database_retry_max: Duration,
}

impl Config {
    pub const DEFAULT_PRODUCTS_CSV: &'static str = "data/products.csv";
    pub const DEFAULT_UPDATES_PER_SECOND: f64 = 2.0;
    /// The highest accepted `UPDATES_PER_SECOND`.
    pub const MAX_UPDATES_PER_SECOND: f64 = 1_000_000.0;
    pub const DEFAULT_HTTP_ADDR: &'static str = "127.0.0.1:9101";
    pub const DEFAULT_SEED_BATCH_ROWS: usize = 500;
    /// Four bound values per row must stay under MySQL's 65 535 placeholders per statement.
    pub const MAX_SEED_BATCH_ROWS: usize = 10_000;
    pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 4;
    pub const DEFAULT_DATABASE_RETRY_MAX: Duration = Duration::from_secs(10);

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: mysql_database_url(env)?,
            products_csv: PathBuf::from(env.string("PRODUCTS_CSV", Self::DEFAULT_PRODUCTS_CSV)),
            updates_per_second: env.parse_checked(
                "UPDATES_PER_SECOND",
                Self::DEFAULT_UPDATES_PER_SECOND,
                "a number of changes per second from 0 (seed only) to 1000000, such as 2 or 0.5",
                |rate: &f64| {
                    rate.is_finite() && (0.0..=Self::MAX_UPDATES_PER_SECOND).contains(rate)
                },
            )?,
            http_addr: env.socket_addr("HTTP_ADDR", Self::DEFAULT_HTTP_ADDR)?,
            seed_batch_rows: env.parse_checked(
                "SEED_BATCH_ROWS",
                Self::DEFAULT_SEED_BATCH_ROWS,
                "a whole number of rows per INSERT from 1 to 10000",
                |rows| (1..=Self::MAX_SEED_BATCH_ROWS).contains(rows),
            )?,
            database_max_connections: env.parse_checked(
                "DATABASE_MAX_CONNECTIONS",
                Self::DEFAULT_DATABASE_MAX_CONNECTIONS,
                "a whole number of connections from 1 to 100",
                |n| (1..=100).contains(n),
            )?,
            database_retry_max: retry_max(env)?,
        })
    }

    /// The database URL with any password replaced by `***`, for logs.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url)
    }
}

impl fmt::Debug for Config {
    // The database URL may carry a password: show it redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url_redacted())
            .field("products_csv", &self.products_csv)
            .field("updates_per_second", &self.updates_per_second)
            .field("http_addr", &self.http_addr)
            .field("seed_batch_rows", &self.seed_batch_rows)
            .field("database_max_connections", &self.database_max_connections)
            .field("database_retry_max", &self.database_retry_max)
            .finish()
    }
}

/// `DATABASE_RETRY_MAX_MS`: at least 100 ms, so retries never spin.
fn retry_max(env: &Env) -> Result<Duration, ConfigError> {
    let default_ms =
        u64::try_from(Config::DEFAULT_DATABASE_RETRY_MAX.as_millis()).unwrap_or(u64::MAX);
    let ms = env.parse_checked(
        "DATABASE_RETRY_MAX_MS",
        default_ms,
        "a whole number of milliseconds from 100 to 3600000",
        |ms| (100..=3_600_000).contains(ms),
    )?;
    Ok(Duration::from_millis(ms))
}

/// `DATABASE_URL`, which for this service must be a MySQL/MariaDB URL naming a database.
fn mysql_database_url(env: &Env) -> Result<String, ConfigError> {
    let url = common::config::database_url(env)?;
    let expected = "a mysql:// or mariadb:// URL naming a database, such as \
                    mysql://root@127.0.0.1:3306/buy_online_db (product-updater writes MySQL/MariaDB only)";
    let invalid = |url: &str| ConfigError::Invalid {
        name: "DATABASE_URL".into(),
        value: redact_url(url),
        expected: expected.into(),
    };
    if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
        return Err(invalid(&url));
    }
    // sqlx understands only the mysql:// scheme; MariaDB speaks the same protocol.
    let mysql_url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.clone(),
    };
    match MySqlConnectOptions::from_str(&mysql_url) {
        Ok(options) if options.get_database().is_some_and(|db| !db.is_empty()) => Ok(mysql_url),
        _ => Err(invalid(&url)),
    }
}
