//! The capture loop: read a batch, produce it, and while Kafka acknowledges it read and produce
//! the next ones; advance the durable watermark batch by batch, in order, once every record of a
//! batch is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use common::avro::{decode_product, unframe};
use common::backoff::{wait_for, Attempt, Backoff, MAX_DELAY};
use common::http::Readiness;
use common::kafka::KafkaConfig;
use common::registry::RegistryClient;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::encode::{dead_letter_json, RecordEncoder, RejectReason, Rejection};
use crate::metrics::ProducerMetrics;
use crate::position::Position;
use crate::readback::{durable_offsets, read_back, DeliveredRows, Found};
use crate::sink::{
    is_refused_record, is_too_large, AckSummary, BatchAcks, FailedRecord, KafkaSink,
    MESSAGE_MAX_BYTES,
};
use crate::source::changes::ChangeReader;
use crate::source::{
    Batch, Blind, HorizonBound, IdKind, ListingProblem, Source, SourceError, SourceRow,
};
use crate::watermark::{Watermark, WatermarkError};

/// Batches produced but not yet fully acknowledged, at most; the loop takes no batch from the
/// reader beyond this. Reading goes on while earlier batches are in flight, so reading and
/// producing overlap. With `linger.ms=20` acks came about 20 ms after a batch was enqueued,
/// while reading 5 000 rows takes about 10 ms: with 3 in flight reads waited for acks (producer
/// bench: 53-56 % of the raw rate, 62-69 % with 8). 8 leaves room for a slower broker, and bounds
/// what waits for acks to 8 × `BATCH_SIZE` records.
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// The shortest wait before a read is retried after a failed one.
const MIN_RETRY: Duration = Duration::from_millis(100);
/// On shutdown, how long to wait for in-flight batches to be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The readiness check that is false until capture runs (and while it replays after a failed
/// delivery): it says what capture waits for.
pub const CAPTURE_CHECK: &str = "capture";
/// The header of a dead letter that names why the row was set aside (the consumer's dead letters
/// carry the same header).
pub const DEAD_LETTER_REASON_HEADER: &str = "dlq.error.reason";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// librdkafka's producer cannot go on (e.g. an idempotence failure): only a new process can.
    #[error("the Kafka producer failed for good ({0}); restart the producer")]
    KafkaFatal(String),
}

/// Everything the capture loop works with.
pub struct Pipeline {
    pub source: Arc<dyn Source>,
    pub sink: KafkaSink,
    pub kafka: KafkaConfig,
    pub registry: Arc<RegistryClient>,
    pub schema_id: u32,
    /// The kind of id the registered value schema (`schema_id`) carries.
    pub id_kind: IdKind,
    pub topic: String,
    pub dead_letter_topic: Option<String>,
    pub watermark: Watermark,
    pub watermark_path: PathBuf,
    pub batch_size: u32,
    pub poll_interval: Duration,
    pub metrics: ProducerMetrics,
    pub readiness: Readiness,
}

/// What is known about a batch while Kafka acknowledges it.
struct InFlight {
    /// The position of its last row (`None` for an empty batch, which is never produced).
    end: Option<Position>,
}

type AckFuture = BoxFuture<'static, AckSummary>;

/// The loop's own state, apart from the pipeline's parts.
struct LoopState {
    /// Where the next read starts (ahead of the watermark while batches are in flight).
    cursor: Option<Position>,
    in_flight: VecDeque<InFlight>,
    acks: FuturesOrdered<AckFuture>,
    /// The read in progress: it ends with a caught-up batch, an error, or early.
    read: Option<ChangeReader>,
    next_read_at: Instant,
    read_failures: u32,
    /// Spaces reads after failed ones.
    read_backoff: Backoff,
    /// Spaces replays after failed deliveries that follow each other (reset by a delivered batch).
    replay_backoff: Backoff,
    /// The horizon of the last caught-up batch (capture was caught up then).
    caught_up_to: Option<NaiveDateTime>,
    /// Per partition, the offset after the last acknowledged record (durable or not).
    acknowledged: BTreeMap<i32, i64>,
    /// Row versions the topic already holds after the watermark.
    delivered: DeliveredRows,
    horizon: HorizonWatch,
    watermark_file: WatermarkWriter,
    /// Row versions `(key, last_updated_micros)` whose record failed while Kafka refused records
    /// for what they are (the broker refuses a bad record's whole batch, and the records after it
    /// fail with it): the replay sends each alone, and sets aside only those Kafka refuses alone.
    suspects: Suspects,
}

