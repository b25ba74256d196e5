#!/usr/bin/env bash
# The shipped systemd units under a real systemd: boots a Debian container (systemd-nspawn, systemd
# as PID 1, its own network namespace), installs preforkd as docs/operations.md says, and checks
# both variants with socket activation: the root parent with children as www-data, and the
# unprivileged drop-in (User=www-data). For each: it serves on IPv4 and IPv6, `systemctl reload`
# restarts gracefully, a broken configuration fails the reload and the server keeps running,
# logrotate's snippet rotates both logs, `systemctl stop` stops it.
#
# Not in CI: it needs root and downloads a minimal Debian (debootstrap, about 2 minutes the first
# time; the tree is kept in $PREFORK_NSPAWN_ROOT, /var/tmp/prefork-nspawn by default). The test
# suite checks the same units without systemd (tests/tests/contrib_and_docs.rs).
#
#   sudo tests/systemd-nspawn.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${PREFORK_NSPAWN_ROOT:-/var/tmp/prefork-nspawn}

if [ "$(id -u)" != 0 ]; then
    echo "run as root (it boots a container)" >&2
    exit 2
fi
need=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x "$root/usr/bin/systemctl" ]; then
    echo "== debootstrap (once) into $root"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,logrotate,procps \
        bookworm "$root" http://deb.debian.org/debian >/dev/null
fi

echo "== build and install as docs/operations.md says"
(cd "$repo" && cargo build --release --locked -q -p preforkd)
install -m 755 "$repo/target/release/preforkd" "$root/usr/local/bin/preforkd"
install -D -m 644 "$repo/contrib/preforkd.toml" "$root/etc/preforkd/preforkd.toml"
install -m 644 "$repo/contrib/systemd/preforkd.service" "$repo/contrib/systemd/preforkd.socket" "$root/etc/systemd/system/"
install -D -m 644 "$repo/contrib/systemd/preforkd.service.d/unprivileged.conf" "$root/root/unprivileged.conf"
install -m 644 "$repo/contrib/logrotate/preforkd" "$root/etc/logrotate.d/preforkd"
mkdir -p "$root/var/www/html"
echo '<h1>under systemd</h1>' >"$root/var/www/html/index.html"
rm -rf "$root/etc/systemd/system/preforkd.service.d" "$root/var/log/preforkd" "$root/root/result.txt"
rm -f "$root/etc/systemd/system/sockets.target.wants/preforkd.socket"

cat >"$root/root/check.sh" <<'EOF'
#!/bin/bash
exec >/root/result.txt 2>&1
check() { if eval "$2" >/dev/null 2>&1; then echo "ok   $1"; else echo "FAIL $1"; fi; }
gen() { curl -s 'http://127.0.0.1/server-status?auto' | sed -n 's/^ParentServerConfigGeneration: //p'; }
uid_of() { ps -o user= -p "$1" | tr -d ' '; }
variant() { # $1: name, $2: the parent's account
    v=$1 acct=$2 # (the checks are eval'ed inside check(), where $1 and $2 are its own)
    check "$1: the socket unit is active" 'systemctl is-active preforkd.socket'
    check "$1: serves on IPv4 (and starts the service)" 'curl -sf http://127.0.0.1/ | grep -q "under systemd"'
    check "$1: serves on IPv6" 'curl -sf -g "http://[::1]/" | grep -q "under systemd"'
    check "$1: the service is active" 'systemctl is-active preforkd.service'
    local main
    main=$(systemctl show -p MainPID --value preforkd.service)
    check "$1: the parent runs as $2" '[ "$(uid_of "$main")" = "$acct" ]'
    check "$1: every child runs as www-data" '[ -z "$(ps -o user= --ppid "$main" | grep -v www-data)" ] && [ -n "$(ps -o pid= --ppid "$main")" ]'
    local g
    g=$(gen)
    check "$1: systemctl reload succeeds" 'systemctl reload preforkd'
    sleep 1
    check "$1: ... and restarted the server gracefully" '[ "$(gen)" = "$((g + 1))" ]'
    cp /etc/preforkd/preforkd.toml /root/good.toml
    echo 'start_servers = "many"' >>/etc/preforkd/preforkd.toml
    check "$1: a broken configuration fails systemctl reload" '! systemctl reload preforkd'
    check "$1: ... the journal says why" 'journalctl -u preforkd --no-pager | grep -q "start_servers"'
    check "$1: ... and the server keeps running as it was" 'systemctl is-active preforkd.service && [ "$(gen)" = "$((g + 1))" ]'
    cp /root/good.toml /etc/preforkd/preforkd.toml
    for i in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1/?before-$1-$i"; done
    check "$1: logrotate runs the snippet" 'logrotate -f /etc/logrotate.d/preforkd'
    sleep 1
    for i in 1 2; do curl -s -o /dev/null "http://127.0.0.1/?after-$1-$i"; done
    sleep 0.5
    check "$1: the rotated access log has the lines before" '[ "$(grep -c "before-$v" /var/log/preforkd/access.log.1)" = 3 ]'
    check "$1: the new access log has the lines after" '[ "$(grep -c "after-$v" /var/log/preforkd/access.log)" = 2 ]'
    check "$1: the new error log is written" 'grep -q "generation" /var/log/preforkd/error.log'
    check "$1: the pid file is in RuntimeDirectory" '[ "$(cat /run/preforkd/preforkd.pid)" = "$main" ]'
    check "$1: the log directory belongs to $2" '[ "$(stat -c %U /var/log/preforkd)" = "$acct" ]'
}
echo "== variant 1: root parent, children as www-data, socket activation"
systemctl daemon-reload
systemctl enable --now preforkd.socket
variant root-parent root
echo "== variant 2: unprivileged.conf (User=www-data), socket activation"
install -D -m 644 /root/unprivileged.conf /etc/systemd/system/preforkd.service.d/unprivileged.conf
systemctl daemon-reload
systemctl restart preforkd.service
rm -f /var/log/preforkd/*.1
variant unprivileged www-data
check "systemctl stop stops it" 'systemctl stop preforkd.service && ! systemctl is-active preforkd.service'
check "no preforkd process is left" '[ -z "$(ps -o pid= -C preforkd)" ]'
echo "== versions"
systemctl --version | head -1
/usr/local/bin/preforkd --version
systemctl poweroff
EOF
chmod +x "$root/root/check.sh"
cat >"$root/etc/systemd/system/prefork-check.service" <<'EOF'
[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/check.sh
[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/prefork-check.service "$root/etc/systemd/system/multi-user.target.wants/prefork-check.service"

echo "== boot (systemd as PID 1 in the container)"
timeout 300 systemd-nspawn -q --register=no --keep-unit --private-network --console=pipe -D "$root" -b \
    >/dev/null 2>&1 || true
if [ ! -s "$root/root/result.txt" ]; then
    echo "the container produced no result" >&2
    exit 1
fi
cat "$root/root/result.txt"
if grep -q '^FAIL' "$root/root/result.txt" || ! grep -q '^ok' "$root/root/result.txt"; then
    exit 1
fi
echo "== all checks passed"
