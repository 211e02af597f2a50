//! The immutable snapshot the answering core reads: zones, names and record sets.
//!
//! Sources (static config today, AWS discovery later) produce plain [`ZoneData`];
//! [`build`] turns them into a [`Snapshot`] with one pure function. A refresh builds
//! a whole new snapshot and swaps it in through [`SnapshotStore::publish`]; readers
//! never lock. This module does no I/O and knows nothing about sockets.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use rustc_hash::FxHashMap;

/// SOA timers of a zone (RFC 1035 3.3.13). The serial is not here: the builder owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaParams {
    pub mname: Name,
    pub rname: Name,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
    /// TTL of the SOA record itself.
    pub ttl: u32,
}

impl SoaParams {
    /// The defaults for a zone: RNAME `hostmaster.<origin>`, refresh 3600, retry 900,
    /// expire 1209600, minimum 60, TTL 3600.
    pub fn defaults(origin: &Name, mname: Name) -> Self {
        Self {
            mname,
            rname: origin
                .prepend_label("hostmaster")
                .unwrap_or_else(|_| origin.clone()),
            refresh: 3600,
            retry: 900,
            expire: 1_209_600,
            minimum: 60,
            ttl: 3600,
        }
    }
}

/// One owner name with its addresses, as a source produces it. A name without
/// addresses exists and answers NODATA (an AWS-backed name whose endpoint is down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordData {
    /// Absolute name inside the zone; may start with a `*` label (RFC 4592).
    pub name: Name,
    pub ttl: u32,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
}

/// One zone, as a source produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneData {
    pub origin: Name,
    /// NS names served at the apex (at least one).
    pub ns: Vec<Name>,
    /// TTL of the apex NS RRset.
    pub ns_ttl: u32,
    pub soa: SoaParams,
    pub records: Vec<RecordData>,
}

/// Server-wide answering settings that travel with the snapshot, so a reload swaps
/// them together with the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Largest UDP response we send, and the payload size we advertise in OPT.
    pub udp_payload_size: u16,
    /// Answer for CH TXT `id.server` / `hostname.bind`, if set.
    pub identity: Option<String>,
    /// Answer for CH TXT `version.bind` / `version.server`, if set.
    pub version: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            udp_payload_size: 1232,
            identity: None,
            version: None,
        }
    }
}

/// The record sets at one owner name. An empty node is an empty non-terminal.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    /// The A RRset pre-encoded for an answer section whose owner is the question
    /// name (compression pointer 0xC00C): built once here, copied per query.
    pub a_wire: Box<[u8]>,
    pub aaaa_wire: Box<[u8]>,
}

impl Node {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty()
    }
}

/// A built zone: every name (and every empty non-terminal) keyed by its lower-cased form.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub soa: Record,
    /// TTL for the SOA in negative answers: min(SOA TTL, SOA minimum) (RFC 2308 section 3).
    pub negative_ttl: u32,
    pub ns: Vec<Record>,
    pub nodes: HashMap<LowerName, Node>,
    /// The negative-answer SOA RR after its owner (type, class, TTL, RDLENGTH, RDATA
    /// with uncompressed names); the owner is a pointer to the apex in the question.
    pub negative_wire: Box<[u8]>,
    /// The source data the zone was built from; compared on rebuild to keep the serial.
    pub data: ZoneData,
}

impl Zone {
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }
}

/// Everything the answering core needs, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub zones: HashMap<LowerName, Zone>,
    pub settings: Settings,
    /// The same zones keyed by lower-cased wire-format names, for the UDP fast path.
    pub fast: FastIndex,
}

/// Lookup tables keyed by lower-cased wire-format names, so the fast path finds a
/// zone and a node with borrowed byte slices and no allocation.
#[derive(Debug, Clone, Default)]
pub struct FastIndex {
    pub zones: FxHashMap<Box<[u8]>, FastZone>,
}

#[derive(Debug, Clone)]
pub struct FastZone {
    pub negative_wire: Box<[u8]>,
    pub nodes: FxHashMap<Box<[u8]>, FastNode>,
}

#[derive(Debug, Clone)]
pub struct FastNode {
    pub a_wire: Box<[u8]>,
    pub a_count: u16,
    pub aaaa_wire: Box<[u8]>,
    pub aaaa_count: u16,
}

/// The lower-cased wire form of a name.
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    name.to_lowercase()
        .to_bytes()
        .unwrap_or_default()
        .into_boxed_slice()
}

