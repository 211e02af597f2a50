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
use aws_sdk_ec2::config::{Region, SharedCredentialsProvider};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Tag, VpcEndpoint};
use tracing::debug;

use crate::config::{AwsConfig, Target};
use crate::discovery::{
    Discover, DiscoveryError, Endpoint, Eni, FailureReason, Inventory, TargetInventory,
};

/// Filter values per DescribeNetworkInterfaces / DescribeVpcEndpointServices call.
const FILTER_BATCH: usize = 200;

/// Discovery against the EC2 API, one client per target.
pub struct Ec2Discovery {
    clients: Vec<(Target, Client)>,
    page_size: i32,
}

impl Ec2Discovery {
    /// Builds one EC2 client per target. Loads credentials lazily: nothing is called yet.
    pub async fn new(aws: &AwsConfig, targets: Vec<Target>) -> Self {
        let mut clients = Vec::with_capacity(targets.len());
        for target in targets {
            let client = client_for(aws, &target).await;
            clients.push((target, client));
        }
        Self {
            clients,
            page_size: aws.page_size,
        }
    }

    async fn discover_target(
        &self,
        target: &Target,
        client: &Client,
    ) -> Result<Vec<Endpoint>, DiscoveryError> {
        let mut raw: Vec<VpcEndpoint> = Vec::new();
        let mut pages = client
            .describe_vpc_endpoints()
            .filters(filter("vpc-endpoint-type", ["Interface"]))
            .max_results(self.page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, target, "DescribeVpcEndpoints"))?;
            raw.extend(page.vpc_endpoints.unwrap_or_default());
        }
        raw.retain(|ep| {
            ep.vpc_endpoint_type()
                .is_some_and(|t| t.as_str().eq_ignore_ascii_case("interface"))
        });

        // ENIs by id, in batches through the `network-interface-id` filter: unlike the
        // NetworkInterfaceIds parameter, it skips an ENI that was just deleted instead of
        // failing the whole call.
        let eni_ids: BTreeSet<&str> = raw
            .iter()
            .flat_map(|ep| ep.network_interface_ids())
            .map(String::as_str)
            .collect();
        let eni_ids: Vec<&str> = eni_ids.into_iter().collect();
        let mut enis: HashMap<String, Eni> = HashMap::with_capacity(eni_ids.len());
        for batch in eni_ids.chunks(FILTER_BATCH) {
            let mut pages = client
                .describe_network_interfaces()
                .filters(filter("network-interface-id", batch.iter().copied()))
                .max_results(self.page_size)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| classify(e, target, "DescribeNetworkInterfaces"))?;
                for ni in page.network_interfaces.unwrap_or_default() {
                    let Some(id) = ni.network_interface_id().map(str::to_string) else {
                        continue;
                    };
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
                    enis.insert(
                        id.clone(),
                        Eni {
                            id,
                            availability_zone: ni
                                .availability_zone()
                                .unwrap_or_default()
                                .to_string(),
                            subnet_id: ni.subnet_id().unwrap_or_default().to_string(),
                            ipv4,
                            ipv6,
                        },
                    );
                }
            }
        }

        // Private DNS names of the services, through the `service-name` filter: the
        // ServiceNames parameter fails the whole call for one unknown service.
        let services: BTreeSet<&str> = raw.iter().filter_map(|ep| ep.service_name()).collect();
        let services: Vec<&str> = services.into_iter().collect();
        let mut dns_names: HashMap<String, Vec<String>> = HashMap::new();
        for batch in services.chunks(FILTER_BATCH) {
            let mut token: Option<String> = None;
            loop {
                let out = client
                    .describe_vpc_endpoint_services()
                    .filters(filter("service-name", batch.iter().copied()))
                    .max_results(self.page_size)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| classify(e, target, "DescribeVpcEndpointServices"))?;
                for detail in out.service_details() {
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
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }

        let endpoints = raw
            .iter()
            .filter_map(|ep| {
                let id = ep.vpc_endpoint_id()?.to_string();
                let service_name = ep.service_name().unwrap_or_default().to_string();
                Some(Endpoint {
                    vpc_id: ep.vpc_id().unwrap_or_default().to_string(),
                    // The SDK has no variant for the wire value "available"; as_str() is exact.
                    state: ep
                        .state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    tags: tags(ep.tags()),
                    private_dns_names: dns_names.get(&service_name).cloned().unwrap_or_default(),
                    dns_record_ip_type: ep
                        .dns_options()
                        .and_then(|d| d.dns_record_ip_type())
                        .map(|t| t.as_str().to_string()),
                    ip_address_type: ep.ip_address_type().map(|t| t.as_str().to_string()),
                    enis: ep
                        .network_interface_ids()
                        .iter()
                        .filter_map(|e| enis.get(e).cloned())
                        .collect(),
                    service_name,
                    id,
                })
            })
            .collect::<Vec<_>>();
        debug!(%target, endpoints = endpoints.len(), enis = enis.len(), "discovered");
        Ok(endpoints)
    }
}

impl Discover for Ec2Discovery {
    async fn discover(&self) -> Result<Inventory, DiscoveryError> {
        let mut inventory = Inventory::default();
        for (target, client) in &self.clients {
            let endpoints = self.discover_target(target, client).await?;
            inventory.targets.push(TargetInventory {
                target: target.clone(),
                endpoints,
            });
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
    let mut conf = aws_sdk_ec2::config::Builder::from(&sdk);
    if let Some(url) = &aws.endpoint_url {
        // Only EC2 goes to the override: STS (AssumeRole) keeps its own endpoint,
        // which the SDK takes from $AWS_ENDPOINT_URL_STS when that is set.
        conf = conf.endpoint_url(url.clone());
    }
    Client::from_conf(conf.build())
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
    let reason = match &err {
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
