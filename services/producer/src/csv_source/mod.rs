//! `SOURCE=csv`: streams the rows of a CSV file to the topic instead of capturing the table.
//!
//! The loop: read up to `BATCH_SIZE` records from the durable byte offset, encode them (key = the
//! `CSV_KEY_COLUMN` text, value = typed JSON or Avro, see [`values`]), produce them with the
//! [`KafkaSink`], wait until Kafka acknowledged every one, then store the offset after the batch
//! in the position file ([`position`]), and repeat. At the end of the file it stops (exit 0)
//! unless `CSV_FOLLOW=true`, in which case it keeps reading rows appended to the file, like
//! `tail -f` (a last line without its line end waits for it).
//!
//! **Bad rows** (wrong number of fields, invalid UTF-8, empty key, a cell that does not convert
//! to its Avro field, a record over 1 MiB) are logged with their line number and reason, counted
//! in `producer_rows_rejected_total{reason}`, sent to `DEAD_LETTER_TOPIC` (unless `none`), and
//! skipped; so is a row whose record is larger than Kafka takes.
//!
//! **No duplicates after a kill.** Every record carries two headers, `csv_path` (the file's
//! absolute path) and `csv_offset` (the byte offset of its first byte). The position file keeps,
//! per partition, the offset from which records after the durable position may be found. On
//! start (and after a failed delivery) the producer reads the topic from there to the end and
//! does not produce again the records it finds (`producer_rows_already_in_topic_total`), like the
//! table capture's read-back ([`crate::readback`]).

pub mod position;
pub mod records;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backoff::{wait_for, Attempt, Backoff, MAX_DELAY};
use common::http::Readiness;
use common::kafka::KafkaConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{CsvConfig, ValueFormat};
use crate::metrics::ProducerMetrics;
use crate::pipeline::CAPTURE_CHECK;
use crate::readback::read_raw;
use crate::sink::{is_refused_record, AckSummary, BatchAcks, KafkaSink, MESSAGE_MAX_BYTES};
use crate::startup::end_offsets_when_available;
use position::{CsvPosition, Fingerprint, PositionError};
use records::{CsvRecords, RawRecord, ReadError};
use values::{Columns, EncodedRow, LayoutError, RejectReason, Rejection, RowEncoder};