/// Row versions under suspicion, by `last_updated_micros` then key: the capture loop asks for
/// every row while there are any, without allocating.
#[derive(Debug, Default)]
struct Suspects {
    by_micros: BTreeMap<i64, Vec<String>>,
}

impl Suspects {
    fn is_empty(&self) -> bool {
        self.by_micros.is_empty()
    }

    fn len(&self) -> usize {
        self.by_micros.values().map(Vec::len).sum()
    }

    fn insert(&mut self, (key, micros): (String, i64)) {
        let keys = self.by_micros.entry(micros).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// Whether `(key, micros)` was a suspect (it is not any more).
    fn remove(&mut self, key: &str, micros: i64) -> bool {
        let Some(keys) = self.by_micros.get_mut(&micros) else {
            return false;
        };
        let Some(index) = keys.iter().position(|k| k == key) else {
            return false;
        };
        keys.swap_remove(index);
        if keys.is_empty() {
            self.by_micros.remove(&micros);
        }
        true
    }

    /// Forgets the suspects stamped before `micros`: the watermark passed them.
    fn forget_before(&mut self, micros: i64) {
        self.by_micros = self.by_micros.split_off(&micros);
    }
}

impl Pipeline {
    /// Reads back what reached the topic after the durable watermark, so it is not produced
    /// again. Retries (with backoff, not ready meanwhile) until it succeeds: capture never goes on
    /// without knowing what the topic holds. `None` on shutdown.
    pub async fn read_back_delivered(&self, shutdown: &CancellationToken) -> Option<DeliveredRows> {
        let dependency = format!("the read-back of topic {} after the watermark", self.topic);
        let started = std::time::Instant::now();
        let read = wait_for(
            &dependency,
            &self.readiness,
            CAPTURE_CHECK,
            shutdown,
            || async {
                match read_back(
                    &self.kafka,
                    &self.topic,
                    &self.watermark.next_offsets,
                    &self.registry,
                    self.schema_id,
                    self.id_kind,
                )
                .await
                {
                    Ok(delivered) => Attempt::Ready(delivered),
                    Err(e) => Attempt::<_, std::convert::Infallible>::Waiting(e.to_string()),
                }
            },
        )
        .await;
        let Ok(delivered) = read;
        let mut delivered = delivered?;
        // The read starts a little early; what the watermark covers cannot match.
        if let Some(position) = &self.watermark.position {
            delivered.forget_through(position);
        }
        tracing::info!(
            topic = %self.topic,
            from_offsets = ?self.watermark.next_offsets,
            rows_already_in_topic = delivered.len(),
            took_ms = started.elapsed().as_millis(),
            "read back the topic after the watermark"
        );
        Some(delivered)
    }

    /// Runs capture until `shutdown` is cancelled. `delivered` is the result of the read-back.
    pub async fn run(
        mut self,
        delivered: DeliveredRows,
        shutdown: CancellationToken,
    ) -> Result<(), PipelineError> {
        let mut state = LoopState {
            cursor: self.watermark.position.clone(),
            in_flight: VecDeque::new(),
            acks: FuturesOrdered::new(),
            read: None,
            next_read_at: Instant::now(),
            read_failures: 0,
            read_backoff: Backoff::new(self.poll_interval.max(MIN_RETRY), MAX_DELAY),
            replay_backoff: Backoff::new(Duration::from_secs(1), MAX_DELAY),
            caught_up_to: None,
            acknowledged: self.watermark.next_offsets.clone(),
            delivered,
            horizon: HorizonWatch::new(self.metrics.clone(), self.readiness.clone()),
            watermark_file: WatermarkWriter::spawn(self.watermark_path.clone()),
            suspects: Suspects::default(),
        };
        self.readiness.set(CAPTURE_CHECK, true, "capturing");
        tracing::info!(
            source = %self.source.describe(),
            topic = %self.topic,
            from = %describe_position(state.cursor.as_ref()),
            batch_size = self.batch_size,
            "capture started"
        );
        let mut stop_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            if state.read.is_none() && stop_at.is_none() && Instant::now() >= state.next_read_at {
                state.read = Some(
                    self.source
                        .read_changes(state.cursor.clone(), self.batch_size),
                );
            }
            self.metrics
                .batches_in_flight
                .set(state.in_flight.len() as i64);
            self.update_lag(&state);

            let can_take = state.read.is_some() && state.in_flight.len() < MAX_BATCHES_IN_FLIGHT;
            tokio::select! {
                () = shutdown.cancelled(), if stop_at.is_none() => {
                    tracing::info!(batches_in_flight = state.in_flight.len(), "stopping capture");
                    stop_at = Some(Instant::now() + SHUTDOWN_GRACE);
                    state.read = None;
                }
                Some(acks) = state.acks.next(), if !state.acks.is_empty() => {
                    let batch = state.in_flight.pop_front().expect("one in-flight batch per ack future");
                    if let Err(failure) = self.on_acked(&mut state, batch, acks).await? {
                        if !self.replay(&mut state, &failure, &shutdown).await? {
                            break;
                        }
                    }
                }
                next = next_batch(&mut state.read), if can_take => {
                    match next {
                        Some(Ok(batch)) => {
                            if let Err(e) = self.on_read(&mut state, batch, &shutdown).await {
                                self.metrics.delivery_errors.inc();
                                let failure = format!("cannot enqueue a record: {e}");
                                if !self.replay(&mut state, &failure, &shutdown).await? {
                                    break;
                                }
                            }
                        }
                        Some(Err(e)) => {
                            state.read = None;
                            self.on_read_error(&mut state, &e);
                        }
                        // After a caught-up batch, or early: the next read starts at
                        // `next_read_at`, from the cursor.
                        None => state.read = None,
                    }
                }
                ended = &mut state.watermark_file.task => {
                    let error = match ended {
                        Ok(result) => result
                            .expect_err("the watermark writer ends early only when a write failed"),
                        Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                    };
                    return Err(error.into());
                }
                () = tokio::time::sleep_until(state.next_read_at), if stop_at.is_none() && state.read.is_none() => {}
                _ = tick.tick() => {}
                () = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => {
                    tracing::warn!(
                        batches_in_flight = state.in_flight.len(),
                        "not every batch was acknowledged before the shutdown grace ran out; they will be \
                         read back and completed on the next start"
                    );
                    break;
                }
            }
            if stop_at.is_some() && state.in_flight.is_empty() {
                break;
            }
        }
        if let Err(e) = self.sink.flush(Duration::from_secs(2)).await {
            tracing::debug!(error = %e, "flush on shutdown");
        }
        state.watermark_file.finish().await?;
        tracing::info!(watermark = %describe_position(self.watermark.position.as_ref()), "capture stopped");
        Ok(())
    }

