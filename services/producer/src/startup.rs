//! Building and running the producer: `Application::build(config)` binds HTTP and loads the
//! watermark (a corrupt one fails here) — or, with `SOURCE=csv`, checks the CSV file, its header,
//! the value schema and the position file; `run_until_stopped` serves HTTP and then waits, with
//! backoff and the `capture` readiness check false, for each dependency in turn: the source table
//! (the database and the table may not exist yet; a missing column or a wrong type fails here),
//! the registry (the value schema for its kind of id), the broker (the topic and the dead-letter
//! topic, created if missing) and the read-back of what reached the topic after the watermark;
//! then it runs capture (or the CSV loop, [`crate::csv_source`]).

use std::sync::Arc;
use std::time::Duration;

use common::backoff::{wait_for, Attempt};
use common::config::TopicConfig;
use common::http::{base_router, bind, serve, Readiness};
use common::kafka::{ensure_topic, is_permanent_topic_error, TopicStatus};
use common::registry::{RegistryClient, RegistryError};
use rdkafka::error::KafkaError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind};
use crate::csv_source::{values, CsvCapture, CsvError, CsvRun};
use crate::metrics::ProducerMetrics;
use crate::pipeline::{describe_position, HorizonWatch, Pipeline, PipelineError, CAPTURE_CHECK};
use crate::readback::end_offsets;
use crate::sink::{producer_client_config, KafkaSink};
use crate::source::mysql::MySqlSource;
use crate::source::postgres::PgSource;
use crate::source::{IdKind, Source, SourceError};
use crate::watermark::{Watermark, WatermarkError};

