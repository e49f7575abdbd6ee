//! The REST API: Confluent Schema Registry's paths, JSON shapes, content type and error codes, for
//! the subset listed in the crate docs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower_http::trace::TraceLayer;

use crate::compatibility::CompatibilityLevel;
use crate::persist;
use crate::store::{ParsedSchema, Registry, StoreError, SubjectSchema, VersionSelector};

/// The content type of every response (Confluent's API version 1).
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Request content types accepted, as Confluent does. A request without one is accepted too.
const ACCEPTED_REQUEST_TYPES: [&str; 4] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

pub(crate) struct AppState {
    registry: Mutex<Registry>,
    data_file: Option<PathBuf>,
}

impl AppState {
    pub(crate) fn new(registry: Registry, data_file: Option<PathBuf>) -> Self {
        Self {
            registry: Mutex::new(registry),
            data_file,
        }
    }

    fn read(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` and, with a data file, saves the result before making it visible: if
    /// saving fails the registry stays as it was and the caller gets error 50001.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Registry) -> Result<T, StoreError>,
    ) -> Result<T, ApiError> {
        let mut registry = self.read();
        let Some(path) = &self.data_file else {
            return Ok(change(&mut registry)?);
        };
        let mut draft = registry.clone();
        let result = change(&mut draft)?;
        if draft.revision() != registry.revision() {
            persist::save(path, &draft).map_err(|e| {
                tracing::error!(error = %e, "cannot save the registry");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50001,
                    format!("Error in the backend data store: {e}"),
                )
            })?;
            *registry = draft;
        }
        Ok(result)
    }
}

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/ids/{id}/subjects", get(schema_subjects))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_against_registration),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_against_version),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(Arc::new(state))
}

type Shared = State<Arc<AppState>>;

/// A JSON response with the registry content type.
struct RegistryJson<T>(StatusCode, T);

impl<T: Serialize> IntoResponse for RegistryJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.1) {
            Ok(body) => (
                self.0,
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                body,
            )
                .into_response(),
            Err(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                50001,
                format!("cannot encode the response: {e}"),
            )
            .into_response(),
        }
    }
}

fn ok<T: Serialize>(body: T) -> RegistryJson<T> {
    RegistryJson(StatusCode::OK, body)
}

/// Confluent's error body: `{"error_code": N, "message": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error_code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            message: message.into(),
        }
    }

    fn invalid_version(text: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{text}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    fn invalid_compatibility_level() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, \
             backward_transitive, forward_transitive, and full_transitive",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, error_code) = match &e {
            StoreError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            StoreError::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            StoreError::SchemaIdNotFound(_) | StoreError::SchemaNotUnderSubject(_) => {
                (StatusCode::NOT_FOUND, 40403)
            }
            StoreError::SubjectCompatibilityNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            StoreError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            StoreError::Incompatible { .. } => (StatusCode::CONFLICT, 409),
        };
        Self::new(status, error_code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.error_code, "message": self.message });
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body.to_string(),
        )
            .into_response()
    }
}

/// A JSON request body in one of the accepted content types, with Confluent's errors: 415 for
/// another content type, 400 for malformed JSON, 422 for JSON of the wrong shape.
struct RegistryBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RegistryBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if !ACCEPTED_REQUEST_TYPES
                .iter()
                .any(|accepted| accepted.eq_ignore_ascii_case(essence))
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    415,
                    format!(
                        "HTTP 415 Unsupported Media Type: {essence:?}; send one of {}",
                        ACCEPTED_REQUEST_TYPES.join(", ")
                    ),
                ));
            }
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                400,
                format!("cannot read body: {e}"),
            )
        })?;
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            if e.is_data() {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    422,
                    format!("Unprocessable Entity: {e}"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, 400, format!("Bad Request: {e}"))
            }
        })
    }
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    fn parse(&self) -> Result<ParsedSchema, ApiError> {
        if self.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(StoreError::InvalidSchema(
                "schema references are not supported by this development registry".into(),
            )
            .into());
        }
        let text = self.schema.as_deref().ok_or_else(|| {
            StoreError::InvalidSchema("the request has no \"schema\" field".into())
        })?;
        Ok(ParsedSchema::parse(text, self.schema_type.as_deref())?)
    }
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
}

#[derive(Deserialize)]
struct VerboseQuery {
    #[serde(default)]
    verbose: bool,
}

#[derive(Deserialize)]
struct DefaultToGlobalQuery {
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

#[derive(Serialize)]
struct SubjectSchemaBody {
    subject: String,
    version: u32,
    id: u32,
    schema: String,
}

impl From<SubjectSchema> for SubjectSchemaBody {
    fn from(s: SubjectSchema) -> Self {
        Self {
            subject: s.subject,
            version: s.version,
            id: s.id,
            schema: s.schema,
        }
    }
}

fn parse_version(text: &str) -> Result<VersionSelector, ApiError> {
    VersionSelector::parse(text).ok_or_else(|| ApiError::invalid_version(text))
}

/// Ids that are not numbers cannot name a schema.
fn parse_id(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {text} not found"),
        )
    })
}

fn parse_level(request: &ConfigRequest) -> Result<CompatibilityLevel, ApiError> {
    request
        .compatibility
        .as_deref()
        .and_then(CompatibilityLevel::parse)
        .ok_or_else(ApiError::invalid_compatibility_level)
}

