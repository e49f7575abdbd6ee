//! Changing the catalog at a steady rate.
//!
//! A ticker hands out the number of changes that fell due since the start (`rate × elapsed`) as
//! permits; `workers` tasks (one per pooled connection) each take a permit, apply one change and
//! take the next. So the rate holds however the ticks fall, and several statements are in flight
//! at once, which lets the database group its commits. If the database cannot keep up, at most one
//! second of changes (and at least one per worker) waits; the rest is dropped and counted.
//!
//! A failed change is logged, counted as a database error, marks the service not ready, and makes
//! that worker back off (100 ms doubling to 5 s) before it goes on. On shutdown the ticker stops,
//! each worker finishes the statement it is running, and the loop returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::Readiness;
use common::CancellationToken;
use sqlx::MySqlPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::catalog_changes::{apply_change, plan_change, Applied, CatalogIds};
use crate::database::READINESS_CHECK;
use crate::metrics::Metrics;
use common::backoff::Backoff;

/// Shortest and longest pause between ticks; within these a tick comes about once per change.
const MIN_TICK: Duration = Duration::from_millis(5);
const MAX_TICK: Duration = Duration::from_millis(100);

/// How long a worker pauses after a failed change, doubling per failure in a row.
const FIRST_ERROR_BACKOFF: Duration = Duration::from_millis(100);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Everything the change workers share.
#[derive(Clone)]
pub struct ChangeContext {
    pub pool: MySqlPool,
    pub ids: Arc<CatalogIds>,
    pub metrics: Metrics,
    pub readiness: Readiness,
}

/// Applies about `rate` changes per second with `workers` concurrent workers until `shutdown` is
/// cancelled. `rate` must be positive.
pub async fn run_changes(
    context: ChangeContext,
    rate: f64,
    workers: usize,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        tasks.spawn(change_worker(
            context.clone(),
            Arc::clone(&permits),
            shutdown.clone(),
        ));
    }

    let tick = Duration::from_secs_f64(1.0 / rate).clamp(MIN_TICK, MAX_TICK);
    // Waiting changes beyond this many are dropped: one second's worth, at least one per worker.
    let backlog_limit = (rate.ceil() as usize).max(workers);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut issued: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let due_by_now = (rate * started.elapsed().as_secs_f64()) as u64;
        let due = due_by_now.saturating_sub(issued);
        issued = due_by_now;
        let room = backlog_limit.saturating_sub(permits.available_permits());
        let granted = usize::try_from(due).unwrap_or(usize::MAX).min(room);
        permits.add_permits(granted);
        let dropped = due - granted as u64;
        if dropped > 0 {
            context.metrics.updates_dropped(dropped);
            tracing::debug!(
                dropped,
                "database cannot keep up with UPDATES_PER_SECOND, dropping changes"
            );
        }
    }
    // Workers waiting for a permit stop now; busy ones finish their statement first.
    permits.close();
    while tasks.join_next().await.is_some() {}
}

async fn change_worker(
    context: ChangeContext,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(FIRST_ERROR_BACKOFF, MAX_ERROR_BACKOFF);
    let mut failing = false;
    loop {
        match permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_closed) => return,
        }
        let change = plan_change(&mut rand::rng(), context.ids.range());
        match apply_change(&context.pool, &context.ids, &change).await {
            Ok(Applied::Changed(kind)) => {
                context.metrics.update_applied(kind);
                if failing {
                    failing = false;
                    backoff.reset();
                    context.readiness.set(READINESS_CHECK, true, "connected");
                    tracing::info!("catalog changes succeed again");
                }
            }
            Ok(Applied::NoSuchProduct) => {
                tracing::debug!(
                    ?change,
                    "no product to change at or above the picked id; re-read the id range"
                );
            }
            Err(error) => {
                failing = true;
                context.metrics.database_error();
                let delay = backoff.next_delay();
                if crate::database::is_transient(&error) {
                    context
                        .readiness
                        .set(READINESS_CHECK, false, format!("unreachable: {error}"));
                }
                tracing::warn!(
                    kind = change.kind().label(),
                    %error,
                    retry_in_ms = delay.as_millis(),
                    "catalog change failed, backing off"
                );
                if !Backoff::sleep(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}
