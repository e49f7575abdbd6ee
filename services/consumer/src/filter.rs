//! `CONSUMER_FILTER`: which records to keep, as a one-clause rule on a field of the record as it
//! was read (before the transform):
//!
//! ```text
//! locale == "RU"
//! locale != "RU"
//! category in ("Cat_1", "Cat_5")
//! device_type not in ("iOS")
//! price == 10.5
//! ```
//!
//! Literals are strings (double or single quotes), numbers, `true`, `false` and `null`. A string
//! equals only a string, a number only a number (compared as 64-bit floats, so `1` equals `1.0`).
//! A field the record does not have is `null`. Records that do not match are counted
//! (`consumer_records_filtered_total`) and skipped; their offsets are committed like any other.

use common::product::{ProductIdRef, ProductView};
use serde_json::{Map, Number, Value};

/// The fields a rule can name when the input is products (`INPUT_FORMAT=avro`).
pub const PRODUCT_FIELDS: [&str; 5] = ["id", "name", "category", "price", "last_updated"];

/// A parsed filter rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    field: String,
    negated: bool,
    /// The record matches (before negation) when its field equals one of these.
    values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at character {at} of `{rule}`")]
pub struct FilterParseError {
    pub rule: String,
    pub at: usize,
    pub problem: String,
}

impl Filter {
    pub fn parse(rule: &str) -> Result<Self, FilterParseError> {
        let mut parser = Parser { rule, at: 0 };
        let filter = parser.filter()?;
        parser.skip_space();
        if parser.at < rule.len() {
            return Err(parser.error("unexpected text after the rule"));
        }
        Ok(filter)
    }

    /// The field the rule looks at.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Whether a record whose field has `value` (`None`: the record has no such field) is kept.
    pub fn keeps(&self, value: Option<&Value>) -> bool {
        let value = value.unwrap_or(&Value::Null);
        self.values.iter().any(|wanted| same_value(wanted, value)) != self.negated
    }

    /// Whether a product is kept (its fields as read, before the transform).
    pub fn keeps_product(&self, product: &ProductView<'_>) -> bool {
        let value = match self.field.as_str() {
            "id" => match product.id {
                ProductIdRef::Int(id) => Value::from(id),
                ProductIdRef::Text(id) => Value::from(id),
            },
            "name" => Value::from(product.name),
            "category" => product.category.map_or(Value::Null, Value::from),
            "price" => Number::from_f64(product.price).map_or(Value::Null, Value::Number),
            "last_updated" => Value::from(product.last_updated),
            _ => Value::Null,
        };
        self.keeps(Some(&value))
    }

