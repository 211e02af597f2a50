//! EC2 discovery: DescribeVpcEndpoints, DescribeNetworkInterfaces and
//! DescribeVpcEndpointServices into a plain [`Inventory`].
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

use crate::config::{AwsConfig, Config, Target};
use crate::discovery::{
    Discover, DiscoveryError, Endpoint, Eni, FailureReason, Inventory, TargetInventory,
    missing_enis_tolerated,
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
                (t, vpcs)
            })
            .collect();
        Some(Self::new(aws, targets).await)
    }

    /// Builds one EC2 client per target. Loads credentials lazily: nothing is called yet.
    pub async fn new(aws: &AwsConfig, targets: Vec<(Target, Option<BTreeSet<String>>)>) -> Self {
        let mut clients = Vec::with_capacity(targets.len());
        for (target, vpcs) in targets {
            let client = client_for(aws, &target).await;
            clients.push(TargetClient {
                target,
                client,
                vpcs,
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
        let raw = self.vpc_endpoints(t).await?;
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
        debug!(target = %t.target, endpoints = endpoints.len(), enis = enis.len(), "discovered");
        Ok(TargetInventory {
            target: t.target.clone(),
            account,
            endpoints,
        })
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

async fn client_for(aws: &AwsConfig, target: &Target) -> Client {
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
    let mut conf = aws_sdk_ec2::config::Builder::from(&sdk).interceptor(CompleteBody);
    if let Some(url) = &aws.endpoint_url {
        // Only EC2 goes to the override: STS (AssumeRole) keeps its own endpoint,
        // which the SDK takes from $AWS_ENDPOINT_URL_STS when that is set.
        conf = conf.endpoint_url(url.clone());
    }
    Client::from_conf(conf.build())
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

/// Checks every successful answer for [`IncompleteBody`].
#[derive(Debug)]
struct CompleteBody;

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
        if is_whole_response(body) {
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
