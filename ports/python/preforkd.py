#!/usr/bin/env python3
"""preforkd-py: the prefork protocol of SPEC.md in Python 3 (stdlib only), serving static files.

    ports/python/preforkd.py --listen 127.0.0.1:8080 --document-root /srv/www

The same flags as preforkd for everything it implements (`--help`); a flag of preforkd's that it
does not implement is refused with a message saying so. Signals as Apache's and preforkd's:
SIGUSR1 graceful restart, SIGHUP restart, SIGWINCH graceful stop, SIGTERM or SIGINT stop.
"""

import argparse
import os
import pwd
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prefork import parent  # noqa: E402

# preforkd's settings this port does not implement (SPEC §8, §12.6), refused by name.
NOT_IMPLEMENTED = [
    "config", "max-clients", "max-requests-per-child", "max-connections-per-child-jitter",
    "request-deadline", "demand-interval-ms", "fork-rate-limit",
    "access-log", "error-log", "log-format", "request-read-timeout", "limit-request-body",
    "limit-request-fields", "limit-request-field-size", "limit-request-line", "metrics-path",
    "status-allow", "status-listen", "proxied-listen", "server-name", "max-ranges",
    "max-range-overlaps", "max-range-reversals",
]


def positive(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    return n


def boolean(text):
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"{text!r}: use true or false")


@dataclass
class Config:
    listen: list = field(default_factory=lambda: ["127.0.0.1:8080"])
    listen_backlog: int = 511
    server_limit: int = 256
    max_request_workers: int = 256
    start_servers: int = 5
    min_spare_servers: int = 5
    max_spare_servers: int = 10
    max_connections_per_child: int = 0
    accept_mutex: str = "auto"
    accept_lock_timeout_ms: int = 2000
    crash_loop_brake: bool = True
    graceful_shutdown_timeout: int = 0
    maintenance_interval_ms: int = 1000
    accept_filter: str = "none"
    document_root: str = None
    pid_file: str = None
    timeout: int = 60
    keep_alive: bool = True
    keep_alive_timeout: int = 5
    max_keep_alive_requests: int = 100
    status_path: str = "/server-status"
    credentials: tuple = None


