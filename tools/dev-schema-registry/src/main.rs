//! `dev-schema-registry`: a Confluent-compatible schema registry for development and tests only.
//! Settings: see `dev_schema_registry::config` (`REGISTRY_ADDR`, `REGISTRY_DATA_FILE`, `RUST_LOG`).

use std::io::IsTerminal;

use anyhow::Context;
use dev_schema_registry::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing()?;
    let config = Config::from_env()?;
    let app = dev_schema_registry::router_with_store(config.data_file.clone())?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {} (REGISTRY_ADDR)", config.addr))?;
    let shutdown = shutdown_signal()?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_file = ?config.data_file,
        "dev schema registry listening (development and tests only)"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("dev schema registry stopped");
    Ok(())
}

fn init_tracing() -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) => EnvFilter::try_new(&value).with_context(|| {
            format!("RUST_LOG is {value:?}, expected a tracing filter such as info or debug")
        })?,
        Err(_) => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before this returns, so a
/// signal that arrives while the server starts is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
