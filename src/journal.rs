//! The IXFR journal (RFC 1995): for each transferable zone, the changes of its
//! recent versions as deltas, so an IXFR from one of those serials is answered with
//! the deltas since it instead of the whole zone.
//!
//! Each delta is computed once, by the one writer, when a snapshot is published
//! ([`crate::snapshot::SnapshotStore::update`]): the records a version removed and
//! the records it added, in wire form, in one buffer each. A journal is immutable
//! and belongs to the snapshot it was published with; the next one shares every
//! delta (`Arc`) and adds the new ones. A request reads the journal of the snapshot
//! it loaded: no lock, no sort, no diff; an IXFR's work is the size of the deltas it
//! sends (routinator's `PayloadHistory` is the model).
//!
//! Bounds: [`MAX_DELTAS`] per zone, and one byte budget over all zones (`[server]
//! journal-max-bytes`), counted with the bookkeeping around each delta; over it, the
//! oldest deltas of any zone go first. Plain data: this module knows no snapshot
//! types; the snapshot says what changed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Deltas kept per zone: IXFR from the last this many serials.
pub const MAX_DELTAS: usize = 16;
/// Default of `[server] journal-max-bytes`.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;
/// What one delta costs beyond its records: the struct, its `Arc`, two buffers'
/// allocations and its slot in a zone's list.
pub const DELTA_OVERHEAD: usize = std::mem::size_of::<Delta>() + 64;
/// What one zone with a history costs beyond its deltas: its key, map slot and list.
pub const ZONE_OVERHEAD: usize = 128;

/// One change of one zone: from serial `from` to serial `to`, the records removed
/// and the records added. A record is its owner in wire form (lower case) followed
/// by its type, class, TTL, RDLENGTH and RDATA.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    /// Publication order, for evicting the oldest first across zones.
    seq: u64,
    deleted: Box<[u8]>,
    added: Box<[u8]>,
}

impl Delta {
    pub fn new(from: u32, to: u32, deleted: Vec<u8>, added: Vec<u8>) -> Self {
        Self {
            from,
            to,
            seq: 0,
            deleted: deleted.into_boxed_slice(),
            added: added.into_boxed_slice(),
        }
    }

    /// The records `to` no longer has, as (owner, the RR after its owner).
    pub fn deleted(&self) -> Records<'_> {
        Records(&self.deleted)
    }

    /// The records new in `to`.
    pub fn added(&self) -> Records<'_> {
        Records(&self.added)
    }

    /// Bytes of records, as they would be written uncompressed.
    pub fn wire_len(&self) -> usize {
        self.deleted.len() + self.added.len()
    }

    /// What it counts against the byte budget.
    pub fn cost(&self) -> usize {
        self.wire_len() + DELTA_OVERHEAD
    }
}

/// Appends one record to a delta's buffer: `owner` in wire form, then `rr` (type,
/// class, TTL, RDLENGTH, RDATA).
pub fn push_record(buf: &mut Vec<u8>, owner: &[u8], rr: &[u8]) {
    buf.extend_from_slice(owner);
    buf.extend_from_slice(rr);
}

/// The records of one side of a delta.
#[derive(Debug, Clone)]
pub struct Records<'d>(&'d [u8]);

