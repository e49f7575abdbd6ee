//! Per-record processing and batch flushing: decode → transform → pending batch → (write, fsync,
//! checkpoint, on the writer thread) → commit. Poison pills go to the dead-letter topic; a
//! registry outage pauses the partition and retries the record later.
//!
//! Offsets: every handled record (written or dead-lettered) advances its partition's next offset.
//! A flush first waits for the dead-letter topic to acknowledge its records, then hands the batch
//! and those next offsets to the writer thread, which makes them durable in the sink; only when
//! it reports success are they committed to Kafka. Meanwhile the poll thread handles the next
//! batch (one batch in flight at most). Records Kafka delivers again below a partition's next
//! offset are skipped, so they are never written twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::backoff::Backoff;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::decode::{DecodeError, Decoder, Input, Poison};
use crate::dlq::{DeadLetterQueue, DlqError};
use crate::filter::Filter;
use crate::metrics::ConsumerMetrics;
use crate::partition_map::PartitionMap;
use crate::sink::{Positions, RecordValue, Sink, SinkError, SinkRecord};
use crate::transform::transform;
use crate::writer::{self, SharedSink, WriteDone, WriteJob, Writer};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot write to the sink: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    DeadLetter(#[from] DlqError),
    #[error("cannot rewind partition {partition} to offset {offset} for a retry: {source}")]
    Rewind {
        partition: i32,
        offset: i64,
        source: rdkafka::error::KafkaError,
    },
}

/// When a batch is cut: once `max_records` records are pending or the oldest pending record
/// waited `interval`, and as [`Batching`] says.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    pub max_records: usize,
    pub interval: Duration,
    pub batching: Batching,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Group commit (the log, the output topic): the pending records are also handed to the
    /// writer as soon as the consumer has caught up (its last poll found nothing waiting) and
    /// the writer is free. While the writer is busy the pending batch keeps growing, which
    /// amortizes fsyncs under load; a consumer that has caught up does not wait for `interval`.
    GroupCommit,
    /// Fixed batches (stage files): `max_records` is a hard cap; a full batch is handed to the
    /// writer at once, waiting for the one in flight.
    Fixed,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// The next offset to handle; lower offsets are already in the sink. `None` until known.
    next_offset: Option<i64>,
    /// Paused until then, waiting for the schema registry.
    retry_at: Option<Instant>,
    consecutive_failures: u32,
}

pub struct Pipeline {
    topic: String,
    decoder: Decoder,
    filter: Option<Filter>,
    /// Whether the sink writes input keys (copied into each record only then).
    keep_keys: bool,
    sink: SharedSink,
    writer: Writer,
    dlq: DeadLetterQueue,
    metrics: ConsumerMetrics,
    policy: FlushPolicy,
    pending: Vec<SinkRecord>,
    /// The buffer of the last written batch, reused for the next.
    spare: Vec<SinkRecord>,
    /// Next offsets of the partitions handled since the last flush.
    handled: Positions,
    handled_count: usize,
    first_handled_at: Option<Instant>,
    /// Whether the last poll found no record waiting (see [`Batching::GroupCommit`]).
    caught_up: bool,
    partitions: PartitionMap<PartitionState>,
    counters: PartitionMap<PartitionCounters>,
    /// Records re-read (and skipped) before each resume point; see [`Pipeline::with_resume_rewind`].
    resume_rewind: i64,
}

/// The per-partition metric children, looked up once.
#[derive(Clone)]
struct PartitionCounters {
    consumed: prometheus::IntCounter,
    written: prometheus::IntCounter,
    skipped: prometheus::IntCounter,
    lag: prometheus::IntGauge,
}

fn single_partition(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition(topic, partition);
    tpl
}

impl Pipeline {
    pub fn new(
        topic: &str,
        decoder: Decoder,
        filter: Option<Filter>,
        sink: Box<dyn Sink>,
        dlq: DeadLetterQueue,
        metrics: ConsumerMetrics,
        policy: FlushPolicy,
    ) -> Self {
        let keep_keys = sink.needs_keys();
        let sink: SharedSink = std::sync::Arc::new(std::sync::Mutex::new(sink));
        Self {
            topic: topic.to_owned(),
            decoder,
            filter,
            keep_keys,
            writer: Writer::spawn(
                std::sync::Arc::clone(&sink),
                metrics.end_to_end_latency.clone(),
            ),
            sink,
            dlq,
            metrics,
            policy,
            pending: Vec::with_capacity(policy.max_records.min(100_000)),
            spare: Vec::new(),
            handled: Positions::new(),
            handled_count: 0,
            first_handled_at: None,
            caught_up: false,
            partitions: PartitionMap::new(),
            counters: PartitionMap::new(),
            resume_rewind: 0,
        }
    }

