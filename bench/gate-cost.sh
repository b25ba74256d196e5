#!/usr/bin/env bash
# What the gate costs (issue 25, SPEC.md §15.1): preforkd behind the gate (accept_filter
# httpready, the default) and without it (accept_filter data: children accept and read heads
# themselves, as before issue 25), the same binary, in the same run. Not a test: it prints a report.
#
#   bench/gate-cost.sh                     # as root (workers run as nobody); needs wrk
#   GATE_ROUNDS=5 GATE_SECONDS=5 bench/gate-cost.sh
#
# wrk -t2 on a 1 KiB file, the benchmarks' pool of 64 workers (bench/common.sh), access log on;
# rounds alternate the order. Scenarios: keep-alive c=16 and c=64 (no request waits: a kept-alive
# connection stays in its child), connection-close c=16 and c=64 (every connection goes through
# the gate and the hand-over channel), keep-alive c=256 (more connections than workers: behind
# the gate an idle connection goes back to the gate when a request waits). Medians of the rounds,
# and the ratio httpready/data.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

ROUNDS=${GATE_ROUNDS:-5}
SECS=${GATE_SECONDS:-5}
command -v wrk >/dev/null || { echo "gate-cost: needs wrk" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "gate-cost: run as root (the workers run as nobody)" >&2; exit 1; }

cargo build -q --release -p preforkd --bin preforkd
PREFORKD=$PWD/target/release/preforkd
make_work gatecost

rps() { # port connections [extra wrk args...] -> "requests/s p99-ms"
    local port=$1 c=$2
    shift 2
    wrk -t2 -c"$c" -d"${SECS}s" --timeout 10s --latency "$@" "http://127.0.0.1:$port/1k.html" 2>&1 |
        awk 'function ms(v,  m) {m = 1; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000;
                                 sub(/[a-z]+$/, "", v); return v * m}
             /Requests\/sec:/ {r = $2}
             /^ +99%/ {p99 = ms($2)}
             END {printf "%s %.2f\n", r, p99}'
}

PG=$(free_port)
start_preforkd "$PG"
GATED=$PREFORKD_PID
PD=$(free_port)
start_preforkd "$PD" --accept-filter data
SCENARIOS=("keep-alive c=16|16|" "keep-alive c=64|64|" "connection-close c=16|16|close" "connection-close c=64|64|close"
    "keep-alive c=256|256|")
declare -A R P
for round in $(seq 1 "$ROUNDS"); do
    for sc in "${SCENARIOS[@]}"; do
        IFS='|' read -r name c extra <<<"$sc"
        if [ $((round % 2)) = 1 ]; then order="httpready data"; else order="data httpready"; fi
        for f in $order; do
            port=$PG
            [ "$f" = data ] && port=$PD
            if [ "$extra" = close ]; then
                read -r r l <<<"$(rps "$port" "$c" -H "Connection: close")"
            else
                read -r r l <<<"$(rps "$port" "$c")"
            fi
            R["$name|$f"]+="$r "
            P["$name|$f"]+="$l "
        done
    done
done
echo "the gate's cost: $ROUNDS rounds x ${SECS}s, 1 KiB, 64 workers; medians"
printf '%-22s %14s %14s %7s %12s %12s\n' scenario httpready-rps data-rps ratio p99-ms-gate p99-ms-data
for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r name _ _ <<<"$sc"
    g=$(echo "${R["$name|httpready"]}" | tr ' ' '\n' | grep . | median)
    d=$(echo "${R["$name|data"]}" | tr ' ' '\n' | grep . | median)
    pg=$(echo "${P["$name|httpready"]}" | tr ' ' '\n' | grep . | median)
    pd=$(echo "${P["$name|data"]}" | tr ' ' '\n' | grep . | median)
    printf '%-22s %14.0f %14.0f %7s %12s %12s\n' "$name" "$g" "$d" "$(awk -v a="$g" -v b="$d" 'BEGIN {printf "%.2f", a/b}')" "$pg" "$pd"
done
curl -s "http://127.0.0.1:$PG/server-status?auto" | grep -E '^Gate(Taken|Handed)' | tr '\n' ' '
echo
stop "$GATED"
