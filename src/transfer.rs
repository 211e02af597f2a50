//! Zone transfers out (AXFR, RFC 5936; IXFR in AXFR form, RFC 1995): a zone of a
//! snapshot as a sequence of response messages, made one at a time while the
//! connection takes them, so a transfer never holds more than one message beyond
//! the snapshot it reads. The decision whether to transfer is [`crate::answer`]'s.

use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::journal::Delta;
use crate::snapshot::Zone;
use crate::tsig::{self, Signed};
use crate::wire::{AA, HEADER_LEN, QName, QR, header};

/// Messages are closed once they pass this size: well below the 64 KiB limit even
/// with a TSIG record, and every name offset stays below 0x4000, where a
/// compression pointer can reach it.
pub const MESSAGE_TARGET: usize = 16 * 1024;

/// What [`crate::answer`] decided to stream: the zone, and how to frame and sign it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The zone's origin, lower-cased (looked up again in the snapshot streamed).
    pub origin: Name,
    /// AXFR, or IXFR answered in AXFR form.
    pub qtype: RecordType,
    pub id: u16,
    /// RD and CD as the request had them.
    pub flags_copied: u16,
    /// The question section of the request, as received.
    pub question: Vec<u8>,
    /// The request's verified TSIG: every message is signed.
    pub signed: Option<Signed>,
    /// The serial an IXFR request had, for the log.
    pub client_serial: Option<u32>,
}

/// One record of the transfer, in order.
enum Item<'z> {
    Soa,
    /// The SOA of an earlier version (IXFR): the current one with this serial.
    SoaOld(u32),
    Ns(usize),
    /// A record of another type (a catalog's TXT and PTRs).
    Other(usize),
    /// (owner in wire form, the RR after its owner)
    Rr(&'z [u8], &'z [u8]),
    SoaLast,
}

/// The messages of a transfer of `zone` per `plan`, signed at `now` when the
/// request was. Each message is at most [`MESSAGE_TARGET`] bytes plus one record
/// and its TSIG.
pub struct Messages<'z> {
    zone: &'z Zone,
    plan: &'z Plan,
    now: u64,
    items: std::iter::Peekable<Box<dyn Iterator<Item = Item<'z>> + Send + 'z>>,
    first: bool,
    previous_mac: Option<Vec<u8>>,
    /// The zone's origin in lower-cased wire form.
    origin: Box<[u8]>,
    /// Records sent, for the log line.
    pub records: usize,
    /// Why the transfer stopped before its end, if it did: a record that could not
    /// be encoded, or a message that could not be signed. No message after (and
    /// none including) the one that failed is given out: a secondary never gets a
    /// partial zone that looks whole, nor a break in the MAC chain.
    pub failure: Option<&'static str>,
    /// Test seam: the item at this index fails to encode.
    #[cfg(test)]
    fail_item: Option<usize>,
}

impl<'z> Messages<'z> {
    /// The whole zone (AXFR, or IXFR in AXFR form).
    pub fn new(zone: &'z Zone, plan: &'z Plan, now: u64) -> Self {
        let items: Box<dyn Iterator<Item = Item<'z>> + Send + 'z> = Box::new(
            std::iter::once(Item::Soa)
                .chain((0..zone.ns.len()).map(Item::Ns))
                .chain((0..zone.other().len()).map(Item::Other))
                .chain(zone.rrs().map(|(owner, rr)| Item::Rr(owner, rr)))
                .chain(std::iter::once(Item::SoaLast)),
        );
        Self::with_items(zone, plan, now, items)
    }

    /// The deltas from the client's version to ours (RFC 1995 section 4): the new
    /// SOA; for each delta, the SOA it starts from and the records it removed, the
    /// SOA it ends at and the records it added; the new SOA. Read from the journal as
    /// they are: the work is the size of the deltas, whatever the zone's.
    pub fn ixfr(
        zone: &'z Zone,
        plan: &'z Plan,
        now: u64,
        deltas: impl Iterator<Item = &'z Delta> + Send + 'z,
    ) -> Self {
        let items: Box<dyn Iterator<Item = Item<'z>> + Send + 'z> = Box::new(
            std::iter::once(Item::Soa)
                .chain(deltas.flat_map(|d| {
                    std::iter::once(Item::SoaOld(d.from))
                        .chain(d.deleted().map(|(owner, rr)| Item::Rr(owner, rr)))
                        .chain(std::iter::once(Item::SoaOld(d.to)))
                        .chain(d.added().map(|(owner, rr)| Item::Rr(owner, rr)))
                }))
                .chain(std::iter::once(Item::SoaLast)),
        );
        Self::with_items(zone, plan, now, items)
    }

    fn with_items(
        zone: &'z Zone,
        plan: &'z Plan,
        now: u64,
        items: Box<dyn Iterator<Item = Item<'z>> + Send + 'z>,
    ) -> Self {
        Self {
            zone,
            plan,
            now,
            items: items.peekable(),
            first: true,
            previous_mac: None,
            origin: QName::from_name(&zone.origin)
                .map_or_else(Default::default, |q| q.as_bytes().into()),
            records: 0,
            failure: None,
            #[cfg(test)]
            fail_item: None,
        }
    }

    /// Test seam: the item at `index` (0: the first SOA) fails to encode.
    #[cfg(test)]
    pub(crate) fn failing_at(mut self, index: usize) -> Self {
        self.fail_item = Some(index);
        self
    }

