//! Where transformed records go. The consumer loop only knows this trait; the JSON-log sink is the
//! one implemented now. A stage-directory sink (one JSON Lines file per batch) and a
//! Kafka-to-Kafka sink (produce to an output topic) fit the same shape: make a batch durable,
//! remember how far each partition got, and say where to resume.
//!
//! The contract that keeps the pipeline free of loss and duplicates:
//! - [`Sink::write`] returns only once the batch is durable (for files: written and fsync'd).
//!   The consumer commits offsets to Kafka only after it returned `Ok`.
//! - The sink stores, with the data, the next offset of every partition it handled (including
//!   records that went to the dead-letter topic instead of the sink), so
//!   [`Sink::resume_positions`] can tell a new owner of a partition exactly where the durable
//!   output ends, even if the previous owner was killed between writing and committing.

pub mod json_log;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::transform::TransformedProduct;

/// Next offset to read, by partition.
pub type Positions = BTreeMap<i32, i64>;

/// One transformed record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    pub partition: i32,
    pub offset: i64,
    pub product: TransformedProduct,
    /// When the product changed (`last_updated`), if known: for end-to-end latency.
    pub changed_at: Option<DateTime<Utc>>,
}

/// A batch to make durable.
#[derive(Debug)]
pub struct SinkBatch<'a> {
    pub records: &'a [SinkRecord],
    /// The next offset of every partition handled in this batch (written or dead-lettered).
    pub next_offsets: &'a Positions,
    /// The write time stamped on every record.
    pub written_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub trait Sink: Send {
    /// Makes `batch` durable (records and positions); returns only once it is.
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError>;

    /// For each of `partitions` that this sink (any replica's part of it) has handled before: the
    /// next offset after the last durable record. Partitions it never saw are absent.
    fn resume_positions(&self, partitions: &[i32]) -> Result<Positions, SinkError>;
}
