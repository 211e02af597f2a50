//! The names of one zone with their pre-encoded RRsets: the index every answer reads
//! ([`Names`]), and its builder ([`NamesBuilder`]), which stages records as bytes in
//! any order (a zone file's, a config's, a refresh's) and writes the index once.
//!
//! Memory (issue #15): a staged record costs its name, ten bytes and its address,
//! with no allocation of its own; the index is one buffer and one table per zone.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashTable;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rustc_hash::{FxBuildHasher, FxHashSet};

use crate::wire::{TYPE_A, TYPE_AAAA};

/// Size of one pre-encoded A RR: pointer, type, class, TTL, RDLENGTH, 4 bytes.
pub(crate) const A_RR_LEN: usize = 16;
/// Size of one pre-encoded AAAA RR: pointer, type, class, TTL, RDLENGTH, 16 bytes.
pub(crate) const AAAA_RR_LEN: usize = 28;

/// The record sets at one owner name, pre-encoded for an answer section whose owner
/// is the question name (compression pointer 0xC00C): built once, copied per query.
/// A view into its zone's [`Names`]. An empty node is an empty non-terminal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Node<'z> {
    pub(crate) a: &'z [u8],
    pub(crate) aaaa: &'z [u8],
}

impl<'z> Node<'z> {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty()
    }

    /// The pre-encoded RRset of `qtype` (A or AAAA) and its RR count; empty for
    /// other types or when the name has none.
    #[inline]
    pub fn rrset(&self, qtype: u16) -> (&'z [u8], u16) {
        match qtype {
            TYPE_A => (self.a, (self.a.len() / A_RR_LEN) as u16),
            TYPE_AAAA => (self.aaaa, (self.aaaa.len() / AAAA_RR_LEN) as u16),
            _ => (&[], 0),
        }
    }

    /// The A records, owned by `owner`.
    pub fn a_records(&self, owner: &Name) -> Vec<Record> {
        decode(self.a, A_RR_LEN, owner, |rdata| {
            <[u8; 4]>::try_from(rdata).map(|b| RData::A(A(Ipv4Addr::from(b))))
        })
    }

    /// The AAAA records, owned by `owner`.
    pub fn aaaa_records(&self, owner: &Name) -> Vec<Record> {
        decode(self.aaaa, AAAA_RR_LEN, owner, |rdata| {
            <[u8; 16]>::try_from(rdata).map(|b| RData::AAAA(AAAA(Ipv6Addr::from(b))))
        })
    }

    pub fn count(&self) -> usize {
        self.a.len() / A_RR_LEN + self.aaaa.len() / AAAA_RR_LEN
    }
}

/// Every name of a zone with its RRsets, in one buffer found through a table of
/// offsets: one allocation per zone, not three per name (issue #15). Built by
/// [`NamesBuilder`]; shared (`Arc`) between the config, which builds the static
/// names once, and every snapshot that serves them unchanged.
#[derive(Clone, Default)]
pub struct Names {
    /// Entries back to back, sorted by name: the lower-cased wire name after its
    /// length (one byte), then the A RRset and the AAAA RRset, each after its length
    /// (four bytes).
    arena: Box<[u8]>,
    /// Offsets of the entries in `arena`, hashed by name.
    table: HashTable<u32>,
}

