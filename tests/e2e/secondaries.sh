#!/usr/bin/env bash
# End to end: BIND 9 and Knot DNS as secondaries of privatelink-dns, over TSIG, on
# loopback addresses of a network namespace this script makes:
#
#   127.0.0.1:5420  privatelink-dns (the primary), refreshing from the EC2 API
#                   emulator (moto) on 127.0.0.1:5423
#   127.0.0.2:5421  BIND (named), secondary for every zone
#   127.0.0.3:5422  Knot DNS (knotd), secondary for every zone
#   127.0.0.6:5424  NSD, secondary for every zone
#   127.0.0.4       a client allowed to query but not to transfer
#   127.0.0.5       a client outside allow-query
#
# Checked: the initial transfer; a change by SIGHUP and a change in the emulator
# each reach every secondary by NOTIFY (their SOA refresh is an hour, so nothing
# else can bring it); and with kdig: AXFR without the key, with a wrong secret, an
# unknown key, a skewed clock, from outside `allow`, and queries from outside and
# inside `allow-query`. Needs named, knotd, kdig, dig, faketime and .venv
# (scripts/test installs them). Tears everything down on exit.
#
# Usage: tests/e2e/secondaries.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
# Everything runs in a network namespace of its own, whose loopback carries the five
# addresses: BIND only listens on addresses an interface has.
source tests/e2e/lib.sh
e2e_netns sec "2 3 4 5 6" "$0" "$@"
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PY=$(realpath .venv/bin/python)
REGION=ap-northeast-1
PRIMARY=127.0.0.1
PORT=5420
MOTO_PORT=5423
DIR=$(mktemp -d)
chmod 755 "$DIR"
SECRET=$(head -c 32 /dev/urandom | base64)
WRONG=$(head -c 32 /dev/urandom | base64)
KEY="hmac-sha256:xfr-key:$SECRET"
ZONES=(static.test internal.example.com "ssm.$REGION.amazonaws.com")

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log; do echo "--- $f (last 25 lines)"; tail -n 25 "$f"; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "== EC2 API emulator on 127.0.0.1:$MOTO_PORT"
e2e_moto "$MOTO_PORT" "$DIR/moto.log"
SEED=$("$PY" tests/e2e/seed_ec2.py --url "http://127.0.0.1:$MOTO_PORT" setup)
VPC=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vpc"])')
SUBNET3=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["subnets"][2])')
VENDOR_EP=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["vendor"])')

echo "== privatelink-dns on $PRIMARY:$PORT"
cat >"$DIR/privatelink-dns.toml" <<TOML
[server]
listen = ["$PRIMARY:$PORT"]
allow-query = ["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32", "127.0.0.4/32", "127.0.0.6/32"]

[log]
format = "json"

[aws]
region = "$REGION"
endpoint-url = "http://127.0.0.1:$MOTO_PORT"
refresh-interval = "2s"
call-timeout = "1500ms"
max-backoff = "2s"
removal-hold = "0s"

[[tsig-key]]
name = "xfr-key"
secret-file = "$DIR/xfr-key.secret"

[transfer]
allow = ["127.0.0.2/32", "127.0.0.3/32", "127.0.0.6/32"]
tsig-key = "xfr-key"
notify = ["127.0.0.2:5421", "127.0.0.3:5422", "127.0.0.6:5424"]

[[zone]]
origin = "static.test"
soa = { refresh = 3600, retry = 3600 }

[[zone.record]]
name = "moving"
a = ["192.0.2.1"]

[[zone.record]]
name = "*.wild"
a = ["192.0.2.7"]
aaaa = ["2001:db8::7"]

[[zone]]
origin = "internal.example.com"
soa = { refresh = 3600, retry = 3600 }

[[zone.record]]
name = "@"
vpc-endpoint-tags = { "privatelink-dns/name" = "internal" }

[[discover]]
vpc-ids = ["$VPC"]
TOML
echo "$SECRET" >"$DIR/xfr-key.secret"
"$BIN" check-config --config "$DIR/privatelink-dns.toml" >/dev/null
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$BIN" --config "$DIR/privatelink-dns.toml" 2>"$DIR/privatelink-dns.log" &
PLDNS_PID=$!
E2E_PIDS+=($PLDNS_PID)
wait_dns "$PRIMARY" "$PORT" static.test
if grep -q "$SECRET" "$DIR/privatelink-dns.log"; then fail "the secret is in the log"; else pass "the secret is not in the log"; fi

