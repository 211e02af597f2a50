//! Test support: the EC2 API emulator (moto with the patches in fake_ec2.py),
//! started on 127.0.0.1 per test and killed on drop, and a seeding client.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VpcEndpointType};

pub const REGION: &str = "ap-northeast-1";

/// The A and AAAA addresses of an answer, sorted, as text.
pub fn addresses(msg: &hickory_proto::op::Message) -> Vec<String> {
    use hickory_proto::rr::RData;
    let mut v: Vec<String> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Asks `addr` over UDP, and again over TCP when the answer is truncated.
pub async fn ask(
    addr: std::net::SocketAddr,
    name: &str,
    rtype: hickory_proto::rr::RecordType,
) -> hickory_proto::op::Message {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::tcp::TcpClientStream;
    use hickory_net::udp::UdpClientStream;
    use hickory_proto::rr::{DNSClass, Name};
    use std::str::FromStr;
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    let r = client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, rtype)
        .await
        .unwrap();
    if !r.metadata.truncation {
        return r.into_message();
    }
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, rtype)
        .await
        .unwrap()
        .into_message()
}

/// The A addresses `addr` answers for `name`, sorted.
pub async fn a(addr: std::net::SocketAddr, name: &str) -> Vec<String> {
    addresses(&ask(addr, name, hickory_proto::rr::RecordType::A).await)
}

/// Polls `check` until it holds; fails the test after `limit`. Returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET over HTTP/1.0; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the metrics sample whose line starts with `prefix` (name and labels).
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{metrics}"))
}

fn python() -> PathBuf {
    std::env::var_os("PRIVATELINK_DNS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Whether the emulator can run here. Under `scripts/test` (PRIVATELINK_DNS_E2E=1) a
/// missing venv is a failure; elsewhere the test is skipped with a message.
pub fn moto_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import moto, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("PRIVATELINK_DNS_E2E").is_some() {
        panic!(
            "moto is not installed in {} but PRIVATELINK_DNS_E2E is set: scripts/test installs it",
            python().display()
        );
    }
    if !ok {
        eprintln!(
            "SKIPPED: moto not installed (run scripts/test, or python3 -m venv .venv && .venv/bin/pip install 'moto[ec2]==5.2.5' flask flask-cors)"
        );
    }
    ok
}

/// Environment for code under test that uses the SDK default chain: dummy static
/// credentials, no IMDS, no profile files. Set once, before any test reads it.
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this before starting anything that reads the
        // environment, and Once makes the writes happen before any such read.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            // AssumeRole goes nowhere but here: port 9 on loopback, where nothing listens.
            std::env::set_var("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9");
            std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/privatelink-dns-test");
            std::env::set_var(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/privatelink-dns-test",
            );
        }
    });
}

/// The same environment, for a child process.
pub fn aws_env_for(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")
        .env("AWS_CONFIG_FILE", "/nonexistent/privatelink-dns-test")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/privatelink-dns-test",
        )
}

/// A port free for both TCP and UDP on 127.0.0.1 (at the time of asking).
/// One API call the emulator got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub action: String,
    /// It carried a NextToken: a page after the first.
    pub next_page: bool,
    /// The VPC ids its `vpc-id` filters named.
    pub vpcs: Vec<String>,
}

pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running emulator.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    /// Where it logs the API calls it gets (`FAKE_EC2_REQUEST_LOG`).
    log: PathBuf,
}

fn fake_ec2() -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_ec2.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).stdout(Stdio::null());
    cmd
}

