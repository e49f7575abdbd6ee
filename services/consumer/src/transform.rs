//! The transform applied to every product before it is logged: a pure function.
//!
//! - `category` is upper-cased (Unicode upper case, like Python's `str.upper`); a missing
//!   category stays `null`.
//! - `discount_price` is `round(price × 0.8, 2)` when the *original* category is exactly `Cat_5`
//!   (case-sensitive, as in the prototype), and `null` for every other record, so every log line
//!   has the same keys. Rounding is Python's `round(x, 2)`: to the nearest cent of the exact
//!   binary value, ties to even.
//! - A price that is not a finite number (NaN, ±∞) cannot be written as JSON: the record is a
//!   poison pill and goes to the dead-letter topic.

use common::product::{Product, ProductId};

/// The category whose products get a discount.
pub const DISCOUNTED_CATEGORY: &str = "Cat_5";
/// `discount_price = price × DISCOUNT_FACTOR`, rounded to cents.
pub const DISCOUNT_FACTOR: f64 = 0.8;

/// A product as it is written to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformedProduct {
    /// An integer, or text for tables with a text key (logged as `7` or `"P0001"`).
    pub id: ProductId,
    pub name: String,
    pub category: Option<String>,
    pub price: f64,
    pub last_updated: String,
    /// The exact change time (µs since the Unix epoch, UTC) when the producer sent it; absent
    /// in records of the original prototype.
    pub last_updated_micros: Option<i64>,
    pub discount_price: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    #[error("product {id} has a price that is not a finite number ({price})")]
    NonFinitePrice { id: ProductId, price: f64 },
}

pub fn transform(product: Product) -> Result<TransformedProduct, TransformError> {
    if !product.price.is_finite() {
        return Err(TransformError::NonFinitePrice {
            id: product.id,
            price: product.price,
        });
    }
    let discount_price = discount_price(product.category.as_deref(), product.price);
    Ok(TransformedProduct {
        id: product.id,
        name: product.name,
        category: product.category.map(upper_case),
        price: product.price,
        last_updated: product.last_updated,
        last_updated_micros: product.last_updated_micros,
        discount_price,
    })
}

/// Unicode upper case (`straße` → `STRASSE`), in place for ASCII text.
fn upper_case(mut text: String) -> String {
    if text.is_ascii() {
        text.make_ascii_uppercase();
        text
    } else {
        text.to_uppercase()
    }
}

/// `round(price × 0.8, 2)` for the discounted category, else `None`.
pub fn discount_price(original_category: Option<&str>, price: f64) -> Option<f64> {
    (original_category == Some(DISCOUNTED_CATEGORY))
        .then(|| round_to_cents(price * DISCOUNT_FACTOR))
}

/// Python's `round(x, 2)`: Rust's fixed-precision formatting rounds the exact binary value to
/// the nearest decimal, ties to even, which is what Python does; parsing back gives the nearest
/// double, as Python's result is.
pub fn round_to_cents(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(category: Option<&str>, price: f64) -> Product {
        Product {
            id: ProductId::Int(5),
            name: "Product_5".into(),
            category: category.map(str::to_owned),
            price,
            last_updated: "2023-10-13 10:03:55".into(),
            last_updated_micros: Some(1_697_191_435_000_000),
        }
    }

    #[test]
    fn cat_5_gets_twenty_percent_off_rounded_to_cents() {
        let out = transform(product(Some("Cat_5"), 97.3)).unwrap();
        assert_eq!(out.category.as_deref(), Some("CAT_5"));
        assert_eq!(out.discount_price, Some(77.84));
        assert_eq!(out.price, 97.3);
        assert_eq!(out.id, 5);
        assert_eq!(out.name, "Product_5");
        assert_eq!(out.last_updated, "2023-10-13 10:03:55");
    }

    #[test]
    fn other_categories_get_no_discount_but_are_upper_cased() {
        for (category, expected) in [
            (Some("Cat_1"), Some("CAT_1")),
            (Some("cat_5"), Some("CAT_5")), // only exactly `Cat_5` is discounted
            (Some("CAT_5"), Some("CAT_5")),
            (Some("Cat_50"), Some("CAT_50")),
            (Some("straße"), Some("STRASSE")),
            (None, None),
        ] {
            let out = transform(product(category, 10.0)).unwrap();
            assert_eq!(out.category.as_deref(), expected, "{category:?}");
            assert_eq!(out.discount_price, None, "{category:?}");
        }
    }

    #[test]
    fn rounding_matches_python_round_to_two_places() {
        // Values checked against CPython's round(x, 2).
        assert_eq!(round_to_cents(2.675), 2.67); // 2.675 is 2.67499999... in binary
        assert_eq!(round_to_cents(1.005), 1.0);
        assert_eq!(round_to_cents(0.125), 0.12); // exact tie: to even
        assert_eq!(round_to_cents(0.375), 0.38); // exact tie: to even
        assert_eq!(round_to_cents(-0.125), -0.12);
        assert_eq!(round_to_cents(12.3456), 12.35);
        assert_eq!(round_to_cents(40.0), 40.0);
        assert_eq!(discount_price(Some("Cat_5"), 55.55), Some(44.44));
        assert_eq!(discount_price(Some("Cat_5"), 0.0), Some(0.0));
    }

    #[test]
    fn text_ids_are_carried_through() {
        let mut p = product(Some("Cat_5"), 10.0);
        p.id = ProductId::Text("P0001".into());
        let out = transform(p).unwrap();
        assert_eq!(out.id, "P0001");
        assert_eq!(out.discount_price, Some(8.0));
    }

    #[test]
    fn a_price_that_is_not_a_number_is_an_error() {
        for price in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = transform(product(Some("Cat_5"), price)).unwrap_err();
            assert!(
                matches!(&err, TransformError::NonFinitePrice { id, .. } if *id == 5),
                "{err}"
            );
        }
    }
}
