//! Where transformed records go (`CONSUMER_SINK`). The consumer loop only knows this trait:
//! - [`json_log`] (`log`, the default): appends to the slot's own `consumer_log.json`;
//! - [`stage`] (`stage`): one JSON Lines file per partition and batch in a stage directory, for
//!   a warehouse loader (prototype 002);
//! - [`topic`] (`topic`): produces to an output topic (Kafka-to-Kafka, prototype 004).
//!
//! Each makes a batch durable, remembers how far each partition got, and says where to resume.
//!
//! The contract that keeps the pipeline free of loss and duplicates:
//! - [`Sink::write`] returns only once the batch is durable (for files: written and fsync'd).
//!   The consumer commits offsets to Kafka only after it returned `Ok`.
//! - The sink stores, with the data, the next offset of every partition it handled (including
//!   records that went to the dead-letter topic instead of the sink), so
//!   [`Sink::resume_positions`] can tell a new owner of a partition exactly where the durable
//!   output ends, even if the previous owner was killed between writing and committing.

pub mod json_log;
pub mod stage;
pub mod topic;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::transform::TransformedProduct;

/// What a record became: a transformed product, or a JSON object carried through
/// (`INPUT_FORMAT=json`).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordValue {
    Product(TransformedProduct),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// Next offset to read, by partition.
pub type Positions = BTreeMap<i32, i64>;

/// One transformed record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    pub partition: i32,
    pub offset: i64,
    /// The input record's key, for sinks that [need it](Sink::needs_keys) (the output topic's
    /// records are keyed the same); `None` otherwise.
    pub key: Option<Vec<u8>>,
    pub value: RecordValue,
    /// When the product changed (`last_updated`, µs since the Unix epoch), if known: for
    /// end-to-end latency.
    pub changed_at_micros: Option<i64>,
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
    #[error("output topic {topic}: {action}: {source}")]
    Kafka {
        topic: String,
        action: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("not written: an earlier write failed")]
    AfterFailure,
    #[error("{path} exists already: a stage file is never overwritten")]
    Exists { path: std::path::PathBuf },
    #[error(transparent)]
    Fence(#[from] crate::fence::FenceError),
}

/// Maps an I/O error on `path` to [`SinkError::Io`].
pub(crate) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SinkError + 'a {
    move |source| SinkError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Makes a directory's entries (created, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

pub trait Sink: Send {
    /// Makes `batch` durable (records and positions); returns only once it is.
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError>;

    /// For each of `partitions` that this sink (any replica's part of it) has handled before: the
    /// next offset after the last durable record. Partitions it never saw are absent.
    fn resume_positions(&self, partitions: &[i32]) -> Result<Positions, SinkError>;

    /// Whether records must carry their input key ([`SinkRecord::key`]); copying it for every
    /// record is skipped for sinks that never write it.
    fn needs_keys(&self) -> bool {
        false
    }
}
