//! The watermark file (`WATERMARK_PATH`): how far capture got, durably.
//!
//! ```json
//! {
//!   "last_read_timestamp": "2023-10-13 10:01:05.000000",
//!   "last_read_id": 1,                                 // or "P0001" for a text id
//!   "topic": "product_updates",
//!   "next_offsets": {"0": 12, "1": 7},
//!   "updated_at": "2024-05-01T12:00:00.000000Z"
//! }
//! ```
//!
//! * `last_read_timestamp` + `last_read_id`: every row up to this `(last_updated, id)` position
//!   has been acknowledged by Kafka. `null` (or a missing file) means "from the beginning"; a
//!   timestamp without an id (the original prototype's file) means "rows after that timestamp".
//!   The id is a JSON number for integer id columns and a JSON string for text id columns.
//! * `next_offsets`: per partition of `topic`, the offset from which records of rows *after* the
//!   position may be found. On start the producer reads the topic from there to the end and does
//!   not produce those rows again, so a kill at any moment causes no duplicates.
//!
//! The file is replaced atomically: written to a temporary file in the same directory, fsynced,
//! renamed over the old one, and the directory fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::position::{Position, RowKey};

/// The timestamp format of `last_read_timestamp` (always written with 6 fraction digits).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

#[derive(Debug, thiserror::Error)]
pub enum WatermarkError {
    #[error(
        "watermark file {path} is corrupt: {reason}. Fix or delete it (deleting restarts capture \
         from the beginning of the table)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read watermark file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write watermark file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The durable capture state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watermark {
    /// Everything up to here is acknowledged; `None` = nothing yet (start from the beginning).
    pub position: Option<Position>,
    /// The topic `next_offsets` refers to.
    pub topic: Option<String>,
    /// Partition -> offset from which records after `position` may be found.
    pub next_offsets: BTreeMap<i32, i64>,
}

