//! The hostile events, one after another at seeded random moments: every kind once first (in a
//! seeded order), then kinds at random until the run's time is up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::cluster::{wait_for, Cluster, REGULAR_SLOTS, SCALE_SLOTS};
use crate::eventlog::EventLog;
use crate::logdir::Blocker;
use crate::procs::{Shared, Signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ProducerKill,
    ConsumerKill,
    ConsumerScale,
    BrokerRestart,
    DatabaseRestart,
    RegistryDown,
    LogDirUnwritable,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Self::ProducerKill,
        Self::ConsumerKill,
        Self::ConsumerScale,
        Self::BrokerRestart,
        Self::DatabaseRestart,
        Self::RegistryDown,
        Self::LogDirUnwritable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::ProducerKill => "producer_kill",
            Self::ConsumerKill => "consumer_kill",
            Self::ConsumerScale => "consumer_scale",
            Self::BrokerRestart => "broker_restart",
            Self::DatabaseRestart => "database_restart",
            Self::RegistryDown => "registry_down",
            Self::LogDirUnwritable => "log_dir_unwritable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == text)
    }
}

/// How many events of each kind were injected (completely: the disturbance and the recovery).
pub type Injected = BTreeMap<Kind, u32>;

pub struct Injector<'a> {
    pub cluster: &'a Cluster,
    pub events: Arc<EventLog>,
    pub blocker: Option<&'a Blocker>,
    pub rng: StdRng,
    pub kinds: Vec<Kind>,
}

