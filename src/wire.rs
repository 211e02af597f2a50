//! Wire-format facts both encoders share: header layout and flags, the type and
//! class codes the snapshot pre-encodes, the UDP size rule, and [`QName`], the
//! lower-cased question name the snapshot is indexed by. No I/O, no allocation.

use hickory_proto::rr::Name;

pub const HEADER_LEN: usize = 12;
pub const QR: u16 = 0x8000;
pub const AA: u16 = 0x0400;
pub const TC: u16 = 0x0200;
pub const RD: u16 = 0x0100;
pub const CD: u16 = 0x0010;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

/// UDP size without EDNS (RFC 1035 section 4.2.1), also the floor with EDNS (RFC 6891 6.2.5).
pub const CLASSIC_UDP_SIZE: usize = 512;

/// Largest name in wire format (RFC 1035 section 3.1).
pub const MAX_NAME: usize = 255;
/// Most labels a name of [`MAX_NAME`] bytes can have, the root included.
const MAX_LABELS: usize = 128;

/// The largest UDP response to a client: 512 without EDNS, else the smaller of the
/// client's and our payload size, never below 512.
#[inline]
pub fn udp_limit(client_payload: Option<u16>, ours: u16) -> usize {
    match client_payload {
        None => CLASSIC_UDP_SIZE,
        Some(client) => usize::from(client.min(ours)).max(CLASSIC_UDP_SIZE),
    }
}

#[inline]
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// OPCODE of the header flags `flags` (RFC 1035 4.1.1).
#[inline]
pub fn opcode(flags: u16) -> u8 {
    ((flags >> 11) & 0xF) as u8
}

/// RCODE (its low four bits) of the header flags `flags`.
#[inline]
pub fn rcode(flags: u16) -> u8 {
    (flags & 0xF) as u8
}

/// OPCODE NOTIFY (RFC 1996).
pub const OPCODE_NOTIFY: u8 = 4;

/// A message header: id, flags, and the counts of question, answer, authority and
/// additional records. The one header writer; every message we make starts with it.
#[inline]
pub fn header(id: u16, flags: u16, counts: [u16; 4]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&id.to_be_bytes());
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    for (i, count) in counts.iter().enumerate() {
        h[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    h
}

/// `name` in wire form as written (its case kept: the SOA names of a negative
/// answer). [`QName`] is the lower-cased form every index and lookup uses; these
/// two are the only name-to-wire encoders.
pub fn name_wire(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(MAX_NAME);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.into_boxed_slice()
}

/// Where the question section of a request ends (its one name is never compressed).
pub fn question_end(query: &[u8]) -> Option<usize> {
    let end = QName::empty().read(query, HEADER_LEN)? + 4;
    (end <= query.len()).then_some(end)
}

/// A name in lower-cased wire format with the offset of each label, on the stack.
/// The snapshot's index is keyed by this form, so a lookup borrows, never allocates.
#[derive(Clone)]
pub struct QName {
    wire: [u8; MAX_NAME],
    len: usize,
    /// Offset of each label in `wire`, the root excluded.
    labels: [u8; MAX_LABELS],
    count: usize,
}

impl QName {
    /// The empty name, to [`Self::read`] into.
    #[inline]
    pub fn empty() -> Self {
        Self {
            wire: [0; MAX_NAME],
            len: 0,
            labels: [0; MAX_LABELS],
            count: 0,
        }
    }

    /// Reads an uncompressed name at `at` in `msg` into `self` (what it held is
    /// replaced) and returns the offset after it. `None` for a compression pointer, an
    /// extended label type, a name longer than 255 bytes, or a name cut off by the end
    /// of `msg`. In place: the fast path never copies the name.
    #[inline]
    pub fn read(&mut self, msg: &[u8], mut at: usize) -> Option<usize> {
        self.len = 0;
        self.count = 0;
        loop {
            let len = usize::from(*msg.get(at)?);
            if len == 0 {
                self.push_root();
                return Some(at + 1);
            }
            if len > 63 {
                return None;
            }
            self.push_label(msg.get(at + 1..at + 1 + len)?)?;
            at += 1 + len;
        }
    }

    /// The lower-cased wire form of `name` (absolute or not: it is read as absolute).
    pub fn from_name(name: &Name) -> Option<QName> {
        let mut q = QName::empty();
        for label in name.iter() {
            q.push_label(label)?;
        }
        q.push_root();
        Some(q)
    }

    #[inline]
    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        if label.is_empty() || label.len() > 63 || self.len + label.len() + 2 > MAX_NAME {
            return None;
        }
        self.labels[self.count] = self.len as u8;
        self.count += 1;
        self.wire[self.len] = label.len() as u8;
        for (dst, src) in self.wire[self.len + 1..].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        self.len += 1 + label.len();
        Some(())
    }

    #[inline]
    fn push_root(&mut self) {
        self.wire[self.len] = 0;
        self.len += 1;
    }

    /// The whole name, lower-cased, in wire format.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.wire[..self.len]
    }

    /// Number of labels, the root excluded.
    #[inline]
    pub fn label_count(&self) -> usize {
        self.count
    }

    /// Offset in [`Self::as_bytes`] where the name's `i`-th ancestor starts (0: the
    /// name itself; `label_count()`: the root).
    #[inline]
    pub fn suffix_offset(&self, i: usize) -> usize {
        if i < self.count {
            usize::from(self.labels[i])
        } else {
            self.len - 1
        }
    }

    /// The `i`-th ancestor in wire format (see [`Self::suffix_offset`]).
    #[inline]
    pub fn suffix(&self, i: usize) -> &[u8] {
        &self.as_bytes()[self.suffix_offset(i)..]
    }
}

