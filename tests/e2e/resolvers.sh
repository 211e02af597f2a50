#!/usr/bin/env bash
# End to end with real on-prem resolvers, on two network namespaces this script makes:
#
#   vpc     10.53.0.1  privatelink-dns on port 53, and the EC2 API emulator (moto,
#                      127.0.0.1:5000 inside the namespace) it refreshes from
#   onprem  10.53.0.2  Unbound (stub-zone :5301, forward-zone :5302), BIND (static-stub
#                      :5303, type forward :5304), PowerDNS Recursor (forward-zones
#                      :5305), Knot Resolver (policy.STUB :5306, policy.FORWARD
#                      :5307), dnsmasq (server=/zone/ :5308), and the dig client
#
# Every resolver forwards exactly the zones privatelink-dns serves: an explicit zone
# (internal.example.com), zero-config private DNS names (ssm.<region>.amazonaws.com,
# s3.<region>.amazonaws.com with *.s3.<region>.amazonaws.com). Scenarios, each through
# every resolver: A/AAAA and NODATA-then-A (plain and wildcard names), an empty
# non-terminal, NXDOMAIN cached no longer than the SOA minimum, a large answer over TCP,
# a change after SIGHUP, a subnet added to an endpoint, the emulator stopped, and SOA
# AA=1 at every apex. Each resolver runs with the config docs/forwarders.md gives, plus
# an outgoing address of its own (10.53.0.11-18), so our query log shows that each one
# retried over TCP and asked again once its cache expired.
# Needs root, iproute2, unbound, bind9, pdns-recursor, knot-resolver, dnsmasq-base,
# dnsutils and .venv (scripts/test installs them). Tears everything down on exit.
#
# Usage: tests/e2e/resolvers.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PY=$(realpath .venv/bin/python)
REGION=ap-northeast-1
VPC_NS=pldns-vpc-$$
ONPREM_NS=pldns-onprem-$$
VPC_IP=10.53.0.1
ONPREM_IP=10.53.0.2
DIR=$(mktemp -d)
chmod 755 "$DIR"

