//! Kafka client configuration (plaintext or secured clusters), topic creation and the Java
//! client's murmur2 partitioner (to check where a key lands).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use crate::config::{ConfigError, Env, Secret, TopicConfig};

/// Connection settings shared by producers, consumers and admin clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS`, default `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// `KAFKA_SECURITY_PROTOCOL`: plaintext (default), ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: String,
    /// `KAFKA_SASL_MECHANISM` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), `KAFKA_SASL_USERNAME`,
    /// `KAFKA_SASL_PASSWORD`: required when the protocol is sasl_*.
    pub sasl: Option<SaslConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

impl KafkaConfig {
    pub const DEFAULT_BOOTSTRAP_SERVERS: &'static str = "127.0.0.1:9092";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let security_protocol = env
            .string("KAFKA_SECURITY_PROTOCOL", "plaintext")
            .to_ascii_lowercase();
        let allowed = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
        if !allowed.contains(&security_protocol.as_str()) {
            return Err(ConfigError::Invalid {
                name: "KAFKA_SECURITY_PROTOCOL".into(),
                value: security_protocol,
                expected: format!("one of {}", allowed.join(", ")),
            });
        }
        let sasl = if security_protocol.starts_with("sasl_") {
            let expected = format!("needed with KAFKA_SECURITY_PROTOCOL={security_protocol}");
            let mechanism = env
                .string("KAFKA_SASL_MECHANISM", "PLAIN")
                .to_ascii_uppercase();
            let mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
            if !mechanisms.contains(&mechanism.as_str()) {
                return Err(ConfigError::Invalid {
                    name: "KAFKA_SASL_MECHANISM".into(),
                    value: mechanism,
                    expected: format!("one of {}", mechanisms.join(", ")),
                });
            }
            Some(SaslConfig {
                mechanism,
                username: env.required("KAFKA_SASL_USERNAME", &expected)?,
                password: Secret::new(env.required("KAFKA_SASL_PASSWORD", &expected)?),
            })
        } else {
            None
        };
        Ok(Self {
            bootstrap_servers: env
                .string("KAFKA_BOOTSTRAP_SERVERS", Self::DEFAULT_BOOTSTRAP_SERVERS),
            security_protocol,
            sasl,
        })
    }

    /// A plaintext config for `bootstrap_servers` (tests, local runs).
    pub fn plaintext(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            security_protocol: "plaintext".into(),
            sasl: None,
        }
    }

    /// The librdkafka settings for connecting; callers add their role's settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("security.protocol", &self.security_protocol);
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        config
    }
}

/// What [`ensure_topic`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    Created,
    Exists { partitions: i32 },
}

/// Creates `topic` with its partition count if it does not exist. An existing topic with another
/// partition count is kept (with a warning): repartitioning would move keys.
pub async fn ensure_topic(
    kafka: &KafkaConfig,
    topic: &TopicConfig,
    replication_factor: i32,
) -> Result<TopicStatus, KafkaError> {
    if let Some(partitions) = partition_count(kafka, &topic.name).await? {
        if partitions != topic.partitions {
            tracing::warn!(
                topic = %topic.name,
                existing = partitions,
                configured = topic.partitions,
                "topic exists with a different partition count; keeping it"
            );
        }
        return Ok(TopicStatus::Exists { partitions });
    }
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let new_topic = NewTopic::new(
        &topic.name,
        topic.partitions,
        TopicReplication::Fixed(replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&new_topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(topic = %topic.name, partitions = topic.partitions, "created topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let partitions = partition_count(kafka, &topic.name)
                    .await?
                    .unwrap_or(topic.partitions);
                return Ok(TopicStatus::Exists { partitions });
            }
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(TopicStatus::Created)
}

/// Whether creating a topic failed for a reason that waiting does not fix (invalid settings, no
/// authorization), as opposed to an unreachable broker.
pub fn is_permanent_topic_error(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::AdminOp(
            RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// The partition count of `topic`, or `None` if the cluster does not have it.
pub async fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<Option<i32>, KafkaError> {
    let config = kafka.client_config();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let client: rdkafka::consumer::BaseConsumer = config.create()?;
        let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Kafka's murmur2 hash (as in the Java client's `Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Kafka keys are far below 4 GiB; the Java client hashes an int length too.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client (and librdkafka's `murmur2_random`) picks for a non-empty key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partition_is_non_negative_and_in_range() {
        for id in 0..1000 {
            let p = partition_for_key(id.to_string().as_bytes(), 10);
            assert!((0..10).contains(&p));
        }
    }

    #[test]
    fn sasl_needs_credentials_and_a_known_mechanism() {
        let env = Env::from_pairs([("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")]);
        let err = KafkaConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("KAFKA_SASL_USERNAME"), "{err}");

        let env = env
            .with("KAFKA_SASL_USERNAME", "key")
            .with("KAFKA_SASL_PASSWORD", "secret")
            .with("KAFKA_SASL_MECHANISM", "GSSAPI");
        let err = KafkaConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("KAFKA_SASL_MECHANISM"), "{err}");

        let env = env.with("KAFKA_SASL_MECHANISM", "plain");
        let config = KafkaConfig::from_env(&env).unwrap();
        assert_eq!(config.client_config().get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(
            config.client_config().get("security.protocol"),
            Some("sasl_ssl")
        );
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn unknown_protocol_is_rejected() {
        let env = Env::from_pairs([("KAFKA_SECURITY_PROTOCOL", "tls")]);
        assert!(KafkaConfig::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("KAFKA_SECURITY_PROTOCOL"));
    }
}