    async fn on_read(
        &mut self,
        state: &mut LoopState,
        batch: Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), KafkaError> {
        if state.read_failures > 0 {
            tracing::info!("database reachable again, capture resumes");
        }
        state.read_failures = 0;
        state.read_backoff.reset();
        self.readiness
            .set("database", true, "capture reads succeed");
        self.metrics
            .poll_duration
            .observe(batch.read_time.as_secs_f64());
        self.metrics.batch_size.observe(batch.rows.len() as f64);
        self.metrics.rows_captured.inc_by(batch.rows.len() as u64);
        state.horizon.note(batch.bound, std::time::Instant::now());

        state.next_read_at = if batch.caught_up {
            Instant::now() + self.poll_interval
        } else {
            Instant::now()
        };
        // A horizon held at the start (transactions open at the first listing) says nothing
        // about the lag.
        state.caught_up_to =
            (batch.caught_up && batch.horizon != NaiveDateTime::MIN).then_some(batch.horizon);
        let Some(end) = batch.end() else {
            return Ok(());
        };
        state.cursor = Some(end.clone());
        // The reader was woken by the slot this batch freed in its channel, from this task: it
        // waits in this worker's LIFO slot, which the other workers do not steal from. Let it
        // go on reading before this task enqueues the batch (a few ms without an await that
        // yields); reads are capture's bottleneck (producer bench: 55 % of the raw rate without
        // this yield, 69 % with it, when each read was a task of its own).
        tokio::task::yield_now().await;
        let acks = self
            .produce(&state.delivered, &mut state.suspects, &batch, shutdown)
            .await?;
        state.in_flight.push_back(InFlight { end: Some(end) });
        state.acks.push_back(acks);
        Ok(())
    }

