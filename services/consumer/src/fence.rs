//! Write fences: a partition is written only by the replica that took it over last.
//!
//! Kafka moves a partition away from a replica that stopped heartbeating (a freeze longer than
//! the session timeout, a stalled disk) without that replica knowing until it runs again, and
//! its new owner resumes where the logs end. Without a fence, the old owner could then write
//! records it had read before the freeze, or read since, that the new owner writes too: the same
//! offsets in two logs. The group generation cannot be checked at the moment of a write (the
//! client does not expose it, and a check followed by a write leaves a gap a freeze can fall
//! into), so the fence is kept with the sink, where both sides meet:
//!
//! - `CONSUMER_LOGS_DIR/.fences/<topic>/<partition>` (shared by the group's replicas, like the
//!   slots) holds the token of the partition's current owner. Every access holds an exclusive
//!   `flock` on it.
//! - Taking a partition over ([`Fences::take`], in the assignment callback, before the sink's
//!   positions are read): lock, write a new token, unlock.
//! - Writing a batch ([`Fence::hold`], on the writer thread): lock the fences of the batch's
//!   partitions, and write (and fsync and checkpoint) only the partitions whose token is still
//!   ours; unlock after the batch is durable.
//!
//! So a write of a partition and a takeover of it never overlap: either the write finished
//! before the takeover began, and the new owner, reading the positions after it, resumes after
//! the written records; or the takeover came first, and the write finds another token and drops
//! the partition's records (and commits nothing for it). A replica frozen in the middle of a
//! write keeps its lock: the new owner waits until that write is complete (or the process
//! died), rather than resume before records that are about to appear.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("write fence {path}: cannot {action}: {source}")]
pub struct FenceError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn fence_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FenceError + 'a {
    move |source| FenceError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The fences of one topic's partitions, for one replica.
#[derive(Debug)]
pub struct Fences {
    dir: PathBuf,
    /// Names this replica in its tokens (for people reading the files).
    owner: String,
}

impl Fences {
    /// `logs_root/.fences/<topic>/` (created). `owner` names this replica, e.g. its slot.
    pub fn open(logs_root: &Path, topic: &str, owner: &str) -> Result<Self, FenceError> {
        let dir = logs_root.join(".fences").join(topic);
        std::fs::create_dir_all(&dir).map_err(fence_error("create", &dir))?;
        Ok(Self {
            dir,
            owner: owner.to_owned(),
        })
    }

    /// Takes `partition` over: from now on only the returned fence may write it. Waits while
    /// another replica writes it (a frozen one included: see the module documentation).
    pub fn take(&self, partition: i32) -> Result<Fence, FenceError> {
        let path = self.dir.join(partition.to_string());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fence_error("open", &path))?;
        let token = format!("{:016x} {}\n", rand::random::<u64>(), self.owner).into_bytes();
        lock_waiting(&file, &path, partition)?;
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&token))
            .map_err(fence_error("write", &path));
        unlock(&file, &path)?;
        written?;
        Ok(Fence {
            partition,
            file,
            path,
            token,
        })
    }
}

/// Locks `file`, logging while it waits for another replica's write.
fn lock_waiting(file: &File, path: &Path, partition: i32) -> Result<(), FenceError> {
    let started = Instant::now();
    let mut warned = started;
    loop {
        // `File::try_lock` needs Rust 1.89; the workspace's `rust-version` still says 1.85.
        #[allow(clippy::incompatible_msrv)]
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(fence_error("lock", path)(e)),
        }
        if warned.elapsed() >= Duration::from_secs(5) {
            warned = Instant::now();
            tracing::warn!(
                partition,
                waited = ?started.elapsed(),
                fence = %path.display(),
                "waiting to take the partition over: its previous owner is still writing it (or is frozen in a write)"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn unlock(file: &File, path: &Path) -> Result<(), FenceError> {
    #[allow(clippy::incompatible_msrv)]
    file.unlock().map_err(fence_error("unlock", path))
}

/// This replica's claim on one partition, from its takeover until it gives the partition up.
#[derive(Debug)]
pub struct Fence {
    partition: i32,
    file: File,
    path: PathBuf,
    token: Vec<u8>,
}

impl Fence {
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Locks the fence for a write: `Some` while the partition is still ours (unlocked when the
    /// guard is dropped), `None` (unlocked) once another replica took it over.
    pub fn hold(&self) -> Result<Option<FenceGuard<'_>>, FenceError> {
        lock_waiting(&self.file, &self.path, self.partition)?;
        let guard = FenceGuard { fence: self };
        let mut current = Vec::with_capacity(self.token.len() + 1);
        (&self.file)
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&self.file).take(256).read_to_end(&mut current))
            .map_err(fence_error("read", &self.path))?;
        Ok((current == self.token).then_some(guard))
    }
}

/// A held fence lock; unlocked on drop.
#[derive(Debug)]
pub struct FenceGuard<'a> {
    fence: &'a Fence,
}

impl Drop for FenceGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = unlock(&self.fence.file, &self.fence.path) {
            tracing::error!(error = %e, "cannot unlock a write fence");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_fences_the_previous_owner_out() {
        let root = tempfile::tempdir().unwrap();
        let first = Fences::open(root.path(), "t", "consumer_1").unwrap();
        let second = Fences::open(root.path(), "t", "consumer_2").unwrap();
        let old = first.take(3).unwrap();
        assert!(old.hold().unwrap().is_some(), "ours until taken over");
        let new = second.take(3).unwrap();
        assert!(old.hold().unwrap().is_none(), "taken over");
        assert!(new.hold().unwrap().is_some());
        // Other partitions are not affected.
        let other = first.take(4).unwrap();
        assert!(other.hold().unwrap().is_some());
        let text = std::fs::read_to_string(root.path().join(".fences/t/3")).unwrap();
        assert!(text.ends_with(" consumer_2\n"), "{text}");
    }

    #[test]
    fn a_takeover_waits_for_a_write_in_progress() {
        let root = tempfile::tempdir().unwrap();
        let fences = Fences::open(root.path(), "t", "consumer_1").unwrap();
        let old = fences.take(0).unwrap();
        let guard = old.hold().unwrap().expect("ours");
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let root_path = root.path().to_owned();
        let taker = std::thread::spawn(move || {
            let other = Fences::open(&root_path, "t", "consumer_2").unwrap();
            let fence = other.take(0).unwrap();
            taken_tx.send(()).unwrap();
            fence
        });
        assert!(
            taken_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "no takeover while the write holds the fence"
        );
        drop(guard);
        taken_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("taken over once the write is done");
        let new = taker.join().unwrap();
        assert!(old.hold().unwrap().is_none());
        assert!(new.hold().unwrap().is_some());
    }
}
