//! The immutable snapshot the answering core reads: zones, names and record sets,
//! and what is being served.
//!
//! Sources (static config, AWS discovery) produce plain [`ZoneData`]; [`build`]
//! turns them into a [`Snapshot`] with one pure function. The snapshot has one index,
//! keyed by lower-cased wire-format names ([`QName`]), and one lookup,
//! [`Snapshot::lookup`], which both encoders use: the general core
//! ([`crate::answer`]) and the UDP fast path ([`crate::fast`]). A refresh builds a
//! whole new snapshot inside [`SnapshotStore::update`], the one way to publish;
//! readers never lock. This module does no I/O and knows nothing about sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use rustc_hash::FxHashMap;

use crate::access::{Acl, TransferPolicy, TsigKey};
use crate::journal::{self, Delta, Journal, Step};
pub use crate::names::Node;
use crate::names::{A_RR_LEN, AAAA_RR_LEN, Names, NamesBuilder};
use crate::wire::{HEADER_LEN, MAX_NAME, QName, name_wire};

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

/// One zone, as a source produces it. The config's zones are the same shape with
/// records that say where their addresses come from ([`crate::config::ZoneConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneData<R = RecordData> {
    pub origin: Name,
    /// NS names served at the apex (at least one).
    pub ns: Vec<Name>,
    /// TTL of the apex NS RRset.
    pub ns_ttl: u32,
    pub soa: SoaParams,
    pub records: Vec<R>,
    /// Names whose addresses never change (static records, a zone file), indexed once
    /// when the config is read; a snapshot of a zone without other records shares it.
    pub fixed: Arc<Names>,
    /// Who may transfer the zone, and whom to NOTIFY.
    pub transfer: Arc<TransferPolicy>,
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
    /// Sources allowed to query; `None`: everyone.
    pub allow_query: Option<Acl>,
    /// TSIG keys, sorted as configured.
    pub keys: Vec<TsigKey>,
    /// The IXFR journal's byte budget over all zones (`journal-max-bytes`).
    pub journal_max_bytes: usize,
    /// `[catalog]`: a catalog zone of the transferable zones, if configured.
    pub catalog: Option<Arc<CatalogSettings>>,
    /// `[follow]`: whose NOTIFY to take for the followed zones.
    pub follow: Option<Arc<crate::access::FollowPeers>>,
}

/// `[catalog]`: an RFC 9432 catalog of every zone that can be transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// The catalog zone's name, lower-cased.
    pub origin: Name,
    pub soa: SoaParams,
    /// `[transfer]`: who may transfer it (and query it), and whom to NOTIFY.
    pub transfer: Arc<TransferPolicy>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            udp_payload_size: 1232,
            identity: None,
            version: None,
            allow_query: None,
            keys: Vec::new(),
            journal_max_bytes: journal::DEFAULT_MAX_BYTES,
            catalog: None,
            follow: None,
        }
    }
}

/// Where one discovery target's served data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// A discovery, at this unix time.
    Aws { fetched_at: u64 },
    /// The cache file, saved at this unix time.
    Cache { saved_at: u64 },
}

impl DataSource {
    pub fn unix(self) -> u64 {
        match self {
            Self::Aws { fetched_at } => fetched_at,
            Self::Cache { saved_at } => saved_at,
        }
    }
}

/// What a snapshot serves: for every discovery target of its config, where the data
/// came from (`None`: no data yet; its AWS-backed names answer NODATA). Stored in
/// the snapshot, so `/readyz` and `/metrics` always describe the data being answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// False only for the empty snapshot a server starts with, before any load.
    pub published: bool,
    pub targets: Vec<(String, Option<DataSource>)>,
    /// VPC endpoints in the data being served.
    pub endpoints: usize,
}

impl Served {
    /// What a config without discovery targets serves once built.
    pub fn static_config() -> Self {
        Self {
            published: true,
            ..Self::default()
        }
    }

    /// Published, and every target has data (from AWS or a matching cache).
    pub fn ready(&self) -> bool {
        self.published && self.targets.iter().all(|(_, s)| s.is_some())
    }

    /// The targets without data.
    pub fn missing(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(t, _)| t.as_str())
            .collect()
    }

    /// Some target's data came from the cache file.
    pub fn from_cache(&self) -> bool {
        self.targets
            .iter()
            .any(|(_, s)| matches!(s, Some(DataSource::Cache { .. })))
    }

    /// Unix time of the oldest data served, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.targets
            .iter()
            .filter_map(|(_, s)| s.map(DataSource::unix))
            .min()
    }
}

/// The SOA RR of negative answers, but for its owner and RDLENGTH. MNAME and RNAME
/// are compressed per answer against the question name (which ends in the apex), so
/// querying the name server's own name costs two bytes, as in Knot and NSD.
#[derive(Debug, Clone, Default)]
struct NegativeSoa {
    /// Type, class and TTL.
    head: [u8; 8],
    /// MNAME and RNAME, uncompressed, as configured.
    names: [Box<[u8]>; 2],
    /// SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM.
    tail: [u8; 20],
}

/// How one SOA name is written into one answer: its first `prefix` bytes, then a
/// pointer (if some suffix of it is in the question), else the whole name.
#[derive(Debug, Clone, Copy)]
struct Compressed {
    prefix: usize,
    pointer: Option<u16>,
}

impl Compressed {
    /// The longest suffix of `name` (not the root alone) that is a suffix of `qname`.
    #[inline]
    fn against(name: &[u8], qname: &QName) -> Self {
        let mut at = 0;
        while let Some(&len) = name.get(at).filter(|len| **len != 0) {
            let suffix = &name[at..];
            if let Some(j) =
                (0..qname.label_count()).find(|&j| qname.suffix(j).eq_ignore_ascii_case(suffix))
            {
                let pointer = 0xC000 | (HEADER_LEN + qname.suffix_offset(j)) as u16;
                return Self {
                    prefix: at,
                    pointer: Some(pointer),
                };
            }
            at += 1 + usize::from(len);
        }
        Self {
            prefix: name.len(),
            pointer: None,
        }
    }

    fn len(&self) -> usize {
        self.prefix + if self.pointer.is_some() { 2 } else { 0 }
    }
}

/// The negative-answer SOA RR for one question, ready to write.
#[derive(Debug, Clone, Copy)]
pub struct Negative<'z> {
    soa: &'z NegativeSoa,
    /// Pointer to the apex in the question.
    owner: u16,
    names: [Compressed; 2],
}

