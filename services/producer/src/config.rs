//! The producer's configuration, read from environment variables (see the README's table).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `mysql://root@127.0.0.1:3306/buy_online_db` | source database (`mysql://`, `mariadb://`, `postgres://` or `postgresql://`) |
//! | `SOURCE_TABLE` | `product` | table to capture (`table` or `schema.table`) |
//! | `SOURCE_ID_COLUMN` | `id` | its primary key column (integer; text with PostgreSQL) |
//! | `SOURCE_TIMESTAMP_COLUMN` | `last_updated` | its change timestamp column |
//! | `SOURCE_TIMESTAMP_TIME_ZONE` | unset | the writers' UTC offset (`UTC`, `+05:30`); required when that column holds wall-clock time (MySQL `DATETIME`, PostgreSQL `timestamp`) |
//! | `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*` | `127.0.0.1:9092`, plaintext | broker connection |
//! | `SCHEMA_REGISTRY_URL`, `SCHEMA_REGISTRY_USERNAME`, `SCHEMA_REGISTRY_PASSWORD` | `http://127.0.0.1:8081` | registry |
//! | `TOPIC`, `TOPIC_PARTITIONS` | `product_updates`, `10` | target topic, created if missing |
//! | `TOPIC_REPLICATION_FACTOR` | `-1` (broker default) | replication factor when creating the topic |
//! | `SOURCE` | `table` | `table` (capture the MySQL `product` table) or `csv` (stream a CSV file) |
//! | `WATERMARK_PATH` | `time_track/last_read_timestamp.json`; `time_track/csv_position.json` with `SOURCE=csv` | durable capture position |
//! | `BATCH_SIZE` | `5000` | rows per read |
//! | `POLL_INTERVAL_MS` | `50` | pause between reads once caught up |
//! | `CAPTURE_DELAY_MS` | `50` | safety margin below the read horizon |
//! | `KAFKA_COMPRESSION` | `none` | `none`, `gzip`, `snappy`, `lz4` or `zstd` |
//! | `DEAD_LETTER_TOPIC` | `{TOPIC}.dlq` (`none`: no dead-letter topic) | where rows set aside go, as JSON |
//! | `HTTP_ADDR` | `127.0.0.1:9102` | `/health`, `/ready`, `/metrics` |
//!
//! With `SOURCE=csv` (see [`crate::csv_source`]; `DATABASE_URL` and `CAPTURE_DELAY_MS` are not
//! used then):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CSV_PATH` | required | the CSV file (header line first) |
//! | `CSV_KEY_COLUMN` | required | the column whose text is the record key |
//! | `VALUE_FORMAT` | `json` | `json` (one typed object per row) or `avro` |
//! | `VALUE_SCHEMA` | required with `avro` | path of the `.avsc` record schema, registered under `{TOPIC}-value` |
//! | `CSV_FOLLOW` | `false` | `false`: stop (exit 0) at the end of the file once all is acknowledged; `true`: keep reading rows appended to it |
//!
//! Setting a CSV variable without `SOURCE=csv` is an error.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::FixedOffset;
use common::config::{database_url, redact_url, ConfigError, Env, Secret, TopicConfig};
use common::kafka::KafkaConfig;
use common::registry::RegistryConfig;

use crate::source::TableSpec;