impl Moto {
    /// An emulator on a port the kernel picks (port 0, read back from its "Running on"
    /// line): two tests can never end up on one emulator, as they could with a port
    /// found free and bound later.
    pub fn start() -> Moto {
        use std::io::BufRead;
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "privatelink-dns-fake-ec2-{}-{n}.log",
            std::process::id()
        ));
        let mut child = fake_ec2()
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("FAKE_EC2_REQUEST_LOG", &log)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the port, then keeps draining stderr (a full pipe would stall moto).
        std::thread::spawn(move || {
            const MARK: &str = "Running on http://127.0.0.1:";
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split(MARK).nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(digits.parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .expect("moto did not say which port it took within 30 s");
        Self::wait_ready(Moto {
            child: Some(child),
            port,
            log,
        })
    }

    /// An emulator on `port` (a restart where an earlier one was).
    pub fn start_on(port: u16) -> Moto {
        let log = Self::request_log(port);
        let _ = std::fs::remove_file(&log); // a previous emulator's
        let child = fake_ec2()
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("FAKE_EC2_REQUEST_LOG", &log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        Self::wait_ready(Moto {
            child: Some(child),
            port,
            log,
        })
    }

    fn wait_ready(moto: Moto) -> Moto {
        let port = moto.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !moto.ready() {
            assert!(
                Instant::now() < deadline,
                "moto did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn request_log(port: u16) -> PathBuf {
        std::env::temp_dir().join(format!("privatelink-dns-fake-ec2-{port}.log"))
    }

    /// Every API call so far, one `(service, action, access key id)` each.
    /// Every API call so far: what it was, and what it asked.
    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Some(Call {
                    action: f.get(1)?.to_string(),
                    next_page: f.get(3) == Some(&"next"),
                    vpcs: match f.get(4) {
                        Some(&"-") | None => Vec::new(),
                        Some(v) => v.split(',').map(str::to_string).collect(),
                    },
                })
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ').map(str::to_string);
                Some((f.next()?, f.next()?, f.next()?))
            })
            .collect()
    }

    fn ready(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
    }

    /// Empties the emulator, as a restart would (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"POST /moto-api/reset HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap();
        assert!(n >= 12 && &buf[9..12] == b"200", "reset: {:?}", &buf[..n]);
    }

    /// Kills the emulator (its state is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn remove_request_log(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    /// A client for seeding, with explicit dummy credentials.
    pub fn client(&self) -> Client {
        let conf = aws_sdk_ec2::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(self.url())
            .build();
        Client::from_conf(conf)
    }

    /// An EKS client for seeding, on the same emulator.
    pub fn eks(&self) -> aws_sdk_eks::Client {
        let conf = aws_sdk_eks::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(self.url())
            .build();
        aws_sdk_eks::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        self.remove_request_log();
    }
}

/// Sends a CreateVpcEndpoint request; returns the new endpoint's id.
async fn created(
    req: aws_sdk_ec2::operation::create_vpc_endpoint::builders::CreateVpcEndpointFluentBuilder,
) -> String {
    req.send()
        .await
        .unwrap()
        .vpc_endpoint
        .unwrap()
        .vpc_endpoint_id
        .unwrap()
}

/// A VPC with three subnets in three AZs, and helpers to add endpoints.
pub struct Vpc {
    pub ec2: Client,
    pub id: String,
    pub subnets: Vec<String>,
}

impl Vpc {
    pub async fn create(ec2: Client) -> Vpc {
        Self::create_with(ec2, false).await
    }

    /// A VPC with an Amazon-provided IPv6 /56 and three dual-stack subnets (a /64 each).
    pub async fn create_dualstack(ec2: Client) -> Vpc {
        Self::create_with(ec2, true).await
    }

    async fn create_with(ec2: Client, ipv6: bool) -> Vpc {
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .amazon_provided_ipv6_cidr_block(ipv6)
            .send()
            .await
            .unwrap()
            .vpc
            .unwrap();
        let id = vpc.vpc_id.unwrap();
        let v6: Option<std::net::Ipv6Addr> = vpc
            .ipv6_cidr_block_association_set
            .unwrap_or_default()
            .first()
            .and_then(|a| {
                a.ipv6_cidr_block
                    .as_deref()?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()
            });
        let mut subnets = Vec::new();
        for (i, az) in ["a", "c", "d"].iter().enumerate() {
            let mut req = ec2
                .create_subnet()
                .vpc_id(&id)
                .cidr_block(format!("10.0.{}.0/24", i + 1))
                .availability_zone(format!("{REGION}{az}"));
            if let Some(net) = v6 {
                let mut seg = net.segments();
                seg[3] |= i as u16 + 1;
                req = req.ipv6_cidr_block(format!("{}/64", std::net::Ipv6Addr::from(seg)));
            }
            let s = req.send().await.unwrap().subnet.unwrap().subnet_id.unwrap();
            subnets.push(s);
        }
        Vpc { ec2, id, subnets }
    }

    /// An interface endpoint with an `IpAddressType` and a `DnsOptions.DnsRecordIpType`.
    pub async fn endpoint_ip(
        &self,
        service: &str,
        subnets: &[usize],
        ip_address_type: &str,
        dns_record_ip_type: &str,
    ) -> String {
        use aws_sdk_ec2::types::{DnsOptionsSpecification, DnsRecordIpType, IpAddressType};
        let req = self
            .endpoint_request(service, subnets)
            .ip_address_type(IpAddressType::from(ip_address_type))
            .dns_options(
                DnsOptionsSpecification::builder()
                    .dns_record_ip_type(DnsRecordIpType::from(dns_record_ip_type))
                    .build(),
            );
        created(req).await
    }

    /// Creates an interface endpoint in the given subnets (indexes), with tags; returns its id.
    pub async fn endpoint(
        &self,
        service: &str,
        subnets: &[usize],
        tags: &[(&str, &str)],
    ) -> String {
        let mut req = self.endpoint_request(service, subnets);
        if !tags.is_empty() {
            let mut spec = TagSpecification::builder().resource_type(ResourceType::VpcEndpoint);
            for (k, v) in tags {
                spec = spec.tags(Tag::builder().key(*k).value(*v).build());
            }
            req = req.tag_specifications(spec.build());
        }
        created(req).await
    }

