"""Seeds the EC2 API emulator for tests/e2e/resolvers.sh, through the real EC2 API
(boto3), and changes it during the test.

  seed_ec2.py --url URL setup                  -> prints JSON: vpc, subnets, endpoints
  seed_ec2.py --url URL add-subnet EP SUBNET   -> adds a subnet (a new ENI) to an endpoint
  seed_ec2.py --url URL create VPC SERVICE SUBNET... -> creates an interface endpoint, prints its id
  seed_ec2.py --url URL delete EP              -> deletes an endpoint
"""
import argparse
import json
import os

import boto3

REGION = "ap-northeast-1"


def client(url):
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def endpoint(ec2, vpc, service, subnets, tags=None):
    kwargs = dict(
        VpcId=vpc,
        ServiceName=service,
        VpcEndpointType="Interface",
        SubnetIds=subnets,
        PrivateDnsEnabled=True,
    )
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "vpc-endpoint", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return ec2.create_vpc_endpoint(**kwargs)["VpcEndpoint"]["VpcEndpointId"]


def setup(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i + 1}.0/24", AvailabilityZone=f"{REGION}{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in enumerate("acd")
    ]
    vendor = ec2.create_vpc_endpoint_service_configuration(
        NetworkLoadBalancerArns=[f"arn:aws:elasticloadbalancing:{REGION}:123456789012:loadbalancer/net/vendor/0"],
        PrivateDnsName="internal.example.com",
        AcceptanceRequired=False,
    )["ServiceConfiguration"]["ServiceName"]
    eps = {
        # The vendor's service: an explicit zone in the config follows it by tag.
        "vendor": endpoint(ec2, vpc, vendor, subnets[:2], {"privatelink-dns/name": "internal"}),
        # AWS services: zero-config names (ssm: one name; s3: a name and a wildcard name).
        "ssm": endpoint(ec2, vpc, f"com.amazonaws.{REGION}.ssm", subnets[:2]),
        "s3": endpoint(ec2, vpc, f"com.amazonaws.{REGION}.s3", subnets[:2]),
    }
    return {"vpc": vpc, "subnets": subnets, "endpoints": eps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    a = sub.add_parser("add-subnet")
    a.add_argument("endpoint")
    a.add_argument("subnet")
    c = sub.add_parser("create")
    c.add_argument("vpc")
    c.add_argument("service")
    c.add_argument("subnets", nargs="+")
    d = sub.add_parser("delete")
    d.add_argument("endpoint")
    args = p.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    ec2 = client(args.url)
    if args.cmd == "setup":
        print(json.dumps(setup(ec2)))
    elif args.cmd == "create":
        print(endpoint(ec2, args.vpc, args.service, args.subnets))
    elif args.cmd == "delete":
        ec2.delete_vpc_endpoints(VpcEndpointIds=[args.endpoint])
    else:
        ec2.modify_vpc_endpoint(VpcEndpointId=args.endpoint, AddSubnetIds=[args.subnet])


if __name__ == "__main__":
    main()
