//! The stage sink (`CONSUMER_SINK=stage`, prototype 002): every batch becomes one JSON Lines file
//! per partition in a stage directory that a warehouse loader picks up (Snowflake's
//! `COPY INTO ... PATTERN='.*[.]jsonl([.]gz)?'`, BigQuery, DuckDB's `read_json`):
//!
//! ```text
//! STAGE_DIR/<topic>/<partition>-<first offset>-<last offset>.<topic id>.jsonl   (.jsonl.gz with STAGE_GZIP)
//! STAGE_DIR/<topic>/.positions/<partition>.json          {"next_offset": N, "topic_id": "<topic id>"}
//! ```
//!
//! Lines are the JSON log's lines (same fields, `written_at` included). A file is written under a
//! hidden temporary name (`.<name>.<slot>.tmp`), fsync'd and renamed, and the directory is
//! fsync'd, so a loader never sees a half file and a file it sees is durable. Only after every
//! file of the batch is in place are the partitions' positions stored and the offsets committed
//! to Kafka: a failed write stops the consumer without committing (the batch is read again after
//! a restart), where prototype 002 committed anyway and lost it.
//!
//! Where a new owner resumes: the highest of the partition's stored position and the last offset
//! of its files plus one. Positions cover records that produced no file (dead-lettered or
//! filtered out); file names cover a replica killed between renaming a file and storing the
//! position. A loader may delete or move files it loaded: the positions keep the place.
//! Replicas of one group share `STAGE_DIR` (each partition is written by its current owner only).
//!
//! A topic deleted and created again under the same name starts again at offset 0, so its files
//! would get the names of the old topic's files. Names and positions therefore carry the topic id
//! (KIP-516, see [`crate::topic_id`]), and a file is never overwritten (a name that exists is a
//! write error). A position stored for another id is not used (a warning names the partition and
//! both ids) and neither are files of another id: the partition is read from the new topic's
//! beginning, its files next to the old ones. Files and positions written before ids were
//! recorded (`<partition>-<first>-<last>.jsonl`, a position without `topic_id`) are taken to be of
//! the current topic, as long as the partition's position carries no id: once one does, it
//! covers them. When the id cannot be learnt (TLS or SASL connections, brokers older than Kafka
//! 2.8) files get the earlier names and every position and file counts, as before.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::json_log::{format_written_at, LineFormat};
use super::{io_error, sync_dir, Positions, Sink, SinkBatch, SinkError, SinkRecord};

const POSITIONS_DIR: &str = ".positions";

#[derive(Debug, Serialize, Deserialize)]
struct StoredPosition {
    next_offset: i64,
    /// The id of the topic it was read from, where known (absent in positions stored before ids
    /// were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic_id: Option<String>,
}

