//! The fault-injection suite: the whole native pipeline (tansu with sqlite storage, MariaDB,
//! the dev schema registry, product-updater, producer, five consumers — all as real processes,
//! on ports and in folders of the suite's own, never the shared test bed) under a hostile
//! workload and hostile events, then a check from the database and the log files alone.
//!
//! ```sh
//! cargo run --release -p e2e --bin chaos -- --minutes 30            # by hand
//! cargo run -p e2e --bin chaos -- --minutes 2.5 --seed 1 --require-every-event   # CI
//! ```
//!
//! Options (all optional):
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `--minutes M` | how long the workload and the events run (start-up and drain come on top) | `5` |
//! | `--seed S` | seeds the event schedule, outage lengths and the workload | random, printed |
//! | `--port-base P` | the suite's ports: updater P+1, producer P+2, MariaDB P+6, consumer_N P+10+N, registry P+81, broker P+92 | `CHAOS_PORT_BASE` or `19400` |
//! | `--updates-per-second N` | product-updater's rate | `100` |
//! | `--events a,b` | only these event kinds (`producer_kill`, `consumer_kill`, `consumer_scale`, `broker_restart`, `database_restart`, `registry_down`, `log_dir_unwritable`) | all |
//! | `--env KEY=VALUE` | an environment variable for the updater, the producer and the consumers (repeatable), e.g. `CONSUMER_KAFKA_DEBUG=cgrp` | none |
//! | `--require-every-event` | fail when an event kind could not be injected (CI) | off |
//! | `--drain-seconds N` | after the workload stops, how long the logs may take to reach the table's final state | `180` |
//! | `--work-dir DIR` | the run's folder | `.testbed/chaos/run-<seed>-<time>` |
//! | `--no-build` | do not run `cargo build` for the services first | builds |
//! | `--verbose` | also print workload notes (always in `events.log`) | off |
//!
//! The run's folder keeps `events.log` (every event with its time), `report.txt` (every finding),
//! `logs/<process>.log`, `consumer_logs/` and the broker's `tansu.db`. Exit status: 0 when nothing
//! was lost, duplicated or reordered (and every line is valid), 1 otherwise, 2 when the suite
//! itself could not run.

mod check;
mod cluster;
mod eventlog;
mod events;
mod group;
mod logdir;
mod procs;
mod topic;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::CancellationToken;
use rand::Rng;
use sqlx::{Connection, Row};

use cluster::{Cluster, Layout, Ports, Programs, REGULAR_SLOTS, SCALE_SLOTS};
use eventlog::EventLog;
use events::Kind;
use procs::Signal;

const USAGE: &str = "\
usage: chaos [--minutes M] [--seed S] [--port-base P] [--updates-per-second N]
             [--events kind,kind] [--env KEY=VALUE]... [--require-every-event] [--drain-seconds N]
             [--work-dir DIR] [--no-build] [--verbose]

Runs the whole pipeline (own tansu, MariaDB, registry, updater, producer, 5 consumers) under a
hostile workload and hostile events for M minutes (default 5), then checks from the database and
the consumer logs alone that nothing was lost, duplicated or reordered. Event kinds:
producer_kill, consumer_kill, consumer_scale, broker_restart, database_restart, registry_down,
log_dir_unwritable. Ports: updater P+1, producer P+2, MariaDB P+6, consumer_N P+10+N, registry
P+81, broker P+92 (P = CHAOS_PORT_BASE or 19400). Exit status 0 pass, 1 findings, 2 could not run.";

