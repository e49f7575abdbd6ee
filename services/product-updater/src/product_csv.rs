//! Reading and validating the seed CSV, one record at a time.
//!
//! Columns are found by header name (case-insensitive, surrounding spaces and a UTF-8 byte-order
//! mark ignored): `id`, `name` and `price` are required; `category` (empty means NULL) and
//! `last_updated` are optional. `last_updated` is informational: it is validated when present and
//! not empty, but the database stamps every row it stores.
//!
//! A record that does not make a valid product is returned as a [`RejectedRow`] with its line
//! number and reason, and reading goes on. Only a missing file, a bad header or an I/O error
//! stops reading.
//!
//! Duplicate ids: the first row with an id wins; later rows with the same id are rejected as
//! [`RejectReason::DuplicateId`]. To detect them the reader remembers every accepted id (a few
//! bytes per distinct id, about 10 MB for a million rows); everything else streams.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, NaiveDateTime};
use csv::ByteRecord;
use rust_decimal::Decimal;

/// A product as read from the CSV, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub id: i32,
    pub name: String,
    pub category: Option<String>,
    /// Non-negative, at most two decimals, fits `DECIMAL(10,2)`.
    pub price: Decimal,
}

/// A valid CSV record and the line it starts on (the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRow {
    pub line: u64,
    pub product: NewProduct,
}

/// Why a record was skipped. [`RejectReason::label`] is the `reason` label of
/// `product_updater_rows_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// More or fewer fields than the header.
    ColumnCount,
    /// A field is not valid UTF-8.
    NonUtf8,
    /// The id is not a whole number from 1 to 2147483647.
    InvalidId,
    EmptyName,
    /// The name or category is longer than the column's 255 characters.
    ValueTooLong,
    /// The price is not a decimal number (also NaN and infinity).
    InvalidPrice,
    NegativePrice,
    /// The price is above 99999999.99, the largest `DECIMAL(10,2)`.
    PriceOutOfRange,
    /// The price has more than two decimals.
    PriceTooPrecise,
    InvalidTimestamp,
    /// An earlier row of the file has the same id (the first wins).
    DuplicateId,
    /// Valid in the file but refused by the database (for example a constraint).
    DatabaseRejected,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        Self::ColumnCount,
        Self::NonUtf8,
        Self::InvalidId,
        Self::EmptyName,
        Self::ValueTooLong,
        Self::InvalidPrice,
        Self::NegativePrice,
        Self::PriceOutOfRange,
        Self::PriceTooPrecise,
        Self::InvalidTimestamp,
        Self::DuplicateId,
        Self::DatabaseRejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::ColumnCount => "column_count",
            Self::NonUtf8 => "non_utf8",
            Self::InvalidId => "invalid_id",
            Self::EmptyName => "empty_name",
            Self::ValueTooLong => "value_too_long",
            Self::InvalidPrice => "invalid_price",
            Self::NegativePrice => "negative_price",
            Self::PriceOutOfRange => "price_out_of_range",
            Self::PriceTooPrecise => "price_too_precise",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::DuplicateId => "duplicate_id",
            Self::DatabaseRejected => "database_rejected",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A skipped record: where, why, and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    pub reason: RejectReason,
    pub detail: String,
}

/// One record of the file, valid or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvRecord {
    Valid(SeedRow),
    Rejected(RejectedRow),
}

/// Problems that stop reading the file altogether.
#[derive(Debug, thiserror::Error)]
pub enum SeedFileError {
    #[error("cannot open products CSV {path} (PRODUCTS_CSV): {error}")]
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("products CSV {path} has no header line")]
    NoHeader { path: PathBuf },
    #[error("products CSV {path}: the header is not valid UTF-8")]
    HeaderNotUtf8 { path: PathBuf },
    #[error("products CSV {path} has no `{column}` column (header: {header})")]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        header: String,
    },
    #[error("products CSV {path} has the column `{column}` twice")]
    DuplicateColumn { path: PathBuf, column: &'static str },
    #[error("cannot read products CSV {path} near line {line}: {error}")]
    Read {
        path: PathBuf,
        line: u64,
        error: csv::Error,
    },
}

/// The largest `DECIMAL(10,2)`.
pub fn max_price() -> Decimal {
    Decimal::new(9_999_999_999, 2)
}

/// `VARCHAR(255)` counts characters.
const MAX_TEXT_CHARS: usize = 255;

/// Where each column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    id: usize,
    name: usize,
    price: usize,
    category: Option<usize>,
    last_updated: Option<usize>,
    count: usize,
}

