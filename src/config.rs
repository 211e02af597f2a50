//! Configuration: the TOML file types, and their check into a runtime [`Config`].
//!
//! The file types mirror the documented keys one to one (kebab-case,
//! `deny_unknown_fields`). [`Config::from_toml`] parses and checks everything, and
//! every error names the file, line, column and key. Nothing here touches sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name};
use serde::Deserialize;
use toml::Spanned;

use crate::access::{ALGORITHMS, Acl, TransferPolicy, TsigKey};
use crate::names::{Conflict, NamesBuilder};
use crate::snapshot::{Settings, SoaParams, ZoneData};
use crate::wire::QName;
use crate::zonefile;

/// The configuration served when no `--config` is given: static demo records on
/// `127.0.0.1:5300`, so the daemon runs on a fresh machine with nothing else.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// How the demo configuration is named in logs and errors.
pub const DEMO_NAME: &str = "<built-in demo config>";

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: key `{key}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The checked configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or [`DEMO_NAME`]).
    pub source: String,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub http: Option<HttpConfig>,
    /// Configured zones.
    pub zones: Vec<ZoneConfig>,
    /// AWS settings; present when `[aws]`, an AWS-backed record or `[[discover]]` is configured.
    pub aws: Option<AwsConfig>,
    /// Zero-config discovery blocks.
    pub discover: Vec<DiscoverConfig>,
    /// `[tls]`: the certificate pair of the DNS-over-TLS listener, loaded.
    pub tls: Option<crate::tls::TlsConfig>,
    /// `[follow]`: zones transferred from a primary (fleet mode), see [`crate::follow`].
    pub follow: Option<FollowConfig>,
}

/// `[follow]`: this process is a follower: it transfers the primary's catalog and
/// every member zone, and serves them with the primary's serials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowConfig {
    /// `host:port` as written (port 53 when left out): an IP address, or a DNS name
    /// resolved at start and on every retry.
    pub primary: String,
    /// The primary's catalog zone (RFC 9432), lower-cased.
    pub catalog: Name,
    /// Every request signed, every answer verified with it.
    pub key: Option<TsigKey>,
    /// Where transferred zones are kept across restarts.
    pub cache_dir: Option<PathBuf>,
    /// `tls = true`: transfers over TLS (XoT), the primary's certificate checked.
    pub tls: Option<FollowTls>,
    /// What the answering core needs to take the primary's NOTIFY, and the transfer
    /// policy of the followed zones (`[transfer]`); carried by the snapshot's
    /// settings. The follower fills in the primary's addresses as it resolves them.
    pub peers: Arc<crate::access::FollowPeers>,
}

/// How a follower checks the primary over TLS: `[tls] ca-file` and `server-name`.
#[derive(Clone)]
pub struct FollowTls {
    pub ca_file: PathBuf,
    /// The name the primary's certificate must carry.
    pub server_name: String,
    pub client: Arc<rustls::ClientConfig>,
}

impl PartialEq for FollowTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file && self.server_name == other.server_name
    }
}

impl Eq for FollowTls {}

impl std::fmt::Debug for FollowTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowTls")
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl FollowConfig {
    /// Whether `other` follows the same primary in the same way (a reload that
    /// changes only `[transfer]` keeps the follower running).
    pub fn same_source(&self, other: &FollowConfig) -> bool {
        self.primary == other.primary
            && self.catalog == other.catalog
            && self.key == other.key
            && self.cache_dir == other.cache_dir
            && self.tls == other.tls
    }
}

impl Config {
    /// The selectors of the records whose addresses come from VPC endpoints.
    pub fn endpoint_selectors(&self) -> impl Iterator<Item = &Selector> {
        self.zones
            .iter()
            .flat_map(|z| &z.records)
            .filter_map(|r| match &r.addresses {
                Addresses::Endpoint(selector) => Some(selector),
                Addresses::Static { .. } | Addresses::EksCluster(_) => None,
            })
    }

    /// The EKS cluster names of the records whose addresses come from a cluster.
    pub fn eks_records(&self) -> impl Iterator<Item = &str> {
        self.zones
            .iter()
            .flat_map(|z| &z.records)
            .filter_map(|r| match &r.addresses {
                Addresses::EksCluster(name) => Some(name.as_str()),
                _ => None,
            })
    }

    /// The EKS clusters `target` must describe, or `None` when it needs none.
    pub fn eks_scope(&self, target: &Target) -> Option<EksScope> {
        let aws = self.aws.as_ref()?;
        let mut names = BTreeSet::new();
        if aws.default_target() == *target {
            names.extend(self.eks_records().map(str::to_string));
        }
        for d in self.discover.iter().filter(|d| &d.target == target) {
            match &d.eks_clusters {
                EksClusters::None => {}
                EksClusters::All => return Some(EksScope::All),
                EksClusters::Named(n) => names.extend(n.iter().cloned()),
            }
        }
        (!names.is_empty()).then_some(EksScope::Named(names))
    }

    /// The (region, role) pairs discovery must query: the `[aws]` default for
    /// AWS-backed records, and each `[[discover]]` block's.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(aws) = &self.aws
            && (self.endpoint_selectors().next().is_some() || self.eks_records().next().is_some())
        {
            targets.push(aws.default_target());
        }
        for d in &self.discover {
            if !targets.contains(&d.target) {
                targets.push(d.target.clone());
            }
        }
        targets
    }
}

/// Everything in the config that decides what discovery returns for one target, so
/// data saved for one config is never served under another (the cache file keeps it).
///
/// The AWS account is not part of it: it cannot be known while the API is down, and
/// a role ARN, which is, names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct TargetIdentity {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    /// The VPC ids and tag filters of the `[[discover]]` blocks that use this target.
    pub discover: Vec<(Vec<String>, BTreeMap<String, String>)>,
    /// The selectors of the AWS-backed records that use this target.
    pub selectors: Vec<String>,
    /// The EKS selection: `[[discover]]` `eks-clusters` ("*" or names, per block) and
    /// the clusters records name. Empty for a config without EKS (and in caches
    /// written before EKS, which then still match such a config).
    #[serde(default)]
    pub eks: Vec<String>,
}

impl Config {
    /// The identity of `target` under this config.
    pub fn identity(&self, target: &Target) -> TargetIdentity {
        let aws = self.aws.clone().unwrap_or_default();
        let mut discover: Vec<_> = self
            .discover
            .iter()
            .filter(|d| &d.target == target)
            .map(|d| {
                let mut vpcs = d.vpc_ids.clone();
                vpcs.sort();
                (vpcs, d.tags.clone())
            })
            .collect();
        discover.sort();
        discover.dedup();
        let mut selectors: Vec<String> = if aws.default_target() == *target {
            self.endpoint_selectors().map(Selector::to_string).collect()
        } else {
            Vec::new()
        };
        selectors.sort();
        selectors.dedup();
        let mut eks: Vec<String> = Vec::new();
        if aws.default_target() == *target {
            eks.extend(self.eks_records().map(|n| format!("record:{n}")));
        }
        for d in self.discover.iter().filter(|d| &d.target == target) {
            let mut vpcs = d.vpc_ids.clone();
            vpcs.sort();
            match &d.eks_clusters {
                EksClusters::None => {}
                EksClusters::All => eks.push(format!("discover:{}:*", vpcs.join(","))),
                EksClusters::Named(names) => eks.extend(
                    names
                        .iter()
                        .map(|n| format!("discover:{}:{n}", vpcs.join(","))),
                ),
            }
        }
        eks.sort();
        eks.dedup();
        if !eks.is_empty()
            && let Some(url) = &aws.eks_endpoint_url
        {
            eks.push(format!("endpoint:{url}"));
        }
        TargetIdentity {
            region: target.region.clone(),
            endpoint_url: aws.endpoint_url,
            role_arn: target.role_arn.clone(),
            discover,
            selectors,
            eks,
        }
    }

    /// The VPCs whose endpoints `target` serves, or `None` when it serves configured
    /// records, whose endpoints may be in any VPC.
    pub fn vpc_scope(&self, target: &Target) -> Option<BTreeSet<String>> {
        let aws = self.aws.as_ref()?;
        if self.endpoint_selectors().next().is_some() && aws.default_target() == *target {
            return None;
        }
        Some(
            self.discover
                .iter()
                .filter(|d| &d.target == target)
                .flat_map(|d| d.vpc_ids.iter().cloned())
                .collect(),
        )
    }
}

/// Where discovery asks: a region (None: the SDK's default chain) as a role (None: the
/// default credentials).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct Target {
    pub region: Option<String>,
    pub role_arn: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "region={}",
            self.region.as_deref().unwrap_or("(default)")
        )?;
        if let Some(role) = &self.role_arn {
            write!(f, " role={role}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// The EKS API's, when not AWS's (`eks-endpoint-url`).
    pub eks_endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    pub refresh_interval: Duration,
    pub call_timeout: Duration,
    pub max_backoff: Duration,
    pub page_size: i32,
    pub cache_file: Option<PathBuf>,
    /// How long a refresh that would remove most AWS-backed addresses must keep
    /// returning the same result before it is served (zero: at once).
    pub removal_hold: Duration,
}

impl AwsConfig {
    pub fn default_target(&self) -> Target {
        Target {
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            eks_endpoint_url: None,
            role_arn: None,
            refresh_interval: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            page_size: 1000,
            cache_file: None,
            removal_hold: Duration::from_secs(600),
        }
    }
}

/// Which endpoints give a record its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One endpoint by id.
    Endpoint(String),
    /// Every endpoint carrying all these tags.
    Tags(BTreeMap<String, String>),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Endpoint(id) => write!(f, "{id}"),
            Self::Tags(tags) => {
                f.write_str("tags:")?;
                for (i, (k, v)) in tags.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { "" } else { "," })?;
                }
                Ok(())
            }
        }
    }
}

/// A configured zone: records that say where their addresses come from.
pub type ZoneConfig = ZoneData<RecordConfig>;

/// A configured name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// Absolute; may start with a `*` label (RFC 4592).
    pub name: Name,
    pub ttl: u32,
    pub addresses: Addresses,
}

/// Where a configured name's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// Written in the config (`a`, `aaaa`).
    Static {
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
    },
    /// The ENIs of the VPC endpoints the selector picks, in the `[aws]` default target.
    Endpoint(Selector),
    /// The API ENIs of the EKS cluster of this name, in the `[aws]` default target.
    EksCluster(String),
}

/// Which EKS clusters a `[[discover]]` block serves (`eks-clusters`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EksClusters {
    /// None (the default).
    #[default]
    None,
    /// `["*"]`: every cluster in the block's VPCs with private endpoint access.
    All,
    /// These, by name.
    Named(BTreeSet<String>),
}

impl EksClusters {
    pub fn selects(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Named(names) => names.contains(name),
        }
    }
}

/// The EKS clusters one target must describe: every one, or these names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EksScope {
    All,
    Named(BTreeSet<String>),
}

/// A `[[discover]]` block: serve the private DNS names of matching endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverConfig {
    pub target: Target,
    pub vpc_ids: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub ttl: u32,
    pub private_dns: PrivateDns,
    /// Transfer policy of the zones this block discovers.
    pub transfer: Arc<TransferPolicy>,
    /// EKS clusters whose API endpoint names this block serves.
    pub eks_clusters: EksClusters,
}

/// Which endpoints a `[[discover]]` block serves names for (`private-dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivateDns {
    /// Only endpoints with private DNS enabled: the names AWS itself answers in the VPC.
    #[default]
    Enabled,
    /// Every endpoint, private DNS enabled or not (hub and spoke: the VPC does not
    /// answer the name, on-prem should).
    Any,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// DNS over TLS listeners (`tls-listen`).
    pub tls_listen: Vec<SocketAddr>,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    /// Most TCP connections one source holds at once (None: a quarter of the cap).
    pub max_tcp_per_source: Option<usize>,
    /// NS name for zones that list none, and for discovered zones.
    pub nameserver: Name,
    /// How long in-flight answers get on SIGTERM.
    pub shutdown_grace: Duration,
    /// UDP worker threads per listen address.
    pub udp_workers: usize,
    /// Most zone transfers served at once.
    pub max_transfers: usize,
    /// Most NOTIFYs waiting for an acknowledgement at once.
    pub max_notify_in_flight: usize,
    /// Where the last SOA serial of every zone persists (`state-dir`).
    pub state_dir: Option<PathBuf>,
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    /// Log one query in every `query_log_every` (0: query log off).
    pub query_log_every: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// HTTP connections open at once (before the file-descriptor budget).
    pub max_connections: usize,
    /// Most HTTP connections one source holds at once (None: a quarter of the cap).
    pub max_per_source: Option<usize>,
    /// How long a client has to send a request's headers.
    pub header_timeout: Duration,
}

/// Bound of `[http] max-connections`.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;