impl Names {
    /// Number of names (empty non-terminals and the apex included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The node of `name` (lower-cased wire form).
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<Node<'_>> {
        Some(self.entry_at(self.find(name)?).1)
    }

    /// The node of `name`, in any case.
    pub fn node(&self, name: &Name) -> Option<Node<'_>> {
        let key = crate::wire::QName::from_name(&name.to_lowercase())?;
        self.get(key.as_bytes())
    }

    /// Every name that has records, with its A and AAAA records, in name order.
    pub fn records(&self) -> Vec<(Name, Vec<Record>)> {
        self.iter()
            .filter(|(_, node)| !node.is_empty())
            .map(|(wire, node)| {
                let name = to_name(wire);
                let mut records = node.a_records(&name);
                records.extend(node.aaaa_records(&name));
                (name, records)
            })
            .collect()
    }

    /// Whether `name` (lower-cased wire form) is here.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.find(name).is_some()
    }

    fn name_at(&self, at: u32) -> &[u8] {
        name_at(&self.arena, at)
    }

    /// The node of the entry at `at`, and where the next entry starts.
    fn entry_at(&self, at: u32) -> (&[u8], Node<'_>, usize) {
        let name = self.name_at(at);
        let mut pos = at as usize + 1 + name.len();
        let mut rrset = || {
            let len = u32::from_be_bytes(self.arena[pos..pos + 4].try_into().unwrap_or([0; 4]));
            let bytes = &self.arena[pos + 4..pos + 4 + len as usize];
            pos += 4 + len as usize;
            bytes
        };
        let (a, aaaa) = (rrset(), rrset());
        (name, Node { a, aaaa }, pos)
    }

    /// The offset of `name`'s entry.
    #[inline]
    fn find(&self, name: &[u8]) -> Option<u32> {
        let found = self.table.find(hash(name), |&at| self.name_at(at) == name);
        found.copied()
    }

    /// Every (wire name, node), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Node<'_>)> {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.arena.len() {
                return None;
            }
            let (name, node, next) = self.entry_at(at as u32);
            at = next;
            Some((name, node))
        })
    }
}

impl PartialEq for Names {
    fn eq(&self, other: &Self) -> bool {
        self.arena == other.arena // entries are in name order: the same names, the same bytes
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Names({} names, {} bytes)",
            self.table.len(),
            self.arena.len()
        )
    }
}

fn name_at(arena: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = usize::from(arena[at]);
    &arena[at + 1..at + 1 + len]
}

#[inline]
fn hash(name: &[u8]) -> u64 {
    FxBuildHasher.hash_one(name)
}

fn hash_at(arena: &[u8], at: u32) -> u64 {
    hash(name_at(arena, at))
}

/// Records back from a pre-encoded RRset (fixed-size RRs, TTL at byte 6, RDATA at 12).
fn decode<E>(
    wire: &[u8],
    rr_len: usize,
    owner: &Name,
    rdata: impl Fn(&[u8]) -> Result<RData, E>,
) -> Vec<Record> {
    wire.chunks_exact(rr_len)
        .filter_map(|rr| {
            let ttl = u32::from_be_bytes([rr[6], rr[7], rr[8], rr[9]]);
            Some(Record::from_rdata(
                owner.clone(),
                ttl,
                rdata(&rr[12..]).ok()?,
            ))
        })
        .collect()
}

impl Eq for Names {}

/// Kinds of staged records, in the order their RRsets are written.
/// A staged record's kind byte has this bit when a line number follows its TTL
/// (records from a file); records from elsewhere leave the 4 bytes out.
const HAS_LINE: u8 = 0x80;
const KIND_NAME: u8 = 0;
const KIND_A: u8 = 1;
const KIND_AAAA: u8 = 2;

/// Records that cannot be served as given, found when the index is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// One RRset with two TTLs (RFC 2181 section 5.2): the first one is served.
    /// `first` and `then` are (line, TTL).
    Ttl {
        name: Name,
        first: (u32, u32),
        then: (u32, u32),
    },
    /// An RRset too large for any response to carry ([`MAX_RRSET_BYTES`]); `line` is
    /// where its first record was written.
    TooLarge { name: Name, line: u32, bytes: usize },
}

/// The most bytes of records one RRset may have, as served (owner compressed): a
/// DNS message is at most 65,535 bytes, and a response also carries the header,
/// the longest question (259), OPT and a TSIG (at most about 350): 1 KiB is kept
/// for them. [`MAX_A`] A records, or [`MAX_AAAA`] AAAA records, of one name.
pub const MAX_RRSET_BYTES: usize = 65_535 - 1024;
/// The most A records one name may have: 16 bytes each as served (4,031).
pub const MAX_A: usize = MAX_RRSET_BYTES / A_RR_LEN;
/// The most AAAA records one name may have: 28 bytes each as served (2,303).
pub const MAX_AAAA: usize = MAX_RRSET_BYTES / AAAA_RR_LEN;

/// Stages records, then writes one [`Names`]. Each record is staged as bytes: the
/// owner relative to the origin (lower-cased wire labels, after their length), a
/// kind, the TTL, a line number (0: not from a file) and the address. The origin is
/// left out of every staged name: for 100,000 names that is most of the staging.
#[derive(Debug)]
pub struct NamesBuilder {
    /// The origin, lower-cased wire form.
    origin: Vec<u8>,
    staged: Vec<u8>,
    at: Vec<u32>,
}

