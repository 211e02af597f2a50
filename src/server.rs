//! UDP and TCP transports: thin shells that move bytes between sockets and
//! [`crate::answer::answer`].
//!
//! Sockets arrive already bound (see [`crate::app`]); a cancellation token stops
//! them. The shells own only transport concerns: TCP framing (RFC 1035 4.2.2),
//! pipelining (queries on one connection are answered in order), the idle timeout
//! and the connection cap.
//!
//! Why not hickory-server's `Server`: in 0.26 its `ResponseHandler` only accepts a
//! `MessageResponse` that it encodes and truncates itself (by the response's EDNS
//! size alone, dropping records rather than keeping OPT with TC=1), it answers
//! malformed packets before the handler sees them, it spawns a task per UDP packet,
//! and it has no TCP connection cap. Each of those is a required behaviour here, so
//! the core produces the exact bytes and these shells send them; hickory-proto does
//! the wire format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::answer::{Response, Transport, answer};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;

/// Largest UDP datagram we read; anything longer is cut and then fails to parse.
const UDP_RECV_BUFFER: usize = 4096;

/// Serves UDP on `socket` until `shutdown` is cancelled.
/// What every transport shares: the snapshot, metrics and the query log.
#[derive(Debug)]
pub struct ServeContext {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    /// Log one query in every this many (0: off). A reload may change it.
    pub query_log_every: AtomicU64,
    seen: AtomicU64,
}

impl ServeContext {
    pub fn new(store: Arc<SnapshotStore>, metrics: Arc<Metrics>, query_log_every: u64) -> Self {
        Self {
            store,
            metrics,
            query_log_every: AtomicU64::new(query_log_every),
            seen: AtomicU64::new(0),
        }
    }

    /// Answers one message, and counts and logs it.
    fn handle(&self, query: &[u8], transport: Transport, peer: SocketAddr) -> Option<Response> {
        let started = Instant::now();
        let response = answer(query, &self.store.load(), transport);
        let elapsed = started.elapsed();
        self.metrics.observe(transport, response.as_ref(), elapsed);
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
                rcode = %r.rcode,
                truncated = r.truncated,
                latency_us = elapsed.as_micros() as u64,
                "query"
            );
        }
        response
    }
}

/// Serves UDP on `socket` until `shutdown` is cancelled, then answers what is
/// already queued on the socket, and returns.
pub async fn serve_udp(socket: Arc<UdpSocket>, cx: Arc<ServeContext>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors from earlier sends surface here; the socket stays usable.
                    debug!(%error, "udp receive error");
                    continue;
                }
            },
        };
        if let Some(response) = cx.handle(&buf[..len], Transport::Udp, peer)
            && let Err(error) = socket.send_to(&response.bytes, peer).await
        {
            debug!(%error, %peer, "udp send failed");
        }
    }
    // Queries that arrived before the stop still get their answers.
    while let Ok((len, peer)) = socket.try_recv_from(&mut buf) {
        if let Some(response) = cx.handle(&buf[..len], Transport::Udp, peer) {
            let _ = socket.send_to(&response.bytes, peer).await;
        }
    }
}

/// TCP settings.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Accepts TCP connections on `listener` until `shutdown` is cancelled; then stops
/// accepting, and each open connection finishes the answer it is on and closes.
pub async fn serve_tcp(
    listener: TcpListener,
    cx: Arc<ServeContext>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(%error, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "tcp connection cap reached; closing new connection");
            cx.metrics.tcp_rejected();
            drop(stream);
            continue;
        };
        let cx = cx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            cx.metrics.tcp_opened();
            if let Err(error) =
                serve_connection(stream, peer, &cx, limits.idle_timeout, &shutdown).await
            {
                debug!(%error, %peer, "tcp connection ended with an error");
            }
            cx.metrics.tcp_closed();
            drop(permit);
        });
    }
    drop(listener); // refuse new connections while the open ones finish
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    cx: &ServeContext,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
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
        let Some(response) = cx.handle(&query, Transport::Tcp, peer) else {
            continue;
        };
        let mut framed = Vec::with_capacity(response.bytes.len() + 2);
        framed.extend_from_slice(&(response.bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response.bytes);
        stream.write_all(&framed).await?;
    }
}

/// Binds a UDP socket; IPv6 sockets are IPv6-only so `0.0.0.0:53` and `[::]:53` coexist.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Binds a TCP listener (SO_REUSEADDR, IPv6-only for IPv6 addresses).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
