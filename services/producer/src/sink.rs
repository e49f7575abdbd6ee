//! The Kafka side: producer settings, enqueueing records, and tracking the acknowledgements of a
//! batch (one shared tracker per batch instead of a future per record: librdkafka's delivery
//! callback updates it directly, which keeps per-record overhead close to raw librdkafka).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::kafka::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::Notify;

use crate::config::Compression;

/// At most this many records go into one record batch of one partition (`batch.num.messages`).
/// The read-back after a restart starts this many offsets before the durable offset, so it
/// starts at or before the first offset of the batch holding the durable offset: some brokers
/// (tansu 0.6) return nothing of a batch when a fetch starts in its middle.
pub const MAX_RECORDS_PER_BATCH: i64 = 1000;

/// The largest record the producer sends (`message.max.bytes`, librdkafka's default, set
/// explicitly so the code knows it): a bigger one is refused when enqueued and set aside.
pub const MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The producer settings (shared by the service and the benchmark's raw baseline):
///
/// * `enable.idempotence=true`, `acks=all`: no duplicates from retries, order kept per partition.
/// * `partitioner=murmur2_random`: keys land on the partitions the Java client would pick.
/// * `linger.ms=5`: records of a capture batch go out in few requests (a 5000-row batch is
///   enqueued within a few milliseconds; tansu spends much of its CPU per request), and a change
///   waits little once capture has caught up. Against 20 ms: the same producer bench figures
///   (63-70 % of the raw rate), and pipeline-bench p50/p99 97/165 ms instead of 113/184 ms.
/// * `batch.num.messages`: see [`MAX_RECORDS_PER_BATCH`].
/// * `message.timeout.ms=0`: librdkafka never gives up on a record. While the broker is down
///   records wait in the (bounded) queue and are retried in order once it is back; the producer
///   stops reading from the database meanwhile.
/// * `message.max.bytes`: see [`MESSAGE_MAX_BYTES`].
pub fn producer_client_config(kafka: &KafkaConfig, compression: Compression) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("client.id", "productstream-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", compression.as_str())
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5")
        .set("batch.num.messages", MAX_RECORDS_PER_BATCH.to_string())
        .set("message.max.bytes", MESSAGE_MAX_BYTES.to_string());
    config
}

/// Whether Kafka refused a record for what it is (too large, invalid), rather than for the state
/// of the cluster (unreachable, not authorized, no such topic): sending it again cannot help,
/// sending the others can. When the broker refuses a whole batch for one bad record, every
/// record of the batch fails with the code: each is then sent alone to find the bad one.
pub fn is_refused_record(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// Whether the record was refused for its size.
pub fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

/// A record of the main topic that Kafka did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub error: String,
    /// Refused for what it is ([`is_refused_record`]), or with the batch it came in.
    pub refused: bool,
}

/// What Kafka answered for the records of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSummary {
    /// Records acknowledged on the main topic.
    pub produced: u64,
    /// Per partition of the main topic, the offset after the highest acknowledged record.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Records (main or dead-letter topic) that failed, with the first error.
    pub failures: u64,
    pub first_error: Option<String>,
    /// The failed records of the main topic.
    pub failed: Vec<FailedRecord>,
}

impl AckSummary {
    /// Adds what Kafka answered for records produced on their own for this batch.
    pub fn absorb(&mut self, other: AckSummary) {
        self.produced += other.produced;
        for (partition, next) in other.next_offsets {
            let known = self.next_offsets.entry(partition).or_insert(0);
            *known = (*known).max(next);
        }
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.failed.extend(other.failed);
    }
}

#[derive(Default)]
struct AckCounts {
    enqueued: u64,
    settled: u64,
    sealed: bool,
    summary: AckSummary,
}

impl AckCounts {
    fn complete(&self) -> bool {
        self.sealed && self.settled == self.enqueued
    }
}

/// Acknowledgements of one batch: records are counted as they are enqueued, the batch is sealed
/// once all are, and [`BatchAcks::wait`] resolves when every record is settled.
pub struct BatchAcks {
    topic: String,
    counts: Mutex<AckCounts>,
    settled: Notify,
}

impl BatchAcks {
    /// A tracker for a batch whose main records go to `topic`.
    pub fn new(topic: &str) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.to_owned(),
            counts: Mutex::default(),
            settled: Notify::new(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, AckCounts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueued(&self) {
        self.counts().enqueued += 1;
    }

    /// No more records will be added.
    pub fn seal(&self) {
        let complete = {
            let mut counts = self.counts();
            counts.sealed = true;
            counts.complete()
        };
        if complete {
            self.settled.notify_one();
        }
    }

    /// Adds the outcome of records produced on their own (see [`KafkaSink::produce_alone`]).
    pub fn absorb(&self, summary: AckSummary) {
        self.counts().summary.absorb(summary);
    }

    fn settle(&self, topic: &str, outcome: Result<(i32, i64), (String, Option<FailedRecord>)>) {
        let complete = {
            let mut counts = self.counts();
            counts.settled += 1;
            match outcome {
                Ok((partition, offset)) if topic == self.topic => {
                    counts.summary.produced += 1;
                    let next = counts.summary.next_offsets.entry(partition).or_insert(0);
                    *next = (*next).max(offset + 1);
                }
                Ok(_) => {}
                Err((e, failed)) => {
                    counts.summary.failures += 1;
                    counts
                        .summary
                        .first_error
                        .get_or_insert_with(|| format!("{topic}: {e}"));
                    if topic == self.topic {
                        counts.summary.failed.extend(failed);
                    }
                }
            }
            counts.complete()
        };
        if complete {
            self.settled.notify_one();
        }
    }

    /// Resolves once the batch is sealed and every record is acknowledged or failed.
    pub async fn wait(self: Arc<Self>) -> AckSummary {
        loop {
            {
                let counts = self.counts();
                if counts.complete() {
                    return counts.summary.clone();
                }
            }
            self.settled.notified().await;
        }
    }
}

/// Routes librdkafka's delivery reports to the batch trackers.
pub struct SinkContext;

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<BatchAcks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Self::DeliveryOpaque) {
        match result {
            Ok(message) => {
                acks.settle(message.topic(), Ok((message.partition(), message.offset())))
            }
            Err((e, message)) => {
                // Copies only on the error path: the pipeline needs to know which row it was.
                let failed = FailedRecord {
                    key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    error: e.to_string(),
                    refused: is_refused_record(e),
                };
                acks.settle(message.topic(), Err((e.to_string(), Some(failed))))
            }
        }
    }
}

