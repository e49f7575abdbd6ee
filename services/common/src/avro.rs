//! Avro encoding of [`Product`] in the Confluent Schema Registry wire format:
//! byte 0 = magic 0, bytes 1..5 = schema id (big-endian), then the Avro binary datum.

use std::sync::OnceLock;

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::product::{Product, ProductId, ProductIdRef, ProductView};

/// Our value schema (`schemas/product_value.avsc`), registered under `{topic}-value`.
pub const PRODUCT_SCHEMA_JSON: &str = include_str!("../../../schemas/product_value.avsc");
/// The value schema for tables with a text id (`schemas/product_value_text_id.avsc`): the same
/// record with `id` a `string`.
pub const PRODUCT_TEXT_ID_SCHEMA_JSON: &str =
    include_str!("../../../schemas/product_value_text_id.avsc");

/// Whether product ids are integers (Avro `int`) or text (Avro `string`); decides the value
/// schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Int,
    Text,
}

impl IdKind {
    pub fn of(id: &ProductId) -> Self {
        match id {
            ProductId::Int(_) => Self::Int,
            ProductId::Text(_) => Self::Text,
        }
    }

    /// The value schema's text, to register.
    pub fn schema_json(self) -> &'static str {
        match self {
            Self::Int => PRODUCT_SCHEMA_JSON,
            Self::Text => PRODUCT_TEXT_ID_SCHEMA_JSON,
        }
    }

    /// The parsed value schema.
    pub fn schema(self) -> &'static Schema {
        match self {
            Self::Int => product_schema(),
            Self::Text => product_text_id_schema(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Text => "text",
        }
    }
}

const MAGIC_BYTE: u8 = 0;
const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "message of {0} bytes is too short for the Confluent wire format (needs 5-byte header)"
    )]
    TooShort(usize),
    #[error("unknown magic byte {0} (expected 0: Confluent wire format)")]
    BadMagic(u8),
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("record does not fit the product schema: {0}")]
    Shape(String),
}

/// The parsed product schema.
pub fn product_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse_str(PRODUCT_SCHEMA_JSON).expect("schemas/product_value.avsc is valid Avro")
    })
}

/// The parsed text-id product schema.
pub fn product_text_id_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse_str(PRODUCT_TEXT_ID_SCHEMA_JSON)
            .expect("schemas/product_value_text_id.avsc is valid Avro")
    })
}

/// Prefixes an Avro datum with the wire-format header.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a wire-format message into its schema id and Avro datum.
pub fn unframe(payload: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if payload.len() < HEADER_LEN {
        return Err(CodecError::TooShort(payload.len()));
    }
    if payload[0] != MAGIC_BYTE {
        return Err(CodecError::BadMagic(payload[0]));
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[HEADER_LEN..]))
}

/// Encodes `product` with our schema for its kind of id ([`IdKind::schema`]), framed with
/// `schema_id` (the id the registry gave that schema). Writes the Avro binary form of our fixed
/// schema directly instead of building an Avro `Value`: several times faster, for the
/// producer's hot path. The tests check it byte for byte against apache-avro encoding the same
/// product with `schemas/product_value.avsc` and `schemas/product_value_text_id.avsc` (the id is
/// the only difference: a zig-zag `int` or a `string`).
pub fn encode_product(schema_id: u32, product: &Product) -> Vec<u8> {
    encode_view(schema_id, &product.view())
}

/// [`encode_product`] for a product's fields borrowed from wherever they are.
pub fn encode_view(schema_id: u32, product: &ProductView<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 48 + product.name.len());
    encode_view_into(schema_id, product, &mut out);
    out
}

/// [`encode_view`] into `out`, replacing what it held (the producer encodes every row into one
/// buffer it reuses).
pub fn encode_view_into(schema_id: u32, product: &ProductView<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    match product.id {
        ProductIdRef::Int(id) => write_long(out, i64::from(id)),
        ProductIdRef::Text(id) => write_string(out, id),
    }
    write_string(out, product.name);
    match product.category {
        None => write_long(out, 0),
        Some(category) => {
            write_long(out, 1);
            write_string(out, category);
        }
    }
    out.extend_from_slice(&product.price.to_le_bytes());
    write_string(out, product.last_updated);
    match product.last_updated_micros {
        None => write_long(out, 0),
        Some(micros) => {
            write_long(out, 1);
            write_long(out, micros);
        }
    }
}