// ---- file types -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    /// Sockets and protocol limits.
    #[serde(default)]
    server: ServerFile,
    /// Logging.
    #[serde(default)]
    log: LogFile,
    /// Health, readiness and metrics over HTTP.
    http: Option<HttpFile>,
    /// EC2 API access and refresh.
    aws: Option<AwsFile>,
    /// Authoritative zones.
    #[serde(default)]
    zone: Vec<ZoneFile>,
    /// Zero-config discovery of endpoints' private DNS names.
    #[serde(default)]
    discover: Vec<DiscoverFile>,
    /// TSIG keys, for signed requests and transfers.
    #[serde(default)]
    tsig_key: Vec<TsigKeyFile>,
    /// Zone transfer defaults for every zone.
    transfer: Option<TransferFile>,
    /// An RFC 9432 catalog of the transferable zones.
    catalog: Option<CatalogFile>,
    /// The certificate and key of the DNS-over-TLS listener.
    tls: Option<TlsFile>,
    /// Fleet mode: follow a primary's catalog.
    follow: Option<FollowFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FollowFile {
    /// host:port of the primary. Required in this table.
    primary: Spanned<String>,
    /// The primary's catalog zone. Required in this table.
    catalog: Spanned<String>,
    /// A `[[tsig-key]]` name: requests signed, answers verified.
    tsig_key: Option<Spanned<String>>,
    /// XoT to the primary. Not supported yet: only `false`.
    tls: Option<Spanned<bool>>,
    /// Transferred zones persisted here.
    cache_dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TlsFile {
    /// PEM, leaf first. With `key`; required for `tls-listen`.
    certificate: Option<Spanned<String>>,
    /// PEM (PKCS#8, SEC1 or RSA). With `certificate`.
    key: Option<Spanned<String>>,
    /// PEM CA certificates that verify the primary (`[follow] tls`).
    ca_file: Option<Spanned<String>>,
    /// The name the primary's certificate must carry (`[follow] tls`).
    server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CatalogFile {
    /// The catalog zone's name. Required in this table.
    zone: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TsigKeyFile {
    /// The key's name, a DNS name both sides use.
    name: Spanned<String>,
    /// hmac-sha256 (default) | hmac-sha384 | hmac-sha512 | hmac-sha224 | hmac-sha1.
    algorithm: Option<Spanned<String>>,
    /// The secret, base64.
    secret: Option<Spanned<String>>,
    /// A file holding the secret, base64 (exactly one of `secret` and `secret-file`).
    secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TransferFile {
    /// Sources that may AXFR/IXFR. Default: none.
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// When set, a transfer must also be signed with this `[[tsig-key]]`.
    tsig_key: Option<Spanned<String>>,
    /// NOTIFY targets ("10.1.2.3" or "10.1.2.3:5353") on every serial change.
    notify: Option<Spanned<Vec<Spanned<String>>>>,
    /// AXFR/IXFR only over TLS (XoT, RFC 9103). Default false.
    require_tls: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct HttpFile {
    /// Address of the HTTP listener for /healthz, /readyz and /metrics.
    listen: Spanned<String>,
    /// HTTP connections open at once, 1..=1024; more are closed on accept. Default 32.
    max_connections: Option<Spanned<usize>>,
    /// HTTP connections one source address (an IPv6 /64) may hold at once,
    /// 1..=max-connections; more from it are closed on accept. Default: a quarter of
    /// max-connections (8), so idle clients from one place never starve the probes.
    max_connections_per_source: Option<Spanned<usize>>,
    /// Time a client has to send a request's headers. Default "5s".
    header_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AwsFile {
    /// Region of the EC2 API. Default: the SDK chain (AWS_REGION, profile, IMDS).
    region: Option<String>,
    /// EC2 API endpoint override (a VPC endpoint for EC2, or an emulator in tests).
    endpoint_url: Option<Spanned<String>>,
    /// EKS API endpoint override (an interface endpoint for EKS, or an emulator).
    eks_endpoint_url: Option<Spanned<String>>,
    /// Role to assume for the EC2 calls. Default: the process's own credentials.
    role_arn: Option<Spanned<String>>,
    /// Time between refreshes (±10% jitter). Default "30s".
    refresh_interval: Option<Spanned<String>>,
    /// Timeout of one EC2 API call attempt. Default "10s".
    call_timeout: Option<Spanned<String>>,
    /// Longest wait between retries after failures. Default "5m".
    max_backoff: Option<Spanned<String>>,
    /// MaxResults of each Describe call, 5..=1000. Default 1000.
    page_size: Option<Spanned<i32>>,
    /// Where the last good discovery is kept for cold starts. Default: none.
    cache_file: Option<String>,
    /// How long a refresh that would remove more than half of the AWS-backed addresses
    /// must persist before it is served ("0s": at once). Default "10m".
    removal_hold: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DiscoverFile {
    /// Required: serve endpoints in these VPCs.
    vpc_ids: Spanned<Vec<String>>,
    /// Only endpoints with all these tags.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Region for this block. Default: `[aws] region`.
    region: Option<String>,
    /// Role for this block (another account). Default: `[aws] role-arn`.
    role_arn: Option<Spanned<String>>,
    /// TTL of the discovered records. Default 60.
    ttl: Option<Spanned<u32>>,
    /// "enabled" (default): only endpoints with private DNS enabled; "any": all.
    #[serde(default)]
    private_dns: PrivateDns,
    /// Replaces `[transfer]` for the zones this block discovers.
    transfer: Option<TransferFile>,
    /// EKS clusters whose API endpoint names to serve: ["*"] or names. Default none.
    eks_clusters: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ServerFile {
    /// Addresses to serve UDP and TCP on. Default `["0.0.0.0:53", "[::]:53"]`.
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// Addresses to serve DNS over TLS on. Default none.
    tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// Sources allowed to query at all. Default: everyone.
    allow_query: Option<Spanned<Vec<Spanned<String>>>>,
    /// Most zone transfers served at once, 1..=1024. Default 16.
    max_transfers: Option<Spanned<usize>>,
    /// NOTIFYs waiting for an acknowledgement at once, 1..=4096; more wait their
    /// turn. Default 64.
    max_notify_in_flight: Option<Spanned<usize>>,
    /// The IXFR journal's byte budget over all zones, 0..=4 GiB. Default 32 MiB.
    journal_max_bytes: Option<Spanned<usize>>,
    /// Largest UDP response and advertised EDNS payload size, 512..=4096. Default 1232.
    udp_payload_size: Option<Spanned<u16>>,
    /// Close a TCP connection idle this long. Default "10s".
    tcp_idle_timeout: Option<Spanned<String>>,
    /// Most TCP connections open at once; more are closed on accept. Default 1024.
    max_tcp_connections: Option<Spanned<usize>>,
    /// TCP connections one source address (an IPv6 /64) may hold at once,
    /// 1..=max-tcp-connections; more from it are closed on accept. Default: a quarter
    /// of max-tcp-connections (256).
    max_tcp_connections_per_source: Option<Spanned<usize>>,
    /// NS name used where a zone gives none. Default "ns.privatelink-dns.invalid.".
    nameserver: Option<Spanned<String>>,
    /// Directory where the last SOA serial of every zone persists, so serials never
    /// go down across a restart. Default: none.
    state_dir: Option<Spanned<String>>,
    /// CH TXT answer for `id.server` and `hostname.bind`; unset: REFUSED.
    identity: Option<String>,
    /// CH TXT answer for `version.bind` and `version.server`; unset: REFUSED.
    version: Option<String>,
    /// On SIGTERM, how long in-flight answers get before the process exits. Default "5s".
    shutdown_grace: Option<Spanned<String>>,
    /// UDP worker threads per listen address (SO_REUSEPORT). Default 0: one per CPU.
    udp_workers: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct LogFile {
    /// tracing filter directive, e.g. "info" or "privatelink_dns=debug". `RUST_LOG` wins.
    level: Option<Spanned<String>>,
    /// "text" or "json". `--log-format` wins.
    format: Option<LogFormat>,
    /// Log every query (client, name, type, rcode, latency) at info level. Default false.
    queries: Option<bool>,
    /// Fraction of queries logged when `queries` is on, 0 < rate <= 1. Default 1.0.
    queries_sample_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ZoneFile {
    /// Zone apex, e.g. "example.com".
    origin: Spanned<String>,
    /// Default TTL of records in the zone. Default 300.
    ttl: Option<Spanned<u32>>,
    /// NS names at the apex, absolute. Default: `[server] nameserver`.
    ns: Option<Spanned<Vec<Spanned<String>>>>,
    /// SOA fields; each is optional.
    soa: Option<SoaFile>,
    /// Records of the zone.
    #[serde(default)]
    record: Vec<RecordFile>,
    /// An RFC 1035 master file with more of the zone's records (A and AAAA; SOA and NS
    /// at the apex), relative to this config file. Read at start and at every reload.
    file: Option<Spanned<String>>,
    /// Replaces `[transfer]` for this zone.
    transfer: Option<TransferFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SoaFile {
    /// Primary server name. Default: the first NS.
    mname: Option<Spanned<String>>,
    /// Responsible mailbox as a name. Default "hostmaster.<origin>".
    rname: Option<Spanned<String>>,
    /// Default 3600.
    refresh: Option<Spanned<u32>>,
    /// Default 900.
    retry: Option<Spanned<u32>>,
    /// Default 1209600.
    expire: Option<Spanned<u32>>,
    /// Negative-caching TTL. Default 60.
    minimum: Option<Spanned<u32>>,
    /// TTL of the SOA record. Default 3600.
    ttl: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RecordFile {
    /// "@", relative ("www"), absolute ("www.example.com.") or wildcard ("*.s3").
    name: Spanned<String>,
    /// IPv4 addresses.
    #[serde(default)]
    a: Vec<Spanned<String>>,
    /// IPv6 addresses.
    #[serde(default)]
    aaaa: Vec<Spanned<String>>,
    /// TTL of these records. Default: the zone `ttl`.
    ttl: Option<Spanned<u32>>,
    /// Addresses of this VPC endpoint's ENIs.
    vpc_endpoint: Option<Spanned<String>>,
    /// Addresses of every VPC endpoint with all these tags.
    vpc_endpoint_tags: Option<Spanned<BTreeMap<String, String>>>,
    /// Addresses of this EKS cluster's API ENIs (`[aws]` region and role).
    eks_cluster: Option<Spanned<String>>,
}

// ---- checking ---------------------------------------------------------------

/// Locates spans in the source text, to name line and column in errors.
#[derive(Clone, Copy)]
struct Source<'a> {
    path: &'a str,
    text: &'a str,
    /// Where the text the spans are relative to starts in `text`: 0, or a batch of
    /// `[[zone.record]]` tables parsed on its own (see [`bulk`]).
    offset: usize,
    /// For spans into a skeleton (see [`bulk`]): where bytes of `text` were cut out
    /// of it, as (skeleton position, bytes cut up to there).
    holes: &'a [(usize, usize)],
    /// Where zones leave their index to be written once the text is freed.
    defer: Option<&'a std::cell::RefCell<Vec<Deferred>>>,
}

impl<'a> Source<'a> {
    /// The same file, for spans relative to `offset`.
    fn at(self, offset: usize) -> Source<'a> {
        Source {
            offset,
            holes: &[],
            defer: None,
            ..self
        }
    }

    /// Where a span's position is in `text`.
    fn position(&self, at: usize) -> usize {
        let cut = match self.holes.partition_point(|&(pos, _)| pos <= at) {
            0 => 0,
            i => self.holes[i - 1].1,
        };
        (at + self.offset + cut).min(self.text.len())
    }

    /// A toml error, with the key it points at.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = self.key_at(&span);
        self.error(span, key, e.message().trim().to_string())
    }

    fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = self.position(span.start);
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Invalid {
            path: self.path.to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key a toml error points at: the `key =` on its line or above, prefixed
    /// with the table it sits in.
    fn key_at(&self, span: &Range<usize>) -> String {
        let start = self.position(span.start);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let mut key: Option<String> = None;
        for line in self.text[..line_end].rsplit('\n') {
            let l = line.trim();
            if l.starts_with('[') {
                let table = l.trim_matches(|c| c == '[' || c == ']').trim();
                return match key {
                    Some(k) => format!("{table}.{k}"),
                    None => table.to_string(),
                };
            }
            if key.is_none()
                && let Some((k, _)) = l.split_once('=')
            {
                key = Some(k.trim().to_string());
            }
        }
        key.unwrap_or_default()
    }
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml_owned(text, &shown, bulk::SPLIT_AT)
    }

    /// [`Config::from_toml`] of a text it may free before the zones' indexes are
    /// written: a large config's text, its record tables' staging and its index are
    /// then never all in memory at once (the peak of a reload). The same config or
    /// error.
    fn from_toml_owned(text: String, path: &str, split_at: usize) -> Result<Self, ConfigError> {
        let sink = std::cell::RefCell::new(Vec::new());
        let config = Self::from_toml_inner(&text, path, split_at, Some(&sink));
        let deferred = sink.into_inner();
        let at: Vec<usize> = deferred.iter().map(|d| d.at).collect();
        let located = lines_and_columns(&text, &at);
        drop(text);
        let mut config = config?;
        for (Deferred { zi, builder, .. }, (line, column)) in deferred.into_iter().zip(located) {
            let (names, conflict) = builder.finish();
            if let Some(Conflict::TooLarge { name, bytes, .. }) = conflict {
                return Err(ConfigError::Invalid {
                    path: path.to_string(),
                    line,
                    column,
                    key: format!("zone[{zi}].record"),
                    message: too_large(&name, bytes),
                });
            }
            config.zones[zi].fixed = Arc::new(names);
        }
        Ok(config)
    }

    /// The built-in demo configuration.
    pub fn demo() -> Self {
        Self::from_toml(DEMO_CONFIG, DEMO_NAME).expect("the built-in demo config is valid")
    }

    /// Parses and checks `text`; `path` is only used in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        Self::from_toml_split(text, path, bulk::SPLIT_AT)
    }

    /// [`Config::from_toml`], parsing the `[[zone.record]]` tables of a text of at
    /// least `split_at` bytes in batches (see [`bulk`]); the same config or error.
    fn from_toml_split(text: &str, path: &str, split_at: usize) -> Result<Self, ConfigError> {
        Self::from_toml_inner(text, path, split_at, None)
    }

    fn from_toml_inner(
        text: &str,
        path: &str,
        split_at: usize,
        defer: Option<&std::cell::RefCell<Vec<Deferred>>>,
    ) -> Result<Self, ConfigError> {
        let src = Source {
            path,
            text,
            offset: 0,
            holes: &[],
            defer: None,
        };
        if let Some(split) = bulk::split(text, split_at) {
            let src = Source {
                holes: &split.holes,
                defer,
                ..src
            };
            let file: FileConfig =
                toml::from_str(&split.skeleton).map_err(|e| src.toml_error(&e))?;
            // The split's view of the zones must be the parser's, else the whole text.
            let consistent = file.zone.len() == split.zones.len()
                && file
                    .zone
                    .iter()
                    .zip(&split.zones)
                    .all(|(z, b)| b.is_empty() || z.record.is_empty());
            if consistent {
                return check(file, &src, &split.zones);
            }
        }
        let file: FileConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        check(file, &src, &[])
    }
}

fn check(
    file: FileConfig,
    src: &Source<'_>,
    batches: &[Vec<bulk::Batch>],
) -> Result<Config, ConfigError> {
    let tls_listen_span = file.server.tls_listen.as_ref().map(Spanned::span);
    let mut server = check_server(src, file.server)?;
    let keys = check_keys(src, &file.tsig_key)?;
    let default_transfer = match &file.transfer {
        Some(t) => Arc::new(check_transfer(src, t, "transfer", &keys)?),
        None => Arc::new(TransferPolicy::default()),
    };
    server.settings.keys = keys;
    let http = file
        .http
        .as_ref()
        .map(|h| check_http(src, h, &server.listen))
        .transpose()?;
    let mut zones = check_zones(src, &file.zone, batches, &server.nameserver)?;
    for (zi, (zone, z)) in zones.iter_mut().zip(&file.zone).enumerate() {
        zone.transfer = match &z.transfer {
            Some(t) => Arc::new(check_transfer(
                src,
                t,
                &format!("zone[{zi}].transfer"),
                &server.settings.keys,
            )?),
            None => default_transfer.clone(),
        };
    }
    let aws_config = check_aws(src, file.aws.as_ref())?;
    let discover = file
        .discover
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut block = check_discover(src, i, d, &aws_config)?;
            block.transfer = match &d.transfer {
                Some(t) => Arc::new(check_transfer(
                    src,
                    t,
                    &format!("discover[{i}].transfer"),
                    &server.settings.keys,
                )?),
                None => default_transfer.clone(),
            };
            Ok(block)
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let endpoint_records = zones.iter().flat_map(|z| &z.records).any(|r| {
        matches!(
            r.addresses,
            Addresses::Endpoint(_) | Addresses::EksCluster(_)
        )
    });
    let aws =
        (file.aws.is_some() || endpoint_records || !discover.is_empty()).then_some(aws_config);
    let tls = match &file.tls {
        Some(t) => check_tls(src, t)?,
        None => None,
    };
    if tls.is_none()
        && let Some(span) = tls_listen_span.filter(|_| !server.tls_listen.is_empty())
    {
        return Err(src.error(
            span,
            "server.tls-listen",
            "DNS over TLS needs a certificate: set [tls] certificate and key",
        ));
    }
    // The first `require-tls = true`, with its key, for the error below.
    let require_tls =
        file.transfer
            .iter()
            .map(|t| (t, "transfer".to_string()))
            .chain(
                file.zone.iter().enumerate().filter_map(|(i, z)| {
                    Some((z.transfer.as_ref()?, format!("zone[{i}].transfer")))
                }),
            )
            .chain(file.discover.iter().enumerate().filter_map(|(i, d)| {
                Some((d.transfer.as_ref()?, format!("discover[{i}].transfer")))
            }))
            .find_map(|(t, at)| {
                let v = t.require_tls.as_ref().filter(|v| *v.get_ref())?;
                Some((v.span(), format!("{at}.require-tls")))
            });
    if let Some((span, key)) = require_tls
        && server.tls_listen.is_empty()
    {
        return Err(src.error(
            span,
            key,
            "transfers only over TLS need server.tls-listen: no transfer could ever be served",
        ));
    }
    if let Some(catalog) = &file.catalog {
        server.settings.catalog = Some(Arc::new(check_catalog(
            src,
            catalog,
            &zones,
            &default_transfer,
            &server.nameserver,
        )?));
    }
    let follow = match &file.follow {
        Some(f) => Some(check_follow(
            src,
            f,
            &zones,
            &server.settings.keys,
            &default_transfer,
            file.tls.as_ref(),
        )?),
        None => None,
    };
    server.settings.follow = follow.as_ref().map(|f| f.peers.clone());
    Ok(Config {
        source: src.path.to_string(),
        server,
        log: LogConfig {
            level: check_level(src, file.log.level.as_ref())?,
            format: file.log.format.unwrap_or_default(),
            query_log_every: check_query_log(src, &file.log)?,
        },
        http,
        zones,
        aws,
        discover,
        tls,
        follow,
    })
}

/// `[follow]`: the primary's address, its catalog (a name no configured zone has or
/// lies under), the key, and where transferred zones are kept.
fn check_follow(
    src: &Source<'_>,
    f: &FollowFile,
    zones: &[ZoneConfig],
    keys: &[TsigKey],
    transfer: &Arc<TransferPolicy>,
    tls_file: Option<&TlsFile>,
) -> Result<FollowConfig, ConfigError> {
    let text = f.primary.get_ref().trim();
    let Some(host) = crate::follow::primary_host(text) else {
        return Err(src.error(
            f.primary.span(),
            "follow.primary",
            format!(
                "{text:?} is not host:port, such as \"10.0.0.5:53\" or \"primary.example.com:53\""
            ),
        ));
    };
    let catalog = parse_fqdn(src, &f.catalog, "follow.catalog")?;
    if catalog.is_root() {
        return Err(src.error(
            f.catalog.span(),
            "follow.catalog",
            "the catalog cannot be the root zone",
        ));
    }
    if let Some((zi, zone)) = zones
        .iter()
        .enumerate()
        .find(|(_, z)| catalog.zone_of(&z.origin) || z.origin.zone_of(&catalog))
    {
        return Err(src.error(
            f.catalog.span(),
            "follow.catalog",
            format!(
                "{catalog} is also a configured zone, or holds or lies in one (zone[{zi}] {}): a name is served from one source",
                zone.origin
            ),
        ));
    }
    let key = match &f.tsig_key {
        None => None,
        Some(k) => {
            let name = parse_fqdn(src, k, "follow.tsig-key")?;
            let Some(key) = keys.iter().find(|key| key.name == name) else {
                return Err(src.error(
                    k.span(),
                    "follow.tsig-key",
                    format!("no [[tsig-key]] is named {name}"),
                ));
            };
            Some(key.clone())
        }
    };
    let tls = match f.tls.as_ref().filter(|v| *v.get_ref()) {
        None => None,
        Some(on) => Some(check_follow_tls(src, on, tls_file, host)?),
    };
    let peers = crate::access::FollowPeers::new(
        catalog.clone(),
        key.as_ref().map(|k| k.name.clone()),
        transfer.clone(),
    );
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        peers.set_primaries(vec![ip]);
    }
    Ok(FollowConfig {
        primary: text.to_string(),
        catalog,
        key,
        cache_dir: f.cache_dir.as_ref().map(|d| PathBuf::from(d.get_ref())),
        tls,
        peers: Arc::new(peers),
    })
}

/// `[follow] tls = true`: `[tls] ca-file` read now; the name to check is `[tls]
/// server-name`, else the primary's host name (an address needs server-name).
fn check_follow_tls(
    src: &Source<'_>,
    on: &Spanned<bool>,
    tls_file: Option<&TlsFile>,
    host: &str,
) -> Result<FollowTls, ConfigError> {
    let Some(ca) = tls_file.and_then(|t| t.ca_file.as_ref()) else {
        return Err(src.error(
            on.span(),
            "follow.tls",
            "transfers over TLS check the primary's certificate: set [tls] ca-file",
        ));
    };
    let ca_file = config_relative(src, ca);
    let client =
        crate::tls::client_config(&ca_file).map_err(|m| src.error(ca.span(), "tls.ca-file", m))?;
    let server_name = match tls_file.and_then(|t| t.server_name.as_ref()) {
        Some(n) => {
            let text = n.get_ref().trim();
            rustls::pki_types::ServerName::try_from(text.to_string()).map_err(|_| {
                src.error(
                    n.span(),
                    "tls.server-name",
                    format!("{text:?} is not a host name"),
                )
            })?;
            text.to_string()
        }
        None if host.parse::<std::net::IpAddr>().is_err() => host.to_string(),
        None => {
            return Err(src.error(
                on.span(),
                "follow.tls",
                "the primary is an address: set [tls] server-name, the name its certificate carries",
            ));
        }
    };
    Ok(FollowTls {
        ca_file,
        server_name,
        client,
    })
}

/// `[tls]` certificate and key (either both or neither): both files read and paired
/// now, so a bad pair fails the start (exit 64) naming the file. Paths are relative
/// to the config file's directory.
fn check_tls(src: &Source<'_>, t: &TlsFile) -> Result<Option<crate::tls::TlsConfig>, ConfigError> {
    let (certificate, key) = match (&t.certificate, &t.key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            return Err(src.error(
                c.span(),
                "tls.key",
                "certificate needs its key: set key too",
            ));
        }
        (None, Some(k)) => {
            return Err(src.error(
                k.span(),
                "tls.certificate",
                "key needs its certificate: set certificate too",
            ));
        }
    };
    let (cert_path, key_path) = (config_relative(src, certificate), config_relative(src, key));
    crate::tls::TlsConfig::load(&cert_path, &key_path)
        .map(Some)
        .map_err(|e| {
            let (span, which) = match e.file {
                crate::tls::Which::Certificate => (certificate.span(), "tls.certificate"),
                crate::tls::Which::Key => (key.span(), "tls.key"),
            };
            src.error(span, which, e.message)
        })
}

/// A path as written in the config, relative to the config file's directory.
fn config_relative(src: &Source<'_>, v: &Spanned<String>) -> PathBuf {
    match Path::new(src.path).parent() {
        Some(dir) if src.path != DEMO_NAME => dir.join(v.get_ref()),
        _ => PathBuf::from(v.get_ref()),
    }
}

/// `[catalog]`: a name no served zone has or lies under, transferred under
/// `[transfer]`, which must let someone transfer it.
fn check_catalog(
    src: &Source<'_>,
    file: &CatalogFile,
    zones: &[ZoneConfig],
    transfer: &Arc<TransferPolicy>,
    nameserver: &Name,
) -> Result<crate::snapshot::CatalogSettings, ConfigError> {
    let key = "catalog.zone";
    let origin = parse_fqdn(src, &file.zone, key)?.to_lowercase();
    if origin.is_root() {
        return Err(src.error(file.zone.span(), key, "the catalog cannot be the root zone"));
    }
    if let Some((zi, zone)) = zones
        .iter()
        .enumerate()
        .find(|(_, z)| origin.zone_of(&z.origin))
    {
        return Err(src.error(
            file.zone.span(),
            key,
            format!(
                "{origin} is also a served zone, or holds one (zone[{zi}] {}); the catalog needs a name of its own",
                zone.origin
            ),
        ));
    }
    if transfer.allow.is_empty() {
        return Err(src.error(
            file.zone.span(),
            key,
            "the catalog is transferred under [transfer]: set [transfer] allow",
        ));
    }
    Ok(crate::snapshot::CatalogSettings {
        soa: crate::snapshot::SoaParams::defaults(&origin, nameserver.clone()),
        origin,
        transfer: transfer.clone(),
    })
}

/// A value that must lie in `range`; `default` when absent.
fn in_range<T>(
    src: &Source<'_>,
    v: Option<&Spanned<T>>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    key: &str,
    message: impl FnOnce() -> String,
) -> Result<T, ConfigError>
where
    T: Copy + PartialOrd,
{
    match v {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(src.error(v.span(), key, message())),
    }
}

/// A duration such as "10s"; `default` when absent.
fn duration_or(
    src: &Source<'_>,
    v: Option<&Spanned<String>>,
    default: Duration,
    key: &str,
) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |v| parse_duration(src, v, key))
}

fn check_server(src: &Source<'_>, s: ServerFile) -> Result<ServerConfig, ConfigError> {
    let listen = match &s.listen {
        None => vec!["0.0.0.0:53".parse().unwrap(), "[::]:53".parse().unwrap()],
        Some(list) => list
            .get_ref()
            .iter()
            .map(|a| {
                a.get_ref().parse::<SocketAddr>().map_err(|_| {
                    let message = format!(
                        "{:?} is not an address:port such as \"0.0.0.0:53\" or \"[::]:53\"",
                        a.get_ref()
                    );
                    src.error(a.span(), "server.listen", message)
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    check_listen(src, s.listen.as_ref(), &listen)?;
    let tls_listen = match &s.tls_listen {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|a| {
                let parsed = a.get_ref().parse::<SocketAddr>().map_err(|_| {
                    let message = format!(
                        "{:?} is not an address:port such as \"0.0.0.0:853\"",
                        a.get_ref()
                    );
                    src.error(a.span(), "server.tls-listen", message)
                })?;
                if let Some(b) = listen.iter().find(|b| overlaps(**b, parsed)) {
                    let message = format!("{parsed} overlaps {b} in server.listen (TCP)");
                    return Err(src.error(a.span(), "server.tls-listen", message));
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let udp_payload_size = in_range(
        src,
        s.udp_payload_size.as_ref(),
        1232,
        512..=4096,
        "server.udp-payload-size",
        || "must be between 512 and 4096 (1232 avoids IP fragmentation)".into(),
    )?;
    let max_tcp_connections = in_range(
        src,
        s.max_tcp_connections.as_ref(),
        1024,
        1..=MAX_TCP_CONNECTIONS,
        "server.max-tcp-connections",
        || format!("must be between 1 and {MAX_TCP_CONNECTIONS}"),
    )?;
    let max_tcp_per_source = s
        .max_tcp_connections_per_source
        .as_ref()
        .map(|v| {
            in_range(
                src,
                Some(v),
                1,
                1..=max_tcp_connections,
                "server.max-tcp-connections-per-source",
                || format!("must be between 1 and max-tcp-connections ({max_tcp_connections})"),
            )
        })
        .transpose()?;
    let udp_workers = match in_range(
        src,
        s.udp_workers.as_ref(),
        0,
        0..=MAX_UDP_WORKERS,
        "server.udp-workers",
        || format!("must be at most {MAX_UDP_WORKERS} (0: one per CPU)"),
    )? {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let nameserver = match &s.nameserver {
        None => Name::from_ascii("ns.privatelink-dns.invalid.").unwrap(),
        Some(v) => parse_fqdn(src, v, "server.nameserver")?,
    };
    Ok(ServerConfig {
        listen,
        tls_listen,
        tcp_idle_timeout: duration_or(
            src,
            s.tcp_idle_timeout.as_ref(),
            Duration::from_secs(10),
            "server.tcp-idle-timeout",
        )?,
        max_tcp_connections,
        max_tcp_per_source,
        state_dir: match &s.state_dir {
            Some(v) if v.get_ref().is_empty() => {
                return Err(src.error(v.span(), "server.state-dir", "must not be empty"));
            }
            Some(v) => Some(PathBuf::from(v.get_ref())),
            None => None,
        },
        nameserver,
        shutdown_grace: duration_or(
            src,
            s.shutdown_grace.as_ref(),
            Duration::from_secs(5),
            "server.shutdown-grace",
        )?,
        udp_workers,
        max_transfers: in_range(
            src,
            s.max_transfers.as_ref(),
            16,
            1..=1024,
            "server.max-transfers",
            || "must be between 1 and 1024".into(),
        )?,
        max_notify_in_flight: in_range(
            src,
            s.max_notify_in_flight.as_ref(),
            64,
            1..=4096,
            "server.max-notify-in-flight",
            || "must be between 1 and 4096".into(),
        )?,
        settings: Settings {
            udp_payload_size,
            identity: s.identity,
            version: s.version,
            allow_query: s
                .allow_query
                .as_ref()
                .map(|list| check_acl(src, list, "server.allow-query"))
                .transpose()?,
            keys: Vec::new(),
            catalog: None,
            follow: None,
            journal_max_bytes: in_range(
                src,
                s.journal_max_bytes.as_ref(),
                crate::journal::DEFAULT_MAX_BYTES,
                0..=1 << 32,
                "server.journal-max-bytes",
                || "must be between 0 and 4294967296 (4 GiB)".into(),
            )?,
        },
    })
}

/// A list of networks such as `["10.0.0.0/8", "192.0.2.1"]`.
fn check_acl(
    src: &Source<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    key: &str,
) -> Result<Acl, ConfigError> {
    let nets = list
        .get_ref()
        .iter()
        .map(|n| {
            Acl::parse_net(n.get_ref().trim()).ok_or_else(|| {
                let message = format!(
                    "{:?} is not a network such as \"10.0.0.0/8\" or an address such as \"192.0.2.1\"",
                    n.get_ref()
                );
                src.error(n.span(), key, message)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acl::new(nets))
}

/// Every `[[tsig-key]]`: a name used once, a known algorithm, exactly one of `secret`
/// and `secret-file`, base64 inside. Error messages never quote a secret.
fn check_keys(src: &Source<'_>, files: &[TsigKeyFile]) -> Result<Vec<TsigKey>, ConfigError> {
    use base64::Engine as _;
    let mut keys: Vec<TsigKey> = Vec::with_capacity(files.len());
    for (i, k) in files.iter().enumerate() {
        let key = |f: &str| format!("tsig-key[{i}].{f}");
        let name = parse_fqdn(src, &k.name, &key("name"))?;
        if keys.iter().any(|other| other.name == name) {
            return Err(src.error(
                k.name.span(),
                key("name"),
                format!("key {name} is defined twice"),
            ));
        }
        let algorithm = match &k.algorithm {
            None => ALGORITHMS[0].1.clone(),
            Some(a) => ALGORITHMS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(a.get_ref().trim()))
                .map(|(_, alg)| alg.clone())
                .ok_or_else(|| {
                    let names: Vec<&str> = ALGORITHMS.iter().map(|(n, _)| *n).collect();
                    src.error(
                        a.span(),
                        key("algorithm"),
                        format!("{:?} is not one of {}", a.get_ref(), names.join(", ")),
                    )
                })?,
        };
        let (text, span, field) = match (&k.secret, &k.secret_file) {
            (Some(s), None) => (s.get_ref().clone(), s.span(), "secret"),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                    src.error(
                        f.span(),
                        key("secret-file"),
                        format!("cannot read {:?}: {e}", f.get_ref()),
                    )
                })?;
                (text, f.span(), "secret-file")
            }
            _ => {
                return Err(src.error(
                    k.name.span(),
                    key("secret"),
                    "give exactly one of secret and secret-file",
                ));
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                src.error(
                    span,
                    key(field),
                    "is not a base64 secret (the value is not shown)",
                )
            })?;
        keys.push(TsigKey {
            name,
            algorithm,
            secret,
        });
    }
    Ok(keys)
}

/// A `[transfer]` table (or a zone's or discover block's `transfer`).
fn check_transfer(
    src: &Source<'_>,
    t: &TransferFile,
    at: &str,
    keys: &[TsigKey],
) -> Result<TransferPolicy, ConfigError> {
    let allow = match &t.allow {
        Some(list) => check_acl(src, list, &format!("{at}.allow"))?,
        None => Acl::default(),
    };
    let key = match &t.tsig_key {
        None => None,
        Some(k) => {
            let name = parse_fqdn(src, k, &format!("{at}.tsig-key"))?;
            if !keys.iter().any(|key| key.name == name) {
                return Err(src.error(
                    k.span(),
                    format!("{at}.tsig-key"),
                    format!("no [[tsig-key]] is named {name}"),
                ));
            }
            Some(name)
        }
    };
    let notify = match &t.notify {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|n| {
                let text = n.get_ref().trim();
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        let message = format!("{text:?} is not an IP address, or address:port such as \"10.1.2.4:5353\"");
                        src.error(n.span(), format!("{at}.notify"), message)
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(TransferPolicy {
        allow,
        key,
        notify,
        require_tls: t.require_tls.as_ref().is_some_and(|v| *v.get_ref()),
    })
}

fn check_http(
    src: &Source<'_>,
    h: &HttpFile,
    dns: &[SocketAddr],
) -> Result<HttpConfig, ConfigError> {
    let addr: SocketAddr = h.listen.get_ref().parse().map_err(|_| {
        let message = format!(
            "{:?} is not an address:port such as \"0.0.0.0:9153\"",
            h.listen.get_ref()
        );
        src.error(h.listen.span(), "http.listen", message)
    })?;
    if let Some(dns) = dns.iter().find(|d| overlaps(**d, addr)) {
        return Err(src.error(
            h.listen.span(),
            "http.listen",
            format!("{addr} is also a DNS address ({dns} in [server] listen)"),
        ));
    }
    let max_connections = in_range(
        src,
        h.max_connections.as_ref(),
        32,
        1..=MAX_HTTP_CONNECTIONS,
        "http.max-connections",
        || format!("must be between 1 and {MAX_HTTP_CONNECTIONS}"),
    )?;
    let max_per_source = h
        .max_connections_per_source
        .as_ref()
        .map(|v| {
            in_range(
                src,
                Some(v),
                1,
                1..=max_connections,
                "http.max-connections-per-source",
                || format!("must be between 1 and max-connections ({max_connections})"),
            )
        })
        .transpose()?;
    Ok(HttpConfig {
        listen: addr,
        max_connections,
        max_per_source,
        header_timeout: duration_or(
            src,
            h.header_timeout.as_ref(),
            Duration::from_secs(5),
            "http.header-timeout",
        )?,
    })
}

/// `[log] queries` and `queries-sample-rate` as "one query in every N" (0: off).
fn check_query_log(src: &Source<'_>, log: &LogFile) -> Result<u64, ConfigError> {
    let rate = |r: &Spanned<f64>| *r.get_ref() > 0.0 && *r.get_ref() <= 1.0;
    match (log.queries, &log.queries_sample_rate) {
        (_, Some(r)) if !rate(r) => Err(src.error(
            r.span(),
            "log.queries-sample-rate",
            "must be more than 0 and at most 1",
        )),
        (Some(true), None) => Ok(1),
        (Some(true), Some(r)) => Ok((1.0 / r.get_ref()).round() as u64),
        _ => Ok(0),
    }
}

/// Every `[[zone]]`: each checked, no origin twice, no record hidden by another zone.
fn check_zones(
    src: &Source<'_>,
    files: &[ZoneFile],
    batches: &[Vec<bulk::Batch>],
    nameserver: &Name,
) -> Result<Vec<ZoneConfig>, ConfigError> {
    let nested = nested_zones(src, files);
    let mut zones = Vec::with_capacity(files.len());
    let mut seen_origins: HashMap<LowerName, usize> = HashMap::new();
    for (zi, z) in files.iter().enumerate() {
        let batches = batches.get(zi).map_or(&[][..], Vec::as_slice);
        let zone = check_zone(src, zi, z, batches, nameserver, &nested[zi])?;
        if let Some(first) = seen_origins.insert(LowerName::new(&zone.origin), zi) {
            return Err(src.error(
                z.origin.span(),
                format!("zone[{zi}].origin"),
                format!("zone {} is already defined as zone[{first}]", zone.origin),
            ));
        }
        zones.push(zone);
    }
    Ok(zones)
}

/// For each zone, the origins of the zones configured below it, so that each record
/// can be checked against them: one walk up from each origin (10,000 zones must not
/// cost 10,000 x 10,000 comparisons). Unparsable origins are left to `check_zone`.
fn nested_zones(src: &Source<'_>, files: &[ZoneFile]) -> Vec<Vec<Name>> {
    let origins: Vec<Option<Name>> = files
        .iter()
        .enumerate()
        .map(|(zi, z)| parse_fqdn(src, &z.origin, &format!("zone[{zi}].origin")).ok())
        .collect();
    let index: HashMap<LowerName, usize> = origins
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((LowerName::new(o.as_ref()?), i)))
        .collect();
    let mut nested = vec![Vec::new(); files.len()];
    for origin in origins.iter().flatten() {
        let mut parent = origin.clone();
        while !parent.is_root() {
            parent = parent.base_name();
            if let Some(&outer) = index.get(&LowerName::new(&parent)) {
                nested[outer].push(origin.clone());
            }
        }
    }
    nested
}

/// The zone of `nested` (zones configured below this one) that `name` is in: its
/// record belongs there.
fn occluded(name: &Name, nested: &[Name]) -> Option<String> {
    let inner = nested.iter().find(|o| o.zone_of(name))?;
    Some(format!(
        "{} is inside zone {inner}, which is configured separately; move the record there",
        crate::zonefile::shown(name)
    ))
}

fn check_zone(
    src: &Source<'_>,
    zi: usize,
    z: &ZoneFile,
    batches: &[bulk::Batch],
    default_ns: &Name,
    nested: &[Name],
) -> Result<ZoneConfig, ConfigError> {
    let origin = parse_fqdn(src, &z.origin, &format!("zone[{zi}].origin"))?;
    if origin.is_wildcard() {
        return Err(src.error(
            z.origin.span(),
            format!("zone[{zi}].origin"),
            "a zone origin cannot be a wildcard",
        ));
    }
    let ttl = positive(src, z.ttl.as_ref(), 300, &format!("zone[{zi}].ttl"))?;
    let origin_wire = QName::from_name(&origin).map_or(vec![0], |q| q.as_bytes().to_vec());
    let mut fixed = NamesBuilder::new(&origin_wire);
    let (records, seen) = check_records(src, zi, z, batches, &origin, ttl, nested, &mut fixed)?;
    let from_file = match &z.file {
        Some(file) => {
            let mut reader = FileRecords {
                zi,
                origin: &origin,
                nested,
                seen: &seen,
                fixed: &mut fixed,
                apex: Apex::default(),
                wire: Vec::with_capacity(256),
                wire_of_last: false,
            };
            Some(read_zone_file(src, zi, file, ttl, &mut reader)?)
        }
        None => None,
    };
    // A large config read from a file writes the index of a zone without a zone file
    // once the text is freed (see `Config::from_toml_owned`); else here, with the
    // name set dropped first (the names are in the index and `records` from here).
    let deferred = src.defer.filter(|_| from_file.is_none());
    let mut seen = Some(seen);
    let mut builder = Some(fixed);
    let fixed = match deferred {
        Some(_) => None,
        None => {
            seen = None;
            let (fixed, conflict) = builder.take().map(NamesBuilder::finish).unzip();
            match (conflict.flatten(), &from_file) {
                (Some(Conflict::Ttl { name, first, then }), Some(file)) => {
                    return Err(ConfigError::Invalid {
                        path: file.path.clone(),
                        line: then.0 as usize,
                        column: 1,
                        key: format!("zone[{zi}].file"),
                        message: format!(
                            "TTL {} differs from TTL {} of the same RRset of {} on line {}; an RRset has one TTL (RFC 2181)",
                            then.1,
                            first.1,
                            zonefile::shown(&name),
                            first.0
                        ),
                    });
                }
                (Some(Conflict::TooLarge { name, line, bytes }), file) => {
                    let message = too_large(&name, bytes);
                    return Err(match file {
                        Some(file) if line > 0 => ConfigError::Invalid {
                            path: file.path.clone(),
                            line: line as usize,
                            column: 1,
                            key: format!("zone[{zi}].file"),
                            message,
                        },
                        _ => src.error(z.origin.span(), format!("zone[{zi}].record"), message),
                    });
                }
                _ => {}
            }
            fixed
        }
    };
    let (ns, ns_ttl, soa) = check_apex(src, zi, z, &origin, default_ns, from_file.as_ref())?;
    // An in-zone name server needs addresses to be reachable by a resolver that
    // follows the NS set (glue, RFC 9471).
    let exists = |n: &Name| match (&fixed, &seen) {
        (Some(fixed), _) => {
            records
                .iter()
                .any(|r| LowerName::new(&r.name) == LowerName::new(n))
                || QName::from_name(&n.to_lowercase()).is_some_and(|q| fixed.contains(q.as_bytes()))
        }
        (None, Some(seen)) => seen.get(n).is_some(),
        (None, None) => false,
    };
    for n in &ns {
        if origin.zone_of(n) && !exists(n) {
            let span = z.ns.as_ref().map_or(z.origin.span(), |s| s.span());
            return Err(src.error(
                span,
                format!("zone[{zi}].ns"),
                format!("name server {n} is inside the zone but has no record with its addresses"),
            ));
        }
    }
    drop(seen);
    if let (Some(sink), Some(builder)) = (deferred, builder) {
        // Where an error of the index would point: found for every zone in one pass
        // (`Config::from_toml_owned`), not here (a scan of the text per zone is
        // quadratic in zones).
        let at = src.position(z.origin.span().start);
        sink.borrow_mut().push(Deferred { zi, builder, at });
    }
    Ok(ZoneConfig {
        origin,
        ns,
        ns_ttl: ns_ttl.unwrap_or(soa.ttl),
        soa,
        records,
        fixed: Arc::new(fixed.unwrap_or_default()),
        transfer: Arc::default(),
    })
}

/// A zone whose index is written after the config's text is freed: its names, and
/// where an error about them points.
struct Deferred {
    zi: usize,
    builder: NamesBuilder,
    /// The zone's `origin` in the text.
    at: usize,
}

/// (line, column) of each byte position of `positions` in `text`, in one pass.
fn lines_and_columns(text: &str, positions: &[usize]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.sort_by_key(|&i| positions[i]);
    let mut out = vec![(1, 1); positions.len()];
    let (mut line, mut line_start, mut scanned) = (1, 0, 0);
    for i in order {
        let at = positions[i].min(text.len());
        for (j, b) in text.as_bytes()[scanned..at].iter().enumerate() {
            if *b == b'\n' {
                line += 1;
                line_start = scanned + j + 1;
            }
        }
        scanned = at.max(scanned);
        out[i] = (line, at - line_start + 1);
    }
    out
}

/// The error of a name whose addresses no DNS message can carry.
fn too_large(name: &Name, bytes: usize) -> String {
    format!(
        "the addresses of {} take {bytes} bytes; no DNS message can carry more than {} of one RRset (at most {} A or {} AAAA records a name)",
        zonefile::shown(name),
        crate::names::MAX_RRSET_BYTES,
        crate::names::MAX_A,
        crate::names::MAX_AAAA,
    )
}

/// The `[[zone.record]]`s: AWS-backed ones come back as records, static ones go into
/// `fixed`; with every name, to find them again.
/// The zone's `[[zone.record]]` tables: those of its own table, then those of
/// `batches`, each batch parsed, checked and dropped before the next (a large config
/// never holds every record table at once).
#[allow(clippy::too_many_arguments)]
fn check_records(
    src: &Source<'_>,
    zi: usize,
    z: &ZoneFile,
    batches: &[bulk::Batch],
    origin: &Name,
    ttl: u32,
    nested: &[Name],
    fixed: &mut NamesBuilder,
) -> Result<(Vec<RecordConfig>, SeenNames), ConfigError> {
    let mut records = Vec::new();
    let origin_wire = QName::from_name(origin).map_or(vec![0], |q| q.as_bytes().to_vec());
    let mut seen = SeenNames::new(&origin_wire);
    let mut wire = Vec::with_capacity(256);
    let mut out = RecordsOut {
        records: &mut records,
        seen: &mut seen,
        wire: &mut wire,
        fixed,
    };
    for (ri, r) in z.record.iter().enumerate() {
        check_one_record(src, zi, ri, r, origin, ttl, nested, &mut out)?;
    }
    let mut ri = z.record.len();
    for batch in batches {
        let bsrc = src.at(batch.start);
        let parsed: bulk::Records =
            toml::from_str(&src.text[batch.start..batch.end]).map_err(|e| bsrc.toml_error(&e))?;
        for r in &parsed.zone.record {
            check_one_record(&bsrc, zi, ri, r, origin, ttl, nested, &mut out)?;
            ri += 1;
        }
    }
    Ok((records, seen))
}

/// The names of a zone's `[[zone.record]]` tables, for duplicates: their lower-cased
/// wire forms (relative to the origin: the labels above it) in one buffer, found by a
/// hash of them (a map of `Name`s cost ~100 bytes per name, 10 MB of a 100,000-name
/// config's load). Exact: a hash shared by two names is told apart by their bytes.
#[derive(Debug, Default)]
struct SeenNames {
    /// The zone's origin, lower-cased wire form.
    origin: Vec<u8>,
    /// Every name as [in the zone: 1 or 0][length][labels above the origin, or the
    /// whole wire name], one after another.
    arena: Vec<u8>,
    /// Hash → (offset in `arena`, record index); names with the same hash, rare,
    /// in `more`.
    first: rustc_hash::FxHashMap<u64, (u32, u32)>,
    more: Vec<(u64, u32, u32)>,
}

impl SeenNames {
    fn new(origin: &[u8]) -> Self {
        Self {
            origin: origin.to_vec(),
            ..Self::default()
        }
    }

    /// The stored form of `name`, and its hash.
    fn key(&self, name: &Name) -> Option<(u64, Vec<u8>)> {
        use std::hash::{BuildHasher, Hasher};
        let q = QName::from_name(&name.to_lowercase())?;
        let wire = q.as_bytes();
        let relative = wire
            .len()
            .checked_sub(self.origin.len())
            .filter(|&cut| wire[cut..] == self.origin[..] && q_label_boundary(wire, cut))
            .map(|cut| &wire[..cut]);
        let (flag, bytes) = match relative {
            Some(r) => (1, r),
            None => (0, wire),
        };
        let mut stored = Vec::with_capacity(bytes.len() + 2);
        stored.push(flag);
        stored.push(u8::try_from(bytes.len()).ok()?);
        stored.extend_from_slice(bytes);
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(&stored);
        Some((h.finish(), stored))
    }

    /// The stored name at `offset`.
    fn at(&self, offset: u32) -> &[u8] {
        let o = offset as usize;
        let len = usize::from(self.arena.get(o + 1).copied().unwrap_or(0));
        &self.arena[o..(o + 2 + len).min(self.arena.len())]
    }

    /// The record index that has `name`, if one does.
    fn get(&self, name: &Name) -> Option<usize> {
        let (hash, stored) = self.key(name)?;
        self.find(hash, &stored)
    }

    fn find(&self, hash: u64, stored: &[u8]) -> Option<usize> {
        let (offset, ri) = *self.first.get(&hash)?;
        if self.at(offset) == stored {
            return Some(ri as usize);
        }
        self.more
            .iter()
            .find(|(h, o, _)| *h == hash && self.at(*o) == stored)
            .map(|&(_, _, ri)| ri as usize)
    }

    /// Adds `name` for record `ri`; the index of the record that had it already, if one did.
    fn insert(&mut self, name: &Name, ri: usize) -> Option<usize> {
        let (hash, stored) = self.key(name)?;
        if let Some(first) = self.find(hash, &stored) {
            return Some(first);
        }
        let offset = u32::try_from(self.arena.len()).ok()?;
        self.arena.extend_from_slice(&stored);
        let ri = u32::try_from(ri).ok()?;
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((offset, ri));
            }
            std::collections::hash_map::Entry::Occupied(_) => self.more.push((hash, offset, ri)),
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// Whether `cut` is where a label starts in the wire name `wire`.
fn q_label_boundary(wire: &[u8], cut: usize) -> bool {
    let mut at = 0;
    while at < cut {
        at += 1 + usize::from(wire[at]);
    }
    at == cut
}

/// Where checked records go.
struct RecordsOut<'a> {
    records: &'a mut Vec<RecordConfig>,
    seen: &'a mut SeenNames,
    wire: &'a mut Vec<u8>,
    fixed: &'a mut NamesBuilder,
}

#[allow(clippy::too_many_arguments)]
fn check_one_record(
    src: &Source<'_>,
    zi: usize,
    ri: usize,
    r: &RecordFile,
    origin: &Name,
    ttl: u32,
    nested: &[Name],
    out: &mut RecordsOut<'_>,
) -> Result<(), ConfigError> {
    let RecordsOut {
        records,
        seen,
        wire,
        fixed,
    } = out;
    {
        let key = format!("zone[{zi}].record[{ri}]");
        let record = check_record(src, &key, r, origin, ttl)?;
        if let Some(first) = seen.insert(&record.name, ri) {
            return Err(src.error(
                r.name.span(),
                format!("{key}.name"),
                format!("{} is already defined by zone[{zi}].record[{first}]; list all its addresses there", record.name),
            ));
        }
        if let Some(message) = occluded(&record.name, nested) {
            return Err(src.error(r.name.span(), format!("{key}.name"), message));
        }
        match &record.addresses {
            Addresses::Static { a, aaaa } => {
                lower_wire(&record.name, wire);
                let ips = a.iter().map(|&v4| IpAddr::V4(v4));
                for ip in ips.chain(aaaa.iter().map(|&v6| IpAddr::V6(v6))) {
                    fixed.add(wire, record.ttl, 0, ip);
                }
            }
            Addresses::Endpoint(_) | Addresses::EksCluster(_) => records.push(record),
        }
    }
    Ok(())
}

/// The apex NS names (with their TTL if a file gave them) and SOA: from the zone
/// file, or from the `ns` and `soa` keys, never both.
fn check_apex(
    src: &Source<'_>,
    zi: usize,
    z: &ZoneFile,
    origin: &Name,
    default_ns: &Name,
    from_file: Option<&FromFile>,
) -> Result<(Vec<Name>, Option<u32>, SoaParams), ConfigError> {
    let apex = from_file.map(|f| &f.apex);
    let (ns, ns_ttl) = match apex.filter(|a| !a.ns.is_empty()) {
        Some(apex) => {
            if let Some(list) = &z.ns {
                return Err(in_file_too(src, list.span(), zi, "ns", "NS", from_file));
            }
            (apex.ns.clone(), apex.ns_ttl)
        }
        None => (check_ns(src, zi, z, default_ns)?, None),
    };
    let soa = match apex.and_then(|a| a.soa.clone()) {
        Some(soa) => {
            if z.soa.is_some() {
                return Err(in_file_too(
                    src,
                    z.origin.span(),
                    zi,
                    "soa",
                    "SOA",
                    from_file,
                ));
            }
            soa
        }
        None => check_soa(src, zi, z.soa.as_ref(), origin, &ns[0])?,
    };
    Ok((ns, ns_ttl, soa))
}

/// `name` lower-cased in wire form ([`QName`]), into `out` (reused: no allocation
/// per record of a large zone file).
fn lower_wire(name: &Name, out: &mut Vec<u8>) {
    out.clear();
    match QName::from_name(name) {
        Some(q) => out.extend_from_slice(q.as_bytes()),
        None => out.push(0), // a Name is at most 255 bytes: cannot happen
    }
}

/// The error for an apex RRset given both in a `[[zone]]` key and in its file.
fn in_file_too(
    src: &Source<'_>,
    span: Range<usize>,
    zi: usize,
    key: &str,
    rtype: &str,
    file: Option<&FromFile>,
) -> ConfigError {
    let path = file.map_or("", |f| f.path.as_str());
    let message = format!("{rtype} records are also in {path}; give them in one place");
    src.error(span, format!("zone[{zi}].{key}"), message)
}

/// What a zone's `file` gave besides its A and AAAA records.
struct FromFile {
    /// As shown in errors: the path joined to the config file's directory.
    path: String,
    apex: Apex,
}

/// The SOA and NS RRsets a zone file gives at its apex.
#[derive(Default)]
struct Apex {
    soa: Option<SoaParams>,
    ns: Vec<Name>,
    ns_ttl: Option<u32>,
}

/// Reads `[[zone]] file` into `reader`, one line at a time: no document is held,
/// whatever its size.
fn read_zone_file(
    src: &Source<'_>,
    zi: usize,
    file: &Spanned<String>,
    zone_ttl: u32,
    reader: &mut FileRecords<'_>,
) -> Result<FromFile, ConfigError> {
    let key = format!("zone[{zi}].file");
    let path = match Path::new(src.path).parent() {
        Some(dir) if src.path != DEMO_NAME => dir.join(file.get_ref()),
        _ => Path::new(file.get_ref()).to_path_buf(),
    };
    let shown = path.display().to_string();
    // A regular file only: a FIFO or a device would block the reload with no bound.
    if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
        let message = format!("{shown} is not a regular file");
        return Err(src.error(file.span(), &key, message));
    }
    let input = std::fs::File::open(&path)
        .map_err(|e| src.error(file.span(), &key, format!("cannot read {shown}: {e}")))?;
    let before = input.metadata().ok().map(|m| (m.len(), m.modified().ok()));
    let origin = reader.origin.clone();
    let read = zonefile::read(
        std::io::BufReader::with_capacity(64 * 1024, &input),
        &origin,
        zone_ttl,
        |entry| reader.add(entry),
    );
    read.map_err(|e| ConfigError::Invalid {
        path: shown.clone(),
        line: e.line,
        column: e.column,
        key: key.clone(),
        message: e.message,
    })?;
    // A file rewritten in place while it was read gave part of one version and part
    // of another: refused, so the data served before stays (write by rename instead).
    let after = input.metadata().ok().map(|m| (m.len(), m.modified().ok()));
    if before != after {
        let message = format!(
            "{shown} changed while it was read; write zone files to a temporary name and rename them into place"
        );
        return Err(src.error(file.span(), &key, message));
    }
    Ok(FromFile {
        path: shown,
        apex: std::mem::take(&mut reader.apex),
    })
}

/// Adds the records of a zone file to a zone's.
struct FileRecords<'a> {
    zi: usize,
    origin: &'a Name,
    /// Zones configured below this one.
    nested: &'a [Name],
    /// The zone's `[[zone.record]]` names.
    seen: &'a SeenNames,
    fixed: &'a mut NamesBuilder,
    apex: Apex,
    /// The owner of the last A or AAAA record, lower-cased wire form.
    wire: Vec<u8>,
    /// Whether `wire` is the owner of the record read last (checked).
    wire_of_last: bool,
}

impl FileRecords<'_> {
    fn add(&mut self, entry: zonefile::Entry) -> Result<(), String> {
        let (name, ttl, origin) = (entry.owner, entry.ttl, self.origin);
        if ttl == 0 {
            return Err("TTL 0: must be at least 1 (0 disables caching in every resolver)".into());
        }
        // The owner of the record before was checked, and is in `wire` if it had
        // addresses.
        let same = entry.same_owner && self.wire_of_last;
        self.wire_of_last = false;
        if !same && !origin.zone_of(&name) {
            return Err(format!(
                "{} is outside its zone {origin}",
                zonefile::shown(&name)
            ));
        }
        let at_apex = || {
            if LowerName::new(&name) == LowerName::new(origin) {
                Ok(())
            } else {
                Err(format!(
                    "an SOA or NS record below the apex ({}) would delegate; privatelink-dns serves none",
                    zonefile::shown(&name)
                ))
            }
        };
        let apex = &mut self.apex;
        match entry.data {
            zonefile::Data::A(ip) => self.address(&name, same, ttl, entry.line, IpAddr::V4(ip)),
            zonefile::Data::Aaaa(ip) => self.address(&name, same, ttl, entry.line, IpAddr::V6(ip)),
            zonefile::Data::Ns(ns) => {
                at_apex()?;
                if apex.ns_ttl.is_some_and(|t| t != ttl) {
                    return Err(format!(
                        "TTL {ttl} differs from the apex NS records before it; an RRset has one TTL"
                    ));
                }
                apex.ns_ttl = Some(ttl);
                let ns = ns.to_lowercase();
                if !apex.ns.contains(&ns) {
                    apex.ns.push(ns);
                }
                Ok(())
            }
            zonefile::Data::Soa {
                mname,
                rname,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                at_apex()?;
                if apex.soa.is_some() {
                    return Err("a second SOA record; a zone has one".into());
                }
                apex.soa = Some(SoaParams {
                    mname: mname.to_lowercase(),
                    rname: rname.to_lowercase(),
                    refresh,
                    retry,
                    expire,
                    minimum,
                    ttl,
                });
                Ok(())
            }
        }
    }

    /// One A or AAAA record; `same`: of the owner checked last.
    fn address(
        &mut self,
        name: &Name,
        same: bool,
        ttl: u32,
        line: usize,
        ip: IpAddr,
    ) -> Result<(), String> {
        if same {
            self.fixed.add(&self.wire, ttl, line as u32, ip);
            self.wire_of_last = true;
            return Ok(());
        }
        if name.iter().skip(1).any(|l| l == b"*") {
            return Err("`*` is a wildcard only as the leftmost label (RFC 4592)".into());
        }
        if !self.seen.is_empty()
            && let Some(ri) = self.seen.get(name)
        {
            return Err(format!(
                "{} is already defined by zone[{}].record[{ri}]; give its addresses in one place",
                zonefile::shown(name),
                self.zi
            ));
        }
        if let Some(message) = occluded(name, self.nested) {
            return Err(message);
        }
        lower_wire(name, &mut self.wire);
        self.wire_of_last = true;
        self.fixed.add(&self.wire, ttl, line as u32, ip);
        Ok(())
    }
}

fn check_ns(
    src: &Source<'_>,
    zi: usize,
    z: &ZoneFile,
    default_ns: &Name,
) -> Result<Vec<Name>, ConfigError> {
    match &z.ns {
        None => Ok(vec![default_ns.clone()]),
        Some(list) if list.get_ref().is_empty() => Err(src.error(
            list.span(),
            format!("zone[{zi}].ns"),
            "needs at least one name server name",
        )),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|n| parse_fqdn(src, n, &format!("zone[{zi}].ns")))
            .collect(),
    }
}

fn check_soa(
    src: &Source<'_>,
    zi: usize,
    file: Option<&SoaFile>,
    origin: &Name,
    first_ns: &Name,
) -> Result<SoaParams, ConfigError> {
    let key = |k: &str| format!("zone[{zi}].soa.{k}");
    let defaults = SoaParams::defaults(origin, first_ns.clone());
    let Some(f) = file else {
        return Ok(defaults);
    };
    let name = |v: Option<&Spanned<String>>, default: Name, k: &str| {
        v.map_or(Ok(default), |v| parse_fqdn(src, v, &key(k)))
    };
    let number =
        |v: Option<&Spanned<u32>>, default: u32, k: &str| positive(src, v, default, &key(k));
    Ok(SoaParams {
        mname: name(f.mname.as_ref(), defaults.mname, "mname")?,
        rname: name(f.rname.as_ref(), defaults.rname, "rname")?,
        refresh: number(f.refresh.as_ref(), defaults.refresh, "refresh")?,
        retry: number(f.retry.as_ref(), defaults.retry, "retry")?,
        expire: number(f.expire.as_ref(), defaults.expire, "expire")?,
        minimum: number(f.minimum.as_ref(), defaults.minimum, "minimum")?,
        ttl: number(f.ttl.as_ref(), defaults.ttl, "ttl")?,
    })
}

/// One `[[zone.record]]`; `key` is its path, e.g. `zone[0].record[2]`.
fn check_record(
    src: &Source<'_>,
    key: &str,
    r: &RecordFile,
    origin: &Name,
    zone_ttl: u32,
) -> Result<RecordConfig, ConfigError> {
    let name = relative_or_absolute(src, &r.name, origin, &format!("{key}.name"))?;
    if !origin.zone_of(&name) {
        return Err(src.error(
            r.name.span(),
            format!("{key}.name"),
            format!("{name} is outside its zone {origin}"),
        ));
    }
    if name.iter().skip(1).any(|l| l == b"*") {
        return Err(src.error(
            r.name.span(),
            format!("{key}.name"),
            "`*` is a wildcard only as the leftmost label (RFC 4592)",
        ));
    }
    let a = parse_addresses::<Ipv4Addr>(src, &r.a, &format!("{key}.a"), "IPv4")?;
    let aaaa = parse_addresses::<Ipv6Addr>(src, &r.aaaa, &format!("{key}.aaaa"), "IPv6")?;
    if let Some(cluster) = &r.eks_cluster {
        if r.vpc_endpoint.is_some()
            || r.vpc_endpoint_tags.is_some()
            || !a.is_empty()
            || !aaaa.is_empty()
        {
            return Err(src.error(
                cluster.span(),
                format!("{key}.eks-cluster"),
                "a record takes its addresses from one place: `a`/`aaaa`, `vpc-endpoint`, `vpc-endpoint-tags` or `eks-cluster`",
            ));
        }
        if !is_cluster_name(cluster.get_ref()) {
            return Err(src.error(
                cluster.span(),
                format!("{key}.eks-cluster"),
                format!(
                    "{:?} is not an EKS cluster name (1 to 100 letters, digits, - and _)",
                    cluster.get_ref()
                ),
            ));
        }
        return Ok(RecordConfig {
            name,
            ttl: positive(src, r.ttl.as_ref(), zone_ttl, &format!("{key}.ttl"))?,
            addresses: Addresses::EksCluster(cluster.get_ref().clone()),
        });
    }
    let addresses = match (
        check_selector(src, r, key)?,
        a.is_empty() && aaaa.is_empty(),
    ) {
        (None, true) => {
            return Err(src.error(
                r.name.span(),
                key,
                "a record needs at least one address in `a` or `aaaa`, or a `vpc-endpoint`, `vpc-endpoint-tags` or `eks-cluster`",
            ));
        }
        (Some(_), false) => {
            return Err(src.error(
                r.name.span(),
                key,
                "a record takes its addresses from `a`/`aaaa` or from a VPC endpoint, not both",
            ));
        }
        (Some(selector), true) => Addresses::Endpoint(selector),
        (None, false) => Addresses::Static { a, aaaa },
    };
    Ok(RecordConfig {
        name,
        ttl: positive(src, r.ttl.as_ref(), zone_ttl, &format!("{key}.ttl"))?,
        addresses,
    })
}

fn parse_addresses<T: std::str::FromStr>(
    src: &Source<'_>,
    list: &[Spanned<String>],
    key: &str,
    family: &str,
) -> Result<Vec<T>, ConfigError> {
    list.iter()
        .map(|ip| {
            ip.get_ref().parse::<T>().map_err(|_| {
                let message = format!("{:?} is not an {family} address", ip.get_ref());
                src.error(ip.span(), key, message)
            })
        })
        .collect()
}

fn check_selector(
    src: &Source<'_>,
    r: &RecordFile,
    key: &str,
) -> Result<Option<Selector>, ConfigError> {
    match (&r.vpc_endpoint, &r.vpc_endpoint_tags) {
        (Some(_), Some(tags)) => Err(src.error(
            tags.span(),
            format!("{key}.vpc-endpoint-tags"),
            "use either `vpc-endpoint` or `vpc-endpoint-tags`, not both",
        )),
        (Some(id), None) => {
            let text = id.get_ref();
            let ok = text.starts_with("vpce-")
                && text.len() > 5
                && text[5..].bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(src.error(
                    id.span(),
                    format!("{key}.vpc-endpoint"),
                    format!("{text:?} is not a VPC endpoint id such as \"vpce-0123456789abcdef0\""),
                ));
            }
            Ok(Some(Selector::Endpoint(text.clone())))
        }
        (None, Some(tags)) if tags.get_ref().is_empty() => Err(src.error(
            tags.span(),
            format!("{key}.vpc-endpoint-tags"),
            "needs at least one tag; an empty selector would match every endpoint",
        )),
        (None, Some(tags)) => Ok(Some(Selector::Tags(tags.get_ref().clone()))),
        (None, None) => Ok(None),
    }
}

fn check_aws(src: &Source<'_>, aws: Option<&AwsFile>) -> Result<AwsConfig, ConfigError> {
    let defaults = AwsConfig::default();
    let Some(f) = aws else {
        return Ok(defaults);
    };
    let duration = |v: Option<&Spanned<String>>, def: Duration, key: &str| match v {
        None => Ok(def),
        Some(v) => parse_duration(src, v, key),
    };
    let endpoint_url = match &f.endpoint_url {
        Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
            return Err(src.error(
                u.span(),
                "aws.endpoint-url",
                format!("{:?} is not an http:// or https:// URL", u.get_ref()),
            ));
        }
        u => u.as_ref().map(|u| u.get_ref().clone()),
    };
    let eks_endpoint_url = match &f.eks_endpoint_url {
        Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
            return Err(src.error(
                u.span(),
                "aws.eks-endpoint-url",
                format!("{:?} is not an http:// or https:// URL", u.get_ref()),
            ));
        }
        u => u.as_ref().map(|u| u.get_ref().clone()),
    };
    let page_size = match &f.page_size {
        None => defaults.page_size,
        Some(v) if (5..=1000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => return Err(src.error(v.span(), "aws.page-size", "must be between 5 and 1000")),
    };
    let refresh_interval = duration(
        f.refresh_interval.as_ref(),
        defaults.refresh_interval,
        "aws.refresh-interval",
    )?;
    if refresh_interval < MIN_REFRESH_INTERVAL {
        let span = f.refresh_interval.as_ref().map_or(0..0, Spanned::span);
        return Err(src.error(span, "aws.refresh-interval", "must be at least 1s"));
    }
    let call_timeout = duration(
        f.call_timeout.as_ref(),
        defaults.call_timeout,
        "aws.call-timeout",
    )?;
    if call_timeout >= refresh_interval {
        let (span, key) = match &f.call_timeout {
            Some(v) => (v.span(), "aws.call-timeout"),
            None => (
                f.refresh_interval.as_ref().map_or(0..0, Spanned::span),
                "aws.refresh-interval",
            ),
        };
        return Err(src.error(
            span,
            key,
            format!(
                "call-timeout ({}) must be shorter than refresh-interval ({})",
                humantime::format_duration(call_timeout),
                humantime::format_duration(refresh_interval)
            ),
        ));
    }
    Ok(AwsConfig {
        region: f.region.clone(),
        endpoint_url,
        eks_endpoint_url,
        role_arn: check_role(src, f.role_arn.as_ref(), "aws.role-arn")?,
        refresh_interval,
        call_timeout,
        max_backoff: duration(
            f.max_backoff.as_ref(),
            defaults.max_backoff,
            "aws.max-backoff",
        )?,
        page_size,
        cache_file: f.cache_file.as_ref().map(PathBuf::from),
        removal_hold: match &f.removal_hold {
            None => defaults.removal_hold,
            Some(v) => parse_duration_or_zero(src, v, "aws.removal-hold")?,
        },
    })
}

fn check_role(
    src: &Source<'_>,
    v: Option<&Spanned<String>>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match v {
        None => Ok(None),
        Some(r) if r.get_ref().starts_with("arn:") && r.get_ref().contains(":role/") => {
            Ok(Some(r.get_ref().clone()))
        }
        Some(r) => Err(src.error(
            r.span(),
            key,
            format!(
                "{:?} is not a role ARN such as \"arn:aws:iam::111122223333:role/privatelink-dns\"",
                r.get_ref()
            ),
        )),
    }
}

fn check_discover(
    src: &Source<'_>,
    i: usize,
    d: &DiscoverFile,
    aws: &AwsConfig,
) -> Result<DiscoverConfig, ConfigError> {
    let key = |k: &str| format!("discover[{i}].{k}");
    if d.vpc_ids.get_ref().is_empty() {
        return Err(src.error(
            d.vpc_ids.span(),
            key("vpc-ids"),
            "needs at least one VPC id",
        ));
    }
    if let Some(bad) = d.vpc_ids.get_ref().iter().find(|v| !v.starts_with("vpc-")) {
        return Err(src.error(
            d.vpc_ids.span(),
            key("vpc-ids"),
            format!("{bad:?} is not a VPC id such as \"vpc-0abc\""),
        ));
    }
    Ok(DiscoverConfig {
        target: Target {
            region: d.region.clone().or_else(|| aws.region.clone()),
            role_arn: check_role(src, d.role_arn.as_ref(), &key("role-arn"))?
                .or_else(|| aws.role_arn.clone()),
        },
        vpc_ids: d.vpc_ids.get_ref().clone(),
        tags: d.tags.clone(),
        ttl: positive(src, d.ttl.as_ref(), 60, &key("ttl"))?,
        private_dns: d.private_dns,
        transfer: Arc::default(),
        eks_clusters: check_eks_clusters(src, d.eks_clusters.as_ref(), &key("eks-clusters"))?,
    })
}

/// An EKS cluster name as EKS allows it: 1 to 100 letters, digits, `-` and `_`,
/// starting with a letter or digit.
fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_eks_clusters(
    src: &Source<'_>,
    v: Option<&Spanned<Vec<Spanned<String>>>>,
    key: &str,
) -> Result<EksClusters, ConfigError> {
    let Some(list) = v else {
        return Ok(EksClusters::None);
    };
    if list.get_ref().is_empty() {
        return Ok(EksClusters::None);
    }
    if list.get_ref().iter().any(|n| n.get_ref() == "*") {
        if list.get_ref().len() > 1 {
            return Err(src.error(
                list.span(),
                key,
                "\"*\" (every cluster) stands alone: list names or \"*\", not both",
            ));
        }
        return Ok(EksClusters::All);
    }
    let mut names = BTreeSet::new();
    for n in list.get_ref() {
        if !is_cluster_name(n.get_ref()) {
            return Err(src.error(
                n.span(),
                key,
                format!(
                    "{:?} is not an EKS cluster name (1 to 100 letters, digits, - and _)",
                    n.get_ref()
                ),
            ));
        }
        names.insert(n.get_ref().clone());
    }
    Ok(EksClusters::Named(names))
}

/// A record that falls inside a more specific configured zone would never be served.
fn positive(
    src: &Source<'_>,
    v: Option<&Spanned<u32>>,
    default: u32,
    key: &str,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(src.error(
            v.span(),
            key,
            "must be at least 1 (0 disables caching in every resolver)",
        )),
        Some(v) if *v.get_ref() > i32::MAX as u32 => Err(src.error(
            v.span(),
            key,
            "must be at most 2147483647 (RFC 2181 section 8)",
        )),
        Some(v) => Ok(*v.get_ref()),
    }
}

/// Bounds of `[server] max-tcp-connections`: each is a file descriptor.
pub const MAX_TCP_CONNECTIONS: usize = 65_536;
/// Bound of `[server] udp-workers` (threads per listen address).
pub const MAX_UDP_WORKERS: usize = 256;
/// The shortest `[aws] refresh-interval`: below it, the API is called in a busy loop.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether two listen addresses would take the same socket: the same port (not 0,
/// which picks a free one), the same family, and the same IP or a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `[server] listen`: at least one address, none overlapping another.
fn check_listen(
    src: &Source<'_>,
    spans: Option<&Spanned<Vec<Spanned<String>>>>,
    listen: &[SocketAddr],
) -> Result<(), ConfigError> {
    let span = |i: usize| {
        spans.map_or(0..0, |list| {
            list.get_ref().get(i).map_or(list.span(), Spanned::span)
        })
    };
    if listen.is_empty() {
        return Err(src.error(
            span(0),
            "server.listen",
            "needs at least one address: without one the daemon would answer nothing",
        ));
    }
    for (i, a) in listen.iter().enumerate() {
        if let Some(b) = listen[..i].iter().find(|b| overlaps(**b, *a)) {
            return Err(src.error(
                span(i),
                "server.listen",
                format!("{a} overlaps {b}, listed before it"),
            ));
        }
    }
    Ok(())
}

/// `[log] level`: a tracing filter, checked now rather than ignored at start.
fn check_level(src: &Source<'_>, v: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok("info".to_string());
    };
    tracing_subscriber::EnvFilter::builder()
        .parse(v.get_ref())
        .map(|_| v.get_ref().clone())
        .map_err(|e| {
            src.error(
                v.span(),
                "log.level",
                format!(
                    "{:?} is not a log filter such as \"info\" or \"privatelink_dns=debug,warn\": {e}",
                    v.get_ref()
                ),
            )
        })
}

fn parse_duration(
    src: &Source<'_>,
    v: &Spanned<String>,
    key: &str,
) -> Result<Duration, ConfigError> {
    parse_duration_or_zero(src, v, key).and_then(|d| {
        if d.is_zero() {
            Err(src.error(v.span(), key, "must be longer than zero"))
        } else {
            Ok(d)
        }
    })
}

fn parse_duration_or_zero(
    src: &Source<'_>,
    v: &Spanned<String>,
    key: &str,
) -> Result<Duration, ConfigError> {
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) => Ok(d),
        Err(e) => Err(src.error(
            v.span(),
            key,
            format!("{:?} is not a duration such as \"10s\": {e}", v.get_ref()),
        )),
    }
}

fn parse_name(src: &Source<'_>, v: &Spanned<String>, key: &str) -> Result<Name, ConfigError> {
    let text = v.get_ref().trim();
    if text.is_empty() {
        return Err(src.error(v.span(), key, "a name cannot be empty"));
    }
    Name::from_ascii(text).map_err(|e| {
        src.error(
            v.span(),
            key,
            format!("{text:?} is not a valid DNS name: {e}"),
        )
    })
}

/// A name that is always absolute, with or without the trailing dot (NS, SOA names).
fn parse_fqdn(src: &Source<'_>, v: &Spanned<String>, key: &str) -> Result<Name, ConfigError> {
    let mut name = parse_name(src, v, key)?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// "@", a name relative to `origin`, or an absolute name ending in a dot.
fn relative_or_absolute(
    src: &Source<'_>,
    v: &Spanned<String>,
    origin: &Name,
    key: &str,
) -> Result<Name, ConfigError> {
    let text = v.get_ref().trim();
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = parse_name(src, v, key)?;
    let name = if name.is_fqdn() {
        name
    } else if origin.zone_of(&Name::from_ascii(format!("{text}.")).unwrap_or_default()) {
        // "www.example.com" in zone example.com would become www.example.com.example.com.
        return Err(src.error(
            v.span(),
            key,
            format!("{text:?} is relative to {origin}; write {text:?} with a trailing dot, or only the part below the origin"),
        ));
    } else {
        name.append_domain(origin).map_err(|e| {
            src.error(
                v.span(),
                key,
                format!("{text:?} under {origin} is too long: {e}"),
            )
        })?
    };
    Ok(name.to_lowercase())
}

/// Large configs: the `[[zone.record]]` tables of a big TOML text parsed in batches.
///
/// The `toml` crate builds a spanned tree of the whole document before our types
/// see it, ~3 KB per record table: 300 MB at a reload of 100,000 names. Here the
/// record tables are cut out of the text (the "skeleton" is the rest, with a map
/// of where the cuts were, so every span, line and key still points into the file)
/// and each batch
/// of [`BATCH`] tables is parsed on its own from its slice of the original text, then
/// checked and dropped. A text with anything this reading could get wrong (a
/// multi-line string, a table header naming `zone` in another spelling) is parsed
/// whole, as before; so is one whose zones the parser counts otherwise.
mod bulk {
    use super::RecordFile;

    /// Texts shorter than this are parsed whole.
    pub const SPLIT_AT: usize = 256 * 1024;
    /// Record tables parsed at once.
    pub const BATCH: usize = 256;

    /// Byte range of the original text holding consecutive `[[zone.record]]` tables.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Batch {
        pub start: usize,
        pub end: usize,
    }

    /// A batch's text, parsed.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Records {
        pub zone: ZoneRecords,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ZoneRecords {
        pub record: Vec<RecordFile>,
    }

    pub struct Split {
        /// The text without its batches.
        pub skeleton: String,
        /// Where the batches were cut out: (skeleton position, bytes cut up to there).
        pub holes: Vec<(usize, usize)>,
        /// Per `[[zone]]`, in order, its batches.
        pub zones: Vec<Vec<Batch>>,
    }

    enum Line {
        /// Not a table header.
        Plain,
        Zone,
        Record,
        /// Another table.
        Table,
        /// A header that names `zone` in a way this reading does not follow.
        Unusual,
    }

    fn line(line: &str) -> Line {
        let trimmed = line.trim();
        if !trimmed.starts_with('[') {
            return Line::Plain;
        }
        let head = trimmed.split('#').next().unwrap_or("").trim_end();
        match head {
            "[[zone]]" => Line::Zone,
            "[[zone.record]]" => Line::Record,
            _ if head.contains("zone") => Line::Unusual,
            _ => Line::Table,
        }
    }

    /// The batches of `text` and its skeleton; `None`: parse it whole.
    pub fn split(text: &str, split_at: usize) -> Option<Split> {
        if text.len() < split_at || text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let mut zones: Vec<Vec<Batch>> = Vec::new();
        let mut blanked: Vec<(usize, usize)> = Vec::new();
        // The record tables seen since the last other header: their starts.
        let mut heads: Vec<usize> = Vec::new();
        let close = |heads: &mut Vec<usize>,
                     end: usize,
                     zone: &mut Vec<Batch>,
                     blanked: &mut Vec<(usize, usize)>| {
            if let Some(&first) = heads.first() {
                blanked.push((first, end));
                for (i, chunk) in heads.chunks(BATCH).enumerate() {
                    let next = heads.get((i + 1) * BATCH).copied().unwrap_or(end);
                    zone.push(Batch {
                        start: chunk[0],
                        end: next,
                    });
                }
            }
            heads.clear();
        };
        let mut at = 0;
        for l in text.split_inclusive('\n') {
            let start = at;
            at += l.len();
            match line(l) {
                Line::Plain => {}
                Line::Unusual => return None,
                Line::Record => {
                    zones.last()?;
                    heads.push(start);
                }
                kind @ (Line::Zone | Line::Table) => {
                    if let Some(zone) = zones.last_mut() {
                        close(&mut heads, start, zone, &mut blanked);
                    }
                    if matches!(kind, Line::Zone) {
                        zones.push(Vec::new());
                    }
                }
            }
        }
        if let Some(zone) = zones.last_mut() {
            close(&mut heads, text.len(), zone, &mut blanked);
        }
        if blanked.is_empty() {
            return None;
        }
        let mut skeleton =
            String::with_capacity(text.len() - blanked.iter().map(|(a, b)| b - a).sum::<usize>());
        let mut holes = Vec::with_capacity(blanked.len());
        let (mut from, mut cut) = (0, 0);
        for (a, b) in blanked {
            skeleton.push_str(&text[from..a]);
            cut += b - a;
            holes.push((skeleton.len(), cut));
            from = b;
        }
        skeleton.push_str(&text[from..]);
        Some(Split {
            skeleton,
            holes,
            zones,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn demo_config_is_valid_and_serves_loopback() {
        let c = Config::demo();
        assert_eq!(
            c.server.listen,
            vec!["127.0.0.1:5300".parse::<SocketAddr>().unwrap()]
        );
        assert!(!c.zones.is_empty());
    }

    #[test]
    fn defaults() {
        let c = Config::from_toml("[[zone]]\norigin = \"example.com\"\n", "t").unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.server.settings.udp_payload_size, 1232);
        assert_eq!(c.server.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_tcp_connections, 1024);
        let z = &c.zones[0];
        assert_eq!(z.origin.to_string(), "example.com.");
        assert_eq!(z.ns[0].to_string(), "ns.privatelink-dns.invalid.");
        assert_eq!(z.soa.mname, z.ns[0]);
        assert_eq!(z.soa.rname.to_string(), "hostmaster.example.com.");
        assert_eq!((z.soa.minimum, z.soa.ttl), (60, 3600));
    }

    #[test]
    fn aws_sections() {
        let c = Config::from_toml(
            r#"
[aws]
region = "ap-northeast-1"
refresh-interval = "1m"
cache-file = "/var/lib/privatelink-dns/snapshot.json"

[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "@"
vpc-endpoint = "vpce-0123456789abcdef0"
[[zone.record]]
name = "api"
vpc-endpoint-tags = { "privatelink-dns/name" = "api" }

[[discover]]
vpc-ids = ["vpc-0abc"]

[[discover]]
vpc-ids = ["vpc-0def"]
region = "us-east-1"
role-arn = "arn:aws:iam::111122223333:role/privatelink-dns"
ttl = 30
private-dns = "any"
"#,
            "t",
        )
        .unwrap();
        let aws = c.aws.as_ref().unwrap();
        assert_eq!(aws.refresh_interval, Duration::from_secs(60));
        assert_eq!(aws.call_timeout, Duration::from_secs(10));
        assert_eq!(aws.page_size, 1000);
        let addresses: Vec<_> = c.zones[0].records.iter().map(|r| &r.addresses).collect();
        assert_eq!(
            addresses,
            [
                &Addresses::Endpoint(Selector::Endpoint("vpce-0123456789abcdef0".into())),
                &Addresses::Endpoint(Selector::Tags(
                    [("privatelink-dns/name".to_string(), "api".to_string())].into()
                )),
            ]
        );
        let targets = c.targets();
        assert_eq!(
            targets.len(),
            2,
            "the default target is shared: {targets:?}"
        );
        assert_eq!(targets[1].region.as_deref(), Some("us-east-1"));
        assert_eq!(c.discover[1].ttl, 30);
        assert_eq!(c.discover[0].ttl, 60);
        assert_eq!(c.discover[0].private_dns, PrivateDns::Enabled);
        assert_eq!(c.discover[1].private_dns, PrivateDns::Any);
        // AWS is off without AWS sources; on with them even without [aws].
        assert!(Config::demo().aws.is_none());
        let implicit = Config::from_toml("[[discover]]\nvpc-ids = [\"vpc-1\"]\n", "t").unwrap();
        assert_eq!(
            implicit.aws.unwrap().refresh_interval,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn names_resolve_against_origin() {
        let c = Config::from_toml(
            r#"
[[zone]]
origin = "Example.COM"
ttl = 120
[[zone.record]]
name = "@"
a = ["192.0.2.1"]
[[zone.record]]
name = "a.b"
a = ["192.0.2.2"]
ttl = 30
[[zone.record]]
name = "www.example.com."
aaaa = ["2001:db8::1"]
[[zone.record]]
name = "*.s3.us-east-1"
a = ["192.0.2.3"]
"#,
            "t",
        )
        .unwrap();
        // Static records go into the zone's name index (lower-cased there).
        assert!(c.zones[0].records.is_empty());
        let names: BTreeSet<_> = c.zones[0]
            .fixed
            .records()
            .into_iter()
            .map(|(name, records)| (name.to_string(), records[0].ttl))
            .collect();
        let want: BTreeSet<_> = [
            ("example.com.", 120),
            ("a.b.example.com.", 30),
            ("www.example.com.", 120),
            ("*.s3.us-east-1.example.com.", 120),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn lines_and_columns_in_one_pass_match_the_error_positions() {
        let text = "ab\ncd\n\nefg\n";
        let src = Source {
            path: "t",
            text,
            offset: 0,
            holes: &[],
            defer: None,
        };
        let positions = [9, 0, 4, 3, 7, 13];
        let got = lines_and_columns(text, &positions);
        for (p, (line, column)) in positions.iter().zip(got) {
            match src.error(*p..*p, "k", "m") {
                ConfigError::Invalid {
                    line: l, column: c, ..
                } => assert_eq!((line, column), (l, c), "at {p}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The record-name set: case-insensitive, exact for names of one hash.
    #[test]
    fn seen_names_are_exact() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let mut seen = SeenNames::new(QName::from_name(&n("example.com.")).unwrap().as_bytes());
        assert!(seen.is_empty());
        // Outside the origin (not stored relative): found as itself too.
        assert_eq!(seen.insert(&n("elsewhere.test."), 9), None);
        assert_eq!(seen.get(&n("ELSEWHERE.test.")), Some(9));
        assert_eq!(seen.get(&n("elsewhere.example.com.")), None);
        assert_eq!(seen.insert(&n("www.example.com."), 0), None);
        assert_eq!(seen.insert(&n("w.example.com."), 1), None);
        assert_eq!(seen.insert(&n("WWW.Example.com."), 2), Some(0));
        assert_eq!(seen.get(&n("w.EXAMPLE.com.")), Some(1));
        assert_eq!(seen.get(&n("ww.example.com.")), None);
        // Two names under one hash (forced): both kept, each found as itself.
        let (hash, _) = seen.key(&n("other.example.com.")).unwrap();
        let first = seen.first[&seen.key(&n("www.example.com.")).unwrap().0];
        seen.first.insert(hash, first);
        assert_eq!(seen.insert(&n("other.example.com."), 5), None);
        assert_eq!(seen.get(&n("other.example.com.")), Some(5));
        assert_eq!(seen.get(&n("www.example.com.")), Some(0));
        assert_eq!(seen.more.len(), 1);
        // "example.com." itself (the apex: nothing above the origin) and a name whose
        // last labels merely look like the origin's bytes.
        assert_eq!(seen.insert(&n("example.com."), 6), None);
        assert_eq!(seen.get(&n("Example.COM.")), Some(6));
        assert_eq!(seen.insert(&n("xexample.com."), 7), None);
    }

    /// The edges that are accepted: the bounds themselves, and the defaults.
    #[test]
    fn accept_boundaries_and_defaults() {
        let c = Config::from_toml("[server]\nudp-workers = 256\n", "t").unwrap();
        assert_eq!(c.server.udp_workers, 256, "the bound itself");
        let c = Config::from_toml("[server]\nudp-workers = 0\n", "t").unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.server.udp_workers, cpus, "0: one per CPU");
        let c = Config::from_toml("", "t").unwrap();
        assert_eq!(c.server.udp_workers, cpus, "the default is 0");
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5), "default");
        let c = Config::from_toml(
            "[[zone]]\norigin = \"t.test\"\nttl = 2147483647\n\
             [[zone.record]]\nname = \"www\"\nttl = 2147483647\na = [\"192.0.2.1\"]\n\
             [[zone.record]]\nname = \"api\"\na = [\"192.0.2.2\"]\n",
            "t",
        )
        .unwrap();

        let snap = crate::app::build_snapshot(&c, None);
        for name in ["www.t.test.", "api.t.test."] {
            let name = Name::from_ascii(name).unwrap();
            let zone = snap.zones().next().unwrap();
            let records = zone.node(&name).unwrap().a_records(&name);
            assert_eq!(
                records[0].ttl, 2_147_483_647,
                "{name}: its own, or the zone's"
            );
        }
    }

    /// `queries-sample-rate` becomes "one in round(1/rate)".
    #[test]
    fn query_log_sampling_rounds_to_one_in_n() {
        // (rate, one in)
        for (rate, every) in [
            (1.0, 1),
            (0.5, 2),
            (0.3, 3),
            (0.25, 4),
            (0.01, 100),
            (0.004, 250),
            // Where round() and truncation differ: 1/0.6 = 1.67, 1/0.15 = 6.67,
            // 1/0.0015 = 666.7.
            (0.6, 2),
            (0.15, 7),
            (0.0015, 667),
        ] {
            let c = Config::from_toml(
                &format!("[log]\nqueries = true\nqueries-sample-rate = {rate}\n"),
                "t",
            )
            .unwrap();
            assert_eq!(c.log.query_log_every, every, "{rate}");
        }
        let off = Config::from_toml("[log]\nqueries-sample-rate = 0.5\n", "t").unwrap();
        assert_eq!(off.log.query_log_every, 0, "queries off: nothing logged");
    }

    /// One row per validation rule: (config, expected line, expected key, words in the message).
    #[test]
    fn transfer_policies_default_and_replace() {
        let c = Config::from_toml(
            r#"
[server]
allow-query = ["10.0.0.0/8", "192.0.2.1"]
[[tsig-key]]
name = "Xfr-Key"
algorithm = "hmac-sha512"
secret = "AQIDBA=="
[transfer]
allow = ["10.1.0.0/16"]
notify = ["10.1.2.3", "10.1.2.4:5353", "fd00::53"]
[[zone]]
origin = "a.test"
[[zone]]
origin = "b.test"
transfer = { allow = ["10.9.0.0/16"], tsig-key = "xfr-key" }
[[discover]]
vpc-ids = ["vpc-1"]
transfer = { notify = ["10.7.0.1"] }
"#,
            "t",
        )
        .unwrap();
        let acl = c.server.settings.allow_query.as_ref().unwrap();
        assert!(acl.allows("10.2.3.4".parse().unwrap()));
        assert!(acl.allows("192.0.2.1".parse().unwrap()));
        assert!(!acl.allows("192.0.2.2".parse().unwrap()));
        let key = &c.server.settings.keys[0];
        assert_eq!(key.name.to_string(), "xfr-key.");
        assert_eq!(key.secret, [1, 2, 3, 4]);
        let (a, b) = (&c.zones[0].transfer, &c.zones[1].transfer);
        assert!(a.allow.allows("10.1.9.9".parse().unwrap()));
        assert_eq!(a.key, None);
        let targets: Vec<String> = a.notify.iter().map(|t| t.to_string()).collect();
        assert_eq!(targets, ["10.1.2.3:53", "10.1.2.4:5353", "[fd00::53]:53"]);
        assert!(
            !b.allow.allows("10.1.9.9".parse().unwrap()),
            "replaced, not merged"
        );
        assert!(b.allow.allows("10.9.9.9".parse().unwrap()));
        assert_eq!(b.key.as_ref().unwrap().to_string(), "xfr-key.");
        assert!(b.notify.is_empty());
        let d = &c.discover[0].transfer;
        assert!(d.allow.is_empty() && d.notify.len() == 1);
        // Without [transfer], nobody may transfer.
        let none = Config::from_toml("[[zone]]\norigin = \"a.test\"\n", "t").unwrap();
        assert!(none.zones[0].transfer.allow.is_empty());
        assert!(none.server.settings.allow_query.is_none());
    }

    /// A certificate pair that does not load exits 64 naming the file and its key.
    #[test]
    fn a_bad_tls_pair_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::tests::pair(dir.path(), "dns.test", "a");
        let (_, other) = crate::tls::tests::pair(dir.path(), "dns.test", "b");
        let text = |c: &std::path::Path, k: &std::path::Path| {
            format!(
                "[server]\nlisten = [\"127.0.0.1:53\"]\ntls-listen = [\"127.0.0.1:853\"]\n[tls]\ncertificate = {:?}\nkey = {:?}\n",
                c.display().to_string(),
                k.display().to_string()
            )
        };
        let config = Config::from_toml(&text(&cert, &key), "t.toml").unwrap();
        assert_eq!(config.server.tls_listen.len(), 1);
        assert!(config.tls.is_some());
        let e = Config::from_toml(&text(&cert, &other), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:6:") && e.contains("`tls.key`") && e.contains("b.key"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = Config::from_toml(&text(&missing, &key), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:5:") && e.contains("`tls.certificate`") && e.contains("missing.pem"),
            "{e}"
        );
    }

    /// Which clusters each target describes, and that the EKS selection is part of
    /// the cache identity (and absent from it without EKS, as in older caches).
    #[test]
    fn eks_scope_and_identity() {
        let base = "[aws]\nregion = \"ap-northeast-1\"\n[[zone]]\norigin = \"i.test\"\n";
        let none = Config::from_toml(&format!("{base}[[discover]]\nvpc-ids = [\"vpc-1\"]\n"), "t")
            .unwrap();
        let t = none.targets()[0].clone();
        assert_eq!(none.eks_scope(&t), None);
        assert!(none.identity(&t).eks.is_empty());
        let all = Config::from_toml(
            &format!("{base}[[discover]]\nvpc-ids = [\"vpc-1\"]\neks-clusters = [\"*\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(all.eks_scope(&t), Some(EksScope::All));
        assert_ne!(all.identity(&t), none.identity(&t));
        let record = Config::from_toml(
            &format!("{base}[[zone.record]]\nname = \"k8s\"\neks-cluster = \"prod\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            record.targets(),
            std::slice::from_ref(&t),
            "an eks-cluster record needs [aws]'s target"
        );
        assert_eq!(
            record.eks_scope(&t),
            Some(EksScope::Named(["prod".to_string()].into()))
        );
        assert_eq!(
            record.vpc_scope(&t),
            Some(BTreeSet::new()),
            "no endpoints to list"
        );
        assert_eq!(record.identity(&t).eks, ["record:prod"]);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let z = "[[zone]]\norigin = \"example.com\"\n";
        let rows: Vec<(String, usize, &str, &str)> = vec![
            (
                "[server]\nlisten = [\"0.0.0.0:53\"]\nbogus = 1\n".into(),
                3,
                "server.bogus",
                "unknown field",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\na = [\"1.2.3\"]\n"),
                5,
                "zone[0].record[0].a",
                "not an IPv4",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\naaaa = [\"192.0.2.1\"]\n"),
                5,
                "zone[0].record[0].aaaa",
                "not an IPv6",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www.example.org.\"\na = [\"192.0.2.1\"]\n"),
                4,
                "zone[0].record[0].name",
                "outside its zone",
            ),
            (format!("{z}{z}"), 4, "zone[1].origin", "already defined"),
            (
                format!("[transfer]\nallow = [\"10.0.0.0/8\"]\n[catalog]\nzone = \"Example.com\"\n{z}"),
                4,
                "catalog.zone",
                "is also a served zone",
            ),
            (
                format!("[transfer]\nallow = [\"10.0.0.0/8\"]\n[catalog]\nzone = \"com.\"\n{z}"),
                4,
                "catalog.zone",
                "or holds one (zone[0] example.com.)",
            ),
            (
                format!("[catalog]\nzone = \"catalog.invalid\"\n{z}"),
                2,
                "catalog.zone",
                "set [transfer] allow",
            ),
            ("[catalog]\n".into(), 1, "catalog", "missing field `zone`"),
            (
                "[server]\nlisten = [\"127.0.0.1:53\"]\ntls-listen = [\"127.0.0.1:853\"]\n".into(),
                3,
                "server.tls-listen",
                "set [tls] certificate and key",
            ),
            (
                "[tls]\ncertificate = \"x.crt\"\n".into(),
                2,
                "tls.key",
                "set key too",
            ),
            (
                "[follow]\nprimary = \"10.0.0.5:x\"\ncatalog = \"c.invalid\"\n".into(),
                2,
                "follow.primary",
                "is not host:port",
            ),
            (
                "[follow]\nprimary = \"10.0.0.5\"\n".into(),
                1,
                "follow",
                "missing field `catalog`",
            ),
            (
                format!("{z}[follow]\nprimary = \"10.0.0.5\"\ncatalog = \"example.com\"\n"),
                5,
                "follow.catalog",
                "a name is served from one source",
            ),
            (
                "[follow]\nprimary = \"10.0.0.5\"\ncatalog = \"c.invalid\"\ntsig-key = \"k\"\n".into(),
                4,
                "follow.tsig-key",
                "no [[tsig-key]] is named k.",
            ),
            (
                "[follow]\nprimary = \"10.0.0.5\"\ncatalog = \"c.invalid\"\ntls = true\n".into(),
                4,
                "follow.tls",
                "set [tls] ca-file",
            ),
            (
                "[tls]\nca-file = \"/nonexistent/ca.pem\"\n[follow]\nprimary = \"10.0.0.5\"\ncatalog = \"c.invalid\"\ntls = true\n".into(),
                2,
                "tls.ca-file",
                "cannot be read",
            ),
            (
                "[follow]\nprimary = \"10.0.0.5\"\ncatalog = \"c.invalid\"\nmembers = 1\n".into(),
                4,
                "follow.members",
                "unknown field",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:53\"]\ntls-listen = [\"127.0.0.1:53\"]\n".into(),
                3,
                "server.tls-listen",
                "overlaps 0.0.0.0:53",
            ),
            (
                format!("{z}transfer = {{ allow = [\"10.0.0.0/8\"], require-tls = true }}\n"),
                3,
                "zone[0].transfer.require-tls",
                "need server.tls-listen",
            ),
            (
                "[[discover]]\nvpc-ids = [\"vpc-1\"]\neks-clusters = [\"*\", \"prod\"]\n".into(),
                3,
                "discover[0].eks-clusters",
                "stands alone",
            ),
            (
                "[[discover]]\nvpc-ids = [\"vpc-1\"]\neks-clusters = [\"prod cluster\"]\n".into(),
                3,
                "discover[0].eks-clusters",
                "is not an EKS cluster name",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"k8s\"\neks-cluster = \"prod\"\na = [\"192.0.2.1\"]\n"),
                5,
                "zone[0].record[0].eks-cluster",
                "from one place",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"k8s\"\neks-cluster = \"-bad\"\n"),
                5,
                "zone[0].record[0].eks-cluster",
                "is not an EKS cluster name",
            ),
            (
                "[aws]\neks-endpoint-url = \"eks.local\"\n".into(),
                2,
                "aws.eks-endpoint-url",
                "not an http:// or https:// URL",
            ),
            (
                "[catalog]\nzone = \"c.invalid\"\nmembers = 1\n".into(),
                3,
                "catalog.members",
                "unknown field",
            ),
            (format!("{z}ttl = 0\n"), 3, "zone[0].ttl", "at least 1"),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\nttl = 0\n"),
                6,
                "zone[0].record[0].ttl",
                "at least 1",
            ),
            (
                format!("{z}soa = {{ minimum = 0 }}\n"),
                3,
                "zone[0].soa.minimum",
                "at least 1",
            ),
            (
                format!(
                    "{z}[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n[[zone.record]]\nname = \"WWW\"\na = [\"192.0.2.2\"]\n"
                ),
                7,
                "zone[0].record[1].name",
                "already defined",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"a.*.b\"\na = [\"192.0.2.1\"]\n"),
                4,
                "zone[0].record[0].name",
                "leftmost",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\n"),
                4,
                "zone[0].record[0]",
                "at least one address",
            ),
            (
                format!("{z}ns = [\"ns1.example.com\"]\n"),
                3,
                "zone[0].ns",
                "no record",
            ),
            (
                format!(
                    "{z}[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\nvpc-endpoint = \"vpce-0a\"\n"
                ),
                4,
                "zone[0].record[0]",
                "not both",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\nvpc-endpoint = \"vpc-0a\"\n"),
                5,
                "zone[0].record[0].vpc-endpoint",
                "not a VPC endpoint id",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www\"\nvpc-endpoint-tags = {{}}\n"),
                5,
                "zone[0].record[0].vpc-endpoint-tags",
                "at least one tag",
            ),
            (
                format!(
                    "{z}[[zone.record]]\nname = \"www\"\nvpc-endpoint = \"vpce-0a\"\nvpc-endpoint-tags = {{ a = \"b\" }}\n"
                ),
                6,
                "zone[0].record[0].vpc-endpoint-tags",
                "not both",
            ),
            (
                "[[discover]]\nvpc-ids = []\n".into(),
                2,
                "discover[0].vpc-ids",
                "at least one VPC",
            ),
            (
                "[[discover]]\nvpc-ids = [\"subnet-1\"]\n".into(),
                2,
                "discover[0].vpc-ids",
                "not a VPC id",
            ),
            (
                "[[discover]]\nregion = \"us-east-1\"\n".into(),
                1,
                "discover",
                "missing field `vpc-ids`",
            ),
            (
                "[[discover]]\nvpc-ids = [\"vpc-1\"]\nrole-arn = \"admin\"\n".into(),
                3,
                "discover[0].role-arn",
                "not a role ARN",
            ),
            (
                "[aws]\nrole-arn = \"arn:aws:iam::1:user/x\"\n".into(),
                2,
                "aws.role-arn",
                "not a role ARN",
            ),
            (
                "[aws]\nendpoint-url = \"127.0.0.1:5000\"\n".into(),
                2,
                "aws.endpoint-url",
                "not an http",
            ),
            (
                "[aws]\npage-size = 2000\n".into(),
                2,
                "aws.page-size",
                "between 5 and 1000",
            ),
            (
                "[aws]\nrefresh-interval = \"soon\"\n".into(),
                2,
                "aws.refresh-interval",
                "not a duration",
            ),
            (
                "[aws]\ncall-timeout = \"0s\"\n".into(),
                2,
                "aws.call-timeout",
                "longer than zero",
            ),
            (
                "[aws]\nregion = 5\n".into(),
                2,
                "aws.region",
                "invalid type",
            ),
            (
                format!("{z}[[zone.record]]\nname = \"www.example.com\"\na = [\"192.0.2.1\"]\n"),
                4,
                "zone[0].record[0].name",
                "trailing dot",
            ),
            (
                format!(
                    "{z}[[zone.record]]\nname = \"x.sub\"\na = [\"192.0.2.1\"]\n[[zone]]\norigin = \"sub.example.com\"\n"
                ),
                4,
                "zone[0].record[0].name",
                "configured separately",
            ),
            (
                "[server]\nlisten = [\"localhost\"]\n".into(),
                2,
                "server.listen",
                "not an address",
            ),
            (
                "[server]\nudp-payload-size = 100\n".into(),
                2,
                "server.udp-payload-size",
                "between 512",
            ),
            (
                "[server]\ntcp-idle-timeout = \"ten\"\n".into(),
                2,
                "server.tcp-idle-timeout",
                "not a duration",
            ),
            (
                "[server]\nmax-tcp-connections = 0\n".into(),
                2,
                "server.max-tcp-connections",
                "between 1 and 65536",
            ),
            (
                "[server]\nmax-tcp-connections = 2305843009213693952\n".into(),
                2,
                "server.max-tcp-connections",
                "between 1 and 65536",
            ),
            (
                "[server]\nlisten = []\n".into(),
                2,
                "server.listen",
                "at least one address",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:53\", \"[::]:53\",\n  \"127.0.0.1:53\"]\n".into(),
                3,
                "server.listen",
                "127.0.0.1:53 overlaps 0.0.0.0:53",
            ),
            (
                "[server]\nlisten = [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n".into(),
                2,
                "server.listen",
                "overlaps",
            ),
            (
                "[server]\nlisten = [\"127.0.0.1:5353\"]\n[http]\nlisten = \"0.0.0.0:5353\"\n"
                    .into(),
                4,
                "http.listen",
                "also a DNS address",
            ),
            (
                "[server]\nudp-workers = 257\n".into(),
                2,
                "server.udp-workers",
                "at most 256",
            ),
            (
                "[aws]\nrefresh-interval = \"500ms\"\ncall-timeout = \"100ms\"\n".into(),
                2,
                "aws.refresh-interval",
                "at least 1s",
            ),
            (
                "[aws]\nrefresh-interval = \"10s\"\ncall-timeout = \"10s\"\n".into(),
                3,
                "aws.call-timeout",
                "shorter than refresh-interval",
            ),
            (
                "[aws]\ncall-timeout = \"1m\"\n".into(),
                2,
                "aws.call-timeout",
                "shorter than refresh-interval (30s)",
            ),
            (
                "[aws]\nremoval-hold = \"soon\"\n".into(),
                2,
                "aws.removal-hold",
                "not a duration",
            ),
            (
                "[server]\nshutdown-grace = \"0s\"\n".into(),
                2,
                "server.shutdown-grace",
                "longer than zero",
            ),
            (
                "[server]\nshutdown-grace = \"later\"\n".into(),
                2,
                "server.shutdown-grace",
                "not a duration",
            ),
            (
                "[log]\nqueries = true\nqueries-sample-rate = 0.0\n".into(),
                3,
                "log.queries-sample-rate",
                "more than 0 and at most 1",
            ),
            (
                "[log]\nqueries = true\nqueries-sample-rate = 1.5\n".into(),
                3,
                "log.queries-sample-rate",
                "more than 0 and at most 1",
            ),
            (
                format!("{z}ttl = 2147483648\n"),
                3,
                "zone[0].ttl",
                "at most 2147483647",
            ),
            (
                format!(
                    "{z}[[zone.record]]\nname = \"www\"\nttl = 4294967295\na = [\"192.0.2.1\"]\n"
                ),
                5,
                "zone[0].record[0].ttl",
                "at most 2147483647",
            ),
            (
                "[server]\nnameserver = \"bad..name\"\n".into(),
                2,
                "server.nameserver",
                "not a valid DNS name",
            ),
            (
                "[http]\nlisten = \"localhost:9153\"\n".into(),
                2,
                "http.listen",
                "not an address:port",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9153\"\nmax-connections = 0\n".into(),
                3,
                "http.max-connections",
                "between 1 and 1024",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9153\"\nheader-timeout = \"0s\"\n".into(),
                3,
                "http.header-timeout",
                "longer than zero",
            ),
            (
                "[log]\nlevel = \"privatelink_dns=loud\"\n".into(),
                2,
                "log.level",
                "not a log filter",
            ),
            (
                "[[zone]]\norigin = \"bad..name\"\n".into(),
                2,
                "zone[0].origin",
                "not a valid DNS name",
            ),
            (
                "[[zone]]\norigin = \"example.com\"\nttl = \"x\"\n".into(),
                3,
                "zone.ttl",
                "invalid type",
            ),
            (
                "[log]\nformat = \"xml\"\n".into(),
                2,
                "log.format",
                "unknown variant",
            ),
            (
                "[server]\nallow-query = [\"10.0.0.0/33\"]\n".into(),
                2,
                "server.allow-query",
                "is not a network",
            ),
            (
                "[transfer]\ntsig-key = \"nope\"\n".into(),
                2,
                "transfer.tsig-key",
                "no [[tsig-key]] is named nope.",
            ),
            (
                "[transfer]\nallow = [\"10.1.0.0/16\", \"10.1.0.0/16x\"]\n".into(),
                2,
                "transfer.allow",
                "is not a network",
            ),
            (
                "[transfer]\nnotify = [\"ns1.example.com\"]\n".into(),
                2,
                "transfer.notify",
                "is not an IP address",
            ),
            (
                "[[tsig-key]]\nname = \"k\"\nsecret = \"sup3r-s3cret!!\"\n".into(),
                3,
                "tsig-key[0].secret",
                "is not a base64 secret (the value is not shown)",
            ),
            (
                "[[tsig-key]]\nname = \"k\"\nalgorithm = \"hmac-md5\"\nsecret = \"AAAA\"\n".into(),
                3,
                "tsig-key[0].algorithm",
                "is not one of hmac-sha256",
            ),
            (
                "[[tsig-key]]\nname = \"k\"\nsecret = \"AAAA\"\nsecret-file = \"/x\"\n".into(),
                2,
                "tsig-key[0].secret",
                "exactly one of secret and secret-file",
            ),
            (
                "[[tsig-key]]\nname = \"k\"\nsecret = \"AAAA\"\n[[zone]]\norigin = \"a.test\"\ntransfer = { allow = [\"10.0.0.1\"], tsig-key = \"other\" }\n".into(),
                6,
                "zone[0].transfer.tsig-key",
                "no [[tsig-key]] is named other.",
            ),
            (
                "[[discover]]\nvpc-ids = [\"vpc-1\"]\nprivate-dns = \"disabled\"\n".into(),
                3,
                "discover.private-dns",
                "unknown variant `disabled`, expected `enabled` or `any`",
            ),
        ];
        for (text, line, key, words) in rows {
            let e = err(&text);
            assert!(!e.contains("sup3r-s3cret"), "a secret in an error: {e}");
            assert!(
                e.starts_with(&format!("test.toml:{line}:")),
                "line {line} in {e:?} for\n{text}"
            );
            assert!(e.contains(&format!("key `{key}`")), "key {key} in {e:?}");
            assert!(e.contains(words), "{words:?} in {e:?}");
            same_either_way(&text);
        }
    }

    /// [`Config::from_toml`] of `text` parsed whole and with its record tables in
    /// batches: the same config, or the same error.
    fn same_either_way(text: &str) {
        let whole = Config::from_toml_split(text, "test.toml", usize::MAX);
        let split = Config::from_toml_split(text, "test.toml", 0);
        assert_eq!(format!("{whole:?}"), format!("{split:?}"), "for\n{text}");
        let owned = Config::from_toml_owned(text.to_string(), "test.toml", 0);
        assert_eq!(format!("{whole:?}"), format!("{owned:?}"), "for\n{text}");
    }

    /// A config of `n` record tables in each of two zones (static, AWS-backed, with
    /// comments, blank lines and CRLF between), `[[discover]]` between the zones, so
    /// every kind of boundary is crossed; `bad` replaces record `i` of zone 0.
    fn many(n: usize, bad: Option<(usize, &str)>) -> String {
        let mut t = String::from("[server]\nlisten = [\"127.0.0.1:5300\"]\n\n");
        for z in 0..2 {
            t += &format!("[[zone]]\norigin = \"z{z}.test\"\nttl = 60\n\n");
            for i in 0..n {
                if z == 0 && bad.is_some_and(|(at, _)| at == i) {
                    t += bad.unwrap().1;
                    continue;
                }
                t += &match i % 4 {
                    0 => format!(
                        "[[zone.record]]\nname = \"h{i}\"\na = [\"10.0.{}.{}\"]\n",
                        i / 256 % 256,
                        i % 256
                    ),
                    1 => format!(
                        "[[zone.record]] # aws\r\nname = \"e{i}\"\r\nvpc-endpoint-tags = {{ \"app\" = \"x{i}\" }}\r\n\r\n"
                    ),
                    2 => format!(
                        "# a comment\n[[zone.record]]\nname = \"s{i}\"\nttl = 30\naaaa = [\"2001:db8::{:x}\"]\n",
                        i
                    ),
                    _ => format!(
                        "[[zone.record]]\nname = \"m{i}\"\na = [\n  \"10.1.{}.1\",\n  \"10.1.{}.2\",\n]\n",
                        i % 256,
                        i % 256
                    ),
                };
            }
            if z == 0 {
                t += "[[discover]]\nvpc-ids = [\"vpc-1\"]\n\n";
            }
        }
        t
    }

    #[test]
    fn batched_record_tables_read_as_the_whole_text() {
        let n = 2 * bulk::BATCH + 7;
        let text = many(n, None);
        assert!(
            bulk::split(&text, 0).is_some_and(|s| s.zones[0].len() == 3),
            "batched"
        );
        same_either_way(&text);
        let c = Config::from_toml_split(&text, "t", 0).unwrap();
        assert_eq!(c.zones.len(), 2);
        // Errors deep in a later batch: the same line, column, key and words.
        let too_many: Vec<String> = (0..crate::names::MAX_A + 1)
            .map(|i| format!("\"10.200.{}.{}\"", i / 256, i % 256))
            .collect();
        let too_large = format!(
            "[[zone.record]]\nname = \"big\"\na = [{}]\n",
            too_many.join(", ")
        );
        for bad in [
            too_large.as_str(),
            "[[zone.record]]\nname = \"x\"\na = [\"10.0.0.300\"]\n",
            "[[zone.record]]\nname = \"h0\"\na = [\"10.9.9.9\"]\n",
            "[[zone.record]]\nname = \"x\"\nbogus = 1\n",
            "[[zone.record]]\nname = 5\n",
            "[[zone.record]]\nname = \"x\"\na = [\"10.0.0.1\"\n",
        ] {
            let text = many(n, Some((2 * bulk::BATCH + 3, bad)));
            let e = Config::from_toml_split(&text, "t", 0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("zone[0].record") || e.contains("zone.record"),
                "{e}"
            );
            same_either_way(&text);
        }
        // What this reading does not follow is parsed whole: the same result too.
        for odd in [
            "[[ zone.record ]]\nname = \"sp\"\na = [\"10.9.0.1\"]\n",
            "[zone.soa]\nrefresh = 60\n",
            "[[zone.record]]\nname = \"\"\"x\"\"\"\n",
        ] {
            let text = many(n, Some((5, odd)));
            assert!(bulk::split(&text, 0).is_none(), "{odd}");
            same_either_way(&text);
        }
    }
}

#[cfg(test)]
mod zone_file_tests {
    use super::*;
    use std::io::Write as _;

    /// A config file and a zone file beside it, loaded as the daemon loads them.
    fn load(toml: &str, zone: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        let mut f = std::fs::File::create(dir.path().join("zones/example.com.zone")).unwrap();
        f.write_all(zone.as_bytes()).unwrap();
        std::fs::write(dir.path().join("pldns.toml"), toml).unwrap();
        Config::load(&dir.path().join("pldns.toml"))
    }

    const ZONE: &str =
        "[[zone]]\norigin = \"example.com\"\nttl = 120\nfile = \"zones/example.com.zone\"\n";

    fn invalid(e: ConfigError) -> (String, usize, String, String) {
        match e {
            ConfigError::Invalid {
                path,
                line,
                key,
                message,
                ..
            } => (path, line, key, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn records_soa_and_ns_come_from_the_file() {
        let c = load(
            &format!("{ZONE}[[zone.record]]\nname = \"api\"\na = [\"192.0.2.1\"]\n"),
            "$TTL 300\n@ 3600 IN SOA ns1 admin 2024 1h 15m 2w 30\n@ 600 NS ns1\n@ 600 NS ns2.other.test.\n\
             ns1 A 10.0.0.53\nwww A 10.0.0.1\nwww AAAA fd00::1\nnottl.sub 60 A 10.0.0.9\n",
        )
        .unwrap();
        let z = &c.zones[0];
        assert_eq!(
            z.ns.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["ns1.example.com.", "ns2.other.test."]
        );
        assert_eq!(z.ns_ttl, 600);
        assert_eq!(
            (z.soa.mname.to_string(), z.soa.rname.to_string()),
            ("ns1.example.com.".into(), "admin.example.com.".into())
        );
        assert_eq!(
            (
                z.soa.refresh,
                z.soa.retry,
                z.soa.expire,
                z.soa.minimum,
                z.soa.ttl
            ),
            (3600, 900, 1_209_600, 30, 3600)
        );
        let got: BTreeSet<String> = z
            .fixed
            .records()
            .into_iter()
            .flat_map(|(_, rs)| {
                rs.into_iter()
                    .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
            })
            .collect();
        let want: BTreeSet<String> = [
            "api.example.com. 120 192.0.2.1",
            "ns1.example.com. 300 10.0.0.53",
            "www.example.com. 300 10.0.0.1",
            "www.example.com. 300 fd00::1",
            "nottl.sub.example.com. 60 10.0.0.9",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
        // The empty non-terminal between them exists.
        assert!(
            z.fixed
                .node(&"sub.example.com.".parse().unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn without_ttl_directive_records_take_the_zone_ttl() {
        let c = load(ZONE, "www A 10.0.0.1\n").unwrap();
        assert_eq!(c.zones[0].fixed.records()[0].1[0].ttl, 120);
        // No SOA or NS in the file: the config's defaults.
        assert_eq!(c.zones[0].ns[0].to_string(), "ns.privatelink-dns.invalid.");
    }

    #[test]
    fn errors_name_the_zone_file_its_line_and_the_key() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "",
                "www A 10.0.0.1\nwww CNAME x\n",
                2,
                "type CNAME is not served",
            ),
            (
                "",
                "\n\nwww.example.org. A 10.0.0.1\n",
                3,
                "is outside its zone example.com.",
            ),
            (
                "",
                "www 60 A 10.0.0.1\nwww 30 A 10.0.0.2\n",
                2,
                "TTL 30 differs from TTL 60",
            ),
            ("", "sub NS ns1.other.test.\n", 1, "below the apex"),
            ("", "www 0 A 10.0.0.1\n", 1, "TTL 0"),
            (
                "",
                "@ SOA a b 1 2 3 4 5\n@ SOA a b 1 2 3 4 5\n",
                2,
                "a second SOA",
            ),
            ("", "a.*.x A 10.0.0.1\n", 1, "only as the leftmost label"),
            (
                "[[zone.record]]\nname = \"www\"\na = [\"192.0.2.1\"]\n",
                "www A 10.0.0.1\n",
                1,
                "already defined by zone[0].record[0]",
            ),
            (
                "[[zone]]\norigin = \"in.example.com\"\n",
                "x.in A 10.0.0.1\n",
                1,
                "inside zone in.example.com., which is configured separately",
            ),
        ];
        for (extra, zone, line, message) in cases {
            let (path, got_line, key, got) =
                invalid(load(&format!("{ZONE}{extra}"), zone).unwrap_err());
            assert!(path.ends_with("zones/example.com.zone"), "{path}");
            assert_eq!(
                (got_line, key.as_str()),
                (*line, "zone[0].file"),
                "{zone:?}: {got}"
            );
            assert!(got.contains(message), "{zone:?}: {got}");
        }
    }

    #[test]
    fn soa_or_ns_in_both_places_and_a_missing_file_are_config_errors() {
        let (path, _, key, message) = invalid(
            load(
                &format!("{ZONE}ns = [\"ns.x.test\"]\n"),
                "@ NS ns1.x.test.\n",
            )
            .unwrap_err(),
        );
        assert!(path.ends_with("pldns.toml"));
        assert_eq!(key, "zone[0].ns");
        assert!(message.contains("NS records are also in"), "{message}");
        let (_, _, key, _) = invalid(
            load(
                &format!("{ZONE}[zone.soa]\nrefresh = 60\n"),
                "@ SOA a b 1 2 3 4 5\n",
            )
            .unwrap_err(),
        );
        assert_eq!(key, "zone[0].soa");
        let missing = ZONE.replace("zones/example.com.zone", "zones/none.zone");
        let (path, line, key, message) = invalid(load(&missing, "").unwrap_err());
        assert!(path.ends_with("pldns.toml"));
        assert_eq!((line, key.as_str()), (4, "zone[0].file"));
        assert!(
            message.contains("cannot read") && message.contains("zones/none.zone"),
            "{message}"
        );
        // Not a regular file: a FIFO would block the reload forever; a directory is no zone.
        let dir = ZONE.replace("zones/example.com.zone", "zones");
        let (_, _, key, message) = invalid(load(&dir, "").unwrap_err());
        assert_eq!(key, "zone[0].file");
        assert!(message.contains("is not a regular file"), "{message}");
        // An in-zone name server must have addresses, in the file or the config.
        let (_, _, key, message) = invalid(load(ZONE, "@ NS ns1\n").unwrap_err());
        assert_eq!(key, "zone[0].ns");
        assert!(
            message.contains("has no record with its addresses"),
            "{message}"
        );
    }

    #[test]
    fn no_error_quotes_what_the_file_holds() {
        // A zone file that is really a secret (a TSIG key file named by mistake), and
        // a secret in a record: the error names the line and column, never the text.
        for zone in [
            "c3VwM3ItczNjcmV0LWtleS1tYXRlcmlhbA==\n",
            "www A 10.0.0.1\nwww A sup3r-s3cret\n",
            "sup3r-s3cret.www TXT x\n",
            "www 60 A 10.0.0.1\nsup3r-s3cret 60 TYPE65280 \\# 0\n",
            "$INCLUDE /etc/sup3r-s3cret\n",
        ] {
            let e = load(ZONE, zone).unwrap_err().to_string();
            assert!(
                !e.contains("sup3r-s3cret") && !e.contains("c3VwM3ItczNjcmV0"),
                "{e}"
            );
            assert!(e.contains("example.com.zone:"), "{e}");
        }
        // A name that is only unusual is shown, one with odd bytes is not.
        let e = load(ZONE, "a_b 60 A 10.0.0.1\na_b 30 A 10.0.0.2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a_b.example.com."), "{e}");
    }

    #[test]
    fn too_many_addresses_for_one_name_are_a_config_error() {
        let zone: String = (0..=crate::names::MAX_A as u32)
            .map(|i| format!("big A {}\n", std::net::Ipv4Addr::from(0x0A00_0000 + i)))
            .collect();
        let (path, line, key, message) = invalid(load(ZONE, &format!("\n{zone}")).unwrap_err());
        assert!(path.ends_with("example.com.zone"));
        assert_eq!((line, key.as_str()), (2, "zone[0].file"));
        assert!(message.contains("at most 4031 A"), "{message}");
        // In the TOML: the zone is named.
        let a: Vec<String> = (0..=crate::names::MAX_A as u32)
            .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x0A00_0000 + i)))
            .collect();
        let toml = format!(
            "[[zone]]\norigin = \"example.com\"\n[[zone.record]]\nname = \"big\"\na = [{}]\n",
            a.join(",")
        );
        let e = Config::from_toml(&toml, "t.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:2:") && e.contains("zone[0].record"),
            "{e}"
        );
        // The same address a million times is one record, and loads.
        let zone = "big A 10.0.0.1\n".repeat(1_000_000);
        let c = load(ZONE, &zone).unwrap();
        assert_eq!(c.zones[0].fixed.records()[0].1.len(), 1);
    }

    #[test]
    fn a_zone_file_rewritten_while_it_is_read_is_refused() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // A large zone; a second thread appends to it once it sees the file open
        // (in /proc/self/fd). An append after the read's last check is legitimately
        // missed, so a few attempts are made; one must see the change.
        for attempt in 0..6u32 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("zones")).unwrap();
            let zone_path = dir.path().join("zones/example.com.zone");
            let lines = 50_000usize << attempt;
            let body: String = (0..lines).map(|i| format!("n{i} A 10.0.0.1\n")).collect();
            std::fs::write(&zone_path, body).unwrap();
            std::fs::write(dir.path().join("pldns.toml"), ZONE).unwrap();
            let done = std::sync::Arc::new(AtomicBool::new(false));
            let appender = {
                let (done, zone_path) = (done.clone(), zone_path.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let open = std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
                            e.ok()
                                .and_then(|e| std::fs::read_link(e.path()).ok())
                                .is_some_and(|t| t == zone_path)
                        });
                        if open {
                            let mut f = std::fs::OpenOptions::new()
                                .append(true)
                                .open(&zone_path)
                                .unwrap();
                            f.write_all(b"late A 10.0.0.2\n").unwrap();
                            return true;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    false
                })
            };
            let got = Config::load(&dir.path().join("pldns.toml"));
            done.store(true, Ordering::Relaxed);
            let appended = appender.join().unwrap();
            if let Err(e) = got {
                // Named at the `file` key of the config: no line of the zone is at fault.
                let (path, line, key, message) = invalid(e);
                assert!(path.ends_with("pldns.toml"), "{path}: {message}");
                assert_eq!(line, 4);
                assert!(
                    message.contains("zones/example.com.zone changed"),
                    "{message}"
                );
                assert_eq!(key, "zone[0].file");
                assert!(message.contains("changed while it was read"), "{message}");
                assert!(appended);
                return;
            }
            eprintln!("attempt {attempt}: the append came too late ({appended}); again, larger");
        }
        panic!("the append was never seen during the read");
    }
}

