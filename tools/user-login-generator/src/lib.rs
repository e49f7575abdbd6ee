//! `user-login-generator`: produces prototype 004's `user-login` events to Kafka at a steady,
//! configurable rate, so the consumer's Kafka-to-Kafka mode (JSON input) has something to read.
//!
//! * [`event`]: the event (a JSON object of strings, keyed by `user_id`) and its pure random
//!   generator.
//! * [`config`]: environment variables and their defaults.
//! * [`run`]: creates the topic if missing, then produces with an idempotent producer
//!   (`acks=all`) at `EVENTS_PER_SECOND` until `GENERATOR_MAX_EVENTS` events are acknowledged or
//!   the shutdown token is cancelled (SIGTERM/SIGINT), and waits for the deliveries in flight.
//!
//! Pacing: a tokio interval ticks every `1 / EVENTS_PER_SECOND` seconds, but at least every
//! 10 ms; each tick sends the events that are due by then (event `k` is due `k / rate` seconds
//! after the start), so high rates go out in small bursts. When the broker cannot keep up for
//! more than a second, the generator does not try to catch up in a storm: it resumes at the
//! configured rate and logs how many events it fell short.
//!
//! A failed delivery (after librdkafka's retries, within [`DELIVERY_TIMEOUT`]) is fatal: the
//! generator stops and `run` returns the error.

pub mod config;
pub mod event;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use common::kafka::{ensure_topic, KafkaConfig};
use common::CancellationToken;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::time::MissedTickBehavior;

pub use config::Config;
pub use event::{generate, UserLogin};

/// How often progress is logged.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// librdkafka's `message.timeout.ms`: a record not acknowledged by then fails (and stops the
/// generator).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest pacing tick: at high rates each tick sends a burst.
pub const MIN_TICK: Duration = Duration::from_millis(10);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events the broker acknowledged.
    pub acknowledged: u64,
    /// `true` when the shutdown token stopped the run (rather than `GENERATOR_MAX_EVENTS`).
    pub interrupted: bool,
    /// Events the pacer gave up on because the broker did not keep up with the rate.
    pub fell_short: u64,
}

/// The producer settings: idempotent, `acks=all`, keys partitioned like the Java client.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("client.id", "user-login-generator")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
    config
}

/// Creates the topic if missing, then produces events until `config.max_events` are acknowledged
/// or `shutdown` is cancelled; either way it waits for the deliveries in flight before returning.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    let topic = &config.topic.name;
    tokio::select! {
        _ = shutdown.cancelled() => {
            return Ok(Summary { acknowledged: 0, interrupted: true, fell_short: 0 });
        }
        status = ensure_topic(&config.kafka, &config.topic, config.replication_factor) => {
            let status = status.with_context(|| format!(
                "cannot check or create topic {topic} on {} (is the broker up?)",
                config.kafka.bootstrap_servers
            ))?;
            tracing::info!(topic = %topic, ?status, "topic ready");
        }
    }
    let producer: FutureProducer = producer_config(&config.kafka)
        .create()
        .context("cannot create the Kafka producer")?;

    let limit = config.max_events.unwrap_or(u64::MAX);
    let mut rng = StdRng::from_os_rng();
    let started = Instant::now();
    let mut pacer = Pacer::new(config.events_per_second, started);
    let mut ticker = tokio::time::interval(pacer.tick_period());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + PROGRESS_INTERVAL,
        PROGRESS_INTERVAL,
    );
    let mut in_flight = FuturesUnordered::new();
    let mut enqueued: u64 = 0;
    let mut acknowledged: u64 = 0;
    let mut last_report = (started, 0u64);
    let mut interrupted = false;
    tracing::info!(
        topic = %topic,
        events_per_second = config.events_per_second,
        max_events = config.max_events.unwrap_or(0),
        "producing user-login events"
    );

    while acknowledged < limit {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                interrupted = true;
                break;
            }
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                settle(topic, result)?;
                acknowledged += 1;
                // Take every other acknowledgement that is ready without another select round.
                while let Some(Some(result)) = in_flight.next().now_or_never() {
                    settle(topic, result)?;
                    acknowledged += 1;
                }
            }
            _ = ticker.tick(), if enqueued < limit => {
                let due = pacer.due(Instant::now(), enqueued).min(limit - enqueued);
                let timestamp = epoch_seconds();
                for _ in 0..due {
                    let event = generate(&mut rng, timestamp);
                    let value = event.to_json();
                    let record = FutureRecord::to(topic).key(event.key()).payload(&value);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            in_flight.push(delivery);
                            enqueued += 1;
                        }
                        // The local queue is full (the broker is slower than the rate): the
                        // rest of this burst waits for the next tick.
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            break;
                        }
                        Err((error, _)) => {
                            return Err(error).with_context(|| format!("cannot produce to {topic}"));
                        }
                    }
                }
            }
            _ = progress.tick() => {
                let now = Instant::now();
                let (since, before) = last_report;
                let rate = (acknowledged - before) as f64 / now.duration_since(since).as_secs_f64();
                tracing::info!(
                    acknowledged,
                    in_flight = in_flight.len(),
                    rate = format!("{rate:.1}/s"),
                    fell_short = pacer.fell_short(),
                    "progress"
                );
                last_report = (now, acknowledged);
            }
        }
    }

    if !in_flight.is_empty() {
        tracing::info!(
            in_flight = in_flight.len(),
            "waiting for the deliveries in flight"
        );
        let drain = async {
            while let Some(result) = in_flight.next().await {
                settle(topic, result)?;
                acknowledged += 1;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(5), drain)
            .await
            .map_err(|_| {
                anyhow::anyhow!("deliveries still unconfirmed after {DELIVERY_TIMEOUT:?}")
            })??;
    }
    let summary = Summary {
        acknowledged,
        interrupted,
        fell_short: pacer.fell_short(),
    };
    tracing::info!(
        acknowledged,
        interrupted,
        fell_short = summary.fell_short,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "stopped"
    );
    Ok(summary)
}