/// Avro `int`/`long`: zig-zag, then little-endian base-128 varint.
fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Avro `string`: length as a long, then the UTF-8 bytes.
fn write_string(out: &mut Vec<u8>, value: &str) {
    write_long(out, value.len() as i64);
    out.extend_from_slice(value.as_bytes());
}

/// Decodes an Avro datum written with `writer` (fetched from the registry by the id in the
/// message) into a [`Product`], resolving it against our schema with the same kind of id (an
/// `int` or a `string` `id` field in `writer`). Records of the original prototype's schema
/// decode with `last_updated_micros = None`.
///
/// Passing [`product_schema()`] or [`product_text_id_schema()`] itself as `writer` (callers may,
/// once they checked that the registry's schema has the same canonical form, see
/// [`own_schema`]) skips schema resolution, which is most of the decoding time. Callers must do
/// so for our earlier registered versions, whose `last_updated_micros` was the
/// `timestamp-micros` logical type: apache-avro does not resolve that into our plain `long`.
pub fn decode_product(writer: &Schema, mut datum: &[u8]) -> Result<Product, CodecError> {
    if std::ptr::eq(writer, product_schema()) {
        return view_own_datum(datum, IdKind::Int).map(|view| view.to_product());
    }
    if std::ptr::eq(writer, product_text_id_schema()) {
        return view_own_datum(datum, IdKind::Text).map(|view| view.to_product());
    }
    let reader = writer_id_kind(writer).schema();
    let value = apache_avro::from_avro_datum(writer, &mut datum, Some(reader))?;
    product_from_value(value)
}

/// The kind of the `id` field of a writer schema: text when it is a `string`, else an integer
/// (resolution against the int schema reports any other mismatch).
fn writer_id_kind(writer: &Schema) -> IdKind {
    let Schema::Record(record) = writer else {
        return IdKind::Int;
    };
    match record.fields.iter().find(|f| f.name == "id") {
        Some(field) if matches!(field.schema, Schema::String) => IdKind::Text,
        _ => IdKind::Int,
    }
}

/// Reads a datum written with our own schema for `kind` in place (the mirror of
/// [`encode_product`]): no Avro `Value`, no allocation; the consumer's hot path. Every byte must
/// be consumed.
pub fn view_own_datum(datum: &[u8], kind: IdKind) -> Result<ProductView<'_>, CodecError> {
    let mut input = datum;
    let id = match kind {
        IdKind::Int => ProductIdRef::Int(
            i32::try_from(read_long(&mut input)?)
                .map_err(|_| CodecError::Shape("id does not fit an Avro int".into()))?,
        ),
        IdKind::Text => ProductIdRef::Text(read_str(&mut input)?),
    };
    let name = read_str(&mut input)?;
    let category = match read_long(&mut input)? {
        0 => None,
        1 => Some(read_str(&mut input)?),
        other => return Err(CodecError::Shape(format!("category: union index {other}"))),
    };
    let price = f64::from_le_bytes(take(&mut input, 8)?.try_into().expect("8 bytes"));
    let last_updated = read_str(&mut input)?;
    let last_updated_micros = match read_long(&mut input)? {
        0 => None,
        1 => Some(read_long(&mut input)?),
        other => {
            return Err(CodecError::Shape(format!(
                "last_updated_micros: union index {other}"
            )))
        }
    };
    if !input.is_empty() {
        return Err(CodecError::Shape(format!(
            "{} bytes left after the record",
            input.len()
        )));
    }
    Ok(ProductView {
        id,
        name,
        category,
        price,
        last_updated,
        last_updated_micros,
    })
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < len {
        return Err(CodecError::Shape(format!(
            "datum ends early: needs {len} more bytes, has {}",
            input.len()
        )));
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

/// Avro `int`/`long`: base-128 varint (at most 10 bytes), then zig-zag.
fn read_long(input: &mut &[u8]) -> Result<i64, CodecError> {
    let mut n: u64 = 0;
    for shift in (0..70).step_by(7) {
        let [byte, rest @ ..] = *input else {
            return Err(CodecError::Shape("datum ends inside a number".into()));
        };
        *input = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
        }
    }
    Err(CodecError::Shape("number longer than 10 bytes".into()))
}