    /// Appends one item; `false` (and nothing written) if it cannot be encoded.
    fn push(&self, buf: &mut Vec<u8>, item: &Item<'_>, names: &mut Compression) -> bool {
        let start = buf.len();
        let ok = match item {
            Item::Rr(owner, rr) => {
                names.write(buf, owner, &self.origin);
                buf.extend_from_slice(rr);
                true
            }
            Item::SoaOld(serial) => {
                let mut soa = self.zone.soa.clone();
                if let hickory_proto::rr::RData::SOA(data) = &mut soa.data {
                    data.serial = *serial;
                }
                emit_at_end(buf, &soa)
            }
            Item::Ns(i) => emit_at_end(buf, &self.zone.ns[*i]),
            Item::Other(i) => emit_at_end(buf, &self.zone.other()[*i]),
            Item::Soa | Item::SoaLast => emit_at_end(buf, &self.zone.soa),
        };
        if !ok {
            buf.truncate(start);
        }
        ok
    }
}

/// Where names already in a message are, for compression pointers (which reach
/// offsets below 0x4000 only).
#[derive(Default)]
struct Compression {
    /// The last owner written, and where.
    last: Option<(Vec<u8>, u16)>,
    /// Where the zone's origin is spelled out in this message.
    origin: Option<u16>,
}

impl Compression {
    /// Writes `owner`: a pointer to the same owner just before it, or its labels
    /// below the origin and a pointer to the origin, or in full.
    fn write(&mut self, buf: &mut Vec<u8>, owner: &[u8], origin: &[u8]) {
        let start = buf.len();
        match (&self.last, self.origin) {
            (Some((name, at)), _) if name == owner => {
                buf.extend_from_slice(&(0xC000 | *at).to_be_bytes());
                return;
            }
            (_, Some(at)) if !origin.is_empty() && owner.ends_with(origin) => {
                buf.extend_from_slice(&owner[..owner.len() - origin.len()]);
                buf.extend_from_slice(&(0xC000 | at).to_be_bytes());
            }
            _ => {
                buf.extend_from_slice(owner);
                if !origin.is_empty() && owner.ends_with(origin) {
                    self.origin = pointable(start + owner.len() - origin.len());
                }
            }
        }
        self.last = pointable(start).map(|at| (owner.to_vec(), at));
    }
}

/// `at` if a compression pointer can reach it.
fn pointable(at: usize) -> Option<u16> {
    u16::try_from(at).ok().filter(|at| *at < 0x4000)
}

fn emit_at_end(buf: &mut Vec<u8>, record: &hickory_proto::rr::Record) -> bool {
    let Ok(end) = u32::try_from(buf.len()) else {
        return false;
    };
    let mut encoder = BinEncoder::with_offset(buf, end);
    record.emit(&mut encoder).is_ok()
}

impl Iterator for Messages<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.failure.is_some() {
            return None;
        }
        self.items.peek()?;
        let plan = self.plan;
        let mut buf = Vec::with_capacity(MESSAGE_TARGET + 512);
        let qdcount = u16::from(self.first);
        buf.extend_from_slice(&header(
            plan.id,
            QR | AA | plan.flags_copied,
            [qdcount, 0, 0, 0],
        ));
        let mut names = Compression::default();
        if self.first {
            // The question is the zone's origin (any case): the first place to point at.
            names.origin = Some(HEADER_LEN as u16);
            buf.extend_from_slice(&plan.question);
        }
        let mut count: u16 = 0;
        while self.items.peek().is_some() {
            if count > 0 && buf.len() >= MESSAGE_TARGET {
                break;
            }
            let item = self.items.next()?;
            #[cfg(test)]
            let seam = self.fail_item == Some(self.records + usize::from(count));
            #[cfg(not(test))]
            let seam = false;
            if seam || !self.push(&mut buf, &item, &mut names) {
                // Cannot happen for records we built; if it does, the transfer stops.
                self.failure = Some("a record could not be encoded");
                return None;
            }
            count += 1;
        }
        buf[6..8].copy_from_slice(&count.to_be_bytes());
        self.records += usize::from(count);
        if let Some(signed) = &plan.signed {
            let mac = match &self.previous_mac {
                None => tsig::sign_response(&mut buf, signed, self.now, None),
                Some(previous) => tsig::sign_next(&mut buf, &signed.signer, previous, self.now),
            };
            let Some(mac) = mac else {
                self.records -= usize::from(count);
                self.failure = Some("a message could not be signed");
                return None;
            };
            self.previous_mac = Some(mac);
        }
        self.first = false;
        Some(buf)
    }
}

/// REFUSED for the request of `plan` (too many transfers, or the zone went),
/// signed when the request was; `None` if it could not be signed (nothing is sent).
pub fn refused(plan: &Plan) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEADER_LEN + plan.question.len() + 256);
    let refused = u16::from(hickory_proto::op::ResponseCode::Refused.low());
    buf.extend_from_slice(&header(
        plan.id,
        QR | plan.flags_copied | refused,
        [1, 0, 0, 0],
    ));
    buf.extend_from_slice(&plan.question);
    if let Some(signed) = &plan.signed {
        tsig::sign_response(&mut buf, signed, crate::snapshot::unix_now(), None)?;
    }
    Some(buf)
}