impl<'d> Iterator for Records<'d> {
    type Item = (&'d [u8], &'d [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.0;
        let mut at = 0;
        loop {
            let len = usize::from(*buf.get(at)?);
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        let rdlen = usize::from(u16::from_be_bytes([*buf.get(at + 8)?, *buf.get(at + 9)?]));
        let end = at + 10 + rdlen;
        if end > buf.len() {
            // Only push_record writes these buffers; a short one cannot happen.
            self.0 = &[];
            return None;
        }
        self.0 = &buf[end..];
        Some((&buf[..at], &buf[at..end]))
    }
}

/// What a publication did to one transferable zone, as [`Journal::next`] takes it.
#[derive(Debug)]
pub enum Step {
    /// Same serial: its history stays.
    Same,
    /// A new version: this delta from the one before.
    Changed(Delta),
    /// A version no delta can describe (a new zone, or its SOA fields or NS set
    /// changed): no IXFR from before it.
    Restart,
}

#[derive(Debug, Clone, Default)]
struct History {
    deltas: VecDeque<Arc<Delta>>,
    bytes: usize,
}

/// The deltas of every transferable zone, as of one snapshot. Immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    zones: FxHashMap<Box<[u8]>, Arc<History>>,
    /// Bytes counted against the budget, over all zones.
    bytes: usize,
    /// The last publication's number.
    seq: u64,
}

impl Journal {
    /// The journal after a publication: `steps` has one entry per zone that keeps a
    /// journal (key: origin in lower-cased wire form); every other zone's history is
    /// dropped. Then, while over `max_bytes`, the oldest delta of any zone goes.
    pub fn next(&self, steps: Vec<(Box<[u8]>, Step)>, max_bytes: usize) -> Journal {
        let seq = self.seq + 1;
        let mut zones = FxHashMap::default();
        zones.reserve(steps.len());
        for (key, step) in steps {
            let kept = self.zones.get(&key);
            let history = match step {
                Step::Same => match kept {
                    Some(history) => history.clone(),
                    None => continue,
                },
                Step::Restart => continue,
                Step::Changed(mut delta) => {
                    delta.seq = seq;
                    let mut history = match kept {
                        // Deltas chain: each starts where the one before ended.
                        Some(h) if h.deltas.back().is_some_and(|d| d.to == delta.from) => {
                            History::clone(h)
                        }
                        _ => History::default(),
                    };
                    history.bytes += delta.cost();
                    history.deltas.push_back(Arc::new(delta));
                    while history.deltas.len() > MAX_DELTAS {
                        if let Some(old) = history.deltas.pop_front() {
                            history.bytes -= old.cost();
                        }
                    }
                    Arc::new(history)
                }
            };
            zones.insert(key, history);
        }
        let mut bytes: usize = zones
            .iter()
            .map(|(key, h)| h.bytes + key.len() + ZONE_OVERHEAD)
            .sum();
        if bytes > max_bytes {
            // Oldest first, across zones: a heap of each zone's oldest delta.
            let mut heap: BinaryHeap<Reverse<(u64, Box<[u8]>)>> = zones
                .iter()
                .filter_map(|(key, h)| Some(Reverse((h.deltas.front()?.seq, key.clone()))))
                .collect();
            while bytes > max_bytes {
                let Some(Reverse((_, key))) = heap.pop() else {
                    break;
                };
                let Some(entry) = zones.get_mut(&key) else {
                    continue;
                };
                let history = Arc::make_mut(entry);
                if let Some(old) = history.deltas.pop_front() {
                    history.bytes -= old.cost();
                    bytes -= old.cost();
                }
                match history.deltas.front() {
                    Some(next) => heap.push(Reverse((next.seq, key))),
                    None => {
                        zones.remove(&key);
                        bytes -= key.len() + ZONE_OVERHEAD;
                    }
                }
            }
        }
        Journal { zones, bytes, seq }
    }

    /// The deltas of `zone` from serial `from` to `current`, oldest first; `None`
    /// when the journal does not reach back to `from` (the answer is then the whole
    /// zone). No lock, no copy.
    pub fn since<'j>(
        &'j self,
        zone: &[u8],
        from: u32,
        current: u32,
    ) -> Option<impl Iterator<Item = &'j Delta> + Clone + Send + use<'j>> {
        let history = self.zones.get(zone)?;
        let start = history.deltas.iter().position(|d| d.from == from)?;
        (history.deltas.back()?.to == current).then(|| history.deltas.range(start..).map(|d| &**d))
    }