impl std::fmt::Debug for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Name::from_labels((0..self.count).map(|i| {
            let at = self.suffix_offset(i);
            &self.wire[at + 1..at + 1 + usize::from(self.wire[at])]
        })) {
            Ok(name) => write!(f, "QName({name}.)"),
            Err(_) => write!(f, "QName({:?})", self.as_bytes()),
        }
    }
}

/// Whether every EDNS option of the message's OPT record fits inside the record
/// (RFC 6891 section 6.1.2). hickory-proto drops an option list that does not, logs
/// a warning for each such packet and parses on; we answer FORMERR instead, as Knot
/// and BIND do, and count it. A message that cannot be walked passes: the caller
/// has parsed it already.
pub fn opt_options_fit(msg: &[u8]) -> bool {
    walk_opt(msg).unwrap_or(true)
}

fn walk_opt(msg: &[u8]) -> Option<bool> {
    let mut fit = true;
    walk_records(msg, |record| {
        if record.additional && record.rtype == TYPE_OPT && !options_fit(record.rdata) {
            fit = false;
        }
        fit
    })?;
    Some(fit)
}

/// One resource record of a message, as [`walk_records`] finds it.
struct RecordAt<'m> {
    /// In the additional section.
    additional: bool,
    rtype: u16,
    /// Where its RDATA starts in the message.
    rdata_at: usize,
    rdata: &'m [u8],
}

