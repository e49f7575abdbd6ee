//! The dead-letter topic: poison pills go there with their original key, value and headers, plus
//! headers saying what went wrong and where the record came from:
//!
//! | header | value |
//! |---|---|
//! | `dlq.error.reason` | `wire_format`, `unknown_schema`, `decode` or `transform` |
//! | `dlq.error.message` | the error, as text |
//! | `dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset` | where the record was read |
//!
//! Sending is asynchronous; [`DeadLetterQueue::wait_delivered`] is called before a batch's
//! offsets are made durable, so an offset is never stored past a poison pill the dead-letter topic
//! has not acknowledged. A delivery that failed fails every later wait too: the pills it waited
//! for are no longer in flight, so a later wait must not report them delivered.

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
    /// The first delivery failure, reported by every later wait.
    failed: Option<KafkaError>,
}

impl DeadLetterQueue {
    /// How long the producer keeps retrying a poison pill before giving up (and stopping the
    /// consumer, which then re-reads it after a restart).
    pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

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
            .create()
            .map_err(DlqError::Create)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            runtime,
            in_flight: Vec::new(),
            failed: None,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues `message` for the dead-letter topic (does not wait for the acknowledgement).
    pub fn send(&mut self, message: &BorrowedMessage<'_>, poison: &Poison) -> Result<(), DlqError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            ("dlq.error.reason", poison.reason.as_str()),
            ("dlq.error.message", poison.message.as_str()),
            ("dlq.source.topic", message.topic()),
            ("dlq.source.partition", partition.as_str()),
            ("dlq.source.offset", offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
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
        if self.failed.is_none() {
            let pending = std::mem::take(&mut self.in_flight);
            let count = pending.len();
            if count == 0 {
                return Ok(0);
            }
            let results = self.runtime.block_on(join_all(pending));
            self.failed = results.into_iter().find_map(|result| match result {
                Ok(Ok(_)) => None,
                Ok(Err((source, _))) => Some(source),
                Err(_canceled) => Some(KafkaError::Canceled),
            });
            if self.failed.is_none() {
                return Ok(count);
            }
        }
        Err(DlqError::Delivery {
            topic: self.topic.clone(),
            source: self.failed.clone().expect("a failure was recorded"),
        })
    }
}