/// How often readiness checks the database and the broker.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    #[error(transparent)]
    Http(#[from] std::io::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Database(SourceError),
    #[error("cannot capture from {source_name}: {error}")]
    Source {
        source_name: String,
        error: SourceError,
    },
    #[error("cannot create the Kafka producer: {0}")]
    KafkaClient(KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    Topic { topic: String, source: KafkaError },
    #[error("the schema registry refused the value schema under subject {subject}: {source}")]
    Schema {
        subject: String,
        source: RegistryError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Csv(#[from] CsvError),
}

/// What the producer captures from.
enum Capture {
    /// The table, from the watermark on.
    Table {
        source: Arc<dyn Source>,
        watermark: Watermark,
    },
    /// A CSV file, checked and ready.
    Csv(Box<CsvCapture>),
}

/// The producer service, built and ready to run.
pub struct Application {
    config: Config,
    listener: TcpListener,
    port: u16,
    metrics_registry: prometheus::Registry,
    metrics: ProducerMetrics,
    readiness: Readiness,
    capture: Capture,
    sink: KafkaSink,
    schema_registry: Arc<RegistryClient>,
}

impl Application {
    /// Loads the watermark and prepares the database pool (connecting lazily) — or checks the
    /// CSV file and its position —, the Kafka producer and the registry client, and binds
    /// `HTTP_ADDR` (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let capture = match &config.source {
            SourceKind::Table => Self::prepare_table(&config)?,
            SourceKind::Csv(csv) => {
                Capture::Csv(Box::new(CsvCapture::prepare(csv, &config.watermark_path)?))
            }
        };
        let sink = KafkaSink::new(&producer_client_config(&config.kafka, config.compression))
            .map_err(StartupError::KafkaClient)?;
        let metrics_registry = common::metrics::new_registry();
        let metrics = match &capture {
            Capture::Table { .. } => ProducerMetrics::new(&metrics_registry),
            Capture::Csv(_) => ProducerMetrics::with_reject_reasons(
                &metrics_registry,
                &values::RejectReason::ALL.map(values::RejectReason::label),
            ),
        };
        let schema_registry =
            Arc::new(RegistryClient::new(config.registry.clone()).with_metrics(&metrics_registry));
        let readiness = Readiness::default();
        let source_description = match &capture {
            Capture::Table { .. } => {
                readiness.set("database", false, "not checked yet");
                readiness.set(HorizonWatch::READY_CHECK, false, "no read yet");
                config.database_url_for_logs()
            }
            Capture::Csv(csv) => {
                readiness.set("csv", false, "not read yet");
                format!("csv {}", csv.csv_path().display())
            }
        };
        readiness.set("kafka", false, "not checked yet");
        readiness.set(CAPTURE_CHECK, false, "starting");
        let listener = bind(config.http_addr).await?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            http = %listener.local_addr()?,
            source = %source_description,
            kafka = %config.kafka.bootstrap_servers,
            registry = %config.registry.url,
            topic = %config.topic.name,
            "producer built"
        );
        Ok(Self {
            config,
            listener,
            port,
            metrics_registry,
            metrics,
            readiness,
            capture,
            sink,
            schema_registry,
        })
    }

    fn prepare_table(config: &Config) -> Result<Capture, StartupError> {
        let watermark = match Watermark::load(&config.watermark_path)? {
            Some(watermark) => {
                tracing::info!(
                    path = %config.watermark_path.display(),
                    position = %describe_position(watermark.position.as_ref()),
                    "loaded the watermark"
                );
                watermark
            }
            None => {
                tracing::info!(
                    path = %config.watermark_path.display(),
                    "no watermark file; capturing from the beginning of the table"
                );
                Watermark::default()
            }
        };
        let url = config.database_url.expose();
        let source: Arc<dyn Source> = if config.is_postgres() {
            let pool =
                crate::source::postgres::connect_lazy(url).map_err(StartupError::Database)?;
            Arc::new(PgSource::new(
                pool,
                config.table.clone(),
                config.capture_delay,
                config.writer_time_zone,
            ))
        } else {
            let pool = crate::source::mysql::connect_lazy(url).map_err(StartupError::Database)?;
            Arc::new(MySqlSource::new(
                pool,
                config.table.clone(),
                config.capture_delay,
                config.writer_time_zone,
            ))
        };
        Ok(Capture::Table { source, watermark })
    }

    /// The HTTP port (useful with `HTTP_ADDR=127.0.0.1:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics(&self) -> ProducerMetrics {
        self.metrics.clone()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves HTTP and runs capture until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let Self {
            config,
            listener,
            metrics_registry,
            metrics,
            readiness,
            capture,
            sink,
            schema_registry,
            ..
        } = self;
        let database = match &capture {
            Capture::Table { source, .. } => Some(Arc::clone(source)),
            Capture::Csv(_) => None,
        };
        let stop_background = shutdown.child_token();
        let http = tokio::spawn(serve(
            listener,
            base_router(metrics_registry, readiness.clone()),
            stop_background.clone(),
        ));
        let monitor = tokio::spawn(monitor_health(
            database,
            sink.clone(),
            config.topic.name.clone(),
            readiness.clone(),
            stop_background.clone(),
        ));

        let result = async {
            let (source, mut watermark) = match capture {
                Capture::Table { source, watermark } => (source, watermark),
                Capture::Csv(csv) => {
                    return run_csv(
                        *csv,
                        &config,
                        sink,
                        schema_registry,
                        metrics,
                        readiness,
                        &shutdown,
                    )
                    .await
                }
            };
            let Some(id_kind) =
                inspect_source(source.as_ref(), &watermark, &readiness, &shutdown).await?
            else {
                return Ok(());
            };
            let Some(schema_id) = register_schema(
                &schema_registry,
                &config,
                id_kind.schema_json(),
                &readiness,
                &shutdown,
            )
            .await?
            else {
                return Ok(());
            };
            let Some(partitions) = ensure_topics(&config, &readiness, &shutdown).await? else {
                return Ok(());
            };
            if !complete_offsets(&mut watermark, &config, partitions, &readiness, &shutdown).await?
            {
                return Ok(());
            }
            let pipeline = Pipeline {
                source,
                sink,
                kafka: config.kafka.clone(),
                registry: schema_registry,
                schema_id,
                id_kind,
                topic: config.topic.name.clone(),
                dead_letter_topic: config.dead_letter_topic.clone(),
                watermark,
                watermark_path: config.watermark_path.clone(),
                batch_size: config.batch_size,
                poll_interval: config.poll_interval,
                metrics,
                readiness,
            };
            let Some(delivered) = pipeline.read_back_delivered(&shutdown).await else {
                return Ok(());
            };
            pipeline.run(delivered, shutdown.clone()).await?;
            Ok(())
        }
        .await;

        stop_background.cancel();
        let _ = monitor.await;
        match http.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        result
    }
}