impl Negative<'_> {
    #[inline]
    pub fn wire_len(&self) -> usize {
        2 + 10 + self.names[0].len() + self.names[1].len() + 20
    }

    /// Writes the RR at the start of `out`; returns its length, `None` if `out` is short.
    #[inline]
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.wire_len();
        let out = out.get_mut(..len)?;
        out[..2].copy_from_slice(&self.owner.to_be_bytes());
        out[2..10].copy_from_slice(&self.soa.head);
        let rdlength = (len - 12) as u16;
        out[10..12].copy_from_slice(&rdlength.to_be_bytes());
        let mut w = 12;
        for (name, c) in self.soa.names.iter().zip(&self.names) {
            out[w..w + c.prefix].copy_from_slice(&name[..c.prefix]);
            w += c.prefix;
            if let Some(pointer) = c.pointer {
                out[w..w + 2].copy_from_slice(&pointer.to_be_bytes());
                w += 2;
            }
        }
        out[w..].copy_from_slice(&self.soa.tail);
        Some(len)
    }
}

/// A built zone: every name (and every empty non-terminal) keyed by its lower-cased
/// wire form.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower-cased.
    pub origin: Name,
    pub soa: Record,
    /// TTL for the SOA in negative answers: min(SOA TTL, SOA minimum) (RFC 2308 section 3).
    pub negative_ttl: u32,
    pub ns: Vec<Record>,
    nodes: Arc<Names>,
    negative: NegativeSoa,
    transfer: Arc<TransferPolicy>,
    /// Records of other types than A and AAAA (a catalog's TXT and PTRs), owners
    /// lower-cased, in canonical order.
    other: Arc<[Record]>,
    /// The catalog zone: answered only to clients that may transfer it.
    catalog: bool,
    /// Transferred from a primary (`[follow]`): its serial is the primary's, and it
    /// is carried over by every build until the follower drops it.
    followed: bool,
    /// A followed zone past its SOA expire without contact: SERVFAIL.
    expired: bool,
}

impl Zone {
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    fn set_serial(&mut self, serial: u32) {
        if let RData::SOA(soa) = &mut self.soa.data {
            soa.serial = serial;
        }
        self.negative.tail[..4].copy_from_slice(&serial.to_be_bytes());
    }

    /// The same answers but for the SOA serial: a rebuild of unchanged data keeps
    /// its serial. (The built zone is compared, not the source data: no copy of the
    /// source is kept.)
    fn same_content(&self, other: &Zone) -> bool {
        let timers = |z: &Zone| match &z.soa.data {
            RData::SOA(s) => Some((s.refresh, s.retry, s.expire, s.minimum)),
            _ => None,
        };
        self.origin == other.origin
            && self.soa.ttl == other.soa.ttl
            && timers(self) == timers(other)
            && self.negative.head == other.negative.head
            && self.negative.names == other.negative.names
            && self.ns == other.ns // (Record's == leaves out the TTL)
            && self.ns.iter().map(|r| r.ttl).eq(other.ns.iter().map(|r| r.ttl))
            && self.nodes == other.nodes
            && self.other == other.other
    }

    /// Records of other types than A and AAAA (a catalog's), in canonical order.
    pub fn other(&self) -> &[Record] {
        &self.other
    }

    /// Whether this is the catalog zone (RFC 9432).
    pub fn is_catalog(&self) -> bool {
        self.catalog
    }

    /// Whether this zone was transferred from the primary (`[follow]`).
    pub fn is_followed(&self) -> bool {
        self.followed
    }

    /// Whether this followed zone is past its SOA expire: answered SERVFAIL.
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// The node at exactly `name` (no wildcard), if it exists.
    pub fn node(&self, name: &Name) -> Option<Node<'_>> {
        self.nodes.get(QName::from_name(name)?.as_bytes())
    }

    /// What must be equal for a delta of A/AAAA records to be the whole difference
    /// between two versions: the NS set and the SOA but for its serial.
    fn shape(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        if let RData::SOA(soa) = &self.soa.data {
            soa.mname.hash(&mut h);
            soa.rname.hash(&mut h);
            (soa.refresh, soa.retry, soa.expire, soa.minimum).hash(&mut h);
        }
        self.soa.ttl.hash(&mut h);
        for ns in &self.ns {
            ns.data.to_string().hash(&mut h);
            ns.ttl.hash(&mut h);
        }
        h.finish()
    }

    /// The A/AAAA records this version has that `next` has not, and the reverse, as
    /// an IXFR delta. One hash lookup and one compare per name, no sort: done once
    /// per publication, by the writer.
    fn delta_to(&self, next: &Zone) -> Delta {
        let (mut deleted, mut added) = (Vec::new(), Vec::new());
        if !Arc::ptr_eq(&self.nodes, &next.nodes) {
            for (name, node) in next.nodes.iter() {
                let before = self.nodes.get(name).unwrap_or_default();
                if before != node {
                    let (d, a) = (&mut deleted, &mut added);
                    rrset_delta(name, before.a, node.a, A_RR_LEN, d, a);
                    rrset_delta(name, before.aaaa, node.aaaa, AAAA_RR_LEN, d, a);
                }
            }
            for (name, node) in self.nodes.iter() {
                if !next.nodes.contains(name) {
                    let (d, a) = (&mut deleted, &mut added);
                    rrset_delta(name, node.a, &[], A_RR_LEN, d, a);
                    rrset_delta(name, node.aaaa, &[], AAAA_RR_LEN, d, a);
                }
            }
        }
        if self.other != next.other {
            let old: rustc_hash::FxHashSet<Vec<u8>> =
                self.other.iter().filter_map(record_wire).collect();
            let new: rustc_hash::FxHashSet<Vec<u8>> =
                next.other.iter().filter_map(record_wire).collect();
            deleted.extend(
                self.other
                    .iter()
                    .filter_map(record_wire)
                    .filter(|w| !new.contains(w))
                    .flatten(),
            );
            added.extend(
                next.other
                    .iter()
                    .filter_map(record_wire)
                    .filter(|w| !old.contains(w))
                    .flatten(),
            );
        }
        Delta::new(self.serial(), next.serial(), deleted, added)
    }

    /// Every name with its node, sorted (DNSSEC canonical order).
    pub fn names(&self) -> Vec<(Name, Node<'_>)> {
        let mut names: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|(wire, node)| Some((Name::from_bytes(wire).ok()?, node)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names
    }

    /// Every A and AAAA RR of the zone, as (owner in lower-cased wire form, the RR
    /// after its owner: type, class, TTL, RDLENGTH, RDATA), name by name.
    pub fn rrs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.nodes.iter().flat_map(|(name, node)| {
            node.a
                .chunks_exact(A_RR_LEN)
                .chain(node.aaaa.chunks_exact(AAAA_RR_LEN))
                .map(move |rr| (name, &rr[2..]))
        })
    }

    /// Who may transfer this zone, and whom to NOTIFY.
    pub fn transfer(&self) -> &Arc<TransferPolicy> {
        &self.transfer
    }

    /// The SOA RR for a negative answer to `qname`, whose apex starts at `apex`
    /// within it (see [`Lookup`]).
    #[inline]
    pub fn negative(&self, qname: &QName, apex: usize) -> Negative<'_> {
        let soa = &self.negative;
        Negative {
            soa,
            owner: 0xC000 | (HEADER_LEN + apex) as u16,
            names: [
                Compressed::against(&soa.names[0], qname),
                Compressed::against(&soa.names[1], qname),
            ],
        }
    }
}

