//! AWS discovery against the real EC2 API emulator (moto, see tests/support), with
//! the whole server on port 0 and the hickory client asking it.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use privatelink_dns::app::Server;
use privatelink_dns::config::Config;
use privatelink_dns::discovery::FailureReason;
use support::{Moto, Vpc, a, ask, aws_env, eventually, moto_available};

const SSM: &str = "com.amazonaws.ap-northeast-1.ssm";
const S3: &str = "com.amazonaws.ap-northeast-1.s3";

/// The test config: AWS-backed records in zone internal.example.com, then a
/// [[discover]] block for the VPC. `extra` goes after the zone's records.
fn config_text(moto_url: &str, vpc: &str, records: &str, aws_extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[aws]
region = "ap-northeast-1"
endpoint-url = "{moto_url}"
refresh-interval = "3s"
call-timeout = "2s"
max-backoff = "2s"
# These tests follow endpoints that come and go; the removal guard has its own
# tests (tests/data_safety.rs).
removal-hold = "0s"
{aws_extra}

[[zone]]
origin = "internal.example.com"
ttl = 30

[[zone.record]]
name = "api"
vpc-endpoint-tags = {{ "privatelink-dns/name" = "api" }}

{records}

[[discover]]
vpc-ids = ["{vpc}"]
ttl = 20
"#
    )
}

