//! The optional data file: the whole registry as pretty JSON, loaded at start and rewritten
//! atomically (temp file in the same directory, fsync, rename, fsync of the directory) after every
//! change. One process per file: two registries writing the same file would overwrite each other.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::store::{Registry, Snapshot};
use crate::Error;

/// Loads the registry from `path`; a missing file is an empty registry, which is written at once
/// so that an unusable location fails at start rather than at the first registration.
pub fn load_or_create(path: &Path) -> Result<Registry, Error> {
    match fs::read(path) {
        Ok(bytes) => {
            let corrupt = |reason: String| Error::CorruptDataFile {
                path: path.to_owned(),
                reason,
            };
            let snapshot: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
            Registry::from_snapshot(snapshot).map_err(corrupt)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = parent_dir(path) {
                fs::create_dir_all(dir).map_err(|source| Error::WriteDataFile {
                    path: path.to_owned(),
                    source,
                })?;
            }
            let registry = Registry::default();
            save(path, &registry)?;
            Ok(registry)
        }
        Err(source) => Err(Error::ReadDataFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the file at `path` with `registry`, atomically.
pub fn save(path: &Path, registry: &Registry) -> Result<(), Error> {
    write_atomically(path, registry).map_err(|source| Error::WriteDataFile {
        path: path.to_owned(),
        source,
    })
}

fn write_atomically(path: &Path, registry: &Registry) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(&registry.to_snapshot())?;
    json.push(b'\n');
    let temp = temp_path(path);
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // Make the rename itself durable.
    File::open(parent_dir(path).unwrap_or(Path::new(".")))?.sync_all()
}

fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// `dir/.name.tmp` next to `dir/name`, so the rename stays within one file system.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "registry".as_ref()));
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_sits_next_to_the_data_file() {
        assert_eq!(
            temp_path(Path::new("/data/registry.json")),
            Path::new("/data/.registry.json.tmp")
        );
        assert_eq!(
            temp_path(Path::new("registry.json")),
            Path::new(".registry.json.tmp")
        );
    }
}
