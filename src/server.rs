//! UDP, TCP and TLS transports: thin shells that move bytes between sockets and the
//! answering code ([`crate::fast`] first for UDP, else [`crate::answer::answer`]).
//!
//! Sockets arrive already bound (see [`crate::app`]); a cancellation token stops
//! them. The shells own only transport concerns: UDP worker threads on SO_REUSEPORT
//! sockets with recvmmsg/sendmmsg batches; TCP framing (RFC 1035 4.2.2), pipelining
//! (queries on one connection are answered in order), the idle timeout and the
//! connection cap; DNS over TLS (tokio-rustls) is the same connection code over a
//! TLS stream, after a handshake bounded by the idle timeout, in the same slots.
//!
//! Why not hickory-server's `Server`: in 0.26 its `ResponseHandler` only accepts a
//! `MessageResponse` that it encodes and truncates itself (by the response's EDNS
//! size alone, dropping records rather than keeping OPT with TC=1), it answers
//! malformed packets before the handler sees them, it spawns a task per UDP packet,
//! and it has no TCP connection cap. Each of those is a required behaviour here, so
//! the core produces the exact bytes and these shells send them; hickory-proto does
//! the wire format.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use hickory_proto::rr::RecordType;

use crate::answer::{Client, Response, Transport, respond};
use crate::fast::{self, Fast};
use crate::logging::Throttle;
use crate::metrics::TransferOutcome;
use crate::metrics::{Metrics, Outcome};
use crate::snapshot::SnapshotStore;
use crate::snapshot::unix_now;
use crate::transfer::{self, Plan};

/// Largest UDP datagram we read; anything longer is cut and then fails to parse.
const UDP_RECV_BUFFER: usize = 4096;

/// What every transport shares: the snapshot, metrics and the query log.
#[derive(Debug)]
pub struct ServeContext {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    /// Log one query in every this many (0: off). A reload may change it.
    pub query_log_every: AtomicU64,
    seen: AtomicU64,
    /// One permit per zone transfer in progress (`max-transfers`).
    transfers: Arc<Semaphore>,
    /// Where a NOTIFY taken from the primary goes (`[follow]`).
    follower: arc_swap::ArcSwapOption<tokio::sync::mpsc::Sender<hickory_proto::rr::Name>>,
}

impl ServeContext {
    pub fn new(store: Arc<SnapshotStore>, metrics: Arc<Metrics>, query_log_every: u64) -> Self {
        Self {
            store,
            metrics,
            query_log_every: AtomicU64::new(query_log_every),
            seen: AtomicU64::new(0),
            transfers: Arc::new(Semaphore::new(16)),
            follower: Default::default(),
        }
    }

    /// Where NOTIFYs from the primary go from now on (`None`: not following).
    pub fn set_follower(&self, to: Option<tokio::sync::mpsc::Sender<hickory_proto::rr::Name>>) {
        self.follower.store(to.map(Arc::new));
    }

    /// At most `n` zone transfers at once.
    pub fn with_max_transfers(mut self, n: usize) -> Self {
        self.transfers = Arc::new(Semaphore::new(n));
        self
    }

    /// Answers one message, and counts and logs it.
    fn handle(&self, query: &[u8], transport: Transport, peer: SocketAddr) -> Option<Response> {
        let started = Instant::now();
        let client = Client {
            source: peer.ip(),
            now: unix_now(),
        };
        let response = respond(query, &self.store.load(), transport, &client);
        let elapsed = started.elapsed();
        if let Some(zone) = response.as_ref().and_then(|r| r.notified.clone())
            && let Some(follower) = self.follower.load().as_ref()
        {
            // Full: a check of every zone is pending already.
            let _ = follower.try_send(zone);
        }
        self.metrics.observe(transport, response.as_ref(), elapsed);
        if let Some(why) = response.as_ref().and_then(|r| r.refusal) {
            self.metrics.refused(why);
        }
        let every = self.query_log_every.load(Ordering::Relaxed);
        if every > 0
            && self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
            && let Some(r) = &response
        {
            let (name, qtype) = r
                .question
                .as_ref()
                .map_or((String::new(), String::new()), |q| {
                    (q.name().to_string(), q.query_type().to_string())
                });
            info!(
                target: "privatelink_dns::query",
                client = %peer,
                transport = ?transport,
                name,
                qtype,
                rcode = crate::metrics::rcode_label(r.rcode),
                truncated = r.truncated,
                latency_us = elapsed.as_micros() as u64,
                "query"
            );
        }
        response
    }