fn read_str<'a>(input: &mut &'a [u8]) -> Result<&'a str, CodecError> {
    let len = usize::try_from(read_long(input)?)
        .map_err(|_| CodecError::Shape("negative string length".into()))?;
    let bytes = take(input, len)?;
    std::str::from_utf8(bytes).map_err(|_| CodecError::Shape("string is not UTF-8".into()))
}

/// Whether `schema` is one of our product schemas (int or text id; same canonical form).
/// Computing it is not cheap: do it once per schema id.
pub fn is_product_schema(schema: &Schema) -> bool {
    own_schema(schema).is_some()
}

/// Our own schema ([`product_schema`] or [`product_text_id_schema`]) with the same canonical
/// form as `schema`, if any: pass it to [`decode_product`] to decode without resolution.
/// Computing it is not cheap: do it once per schema id.
pub fn own_schema(schema: &Schema) -> Option<&'static Schema> {
    own_schema_kind(schema).map(IdKind::schema)
}

/// The kind of id of our own schema with the same canonical form as `schema`, if it is one of
/// ours: its datums can be read in place with [`view_own_datum`]. Computing it is not cheap: do
/// it once per schema id.
pub fn own_schema_kind(schema: &Schema) -> Option<IdKind> {
    static CANONICAL: OnceLock<[String; 2]> = OnceLock::new();
    let [int, text] = CANONICAL.get_or_init(|| {
        [
            parsing_canonical_form(product_schema()),
            parsing_canonical_form(product_text_id_schema()),
        ]
    });
    let canonical = parsing_canonical_form(schema);
    if canonical == *int {
        Some(IdKind::Int)
    } else if canonical == *text {
        Some(IdKind::Text)
    } else {
        None
    }
}

/// The Avro Parsing Canonical Form of `schema`: two schemas with the same form write the same
/// bytes. apache-avro strips logical types but leaves an annotated primitive as an object
/// (`{"type":"long"}` where the specification says `"long"`), so our schemas as registered
/// before `last_updated_micros` lost its `timestamp-micros` annotation would not match ours:
/// such objects are reduced to the primitive's name here.
fn parsing_canonical_form(schema: &Schema) -> String {
    fn reduce(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as Json;
        match value {
            Json::Object(map) => {
                if let (1, Some(Json::String(name))) = (map.len(), map.get("type")) {
                    return Json::String(name.clone());
                }
                Json::Object(map.into_iter().map(|(k, v)| (k, reduce(v))).collect())
            }
            Json::Array(items) => Json::Array(items.into_iter().map(reduce).collect()),
            other => other,
        }
    }
    let form = schema.canonical_form();
    match serde_json::from_str(&form) {
        Ok(json) => reduce(json).to_string(),
        Err(_) => form,
    }
}

