//! From a CSV record to a Kafka record: the key is the key column's text; the value is a JSON
//! object (typed cells) or an Avro record of `VALUE_SCHEMA` in the Confluent wire format. A
//! record that cannot become one is a [`Rejection`] with a reason and a detail naming the column.
//!
//! **JSON typing** (one object per row, keys in header order):
//!
//! | cell | JSON |
//! |---|---|
//! | empty | `null` |
//! | `true` / `false`, any case (`True`, `FALSE`) | boolean |
//! | a JSON number literal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (`42`, `-7`, `19.99`, `1e6`) | number, written exactly as in the file (no rounding) |
//! | anything else, including `007`, `+5`, `.5`, `1,5`, ` 42` | string, as in the file |
//!
//! **Avro**: every field of the record schema is filled from the column of the same name,
//! converted to the field's type: `boolean` (`true`/`false`, any case), `int`, `long`, `float`,
//! `double` (finite), `string`, `bytes` (the text's UTF-8), `enum` (a symbol), `date`
//! (`YYYY-MM-DD`), `timestamp-millis` / `timestamp-micros` (`YYYY-MM-DD HH:MM:SS[.f]`, also with
//! `T`, or RFC 3339; UTC unless an offset is given), and unions of those with `null`: an empty cell
//! is `null`, otherwise the first branch that converts wins. A field without a column takes its
//! default (or `null` when nullable); otherwise the schema is refused at start-up, as are field
//! types a cell cannot fill (records, arrays, maps, fixed, decimal). Columns without a field are
//! not sent.

use std::collections::HashSet;

use apache_avro::schema::{RecordField, Schema};
use apache_avro::types::Value as Avro;
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use super::records::RawRecord;

/// Why a record was not produced. The label is the `reason` of `producer_rows_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// More or fewer fields than the header.
    ColumnCount,
    /// A field is not valid UTF-8.
    NonUtf8,
    /// The key column is empty.
    EmptyKey,
    /// A cell cannot be converted to its Avro field's type.
    InvalidValue,
    /// The record is larger than [`super::records::MAX_RECORD_BYTES`] (usually a stray quote).
    RecordTooLarge,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        Self::ColumnCount,
        Self::NonUtf8,
        Self::EmptyKey,
        Self::InvalidValue,
        Self::RecordTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::ColumnCount => "column_count",
            Self::NonUtf8 => "non_utf8",
            Self::EmptyKey => "empty_key",
            Self::InvalidValue => "invalid_value",
            Self::RecordTooLarge => "record_too_large",
        }
    }
}

/// A record that cannot be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

fn reject(reason: RejectReason, detail: String) -> Rejection {
    Rejection { reason, detail }
}

/// A header or schema the file cannot be streamed with (a start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the header has no column {key:?} (CSV_KEY_COLUMN); its columns are: {}", .header.join(", "))]
    MissingKeyColumn { key: String, header: Vec<String> },
    #[error("the header names column {0:?} twice")]
    DuplicateColumn(String),
    #[error("VALUE_SCHEMA {path}: {reason}")]
    Schema { path: String, reason: String },
}

/// The header: column names and which one is the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub names: Vec<String>,
    pub key: usize,
}

impl Columns {
    /// Reads the header record. Names are trimmed; a UTF-8 byte-order mark is ignored.
    pub fn from_header(header: &RawRecord, key_column: &str) -> Result<Self, LayoutError> {
        let mut names = Vec::with_capacity(header.len());
        for (i, field) in header.fields().enumerate() {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            names.push(String::from_utf8_lossy(field).trim().to_owned());
        }
        let mut seen = HashSet::new();
        if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(LayoutError::DuplicateColumn(dup.clone()));
        }
        let key = names.iter().position(|n| n == key_column).ok_or_else(|| {
            LayoutError::MissingKeyColumn {
                key: key_column.to_owned(),
                header: names.clone(),
            }
        })?;
        Ok(Self { names, key })
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// A record ready to be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRow {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Turns records into keys and values.
pub struct RowEncoder {
    columns: Columns,
    format: Format,
}

enum Format {
    /// The JSON object keys, already escaped and followed by `:`.
    Json {
        keys: Vec<String>,
    },
    Avro(AvroPlan),
}

impl RowEncoder {
    pub fn json(columns: Columns) -> Self {
        let keys = columns
            .names
            .iter()
            .map(|n| format!("{}:", serde_json::Value::String(n.clone())))
            .collect();
        Self {
            columns,
            format: Format::Json { keys },
        }
    }

