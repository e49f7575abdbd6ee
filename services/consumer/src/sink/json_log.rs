//! The JSON-log sink: one JSON object per line in `CONSUMER_LOGS_DIR/consumer_N/consumer_log.json`,
//! with the sink's own record of how far each partition got ("offsets stored with the sink", as
//! Kafka Connect's exactly-once file sinks do).
//!
//! Files of slot `consumer_N`:
//! - `consumer_log.json`: append-only. Each batch is written with one `write`, then `fdatasync`.
//! - `consumer_log.checkpoint.json`: `{"log_bytes": L, "next_offsets": {"topic": {"3": 120}}}`,
//!   replaced atomically (temp file + rename) after every fsync'd batch. `log_bytes` is the log
//!   length the checkpoint covers; `next_offsets` holds, for every partition this slot ever
//!   handled, the offset after the last record it made durable or dead-lettered.
//!
//! Where a new owner of a partition resumes ([`Sink::resume_positions`]): all slots share
//! `CONSUMER_LOGS_DIR`, so it reads every slot's checkpoint and the complete lines of every log
//! *after* the checkpointed length (a replica killed between its fsync and its checkpoint leaves
//! such lines), and takes the highest next offset found. The consumer then starts from that or
//! the committed offset, whichever is further. The checkpoint is only an index that bounds the
//! scan: the log lines themselves carry `topic`, `partition` and `offset`, so a missing or corrupt
//! checkpoint (it is not fsync'd) just means scanning the whole log. Before trusting another
//! slot's log, the reader fsyncs it, so a line it skips is durable.
//!
//! A replica killed in the middle of a write can leave a partial last line; it is not counted as
//! written (it is not complete), and the slot's next owner truncates it before appending.
//!
//! Positions belong to one topic: a topic deleted and created again under the same name (or a
//! broker started afresh, as `docker compose down && up` does) starts again at offset 0. The
//! checkpoint therefore also records the topic id (KIP-516, see [`crate::topic_id`]) its
//! positions were read from. A slot opened for a topic whose id differs from its checkpoint's
//! drops that topic's positions (with a warning naming each partition and both ids) and so reads
//! the new topic from its beginning, appending after the old lines; positions in other slots'
//! checkpoints of another id are not used either. Lines past a checkpoint belong to that
//! checkpoint's topic: a slot records the new id before it appends a line of the new topic.
//! Checkpoints written before topic ids were recorded, and consumers that could not learn the id
//! (TLS or SASL connections, brokers older than Kafka 2.8), are taken to be of the current topic.
//!
//! One `CONSUMER_LOGS_DIR` belongs to one consumer group. Deleting a log means deleting its whole
//! slot directory (checkpoint included).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::product::ProductId;
use serde::{Deserialize, Serialize};

use super::{io_error, sync_dir, Positions, RecordValue, Sink, SinkBatch, SinkError, SinkRecord};
use crate::slot::Slot;
use crate::transform::TransformedProduct;

pub const LOG_FILE: &str = "consumer_log.json";
pub const CHECKPOINT_FILE: &str = "consumer_log.checkpoint.json";
const CHECKPOINT_TEMP_FILE: &str = ".consumer_log.checkpoint.json.tmp";
/// A batch's lines go to the log in pieces of about this size, each written while it is still in
/// the CPU cache: the kernel's copy into the page cache, most of the writer thread's time, ran
/// at about half the speed from a whole batch's buffer (megabytes, out of cache by then).
const WRITE_CHUNK_BYTES: usize = 128 * 1024;

/// One line of the log: its fields, in order. [`append_record`] writes the same bytes as
/// serializing this, field by field (tested against it).
#[derive(Debug, Serialize, PartialEq)]
pub struct LogLine<'a> {
    /// A JSON number, or a string for text ids (`"P0001"`).
    pub id: &'a ProductId,
    pub name: &'a str,
    pub category: Option<&'a str>,
    pub price: f64,
    pub last_updated: &'a str,
    /// Exact `last_updated` (µs since the Unix epoch, UTC); `null` for prototype records.
    pub last_updated_micros: Option<i64>,
    pub discount_price: Option<f64>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// RFC 3339, UTC, microseconds: `2024-05-01T10:00:00.123456Z`.
    pub written_at: &'a str,
}

