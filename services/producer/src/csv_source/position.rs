//! The CSV position file (`WATERMARK_PATH`, default `time_track/csv_position.json`): how far into
//! which file the producer got, durably.
//!
//! ```json
//! {
//!   "csv_path": "/srv/productstream/data/customers.csv",
//!   "byte_offset": 5183,
//!   "line": 101,
//!   "fingerprint": {"head_bytes": 1024, "head_sha256": "…", "tail_bytes": 1024, "tail_sha256": "…"},
//!   "topic": "ecommerce",
//!   "next_offsets": {"0": 12, "1": 9},
//!   "updated_at": "2024-05-01T12:00:00.000000Z"
//! }
//! ```
//!
//! * Every record before `byte_offset` (which is on line `line`) has been acknowledged by Kafka.
//! * `fingerprint`: SHA-256 of the file's first `head_bytes` bytes (the header and the first
//!   rows) and of the `tail_bytes` bytes just before `byte_offset`, both at most 1 KiB. On start
//!   they must still match, and the file must still be at least `byte_offset` long: a different
//!   file under the same path, or a truncated or rewritten one, is a start-up error, not a silent
//!   skip. Appending rows keeps the fingerprint valid.
//! * `next_offsets`: per partition of `topic`, the offset from which records of rows after
//!   `byte_offset` may be found; the read-back after a restart starts there.
//!
//! Written with [`crate::watermark::write_atomically`] (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::watermark::write_atomically;

/// At most this many bytes are hashed at the head and before the offset.
const FINGERPRINT_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    #[error(
        "CSV position file {path} is corrupt: {reason}. Fix or delete it (deleting sends the \
         whole file again)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read CSV position file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write CSV position file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "CSV position file {position_file} belongs to {recorded}, not to CSV_PATH {configured}. \
         Use another WATERMARK_PATH for another file, or delete {position_file} to send \
         {configured} from its start"
    )]
    OtherFile {
        position_file: PathBuf,
        recorded: PathBuf,
        configured: PathBuf,
    },
    #[error(
        "CSV file {csv} changed since {position_file} was written: {what}. It is not the file \
         whose first {offset} bytes were sent (rewritten, truncated or replaced?). Delete \
         {position_file} to send it from its start"
    )]
    FileChanged {
        csv: PathBuf,
        position_file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("cannot read CSV file {path} to check it: {source}")]
    CsvRead { path: PathBuf, source: io::Error },
}

/// Identifies the part of a file that was already sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub head_bytes: u64,
    pub head_sha256: String,
    pub tail_bytes: u64,
    pub tail_sha256: String,
}

impl Fingerprint {
    /// The fingerprint of the first `offset` bytes of `file`.
    pub fn of(file: &mut File, offset: u64) -> io::Result<Self> {
        let head_bytes = offset.min(FINGERPRINT_BYTES);
        let tail_bytes = offset.min(FINGERPRINT_BYTES);
        Ok(Self {
            head_bytes,
            head_sha256: hash_range(file, 0, head_bytes)?,
            tail_bytes,
            tail_sha256: hash_range(file, offset - tail_bytes, tail_bytes)?,
        })
    }
}

fn hash_range(file: &mut File, start: u64, len: u64) -> io::Result<String> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file is shorter than the fingerprinted range",
        ));
    }
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The durable CSV position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvPosition {
    /// The file (absolute path).
    pub csv_path: PathBuf,
    /// Where the next record starts; everything before is acknowledged.
    pub byte_offset: u64,
    /// The line number at `byte_offset`.
    pub line: u64,
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub next_offsets: BTreeMap<i32, i64>,
}

impl CsvPosition {
    /// The start of `csv_path` (nothing sent yet).
    pub fn start(csv_path: PathBuf) -> Self {
        Self {
            csv_path,
            byte_offset: 0,
            line: 1,
            fingerprint: Fingerprint {
                head_bytes: 0,
                head_sha256: hash_bytes(b""),
                tail_bytes: 0,
                tail_sha256: hash_bytes(b""),
            },
            topic: None,
            next_offsets: BTreeMap::new(),
        }
    }

