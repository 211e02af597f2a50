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
    assert_eq!(sample(&after, "privatelink_dns_ready"), 1.0);
    assert!(after.contains("privatelink_dns_build_info{version="));
    assert!(
        !after.contains("refresh_attempts"),
        "no refresh metrics without AWS"
    );
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
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, m2) = get(http, "/metrics").await;
    let ok = "privatelink_dns_refresh_successes_total";
    assert!(
        sample(&m2, ok) > sample(&m1, ok),
        "refreshes keep succeeding"
    );
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
