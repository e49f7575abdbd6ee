//! Compatibility levels (Confluent's names and meaning) and the Avro checks behind them, built on
//! `apache_avro::schema_compatibility`.
//!
//! - BACKWARD: the new schema can read data written with the latest registered schema.
//! - FORWARD: the latest registered schema can read data written with the new schema.
//! - FULL: both.
//! - The `_TRANSITIVE` variants check against every live version instead of only the latest.
//! - NONE: no check.

use std::error::Error as _;
use std::fmt;

use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    /// Confluent's default.
    pub const DEFAULT: Self = Self::Backward;

    const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Parses a level name, ignoring ASCII case (`backward` and `BACKWARD` are both accepted).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether a new schema is checked against every live version rather than only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn new_must_read_old(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn old_must_read_new(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks `new` against each `(version, schema)` of `existing` under `level` and describes every
/// problem found, one line each. An empty result means compatible. Which versions to pass (only the
/// latest, or all for the transitive levels) is the caller's choice.
pub fn incompatibilities(
    level: CompatibilityLevel,
    new: &Schema,
    existing: &[(u32, &Schema)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for &(version, old) in existing {
        if level.new_must_read_old() {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "the new schema cannot read data written with version {version} ({level}): {}",
                    describe(&e)
                ));
            }
        }
        if level.old_must_read_new() {
            if let Err(e) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "version {version} cannot read data written with the new schema ({level}): {}",
                    describe(&e)
                ));
            }
        }
    }
    problems
}

/// The error and its causes on one line (apache-avro nests field errors).
fn describe(error: &CompatibilityError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(extra_fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type": "record", "name": "Product", "namespace": "com.buyonline.product", "fields": [
                {{"name": "id", "type": "int"}},
                {{"name": "price", "type": "double"}}{extra_fields}
            ]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn level_names_round_trip_and_ignore_case() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(CompatibilityLevel::parse(level.as_str()), Some(level));
            assert_eq!(
                CompatibilityLevel::parse(&level.as_str().to_lowercase()),
                Some(level)
            );
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{}\"", level.as_str()));
        }
        assert_eq!(CompatibilityLevel::parse("SOMETIMES"), None);
        assert_eq!(CompatibilityLevel::DEFAULT, CompatibilityLevel::Backward);
    }

    #[test]
    fn optional_field_with_default_is_fully_compatible() {
        let old = product("");
        let new = product(r#", {"name": "note", "type": ["null", "string"], "default": null}"#);
        for level in CompatibilityLevel::ALL {
            assert_eq!(
                incompatibilities(level, &new, &[(1, &old)]),
                Vec::<String>::new(),
                "{level}"
            );
        }
    }

    #[test]
    fn required_new_field_breaks_backward_but_not_forward() {
        let old = product("");
        let new = product(r#", {"name": "stock", "type": "int"}"#);
        let backward = incompatibilities(CompatibilityLevel::Backward, &new, &[(3, &old)]);
        assert_eq!(backward.len(), 1, "{backward:?}");
        assert!(backward[0].contains("version 3"), "{backward:?}");
        assert!(backward[0].contains("stock"), "{backward:?}");
        assert!(incompatibilities(CompatibilityLevel::Forward, &new, &[(3, &old)]).is_empty());
        assert_eq!(
            incompatibilities(CompatibilityLevel::Full, &new, &[(3, &old)]).len(),
            1
        );
        assert!(incompatibilities(CompatibilityLevel::None, &new, &[(3, &old)]).is_empty());
    }

    #[test]
    fn removing_a_required_field_breaks_forward_but_not_backward() {
        let old = product(r#", {"name": "stock", "type": "int"}"#);
        let new = product("");
        assert!(incompatibilities(CompatibilityLevel::Backward, &new, &[(1, &old)]).is_empty());
        let forward = incompatibilities(CompatibilityLevel::Forward, &new, &[(1, &old)]);
        assert_eq!(forward.len(), 1, "{forward:?}");
        assert!(forward[0].contains("stock"), "{forward:?}");
    }

    #[test]
    fn changing_a_field_type_is_reported_with_the_field_name() {
        let old = product("");
        let new = Schema::parse_str(
            r#"{"type": "record", "name": "Product", "namespace": "com.buyonline.product", "fields": [
                {"name": "id", "type": "int"}, {"name": "price", "type": "string"}]}"#,
        )
        .unwrap();
        let problems = incompatibilities(CompatibilityLevel::Backward, &new, &[(1, &old)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("price"), "{problems:?}");
    }

    /// Confluent's check (Java Avro's `SchemaCompatibility`) compares logical types by their
    /// underlying type; so does ours. Our product schema dropped `timestamp-micros` from
    /// `last_updated_micros` (a plain `long` since): the registry accepts it as a new version
    /// whatever the subject's level, and the earlier version is accepted after it too.
    #[test]
    fn dropping_a_logical_type_is_compatible_at_every_level() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/");
        for (earlier, current) in [
            (
                "history/product_value.timestamp-micros.avsc",
                "product_value.avsc",
            ),
            (
                "history/product_value_text_id.timestamp-micros.avsc",
                "product_value_text_id.avsc",
            ),
        ] {
            let read = |name: &str| {
                Schema::parse_str(&std::fs::read_to_string(format!("{root}{name}")).unwrap())
                    .unwrap()
            };
            let (earlier, current) = (read(earlier), read(current));
            for level in CompatibilityLevel::ALL {
                assert_eq!(
                    incompatibilities(level, &current, &[(1, &earlier)]),
                    Vec::<String>::new(),
                    "{level}"
                );
                assert_eq!(
                    incompatibilities(level, &earlier, &[(1, &current)]),
                    Vec::<String>::new(),
                    "{level}"
                );
            }
        }
    }

    #[test]
    fn type_promotion_is_one_way() {
        let int_schema = Schema::parse_str(r#""int""#).unwrap();
        let long_schema = Schema::parse_str(r#""long""#).unwrap();
        // A long reader reads int data, an int reader cannot read long data.
        assert!(incompatibilities(
            CompatibilityLevel::Backward,
            &long_schema,
            &[(1, &int_schema)]
        )
        .is_empty());
        assert_eq!(
            incompatibilities(
                CompatibilityLevel::Forward,
                &long_schema,
                &[(1, &int_schema)]
            )
            .len(),
            1
        );
    }

    #[test]
    fn every_given_version_is_checked() {
        let with_stock = product(r#", {"name": "stock", "type": "int"}"#);
        let plain = product("");
        let new = product(r#", {"name": "stock", "type": "int"}"#);
        // Against version 2 (with stock) fine, against version 1 (without) the new required field fails.
        let problems = incompatibilities(
            CompatibilityLevel::BackwardTransitive,
            &new,
            &[(2, &with_stock), (1, &plain)],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("version 1"), "{problems:?}");
    }
}