impl Columns {
    fn from_header(path: &Path, header: &ByteRecord) -> Result<Self, SeedFileError> {
        if header.is_empty() {
            return Err(SeedFileError::NoHeader { path: path.into() });
        }
        let mut names = Vec::with_capacity(header.len());
        for (i, field) in header.iter().enumerate() {
            let text = std::str::from_utf8(field)
                .map_err(|_| SeedFileError::HeaderNotUtf8 { path: path.into() })?;
            let text = if i == 0 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            };
            names.push(text.trim().to_ascii_lowercase());
        }
        let find = |column: &'static str| -> Result<Option<usize>, SeedFileError> {
            let mut positions = names
                .iter()
                .enumerate()
                .filter(|(_, n)| *n == column)
                .map(|(i, _)| i);
            let first = positions.next();
            if positions.next().is_some() {
                return Err(SeedFileError::DuplicateColumn {
                    path: path.into(),
                    column,
                });
            }
            Ok(first)
        };
        let require = |column: &'static str| -> Result<usize, SeedFileError> {
            find(column)?.ok_or_else(|| SeedFileError::MissingColumn {
                path: path.into(),
                column,
                header: names.join(","),
            })
        };
        Ok(Self {
            id: require("id")?,
            name: require("name")?,
            price: require("price")?,
            category: find("category")?,
            last_updated: find("last_updated")?,
            count: header.len(),
        })
    }

    /// Validates one record into a product, or says why it cannot be one.
    fn product(&self, record: &ByteRecord) -> Result<NewProduct, (RejectReason, String)> {
        if record.len() != self.count {
            return Err((
                RejectReason::ColumnCount,
                format!("{} fields, the header has {}", record.len(), self.count),
            ));
        }
        let field = |index: usize| -> Result<&str, (RejectReason, String)> {
            let bytes = record.get(index).unwrap_or_default();
            std::str::from_utf8(bytes).map(str::trim).map_err(|e| {
                (
                    RejectReason::NonUtf8,
                    format!("field {} is not valid UTF-8: {e}", index + 1),
                )
            })
        };
        // Check every field's encoding first, so a row is reported as non-UTF-8 whichever field it is.
        for index in 0..record.len() {
            field(index)?;
        }
        let id = parse_id(field(self.id)?)?;
        let name = field(self.name)?;
        if name.is_empty() {
            return Err((RejectReason::EmptyName, "the name is empty".into()));
        }
        check_length("name", name)?;
        let category = match self.category {
            Some(index) => Some(field(index)?).filter(|c| !c.is_empty()),
            None => None,
        };
        if let Some(category) = category {
            check_length("category", category)?;
        }
        let price = parse_price(field(self.price)?)?;
        if let Some(index) = self.last_updated {
            check_timestamp(field(index)?)?;
        }
        Ok(NewProduct {
            id,
            name: name.to_owned(),
            category: category.map(str::to_owned),
            price,
        })
    }
}

fn parse_id(text: &str) -> Result<i32, (RejectReason, String)> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 && id <= i64::from(i32::MAX) => Ok(i32::try_from(id).unwrap_or(i32::MAX)),
        Ok(id) => Err((
            RejectReason::InvalidId,
            format!("id {id} is not from 1 to 2147483647"),
        )),
        Err(_) => Err((
            RejectReason::InvalidId,
            format!("id {text:?} is not a whole number"),
        )),
    }
}

fn check_length(column: &str, value: &str) -> Result<(), (RejectReason, String)> {
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        Err((
            RejectReason::ValueTooLong,
            format!("the {column} has {chars} characters, at most {MAX_TEXT_CHARS} fit"),
        ))
    } else {
        Ok(())
    }
}

fn parse_price(text: &str) -> Result<Decimal, (RejectReason, String)> {
    let price = Decimal::from_str(text).map_err(|_| {
        let detail = match text.parse::<f64>() {
            Ok(value) if !value.is_finite() => format!("price {text:?} is not a finite number"),
            _ => format!("price {text:?} is not a decimal number"),
        };
        (RejectReason::InvalidPrice, detail)
    })?;
    if price.is_sign_negative() && !price.is_zero() {
        return Err((
            RejectReason::NegativePrice,
            format!("price {text} is negative"),
        ));
    }
    if price > max_price() {
        return Err((
            RejectReason::PriceOutOfRange,
            format!("price {text} is above {}", max_price()),
        ));
    }
    if price.normalize().scale() > 2 {
        return Err((
            RejectReason::PriceTooPrecise,
            format!("price {text} has more than two decimals"),
        ));
    }
    if price.is_zero() {
        return Ok(Decimal::ZERO);
    }
    Ok(price)
}

/// Accepts `YYYY-MM-DD HH:MM:SS` with optional fractional seconds, the same with `T`, and RFC 3339.
/// An empty value is allowed: the column is informational.
fn check_timestamp(text: &str) -> Result<(), (RejectReason, String)> {
    let valid = text.is_empty()
        || [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M:%S%.f",
        ]
        .iter()
        .any(|format| NaiveDateTime::parse_from_str(text, format).is_ok())
        || DateTime::parse_from_rfc3339(text).is_ok();
    if valid {
        Ok(())
    } else {
        Err((
            RejectReason::InvalidTimestamp,
            format!("last_updated {text:?} is not a timestamp like 2023-10-13 10:01:05"),
        ))
    }
}

