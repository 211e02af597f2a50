# Shared helpers for the e2e scripts: assertions, process cleanup, waiting.
# shellcheck shell=bash

E2E_PIDS=()
E2E_FAILS=0
E2E_PASSES=0

e2e_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${E2E_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

pass() { E2E_PASSES=$((E2E_PASSES + 1)); echo "  ok   $*"; }
fail() { E2E_FAILS=$((E2E_FAILS + 1)); echo "  FAIL $*"; }

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1: expected [$2], got [$3]"; fi
}

# expect_contains WHAT NEEDLE HAYSTACK
expect_contains() {
    if [[ "$3" == *"$2"* ]]; then pass "$1"; else fail "$1: [$2] not in [$3]"; fi
}

# wait_udp HOST PORT: until a SOA query for the first demo zone is answered (20 s max).
wait_dns() {
    local host=$1 port=$2 zone=$3 i
    for i in $(seq 1 200); do
        if dig +time=1 +tries=1 @"$host" -p "$port" "$zone" SOA +short >/dev/null 2>&1 \
            && [[ -n "$(dig +time=1 +tries=1 @"$host" -p "$port" "$zone" SOA +short 2>/dev/null)" ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "server at $host#$port did not answer within 20 s" >&2
    return 1
}

# The closing line test harnesses read.
e2e_summary() {
    echo "$1: $E2E_PASSES passed, $E2E_FAILS failed"
    [[ $E2E_FAILS -eq 0 ]]
}

# e2e_netns TAG "N M ..." COMMAND...: unless already inside one, runs COMMAND (the
# script itself: "$0" "$@") in a new network namespace with lo up and 127.0.0.N/8
# added, then kills whatever is left in it, deletes it and exits with COMMAND's code.
e2e_netns() {
    [[ -n ${PLDNS_E2E_NETNS:-} ]] && return 0
    local tag=$1 addrs=$2 i pid rc=0
    shift 2
    E2E_NS=pldns-$tag-$$
    ip netns add "$E2E_NS"
    trap 'ip netns del "$E2E_NS" 2>/dev/null || true' EXIT
    ip -n "$E2E_NS" link set lo up
    for i in $addrs; do ip -n "$E2E_NS" addr add "127.0.0.$i/8" dev lo; done
    ip netns exec "$E2E_NS" env PLDNS_E2E_NETNS=1 "$@" || rc=$?
    for pid in $(ip netns pids "$E2E_NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    exit $rc
}

# until_ok WHAT SECONDS COMMAND...: passes once COMMAND succeeds (tried every 0.2 s,
# its output discarded), saying after how long; fails if it has not within SECONDS.
until_ok() {
    local what=$1 limit=$2 start took
    shift 2
    start=$(date +%s.%N)
    while ! "$@" >/dev/null 2>&1; do
        if (($(echo "$(date +%s.%N) - $start > $limit" | bc))); then
            fail "$what: not within ${limit}s"
            return 0
        fi
        sleep 0.2
    done
    took=$(echo "$(date +%s.%N) - $start" | bc)
    pass "$what (after ${took}s)"
}

# e2e_moto PORT LOG: starts the EC2 API emulator (tests/support/fake_ec2.py, from
# .venv) on 127.0.0.1:PORT, logging to LOG, and waits until it answers (30 s at most).
e2e_moto() {
    local port=$1 log=$2 py
    py=$(realpath .venv/bin/python)
    "$py" tests/support/fake_ec2.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    E2E_PIDS+=($!)
    for _ in $(seq 1 300); do
        "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the EC2 API emulator on 127.0.0.1:$port did not answer within 30 s" >&2
    return 1
}