/// What a name is in the snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'s> {
    /// In no zone of ours.
    NotOurs,
    /// In `zone`, and does not exist. `apex` is the offset of the zone's origin
    /// within the name (where negative answers point their SOA owner).
    NxDomain { zone: &'s Zone, apex: usize },
    /// Exists in `zone`, itself or through a wildcard (RFC 4592). `apex` as above; 0
    /// when the name is the apex.
    Found {
        zone: &'s Zone,
        node: Node<'s>,
        apex: usize,
    },
}

/// Everything the answering core needs, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    zones: FxHashMap<Box<[u8]>, Zone>,
    pub settings: Settings,
    /// Where the data came from; `/readyz` and `/metrics` derive from it.
    pub served: Served,
    /// The transferable zones' recent changes, as of this snapshot (see
    /// [`crate::journal`]); set by the store when it publishes.
    journal: Arc<Journal>,
}

impl Snapshot {
    /// Finds `name`: the most specific zone that contains it, then the name or the
    /// wildcard at its closest encloser (RFC 4592). The one lookup both encoders use.
    #[inline]
    pub fn lookup(&self, name: &QName) -> Lookup<'_> {
        let labels = name.label_count();
        let Some((zone, apex_label)) =
            (0..=labels).find_map(|i| self.zones.get(name.suffix(i)).map(|z| (z, i)))
        else {
            return Lookup::NotOurs;
        };
        let apex = name.suffix_offset(apex_label);
        let node = zone
            .nodes
            .get(name.as_bytes())
            .or_else(|| wildcard(zone, name, apex_label));
        match node {
            Some(node) => Lookup::Found { zone, node, apex },
            None => Lookup::NxDomain { zone, apex },
        }
    }

    /// The zone whose origin is `origin`.
    pub fn zone(&self, origin: &Name) -> Option<&Zone> {
        self.zones.get(QName::from_name(origin)?.as_bytes())
    }

    /// The zone whose origin is `key` in lower-cased wire form.
    pub fn zone_by_key(&self, key: &[u8]) -> Option<&Zone> {
        self.zones.get(key)
    }

    /// The IXFR journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The deltas from serial `from` of `zone` (one of this snapshot's) to its
    /// current version, oldest first; `None` if the journal does not go back to it.
    pub fn ixfr_deltas(
        &self,
        zone: &Zone,
        from: u32,
    ) -> Option<impl Iterator<Item = &Delta> + Clone + Send> {
        let key = QName::from_name(&zone.origin)?;
        self.journal.since(key.as_bytes(), from, zone.serial())
    }

    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    /// Number of A and AAAA records served, over all zones.
    pub fn record_count(&self) -> usize {
        self.zones
            .values()
            .flat_map(|z| z.nodes.iter())
            .map(|(_, node)| node.count())
            .sum()
    }

    /// The catalog zone's key, when `[catalog]` is set.
    fn catalog_key(&self) -> Option<QName> {
        QName::from_name(&self.settings.catalog.as_ref()?.origin)
    }

    /// Gives the catalog's members the IDs `saved` (before a restart) had for them;
    /// a member `saved` does not have is new since then and gets an ID of `now`
    /// (unless nothing was saved: the first catalog ever keeps its name-only IDs).
    /// The serial stays.
    fn restore_catalog_ids(&mut self, saved: &FxHashMap<Name, String>, now: u64) {
        let Some(settings) = self.settings.catalog.clone() else {
            return;
        };
        let Some(zone) = self
            .catalog_key()
            .and_then(|key| self.zones.get_mut(key.as_bytes()))
        else {
            return;
        };
        let zones: Vec<Name> = crate::catalog::ids(&zone.other).into_keys().collect();
        let members = crate::catalog::assign(&zones, (!saved.is_empty()).then_some(saved), now);
        let serial = zone.serial();
        *zone = build_catalog(&settings, &members);
        zone.set_serial(serial);
    }

    /// Adds or replaces the followed zone `zone`. False (and nothing changed) when
    /// a configured or discovered zone has its name: that one is served.
    pub fn put_followed(&mut self, zone: Zone) -> bool {
        let Some(key) = QName::from_name(&zone.origin) else {
            return false;
        };
        if self.zones.get(key.as_bytes()).is_some_and(|z| !z.followed) {
            return false;
        }
        self.zones.insert(key.as_bytes().into(), zone);
        true
    }

    /// Drops the followed zones `keep` says no to (a configured zone stays).
    pub fn retain_followed(&mut self, mut keep: impl FnMut(&Name) -> bool) {
        self.zones.retain(|_, z| !z.followed || keep(&z.origin));
    }

    /// Marks the followed zone `origin` expired (answered SERVFAIL) or not.
    pub fn set_expired(&mut self, origin: &Name, expired: bool) {
        if let Some(key) = QName::from_name(origin)
            && let Some(zone) = self.zones.get_mut(key.as_bytes())
            && zone.followed
        {
            zone.expired = expired;
        }
    }

    /// The followed zones past their SOA expire.
    pub fn expired_zones(&self) -> Vec<&Name> {
        let mut out: Vec<&Name> = self
            .zones
            .values()
            .filter(|z| z.expired)
            .map(|z| &z.origin)
            .collect();
        out.sort();
        out
    }

    /// The snapshot with `served` as its description.
    pub fn with_served(mut self, served: Served) -> Self {
        self.served = served;
        self
    }
}

/// `record` in a journal's form: its owner (lower-cased wire form), then type, class,
/// TTL, RDLENGTH and RDATA, uncompressed.
fn record_wire(record: &Record) -> Option<Vec<u8>> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let owner = QName::from_name(&record.name)?;
    let mut rdata = Vec::new();
    let mut encoder = BinEncoder::new(&mut rdata);
    encoder.set_canonical_form(true);
    record.data.emit(&mut encoder).ok()?;
    let mut out = owner.as_bytes().to_vec();
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&rdata);
    Some(out)
}

/// Appends the RRs of `old` missing from `new` to `deleted`, and the reverse to
/// `added`, owned by `owner`. The RRs are pre-encoded, `len` bytes each, behind a
/// 2-byte owner pointer that every one shares.
fn rrset_delta(
    owner: &[u8],
    old: &[u8],
    new: &[u8],
    len: usize,
    deleted: &mut Vec<u8>,
    added: &mut Vec<u8>,
) {
    if old == new {
        return;
    }
    let one_side = |from: &[u8], other: &[u8], out: &mut Vec<u8>| {
        let others = other.chunks_exact(len);
        if other.len() / len <= 32 {
            // The usual RRset: a few addresses.
            for rr in from.chunks_exact(len) {
                if !others.clone().any(|o| o == rr) {
                    journal::push_record(out, owner, &rr[2..]);
                }
            }
        } else {
            let set: rustc_hash::FxHashSet<&[u8]> = others.collect();
            for rr in from.chunks_exact(len) {
                if !set.contains(rr) {
                    journal::push_record(out, owner, &rr[2..]);
                }
            }
        }
    };
    one_side(old, new, deleted);
    one_side(new, old, added);
}

