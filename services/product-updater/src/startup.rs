//! The application: HTTP surface plus the database work (connect, migrate, seed, change).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::http::{base_router, Readiness};
use common::CancellationToken;
use prometheus::Registry;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::catalog_changes::CatalogIds;
use crate::config::Config;
use crate::database::{connect_and_migrate, watch_readiness, MigrationError, READINESS_CHECK};
use crate::metrics::Metrics;
use crate::pacing::{run_changes, ChangeContext};
use crate::product_csv::{ProductCsvReader, SeedFileError};
use crate::seeding::{seed_from_csv, SeedError};
use common::backoff::Backoff;

/// Why the application could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    SeedFile(#[from] SeedFileError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A built product-updater, listening but not yet working. Zero2prod style: tests build it on
/// port 0, read [`Application::port`], and run it until they cancel the token.
pub struct Application {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    registry: Registry,
    metrics: Metrics,
    readiness: Readiness,
}

impl Application {
    /// Checks the CSV header (a missing file or column fails here, before any waiting for the
    /// database), binds `HTTP_ADDR` and registers the metrics.
    pub async fn build(config: Config) -> Result<Self, Error> {
        ProductCsvReader::open(&config.products_csv)?;
        let listener = common::http::bind(config.http_addr)
            .await
            .map_err(Error::Bind)?;
        let local_addr = listener.local_addr().map_err(Error::Bind)?;
        let registry = common::metrics::new_registry();
        let metrics = Metrics::register(&registry);
        let readiness = Readiness::default();
        readiness.set(READINESS_CHECK, false, "connecting");
        Ok(Self {
            config,
            listener,
            local_addr,
            registry,
            metrics,
            readiness,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves HTTP and does the database work until `shutdown` is cancelled (or a fatal error:
    /// unreadable CSV, migrations that do not match the database). Database outages are not fatal:
    /// they are retried.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self {
            config,
            listener,
            local_addr,
            registry,
            metrics,
            readiness,
        } = self;
        let stop = shutdown.child_token();
        let router = base_router(registry, readiness.clone());
        let server = tokio::spawn(common::http::serve(listener, router, stop.clone()));
        tracing::info!(%local_addr, "product-updater serving /health, /ready and /metrics");

        let worked = Box::pin(work(&config, &metrics, &readiness, &stop)).await;
        // Whatever ended the work (shutdown or a fatal error) ends the HTTP server too.
        stop.cancel();
        let served = server.await;
        worked?;
        match served {
            Ok(result) => result.map_err(Error::Serve),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
}

async fn work(
    config: &Config,
    metrics: &Metrics,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let connected = connect_and_migrate(
        &config.database_url,
        config.database_max_connections,
        config.database_retry_max,
        readiness,
        metrics,
        stop,
    )
    .await?;
    let Some(pool) = connected else {
        return Ok(());
    };
    let watch = tokio::spawn(watch_readiness(
        pool.clone(),
        readiness.clone(),
        stop.clone(),
    ));
    let outcome = seed_then_change(&pool, config, metrics, readiness, stop).await;
    stop.cancel();
    let _ = watch.await;
    pool.close().await;
    tracing::info!("product-updater stopped");
    outcome
}

async fn seed_then_change(
    pool: &MySqlPool,
    config: &Config,
    metrics: &Metrics,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let seeded = seed_from_csv(
        pool,
        &config.products_csv,
        config.seed_batch_rows,
        config.database_retry_max,
        metrics,
        stop,
    )
    .await;
    match seeded {
        Ok(_) => metrics.seed_completed(),
        Err(SeedError::Cancelled) => return Ok(()),
        Err(SeedError::File(error)) => return Err(error.into()),
    }

    if config.updates_per_second <= 0.0 {
        tracing::info!("UPDATES_PER_SECOND=0: seeding only; serving HTTP idle until shutdown");
        stop.cancelled().await;
        return Ok(());
    }
    let Some(ids) = load_ids(pool, config.database_retry_max, metrics, stop).await else {
        return Ok(());
    };
    let workers = config.database_max_connections as usize;
    tracing::info!(
        updates_per_second = config.updates_per_second,
        workers,
        "changing the catalog"
    );
    let context = ChangeContext {
        pool: pool.clone(),
        ids: Arc::new(ids),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    run_changes(context, config.updates_per_second, workers, stop.clone()).await;
    Ok(())
}

/// Reads the id range, retrying while the database is unavailable; `None` on shutdown.
async fn load_ids(
    pool: &MySqlPool,
    retry_max: Duration,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Option<CatalogIds> {
    let mut backoff = Backoff::new(Duration::from_millis(250), retry_max);
    loop {
        let loaded = tokio::select! {
            () = stop.cancelled() => return None,
            loaded = CatalogIds::load(pool) => loaded,
        };
        match loaded {
            Ok(ids) => return Some(ids),
            Err(error) => {
                metrics.database_error();
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), "cannot read the product ids, retrying");
                if !Backoff::sleep(delay, stop).await {
                    return None;
                }
            }
        }
    }
}
