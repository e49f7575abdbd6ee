//! Turns a Kafka record value into an [`Input`]: a [`Product`] (Avro in the Confluent wire
//! format, `INPUT_FORMAT=avro`) or any JSON object (`INPUT_FORMAT=json`, e.g. prototype 004's
//! `user-login` events), telling poison pills (that will never decode) from a registry that is
//! only unreachable for now (retry later).

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use common::avro::{decode_product, own_schema_kind, unframe, view_own_datum, CodecError, IdKind};
use common::product::{Product, ProductView};
use common::registry::{RegistryClient, RegistryError};
use tokio::runtime::Handle;

use crate::transform::TransformError;

/// Why a record is a poison pill (the `reason` label of `consumer_dlq_records_total` and the
/// `dlq.error.reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonReason {
    /// No value, or not the Confluent wire format (magic byte 0 + 4-byte schema id).
    WireFormat,
    /// The registry does not know the schema id (or holds an unparsable schema under it).
    UnknownSchema,
    /// The Avro datum does not decode with its writer schema into a product.
    Decode,
    /// The product cannot be transformed (e.g. the price is not a finite number).
    Transform,
}

impl PoisonReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WireFormat => "wire_format",
            Self::UnknownSchema => "unknown_schema",
            Self::Decode => "decode",
            Self::Transform => "transform",
        }
    }
}

/// A record that will never be processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub reason: PoisonReason,
    pub message: String,
}

impl Poison {
    pub fn new(reason: PoisonReason, error: impl std::fmt::Display) -> Self {
        Self {
            reason,
            message: error.to_string(),
        }
    }
}

impl From<TransformError> for Poison {
    fn from(e: TransformError) -> Self {
        Self::new(PoisonReason::Transform, e)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("poison pill ({}): {}", .0.reason.as_str(), .0.message)]
    Poison(Poison),
    /// Not the record's fault: retry later, never dead-letter.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(RegistryError),
}

/// How record values are encoded (`INPUT_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Products, Avro in the Confluent wire format (the producer's output).
    Avro,
    /// One JSON object per record, carried through as it is.
    Json,
}

/// A decoded record value.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    Product(DecodedProduct<'a>),
    Json(serde_json::Map<String, serde_json::Value>),
}

/// A decoded product: read in place from the record (written with one of our own schemas, the
/// usual case), or resolved from another writer schema into a [`Product`].
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedProduct<'a> {
    InPlace(ProductView<'a>),
    Resolved(Product),
}

impl DecodedProduct<'_> {
    pub fn view(&self) -> ProductView<'_> {
        match self {
            Self::InPlace(view) => *view,
            Self::Resolved(product) => product.view(),
        }
    }
}

/// Decodes values, fetching writer schemas by id from the registry (kept here once fetched:
/// schema ids are immutable).
pub struct Decoder {
    format: InputFormat,
    registry: Arc<RegistryClient>,
    runtime: Handle,
    schemas: HashMap<u32, WriterSchema>,
    /// The last record's schema: consecutive records nearly always share it (no hashing then).
    last: Option<(u32, WriterSchema)>,
}

/// One of our own product schemas (int or text id; read in place), or another writer schema
/// (resolved).
#[derive(Clone)]
enum WriterSchema {
    Ours(IdKind),
    Other(Arc<Schema>),
}

impl Decoder {
    /// `runtime` runs the registry requests; `decode` must be called outside of it (it blocks).
    pub fn new(registry: Arc<RegistryClient>, runtime: Handle) -> Self {
        Self::with_format(InputFormat::Avro, registry, runtime)
    }

    pub fn with_format(
        format: InputFormat,
        registry: Arc<RegistryClient>,
        runtime: Handle,
    ) -> Self {
        Self {
            format,
            registry,
            runtime,
            schemas: HashMap::new(),
            last: None,
        }
    }

    /// Decodes a value in the configured [`InputFormat`].
    pub fn decode_input<'a>(&mut self, value: Option<&'a [u8]>) -> Result<Input<'a>, DecodeError> {
        match self.format {
            InputFormat::Avro => self.decode(value).map(Input::Product),
            InputFormat::Json => decode_json_object(value).map(Input::Json),
        }
    }

    /// Decodes a product (Avro, Confluent wire format).
    pub fn decode<'a>(
        &mut self,
        value: Option<&'a [u8]>,
    ) -> Result<DecodedProduct<'a>, DecodeError> {
        let poison = |reason, e: CodecError| DecodeError::Poison(Poison::new(reason, e));
        let Some(value) = value else {
            return Err(DecodeError::Poison(Poison::new(
                PoisonReason::WireFormat,
                "record has no value",
            )));
        };
        let (schema_id, datum) = unframe(value).map_err(|e| poison(PoisonReason::WireFormat, e))?;
        match self.writer_schema(schema_id)? {
            WriterSchema::Ours(kind) => view_own_datum(datum, kind).map(DecodedProduct::InPlace),
            WriterSchema::Other(schema) => {
                decode_product(&schema, datum).map(DecodedProduct::Resolved)
            }
        }
        .map_err(|e| poison(PoisonReason::Decode, e))
    }

    fn writer_schema(&mut self, id: u32) -> Result<WriterSchema, DecodeError> {
        if let Some((last_id, schema)) = &self.last {
            if *last_id == id {
                return Ok(schema.clone());
            }
        }
        let schema = self.known_or_fetched_schema(id)?;
        self.last = Some((id, schema.clone()));
        Ok(schema)
    }

    fn known_or_fetched_schema(&mut self, id: u32) -> Result<WriterSchema, DecodeError> {
        if let Some(schema) = self.schemas.get(&id) {
            return Ok(schema.clone());
        }
        let registry = Arc::clone(&self.registry);
        match self
            .runtime
            .block_on(async move { registry.schema(id).await })
        {
            Ok(schema) => {
                let schema = match own_schema_kind(&schema) {
                    Some(kind) => WriterSchema::Ours(kind),
                    None => WriterSchema::Other(schema),
                };
                self.schemas.insert(id, schema.clone());
                Ok(schema)
            }
            Err(e) if is_unknown_schema(&e) => Err(DecodeError::Poison(Poison::new(
                PoisonReason::UnknownSchema,
                format!("writer schema id {id}: {e}"),
            ))),
            Err(e) => Err(DecodeError::RegistryUnavailable(e)),
        }
    }
}

