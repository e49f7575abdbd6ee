//! A small Confluent-Schema-Registry-compatible server **for development and tests only**. It is
//! never part of a production deployment: use Confluent Schema Registry (or a compatible service)
//! there.
//!
//! What it does: Avro schemas only; global ids shared across subjects; versions per subject;
//! compatibility checks (default BACKWARD, per-subject or global NONE / BACKWARD / FORWARD / FULL
//! and their `_TRANSITIVE` variants); soft delete of subjects; state in memory or in one JSON file.
//! What it does not: schema references, Protobuf / JSON Schema, permanent deletes, deleting single
//! versions, modes, contexts, authentication, several processes sharing one data file.
//!
//! REST subset (Confluent's paths, JSON shapes, content type `application/vnd.schemaregistry.v1+json`
//! and error codes):
//!
//! | request | answer |
//! |---|---|
//! | `GET /`, `GET /health` | `{}`, `{"status":"UP"}` |
//! | `GET /schemas/types` | `["AVRO"]` |
//! | `GET /schemas/ids/{id}` | `{"schema": "..."}` |
//! | `GET /schemas/ids/{id}/versions` | `[{"subject": "...", "version": N}]` |
//! | `GET /schemas/ids/{id}/subjects` | `["..."]` |
//! | `GET /subjects` | `["..."]` |
//! | `POST /subjects/{subject}` | lookup: `{"subject", "id", "version", "schema"}` |
//! | `DELETE /subjects/{subject}` | soft delete: `[1, 2]` |
//! | `GET /subjects/{subject}/versions` | `[1, 2]` |
//! | `POST /subjects/{subject}/versions` | register: `{"id": N}` |
//! | `GET /subjects/{subject}/versions/{version or latest}` | `{"subject", "id", "version", "schema"}` |
//! | `GET /subjects/{subject}/versions/{version or latest}/schema` | the schema JSON |
//! | `POST /compatibility/subjects/{subject}/versions[/{version or latest}]` | `{"is_compatible": bool}` (`?verbose=true` adds `messages`) |
//! | `GET`/`PUT /config`, `GET`/`PUT`/`DELETE /config/{subject}` | `{"compatibilityLevel": "..."}` / `{"compatibility": "..."}` |
//!
//! Errors: `{"error_code": N, "message": "..."}` with 40401 subject not found, 40402 version not
//! found, 40403 schema not found, 40408 no subject-level compatibility, 42201 invalid schema,
//! 42202 invalid version, 42203 invalid compatibility level, 409 incompatible schema, 50001 data
//! file not writable, 400 / 422 malformed request body, 415 unsupported content type.

pub mod compatibility;
pub mod config;
mod http;
mod persist;
pub mod store;

use std::path::PathBuf;

pub use http::CONTENT_TYPE;

/// Why a registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the registry data file {path}: {source}")]
    ReadDataFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry data file {path} is not a valid dev-schema-registry file: {reason}")]
    CorruptDataFile { path: PathBuf, reason: String },
    #[error("cannot write the registry data file {path}: {source}")]
    WriteDataFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fresh, empty, in-memory registry.
pub fn router() -> axum::Router {
    http::routes(http::AppState::new(store::Registry::default(), None))
}

/// A registry kept in the JSON file at `path` (loaded now, or created empty if missing; rewritten
/// atomically after every change), or in memory only for `None`. Restarting with the same file
/// keeps schema ids and versions. One process per file.
pub fn router_with_store(path: Option<PathBuf>) -> Result<axum::Router, Error> {
    let registry = match &path {
        Some(path) => persist::load_or_create(path)?,
        None => store::Registry::default(),
    };
    Ok(http::routes(http::AppState::new(registry, path)))
}