fn product_from_value(value: Value) -> Result<Product, CodecError> {
    let Value::Record(fields) = value else {
        return Err(CodecError::Shape(format!(
            "expected a record, got {value:?}"
        )));
    };
    let mut product = Product {
        id: ProductId::Int(0),
        name: String::new(),
        category: None,
        price: 0.0,
        last_updated: String::new(),
        last_updated_micros: None,
    };
    for (name, value) in fields {
        let value = match value {
            Value::Union(_, inner) => *inner,
            other => other,
        };
        match (name.as_str(), value) {
            ("id", Value::Int(v)) => product.id = ProductId::Int(v),
            ("id", Value::String(v)) => product.id = ProductId::Text(v),
            ("name", Value::String(v)) => product.name = v,
            ("category", Value::String(v)) => product.category = Some(v),
            ("category", Value::Null) => product.category = None,
            ("price", Value::Double(v)) => product.price = v,
            ("last_updated", Value::String(v)) => product.last_updated = v,
            // A plain long since the schema's change; the logical type in records written earlier.
            ("last_updated_micros", Value::Long(v) | Value::TimestampMicros(v)) => {
                product.last_updated_micros = Some(v);
            }
            ("last_updated_micros", Value::Null) => product.last_updated_micros = None,
            (field, v) => {
                return Err(CodecError::Shape(format!(
                    "unexpected value {v:?} for field {field}"
                )))
            }
        }
    }
    Ok(product)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    /// The reference encoding: apache-avro writing the product as an Avro `Value` with our schema
    /// for its kind of id, framed. [`encode_product`] must produce the same bytes.
    fn encode_with_apache_avro(schema_id: u32, p: &Product) -> Vec<u8> {
        let optional = |v: Option<Value>| match v {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v)),
        };
        let value = Value::Record(vec![
            (
                "id".into(),
                match &p.id {
                    ProductId::Int(id) => Value::Int(*id),
                    ProductId::Text(id) => Value::String(id.clone()),
                },
            ),
            ("name".into(), Value::String(p.name.clone())),
            (
                "category".into(),
                optional(p.category.clone().map(Value::String)),
            ),
            ("price".into(), Value::Double(p.price)),
            ("last_updated".into(), Value::String(p.last_updated.clone())),
            (
                "last_updated_micros".into(),
                optional(p.last_updated_micros.map(Value::Long)),
            ),
        ]);
        let datum = apache_avro::to_avro_datum(IdKind::of(&p.id).schema(), value)
            .expect("the product matches our schema");
        frame(schema_id, &datum)
    }

    /// The original prototype's schema (a copy of `shared/reference-data/product_value_avro_schema.json`).
    const PROTOTYPE_SCHEMA: &str = include_str!("../../../schemas/prototype_product_value.avsc");

    fn sample() -> Product {
        let t = NaiveDateTime::parse_from_str("2023-10-13 10:03:55.250000", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
        Product::new(5, "Product_5".into(), Some("Cat_5".into()), 97.3, t)
    }

    #[test]
    fn wire_format_header_is_magic_and_big_endian_id() {
        let bytes = encode_product(258, &sample());
        assert_eq!(&bytes[..5], &[0, 0, 0, 1, 2]);
        let (id, datum) = unframe(&bytes).unwrap();
        assert_eq!(id, 258);
        assert_eq!(datum, &bytes[5..]);
    }

    #[test]
    fn round_trip_with_our_schema() {
        let product = sample();
        let bytes = encode_product(1, &product);
        let (_, datum) = unframe(&bytes).unwrap();
        assert_eq!(decode_product(product_schema(), datum).unwrap(), product);

        let mut no_category = sample();
        no_category.category = None;
        let bytes = encode_product(1, &no_category);
        assert_eq!(
            decode_product(product_schema(), &bytes[5..]).unwrap(),
            no_category
        );
    }

    #[test]
    fn the_prototype_consumer_can_read_our_records() {
        let prototype = Schema::parse_str(PROTOTYPE_SCHEMA).unwrap();
        let bytes = encode_product(1, &sample());
        let value =
            apache_avro::from_avro_datum(product_schema(), &mut &bytes[5..], Some(&prototype))
                .unwrap();
        let Value::Record(fields) = value else {
            panic!("record expected")
        };
        let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["id", "name", "category", "price", "last_updated"]);
        assert_eq!(fields[4].1, Value::String("2023-10-13 10:03:55".into()));
    }

    #[test]
    fn records_written_by_the_prototype_decode() {
        let prototype = Schema::parse_str(PROTOTYPE_SCHEMA).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::Int(7)),
            ("name".into(), Value::String("Product_7".into())),
            ("category".into(), Value::Union(0, Box::new(Value::Null))),
            ("price".into(), Value::Double(55.6)),
            (
                "last_updated".into(),
                Value::String("2023-10-13 10:11:02".into()),
            ),
        ]);
        let datum = apache_avro::to_avro_datum(&prototype, value).unwrap();
        let product = decode_product(&prototype, &datum).unwrap();
        assert_eq!(product.id, 7);
        assert_eq!(product.category, None);
        assert_eq!(product.last_updated_micros, None);
        assert_eq!(product.last_updated, "2023-10-13 10:11:02");
    }

    /// Our schemas as registered before `last_updated_micros` became a plain `long` (it was the
    /// `timestamp-micros` logical type): records written with them stay in topics.
    const EARLIER_SCHEMA: &str =
        include_str!("../../../schemas/history/product_value.timestamp-micros.avsc");
    const EARLIER_TEXT_ID_SCHEMA: &str =
        include_str!("../../../schemas/history/product_value_text_id.timestamp-micros.avsc");

    #[test]
    fn records_written_with_the_earlier_timestamp_micros_schema_decode() {
        for (earlier, product) in [
            (EARLIER_SCHEMA, sample()),
            (EARLIER_TEXT_ID_SCHEMA, text_sample()),
        ] {
            let earlier = Schema::parse_str(earlier).unwrap();
            let value = Value::Record(vec![
                (
                    "id".into(),
                    match &product.id {
                        ProductId::Int(id) => Value::Int(*id),
                        ProductId::Text(id) => Value::String(id.clone()),
                    },
                ),
                ("name".into(), Value::String(product.name.clone())),
                (
                    "category".into(),
                    Value::Union(1, Box::new(Value::String("Cat_5".into()))),
                ),
                ("price".into(), Value::Double(product.price)),
                (
                    "last_updated".into(),
                    Value::String(product.last_updated.clone()),
                ),
                (
                    "last_updated_micros".into(),
                    Value::Union(
                        1,
                        Box::new(Value::TimestampMicros(product.last_updated_micros.unwrap())),
                    ),
                ),
            ]);
            let datum = apache_avro::to_avro_datum(&earlier, value).unwrap();
            // The same bytes as ours: only the schema's annotation changed.
            assert_eq!(datum, encode_product(1, &product)[5..]);
            let kind = own_schema_kind(&earlier).map(IdKind::as_str);
            assert_eq!(
                kind,
                Some(IdKind::of(&product.id).as_str()),
                "the canonical form drops logical types, so these records are read in place"
            );
            // Readers look the writer schema up by the id in the record and read it as ours.
            assert_eq!(
                decode_product(own_schema(&earlier).unwrap(), &datum).unwrap(),
                product
            );
            assert_eq!(
                view_own_datum(&datum, IdKind::of(&product.id))
                    .unwrap()
                    .to_product(),
                product
            );
        }
    }

    #[test]
    fn the_fast_encoder_writes_the_same_bytes() {
        let mut products = vec![sample()];
        let mut p = sample();
        p.category = None;
        p.last_updated_micros = None;
        products.push(p);
        let mut p = sample();
        p.id = ProductId::Int(i32::MIN);
        p.name = "Prodüct «ünïcode» ".repeat(20);
        p.price = -1.5e300;
        p.last_updated_micros = Some(i64::MIN);
        products.push(p);
        let mut p = sample();
        p.id = ProductId::Int(i32::MAX);
        p.name = String::new();
        p.category = Some(String::new());
        p.price = f64::NAN;
        p.last_updated_micros = Some(i64::MAX);
        products.push(p);
        for id in [-300, -64, -63, 0, 63, 64, 8191, 8192, 1_000_000] {
            let mut p = sample();
            p.id = ProductId::Int(id);
            p.last_updated_micros = Some(i64::from(id) * 1_000_003);
            products.push(p);
        }
        for p in &products {
            assert_eq!(
                encode_product(77, p),
                encode_with_apache_avro(77, p),
                "{p:?}"
            );
        }
    }

    #[test]
    fn our_own_schema_decodes_without_resolution_to_the_same_product() {
        let product = sample();
        let bytes = encode_product(1, &product);
        let from_registry = Schema::parse_str(PRODUCT_SCHEMA_JSON).unwrap();
        assert!(is_product_schema(&from_registry));
        assert!(!is_product_schema(
            &Schema::parse_str(PROTOTYPE_SCHEMA).unwrap()
        ));
        assert_eq!(
            decode_product(product_schema(), &bytes[5..]).unwrap(),
            product
        );
        assert_eq!(
            decode_product(&from_registry, &bytes[5..]).unwrap(),
            product
        );
    }

    #[test]
    fn the_direct_decoder_agrees_with_apache_avro() {
        let from_registry = Schema::parse_str(PRODUCT_SCHEMA_JSON).unwrap();
        let mut products = vec![sample()];
        for (i, name) in ["", "Straße – ünïcödé", "x"].into_iter().enumerate() {
            let mut p = sample();
            p.id = ProductId::Int([i32::MIN, -1, i32::MAX][i]);
            p.name = name.into();
            p.category = (i != 1).then(|| format!("Cat_{i}"));
            p.price = [-0.0, 1e300, f64::MIN_POSITIVE][i];
            p.last_updated_micros = [None, Some(i64::MIN), Some(i64::MAX)][i];
            products.push(p);
        }
        for product in products {
            let bytes = encode_product(7, &product);
            let direct = decode_product(product_schema(), &bytes[5..]).unwrap();
            let resolved = decode_product(&from_registry, &bytes[5..]).unwrap();
            assert_eq!(direct, resolved);
            assert_eq!(direct, product);
        }
        let bytes = encode_product(7, &sample());
        for cut in 5..bytes.len() {
            assert!(
                decode_product(product_schema(), &bytes[5..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = bytes[5..].to_vec();
        extra.push(0);
        assert!(decode_product(product_schema(), &extra).is_err());
        assert!(decode_product(product_schema(), &[0xff; 11]).is_err());
    }

    fn text_sample() -> Product {
        let mut p = sample();
        p.id = ProductId::Text("P0001".into());
        p
    }

    #[test]
    fn text_ids_use_the_text_id_schema_and_round_trip() {
        let product = text_sample();
        let bytes = encode_product(9, &product);
        assert_eq!(
            bytes,
            encode_with_apache_avro(9, &product),
            "apache-avro agrees"
        );
        // Written with the text-id schema: it decodes with that schema...
        let value =
            apache_avro::from_avro_datum(product_text_id_schema(), &mut &bytes[5..], None).unwrap();
        let Value::Record(fields) = value else {
            panic!("record expected")
        };
        assert_eq!(fields[0], ("id".into(), Value::String("P0001".into())));
        // ...directly and through resolution from the registry's copy.
        let from_registry = Schema::parse_str(PRODUCT_TEXT_ID_SCHEMA_JSON).unwrap();
        assert!(std::ptr::eq(
            own_schema(&from_registry).unwrap(),
            product_text_id_schema()
        ));
        assert!(std::ptr::eq(
            own_schema(&Schema::parse_str(PRODUCT_SCHEMA_JSON).unwrap()).unwrap(),
            product_schema()
        ));
        assert!(own_schema(&Schema::parse_str(PROTOTYPE_SCHEMA).unwrap()).is_none());
        assert_eq!(
            decode_product(product_text_id_schema(), &bytes[5..]).unwrap(),
            product
        );
        assert_eq!(
            decode_product(&from_registry, &bytes[5..]).unwrap(),
            product
        );
        for id in ["", "P0001", "ünïcode-ïd", &"x".repeat(300)] {
            let mut p = text_sample();
            p.id = ProductId::Text(id.into());
            let bytes = encode_product(3, &p);
            assert_eq!(bytes, encode_with_apache_avro(3, &p));
            assert_eq!(
                decode_product(product_text_id_schema(), &bytes[5..]).unwrap(),
                p
            );
        }
    }

    #[test]
    fn a_text_id_writer_schema_other_than_ours_resolves_to_text_ids() {
        // Prototype 002 style: a string id and no last_updated_micros.
        let mut schema: serde_json::Value = serde_json::from_str(PROTOTYPE_SCHEMA).unwrap();
        assert_eq!(schema["fields"][0]["name"], "id");
        schema["fields"][0]["type"] = "string".into();
        let writer = Schema::parse_str(&schema.to_string()).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::String("P0042".into())),
            ("name".into(), Value::String("Widget".into())),
            ("category".into(), Value::Union(0, Box::new(Value::Null))),
            ("price".into(), Value::Double(9.5)),
            (
                "last_updated".into(),
                Value::String("2023-10-13 10:11:02".into()),
            ),
        ]);
        let datum = apache_avro::to_avro_datum(&writer, value).unwrap();
        let product = decode_product(&writer, &datum).unwrap();
        assert_eq!(product.id, "P0042");
        assert_eq!(product.last_updated_micros, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(unframe(&[0, 1]), Err(CodecError::TooShort(2))));
        assert!(matches!(
            unframe(b"{\"id\":1}"),
            Err(CodecError::BadMagic(b'{'))
        ));
        assert!(decode_product(product_schema(), &[0xff, 0xff, 0xff]).is_err());
    }
}
