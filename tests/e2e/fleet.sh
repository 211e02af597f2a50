#!/usr/bin/env bash
# End to end: fleet mode. One privatelink-dns primary with a catalog and NOTIFY, two
# privatelink-dns followers ([follow], TSIG, cache-dir), as separate processes on
# loopback addresses of a network namespace this script makes:
#
#   127.0.0.1:5470  the primary (HTTP 127.0.0.1:9470), state-dir
#   127.0.0.2:5471  follower 1 (HTTP 127.0.0.2:9471)
#   127.0.0.3:5472  follower 2 (HTTP 127.0.0.3:9472)
#
# Checked: both followers serve the primary's zones with the primary's serials; a
# change made by SIGHUP reaches both within 5 s, and so does a new zone; with the
# primary killed both keep answering; follower 1 restarted while the primary is down
# serves from disk; a zone with a short SOA expire (8 s) goes SERVFAIL on both and
# /readyz names it; the primary restarted with other content (the followers holding
# an older serial) brings both to its data and serial, and the expired zone back.
# A chained AXFR from a follower ([transfer] on it) gives the primary's zone. Needs
# dig, kdig and curl (scripts/test installs them). Tears everything down on exit.
#
# Usage: tests/e2e/fleet.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
e2e_netns fleet "2 3" "$0" "$@"
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
DIR=$(mktemp -d)
SECRET=$(head -c 32 /dev/urandom | base64)

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log; do [[ -f $f ]] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; }; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

primary_config() { # WWW-ADDRESS [EXTRA-ZONE-TOML]
    cat <<TOML
[server]
listen = ["127.0.0.1:5470"]
state-dir = "$DIR/primary-state"

[http]
listen = "127.0.0.1:9470"

[log]
format = "json"

[[tsig-key]]
name = "xfr-key"
secret = "$SECRET"

[transfer]
allow = ["127.0.0.0/8"]
tsig-key = "xfr-key"
notify = ["127.0.0.2:5471", "127.0.0.3:5472"]

[catalog]
zone = "catalog.invalid"

[[zone]]
origin = "a.fleet.test"
soa = { refresh = 3600, retry = 1 }

[[zone.record]]
name = "www"
a = ["$1"]

[[zone]]
origin = "short.fleet.test"
soa = { refresh = 3600, retry = 1, expire = 8 }

[[zone.record]]
name = "www"
a = ["192.0.2.50"]
${2:-}
TOML
}
B_ZONE='
[[zone]]
origin = "b.fleet.test"
soa = { refresh = 3600, retry = 1 }

[[zone.record]]
name = "*"
a = ["192.0.2.60"]'

follower_config() { # N
    cat <<TOML
[server]
listen = ["127.0.0.$1:547$(($1 - 1))"]

[http]
listen = "127.0.0.$1:947$(($1 - 1))"

[log]
format = "json"

[[tsig-key]]
name = "xfr-key"
secret = "$SECRET"

# Others may chain from a follower: its followed zones are transferred under this.
[transfer]
allow = ["127.0.0.0/8"]
tsig-key = "xfr-key"

[follow]
primary = "127.0.0.1:5470"
catalog = "catalog.invalid"
tsig-key = "xfr-key"
cache-dir = "$DIR/follower$1"
TOML
}

start_primary() {
    "$BIN" --config "$DIR/primary.toml" 2>>"$DIR/primary.log" &
    PRIMARY_PID=$!
    E2E_PIDS+=($PRIMARY_PID)
    wait_dns 127.0.0.1 5470 a.fleet.test
}
start_follower() { # N: sets FOLLOWER_PID[N]
    follower_config "$1" >"$DIR/follower$1.toml"
    "$BIN" --config "$DIR/follower$1.toml" 2>>"$DIR/follower$1.log" &
    FOLLOWER_PID[$1]=$!
    E2E_PIDS+=($!)
}
port_of() { echo "547$(($1 - 1))"; }
answer() { # N NAME: the A addresses follower N (0: the primary) answers
    local host=127.0.0.$(($1 == 0 ? 1 : $1)) port
    port=$(port_of $(($1 == 0 ? 1 : $1)))
    dig +time=1 +tries=1 +short @"$host" -p "$port" "$2" A 2>/dev/null | sort | tr '\n' ' '
}
rcode() { # N NAME
    dig +time=1 +tries=1 @"127.0.0.$1" -p "$(port_of "$1")" "$2" A 2>/dev/null | sed -n 's/.*status: \([A-Z]*\).*/\1/p'
}
serial_of() { # N ZONE (N 0: the primary)
    local host=127.0.0.$(($1 == 0 ? 1 : $1))
    dig +time=1 +tries=1 +short @"$host" -p "$(port_of $(($1 == 0 ? 1 : $1)))" "$2" SOA 2>/dev/null | awk '{print $3}'
}
both_answer() { # NAME ADDRESSES
    [[ $(answer 2 "$1") == "$2 " && $(answer 3 "$1") == "$2 " ]]
}
both_rcode() { # NAME RCODE
    [[ $(rcode 2 "$1") == "$2" && $(rcode 3 "$1") == "$2" ]]
}
same_serials() { # ZONE
    local p
    p=$(serial_of 0 "$1")
    [[ -n $p && $(serial_of 2 "$1") == "$p" && $(serial_of 3 "$1") == "$p" ]]
}