/// RFC 4592: the `*` child of the closest encloser, for a name that does not exist.
/// The encloser is the longest existing ancestor between the name and the apex.
#[inline]
fn wildcard<'z>(zone: &'z Zone, name: &QName, apex_label: usize) -> Option<Node<'z>> {
    let encloser = (1..=apex_label)
        .map(|i| name.suffix(i))
        .find(|suffix| zone.nodes.contains(suffix))?;
    let mut key = [0u8; MAX_NAME + 2];
    key[..2].copy_from_slice(b"\x01*");
    key[2..2 + encloser.len()].copy_from_slice(encloser);
    zone.nodes.get(&key[..2 + encloser.len()])
}

/// Builds a snapshot from source data. Pure: the same input gives the same output.
/// It serves a static config (see [`Snapshot::with_served`]).
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
    let mut built = FxHashMap::default();
    built.reserve(zones.len());
    for data in zones {
        let Some(key) = QName::from_name(&data.origin) else {
            // A Name is at most 255 bytes, so this cannot happen; if it does, say so.
            tracing::error!(origin = %data.origin, "zone name cannot be indexed; not served");
            continue;
        };
        let mut zone = build_zone(data);
        let prev = previous.and_then(|p| p.zones.get(key.as_bytes()));
        let serial = match prev {
            Some(prev) if prev.same_content(&zone) => prev.serial(),
            Some(prev) => next_serial(prev.serial(), now_unix),
            None => now_unix as u32,
        };
        zone.set_serial(serial);
        built.insert(key.as_bytes().into(), zone);
    }
    // Followed zones are the follower's to add and drop: every other build keeps
    // them (none when `[follow]` is gone), under the transfer policy the settings
    // carry (`[transfer]`).
    if let (Some(previous), Some(follow)) = (previous, &settings.follow) {
        for (key, zone) in previous.zones.iter().filter(|(_, z)| z.followed) {
            if built.contains_key(key) {
                tracing::error!(zone = %zone.origin, "a followed zone has the name of a configured or discovered zone; that one is served");
                continue;
            }
            let mut zone = zone.clone();
            zone.transfer = follow.transfer.clone();
            built.insert(key.clone(), zone);
        }
    }
    if let Some(catalog) = &settings.catalog
        && let Some(key) = QName::from_name(&catalog.origin)
    {
        if built.remove(key.as_bytes()).is_some() {
            // The config refuses this for configured zones; a discovered one loses.
            tracing::error!(zone = %catalog.origin, "a zone has the catalog's name; the catalog is served instead");
        }
        let mut zones: Vec<Name> = built
            .values()
            .filter(|z| !z.transfer.allow.is_empty())
            .map(|z| z.origin.clone())
            .collect();
        zones.sort();
        let prev = previous.and_then(|p| p.zones.get(key.as_bytes()));
        let ids = prev.map(|z| crate::catalog::ids(&z.other));
        let members = crate::catalog::assign(&zones, ids.as_ref(), now_unix);
        let mut zone = build_catalog(catalog, &members);
        let serial = match prev {
            Some(prev) if prev.same_content(&zone) => prev.serial(),
            Some(prev) => next_serial(prev.serial(), now_unix),
            None => now_unix as u32,
        };
        zone.set_serial(serial);
        built.insert(key.as_bytes().into(), zone);
    }
    Snapshot {
        zones: built,
        settings,
        served: Served::static_config(),
        journal: Arc::default(),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it): serials, TSIG times,
/// data ages.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_serial(previous: u32, now_unix: u64) -> u32 {
    use hickory_proto::rr::SerialNumber;
    let now = now_unix as u32;
    // RFC 1982 comparison: `now` must be "greater than" previous.
    if SerialNumber::from(now) > SerialNumber::from(previous) {
        now
    } else {
        previous.wrapping_add(1)
    }
}

/// The zone with serial 0; [`Zone::set_serial`] gives it its own.
fn build_zone(data: &ZoneData) -> Zone {
    let origin = data.origin.to_lowercase();
    let soa = SOA::new(
        data.soa.mname.clone(),
        data.soa.rname.clone(),
        0,
        data.soa.refresh as i32,
        data.soa.retry as i32,
        data.soa.expire as i32,
        data.soa.minimum,
    );
    let negative_ttl = data.soa.ttl.min(data.soa.minimum);
    let negative = encode_negative(&soa, negative_ttl);
    let ns = data
        .ns
        .iter()
        .map(|n| Record::from_rdata(origin.clone(), data.ns_ttl, RData::NS(NS(n.clone()))))
        .collect();
    Zone {
        nodes: build_nodes(&origin, data),
        soa: Record::from_rdata(origin.clone(), data.soa.ttl, RData::SOA(soa)),
        origin,
        negative_ttl,
        negative,
        ns,
        transfer: data.transfer.clone(),
        other: Arc::new([]),
        catalog: false,
        followed: false,
        expired: false,
    }
}

/// A zone transferred from a primary, served as it came: its SOA (serial included),
/// apex NS and the A and AAAA records of every name. `records` are the zone's RRs
/// but the SOA, owners inside `origin`. Other types (or NS below the apex) are an
/// error naming the first: a follower serves what privatelink-dns serves.
pub fn build_followed(
    origin: &Name,
    soa: &Record,
    records: &[Record],
    transfer: Arc<TransferPolicy>,
) -> Result<Zone, String> {
    let origin = origin.to_lowercase();
    let RData::SOA(soa_data) = &soa.data else {
        return Err("no SOA at the apex".into());
    };
    let key = QName::from_name(&origin).ok_or("the zone name cannot be indexed")?;
    let mut builder = NamesBuilder::new(key.as_bytes());
    builder.add_name(key.as_bytes());
    let mut ns = Vec::new();
    for r in records {
        let owner = r.name.to_lowercase();
        if !origin.zone_of(&owner) {
            return Err(format!("{owner} is outside the zone"));
        }
        let owner_key =
            QName::from_name(&owner).ok_or_else(|| format!("{owner} cannot be indexed"))?;
        match &r.data {
            RData::A(a) => builder.add(owner_key.as_bytes(), r.ttl, 0, IpAddr::V4(a.0)),
            RData::AAAA(a) => builder.add(owner_key.as_bytes(), r.ttl, 0, IpAddr::V6(a.0)),
            RData::NS(_) if owner == origin => {
                let mut r = r.clone();
                r.name = origin.clone();
                ns.push(r);
            }
            other => {
                return Err(format!(
                    "{owner} {} is not a type a follower serves (SOA, apex NS, A, AAAA)",
                    other.record_type()
                ));
            }
        }
    }
    if ns.is_empty() {
        return Err("no NS at the apex".into());
    }
    let (names, _) = builder.finish();
    let negative_ttl = soa.ttl.min(soa_data.minimum);
    let mut soa = soa.clone();
    soa.name = origin.clone();
    Ok(Zone {
        negative: encode_negative(soa_data, negative_ttl),
        soa,
        negative_ttl,
        nodes: Arc::new(names),
        origin,
        ns,
        transfer,
        other: Arc::new([]),
        catalog: false,
        followed: true,
        expired: false,
    })
}

