//! Group membership: the Kafka consumer, its rebalance handling and the poll loop.
//!
//! Settings: `group.instance.id` = slot (static membership, unless `CONSUMER_STATIC_MEMBERSHIP`
//! is off: a replica restarted within the session timeout gets its partitions back without a
//! rebalance), the `CONSUMER_ASSIGNMENT_STRATEGY` assignor (eager `roundrobin` by default; both
//! protocols are handled), manual offsets (`enable.auto.commit=false`; commits follow durable
//! writes), `auto.offset.reset=earliest`.
//!
//! Rebalances run inside `poll` on the loop's thread:
//! - assigned: each new partition resumes where the logs end (see [`crate::sink::json_log`]) or at
//!   the committed offset, whichever is further; then `/assignments` shows it.
//! - revoked: pending records are written, fsync'd and committed synchronously, then the
//!   partitions leave `/assignments` and are given up. A normal rebalance or a graceful stop
//!   therefore duplicates nothing.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::http::Readiness;
use common::CancellationToken;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Statistics, TopicPartitionList};

use crate::assignments::Assignments;
use crate::metrics::ConsumerMetrics;
use crate::pipeline::{Pipeline, PipelineError};

/// How often librdkafka reports statistics (broker state for `/ready`, watermarks for lag).
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("fatal consumer error (e.g. another member uses this group.instance.id): {0}")]
    Fatal(KafkaError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Settings of the group consumer.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub group: String,
    /// `group.instance.id` (static membership), or `None` for a dynamic member.
    pub instance_id: Option<String>,
    /// Unique per process, so each replica's connections can be told apart in the broker's logs.
    pub client_id: String,
    pub session_timeout: Duration,
    /// `partition.assignment.strategy`.
    pub assignment_strategy: String,
    /// librdkafka `debug` contexts.
    pub debug: Option<String>,
}

pub fn consumer_config(kafka: ClientConfig, settings: &GroupSettings) -> ClientConfig {
    let mut config = kafka;
    config
        .set("group.id", &settings.group)
        .set("client.id", &settings.client_id)
        .set(
            "partition.assignment.strategy",
            &settings.assignment_strategy,
        )
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Latency: with 100 ms here (and a 50 ms flush interval) pipeline-bench measured a p50 of
        // 233 ms from produce to log line; with 10 ms (and 20 ms), 65 ms. More fetch requests
        // are the price: at most 100 per second per consumer while idle.
        .set("fetch.wait.max.ms", "10")
        // Throughput: when a partition's local queue is over librdkafka's thresholds as a fetch
        // response arrives, the next fetch waits fetch.queue.backoff.ms (1 s by default). A
        // consumer that spends ~1 µs per record then reads in bursts: consumer-bench measured
        // about 200 000 records/s with the default and about 1 000 000 with 20 ms.
        .set("fetch.queue.backoff.ms", "20")
        .set(
            "statistics.interval.ms",
            STATS_INTERVAL.as_millis().to_string(),
        );
    if let Some(instance_id) = &settings.instance_id {
        config.set("group.instance.id", instance_id);
    }
    if let Some(debug) = &settings.debug {
        config.set("debug", debug);
    }
    config
}

/// The consumer context: rebalance callbacks, commit results, statistics.
pub struct GroupContext {
    topic: String,
    pipeline: Mutex<Pipeline>,
    /// A failure inside a callback, surfaced by the poll loop.
    fatal: Mutex<Option<PipelineError>>,
    assignments: Arc<Assignments>,
    metrics: ConsumerMetrics,
    readiness: Readiness,
}

impl GroupContext {
    pub fn new(
        topic: &str,
        pipeline: Pipeline,
        assignments: Arc<Assignments>,
        metrics: ConsumerMetrics,
        readiness: Readiness,
    ) -> Self {
        readiness.set("kafka", false, "connecting");
        Self {
            topic: topic.to_owned(),
            pipeline: Mutex::new(pipeline),
            fatal: Mutex::new(None),
            assignments,
            metrics,
            readiness,
        }
    }

