//! The real binary: config checking, exit codes, and the built-in demo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use privatelink_dns::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_privatelink-dns");

fn config_examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_parses() {
    let files = config_examples();
    assert!(files.len() >= 3, "{files:?}");
    for path in files {
        Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A bad zone file exits 64 naming the zone file, its line and the `file` key.
#[test]
fn a_bad_zone_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pldns.toml");
    let zone = dir.path().join("z.zone");
    std::fs::write(
        &path,
        "[[zone]]\norigin = \"example.com\"\nfile = \"z.zone\"\n",
    )
    .unwrap();
    std::fs::write(&zone, "; header\nwww A 10.0.0.1\nwww A 10.0.0.300\n").unwrap();
    for args in [vec!["check-config", "--config"], vec!["--config"]] {
        let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:3:", zone.display())), "{err}");
        assert!(
            err.contains("key `zone[0].file`") && err.contains("an IPv4 address was expected"),
            "{err}"
        );
        assert!(
            !err.contains("10.0.0.300"),
            "the file's text is not quoted: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one clean line: {err}");
    }
}

/// A config large enough to be read in batches (over 256 KiB): the binary serves it,
/// and an error in its last record table still exits 64 naming the file's line and
/// the record's key.
#[test]
fn a_large_config_is_read_and_its_errors_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let mut text = String::from("[[zone]]\norigin = \"big.test\"\n");
    for i in 0..8000 {
        text += &format!(
            "[[zone.record]]\nname = \"host-{i}\"\na = [\"10.0.{}.{}\"]\n",
            i / 256,
            i % 256
        );
    }
    assert!(text.len() > 256 * 1024);
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = text.lines().count();
    text += "[[zone.record]]\nname = \"host-1\"\na = [\"10.9.9.9\"]\n";
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:{}:", path.display(), lines + 2))
            && err.contains("key `zone[0].record[8000].name`")
            && err.contains("already defined by zone[0].record[1]"),
        "{err}"
    );
}

/// (file content, line, key) for errors that must exit 64 naming file, line and key.
#[test]
fn bad_configs_exit_64_naming_file_line_and_key() {
    let rows = [
        (
            "[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = []\n",
            3,
            "server.lisen",
        ),
        (
            "[[zone]]\norigin = \"example.com\"\n\n[[zone.record]]\nname = \"www\"\na = [\"192.0.2.300\"]\n",
            6,
            "zone[0].record[0].a",
        ),
        (
            "[[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"www.example.net.\"\na = [\"192.0.2.1\"]\n",
            4,
            "zone[0].record[0].name",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, line, key)) in rows.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for args in [vec!["check-config", "--config"], vec!["--config"]] {
            let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(64), "{args:?} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            let want = format!("{}:{line}:", path.display());
            assert!(err.contains(&want), "{want} in {err}");
            assert!(err.contains(&format!("key `{key}`")), "{key} in {err}");
            assert!(err.starts_with("error: "), "{err}");
            assert_eq!(err.lines().count(), 1, "one clean line: {err}");
        }
    }
}

#[test]
fn usage_errors_exit_64() {
    let out = Command::new(BIN).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml"));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
}