/// Calls `f` with each resource record after the question, in order, while it
/// returns true. `None` if the message cannot be walked to its last record.
fn walk_records(msg: &[u8], mut f: impl FnMut(RecordAt<'_>) -> bool) -> Option<()> {
    let count = |at: usize| u16_at(msg, at).map(usize::from);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    for i in 0..an + ns + ar {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rdlen = usize::from(u16_at(msg, at + 8)?);
        let rdata = msg.get(at + 10..at + 10 + rdlen)?;
        let record = RecordAt {
            additional: i >= an + ns,
            rtype,
            rdata_at: at + 10,
            rdata,
        };
        if !f(record) {
            return Some(());
        }
        at += 10 + rdlen;
    }
    Some(())
}

/// A copy of `msg` whose final TSIG record's algorithm name is in lower case: the
/// canonical form its MAC covers (RFC 8945 section 4.3.3), which hickory-proto
/// recognises only as written. `None` without a final TSIG.
pub fn tsig_algorithm_lowercased(msg: &[u8]) -> Option<Vec<u8>> {
    const TYPE_TSIG: u16 = 250;
    let mut last = None;
    walk_records(msg, |record| {
        last = Some((record.rtype, record.rdata_at));
        true
    })?;
    let (TYPE_TSIG, mut at) = last? else {
        return None;
    };
    let mut out = msg.to_vec();
    loop {
        let len = usize::from(*out.get(at)?);
        if len == 0 || len & 0xC0 != 0 {
            return Some(out);
        }
        out.get_mut(at + 1..at + 1 + len)?.make_ascii_lowercase();
        at += 1 + len;
    }
}

/// Each option: code, length, and that many bytes, to the end of `rdata`.
fn options_fit(mut rdata: &[u8]) -> bool {
    while !rdata.is_empty() {
        let Some(len) = u16_at(rdata, 2) else {
            return false;
        };
        let Some(rest) = rdata.get(4 + usize::from(len)..) else {
            return false;
        };
        rdata = rest;
    }
    true
}

/// Past the name at `at` (labels, then the root or a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l & 0xC0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(msg: &[u8], at: usize) -> Option<(QName, usize)> {
        let mut q = QName::empty();
        let end = q.read(msg, at)?;
        Some((q, end))
    }

    #[test]
    fn parse_and_from_name_agree() {
        let msg = b"\x03WwW\x07Example\x03cOm\x00rest";
        let (q, end) = parse(msg, 0).unwrap();
        assert_eq!(end, 17);
        assert_eq!(q.as_bytes(), b"\x03www\x07example\x03com\x00");
        let n = QName::from_name(&Name::from_ascii("WWW.example.COM.").unwrap()).unwrap();
        assert_eq!(n.as_bytes(), q.as_bytes());
        assert_eq!(q.label_count(), 3);
        assert_eq!(q.suffix(1), b"\x07example\x03com\x00");
        assert_eq!(q.suffix(3), b"\x00");
        let root = QName::from_name(&Name::root()).unwrap();
        assert_eq!((root.as_bytes(), root.label_count()), (&b"\x00"[..], 0));
    }

    #[test]
    fn parse_refuses_what_is_not_a_plain_name() {
        for bad in [
            &b"\xC0\x0C"[..], // compression pointer
            b"\x41abc\x00",   // extended label type
            b"\x03ab",        // cut off
            b"\x03abc",       // no root
            b"",              // nothing
        ] {
            assert!(parse(bad, 0).is_none(), "{bad:?}");
        }
        // 255 bytes is the most a name may have; 257 is refused.
        let mut long = Vec::new();
        for _ in 0..63 {
            long.extend_from_slice(b"\x03abc");
        }
        long.extend_from_slice(b"\x01a\x00"); // 63*4 + 3 = 255
        assert!(parse(&long, 0).is_some());
        long.truncate(long.len() - 3);
        long.extend_from_slice(b"\x03abc\x00");
        assert!(parse(&long, 0).is_none());
    }

    #[test]
    fn udp_size_rule() {
        assert_eq!(udp_limit(None, 1232), 512);
        assert_eq!(udp_limit(Some(4096), 1232), 1232);
        assert_eq!(udp_limit(Some(1000), 1232), 1000);
        assert_eq!(udp_limit(Some(100), 1232), 512);
    }

    #[test]
    fn an_edns_option_longer_than_its_record_does_not_fit() {
        // A query for `a.` with an OPT whose one option: (code, length, data).
        let query = |option: &[u8]| {
            let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
            m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
            m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0]);
            m.extend_from_slice(&(option.len() as u16).to_be_bytes());
            m.extend_from_slice(option);
            m
        };
        assert!(opt_options_fit(&query(&[])));
        assert!(opt_options_fit(&query(&[0, 10, 0, 2, 1, 2])));
        assert!(opt_options_fit(&query(&[0, 10, 0, 0, 0, 8, 0, 1, 9])));
        // A cookie claiming 16 bytes with 2; a length cut off.
        assert!(!opt_options_fit(&query(&[0, 10, 0, 16, 1, 2])));
        assert!(!opt_options_fit(&query(&[0, 10, 0])));
    }
}
