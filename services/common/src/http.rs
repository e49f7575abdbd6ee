//! The HTTP surface every service shares: `/health`, `/ready`, `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

/// Named readiness checks ("kafka", "database", ...). The service is ready when it has at least
/// one check and every check is passing.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

impl Readiness {
    pub fn set(&self, name: &str, ok: bool, detail: impl Into<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        checks.insert(
            name.to_owned(),
            Check {
                ok,
                detail: detail.into(),
            },
        );
    }

    pub fn is_ready(&self) -> bool {
        let checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        !checks.is_empty() && checks.values().all(|c| c.ok)
    }

    pub fn snapshot(&self) -> BTreeMap<String, Check> {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct BaseState {
    metrics: prometheus::Registry,
    readiness: Readiness,
}

/// `/health` (200 while the process serves), `/ready` (200 only when every readiness check passes,
/// else 503; the body lists the checks) and `/metrics` (Prometheus text format).
/// Services merge their own routes into this router.
pub fn base_router(metrics: prometheus::Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(BaseState { metrics, readiness })
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn ready(State(state): State<BaseState>) -> Response {
    let ready = state.readiness.is_ready();
    let body = serde_json::json!({"ready": ready, "checks": state.readiness.snapshot()});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): State<BaseState>) -> Response {
    let encoder = TextEncoder::new();
    let mut buffer = Vec::new();
    match encoder.encode(&state.metrics.gather(), &mut buffer) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buffer,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr`, with an error that says which address could not be bound.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (HTTP_ADDR): {e}"),
        )
    })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // A 503 from /ready is an expected state, reported by the service's own logs: request
    // failures are traced at DEBUG, like the requests themselves.
    let trace = TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG));
    axum::serve(listener, router.layer(trace))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check_passing() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready(), "no checks yet means not ready");
        readiness.set("kafka", true, "connected");
        readiness.set("database", false, "connection refused");
        assert!(!readiness.is_ready());
        readiness.set("database", true, "ok");
        assert!(readiness.is_ready());
        assert_eq!(readiness.snapshot().len(), 2);
    }
}
