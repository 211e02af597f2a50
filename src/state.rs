//! What must survive a restart besides the data: the last SOA serial served for
//! every zone (`[server] state-dir`), so that a serial never goes down; and the
//! catalog's member IDs, so that a member keeps its ID across a restart and one
//! removed before it and added back after gets a new one (RFC 9432 section 5.4). Serials are
//! `max(now, previous + 1)`; a burst of changes runs them ahead of the clock, and a
//! restart that forgot them would serve a lower one. A secondary holding the higher
//! serial would then take every later IXFR as "you are current" and keep stale data.
//!
//! [`Serials::raise`] runs in the one writer (`SnapshotStore::update`) before a
//! snapshot is published: it lifts any serial not above the last one served, then
//! writes the file (atomically) before the snapshot can be seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

/// The file in `state-dir`.
pub const FILE: &str = "serials.json";
/// A larger file is refused (checked from its size): 10,000 zones take about 0.5 MB.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("server.state-dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.state-dir: {path} is not a regular file of at most {MAX_BYTES} bytes; move it away"
    )]
    NotUsable { path: PathBuf },
    #[error("server.state-dir: {path} cannot be read ({source}); move it away")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: u32,
    /// Zone name (lower case, absolute) to the last serial served.
    serials: BTreeMap<String, u32>,
    /// The catalog's members (zone name as above) and their IDs.
    #[serde(default)]
    catalog: BTreeMap<String, String>,
}

/// The last serial served for each zone, and where it persists.
#[derive(Debug)]
pub struct Serials {
    path: PathBuf,
    last: Mutex<BTreeMap<String, u32>>,
    catalog: Mutex<BTreeMap<String, String>>,
    /// Writes that failed (the serials served stay right in memory).
    pub write_failures: AtomicU64,
}

impl Serials {
    /// Opens `dir/serials.json` (creating `dir` if needed), and writes it back at
    /// once: a directory we cannot write is an error at start, not at the first
    /// change.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE);
        let (last, catalog) = match read(&path)? {
            Some(file) => (file.serials, file.catalog),
            None => Default::default(),
        };
        let serials = Self {
            path,
            last: Mutex::new(last),
            catalog: Mutex::new(catalog),
            write_failures: AtomicU64::new(0),
        };
        serials.save().map_err(io)?;
        Ok(serials)
    }

    /// The last serial served for `origin`, if any.
    pub fn last(&self, origin: &Name) -> Option<u32> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(&key(origin)).copied()
    }

    /// The catalog member IDs saved: zone → ID.
    pub fn catalog_ids(&self) -> rustc_hash::FxHashMap<Name, String> {
        let catalog = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        catalog
            .iter()
            .filter_map(|(zone, id)| Some((Name::from_ascii(zone).ok()?, id.clone())))
            .collect()
    }

    /// For each zone of `zones` (origin, serial, and whether `previous` served that
    /// very serial), the serial to serve: the one given if it is above the last one
    /// served (RFC 1982), or was served already; else the last one plus 1. `catalog`:
    /// the catalog's member IDs now, if there is a catalog. Then the file is written
    /// if anything changed; a failed write is counted and logged, and the serials
    /// still never go down while the process runs.
    pub fn raise(
        &self,
        zones: &mut [(Name, u32, bool)],
        catalog: Option<&rustc_hash::FxHashMap<Name, String>>,
    ) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        let mut saved = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = catalog {
            let ids: BTreeMap<String, String> =
                ids.iter().map(|(z, id)| (key(z), id.clone())).collect();
            if *saved != ids {
                *saved = ids;
                changed = true;
            }
        }
        for (origin, serial, served_before) in zones.iter_mut() {
            let k = key(origin);
            if let Some(&floor) = last.get(&k)
                && !(greater(*serial, floor) || (*serial == floor && *served_before))
            {
                *serial = floor.wrapping_add(1);
            }
            if last.get(&k) != Some(serial) {
                last.insert(k, *serial);
                changed = true;
            }
        }
        if changed {
            let file = File {
                format: FORMAT,
                serials: last.clone(),
                catalog: saved.clone(),
            };
            drop(last);
            drop(saved);
            if let Err(error) = write(&self.path, &file) {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), %error, "cannot write the zones' serials; after a restart a serial could go down");
            }
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let file = File {
            format: FORMAT,
            serials: self.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            catalog: self
                .catalog
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        write(&self.path, &file)
    }
}

