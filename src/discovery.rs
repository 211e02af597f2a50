//! What discovery produces, and how it becomes zones. No I/O, no SDK types.
//!
//! A [`Discover`] source (the EC2 API in [`crate::aws`], or a fake in unit tests)
//! returns an [`Inventory`]: plain structs describing VPC endpoints and their ENIs.
//! [`assemble`] is the pure function that merges it with the configured zones into
//! the [`ZoneData`] the snapshot builder takes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

use hickory_proto::rr::{LowerName, Name};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::access::TransferPolicy;
use crate::config::{Addresses, Config, DiscoverConfig, PrivateDns, Selector, Target, ZoneConfig};
use crate::snapshot::{RecordData, SoaParams, ZoneData};

/// Everything one discovery run found, per target (region and role).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub targets: Vec<TargetInventory>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInventory {
    pub target: Target,
    /// The AWS account the endpoints belong to (their `OwnerId`), when they agree.
    #[serde(default)]
    pub account: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// EKS clusters (only when the config asks for some on this target).
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

/// An EKS cluster and the ENIs of its API endpoint in the customer's VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    /// The host of `cluster.endpoint`, lower-cased: the name served.
    pub endpoint_host: String,
    /// `resourcesVpcConfig.vpcId`.
    pub vpc_id: String,
    /// ACTIVE, UPDATING, CREATING, DELETING, FAILED, PENDING.
    pub status: String,
    /// `resourcesVpcConfig.endpointPrivateAccess`.
    pub private_access: bool,
    /// In-use ENIs in its VPC described exactly "Amazon EKS <name>".
    #[serde(default)]
    pub enis: Vec<Eni>,
}

impl Cluster {
    /// Served: private endpoint access on, and ACTIVE or UPDATING (an upgrade keeps
    /// the API up while it rotates the ENIs).
    fn skip_reason(&self) -> Option<SkipReason> {
        if !self.private_access {
            return Some(SkipReason::NoPrivateAccess);
        }
        let up = ["ACTIVE", "UPDATING"]
            .iter()
            .any(|s| self.status.eq_ignore_ascii_case(s));
        (!up).then(|| SkipReason::ClusterStatus {
            status: self.status.clone(),
        })
    }

    /// Its API addresses, with the ENI each is on.
    fn served(&self) -> impl Iterator<Item = (&Eni, IpAddr)> {
        self.enis.iter().flat_map(|eni| {
            let v4 = eni.ipv4.iter().map(move |ip| (eni, IpAddr::V4(*ip)));
            let v6 = eni.ipv6.iter().map(move |ip| (eni, IpAddr::V6(*ip)));
            v4.chain(v6)
        })
    }

    /// How `discover` names it, in `skipped` and in the ENDPOINT column.
    fn label(&self) -> String {
        format!("eks:{}", self.name)
    }
}

/// The ENI description EKS gives the cluster's API ENIs.
pub fn eks_eni_description(cluster: &str) -> String {
    format!("Amazon EKS {cluster}")
}

/// An interface VPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub vpc_id: String,
    pub service_name: String,
    /// As the API says it: "available", "pending", "deleted", ...
    pub state: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Private DNS names of the endpoint's service, e.g. "ssm.ap-northeast-1.amazonaws.com"
    /// or "*.s3.ap-northeast-1.amazonaws.com".
    #[serde(default)]
    pub private_dns_names: Vec<String>,
    /// `PrivateDnsEnabled`: whether AWS answers the private DNS names in the VPC.
    /// Caches written before this field existed load as `true`: the versions that
    /// wrote them served every endpoint, and the next refresh applies the rule.
    #[serde(default = "private_dns_default")]
    pub private_dns_enabled: bool,
    /// `DnsOptions.DnsRecordIpType`: ipv4, ipv6, dualstack, service-defined.
    pub dns_record_ip_type: Option<String>,
    /// `IpAddressType`: ipv4, ipv6, dualstack.
    pub ip_address_type: Option<String>,
    /// `DnsOptions.PrivateDnsOnlyForInboundResolverEndpoint` (S3, DynamoDB): AWS answers
    /// the private DNS names with this endpoint's addresses only for queries from
    /// on-prem (through a Route 53 Resolver inbound endpoint); VPC clients use the
    /// gateway endpoint. These names exist for exactly our clients: served as any other.
    #[serde(default)]
    pub inbound_resolver_only: bool,
    #[serde(default)]
    pub enis: Vec<Eni>,
}

/// One endpoint network interface (one per subnet / AZ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: String,
    pub availability_zone: String,
    pub subnet_id: String,
    #[serde(default)]
    pub ipv4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
}

fn private_dns_default() -> bool {
    true
}

impl Endpoint {
    /// Only endpoints in state `available` are served.
    pub fn is_available(&self) -> bool {
        self.state.eq_ignore_ascii_case("available")
    }

    /// On its way to `available` (`pending`, `pendingAcceptance`): its names exist,
    /// with no addresses yet. An endpoint `deleting`, `deleted`, `rejected`, `failed`
    /// or `expired` (AWS lists a deleted one for a while) has no names: its zones go,
    /// and with them their place in the catalog.
    fn is_coming(&self) -> bool {
        self.state.eq_ignore_ascii_case("pending")
            || self.state.eq_ignore_ascii_case("pendingAcceptance")
    }

    fn not_available(&self) -> SkipReason {
        SkipReason::NotAvailable {
            state: self.state.clone(),
        }
    }

