//! Reading back what already reached the topic after the durable watermark, so a restart (after
//! a kill, a crash or a failed delivery) does not produce those rows again.
//!
//! The watermark file keeps, per partition, the offset from which records of rows after the
//! watermark position may be found. On start the producer reads every partition from there to
//! its end, and remembers each record's `(id, last_updated_micros)`. Captured rows found there
//! are not produced again.
//!
//! The read starts [`MAX_RECORDS_PER_BATCH`] offsets early: a broker may skip the whole record
//! batch that holds the requested offset when a fetch starts in its middle (tansu 0.6 does, and
//! then reports no end of partition either). Records read before the durable offset are covered
//! by the watermark and never match a row still to capture.
//!
//! A read-back is complete only when every partition was read to the end its leader reported
//! before the read: a partition without a leader, a broker that does not answer, or a partition
//! that stays silent fails the read-back (the caller retries it), so capture never starts without
//! knowing what the topic already holds.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::avro::{decode_product, own_schema_kind, unframe, IdKind};
use common::kafka::KafkaConfig;
use common::product::ProductId;
use common::registry::RegistryClient;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::position::{Position, RowKey};
use crate::sink::MAX_RECORDS_PER_BATCH;

/// How long a partition must stay quiet after its end was reached before the read-back stops
/// (some brokers, tansu among them, report a high watermark that trails the last batch).
const QUIET_AFTER_END: Duration = Duration::from_millis(750);
/// Upper bound for one read-back attempt; a partition not read to its end by then fails it.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot fetch writer schema {schema_id} of a record read back: {source}")]
    Registry {
        schema_id: u32,
        source: common::registry::RegistryError,
    },
    #[error("cannot learn where partition {partition} of {topic} ends (no leader, or the broker does not answer): {source}")]
    End {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("reading back {topic} did not reach the end of partitions {partitions:?} within {after:?} (no leader, or the broker does not answer)")]
    Timeout {
        topic: String,
        partitions: Vec<i32>,
        after: Duration,
    },
}

/// Row versions `(id, last_updated_micros)` found in the topic after the durable watermark, with
/// where they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveredRows {
    rows: HashMap<(RowKey, i64), (i32, i64)>,
    /// Per id, the latest version found.
    latest: HashMap<RowKey, i64>,
}

/// What the topic holds of a captured row version (see [`DeliveredRows::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not there: produce it.
    Missing,
    /// This very version.
    Same,
    /// A later version of the same id: producing this one now would put the product's versions
    /// out of order (it can only happen when an earlier delivery failed part-way).
    Later,
}

impl DeliveredRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Records that the row version `(id, micros)` is at `offset` of `partition` (the lowest
    /// offset wins when the topic holds it more than once).
    pub fn insert(&mut self, id: RowKey, last_updated_micros: i64, partition: i32, offset: i64) {
        let latest = self.latest.entry(id.clone()).or_insert(last_updated_micros);
        *latest = (*latest).max(last_updated_micros);
        let entry = self
            .rows
            .entry((id, last_updated_micros))
            .or_insert((partition, offset));
        if (partition, offset) < *entry {
            *entry = (partition, offset);
        }
    }

    /// Whether the topic already holds this row version.
    pub fn contains(&self, id: &RowKey, last_updated_micros: i64) -> bool {
        // Keys are few and short; cloning beats a borrowed-key lookup structure here.
        self.rows.contains_key(&(id.clone(), last_updated_micros))
    }

    /// Whether the topic holds this row version, a later one of the same id, or neither.
    pub fn status(&self, id: &RowKey, last_updated_micros: i64) -> Found {
        if self.latest.is_empty() {
            return Found::Missing;
        }
        match self.latest.get(id) {
            None => Found::Missing,
            Some(&latest) if latest > last_updated_micros => Found::Later,
            Some(_) if self.contains(id, last_updated_micros) => Found::Same,
            Some(_) => Found::Missing,
        }
    }

    /// Forgets the row versions at or before `position`: the watermark covers them now (and a
    /// row version captured past can no longer come again).
    pub fn forget_through(&mut self, position: &Position) {
        let limit_micros = position.last_updated.and_utc().timestamp_micros();
        self.rows
            .retain(|(id, micros), _| match micros.cmp(&limit_micros) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                // Same timestamp: kept when its id is after the position's (none is after "every
                // id of this timestamp").
                std::cmp::Ordering::Equal => position.id.as_ref().is_some_and(|limit| id > limit),
            });
        if !self.latest.is_empty() {
            self.latest.clear();
            for (id, micros) in self.rows.keys() {
                let latest = self.latest.entry(id.clone()).or_insert(*micros);
                *latest = (*latest).max(*micros);
            }
        }
    }

    /// Per partition, the lowest offset of a remembered record. The durable watermark must not
    /// move past these, or a second restart would no longer find them.
    pub fn lowest_offsets(&self) -> BTreeMap<i32, i64> {
        let mut lowest = BTreeMap::new();
        for &(partition, offset) in self.rows.values() {
            lowest
                .entry(partition)
                .and_modify(|o: &mut i64| *o = (*o).min(offset))
                .or_insert(offset);
        }
        lowest
    }
}

