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

    /// A Kafka topic name from `name` (or `default`): 1 to 249 ASCII letters, digits, `.`, `_`
    /// and `-`, and neither `.` nor `..` (Kafka's rules, [`check_topic_name`]). Checked before it
    /// is used anywhere, such as in file paths (`STAGE_DIR/<topic>/...`).
    pub fn topic_name(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        let topic = self.string(name, default);
        check_topic_name(&topic).map_err(|expected| invalid(name, &topic, &expected))?;
        Ok(topic)
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
            name: env.topic_name("TOPIC", Self::DEFAULT_NAME)?,
            partitions: env.parse_checked(
                "TOPIC_PARTITIONS",
                Self::DEFAULT_PARTITIONS,
                "a whole number of partitions from 1 to 10000",
                |n| (1..=10_000).contains(n),
            )?,
        })
    }
}

/// Kafka's topic name rules; the error says what is expected.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    let valid = (1..=249).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && topic != "."
        && topic != "..";
    if valid {
        Ok(())
    } else {
        Err(
            "a Kafka topic name: 1 to 249 characters, each an ASCII letter, digit, '.', '_' or \
             '-', and not '.' or '..'"
                .into(),
        )
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

/// What replaces a secret in logs and messages.
pub const REDACTED: &str = "***";

/// Whether a URL query parameter named `name` carries a secret (`password`, `sslpassword`,
/// `secret`, `token`, `api_key`, ...).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// `url` for logs and messages: the password of `scheme://user:password@host` and the values of
/// query parameters that carry secrets (`?password=...`) replaced by `***`. The URL is read as
/// the database drivers and HTTP clients read it (WHATWG rules: the user information ends at the
/// last `@` before the host, so a password with an unencoded `@` is hidden whole). Text that does
/// not parse as a URL with a host is hidden entirely but for its scheme.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return hide_all_but_scheme(url);
    };
    if !parsed.has_host() {
        return hide_all_but_scheme(url);
    }
    if parsed.password().is_some() && parsed.set_password(Some(REDACTED)).is_err() {
        return hide_all_but_scheme(url);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_parameter(&k) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(REDACTED));
    }
    // `set_password` percent-encodes; keep the marker readable.
    parsed.to_string().replace("%2A%2A%2A", REDACTED)
}

/// `url` without the query parameters `known` does not accept, and the names of those removed.
/// A driver that logs the parameters it ignores, values included (sqlx's PostgreSQL driver does,
/// e.g. libpq's `sslpassword`), must never see them. A URL that does not parse is returned as is
/// (the driver then refuses it without echoing it).
pub fn drop_unknown_parameters(url: &str, known: impl Fn(&str) -> bool) -> (String, Vec<String>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_owned(), Vec::new());
    };
    if parsed.query().is_none() {
        return (url.to_owned(), Vec::new());
    }
    let (kept, dropped): (Vec<_>, Vec<_>) = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| known(k));
    if dropped.is_empty() {
        return (url.to_owned(), Vec::new());
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    (
        parsed.to_string(),
        dropped.into_iter().map(|(k, _)| k).collect(),
    )
}

fn hide_all_but_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://{REDACTED} (not a valid URL; hidden)")
        }
        _ => format!("{REDACTED} (not a valid URL; hidden)"),
    }
}