    /// Plans the Avro record of `schema_text` (read from `path`, named in errors).
    pub fn avro(columns: Columns, schema_text: &str, path: &str) -> Result<Self, LayoutError> {
        let plan = AvroPlan::new(&columns, schema_text).map_err(|reason| LayoutError::Schema {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self {
            columns,
            format: Format::Avro(plan),
        })
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The Avro schema registered as the value schema, if the values are Avro.
    pub fn avro_schema(&self) -> Option<&Schema> {
        match &self.format {
            Format::Avro(plan) => Some(&plan.schema),
            Format::Json { .. } => None,
        }
    }

    /// The key and value of `record` (`schema_id`: the registered id, used for Avro values).
    pub fn encode(&self, record: &RawRecord, schema_id: u32) -> Result<EncodedRow, Rejection> {
        if record.oversized {
            return Err(reject(
                RejectReason::RecordTooLarge,
                format!(
                    "the record is larger than {} bytes (an unbalanced quote?); skipped up to the \
                     end of its first line",
                    super::records::MAX_RECORD_BYTES
                ),
            ));
        }
        if record.len() != self.columns.names.len() {
            return Err(reject(
                RejectReason::ColumnCount,
                format!(
                    "the row has {} fields, the header {}",
                    record.len(),
                    self.columns.names.len()
                ),
            ));
        }
        let mut cells = Vec::with_capacity(record.len());
        for (i, field) in record.fields().enumerate() {
            cells.push(std::str::from_utf8(field).map_err(|e| {
                reject(
                    RejectReason::NonUtf8,
                    format!("column {} is not valid UTF-8 ({e})", self.columns.names[i]),
                )
            })?);
        }
        let key = cells[self.columns.key];
        if key.trim().is_empty() {
            return Err(reject(
                RejectReason::EmptyKey,
                format!(
                    "the key column {} is empty",
                    self.columns.names[self.columns.key]
                ),
            ));
        }
        let value = match &self.format {
            Format::Json { keys } => json_object(keys, &cells),
            Format::Avro(plan) => plan.encode(&self.columns, &cells, schema_id)?,
        };
        Ok(EncodedRow {
            key: key.as_bytes().to_vec(),
            value,
        })
    }
}

/// The JSON type of a cell (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Null,
    Bool(bool),
    Number,
    String,
}

pub fn json_type(cell: &str) -> JsonType {
    if cell.is_empty() {
        JsonType::Null
    } else if let Some(b) = parse_bool(cell) {
        JsonType::Bool(b)
    } else if is_json_number(cell) {
        JsonType::Number
    } else {
        JsonType::String
    }
}

fn json_object(keys: &[String], cells: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + cells.iter().map(|c| c.len() + 16).sum::<usize>());
    out.push(b'{');
    for (i, (key, cell)) in keys.iter().zip(cells).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        match json_type(cell) {
            JsonType::Null => out.extend_from_slice(b"null"),
            JsonType::Bool(true) => out.extend_from_slice(b"true"),
            JsonType::Bool(false) => out.extend_from_slice(b"false"),
            JsonType::Number => out.extend_from_slice(cell.as_bytes()),
            JsonType::String => {
                serde_json::to_writer(&mut out, cell).expect("writing to a Vec cannot fail")
            }
        }
    }
    out.push(b'}');
    out
}

