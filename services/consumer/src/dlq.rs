//! The dead-letter topic: poison pills go there with their original key, value and headers, plus
//! headers saying what went wrong and where the record came from:
//!
//! | header | value |
//! |---|---|
//! | `dlq.error.reason` | `wire_format`, `unknown_schema`, `decode` or `transform` |
//! | `dlq.error.message` | the error, as text |
//! | `dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset` | where the record was read |
//! | `dlq.payload.omitted` | only when the record with these headers is larger than the dead-letter producer takes ([`DeadLetterQueue::MAX_RECORD_BYTES`]): the original value's size; the value is left out (and a key over 4 KiB cut), so a huge poison pill is set aside instead of stopping the consumer again and again |
//!
//! Sending is asynchronous; [`DeadLetterQueue::wait_delivered`] is called before a batch's
//! offsets are made durable, so an offset is never stored past a poison pill the dead-letter topic
//! has not acknowledged.

use std::time::Duration;

use common::kafka::KafkaConfig;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::runtime::Handle;

use crate::decode::Poison;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot create the dead-letter producer: {0}")]
    Create(KafkaError),
    #[error("dead-letter topic {topic} did not acknowledge a poison pill: {source}")]
    Delivery { topic: String, source: KafkaError },
}

pub struct DeadLetterQueue {
    producer: FutureProducer,
    topic: String,
    runtime: Handle,
    in_flight: Vec<DeliveryFuture>,
}

impl DeadLetterQueue {
    /// How long the producer keeps retrying a poison pill before giving up (and stopping the
    /// consumer, which then re-reads it after a restart).
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
    /// The largest dead letter the producer sends (`message.max.bytes`, librdkafka's default).
    pub const MAX_RECORD_BYTES: usize = 1_000_000;
    /// A key longer than this is cut when the value has to be left out.
    const MAX_KEY_BYTES: usize = 4096;

    pub fn new(kafka: &KafkaConfig, topic: &str, runtime: Handle) -> Result<Self, DlqError> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                Self::DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set("message.max.bytes", Self::MAX_RECORD_BYTES.to_string())
            .create()
            .map_err(DlqError::Create)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            runtime,
            in_flight: Vec::new(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues `message` for the dead-letter topic (does not wait for the acknowledgement). A
    /// poison pill too large for the dead-letter producer goes without its value.
    pub fn send(&mut self, message: &BorrowedMessage<'_>, poison: &Poison) -> Result<(), DlqError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = |omitted: Option<&str>| {
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for header in original.iter() {
                    headers = headers.insert(header);
                }
            }
            for (key, value) in [
                ("dlq.error.reason", poison.reason.as_str()),
                ("dlq.error.message", poison.message.as_str()),
                ("dlq.source.topic", message.topic()),
                ("dlq.source.partition", partition.as_str()),
                ("dlq.source.offset", offset.as_str()),
            ]
            .into_iter()
            .chain(omitted.map(|size| ("dlq.payload.omitted", size)))
            {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            headers
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers(None));
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        let size = message.payload().map_or(0, <[u8]>::len);
        let omitted = format!(
            "{size} bytes (over the dead-letter producer's {} bytes)",
            Self::MAX_RECORD_BYTES
        );
        let mut stripped = false;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((
                    KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize,
                    ),
                    _,
                )) if !stripped => {
                    stripped = true;
                    tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        value_bytes = size,
                        limit_bytes = Self::MAX_RECORD_BYTES,
                        topic = %self.topic,
                        "a poison pill is too large for the dead-letter topic: it goes there without its value"
                    );
                    record = FutureRecord::to(&self.topic).headers(headers(Some(&omitted)));
                    if let Some(key) = message.key() {
                        record = record.key(&key[..key.len().min(Self::MAX_KEY_BYTES)]);
                    }
                }
                Err((source, _)) => {
                    return Err(DlqError::Delivery {
                        topic: self.topic.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits until every queued poison pill is acknowledged. Blocks: call outside the runtime.
    pub fn wait_delivered(&mut self) -> Result<usize, DlqError> {
        if self.in_flight.is_empty() {
            return Ok(0);
        }
        let pending = std::mem::take(&mut self.in_flight);
        let count = pending.len();
        let results = self.runtime.block_on(join_all(pending));
        for result in results {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(DlqError::Delivery {
                        topic: self.topic.clone(),
                        source,
                    })
                }
                Err(_canceled) => {
                    return Err(DlqError::Delivery {
                        topic: self.topic.clone(),
                        source: KafkaError::Canceled,
                    })
                }
            }
        }
        Ok(count)
    }
}