echo "== BIND secondary on 127.0.0.2:5421, Knot secondary on 127.0.0.3:5422"
mkdir -p "$DIR/bind" "$DIR/knot"
{
    cat <<CONF
key "xfr-key" { algorithm hmac-sha256; secret "$SECRET"; };
options {
    directory "$DIR/bind";
    pid-file "$DIR/bind/named.pid";
    listen-on port 5421 { 127.0.0.2; };
    listen-on-v6 { none; };
    transfer-source 127.0.0.2;
    notify-source 127.0.0.2;
    recursion no;
    notify no;
    dnssec-validation no;
};
controls { };
CONF
    for z in "${ZONES[@]}"; do
        printf 'zone "%s" { type secondary; file "%s.db"; primaries port %s { %s key "xfr-key"; }; allow-notify { %s; }; };\n' \
            "$z" "$z" "$PORT" "$PRIMARY" "$PRIMARY"
    done
} >"$DIR/bind/named.conf"
named-checkconf "$DIR/bind/named.conf"
named -g -n 1 -c "$DIR/bind/named.conf" >"$DIR/bind.log" 2>&1 &
E2E_PIDS+=($!)
{
    cat <<CONF
server:
  rundir: "$DIR/knot"
  listen: 127.0.0.3@5422
database:
  storage: "$DIR/knot"
log:
  - target: stderr
    any: info
key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: $SECRET
remote:
  - id: primary
    address: $PRIMARY@$PORT
    via: 127.0.0.3
    key: xfr-key
acl:
  - id: notify-from-primary
    address: $PRIMARY
    key: xfr-key
    action: notify
template:
  - id: default
    storage: "$DIR/knot"
    master: primary
    acl: notify-from-primary
zone:
CONF
    for z in "${ZONES[@]}"; do printf '  - domain: %s\n' "$z"; done
} >"$DIR/knot/knot.conf"
knotd -c "$DIR/knot/knot.conf" >"$DIR/knot.log" 2>&1 &
E2E_PIDS+=($!)
mkdir -p "$DIR/nsd"
{
    cat <<CONF
server:
    ip-address: 127.0.0.6@5424
    port: 5424
    username: ""
    chroot: ""
    zonesdir: "$DIR/nsd"
    database: ""
    zonelistfile: "$DIR/nsd/zone.list"
    xfrdfile: "$DIR/nsd/xfrd.state"
    xfrdir: "$DIR/nsd"
    pidfile: "$DIR/nsd/nsd.pid"
    logfile: "$DIR/nsd.log"
    verbosity: 2
    do-ip6: no
remote-control:
    control-enable: no
key:
    name: "xfr-key"
    algorithm: hmac-sha256
    secret: "$SECRET"
CONF
    for z in "${ZONES[@]}"; do
        printf 'zone:\n    name: "%s"\n    zonefile: "%s.zone"\n    request-xfr: %s@%s xfr-key\n    allow-notify: %s xfr-key\n    outgoing-interface: 127.0.0.6\n' \
            "$z" "$z" "$PRIMARY" "$PORT" "$PRIMARY"
    done
} >"$DIR/nsd/nsd.conf"
nsd-checkconf "$DIR/nsd/nsd.conf"
nsd -d -c "$DIR/nsd/nsd.conf" >>"$DIR/nsd.log" 2>&1 &
E2E_PIDS+=($!)

declare -A SECONDARY=([bind]="127.0.0.2 5421" [knot]="127.0.0.3 5422" [nsd]="127.0.0.6 5424")
ask_at() { # bind|knot name type
    local addr port
    read -r addr port <<<"${SECONDARY[$1]}"
    dig +time=1 +tries=1 +norec @"$addr" -p "$port" "$2" "$3" 2>&1
}
addrs_at() { ask_at "$@" | awk '$4 == "A" || $4 == "AAAA" {print $5}' | sort | xargs; }
serial_at() { ask_at "$1" "$2" SOA | awk '$4 == "SOA" {print $7; exit}'; }
serial() { dig +time=1 +tries=1 @"$PRIMARY" -p "$PORT" "$1" SOA +short | awk '{print $3}'; }

has_serial() { [[ $(serial_at "$1" "$2") == "$3" ]]; }
has_addrs() { [[ $(addrs_at "$1" "$2" A) == "$3" ]]; }

