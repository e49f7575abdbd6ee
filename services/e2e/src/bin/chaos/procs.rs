//! The suite's own processes (broker, database, registry, updater, producer, consumers): started
//! as real programs in their own process groups, each with its own log file, signalled on
//! purpose by the events and restarted by the supervisor when they exit by themselves (as an
//! orchestrator with `restart: always` would).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::eventlog::EventLog;

/// The signals the suite sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Kill => "SIGKILL",
        }
    }
}

/// Every child carries `CHAOS_RUN=<run id>` in its environment, so that leftovers of a run that
/// was killed can be recognised (and only they) by the next run.
pub const RUN_MARKER_VAR: &str = "CHAOS_RUN";

/// One program the suite runs.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    pid_file: PathBuf,
    cwd: PathBuf,
    child: Option<Child>,
    /// The supervisor keeps it running while this is set.
    pub wanted: bool,
    pub starts: u32,
    pub unexpected_exits: u32,
    restart_at: Option<Instant>,
    backoff: Duration,
    started_at: Instant,
}

impl Proc {
    pub fn new(
        name: &str,
        program: &Path,
        args: Vec<OsString>,
        env: Vec<(String, String)>,
        log_dir: &Path,
        pid_dir: &Path,
        cwd: &Path,
    ) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            env,
            log: log_dir.join(format!("{name}.log")),
            pid_file: pid_dir.join(format!("{name}.pid")),
            cwd: cwd.to_owned(),
            child: None,
            wanted: false,
            starts: 0,
            unexpected_exits: 0,
            restart_at: None,
            backoff: Duration::from_secs(1),
            started_at: Instant::now(),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Starts the program (it is wanted from now on). Its output is appended to its log, after a
    /// line that says which start this is.
    pub fn start(&mut self) -> anyhow::Result<u32> {
        self.wanted = true;
        self.restart_at = None;
        if let Some(pid) = self.running_pid() {
            return Ok(pid);
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        writeln!(
            log,
            "===== chaos: start #{} of {} at {} =====",
            self.starts,
            self.name,
            chrono::Utc::now().format("%H:%M:%S%.3f")
        )?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(inherited_env())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the suite does not reach it; the suite
            // stops everything itself.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("start {} ({})", self.name, self.program.display()))?;
        let pid = child.id().unwrap_or(0);
        std::fs::write(
            &self.pid_file,
            format!("{pid}\n{}\n", self.program.display()),
        )?;
        self.child = Some(child);
        self.started_at = Instant::now();
        Ok(pid)
    }

    /// The pid, if the process has not exited (reaps it if it has, keeping the child's status
    /// for the supervisor).
    fn running_pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => child.id(),
            _ => None,
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.running_pid().is_some()
    }

    /// Sends `signal` on purpose: the supervisor will not restart it until [`Proc::start`].
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<Option<u32>> {
        self.wanted = false;
        let Some(pid) = self.running_pid() else {
            return Ok(None);
        };
        send_signal(pid, signal)?;
        Ok(Some(pid))
    }

    /// Waits up to `timeout` for the process to exit; then SIGKILLs it and waits for that.
    /// Returns the exit status and whether it had to be killed.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, bool)> {
        let child = self.child.as_mut()?;
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.ok().map(|s| (s, false)),
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await.ok().map(|s| (s, true))
            }
        };
        self.child = None;
        let _ = std::fs::remove_file(&self.pid_file);
        status
    }

    /// Signals `signal` and waits for the exit (SIGKILL after `timeout`).
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Option<(ExitStatus, bool)> {
        match self.signal(signal) {
            Ok(Some(_)) => self.wait_exit(timeout).await,
            _ => {
                self.child = None;
                None
            }
        }
    }

    /// One supervisor round: notices an exit nobody asked for and restarts the program after a
    /// backoff (1 s doubling to 8 s; back to 1 s once it ran for 30 s).
    pub fn supervise(&mut self, events: &EventLog) {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => {
                    if self.started_at.elapsed() > Duration::from_secs(30) {
                        self.backoff = Duration::from_secs(1);
                    }
                    return;
                }
                Ok(Some(status)) => {
                    self.child = None;
                    let _ = std::fs::remove_file(&self.pid_file);
                    if self.wanted {
                        self.unexpected_exits += 1;
                        events.note(
                            "exit",
                            &format!(
                                "{} exited by itself ({status}); restarting in {:?}; its last lines: {}",
                                self.name,
                                self.backoff,
                                last_lines(&self.log, 3)
                            ),
                        );
                        self.restart_at = Some(Instant::now() + self.backoff);
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(8));
                    }
                }
                Err(_) => return,
            }
        }
        if self.wanted && self.child.is_none() {
            match self.restart_at {
                Some(at) if Instant::now() < at => {}
                _ => {
                    if let Err(e) = self.start() {
                        events.note("exit", &format!("restarting {} failed: {e:#}", self.name));
                        self.restart_at = Some(Instant::now() + self.backoff);
                    }
                }
            }
        }
    }
}

/// What every child inherits from the suite's environment; everything else is set explicitly,
/// so a developer's `DATABASE_URL` or `TOPIC` cannot leak into the run.
fn inherited_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "LANG", "TZ"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
}

pub fn send_signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let flag = match signal {
        Signal::Term => "-TERM",
        Signal::Kill => "-KILL",
    };
    let status = std::process::Command::new("kill")
        .arg(flag)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill {flag} {pid} failed ({status})");
    Ok(())
}

/// The last `n` non-empty lines of a log, joined with ` | ` (for the event log).
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(8192);
    let text = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| strip_ansi(l))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A process the supervisor watches.
pub type Shared = Arc<Mutex<Proc>>;

/// Runs [`Proc::supervise`] on every process twice a second until `stop`; a process that an
/// event holds (locked) is skipped that round.
pub async fn supervise(procs: Vec<Shared>, events: Arc<EventLog>, stop: common::CancellationToken) {
    while !stop.is_cancelled() {
        for proc in &procs {
            if let Ok(mut proc) = proc.try_lock() {
                proc.supervise(&events);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Kills what a previous run recorded in `pid_dir` and left running (the suite itself was
/// killed): only processes whose environment carries that run's marker, so a recycled pid of
/// somebody else's process is never touched.
pub fn kill_leftovers(pid_dir: &Path, run_marker: &str) -> Vec<String> {
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir(pid_dir) else {
        return killed;
    };
    let needle = format!("{RUN_MARKER_VAR}={run_marker}");
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marked = environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes());
        if marked && send_signal(pid, Signal::Kill).is_ok() {
            killed.push(format!(
                "{} (pid {pid})",
                entry.file_name().to_string_lossy()
            ));
        }
        let _ = std::fs::remove_file(entry.path());
    }
    killed
}
