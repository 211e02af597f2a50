#!/usr/bin/env bash
# End to end with real DNS clients: the built binary, queried with dig and kdig
# over UDP and TCP, IPv4 and IPv6, on loopback only.
#
# Usage: tests/e2e/dig.sh [path/to/privatelink-dns]   (default: target/debug/privatelink-dns)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
BIN=${1:-target/debug/privatelink-dns}
[[ -x $BIN ]] || { echo "no binary at $BIN: run cargo build first" >&2; exit 1; }
trap e2e_cleanup EXIT

echo "== demo config (no --config), 127.0.0.1:5300"
LOG=$(mktemp)
"$BIN" 2>"$LOG" &
E2E_PIDS+=($!)
wait_dns 127.0.0.1 5300 internal.example.com
expect_contains "first log line names the demo" "built-in demo" "$(head -n1 "$LOG")"

D=(dig +time=2 +tries=1 @127.0.0.1 -p 5300)
K=(kdig +timeout=2 +retry=0 @127.0.0.1 -p 5300)

expect_eq "dig A: endpoint IPs" "10.0.1.15 10.0.2.27 10.0.3.44" \
    "$("${D[@]}" internal.example.com A +short | sort | xargs)"
expect_contains "dig A: authoritative, no recursion" "flags: qr aa rd;" \
    "$("${D[@]}" internal.example.com A)"
expect_eq "dig AAAA over TCP" "fd00:ec2::16 fd00:ec2::28" \
    "$("${D[@]}" +tcp api.internal.example.com AAAA +short | sort | xargs)"
out=$("${D[@]}" ssm.ap-northeast-1.amazonaws.com AAAA)
expect_contains "AAAA on an IPv4-only name is NODATA" "status: NOERROR" "$out"
expect_contains "NODATA has no answer" "ANSWER: 0, AUTHORITY: 1" "$out"
expect_contains "NODATA carries the SOA with the negative TTL" \
    "ssm.ap-northeast-1.amazonaws.com. 60 IN SOA" "$(echo "$out" | tr -s ' \t' ' ')"
expect_eq "wildcard A" "10.0.1.30 10.0.2.31" \
    "$("${D[@]}" my-bucket.s3.ap-northeast-1.amazonaws.com A +short | sort | xargs)"
expect_contains "wildcard AAAA is NODATA, not NXDOMAIN" "status: NOERROR" \
    "$("${D[@]}" my-bucket.s3.ap-northeast-1.amazonaws.com AAAA)"
expect_contains "missing name is NXDOMAIN" "status: NXDOMAIN" \
    "$("${D[@]}" nothere.internal.example.com A)"
out=$("${D[@]}" www.example.org A)
expect_contains "out of zone is REFUSED" "status: REFUSED" "$out"
expect_contains "REFUSED is not authoritative" "flags: qr rd;" "$out"
expect_contains "SOA at the apex, AA=1 (what Windows DNS checks)" "flags: qr aa rd;" \
    "$("${D[@]}" s3.ap-northeast-1.amazonaws.com SOA)"
expect_eq "0x20 mixed case survives" "InTeRnAl.ExAmPlE.cOm." \
    "$("${D[@]}" InTeRnAl.ExAmPlE.cOm A +noall +question | awk '{print $1}' | tr -d ';')"
expect_contains "CH version.bind as configured" '"privatelink-dns demo"' \
    "$("${D[@]}" version.bind CH TXT +short)"
expect_contains "EDNS: our payload size" "udp: 1232" \
    "$("${D[@]}" +bufsize=4096 internal.example.com A)"
expect_contains "EDNS version 1 gets BADVERS" "BADVERS" \
    "$("${D[@]}" +edns=1 +noednsneg internal.example.com A)"
expect_contains "AXFR is refused" "Transfer failed" \
    "$("${D[@]}" internal.example.com AXFR 2>&1 || true)"

out=$("${K[@]}" internal.example.com A)
expect_contains "kdig UDP" "status: NOERROR" "$out"
expect_contains "kdig UDP: aa" "Flags: qr aa rd" "$out"
out=$("${K[@]}" +tcp api.internal.example.com AAAA)
expect_contains "kdig TCP AAAA" "fd00:ec2::16" "$out"
expect_contains "kdig NSID and DO are tolerated" "status: NOERROR" \
    "$("${K[@]}" +nsid +dnssec internal.example.com A)"
expect_contains "kdig NOTIFY to the primary is NOTAUTH, as Knot answers" "opcode: NOTIFY; status: NOTAUTH" \
    "$("${K[@]}" internal.example.com NOTIFY 2>&1 || true)"
expect_contains "kdig with a client cookie" "status: NOERROR" \
    "$("${K[@]}" +cookie internal.example.com A)"

echo "== config file on IPv4 and IPv6 loopback, large answers"
CONF=$(mktemp --suffix=.toml)
ips=$(for i in $(seq 1 120); do printf '"198.51.100.%d", ' "$i"; done)
cat >"$CONF" <<TOML
[server]
listen = ["127.0.0.1:5301", "[::1]:5301"]
[[zone]]
origin = "big.test"
[[zone.record]]
name = "@"
a = [${ips%, }]
TOML
if "$BIN" check-config --config "$CONF" >/dev/null; then
    pass "check-config accepts it"
else
    fail "check-config refuses it"
fi
"$BIN" --config "$CONF" 2>/dev/null &
E2E_PIDS+=($!)
wait_dns 127.0.0.1 5301 big.test
expect_eq "IPv6 loopback answers" "120" \
    "$(dig +time=2 +tries=1 @::1 -p 5301 big.test A +short | wc -l | xargs)"
out=$(dig +time=2 +tries=1 @127.0.0.1 -p 5301 big.test A +ignore +bufsize=1232)
expect_contains "UDP answer too large: TC=1" "flags: qr aa tc rd;" "$out"
expect_contains "TC answer keeps OPT" "udp: 1232" "$out"
expect_eq "dig falls back to TCP and gets all 120" "120" \
    "$(dig +time=2 +tries=1 @127.0.0.1 -p 5301 big.test A +short | wc -l | xargs)"

echo "== bad config exits 64 and names file, line and key"
BAD=$(mktemp --suffix=.toml)
printf '[[zone]]\norigin = "example.com"\n[[zone.record]]\nname = "www"\na = ["10.0.0.999"]\n' >"$BAD"
set +e
err=$("$BIN" check-config --config "$BAD" 2>&1)
rc=$?
set -e
expect_eq "exit code 64" "64" "$rc"
expect_contains "names file, line and key" "$BAD:5:" "$err"
expect_contains "names the key" 'zone[0].record[0].a' "$err"

e2e_summary "e2e dig/kdig"