pub struct StageSink {
    topic: String,
    topic_id: Option<String>,
    dir: PathBuf,
    positions_dir: PathBuf,
    slot: String,
    gzip: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for StageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSink")
            .field("dir", &self.dir)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl StageSink {
    /// Opens (creating it) `stage_root/<topic>/` for `slot` and removes the temporary files a
    /// previous run of the same slot left behind.
    pub fn open(stage_root: &Path, topic: &str, slot: &str, gzip: bool) -> Result<Self, SinkError> {
        Self::open_for_topic_id(stage_root, topic, None, slot, gzip)
    }

    /// [`StageSink::open`] for the topic with id `topic_id` (when known): files are named with
    /// it, and positions and files of another topic of the same name are not used (see the
    /// module documentation).
    pub fn open_for_topic_id(
        stage_root: &Path,
        topic: &str,
        topic_id: Option<&str>,
        slot: &str,
        gzip: bool,
    ) -> Result<Self, SinkError> {
        let dir = stage_root.join(topic);
        let positions_dir = dir.join(POSITIONS_DIR);
        fs::create_dir_all(&positions_dir).map_err(io_error("create", &positions_dir))?;
        let own_temp_suffix = format!(".{slot}.tmp");
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(&own_temp_suffix) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("remove the leftover", &path))?;
                tracing::info!(path = %path.display(), "removed a temporary stage file left by an earlier run");
            }
        }
        Ok(Self {
            topic: topic.to_owned(),
            topic_id: topic_id.map(str::to_owned),
            dir,
            positions_dir,
            slot: slot.to_owned(),
            gzip,
            buf: Vec::new(),
        })
    }

    /// `STAGE_DIR/<topic>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of a batch of `partition` from `first` to `last` offset of the topic with id
    /// `topic_id` (when known).
    pub fn file_name(
        partition: i32,
        first: i64,
        last: i64,
        topic_id: Option<&str>,
        gzip: bool,
    ) -> String {
        let extension = if gzip { "jsonl.gz" } else { "jsonl" };
        match topic_id {
            Some(id) => format!("{partition}-{first}-{last}.{id}.{extension}"),
            None => format!("{partition}-{first}-{last}.{extension}"),
        }
    }

    /// Writes `records` (one partition, in offset order) as one file: temp name, fsync, rename.
    fn write_file(&mut self, records: &[&SinkRecord], written_at: &str) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        let name = Self::file_name(
            first.partition,
            first.offset,
            last.offset,
            self.topic_id.as_deref(),
            self.gzip,
        );
        let path = self.dir.join(&name);
        // Each partition has one writer (its fenced owner), so nothing creates the name between
        // this check and the rename.
        if path.exists() {
            return Err(SinkError::Exists { path });
        }
        let temp = self.dir.join(format!(".{name}.{}.tmp", self.slot));
        let lines = LineFormat::new(&self.topic, written_at);
        self.buf.clear();
        for record in records {
            lines.append(&mut self.buf, record);
        }
        let mut file = File::create(&temp).map_err(io_error("create", &temp))?;
        if self.gzip {
            let mut encoder = GzEncoder::new(&mut file, Compression::fast());
            encoder
                .write_all(&self.buf)
                .and_then(|()| encoder.finish().map(drop))
                .map_err(io_error("write", &temp))?;
        } else {
            file.write_all(&self.buf)
                .map_err(io_error("write", &temp))?;
        }
        file.sync_all().map_err(io_error("fsync", &temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io_error("rename into place", &path))
    }

    fn store_position(&self, partition: i32, next_offset: i64) -> Result<(), SinkError> {
        let path = self.positions_dir.join(format!("{partition}.json"));
        let temp = self
            .positions_dir
            .join(format!(".{partition}.json.{}.tmp", self.slot));
        let text = serde_json::to_vec(&StoredPosition {
            next_offset,
            topic_id: self.topic_id.clone(),
        })
        .expect("a position always serializes");
        fs::write(&temp, text).map_err(io_error("write", &temp))?;
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io_error("fsync", &temp))?;
        fs::rename(&temp, &path).map_err(io_error("rename into place", &path))
    }

    fn stored_position(&self, partition: i32) -> Option<StoredPosition> {
        let path = self.positions_dir.join(format!("{partition}.json"));
        let text = fs::read(&path).ok()?;
        match serde_json::from_slice::<StoredPosition>(&text) {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable stage position; using the file names alone");
                None
            }
        }
    }
}

/// A stage file's name, read.
#[derive(Debug, PartialEq, Eq)]
struct FileName<'a> {
    partition: i32,
    last: i64,
    /// `None` in names given before topic ids were recorded.
    topic_id: Option<&'a str>,
}

/// `<partition>-<first>-<last>[.<topic id>].jsonl[.gz]`.
fn parse_file_name(name: &str) -> Option<FileName<'_>> {
    let stem = name
        .strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".jsonl.gz"))?;
    let (offsets, topic_id) = match stem.split_once('.') {
        Some((offsets, id)) if !id.is_empty() && !id.contains('.') => (offsets, Some(id)),
        Some(_) => return None,
        None => (stem, None),
    };
    let mut parts = offsets.split('-');
    let partition = parts.next()?.parse().ok()?;
    let _first: i64 = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(FileName {
        partition,
        last,
        topic_id,
    })
}

impl Sink for StageSink {
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError> {
        if !batch.records.is_empty() {
            let written_at = format_written_at(batch.written_at);
            let mut by_partition: BTreeMap<i32, Vec<&SinkRecord>> = BTreeMap::new();
            for record in batch.records {
                by_partition
                    .entry(record.partition)
                    .or_default()
                    .push(record);
            }
            for records in by_partition.into_values() {
                self.write_file(&records, &written_at)?;
            }
            sync_dir(&self.dir)?;
        }
        for (&partition, &next_offset) in batch.next_offsets {
            self.store_position(partition, next_offset)?;
        }
        sync_dir(&self.positions_dir)
    }

