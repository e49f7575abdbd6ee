//! The consumer's configuration, read from environment variables (each with a documented default).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*` | brokers and security | `127.0.0.1:9092`, plaintext |
//! | `SCHEMA_REGISTRY_URL`, `SCHEMA_REGISTRY_USERNAME`, `SCHEMA_REGISTRY_PASSWORD` | registry of writer schemas | `http://127.0.0.1:8081` |
//! | `TOPIC` | topic to consume | `product_updates` |
//! | `CONSUMER_GROUP` | consumer group id | `product_updates_consumers` |
//! | `CONSUMER_LOGS_DIR` | root of the per-slot logs (`consumer_N/consumer_log.json`) | `consumer_logs` |
//! | `CONSUMER_SLOT` | pin the slot (`consumer_3` or `3`) instead of claiming the lowest free one | unset |
//! | `CONSUMER_DLQ_TOPIC` | dead-letter topic for poison pills | `{TOPIC}.dlq` |
//! | `CONSUMER_DLQ_REPLICATION_FACTOR` | replication factor used if the consumer creates the dead-letter topic (or, with `CONSUMER_SINK=topic`, the output topic) | `1` |
//! | `CONSUMER_FLUSH_MAX_RECORDS` | write + fsync + commit once this many records are pending | `5000` |
//! | `CONSUMER_FLUSH_INTERVAL_MS` | ... or once the oldest pending record waited this long (a consumer that has read everything fetched writes at once: [`crate::pipeline::Batching`]) | `20` |
//! | `CONSUMER_SESSION_TIMEOUT_MS` | group session timeout (keep 45 s with tansu) | `45000` |
//! | `CONSUMER_STATIC_MEMBERSHIP` | use the slot as `group.instance.id` (KIP-345 static membership). Turn off on brokers that never expire a crashed static member (tansu 0.6 expires members only on requests from non-static members) | `true` |
//! | `CONSUMER_ASSIGNMENT_STRATEGY` | partition assignor: `roundrobin` or `range` (eager: every rebalance revokes all partitions, each replica writes and commits what it read, then all are assigned in one round), or `cooperative-sticky` (only the partitions that move are revoked, in a second round). Keep an eager one on tansu 0.6, which never completes the second round of a cooperative rebalance for static members | `roundrobin` |
//! | `CONSUMER_LEAVE_GROUP_ON_SHUTDOWN` | on SIGTERM, leave the group so the partitions move at once (`true`), or stay a static member until the session timeout so a quick restart gets them back without a rebalance (`false`, KIP-345) | `true` |
//! | `CONSUMER_RESUME_REWIND_RECORDS` | after an assignment (or a registry retry), fetch from this many records before each resume point (they are skipped, not written again). Set it to the producer's batch size (1000) on tansu 0.6, which returns nothing of a record batch when a fetch starts in its middle: a resume inside a batch then needs no look back further (the consumer looks back until its fetch covers the resume point, whatever this is); 0 on Kafka | `0` |
//! | `CONSUMER_KAFKA_DEBUG` | librdkafka debug contexts for troubleshooting (e.g. `cgrp,fetch`), logged at debug level under target `librdkafka` | unset |
//! | `INPUT_FORMAT` | `avro`: products in the Confluent wire format (the producer's output); `json`: any JSON object per record (e.g. prototype 004's `user-login` events), carried through untransformed | `avro` |
//! | `CONSUMER_FILTER` | keep only records matching a rule on a field as read, e.g. `locale == "RU"`, `category in ("Cat_1", "Cat_5")` (see [`crate::filter`]) | unset (keep all) |
//! | `CONSUMER_SINK` | `log`: the slot's JSON log; `stage`: JSON Lines files per batch in `STAGE_DIR`; `topic`: produce to `OUTPUT_TOPIC` | `log` |
//! | `STAGE_DIR` | stage sink: root of `<topic>/<partition>-<first>-<last>.<topic id>.jsonl` | `stage` |
//! | `BATCH_MAX_RECORDS`, `BATCH_MAX_SECONDS` | stage sink: write a batch once this many records are pending, or once the oldest waited this long (replace `CONSUMER_FLUSH_*`) | `100`, `30` |
//! | `STAGE_GZIP` | stage sink: gzip the files (`.jsonl.gz`) | `false` |
//! | `OUTPUT_TOPIC` | topic sink: where processed records go | `processed-{TOPIC}` |
//! | `OUTPUT_TOPIC_PARTITIONS` | topic sink: partitions if the consumer creates the output topic | the input topic's count |
//! | `HTTP_ADDR` | `/health`, `/ready`, `/metrics`, `/assignments` | `127.0.0.1:(9110 + N)` for slot `consumer_N`; `0.0.0.0:8080` in containers |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, Env, TopicConfig};
use common::kafka::KafkaConfig;
use common::registry::RegistryConfig;

