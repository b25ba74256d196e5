#!/usr/bin/env python3
"""The conformance suite (CONFORMANCE.md): the pool tier of the black-box tests, run against an
implementation chosen by a path.

    tests/conformance.py pool BIN     run the pool tier against BIN, and the tests of the optional
                                      features BIN declares (exit 1 if a test fails)
    tests/conformance.py negative     the tier's negative tests: the Python port with its crash-loop
                                      brake (--without-crash-loop-brake), its watchdog or its
                                      max_connections_per_child turned off must fail that test
                                      (exit 0 when each does)
    tests/conformance.py table        run them against preforkd, ports/python and Apache httpd
                                      (tests/adapters/apache-httpd.py), one test at a time, and
                                      rewrite the table in CONFORMANCE.md

Every test runs through `cargo test -p prefork-tests` with PREFORKD_BIN=BIN. An implementation
declares its optional features by printing their names, one per line, for
`BIN --conformance-features` (exit 0); one that does not know the flag declares none.
"""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (test file, test name, what it checks): the pool tier, in CONFORMANCE.md's order.
POOL_TIER = [
    ("pool", "the_pool_starts_at_start_servers_and_ramps_1_2_4_8_while_clients_wait",
     "start_servers children, then Apache's ramp: 1, 2, 4, 8 per tick while clients wait"),
    ("pool", "an_idle_surplus_is_retired_one_child_per_tick_down_to_max_spare_servers",
     "one retirement per tick, down to max_spare_servers; ?auto agrees"),
    ("pool", "status_counts_equal_a_recount_from_proc_and_a_killed_child_is_replaced",
     "?auto and ?json counts equal a /proc recount; a killed child is reaped and replaced"),
    ("pool", "a_thousand_random_child_kills_leave_no_stale_slot_and_no_zombie",
     "1000 random child kills under load: no stale slot, no zombie, counts = /proc"),
    ("pool", "killing_the_accept_lock_holder_never_hangs_the_pool",
     "100 kills of the accept-lock holder (2 listeners, fcntl): both listeners serve again"),
    ("pool", "graceful_restarts_under_mixed_load_lose_nothing_and_retire_old_children",
     "20 graceful restarts under load: 0 failed requests, old generations gone"),
    ("pool", "a_hard_restart_replaces_every_child_and_keeps_serving",
     "SIGHUP: generation +1, every child replaced, serving"),
    ("pool", "a_graceful_stop_under_load_completes_requests_in_flight_and_queued_then_refuses",
     "SIGWINCH under load: the request in flight answered, 0 failed, then refused"),
    ("pool", "a_graceful_stop_serves_the_connections_queued_behind_busy_children",
     "SIGWINCH with every child busy and 3 requests queued: all answered (SPEC §7.5, I32)"),
    ("pool", "a_stop_escalates_to_sigkill_for_a_child_that_does_not_go_and_leaves_nothing",
     "SIGTERM with a stopped child: TERM, then KILL at 9 s, nothing left"),
    ("pool", "killing_the_parent_under_load_takes_every_child_down_within_a_second",
     "SIGKILL the parent under load: every child gone within 1 s"),
    # The safety mechanisms (SPEC §7.5, §7.7, §7.8): mandatory, so that a port without them fails.
    ("safety", "children_that_die_at_start_are_braked_then_the_pool_recovers",
     "crash-loop brake: children that crash at start are forked ever more slowly, then the pool recovers (§7.7)"),
    ("safety", "a_fork_failure_pauses_spawning_and_the_pool_comes_up_when_forks_succeed",
     "fork failures (pids cgroup): AH00159, spawning paused 1, 2, 4 s, then the pool comes up (§7.7)"),
    ("safety", "children_are_replaced_after_max_connections_per_child",
     "max_connections_per_child 3: 30 connections need at least 10 children (§6.4)"),
    ("safety", "a_graceful_stop_with_a_busy_child_ends_at_graceful_shutdown_timeout",
     "graceful_shutdown_timeout 2 with a busy child: the stop ends after 2 s, nothing left (§7.5)"),
    ("safety", "a_stopped_accept_lock_holder_is_killed_and_both_listeners_answer_within_the_watchdog_limit",
     "stall watchdog: a SIGSTOPped lock holder is killed, both listeners answer within 1 s and a tick (§7.8)"),
]

# Optional features: run only against an implementation that declares them (--conformance-features).
OPTIONAL = [
    ("demand", "demand spawning (SPEC §5.1a)",
     [("safety", "demand_spawning_forks_for_waiting_connections_within_a_tick",
       "12 clients waiting: the pool grows from 1 to 12 children within 1.5 s")]),
    ("gate", "the gate, accept_filter httpready (SPEC §15)",
     [("slow_clients", "slow_heads_and_idle_connections_do_not_keep_requests_from_the_children",
       "24 unfinished heads and 6 idle connections against 3 children: 10 requests answered")]),
]