    /// The pipeline; stopped for good if a panic on the consumer thread (a failure like any
    /// other) poisoned its lock or is unwinding through the rebalance callbacks that closing
    /// the consumer runs.
    fn pipeline(&self) -> MutexGuard<'_, Pipeline> {
        let mut pipeline = self.pipeline.lock().unwrap_or_else(|poisoned| {
            let mut pipeline = poisoned.into_inner();
            pipeline.fail(&"a panic on the consumer thread");
            pipeline
        });
        if std::thread::panicking() {
            pipeline.fail(&"a panic on the consumer thread");
        }
        pipeline
    }

    fn set_fatal(&self, error: PipelineError) {
        tracing::error!(error = %error, "failure during a rebalance");
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }

    fn take_fatal(&self) -> Option<PipelineError> {
        self.fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count();
        if up > 0 {
            self.readiness
                .set("kafka", true, format!("{up} broker(s) up"));
        } else {
            self.readiness.set("kafka", false, "no broker connection");
        }
        self.pipeline().update_lag(&stats);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions = self.partitions_of(tpl);
        self.metrics.rebalances.inc();
        // A rebalance follows every JoinGroup, so the member id is current from here on.
        if let Some(member_id) = member_id(consumer) {
            self.assignments.set_member_id(&member_id);
        }
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // On an error (a fence that cannot be taken) the pipeline stops, so nothing is
                // written; librdkafka still expects the assignment to be acknowledged.
                let resume = self
                    .pipeline()
                    .assign(consumer, &partitions)
                    .unwrap_or_else(|e| {
                        self.set_fatal(e);
                        Default::default()
                    });
                for (&partition, &offset) in &resume {
                    if let Err(e) = tpl.set_partition_offset(
                        &self.topic,
                        partition,
                        rdkafka::Offset::Offset(offset),
                    ) {
                        tracing::error!(partition, error = %e, "cannot set the resume offset");
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assign failed");
                }
                let owned = self.assignments.add(&partitions);
                self.metrics.assigned_partitions.set(owned as i64);
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::error!(error = ?err, "rebalance error; giving up the partitions");
                }
                let lost = consumer.assignment_lost()
                    || err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS;
                let released = self.pipeline().release(consumer, &partitions, lost);
                if let Err(e) = released {
                    self.set_fatal(e);
                }
                let owned = self.assignments.remove(&partitions);
                self.metrics.assigned_partitions.set(owned as i64);
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let partition_errors: Vec<_> = offsets
            .elements()
            .iter()
            .filter_map(|e| e.error().err().map(|err| (e.partition(), err)))
            .collect();
        if result.is_err() || !partition_errors.is_empty() {
            self.metrics.commit_failures.inc();
            tracing::warn!(
                ?result,
                ?partition_errors,
                "offset commit failed (the log's own positions prevent duplicates)"
            );
        }
    }
}

pub type GroupConsumer = BaseConsumer<GroupContext>;

/// Creates the consumer (not yet subscribed).
pub fn create_consumer(
    config: &ClientConfig,
    context: GroupContext,
) -> Result<GroupConsumer, GroupError> {
    config
        .create_with_context(context)
        .map_err(GroupError::Create)
}

/// Polls until `shutdown`, then writes and commits what is pending and, with
/// `leave_group`, leaves the group (its partitions move to the others at once). Blocks: run it on
/// its own thread. Dropping the consumer afterwards closes it.
pub fn run_poll_loop(
    consumer: &GroupConsumer,
    topic: &str,
    leave_group: bool,
    shutdown: &CancellationToken,
) -> Result<(), GroupError> {
    consumer
        .subscribe(&[topic])
        .map_err(|source| GroupError::Subscribe {
            topic: topic.to_owned(),
            source,
        })?;
    let context = consumer.context();
    let result = poll_until_cancelled(consumer, context, shutdown)
        .and_then(|()| Ok(context.pipeline().flush(consumer, CommitMode::Sync)?))
        .and_then(|()| {
            if leave_group {
                leave(consumer, context)
            } else {
                Ok(())
            }
        });
    if let Err(e) = &result {
        // Closing the consumer next revokes the partitions: nothing may be written or
        // committed past the failure then (pipeline errors stopped it already).
        context.pipeline().fail(e);
    }
    result
}

