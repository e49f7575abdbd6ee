//! A client for Confluent-compatible schema registries (the REST subset the pipeline needs):
//! register a schema under a subject, and fetch writer schemas by id (cached).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use prometheus::IntCounterVec;
use serde::Deserialize;

use crate::config::{redact_url, split_credentials, ConfigError, Env, Secret};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// `SCHEMA_REGISTRY_URL` (default `http://127.0.0.1:8081`), and optional basic auth
/// `SCHEMA_REGISTRY_USERNAME` / `SCHEMA_REGISTRY_PASSWORD` (Confluent Cloud API key and secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub url: String,
    pub basic_auth: Option<(String, Secret)>,
}

impl RegistryConfig {
    pub const DEFAULT_URL: &'static str = "http://127.0.0.1:8081";

    /// A `user:password@` in `SCHEMA_REGISTRY_URL` (Confluent Cloud's `key:secret@` form) is
    /// taken out of the URL and used as basic auth, so the URL can be logged.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = env.string("SCHEMA_REGISTRY_URL", Self::DEFAULT_URL);
        let invalid = |expected: &str| ConfigError::Invalid {
            name: "SCHEMA_REGISTRY_URL".into(),
            value: redact_url(&raw),
            expected: expected.into(),
        };
        if !(raw.starts_with("http://") || raw.starts_with("https://")) {
            return Err(invalid("an http:// or https:// URL"));
        }
        let (url, url_credentials) = split_credentials(&raw)
            .map_err(|e| invalid(&format!("an http:// or https:// URL ({e})")))?;
        let variables = match (
            env.optional("SCHEMA_REGISTRY_USERNAME"),
            env.optional("SCHEMA_REGISTRY_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Some((user, Secret::new(password))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: "SCHEMA_REGISTRY_PASSWORD".into(),
                    expected: "needed with SCHEMA_REGISTRY_USERNAME".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: "SCHEMA_REGISTRY_USERNAME".into(),
                    expected: "needed with SCHEMA_REGISTRY_PASSWORD".into(),
                })
            }
        };
        let basic_auth = match (url_credentials, variables) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "credentials either in the URL or in SCHEMA_REGISTRY_USERNAME and \
                     SCHEMA_REGISTRY_PASSWORD, not both",
                ))
            }
            (from_url, from_variables) => from_url.or(from_variables),
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            basic_auth,
        })
    }

    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            basic_auth: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry unreachable at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("schema registry answered {status} for {what}: {message}")]
    Rejected {
        status: u16,
        error_code: Option<i64>,
        message: String,
        what: String,
    },
    #[error("schema registry returned a schema that is not valid Avro (id {id}): {source}")]
    InvalidSchema { id: u32, source: apache_avro::Error },
}

impl RegistryError {
    /// True for errors worth retrying (network, 5xx); false for answers that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Rejected { status, .. } => *status >= 500,
            Self::InvalidSchema { .. } => false,
        }
    }
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error_code: Option<i64>,
    message: Option<String>,
}