/// A thin wrapper over librdkafka's producer (its own thread serves delivery reports).
#[derive(Clone)]
pub struct KafkaSink {
    producer: Arc<ThreadedProducer<SinkContext>>,
    config: ClientConfig,
}

impl KafkaSink {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: Arc::new(config.create_with_context(SinkContext)?),
            config: config.clone(),
        })
    }

    /// A new producer with the same settings (a new producer id). After a delivery failed,
    /// the idempotent producer's sequence state may be stuck: a broker without KIP-360's epoch
    /// bump (tansu 0.6) fences every later request of the old producer id. Callers renew once
    /// nothing is in flight; the read-back then tells what reached the topic.
    pub fn renewed(&self) -> Result<Self, KafkaError> {
        Self::new(&self.config)
    }

    /// Enqueues a record counted in `acks`. Waits while librdkafka's queue is full.
    pub async fn enqueue(
        &self,
        acks: &Arc<BatchAcks>,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        self.enqueue_with_headers(acks, topic, key, payload, None)
            .await
    }

    /// Like [`KafkaSink::enqueue`], with record headers.
    pub async fn enqueue_with_headers(
        &self,
        acks: &Arc<BatchAcks>,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<&OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        loop {
            let mut record = BaseRecord::with_opaque_to(topic, Arc::clone(acks))
                .key(key)
                .payload(payload);
            if let Some(headers) = headers {
                record = record.headers(headers.clone());
            }
            match self.producer.send(record) {
                Ok(()) => {
                    acks.enqueued();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Whether a broker answers a metadata request for `topic` within `timeout`.
    pub async fn check_broker(&self, topic: &str, timeout: Duration) -> Result<(), KafkaError> {
        let producer = Arc::clone(&self.producer);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }

    /// Produces one record with nothing else in its request, to learn whether Kafka refuses it
    /// for what it is: waits until everything enqueued before is settled, sends it, and waits for
    /// its answer. `None` on shutdown. Slow (a round trip); only for records under suspicion.
    pub async fn produce_alone(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<AckSummary>, KafkaError> {
        if !self.wait_until_settled(shutdown).await {
            return Ok(None);
        }
        let alone = BatchAcks::new(topic);
        self.enqueue(&alone, topic, key, payload).await?;
        alone.seal();
        tokio::select! {
            () = shutdown.cancelled() => Ok(None),
            summary = alone.wait() => Ok(Some(summary)),
        }
    }

    /// Waits until every enqueued record is settled; false on shutdown. (librdkafka's flush
    /// polls in 100 ms steps; this notices within milliseconds.)
    async fn wait_until_settled(&self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        while self.producer.in_flight_count() > 0 {
            if shutdown.is_cancelled() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// librdkafka's fatal error, if the producer hit one (it cannot produce any more).
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = Arc::clone(&self.producer);
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_completes_when_sealed_and_every_record_settled() {
        let acks = BatchAcks::new("main");
        for _ in 0..3 {
            acks.enqueued();
        }
        acks.enqueued(); // a dead letter
        let waiting = tokio::spawn(Arc::clone(&acks).wait());
        acks.settle("main", Ok((1, 10)));
        acks.settle("main", Ok((1, 11)));
        acks.settle("dead_letters", Ok((0, 3)));
        acks.settle("main", Ok((4, 0)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "not sealed yet");
        acks.seal();
        let summary = waiting.await.unwrap();
        assert_eq!(summary.produced, 3);
        assert_eq!(summary.next_offsets, BTreeMap::from([(1, 12), (4, 1)]));
        assert_eq!(summary.failures, 0);
    }

    #[tokio::test]
    async fn failures_are_counted_with_the_first_error_and_empty_batches_complete() {
        let acks = BatchAcks::new("main");
        acks.enqueued();
        acks.enqueued();
        acks.seal();
        acks.settle("main", Err(("broker said no".into(), None)));
        acks.settle("main", Err(("again".into(), None)));
        assert!(Arc::clone(&acks).wait().await.failed.is_empty());
        let summary = Arc::clone(&acks).wait().await;
        assert_eq!(summary.failures, 2);
        assert_eq!(summary.first_error.as_deref(), Some("main: broker said no"));

        let empty = BatchAcks::new("main");
        empty.seal();
        assert_eq!(empty.wait().await, AckSummary::default());
    }
}