use crate::decode::InputFormat;
use crate::filter::{Filter, PRODUCT_FIELDS};
use crate::slot::Slot;

/// Where records go (`CONSUMER_SINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// `consumer_N/consumer_log.json`.
    Log,
    /// One JSON Lines file per partition and batch under `dir/<topic>/`.
    Stage { dir: PathBuf, gzip: bool },
    /// Produce to `topic` (created with `partitions`, or the input's count, if missing).
    Topic {
        topic: String,
        partitions: Option<i32>,
    },
}

/// Everything the consumer needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub topic: String,
    pub group: String,
    pub logs_dir: PathBuf,
    /// `None`: claim the lowest free slot.
    pub slot: Option<Slot>,
    pub dlq_topic: String,
    pub dlq_replication_factor: i32,
    pub flush_max_records: usize,
    pub flush_interval: Duration,
    pub session_timeout: Duration,
    pub static_membership: bool,
    /// librdkafka `partition.assignment.strategy`.
    pub assignment_strategy: String,
    pub leave_group_on_shutdown: bool,
    /// Records re-read before each resume point after an assignment.
    pub resume_rewind_records: i64,
    pub input_format: InputFormat,
    pub filter: Option<Filter>,
    pub sink: SinkConfig,
    /// librdkafka `debug` contexts, if any.
    pub kafka_debug: Option<String>,
    /// `None`: `127.0.0.1:(9110 + N)` for slot `consumer_N`, decided once the slot is claimed.
    pub http_addr: Option<SocketAddr>,
}

