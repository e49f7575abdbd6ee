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

use common::product::{ProductId, ProductView};
use smallvec::SmallVec;

/// The category whose products get a discount.
pub const DISCOUNTED_CATEGORY: &str = "Cat_5";
/// `discount_price = price × DISCOUNT_FACTOR`, rounded to cents.
pub const DISCOUNT_FACTOR: f64 = 0.8;

/// Bytes of text (name, category, `last_updated`) a product keeps inline; longer text goes to the
/// heap. 64 holds `Product_12345` + `CAT_5` + a microsecond timestamp with room to spare, so the
/// consumer's hot path allocates nothing per record.
const INLINE_TEXT: usize = 64;

type TextBuffer = SmallVec<[u8; INLINE_TEXT]>;

/// A product as it is written to the log. Its text fields share one buffer, inline up to
/// [`INLINE_TEXT`] bytes.
#[derive(Clone, PartialEq)]
pub struct TransformedProduct {
    /// An integer, or text for tables with a text key (logged as `7` or `"P0001"`).
    pub id: ProductId,
    /// `name`, then the upper-cased `category`, then `last_updated`.
    text: TextBuffer,
    name_end: usize,
    /// Where the category ends; `None` when there is none.
    category_end: Option<usize>,
    pub price: f64,
    /// The exact change time (µs since the Unix epoch, UTC) when the producer sent it; absent
    /// in records of the original prototype.
    pub last_updated_micros: Option<i64>,
    pub discount_price: Option<f64>,
}

impl TransformedProduct {
    /// A product from its fields as they are logged (the category already upper-cased).
    pub fn from_logged_fields(
        id: ProductId,
        name: &str,
        category: Option<&str>,
        price: f64,
        last_updated: &str,
        last_updated_micros: Option<i64>,
        discount_price: Option<f64>,
    ) -> Self {
        let text = PackedText::new(name, category, last_updated, |buf, text| {
            buf.extend_from_slice(text.as_bytes());
        });
        Self {
            id,
            text: text.bytes,
            name_end: text.name_end,
            category_end: text.category_end,
            price,
            last_updated_micros,
            discount_price,
        }
    }

    pub fn name(&self) -> &str {
        self.text_at(0, self.name_end)
    }

    /// The upper-cased category.
    pub fn category(&self) -> Option<&str> {
        self.category_end
            .map(|end| self.text_at(self.name_end, end))
    }

    pub fn last_updated(&self) -> &str {
        let start = self.category_end.unwrap_or(self.name_end);
        self.text_at(start, self.text.len())
    }

    /// The UTF-8 bytes of `name`, `category` and `last_updated`, for writers that copy them as
    /// they are (checking them again as `str` costs more than writing them).
    pub fn text_bytes(&self) -> (&[u8], Option<&[u8]>, &[u8]) {
        let category_start = self.name_end;
        let last_updated_start = self.category_end.unwrap_or(self.name_end);
        (
            &self.text[..self.name_end],
            self.category_end.map(|end| &self.text[category_start..end]),
            &self.text[last_updated_start..],
        )
    }

    fn text_at(&self, start: usize, end: usize) -> &str {
        std::str::from_utf8(&self.text[start..end])
            .expect("the text buffer holds whole UTF-8 strings back to back")
    }
}

impl std::fmt::Debug for TransformedProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformedProduct")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("category", &self.category())
            .field("price", &self.price)
            .field("last_updated", &self.last_updated())
            .field("last_updated_micros", &self.last_updated_micros)
            .field("discount_price", &self.discount_price)
            .finish()
    }
}

/// The text fields packed back to back, and where they end.
struct PackedText {
    bytes: TextBuffer,
    name_end: usize,
    category_end: Option<usize>,
}

