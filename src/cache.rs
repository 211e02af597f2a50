//! The cold-start cache: the last good [`Inventory`] on disk, so a restart while
//! the EC2 API is unreachable still serves the last known addresses.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves the old file or the new one, never half of one. A cache that
//! cannot be read or parsed is reported by the caller and ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::discovery::Inventory;

/// Bumped when the file format changes; other versions are ignored, not misread.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a privatelink-dns cache: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: cache format {found}, expected {FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    saved_at_unix: u64,
    inventory: Inventory,
}

/// A loaded cache: the inventory and when it was saved.
#[derive(Debug)]
pub struct Cached {
    pub inventory: Inventory,
    pub saved_at_unix: u64,
}

pub fn save(path: &Path, inventory: &Inventory, now_unix: u64) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = serde_json::to_vec(&CacheFile {
        format: FORMAT,
        saved_at_unix: now_unix,
        inventory: inventory.clone(),
    })
    .map_err(|source| CacheError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .map_or("cache".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn load(path: &Path) -> Result<Cached, CacheError> {
    let body = std::fs::read(path).map_err(|source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: CacheFile = serde_json::from_slice(&body).map_err(|source| CacheError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if file.format != FORMAT {
        return Err(CacheError::Format {
            path: path.to_path_buf(),
            found: file.format,
        });
    }
    Ok(Cached {
        inventory: file.inventory,
        saved_at_unix: file.saved_at_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;
    use crate::discovery::{TargetInventory, tests::endpoint};

    fn inventory() -> Inventory {
        Inventory {
            targets: vec![TargetInventory {
                target: Target {
                    region: Some("ap-northeast-1".into()),
                    role_arn: None,
                },
                endpoints: vec![endpoint(
                    "vpce-0aaa",
                    "vpc-1",
                    &["x.example.com"],
                    &["10.0.1.4", "fd00::4"],
                )],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        save(&path, &inventory(), 42).unwrap();
        let cached = load(&path).unwrap();
        assert_eq!(cached.inventory, inventory());
        assert_eq!(cached.saved_at_unix, 42);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn corrupt_missing_and_foreign_caches_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        assert!(matches!(load(&path), Err(CacheError::Io { .. })));
        std::fs::write(
            &path,
            b"{\"format\": 1, \"saved_at_unix\": 1, \"inventory\": {\"targets\": [",
        )
        .unwrap();
        assert!(matches!(load(&path), Err(CacheError::Parse { .. })));
        std::fs::write(
            &path,
            b"{\"format\": 99, \"saved_at_unix\": 1, \"inventory\": {\"targets\": []}}",
        )
        .unwrap();
        assert!(matches!(
            load(&path),
            Err(CacheError::Format { found: 99, .. })
        ));
    }

    #[test]
    fn save_into_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/snapshot.json");
        assert!(matches!(
            save(&path, &inventory(), 1),
            Err(CacheError::Io { .. })
        ));
    }
}