# The tier's negative tests: the Python port with a mechanism turned off, by a flag appended to
# every start (the last of a repeated flag wins), must fail that mechanism's test, and the failure
# must name it. The brake has a seeded-bug flag for this; the others are turned off by their own
# settings.
NEGATIVE_PORT = "ports/python/preforkd.py"
NEGATIVES = [
    ("--without-crash-loop-brake",
     ("safety", "children_that_die_at_start_are_braked_then_the_pool_recovers", ""), "the crash-loop brake"),
    ("--accept-lock-timeout-ms 0",
     ("safety", "a_stopped_accept_lock_holder_is_killed_and_both_listeners_answer_within_the_watchdog_limit", ""),
     "SPEC §7.8"),
    ("--max-connections-per-child 0",
     ("safety", "children_are_replaced_after_max_connections_per_child", ""), "max_connections_per_child"),
]

IMPLEMENTATIONS = [
    ("preforkd", None),
    ("ports/python", "ports/python/preforkd.py"),
    ("Apache httpd 2.4 prefork", "tests/adapters/apache-httpd.py"),
]


def cargo_test(binary, tests):
    env = dict(os.environ)
    if binary:
        env["PREFORKD_BIN"] = os.path.join(ROOT, binary)
    files = sorted({f for f, _, _ in tests})
    cmd = ["cargo", "test", "-q", "--locked", "-p", "prefork-tests"]
    for f in files:
        cmd += ["--test", f]
    cmd += ["--", "--test-threads", "1", "--exact", "--nocapture"] + [t for _, t, _ in tests]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    # A name that matches no test would run nothing and pass: every test named must have run.
    ran = sum(int(n) for n in re.findall(r"running (\d+) tests?", r.stdout))
    if r.returncode == 0 and ran != len(tests):
        r.returncode = 1
        r.stderr += f"\nconformance: {len(tests)} test(s) named, {ran} ran: a name in POOL_TIER matches no test\n"
    return r