/// Everything the producer needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: a `mysql://`, `mariadb://`, `postgres://` or `postgresql://` URL (it may
    /// carry a password, hence secret).
    pub database_url: Secret,
    /// `SOURCE_TABLE`, `SOURCE_ID_COLUMN`, `SOURCE_TIMESTAMP_COLUMN`: the captured table.
    pub table: TableSpec,
    /// `SOURCE_TIMESTAMP_TIME_ZONE`: the UTC offset of the wall-clock time writers store in a
    /// timestamp column without time zone (`None`: not stated; such a column is then refused).
    pub writer_time_zone: Option<FixedOffset>,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub topic: TopicConfig,
    /// `TOPIC_REPLICATION_FACTOR`: used only when the producer creates the topic. `-1` asks the
    /// broker for its default (`default.replication.factor`), which suits single-node test brokers
    /// (tansu) and managed clusters (Confluent Cloud: 3) alike.
    pub replication_factor: i32,
    /// `WATERMARK_PATH`: the JSON file holding the capture position.
    pub watermark_path: PathBuf,
    /// `BATCH_SIZE`: rows per read; while reads come back full the producer reads again at once.
    pub batch_size: u32,
    /// `POLL_INTERVAL_MS`: pause between reads once a read came back short (caught up).
    pub poll_interval: Duration,
    /// `CAPTURE_DELAY_MS`: rows are read only when older than the read horizon minus this delay
    /// (database clock). See the README section on the read horizon.
    pub capture_delay: Duration,
    /// `KAFKA_COMPRESSION`.
    pub compression: Compression,
    /// `DEAD_LETTER_TOPIC` (default `{TOPIC}.dlq`; `none`: no dead-letter topic): where rows
    /// set aside (they cannot be encoded, or Kafka refuses their record) are sent as JSON.
    pub dead_letter_topic: Option<String>,
    /// `HTTP_ADDR`.
    pub http_addr: SocketAddr,
    /// `SOURCE` and, for `csv`, its settings.
    pub source: SourceKind,
}

/// `SOURCE`: where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// The MySQL/MariaDB `product` table (the default).
    Table,
    /// A CSV file.
    Csv(CsvConfig),
}

/// The settings of `SOURCE=csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvConfig {
    /// `CSV_PATH`.
    pub path: PathBuf,
    /// `CSV_KEY_COLUMN`.
    pub key_column: String,
    /// `VALUE_FORMAT` (+ `VALUE_SCHEMA`).
    pub value_format: ValueFormat,
    /// `CSV_FOLLOW`.
    pub follow: bool,
}

/// `VALUE_FORMAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFormat {
    Json,
    /// Avro with the record schema at `VALUE_SCHEMA`.
    Avro {
        schema_path: PathBuf,
    },
}

impl SourceKind {
    const CSV_VARIABLES: [&'static str; 5] = [
        "CSV_PATH",
        "CSV_KEY_COLUMN",
        "VALUE_FORMAT",
        "VALUE_SCHEMA",
        "CSV_FOLLOW",
    ];

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.one_of("SOURCE", "table", &["table", "csv"])?.as_str() {
            "table" => {
                if let Some(name) = Self::CSV_VARIABLES
                    .iter()
                    .find(|name| env.optional(name).is_some())
                {
                    return Err(ConfigError::Invalid {
                        name: (*name).into(),
                        value: env.optional(name).unwrap_or_default(),
                        expected: "to be unset: it is used only with SOURCE=csv".into(),
                    });
                }
                Ok(Self::Table)
            }
            _ => {
                let value_format = match env
                    .one_of("VALUE_FORMAT", "json", &["json", "avro"])?
                    .as_str()
                {
                    "json" => {
                        if let Some(schema) = env.optional("VALUE_SCHEMA") {
                            return Err(ConfigError::Invalid {
                                name: "VALUE_SCHEMA".into(),
                                value: schema,
                                expected: "to be unset with VALUE_FORMAT=json (a schema is used only with VALUE_FORMAT=avro)".into(),
                            });
                        }
                        ValueFormat::Json
                    }
                    _ => ValueFormat::Avro {
                        schema_path: PathBuf::from(env.required(
                            "VALUE_SCHEMA",
                            "the path of an Avro record schema (.avsc) with VALUE_FORMAT=avro",
                        )?),
                    },
                };
                Ok(Self::Csv(CsvConfig {
                    path: PathBuf::from(env.required(
                        "CSV_PATH",
                        "the path of the CSV file to stream with SOURCE=csv",
                    )?),
                    key_column: env.required(
                        "CSV_KEY_COLUMN",
                        "the header name of the column holding the record key (e.g. customer_id) with SOURCE=csv",
                    )?,
                    value_format,
                    follow: env.bool("CSV_FOLLOW", false)?,
                }))
            }
        }
    }
}

