//! The cold-start cache: the last good [`Inventory`] on disk, so a restart while
//! the EC2 API is unreachable still serves the last known addresses.
//!
//! Each target's data is saved with the [`TargetIdentity`] it was discovered for
//! (region, endpoint URL, role, the VPCs and tags of `[[discover]]`, the selectors of
//! configured records). At a cold start only targets whose identity matches the
//! current config are used: a cache from another region, VPC set, role or deployment
//! is never served as ours.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves the old file or the new one, never half of one; a failed write
//! removes its temporary file. A cache that cannot be read or parsed is reported by
//! the caller and ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, TargetIdentity};
use crate::discovery::{Inventory, TargetInventory};

/// Bumped when the file format changes; other versions are ignored, not misread.
/// Format 1 had no identities: it is not trusted.
const FORMAT: u32 = 2;

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
    #[error("cannot encode the cache for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: cache format {found}, expected {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{path}: not a regular file; a cache file must be one (a FIFO or a device would block)"
    )]
    NotRegular { path: PathBuf },
    #[error("{path}: {size} bytes, more than a cache file may have ({MAX_BYTES}); not read")]
    TooLarge { path: PathBuf, size: u64 },
}

/// The largest cache file read or written: about 100,000 endpoints. A larger file
/// (a sparse file, another file given by mistake) is never read into memory.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    saved_at_unix: u64,
    targets: Vec<CachedTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedTarget {
    identity: TargetIdentity,
    #[serde(flatten)]
    inventory: TargetInventory,
}

/// A loaded cache: each target's data with its identity, and when it was saved.
#[derive(Debug)]
pub struct Cached {
    targets: Vec<CachedTarget>,
    pub saved_at_unix: u64,
}

impl Cached {
    /// The targets saved for `config` as it is now, and a line for each target the
    /// config needs that the cache has not (or has for another identity).
    pub fn for_config(self, config: &Config) -> (Inventory, Vec<String>) {
        let mut inventory = Inventory::default();
        let mut refused = Vec::new();
        for target in config.targets() {
            let want = config.identity(&target);
            match self.targets.iter().find(|c| c.inventory.target == target) {
                Some(c) if c.identity == want => inventory.targets.push(c.inventory.clone()),
                Some(c) => refused.push(format!(
                    "{target}: saved for another config ({})",
                    differences(&c.identity, &want).join(", ")
                )),
                None => refused.push(format!("{target}: not in the cache")),
            }
        }
        (inventory, refused)
    }
}

/// The identity fields that differ.
fn differences(a: &TargetIdentity, b: &TargetIdentity) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.region != b.region {
        out.push("region");
    }
    if a.endpoint_url != b.endpoint_url {
        out.push("endpoint-url");
    }
    if a.role_arn != b.role_arn {
        out.push("role-arn");
    }
    if a.discover != b.discover {
        out.push("[[discover]] vpc-ids or tags");
    }
    if a.selectors != b.selectors {
        out.push("records' vpc-endpoint or vpc-endpoint-tags");
    }
    out
}

