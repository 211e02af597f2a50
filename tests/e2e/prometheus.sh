#!/usr/bin/env bash
# End to end: a real Prometheus (Debian's) scrapes privatelink-dns every second, with
# deploy/prometheus/alerts.yaml loaded, on loopback addresses of a network namespace
# this script makes:
#
#   127.0.0.1:5480  privatelink-dns, the primary: discovery from the EC2 API emulator
#                   (moto, 127.0.0.1:5483), DNS over TLS on 127.0.0.1:5484, a catalog,
#                   transfers and NOTIFY (HTTP 127.0.0.1:9480)
#   127.0.0.2:5481  privatelink-dns, a follower of it (HTTP 127.0.0.2:9481)
#   127.0.0.1:9490  Prometheus, scrape and rule evaluation every 1 s
#
# After traffic (UDP, TCP and TLS queries, a refused transfer, an AXFR, a SIGHUP that
# changes a zone, so NOTIFY and an IXFR to the follower), checked: both targets are
# up with no scrape error; every alert rule evaluates without error; every metric an
# alert or the dashboard names exists; every expression of the dashboard
# (deploy/grafana/privatelink-dns.json) returns data; every alert expression returns
# data or is in the list below of those a healthy run leaves empty, with the reason.
# Needs prometheus, promtool, dig, kdig, openssl, curl and .venv (scripts/test
# installs them).
#
# Usage: tests/e2e/prometheus.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
e2e_netns prom "2 3" "$0" "$@"
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PY=$(realpath .venv/bin/python)
MOTO_PORT=5483
DIR=$(mktemp -d)
chmod 755 "$DIR"
SECRET=$(head -c 32 /dev/urandom | base64)
KEY="hmac-sha256:xfr-key:$SECRET"

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log; do [[ -f $f ]] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; }; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "== rules and dashboard, offline"
if promtool check rules deploy/prometheus/alerts.yaml >/dev/null; then pass "promtool check rules"; else fail "promtool check rules"; fi
if (cd deploy/prometheus && promtool test rules alerts.test.yaml >/dev/null); then
    pass "promtool test rules: every alert fires on its bad series and not on the healthy one"
else
    fail "promtool test rules"
fi

missing=$("$PY" - <<'PY'
import re, yaml
anchors = {h.strip().lower() for h in re.findall(r"^### (.+)$", open("docs/operations.md").read(), re.M)}
for g in yaml.safe_load(open("deploy/prometheus/alerts.yaml"))["groups"]:
    for r in g["rules"]:
        if r["annotations"]["runbook"].split("#")[1] not in anchors or r["alert"].lower() not in anchors:
            print(r["alert"])
PY
)
expect_eq "every alert has its runbook in docs/operations.md" "" "$missing"

echo "== EC2 API emulator, a certificate, privatelink-dns primary and follower"
e2e_moto "$MOTO_PORT" "$DIR/moto.log"
SEED=$("$PY" tests/e2e/seed_ec2.py --url "http://127.0.0.1:$MOTO_PORT" setup)
VPC=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vpc"])')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=dns.test \
    -addext "subjectAltName=DNS:dns.test" -keyout "$DIR/tls.key" -out "$DIR/tls.crt" 2>/dev/null

primary_config() { # address of www.static.test
    cat <<TOML
[server]
listen = ["127.0.0.1:5480"]
tls-listen = ["127.0.0.1:5484"]
state-dir = "$DIR/state"

[http]
listen = "127.0.0.1:9480"

[log]
format = "json"

[aws]
region = "ap-northeast-1"
endpoint-url = "http://127.0.0.1:$MOTO_PORT"
refresh-interval = "2s"
call-timeout = "1500ms"
cache-file = "$DIR/cache.json"

[[discover]]
vpc-ids = ["$VPC"]

[tls]
certificate = "$DIR/tls.crt"
key = "$DIR/tls.key"

[[tsig-key]]
name = "xfr-key"
secret = "$SECRET"

[transfer]
allow = ["127.0.0.1/32", "127.0.0.2/32"]
tsig-key = "xfr-key"
notify = ["127.0.0.2:5481"]

[catalog]
zone = "catalog.invalid"

[[zone]]
origin = "static.test"

[[zone.record]]
name = "www"
a = ["$1"]
TOML
}
primary_config 192.0.2.1 >"$DIR/primary.toml"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$BIN" --config "$DIR/primary.toml" 2>"$DIR/primary.log" &
PRIMARY_PID=$!
E2E_PIDS+=($PRIMARY_PID)
wait_dns 127.0.0.1 5480 static.test
cat >"$DIR/follower.toml" <<TOML
[server]
listen = ["127.0.0.2:5481"]