impl Config {
    pub const DEFAULT_WATERMARK_PATH: &'static str = "time_track/last_read_timestamp.json";
    pub const DEFAULT_CSV_POSITION_PATH: &'static str = "time_track/csv_position.json";
    pub const DEFAULT_BATCH_SIZE: u32 = 5000;
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
    pub const DEFAULT_CAPTURE_DELAY: Duration = Duration::from_millis(50);
    pub const DEFAULT_REPLICATION_FACTOR: i32 = -1;
    pub const DEFAULT_HTTP_ADDR: &'static str = "127.0.0.1:9102";
    /// `DEAD_LETTER_TOPIC=none`: rows set aside are only logged and counted.
    pub const NO_DEAD_LETTER_TOPIC: &'static str = "none";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database_url = database_url(env)?;
        let table = {
            let vars = [
                ("SOURCE_TABLE", TableSpec::DEFAULT_TABLE),
                ("SOURCE_ID_COLUMN", TableSpec::DEFAULT_ID_COLUMN),
                (
                    "SOURCE_TIMESTAMP_COLUMN",
                    TableSpec::DEFAULT_TIMESTAMP_COLUMN,
                ),
            ]
            .map(|(name, default)| (name, env.string(name, default)));
            TableSpec::new(&vars[0].1, &vars[1].1, &vars[2].1).map_err(|(which, reason)| {
                let (name, value) = match which {
                    "table" => &vars[0],
                    "id_column" => &vars[1],
                    _ => &vars[2],
                };
                ConfigError::Invalid {
                    name: (*name).into(),
                    value: value.clone(),
                    expected: format!("a table or column name: {reason}"),
                }
            })?
        };
        let compression = env
            .one_of("KAFKA_COMPRESSION", "none", &Compression::NAMES)?
            .parse()
            .expect("one_of only returns listed names");
        let topic = TopicConfig::from_env(env)?;
        let dead_letter_topic = match env.optional("DEAD_LETTER_TOPIC").as_deref() {
            Some(Self::NO_DEAD_LETTER_TOPIC) => None,
            _ => Some(env.topic_name("DEAD_LETTER_TOPIC", &format!("{}.dlq", topic.name))?),
        };
        let source = SourceKind::from_env(env)?;
        let default_watermark_path = match source {
            SourceKind::Table => Self::DEFAULT_WATERMARK_PATH,
            SourceKind::Csv(_) => Self::DEFAULT_CSV_POSITION_PATH,
        };
        if dead_letter_topic.as_deref() == Some(topic.name.as_str()) {
            return Err(ConfigError::Invalid {
                name: "DEAD_LETTER_TOPIC".into(),
                value: topic.name,
                expected: "a topic other than TOPIC".into(),
            });
        }
        Ok(Self {
            database_url: Secret::new(database_url),
            table,
            writer_time_zone: writer_time_zone(env)?,
            kafka: KafkaConfig::from_env(env)?,
            registry: RegistryConfig::from_env(env)?,
            topic,
            replication_factor: env.parse_checked(
                "TOPIC_REPLICATION_FACTOR",
                Self::DEFAULT_REPLICATION_FACTOR,
                "-1 (broker default) or a replication factor from 1 to 32",
                |n| *n == -1 || (1..=32).contains(n),
            )?,
            watermark_path: PathBuf::from(env.string("WATERMARK_PATH", default_watermark_path)),
            batch_size: env.parse_checked(
                "BATCH_SIZE",
                Self::DEFAULT_BATCH_SIZE,
                "a whole number of rows from 1 to 1000000",
                |n| (1..=1_000_000).contains(n),
            )?,
            poll_interval: env.millis("POLL_INTERVAL_MS", Self::DEFAULT_POLL_INTERVAL)?,
            capture_delay: env.millis("CAPTURE_DELAY_MS", Self::DEFAULT_CAPTURE_DELAY)?,
            compression,
            dead_letter_topic,
            http_addr: env.socket_addr("HTTP_ADDR", Self::DEFAULT_HTTP_ADDR)?,
            source,
        })
    }

    /// The registry subject of the value schema: `{topic}-value`.
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.topic.name)
    }

    /// Whether `DATABASE_URL` names a PostgreSQL database (else MySQL/MariaDB).
    pub fn is_postgres(&self) -> bool {
        let url = self.database_url.expose();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// `DATABASE_URL` with any password replaced by `***`, for logs.
    pub fn database_url_for_logs(&self) -> String {
        redact_url(self.database_url.expose())
    }
}