fn key(origin: &Name) -> String {
    let mut name = origin.to_lowercase();
    name.set_fqdn(true);
    name.to_string()
}

/// `a` is greater than `b` in serial number arithmetic (RFC 1982).
fn greater(a: u32, b: u32) -> bool {
    use hickory_proto::rr::SerialNumber;
    SerialNumber::from(a) > SerialNumber::from(b)
}

fn read(path: &Path) -> Result<Option<File>, StateError> {
    use crate::cache::ReadRegular;
    let body = match crate::cache::read_regular(path, MAX_BYTES) {
        Ok(body) => body,
        Err(ReadRegular::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(ReadRegular::Io(source)) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(ReadRegular::NotRegular | ReadRegular::TooLarge(_)) => {
            return Err(StateError::NotUsable {
                path: path.to_path_buf(),
            });
        }
    };
    let parsed: File = serde_json::from_slice(&body).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(parsed))
}

/// Atomically, as the cache file is written.
fn write(path: &Path, file: &File) -> std::io::Result<()> {
    let body = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    crate::cache::write_atomically(path, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn a_serial_never_goes_below_the_last_one_served_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = Serials::open(&state).unwrap();
        // A burst of reloads ran the serial ahead of the clock.
        let mut zones = vec![(name("Example.COM."), 1_000_022, false)];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 1_000_022);
        drop(s);
        // Restarted: the clock says 1,000,000, the zone is new to the process.
        let s = Serials::open(&state).unwrap();
        assert_eq!(s.last(&name("example.com.")), Some(1_000_022));
        let mut zones = vec![
            (name("example.com."), 1_000_000, false),
            (name("other.test."), 1_000_000, false),
        ];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 1_000_023, "above the last one served");
        assert_eq!(zones[1].1, 1_000_000, "a zone never served takes its own");
        // Unchanged content keeps the serial it was served with.
        let mut zones = vec![(name("example.com."), 1_000_023, true)];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 1_000_023);
        // The clock ahead again: its serial is used.
        let mut zones = vec![(name("example.com."), 2_000_000, false)];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 2_000_000);
        let text = std::fs::read_to_string(state.join(FILE)).unwrap();
        assert!(text.contains("\"example.com.\":2000000"), "{text}");
        // Wrapping (RFC 1982): u32::MAX is below 5.
        let mut zones = vec![(name("w.test."), u32::MAX, false)];
        s.raise(&mut zones, None);
        let mut zones = vec![(name("w.test."), 5, false)];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 5);
    }

    #[test]
    fn an_unusable_state_dir_is_an_error_and_a_failed_write_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(Serials::open(&file), Err(StateError::Io { .. })));
        // A corrupt or oversized file is refused, not overwritten.
        let state = dir.path().join("s");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join(FILE), b"{\"format\": 1, \"seri").unwrap();
        let e = Serials::open(&state).unwrap_err().to_string();
        assert!(
            e.contains("serials.json") && e.contains("move it away"),
            "{e}"
        );
        std::fs::File::create(state.join(FILE))
            .unwrap()
            .set_len(MAX_BYTES + 1)
            .unwrap();
        assert!(matches!(
            Serials::open(&state),
            Err(StateError::NotUsable { .. })
        ));
        // The directory goes away after the start: the write fails, is counted, and
        // the serial is still raised in memory.
        let gone = dir.path().join("gone");
        let s = Serials::open(&gone).unwrap();
        let mut zones = vec![(name("a.test."), 10, false)];
        s.raise(&mut zones, None);
        std::fs::remove_dir_all(&gone).unwrap();
        let mut zones = vec![(name("a.test."), 3, false)];
        s.raise(&mut zones, None);
        assert_eq!(zones[0].1, 11);
        assert_eq!(s.write_failures.load(Ordering::Relaxed), 1);
    }
}
