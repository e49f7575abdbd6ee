//! The topic sink (`CONSUMER_SINK=topic`, prototype 004): Kafka-to-Kafka processing. Every kept
//! record is produced to `OUTPUT_TOPIC` (default `processed-{TOPIC}`) as one JSON object, keyed
//! like the input record (same key bytes, Java-compatible murmur2 partitioner), with headers
//! saying where it came from:
//!
//! | header | value |
//! |---|---|
//! | `source.topic`, `source.partition`, `source.offset` | where the input record was read |
//!
//! The value is the record as it was transformed (a product: the JSON log's product fields; a
//! JSON input object: its fields) plus the fields this stage adds:
//! - `processed_at`: when the batch was processed (RFC 3339, UTC, µs);
//! - for a JSON input object whose `timestamp` is Unix epoch seconds (a number or a string of
//!   digits, as prototype 004's `user-login` events have): `event_time`, the same instant in
//!   RFC 3339.
//!
//! A batch is durable once the output topic acknowledged every record of it (idempotent producer,
//! `acks=all`); only then are the input offsets committed. A batch that is not acknowledged within
//! `DELIVERY_TIMEOUT` fails the write: the consumer stops without committing and reads the batch
//! again after a restart.
//!
//! Delivery is at least once: a graceful stop or a rebalance commits exactly what was produced,
//! but a replica killed after the output acknowledged a batch and before its offsets were
//! committed produces that batch again when the partition resumes (at most one batch per
//! partition; the `source.*` headers identify such duplicates). Kafka transactions would close
//! that window; the test broker (tansu 0.6) has none, so they are not used.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::kafka::KafkaConfig;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Map, Value};

use super::json_log::format_written_at;
use super::{Positions, RecordValue, Sink, SinkBatch, SinkError, SinkRecord};
use crate::transform::TransformedProduct;

/// How long the output topic may take to acknowledge a batch.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TopicSink {
    producer: FutureProducer,
    input_topic: String,
    output_topic: String,
    buf: Vec<u8>,
}

impl std::fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSink")
            .field("input_topic", &self.input_topic)
            .field("output_topic", &self.output_topic)
            .finish_non_exhaustive()
    }
}

/// A product as the output topic carries it.
#[derive(Serialize)]
struct ProductValue<'a> {
    #[serde(flatten)]
    product: ProductFields<'a>,
    processed_at: &'a str,
}

#[derive(Serialize)]
struct ProductFields<'a> {
    id: &'a common::product::ProductId,
    name: &'a str,
    category: Option<&'a str>,
    price: f64,
    last_updated: &'a str,
    last_updated_micros: Option<i64>,
    discount_price: Option<f64>,
}

impl<'a> From<&'a TransformedProduct> for ProductFields<'a> {
    fn from(p: &'a TransformedProduct) -> Self {
        Self {
            id: &p.id,
            name: p.name(),
            category: p.category(),
            price: p.price,
            last_updated: p.last_updated(),
            last_updated_micros: p.last_updated_micros,
            discount_price: p.discount_price,
        }
    }
}

/// A JSON input object as the output topic carries it.
#[derive(Serialize)]
struct ObjectValue<'a> {
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<String>,
    processed_at: &'a str,
}

/// `timestamp` as Unix epoch seconds (a number or a string of digits), in RFC 3339.
pub fn event_time(fields: &Map<String, Value>) -> Option<String> {
    let seconds = match fields.get("timestamp")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    DateTime::<Utc>::from_timestamp(seconds, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The output value of `record`, as JSON bytes appended to `buf`.
pub fn append_value(buf: &mut Vec<u8>, record: &SinkRecord, processed_at: &str) {
    let written = match &record.value {
        RecordValue::Product(product) => serde_json::to_writer(
            &mut *buf,
            &ProductValue {
                product: product.into(),
                processed_at,
            },
        ),
        RecordValue::Json(fields) => serde_json::to_writer(
            &mut *buf,
            &ObjectValue {
                fields,
                event_time: event_time(fields),
                processed_at,
            },
        ),
    };
    written.expect("an output value always serializes (finite numbers, string keys)");
}

impl TopicSink {
    /// A producer for `output_topic` (which must exist: the consumer creates it at start-up).
    pub fn new(
        kafka: &KafkaConfig,
        input_topic: &str,
        output_topic: &str,
    ) -> Result<Self, SinkError> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|source| SinkError::Kafka {
                topic: output_topic.to_owned(),
                action: "create the producer",
                source,
            })?;
        Ok(Self {
            producer,
            input_topic: input_topic.to_owned(),
            output_topic: output_topic.to_owned(),
            buf: Vec::new(),
        })
    }

    fn error(&self, action: &'static str, source: KafkaError) -> SinkError {
        SinkError::Kafka {
            topic: self.output_topic.clone(),
            action,
            source,
        }
    }
}