    /// An S3 or DynamoDB interface endpoint whose private DNS names AWS answers only
    /// for on-prem (`DnsOptions.PrivateDnsOnlyForInboundResolverEndpoint`).
    pub async fn endpoint_inbound_resolver_only(&self, service: &str, subnets: &[usize]) -> String {
        use aws_sdk_ec2::types::DnsOptionsSpecification;
        created(
            self.endpoint_request(service, subnets).dns_options(
                DnsOptionsSpecification::builder()
                    .private_dns_only_for_inbound_resolver_endpoint(true)
                    .build(),
            ),
        )
        .await
    }

    /// An interface endpoint with private DNS disabled, in the given subnets (indexes).
    pub async fn endpoint_without_private_dns(&self, service: &str, subnets: &[usize]) -> String {
        created(
            self.endpoint_request(service, subnets)
                .private_dns_enabled(false),
        )
        .await
    }

    /// Turns an endpoint's private DNS on or off (ModifyVpcEndpoint).
    pub async fn set_private_dns(&self, endpoint: &str, enabled: bool) {
        self.ec2
            .modify_vpc_endpoint()
            .vpc_endpoint_id(endpoint)
            .private_dns_enabled(enabled)
            .send()
            .await
            .unwrap();
    }

    /// An interface endpoint request with private DNS, in the given subnets (indexes).
    fn endpoint_request(
        &self,
        service: &str,
        subnets: &[usize],
    ) -> aws_sdk_ec2::operation::create_vpc_endpoint::builders::CreateVpcEndpointFluentBuilder {
        let mut req = self
            .ec2
            .create_vpc_endpoint()
            .vpc_id(&self.id)
            .service_name(service)
            .vpc_endpoint_type(VpcEndpointType::Interface)
            .private_dns_enabled(true);
        for i in subnets {
            req = req.subnet_ids(&self.subnets[*i]);
        }
        req
    }

    /// An endpoint service of our own with a private DNS name; returns its service name.
    pub async fn service(&self, private_dns_name: &str) -> String {
        self.ec2
            .create_vpc_endpoint_service_configuration()
            .network_load_balancer_arns(format!(
                "arn:aws:elasticloadbalancing:{REGION}:123456789012:loadbalancer/net/vendor/0123456789abcdef"
            ))
            .private_dns_name(private_dns_name)
            .acceptance_required(false)
            .send()
            .await
            .unwrap()
            .service_configuration
            .unwrap()
            .service_name
            .unwrap()
    }

    pub async fn add_subnet(&self, endpoint: &str, subnet: usize) {
        self.ec2
            .modify_vpc_endpoint()
            .vpc_endpoint_id(endpoint)
            .add_subnet_ids(&self.subnets[subnet])
            .send()
            .await
            .unwrap();
    }

    pub async fn delete(&self, endpoint: &str) {
        self.ec2
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(endpoint)
            .send()
            .await
            .unwrap();
    }

    /// An EKS cluster in the given subnets (one API ENI each); returns the host of
    /// its endpoint (upper-case hex, as EKS has it).
    pub async fn cluster(
        &self,
        eks: &aws_sdk_eks::Client,
        name: &str,
        subnets: &[usize],
        private_access: bool,
    ) -> String {
        let mut vpc = aws_sdk_eks::types::VpcConfigRequest::builder()
            .endpoint_private_access(private_access)
            .endpoint_public_access(true);
        for i in subnets {
            vpc = vpc.subnet_ids(&self.subnets[*i]);
        }
        let out = eks
            .create_cluster()
            .name(name)
            .role_arn("arn:aws:iam::123456789012:role/eks")
            .resources_vpc_config(vpc.build())
            .send()
            .await
            .unwrap();
        let endpoint = out.cluster.unwrap().endpoint.unwrap();
        endpoint.trim_start_matches("https://").to_string()
    }

    /// The ids of the in-use ENIs described "Amazon EKS <cluster>".
    pub async fn cluster_enis(&self, cluster: &str) -> Vec<String> {
        use aws_sdk_ec2::types::Filter;
        let out = self
            .ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("description")
                    .values(format!("Amazon EKS {cluster}"))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.network_interfaces()
            .iter()
            .filter_map(|n| n.network_interface_id().map(str::to_string))
            .collect()
    }

    /// An ENI with this description in a subnet (an EKS rotation's new ENI, or a decoy).
    pub async fn eni(&self, subnet: usize, description: &str) -> String {
        self.ec2
            .create_network_interface()
            .subnet_id(&self.subnets[subnet])
            .description(description)
            .send()
            .await
            .unwrap()
            .network_interface
            .unwrap()
            .network_interface_id
            .unwrap()
    }

    pub async fn delete_eni(&self, id: &str) {
        self.ec2
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await
            .unwrap();
    }
}
