//! The `product` row as it travels through the pipeline.

use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// A product's id: the 32-bit integer of the `product` table (Avro `int`,
/// `schemas/product_value.avsc`), or the text key of a table such as prototype 002's `products`
/// (`product_id VARCHAR`, Avro `string`, `schemas/product_value_text_id.avsc`). In JSON it is a
/// bare number or string (`7`, `"P0001"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProductId {
    Int(i32),
    Text(String),
}

impl ProductId {
    /// The integer id, if it is one.
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Self::Int(id) => Some(*id),
            Self::Text(_) => None,
        }
    }

    /// The id, borrowed.
    pub fn as_id_ref(&self) -> ProductIdRef<'_> {
        match self {
            Self::Int(id) => ProductIdRef::Int(*id),
            Self::Text(id) => ProductIdRef::Text(id),
        }
    }

    /// The text id, if it is one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Int(_) => None,
            Self::Text(id) => Some(id),
        }
    }
}

/// The id as the Kafka key holds it: decimal digits or the text itself.
impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_id_ref().fmt(f)
    }
}

impl From<i32> for ProductId {
    fn from(id: i32) -> Self {
        Self::Int(id)
    }
}

impl From<String> for ProductId {
    fn from(id: String) -> Self {
        Self::Text(id)
    }
}

impl From<&str> for ProductId {
    fn from(id: &str) -> Self {
        Self::Text(id.to_owned())
    }
}

impl PartialEq<i32> for ProductId {
    fn eq(&self, other: &i32) -> bool {
        self.as_int() == Some(*other)
    }
}

impl PartialEq<&str> for ProductId {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == Some(*other)
    }
}

/// One product, as captured from the `product` table and carried in the Avro value.
///
/// `last_updated` is the `YYYY-MM-DD HH:MM:SS` text the original prototype used (UTC);
/// `last_updated_micros` is the exact time (microseconds since the Unix epoch, UTC), absent in
/// records written by the original prototype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub last_updated: String,
    pub last_updated_micros: Option<i64>,
}

/// The text form of `last_updated` the original prototype wrote: whole seconds.
pub const LAST_UPDATED_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `time` as [`LAST_UPDATED_FORMAT`] writes it (see [`write_last_updated`]).
pub fn format_last_updated(time: NaiveDateTime) -> String {
    let mut text = String::with_capacity(19);
    write_last_updated(time, &mut text);
    text
}

/// Appends `time` as [`LAST_UPDATED_FORMAT`] writes it to `out`: digit by digit for four-digit
/// years (the producer stamps every row: chrono's general formatter parses the format string
/// every time); other years through chrono.
pub fn write_last_updated(time: NaiveDateTime, out: &mut String) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let year = time.year();
    if !(0..=9999).contains(&year) {
        write!(out, "{}", time.format(LAST_UPDATED_FORMAT)).expect("writing to a String");
        return;
    }
    let mut text = [0u8; 19];
    let mut put = |at: usize, digits: usize, value: u32| {
        let mut value = value;
        for i in (at..at + digits).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, time.month());
    put(8, 2, time.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    text[4] = b'-';
    text[7] = b'-';
    text[10] = b' ';
    text[13] = b':';
    text[16] = b':';
    out.push_str(std::str::from_utf8(&text).expect("digits and separators are ASCII"));
}

impl Product {
    /// A product stamped at `last_updated` (database time, UTC).
    pub fn new(
        id: impl Into<ProductId>,
        name: String,
        category: Option<String>,
        price: f64,
        last_updated: NaiveDateTime,
    ) -> Self {
        Self {
            id: id.into(),
            name,
            category,
            price,
            last_updated: format_last_updated(last_updated),
            last_updated_micros: Some(last_updated.and_utc().timestamp_micros()),
        }
    }

    /// The product's fields, borrowed.
    pub fn view(&self) -> ProductView<'_> {
        ProductView {
            id: self.id.as_id_ref(),
            name: &self.name,
            category: self.category.as_deref(),
            price: self.price,
            last_updated: &self.last_updated,
            last_updated_micros: self.last_updated_micros,
        }
    }

    /// See [`ProductView::changed_at_micros`].
    pub fn changed_at_micros(&self) -> Option<i64> {
        self.view().changed_at_micros()
    }
}

/// A product id borrowed from where it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductIdRef<'a> {
    Int(i32),
    Text(&'a str),
}

/// The id as the Kafka key holds it: decimal digits or the text itself.
impl fmt::Display for ProductIdRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(id) => write!(f, "{id}"),
            Self::Text(id) => f.write_str(id),
        }
    }
}