fn decode_json_object(
    value: Option<&[u8]>,
) -> Result<serde_json::Map<String, serde_json::Value>, DecodeError> {
    let poison = |reason, message: String| DecodeError::Poison(Poison::new(reason, message));
    let Some(value) = value else {
        return Err(poison(
            PoisonReason::WireFormat,
            "record has no value".into(),
        ));
    };
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        Ok(other) => Err(poison(
            PoisonReason::Decode,
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
        Err(e) => Err(poison(PoisonReason::Decode, format!("not JSON: {e}"))),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The registry answered, and the answer is that this id has no (usable) schema. Other errors
/// (network, 5xx, 401/403 from wrong credentials) are the registry's problem, not the record's.
fn is_unknown_schema(e: &RegistryError) -> bool {
    match e {
        RegistryError::Rejected {
            status, error_code, ..
        } => *status == 404 || *error_code == Some(40403),
        RegistryError::InvalidSchema { .. } => true,
        RegistryError::Unreachable { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_found_and_invalid_schemas_are_the_records_fault() {
        let rejected = |status, error_code| RegistryError::Rejected {
            status,
            error_code,
            message: String::new(),
            what: String::new(),
        };
        assert!(is_unknown_schema(&rejected(404, Some(40403))));
        assert!(!is_unknown_schema(&rejected(401, None)));
        assert!(!is_unknown_schema(&rejected(500, Some(50001))));
        let invalid = apache_avro::Schema::parse_str("{").unwrap_err();
        assert!(is_unknown_schema(&RegistryError::InvalidSchema {
            id: 1,
            source: invalid
        }));
    }

    #[test]
    fn json_input_takes_objects_and_dead_letters_the_rest() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let registry = Arc::new(RegistryClient::new(common::registry::RegistryConfig::new(
            "http://127.0.0.1:9",
        )));
        let mut decoder =
            Decoder::with_format(InputFormat::Json, registry, runtime.handle().clone());
        match decoder.decode_input(Some(br#"{"locale": "RU", "n": 1}"#)) {
            Ok(Input::Json(object)) => {
                assert_eq!(object["locale"], "RU");
                assert_eq!(object["n"], 1);
            }
            other => panic!("expected a JSON object, got {other:?}"),
        }
        for (value, reason, message) in [
            (None, PoisonReason::WireFormat, "record has no value"),
            (
                Some(&b"[1]"[..]),
                PoisonReason::Decode,
                "expected a JSON object, found an array",
            ),
            (Some(&b"{\"a\":"[..]), PoisonReason::Decode, "not JSON: "),
        ] {
            match decoder.decode_input(value) {
                Err(DecodeError::Poison(p)) => {
                    assert_eq!(p.reason, reason, "{value:?}");
                    assert!(p.message.starts_with(message), "{}", p.message);
                }
                other => panic!("expected a poison pill for {value:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_a_wire_format_poison_pill_without_asking_the_registry() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Nothing listens on port 9 (discard): a registry call would fail as unavailable.
        let registry = Arc::new(RegistryClient::new(common::registry::RegistryConfig::new(
            "http://127.0.0.1:9",
        )));
        let mut decoder = Decoder::new(registry, runtime.handle().clone());
        for value in [None, Some(&b"{\"id\": 1}"[..]), Some(&[0u8, 1][..])] {
            match decoder.decode(value) {
                Err(DecodeError::Poison(p)) => {
                    assert_eq!(p.reason, PoisonReason::WireFormat, "{value:?}")
                }
                other => panic!("expected a wire-format poison pill for {value:?}, got {other:?}"),
            }
        }
        match decoder.decode(Some(&[0, 0, 0, 0, 1, 2][..])) {
            Err(DecodeError::RegistryUnavailable(_)) => {}
            other => panic!("an unreachable registry is not a poison pill: {other:?}"),
        }
    }
}
