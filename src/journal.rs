//! The IXFR journal (RFC 1995): for each transferable zone, the records of its
//! recent versions, so an IXFR from one of those serials is answered with the
//! condensed difference to the current version instead of the whole zone.
//!
//! Bounded per zone by [`MAX_VERSIONS`] versions and [`MAX_BYTES`] bytes of
//! records; the oldest go first. Fed by [`crate::snapshot::SnapshotStore::update`]
//! (the one writer) with the version a publication replaces; read by the answering
//! core through the snapshot. Only zones whose transfer `allow` names someone keep
//! a journal. A version whose NS set or SOA fields (other than the serial) differ
//! from the current ones is not diffed: the answer is the whole zone, in AXFR form.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use hickory_proto::rr::RData;
use rustc_hash::FxBuildHasher;

use crate::snapshot::{Snapshot, Zone};
use crate::wire::QName;

/// Versions kept per zone.
pub const MAX_VERSIONS: usize = 16;
/// Bytes of records kept per zone (the current version is not counted).
pub const MAX_BYTES: usize = 8 << 20;

/// One record: the owner in wire form followed by the RR after its owner.
pub type Entry = Box<[u8]>;

#[derive(Debug)]
struct Version {
    serial: u32,
    shape: u64,
    entries: Vec<Entry>,
    bytes: usize,
}

/// Recent versions of the transferable zones.
#[derive(Debug, Default)]
pub struct Journal {
    zones: Mutex<HashMap<Box<[u8]>, VecDeque<Version>>>,
}

impl Journal {
    /// Keeps `previous`'s version of every zone of `next` whose serial changed; forgets
    /// zones `next` no longer has or no longer transfers.
    pub fn record(&self, previous: &Snapshot, next: &Snapshot) {
        let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones.retain(|key, _| {
            next.zone_by_key(key)
                .is_some_and(|z| !z.transfer().allow.is_empty())
        });
        for zone in next.zones() {
            if zone.transfer().allow.is_empty() {
                continue;
            }
            let Some(old) = previous.zone(&zone.origin) else {
                continue;
            };
            if old.serial() == zone.serial() {
                continue;
            }
            let Some(key) = QName::from_name(&zone.origin) else {
                continue;
            };
            let entries = entries(old);
            let bytes = entries.iter().map(|e| e.len()).sum();
            let versions = zones.entry(key.as_bytes().into()).or_default();
            versions.push_back(Version {
                serial: old.serial(),
                shape: shape(old),
                entries,
                bytes,
            });
            let mut total: usize = versions.iter().map(|v| v.bytes).sum();
            while versions.len() > MAX_VERSIONS || (total > MAX_BYTES && !versions.is_empty()) {
                if let Some(v) = versions.pop_front() {
                    total -= v.bytes;
                }
            }
        }
    }

