# Shared by bench/compare.sh and bench/ab.sh (sourced): the pool every prefork server runs with in
# the benchmarks, and the median of a column of numbers.

# StartServers 8, MinSpareServers 5, MaxSpareServers 20, MaxRequestWorkers 64, keep-alive on,
# MaxKeepAliveRequests 100, KeepAliveTimeout 5 (Apache gets the same in its configuration).
PREFORKD_POOL_FLAGS=(--start-servers 8 --min-spare-servers 5 --max-spare-servers 20 --max-request-workers 64
    --server-limit 64 --keep-alive true --max-keep-alive-requests 100 --keep-alive-timeout 5 --timeout 60)

# Numbers on stdin, one per line -> their median ("nan" for none).
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) {print "nan"} else if (NR % 2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# The servers, for the scripts that run Apache and preforkd side by side (bench/compare.sh,
# bench/graceful-stop.sh). They use the caller's WORK (with WORK/docs), PIDS (every server started,
# for the caller's cleanup) and PREFORKD (the binary).

# A port below the ephemeral range (wrk's own connections take ports from that range, and the
# connection-close runs leave tens of thousands of them in TIME_WAIT).
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local p
    while :; do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

wait_serving() { # port
    for _ in $(seq 1 200); do
        if curl -fs -o /dev/null "http://127.0.0.1:$1/1k.html"; then return 0; fi
        sleep 0.05
    done
    echo "nothing serves on port $1" >&2
    return 1
}


APACHE_PID=""
start_apache() { # port -> sets APACHE_PID
    local port=$1 dir="$WORK/apache-$1"
    mkdir -p "$dir"
    local m=/usr/lib/apache2/modules
    cat >"$dir/httpd.conf" <<EOF
ServerRoot $dir
ServerName localhost
Listen 127.0.0.1:$port
PidFile $dir/httpd.pid
ErrorLog $dir/error.log
LogLevel warn
LoadModule mpm_prefork_module $m/mod_mpm_prefork.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule mime_module $m/mod_mime.so
LoadModule dir_module $m/mod_dir.so
LoadModule status_module $m/mod_status.so
LoadModule authz_host_module $m/mod_authz_host.so
User nobody
Group nogroup
StartServers 8
MinSpareServers 5
MaxSpareServers 20
MaxRequestWorkers 64
ServerLimit 64
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
Timeout 60
TypesConfig /etc/mime.types
DocumentRoot $WORK/docs
<Directory $WORK/docs>
    Require all granted
</Directory>
LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\"" combined
CustomLog $dir/access.log combined
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
EOF
    # Its own process group: Apache signals its whole group when it stops.
    setsid /usr/sbin/apache2 -f "$dir/httpd.conf" -DFOREGROUND >"$dir/stdout" 2>&1 &
    APACHE_PID=$!
    PIDS+=("$APACHE_PID")
    wait_serving "$port"
}

PREFORKD_PID=""
start_preforkd() { # port [extra flags...] -> sets PREFORKD_PID
    local port=$1
    shift
    local dir="$WORK/preforkd-$port"
    mkdir -p "$dir"
    "$PREFORKD" --listen "127.0.0.1:$port" "$@" "${PREFORKD_POOL_FLAGS[@]}" \
        --document-root "$WORK/docs" --access-log "$dir/access.log" --log-format combined \
        --user nobody --error-log "$dir/error.log" >"$dir/stdout" 2>&1 &
    PREFORKD_PID=$!
    PIDS+=("$PREFORKD_PID")
    wait_serving "$port"
}

NGINX_PID=""
start_nginx() { # port -> sets NGINX_PID
    local port=$1 dir="$WORK/nginx-$1"
    mkdir -p "$dir"
    # What a user would write for a static site on this box (Debian's defaults, plus the usual
    # static-file switches); keep-alive as for the others.
    cat >"$dir/nginx.conf" <<EOF
user nobody nogroup;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 5;
    keepalive_requests 100;
    access_log $dir/access.log combined;
    server {
        listen 127.0.0.1:$port;
        root $WORK/docs;
    }
}
EOF
    /usr/sbin/nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/stdout" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_serving "$port"
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    pkill -KILL -P "$1" 2>/dev/null || true
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}


# A work directory in $WORK (world-readable: the workers run as nobody) with docs/1k.html, settled
# an hour ago; at exit every server in PIDS is killed, with its children, and the directory removed.
make_work() { # name
    WORK=$(mktemp -d "/tmp/prefork-$1.XXXXXX")
    chmod 755 "$WORK"
    PIDS=()
    trap 'for p in "${PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/docs"
    head -c 1024 /dev/zero | tr '\0' x >"$WORK/docs/1k.html"
    touch -d '1 hour ago' "$WORK/docs/1k.html"
    chmod -R a+rX "$WORK/docs"
}
