//! The suite's own writers, beside product-updater's steady changes. Each runs on connections of
//! its own and survives database restarts (a failed statement or commit is counted, not retried:
//! its outcome is whatever the database kept, and the final check reads the database).
//!
//! - `hot`: one product updated several times per second.
//! - `burst`: one statement inserting or updating many rows (one shared timestamp).
//! - `long_tx`: transactions open for seconds that insert and update (some roll back).
//! - `lock_wait`: transaction A inserts a row and stays open; B holds a row lock; C waits on B;
//!   B commits, C goes through, A commits last (its row is stamped before everything else).
//! - `table_lock`: in turn `LOCK TABLES product WRITE` held for a moment, a metadata-lock wait
//!   (an open transaction that read the table, an `ALTER TABLE` waiting for it, every other
//!   statement queued behind the `ALTER`), and `FLUSH TABLES WITH READ LOCK`.
//!
//! The suite's own new products get negative ids, so they never collide with the updater's
//! (which hands out ids above the highest positive one).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::CancellationToken;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, MySqlConnection};

use crate::eventlog::EventLog;

/// Seeded products changed by the writers (`data/products.csv` has ids 1..=50).
const SEEDED_IDS: std::ops::RangeInclusive<i32> = 1..=50;

pub const KINDS: [&str; 7] = [
    "hot",
    "burst",
    "long_tx",
    "lock_wait",
    "lock_tables",
    "mdl_wait",
    "global_read_lock",
];

#[derive(Default)]
pub struct Stats {
    /// Rows changed by statements whose transaction committed (acknowledged by the server).
    pub changes: AtomicU64,
    /// Statements or transactions that failed (database restarts, lock wait timeouts).
    pub failures: AtomicU64,
    ops: Mutex<BTreeMap<&'static str, u64>>,
    /// Ids of rows whose insert was committed (acknowledged).
    pub inserted: Mutex<Vec<i32>>,
    /// Ids inserted by transactions that were rolled back on purpose: never in the table.
    pub rolled_back: Mutex<Vec<i32>>,
    next_id: AtomicI32,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            next_id: AtomicI32::new(-1),
            ..Self::default()
        }
    }

    fn new_ids(&self, n: i32) -> Vec<i32> {
        let first = self.next_id.fetch_sub(n, Ordering::Relaxed);
        (0..n).map(|i| first - i).collect()
    }

    fn lowest_id(&self) -> i32 {
        self.next_id.load(Ordering::Relaxed) + 1
    }

    fn done(&self, kind: &'static str, changes: u64, inserted: &[i32]) {
        self.changes.fetch_add(changes, Ordering::Relaxed);
        *self.ops.lock().expect("stats").entry(kind).or_default() += 1;
        self.inserted
            .lock()
            .expect("stats")
            .extend_from_slice(inserted);
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ops(&self) -> BTreeMap<&'static str, u64> {
        self.ops.lock().expect("stats").clone()
    }
}

/// Runs every writer until `stop`; returns once each has finished what it was doing.
pub async fn run(
    url: String,
    seed: u64,
    stats: Arc<Stats>,
    events: Arc<EventLog>,
    stop: CancellationToken,
) {
    // Dropping the set (when the suite gives up waiting for the writers) aborts every writer
    // and closes its connections, which releases whatever locks they hold.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, kind) in ["hot", "burst", "long_tx", "lock_wait", "table_lock"]
        .into_iter()
        .enumerate()
    {
        let writer = Writer {
            url: url.clone(),
            rng: StdRng::seed_from_u64(
                seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)),
            ),
            stats: stats.clone(),
            events: events.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(writer.run(kind));
    }
    while tasks.join_next().await.is_some() {}
}

/// A connection of the workload. Its waits for metadata locks are bounded: a writer waiting on
/// its own other connection through a queued `ALTER TABLE` must not hang the run.
async fn connect(url: &str) -> SqlResult<MySqlConnection> {
    let mut c = MySqlConnection::connect(url).await?;
    exec_raw(&mut c, "SET SESSION lock_wait_timeout = 30").await?;
    Ok(c)
}