struct Options {
    minutes: f64,
    seed: u64,
    port_base: u16,
    updates_per_second: u32,
    /// `--env KEY=VALUE`: for the updater, the producer and the consumers.
    service_env: Vec<(String, String)>,
    kinds: Vec<Kind>,
    require_every_event: bool,
    drain: Duration,
    work_dir: Option<PathBuf>,
    build: bool,
    verbose: bool,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Self {
            minutes: 5.0,
            seed: rand::rng().random_range(1..1_000_000),
            port_base: match std::env::var("CHAOS_PORT_BASE") {
                Ok(v) => v
                    .parse()
                    .with_context(|| format!("CHAOS_PORT_BASE={v:?} is not a port"))?,
                Err(_) => 19400,
            },
            updates_per_second: 100,
            service_env: Vec::new(),
            kinds: Kind::ALL.to_vec(),
            require_every_event: false,
            drain: Duration::from_secs(180),
            work_dir: None,
            build: true,
            verbose: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value (try --help)"))
            };
            match arg.as_str() {
                "--minutes" => {
                    let v = value("--minutes")?;
                    options.minutes = v
                        .parse()
                        .ok()
                        .filter(|m: &f64| *m > 0.0 && m.is_finite())
                        .with_context(|| format!("--minutes {v:?}: expected a positive number"))?;
                }
                "--seed" => {
                    let v = value("--seed")?;
                    options.seed = v
                        .parse()
                        .with_context(|| format!("--seed {v:?}: expected a whole number"))?;
                }
                "--port-base" => {
                    let v = value("--port-base")?;
                    options.port_base = v
                        .parse()
                        .ok()
                        .filter(|p| (1024..=65000).contains(p))
                        .with_context(|| format!("--port-base {v:?}: expected 1024 to 65000"))?;
                }
                "--updates-per-second" => {
                    let v = value("--updates-per-second")?;
                    options.updates_per_second = v.parse().with_context(|| {
                        format!("--updates-per-second {v:?}: expected a whole number")
                    })?;
                }
                "--events" => {
                    let v = value("--events")?;
                    options.kinds = v
                        .split(',')
                        .map(|k| {
                            Kind::parse(k.trim()).with_context(|| {
                                format!(
                                    "--events: unknown kind {k:?}; kinds: {}",
                                    Kind::ALL.map(Kind::label).join(", ")
                                )
                            })
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--env" => {
                    let v = value("--env")?;
                    let (key, val) = v
                        .split_once('=')
                        .filter(|(k, _)| !k.is_empty())
                        .with_context(|| format!("--env {v:?}: expected KEY=VALUE"))?;
                    options.service_env.push((key.to_owned(), val.to_owned()));
                }
                "--require-every-event" => options.require_every_event = true,
                "--drain-seconds" => {
                    let v = value("--drain-seconds")?;
                    options.drain = Duration::from_secs(v.parse().with_context(|| {
                        format!("--drain-seconds {v:?}: expected a whole number")
                    })?);
                }
                "--work-dir" => options.work_dir = Some(PathBuf::from(value("--work-dir")?)),
                "--no-build" => options.build = false,
                "--verbose" => options.verbose = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?} (try --help)"),
            }
        }
        Ok(options)
    }
}

fn main() -> std::process::ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: the suite could not run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Builds the services with this program's own profile, so the suite runs what was just built.
fn build_services(bin_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // Without what `cargo run` put in this program's environment (its package's variables, its
    // library path): with them the nested build fingerprints differently and rebuilds crates
    // that the next ordinary build rebuilds again.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let kept = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&key.as_ref())
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_NET_")
            || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_HTTP_")
            || key.starts_with("CARGO_TERM_");
        if (key.starts_with("CARGO_") && !kept) || key == "LD_LIBRARY_PATH" {
            command.env_remove(key.as_ref());
        }
    }
    command.current_dir(repo_root()).args([
        "build",
        "-p",
        "product-updater",
        "-p",
        "producer",
        "-p",
        "consumer",
        "-p",
        "dev-schema-registry",
    ]);
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    let status = command.status().context("run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of the services failed");
    Ok(())
}

