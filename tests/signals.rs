//! The real binary under signals: SIGHUP reloads a valid config and refuses an
//! invalid one; SIGTERM drains and exits 0 without losing a query sent before it.
//! And in-process: a critical task that dies is reported.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use privatelink_dns::app::{Server, SourceFactory};
use privatelink_dns::config::Config;
use privatelink_dns::discovery::{BoxedSource, Discover, DiscoveryError, Inventory};

const BIN: &str = env!("CARGO_BIN_EXE_privatelink-dns");

struct Daemon {
    child: Child,
    logs: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut d = Daemon {
            child,
            logs,
            seen: Vec::new(),
        };
        d.wait_log("serving");
        d
    }

    /// Waits for a log line containing `needle` (20 s at most); returns it.
    fn wait_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.logs.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no log line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                )
            });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        kill(&self.child, sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, ip: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"{ip}\"]\n"
    )
}

fn query_bytes(id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(
        Name::from_str("www.example.com.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

fn ask(addr: SocketAddr) -> Vec<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&query_bytes(7), addr).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n])
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

/// A zone file is part of the config: SIGHUP reads it again; a bad one is refused with
/// its own path, line and key, and the last good data keeps serving.
#[test]
fn sighup_rereads_a_zone_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let zone = dir.path().join("example.com.zone");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n[[zone]]\norigin = \"example.com\"\nfile = \"example.com.zone\"\n"),
    )
    .unwrap();
    std::fs::write(&zone, "$TTL 60\nwww A 192.0.2.1\n").unwrap();
    let mut d = Daemon::start(&path);
    assert_eq!(ask(addr), ["192.0.2.1"]);

    std::fs::write(&zone, "$TTL 60\nwww A 192.0.2.2\n  A 192.0.2.3\n").unwrap();
    d.signal("-HUP");
    d.wait_log("config reloaded");
    let mut got = ask(addr);
    got.sort();
    assert_eq!(got, ["192.0.2.2", "192.0.2.3"]);

    std::fs::write(&zone, "$TTL 60\nwww A 192.0.2.4\nwww MX 10 mail\n").unwrap();
    d.signal("-HUP");
    let line = d.wait_log("reload refused");
    assert!(
        line.contains("example.com.zone:3:")
            && line.contains("zone[0].file")
            && line.contains("type MX"),
        "{line}"
    );
    let mut got = ask(addr);
    got.sort();
    assert_eq!(got, ["192.0.2.2", "192.0.2.3"]);
}

#[test]
fn sighup_reloads_valid_config_and_refuses_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(&path, config(port, "192.0.2.1")).unwrap();
    let mut d = Daemon::start(&path);
    assert_eq!(ask(addr), ["192.0.2.1"]);

    // Valid: applied.
    std::fs::write(&path, config(port, "192.0.2.2")).unwrap();
    d.signal("-HUP");
    d.wait_log("config reloaded");
    assert_eq!(ask(addr), ["192.0.2.2"]);

    // Invalid: refused, named, and the previous config keeps serving.
    std::fs::write(&path, config(port, "192.0.2.999")).unwrap();
    d.signal("-HUP");
    let line = d.wait_log("reload refused");
    assert!(
        line.contains("config.toml:7:") && line.contains("zone[0].record[0].a"),
        "{line}"
    );
    assert_eq!(ask(addr), ["192.0.2.2"]);

    // A listen change is reported as needing a restart; the rest is applied.
    let other = support::free_port();
    std::fs::write(&path, config(other, "192.0.2.3")).unwrap();
    d.signal("-HUP");
    let line = d.wait_log("take effect only after a restart");
    assert!(line.contains("server.listen"), "{line}");
    assert_eq!(ask(addr), ["192.0.2.3"]);

    d.signal("-TERM");
    assert_eq!(d.child.wait().unwrap().code(), Some(0));
}

/// Draining that can be seen: the daemon is stopped (SIGSTOP) while N queries queue
/// on its socket, then told to stop (SIGTERM) and resumed (SIGCONT): every one of the
/// N is answered before it exits 0.
#[test]
fn sigterm_answers_every_query_queued_before_it_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(&path, config(port, "192.0.2.1")).unwrap();
    let mut d = Daemon::start(&path);
    assert_eq!(ask(addr), ["192.0.2.1"]);

    d.signal("-STOP");
    // 100 queries fit the socket's receive buffer at its smallest default (208 KiB).
    const N: u16 = 100;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 1..=N {
        sock.send_to(&query_bytes(id), addr).unwrap();
    }
    d.signal("-TERM");
    d.signal("-CONT");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut buf = [0u8; 1500];
    while answered.len() < usize::from(N) {
        let Ok(n) = sock.recv(&mut buf) else { break };
        if n >= 2 {
            answered.insert(u16::from_be_bytes([buf[0], buf[1]]));
        }
    }
    let lost: Vec<u16> = (1..=N).filter(|i| !answered.contains(i)).collect();
    assert!(lost.is_empty(), "unanswered: {lost:?}");
    assert_eq!(d.child.wait().unwrap().code(), Some(0), "exit 0 on SIGTERM");
    d.wait_log("stopped");
}

