//! Streaming the records of a CSV file from a byte offset, with exact byte positions and line
//! numbers.
//!
//! The parsing is `csv_core`'s (the `csv` crate's engine: RFC 4180 quoting, `\n`, `\r\n` and
//! `\r` line ends, blank lines skipped) over our own buffered file reader, so for every record we
//! know exactly which bytes it took: the byte offset after it (where a restart resumes), the line
//! it starts on (quoted fields may span lines), and its raw text (for reports). Memory is one
//! buffer plus one record, whatever the file size.
//!
//! **Incomplete last line.** A record is complete once its line end is read. At the end of the
//! file, what follows the last line end is a record only when the caller says the file is final
//! (`at_eof_complete = true`, i.e. not following it): a writer appending to the file may not have
//! written the rest of the line yet. Otherwise reading stops before it, and the next call starts
//! it again from its first byte.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A record larger than this (usually a stray opening quote that makes the rest of the file one
/// field) is rejected, and reading resumes at the line after the one it started on.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
const BUFFER_BYTES: usize = 256 * 1024;

/// One record, as the file holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    /// The line (1-based) the record starts on.
    pub line: u64,
    /// Byte offset of the record's first byte.
    pub start: u64,
    /// Byte offset after the record's line end: where reading continues.
    pub end: u64,
    /// The line number at `end`.
    pub end_line: u64,
    /// The fields' bytes, unquoted, back to back; `ends[i]` is where field `i` ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
    /// Set when the record was too large to keep ([`MAX_RECORD_BYTES`]); it has no fields then.
    pub oversized: bool,
}

impl RawRecord {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of field `i`.
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.fields[start..end])
    }

    pub fn fields(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(|i| self.field(i))
    }

    /// A record with these fields (for tests of what consumes records).
    #[cfg(test)]
    pub(crate) fn from_fields(fields: &[&[u8]]) -> Self {
        let mut record = Self::default();
        for field in fields {
            record.fields.extend_from_slice(field);
            record.ends.push(record.fields.len());
        }
        record
    }

    /// A line holding nothing but spaces or tabs (not a record).
    fn is_blank(&self) -> bool {
        self.len() == 1
            && self
                .field(0)
                .is_some_and(|f| f.iter().all(|b| matches!(b, b' ' | b'\t')))
    }
}

/// Why the file could not be read (not: why a record is bad).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read CSV file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Reads records of one file from a byte offset on.
pub struct CsvRecords {
    path: PathBuf,
    file: BufReader<File>,
    core: csv_core::Reader,
    /// Byte offset and line number of the first byte not yet consumed.
    offset: u64,
    line: u64,
    /// The raw bytes of the record being read.
    raw: Vec<u8>,
}