/// The catalog zone of `settings` listing `members` (RFC 9432 version 2): SOA, NS
/// `invalid.`, `version` TXT "2", one PTR per member, and the names they make.
fn build_catalog(settings: &CatalogSettings, members: &[crate::catalog::Member]) -> Zone {
    let invalid = Name::from_ascii("invalid.").unwrap_or_else(|_| Name::root());
    let data = ZoneData {
        origin: settings.origin.clone(),
        soa: settings.soa.clone(),
        ns: vec![invalid],
        ns_ttl: settings.soa.ttl,
        fixed: Default::default(),
        records: Vec::new(),
        transfer: settings.transfer.clone(),
    };
    let mut zone = build_zone(&data);
    let other = crate::catalog::records(&zone.origin, members, settings.soa.ttl);
    let origin = QName::from_name(&zone.origin).map_or(vec![0], |q| q.as_bytes().to_vec());
    let mut builder = NamesBuilder::new(&origin);
    builder.add_name(&origin);
    for record in &other {
        if let Some(key) = QName::from_name(&record.name) {
            builder.add_name(key.as_bytes());
        }
    }
    zone.nodes = Arc::new(builder.finish().0);
    zone.other = other.into();
    zone.catalog = true;
    zone
}

/// Every name of the zone, and every empty non-terminal above one (RFC 8020): the
/// fixed names, shared as they are when the zone has no other records.
fn build_nodes(origin: &Name, data: &ZoneData) -> Arc<Names> {
    if data.records.is_empty() && !data.fixed.is_empty() {
        return data.fixed.clone();
    }
    let origin = QName::from_name(origin).map_or(vec![0], |q| q.as_bytes().to_vec());
    let mut builder = NamesBuilder::new(&origin);
    builder.add_names(&data.fixed);
    for rec in &data.records {
        let owner = rec.name.to_lowercase();
        let Some(key) = QName::from_name(&owner) else {
            tracing::error!(name = %owner, "record name cannot be indexed; not served");
            continue;
        };
        builder.add_name(key.as_bytes());
        let ips = rec.a.iter().map(|&v4| IpAddr::V4(v4));
        for ip in ips.chain(rec.aaaa.iter().map(|&v6| IpAddr::V6(v6))) {
            builder.add(key.as_bytes(), rec.ttl, 0, ip);
        }
    }
    Arc::new(builder.finish().0)
}

/// The parts of the negative SOA RR that do not depend on the question.
fn encode_negative(soa: &SOA, ttl: u32) -> NegativeSoa {
    let mut head = [0u8; 8];
    head[..2].copy_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    head[2..4].copy_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    head[4..].copy_from_slice(&ttl.to_be_bytes());
    let mut tail = [0u8; 20];
    let fields = [
        soa.serial,
        soa.refresh as u32,
        soa.retry as u32,
        soa.expire as u32,
        soa.minimum,
    ];
    for (chunk, v) in tail.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    NegativeSoa {
        head,
        names: [name_wire(&soa.mname), name_wire(&soa.rname)],
        tail,
    }
}

/// The current snapshot, swapped whole. Readers call [`SnapshotStore::load`] and
/// never block; [`SnapshotStore::update`] is the one way to change it.
#[derive(Debug)]
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    /// Held while a writer builds from the current snapshot, so two writers (the
    /// refresh loop and a reload) never build from the same one and lose a change.
    writer: Mutex<()>,
    /// Counts publications, for those who act on a change (NOTIFY).
    version: tokio::sync::watch::Sender<u64>,
    /// The last serials served, persisted (`state-dir`): set once at start.
    serials: std::sync::OnceLock<crate::state::Serials>,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        Self::new(Snapshot::default())
    }
}

impl SnapshotStore {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
            version: tokio::sync::watch::Sender::new(0),
            serials: std::sync::OnceLock::new(),
        }
    }

    /// From now on, no zone's serial goes below the last one `serials` says was
    /// served, and every serial published is persisted first. Once, before the first
    /// publication; a second call is ignored (`false`).
    pub fn persist_serials(&self, serials: crate::state::Serials) -> bool {
        self.serials.set(serials).is_ok()
    }

    /// The persisted serials, if `state-dir` is set.
    pub fn serials(&self) -> Option<&crate::state::Serials> {
        self.serials.get()
    }

    /// Wakes on every publication after this call.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The snapshot to answer from; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A clone of the current `Arc`, for work that outlives one query.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `next(current)`: the one way to change what is served. Writers are
    /// serialized; readers keep the snapshot they loaded until they drop it. Private to
    /// the crate: the refresh loop and a reload call it; `Server::store()` hands out a
    /// store that others can only read.
    pub(crate) fn update(&self, next: impl FnOnce(&Snapshot) -> Snapshot) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current.load_full();
        let mut snapshot = next(&previous);
        if let Some(serials) = self.serials.get() {
            // The first catalog since the start takes the member IDs saved.
            if let Some(key) = snapshot.catalog_key()
                && !previous.zones.contains_key(key.as_bytes())
            {
                snapshot.restore_catalog_ids(&serials.catalog_ids(), unix_now());
            }
            let catalog = snapshot
                .catalog_key()
                .and_then(|key| snapshot.zones.get(key.as_bytes()))
                .map(|zone| crate::catalog::ids(&zone.other));
            // A followed zone serves the primary's serial exactly.
            let mut zones: Vec<(Name, u32, bool)> = snapshot
                .zones
                .iter()
                .filter(|(_, zone)| !zone.followed)
                .map(|(key, zone)| {
                    let served = previous
                        .zones
                        .get(key)
                        .is_some_and(|p| p.serial() == zone.serial());
                    (zone.origin.clone(), zone.serial(), served)
                })
                .collect();
            serials.raise(&mut zones, catalog.as_ref());
            // The map is not changed in between: the same order.
            let own = snapshot.zones.values_mut().filter(|z| !z.followed);
            for (zone, (_, serial, _)) in own.zip(zones) {
                if zone.serial() != serial {
                    zone.set_serial(serial);
                }
            }
        }
        let steps = journal_steps(&previous, &snapshot);
        let budget = snapshot.settings.journal_max_bytes;
        snapshot.journal = Arc::new(previous.journal.next(steps, budget));
        drop(previous);
        // The old snapshot is freed here, or by the last reader that still holds it.
        drop(self.current.swap(Arc::new(snapshot)));
        self.version.send_modify(|v| *v += 1);
    }
}

