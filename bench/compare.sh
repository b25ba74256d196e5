#!/usr/bin/env bash
# preforkd side by side with the two servers a user would otherwise pick: Apache httpd 2.4
# mpm_prefork (Debian's apache2) and nginx (Debian's nginx, event-driven), and a bare
# fork-and-accept loop (the ceiling), driven by wrk on loopback. Not a test: it prints a report.
#
#   bench/compare.sh                        # needs root (installs apache2, nginx, wrk, curl with apt-get)
#   BENCH_ROUNDS=5 BENCH_SECONDS=5 bench/compare.sh
#
# Same pool settings for Apache and preforkd (StartServers 8, MinSpareServers 5, MaxSpareServers 20,
# MaxRequestWorkers 64, keep-alive on, MaxKeepAliveRequests 100, KeepAliveTimeout 5). nginx runs
# the configuration a user would write for a static site (see start_nginx: worker_processes auto,
# sendfile on, tcp_nopush on, keepalive_requests 100 and keepalive_timeout 5 as for the others).
# The same files (1 KiB, 200 KiB, 2 MiB), every server writing a combined-format access log to a
# file, workers as `nobody`. Rounds alternate between the servers; the report gives medians and
# ratios to both anchors (preforkd/Apache, preforkd/nginx), with p50 and p99 latencies.
#
# Measured:
#   1. requests/s: keep-alive c=16, connection-close c=16, keep-alive c=64 (1 KiB); 200 KiB and
#      2 MiB with keep-alive c=16 and c=64; keep-alive c=256 against 64 workers (clients queue)
#      (wrk -t2 --latency); the 50th and 99th percentile latency of each
#   2. two listeners, preforkd with the accept lock (auto) and without (none): wasted wake-ups per
#      accepted connection (from /metrics) under connection-close load on both listeners
#   3. idle child PSS (median over the idle children, /proc/PID/smaps_rollup), after the load
#   4. step: from StartServers 8, 64 keep-alive clients arrive at once (bench/first_responses.py:
#      one request each, then they stay connected); time until the pool has grown to
#      MaxRequestWorkers (64 children: with 64 clients it cannot hold MinSpareServers idle beyond
#      them, so this is when spawning for the step is done), and time until every client had its
#      first response (until then the slowest waited in the accept queue without a byte)
#   5. 256 clients at once against 64 workers (first_responses.py, clients then stay connected
#      and idle): how long the 256th waited for its first response, for each server
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

ROUNDS=${BENCH_ROUNDS:-5}
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
KEEP=${BENCH_KEEP:-} # set to keep the work directory

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need curl || [ ! -x /usr/sbin/apache2 ] || [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "compare: needs apache2, nginx, wrk and curl (apt-get install apache2 nginx wrk curl), or run as root" >&2
        exit 1
    fi
    echo "== installing apache2 nginx wrk curl" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2 nginx wrk curl >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "compare: run as root (the servers start as root and run their workers as nobody)" >&2
    exit 1
fi

echo "== building (release)" >&2
cargo build -q --release -p preforkd --bin preforkd
cargo build -q --release -p prefork-server --example bare_prefork
PREFORKD=$PWD/target/release/preforkd
BARE=$PWD/target/release/examples/bare_prefork

WORK=$(mktemp -d /tmp/prefork-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in "${PIDS[@]}"; do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -z "$KEEP" ]; then rm -rf "$WORK"; else echo "work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT

mkdir -p "$WORK/docs"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/docs/1k.html"
head -c 204800 /dev/zero | tr '\0' 'y' >"$WORK/docs/200k.bin"
head -c 2097152 /dev/zero | tr '\0' 'z' >"$WORK/docs/2m.bin"
# Both files settled (a server that keeps small files keeps only files not changed in the last
# second; a deployed site's files are older than that).
touch -d '1 hour ago' "$WORK/docs/1k.html" "$WORK/docs/200k.bin" "$WORK/docs/2m.bin"
chmod -R a+rX "$WORK/docs"

children_of() { cat "/proc/$1/task/$1/children" 2>/dev/null | wc -w; }

BARE_PID=""
start_bare() { # port
    "$BARE" "127.0.0.1:$1" 8 >"$WORK/bare.log" 2>&1 &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    wait_serving "$1"
}

rps() { # port connections path [extra wrk args...] -> "requests/s p50-ms p99-ms"
    local port=$1 c=$2 path=$3
    shift 3
    wrk -t2 -c"$c" -d"${SECONDS_PER_RUN}s" --timeout 10s --latency "$@" "http://127.0.0.1:$port$path" 2>&1 |
        awk 'function ms(v,  m) {m = 1; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else if (v ~ /s$/) m = 1000;
                                 sub(/[a-z]+$/, "", v); return v * m}
             /Requests\/sec:/ {r = $2}
             /^ +50%/ {p50 = ms($2)}
             /^ +99%/ {p99 = ms($2)}
             /Non-2xx|Socket errors/ {print "wrk: " $0 > "/dev/stderr"}
             END {printf "%s %.2f %.2f\n", r, p50, p99}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "n/a"}'; }