impl Injector<'_> {
    pub fn new<'a>(
        cluster: &'a Cluster,
        events: Arc<EventLog>,
        blocker: Option<&'a Blocker>,
        seed: u64,
        kinds: Vec<Kind>,
    ) -> Injector<'a> {
        Injector {
            cluster,
            events,
            blocker,
            rng: StdRng::seed_from_u64(seed ^ 0x00C0_FFEE),
            kinds,
        }
    }

    /// Injects events until `until` (each kind at least once even if that takes longer: a
    /// short run still covers every kind) or `stop`.
    pub async fn run(&mut self, until: Instant) -> Injected {
        let mut injected = Injected::new();
        let mut failed: BTreeMap<Kind, u32> = BTreeMap::new();
        let mut first_round = self.kinds.clone();
        first_round.shuffle(&mut self.rng);
        first_round.reverse();
        // Let the workload get going first.
        let mut gap = Duration::from_secs(self.rng.random_range(5..=10));
        loop {
            tokio::time::sleep(gap).await;
            let kind = match first_round.pop() {
                Some(kind) => kind,
                None if Instant::now() < until => *self
                    .kinds
                    .choose(&mut self.rng)
                    .expect("at least one event kind"),
                None => break,
            };
            match self.inject(kind).await {
                Ok(()) => *injected.entry(kind).or_default() += 1,
                Err(e) => {
                    self.events
                        .note(kind.label(), &format!("could not be injected: {e:#}"));
                    // A kind not injected yet gets two more tries (e.g. its process was
                    // restarting just then), after the rest of the first round.
                    let tries = failed.entry(kind).or_insert(0u32);
                    *tries += 1;
                    if !injected.contains_key(&kind) && *tries < 3 {
                        first_round.insert(0, kind);
                    }
                }
            }
            gap = Duration::from_millis(self.rng.random_range(2000..=10000));
            if first_round.is_empty() && Instant::now() + gap >= until {
                break;
            }
        }
        injected
    }

    fn pause(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(low_ms..=high_ms))
    }

    fn note(&self, kind: Kind, detail: &str) {
        self.events.note(kind.label(), detail);
    }

    async fn inject(&mut self, kind: Kind) -> anyhow::Result<()> {
        match kind {
            Kind::ProducerKill => {
                let down = self.pause(500, 4000);
                let producer = self.cluster.producer.clone();
                self.kill_and_restart(kind, &producer, Signal::Kill, down)
                    .await
            }
            Kind::ConsumerKill => {
                let mut running = Vec::new();
                for (slot, proc) in &self.cluster.consumers {
                    if proc.lock().await.is_running() {
                        running.push(*slot);
                    }
                }
                let slot = *running
                    .choose(&mut self.rng)
                    .ok_or_else(|| anyhow::anyhow!("no consumer is running"))?;
                let down = self.pause(500, 4000);
                let consumer = self.cluster.consumer(slot);
                self.kill_and_restart(kind, &consumer, Signal::Kill, down)
                    .await
            }
            Kind::ConsumerScale => self.scale().await,
            Kind::BrokerRestart => {
                let signal = *[Signal::Term, Signal::Kill]
                    .choose(&mut self.rng)
                    .expect("two");
                let down = self.pause(1000, 5000);
                let broker = self.cluster.broker.clone();
                self.kill_and_restart(kind, &broker, signal, down).await?;
                wait_for(
                    "the broker to listen again",
                    Duration::from_secs(60),
                    || self.cluster.broker_up(),
                )
                .await
            }
            Kind::DatabaseRestart => {
                let signal = *[Signal::Term, Signal::Kill]
                    .choose(&mut self.rng)
                    .expect("two");
                let down = self.pause(1000, 5000);
                let database = self.cluster.database.clone();
                self.kill_and_restart(kind, &database, signal, down).await?;
                let started = Instant::now();
                wait_for(
                    "the database to accept connections again",
                    Duration::from_secs(120),
                    || self.cluster.database_up(),
                )
                .await?;
                self.note(
                    kind,
                    &format!(
                        "database answers again after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
            Kind::RegistryDown => {
                let down = self.pause(3000, 10000);
                let registry = self.cluster.registry.clone();
                self.kill_and_restart(kind, &registry, Signal::Term, down)
                    .await
            }
            Kind::LogDirUnwritable => {
                let blocker = self.blocker.ok_or_else(|| {
                    anyhow::anyhow!("no method to make a log directory unwritable works here")
                })?;
                // A consumer that owns partitions, so that it has something to write.
                let mut busy = Vec::new();
                for slot in blocker.slots() {
                    if self
                        .cluster
                        .assignment(slot)
                        .await
                        .is_some_and(|p| !p.is_empty())
                    {
                        busy.push(slot);
                    }
                }
                let candidates = if busy.is_empty() {
                    blocker.slots()
                } else {
                    busy
                };
                let slot = *candidates.choose(&mut self.rng).expect("a slot");
                let hold = self.pause(3000, 8000);
                let what = blocker.block(slot)?;
                self.note(kind, &format!("{what}, for {hold:?}"));
                tokio::time::sleep(hold).await;
                blocker.unblock(slot)?;
                self.note(kind, &format!("consumer_{slot}'s directory writable again"));
                Ok(())
            }
        }
    }

    /// Signals `proc`, waits for it to exit, keeps it down for `down`, starts it again.
    async fn kill_and_restart(
        &mut self,
        kind: Kind,
        proc: &Shared,
        signal: Signal,
        down: Duration,
    ) -> anyhow::Result<()> {
        let mut p = proc.lock().await;
        let name = p.name.clone();
        let Some(pid) = p.signal(signal)? else {
            // Not running right now (crashed and waiting for its restart): start it, no event.
            p.start()?;
            anyhow::bail!("{name} was not running");
        };
        let how = exit_text(p.wait_exit(Duration::from_secs(60)).await);
        self.note(
            kind,
            &format!(
                "{} {name} (pid {pid}): {how}; down for {down:?}",
                signal.name()
            ),
        );
        drop(p);
        tokio::time::sleep(down).await;
        let pid = proc.lock().await.start()?;
        self.note(kind, &format!("started {name} again (pid {pid})"));
        Ok(())
    }

    /// SIGTERM one of the five, start a sixth and a seventh; later SIGTERM those two and start
    /// the first again.
    async fn scale(&mut self) -> anyhow::Result<()> {
        let kind = Kind::ConsumerScale;
        let slot = *REGULAR_SLOTS.choose(&mut self.rng).expect("five slots");
        let hold = self.pause(15000, 30000);
        let leaving = self.cluster.consumer(slot);
        let pid = leaving.lock().await.signal(Signal::Term)?;
        for extra in SCALE_SLOTS {
            self.cluster.consumer(extra).lock().await.start()?;
        }
        self.note(
            kind,
            &format!(
                "SIGTERM consumer_{slot} (pid {pid:?}), started consumer_6 and consumer_7; {hold:?} like that"
            ),
        );
        let exit = leaving
            .lock()
            .await
            .wait_exit(Duration::from_secs(60))
            .await;
        self.note(kind, &format!("consumer_{slot}: {}", exit_text(exit)));
        tokio::time::sleep(hold).await;
        self.note(
            kind,
            &format!(
                "before scaling back: {}; {}",
                self.cluster.assignments_text().await,
                self.cluster.group_text().await
            ),
        );
        for extra in SCALE_SLOTS {
            self.cluster
                .consumer(extra)
                .lock()
                .await
                .signal(Signal::Term)?;
        }
        for extra in SCALE_SLOTS {
            let exit = self
                .cluster
                .consumer(extra)
                .lock()
                .await
                .wait_exit(Duration::from_secs(60))
                .await;
            self.note(
                kind,
                &format!("SIGTERM consumer_{extra}: {}", exit_text(exit)),
            );
        }
        leaving.lock().await.start()?;
        self.note(kind, &format!("started consumer_{slot} again"));
        Ok(())
    }
}

fn exit_text(exit: Option<(std::process::ExitStatus, bool)>) -> String {
    match exit {
        Some((status, true)) => format!("{status} (SIGKILL after 60 s)"),
        Some((status, false)) => status.to_string(),
        None => "exited (reaped by the supervisor)".into(),
    }
}
