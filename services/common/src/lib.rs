//! Building blocks shared by the productstream services.
//!
//! Each service's `main.rs` stays tiny: read its config with [`config::Env`], call
//! [`telemetry::init`], build its application (which serves [`http::base_router`]) and run until
//! [`shutdown::signal_token`] is cancelled.

pub mod avro;
pub mod backoff;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod product;
pub mod registry;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;

/// Every program built on this crate (the services, their tests and benchmarks) allocates with
/// jemalloc, librdkafka's C code included (`malloc` itself is jemalloc's). With glibc's malloc,
/// the consumer's poll thread, which frees the records librdkafka's fetch thread allocated,
/// contended for the fetch thread's arena lock: consumer-bench measured about 25 % more records
/// per second with jemalloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