fn parse_bool(cell: &str) -> Option<bool> {
    if cell.eq_ignore_ascii_case("true") {
        Some(true)
    } else if cell.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Whether `s` is a number literal in JSON's grammar.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// How the Avro record is filled.
struct AvroPlan {
    schema: Schema,
    fields: Vec<FieldPlan>,
}

struct FieldPlan {
    name: String,
    schema: Schema,
    source: FieldSource,
}

enum FieldSource {
    Column(usize),
    Constant(Avro),
}

impl AvroPlan {
    fn new(columns: &Columns, schema_text: &str) -> Result<Self, String> {
        let schema =
            Schema::parse_str(schema_text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
        let Schema::Record(record) = &schema else {
            return Err("the schema must be an Avro record".into());
        };
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            check_fillable(&field.schema).map_err(|t| {
                format!(
                    "field {} has type {t}, which a CSV cell cannot fill",
                    field.name
                )
            })?;
            let source = match columns.index(&field.name) {
                Some(column) => FieldSource::Column(column),
                None => FieldSource::Constant(missing_column_value(field).ok_or_else(|| {
                    format!(
                        "field {} has no column in the header ({}) and no default",
                        field.name,
                        columns.names.join(", ")
                    )
                })?),
            };
            fields.push(FieldPlan {
                name: field.name.clone(),
                schema: field.schema.clone(),
                source,
            });
        }
        Ok(Self { schema, fields })
    }

    fn encode(
        &self,
        columns: &Columns,
        cells: &[&str],
        schema_id: u32,
    ) -> Result<Vec<u8>, Rejection> {
        let mut values = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            let value = match &field.source {
                FieldSource::Constant(value) => value.clone(),
                FieldSource::Column(i) => {
                    cell_to_avro(&field.schema, cells[*i]).map_err(|why| {
                        reject(
                            RejectReason::InvalidValue,
                            format!("column {} = {:?}: {why}", columns.names[*i], cells[*i]),
                        )
                    })?
                }
            };
            values.push((field.name.clone(), value));
        }
        let datum =
            apache_avro::to_avro_datum(&self.schema, Avro::Record(values)).map_err(|e| {
                reject(
                    RejectReason::InvalidValue,
                    format!("the record does not fit the schema: {e}"),
                )
            })?;
        Ok(common::avro::frame(schema_id, &datum))
    }
}

/// The value of a field whose column is missing: its default, or null when nullable.
fn missing_column_value(field: &RecordField) -> Option<Avro> {
    if let Some(default) = &field.default {
        return Avro::from(default.clone()).resolve(&field.schema).ok();
    }
    match &field.schema {
        Schema::Null => Some(Avro::Null),
        Schema::Union(union) => union
            .variants()
            .iter()
            .position(|v| matches!(v, Schema::Null))
            .map(|i| Avro::Union(i as u32, Box::new(Avro::Null))),
        _ => None,
    }
}

/// `Err(type name)` for types a cell cannot fill.
fn check_fillable(schema: &Schema) -> Result<(), String> {
    match schema {
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::Bytes
        | Schema::String
        | Schema::Enum(_)
        | Schema::Date
        | Schema::TimestampMillis
        | Schema::TimestampMicros => Ok(()),
        Schema::Union(union) => union.variants().iter().try_for_each(check_fillable),
        other => Err(format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase()),
    }
}

