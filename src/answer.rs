//! The answering core: query bytes and a snapshot in, response bytes out.
//!
//! This is a pure function ([`answer`]) with no I/O, so it is unit tested,
//! fuzzed and benchmarked directly; the transports only move bytes. It owns every
//! protocol decision: which rcode, which flags, which sections, EDNS, truncation.
//! hickory-proto does the wire format (parsing, name compression), never the
//! answering. Behaviour follows RFC 1034/1035, 2181, 2308 (negative answers),
//! 4592 (wildcards), 6891 (EDNS), 8020 (empty non-terminals), 8482 (ANY) and
//! 8945 (TSIG errors).

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::snapshot::{Lookup, Negative, Snapshot, Zone, unix_now};
use crate::transfer::{self, Plan};
use crate::tsig::{self, Signed, Verdict};
use crate::wire::{AA, CD, CLASSIC_UDP_SIZE, HEADER_LEN, MAX_NAME, QName, QR, RD, TC, udp_limit};

/// The transport a query arrived on; it decides the size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858), zone transfers over TLS (RFC 9103): TCP's rules.
    Tls,
}

/// A response to send, with what metrics and logs want to know about it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Empty when `transfer` is set: the transport streams the transfer instead.
    pub bytes: Vec<u8>,
    pub rcode: ResponseCode,
    pub truncated: bool,
    /// The question, when the query had exactly one that parsed (for logs and metrics).
    pub question: Option<Query>,
    /// A zone transfer to stream (TCP only), see [`crate::transfer`].
    pub transfer: Option<Plan>,
    /// Why the request was refused, for metrics: see [`Refusal`].
    pub refusal: Option<Refusal>,
    /// A NOTIFY from the primary taken for this zone (`[follow]`): the transport
    /// tells the follower to check it.
    pub notified: Option<Name>,
}

/// Why a request was refused or failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The source is not in `allow-query`.
    QueryAcl,
    /// A transfer from a source not in the zone's transfer `allow`.
    TransferAcl,
    /// A transfer not signed with the zone's `tsig-key`.
    TransferKey,
    /// A transfer over plain TCP of a zone whose policy says `require-tls`.
    TransferTls,
    /// A TSIG that failed: BADKEY, BADSIG or BADTIME.
    Tsig(u16),
}

impl Refusal {
    pub const LABELS: [&'static str; 7] = [
        "query_acl",
        "transfer_acl",
        "transfer_tsig",
        "transfer_tls",
        "tsig_badkey",
        "tsig_badsig",
        "tsig_badtime",
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueryAcl => "query_acl",
            Self::TransferAcl => "transfer_acl",
            Self::TransferKey => "transfer_tsig",
            Self::TransferTls => "transfer_tls",
            Self::Tsig(17) => "tsig_badkey",
            Self::Tsig(16) => "tsig_badsig",
            _ => "tsig_badtime",
        }
    }
}

/// Who asked, and when: what the access checks and TSIG need.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub source: IpAddr,
    /// Unix seconds.
    pub now: u64,
}

impl Client {
    /// A client on the loopback address, now.
    pub fn local() -> Self {
        Self {
            source: IpAddr::V6(Ipv6Addr::LOCALHOST),
            now: unix_now(),
        }
    }
}

/// The largest negative SOA RR: owner pointer, fixed fields, two 255-byte names.
const NEGATIVE_SOA_MAX: usize = 2 + 10 + 2 * MAX_NAME + 20;
/// EDNS option code of Extended DNS Errors (RFC 8914).
const EDE_OPTION_CODE: u16 = 15;

/// Answers one DNS message as from a loopback client now: [`respond`].
pub fn answer(query: &[u8], snapshot: &Snapshot, transport: Transport) -> Option<Response> {
    respond(query, snapshot, transport, &Client::local())
}

/// Answers one DNS message from `client`. `None` means: send nothing (not a query,
/// or no header).
///
/// Never panics, whatever the input.
pub fn respond(
    query: &[u8],
    snapshot: &Snapshot,
    transport: Transport,
    client: &Client,
) -> Option<Response> {
    if query.len() < HEADER_LEN {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & QR != 0 {
        // Never answer a response: that is how reflection loops start.
        return None;
    }
    let opcode = crate::wire::opcode(flags);
    let mut reply = Reply::new(id, opcode, flags);

    let Ok(msg) = Message::from_vec(query) else {
        return Some(reply.finish(ResponseCode::FormErr, transport, CLASSIC_UDP_SIZE));
    };

    // Echo OPT iff the query had one; advertise our own size; echo only DO.
    let client_size = msg.edns.as_ref().map(|e| e.max_payload());
    let our_size = snapshot.settings.udp_payload_size;
    if let Some(edns) = &msg.edns {
        reply.opt = Some(OptReply {
            payload: our_size,
            dnssec_ok: edns.flags().dnssec_ok,
            ede: None,
            // Padding hides lengths only where the bytes are encrypted.
            pad: transport == Transport::Tls
                && edns
                    .option(hickory_proto::rr::rdata::opt::EdnsCode::Padding)
                    .is_some(),
        });
    }
    let limit = match transport {
        Transport::Tcp | Transport::Tls => usize::from(u16::MAX),
        Transport::Udp => udp_limit(client_size, our_size),
    };

    if msg.queries.len() == 1 {
        reply.question = Some(msg.queries[0].clone());
    }
    let reply = match screen(reply, query, &msg, snapshot, client, transport, limit) {
        Ok(reply) => reply,
        Err(response) => return Some(response),
    };
    let (reply, signed) = match authenticate(reply, query, &msg, snapshot, client, transport, limit)
    {
        Ok(verified) => verified,
        Err(response) => return response,
    };
    if msg.metadata.op_code == OpCode::Notify {
        let mut reply = reply;
        reply.flags_copied = 0;
        if let Some(zone) = notify_from_primary(&msg, snapshot, client, &signed) {
            // RFC 1996 section 4.7: NOERROR, AA, the question echoed; the follower
            // then checks the zone's serial with the primary.
            reply.authoritative = true;
            let mut response = reply.finish(ResponseCode::NoError, transport, limit);
            response.notified = Some(zone);
            return signed_or_dropped(response, signed.as_ref(), client, None);
        }
        // What Knot DNS answers as a primary: we take NOTIFY from no one else.
        let response = reply.finish(ResponseCode::NotAuth, transport, limit);
        return signed_or_dropped(response, signed.as_ref(), client, None);
    }
    dispatch(
        reply, query, &msg, snapshot, transport, client, signed, limit,
    )
}

/// The zone a NOTIFY is for, when a follower takes it: SOA, for the primary's
/// catalog or a followed zone, from one of the primary's addresses, signed with
/// `[follow] tsig-key` when one is set.
fn notify_from_primary(
    msg: &Message,
    snapshot: &Snapshot,
    client: &Client,
    signed: &Option<Signed>,
) -> Option<Name> {
    let peers = snapshot.settings.follow.as_ref()?;
    let q = msg.queries.first()?;
    if q.query_type() != RecordType::SOA || q.query_class() != DNSClass::IN {
        return None;
    }
    let zone = q.name().to_lowercase();
    let ours = zone == peers.catalog || snapshot.zone(&zone).is_some_and(|z| z.is_followed());
    let key_ok = match &peers.key {
        Some(key) => signed.as_ref().is_some_and(|s| &s.key == key),
        None => true,
    };
    (ours && key_ok && peers.is_primary(client.source)).then_some(zone)
}

/// `response`, signed when `signed` is given; `None` (nothing is sent, and it is
/// logged and counted) if signing fails: a signed request never gets an unsigned
/// answer.
fn signed_or_dropped(
    mut response: Response,
    signed: Option<&Signed>,
    client: &Client,
    error: Option<hickory_proto::rr::rdata::tsig::TsigError>,
) -> Option<Response> {
    let Some(signed) = signed else {
        return Some(response);
    };
    if tsig::sign_response(&mut response.bytes, signed, client.now, error).is_some() {
        return Some(response);
    }
    static FAILED: crate::logging::Throttle = crate::logging::Throttle::new();
    if let Some(not_logged) = FAILED.allow() {
        tracing::error!(client = %client.source, key = %signed.key, not_logged, "a response could not be signed; not sent");
    }
    None
}

/// What is refused before the question is looked at: a source outside
/// `allow-query`, an EDNS option longer than its record, NOTIFY, other opcodes, not
/// exactly one question, EDNS versions above 0, a TSIG that is not the last record. (The `Err` is the finished answer:
/// large, but made once per refused request, never on the answering path.)
#[allow(clippy::result_large_err)]
fn screen<'s>(
    mut reply: Reply<'s>,
    query: &[u8],
    msg: &Message,
    snapshot: &Snapshot,
    client: &Client,
    transport: Transport,
    limit: usize,
) -> Result<Reply<'s>, Response> {
    if let Some(acl) = &snapshot.settings.allow_query
        && !acl.allows(client.source)
    {
        return Err(reply.refuse(Refusal::QueryAcl, transport, limit));
    }
    if msg.edns.is_some() && !crate::wire::opt_options_fit(query) {
        // An option longer than its OPT record (RFC 6891 6.1.2).
        reply.opt = None;
        return Err(reply.finish(ResponseCode::FormErr, transport, limit));
    }
    // NOTIFY passes here and is answered NOTAUTH once its TSIG is checked (so a
    // signed NOTIFY gets a signed answer).
    if !matches!(msg.metadata.op_code, OpCode::Query | OpCode::Notify) {
        reply.flags_copied = 0; // NOTIMP does not echo RD or CD
        return Err(reply.finish(ResponseCode::NotImp, transport, limit));
    }
    if msg.queries.len() != 1 {
        return Err(reply.finish(ResponseCode::FormErr, transport, limit));
    }
    if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Err(reply.finish(ResponseCode::BADVERS, transport, limit));
    }
    if let Some(pos) = msg
        .additionals
        .iter()
        .position(|r| r.record_type() == RecordType::TSIG)
        && pos + 1 != msg.additionals.len()
    {
        // TSIG must be the last record (RFC 8945 section 5.1).
        return Err(reply.finish(ResponseCode::FormErr, transport, limit));
    }
    Ok(reply)
}