    /// Enqueues the batch's records (and dead letters) and returns the future of their acks.
    /// Rows already in the topic are skipped; rows that cannot be produced are set aside
    /// ([`Pipeline::set_aside`]); suspects are produced alone.
    async fn produce(
        &mut self,
        delivered: &DeliveredRows,
        suspects: &mut Suspects,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<AckFuture, KafkaError> {
        let acks = BatchAcks::new(&self.topic);
        let source = self.source.describe();
        let mut encoder = RecordEncoder::new(self.schema_id);
        for row in &batch.rows {
            let micros = row.last_updated.and_utc().timestamp_micros();
            match delivered.status(&row.id, micros) {
                Found::Missing => {}
                Found::Same => {
                    self.metrics.rows_already_in_topic.inc();
                    continue;
                }
                Found::Later => {
                    self.metrics.rows_superseded.inc();
                    tracing::warn!(
                        id = %row.id,
                        last_updated = %row.last_updated,
                        "row version not produced: the topic already holds a later version of \
                         this product (a delivery failed part-way), and producing it now would put \
                         the product's versions out of order"
                    );
                    continue;
                }
            }
            let rejection = match encoder.encode(row) {
                Err(rejection) => rejection,
                Ok(record) => {
                    let suspect = !suspects.is_empty() && suspects.remove(record.key, micros);
                    if suspect {
                        match self
                            .produce_alone(&acks, record.key.as_bytes(), record.value, shutdown)
                            .await?
                        {
                            None => continue,
                            Some(rejection) => rejection,
                        }
                    } else {
                        match self
                            .sink
                            .enqueue(&acks, &self.topic, record.key.as_bytes(), record.value)
                            .await
                        {
                            Ok(()) => continue,
                            Err(e) if is_refused_record(&e) => Rejection {
                                reason: if is_too_large(&e) {
                                    RejectReason::RecordTooLarge
                                } else {
                                    RejectReason::RefusedByKafka
                                },
                                detail: format!(
                                    "the record is {} bytes; Kafka takes at most {MESSAGE_MAX_BYTES}: {e}",
                                    record.key.len() + record.value.len()
                                ),
                            },
                            Err(e) => return Err(e),
                        }
                    }
                }
            };
            self.set_aside(&acks, row, &rejection, &source).await?;
        }
        acks.seal();
        Ok(acks.wait().boxed())
    }

    /// Produces a record Kafka refused together with others on its own, adding the outcome to
    /// `acks`; returns why the row is set aside when Kafka refuses it alone too.
    async fn produce_alone(
        &mut self,
        acks: &Arc<BatchAcks>,
        key: &[u8],
        value: &[u8],
        shutdown: &CancellationToken,
    ) -> Result<Option<Rejection>, KafkaError> {
        let summary = self
            .sink
            .produce_alone(&self.topic, key, value, shutdown)
            .await?
            .ok_or(KafkaError::Canceled)?;
        if let Some(refused) = summary.failed.iter().find(|f| f.refused) {
            // Nothing else is in flight: renew the producer, whose sequence may be stuck on the
            // refused record (see `KafkaSink::renewed`).
            self.sink = self.sink.renewed()?;
            return Ok(Some(Rejection {
                reason: RejectReason::RefusedByKafka,
                detail: format!(
                    "Kafka refused the record, also sent alone: {}",
                    refused.error
                ),
            }));
        }
        tracing::debug!(
            key = %String::from_utf8_lossy(key),
            delivered = summary.failures == 0,
            "a record that failed with others was sent alone"
        );
        acks.absorb(summary);
        Ok(None)
    }

    /// Sets a row aside: counted by reason, logged as an error naming the row, and sent to the
    /// dead-letter topic (if any) within the batch, so the watermark passes it only once the
    /// dead letter is acknowledged. Later versions of the product are produced as usual.
    async fn set_aside(
        &self,
        acks: &Arc<BatchAcks>,
        row: &SourceRow,
        rejection: &Rejection,
        source: &str,
    ) -> Result<(), KafkaError> {
        self.metrics
            .rows_rejected
            .with_label_values(&[rejection.reason.label()])
            .inc();
        tracing::error!(
            id = %row.id,
            last_updated = %row.last_updated,
            reason = rejection.reason.label(),
            detail = %rejection.detail,
            dead_letter_topic = self.dead_letter_topic.as_deref().unwrap_or("none"),
            "row set aside: it is not produced to the topic (later changes of this product are)"
        );
        if let Some(topic) = &self.dead_letter_topic {
            let json = dead_letter_json(row, rejection, source);
            let key = row.id.to_string();
            let headers = OwnedHeaders::new().insert(Header {
                key: DEAD_LETTER_REASON_HEADER,
                value: Some(rejection.reason.label()),
            });
            self.sink
                .enqueue_with_headers(acks, topic, key.as_bytes(), json.as_bytes(), Some(&headers))
                .await?;
        }
        Ok(())
    }

    /// Advances the watermark past an acknowledged batch; returns `Err(reason)` when some record
    /// was not acknowledged.
    async fn on_acked(
        &mut self,
        state: &mut LoopState,
        batch: InFlight,
        acks: AckSummary,
    ) -> Result<Result<(), String>, PipelineError> {
        for (partition, next) in &acks.next_offsets {
            let known = state.acknowledged.entry(*partition).or_insert(0);
            *known = (*known).max(*next);
        }
        self.metrics.records_produced.inc_by(acks.produced);
        if acks.failures > 0 {
            self.metrics.delivery_errors.inc_by(acks.failures);
            state.note_failed(&acks.failed, self.id_kind);
            return Ok(Err(acks
                .first_error
                .unwrap_or_else(|| "delivery failed".into())));
        }
        if let Some(end) = batch.end {
            state.delivered.forget_through(&end);
            if !state.suspects.is_empty() {
                state
                    .suspects
                    .forget_before(end.last_updated.and_utc().timestamp_micros());
            }
            self.watermark.position = Some(end);
        }
        self.watermark.next_offsets = durable_offsets(&state.acknowledged, &state.delivered);
        state.watermark_file.store(&self.watermark);
        state.replay_backoff.reset();
        Ok(Ok(()))
    }

    /// After a failed delivery: wait for the other in-flight batches, read back what reached the
    /// topic, and capture again from the durable watermark. Returns false on shutdown.
    async fn replay(
        &mut self,
        state: &mut LoopState,
        failure: &str,
        shutdown: &CancellationToken,
    ) -> Result<bool, PipelineError> {
        if let Some(fatal) = self.sink.fatal_error() {
            return Err(PipelineError::KafkaFatal(fatal));
        }
        tracing::error!(
            error = failure,
            watermark = %describe_position(self.watermark.position.as_ref()),
            "delivery to Kafka failed; capture replays from the durable watermark"
        );
        self.readiness
            .set("kafka", false, format!("delivery failed: {failure}"));
        self.readiness.set(
            CAPTURE_CHECK,
            false,
            format!("replaying from the watermark after a failed delivery: {failure}"),
        );
        state.read = None;
        while !state.acks.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                Some(acks) = state.acks.next() => state.note_failed(&acks.failed, self.id_kind),
            }
        }
        state.in_flight.clear();
        // Nothing is in flight any more: a fresh producer id leaves no failed sequence behind.
        self.sink = self
            .sink
            .renewed()
            .map_err(|e| PipelineError::KafkaFatal(format!("cannot renew the producer: {e}")))?;
        if state.suspects.is_empty() {
            // The cluster's trouble (not the records'): wait before trying again.
            if !state.replay_backoff.wait(shutdown).await {
                return Ok(false);
            }
        } else {
            tracing::warn!(
                records = state.suspects.len(),
                "Kafka refused records for what they are: the replay sends each failed record \
                 alone, and sets aside those it refuses alone too"
            );
        }
        let Some(delivered) = self.read_back_delivered(shutdown).await else {
            return Ok(false);
        };
        state.delivered = delivered;
        state.cursor = self.watermark.position.clone();
        state.next_read_at = Instant::now();
        self.readiness.set(CAPTURE_CHECK, true, "capturing");
        Ok(true)
    }

    fn on_read_error(&self, state: &mut LoopState, error: &SourceError) {
        state.read_failures += 1;
        let backoff = state.read_backoff.next_delay();
        state.next_read_at = Instant::now() + backoff;
        self.readiness.set("database", false, error.to_string());
        tracing::warn!(error = %error, failures = state.read_failures, retry_in = ?backoff, "cannot read changes from the database");
    }

    fn update_lag(&self, state: &LoopState) {
        let watermark = self.watermark.position.as_ref().map(|p| p.last_updated);
        let reference = match (state.in_flight.is_empty(), state.caught_up_to, watermark) {
            (true, Some(horizon), Some(w)) => Some(horizon.max(w)),
            (true, Some(horizon), None) => Some(horizon),
            (_, _, w) => w,
        };
        if let Some(reference) = reference {
            let lag = (Utc::now().naive_utc() - reference)
                .num_microseconds()
                .unwrap_or(i64::MAX) as f64
                / 1e6;
            self.metrics.watermark_lag.set(lag.max(0.0));
        }
    }
}