def parse(argv):
    p = argparse.ArgumentParser(
        prog="preforkd.py",
        description="A preforking static-file server: the prefork protocol of SPEC.md in Python 3.",
        epilog="Signals: SIGUSR1 graceful restart, SIGHUP restart, SIGWINCH graceful stop, SIGTERM/SIGINT stop.")
    a = p.add_argument
    a("--listen", action="append", metavar="ADDR",
      help="IP:PORT, [IPv6]:PORT, PORT or unix:/path; repeat for several (default 127.0.0.1:8080)")
    a("--listen-backlog", type=positive, default=511, help="accept queue length (default 511)")
    a("--server-limit", type=positive, default=256, help="slots in the scoreboard (default 256)")
    a("--max-request-workers", type=positive, help="most children at once (default: server_limit)")
    a("--start-servers", type=positive, default=5, help="children at start (default 5)")
    a("--min-spare-servers", type=positive, default=5, help="fewest idle children (default 5)")
    a("--max-spare-servers", type=positive, default=10, help="most idle children (default 10)")
    a("--max-connections-per-child", type=positive, default=0, help="connections before a child is replaced (default 0: never)")
    a("--accept-filter", choices=["data", "none"], default="none",
      help="what a TCP connection brings before a child accepts it: data (its first bytes, TCP_DEFER_ACCEPT "
           "30 s) or none (default none; httpready, the gate of SPEC.md §15, is not in this port)")
    a("--accept-mutex", choices=["auto", "default", "fcntl", "none"], default="auto",
      help="the accept lock with two or more listeners: auto (= fcntl here), fcntl, none (default auto)")
    a("--accept-lock-timeout-ms", type=positive, default=2000,
      help="the stall watchdog (SPEC.md §7.8): kill an accept-lock holder that makes no progress for this long "
           "while connections wait; 0 off, else 100-600000 (default 2000)")
    a("--graceful-shutdown-timeout", type=positive, default=0, help="seconds a graceful stop may take (default 0: forever)")
    a("--maintenance-interval-ms", type=positive, default=1000, help="the tick (default 1000)")
    a("--spawn-mode", choices=["ramp"], default="ramp", help="ramp: Apache's 1, 2, 4 ... 32 per tick (the only mode here)")
    a("--without-crash-loop-brake", action="store_true",
      help="turn the crash-loop brake (SPEC.md §7.7) off: a seeded bug for the conformance suite's negative "
           "test (tests/conformance.py negative), never for serving")
    a("--conformance-features", action="store_true",
      help="print the optional features of CONFORMANCE.md this port implements (none), one per line, and exit")
    a("--document-root", help="serve files from here (default: a built-in page at /)")
    a("--pid-file", help="write the parent's pid here")
    a("--user", help="the children's account when started as root (default nobody)")
    a("--group", help="the children's group (default: the user's)")
    a("--timeout", type=positive, default=60, help="seconds for a request head to arrive (default 60)")
    a("--keep-alive", type=boolean, default=True, help="true or false (default true)")
    a("--keep-alive-timeout", type=positive, default=5, help="seconds between kept-alive requests (default 5)")
    a("--max-keep-alive-requests", type=positive, default=100, help="requests per connection (default 100)")
    a("--status-path", default="/server-status", help="the status page (default /server-status; ?auto, ?json)")
    for name in NOT_IMPLEMENTED:
        a(f"--{name}", dest="unimplemented_" + name.replace("-", "_"), metavar="...", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    refused = [name for name in NOT_IMPLEMENTED if getattr(args, f"unimplemented_{name.replace('-', '_')}") is not None]
    if refused:
        p.error(f"--{refused[0]} is a preforkd setting this port does not implement "
                f"(see ports/python/README.md; preforkd.py --help lists what it does)")
    return p, args


def config_from(p, args):
    c = Config()
    for key in ("listen_backlog", "accept_filter", "start_servers", "min_spare_servers", "max_spare_servers",
                "max_connections_per_child", "accept_mutex", "accept_lock_timeout_ms", "graceful_shutdown_timeout",
                "maintenance_interval_ms", "pid_file", "timeout", "keep_alive", "keep_alive_timeout",
                "max_keep_alive_requests", "status_path"):
        setattr(c, key, getattr(args, key))
    c.listen = args.listen or c.listen
    c.server_limit = max(1, min(args.server_limit, 200000))
    mrw = args.max_request_workers if args.max_request_workers is not None else c.server_limit
    c.max_request_workers = max(1, min(mrw, c.server_limit))
    c.start_servers = max(1, min(c.start_servers, c.max_request_workers))
    c.min_spare_servers = max(1, c.min_spare_servers)
    if c.max_spare_servers <= c.min_spare_servers:
        c.max_spare_servers = c.min_spare_servers + 1
    c.crash_loop_brake = not args.without_crash_loop_brake
    if c.accept_lock_timeout_ms and not 100 <= c.accept_lock_timeout_ms <= 600000:
        p.error(f"--accept-lock-timeout-ms {c.accept_lock_timeout_ms}: 0 (off) or 100 to 600000")
    if c.maintenance_interval_ms < 10:
        p.error("--maintenance-interval-ms: at least 10")
    if args.document_root:
        c.document_root = os.path.realpath(args.document_root)
        if not os.path.isdir(c.document_root):
            p.error(f"--document-root {args.document_root}: not a directory")
    if os.geteuid() == 0:
        user = args.user or "nobody"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            p.error(f"--user {user}: no such user")
        gid = entry.pw_gid
        if args.group:
            import grp
            try:
                gid = grp.getgrnam(args.group).gr_gid
            except KeyError:
                p.error(f"--group {args.group}: no such group")
        # Resolved here, in the parent: a child makes no NSS call (SPEC §13.5).
        c.credentials = (entry.pw_uid, gid, os.getgrouplist(user, gid))
        if not args.user:
            parent.log(f"running as root: children run as {user} (set --user to choose)")
    return c


def main(argv):
    p, args = parse(argv)
    if args.conformance_features:
        return  # no optional feature (demand spawning and the gate are not in this port)
    parent.Server(config_from(p, args)).run()


if __name__ == "__main__":
    main(sys.argv[1:])
