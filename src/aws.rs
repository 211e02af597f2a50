//! EC2 discovery: DescribeVpcEndpoints, DescribeNetworkInterfaces and
//! DescribeVpcEndpointServices into a plain [`Inventory`]; and, where the config asks
//! for EKS clusters, EKS ListClusters and DescribeCluster with the clusters' API ENIs
//! (DescribeNetworkInterfaces by description).
//!
//! This is the only module that sees aws-sdk types; everything it returns is from
//! [`crate::discovery`]. Credentials come from the SDK default chain (environment,
//! profile, web identity / IRSA, ECS task role, IMDSv2), with an optional AssumeRole
//! per target. Transient failures are retried by the SDK's standard retry policy
//! within one discovery; the refresh loop backs off between discoveries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_ec2::config::{
    ConfigBag, Intercept, Region, RuntimeComponents, SharedCredentialsProvider,
};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, NetworkInterface, Tag, VpcEndpoint};
use tracing::debug;

use crate::config::{AwsConfig, Config, EksScope, Target};
use crate::discovery::{
    Cluster, Discover, DiscoveryError, Endpoint, Eni, FailureReason, Inventory, TargetInventory,
    eks_eni_description, missing_enis_tolerated,
};

/// Filter values per DescribeNetworkInterfaces / DescribeVpcEndpointServices call.
const FILTER_BATCH: usize = 200;

/// Discovery against the EC2 API, one client per target.
pub struct Ec2Discovery {
    targets: Vec<TargetClient>,
    page_size: i32,
}

struct TargetClient {
    target: Target,
    client: Client,
    /// The VPCs this target serves (`None`: any, for configured records).
    vpcs: Option<BTreeSet<String>>,
    /// The EKS clusters to describe, and the client to ask, when the config wants any.
    eks: Option<(aws_sdk_eks::Client, EksScope)>,
}

/// An endpoint answer we cannot use: which call, and what is wrong with it.
fn invalid(target: &Target, operation: &'static str, message: String) -> DiscoveryError {
    DiscoveryError {
        reason: FailureReason::InvalidResponse,
        target: target.to_string(),
        operation,
        message,
    }
}

impl Ec2Discovery {
    /// The source for `config`: every target it needs, each limited to its VPCs.
    pub async fn for_config(config: &Config) -> Option<Self> {
        let aws = config.aws.as_ref()?;
        let targets = config
            .targets()
            .into_iter()
            .map(|t| {
                let vpcs = config.vpc_scope(&t);
                let eks = config.eks_scope(&t);
                (t, vpcs, eks)
            })
            .collect();
        Some(Self::with_eks(aws, targets).await)
    }

    /// Builds one EC2 client per target. Loads credentials lazily: nothing is called yet.
    pub async fn new(aws: &AwsConfig, targets: Vec<(Target, Option<BTreeSet<String>>)>) -> Self {
        let targets = targets.into_iter().map(|(t, v)| (t, v, None)).collect();
        Self::with_eks(aws, targets).await
    }

    /// As [`Self::new`], with the EKS clusters each target must describe.
    pub async fn with_eks(
        aws: &AwsConfig,
        targets: Vec<(Target, Option<BTreeSet<String>>, Option<EksScope>)>,
    ) -> Self {
        let mut clients = Vec::with_capacity(targets.len());
        for (target, vpcs, scope) in targets {
            let sdk = sdk_config_for(aws, &target).await;
            let client = ec2_client(aws, &sdk);
            let eks = scope.map(|scope| (eks_client(aws, &sdk), scope));
            clients.push(TargetClient {
                target,
                client,
                vpcs,
                eks,
            });
        }
        Self {
            targets: clients,
            page_size: aws.page_size,
        }
    }