impl CsvRecords {
    /// Opens `path` and positions it at `offset`, which is on line `line`.
    pub fn open(path: &Path, offset: u64, line: u64) -> Result<Self, ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file: BufReader::with_capacity(BUFFER_BYTES, file),
            core: csv_core::Reader::new(),
            offset,
            line,
            raw: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of the next record (after the last one returned).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The line number at [`CsvRecords::offset`].
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The current size of the file.
    pub fn file_len(&self) -> Result<u64, ReadError> {
        self.file
            .get_ref()
            .metadata()
            .map(|m| m.len())
            .map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The next record into `record`; `Ok(false)` when no complete record follows (yet). With
    /// `at_eof_complete`, text after the last line end counts as a complete record.
    pub fn next_record(
        &mut self,
        record: &mut RawRecord,
        at_eof_complete: bool,
    ) -> Result<bool, ReadError> {
        loop {
            if !self.next_raw(record, at_eof_complete)? {
                return Ok(false);
            }
            if !record.is_blank() {
                return Ok(true);
            }
        }
    }

    fn next_raw(
        &mut self,
        record: &mut RawRecord,
        at_eof_complete: bool,
    ) -> Result<bool, ReadError> {
        use csv_core::ReadRecordResult as R;
        self.raw.clear();
        record.fields.clear();
        record.ends.clear();
        record.oversized = false;
        let mut nfields_out = 0usize;
        let mut nends = 0usize;
        loop {
            if record.fields.len() < nfields_out + 1024 {
                record.fields.resize(nfields_out + 1024, 0);
            }
            if record.ends.len() < nends + 16 {
                record.ends.resize(nends + 16, 0);
            }
            let path = &self.path;
            let input = self.file.fill_buf().map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
            let at_eof = input.is_empty();
            if at_eof && !at_eof_complete {
                // Nothing more yet: start this record again next time.
                self.rewind()?;
                return Ok(false);
            }
            let (result, nin, nout, nend) = self.core.read_record(
                input,
                &mut record.fields[nfields_out..],
                &mut record.ends[nends..],
            );
            self.raw.extend_from_slice(&input[..nin]);
            self.file.consume(nin);
            nfields_out += nout;
            nends += nend;
            match result {
                R::InputEmpty | R::OutputFull | R::OutputEndsFull => {
                    if self.raw.len() > MAX_RECORD_BYTES {
                        return self.skip_oversized(record).map(|()| true);
                    }
                }
                R::Record => {
                    record.fields.truncate(nfields_out);
                    record.ends.truncate(nends);
                    self.finish(record);
                    return Ok(true);
                }
                R::End => {
                    self.finish_empty();
                    return Ok(false);
                }
            }
        }
    }

    /// Positions and line numbers of the record whose raw bytes are in `self.raw`.
    fn finish(&mut self, record: &mut RawRecord) {
        let skipped = self
            .raw
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let skipped_newlines = count_newlines(&self.raw[..skipped]);
        record.start = self.offset + skipped as u64;
        record.line = self.line + skipped_newlines;
        self.offset += self.raw.len() as u64;
        self.line += count_newlines(&self.raw);
        record.end = self.offset;
        record.end_line = self.line;
    }

    fn finish_empty(&mut self) {
        self.offset += self.raw.len() as u64;
        self.line += count_newlines(&self.raw);
        self.raw.clear();
    }

    /// Goes back to the first byte of the record being read.
    fn rewind(&mut self) -> Result<(), ReadError> {
        self.raw.clear();
        self.core.reset();
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(|e| self.io_error(e))?;
        Ok(())
    }

    /// A record that grew beyond [`MAX_RECORD_BYTES`]: reported as oversized, and reading
    /// resumes on the line after the one it started on.
    fn skip_oversized(&mut self, record: &mut RawRecord) -> Result<(), ReadError> {
        let skipped = self
            .raw
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let first_line_end = self.raw[skipped..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.raw.len(), |i| skipped + i + 1);
        record.fields.clear();
        record.ends.clear();
        record.oversized = true;
        record.start = self.offset + skipped as u64;
        record.line = self.line + count_newlines(&self.raw[..skipped]);
        self.offset += first_line_end as u64;
        self.line += count_newlines(&self.raw[..first_line_end]);
        record.end = self.offset;
        record.end_line = self.line;
        self.rewind()
    }

    /// The raw text of the record last returned (lossy UTF-8, at most `limit` bytes), for
    /// reports.
    pub fn raw_text(&self, limit: usize) -> String {
        let raw = &self.raw[..self.raw.len().min(limit)];
        let trimmed = raw
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(&raw[..0], |start| &raw[start..]);
        String::from_utf8_lossy(trimmed)
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, text: &[u8]) -> PathBuf {
        let path = dir.path().join("data.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// (line, start, end, fields) of every record.
    fn all(path: &Path, offset: u64, line: u64) -> Vec<(u64, u64, u64, Vec<String>)> {
        let mut records = CsvRecords::open(path, offset, line).unwrap();
        let mut record = RawRecord::default();
        let mut out = Vec::new();
        while records.next_record(&mut record, true).unwrap() {
            let fields = record
                .fields()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            out.push((record.line, record.start, record.end, fields));
        }
        out
    }

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn positions_and_lines_with_every_line_end_quotes_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a,b\r\n1,\"x\ny\"\r\n\r\n\n2,z\r3,\"q\"\"\"\n   \n4,last";
        let path = write(&dir, text);
        let records = all(&path, 0, 1);
        assert_eq!(
            records,
            vec![
                (1, 0, 4, strings(&["a", "b"])),
                (2, 5, 13, strings(&["1", "x\ny"])),
                (6, 17, 21, strings(&["2", "z"])),
                (6, 21, 29, strings(&["3", "q\""])),
                (8, 33, 39, strings(&["4", "last"])),
            ]
        );
        assert_eq!(&text[5..8], b"1,\"");
        assert_eq!(&text[17..20], b"2,z");
        // Resuming at any record's end gives the same records after it.
        for (i, (_, _, end, _)) in records.iter().enumerate() {
            let end_line = 1 + text[..*end as usize]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            assert_eq!(all(&path, *end, end_line), records[i + 1..].to_vec());
        }
    }

    #[test]
    fn an_incomplete_last_line_waits_for_its_line_end_unless_the_file_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, b"h\n1\n2");
        let mut records = CsvRecords::open(&path, 0, 1).unwrap();
        let mut record = RawRecord::default();
        assert!(records.next_record(&mut record, false).unwrap());
        assert!(records.next_record(&mut record, false).unwrap());
        assert_eq!(record.field(0), Some(&b"1"[..]));
        assert!(!records.next_record(&mut record, false).unwrap());
        assert!(
            !records.next_record(&mut record, false).unwrap(),
            "still waiting"
        );
        assert_eq!(records.offset(), 4);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"2,x\n3\n").unwrap();
        assert!(records.next_record(&mut record, false).unwrap());
        assert_eq!(
            (record.line, record.field(0), record.field(1)),
            (3, Some(&b"22"[..]), Some(&b"x"[..]))
        );
        assert!(records.next_record(&mut record, false).unwrap());
        assert_eq!((record.line, record.end), (4, 11));
        assert!(!records.next_record(&mut record, true).unwrap());
        assert_eq!((records.offset(), records.line()), (11, 5));
    }

    #[test]
    fn an_unterminated_quote_is_one_oversized_record_and_reading_resumes_on_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = b"h1,h2\n\"broken,1\n".to_vec();
        let filler = "x,2\n".repeat(MAX_RECORD_BYTES / 4 + 10);
        text.extend_from_slice(filler.as_bytes());
        let path = write(&dir, &text);
        let mut records = CsvRecords::open(&path, 0, 1).unwrap();
        let mut record = RawRecord::default();
        assert!(records.next_record(&mut record, true).unwrap());
        assert!(records.next_record(&mut record, true).unwrap());
        assert!(record.oversized);
        assert_eq!((record.line, record.start, record.end), (2, 6, 16));
        assert!(records.next_record(&mut record, true).unwrap());
        assert!(!record.oversized);
        assert_eq!(record.line, 3);
        assert_eq!(record.field(1), Some(&b"2"[..]));
    }
}
