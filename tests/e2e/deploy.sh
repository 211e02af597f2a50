#!/usr/bin/env bash
# Offline checks of everything under deploy/ and the Dockerfile (no Docker engine, no
# cluster, no AWS account needed):
#   - Dockerfile: hadolint
#   - Kubernetes manifests: kubernetes-validate (bundled OpenAPI schemas), strict
#   - ECS task definition and service: botocore's ECS request shapes
#   - systemd unit: systemd-analyze verify
#   - every embedded or shipped config: privatelink-dns check-config
#   - IAM policies: JSON with the expected actions
# Each validator is also shown a broken file, to prove it would catch one.
#
# Usage: tests/e2e/deploy.sh [path/to/privatelink-dns]   (needs .venv from scripts/test)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PY=.venv/bin/python
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== Dockerfile"
if .venv/bin/hadolint Dockerfile; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
printf 'FROM debian\nRUN apt-get install curl\n' >"$TMP/Dockerfile.bad"
if ! .venv/bin/hadolint "$TMP/Dockerfile.bad" >/dev/null 2>&1; then pass "hadolint rejects a bad Dockerfile"; else fail "hadolint accepted a bad Dockerfile"; fi
expect_contains "Dockerfile runs as a fixed non-root UID" "USER 65532:65532" "$(cat Dockerfile)"
expect_contains "Dockerfile builds with --locked" "cargo build --release --locked" "$(cat Dockerfile)"
expect_contains "Dockerfile exposes DNS and HTTP" "EXPOSE 53/udp 53/tcp 5353/udp 5353/tcp 9153/tcp" "$(cat Dockerfile)"

echo "== Kubernetes"
K8S=deploy/kubernetes/privatelink-dns.yaml
for version in 1.29.0 1.33.0; do
    if .venv/bin/kubernetes-validate --strict --quiet -k "$version" "$K8S"; then
        pass "kubernetes-validate $K8S (Kubernetes $version)"
    else
        fail "kubernetes-validate $K8S (Kubernetes $version)"
    fi
done
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystm: true/' "$K8S" >"$TMP/bad.yaml"
if ! .venv/bin/kubernetes-validate --strict --quiet "$TMP/bad.yaml" >/dev/null 2>&1; then
    pass "kubernetes-validate rejects a misspelt field"
else
    fail "kubernetes-validate accepted a misspelt field"
fi
# The config inside the ConfigMap is a valid privatelink-dns config.
$PY - "$K8S" >"$TMP/k8s-config.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        sys.stdout.write(doc["data"]["config.toml"])
PY
if "$BIN" check-config --config "$TMP/k8s-config.toml" >/dev/null; then pass "ConfigMap config.toml passes check-config"; else fail "ConfigMap config.toml"; fi
facts=$($PY - "$K8S" <<'PY'
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
dep = docs["Deployment"]["spec"]
pod = dep["template"]["spec"]
c = pod["containers"][0]
svc = docs["Service"]
print("replicas", dep["replicas"])
print("zone-spread", pod["topologySpreadConstraints"][0]["topologyKey"])
print("probes", c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"])
print("nonroot", pod["securityContext"]["runAsNonRoot"], c["securityContext"]["readOnlyRootFilesystem"])
print("lb", svc["spec"]["type"], svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"])
print("ports", sorted((p["protocol"], p["port"]) for p in svc["spec"]["ports"]))
print("irsa", "eks.amazonaws.com/role-arn" in docs["ServiceAccount"]["metadata"]["annotations"])
print("pdb", docs["PodDisruptionBudget"]["spec"]["minAvailable"])
print("limits", "memory" in c["resources"]["limits"], "cpu" in c["resources"]["requests"])
PY
)
expect_contains "2 replicas" "replicas 2" "$facts"
expect_contains "spread across zones" "zone-spread topology.kubernetes.io/zone" "$facts"
expect_contains "liveness /healthz, readiness /readyz" "probes /healthz /readyz" "$facts"
expect_contains "non-root, read-only root filesystem" "nonroot True True" "$facts"
expect_contains "internal load balancer" "lb LoadBalancer internal" "$facts"
expect_contains "UDP and TCP 53" "ports [('TCP', 53), ('UDP', 53)]" "$facts"
expect_contains "IRSA annotation" "irsa True" "$facts"
expect_contains "PodDisruptionBudget" "pdb 1" "$facts"
expect_contains "requests and limits" "limits True True" "$facts"

echo "== ECS"
if $PY - <<'PY'
import json, botocore.session
from botocore.validate import validate_parameters
ecs = botocore.session.get_session().get_service_model("ecs")
validate_parameters(json.load(open("deploy/ecs/task-definition.json")), ecs.operation_model("RegisterTaskDefinition").input_shape)
validate_parameters(json.load(open("deploy/ecs/service.json")), ecs.operation_model("CreateService").input_shape)
PY
then pass "ECS task definition and service match the ECS API shapes"; else fail "ECS JSON"; fi
if ! $PY - >/dev/null 2>&1 <<'PY'
import botocore.session
from botocore.validate import validate_parameters
ecs = botocore.session.get_session().get_service_model("ecs")
validate_parameters({"family": "x", "containerDefinitions": [{"name": "a", "portMapings": []}]}, ecs.operation_model("RegisterTaskDefinition").input_shape)
PY
then pass "botocore rejects a misspelt ECS field"; else fail "botocore accepted a misspelt ECS field"; fi
if "$BIN" check-config --config deploy/ecs/config.toml >/dev/null; then pass "deploy/ecs/config.toml passes check-config"; else fail "deploy/ecs/config.toml"; fi

echo "== systemd"
sed "s#/usr/local/bin/privatelink-dns#$BIN#g" deploy/systemd/privatelink-dns.service >"$TMP/privatelink-dns.service"
if out=$(systemd-analyze verify "$TMP/privatelink-dns.service" 2>&1) && [[ -z "$out" ]]; then
    pass "systemd-analyze verify"
else
    fail "systemd-analyze verify: $out"
fi

echo "== IAM"
actions=$($PY -c 'import json; print(sorted(a for s in json.load(open("deploy/iam-policy.json"))["Statement"] for a in s["Action"]))')
expect_eq "read-only Describe and List actions only" "['ec2:DescribeNetworkInterfaces', 'ec2:DescribeVpcEndpointServices', 'ec2:DescribeVpcEndpoints', 'eks:DescribeCluster', 'eks:ListClusters']" "$actions"
if $PY -c 'import json; json.load(open("deploy/iam-assume-role-policy.json"))'; then
    pass "assume-role policy is JSON"
else
    fail "assume-role policy is not JSON"
fi

e2e_summary "e2e deploy"
