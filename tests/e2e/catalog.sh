#!/usr/bin/env bash
# End to end: BIND 9.18 (catalog-zones) and Knot DNS 3.2 (catalog-role: interpret)
# consume privatelink-dns's RFC 9432 catalog over TSIG, configured with the catalog
# alone, on loopback addresses of a network namespace this script makes:
#
#   127.0.0.1:5430  privatelink-dns (the primary), zero-config discovery from the EC2
#                   API emulator (moto) on 127.0.0.1:5433
#   127.0.0.2:5431  BIND, a secondary of the catalog only
#   127.0.0.3:5432  Knot DNS, a secondary of the catalog only
#   127.0.0.4       a client allowed to query but not to transfer
#
# Checked: the catalog's content with kdig (version "2", one PTR per member, the
# members are the served zones); every member served by both secondaries; an endpoint
# created in the emulator is served by both within 20 s, and dropped by both within
# 20 s of its deletion; a static zone added by SIGHUP appears on both; the catalog's
# serial does not move when only a member's content does; the catalog reaches the
# secondaries by IXFR; it is refused to a client that may not transfer it, and its
# SOA is answered signed to one that may. Needs named, knotd, kdig, dig and .venv
# (scripts/test installs them). Tears everything down on exit.
#
# Usage: tests/e2e/catalog.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
e2e_netns cat "2 3 4" "$0" "$@"
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PY=$(realpath .venv/bin/python)
REGION=ap-northeast-1
PRIMARY=127.0.0.1
PORT=5430
MOTO_PORT=5433
CATALOG=catalog.invalid
DIR=$(mktemp -d)
chmod 755 "$DIR"
SECRET=$(head -c 32 /dev/urandom | base64)
KEY="hmac-sha256:xfr-key:$SECRET"

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log; do echo "--- $f (last 30 lines)"; tail -n 30 "$f"; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "== EC2 API emulator on 127.0.0.1:$MOTO_PORT"
e2e_moto "$MOTO_PORT" "$DIR/moto.log"
seed() { "$PY" tests/e2e/seed_ec2.py --url "http://127.0.0.1:$MOTO_PORT" "$@"; }
SEED=$(seed setup)
VPC=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vpc"])')
SUBNETS=$(echo "$SEED" | "$PY" -c 'import json,sys; print(" ".join(json.load(sys.stdin)["subnets"][:2]))')
SUBNET3=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["subnets"][2])')
VENDOR_EP=$(echo "$SEED" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["endpoints"]["vendor"])')

echo "== privatelink-dns on $PRIMARY:$PORT, catalog $CATALOG"
cat >"$DIR/privatelink-dns.toml" <<TOML
[server]
listen = ["$PRIMARY:$PORT"]
allow-query = ["127.0.0.0/8"]

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
allow = ["127.0.0.2/32", "127.0.0.3/32"]
tsig-key = "xfr-key"
notify = ["127.0.0.2:5431", "127.0.0.3:5432"]

[catalog]
zone = "$CATALOG"

[[zone]]
origin = "static.test"
soa = { refresh = 3600, retry = 3600 }

[[zone.record]]
name = "www"
a = ["192.0.2.1"]

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

kd() { kdig +time=2 +retry=0 @"$PRIMARY" -p "$PORT" "$@" 2>&1 || true; }
serial() { dig +time=1 +tries=1 @"$PRIMARY" -p "$PORT" "$1" SOA +short | awk '{print $3}'; }
cat_serial() { kd -b 127.0.0.2 -y "$KEY" +short "$CATALOG" SOA | awk 'NF == 7 {print $3}'; }
# The members the catalog lists, as kdig's AXFR shows them, sorted.
members() { kd -b 127.0.0.2 -y "$KEY" "$CATALOG" AXFR | awk '$4 == "PTR" {print $5}' | sort | xargs; }

