#!/usr/bin/env bash
# End to end, the real binary on 127.0.0.1 only: the transfer engine at its limits.
#
#   - a 12 MB AXFR read at 128 KiB/s through a 16 KiB receive window completes, with a
#     2 s tcp-idle-timeout (the timeout measures progress, not each write);
#   - a client that stops reading is cut, and that transfer is counted as failed;
#   - a NOTIFY target that answers REFUSED is never counted as acknowledged: it is
#     `rejected`, retried, then `given_up`;
#   - after a burst of reloads has run the serial ahead of the clock, a restart with
#     other content serves a higher serial than any served before (state-dir).
#
# Usage: tests/e2e/transfer-limits.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
PORT=5440
HTTP=5441
REFUSER=5442
DIR=$(mktemp -d)
ZONE=big.test

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log; do echo "--- $f (last 20 lines)"; tail -n 20 "$f"; done
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

# 280,000 names with two A records each: 560,000 records, about 12.3 MB of AXFR.
python3 - "$DIR/$ZONE.zone" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("$TTL 60\n")
    for i in range(280_000):
        f.write(f"host-{i:06d} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n")
        f.write(f"host-{i:06d} IN A 10.{128 + (i >> 16 & 127)}.{i >> 8 & 255}.{i & 255}\n")
PY

BIG=1
config() { # ADDRESS: small.test's; the big zone while BIG=1
    cat <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
tcp-idle-timeout = "2s"
state-dir = "$DIR/state"

[http]
listen = "127.0.0.1:$HTTP"

[log]
format = "json"

[transfer]
allow = ["127.0.0.1/32"]

$( ((BIG)) && printf '[[zone]]\norigin = "%s"\nfile = "%s.zone"\n' "$ZONE" "$ZONE")

[[zone]]
origin = "small.test"
transfer = { allow = ["127.0.0.1/32"], notify = ["127.0.0.1:$REFUSER"] }

[[zone.record]]
name = "www"
a = ["$1"]
TOML
}
config 192.0.2.1 >"$DIR/privatelink-dns.toml"
start() {
    "$BIN" --config "$DIR/privatelink-dns.toml" 2>>"$DIR/privatelink-dns.log" &
    PLDNS_PID=$!
    E2E_PIDS+=($PLDNS_PID)
    wait_dns 127.0.0.1 "$PORT" small.test
    for _ in $(seq 1 600); do
        ((BIG)) || return 0
        [[ -n $(dig +time=1 +tries=1 +short @127.0.0.1 -p "$PORT" "$ZONE" SOA) ]] && return 0
        sleep 0.1
    done
}
serial() { dig +time=1 +tries=1 +short @127.0.0.1 -p "$PORT" small.test SOA | awk '{print $3}'; }
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

python3 tests/e2e/xfr_client.py refuser "$REFUSER" >"$DIR/refuser.log" 2>&1 &
E2E_PIDS+=($!)
echo "== privatelink-dns on 127.0.0.1:$PORT with a 560,000-record zone"
start

echo "== a 12 MB AXFR read at 128 KiB/s completes (tcp-idle-timeout 2s)"
full=$(kdig +time=10 +retry=0 @127.0.0.1 -p "$PORT" "$ZONE" AXFR +noall +answer | grep -c "IN" || true)
out=$(python3 tests/e2e/xfr_client.py slow-axfr "$PORT" "$ZONE" 131072)
echo "  $out"
field() { echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
expect_eq "the slow read ends with the closing SOA, no error" "6 None" "$(field last_type) $(field error)"
expect_eq "... and has every record kdig got at full speed ($full)" "$full" "$(field records)"
if (($(field bytes) > 12000000)); then pass "it was over 12 MB ($(field bytes) bytes, $(field seconds) s)"; else fail "only $(field bytes) bytes"; fi
expect_eq "our transfer log: both AXFRs (kdig's, the slow one) complete" "2" \
    "$(grep '"message":"transfer"' "$DIR/privatelink-dns.log" | grep "\"zone\":\"$ZONE.\"" | grep -c '"complete":true')"

echo "== a client that stops reading is cut"
before=$(metric 'privatelink_dns_transfers_total{type="AXFR",outcome="failed"}')
python3 - "$PORT" "$ZONE" <<'PY' &
import socket, struct, sys, time
port, zone = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
q = struct.pack(">HHHHHH", 7, 0, 1, 0, 0, 0) + b"".join(bytes([len(l)]) + l.encode() for l in zone.split(".")) + b"\0" + struct.pack(">HH", 252, 1)
s.sendall(struct.pack(">H", len(q)) + q)
time.sleep(15)  # never reads
PY
STALL=$!
E2E_PIDS+=($STALL)
stalled() { [[ $(metric 'privatelink_dns_transfers_total{type="AXFR",outcome="failed"}') != "$before" ]]; }
for _ in $(seq 1 100); do stalled && break; sleep 0.1; done
if stalled; then pass "the stalled transfer was cut and counted as failed"; else fail "the stalled transfer was not cut within 10 s"; fi
kill "$STALL" 2>/dev/null || true

echo "== a NOTIFY target that answers REFUSED is not an acknowledgement"
config 192.0.2.2 >"$DIR/privatelink-dns.toml"
kill -HUP "$PLDNS_PID"
refused() { [[ $(grep -c "NOTIFY refused" "$DIR/refuser.log") -ge 2 ]]; }
for _ in $(seq 1 100); do refused && break; sleep 0.1; done
expect_eq "the target refused at least twice (retried)" "yes" "$(refused && echo yes || echo no)"
expect_eq "acknowledged: none" "" "$(metric 'privatelink_dns_notify_total{zone="small.test.",result="acknowledged"}')"
rejected=$(metric 'privatelink_dns_notify_total{zone="small.test.",result="rejected"}')
if [[ -n $rejected ]] && (($(echo "$rejected >= 2" | bc))); then pass "counted as rejected ($rejected)"; else fail "rejected is [$rejected]"; fi

echo "== a burst of reloads, then a restart with other content: the serial is higher"
# Without the big zone: a reload of it takes a second in a debug build.
kill "$PLDNS_PID"
wait "$PLDNS_PID" 2>/dev/null || true
BIG=0
config 192.0.2.3 >"$DIR/privatelink-dns.toml"
start
highest=$(serial)
for i in $(seq 10 39); do
    config "192.0.2.$i" >"$DIR/privatelink-dns.toml"
    kill -HUP "$PLDNS_PID"
    for _ in $(seq 1 50); do
        [[ $(dig +time=1 +tries=1 +short @127.0.0.1 -p "$PORT" www.small.test A) == "192.0.2.$i" ]] && break
        sleep 0.05
    done
    s=$(serial)
    ((s > highest)) && highest=$s
done
now=$(date +%s)
if ((highest > now + 10)); then pass "30 reloads ran the serial ahead of the clock ($highest, clock $now)"; else fail "the serial $highest is not ahead of the clock $now"; fi
kill "$PLDNS_PID"
wait "$PLDNS_PID" 2>/dev/null || true
config 192.0.2.250 >"$DIR/privatelink-dns.toml"
start
after=$(serial)
if ((after > highest)); then pass "after the restart: $after > $highest"; else fail "after the restart: $after, not above $highest"; fi

e2e_summary "e2e transfer limits"
