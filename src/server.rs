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
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::answer::{Transport, answer};
use crate::snapshot::SnapshotStore;

/// Largest UDP datagram we read; anything longer is cut and then fails to parse.
const UDP_RECV_BUFFER: usize = 4096;

/// Serves UDP on `socket` until `shutdown` is cancelled.
pub async fn serve_udp(
    socket: Arc<UdpSocket>,
    store: Arc<SnapshotStore>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors from earlier sends surface here; the socket stays usable.
                    debug!(%error, "udp receive error");
                    continue;
                }
            },
        };
        let Some(response) = answer(&buf[..len], &store.load(), Transport::Udp) else {
            continue;
        };
        if let Err(error) = socket.send_to(&response.bytes, peer).await {
            debug!(%error, %peer, "udp send failed");
        }
    }
}

/// TCP settings.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Accepts TCP connections on `listener` until `shutdown` is cancelled; each
/// connection then finishes the query it is on and closes.
pub async fn serve_tcp(
    listener: TcpListener,
    store: Arc<SnapshotStore>,
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
            drop(stream);
            continue;
        };
        let store = store.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(error) =
                serve_connection(stream, &store, limits.idle_timeout, &shutdown).await
            {
                debug!(%error, %peer, "tcp connection ended with an error");
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection(
    mut stream: TcpStream,
    store: &SnapshotStore,
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
        let Some(response) = answer(&query, &store.load(), Transport::Tcp) else {
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