/// Streams the records of a products CSV, validating each.
pub struct ProductCsvReader<R> {
    path: PathBuf,
    reader: csv::Reader<NewlineTracker<R>>,
    newlines: Arc<Mutex<NewlineIndex>>,
    columns: Columns,
    record: ByteRecord,
    seen_ids: HashSet<i32>,
}

impl ProductCsvReader<BufReader<File>> {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, SeedFileError> {
        let file = File::open(path).map_err(|error| SeedFileError::Open {
            path: path.into(),
            error,
        })?;
        Self::from_reader(path, BufReader::with_capacity(256 * 1024, file))
    }
}

impl<R: Read> ProductCsvReader<R> {
    /// Reads CSV from `input`; `path` names it in errors.
    pub fn from_reader(path: &Path, input: R) -> Result<Self, SeedFileError> {
        let newlines = Arc::new(Mutex::new(NewlineIndex::default()));
        let tracker = NewlineTracker {
            inner: input,
            newlines: Arc::clone(&newlines),
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(tracker);
        let header = reader.byte_headers().map_err(|error| SeedFileError::Read {
            path: path.into(),
            line: 1,
            error,
        })?;
        let columns = Columns::from_header(path, header)?;
        Ok(Self {
            path: path.into(),
            reader,
            newlines,
            columns,
            record: ByteRecord::new(),
            seen_ids: HashSet::new(),
        })
    }

    /// The next record, `None` at the end of the file.
    pub fn next_record(&mut self) -> Option<Result<CsvRecord, SeedFileError>> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(error) => {
                    let line = self.line_of_last_consumed_byte();
                    return Some(Err(SeedFileError::Read {
                        path: self.path.clone(),
                        line,
                        error,
                    }));
                }
            }
            let line = self.first_line_of_record();
            // A line with nothing but spaces on it is not a record.
            if self.record.len() == 1
                && self
                    .record
                    .get(0)
                    .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
            {
                continue;
            }
            let outcome = match self.columns.product(&self.record) {
                Ok(product) if !self.seen_ids.insert(product.id) => {
                    CsvRecord::Rejected(RejectedRow {
                        line,
                        reason: RejectReason::DuplicateId,
                        detail: format!(
                            "id {} already appeared earlier in the file (the first row wins)",
                            product.id
                        ),
                    })
                }
                Ok(product) => CsvRecord::Valid(SeedRow { line, product }),
                Err((reason, detail)) => CsvRecord::Rejected(RejectedRow {
                    line,
                    reason,
                    detail,
                }),
            };
            return Some(Ok(outcome));
        }
    }

    /// The line the record just read starts on. (The csv crate's own `Position::line` is taken
    /// before skipped blank lines and the `\n` of a `\r\n`, so it can be early.) The record ends on
    /// the line of the last byte the reader consumed; it starts as many lines earlier as it has
    /// quoted newlines.
    fn first_line_of_record(&self) -> u64 {
        let quoted_newlines = self
            .record
            .as_slice()
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        self.line_of_last_consumed_byte()
            .saturating_sub(quoted_newlines)
            .max(1)
    }

    fn line_of_last_consumed_byte(&self) -> u64 {
        let consumed = self.reader.position().byte();
        let mut newlines = self.newlines.lock().unwrap_or_else(PoisonError::into_inner);
        1 + newlines.newlines_before(consumed.saturating_sub(1))
    }
}

impl<R: Read> Iterator for ProductCsvReader<R> {
    type Item = Result<CsvRecord, SeedFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Byte offsets of the newlines read from the input but not yet passed by the CSV reader (which
/// reads ahead), and how many newlines lie before them. Bounded by the read-ahead.
#[derive(Debug, Default)]
struct NewlineIndex {
    bytes_read: u64,
    pending: VecDeque<u64>,
    passed: u64,
}

impl NewlineIndex {
    /// How many newlines lie before byte `offset`. Offsets must not decrease between calls.
    fn newlines_before(&mut self, offset: u64) -> u64 {
        while self.pending.front().is_some_and(|&at| at < offset) {
            self.pending.pop_front();
            self.passed += 1;
        }
        self.passed
    }
}

/// Passes the input through, noting where the newlines are.
struct NewlineTracker<R> {
    inner: R,
    newlines: Arc<Mutex<NewlineIndex>>,
}

impl<R: Read> Read for NewlineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.newlines.lock().unwrap_or_else(PoisonError::into_inner);
        let start = index.bytes_read;
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            index.pending.push_back(start + i as u64);
        }
        index.bytes_read += n as u64;
        Ok(n)
    }
}
