"""moto_server with more realistic EC2 Interface VPC endpoints.

Run:   python fake_ec2.py -H 127.0.0.1 -p 5055      (same flags as moto_server)

Patches applied to moto (tested with moto 5.2.5) before the server starts:
  * create_vpc_endpoint (Interface): one ENI per subnet with a PrivateIpAddress taken
    sequentially from the subnet CIDR (first .4), Description "VPC Endpoint Interface vpce-...",
    InterfaceType "vpc_endpoint", RequesterManaged true, and the endpoint's security groups
    (stock moto: random 10.x.y.z not inside the subnet, type "interface", no description).
  * modify_vpc_endpoint: AddSubnetIds / RemoveSubnetIds create / delete ENIs,
    Add/RemoveSecurityGroupIds update the ENIs' groups (stock moto: ENIs unchanged),
    PrivateDnsEnabled is applied (stock moto: ignored).
  * DnsEntries like AWS: regional "<vpce-id>-<rand>.<svc>.<region>.vpce.amazonaws.com", one
    "<vpce-id>-<rand>-<az>.<...>" per AZ, and (PrivateDnsEnabled) the private DNS name
    ("ssm.<region>.amazonaws.com", or the endpoint service's PrivateDnsName).
    (stock moto: one entry "<vpce-id>-<rand>.<service-name>").
  * delete_vpc_endpoints: the endpoint keeps State "deleted" (as stock moto) but its
    NetworkInterfaceIds is emptied (stock moto keeps dangling ENI ids).
  * DescribeVpcEndpoints / DescribeNetworkInterfaces honour MaxResults + NextToken
    (stock moto returns everything in one page and never a NextToken).
  * filters vpc-endpoint-id and ip-address-type on DescribeVpcEndpoints (stock: HTTP 500).
  * filter vpc-id on DescribeVpcEndpoints (stock: not implemented; AWS has it).
  * CreateVpcEndpoint DnsOptions.PrivateDnsOnlyForInboundResolverEndpoint is kept and
    listed (stock: dropped), as AWS lists it for S3 and DynamoDB interface endpoints.
  * CreateVpcEndpoint IpAddressType and DnsOptions.DnsRecordIpType are kept and listed
    (stock: dropped); ipv6 and dualstack endpoints' ENIs get an IPv6 address from their
    subnet's IPv6 CIDR (from ::4 on), and fail like AWS on a subnet without one. (An
    ipv6 endpoint's ENIs keep an IPv4 address too: moto's ENIs need one.)
  * test hook: tag "fake:state" = pending|available|deleting|failed|rejected|... on a VPC
    endpoint (at creation via TagSpecifications or later via CreateTags) sets its State.

Added for privatelink-dns (not in ../shared/aws):
  * DescribeVpcEndpointServices without moto's default-service collection, which imports
    every moto backend and fails with only moto[ec2] installed (HTTP 500). AWS services
    (com.amazonaws.<region>.<svc>) are synthesized for the names asked, with AWS's private
    DNS names ("<svc>.<region>.amazonaws.com", plus "*.s3.<region>.amazonaws.com" for s3);
    endpoint service configurations are listed as moto has them. ServiceNames with an
    unknown name fails with InvalidServiceName, as AWS does; the service-name filter does not.
  * CreateVpcEndpointServiceConfiguration accepts load balancer ARNs that do not exist
    (seeding an NLB would need the elbv2 API; the service's private DNS name is what we test).
  * EKS (moto's EKS backend, on the same server; requests are routed by the signing
    scope), from ../shared/aws: CreateCluster gives each cluster its own API endpoint
    "https://<32 upper-case hex>.<gr7|yl4|sk1>.<region>.eks.amazonaws.com" (stock: one
    endpoint shared by every cluster of a region), resourcesVpcConfig gains vpcId (from
    its subnets, as AWS reports it), and, as EKS does, one ENI per subnet (at most 4)
    described "Amazon EKS <cluster name>", sequential IPs from the subnet, status in-use
    (EKS attaches them to its own instances); DeleteCluster deletes them. To model the
    ENI rotation of a version upgrade, delete one (DeleteNetworkInterface) and create
    another with the same description.
  * With FAKE_EC2_REQUEST_LOG=<file>: one line "<service> <action> <access key id>
    <next|-> <vpc ids|->" per API call is appended to that file, so tests can see which
    credentials signed which call (AssumeRole: the EC2 calls must carry the assumed
    role's key), which calls asked for a next page (NextToken), and which VPCs a
    call's vpc-id filters named.
"""
import os
import sys