async fn run(options: Options) -> anyhow::Result<bool> {
    let repo = repo_root();
    let chaos_root = repo.join(".testbed/chaos");
    std::fs::create_dir_all(&chaos_root)?;
    // One run per checkout at a time: a second one would take the first one's processes for
    // leftovers.
    let lock = std::fs::File::create(chaos_root.join(".lock"))?;
    #[allow(clippy::incompatible_msrv)]
    if lock.try_lock().is_err() {
        bail!(
            "another chaos run is active in this checkout ({})",
            chaos_root.display()
        );
    }
    clean_earlier_runs(&chaos_root);

    let ports = Ports {
        base: options.port_base,
    };
    for (name, port) in ports.all() {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} ({name}) is in use; pick other ports with --port-base or CHAOS_PORT_BASE");
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the program's folder")?
        .to_owned();
    if options.build {
        build_services(&bin_dir)?;
    }
    let programs = Programs::find(&bin_dir)?;

    let run_id = format!(
        "run-{}-{}",
        options.seed,
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    );
    let work = options
        .work_dir
        .clone()
        .unwrap_or_else(|| chaos_root.join(&run_id));
    let layout = Layout::new(&work, ports.base);
    for dir in [
        &layout.work,
        &layout.process_logs,
        &layout.pids,
        &layout.consumer_logs,
    ] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::create_dir_all(layout.watermark.parent().expect("watermark folder"))?;
    let events = Arc::new(EventLog::create(&work.join("events.log"), options.verbose)?);
    let kinds_text = options
        .kinds
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join(",");
    events.note(
        "phase",
        &format!(
            "seed {} minutes {} ports {}.. updater {} changes/s, events {kinds_text}; folder {}",
            options.seed,
            options.minutes,
            ports.base,
            options.updates_per_second,
            work.display()
        ),
    );

    let root = cluster::running_as_root();
    let mut blocker = if options.kinds.contains(&Kind::LogDirUnwritable) {
        let dirs = REGULAR_SLOTS
            .iter()
            .map(|&slot| (slot, layout.slot_dir(slot)))
            .collect();
        match logdir::Blocker::prepare(dirs, root) {
            Ok(b) => {
                events.note(
                    "phase",
                    &format!(
                        "log directory event: method {} on the directories of consumer_1..5",
                        b.method.label()
                    ),
                );
                Some(b)
            }
            Err(e) => {
                events.note(
                    "note",
                    &format!("log_dir_unwritable cannot be injected: {e:#}"),
                );
                None
            }
        }
    } else {
        None
    };

    let cluster = Cluster::new(
        &programs,
        ports,
        layout.clone(),
        &run_id,
        options.updates_per_second,
        &options.service_env,
        &repo,
    );
    let interrupted = CancellationToken::new();
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("chaos: interrupted; stopping everything");
                interrupted.cancel();
            }
        });
    }

    let outcome = tokio::select! {
        outcome = phases(&options, &cluster, &programs, blocker.as_ref(), &events) => outcome,
        _ = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    events.note("phase", "stopping everything");
    cluster.stop_all().await;
    if let Some(b) = blocker.as_mut() {
        if let Err(e) = b.release() {
            events.note(
                "note",
                &format!("could not release the consumers' tmpfs: {e:#}"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&layout.database_dir);
    let outcome = outcome?;
    verdict(&options, &cluster, &events, outcome).await
}

/// Unmounts, kills and removes what earlier runs left (their folders are kept only until the
/// next run, like `scripts/e2e-native.sh` does).
fn clean_earlier_runs(chaos_root: &Path) {
    logdir::unmount_leftovers(chaos_root);
    let Ok(entries) = std::fs::read_dir(chaos_root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("run-") {
            continue;
        }
        for killed in procs::kill_leftovers(&entry.path().join("pids"), &name) {
            eprintln!("chaos: killed {killed}, left running by {name}");
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// What the run produced, for the verdict.
struct Outcome {
    stats: Arc<workload::Stats>,
    injected: events::Injected,
    updater_changes: Option<u64>,
    db: Vec<check::DbRow>,
    drained: Option<Duration>,
    topic: Option<topic::TopicContents>,
    /// Partition -> the slots that reported owning it when the drain ended.
    owners: BTreeMap<i64, Vec<u32>>,
    unexpected_exits: BTreeMap<String, u32>,
}

async fn phases(
    options: &Options,
    cluster: &Cluster,
    programs: &Programs,
    blocker: Option<&logdir::Blocker>,
    events: &Arc<EventLog>,
) -> anyhow::Result<Outcome> {
    cluster.install_database(programs)?;
    events.note("phase", "starting the pipeline");
    cluster.start_all(events).await?;

    let supervisor_stop = CancellationToken::new();
    let supervisor = tokio::spawn(procs::supervise(
        cluster.all(),
        events.clone(),
        supervisor_stop.clone(),
    ));
    let stats = Arc::new(workload::Stats::new());
    let workload_stop = CancellationToken::new();
    let mut workload = tokio::spawn(workload::run(
        cluster.database_url(),
        options.seed,
        stats.clone(),
        events.clone(),
        workload_stop.clone(),
    ));
    let until = Instant::now() + Duration::from_secs_f64(options.minutes * 60.0);
    events.note(
        "phase",
        &format!("workload and events for {} minutes", options.minutes),
    );
    let mut injector = events::Injector::new(
        cluster,
        events.clone(),
        blocker,
        options.seed,
        options.kinds.clone(),
    );
    let injected = injector.run(until).await;
    if let Some(left) = until.checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }

    events.note("phase", "stopping the workload");
    workload_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(60), &mut workload)
        .await
        .is_err()
    {
        events.note(
            "note",
            "the workload did not finish within 60 s; aborting its writers (their connections close)",
        );
        workload.abort();
    }
    // Everything back to normal: five consumers, the others up, the log directory writable.
    if let Some(b) = blocker {
        b.unblock_all()?;
    }
    for slot in SCALE_SLOTS {
        cluster
            .consumer(slot)
            .lock()
            .await
            .stop(Signal::Term, Duration::from_secs(60))
            .await;
    }
    for proc in [
        &cluster.broker,
        &cluster.database,
        &cluster.registry,
        &cluster.producer,
    ] {
        proc.lock().await.start()?;
    }
    for slot in REGULAR_SLOTS {
        cluster.consumer(slot).lock().await.start()?;
    }
    cluster::wait_for(
        "the database after the workload",
        Duration::from_secs(120),
        || cluster.database_up(),
    )
    .await?;
    let updater_changes = updater_changes(cluster).await;
    cluster
        .updater
        .lock()
        .await
        .stop(Signal::Term, Duration::from_secs(60))
        .await;
    let db = tokio::time::timeout(
        Duration::from_secs(120),
        final_rows(&cluster.database_url()),
    )
    .await
    .context("reading the final table took over 120 s (a statement waits on a lock?)")??;
    events.note(
        "phase",
        &format!(
            "final table: {} products; waiting up to {:?} for the logs to reach it",
            db.len(),
            options.drain
        ),
    );

    let drain_started = Instant::now();
    let mut drained = None;
    let mut last_report = Instant::now();
    let inserted = stats.inserted.lock().expect("stats").clone();
    // Waiting ends early once nothing moved for a minute: what is missing then stays missing.
    let mut missing = usize::MAX;
    let mut moved = Instant::now();
    while drain_started.elapsed() < options.drain {
        let logs = check::read_logs(&cluster.layout.consumer_logs)?;
        let findings = check::analyze(&db, &logs, &[], &[]);
        if findings.lost.is_empty() {
            drained = Some(drain_started.elapsed());
            break;
        }
        if findings.lost.len() < missing {
            missing = findings.lost.len();
            moved = Instant::now();
        } else if moved.elapsed() > STALL {
            events.note(
                "phase",
                &format!("no progress for {STALL:?}: {missing} products stay behind"),
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            events.note(
                "phase",
                &format!(
                    "{} products not at their final version in the logs yet (e.g. {}); {}; {}",
                    findings.lost.len(),
                    findings.lost[0].detail,
                    cluster.assignments_text().await,
                    cluster.group_text().await
                ),
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let stalled = drained.is_none() && drain_started.elapsed() < options.drain;
    match drained {
        Some(d) => {
            events.note(
                "phase",
                &format!(
                    "the logs reached the final table in {:.1} s",
                    d.as_secs_f64()
                ),
            );
            // Room for late writes (duplicates) to land before the consumers stop.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        None => events.note(
            "phase",
            &format!(
                "the logs did not reach the final table ({}); assignments: {}; {}",
                if stalled {
                    format!("no progress for {STALL:?}")
                } else {
                    format!("within {:?}", options.drain)
                },
                cluster.assignments_text().await,
                cluster.group_text().await
            ),
        ),
    }
    // Who owns which partition now: a version in the topic but in no log, of a partition
    // nobody owns, points at the group rather than at a consumer.
    let mut owners: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for slot in REGULAR_SLOTS {
        for partition in cluster.assignment(slot).await.unwrap_or_default() {
            owners.entry(partition).or_default().push(slot);
        }
    }
    let unowned: Vec<i64> = (0..i64::from(cluster::PARTITIONS))
        .filter(|p| !owners.contains_key(p))
        .collect();
    let shared: BTreeMap<&i64, &Vec<u32>> = owners.iter().filter(|(_, s)| s.len() > 1).collect();
    if !unowned.is_empty() || !shared.is_empty() {
        events.note(
            "phase",
            &format!(
                "the group is not sound: partitions owned by no consumer {unowned:?}, by several {shared:?}"
            ),
        );
    }
    let logs = check::read_logs(&cluster.layout.consumer_logs)?;
    let rolled_back = stats.rolled_back.lock().expect("stats").clone();
    let topic = if check::analyze(&db, &logs, &inserted, &rolled_back).failed() {
        events.note(
            "phase",
            "findings: reading the topic back for the diagnosis",
        );
        match topic::read(
            &cluster.bootstrap(),
            &cluster.registry_url(),
            cluster::TOPIC,
            cluster::PARTITIONS,
        )
        .await
        {
            Ok(contents) => Some(contents),
            Err(e) => {
                events.note("note", &format!("could not read the topic back: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    supervisor_stop.cancel();
    let _ = supervisor.await;
    let mut unexpected_exits = BTreeMap::new();
    for proc in cluster.all() {
        let p = proc.lock().await;
        if p.unexpected_exits > 0 {
            unexpected_exits.insert(p.name.clone(), p.unexpected_exits);
        }
    }
    Ok(Outcome {
        stats,
        injected,
        updater_changes,
        db,
        drained,
        topic,
        owners,
        unexpected_exits,
    })
}

/// The updater's own count of applied changes (for the summary's change count only).
async fn updater_changes(cluster: &Cluster) -> Option<u64> {
    let text = cluster
        .http_text(cluster.ports.updater(), "/metrics")
        .await?;
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with("product_updater_updates_applied_total") {
            total += line.split_whitespace().last()?.parse::<f64>().ok()?;
        }
    }
    Some(total as u64)
}

/// Every row of the table, read once the writers and the updater have stopped.
async fn final_rows(url: &str) -> anyhow::Result<Vec<check::DbRow>> {
    let mut conn = sqlx::MySqlConnection::connect(url).await?;
    let rows = sqlx::query(
        "SELECT CAST(id AS SIGNED) AS id, name, category, CAST(price * 100 AS SIGNED) AS cents, \
                CAST(UNIX_TIMESTAMP(last_updated) * 1000000 AS SIGNED) AS micros \
           FROM product",
    )
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            Ok(check::DbRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                category: r.try_get("category")?,
                price_cents: r.try_get("cents")?,
                micros: r.try_get("micros")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

const SHOWN: usize = 20;
const STALL: Duration = Duration::from_secs(60);

async fn verdict(
    options: &Options,
    cluster: &Cluster,
    events: &EventLog,
    outcome: Outcome,
) -> anyhow::Result<bool> {
    let logs = check::read_logs(&cluster.layout.consumer_logs)?;
    let inserted = outcome.stats.inserted.lock().expect("stats").clone();
    let rolled_back = outcome.stats.rolled_back.lock().expect("stats").clone();
    let findings = check::analyze(&outcome.db, &logs, &inserted, &rolled_back);

    let mut report = String::new();
    let mut section = |title: &str, items: &[String]| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(report, "\n{title} ({}):", items.len());
        for item in items {
            let _ = writeln!(report, "  {item}");
        }
        eprintln!("\n{title} ({}):", items.len());
        for item in items.iter().take(SHOWN) {
            eprintln!("  {item}");
        }
        if items.len() > SHOWN {
            eprintln!("  ... {} more in report.txt", items.len() - SHOWN);
        }
    };
    section("invalid log lines", &findings.invalid);
    let lost: Vec<String> = findings
        .lost
        .iter()
        .map(|l| {
            let mut text = l.detail.clone();
            if let Some(micros) = l.micros {
                if let Some(topic) = &outcome.topic {
                    let _ = write!(text, "; {}", topic.describe(l.id, micros));
                    if let Some(copies) = topic.versions.get(&(l.id, micros)) {
                        for (partition, _) in copies {
                            let _ = match outcome.owners.get(&i64::from(*partition)) {
                                Some(slots) => write!(
                                    text,
                                    " (partition {partition} owned by {} at the end)",
                                    slots
                                        .iter()
                                        .map(|s| format!("consumer_{s}"))
                                        .collect::<Vec<_>>()
                                        .join(" and ")
                                ),
                                None => write!(
                                    text,
                                    " (partition {partition} owned by no consumer at the end)"
                                ),
                            };
                        }
                    }
                }
                if let Some(at) = chrono::DateTime::from_timestamp_micros(micros) {
                    let mut near = events.around(at, 15, 5);
                    near.sort_by_key(|e| (e.at - at).num_milliseconds().abs());
                    near.truncate(4);
                    near.sort_by_key(|e| e.at);
                    let near: Vec<String> = near
                        .iter()
                        .map(|e| {
                            format!("{} {}: {}", e.at.format("%H:%M:%S%.3f"), e.kind, e.detail)
                        })
                        .collect();
                    if !near.is_empty() {
                        let _ = write!(text, "; nearest events: [{}]", near.join(" / "));
                    }
                }
            }
            text
        })
        .collect();
    section("LOST", &lost);
    section("DUPLICATED", &findings.duplicated);
    section("OUT OF ORDER", &findings.out_of_order);
    section("MISMATCHED", &findings.mismatched);
    section("PHANTOM (logged, not in the table)", &findings.phantom);
    let exits: Vec<String> = outcome
        .unexpected_exits
        .iter()
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    section("processes that exited by themselves (restarted)", &exits);

    let missing_kinds: Vec<&str> = options
        .kinds
        .iter()
        .filter(|k| !outcome.injected.contains_key(k))
        .map(|k| k.label())
        .collect();
    let events_text = options
        .kinds
        .iter()
        .map(|k| {
            format!(
                "{}={}",
                k.label(),
                outcome.injected.get(k).copied().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let ops = outcome.stats.ops();
    let workload_text = workload::KINDS
        .iter()
        .map(|k| format!("{k}={}", ops.get(k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ");
    let writer_changes = outcome.stats.changes.load(Ordering::Relaxed);
    let changes = match outcome.updater_changes {
        Some(u) => format!(
            "{} (updater {u}, writers {writer_changes})",
            u + writer_changes
        ),
        None => format!("? (updater unknown, writers {writer_changes})"),
    };
    let failed = findings.failed();
    let events_failed = options.require_every_event && !missing_kinds.is_empty();
    let summary = format!(
        "chaos: seed={} minutes={} changes={changes} products={} log_lines={} events: {events_text} workload: {workload_text} | lost={} duplicated={} out_of_order={} mismatched={} phantom={} invalid_lines={} | drained={} {}",
        options.seed,
        options.minutes,
        findings.products,
        findings.lines,
        findings.lost.len(),
        findings.duplicate_copies,
        findings.out_of_order.len(),
        findings.mismatched.len(),
        findings.phantom.len(),
        findings.invalid.len(),
        outcome
            .drained
            .map(|d| format!("{:.0}s", d.as_secs_f64()))
            .unwrap_or_else(|| "no".into()),
        if failed || events_failed { "FAIL" } else { "PASS" }
    );
    let mut tail = String::new();
    let idle: Vec<&str> = workload::KINDS
        .iter()
        .filter(|k| !ops.contains_key(*k))
        .copied()
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            tail,
            "workload kinds that never completed (not a finding; see events.log): {}",
            idle.join(", ")
        );
    }
    if !missing_kinds.is_empty() {
        let _ = writeln!(
            tail,
            "event kinds NOT injected: {} (see events.log){}",
            missing_kinds.join(", "),
            if options.require_every_event {
                ""
            } else {
                " — not required in this run"
            }
        );
    }
    if let Some(topic) = &outcome.topic {
        let _ = writeln!(
            tail,
            "topic read back for the diagnosis: {} records, {} versions, {} undecodable",
            topic.records,
            topic.versions.len(),
            topic.undecodable
        );
    }
    let _ = writeln!(
        tail,
        "workload failures (statements or transactions the database refused or lost; not findings): {}",
        outcome.stats.failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(tail, "run folder: {}", cluster.layout.work.display());
    eprint!("\n{tail}");
    std::fs::write(
        cluster.layout.work.join("report.txt"),
        format!("{summary}\n{tail}{report}"),
    )?;
    println!("{summary}");
    Ok(!(failed || events_failed))
}
