//! NOTIFY out (RFC 1996): when a zone's serial changes (a refresh, a reload, or the
//! start), tell its `notify` targets, so secondaries transfer the change at once
//! instead of at their next SOA refresh.
//!
//! One task, one UDP socket per address family (counted in the descriptor budget),
//! and at most `max-notify-in-flight` NOTIFYs waiting for an acknowledgement; the
//! others wait their turn. Each is tried up to [`TRIES`] times with doubling
//! timeouts until acknowledged: NOERROR from the target with the NOTIFY's id, and a
//! valid TSIG when it was signed. A zone that changes again before its NOTIFY is
//! acknowledged gets one NOTIFY, with the newest serial (coalescing).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::TSigner;
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::TsigKey;
use crate::metrics::{Metrics, NotifyResult};
use crate::snapshot::{Snapshot, SnapshotStore, unix_now};
use crate::wire::{QR, u16_at};

/// Tries per NOTIFY before giving up.
pub const TRIES: u32 = 5;
/// The wait for a response after the first try; doubled after each (1+2+4+8+16 s).
pub const FIRST_TIMEOUT: Duration = Duration::from_secs(1);
/// Sockets the NOTIFY task holds (one per address family), for the descriptor budget.
pub const SOCKETS: usize = 2;

/// What one NOTIFY says and where it goes.
#[derive(Debug, Clone)]
struct Notice {
    zone: Name,
    soa: Record,
    serial: u32,
    target: SocketAddr,
    key: Option<TsigKey>,
}

type Slot = (Name, SocketAddr);

/// A NOTIFY in flight: sent `attempt` times, the last with `id`, answered by
/// `deadline` or tried again.
struct InFlight {
    notice: Notice,
    attempt: u32,
    id: u16,
    check: Option<Check>,
    deadline: Instant,
    /// The rcode of a rejection seen for this NOTIFY (REFUSED, NOTAUTH...).
    rejected: Option<u8>,
}

/// The NOTIFY state: what is in flight, what waits for a slot, what was settled.
struct Notifier {
    metrics: Arc<Metrics>,
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    max_in_flight: usize,
    first_timeout: Duration,
    in_flight: HashMap<Slot, InFlight>,
    waiting: VecDeque<Slot>,
    waiting_notice: HashMap<Slot, Notice>,
    /// The serial last acknowledged or given up per slot: not sent again.
    settled: HashMap<Slot, u32>,
}

/// Sends NOTIFYs on every serial change until `shutdown`.
pub async fn run(
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) {
    run_with(store, metrics, max_in_flight, FIRST_TIMEOUT, shutdown).await;
}

