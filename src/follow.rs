//! Fleet mode (`[follow]`): zones transferred from a primary, so every replica
//! serves the primary's serials and records.
//!
//! A follower transfers the primary's RFC 9432 catalog, then every member zone, over
//! TCP (IXFR from the serial held, AXFR when there is none or the primary cannot give
//! a consistent increment), TSIG-signed and verified on every message when
//! `tsig-key` is set. Each received zone is checked whole before it is published
//! through the one snapshot writer; a bad transfer is dropped and the zone served
//! before keeps serving. A NOTIFY from the primary (taken by the answering core,
//! [`crate::answer`]) starts a check at once; otherwise each zone's SOA refresh and
//! retry timers do. A zone without contact for its SOA expire is answered SERVFAIL
//! until the primary answers again. Zones are persisted in `cache-dir` (atomic
//! writes; the file's modification time is the last contact), so a follower
//! restarted while the primary is down serves what it had.
//!
//! The transfer client is a thin shell of our own over tokio's TCP, as the server's
//! transports are; hickory-proto does the wire format and TSIG.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::access::TsigKey;
use crate::config::{FollowConfig, FollowTls};
use crate::snapshot::SnapshotStore;
use crate::wire::QName;

/// Connecting to the primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting for the next message of a transfer: a stalled primary is cut here.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole transfer, however steadily it trickles.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(600);
/// Resolving the primary's name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one transfer may bring (a 100,000-name zone is about 5 MB).
pub const MAX_TRANSFER_BYTES: usize = 256 << 20;
/// Checks and transfers running at once.
pub const MAX_CONCURRENT: usize = 4;
/// Retry interval before a zone has an SOA of its own to say.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The least time between two checks of one zone that NOTIFYs start.
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// TSIG fudge of our requests (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;
/// NOTIFYs waiting for the follower; more are dropped (a check is pending anyway).
pub const NOTIFY_QUEUE: usize = 256;
/// The first bytes of a cache file.
const CACHE_MAGIC: &[u8] = b"privatelink-dns follow 1\n";

/// `host` and port of `host:port` ("10.0.0.5:53", "[fd00::5]:53",
/// "primary.example.com:53"; port 53 when left out); `None` if malformed.
pub fn split_primary(text: &str) -> Option<(&str, u16)> {
    if text.parse::<IpAddr>().is_ok() {
        return Some((text, 53)); // an IPv6 address without brackets has no port
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match rest {
            "" => (host, 53),
            _ => (host, rest.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (text, 53),
        }
    };
    let hostname = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    (port != 0 && (hostname || host.parse::<IpAddr>().is_ok())).then_some((host, port))
}

/// The host part of a valid `[follow] primary`.
pub fn primary_host(text: &str) -> Option<&str> {
    split_primary(text).map(|(host, _)| host)
}

/// A zone as transferred: its SOA and every other RR, keyed so that a delete of an
/// IXFR finds its record whatever the case of its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// Lower-cased.
    pub origin: Name,
    pub soa: Record,
    pub records: BTreeMap<Vec<u8>, Record>,
}

impl Content {
    pub fn serial(&self) -> u32 {
        soa_serial(&self.soa).unwrap_or(0)
    }

    /// (refresh, retry, expire) of the SOA.
    fn timers(&self) -> (Duration, Duration, Duration) {
        match &self.soa.data {
            RData::SOA(soa) => (secs(soa.refresh), secs(soa.retry), secs(soa.expire)),
            _ => (FIRST_RETRY, FIRST_RETRY, Duration::MAX),
        }
    }
}

fn secs(v: i32) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0).max(1))
}

fn soa_serial(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

/// A record's identity in a zone: owner (lower-cased wire form), type, class and
/// RDATA; not the TTL (RFC 1995 deletes a record whatever its TTL).
fn rr_key(r: &Record) -> Option<Vec<u8>> {
    let owner = QName::from_name(&r.name.to_lowercase())?;
    let mut out = owner.as_bytes().to_vec();
    out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_canonical_form(true);
    r.data.emit(&mut encoder).ok()?;
    Some(out)
}

/// How a transfer went wrong. None of these changes what is served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("cannot resolve the primary {0}")]
    Resolve(String),
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("connection: {0}")]
    Io(String),
    #[error("the primary stopped sending (no message within {}s)", READ_TIMEOUT.as_secs())]
    Stalled,
    #[error("the transfer took longer than {}s", TRANSFER_DEADLINE.as_secs())]
    Deadline,
    #[error("the primary answered {0}")]
    Rcode(String),
    #[error("TSIG: {0}")]
    Tsig(String),
    #[error("malformed transfer: {0}")]
    Malformed(String),
    #[error("an IXFR that does not apply to the serial held: {0}")]
    Inconsistent(String),
    #[error("more than {} bytes", MAX_TRANSFER_BYTES)]
    TooLarge,
    #[error("the zone cannot be served: {0}")]
    Unservable(String),
}

/// What a check brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// The primary has this serial, which is ours.
    UpToDate(u32),
    /// A whole new version, by this kind of transfer.
    Zone(Box<Content>, Kind),
}

/// Which transfer brought a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Axfr,
    Ixfr,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Axfr => "axfr",
            Self::Ixfr => "ixfr",
        }
    }
}

/// Parses a transfer's records as they arrive (RFC 5936 AXFR, RFC 1995 IXFR).
struct Stream<'h> {
    origin: Name,
    have: Option<&'h Content>,
    state: State,
    /// Went by difference sequences (an IXFR not answered in full).
    incremental: bool,
}

enum State {
    /// Nothing yet.
    Start,
    /// The first SOA (the primary's version), and nothing after it yet.
    First(Record),
    /// An AXFR (or an IXFR answered in full) until the SOA comes again.
    Full {
        last: Record,
        records: BTreeMap<Vec<u8>, Record>,
    },
    /// An IXFR's deletions (`adding` false) or additions of the version `at`.
    Incremental {
        last: Record,
        records: BTreeMap<Vec<u8>, Record>,
        at: u32,
        adding: bool,
    },
    Done(Content),
}

