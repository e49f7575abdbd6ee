//! The schema evolution rule (README, "Schema evolution"), checked on every `schemas/*.avsc`:
//!
//! - the fields of the original prototype's schema (`schemas/prototype_product_value.avsc`, a
//!   copy of `shared/reference-data/product_value_avro_schema.json`) stay as they are, first and
//!   in order;
//! - every field we add is optional (a union with `null` first) with the default `null`;
//! - and decodes, in the common client libraries, to a JSON-native value: the original consumer
//!   decodes with the *latest registered* schema and `json.dump`s the result. So no logical type
//!   (Python's fastavro decodes `timestamp-*` and `date` to `datetime`/`date`, `decimal` to
//!   `Decimal`, `uuid` to `UUID`; Java's Avro and Confluent's serdes to `Instant`, `LocalDate`,
//!   `BigDecimal`, `UUID`), and no `bytes` or `fixed` (Python `bytes`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The original prototype's record.
const ORIGINAL: &str = "prototype_product_value.avsc";

/// Schemas that evolve no original schema, and why.
const WITHOUT_ORIGINAL: &[(&str, &str)] = &[(
    "customer_value.avsc",
    "the CSV example's Avro variant: prototype 000 wrote JSON, so no original consumer reads it",
)];

/// Fields of an original schema that a schema changes on purpose, and why.
const CHANGED_ON_PURPOSE: &[(&str, &str, &str)] = &[(
    "product_value_text_id.avsc",
    "id",
    "tables with text ids (prototype 002's products.product_id) are a topic of their own",
)];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn full_name(schema: &Value) -> String {
    format!(
        "{}.{}",
        schema["namespace"].as_str().unwrap_or_default(),
        schema["name"].as_str().unwrap_or_default()
    )
}

fn fields(schema: &Value) -> &Vec<Value> {
    schema["fields"].as_array().expect("a record with fields")
}

/// A field without its documentation (which changes nothing a client decodes).
fn without_doc(field: &Value) -> Map<String, Value> {
    let mut field = field.as_object().expect("a field is an object").clone();
    field.remove("doc");
    field
}

/// Why values of `schema` would not decode to JSON-native values, if they would not.
fn not_json_native(schema: &Value) -> Option<String> {
    match schema {
        Value::String(name) => match name.as_str() {
            "null" | "boolean" | "int" | "long" | "float" | "double" | "string" => None,
            "bytes" => Some("bytes decode to Python bytes, which json.dump cannot write".into()),
            // A named type defined elsewhere in the schema: checked where it is defined.
            _ => None,
        },
        Value::Array(branches) => branches.iter().find_map(not_json_native),
        Value::Object(object) => {
            if let Some(logical) = object.get("logicalType") {
                return Some(format!(
                    "logical type {logical}: client libraries decode it to an object (datetime, date, Decimal, UUID), not a JSON value"
                ));
            }
            match object.get("type").and_then(Value::as_str) {
                Some("record") => object["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|f| not_json_native(&f["type"])),
                Some("array") => not_json_native(&object["items"]),
                Some("map") => not_json_native(&object["values"]),
                Some("enum") => None,
                Some("fixed") => Some("fixed decodes to Python bytes".into()),
                _ => not_json_native(&object["type"]),
            }
        }
        other => Some(format!("not a schema: {other}")),
    }
}

/// Why an added field breaks the rule, if it does.
fn added_field_problem(field: &Value) -> Option<String> {
    let is_optional = field["type"]
        .as_array()
        .is_some_and(|branches| branches.first() == Some(&Value::from("null")));
    if !is_optional || field.get("default") != Some(&Value::Null) {
        return Some(
            "not optional: its type must be a union with \"null\" first and its default null"
                .into(),
        );
    }
    not_json_native(&field["type"])
}

/// Every breach of the rule by `schema` (file `name`) evolving `original`.
fn problems(name: &str, schema: &Value, original: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if full_name(schema) != full_name(original) {
        problems.push(format!(
            "{name}: record {} is not the original's {}",
            full_name(schema),
            full_name(original)
        ));
    }
    let (ours, theirs) = (fields(schema), fields(original));
    for (i, original_field) in theirs.iter().enumerate() {
        let field_name = original_field["name"].as_str().unwrap_or_default();
        let on_purpose = CHANGED_ON_PURPOSE
            .iter()
            .any(|(file, field, _)| *file == name && *field == field_name);
        match ours.get(i) {
            Some(field) if field["name"] == original_field["name"] && on_purpose => {}
            Some(field) if without_doc(field) == without_doc(original_field) => {}
            other => problems.push(format!(
                "{name}: field {i} must stay the original's {original_field}, is {other:?}"
            )),
        }
    }
    for field in ours.iter().skip(theirs.len()) {
        if let Some(problem) = added_field_problem(field) {
            problems.push(format!("{name}: added field {}: {problem}", field["name"]));
        }
    }
    problems
}

#[test]
fn every_schema_keeps_the_original_fields_and_adds_only_optional_json_native_ones() {
    let dir = schemas_dir();
    let original = read(&dir.join(ORIGINAL));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("schemas/")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".avsc"))
        .collect();
    files.sort();
    let mut checked = BTreeSet::new();
    let mut all_problems = Vec::new();
    for name in &files {
        if WITHOUT_ORIGINAL.iter().any(|(file, _)| file == name) {
            continue;
        }
        let schema = read(&dir.join(name));
        all_problems.extend(problems(name, &schema, &original));
        checked.insert(name.as_str());
    }
    assert_eq!(all_problems, Vec::<String>::new());
    // The rule is checked where it matters: our product schemas and the original itself.
    for name in ["product_value.avsc", "product_value_text_id.avsc", ORIGINAL] {
        assert!(checked.contains(name), "{name} checked: {checked:?}");
    }
    for (file, _) in WITHOUT_ORIGINAL {
        assert!(files.iter().any(|f| f == file), "{file} still exists");
    }
}

