//! The generator's configuration, read from environment variables (each with a documented default).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*` | brokers and security | `127.0.0.1:9092`, plaintext |
//! | `GENERATOR_TOPIC` | topic the events go to | `user-login` |
//! | `GENERATOR_TOPIC_PARTITIONS` | partitions, used only when the generator creates the topic (1 to 10000) | `3` |
//! | `GENERATOR_TOPIC_REPLICATION_FACTOR` | replication factor, used only when the generator creates the topic; `-1` is the broker's default | `-1` |
//! | `EVENTS_PER_SECOND` | production rate (1 to 100000) | `10` |
//! | `GENERATOR_MAX_EVENTS` | stop after this many acknowledged events; `0` runs until SIGTERM/SIGINT | `0` |
//! | `LOG_FORMAT`, `RUST_LOG` | `text` or `json`; tracing filter | `text`, `info` |

use common::config::{ConfigError, Env, TopicConfig};
use common::kafka::KafkaConfig;

/// Everything the generator needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// `GENERATOR_TOPIC` and `GENERATOR_TOPIC_PARTITIONS`.
    pub topic: TopicConfig,
    /// `GENERATOR_TOPIC_REPLICATION_FACTOR`.
    pub replication_factor: i32,
    /// `EVENTS_PER_SECOND`.
    pub events_per_second: u32,
    /// `GENERATOR_MAX_EVENTS`; `None` (`0`) means unlimited.
    pub max_events: Option<u64>,
}

impl Config {
    pub const DEFAULT_TOPIC: &'static str = "user-login";
    pub const DEFAULT_PARTITIONS: i32 = 3;
    pub const DEFAULT_REPLICATION_FACTOR: i32 = -1;
    pub const DEFAULT_EVENTS_PER_SECOND: u32 = 10;
    pub const MAX_EVENTS_PER_SECOND: u32 = 100_000;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let topic = TopicConfig {
            name: env.string("GENERATOR_TOPIC", Self::DEFAULT_TOPIC),
            partitions: env.parse_checked(
                "GENERATOR_TOPIC_PARTITIONS",
                Self::DEFAULT_PARTITIONS,
                "a whole number of partitions from 1 to 10000",
                |n| (1..=10_000).contains(n),
            )?,
        };
        let replication_factor = env.parse_checked(
            "GENERATOR_TOPIC_REPLICATION_FACTOR",
            Self::DEFAULT_REPLICATION_FACTOR,
            "-1 (the broker's default) or a whole number from 1 to 32",
            |n| *n == -1 || (1..=32).contains(n),
        )?;
        let events_per_second = env.parse_checked(
            "EVENTS_PER_SECOND",
            Self::DEFAULT_EVENTS_PER_SECOND,
            "a whole number of events per second from 1 to 100000",
            |n| (1..=Self::MAX_EVENTS_PER_SECOND).contains(n),
        )?;
        let max_events = env.parse(
            "GENERATOR_MAX_EVENTS",
            0u64,
            "a whole number of events (0 for no limit)",
        )?;
        Ok(Self {
            kafka: KafkaConfig::from_env(env)?,
            topic,
            replication_factor,
            events_per_second,
            max_events: (max_events > 0).then_some(max_events),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(config.topic.name, "user-login");
        assert_eq!(config.topic.partitions, 3);
        assert_eq!(config.replication_factor, -1);
        assert_eq!(config.events_per_second, 10);
        assert_eq!(config.max_events, None);
    }

    #[test]
    fn values_are_read() {
        let env = Env::from_pairs([
            ("KAFKA_BOOTSTRAP_SERVERS", "broker:9093"),
            ("GENERATOR_TOPIC", "logins"),
            ("GENERATOR_TOPIC_PARTITIONS", "6"),
            ("GENERATOR_TOPIC_REPLICATION_FACTOR", "3"),
            ("EVENTS_PER_SECOND", "100000"),
            ("GENERATOR_MAX_EVENTS", "50"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "broker:9093");
        assert_eq!(
            config.topic,
            TopicConfig {
                name: "logins".into(),
                partitions: 6
            }
        );
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.events_per_second, 100_000);
        assert_eq!(config.max_events, Some(50));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("EVENTS_PER_SECOND", "0"),
            ("EVENTS_PER_SECOND", "100001"),
            ("EVENTS_PER_SECOND", "fast"),
            ("GENERATOR_MAX_EVENTS", "-1"),
            ("GENERATOR_TOPIC_PARTITIONS", "0"),
            ("GENERATOR_TOPIC_REPLICATION_FACTOR", "0"),
            ("KAFKA_SECURITY_PROTOCOL", "tls"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }
}