/// A source whose discovery panics the second time: the refresh task dies.
struct Panics(Mutex<u32>);

impl Discover for Panics {
    async fn discover(&self) -> Result<Inventory, DiscoveryError> {
        let n = {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            *n
        };
        assert!(n < 2, "simulated bug in a critical task");
        Ok(Inventory::default())
    }
}

#[tokio::test]
async fn a_dead_critical_task_is_reported() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[aws]\nrefresh-interval = \"1s\"\ncall-timeout = \"500ms\"\n\
                [[discover]]\nvpc-ids = [\"vpc-1\"]\n";
    let config = Config::from_toml(text, "t").unwrap();
    let sources: SourceFactory = Arc::new(|_config| {
        Box::pin(async { Some(Box::new(Panics(Mutex::new(0))) as BoxedSource) })
    });
    let server = Server::start_with(&config, sources.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.crashed())
        .await
        .expect("the supervisor notices the dead refresh task");
    server.shutdown().await;
    // What the binary runs: it returns the error that makes it exit 1.
    let run = privatelink_dns::app::run_with(config, None, sources);
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run returns when a critical task dies");
    assert!(
        matches!(result, Err(privatelink_dns::app::AppError::Crashed)),
        "{result:?}"
    );
}

/// The query log: JSON lines with client, name, type and rcode, sampled.
#[test]
fn query_log_is_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = format!(
        "{}[log]\nqueries = true\nqueries-sample-rate = 0.25\n",
        config(port, "192.0.2.1")
    );
    std::fs::write(&path, text).unwrap();
    let mut d = Daemon::start(&path);
    for _ in 0..20 {
        assert_eq!(ask(addr), ["192.0.2.1"]);
    }
    d.signal("-TERM");
    d.wait_log("stopped");
    let logged: Vec<&String> = d
        .seen
        .iter()
        .filter(|l| l.contains("\"message\":\"query\""))
        .collect();
    assert_eq!(logged.len(), 5, "1 in 4 of 20 queries: {logged:#?}");
    let line = logged[0];
    for want in [
        "\"name\":\"www.example.com.\"",
        "\"qtype\":\"A\"",
        "\"rcode\":\"NOERROR\"",
        "\"client\":\"127.0.0.1:",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

/// Waits (20 s at most) for `child` to exit; returns its exit code.
fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks until an answer comes (20 s at most).
fn ask_until(addr: SocketAddr, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        let _ = sock.send_to(&query_bytes(7), addr);
        let mut buf = [0u8; 1500];
        if let Ok(n) = sock.recv(&mut buf) {
            let got: Vec<String> = Message::from_vec(&buf[..n])
                .unwrap()
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.to_string()),
                    _ => None,
                })
                .collect();
            if got == want {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no answer {want:?}");
    }
}

fn kill(child: &Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// stderr whose reader has gone (EPIPE on every write): reloads, answers and a clean
/// exit all the same; before, the first log line after it panicked (exit 101).
#[test]
fn a_closed_stderr_never_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(&path, config(port, "192.0.2.1")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader goes away
    ask_until(addr, &["192.0.2.1"]);
    std::fs::write(&path, config(port, "192.0.2.2")).unwrap();
    kill(&child, "-HUP");
    ask_until(addr, &["192.0.2.2"]);
    kill(&child, "-TERM");
    assert_eq!(exit_code(&mut child), Some(0));
}

/// stderr that is never read (the pipe fills): every query still answered, lost log
/// lines counted, and SIGTERM still exits 0.
#[test]
fn an_unread_stderr_never_blocks_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let (port, http_port) = (support::free_port(), support::free_port());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = format!(
        "{}[http]\nlisten = \"127.0.0.1:{http_port}\"\n[log]\nqueries = true\n",
        config(port, "192.0.2.1")
    );
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = child.stderr.take();
    drop(child.stdout.take()); // and stdout closed
    ask_until(addr, &["192.0.2.1"]);
    // ~200 bytes a query log line: 20,000 fill a 64 KiB pipe and the 16 Ki-line queue.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for id in 0..20_000u16 {
        let mut q = query_bytes(id);
        q[0..2].copy_from_slice(&id.to_be_bytes());
        sock.send_to(&q, addr).unwrap();
        let n = sock.recv(&mut buf).expect("every query answered");
        assert_eq!(&buf[0..2], &id.to_be_bytes());
        assert!(n > 12);
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut s, &mut metrics).unwrap();
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("privatelink_dns_log_lines_dropped_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the metric");
    assert!(dropped > 0.0, "{dropped}");
    kill(&child, "-TERM");
    assert_eq!(exit_code(&mut child), Some(0));
}

