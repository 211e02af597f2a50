//! The whole app on port 0, queried over real UDP and TCP sockets with the
//! hickory client (and raw sockets where the client would hide the behaviour).

mod support;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0", "[::1]:0"]
tcp-idle-timeout = "300ms"
max-tcp-connections = 2
max-tcp-connections-per-source = 2

[[zone]]
origin = "internal.example.com"
ttl = 60

[[zone.record]]
name = "@"
a = ["192.0.2.1", "192.0.2.2"]

[[zone.record]]
name = "v4"
a = ["192.0.2.3"]

[[zone.record]]
name = "*.wild"
a = ["192.0.2.4"]
"#;

async fn start(text: &str) -> Server {
    let config = Config::from_toml(text, "test.toml").unwrap();
    Server::start(&config).await.unwrap()
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

#[tokio::test]
async fn answers_over_udp_and_tcp_on_ipv4_and_ipv6() {
    let server = start(CONFIG).await;
    assert_eq!(server.udp_addrs().len(), 2);
    for (udp, tcp) in server.udp_addrs().iter().zip(server.tcp_addrs()) {
        assert_eq!(udp, tcp, "port 0 picks one port for both");
        for mut client in [udp_client(*udp).await, tcp_client(*tcp).await] {
            let r = client
                .query(name("internal.example.com."), DNSClass::IN, RecordType::A)
                .await
                .unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert!(r.metadata.authoritative);
            assert_eq!(support::addresses(&r), ["192.0.2.1", "192.0.2.2"]);

            let r = client
                .query(
                    name("v4.internal.example.com."),
                    DNSClass::IN,
                    RecordType::AAAA,
                )
                .await
                .unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "NODATA");
            assert!(r.answers.is_empty());
            assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

            let r = client
                .query(
                    name("x.wild.internal.example.com."),
                    DNSClass::IN,
                    RecordType::A,
                )
                .await
                .unwrap();
            assert_eq!(support::addresses(&r), ["192.0.2.4"]);

            let r = client
                .query(
                    name("nope.internal.example.com."),
                    DNSClass::IN,
                    RecordType::A,
                )
                .await
                .unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

            let r = client
                .query(name("example.org."), DNSClass::IN, RecordType::A)
                .await
                .unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::Refused);
            assert!(!r.metadata.authoritative);
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn published_snapshot_changes_answers() {
    let server = start(CONFIG).await;
    let mut client = udp_client(server.udp_addrs()[0]).await;
    let changed = CONFIG.replace("192.0.2.3", "192.0.2.33");
    let config = Config::from_toml(&changed, "changed.toml").unwrap();
    server.reload(config).await;
    let r = client
        .query(
            name("v4.internal.example.com."),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    assert_eq!(support::addresses(&r), ["192.0.2.33"]);
    server.shutdown().await;
}

fn query_bytes(id: u16, qname: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(name(qname), RecordType::A));
    m.to_vec().unwrap()
}

async fn read_framed(stream: &mut TcpStream) -> Option<Message> {
    let len = stream.read_u16().await.ok()?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Message::from_vec(&buf).unwrap())
}

#[tokio::test]
async fn tcp_pipelining_answers_every_query_in_order() {
    let server = start(CONFIG).await;
    let mut stream = TcpStream::connect(server.tcp_addrs()[0]).await.unwrap();
    let mut burst = Vec::new();
    for id in 1..=20u16 {
        let q = query_bytes(id, "internal.example.com.");
        burst.extend_from_slice(&(q.len() as u16).to_be_bytes());
        burst.extend_from_slice(&q);
    }
    stream.write_all(&burst).await.unwrap();
    for id in 1..=20u16 {
        let m = read_framed(&mut stream).await.expect("an answer");
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.answers.len(), 2);
        assert!(!m.metadata.truncation, "never TC over TCP");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_idle_connections_are_closed() {
    let server = start(CONFIG).await;
    let mut stream = TcpStream::connect(server.tcp_addrs()[0]).await.unwrap();
    let connected = std::time::Instant::now();
    let mut buf = [0u8; 1];
    // The server closes after 300 ms of silence; wait well past it.
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("closed by the server, not by our timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF");
    // Not before the idle timeout: closing at once would also give EOF.
    assert!(
        connected.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        connected.elapsed()
    );
    server.shutdown().await;
}

/// Clients that pipeline queries for a large answer and never read: once their
/// windows and our send buffers are full, each write waits for the idle timeout, then
/// the connection is closed and its slot serves others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_peers_that_never_read_lose_their_slot() {
    let big: Vec<String> = (0..100).map(|i| format!("\"10.9.0.{i}\"")).collect();
    let text = format!(
        "{}\n[[zone.record]]\nname = \"big\"\na = [{}]\n",
        CONFIG.replace("300ms", "1s"),
        big.join(", ")
    );
    let server = start(&text).await;
    let addr = server.tcp_addrs()[0];
    let q = query_bytes(1, "big.internal.example.com.");
    let framed = [&(q.len() as u16).to_be_bytes()[..], &q].concat();
    let burst = framed.repeat(4000); // ~4,000 answers of 1.6 KB: more than any buffer
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let burst = burst.clone();
        // Writes until the server stops reading; never reads.
        hostile.push(tokio::spawn(async move {
            let _ = s.write_all(&burst).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        }));
    }
    // Both slots are taken by peers that never read; within a bound they are freed.
    support::eventually(
        Duration::from_secs(60),
        "a TCP answer for a new client",
        || async {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return false;
            };
            let q = query_bytes(7, "v4.internal.example.com.");
            if s.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
                .await
                .is_err()
            {
                return false;
            }
            tokio::time::timeout(Duration::from_secs(2), read_framed(&mut s))
                .await
                .ok()
                .flatten()
                .is_some_and(|m| m.metadata.id == 7)
        },
    )
    .await;
    for h in hostile {
        h.abort();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_connection_cap_closes_extra_connections() {
    let server = start(&CONFIG.replace("300ms", "30s")).await;
    let addr = server.tcp_addrs()[0];
    let mut held = Vec::new();
    for id in 0..2u16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let q = query_bytes(id, "internal.example.com.");
        s.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
            .await
            .unwrap();
        assert!(read_framed(&mut s).await.is_some(), "within the cap");
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let q = query_bytes(9, "internal.example.com.");
    let _ = extra
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await;
    assert!(
        read_framed(&mut extra).await.is_none(),
        "over the cap: closed unanswered"
    );
    drop(held);
    server.shutdown().await;
}

/// A connection from `from` (an address on this machine) to `to`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends one query on `s`; whether an answer came back.
async fn answered(s: &mut TcpStream, id: u16) -> bool {
    let q = query_bytes(id, "internal.example.com.");
    let _ = s
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await;
    tokio::time::timeout(Duration::from_secs(5), read_framed(s))
        .await
        .ok()
        .flatten()
        .is_some()
}

/// One source holds at most its share of the TCP slots (by default a quarter of
/// max-tcp-connections): the rest are closed on accept and counted, and another
/// source still gets TCP answers.
#[tokio::test]
async fn one_source_cannot_take_every_tcp_slot() {
    let text = CONFIG.replace("300ms", "30s").replace(
        "max-tcp-connections = 2\nmax-tcp-connections-per-source = 2\n",
        "max-tcp-connections = 8\n",
    );
    let server = start(&text).await;
    let addr = server.tcp_addrs()[0];
    let mut held = Vec::new();
    for id in 0..2u16 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        assert!(answered(&mut s, id).await, "within the source's share");
        held.push(s);
    }
    for id in 10..16u16 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        assert!(
            !answered(&mut s, id).await,
            "over the share: closed unanswered"
        );
    }
    // Another source: answered, several times over.
    let mut others = Vec::new();
    for id in 20..22u16 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        assert!(answered(&mut s, id).await, "another source");
        others.push(s);
    }
    let m = server.metrics().render();
    assert!(
        m.contains("privatelink_dns_tcp_connections_rejected_per_source_total 6"),
        "{m}"
    );
    // The share comes back when a connection closes.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        if answered(&mut s, 30).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.is_some(),
        "a slot freed by the source is its own again"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_udp_gets_formerr_or_nothing_and_server_keeps_serving() {
    let server = start(CONFIG).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server.udp_addrs()[0]).await.unwrap();
    // Header only with QDCOUNT=1 but no question: FORMERR with the same ID.
    sock.send(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0F, 1, "FORMERR");
    assert!(n >= 12);
    // A runt gets nothing; the next good query still works.
    sock.send(&[1, 2, 3]).await.unwrap();
    let mut client = udp_client(server.udp_addrs()[0]).await;
    let r = client
        .query(name("internal.example.com."), DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_the_ports() {
    let server = start(CONFIG).await;
    let addr = server.udp_addrs()[0];
    server.shutdown().await;
    let again = format!("[server]\nlisten = [\"{addr}\"]\n");
    let server = start(&again).await;
    assert_eq!(server.udp_addrs()[0], addr);
    server.shutdown().await;
}

/// SOA serial of internal.example.com over UDP.
async fn soa_serial(server: &Server) -> u32 {
    let mut client = udp_client(server.udp_addrs()[0]).await;
    let r = client
        .query(name("internal.example.com."), DNSClass::IN, RecordType::SOA)
        .await
        .unwrap();
    match r.answers[0].data {
        hickory_proto::rr::RData::SOA(ref soa) => soa.serial,
        ref other => panic!("{other:?}"),
    }
}

/// A burst of changes runs serials ahead of the clock (each is the previous + 1);
/// with `state-dir`, a restart with other content still serves a higher serial.
/// Without it, the restart would go back to the clock: lower.
#[tokio::test]
async fn serials_never_go_down_across_a_restart_with_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let with_state = CONFIG.replace(
        "[server]\n",
        &format!(
            "[server]\nstate-dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    );
    let server = start(&with_state).await;
    let mut highest = soa_serial(&server).await;
    for i in 0..30 {
        let changed = with_state.replace("192.0.2.3", &format!("192.0.2.{}", 100 + i));
        server
            .reload(Config::from_toml(&changed, "burst.toml").unwrap())
            .await;
        let serial = soa_serial(&server).await;
        assert!(serial > highest, "{serial} after {highest}");
        highest = serial;
    }
    server.shutdown().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    assert!(highest > now + 20, "the burst ran ahead of the clock");
    let other = with_state.replace("192.0.2.3", "192.0.2.250");
    let server = start(&other).await;
    let after = soa_serial(&server).await;
    assert!(
        after > highest,
        "{after} after a restart, {highest} served before"
    );
    server.shutdown().await;
    // The same data again after a restart: still not lower, never the same serial for
    // what might be other content.
    let server = start(&other).await;
    assert!(soa_serial(&server).await > after);
    server.shutdown().await;
    // An unusable state-dir fails the start.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let bad = CONFIG.replace(
        "[server]\n",
        &format!(
            "[server]\nstate-dir = \"{}\"\n",
            dir.path().join("file").display()
        ),
    );
    let e = Server::start(&Config::from_toml(&bad, "bad.toml").unwrap())
        .await
        .err()
        .expect("an error");
    assert!(e.to_string().contains("server.state-dir"), "{e}");
}