/// Leaves the group: `unsubscribe` revokes every partition (the callback writes and commits, as
/// on any revoke) and sends LeaveGroup, also for a static member (only closing skips it, per
/// KIP-345). Records still arriving meanwhile are not handled: their partitions' next owner
/// reads them.
fn leave(consumer: &GroupConsumer, context: &GroupContext) -> Result<(), GroupError> {
    consumer.unsubscribe();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !context.assignments.partitions().is_empty() && std::time::Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(100));
        if let Some(error) = context.take_fatal() {
            return Err(error.into());
        }
    }
    // Let the LeaveGroup request go out before the consumer is closed.
    let _ = consumer.poll(Duration::from_millis(200));
    tracing::info!("left the group");
    Ok(())
}

fn poll_until_cancelled(
    consumer: &GroupConsumer,
    context: &GroupContext,
    shutdown: &CancellationToken,
) -> Result<(), GroupError> {
    let mut last_error_logged: Option<std::time::Instant> = None;
    let mut since_tick = 0u32;
    let mut timeout = Duration::ZERO;
    let mut got_record = false;
    loop {
        // While records flow, poll without waiting: librdkafka then skips reading the clock for
        // a deadline (it reads it several times per poll, a visible share of the poll thread).
        let polled = consumer.poll(if got_record { Duration::ZERO } else { timeout });
        got_record = matches!(polled, Some(Ok(_)));
        let caught_up = polled.is_none();
        match polled {
            Some(Ok(message)) => context.pipeline().handle(consumer, &message)?,
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                return Err(GroupError::Fatal(KafkaError::MessageConsumptionFatal(code)));
            }
            // Broker down and the like: librdkafka keeps retrying; log at most once a second.
            Some(Err(e))
                if last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) =>
            {
                tracing::warn!(error = %e, "consumer error");
                last_error_logged = Some(std::time::Instant::now());
            }
            Some(Err(_)) => {}
            None => {}
        }
        // Between bursts of records, and every 64 records within one: a failure in a rebalance
        // callback (they run inside a poll that returns no record, so it is seen at once),
        // shutdown, housekeeping (flush, commit, retries). Checking for every record costs more
        // than it saves.
        since_tick += 1;
        if !got_record || since_tick >= 64 {
            since_tick = 0;
            if let Some(error) = context.take_fatal() {
                return Err(error.into());
            }
            if shutdown.is_cancelled() {
                break;
            }
            let mut pipeline = context.pipeline();
            pipeline.tick(consumer, caught_up)?;
            timeout = pipeline.poll_timeout();
        }
    }
    Ok(())
}

/// The member id the group coordinator gave this consumer (`None` before its first JoinGroup).
///
/// rdkafka 0.39 has no safe wrapper for `rd_kafka_memberid`; the group description (DescribeGroups)
/// would be the alternative, but tansu 0.6 fails it with sqlite storage.
#[allow(unsafe_code)]
fn member_id<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<String> {
    use rdkafka::bindings::{rd_kafka_mem_free, rd_kafka_memberid};
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is the live handle of `consumer` (borrowed for this call).
    // `rd_kafka_memberid` returns NULL or a NUL-terminated copy, made under the handle's lock,
    // that the caller owns and must release with `rd_kafka_mem_free`: it is copied, then freed
    // exactly once.
    unsafe {
        let raw = rd_kafka_memberid(client);
        if raw.is_null() {
            return None;
        }
        let id = std::ffi::CStr::from_ptr(raw).to_string_lossy().into_owned();
        rd_kafka_mem_free(client, raw.cast());
        (!id.is_empty()).then_some(id)
    }
}

/// A `client.id` unique to this process and slot.
pub fn unique_client_id(slot: &str) -> String {
    format!("{slot}-{:08x}", rand::random::<u32>())
}