echo "== the catalog's content (kdig AXFR, signed)"
out=$(kd -b 127.0.0.2 -y "$KEY" "$CATALOG" AXFR)
expect_eq "version TXT \"2\"" "1" "$(echo "$out" | awk -v o="version.$CATALOG." '$1 == o && $4 == "TXT" && $5 == "\"2\""' | wc -l)"
expect_eq "NS invalid." "invalid." "$(echo "$out" | awk -v o="$CATALOG." '$1 == o && $4 == "NS" {print $5; exit}')"
expect_eq "one PTR per member, at <id>.zones.$CATALOG" "$(echo "$out" | awk '$4 == "PTR"' | wc -l)" \
    "$(echo "$out" | awk '$4 == "PTR"' | grep -cE "^[0-9a-f]{16}\.zones\.$CATALOG\.")"
expect_eq "no two members share an ID" "" "$(echo "$out" | awk '$4 == "PTR" {print $1}' | sort | uniq -d)"
EXPECTED="internal.example.com. s3.$REGION.amazonaws.com. ssm.$REGION.amazonaws.com. static.test."
expect_eq "the members are the served zones (configured and discovered)" "$EXPECTED" "$(members)"

echo "== BIND on 127.0.0.2:5431 and Knot on 127.0.0.3:5432, configured with the catalog alone"
mkdir -p "$DIR/bind" "$DIR/knot"
cat >"$DIR/bind/named.conf" <<CONF
key "xfr-key" { algorithm hmac-sha256; secret "$SECRET"; };
options {
    directory "$DIR/bind";
    pid-file "$DIR/bind/named.pid";
    listen-on port 5431 { 127.0.0.2; };
    listen-on-v6 { none; };
    transfer-source 127.0.0.2;
    notify-source 127.0.0.2;
    recursion no;
    notify no;
    dnssec-validation no;
    allow-new-zones yes;
    catalog-zones {
        zone "$CATALOG" default-primaries port $PORT { $PRIMARY key "xfr-key"; } min-update-interval 1;
    };
};
controls { };
zone "$CATALOG" { type secondary; file "catalog.db"; primaries port $PORT { $PRIMARY key "xfr-key"; }; allow-notify { $PRIMARY; }; };
CONF
named-checkconf "$DIR/bind/named.conf"
named -g -n 1 -c "$DIR/bind/named.conf" >"$DIR/bind.log" 2>&1 &
E2E_PIDS+=($!)
cat >"$DIR/knot/knot.conf" <<CONF
server:
  rundir: "$DIR/knot"
  listen: 127.0.0.3@5432
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
  - id: member
    storage: "$DIR/knot"
    master: primary
    acl: notify-from-primary
zone:
  - domain: $CATALOG
    catalog-role: interpret
    catalog-template: member
CONF
knotd -c "$DIR/knot/knot.conf" >"$DIR/knot.log" 2>&1 &
E2E_PIDS+=($!)

declare -A SECONDARY=([bind]="127.0.0.2 5431" [knot]="127.0.0.3 5432")
ask_at() { # bind|knot name type
    local addr port
    read -r addr port <<<"${SECONDARY[$1]}"
    dig +time=1 +tries=1 +norec @"$addr" -p "$port" "$2" "$3" 2>&1
}
serial_at() { ask_at "$1" "$2" SOA | awk '$4 == "SOA" {print $7; exit}'; }
has_serial() { [[ $(serial_at "$1" "$2") == "$3" ]]; }
# serves: the secondary answers for the zone with authority (it has it).
serves() { ask_at "$1" "$2" SOA | grep -q "flags: qr aa"; }
gone() { ! serves "$@" && ask_at "$1" "$2" SOA | grep -qE "status: (REFUSED|SERVFAIL)"; }

echo "== every member reaches both secondaries, at the primary's serial"
for s in bind knot; do
    for z in $EXPECTED; do
        until_ok "$s: $z at serial $(serial "$z")" 30 has_serial "$s" "$z" "$(serial "$z")"
    done
    expect_contains "$s: www.static.test" "192.0.2.1" "$(ask_at "$s" www.static.test A)"
done

