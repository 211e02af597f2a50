#!/usr/bin/env bash
# End to end: resolvers forwarding to privatelink-dns over DNS over TLS (RFC 7858), and
# BIND 9.18 as a secondary over XoT (RFC 9103), on loopback addresses of a network
# namespace this script makes:
#
#   127.0.0.1:5460 (UDP/TCP), 127.0.0.1:853 (TLS)  privatelink-dns, certificate for
#                   dns.test from the test's own CA; zones dot.example.net (Unbound
#                   answers names under test. itself) and xot.test (require-tls)
#   127.0.0.2:5461  Unbound, forward-tls-upstream with tls-cert-bundle
#   127.0.0.3:5462  Knot Resolver, policy.TLS_FORWARD with ca_file and hostname
#   127.0.0.5:5464  PowerDNS Recursor, forward-zones to :853 with dot-to-port-853
#   127.0.0.6:5465  BIND 9.20 ($NAMED_920), forwarders port 853 tls (ca-file,
#                   remote-hostname); 9.18 has no TLS forwarders
#   127.0.0.4:5463  BIND 9.18, secondary of xot.test over TLS (ca-file, remote-hostname)
#
# Checked: each resolver answers through us over TLS (our log shows transport tls),
# BIND transfers the zone over TLS and a change reaches it by NOTIFY, and a plain-TCP
# AXFR of that zone (require-tls) is REFUSED. Needs unbound, kresd, pdns_recursor,
# named, kdig, dig, openssl, and BIND 9.20's named in $NAMED_920 (scripts/test installs
# them all; it unpacks 9.20 from bookworm-backports under .cache/). Tears everything
# down on exit.
#
# Usage: NAMED_920=.cache/bind9.20/usr/sbin/named tests/e2e/dot.sh [path/to/privatelink-dns]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/e2e/lib.sh
e2e_netns dot "2 3 4 5 6" "$0" "$@"
BIN=$(realpath "${1:-target/debug/privatelink-dns}")
NAMED_920=$(realpath "${NAMED_920:-.cache/bind9.20/usr/sbin/named}")
PORT=5460
DIR=$(mktemp -d)
chmod 755 "$DIR"
SECRET=$(head -c 32 /dev/urandom | base64)