/// How often a degraded read horizon is reported again while it lasts.
pub const HORIZON_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Makes the state of the read horizon visible, read by read: the `/ready` check
/// [`HorizonWatch::READY_CHECK`] (false while the horizon is degraded, with the reason), the
/// gauges `producer_horizon_degraded{reason}` and `producer_horizon_sees_transactions`, and a
/// warning naming the cause and the fix when it becomes degraded, repeated every
/// [`HORIZON_WARNING_INTERVAL`] while it stays so.
pub struct HorizonWatch {
    metrics: ProducerMetrics,
    readiness: Readiness,
    last: Option<HorizonBound>,
    degraded: Option<Degraded>,
}

/// A degradation that lasts.
struct Degraded {
    reason: &'static str,
    since: std::time::Instant,
    warned_at: std::time::Instant,
    /// Reads since the last warning.
    reads: u64,
}

impl HorizonWatch {
    pub const READY_CHECK: &'static str = "capture_horizon";

    pub fn new(metrics: ProducerMetrics, readiness: Readiness) -> Self {
        Self {
            metrics,
            readiness,
            last: None,
            degraded: None,
        }
    }

    /// The `producer_horizon_degraded` reason of a bound and what it means, or `None` when the
    /// horizon is sound.
    fn degradation(bound: HorizonBound) -> Option<(&'static str, &'static str)> {
        match bound {
            HorizonBound::Window | HorizonBound::OpenTransaction => None,
            HorizonBound::WindowOnly(Blind::MissingPrivilege) => Some((
                "missing_privilege",
                "the producer's database user lacks the PROCESS privilege, so open transactions \
                 and running statements cannot be listed: the read horizon is CAPTURE_DELAY_MS \
                 alone, and a row whose transaction stays open longer than that can be missed. \
                 Fix: GRANT PROCESS ON *.* TO the producer's user (checked again every minute)",
            )),
            HorizonBound::WindowOnly(Blind::HiddenSessions) => Some((
                "hidden_sessions",
                "other roles' sessions hide when their transactions started (the producer's \
                 role lacks pg_read_all_stats): the read horizon ignores them, and a row of \
                 theirs whose transaction stays open longer than CAPTURE_DELAY_MS can be missed. \
                 Fix: GRANT pg_read_all_stats TO the producer's role",
            )),
            HorizonBound::IncompleteTransactionList(ListingProblem::Truncated) => Some((
                "truncated_listing",
                "the server cut InnoDB's status output at 1 MiB (thousands of connections?), so \
                 transactions may be missing from it: capture holds at the last safe read \
                 horizon until the list fits again",
            )),
            HorizonBound::IncompleteTransactionList(ListingProblem::Unreadable) => Some((
                "unreadable_listing",
                "InnoDB's status output has no readable list of transactions (an unknown server \
                 version's format?): capture holds at the last safe read horizon",
            )),
        }
    }