    /// Which record types the endpoint's DNS options ask for: (A, AAAA).
    pub fn record_types(&self) -> (bool, bool) {
        let kind = |v: &Option<String>| v.as_deref().map(str::to_ascii_lowercase);
        let by_address_type = match kind(&self.ip_address_type).as_deref() {
            Some("ipv4") => (true, false),
            Some("ipv6") => (false, true),
            _ => (true, true), // dualstack, or unknown: serve what the ENIs have
        };
        match kind(&self.dns_record_ip_type).as_deref() {
            Some("ipv4") => (true, false),
            Some("ipv6") => (false, true),
            Some("dualstack") => (true, true),
            _ => by_address_type, // service-defined, or absent
        }
    }

    /// The addresses to serve: none unless available, then per [`Self::record_types`].
    pub fn served(&self) -> impl Iterator<Item = (&Eni, IpAddr)> {
        let (a, aaaa) = if self.is_available() {
            self.record_types()
        } else {
            (false, false)
        };
        self.enis.iter().flat_map(move |eni| {
            let v4 = eni
                .ipv4
                .iter()
                .filter(move |_| a)
                .map(move |ip| (eni, IpAddr::V4(*ip)));
            let v6 = eni
                .ipv6
                .iter()
                .filter(move |_| aaaa)
                .map(move |ip| (eni, IpAddr::V6(*ip)));
            v4.chain(v6)
        })
    }
}

/// Why a discovery failed; the label used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// RequestLimitExceeded / Throttling.
    Throttled,
    /// HTTP 5xx from the API.
    ServerError,
    /// A call did not finish within `call-timeout`.
    Timeout,
    /// No connection to the API (DNS, refused, TLS).
    Unreachable,
    /// Missing, invalid or expired credentials, or AssumeRole refused.
    Credentials,
    /// The credentials work but lack permission (UnauthorizedOperation).
    Denied,
    /// A 2xx answer that is incomplete or inconsistent: a truncated or unparsable body,
    /// an endpoint without id, state, service or VPC, ENIs that do not resolve.
    InvalidResponse,
    /// Anything else (a 4xx we did not expect).
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 8] = [
        Self::Throttled,
        Self::ServerError,
        Self::Timeout,
        Self::Unreachable,
        Self::Credentials,
        Self::Denied,
        Self::InvalidResponse,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Credentials => "credentials",
            Self::Denied => "denied",
            Self::InvalidResponse => "invalid_response",
            Self::Other => "other",
        }
    }
}

/// A failed discovery: the reason class and what the API or SDK said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target}: {operation} failed ({}): {message}", reason.as_str())]
pub struct DiscoveryError {
    pub reason: FailureReason,
    pub target: String,
    pub operation: &'static str,
    pub message: String,
}

/// A source of inventories. The EC2 API in production; fakes in unit tests.
pub trait Discover: Send + Sync + 'static {
    fn discover(&self) -> impl Future<Output = Result<Inventory, DiscoveryError>> + Send;
}

/// [`Discover`] made object-safe, so sources can be chosen at run time.
pub trait DynDiscover: Send + Sync + 'static {
    fn discover_boxed(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Inventory, DiscoveryError>> + Send + '_>>;
}

impl<D: Discover> DynDiscover for D {
    fn discover_boxed(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Inventory, DiscoveryError>> + Send + '_>> {
        Box::pin(self.discover())
    }
}

/// A discovery source chosen at run time.
pub type BoxedSource = Box<dyn DynDiscover>;

impl Discover for BoxedSource {
    async fn discover(&self) -> Result<Inventory, DiscoveryError> {
        // The boxed source's own method: `self.discover_boxed()` would pick the blanket
        // impl for the Box itself and recurse.
        (**self).discover_boxed().await
    }
}

/// One served address and where it came from, for `privatelink-dns discover`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Provenance {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    pub address: IpAddr,
    pub endpoint: String,
    pub availability_zone: String,
    pub state: String,
    /// The endpoint answers its names for on-prem only (S3, DynamoDB): see
    /// [`Endpoint::inbound_resolver_only`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inbound_resolver_only: bool,
}

/// How many of the ENI ids that endpoints list may be missing from the
/// DescribeNetworkInterfaces answers of the same refresh: one, or 5% of them if
/// that is more. An ENI can go between the two calls (a subnet removed from an
/// endpoint); more than that is an answer we cannot trust.
pub fn missing_enis_tolerated(missing: usize, referenced: usize) -> bool {
    missing <= 1usize.max(referenced / 20)
}

/// The AWS-backed addresses an assembly serves, as (owner name, address).
pub fn aws_addresses(assembled: &Assembled) -> BTreeSet<(&str, IpAddr)> {
    assembled
        .provenance
        .iter()
        .map(|p| (p.name.as_str(), p.address))
        .collect()
}

/// What a discovery would take away: the addresses of names that lose some (fewer
/// than before, or none), and how many names lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub addresses: usize,
    pub names: usize,
}