/// Waits, without blocking the runtime, for `child` to exit (30 s at most).
async fn exited(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon with a 1 s shutdown grace, stderr captured into `log`.
fn spawn_with_log(config: &Path, log: &Path) -> Child {
    let mut cmd = Command::new(BIN);
    support::aws_env_for(&mut cmd)
        .args(["--log-format", "json", "--config"])
        .arg(config)
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().unwrap()
}

/// SIGTERM under a UDP flood: workers stop draining at the grace deadline, and the
/// process exits while the flood goes on (before, only when the flood stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_udp_flood_exits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = config(port, "192.0.2.1").replace(
        "[server]\n",
        "[server]\nshutdown-grace = \"1s\"\nudp-workers = 2\n",
    );
    std::fs::write(&path, text).unwrap();
    let mut child = spawn_with_log(&path, &dir.path().join("log"));
    ask_until(addr, &["192.0.2.1"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let q = query_bytes(1);
            let started = Instant::now();
            // Bounded: 40 s at most, or until told to stop.
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(40)
            {
                for _ in 0..64 {
                    let _ = sock.send_to(&q, addr);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&child, "-TERM");
    let code = exited(&mut child).await;
    let flooding = !flood.is_finished();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    assert_eq!(code, Some(0));
    assert!(flooding, "exited while the flood went on");
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        !text.contains("still open after the grace"),
        "the workers stop within the grace: {text}"
    );
}

/// SIGTERM while a reload waits on a stalled EC2 API (each call may take 20 s, three
/// attempts): the reload is cancelled and the process exits (before, it waited for
/// the whole discovery, twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_on_a_stalled_api_exits() {
    use support::fault_proxy::{Fault, FaultProxy};
    let staller = FaultProxy::start(support::free_port()).await;
    staller.set(Fault::Stall, None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    std::fs::write(&path, config(port, "192.0.2.1")).unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_with_log(&path, &log);
    ask_until(SocketAddr::from(([127, 0, 0, 1], port)), &["192.0.2.1"]);
    let aws = format!(
        "[aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"{}\"\nrefresh-interval = \"1m\"\n\
         call-timeout = \"20s\"\n[[discover]]\nvpc-ids = [\"vpc-1\"]\n",
        staller.url()
    );
    std::fs::write(&path, format!("{}{aws}", config(port, "192.0.2.1"))).unwrap();
    kill(&child, "-HUP");
    support::eventually(
        Duration::from_secs(30),
        "the reload's discovery stalls",
        || {
            let n = staller.faulted.load(std::sync::atomic::Ordering::Relaxed);
            async move { n > 0 }
        },
    )
    .await;
    kill(&child, "-TERM");
    assert_eq!(exited(&mut child).await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGTERM received during a reload"), "{text}");
}

/// SIGTERM while the refresh loop waits on a stalled EC2 API: the refresh is
/// cancelled, every task ends within the grace, and nothing claims otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stalled_refresh_exits_cleanly() {
    use support::fault_proxy::{Fault, FaultProxy};
    if !support::moto_available() {
        return;
    }
    support::aws_env();
    let moto = support::Moto::start();
    let vpc = support::Vpc::create(moto.client()).await;
    vpc.endpoint("com.amazonaws.ap-northeast-1.ssm", &[0], &[])
        .await;
    let proxy = FaultProxy::start(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let text = format!(
        "{}[aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"{}\"\nrefresh-interval = \"1s\"\n\
         call-timeout = \"900ms\"\n[[discover]]\nvpc-ids = [\"{}\"]\n",
        config(port, "192.0.2.1").replace("[server]\n", "[server]\nshutdown-grace = \"1s\"\n"),
        proxy.url(),
        vpc.id
    );
    std::fs::write(&path, text).unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_with_log(&path, &log);
    ask_until(SocketAddr::from(([127, 0, 0, 1], port)), &["192.0.2.1"]);
    // Every call from now on stalls past call-timeout: three attempts and backoff.
    proxy.set(Fault::Stall, None);
    support::eventually(Duration::from_secs(30), "a refresh stalls", || {
        let n = proxy.faulted.load(std::sync::atomic::Ordering::Relaxed);
        async move { n > 0 }
    })
    .await;
    kill(&child, "-TERM");
    assert_eq!(exited(&mut child).await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"stopped\""), "{text}");
    assert!(!text.contains("still open after the grace"), "{text}");
}

/// Waits for `child` to exit, `limit` at most; how long it took.
async fn exit_within(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM while a SIGHUP's new config is still being read (a large one): the read
/// goes on off the signal loop and the process exits within the grace and a second
/// (before, SIGTERM waited for the whole parse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_large_config_is_read_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let small =
        config(port, "192.0.2.1").replace("[server]\n", "[server]\nshutdown-grace = \"1s\"\n");
    std::fs::write(&path, &small).unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_with_log(&path, &log);
    ask_until(SocketAddr::from(([127, 0, 0, 1], port)), &["192.0.2.1"]);
    // 200,000 names in TOML: seconds to parse and check, even in a release build.
    let mut big = small.clone();
    for i in 0..200_000u32 {
        let _ = std::fmt::Write::write_fmt(
            &mut big,
            format_args!(
                "[[zone.record]]\nname = \"h{i}\"\na = [\"10.{}.{}.{}\"]\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ),
        );
    }
    std::fs::write(&path, big).unwrap();
    kill(&child, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&child, "-TERM");
    let (code, took) = exit_within(&mut child, Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("SIGTERM received while a new config is read"),
        "the stop came during the read: {text}"
    );
    // Not a timing assertion on speed: the bound is the grace (1 s) plus the runtime's
    // own second for a blocking read it abandons, plus slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
}

/// A FIFO as the cache file: refused as not a regular file (before, opening it
/// blocked start-up for ever, SIGTERM included); the daemon starts, serves its
/// static names, and SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_cache_file_is_refused_and_sigterm_is_heard() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cache.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let path = dir.path().join("config.toml");
    let port = support::free_port();
    let down = format!("http://127.0.0.1:{}", support::free_port());
    let aws = format!(
        "[aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"{down}\"\ncall-timeout = \"1s\"\n\
         cache-file = {:?}\n[[discover]]\nvpc-ids = [\"vpc-1\"]\n",
        fifo.display().to_string()
    );
    std::fs::write(&path, format!("{}{aws}", config(port, "192.0.2.1"))).unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_with_log(&path, &log);
    ask_until(SocketAddr::from(([127, 0, 0, 1], port)), &["192.0.2.1"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not a regular file"), "{text}");
    kill(&child, "-TERM");
    let (code, _) = exit_within(&mut child, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0));
}

/// Five seconds of queries whose EDNS option claims more bytes than it carries, from
/// a source outside allow-query too: answered FORMERR and counted, and the log stays
/// a few lines (before: one hickory-proto WARN per packet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_edns_packets_do_not_flood_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let (port, http_port) = (support::free_port(), support::free_port());
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nudp-workers = 1\n\
             allow-query = [\"127.0.0.1/32\"]\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = spawn_with_log(&path, &log);
    let dns = SocketAddr::from(([127, 0, 0, 1], port));
    ask_until(dns, &["192.0.2.1"]);
    let before = std::fs::metadata(&log).unwrap().len();
    // www.example.com A, with an OPT whose COOKIE option claims 16 bytes and has 2.
    let mut packet = query_bytes(9);
    packet[11] = 1; // ARCOUNT
    packet.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 6, 0, 10, 0, 16, 1, 2]);
    let mut sent = 0u64;
    let started = Instant::now();
    // From inside allow-query the malformed packet; from outside it, a well-formed query
    // (refused). A packet that does not parse is FORMERR whoever sends it.
    let refused_query = query_bytes(10);
    for (from, packet) in [("127.0.0.1:0", &packet), ("127.0.0.2:0", &refused_query)] {
        let sock = UdpSocket::bind(from).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        let end = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < end && sent < 200_000 {
            sock.send_to(packet, dns).unwrap();
            sent += 1;
            if sent.is_multiple_of(64) {
                // Read what came back, so the socket's buffer never fills.
                while sock.recv(&mut buf).is_ok() {
                    sock.set_read_timeout(Some(Duration::from_millis(1)))
                        .unwrap();
                }
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
            }
        }
    }
    // One answer, read whole: FORMERR.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&packet, dns).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let metrics = support::http_get(http, "/metrics").await.1;
    let malformed = support::sample(
        &metrics,
        "privatelink_dns_queries_malformed_total{transport=\"udp\"}",
    );
    let refused = support::sample(
        &metrics,
        "privatelink_dns_refusals_total{reason=\"query_acl\"}",
    );
    assert!(
        malformed > 100.0,
        "{sent} sent in {:?}: {metrics}",
        started.elapsed()
    );
    assert!(refused > 100.0, "the source outside allow-query: {metrics}");
    kill(&child, "-TERM");
    assert_eq!(exited(&mut child).await, Some(0));
    let grew = std::fs::metadata(&log).unwrap().len() - before;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        grew < 4096,
        "{grew} bytes of log for {sent} packets: {text}"
    );
    assert!(!text.contains("EDNS options"), "{text}");
}
