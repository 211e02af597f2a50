//! Fleet mode: a follower (`[follow]`) in process, transferring from a real
//! privatelink-dns primary on loopback: the catalog and its members, TSIG on every
//! message, IXFR on NOTIFY, members added and dropped, a wrong key, SOA expire,
//! and a restart from `cache-dir` while the primary is down.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use support::{ask, eventually, http_get, sample};

const SECRET: &str = "c2VjcmV0LWZvci10aGUtZm9sbG93LXRlc3Qtb25seQ==";
const OTHER: &str = "b3RoZXItc2VjcmV0LWZvci10aGUtZm9sbG93LXRlc3Q=";

fn config(text: &str, dir: &Path) -> Config {
    Config::from_toml(text, &dir.join("c.toml").display().to_string()).unwrap()
}

/// The primary: zones a.test (www = `www`), b.test unless `without_b`, c.test when
/// `with_c`; a catalog; transfers to 127.0.0.0/8 with the key; NOTIFY to `notify`.
fn primary_text(
    www: &str,
    without_b: bool,
    with_c: bool,
    notify: &[SocketAddr],
    expire: u32,
) -> String {
    let notify: Vec<String> = notify.iter().map(|a| format!("\"{a}\"")).collect();
    let mut out = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[[tsig-key]]
name = "xfr-key"
secret = "{SECRET}"

[transfer]
allow = ["127.0.0.0/8"]
tsig-key = "xfr-key"
notify = [{}]

[catalog]
zone = "catalog.invalid"

[[zone]]
origin = "a.test"
soa = {{ refresh = 3600, retry = 1, expire = {expire} }}

[[zone.record]]
name = "www"
a = ["{www}"]
aaaa = ["2001:db8::1"]
"#,
        notify.join(", ")
    );
    if !without_b {
        out += "\n[[zone]]\norigin = \"b.test\"\n\n[[zone.record]]\nname = \"*\"\na = [\"192.0.2.20\"]\n";
    }
    if with_c {
        out += "\n[[zone]]\norigin = \"c.test\"\n\n[[zone.record]]\nname = \"api\"\na = [\"192.0.2.30\"]\n";
    }
    out
}

fn follower_text(primary: SocketAddr, secret: &str, cache: &Path) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[http]
listen = "127.0.0.1:0"

[[tsig-key]]
name = "xfr-key"
secret = "{secret}"

[follow]
primary = "{primary}"
catalog = "catalog.invalid"
tsig-key = "xfr-key"
cache-dir = "{}"
"#,
        cache.display()
    )
}

async fn serial(addr: SocketAddr, zone: &str) -> Option<u32> {
    let m = ask(addr, zone, RecordType::SOA).await;
    m.answers.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

async fn a(addr: SocketAddr, name: &str) -> (ResponseCode, Vec<String>) {
    let m = ask(addr, name, RecordType::A).await;
    (m.metadata.response_code, support::addresses(&m))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_the_primarys_zones_and_serials_and_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("follow");
    let primary = Server::start(&config(
        &primary_text("192.0.2.1", false, false, &[], 600),
        d,
    ))
    .await
    .unwrap();
    let p = primary.udp_addrs()[0];
    let follower = Server::start(&config(&follower_text(p, SECRET, &cache), d))
        .await
        .unwrap();
    let f = follower.udp_addrs()[0];
    let http = follower.http_addr().unwrap();

    // Before the first transfer: not ready; then every member, with the primary's serials.
    eventually(
        Duration::from_secs(20),
        "the follower serves a.test and b.test",
        || async {
            a(f, "www.a.test.").await.1 == ["192.0.2.1"]
                && a(f, "x.b.test.").await.1 == ["192.0.2.20"]
        },
    )
    .await;
    for zone in ["a.test.", "b.test."] {
        assert_eq!(serial(f, zone).await, serial(p, zone).await, "{zone}");
    }
    let aaaa = ask(f, "www.a.test.", RecordType::AAAA).await;
    assert_eq!(support::addresses(&aaaa), ["2001:db8::1"]);
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // The primary's catalog is not served by the follower itself.
    assert_eq!(
        ask(f, "catalog.invalid.", RecordType::SOA)
            .await
            .metadata
            .response_code,
        ResponseCode::Refused
    );
    // Cached on disk, one file per zone and the catalog.
    for file in ["a.test.zone", "b.test.zone", "catalog.invalid.zone"] {
        assert!(cache.join(file).is_file(), "{file}");
    }

    // NOTIFY from the primary: a change arrives by IXFR.
    primary
        .reload(config(
            &primary_text("192.0.2.2", false, false, &[f], 600),
            d,
        ))
        .await;
    eventually(
        Duration::from_secs(10),
        "the change reaches the follower",
        || async { a(f, "www.a.test.").await.1 == ["192.0.2.2"] },
    )
    .await;
    assert_eq!(serial(f, "a.test.").await, serial(p, "a.test.").await);
    // The metrics follow the publication (within the same step of the follower).
    let want = f64::from(serial(p, "a.test.").await.unwrap());
    eventually(
        Duration::from_secs(5),
        "metrics: an IXFR, the new serial",
        || async {
            let metrics = http_get(http, "/metrics").await.1;
            sample(
                &metrics,
                "privatelink_dns_follow_transfers_total{type=\"ixfr\",outcome=\"ok\"}",
            ) >= 1.0
                && sample(
                    &metrics,
                    "privatelink_dns_follow_zone_serial{zone=\"a.test.\"}",
                ) == want
                && sample(
                    &metrics,
                    "privatelink_dns_follow_primary_serial{zone=\"a.test.\"}",
                ) == want
        },
    )
    .await;

    // A member added and one removed, through the catalog.
    primary
        .reload(config(&primary_text("192.0.2.2", true, true, &[f], 600), d))
        .await;
    eventually(
        Duration::from_secs(10),
        "c.test added, b.test dropped",
        || async {
            a(f, "api.c.test.").await.1 == ["192.0.2.30"]
                && a(f, "x.b.test.").await.0 == ResponseCode::Refused
        },
    )
    .await;
    assert!(
        !cache.join("b.test.zone").exists(),
        "a dropped member's file is removed"
    );
    primary.shutdown().await;
    follower.shutdown().await;
}

/// A follower whose key is not the primary's gets nothing, serves nothing and says
/// why; the primary counts the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let primary = Server::start(&config(
        &primary_text("192.0.2.1", false, false, &[], 600),
        d,
    ))
    .await
    .unwrap();
    let follower = Server::start(&config(
        &follower_text(primary.udp_addrs()[0], OTHER, &d.join("f")),
        d,
    ))
    .await
    .unwrap();
    let http = follower.http_addr().unwrap();
    eventually(
        Duration::from_secs(10),
        "a failed transfer is counted",
        || async {
            let m = http_get(http, "/metrics").await.1;
            m.lines().any(|l| {
                l.starts_with("privatelink_dns_follow_transfers_total{")
                    && l.contains("outcome=\"failed\"")
            })
        },
    )
    .await;
    assert_eq!(
        a(follower.udp_addrs()[0], "www.a.test.").await.0,
        ResponseCode::Refused
    );
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not all transferred"), "{body}");
    primary.shutdown().await;
    follower.shutdown().await;
}