impl Config {
    pub const DEFAULT_GROUP: &'static str = "product_updates_consumers";
    pub const DEFAULT_LOGS_DIR: &'static str = "consumer_logs";
    pub const DEFAULT_FLUSH_MAX_RECORDS: usize = 5000;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
    pub const DEFAULT_STAGE_DIR: &'static str = "stage";
    pub const DEFAULT_BATCH_MAX_RECORDS: usize = 100;
    pub const DEFAULT_BATCH_MAX_SECONDS: u64 = 30;
    /// Slot `consumer_N` listens on `127.0.0.1:(HTTP_BASE_PORT + N)` unless `HTTP_ADDR` is set.
    pub const HTTP_BASE_PORT: u16 = 9110;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let topic = TopicConfig::from_env(env)?.name;
        let slot = match env.optional("CONSUMER_SLOT") {
            None => None,
            Some(value) => Some(Slot::parse(&value).ok_or_else(|| ConfigError::Invalid {
                name: "CONSUMER_SLOT".into(),
                value: value.clone(),
                expected: "a slot like consumer_3 (or just 3), from 1 to 9999".into(),
            })?),
        };
        let http_addr = match env.optional("HTTP_ADDR") {
            None => None,
            Some(_) => Some(env.socket_addr("HTTP_ADDR", "")?),
        };
        let input_format = match env
            .one_of("INPUT_FORMAT", "avro", &["avro", "json"])?
            .as_str()
        {
            "json" => InputFormat::Json,
            _ => InputFormat::Avro,
        };
        let filter = match env.optional("CONSUMER_FILTER") {
            None => None,
            Some(rule) => {
                let filter = Filter::parse(&rule).map_err(|e| ConfigError::Invalid {
                    name: "CONSUMER_FILTER".into(),
                    value: rule.clone(),
                    expected: format!("a rule like `locale == \"RU\"` or `category in (\"Cat_1\", \"Cat_5\")` ({e})"),
                })?;
                if input_format == InputFormat::Avro && !PRODUCT_FIELDS.contains(&filter.field()) {
                    return Err(ConfigError::Invalid {
                        name: "CONSUMER_FILTER".into(),
                        value: rule,
                        expected: format!(
                            "a rule on a product field ({}) with INPUT_FORMAT=avro",
                            PRODUCT_FIELDS.join(", ")
                        ),
                    });
                }
                Some(filter)
            }
        };
        let sink = match env
            .one_of("CONSUMER_SINK", "log", &["log", "stage", "topic"])?
            .as_str()
        {
            "stage" => SinkConfig::Stage {
                dir: PathBuf::from(env.string("STAGE_DIR", Self::DEFAULT_STAGE_DIR)),
                gzip: env.bool("STAGE_GZIP", false)?,
            },
            "topic" => SinkConfig::Topic {
                topic: env.topic_name("OUTPUT_TOPIC", &format!("processed-{topic}"))?,
                partitions: match env.optional("OUTPUT_TOPIC_PARTITIONS") {
                    None => None,
                    Some(_) => Some(env.parse_checked(
                        "OUTPUT_TOPIC_PARTITIONS",
                        1,
                        "a partition count from 1 to 10000",
                        |n| (1..=10_000).contains(n),
                    )?),
                },
            },
            _ => SinkConfig::Log,
        };
        if let SinkConfig::Topic { topic: output, .. } = &sink {
            if *output == topic {
                return Err(ConfigError::Invalid {
                    name: "OUTPUT_TOPIC".into(),
                    value: output.clone(),
                    expected: "a topic other than the input TOPIC".into(),
                });
            }
        }
        let (flush_max_records, flush_interval) = if matches!(sink, SinkConfig::Stage { .. }) {
            let records = env.parse_checked(
                "BATCH_MAX_RECORDS",
                Self::DEFAULT_BATCH_MAX_RECORDS,
                "a whole number of records from 1 to 1000000",
                |n| (1..=1_000_000).contains(n),
            )?;
            let seconds: u64 = env.parse_checked(
                "BATCH_MAX_SECONDS",
                Self::DEFAULT_BATCH_MAX_SECONDS,
                "whole seconds from 1 to 86400",
                |n| (1..=86_400).contains(n),
            )?;
            (records, Duration::from_secs(seconds))
        } else {
            let records = env.parse_checked(
                "CONSUMER_FLUSH_MAX_RECORDS",
                Self::DEFAULT_FLUSH_MAX_RECORDS,
                "a whole number of records from 1 to 1000000",
                |n| (1..=1_000_000).contains(n),
            )?;
            (records, Self::flush_interval(env)?)
        };
        let session_timeout =
            env.millis("CONSUMER_SESSION_TIMEOUT_MS", Self::DEFAULT_SESSION_TIMEOUT)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&session_timeout) {
            return Err(ConfigError::Invalid {
                name: "CONSUMER_SESSION_TIMEOUT_MS".into(),
                value: env
                    .optional("CONSUMER_SESSION_TIMEOUT_MS")
                    .unwrap_or_default(),
                expected: "milliseconds from 1000 to 3600000".into(),
            });
        }
        Ok(Self {
            kafka: KafkaConfig::from_env(env)?,
            registry: RegistryConfig::from_env(env)?,
            group: env.string("CONSUMER_GROUP", Self::DEFAULT_GROUP),
            logs_dir: PathBuf::from(env.string("CONSUMER_LOGS_DIR", Self::DEFAULT_LOGS_DIR)),
            slot,
            dlq_topic: env.topic_name("CONSUMER_DLQ_TOPIC", &format!("{topic}.dlq"))?,
            dlq_replication_factor: env.parse_checked(
                "CONSUMER_DLQ_REPLICATION_FACTOR",
                1,
                "a replication factor from 1 to 32",
                |n| (1..=32).contains(n),
            )?,
            flush_max_records,
            flush_interval,
            session_timeout,
            static_membership: env.bool("CONSUMER_STATIC_MEMBERSHIP", true)?,
            assignment_strategy: env.one_of(
                "CONSUMER_ASSIGNMENT_STRATEGY",
                "roundrobin",
                &["roundrobin", "range", "cooperative-sticky"],
            )?,
            leave_group_on_shutdown: env.bool("CONSUMER_LEAVE_GROUP_ON_SHUTDOWN", true)?,
            resume_rewind_records: env.parse_checked(
                "CONSUMER_RESUME_REWIND_RECORDS",
                0,
                "a whole number of records from 0 to 1000000",
                |n| (0..=1_000_000).contains(n),
            )?,
            input_format,
            filter,
            sink,
            kafka_debug: env.optional("CONSUMER_KAFKA_DEBUG"),
            http_addr,
            topic,
        })
    }

    fn flush_interval(env: &Env) -> Result<Duration, ConfigError> {
        let interval = env.millis("CONSUMER_FLUSH_INTERVAL_MS", Self::DEFAULT_FLUSH_INTERVAL)?;
        if interval.is_zero() || interval > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                name: "CONSUMER_FLUSH_INTERVAL_MS".into(),
                value: env
                    .optional("CONSUMER_FLUSH_INTERVAL_MS")
                    .unwrap_or_default(),
                expected: "milliseconds from 1 to 60000".into(),
            });
        }
        Ok(interval)
    }

    /// The address `/health` etc. listen on for `slot`.
    pub fn http_addr_for(&self, slot: Slot) -> SocketAddr {
        self.http_addr.unwrap_or_else(|| {
            let port = Self::HTTP_BASE_PORT
                .saturating_add(u16::try_from(slot.number()).unwrap_or(u16::MAX));
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.topic, "product_updates");
        assert_eq!(config.group, "product_updates_consumers");
        assert_eq!(config.logs_dir, PathBuf::from("consumer_logs"));
        assert_eq!(config.dlq_topic, "product_updates.dlq");
        assert_eq!(config.slot, None);
        assert_eq!(config.session_timeout, Duration::from_secs(45));
        assert!(config.leave_group_on_shutdown);
        assert_eq!(config.resume_rewind_records, 0);
        assert!(config.static_membership);
        assert_eq!(config.assignment_strategy, "roundrobin");
        assert_eq!(config.sink, SinkConfig::Log);
        assert_eq!(config.input_format, InputFormat::Avro);
        assert_eq!(config.filter, None);
        assert_eq!(config.flush_max_records, 5000);
        assert_eq!(
            config.http_addr_for(Slot::new(3).unwrap()).to_string(),
            "127.0.0.1:9113"
        );
    }

    #[test]
    fn stage_and_topic_sinks() {
        let config = Config::from_env(&Env::from_pairs([("CONSUMER_SINK", "stage")])).unwrap();
        assert_eq!(
            config.sink,
            SinkConfig::Stage {
                dir: PathBuf::from("stage"),
                gzip: false
            }
        );
        assert_eq!(config.flush_max_records, 100);
        assert_eq!(config.flush_interval, Duration::from_secs(30));

        let config = Config::from_env(&Env::from_pairs([
            ("TOPIC", "user-login"),
            ("CONSUMER_SINK", "topic"),
            ("INPUT_FORMAT", "json"),
            ("CONSUMER_FILTER", "locale == 'RU'"),
        ]))
        .unwrap();
        assert_eq!(
            config.sink,
            SinkConfig::Topic {
                topic: "processed-user-login".into(),
                partitions: None
            }
        );
        assert_eq!(config.input_format, InputFormat::Json);
        assert_eq!(config.filter.unwrap().field(), "locale");
        assert_eq!(config.flush_max_records, 5000);
    }

    #[test]
    fn resume_rewind_is_a_bounded_record_count() {
        let config = Config::from_env(&Env::from_pairs([(
            "CONSUMER_RESUME_REWIND_RECORDS",
            "1000",
        )]))
        .unwrap();
        assert_eq!(config.resume_rewind_records, 1000);
        for bad in ["-1", "1000001", "lots"] {
            let err = Config::from_env(&Env::from_pairs([("CONSUMER_RESUME_REWIND_RECORDS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("CONSUMER_RESUME_REWIND_RECORDS"), "{err}");
        }
    }

    #[test]
    fn a_product_filter_must_name_a_product_field() {
        let err = Config::from_env(&Env::from_pairs([("CONSUMER_FILTER", "locale == 'RU'")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONSUMER_FILTER") && err.contains("category"),
            "{err}"
        );
        assert!(Config::from_env(&Env::from_pairs([(
            "CONSUMER_FILTER",
            "category == 'Cat_5'"
        )]))
        .is_ok());
    }

    #[test]
    fn bad_sink_settings_name_the_variable() {
        for (sink, name, value) in [
            ("stage", "STAGE_GZIP", "maybe"),
            ("stage", "BATCH_MAX_RECORDS", "0"),
            ("stage", "BATCH_MAX_SECONDS", "0.5"),
            ("topic", "OUTPUT_TOPIC", "product_updates"),
            ("topic", "OUTPUT_TOPIC_PARTITIONS", "0"),
        ] {
            let err = Config::from_env(&Env::from_pairs([("CONSUMER_SINK", sink), (name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn dlq_topic_follows_topic_and_http_addr_overrides_the_slot_port() {
        let env = Env::from_pairs([
            ("TOPIC", "orders"),
            ("HTTP_ADDR", "0.0.0.0:8080"),
            ("CONSUMER_SLOT", "consumer_2"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.dlq_topic, "orders.dlq");
        assert_eq!(config.slot, Slot::new(2));
        assert_eq!(
            config.http_addr_for(Slot::new(2).unwrap()).to_string(),
            "0.0.0.0:8080"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("CONSUMER_SLOT", "worker_1"),
            ("CONSUMER_SLOT", "consumer_0"),
            ("CONSUMER_FLUSH_MAX_RECORDS", "0"),
            ("CONSUMER_FLUSH_INTERVAL_MS", "soon"),
            ("CONSUMER_FLUSH_INTERVAL_MS", "0"),
            ("CONSUMER_SESSION_TIMEOUT_MS", "10"),
            ("CONSUMER_DLQ_REPLICATION_FACTOR", "0"),
            ("CONSUMER_LEAVE_GROUP_ON_SHUTDOWN", "sometimes"),
            ("HTTP_ADDR", "localhost"),
            ("CONSUMER_SINK", "s3"),
            ("INPUT_FORMAT", "xml"),
            ("CONSUMER_FILTER", "category = 'Cat_5'"),
            ("TOPIC", "../../etc"),
            ("TOPIC", "a/b"),
            ("CONSUMER_DLQ_TOPIC", "dead letters"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn a_topic_that_would_leave_the_stage_directory_is_refused() {
        let env = Env::from_pairs([
            ("CONSUMER_SINK", "stage"),
            ("STAGE_DIR", "stage"),
            ("TOPIC", ".."),
        ]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("TOPIC=\"..\"") && err.contains("Kafka topic name"),
            "{err}"
        );
        let env = Env::from_pairs([("CONSUMER_SINK", "topic"), ("OUTPUT_TOPIC", "out/put")]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("OUTPUT_TOPIC"), "{err}");
    }
}