struct Writer {
    url: String,
    rng: StdRng,
    stats: Arc<Stats>,
    events: Arc<EventLog>,
    stop: CancellationToken,
}

type SqlResult<T> = Result<T, sqlx::Error>;

/// A value bound to a statement.
#[derive(Debug, Clone)]
enum Arg {
    Int(i32),
    Text(String),
}

/// Runs one statement and returns the rows it changed. Boxed as a `Send` future: spawned tasks
/// that await sqlx's generic `execute` directly do not compile (rustc cannot prove them `Send`
/// for every lifetime).
fn exec<'a>(
    c: &'a mut MySqlConnection,
    sql: &'a str,
    args: Vec<Arg>,
) -> Pin<Box<dyn Future<Output = SqlResult<u64>> + Send + 'a>> {
    Box::pin(async move {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        Ok(query.execute(c).await?.rows_affected())
    })
}

/// A statement the prepared-statement protocol does not take (`LOCK TABLES`, `BEGIN`, ...).
fn exec_raw<'a>(
    c: &'a mut MySqlConnection,
    sql: &'a str,
) -> Pin<Box<dyn Future<Output = SqlResult<()>> + Send + 'a>> {
    Box::pin(async move {
        // A plain `&str` has no arguments: sent as a text query, not prepared.
        sqlx::Executor::execute(c, sql).await?;
        Ok(())
    })
}