/// What `new` takes from `old` (both sets of (name, address)), when that is a mass
/// removal: more than half of the addresses, or all of them. A name counts only
/// what it loses in number: addresses replaced by as many others (an endpoint
/// recreated, an EKS ENI set rotated, a cache older than the VPC) are no loss, and
/// apply at once; a name emptied or thinned out is.
pub fn mass_removal<N: Ord, A: Ord>(
    old: &BTreeSet<(N, A)>,
    new: &BTreeSet<(N, A)>,
) -> Option<Loss> {
    fn per_name<N: Ord, A>(set: &BTreeSet<(N, A)>) -> Vec<(&N, usize)> {
        let mut counts: Vec<(&N, usize)> = Vec::new();
        for (name, _) in set {
            match counts.last_mut() {
                Some((n, c)) if *n == name => *c += 1,
                _ => counts.push((name, 1)),
            }
        }
        counts
    }
    let now = per_name(new);
    let mut loss = Loss {
        addresses: 0,
        names: 0,
    };
    for (name, before) in per_name(old) {
        let after = now
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .map_or(0, |i| now[i].1);
        if after < before {
            loss.addresses += before - after;
            loss.names += 1;
        }
    }
    let mass = loss.addresses * 2 > old.len() || (new.is_empty() && !old.is_empty());
    (loss.addresses > 0 && mass).then_some(loss)
}

/// The zones to serve, with warnings and where every discovered address came from.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    pub zones: Vec<ZoneData>,
    pub warnings: Vec<String>,
    /// Private DNS names from the API refused as zones (see `warnings`).
    pub rejected_names: usize,
    pub provenance: Vec<Provenance>,
    /// Endpoints a record or `[[discover]]` block selects whose addresses are not
    /// served, with the reason, sorted by endpoint id.
    pub skipped: Vec<Skipped>,
}

/// An endpoint selected but not served, for `privatelink-dns discover`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Skipped {
    pub endpoint: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum SkipReason {
    /// Its state is not `available` (the state is given).
    NotAvailable { state: String },
    /// `PrivateDnsEnabled` is false and the `[[discover]]` block says
    /// `private-dns = "enabled"`.
    PrivateDnsDisabled,
    /// An EKS cluster without private endpoint access: on-prem could not reach it.
    NoPrivateAccess,
    /// An EKS cluster in a VPC the `[[discover]]` block does not name.
    OtherVpc { vpc: String },
    /// An EKS cluster neither ACTIVE nor UPDATING.
    ClusterStatus { status: String },
    /// A record names an EKS cluster the API does not list.
    NoSuchCluster,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAvailable { state } => write!(f, "not available: {state}"),
            Self::PrivateDnsDisabled => f.write_str("private DNS disabled"),
            Self::NoPrivateAccess => f.write_str("no private endpoint access"),
            Self::OtherVpc { vpc } => write!(f, "in another VPC: {vpc}"),
            Self::ClusterStatus { status } => write!(f, "status {status}"),
            Self::NoSuchCluster => f.write_str("no such cluster"),
        }
    }
}

/// The zones of `config` before any discovery: AWS-backed names without addresses.
pub fn static_zones(config: &Config) -> Vec<ZoneData> {
    assemble(config, None).zones
}

/// Merges the configured zones with an inventory. Without an inventory (no AWS, or no
/// discovery yet), AWS-backed records exist without addresses and answer NODATA.
pub fn assemble(config: &Config, inventory: Option<&Inventory>) -> Assembled {
    let of = |target: &Target| {
        inventory.and_then(|inv| inv.targets.iter().find(|t| &t.target == target))
    };
    let endpoints_of =
        |target: &Target| -> &[Endpoint] { of(target).map_or(&[], |t| &t.endpoints) };
    let clusters_of = |target: &Target| -> &[Cluster] { of(target).map_or(&[], |t| &t.clusters) };
    let mut out = Assembled::default();
    let default_target = config.aws.as_ref().map(|aws| aws.default_target());
    let (default_endpoints, default_clusters) = match &default_target {
        Some(t) => (endpoints_of(t), clusters_of(t)),
        None => (&[][..], &[][..]),
    };
    // Without an inventory nothing is known of the clusters: no "no such cluster".
    let known = inventory.is_some();
    out.zones = config
        .zones
        .iter()
        .map(|zone| resolve_zone(zone, default_endpoints, default_clusters, known, &mut out))
        .collect();
    let mut discovered = Discovered::default();
    for block in &config.discover {
        let matching = endpoints_of(&block.target).iter().filter(|ep| {
            block.vpc_ids.contains(&ep.vpc_id)
                && block.tags.iter().all(|(k, v)| ep.tags.get(k) == Some(v))
        });
        for ep in matching {
            // AWS answers a service's private DNS names in the VPC only from endpoints
            // with private DNS enabled; so do we, unless told otherwise.
            if !ep.private_dns_enabled && block.private_dns == PrivateDns::Enabled {
                out.skip(ep, SkipReason::PrivateDnsDisabled);
                continue;
            }
            discovered.add(config, block, ep, &mut out);
        }
        for cluster in clusters_of(&block.target)
            .iter()
            .filter(|c| block.eks_clusters.selects(&c.name))
        {
            discovered.add_cluster(config, block, cluster, &mut out);
        }
    }
    out.rejected_names = discovered.rejected;
    let nameserver = &config.server.nameserver;
    out.zones
        .extend(discovered.zones.into_values().map(|z| z.build(nameserver)));
    out.provenance.sort();
    out.provenance.dedup();
    out.skipped.sort();
    out.skipped.dedup();
    out
}

impl Assembled {
    fn skip(&mut self, ep: &Endpoint, reason: SkipReason) {
        self.skipped.push(Skipped {
            endpoint: ep.id.clone(),
            reason,
        });
    }

    fn skip_cluster(&mut self, label: String, reason: SkipReason) {
        self.skipped.push(Skipped {
            endpoint: label,
            reason,
        });
    }
}