impl<'h> Stream<'h> {
    fn new(origin: &Name, have: Option<&'h Content>) -> Self {
        Self {
            origin: origin.to_lowercase(),
            have,
            state: State::Start,
            incremental: false,
        }
    }

    fn content(&self, soa: Record, records: BTreeMap<Vec<u8>, Record>) -> Content {
        Content {
            origin: self.origin.clone(),
            soa,
            records,
        }
    }

    /// One record of the answer sections, in order.
    fn push(&mut self, r: Record) -> Result<(), TransferError> {
        let malformed = |m: &str| Err(TransferError::Malformed(m.into()));
        if r.dns_class != DNSClass::IN {
            return malformed("a record not of class IN");
        }
        let state = std::mem::replace(&mut self.state, State::Start);
        let key = || {
            rr_key(&r)
                .ok_or_else(|| TransferError::Malformed("a record that cannot be keyed".into()))
        };
        self.state = match state {
            State::Start => {
                if soa_serial(&r).is_none() || r.name.to_lowercase() != self.origin {
                    return malformed("the first record is not the zone's SOA");
                }
                State::First(r)
            }
            State::First(last) => {
                let serial = soa_serial(&last).unwrap_or(0);
                match (soa_serial(&r), self.have) {
                    // RFC 1995: a second SOA starts the first difference sequence, at
                    // the version the client has.
                    (Some(from), Some(have)) if r.name.to_lowercase() == self.origin => {
                        if from == serial {
                            // The AXFR of a zone with nothing but its SOA.
                            State::Done(self.content(last, BTreeMap::new()))
                        } else if from != have.serial() {
                            return Err(TransferError::Inconsistent(format!(
                                "it starts at serial {from}, we have {}",
                                have.serial()
                            )));
                        } else {
                            self.incremental = true;
                            State::Incremental {
                                last,
                                records: have.records.clone(),
                                at: from,
                                adding: false,
                            }
                        }
                    }
                    (Some(_), _) if r.name.to_lowercase() == self.origin => {
                        State::Done(self.content(last, BTreeMap::new()))
                    }
                    (Some(_), _) => return malformed("an SOA that is not the zone's"),
                    (None, _) => {
                        let mut records = BTreeMap::new();
                        records.insert(key()?, r);
                        State::Full { last, records }
                    }
                }
            }
            State::Full { last, mut records } => {
                if soa_serial(&r).is_some() {
                    if r.name.to_lowercase() != self.origin || soa_serial(&r) != soa_serial(&last) {
                        return malformed("an SOA inside the zone's records");
                    }
                    State::Done(self.content(last, records))
                } else {
                    records.insert(key()?, r);
                    State::Full { last, records }
                }
            }
            State::Incremental {
                last,
                mut records,
                at,
                adding,
            } => {
                let target = soa_serial(&last).unwrap_or(0);
                match soa_serial(&r) {
                    Some(_) if r.name.to_lowercase() != self.origin => {
                        return malformed("an SOA that is not the zone's");
                    }
                    // End of the deletions: the additions of version `serial`.
                    Some(serial) if !adding => State::Incremental {
                        last,
                        records,
                        at: serial,
                        adding: true,
                    },
                    // The last version's additions are over: the closing SOA.
                    Some(serial) if at == target && serial == target => {
                        State::Done(self.content(r, records))
                    }
                    // The next sequence starts where the last one ended.
                    Some(serial) if serial == at => State::Incremental {
                        last,
                        records,
                        at,
                        adding: false,
                    },
                    Some(serial) => {
                        return Err(TransferError::Inconsistent(format!(
                            "a sequence from serial {serial} after version {at}"
                        )));
                    }
                    None if adding => {
                        records.insert(key()?, r);
                        State::Incremental {
                            last,
                            records,
                            at,
                            adding,
                        }
                    }
                    None => {
                        if records.remove(&key()?).is_none() {
                            return Err(TransferError::Inconsistent(format!(
                                "it deletes {} {}, which version {at} does not have",
                                r.name,
                                r.record_type()
                            )));
                        }
                        State::Incremental {
                            last,
                            records,
                            at,
                            adding,
                        }
                    }
                }
            }
            State::Done(_) => return malformed("records after the closing SOA"),
        };
        Ok(())
    }
}

/// One request to the primary at `addr`: an IXFR from `have`'s serial, or an AXFR
/// when `have` is `None`; signed with `key` when given, every answer verified; over
/// TLS when `tls` is given (XoT, RFC 9103).
pub async fn transfer(
    addr: SocketAddr,
    origin: &Name,
    have: Option<&Content>,
    key: Option<&TsigKey>,
    tls: Option<&FollowTls>,
) -> Result<Got, TransferError> {
    let run = async {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| TransferError::Connect(format!("{addr} (timed out)")))?
            .map_err(|e| TransferError::Connect(format!("{addr} ({e})")))?;
        match tls {
            None => exchange(tcp, origin, have, key).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                    .map_err(|e| TransferError::Connect(format!("{addr}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        TransferError::Connect(format!("{addr}: TLS handshake timed out"))
                    })?
                    .map_err(|e| TransferError::Connect(format!("{addr}: TLS ({e})")))?;
                exchange(stream, origin, have, key).await
            }
        }
    };
    tokio::time::timeout(TRANSFER_DEADLINE, run)
        .await
        .unwrap_or(Err(TransferError::Deadline))
}