    /// Answers one UDP packet into `out`: the fast path when it applies (and the
    /// query is not being logged), else the general core. Counts and logs it.
    fn handle_udp(&self, query: &[u8], peer: SocketAddr, out: &mut [u8]) -> Option<usize> {
        let started = Instant::now();
        let every = self.query_log_every.load(Ordering::Relaxed);
        let logged = every > 0 && self.seen.load(Ordering::Relaxed).is_multiple_of(every);
        let snapshot = self.store.load();
        // allow-query holds on every path: a source it refuses goes to the core.
        let allowed = snapshot
            .settings
            .allow_query
            .as_ref()
            .is_none_or(|acl| acl.allows(peer.ip()));
        if !logged
            && allowed
            && let Fast::Answered { len, rcode, qtype } = fast::answer_udp(query, &snapshot, out)
        {
            {
                let outcome = Outcome {
                    qtype: Some(RecordType::from(qtype)),
                    rcode,
                    truncated: false,
                };
                self.metrics
                    .observe_outcome(Transport::Udp, Some(outcome), started.elapsed());
                if every > 0 {
                    self.seen.fetch_add(1, Ordering::Relaxed);
                }
                return Some(len);
            }
        }
        drop(snapshot);
        let response = self.handle(query, Transport::Udp, peer)?;
        let len = response.bytes.len();
        let Some(out) = out.get_mut(..len) else {
            // The core keeps UDP answers within the payload size, and the buffer holds
            // the largest one: cut, this would go out as a malformed packet.
            static TOO_LARGE: Throttle = Throttle::new();
            if let Some(not_logged) = TOO_LARGE.allow() {
                error!(
                    len,
                    buffer = out.len(),
                    not_logged,
                    "a UDP response is larger than the send buffer; not sent (a bug)"
                );
            }
            return None;
        };
        out.copy_from_slice(&response.bytes);
        Some(len)
    }
}

/// Packets per recvmmsg/sendmmsg call.
const BATCH: usize = 32;

