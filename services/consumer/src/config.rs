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
//! | `CONSUMER_DLQ_REPLICATION_FACTOR` | replication factor used if the consumer creates the dead-letter topic | `1` |
//! | `CONSUMER_FLUSH_MAX_RECORDS` | write + fsync + commit once this many records are pending | `5000` |
//! | `CONSUMER_FLUSH_INTERVAL_MS` | ... or once the oldest pending record waited this long | `20` |
//! | `CONSUMER_SESSION_TIMEOUT_MS` | group session timeout (keep 45 s with tansu) | `45000` |
//! | `CONSUMER_STATIC_MEMBERSHIP` | use the slot as `group.instance.id` (KIP-345 static membership). Turn off on brokers that never expire a crashed static member (tansu 0.6 expires members only on requests from non-static members) | `true` |
//! | `CONSUMER_LEAVE_GROUP_ON_SHUTDOWN` | on SIGTERM, leave the group so the partitions move at once (`true`), or stay a static member until the session timeout so a quick restart gets them back without a rebalance (`false`, KIP-345) | `true` |
//! | `CONSUMER_KAFKA_DEBUG` | librdkafka debug contexts for troubleshooting (e.g. `cgrp,fetch`), logged at debug level under target `librdkafka` | unset |
//! | `HTTP_ADDR` | `/health`, `/ready`, `/metrics`, `/assignments` | `127.0.0.1:(9110 + N)` for slot `consumer_N`; `0.0.0.0:8080` in containers |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, Env, TopicConfig};
use common::kafka::KafkaConfig;
use common::registry::RegistryConfig;

use crate::slot::Slot;

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
    pub leave_group_on_shutdown: bool,
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
        let flush_interval =
            env.millis("CONSUMER_FLUSH_INTERVAL_MS", Self::DEFAULT_FLUSH_INTERVAL)?;
        if flush_interval.is_zero() || flush_interval > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                name: "CONSUMER_FLUSH_INTERVAL_MS".into(),
                value: env
                    .optional("CONSUMER_FLUSH_INTERVAL_MS")
                    .unwrap_or_default(),
                expected: "milliseconds from 1 to 60000".into(),
            });
        }
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
            dlq_topic: env.string("CONSUMER_DLQ_TOPIC", &format!("{topic}.dlq")),
            dlq_replication_factor: env.parse_checked(
                "CONSUMER_DLQ_REPLICATION_FACTOR",
                1,
                "a replication factor from 1 to 32",
                |n| (1..=32).contains(n),
            )?,
            flush_max_records: env.parse_checked(
                "CONSUMER_FLUSH_MAX_RECORDS",
                Self::DEFAULT_FLUSH_MAX_RECORDS,
                "a whole number of records from 1 to 1000000",
                |n| (1..=1_000_000).contains(n),
            )?,
            flush_interval,
            session_timeout,
            static_membership: env.bool("CONSUMER_STATIC_MEMBERSHIP", true)?,
            leave_group_on_shutdown: env.bool("CONSUMER_LEAVE_GROUP_ON_SHUTDOWN", true)?,
            kafka_debug: env.optional("CONSUMER_KAFKA_DEBUG"),
            http_addr,
            topic,
        })
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
        assert!(config.static_membership);
        assert_eq!(
            config.http_addr_for(Slot::new(3).unwrap()).to_string(),
            "127.0.0.1:9113"
        );
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
        ] {
            let err = Config::from_env(&Env::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }
}