    fn counters(&mut self, partition: i32) -> &PartitionCounters {
        let metrics = &self.metrics;
        self.counters.get_or_insert_with(partition, || {
            let label = partition.to_string();
            PartitionCounters {
                consumed: metrics.records_consumed.with_label_values(&[&label]),
                written: metrics.records_written.with_label_values(&[&label]),
                skipped: metrics.records_skipped.with_label_values(&[&label]),
                lag: metrics.lag.with_label_values(&[&label]),
            }
        })
    }

    /// Handles one record: skip (already written), write later (pending), dead-letter, or pause
    /// the partition for a retry (registry unreachable).
    pub fn handle<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        let partition = message.partition();
        let offset = message.offset();
        let Some(state) = self.partitions.get(partition) else {
            tracing::debug!(
                partition,
                offset,
                "record of a partition not assigned (anymore); ignored"
            );
            return Ok(());
        };
        if state.retry_at.is_some() {
            return Ok(()); // fetched before the pause; the partition is rewound to its first unhandled record
        }
        if state.next_offset.is_some_and(|next| offset < next) {
            self.counters(partition).skipped.inc();
            return Ok(());
        }

        let filter = self.filter.as_ref();
        // Ok(true): pended, Ok(false): filtered out, Err: a poison pill. Each arm pends its
        // record itself, so the record is built once, in place (no intermediate value to move).
        let handled = match self.decoder.decode_input(message.payload()) {
            Ok(Input::Product(product)) => {
                let product = product.view();
                if filter.is_some_and(|f| !f.keeps_product(&product)) {
                    Ok(false)
                } else {
                    match transform(product) {
                        Ok(transformed) => {
                            self.pend(
                                message,
                                RecordValue::Product(transformed),
                                product.changed_at_micros(),
                            );
                            Ok(true)
                        }
                        Err(e) => Err(Poison::from(e)),
                    }
                }
            }
            Ok(Input::Json(object)) if filter.is_some_and(|f| !f.keeps_object(&object)) => {
                Ok(false)
            }
            Ok(Input::Json(object)) => {
                self.pend(message, RecordValue::Json(object), None);
                Ok(true)
            }
            Err(DecodeError::Poison(poison)) => Err(poison),
            Err(DecodeError::RegistryUnavailable(e)) => {
                return self.retry_later(consumer, partition, offset, &e.to_string());
            }
        };
        match handled {
            Ok(true) => {}
            Ok(false) => self.metrics.records_filtered.inc(),
            Err(poison) => {
                tracing::warn!(
                    partition,
                    offset,
                    reason = poison.reason.as_str(),
                    error = %poison.message,
                    dlq = self.dlq.topic(),
                    "poison pill sent to the dead-letter topic"
                );
                self.dlq.send(message, &poison)?;
                self.metrics
                    .dlq_records
                    .with_label_values(&[poison.reason.as_str()])
                    .inc();
            }
        }
        let state = self
            .partitions
            .get_or_insert_with(partition, PartitionState::default);
        state.next_offset = Some(offset + 1);
        state.consecutive_failures = 0;
        self.handled.insert(partition, offset + 1);
        self.handled_count += 1;
        self.first_handled_at.get_or_insert_with(Instant::now);
        self.counters(partition).consumed.inc();
        if self.policy.batching == Batching::Fixed && self.handled_count >= self.policy.max_records
        {
            self.submit(consumer)?;
        }
        Ok(())
    }

    /// Adds `message`'s record, now `value`, to the pending batch.
    fn pend(
        &mut self,
        message: &BorrowedMessage<'_>,
        value: RecordValue,
        changed_at_micros: Option<i64>,
    ) {
        self.pending.push(SinkRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: if self.keep_keys {
                message.key().map(<[u8]>::to_vec)
            } else {
                None
            },
            value,
            changed_at_micros,
        });
    }

    /// Pauses `partition` and rewinds it to `offset`, to be retried after a backoff.
    fn retry_later<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partition: i32,
        offset: i64,
        error: &str,
    ) -> Result<(), PipelineError> {
        let state = self
            .partitions
            .get_or_insert_with(partition, PartitionState::default);
        state.consecutive_failures += 1;
        let backoff = Backoff::delay_after(
            Duration::from_millis(100),
            Duration::from_secs(10),
            state.consecutive_failures,
        );
        state.retry_at = Some(Instant::now() + backoff);
        self.metrics.registry_retries.inc();
        tracing::warn!(partition, offset, error, retry_in = ?backoff, "schema registry unavailable; pausing the partition (the record is retried, not dead-lettered)");
        let tpl = single_partition(&self.topic, partition);
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(partition, error = %e, "cannot pause partition");
        }
        consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(|source| PipelineError::Rewind {
                partition,
                offset,
                source,
            })
    }

    /// Resumes partitions whose retry backoff has passed.
    fn resume_due<C: ConsumerContext>(&mut self, consumer: &impl Consumer<C>) {
        let now = Instant::now();
        for (partition, state) in self.partitions.iter_mut() {
            if state.retry_at.is_some_and(|at| at <= now) {
                state.retry_at = None;
                if let Err(e) = consumer.resume(&single_partition(&self.topic, partition)) {
                    tracing::warn!(partition, error = %e, "cannot resume partition");
                }
            }
        }
    }

    /// Whether the pending batch should be flushed now.
    pub fn flush_due(&self) -> bool {
        self.handled_count > 0
            && ((self.caught_up && self.policy.batching == Batching::GroupCommit)
                || self.handled_count >= self.policy.max_records
                || self
                    .first_handled_at
                    .is_some_and(|t| t.elapsed() >= self.policy.interval))
    }

    /// How long `poll` may block before the pipeline needs attention.
    pub fn poll_timeout(&self) -> Duration {
        if self.writer.in_flight() && self.flush_due() {
            return Duration::from_millis(1); // waiting for the writer to finish
        }
        let until_flush = match self.first_handled_at {
            None => self.policy.interval,
            Some(t) => self.policy.interval.saturating_sub(t.elapsed()),
        };
        until_flush.min(Duration::from_millis(100))
    }

    /// The poll loop's housekeeping: commit a batch the writer finished, start the next batch's
    /// write when due (once the writer is free; waiting for it only when far behind).
    /// `caught_up`: the last poll found no record waiting.
    pub fn tick<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        caught_up: bool,
    ) -> Result<(), PipelineError> {
        self.caught_up = caught_up;
        self.complete(consumer, CommitMode::Async, false)?;
        let far_behind = self.handled_count >= 4 * self.policy.max_records;
        if self.flush_due() && (!self.writer.in_flight() || far_behind) {
            self.submit(consumer)?;
        }
        self.resume_due(consumer);
        Ok(())
    }

    /// Makes everything handled so far durable and commits it (`mode` for the last batch).
    pub fn flush<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        mode: CommitMode,
    ) -> Result<(), PipelineError> {
        self.submit(consumer)?;
        self.complete(consumer, mode, true)
    }

    /// Hands the pending batch to the writer, once the dead-letter topic acknowledged this batch's
    /// poison pills (first finishing the batch in flight, if any).
    fn submit<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
    ) -> Result<(), PipelineError> {
        if self.handled.is_empty() {
            return Ok(());
        }
        self.complete(consumer, CommitMode::Async, true)?;
        self.dlq.wait_delivered()?;
        let records = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        self.writer.submit(WriteJob {
            records,
            next_offsets: std::mem::take(&mut self.handled),
            written_at: Utc::now(),
        });
        self.handled_count = 0;
        self.first_handled_at = None;
        Ok(())
    }

    /// Once the batch in flight is durable (waiting for it with `block`): metrics, then commit.
    fn complete<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        mode: CommitMode,
        block: bool,
    ) -> Result<(), PipelineError> {
        let Some(WriteDone {
            job,
            result,
            duration,
            per_partition,
        }) = self.writer.completed(block)
        else {
            return Ok(());
        };
        result?;
        let records: u64 = per_partition.iter().map(|(_, count)| count).sum();
        if records > 0 {
            self.metrics.write_duration.observe(duration.as_secs_f64());
            self.metrics.batch_records.observe(records as f64);
            for (partition, count) in per_partition {
                self.counters(partition).written.inc_by(count);
            }
        }
        let mut offsets = TopicPartitionList::with_capacity(job.next_offsets.len());
        for (&partition, &next) in &job.next_offsets {
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .expect("a plain offset is always valid");
        }
        // Failures are counted in the commit callback; the sink's positions already prevent
        // duplicates, the next commit catches up.
        if let Err(e) = consumer.commit(&offsets, mode) {
            tracing::warn!(error = %e, "offset commit failed (the log's own positions prevent duplicates)");
        }
        self.spare = job.records; // emptied by the writer, capacity kept
        Ok(())
    }

    /// Re-read up to `records` records before each resume point after an assignment (they are
    /// skipped, not written again). For brokers that, like tansu 0.6, return nothing of a record
    /// batch when a fetch starts in its middle, which would silently skip the rest of that batch.
    pub fn with_resume_rewind(mut self, records: i64) -> Self {
        self.resume_rewind = records.max(0);
        self
    }

    /// Partitions just assigned: where to fetch each from. A partition resumes at the furthest of
    /// its committed offset and the sink's positions (across all replicas' logs), fetching from
    /// `resume_rewind` records earlier; partitions absent from the result (nothing known) start
    /// where librdkafka decides (`auto.offset.reset`).
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Positions {
        if partitions.is_empty() {
            return Positions::new(); // cooperative rebalances often assign nothing new
        }
        let mut resume = writer::lock(&self.sink).resume_positions(partitions).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the logs' positions; resuming from committed offsets");
            Positions::new()
        });
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for &partition in partitions {
            tpl.add_partition(&self.topic, partition);
        }
        match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(committed) => {
                for element in committed.elements() {
                    let Offset::Offset(committed) = element.offset() else {
                        continue;
                    };
                    let next = resume.entry(element.partition()).or_insert(committed);
                    if *next > committed {
                        let ahead = u64::try_from(*next - committed).unwrap_or_default();
                        self.metrics.resumed_past_commit.inc_by(ahead);
                        tracing::info!(
                            partition = element.partition(),
                            committed,
                            resume_at = *next,
                            "the logs hold records past the committed offset; resuming after them"
                        );
                    }
                    *next = (*next).max(committed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read committed offsets; resuming from the logs' positions")
            }
        }
        for &partition in partitions {
            self.partitions.insert(
                partition,
                PartitionState {
                    next_offset: resume.get(&partition).copied(),
                    ..PartitionState::default()
                },
            );
        }
        tracing::info!(?partitions, resume_at = ?resume, rewind = self.resume_rewind, "partitions assigned");
        resume
            .into_iter()
            .map(|(partition, next)| (partition, (next - self.resume_rewind).max(0)))
            .collect()
    }

    /// Partitions about to be given up: write and commit what was read for them first. When the
    /// assignment was `lost` (the group moved on without us, e.g. after a long stall), another
    /// replica may own them already: their pending records are dropped, not written.
    pub fn release<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
        lost: bool,
    ) -> Result<(), PipelineError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let released: BTreeSet<i32> = partitions.iter().copied().collect();
        let result = if lost {
            // A batch already being written finishes (its new owner may otherwise resume before
            // it); unwritten records of the lost partitions are dropped.
            let written = self.complete(consumer, CommitMode::Async, true);
            let before = self.pending.len();
            self.pending.retain(|r| !released.contains(&r.partition));
            self.handled.retain(|p, _| !released.contains(p));
            self.handled_count = self.pending.len();
            tracing::warn!(?partitions, dropped = before - self.pending.len(), "assignment lost; dropping unwritten records of those partitions (their new owner reads them)");
            written
        } else {
            self.flush(consumer, CommitMode::Sync)
        };
        for partition in partitions {
            if let Some(state) = self.partitions.remove(*partition) {
                if state.retry_at.is_some() {
                    let _ = consumer.resume(&single_partition(&self.topic, *partition));
                }
            }
            if self.counters.remove(*partition).is_some() {
                let _ = self
                    .metrics
                    .lag
                    .remove_label_values(&[&partition.to_string()]);
            }
        }
        tracing::info!(?partitions, lost, "partitions released");
        result
    }

    /// Updates `consumer_lag` from the high watermarks in librdkafka's statistics.
    pub fn update_lag(&mut self, stats: &rdkafka::Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let mut updates = Vec::new();
        for (partition, state) in self.partitions.iter() {
            let Some(p) = topic.partitions.get(&partition) else {
                continue;
            };
            if p.hi_offset < 0 {
                continue;
            }
            let next = state
                .next_offset
                .or((p.committed_offset >= 0).then_some(p.committed_offset));
            if let Some(next) = next {
                updates.push((partition, (p.hi_offset - next).max(0)));
            }
        }
        for (partition, lag) in updates {
            self.counters(partition).lag.set(lag);
        }
    }
}