/// The primary goes away: the follower keeps serving until the zone's SOA expire,
/// then answers SERVFAIL and `/readyz` names the zone. Restarted while the primary
/// is still away, it serves from cache-dir at once (the expire counts from the
/// file's time, the last contact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_primary_a_zone_serves_until_expire_and_a_restart_serves_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("follow");
    let primary = Server::start(&config(&primary_text("192.0.2.1", false, false, &[], 6), d))
        .await
        .unwrap();
    let p = primary.udp_addrs()[0];
    let text = follower_text(p, SECRET, &cache);
    let follower = Server::start(&config(&text, d)).await.unwrap();
    let f = follower.udp_addrs()[0];
    eventually(
        Duration::from_secs(20),
        "the follower serves a.test",
        || async { a(f, "www.a.test.").await.1 == ["192.0.2.1"] },
    )
    .await;
    primary.shutdown().await;

    // A restart while the primary is down: served from disk, before any transfer.
    follower.shutdown().await;
    let follower = Server::start(&config(&text, d)).await.unwrap();
    let f = follower.udp_addrs()[0];
    let http = follower.http_addr().unwrap();
    assert_eq!(
        a(f, "www.a.test.").await.1,
        ["192.0.2.1"],
        "served from cache-dir"
    );
    assert_eq!(http_get(http, "/readyz").await.0, 200);

    // a.test has expire = 6 s: then SERVFAIL, and /readyz says which zone.
    eventually(Duration::from_secs(20), "a.test expires", || async {
        a(f, "www.a.test.").await.0 == ResponseCode::ServFail
    })
    .await;
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("a.test."), "{body}");
    let metrics = http_get(http, "/metrics").await.1;
    assert_eq!(
        sample(&metrics, "privatelink_dns_follow_zones_expired "),
        1.0,
        "{metrics}"
    );
    // b.test keeps the default expire (two weeks): still served.
    assert_eq!(a(f, "x.b.test.").await.1, ["192.0.2.20"]);
    follower.shutdown().await;
}

