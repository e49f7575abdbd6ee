//! Seeding the `product` table from the CSV: streaming, batched and idempotent.
//!
//! A blocking thread reads and validates the file (see [`crate::product_csv`]) and hands batches of
//! valid rows to the async side through a small channel, so at most a few batches are in memory.
//! Each batch is one multi-row `INSERT ... ON DUPLICATE KEY UPDATE id = id`: a row whose id is
//! already in the table is left exactly as it is (its price, category and `last_updated` too), so
//! re-running the seed never duplicates or resets rows. The database stamps `last_updated`.
//!
//! If the server refuses a batch (say a constraint fails for one row), the batch is retried row by
//! row so every good row still lands; refused rows are rejected as `database_rejected`. Connection
//! trouble is retried with backoff until it passes or shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use common::CancellationToken;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use tokio::sync::mpsc;

use crate::database::is_transient;
use crate::metrics::Metrics;
use crate::product_csv::{
    CsvRecord, ProductCsvReader, RejectReason, RejectedRow, SeedFileError, SeedRow,
};
use common::backoff::Backoff;

/// What a finished seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSummary {
    /// Valid rows written (inserted, or already present).
    pub rows_seeded: u64,
    /// Rows skipped, whatever the reason.
    pub rows_rejected: u64,
}

/// How a seed ended early.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    File(#[from] SeedFileError),
    #[error("shutdown requested while seeding")]
    Cancelled,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Seeds the table from the CSV at `path` in batches of `batch_rows`.
pub async fn seed_from_csv(
    pool: &MySqlPool,
    path: &Path,
    batch_rows: usize,
    retry_max: Duration,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<SeedSummary, SeedError> {
    let started = Instant::now();
    tracing::info!(file = %path.display(), batch_rows, "seeding the product table");
    let (batches, mut incoming) = mpsc::channel::<Vec<SeedRow>>(2);
    let reader = {
        let path = path.to_path_buf();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || {
            read_batches(&path, batch_rows.max(1), &metrics, &batches)
        })
    };

    let mut writer = BatchWriter {
        pool,
        path,
        metrics,
        shutdown,
        backoff: Backoff::new(FIRST_RETRY, retry_max),
        rows_seeded: 0,
        rows_rejected: 0,
    };
    let written = async {
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Err(SeedError::Cancelled),
                batch = incoming.recv() => batch,
            };
            match batch {
                Some(batch) => writer.write(&batch).await?,
                None => return Ok(()),
            }
        }
    }
    .await;
    // Dropping the receiver stops the reader thread at its next batch.
    drop(incoming);
    let read = match reader.await {
        Ok(read) => read,
        // The reader thread panicked: a bug, so let it surface as one.
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    };
    written?;
    let rejected_in_file = read?;
    let summary = SeedSummary {
        rows_seeded: writer.rows_seeded,
        rows_rejected: rejected_in_file + writer.rows_rejected,
    };
    tracing::info!(
        file = %path.display(),
        rows_seeded = summary.rows_seeded,
        rows_rejected = summary.rows_rejected,
        elapsed_ms = started.elapsed().as_millis(),
        "seeding finished"
    );
    Ok(summary)
}

/// Reads the file, sending full batches of valid rows and logging and counting rejected ones.
/// Returns the number of rejected rows. Stops early, without error, when the receiver is gone.
fn read_batches(
    path: &Path,
    batch_rows: usize,
    metrics: &Metrics,
    batches: &mpsc::Sender<Vec<SeedRow>>,
) -> Result<u64, SeedFileError> {
    let mut reader = ProductCsvReader::open(path)?;
    let mut batch = Vec::with_capacity(batch_rows);
    let mut rejected = 0;
    while let Some(record) = reader.next_record() {
        match record? {
            CsvRecord::Valid(row) => {
                batch.push(row);
                if batch.len() >= batch_rows {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                    if batches.blocking_send(full).is_err() {
                        return Ok(rejected);
                    }
                }
            }
            CsvRecord::Rejected(row) => {
                rejected += 1;
                report_rejected(path, &row, metrics);
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(batch);
    }
    Ok(rejected)
}

fn report_rejected(path: &Path, row: &RejectedRow, metrics: &Metrics) {
    metrics.row_rejected(row.reason);
    tracing::warn!(
        file = %path.display(),
        line = row.line,
        reason = row.reason.label(),
        detail = %row.detail,
        "skipping CSV row"
    );
}

struct BatchWriter<'a> {
    pool: &'a MySqlPool,
    path: &'a Path,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
    backoff: Backoff,
    rows_seeded: u64,
    rows_rejected: u64,
}

impl BatchWriter<'_> {
    /// Writes `rows` as one statement; if the server refuses it, row by row.
    async fn write(&mut self, rows: &[SeedRow]) -> Result<(), SeedError> {
        loop {
            match insert_ignoring_existing(self.pool, rows).await {
                Ok(()) => {
                    self.backoff.reset();
                    self.rows_seeded += rows.len() as u64;
                    self.metrics.rows_seeded(rows.len() as u64);
                    return Ok(());
                }
                Err(error) if is_transient(&error) => self.retry_after(&error).await?,
                Err(error) => {
                    tracing::warn!(
                        file = %self.path.display(),
                        first_line = rows.first().map_or(0, |r| r.line),
                        rows = rows.len(),
                        %error,
                        "the database refused a batch; inserting its rows one by one"
                    );
                    for row in rows {
                        self.write_one(row).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    async fn write_one(&mut self, row: &SeedRow) -> Result<(), SeedError> {
        loop {
            match insert_ignoring_existing(self.pool, std::slice::from_ref(row)).await {
                Ok(()) => {
                    self.rows_seeded += 1;
                    self.metrics.rows_seeded(1);
                    return Ok(());
                }
                Err(error) if is_transient(&error) => self.retry_after(&error).await?,
                Err(error) => {
                    self.rows_rejected += 1;
                    let rejected = RejectedRow {
                        line: row.line,
                        reason: RejectReason::DatabaseRejected,
                        detail: error.to_string(),
                    };
                    report_rejected(self.path, &rejected, self.metrics);
                    return Ok(());
                }
            }
        }
    }

    async fn retry_after(&mut self, error: &sqlx::Error) -> Result<(), SeedError> {
        self.metrics.database_error();
        let delay = self.backoff.next_delay();
        tracing::warn!(%error, retry_in_ms = delay.as_millis(), "seeding: database unavailable, retrying");
        if Backoff::sleep(delay, self.shutdown).await {
            Ok(())
        } else {
            Err(SeedError::Cancelled)
        }
    }
}

/// `INSERT ... ON DUPLICATE KEY UPDATE id = id`: inserts new ids, leaves existing rows untouched.
async fn insert_ignoring_existing(pool: &MySqlPool, rows: &[SeedRow]) -> Result<(), sqlx::Error> {
    let mut insert = QueryBuilder::<MySql>::new("INSERT INTO product (id, name, category, price) ");
    insert.push_values(rows, |mut values, row| {
        values
            .push_bind(row.product.id)
            .push_bind(&row.product.name)
            .push_bind(&row.product.category)
            .push_bind(row.product.price);
    });
    insert.push(" ON DUPLICATE KEY UPDATE id = id");
    insert.build().execute(pool).await?;
    Ok(())
}