/// A configured zone with the addresses of its AWS-backed records filled in from
/// `endpoints` (those of the `[aws]` default target).
fn resolve_zone(
    zone: &ZoneConfig,
    endpoints: &[Endpoint],
    clusters: &[Cluster],
    known: bool,
    out: &mut Assembled,
) -> ZoneData {
    let records = zone.records.iter().map(|record| {
        let (a, aaaa) = match &record.addresses {
            Addresses::EksCluster(name) => {
                let (mut a, mut aaaa) = (BTreeSet::new(), BTreeSet::new());
                match clusters.iter().find(|c| c.name == *name) {
                    None if known => {
                        out.skip_cluster(format!("eks:{name}"), SkipReason::NoSuchCluster)
                    }
                    None => {}
                    Some(c) => match c.skip_reason() {
                        Some(reason) => out.skip_cluster(c.label(), reason),
                        None => {
                            for (eni, ip) in c.served() {
                                match ip {
                                    IpAddr::V4(v4) => a.insert(v4),
                                    IpAddr::V6(v6) => aaaa.insert(v6),
                                };
                                out.provenance.push(Provenance::of_cluster(
                                    &record.name,
                                    ip,
                                    c,
                                    eni,
                                ));
                            }
                        }
                    },
                }
                (a.into_iter().collect(), aaaa.into_iter().collect())
            }
            Addresses::Static { a, aaaa } => (a.clone(), aaaa.clone()),
            Addresses::Endpoint(selector) => {
                let (mut a, mut aaaa) = (BTreeSet::new(), BTreeSet::new());
                for ep in endpoints.iter().filter(|ep| picks(selector, ep)) {
                    if !ep.is_available() {
                        out.skip(ep, ep.not_available());
                    }
                    for (eni, ip) in ep.served() {
                        match ip {
                            IpAddr::V4(v4) => a.insert(v4),
                            IpAddr::V6(v6) => aaaa.insert(v6),
                        };
                        out.provenance
                            .push(Provenance::of(&record.name, ip, ep, eni));
                    }
                }
                (a.into_iter().collect(), aaaa.into_iter().collect())
            }
        };
        RecordData {
            name: record.name.clone(),
            ttl: record.ttl,
            a,
            aaaa,
        }
    });
    ZoneData {
        origin: zone.origin.clone(),
        ns: zone.ns.clone(),
        ns_ttl: zone.ns_ttl,
        soa: zone.soa.clone(),
        records: records.collect(),
        fixed: zone.fixed.clone(),
        transfer: zone.transfer.clone(),
    }
}

/// Whether `selector` picks `endpoint`.
fn picks(selector: &Selector, endpoint: &Endpoint) -> bool {
    match selector {
        Selector::Endpoint(id) => endpoint.id == *id,
        Selector::Tags(tags) => tags.iter().all(|(k, v)| endpoint.tags.get(k) == Some(v)),
    }
}

/// Zones found by zero-config discovery: every private DNS name of a matching
/// endpoint is a zone apex; a wildcard name "*.x" is zone "x" with a wildcard record.
#[derive(Default)]
struct Discovered {
    /// Keyed by the lower-cased origin.
    zones: BTreeMap<LowerName, DiscoveredZone>,
    /// Origins already warned about (inside a configured zone).
    warned: BTreeSet<Name>,
    /// Private DNS names refused: the root, a single label, or above a configured zone.
    rejected: usize,
}

/// A zone found by zero-config discovery, keyed by lower-cased owner names.
struct DiscoveredZone {
    origin: Name,
    names: BTreeMap<LowerName, NameData>,
    transfer: Arc<TransferPolicy>,
}

struct NameData {
    name: Name,
    ttl: u32,
    a: BTreeSet<Ipv4Addr>,
    aaaa: BTreeSet<Ipv6Addr>,
}

impl Discovered {
    /// Adds the private DNS names of `ep` with its addresses.
    fn add(&mut self, config: &Config, block: &DiscoverConfig, ep: &Endpoint, out: &mut Assembled) {
        let ttl = block.ttl;
        if !ep.is_available() {
            out.skip(ep, ep.not_available());
            if !ep.is_coming() {
                return;
            }
        }
        for dns_name in &ep.private_dns_names {
            let Some((origin, owner)) = self.place(
                config,
                dns_name,
                &format!("endpoint {}", ep.id),
                &mut out.warnings,
            ) else {
                continue;
            };
            let zone = self
                .zones
                .entry(LowerName::new(&origin))
                .or_insert_with(|| DiscoveredZone {
                    origin,
                    names: BTreeMap::new(),
                    // The first block that finds a zone decides its transfers.
                    transfer: block.transfer.clone(),
                });
            let data = zone
                .names
                .entry(LowerName::new(&owner))
                .or_insert_with(|| NameData {
                    name: owner.clone(),
                    ttl,
                    a: BTreeSet::new(),
                    aaaa: BTreeSet::new(),
                });
            for (eni, ip) in ep.served() {
                match ip {
                    IpAddr::V4(v4) => data.a.insert(v4),
                    IpAddr::V6(v6) => data.aaaa.insert(v6),
                };
                out.provenance.push(Provenance::of(&owner, ip, ep, eni));
            }
        }
    }