echo "== initial transfer: each secondary has every zone, at the primary's serial"
for s in bind knot nsd; do
    for z in "${ZONES[@]}"; do
        until_ok "$s: $z at serial $(serial "$z")" 20 has_serial "$s" "$z" "$(serial "$z")"
    done
    expect_eq "$s: moving.static.test" "192.0.2.1" "$(addrs_at "$s" moving.static.test A)"
    expect_eq "$s: wildcard" "192.0.2.7" "$(addrs_at "$s" x.wild.static.test A)"
    expect_eq "$s: internal.example.com from the emulator" "10.0.1.4 10.0.2.4" "$(addrs_at "$s" internal.example.com A)"
    expect_eq "$s: ssm from [[discover]]" "2" "$(addrs_at "$s" "ssm.$REGION.amazonaws.com" A | wc -w)"
done
expect_eq "SOA refresh is an hour: only NOTIFY can bring changes quickly" "3600" \
    "$(dig +short @"$PRIMARY" -p "$PORT" static.test SOA | awk '{print $4}')"

echo "== a change by SIGHUP reaches both secondaries by NOTIFY"
OLD_SERIAL=$(serial static.test)
sed -i 's/"192.0.2.1"]/"192.0.2.2"]/' "$DIR/privatelink-dns.toml"
kill -HUP "$PLDNS_PID"
for s in bind knot nsd; do
    until_ok "$s: moving.static.test is 192.0.2.2" 15 has_addrs "$s" moving.static.test 192.0.2.2
done

echo "== a change in the EC2 API reaches both secondaries by NOTIFY"
"$PY" tests/e2e/seed_ec2.py --url "http://127.0.0.1:$MOTO_PORT" add-subnet "$VENDOR_EP" "$SUBNET3"
for s in bind knot nsd; do
    until_ok "$s: internal.example.com has the new ENI" 20 has_addrs "$s" internal.example.com "10.0.1.4 10.0.2.4 10.0.3.4"
done
if grep -q '"NOTIFY acknowledged"' "$DIR/privatelink-dns.log"; then pass "privatelink-dns logged NOTIFY acknowledgements"; else fail "no NOTIFY acknowledged in the log"; fi
if grep -q "transfer of 'static.test/IN' from $PRIMARY#$PORT: Transfer status: success" "$DIR/bind.log"; then
    pass "BIND logged a successful transfer"
else
    fail "BIND transfer not in its log"
fi

# Before the kdig IXFRs below, which come from BIND's address: an incremental transfer
# of static.test in our transfer log to a secondary's address is that secondary's own.
for s in bind knot nsd; do
    addr=${SECONDARY[$s]%% *}
    if grep -E "\"client\":\"$addr:[0-9]+\"" "$DIR/privatelink-dns.log" | grep '"zone":"static.test."' | grep -q '"incremental":true'; then
        pass "$s took the change to static.test by IXFR (our transfer log, client $addr)"
    else
        fail "$s: no incremental transfer of static.test to $addr in our transfer log"
    fi
done

echo "== IXFR: the condensed difference from a journaled serial"
out=$(kdig +time=2 +retry=0 @"$PRIMARY" -p "$PORT" -b 127.0.0.2 -y "$KEY" "static.test" "IXFR=$OLD_SERIAL" 2>&1 || true)
expect_contains "IXFR=$OLD_SERIAL: the deleted address" "192.0.2.1" "$out"
expect_contains "IXFR=$OLD_SERIAL: the added address" "192.0.2.2" "$out"
expect_eq "IXFR=$OLD_SERIAL: nothing unchanged (no wildcard record)" "" "$(echo "$out" | grep 'wild' || true)"
expect_eq "IXFR=$OLD_SERIAL: 4 SOA + 2 A records" "6" "$(echo "$out" | grep -cE '	(SOA|A)	')"
out=$(kdig +time=2 +retry=0 +notcp @"$PRIMARY" -p "$PORT" -b 127.0.0.2 -y "$KEY" "static.test" "IXFR=$OLD_SERIAL" 2>&1 || true)
expect_contains "IXFR over UDP: the difference too, when it fits" "192.0.2.1" "$out"
if grep -q "static.test.*IXFR, incoming.*finished" "$DIR/knot.log" && ! grep -q "static.test.*fallback to AXFR" "$DIR/knot.log"; then
    pass "Knot logged an incremental transfer (IXFR, no fallback to AXFR)"
else
    fail "Knot did not log an IXFR for static.test"
fi