#[cfg(test)]
mod zone_file_round_trip {
    use super::*;

    /// What `zonefile::render` writes, the reader reads back as the same zone.
    #[test]
    fn a_rendered_zone_reads_back_the_same() {
        let toml = "[[zone]]\norigin = \"rt.example\"\nttl = 77\n\
            [[zone.record]]\nname = \"@\"\na = [\"192.0.2.1\", \"192.0.2.2\"]\naaaa = [\"2001:db8::1\"]\n\
            [[zone.record]]\nname = \"a.b.c\"\na = [\"192.0.2.3\"]\nttl = 5\n\
            [[zone.record]]\nname = \"*.w\"\naaaa = [\"2001:db8::2\"]\n";
        let from_toml = Config::from_toml(toml, "t").unwrap();
        let zones = crate::discovery::static_zones(&from_toml);
        let snap = crate::snapshot::build(&zones, from_toml.server.settings.clone(), None, 7);
        let zone = snap
            .zone(&Name::from_ascii("rt.example.").unwrap())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rt.zone"), crate::zonefile::render(zone)).unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            "[[zone]]\norigin = \"rt.example\"\nfile = \"rt.zone\"\n",
        )
        .unwrap();
        let from_file = Config::load(&config).unwrap();
        let (a, b) = (&from_toml.zones[0], &from_file.zones[0]);
        assert_eq!(a.fixed, b.fixed);
        assert_eq!((&a.soa, &a.ns, a.ns_ttl), (&b.soa, &b.ns, b.ns_ttl));
    }
}