    /// Every interface endpoint of the target (in its VPCs, when it has a scope).
    async fn vpc_endpoints(&self, t: &TargetClient) -> Result<Vec<VpcEndpoint>, DiscoveryError> {
        const OP: &str = "DescribeVpcEndpoints";
        let mut req = t
            .client
            .describe_vpc_endpoints()
            .filters(filter("vpc-endpoint-type", ["Interface"]))
            .max_results(self.page_size);
        if let Some(vpcs) = &t.vpcs {
            req = req.filters(filter("vpc-id", vpcs.iter().map(String::as_str)));
        }
        let mut raw = paginate(&t.target, OP, |token| {
            let req = req.clone().set_next_token(token);
            async move {
                let out = req.send().await.map_err(|e| classify(e, &t.target, OP))?;
                Ok((out.vpc_endpoints.unwrap_or_default(), out.next_token))
            }
        })
        .await?;
        raw.retain(|ep| {
            ep.vpc_endpoint_type()
                .is_none_or(|t| t.as_str().eq_ignore_ascii_case("interface"))
        });
        Ok(raw)
    }

    /// The ENIs with these ids, in batches through the `network-interface-id` filter:
    /// unlike the NetworkInterfaceIds parameter, it skips an ENI that was just deleted
    /// instead of failing the whole call.
    async fn network_interfaces(
        &self,
        t: &TargetClient,
        ids: &[&str],
    ) -> Result<HashMap<String, Eni>, DiscoveryError> {
        const OP: &str = "DescribeNetworkInterfaces";
        let mut enis: HashMap<String, Eni> = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(FILTER_BATCH) {
            let req = t
                .client
                .describe_network_interfaces()
                .filters(filter("network-interface-id", batch.iter().copied()))
                .max_results(self.page_size);
            let found = paginate(&t.target, OP, |token| {
                let req = req.clone().set_next_token(token);
                async move {
                    let out = req.send().await.map_err(|e| classify(e, &t.target, OP))?;
                    Ok((out.network_interfaces.unwrap_or_default(), out.next_token))
                }
            })
            .await?;
            for ni in found {
                let eni = eni(&ni).map_err(|m| invalid(&t.target, OP, m))?;
                enis.insert(eni.id.clone(), eni);
            }
        }
        Ok(enis)
    }

