//! What happened when: every injected event, workload disturbance (table locks, lock waits) and
//! unexpected exit, with its time since the start of the run and its wall-clock time, printed as
//! it happens and kept in `events.log` of the run's folder.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

pub struct EventLog {
    started: Instant,
    file: Mutex<File>,
    entries: Mutex<Vec<Entry>>,
    /// Print workload notes too (they are always in the file).
    verbose: bool,
}

impl EventLog {
    pub fn create(path: &Path, verbose: bool) -> std::io::Result<Self> {
        Ok(Self {
            started: Instant::now(),
            file: Mutex::new(File::create(path)?),
            entries: Mutex::new(Vec::new()),
            verbose,
        })
    }

    /// Records one line. `kind` is an event kind, `workload:<what>`, `exit`, `phase` or `note`.
    pub fn note(&self, kind: &str, detail: &str) {
        let at = Utc::now();
        let line = format!(
            "[+{:7.1}s {}] {kind}: {detail}",
            self.started.elapsed().as_secs_f64(),
            at.format("%H:%M:%S%.3f")
        );
        if self.verbose || !kind.starts_with("workload:") {
            eprintln!("{line}");
        }
        if let Ok(mut file) = self.file.lock() {
            let _ = writeln!(file, "{line}");
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(Entry {
                at,
                kind: kind.to_owned(),
                detail: detail.to_owned(),
            });
        }
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Entries from `before` before `at` to `after` after it: what may explain a finding.
    pub fn around(&self, at: DateTime<Utc>, before: i64, after: i64) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| {
                let d = (e.at - at).num_milliseconds();
                d >= -before * 1000 && d <= after * 1000 && e.kind != "phase"
            })
            .collect()
    }
}
