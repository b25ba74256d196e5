#!/usr/bin/env python3
"""Runs Apache httpd 2.4 mpm_prefork (Debian's apache2) behind the conformance contract
(CONFORMANCE.md), so the pool tier can test it: the contract's flags become an httpd.conf, the
contract's log lines go to standard error, and the process is Apache's own parent (exec), so
signals and /proc see Apache itself.

    PREFORKD_BIN=tests/adapters/apache-httpd.py cargo test -p prefork-tests --test pool

Mapping: --listen (port 0 = a free port picked here) -> Listen; --start-servers,
--min-spare-servers, --max-spare-servers, --max-request-workers, --server-limit,
--max-connections-per-child, --graceful-shutdown-timeout, --keep-alive, --keep-alive-timeout,
--max-keep-alive-requests, --timeout -> the directives of the same name; --accept-mutex fcntl ->
`Mutex fcntl:<dir> mpm-accept`; --document-root -> DocumentRoot; --status-path -> mod_status
(ExtendedStatus On, local only). Apache has no `?json`, no `--spawn-mode` (it always ramps),
and no way to bind port 0 itself: tests that need these fail for Apache, which is the point.
"""

import argparse
import os
import socket
import sys
import tempfile

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"


def free_port(host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv):
    p = argparse.ArgumentParser(prog="apache-httpd.py")
    a = p.add_argument
    a("--listen", action="append")
    for name in ("listen-backlog", "server-limit", "max-request-workers", "start-servers", "min-spare-servers",
                 "max-spare-servers", "max-connections-per-child", "graceful-shutdown-timeout",
                 "keep-alive-timeout", "max-keep-alive-requests", "timeout", "maintenance-interval-ms"):
        a(f"--{name}", type=int)
    a("--accept-mutex", default="auto")
    a("--accept-filter", choices=["httpready", "data", "none"])
    a("--spawn-mode", default="ramp")
    a("--keep-alive", default="true")
    a("--document-root")
    a("--status-path", default="/server-status")
    a("--pid-file")
    a("--user", default="nobody")
    a("--group", default="nogroup")
    a("--conformance-features", action="store_true")
    args, unknown = p.parse_known_args(argv)
    if args.conformance_features:
        return  # none: on Linux Apache has no gate (AcceptFilter httpready is TCP_DEFER_ACCEPT) and only ramps
    if unknown:
        p.error(f"{unknown[0]}: not something Apache httpd can be told through this adapter")
    if args.spawn_mode != "ramp":
        p.error("--spawn-mode: Apache httpd only ramps (1, 2, 4 ... 32 children per second)")
    if args.maintenance_interval_ms not in (None, 1000):
        # Tests shorten the tick only to finish sooner; Apache's stays one second.
        print(f"apache-httpd adapter: --maintenance-interval-ms {args.maintenance_interval_ms} ignored: "
              "Apache httpd's tick is fixed at one second", file=sys.stderr, flush=True)
    if not os.path.exists(APACHE):
        p.error(f"{APACHE} not found: apt-get install apache2")

    work = tempfile.mkdtemp(prefix="conformance-apache-")
    os.chmod(work, 0o755)
    docs = args.document_root or os.path.join(work, "htdocs")
    if not args.document_root:
        os.makedirs(docs)
        with open(os.path.join(docs, "index.html"), "w") as f:
            f.write("<!doctype html><title>It works</title><h1>It works!</h1>\n")
        os.chmod(docs, 0o755)
        os.chmod(os.path.join(docs, "index.html"), 0o644)
    listens = []
    for spec in args.listen or ["127.0.0.1:8080"]:
        host, _, port = spec.rpartition(":")
        host = host.strip("[]")
        if port == "0":
            port = str(free_port(host))
        listens.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    d = {
        "ServerLimit": args.server_limit, "MaxRequestWorkers": args.max_request_workers,
        "StartServers": args.start_servers, "MinSpareServers": args.min_spare_servers,
        "MaxSpareServers": args.max_spare_servers, "MaxConnectionsPerChild": args.max_connections_per_child,
        "GracefulShutdownTimeout": args.graceful_shutdown_timeout, "KeepAliveTimeout": args.keep_alive_timeout,
        "MaxKeepAliveRequests": args.max_keep_alive_requests, "Timeout": args.timeout,
        "ListenBacklog": args.listen_backlog,
    }
    conf = [
        f"ServerRoot {work}",
        f"LoadModule mpm_prefork_module {MODULES}/mod_mpm_prefork.so",
        f"LoadModule authz_core_module {MODULES}/mod_authz_core.so",
        f"LoadModule authz_host_module {MODULES}/mod_authz_host.so",
        f"LoadModule status_module {MODULES}/mod_status.so",
        f"LoadModule mime_module {MODULES}/mod_mime.so",
        f"LoadModule dir_module {MODULES}/mod_dir.so",
        "ServerName localhost",
        f"User {args.user}",
        f"Group {args.group}",
        f"PidFile {args.pid_file or os.path.join(work, 'httpd.pid')}",
        "ErrorLog /dev/stderr",
        "LogLevel info",
        f"DocumentRoot {docs}",
        "DirectoryIndex index.html",
        "TypesConfig /etc/mime.types",
        f"KeepAlive {'On' if args.keep_alive == 'true' else 'Off'}",
        "ExtendedStatus On",
        f"<Location {args.status_path}>",
        "  SetHandler server-status",
        "  Require local",
        "</Location>",
        f'<Directory "{docs}">',
        "  Require all granted",
        "</Directory>",
    ]
    conf += [f"Listen {l}" for l in listens]
    conf += [f"{k} {v}" for k, v in d.items() if v is not None]
    if args.accept_filter:
        # On Linux Apache treats httpready as data (TCP_DEFER_ACCEPT): it has no gate.
        conf.append(f"AcceptFilter http {args.accept_filter}")
    if args.accept_mutex in ("fcntl", "flock", "sysvsem", "pthread"):
        conf.append(f"Mutex {args.accept_mutex}{':' + work if args.accept_mutex in ('fcntl', 'flock') else ''} mpm-accept")
    path = os.path.join(work, "httpd.conf")
    with open(path, "w") as f:
        f.write("\n".join(conf) + "\n")
    # The contract's lines (CONFORMANCE.md): the addresses, then Apache's own AH00163 line
    # ("resuming normal operations") comes from its error log on standard error.
    print(f"apache-httpd adapter: listening on {', '.join(listens)}; accept lock: {args.accept_mutex}",
          file=sys.stderr, flush=True)
    # Apache's parent signals its whole process group for a restart (SIGHUP) and a stop
    # (SIGTERM): prefork.c's ap_unixd_killpg(getpgrp(), ...). Detached, it leads a group of its
    # own; in the foreground it would signal whoever started it, so give it its own group.
    os.setpgid(0, 0)
    os.execv(APACHE, [APACHE, "-DFOREGROUND", "-f", path])


if __name__ == "__main__":
    main(sys.argv[1:])