/// The request and its answers on an open connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    origin: &Name,
    have: Option<&Content>,
    key: Option<&TsigKey>,
) -> Result<Got, TransferError> {
    let id = random_id();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    let qtype = if have.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    query.add_query(Query::query(origin.clone(), qtype));
    if let Some(have) = have {
        query.authorities.push(have.soa.clone());
    }
    let mut verifier = None;
    if let Some(key) = key {
        let signer = TSigner::new(
            key.secret.clone(),
            key.algorithm.clone(),
            key.name.clone(),
            FUDGE,
        )
        .map_err(|e| TransferError::Tsig(e.to_string()))?;
        let (tsig, v) = signer
            .sign_message(&query, crate::snapshot::unix_now())
            .map_err(|e| TransferError::Tsig(e.to_string()))?;
        query.signature = Some(tsig);
        verifier = v;
    }
    let bytes = query
        .to_vec()
        .map_err(|e| TransferError::Malformed(e.to_string()))?;
    let mut framed = u16::try_from(bytes.len())
        .map_err(|_| TransferError::Malformed("request too long".into()))?
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&bytes);
    tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(&framed).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| TransferError::Stalled)?
    .map_err(|e| TransferError::Io(e.to_string()))?;

    let mut parser = Stream::new(origin, have);
    let mut total = 0usize;
    let mut first = true;
    loop {
        let len = tokio::time::timeout(READ_TIMEOUT, stream.read_u16())
            .await
            .map_err(|_| TransferError::Stalled)?
            .map_err(|e| TransferError::Io(e.to_string()))?;
        total += usize::from(len) + 2;
        if total > MAX_TRANSFER_BYTES {
            return Err(TransferError::TooLarge);
        }
        let mut body = vec![0; usize::from(len)];
        tokio::time::timeout(READ_TIMEOUT, stream.read_exact(&mut body))
            .await
            .map_err(|_| TransferError::Stalled)?
            .map_err(|e| TransferError::Io(e.to_string()))?;
        if let Some(v) = verifier.as_mut() {
            v.verify(&body).map_err(|e| {
                TransferError::Tsig(format!("an answer that does not verify ({e})"))
            })?;
        }
        let msg = Message::from_vec(&body).map_err(|e| TransferError::Malformed(e.to_string()))?;
        if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
            return Err(TransferError::Malformed(
                "an answer to another request".into(),
            ));
        }
        let rcode = msg.metadata.response_code;
        if rcode != ResponseCode::NoError {
            return Err(TransferError::Rcode(rcode.to_string()));
        }
        if key.is_some() && msg.signature.is_none() {
            return Err(TransferError::Tsig("an unsigned answer".into()));
        }
        for r in msg.answers {
            parser.push(r)?;
        }
        match &parser.state {
            State::Done(_) => break,
            // A single SOA, over an IXFR: that is the primary's version (RFC 1995).
            State::First(soa) if first && have.is_some() => {
                let serial = soa_serial(soa).unwrap_or(0);
                return Ok(Got::UpToDate(serial));
            }
            State::Start => {
                return Err(TransferError::Malformed("an answer without records".into()));
            }
            _ => {}
        }
        first = false;
    }
    let kind = if parser.incremental {
        Kind::Ixfr
    } else {
        Kind::Axfr
    };
    match parser.state {
        State::Done(content) => Ok(Got::Zone(Box::new(content), kind)),
        _ => Err(TransferError::Malformed("incomplete".into())),
    }
}

fn random_id() -> u16 {
    use std::hash::BuildHasher;
    (std::hash::RandomState::new().hash_one(Instant::now()) & 0xffff) as u16
}

/// Resolves `[follow] primary` (an address, or a name through the system resolver).
pub async fn resolve(primary: &str) -> Result<Vec<SocketAddr>, TransferError> {
    let (host, port) =
        split_primary(primary).ok_or_else(|| TransferError::Resolve(primary.into()))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| TransferError::Resolve(format!("{host} (timed out)")))?
        .map_err(|e| TransferError::Resolve(format!("{host} ({e})")))?;
    let addrs: Vec<SocketAddr> = addrs.collect();
    if addrs.is_empty() {
        return Err(TransferError::Resolve(format!("{host} (no address)")));
    }
    Ok(addrs)
}

/// The members of a catalog (RFC 9432 version 2): the targets of its
/// `<id>.zones.<catalog>` PTRs, lower-cased. An error for another version.
pub fn members(catalog: &Content) -> Result<BTreeSet<Name>, String> {
    let origin = &catalog.origin;
    let zones = origin.prepend_label("zones").map_err(|e| e.to_string())?;
    let version = origin.prepend_label("version").map_err(|e| e.to_string())?;
    let mut versions = Vec::new();
    let mut out = BTreeSet::new();
    for r in catalog.records.values() {
        let owner = r.name.to_lowercase();
        match &r.data {
            RData::TXT(txt) if owner == version => versions.push(txt.to_string()),
            RData::PTR(ptr)
                if owner.base_name() == zones && owner.num_labels() == zones.num_labels() + 1 =>
            {
                out.insert(ptr.0.to_lowercase());
            }
            _ => {}
        }
    }
    if versions != ["2"] {
        return Err(format!(
            "the catalog's version is {versions:?}, not \"2\" (RFC 9432): not followed"
        ));
    }
    Ok(out)
}

/// What `/readyz` and `/metrics` show of the follower.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// Set while a follower runs.
    pub enabled: AtomicBool,
    /// The catalog and every member have had data once (from the primary or disk).
    pub loaded: AtomicBool,
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    zones: BTreeMap<Name, ZoneStatus>,
    /// (type, outcome) → count.
    transfers: BTreeMap<(&'static str, &'static str), u64>,
    expirations: u64,
}

/// One followed zone (or the catalog), for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneStatus {
    /// The serial served (held, for the catalog).
    pub serial: Option<u32>,
    /// The primary's serial, as last seen.
    pub primary_serial: Option<u32>,
    /// Unix time of the last successful check.
    pub last_success: Option<u64>,
    pub expired: bool,
}

impl FollowStatus {
    pub fn zones(&self) -> BTreeMap<Name, ZoneStatus> {
        self.lock().zones.clone()
    }

    pub fn transfers(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.lock().transfers.clone()
    }

    pub fn expirations(&self) -> u64 {
        self.lock().expirations
    }