impl Sink for TopicSink {
    fn write(&mut self, batch: &SinkBatch<'_>) -> Result<(), SinkError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let processed_at = format_written_at(batch.written_at);
        let mut deliveries = Vec::with_capacity(batch.records.len());
        for record in batch.records {
            self.buf.clear();
            append_value(&mut self.buf, record, &processed_at);
            let partition = record.partition.to_string();
            let offset = record.offset.to_string();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "source.topic",
                    value: Some(self.input_topic.as_bytes()),
                })
                .insert(Header {
                    key: "source.partition",
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: "source.offset",
                    value: Some(offset.as_bytes()),
                });
            let mut output = FutureRecord::to(&self.output_topic)
                .payload(&self.buf)
                .headers(headers);
            if let Some(key) = &record.key {
                output = output.key(key);
            }
            // A full local queue drains as the broker acknowledges; wait for room.
            let delivery = loop {
                match self.producer.send_result(output) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        output = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(self.error("produce", e)),
                }
            };
            deliveries.push(delivery);
        }
        for delivered in futures::executor::block_on(join_all(deliveries)) {
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.error("deliver", e)),
                Err(_) => return Err(self.error("deliver", KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// The committed offsets are exact: they are committed once the output acknowledged.
    fn resume_positions(&self, _partitions: &[i32]) -> Result<Positions, SinkError> {
        Ok(Positions::new())
    }

    fn needs_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: RecordValue) -> SinkRecord {
        SinkRecord {
            partition: 0,
            offset: 1,
            key: None,
            value,
            changed_at_micros: None,
        }
    }

    fn value_of(record: &SinkRecord) -> Value {
        let mut buf = Vec::new();
        append_value(&mut buf, record, "2024-05-01T10:00:00.000000Z");
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn json_objects_get_processing_and_event_time() {
        let login = json!({"user_id": "u", "locale": "RU", "timestamp": "1694479551"});
        let value = value_of(&record(RecordValue::Json(
            login.as_object().unwrap().clone(),
        )));
        assert_eq!(
            value,
            json!({"user_id": "u", "locale": "RU", "timestamp": "1694479551",
                "event_time": "2023-09-12T00:45:51Z", "processed_at": "2024-05-01T10:00:00.000000Z"})
        );
        let no_time = json!({"timestamp": "soon"});
        let value = value_of(&record(RecordValue::Json(
            no_time.as_object().unwrap().clone(),
        )));
        assert_eq!(value.get("event_time"), None);
        let numeric = json!({"timestamp": 0});
        assert_eq!(
            event_time(numeric.as_object().unwrap()).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn products_keep_the_transformed_fields() {
        let product = TransformedProduct::from_logged_fields(
            7.into(),
            "Lamp",
            Some("CAT_5"),
            10.0,
            "2024-05-01 10:00:00",
            Some(1),
            Some(8.0),
        );
        let value = value_of(&record(RecordValue::Product(product)));
        assert_eq!(
            value,
            json!({"id": 7, "name": "Lamp", "category": "CAT_5", "price": 10.0,
                "last_updated": "2024-05-01 10:00:00", "last_updated_micros": 1,
                "discount_price": 8.0, "processed_at": "2024-05-01T10:00:00.000000Z"})
        );
    }
}
