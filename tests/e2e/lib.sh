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