/// Converts a cell to a value of `schema` (one of the types [`check_fillable`] accepts).
fn cell_to_avro(schema: &Schema, cell: &str) -> Result<Avro, String> {
    match schema {
        Schema::Null if cell.is_empty() => Ok(Avro::Null),
        Schema::Null => Err("expected an empty cell (null)".into()),
        Schema::Boolean => parse_bool(cell)
            .map(Avro::Boolean)
            .ok_or_else(|| "not true or false".into()),
        Schema::Int => cell
            .parse()
            .map(Avro::Int)
            .map_err(|_| "not a 32-bit whole number".into()),
        Schema::Long => cell
            .parse()
            .map(Avro::Long)
            .map_err(|_| "not a 64-bit whole number".into()),
        Schema::Float => match cell.parse::<f32>() {
            Ok(v) if v.is_finite() && is_decimal_text(cell) => Ok(Avro::Float(v)),
            _ => Err("not a finite float number".into()),
        },
        Schema::Double => match cell.parse::<f64>() {
            Ok(v) if v.is_finite() && is_decimal_text(cell) => Ok(Avro::Double(v)),
            _ => Err("not a finite number".into()),
        },
        Schema::String => Ok(Avro::String(cell.to_owned())),
        Schema::Bytes => Ok(Avro::Bytes(cell.as_bytes().to_vec())),
        Schema::Enum(e) => e
            .symbols
            .iter()
            .position(|s| s == cell)
            .map(|i| Avro::Enum(i as u32, cell.to_owned()))
            .ok_or_else(|| format!("not one of the symbols {}", e.symbols.join(", "))),
        Schema::Date => NaiveDate::parse_from_str(cell, "%Y-%m-%d")
            .map(|d| Avro::Date((d - NaiveDate::default()).num_days() as i32))
            .map_err(|_| "not a date like 2023-06-29".into()),
        Schema::TimestampMillis => parse_timestamp(cell)
            .map(|t| Avro::TimestampMillis(t.and_utc().timestamp_millis()))
            .ok_or_else(|| "not a timestamp like 2023-06-29 10:01:05".into()),
        Schema::TimestampMicros => parse_timestamp(cell)
            .map(|t| Avro::TimestampMicros(t.and_utc().timestamp_micros()))
            .ok_or_else(|| "not a timestamp like 2023-06-29 10:01:05".into()),
        Schema::Union(union) => {
            let null = union
                .variants()
                .iter()
                .position(|v| matches!(v, Schema::Null));
            if let (true, Some(i)) = (cell.is_empty(), null) {
                return Ok(Avro::Union(i as u32, Box::new(Avro::Null)));
            }
            let mut reasons = Vec::new();
            for (i, variant) in union.variants().iter().enumerate() {
                if matches!(variant, Schema::Null) {
                    continue;
                }
                match cell_to_avro(variant, cell) {
                    Ok(value) => return Ok(Avro::Union(i as u32, Box::new(value))),
                    Err(why) => reasons.push(why),
                }
            }
            Err(reasons.join("; "))
        }
        other => Err(format!("unsupported type {other:?}")),
    }
}