    /// The condensed difference from version `from` of `zone` to `zone`: (deleted,
    /// added), or `None` when that version is not kept (or cannot be diffed).
    pub fn diff(&self, zone: &Zone, from: u32) -> Option<(Vec<Entry>, Vec<Entry>)> {
        let key = QName::from_name(&zone.origin)?;
        let shape = shape(zone);
        let kept = |zones: &HashMap<Box<[u8]>, VecDeque<Version>>| {
            zones
                .get(key.as_bytes())
                .is_some_and(|v| v.iter().any(|v| v.serial == from && v.shape == shape))
        };
        if !kept(&self.zones.lock().unwrap_or_else(|e| e.into_inner())) {
            return None;
        }
        // Sorted outside the lock: the snapshot writer records versions under it.
        let new = entries(zone);
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        let old = zones
            .get(key.as_bytes())?
            .iter()
            .find(|v| v.serial == from && v.shape == shape)?;
        let (mut deleted, mut added) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < old.entries.len() || j < new.len() {
            match (old.entries.get(i), new.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    deleted.push(a.clone());
                    i += 1;
                }
                (Some(a), None) => {
                    deleted.push(a.clone());
                    i += 1;
                }
                (_, Some(b)) => {
                    added.push(b.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Some((deleted, added))
    }

    /// Serials kept for `zone`, oldest first.
    #[cfg(test)]
    pub(crate) fn serials(&self, zone: &Zone) -> Vec<u32> {
        let Some(key) = QName::from_name(&zone.origin) else {
            return Vec::new();
        };
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones
            .get(key.as_bytes())
            .map_or_else(Vec::new, |v| v.iter().map(|v| v.serial).collect())
    }
}

/// The zone's A and AAAA records as sorted entries.
pub fn entries(zone: &Zone) -> Vec<Entry> {
    let mut out: Vec<Entry> = zone
        .rrs()
        .map(|(owner, rr)| [owner, rr].concat().into_boxed_slice())
        .collect();
    out.sort_unstable();
    out
}

/// What must be equal for a diff of A/AAAA records to be the whole difference: the
/// NS set and the SOA without its serial.
fn shape(zone: &Zone) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    if let RData::SOA(soa) = &zone.soa.data {
        soa.mname.hash(&mut h);
        soa.rname.hash(&mut h);
        (soa.refresh, soa.retry, soa.expire, soa.minimum).hash(&mut h);
    }
    zone.soa.ttl.hash(&mut h);
    for ns in &zone.ns {
        ns.data.to_string().hash(&mut h);
        ns.ttl.hash(&mut h);
    }
    h.finish()
}

/// Splits an entry into (owner in wire form, the RR after it).
pub fn split(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = 0;
    loop {
        let len = usize::from(*entry.get(at)?);
        at += 1 + len;
        if len == 0 {
            return Some(entry.split_at(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::access::{Acl, TransferPolicy};
    use crate::snapshot::{self, RecordData, Settings, SnapshotStore, SoaParams, ZoneData};

    fn zone(addresses: &[[u8; 4]], allow: bool) -> ZoneData {
        let origin = Name::from_ascii("j.test.").unwrap();
        let ns = Name::from_ascii("ns.j.test.").unwrap();
        let allow = if allow {
            Acl::new(vec![Acl::parse_net("10.0.0.0/8").unwrap()])
        } else {
            Acl::default()
        };
        ZoneData {
            soa: SoaParams::defaults(&origin, ns.clone()),
            ns: vec![ns],
            ns_ttl: 3600,
            fixed: Default::default(),
            records: vec![
                RecordData {
                    name: Name::from_ascii("www.j.test.").unwrap(),
                    ttl: 60,
                    a: addresses.iter().map(|a| Ipv4Addr::from(*a)).collect(),
                    aaaa: vec![],
                },
                RecordData {
                    name: Name::from_ascii("same.j.test.").unwrap(),
                    ttl: 60,
                    a: vec![Ipv4Addr::new(192, 0, 2, 99)],
                    aaaa: vec![],
                },
            ],
            origin,
            transfer: Arc::new(TransferPolicy {
                allow,
                ..Default::default()
            }),
        }
    }

    fn publish(store: &SnapshotStore, data: ZoneData, now: u64) -> u32 {
        store.update(|prev| snapshot::build(&[data], Settings::default(), Some(prev), now));
        let snap = store.load();
        snap.zones().next().unwrap().serial()
    }

    #[test]
    fn ixfr_diff_is_the_condensed_difference_from_a_kept_version() {
        let store = SnapshotStore::default();
        let v1 = publish(&store, zone(&[[192, 0, 2, 1], [192, 0, 2, 2]], true), 1000);
        let v2 = publish(&store, zone(&[[192, 0, 2, 2], [192, 0, 2, 3]], true), 2000);
        let v3 = publish(&store, zone(&[[192, 0, 2, 3], [192, 0, 2, 4]], true), 3000);
        assert!(v1 < v2 && v2 < v3);
        let snap = store.load_full();
        let z = snap.zones().next().unwrap();
        assert_eq!(snap.journal().serials(z), [v1, v2]);
        let last_octets =
            |entries: &[Entry]| -> Vec<u8> { entries.iter().map(|e| *e.last().unwrap()).collect() };
        // From v1: .1 and .2 gone, .3 and .4 new; the unchanged record is in neither.
        let (deleted, added) = snap.journal().diff(z, v1).unwrap();
        assert_eq!(last_octets(&deleted), [1, 2]);
        assert_eq!(last_octets(&added), [3, 4]);
        let (deleted, added) = snap.journal().diff(z, v2).unwrap();
        assert_eq!(
            (last_octets(&deleted), last_octets(&added)),
            (vec![2], vec![4])
        );
        assert!(
            snap.journal().diff(z, v3).is_none(),
            "the current serial is not journaled"
        );
        assert!(
            snap.journal().diff(z, 42).is_none(),
            "an unknown serial: AXFR form"
        );
        let (owner, rr) = split(&deleted[0]).unwrap();
        assert_eq!(owner, b"\x03www\x01j\x04test\x00");
        assert_eq!(rr.len(), 14, "type, class, TTL, length, 4 bytes");
    }

    #[test]
    fn only_transferable_zones_keep_versions_and_the_count_is_bounded() {
        let store = SnapshotStore::default();
        for i in 0..3u8 {
            publish(&store, zone(&[[192, 0, 2, i]], false), 1000 + u64::from(i));
        }
        let snap = store.load_full();
        assert!(
            snap.journal()
                .serials(snap.zones().next().unwrap())
                .is_empty()
        );
        for i in 0..(MAX_VERSIONS as u8 + 5) {
            publish(&store, zone(&[[192, 0, 3, i]], true), 2000 + u64::from(i));
        }
        let snap = store.load_full();
        let kept = snap.journal().serials(snap.zones().next().unwrap());
        assert_eq!(kept.len(), MAX_VERSIONS);
    }
}