    /// A new follower starts from nothing (a reload may follow another primary).
    fn reset(&self) {
        self.loaded.store(false, Ordering::Relaxed);
        self.lock().zones.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        *self.lock().transfers.entry((kind, outcome)).or_default() += 1;
    }
}

/// One zone the follower keeps (the catalog too).
#[derive(Debug)]
struct Held {
    content: Option<Arc<Content>>,
    /// Last successful contact with the primary about this zone.
    last_ok: Option<SystemTime>,
    due: Instant,
    running: bool,
    expired: bool,
    /// Refused for a name a configured or discovered zone has (logged once).
    conflict: bool,
    /// Its last transfer cannot be served (a conflict, a record type we do not
    /// serve): readiness does not wait for it.
    unservable: bool,
    /// When its last check ended: NOTIFYs do not start checks closer than
    /// [`MIN_CHECK_INTERVAL`] (a flood of them is one check a second).
    last_check: Option<Instant>,
}

impl Held {
    fn new(due: Instant) -> Self {
        Self {
            content: None,
            last_ok: None,
            due,
            running: false,
            expired: false,
            conflict: false,
            unservable: false,
            last_check: None,
        }
    }
}

/// The follower: one task that owns the zones' state and publishes; checks run
/// beside it, at most [`MAX_CONCURRENT`] at once.
pub struct Follower {
    config: FollowConfig,
    store: Arc<SnapshotStore>,
    status: Arc<FollowStatus>,
    notified: mpsc::Receiver<Name>,
    zones: BTreeMap<Name, Held>,
}

type Checked = (Name, Result<Got, TransferError>);

impl Follower {
    pub fn new(
        config: FollowConfig,
        store: Arc<SnapshotStore>,
        status: Arc<FollowStatus>,
        notified: mpsc::Receiver<Name>,
    ) -> Self {
        Self {
            config,
            store,
            status,
            notified,
            zones: BTreeMap::new(),
        }
    }

    /// Serves what `cache-dir` holds, then follows until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.status.reset();
        self.status.enabled.store(true, Ordering::Relaxed);
        let now = Instant::now();
        self.zones
            .insert(self.config.catalog.clone(), Held::new(now));
        self.load_cache();
        let mut tasks: tokio::task::JoinSet<Checked> = tokio::task::JoinSet::new();
        // Which zone each running check is for, so one that panicked is still known.
        let mut checking: HashMap<tokio::task::Id, Name> = HashMap::new();
        loop {
            self.expire();
            self.start_due(&mut tasks, &mut checking);
            let wake = self.next_wake();
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(zone) = self.notified.recv() => self.on_notify(&zone),
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.on_done(done, &mut checking);
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        tasks.abort_all();
        self.status.enabled.store(false, Ordering::Relaxed);
    }

    /// A check ended: its result, or (a panic, a bug) a failure of its zone, which
    /// is then tried again at its retry instead of never.
    fn on_done(
        &mut self,
        done: Result<(tokio::task::Id, Checked), tokio::task::JoinError>,
        checking: &mut HashMap<tokio::task::Id, Name>,
    ) {
        match done {
            Ok((id, (zone, result))) => {
                checking.remove(&id);
                self.on_checked(zone, result);
            }
            Err(e) => {
                if let Some(zone) = checking.remove(&e.id()) {
                    error!(%zone, "a check of the zone stopped unexpectedly (a bug); it is tried again at its retry");
                    let stopped = TransferError::Malformed("the check stopped unexpectedly".into());
                    self.on_checked(zone, Err(stopped));
                }
            }
        }
    }

    fn is_catalog(&self, zone: &Name) -> bool {
        *zone == self.config.catalog
    }

    fn on_notify(&mut self, zone: &Name) {
        if let Some(held) = self.zones.get_mut(zone) {
            debug!(%zone, "NOTIFY from the primary: checking now");
            let now = Instant::now();
            let earliest = held.last_check.map_or(now, |t| t + MIN_CHECK_INTERVAL);
            held.due = held.due.min(earliest.max(now));
        }
    }

    /// Starts the checks that are due, the catalog first.
    fn start_due(
        &mut self,
        tasks: &mut tokio::task::JoinSet<Checked>,
        checking: &mut HashMap<tokio::task::Id, Name>,
    ) {
        let now = Instant::now();
        let catalog = self.config.catalog.clone();
        let order: Vec<Name> = std::iter::once(catalog.clone())
            .chain(self.zones.keys().filter(|z| **z != catalog).cloned())
            .collect();
        for zone in order {
            if tasks.len() >= MAX_CONCURRENT {
                return;
            }
            let Some(held) = self.zones.get_mut(&zone) else {
                continue;
            };
            if held.running || held.due > now {
                continue;
            }
            held.running = true;
            let have = held.content.clone();
            let primary = self.config.primary.clone();
            let key = self.config.key.clone();
            let tls = self.config.tls.clone();
            let store = self.store.clone();
            let id = zone.clone();
            let task = tasks.spawn(async move {
                let result = check(
                    &primary,
                    &zone,
                    have.as_deref(),
                    key.as_ref(),
                    tls.as_ref(),
                    &store,
                )
                .await;
                (zone, result)
            });
            checking.insert(task.id(), id);
        }
    }

