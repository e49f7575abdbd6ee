//! Group membership: the Kafka consumer, its rebalance handling and the poll loop.
//!
//! Settings: `group.instance.id` = slot (static membership, unless `CONSUMER_STATIC_MEMBERSHIP`
//! is off: a replica restarted within the session timeout gets its partitions back without a
//! rebalance), the `cooperative-sticky`
//! assignor (rebalances move only the partitions that must move, incrementally), manual offsets
//! (`enable.auto.commit=false`; commits follow durable writes), `auto.offset.reset=earliest`.
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
    /// Unique per process, so the member can be found in the group description.
    pub client_id: String,
    pub session_timeout: Duration,
    /// librdkafka `debug` contexts.
    pub debug: Option<String>,
}

pub fn consumer_config(kafka: ClientConfig, settings: &GroupSettings) -> ClientConfig {
    let mut config = kafka;
    config
        .set("group.id", &settings.group)
        .set("client.id", &settings.client_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
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

/// Looks this member up in the group description (by its unique `client.id`, or by its static
/// member id prefix when the broker reports no client ids) and publishes its member id; again
/// after every rebalance, and every 30 s.
pub async fn track_member_id(
    kafka: ClientConfig,
    group: String,
    client_id: String,
    instance_id: Option<String>,
    assignments: Arc<Assignments>,
    shutdown: CancellationToken,
) {
    let admin: Arc<BaseConsumer> = match kafka.create() {
        Ok(admin) => Arc::new(admin),
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a client to describe the group; member_id stays unknown");
            return;
        }
    };
    let mut quick_retries = 0;
    loop {
        let lookup = {
            let admin = Arc::clone(&admin);
            let group = group.clone();
            let client_id = client_id.clone();
            let instance_id = instance_id.clone();
            tokio::task::spawn_blocking(move || {
                find_member_id(&admin, &group, &client_id, instance_id.as_deref())
            })
            .await
        };
        let delay = match lookup {
            Ok(Some(member_id)) => {
                assignments.set_member_id(&member_id);
                quick_retries = 0;
                Duration::from_secs(30)
            }
            _ if quick_retries < 20 => {
                quick_retries += 1;
                Duration::from_secs(1)
            }
            _ => Duration::from_secs(30),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = assignments.changed() => quick_retries = 0,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn find_member_id(
    admin: &BaseConsumer,
    group: &str,
    client_id: &str,
    instance_id: Option<&str>,
) -> Option<String> {
    // Describing one group is the cheap way; some brokers (tansu) only answer when all groups
    // are described.
    let described = |filter: Option<&str>| -> Option<String> {
        let groups = admin
            .fetch_group_list(filter, Duration::from_secs(5))
            .ok()?;
        let group = groups.groups().iter().find(|g| g.name() == group)?;
        member_id_of(
            group.members().iter().map(|m| (m.id(), m.client_id())),
            client_id,
            instance_id,
        )
    };
    described(Some(group)).or_else(|| described(None))
}

/// Our member among `(member id, client id)` pairs: the one with our unique client id, or, when
/// the broker does not report client ids (tansu), the one whose id the coordinator made from
/// ours: `{client.id}-{uuid}` for a dynamic member (Kafka and tansu both build dynamic member ids
/// that way, and our client id is unique per process), `{group.instance.id}-{uuid}` for a static
/// one.
fn member_id_of<'a>(
    members: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    client_id: &str,
    instance_id: Option<&str>,
) -> Option<String> {
    let by_client_id = members.clone().find(|(_, c)| *c == client_id);
    let by_prefix = |prefix: Option<&str>| {
        let prefix = format!("{}-", prefix?);
        members
            .clone()
            .find(|(id, c)| c.is_empty() && id.starts_with(&prefix))
    };
    by_client_id
        .or_else(|| by_prefix(Some(client_id)))
        .or_else(|| by_prefix(instance_id))
        .map(|(id, _)| id.to_owned())
}

/// A `client.id` unique to this process and slot.
pub fn unique_client_id(slot: &str) -> String {
    format!("{slot}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_member_is_found_by_client_id_or_static_prefix() {
        let members = [
            ("consumer_1-aaa", "consumer_1-0001"),
            ("consumer_10-bbb", "consumer_10-0002"),
        ];
        let it = || members.iter().map(|&(a, b)| (a, b));
        assert_eq!(
            member_id_of(it(), "consumer_10-0002", Some("consumer_10")).as_deref(),
            Some("consumer_10-bbb")
        );
        assert_eq!(
            member_id_of(it(), "consumer_1-9999", Some("consumer_1")),
            None,
            "client ids known: no guessing"
        );
        let anonymous = [("consumer_10-bbb", ""), ("consumer_1-aaa", "")];
        let it = || anonymous.iter().map(|&(a, b)| (a, b));
        assert_eq!(
            member_id_of(it(), "x", Some("consumer_1")).as_deref(),
            Some("consumer_1-aaa")
        );
        assert_eq!(member_id_of(it(), "x", Some("consumer_2")), None);
        assert_eq!(member_id_of(it(), "x", None), None);
        // A dynamic member on a broker without client ids: its id starts with our client id.
        let dynamic = [
            ("consumer_1-0000000a-9f1c", ""),
            ("consumer_1-0000000b-77aa", ""),
        ];
        let it = || dynamic.iter().map(|&(a, b)| (a, b));
        assert_eq!(
            member_id_of(it(), "consumer_1-0000000b", None).as_deref(),
            Some("consumer_1-0000000b-77aa")
        );
        assert_eq!(member_id_of(it(), "consumer_1-0000000c", None), None);
    }
}
