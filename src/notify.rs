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

/// The NOTIFY message for `notice` with `id`, signed when the zone has a key.
fn message(notice: &Notice, id: u16) -> Option<Vec<u8>> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(notice.zone.clone(), RecordType::SOA));
    m.add_answer(notice.soa.clone());
    if let Some(key) = &notice.key {
        let signer = TSigner::new(
            key.secret.clone(),
            key.algorithm.clone(),
            key.name.clone(),
            crate::tsig::FUDGE,
        )
        .ok()?;
        let (tsig, _) = signer.sign_message(&m, unix_now()).ok()?;
        m.signature = Some(tsig);
    }
    m.to_vec().ok()
}

/// Sends one NOTIFY, retrying until a matching response or [`TRIES`] tries.
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
    for attempt in 1..=TRIES {
        let id = (RandomState::new().hash_one((attempt, &zone)) & 0xFFFF) as u16;
        let Some(bytes) = message(&notice, id) else {
            warn!(zone, "cannot encode or sign a NOTIFY");
            break;
        };
        metrics.notify(&zone, NotifyResult::Sent);
        if let Err(error) = socket.send_to(&bytes, notice.target).await {
            debug!(%error, zone, target = %notice.target, attempt, "NOTIFY not sent");
        } else {
            let acked = tokio::select! {
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout(timeout, response(&socket, notice.target, id)) => r.is_ok(),
            };
            if acked {
                metrics.notify(&zone, NotifyResult::Acknowledged);
                info!(zone, serial = notice.serial, target = %notice.target, attempt, "NOTIFY acknowledged");
                return;
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
    warn!(zone, serial = notice.serial, target = %notice.target, tries = TRIES, "NOTIFY not acknowledged; giving up (the secondary still polls at its SOA refresh)");
}

/// Waits for a NOTIFY response with `id` from `target`; other packets are ignored.
async fn response(socket: &UdpSocket, target: SocketAddr, id: u16) {
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
        if from == target && is_notify_response && got == id {
            return;
        }
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
}