/// Verifies the request's TSIG, if any: the key it verified with, or the NOTAUTH
/// answer (RFC 8945 5.2: a TSIG carrying the error, signed only for BADTIME, where
/// the request's MAC was good).
#[allow(clippy::result_large_err)]
fn authenticate<'s>(
    mut reply: Reply<'s>,
    query: &[u8],
    msg: &Message,
    snapshot: &Snapshot,
    client: &Client,
    transport: Transport,
    limit: usize,
) -> Result<(Reply<'s>, Option<Signed>), Option<Response>> {
    match tsig::verify(query, msg, &snapshot.settings.keys, client.now) {
        Verdict::Unsigned => Ok((reply, None)),
        Verdict::Signed(signed) => Ok((reply, Some(signed))),
        Verdict::Error {
            error,
            unsigned,
            signed,
        } => {
            reply.tsig = unsigned.map(|r| *r);
            reply.refusal = Some(Refusal::Tsig(u16::from(error)));
            let response = reply.finish(ResponseCode::NotAuth, transport, limit);
            Err(signed_or_dropped(
                response,
                signed.as_deref(),
                client,
                Some(error),
            ))
        }
    }
}

/// Answers the one question by class and type, and signs the answer when the
/// request was signed.
#[allow(clippy::too_many_arguments)]
fn dispatch<'s>(
    mut reply: Reply<'s>,
    query: &[u8],
    msg: &Message,
    snapshot: &'s Snapshot,
    transport: Transport,
    client: &Client,
    signed: Option<Signed>,
    limit: usize,
) -> Option<Response> {
    // Room for our TSIG in a signed UDP answer (an IXFR message is signed within
    // the whole limit).
    let whole_limit = limit;
    let limit = match (&signed, transport) {
        (Some(s), Transport::Udp) => limit.saturating_sub(tsig_room(s)).max(HEADER_LEN),
        _ => limit,
    };
    let q = &msg.queries[0];
    let rcode = match q.query_class() {
        DNSClass::IN if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) => {
            match transfer_request(&mut reply, query, msg, snapshot, transport, client, &signed) {
                Ok(plan) if transport != Transport::Udp => return Some(reply.stream(plan)),
                Ok(plan) => match udp_ixfr(&plan, snapshot, whole_limit, client.now) {
                    Some(bytes) => return Some(reply.ready(bytes)),
                    None => {
                        // Our SOA alone: the client retries over TCP (RFC 1995 section 2).
                        if let Some(zone) = snapshot.zone(&plan.origin) {
                            reply.authoritative = true;
                            reply.answers.push(owned(&zone.soa, q.name()));
                        }
                        ResponseCode::NoError
                    }
                },
                Err(rcode) => rcode,
            }
        }
        DNSClass::IN => match catalog_refusal(snapshot, q.name(), client, &signed) {
            Some(why) => {
                reply.refusal = Some(why);
                reply.prohibited();
                ResponseCode::Refused
            }
            None => answer_in(&mut reply, q, snapshot, transport),
        },
        DNSClass::CH => answer_chaos(&mut reply, q, snapshot),
        _ => ResponseCode::Refused,
    };
    let response = reply.finish(rcode, transport, limit);
    signed_or_dropped(response, signed.as_ref(), client, None)
}

/// Why a query for a name in the catalog zone is refused: the catalog is answered
/// only to clients that may transfer it (its `allow`, and its key when it has one).
/// BIND asks for its SOA, signed, before every transfer.
fn catalog_refusal(
    snapshot: &Snapshot,
    name: &Name,
    client: &Client,
    signed: &Option<Signed>,
) -> Option<Refusal> {
    let catalog = snapshot.settings.catalog.as_ref()?;
    if !catalog.origin.zone_of(name) {
        return None;
    }
    let policy = &catalog.transfer;
    if !policy.allow.allows(client.source) {
        return Some(Refusal::TransferAcl);
    }
    match &policy.key {
        Some(key) if signed.as_ref().is_none_or(|s| &s.key != key) => Some(Refusal::TransferKey),
        _ => None,
    }
}

/// Room our TSIG record takes in a signed answer: the key name, the RR header,
/// the algorithm name (at most 13 bytes, "hmac-sha512."), the fixed fields and a
/// MAC of at most 64 bytes.
fn tsig_room(signed: &Signed) -> usize {
    signed.key.len() + 1 + 10 + 13 + 16 + 64
}

/// An AXFR or IXFR request: a [`Plan`] to stream, or the rcode to answer with
/// (the IXFR answers that are a single SOA are put in `reply`).
fn transfer_request(
    reply: &mut Reply<'_>,
    query: &[u8],
    msg: &Message,
    snapshot: &Snapshot,
    transport: Transport,
    client: &Client,
    signed: &Option<Signed>,
) -> Result<Plan, ResponseCode> {
    let q = &msg.queries[0];
    let is_ixfr = q.query_type() == RecordType::IXFR;
    if transport == Transport::Udp && !is_ixfr {
        return Err(ResponseCode::NotImp); // AXFR is TCP only (RFC 5936 4.2), as Knot
    }
    let Some(zone) = snapshot.zone(q.name()) else {
        return Err(ResponseCode::NotAuth); // not a zone of ours, as Knot
    };
    if zone.is_expired() {
        return Err(ResponseCode::ServFail); // nothing current to give
    }
    let policy = zone.transfer();
    if !policy.allow.allows(client.source) {
        reply.refusal = Some(Refusal::TransferAcl);
        reply.prohibited();
        return Err(ResponseCode::Refused);
    }
    if policy.require_tls && transport != Transport::Tls {
        // XoT only (RFC 9103): not even the SOA of an up-to-date IXFR in the clear.
        reply.refusal = Some(Refusal::TransferTls);
        reply.prohibited();
        return Err(ResponseCode::Refused);
    }
    if let Some(key) = &policy.key
        && signed.as_ref().is_none_or(|s| &s.key != key)
    {
        reply.refusal = Some(Refusal::TransferKey);
        reply.prohibited();
        return Err(ResponseCode::Refused);
    }
    let mut client_serial = None;
    if is_ixfr {
        let Some(theirs) = msg.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        }) else {
            return Err(ResponseCode::FormErr); // IXFR carries the client's SOA
        };
        client_serial = Some(theirs);
        // Up to date (or ahead): our SOA alone.
        if !serial_lt(theirs, zone.serial()) {
            reply.authoritative = true;
            reply.answers.push(owned(&zone.soa, q.name()));
            return Err(ResponseCode::NoError);
        }
    }
    Ok(Plan {
        origin: zone.origin.clone(),
        qtype: q.query_type(),
        id: msg.metadata.id,
        flags_copied: reply.flags_copied,
        question: query
            [HEADER_LEN..crate::wire::question_end(query).ok_or(ResponseCode::FormErr)?]
            .to_vec(),
        signed: signed.clone(),
        client_serial,
    })
}

/// An IXFR over UDP: the deltas since the client's version when the journal has
/// them and they fit in one message within `limit`; else `None`. Deltas too big
/// for it are not encoded at all.
fn udp_ixfr(plan: &Plan, snapshot: &Snapshot, limit: usize, now: u64) -> Option<Vec<u8>> {
    let zone = snapshot.zone(&plan.origin)?;
    let deltas = snapshot.ixfr_deltas(zone, plan.client_serial?)?;
    if deltas.clone().map(|d| d.wire_len()).sum::<usize>() > limit {
        return None;
    }
    let mut messages = transfer::Messages::ixfr(zone, plan, now, deltas);
    let first = messages.next()?;
    (messages.next().is_none() && first.len() <= limit).then_some(first)
}