impl<'a> LogLine<'a> {
    pub fn new(
        topic: &'a str,
        record: &'a SinkRecord,
        p: &'a TransformedProduct,
        written_at: &'a str,
    ) -> Self {
        Self {
            id: &p.id,
            name: p.name(),
            category: p.category(),
            price: p.price,
            last_updated: p.last_updated(),
            last_updated_micros: p.last_updated_micros,
            discount_price: p.discount_price,
            topic,
            partition: record.partition,
            offset: record.offset,
            written_at,
        }
    }
}

/// The `written_at` text of a log line.
pub fn format_written_at(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A line for a JSON object read with `INPUT_FORMAT=json`: its fields, then where it came from
/// and when it was written. An input field named like one of those four is left out, so every
/// line has each key once.
#[derive(Debug)]
pub struct JsonObjectLine<'a> {
    pub fields: &'a serde_json::Map<String, serde_json::Value>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub written_at: &'a str,
}

impl JsonObjectLine<'_> {
    const POSITION_KEYS: [&'static str; 4] = ["topic", "partition", "offset", "written_at"];
}

impl Serialize for JsonObjectLine<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.fields {
            if !Self::POSITION_KEYS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("topic", self.topic)?;
        map.serialize_entry("partition", &self.partition)?;
        map.serialize_entry("offset", &self.offset)?;
        map.serialize_entry("written_at", self.written_at)?;
        map.end()
    }
}

/// Appends `record`'s line (see [`LogLine`], [`JsonObjectLine`]) and a newline to `buf`. For
/// one record; a batch's lines are written with one [`LineFormat`].
pub fn append_record(buf: &mut Vec<u8>, topic: &str, record: &SinkRecord, written_at: &str) {
    LineFormat::new(topic, written_at).append(buf, record);
}

/// Writes the lines of one batch (one topic, one write time). The log and the stage sink write
/// the same lines.
pub struct LineFormat<'a> {
    topic: &'a str,
    written_at: &'a str,
    /// `,"topic":"…","partition":`, escaped once per batch.
    topic_and_partition_key: Vec<u8>,
    /// `,"written_at":"…"}`.
    written_at_and_end: Vec<u8>,
}