/// `[follow] tls = true`: transfers over TLS (XoT) from a primary that allows them
/// only over TLS (`require-tls`), its certificate checked against `[tls] ca-file`
/// for `server-name`. The wrong name gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_the_certificate_checked() {
    use support::pki::{NAME, ca, leaf, tools_or_skip};
    if !tools_or_skip(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d);
    let (crt, key) = leaf(d, "primary", "0x77");
    let text = primary_text("192.0.2.1", false, false, &[], 600)
        .replace(
            "listen = [\"127.0.0.1:0\"]\n",
            &format!(
                "listen = [\"127.0.0.1:0\"]\ntls-listen = [\"127.0.0.1:0\"]\n\n[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                crt.display(),
                key.display()
            ),
        )
        .replace("tsig-key = \"xfr-key\"\nnotify", "tsig-key = \"xfr-key\"\nrequire-tls = true\nnotify");
    let primary = Server::start(&config(&text, d)).await.unwrap();
    let tls = primary.tls_addrs()[0];
    let follower_with = |name: &str, cache: &str| {
        follower_text(tls, SECRET, &d.join(cache)).replace("cache-dir", "tls = true\ncache-dir")
            + &format!(
                "\n[tls]\nca-file = \"{}\"\nserver-name = \"{name}\"\n",
                d.join("ca.crt").display()
            )
    };
    let follower = Server::start(&config(&follower_with(NAME, "ok"), d))
        .await
        .unwrap();
    let f = follower.udp_addrs()[0];
    eventually(Duration::from_secs(20), "a.test over TLS", || async {
        a(f, "www.a.test.").await.1 == ["192.0.2.1"]
    })
    .await;
    assert_eq!(
        serial(f, "a.test.").await,
        serial(primary.udp_addrs()[0], "a.test.").await
    );

    let wrong = Server::start(&config(&follower_with("other.test", "wrong"), d))
        .await
        .unwrap();
    let http = wrong.http_addr().unwrap();
    eventually(Duration::from_secs(10), "the wrong name fails", || async {
        let m = http_get(http, "/metrics").await.1;
        m.lines().any(|l| {
            l.starts_with("privatelink_dns_follow_transfers_total{")
                && l.contains("outcome=\"failed\"")
        })
    })
    .await;
    assert_eq!(
        a(wrong.udp_addrs()[0], "www.a.test.").await.0,
        ResponseCode::Refused
    );
    follower.shutdown().await;
    wrong.shutdown().await;
    primary.shutdown().await;
}

/// A NOTIFY is taken (NOERROR, AA) only from the primary's address, signed with the
/// `[follow]` key, for a followed zone or the catalog; anything else gets NOTAUTH.
/// A catalog member that has the name of a configured zone is not followed (the
/// configured one answers), and readiness does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_only_from_the_primary_signed_and_configured_zones_win() {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, TSigner, rdata::tsig::TsigAlgorithm};
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let primary = Server::start(&config(
        &primary_text("192.0.2.1", false, false, &[], 600),
        d,
    ))
    .await
    .unwrap();
    let text = follower_text(primary.udp_addrs()[0], SECRET, &d.join("f"))
        + "\n[[zone]]\norigin = \"b.test\"\n\n[[zone.record]]\nname = \"own\"\na = [\"198.51.100.1\"]\n";
    let follower = Server::start(&config(&text, d)).await.unwrap();
    let f = follower.udp_addrs()[0];
    let http = follower.http_addr().unwrap();
    eventually(
        Duration::from_secs(20),
        "ready with a.test followed",
        || async {
            http_get(http, "/readyz").await.0 == 200 && a(f, "www.a.test.").await.1 == ["192.0.2.1"]
        },
    )
    .await;
    assert_eq!(
        a(f, "own.b.test.").await.1,
        ["198.51.100.1"],
        "the configured b.test answers"
    );
    assert_eq!(
        a(f, "x.b.test.").await.0,
        ResponseCode::NXDomain,
        "not the primary's b.test"
    );

    let notify = |zone: &str, signed: bool| {
        let mut m = Message::new(7, MessageType::Query, OpCode::Notify);
        m.add_query(Query::query(Name::from_str(zone).unwrap(), RecordType::SOA));
        if signed {
            use base64::Engine;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(SECRET)
                .unwrap();
            let signer = TSigner::new(
                secret,
                TsigAlgorithm::HmacSha256,
                Name::from_str("xfr-key.").unwrap(),
                300,
            )
            .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let (tsig, _) = signer.sign_message(&m, now).unwrap();
            m.signature = Some(tsig);
        }
        m.to_vec().unwrap()
    };
    let send = |from: &'static str, bytes: Vec<u8>| async move {
        let s = tokio::net::UdpSocket::bind(format!("{from}:0"))
            .await
            .unwrap();
        s.send_to(&bytes, f).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        (m.metadata.response_code, m.metadata.authoritative)
    };
    assert_eq!(
        send("127.0.0.1", notify("a.test.", true)).await,
        (ResponseCode::NoError, true)
    );
    assert_eq!(
        send("127.0.0.1", notify("catalog.invalid.", true)).await,
        (ResponseCode::NoError, true)
    );
    assert_eq!(
        send("127.0.0.1", notify("a.test.", false)).await.0,
        ResponseCode::NotAuth,
        "unsigned"
    );
    assert_eq!(
        send("127.0.0.2", notify("a.test.", true)).await.0,
        ResponseCode::NotAuth,
        "not the primary"
    );
    assert_eq!(
        send("127.0.0.1", notify("b.test.", true)).await.0,
        ResponseCode::NotAuth,
        "a configured zone"
    );
    assert_eq!(
        send("127.0.0.1", notify("z.test.", true)).await.0,
        ResponseCode::NotAuth,
        "no such zone"
    );
    follower.shutdown().await;
    primary.shutdown().await;
}