echo "== a primary and two followers"
primary_config 192.0.2.1 >"$DIR/primary.toml"
"$BIN" check-config --config "$DIR/primary.toml" >/dev/null
start_primary
follower_config 2 >"$DIR/check.toml"
"$BIN" check-config --config "$DIR/check.toml" >/dev/null
start_follower 2
start_follower 3
until_ok "both followers serve a.fleet.test" 20 both_answer www.a.fleet.test 192.0.2.1
until_ok "... with the primary's serial" 10 same_serials a.fleet.test
expect_eq "the primary's catalog is not served by a follower" "REFUSED" "$(rcode 2 catalog.invalid)"
axfr=$(kdig +time=3 +retry=0 @127.0.0.3 -p 5472 -y "hmac-sha256:xfr-key:$SECRET" a.fleet.test AXFR 2>&1 || true)
expect_contains "a chained AXFR from follower 3 ([transfer] on a follower)" "www.a.fleet.test." "$axfr"
expect_contains "... with the primary's serial" " $(serial_of 0 a.fleet.test) " "$(echo "$axfr" | grep -m1 SOA)"
for n in 2 3; do
    expect_contains "follower $n /readyz" "200" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.$n:947$((n - 1))/readyz")"
done

echo "== changes by SIGHUP"
primary_config 192.0.2.2 >"$DIR/primary.toml"
kill -HUP "$PRIMARY_PID"
until_ok "a changed address reaches both within 5 s (NOTIFY, IXFR)" 5 both_answer www.a.fleet.test 192.0.2.2
until_ok "... with the primary's new serial" 5 same_serials a.fleet.test
if grep '"message":"transfer from the primary"' "$DIR/follower2.log" | grep '"zone":"a.fleet.test."' | grep -q '"kind":"ixfr"'; then
    pass "follower 2's log: a.fleet.test came by IXFR"
else
    fail "no IXFR of a.fleet.test in follower 2's log"
fi
primary_config 192.0.2.2 "$B_ZONE" >"$DIR/primary.toml"
kill -HUP "$PRIMARY_PID"
until_ok "a new zone reaches both within 5 s (catalog)" 5 both_answer x.b.fleet.test 192.0.2.60
until_ok "... with the primary's serial" 5 same_serials b.fleet.test

echo "== the primary down"
{
    kill -9 "$PRIMARY_PID"
    wait "$PRIMARY_PID"
} 2>/dev/null || true
down_at=$(date +%s)
expect_eq "follower 2 still answers" "192.0.2.2 " "$(answer 2 www.a.fleet.test)"
expect_eq "follower 3 still answers" "192.0.2.2 " "$(answer 3 www.a.fleet.test)"
kill "${FOLLOWER_PID[2]}"
wait "${FOLLOWER_PID[2]}" 2>/dev/null || true
start_follower 2
wait_dns 127.0.0.2 5471 a.fleet.test
expect_eq "follower 2 restarted while the primary is down: served from cache-dir" "192.0.2.2 " "$(answer 2 www.a.fleet.test)"
expect_eq "... every zone" "192.0.2.60 " "$(answer 2 y.b.fleet.test)"
until_ok "short.fleet.test (expire 8 s) goes SERVFAIL on both" 20 both_rcode www.short.fleet.test SERVFAIL
echo "     ($(($(date +%s) - down_at)) s after the primary went down)"
expect_eq "a.fleet.test (expire two weeks) still answers" "192.0.2.2 " "$(answer 3 www.a.fleet.test)"
ready=$(curl -s -w ' %{http_code}' http://127.0.0.3:9472/readyz)
expect_contains "/readyz: 503" " 503" "$ready"
expect_contains "/readyz names the expired zone" "short.fleet.test." "$ready"
expect_contains "the metric counts it" "privatelink_dns_follow_zones_expired 1" "$(curl -s http://127.0.0.3:9472/metrics)"

echo "== the primary back, with other content"
held=$(serial_of 2 a.fleet.test)
primary_config 192.0.2.3 "$B_ZONE" >"$DIR/primary.toml"
start_primary
until_ok "both end on the primary's data" 20 both_answer www.a.fleet.test 192.0.2.3
until_ok "... and its serial" 5 same_serials a.fleet.test
new=$(serial_of 0 a.fleet.test)
if [[ -n $held && $new -gt $held ]]; then pass "the serial went up ($held -> $new: state-dir)"; else fail "serial $held -> $new"; fi
until_ok "the expired zone is answered again" 10 both_answer www.short.fleet.test 192.0.2.50
expect_contains "/readyz: 200 again" "200" "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.3:9472/readyz)"

e2e_summary "e2e fleet"
