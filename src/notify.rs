//! NOTIFY out (RFC 1996): when a zone's serial changes (a refresh, a reload, or the
//! start), tell its `notify` targets, so secondaries transfer the change at once
//! instead of at their next SOA refresh.
//!
//! One task watches the snapshot store; each (zone, target) gets its own sender,
//! which tries up to [`TRIES`] times with doubling timeouts until a matching
//! response arrives. A newer serial replaces a sender still trying an older one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::TSigner;
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
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

/// What one NOTIFY says and where it goes.
#[derive(Debug, Clone)]
struct Notice {
    zone: Name,
    soa: Record,
    serial: u32,
    target: SocketAddr,
    key: Option<TsigKey>,
}

/// Sends NOTIFYs on every serial change until `shutdown`.
pub async fn run(store: Arc<SnapshotStore>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut changes = store.subscribe();
    let mut sent: HashMap<(Name, SocketAddr), (u32, JoinHandle<()>)> = HashMap::new();
    loop {
        let snapshot = store.load_full();
        for notice in notices(&snapshot) {
            let slot = (notice.zone.clone(), notice.target);
            if sent
                .get(&slot)
                .is_some_and(|(serial, _)| *serial == notice.serial)
            {
                continue;
            }
            if let Some((_, older)) = sent.remove(&slot) {
                older.abort();
            }
            let serial = notice.serial;
            let task = tokio::spawn(send(
                notice,
                metrics.clone(),
                shutdown.clone(),
                FIRST_TIMEOUT,
            ));
            sent.insert(slot, (serial, task));
        }
        // Zones or targets that are gone: stop their senders.
        sent.retain(|(zone, target), (_, task)| {
            let kept = snapshot
                .zone(zone)
                .is_some_and(|z| z.transfer().notify.contains(target));
            if !kept {
                task.abort();
            }
            kept
        });
        drop(snapshot);
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
        }
    }
    for (_, (_, task)) in sent {
        task.abort();
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

/// Sends one NOTIFY, retrying until it is acknowledged or [`TRIES`] tries.
async fn send(
    notice: Notice,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    first_timeout: Duration,
) {
    let zone = notice.zone.to_string();
    let bind: SocketAddr = if notice.target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, zone, target = %notice.target, "cannot open a socket for NOTIFY");
            metrics.notify(&zone, NotifyResult::GivenUp);
            return;
        }
    };
    let mut timeout = first_timeout;
    let mut last_rcode = None;
    for attempt in 1..=TRIES {
        let id = (RandomState::new().hash_one((attempt, &zone)) & 0xFFFF) as u16;
        let Some((bytes, check)) = message(&notice, id) else {
            warn!(zone, "cannot encode or sign a NOTIFY");
            break;
        };
        metrics.notify(&zone, NotifyResult::Sent);
        if let Err(error) = socket.send_to(&bytes, notice.target).await {
            debug!(%error, zone, target = %notice.target, attempt, "NOTIFY not sent");
        } else {
            let mut rejected = None;
            let acked = tokio::select! {
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout(timeout, response(&socket, notice.target, id, check.as_ref(), &mut rejected)) => r.is_ok(),
            };
            if acked {
                metrics.notify(&zone, NotifyResult::Acknowledged);
                info!(zone, serial = notice.serial, target = %notice.target, attempt, "NOTIFY acknowledged");
                return;
            }
            if let Some(rcode) = rejected {
                metrics.notify(&zone, NotifyResult::Rejected);
                debug!(zone, target = %notice.target, attempt, rcode = %rcode_name(rcode), "NOTIFY rejected");
                last_rcode = Some(rcode);
            }
        }
        if attempt < TRIES {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        timeout *= 2;
    }
    metrics.notify(&zone, NotifyResult::GivenUp);
    match last_rcode {
        Some(rcode) => {
            warn!(zone, serial = notice.serial, target = %notice.target, tries = TRIES, rcode = %rcode_name(rcode), "NOTIFY rejected by the secondary; giving up (check its primaries and key; it still polls at its SOA refresh)")
        }
        None => {
            warn!(zone, serial = notice.serial, target = %notice.target, tries = TRIES, "NOTIFY not acknowledged; giving up (the secondary still polls at its SOA refresh)")
        }
    }
}

fn rcode_name(rcode: u8) -> String {
    hickory_proto::op::ResponseCode::from_low(rcode).to_string()
}

/// Waits for an acknowledgement of the NOTIFY `id` sent to `target`: a NOTIFY
/// response from it with that id, NOERROR, and signed with `check` when given.
/// A response with another rcode is noted in `rejected` and waited past (a
/// forged one cannot cut the wait short); other packets are ignored.
async fn response(
    socket: &UdpSocket,
    target: SocketAddr,
    id: u16,
    check: Option<&Check>,
    rejected: &mut Option<u8>,
) {
    let mut buf = [0u8; 1024];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            // An ICMP error (port unreachable) surfaces here: wait for the timeout.
            std::future::pending::<()>().await;
            return;
        };
        let message = &buf[..len];
        let (Some(got), Some(flags)) = (u16_at(message, 0), u16_at(message, 2)) else {
            continue;
        };
        let is_notify_response = flags & QR != 0 && (flags >> 11) & 0xF == 4;
        if from != target || !is_notify_response || got != id {
            continue;
        }
        let rcode = (flags & 0xF) as u8;
        if rcode != 0 {
            *rejected = Some(rcode);
            continue;
        }
        if let Some(check) = check
            && check
                .signer
                .verify_message_byte(message, Some(&check.request_mac), true)
                .is_err()
        {
            debug!(%target, "a NOTIFY response without a valid TSIG; ignored");
            continue;
        }
        return;
    }
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

    #[tokio::test]
    async fn a_silent_target_gets_five_tries_then_is_given_up() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let metrics = metrics();
        let target = silent.local_addr().unwrap();
        send(
            notice(target),
            metrics.clone(),
            CancellationToken::new(),
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
        send(
            notice(addr),
            metrics.clone(),
            CancellationToken::new(),
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
        send(
            notice(addr),
            metrics.clone(),
            CancellationToken::new(),
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
        send(
            n,
            metrics.clone(),
            CancellationToken::new(),
            Duration::from_millis(300),
        )
        .await;
        secondary.await.unwrap();
        assert_eq!(count(&metrics, "sent"), "2");
        assert_eq!(count(&metrics, "acknowledged"), "1");
        assert_eq!(count(&metrics, "rejected"), "0");
    }
}