/// RRs with the owner compressed to the question name (offset 12).
fn encode_answers(records: &[Record]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(records.len() * 28);
    for r in records {
        let rdata = r.data.to_bytes().unwrap_or_default();
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
        out.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out.into_boxed_slice()
}

/// The negative SOA RR without its owner; its names are not compressed.
fn encode_negative(soa: &Record, ttl: u32) -> Box<[u8]> {
    let RData::SOA(s) = &soa.data else {
        return Box::default();
    };
    let mut rdata = Vec::with_capacity(64);
    rdata.extend_from_slice(&s.mname.to_bytes().unwrap_or_default());
    rdata.extend_from_slice(&s.rname.to_bytes().unwrap_or_default());
    for v in [
        s.serial,
        s.refresh as u32,
        s.retry as u32,
        s.expire as u32,
        s.minimum,
    ] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    let mut out = Vec::with_capacity(10 + rdata.len());
    out.extend_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out.into_boxed_slice()
}

fn fast_zone(zone: &Zone) -> FastZone {
    let nodes = zone
        .nodes
        .iter()
        .map(|(name, node)| {
            let key = wire_lower(&Name::from(name.clone()));
            let fast = FastNode {
                a_wire: node.a_wire.clone(),
                a_count: node.a.len() as u16,
                aaaa_wire: node.aaaa_wire.clone(),
                aaaa_count: node.aaaa.len() as u16,
            };
            (key, fast)
        })
        .collect();
    FastZone {
        negative_wire: zone.negative_wire.clone(),
        nodes,
    }
}

impl Snapshot {
    /// The most specific zone that contains `name`, if any.
    pub fn find_zone(&self, name: &LowerName) -> Option<&Zone> {
        let mut candidate = name.clone();
        loop {
            if let Some(zone) = self.zones.get(&candidate) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }

    /// Number of A and AAAA records served, over all zones.
    pub fn record_count(&self) -> usize {
        self.zones
            .values()
            .flat_map(|z| z.nodes.values())
            .map(|n| n.a.len() + n.aaaa.len())
            .sum()
    }
}

/// Builds a snapshot from source data. Pure: the same input gives the same output.
///
/// SOA serials: a zone whose data equals the one in `previous` keeps its serial; a
/// new or changed zone gets `max(now_unix, previous + 1)`, so serials never go down,
/// across restarts either, as long as the clock does not run backwards.
pub fn build(
    zones: &[ZoneData],
    settings: Settings,
    previous: Option<&Snapshot>,
    now_unix: u64,
) -> Snapshot {
    let mut built = HashMap::with_capacity(zones.len());
    for data in zones {
        let key = LowerName::new(&data.origin);
        let prev = previous.and_then(|p| p.zones.get(&key));
        let serial = match prev {
            Some(prev) if prev.data == *data => prev.serial(),
            Some(prev) => next_serial(prev.serial(), now_unix),
            None => now_unix as u32,
        };
        built.insert(key, build_zone(data, serial));
    }
    let fast = FastIndex {
        zones: built
            .values()
            .map(|z| (wire_lower(&z.origin), fast_zone(z)))
            .collect(),
    };
    Snapshot {
        zones: built,
        settings,
        fast,
    }
}

fn next_serial(previous: u32, now_unix: u64) -> u32 {
    let now = now_unix as u32;
    // RFC 1982 comparison: `now` must be "greater than" previous.
    let delta = now.wrapping_sub(previous);
    if delta == 0 || delta >= 1 << 31 {
        previous.wrapping_add(1)
    } else {
        now
    }
}

fn build_zone(data: &ZoneData, serial: u32) -> Zone {
    let origin = data.origin.to_lowercase();
    let soa = Record::from_rdata(
        origin.clone(),
        data.soa.ttl,
        RData::SOA(SOA::new(
            data.soa.mname.clone(),
            data.soa.rname.clone(),
            serial,
            data.soa.refresh as i32,
            data.soa.retry as i32,
            data.soa.expire as i32,
            data.soa.minimum,
        )),
    );
    let ns = data
        .ns
        .iter()
        .map(|n| Record::from_rdata(origin.clone(), data.ns_ttl, RData::NS(NS(n.clone()))))
        .collect();

    let mut nodes: HashMap<LowerName, Node> = HashMap::new();
    nodes.insert(LowerName::new(&origin), Node::default());
    for rec in &data.records {
        let owner = rec.name.to_lowercase();
        let node = nodes.entry(LowerName::new(&owner)).or_default();
        let mut seen4 = HashSet::new();
        for ip in &rec.a {
            if seen4.insert(*ip) {
                node.a
                    .push(Record::from_rdata(owner.clone(), rec.ttl, RData::A(A(*ip))));
            }
        }
        let mut seen6 = HashSet::new();
        for ip in &rec.aaaa {
            if seen6.insert(*ip) {
                node.aaaa.push(Record::from_rdata(
                    owner.clone(),
                    rec.ttl,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
        // Every ancestor between the name and the apex exists (RFC 8020): an
        // empty non-terminal, unless it has data of its own.
        let mut parent = owner.base_name();
        while origin.zone_of(&parent) && parent.num_labels() > origin.num_labels() {
            nodes.entry(LowerName::new(&parent)).or_default();
            parent = parent.base_name();
        }
    }
    for node in nodes.values_mut() {
        node.a_wire = encode_answers(&node.a);
        node.aaaa_wire = encode_answers(&node.aaaa);
    }
    let negative_ttl = data.soa.ttl.min(data.soa.minimum);
    Zone {
        origin,
        negative_wire: encode_negative(&soa, negative_ttl),
        negative_ttl,
        soa,
        ns,
        nodes,
        data: data.clone(),
    }
}

/// The current snapshot, swapped whole. Readers call [`SnapshotStore::load`] and never block.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
}

impl SnapshotStore {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The snapshot to answer from; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A clone of the current `Arc`, for work that outlives one query.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The one way to change what is served.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn zone(records: Vec<RecordData>) -> ZoneData {
        ZoneData {
            origin: name("example.com."),
            ns: vec![name("ns1.example.com.")],
            ns_ttl: 3600,
            soa: SoaParams {
                mname: name("ns1.example.com."),
                rname: name("hostmaster.example.com."),
                refresh: 3600,
                retry: 900,
                expire: 1_209_600,
                minimum: 60,
                ttl: 3600,
            },
            records,
        }
    }

    fn rec(n: &str, a: &[&str]) -> RecordData {
        RecordData {
            name: name(n),
            ttl: 60,
            a: a.iter().map(|s| s.parse().unwrap()).collect(),
            aaaa: vec![],
        }
    }

    fn lower(s: &str) -> LowerName {
        LowerName::new(&name(s))
    }

    #[test]
    fn builder_table() {
        let data = zone(vec![
            rec("www.example.com.", &["192.0.2.1", "192.0.2.1", "192.0.2.2"]),
            rec("a.b.c.example.com.", &["192.0.2.3"]),
            rec("*.s3.example.com.", &["192.0.2.4"]),
            rec("WWW2.Example.COM.", &["192.0.2.5"]),
        ]);
        let snap = build(&[data], Settings::default(), None, 1_700_000_000);
        let z = snap.find_zone(&lower("x.example.com.")).unwrap();
        // (name, exists, number of A records)
        let rows: &[(&str, bool, usize)] = &[
            ("example.com.", true, 0),          // apex is always a node
            ("www.example.com.", true, 2),      // duplicate address folded
            ("b.c.example.com.", true, 0),      // empty non-terminal
            ("c.example.com.", true, 0),        // empty non-terminal
            ("a.b.c.example.com.", true, 1),    // leaf
            ("s3.example.com.", true, 0),       // ENT created by the wildcard
            ("*.s3.example.com.", true, 1),     // the wildcard owner itself
            ("www2.example.com.", true, 1),     // case folded
            ("nothere.example.com.", false, 0), // absent
        ];
        for (n, exists, count) in rows {
            let node = z.nodes.get(&lower(n));
            assert_eq!(node.is_some(), *exists, "{n}");
            assert_eq!(node.map_or(0, |n| n.a.len()), *count, "{n}");
        }
        assert_eq!(z.negative_ttl, 60, "min(SOA TTL, minimum)");
        assert_eq!(z.serial(), 1_700_000_000);
        assert_eq!(snap.record_count(), 5);
    }

    #[test]
    fn most_specific_zone_wins() {
        let parent = zone(vec![]);
        let mut child = zone(vec![]);
        child.origin = name("sub.example.com.");
        let snap = build(&[parent, child], Settings::default(), None, 1);
        let origin = |q: &str| snap.find_zone(&lower(q)).map(|z| z.origin.to_string());
        assert_eq!(
            origin("a.sub.example.com."),
            Some("sub.example.com.".into())
        );
        assert_eq!(origin("sub.example.com."), Some("sub.example.com.".into()));
        assert_eq!(origin("b.example.com."), Some("example.com.".into()));
        assert_eq!(origin("com."), None);
        assert_eq!(origin("example.org."), None);
        assert_eq!(
            origin("notexample.com."),
            None,
            "suffix-alike is not inside"
        );
    }

    #[test]
    fn serial_kept_when_unchanged_and_increases_when_changed() {
        let first = build(&[zone(vec![])], Settings::default(), None, 1000);
        let same = build(&[zone(vec![])], Settings::default(), Some(&first), 5000);
        let key = lower("example.com.");
        assert_eq!(same.zones[&key].serial(), 1000);
        let changed = build(
            &[zone(vec![rec("w.example.com.", &["192.0.2.1"])])],
            Settings::default(),
            Some(&same),
            5000,
        );
        assert_eq!(changed.zones[&key].serial(), 5000);
        // The clock went backwards: the serial still increases.
        let again = build(&[zone(vec![])], Settings::default(), Some(&changed), 10);
        assert_eq!(again.zones[&key].serial(), 5001);
        // Wrap-around per RFC 1982.
        assert_eq!(next_serial(u32::MAX, 5), 5);
    }

    #[test]
    fn store_swaps_whole_snapshots() {
        let key = LowerName::new(&Name::from_ascii("example.com.").unwrap());
        let store = SnapshotStore::new(build(&[zone(vec![])], Settings::default(), None, 1));
        let before = store.load_full();
        store.publish(build(&[zone(vec![])], Settings::default(), None, 2));
        assert_eq!(
            before.zones[&key].serial(),
            1,
            "readers keep the snapshot they loaded"
        );
        assert_eq!(
            store.load().zones[&key].serial(),
            2,
            "new readers see the new one"
        );
    }
}
