//! Building blocks shared by the productstream services.
//!
//! Each service's `main.rs` stays tiny: read its config with [`config::Env`], call
//! [`telemetry::init`], build its application (which serves [`http::base_router`]) and run until
//! [`shutdown::signal_token`] is cancelled.

pub mod avro;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod product;
pub mod registry;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
