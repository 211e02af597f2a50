//! Served data is never lost or wrong when the EC2 API misbehaves: the real SDK
//! against the EC2 emulator (moto) behind a fault-injecting proxy
//! (tests/support/fault_proxy.rs), the whole server on port 0, the hickory client
//! asking it, and /readyz and /metrics read over HTTP.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use privatelink_dns::app::Server;
use privatelink_dns::config::{Config, Target};
use privatelink_dns::discovery::{Endpoint, Eni, FailureReason, Inventory, TargetInventory};
use privatelink_dns::refresh::RefreshStats;
use support::fault_proxy::{Fault, FaultProxy};
use support::{Moto, Vpc, a, aws_env, eventually, http_get, moto_available, sample};

const SSM: &str = "com.amazonaws.ap-northeast-1.ssm";
const API: &str = "api.internal.example.com.";
const ZERO_CONFIG: &str = "ssm.ap-northeast-1.amazonaws.com.";
const LIMIT: Duration = Duration::from_secs(60);

/// AWS-backed record `api` (by tag) and the VPC's zero-config names, refreshed every
/// second through `url`, cached in `cache`.
fn config(url: &str, vpc: &str, cache: &Path, extra: &str) -> Config {
    Config::from_toml(&config_text(url, vpc, cache, extra), "data-safety.toml").unwrap()
}

fn config_text(url: &str, vpc: &str, cache: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[aws]
region = "ap-northeast-1"
endpoint-url = "{url}"
refresh-interval = "1s"
call-timeout = "900ms"
max-backoff = "1s"
cache-file = "{}"
{extra}
[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "api"
vpc-endpoint-tags = {{ "privatelink-dns/name" = "api" }}
[[discover]]
vpc-ids = ["{vpc}"]
"#,
        cache.display()
    )
}

/// An emulator with one tagged endpoint in two subnets, the proxy in front of it,
/// and a server started through the proxy.
struct Rig {
    moto: Moto,
    proxy: FaultProxy,
    server: Server,
    vpc: Vpc,
    endpoint: String,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(extra: &str) -> Rig {
        aws_env();
        let moto = Moto::start();
        let vpc = Vpc::create(moto.client()).await;
        let endpoint = vpc
            .endpoint(SSM, &[0, 1], &[("privatelink-dns/name", "api")])
            .await;
        let proxy = FaultProxy::start(moto.port).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.json");
        let server = Server::start(&config(&proxy.url(), &vpc.id, &cache, extra))
            .await
            .unwrap();
        let rig = Rig {
            moto,
            proxy,
            server,
            vpc,
            endpoint,
            cache,
            _dir: dir,
        };
        rig.assert_serving(&["10.0.1.4", "10.0.2.4"]).await;
        rig
    }

    fn dns(&self) -> SocketAddr {
        self.server.udp_addrs()[0]
    }

    fn stats(&self) -> Arc<RefreshStats> {
        self.server.stats().clone()
    }

    async fn assert_serving(&self, want: &[&str]) {
        assert_eq!(a(self.dns(), API).await, want, "{API}");
        assert_eq!(a(self.dns(), ZERO_CONFIG).await, want, "{ZERO_CONFIG}");
    }

    async fn readyz(&self) -> (u16, String) {
        http_get(self.server.http_addr().unwrap(), "/readyz").await
    }

    async fn metrics(&self) -> String {
        http_get(self.server.http_addr().unwrap(), "/metrics")
            .await
            .1
    }

    /// Waits for `count` to go past `from`.
    async fn wait_past(&self, what: &str, from: u64, count: impl Fn(&RefreshStats) -> u64) {
        let stats = self.stats();
        eventually(LIMIT, what, || {
            let n = count(&stats);
            async move { n > from }
        })
        .await;
    }
}