    /// Takes in the bound of a read made at `now`.
    pub fn note(&mut self, bound: HorizonBound, now: std::time::Instant) {
        self.metrics
            .horizon_sees_transactions
            .set(i64::from(!matches!(bound, HorizonBound::WindowOnly(_))));
        let degradation = Self::degradation(bound);
        for reason in crate::metrics::HORIZON_DEGRADED_REASONS {
            let active = degradation.is_some_and(|(r, _)| r == reason);
            self.metrics
                .horizon_degraded
                .with_label_values(&[reason])
                .set(i64::from(active));
        }
        match degradation {
            Some((reason, meaning)) => {
                let repeat = match &mut self.degraded {
                    Some(d) if d.reason == reason => {
                        d.reads += 1;
                        now.duration_since(d.warned_at) >= HORIZON_WARNING_INTERVAL
                    }
                    _ => {
                        self.degraded = Some(Degraded {
                            reason,
                            since: now,
                            warned_at: now,
                            reads: 1,
                        });
                        true
                    }
                };
                if repeat {
                    let d = self.degraded.as_mut().expect("set above");
                    tracing::warn!(
                        reason,
                        degraded_for_s = now.duration_since(d.since).as_secs(),
                        reads = d.reads,
                        "read horizon degraded: {meaning}"
                    );
                    d.warned_at = now;
                    d.reads = 0;
                }
                self.readiness
                    .set(Self::READY_CHECK, false, format!("{reason}: {meaning}"));
            }
            None => {
                if let Some(d) = self.degraded.take() {
                    tracing::info!(
                        reason = d.reason,
                        degraded_for_s = now.duration_since(d.since).as_secs(),
                        "read horizon sound again"
                    );
                }
                if self.last.is_none()
                    || self
                        .last
                        .is_some_and(|last| Self::degradation(last).is_some())
                {
                    self.readiness.set(
                        Self::READY_CHECK,
                        true,
                        "open transactions and running statements bound the read horizon",
                    );
                }
                // Under a steady write load this flips many times a second: debug only.
                match (self.last, bound) {
                    (Some(last), HorizonBound::OpenTransaction) if last != bound => {
                        tracing::debug!(
                            "an open transaction holds the read horizon back; later rows wait for it"
                        )
                    }
                    (Some(HorizonBound::OpenTransaction), HorizonBound::Window) => {
                        tracing::debug!("no open transaction holds the read horizon back any more")
                    }
                    _ => {}
                }
            }
        }
        self.last = Some(bound);
    }
}