# --- 1. throughput ---------------------------------------------------------------------------
PA=$(free_port)
start_apache "$PA"
PP=$(free_port)
start_preforkd "$PP"
PN=$(free_port)
start_nginx "$PN"
PB=$(free_port)
start_bare "$PB"

declare -A RESULTS LATENCY MEDIAN_LATENCY
SCENARIOS=("keep-alive c=16|16||/1k.html" "connection-close c=16|16|close|/1k.html" "keep-alive c=64|64||/1k.html"
    "200 KiB keep-alive c=16|16||/200k.bin" "200 KiB keep-alive c=64|64||/200k.bin"
    "2 MiB keep-alive c=16|16||/2m.bin" "2 MiB keep-alive c=64|64||/2m.bin"
    "keep-alive c=256|256||/1k.html")
echo "== throughput: $ROUNDS rounds x ${SECONDS_PER_RUN}s per server and scenario" >&2
for round in $(seq 1 "$ROUNDS"); do
    for sc in "${SCENARIOS[@]}"; do
        IFS='|' read -r name c extra path <<<"$sc"
        # Alternate the order each round.
        if [ $((round % 2)) = 1 ]; then order="apache nginx preforkd bare"; else order="bare preforkd nginx apache"; fi
        for server in $order; do
            # The bare loop answers 1 KiB to anything: not a baseline for the 200 KiB file.
            if [ "$server" = bare ] && [ "$path" != /1k.html ]; then continue; fi
            case $server in apache) port=$PA ;; preforkd) port=$PP ;; nginx) port=$PN ;; bare) port=$PB ;; esac
            if [ "$extra" = close ]; then
                read -r r m l <<<"$(rps "$port" "$c" "$path" -H "Connection: close")"
            else
                read -r r m l <<<"$(rps "$port" "$c" "$path")"
            fi
            RESULTS["$name|$server"]+="$r "
            MEDIAN_LATENCY["$name|$server"]+="$m "
            LATENCY["$name|$server"]+="$l "
            echo "   round $round  $name  $server: $r req/s, p50 $m ms, p99 $l ms" >&2
        done
    done
done

# --- 3. idle child PSS (after the load, once the pools are idle) --------------------------------
pss_median() { # parent pid
    local parent=$1
    for c in $(cat "/proc/$parent/task/$parent/children" 2>/dev/null); do
        # A child may retire between the listing and the read: skip it (awk's error would end the run).
        awk '/^Pss:/ {print $2}' "/proc/$c/smaps_rollup" 2>/dev/null || true
    done | median
}
sleep 2
PSS_APACHE=$(pss_median "$APACHE_PID")
PSS_NGINX=$(pss_median "$NGINX_PID")
PSS_PREFORKD=$(pss_median "$PREFORKD_PID")
PSS_BARE=$(pss_median "$BARE_PID")
KIDS_APACHE=$(children_of "$APACHE_PID")
KIDS_PREFORKD=$(children_of "$PREFORKD_PID")
stop "$APACHE_PID"
stop "$PREFORKD_PID"
stop "$NGINX_PID"
stop "$BARE_PID"

