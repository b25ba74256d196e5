#!/usr/bin/env bash
# Slow clients against 64 workers (issue 25): preforkd, Apache httpd 2.4 prefork and nginx side by
# side, each with the benchmarks' settings (bench/common.sh). Not a test: it prints a report.
#
#   bench/slow-clients.sh                 # as root; needs apache2, nginx, curl, python3
#   SLOW_N="300 1000" SLOW_SECONDS=20 bench/slow-clients.sh
#
# For each N and each mode of bench/slow_clients.py (heads: every slow connection trickles a
# request head, a header line every 3 s; idle: every slow connection sent one request and stays
# open, silent), a legitimate client asks GET /1k.html on a new connection every 0.5 s with a 5 s
# timeout: answered of asked, p50 and p99 of the answered.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

NS=${SLOW_N:-"300 1000"}
SECS=${SLOW_SECONDS:-20}
for tool in curl python3 wrk; do command -v "$tool" >/dev/null || { echo "slow-clients: needs $tool" >&2; exit 1; }; done
[ -x /usr/sbin/apache2 ] && [ -x /usr/sbin/nginx ] || { echo "slow-clients: needs apache2 and nginx" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "slow-clients: run as root (the workers run as nobody)" >&2; exit 1; }

cargo build -q --release -p preforkd --bin preforkd
PREFORKD=$PWD/target/release/preforkd
make_work slow

echo "slow clients against 64 workers, legitimate GET every 0.5 s for ${SECS}s (5 s timeout)"
printf '%-9s %-6s %6s %9s %8s %8s %10s\n' server mode slow answered p50-ms p99-ms slow-open
for n in $NS; do
    for mode in heads idle; do
        for server in preforkd apache nginx; do
            port=$(free_port)
            case $server in
                preforkd) start_preforkd "$port"; pid=$PREFORKD_PID ;;
                apache) start_apache "$port"; pid=$APACHE_PID ;;
                nginx) start_nginx "$port"; pid=$NGINX_PID ;;
            esac
            read -r _ asked _ answered _ p50 _ p99 _ open < <(bench/slow_clients.py "$port" "$mode" "$n" "$SECS")
            printf '%-9s %-6s %6d %4d/%-4d %8s %8s %10s\n' "$server" "$mode" "$n" "$answered" "$asked" "$p50" "$p99" "$open"
            stop "$pid"
        done
    done
done