/// For each fault: the reason is counted, answers and the cache file do not change
/// while it lasts, /readyz stays 200, and the next refresh after it clears succeeds.
async fn faults_keep_answers_and_cache(rows: &[(Fault, Option<&'static str>, FailureReason)]) {
    let rig = Rig::start("").await;
    let stats = rig.stats();
    for (fault, action, reason) in rows {
        let what = format!("{fault:?} on {action:?}");
        let before = stats.failures(*reason);
        rig.proxy.set(fault.clone(), *action);
        rig.wait_past(&what, before, |s| s.failures(*reason)).await;
        // From the first failure on, every refresh meets the fault: the cache as it is
        // now must outlast the next failure too.
        let cache = std::fs::read(&rig.cache).unwrap();
        rig.wait_past(&what, before + 1, |s| s.failures(*reason))
            .await;
        rig.assert_serving(&["10.0.1.4", "10.0.2.4"]).await;
        assert_eq!(std::fs::read(&rig.cache).unwrap(), cache, "{what}: cache");
        let (status, body) = rig.readyz().await;
        assert_eq!(status, 200, "{what}: {body}");
        let m = rig.metrics().await;
        let label = format!(
            "privatelink_dns_refresh_failures_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        assert!(sample(&m, &label) >= 2.0, "{what}: {label}");
        assert!(
            sample(&m, "privatelink_dns_refresh_consecutive_failures") >= 1.0,
            "{what}"
        );

        rig.proxy.clear();
        let ok = stats.successes.load(Ordering::Relaxed);
        rig.wait_past(&format!("recovery after {what}"), ok, |s| {
            s.successes.load(Ordering::Relaxed)
        })
        .await;
        assert_eq!(stats.consecutive_failures.load(Ordering::Relaxed), 0);
        rig.assert_serving(&["10.0.1.4", "10.0.2.4"]).await;
    }
    assert!(rig.proxy.faulted.load(Ordering::Relaxed) >= 2 * rows.len() as u64);
    rig.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_stalls_and_resets_keep_answers_and_cache() {
    if !moto_available() {
        return;
    }
    use FailureReason::*;
    faults_keep_answers_and_cache(&[
        (Fault::Error(500, "InternalError"), None, ServerError),
        (Fault::Error(503, "Unavailable"), None, ServerError),
        (
            Fault::Error(503, "RequestLimitExceeded"),
            Some("DescribeNetworkInterfaces"),
            Throttled,
        ),
        (Fault::Stall, Some("DescribeVpcEndpoints"), Timeout),
        (Fault::Reset, None, Unreachable),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_malformed_and_incomplete_answers_keep_answers_and_cache() {
    if !moto_available() {
        return;
    }
    use FailureReason::InvalidResponse as Invalid;
    faults_keep_answers_and_cache(&[
        (Fault::Truncated, Some("DescribeVpcEndpoints"), Invalid),
        (Fault::Truncated, Some("DescribeNetworkInterfaces"), Invalid),
        (
            Fault::Truncated,
            Some("DescribeVpcEndpointServices"),
            Invalid,
        ),
        (Fault::Garbage, Some("DescribeVpcEndpoints"), Invalid),
        (Fault::Empty, None, Invalid),
        (Fault::Html, None, Invalid),
        // Well-formed, but an endpoint lacks a field we rely on.
        (
            Fault::DropElement("state"),
            Some("DescribeVpcEndpoints"),
            Invalid,
        ),
        (
            Fault::DropElement("vpcEndpointId"),
            Some("DescribeVpcEndpoints"),
            Invalid,
        ),
        (
            Fault::DropElement("serviceName"),
            Some("DescribeVpcEndpoints"),
            Invalid,
        ),
        (
            Fault::DropElement("networkInterfaceIdSet"),
            Some("DescribeVpcEndpoints"),
            Invalid,
        ),
        // The endpoints' ENIs are not returned, or come without addresses.
        (
            Fault::DropElement("networkInterfaceSet"),
            Some("DescribeNetworkInterfaces"),
            Invalid,
        ),
        (
            Fault::DropElement("privateIpAddress"),
            Some("DescribeNetworkInterfaces"),
            Invalid,
        ),
    ])
    .await;
}

/// The emulator emptied (as after a restart; in real life an IAM or SCP change, or a
/// role in the wrong account): the answers are held for `removal-hold`, then applied;
/// the cache is never overwritten with nothing; a reload applies a held removal at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_account_is_held_then_applied_and_a_reload_applies_it_at_once() {
    if !moto_available() {
        return;
    }
    let hold = Duration::from_secs(4);
    let rig = Rig::start("removal-hold = \"4s\"").await;
    let stats = rig.stats();
    let cache = std::fs::read_to_string(&rig.cache).unwrap();
    assert!(cache.contains("10.0.1.4"), "{cache}");

    rig.moto.reset();
    let held_seen = {
        let stats = stats.clone();
        eventually(LIMIT, "removal held", || {
            let held = stats.removal_held.load(Ordering::Relaxed);
            async move { held > 0 }
        })
        .await;
        Instant::now()
    };
    rig.assert_serving(&["10.0.1.4", "10.0.2.4"]).await;
    let m = rig.metrics().await;
    assert_eq!(sample(&m, "privatelink_dns_removal_held "), 1.0);
    assert_eq!(
        sample(&m, "privatelink_dns_removal_held_addresses"),
        4.0,
        "2 names × 2"
    );
    // /readyz says so plainly: held, since when, until when.
    let (status, body) = rig.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("removal held"), "{body}");
    assert!(
        body.contains(" since 20") && body.contains(" until 20"),
        "{body}"
    );
    assert!(!body.contains("has not answered yet"), "{body}");
    assert!(sample(&m, "privatelink_dns_removal_held_until_timestamp_seconds") > 0.0);
    // Held for removal-hold and no longer: the server's own plan, exactly.
    let (_, _, since, until) = stats.held().expect("held");
    assert_eq!(
        until - since,
        hold.as_secs(),
        "held from {since} until {until}"
    );

    let dns = rig.dns();
    eventually(LIMIT, "the removal applied after the hold", || async {
        a(dns, API).await.is_empty()
    })
    .await;
    // The hold began at or before `held_seen`: it cannot have ended sooner than this.
    assert!(
        held_seen.elapsed() + Duration::from_millis(500) >= hold,
        "applied {:?} after the hold was seen",
        held_seen.elapsed()
    );
    // And it ended: applied by a refresh after `until` (one every second here), not
    // held on (the bound is generous, for a loaded machine: 30 refreshes).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now <= until + 30,
        "applied at {now}, the hold ended at {until}"
    );
    assert!(a(dns, ZERO_CONFIG).await.is_empty());
    assert_eq!(stats.removal_held.load(Ordering::Relaxed), 0);
    let m = rig.metrics().await;
    assert_eq!(sample(&m, "privatelink_dns_removal_held "), 0.0);
    assert_eq!(
        std::fs::read_to_string(&rig.cache).unwrap(),
        cache,
        "an empty result never overwrites the cache"
    );

    // New endpoints: additions apply at once.
    let vpc = Vpc::create(rig.moto.client()).await;
    vpc.endpoint(SSM, &[2], &[("privatelink-dns/name", "api")])
        .await;
    eventually(LIMIT, "new endpoint served", || async {
        a(dns, API).await == ["10.0.3.4"]
    })
    .await;
    // Emptied again: held; a reload (what SIGHUP does) applies it at once.
    rig.moto.reset();
    let stats2 = stats.clone();
    eventually(LIMIT, "removal held again", || {
        let held = stats2.removal_held.load(Ordering::Relaxed);
        async move { held > 0 }
    })
    .await;
    assert_eq!(a(dns, API).await, ["10.0.3.4"]);
    let reloaded = config(
        &rig.proxy.url(),
        &rig.vpc.id,
        &rig.cache,
        "removal-hold = \"1h\"",
    );
    rig.server.reload(reloaded).await;
    assert!(a(dns, API).await.is_empty(), "applied by the reload");
    assert_eq!(stats.removal_held.load(Ordering::Relaxed), 0);
    rig.server.shutdown().await;
}

/// An endpoint recreated (another endpoint, other addresses, the same name): its
/// name loses no address, so the new ones are served at the next refresh, with an
/// hour's removal hold in force. A cold start from a cache whose addresses the API
/// now replaces serves the API's at its first call too (not held), and /readyz says
/// the data is from AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_endpoint_and_a_stale_cache_are_replacements_not_removals() {
    if !moto_available() {
        return;
    }
    let rig = Rig::start("removal-hold = \"1h\"").await;
    let dns = rig.dns();
    // The replacement, made before the old one goes (so it gets other addresses);
    // tagged for `api` once the old one is deleted.
    let new = rig.vpc.endpoint_without_private_dns(SSM, &[0, 1]).await;
    rig.vpc.delete(&rig.endpoint).await;
    tag_api(&rig.vpc, &new).await;
    let old = ["10.0.1.4", "10.0.2.4"];
    eventually(LIMIT, "the new endpoint's addresses served", || async {
        let now = a(dns, API).await;
        now.len() == 2 && now.iter().all(|ip| !old.contains(&ip.as_str()))
    })
    .await;
    let replaced = a(dns, API).await;
    assert_eq!(rig.stats().held(), None);
    rig.server.shutdown().await;

    // Cold start: the cache still has the old addresses; EC2 answers with others.
    let cfg = config(
        &rig.proxy.url(),
        &rig.vpc.id,
        &rig.cache,
        "removal-hold = \"1h\"",
    );
    let cached = std::fs::read_to_string(&rig.cache).unwrap();
    assert!(cached.contains(&replaced[0]), "{cached}");
    // Created before the cached one goes, so it has other addresses.
    let newest = rig.vpc.endpoint_without_private_dns(SSM, &[0, 2]).await;
    rig.vpc.delete(&new).await;
    tag_api(&rig.vpc, &newest).await;
    let server = Server::start(&cfg).await.unwrap();
    // The cache serves at once; the first EC2 call waits a random part of
    // refresh-interval (1 s here), then its answer replaces the cache's.
    let dns = server.udp_addrs()[0];
    eventually(LIMIT, "the API's addresses replace the cache's", || async {
        let now = a(dns, API).await;
        now.len() == 2 && now.iter().all(|ip| !replaced.contains(ip))
    })
    .await;
    assert_eq!(server.stats().held(), None);
    let (status, body) = http_get(server.http_addr().unwrap(), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data from AWS"), "{body}");
    server.shutdown().await;
}

/// Tags `endpoint` for the `api` record.
async fn tag_api(vpc: &Vpc, endpoint: &str) {
    vpc.ec2
        .create_tags()
        .resources(endpoint)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("privatelink-dns/name")
                .value("api")
                .build(),
        )
        .send()
        .await
        .unwrap();
}

fn inventory(region: &str, vpc: &str) -> Inventory {
    Inventory {
        targets: vec![TargetInventory {
            target: Target {
                region: Some(region.into()),
                role_arn: None,
            },
            account: Some("123456789012".into()),
            clusters: Vec::new(),
            endpoints: vec![Endpoint {
                id: "vpce-0aaa".into(),
                vpc_id: vpc.into(),
                service_name: SSM.into(),
                state: "available".into(),
                tags: [("privatelink-dns/name".to_string(), "api".to_string())].into(),
                private_dns_names: vec!["ssm.ap-northeast-1.amazonaws.com".into()],
                private_dns_enabled: true,
                dns_record_ip_type: None,
                ip_address_type: None,
                inbound_resolver_only: false,
                enis: vec![Eni {
                    id: "eni-1".into(),
                    availability_zone: "ap-northeast-1a".into(),
                    subnet_id: "subnet-1".into(),
                    ipv4: vec!["172.31.9.9".parse().unwrap()],
                    ipv6: vec![],
                }],
            }],
        }],
    }
}

/// Cold start with the EC2 API down: a cache saved for another region, VPC set or
/// role is not served and /readyz names what has no data; one saved for this config is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_serves_only_a_cache_saved_for_this_config() {
    aws_env();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    // Nothing listens there: every call fails at once.
    let down = format!("http://127.0.0.1:{}", support::free_port());
    let ours = config(&down, "vpc-0ours", &cache, "");
    privatelink_dns::cache::save(&cache, &ours, &inventory("ap-northeast-1", "vpc-0ours"), 1)
        .unwrap();

    // (config, serves the cached addresses)
    let role = "role-arn = \"arn:aws:iam::210987654321:role/other\"";
    let rows = [
        ("this config", config(&down, "vpc-0ours", &cache, ""), true),
        (
            "another region",
            Config::from_toml(
                &config_text(&down, "vpc-0ours", &cache, "")
                    .replace("\"ap-northeast-1\"", "\"eu-west-1\""),
                "t",
            )
            .unwrap(),
            false,
        ),
        (
            "another VPC set",
            config(&down, "vpc-0theirs", &cache, ""),
            false,
        ),
        (
            "another role",
            config(&down, "vpc-0ours", &cache, role),
            false,
        ),
    ];
    for (what, cfg, served) in rows {
        let server = Server::start(&cfg).await.unwrap();
        let dns = server.udp_addrs()[0];
        let http = server.http_addr().unwrap();
        let (status, body) = http_get(http, "/readyz").await;
        let m = http_get(http, "/metrics").await.1;
        if served {
            assert_eq!(a(dns, API).await, ["172.31.9.9"], "{what}");
            assert_eq!(a(dns, ZERO_CONFIG).await, ["172.31.9.9"], "{what}");
            assert_eq!(status, 200, "{what}: {body}");
            assert!(body.contains("cache file"), "{what}: {body}");
            assert_eq!(
                sample(&m, "privatelink_dns_endpoints_discovered"),
                1.0,
                "{what}"
            );
            assert_eq!(
                sample(&m, "privatelink_dns_serving_from_cache"),
                1.0,
                "{what}"
            );
        } else {
            assert!(a(dns, API).await.is_empty(), "{what}");
            assert!(a(dns, ZERO_CONFIG).await.is_empty(), "{what}");
            assert_eq!(status, 503, "{what}: {body}");
            let target = cfg.targets()[0].to_string();
            assert!(body.contains(&target), "{what}: names {target}: {body}");
            assert_eq!(
                sample(&m, "privatelink_dns_targets_without_data"),
                1.0,
                "{what}"
            );
            assert_eq!(
                sample(&m, "privatelink_dns_endpoints_discovered"),
                0.0,
                "{what}"
            );
        }
        server.shutdown().await;
    }
}

/// A cache write that fails midway (the kernel's file-size limit, as a full disk
/// would) is counted, leaves no temporary file, and the previous cache stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cache_write_is_counted_and_leaves_the_old_file() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0, 1], &[("privatelink-dns/name", "api")])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let old = b"{\"format\": 2, \"saved_at_unix\": 1, \"targets\": []}".to_vec();
    std::fs::write(&cache, &old).unwrap();
    let (dns_port, http_port) = (support::free_port(), support::free_port());
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:{dns_port}\"]\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [aws]\nregion = \"ap-northeast-1\"\nendpoint-url = \"{}\"\nrefresh-interval = \"1s\"\ncall-timeout = \"900ms\"\n\
         cache-file = \"{}\"\n[[zone]]\norigin = \"internal.example.com\"\n[[zone.record]]\n\
         name = \"api\"\nvpc-endpoint-tags = {{ \"privatelink-dns/name\" = \"api\" }}\n",
        moto.url(),
        cache.display()
    );
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Daemon::start(&cfg_path, true);
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    wait_metric(http, "privatelink_dns_cache_write_failures_total", |v| {
        v >= 1.0
    })
    .await;
    let dns: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    assert_eq!(
        a(dns, API).await,
        ["10.0.1.4", "10.0.2.4"],
        "served all the same"
    );
    drop(child);
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        old,
        "the old cache is whole"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "no temporary file: {names:?}"
    );
}