# --- 2. wasted wake-ups with two listeners ------------------------------------------------------
metric() { # port name
    curl -fs "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}
wasted() { # mutex -> "wasted connections"
    local p1 p2
    p1=$(free_port)
    p2=$(free_port)
    start_preforkd "$p1" --listen "127.0.0.1:$p2" --accept-mutex "$1"
    rps "$p1" 8 /1k.html -H "Connection: close" >/dev/null &
    local bg=$!
    rps "$p2" 8 /1k.html -H "Connection: close" >/dev/null
    wait "$bg" # not a bare `wait`: preforkd is a background job of this shell too
    local w n
    w=$(metric "$p1" prefork_wasted_wakeups_total)
    n=$(metric "$p1" prefork_connections_total)
    stop "$PREFORKD_PID"
    echo "$w $n"
}
echo "== two listeners: wasted wake-ups" >&2
W_LOCK=()
W_NONE=()
per_connection() { awk -v w="$1" -v n="$2" 'BEGIN {printf "%.5f", w/n}'; }
for round in $(seq 1 3); do
    read -r w n <<<"$(wasted auto)"
    W_LOCK+=("$(per_connection "$w" "$n")")
    echo "   round $round  lock (auto): $w wasted / $n connections" >&2
    read -r w n <<<"$(wasted none)"
    W_NONE+=("$(per_connection "$w" "$n")")
    echo "   round $round  no lock:     $w wasted / $n connections" >&2
done

# --- 4. step of 64 clients ---------------------------------------------------------------------
step() { # server -> "seconds-until-64-children seconds-until-every-client-answered"
    local port
    port=$(free_port)
    case $1 in
        apache) start_apache "$port"; local pid=$APACHE_PID ;;
        preforkd) start_preforkd "$port"; local pid=$PREFORKD_PID ;;
    esac
    sleep 1.5 # settle at StartServers
    rm -f "$WORK/step-start" "$WORK/step-out"
    # 64 clients at once, one request each, then connected and idle for 8 s (keep-alive).
    python3 bench/first_responses.py "$port" 64 /1k.html 8 "$WORK/step-start" >"$WORK/step-out" &
    local load=$!
    local t=""
    for _ in $(seq 1 1500); do
        if [ -s "$WORK/step-start" ] && [ "$(children_of "$pid")" -ge 64 ]; then
            t=$(awk -v a="$(cat "$WORK/step-start")" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
            break
        fi
        sleep 0.01
    done
    wait "$load" 2>/dev/null || true
    local first
    first=$(awk '{print $1}' "$WORK/step-out")
    stop "$pid"
    echo "${t:-timeout} ${first:-timeout}"
}
echo "== step of 64 clients" >&2
STEP_A=()
STEP_P=()
FIRST_A=()
FIRST_P=()
for round in $(seq 1 3); do
    read -r t f <<<"$(step apache)"
    STEP_A+=("$t")
    FIRST_A+=("$f")
    read -r t f <<<"$(step preforkd)"
    STEP_P+=("$t")
    FIRST_P+=("$f")
    echo "   round $round  until 64 children: apache ${STEP_A[-1]} s, preforkd ${STEP_P[-1]} s;" \
        "until every client answered: apache ${FIRST_A[-1]} s, preforkd ${FIRST_P[-1]} s" >&2
done

# --- 5. 256 clients at once against 64 workers --------------------------------------------------
crowd() { # server -> "seconds-until-the-256th-answered median-client-seconds"
    local port pid
    port=$(free_port)
    case $1 in
        apache) start_apache "$port"; pid=$APACHE_PID ;;
        preforkd) start_preforkd "$port"; pid=$PREFORKD_PID ;;
        nginx) start_nginx "$port"; pid=$NGINX_PID ;;
    esac
    sleep 1.5
    # Each client keeps its connection open and idle after its response (a browser between
    # requests) until every client was answered: a prefork server frees a worker only when its
    # keep-alive timeout (5 s) closes an idle connection; an event loop holds them all.
    local out
    out=$(python3 bench/first_responses.py "$port" 256 /1k.html 1)
    stop "$pid"
    echo "${out:-timeout timeout}"
}
echo "== 256 clients at once against 64 workers" >&2
declare -A CROWD_LAST CROWD_MEDIAN
for round in $(seq 1 3); do
    for server in apache preforkd nginx; do
        read -r last med <<<"$(crowd "$server")"
        CROWD_LAST[$server]+="$last "
        CROWD_MEDIAN[$server]+="$med "
        echo "   round $round  $server: the 256th answered after $last s, the median client after $med s" >&2
    done
done

