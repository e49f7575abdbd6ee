//! The consumer service: one member of the consumer group that reads product updates (Avro in
//! the Confluent wire format), transforms them and appends them durably to its own JSON log
//! `CONSUMER_LOGS_DIR/consumer_N/consumer_log.json`.
//!
//! - [`config`]: environment variables and defaults.
//! - [`slot`]: claiming `consumer_N` with a lock file (also the static `group.instance.id`).
//! - [`decode`], [`filter`], [`transform`]: wire format (Avro product or JSON object) → kept or
//!   not (`CONSUMER_FILTER`) → output record (pure transform).
//! - [`sink`]: where records go: the JSON log, a stage directory or an output topic.
//! - [`pipeline`] (with [`partition_map`]): batching, dead-lettering, flush (write, fsync, checkpoint) then commit.
//! - [`writer`]: the thread that writes and fsyncs one batch while the next is being read.
//! - [`fence`]: a partition is written only by the replica that took it over last.
//! - [`topic_id`]: the consumed topic's id, so positions of an earlier topic of the same name are
//!   not used.
//! - [`group`]: the Kafka consumer, rebalance handling, the poll loop.
//! - [`startup`]: [`Application`] (build, then run until shutdown) and HTTP
//!   (`/health`, `/ready`, `/metrics`, `/assignments`).

pub mod assignments;
pub mod config;
pub mod decode;
pub mod dlq;
pub mod fence;
pub mod filter;
pub mod group;
pub mod metrics;
pub mod partition_map;
pub mod pipeline;
pub mod sink;
pub mod slot;
pub mod startup;
pub mod topic_id;
pub mod transform;
pub mod writer;

pub use config::Config;
pub use startup::{Application, RunError, StartupError};