impl NamesBuilder {
    /// A builder for the zone at `origin` (lower-cased wire form).
    pub fn new(origin: &[u8]) -> Self {
        Self {
            origin: origin.to_vec(),
            staged: Vec::new(),
            at: Vec::new(),
        }
    }

    /// An A or AAAA record of `owner` (lower-cased wire form, inside the origin);
    /// `line` is where it was written (0 if not in a file).
    pub fn add(&mut self, owner: &[u8], ttl: u32, line: u32, ip: IpAddr) {
        let (kind, rdata) = match &ip {
            IpAddr::V4(v4) => (KIND_A, &v4.octets()[..]),
            IpAddr::V6(v6) => (KIND_AAAA, &v6.octets()[..]),
        };
        self.stage(owner, kind, ttl, line, rdata);
    }

    /// A name that exists without addresses (it answers NODATA).
    pub fn add_name(&mut self, owner: &[u8]) {
        self.stage(owner, KIND_NAME, 0, 0, &[]);
    }

    /// Every name and record of `names`, as they are.
    pub fn add_names(&mut self, names: &Names) {
        for (name, node) in names.iter() {
            self.add_name(name);
            for (rrs, len, kind) in [
                (node.a, A_RR_LEN, KIND_A),
                (node.aaaa, AAAA_RR_LEN, KIND_AAAA),
            ] {
                for rr in rrs.chunks_exact(len) {
                    let ttl = u32::from_be_bytes([rr[6], rr[7], rr[8], rr[9]]);
                    self.stage(name, kind, ttl, 0, &rr[12..]);
                }
            }
        }
    }

    fn stage(&mut self, owner: &[u8], kind: u8, ttl: u32, line: u32, rdata: &[u8]) {
        let Some(relative) = relative(owner, &self.origin) else {
            tracing::error!("a record outside its zone cannot be indexed; left out");
            return;
        };
        let Ok(at) = u32::try_from(self.staged.len()) else {
            tracing::error!("a zone of more than 4 GB cannot be indexed; records left out");
            return;
        };
        self.at.push(at);
        self.staged.push(relative.len() as u8);
        self.staged.extend_from_slice(relative);
        self.staged
            .push(if line > 0 { kind | HAS_LINE } else { kind });
        self.staged.extend_from_slice(&ttl.to_be_bytes());
        if line > 0 {
            self.staged.extend_from_slice(&line.to_be_bytes());
        }
        self.staged.extend_from_slice(rdata);
    }

    /// The index of every staged name, with the origin and every empty non-terminal
    /// between a name and the origin (RFC 8020). Repeated records are served once;
    /// the first conflict found is returned with it.
    pub fn finish(self) -> (Names, Option<Conflict>) {
        let Self {
            origin,
            staged,
            mut at,
        } = self;
        // Offsets grow with the order records were given in: the last key keeps
        // that order within an RRset, with no scratch space.
        at.sort_unstable_by(|&x, &y| {
            (staged_name(&staged, x), staged_kind(&staged, x), x).cmp(&(
                staged_name(&staged, y),
                staged_kind(&staged, y),
                y,
            ))
        });
        let extra = empty_non_terminals(&staged, &at);
        let upper: usize = at.len() * (AAAA_RR_LEN + 9 + origin.len()) / 2 + staged.len();
        let mut writer = Writer::with_capacity(upper + extra.len() * (origin.len() + 32), origin);
        let mut extra = extra.into_iter().peekable();
        // The addresses of the RRset being written, to fold repeats: one set reused
        // for every RRset (a scan of what was written would be quadratic in a name
        // with many records).
        let mut seen = FxHashSet::default();
        let mut start = 0;
        while start < at.len() {
            let name = staged_name(&staged, at[start]);
            let end = start + at[start..].partition_point(|&r| staged_name(&staged, r) == name);
            while let Some(e) = extra.next_if(|e| e.as_slice() < name) {
                writer.entry(&e, &staged, &[], &mut seen);
            }
            writer.entry(name, &staged, &at[start..end], &mut seen);
            start = end;
        }
        for e in extra {
            writer.entry(&e, &staged, &[], &mut seen);
        }
        drop(seen);
        drop((staged, at));
        writer.finish()
    }
}