/// A target that serves only `[[discover]]` asks for its VPCs' endpoints alone; an
/// endpoint of another VPC in the answer is an answer we cannot trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_asks_for_its_vpcs_and_refuses_others() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0], &[]).await;
    let other = Vpc::create(moto.client()).await;
    other.endpoint(SSM, &[1, 2], &[]).await;
    let proxy = FaultProxy::start(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&proxy.url(), &vpc.id, &dir.path().join("c.json"), "");
    let (head, _) = text.split_once("[[zone]]").unwrap();
    let cfg = Config::from_toml(
        &format!("{head}[[discover]]\nvpc-ids = [\"{}\"]\n", vpc.id),
        "t",
    )
    .unwrap();
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];
    // The other VPC's endpoint is not even asked for: every DescribeVpcEndpoints names
    // our VPC alone.
    assert_eq!(a(dns, ZERO_CONFIG).await, ["10.0.1.4"]);
    assert_eq!(server.served().endpoints, 1);
    let asked: Vec<_> = moto
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeVpcEndpoints")
        .collect();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|c| c.vpcs == [vpc.id.clone()]),
        "{asked:?}"
    );

    let stats = server.stats().clone();
    let before = stats.failures(FailureReason::InvalidResponse);
    proxy.set(
        Fault::Replace(
            format!("<vpcId>{}</vpcId>", vpc.id),
            format!("<vpcId>{}</vpcId>", other.id),
        ),
        Some("DescribeVpcEndpoints"),
    );
    eventually(LIMIT, "an endpoint of another VPC refused", || {
        let n = stats.failures(FailureReason::InvalidResponse);
        async move { n > before }
    })
    .await;
    assert_eq!(a(dns, ZERO_CONFIG).await, ["10.0.1.4"]);
    server.shutdown().await;
}