cleanup() {
    e2e_cleanup
    if [[ $E2E_FAILS -gt 0 ]]; then
        for f in "$DIR"/*.log "$DIR"/*.err; do [[ -f $f ]] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; }; done
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "== a CA and a certificate for dns.test"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=test CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=dns.test" \
    -keyout "$DIR/dns.key" -out "$DIR/dns.csr" 2>/dev/null
echo "subjectAltName=DNS:dns.test" >"$DIR/ext"
openssl x509 -req -in "$DIR/dns.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -set_serial 7 -days 2 \
    -extfile "$DIR/ext" -out "$DIR/dns.crt" 2>/dev/null
chmod 644 "$DIR"/*.crt "$DIR"/*.key

echo "== privatelink-dns: UDP/TCP $PORT, TLS 853"
config() { # address of www.xot.test
    cat <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
tls-listen = ["127.0.0.1:853"]

[log]
format = "json"
queries = true

[tls]
certificate = "$DIR/dns.crt"
key = "$DIR/dns.key"

[[tsig-key]]
name = "xfr-key"
secret = "$SECRET"

[[zone]]
origin = "dot.example.net"

[[zone.record]]
name = "www"
a = ["192.0.2.1"]

[[zone]]
origin = "xot.test"
soa = { refresh = 3600, retry = 3600 }
transfer = { allow = ["127.0.0.4/32"], tsig-key = "xfr-key", require-tls = true, notify = ["127.0.0.4:5463"] }

[[zone.record]]
name = "www"
a = ["$1"]
TOML
}
config 192.0.2.10 >"$DIR/privatelink-dns.toml"
"$BIN" check-config --config "$DIR/privatelink-dns.toml" >/dev/null
"$BIN" --config "$DIR/privatelink-dns.toml" 2>"$DIR/privatelink-dns.log" &
PLDNS_PID=$!
E2E_PIDS+=($PLDNS_PID)
wait_dns 127.0.0.1 "$PORT" dot.example.net
tls_query() { kdig +time=2 +retry=0 @127.0.0.1 -p 853 +tls +tls-ca="$DIR/ca.crt" "$@" 2>&1 || true; }
expect_contains "kdig over TLS, verified as dns.test" "192.0.2.1" "$(tls_query +tls-hostname=dns.test +short www.dot.example.net A)"
expect_contains "kdig over TLS (which pads its queries): the answer is padded (RFC 7830)" "PADDING" \
    "$(tls_query +tls-hostname=dns.test www.dot.example.net A)"
expect_eq "kdig over TLS, the wrong hostname: no answer" "" \
    "$(tls_query +tls-hostname=other.test +short www.dot.example.net A | grep -E '^192\.' || true)"

BEFORE=$(grep '"transport":"Tls"' "$DIR/privatelink-dns.log" | grep -ci 'www.dot.example.net' || true)

echo "== resolvers forwarding over TLS"
cat >"$DIR/unbound.conf" <<CONF
server:
    interface: 127.0.0.2@5461
    port: 5461
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$DIR"
    pidfile: "$DIR/unbound.pid"
    use-syslog: no
    logfile: "$DIR/unbound.err"
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: no
    tls-cert-bundle: "$DIR/ca.crt"
forward-zone:
    name: "dot.example.net"
    forward-tls-upstream: yes
    forward-addr: 127.0.0.1@853#dns.test
CONF
unbound-checkconf "$DIR/unbound.conf" >/dev/null
unbound -d -c "$DIR/unbound.conf" 2>>"$DIR/unbound.err" &
E2E_PIDS+=($!)
mkdir -p "$DIR/kresd"
cat >"$DIR/kresd/config" <<CONF
net.listen('127.0.0.3', 5462, { kind = 'dns' })
net.ipv6 = false
cache.open(10 * MB, 'lmdb://$DIR/kresd/cache')
trust_anchors.set_insecure({ 'dot.example.net' })
policy.add(policy.suffix(policy.TLS_FORWARD({ { '127.0.0.1@853', hostname = 'dns.test', ca_file = '$DIR/ca.crt' } }), policy.todnames({ 'dot.example.net' })))
CONF
kresd -n -c "$DIR/kresd/config" "$DIR/kresd" >"$DIR/kresd.err" 2>&1 &
E2E_PIDS+=($!)
mkdir -p "$DIR/pdns"
cat >"$DIR/pdns/recursor.conf" <<CONF
local-address=127.0.0.5
local-port=5464
allow-from=127.0.0.0/8
socket-dir=$DIR/pdns
daemon=no
write-pid=no
disable-syslog=yes
forward-zones=dot.example.net=127.0.0.1:853
dot-to-port-853=yes
dont-query=
lua-config-file=$DIR/pdns/recursor.lua
CONF
echo 'addNTA("dot.example.net", "served by privatelink-dns")' >"$DIR/pdns/recursor.lua"
pdns_recursor --config-dir="$DIR/pdns" >"$DIR/pdns.err" 2>&1 &
E2E_PIDS+=($!)
mkdir -p "$DIR/bind920"
cat >"$DIR/bind920/named.conf" <<CONF
tls dot { ca-file "$DIR/ca.crt"; remote-hostname "dns.test"; };
tls wrong-name { ca-file "$DIR/ca.crt"; remote-hostname "other.test"; };
options {
    directory "$DIR/bind920";
    pid-file "$DIR/bind920/named.pid";
    listen-on port 5465 { 127.0.0.6; };
    listen-on-v6 { none; };
    query-source address 127.0.0.6;
    recursion yes;
    allow-query { 127.0.0.0/8; };
    dnssec-validation no;
};
controls { };
zone "dot.example.net" { type forward; forward only; forwarders port 853 tls dot { 127.0.0.1; }; };
# The same server under a name its certificate does not carry: BIND must refuse it.
zone "xot.test" { type forward; forward only; forwarders port 853 tls wrong-name { 127.0.0.1; }; };
CONF
# Unpacked, not installed: its libraries sit beside it.
LD_LIBRARY_PATH=$(echo "${NAMED_920%/sbin/named}"/lib/*-linux-gnu) "$NAMED_920" -g -n 1 -c "$DIR/bind920/named.conf" \
    >"$DIR/bind920.err" 2>&1 &
E2E_PIDS+=($!)

answers_at() { dig +time=2 +tries=1 +short @"$1" -p "$2" www.dot.example.net A 2>/dev/null; }
has_answer() { [[ $(answers_at "$1" "$2") == 192.0.2.1 ]]; }
until_ok "Unbound (forward-tls-upstream) answers through us" 20 has_answer 127.0.0.2 5461
until_ok "Knot Resolver (TLS_FORWARD) answers through us" 20 has_answer 127.0.0.3 5462
until_ok "PowerDNS Recursor (dot-to-port-853) answers through us" 20 has_answer 127.0.0.5 5464
until_ok "BIND 9.20 (forwarders port 853 tls) answers through us" 20 has_answer 127.0.0.6 5465
expect_eq "BIND 9.20 checks the name: forwarding under a name not in our certificate gets nothing" "" \
    "$(dig +time=5 +tries=1 +short @127.0.0.6 -p 5465 www.xot.test A 2>/dev/null | grep -E '^192\.' || true)"
tls_queries=$(grep '"transport":"Tls"' "$DIR/privatelink-dns.log" | grep -ci 'www.dot.example.net' || true)
want=$((BEFORE + 4))
if ((tls_queries >= want)); then pass "our query log: the resolvers asked over TLS ($tls_queries queries, kdig's $BEFORE before them)"; else fail "TLS queries in our log: $tls_queries, want at least $want"; fi

echo "== BIND 9.18 as an XoT secondary of xot.test"
mkdir -p "$DIR/bind"
cat >"$DIR/bind/named.conf" <<CONF
key "xfr-key" { algorithm hmac-sha256; secret "$SECRET"; };
tls xot { ca-file "$DIR/ca.crt"; remote-hostname "dns.test"; };
options {
    directory "$DIR/bind";
    pid-file "$DIR/bind/named.pid";
    listen-on port 5463 { 127.0.0.4; };
    listen-on-v6 { none; };
    transfer-source 127.0.0.4;
    notify-source 127.0.0.4;
    recursion no;
    notify no;
    dnssec-validation no;
};
controls { };
zone "xot.test" { type secondary; file "xot.test.db"; primaries port 853 { 127.0.0.1 key "xfr-key" tls xot; }; allow-notify { 127.0.0.1; }; };
CONF
named-checkconf "$DIR/bind/named.conf"
named -g -n 1 -c "$DIR/bind/named.conf" >"$DIR/bind.err" 2>&1 &
E2E_PIDS+=($!)
bind_has() { [[ $(dig +time=1 +tries=1 +short @127.0.0.4 -p 5463 www.xot.test A 2>/dev/null) == "$1" ]]; }
until_ok "BIND transferred xot.test over TLS" 30 bind_has 192.0.2.10
if grep '"message":"transfer"' "$DIR/privatelink-dns.log" | grep '"zone":"xot.test."' | grep -q '"complete":true'; then
    pass "our transfer log: xot.test complete"
else
    fail "no complete transfer of xot.test in our log"
fi
config 192.0.2.11 >"$DIR/privatelink-dns.toml"
kill -HUP "$PLDNS_PID"
until_ok "a change reaches BIND by NOTIFY and a transfer over TLS" 30 bind_has 192.0.2.11
out=$(kdig +time=2 +retry=0 @127.0.0.1 -p "$PORT" -b 127.0.0.4 -y "hmac-sha256:xfr-key:$SECRET" xot.test AXFR 2>&1 || true)
expect_contains "a plain-TCP AXFR of a require-tls zone: REFUSED" "REFUSED" "$out"
expect_eq "... with no records" "" "$(echo "$out" | grep -E '^www\.xot\.test\.' || true)"

e2e_summary "e2e dot"
