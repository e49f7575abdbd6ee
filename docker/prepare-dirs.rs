//! Hands the bind-mounted output folders to the user the services run as, so that `docker compose
//! up` works whoever owns the checkout (root on CI runners, another uid than the default 1000, ...).
//!
//!   prepare-dirs UID:GID DIR...
//!
//! Run once as root by the compose file's `dirs-init` service before the producer and the
//! consumers start. Every DIR, and everything under it, that is not owned by UID:GID is given to
//! UID:GID (symbolic links themselves, never what they point to), and DIR gets owner rwx. Exits 0
//! when every DIR is then writable by UID:GID; otherwise 1, naming the folder, the reason and what
//! to do instead. Built with plain `rustc` in docker/Dockerfile like the health probe; tested by
//! services/deploy-check.

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((owner, dirs)) = args.split_first() else {
        eprintln!("usage: prepare-dirs UID:GID DIR...");
        return ExitCode::from(2);
    };
    let Some((uid, gid)) = parse_owner(owner) else {
        eprintln!("prepare-dirs: {owner:?} is not UID:GID (two numbers, e.g. 1000:1000)");
        return ExitCode::from(2);
    };
    if dirs.is_empty() {
        eprintln!("usage: prepare-dirs UID:GID DIR...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for dir in dirs {
        match prepare(Path::new(dir), uid, gid) {
            Ok(0) => println!("prepare-dirs: {dir} is owned by {uid}:{gid}"),
            Ok(changed) => println!(
                "prepare-dirs: {dir}: handed {changed} entr{} to {uid}:{gid}",
                if changed == 1 { "y" } else { "ies" }
            ),
            Err(reason) => {
                failed = true;
                eprintln!(
                    "prepare-dirs: cannot make {dir} writable for {uid}:{gid}, the user the producer \
                     and the consumers run as: {reason}. Make the folder writable for that user \
                     yourself, or run the services as the folder's owner: \
                     printf 'UID=%s\\nGID=%s\\n' \"$(id -u)\" \"$(id -g)\" > .env"
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn parse_owner(text: &str) -> Option<(u32, u32)> {
    let (uid, gid) = text.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Gives `dir` and everything under it to `uid:gid`; returns how many entries changed owner.
fn prepare(dir: &Path, uid: u32, gid: u32) -> Result<usize, String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".to_owned());
    }
    let mut changed = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.uid() != uid || meta.gid() != gid {
            lchown(&path, Some(uid), Some(gid)).map_err(|e| {
                format!(
                    "changing the owner of {} (now {}:{}) failed: {e}",
                    path.display(),
                    meta.uid(),
                    meta.gid()
                )
            })?;
            changed += 1;
        }
        // Folders only: a symbolic link to a folder is not followed.
        if meta.is_dir() {
            let entries = fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for entry in entries {
                pending.push(entry.map_err(|e| format!("{}: {e}", path.display()))?.path());
            }
        }
    }
    let mode = fs::metadata(dir).map_err(|e| format!("{e}"))?.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
            .map_err(|e| format!("adding owner rwx to its mode {mode:o} failed: {e}"))?;
    }
    Ok(changed)
}