/// `a < b` in serial number arithmetic (RFC 1982 section 3.2).
pub fn serial_lt(a: u32, b: u32) -> bool {
    use hickory_proto::rr::SerialNumber;
    SerialNumber::from(a) < SerialNumber::from(b)
}

fn answer_in<'s>(
    reply: &mut Reply<'s>,
    q: &Query,
    snapshot: &'s Snapshot,
    transport: Transport,
) -> ResponseCode {
    let qtype = q.query_type();
    let Some(qname) = QName::from_name(q.name()) else {
        return ResponseCode::FormErr; // a parsed name is at most 255 bytes: cannot happen
    };
    let lookup = snapshot.lookup(&qname);
    let (zone, node, apex) = match lookup {
        Lookup::NotOurs => {
            if let Some(opt) = &mut reply.opt {
                opt.ede = Some(EDE_NOT_AUTHORITATIVE);
            }
            return ResponseCode::Refused;
        }
        Lookup::NxDomain { zone, .. } if zone.is_expired() => return ResponseCode::ServFail,
        Lookup::NxDomain { zone, apex } => {
            reply.authoritative = true;
            reply.negative = Some(zone.negative(&qname, apex));
            return ResponseCode::NXDomain;
        }
        Lookup::Found { zone, node, apex } => (zone, node, apex),
    };
    if zone.is_expired() {
        return ResponseCode::ServFail; // past SOA expire without the primary, as BIND and Knot
    }
    reply.authoritative = true;
    let owner = q.name();
    let is_apex = apex == 0;

    // A and AAAA answers are pre-encoded in the snapshot (see `crate::fast`).
    let (wire, count) = node.rrset(u16::from(qtype));
    if count > 0 {
        reply.answer_wire = Some((wire, count));
    }
    let answers = &mut reply.answers;
    match qtype {
        RecordType::SOA if is_apex => answers.push(owned(&zone.soa, owner)),
        RecordType::NS if is_apex => {
            answers.extend(zone.ns.iter().map(|r| owned(r, owner)));
            push_glue(&mut reply.additional, zone);
        }
        RecordType::ANY if transport == Transport::Udp => {
            // RFC 8482 section 4.1: one RRset instead of everything, so ANY over
            // UDP is no amplifier. The addresses are what a client wants most.
            let a = node.a_records(owner);
            if !a.is_empty() {
                *answers = a;
            } else {
                *answers = node.aaaa_records(owner);
                if answers.is_empty() && is_apex {
                    answers.push(owned(&zone.soa, owner));
                }
            }
        }
        RecordType::ANY => {
            if is_apex {
                answers.push(owned(&zone.soa, owner));
                answers.extend(zone.ns.iter().map(|r| owned(r, owner)));
            }
            answers.extend(node.a_records(owner));
            answers.extend(node.aaaa_records(owner));
        }
        _ => {}
    }
    if !zone.other().is_empty() {
        // The catalog's TXT and PTRs.
        let any = qtype == RecordType::ANY;
        reply.answers.extend(
            zone.other()
                .iter()
                .filter(|r| (any || r.record_type() == qtype) && r.name == *owner)
                .map(|r| owned(r, owner)),
        );
    }
    if reply.answers.is_empty() && reply.answer_wire.is_none() {
        // NODATA: the name exists (possibly through a wildcard), the type does not.
        reply.negative = Some(zone.negative(&qname, apex));
    }
    ResponseCode::NoError
}

/// `record` with the question's spelling of the owner name.
fn owned(record: &Record, owner: &Name) -> Record {
    let mut r = record.clone();
    r.name = owner.clone();
    r
}

/// A and AAAA of in-zone name servers, for the additional section.
fn push_glue(out: &mut Vec<Record>, zone: &Zone) {
    for ns in &zone.ns {
        if let RData::NS(target) = &ns.data
            && let Some(node) = zone.node(&target.0)
        {
            out.extend(node.a_records(&target.0));
            out.extend(node.aaaa_records(&target.0));
        }
    }
}

/// CH TXT `version.bind` / `id.server` (and aliases), only when configured.
fn answer_chaos(reply: &mut Reply, q: &Query, snapshot: &Snapshot) -> ResponseCode {
    let settings = &snapshot.settings;
    let name = q.name().to_lowercase().to_ascii();
    let text = match name.as_str() {
        "version.bind." | "version.server." => settings.version.as_ref(),
        "id.server." | "hostname.bind." => settings.identity.as_ref(),
        _ => None,
    };
    let Some(text) = text else {
        return ResponseCode::Refused;
    };
    // Like Knot and NSD: no zone is behind these names, so AA stays 0.
    if matches!(q.query_type(), RecordType::TXT | RecordType::ANY) {
        let mut rr = Record::from_rdata(
            q.name().clone(),
            0,
            RData::TXT(TXT::new(vec![text.clone()])),
        );
        rr.dns_class = DNSClass::CH;
        reply.answers.push(rr);
    }
    ResponseCode::NoError
}

struct OptReply {
    payload: u16,
    dnssec_ok: bool,
    /// Extended DNS Error info-code (RFC 8914), if any.
    ede: Option<u16>,
    /// Pad the response (RFC 7830) to a multiple of [`PADDING_BLOCK`]: a padded query
    /// over TLS.
    pad: bool,
}

/// RFC 8467 section 4.1: responses padded to a multiple of 468 bytes.
const PADDING_BLOCK: usize = 468;
/// The EDNS Padding option (RFC 7830).
const PADDING_OPTION_CODE: u16 = 12;

/// RFC 8914 info-code 20: the server is not authoritative for the name.
const EDE_NOT_AUTHORITATIVE: u16 = 20;
/// Extended DNS Error 18: Prohibited (an access list said no).
const EDE_PROHIBITED: u16 = 18;

/// A response under construction.
struct Reply<'s> {
    id: u16,
    opcode: u8,
    /// RD and CD as the query had them.
    flags_copied: u16,
    authoritative: bool,
    question: Option<Query>,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
    opt: Option<OptReply>,
    tsig: Option<Record>,
    /// Pre-encoded answer RRs from the snapshot, and how many.
    answer_wire: Option<(&'s [u8], u16)>,
    /// The SOA of a negative answer, for the authority section.
    negative: Option<Negative<'s>>,
    refusal: Option<Refusal>,
}

impl<'s> Reply<'s> {
    fn new(id: u16, opcode: u8, query_flags: u16) -> Self {
        Self {
            id,
            opcode,
            flags_copied: query_flags & (RD | CD),
            authoritative: false,
            question: None,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            opt: None,
            tsig: None,
            answer_wire: None,
            negative: None,
            refusal: None,
        }
    }

    /// Marks the reply with EDE 18 "Prohibited" (RFC 8914), when it has OPT.
    fn prohibited(&mut self) {
        if let Some(opt) = &mut self.opt {
            opt.ede = Some(EDE_PROHIBITED);
        }
    }

    /// REFUSED with EDE 18, for `why`.
    fn refuse(mut self, why: Refusal, transport: Transport, limit: usize) -> Response {
        self.prohibited();
        self.refusal = Some(why);
        self.finish(ResponseCode::Refused, transport, limit)
    }

    /// A response made elsewhere (an IXFR over UDP).
    fn ready(self, bytes: Vec<u8>) -> Response {
        Response {
            bytes,
            rcode: ResponseCode::NoError,
            truncated: false,
            question: self.question,
            transfer: None,
            refusal: None,
            notified: None,
        }
    }

    /// A transfer to stream: no bytes here, the transport sends the messages.
    fn stream(self, plan: Plan) -> Response {
        Response {
            bytes: Vec::new(),
            rcode: ResponseCode::NoError,
            truncated: false,
            question: self.question,
            transfer: Some(plan),
            refusal: None,
            notified: None,
        }
    }

    /// Encodes the response; if it exceeds `limit`, sends TC=1 with only the
    /// question, OPT and TSIG (RFC 2181 section 9, RFC 6891 section 7).
    fn finish(mut self, rcode: ResponseCode, transport: Transport, limit: usize) -> Response {
        if let Some(bytes) = self.encode(rcode, false).filter(|b| b.len() <= limit) {
            return Response {
                bytes,
                rcode,
                truncated: false,
                question: self.question,
                transfer: None,
                refusal: self.refusal,
                notified: None,
            };
        }
        self.answers.clear();
        self.authority.clear();
        self.additional.clear();
        self.answer_wire = None;
        self.negative = None;
        // Over TCP nothing is ever truncated; a 64 KiB overflow is a server failure.
        let (rcode, tc) = match transport {
            Transport::Udp => (rcode, true),
            Transport::Tcp | Transport::Tls => (ResponseCode::ServFail, false),
        };
        let question = self.question.clone();
        let bytes = self
            .encode(rcode, tc)
            .or_else(|| {
                self.question = None;
                self.encode(rcode, tc)
            })
            .unwrap_or_else(|| self.header_only(rcode));
        Response {
            bytes,
            rcode,
            truncated: tc,
            question,
            transfer: None,
            refusal: self.refusal,
            notified: None,
        }
    }

