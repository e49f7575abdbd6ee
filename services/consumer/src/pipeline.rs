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
//!
//! Resuming inside a record batch: a partition fetched from an offset (after an assignment, or
//! rewound for a retry) must show a record at or before the offset it resumes at (its next
//! offset) before any record of it is written; see [`ResumeCheck`].
//!
//! Failures: the first error (a write or fsync that failed, an output topic or dead-letter topic
//! that did not acknowledge, a fatal consumer error, a panic) stops the pipeline for good: from
//! then on nothing is written and nothing is committed, not even by the revoke that closing the
//! consumer triggers. The records read after the last durable batch are dropped unwritten, so a
//! restarted consumer reads them again from the sink's positions, the failed batch first. Writing
//! them instead would store positions past the failed batch, and it would be lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::backoff::Backoff;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::decode::{DecodeError, Decoder, Input, Poison};
use crate::dlq::{DeadLetterQueue, DlqError};
use crate::fence::{Fence, Fences};
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
    #[error("the consumer stopped after an earlier failure; nothing more is written or committed")]
    Stopped,
    #[error("cannot take partition {partition} over: {source}")]
    Fence {
        partition: i32,
        source: crate::fence::FenceError,
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

/// How long a partition fetched from before its resume point may show no record before the
/// consumer asks where its last record batch begins (see [`ResumeCheck`]).
const RESUME_CHECK_WAIT: Duration = Duration::from_secs(1);

/// How long that question may block the poll thread; unanswered, it is asked again later.
const WATERMARK_TIMEOUT: Duration = Duration::from_millis(500);

/// A partition whose fetch began at `from` (> 0), at or before its next offset (the resume
/// point), and has shown no record yet.
///
/// On tansu 0.6 a fetch that starts inside a record batch returns nothing of that batch. If the
/// batch holding the resume point begins before `from`, the fetch shows the next batch's first
/// record, past the resume point, or nothing at all if that batch is the partition's last; either
/// way the rest of the batch would be skipped. So nothing of the partition is written until a
/// record at or before the resume point shows:
/// * a first record past it: the fetch starts again twice as far back, down to offset 0
///   ([`ResumeCheck::further_back`]);
/// * no record within [`RESUME_CHECK_WAIT`]: the consumer asks for the partition's high
///   watermark, which tansu reports as its last batch's base offset + 1. If the resume point lies
///   at or after it and the fetch began after that base, the fetch starts again from the base.
///   Otherwise records past the resume point exist and will come (the first one is checked), or
///   the fetch covers the last batch: only the first record is checked from then on.
///
/// On Kafka a fetch returns the batch holding its start, so the first record is the first one at
/// or after `from`: the check ends at once whenever a record lies between `from` and the resume
/// point. Offsets can also hold nothing to read there (transaction markers, aborted or compacted
/// records), and a first record past the resume point then only means that: looking back costs a
/// fetch of the few records before it, skipped. An idle partition costs one watermark query per
/// assignment, and a fetch of its last record when it was fetched from its end.
#[derive(Debug, Clone, Copy)]
struct ResumeCheck {
    from: i64,
    /// When to ask for the high watermark if no record came (`None`: not any more).
    ask_at: Option<Instant>,
}

impl ResumeCheck {
    fn new(from: i64) -> Self {
        Self {
            from,
            ask_at: Some(Instant::now() + RESUME_CHECK_WAIT),
        }
    }

    /// Where to fetch from next when the first record of a fetch from `from` lies past `resume`:
    /// twice as far before `resume`, at least two records, never below 0.
    fn further_back(from: i64, resume: i64) -> i64 {
        resume
            .saturating_sub((resume - from).max(1).saturating_mul(2))
            .max(0)
    }

    /// Where to fetch from next when no record came and the partition's high watermark is
    /// `high`: the base offset of its last batch (on tansu) if the resume point lies in or after
    /// that batch and the fetch began after its base; `None` when no record can be hidden from
    /// the fetch that way.
    fn last_batch_start(from: i64, resume: i64, high: i64) -> Option<i64> {
        (high >= 1 && high <= resume && high - 1 < from).then_some(high - 1)
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    /// The next offset to handle; lower offsets are already in the sink. `None` until known.
    next_offset: Option<i64>,
    /// Set while the fetch has not yet shown a record at or before `next_offset`.
    resume_check: Option<ResumeCheck>,
    /// Our claim on the partition since it was assigned: every write of it checks it.
    fence: Option<Arc<Fence>>,
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
    fences: Fences,
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
    /// Set by the first failure: from then on nothing is written or committed (see the module
    /// documentation).
    failed: bool,
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
        sink: Box<dyn Sink>,
        fences: Fences,
        dlq: DeadLetterQueue,
        metrics: ConsumerMetrics,
        policy: FlushPolicy,
    ) -> Self {
        let keep_keys = sink.needs_keys();
        let sink: SharedSink = std::sync::Arc::new(std::sync::Mutex::new(sink));
        Self {
            topic: topic.to_owned(),
            decoder,
            filter: None,
            keep_keys,
            writer: Writer::spawn(
                std::sync::Arc::clone(&sink),
                metrics.end_to_end_latency.clone(),
            ),
            sink,
            fences,
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
            failed: false,
        }
    }

    /// Runs `op` unless the pipeline failed before; its error stops the pipeline for good.
    fn unless_failed<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        if self.failed {
            return Err(PipelineError::Stopped);
        }
        let result = op(self);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// Stops the pipeline after `error` (its own, or the consumer's): nothing is written or
    /// committed from now on, and what was read since the last durable batch is dropped (a
    /// restarted consumer reads it again). A batch the writer already had finishes, uncommitted:
    /// it precedes the failure, and the sink's positions tell the next owner it is there.
    pub fn fail(&mut self, error: &dyn std::fmt::Display) {
        if self.failed {
            return;
        }
        self.failed = true;
        tracing::error!(
            error = %error,
            dropped = self.pending.len(),
            "stopping after a failure: nothing more is written or committed; the records read since the last durable batch are read again after a restart"
        );
        self.pending.clear();
        self.handled.clear();
        self.handled_count = 0;
        self.first_handled_at = None;
    }

    pub fn failed(&self) -> bool {
        self.failed
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
        self.unless_failed(|pipeline| pipeline.handle_record(consumer, message))
    }

    fn handle_record<C: ConsumerContext>(
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
        let already_handled = state.next_offset.is_some_and(|next| offset < next);
        if state.resume_check.is_some() && self.past_resume_point(consumer, partition, offset)? {
            return Ok(()); // fetched again from further back
        }
        if already_handled {
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
        let from = self.fetch_start(offset);
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
        // The record is handled next: what precedes it is skipped when fetched again.
        state.next_offset = Some(offset);
        self.metrics.registry_retries.inc();
        tracing::warn!(partition, offset, error, retry_in = ?backoff, "schema registry unavailable; pausing the partition (the record is retried, not dead-lettered)");
        let tpl = single_partition(&self.topic, partition);
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(partition, error = %e, "cannot pause partition");
        }
        self.fetch_from(consumer, partition, from)
    }

    /// Where a partition that resumes at `resume` is fetched from: `resume_rewind` records before
    /// it (see [`Pipeline::with_resume_rewind`]).
    fn fetch_start(&self, resume: i64) -> i64 {
        (resume - self.resume_rewind).max(0)
    }

    /// Fetches `partition` from `from` (at or before its next offset) from now on, checking that
    /// the fetch covers its next offset ([`ResumeCheck`]).
    fn fetch_from<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partition: i32,
        from: i64,
    ) -> Result<(), PipelineError> {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.resume_check = (from > 0).then(|| ResumeCheck::new(from));
        }
        consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(from),
                Duration::from_secs(10),
            )
            .map_err(|source| PipelineError::Rewind {
                partition,
                offset: from,
                source,
            })
    }

    /// The first record of a fetch with a [`ResumeCheck`], at `offset`: whether it lies past the
    /// partition's resume point, so the partition is fetched again from further back (true), or
    /// the fetch covers it (false: the check is over).
    #[cold]
    fn past_resume_point<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partition: i32,
        offset: i64,
    ) -> Result<bool, PipelineError> {
        let Some(state) = self.partitions.get_mut(partition) else {
            return Ok(false);
        };
        let (Some(check), Some(resume)) = (state.resume_check.take(), state.next_offset) else {
            return Ok(false);
        };
        if offset <= resume {
            return Ok(false);
        }
        let from = ResumeCheck::further_back(check.from, resume);
        self.look_back(consumer, partition, check.from, resume, Some(offset), from)
            .map(|()| true)
    }

    /// Fetches `partition` again from `from`, further back than `fetched_from`, because the
    /// fetch's first record (`first`) lay past `resume` or none came.
    fn look_back<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partition: i32,
        fetched_from: i64,
        resume: i64,
        first: Option<i64>,
        from: i64,
    ) -> Result<(), PipelineError> {
        self.metrics.resume_lookbacks.inc();
        tracing::info!(
            partition,
            resume_at = resume,
            fetched_from,
            first_record = ?first,
            refetch_from = from,
            "the fetch showed no record at or before the resume point (it may have begun inside \
             a record batch the broker then left out); fetching again from further back"
        );
        self.fetch_from(consumer, partition, from)
    }

    /// Partitions whose fetch has shown no record since [`ResumeCheck::ask_at`]: fetched again
    /// from their last batch's start if the resume point may lie inside it (see [`ResumeCheck`]).
    fn look_back_idle<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
    ) -> Result<(), PipelineError> {
        let now = Instant::now();
        let due: Vec<(i32, ResumeCheck, i64)> = self
            .partitions
            .iter()
            .filter_map(|(partition, state)| {
                let check = state.resume_check?;
                let due = state.retry_at.is_none() && check.ask_at.is_some_and(|at| at <= now);
                due.then_some((partition, check, state.next_offset?))
            })
            .collect();
        for (partition, check, resume) in due {
            let high = consumer
                .fetch_watermarks(&self.topic, partition, WATERMARK_TIMEOUT)
                .map(|(_, high)| high);
            let ask_at = match high {
                Ok(high) => match ResumeCheck::last_batch_start(check.from, resume, high) {
                    Some(from) => {
                        self.look_back(consumer, partition, check.from, resume, None, from)?;
                        continue;
                    }
                    None => None,
                },
                Err(e) => {
                    tracing::debug!(partition, error = %e, "cannot read the high watermark; asking again later");
                    Some(Instant::now() + RESUME_CHECK_WAIT)
                }
            };
            if let Some(check) = self
                .partitions
                .get_mut(partition)
                .and_then(|s| s.resume_check.as_mut())
            {
                check.ask_at = ask_at;
            }
        }
        Ok(())
    }

    /// Resumes partitions whose retry backoff has passed.
    fn resume_due<C: ConsumerContext>(&mut self, consumer: &impl Consumer<C>) {
        let now = Instant::now();
        for (partition, state) in self.partitions.iter_mut() {
            if state.retry_at.is_some_and(|at| at <= now) {
                state.retry_at = None;
                if let Some(check) = &mut state.resume_check {
                    check.ask_at = Some(now + RESUME_CHECK_WAIT);
                }
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
        self.unless_failed(|pipeline| pipeline.housekeeping(consumer, caught_up))
    }

    fn housekeeping<C: ConsumerContext>(
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
        self.look_back_idle(consumer)
    }

    /// Makes everything handled so far durable and commits it (`mode` for the last batch).
    pub fn flush<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        mode: CommitMode,
    ) -> Result<(), PipelineError> {
        self.unless_failed(|pipeline| pipeline.flush_all(consumer, mode))
    }

    fn flush_all<C: ConsumerContext>(
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
        let mut records = std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare));
        let mut next_offsets = std::mem::take(&mut self.handled);
        let mut fences = Vec::with_capacity(next_offsets.len());
        let mut unfenced = Vec::new();
        for &partition in next_offsets.keys() {
            match self
                .partitions
                .get(partition)
                .and_then(|s| s.fence.as_ref())
            {
                Some(fence) => fences.push(Arc::clone(fence)),
                None => unfenced.push(partition),
            }
        }
        if !unfenced.is_empty() {
            // Not ours (any more): never written without our fence.
            tracing::warn!(partitions = ?unfenced, "records of partitions this replica does not own; not written");
            records.retain(|r| !unfenced.contains(&r.partition));
            next_offsets.retain(|p, _| !unfenced.contains(p));
        }
        self.writer.submit(WriteJob {
            records,
            next_offsets,
            written_at: Utc::now(),
            fences,
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
            mut job,
            result,
            duration,
            per_partition,
            fenced,
        }) = self.writer.completed(block)
        else {
            return Ok(());
        };
        result?;
        // The writer left out partitions another replica took over: nothing to commit there.
        job.next_offsets.retain(|p, _| !fenced.contains(p));
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

    /// Keeps only the records `filter` keeps (`CONSUMER_FILTER`); the others are counted and
    /// their offsets committed.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.filter = filter;
        self
    }

    /// Fetch from `records` records before each resume point (after an assignment, or a retry)
    /// and skip them. Not needed for correctness ([`ResumeCheck`] looks further back until the
    /// fetch covers the resume point), it saves the round trips of looking back on brokers that,
    /// like tansu 0.6, return nothing of a record batch when a fetch starts in its middle: set it
    /// to the size of the producer's usual batches there; 0 on Kafka.
    pub fn with_resume_rewind(mut self, records: i64) -> Self {
        self.resume_rewind = records.max(0);
        self
    }

    /// Partitions just assigned: where to fetch each from. A partition resumes at the furthest of
    /// its committed offset and the sink's positions (across all replicas' logs), fetching from
    /// `resume_rewind` records earlier (and further back if that fetch does not cover the resume
    /// point: [`ResumeCheck`]); partitions absent from the result (nothing known) start where
    /// librdkafka decides (`auto.offset.reset`).
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<Positions, PipelineError> {
        if partitions.is_empty() {
            return Ok(Positions::new()); // cooperative rebalances often assign nothing new
        }
        // Fences first: once taken, a previous owner still running (frozen past its session,
        // say) writes nothing more of these partitions, so the positions read next are final.
        let mut fences = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let fence = self
                .fences
                .take(partition)
                .map_err(|source| PipelineError::Fence { partition, source });
            match fence {
                Ok(fence) => fences.push(Arc::new(fence)),
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            }
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
        let fetch_from: Positions = resume
            .iter()
            .map(|(&partition, &next)| (partition, self.fetch_start(next)))
            .collect();
        for (&partition, fence) in partitions.iter().zip(fences) {
            let from = fetch_from.get(&partition).copied();
            self.partitions.insert(
                partition,
                PartitionState {
                    next_offset: resume.get(&partition).copied(),
                    resume_check: from.filter(|&from| from > 0).map(ResumeCheck::new),
                    fence: Some(fence),
                    ..PartitionState::default()
                },
            );
        }
        tracing::info!(?partitions, resume_at = ?resume, rewind = self.resume_rewind, "partitions assigned");
        Ok(fetch_from)
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
        let result = if self.failed {
            tracing::warn!(
                ?partitions,
                "giving up partitions after a failure: nothing written or committed for them"
            );
            Ok(())
        } else if lost {
            // A batch already being written finishes (its new owner may otherwise resume before
            // it); unwritten records of the lost partitions are dropped.
            let written = self.complete(consumer, CommitMode::Async, true);
            let before = self.pending.len();
            self.pending.retain(|r| !released.contains(&r.partition));
            self.handled.retain(|p, _| !released.contains(p));
            self.handled_count = self.pending.len();
            tracing::warn!(?partitions, dropped = before - self.pending.len(), "assignment lost; dropping unwritten records of those partitions (their new owner reads them)");
            if let Err(e) = &written {
                self.fail(e);
            }
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

#[cfg(test)]
mod tests {
    use super::ResumeCheck;

    #[test]
    fn looking_back_doubles_the_distance_to_the_resume_point_down_to_offset_0() {
        assert_eq!(ResumeCheck::further_back(500, 1500), 0);
        assert_eq!(ResumeCheck::further_back(9000, 10_000), 8000);
        assert_eq!(ResumeCheck::further_back(8000, 10_000), 6000);
        // A fetch from the resume point itself (no rewind) looks back two records first.
        assert_eq!(ResumeCheck::further_back(10_000, 10_000), 9998);
        assert_eq!(ResumeCheck::further_back(1, 1), 0);
        assert_eq!(
            ResumeCheck::further_back(i64::MAX - 1, i64::MAX),
            i64::MAX - 2
        );
    }

    #[test]
    fn an_idle_fetch_restarts_at_the_last_batch_only_when_it_began_inside_it() {
        // tansu: one batch 0..3000 reports a high watermark of 1; resuming at 1500 from 500.
        assert_eq!(ResumeCheck::last_batch_start(500, 1500, 1), Some(0));
        // The last batch begins at 2000, the resume point 2500 lies in it, the fetch began at 2100.
        assert_eq!(ResumeCheck::last_batch_start(2100, 2500, 2001), Some(2000));
        // The fetch began at or before the last batch's base: it returns that batch.
        assert_eq!(ResumeCheck::last_batch_start(2000, 2500, 2001), None);
        assert_eq!(ResumeCheck::last_batch_start(1500, 2500, 2001), None);
        // Records past the resume point exist: they will come, the first one is checked.
        assert_eq!(ResumeCheck::last_batch_start(1500, 2500, 2600), None);
        // An empty partition.
        assert_eq!(ResumeCheck::last_batch_start(10, 20, 0), None);
        // Kafka, a partition fetched from its end (10 000, no rewind): its last record once.
        assert_eq!(
            ResumeCheck::last_batch_start(10_000, 10_000, 10_000),
            Some(9999)
        );
        assert_eq!(ResumeCheck::last_batch_start(9999, 10_000, 10_000), None);
    }
}
