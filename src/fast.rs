//! The UDP fast path: the common queries (class IN, type A or AAAA, optionally a
//! plain EDNS OPT) answered from bytes pre-encoded in the snapshot, with no parse
//! into hickory types, no allocation and no lock.
//!
//! Anything else — other types or classes, other opcodes, EDNS options, names not in
//! any zone, compression in the question, answers that would not fit, trailing bytes —
//! returns [`Fast::Fallback`], and the general core ([`crate::answer`]) answers. Both
//! are encoders of the same result: the same lookup ([`Snapshot::lookup`]), the same
//! pre-encoded RRsets and negative SOA, the same UDP size rule
//! ([`crate::wire::udp_limit`]). For the queries handled here the general core writes
//! exactly the same bytes (`tests/fast_path.rs` checks it on generated queries), so
//! the fast path is an optimisation, never a second behaviour.

use hickory_proto::op::ResponseCode;

use crate::snapshot::{Lookup, Snapshot};
use crate::wire::{
    AA, CD, CLASS_IN, HEADER_LEN, QName, QR, RD, TYPE_A, TYPE_AAAA, TYPE_OPT, header, u16_at,
    udp_limit,
};

/// What the fast path did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// `out[..len]` holds the response.
    Answered {
        len: usize,
        rcode: ResponseCode,
        qtype: u16,
    },
    /// Not a shape the fast path handles: ask the general core.
    Fallback,
}

/// Answers a UDP query into `out`, or says to fall back.
pub fn answer_udp(query: &[u8], snap: &Snapshot, out: &mut [u8]) -> Fast {
    try_answer(query, snap, out).unwrap_or(Fast::Fallback)
}

/// A query the fast path handles: one IN A or AAAA question, at most a plain OPT.
/// (The name is read into the caller's [`QName`].)
struct Question {
    id_flags: u16,
    qtype: u16,
    /// Length of the question section.
    len: usize,
    /// `Some((client payload size, DO))` when the query has an OPT.
    edns: Option<(u16, bool)>,
}

fn try_answer(query: &[u8], snap: &Snapshot, out: &mut [u8]) -> Option<Fast> {
    let mut name = QName::empty();
    let q = parse(query, &mut name)?;
    let (rcode, zone, apex, (block, count)) = match snap.lookup(&name) {
        Lookup::NotOurs => return None,
        Lookup::NxDomain { zone, apex } => (ResponseCode::NXDomain, zone, apex, (&[][..], 0)),
        Lookup::Found { zone, node, apex } => {
            (ResponseCode::NoError, zone, apex, node.rrset(q.qtype))
        }
    };
    if zone.is_catalog() || zone.is_expired() {
        // The catalog is answered only to those who may transfer it, an expired
        // followed zone SERVFAIL: the general core.
        return None;
    }
    // Only a negative answer needs the SOA (compressed against this question).
    let negative = (count == 0).then(|| zone.negative(&name, apex));

    // Size: what fits the client, by the rule the general core uses.
    let body_len = negative.as_ref().map_or(block.len(), |soa| soa.wire_len());
    let total = HEADER_LEN + q.len + body_len + if q.edns.is_some() { 11 } else { 0 };
    let limit = udp_limit(q.edns.map(|(size, _)| size), snap.settings.udp_payload_size);
    if total > limit || total > out.len() {
        return None;
    }

    let out = &mut out[..total];
    let rflags = QR | AA | (q.id_flags & (RD | CD)) | u16::from(rcode.low());
    let counts = [
        1,
        count,
        u16::from(negative.is_some()),
        u16::from(q.edns.is_some()),
    ];
    out[..HEADER_LEN].copy_from_slice(&header(
        u16::from_be_bytes([query[0], query[1]]),
        rflags,
        counts,
    ));
    let mut w = HEADER_LEN + q.len;
    out[HEADER_LEN..w].copy_from_slice(&query[HEADER_LEN..w]);
    if let Some(soa) = &negative {
        w += soa.write(&mut out[w..])?;
    } else {
        out[w..w + block.len()].copy_from_slice(block);
        w += block.len();
    }
    if let Some((_, dnssec_ok)) = q.edns {
        let size = snap.settings.udp_payload_size.to_be_bytes();
        let do_bit = if dnssec_ok { 0x80 } else { 0 };
        out[w..w + 11].copy_from_slice(&[0, 0, 41, size[0], size[1], 0, 0, do_bit, 0, 0, 0]);
    }
    Some(Fast::Answered {
        len: total,
        rcode,
        qtype: q.qtype,
    })
}

/// The header and question, and the OPT if any; `None` for any other shape.
fn parse(query: &[u8], name: &mut QName) -> Option<Question> {
    let flags = u16_at(query, 2)?;
    // QR=0 and opcode QUERY; one question, nothing else but at most one OPT.
    if flags & 0xF800 != 0
        || u16_at(query, 4)? != 1
        || u16_at(query, 6)? != 0
        || u16_at(query, 8)? != 0
    {
        return None;
    }
    let arcount = u16_at(query, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut pos = name.read(query, HEADER_LEN)?;
    let qtype = u16_at(query, pos)?;
    if u16_at(query, pos + 2)? != CLASS_IN || (qtype != TYPE_A && qtype != TYPE_AAAA) {
        return None;
    }
    pos += 4;
    let len = pos - HEADER_LEN;
    let edns = if arcount == 1 {
        let (edns, end) = parse_opt(query, pos)?;
        pos = end;
        Some(edns)
    } else {
        None
    };
    (pos == query.len()).then_some(Question {
        id_flags: flags,
        qtype,
        len,
        edns,
    })
}

/// A root-owned OPT, version 0, no options: (client payload size, DO) and its end.
fn parse_opt(query: &[u8], at: usize) -> Option<((u16, bool), usize)> {
    let opt = query.get(at..at + 11)?;
    let rdlen = u16::from_be_bytes([opt[9], opt[10]]);
    if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[6] != 0 || rdlen != 0
    {
        return None;
    }
    let client_size = u16::from_be_bytes([opt[3], opt[4]]);
    Some(((client_size, opt[7] & 0x80 != 0), at + 11))
}