/// Where the watermark may point: per partition the lower of "after the last acknowledged
/// record" and "the first record found by the read-back that the watermark does not cover yet".
pub fn durable_offsets(
    acknowledged: &BTreeMap<i32, i64>,
    delivered: &DeliveredRows,
) -> BTreeMap<i32, i64> {
    let mut offsets = acknowledged.clone();
    for (partition, offset) in delivered.lowest_offsets() {
        offsets
            .entry(partition)
            .and_modify(|o| *o = (*o).min(offset))
            .or_insert(offset);
    }
    offsets
}

/// The current end (high watermark) of each of the `partitions` partitions of `topic`.
pub async fn end_offsets(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>, ReadBackError> {
    let config = kafka.client_config();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        (0..partitions)
            .map(|partition| Ok((partition, partition_end(&consumer, &topic, partition)?)))
            .collect()
    })
    .await
    .map_err(|_| ReadBackError::Kafka(KafkaError::Canceled))?
}

/// The end (high watermark) of `partition`, from its leader.
fn partition_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<i64, ReadBackError> {
    let (_, end) = consumer
        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        .map_err(|source| ReadBackError::End {
            topic: topic.to_owned(),
            partition,
            source,
        })?;
    Ok(end)
}

/// The read-back consumer's context: reaching the end of a partition is what the read-back waits
/// for, not an error worth logging (librdkafka reports it through the error callback too).
struct ReadBackContext;

impl ClientContext for ReadBackContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::warn!(error = %error, reason, "read-back consumer error");
        }
    }
}

impl ConsumerContext for ReadBackContext {}

/// One record read back: where it is, its value and its headers.
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from `from` (partition -> offset) to the end of each partition and returns the
/// row versions found. Values are decoded with our schema when they carry `our_schema_id`, and
/// with the writer schema from the registry otherwise; records that do not decode are skipped.
/// `our_id_kind` is the kind of id of our schema.
pub async fn read_back(
    kafka: &KafkaConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    registry: &RegistryClient,
    our_schema_id: u32,
    our_id_kind: IdKind,
) -> Result<DeliveredRows, ReadBackError> {
    let records = read_raw(kafka, topic, from).await?;
    let mut delivered = DeliveredRows::default();
    let mut undecodable = 0usize;
    // Writer schemas with the canonical form of ours (our earlier registered versions among
    // them), by id: their records are read as ours, once checked per id.
    let mut own_kinds: HashMap<u32, Option<IdKind>> = HashMap::new();
    for record in records {
        let Some(payload) = record.payload else {
            undecodable += 1;
            continue;
        };
        let product = match unframe(&payload) {
            Ok((id, datum)) if id == our_schema_id => {
                decode_product(our_id_kind.schema(), datum).ok()
            }
            Ok((id, datum)) => match registry.schema(id).await {
                Ok(schema) => match *own_kinds
                    .entry(id)
                    .or_insert_with(|| own_schema_kind(&schema))
                {
                    Some(kind) => decode_product(kind.schema(), datum),
                    None => decode_product(&schema, datum),
                }
                .ok(),
                // A record we cannot check yet might be one of ours: fail, to be retried.
                Err(source) if source.is_transient() => {
                    return Err(ReadBackError::Registry {
                        schema_id: id,
                        source,
                    })
                }
                Err(e) => {
                    tracing::warn!(schema_id = id, error = %e, "cannot fetch a writer schema during read-back");
                    None
                }
            },
            Err(_) => None,
        };
        match product.and_then(|p| p.last_updated_micros.map(|micros| (p.id, micros))) {
            Some((id, micros)) => {
                let key = match id {
                    ProductId::Int(id) => RowKey::Int(i64::from(id)),
                    ProductId::Text(id) => RowKey::Text(id),
                };
                delivered.insert(key, micros, record.partition, record.offset)
            }
            None => undecodable += 1,
        }
    }
    if undecodable > 0 {
        tracing::warn!(
            topic,
            records = undecodable,
            "read-back skipped records it cannot match to rows (not our Avro value or no exact timestamp)"
        );
    }
    Ok(delivered)
}

