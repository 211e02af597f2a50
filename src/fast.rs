//! The UDP fast path: the common queries (class IN, type A or AAAA, optionally a
//! plain EDNS OPT) answered from bytes pre-encoded in the snapshot, with no parse
//! into hickory types, no allocation and no lock.
//!
//! Anything else — other types or classes, other opcodes, EDNS options, names not in
//! any zone, compression in the question, answers that would not fit, trailing bytes —
//! returns [`Fast::Fallback`], and the general core ([`crate::answer`]) answers. For
//! the queries handled here the general core writes exactly the same bytes (the same
//! pre-encoded blocks; `tests/fast_path.rs` checks it on generated queries), so the
//! fast path is an optimisation, never a second behaviour.

use hickory_proto::op::ResponseCode;

use crate::answer::{AA, CD, CLASSIC_UDP_SIZE, HEADER_LEN, QR, RD};
use crate::snapshot::{FastNode, FastZone, Snapshot};

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

const MAX_NAME: usize = 255;
const MAX_LABELS: usize = 128;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Answers a UDP query into `out`, or says to fall back.
pub fn answer_udp(query: &[u8], snap: &Snapshot, out: &mut [u8]) -> Fast {
    try_answer(query, snap, out).unwrap_or(Fast::Fallback)
}

fn try_answer(query: &[u8], snap: &Snapshot, out: &mut [u8]) -> Option<Fast> {
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

    // The question name: plain labels only, lower-cased into `name` for lookups.
    let mut name = [0u8; MAX_NAME];
    let mut labels = [0u8; MAX_LABELS];
    let (mut n, mut nl, mut pos) = (0usize, 0usize, HEADER_LEN);
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            name[n] = 0;
            n += 1;
            pos += 1;
            break;
        }
        if len > 63 || nl == MAX_LABELS || n + len + 2 > MAX_NAME {
            return None; // compression pointer, extended label type, or too long
        }
        labels[nl] = n as u8;
        nl += 1;
        let label = query.get(pos..pos + 1 + len)?;
        for (dst, src) in name[n..n + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        n += 1 + len;
        pos += 1 + len;
    }
    let question_len = pos + 4 - HEADER_LEN;
    let qtype = u16_at(query, pos)?;
    if u16_at(query, pos + 2)? != CLASS_IN || (qtype != TYPE_A && qtype != TYPE_AAAA) {
        return None;
    }
    pos += 4;

    // EDNS: a root-owned OPT, version 0, no options; the packet ends there.
    let mut edns = None;
    if arcount == 1 {
        let opt = query.get(pos..pos + 11)?;
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]);
        if opt[0] != 0
            || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT
            || opt[6] != 0
            || rdlen != 0
        {
            return None;
        }
        let client_size = u16::from_be_bytes([opt[3], opt[4]]);
        let dnssec_ok = opt[7] & 0x80 != 0;
        edns = Some((client_size, dnssec_ok));
        pos += 11;
    }
    if pos != query.len() {
        return None;
    }

    // The most specific zone: the longest suffix that is an apex.
    let name = &name[..n];
    let (zone, apex_label) = (0..nl).find_map(|i| {
        let suffix = &name[usize::from(labels[i])..];
        snap.fast.zones.get(suffix).map(|z| (z, i))
    })?;
    let apex_offset = HEADER_LEN + usize::from(labels[apex_label]);
    let node = zone
        .nodes
        .get(name)
        .or_else(|| wildcard(zone, name, &labels[1..=apex_label]));

    let (rcode, block, count) = match node {
        None => (ResponseCode::NXDomain, &[][..], 0),
        Some(FastNode {
            a_wire, a_count, ..
        }) if qtype == TYPE_A => (ResponseCode::NoError, &a_wire[..], *a_count),
        Some(node) => (ResponseCode::NoError, &node.aaaa_wire[..], node.aaaa_count),
    };
    let negative = count == 0;

    // Size: what fits the client, as the general core computes it.
    let body_len = if negative {
        2 + zone.negative_wire.len()
    } else {
        block.len()
    };
    let total = HEADER_LEN + question_len + body_len + if edns.is_some() { 11 } else { 0 };
    let limit = match edns {
        None => CLASSIC_UDP_SIZE,
        Some((client, _)) => {
            usize::from(client.min(snap.settings.udp_payload_size)).max(CLASSIC_UDP_SIZE)
        }
    };
    if total > limit || total > out.len() {
        return None;
    }

    let out = &mut out[..total];
    out[0..2].copy_from_slice(&query[0..2]);
    let rflags = QR | AA | (flags & (RD | CD)) | u16::from(rcode.low());
    out[2..4].copy_from_slice(&rflags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&(if negative { 0 } else { count }).to_be_bytes());
    out[8..10].copy_from_slice(&u16::from(negative).to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns.is_some()).to_be_bytes());
    let mut w = HEADER_LEN;
    out[w..w + question_len].copy_from_slice(&query[HEADER_LEN..HEADER_LEN + question_len]);
    w += question_len;
    if negative {
        out[w..w + 2].copy_from_slice(&(0xC000 | apex_offset as u16).to_be_bytes());
        w += 2;
        out[w..w + zone.negative_wire.len()].copy_from_slice(&zone.negative_wire);
        w += zone.negative_wire.len();
    } else {
        out[w..w + block.len()].copy_from_slice(block);
        w += block.len();
    }
    if let Some((_, dnssec_ok)) = edns {
        let size = snap.settings.udp_payload_size.to_be_bytes();
        let do_bit = if dnssec_ok { 0x80 } else { 0 };
        out[w..w + 11].copy_from_slice(&[0, 0, 41, size[0], size[1], 0, 0, do_bit, 0, 0, 0]);
    }
    Some(Fast::Answered {
        len: total,
        rcode,
        qtype,
    })
}

/// RFC 4592: the `*` child of the closest encloser, for a name that does not exist.
/// `parents` are the label offsets of the name's ancestors down to the apex.
fn wildcard<'z>(zone: &'z FastZone, name: &[u8], parents: &[u8]) -> Option<&'z FastNode> {
    let encloser = parents
        .iter()
        .map(|&at| &name[usize::from(at)..])
        .find(|suffix| zone.nodes.contains_key(*suffix))?;
    let mut key = [0u8; MAX_NAME + 2];
    key[0] = 1;
    key[1] = b'*';
    key[2..2 + encloser.len()].copy_from_slice(encloser);
    zone.nodes.get(&key[..2 + encloser.len()])
}