# --- report ----------------------------------------------------------------------------------
echo
echo "machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "apache:  $(/usr/sbin/apache2 -v | head -1 | cut -d: -f2 | xargs), mpm_prefork; wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
echo "nginx:   $(/usr/sbin/nginx -v 2>&1 | cut -d: -f2 | xargs), worker_processes auto ($(nproc) workers)"
echo "preforkd: $("$PREFORKD" --version)"
echo "rounds: $ROUNDS x ${SECONDS_PER_RUN}s for throughput (3 for wake-ups and the step), alternating; medians"
echo
med() { echo "$1" | tr ' ' '\n' | { grep . || true; } | median; } # a list of numbers -> its median
printf '%-26s %10s %10s %10s %10s %9s %9s %9s\n' "requests/s" "apache" "preforkd" "nginx" "bare" "p/apache" "p/nginx" "bare/ng"
for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r name _ _ path <<<"$sc"
    a=$(med "${RESULTS["$name|apache"]}")
    p=$(med "${RESULTS["$name|preforkd"]}")
    n=$(med "${RESULTS["$name|nginx"]}")
    if [ "$path" = /1k.html ]; then b=$(med "${RESULTS["$name|bare"]}"); else b=""; fi
    printf '%-26s %10.0f %10.0f %10.0f %10s %8sx %8sx %8s\n' "$name" "$a" "$p" "$n" "${b:+$(printf '%.0f' "$b")}" \
        "$(ratio "$p" "$a")" "$(ratio "$p" "$n")" "${b:+$(ratio "$b" "$n")x}"
done
for pct in p50 p99; do
    echo
    printf '%-26s %10s %10s %10s %10s %9s %9s\n' "$pct latency (ms)" "apache" "preforkd" "nginx" "bare" "p/apache" "p/nginx"
    for sc in "${SCENARIOS[@]}"; do
        IFS='|' read -r name _ _ path <<<"$sc"
        if [ "$pct" = p50 ]; then
            a=$(med "${MEDIAN_LATENCY["$name|apache"]}"); p=$(med "${MEDIAN_LATENCY["$name|preforkd"]}")
            n=$(med "${MEDIAN_LATENCY["$name|nginx"]}"); b=$(med "${MEDIAN_LATENCY["$name|bare"]:-}")
        else
            a=$(med "${LATENCY["$name|apache"]}"); p=$(med "${LATENCY["$name|preforkd"]}")
            n=$(med "${LATENCY["$name|nginx"]}"); b=$(med "${LATENCY["$name|bare"]:-}")
        fi
        [ "$path" = /1k.html ] || b=-
        printf '%-26s %10s %10s %10s %10s %8sx %8sx\n' "$name" "$a" "$p" "$n" "$b" "$(ratio "$p" "$a")" "$(ratio "$p" "$n")"
    done
done
echo
printf '%-24s %12s %12s %12s %12s %16s\n' "idle child PSS (kB)" "apache" "preforkd" "bare" "nginx worker" "preforkd/apache"
printf '%-24s %12s %12s %12s %12s %15sx\n' "median" "$PSS_APACHE" "$PSS_PREFORKD" "$PSS_BARE" "$PSS_NGINX" "$(ratio "$PSS_PREFORKD" "$PSS_APACHE")"
echo "   (children after the load: apache $KIDS_APACHE, preforkd $KIDS_PREFORKD)"
echo
echo "two listeners, connection-close c=8 on each, wasted wake-ups per accepted connection (preforkd):"
echo "   with the accept lock (auto): median $(printf '%s\n' "${W_LOCK[@]}" | median)  (rounds: ${W_LOCK[*]})"
echo "   without (none):              median $(printf '%s\n' "${W_NONE[@]}" | median)  (rounds: ${W_NONE[*]})"
echo
sa=$(printf '%s\n' "${STEP_A[@]}" | grep -v timeout | median)
sp=$(printf '%s\n' "${STEP_P[@]}" | grep -v timeout | median)
fa=$(printf '%s\n' "${FIRST_A[@]}" | grep -v timeout | median)
fp=$(printf '%s\n' "${FIRST_P[@]}" | grep -v timeout | median)
echo "step of 64 keep-alive clients from 8 children:"
echo "   seconds until 64 children (spawning done):"
echo "      apache median $sa s (${STEP_A[*]}), preforkd median $sp s (${STEP_P[*]}), preforkd/apache $(ratio "$sp" "$sa")x"
echo "   seconds until every client had its first response:"
echo "      apache median $fa s (${FIRST_A[*]}), preforkd median $fp s (${FIRST_P[*]}), preforkd/apache $(ratio "$fp" "$fa")x"
echo
echo "256 clients at once against 64 workers (each stays connected, idle, until all were answered):"
for server in apache preforkd nginx; do
    printf '   %-9s the 256th answered after median %s s (%s), the median client after %s s\n' "$server" \
        "$(printf '%s\n' ${CROWD_LAST[$server]} | { grep -v timeout || true; } | median)" "${CROWD_LAST[$server]% }" \
        "$(printf '%s\n' ${CROWD_MEDIAN[$server]} | { grep -v timeout || true; } | median)"
done