fn settle(
    topic: &str,
    result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> anyhow::Result<()> {
    match result {
        Ok(Ok(_delivery)) => Ok(()),
        Ok(Err((error, _message))) => {
            Err(error).with_context(|| format!("delivery to {topic} failed"))
        }
        Err(_) => bail!("the producer dropped a delivery to {topic}"),
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decides how many events each tick sends: event `k` (counted from the epoch) is due
/// `k / rate` seconds after it. More than a second behind, it restarts from now instead of
/// catching up, and counts the events it gave up on.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    epoch: Instant,
    /// Events sent before `epoch`.
    base: u64,
    fell_short: u64,
}

impl Pacer {
    pub fn new(events_per_second: u32, start: Instant) -> Self {
        Self {
            rate: u64::from(events_per_second.max(1)),
            epoch: start,
            base: 0,
            fell_short: 0,
        }
    }

    /// `1 / rate`, but at least [`MIN_TICK`].
    pub fn tick_period(&self) -> Duration {
        (Duration::from_secs(1) / u32::try_from(self.rate).unwrap_or(u32::MAX)).max(MIN_TICK)
    }

    /// How many events to send at `now`, given that `sent` were sent so far.
    pub fn due(&mut self, now: Instant, sent: u64) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        let since_epoch =
            u64::try_from(elapsed * u128::from(self.rate) / 1_000_000_000).unwrap_or(u64::MAX);
        let target = self.base.saturating_add(since_epoch).saturating_add(1);
        let behind = target.saturating_sub(sent);
        if behind > self.rate + self.per_tick() {
            self.fell_short += behind - 1;
            self.epoch = now;
            self.base = sent;
            return 1;
        }
        behind
    }

    /// Events the pacer gave up on so far.
    pub fn fell_short(&self) -> u64 {
        self.fell_short
    }

    fn per_tick(&self) -> u64 {
        let nanos = self.tick_period().as_nanos() * u128::from(self.rate);
        u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_period_is_one_event_but_at_least_ten_ms() {
        let start = Instant::now();
        assert_eq!(Pacer::new(1, start).tick_period(), Duration::from_secs(1));
        assert_eq!(
            Pacer::new(10, start).tick_period(),
            Duration::from_millis(100)
        );
        assert_eq!(Pacer::new(100, start).tick_period(), MIN_TICK);
        assert_eq!(Pacer::new(100_000, start).tick_period(), MIN_TICK);
    }

    #[test]
    fn events_are_due_at_k_over_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10, start);
        assert_eq!(pacer.due(start, 0), 1, "the first event goes at once");
        assert_eq!(pacer.due(start + Duration::from_millis(50), 1), 0);
        assert_eq!(pacer.due(start + Duration::from_millis(100), 1), 1);
        assert_eq!(pacer.due(start + Duration::from_millis(1000), 2), 9);
        assert_eq!(pacer.fell_short(), 0);
    }

    #[test]
    fn high_rates_send_bursts_that_add_up_to_the_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(100_000, start);
        let mut sent = 0;
        for tick in 0..=100 {
            sent += pacer.due(start + MIN_TICK * tick, sent);
        }
        // Ticks at 0, 10 ms, ..., 1 s: the events due up to and including t = 1 s.
        assert_eq!(sent, 100_001);
        assert_eq!(pacer.fell_short(), 0);
    }

    #[test]
    fn a_long_stall_is_not_caught_up_in_a_storm() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10, start);
        assert_eq!(pacer.due(start, 0), 1);
        let later = start + Duration::from_secs(5);
        assert_eq!(pacer.due(later, 1), 1);
        assert_eq!(pacer.fell_short(), 49);
        // From there on, the rate again.
        assert_eq!(pacer.due(later + Duration::from_millis(100), 2), 1);
        assert_eq!(pacer.due(later + Duration::from_millis(1000), 3), 9);
    }

    #[test]
    fn producer_is_idempotent_with_acks_all() {
        let config = producer_config(&KafkaConfig::plaintext("127.0.0.1:9092"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }
}
