//! Builds the application (slot, sink, dead-letter producer, Kafka consumer, HTTP listener) and
//! runs it until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::backoff::{wait_for, Attempt};
use common::config::TopicConfig;
use common::http::{base_router, bind, serve, Readiness};
use common::registry::RegistryClient;
use common::CancellationToken;
use tokio::net::TcpListener;

use crate::assignments::{self, Assignments};
use crate::config::{Config, SinkConfig};
use crate::decode::{Decoder, InputFormat};
use crate::dlq::{DeadLetterQueue, DlqError};
use crate::fence::{FenceError, Fences};
use crate::group::{self, GroupConsumer, GroupContext, GroupError, GroupSettings};
use crate::metrics::ConsumerMetrics;
use crate::pipeline::{Batching, FlushPolicy, Pipeline};
use crate::sink::json_log::{JsonLogSink, LOG_FILE};
use crate::sink::stage::StageSink;
use crate::sink::topic::TopicSink;
use crate::sink::{Sink, SinkError};
use crate::slot::{Slot, SlotError, SlotLease};
use crate::topic_id;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("cannot open the sink: {0}")]
    Sink(#[from] SinkError),
    #[error(transparent)]
    DeadLetter(#[from] DlqError),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("{0}")]
    Http(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create topic {topic}: {source}")]
    Topic {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("the schema registry refused the consumer: {0}")]
    Registry(common::registry::RegistryError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the consumer thread panicked")]
    Panicked,
}

/// Opens the configured sink; also says what it writes to.
async fn open_sink(
    config: &Config,
    lease: &SlotLease,
) -> Result<(Box<dyn Sink>, String), StartupError> {
    Ok(match &config.sink {
        SinkConfig::Log => {
            let topic_id = topic_id(config).await;
            let sink = JsonLogSink::open_for_topic_id(
                &config.logs_dir,
                lease.dir(),
                &config.topic,
                topic_id.as_deref(),
            )?;
            let description = format!("log {}", sink.log_path().display());
            (Box::new(sink), description)
        }
        SinkConfig::Stage { dir, gzip } => {
            let topic_id = topic_id(config).await;
            let sink = StageSink::open_for_topic_id(
                dir,
                &config.topic,
                topic_id.as_deref(),
                &lease.slot().name(),
                *gzip,
            )?;
            let description = format!("stage {}", sink.dir().display());
            (Box::new(sink), description)
        }
        // The output topic is created once the broker answers (`wait_for_dependencies`).
        SinkConfig::Topic { topic, .. } => {
            let sink = TopicSink::new(&config.kafka, &config.topic, topic)?;
            (Box::new(sink), format!("topic {topic}"))
        }
    })
}

/// The consumed topic's id, for the sink's positions (see [`crate::topic_id`]); `None`, with a
/// warning, when it cannot be learnt.
async fn topic_id(config: &Config) -> Option<String> {
    let kafka = config.kafka.clone();
    let topic = config.topic.clone();
    let fetched = tokio::task::spawn_blocking(move || topic_id::fetch(&kafka, &topic)).await;
    match fetched {
        Ok(Ok(id)) => {
            tracing::info!(topic = %config.topic, topic_id = %id, "topic id");
            Some(id.to_string())
        }
        Ok(Err(e)) => {
            tracing::warn!(topic = %config.topic, error = %e, "cannot learn the topic id: positions written for an earlier topic of this name would not be noticed");
            None
        }
        Err(_) => None,
    }
}

pub struct Application {
    config: Config,
    lease: SlotLease,
    log_path: PathBuf,
    listener: TcpListener,
    address: SocketAddr,
    metrics_registry: prometheus::Registry,
    readiness: Readiness,
    assignments: Arc<Assignments>,
    consumer: GroupConsumer,
    registry: Arc<RegistryClient>,
}

/// The readiness check that is false until the consumer's dependencies answered.
pub const STARTUP_CHECK: &str = "startup";

impl Application {
    /// Claims a slot, opens its log, creates the dead-letter topic if missing, creates the Kafka
    /// consumer and binds the HTTP listener (port 0 picks a free port). Call within a
    /// multi-threaded Tokio runtime.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_wrapping_sink(config, |sink| sink).await
    }

    /// [`Application::build`], passing the opened sink through `wrap` first: for fault
    /// injection in tests (a sink that fails once, a slow one).
    pub async fn build_wrapping_sink(
        config: Config,
        wrap: impl FnOnce(Box<dyn Sink>) -> Box<dyn Sink>,
    ) -> Result<Self, StartupError> {
        let lease = SlotLease::claim(&config.logs_dir, config.slot)?;
        let slot = lease.slot();
        let listener = bind(config.http_addr_for(slot)).await?;
        let address = listener.local_addr()?;

        let metrics_registry = common::metrics::new_registry();
        let metrics = ConsumerMetrics::new(&metrics_registry);
        let readiness = Readiness::default();
        let runtime = tokio::runtime::Handle::current();

        let log_path = lease.dir().join(LOG_FILE);
        let (sink, sink_description) = open_sink(&config, &lease).await?;
        let sink = wrap(sink);
        readiness.set("sink", true, sink_description.clone());

        readiness.set(STARTUP_CHECK, false, "starting");
        let dlq = DeadLetterQueue::new(&config.kafka, &config.dlq_topic, runtime.clone())?;
        let registry =
            Arc::new(RegistryClient::new(config.registry.clone()).with_metrics(&metrics_registry));
        let registry_check = Arc::clone(&registry);
        let fences = Fences::open(&config.logs_dir, &config.topic, &slot.name())?;
        let pipeline = Pipeline::new(
            &config.topic,
            Decoder::with_format(config.input_format, registry, runtime),
            sink,
            fences,
            dlq,
            metrics.clone(),
            FlushPolicy {
                max_records: config.flush_max_records,
                interval: config.flush_interval,
                batching: match config.sink {
                    SinkConfig::Stage { .. } => Batching::Fixed,
                    _ => Batching::GroupCommit,
                },
            },
        )
        .with_filter(config.filter.clone())
        .with_resume_rewind(config.resume_rewind_records);

        let assignments = Arc::new(Assignments::new(&slot.name(), &config.group, &config.topic));
        let context = GroupContext::new(
            &config.topic,
            pipeline,
            Arc::clone(&assignments),
            metrics,
            readiness.clone(),
        );
        let client_id = group::unique_client_id(&slot.name());
        let settings = GroupSettings {
            group: config.group.clone(),
            instance_id: config.static_membership.then(|| slot.name()),
            client_id,
            session_timeout: config.session_timeout,
            assignment_strategy: config.assignment_strategy.clone(),
            debug: config.kafka_debug.clone(),
        };
        let consumer = group::create_consumer(
            &group::consumer_config(config.kafka.client_config(), &settings),
            context,
        )?;
        tracing::info!(
            slot = %slot,
            group = %config.group,
            topic = %config.topic,
            sink = %sink_description,
            http = %address,
            "consumer ready to join the group"
        );
        Ok(Self {
            config,
            lease,
            log_path,
            listener,
            address,
            metrics_registry,
            readiness,
            assignments,
            consumer,
            registry: registry_check,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn slot(&self) -> Slot {
        self.lease.slot()
    }

    /// `CONSUMER_LOGS_DIR/consumer_N/consumer_log.json` (written by the `log` sink).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Consumes until `shutdown` is cancelled, then writes and commits what was read, leaves the
    /// partitions, stops the HTTP server and releases the slot.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Self {
            config,
            lease,
            listener,
            metrics_registry,
            readiness,
            assignments,
            consumer,
            registry,
            ..
        } = self;
        let router = base_router(metrics_registry, readiness.clone())
            .merge(assignments::router(Arc::clone(&assignments)));
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(serve(listener, router, http_stop.clone()));

        let waited = wait_for_dependencies(&config, &registry, &readiness, &shutdown).await;
        let polled = match waited {
            Ok(Some(())) => {
                let topic = config.topic.clone();
                let leave_group = config.leave_group_on_shutdown;
                tokio::task::spawn_blocking(move || {
                    let result = group::run_poll_loop(&consumer, &topic, leave_group, &shutdown);
                    drop(consumer); // closes the consumer: final revoke, nothing left to commit
                    result
                })
                .await
            }
            Ok(None) => Ok(Ok(())),
            Err(e) => {
                http_stop.cancel();
                let _ = http.await;
                return Err(e);
            }
        };

        http_stop.cancel();
        let served = http.await;
        drop(lease);
        tracing::info!("consumer stopped");
        match polled {
            Err(_) => Err(RunError::Panicked),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RunError::Http(e)),
                Err(_) => Err(RunError::Panicked),
            },
        }
    }
}

/// Waits, with backoff and `/ready` false, until the broker answers and the input topic exists,
/// the dead-letter topic (and with `CONSUMER_SINK=topic` the output topic) exists or is created,
/// and, for Avro input, the schema registry answers. Subscribing earlier to a topic that does not
/// exist yet only yields errors. `Ok(None)` on shutdown.
async fn wait_for_dependencies(
    config: &Config,
    registry: &RegistryClient,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<()>, RunError> {
    let kafka = &config.kafka;
    let dependency = format!(
        "topic {} on the broker at {}",
        config.topic, kafka.bootstrap_servers
    );
    let partitions = wait_for(&dependency, readiness, STARTUP_CHECK, shutdown, || async {
        match common::kafka::partition_count(kafka, &config.topic).await {
            Ok(Some(partitions)) => Attempt::<_, RunError>::Ready(partitions),
            Ok(None) => Attempt::Waiting(format!(
                "the topic {} does not exist yet (the producer creates it)",
                config.topic
            )),
            Err(e) => Attempt::Waiting(format!("the broker does not answer: {e}")),
        }
    })
    .await?;
    let Some(partitions) = partitions else {
        return Ok(None);
    };
    let mut topics = vec![TopicConfig {
        name: config.dlq_topic.clone(),
        partitions: 1,
    }];
    if let SinkConfig::Topic {
        topic,
        partitions: output_partitions,
    } = &config.sink
    {
        topics.push(TopicConfig {
            name: topic.clone(),
            partitions: output_partitions.unwrap_or(partitions),
        });
    }
    for topic in &topics {
        let dependency = format!("topic {} (created if missing)", topic.name);
        let created = wait_for(&dependency, readiness, STARTUP_CHECK, shutdown, || async {
            match common::kafka::ensure_topic(kafka, topic, config.dlq_replication_factor).await {
                Ok(_) => Attempt::Ready(()),
                Err(e) if common::kafka::is_permanent_topic_error(&e) => {
                    Attempt::Failed(RunError::Topic {
                        topic: topic.name.clone(),
                        source: e,
                    })
                }
                Err(e) => Attempt::Waiting(e.to_string()),
            }
        })
        .await?;
        if created.is_none() {
            return Ok(None);
        }
    }
    if config.input_format == InputFormat::Avro {
        let dependency = format!("the schema registry at {}", config.registry.url);
        let answered = wait_for(&dependency, readiness, STARTUP_CHECK, shutdown, || async {
            match registry.check().await {
                Ok(()) => Attempt::Ready(()),
                Err(e) if e.is_transient() => Attempt::Waiting(e.to_string()),
                Err(e) => Attempt::Failed(RunError::Registry(e)),
            }
        })
        .await?;
        if answered.is_none() {
            return Ok(None);
        }
    }
    readiness.set(
        STARTUP_CHECK,
        true,
        format!("topic {} ({partitions} partitions) exists", config.topic),
    );
    Ok(Some(()))
}