async fn run_with(
    store: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    first_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut changes = store.subscribe();
    let mut n = Notifier::new(metrics, max_in_flight, first_timeout).await;
    let (v4, v6) = (n.v4.clone(), n.v6.clone());
    let (mut buf4, mut buf6) = ([0u8; 1024], [0u8; 1024]);
    let mut version_seen = None;
    loop {
        let version = *changes.borrow_and_update();
        if version_seen != Some(version) {
            version_seen = Some(version);
            n.enqueue(notices(&store.load_full()));
        }
        n.pump();
        let deadline = n.next_deadline();
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
            () = sleep_until(deadline) => n.pump(),
            Some((len, from)) = recv(v4.as_deref(), &mut buf4) => n.received(&buf4[..len], from),
            Some((len, from)) = recv(v6.as_deref(), &mut buf6) => n.received(&buf6[..len], from),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A datagram from `socket`; never resolves without one (an ICMP error surfaces as
/// a receive error: ignored, the try's timeout runs on).
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    loop {
        if let Ok(r) = socket.recv_from(buf).await {
            return Some(r);
        }
    }
}

impl Notifier {
    async fn new(metrics: Arc<Metrics>, max_in_flight: usize, first_timeout: Duration) -> Self {
        let bind = |addr: &'static str| async move {
            match UdpSocket::bind(addr).await {
                Ok(s) => Some(Arc::new(s)),
                Err(error) => {
                    // A host without IPv6 is normal: said again if a target needs it.
                    debug!(%error, addr, "cannot open a socket for NOTIFY");
                    None
                }
            }
        };
        Self {
            metrics,
            v4: bind("0.0.0.0:0").await,
            v6: bind("[::]:0").await,
            max_in_flight: max_in_flight.max(1),
            first_timeout,
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
            waiting_notice: HashMap::new(),
            settled: HashMap::new(),
        }
    }

    /// Takes the notices of the current snapshot: a serial not yet sent waits for a
    /// slot; one in flight with an older serial is replaced (the next try carries
    /// the newest); zones and targets that are gone are forgotten.
    fn enqueue(&mut self, notices: Vec<Notice>) {
        let mut current: HashMap<Slot, ()> = HashMap::with_capacity(notices.len());
        for notice in notices {
            let slot = (notice.zone.clone(), notice.target);
            current.insert(slot.clone(), ());
            if self.settled.get(&slot) == Some(&notice.serial) {
                continue;
            }
            if let Some(f) = self.in_flight.get_mut(&slot) {
                if f.notice.serial != notice.serial {
                    // Coalesced: the tries go on with the newest serial, from the first.
                    f.notice = notice;
                    f.attempt = 0;
                    f.rejected = None;
                    f.deadline = Instant::now();
                }
                continue;
            }
            if self.waiting_notice.insert(slot.clone(), notice).is_none() {
                self.waiting.push_back(slot);
            }
        }
        self.in_flight.retain(|slot, _| current.contains_key(slot));
        self.waiting_notice
            .retain(|slot, _| current.contains_key(slot));
        let waiting_notice = &self.waiting_notice;
        self.waiting
            .retain(|slot| waiting_notice.contains_key(slot));
        self.settled.retain(|slot, _| current.contains_key(slot));
    }

    /// Moves waiting notices into free slots, and sends every try that is due (the
    /// first of those just started, the next of those whose timeout passed), until
    /// no slot is freed by a NOTIFY given up.
    fn pump(&mut self) {
        loop {
            while self.in_flight.len() < self.max_in_flight {
                let Some(slot) = self.waiting.pop_front() else {
                    break;
                };
                let Some(notice) = self.waiting_notice.remove(&slot) else {
                    continue;
                };
                let f = InFlight {
                    notice,
                    attempt: 0,
                    id: 0,
                    check: None,
                    deadline: Instant::now(),
                    rejected: None,
                };
                self.in_flight.insert(slot, f);
            }
            let freed = self.expire();
            if !freed || self.waiting.is_empty() {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.deadline).min()
    }

    /// Every NOTIFY whose deadline passed: tried again, or given up after [`TRIES`].
    /// Whether any was given up (its slot is free).
    fn expire(&mut self) -> bool {
        let mut freed = false;
        let now = Instant::now();
        let due: Vec<Slot> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(slot, _)| slot.clone())
            .collect();
        for slot in due {
            let Some(mut f) = self.in_flight.remove(&slot) else {
                continue;
            };
            let zone = f.notice.zone.to_string();
            if let Some(rcode) = f.rejected.take() {
                self.metrics.notify(&zone, NotifyResult::Rejected);
                debug!(zone, target = %f.notice.target, attempt = f.attempt, rcode = %rcode_name(rcode), "NOTIFY rejected");
                if f.attempt >= TRIES {
                    self.give_up(&slot, &f, Some(rcode));
                    freed = true;
                    continue;
                }
            } else if f.attempt >= TRIES {
                self.give_up(&slot, &f, None);
                freed = true;
                continue;
            }
            f.attempt += 1;
            f.id = (RandomState::new().hash_one((f.attempt, &zone, now)) & 0xFFFF) as u16;
            let Some((bytes, check)) = message(&f.notice, f.id) else {
                warn!(zone, "cannot encode or sign a NOTIFY");
                self.give_up(&slot, &f, None);
                freed = true;
                continue;
            };
            f.check = check;
            f.deadline = now + self.first_timeout * 2u32.pow(f.attempt - 1);
            self.metrics.notify(&zone, NotifyResult::Sent);
            let socket = if f.notice.target.is_ipv4() {
                self.v4.as_ref()
            } else {
                self.v6.as_ref()
            };
            match socket {
                Some(socket) => {
                    // sendto(2) itself: a datagram leaves at once or fails (a full
                    // buffer); tokio's readiness is not yet known on a new socket.
                    let sent = socket2::SockRef::from(socket.as_ref())
                        .send_to(&bytes, &f.notice.target.into());
                    if let Err(error) = sent {
                        debug!(%error, zone, target = %f.notice.target, attempt = f.attempt, "NOTIFY not sent");
                    }
                }
                None => {
                    warn!(zone, target = %f.notice.target, "no socket of this address family for NOTIFY (no IPv6 on this host?)");
                    self.give_up(&slot, &f, None);
                    freed = true;
                    continue;
                }
            }
            self.in_flight.insert(slot, f);
        }
        freed
    }

    fn give_up(&mut self, slot: &Slot, f: &InFlight, rcode: Option<u8>) {
        let zone = f.notice.zone.to_string();
        self.metrics.notify(&zone, NotifyResult::GivenUp);
        self.settled.insert(slot.clone(), f.notice.serial);
        match rcode {
            Some(rcode) => {
                warn!(zone, serial = f.notice.serial, target = %f.notice.target, tries = TRIES, rcode = %rcode_name(rcode), "NOTIFY rejected by the secondary; giving up (check its primaries and key; it still polls at its SOA refresh)")
            }
            None => {
                warn!(zone, serial = f.notice.serial, target = %f.notice.target, tries = TRIES, "NOTIFY not acknowledged; giving up (the secondary still polls at its SOA refresh)")
            }
        }
    }

    /// A datagram from `from`: the acknowledgement (or rejection) of a NOTIFY in
    /// flight to it with that id, or ignored. A rejection is noted and the try's
    /// timeout runs on (a forged one cannot cut the tries short).
    fn received(&mut self, message: &[u8], from: SocketAddr) {
        let (Some(id), Some(flags)) = (u16_at(message, 0), u16_at(message, 2)) else {
            return;
        };
        let is_notify_response =
            flags & QR != 0 && crate::wire::opcode(flags) == crate::wire::OPCODE_NOTIFY;
        if !is_notify_response {
            return;
        }
        let Some((slot, f)) = self
            .in_flight
            .iter_mut()
            .find(|(_, f)| f.notice.target == from && f.id == id && f.attempt > 0)
        else {
            return;
        };
        let rcode = crate::wire::rcode(flags);
        if rcode != 0 {
            f.rejected = Some(rcode);
            return;
        }
        if let Some(check) = &f.check
            && check
                .signer
                .verify_message_byte(message, Some(&check.request_mac), true)
                .is_err()
        {
            debug!(%from, "a NOTIFY response without a valid TSIG; ignored");
            return;
        }
        let slot = slot.clone();
        let Some(f) = self.in_flight.remove(&slot) else {
            return;
        };
        let zone = f.notice.zone.to_string();
        self.metrics.notify(&zone, NotifyResult::Acknowledged);
        info!(zone, serial = f.notice.serial, target = %f.notice.target, attempt = f.attempt, "NOTIFY acknowledged");
        self.settled.insert(slot, f.notice.serial);
    }
}

/// One notice per zone and target of `snapshot`.
fn notices(snapshot: &Snapshot) -> Vec<Notice> {
    let mut out = Vec::new();
    for zone in snapshot.zones() {
        let policy = zone.transfer();
        let key = policy
            .key
            .as_ref()
            .and_then(|k| snapshot.settings.keys.iter().find(|key| &key.name == k));
        for target in &policy.notify {
            out.push(Notice {
                zone: zone.origin.clone(),
                soa: zone.soa.clone(),
                serial: zone.serial(),
                target: *target,
                key: key.cloned(),
            });
        }
    }
    out
}

/// What an acknowledgement of a signed NOTIFY must be signed with: the key, and the
/// NOTIFY's MAC, which the response's MAC covers.
struct Check {
    signer: TSigner,
    request_mac: Vec<u8>,
}

/// The NOTIFY message for `notice` with `id`, signed when the zone has a key (then
/// with what its response must be verified against).
fn message(notice: &Notice, id: u16) -> Option<(Vec<u8>, Option<Check>)> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(notice.zone.clone(), RecordType::SOA));
    m.add_answer(notice.soa.clone());
    let mut check = None;
    if let Some(key) = &notice.key {
        let signer = TSigner::new(
            key.secret.clone(),
            key.algorithm.clone(),
            key.name.clone(),
            crate::tsig::FUDGE,
        )
        .ok()?;
        let (tsig, _) = signer.sign_message(&m, unix_now()).ok()?;
        let request_mac = tsig.data.mac.clone();
        m.signature = Some(tsig);
        check = Some(Check {
            signer,
            request_mac,
        });
    }
    Some((m.to_vec().ok()?, check))
}