[http]
listen = "127.0.0.2:9481"

[[tsig-key]]
name = "xfr-key"
secret = "$SECRET"

[follow]
primary = "127.0.0.1:5480"
catalog = "catalog.invalid"
tsig-key = "xfr-key"
cache-dir = "$DIR/follow"
TOML
"$BIN" --config "$DIR/follower.toml" 2>"$DIR/follower.log" &
E2E_PIDS+=($!)

echo "== Prometheus on 127.0.0.1:9490"
cat >"$DIR/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $(realpath deploy/prometheus/alerts.yaml)
scrape_configs:
  - job_name: privatelink-dns
    static_configs:
      - targets: ["127.0.0.1:9480", "127.0.0.2:9481"]
YAML
promtool check config "$DIR/prometheus.yml" >/dev/null
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
    --web.listen-address=127.0.0.1:9490 >"$DIR/prometheus.log" 2>&1 &
E2E_PIDS+=($!)
query() { # PROMQL: the API's JSON answer
    curl -s --max-time 5 --data-urlencode "query=$1" http://127.0.0.1:9490/api/v1/query
}
results() { # PROMQL: how many series it returns (-1 on an error)
    query "$1" | "$PY" -c 'import json,sys
d = json.load(sys.stdin)
print(len(d["data"]["result"]) if d.get("status") == "success" else -1)' 2>/dev/null || echo -1
}
both_up() { [[ $(results 'up{job="privatelink-dns"} == 1') == 2 ]]; }
until_ok "Prometheus scrapes both (up == 1)" 30 both_up

echo "== traffic"
for name in www.static.test nothere.static.test; do dig +short +time=2 +tries=1 @127.0.0.1 -p 5480 "$name" A >/dev/null; done
dig +short +time=2 +tries=1 @127.0.0.1 -p 5480 example.org A >/dev/null || true
dig +tcp +short +time=2 +tries=1 @127.0.0.1 -p 5480 www.static.test AAAA >/dev/null
kdig +time=2 +retry=0 @127.0.0.1 -p 5484 +tls www.static.test A >/dev/null 2>&1 || true
kdig +time=2 +retry=0 @127.0.0.1 -p 5480 -b 127.0.0.3 -y "$KEY" static.test AXFR >/dev/null 2>&1 || true
kdig +time=2 +retry=0 @127.0.0.1 -p 5480 -y "$KEY" static.test AXFR >/dev/null 2>&1 || true
until_ok "the follower serves static.test" 20 dig +short +time=1 +tries=1 @127.0.0.2 -p 5481 www.static.test A
primary_config 192.0.2.2 >"$DIR/primary.toml"
kill -HUP "$PRIMARY_PID"
follower_has_new() { [[ $(dig +short +time=1 +tries=1 @127.0.0.2 -p 5481 www.static.test A) == 192.0.2.2 ]]; }
until_ok "a change reaches the follower (NOTIFY, IXFR)" 10 follower_has_new
for _ in $(seq 1 50); do dig +short +time=1 +tries=1 @127.0.0.2 -p 5481 www.static.test A >/dev/null; done
sleep 5 # five more scrapes and rule evaluations