/// The real binary, killed on drop.
struct Daemon(std::process::Child);

impl Daemon {
    /// Starts the daemon on `config`; with `small_files`, no file it writes may grow
    /// past 200 bytes (RLIMIT_FSIZE, SIGXFSZ ignored): writes fail as on a full disk.
    fn start(config: &Path, small_files: bool) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
        support::aws_env_for(&mut cmd)
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if small_files {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: 200,
                        rlim_max: 200,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Daemon(cmd.spawn().unwrap())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, sig) }, 0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls the metric `name` at `http` until `check` holds for its value.
async fn wait_metric(http: SocketAddr, name: &str, check: impl Fn(f64) -> bool) {
    eventually(LIMIT, name, || async {
        if tokio::net::TcpStream::connect(http).await.is_err() {
            return false;
        }
        let m = http_get(http, "/metrics").await.1;
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .is_some_and(&check)
    })
    .await;
}

/// The real binary: a held removal (hold one hour) is applied by SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_held_removal_at_once() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0, 1], &[("privatelink-dns/name", "api")])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (dns_port, http_port) = (support::free_port(), support::free_port());
    let text = config_text(
        &moto.url(),
        &vpc.id,
        &dir.path().join("c.json"),
        "removal-hold = \"1h\"",
    )
    .replace("127.0.0.1:0\"]", &format!("127.0.0.1:{dns_port}\"]"))
    .replace("\"127.0.0.1:0\"", &format!("\"127.0.0.1:{http_port}\""));
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let daemon = Daemon::start(&path, false);
    let (dns, http): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], dns_port).into(),
        ([127, 0, 0, 1], http_port).into(),
    );
    wait_metric(http, "privatelink_dns_ready", |v| v == 1.0).await;
    assert_eq!(a(dns, API).await, ["10.0.1.4", "10.0.2.4"]);

    moto.reset();
    wait_metric(http, "privatelink_dns_removal_held ", |v| v == 1.0).await;
    assert_eq!(a(dns, API).await, ["10.0.1.4", "10.0.2.4"], "held");
    daemon.signal(libc::SIGHUP);
    eventually(LIMIT, "SIGHUP applies the removal", || async {
        a(dns, API).await.is_empty()
    })
    .await;
    wait_metric(http, "privatelink_dns_removal_held ", |v| v == 0.0).await;
}