impl Writer {
    async fn run(mut self, kind: &'static str) {
        let mut conn: Option<MySqlConnection> = None;
        let mut round: u64 = 0;
        // The table locks take turns; the first of each comes early, so a short run has them all.
        let mut pause = match kind {
            "table_lock" => Duration::from_secs(8),
            _ => Duration::ZERO,
        };
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            if conn.is_none() {
                conn = connect(&self.url).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                pause = Duration::from_millis(500);
                continue;
            };
            let outcome = match kind {
                "hot" => self.hot(c).await,
                "burst" => self.burst(c).await,
                "long_tx" => self.long_tx(c).await,
                "lock_wait" => self.lock_wait(c).await,
                _ => self.table_lock(c, round).await,
            };
            round += 1;
            if let Err(e) = outcome {
                self.stats.failed();
                tracing::debug!(kind, error = %e, "workload statement failed");
                // The connection may be dead (database restarted): start over on a new one.
                conn = None;
            }
            pause = match kind {
                "hot" => self.millis(100, 250),
                "burst" => self.millis(2000, 5000),
                "long_tx" => self.millis(1000, 4000),
                "lock_wait" => self.millis(6000, 15000),
                _ => self.millis(8000, 16000),
            };
        }
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(low..=high))
    }

    fn seeded_id(&mut self) -> i32 {
        self.rng.random_range(SEEDED_IDS)
    }

    /// Any product the suite knows exists: seeded or inserted by a writer.
    fn any_id(&mut self) -> i32 {
        let lowest = self.stats.lowest_id();
        if lowest < 0 && self.rng.random_bool(0.5) {
            self.rng.random_range(lowest..=-1)
        } else {
            self.seeded_id()
        }
    }

    async fn hot(&mut self, c: &mut MySqlConnection) -> SqlResult<()> {
        // Two products take all the heat; the direction keeps prices positive.
        let id = if self.rng.random_bool(0.7) { 7 } else { 13 };
        let statement = if self.rng.random_bool(0.5) {
            "UPDATE product SET price = price + 0.01 WHERE id = ?"
        } else {
            "UPDATE product SET price = IF(price < 5.00, price + 0.01, price - 0.01) WHERE id = ?"
        };
        let changed = exec(c, statement, vec![Arg::Int(id)]).await?;
        self.stats.done("hot", changed, &[]);
        Ok(())
    }

    async fn burst(&mut self, c: &mut MySqlConnection) -> SqlResult<()> {
        let n = self.rng.random_range(20..=200);
        if self.rng.random_bool(0.5) {
            let ids = self.stats.new_ids(n);
            let mut args = Vec::new();
            for &id in &ids {
                let category = self.rng.random_range(1..=8);
                let cents = self.rng.random_range(100..=10_000);
                args.extend([
                    Arg::Int(id),
                    Arg::Text(format!("Chaos_{}", -id)),
                    Arg::Text(format!("Cat_{category}")),
                    Arg::Text(format!("{}.{:02}", cents / 100, cents % 100)),
                ]);
            }
            let sql = format!(
                "INSERT INTO product (id, name, category, price) VALUES {}",
                vec!["(?, ?, ?, ?)"; ids.len()].join(", ")
            );
            // Noted before the statement runs: its rows are stamped with its start.
            self.events.note(
                "workload:burst",
                &format!(
                    "inserting ids {}..={} in one statement",
                    ids[ids.len() - 1],
                    ids[0]
                ),
            );
            let changed = exec(c, &sql, args).await?;
            self.stats.done("burst", changed, &ids);
        } else {
            let from = self.any_id();
            self.events.note(
                "workload:burst",
                &format!("updating ids {from}..={} in one statement", from + n),
            );
            let changed = exec(
                c,
                "UPDATE product SET price = price + 0.01 WHERE id BETWEEN ? AND ?",
                vec![Arg::Int(from), Arg::Int(from + n)],
            )
            .await?;
            self.stats.done("burst", changed, &[]);
        }
        Ok(())
    }

    async fn long_tx(&mut self, c: &mut MySqlConnection) -> SqlResult<()> {
        let ids = self.stats.new_ids(self.rng.random_range(1..=4));
        let others: Vec<i32> = (0..self.rng.random_range(1..=3))
            .map(|_| self.any_id())
            .collect();
        let hold = self.millis(1000, 8000);
        let roll_back = self.rng.random_bool(0.15);
        // On an error the caller drops the connection, which rolls the transaction back.
        exec_raw(c, "BEGIN").await?;
        self.events.note(
            "workload:long_tx",
            &format!(
                "begins: inserts {ids:?}, updates {others:?}, open for {hold:?}, then {}",
                if roll_back { "rolls back" } else { "commits" }
            ),
        );
        let mut changed = 0;
        for id in ids.clone() {
            changed += exec(
                c,
                "INSERT INTO product (id, name, category, price) VALUES (?, ?, 'Cat_5', 10.00)",
                vec![Arg::Int(id), Arg::Text(format!("Chaos_{}", -id))],
            )
            .await?;
        }
        for id in others {
            changed += exec(
                c,
                "UPDATE product SET price = price + 0.01 WHERE id = ?",
                vec![Arg::Int(id)],
            )
            .await?;
        }
        tokio::time::sleep(hold).await;
        for id in ids.clone() {
            changed += exec(
                c,
                "UPDATE product SET name = ?, price = price + 1 WHERE id = ?",
                vec![Arg::Text(format!("Chaos_{}_long", -id)), Arg::Int(id)],
            )
            .await?;
        }
        if roll_back {
            exec_raw(c, "ROLLBACK").await?;
            self.stats
                .rolled_back
                .lock()
                .expect("stats")
                .extend_from_slice(&ids);
            self.stats.done("long_tx", 0, &[]);
        } else {
            exec_raw(c, "COMMIT").await?;
            self.events
                .note("workload:long_tx", &format!("committed inserts {ids:?}"));
            self.stats.done("long_tx", changed, &ids);
        }
        Ok(())
    }

    /// The interleaving of issue 15's first defect: an old transaction's row must not be skipped
    /// while newer transactions wait on each other's locks.
    async fn lock_wait(&mut self, a: &mut MySqlConnection) -> SqlResult<()> {
        let mut b = connect(&self.url).await?;
        let id = self.stats.new_ids(1)[0];
        let contested = self.seeded_id();
        let b_hold = self.millis(2000, 5000);
        let a_extra = self.millis(1000, 4000);

        exec_raw(a, "BEGIN").await?;
        exec(
            a,
            "INSERT INTO product (id, name, category, price) VALUES (?, ?, 'Cat_1', 5.00)",
            vec![Arg::Int(id), Arg::Text(format!("Chaos_{}_old_tx", -id))],
        )
        .await?;
        exec_raw(&mut b, "BEGIN").await?;
        exec(
            &mut b,
            "UPDATE product SET price = price + 0.01 WHERE id = ?",
            vec![Arg::Int(contested)],
        )
        .await?;
        self.events.note(
            "workload:lock_wait",
            &format!(
                "A holds new row {id} open, B holds product {contested} for {b_hold:?}, C waits on B"
            ),
        );
        let url = self.url.clone();
        let stats = self.stats.clone();
        let waiter = tokio::spawn(async move {
            let outcome = async {
                let mut c = connect(&url).await?;
                let changed = exec(
                    &mut c,
                    "UPDATE product SET price = price + 0.02 WHERE id = ?",
                    vec![Arg::Int(contested)],
                )
                .await?;
                let _ = c.close().await;
                SqlResult::Ok(changed)
            }
            .await;
            match outcome {
                Ok(changed) => stats.done("lock_wait", changed, &[]),
                Err(_) => stats.failed(),
            }
        });
        tokio::time::sleep(b_hold).await;
        exec_raw(&mut b, "COMMIT").await?;
        let _ = b.close().await;
        self.stats.done("lock_wait", 1, &[]);
        // C may also queue behind an `ALTER TABLE` that waits for A: A does not wait for C
        // longer than a moment, or the three would wait for each other forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        tokio::time::sleep(a_extra).await;
        exec_raw(a, "COMMIT").await?;
        self.stats.done("lock_wait", 1, &[id]);
        Ok(())
    }

    async fn table_lock(&mut self, c: &mut MySqlConnection, round: u64) -> SqlResult<()> {
        let hold = self.millis(1000, 3000);
        match round % 3 {
            0 => {
                self.events.note(
                    "workload:lock_tables",
                    &format!("LOCK TABLES product WRITE for {hold:?}"),
                );
                exec_raw(c, "LOCK TABLES product WRITE").await?;
                let id = self.seeded_id();
                let changed = exec(
                    c,
                    "UPDATE product SET price = price + 0.01 WHERE id = ?",
                    vec![Arg::Int(id)],
                )
                .await?;
                tokio::time::sleep(hold).await;
                exec_raw(c, "UNLOCK TABLES").await?;
                self.stats.done("lock_tables", changed, &[]);
            }
            1 => {
                self.events.note(
                    "workload:mdl_wait",
                    &format!(
                        "open transaction read product; ALTER TABLE waits on it for {hold:?}; the rest queues behind"
                    ),
                );
                exec_raw(c, "BEGIN").await?;
                exec(c, "SELECT COUNT(*) FROM product WHERE id = 1", Vec::new()).await?;
                let url = self.url.clone();
                let alter_sql = format!("ALTER TABLE product COMMENT = 'chaos {round}'");
                let alter = tokio::spawn(async move {
                    let mut c = connect(&url).await?;
                    exec_raw(&mut c, &alter_sql).await?;
                    let _ = c.close().await;
                    SqlResult::Ok(())
                });
                tokio::time::sleep(hold).await;
                exec_raw(c, "COMMIT").await?;
                match alter.await {
                    Ok(Ok(())) => self.stats.done("mdl_wait", 0, &[]),
                    _ => self.stats.failed(),
                }
            }
            _ => {
                self.events.note(
                    "workload:global_read_lock",
                    &format!("FLUSH TABLES WITH READ LOCK for {hold:?}"),
                );
                exec_raw(c, "FLUSH TABLES WITH READ LOCK").await?;
                tokio::time::sleep(hold).await;
                exec_raw(c, "UNLOCK TABLES").await?;
                self.stats.done("global_read_lock", 0, &[]);
            }
        }
        Ok(())
    }
}