/// Writes the watermark file in the background, one write at a time, so the capture loop never
/// waits for its fsyncs (about 1 ms per batch, on the loop's path between a read and the next).
/// A watermark handed over while a write is in progress replaces any older one still waiting:
/// the file only needs the latest. It lags the acknowledged position by at most one write; after
/// a crash, the read-back from its (older) next offsets finds every record produced since, so
/// none is produced twice.
struct WatermarkWriter {
    latest: watch::Sender<Option<Watermark>>,
    /// Ends when a write failed, or once the sender is dropped and the last watermark written.
    task: JoinHandle<Result<(), WatermarkError>>,
}

impl WatermarkWriter {
    fn spawn(path: PathBuf) -> Self {
        let (latest, mut pending) = watch::channel(None::<Watermark>);
        let task = tokio::spawn(async move {
            // A value sent before the sender was dropped is still seen.
            while pending.changed().await.is_ok() {
                let Some(watermark) = pending.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                tokio::task::spawn_blocking(move || watermark.store(&path))
                    .await
                    .expect("watermark writer does not panic")?;
            }
            Ok(())
        });
        Self { latest, task }
    }

    fn store(&self, watermark: &Watermark) {
        self.latest.send_replace(Some(watermark.clone()));
    }

    /// Writes the last watermark handed over, if not yet written, and stops.
    async fn finish(self) -> Result<(), WatermarkError> {
        drop(self.latest);
        self.task.await.expect("watermark writer does not panic")
    }
}

impl LoopState {
    /// Takes note of the failed records of a batch: when Kafka refused any for what it is, each
    /// of them is a suspect (refused itself, or failed with the refused one's batch).
    fn note_failed(&mut self, failed: &[FailedRecord], id_kind: IdKind) {
        if !failed.iter().any(|f| f.refused) {
            return;
        }
        for record in failed {
            match suspect_of(record, id_kind) {
                Some(suspect) => {
                    self.suspects.insert(suspect);
                }
                None => tracing::warn!(
                    error = %record.error,
                    "a failed record cannot be matched to a row"
                ),
            }
        }
    }
}

/// The row version `(key, last_updated_micros)` of a record that failed.
fn suspect_of(failed: &FailedRecord, id_kind: IdKind) -> Option<(String, i64)> {
    let key = String::from_utf8(failed.key.clone()).ok()?;
    let (_, datum) = unframe(&failed.value).ok()?;
    let micros = decode_product(id_kind.schema(), datum)
        .ok()?
        .last_updated_micros?;
    Some((key, micros))
}

/// The next item of the read in progress (the caller checks there is one).
async fn next_batch(read: &mut Option<ChangeReader>) -> Option<Result<Batch, SourceError>> {
    match read.as_mut() {
        Some(read) => read.next().await,
        None => std::future::pending().await,
    }
}