/// How far the read of one partition got.
#[derive(Debug, Clone)]
struct PartitionRead {
    /// The end (high watermark) the partition's leader reported before the read.
    end: i64,
    /// The broker reported the end of the partition.
    reached_end: bool,
    /// The highest offset read.
    last_offset: Option<i64>,
    last_activity: Instant,
}

impl PartitionRead {
    fn new(end: i64, now: Instant) -> Self {
        Self {
            end,
            reached_end: false,
            last_offset: None,
            last_activity: now,
        }
    }

    fn record(&mut self, offset: i64, now: Instant) {
        self.last_offset = Some(self.last_offset.map_or(offset, |o| o.max(offset)));
        self.last_activity = now;
    }

    fn end_reported(&mut self, now: Instant) {
        self.reached_end = true;
        self.last_activity = now;
    }

    /// Read to its end: the broker said so, or the record at the reported end (tansu reports the
    /// last batch's first offset + 1) arrived; and nothing more came for [`QUIET_AFTER_END`].
    /// A partition that stays silent is never done.
    fn done(&self, now: Instant) -> bool {
        let at_end = self.reached_end || self.last_offset.is_some_and(|o| o >= self.end - 1);
        at_end && now.duration_since(self.last_activity) >= QUIET_AFTER_END
    }
}