#[test]
fn the_rule_rejects_what_breaks_the_original_consumer() {
    let dir = schemas_dir();
    let original = read(&dir.join(ORIGINAL));
    // Our schema as it was: last_updated_micros was a timestamp-micros, a datetime in Python.
    let earlier = read(&dir.join("history/product_value.timestamp-micros.avsc"));
    let found = problems("earlier", &earlier, &original);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("last_updated_micros") && found[0].contains("timestamp-micros"),
        "{found:?}"
    );

    let with_added = |field: Value| {
        let mut schema = original.clone();
        schema["fields"].as_array_mut().unwrap().push(field);
        problems("test", &schema, &original)
    };
    let rejected = [
        serde_json::json!({"name": "stock", "type": "int"}),
        serde_json::json!({"name": "stock", "type": "int", "default": 0}),
        serde_json::json!({"name": "note", "type": ["string", "null"], "default": "x"}),
        serde_json::json!({"name": "note", "type": ["null", "string"]}),
        serde_json::json!({"name": "raw", "type": ["null", "bytes"], "default": null}),
        serde_json::json!({"name": "cost", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}], "default": null}),
        serde_json::json!({"name": "uid", "type": ["null", {"type": "string", "logicalType": "uuid"}], "default": null}),
        serde_json::json!({"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null}),
        serde_json::json!({"name": "tags", "type": ["null", {"type": "array", "items": {"type": "long", "logicalType": "timestamp-millis"}}], "default": null}),
        serde_json::json!({"name": "hash", "type": ["null", {"type": "fixed", "name": "Md5", "size": 16}], "default": null}),
    ];
    for field in rejected {
        assert_eq!(with_added(field.clone()).len(), 1, "{field} is rejected");
    }
    let accepted = [
        serde_json::json!({"name": "note", "type": ["null", "string"], "default": null}),
        serde_json::json!({"name": "micros", "type": ["null", "long"], "default": null, "doc": "µs"}),
        serde_json::json!({"name": "tags", "type": ["null", {"type": "array", "items": "string"}], "default": null}),
        serde_json::json!({"name": "kind", "type": ["null", {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}], "default": null}),
    ];
    for field in accepted {
        assert_eq!(
            with_added(field.clone()),
            Vec::<String>::new(),
            "{field} is accepted"
        );
    }

    // A changed or missing original field is reported too.
    let mut changed = original.clone();
    changed["fields"][3]["type"] = "float".into();
    assert_eq!(problems("test", &changed, &original).len(), 1);
    let mut removed = original.clone();
    removed["fields"].as_array_mut().unwrap().remove(4);
    assert_eq!(problems("test", &removed, &original).len(), 1);
}