from moto.ec2.exceptions import EC2ClientError, InvalidNextToken
from moto.ec2.utils import random_resource_id
from moto.ec2.models.tags import TagBackend
from moto.ec2.models.vpcs import VPCBackend, VPCEndPoint
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
from moto.ec2.responses.vpcs import VPCs
from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidServiceName
from moto.ec2.models.vpc_service_configuration import VPCServiceConfigurationBackend

STATE_TAG = "fake:state"


# ---------------------------------------------------------------- ENIs per endpoint
def _make_eni(backend, ep, subnet_id):
    subnet = backend.get_subnet(subnet_id)
    try:
        ip = subnet.get_available_subnet_ip(ep)  # sequential, skips AWS-reserved .0-.3
    except (StopIteration, RuntimeError):
        raise EC2ClientError("InsufficientFreeAddressesInSubnet",
                             f"There are not enough free addresses in subnet '{subnet_id}' to satisfy the requested number of instances.")
    eni = backend.create_network_interface(
        subnet,
        ip,
        group_ids=list(ep.security_group_ids) or None,
        description=f"VPC Endpoint Interface {ep.id}",
    )
    eni.interface_type = "vpc_endpoint"
    eni.requester_managed = True
    return eni.id


def _drop_eni(backend, eni_id):
    eni = backend.enis.pop(eni_id, None)
    if eni is not None:
        eni.subnet.del_subnet_ip(eni.private_ip_address)


def _is_interface(ep):
    return (ep.vpc_endpoint_type or "").lower() == "interface"


def _dns_entries(backend, ep):
    parts = ep.service_name.split(".")
    if len(parts) < 4:
        return ep.dns_entries
    if parts[2] == "vpce":  # com.amazonaws.vpce.<region>.vpce-svc-xxxx (endpoint service)
        region, svc = parts[3], ".".join(parts[4:])
        cfg = getattr(backend, "configurations", {}).get(svc)
        private = cfg.private_dns_name if cfg else None
    else:  # com.amazonaws.<region>.<service>
        region, svc = parts[2], ".".join(parts[3:])
        private = f"{svc}.{region}.amazonaws.com"
    base = f"{svc}.{region}.vpce.amazonaws.com"
    if not getattr(ep, "_fake_dns_id", None):
        ep._fake_dns_id = random_resource_id(8)
        ep._fake_zone = "Z" + random_resource_id(12).upper()
        ep._fake_private_zone = "Z" + random_resource_id(12).upper()
    prefix = f"{ep.id}-{ep._fake_dns_id}"
    entries = [{"dns_name": f"{prefix}.{base}", "hosted_zone_id": ep._fake_zone}]
    for az in sorted({backend.enis[e].subnet.availability_zone for e in ep.network_interface_ids}):
        entries.append({"dns_name": f"{prefix}-{az}.{base}", "hosted_zone_id": ep._fake_zone})
    if ep.private_dns_enabled and private:
        entries.append({"dns_name": private, "hosted_zone_id": ep._fake_private_zone})
    return entries


_orig_create = VPCBackend.create_vpc_endpoint


# CreateVpcEndpoint's IpAddressType and DnsOptions, which moto's model does not take:
# the response handler below passes them here.
_REQUEST_OPTIONS = {}


def _ipv6_for(backend, subnet_id):
    """The next address of the subnet's IPv6 CIDR, from ::4 on, as AWS hands them out."""
    import ipaddress
    subnet = backend.get_subnet(subnet_id)
    blocks = [a.get("ipv6CidrBlock") for a in subnet.ipv6_cidr_block_associations.values()]
    blocks = [b for b in blocks if b]
    if not blocks:
        raise EC2ClientError("InvalidParameter",
                             f"subnet {subnet_id} has no IPv6 CIDR block for an ipv6 or dualstack endpoint")
    net = ipaddress.ip_network(blocks[0])
    used = {ip for e in backend.enis.values() if e.subnet.id == subnet_id for ip in (e.ipv6_addresses or [])}
    n = 4
    while str(net[n]) in used:
        n += 1
    return str(net[n])