/// The labels of `name` above `origin` (both wire form), if `name` is in it.
fn relative<'n>(name: &'n [u8], origin: &[u8]) -> Option<&'n [u8]> {
    let mut at = 0;
    while name.len().saturating_sub(at) > origin.len() {
        at += 1 + usize::from(*name.get(at)?);
    }
    (name.get(at..)? == origin).then(|| &name[..at])
}

fn staged_name(staged: &[u8], at: u32) -> &[u8] {
    name_at(staged, at)
}

fn staged_kind(staged: &[u8], at: u32) -> u8 {
    staged[at as usize + 1 + usize::from(staged[at as usize])] & !HAS_LINE
}

/// A staged record: (kind, TTL, line, rdata).
fn staged_record(staged: &[u8], at: u32) -> (u8, u32, u32, &[u8]) {
    let name = staged_name(staged, at);
    let p = at as usize + 1 + name.len();
    let kind = staged[p] & !HAS_LINE;
    let ttl = u32::from_be_bytes([staged[p + 1], staged[p + 2], staged[p + 3], staged[p + 4]]);
    let (line, p) = if staged[p] & HAS_LINE != 0 {
        let line = u32::from_be_bytes([staged[p + 5], staged[p + 6], staged[p + 7], staged[p + 8]]);
        (line, p + 9)
    } else {
        (0, p + 5)
    };
    let len = match kind {
        KIND_A => 4,
        KIND_AAAA => 16,
        _ => 0,
    };
    (kind, ttl, line, &staged[p..p + len])
}

/// The origin (the empty relative name) and every ancestor of a staged name that is
/// not staged itself, relative to the origin, sorted.
fn empty_non_terminals(staged: &[u8], at: &[u32]) -> BTreeSet<Vec<u8>> {
    let staged_at = |name: &[u8]| {
        let i = at.partition_point(|&r| staged_name(staged, r) < name);
        at.get(i).is_some_and(|&r| staged_name(staged, r) == name)
    };
    let mut out = BTreeSet::new();
    if !staged_at(&[]) {
        out.insert(Vec::new());
    }
    let mut previous: &[u8] = &[];
    for &r in at {
        let name = staged_name(staged, r);
        if name == previous || name.is_empty() {
            continue;
        }
        previous = name;
        let mut parent = &name[1 + usize::from(name[0])..];
        while !parent.is_empty() {
            if !staged_at(parent) {
                out.insert(parent.to_vec());
            }
            parent = &parent[1 + usize::from(parent[0])..];
        }
    }
    out
}

/// Writes entries in name order into one buffer.
struct Writer {
    arena: Vec<u8>,
    offsets: Vec<u32>,
    conflict: Option<Conflict>,
    origin: Vec<u8>,
}

impl Writer {
    fn with_capacity(bytes: usize, origin: Vec<u8>) -> Self {
        Self {
            arena: Vec::with_capacity(bytes),
            offsets: Vec::new(),
            conflict: None,
            origin,
        }
    }