    /// Serves the API endpoint name of `cluster` (found by `block`) as its own zone,
    /// or says why not.
    fn add_cluster(
        &mut self,
        config: &Config,
        block: &DiscoverConfig,
        cluster: &Cluster,
        out: &mut Assembled,
    ) {
        if !block.vpc_ids.contains(&cluster.vpc_id) {
            let vpc = cluster.vpc_id.clone();
            out.skip_cluster(cluster.label(), SkipReason::OtherVpc { vpc });
            return;
        }
        if let Some(reason) = cluster.skip_reason() {
            out.skip_cluster(cluster.label(), reason);
            return;
        }
        let source = format!("EKS cluster {}", cluster.name);
        let Some((origin, owner)) =
            self.place(config, &cluster.endpoint_host, &source, &mut out.warnings)
        else {
            return;
        };
        let zone = self
            .zones
            .entry(LowerName::new(&origin))
            .or_insert_with(|| DiscoveredZone {
                origin,
                names: BTreeMap::new(),
                transfer: block.transfer.clone(),
            });
        let data = zone
            .names
            .entry(LowerName::new(&owner))
            .or_insert_with(|| NameData {
                name: owner.clone(),
                ttl: block.ttl,
                a: BTreeSet::new(),
                aaaa: BTreeSet::new(),
            });
        for (eni, ip) in cluster.served() {
            match ip {
                IpAddr::V4(v4) => data.a.insert(v4),
                IpAddr::V6(v6) => data.aaaa.insert(v6),
            };
            out.provenance
                .push(Provenance::of_cluster(&owner, ip, cluster, eni));
        }
    }

    /// The (zone origin, owner name) a private DNS name is served as, or `None` (with
    /// a warning) when it cannot be served. `source`: the endpoint id or EKS cluster
    /// it came from, for the warning.
    fn place(
        &mut self,
        config: &Config,
        dns_name: &str,
        source: &str,
        warnings: &mut Vec<String>,
    ) -> Option<(Name, Name)> {
        let Ok(mut owner) = Name::from_ascii(dns_name.trim_end_matches('.')) else {
            warnings.push(format!(
                "{}: private DNS name {dns_name:?} is not a valid name; skipped",
                source
            ));
            return None;
        };
        owner.set_fqdn(true);
        let owner = owner.to_lowercase();
        let origin = if owner.is_wildcard() {
            owner.base_name()
        } else {
            owner.clone()
        };
        // A name from the API is data, not trust: "*" or "com" would make us answer
        // authoritatively for every name under the root or a TLD, and a name above a
        // configured zone would take over its parent.
        let mut configured = config.zones.iter().map(|z| &z.origin);
        let above = configured
            .clone()
            .find(|z| origin.zone_of(z) && origin != **z);
        if origin.num_labels() < 2 || above.is_some() {
            let why = match above {
                Some(zone) => format!("would contain configured zone {zone}"),
                None => format!("would make zone {origin} (the root or a top-level domain)"),
            };
            warnings.push(format!(
                "{}: private DNS name {dns_name:?} {why}; rejected",
                source
            ));
            self.rejected += 1;
            return None;
        }
        if let Some(zone) = configured.find(|z| z.zone_of(&origin)) {
            if self.warned.insert(origin.clone()) {
                warnings.push(format!(
                    "discovered name {owner} ({}) is inside configured zone {zone}; the configured zone wins",
                    source
                ));
            }
            return None;
        }
        Some((origin, owner))
    }
}

impl DiscoveredZone {
    fn build(self, nameserver: &Name) -> ZoneData {
        ZoneData {
            soa: SoaParams::defaults(&self.origin, nameserver.clone()),
            ns_ttl: 3600,
            ns: vec![nameserver.clone()],
            records: self
                .names
                .into_values()
                .map(|d| RecordData {
                    name: d.name,
                    ttl: d.ttl,
                    a: d.a.into_iter().collect(),
                    aaaa: d.aaaa.into_iter().collect(),
                })
                .collect(),
            fixed: Arc::default(),
            origin: self.origin,
            transfer: self.transfer,
        }
    }
}

impl Provenance {
    fn of(name: &Name, ip: IpAddr, ep: &Endpoint, eni: &Eni) -> Provenance {
        Provenance {
            name: name.to_string(),
            rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
            address: ip,
            endpoint: ep.id.clone(),
            availability_zone: eni.availability_zone.clone(),
            state: ep.state.clone(),
            inbound_resolver_only: ep.inbound_resolver_only,
        }
    }