    /// Whether a JSON object is kept.
    pub fn keeps_object(&self, object: &Map<String, Value>) -> bool {
        self.keeps(object.get(&self.field))
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => as_f64(a) == as_f64(b),
        _ => a == b,
    }
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

struct Parser<'a> {
    rule: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, problem: &str) -> FilterParseError {
        FilterParseError {
            rule: self.rule.to_owned(),
            at: self.at + 1,
            problem: problem.to_owned(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.rule[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// A keyword (`in`, `not`) followed by a non-identifier character.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        let followed_by_ident = rest[word.len().min(rest.len())..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if rest.starts_with(word) && !followed_by_ident {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn filter(&mut self) -> Result<Filter, FilterParseError> {
        let field = self.identifier()?;
        let (negated, list) = if self.eat("==") {
            (false, false)
        } else if self.eat("!=") {
            (true, false)
        } else if self.eat_word("in") {
            (false, true)
        } else if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected `in` after `not`"));
            }
            (true, true)
        } else {
            return Err(self.error("expected `==`, `!=`, `in` or `not in`"));
        };
        let values = if list {
            self.list()?
        } else {
            vec![self.literal()?]
        };
        Ok(Filter {
            field,
            negated,
            values,
        })
    }

    fn identifier(&mut self) -> Result<String, FilterParseError> {
        self.skip_space();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_alphanumeric() || c == '_' || (i > 0 && c == '-')))
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error("expected a field name"));
        }
        self.at += len;
        Ok(rest[..len].to_owned())
    }

    fn list(&mut self) -> Result<Vec<Value>, FilterParseError> {
        if !self.eat("(") {
            return Err(self.error("expected `(` to start a list of values"));
        }
        let mut values = vec![self.literal()?];
        loop {
            if self.eat(")") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(self.error("expected `,` or `)` in the list of values"));
            }
            values.push(self.literal()?);
        }
    }

    fn literal(&mut self) -> Result<Value, FilterParseError> {
        self.skip_space();
        let rest = self.rest();
        if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let Some(end) = rest[1..].find(quote) else {
                return Err(self.error("unterminated string"));
            };
            let text = rest[1..=end].to_owned();
            self.at += end + 2;
            return Ok(Value::String(text));
        }
        for (word, value) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if self.eat_word(word) {
                return Ok(value);
            }
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .unwrap_or(rest.len());
        match rest[..len].parse::<f64>().ok().and_then(Number::from_f64) {
            Some(number) if len > 0 => {
                self.at += len;
                Ok(Value::Number(number))
            }
            _ => {
                Err(self.error("expected a value: a quoted string, a number, true, false or null"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keeps(rule: &str, record: Value) -> bool {
        Filter::parse(rule)
            .unwrap()
            .keeps_object(record.as_object().unwrap())
    }

    #[test]
    fn equality_and_inequality() {
        assert!(keeps(r#"locale == "RU""#, json!({"locale": "RU"})));
        assert!(!keeps(r#"locale == "RU""#, json!({"locale": "US"})));
        assert!(!keeps(r#"locale == "RU""#, json!({})));
        assert!(keeps(r#"locale != 'RU'"#, json!({"locale": "US"})));
        assert!(keeps(r#"locale != 'RU'"#, json!({})));
        assert!(!keeps(r#"locale!='RU'"#, json!({"locale": "RU"})));
    }

    #[test]
    fn lists() {
        let rule = r#"category in ("Cat_1", "Cat_5")"#;
        assert!(keeps(rule, json!({"category": "Cat_5"})));
        assert!(!keeps(rule, json!({"category": "CAT_5"})));
        assert!(!keeps(rule, json!({"category": null})));
        let rule = r#"device_type not in ("iOS")"#;
        assert!(keeps(rule, json!({"device_type": "android"})));
        assert!(!keeps(rule, json!({"device_type": "iOS"})));
        assert!(keeps("inventory in (1, 2)", json!({"inventory": 2})));
    }

    #[test]
    fn numbers_booleans_and_null() {
        assert!(keeps("price == 10", json!({"price": 10.0})));
        assert!(keeps("price == 1e1", json!({"price": 10})));
        assert!(!keeps("price == 10", json!({"price": "10"})));
        assert!(keeps("active == true", json!({"active": true})));
        assert!(keeps("category == null", json!({"name": "x"})));
        assert!(keeps("category != null", json!({"category": "a"})));
        assert!(keeps("delta == -2.5", json!({"delta": -2.5})));
    }

    #[test]
    fn products_are_filtered_on_their_fields_as_read() {
        use common::product::{Product, ProductId};
        let product = |category: Option<&str>| Product {
            id: ProductId::Int(7),
            name: "Lamp".into(),
            category: category.map(str::to_owned),
            price: 12.5,
            last_updated: "2024-05-01 10:00:00".into(),
            last_updated_micros: None,
        };
        let cat5 = Filter::parse("category in ('Cat_5', 'Cat_2')").unwrap();
        assert!(cat5.keeps_product(&product(Some("Cat_5")).view()));
        assert!(!cat5.keeps_product(&product(Some("Cat_1")).view()));
        assert!(!cat5.keeps_product(&product(None).view()));
        assert!(Filter::parse("id == 7")
            .unwrap()
            .keeps_product(&product(None).view()));
        assert!(Filter::parse("price == 12.5")
            .unwrap()
            .keeps_product(&product(None).view()));
        assert!(Filter::parse("name != 'Desk'")
            .unwrap()
            .keeps_product(&product(None).view()));
    }

    #[test]
    fn bad_rules_say_what_and_where() {
        for (rule, problem, at) in [
            ("", "expected a field name", 1),
            ("locale", "expected `==`, `!=`, `in` or `not in`", 7),
            ("locale = 'RU'", "expected `==`, `!=`, `in` or `not in`", 8),
            ("locale == RU", "expected a value", 11),
            ("locale == 'RU", "unterminated string", 11),
            ("locale in 'RU'", "expected `(`", 11),
            ("locale in ('RU' 'US')", "expected `,` or `)`", 17),
            ("locale not 'RU'", "expected `in` after `not`", 12),
            ("locale == 'RU' and x", "unexpected text after the rule", 16),
            ("locale inside ('RU')", "expected `==`", 8),
        ] {
            let err = Filter::parse(rule).unwrap_err();
            assert!(err.problem.starts_with(problem), "{rule}: {err}");
            assert_eq!(err.at, at, "{rule}: {err}");
            assert!(err.to_string().contains(rule), "{err}");
        }
    }
}
