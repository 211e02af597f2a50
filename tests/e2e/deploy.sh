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
K8S_DOT=deploy/kubernetes/privatelink-dns-dot.yaml
for manifest in "$K8S" "$K8S_DOT"; do
    for version in 1.29.0 1.33.0; do
        if .venv/bin/kubernetes-validate --strict --quiet -k "$version" "$manifest"; then
            pass "kubernetes-validate $manifest (Kubernetes $version)"
        else
            fail "kubernetes-validate $manifest (Kubernetes $version)"
        fi
    done
done
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystm: true/' "$K8S" >"$TMP/bad.yaml"
if ! .venv/bin/kubernetes-validate --strict --quiet "$TMP/bad.yaml" >/dev/null 2>&1; then
    pass "kubernetes-validate rejects a misspelt field"
else
    fail "kubernetes-validate accepted a misspelt field"
fi
# The config inside each ConfigMap is a valid privatelink-dns config.
configmap() {
    $PY - "$1" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        sys.stdout.write(doc["data"]["config.toml"])
PY
}
configmap "$K8S" >"$TMP/k8s-config.toml"
if "$BIN" check-config --config "$TMP/k8s-config.toml" >/dev/null; then pass "ConfigMap config.toml passes check-config"; else fail "ConfigMap config.toml"; fi
# The DoT config names the Secret's files: check it with a real pair in their place.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=dns.test \
    -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>/dev/null
configmap "$K8S_DOT" | sed "s#/etc/privatelink-dns-tls/#$TMP/#" >"$TMP/k8s-dot-config.toml"
expect_contains "the DoT ConfigMap names the mounted Secret's files" "$TMP/tls.crt" "$(cat "$TMP/k8s-dot-config.toml")"
if "$BIN" check-config --config "$TMP/k8s-dot-config.toml" >/dev/null; then pass "DoT ConfigMap config.toml passes check-config"; else fail "DoT ConfigMap config.toml"; fi
# The DoT manifest is the plain one plus its TLS parts and nothing else: take them
# out and the two are equal, so a change to one that misses the other fails here.
dot=$($PY - "$K8S" "$K8S_DOT" <<'PY'
import sys, yaml
plain = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dot = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
kinds = {d["kind"]: d for d in dot}
pod = kinds["Deployment"]["spec"]["template"]["spec"]
c = pod["containers"][0]
port = [p for p in c["ports"] if p["name"] == "dns-tls"]
mount = [m for m in c["volumeMounts"] if m["name"] == "tls"]
volume = [v for v in pod["volumes"] if v["name"] == "tls"]
svc = [p for p in kinds["Service"]["spec"]["ports"] if p["name"] == "dns-tls"]
print("port", port[0]["containerPort"], port[0]["protocol"])
print("mount", mount[0]["mountPath"], mount[0].get("readOnly"), "subPath" in mount[0])
print("secret", volume[0]["secret"]["secretName"])
print("service", svc[0]["port"], svc[0]["targetPort"], svc[0]["protocol"])
c["ports"].remove(port[0]); c["volumeMounts"].remove(mount[0]); pod["volumes"].remove(volume[0])
kinds["Service"]["spec"]["ports"].remove(svc[0])
config = kinds["ConfigMap"]["data"]["config.toml"]
for line in ['    # The Service maps port 853 to 8853.\n', '    tls-listen = ["0.0.0.0:8853", "[::]:8853"]\n']:
    assert line.strip() in config, line
    config = config.replace(line.strip() + "\n", "", 1)
config = config.split("\n# The Secret privatelink-dns-tls")[0].rstrip("\n") + "\n"
kinds["ConfigMap"]["data"]["config.toml"] = config
print("rest", "equal" if dot == plain else "DIFFERENT")
PY
) || true
expect_contains "DoT: container port 8853/TCP" "port 8853 TCP" "$dot"
expect_contains "DoT: the Secret mounted read-only as a directory (not subPath: renewals reach it)" "mount /etc/privatelink-dns-tls True False" "$dot"
expect_contains "DoT: the Secret is privatelink-dns-tls" "secret privatelink-dns-tls" "$dot"
expect_contains "DoT: the load balancer's TCP 853 goes to it" "service 853 dns-tls TCP" "$dot"
expect_contains "DoT manifest = the plain one + its TLS parts, nothing else" "rest equal" "$dot"
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