    /// Parses the file's text. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PositionError> {
        let position: Self = serde_json::from_str(text).map_err(|e| PositionError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let corrupt = |reason: String| PositionError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if position.line == 0 {
            return Err(corrupt("line must be 1 or more".into()));
        }
        let f = &position.fingerprint;
        if f.head_bytes > position.byte_offset.min(FINGERPRINT_BYTES)
            || f.tail_bytes > position.byte_offset.min(FINGERPRINT_BYTES)
        {
            return Err(corrupt(
                "the fingerprint covers more bytes than byte_offset".into(),
            ));
        }
        if let Some((p, o)) = position
            .next_offsets
            .iter()
            .find(|(p, o)| **p < 0 || **o < 0)
        {
            return Err(corrupt(format!("next_offsets[{p}] = {o} is not an offset")));
        }
        Ok(position)
    }

    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("the position serializes");
        value["updated_at"] = Utc::now()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into();
        let mut text = serde_json::to_string_pretty(&value).expect("a JSON value serializes");
        text.push('\n');
        text
    }

    /// Reads the file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, PositionError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(PositionError::Corrupt {
                path: path.to_owned(),
                reason: "not UTF-8 text".into(),
            }),
            Err(source) => Err(PositionError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Replaces the file at `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<(), PositionError> {
        write_atomically(path, self.to_json().as_bytes()).map_err(|source| PositionError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks that this position belongs to `csv_path` (absolute) and that the file still
    /// holds the bytes it was taken on. `position_file` names the position file in errors.
    pub fn check_file(&self, csv_path: &Path, position_file: &Path) -> Result<(), PositionError> {
        if self.csv_path != csv_path {
            return Err(PositionError::OtherFile {
                position_file: position_file.to_owned(),
                recorded: self.csv_path.clone(),
                configured: csv_path.to_owned(),
            });
        }
        let changed = |what: String| PositionError::FileChanged {
            csv: csv_path.to_owned(),
            position_file: position_file.to_owned(),
            offset: self.byte_offset,
            what,
        };
        let csv_error = |source| PositionError::CsvRead {
            path: csv_path.to_owned(),
            source,
        };
        let mut file = File::open(csv_path).map_err(csv_error)?;
        let size = file.metadata().map_err(csv_error)?.len();
        if size < self.byte_offset {
            return Err(changed(format!(
                "it has {size} bytes, fewer than the {} already sent",
                self.byte_offset
            )));
        }
        let f = &self.fingerprint;
        let head = hash_range(&mut file, 0, f.head_bytes).map_err(csv_error)?;
        if head != f.head_sha256 {
            return Err(changed(format!("its first {} bytes differ", f.head_bytes)));
        }
        let tail = hash_range(&mut file, self.byte_offset - f.tail_bytes, f.tail_bytes)
            .map_err(csv_error)?;
        if tail != f.tail_sha256 {
            return Err(changed(format!(
                "the {} bytes before byte {} differ",
                f.tail_bytes, self.byte_offset
            )));
        }
        Ok(())
    }
}

fn hash_bytes(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn position_of(csv: &Path, offset: u64, line: u64) -> CsvPosition {
        let mut file = File::open(csv).unwrap();
        CsvPosition {
            csv_path: csv.to_owned(),
            byte_offset: offset,
            line,
            fingerprint: Fingerprint::of(&mut file, offset).unwrap(),
            topic: Some("ecommerce".into()),
            next_offsets: BTreeMap::from([(0, 12), (3, 0)]),
        }
    }

    #[test]
    fn round_trips_through_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("c.csv");
        std::fs::write(&csv, "id,name\n1,a\n2,b\n").unwrap();
        let path = dir.path().join("time_track/csv_position.json");
        assert!(CsvPosition::load(&path).unwrap().is_none());
        let position = position_of(&csv, 12, 3);
        position.store(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for field in [
            "csv_path",
            "byte_offset",
            "line",
            "head_sha256",
            "next_offsets",
            "updated_at",
        ] {
            assert!(text.contains(field), "{text}");
        }
        assert_eq!(CsvPosition::load(&path).unwrap(), Some(position.clone()));
        position.check_file(&csv, &path).unwrap();
    }

    #[test]
    fn appended_rows_keep_it_valid_but_other_contents_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("c.csv");
        let pos_file = dir.path().join("p.json");
        let rows: String = (0..200).map(|i| format!("{i},name_{i}\n")).collect();
        std::fs::write(&csv, format!("id,name\n{rows}")).unwrap();
        let position = position_of(&csv, 1500, 150);
        assert_eq!(position.fingerprint.head_bytes, 1024);

        let mut file = std::fs::OpenOptions::new().append(true).open(&csv).unwrap();
        file.write_all(b"999,appended\n").unwrap();
        position.check_file(&csv, &pos_file).unwrap();

        let other = dir.path().join("other.csv");
        std::fs::write(&other, "x").unwrap();
        let err = position
            .check_file(&other, &pos_file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("belongs to") && err.contains("other.csv"),
            "{err}"
        );

        std::fs::write(&csv, "id,name\n1,a\n").unwrap();
        let err = position
            .check_file(&csv, &pos_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fewer than the 1500 already sent"), "{err}");

        std::fs::write(
            &csv,
            format!("id,name\n{rows}").replace("name_100", "NAME_100"),
        )
        .unwrap();
        let err = position
            .check_file(&csv, &pos_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("before byte 1500 differ"), "{err}");

        std::fs::write(&csv, format!("ID,name\n{rows}")).unwrap();
        let err = position
            .check_file(&csv, &pos_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("first 1024 bytes differ"), "{err}");
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let valid = CsvPosition::start(PathBuf::from("/d/c.csv")).to_json();
        assert!(CsvPosition::parse(&valid, Path::new("p.json")).is_ok());
        let cases = [
            ("", "EOF"),
            ("[]", "expected struct"),
            (r#"{"csv_path": "/d/c.csv"}"#, "missing field"),
            (
                &valid.replace(r#""byte_offset": 0"#, r#""byte_offset": -1"#),
                "invalid value",
            ),
            (
                &valid.replace(r#""line": 1"#, r#""line": 0"#),
                "line must be",
            ),
            (
                &valid.replace(r#""head_bytes": 0"#, r#""head_bytes": 5"#),
                "covers more bytes",
            ),
            (
                &valid.replace(r#""next_offsets": {}"#, r#""next_offsets": {"0": -4}"#),
                "not an offset",
            ),
        ];
        for (text, expected) in cases {
            let err = CsvPosition::parse(text, Path::new("p.json"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("p.json") && err.contains(expected),
                "{text}: {err}"
            );
        }
    }
}