fn config(moto: &Moto, vpc: &str, records: &str) -> Config {
    Config::from_toml(&config_text(&moto.url(), vpc, records, ""), "aws-test.toml").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_tagged_and_zero_config_names() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let ssm = vpc.endpoint(SSM, &[0, 1], &[]).await;
    vpc.endpoint(SSM, &[2], &[("privatelink-dns/name", "api")])
        .await;
    let other_vpc = Vpc::create(moto.client()).await;
    other_vpc
        .endpoint(S3, &[0], &[("privatelink-dns/name", "api")])
        .await;
    vpc.endpoint(S3, &[0, 1, 2], &[]).await;
    let vendor = vpc.service("*.vendor.example.net").await;
    vpc.endpoint(&vendor, &[1], &[]).await;
    let pending = vpc.endpoint(SSM, &[0], &[("fake:state", "pending")]).await;
    let records = format!(
        "[[zone.record]]\nname = \"@\"\nvpc-endpoint = \"{ssm}\"\n\
         [[zone.record]]\nname = \"pending\"\nvpc-endpoint = \"{pending}\"\n"
    );
    let cfg = config(&moto, &vpc.id, &records);
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];
    assert!(server.served().ready());

    // Explicit endpoint: one ENI per subnet, IPs inside the subnets (the fake's canary).
    assert_eq!(
        a(dns, "internal.example.com.").await,
        ["10.0.1.4", "10.0.2.4"]
    );
    // Tags: the union of every tagged endpoint, in any VPC.
    let api = a(dns, "api.internal.example.com.").await;
    assert_eq!(api.len(), 2, "{api:?}");
    assert!(api.contains(&"10.0.3.4".to_string()), "{api:?}");
    // A pending endpoint is not served: the name exists without addresses (NODATA).
    let r = ask(dns, "pending.internal.example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());

    // Zero-config: every private DNS name is its own zone apex, with SOA and AA.
    let ssm_ips = a(dns, "ssm.ap-northeast-1.amazonaws.com.").await;
    assert_eq!(
        ssm_ips.len(),
        3,
        "both available ssm endpoints in the VPC: {ssm_ips:?}"
    );
    assert_eq!(a(dns, "s3.ap-northeast-1.amazonaws.com.").await.len(), 3);
    assert_eq!(
        a(dns, "my-bucket.s3.ap-northeast-1.amazonaws.com.")
            .await
            .len(),
        3,
        "wildcard"
    );
    assert_eq!(
        a(dns, "anything.vendor.example.net.").await.len(),
        1,
        "wildcard of an endpoint service"
    );
    for apex in [
        "ssm.ap-northeast-1.amazonaws.com.",
        "s3.ap-northeast-1.amazonaws.com.",
        "vendor.example.net.",
    ] {
        let r = ask(dns, apex, RecordType::SOA).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{apex}");
        assert!(r.metadata.authoritative, "{apex}");
        assert_eq!(r.answers.len(), 1, "{apex}");
    }
    // Wildcard name without AAAA: NODATA, not NXDOMAIN.
    let r = ask(
        dns,
        "my-bucket.s3.ap-northeast-1.amazonaws.com.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].ttl, 60, "min(SOA TTL, minimum)");
    // The other VPC's s3 endpoint is not in the [[discover]] block.
    assert_eq!(server.stats().failures(FailureReason::Other), 0);
    server.shutdown().await;
}

/// S3 and DynamoDB endpoints with `PrivateDnsOnlyForInboundResolverEndpoint`: AWS
/// answers their private names with the endpoint's addresses only for on-prem
/// queries, which is what we are for: zero-config serves every name (the wildcard
/// too), and `discover` marks them (issue #24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_aws_answers_only_for_on_prem_are_served_and_marked() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let s3 = vpc.endpoint_inbound_resolver_only(S3, &[0, 1]).await;
    let text = config_text(&moto.url(), &vpc.id, "", "");
    let server = Server::start(&Config::from_toml(&text, "t.toml").unwrap())
        .await
        .unwrap();
    let dns = server.udp_addrs()[0];
    assert_eq!(
        a(dns, "s3.ap-northeast-1.amazonaws.com.").await,
        ["10.0.1.4", "10.0.2.4"]
    );
    assert_eq!(
        a(dns, "My-Bucket.S3.ap-northeast-1.amazonaws.com.").await,
        ["10.0.1.4", "10.0.2.4"],
        "the wildcard name, in any case"
    );
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
        support::aws_env_for(&mut cmd)
            .arg("discover")
            .arg("--config")
            .arg(&path);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let table = String::from_utf8(run(false).stdout).unwrap();
    let marked = format!("{s3} (for on-prem: inbound-resolver only)");
    assert_eq!(
        table.lines().filter(|l| l.contains(&marked)).count(),
        4,
        "s3 and *.s3, two addresses each, marked:\n{table}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&run(true).stdout).unwrap();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{doc:#}");
    assert!(
        records
            .iter()
            .all(|r| r["inbound_resolver_only"] == serde_json::Value::Bool(true)),
        "{doc:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_added_then_endpoint_deleted() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let ep = vpc.endpoint(SSM, &[0], &[]).await;
    let records = format!("[[zone.record]]\nname = \"@\"\nvpc-endpoint = \"{ep}\"\n");
    let server = Server::start(&config(&moto, &vpc.id, &records))
        .await
        .unwrap();
    let dns = server.udp_addrs()[0];
    assert_eq!(a(dns, "internal.example.com.").await, ["10.0.1.4"]);
    let serial = |m: Message| match &m.answers[0].data {
        RData::SOA(soa) => soa.serial,
        other => panic!("{other:?}"),
    };
    let serial_before = serial(ask(dns, "internal.example.com.", RecordType::SOA).await);

    // A subnet is added: the new ENI's IP is served within one refresh interval (1 s,
    // ±10%) plus the discovery itself.
    vpc.add_subnet(&ep, 1).await;
    let took = eventually(
        Duration::from_secs(30),
        "new subnet's IP served",
        || async { a(dns, "internal.example.com.").await == ["10.0.1.4", "10.0.2.4"] },
    )
    .await;
    eprintln!("subnet added → answered in {took:?}");
    assert_eq!(
        a(dns, "ssm.ap-northeast-1.amazonaws.com.").await,
        ["10.0.1.4", "10.0.2.4"],
        "zero-config name follows too"
    );
    let serial_after = serial(ask(dns, "internal.example.com.", RecordType::SOA).await);
    assert!(
        serial_after > serial_before,
        "{serial_after} > {serial_before}"
    );

    // The endpoint is deleted: its addresses are gone; the configured name stays (NODATA).
    vpc.delete(&ep).await;
    eventually(
        Duration::from_secs(30),
        "deleted endpoint's addresses gone",
        || async {
            let r = ask(dns, "internal.example.com.", RecordType::A).await;
            r.metadata.response_code == ResponseCode::NoError && r.answers.is_empty()
        },
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_300_endpoints() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    for i in 0..300 {
        vpc.endpoint(SSM, &[i % 3], &[("privatelink-dns/name", "api")])
            .await;
    }
    let text = config_text(&moto.url(), &vpc.id, "", "page-size = 40");
    let cfg = Config::from_toml(&text, "aws-test.toml").unwrap();
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];
    // 300 endpoints over 8 pages, 300 ENIs over 2 filter batches of 8 pages, all served:
    // 300 A records only fit over TCP.
    let api = a(dns, "api.internal.example.com.").await;
    assert_eq!(api.len(), 300);
    assert_eq!(server.served().endpoints, 300);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_down_keeps_answers_then_recovers() {
    if !moto_available() {
        return;
    }
    aws_env();
    let mut moto = Moto::start();
    let port = moto.port;
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0, 1], &[("privatelink-dns/name", "api")])
        .await;
    let server = Server::start(&config(&moto, &vpc.id, "")).await.unwrap();
    let dns = server.udp_addrs()[0];
    let before = a(dns, "api.internal.example.com.").await;
    assert_eq!(before, ["10.0.1.4", "10.0.2.4"]);
    let zero_config = a(dns, "ssm.ap-northeast-1.amazonaws.com.").await;

    moto.stop();
    let stats = server.stats().clone();
    eventually(Duration::from_secs(30), "a failed refresh", || {
        let stats = stats.clone();
        async move { stats.failures(FailureReason::Unreachable) > 0 }
    })
    .await;
    // Stale on error: every answer is what it was.
    for _ in 0..3 {
        assert_eq!(a(dns, "api.internal.example.com.").await, before);
        assert_eq!(
            a(dns, "ssm.ap-northeast-1.amazonaws.com.").await,
            zero_config
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(stats.consecutive_failures.load(Ordering::Relaxed) > 0);

    // The emulator returns (empty: it keeps no state), seeded with a changed layout.
    let moto = Moto::start_on(port);
    let vpc2 = Vpc::create(moto.client()).await;
    vpc2.endpoint(SSM, &[2], &[("privatelink-dns/name", "api")])
        .await;
    let successes = stats.successes.load(Ordering::Relaxed);
    eventually(Duration::from_secs(30), "recovery", || async {
        a(dns, "api.internal.example.com.").await == ["10.0.3.4"]
    })
    .await;
    assert!(stats.successes.load(Ordering::Relaxed) > successes);
    assert_eq!(stats.consecutive_failures.load(Ordering::Relaxed), 0);
    drop(vpc);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_from_cache_and_corrupt_cache_ignored() {
    if !moto_available() {
        return;
    }
    aws_env();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("snapshot.json");
    let mut moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0, 2], &[("privatelink-dns/name", "api")])
        .await;
    let aws_extra = format!("cache-file = \"{}\"", cache.display());
    let text = config_text(&moto.url(), &vpc.id, "", &aws_extra);
    let cfg = Config::from_toml(&text, "aws-test.toml").unwrap();
    let server = Server::start(&cfg).await.unwrap();
    let want = a(server.udp_addrs()[0], "api.internal.example.com.").await;
    assert_eq!(want, ["10.0.1.4", "10.0.3.4"]);
    server.shutdown().await;
    assert!(cache.exists(), "written after a successful refresh");

    // Emulator down, cold start: the cache is served, and says so.
    moto.stop();
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];
    assert!(server.served().ready());
    assert!(server.served().from_cache());
    assert_eq!(a(dns, "api.internal.example.com.").await, want);
    assert_eq!(
        a(dns, "ssm.ap-northeast-1.amazonaws.com.").await,
        want,
        "zero-config zones too"
    );
    server.shutdown().await;

    // A corrupt cache is reported and ignored: the server starts and serves the
    // configured names without addresses.
    std::fs::write(&cache, b"{\"format\": 1, \"inventory\": garbage").unwrap();
    let server = Server::start(&cfg).await.unwrap();
    assert!(!server.served().ready());
    let r = ask(
        server.udp_addrs()[0],
        "api.internal.example.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_command_prints_what_would_be_served() {
    if !moto_available() {
        return;
    }
    let mut moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let ep = vpc
        .endpoint(SSM, &[0, 1], &[("privatelink-dns/name", "api")])
        .await;
    let pending = vpc.endpoint(SSM, &[2], &[("fake:state", "pending")]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(&moto.url(), &vpc.id, "", "")).unwrap();
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
        support::aws_env_for(&mut cmd)
            .arg("discover")
            .arg("--config")
            .arg(&path);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };

    let out = run(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    for want in [
        "api.internal.example.com.",
        "ssm.ap-northeast-1.amazonaws.com.",
        "10.0.1.4",
        "10.0.2.4",
        ep.as_str(),
        "ap-northeast-1a",
        "ap-northeast-1c",
    ] {
        assert!(table.contains(want), "{want} in\n{table}");
    }
    assert!(
        table.contains(&format!("skipped: {pending} (not available: pending)")),
        "unavailable endpoints are named:\n{table}"
    );
    assert!(
        !table.contains("10.0.3.4"),
        "the pending endpoint's IP is not served:\n{table}"
    );

    let out = run(true);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "2 names × 2 addresses: {doc:#}");
    assert!(
        records
            .iter()
            .all(|r| r["type"] == "A" && r["endpoint"] == ep.as_str())
    );
    assert_eq!(
        doc["endpoints"][0]["endpoints"].as_array().unwrap().len(),
        2
    );

    moto.stop();
    let out = run(false);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("unreachable"),
        "{err}"
    );
}