/// An `http://` or `https://` URL with any `user:password@` moved out of it: the URL (for
/// requests and logs) and the credentials (percent-decoded). Used for `SCHEMA_REGISTRY_URL`,
/// whose `key:secret@` form must never be logged.
pub fn split_credentials(url: &str) -> Result<(String, Option<(String, Secret)>), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !parsed.has_host() {
        return Err("no host".into());
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| "credentials that are not UTF-8".to_owned())
    };
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => Some((decode(user)?, Secret::new(decode(password.unwrap_or(""))?))),
    };
    if credentials.is_some() {
        let cleared = parsed.set_username("").is_ok() && parsed.set_password(None).is_ok();
        if !cleared {
            return Err("cannot remove the credentials".into());
        }
    }
    Ok((parsed.to_string(), credentials))
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
        assert_eq!(
            redact_url("postgres://u@h:5432/db?sslmode=disable&application_name=x"),
            "postgres://u@h:5432/db?sslmode=disable&application_name=x"
        );
    }

    #[test]
    fn redact_url_hides_every_way_of_giving_a_password() {
        let cases = [
            // Query parameters.
            ("postgres://u@h/db?password=s3cretQ", "s3cretQ"),
            (
                "postgres://u@h/db?sslmode=require&sslpassword=s3cretQ",
                "s3cretQ",
            ),
            ("mysql://u@h/db?PASSWORD=s3cret%40Q", "s3cret"),
            // An unencoded `@` in the password: the user information ends at the last `@`.
            ("mysql://root:pa@ss@h:3306/db", "pa@ss"),
            ("mysql://root:p@ss@w0rd@h/db", "w0rd"),
            ("mysql://root:p@ss@w0rd@h/db", "p@ss"),
            // Both, and a registry key:secret.
            ("postgres://u:one@h/db?password=two", "one"),
            ("postgres://u:one@h/db?password=two", "two"),
            ("https://KEY:s3cr3t@psrc.example.cloud", "s3cr3t"),
            // Encoded characters stay hidden too.
            ("mysql://root:p%40ss%2Fword@h/db", "p%40ss"),
        ];
        for (url, secret) in cases {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(shown.contains("***"), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("mysql://root:pa@ss@h:3306/db"),
            "mysql://root:***@h:3306/db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=x&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        // Not a URL: hidden whole, but for a scheme.
        for (text, shown) in [
            ("not a url", "*** (not a valid URL; hidden)"),
            (
                "mysql://root:pw@h:port/db",
                "mysql://*** (not a valid URL; hidden)",
            ),
        ] {
            assert_eq!(redact_url(text), shown);
        }
    }

    #[test]
    fn unknown_parameters_are_dropped_by_name() {
        let known = |k: &str| ["sslmode", "password"].contains(&k);
        let (url, dropped) = drop_unknown_parameters(
            "postgres://u@h/db?sslmode=disable&sslpassword=s3cret&password=pw",
            known,
        );
        assert_eq!(url, "postgres://u@h/db?sslmode=disable&password=pw");
        assert_eq!(dropped, ["sslpassword"]);
        let (url, dropped) = drop_unknown_parameters("postgres://u@h/db?x=1", known);
        assert_eq!((url.as_str(), dropped.len()), ("postgres://u@h/db", 1));
        let same = "postgres://u:p@h/db?sslmode=require";
        assert_eq!(
            drop_unknown_parameters(same, known),
            (same.to_owned(), vec![])
        );
    }

    #[test]
    fn credentials_are_moved_out_of_a_url() {
        let (url, credentials) =
            split_credentials("https://KEY:se%40cret@psrc.example.cloud:443/").unwrap();
        assert_eq!(url, "https://psrc.example.cloud/");
        let (user, secret) = credentials.unwrap();
        assert_eq!((user.as_str(), secret.expose()), ("KEY", "se@cret"));
        let (url, credentials) = split_credentials("http://k:a@b@registry:8081").unwrap();
        assert_eq!(url, "http://registry:8081/");
        assert_eq!(credentials.unwrap().1.expose(), "a@b");
        assert_eq!(
            split_credentials("http://registry:8081").unwrap(),
            ("http://registry:8081/".to_owned(), None)
        );
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in [
            "product_updates",
            "user-login",
            "a.b-c_D9",
            &"x".repeat(249),
        ] {
            assert_eq!(check_topic_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "caf\u{e9}",
            &"x".repeat(250),
        ] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        let env = Env::from_pairs([("TOPIC", "../../etc")]);
        let err = TopicConfig::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("TOPIC=\"../../etc\"") && err.contains("Kafka topic name"),
            "{err}"
        );
    }

    #[test]
    fn env_debug_never_shows_values() {
        let env = Env::from_pairs([("KAFKA_SASL_PASSWORD", "s3cret")]);
        let shown = format!("{env:?} {:?}", Secret::new("s3cret"));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