/// The record header holding the file's absolute path.
pub const PATH_HEADER: &str = "csv_path";
/// The record header holding the byte offset of the record's first byte in the file.
pub const OFFSET_HEADER: &str = "csv_offset";
/// On shutdown, how long to wait for the batch in flight to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// At most this much of a rejected record's text goes to the log and the dead-letter topic.
const REPORTED_TEXT_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("CSV_PATH {path}: cannot open the file: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("CSV file {0} has no header line")]
    NoHeader(PathBuf),
    #[error("CSV file {path}: {source}")]
    Layout { path: PathBuf, source: LayoutError },
    #[error("VALUE_SCHEMA {path}: cannot read the schema: {source}")]
    SchemaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Position(#[from] PositionError),
    #[error("cannot produce to Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// A CSV file checked and ready to stream: header read, key column found, schema planned,
/// position loaded and verified against the file.
pub struct CsvCapture {
    csv_path: PathBuf,
    position_path: PathBuf,
    position: CsvPosition,
    /// Where the first record after the header starts (offset, line).
    after_header: (u64, u64),
    encoder: Arc<RowEncoder>,
    schema_text: Option<String>,
    follow: bool,
}

/// What the loop needs from the application.
pub struct CsvRun {
    pub sink: KafkaSink,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub partitions: i32,
    pub dead_letter_topic: Option<String>,
    /// The registered value schema's id (Avro values; 0 for JSON).
    pub schema_id: u32,
    pub batch_size: u32,
    pub poll_interval: Duration,
    pub metrics: ProducerMetrics,
    pub readiness: Readiness,
}

impl CsvCapture {
    /// Opens the file, reads its header, plans the values and loads the position file
    /// (`position_path`). Everything that is wrong with them fails here.
    pub fn prepare(config: &CsvConfig, position_path: &Path) -> Result<Self, CsvError> {
        let csv_path = std::fs::canonicalize(&config.path).map_err(|source| CsvError::Open {
            path: config.path.clone(),
            source,
        })?;
        let mut reader = CsvRecords::open(&csv_path, 0, 1)?;
        let mut header = RawRecord::default();
        if !reader.next_record(&mut header, true)? || header.oversized {
            return Err(CsvError::NoHeader(csv_path));
        }
        let after_header = (reader.offset(), reader.line());
        let layout = |source| CsvError::Layout {
            path: csv_path.clone(),
            source,
        };
        let columns = Columns::from_header(&header, &config.key_column).map_err(layout)?;
        let (encoder, schema_text) = match &config.value_format {
            ValueFormat::Json => (RowEncoder::json(columns), None),
            ValueFormat::Avro { schema_path } => {
                let text = std::fs::read_to_string(schema_path).map_err(|source| {
                    CsvError::SchemaFile {
                        path: schema_path.clone(),
                        source,
                    }
                })?;
                let encoder = RowEncoder::avro(columns, &text, &schema_path.display().to_string())
                    .map_err(layout)?;
                (encoder, Some(text))
            }
        };
        let position = match CsvPosition::load(position_path)? {
            Some(position) => {
                position.check_file(&csv_path, position_path)?;
                tracing::info!(
                    path = %position_path.display(),
                    csv = %csv_path.display(),
                    byte_offset = position.byte_offset,
                    line = position.line,
                    "loaded the CSV position; the file is unchanged up to it"
                );
                position
            }
            None => {
                tracing::info!(
                    path = %position_path.display(),
                    csv = %csv_path.display(),
                    "no CSV position file; sending the file from its start"
                );
                CsvPosition::start(csv_path.clone())
            }
        };
        Ok(Self {
            csv_path,
            position_path: position_path.to_owned(),
            position,
            after_header,
            encoder: Arc::new(encoder),
            schema_text,
            follow: config.follow,
        })
    }

    /// The Avro value schema to register, if the values are Avro.
    pub fn schema_text(&self) -> Option<&str> {
        self.schema_text.as_deref()
    }

    pub fn csv_path(&self) -> &Path {
        &self.csv_path
    }

    /// Streams the file until its end (or, with `CSV_FOLLOW`, until `shutdown`).
    pub async fn run(
        mut self,
        mut run: CsvRun,
        shutdown: CancellationToken,
    ) -> Result<(), CsvError> {
        run.metrics.horizon_sees_transactions.set(0);
        let Some(all_at_end) = self.complete_offsets(&run, &shutdown).await? else {
            return Ok(());
        };
        // Offsets just taken from the end of the topic cannot have our records after them.
        let delivered = if all_at_end {
            Some(DeliveredOffsets::default())
        } else {
            self.read_back(&run, &shutdown).await
        };
        let Some(mut delivered) = delivered else {
            return Ok(());
        };
        let mut acknowledged = self.position.next_offsets.clone();
        let (start, line) = self.resume_point();
        let mut reader = Some(CsvRecords::open(&self.csv_path, start, line)?);
        let path_header = self.csv_path.display().to_string();
        let source = format!("csv {}", self.csv_path.display());
        tracing::info!(
            csv = %self.csv_path.display(),
            topic = %run.topic,
            byte_offset = start,
            line,
            follow = self.follow,
            batch_size = run.batch_size,
            "streaming the CSV file"
        );
        run.readiness.set("csv", true, "file readable");
        run.readiness.set(CAPTURE_CHECK, true, "streaming");
        // Spaces replays after failed deliveries that follow each other.
        let mut replay_backoff = Backoff::new(Duration::from_secs(1), MAX_DELAY);
        let at_eof_complete = !self.follow;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let (back, batch) = read_batch(
                reader.take().expect("the reader is back after each batch"),
                Arc::clone(&self.encoder),
                run.batch_size,
                run.schema_id,
                at_eof_complete,
            )
            .await;
            reader = Some(back);
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    run.readiness.set("csv", false, e.to_string());
                    return Err(e.into());
                }
            };
            run.metrics
                .poll_duration
                .observe(started.elapsed().as_secs_f64());
            run.metrics.batch_size.observe(batch.items.len() as f64);
            run.metrics.rows_captured.inc_by(batch.items.len() as u64);

            if !batch.items.is_empty() || batch.end.0 != self.position.byte_offset {
                let acks = self
                    .produce(&run, &batch, &delivered, &path_header, &source)
                    .await?;
                run.metrics.batches_in_flight.set(1);
                let summary = wait_for_acks(acks, &shutdown).await;
                run.metrics.batches_in_flight.set(0);
                let Some(summary) = summary else {
                    tracing::warn!(
                        "the batch in flight was not acknowledged before the shutdown grace ran \
                         out; it is read back and completed on the next start"
                    );
                    return Ok(());
                };
                for (partition, next) in &summary.next_offsets {
                    let known = acknowledged.entry(*partition).or_insert(0);
                    *known = (*known).max(*next);
                }
                run.metrics.records_produced.inc_by(summary.produced);
                if summary.failures > 0 {
                    run.metrics.delivery_errors.inc_by(summary.failures);
                    let failure = summary
                        .first_error
                        .unwrap_or_else(|| "delivery failed".into());
                    tracing::error!(
                        error = %failure,
                        byte_offset = self.position.byte_offset,
                        line = self.position.line,
                        "delivery to Kafka failed; streaming replays from the durable position"
                    );
                    run.readiness
                        .set("kafka", false, format!("delivery failed: {failure}"));
                    if !replay_backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                    // Nothing is in flight: a fresh producer id leaves no failed sequence behind
                    // (see `KafkaSink::renewed`).
                    run.sink = run.sink.renewed()?;
                    let Some(found) = self.read_back(&run, &shutdown).await else {
                        return Ok(());
                    };
                    run.readiness.set(CAPTURE_CHECK, true, "streaming");
                    delivered = found;
                    let (start, line) = self.resume_point();
                    reader = Some(CsvRecords::open(&self.csv_path, start, line)?);
                    continue;
                }
                replay_backoff.reset();
                delivered.forget_before(batch.end.0);
                self.position.next_offsets = delivered.durable_offsets(&acknowledged);
                self.store_position(batch.end).await?;
            }

            if batch.at_end {
                if !self.follow {
                    tracing::info!(
                        csv = %self.csv_path.display(),
                        byte_offset = self.position.byte_offset,
                        lines = self.position.line.saturating_sub(1),
                        "reached the end of the CSV file; everything is acknowledged"
                    );
                    break;
                }
                let reader_ref = reader.as_ref().expect("reader present");
                let len = reader_ref.file_len()?;
                if len < reader_ref.offset() {
                    let error = PositionError::FileChanged {
                        csv: self.csv_path.clone(),
                        position_file: self.position_path.clone(),
                        offset: reader_ref.offset(),
                        what: format!("it shrank to {len} bytes while being followed"),
                    };
                    run.readiness.set("csv", false, error.to_string());
                    return Err(error.into());
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(run.poll_interval) => {}
                }
            }
        }
        if let Err(e) = run.sink.flush(Duration::from_secs(2)).await {
            tracing::debug!(error = %e, "flush on shutdown");
        }
        tracing::info!(
            byte_offset = self.position.byte_offset,
            line = self.position.line,
            "CSV streaming stopped"
        );
        Ok(())
    }

    /// Where reading resumes: the durable position, or the first record after the header.
    fn resume_point(&self) -> (u64, u64) {
        if self.position.byte_offset < self.after_header.0 {
            self.after_header
        } else {
            (self.position.byte_offset, self.position.line)
        }
    }

    /// Enqueues the batch's records (and dead letters); returns their acknowledgements.
    async fn produce(
        &self,
        run: &CsvRun,
        batch: &ReadBatchResult,
        delivered: &DeliveredOffsets,
        path_header: &str,
        source: &str,
    ) -> Result<Arc<BatchAcks>, KafkaError> {
        let acks = BatchAcks::new(&run.topic);
        for item in &batch.items {
            match item {
                Item::Record { start, line, row } => {
                    if delivered.contains(*start) {
                        run.metrics.rows_already_in_topic.inc();
                        continue;
                    }
                    let offset_text = start.to_string();
                    let headers = OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: PATH_HEADER,
                            value: Some(path_header),
                        })
                        .insert(Header {
                            key: OFFSET_HEADER,
                            value: Some(&offset_text),
                        });
                    let enqueued = run
                        .sink
                        .enqueue_with_headers(
                            &acks,
                            &run.topic,
                            &row.key,
                            &row.value,
                            Some(&headers),
                        )
                        .await;
                    match enqueued {
                        Ok(()) => {}
                        // Kafka takes no record this large: set the row aside like a bad one.
                        Err(e) if is_refused_record(&e) => {
                            let rejection = Rejection {
                                reason: RejectReason::RecordTooLarge,
                                detail: format!(
                                    "its record is {} bytes; Kafka takes at most {MESSAGE_MAX_BYTES}: {e}",
                                    row.key.len() + row.value.len()
                                ),
                            };
                            let shown = &row.value[..row.value.len().min(REPORTED_TEXT_BYTES)];
                            let text = String::from_utf8_lossy(shown);
                            self.reject(
                                run,
                                &acks,
                                (*start, *line),
                                &row.key,
                                &rejection,
                                &text,
                                source,
                            )
                            .await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Item::Rejected {
                    start,
                    line,
                    key,
                    rejection,
                    text,
                } => {
                    self.reject(run, &acks, (*start, *line), key, rejection, text, source)
                        .await?;
                }
            }
        }
        acks.seal();
        Ok(acks)
    }

    /// Reports a row that is not produced: counted, logged with its line, and sent to the
    /// dead-letter topic if there is one.
    #[allow(clippy::too_many_arguments)]
    async fn reject(
        &self,
        run: &CsvRun,
        acks: &Arc<BatchAcks>,
        (start, line): (u64, u64),
        key: &[u8],
        rejection: &Rejection,
        text: &str,
        source: &str,
    ) -> Result<(), KafkaError> {
        run.metrics
            .rows_rejected
            .with_label_values(&[rejection.reason.label()])
            .inc();
        tracing::warn!(
            csv = %self.csv_path.display(),
            line,
            reason = rejection.reason.label(),
            detail = %rejection.detail,
            dead_letter_topic = run.dead_letter_topic.as_deref().unwrap_or("none"),
            "CSV row rejected and skipped"
        );
        if let Some(topic) = &run.dead_letter_topic {
            let json = json!({
                "reason": rejection.reason.label(),
                "detail": rejection.detail,
                "source": source,
                "line": line,
                "byte_offset": start,
                "row": text,
                "rejected_at": chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })
            .to_string();
            // Bounded like the text: the dead letter must fit in a record.
            let key = &key[..key.len().min(REPORTED_TEXT_BYTES)];
            run.sink.enqueue(acks, topic, key, json.as_bytes()).await?;
        }
        Ok(())
    }

    /// Makes sure the position knows, for every partition, from where to read back. Returns
    /// whether every partition's offset was just taken from the end of the topic (`None` on
    /// shutdown).
    async fn complete_offsets(
        &mut self,
        run: &CsvRun,
        shutdown: &CancellationToken,
    ) -> Result<Option<bool>, CsvError> {
        if self.position.topic.as_deref() != Some(run.topic.as_str()) {
            if self.position.topic.is_some() {
                tracing::warn!(
                    position_topic = ?self.position.topic,
                    topic = %run.topic,
                    "the CSV position's offsets belong to another topic; ignoring them"
                );
            }
            self.position.next_offsets.clear();
        }
        let missing: Vec<i32> = (0..run.partitions)
            .filter(|p| !self.position.next_offsets.contains_key(p))
            .collect();
        if missing.is_empty() {
            return Ok(Some(false));
        }
        let all_missing = missing.len() == run.partitions as usize;
        let Some(ends) = end_offsets_when_available(
            &run.kafka,
            &run.topic,
            run.partitions,
            &run.readiness,
            shutdown,
        )
        .await
        else {
            return Ok(None);
        };
        for p in missing {
            self.position
                .next_offsets
                .insert(p, ends.get(&p).copied().unwrap_or(0));
        }
        self.position.topic = Some(run.topic.clone());
        let (offset, line) = (self.position.byte_offset, self.position.line);
        self.store_position((offset, line)).await?;
        Ok(Some(all_missing))
    }

    /// The records of this file after the durable position that are already in the topic.
    /// Retries (with backoff, not ready meanwhile) until it succeeds: streaming never goes on
    /// without knowing what the topic holds. `None` on shutdown.
    async fn read_back(
        &self,
        run: &CsvRun,
        shutdown: &CancellationToken,
    ) -> Option<DeliveredOffsets> {
        let path = self.csv_path.display().to_string();
        let started = Instant::now();
        let dependency = format!(
            "the read-back of topic {} after the CSV position",
            run.topic
        );
        let records = wait_for(
            &dependency,
            &run.readiness,
            CAPTURE_CHECK,
            shutdown,
            || async {
                match read_raw(&run.kafka, &run.topic, &self.position.next_offsets).await {
                    Ok(records) => Attempt::Ready(records),
                    Err(e) => Attempt::<_, std::convert::Infallible>::Waiting(e.to_string()),
                }
            },
        )
        .await;
        let Ok(records) = records;
        let mut delivered = DeliveredOffsets::default();
        for record in records? {
            if let Some(offset) = csv_offset_of(&record.headers, &path) {
                delivered.insert(offset, record.partition, record.offset);
            }
        }
        delivered.forget_before(self.position.byte_offset);
        tracing::info!(
            topic = %run.topic,
            from_offsets = ?self.position.next_offsets,
            rows_already_in_topic = delivered.len(),
            took_ms = started.elapsed().as_millis(),
            "read back the topic after the CSV position"
        );
        Some(delivered)
    }

    /// Stores the position `(offset, line)` with the file's fingerprint up to it.
    async fn store_position(&mut self, (offset, line): (u64, u64)) -> Result<(), CsvError> {
        let mut position = self.position.clone();
        let path = self.position_path.clone();
        let stored = tokio::task::spawn_blocking(move || -> Result<CsvPosition, PositionError> {
            let mut file = std::fs::File::open(&position.csv_path).map_err(|source| {
                PositionError::CsvRead {
                    path: position.csv_path.clone(),
                    source,
                }
            })?;
            position.fingerprint =
                Fingerprint::of(&mut file, offset).map_err(|source| PositionError::CsvRead {
                    path: position.csv_path.clone(),
                    source,
                })?;
            position.byte_offset = offset;
            position.line = line;
            position.store(&path)?;
            Ok(position)
        })
        .await
        .expect("the position writer does not panic")?;
        self.position = stored;
        Ok(())
    }
}

