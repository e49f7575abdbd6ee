//! Slots: each running replica owns one directory `CONSUMER_LOGS_DIR/consumer_N/`.
//!
//! A replica claims the lowest free slot by taking an exclusive, non-blocking lock (`flock`) on
//! `consumer_N/.lock`. The kernel releases the lock when the process dies, however it dies
//! (SIGKILL included), so a restarted replica gets its slot back and `--scale consumer=7` just
//! works. The slot name doubles as the Kafka `group.instance.id` (static membership).

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Slot `consumer_N` (N ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u32);

impl Slot {
    pub const MAX: u32 = 9999;
    const PREFIX: &'static str = "consumer_";

    pub fn new(number: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&number).then_some(Self(number))
    }

    /// `consumer_3` or `3`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix(Self::PREFIX).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(digits.parse().ok()?)
    }

    pub fn number(self) -> u32 {
        self.0
    }

    /// `consumer_N`: the directory name and the `group.instance.id`.
    pub fn name(self) -> String {
        format!("{}{}", Self::PREFIX, self.0)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot {slot} is held by another running consumer (CONSUMER_SLOT={slot}); pick another slot or leave CONSUMER_SLOT unset to claim the lowest free one")]
    Held { slot: Slot },
    #[error("every slot consumer_1..consumer_{} under {dir} is held", Slot::MAX)]
    AllHeld { dir: PathBuf },
    #[error("cannot use slot directory {path} (CONSUMER_LOGS_DIR): {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A claimed slot. The lock lasts as long as this value (and at most as long as the process).
#[derive(Debug)]
pub struct SlotLease {
    slot: Slot,
    dir: PathBuf,
    _lock: File,
}

impl SlotLease {
    /// Claims `pinned`, or the lowest free slot under `logs_dir` when `pinned` is `None`.
    pub fn claim(logs_dir: &Path, pinned: Option<Slot>) -> Result<Self, SlotError> {
        match pinned {
            Some(slot) => Self::try_claim(logs_dir, slot)?.ok_or(SlotError::Held { slot }),
            None => {
                for number in 1..=Slot::MAX {
                    let slot = Slot(number);
                    if let Some(lease) = Self::try_claim(logs_dir, slot)? {
                        return Ok(lease);
                    }
                }
                Err(SlotError::AllHeld {
                    dir: logs_dir.to_owned(),
                })
            }
        }
    }

    /// `Ok(None)` when another process (or another lease in this process) holds `slot`.
    fn try_claim(logs_dir: &Path, slot: Slot) -> Result<Option<Self>, SlotError> {
        let dir = logs_dir.join(slot.name());
        let io = |source| SlotError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(io)?;
        // `File::try_lock` (flock, LOCK_EX | LOCK_NB) needs Rust 1.89; the workspace's
        // `rust-version` still says 1.85.
        #[allow(clippy::incompatible_msrv)]
        let locked = lock.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // For people looking at the directory: who holds it. Not used for locking.
        lock.set_len(0).map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Some(Self {
            slot,
            dir,
            _lock: lock,
        }))
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// `CONSUMER_LOGS_DIR/consumer_N`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    /// Held by tests that spawn a child process and by tests that release a lock and claim it
    /// again. A child starts with a copy of every open descriptor of this process, the lock
    /// files' included, until it execs (close-on-exec only closes them then). A slot released
    /// at that moment is still locked by the child for a while, so claiming it again would find
    /// it held: that failed once in CI.
    static NO_CHILD_SPAWNED: Mutex<()> = Mutex::new(());

    fn no_child_spawned() -> MutexGuard<'static, ()> {
        NO_CHILD_SPAWNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn slot_names_parse_both_ways() {
        assert_eq!(Slot::parse("consumer_3"), Slot::new(3));
        assert_eq!(Slot::parse("12"), Slot::new(12));
        assert_eq!(Slot::new(7).unwrap().to_string(), "consumer_7");
        assert_eq!(Slot::new(7).unwrap().name(), "consumer_7");
        for bad in [
            "",
            "consumer_",
            "consumer_0",
            "consumer_-1",
            "worker_1",
            "consumer_1x",
            "10000",
        ] {
            assert_eq!(Slot::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn claims_the_lowest_free_slot_and_gets_it_back_when_released() {
        let _no_child = no_child_spawned();
        let root = tempfile::tempdir().unwrap();
        let first = SlotLease::claim(root.path(), None).unwrap();
        let second = SlotLease::claim(root.path(), None).unwrap();
        let third = SlotLease::claim(root.path(), None).unwrap();
        assert_eq!(
            [first.slot(), second.slot(), third.slot()].map(Slot::number),
            [1, 2, 3]
        );
        assert!(root.path().join("consumer_2/.lock").exists());
        assert_eq!(second.dir(), root.path().join("consumer_2"));

        drop(second);
        let again = SlotLease::claim(root.path(), None).unwrap();
        assert_eq!(
            again.slot().number(),
            2,
            "a released slot is the lowest free one again"
        );
        let next = SlotLease::claim(root.path(), None).unwrap();
        assert_eq!(next.slot().number(), 4);
    }

    #[test]
    fn a_pinned_slot_that_is_held_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let pinned = SlotLease::claim(root.path(), Slot::new(5)).unwrap();
        assert_eq!(pinned.slot().number(), 5);
        let err = SlotLease::claim(root.path(), Slot::new(5)).unwrap_err();
        assert!(
            matches!(err, SlotError::Held { slot } if slot.number() == 5),
            "{err}"
        );
        assert!(
            err.to_string().contains("CONSUMER_SLOT=consumer_5"),
            "{err}"
        );
        // Pinning slot 5 does not take slot 1 from whoever claims next.
        assert_eq!(
            SlotLease::claim(root.path(), None).unwrap().slot().number(),
            1
        );
    }

    #[test]
    fn the_lock_is_held_by_the_process_until_it_exits() {
        // A child process holding the lock (flock(1)) makes the slot busy for us, and its death
        // releases it, however it dies.
        let _no_child = no_child_spawned();
        if std::process::Command::new("flock")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("flock(1) not installed; skipping the cross-process check");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("consumer_1")).unwrap();
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--no-fork"]) // the lock holder is the process we kill
            .arg(root.path().join("consumer_1/.lock"))
            .args(["sleep", "600"])
            .spawn()
            .unwrap();
        let lock_file = root.path().join("consumer_1/.lock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let held_elsewhere = loop {
            let probe = OpenOptions::new().write(true).open(&lock_file);
            if let Ok(probe) = probe {
                #[allow(clippy::incompatible_msrv)]
                let probed = probe.try_lock();
                if matches!(probed, Err(TryLockError::WouldBlock)) {
                    break true;
                }
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(held_elsewhere, "flock child never took the lock");
        let second = SlotLease::claim(root.path(), None).unwrap();
        assert_eq!(
            second.slot().number(),
            2,
            "slot 1 is held by the child process"
        );

        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let first = SlotLease::claim(root.path(), None).unwrap();
        assert_eq!(
            first.slot().number(),
            1,
            "the kernel released the dead process's lock"
        );
    }
}