echo "== a member's content changes: its serial moves, the catalog's does not"
CAT1=$(cat_serial)
INTERNAL1=$(serial internal.example.com)
seed add-subnet "$VENDOR_EP" "$SUBNET3"
has_new_serial() { [[ $(serial internal.example.com) != "$INTERNAL1" ]]; }
until_ok "internal.example.com changed on the primary" 20 has_new_serial
expect_eq "the catalog's serial is unchanged" "$CAT1" "$(cat_serial)"

echo "== an endpoint created in the emulator: a new member, on both secondaries within 20 s"
# shellcheck disable=SC2086
SNS_EP=$(seed create "$VPC" "com.amazonaws.$REGION.sns" $SUBNETS)
SNS="sns.$REGION.amazonaws.com"
for s in bind knot; do
    until_ok "$s: $SNS served" 20 serves "$s" "$SNS"
done
expect_contains "the catalog lists it" "$SNS." "$(members)"
CAT2=$(cat_serial)
if [[ $CAT2 != "$CAT1" ]]; then pass "the catalog's serial moved with the member list"; else fail "the catalog's serial did not move"; fi
for s in bind knot; do
    expect_eq "$s: $SNS has the endpoint's two addresses" "2" "$(ask_at "$s" "$SNS" A | awk '$4 == "A"' | wc -l)"
done

echo "== the endpoint deleted: dropped by both within 20 s"
seed delete "$SNS_EP"
primary_dropped() { dig +time=1 +tries=1 @"$PRIMARY" -p "$PORT" "$SNS" SOA | grep -q "status: REFUSED"; }
until_ok "the primary no longer serves $SNS" 20 primary_dropped
for s in bind knot; do
    until_ok "$s: $SNS no longer served" 20 gone "$s" "$SNS"
done
expect_eq "the catalog no longer lists it" "$EXPECTED" "$(members)"

echo "== a static zone added by SIGHUP: on both"
cat >>"$DIR/privatelink-dns.toml" <<TOML

[[zone]]
origin = "added.test"

[[zone.record]]
name = "www"
a = ["192.0.2.55"]
TOML
kill -HUP "$PLDNS_PID"
for s in bind knot; do
    until_ok "$s: added.test served" 20 serves "$s" added.test
    expect_contains "$s: www.added.test" "192.0.2.55" "$(ask_at "$s" www.added.test A)"
done

echo "== the catalog reaches the secondaries incrementally, and only them"
for s in bind knot; do
    addr=${SECONDARY[$s]%% *}
    if grep -E "\"client\":\"$addr:[0-9]+\"" "$DIR/privatelink-dns.log" | grep "\"zone\":\"$CATALOG.\"" | grep -q '"incremental":true'; then
        pass "$s took a catalog change by IXFR (our transfer log)"
    else
        fail "$s: no incremental transfer of the catalog in our transfer log"
    fi
done
expect_contains "a catalog query from a client that may not transfer it: REFUSED" "status: REFUSED" \
    "$(dig +time=2 +tries=1 @"$PRIMARY" -p "$PORT" -b 127.0.0.4 "$CATALOG" SOA)"
expect_contains "... even with the key" "status: REFUSED" "$(kd -b 127.0.0.4 -y "$KEY" "$CATALOG" SOA)"
expect_contains "an unsigned catalog query from a secondary: REFUSED (the key is required)" "status: REFUSED" \
    "$(dig +time=2 +tries=1 @"$PRIMARY" -p "$PORT" -b 127.0.0.2 "$CATALOG" SOA)"
out=$(kd -b 127.0.0.2 -y "$KEY" "$CATALOG" SOA)
expect_contains "a signed catalog SOA query from a secondary: answered" "status: NOERROR" "$out"
expect_contains "... and signed (kdig verified it)" "TSIG" "$out"
if grep -q "$SECRET" "$DIR/privatelink-dns.log"; then fail "the secret is in the log"; else pass "the secret never reached the log"; fi

e2e_summary "e2e catalog"