/// `role-arn`: the SDK assumes the role through STS (moto's, via the standard
/// AWS_ENDPOINT_URL_STS) and signs the EC2 calls with the role's credentials; when STS
/// cannot be reached, discovery fails as a credentials problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_assumes_the_role_for_ec2_calls() {
    if !moto_available() {
        return;
    }
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    vpc.endpoint(SSM, &[0], &[("privatelink-dns/name", "api")])
        .await;
    let role = "arn:aws:iam::123456789012:role/privatelink-dns-reader";
    const BASE_KEY: &str = "AKIAPLDNSTESTBASE001"; // upper case: moto reads it back
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let aws_extra = format!("role-arn = \"{role}\"");
    std::fs::write(&path, config_text(&moto.url(), &vpc.id, "", &aws_extra)).unwrap();
    let discover = |sts: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
        support::aws_env_for(&mut cmd)
            .env("AWS_ACCESS_KEY_ID", BASE_KEY)
            .env("AWS_ENDPOINT_URL_STS", sts)
            .args(["discover", "--json", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };

    let out = discover(&moto.url());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "api.internal.example.com." && r["address"] == "10.0.1.4"),
        "{doc:#}"
    );
    let calls = moto.requests();
    let assumed: Vec<_> = calls
        .iter()
        .filter(|(service, action, _)| service == "sts" && action == "AssumeRole")
        .collect();
    assert_eq!(assumed.len(), 1, "{calls:?}");
    assert_eq!(
        assumed[0].2, BASE_KEY,
        "AssumeRole is signed with the base credentials"
    );
    let ec2: Vec<_> = calls.iter().filter(|(s, _, _)| s == "ec2").collect();
    assert!(!ec2.is_empty(), "{calls:?}");
    for (_, action, key) in &ec2 {
        if action.starts_with("Describe") {
            assert!(
                key.starts_with("ASIA"),
                "{action} signed with {key}, not the role's key"
            );
        }
    }

    // STS unreachable: no credentials, so no EC2 call, and the error says why.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let out = discover(&closed);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credentials"), "{err}");
}