/// Checks that the source table and its columns exist (waiting while the database is
/// unreachable or the table not created yet) and that the watermark's position fits its kind of
/// id; returns that kind. `None` on shutdown.
async fn inspect_source(
    source: &dyn Source,
    watermark: &Watermark,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<IdKind>, StartupError> {
    let fail = |error| StartupError::Source {
        source_name: source.describe(),
        error,
    };
    let dependency = format!("the {} (SOURCE_TABLE)", source.describe());
    let kind = wait_for(&dependency, readiness, CAPTURE_CHECK, shutdown, || {
        let inspected = source.inspect();
        async move {
            match inspected.await {
                Ok(kind) => Attempt::Ready(kind),
                Err(SourceError::TableMissing(reason)) => Attempt::Waiting(reason),
                Err(e @ (SourceError::Table(_) | SourceError::KeyKind { .. })) => {
                    Attempt::Failed(e)
                }
                Err(e) => Attempt::Waiting(format!("the database does not answer: {e}")),
            }
        }
    })
    .await
    .map_err(fail)?;
    let Some(kind) = kind else {
        return Ok(None);
    };
    if let Some(id) = watermark.position.as_ref().and_then(|p| p.id.as_ref()) {
        let fits = matches!(
            (id, kind),
            (crate::position::RowKey::Int(_), IdKind::Int)
                | (crate::position::RowKey::Text(_), IdKind::Text)
        );
        if !fits {
            return Err(fail(SourceError::KeyKind {
                id: id.clone(),
                kind,
            }));
        }
    }
    tracing::info!(source = %source.describe(), id = kind.as_str(), "source table checked");
    Ok(Some(kind))
}

/// The CSV loop: registers the Avro value schema (if the values are Avro), makes sure the topic
/// exists, and streams the file.
async fn run_csv(
    csv: CsvCapture,
    config: &Config,
    sink: KafkaSink,
    registry: Arc<RegistryClient>,
    metrics: ProducerMetrics,
    readiness: Readiness,
    shutdown: &CancellationToken,
) -> Result<(), StartupError> {
    let schema_id = match csv.schema_text() {
        Some(schema) => {
            match register_schema(&registry, config, schema, &readiness, shutdown).await? {
                Some(id) => id,
                None => return Ok(()),
            }
        }
        None => 0,
    };
    let Some(partitions) = ensure_topics(config, &readiness, shutdown).await? else {
        return Ok(());
    };
    let run = CsvRun {
        sink,
        kafka: config.kafka.clone(),
        topic: config.topic.name.clone(),
        partitions,
        dead_letter_topic: config.dead_letter_topic.clone(),
        schema_id,
        batch_size: config.batch_size,
        poll_interval: config.poll_interval,
        metrics,
        readiness,
    };
    csv.run(run, shutdown.clone()).await?;
    Ok(())
}

/// Registers the value schema under `{topic}-value`, waiting while the registry is unreachable.
async fn register_schema(
    registry: &RegistryClient,
    config: &Config,
    schema: &str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<u32>, StartupError> {
    let subject = config.value_subject();
    let dependency = format!("the schema registry at {}", registry.url());
    let registered = wait_for(&dependency, readiness, CAPTURE_CHECK, shutdown, || async {
        match registry.register(&subject, schema).await {
            Ok(id) => Attempt::Ready(id),
            Err(e) if e.is_transient() => Attempt::Waiting(e.to_string()),
            Err(source) => Attempt::Failed(StartupError::Schema {
                subject: subject.clone(),
                source,
            }),
        }
    })
    .await?;
    if let Some(id) = registered {
        tracing::info!(subject, schema_id = id, registry = %registry.url(), "value schema registered");
    }
    Ok(registered)
}

/// Makes sure the topic (created if needed) and the dead-letter topic exist, waiting while the
/// broker is unreachable; returns the topic's partition count.
async fn ensure_topics(
    config: &Config,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<i32>, StartupError> {
    let Some(partitions) = ensure_topic_exists(config, &config.topic, readiness, shutdown).await?
    else {
        return Ok(None);
    };
    if let Some(dead_letters) = &config.dead_letter_topic {
        let topic = TopicConfig {
            name: dead_letters.clone(),
            partitions: DEAD_LETTER_PARTITIONS,
        };
        if ensure_topic_exists(config, &topic, readiness, shutdown)
            .await?
            .is_none()
        {
            return Ok(None);
        }
    }
    Ok(Some(partitions))
}

/// The dead-letter topic's partition count when the producer creates it (as the consumer does).
const DEAD_LETTER_PARTITIONS: i32 = 1;

/// Creates `topic` if needed (waiting while the broker is unreachable) and returns its partition
/// count.
async fn ensure_topic_exists(
    config: &Config,
    topic: &TopicConfig,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<i32>, StartupError> {
    let dependency = format!(
        "the broker at {} (topic {})",
        config.kafka.bootstrap_servers, topic.name
    );
    wait_for(&dependency, readiness, CAPTURE_CHECK, shutdown, || async {
        match ensure_topic(&config.kafka, topic, config.replication_factor).await {
            Ok(TopicStatus::Created) => Attempt::Ready(topic.partitions),
            Ok(TopicStatus::Exists { partitions }) => Attempt::Ready(partitions),
            Err(e) if is_permanent_topic_error(&e) => Attempt::Failed(StartupError::Topic {
                topic: topic.name.clone(),
                source: e,
            }),
            Err(e) => Attempt::Waiting(e.to_string()),
        }
    })
    .await
}

/// Makes sure the watermark knows, for every partition, from where to read back: partitions it
/// has no offset for (first start, legacy file, other topic, added partitions) start at their
/// current end. Stores the watermark when that changed it. Returns false on shutdown.
async fn complete_offsets(
    watermark: &mut Watermark,
    config: &Config,
    partitions: i32,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<bool, StartupError> {
    let topic = &config.topic.name;
    if let Some(other) = watermark.topic.as_deref().filter(|t| *t != topic.as_str()) {
        tracing::warn!(
            watermark_topic = other,
            topic = %topic,
            "the watermark's offsets belong to another topic; ignoring them (capture continues from its position)"
        );
        watermark.next_offsets.clear();
    }
    let missing: Vec<i32> = (0..partitions)
        .filter(|p| !watermark.next_offsets.contains_key(p))
        .collect();
    if missing.is_empty() && watermark.topic.as_deref() == Some(topic.as_str()) {
        return Ok(true);
    }
    let Some(ends) =
        end_offsets_when_available(&config.kafka, topic, partitions, readiness, shutdown).await
    else {
        return Ok(false);
    };
    for p in missing {
        watermark
            .next_offsets
            .insert(p, ends.get(&p).copied().unwrap_or(0));
    }
    watermark.topic = Some(topic.clone());
    let (stored, path) = (watermark.clone(), config.watermark_path.clone());
    tokio::task::spawn_blocking(move || stored.store(&path))
        .await
        .expect("watermark writer does not panic")?;
    Ok(true)
}

/// The current end offset of every partition of `topic`, waiting while a partition has no leader
/// or the broker does not answer. `None` on shutdown.
pub async fn end_offsets_when_available(
    kafka: &common::kafka::KafkaConfig,
    topic: &str,
    partitions: i32,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Option<std::collections::BTreeMap<i32, i64>> {
    let dependency = format!("the end offsets of topic {topic}");
    let ends = wait_for(&dependency, readiness, CAPTURE_CHECK, shutdown, || async {
        match end_offsets(kafka, topic, partitions).await {
            Ok(ends) => Attempt::Ready(ends),
            Err(e) => Attempt::<_, std::convert::Infallible>::Waiting(e.to_string()),
        }
    })
    .await;
    let Ok(ends) = ends;
    ends
}

/// Keeps the "database" (table capture only) and "kafka" readiness checks current.
async fn monitor_health(
    database: Option<Arc<dyn Source>>,
    sink: KafkaSink,
    topic: String,
    readiness: Readiness,
    stop: CancellationToken,
) {
    loop {
        if let Some(source) = &database {
            match tokio::time::timeout(HEALTH_TIMEOUT, source.ping()).await {
                Ok(Ok(())) => readiness.set("database", true, "reachable"),
                Ok(Err(e)) => readiness.set("database", false, e.to_string()),
                Err(_) => readiness.set(
                    "database",
                    false,
                    format!("no answer within {HEALTH_TIMEOUT:?}"),
                ),
            }
        }
        match sink.check_broker(&topic, HEALTH_TIMEOUT).await {
            Ok(()) => readiness.set("kafka", true, "broker reachable"),
            Err(e) => readiness.set("kafka", false, e.to_string()),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}
