//! The producer service: captures inserts and updates of the MySQL/MariaDB `product` table
//! incrementally (keyset on `(last_updated, id)`, bounded by a read horizon that open
//! transactions hold back) and produces them to Kafka as Avro in the Confluent wire format,
//! keyed by product id, without losses or duplicates across restarts and kills. With
//! `SOURCE=csv` it streams a CSV file to the topic instead ([`csv_source`]).
//!
//! `main.rs` only wires [`config::Config::from_env`], [`startup::Application::build`] and
//! [`startup::Application::run_until_stopped`] together.

pub mod config;
pub mod csv_source;
pub mod encode;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod readback;
pub mod sink;
pub mod source;
pub mod startup;
pub mod watermark;

pub use config::Config;
pub use startup::{Application, StartupError};