/// DescribeVpcEndpointServices over several pages: every service's private DNS name
/// is served (7 services, 5 a page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_names_over_several_pages() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let services = [
        "ssm",
        "ec2",
        "sts",
        "logs",
        "kms",
        "ecr.api",
        "secretsmanager",
    ];
    for svc in services {
        vpc.endpoint(&format!("com.amazonaws.ap-northeast-1.{svc}"), &[0], &[])
            .await;
    }
    let text = config_text(&moto.url(), &vpc.id, "", "page-size = 5");
    let server = Server::start(&Config::from_toml(&text, "aws-test.toml").unwrap())
        .await
        .unwrap();
    let dns = server.udp_addrs()[0];
    for svc in services {
        let name = format!("{svc}.ap-northeast-1.amazonaws.com.");
        assert_eq!(a(dns, &name).await.len(), 1, "{name}");
    }
    // A later page was asked for (a NextToken sent): one refresh alone shows that, two
    // refreshes of one page each would not.
    let calls = moto.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.action == "DescribeVpcEndpointServices" && c.next_page),
        "{calls:?}"
    );
    server.shutdown().await;
}

/// AAAA from EC2 end to end: dual-stack subnets, endpoints whose ENIs have IPv6
/// addresses, and DnsOptions.DnsRecordIpType choosing A, AAAA or both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_endpoints_and_dns_record_ip_types() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create_dualstack(moto.client()).await;
    let v4 = vpc.endpoint_ip(SSM, &[0], "ipv4", "ipv4").await;
    let dual = vpc.endpoint_ip(SSM, &[1], "dualstack", "dualstack").await;
    let v6 = vpc.endpoint_ip(SSM, &[2], "dualstack", "ipv6").await;
    let records = format!(
        "[[zone.record]]\nname = \"v4\"\nvpc-endpoint = \"{v4}\"\n\
         [[zone.record]]\nname = \"dual\"\nvpc-endpoint = \"{dual}\"\n\
         [[zone.record]]\nname = \"v6\"\nvpc-endpoint = \"{v6}\"\n"
    );
    let server = Server::start(&config(&moto, &vpc.id, &records))
        .await
        .unwrap();
    let dns = server.udp_addrs()[0];
    let both = |name: &'static str| async move {
        let a4 = support::addresses(&ask(dns, name, RecordType::A).await);
        let a6 = support::addresses(&ask(dns, name, RecordType::AAAA).await);
        (a4.len(), a6.len(), a6)
    };
    let (a, aaaa, _) = both("v4.internal.example.com.").await;
    assert_eq!((a, aaaa), (1, 0), "ipv4: A only");
    let (a, aaaa, six) = both("dual.internal.example.com.").await;
    assert_eq!((a, aaaa), (1, 1), "dualstack: both");
    assert!(
        six[0].ends_with("::4"),
        "the subnet's first address: {six:?}"
    );
    let (a, aaaa, _) = both("v6.internal.example.com.").await;
    assert_eq!((a, aaaa), (0, 1), "DnsRecordIpType ipv6: AAAA only");
    // A subnet added to the dual-stack endpoint: its new ENI has both families.
    vpc.add_subnet(&dual, 0).await;
    eventually(
        Duration::from_secs(20),
        "the new ENI's A and AAAA",
        || async { matches!(both("dual.internal.example.com.").await, (2, 2, _)) },
    )
    .await;
    server.shutdown().await;
}