/// An API that hands out a page token it already gave, in each of the three paged
/// calls: the refresh fails as an invalid answer instead of looping, or stopping
/// quietly with part of the list, and the answers stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_page_token_fails_the_refresh() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    // 12 tagged endpoints (3 pages of 5, and 3 of their ENIs), and zero-config names
    // of 11 more services (12 services: 3 pages of DescribeVpcEndpointServices; a
    // token can only come back a second time from a third page).
    for i in 0..12 {
        vpc.endpoint(SSM, &[i % 3], &[("privatelink-dns/name", "api")])
            .await;
    }
    for svc in [
        "ec2",
        "sts",
        "logs",
        "kms",
        "ecr.api",
        "ecr.dkr",
        "secretsmanager",
        "ssmmessages",
        "ec2messages",
        "monitoring",
        "sqs",
    ] {
        vpc.endpoint(&format!("com.amazonaws.ap-northeast-1.{svc}"), &[0], &[])
            .await;
    }
    let proxy = FaultProxy::start(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c.json");
    let server = Server::start(&config(&proxy.url(), &vpc.id, &cache, "page-size = 5"))
        .await
        .unwrap();
    let dns = server.udp_addrs()[0];
    let all = a(dns, API).await;
    assert_eq!(all.len(), 12, "three pages of endpoints: {all:?}");
    let kms = a(dns, "kms.ap-northeast-1.amazonaws.com.").await;
    assert_eq!(kms.len(), 1, "{kms:?}");
    let calls = moto.calls();
    for action in [
        "DescribeVpcEndpoints",
        "DescribeNetworkInterfaces",
        "DescribeVpcEndpointServices",
    ] {
        assert!(
            calls.iter().any(|c| c.action == action && c.next_page),
            "{action} went over pages"
        );
    }
    let stats = server.stats().clone();
    for action in [
        "DescribeVpcEndpoints",
        "DescribeNetworkInterfaces",
        "DescribeVpcEndpointServices",
    ] {
        let before = stats.failures(FailureReason::InvalidResponse);
        let faulted = proxy.faulted.load(Ordering::Relaxed);
        proxy.set(Fault::RepeatNextToken, Some(action));
        eventually(LIMIT, &format!("a repeated {action} token refused"), || {
            let n = stats.failures(FailureReason::InvalidResponse);
            async move { n > before }
        })
        .await;
        assert!(proxy.faulted.load(Ordering::Relaxed) > faulted, "{action}");
        assert_eq!(a(dns, API).await, all, "{action}: answers unchanged");
        assert_eq!(a(dns, "kms.ap-northeast-1.amazonaws.com.").await, kms);
        proxy.clear();
    }
    server.shutdown().await;
}
