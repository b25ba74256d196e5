"""The status pages (SPEC.md §12.5, §13.6): `?auto` with Apache's field names and order, and
`?json` with preforkd's fields. Everything comes from one snapshot of the board."""

import json
import os
import time

from . import slots
from .slots import BUSY, GRACEFUL, LETTERS, READY, STARTING


def _slots(ctx):
    board = ctx.board
    out = []
    generation = board.generation()
    for i in range(board.server_limit):
        try:
            d = slots.decode(board.read_word(i))
        except slots.SlotBusy:
            d = (slots.BUSY_READ, 0, generation)
        state, _, gen = d if d else (None, 0, 0)
        out.append({
            "slot": i,
            "state": state,
            "letter": LETTERS.get(state, "?"),
            "generation": gen,
            "pid": board.field(i, slots.R_PID),
            "connections": board.field(i, slots.R_CONNECTIONS),
            "requests": board.field(i, slots.R_REQUESTS),
            "bytes": board.field(i, slots.R_BYTES),
            "client": board.text(i, slots.R_CLIENT, slots.CLIENT_BYTES),
            "request": board.text(i, slots.R_REQUEST, slots.REQUEST_BYTES),
        })
    return generation, out


def _counts(generation, all_slots):
    """SPEC §12.5: busy = R W K L C and `_` of an older generation; idle = `_` of the running
    generation (and `S`, as Apache counts starting children idle); G only graceful."""
    busy = idle = graceful = 0
    for s in all_slots:
        if s["state"] in BUSY or (s["state"] == READY and s["generation"] != generation):
            busy += 1
        elif s["state"] in (READY, STARTING):
            idle += 1
        elif s["state"] == GRACEFUL:
            graceful += 1
    return busy, graceful, idle


def _apache_time(t):
    return time.strftime("%A, %d-%b-%Y %H:%M:%S UTC", time.gmtime(t))


def _uptime_words(seconds):
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {name}{'s' if n != 1 else ''}")
    return " ".join(parts) or "0 seconds"


def auto(ctx):
    generation, all_slots = _slots(ctx)
    busy, graceful, idle = _counts(generation, all_slots)
    now = time.time()
    uptime = int(now - ctx.restarted_at)
    accesses = sum(s["requests"] for s in all_slots)
    kbytes = sum(s["bytes"] for s in all_slots) // 1024
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    lines = [
        "localhost",
        "ServerVersion: preforkd-py/0.1.0",
        "ServerMPM: prefork",
        "Server Built: 0.1.0",
        f"CurrentTime: {_apache_time(now)}",
        f"RestartTime: {_apache_time(ctx.restarted_at)}",
        f"ParentServerConfigGeneration: {generation + 1}",
        f"ParentServerMPMGeneration: {generation}",
        f"ServerUptimeSeconds: {uptime}",
        f"ServerUptime: {_uptime_words(uptime)}",
        f"Load1: {load[0]}",
        f"Load5: {load[1]}",
        f"Load15: {load[2]}",
        f"Total Accesses: {accesses}",
        f"Total kBytes: {kbytes}",
        f"Uptime: {uptime}",
        f"BusyWorkers: {busy}",
        f"GracefulWorkers: {graceful}",
        f"IdleWorkers: {idle}",
        "Scoreboard: " + "".join(s["letter"] for s in all_slots),
    ]
    return "\n".join(lines) + "\n"


def json_report(ctx):
    generation, all_slots = _slots(ctx)
    busy, graceful, idle = _counts(generation, all_slots)
    return json.dumps({
        "server_version": "preforkd-py/0.1.0",
        "mpm": "prefork",
        "generation": generation,
        "busy_workers": busy,
        "graceful_workers": graceful,
        "idle_workers": idle,
        "scoreboard": "".join(s["letter"] for s in all_slots),
        "parent_pid": os.getppid(),
        "slots": [{k: v for k, v in s.items() if k != "state"} | {"holds_accept_lock": False}
                  for s in all_slots],
    })