    fn flags(&self, rcode: ResponseCode, tc: bool) -> u16 {
        let mut flags = QR | (u16::from(self.opcode) << 11) | self.flags_copied;
        if self.authoritative && rcode != ResponseCode::Refused {
            flags |= AA;
        }
        if tc {
            flags |= TC;
        }
        flags | u16::from(rcode.low())
    }

    fn header_only(&self, rcode: ResponseCode) -> Vec<u8> {
        crate::wire::header(self.id, self.flags(rcode, false), [0; 4]).to_vec()
    }

    fn encode(&self, rcode: ResponseCode, tc: bool) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        let additional = self.additional.len()
            + usize::from(self.opt.is_some())
            + usize::from(self.tsig.is_some());
        let counts = [
            usize::from(self.question.is_some()),
            self.answers.len() + self.answer_wire.map_or(0, |(_, n)| usize::from(n)),
            self.authority.len() + usize::from(self.negative.is_some()),
            additional,
        ];
        enc.emit_u16(self.id).ok()?;
        enc.emit_u16(self.flags(rcode, tc)).ok()?;
        for count in counts {
            enc.emit_u16(u16::try_from(count).ok()?).ok()?;
        }
        if let Some(q) = &self.question {
            q.emit(&mut enc).ok()?;
        }
        if let Some((wire, _)) = self.answer_wire {
            enc.emit_vec(wire).ok()?;
        }
        for rr in &self.answers {
            rr.emit(&mut enc).ok()?;
        }
        if let Some(negative) = &self.negative {
            let mut soa = [0u8; NEGATIVE_SOA_MAX];
            let len = negative.write(&mut soa)?;
            enc.emit_vec(&soa[..len]).ok()?;
        }
        for rr in self.authority.iter().chain(&self.additional) {
            rr.emit(&mut enc).ok()?;
        }
        if let Some(opt) = &self.opt {
            let mut edns = Edns::new();
            edns.set_max_payload(opt.payload);
            edns.set_version(0);
            edns.set_dnssec_ok(opt.dnssec_ok);
            edns.set_rcode_high(rcode.high());
            let mut options_len = 0;
            if let Some(code) = opt.ede {
                let option = EdnsOption::Unknown(EDE_OPTION_CODE, code.to_be_bytes().to_vec());
                edns.options_mut().insert(option);
                options_len += 4 + 2;
            }
            if opt.pad {
                // What the message will be with an empty padding option (OPT: root
                // name, type, class, TTL, RDLENGTH; then the options), rounded up.
                let unpadded = enc.offset() + 11 + options_len + 4;
                let fill = (PADDING_BLOCK - unpadded % PADDING_BLOCK) % PADDING_BLOCK;
                edns.options_mut()
                    .insert(EdnsOption::Unknown(PADDING_OPTION_CODE, vec![0; fill]));
            }
            Record::from(&edns).emit(&mut enc).ok()?;
        }
        if let Some(tsig) = &self.tsig {
            tsig.emit(&mut enc).ok()?;
        }
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::TSIG;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};

    use super::*;
    use crate::config::Config;
    use crate::{discovery, snapshot};

    const TEST_ZONES: &str = concat!(
        r#"
[server]
version = "test-version"

"#,
        include_str!("../tests/data/example-zones.toml")
    );

    fn snap() -> Snapshot {
        let mut text = TEST_ZONES.to_string();
        // A name with 100 addresses: about 1.6 KB, more than 512 and 1232.
        let big: Vec<String> = (0..100).map(|i| format!("\"198.51.100.{i}\"")).collect();
        text.push_str(&format!(
            "[[zone]]\norigin = \"big.test\"\n[[zone.record]]\nname = \"@\"\na = [{}]\n",
            big.join(", ")
        ));
        let config = Config::from_toml(&text, "test").unwrap();
        snapshot::build(
            &discovery::static_zones(&config),
            config.server.settings,
            None,
            1_700_000_000,
        )
    }

    struct Q {
        name: &'static str,
        qtype: RecordType,
        class: DNSClass,
        edns: Option<Edns>,
    }

    fn q(name: &'static str, qtype: RecordType) -> Q {
        Q {
            name,
            qtype,
            class: DNSClass::IN,
            edns: None,
        }
    }

    fn edns(payload: u16) -> Edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e
    }

    impl Q {
        fn class(mut self, class: DNSClass) -> Self {
            self.class = class;
            self
        }
        fn edns(mut self, e: Edns) -> Self {
            self.edns = Some(e);
            self
        }
        fn message(&self) -> Message {
            let mut m = Message::query();
            m.metadata.id = 0xBEEF;
            m.metadata.recursion_desired = true;
            let mut query = Query::query(Name::from_str(self.name).unwrap(), self.qtype);
            query.set_query_class(self.class);
            m.add_query(query);
            if let Some(e) = &self.edns {
                m.set_edns(e.clone());
            }
            m
        }
        fn bytes(&self) -> Vec<u8> {
            self.message().to_vec().unwrap()
        }
    }

    fn ask_bytes(bytes: &[u8], transport: Transport) -> Message {
        let r = answer(bytes, &snap(), transport).expect("a response");
        let m = Message::from_vec(&r.bytes).expect("our response parses");
        assert_eq!(
            u16::from(m.metadata.response_code),
            u16::from(r.rcode),
            "reported rcode matches the wire"
        );
        assert_eq!(m.metadata.truncation, r.truncated);
        m
    }

    fn ask(q: &Q, transport: Transport) -> Message {
        ask_bytes(&q.bytes(), transport)
    }

    fn rdatas(records: &[Record]) -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect();
        v.sort();
        v
    }

    /// (what, query, transport, rcode, AA, answers as "owner TYPE data", authority types)
    type Row = (
        &'static str,
        Q,
        Transport,
        ResponseCode,
        bool,
        Vec<&'static str>,
        Vec<RecordType>,
    );

    /// The table: one row per behaviour of the core, as a resolver sees it.
    #[test]
    fn answer_table() {
        use ResponseCode::*;
        use Transport::*;
        // (what, query, transport, rcode, AA, answers "owner TYPE data", authority types)
        let rows: Vec<Row> = vec![
            (
                "A hit",
                q("www.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec![
                    "www.example.com. A 192.0.2.10",
                    "www.example.com. A 192.0.2.11",
                ],
                vec![],
            ),
            (
                "AAAA hit",
                q("www.example.com.", RecordType::AAAA),
                Udp,
                NoError,
                true,
                vec!["www.example.com. AAAA 2001:db8::10"],
                vec![],
            ),
            (
                "apex A",
                q("example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec!["example.com. A 192.0.2.1"],
                vec![],
            ),
            (
                "NODATA: AAAA on an IPv4-only name",
                q("v4only.example.com.", RecordType::AAAA),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "NODATA: unsupported type",
                q("www.example.com.", RecordType::MX),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "NXDOMAIN",
                q("nothere.example.com.", RecordType::A),
                Udp,
                NXDomain,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "ENT is NODATA (RFC 8020)",
                q("b.c.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "ENT higher up is NODATA",
                q("c.example.com.", RecordType::AAAA),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "below a leaf is NXDOMAIN",
                q("z.a.b.c.example.com.", RecordType::A),
                Udp,
                NXDomain,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "wildcard: owner is QNAME",
                q("bucket.s3.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec!["bucket.s3.example.com. A 192.0.2.40"],
                vec![],
            ),
            (
                "wildcard: deeper names match too",
                q("x.y.s3.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec!["x.y.s3.example.com. A 192.0.2.40"],
                vec![],
            ),
            (
                "wildcard without the type is NODATA",
                q("bucket.s3.example.com.", RecordType::AAAA),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "wildcard does not apply to an existing name",
                q("exists.s3.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "wildcard does not apply below an existing name",
                q("deep.exists.s3.example.com.", RecordType::A),
                Udp,
                NXDomain,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "wildcard does not apply above its parent",
                q("other.example.com.", RecordType::A),
                Udp,
                NXDomain,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "the wildcard owner itself",
                q("*.s3.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec!["*.s3.example.com. A 192.0.2.40"],
                vec![],
            ),
            (
                "apex SOA",
                q("example.com.", RecordType::SOA),
                Udp,
                NoError,
                true,
                vec![
                    "example.com. SOA ns1.example.com. hostmaster.example.com. 1700000000 3600 900 1209600 60",
                ],
                vec![],
            ),
            (
                "apex NS",
                q("example.com.", RecordType::NS),
                Udp,
                NoError,
                true,
                vec![
                    "example.com. NS ns1.example.com.",
                    "example.com. NS ns2.example.net.",
                ],
                vec![],
            ),
            (
                "NS below the apex is NODATA",
                q("www.example.com.", RecordType::NS),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "SOA below the apex is NODATA",
                q("www.example.com.", RecordType::SOA),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "most specific zone wins",
                q("x.sub.example.com.", RecordType::A),
                Udp,
                NoError,
                true,
                vec!["x.sub.example.com. A 192.0.2.50"],
                vec![],
            ),
            (
                "child apex SOA",
                q("sub.example.com.", RecordType::SOA),
                Udp,
                NoError,
                true,
                vec![
                    "sub.example.com. SOA ns.privatelink-dns.invalid. hostmaster.sub.example.com. 1700000000 3600 900 1209600 60",
                ],
                vec![],
            ),
            (
                "out of zone: other domain",
                q("example.org.", RecordType::A),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "out of zone: parent",
                q("com.", RecordType::A),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "out of zone: root",
                q(".", RecordType::NS),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "out of zone: suffix-alike",
                q("notexample.com.", RecordType::A),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "AXFR refused",
                q("example.com.", RecordType::AXFR),
                Tcp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "IXFR refused",
                q("example.com.", RecordType::IXFR),
                Tcp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "class HS refused",
                q("www.example.com.", RecordType::A).class(DNSClass::HS),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "class CH on zone data refused",
                q("www.example.com.", RecordType::A).class(DNSClass::CH),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "CH version.bind when configured",
                q("version.bind.", RecordType::TXT).class(DNSClass::CH),
                Udp,
                NoError,
                false,
                vec!["version.bind. TXT test-version"],
                vec![],
            ),
            (
                "CH id.server when not configured",
                q("id.server.", RecordType::TXT).class(DNSClass::CH),
                Udp,
                Refused,
                false,
                vec![],
                vec![],
            ),
            (
                "ANY over UDP: one RRset (RFC 8482)",
                q("www.example.com.", RecordType::ANY),
                Udp,
                NoError,
                true,
                vec![
                    "www.example.com. A 192.0.2.10",
                    "www.example.com. A 192.0.2.11",
                ],
                vec![],
            ),
            (
                "ANY over TCP: every RRset",
                q("www.example.com.", RecordType::ANY),
                Tcp,
                NoError,
                true,
                vec![
                    "www.example.com. A 192.0.2.10",
                    "www.example.com. A 192.0.2.11",
                    "www.example.com. AAAA 2001:db8::10",
                ],
                vec![],
            ),
            (
                "ANY on an ENT is NODATA",
                q("c.example.com.", RecordType::ANY),
                Udp,
                NoError,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
            (
                "ANY on a missing name is NXDOMAIN",
                q("nope.example.com.", RecordType::ANY),
                Udp,
                NXDomain,
                true,
                vec![],
                vec![RecordType::SOA],
            ),
        ];
        for (what, query, transport, rcode, aa, answers, authority) in rows {
            let r = ask(&query, transport);
            assert_eq!(r.metadata.response_code, rcode, "{what}: rcode");
            assert_eq!(r.metadata.authoritative, aa, "{what}: AA");
            assert!(!r.metadata.recursion_available, "{what}: RA is never set");
            assert_eq!(r.metadata.id, 0xBEEF, "{what}: ID copied");
            assert!(r.metadata.recursion_desired, "{what}: RD copied");
            assert_eq!(
                r.queries,
                query.message().queries,
                "{what}: question copied"
            );
            assert_eq!(rdatas(&r.answers), answers, "{what}: answers");
            let types: Vec<_> = r.authorities.iter().map(|a| a.record_type()).collect();
            assert_eq!(types, authority, "{what}: authority");
            assert!(r.edns.is_none(), "{what}: no OPT without OPT in the query");
        }
    }

    #[test]
    fn negative_answers_carry_soa_with_min_of_ttl_and_minimum() {
        for (name, qtype) in [
            ("nothere.example.com.", RecordType::A),
            ("v4only.example.com.", RecordType::AAAA),
        ] {
            let r = ask(&q(name, qtype), Transport::Udp);
            assert_eq!(r.authorities.len(), 1);
            assert_eq!(r.authorities[0].ttl, 60, "min(3600, 60)");
            assert_eq!(r.authorities[0].name.to_string(), "example.com.");
        }
    }

    #[test]
    fn apex_ns_carries_in_zone_glue_only() {
        let r = ask(&q("example.com.", RecordType::NS), Transport::Udp);
        assert_eq!(
            rdatas(&r.additionals),
            vec![
                "ns1.example.com. A 192.0.2.53",
                "ns1.example.com. AAAA 2001:db8::53"
            ]
        );
    }

    #[test]
    fn mixed_case_question_survives_byte_exact() {
        let query = q("WwW.ExAmPlE.cOm.", RecordType::A).bytes();
        let r = answer(&query, &snap(), Transport::Udp).unwrap();
        let qlen = "WwW.ExAmPlE.cOm.".len() + 1 + 4;
        assert_eq!(r.bytes[12..12 + qlen], query[12..12 + qlen]);
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.answers.len(), 2);
        assert!(
            m.answers[0]
                .name
                .eq_case(&Name::from_str("WwW.ExAmPlE.cOm.").unwrap())
        );
    }

    #[test]
    fn header_flags_copied_and_set() {
        let mut m = q("www.example.com.", RecordType::A).message();
        m.metadata.recursion_desired = false;
        m.metadata.checking_disabled = true;
        let r = ask_bytes(&m.to_vec().unwrap(), Transport::Udp);
        assert!(!r.metadata.recursion_desired);
        assert!(r.metadata.checking_disabled, "CD copied");
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert!(!r.metadata.authentic_data);
    }

    #[test]
    fn edns_rules() {
        // OPT iff in the request; our size advertised; DO echoed; options not echoed.
        let mut e = edns(4096);
        e.set_dnssec_ok(true);
        e.options_mut()
            .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
        e.options_mut()
            .insert(EdnsOption::Unknown(u16::from(EdnsCode::NSID), vec![]));
        let r = ask(
            &q("www.example.com.", RecordType::A).edns(e),
            Transport::Udp,
        );
        let opt = r.edns.expect("OPT echoed");
        assert_eq!(opt.max_payload(), 1232);
        assert!(opt.flags().dnssec_ok);
        assert_eq!(opt.version(), 0);
        assert!(
            opt.options().as_ref().is_empty(),
            "unknown options are not echoed"
        );

        let r = ask(
            &q("www.example.com.", RecordType::A).edns(edns(1232)),
            Transport::Udp,
        );
        assert!(!r.edns.unwrap().flags().dnssec_ok, "DO not invented");

        let mut v1 = edns(1232);
        v1.set_version(1);
        let r = ask(
            &q("www.example.com.", RecordType::A).edns(v1),
            Transport::Udp,
        );
        assert_eq!(u16::from(r.metadata.response_code), 16, "BADVERS");
        assert_eq!(r.edns.unwrap().version(), 0);
        assert!(r.answers.is_empty());
    }

    #[test]
    fn truncation_keeps_question_and_opt() {
        let big = |e: Option<Edns>| {
            let mut query = q("big.test.", RecordType::A);
            query.edns = e;
            query
        };
        // (client EDNS size, transport, expected TC, expected max bytes)
        let rows: Vec<(Option<u16>, Transport, bool, usize)> = vec![
            (None, Transport::Udp, true, 512),
            (Some(512), Transport::Udp, true, 512),
            (Some(4096), Transport::Udp, true, 1232),
            (Some(1232), Transport::Udp, true, 1232),
            (None, Transport::Tcp, false, 65535),
            (Some(1232), Transport::Tcp, false, 65535),
        ];
        for (size, transport, tc, max) in rows {
            let query = big(size.map(edns)).bytes();
            let r = answer(&query, &snap(), transport).unwrap();
            assert!(
                r.bytes.len() <= max,
                "{size:?} {transport:?}: {} bytes",
                r.bytes.len()
            );
            let m = Message::from_vec(&r.bytes).unwrap();
            assert_eq!(m.metadata.truncation, tc, "{size:?} {transport:?}");
            assert_eq!(m.queries.len(), 1, "question kept");
            assert_eq!(m.edns.is_some(), size.is_some(), "OPT kept iff asked");
            assert!(m.metadata.authoritative);
            if tc {
                assert!(m.answers.is_empty());
            } else {
                assert_eq!(m.answers.len(), 100);
            }
        }
        // A small client size below 512 is treated as 512 (RFC 6891 6.2.5).
        let r = answer(
            &q("www.example.com.", RecordType::A).edns(edns(100)).bytes(),
            &snap(),
            Transport::Udp,
        )
        .unwrap();
        assert!(!r.truncated);
    }

    #[test]
    fn opcode_other_than_query_is_notimp_without_rd() {
        for opcode in [1u8, 2, 3, 4, 5, 6, 15] {
            let mut bytes = q("www.example.com.", RecordType::A).bytes();
            bytes[2] = (bytes[2] & 0x87) | (opcode << 3);
            let m = ask_bytes(&bytes, Transport::Udp);
            // NOTIFY (4): NOTAUTH, as Knot DNS answers it for a zone it is primary for.
            let want = if opcode == 4 {
                ResponseCode::NotAuth
            } else {
                ResponseCode::NotImp
            };
            assert_eq!(m.metadata.response_code, want, "opcode {opcode}");
            assert!(!m.metadata.authoritative, "opcode {opcode}");
            assert!(!m.metadata.recursion_desired, "RD not echoed");
            assert_eq!(u8::from(m.metadata.op_code), opcode);
            assert!(m.answers.is_empty());
        }
    }

    #[test]
    fn question_count_must_be_one() {
        let mut none = Message::query();
        none.metadata.id = 7;
        let m = ask_bytes(&none.to_vec().unwrap(), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

        let mut two = q("www.example.com.", RecordType::A).message();
        two.add_query(Query::query(
            Name::from_str("example.com.").unwrap(),
            RecordType::A,
        ));
        let m = ask_bytes(&two.to_vec().unwrap(), Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.queries.is_empty());
    }

    #[test]
    fn responses_and_runts_get_no_reply() {
        let mut bytes = q("www.example.com.", RecordType::A).bytes();
        bytes[2] |= 0x80; // QR=1
        assert!(answer(&bytes, &snap(), Transport::Udp).is_none());
        for len in 0..12 {
            assert!(answer(&bytes[..len], &snap(), Transport::Udp).is_none());
        }
    }

    #[test]
    fn unparseable_with_header_is_formerr() {
        let bytes = q("www.example.com.", RecordType::A).bytes();
        let cut = &bytes[..bytes.len() - 3];
        let r = answer(cut, &snap(), Transport::Udp).unwrap();
        assert_eq!(r.rcode, ResponseCode::FormErr);
        assert_eq!(&r.bytes[..2], &bytes[..2], "ID copied");
        assert_eq!(r.bytes.len(), 12, "header only");
    }

    /// RFC 7830 / 8467: a padded query over TLS gets a response padded to a multiple
    /// of 468 bytes; over TCP, or unpadded, none.
    #[test]
    fn padded_queries_over_tls_get_padded_responses() {
        let query = |pad: bool| {
            let mut m = q("www.example.com.", RecordType::A).message();
            let mut edns = hickory_proto::op::Edns::new();
            edns.set_max_payload(1232);
            if pad {
                edns.options_mut()
                    .insert(EdnsOption::Unknown(12, vec![0; 16]));
            }
            m.set_edns(edns);
            m.to_vec().unwrap()
        };
        let r = answer(&query(true), &snap(), Transport::Tls).unwrap();
        assert_eq!(r.bytes.len() % PADDING_BLOCK, 0, "{}", r.bytes.len());
        let m = Message::from_vec(&r.bytes).unwrap();
        assert!(!m.answers.is_empty());
        assert!(m.edns.as_ref().unwrap().option(EdnsCode::Padding).is_some());
        for (pad, transport) in [(true, Transport::Tcp), (false, Transport::Tls)] {
            let r = answer(&query(pad), &snap(), transport).unwrap();
            let m = Message::from_vec(&r.bytes).unwrap();
            assert!(
                m.edns.as_ref().unwrap().option(EdnsCode::Padding).is_none(),
                "{pad} {transport:?}"
            );
        }
        // A refusal is padded too (its length says nothing either).
        let mut refused = Message::from_vec(&query(true)).unwrap();
        refused.queries[0] =
            Query::query(Name::from_str("www.example.org.").unwrap(), RecordType::A);
        let r = answer(&refused.to_vec().unwrap(), &snap(), Transport::Tls).unwrap();
        assert_eq!(r.rcode, ResponseCode::Refused);
        assert_eq!(r.bytes.len() % PADDING_BLOCK, 0);
    }

    #[test]
    fn tsig_with_unknown_key_is_notauth_badkey() {
        let mut m = q("www.example.com.", RecordType::A).message();
        let tsig = TSIG::new(
            TsigAlgorithm::HmacSha256,
            1_700_000_000,
            300,
            vec![0xAA; 32],
            0xBEEF,
            None,
            vec![],
        );
        let mut rr = Record::from_rdata(
            Name::from_str("key.example.").unwrap(),
            0,
            RData::TSIG(tsig),
        );
        rr.dns_class = DNSClass::ANY;
        m.additionals.push(rr);
        let r = ask_bytes(&m.to_vec().unwrap(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NotAuth);
        assert!(r.answers.is_empty());
        let last = r.signature.as_deref().expect("TSIG in the response");
        let t = &last.data;
        assert_eq!(t.error, Some(TsigError::BadKey));
        assert!(t.mac.is_empty(), "unsigned");
        assert_eq!(last.name.to_string(), "key.example.");
        assert_eq!(t.time, 1_700_000_000);
    }
}

#[cfg(test)]
mod transfer_tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::SOA;

    use super::*;
    use crate::config::Config;
    use crate::{discovery, snapshot};

    fn snap(transfer: &str) -> Snapshot {
        let text = format!(
            "[transfer]\n{transfer}\n[[zone]]\norigin = \"x.test\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n"
        );
        let config = Config::from_toml(&text, "test").unwrap();
        snapshot::build(
            &discovery::static_zones(&config),
            config.server.settings,
            None,
            1_700_000_000,
        )
    }

    fn request(qtype: RecordType, serial: Option<u32>) -> Vec<u8> {
        let mut m = Message::new(3, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_str("x.test.").unwrap(), qtype));
        if let Some(serial) = serial {
            let soa = SOA::new(Name::root(), Name::root(), serial, 0, 0, 0, 0);
            m.add_authority(Record::from_rdata(
                Name::from_str("x.test.").unwrap(),
                0,
                RData::SOA(soa),
            ));
        }
        m.to_vec().unwrap()
    }

    fn from(source: &str) -> Client {
        Client {
            source: source.parse().unwrap(),
            now: 1_700_000_000,
        }
    }

    #[test]
    fn transfers_follow_the_policy_and_the_transport() {
        let open = snap("allow = [\"10.0.0.0/8\"]");
        let axfr = request(RecordType::AXFR, None);
        let r = respond(&axfr, &open, Transport::Tcp, &from("10.1.2.3")).unwrap();
        let plan = r.transfer.expect("a transfer to stream");
        assert_eq!(plan.origin.to_string(), "x.test.");
        assert!(r.bytes.is_empty());
        let r = respond(&axfr, &open, Transport::Tcp, &from("192.0.2.9")).unwrap();
        assert_eq!(r.rcode, ResponseCode::Refused, "outside allow");
        assert_eq!(r.refusal, Some(Refusal::TransferAcl));
        let r = respond(&axfr, &open, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert_eq!(r.rcode, ResponseCode::NotImp, "AXFR over UDP, as Knot");
        let closed = snap("");
        let r = respond(&axfr, &closed, Transport::Tcp, &from("127.0.0.1")).unwrap();
        assert_eq!(r.rcode, ResponseCode::Refused, "no [transfer]: nobody");
        let keyed = snap(
            "allow = [\"10.0.0.0/8\"]\ntsig-key = \"k\"\n[[tsig-key]]\nname = \"k\"\nsecret = \"AAAA\"",
        );
        let r = respond(&axfr, &keyed, Transport::Tcp, &from("10.1.2.3")).unwrap();
        assert_eq!(r.refusal, Some(Refusal::TransferKey), "unsigned");
    }

    #[test]
    fn ixfr_from_the_current_serial_is_one_soa_and_from_an_old_one_a_transfer() {
        let s = snap("allow = [\"10.0.0.0/8\"]");
        let serial = s.zones().next().unwrap().serial();
        for transport in [Transport::Udp, Transport::Tcp] {
            let r = respond(
                &request(RecordType::IXFR, Some(serial)),
                &s,
                transport,
                &from("10.1.2.3"),
            )
            .unwrap();
            let m = Message::from_vec(&r.bytes).unwrap();
            assert_eq!(m.answers.len(), 1, "{transport:?}: the SOA alone");
            assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        }
        let old = request(RecordType::IXFR, Some(serial - 10));
        let r = respond(&old, &s, Transport::Tcp, &from("10.1.2.3")).unwrap();
        assert_eq!(r.transfer.unwrap().client_serial, Some(serial - 10));
        // Over UDP with no journaled version: the SOA alone, the client retries on TCP.
        let r = respond(&old, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert_eq!(Message::from_vec(&r.bytes).unwrap().answers.len(), 1);
        let r = respond(
            &request(RecordType::IXFR, None),
            &s,
            Transport::Tcp,
            &from("10.1.2.3"),
        );
        assert_eq!(
            r.unwrap().rcode,
            ResponseCode::FormErr,
            "IXFR without the client's SOA"
        );
    }

    /// RFC 1995: from an older serial, every delta since it, in order: our SOA; per
    /// delta its old SOA and what it removed, its new SOA and what it added; our SOA.
    /// Over UDP in one message; over TCP the same records in the transfer's messages.
    #[test]
    fn ixfr_from_an_older_serial_is_every_delta_since_it_in_order() {
        let store = snapshot::SnapshotStore::default();
        let mut serials = Vec::new();
        for (i, ip) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
            let text = format!(
                "[transfer]\nallow = [\"10.0.0.0/8\"]\n[[zone]]\norigin = \"x.test\"\n[[zone.record]]\nname = \"www\"\na = [\"{ip}\"]\n"
            );
            let config = Config::from_toml(&text, "test").unwrap();
            store.update(|prev| {
                snapshot::build(
                    &discovery::static_zones(&config),
                    config.server.settings.clone(),
                    Some(prev),
                    1_700_000_000 + i as u64,
                )
            });
            serials.push(store.load().zones().next().unwrap().serial());
        }
        let s = store.load_full();
        let (s1, s2, s3) = (serials[0], serials[1], serials[2]);
        let expect = vec![
            format!("SOA {s3}"),
            format!("SOA {s1}"),
            "A 192.0.2.1".to_string(),
            format!("SOA {s2}"),
            "A 192.0.2.2".to_string(),
            format!("SOA {s2}"),
            "A 192.0.2.2".to_string(),
            format!("SOA {s3}"),
            "A 192.0.2.3".to_string(),
            format!("SOA {s3}"),
        ];
        let show = |records: &[Record]| -> Vec<String> {
            records
                .iter()
                .map(|r| match &r.data {
                    RData::SOA(soa) => format!("SOA {}", soa.serial),
                    other => format!("{} {other}", r.record_type()),
                })
                .collect()
        };
        // With EDNS: six SOAs do not fit in 512 bytes.
        let edns = |serial| {
            let mut m = Message::from_vec(&request(RecordType::IXFR, Some(serial))).unwrap();
            let mut edns = hickory_proto::op::Edns::new();
            edns.set_max_payload(1232);
            m.set_edns(edns);
            m.to_vec().unwrap()
        };
        let ixfr = edns(s1);
        let r = respond(&ixfr, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert_eq!(show(&Message::from_vec(&r.bytes).unwrap().answers), expect);
        let r = respond(&ixfr, &s, Transport::Tcp, &from("10.1.2.3")).unwrap();
        let plan = r.transfer.unwrap();
        let zone = s.zone(&plan.origin).unwrap();
        let deltas = s.ixfr_deltas(zone, s1).unwrap();
        let answers: Vec<Record> = transfer::Messages::ixfr(zone, &plan, 1_700_000_000, deltas)
            .flat_map(|m| Message::from_vec(&m).unwrap().answers)
            .collect();
        assert_eq!(show(&answers), expect);
        // From the middle: the last delta only.
        let r = respond(&edns(s2), &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(show(&m.answers)[1..], expect[5..]);
        assert_eq!(show(&m.answers)[0], expect[0]);
        // Without EDNS the deltas do not fit in 512 bytes: our SOA alone.
        let r = respond(
            &request(RecordType::IXFR, Some(s1)),
            &s,
            Transport::Udp,
            &from("10.1.2.3"),
        )
        .unwrap();
        assert_eq!(
            show(&Message::from_vec(&r.bytes).unwrap().answers),
            expect[..1]
        );
    }

    fn catalog_config(extra: &str) -> Config {
        let text = format!(
            "[catalog]\nzone = \"catalog.invalid\"\n[transfer]\n{KEYED}\n\
             [[zone]]\norigin = \"x.test\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n\
             [[zone]]\norigin = \"private.test\"\ntransfer = {{ allow = [] }}\n{extra}"
        );
        Config::from_toml(&text, "test").unwrap()
    }

    fn publish(store: &snapshot::SnapshotStore, config: &Config, now: u64) {
        store.update(|prev| {
            snapshot::build(
                &discovery::static_zones(config),
                config.server.settings.clone(),
                Some(prev),
                now,
            )
        });
    }

    fn catalog_serial(s: &Snapshot) -> u32 {
        s.zone(&Name::from_str("catalog.invalid.").unwrap())
            .unwrap()
            .serial()
    }

    /// RFC 9432 version 2: SOA, NS invalid., version TXT "2", one PTR per zone that
    /// can be transferred (private.test cannot), in AXFR order.
    #[test]
    fn the_catalog_lists_every_transferable_zone() {
        let store = snapshot::SnapshotStore::default();
        publish(&store, &catalog_config(""), 1_700_000_000);
        let s = store.load_full();
        let (query, _) = signed(catalog_query(RecordType::AXFR));
        let r = respond(&query, &s, Transport::Tcp, &from("10.1.2.3")).unwrap();
        let plan = r
            .transfer
            .expect("the catalog is transferred under [transfer]");
        let zone = s.zone(&plan.origin).unwrap();
        assert!(zone.is_catalog());
        let shown: Vec<String> = transfer::Messages::new(zone, &plan, 1_700_000_000)
            .flat_map(|m| Message::from_vec(&m).unwrap().answers)
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect();
        let id = crate::catalog::id(&Name::from_str("x.test.").unwrap(), 0);
        assert_eq!(shown.len(), 5, "{shown:?}");
        assert!(shown[0].starts_with("catalog.invalid. SOA "));
        assert_eq!(shown[1], "catalog.invalid. NS invalid.");
        assert_eq!(shown[2], "version.catalog.invalid. TXT 2");
        assert_eq!(shown[3], format!("{id}.zones.catalog.invalid. PTR x.test."));
        assert_eq!(shown[4], shown[0]);
    }

    fn catalog_query(qtype: RecordType) -> Message {
        let mut m = Message::new(3, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_str("CATALOG.invalid.").unwrap(),
            qtype,
        ));
        m
    }

    /// Answered only to clients that may transfer it, with the key it needs; the SOA
    /// that BIND asks before every transfer is answered signed. Never on the UDP fast
    /// path.
    #[test]
    fn the_catalog_is_answered_only_to_those_who_may_transfer_it() {
        let store = snapshot::SnapshotStore::default();
        publish(&store, &catalog_config(""), 1_700_000_000);
        let s = store.load_full();
        let (query, signer) = signed(catalog_query(RecordType::SOA));
        let r = respond(&query, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert_eq!(r.rcode, ResponseCode::NoError);
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        assert!(m.metadata.authoritative);
        let request_mac = Message::from_vec(&query)
            .unwrap()
            .signature
            .unwrap()
            .data
            .mac;
        signer
            .verify_message_byte(&r.bytes, Some(&request_mac), true)
            .expect("a signed answer");
        let r = respond(&query, &s, Transport::Udp, &from("192.0.2.9")).unwrap();
        assert_eq!(
            (r.rcode, r.refusal),
            (ResponseCode::Refused, Some(Refusal::TransferAcl)),
            "outside allow"
        );
        let unsigned = catalog_query(RecordType::SOA).to_vec().unwrap();
        let r = respond(&unsigned, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert_eq!(
            (r.rcode, r.refusal),
            (ResponseCode::Refused, Some(Refusal::TransferKey)),
            "no key"
        );
        let mut ptr = Message::new(4, MessageType::Query, OpCode::Query);
        let id = crate::catalog::id(&Name::from_str("x.test.").unwrap(), 0);
        let owner = Name::from_str(&format!("{id}.zones.catalog.invalid.")).unwrap();
        ptr.add_query(Query::query(owner.clone(), RecordType::PTR));
        let (ptr, _) = signed(ptr);
        let r = respond(&ptr, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "x.test.");
        let mut a = Message::new(5, MessageType::Query, OpCode::Query);
        a.add_query(Query::query(owner, RecordType::A));
        let a = a.to_vec().unwrap();
        let mut out = [0u8; 512];
        assert_eq!(
            crate::fast::answer_udp(&a, &s, &mut out),
            crate::fast::Fast::Fallback,
            "the fast path leaves the catalog to the general core"
        );
        let r = respond(&a, &s, Transport::Udp, &from("192.0.2.9")).unwrap();
        assert_eq!(r.rcode, ResponseCode::Refused);
    }

    /// The serial changes exactly when the member list does; an IXFR of the catalog
    /// is the PTRs that came and went.
    #[test]
    fn the_catalog_serial_follows_the_member_list_only() {
        let store = snapshot::SnapshotStore::default();
        publish(&store, &catalog_config(""), 1_700_000_000);
        let first = catalog_serial(&store.load());
        // A member's content changes: its serial, not the catalog's.
        let text = format!(
            "[catalog]\nzone = \"catalog.invalid\"\n[transfer]\n{KEYED}\n\
             [[zone]]\norigin = \"x.test\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.2\"]\n"
        );
        publish(
            &store,
            &Config::from_toml(&text, "test").unwrap(),
            1_700_000_100,
        );
        assert_eq!(catalog_serial(&store.load()), first);
        // A zone added: a new serial, and an IXFR with its PTR.
        publish(
            &store,
            &catalog_config("[[zone]]\norigin = \"new.test\"\n"),
            1_700_000_200,
        );
        let s = store.load_full();
        let second = catalog_serial(&s);
        assert_ne!(second, first);
        let zone = s
            .zone(&Name::from_str("catalog.invalid.").unwrap())
            .unwrap();
        let deltas: Vec<_> = s.ixfr_deltas(zone, first).unwrap().collect();
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].deleted().count(), 0);
        let added: Vec<_> = deltas[0].added().collect();
        assert_eq!(added.len(), 1);
        assert!(
            added[0].1.ends_with(b"\x03new\x04test\x00"),
            "the new member's PTR"
        );
        assert_eq!(
            added[0].0[1..17],
            *crate::catalog::id(&Name::from_str("new.test.").unwrap(), 1_700_000_200).as_bytes(),
            "a member new to an existing catalog: an ID of its own time"
        );
    }

    const KEYED: &str = "allow = [\"10.0.0.0/8\"]\ntsig-key = \"k\"\n[[tsig-key]]\nname = \"k\"\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZg==\"";

    /// `m` signed with key k at the clients' time; and the key.
    fn signed(mut m: Message) -> (Vec<u8>, hickory_proto::rr::TSigner) {
        let signer = hickory_proto::rr::TSigner::new(
            b"0123456789abcdef".to_vec(),
            hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
            Name::from_str("k.").unwrap(),
            300,
        )
        .unwrap();
        let (tsig, _) = signer.sign_message(&m, 1_700_000_000).unwrap();
        m.signature = Some(tsig);
        (m.to_vec().unwrap(), signer)
    }

    /// `m` signed with `secret` under key name k. at `time`.
    fn signed_with(mut m: Message, secret: &[u8], time: u64) -> Vec<u8> {
        let signer = hickory_proto::rr::TSigner::new(
            secret.to_vec(),
            hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
            Name::from_str("k.").unwrap(),
            300,
        )
        .unwrap();
        let (tsig, _) = signer.sign_message(&m, time).unwrap();
        m.signature = Some(tsig);
        m.to_vec().unwrap()
    }

    /// RFC 8945 5.2: a bad MAC gets NOTAUTH with TSIG error BADSIG, unsigned; a
    /// time outside the window gets NOTAUTH with BADTIME, signed (the MAC was good),
    /// with our time in its other data. The rcode and the error field, exactly.
    #[test]
    fn badsig_and_badtime_answers_carry_the_rcode_and_the_tsig_error() {
        let s = snap(KEYED);
        let query = || {
            let mut m = Message::new(9, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_str("www.x.test.").unwrap(),
                RecordType::A,
            ));
            m
        };
        let bad = signed_with(query(), b"not-the-secret-0", 1_700_000_000);
        let r = respond(&bad, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
        assert!(m.answers.is_empty());
        let tsig = &m.signature.as_deref().expect("a TSIG record").data;
        use hickory_proto::rr::rdata::tsig::TsigError;
        assert_eq!(tsig.error, Some(TsigError::BadSig));
        assert!(tsig.mac.is_empty(), "BADSIG is not signed");

        let late = signed_with(query(), b"0123456789abcdef", 1_700_000_000 - 301);
        let r = respond(&late, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
        assert!(m.answers.is_empty());
        let tsig = &m.signature.as_deref().expect("a TSIG record").data;
        assert_eq!(tsig.error, Some(TsigError::BadTime));
        assert!(!tsig.mac.is_empty(), "BADTIME is signed");
        assert_eq!(
            tsig.other,
            1_700_000_000u64.to_be_bytes()[2..].to_vec(),
            "our time, for the client to see the skew"
        );
    }

    #[test]
    fn a_signed_notify_gets_a_signed_notauth() {
        let s = snap(KEYED);
        let mut m = Message::new(9, MessageType::Query, OpCode::Notify);
        m.add_query(Query::query(
            Name::from_str("x.test.").unwrap(),
            RecordType::SOA,
        ));
        let (bytes, _) = signed(m);
        let r = respond(&bytes, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        let reply = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NotAuth);
        let tsig = reply.signature.as_deref().expect("signed");
        assert!(!tsig.data.mac.is_empty());
        assert_eq!(tsig.data.error, None);
    }

    #[test]
    fn a_response_that_cannot_be_signed_is_not_sent() {
        let s = snap(KEYED);
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_str("www.x.test.").unwrap(),
            RecordType::A,
        ));
        let (bytes, _) = signed(m);
        let r = respond(&bytes, &s, Transport::Udp, &from("10.1.2.3")).unwrap();
        assert!(Message::from_vec(&r.bytes).unwrap().signature.is_some());
        let before = tsig::sign_failures();
        tsig::FAIL_SIGNING.with(|f| f.set(true));
        let r = respond(&bytes, &s, Transport::Udp, &from("10.1.2.3"));
        tsig::FAIL_SIGNING.with(|f| f.set(false));
        assert!(r.is_none(), "no unsigned answer to a signed request");
        assert_eq!(tsig::sign_failures(), before + 1);
    }

    /// A signed AXFR of a zone large enough for several messages: its plan.
    fn signed_axfr_plan(names: usize) -> (Snapshot, Plan) {
        let mut text = format!("[transfer]\n{KEYED}\n[[zone]]\norigin = \"x.test\"\n");
        for i in 0..names {
            text.push_str(&format!(
                "[[zone.record]]\nname = \"h{i}\"\na = [\"10.0.{}.{}\"]\n",
                i / 256,
                i % 256
            ));
        }
        let config = Config::from_toml(&text, "test").unwrap();
        let s = snapshot::build(
            &discovery::static_zones(&config),
            config.server.settings,
            None,
            1_700_000_000,
        );
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_str("x.test.").unwrap(),
            RecordType::AXFR,
        ));
        let (bytes, _) = signed(m);
        let r = respond(&bytes, &s, Transport::Tcp, &from("10.1.2.3")).unwrap();
        (s, r.transfer.expect("a transfer"))
    }

    #[test]
    fn a_transfer_stops_at_the_first_record_or_signature_that_fails() {
        let (s, plan) = signed_axfr_plan(3000);
        let zone = s.zone(&plan.origin).unwrap();
        let whole: Vec<_> = transfer::Messages::new(zone, &plan, 1_700_000_000).collect();
        assert!(whole.len() >= 3, "{} messages", whole.len());
        // The signature of the second message fails: one message, then nothing, and
        // the reason; never an unsigned message or a chain restarted.
        let mut messages = transfer::Messages::new(zone, &plan, 1_700_000_000);
        let first = messages.next().unwrap();
        assert_eq!(first, whole[0]);
        tsig::FAIL_SIGNING.with(|f| f.set(true));
        assert!(messages.next().is_none());
        tsig::FAIL_SIGNING.with(|f| f.set(false));
        assert!(messages.next().is_none(), "stopped for good");
        assert_eq!(messages.failure, Some("a message could not be signed"));
        // A record that cannot be encoded: the message holding it is not given out.
        let mut messages = transfer::Messages::new(zone, &plan, 1_700_000_000).failing_at(2000);
        let given: Vec<_> = messages.by_ref().collect();
        assert!(given.len() < whole.len());
        assert_eq!(given[..], whole[..given.len()]);
        assert_eq!(messages.failure, Some("a record could not be encoded"));
        assert!(messages.records < 2000);
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_lt(1, 2));
        assert!(!serial_lt(2, 1));
        assert!(!serial_lt(5, 5));
        assert!(serial_lt(u32::MAX, 0), "RFC 1982: 2^32-1 < 0");
        assert!(serial_lt(u32::MAX - 5, 10));
        assert!(!serial_lt(10, u32::MAX - 5));
        // Exactly half the space apart: undefined (RFC 1982 3.2), so neither is less.
        assert!(!serial_lt(0, 1 << 31) && !serial_lt(1 << 31, 0));
    }
}
