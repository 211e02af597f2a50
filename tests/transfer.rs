//! Zone transfers and access lists, against the whole server on port 0 with raw
//! sockets (the client side of TSIG is hickory-proto's own `TSigner`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

/// base64 of 32 bytes 0x01..=0x20.
const SECRET: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const NAMES: usize = 3000;

fn config() -> Config {
    let mut text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
allow-query = ["127.0.0.1/32"]

[[tsig-key]]
name = "xfr-key"
secret = "{SECRET}"

[transfer]
allow = ["127.0.0.1/32"]
tsig-key = "xfr-key"

[[zone]]
origin = "big.test"
"#
    );
    for i in 0..NAMES {
        text.push_str(&format!(
            "[[zone.record]]\nname = \"host-{i}\"\na = [\"10.{}.{}.1\", \"10.{}.{}.2\"]\n",
            i / 256,
            i % 256,
            i / 256,
            i % 256
        ));
    }
    Config::from_toml(&text, "transfer-test.toml").unwrap()
}

fn signer() -> TSigner {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET)
        .unwrap();
    TSigner::new(
        key,
        TsigAlgorithm::HmacSha256,
        Name::from_ascii("xfr-key.").unwrap(),
        300,
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An AXFR request for `zone`, signed; with the MAC its response is chained to.
fn signed_axfr(zone: &str) -> (Vec<u8>, Vec<u8>) {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(zone).unwrap(),
        RecordType::AXFR,
    ));
    let (tsig, _) = signer().sign_message(&m, unix_now()).unwrap();
    let mac = tsig.data.mac.clone();
    m.signature = Some(tsig);
    (m.to_vec().unwrap(), mac)
}

async fn read_message(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("a message within 5 s")
        .unwrap();
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

async fn tcp_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axfr_streams_every_record_in_signed_messages() {
    let server = Server::start(&config()).await.unwrap();
    let addr = server.tcp_addrs()[0];
    let mut stream = tcp_from("127.0.0.1", addr).await;
    let (request, request_mac) = signed_axfr("big.test.");
    stream
        .write_all(&(request.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();

    let signer = signer();
    let mut previous = request_mac;
    let mut records: Vec<Record> = Vec::new();
    let mut messages = 0;
    loop {
        let bytes = read_message(&mut stream).await;
        assert!(bytes.len() <= 65535);
        // Every message verifies: the first against the request's MAC with all TSIG
        // variables, later ones against the previous MAC with the timers only.
        let (mac, _, _) = signer
            .verify_message_byte(&bytes, Some(&previous), messages == 0)
            .unwrap_or_else(|e| panic!("message {messages} does not verify: {e}"));
        previous = mac;
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        records.extend(m.answers);
        messages += 1;
        if records.len() > 1 && records.last().unwrap().record_type() == RecordType::SOA {
            break;
        }
    }
    assert!(messages > 1, "a {NAMES}-name zone takes several messages");
    assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
    let a: BTreeSet<(String, String)> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(ip) => Some((r.name.to_string(), ip.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(a.len(), 2 * NAMES, "every A record once");
    assert!(a.contains(&("host-2999.big.test.".into(), "10.11.183.2".into())));
    assert_eq!(
        records.len(),
        2 * NAMES + 3,
        "SOA, NS, the A records, SOA; nothing twice"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_need_the_key_and_an_allowed_source() {
    let server = Server::start(&config()).await.unwrap();
    let addr = server.tcp_addrs()[0];
    let ask = |source: &'static str, request: Vec<u8>| async move {
        let mut stream = tcp_from(source, addr).await;
        stream
            .write_all(&(request.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&request).await.unwrap();
        Message::from_vec(&read_message(&mut stream).await).unwrap()
    };
    let mut unsigned = Message::new(8, MessageType::Query, OpCode::Query);
    unsigned.add_query(Query::query(
        Name::from_ascii("big.test.").unwrap(),
        RecordType::AXFR,
    ));
    let r = ask("127.0.0.1", unsigned.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "no key");
    assert!(r.answers.is_empty());
    let r = ask("127.0.0.2", signed_axfr("big.test.").0).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::Refused,
        "signed, but outside allow-query (and allow)"
    );
    assert!(r.answers.is_empty());
    server.shutdown().await;
}

/// `allow-query` holds on the UDP fast path (a plain A query with EDNS) and on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_query_refuses_other_sources_on_every_path() {
    let server = Server::start(&config()).await.unwrap();
    let (udp, tcp) = (server.udp_addrs()[0], server.tcp_addrs()[0]);
    let mut q = Message::new(9, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(
        Name::from_ascii("host-1.big.test.").unwrap(),
        RecordType::A,
    ));
    q.edns = Some(Edns::new());
    let query = q.to_vec().unwrap();
    let udp_ask = |source: &'static str| {
        let query = query.clone();
        async move {
            let socket = UdpSocket::bind(format!("{source}:0")).await.unwrap();
            socket.send_to(&query, udp).await.unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
    };
    let allowed = udp_ask("127.0.0.1").await;
    assert_eq!(allowed.metadata.response_code, ResponseCode::NoError);
    assert_eq!(allowed.answers.len(), 2);
    let refused = udp_ask("127.0.0.2").await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    let ede = refused
        .edns
        .as_ref()
        .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(15)))
        .map(|o| format!("{o:?}"));
    assert!(
        ede.as_deref().is_some_and(|o| o.contains("[0, 18]")),
        "EDE 18 Prohibited: {ede:?}"
    );

    let mut stream = tcp_from("127.0.0.2", tcp).await;
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&query).await.unwrap();
    let r = Message::from_vec(&read_message(&mut stream).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "TCP too");
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("privatelink_dns_refusals_total{reason=\"query_acl\"} 2"),
        "{metrics}"
    );
    server.shutdown().await;
}