/// `privatelink-dns` with no arguments serves the demo on 127.0.0.1:5300, says so
/// first, answers, and exits 0 on SIGTERM.
#[tokio::test]
async fn demo_serves_and_stops_cleanly() {
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a first log line");
    assert!(first.contains("built-in demo"), "{first}");
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a listening line");
        if line.contains("listening") {
            assert!(line.contains("127.0.0.1:5300"), "{line}");
            break;
        }
    }
    let conn = UdpClientStream::builder(
        "127.0.0.1:5300".parse().unwrap(),
        TokioRuntimeProvider::default(),
    )
    .build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    let r = client
        .query(
            Name::from_str("internal.example.com.").unwrap(),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 3);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn config_from_the_environment() {
    let good = "[[zone]]\norigin = \"example.com\"\n";
    let out = Command::new(BIN)
        .arg("check-config")
        .env("PRIVATELINK_DNS_CONFIG_TOML", good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .env(
            "PRIVATELINK_DNS_CONFIG_TOML",
            "[[zone]]\norigin = \"example.com\"\nttl = 0\n",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("$PRIVATELINK_DNS_CONFIG_TOML:3:") && err.contains("zone[0].ttl"),
        "{err}"
    );
    // PRIVATELINK_DNS_CONFIG is the path, like --config.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, good).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .env("PRIVATELINK_DNS_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn probe_is_a_health_check_client() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n";
    let server = privatelink_dns::app::Server::start(&Config::from_toml(text, "t").unwrap())
        .await
        .unwrap();
    let http = server.http_addr().unwrap();
    let run = move |path: &str| {
        let url = format!("http://{http}{path}");
        std::process::Command::new(BIN)
            .args(["probe", &url])
            .output()
            .unwrap()
    };
    let (ok, missing) = tokio::task::spawn_blocking(move || (run("/healthz"), run("/missing")))
        .await
        .unwrap();
    assert!(ok.status.success());
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    server.shutdown().await;
    let closed = std::process::Command::new(BIN)
        .args(["probe", &format!("http://{http}/healthz")])
        .output()
        .unwrap();
    assert_eq!(closed.status.code(), Some(1), "nothing listening");
}

/// The reference config shows every key (a new key must be added there and to
/// docs/configuration.md, which this checks too).
#[test]
fn reference_config_and_docs_show_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/privatelink-dns.toml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let keys: &[(&str, &[&str])] = &[
        (
            "server",
            &[
                "listen",
                "tls-listen",
                "udp-payload-size",
                "tcp-idle-timeout",
                "max-tcp-connections",
                "max-tcp-connections-per-source",
                "state-dir",
                "max-notify-in-flight",
                "journal-max-bytes",
                "nameserver",
                "identity",
                "version",
                "udp-workers",
                "shutdown-grace",
            ],
        ),
        (
            "http",
            &[
                "listen",
                "max-connections",
                "max-connections-per-source",
                "header-timeout",
            ],
        ),
        (
            "log",
            &["level", "format", "queries", "queries-sample-rate"],
        ),
        (
            "aws",
            &[
                "region",
                "endpoint-url",
                "role-arn",
                "refresh-interval",
                "call-timeout",
                "max-backoff",
                "page-size",
                "cache-file",
                "removal-hold",
                "eks-endpoint-url",
            ],
        ),
        ("zone", &["origin", "ttl", "ns", "soa", "file"]),
        (
            "zone.soa",
            &[
                "mname", "rname", "refresh", "retry", "expire", "minimum", "ttl",
            ],
        ),
        (
            "zone.record",
            &[
                "name",
                "a",
                "aaaa",
                "ttl",
                "vpc-endpoint",
                "vpc-endpoint-tags",
                "eks-cluster",
            ],
        ),
        (
            "discover",
            &[
                "vpc-ids",
                "tags",
                "region",
                "role-arn",
                "ttl",
                "eks-clusters",
            ],
        ),
        ("catalog", &["zone"]),
        ("tls", &["certificate", "key", "ca-file", "server-name"]),
        (
            "follow",
            &["primary", "catalog", "tsig-key", "tls", "cache-dir"],
        ),
        ("transfer", &["allow", "tsig-key", "notify", "require-tls"]),
    ];
    for (table, names) in keys {
        // Every occurrence of the table (arrays of tables) together.
        let mut found: Vec<String> = Vec::new();
        let mut level: Vec<&toml::Value> = vec![&value];
        for part in table.split('.') {
            let mut next = Vec::new();
            for v in level {
                match v.get(part) {
                    Some(toml::Value::Array(items)) => next.extend(items.iter()),
                    Some(t) => next.push(t),
                    None => {}
                }
            }
            level = next;
        }
        for v in level {
            if let Some(t) = v.as_table() {
                found.extend(t.keys().cloned());
            }
        }
        for name in *names {
            assert!(
                found.iter().any(|k| k == name),
                "config/privatelink-dns.toml lacks [{table}] {name}"
            );
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/configuration.md lacks `{name}`"
            );
        }
    }
}