/// Every record of `topic` from `from` (partition -> offset, less [`MAX_RECORDS_PER_BATCH`]) to
/// the end of each partition. Fails when a partition's end cannot be learned or reached.
pub async fn read_raw(
    kafka: &KafkaConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> Result<Vec<RawRecord>, ReadBackError> {
    let config = kafka.client_config();
    let topic = topic.to_owned();
    let from = from.clone();
    tokio::task::spawn_blocking(move || {
        let mut config = config;
        let consumer: BaseConsumer<ReadBackContext> = config
            .set("group.id", format!("{topic}-producer-read-back"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(ReadBackContext)?;
        let started = Instant::now();
        let mut assignment = TopicPartitionList::new();
        let mut reads: BTreeMap<i32, PartitionRead> = BTreeMap::new();
        for (&partition, &offset) in &from {
            let end = partition_end(&consumer, &topic, partition)?;
            let start = (offset - MAX_RECORDS_PER_BATCH).max(0);
            // Nothing at or after `start`: with batches of at most MAX_RECORDS_PER_BATCH records,
            // the last batch starts at or after `end - 1`, so it ends before `offset`.
            if start >= end {
                continue;
            }
            assignment.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            reads.insert(partition, PartitionRead::new(end, started));
        }
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        consumer.assign(&assignment)?;

        let mut records = Vec::new();
        loop {
            let now = Instant::now();
            if reads.values().all(|read| read.done(now)) {
                break;
            }
            if started.elapsed() > READ_BACK_TIMEOUT {
                return Err(ReadBackError::Timeout {
                    topic,
                    partitions: reads
                        .iter()
                        .filter(|(_, read)| !read.done(now))
                        .map(|(p, _)| *p)
                        .collect(),
                    after: READ_BACK_TIMEOUT,
                });
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    if let Some(read) = reads.get_mut(&message.partition()) {
                        read.record(message.offset(), Instant::now());
                    }
                    let headers = message.headers().map_or_else(Vec::new, |headers| {
                        headers
                            .iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    h.value.map_or_else(Vec::new, <[u8]>::to_vec),
                                )
                            })
                            .collect()
                    });
                    records.push(RawRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(read) = reads.get_mut(&partition) {
                        read.end_reported(Instant::now());
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(records)
    })
    .await
    .map_err(|_| ReadBackError::Kafka(KafkaError::Canceled))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn micros(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn remembers_row_versions_and_their_lowest_offsets() {
        let mut d = DeliveredRows::default();
        d.insert(1.into(), micros("2024-01-01 00:00:01"), 3, 10);
        d.insert(2.into(), micros("2024-01-01 00:00:01"), 3, 11);
        d.insert(3.into(), micros("2024-01-01 00:00:02"), 5, 4);
        d.insert(1.into(), micros("2024-01-01 00:00:01"), 3, 40); // the same version twice: keep the first
        assert_eq!(d.len(), 3);
        assert!(d.contains(&1.into(), micros("2024-01-01 00:00:01")));
        assert!(
            !d.contains(&1.into(), micros("2024-01-01 00:00:02")),
            "another version of row 1"
        );
        assert_eq!(d.lowest_offsets(), BTreeMap::from([(3, 10), (5, 4)]));
    }

    #[test]
    fn a_later_version_in_the_topic_is_told_apart_from_this_one() {
        let mut d = DeliveredRows::default();
        assert_eq!(d.status(&1.into(), 5), Found::Missing);
        d.insert(1.into(), 10, 0, 3);
        assert_eq!(d.status(&1.into(), 10), Found::Same);
        assert_eq!(d.status(&1.into(), 5), Found::Later);
        assert_eq!(d.status(&1.into(), 11), Found::Missing);
        assert_eq!(d.status(&2.into(), 5), Found::Missing);
        // Once the watermark covers the later version, an older one cannot come again anyway.
        d.forget_through(&Position::after_timestamp(
            chrono::DateTime::from_timestamp_micros(10)
                .unwrap()
                .naive_utc(),
        ));
        assert_eq!(d.status(&1.into(), 5), Found::Missing);
        assert!(d.is_empty());
    }

    #[test]
    fn forgets_what_the_watermark_covers() {
        let mut d = DeliveredRows::default();
        d.insert(1.into(), micros("2024-01-01 00:00:01"), 0, 1);
        d.insert(2.into(), micros("2024-01-01 00:00:01"), 1, 1);
        d.insert(1.into(), micros("2024-01-01 00:00:02"), 0, 2);
        let t = NaiveDateTime::parse_from_str("2024-01-01 00:00:01", "%Y-%m-%d %H:%M:%S").unwrap();
        d.forget_through(&Position::new(t, 1));
        assert!(!d.contains(&1.into(), micros("2024-01-01 00:00:01")));
        assert!(
            d.contains(&2.into(), micros("2024-01-01 00:00:01")),
            "same timestamp, larger id: not covered"
        );
        d.forget_through(&Position::after_timestamp(t));
        assert_eq!(d.len(), 1);
        assert_eq!(d.lowest_offsets(), BTreeMap::from([(0, 2)]));

        // Text keys, in byte order.
        let mut d = DeliveredRows::default();
        for (i, id) in ["P0001", "P0002", "p0001"].into_iter().enumerate() {
            d.insert(id.into(), micros("2024-01-01 00:00:01"), 0, i as i64);
        }
        d.forget_through(&Position::new(t, "P0002"));
        assert!(!d.contains(&"P0002".into(), micros("2024-01-01 00:00:01")));
        assert!(d.contains(&"p0001".into(), micros("2024-01-01 00:00:01")));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_partition_is_read_to_its_end_only_when_the_broker_says_so_or_its_last_record_came() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        // Silent (no leader, broker away): never done, however long.
        let silent = PartitionRead::new(10, t0);
        assert!(!silent.done(later(3_600_000)));
        // Records below the end: not done.
        let mut read = PartitionRead::new(10, t0);
        read.record(7, later(100));
        assert!(!read.done(later(5_000)));
        // The record at the reported end (end - 1) arrived: done once quiet.
        read.record(9, later(200));
        assert!(!read.done(later(300)));
        assert!(read.done(later(200) + QUIET_AFTER_END));
        // Or the broker reported the end.
        let mut eof = PartitionRead::new(10, t0);
        eof.end_reported(later(50));
        assert!(!eof.done(later(100)));
        assert!(eof.done(later(50) + QUIET_AFTER_END));
    }

    #[test]
    fn durable_offsets_never_pass_a_remembered_record() {
        let acknowledged = BTreeMap::from([(0, 100), (1, 50), (2, 7)]);
        let mut d = DeliveredRows::default();
        d.insert(9.into(), 1, 0, 60);
        d.insert(8.into(), 1, 3, 5);
        assert_eq!(
            durable_offsets(&acknowledged, &d),
            BTreeMap::from([(0, 60), (1, 50), (2, 7), (3, 5)])
        );
        assert_eq!(
            durable_offsets(&acknowledged, &DeliveredRows::default()),
            acknowledged
        );
    }
}