impl PackedText {
    /// `name`, the category as `push_category` writes it, `last_updated`.
    fn new(
        name: &str,
        category: Option<&str>,
        last_updated: &str,
        push_category: impl Fn(&mut TextBuffer, &str),
    ) -> Self {
        let mut bytes = TextBuffer::new();
        bytes.extend_from_slice(name.as_bytes());
        let name_end = bytes.len();
        let category_end = category.map(|category| {
            push_category(&mut bytes, category);
            bytes.len()
        });
        bytes.extend_from_slice(last_updated.as_bytes());
        Self {
            bytes,
            name_end,
            category_end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    #[error("product {id} has a price that is not a finite number ({price})")]
    NonFinitePrice { id: ProductId, price: f64 },
}

pub fn transform(product: ProductView<'_>) -> Result<TransformedProduct, TransformError> {
    if !product.price.is_finite() {
        return Err(TransformError::NonFinitePrice {
            id: product.id.to_owned(),
            price: product.price,
        });
    }
    let text = PackedText::new(
        product.name,
        product.category,
        product.last_updated,
        push_upper_case,
    );
    Ok(TransformedProduct {
        id: product.id.to_owned(), // allocates for text ids only
        text: text.bytes,
        name_end: text.name_end,
        category_end: text.category_end,
        price: product.price,
        last_updated_micros: product.last_updated_micros,
        discount_price: discount_price(product.category, product.price),
    })
}

/// Appends Unicode upper case (`straße` → `STRASSE`), byte by byte for ASCII text.
fn push_upper_case(buf: &mut TextBuffer, text: &str) {
    if text.is_ascii() {
        let start = buf.len();
        buf.extend_from_slice(text.as_bytes());
        buf[start..].make_ascii_uppercase();
    } else {
        buf.extend_from_slice(text.to_uppercase().as_bytes());
    }
}

/// `round(price × 0.8, 2)` for the discounted category, else `None`.
pub fn discount_price(original_category: Option<&str>, price: f64) -> Option<f64> {
    (original_category == Some(DISCOUNTED_CATEGORY))
        .then(|| round_to_cents(price * DISCOUNT_FACTOR))
}

/// Python's `round(x, 2)`: the exact binary value of `x` rounded to the nearest hundredth, ties
/// to even, then the nearest double to that.
///
/// Fast path: `x × 100` carries a rounding error of at most half an ulp. When the product is
/// further than that from a tie (`k + 0.5`), the exact value rounds to the same whole number of
/// cents `n`, and `n / 100` (both exact, one correctly rounded division) is the nearest double
/// to the result. Near a tie (2.675, 1.005, 0.125) the exact path decides.
pub fn round_to_cents(x: f64) -> f64 {
    const WHOLE_FROM: f64 = 4_503_599_627_370_496.0; // 2^52: every double from here is whole
    if x.is_nan() || x.abs() >= WHOLE_FROM {
        return x; // NaN, whole numbers and ±∞
    }
    let cents = x * 100.0;
    if cents.abs() < WHOLE_FROM {
        let distance_to_tie = ((cents - cents.floor()) - 0.5).abs();
        // Half an ulp of `cents` is at most |cents| × 2^-53 (about 1.1e-16): a wide margin.
        if distance_to_tie > cents.abs() * 1e-15 {
            return cents.round() / 100.0;
        }
    }
    round_to_cents_exactly(x)
}

/// `round_to_cents` by way of decimal text: Rust's fixed-precision formatting rounds the exact
/// binary value to the nearest decimal, ties to even, as Python does; parsing back gives the
/// nearest double, as Python's result is. Formatted on the stack: below 2^52 the text always
/// fits.
fn round_to_cents_exactly(x: f64) -> f64 {
    use std::io::Write;
    let mut buf = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{x:.2}").expect("at most 20 characters below 2^52");
    let len = usize::try_from(cursor.position()).expect("at most 32");
    std::str::from_utf8(&buf[..len])
        .expect("a formatted number is ASCII")
        .parse()
        .expect("a formatted number parses back")
}

#[cfg(test)]
mod tests {
    use super::*;

    use common::product::Product;

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
        let out = transform(product(Some("Cat_5"), 97.3).view()).unwrap();
        assert_eq!(out.category(), Some("CAT_5"));
        assert_eq!(out.discount_price, Some(77.84));
        assert_eq!(out.price, 97.3);
        assert_eq!(out.id, 5);
        assert_eq!(out.name(), "Product_5");
        assert_eq!(out.last_updated(), "2023-10-13 10:03:55");
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
            let out = transform(product(category, 10.0).view()).unwrap();
            assert_eq!(out.category(), expected, "{category:?}");
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
    fn long_and_non_ascii_text_survives_the_packing() {
        let mut p = product(Some("ünïcode ß"), 10.0);
        p.name = "a long product name ".repeat(20); // far past the inline bytes
        p.last_updated = "2023-10-13 10:03:55.123456".into();
        let out = transform(p.view()).unwrap();
        assert_eq!(out.name(), p.name);
        assert_eq!(out.category(), Some("ÜNÏCODE SS"));
        assert_eq!(out.last_updated(), "2023-10-13 10:03:55.123456");
        let empty = transform(product(Some(""), 1.0).view()).unwrap();
        assert_eq!(empty.category(), Some(""));
        assert_eq!(
            out,
            TransformedProduct::from_logged_fields(
                ProductId::Int(5),
                &p.name,
                Some("ÜNÏCODE SS"),
                10.0,
                "2023-10-13 10:03:55.123456",
                p.last_updated_micros,
                None,
            )
        );
    }

    #[test]
    fn the_fast_rounding_path_agrees_with_the_exact_one() {
        // Prices as stored (cents, and a few sub-cent ones) times the discount factor, exact
        // ties, and values spread over many magnitudes (a fixed xorshift sequence).
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for k in 0..200_000_i64 {
            let cents = k as f64 / 100.0;
            let mills = (k * 7919 % 100_000_000) as f64 / 1000.0;
            let magnitude = 10f64.powi((next() % 30) as i32 - 12);
            let spread = (next() >> 11) as f64 / (1u64 << 53) as f64 * magnitude;
            for x in [
                cents * 0.8,
                cents,
                -cents * 0.8,
                mills,
                mills * 0.8,
                spread,
                -spread,
            ] {
                assert_eq!(
                    round_to_cents(x).to_bits(),
                    round_to_cents_exactly(x).to_bits(),
                    "x = {x:e}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 1_400_000);
    }

    #[test]
    fn rounding_leaves_huge_and_whole_numbers_alone() {
        assert_eq!(round_to_cents(1e300), 1e300);
        assert_eq!(
            round_to_cents(-4_503_599_627_370_497.0),
            -4_503_599_627_370_497.0
        );
        assert_eq!(
            round_to_cents(4_503_599_627_370_495.5),
            4_503_599_627_370_495.5
        );
        assert_eq!(round_to_cents(-99_999_999.995), -100_000_000.0);
        assert!(round_to_cents(f64::NAN).is_nan());
    }

    #[test]
    fn text_ids_are_carried_through() {
        let mut p = product(Some("Cat_5"), 10.0);
        p.id = ProductId::Text("P0001".into());
        let out = transform(p.view()).unwrap();
        assert_eq!(out.id, "P0001");
        assert_eq!(out.discount_price, Some(8.0));
    }

    #[test]
    fn a_price_that_is_not_a_number_is_an_error() {
        for price in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = transform(product(Some("Cat_5"), price).view()).unwrap_err();
            assert!(
                matches!(&err, TransformError::NonFinitePrice { id, .. } if *id == 5),
                "{err}"
            );
        }
    }
}