    /// Private DNS names of the services, through the `service-name` filter: the
    /// ServiceNames parameter fails the whole call for one unknown service.
    async fn service_dns_names(
        &self,
        t: &TargetClient,
        services: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, DiscoveryError> {
        const OP: &str = "DescribeVpcEndpointServices";
        let mut dns_names: HashMap<String, Vec<String>> = HashMap::new();
        for batch in services.chunks(FILTER_BATCH) {
            let req = t
                .client
                .describe_vpc_endpoint_services()
                .filters(filter("service-name", batch.iter().copied()))
                .max_results(self.page_size);
            let details = paginate(&t.target, OP, |token| {
                let req = req.clone().set_next_token(token);
                async move {
                    let out = req.send().await.map_err(|e| classify(e, &t.target, OP))?;
                    Ok((out.service_details.unwrap_or_default(), out.next_token))
                }
            })
            .await?;
            for detail in &details {
                let Some(name) = detail.service_name() else {
                    continue;
                };
                let mut names: Vec<String> = detail
                    .private_dns_names()
                    .iter()
                    .filter_map(|d| d.private_dns_name().map(str::to_string))
                    .collect();
                if names.is_empty()
                    && let Some(n) = detail.private_dns_name()
                {
                    names.push(n.to_string());
                }
                dns_names.insert(name.to_string(), names);
            }
        }
        Ok(dns_names)
    }

    /// One target's endpoints, each complete and consistent with the other calls of
    /// this refresh, or an [`FailureReason::InvalidResponse`] error.
    async fn discover_target(&self, t: &TargetClient) -> Result<TargetInventory, DiscoveryError> {
        // A target asked only for EKS clusters has no VPC to list endpoints in.
        let raw = if t.vpcs.as_ref().is_some_and(BTreeSet::is_empty) {
            Vec::new()
        } else {
            self.vpc_endpoints(t).await?
        };
        let eni_ids: BTreeSet<&str> = raw
            .iter()
            .flat_map(|ep| ep.network_interface_ids())
            .map(String::as_str)
            .collect();
        let eni_ids: Vec<&str> = eni_ids.into_iter().collect();
        let enis = self.network_interfaces(t, &eni_ids).await?;
        let missing: Vec<&str> = eni_ids
            .iter()
            .copied()
            .filter(|id| !enis.contains_key(*id))
            .collect();
        if !missing_enis_tolerated(missing.len(), eni_ids.len()) {
            return Err(invalid(
                &t.target,
                "DescribeNetworkInterfaces",
                format!(
                    "{} of the {} network interfaces the endpoints list were not returned (e.g. {})",
                    missing.len(),
                    eni_ids.len(),
                    missing[0]
                ),
            ));
        }
        if !missing.is_empty() {
            debug!(target = %t.target, ?missing, "network interfaces gone since DescribeVpcEndpoints");
        }
        let services: BTreeSet<&str> = raw.iter().filter_map(|ep| ep.service_name()).collect();
        let services: Vec<&str> = services.into_iter().collect();
        let dns_names = self.service_dns_names(t, &services).await?;

        let endpoints = raw
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                endpoint(ep, &enis, &dns_names, t.vpcs.as_ref()).map_err(|m| {
                    let id = ep.vpc_endpoint_id().unwrap_or("without id");
                    invalid(
                        &t.target,
                        "DescribeVpcEndpoints",
                        format!("endpoint #{i} ({id}): {m}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let owners: BTreeSet<&str> = raw.iter().filter_map(|ep| ep.owner_id()).collect();
        let account =
            (owners.len() == 1).then(|| owners.into_iter().next().unwrap_or_default().to_string());
        let clusters = match &t.eks {
            Some((eks, scope)) => self.clusters(t, eks, scope).await?,
            None => Vec::new(),
        };
        debug!(target = %t.target, endpoints = endpoints.len(), enis = enis.len(), clusters = clusters.len(), "discovered");
        Ok(TargetInventory {
            target: t.target.clone(),
            account,
            endpoints,
            clusters,
        })
    }

    /// The EKS clusters of `scope` (ListClusters, then DescribeCluster each), with
    /// the API ENIs of those that could be served: in-use, in the cluster's VPC, and
    /// described exactly "Amazon EKS <name>" ("Amazon EKS prod-canary" is not prod's).
    async fn clusters(
        &self,
        t: &TargetClient,
        eks: &aws_sdk_eks::Client,
        scope: &EksScope,
    ) -> Result<Vec<Cluster>, DiscoveryError> {
        const LIST: &str = "ListClusters";
        const DESCRIBE: &str = "DescribeCluster";
        let page = self.page_size.min(100);
        let names = paginate(&t.target, LIST, |token| {
            let req = eks.list_clusters().max_results(page).set_next_token(token);
            async move {
                let out = req.send().await.map_err(|e| classify(e, &t.target, LIST))?;
                let names = out.clusters.ok_or_else(|| {
                    invalid(&t.target, LIST, "an answer without a clusters list".into())
                })?;
                Ok((names, out.next_token))
            }
        })
        .await?;
        let mut clusters = Vec::new();
        for name in names.iter().filter(|n| match scope {
            EksScope::All => true,
            EksScope::Named(wanted) => wanted.contains(n.as_str()),
        }) {
            let out = eks
                .describe_cluster()
                .name(name)
                .send()
                .await
                .map_err(|e| classify(e, &t.target, DESCRIBE))?;
            let c = out
                .cluster()
                .ok_or_else(|| invalid(&t.target, DESCRIBE, format!("{name}: no cluster")))?;
            clusters.push(cluster(c, name).map_err(|m| invalid(&t.target, DESCRIBE, m))?);
        }
        // The API ENIs of the clusters that could be served, in batches of descriptions.
        let wanted: Vec<&Cluster> = clusters
            .iter()
            .filter(|c| {
                c.private_access
                    && ["ACTIVE", "UPDATING"]
                        .iter()
                        .any(|s| c.status.eq_ignore_ascii_case(s))
            })
            .collect();
        let mut enis: HashMap<String, Vec<Eni>> = HashMap::new();
        for batch in wanted.chunks(FILTER_BATCH) {
            let descriptions: Vec<String> =
                batch.iter().map(|c| eks_eni_description(&c.name)).collect();
            let vpcs: BTreeSet<&str> = batch.iter().map(|c| c.vpc_id.as_str()).collect();
            const OP: &str = "DescribeNetworkInterfaces";
            let req = t
                .client
                .describe_network_interfaces()
                .filters(filter(
                    "description",
                    descriptions.iter().map(String::as_str),
                ))
                .filters(filter("vpc-id", vpcs))
                .max_results(self.page_size);
            let found = paginate(&t.target, OP, |token| {
                let req = req.clone().set_next_token(token);
                async move {
                    let out = req.send().await.map_err(|e| classify(e, &t.target, OP))?;
                    Ok((out.network_interfaces.unwrap_or_default(), out.next_token))
                }
            })
            .await?;
            for ni in &found {
                let in_use = ni.status().is_some_and(|s| s.as_str() == "in-use");
                let Some(c) = batch.iter().find(|c| {
                    ni.description() == Some(eks_eni_description(&c.name).as_str())
                        && ni.vpc_id() == Some(c.vpc_id.as_str())
                }) else {
                    continue; // a wildcard-like match of the filter: not this cluster's
                };
                if in_use {
                    let eni = eni(ni).map_err(|m| invalid(&t.target, OP, m))?;
                    enis.entry(c.name.clone()).or_default().push(eni);
                }
            }
        }
        for c in &mut clusters {
            if let Some(found) = enis.remove(&c.name) {
                c.enis = found;
            }
        }
        if let Some(c) = wanted_without_enis(&clusters) {
            return Err(invalid(
                &t.target,
                "DescribeNetworkInterfaces",
                format!(
                    "EKS cluster {} is {} with private access but has no in-use network interface described {:?}",
                    c.name,
                    c.status,
                    eks_eni_description(&c.name)
                ),
            ));
        }
        Ok(clusters)
    }
}

/// Pages one Describe call may have; more is an API (or a proxy) gone wrong.
const MAX_PAGES: usize = 10_000;

/// Every page of one Describe call: `call` gets the NextToken (None first) and returns
/// a page's items and the next token. A token that comes back a second time fails as
/// an invalid answer: following it would loop forever (a cycle), and the SDK's own
/// paginator stops quietly at an immediate repeat, which would cut the list short.
async fn paginate<T, F, Fut>(
    target: &Target,
    operation: &'static str,
    mut call: F,
) -> Result<Vec<T>, DiscoveryError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), DiscoveryError>>,
{
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = call(token.take()).await?;
        items.extend(page);
        match next.filter(|t| !t.is_empty()) {
            None => return Ok(items),
            Some(t) if !seen.insert(t.clone()) => {
                return Err(invalid(
                    target,
                    operation,
                    format!("the pagination token {t:?} came back a second time"),
                ));
            }
            Some(t) => token = Some(t),
        }
    }
    Err(invalid(
        target,
        operation,
        format!("more than {MAX_PAGES} pages"),
    ))
}

/// An ENI from DescribeNetworkInterfaces; one without an id or any address is an
/// answer we cannot trust.
fn eni(ni: &NetworkInterface) -> Result<Eni, String> {
    let id = ni
        .network_interface_id()
        .filter(|s| !s.is_empty())
        .ok_or("a network interface without networkInterfaceId")?;
    let mut ipv4: Vec<Ipv4Addr> = ni
        .private_ip_addresses()
        .iter()
        .filter_map(|p| p.private_ip_address()?.parse().ok())
        .collect();
    if ipv4.is_empty()
        && let Some(ip) = ni.private_ip_address().and_then(|s| s.parse().ok())
    {
        ipv4.push(ip);
    }
    let ipv6: Vec<Ipv6Addr> = ni
        .ipv6_addresses()
        .iter()
        .filter_map(|a| a.ipv6_address()?.parse().ok())
        .collect();
    if ipv4.is_empty() && ipv6.is_empty() {
        return Err(format!("network interface {id} has no address"));
    }
    Ok(Eni {
        id: id.to_string(),
        availability_zone: ni.availability_zone().unwrap_or_default().to_string(),
        subnet_id: ni.subnet_id().unwrap_or_default().to_string(),
        ipv4,
        ipv6,
    })
}

/// A cluster that could be served but has no API ENI: an answer we cannot trust
/// (EKS creates the new ENIs of a rotation before it deletes the old).
fn wanted_without_enis(clusters: &[Cluster]) -> Option<&Cluster> {
    clusters.iter().find(|c| {
        c.private_access
            && ["ACTIVE", "UPDATING"]
                .iter()
                .any(|s| c.status.eq_ignore_ascii_case(s))
            && c.enis.is_empty()
    })
}

/// A cluster from DescribeCluster (asked for as `asked`). Its name, status and VPC
/// must be there, and an ACTIVE or UPDATING one needs an https endpoint with a host.
fn cluster(c: &aws_sdk_eks::types::Cluster, asked: &str) -> Result<Cluster, String> {
    let name = c
        .name()
        .filter(|n| !n.is_empty())
        .ok_or(format!("{asked}: no name"))?;
    if name != asked {
        return Err(format!("asked for {asked}, described {name}"));
    }
    let status = c
        .status()
        .map(|s| s.as_str().to_string())
        .filter(|s| !s.is_empty())
        .ok_or(format!("{name}: no status"))?;
    let vpc = c
        .resources_vpc_config()
        .and_then(|v| v.vpc_id())
        .filter(|v| !v.is_empty())
        .ok_or(format!("{name}: no resourcesVpcConfig.vpcId"))?;
    let private_access = c
        .resources_vpc_config()
        .is_some_and(|v| v.endpoint_private_access());
    let up = ["ACTIVE", "UPDATING"]
        .iter()
        .any(|s| status.eq_ignore_ascii_case(s));
    let host = match c.endpoint() {
        Some(url) => url
            .strip_prefix("https://")
            .map(|rest| rest.split(['/', ':']).next().unwrap_or_default())
            .filter(|h| !h.is_empty() && h.contains('.'))
            .ok_or(format!(
                "{name}: endpoint {url:?} is not an https URL with a host"
            ))?
            .to_ascii_lowercase(),
        None if up => return Err(format!("{name} is {status} without an endpoint")),
        None => String::new(),
    };
    Ok(Cluster {
        name: name.to_string(),
        endpoint_host: host,
        vpc_id: vpc.to_string(),
        status,
        private_access,
        enis: Vec::new(),
    })
}

/// An endpoint from DescribeVpcEndpoints with its ENIs and DNS names. Every field we
/// rely on must be there: an endpoint without one is a partly parsed answer.
fn endpoint(
    ep: &VpcEndpoint,
    enis: &HashMap<String, Eni>,
    dns_names: &HashMap<String, Vec<String>>,
    vpcs: Option<&BTreeSet<String>>,
) -> Result<Endpoint, String> {
    let field = |v: Option<&str>, name: &str| {
        v.filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("no {name}"))
    };
    let id = field(ep.vpc_endpoint_id(), "vpcEndpointId")?;
    let vpc_id = field(ep.vpc_id(), "vpcId")?;
    let service_name = field(ep.service_name(), "serviceName")?;
    // The SDK has no variant for the wire value "available"; as_str() is exact.
    let state = field(ep.state().map(|s| s.as_str()), "state")?;
    if let Some(vpcs) = vpcs
        && !vpcs.contains(&vpc_id)
    {
        return Err(format!("{vpc_id} is not one of the VPCs asked for"));
    }
    let eni_ids = ep.network_interface_ids();
    if state.eq_ignore_ascii_case("available") && eni_ids.is_empty() {
        return Err("available without network interfaces".into());
    }
    Ok(Endpoint {
        vpc_id,
        state,
        tags: tags(ep.tags()),
        private_dns_names: dns_names.get(&service_name).cloned().unwrap_or_default(),
        // AWS lists it for every interface endpoint; absent, AWS would not answer the names.
        private_dns_enabled: ep.private_dns_enabled().unwrap_or(false),
        dns_record_ip_type: ep
            .dns_options()
            .and_then(|d| d.dns_record_ip_type())
            .map(|t| t.as_str().to_string()),
        ip_address_type: ep.ip_address_type().map(|t| t.as_str().to_string()),
        inbound_resolver_only: ep
            .dns_options()
            .and_then(|d| d.private_dns_only_for_inbound_resolver_endpoint())
            .unwrap_or(false),
        enis: eni_ids
            .iter()
            .filter_map(|e| enis.get(e).cloned())
            .collect(),
        service_name,
        id,
    })
}

impl Discover for Ec2Discovery {
    async fn discover(&self) -> Result<Inventory, DiscoveryError> {
        let mut inventory = Inventory::default();
        for t in &self.targets {
            inventory.targets.push(self.discover_target(t).await?);
        }
        Ok(inventory)
    }
}

async fn sdk_config_for(aws: &AwsConfig, target: &Target) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(aws.call_timeout.min(Duration::from_secs(5)))
        .operation_attempt_timeout(aws.call_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = &target.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let mut sdk = loader.load().await;
    if let Some(role) = &target.role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name("privatelink-dns")
            .configure(&sdk)
            .build()
            .await;
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    sdk
}

fn ec2_client(aws: &AwsConfig, sdk: &aws_config::SdkConfig) -> Client {
    let mut conf = aws_sdk_ec2::config::Builder::from(sdk).interceptor(CompleteBody {
        whole: is_whole_response,
    });
    if let Some(url) = &aws.endpoint_url {
        // Only EC2 goes to the override: STS (AssumeRole) keeps its own endpoint,
        // which the SDK takes from $AWS_ENDPOINT_URL_STS when that is set.
        conf = conf.endpoint_url(url.clone());
    }
    Client::from_conf(conf.build())
}

fn eks_client(aws: &AwsConfig, sdk: &aws_config::SdkConfig) -> aws_sdk_eks::Client {
    let mut conf = aws_sdk_eks::config::Builder::from(sdk).interceptor(CompleteBody {
        whole: is_whole_json,
    });
    if let Some(url) = &aws.eks_endpoint_url {
        conf = conf.endpoint_url(url.clone());
    }
    aws_sdk_eks::Client::from_conf(conf.build())
}

/// Whether `body` is one JSON object from `{` to `}` (the parser would take an empty
/// body for an empty answer).
fn is_whole_json(body: &[u8]) -> bool {
    let text = body.trim_ascii();
    text.len() >= 2 && text[0] == b'{' && text[text.len() - 1] == b'}'
}

/// A 2xx answer whose body is not one whole `<…Response>` document: cut off, empty,
/// or something else (an HTML page from a proxy). The SDK's XML reader takes what it
/// can from a cut-off body, so a truncated page would otherwise read as a short list.
#[derive(Debug, thiserror::Error)]
#[error("the API answered {status} with an incomplete or foreign body ({len} bytes{})", if .start.is_empty() { String::new() } else { format!(", starting {:?}", .start) })]
struct IncompleteBody {
    status: u16,
    len: usize,
    start: String,
}

/// Checks every successful answer for [`IncompleteBody`] with `whole`: EC2's XML
/// ([`is_whole_response`]) or EKS's JSON ([`is_whole_json`]).
#[derive(Debug)]
struct CompleteBody {
    whole: fn(&[u8]) -> bool,
}

impl Intercept for CompleteBody {
    fn name(&self) -> &'static str {
        "CompleteBody"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Ok(());
        }
        let body = response.body().bytes().unwrap_or_default();
        if (self.whole)(body) {
            return Ok(());
        }
        let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        Err(Box::new(IncompleteBody {
            status,
            len: body.len(),
            start,
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether `body` is one XML element `<XResponse …>…</XResponse>` (after an optional
/// declaration), as every EC2 Query API answer is.
fn is_whole_response(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut text = text.trim();
    if text.starts_with("<?xml") {
        let Some(end) = text.find("?>") else {
            return false;
        };
        text = text[end + 2..].trim_start();
    }
    let Some(rest) = text.strip_prefix('<') else {
        return false;
    };
    let root_len = rest
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(rest.len());
    let root = &rest[..root_len];
    root.ends_with("Response")
        && text
            .strip_suffix('>')
            .and_then(|t| t.strip_suffix(root))
            .is_some_and(|t| t.ends_with("</"))
}

fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(str::to_string).collect()))
        .build()
}

fn tags(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn classify<E, R>(err: SdkError<E, R>, target: &Target, operation: &'static str) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = DisplayErrorContext(&err).to_string();
    let incomplete = {
        let mut source = std::error::Error::source(&err);
        let mut found = false;
        while let Some(e) = source {
            found |= e.is::<IncompleteBody>();
            source = e.source();
        }
        found
    };
    let reason = match &err {
        _ if incomplete => FailureReason::InvalidResponse,
        SdkError::TimeoutError(_) => FailureReason::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => FailureReason::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
            if message.to_ascii_lowercase().contains("credential") =>
        {
            FailureReason::Credentials
        }
        SdkError::DispatchFailure(_) => FailureReason::Unreachable,
        SdkError::ServiceError(_) => reason_for_code(err.code().unwrap_or_default(), &message),
        SdkError::ResponseError(_) => FailureReason::ServerError,
        _ => FailureReason::Other,
    };
    let message = if reason == FailureReason::Denied {
        // Name the permission: what an operator adds to the role's policy.
        let service = if matches!(operation, "ListClusters" | "DescribeCluster") {
            "eks"
        } else {
            "ec2"
        };
        format!("{message} (the role needs {service}:{operation}; see deploy/iam-policy.json)")
    } else {
        message
    };
    DiscoveryError {
        reason,
        target: target.to_string(),
        operation,
        message,
    }
}

/// The failure class of an EC2 error code (and the HTTP status in the message).
fn reason_for_code(code: &str, message: &str) -> FailureReason {
    match code {
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException" => FailureReason::Throttled,
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "RequestExpired"
        | "UnrecognizedClientException"
        | "MissingAuthenticationToken"
        | "OptInRequired" => FailureReason::Credentials,
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => FailureReason::Denied,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            FailureReason::ServerError
        }
        _ if message.contains("status code: 5") || message.contains("500 Internal") => {
            FailureReason::ServerError
        }
        _ => FailureReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `paginate` over scripted pages: (items, next token) per call, and the tokens
    /// it was called with.
    fn paged(
        pages: &[(&[u32], Option<&str>)],
    ) -> (Result<Vec<u32>, DiscoveryError>, Vec<Option<String>>) {
        let target = Target {
            region: Some("ap-northeast-1".into()),
            role_arn: None,
        };
        let asked = std::sync::Mutex::new(Vec::new());
        let pages: Vec<(Vec<u32>, Option<String>)> = pages
            .iter()
            .map(|(items, next)| (items.to_vec(), next.map(str::to_string)))
            .collect();
        let mut at = 0;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = runtime.block_on(paginate(&target, "DescribeVpcEndpoints", |token| {
            asked.lock().unwrap().push(token);
            let page = pages.get(at).cloned().unwrap_or_default();
            at += 1;
            async move { Ok(page) }
        }));
        (got, asked.into_inner().unwrap())
    }

    #[test]
    fn paginate_follows_every_token_and_refuses_one_that_comes_back() {
        // Three pages, in order, each asked with the token before it.
        let (got, asked) = paged(&[(&[1, 2], Some("a")), (&[3], Some("b")), (&[4], None)]);
        assert_eq!(got.unwrap(), [1, 2, 3, 4]);
        assert_eq!(asked, [None, Some("a".into()), Some("b".into())]);
        // An empty token ends the list, as no token does.
        let (got, asked) = paged(&[(&[1], Some("")), (&[9], None)]);
        assert_eq!((got.unwrap(), asked.len()), (vec![1], 1));
        // A token seen before, right away (the SDK's paginator would stop quietly
        // there, with the list cut short) or later (a cycle): an invalid answer.
        for pages in [
            &[
                (&[1u32][..], Some("a")),
                (&[2][..], Some("a")),
                (&[3][..], None),
            ][..],
            &[
                (&[1][..], Some("a")),
                (&[2][..], Some("b")),
                (&[3][..], Some("a")),
                (&[4][..], None),
            ],
        ] {
            let e = paged(pages).0.unwrap_err();
            assert_eq!(e.reason, FailureReason::InvalidResponse, "{e:?}");
            assert!(e.message.contains("came back a second time"), "{e:?}");
            assert_eq!(e.operation, "DescribeVpcEndpoints");
        }
    }

    #[test]
    fn whole_responses() {
        let whole = [
            "<DescribeVpcEndpointsResponse xmlns=\"x\"><requestId>1</requestId></DescribeVpcEndpointsResponse>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeVpcEndpointsResponse>\n</DescribeVpcEndpointsResponse>\n",
            "<DescribeNetworkInterfacesResponse></DescribeNetworkInterfacesResponse>",
        ];
        for body in whole {
            assert!(is_whole_response(body.as_bytes()), "{body}");
        }
        let broken = [
            "",
            "   ",
            "<?xml version=\"1.0\"?>",
            "<DescribeVpcEndpointsResponse><vpcEndpointSet><item><vpcEndpointId>vpce-<<<garbage&&&",
            "<DescribeVpcEndpointsResponse><vpcEndpointSet><item></item>",
            "<DescribeVpcEndpointsResponse></DescribeVpcEndpointsRespons",
            "<html><body>502 Bad Gateway</body></html>",
            "<Foo></Foo>",
            "<DescribeVpcEndpointsResponse></OtherResponse>",
            "{\"json\": true}",
        ];
        for body in broken {
            assert!(!is_whole_response(body.as_bytes()), "{body}");
        }
        assert!(!is_whole_response(b"<AResponse>\xff</AResponse>"));
    }

    /// DescribeCluster into a [`Cluster`]: the endpoint's host lower-cased (IPv6
    /// clusters' `…api.aws` too), and what an answer must have.
    #[test]
    fn clusters_are_read_and_checked() {
        use aws_sdk_eks::types::{Cluster as EksCluster, ClusterStatus, VpcConfigResponse};
        let vpc = |private| {
            VpcConfigResponse::builder()
                .vpc_id("vpc-1")
                .endpoint_private_access(private)
                .build()
        };
        let c = EksCluster::builder()
            .name("v6")
            .status(ClusterStatus::Active)
            .endpoint("https://0123ABCD.gr7.ap-northeast-1.eks.api.aws")
            .resources_vpc_config(vpc(true))
            .build();
        let got = cluster(&c, "v6").unwrap();
        assert_eq!(got.endpoint_host, "0123abcd.gr7.ap-northeast-1.eks.api.aws");
        assert!(got.private_access);
        assert_eq!(
            (got.vpc_id.as_str(), got.status.as_str()),
            ("vpc-1", "ACTIVE")
        );
        // Creating: no endpoint yet, fine; active without one, or without a VPC, is not.
        let creating = EksCluster::builder()
            .name("new")
            .status(ClusterStatus::Creating)
            .resources_vpc_config(vpc(true))
            .build();
        assert_eq!(cluster(&creating, "new").unwrap().endpoint_host, "");
        let broken = EksCluster::builder()
            .name("x")
            .status(ClusterStatus::Active)
            .resources_vpc_config(vpc(true))
            .build();
        assert!(
            cluster(&broken, "x")
                .unwrap_err()
                .contains("without an endpoint")
        );
        let no_vpc = EksCluster::builder()
            .name("x")
            .status(ClusterStatus::Active)
            .endpoint("https://a.b")
            .build();
        assert!(cluster(&no_vpc, "x").unwrap_err().contains("vpcId"));
        let http = EksCluster::builder()
            .name("x")
            .status(ClusterStatus::Active)
            .endpoint("http://a.b")
            .resources_vpc_config(vpc(false))
            .build();
        assert!(cluster(&http, "x").is_err(), "not https");
        assert!(
            cluster(&c, "other")
                .unwrap_err()
                .contains("asked for other")
        );
    }

    #[test]
    fn error_codes_map_to_reasons() {
        let rows = [
            ("RequestLimitExceeded", FailureReason::Throttled),
            ("Throttling", FailureReason::Throttled),
            ("AuthFailure", FailureReason::Credentials),
            ("ExpiredToken", FailureReason::Credentials),
            ("UnauthorizedOperation", FailureReason::Denied),
            ("InternalError", FailureReason::ServerError),
            ("Unavailable", FailureReason::ServerError),
            ("InvalidParameterValue", FailureReason::Other),
        ];
        for (code, reason) in rows {
            assert_eq!(reason_for_code(code, ""), reason, "{code}");
        }
    }
}
