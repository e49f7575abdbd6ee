//! `tracing` set-up: human-readable by default, one JSON object per line with `LOG_FORMAT=json`.
//! The level filter comes from `RUST_LOG` (default `info`).

use crate::config::{ConfigError, Env};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so tests
/// that build several applications in one process can call it freely.
pub fn init(env: &Env) -> Result<(), ConfigError> {
    let format = env.one_of("LOG_FORMAT", "text", &["text", "json"])?;
    let filter =
        EnvFilter::try_new(env.string("RUST_LOG", "info")).map_err(|e| ConfigError::Invalid {
            name: "RUST_LOG".into(),
            value: env.string("RUST_LOG", ""),
            expected: format!("a tracing filter such as info or producer=debug ({e})"),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}