def create_vpc_endpoint(self, *args, **kwargs):
    ep = _orig_create(self, *args, **kwargs)
    if _is_interface(ep):
        ep.ip_address_type = _REQUEST_OPTIONS.get("ip_address_type") or "ipv4"
        ep.dns_options = {"DnsRecordIpType": _REQUEST_OPTIONS.get("dns_record_ip_type") or ep.ip_address_type}
        if _REQUEST_OPTIONS.get("inbound_only") is not None:
            ep.dns_options["PrivateDnsOnlyForInboundResolverEndpoint"] = _REQUEST_OPTIONS["inbound_only"]
        for eni_id in ep.network_interface_ids:  # moto's random-IP ENIs
            self.enis.pop(eni_id, None)
        ep.network_interface_ids = []
        try:
            for s in ep.subnet_ids or []:
                eni_id = _make_eni(self, ep, s)
                ep.network_interface_ids.append(eni_id)
                if ep.ip_address_type in ("ipv6", "dualstack"):
                    self.enis[eni_id].ipv6_addresses = [_ipv6_for(self, s)]
        except EC2ClientError:  # roll back: no half-created endpoint
            for eni_id in ep.network_interface_ids:
                _drop_eni(self, eni_id)
            self.vpc_end_points.pop(ep.id, None)
            raise
        ep.dns_entries = _dns_entries(self, ep)
    state = (kwargs.get("tags") or {}).get(STATE_TAG)
    if state:
        ep.state = state
    return ep


_orig_modify = VPCBackend.modify_vpc_endpoint


def modify_vpc_endpoint(self, *args, **kwargs):
    ep_id = kwargs.get("vpc_id", args[0] if args else None)
    _orig_modify(self, *args, **kwargs)
    ep = self.vpc_end_points[ep_id]
    if not _is_interface(ep):
        return
    wanted = list(ep.subnet_ids or [])
    for eni_id in list(ep.network_interface_ids):
        eni = self.enis.get(eni_id)
        if eni is None or eni.subnet.id not in wanted:
            _drop_eni(self, eni_id)
            ep.network_interface_ids.remove(eni_id)
    have = {self.enis[e].subnet.id for e in ep.network_interface_ids}
    for s in wanted:
        if s not in have:
            eni_id = _make_eni(self, ep, s)
            ep.network_interface_ids.append(eni_id)
            # As at creation: an ipv6 or dualstack endpoint's new ENI has an IPv6 address.
            if getattr(ep, "ip_address_type", "ipv4") in ("ipv6", "dualstack"):
                self.enis[eni_id].ipv6_addresses = [_ipv6_for(self, s)]
    ep.dns_entries = _dns_entries(self, ep)
    groups = [self.get_security_group_from_id(g) for g in ep.security_group_ids]
    for eni_id in ep.network_interface_ids:
        if groups:
            self.enis[eni_id]._group_set = [g for g in groups if g]


_orig_delete = VPCBackend.delete_vpc_endpoints


def delete_vpc_endpoints(self, vpce_ids=None):
    eps = [self.vpc_end_points[i] for i in vpce_ids or [] if i in self.vpc_end_points]
    for ep in eps:
        if _is_interface(ep):
            for eni_id in ep.network_interface_ids:
                _drop_eni(self, eni_id)
    _orig_delete(self, vpce_ids)
    for ep in eps:
        ep.network_interface_ids = []


VPCBackend.create_vpc_endpoint = create_vpc_endpoint

_orig_create_response = VPCs.create_vpc_endpoint


def create_vpc_endpoint_response(self):
    dns = self._get_param("DnsOptions") or {}
    _REQUEST_OPTIONS.update(
        ip_address_type=self._get_param("IpAddressType"),
        dns_record_ip_type=dns.get("DnsRecordIpType") if isinstance(dns, dict) else None,
        inbound_only=(str(dns.get("PrivateDnsOnlyForInboundResolverEndpoint")).lower() == "true"
                      if isinstance(dns, dict) and "PrivateDnsOnlyForInboundResolverEndpoint" in dns else None),
    )
    try:
        return _orig_create_response(self)
    finally:
        _REQUEST_OPTIONS.clear()


VPCs.create_vpc_endpoint = create_vpc_endpoint_response

_orig_modify_response = VPCs.modify_vpc_endpoint


def modify_vpc_endpoint_response(self):
    """ModifyVpcEndpoint PrivateDnsEnabled, which stock moto ignores."""
    resp = _orig_modify_response(self)
    enabled = self._get_bool_param("PrivateDnsEnabled")
    if enabled is not None:
        ep = self.ec2_backend.vpc_end_points[self._get_param("VpcEndpointId")]
        ep.private_dns_enabled = enabled
        ep.dns_entries = _dns_entries(self.ec2_backend, ep)
    return resp