impl Watermark {
    /// Parses the file's text. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, WatermarkError> {
        let corrupt = |reason: String| WatermarkError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
        let Value::Object(fields) = value else {
            return Err(corrupt("expected a JSON object".into()));
        };
        let timestamp = match fields.get("last_read_timestamp") {
            None => return Err(corrupt(
                "the field last_read_timestamp is missing (use null to start from the beginning)"
                    .into(),
            )),
            Some(Value::Null) => None,
            Some(Value::String(text)) => Some(parse_timestamp(text).ok_or_else(|| {
                corrupt(format!(
                    "last_read_timestamp {text:?} is not a YYYY-MM-DD HH:MM:SS[.ffffff] timestamp"
                ))
            })?),
            Some(other) => {
                return Err(corrupt(format!(
                    "last_read_timestamp must be a string or null, not {other}"
                )))
            }
        };
        let id = match fields.get("last_read_id") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                Some(RowKey::Int(n.as_i64().ok_or_else(|| {
                    corrupt(format!("last_read_id {n} is not a whole number"))
                })?))
            }
            Some(Value::String(id)) => Some(RowKey::Text(id.clone())),
            Some(other) => {
                return Err(corrupt(format!(
                    "last_read_id must be a whole number, a string or null, not {other}"
                )))
            }
        };
        let position = match (timestamp, id) {
            (Some(t), Some(id)) => Some(Position::new(t, id)),
            (Some(t), None) => Some(Position::after_timestamp(t)),
            (None, Some(_)) => {
                return Err(corrupt(
                    "last_read_id is set but last_read_timestamp is null".into(),
                ))
            }
            (None, None) => None,
        };
        let topic = match fields.get("topic") {
            None | Some(Value::Null) => None,
            Some(Value::String(topic)) => Some(topic.clone()),
            Some(other) => return Err(corrupt(format!("topic must be a string, not {other}"))),
        };
        let next_offsets = match fields.get("next_offsets") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => parse_offsets(map).map_err(corrupt)?,
            Some(other) => {
                return Err(corrupt(format!(
                    "next_offsets must be an object, not {other}"
                )))
            }
        };
        Ok(Self {
            position,
            topic,
            next_offsets,
        })
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let (timestamp, id) = match &self.position {
            None => (Value::Null, Value::Null),
            Some(p) => (
                Value::String(p.last_updated.format(TIMESTAMP_FORMAT).to_string()),
                match &p.id {
                    None => Value::Null,
                    Some(RowKey::Int(id)) => json!(id),
                    Some(RowKey::Text(id)) => json!(id),
                },
            ),
        };
        let offsets: Map<String, Value> = self
            .next_offsets
            .iter()
            .map(|(partition, offset)| (partition.to_string(), json!(offset)))
            .collect();
        let value = json!({
            "last_read_timestamp": timestamp,
            "last_read_id": id,
            "topic": self.topic,
            "next_offsets": offsets,
            "updated_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let mut text = serde_json::to_string_pretty(&value).expect("a JSON value serializes");
        text.push('\n');
        text
    }

    /// Reads the file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, WatermarkError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(WatermarkError::Corrupt {
                path: path.to_owned(),
                reason: "not UTF-8 text".into(),
            }),
            Err(source) => Err(WatermarkError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Replaces the file at `path` atomically and durably (creating its directory if needed).
    pub fn store(&self, path: &Path) -> Result<(), WatermarkError> {
        write_atomically(path, self.to_json().as_bytes()).map_err(|source| WatermarkError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS` with an optional fraction of up to 9 digits.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

fn parse_offsets(map: &Map<String, Value>) -> Result<BTreeMap<i32, i64>, String> {
    map.iter()
        .map(|(partition, offset)| {
            let p: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
                format!("next_offsets key {partition:?} is not a partition number")
            })?;
            let o = offset
                .as_i64()
                .filter(|o| *o >= 0)
                .ok_or_else(|| format!("next_offsets[{partition}] = {offset} is not an offset"))?;
            Ok((p, o))
        })
        .collect()
}

/// Writes `contents` to a temporary file next to `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory, so `path` always holds either the old or the new contents, even after a
/// crash or power loss.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        parse_timestamp(s).unwrap()
    }

    fn parse(text: &str) -> Result<Watermark, WatermarkError> {
        Watermark::parse(text, Path::new("wm.json"))
    }

    #[test]
    fn null_means_from_the_beginning() {
        assert_eq!(
            parse(r#"{"last_read_timestamp": null}"#).unwrap(),
            Watermark::default()
        );
    }

    #[test]
    fn the_prototype_file_means_rows_after_the_timestamp() {
        let wm = parse(r#"{"last_read_timestamp": "2023-10-13 10:01:05"}"#).unwrap();
        assert_eq!(
            wm.position,
            Some(Position::after_timestamp(t("2023-10-13 10:01:05")))
        );
        assert!(wm.next_offsets.is_empty());
    }

    #[test]
    fn full_file_round_trips() {
        let wm = Watermark {
            position: Some(Position::new(t("2023-10-13 10:01:05.123456"), 42)),
            topic: Some("product_updates".into()),
            next_offsets: BTreeMap::from([(0, 12), (9, 0)]),
        };
        let text = wm.to_json();
        assert!(
            text.contains(r#""last_read_timestamp": "2023-10-13 10:01:05.123456""#),
            "{text}"
        );
        assert!(text.contains(r#""last_read_id": 42"#), "{text}");
        assert_eq!(parse(&text).unwrap(), wm);

        let whole_second = Watermark {
            position: Some(Position::new(t("2023-10-13 10:01:05"), 1)),
            ..Watermark::default()
        };
        assert!(whole_second.to_json().contains("10:01:05.000000"));
        assert_eq!(parse(&whole_second.to_json()).unwrap(), whole_second);

        let timestamp_only = Watermark {
            position: Some(Position::after_timestamp(t("2023-10-13 10:01:05"))),
            ..Watermark::default()
        };
        assert!(timestamp_only.to_json().contains(r#""last_read_id": null"#));
        assert_eq!(parse(&timestamp_only.to_json()).unwrap(), timestamp_only);

        let text_id = Watermark {
            position: Some(Position::new(t("2023-10-13 10:01:05"), "P0042")),
            ..Watermark::default()
        };
        assert!(text_id.to_json().contains(r#""last_read_id": "P0042""#));
        assert_eq!(parse(&text_id.to_json()).unwrap(), text_id);
        // A text id of digits stays text; a number stays a number (old files keep working).
        let digits =
            parse(r#"{"last_read_timestamp": "2023-10-13 10:01:05", "last_read_id": "7"}"#)
                .unwrap();
        assert_eq!(digits.position.unwrap().id, Some(RowKey::Text("7".into())));
        let number =
            parse(r#"{"last_read_timestamp": "2023-10-13 10:01:05", "last_read_id": 7}"#).unwrap();
        assert_eq!(number.position.unwrap().id, Some(RowKey::Int(7)));
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file_and_the_problem() {
        let cases = [
            ("", "not valid JSON"),
            (
                "{\"last_read_timestamp\": \"2023-10-13 10:01",
                "not valid JSON",
            ),
            ("[]", "JSON object"),
            ("{}", "last_read_timestamp is missing"),
            (r#"{"last_read_timestamp": "yesterday"}"#, "YYYY-MM-DD"),
            (r#"{"last_read_timestamp": 1697191265}"#, "string or null"),
            (
                r#"{"last_read_timestamp": null, "last_read_id": 3}"#,
                "last_read_id is set",
            ),
            (
                r#"{"last_read_timestamp": "2023-10-13 10:01:05", "last_read_id": 3.5}"#,
                "whole number",
            ),
            (
                r#"{"last_read_timestamp": "2023-10-13 10:01:05", "last_read_id": [3]}"#,
                "a string or null",
            ),
            (
                r#"{"last_read_timestamp": null, "next_offsets": {"zero": 1}}"#,
                "partition number",
            ),
            (
                r#"{"last_read_timestamp": null, "next_offsets": {"0": -1}}"#,
                "not an offset",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("wm.json"), "{text:?}: {err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn load_and_store_use_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("nested/time_track/last_read_timestamp.json");
        assert_eq!(
            Watermark::load(&path).unwrap(),
            None,
            "a missing file is not an error"
        );

        let wm = Watermark {
            position: Some(Position::new(t("2024-01-02 03:04:05.000006"), 7)),
            topic: Some("t".into()),
            next_offsets: BTreeMap::from([(3, 100)]),
        };
        wm.store(&path).unwrap();
        assert_eq!(Watermark::load(&path).unwrap(), Some(wm.clone()));

        let newer = Watermark {
            position: Some(Position::new(t("2024-01-02 03:04:06"), 8)),
            ..wm
        };
        newer.store(&path).unwrap();
        assert_eq!(Watermark::load(&path).unwrap(), Some(newer));
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary files left behind: {leftovers:?}"
        );

        fs::write(&path, "{\"last_read_timestamp\": ").unwrap();
        let err = Watermark::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");

        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            Watermark::load(&path),
            Err(WatermarkError::Corrupt { .. })
        ));
    }
}