impl ProductIdRef<'_> {
    pub fn to_owned(self) -> ProductId {
        match self {
            Self::Int(id) => ProductId::Int(id),
            Self::Text(id) => ProductId::Text(id.to_owned()),
        }
    }
}

/// A [`Product`]'s fields borrowed from where they were read (an Avro datum read in place, see
/// `avro::view_own_datum`, or a [`Product`]): the consumer's hot path reads records without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductView<'a> {
    pub id: ProductIdRef<'a>,
    pub name: &'a str,
    pub category: Option<&'a str>,
    pub price: f64,
    pub last_updated: &'a str,
    pub last_updated_micros: Option<i64>,
}

impl ProductView<'_> {
    pub fn to_product(&self) -> Product {
        Product {
            id: self.id.to_owned(),
            name: self.name.to_owned(),
            category: self.category.map(str::to_owned),
            price: self.price,
            last_updated: self.last_updated.to_owned(),
            last_updated_micros: self.last_updated_micros,
        }
    }

    /// The change time in µs since the Unix epoch: the exact time when known (no date
    /// arithmetic: the consumer asks for every record), else the whole-second text parsed as UTC.
    pub fn changed_at_micros(&self) -> Option<i64> {
        self.last_updated_micros.or_else(|| {
            NaiveDateTime::parse_from_str(self.last_updated, LAST_UPDATED_FORMAT)
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(self.last_updated, "%Y-%m-%d %H:%M:%S%.f")
                })
                .ok()
                .map(|t| t.and_utc().timestamp_micros())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn new_keeps_both_the_text_and_the_exact_time() {
        let t = NaiveDateTime::parse_from_str("2023-10-13 10:01:05.123456", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
        let p = Product::new(1, "Product_1".into(), Some("Cat_1".into()), 40.6, t);
        assert_eq!(p.last_updated, "2023-10-13 10:01:05");
        assert_eq!(p.changed_at_micros(), Some(t.and_utc().timestamp_micros()));
    }

    #[test]
    fn last_updated_is_formatted_as_chrono_formats_it() {
        let mut times: Vec<NaiveDateTime> = [
            "0000-01-01 00:00:00",
            "0999-12-31 23:59:59.999999",
            "1970-01-01 00:00:00",
            "2023-10-13 10:01:05.123456",
            "2038-01-19 03:14:07",
            "9999-12-31 23:59:59.999999",
        ]
        .iter()
        .map(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").unwrap())
        .collect();
        // Outside four-digit years (chrono writes a sign and more digits).
        times.push(NaiveDateTime::MIN);
        times.push(NaiveDateTime::MAX);
        let mut t = NaiveDateTime::default();
        for _ in 0..2000 {
            t += chrono::Duration::seconds(7_919_993); // about three months, odd seconds
            times.push(t);
        }
        for time in times {
            assert_eq!(
                format_last_updated(time),
                time.format(LAST_UPDATED_FORMAT).to_string(),
                "{time:?}"
            );
        }
    }

    #[test]
    fn ids_are_numbers_or_strings_in_json_and_text_in_keys() {
        let t = NaiveDateTime::default();
        let int = Product::new(7, "a".into(), None, 1.0, t);
        let text = Product::new("P0001", "b".into(), None, 1.0, t);
        assert_eq!(
            serde_json::to_value(&int).unwrap()["id"],
            serde_json::json!(7)
        );
        assert_eq!(
            serde_json::to_value(&text).unwrap()["id"],
            serde_json::json!("P0001")
        );
        let back: Product = serde_json::from_value(serde_json::to_value(&text).unwrap()).unwrap();
        assert_eq!(back.id, ProductId::Text("P0001".into()));
        let back: Product = serde_json::from_value(serde_json::to_value(&int).unwrap()).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(int.id.to_string(), "7");
        assert_eq!(text.id.to_string(), "P0001");
        assert_eq!(text.id, "P0001");
        assert_eq!(text.id.as_int(), None);
    }

    #[test]
    fn prototype_records_fall_back_to_the_text() {
        let mut p = Product::new(1, "x".into(), None, 1.0, NaiveDateTime::default());
        p.last_updated_micros = None;
        p.last_updated = "2023-10-13 10:01:05".into();
        let time = DateTime::<Utc>::from_timestamp_micros(p.changed_at_micros().unwrap()).unwrap();
        assert_eq!(time.to_rfc3339(), "2023-10-13T10:01:05+00:00");
        p.last_updated = "yesterday".into();
        assert_eq!(p.changed_at_micros(), None);
    }
}