    fn resume_positions(&self, partitions: &[i32]) -> Result<Positions, SinkError> {
        let mut positions = Positions::new();
        // Partitions whose files without an id count (their position carries no id, or there is
        // none), and those found written for another topic of this name (warned about once).
        let mut legacy_files_count = Vec::new();
        let mut other_topic = BTreeSet::new();
        for &partition in partitions {
            match self.stored_position(partition) {
                Some(StoredPosition {
                    next_offset,
                    topic_id: Some(stored_for),
                }) if self.topic_id.as_ref().is_some_and(|id| *id != stored_for) => {
                    tracing::warn!(
                        topic = %self.topic,
                        partition,
                        stage_topic_id = %stored_for,
                        topic_id = self.topic_id.as_deref().unwrap_or_default(),
                        ignored_next_offset = next_offset,
                        positions = %self.positions_dir.display(),
                        "the stage position was written for another topic of this name: the partition is read from the new topic's beginning (its files stay; new ones carry the new id)"
                    );
                    other_topic.insert(partition);
                }
                Some(stored) => {
                    positions.insert(partition, stored.next_offset);
                    if stored.topic_id.is_none() {
                        legacy_files_count.push(partition);
                    }
                }
                None => legacy_files_count.push(partition),
            }
        }
        for entry in fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))? {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(file) = parse_file_name(&name) else {
                continue;
            };
            if !partitions.contains(&file.partition) {
                continue;
            }
            let counts = match (file.topic_id, &self.topic_id) {
                (_, None) => true,
                (Some(file_id), Some(id)) => file_id == id,
                (None, Some(_)) => legacy_files_count.contains(&file.partition),
            };
            if !counts {
                if let Some(file_id) = file.topic_id {
                    if other_topic.insert(file.partition) {
                        tracing::warn!(
                            topic = %self.topic,
                            partition = file.partition,
                            stage_topic_id = file_id,
                            topic_id = self.topic_id.as_deref().unwrap_or_default(),
                            file = %name,
                            "a stage file was written for another topic of this name: the partition is read from the new topic's beginning (its files stay; new ones carry the new id)"
                        );
                    }
                }
                continue;
            }
            let next = positions.entry(file.partition).or_insert(file.last + 1);
            *next = (*next).max(file.last + 1);
        }
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::RecordValue;
    use chrono::{DateTime, Utc};
    use std::io::Read;

    fn record(partition: i32, offset: i64) -> SinkRecord {
        let fields = serde_json::json!({"id": offset, "category": "CAT_5"});
        SinkRecord {
            partition,
            offset,
            key: None,
            value: RecordValue::Json(fields.as_object().unwrap().clone()),
            changed_at_micros: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn file_names_round_trip() {
        let id = "5c1e3a7b-90d2-4e11-8f3a-0b7c2d9e4f11";
        let read = |partition, last, topic_id| {
            Some(FileName {
                partition,
                last,
                topic_id,
            })
        };
        assert_eq!(
            StageSink::file_name(3, 10, 19, Some(id), false),
            format!("3-10-19.{id}.jsonl")
        );
        assert_eq!(
            StageSink::file_name(3, 10, 19, Some(id), true),
            format!("3-10-19.{id}.jsonl.gz")
        );
        assert_eq!(
            StageSink::file_name(3, 10, 19, None, false),
            "3-10-19.jsonl"
        );
        assert_eq!(
            parse_file_name(&format!("3-10-19.{id}.jsonl")),
            read(3, 19, Some(id))
        );
        assert_eq!(
            parse_file_name(&format!("3-10-19.{id}.jsonl.gz")),
            read(3, 19, Some(id))
        );
        // Names given before topic ids were recorded.
        assert_eq!(parse_file_name("3-10-19.jsonl"), read(3, 19, None));
        assert_eq!(parse_file_name("3-10-19.jsonl.gz"), read(3, 19, None));
        assert_eq!(parse_file_name(".3-10-19.jsonl.consumer_1.tmp"), None);
        assert_eq!(
            parse_file_name(&format!(".3-10-19.{id}.jsonl.consumer_1.tmp")),
            None
        );
        assert_eq!(parse_file_name("3-10.jsonl"), None);
        assert_eq!(parse_file_name("3-10-19..jsonl"), None);
        assert_eq!(parse_file_name("3-10-19.a.b.jsonl"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
    }

    /// A batch of `records` with their next offsets.
    fn write(sink: &mut StageSink, records: &[SinkRecord]) {
        let mut next_offsets = Positions::new();
        for r in records {
            next_offsets.insert(r.partition, r.offset + 1);
        }
        sink.write(&SinkBatch {
            records,
            next_offsets: &next_offsets,
            written_at: now(),
        })
        .unwrap();
    }

    #[test]
    fn a_topic_created_again_is_staged_from_its_beginning_beside_the_old_files() {
        let root = tempfile::tempdir().unwrap();
        let (old, new) = (
            "00000000-0000-0000-0000-00000000000a",
            "00000000-0000-0000-0000-00000000000b",
        );
        let mut sink =
            StageSink::open_for_topic_id(root.path(), "t", Some(old), "consumer_1", false).unwrap();
        write(&mut sink, &[record(0, 0), record(0, 1), record(1, 0)]);
        let first_file = sink.dir().join(format!("0-0-1.{old}.jsonl"));
        let first_text = fs::read_to_string(&first_file).unwrap();
        assert_eq!(
            sink.resume_positions(&[0, 1]).unwrap(),
            Positions::from([(0, 2), (1, 1)])
        );

        // The same name, another topic: its offsets start again at 0.
        let mut sink =
            StageSink::open_for_topic_id(root.path(), "t", Some(new), "consumer_1", false).unwrap();
        assert_eq!(sink.resume_positions(&[0, 1]).unwrap(), Positions::new());
        write(&mut sink, &[record(0, 0), record(0, 1)]);
        assert_eq!(
            fs::read_to_string(&first_file).unwrap(),
            first_text,
            "never overwritten"
        );
        assert!(sink.dir().join(format!("0-0-1.{new}.jsonl")).exists());
        assert_eq!(
            sink.resume_positions(&[0, 1]).unwrap(),
            Positions::from([(0, 2)])
        );
        // A kill between renaming a file and storing the position: the file of the new id counts.
        fs::write(sink.dir().join(format!("1-0-4.{new}.jsonl")), "{}\n").unwrap();
        assert_eq!(
            sink.resume_positions(&[1]).unwrap(),
            Positions::from([(1, 5)])
        );
        // A name that exists is an error, never overwritten.
        let err = sink
            .write(&SinkBatch {
                records: &[
                    record(1, 0),
                    record(1, 1),
                    record(1, 2),
                    record(1, 3),
                    record(1, 4),
                ],
                next_offsets: &Positions::from([(1, 5)]),
                written_at: now(),
            })
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("1-0-4.{new}.jsonl")),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(sink.dir().join(format!("1-0-4.{new}.jsonl"))).unwrap(),
            "{}\n"
        );
    }

    #[test]
    fn files_and_positions_from_before_topic_ids_belong_to_the_current_topic_until_an_id_is_stored()
    {
        let root = tempfile::tempdir().unwrap();
        let id = "00000000-0000-0000-0000-00000000000a";
        // Written by a consumer that did not record ids.
        let mut before = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        write(&mut before, &[record(0, 0), record(0, 1), record(1, 0)]);
        fs::write(before.dir().join("1-1-9.jsonl"), "{}\n").unwrap();
        assert_eq!(
            fs::read_to_string(before.dir().join(".positions/0.json")).unwrap(),
            r#"{"next_offset":2}"#
        );
        let mut sink =
            StageSink::open_for_topic_id(root.path(), "t", Some(id), "consumer_1", false).unwrap();
        assert_eq!(
            sink.resume_positions(&[0, 1]).unwrap(),
            Positions::from([(0, 2), (1, 10)])
        );
        write(&mut sink, &[record(0, 2)]);
        assert_eq!(
            fs::read_to_string(sink.dir().join(".positions/0.json")).unwrap(),
            format!(r#"{{"next_offset":3,"topic_id":"{id}"}}"#)
        );
        // Once the topic is created again, the old files count for neither topic.
        let other = "00000000-0000-0000-0000-00000000000b";
        let mut sink =
            StageSink::open_for_topic_id(root.path(), "t", Some(other), "consumer_1", false)
                .unwrap();
        assert_eq!(sink.resume_positions(&[0]).unwrap(), Positions::new());
        write(&mut sink, &[record(0, 0)]);
        assert_eq!(
            sink.resume_positions(&[0]).unwrap(),
            Positions::from([(0, 1)]),
            "0-0-1.jsonl and 0-2-2.{id}.jsonl are the old topic's"
        );
        // Without a known id everything counts, as before.
        let unknown = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        assert_eq!(
            unknown.resume_positions(&[0, 1]).unwrap(),
            Positions::from([(0, 3), (1, 10)])
        );
    }

    #[test]
    fn one_file_per_partition_and_batch_then_positions() {
        let root = tempfile::tempdir().unwrap();
        let mut sink = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        let records = vec![record(0, 5), record(1, 7), record(0, 6), record(1, 8)];
        sink.write(&SinkBatch {
            records: &records,
            next_offsets: &Positions::from([(0, 7), (1, 9), (2, 4)]),
            written_at: now(),
        })
        .unwrap();
        assert_eq!(
            names(sink.dir()),
            [".positions", "0-5-6.jsonl", "1-7-8.jsonl"]
        );
        let text = fs::read_to_string(sink.dir().join("0-5-6.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["offset"], 6);
        assert_eq!(lines[1]["topic"], "t");
        assert_eq!(lines[1]["written_at"], "2024-05-01T10:00:00.000000Z");
        // Partition 2 only had dead-lettered or filtered records: no file, but a position.
        assert_eq!(
            sink.resume_positions(&[0, 1, 2, 3]).unwrap(),
            Positions::from([(0, 7), (1, 9), (2, 4)])
        );
    }

    #[test]
    fn file_names_cover_a_kill_before_the_position_was_stored() {
        let root = tempfile::tempdir().unwrap();
        let mut sink = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        sink.write(&SinkBatch {
            records: &[record(0, 0)],
            next_offsets: &Positions::from([(0, 1)]),
            written_at: now(),
        })
        .unwrap();
        // A file renamed into place whose position was never stored, and a loader that already
        // took the first file away.
        fs::write(sink.dir().join("0-1-40.jsonl"), "{}\n").unwrap();
        fs::remove_file(sink.dir().join("0-0-0.jsonl")).unwrap();
        // Another slot's half-written file does not count.
        fs::write(sink.dir().join(".0-41-90.jsonl.consumer_2.tmp"), "{").unwrap();
        assert_eq!(
            sink.resume_positions(&[0]).unwrap(),
            Positions::from([(0, 41)])
        );
        // Reopening slot 1 removes its own temporary files only.
        fs::write(sink.dir().join(".0-41-50.jsonl.consumer_1.tmp"), "{").unwrap();
        let sink = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        assert_eq!(
            names(sink.dir()),
            [
                ".0-41-90.jsonl.consumer_2.tmp",
                ".positions",
                "0-1-40.jsonl"
            ]
        );
    }

    #[test]
    fn gzip_files_hold_the_same_lines() {
        let root = tempfile::tempdir().unwrap();
        let mut sink = StageSink::open(root.path(), "t", "consumer_1", true).unwrap();
        sink.write(&SinkBatch {
            records: &[record(2, 10), record(2, 11)],
            next_offsets: &Positions::from([(2, 12)]),
            written_at: now(),
        })
        .unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(sink.dir().join("2-10-11.jsonl.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(r#""id":10,"#), "{text}");
        assert_eq!(
            sink.resume_positions(&[2]).unwrap(),
            Positions::from([(2, 12)])
        );
    }

    #[test]
    fn a_failed_write_is_an_error_naming_the_path() {
        let root = tempfile::tempdir().unwrap();
        let mut sink = StageSink::open(root.path(), "t", "consumer_1", false).unwrap();
        // The topic directory is gone and a file stands in its place.
        fs::remove_dir_all(sink.dir()).unwrap();
        fs::write(sink.dir(), "not a directory").unwrap();
        let err = sink
            .write(&SinkBatch {
                records: &[record(0, 0)],
                next_offsets: &Positions::from([(0, 1)]),
                written_at: now(),
            })
            .unwrap_err();
        assert!(err.to_string().contains("0-0-0.jsonl"), "{err}");
    }
}
