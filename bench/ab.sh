#!/usr/bin/env bash
# Two preforkd binaries side by side (a change against its baseline), same pool settings as
# bench/compare.sh, on files of 1 KiB, 200 KiB and 2 MiB, rounds alternating; prints requests/s per
# round and the medians' ratio B/A, and the median p99 of each. Not a test.
#
#   bench/ab.sh BASELINE-BINARY CHANGED-BINARY [PATH] [CLIENTS] [ROUNDS]    # as root (children run as nobody)
#   e.g. bench/ab.sh /tmp/preforkd.before target/release/preforkd /200k.bin 16 3
#   AB_CLOSE=1 bench/ab.sh ...    # one request per connection (Connection: close)
set -euo pipefail
. "$(dirname "$0")/common.sh"
A=$1
B=$2
PATH_=${3:-/200k.bin}
C=${4:-16}
ROUNDS=${5:-3}
SECS=${BENCH_SECONDS:-4}
WRK_ARGS=()
if [ -n "${AB_CLOSE:-}" ]; then WRK_ARGS=(-H "Connection: close"); fi
command -v wrk >/dev/null || { echo "ab: needs wrk (apt-get install wrk)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/prefork-ab.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/docs"
head -c 1024 /dev/zero | tr '\0' x >"$WORK/docs/1k.html"
head -c 204800 /dev/zero | tr '\0' y >"$WORK/docs/200k.bin"
head -c 2097152 /dev/zero | tr '\0' z >"$WORK/docs/2m.bin"
touch -d '1 hour ago' "$WORK"/docs/*
chmod -R a+rX "$WORK/docs"
PIDS=()
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null || true; sleep 0.5; rm -rf "$WORK"' EXIT
start() { # binary port
    "$1" --listen "127.0.0.1:$2" "${PREFORKD_POOL_FLAGS[@]}" --document-root "$WORK/docs" --access-log "$WORK/access-$2.log" \
        --log-format combined --user nobody --error-log "$WORK/error-$2.log" >/dev/null 2>&1 &
    PIDS+=($!)
}
PA=$((20000 + RANDOM % 10000))
PB=$((PA + 1))
start "$A" "$PA"
start "$B" "$PB"
sleep 1
ra=()
rb=()
pa=()
pb=()
for round in $(seq 1 "$ROUNDS"); do
    for which in A B; do
        if [ "$which" = A ]; then port=$PA; else port=$PB; fi
        read -r r p99 <<<"$(wrk -t2 -c"$C" -d"${SECS}s" --latency "${WRK_ARGS[@]}" "http://127.0.0.1:$port$PATH_" |
            awk 'function ms(v,  m) {m = 1; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000;
                                     sub(/[a-z]+$/, "", v); return v * m}
                 /Requests\/sec/ {r = $2} /^ +99%/ {p = ms($2)} END {printf "%s %.2f\n", r, p}')"
        if [ "$which" = A ]; then ra+=("$r"); pa+=("$p99"); else rb+=("$r"); pb+=("$p99"); fi
        echo "round $round  $which: $r req/s, p99 $p99 ms"
    done
done
ma=$(printf '%s\n' "${ra[@]}" | median)
mb=$(printf '%s\n' "${rb[@]}" | median)
echo "$PATH_ c=$C: A median $ma, B median $mb, B/A $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b/a}')x"
echo "$PATH_ c=$C: p99 A median $(printf '%s\n' "${pa[@]}" | median) ms, B median $(printf '%s\n' "${pb[@]}" | median) ms"