fn rcode_name(rcode: u8) -> String {
    hickory_proto::op::ResponseCode::from_low(rcode).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::RefreshStats;

    fn notice(target: SocketAddr) -> Notice {
        let zone = Name::from_ascii("n.test.").unwrap();
        let soa = hickory_proto::rr::rdata::SOA::new(
            Name::from_ascii("ns.n.test.").unwrap(),
            Name::from_ascii("h.n.test.").unwrap(),
            7,
            3600,
            900,
            86400,
            60,
        );
        Notice {
            soa: Record::from_rdata(zone.clone(), 3600, hickory_proto::rr::RData::SOA(soa)),
            zone,
            serial: 7,
            target,
            key: None,
        }
    }

    fn count(metrics: &Metrics, result: &str) -> String {
        let text = metrics.render();
        let prefix =
            format!("privatelink_dns_notify_total{{zone=\"n.test.\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or("0")
            .to_string()
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(
            Arc::new(RefreshStats::default()),
            Arc::new(SnapshotStore::default()),
        ))
    }

    /// Runs a notifier over `notices` until every one is acknowledged or given up.
    async fn drive(notices: Vec<Notice>, metrics: Arc<Metrics>, max: usize, first: Duration) {
        let mut n = Notifier::new(metrics, max, first).await;
        n.enqueue(notices);
        let v4 = n.v4.clone();
        let mut buf = [0u8; 1024];
        loop {
            n.pump();
            let Some(deadline) = n.next_deadline() else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => n.pump(),
                Some((len, from)) = recv(v4.as_deref(), &mut buf) => n.received(&buf[..len], from),
            }
        }
    }

    #[tokio::test]
    async fn a_silent_target_gets_five_tries_then_is_given_up() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let metrics = metrics();
        let target = silent.local_addr().unwrap();
        drive(
            vec![notice(target)],
            metrics.clone(),
            64,
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(count(&metrics, "sent"), "5");
        assert_eq!(count(&metrics, "given_up"), "1");
        assert_eq!(count(&metrics, "acknowledged"), "0");
    }

    #[tokio::test]
    async fn a_target_that_answers_the_second_try_acknowledges_it() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let secondary = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let _ignored = target.recv_from(&mut buf).await.unwrap();
            let (n, from) = target.recv_from(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.metadata.op_code, OpCode::Notify);
            assert!(m.metadata.authoritative);
            assert_eq!(m.queries[0].query_type(), RecordType::SOA);
            let mut reply = Message::new(m.metadata.id, MessageType::Response, OpCode::Notify);
            reply.add_query(m.queries[0].clone());
            target
                .send_to(&reply.to_vec().unwrap(), from)
                .await
                .unwrap();
        });
        let metrics = metrics();
        drive(
            vec![notice(addr)],
            metrics.clone(),
            64,
            Duration::from_millis(200),
        )
        .await;
        secondary.await.unwrap();
        assert_eq!(count(&metrics, "sent"), "2");
        assert_eq!(count(&metrics, "acknowledged"), "1");
        assert_eq!(count(&metrics, "given_up"), "0");
    }

    #[tokio::test]
    async fn a_target_that_refuses_is_never_acknowledged() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let secondary = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for _ in 0..TRIES {
                let (n, from) = target.recv_from(&mut buf).await.unwrap();
                let m = Message::from_vec(&buf[..n]).unwrap();
                let mut reply = Message::new(m.metadata.id, MessageType::Response, OpCode::Notify);
                reply.metadata.response_code = hickory_proto::op::ResponseCode::Refused;
                reply.add_query(m.queries[0].clone());
                target
                    .send_to(&reply.to_vec().unwrap(), from)
                    .await
                    .unwrap();
            }
        });
        let metrics = metrics();
        drive(
            vec![notice(addr)],
            metrics.clone(),
            64,
            Duration::from_millis(10),
        )
        .await;
        secondary.await.unwrap();
        assert_eq!(count(&metrics, "sent"), "5");
        assert_eq!(count(&metrics, "rejected"), "5");
        assert_eq!(count(&metrics, "acknowledged"), "0");
        assert_eq!(count(&metrics, "given_up"), "1");
    }

    #[tokio::test]
    async fn a_signed_notify_counts_only_a_signed_acknowledgement_from_the_target() {
        let key = TsigKey {
            name: Name::from_ascii("k.").unwrap(),
            algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        };
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let keys = vec![key.clone()];
        let secondary = tokio::spawn(async move {
            let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = [0u8; 512];
            let reply_to = |m: &Message, id: u16| {
                let mut reply = Message::new(id, MessageType::Response, OpCode::Notify);
                reply.add_query(m.queries[0].clone());
                reply.to_vec().unwrap()
            };
            // First try: a wrong id, a reply from another port, an unsigned NOERROR.
            let (n, from) = target.recv_from(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            let id = m.metadata.id;
            let signed = match crate::tsig::verify(&buf[..n], &m, &keys, unix_now()) {
                crate::tsig::Verdict::Signed(s) => s,
                other => panic!("the NOTIFY is signed: {other:?}"),
            };
            target
                .send_to(&reply_to(&m, id.wrapping_add(1)), from)
                .await
                .unwrap();
            elsewhere.send_to(&reply_to(&m, id), from).await.unwrap();
            target.send_to(&reply_to(&m, id), from).await.unwrap();
            // A reply signed with the right key but for another request's MAC.
            let mut forged = reply_to(&m, id);
            let mut other = signed.clone();
            other.request_mac = vec![0; 32];
            crate::tsig::sign_response(&mut forged, &other, unix_now(), None).unwrap();
            target.send_to(&forged, from).await.unwrap();
            // Second try: signed properly.
            let (n, from) = target.recv_from(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            let crate::tsig::Verdict::Signed(signed) =
                crate::tsig::verify(&buf[..n], &m, &keys, unix_now())
            else {
                panic!("signed");
            };
            let mut reply = reply_to(&m, m.metadata.id);
            crate::tsig::sign_response(&mut reply, &signed, unix_now(), None).unwrap();
            target.send_to(&reply, from).await.unwrap();
        });
        let metrics = metrics();
        let mut n = notice(addr);
        n.key = Some(key);
        drive(vec![n], metrics.clone(), 64, Duration::from_millis(300)).await;
        secondary.await.unwrap();
        assert_eq!(count(&metrics, "sent"), "2");
        assert_eq!(count(&metrics, "acknowledged"), "1");
        assert_eq!(count(&metrics, "rejected"), "0");
    }

    #[tokio::test]
    async fn a_newer_serial_replaces_the_one_in_flight() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = target.local_addr().unwrap();
        let metrics = metrics();
        let mut n = Notifier::new(metrics.clone(), 64, Duration::from_secs(60)).await;
        n.enqueue(vec![notice(addr)]);
        n.pump();
        let mut buf = [0u8; 512];
        let (len, _) = target.recv_from(&mut buf).await.unwrap();
        let first = Message::from_vec(&buf[..len]).unwrap();
        // The zone changes before the secondary answers: one NOTIFY, the new serial,
        // at once (not after the first try's minute).
        let mut newer = notice(addr);
        newer.serial = 8;
        if let hickory_proto::rr::RData::SOA(soa) = &mut newer.soa.data {
            soa.serial = 8;
        }
        n.enqueue(vec![newer.clone()]);
        assert_eq!(n.in_flight.len(), 1);
        n.pump();
        let (len, _) = target.recv_from(&mut buf).await.unwrap();
        let second = Message::from_vec(&buf[..len]).unwrap();
        let serial = |m: &Message| match &m.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("{other:?}"),
        };
        assert_eq!((serial(&first), serial(&second)), (7, 8));
        // The answer to the first (stale id) does not settle it; the second's does.
        let reply = |m: &Message| {
            let mut r = Message::new(m.metadata.id, MessageType::Response, OpCode::Notify);
            r.add_query(m.queries[0].clone());
            r.to_vec().unwrap()
        };
        n.received(&reply(&first), addr);
        assert_eq!(n.in_flight.len(), 1);
        // From elsewhere: ignored.
        n.received(&reply(&second), SocketAddr::new(addr.ip(), addr.port() ^ 1));
        assert_eq!(n.in_flight.len(), 1);
        n.received(&reply(&second), addr);
        assert!(n.in_flight.is_empty());
        assert_eq!(n.settled.values().copied().collect::<Vec<_>>(), [8]);
        // The same serial again (another publication): not sent again.
        n.enqueue(vec![newer]);
        n.pump();
        assert!(n.in_flight.is_empty() && n.waiting.is_empty());
        assert_eq!(count(&metrics, "sent"), "2");
        assert_eq!(count(&metrics, "acknowledged"), "1");
    }

    #[tokio::test]
    async fn at_most_max_in_flight_wait_for_an_answer() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let base = silent.local_addr().unwrap();
        let notices: Vec<Notice> = (0..10)
            .map(|i| notice(SocketAddr::new(base.ip(), base.port().wrapping_add(i))))
            .collect();
        let metrics = metrics();
        let mut n = Notifier::new(metrics.clone(), 2, Duration::from_millis(5)).await;
        n.enqueue(notices.clone());
        n.pump();
        assert_eq!((n.in_flight.len(), n.waiting.len()), (2, 8));
        // Every one gets its turn and its five tries, two at a time.
        drive(notices, metrics.clone(), 2, Duration::from_millis(1)).await;
        assert_eq!(count(&metrics, "given_up"), "10");
        assert_eq!(count(&metrics, "sent"), (2 + 10 * TRIES).to_string());
    }
}
