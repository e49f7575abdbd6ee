//! Configuration from environment variables.
//!
//! Every variable has a documented default. A value that does not parse fails at start-up with an
//! error naming the variable, the value and what was expected.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A bad or missing configuration value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name}={value:?} is invalid: expected {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: String,
    },
    #[error("environment variable {name} is required: {expected}")]
    Missing { name: String, expected: String },
}

/// A snapshot of environment variables. Built from the process environment in `main`, or from
/// explicit pairs in tests, so configuration parsing is a pure function of this value.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    // Never print values: some are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// Returns a copy with `name` set to `value` (handy in tests).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The raw value; an empty value counts as unset.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn required(&self, name: &str, expected: &str) -> Result<String, ConfigError> {
        self.optional(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
            expected: expected.to_owned(),
        })
    }

    /// Parses `name` with `FromStr`, or returns `default` when unset.
    pub fn parse<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| invalid(name, &value, expected)),
        }
    }

    /// Like [`Env::parse`], and also checks `valid`.
    pub fn parse_checked<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let value = self.parse(name, default, expected)?;
        if valid(&value) {
            Ok(value)
        } else {
            Err(invalid(
                name,
                &self.optional(name).unwrap_or_default(),
                expected,
            ))
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(invalid(name, &v, "true or false")),
            },
        }
    }

    /// A duration given in whole milliseconds.
    pub fn millis(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let ms = self.parse(
            name,
            u64::try_from(default.as_millis()).unwrap_or(u64::MAX),
            "a whole number of milliseconds",
        )?;
        Ok(Duration::from_millis(ms))
    }

    pub fn socket_addr(&self, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let value = self.string(name, default);
        value
            .parse()
            .map_err(|_| invalid(name, &value, "an address like 127.0.0.1:8080"))
    }

    pub fn one_of(
        &self,
        name: &str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ConfigError> {
        let value = self.string(name, default);
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(invalid(
                name,
                &value,
                &format!("one of {}", allowed.join(", ")),
            ))
        }
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// A secret value: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Topic name and partition count (`TOPIC`, `TOPIC_PARTITIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: i32,
}

impl TopicConfig {
    pub const DEFAULT_NAME: &'static str = "product_updates";
    pub const DEFAULT_PARTITIONS: i32 = 10;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            name: env.string("TOPIC", Self::DEFAULT_NAME),
            partitions: env.parse_checked(
                "TOPIC_PARTITIONS",
                Self::DEFAULT_PARTITIONS,
                "a whole number of partitions from 1 to 10000",
                |n| (1..=10_000).contains(n),
            )?,
        })
    }
}

/// `DATABASE_URL`, defaulting to the local MariaDB.
pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/buy_online_db";

pub fn database_url(env: &Env) -> Result<String, ConfigError> {
    let url = env.string("DATABASE_URL", DEFAULT_DATABASE_URL);
    if url.starts_with("mysql://")
        || url.starts_with("mariadb://")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(url)
    } else {
        Err(invalid(
            "DATABASE_URL",
            &redact_url(&url),
            "a mysql://, mariadb:// or postgres:// URL",
        ))
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let env = Env::from_pairs([("TOPIC", "  ")]);
        let topic = TopicConfig::from_env(&env).unwrap();
        assert_eq!(topic.name, "product_updates");
        assert_eq!(topic.partitions, 10);
    }

    #[test]
    fn bad_number_names_the_variable_and_expectation() {
        let env = Env::from_pairs([("TOPIC_PARTITIONS", "ten")]);
        let err = TopicConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("TOPIC_PARTITIONS"), "{err}");
        assert!(err.contains("\"ten\""), "{err}");
        assert!(err.contains("whole number of partitions"), "{err}");
    }

    #[test]
    fn out_of_range_is_rejected() {
        let env = Env::from_pairs([("TOPIC_PARTITIONS", "0")]);
        assert!(matches!(
            TopicConfig::from_env(&env),
            Err(ConfigError::Invalid { name, .. }) if name == "TOPIC_PARTITIONS"
        ));
    }

    #[test]
    fn bools_millis_and_addresses_parse() {
        let env = Env::from_pairs([
            ("A", "yes"),
            ("B", "250"),
            ("C", "0.0.0.0:8080"),
            ("D", "maybe"),
        ]);
        assert!(env.bool("A", false).unwrap());
        assert_eq!(
            env.millis("B", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(env.socket_addr("C", "127.0.0.1:1").unwrap().port(), 8080);
        assert!(env
            .bool("D", false)
            .unwrap_err()
            .to_string()
            .contains("D=\"maybe\""));
        assert!(env.socket_addr("D", "x").is_err());
    }

    #[test]
    fn database_url_scheme_is_checked_and_password_redacted() {
        let env = Env::from_pairs([("DATABASE_URL", "oracle://u:hunter2@h/db")]);
        let err = database_url(&env).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(database_url(&Env::default()).unwrap(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("mysql://root:pw@h:3306/db"),
            "mysql://root:***@h:3306/db"
        );
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn env_debug_never_shows_values() {
        let env = Env::from_pairs([("KAFKA_SASL_PASSWORD", "s3cret")]);
        let shown = format!("{env:?} {:?}", Secret::new("s3cret"));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