impl<'a> LineFormat<'a> {
    pub fn new(topic: &'a str, written_at: &'a str) -> Self {
        let mut topic_and_partition_key = br#","topic":"#.to_vec();
        push_json_str(&mut topic_and_partition_key, topic.as_bytes());
        topic_and_partition_key.extend_from_slice(br#","partition":"#);
        let mut written_at_and_end = br#","written_at":"#.to_vec();
        push_json_str(&mut written_at_and_end, written_at.as_bytes());
        written_at_and_end.push(b'}');
        Self {
            topic,
            written_at,
            topic_and_partition_key,
            written_at_and_end,
        }
    }

    /// Appends `record`'s line and a newline to `buf`.
    pub fn append(&self, buf: &mut Vec<u8>, record: &SinkRecord) {
        match &record.value {
            RecordValue::Product(product) => self.append_product_line(buf, record, product),
            RecordValue::Json(fields) => serde_json::to_writer(
                &mut *buf,
                &JsonObjectLine {
                    fields,
                    topic: self.topic,
                    partition: record.partition,
                    offset: record.offset,
                    written_at: self.written_at,
                },
            )
            .expect("a JSON object line always serializes (string keys)"),
        }
        buf.push(b'\n');
    }

    /// A product's line, byte for byte what serde_json makes of [`LogLine`] (tested), with the
    /// keys and the batch's constant fields written as prepared bytes rather than serialized for
    /// every record: the writer thread's hot path.
    fn append_product_line(&self, buf: &mut Vec<u8>, record: &SinkRecord, p: &TransformedProduct) {
        fn value<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
            serde_json::to_writer(&mut *buf, value)
                .expect("a log line value always serializes (finite numbers)");
        }
        buf.extend_from_slice(br#"{"id":"#);
        match &p.id {
            ProductId::Int(id) => value(buf, id),
            ProductId::Text(id) => push_json_str(buf, id.as_bytes()),
        }
        let (name, category, last_updated) = p.text_bytes();
        buf.extend_from_slice(br#","name":"#);
        push_json_str(buf, name);
        buf.extend_from_slice(br#","category":"#);
        match category {
            Some(category) => push_json_str(buf, category),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(br#","price":"#);
        value(buf, &p.price);
        buf.extend_from_slice(br#","last_updated":"#);
        push_json_str(buf, last_updated);
        buf.extend_from_slice(br#","last_updated_micros":"#);
        value(buf, &p.last_updated_micros);
        buf.extend_from_slice(br#","discount_price":"#);
        value(buf, &p.discount_price);
        buf.extend_from_slice(&self.topic_and_partition_key);
        value(buf, &record.partition);
        buf.extend_from_slice(br#","offset":"#);
        value(buf, &record.offset);
        buf.extend_from_slice(&self.written_at_and_end);
    }
}

/// The UTF-8 `text` as a JSON string, as serde_json writes it: text without quotes, backslashes
/// or control characters (nearly all of it) is copied as it is; anything else goes through
/// serde_json.
fn push_json_str(buf: &mut Vec<u8>, text: &[u8]) {
    // Without an early exit, so the check vectorizes.
    let plain = text.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        buf.reserve(text.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(text);
        buf.push(b'"');
    } else {
        let text = std::str::from_utf8(text).expect("push_json_str takes UTF-8 text");
        serde_json::to_writer(&mut *buf, text).expect("a string always serializes");
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    log_bytes: u64,
    next_offsets: BTreeMap<String, Positions>,
    /// By topic name: the id of the topic its `next_offsets` were read from, where known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    topic_ids: BTreeMap<String, String>,
}

impl Checkpoint {
    fn merge(&mut self, topic: &str, positions: &Positions) {
        let known = self.next_offsets.entry(topic.to_owned()).or_default();
        for (&partition, &next) in positions {
            let entry = known.entry(partition).or_insert(next);
            *entry = (*entry).max(next);
        }
    }
}

/// The fields of a log line that say where it came from.
#[derive(Deserialize)]
struct LinePosition {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
}

/// What the complete lines of a log past some byte offset say.
#[derive(Debug, Default)]
struct TailScan {
    /// Length of the log up to the end of its last complete line.
    complete_len: u64,
    /// Length of the file (longer than `complete_len` when a partial line ends it).
    file_len: u64,
    next_offsets: BTreeMap<String, Positions>,
}

/// The JSON-log sink of one slot.
pub struct JsonLogSink {
    logs_root: PathBuf,
    dir: PathBuf,
    topic: String,
    topic_id: Option<String>,
    log: File,
    log_path: PathBuf,
    log_len: u64,
    checkpoint: Checkpoint,
    buf: Vec<u8>,
}

impl std::fmt::Debug for JsonLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLogSink")
            .field("log_path", &self.log_path)
            .field("log_len", &self.log_len)
            .finish_non_exhaustive()
    }
}

impl JsonLogSink {
    /// Opens (or creates) the log of the slot in `slot_dir` (a directory under `logs_root`) for
    /// records of `topic`. Repairs what a crash may have left: a partial last line is removed,
    /// and complete lines past the checkpoint are taken into it.
    pub fn open(logs_root: &Path, slot_dir: &Path, topic: &str) -> Result<Self, SinkError> {
        Self::open_for_topic_id(logs_root, slot_dir, topic, None)
    }

    /// [`JsonLogSink::open`] for the topic with id `topic_id` (when known): positions of the
    /// topic read from another topic of the same name are dropped (see the module
    /// documentation).
    pub fn open_for_topic_id(
        logs_root: &Path,
        slot_dir: &Path,
        topic: &str,
        topic_id: Option<&str>,
    ) -> Result<Self, SinkError> {
        let log_path = slot_dir.join(LOG_FILE);
        let existed = log_path.exists();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error("open", &log_path))?;
        if !existed {
            sync_dir(slot_dir)?;
        }
        log.sync_data().map_err(io_error("fsync", &log_path))?;

        let mut checkpoint = read_checkpoint(slot_dir);
        let scan = scan_tail(&log_path, checkpoint.log_bytes)?;
        if scan.file_len > scan.complete_len {
            tracing::warn!(
                log = %log_path.display(),
                bytes = scan.file_len - scan.complete_len,
                "removing a partial last line left by an interrupted write"
            );
            log.set_len(scan.complete_len)
                .map_err(io_error("truncate", &log_path))?;
            log.sync_data().map_err(io_error("fsync", &log_path))?;
        }
        for (scanned_topic, positions) in &scan.next_offsets {
            checkpoint.merge(scanned_topic, positions);
        }
        checkpoint.log_bytes = scan.complete_len;
        if let Some(id) = topic_id {
            if let Some(old) = checkpoint.topic_ids.get(topic).filter(|old| *old != id) {
                for (partition, next) in checkpoint.next_offsets.remove(topic).unwrap_or_default() {
                    tracing::warn!(
                        topic,
                        partition,
                        checkpoint_topic_id = %old,
                        topic_id = id,
                        dropped_next_offset = next,
                        checkpoint = %slot_dir.join(CHECKPOINT_FILE).display(),
                        "the checkpoint was written for another topic of this name: the partition is read from the new topic's beginning"
                    );
                }
            }
            checkpoint.topic_ids.insert(topic.to_owned(), id.to_owned());
        }
        let sink = Self {
            logs_root: logs_root.to_owned(),
            dir: slot_dir.to_owned(),
            topic: topic.to_owned(),
            topic_id: topic_id.map(str::to_owned),
            log,
            log_path,
            log_len: scan.complete_len,
            checkpoint,
            buf: Vec::with_capacity(WRITE_CHUNK_BYTES + 4096),
        };
        sink.write_checkpoint()?;
        Ok(sink)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn write_checkpoint(&self) -> Result<(), SinkError> {
        let temp = self.dir.join(CHECKPOINT_TEMP_FILE);
        let path = self.dir.join(CHECKPOINT_FILE);
        let bytes = serde_json::to_vec(&self.checkpoint).expect("checkpoint serializes");
        std::fs::write(&temp, bytes).map_err(io_error("write", &temp))?;
        std::fs::rename(&temp, &path).map_err(io_error("rename checkpoint to", &path))
    }

    /// Appends the lines of `records` and fsyncs them.
    fn append_batch(
        &mut self,
        records: &[SinkRecord],
        written_at: DateTime<Utc>,
    ) -> Result<(), SinkError> {
        let written_at = format_written_at(written_at);
        let lines = LineFormat::new(&self.topic, &written_at);
        self.buf.clear();
        let mut records = records.iter().peekable();
        while let Some(record) = records.next() {
            lines.append(&mut self.buf, record);
            if self.buf.len() >= WRITE_CHUNK_BYTES || records.peek().is_none() {
                append_lines(
                    &mut self.log,
                    &self.log_path,
                    &mut self.log_len,
                    &mut self.buf,
                )?;
            }
        }
        self.log
            .sync_data()
            .map_err(io_error("fsync", &self.log_path))
    }

    /// After a failed append or fsync, cuts the log back to `durable_len`: the failed batch's
    /// lines that did reach the file (after a failed fsync perhaps only the page cache, which the
    /// kernel may drop) must not be taken for durable lines by the next reader. The batch is read
    /// again after a restart.
    fn roll_back(&mut self, durable_len: u64) {
        self.buf.clear();
        match self
            .log
            .set_len(durable_len)
            .and_then(|()| self.log.sync_data())
        {
            Ok(()) => self.log_len = durable_len,
            Err(e) => tracing::error!(
                log = %self.log_path.display(),
                durable_len,
                error = %e,
                "cannot cut the failed batch off the log; its next owner keeps the complete lines"
            ),
        }
    }
}

impl Sink for JsonLogSink {
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError> {
        if !batch.records.is_empty() {
            let durable_len = self.log_len;
            if let Err(e) = self.append_batch(batch.records, batch.written_at) {
                self.roll_back(durable_len);
                return Err(e);
            }
        }
        self.checkpoint.merge(&self.topic, batch.next_offsets);
        self.checkpoint.log_bytes = self.log_len;
        self.write_checkpoint()
    }

    fn resume_positions(&self, partitions: &[i32]) -> Result<Positions, SinkError> {
        let mut found = Positions::new();
        let entries =
            std::fs::read_dir(&self.logs_root).map_err(io_error("list", &self.logs_root))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.logs_root))?;
            let is_slot = entry.file_name().to_str().and_then(Slot::parse).is_some()
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_slot {
                continue;
            }
            let (positions, written_for) = slot_positions(&entry.path(), &self.topic)?;
            let other_topic = match (&written_for, &self.topic_id) {
                (Some(old), Some(id)) => old != id,
                _ => false,
            };
            for (partition, next) in positions {
                if !partitions.contains(&partition) {
                    continue;
                }
                if other_topic {
                    tracing::warn!(
                        topic = %self.topic,
                        partition,
                        checkpoint_topic_id = written_for.as_deref().unwrap_or_default(),
                        topic_id = self.topic_id.as_deref().unwrap_or_default(),
                        ignored_next_offset = next,
                        slot = %entry.file_name().to_string_lossy(),
                        "another slot's checkpoint was written for another topic of this name: its position is not used"
                    );
                    continue;
                }
                let best = found.entry(partition).or_insert(next);
                *best = (*best).max(next);
            }
        }
        Ok(found)
    }
}

/// Appends the lines in `buf` to `log` (not yet fsync'd), counts them into `log_len` and empties
/// `buf`.
fn append_lines(
    log: &mut File,
    log_path: &Path,
    log_len: &mut u64,
    buf: &mut Vec<u8>,
) -> Result<(), SinkError> {
    log.write_all(buf)
        .map_err(io_error("append to", log_path))?;
    *log_len += buf.len() as u64;
    buf.clear();
    Ok(())
}

/// Next offsets of `topic` in the slot directory `dir` (its checkpoint plus its log's complete
/// lines past the checkpoint), and the id of the topic they were read from, if recorded.
fn slot_positions(dir: &Path, topic: &str) -> Result<(Positions, Option<String>), SinkError> {
    let log_path = dir.join(LOG_FILE);
    let mut checkpoint = read_checkpoint(dir);
    let written_for = checkpoint.topic_ids.remove(topic);
    match File::open(&log_path) {
        Ok(log) => {
            // What we skip must be durable, not just in another process's page cache.
            log.sync_data().map_err(io_error("fsync", &log_path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let positions = checkpoint.next_offsets.remove(topic).unwrap_or_default();
            return Ok((positions, written_for));
        }
        Err(e) => return Err(io_error("open", &log_path)(e)),
    }
    let scan = scan_tail(&log_path, checkpoint.log_bytes)?;
    for (scanned_topic, positions) in &scan.next_offsets {
        checkpoint.merge(scanned_topic, positions);
    }
    let positions = checkpoint.next_offsets.remove(topic).unwrap_or_default();
    Ok((positions, written_for))
}

/// The checkpoint in `dir`; missing or unreadable means "nothing checkpointed" (scan everything).
fn read_checkpoint(dir: &Path) -> Checkpoint {
    let path = dir.join(CHECKPOINT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(checkpoint = %path.display(), error = %e, "ignoring an unreadable checkpoint; scanning the whole log");
            Checkpoint::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
        Err(e) => {
            tracing::warn!(checkpoint = %path.display(), error = %e, "cannot read checkpoint; scanning the whole log");
            Checkpoint::default()
        }
    }
}

/// Reads the complete lines of the log at `path` from byte `from` on.
fn scan_tail(path: &Path, from: u64) -> Result<TailScan, SinkError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TailScan::default()),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    let file_len = file.metadata().map_err(io_error("stat", path))?.len();
    let start = if from <= file_len {
        from
    } else {
        tracing::warn!(log = %path.display(), checkpointed = from, actual = file_len, "log is shorter than its checkpoint says; scanning it whole");
        0
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    reader
        .seek(SeekFrom::Start(start))
        .map_err(io_error("seek in", path))?;
    let mut scan = TailScan {
        complete_len: start,
        file_len,
        next_offsets: BTreeMap::new(),
    };
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error("read", path))?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // end of file, or a partial line a crash left behind
        }
        scan.complete_len += read as u64;
        let Ok(position) = serde_json::from_slice::<LinePosition>(&line) else {
            continue; // not one of our lines (e.g. written by the prototype); carries no offset
        };
        if let (Some(topic), Some(partition), Some(offset)) =
            (position.topic, position.partition, position.offset)
        {
            let next = scan
                .next_offsets
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::TransformedProduct;

    fn record(
        partition: i32,
        offset: i64,
        category: Option<&str>,
        discount: Option<f64>,
    ) -> SinkRecord {
        SinkRecord {
            partition,
            offset,
            key: None,
            value: RecordValue::Product(TransformedProduct::from_logged_fields(
                ProductId::Int(7),
                "Product \"7\"",
                category,
                55.6,
                "2023-10-13 10:11:02",
                Some(1_697_191_862_250_000),
                discount,
            )),
            changed_at_micros: None,
        }
    }

    fn written_at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00.1234567Z")
            .unwrap()
            .to_utc()
    }

    /// The sink of the slot directory `slot` (created) under `root`, for topic `t`.
    fn open_slot(root: &Path, slot: &str) -> (PathBuf, JsonLogSink) {
        let dir = root.join(slot);
        std::fs::create_dir_all(&dir).unwrap();
        let sink = JsonLogSink::open(root, &dir, "t").unwrap();
        (dir, sink)
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_log_line_is_one_json_object_with_the_contract_fields() {
        let mut buf = Vec::new();
        let r = record(3, 42, Some("CAT_5"), Some(44.48));
        append_record(
            &mut buf,
            "product_updates",
            &r,
            &format_written_at(written_at()),
        );
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"id":7,"name":"Product \"7\"","category":"CAT_5","price":55.6,"last_updated":"2023-10-13 10:11:02","#,
                r#""last_updated_micros":1697191862250000,"discount_price":44.48,"topic":"product_updates","partition":3,"#,
                r#""offset":42,"written_at":"2024-05-01T10:00:00.123456Z"}"#,
                "\n"
            )
        );
        // Absent values are explicit nulls, so every line has the same keys.
        let mut buf = Vec::new();
        let r = record(0, 1, None, None);
        append_record(&mut buf, "t", &r, "2024-05-01T10:00:00.000000Z");
        let value: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(value["category"], serde_json::Value::Null);
        assert_eq!(value["discount_price"], serde_json::Value::Null);
        assert_eq!(value.as_object().unwrap().len(), 11);

        // A text id (prototype 002's product_id) is a JSON string.
        let mut buf = Vec::new();
        let mut r = record(0, 2, None, None);
        if let RecordValue::Product(p) = &mut r.value {
            p.id = ProductId::Text("P0001".into());
        }
        append_record(&mut buf, "t", &r, "2024-05-01T10:00:00.000000Z");
        assert!(
            String::from_utf8_lossy(&buf).starts_with(r#"{"id":"P0001","#),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }

    #[test]
    fn product_lines_are_byte_identical_to_the_derived_serialization() {
        let names = [
            "Product_1",
            "quote \" backslash \\ tab \t nl \n",
            "ünï \u{1}\u{1f} ✓ </tag>",
            "",
        ];
        let mut checked = 0;
        for (i, name) in names.iter().enumerate() {
            for (category, discount) in [
                (Some("CAT_5"), Some(0.1 + 0.2)),
                (None, None),
                (Some("é\"x"), None),
            ] {
                for id in [ProductId::Int(-7), ProductId::Text("P\"01".into())] {
                    let mut r = record(i as i32, 1 << 40, category, discount);
                    r.value = RecordValue::Product(TransformedProduct::from_logged_fields(
                        id,
                        name,
                        category,
                        1e-7 * (i as f64 + 1.0) * 1e9,
                        "2023-10-13 10:11:02",
                        (i % 2 == 0).then_some(-1),
                        discount,
                    ));
                    let RecordValue::Product(p) = &r.value else {
                        unreachable!()
                    };
                    let mut fast = Vec::new();
                    append_record(&mut fast, "topic \"q\"", &r, "2024-05-01T10:00:00.123456Z");
                    let mut derived = serde_json::to_vec(&LogLine::new(
                        "topic \"q\"",
                        &r,
                        p,
                        "2024-05-01T10:00:00.123456Z",
                    ))
                    .unwrap();
                    derived.push(b'\n');
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(derived).unwrap()
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 24);
    }

    #[test]
    fn a_json_object_line_keeps_the_fields_and_adds_the_position() {
        let mut buf = Vec::new();
        let fields = serde_json::json!({"user_id": "u1", "locale": "RU", "n": 2, "offset": "x"});
        let r = SinkRecord {
            partition: 1,
            offset: 5,
            key: Some(b"u1".to_vec()),
            value: RecordValue::Json(fields.as_object().unwrap().clone()),
            changed_at_micros: None,
        };
        append_record(&mut buf, "user-login", &r, "2024-05-01T10:00:00.000000Z");
        let line: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"user_id": "u1", "locale": "RU", "n": 2, "topic": "user-login",
                "partition": 1, "offset": 5, "written_at": "2024-05-01T10:00:00.000000Z"})
        );
        assert!(buf.ends_with(b"}\n"));
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches("\"offset\"").count(), 1, "{text}");
    }

    #[test]
    fn written_at_is_rfc3339_utc_with_microseconds() {
        let text = format_written_at(written_at());
        assert_eq!(text, "2024-05-01T10:00:00.123456Z");
        assert!(DateTime::parse_from_rfc3339(&text).is_ok());
    }

    #[test]
    fn writes_append_lines_and_checkpoint_positions() {
        let root = tempfile::tempdir().unwrap();
        let (dir, mut sink) = open_slot(root.path(), "consumer_1");
        let records = [record(0, 5, None, None), record(1, 9, None, None)];
        let next = Positions::from([(0, 6), (1, 10), (2, 4)]); // partition 2: dead-lettered only
        sink.write(&SinkBatch {
            records: &records,
            next_offsets: &next,
            written_at: written_at(),
        })
        .unwrap();
        let logged = lines(sink.log_path());
        assert_eq!(logged.len(), 2);
        assert_eq!(
            (
                logged[1]["partition"].as_i64(),
                logged[1]["offset"].as_i64()
            ),
            (Some(1), Some(9))
        );

        let checkpoint = read_checkpoint(&dir);
        assert_eq!(
            checkpoint.log_bytes,
            std::fs::metadata(sink.log_path()).unwrap().len()
        );
        assert_eq!(checkpoint.next_offsets["t"], next);
        assert_eq!(sink.resume_positions(&[0, 1, 2, 3]).unwrap(), next);
        assert_eq!(
            sink.resume_positions(&[1]).unwrap(),
            Positions::from([(1, 10)])
        );
    }

    #[test]
    fn a_batch_larger_than_a_write_piece_is_logged_whole_and_in_order() {
        let root = tempfile::tempdir().unwrap();
        let (dir, mut sink) = open_slot(root.path(), "consumer_1");
        let records: Vec<SinkRecord> = (0..3000)
            .map(|offset| record(offset as i32 % 3, offset, Some("CAT_5"), Some(44.48)))
            .collect();
        let mut expected = Vec::new();
        let written_at_text = format_written_at(written_at());
        for record in &records {
            append_record(&mut expected, "t", record, &written_at_text);
        }
        assert!(
            expected.len() > 3 * WRITE_CHUNK_BYTES,
            "the batch spans several pieces"
        );
        let next = Positions::from([(0, 2998), (1, 2999), (2, 3000)]);
        sink.write(&SinkBatch {
            records: &records,
            next_offsets: &next,
            written_at: written_at(),
        })
        .unwrap();
        assert_eq!(std::fs::read(sink.log_path()).unwrap(), expected);
        assert_eq!(read_checkpoint(&dir).log_bytes, expected.len() as u64);
    }

    #[test]
    fn resume_positions_see_lines_a_killed_replica_wrote_after_its_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("consumer_1");
        let alive = root.path().join("consumer_2");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&alive).unwrap();
        let mut dead_sink = JsonLogSink::open(root.path(), &dead, "t").unwrap();
        dead_sink
            .write(&SinkBatch {
                records: &[record(4, 10, None, None)],
                next_offsets: &Positions::from([(4, 11)]),
                written_at: written_at(),
            })
            .unwrap();
        // Killed after fsync, before the checkpoint: two complete lines and half a third.
        let mut tail = Vec::new();
        append_record(&mut tail, "t", &record(4, 11, None, None), "x");
        append_record(&mut tail, "t", &record(4, 12, None, None), "x");
        append_record(&mut tail, "other_topic", &record(4, 99, None, None), "x");
        let mut partial = Vec::new();
        append_record(&mut partial, "t", &record(4, 13, None, None), "x");
        tail.extend_from_slice(&partial[..partial.len() / 2]);
        OpenOptions::new()
            .append(true)
            .open(dead.join(LOG_FILE))
            .unwrap()
            .write_all(&tail)
            .unwrap();
        drop(dead_sink);

        let alive_sink = JsonLogSink::open(root.path(), &alive, "t").unwrap();
        assert_eq!(
            alive_sink.resume_positions(&[4, 5]).unwrap(),
            Positions::from([(4, 13)]),
            "offsets 11 and 12 are in the log; the half-written 13 is not"
        );

        // The dead slot's next owner removes the partial line and checkpoints what is there.
        let reopened = JsonLogSink::open(root.path(), &dead, "t").unwrap();
        let logged = lines(reopened.log_path());
        assert_eq!(
            logged
                .iter()
                .map(|l| l["offset"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [10, 11, 12, 99]
        );
        assert_eq!(
            read_checkpoint(&dead).next_offsets["t"],
            Positions::from([(4, 13)])
        );
        assert_eq!(
            read_checkpoint(&dead).next_offsets["other_topic"],
            Positions::from([(4, 100)])
        );
    }

    #[test]
    fn a_failed_batch_is_cut_off_the_log() {
        let root = tempfile::tempdir().unwrap();
        let (dir, mut sink) = open_slot(root.path(), "consumer_1");
        let write = |sink: &mut JsonLogSink, offset| {
            sink.write(&SinkBatch {
                records: &[record(0, offset, None, None)],
                next_offsets: &Positions::from([(0, offset + 1)]),
                written_at: written_at(),
            })
            .unwrap();
        };
        write(&mut sink, 0);
        let durable = std::fs::metadata(sink.log_path()).unwrap().len();
        // What a failed batch may leave: complete lines and a partial one, not fsync'd.
        let mut failed = Vec::new();
        append_record(&mut failed, "t", &record(0, 1, None, None), "x");
        append_record(&mut failed, "t", &record(0, 2, None, None), "x");
        failed.truncate(failed.len() - 5);
        sink.log.write_all(&failed).unwrap();
        sink.log_len += failed.len() as u64;

        sink.roll_back(durable);
        assert_eq!(std::fs::metadata(sink.log_path()).unwrap().len(), durable);
        assert_eq!(
            sink.resume_positions(&[0]).unwrap(),
            Positions::from([(0, 1)])
        );
        // The batch written again after the failure follows the last durable line.
        write(&mut sink, 1);
        let offsets: Vec<i64> = lines(sink.log_path())
            .iter()
            .map(|l| l["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets, [0, 1]);
        assert_eq!(
            read_checkpoint(&dir).log_bytes,
            std::fs::metadata(sink.log_path()).unwrap().len()
        );
    }

    #[test]
    fn a_corrupt_checkpoint_means_scanning_the_whole_log() {
        let root = tempfile::tempdir().unwrap();
        let (dir, mut sink) = open_slot(root.path(), "consumer_3");
        for offset in 0..3 {
            sink.write(&SinkBatch {
                records: &[record(2, offset, None, None)],
                next_offsets: &Positions::from([(2, offset + 1)]),
                written_at: written_at(),
            })
            .unwrap();
        }
        std::fs::write(dir.join(CHECKPOINT_FILE), b"{not json").unwrap();
        assert_eq!(
            sink.resume_positions(&[2]).unwrap(),
            Positions::from([(2, 3)])
        );
        // Directories that are not slots are ignored.
        std::fs::create_dir_all(root.path().join("stage")).unwrap();
        assert_eq!(
            sink.resume_positions(&[2]).unwrap(),
            Positions::from([(2, 3)])
        );
    }
}