echo "== kdig against the primary"
kd() { kdig +time=2 +retry=0 @"$PRIMARY" -p "$PORT" "$@" 2>&1 || true; }
out=$(kd -b 127.0.0.2 -y "$KEY" static.test AXFR)
expect_contains "AXFR with the key, from an allowed source: the zone" "192.0.2.2" "$out"
expect_contains "every message signed and verified by kdig" "TSIG" "$out"
out=$(kd -b 127.0.0.2 static.test AXFR)
expect_contains "AXFR without the key: REFUSED" "REFUSED" "$out"
expect_eq "AXFR without the key: no records" "" "$(echo "$out" | grep -E '^static\.test\.' || true)"
expect_contains "AXFR with a wrong secret: BADSIG" "server replied with error 'BADSIG'" "$(kd -b 127.0.0.2 -y "hmac-sha256:xfr-key:$WRONG" static.test AXFR)"
expect_contains "AXFR with an unknown key: BADKEY" "server replied with error 'BADKEY'" "$(kd -b 127.0.0.2 -y "hmac-sha256:other-key:$SECRET" static.test AXFR)"
expect_contains "AXFR with a clock an hour off: BADTIME" "server replied with error 'BADTIME'" "$(faketime -f '+1h' kdig +time=2 +retry=0 @"$PRIMARY" -p "$PORT" -b 127.0.0.2 -y "$KEY" static.test AXFR 2>&1 || true)"
# The exact answer, as dig shows it: the rcode, and the error in the TSIG record.
tsig_answer() {
    local out status error
    out=$(dig +time=2 +tries=1 +norec @"$PRIMARY" -p "$PORT" -b 127.0.0.4 "$@" 2>&1 || true)
    status=$(echo "$out" | grep -oE 'status: [A-Z]+' | head -1 | cut -d' ' -f2)
    error=$(echo "$out" | grep -E 'ANY[[:space:]]+TSIG' | grep -oE '(NOERROR|BADSIG|BADKEY|BADTIME)' | head -1)
    local verified=verified
    if echo "$out" | grep -q "could not be validated\|Couldn't verify"; then verified=unverified; fi
    echo "$status $error $verified"
}
expect_eq "SOA query with a wrong secret: NOTAUTH, TSIG error BADSIG, unsigned" "NOTAUTH BADSIG unverified" "$(tsig_answer -y "hmac-sha256:xfr-key:$WRONG" static.test SOA)"
expect_eq "SOA query with an unknown key: NOTAUTH, TSIG error BADKEY, unsigned" "NOTAUTH BADKEY unverified" "$(tsig_answer -y "hmac-sha256:other-key:$SECRET" static.test SOA)"
expect_eq "SOA query with the key: NOERROR, signed" "NOERROR NOERROR verified" "$(tsig_answer -y "$KEY" static.test SOA)"
expect_eq "a signed NOTIFY to the primary: NOTAUTH, signed" "NOTAUTH NOERROR verified" "$(tsig_answer +opcode=notify -y "$KEY" static.test SOA)"
expect_contains "AXFR from outside allow (127.0.0.4), with the key: REFUSED" "REFUSED" "$(kd -b 127.0.0.4 -y "$KEY" static.test AXFR)"
expect_contains "a query from outside allow-query (127.0.0.5): REFUSED" "status: REFUSED" "$(dig +time=2 +tries=1 @"$PRIMARY" -p "$PORT" -b 127.0.0.5 moving.static.test A)"
expect_contains "... with EDE 18 (Prohibited)" "EDE: 18" "$(dig +time=2 +tries=1 @"$PRIMARY" -p "$PORT" -b 127.0.0.5 moving.static.test A)"
expect_contains "a query from inside allow-query (127.0.0.4): answered" "192.0.2.2" "$(dig +time=2 +tries=1 +short @"$PRIMARY" -p "$PORT" -b 127.0.0.4 moving.static.test A)"
expect_contains "a signed query: a signed answer" "TSIG" "$(kd -b 127.0.0.4 -y "$KEY" moving.static.test A)"
expect_contains "AXFR over UDP: NOTIMP, as Knot" "NOTIMP" "$(kd -b 127.0.0.2 -y "$KEY" +notcp static.test AXFR)"
if grep -q "$SECRET" "$DIR/privatelink-dns.log"; then fail "the secret is in the log"; else pass "the secret never reached the log"; fi

e2e_summary "e2e secondaries"
