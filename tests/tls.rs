//! DNS over TLS (RFC 7858) and zone transfers over TLS (RFC 9103) against the whole
//! app on port 0, with real clients: kdig (`+tls-ca +tls-hostname`), `openssl
//! s_client` for the certificate a handshake presents, and a tokio-rustls client for
//! a connection held open across a renewal. The test makes its own CA with openssl.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use support::{eventually, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::pki::{NAME, ca, leaf, tools_or_skip};

/// Replaces the served pair's files with `tag`'s (each by rename: never half a file).
fn install(dir: &Path, tag: &str) {
    for ext in ["crt", "key"] {
        std::fs::copy(
            dir.join(format!("{tag}.{ext}")),
            dir.join(format!("next.{ext}")),
        )
        .unwrap();
        std::fs::rename(
            dir.join(format!("next.{ext}")),
            dir.join(format!("served.{ext}")),
        )
        .unwrap();
    }
}

/// The test config; `idle`: `tcp-idle-timeout`; `allow`: `allow-query` networks.
fn config_text(dir: &Path, idle: &str, allow: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
tls-listen = ["127.0.0.1:0"]
tcp-idle-timeout = "{idle}"
allow-query = [{allow}]

[http]
listen = "127.0.0.1:0"

[tls]
certificate = "{}"
key = "{}"

[transfer]
allow = ["127.0.0.0/8"]

[[zone]]
origin = "x.test"

[[zone.record]]
name = "www"
a = ["192.0.2.1"]

[[zone]]
origin = "xot.test"
transfer = {{ allow = ["127.0.0.0/8"], require-tls = true }}

[[zone.record]]
name = "www"
a = ["192.0.2.2"]
"#,
        dir.join("served.crt").display(),
        dir.join("served.key").display()
    )
}

fn kdig(dir: &Path, tls: SocketAddr, hostname: &str, args: &[&str]) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", tls.ip()))
        .args(["-p", &tls.port().to_string(), "+time=3", "+retry=0", "+tls"])
        .arg(format!("+tls-ca={}", dir.join("ca.crt").display()))
        .arg(format!("+tls-hostname={hostname}"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The serial of the certificate a new handshake presents.
fn presented_serial(tls: SocketAddr) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect {tls} -servername {NAME} -alpn dot 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A server on `text`, as if read from a file in `dir` (relative paths resolve there).
async fn start(dir: &Path, text: &str) -> Server {
    let path = dir.join("c.toml").display().to_string();
    Server::start(&Config::from_toml(text, &path).unwrap())
        .await
        .unwrap()
}

/// A DNS query for `name` A, with a 2-byte length.
fn framed_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::query();
    m.metadata.id = id;
    m.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    let bytes = m.to_vec().unwrap();
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend(bytes);
    out
}

/// A rustls client (ALPN `dot`, the test CA, `versions`) with rustls' default
/// in-memory session store, so a second connection through it can resume.
fn connector(
    dir: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(dir.join("ca.crt")).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"dot".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(client))
}

/// A verified handshake with `NAME` over `stream`.
async fn connect(
    connector: &tokio_rustls::TlsConnector,
    stream: tokio::net::TcpStream,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    connector
        .connect(
            rustls::pki_types::ServerName::try_from(NAME).unwrap(),
            stream,
        )
        .await
        .unwrap()
}