/// `SOURCE_TIMESTAMP_TIME_ZONE`: `UTC` or a fixed offset `+HH:MM` / `-HH:MM`. Named zones are
/// refused: a zone with daylight saving time repeats an hour every autumn, and wall-clock stamps
/// that go back would let capture skip rows.
fn writer_time_zone(env: &Env) -> Result<Option<FixedOffset>, ConfigError> {
    const NAME: &str = "SOURCE_TIMESTAMP_TIME_ZONE";
    let Some(value) = env.optional(NAME) else {
        return Ok(None);
    };
    let parsed = if value.eq_ignore_ascii_case("UTC") || value == "Z" {
        FixedOffset::east_opt(0)
    } else {
        parse_offset(&value)
    };
    parsed.map(Some).ok_or_else(|| ConfigError::Invalid {
        name: NAME.into(),
        value,
        expected: "UTC or a fixed offset from UTC such as +05:30 or -03:00 (a named zone is \
                   refused: with daylight saving time its wall-clock time goes back once a \
                   year, and capture would skip the rows written in the repeated hour)"
            .into(),
    })
}

/// `+HH:MM` or `-HH:MM`, less than 24 hours.
fn parse_offset(value: &str) -> Option<FixedOffset> {
    let (sign, rest) = match value.as_bytes().first()? {
        b'+' => (1, &value[1..]),
        b'-' => (-1, &value[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours) || !digits(minutes) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    if minutes >= 60 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// `KAFKA_COMPRESSION`: the producer's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const NAMES: [&'static str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "snappy" => Ok(Self::Snappy),
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd),
            other => Err(format!("unknown compression {other:?}")),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(
            config.database_url.expose(),
            common::config::DEFAULT_DATABASE_URL
        );
        assert_eq!(config.topic.name, "product_updates");
        assert_eq!(config.topic.partitions, 10);
        assert_eq!(config.replication_factor, -1);
        assert_eq!(
            config.watermark_path,
            PathBuf::from("time_track/last_read_timestamp.json")
        );
        assert_eq!(config.batch_size, 5000);
        assert_eq!(config.poll_interval, Duration::from_millis(50));
        assert_eq!(config.capture_delay, Duration::from_millis(50));
        assert_eq!(config.compression, Compression::None);
        assert_eq!(
            config.dead_letter_topic.as_deref(),
            Some("product_updates.dlq")
        );
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:9102");
        assert_eq!(config.value_subject(), "product_updates-value");
        assert_eq!(config.source, SourceKind::Table);
        assert_eq!(config.writer_time_zone, None);
    }

    #[test]
    fn the_writers_time_zone_is_utc_or_a_fixed_offset() {
        let zone = |value: &str| {
            Config::from_env(&Env::from_pairs([("SOURCE_TIMESTAMP_TIME_ZONE", value)]))
                .map(|c| c.writer_time_zone)
        };
        assert_eq!(zone("UTC").unwrap(), FixedOffset::east_opt(0));
        assert_eq!(zone("utc").unwrap(), FixedOffset::east_opt(0));
        assert_eq!(
            zone("+05:30").unwrap(),
            FixedOffset::east_opt(5 * 3600 + 1800)
        );
        assert_eq!(zone("-03:00").unwrap(), FixedOffset::west_opt(3 * 3600));
        for bad in [
            "Europe/Berlin",
            "Asia/Kolkata",
            "+5:30",
            "+05:60",
            "+24:00",
            "0530",
        ] {
            let err = zone(bad).unwrap_err().to_string();
            assert!(
                err.contains("SOURCE_TIMESTAMP_TIME_ZONE") && err.contains("fixed offset"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn csv_source_settings() {
        let env = Env::from_pairs([
            ("SOURCE", "csv"),
            ("CSV_PATH", "data/customers.csv"),
            ("CSV_KEY_COLUMN", "customer_id"),
            ("TOPIC", "ecommerce"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(
            config.source,
            SourceKind::Csv(CsvConfig {
                path: PathBuf::from("data/customers.csv"),
                key_column: "customer_id".into(),
                value_format: ValueFormat::Json,
                follow: false,
            })
        );
        assert_eq!(
            config.watermark_path,
            PathBuf::from("time_track/csv_position.json")
        );
        let avro = env
            .clone()
            .with("VALUE_FORMAT", "avro")
            .with("VALUE_SCHEMA", "schemas/customer.avsc")
            .with("CSV_FOLLOW", "true");
        let SourceKind::Csv(csv) = Config::from_env(&avro).unwrap().source else {
            panic!("csv expected")
        };
        assert_eq!(
            csv.value_format,
            ValueFormat::Avro {
                schema_path: PathBuf::from("schemas/customer.avsc")
            }
        );
        assert!(csv.follow);
    }

    #[test]
    fn csv_settings_that_are_missing_or_misplaced_name_the_variable() {
        let csv = Env::from_pairs([
            ("SOURCE", "csv"),
            ("CSV_PATH", "c.csv"),
            ("CSV_KEY_COLUMN", "id"),
        ]);
        let cases = [
            (Env::from_pairs([("SOURCE", "file")]), "SOURCE"),
            (
                Env::from_pairs([("SOURCE", "csv"), ("CSV_KEY_COLUMN", "id")]),
                "CSV_PATH",
            ),
            (
                Env::from_pairs([("SOURCE", "csv"), ("CSV_PATH", "c.csv")]),
                "CSV_KEY_COLUMN",
            ),
            (csv.clone().with("VALUE_FORMAT", "xml"), "VALUE_FORMAT"),
            (csv.clone().with("VALUE_FORMAT", "avro"), "VALUE_SCHEMA"),
            (csv.clone().with("VALUE_SCHEMA", "s.avsc"), "VALUE_SCHEMA"),
            (csv.with("CSV_FOLLOW", "sometimes"), "CSV_FOLLOW"),
            (Env::from_pairs([("CSV_PATH", "c.csv")]), "CSV_PATH"),
            (Env::from_pairs([("VALUE_FORMAT", "json")]), "VALUE_FORMAT"),
        ];
        for (env, name) in cases {
            let err = Config::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(name), "{env:?}: {err}");
        }
    }

    #[test]
    fn every_setting_is_read() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "mariadb://app:pw@db:3306/shop"),
            ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092"),
            ("SCHEMA_REGISTRY_URL", "http://registry:8081"),
            ("TOPIC", "changes"),
            ("TOPIC_PARTITIONS", "3"),
            ("TOPIC_REPLICATION_FACTOR", "3"),
            ("WATERMARK_PATH", "/var/lib/producer/wm.json"),
            ("BATCH_SIZE", "250"),
            ("POLL_INTERVAL_MS", "200"),
            ("CAPTURE_DELAY_MS", "0"),
            ("KAFKA_COMPRESSION", "zstd"),
            ("DEAD_LETTER_TOPIC", "changes_rejected"),
            ("HTTP_ADDR", "0.0.0.0:8080"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(config.registry.url, "http://registry:8081");
        assert_eq!(config.topic.name, "changes");
        assert_eq!(config.topic.partitions, 3);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(
            config.watermark_path,
            PathBuf::from("/var/lib/producer/wm.json")
        );
        assert_eq!(config.batch_size, 250);
        assert_eq!(config.poll_interval, Duration::from_millis(200));
        assert_eq!(config.capture_delay, Duration::ZERO);
        assert_eq!(config.compression, Compression::Zstd);
        assert_eq!(
            config.dead_letter_topic.as_deref(),
            Some("changes_rejected")
        );
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(
            config.database_url_for_logs(),
            "mariadb://app:***@db:3306/shop"
        );
        assert!(
            !format!("{config:?}").contains("pw@"),
            "the password must not be printed"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("BATCH_SIZE", "0"),
            ("BATCH_SIZE", "lots"),
            ("POLL_INTERVAL_MS", "1s"),
            ("CAPTURE_DELAY_MS", "-5"),
            ("KAFKA_COMPRESSION", "brotli"),
            ("TOPIC_REPLICATION_FACTOR", "0"),
            ("HTTP_ADDR", "localhost"),
        ];
        for (name, value) in cases {
            let err = Config::from_env(&Env::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn postgres_urls_select_postgres_and_other_schemes_are_refused() {
        for url in ["postgres://u:pw@h/db", "postgresql://h/db"] {
            let config = Config::from_env(&Env::from_pairs([("DATABASE_URL", url)])).unwrap();
            assert!(config.is_postgres(), "{url}");
        }
        assert!(!Config::from_env(&Env::default()).unwrap().is_postgres());
        let env = Env::from_pairs([("DATABASE_URL", "sqlite://u:hunter2@h/db")]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_source_table_and_its_key_columns_are_configurable() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.table, TableSpec::default());
        assert_eq!(
            (config.table.table.as_str(), config.table.id_column.as_str()),
            ("product", "id")
        );
        assert_eq!(config.table.timestamp_column, "last_updated");
        let env = Env::from_pairs([
            ("SOURCE_TABLE", "shop.products"),
            ("SOURCE_ID_COLUMN", "product_id"),
            ("SOURCE_TIMESTAMP_COLUMN", "updated_timestamp"),
        ]);
        let table = Config::from_env(&env).unwrap().table;
        assert_eq!(table.schema.as_deref(), Some("shop"));
        assert_eq!(table.table, "products");
        assert_eq!(table.id_column, "product_id");
        assert_eq!(table.timestamp_column, "updated_timestamp");
        for (name, value) in [
            ("SOURCE_TABLE", "products; drop table x"),
            ("SOURCE_ID_COLUMN", "product id"),
            ("SOURCE_TIMESTAMP_COLUMN", "\"ts\""),
            ("SOURCE_TIMESTAMP_COLUMN", "id"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn dead_letter_topic_must_differ_from_the_topic() {
        let env = Env::from_pairs([("DEAD_LETTER_TOPIC", "product_updates")]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("DEAD_LETTER_TOPIC"), "{err}");
    }

    #[test]
    fn the_dead_letter_topic_follows_the_topic_unless_turned_off() {
        let env = Env::from_pairs([("TOPIC", "orders")]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.dead_letter_topic.as_deref(), Some("orders.dlq"));
        let config = Config::from_env(&env.with("DEAD_LETTER_TOPIC", "none")).unwrap();
        assert_eq!(config.dead_letter_topic, None);
        let err = Config::from_env(&Env::from_pairs([("DEAD_LETTER_TOPIC", "a/b")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DEAD_LETTER_TOPIC") && err.contains("Kafka topic name"),
            "{err}"
        );
        let err = Config::from_env(&Env::from_pairs([("TOPIC", "..")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOPIC=\"..\""), "{err}");
    }
}