    fn of_cluster(name: &Name, ip: IpAddr, cluster: &Cluster, eni: &Eni) -> Provenance {
        Provenance {
            name: name.to_string(),
            rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
            address: ip,
            endpoint: cluster.label(),
            availability_zone: eni.availability_zone.clone(),
            state: cluster.status.clone(),
            inbound_resolver_only: false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn endpoint(id: &str, vpc: &str, names: &[&str], ips: &[&str]) -> Endpoint {
        Endpoint {
            id: id.to_string(),
            vpc_id: vpc.to_string(),
            service_name: "com.amazonaws.ap-northeast-1.ssm".to_string(),
            state: "available".to_string(),
            tags: BTreeMap::new(),
            private_dns_names: names.iter().map(|s| s.to_string()).collect(),
            private_dns_enabled: true,
            dns_record_ip_type: None,
            ip_address_type: None,
            inbound_resolver_only: false,
            enis: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| {
                    let ip: IpAddr = ip.parse().unwrap();
                    Eni {
                        id: format!("eni-{i}"),
                        availability_zone: format!("ap-northeast-1{}", (b'a' + i as u8) as char),
                        subnet_id: format!("subnet-{i}"),
                        ipv4: match ip {
                            IpAddr::V4(v) => vec![v],
                            _ => vec![],
                        },
                        ipv6: match ip {
                            IpAddr::V6(v) => vec![v],
                            _ => vec![],
                        },
                    }
                })
                .collect(),
        }
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[aws]
region = "ap-northeast-1"

[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "@"
vpc-endpoint = "vpce-0aaa"
[[zone.record]]
name = "api"
vpc-endpoint-tags = {{ "privatelink-dns/name" = "api" }}
[[zone.record]]
name = "static"
a = ["192.0.2.1"]
{extra}
"#
        );
        Config::from_toml(&text, "t").unwrap()
    }

    /// These endpoints in the ap-northeast-1 target.
    pub(crate) fn inventory(endpoints: Vec<Endpoint>) -> Inventory {
        Inventory {
            targets: vec![TargetInventory {
                target: Target {
                    region: Some("ap-northeast-1".into()),
                    role_arn: None,
                },
                account: None,
                endpoints,
                clusters: Vec::new(),
            }],
        }
    }

    fn zone<'a>(a: &'a Assembled, origin: &str) -> &'a ZoneData {
        a.zones
            .iter()
            .find(|z| z.origin.to_string() == origin)
            .unwrap_or_else(|| {
                panic!(
                    "zone {origin} in {:?}",
                    a.zones
                        .iter()
                        .map(|z| z.origin.to_string())
                        .collect::<Vec<_>>()
                )
            })
    }

    fn record<'a>(z: &'a ZoneData, name: &str) -> &'a RecordData {
        z.records
            .iter()
            .find(|r| r.name.to_string() == name)
            .unwrap()
    }

    #[test]
    fn missing_eni_tolerance() {
        // (missing, referenced, tolerated)
        let rows = [
            (0, 0, true),
            (1, 1, true),
            (2, 3, false),
            (1, 40, true),
            (2, 40, true),
            (3, 40, false),
            (50, 1000, true),
            (51, 1000, false),
        ];
        for (missing, referenced, ok) in rows {
            assert_eq!(
                missing_enis_tolerated(missing, referenced),
                ok,
                "{missing} of {referenced}"
            );
        }
    }

    #[test]
    fn mass_removal_is_more_than_half_or_all_of_what_names_lose() {
        // "a1" is name a, address 1.
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| (s[..1].to_string(), s[1..].parse::<u32>().unwrap()))
                .collect::<BTreeSet<_>>()
        };
        // (old, new, (addresses, names) lost if a mass removal)
        type Row<'a> = (&'a [&'a str], &'a [&'a str], Option<(usize, usize)>);
        let rows: &[Row] = &[
            (&[], &[], None),
            (&[], &["a1"], None),
            (&["a1", "b2", "c3", "d4"], &["a1", "b2"], None),
            (&["a1", "b2", "c3", "d4"], &["a1"], Some((3, 3))),
            (&["a1", "a2", "a3", "a4"], &["a1"], Some((3, 1))),
            (&["a1"], &[], Some((1, 1))),
            (&["a1", "b2", "c3"], &["d4"], Some((3, 3))),
            (&["a1", "a2", "a3"], &["a4"], Some((2, 1))),
            // Replaced by as many (or more) others: no loss, whatever the addresses.
            (&["a1", "a2", "a3", "a4"], &["a5", "a6", "a7", "a8"], None),
            (&["a1", "b2", "c3", "d4"], &["a5", "b6", "c7", "d8"], None),
            (&["a1", "a2"], &["a3", "a4", "a5"], None),
            (&["a1", "b2"], &["b3", "c4"], None),
            // One name replaced, three emptied: the three count.
            (&["a1", "b2", "c3", "d4"], &["a5"], Some((3, 3))),
            // A name that moves (another name gets the addresses) is a loss of the old name.
            (&["a1", "a2"], &["b1", "b2"], Some((2, 1))),
        ];
        for (old, new, want) in rows {
            let got = mass_removal(&set(old), &set(new)).map(|l| (l.addresses, l.names));
            assert_eq!(got, *want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn without_inventory_aws_records_exist_without_addresses() {
        let a = assemble(&config(""), None);
        let z = zone(&a, "internal.example.com.");
        assert!(record(z, "internal.example.com.").a.is_empty());
        // A static name is in the zone's fixed index, built once with the config.
        let fixed = z
            .fixed
            .node(&"static.internal.example.com.".parse().unwrap());
        assert_eq!(fixed.unwrap().count(), 1);
    }

    #[test]
    fn explicit_endpoint_and_tags() {
        let mut tagged1 = endpoint("vpce-0bbb", "vpc-1", &[], &["10.0.2.5", "10.0.3.5"]);
        tagged1
            .tags
            .insert("privatelink-dns/name".into(), "api".into());
        let mut tagged2 = endpoint("vpce-0ccc", "vpc-2", &[], &["10.9.2.5"]);
        tagged2
            .tags
            .insert("privatelink-dns/name".into(), "api".into());
        let mut other = endpoint("vpce-0ddd", "vpc-1", &[], &["10.0.9.9"]);
        other
            .tags
            .insert("privatelink-dns/name".into(), "web".into());
        let inv = inventory(vec![
            endpoint("vpce-0aaa", "vpc-1", &[], &["10.0.1.4", "10.0.2.4"]),
            tagged1,
            tagged2,
            other,
        ]);
        let a = assemble(&config(""), Some(&inv));
        let z = zone(&a, "internal.example.com.");
        let ips = |n| {
            record(z, n)
                .a
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ips("internal.example.com."), ["10.0.1.4", "10.0.2.4"]);
        assert_eq!(
            ips("api.internal.example.com."),
            ["10.0.2.5", "10.0.3.5", "10.9.2.5"],
            "union of tagged"
        );
        assert!(
            a.provenance
                .iter()
                .any(|p| p.endpoint == "vpce-0aaa" && p.availability_zone == "ap-northeast-1b")
        );
    }

    #[test]
    fn only_available_endpoints_are_served() {
        for state in [
            "pending",
            "pendingAcceptance",
            "deleting",
            "deleted",
            "failed",
            "rejected",
        ] {
            let mut ep = endpoint("vpce-0aaa", "vpc-1", &[], &["10.0.1.4"]);
            ep.state = state.to_string();
            let a = assemble(&config(""), Some(&inventory(vec![ep])));
            let r = record(zone(&a, "internal.example.com."), "internal.example.com.");
            assert!(r.a.is_empty(), "{state}");
        }
    }

    /// (DnsRecordIpType, IpAddressType, serves A, serves AAAA)
    #[test]
    fn record_types_follow_dns_options() {
        let rows: &[(Option<&str>, Option<&str>, bool, bool)] = &[
            (Some("ipv4"), Some("dualstack"), true, false),
            (Some("ipv6"), Some("dualstack"), false, true),
            (Some("dualstack"), Some("dualstack"), true, true),
            (Some("service-defined"), Some("ipv4"), true, false),
            (Some("service-defined"), Some("ipv6"), false, true),
            (Some("service-defined"), Some("dualstack"), true, true),
            (None, Some("ipv4"), true, false),
            (None, None, true, true),
        ];
        for (record_type, address_type, want_a, want_aaaa) in rows {
            let mut ep = endpoint("vpce-0aaa", "vpc-1", &[], &["10.0.1.4", "fd00::4"]);
            ep.dns_record_ip_type = record_type.map(String::from);
            ep.ip_address_type = address_type.map(String::from);
            let a = assemble(&config(""), Some(&inventory(vec![ep])));
            let r = record(zone(&a, "internal.example.com."), "internal.example.com.");
            assert_eq!(
                (!r.a.is_empty(), !r.aaaa.is_empty()),
                (*want_a, *want_aaaa),
                "{record_type:?} {address_type:?}"
            );
        }
    }

    #[test]
    fn zero_config_zones_per_private_dns_name() {
        let extra = r#"
[[discover]]
vpc-ids = ["vpc-1"]
ttl = 30
"#;
        let s3 = endpoint(
            "vpce-0s3",
            "vpc-1",
            &[
                "s3.ap-northeast-1.amazonaws.com",
                "*.s3.ap-northeast-1.amazonaws.com",
            ],
            &["10.0.1.7", "10.0.2.7"],
        );
        let ssm = endpoint(
            "vpce-0ssm",
            "vpc-1",
            &["ssm.ap-northeast-1.amazonaws.com"],
            &["10.0.1.8"],
        );
        let elsewhere = endpoint(
            "vpce-0other",
            "vpc-2",
            &["ec2.ap-northeast-1.amazonaws.com"],
            &["10.1.1.8"],
        );
        let shadowed = endpoint(
            "vpce-0shadow",
            "vpc-1",
            &["x.internal.example.com"],
            &["10.0.1.9"],
        );
        let a = assemble(
            &config(extra),
            Some(&inventory(vec![s3, ssm, elsewhere, shadowed])),
        );
        let origins: Vec<String> = a.zones.iter().map(|z| z.origin.to_string()).collect();
        assert_eq!(
            origins,
            [
                "internal.example.com.",
                "s3.ap-northeast-1.amazonaws.com.",
                "ssm.ap-northeast-1.amazonaws.com."
            ]
        );
        let s3z = zone(&a, "s3.ap-northeast-1.amazonaws.com.");
        assert_eq!(record(s3z, "s3.ap-northeast-1.amazonaws.com.").a.len(), 2);
        assert_eq!(record(s3z, "*.s3.ap-northeast-1.amazonaws.com.").a.len(), 2);
        assert_eq!(record(s3z, "*.s3.ap-northeast-1.amazonaws.com.").ttl, 30);
        assert_eq!(s3z.ns[0].to_string(), "ns.privatelink-dns.invalid.");
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(a.warnings[0].contains("configured zone wins"));
    }

    /// An EKS cluster's zone takes its `[[discover]]` block's TTL and transfer policy
    /// (so it is a catalog member when the block's zones are), and a cluster that
    /// cannot be served says why.
    #[test]
    fn eks_zones_take_their_blocks_ttl_and_transfer() {
        let extra = "[[discover]]\nvpc-ids = [\"vpc-1\"]\nttl = 7\neks-clusters = [\"*\"]\n\
                     transfer = { allow = [\"10.0.0.0/8\"] }\n";
        let cluster = |name: &str, vpc: &str, private: bool, status: &str| Cluster {
            name: name.into(),
            endpoint_host: format!("{name}0123.gr7.ap-northeast-1.eks.amazonaws.com"),
            vpc_id: vpc.into(),
            status: status.into(),
            private_access: private,
            enis: vec![Eni {
                id: format!("eni-{name}"),
                availability_zone: "ap-northeast-1a".into(),
                subnet_id: "subnet-1".into(),
                ipv4: vec!["10.0.1.9".parse().unwrap()],
                ipv6: vec!["fd00::9".parse().unwrap()],
            }],
        };
        let mut inv = inventory(vec![]);
        inv.targets[0].clusters = vec![
            cluster("prod", "vpc-1", true, "ACTIVE"),
            cluster("public", "vpc-1", false, "ACTIVE"),
            cluster("new", "vpc-1", true, "CREATING"),
            cluster("away", "vpc-2", true, "ACTIVE"),
        ];
        let a = assemble(&config(extra), Some(&inv));
        let z = zone(&a, "prod0123.gr7.ap-northeast-1.eks.amazonaws.com.");
        assert!(!z.transfer.allow.is_empty(), "the block's transfer policy");
        let r = record(z, "prod0123.gr7.ap-northeast-1.eks.amazonaws.com.");
        assert_eq!((r.ttl, r.a.len(), r.aaaa.len()), (7, 1, 1));
        let skipped: Vec<String> = a
            .skipped
            .iter()
            .map(|s| format!("{} {}", s.endpoint, s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                "eks:away in another VPC: vpc-2",
                "eks:new status CREATING",
                "eks:public no private endpoint access"
            ]
        );
        assert_eq!(
            a.zones
                .iter()
                .filter(|z| z.origin.to_string().contains("eks"))
                .count(),
            1
        );
    }

    #[test]
    fn zero_config_skips_endpoints_without_private_dns_unless_any() {
        let on = endpoint(
            "vpce-0on",
            "vpc-1",
            &["ssm.ap-northeast-1.amazonaws.com"],
            &["10.0.1.8"],
        );
        let mut off = endpoint(
            "vpce-0off",
            "vpc-1",
            &["ssm.ap-northeast-1.amazonaws.com"],
            &["10.0.2.8"],
        );
        off.private_dns_enabled = false;
        let mut pending = endpoint(
            "vpce-0pending",
            "vpc-1",
            &["ec2.ap-northeast-1.amazonaws.com"],
            &["10.0.3.8"],
        );
        pending.state = "pending".into();
        let mut deleted = endpoint(
            "vpce-0deleted",
            "vpc-1",
            &["sns.ap-northeast-1.amazonaws.com"],
            &[],
        );
        deleted.state = "deleted".into();
        let inv = inventory(vec![on, off, pending, deleted]);
        let ssm = |a: &Assembled| {
            let z = zone(a, "ssm.ap-northeast-1.amazonaws.com.");
            record(z, "ssm.ap-northeast-1.amazonaws.com.").a.clone()
        };

        let a = assemble(&config("[[discover]]\nvpc-ids = [\"vpc-1\"]\n"), Some(&inv));
        assert_eq!(ssm(&a), ["10.0.1.8".parse::<Ipv4Addr>().unwrap()]);
        let skipped: Vec<String> = a
            .skipped
            .iter()
            .map(|s| format!("{} {}", s.endpoint, s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                "vpce-0deleted not available: deleted",
                "vpce-0off private DNS disabled",
                "vpce-0pending not available: pending"
            ]
        );
        let origins: Vec<String> = a.zones.iter().map(|z| z.origin.to_string()).collect();
        assert!(
            origins.contains(&"ec2.ap-northeast-1.amazonaws.com.".to_string()),
            "a pending endpoint's name exists, with no address yet: {origins:?}"
        );
        assert!(
            !origins.contains(&"sns.ap-northeast-1.amazonaws.com.".to_string()),
            "a deleted endpoint's name is gone (and so its catalog member): {origins:?}"
        );

        let any = "[[discover]]\nvpc-ids = [\"vpc-1\"]\nprivate-dns = \"any\"\n";
        let a = assemble(&config(any), Some(&inv));
        assert_eq!(ssm(&a).len(), 2);
        assert_eq!(a.skipped.len(), 2, "{:?}", a.skipped);
    }

    #[test]
    fn zero_config_honours_tags_and_skips_bad_names() {
        let extra = r#"
[[discover]]
vpc-ids = ["vpc-1"]
tags = { expose = "on-prem" }
"#;
        let mut yes = endpoint(
            "vpce-0yes",
            "vpc-1",
            &["yes.example.net", "bad..name"],
            &["10.0.1.8"],
        );
        yes.tags.insert("expose".into(), "on-prem".into());
        let no = endpoint("vpce-0no", "vpc-1", &["no.example.net"], &["10.0.1.9"]);
        let a = assemble(&config(extra), Some(&inventory(vec![yes, no])));
        assert!(
            a.zones
                .iter()
                .any(|z| z.origin.to_string() == "yes.example.net.")
        );
        assert!(
            !a.zones
                .iter()
                .any(|z| z.origin.to_string() == "no.example.net.")
        );
        assert!(a.warnings.iter().any(|w| w.contains("bad..name")));
    }

    #[test]
    fn zero_config_rejects_names_that_would_take_over_a_parent() {
        let extra = r#"
[[discover]]
vpc-ids = ["vpc-1"]
"#;
        let names = ["*", "com", "*.com", "example.com", "*.example.com", "."];
        let hostile = endpoint("vpce-0bad", "vpc-1", &names, &["10.0.1.8"]);
        let fine = endpoint("vpce-0ok", "vpc-1", &["ok.example.net"], &["10.0.1.9"]);
        let a = assemble(&config(extra), Some(&inventory(vec![hostile, fine])));
        let origins: Vec<String> = a.zones.iter().map(|z| z.origin.to_string()).collect();
        assert_eq!(origins, ["internal.example.com.", "ok.example.net."]);
        assert_eq!(a.rejected_names, names.len(), "{:#?}", a.warnings);
        for name in names {
            assert!(
                a.warnings
                    .iter()
                    .any(|w| w.contains(&format!("{name:?}")) && w.ends_with("rejected")),
                "{name}: {:#?}",
                a.warnings
            );
        }
        assert!(a.provenance.iter().all(|p| p.endpoint == "vpce-0ok"));
    }
}