    /// Bytes counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Serials kept for `zone` (each delta's `from`), oldest first.
    pub fn serials(&self, zone: &[u8]) -> Vec<u32> {
        self.zones
            .get(zone)
            .map_or_else(Vec::new, |h| h.deltas.iter().map(|d| d.from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &[u8] = b"\x01j\x04test\x00";

    fn rr(last: u8) -> Vec<u8> {
        let mut rr = vec![0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2];
        rr.push(last);
        rr
    }

    /// A delta from `from` to `to` removing `.old` and adding `.new` at www.
    fn delta(from: u32, to: u32, old: &[u8], new: &[u8]) -> Delta {
        let owner = b"\x03www\x01j\x04test\x00";
        let (mut d, mut a) = (Vec::new(), Vec::new());
        for o in old {
            push_record(&mut d, owner, &rr(*o));
        }
        for n in new {
            push_record(&mut a, owner, &rr(*n));
        }
        Delta::new(from, to, d, a)
    }

    fn changed(j: &Journal, d: Delta, max: usize) -> Journal {
        j.next(vec![(ZONE.into(), Step::Changed(d))], max)
    }

    fn last_octets(records: Records<'_>) -> Vec<u8> {
        records.map(|(_, rr)| *rr.last().unwrap()).collect()
    }

    #[test]
    fn records_round_trip_and_deltas_chain_from_any_kept_serial() {
        let j = Journal::default();
        let j = changed(&j, delta(1, 2, &[1], &[3]), usize::MAX);
        let j = changed(&j, delta(2, 3, &[3], &[4, 5]), usize::MAX);
        assert_eq!(j.serials(ZONE), [1, 2]);
        let from1: Vec<&Delta> = j.since(ZONE, 1, 3).unwrap().collect();
        assert_eq!(from1.len(), 2);
        assert_eq!(last_octets(from1[0].deleted()), [1]);
        assert_eq!(last_octets(from1[1].added()), [4, 5]);
        let (owner, rr) = from1[1].added().next().unwrap();
        assert_eq!(owner, b"\x03www\x01j\x04test\x00");
        assert_eq!(rr.len(), 14, "type, class, TTL, length, 4 bytes");
        assert_eq!(j.since(ZONE, 2, 3).unwrap().count(), 1);
        assert!(
            j.since(ZONE, 3, 3).is_none(),
            "the current serial: no delta"
        );
        assert!(j.since(ZONE, 42, 3).is_none(), "an unknown serial");
        assert!(
            j.since(ZONE, 1, 4).is_none(),
            "deltas that do not reach the current serial are not an answer"
        );
        // The next journal shares the deltas, it does not copy them.
        let k = j.next(vec![(ZONE.into(), Step::Same)], usize::MAX);
        let a = j.since(ZONE, 1, 3).unwrap().next().unwrap() as *const Delta;
        let b = k.since(ZONE, 1, 3).unwrap().next().unwrap() as *const Delta;
        assert_eq!(a, b);
    }

    #[test]
    fn a_restart_a_gap_or_a_dropped_zone_forgets_the_history() {
        let j = changed(&Journal::default(), delta(1, 2, &[1], &[2]), usize::MAX);
        assert!(
            j.next(vec![(ZONE.into(), Step::Restart)], usize::MAX)
                .since(ZONE, 1, 2)
                .is_none()
        );
        assert!(j.next(Vec::new(), usize::MAX).serials(ZONE).is_empty());
        // A delta that does not start where the last ended starts a new history.
        let k = changed(&j, delta(5, 6, &[2], &[3]), usize::MAX);
        assert_eq!(k.serials(ZONE), [5]);
    }

    #[test]
    fn the_count_per_zone_is_bounded() {
        let mut j = Journal::default();
        for s in 0..(MAX_DELTAS as u32 + 5) {
            j = changed(&j, delta(s, s + 1, &[s as u8], &[s as u8 + 1]), usize::MAX);
        }
        assert_eq!(j.serials(ZONE).len(), MAX_DELTAS);
        assert_eq!(j.serials(ZONE)[0], 5);
    }

    #[test]
    fn the_byte_budget_is_global_and_evicts_the_oldest_delta_of_any_zone() {
        let other: &[u8] = b"\x01k\x04test\x00";
        let (cost, zone) = (delta(1, 2, &[1], &[2]).cost(), ZONE.len() + ZONE_OVERHEAD);
        // Room for two zones with two such deltas between them, not three.
        let max = 3 * cost + 2 * zone - 1;
        let j = Journal::default();
        let j = changed(&j, delta(1, 2, &[1], &[2]), max); // seq 1: ZONE
        let j = j.next(
            vec![
                (ZONE.into(), Step::Same),
                (other.into(), Step::Changed(delta(7, 8, &[1], &[2]))),
            ],
            max,
        ); // seq 2: other
        let j = j.next(
            vec![
                (ZONE.into(), Step::Changed(delta(2, 3, &[2], &[3]))),
                (other.into(), Step::Same),
            ],
            max,
        ); // seq 3: ZONE
        assert!(j.bytes() <= max, "{} > {max}", j.bytes());
        assert_eq!(j.serials(ZONE), [2], "ZONE's first delta was the oldest");
        assert_eq!(j.serials(other), [7]);
        // A bigger delta pushes out the next oldest: other's, and its zone with it.
        let j = j.next(
            vec![
                (ZONE.into(), Step::Changed(delta(3, 4, &[3, 4], &[5, 6]))),
                (other.into(), Step::Same),
            ],
            max,
        );
        assert!(j.bytes() <= max);
        assert_eq!(j.serials(ZONE), [2, 3]);
        assert!(j.serials(other).is_empty());
        // Budget 0: no journal at all.
        assert_eq!(changed(&j, delta(4, 5, &[1], &[2]), 0).bytes(), 0);
        // The count is exact: what is kept adds up.
        let expect: usize = j.since(ZONE, 2, 4).unwrap().map(Delta::cost).sum::<usize>()
            + ZONE.len()
            + ZONE_OVERHEAD;
        assert_eq!(j.bytes(), expect);
    }
}
