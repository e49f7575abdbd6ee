//! Making one consumer's log directory unwritable for a moment, in a way that works when the
//! suite runs as root (CI, the build machine), where permission bits do not stop anybody:
//!
//! - `tmpfs-full` (root, mount allowed): each regular slot's directory is a small tmpfs of its own
//!   from the start; the event fills one with a file until the device is full (`ENOSPC` for the consumer's
//!   appends and its checkpoint's temporary file), then deletes the file.
//! - `immutable` (root, mount refused, `chattr` works on that filesystem): `chattr +i` on the
//!   directory (no new file, so the checkpoint cannot be replaced), then `chattr -i`.
//! - `read-only-mode` (not root): `chmod 0555` on the directory, then `chmod 0755`.
//!
//! The method is chosen once, at start-up, by trying each on the real directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Size of the slot's tmpfs: far above what a long run writes to one log, small enough to fill
/// in a moment.
const TMPFS_SIZE: &str = "64m";
const FILLER: &str = ".chaos-filler";
/// The tmpfs's source name, by which leftovers are recognised.
const MOUNT_SOURCE: &str = "chaos-consumer-log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    TmpfsFull,
    Immutable,
    ReadOnlyMode,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Self::TmpfsFull => "tmpfs-full",
            Self::Immutable => "immutable",
            Self::ReadOnlyMode => "read-only-mode",
        }
    }
}

/// The regular slots' directories, prepared so that any of them can be made unwritable.
#[derive(Debug)]
pub struct Blocker {
    pub method: Method,
    dirs: BTreeMap<u32, PathBuf>,
    mounted: Vec<PathBuf>,
}

fn run(program: &str, args: &[&str], path: &Path) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .with_context(|| format!("run {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {} {}: {}",
        args.join(" "),
        path.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn mount_tmpfs(dir: &Path) -> anyhow::Result<()> {
    let options = format!("size={TMPFS_SIZE},mode=0755");
    run("mount", &["-t", "tmpfs", "-o", &options, MOUNT_SOURCE], dir)
}

impl Blocker {
    /// Prepares the slots' directories (not yet used by any consumer) with the first method that
    /// works here. `Err` lists why each failed.
    pub fn prepare(dirs: BTreeMap<u32, PathBuf>, root: bool) -> anyhow::Result<Self> {
        let first = dirs.values().next().context("no slot")?.clone();
        for dir in dirs.values() {
            std::fs::create_dir_all(dir)?;
        }
        let mut reasons = Vec::new();
        if root {
            match mount_tmpfs(&first) {
                Ok(()) => {
                    let mut blocker = Self {
                        method: Method::TmpfsFull,
                        mounted: vec![first.clone()],
                        dirs,
                    };
                    for dir in blocker.dirs.values().skip(1) {
                        mount_tmpfs(dir)?;
                        blocker.mounted.push(dir.clone());
                    }
                    return Ok(blocker);
                }
                Err(e) => reasons.push(format!("tmpfs: {e:#}")),
            }
            match run("chattr", &["+i"], &first).and_then(|()| run("chattr", &["-i"], &first)) {
                Ok(()) => {
                    return Ok(Self {
                        method: Method::Immutable,
                        dirs,
                        mounted: Vec::new(),
                    })
                }
                Err(e) => reasons.push(format!("chattr: {e:#}")),
            }
        } else {
            let probe = first.join(".chaos-probe");
            let works =
                run("chmod", &["0555"], &first).is_ok() && std::fs::write(&probe, b"x").is_err();
            let _ = run("chmod", &["0755"], &first);
            let _ = std::fs::remove_file(&probe);
            if works {
                return Ok(Self {
                    method: Method::ReadOnlyMode,
                    dirs,
                    mounted: Vec::new(),
                });
            }
            reasons.push("chmod 0555 did not stop writes".into());
        }
        anyhow::bail!(
            "no way to make a log directory unwritable here: {}",
            reasons.join("; ")
        )
    }

    pub fn slots(&self) -> Vec<u32> {
        self.dirs.keys().copied().collect()
    }

    fn dir(&self, slot: u32) -> anyhow::Result<&Path> {
        self.dirs
            .get(&slot)
            .map(PathBuf::as_path)
            .with_context(|| format!("consumer_{slot}'s directory is not prepared"))
    }

    /// Makes consumer `slot`'s directory unwritable; returns what was done.
    pub fn block(&self, slot: u32) -> anyhow::Result<String> {
        let dir = self.dir(slot)?;
        match self.method {
            Method::TmpfsFull => {
                let path = dir.join(FILLER);
                let mut file = std::fs::File::create(&path)?;
                let chunk = vec![0u8; 1 << 20];
                let mut written: u64 = 0;
                // Big pieces first, then pages, until the device refuses.
                for piece in [chunk.as_slice(), &chunk[..4096]] {
                    while file.write_all(piece).is_ok() {
                        written += piece.len() as u64;
                    }
                }
                Ok(format!(
                    "filled consumer_{slot}'s tmpfs with {} MiB (ENOSPC)",
                    written >> 20
                ))
            }
            Method::Immutable => {
                run("chattr", &["+i"], dir)?;
                Ok(format!("chattr +i on consumer_{slot}'s directory"))
            }
            Method::ReadOnlyMode => {
                run("chmod", &["0555"], dir)?;
                Ok(format!("chmod 0555 on consumer_{slot}'s directory"))
            }
        }
    }

    pub fn unblock(&self, slot: u32) -> anyhow::Result<()> {
        let dir = self.dir(slot)?;
        match self.method {
            Method::TmpfsFull => {
                let path = dir.join(FILLER);
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(())
            }
            Method::Immutable => run("chattr", &["-i"], dir),
            Method::ReadOnlyMode => run("chmod", &["0755"], dir),
        }
    }

    pub fn unblock_all(&self) -> anyhow::Result<()> {
        for slot in self.slots() {
            self.unblock(slot)?;
        }
        Ok(())
    }

    /// Undoes the preparation once no consumer uses the directories: each tmpfs's files are
    /// copied onto the directory underneath, so the run's folder keeps the logs for a look.
    pub fn release(&mut self) -> anyhow::Result<()> {
        self.unblock_all()?;
        while let Some(dir) = self.mounted.pop() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir)?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    files.push((entry.file_name(), std::fs::read(entry.path())?));
                }
            }
            run("umount", &[], &dir)?;
            for (name, bytes) in files {
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        Ok(())
    }
}

/// Unmounts tmpfs left mounted under `root` by a run that was killed (so its folder can go).
pub fn unmount_leftovers(root: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let Ok(root) = root.canonicalize() else {
        return;
    };
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        if source == MOUNT_SOURCE && Path::new(target).starts_with(&root) {
            let _ = run("umount", &[], Path::new(target));
        }
    }
}