    /// One name (relative to the origin) with its staged records (at offsets
    /// `records` in `staged`).
    fn entry<'s>(
        &mut self,
        relative: &[u8],
        staged: &'s [u8],
        records: &[u32],
        seen: &mut FxHashSet<&'s [u8]>,
    ) {
        let len = relative.len() + self.origin.len();
        let (Ok(offset), Ok(len)) = (u32::try_from(self.arena.len()), u8::try_from(len)) else {
            tracing::error!(
                "a name longer than 255 bytes or a zone of more than 4 GB cannot be indexed; left out"
            );
            return;
        };
        self.offsets.push(offset);
        self.arena.push(len);
        self.arena.extend_from_slice(relative);
        self.arena.extend_from_slice(&self.origin);
        let name = offset as usize + 1..offset as usize + 1 + usize::from(len);
        for (kind, rtype) in [(KIND_A, RecordType::A), (KIND_AAAA, RecordType::AAAA)] {
            let len_at = self.arena.len();
            self.arena.extend_from_slice(&[0; 4]);
            let start = self.arena.len();
            let mut first: Option<(u32, u32)> = None;
            seen.clear();
            for (_, ttl, line, rdata) in records
                .iter()
                .map(|&r| staged_record(staged, r))
                .filter(|r| r.0 == kind)
            {
                let (ttl_served, first_line) = *first.get_or_insert((ttl, line));
                if ttl != ttl_served && self.conflict.is_none() {
                    self.conflict = Some(Conflict::Ttl {
                        name: to_name(&self.arena[name.clone()]),
                        first: (first_line, ttl_served),
                        then: (line, ttl),
                    });
                }
                if !seen.insert(rdata) {
                    continue; // the same record again: an RRset is a set
                }
                self.arena.extend_from_slice(&[0xC0, 0x0C]);
                self.arena
                    .extend_from_slice(&u16::from(rtype).to_be_bytes());
                self.arena
                    .extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
                self.arena.extend_from_slice(&ttl_served.to_be_bytes());
                self.arena
                    .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                self.arena.extend_from_slice(rdata);
            }
            let len = self.arena.len() - start;
            if len > MAX_RRSET_BYTES
                && self.conflict.is_none()
                && let Some((_, line)) = first
            {
                self.conflict = Some(Conflict::TooLarge {
                    name: to_name(&self.arena[name.clone()]),
                    line,
                    bytes: len,
                });
            }
            self.arena[len_at..start].copy_from_slice(&(len as u32).to_be_bytes());
        }
    }

    fn finish(self) -> (Names, Option<Conflict>) {
        let mut names = Names {
            arena: self.arena.into_boxed_slice(),
            table: HashTable::with_capacity(self.offsets.len()),
        };
        for at in self.offsets {
            let hash = hash(names.name_at(at));
            let (arena, table) = (&names.arena, &mut names.table);
            table.insert_unique(hash, at, |&other| hash_at(arena, other));
        }
        (names, self.conflict)
    }
}