pub fn describe_position(position: Option<&Position>) -> String {
    match position {
        None => "the beginning".to_owned(),
        Some(Position {
            last_updated,
            id: None,
        }) => format!("after {last_updated}"),
        Some(Position {
            last_updated,
            id: Some(id),
        }) => format!("after ({last_updated}, id {id})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn horizon_watch() -> (
        HorizonWatch,
        ProducerMetrics,
        Readiness,
        prometheus::Registry,
    ) {
        let registry = prometheus::Registry::new();
        let metrics = ProducerMetrics::new(&registry);
        let readiness = Readiness::default();
        (
            HorizonWatch::new(metrics.clone(), readiness.clone()),
            metrics,
            readiness,
            registry,
        )
    }

    #[test]
    fn a_degraded_horizon_turns_readiness_off_and_sets_its_gauge_until_it_is_sound() {
        let (mut watch, metrics, readiness, _registry) = horizon_watch();
        readiness.set("database", true, "ok");
        let now = std::time::Instant::now();
        watch.note(HorizonBound::Window, now);
        assert!(readiness.is_ready());
        for (bound, reason, sees) in [
            (
                HorizonBound::WindowOnly(Blind::MissingPrivilege),
                "missing_privilege",
                0,
            ),
            (
                HorizonBound::WindowOnly(Blind::HiddenSessions),
                "hidden_sessions",
                0,
            ),
            (
                HorizonBound::IncompleteTransactionList(ListingProblem::Truncated),
                "truncated_listing",
                1,
            ),
            (
                HorizonBound::IncompleteTransactionList(ListingProblem::Unreadable),
                "unreadable_listing",
                1,
            ),
        ] {
            watch.note(bound, now);
            assert!(!readiness.is_ready(), "{bound:?}");
            let check = &readiness.snapshot()[HorizonWatch::READY_CHECK];
            assert!(check.detail.starts_with(reason), "{}", check.detail);
            assert_eq!(metrics.horizon_sees_transactions.get(), sees, "{bound:?}");
            for other in crate::metrics::HORIZON_DEGRADED_REASONS {
                assert_eq!(
                    metrics.horizon_degraded.with_label_values(&[other]).get(),
                    i64::from(other == reason),
                    "{bound:?}: {other}"
                );
            }
            watch.note(HorizonBound::OpenTransaction, now);
            assert!(readiness.is_ready(), "sound again after {bound:?}");
            assert!(no_degradation(&metrics));
        }
    }

    fn no_degradation(metrics: &ProducerMetrics) -> bool {
        crate::metrics::HORIZON_DEGRADED_REASONS
            .iter()
            .all(|r| metrics.horizon_degraded.with_label_values(&[r]).get() == 0)
    }

    #[test]
    fn a_lasting_degradation_is_warned_about_again_at_most_every_interval() {
        let (mut watch, ..) = horizon_watch();
        let start = std::time::Instant::now();
        let bound = HorizonBound::WindowOnly(Blind::MissingPrivilege);
        let mut warnings = Vec::new();
        // A read every 50 ms for 5 minutes.
        for i in 0..6000u32 {
            let now = start + Duration::from_millis(50) * i;
            watch.note(bound, now);
            let d = watch.degraded.as_ref().unwrap();
            if d.warned_at == now {
                warnings.push(now.duration_since(start));
            }
        }
        assert_eq!(
            warnings,
            (0..5)
                .map(|m| HORIZON_WARNING_INTERVAL * m)
                .collect::<Vec<_>>(),
            "at the start, then once a minute"
        );
        // Another reason is reported at once.
        let later = start + Duration::from_secs(301);
        watch.note(
            HorizonBound::IncompleteTransactionList(ListingProblem::Unreadable),
            later,
        );
        assert_eq!(watch.degraded.as_ref().unwrap().warned_at, later);
    }

    #[test]
    fn suspects_are_found_by_key_and_time_and_forgotten_once_passed() {
        let mut suspects = Suspects::default();
        suspects.insert(("7".into(), 10));
        suspects.insert(("8".into(), 10));
        suspects.insert(("7".into(), 20));
        suspects.insert(("7".into(), 20));
        assert_eq!(suspects.len(), 3);
        assert!(!suspects.remove("7", 11));
        assert!(suspects.remove("7", 10));
        assert!(!suspects.remove("7", 10), "only once");
        suspects.forget_before(20);
        assert_eq!(suspects.len(), 1);
        assert!(suspects.remove("7", 20));
        assert!(suspects.is_empty());
    }

    #[test]
    fn positions_read_well_in_logs() {
        let t = chrono::NaiveDateTime::parse_from_str("2024-01-01 10:00:00", "%Y-%m-%d %H:%M:%S")
            .unwrap();
        assert_eq!(describe_position(None), "the beginning");
        assert_eq!(
            describe_position(Some(&Position::new(t, 3))),
            "after (2024-01-01 10:00:00, id 3)"
        );
        assert_eq!(
            describe_position(Some(&Position::after_timestamp(t))),
            "after 2024-01-01 10:00:00"
        );
        assert_eq!(
            describe_position(Some(&Position::new(t, "P0001"))),
            "after (2024-01-01 10:00:00, id P0001)"
        );
    }

    fn watermark_at(second: u32, offset: i64) -> Watermark {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(10, 0, second)
            .unwrap();
        Watermark {
            position: Some(Position::new(t, i64::from(second))),
            topic: Some("product_updates".into()),
            next_offsets: BTreeMap::from([(0, offset)]),
        }
    }

    #[tokio::test]
    async fn the_watermark_file_ends_with_the_last_watermark_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time_track/last_read_timestamp.json");
        let writer = WatermarkWriter::spawn(path.clone());
        for second in 0..50 {
            writer.store(&watermark_at(second, i64::from(second) * 10));
        }
        writer.finish().await.unwrap();
        assert_eq!(Watermark::load(&path).unwrap(), Some(watermark_at(49, 490)));
    }

    #[tokio::test]
    async fn a_failed_watermark_write_ends_the_writer_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        // The watermark's directory would have to be where a file is.
        let blocker = dir.path().join("not_a_directory");
        std::fs::write(&blocker, "").unwrap();
        let writer = WatermarkWriter::spawn(blocker.join("watermark.json"));
        writer.store(&watermark_at(1, 10));
        let ended = tokio::time::timeout(Duration::from_secs(10), writer.task)
            .await
            .expect("the writer ends after a failed write")
            .expect("no panic");
        assert!(
            matches!(ended, Err(WatermarkError::Write { .. })),
            "{ended:?}"
        );
    }
}
