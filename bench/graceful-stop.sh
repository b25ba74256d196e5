#!/usr/bin/env bash
# Graceful stops under load (SPEC.md §7.5, I32): preforkd, a baseline preforkd binary if one is
# given, and Apache httpd 2.4 prefork, side by side. Not a test: it prints a report.
#
#   bench/graceful-stop.sh [BASELINE-BINARY]    # as root (workers run as nobody); needs apache2, wrk
#   GSTOP_ROUNDS=5 GSTOP_CLIENTS=16 bench/graceful-stop.sh
#
# Each round: the server with the benchmarks' pool (bench/common.sh), wrk with CLIENTS keep-alive
# connections on a 1 KiB file for 5 s, and the graceful stop (SIGWINCH) after 2 s. What wrk counts:
#   read errors     a request was sent and no response came (a reset, or a close without one):
#                   a request lost, the figure the graceful stop must keep at 0
#   connect, write  after the stop: a new connection refused before its request was sent (wrk's
#                   connect is non-blocking, so a refusal shows as a failed write); expected
#   timeout         no response within wrk's 2 s
# Apache closes its listeners at once: what the kernel had queued is reset (SPEC.md D33).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

ROUNDS=${GSTOP_ROUNDS:-5}
CLIENTS=${GSTOP_CLIENTS:-16}
BASELINE=${1:-}
command -v wrk >/dev/null && [ -x /usr/sbin/apache2 ] || { echo "graceful-stop: needs wrk and apache2" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "graceful-stop: run as root (the workers run as nobody)" >&2; exit 1; }

cargo build -q --release -p preforkd --bin preforkd
CURRENT=$PWD/target/release/preforkd
make_work gstop

one_round() { # server -> "requests read connect write timeout seconds-to-exit"
    local server=$1 port pid
    port=$(free_port)
    case $server in
        apache) start_apache "$port"; pid=$APACHE_PID ;;
        preforkd) PREFORKD=$CURRENT start_preforkd "$port"; pid=$PREFORKD_PID ;;
        baseline) PREFORKD=$BASELINE start_preforkd "$port"; pid=$PREFORKD_PID ;;
    esac
    wrk -t2 -c"$CLIENTS" -d5s --timeout 2s "http://127.0.0.1:$port/1k.html" >"$WORK/wrk.out" 2>&1 &
    local w=$!
    sleep 2
    local t0
    t0=$(date +%s.%N)
    kill -WINCH "$pid"
    wait "$pid" 2>/dev/null || true
    local t1
    t1=$(date +%s.%N)
    wait "$w" || true
    awk -v took="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')" '
        /requests in/ {n = $1}
        /Socket errors/ {gsub(",", ""); c = $4; r = $6; w = $8; t = $10}
        END {printf "%d %d %d %d %d %s\n", n, r + 0, c + 0, w + 0, t + 0, took}' "$WORK/wrk.out"
}

SERVERS=(preforkd apache)
[ -n "$BASELINE" ] && SERVERS=(baseline preforkd apache)
echo "graceful stop under $CLIENTS keep-alive clients, $ROUNDS rounds (wrk: requests, read errors = requests lost, connect+write errors = refused after the stop, timeouts)"
printf '%-9s %5s %9s %6s %8s %8s %8s\n' server round requests lost refused timeouts "exit s"
for round in $(seq 1 "$ROUNDS"); do
    for server in "${SERVERS[@]}"; do
        read -r n r c w t took < <(one_round "$server")
        printf '%-9s %5d %9d %6d %8d %8d %8s\n' "$server" "$round" "$n" "$r" "$((c + w))" "$t" "$took"
    done
done