async fn read_answer<S: AsyncReadExt + Unpin>(s: &mut S) -> hickory_proto::op::Message {
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    hickory_proto::op::Message::from_vec(&buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_and_xot_answer_verified_clients_and_renew_without_a_restart() {
    if !tools_or_skip(&["kdig", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d);
    leaf(d, "one", "0x1111");
    leaf(d, "two", "0x2222");
    install(d, "one");
    // Long enough for the connection held across the renewals below.
    let text = config_text(d, "60s", "\"127.0.0.1/32\"");
    let server = start(d, &text).await;
    let tls = server.tls_addrs()[0];
    let tcp = server.tcp_addrs()[0];

    // A verified answer; the wrong hostname fails verification.
    let out = kdig(d, tls, NAME, &["www.x.test", "A"]);
    assert!(
        out.contains("192.0.2.1") && out.contains("NOERROR"),
        "{out}"
    );
    let out = kdig(d, tls, "other.test", &["www.x.test", "A"]);
    assert!(
        !out.contains("192.0.2.1"),
        "the wrong hostname must fail: {out}"
    );
    assert_eq!(presented_serial(tls), "serial=1111");
    // allow-query applies over TLS as over every transport.
    let out = Command::new("kdig")
        .args([
            "-b",
            "127.0.0.2",
            &format!("@{}", tls.ip()),
            "-p",
            &tls.port().to_string(),
        ])
        .args(["+time=3", "+retry=0", "+tls"])
        .arg(format!("+tls-ca={}", d.join("ca.crt").display()))
        .arg(format!("+tls-hostname={NAME}"))
        .args(["www.x.test", "A"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("REFUSED") && !out.contains("192.0.2.1"),
        "{out}"
    );

    // XoT: the require-tls zone transfers over TLS, and is REFUSED (EDE 18) over TCP.
    let out = kdig(d, tls, NAME, &["xot.test", "AXFR"]);
    assert!(out.contains("192.0.2.2"), "AXFR over TLS: {out}");
    let plain = Command::new("kdig")
        .args([
            &format!("@{}", tcp.ip()),
            "-p",
            &tcp.port().to_string(),
            "+time=3",
            "+retry=0",
        ])
        .args(["xot.test", "AXFR"])
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout).into_owned()
        + &String::from_utf8_lossy(&plain.stderr);
    assert!(
        plain.contains("REFUSED") && !plain.contains("192.0.2.2"),
        "{plain}"
    );
    let http = server.http_addr().unwrap();
    let (_, metrics) = support::http_get(http, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "privatelink_dns_refusals_total{reason=\"transfer_tls\"}"
        ),
        1.0,
        "{metrics}"
    );
    // The expiry gauge: the leaf's notAfter, two days from now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let not_after = sample(
        &metrics,
        "privatelink_dns_tls_certificate_not_after_timestamp_seconds",
    );
    assert!(
        not_after > now + 86_400.0 && not_after < now + 3.0 * 86_400.0,
        "{not_after} vs {now}"
    );
    // A zone without require-tls still transfers over plain TCP.
    let ok = Command::new("kdig")
        .args([
            &format!("@{}", tcp.ip()),
            "-p",
            &tcp.port().to_string(),
            "+time=3",
            "+retry=0",
        ])
        .args(["x.test", "AXFR"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ok.stdout).contains("192.0.2.1"));

    // A connection held open across the renewals (tokio-rustls client, pipelined).
    let connector = connector(d, rustls::DEFAULT_VERSIONS);
    let mut held = connect(
        &connector,
        tokio::net::TcpStream::connect(tls).await.unwrap(),
    )
    .await;
    assert_eq!(held.get_ref().1.alpn_protocol(), Some(&b"dot"[..]));
    let mut two = framed_query(1, "www.x.test.");
    two.extend(framed_query(2, "www.xot.test."));
    held.write_all(&two).await.unwrap();
    let (a, b) = (read_answer(&mut held).await, read_answer(&mut held).await);
    assert_eq!(
        (a.metadata.id, b.metadata.id),
        (1, 2),
        "pipelined, in order"
    );

    // Renewal by SIGHUP (a reload): new handshakes present the new certificate.
    install(d, "two");
    let report = server
        .reload(Config::from_toml(&text, &d.join("c.toml").display().to_string()).unwrap())
        .await;
    assert!(
        report.restart_needed.is_empty(),
        "{:?}",
        report.restart_needed
    );
    assert_eq!(presented_serial(tls), "serial=2222");
    held.write_all(&framed_query(3, "www.x.test."))
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut held).await.metadata.id,
        3,
        "the open connection carries on"
    );

    // Renewal without SIGHUP: the files are polled.
    install(d, "one");
    eventually(
        Duration::from_secs(20),
        "the watched files reloaded",
        || async { presented_serial(tls) == "serial=1111" },
    )
    .await;
    // A bad pair (the key of another certificate) keeps the old one, counted.
    let (_, stray_key) = leaf(d, "stray", "0x3333");
    std::fs::copy(d.join("two.crt"), d.join("next.crt")).unwrap();
    std::fs::rename(d.join("next.crt"), d.join("served.crt")).unwrap();
    std::fs::copy(&stray_key, d.join("next.key")).unwrap();
    std::fs::rename(d.join("next.key"), d.join("served.key")).unwrap();
    eventually(
        Duration::from_secs(20),
        "a failed reload counted",
        || async {
            let (_, m) = support::http_get(http, "/metrics").await;
            // (No sample until the first failure.)
            m.lines().any(|l| {
                l.starts_with("privatelink_dns_tls_certificate_reloads_total{outcome=\"failed\"} ")
            })
        },
    )
    .await;
    assert_eq!(
        presented_serial(tls),
        "serial=1111",
        "the previous pair stays"
    );
    let (status, _) = support::http_get(http, "/readyz").await;
    assert_eq!(status, 200, "/readyz through renewals");
    held.write_all(&framed_query(4, "www.x.test."))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut held).await.metadata.id, 4);
    // A reload that names other files: those are served and watched, the old ones
    // no longer (a change to them must not bring their pair back).
    let renamed = text
        .replace("served.crt", "two.crt")
        .replace("served.key", "two.key");
    server
        .reload(Config::from_toml(&renamed, &d.join("c.toml").display().to_string()).unwrap())
        .await;
    assert_eq!(presented_serial(tls), "serial=2222");
    install(d, "one");
    tokio::time::sleep(Duration::from_secs(7)).await; // longer than the 5 s poll
    assert_eq!(
        presented_serial(tls),
        "serial=2222",
        "the old files are not watched"
    );
    server.shutdown().await;
}