/// The `csv_offset` header of a record written for the file `path`.
fn csv_offset_of(headers: &[(String, Vec<u8>)], path: &str) -> Option<u64> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    if value(PATH_HEADER)? != path.as_bytes() {
        return None;
    }
    std::str::from_utf8(value(OFFSET_HEADER)?)
        .ok()?
        .parse()
        .ok()
}

/// Waits for the batch's acknowledgements; on shutdown at most [`SHUTDOWN_GRACE`] more
/// (`None` when they did not all come).
async fn wait_for_acks(acks: Arc<BatchAcks>, shutdown: &CancellationToken) -> Option<AckSummary> {
    let wait = acks.wait();
    tokio::pin!(wait);
    tokio::select! {
        summary = &mut wait => Some(summary),
        () = shutdown.cancelled() => tokio::time::timeout(SHUTDOWN_GRACE, wait).await.ok(),
    }
}

/// Records of the file (by byte offset) found in the topic after the durable position, with
/// where they are.
#[derive(Debug, Default)]
pub struct DeliveredOffsets {
    records: HashMap<u64, (i32, i64)>,
}

impl DeliveredOffsets {
    pub fn insert(&mut self, csv_offset: u64, partition: i32, offset: i64) {
        let entry = self
            .records
            .entry(csv_offset)
            .or_insert((partition, offset));
        if (partition, offset) < *entry {
            *entry = (partition, offset);
        }
    }