/// What a publication did to each zone that keeps a journal (one whose transfer
/// `allow` names someone), with the delta of each that changed: computed here,
/// once, so no request ever diffs.
fn journal_steps(previous: &Snapshot, next: &Snapshot) -> Vec<(Box<[u8]>, Step)> {
    use hickory_proto::rr::SerialNumber;
    next.zones
        .iter()
        .filter(|(_, zone)| !zone.transfer.allow.is_empty())
        .map(|(key, zone)| {
            let step = match previous.zones.get(key) {
                Some(old) if old.serial() == zone.serial() => Step::Same,
                Some(old)
                    if SerialNumber::from(old.serial()) < SerialNumber::from(zone.serial())
                        && old.shape() == zone.shape() =>
                {
                    Step::Changed(old.delta_to(zone))
                }
                _ => Step::Restart,
            };
            (key.clone(), step)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TYPE_A;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// A zone with only static names serves the index the config built, not a copy
    /// (issue #15); one with AWS-backed records gets its own, with both kinds in it.
    #[test]
    fn static_names_are_shared_not_copied() {
        let config = crate::config::Config::from_toml(
            "[[zone]]\norigin = \"s.test\"\n[[zone.record]]\nname = \"a\"\na = [\"192.0.2.1\"]\n",
            "t",
        )
        .unwrap();
        let zones = crate::discovery::static_zones(&config);
        let snap = build(&zones, config.server.settings.clone(), None, 1);
        let built = snap.zone(&name("s.test.")).unwrap();
        assert!(Arc::ptr_eq(&built.nodes, &config.zones[0].fixed));
        let mut mixed = zones[0].clone();
        mixed.records.push(rec("b.s.test.", &["192.0.2.2"]));
        let snap = build(&[mixed], config.server.settings.clone(), None, 1);
        let built = snap.zone(&name("s.test.")).unwrap();
        assert!(!Arc::ptr_eq(&built.nodes, &config.zones[0].fixed));
        assert_eq!(built.nodes.len(), 3, "{:?}", built.nodes);
        assert!(
            built.node(&name("a.s.test.")).is_some() && built.node(&name("b.s.test.")).is_some()
        );
    }

    fn zone(records: Vec<RecordData>) -> ZoneData {
        ZoneData {
            origin: name("example.com."),
            ns: vec![name("ns1.example.com.")],
            ns_ttl: 3600,
            fixed: Default::default(),
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
            transfer: Default::default(),
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

    fn qname(s: &str) -> QName {
        QName::from_name(&name(s)).unwrap()
    }

    /// The origin of the zone `q` falls in, and whether the name exists there.
    fn find(snap: &Snapshot, q: &str) -> Option<(String, bool)> {
        match snap.lookup(&qname(q)) {
            Lookup::NotOurs => None,
            Lookup::NxDomain { zone, .. } => Some((zone.origin.to_string(), false)),
            Lookup::Found { zone, .. } => Some((zone.origin.to_string(), true)),
        }
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
        let z = snap.zone(&name("Example.COM.")).unwrap();
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
            let node = z.node(&name(n));
            assert_eq!(node.is_some(), *exists, "{n}");
            let a = node.map_or(0, |node| node.a_records(&name(n)).len());
            assert_eq!(a, *count, "{n}");
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
        let origin = |q: &str| find(&snap, q).map(|(origin, _)| origin);
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
        let serial = |s: &Snapshot| s.zone(&name("example.com.")).unwrap().serial();
        assert_eq!(serial(&same), 1000);
        let changed = build(
            &[zone(vec![rec("w.example.com.", &["192.0.2.1"])])],
            Settings::default(),
            Some(&same),
            5000,
        );
        assert_eq!(serial(&changed), 5000);
        // The clock went backwards: the serial still increases.
        let again = build(&[zone(vec![])], Settings::default(), Some(&changed), 10);
        assert_eq!(serial(&again), 5001);
        // Wrap-around per RFC 1982.
        assert_eq!(next_serial(u32::MAX, 5), 5);
    }

    #[test]
    fn every_change_of_content_and_nothing_else_changes_the_serial() {
        let base = || zone(vec![rec("w.example.com.", &["192.0.2.1"])]);
        let first = build(&[base()], Settings::default(), None, 1000);
        let serial = |data: ZoneData| {
            let next = build(&[data], Settings::default(), Some(&first), 2000);
            next.zone(&name("example.com.")).unwrap().serial()
        };
        assert_eq!(serial(base()), 1000, "unchanged");
        let two = |names: [&str; 2]| zone(names.iter().map(|n| rec(n, &["192.0.2.1"])).collect());
        let first = build(
            &[two(["a.example.com.", "b.c.example.com."])],
            Settings::default(),
            None,
            1000,
        );
        let reordered = build(
            &[two(["b.c.example.com.", "a.example.com."])],
            Settings::default(),
            Some(&first),
            2000,
        );
        let origin = name("example.com.");
        assert_eq!(
            reordered.zone(&origin).unwrap().serial(),
            1000,
            "names in another order"
        );
        type Change = Box<dyn Fn(&mut ZoneData)>;
        let changes: Vec<(&str, Change)> = vec![
            (
                "address",
                Box::new(|z| z.records[0].a[0] = "192.0.2.9".parse().unwrap()),
            ),
            ("record TTL", Box::new(|z| z.records[0].ttl = 61)),
            (
                "new name",
                Box::new(|z| z.records.push(rec("v.example.com.", &[]))),
            ),
            ("NS", Box::new(|z| z.ns.push(name("ns2.example.net.")))),
            ("NS TTL", Box::new(|z| z.ns_ttl = 7)),
            ("SOA minimum", Box::new(|z| z.soa.minimum = 30)),
            ("SOA refresh", Box::new(|z| z.soa.refresh = 60)),
            ("SOA TTL", Box::new(|z| z.soa.ttl = 60)),
            (
                "MNAME",
                Box::new(|z| z.soa.mname = name("ns9.example.com.")),
            ),
            ("RNAME", Box::new(|z| z.soa.rname = name("h.example.com."))),
        ];
        for (what, change) in changes {
            let mut data = base();
            change(&mut data);
            assert_eq!(serial(data), 2000, "{what}");
        }
    }

    #[test]
    fn store_swaps_whole_snapshots() {
        let serial = |s: &Snapshot| s.zone(&name("example.com.")).unwrap().serial();
        let store = SnapshotStore::new(build(&[zone(vec![])], Settings::default(), None, 1));
        let before = store.load_full();
        store.update(|prev| {
            assert_eq!(serial(prev), 1, "the writer builds from the current one");
            build(&[zone(vec![])], Settings::default(), None, 2)
        });
        assert_eq!(serial(&before), 1, "readers keep the snapshot they loaded");
        assert_eq!(serial(&store.load()), 2, "new readers see the new one");
    }

    #[test]
    fn writers_are_serialized() {
        // Each writer adds one to a counter kept in the snapshot; were two writers to
        // build from the same previous snapshot, an increment would be lost.
        let store = Arc::new(SnapshotStore::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        store.update(|prev| {
                            let mut next = prev.clone();
                            next.served.endpoints += 1;
                            std::thread::yield_now();
                            next
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.load().served.endpoints, 800);
    }

    #[test]
    fn lookup_table() {
        let data = zone(vec![
            rec("www.example.com.", &["192.0.2.1"]),
            rec("*.wild.example.com.", &["192.0.2.2"]),
            rec("exists.wild.example.com.", &[]),
            rec("a.b.example.com.", &["192.0.2.3"]),
        ]);
        let snap = build(&[data], Settings::default(), None, 1);
        // (name, found, A records in the node found, apex offset)
        let rows: &[(&str, bool, u16, usize)] = &[
            ("example.com.", true, 0, 0),
            ("WWW.example.com.", true, 1, 4),
            ("x.wild.example.com.", true, 1, 7),       // wildcard
            ("y.x.wild.example.com.", true, 1, 9),     // wildcard, deeper
            ("exists.wild.example.com.", true, 0, 12), // exists: no wildcard
            ("z.exists.wild.example.com.", false, 0, 14), // encloser has no `*`
            ("b.example.com.", true, 0, 2),            // empty non-terminal
            ("c.b.example.com.", false, 0, 4),         // below an ENT, no wildcard
            ("nope.example.com.", false, 0, 5),
        ];
        for (q, found, a, apex_at) in rows {
            match snap.lookup(&qname(q)) {
                Lookup::Found { node, apex, .. } => {
                    assert!(found, "{q}: found");
                    assert_eq!(node.rrset(TYPE_A).1, *a, "{q}");
                    assert_eq!(apex, *apex_at, "{q}: apex offset");
                }
                Lookup::NxDomain { apex, .. } => {
                    assert!(!found, "{q}: NXDOMAIN");
                    assert_eq!(apex, *apex_at, "{q}: apex offset");
                }
                Lookup::NotOurs => panic!("{q}: not ours"),
            }
        }
        assert!(matches!(
            snap.lookup(&qname("example.net.")),
            Lookup::NotOurs
        ));
        assert!(matches!(snap.lookup(&qname(".")), Lookup::NotOurs));
    }

    #[test]
    fn negative_soa_names_are_compressed_against_the_question() {
        // (question, MNAME, RNAME, bytes of the two names together)
        let rows = [
            // both below the apex: label + pointer each
            (
                "www.example.com.",
                "ns1.example.com.",
                "hostmaster.example.com.",
                4 + 2 + 11 + 2,
            ),
            // MNAME is the question: a pointer alone
            (
                "ns1.example.com.",
                "ns1.example.com.",
                "hostmaster.example.com.",
                2 + 11 + 2,
            ),
            // MNAME shares only "com." with the question
            (
                "www.example.com.",
                "ns.other.com.",
                "hostmaster.example.com.",
                3 + 6 + 2 + 11 + 2,
            ),
            // nothing shared but the root: written whole
            (
                "www.example.com.",
                "ns.privatelink-dns.invalid.",
                "h.example.com.",
                28 + 2 + 2,
            ),
            // the apex itself, in another case
            ("WWW.EXAMPLE.COM.", "example.com.", "Example.Com.", 2 + 2),
        ];
        for (question, mname, rname, names_len) in rows {
            let mut data = zone(vec![rec("www.example.com.", &[])]);
            data.soa.mname = name(mname);
            data.soa.rname = name(rname);
            let snap = build(&[data], Settings::default(), None, 7);
            let q = qname(question);
            let (zone, apex) = match snap.lookup(&q) {
                Lookup::Found { zone, apex, .. } | Lookup::NxDomain { zone, apex } => (zone, apex),
                Lookup::NotOurs => panic!("{question}: not ours"),
            };
            let negative = zone.negative(&q, apex);
            assert_eq!(
                negative.wire_len(),
                2 + 10 + names_len + 20,
                "{mname} {rname}"
            );
            // After the question, the SOA reads back whole.
            let mut msg = vec![0u8; 12];
            msg[4..6].copy_from_slice(&1u16.to_be_bytes());
            msg[8..10].copy_from_slice(&1u16.to_be_bytes());
            msg.extend_from_slice(&name_wire(&name(question)));
            msg.extend_from_slice(&[0, 6, 0, 1]);
            let at = msg.len();
            msg.resize(at + negative.wire_len(), 0);
            assert_eq!(negative.write(&mut msg[at..]), Some(negative.wire_len()));
            assert_eq!(negative.write(&mut msg[at + 1..]), None, "too short");
            let m = hickory_proto::op::Message::from_vec(&msg).unwrap();
            let RData::SOA(soa) = &m.authorities[0].data else {
                panic!("no SOA");
            };
            // (Name's == ignores case.)
            assert_eq!(m.authorities[0].name, name("example.com."));
            assert_eq!(soa.mname, name(mname));
            assert_eq!(soa.rname, name(rname));
            assert_eq!((soa.serial, soa.minimum, m.authorities[0].ttl), (7, 60, 60));
        }
    }

    fn transferable(mut data: ZoneData) -> ZoneData {
        data.transfer = Arc::new(TransferPolicy {
            allow: Acl::new(vec![Acl::parse_net("10.0.0.0/8").unwrap()]),
            ..Default::default()
        });
        data
    }

    /// `count` names, `changed` of them with their address moved.
    fn big(count: usize, changed: usize) -> ZoneData {
        transferable(zone(
            (0..count)
                .map(|i| {
                    let last = if i < changed { 200 } else { 1 };
                    let a = format!("10.{}.{}.{last}", (i >> 8) & 255, i & 255);
                    rec(&format!("n{i}.example.com."), &[&a])
                })
                .collect(),
        ))
    }

    fn publish(store: &SnapshotStore, data: &ZoneData, now: u64) -> u32 {
        store.update(|prev| {
            build(
                std::slice::from_ref(data),
                Settings::default(),
                Some(prev),
                now,
            )
        });
        store.load().zones().next().unwrap().serial()
    }

    fn records(records: crate::journal::Records<'_>) -> Vec<(String, String)> {
        records
            .map(|(owner, rr)| {
                let owner = Name::from_bytes(owner).unwrap().to_string();
                let ip = match rr.len() {
                    14 => IpAddr::from(<[u8; 4]>::try_from(&rr[10..]).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(&rr[10..]).unwrap()),
                };
                (owner, ip.to_string())
            })
            .collect()
    }

    /// Issue #23: the journal keeps what changed, computed once at publication, not
    /// copies of the zone: 16 one-name changes in a 30,000-name zone cost a few KB
    /// (copies: 16 × 30,000 records).
    #[test]
    fn the_journal_keeps_deltas_not_copies() {
        let store = SnapshotStore::default();
        let mut serials = vec![publish(&store, &big(30_000, 0), 1000)];
        for v in 1..=17 {
            serials.push(publish(&store, &big(30_000, v % 2), 1000 + v as u64));
        }
        let snap = store.load_full();
        let zone = snap.zones().next().unwrap();
        let bytes = snap.journal().bytes();
        assert!(bytes < 16 * 1024, "{bytes} bytes for 16 one-name changes");
        let deltas: Vec<&Delta> = snap.ixfr_deltas(zone, serials[16]).unwrap().collect();
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].from, deltas[0].to), (serials[16], serials[17]));
        assert_eq!(
            records(deltas[0].deleted()),
            [("n0.example.com.".into(), "10.0.0.1".into())]
        );
        assert_eq!(
            records(deltas[0].added()),
            [("n0.example.com.".into(), "10.0.0.200".into())]
        );
        assert_eq!(snap.ixfr_deltas(zone, serials[1]).unwrap().count(), 16);
        assert!(
            snap.ixfr_deltas(zone, serials[0]).is_none(),
            "17 changes ago"
        );
    }

    #[test]
    fn deltas_cover_removed_names_ttls_aaaa_and_large_rrsets() {
        let store = SnapshotStore::default();
        let many: Vec<String> = (1..=40).map(|i| format!("192.0.2.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut v1 = transferable(zone(vec![
            rec("gone.example.com.", &["192.0.2.1"]),
            rec("big.example.com.", &many),
            rec("ttl.example.com.", &["192.0.2.7"]),
        ]));
        v1.records[0].aaaa = vec!["fd00::1".parse().unwrap()];
        let s1 = publish(&store, &v1, 1000);
        let mut v2 = v1.clone();
        v2.records.remove(0);
        v2.records[0].a[39] = "192.0.2.99".parse().unwrap();
        v2.records[1].ttl = 120;
        let s2 = publish(&store, &v2, 2000);
        let snap = store.load_full();
        let d: Vec<&Delta> = snap
            .ixfr_deltas(snap.zones().next().unwrap(), s1)
            .unwrap()
            .collect();
        assert_eq!((d[0].from, d[0].to), (s1, s2));
        let mut deleted = records(d[0].deleted());
        deleted.sort();
        let pair = |n: &str, ip: &str| (n.to_string(), ip.to_string());
        assert_eq!(
            deleted,
            [
                pair("big.example.com.", "192.0.2.40"),
                pair("gone.example.com.", "192.0.2.1"),
                pair("gone.example.com.", "fd00::1"),
                pair("ttl.example.com.", "192.0.2.7"),
            ]
        );
        let mut added = records(d[0].added());
        added.sort();
        assert_eq!(
            added,
            [
                pair("big.example.com.", "192.0.2.99"),
                pair("ttl.example.com.", "192.0.2.7"),
            ]
        );
        let ttl = d[0]
            .added()
            .find(|(o, _)| o.starts_with(b"\x03ttl"))
            .unwrap()
            .1;
        assert_eq!(&ttl[4..8], &120u32.to_be_bytes(), "the new TTL");
    }

    /// A change of the SOA fields or the NS set cannot be said as A/AAAA deltas: IXFR
    /// from before it gets the whole zone; a zone that stops transferring forgets.
    #[test]
    fn an_soa_or_ns_change_or_no_transfer_policy_restarts_the_journal() {
        let store = SnapshotStore::default();
        let v1 = big(10, 0);
        let s1 = publish(&store, &v1, 1000);
        let s2 = publish(&store, &big(10, 1), 2000);
        let snap = store.load_full();
        assert!(snap.ixfr_deltas(snap.zones().next().unwrap(), s1).is_some());
        let mut v3 = big(10, 2);
        v3.soa.refresh += 1;
        publish(&store, &v3, 3000);
        let snap = store.load_full();
        let zone = snap.zones().next().unwrap();
        assert!(snap.ixfr_deltas(zone, s1).is_none() && snap.ixfr_deltas(zone, s2).is_none());
        let mut closed = big(10, 3);
        closed.soa.refresh += 1;
        closed.transfer = Default::default();
        publish(&store, &closed, 4000);
        assert_eq!(store.load().journal().bytes(), 0);
    }

    fn catalog_ids_of(store: &SnapshotStore) -> FxHashMap<Name, String> {
        let snap = store.load();
        let zone = snap.zone(&name("catalog.invalid.")).unwrap();
        crate::catalog::ids(zone.other())
    }

    /// With `state-dir`, the catalog's IDs survive a restart; a member removed before
    /// one and added back after it gets a new ID, as it would without the restart.
    #[test]
    fn catalog_ids_survive_a_restart_and_a_member_back_after_one_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = |zones: &[&str]| {
            let mut text =
                "[transfer]\nallow = [\"10.0.0.0/8\"]\n[catalog]\nzone = \"catalog.invalid\"\n"
                    .to_string();
            for z in zones {
                text += &format!("[[zone]]\norigin = \"{z}\"\n");
            }
            crate::config::Config::from_toml(&text, "t").unwrap()
        };
        let publish = |store: &SnapshotStore, zones: &[&str], now: u64| {
            let c = config(zones);
            store.update(|prev| {
                build(
                    &crate::discovery::static_zones(&c),
                    c.server.settings.clone(),
                    Some(prev),
                    now,
                )
            });
        };
        let start = || {
            let store = SnapshotStore::default();
            assert!(store.persist_serials(crate::state::Serials::open(dir.path()).unwrap()));
            store
        };
        let (a, b) = (name("a.test."), name("b.test."));
        let store = start();
        publish(&store, &["a.test", "b.test"], 1000);
        assert_eq!(catalog_ids_of(&store)[&b], crate::catalog::id(&b, 0));
        publish(&store, &["a.test"], 2000);
        drop(store);

        let store = start();
        publish(&store, &["a.test", "b.test"], 3000);
        let ids = catalog_ids_of(&store);
        assert_eq!(
            ids[&a],
            crate::catalog::id(&a, 0),
            "kept across the restart"
        );
        assert_ne!(
            ids[&b],
            crate::catalog::id(&b, 0),
            "back after a removal: a new ID"
        );
        drop(store);

        let store = start();
        publish(&store, &["a.test", "b.test"], 4000);
        assert_eq!(
            catalog_ids_of(&store),
            ids,
            "both kept across the next restart"
        );
    }
}