/// Handshakes that never finish hold slots only until the idle timeout, and only
/// their source's share: a client from another address, and UDP, are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_stop_service() {
    if !tools_or_skip(&["kdig", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d);
    leaf(d, "one", "0x1111");
    install(d, "one");
    let server = Server::start(
        &Config::from_toml(&config_text(d, "2s", "\"127.0.0.0/8\""), "c.toml").unwrap(),
    )
    .await
    .unwrap();
    let tls = server.tls_addrs()[0];
    let udp = server.udp_addrs()[0];
    // 1,000 connections that say nothing (or half a ClientHello), from 127.0.0.1.
    let mut idle = Vec::new();
    for i in 0..1000 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(tls).await {
            if i % 2 == 0 {
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
            }
            idle.push(s);
        }
    }
    // Another source (127.0.0.2, as on-prem resolvers each are) gets a verified answer.
    let out = Command::new("kdig")
        .args([
            "-b",
            "127.0.0.2",
            &format!("@{}", tls.ip()),
            "-p",
            &tls.port().to_string(),
        ])
        .args(["+time=3", "+retry=0", "+tls"])
        .arg(format!("+tls-ca={}", d.join("ca.crt").display()))
        .arg(format!("+tls-hostname={NAME}"))
        .args(["www.x.test", "A"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("192.0.2.1"), "{out}");
    assert_eq!(support::a(udp, "www.x.test.").await, ["192.0.2.1"], "UDP");
    // After the idle timeout the stalled handshakes are gone: 127.0.0.1 is served again.
    eventually(
        Duration::from_secs(15),
        "the stalled handshakes cut",
        || async { kdig(d, tls, NAME, &["www.x.test", "A"]).contains("192.0.2.1") },
    )
    .await;
    drop(idle);
    // A TLS client that asks for a transfer and never reads is cut (counted failed).
    // More than the kernel buffers hold (about 5 MB), so the server must wait on it.
    let big = (0..200_000)
        .map(|i| {
            format!(
                "h{i} 60 IN A 10.{}.{}.{}\n",
                i >> 16,
                (i >> 8) % 256,
                i % 256
            )
        })
        .collect::<String>();
    std::fs::write(d.join("big.zone"), big).unwrap();
    let text = config_text(d, "2s", "\"127.0.0.0/8\"")
        + "[[zone]]\norigin = \"big.test\"\nfile = \"big.zone\"\n";
    let report = server
        .reload(Config::from_toml(&text, &d.join("c.toml").display().to_string()).unwrap())
        .await;
    assert!(
        report.restart_needed.is_empty(),
        "{:?}",
        report.restart_needed
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(tls).await.unwrap();
    let mut reader = connect(&connector(d, rustls::DEFAULT_VERSIONS), stream).await;
    let mut axfr = hickory_proto::op::Message::query();
    axfr.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("big.test.").unwrap(),
        hickory_proto::rr::RecordType::AXFR,
    ));
    let bytes = axfr.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend(bytes);
    reader.write_all(&framed).await.unwrap();
    let http = server.http_addr().unwrap();
    eventually(
        Duration::from_secs(20),
        "the non-reading TLS client cut",
        || async {
            let (_, m) = support::http_get(http, "/metrics").await;
            m.lines().any(|l| {
                l.starts_with("privatelink_dns_transfers_total{type=\"AXFR\",outcome=\"failed\"} ")
            })
        },
    )
    .await;
    drop(reader);
    server.shutdown().await;
}

/// Session resumption (RFC 7858 section 3.4 recommends it): a client that kept its
/// session from a first connection resumes it on the next, over TLS 1.3 (tickets) and
/// TLS 1.2 (tickets or session id), and is answered on the resumed connection. A client
/// with no session does a full handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_over_tls13_and_tls12() {
    if !tools_or_skip(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d);
    leaf(d, "one", "0x1111");
    install(d, "one");
    let text = config_text(d, "10s", "\"127.0.0.0/8\"");
    let server = start(d, &text).await;
    let tls = server.tls_addrs()[0];
    for (label, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let connector = connector(d, &[version]);
        let mut kinds = Vec::new();
        for id in 1..=2u16 {
            let stream = tokio::net::TcpStream::connect(tls).await.unwrap();
            let mut s = tokio::time::timeout(Duration::from_secs(10), connect(&connector, stream))
                .await
                .unwrap();
            s.write_all(&framed_query(id, "www.x.test.")).await.unwrap();
            // Reading the answer also reads the TLS 1.3 tickets sent after the handshake.
            let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut s))
                .await
                .unwrap();
            assert_eq!(answer.metadata.id, id);
            assert_eq!(answer.answers.len(), 1, "{label}: {answer:?}");
            let (_, conn) = s.get_ref();
            assert_eq!(conn.protocol_version(), Some(version.version), "{label}");
            kinds.push(conn.handshake_kind());
            s.shutdown().await.unwrap();
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ],
            "{label}: the second connection resumes the first one's session"
        );
    }
}