fn compatibility_body(problems: Vec<String>, verbose: bool) -> Value {
    if verbose {
        json!({ "is_compatible": problems.is_empty(), "messages": problems })
    } else {
        json!({ "is_compatible": problems.is_empty() })
    }
}

async fn root() -> impl IntoResponse {
    ok(json!({}))
}

async fn health() -> impl IntoResponse {
    ok(json!({ "status": "UP" }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
}

async fn schema_types() -> impl IntoResponse {
    ok([crate::store::AVRO])
}

async fn schema_by_id(
    State(app): Shared,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let registry = app.read();
    Ok(ok(json!({ "schema": registry.schema_by_id(id)?.text })))
}

async fn schema_versions(
    State(app): Shared,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let pairs = app.read().subject_versions_of_schema(id)?;
    let body: Vec<Value> = pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(body))
}

async fn schema_subjects(
    State(app): Shared,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut subjects: Vec<String> = app
        .read()
        .subject_versions_of_schema(id)?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.dedup();
    Ok(ok(subjects))
}

async fn list_subjects(State(app): Shared) -> impl IntoResponse {
    ok(app.read().subjects())
}

async fn list_versions(
    State(app): Shared,
    Path(subject): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(ok(app.read().versions(&subject)?))
}

async fn register(
    State(app): Shared,
    Path(subject): Path<String>,
    RegistryBody(request): RegistryBody<SchemaRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let schema = request.parse()?;
    let registered = app.change(|registry| registry.register(&subject, schema));
    match &registered {
        Ok(r) if r.new_version => {
            tracing::info!(subject, id = r.id, version = r.version, "registered schema");
        }
        Ok(_) => {}
        Err(e) => tracing::info!(subject, error = e.message, "refused schema"),
    }
    Ok(ok(json!({ "id": registered?.id })))
}

async fn lookup(
    State(app): Shared,
    Path(subject): Path<String>,
    RegistryBody(request): RegistryBody<SchemaRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let schema = request.parse()?;
    let found = app.read().lookup(&subject, &schema)?;
    Ok(ok(SubjectSchemaBody::from(found)))
}

async fn delete_subject(
    State(app): Shared,
    Path(subject): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let deleted = app.change(|registry| registry.delete_subject(&subject))?;
    tracing::info!(subject, versions = ?deleted, "soft-deleted subject");
    Ok(ok(deleted))
}

async fn get_version(
    State(app): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let selector = parse_version(&version)?;
    let found = app.read().version(&subject, selector)?;
    Ok(ok(SubjectSchemaBody::from(found)))
}

/// The schema itself (its JSON, not wrapped in a string), as Confluent returns it.
async fn get_version_schema(
    State(app): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let selector = parse_version(&version)?;
    let found = app.read().version(&subject, selector)?;
    let schema: Value = serde_json::from_str(&found.schema).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("stored schema is not JSON: {e}"),
        )
    })?;
    Ok(ok(schema))
}

async fn check_against_registration(
    State(app): Shared,
    Path(subject): Path<String>,
    Query(query): Query<VerboseQuery>,
    RegistryBody(request): RegistryBody<SchemaRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let schema = request.parse()?;
    let problems = app.read().compatibility_problems(&subject, &schema, None)?;
    Ok(ok(compatibility_body(problems, query.verbose)))
}

async fn check_against_version(
    State(app): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<VerboseQuery>,
    RegistryBody(request): RegistryBody<SchemaRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let selector = parse_version(&version)?;
    let schema = request.parse()?;
    let problems = app
        .read()
        .compatibility_problems(&subject, &schema, Some(selector))?;
    Ok(ok(compatibility_body(problems, query.verbose)))
}

/// Confluent's GET answers `compatibilityLevel`; `compatibility` (the PUT field) is added for
/// clients that read that name.
fn config_body(level: CompatibilityLevel) -> Value {
    json!({ "compatibilityLevel": level, "compatibility": level })
}

async fn get_global_config(State(app): Shared) -> impl IntoResponse {
    ok(config_body(app.read().global_compatibility()))
}

async fn put_global_config(
    State(app): Shared,
    RegistryBody(request): RegistryBody<ConfigRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let level = parse_level(&request)?;
    app.change(|registry| {
        registry.set_global_compatibility(level);
        Ok(())
    })?;
    tracing::info!(compatibility = %level, "set global compatibility");
    Ok(ok(json!({ "compatibility": level })))
}

/// Without `?defaultToGlobal=true`, a subject without its own level is error 40408 (Confluent).
async fn get_subject_config(
    State(app): Shared,
    Path(subject): Path<String>,
    Query(query): Query<DefaultToGlobalQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let registry = app.read();
    let level = match registry.subject_compatibility(&subject) {
        Some(level) => level,
        None if query.default_to_global => registry.global_compatibility(),
        None => return Err(StoreError::SubjectCompatibilityNotFound(subject).into()),
    };
    Ok(ok(config_body(level)))
}

async fn put_subject_config(
    State(app): Shared,
    Path(subject): Path<String>,
    RegistryBody(request): RegistryBody<ConfigRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let level = parse_level(&request)?;
    app.change(|registry| {
        registry.set_subject_compatibility(&subject, level);
        Ok(())
    })?;
    tracing::info!(subject, compatibility = %level, "set subject compatibility");
    Ok(ok(json!({ "compatibility": level })))
}

async fn delete_subject_config(
    State(app): Shared,
    Path(subject): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let previous = app.change(|registry| registry.clear_subject_compatibility(&subject))?;
    Ok(ok(config_body(previous)))
}