def features(binary):
    """The optional features `binary` declares (`--conformance-features`); none if it fails."""
    path = os.path.join(ROOT, binary) if binary else os.path.join(ROOT, "target", "debug", "preforkd")
    try:
        r = subprocess.run([path, "--conformance-features"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except OSError:
        return []
    return r.stdout.split() if r.returncode == 0 else []


def pool(binary):
    declared = features(binary)
    tests = POOL_TIER + [t for name, _, ts in OPTIONAL if name in declared for t in ts]
    r = cargo_test(binary, tests)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr[-20000:])
    left = [name for name, _, _ in OPTIONAL if name not in declared]
    print(f"conformance: the pool tier against {binary}: {'passed' if r.returncode == 0 else 'FAILED'}"
          f" ({len(POOL_TIER)} mandatory tests; optional features declared: {', '.join(declared) or 'none'}"
          f"{'; not declared: ' + ', '.join(left) if left else ''})", file=sys.stderr)
    return r.returncode


def negative():
    """The Python port with a safety mechanism turned off must fail that mechanism's test."""
    missed = 0
    for i, (flag, test, name) in enumerate(NEGATIVES):
        wrapper = os.path.join(ROOT, "target", f"conformance-negative-{i}.sh")
        os.makedirs(os.path.dirname(wrapper), exist_ok=True)
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec "{os.path.join(ROOT, NEGATIVE_PORT)}" "$@" {flag}\n')
        os.chmod(wrapper, 0o755)
        r = cargo_test(wrapper, [test])
        caught = r.returncode != 0 and name in r.stderr
        print(f"conformance: {NEGATIVE_PORT} {flag} {'fails' if caught else 'DOES NOT FAIL'} `{test[1]}`"
              f"{' naming ' + repr(name) if caught else ''}", file=sys.stderr)
        if not caught:
            missed += 1
            sys.stderr.write(r.stderr[-5000:])
    return 1 if missed else 0


def seconds(debug):
    """A Rust Duration's Debug text (`998.5ms`, `9.07s`, `12µs`) as seconds, two decimals."""
    m = re.fullmatch(r"([\d.]+)(ns|µs|ms|s)", debug)
    if not m:
        return debug
    scale = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return f"{float(m.group(1)) * scale:.2f} s"


def figure(results, key, pattern, fmt):
    m = re.search(pattern, results.get(key, ""))
    return fmt(m) if m else "—"


def table():
    if not os.access("/usr/sbin/apache2", os.X_OK):
        sys.exit("conformance: the table needs Apache httpd for its third column: apt-get install apache2")
    subprocess.run(["cargo", "build", "-q", "--locked", "-p", "preforkd", "--bin", "preforkd"], cwd=ROOT, check=True)
    rows = {}
    figures = {}
    notes = []
    optional_tests = [t for _, _, ts in OPTIONAL for t in ts]
    for name, binary in IMPLEMENTATIONS:
        results = {}
        declared = features(binary)
        for f, test, _ in POOL_TIER + optional_tests:
            feature = next((n for n, _, ts in OPTIONAL if any(t[1] == test for t in ts)), None)
            if feature is not None and feature not in declared:
                rows.setdefault(test, []).append("not declared")
                continue
            started = time.monotonic()
            r = cargo_test(binary, [(f, test, "")])
            ok = r.returncode == 0
            results.update(re.findall(r"RESULT ([a-z-]+): (.*)", r.stderr))
            print(f"{name}: {test}: {'pass' if ok else 'FAIL'} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            cell = "pass"
            if not ok:
                why = re.search(r"panicked at [^\n]*\n([^\n]*)", r.stderr)
                notes.append(f"{name}, `{test}`: " + (why.group(1).strip()[:160] if why else "no panic message"))
                print(f"   {notes[-1]}", file=sys.stderr)
                cell = f"**fail** [{len(notes)}]"
            rows.setdefault(test, []).append(cell)
        figures[name] = [
            figure(results, "respawn", r"replaced (\S+) after", lambda m: seconds(m.group(1))),
            figure(results, "graceful-restarts", r"requests (\d+), failed (\d+), refused (\d+)",
                   lambda m: f"{m.group(2)} failed, {m.group(3)} refused of {m.group(1)}"),
            figure(results, "parent-kill", r"(\d+) children, (\d+) left (\S+) after",
                   lambda m: f"0 of {m.group(1)} (all gone in {seconds(m.group(3))})" if m.group(2) == "0"
                   else f"{m.group(2)} of {m.group(1)}"),
            figure(results, "stop-ladder", r"exited (\S+) after", lambda m: seconds(m.group(1))),
            figure(results, "crash-loop", r"(\d+) children forked in (\S+)",
                   lambda m: f"{m.group(1)} in {seconds(m.group(2))}"),
            figure(results, "fork-failure", r"(\d+) attempts to fork in (\S+)",
                   lambda m: f"{m.group(1)} in {seconds(m.group(2))}"),
            figure(results, "watchdog", r"served after Some\((\S+)\)", lambda m: seconds(m.group(1))),
        ]
    names = [n for n, _ in IMPLEMENTATIONS]
    out = ["| pool-tier test (mandatory) | what it checks | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
    for f, test, what in POOL_TIER:
        out.append(f"| `{f}.rs: {test}` | {what} | " + " | ".join(rows[test]) + " |")
    passed = [sum(1 for t in POOL_TIER if rows[t[1]][i] == "pass") for i in range(len(names))]
    out.append("| **passed** | | " + " | ".join(
        f"**{n} / {len(POOL_TIER)}**" for n in passed) + " |")
    out += ["", "| optional feature (declared with `--conformance-features`) | its test | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names)]
    for feature, title, ts in OPTIONAL:
        for f, test, what in ts:
            out.append(f"| `{feature}`: {title} | `{f}.rs: {test}`: {what} | " + " | ".join(rows[test]) + " |")
    if notes:
        out += ["", "Why a test failed (the first line of its assertion):", ""]
        out += [f"{i}. {n.replace('|', '/')}" for i, n in enumerate(notes, 1)]
    out += ["", "| measured | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    labels = ["a killed child replaced after", "requests in 20 graceful restarts under load",
              "children left 1 s after the parent is killed",
              "parent exit after SIGTERM with a stopped child (SPEC: SIGKILL at 9 s)",
              "children forked while every child crashes at start (SPEC: 3, then 1, 2, 4, 8 s apart)",
              "fork attempts while every fork fails (SPEC: 1, 2, 4 s apart)",
              "both listeners served again after the lock holder is stopped (limit 1 s)"]
    for i, label in enumerate(labels):
        out.append(f"| {label} | " + " | ".join(figures[n][i] for n in names) + " |")
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    block = "\n".join(out) + f"\n\nGenerated by `tests/conformance.py table` on {stamp}" + \
        f" ({os.cpu_count()} cpu, debug build of preforkd, {sys.version.split()[0]} for the port).\n"
    path = os.path.join(ROOT, "CONFORMANCE.md")
    text = open(path).read()
    begin, end = "<!-- conformance-table -->", "<!-- /conformance-table -->"
    text = text[:text.index(begin) + len(begin)] + "\n" + block + text[text.index(end):]
    open(path, "w").write(text)
    print(block)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pool":
        sys.exit(pool(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "negative":
        sys.exit(negative())
    if len(sys.argv) == 2 and sys.argv[1] == "table":
        table()
        sys.exit(0)
    print(__doc__, file=sys.stderr)
    sys.exit(2)