/// Saves `inventory` with each target's identity under `config`.
pub fn save(
    path: &Path,
    config: &Config,
    inventory: &Inventory,
    now_unix: u64,
) -> Result<(), CacheError> {
    let file = CacheFile {
        format: FORMAT,
        saved_at_unix: now_unix,
        targets: inventory
            .targets
            .iter()
            .map(|t| CachedTarget {
                identity: config.identity(&t.target),
                inventory: t.clone(),
            })
            .collect(),
    };
    let body = serde_json::to_vec(&file).map_err(|source| CacheError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    if body.len() as u64 > MAX_BYTES {
        return Err(CacheError::TooLarge {
            path: path.to_path_buf(),
            size: body.len() as u64,
        });
    }
    write_atomically(path, &body).map_err(|source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `body` to a temporary file beside `path` and renames it over `path`; on
/// any error the temporary file is removed and `path` is untouched. The temporary
/// file has a random name and is created with O_EXCL (tempfile), so a link planted
/// under a predictable name cannot make us write through it.
pub(crate) fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        ".{}.tmp.",
        path.file_name()
            .map_or("cache".into(), |n| n.to_string_lossy())
    );
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is dropped, which removes it.
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why [`read_regular`] read nothing.
#[derive(Debug)]
pub(crate) enum ReadRegular {
    Io(std::io::Error),
    NotRegular,
    TooLarge(u64),
}

/// The bytes of `path`, a regular file of at most `max` bytes: opened without
/// blocking (a FIFO in its place is refused, not waited on), its size checked
/// from fstat before anything is read.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadRegular> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadRegular::Io)?;
    let meta = file.metadata().map_err(ReadRegular::Io)?;
    if !meta.is_file() {
        return Err(ReadRegular::NotRegular);
    }
    if meta.len() > max {
        return Err(ReadRegular::TooLarge(meta.len()));
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut body)
        .map_err(ReadRegular::Io)?;
    if body.len() as u64 > max {
        return Err(ReadRegular::TooLarge(body.len() as u64));
    }
    Ok(body)
}

/// Reads the cache file: a regular file of at most [`MAX_BYTES`] ([`read_regular`]).
pub fn load(path: &Path) -> Result<Cached, CacheError> {
    let body = read_regular(path, MAX_BYTES).map_err(|e| match e {
        ReadRegular::Io(source) => CacheError::Io {
            path: path.to_path_buf(),
            source,
        },
        ReadRegular::NotRegular => CacheError::NotRegular {
            path: path.to_path_buf(),
        },
        ReadRegular::TooLarge(size) => CacheError::TooLarge {
            path: path.to_path_buf(),
            size,
        },
    })?;
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let parse = |source| CacheError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let version: Version = serde_json::from_slice(&body).map_err(parse)?;
    if version.format != FORMAT {
        return Err(CacheError::Format {
            path: path.to_path_buf(),
            found: version.format,
        });
    }
    let file: CacheFile = serde_json::from_slice(&body).map_err(parse)?;
    Ok(Cached {
        targets: file.targets,
        saved_at_unix: file.saved_at_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tests::endpoint;

    const CONFIG: &str = r#"
[aws]
region = "ap-northeast-1"
[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "@"
vpc-endpoint = "vpce-0aaa"
[[discover]]
vpc-ids = ["vpc-1"]
region = "eu-west-1"
"#;

    fn config(text: &str) -> Config {
        Config::from_toml(text, "t").unwrap()
    }

    fn inventory(config: &Config) -> Inventory {
        Inventory {
            targets: config
                .targets()
                .into_iter()
                .map(|target| TargetInventory {
                    target,
                    clusters: Vec::new(),
                    account: Some("123456789012".into()),
                    endpoints: vec![endpoint(
                        "vpce-0aaa",
                        "vpc-1",
                        &["x.example.com"],
                        &["10.0.1.4", "fd00::4"],
                    )],
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        let c = config(CONFIG);
        save(&path, &c, &inventory(&c), 42).unwrap();
        let cached = load(&path).unwrap();
        assert_eq!(cached.saved_at_unix, 42);
        let (inv, refused) = cached.for_config(&c);
        assert_eq!(inv, inventory(&c));
        assert!(refused.is_empty(), "{refused:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    /// Each row changes the config; the targets it touches are no longer served
    /// from the cache, the others still are.
    #[test]
    fn only_targets_of_the_same_identity_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        let saved = config(CONFIG);
        save(&path, &saved, &inventory(&saved), 42).unwrap();
        // (change, targets still served, what the refusal names)
        let rows: &[(&str, &str, usize, &str)] = &[
            (
                "region = \"ap-northeast-1\"",
                "region = \"us-east-1\"",
                1,
                "region",
            ),
            (
                "vpc-ids = [\"vpc-1\"]",
                "vpc-ids = [\"vpc-2\"]",
                1,
                "[[discover]]",
            ),
            (
                "vpc-ids = [\"vpc-1\"]",
                "vpc-ids = [\"vpc-1\"]\ntags = { team = \"a\" }",
                1,
                "[[discover]]",
            ),
            (
                "vpc-endpoint = \"vpce-0aaa\"",
                "vpc-endpoint = \"vpce-0bbb\"",
                1,
                "records'",
            ),
            (
                "region = \"ap-northeast-1\"",
                "region = \"ap-northeast-1\"\nrole-arn = \"arn:aws:iam::111122223333:role/x\"",
                0,
                "role-arn",
            ),
            (
                "region = \"ap-northeast-1\"",
                "region = \"ap-northeast-1\"\nendpoint-url = \"http://127.0.0.1:1\"",
                0,
                "endpoint-url",
            ),
        ];
        for (from, to, kept, names) in rows {
            let now = config(&CONFIG.replacen(from, to, 1));
            let (inv, refused) = load(&path).unwrap().for_config(&now);
            assert_eq!(inv.targets.len(), *kept, "{to}: {refused:?}");
            assert!(!refused.is_empty(), "{to}");
            assert!(
                refused
                    .iter()
                    .all(|r| r.contains(names) || r.contains("not in the cache")),
                "{to}: {refused:?}"
            );
        }
        // A record that is not AWS-backed does not change any identity.
        let now = config(&format!(
            "{CONFIG}[[zone.record]]\nname = \"s\"\na = [\"192.0.2.1\"]\n"
        ));
        assert_eq!(now.zones[0].records.len(), 1);
        assert_eq!(now.zones[0].fixed.records().len(), 1);
        let (inv, refused) = load(&path).unwrap().for_config(&now);
        assert_eq!(inv.targets.len(), 2, "{refused:?}");
    }

    #[test]
    fn corrupt_missing_and_foreign_caches_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        assert!(matches!(load(&path), Err(CacheError::Io { .. })));
        std::fs::write(
            &path,
            b"{\"format\": 2, \"saved_at_unix\": 1, \"targets\": [",
        )
        .unwrap();
        assert!(matches!(load(&path), Err(CacheError::Parse { .. })));
        // Format 1 had no identities: refused, not misread.
        std::fs::write(
            &path,
            b"{\"format\": 1, \"saved_at_unix\": 1, \"inventory\": {\"targets\": []}}",
        )
        .unwrap();
        assert!(matches!(
            load(&path),
            Err(CacheError::Format { found: 1, .. })
        ));
    }

    #[test]
    fn failed_writes_leave_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(CONFIG);
        let path = dir.path().join("missing/snapshot.json");
        assert!(matches!(
            save(&path, &c, &inventory(&c), 1),
            Err(CacheError::Io { .. })
        ));
        // The rename fails (the target is a non-empty directory) after the
        // temporary file was written: it is removed again.
        let path = dir.path().join("snapshot.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        assert!(matches!(
            save(&path, &c, &inventory(&c), 1),
            Err(CacheError::Io { .. })
        ));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["snapshot.json"], "no .tmp left");
    }

    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        // A sparse file larger than the cap: refused from its size, nothing read.
        let big = dir.path().join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        assert!(
            matches!(load(&big), Err(CacheError::TooLarge { size, .. }) if size == 1 << 30),
            "{:?}",
            load(&big).err()
        );
        // A FIFO with no writer: refused at once instead of blocking on open.
        let fifo = dir.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(load(&fifo), Err(CacheError::NotRegular { .. })));
        // A directory.
        assert!(matches!(
            load(dir.path()),
            Err(CacheError::NotRegular { .. }) | Err(CacheError::Io { .. })
        ));
    }

    #[test]
    fn a_link_planted_at_a_predictable_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("snapshot.json");
        // The names older versions used (and a guess at ours): all links to the victim.
        for name in [
            format!(".snapshot.json.tmp.{}", std::process::id()),
            format!("snapshot.json.tmp.{}", std::process::id()),
            "snapshot.json.tmp".to_string(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let c = config(CONFIG);
        save(&path, &c, &inventory(&c), 1).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(load(&path).is_ok());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
    }
}
