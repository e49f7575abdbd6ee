//! Retrying with exponential backoff, cut short by shutdown: the one retry mechanism of every
//! service. [`Backoff`] spaces the attempts; [`wait_for`] runs a start-up dependency check
//! (database, table, broker, topic, registry...) until it answers, keeping a readiness check
//! false and saying what it waits for meanwhile.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::Readiness;

/// The longest wait between two attempts of the services' start-up checks.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Waits that double from `initial` up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// From 500 ms up to [`MAX_DELAY`]: the services' start-up checks and replays.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(500), MAX_DELAY)
    }

    /// The wait before the next attempt; each call doubles the following one, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The wait after the `failures`-th failure in a row (1 = the first), for callers that keep
    /// a failure count instead of a `Backoff`: `initial` doubled per failure, up to `max`.
    pub fn delay_after(initial: Duration, max: Duration, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        initial.saturating_mul(1 << doublings).min(max)
    }

    /// Sleeps `delay`; returns `false` at once if `shutdown` is cancelled meanwhile.
    pub async fn sleep(delay: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// [`Backoff::next_delay`] then [`Backoff::sleep`].
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        Self::sleep(delay, shutdown).await
    }
}

/// The outcome of one attempt of a [`wait_for`] check.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The dependency answered.
    Ready(T),
    /// Not yet (unreachable, not created yet...): why, for the log and `/ready`.
    Waiting(String),
    /// Waiting cannot fix this (bad configuration, wrong column types...).
    Failed(E),
}

/// Runs `attempt` until the dependency is ready, with [`Backoff::standard`] between attempts.
/// Meanwhile the readiness check `check` is false with the reason, and every failed attempt
/// logs a warning saying what it waits for (so at most one line per backoff delay).
/// `Ok(None)` when `shutdown` is cancelled first.
pub async fn wait_for<T, E, F, Fut>(
    dependency: &str,
    readiness: &Readiness,
    check: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut backoff = Backoff::standard();
    let mut attempts = 0u32;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            outcome = attempt() => outcome,
        };
        match outcome {
            Attempt::Ready(value) => {
                if attempts > 0 {
                    tracing::info!(waited_for = dependency, attempts, "the wait is over");
                }
                return Ok(Some(value));
            }
            Attempt::Failed(error) => return Err(error),
            Attempt::Waiting(reason) => {
                attempts += 1;
                let delay = backoff.next_delay();
                readiness.set(check, false, format!("waiting for {dependency}: {reason}"));
                tracing::warn!(
                    waiting_for = dependency,
                    reason = %reason,
                    attempts,
                    retry_in = ?delay,
                    "waiting for {dependency} (not ready meanwhile)"
                );
                if !Backoff::sleep(delay, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let counted: Vec<_> = (1..=9)
            .map(|n| Backoff::delay_after(initial, max, n).as_millis())
            .collect();
        assert_eq!(
            counted,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]
        );
        assert_eq!(Backoff::delay_after(initial, max, u32::MAX), max);
        let mut standard = Backoff::standard();
        let last = (0..100).map(|_| standard.next_delay()).last();
        assert_eq!(last, Some(MAX_DELAY));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_retries_until_ready_with_readiness_false_meanwhile() {
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let seen = readiness.clone();
        let result: Result<Option<u32>, String> =
            wait_for("the topic t", &readiness, "startup", &shutdown, || {
                calls += 1;
                let n = calls;
                let seen = seen.clone();
                async move {
                    if n < 3 {
                        Attempt::Waiting(format!("try {n}"))
                    } else {
                        let detail = seen.snapshot()["startup"].detail.clone();
                        assert_eq!(detail, "waiting for the topic t: try 2");
                        assert!(!seen.is_ready());
                        Attempt::Ready(n)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(Some(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_stops_on_failure_and_on_shutdown() {
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let failed: Result<Option<()>, &str> =
            wait_for("x", &readiness, "startup", &shutdown, || async {
                Attempt::Failed("bad config")
            })
            .await;
        assert_eq!(failed, Err("bad config"));
        shutdown.cancel();
        let stopped: Result<Option<()>, &str> =
            wait_for("x", &readiness, "startup", &shutdown, || async {
                Attempt::Waiting("down".into())
            })
            .await;
        assert_eq!(stopped, Ok(None));
    }
}