echo "== scrapes"
targets=$(curl -s --max-time 5 http://127.0.0.1:9490/api/v1/targets)
health=$(echo "$targets" | "$PY" -c 'import json,sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    print(t["scrapeUrl"], t["health"], repr(t["lastError"]))')
expect_eq "both targets healthy, no scrape error" "2" "$(echo "$health" | grep -c " up ''$" || true)"
[[ $(results 'scrape_samples_scraped{job="privatelink-dns"} > 0') == 2 ]] && pass "samples scraped from both" || fail "samples: $(query 'scrape_samples_scraped')"
rules=$(curl -s --max-time 5 http://127.0.0.1:9490/api/v1/rules | "$PY" -c 'import json,sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
print(len(rules), sum(r["health"] == "ok" for r in rules), [r["name"] + ": " + r.get("lastError", "") for r in rules if r["health"] != "ok"])')
expect_eq "every alert rule evaluates without error" "14 14 []" "$rules"

echo "== every metric the rules and the dashboard name exists"
names=$("$PY" - <<'PY'
import json, re, yaml
exprs = [r["expr"] for g in yaml.safe_load(open("deploy/prometheus/alerts.yaml"))["groups"] for r in g["rules"]]
exprs += [t["expr"] for p in json.load(open("deploy/grafana/privatelink-dns.json"))["panels"] for t in p["targets"]]
names = set()
for e in exprs:
    names.update(re.findall(r"\b(privatelink_dns_[a-z_]+)", e))
print("\n".join(sorted(names)))
PY
)
for name in $names; do
    if [[ $(results "count({__name__=\"$name\"})") -ge 1 ]]; then pass "$name"; else fail "$name: not in any scrape"; fi
done

echo "== every dashboard expression returns data"
"$PY" - >"$DIR/dashboard.exprs" <<'PY'
import json
for p in json.load(open("deploy/grafana/privatelink-dns.json"))["panels"]:
    for t in p["targets"]:
        print(p["title"] + "\t" + t["expr"].replace("$__rate_interval", "1m").replace('instance=~"$instance"', 'instance=~".*"'))
PY
while IFS=$'\t' read -r title expr; do
    n=$(results "$expr")
    if [[ $n -ge 1 ]]; then pass "$title: $expr"; else fail "$title: $expr returned $n series"; fi
done <"$DIR/dashboard.exprs"

echo "== alert expressions"
# What a healthy run leaves empty, and why (an alert for an event this test does not cause).
declare -A QUIET=(
    [PrivatelinkDnsDown]="both targets are up"
    [PrivatelinkDnsNotReady]="both are ready"
    [PrivatelinkDnsRemovalHeld]="no discovery removes most addresses"
    [PrivatelinkDnsTargetsWithoutData]="the emulator answers"
    [PrivatelinkDnsDiscoveryFailing]="the emulator answers"
    [PrivatelinkDnsCacheNotWritten]="the cache file is written"
    [PrivatelinkDnsStateNotWritten]="state-dir is written"
    [PrivatelinkDnsNotifyGivenUp]="the follower acknowledges every NOTIFY"
    [PrivatelinkDnsCertificateReloadFailed]="the certificate files do not change"
    [PrivatelinkDnsFollowerBehind]="the follower has the primary's serials"
    [PrivatelinkDnsFollowerOutOfContact]="the primary answers"
    [PrivatelinkDnsFollowerZoneExpired]="the primary answers"
    [PrivatelinkDnsLogLinesDropped]="stderr goes to a file"
)
"$PY" - >"$DIR/alert.exprs" <<'PY'
import yaml
for g in yaml.safe_load(open("deploy/prometheus/alerts.yaml"))["groups"]:
    for r in g["rules"]:
        print(r["alert"] + "\t" + r["expr"])
PY
while IFS=$'\t' read -r alert expr; do
    n=$(results "$expr")
    if [[ $n -ge 1 && -z ${QUIET[$alert]:-} ]]; then
        pass "$alert returns data (the test certificate expires in 2 days)"
    elif [[ $n -eq 0 && -n ${QUIET[$alert]:-} ]]; then
        pass "$alert empty: ${QUIET[$alert]}"
    else
        fail "$alert: $expr returned $n series (listed quiet: ${QUIET[$alert]:-no})"
    fi
done <"$DIR/alert.exprs"

e2e_summary "e2e prometheus"