/// Registry client with a cache of writer schemas by id (ids are immutable, so never evicted).
pub struct RegistryClient {
    config: RegistryConfig,
    http: reqwest::Client,
    schemas: RwLock<HashMap<u32, Arc<Schema>>>,
    requests: Option<IntCounterVec>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client builds with static settings");
        Self {
            config,
            http,
            schemas: RwLock::default(),
            requests: None,
        }
    }

    /// Counts requests in `schema_registry_requests_total{operation, outcome}` of `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Self {
        self.requests = Some(crate::metrics::counter_vec(
            registry,
            "schema_registry_requests_total",
            "Requests to the schema registry, by operation and outcome (ok, error).",
            &["operation", "outcome"],
        ));
        self
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Registers `schema` under `subject` and returns its global id. Registering the same schema
    /// again returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.config.url, subject);
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let request = self
            .http
            .post(&url)
            .header("Content-Type", CONTENT_TYPE)
            .json(&body);
        let response: IdResponse = self
            .send(
                request,
                "register",
                &format!("registering subject {subject}"),
            )
            .await?;
        Ok(response.id)
    }

    /// Whether the registry answers (and accepts the credentials): lists the subjects.
    pub async fn check(&self) -> Result<(), RegistryError> {
        let url = format!("{}/subjects", self.config.url);
        let _subjects: Vec<String> = self
            .send(self.http.get(&url), "list_subjects", "the list of subjects")
            .await?;
        Ok(())
    }

    /// The writer schema with global id `id` (cached after the first fetch).
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self
            .schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Arc::clone(schema));
        }
        let url = format!("{}/schemas/ids/{id}", self.config.url);
        let response: SchemaResponse = self
            .send(
                self.http.get(&url),
                "get_schema",
                &format!("schema id {id}"),
            )
            .await?;
        let schema = Arc::new(
            Schema::parse_str(&response.schema)
                .map_err(|source| RegistryError::InvalidSchema { id, source })?,
        );
        self.schemas
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&schema));
        Ok(schema)
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        mut request: reqwest::RequestBuilder,
        operation: &str,
        what: &str,
    ) -> Result<T, RegistryError> {
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let result = self.send_inner(request, what).await;
        if let Some(requests) = &self.requests {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            requests.with_label_values(&[operation, outcome]).inc();
        }
        result
    }

    async fn send_inner<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, RegistryError> {
        let unreachable = |source| RegistryError::Unreachable {
            url: self.config.url.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(unreachable);
        }
        let text = response.text().await.unwrap_or_default();
        let parsed: Option<ErrorResponse> = serde_json::from_str(&text).ok();
        Err(RegistryError::Rejected {
            status: status.as_u16(),
            error_code: parsed.as_ref().and_then(|e| e.error_code),
            message: parsed.and_then(|e| e.message).unwrap_or(text),
            what: what.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_needs_both_halves() {
        let env = Env::from_pairs([("SCHEMA_REGISTRY_USERNAME", "key")]);
        let err = RegistryConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("SCHEMA_REGISTRY_PASSWORD"), "{err}");
        let env = env
            .with("SCHEMA_REGISTRY_PASSWORD", "pw")
            .with("SCHEMA_REGISTRY_URL", "https://r.example/");
        let config = RegistryConfig::from_env(&env).unwrap();
        assert_eq!(config.url, "https://r.example");
        assert!(!format!("{config:?}").contains("pw\""));
    }

    #[test]
    fn credentials_in_the_registry_url_become_basic_auth_and_leave_the_url() {
        let env = Env::from_pairs([(
            "SCHEMA_REGISTRY_URL",
            "https://KEY:s3cr%40t@psrc.example.cloud/",
        )]);
        let config = RegistryConfig::from_env(&env).unwrap();
        assert_eq!(config.url, "https://psrc.example.cloud");
        let (user, secret) = config.basic_auth.as_ref().unwrap();
        assert_eq!((user.as_str(), secret.expose()), ("KEY", "s3cr@t"));
        assert!(!format!("{config:?}").contains("s3cr"));

        let both = env
            .with("SCHEMA_REGISTRY_USERNAME", "k")
            .with("SCHEMA_REGISTRY_PASSWORD", "p");
        let err = RegistryConfig::from_env(&both).unwrap_err().to_string();
        assert!(err.contains("not both") && !err.contains("s3cr"), "{err}");

        let bad = Env::from_pairs([("SCHEMA_REGISTRY_URL", "ftp://KEY:s3cret@host")]);
        let err = RegistryConfig::from_env(&bad).unwrap_err().to_string();
        assert!(
            err.contains("SCHEMA_REGISTRY_URL") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn registry_url_must_be_http() {
        let env = Env::from_pairs([("SCHEMA_REGISTRY_URL", "localhost:8081")]);
        assert!(RegistryConfig::from_env(&env)
            .unwrap_err()
            .to_string()
            .contains("SCHEMA_REGISTRY_URL"));
    }
}