    /// When something is next due: a check, or an expiry.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.zones
            .values()
            .filter(|h| !h.running)
            .map(|h| h.due)
            .chain(
                self.zones
                    .values()
                    .filter_map(|h| self.expires_in(h))
                    .map(|left| Instant::now() + left),
            )
            .min()
            .unwrap_or(far)
            .min(far)
    }

    /// How long until `held` expires (zero: it has), if it has data and has not
    /// expired yet.
    fn expires_in(&self, held: &Held) -> Option<Duration> {
        if held.expired {
            return None;
        }
        let (_, _, expire) = held.content.as_ref()?.timers();
        let deadline = held.last_ok?.checked_add(expire)?;
        Some(
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    fn on_checked(&mut self, zone: Name, result: Result<Got, TransferError>) {
        let catalog = self.is_catalog(&zone);
        let Some(held) = self.zones.get_mut(&zone) else {
            return; // dropped from the catalog meanwhile
        };
        held.running = false;
        let now = Instant::now();
        held.last_check = Some(now);
        match result {
            Ok(Got::UpToDate(serial)) => {
                held.last_ok = Some(SystemTime::now());
                let (refresh, _, _) = held
                    .content
                    .as_ref()
                    .map_or((FIRST_RETRY, FIRST_RETRY, Duration::MAX), |c| c.timers());
                held.due = now + refresh;
                debug!(%zone, serial, "up to date with the primary");
                self.touch_cache(&zone);
                self.contact(&zone, serial);
                self.status.count("ixfr", "uptodate");
            }
            Ok(Got::Zone(content, kind)) => {
                let serial = content.serial();
                let content: Arc<Content> = Arc::from(content);
                let published = if catalog {
                    self.apply_catalog(&content)
                } else {
                    self.publish(&zone, &content)
                };
                let Some(held) = self.zones.get_mut(&zone) else {
                    return;
                };
                held.unservable = matches!(published, Err(TransferError::Unservable(_)));
                match published {
                    Ok(()) => {
                        held.content = Some(content.clone());
                        held.last_ok = Some(SystemTime::now());
                        held.due = now + content.timers().0;
                        info!(%zone, serial, kind = kind.label(), records = content.records.len() + 1, "transfer from the primary");
                        self.status.count(kind.label(), "ok");
                        self.save_cache(&zone, &content);
                        self.contact(&zone, serial);
                    }
                    Err(error) => {
                        // What cannot be served will not be at the next retry either:
                        // asked again at the zone's refresh (or a NOTIFY).
                        held.due = now
                            + if held.unservable {
                                content.timers().0
                            } else {
                                retry_of(held)
                            };
                        warn!(%zone, serial, kind = kind.label(), %error, "transfer from the primary not served; the zone served before stays");
                        self.status.count(kind.label(), "failed");
                    }
                }
            }
            Err(error) => {
                held.due = now + retry_of(held);
                let kind = if held.content.is_some() {
                    "ixfr"
                } else {
                    "axfr"
                };
                warn!(%zone, %error, retry_in_s = retry_of(held).as_secs(), "transfer from the primary failed; the zone served before stays");
                self.status.count(kind, "failed");
            }
        }
        self.update_loaded();
    }

    /// After a successful contact: not expired any more, and the status updated.
    fn contact(&mut self, zone: &Name, primary_serial: u32) {
        let Some(held) = self.zones.get_mut(zone) else {
            return;
        };
        if held.expired {
            held.expired = false;
            info!(%zone, "the primary answers again: the zone is served again");
            let zone = zone.clone();
            self.store.update(|prev| {
                let mut next = prev.clone();
                next.set_expired(&zone, false);
                next
            });
        }
        let serial = held.content.as_ref().map(|c| c.serial());
        let mut status = self.status.lock();
        let entry = status.zones.entry(zone.clone()).or_default();
        entry.serial = serial;
        entry.primary_serial = Some(primary_serial);
        entry.last_success = Some(crate::snapshot::unix_now());
        entry.expired = false;
    }

    /// Marks the zones past their SOA expire (SERVFAIL from now on).
    fn expire(&mut self) {
        let due: Vec<Name> = self
            .zones
            .iter()
            .filter(|(zone, h)| {
                !self.is_catalog(zone) && self.expires_in(h).is_some_and(|left| left.is_zero())
            })
            .map(|(zone, _)| zone.clone())
            .collect();
        for zone in due {
            if let Some(held) = self.zones.get_mut(&zone) {
                held.expired = true;
            }
            error!(%zone, "no contact with the primary for the zone's SOA expire: answered SERVFAIL until it answers again");
            let origin = zone.clone();
            self.store.update(|prev| {
                let mut next = prev.clone();
                next.set_expired(&origin, true);
                next
            });
            let mut status = self.status.lock();
            status.expirations += 1;
            status.zones.entry(zone).or_default().expired = true;
        }
    }

    /// Publishes a member zone's new version. `Err` when it cannot be served.
    fn publish(&mut self, zone: &Name, content: &Content) -> Result<(), TransferError> {
        let transfer = self.store.load().settings.follow.as_ref().map_or_else(
            || self.config.peers.transfer.clone(),
            |f| f.transfer.clone(),
        );
        let records: Vec<Record> = content.records.values().cloned().collect();
        let built =
            crate::snapshot::build_followed(&content.origin, &content.soa, &records, transfer)
                .map_err(TransferError::Unservable)?;
        let mut taken = true;
        self.store.update(|prev| {
            let mut next = prev.clone();
            taken = next.put_followed(built);
            next
        });
        if !taken {
            let held = self.zones.get_mut(zone);
            if let Some(held) = held
                && !held.conflict
            {
                held.conflict = true;
                error!(%zone, "a catalog member has the name of a configured or discovered zone: that one is served, the member is not");
            }
            return Err(TransferError::Unservable(
                "a configured or discovered zone has its name".into(),
            ));
        }
        Ok(())
    }

    /// A new catalog version: members added are followed from now, members gone
    /// are dropped (and their cache files removed).
    fn apply_catalog(&mut self, catalog: &Content) -> Result<(), TransferError> {
        let members = members(catalog).map_err(TransferError::Unservable)?;
        let now = Instant::now();
        let gone: Vec<Name> = self
            .zones
            .keys()
            .filter(|z| !self.is_catalog(z) && !members.contains(*z))
            .cloned()
            .collect();
        for zone in &gone {
            self.zones.remove(zone);
            self.status.lock().zones.remove(zone);
            if let Some(path) = self.cache_path(zone) {
                let _ = std::fs::remove_file(path);
            }
            info!(%zone, "left the primary's catalog: no longer served");
        }
        for zone in &members {
            if !self.zones.contains_key(zone) {
                info!(%zone, "in the primary's catalog: following it");
                self.zones.insert(zone.clone(), Held::new(now));
            }
        }
        let keep = members.clone();
        self.store.update(|prev| {
            let mut next = prev.clone();
            next.retain_followed(|z| keep.contains(z));
            next
        });
        Ok(())
    }

    fn update_loaded(&self) {
        let loaded = self
            .zones
            .values()
            .all(|h| h.content.is_some() || h.unservable);
        if loaded && !self.status.loaded.swap(true, Ordering::Relaxed) {
            info!(
                zones = self.zones.len() - 1,
                "every zone of the primary's catalog is served"
            );
        }
    }

    // ---- cache-dir -------------------------------------------------------------

    fn cache_path(&self, zone: &Name) -> Option<PathBuf> {
        let dir = self.config.cache_dir.as_ref()?;
        Some(dir.join(cache_file_name(zone)))
    }

    fn save_cache(&self, zone: &Name, content: &Content) {
        let Some(path) = self.cache_path(zone) else {
            return;
        };
        let result = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .and_then(|()| crate::cache::write_atomically(&path, &encode_cache(content)));
        if let Err(error) = result {
            warn!(%zone, path = %path.display(), %error, "cannot write the followed zone to cache-dir (it is served; a restart would transfer it again)");
        }
    }

    /// The file's time is the last contact: an up-to-date check only touches it.
    fn touch_cache(&self, zone: &Name) {
        if let Some(path) = self.cache_path(zone)
            && let Ok(file) = std::fs::File::options().write(true).open(&path)
        {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Loads the catalog and its members from `cache-dir` and serves the members.
    fn load_cache(&mut self) {
        let catalog = self.config.catalog.clone();
        let Some((content, at)) = self.read_cache(&catalog) else {
            return;
        };
        let Ok(members) = members(&content) else {
            return;
        };
        let now = Instant::now();
        if let Some(held) = self.zones.get_mut(&catalog) {
            held.content = Some(Arc::new(content));
            held.last_ok = Some(at);
        }
        let transfer = self.config.peers.transfer.clone();
        let mut built = Vec::new();
        for zone in members {
            let mut held = Held::new(now);
            if let Some((content, at)) = self.read_cache(&zone) {
                let records: Vec<Record> = content.records.values().cloned().collect();
                match crate::snapshot::build_followed(
                    &content.origin,
                    &content.soa,
                    &records,
                    transfer.clone(),
                ) {
                    Ok(z) => {
                        built.push(z);
                        let mut status = self.status.lock();
                        let entry = status.zones.entry(zone.clone()).or_default();
                        entry.serial = Some(content.serial());
                        held.content = Some(Arc::new(content));
                        held.last_ok = Some(at);
                    }
                    Err(error) => {
                        warn!(%zone, %error, "the cached zone cannot be served; transferring it")
                    }
                }
            }
            self.zones.insert(zone, held);
        }
        let count = built.len();
        self.store.update(|prev| {
            let mut next = prev.clone();
            for zone in built {
                next.put_followed(zone);
            }
            next
        });
        info!(zones = count, dir = ?self.config.cache_dir, "serving the followed zones kept in cache-dir while the primary is asked");
        self.update_loaded();
    }

    fn read_cache(&self, zone: &Name) -> Option<(Content, SystemTime)> {
        let path = self.cache_path(zone)?;
        let at = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let bytes = match crate::cache::read_regular(&path, MAX_TRANSFER_BYTES as u64) {
            Ok(b) => b,
            Err(_) => return None,
        };
        match decode_cache(zone, &bytes) {
            Ok(content) => Some((content, at)),
            Err(error) => {
                warn!(%zone, path = %path.display(), %error, "the cache file of a followed zone does not read; transferring it");
                None
            }
        }
    }
}

fn retry_of(held: &Held) -> Duration {
    held.content.as_ref().map_or(FIRST_RETRY, |c| c.timers().1)
}

/// One check of `zone` with the primary: IXFR from what is held (AXFR when nothing
/// is, or the IXFR does not apply, or the primary's serial is not ahead of ours but
/// different: a primary that started over). Resolves the primary each time.
async fn check(
    primary: &str,
    zone: &Name,
    have: Option<&Content>,
    key: Option<&TsigKey>,
    tls: Option<&FollowTls>,
    store: &SnapshotStore,
) -> Result<Got, TransferError> {
    let addrs = resolve(primary).await?;
    if let Some(peers) = store.load().settings.follow.as_ref() {
        peers.set_primaries(addrs.iter().map(SocketAddr::ip).collect());
    }
    let mut last = None;
    for addr in addrs {
        let got = match transfer(addr, zone, have, key, tls).await {
            Ok(Got::UpToDate(serial)) if have.is_some_and(|h| h.serial() != serial) => {
                transfer(addr, zone, None, key, tls).await
            }
            Err(TransferError::Inconsistent(why)) => {
                debug!(%zone, why, "IXFR does not apply: AXFR");
                transfer(addr, zone, None, key, tls).await
            }
            other => other,
        };
        match got {
            Ok(got) => return Ok(got),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| TransferError::Resolve(primary.into())))
}

/// A zone's file in `cache-dir`: its name with anything but letters, digits, `-`,
/// `_` and `.` escaped, so any name makes one safe file name.
fn cache_file_name(zone: &Name) -> String {
    let mut out = String::new();
    for (i, label) in zone.to_lowercase().iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        }
    }
    if out.is_empty() {
        out.push('%'); // the root, which no catalog lists
    }
    out + ".zone"
}

/// The cache file: a header, then every record (SOA first) as a 2-byte length and
/// its wire form.
pub fn encode_cache(content: &Content) -> Vec<u8> {
    let mut out = CACHE_MAGIC.to_vec();
    for r in std::iter::once(&content.soa).chain(content.records.values()) {
        let mut one = Vec::new();
        if r.emit(&mut BinEncoder::new(&mut one)).is_ok()
            && let Ok(len) = u16::try_from(one.len())
        {
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&one);
        }
    }
    out
}

