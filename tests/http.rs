//! The HTTP side against a running server: liveness, readiness before and after the
//! first snapshot, and metrics that move with queries and refreshes.

mod support;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use support::{Moto, Vpc, aws_env, http_get as get, moto_available, sample};

async fn query(dns: SocketAddr, name: &str, t: RecordType) {
    let conn = UdpClientStream::builder(dns, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, t)
        .await
        .unwrap();
}

#[tokio::test]
async fn static_config_is_ready_at_once_and_counts_queries() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
                [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n";
    let server = Server::start(&Config::from_toml(text, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().expect("http bound");
    let dns = server.udp_addrs()[0];
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("static config"), "{body}");
    assert_eq!(get(http, "/nope").await.0, 404);

    let (_, before) = get(http, "/metrics").await;
    let aaaa = "privatelink_dns_queries_total{transport=\"udp\",qtype=\"AAAA\",rcode=\"NOERROR\"}";
    assert!(!before.contains(aaaa));
    query(dns, "www.example.com.", RecordType::AAAA).await;
    query(dns, "www.example.com.", RecordType::AAAA).await;
    query(dns, "nope.example.com.", RecordType::A).await;
    let (_, after) = get(http, "/metrics").await;
    assert_eq!(sample(&after, aaaa), 2.0);
    assert_eq!(
        sample(
            &after,
            "privatelink_dns_queries_total{transport=\"udp\",qtype=\"A\",rcode=\"NXDOMAIN\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "privatelink_dns_answer_duration_seconds_count"),
        3.0
    );
    assert_eq!(sample(&after, "privatelink_dns_zones"), 1.0);
    assert_eq!(sample(&after, "privatelink_dns_records"), 1.0);
    assert_eq!(
        sample(&after, "privatelink_dns_journal_bytes"),
        0.0,
        "no transfers: no journal"
    );
    assert_eq!(sample(&after, "privatelink_dns_ready"), 1.0);
    assert!(after.contains("privatelink_dns_build_info{version="));
    assert!(
        !after.contains("refresh_attempts"),
        "no refresh metrics without AWS"
    );
    server.shutdown().await;
}

/// A reload that adds AWS-backed names whose first discovery fails is not ready: the
/// new names have no data, whatever the static part of the config serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_aws_without_data_is_not_ready() {
    aws_env();
    let base = "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
                [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n";
    let server = Server::start(&Config::from_toml(base, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().unwrap();
    assert_eq!(get(http, "/readyz").await.0, 200);

    // Nothing listens on this port: every call fails as unreachable.
    let port = support::free_port();
    let with_aws = format!(
        "{base}[aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"http://127.0.0.1:{port}\"\n\
         refresh-interval = \"30s\"\ncall-timeout = \"2s\"\n\
         [[zone.record]]\nname = \"api\"\nvpc-endpoint = \"vpce-0123456789abcdef0\"\n"
    );
    server
        .reload(Config::from_toml(&with_aws, "t").unwrap())
        .await;
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("region=ap-northeast-1"), "{body}");
    let (_, m) = get(http, "/metrics").await;
    assert_eq!(sample(&m, "privatelink_dns_ready"), 0.0);
    assert!(!server.served().ready());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_discovery_and_metrics_follow_refreshes() {
    if !moto_available() {
        return;
    }
    aws_env();
    let port = support::free_port();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"http://127.0.0.1:{port}\"\n\
         refresh-interval = \"1s\"\ncall-timeout = \"900ms\"\nmax-backoff = \"1s\"\n\
         [[zone]]\norigin = \"internal.example.com\"\n[[zone.record]]\nname = \"@\"\n\
         vpc-endpoint-tags = {{ app = \"x\" }}\n"
    );
    // The EC2 API is down and there is no cache: not ready, and /readyz says why.
    let server = Server::start(&Config::from_toml(&text, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().unwrap();
    assert_eq!(get(http, "/healthz").await.0, 200, "alive while not ready");
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let (_, m) = get(http, "/metrics").await;
    assert!(
        sample(
            &m,
            "privatelink_dns_refresh_failures_total{reason=\"unreachable\"}"
        ) >= 1.0
    );
    assert_eq!(sample(&m, "privatelink_dns_refresh_successes_total"), 0.0);
    assert_eq!(sample(&m, "privatelink_dns_ready"), 0.0);

    // The API comes up: ready, and the refresh metrics move.
    let moto = Moto::start_on(port);
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint("com.amazonaws.ap-northeast-1.ssm", &[0, 1], &[("app", "x")])
        .await;
    let start = Instant::now();
    loop {
        let (status, body) = get(http, "/readyz").await;
        if status == 200 {
            assert!(body.contains("data from AWS"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, m1) = get(http, "/metrics").await;
    let ok = "privatelink_dns_refresh_successes_total";
    // The event, not a sleep: the next refresh is counted (within a generous bound).
    let start = Instant::now();
    let m2 = loop {
        let (_, m2) = get(http, "/metrics").await;
        if sample(&m2, ok) > sample(&m1, ok) {
            break m2;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "refreshes keep succeeding"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&m2, "privatelink_dns_refresh_attempts_total")
            > sample(&m1, "privatelink_dns_refresh_attempts_total")
    );
    assert_eq!(sample(&m2, "privatelink_dns_endpoints_discovered"), 1.0);
    assert_eq!(sample(&m2, "privatelink_dns_records"), 2.0);
    assert!(
        sample(
            &m2,
            "privatelink_dns_refresh_last_success_timestamp_seconds"
        ) > 1.7e9
    );
    assert!(sample(&m2, "privatelink_dns_snapshot_age_seconds") < 30.0);
    assert_eq!(sample(&m2, "privatelink_dns_serving_from_cache"), 0.0);
    server.shutdown().await;
}

/// Partial requests (headers never finished) and oversized heads: the HTTP side caps
/// its connections, cuts each at the header timeout, and the DNS side never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_requests_are_capped_and_cut_and_dns_keeps_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
                max-connections = 4\nheader-timeout = \"1s\"\n\
                [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n";
    let server = Server::start(&Config::from_toml(text, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().unwrap();
    let mut partial = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-a: ")
            .await
            .unwrap();
        partial.push(s);
    }
    // DNS over TCP is unaffected.
    let tcp = server.tcp_addrs()[0];
    let (stream, sender) =
        hickory_net::tcp::TcpClientStream::new(tcp, None, None, TokioRuntimeProvider::default());
    let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    let r = client
        .query(
            Name::from_str("www.example.com.").unwrap(),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 1);
    // Every partial connection is closed by the server: beyond the cap at once, the
    // others at the header timeout. Closed is an end of stream or a reset, after
    // nothing or a 408 (never an answer to the unfinished request).
    for (i, s) in partial.iter_mut().enumerate() {
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("partial connection {i} still open after 20 s"));
        match closed {
            Ok(_) | Err(_) if got.is_empty() || got.starts_with(b"HTTP/1.1 408") => {}
            other => panic!(
                "partial connection {i}: {other:?} {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    // A request head over the limit is refused, not buffered.
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = s.write_all(huge.as_bytes()).await;
    let mut reply = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut reply)).await;
    assert!(ended.is_ok(), "the connection must end, not wait");
    // hyper answers 431 and closes; a reset before it could be read is the same refusal.
    assert!(
        reply.starts_with(b"HTTP/1.1 431")
            || (reply.is_empty() && ended.as_ref().is_ok_and(|r| r.is_err())),
        "{:?} {}",
        ended,
        String::from_utf8_lossy(&reply)
    );
    // And the slots are free again.
    let (status, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.shutdown().await;
}

/// With few file descriptors (RLIMIT_NOFILE 256), the connection caps are lowered to
/// fit, and said so; DNS-over-TCP clients holding every slot they can get leave the
/// HTTP side (and the process) its descriptors.
#[test]
fn a_low_fd_limit_lowers_the_caps_and_nothing_starves() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (support::free_port(), support::free_port());
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nudp-workers = 1\nmax-tcp-connections-per-source = 1024\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
    cmd.args(["--log-format", "json", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    /// Kills the daemon however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(cmd.spawn().unwrap());
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let healthz = || -> bool {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(2)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200")
    };
    let start = Instant::now();
    while !healthz() {
        assert!(start.elapsed() < Duration::from_secs(20), "never healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("caps lowered"), "{text}");
    let line = text.lines().find(|l| l.contains("caps lowered")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let dns_tcp = v["dns_tcp"].as_u64().unwrap();
    assert!(dns_tcp < 1024 && dns_tcp > 100, "{line}");
    // 300 DNS TCP connections: more than the lowered cap. The server answers on one
    // that has a slot, and closes those beyond the cap on accept; once it has closed
    // them all (the event waited for), the HTTP side must still have its descriptors.
    let dns = SocketAddr::from(([127, 0, 0, 1], port));
    let mut held: Vec<_> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&dns, Duration::from_secs(2)).ok())
        .collect();
    assert!(held.len() > dns_tcp as usize, "{}", held.len());
    let mut q = hickory_proto::op::Message::query();
    q.add_query(hickory_proto::op::Query::query(
        Name::from_str("www.example.com.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    let first = &mut held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    first
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .unwrap();
    first.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    first.read_exact(&mut len).unwrap();
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    first.read_exact(&mut answer).unwrap();
    let answer = hickory_proto::op::Message::from_vec(&answer).unwrap();
    assert_eq!(answer.answers.len(), 1, "answered while holding a slot");
    let beyond = held.len() - dns_tcp as usize;
    let mut closed = vec![false; held.len()];
    let start = Instant::now();
    while closed.iter().filter(|c| **c).count() < beyond {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {beyond} connections beyond the cap closed",
            closed.iter().filter(|c| **c).count()
        );
        for (s, closed) in held.iter_mut().zip(closed.iter_mut()).filter(|(_, c)| !**c) {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1];
            *closed = match s.read(&mut buf) {
                Ok(0) => true,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                Ok(_) => false,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(healthz(), "the HTTP side keeps its descriptors");
    drop(held);
}

/// 32 idle clients on the HTTP port, each reconnecting as soon as it is cut (what
/// took /healthz down 72 times in 72): one source holds at most its share of the
/// connections, so the probes from another source keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_that_reconnect_never_starve_the_probes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n\
                header-timeout = \"1s\"\n\
                [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n";
    let server = Server::start(&Config::from_toml(text, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..32 {
        let stop = stop.clone();
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
                let Ok(mut s) = socket.connect(http).await else {
                    continue;
                };
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
                    .await;
                // Idle until cut (at once over the share, else at the header timeout).
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probe = || async {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.ok()?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).await.ok()?;
            Some(reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200"))
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    };
    let (mut ok, total) = (0, 100);
    for _ in 0..total {
        if probe().await {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    assert!(ok * 100 >= total * 99, "{ok} of {total} probes succeeded");
    server.shutdown().await;
}