VPCs.modify_vpc_endpoint = modify_vpc_endpoint_response
VPCBackend.modify_vpc_endpoint = modify_vpc_endpoint
VPCBackend.delete_vpc_endpoints = delete_vpc_endpoints

# ---------------------------------------------------------------- filters
_orig_filter = VPCEndPoint.get_filter_value


def get_filter_value(self, filter_name, method_name=None):
    if filter_name == "vpc-endpoint-id":
        return self.id
    if filter_name == "ip-address-type":
        return getattr(self, "ip_address_type", "ipv4")
    if filter_name == "vpc-id":
        return self.vpc_id
    return _orig_filter(self, filter_name, method_name)


VPCEndPoint.get_filter_value = get_filter_value

# ---------------------------------------------------------------- state test hook
_orig_create_tags = TagBackend.create_tags


def create_tags(self, resource_ids, tags):
    ok = _orig_create_tags(self, resource_ids, tags)
    if STATE_TAG in tags:
        for rid in resource_ids:
            ep = getattr(self, "vpc_end_points", {}).get(rid)
            if ep is not None:
                ep.state = tags[STATE_TAG]
    return ok


TagBackend.create_tags = create_tags


# ---------------------------------------------------------------- pagination
def _page(resp, items):
    max_results = resp._get_int_param("MaxResults")
    token = resp._get_param("NextToken")
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            raise InvalidNextToken(token)
        if not 0 <= start <= len(items):
            raise InvalidNextToken(token)
    if not max_results:
        return items[start:], None
    end = start + max_results
    return items[start:end], (str(end) if end < len(items) else None)


