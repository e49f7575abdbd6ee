//! product-updater: creates and migrates the `product` table, seeds it from a CSV file, then keeps
//! changing the catalog (prices, categories, new products) at `UPDATES_PER_SECOND`, one committed
//! statement per change so the database stamps `last_updated` for the producer to capture.
//!
//! `UPDATES_PER_SECOND=0` seeds only, then keeps serving `/health`, `/ready` and `/metrics` idle
//! until shutdown (so a container with that setting does not restart in a loop).
//!
//! Start-up: the CSV header is checked and `HTTP_ADDR` bound at once; then the database is created
//! if missing and migrated, retrying with backoff while it is unreachable (`/ready` answers 503
//! meanwhile, and SIGTERM still stops the process promptly). See [`config`] for the variables.

pub mod catalog_changes;
pub mod config;
pub mod database;
pub mod metrics;
pub mod pacing;
pub mod product_csv;
pub mod seeding;
pub mod startup;

pub use config::Config;
pub use startup::{Application, Error};