    pub fn contains(&self, csv_offset: u64) -> bool {
        self.records.contains_key(&csv_offset)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Forgets the records before `csv_offset` (the durable position covers them).
    pub fn forget_before(&mut self, csv_offset: u64) {
        self.records.retain(|offset, _| *offset >= csv_offset);
    }

    /// Per partition the lower of "after the last acknowledged record" and "the first record
    /// found by the read-back that the position does not cover yet".
    pub fn durable_offsets(&self, acknowledged: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
        let mut offsets = acknowledged.clone();
        for &(partition, offset) in self.records.values() {
            offsets
                .entry(partition)
                .and_modify(|o| *o = (*o).min(offset))
                .or_insert(offset);
        }
        offsets
    }
}

/// One record of a batch, encoded or rejected.
enum Item {
    Record {
        start: u64,
        line: u64,
        row: EncodedRow,
    },
    Rejected {
        start: u64,
        line: u64,
        key: Vec<u8>,
        rejection: Rejection,
        text: String,
    },
}

struct ReadBatchResult {
    items: Vec<Item>,
    /// Offset and line after the batch.
    end: (u64, u64),
    /// No further complete record was there when the batch was read.
    at_end: bool,
}

/// Reads and encodes up to `limit` records on a blocking thread; gives the reader back.
async fn read_batch(
    mut reader: CsvRecords,
    encoder: Arc<RowEncoder>,
    limit: u32,
    schema_id: u32,
    at_eof_complete: bool,
) -> (CsvRecords, Result<ReadBatchResult, ReadError>) {
    tokio::task::spawn_blocking(move || {
        let mut items = Vec::with_capacity(limit.min(10_000) as usize);
        let mut record = RawRecord::default();
        let mut at_end = false;
        while items.len() < limit as usize {
            match reader.next_record(&mut record, at_eof_complete) {
                Ok(true) => {}
                Ok(false) => {
                    at_end = true;
                    break;
                }
                Err(e) => return (reader, Err(e)),
            }
            items.push(match encoder.encode(&record, schema_id) {
                Ok(row) => Item::Record {
                    start: record.start,
                    line: record.line,
                    row,
                },
                Err(rejection) => Item::Rejected {
                    start: record.start,
                    line: record.line,
                    key: record
                        .field(encoder.columns().key)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                    rejection,
                    text: reader.raw_text(REPORTED_TEXT_BYTES),
                },
            });
        }
        let end = (reader.offset(), reader.line());
        (reader, Ok(ReadBatchResult { items, end, at_end }))
    })
    .await
    .expect("the CSV reader does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_offsets_hold_the_durable_offsets_back_until_covered() {
        let mut d = DeliveredOffsets::default();
        d.insert(100, 0, 7);
        d.insert(150, 3, 2);
        d.insert(100, 0, 9); // found twice: the first copy counts
        assert!(d.contains(100) && d.contains(150) && !d.contains(120));
        let acknowledged = BTreeMap::from([(0, 20), (1, 5), (3, 40)]);
        assert_eq!(
            d.durable_offsets(&acknowledged),
            BTreeMap::from([(0, 7), (1, 5), (3, 2)])
        );
        d.forget_before(150);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.durable_offsets(&acknowledged),
            BTreeMap::from([(0, 20), (1, 5), (3, 2)])
        );
    }

    #[test]
    fn only_records_of_this_file_count() {
        let headers = |path: &str, offset: &str| {
            vec![
                (PATH_HEADER.to_owned(), path.as_bytes().to_vec()),
                (OFFSET_HEADER.to_owned(), offset.as_bytes().to_vec()),
            ]
        };
        assert_eq!(
            csv_offset_of(&headers("/d/c.csv", "42"), "/d/c.csv"),
            Some(42)
        );
        assert_eq!(
            csv_offset_of(&headers("/d/other.csv", "42"), "/d/c.csv"),
            None
        );
        assert_eq!(csv_offset_of(&headers("/d/c.csv", "x"), "/d/c.csv"), None);
        assert_eq!(csv_offset_of(&[], "/d/c.csv"), None);
    }
}