def describe_vpc_endpoints(self):
    eps = self.ec2_backend.describe_vpc_endpoints(
        vpc_end_point_ids=self._get_param("VpcEndpointIds", []),
        filters=self._filters_from_querystring(),
    )
    page, token = _page(self, eps)
    result = {"VpcEndpoints": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def describe_network_interfaces(self):
    self.error_on_dryrun()
    enis = self.ec2_backend.get_all_network_interfaces(
        self._get_param("NetworkInterfaceIds", []), self._filters_from_querystring()
    )
    page, token = _page(self, list(enis))
    result = {"NetworkInterfaces": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


VPCs.describe_vpc_endpoints = describe_vpc_endpoints


# ---------------------------------------------------------------- endpoint services
WILDCARD_AWS_SERVICES = {"s3"}


def _aws_service_detail(name, region):
    svc = ".".join(name.split(".")[3:])
    names = [f"{svc}.{region}.amazonaws.com"]
    if svc in WILDCARD_AWS_SERVICES:
        names.append(f"*.{svc}.{region}.amazonaws.com")
    return {
        "AcceptanceRequired": False,
        "AvailabilityZones": [],
        "BaseEndpointDnsNames": [f"{svc}.{region}.vpce.amazonaws.com"],
        "ManagesVpcEndpoints": False,
        "Owner": "amazon",
        "PrivateDnsName": names[0],
        "PrivateDnsNameVerificationState": "verified",
        "PrivateDnsNames": [{"PrivateDnsName": n} for n in names],
        "ServiceId": "vpce-svc-" + format(abs(hash(name)) % (1 << 68), "017x"),
        "ServiceName": name,
        "ServiceType": [{"ServiceType": "Interface"}],
        "Tags": [],
        "VpcEndpointPolicySupported": True,
    }


def describe_vpc_endpoint_services(self, service_names, filters, max_results, next_token, region):
    wanted = set(service_names or [])
    for f in filters or []:
        if f["Name"] == "service-name":
            wanted |= set(f.get("Value", []) + f.get("Values", []))
    details = [c.to_dict() for c in self.configurations.values()]
    details = [d for d in details if not wanted or d["ServiceName"] in wanted]
    for n in sorted(wanted):
        parts = n.split(".")
        if n.startswith("com.amazonaws.") and len(parts) >= 4 and parts[2] == region:
            details.append(_aws_service_detail(n, region))
    known = {d["ServiceName"] for d in details}
    for n in service_names or []:
        if n not in known:
            raise InvalidServiceName(n)
    details.sort(key=lambda d: d["ServiceName"])
    start = 0
    if next_token:
        ids = [d["ServiceId"] for d in details]
        if next_token not in ids:
            raise InvalidNextToken(next_token)
        start = ids.index(next_token)
    max_results = max_results or 1000
    page = details[start:start + max_results]
    token = details[start + max_results]["ServiceId"] if len(details) > start + max_results else None
    return {"servicesDetails": page, "serviceNames": [d["ServiceName"] for d in page], "nextToken": token}


VPCBackend.describe_vpc_endpoint_services = describe_vpc_endpoint_services

_orig_create_svc = VPCServiceConfigurationBackend.create_vpc_endpoint_service_configuration


def create_vpc_endpoint_service_configuration(self, lb_arns, *args, **kwargs):
    try:
        self.elbv2_backend.describe_load_balancers(arns=lb_arns, names=None)
    except Exception:
        lb_arns = []
    return _orig_create_svc(self, lb_arns, *args, **kwargs)


VPCServiceConfigurationBackend.create_vpc_endpoint_service_configuration = create_vpc_endpoint_service_configuration
ElasticNetworkInterfaces.describe_network_interfaces = describe_network_interfaces

_REQUEST_LOG = os.environ.get("FAKE_EC2_REQUEST_LOG")
if _REQUEST_LOG:
    from moto.core.responses import BaseResponse

    _orig_call_action = BaseResponse.call_action

    def call_action(self):
        try:
            key = self.get_access_key()
        except Exception:
            key = "-"
        # Whether the call asks for a next page, and the VPCs its filters name.
        qs = getattr(self, "querystring", {}) or {}
        paged = "next" if qs.get("NextToken") else "-"
        vpcs = sorted(
            v
            for k, values in qs.items()
            if k.startswith("Filter.") and k.endswith(".Name") and "vpc-id" in values
            for vk, vs in qs.items()
            if vk.startswith(k[: -len("Name")] + "Value.")
            for v in vs
        )
        with open(_REQUEST_LOG, "a") as f:
            f.write(f"{self.service_name} {self._get_action()} {key} {paged} {','.join(vpcs) or '-'}\n")
        return _orig_call_action(self)

    BaseResponse.call_action = call_action

# ---------------------------------------------------------------- EKS cluster endpoints
from moto.eks.models import EKSBackend
from moto.ec2.models import ec2_backends

_orig_create_cluster = EKSBackend.create_cluster
_orig_delete_cluster = EKSBackend.delete_cluster


def _ec2_of(eks_backend):
    return ec2_backends[eks_backend.account_id][eks_backend.region_name]


def create_cluster(self, *args, **kwargs):
    import secrets
    cluster = _orig_create_cluster(self, *args, **kwargs)
    ec2 = _ec2_of(self)
    cfg = cluster.resources_vpc_config
    subnets = [ec2.get_subnet(s) for s in cfg.get("subnetIds", [])]
    if subnets:
        cfg["vpcId"] = subnets[0].vpc_id
    cfg.setdefault("endpointPublicAccess", True)
    cfg.setdefault("endpointPrivateAccess", False)
    cell = secrets.choice(["gr7", "yl4", "sk1"])
    cluster.endpoint = f"https://{secrets.token_hex(16).upper()}.{cell}.{self.region_name}.eks.amazonaws.com"
    for subnet in subnets[:4]:
        ip = subnet.get_available_subnet_ip(cluster)
        eni = ec2.create_network_interface(subnet, ip, description=f"Amazon EKS {cluster.name}")
        eni.status = "in-use"
    return cluster


def delete_cluster(self, name):
    ec2 = _ec2_of(self)
    for eni_id, eni in list(ec2.enis.items()):
        if eni.description == f"Amazon EKS {name}":
            _drop_eni(ec2, eni_id)
    return _orig_delete_cluster(self, name)


EKSBackend.create_cluster = create_cluster
EKSBackend.delete_cluster = delete_cluster

from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend

_orig_create_eni = NetworkInterfaceBackend.create_network_interface


def create_network_interface(self, *args, **kwargs):
    """An ENI described "Amazon EKS <name>" is EKS's: in use (a rotation's new ENI too)."""
    eni = _orig_create_eni(self, *args, **kwargs)
    if (eni.description or "").startswith("Amazon EKS "):
        eni.status = "in-use"
    return eni


NetworkInterfaceBackend.create_network_interface = create_network_interface

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