/// Zero-config follows AWS: a service's private DNS name is answered from endpoints with
/// private DNS enabled only, unless the block says `private-dns = "any"`. Records that
/// name an endpoint are served whatever its setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_serves_private_dns_enabled_endpoints_only() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let vpc = Vpc::create(moto.client()).await;
    let on = vpc.endpoint(SSM, &[0], &[]).await; // 10.0.1.4
    let off = vpc.endpoint_without_private_dns(SSM, &[1]).await; // 10.0.2.4
    let ec2 = "com.amazonaws.ap-northeast-1.ec2";
    let ec2_off = vpc.endpoint_without_private_dns(ec2, &[2]).await; // 10.0.3.4
    let records = format!("[[zone.record]]\nname = \"named\"\nvpc-endpoint = \"{off}\"\n");
    let text = config_text(&moto.url(), &vpc.id, &records, "");
    let cfg = Config::from_toml(&text, "aws-test.toml").unwrap();
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];

    assert_eq!(
        a(dns, "ssm.ap-northeast-1.amazonaws.com.").await,
        ["10.0.1.4"]
    );
    let r = ask(dns, "ec2.ap-northeast-1.amazonaws.com.", RecordType::A).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::Refused,
        "no zone from an endpoint without private DNS: {r:?}"
    );
    assert_eq!(
        a(dns, "named.internal.example.com.").await,
        ["10.0.2.4"],
        "a record that names the endpoint is served"
    );

    // `discover` says which endpoints it skipped and why.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
    let out = support::aws_env_for(&mut cmd)
        .args(["discover", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for id in [&off, &ec2_off] {
        assert!(
            table.contains(&format!("skipped: {id} (private DNS disabled)")),
            "{id} in\n{table}"
        );
    }
    assert!(!table.contains(&format!("skipped: {on}")), "{table}");

    // Turning private DNS off and on in AWS moves the name with it.
    vpc.set_private_dns(&on, false).await;
    vpc.set_private_dns(&off, true).await;
    eventually(
        Duration::from_secs(15),
        "ssm follows PrivateDnsEnabled",
        || async { a(dns, "ssm.ap-northeast-1.amazonaws.com.").await == ["10.0.2.4"] },
    )
    .await;
    server.shutdown().await;

    // private-dns = "any": every endpoint in the VPC, as before.
    let any = text + "private-dns = \"any\"\n";
    let cfg = Config::from_toml(&any, "aws-test.toml").unwrap();
    let server = Server::start(&cfg).await.unwrap();
    let dns = server.udp_addrs()[0];
    assert_eq!(
        a(dns, "ssm.ap-northeast-1.amazonaws.com.").await,
        ["10.0.1.4", "10.0.2.4"]
    );
    assert_eq!(
        a(dns, "ec2.ap-northeast-1.amazonaws.com.").await,
        ["10.0.3.4"]
    );
    server.shutdown().await;
}

/// A config serving EKS clusters: `[[discover]] eks-clusters = ["*"]` for the VPC, a
/// record `k8s.internal.example.com` with `eks-cluster = "prod"`, EKS asked at `eks_url`.
fn eks_config(moto_url: &str, eks_url: &str, vpc: &str, hold: &str) -> Config {
    let text = config_text(
        moto_url,
        vpc,
        "[[zone.record]]\nname = \"k8s\"\neks-cluster = \"prod\"\n",
        &format!("eks-endpoint-url = \"{eks_url}\""),
    )
    .replace(
        "removal-hold = \"0s\"",
        &format!("removal-hold = \"{hold}\""),
    ) + "eks-clusters = [\"*\"]\n";
    Config::from_toml(&text, "eks.toml").unwrap()
}

/// EKS cluster API endpoints (issue #24): every cluster of the VPC with private
/// access, answered in any case, with the in-use ENIs described exactly "Amazon EKS
/// <name>"; a cluster without private access or in another VPC is not served; a
/// record can name a cluster; an ENI rotation is followed, and a rotation that
/// replaces every ENI at once is a replacement, applied despite a 10-minute hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_cluster_endpoints_are_served_and_follow_their_enis() {
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let eks = moto.eks();
    let vpc = Vpc::create(moto.client()).await;
    let other_vpc = Vpc::create(moto.client()).await;
    let prod = vpc.cluster(&eks, "prod", &[0, 1], true).await;
    let canary = vpc.cluster(&eks, "prod-canary", &[2], true).await;
    let public = vpc.cluster(&eks, "public", &[0], false).await;
    let elsewhere = other_vpc.cluster(&eks, "elsewhere", &[0], true).await;
    assert!(
        prod.chars().any(|c| c.is_ascii_uppercase()),
        "{prod}: EKS's upper-case hex"
    );
    let config = eks_config(&moto.url(), &moto.url(), &vpc.id, "10m");
    let server = Server::start(&config).await.unwrap();
    let dns = server.udp_addrs()[0];
    assert!(server.served().ready());

    let prod_ips = a(dns, &format!("{prod}.")).await;
    assert_eq!(prod_ips.len(), 2, "{prod_ips:?}");
    assert!(
        prod_ips
            .iter()
            .all(|ip| ip.starts_with("10.0.1.") || ip.starts_with("10.0.2."))
    );
    // Resolvers send 0x20-randomised case; the name is in lower case too.
    let mixed: String = prod
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    assert_eq!(a(dns, &format!("{mixed}.")).await, prod_ips);
    assert_eq!(a(dns, &format!("{}.", prod.to_lowercase())).await, prod_ips);
    let r = ask(dns, &format!("{prod}."), RecordType::SOA).await;
    assert!(r.metadata.authoritative, "its own zone");
    // prod-canary's ENI ("Amazon EKS prod-canary") is its own, not prod's.
    let canary_ips = a(dns, &format!("{canary}.")).await;
    assert_eq!(canary_ips.len(), 1);
    assert!(!prod_ips.contains(&canary_ips[0]));
    for (host, why) in [(&public, "no private access"), (&elsewhere, "another VPC")] {
        let r = ask(dns, &format!("{host}."), RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{why}");
    }
    // A name of our choosing.
    assert_eq!(a(dns, "k8s.internal.example.com.").await, prod_ips);

    // A rotation: one ENI replaced by a new one (as an upgrade does), followed
    // within two refreshes.
    let old = vpc.cluster_enis("prod").await;
    assert_eq!(old.len(), 2);
    let new = vpc.eni(2, "Amazon EKS prod").await;
    vpc.delete_eni(&old[0]).await;
    eventually(
        Duration::from_secs(10),
        "the rotated ENI served",
        || async {
            let ips = a(dns, &format!("{prod}.")).await;
            ips.len() == 2 && ips.iter().any(|ip| ip.starts_with("10.0.3."))
        },
    )
    .await;
    // Every ENI replaced within one refresh: still two addresses, no removal.
    let ids = vpc.cluster_enis("prod").await;
    for subnet in [0, 1] {
        vpc.eni(subnet, "Amazon EKS prod").await;
    }
    for id in &ids {
        vpc.delete_eni(id).await;
    }
    eventually(
        Duration::from_secs(10),
        "a rotation of every ENI applied at once (10m hold)",
        || async {
            let ips = a(dns, &format!("{prod}.")).await;
            ips.len() == 2 && !ips.iter().any(|ip| ip.starts_with("10.0.3."))
        },
    )
    .await;
    assert_eq!(server.stats().removal_held.load(Ordering::Relaxed), 0);
    assert!(!new.is_empty());
    server.shutdown().await;

    // `discover` lists what it serves and what it skips, and why.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = config_text(
        &moto.url(),
        &vpc.id,
        "",
        &format!("eks-endpoint-url = \"{}\"", moto.url()),
    ) + "eks-clusters = [\"*\"]\n";
    std::fs::write(&path, text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
    let out = support::aws_env_for(&mut cmd)
        .args(["discover", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("{}.", prod.to_lowercase())),
        "{table}"
    );
    assert!(table.contains("eks:prod "), "{table}");
    assert!(
        table.contains("skipped: eks:public (no private endpoint access)"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "skipped: eks:elsewhere (in another VPC: {})",
            other_vpc.id
        )),
        "{table}"
    );
    assert!(table.contains("and 4 EKS clusters"), "{table}");
}

