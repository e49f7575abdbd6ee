//! From a captured row to the Kafka record (key = id as text, value = Avro in the Confluent wire
//! format), or to a rejection when the row cannot be represented in the value schema.

use common::avro::encode_view_into;
use common::product::{write_last_updated, ProductIdRef, ProductView};
use serde_json::json;

use crate::position::RowKey;
use crate::source::SourceRow;

/// Why a row was not produced. The label is the `reason` of `producer_rows_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `name` is NULL; the schema's `name` is a non-null string.
    NullName,
    /// `price` is NULL; the schema's `price` is a non-null double.
    NullPrice,
    /// `price` is NaN or infinite.
    PriceNotFinite,
    /// `price` is negative.
    PriceOutOfRange,
    /// `id` does not fit the schema's 32-bit `id`.
    IdOutOfRange,
    /// The record is larger than Kafka accepts (`message.max.bytes`).
    RecordTooLarge,
    /// Kafka refused the record for what it is (e.g. the broker's validation), also when sent
    /// alone.
    RefusedByKafka,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        Self::NullName,
        Self::NullPrice,
        Self::PriceNotFinite,
        Self::PriceOutOfRange,
        Self::IdOutOfRange,
        Self::RecordTooLarge,
        Self::RefusedByKafka,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::NullName => "null_name",
            Self::NullPrice => "null_price",
            Self::PriceNotFinite => "price_not_finite",
            Self::PriceOutOfRange => "price_out_of_range",
            Self::IdOutOfRange => "id_out_of_range",
            Self::RecordTooLarge => "record_too_large",
            Self::RefusedByKafka => "refused_by_kafka",
        }
    }
}

/// A row that could not be encoded, with the reason and details for the log and the dead-letter
/// topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

/// The product a row stands for (borrowed from it; `last_updated` is the row's time as text,
/// see [`format_last_updated`]), or why it cannot be one.
pub fn to_product<'a>(
    row: &'a SourceRow,
    last_updated: &'a str,
) -> Result<ProductView<'a>, Rejection> {
    let reject = |reason: RejectReason, detail: String| Rejection { reason, detail };
    let id = match &row.id {
        RowKey::Int(id) => ProductIdRef::Int(i32::try_from(*id).map_err(|_| {
            reject(
                RejectReason::IdOutOfRange,
                format!("id {id} does not fit the schema's 32-bit int"),
            )
        })?),
        RowKey::Text(id) => ProductIdRef::Text(id),
    };
    let name = row
        .name
        .as_deref()
        .ok_or_else(|| reject(RejectReason::NullName, "name is NULL".into()))?;
    let price = row
        .price
        .ok_or_else(|| reject(RejectReason::NullPrice, "price is NULL".into()))?;
    if !price.is_finite() {
        return Err(reject(
            RejectReason::PriceNotFinite,
            format!(
                "price {price} is not a finite number (NaN, infinite, or too large for the \
                 schema's double)"
            ),
        ));
    }
    if price < 0.0 {
        return Err(reject(
            RejectReason::PriceOutOfRange,
            format!("price {price} is negative"),
        ));
    }
    Ok(ProductView {
        id,
        name,
        category: row.category.as_deref(),
        price,
        last_updated,
        last_updated_micros: Some(row.last_updated.and_utc().timestamp_micros()),
    })
}

/// A record ready to be produced.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRecord {
    /// The product id as UTF-8 text (digits, or the text id itself).
    pub key: String,
    /// Confluent wire format: magic byte, schema id, Avro datum.
    pub value: Vec<u8>,
}

/// A record as [`RecordEncoder::encode`] returns it, borrowed from the encoder's buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordRef<'a> {
    /// The product id as UTF-8 text (digits, or the text id itself).
    pub key: &'a str,
    /// Confluent wire format: magic byte, schema id, Avro datum.
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    pub fn to_record(&self) -> EncodedRecord {
        EncodedRecord {
            key: self.key.to_owned(),
            value: self.value.to_vec(),
        }
    }
}

/// Encodes rows with the registered `schema_id` (`common::avro::encode_view_into`), one after
/// the other into buffers it reuses: the capture loop encodes every row it produces, without an
/// allocation per row. Every valid product encodes.
/// `schema_id` must be the schema of the rows' kind of id (`IdKind::schema_json`): a source
/// yields one kind only, the one it reported when inspected.
pub struct RecordEncoder {
    schema_id: u32,
    last_updated: String,
    key: itoa::Buffer,
    value: Vec<u8>,
}

impl RecordEncoder {
    pub fn new(schema_id: u32) -> Self {
        Self {
            schema_id,
            last_updated: String::with_capacity(19),
            key: itoa::Buffer::new(),
            value: Vec::with_capacity(128),
        }
    }