fn to_name(wire: &[u8]) -> Name {
    use hickory_proto::serialize::binary::BinDecodable;
    Name::from_bytes(wire).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str) -> Vec<u8> {
        crate::wire::QName::from_name(&Name::from_ascii(name).unwrap())
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn build(records: &[(&str, u32, u32, &str)]) -> (Names, Option<Conflict>) {
        let mut b = NamesBuilder::new(&wire("example.com."));
        for (name, ttl, line, addr) in records {
            b.add(&wire(name), *ttl, *line, ip(addr));
        }
        b.finish()
    }

    #[test]
    fn names_with_their_rrsets_the_origin_and_empty_non_terminals() {
        let (names, conflict) = build(&[
            ("a.b.c.example.com.", 60, 1, "10.0.0.1"),
            ("www.example.com.", 30, 2, "10.0.0.2"),
            ("www.example.com.", 30, 3, "fd00::2"),
            ("www.example.com.", 30, 4, "10.0.0.3"),
        ]);
        assert_eq!(conflict, None);
        let node = |n: &str| names.get(&wire(n));
        assert_eq!(node("www.example.com.").unwrap().rrset(TYPE_A).1, 2);
        assert_eq!(node("www.example.com.").unwrap().rrset(TYPE_AAAA).1, 1);
        for ent in ["example.com.", "c.example.com.", "b.c.example.com."] {
            assert!(node(ent).unwrap().is_empty(), "{ent}");
        }
        assert_eq!(names.len(), 5);
        let a = node("a.b.c.example.com.")
            .unwrap()
            .a_records(&Name::from_ascii("a.b.c.example.com.").unwrap());
        assert_eq!(
            (a[0].ttl, a[0].data.to_string()),
            (60, "10.0.0.1".to_string())
        );
    }

    #[test]
    fn the_same_records_in_any_order_give_the_same_bytes() {
        let records = [
            ("x.example.com.", 60, 0, "10.0.0.1"),
            ("x.example.com.", 60, 0, "10.0.0.1"),
            ("y.example.com.", 60, 0, "10.0.0.2"),
            ("x.example.com.", 60, 0, "10.0.0.3"),
            ("z.y.example.com.", 60, 0, "fd00::1"),
        ];
        let (first, _) = build(&records);
        // Within an RRset the order given is kept; across names it does not matter.
        let (second, _) = build(&[records[0], records[2], records[4], records[1], records[3]]);
        assert_eq!(first, second);
        // A repeated record is served once.
        assert_eq!(
            first.get(&wire("x.example.com.")).unwrap().rrset(TYPE_A).1,
            2
        );
        // Restaging a built index gives it back.
        let mut again = NamesBuilder::new(&wire("example.com."));
        again.add_names(&first);
        assert_eq!(again.finish().0, first);
    }

    #[test]
    fn an_rrset_with_two_ttls_is_a_conflict_and_serves_the_first() {
        let (names, conflict) = build(&[
            ("x.example.com.", 60, 7, "10.0.0.1"),
            ("x.example.com.", 30, 9, "10.0.0.2"),
            ("x.example.com.", 30, 10, "fd00::1"),
        ]);
        assert_eq!(
            conflict,
            Some(Conflict::Ttl {
                name: Name::from_ascii("x.example.com.").unwrap(),
                first: (7, 60),
                then: (9, 30),
            })
        );
        let rrs = names
            .node(&Name::from_ascii("X.example.com.").unwrap())
            .unwrap();
        let a = rrs.a_records(&Name::root());
        assert!(a.iter().all(|r| r.ttl == 60));
        // Different TTLs for A and AAAA are two RRsets: fine.
        assert_eq!(rrs.aaaa_records(&Name::root())[0].ttl, 30);
    }

    #[test]
    fn names_outside_the_origin_are_left_out() {
        let (names, _) = build(&[
            ("example.org.", 60, 0, "10.0.0.1"),
            ("xexample.com.", 60, 0, "10.0.0.1"),
            ("in.example.com.", 60, 0, "10.0.0.1"),
        ]);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            relative(&wire("a.example.com."), &wire("example.com.")),
            Some(&b"\x01a"[..])
        );
        assert_eq!(
            relative(&wire("example.com."), &wire("example.com.")),
            Some(&b""[..])
        );
        assert_eq!(relative(&wire("com."), &wire("example.com.")), None);
        // Not a well-formed wire name: no panic, no answer.
        let bogus = [&[0x20u8][..], &[b'a'; 15]].concat();
        assert_eq!(relative(&bogus, &wire("example.com.")), None);
    }

    #[test]
    fn a_million_copies_of_a_few_thousand_addresses_load_in_linear_time() {
        // One name, 1,000,000 records cycling through MAX_A addresses: each repeat is
        // found in a hash set, not by scanning the RRset (which took minutes).
        let mut b = NamesBuilder::new(&wire("example.com."));
        let owner = wire("x.example.com.");
        for i in 0..1_000_000u32 {
            let n = i % MAX_A as u32;
            b.add(
                &owner,
                60,
                i + 1,
                IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n)),
            );
        }
        let (names, conflict) = b.finish();
        assert_eq!(conflict, None);
        assert_eq!(
            usize::from(names.get(&owner).unwrap().rrset(TYPE_A).1),
            MAX_A
        );
        assert_eq!(MAX_A, 4_031);
        assert_eq!(MAX_AAAA, 2_303);
    }

    #[test]
    fn an_rrset_no_message_can_carry_is_a_conflict() {
        let mut b = NamesBuilder::new(&wire("example.com."));
        let owner = wire("x.example.com.");
        for i in 0..=MAX_A as u32 {
            b.add(
                &owner,
                60,
                i + 5,
                IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i)),
            );
        }
        // AAAA at the limit is fine.
        let v6 = wire("y.example.com.");
        for i in 0..MAX_AAAA as u128 {
            b.add(
                &v6,
                60,
                1,
                IpAddr::from(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | i)),
            );
        }
        let (_, conflict) = b.finish();
        assert_eq!(
            conflict,
            Some(Conflict::TooLarge {
                name: Name::from_ascii("x.example.com.").unwrap(),
                line: 5,
                bytes: (MAX_A + 1) * 16,
            })
        );
        let mut b = NamesBuilder::new(&wire("example.com."));
        for i in 0..=MAX_AAAA as u128 {
            b.add(
                &v6,
                60,
                1,
                IpAddr::from(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | i)),
            );
        }
        assert!(matches!(b.finish().1, Some(Conflict::TooLarge { .. })));
    }
}