/// EKS answers that fail (AccessDenied, an empty answer) keep the last good data,
/// and are counted; the denial names the permission (issue #24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_failures_keep_the_answers_and_name_the_permission() {
    use support::fault_proxy::{Fault, FaultProxy};
    if !moto_available() {
        return;
    }
    aws_env();
    let moto = Moto::start();
    let eks = moto.eks();
    let vpc = Vpc::create(moto.client()).await;
    let prod = vpc.cluster(&eks, "prod", &[0, 1], true).await;
    let proxy = FaultProxy::start(moto.port).await;
    let config = eks_config(&moto.url(), &proxy.url(), &vpc.id, "0s");
    let server = Server::start(&config).await.unwrap();
    let dns = server.udp_addrs()[0];
    let served = a(dns, &format!("{prod}.")).await;
    assert_eq!(served.len(), 2);
    let stats = server.stats().clone();
    for (fault, reason) in [
        (
            Fault::JsonError(403, "AccessDeniedException"),
            FailureReason::Denied,
        ),
        (Fault::EmptyJson, FailureReason::InvalidResponse),
    ] {
        let before = stats.failures(reason);
        proxy.set(fault.clone(), Some("/clusters"));
        eventually(
            Duration::from_secs(15),
            &format!("{fault:?} counted"),
            || async { stats.failures(reason) > before },
        )
        .await;
        assert_eq!(a(dns, &format!("{prod}.")).await, served, "{fault:?}: kept");
        assert_eq!(
            a(dns, "k8s.internal.example.com.").await,
            served,
            "{fault:?}: kept"
        );
        proxy.clear();
    }
    server.shutdown().await;
    // `discover` prints the denial with the permission it needs.
    proxy.set(
        Fault::JsonError(403, "AccessDeniedException"),
        Some("/clusters"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = config_text(
        &moto.url(),
        &vpc.id,
        "",
        &format!("eks-endpoint-url = \"{}\"", proxy.url()),
    ) + "eks-clusters = [\"*\"]\n";
    std::fs::write(&path, text).unwrap();
    let url = proxy.url();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatelink-dns"));
        support::aws_env_for(&mut cmd)
            .args(["discover", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{url}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("eks:ListClusters"), "{err}");
}