/// Serves UDP on `socket` from a dedicated thread until `shutdown` is cancelled, then
/// answers what is already queued on the socket, for `drain_for` at most (a flood
/// never empties the queue), and returns. Several workers share one address through
/// SO_REUSEPORT sockets; each receives and sends in batches (recvmmsg/sendmmsg) and
/// allocates nothing per query on the fast path.
pub fn serve_udp_worker(
    socket: std::net::UdpSocket,
    cx: Arc<ServeContext>,
    shutdown: CancellationToken,
    drain_for: Duration,
) {
    // The receive timeout is how often a worker looks at the shutdown token.
    if let Err(error) = socket.set_read_timeout(Some(Duration::from_millis(100))) {
        warn!(%error, "cannot set the UDP receive timeout");
    }
    let mut batch = Batch::new();
    let mut draining: Option<Instant> = None;
    loop {
        let flags = if draining.is_some() {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        let received = batch.receive(&socket, flags);
        match received {
            Ok(0) => {}
            Ok(n) => batch.answer_and_send(&socket, n, &cx),
            Err(e) if draining.is_some() && e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(error) => {
                debug!(%error, "udp receive error");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match draining {
            // Queries that arrived before the stop still get their answers.
            None if shutdown.is_cancelled() => draining = Some(Instant::now() + drain_for),
            Some(deadline) if Instant::now() >= deadline => {
                debug!("udp drain cut at the shutdown deadline");
                return;
            }
            _ => {}
        }
    }
}

/// Buffers and headers for one recvmmsg/sendmmsg batch, reused for every batch.
struct Batch {
    rx: Box<[[u8; UDP_RECV_BUFFER]; BATCH]>,
    tx: Box<[[u8; UDP_RECV_BUFFER]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    tx_len: [usize; BATCH],
    tx_from: [usize; BATCH],
}

impl Batch {
    fn new() -> Self {
        Self {
            rx: Box::new([[0; UDP_RECV_BUFFER]; BATCH]),
            tx: Box::new([[0; UDP_RECV_BUFFER]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            tx_len: [0; BATCH],
            tx_from: [0; BATCH],
        }
    }

    /// recvmmsg into the receive buffers; returns how many packets arrived.
    fn receive(
        &mut self,
        socket: &std::net::UdpSocket,
        flags: libc::c_int,
    ) -> std::io::Result<usize> {
        // SAFETY: all-zero iovec and mmsghdr are valid; every pointer set below points
        // into `self`, which outlives the call, with the lengths of those buffers.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.rx[i].as_mut_ptr().cast();
            iov[i].iov_len = UDP_RECV_BUFFER;
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        // SAFETY: `msgs` holds BATCH valid headers (see above).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            self.tx_len[i] = msg.msg_len as usize; // reused below as the received length
        }
        Ok(n)
    }

    /// Answers the `n` received packets and sends the answers with sendmmsg.
    fn answer_and_send(&mut self, socket: &std::net::UdpSocket, n: usize, cx: &ServeContext) {
        let mut out = 0;
        for i in 0..n {
            let len = self.tx_len[i].min(UDP_RECV_BUFFER);
            let Some(peer) = sockaddr_to_std(&self.addrs[i]) else {
                continue;
            };
            if let Some(answer_len) = cx.handle_udp(&self.rx[i][..len], peer, &mut self.tx[out]) {
                self.tx_from[out] = i;
                self.tx_len[out] = answer_len;
                out += 1;
            }
        }
        // SAFETY: as in `receive`: headers point into `self` with matching lengths.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for j in 0..out {
            iov[j].iov_base = self.tx[j].as_mut_ptr().cast();
            iov[j].iov_len = self.tx_len[j];
            let from = self.tx_from[j];
            msgs[j].msg_hdr.msg_name =
                (&mut self.addrs[from] as *mut libc::sockaddr_storage).cast();
            msgs[j].msg_hdr.msg_namelen = sockaddr_len(&self.addrs[from]);
            msgs[j].msg_hdr.msg_iov = &mut iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        let mut sent = 0;
        while sent < out {
            // SAFETY: `msgs[sent..out]` are valid headers.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[sent..].as_mut_ptr(),
                    (out - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                debug!(%error, "udp send failed; skipping one answer");
                sent += 1; // skip the one that failed (e.g. an unreachable peer)
                continue;
            }
            sent += r as usize;
        }
    }
}

fn sockaddr_len(addr: &libc::sockaddr_storage) -> libc::socklen_t {
    match i32::from(addr.ss_family) {
        libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        _ => std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    }
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// TCP settings.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    /// The connection slots, shared by every DNS-over-TCP and DNS-over-TLS listener:
    /// one file-descriptor budget for both.
    pub slots: Arc<Semaphore>,
    /// What each source holds, over the same listeners (see [`Sources`]).
    pub sources: Arc<Sources>,
}

impl TcpLimits {
    pub fn new(idle_timeout: Duration, max_connections: usize, max_per_source: usize) -> Self {
        Self {
            idle_timeout,
            slots: Arc::new(Semaphore::new(max_connections)),
            sources: Sources::new(max_per_source),
        }
    }
}

/// Connections held by each source, so that one source (idle clients, a slow
/// loris) cannot take every slot of a listener: DNS over TCP (and with it TC
/// fallback and transfers), or the HTTP port the health probes use. A source is an
/// IPv4 address or an IPv6 /64 (what one host usually has to itself).
#[derive(Debug)]
pub struct Sources {
    max: usize,
    held: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`Sources`], given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    sources: Arc<Sources>,
    key: IpAddr,
}

impl Sources {
    /// At most `max` connections (at least 1) from one source.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            held: std::sync::Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, unless its source holds `max` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            key,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.sources.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The source an address belongs to: itself (IPv4, an IPv4-mapped IPv6 address
/// as IPv4), or its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Accepts TCP connections on `listener` until `shutdown` is cancelled; then stops
/// accepting, and each open connection finishes the answer it is on and closes.
pub async fn serve_tcp(
    listener: TcpListener,
    cx: Arc<ServeContext>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, peer)) = accept(&listener, &shutdown, "tcp").await {
        let Some(mine) = limits.sources.take(peer.ip()) else {
            cx.metrics.tcp_rejected_source();
            drop(stream);
            continue;
        };
        let Ok(permit) = limits.slots.clone().try_acquire_owned() else {
            debug!(%peer, "tcp connection cap reached; closing new connection");
            cx.metrics.tcp_rejected();
            drop(stream);
            continue;
        };
        let cx = cx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            cx.metrics.tcp_opened();
            let _ = stream.set_nodelay(true);
            if let Err(error) = serve_connection(
                stream,
                peer,
                &cx,
                Transport::Tcp,
                limits.idle_timeout,
                &shutdown,
            )
            .await
            {
                debug!(%error, %peer, "tcp connection ended with an error");
            }
            cx.metrics.tcp_closed();
            drop((permit, mine));
        });
    }
    drop(listener); // refuse new connections while the open ones finish
    tracker.close();
    tracker.wait().await;
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A
/// failed accept (EMFILE and friends) is logged and retried after a short pause
/// instead of spinning.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(r) => return Some(r),
                Err(error) => {
                    static ACCEPT_FAILED: Throttle = Throttle::new();
                    if let Some(not_logged) = ACCEPT_FAILED.allow() {
                        warn!(%error, listener = what, not_logged, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Accepts DNS-over-TLS connections on `listener` (RFC 7858; zone transfers too, RFC
/// 9103) until `shutdown`: the TCP listeners' slots and per-source shares, a
/// handshake that must finish within the idle timeout (a client that stalls it is
/// cut, and a flood of them holds only slots), then the same framing, pipelining,
/// timeouts and answers as DNS over TCP. Each handshake takes the certificate
/// current when it starts.
pub async fn serve_tls(
    listener: TcpListener,
    cx: Arc<ServeContext>,
    limits: TcpLimits,
    certificates: Arc<crate::tls::Certificates>,
    shutdown: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    while let Some((stream, peer)) = accept(&listener, &shutdown, "tls").await {
        let Some(mine) = limits.sources.take(peer.ip()) else {
            cx.metrics.tcp_rejected_source();
            drop(stream);
            continue;
        };
        let Ok(permit) = limits.slots.clone().try_acquire_owned() else {
            debug!(%peer, "tcp connection cap reached; closing new tls connection");
            cx.metrics.tcp_rejected();
            drop(stream);
            continue;
        };
        let cx = cx.clone();
        let shutdown = shutdown.clone();
        let acceptor = certificates.acceptor();
        let idle = limits.idle_timeout;
        tracker.spawn(async move {
            cx.metrics.tcp_opened();
            let _ = stream.set_nodelay(true);
            let handshake = tokio::select! {
                biased;
                () = shutdown.cancelled() => None,
                r = tokio::time::timeout(idle, acceptor.accept(stream)) => Some(r),
            };
            match handshake {
                Some(Ok(Ok(tls))) => {
                    if let Err(error) =
                        serve_connection(tls, peer, &cx, Transport::Tls, idle, &shutdown).await
                    {
                        debug!(%error, %peer, "tls connection ended with an error");
                    }
                }
                Some(Ok(Err(error))) => {
                    cx.metrics.tls_handshake_failed();
                    debug!(%error, %peer, "tls handshake failed");
                }
                Some(Err(_elapsed)) => {
                    cx.metrics.tls_handshake_failed();
                    debug!(%peer, "tls handshake not finished within the idle timeout");
                }
                None => {}
            }
            cx.metrics.tcp_closed();
            drop((permit, mine));
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// A stream DNS messages go over: TCP, or TLS over TCP; and how much of what was
/// written the peer has not yet acknowledged, for the transfer timeout (see [`send`]).
pub(crate) trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn serve_connection<S: Conn>(
    mut stream: S,
    peer: SocketAddr,
    cx: &ServeContext,
    transport: Transport,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let mut query = Vec::with_capacity(512);
    loop {
        // Wait for the next length prefix: idle timeout or shutdown end the connection.
        let len = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Err(_elapsed) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
        };
        query.resize(usize::from(len), 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut query)).await {
            Err(_elapsed) => return Ok(()),
            Ok(r) => r?,
        };
        let Some(response) = cx.handle(&query, transport, peer) else {
            continue;
        };
        if let Some(plan) = response.transfer {
            if !serve_transfer(&mut stream, peer, cx, &plan, idle, shutdown).await? {
                return Ok(());
            }
            continue;
        }
        if !send(&mut stream, peer, &response.bytes, idle, shutdown).await? {
            return Ok(());
        }
    }
}

/// Writes one length-prefixed message. `Ok(false)`: the connection is to end (the
/// peer does not read, or shutdown).
async fn send<S: Conn>(
    stream: &mut S,
    peer: SocketAddr,
    message: &[u8],
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<bool> {
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    // A peer that does not read (its window closed, our send buffer full) must not
    // hold its slot: each write gets the idle timeout, and shutdown ends it. The
    // clock measures progress, not the message: a write that moves bytes restarts
    // it, so a slow but steady reader (a secondary on a thin link) gets every message
    // of a large transfer, and one that stops reading is cut after `idle`.
    // Progress is also the kernel's send queue draining: with a large send buffer
    // (autotuned to megabytes), a writer is woken only once much of it has drained,
    // which takes longer than `idle` for a peer reading at 128 KiB/s.
    let mut rest = &framed[..];
    let mut queued = unacknowledged(stream.tcp());
    while !rest.is_empty() {
        let r = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(false),
            r = tokio::time::timeout(idle, stream.write(rest)) => r,
        };
        match r {
            Err(_elapsed) => {
                let now = unacknowledged(stream.tcp());
                if let (Some(before), Some(after)) = (queued, now)
                    && after < before
                {
                    queued = now; // the peer reads, slowly: wait on
                    continue;
                }
                debug!(%peer, "tcp peer does not read its answers; closing");
                return Ok(false);
            }
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => {
                rest = &rest[n..];
                queued = unacknowledged(stream.tcp());
            }
            Ok(Err(e)) => return Err(e),
        }
    }
    // TLS holds records until flushed (a no-op on TCP).
    match tokio::time::timeout(idle, stream.flush()).await {
        Err(_elapsed) => Ok(false),
        Ok(r) => r.map(|()| true),
    }
}

/// Bytes in `stream`'s send queue that the peer has not acknowledged (TIOCOUTQ);
/// `None` if the kernel does not say.
fn unacknowledged(stream: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int through the pointer, which is valid for the
    // call; the descriptor is open while `stream` is borrowed.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(usize::try_from(n).unwrap_or(0))
}

/// Streams a zone transfer, message by message, from the snapshot current when it
/// starts (a refresh during the transfer does not mix versions). At most
/// `max-transfers` at once; a peer that stops reading is cut after the idle timeout.
/// One log line per transfer.
async fn serve_transfer<S: Conn>(
    stream: &mut S,
    peer: SocketAddr,
    cx: &ServeContext,
    plan: &Plan,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<bool> {
    let started = Instant::now();
    let Ok(_permit) = cx.transfers.clone().try_acquire_owned() else {
        cx.metrics.transfer(plan.qtype, TransferOutcome::Busy);
        static BUSY: Throttle = Throttle::new();
        if let Some(not_logged) = BUSY.allow() {
            warn!(client = %peer, zone = %plan.origin, not_logged, "transfer refused: max-transfers reached");
        }
        let Some(refused) = transfer::refused(plan) else {
            return Ok(false);
        };
        return send(stream, peer, &refused, idle, shutdown).await;
    };
    let snapshot = cx.store.load_full();
    let Some(zone) = snapshot.zone(&plan.origin) else {
        // The zone went between the decision and now.
        let Some(refused) = transfer::refused(plan) else {
            return Ok(false);
        };
        return send(stream, peer, &refused, idle, shutdown).await;
    };
    let now = unix_now();
    let deltas = plan
        .client_serial
        .and_then(|from| snapshot.ixfr_deltas(zone, from));
    let incremental = deltas.is_some();
    let mut messages = match deltas {
        Some(deltas) => transfer::Messages::ixfr(zone, plan, now, deltas),
        None => transfer::Messages::new(zone, plan, now),
    };
    let (mut bytes, mut sent) = (0usize, 0usize);
    let mut complete = true;
    for message in messages.by_ref() {
        bytes += message.len();
        sent += 1;
        match send(stream, peer, &message, idle, shutdown).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if let Some(reason) = messages.failure {
        complete = false;
        error!(client = %peer, zone = %plan.origin, r#type = %plan.qtype, reason, messages = sent, "transfer aborted: the secondary gets no partial zone");
    }
    let outcome = if complete {
        TransferOutcome::Complete
    } else {
        TransferOutcome::Failed
    };
    cx.metrics.transfer(plan.qtype, outcome);
    info!(
        target: "privatelink_dns::transfer",
        client = %peer,
        zone = %plan.origin,
        r#type = %plan.qtype,
        serial = zone.serial(),
        client_serial = plan.client_serial,
        incremental,
        records = messages.records,
        messages = sent,
        bytes,
        millis = started.elapsed().as_millis() as u64,
        key = plan.signed.as_ref().map(|s| s.key.to_string()),
        complete,
        "transfer"
    );
    Ok(complete)
}

/// A socket of `addr`'s family; IPv6-only for an IPv6 address.
fn socket_for(
    addr: SocketAddr,
    ty: socket2::Type,
    protocol: socket2::Protocol,
) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds a UDP socket; IPv6 sockets are IPv6-only so `0.0.0.0:53` and `[::]:53`
/// coexist; SO_REUSEPORT so that several workers share the address.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    // Room for bursts: the kernel drops what does not fit while a worker is busy.
    // (Capped by net.core.rmem_max / wmem_max; a smaller buffer is not an error.)
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(1 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds a TCP listener (SO_REUSEADDR, IPv6-only for IPv6 addresses).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(addr, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::refresh::RefreshStats;

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let sources = Sources::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = sources.take(ip("192.0.2.1")).unwrap();
        let b = sources.take(ip("::ffff:192.0.2.1")).unwrap(); // the same host
        assert!(sources.take(ip("192.0.2.1")).is_none());
        assert!(sources.take(ip("192.0.2.2")).is_some());
        let _c = sources.take(ip("2001:db8::1")).unwrap();
        let _d = sources.take(ip("2001:db8::ffff:1")).unwrap();
        assert!(sources.take(ip("2001:db8::2")).is_none(), "same /64");
        assert!(sources.take(ip("2001:db8:0:1::1")).is_some(), "another /64");
        drop(a);
        assert!(sources.take(ip("192.0.2.1")).is_some(), "a slot given back");
        // Entries of sources holding nothing are removed: the map stays small.
        drop(b);
        assert!(!sources.held.lock().unwrap().contains_key(&ip("192.0.2.1")));
    }

    /// A server context over the demo config.
    fn demo_context() -> ServeContext {
        let config = Config::demo();
        let store = Arc::new(SnapshotStore::new(crate::app::build_snapshot(
            &config, None,
        )));
        let metrics = Arc::new(Metrics::new(
            Arc::new(RefreshStats::default()),
            store.clone(),
        ));
        ServeContext::new(store, metrics, 0)
    }

    #[test]
    fn a_response_larger_than_the_buffer_is_not_cut() {
        let serve = demo_context();
        let mut query = hickory_proto::op::Message::query();
        query.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("internal.example.com.").unwrap(),
            RecordType::A,
        ));
        let bytes = query.to_vec().unwrap();
        let peer = SocketAddr::from(([127, 0, 0, 1], 5353));
        let mut whole = [0u8; 512];
        let len = serve
            .handle_udp(&bytes, peer, &mut whole)
            .expect("answered");
        assert!(len > 40);
        // Too small a buffer: nothing is sent rather than a cut, malformed packet.
        let mut small = [0u8; 40];
        assert_eq!(serve.handle_udp(&bytes, peer, &mut small), None);
    }

    /// The drain, without a race: N queries queued on the socket, the worker's token
    /// cancelled before it starts, then the worker runs: every query is answered (a
    /// worker that returned on cancellation would answer one batch at most).
    #[test]
    fn a_cancelled_worker_answers_every_query_already_queued() {
        let cx = Arc::new(demo_context());
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        const N: u16 = 3 * BATCH as u16 + 5;
        for id in 1..=N {
            let mut q = hickory_proto::op::Message::query();
            q.metadata.id = id;
            q.add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii("internal.example.com.").unwrap(),
                RecordType::A,
            ));
            client
                .send_to(&q.to_vec().unwrap(), server.local_addr().unwrap())
                .unwrap();
        }
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        // Returns once the queue is empty (or after the deadline, which is far).
        serve_udp_worker(server, cx, shutdown, Duration::from_secs(30));
        client.set_nonblocking(true).unwrap();
        let mut answered = std::collections::BTreeSet::new();
        let mut buf = [0u8; 1500];
        while let Ok(n) = client.recv(&mut buf) {
            assert!(n >= 12);
            answered.insert(u16::from_be_bytes([buf[0], buf[1]]));
        }
        let lost: Vec<u16> = (1..=N).filter(|i| !answered.contains(i)).collect();
        assert!(lost.is_empty(), "unanswered: {lost:?}");
    }

    /// A server context over a zone of `names` names that 127.0.0.1 may transfer, and
    /// the plan of an AXFR of it.
    fn transfer_rig(names: usize, max_transfers: usize) -> (ServeContext, Plan) {
        let mut text = String::from(
            "[transfer]\nallow = [\"127.0.0.1/32\"]\n[[zone]]\norigin = \"big.test\"\n",
        );
        for i in 0..names {
            text.push_str(&format!(
                "[[zone.record]]\nname = \"host-{i}\"\na = [\"10.{}.{}.1\", \"10.{}.{}.2\"]\n",
                i / 256,
                i % 256,
                i / 256,
                i % 256
            ));
        }
        let config = Config::from_toml(&text, "t").unwrap();
        let store = Arc::new(SnapshotStore::new(crate::app::build_snapshot(
            &config, None,
        )));
        let metrics = Arc::new(Metrics::new(
            Arc::new(RefreshStats::default()),
            store.clone(),
        ));
        let serve = ServeContext::new(store, metrics, 0).with_max_transfers(max_transfers);
        let mut query = hickory_proto::op::Message::query();
        query.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("big.test.").unwrap(),
            RecordType::AXFR,
        ));
        let peer = SocketAddr::from(([127, 0, 0, 1], 5353));
        let response = serve
            .handle(&query.to_vec().unwrap(), Transport::Tcp, peer)
            .unwrap();
        (serve, response.transfer.expect("a transfer"))
    }

    /// A connected pair: (our end, with a small send buffer; the peer's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(4096)
            .unwrap();
        (ours, client)
    }

    #[tokio::test]
    async fn a_transfer_to_a_client_that_never_reads_is_cut_after_the_idle_timeout() {
        let (serve, plan) = transfer_rig(3000, 4);
        let (mut ours, _never_reads) = pair().await;
        let peer = ours.peer_addr().unwrap();
        let started = Instant::now();
        let idle = Duration::from_millis(300);
        let stop = CancellationToken::new();
        let done = tokio::time::timeout(
            Duration::from_secs(10),
            serve_transfer(&mut ours, peer, &serve, &plan, idle, &stop),
        )
        .await
        .expect("the transfer gives up instead of waiting for ever");
        assert!(!done.unwrap(), "the connection is to be closed");
        assert!(started.elapsed() >= idle);
        let metrics = serve.metrics.render();
        assert!(
            metrics.contains("privatelink_dns_transfers_total{type=\"AXFR\",outcome=\"failed\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            serve.transfers.available_permits(),
            4,
            "the permit is given back"
        );
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_gets_the_whole_transfer() {
        // 20 KiB/s against 16 KiB messages: each message takes about 0.8 s to go
        // out, longer than `idle`; every write moves bytes well within it.
        let (serve, plan) = transfer_rig(1500, 4);
        let (mut ours, mut client) = pair().await;
        let peer = ours.peer_addr().unwrap();
        let idle = Duration::from_millis(500);
        let stop = CancellationToken::new();
        let reader = tokio::spawn(async move {
            let mut total = 0usize;
            let mut buf = [0u8; 512];
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        let done = serve_transfer(&mut ours, peer, &serve, &plan, idle, &stop).await;
        assert!(done.unwrap(), "the whole transfer was sent");
        drop(ours);
        let total = reader.await.unwrap();
        assert!(total > 2 * crate::transfer::MESSAGE_TARGET, "{total} bytes");
        let metrics = serve.metrics.render();
        assert!(
            metrics
                .contains("privatelink_dns_transfers_total{type=\"AXFR\",outcome=\"complete\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn transfers_beyond_max_transfers_are_refused() {
        let (serve, plan) = transfer_rig(10, 1);
        let _held = serve.transfers.clone().try_acquire_owned().unwrap();
        let (mut ours, mut client) = pair().await;
        let peer = ours.peer_addr().unwrap();
        let stop = CancellationToken::new();
        let idle = Duration::from_secs(1);
        assert!(
            serve_transfer(&mut ours, peer, &serve, &plan, idle, &stop)
                .await
                .unwrap()
        );
        let len = client.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        client.read_exact(&mut buf).await.unwrap();
        let m = hickory_proto::op::Message::from_vec(&buf).unwrap();
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::Refused
        );
        assert!(m.answers.is_empty());
        let metrics = serve.metrics.render();
        assert!(
            metrics.contains("privatelink_dns_transfers_total{type=\"AXFR\",outcome=\"busy\"} 1"),
            "{metrics}"
        );
    }
}