/// Reads what [`encode_cache`] wrote for `zone`.
pub fn decode_cache(zone: &Name, bytes: &[u8]) -> Result<Content, String> {
    let mut rest = bytes
        .strip_prefix(CACHE_MAGIC)
        .ok_or("not a privatelink-dns follow cache file")?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or("truncated")?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (one, tail) = tail.split_at_checked(len).ok_or("truncated")?;
        let record = Record::read(&mut BinDecoder::new(one)).map_err(|e| e.to_string())?;
        records.push(record);
        rest = tail;
    }
    let mut records = records.into_iter();
    let soa = records.next().ok_or("empty")?;
    let origin = zone.to_lowercase();
    if soa_serial(&soa).is_none() || soa.name.to_lowercase() != origin {
        return Err("does not start with the zone's SOA".into());
    }
    let mut map = BTreeMap::new();
    for r in records {
        map.insert(rr_key(&r).ok_or("a record that cannot be keyed")?, r);
    }
    Ok(Content {
        origin,
        soa,
        records: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn soa(origin: &str, serial: u32) -> Record {
        Record::from_rdata(
            name(origin),
            3600,
            RData::SOA(SOA::new(
                name("ns.test."),
                name("h.test."),
                serial,
                60,
                10,
                600,
                60,
            )),
        )
    }

    fn a(owner: &str, ip: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A(ip.parse().unwrap())))
    }

    fn ns(origin: &str) -> Record {
        Record::from_rdata(name(origin), 3600, RData::NS(NS(name("ns.test."))))
    }

    fn run(
        origin: &str,
        have: Option<&Content>,
        rrs: Vec<Record>,
    ) -> Result<Option<Content>, TransferError> {
        let mut s = Stream::new(&name(origin), have);
        for r in rrs {
            s.push(r)?;
        }
        Ok(match s.state {
            State::Done(c) => Some(c),
            _ => None,
        })
    }

    /// A check that panics (a bug) leaves its zone to be tried again, not marked
    /// running for ever.
    #[tokio::test]
    async fn a_check_that_panics_is_retried() {
        let config = crate::config::Config::from_toml(
            "[follow]\nprimary = \"127.0.0.1:9\"\ncatalog = \"catalog.invalid\"\n",
            "t",
        )
        .unwrap();
        let follow = config.follow.clone().unwrap();
        let store = Arc::new(SnapshotStore::new(crate::app::build_snapshot(
            &config, None,
        )));
        let (_tx, rx) = mpsc::channel(1);
        let mut f = Follower::new(follow, store, Arc::default(), rx);
        let zone = name("a.test.");
        let mut held = Held::new(Instant::now());
        held.running = true;
        f.zones.insert(zone.clone(), held);
        let mut tasks: tokio::task::JoinSet<Checked> = tokio::task::JoinSet::new();
        let mut checking = HashMap::new();
        let task = tasks.spawn(async { panic!("a bug in a check") });
        checking.insert(task.id(), zone.clone());
        let done = tasks.join_next_with_id().await.unwrap();
        assert!(done.is_err());
        f.on_done(done, &mut checking);
        let held = &f.zones[&zone];
        assert!(!held.running, "free to be checked again");
        assert!(held.due > Instant::now(), "at its retry, not at once");
        assert!(checking.is_empty());
    }

    /// A primary on loopback that reads the request and then does `then` with the
    /// connection: the faults a transfer must survive with an error, never a hang.
    async fn faulty_primary<F, Fut>(then: F) -> SocketAddr
    where
        F: FnOnce(TcpStream, Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_u16().await.unwrap();
            let mut query = vec![0; usize::from(len)];
            s.read_exact(&mut query).await.unwrap();
            then(s, query).await;
        });
        addr
    }

    /// A framed answer to `query` (its id, QR) with `records` in the answer section.
    fn answer_to(query: &[u8], records: Vec<Record>) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.add_query(q.queries[0].clone());
        for r in records {
            m.add_answer(r);
        }
        let bytes = m.to_vec().unwrap();
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend(bytes);
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_primary_is_cut_at_the_read_timeout() {
        let addr = faulty_primary(|s, _| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        })
        .await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert_eq!(got, Err(TransferError::Stalled));
    }

    #[tokio::test]
    async fn a_closed_truncated_or_empty_answer_is_an_error() {
        // Closed without a byte.
        let addr = faulty_primary(|s, _| async move { drop(s) }).await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert!(matches!(got, Err(TransferError::Io(_))), "{got:?}");
        // A message cut short, then closed.
        let addr = faulty_primary(|mut s, query| async move {
            let whole = answer_to(&query, vec![soa("z.test.", 5), ns("z.test.")]);
            s.write_all(&whole[..whole.len() / 2]).await.unwrap();
        })
        .await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert!(matches!(got, Err(TransferError::Io(_))), "{got:?}");
        // A whole message with no records.
        let addr = faulty_primary(|mut s, query| async move {
            s.write_all(&answer_to(&query, vec![])).await.unwrap();
        })
        .await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert!(matches!(got, Err(TransferError::Malformed(_))), "{got:?}");
        // An AXFR that ends before its closing SOA (the connection closes).
        let addr = faulty_primary(|mut s, query| async move {
            s.write_all(&answer_to(&query, vec![soa("z.test.", 5), ns("z.test.")]))
                .await
                .unwrap();
        })
        .await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert!(matches!(got, Err(TransferError::Io(_))), "{got:?}");
        // The whole zone, for contrast: served.
        let addr = faulty_primary(|mut s, query| async move {
            let records = vec![soa("z.test.", 5), ns("z.test."), soa("z.test.", 5)];
            s.write_all(&answer_to(&query, records)).await.unwrap();
        })
        .await;
        let got = transfer(addr, &name("z.test."), None, None, None).await;
        assert!(
            matches!(got, Ok(Got::Zone(ref c, Kind::Axfr)) if c.serial() == 5),
            "{got:?}"
        );
    }

    /// z.test. at serial 5, by AXFR: SOA, NS, www A 192.0.2.1.
    fn serial_5() -> Content {
        run(
            "z.test.",
            None,
            vec![
                soa("z.test.", 5),
                ns("z.test."),
                a("www.z.test.", "192.0.2.1"),
                soa("z.test.", 5),
            ],
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn primary_addresses() {
        for (text, want) in [
            ("10.0.0.5:53", Some(("10.0.0.5", 53))),
            ("10.0.0.5", Some(("10.0.0.5", 53))),
            ("[fd00::5]:5353", Some(("fd00::5", 5353))),
            ("fd00::5", Some(("fd00::5", 53))),
            ("primary.example.com:53", Some(("primary.example.com", 53))),
            ("primary.example.com", Some(("primary.example.com", 53))),
            ("primary.example.com:0", None),
            ("primary.example.com:x", None),
            ("", None),
            ("a b:53", None),
            ("[fd00::5", None),
            ("..:53", None),
        ] {
            assert_eq!(split_primary(text), want, "{text}");
        }
    }

    #[test]
    fn an_axfr_is_every_record_between_the_two_soas() {
        let got = run(
            "z.test.",
            None,
            vec![
                soa("z.test.", 5),
                ns("z.test."),
                a("www.z.test.", "192.0.2.1"),
                a("WWW.z.test.", "192.0.2.2"),
                soa("z.test.", 5),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.serial(), 5);
        assert_eq!(got.records.len(), 3);
        // Incomplete, a foreign SOA, records after the end: errors or not done.
        assert_eq!(
            run("z.test.", None, vec![soa("z.test.", 5), ns("z.test.")]).unwrap(),
            None
        );
        assert!(run("z.test.", None, vec![ns("z.test.")]).is_err());
        assert!(
            run(
                "z.test.",
                None,
                vec![soa("z.test.", 5), ns("z.test."), soa("z.test.", 6)]
            )
            .is_err()
        );
        assert!(
            run(
                "z.test.",
                None,
                vec![soa("z.test.", 5), soa("z.test.", 5), ns("z.test.")]
            )
            .is_err()
        );
    }

    #[test]
    fn an_ixfr_applies_each_sequence_and_refuses_what_does_not_apply() {
        let have = serial_5();
        // 5 → 6: www .1 → .2; 6 → 7: add api.
        let ixfr = vec![
            soa("z.test.", 7),
            soa("z.test.", 5),
            a("WWW.z.test.", "192.0.2.1"),
            soa("z.test.", 6),
            a("www.z.test.", "192.0.2.2"),
            soa("z.test.", 6),
            soa("z.test.", 7),
            a("api.z.test.", "192.0.2.3"),
            soa("z.test.", 7),
        ];
        let got = run("z.test.", Some(&have), ixfr.clone()).unwrap().unwrap();
        assert_eq!(got.serial(), 7);
        let owners: Vec<String> = got
            .records
            .values()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(owners.len(), 3, "{owners:?}");
        assert!(
            owners.iter().any(|o| o.contains("192.0.2.2"))
                && !owners.iter().any(|o| o.contains("192.0.2.1"))
        );
        // From a serial we do not have; deleting what is not there; a gap.
        let mut other = have.clone();
        other.soa = soa("z.test.", 4);
        assert!(matches!(
            run("z.test.", Some(&other), ixfr.clone()),
            Err(TransferError::Inconsistent(_))
        ));
        let mut missing = ixfr.clone();
        missing[2] = a("www.z.test.", "192.0.2.9");
        assert!(matches!(
            run("z.test.", Some(&have), missing),
            Err(TransferError::Inconsistent(_))
        ));
        let mut gap = ixfr.clone();
        gap[5] = soa("z.test.", 8);
        assert!(run("z.test.", Some(&have), gap).is_err());
        // An IXFR answered in full (AXFR style) replaces everything.
        let full = run(
            "z.test.",
            Some(&have),
            vec![soa("z.test.", 9), ns("z.test."), soa("z.test.", 9)],
        )
        .unwrap()
        .unwrap();
        assert_eq!((full.serial(), full.records.len()), (9, 1));
    }

    #[test]
    fn the_cache_file_round_trips_and_refuses_what_it_did_not_write() {
        let content = serial_5();
        let bytes = encode_cache(&content);
        assert_eq!(decode_cache(&name("z.test."), &bytes).unwrap(), content);
        assert!(decode_cache(&name("other.test."), &bytes).is_err());
        assert!(decode_cache(&name("z.test."), &bytes[..bytes.len() - 3]).is_err());
        assert!(decode_cache(&name("z.test."), b"garbage").is_err());
        assert_eq!(cache_file_name(&name("Z.test.")), "z.test.zone");
        let odd = Name::from_labels(vec![&b"a/b"[..], b"test"]).unwrap();
        assert_eq!(cache_file_name(&odd), "a%2fb.test.zone");
    }

    #[test]
    fn catalog_members_need_version_2() {
        use hickory_proto::rr::rdata::{PTR, TXT};
        let cat = "catalog.invalid.";
        let mut content = run(
            cat,
            None,
            vec![
                soa(cat, 1),
                ns(cat),
                Record::from_rdata(
                    name("version.catalog.invalid."),
                    0,
                    RData::TXT(TXT::new(vec!["2".into()])),
                ),
                Record::from_rdata(
                    name("a1.zones.catalog.invalid."),
                    0,
                    RData::PTR(PTR(name("One.test."))),
                ),
                Record::from_rdata(
                    name("x.a1.zones.catalog.invalid."),
                    0,
                    RData::TXT(TXT::new(vec!["group".into()])),
                ),
                soa(cat, 1),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            members(&content).unwrap(),
            BTreeSet::from([name("one.test.")])
        );
        content
            .records
            .retain(|_, r| r.record_type() != RecordType::TXT);
        assert!(members(&content).is_err());
    }
}