    /// The record of `row`, valid until the next call, or why the row cannot be one.
    pub fn encode<'a>(&'a mut self, row: &'a SourceRow) -> Result<RecordRef<'a>, Rejection> {
        self.last_updated.clear();
        write_last_updated(row.last_updated, &mut self.last_updated);
        let product = to_product(row, &self.last_updated)?;
        encode_view_into(self.schema_id, &product, &mut self.value);
        let key = match product.id {
            ProductIdRef::Int(id) => self.key.format(id),
            ProductIdRef::Text(id) => id,
        };
        Ok(RecordRef {
            key,
            value: &self.value,
        })
    }
}

/// [`RecordEncoder::encode`] for one row, into a record of its own.
pub fn encode_row(schema_id: u32, row: &SourceRow) -> Result<EncodedRecord, Rejection> {
    RecordEncoder::new(schema_id)
        .encode(row)
        .map(|record| record.to_record())
}

/// At most this many bytes of a text column go to the dead-letter record: a row set aside for
/// its size must not make a dead letter too large for Kafka too.
pub const DEAD_LETTER_TEXT_BYTES: usize = 4096;

/// The dead-letter record of a rejected row: JSON with the reason and the row as read (text
/// columns longer than [`DEAD_LETTER_TEXT_BYTES`] cut, listed under `truncated` with their
/// length in bytes).
pub fn dead_letter_json(row: &SourceRow, rejection: &Rejection, source: &str) -> String {
    let mut truncated = serde_json::Map::new();
    let mut bounded = |column: &str, text: &Option<String>| -> Option<String> {
        let text = text.as_deref()?;
        if text.len() <= DEAD_LETTER_TEXT_BYTES {
            return Some(text.to_owned());
        }
        truncated.insert(column.to_owned(), json!(text.len()));
        let mut end = DEAD_LETTER_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(text[..end].to_owned())
    };
    let name = bounded("name", &row.name);
    let category = bounded("category", &row.category);
    let mut value = json!({
        "reason": rejection.reason.label(),
        "detail": rejection.detail,
        "source": source,
        "row": {
            "id": row.id,
            "name": name,
            "category": category,
            // serde_json writes NaN and infinities as null; the detail keeps the text.
            "price": row.price,
            "last_updated": row.last_updated.format(crate::watermark::TIMESTAMP_FORMAT).to_string(),
            "last_updated_micros": row.last_updated.and_utc().timestamp_micros(),
        },
        "rejected_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if !truncated.is_empty() {
        value["truncated"] = serde_json::Value::Object(truncated);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;
    use chrono::NaiveDateTime;
    use common::avro::{decode_product, product_schema, unframe};

    /// The original prototype's schema (a copy of `shared/reference-data/product_value_avro_schema.json`).
    const PROTOTYPE_SCHEMA: &str = include_str!("../../../schemas/prototype_product_value.avsc");

    fn row() -> SourceRow {
        SourceRow {
            id: RowKey::Int(5),
            name: Some("Product_5".into()),
            category: Some("Cat_5".into()),
            price: Some(97.3),
            last_updated: NaiveDateTime::parse_from_str(
                "2023-10-13 10:03:55.250001",
                "%Y-%m-%d %H:%M:%S%.f",
            )
            .unwrap(),
        }
    }

    #[test]
    fn a_good_row_becomes_a_keyed_wire_format_record() {
        let record = encode_row(42, &row()).unwrap();
        assert_eq!(record.key, "5");
        let (schema_id, datum) = unframe(&record.value).unwrap();
        assert_eq!(schema_id, 42);
        let product = decode_product(product_schema(), datum).unwrap();
        assert_eq!(product.id, 5);
        assert_eq!(product.name, "Product_5");
        assert_eq!(product.category.as_deref(), Some("Cat_5"));
        assert_eq!(product.price, 97.3);
        assert_eq!(product.last_updated, "2023-10-13 10:03:55");
        assert_eq!(
            product.last_updated_micros,
            Some(row().last_updated.and_utc().timestamp_micros())
        );
    }

    #[test]
    fn an_encoder_reused_for_rows_of_every_shape_encodes_each_as_a_fresh_one_would() {
        let mut long = row();
        long.id = RowKey::Int(2_000_000_000);
        long.name = Some("a much longer product name than the first one".into());
        long.last_updated += chrono::Duration::days(400);
        let mut no_category = row();
        no_category.category = None;
        let mut rejected = row();
        rejected.name = None;
        let mut encoder = RecordEncoder::new(42);
        for r in [long, row(), rejected, no_category, row()] {
            let fresh = RecordEncoder::new(42).encode(&r).map(|rec| rec.to_record());
            let reused = encoder.encode(&r).map(|rec| rec.to_record());
            assert_eq!(reused, fresh, "{r:?}");
        }
        let last = row();
        let record = encoder.encode(&last).unwrap();
        assert_eq!(record.key, "5");
        let product = decode_product(product_schema(), &record.value[5..]).unwrap();
        assert_eq!(product.last_updated, "2023-10-13 10:03:55");
    }

    #[test]
    fn the_prototype_schema_reads_our_records() {
        let record = encode_row(1, &row()).unwrap();
        let prototype = apache_avro::Schema::parse_str(PROTOTYPE_SCHEMA).unwrap();
        let (_, mut datum) = unframe(&record.value).unwrap();
        let value =
            apache_avro::from_avro_datum(product_schema(), &mut datum, Some(&prototype)).unwrap();
        let Value::Record(fields) = value else {
            panic!("expected a record")
        };
        assert_eq!(
            fields,
            vec![
                ("id".into(), Value::Int(5)),
                ("name".into(), Value::String("Product_5".into())),
                (
                    "category".into(),
                    Value::Union(1, Box::new(Value::String("Cat_5".into())))
                ),
                ("price".into(), Value::Double(97.3)),
                (
                    "last_updated".into(),
                    Value::String("2023-10-13 10:03:55".into())
                ),
            ]
        );
    }

    #[test]
    fn a_null_category_is_fine() {
        let mut r = row();
        r.category = None;
        let record = encode_row(1, &r).unwrap();
        let product = decode_product(product_schema(), &record.value[5..]).unwrap();
        assert_eq!(product.category, None);
    }

    #[test]
    fn rows_the_schema_cannot_carry_are_rejected_with_a_reason() {
        type Spoil = fn(&mut SourceRow);
        let cases: [(Spoil, RejectReason); 7] = [
            (|r| r.name = None, RejectReason::NullName),
            (|r| r.price = None, RejectReason::NullPrice),
            (|r| r.price = Some(f64::NAN), RejectReason::PriceNotFinite),
            (
                |r| r.price = Some(f64::INFINITY),
                RejectReason::PriceNotFinite,
            ),
            (|r| r.price = Some(-0.01), RejectReason::PriceOutOfRange),
            (
                |r| r.id = RowKey::Int(i64::from(i32::MAX) + 1),
                RejectReason::IdOutOfRange,
            ),
            (|r| r.price = Some(-f64::MAX), RejectReason::PriceOutOfRange),
        ];
        for (spoil, reason) in cases {
            let mut r = row();
            spoil(&mut r);
            let rejection = encode_row(1, &r).unwrap_err();
            assert_eq!(rejection.reason, reason, "{r:?}");
            assert!(!rejection.detail.is_empty());
        }
        let labels: std::collections::HashSet<_> =
            RejectReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len(), "labels are distinct");
    }

    #[test]
    fn a_text_id_row_is_keyed_by_its_text_and_encoded_with_the_text_id_schema() {
        let mut r = row();
        r.id = RowKey::Text("P0001".into());
        let record = encode_row(8, &r).unwrap();
        assert_eq!(record.key, "P0001");
        let product =
            decode_product(common::avro::product_text_id_schema(), &record.value[5..]).unwrap();
        assert_eq!(product.id, "P0001");
        assert_eq!(product.price, 97.3);
        r.price = None;
        let rejection = encode_row(8, &r).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::NullPrice);
        let dead: serde_json::Value =
            serde_json::from_str(&dead_letter_json(&r, &rejection, "postgres table products"))
                .unwrap();
        assert_eq!(dead["row"]["id"], "P0001");
    }

    #[test]
    fn a_dead_letter_stays_small_whatever_the_row_holds() {
        let mut r = row();
        r.name = Some("é".repeat(800_000));
        let rejection = Rejection {
            reason: RejectReason::RecordTooLarge,
            detail: "the record is 1600050 bytes".into(),
        };
        let text = dead_letter_json(&r, &rejection, "mysql table product");
        assert!(
            text.len() < 2 * DEAD_LETTER_TEXT_BYTES,
            "{} bytes",
            text.len()
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["reason"], "record_too_large");
        assert_eq!(value["truncated"]["name"], 1_600_000);
        assert_eq!(value["row"]["id"], 5);
        assert!(value["row"]["name"].as_str().unwrap().starts_with("éé"));
        assert_eq!(value["row"]["category"], "Cat_5");
    }

    #[test]
    fn dead_letter_json_carries_reason_and_row() {
        let mut r = row();
        r.name = None;
        let rejection = to_product(&r, "").unwrap_err();
        let text = dead_letter_json(&r, &rejection, "mysql product table");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["reason"], "null_name");
        assert_eq!(value["row"]["id"], 5);
        assert!(value["row"]["name"].is_null());
        assert_eq!(value["row"]["last_updated"], "2023-10-13 10:03:55.250001");
        assert_eq!(value["source"], "mysql product table");
    }
}