/// Plain decimal notation (Rust's float parser also takes `inf`, `NaN`, `infinity`).
fn is_decimal_text(cell: &str) -> bool {
    cell.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (or with `T`) as UTC, or RFC 3339 with its offset.
fn parse_timestamp(cell: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(cell, f).ok())
        .or_else(|| {
            DateTime::parse_from_rfc3339(cell)
                .ok()
                .map(|t| t.naive_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&[u8]]) -> RawRecord {
        RawRecord::from_fields(fields)
    }

    fn customers() -> Columns {
        let header = record(&[
            b"\xEF\xBB\xBFcustomer_id",
            b"name",
            b"city",
            b"state",
            b"country",
            b"registration_date",
            b"is_active",
        ]);
        Columns::from_header(&header, "customer_id").unwrap()
    }

    #[test]
    fn json_typing() {
        for (cell, expected) in [
            ("", JsonType::Null),
            ("True", JsonType::Bool(true)),
            ("FALSE", JsonType::Bool(false)),
            ("true", JsonType::Bool(true)),
            ("0", JsonType::Number),
            ("42", JsonType::Number),
            ("-7", JsonType::Number),
            ("19.99", JsonType::Number),
            ("-0.5", JsonType::Number),
            ("1e6", JsonType::Number),
            ("2.5E-3", JsonType::Number),
            ("123456789012345678901234567890", JsonType::Number),
            ("007", JsonType::String),
            ("+5", JsonType::String),
            (".5", JsonType::String),
            ("5.", JsonType::String),
            ("1e", JsonType::String),
            (" 42", JsonType::String),
            ("NaN", JsonType::String),
            ("inf", JsonType::String),
            ("1,5", JsonType::String),
            ("2023-06-29", JsonType::String),
            ("yes", JsonType::String),
            ("Pune", JsonType::String),
        ] {
            assert_eq!(json_type(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn a_customer_row_becomes_a_typed_json_object_keyed_by_customer_id() {
        let encoder = RowEncoder::json(customers());
        let row = record(&[
            b"7",
            b"Customer \"7\"",
            b"Pune",
            b"",
            b"India",
            b"2023-06-29",
            b"False",
        ]);
        let encoded = encoder.encode(&row, 0).unwrap();
        assert_eq!(encoded.key, b"7");
        let text = String::from_utf8(encoded.value).unwrap();
        assert_eq!(
            text,
            r#"{"customer_id":7,"name":"Customer \"7\"","city":"Pune","state":null,"country":"India","registration_date":"2023-06-29","is_active":false}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["customer_id"], 7);
        assert_eq!(parsed["is_active"], false);
    }

    #[test]
    fn bad_rows_are_rejected_with_a_reason_naming_the_column() {
        let encoder = RowEncoder::json(customers());
        let cases: [(&[&[u8]], RejectReason, &str); 3] = [
            (
                &[b"1", b"Customer_1"],
                RejectReason::ColumnCount,
                "2 fields, the header 7",
            ),
            (
                &[b"", b"n", b"c", b"s", b"co", b"2023-01-01", b"True"],
                RejectReason::EmptyKey,
                "customer_id",
            ),
            (
                &[b"1", b"n\xff", b"c", b"s", b"co", b"2023-01-01", b"True"],
                RejectReason::NonUtf8,
                "column name",
            ),
        ];
        for (fields, reason, detail) in cases {
            let rejection = encoder.encode(&record(fields), 0).unwrap_err();
            assert_eq!(rejection.reason, reason);
            assert!(rejection.detail.contains(detail), "{}", rejection.detail);
        }
        let mut oversized = record(&[]);
        oversized.oversized = true;
        assert_eq!(
            encoder.encode(&oversized, 0).unwrap_err().reason,
            RejectReason::RecordTooLarge
        );
        let labels: HashSet<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }

    #[test]
    fn the_header_must_hold_the_key_column_once() {
        let header = record(&[b"a", b" b ", b"c"]);
        assert_eq!(Columns::from_header(&header, "b").unwrap().key, 1);
        let err = Columns::from_header(&header, "customer_id")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("customer_id") && err.contains("a, b, c"),
            "{err}"
        );
        let err = Columns::from_header(&record(&[b"a", b"a"]), "a").unwrap_err();
        assert_eq!(err, LayoutError::DuplicateColumn("a".into()));
    }

    const CUSTOMER_SCHEMA: &str = r#"{
      "type": "record", "name": "Customer", "namespace": "com.example",
      "fields": [
        {"name": "customer_id", "type": "int"},
        {"name": "name", "type": "string"},
        {"name": "city", "type": ["null", "string"], "default": null},
        {"name": "registration_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "is_active", "type": "boolean"},
        {"name": "score", "type": ["null", "double"], "default": null},
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["A", "B"]}, "default": "B"}
      ]}"#;

    fn decode(value: &[u8]) -> Vec<(String, Avro)> {
        let (id, mut datum) = common::avro::unframe(value).unwrap();
        assert_eq!(id, 9);
        let schema = Schema::parse_str(CUSTOMER_SCHEMA).unwrap();
        match apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap() {
            Avro::Record(fields) => fields,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn avro_fields_are_filled_from_same_named_columns() {
        let encoder = RowEncoder::avro(customers(), CUSTOMER_SCHEMA, "c.avsc").unwrap();
        let row = record(&[
            b"7",
            b"Customer_7",
            b"",
            b"MH",
            b"India",
            b"2023-06-29",
            b"True",
        ]);
        let encoded = encoder.encode(&row, 9).unwrap();
        assert_eq!(encoded.key, b"7");
        let fields = decode(&encoded.value);
        let days =
            (NaiveDate::from_ymd_opt(2023, 6, 29).unwrap() - NaiveDate::default()).num_days();
        assert_eq!(
            fields,
            vec![
                ("customer_id".into(), Avro::Int(7)),
                ("name".into(), Avro::String("Customer_7".into())),
                ("city".into(), Avro::Union(0, Box::new(Avro::Null))),
                ("registration_date".into(), Avro::Date(days as i32)),
                ("is_active".into(), Avro::Boolean(true)),
                ("score".into(), Avro::Union(0, Box::new(Avro::Null))),
                ("tier".into(), Avro::Enum(1, "B".into())),
            ]
        );
    }

    #[test]
    fn a_cell_that_does_not_convert_is_an_invalid_value() {
        let encoder = RowEncoder::avro(customers(), CUSTOMER_SCHEMA, "c.avsc").unwrap();
        for (fields, column) in [
            (
                [&b"x7"[..], b"n", b"c", b"s", b"co", b"2023-06-29", b"True"],
                "customer_id",
            ),
            (
                [&b"7"[..], b"n", b"c", b"s", b"co", b"29/06/2023", b"True"],
                "registration_date",
            ),
            (
                [&b"7"[..], b"n", b"c", b"s", b"co", b"2023-06-29", b"maybe"],
                "is_active",
            ),
        ] {
            let rejection = encoder.encode(&record(&fields), 9).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::InvalidValue);
            assert!(rejection.detail.contains(column), "{}", rejection.detail);
        }
    }

    #[test]
    fn cells_convert_to_each_supported_type() {
        let union: Schema = Schema::parse_str(r#"["null", "long", "string"]"#).unwrap();
        assert_eq!(
            cell_to_avro(&union, "").unwrap(),
            Avro::Union(0, Box::new(Avro::Null))
        );
        assert_eq!(
            cell_to_avro(&union, "12").unwrap(),
            Avro::Union(1, Box::new(Avro::Long(12)))
        );
        assert_eq!(
            cell_to_avro(&union, "x").unwrap(),
            Avro::Union(2, Box::new(Avro::String("x".into())))
        );
        assert_eq!(
            cell_to_avro(&Schema::Double, "2.5").unwrap(),
            Avro::Double(2.5)
        );
        for bad in ["NaN", "inf", "1e999", "", "x"] {
            assert!(cell_to_avro(&Schema::Double, bad).is_err(), "{bad}");
        }
        assert!(cell_to_avro(&Schema::Int, "2147483648").is_err());
        assert_eq!(cell_to_avro(&Schema::Long, "-5").unwrap(), Avro::Long(-5));
        assert_eq!(
            cell_to_avro(&Schema::String, "").unwrap(),
            Avro::String(String::new())
        );
        assert_eq!(
            cell_to_avro(&Schema::TimestampMicros, "1970-01-01T00:00:01.5Z").unwrap(),
            Avro::TimestampMicros(1_500_000)
        );
        assert_eq!(
            cell_to_avro(&Schema::TimestampMillis, "1970-01-01 00:00:02").unwrap(),
            Avro::TimestampMillis(2000)
        );
    }

    #[test]
    fn schemas_a_csv_cannot_fill_are_refused_at_start() {
        let cases = [
            (r#"{"type": "string"}"#, "must be an Avro record"),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}]}"#,
                "field tags has type array",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "zip", "type": "string"}]}"#,
                "field zip has no column",
            ),
            ("{not json", "not a valid Avro schema"),
        ];
        for (schema, expected) in cases {
            let err = RowEncoder::avro(customers(), schema, "s.avsc")
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(expected) && err.contains("s.avsc"), "{err}");
        }
    }
}