cleanup() {
    local ns pid
    for ns in "$VPC_NS" "$ONPREM_NS"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    sleep 0.5
    for ns in "$VPC_NS" "$ONPREM_NS"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [[ $E2E_FAILS -gt 0 ]]; then
        echo "--- privatelink-dns log (last 30 lines)"; tail -n 30 "$DIR/privatelink-dns.log" 2>/dev/null || true
        for f in "$DIR"/*.err; do echo "--- $f"; tail -n 15 "$f"; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

in_vpc() { ip netns exec "$VPC_NS" "$@"; }
in_onprem() { ip netns exec "$ONPREM_NS" "$@"; }

echo "== network: namespaces $VPC_NS and $ONPREM_NS, veth $VPC_IP <-> $ONPREM_IP"
ip netns add "$VPC_NS"
ip netns add "$ONPREM_NS"
ip link add "pv$$" type veth peer name "po$$"
ip link set "pv$$" netns "$VPC_NS"
ip link set "po$$" netns "$ONPREM_NS"
in_vpc ip addr add "$VPC_IP/24" dev "pv$$"
in_onprem ip addr add "$ONPREM_IP/24" dev "po$$"
# Each resolver asks privatelink-dns from an address of its own, so our query log
# tells them apart.
declare -A SRC=([unbound-stub]=10.53.0.11 [unbound-forward]=10.53.0.12 [bind-static-stub]=10.53.0.13
    [bind-forward]=10.53.0.14 [pdns-recursor]=10.53.0.15 [kresd-stub]=10.53.0.16 [kresd-forward]=10.53.0.17
    [dnsmasq]=10.53.0.18)
for src in "${SRC[@]}"; do in_onprem ip addr add "$src/24" dev "po$$"; done
for ns in "$VPC_NS" "$ONPREM_NS"; do
    ip netns exec "$ns" ip link set lo up
done
in_vpc ip link set "pv$$" up
in_onprem ip link set "po$$" up

echo "== vpc: EC2 API emulator"
in_vpc "$PY" tests/support/fake_ec2.py -H 127.0.0.1 -p 5000 >"$DIR/moto.err" 2>&1 &
for _ in $(seq 1 300); do
    in_vpc "$PY" -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:5000/moto-api/", timeout=1)' 2>/dev/null && break
    sleep 0.1
done
SEED=$(in_vpc "$PY" tests/e2e/seed_ec2.py --url http://127.0.0.1:5000 setup)
VPC=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vpc"])')
SUBNET3=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["subnets"][2])')
VENDOR_EP=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["vendor"])')
pass "emulator seeded: $VPC, vendor endpoint $VENDOR_EP"

echo "== vpc: privatelink-dns on $VPC_IP:53"
big=$(for i in $(seq 1 100); do printf '"198.51.100.%d", ' "$i"; done)
cat >"$DIR/privatelink-dns.toml" <<TOML
[server]
listen = ["$VPC_IP:53"]

[log]
format = "json"
queries = true

[aws]
region = "$REGION"
endpoint-url = "http://127.0.0.1:5000"
refresh-interval = "2s"
call-timeout = "1500ms"
max-backoff = "2s"

[[zone]]
origin = "internal.example.com"
ttl = 5
soa = { minimum = 5, ttl = 30 }

[[zone.record]]
name = "@"
vpc-endpoint-tags = { "privatelink-dns/name" = "internal" }

[[zone.record]]
name = "big"
a = [${big%, }]

# ent.internal.example.com exists only as the parent of this name: NODATA, not NXDOMAIN.
[[zone.record]]
name = "host.ent"
a = ["192.0.2.10"]

# Changed by the SIGHUP scenario.
[[zone.record]]
name = "moving"
a = ["192.0.2.1"]

[[discover]]
vpc-ids = ["$VPC"]
ttl = 5
TOML
"$BIN" check-config --config "$DIR/privatelink-dns.toml" >/dev/null
# Not through in_vpc: $! must be the daemon (ip netns exec and env exec it), for SIGHUP.
ip netns exec "$VPC_NS" env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$BIN" --config "$DIR/privatelink-dns.toml" 2>"$DIR/privatelink-dns.log" &
PLDNS_PID=$!
for _ in $(seq 1 100); do
    in_onprem dig +time=1 +tries=1 @"$VPC_IP" internal.example.com SOA +short 2>/dev/null | grep -q . && break
    sleep 0.2
done

ZONES=(internal.example.com ssm.$REGION.amazonaws.com s3.$REGION.amazonaws.com)

echo "== onprem: Unbound (stub-zone :5301, forward-zone :5302), BIND (static-stub :5303, forward :5304)"
unbound_conf() { # name port kind
    local name=$1 port=$2 kind=$3 z
    {
        cat <<CONF
server:
    interface: $ONPREM_IP@$port
    port: $port
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$DIR"
    pidfile: "$DIR/$name.pid"
    use-syslog: no
    logfile: "$DIR/$name.err"
    verbosity: 1
    do-ip6: no
    access-control: 10.53.0.0/24 allow
    module-config: "validator iterator"
    outgoing-interface: ${SRC[$name]}
CONF
        for z in "${ZONES[@]}"; do echo "    domain-insecure: \"$z\""; done
        for z in "${ZONES[@]}"; do
            if [[ $kind == stub ]]; then
                printf 'stub-zone:\n    name: "%s"\n    stub-addr: %s\n' "$z" "$VPC_IP"
            else
                printf 'forward-zone:\n    name: "%s"\n    forward-addr: %s\n' "$z" "$VPC_IP"
            fi
        done
    } >"$DIR/$name.conf"
    unbound-checkconf "$DIR/$name.conf" >/dev/null
}
bind_conf() { # name port kind
    local name=$1 port=$2 kind=$3 z
    mkdir -p "$DIR/$name"
    {
        cat <<CONF
options {
    directory "$DIR/$name";
    pid-file "$DIR/$name/named.pid";
    listen-on port $port { $ONPREM_IP; };
    listen-on-v6 { none; };
    recursion yes;
    allow-query { any; };
    allow-recursion { any; };
    dnssec-validation auto;
    query-source address ${SRC[$name]};
CONF
        printf '    validate-except {'; for z in "${ZONES[@]}"; do printf ' "%s";' "$z"; done; printf ' };\n'
        echo "};"
        echo "controls { };"
        for z in "${ZONES[@]}"; do
            if [[ $kind == static-stub ]]; then
                printf 'zone "%s" { type static-stub; server-addresses { %s; }; };\n' "$z" "$VPC_IP"
            else
                printf 'zone "%s" { type forward; forward only; forwarders { %s; }; };\n' "$z" "$VPC_IP"
            fi
        done
    } >"$DIR/$name.conf"
    named-checkconf "$DIR/$name.conf"
}
pdns_conf() { # name port
    local name=$1 port=$2 z fwd=()
    mkdir -p "$DIR/$name"
    for z in "${ZONES[@]}"; do fwd+=("$z=$VPC_IP"); done
    cat >"$DIR/$name/recursor.conf" <<CONF
local-address=$ONPREM_IP
local-port=$port
query-local-address=${SRC[$name]}
allow-from=10.53.0.0/24
socket-dir=$DIR/$name
daemon=no
write-pid=no
disable-syslog=yes
log-common-errors=yes
forward-zones=$(IFS=,; echo "${fwd[*]}")
lua-config-file=$DIR/$name/recursor.lua
packetcache-servfail-ttl=5
server-down-throttle-time=5
CONF
    for z in "${ZONES[@]}"; do echo "addNTA(\"$z\", \"served by privatelink-dns\")"; done >"$DIR/$name/recursor.lua"
}
kresd_conf() { # name port STUB|FORWARD
    local name=$1 port=$2 kind=$3 z list=""
    mkdir -p "$DIR/$name"
    for z in "${ZONES[@]}"; do list+="'$z', "; done
    {
        echo "net.listen('$ONPREM_IP', $port, { kind = 'dns' })"
        echo "net.ipv6 = false"
        echo "net.outgoing_v4('${SRC[$name]}')"
        echo "cache.open(10 * MB, 'lmdb://$DIR/$name/cache')"
        [[ $kind == FORWARD ]] && echo "trust_anchors.set_insecure({ ${list%, } })"
        echo "policy.add(policy.suffix(policy.$kind({ '$VPC_IP' }), policy.todnames({ ${list%, } })))"
    } >"$DIR/$name/config"
}
dnsmasq_conf() { # name port
    local name=$1 port=$2 z
    {
        cat <<CONF
port=$port
listen-address=$ONPREM_IP
bind-interfaces
no-resolv
no-hosts
user=root
pid-file=$DIR/$name.pid
log-facility=$DIR/$name.err
stop-dns-rebind
CONF
        for z in "${ZONES[@]}"; do echo "server=/$z/$VPC_IP@${SRC[$name]}"; done
        printf 'rebind-domain-ok='; for z in "${ZONES[@]}"; do printf '/%s' "$z"; done; printf '/\n'
    } >"$DIR/$name.conf"
    dnsmasq --test --conf-file="$DIR/$name.conf" >/dev/null 2>&1
}
unbound_conf unbound-stub 5301 stub
unbound_conf unbound-forward 5302 forward
bind_conf bind-static-stub 5303 static-stub
bind_conf bind-forward 5304 forward
in_onprem unbound -d -c "$DIR/unbound-stub.conf" 2>>"$DIR/unbound-stub.err" &
in_onprem unbound -d -c "$DIR/unbound-forward.conf" 2>>"$DIR/unbound-forward.err" &
in_onprem named -g -n 1 -c "$DIR/bind-static-stub.conf" >"$DIR/bind-static-stub.err" 2>&1 &
in_onprem named -g -n 1 -c "$DIR/bind-forward.conf" >"$DIR/bind-forward.err" 2>&1 &
pdns_conf pdns-recursor 5305
kresd_conf kresd-stub 5306 STUB
kresd_conf kresd-forward 5307 FORWARD
dnsmasq_conf dnsmasq 5308
in_onprem pdns_recursor --config-dir="$DIR/pdns-recursor" >"$DIR/pdns-recursor.err" 2>&1 &
in_onprem kresd -n -c "$DIR/kresd-stub/config" "$DIR/kresd-stub" >"$DIR/kresd-stub.err" 2>&1 &
in_onprem kresd -n -c "$DIR/kresd-forward/config" "$DIR/kresd-forward" >"$DIR/kresd-forward.err" 2>&1 &
in_onprem dnsmasq --keep-in-foreground --conf-file="$DIR/dnsmasq.conf" 2>>"$DIR/dnsmasq.err" &

declare -A RESOLVERS=([unbound-stub]=5301 [unbound-forward]=5302 [bind-static-stub]=5303 [bind-forward]=5304
    [pdns-recursor]=5305 [kresd-stub]=5306 [kresd-forward]=5307 [dnsmasq]=5308)
NAMES=(unbound-stub unbound-forward bind-static-stub bind-forward pdns-recursor kresd-stub kresd-forward dnsmasq)
ask() { # resolver qname qtype [dig options...]
    local port=${RESOLVERS[$1]} name=$2 type=$3
    shift 3
    in_onprem dig +time=3 +tries=2 @"$ONPREM_IP" -p "$port" "$name" "$type" "$@" 2>&1
}
addrs() { ask "$@" +short | grep -E '^[0-9a-f.:]+$' | sort | xargs; }
status() { ask "$@" | sed -n 's/.*status: \([A-Z]*\).*/\1/p' | head -n1; }

for r in "${NAMES[@]}"; do
    for _ in $(seq 1 100); do
        [[ $(status "$r" internal.example.com SOA) == NOERROR ]] && break
        sleep 0.2
    done
done

echo "== SOA at every apex, asked directly: AA=1 (what Windows DNS checks)"
for z in "${ZONES[@]}"; do
    expect_contains "SOA $z: authoritative" "flags: qr aa" "$(in_onprem dig +norec @"$VPC_IP" "$z" SOA)"
done

echo "== AAAA first on IPv4-only names: NODATA, and the A query after it still works"
for r in "${NAMES[@]}"; do
    # ENIs take addresses in creation order: vendor .4, ssm .5, s3 .6 in each subnet.
    for pair in "ssm.$REGION.amazonaws.com=10.0.1.5 10.0.2.5" "my-bucket.s3.$REGION.amazonaws.com=10.0.1.6 10.0.2.6"; do
        name=${pair%%=*} want=${pair#*=}
        expect_eq "$r: AAAA $name is NODATA" "NOERROR" "$(status "$r" "$name" AAAA)"
        expect_eq "$r: AAAA $name has no answer" "" "$(addrs "$r" "$name" AAAA)"
        expect_eq "$r: A $name after AAAA" "$want" "$(addrs "$r" "$name" A)"
    done
    expect_eq "$r: A internal.example.com (explicit zone, tag-selected endpoint)" "10.0.1.4 10.0.2.4" \
        "$(addrs "$r" internal.example.com A)"
    expect_eq "$r: A s3 apex" "2" "$(addrs "$r" s3.$REGION.amazonaws.com A | wc -w)"
done

echo "== empty non-terminal: NODATA, and the name below it still resolves"
for r in "${NAMES[@]}"; do
    expect_eq "$r: A ent.internal.example.com is NODATA" "NOERROR" "$(status "$r" ent.internal.example.com A)"
    expect_eq "$r: A ent.internal.example.com has no answer" "" "$(addrs "$r" ent.internal.example.com A)"
    expect_eq "$r: A host.ent.internal.example.com" "192.0.2.10" "$(addrs "$r" host.ent.internal.example.com A)"
done

echo "== large answer: 100 A records, truncated over UDP, completed over TCP by the resolver"
for r in "${NAMES[@]}"; do
    expect_eq "$r: 100 addresses for big.internal.example.com" "100" \
        "$(ask "$r" big.internal.example.com A +tcp +short | grep -c '^198\.51\.100\.')"
done
in_onprem dig +norec +ignore +bufsize=1232 @"$VPC_IP" big.internal.example.com A >"$DIR/big.txt" 2>&1
expect_contains "privatelink-dns truncates it over UDP" "flags: qr aa tc" "$(cat "$DIR/big.txt")"
# Our query log, per resolver (by its source address): how many queries for NAME
# (-i: Knot Resolver randomizes the case of the names it asks, 0x20), over TRANSPORT
# when given.
queries_from() { # resolver name [transport]
    grep "\"client\":\"${SRC[$1]}:" "$DIR/privatelink-dns.log" | grep -i "\"name\":\"$2\"" \
        | grep -c "\"transport\":\"${3:-[A-Za-z]*}\"" || true
}
for r in "${NAMES[@]}"; do
    n=$(queries_from "$r" big.internal.example.com. Tcp)
    if [[ $n -ge 1 ]]; then pass "$r retried over TCP ($n TCP queries from ${SRC[$r]})"; else fail "$r: no TCP query from ${SRC[$r]}"; fi
done

echo "== NXDOMAIN is cached no longer than the SOA minimum (5 s)"
for r in "${NAMES[@]}"; do
    name="nx-$r.internal.example.com"
    expect_eq "$r: $name is NXDOMAIN" "NXDOMAIN" "$(status "$r" "$name" A)"
    ttl=$(ask "$r" "$name" A | awk '$4 == "SOA" {print $2; exit}')
    if [[ -n $ttl && $ttl -le 5 ]]; then pass "$r: cached negative TTL $ttl <= 5"; else fail "$r: cached negative TTL [$ttl]"; fi
done
count() { grep -ci "\"name\":\"$1\"" "$DIR/privatelink-dns.log" || true; }
before=$(for r in "${NAMES[@]}"; do count "nx-$r.internal.example.com."; done | xargs)
sleep 6.5
for r in "${NAMES[@]}"; do status "$r" "nx-$r.internal.example.com" A >/dev/null; done
sleep 0.5
after=$(for r in "${NAMES[@]}"; do count "nx-$r.internal.example.com."; done | xargs)
read -ra b <<<"$before"; read -ra a <<<"$after"
for i in "${!NAMES[@]}"; do
    if [[ ${a[$i]} -gt ${b[$i]} ]]; then
        pass "${NAMES[$i]}: asked privatelink-dns again after the SOA minimum"
    else
        fail "${NAMES[$i]}: still cached after the SOA minimum (${b[$i]} -> ${a[$i]} queries)"
    fi
done

echo "== a config change after SIGHUP reaches every resolver within the record TTL"
for r in "${NAMES[@]}"; do expect_eq "$r: A moving before" "192.0.2.1" "$(addrs "$r" moving.internal.example.com A)"; done
sed -i 's/"192.0.2.1"]/"192.0.2.2"]/' "$DIR/privatelink-dns.toml"
kill -HUP "$PLDNS_PID"
start=$(date +%s.%N)
for r in "${NAMES[@]}"; do
    got=""
    for _ in $(seq 1 60); do
        got=$(addrs "$r" moving.internal.example.com A)
        [[ $got == 192.0.2.2 ]] && break
        sleep 0.25
    done
    took=$(echo "$(date +%s.%N) - $start" | bc)
    if [[ $got == 192.0.2.2 ]]; then pass "$r: new address after ${took}s"; else fail "$r: [$got] after ${took}s"; fi
done

echo "== a subnet is added to the vendor endpoint: the resolvers follow within refresh + TTL"
in_vpc "$PY" tests/e2e/seed_ec2.py --url http://127.0.0.1:5000 add-subnet "$VENDOR_EP" "$SUBNET3"
start=$(date +%s.%N)
for r in "${NAMES[@]}"; do
    got=""
    for _ in $(seq 1 80); do
        got=$(addrs "$r" internal.example.com A)
        [[ $got == "10.0.1.4 10.0.2.4 10.0.3.4" ]] && break
        sleep 0.25
    done
    took=$(echo "$(date +%s.%N) - $start" | bc)
    # The verdict is the event (within the 20 s the loop allows, for refresh-interval
    # 2 s + record TTL 5 s); the time is reported, not judged.
    if [[ $got == "10.0.1.4 10.0.2.4 10.0.3.4" ]]; then
        pass "$r: new ENI address after ${took}s"
    else
        fail "$r: [$got] after ${took}s"
    fi
done

echo "== the EC2 API emulator is stopped: the resolvers keep getting the same answers"
for pid in $(in_vpc pgrep -f fake_ec2.py); do kill "$pid"; done
declare -A ASKED=()
for r in "${NAMES[@]}"; do ASKED[$r]=$(queries_from "$r" internal.example.com.); done
sleep 7   # past the record TTL: the resolvers must ask privatelink-dns again
for r in "${NAMES[@]}"; do
    expect_eq "$r: same answer with the emulator down" "10.0.1.4 10.0.2.4 10.0.3.4" "$(addrs "$r" internal.example.com A)"
    expect_eq "$r: zero-config name still answers" "2" "$(addrs "$r" ssm.$REGION.amazonaws.com A | wc -w)"
done
for r in "${NAMES[@]}"; do
    n=$(queries_from "$r" internal.example.com.)
    if [[ $n -gt ${ASKED[$r]} ]]; then
        pass "$r asked privatelink-dns again, not its cache (${ASKED[$r]} -> $n queries from ${SRC[$r]})"
    else
        fail "$r: no new query from ${SRC[$r]} (${ASKED[$r]} -> $n): answered from its cache"
    fi
done
if grep -q '"refresh failed; serving the previous snapshot"' "$DIR/privatelink-dns.log"; then
    pass "privatelink-dns logged the failure"
else
    fail "no refresh failure logged"
fi
# A warning when refreshes start failing and when the reason changes (killed mid-request,
# the first attempt may fail otherwise than the next ones), never one per attempt: the
# warnings' reasons, in order, never repeat one after the other.
reasons=$(grep '"refresh failed; serving the previous snapshot"' "$DIR/privatelink-dns.log" | grep -oE '"reason":"[a-z_]+"' || true)
expect_eq "logged once per reason, not once per attempt ($(echo $reasons))" \
    "$(echo "$reasons" | uniq | wc -l)" "$(echo "$reasons" | wc -l)"

e2e_summary "e2e resolvers"
