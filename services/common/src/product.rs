//! The `product` row as it travels through the pipeline.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// One product, as captured from the `product` table and carried in the Avro value.
///
/// `last_updated` is the `YYYY-MM-DD HH:MM:SS` text the original prototype used (UTC);
/// `last_updated_micros` is the exact time (microseconds since the Unix epoch, UTC), absent in
/// records written by the original prototype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: i32,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub last_updated: String,
    pub last_updated_micros: Option<i64>,
}

/// The text form of `last_updated` the original prototype wrote: whole seconds.
pub const LAST_UPDATED_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

impl Product {
    /// A product stamped at `last_updated` (database time, UTC).
    pub fn new(
        id: i32,
        name: String,
        category: Option<String>,
        price: f64,
        last_updated: NaiveDateTime,
    ) -> Self {
        Self {
            id,
            name,
            category,
            price,
            last_updated: last_updated.format(LAST_UPDATED_FORMAT).to_string(),
            last_updated_micros: Some(last_updated.and_utc().timestamp_micros()),
        }
    }

    /// The exact change time when known, else the whole-second text parsed as UTC.
    pub fn last_updated_time(&self) -> Option<DateTime<Utc>> {
        match self.last_updated_micros {
            Some(micros) => DateTime::from_timestamp_micros(micros),
            None => NaiveDateTime::parse_from_str(&self.last_updated, LAST_UPDATED_FORMAT)
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(&self.last_updated, "%Y-%m-%d %H:%M:%S%.f")
                })
                .ok()
                .map(|t| t.and_utc()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keeps_both_the_text_and_the_exact_time() {
        let t = NaiveDateTime::parse_from_str("2023-10-13 10:01:05.123456", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
        let p = Product::new(1, "Product_1".into(), Some("Cat_1".into()), 40.6, t);
        assert_eq!(p.last_updated, "2023-10-13 10:01:05");
        assert_eq!(p.last_updated_time().unwrap().naive_utc(), t);
    }

    #[test]
    fn prototype_records_fall_back_to_the_text() {
        let mut p = Product::new(1, "x".into(), None, 1.0, NaiveDateTime::default());
        p.last_updated_micros = None;
        p.last_updated = "2023-10-13 10:01:05".into();
        assert_eq!(
            p.last_updated_time().unwrap().to_rfc3339(),
            "2023-10-13T10:01:05+00:00"
        );
        p.last_updated = "yesterday".into();
        assert_eq!(p.last_updated_time(), None);
    }
}
