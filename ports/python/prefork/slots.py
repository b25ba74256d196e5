"""Slot states, the slot word, and the scoreboard in shared memory (SPEC.md §2, §3, §13.2).

Python has no atomic compare-and-swap on shared memory, so each slot word is guarded by an
``fcntl`` byte-range lock on the byte at offset = slot index of a lock file (SPEC §13.2): a
writer takes the slot's lock, reads the word, decides, writes it, and lets go. That is the
compare-and-swap of SPEC §3.2, and the kernel releases the lock if its holder dies.

The parent never blocks on a slot's lock (a child stopped by SIGSTOP while it holds one would
wedge it): it tries without blocking for a short while and otherwise treats the slot as busy
for this look.
"""

import errno
import fcntl
import mmap
import os
import struct
import tempfile
import time

# --- SPEC §2.1: the states, their codes and letters ---------------------------------------------
DEAD, STARTING, READY = 0, 1, 2
BUSY_READ, BUSY_WRITE, KEEPALIVE, LOGGING, CLOSING = 3, 4, 5, 6, 8
GRACEFUL, IDLE_KILL = 9, 10
DRAINING = 1 << 32  # the generation word's bit for a graceful stop's drain (SPEC §7.5)

LETTERS = {DEAD: ".", STARTING: "S", READY: "_", BUSY_READ: "R", BUSY_WRITE: "W",
           KEEPALIVE: "K", LOGGING: "L", CLOSING: "C", GRACEFUL: "G", IDLE_KILL: "I"}
BUSY = frozenset({BUSY_READ, BUSY_WRITE, KEEPALIVE, LOGGING, CLOSING})
WORKING = frozenset({STARTING, READY}) | BUSY  # what a graceful restart marks G
LIVE = WORKING | {GRACEFUL, IDLE_KILL}
DIRECTIVES = frozenset({GRACEFUL, IDLE_KILL})

# --- SPEC §2.3: the transition table ------------------------------------------------------------
PARENT, CHILD = "parent", "child"
TRANSITIONS = [
    (PARENT, {DEAD}, {STARTING}),              # spawn
    (PARENT, LIVE, {DEAD}),                    # reaped, or fork() failed
    (PARENT, WORKING, {GRACEFUL}),             # graceful restart or stop
    (PARENT, {READY}, {IDLE_KILL}),            # retirement claim
    (CHILD, {STARTING}, {READY}),              # initialised
    (CHILD, {READY}, {BUSY_READ}),             # work claim
    (CHILD, BUSY, {READY}),                    # connection done, or accept found none
    (CHILD, BUSY, BUSY),                       # serving
]


def allowed(side, frm, to):
    """Is `frm -> to` in SPEC §2.3's table for `side`?"""
    return any(s == side and frm in f and to in t for s, f, t in TRANSITIONS)


# --- SPEC §3.1: the slot word -------------------------------------------------------------------
INCARNATION_MASK = (1 << 24) - 1


def encode(state, incarnation, generation):
    return (generation & 0xFFFFFFFF) << 32 | (incarnation & INCARNATION_MASK) << 8 | state


def decode(word):
    """(state, incarnation, generation), or None for a corrupt word (an unknown state code)."""
    state = word & 0xFF
    if state not in LETTERS:
        return None
    return state, (word >> 8) & INCARNATION_MASK, word >> 32


# --- the shared memory: the layout of SPEC §13.7 (the parts this port uses) ----------------------
HEADER = 128
RECORD = 256
MAGIC = int.from_bytes(b"PREFORK1", "little")
H_GENERATION, H_PARENT_PID, H_STARTED_MS = 32, 40, 48
R_WORD, R_PID, R_CONNECTIONS, R_REQUESTS, R_BYTES = 0, 8, 24, 32, 40
R_ACTIVITY = 56  # SPEC §3.5: bit 0 H (holds the accept lock), bits 1-31 lock acquisitions
R_STARTED_MS, R_LAST_USED_MS, R_EXIT_REASON = 64, 72, 80
R_KILLED_FOR, R_KILLED_AT_MS = 88, 96  # SPEC §13.7: the parent's last kill (1 = accept lock) and its time
R_CLIENT, R_REQUEST = 128, 176
CLIENT_BYTES, REQUEST_BYTES = 48, 80

# SPEC §13.7: the exit reasons a child leaves in its record.
RETIRED, GRACEFUL_EXIT, MAX_CONNECTIONS, LOCK_FAILED, WAIT_FAILED, ACCEPT_FAILED, SLOT_LOST = 1, 2, 3, 4, 5, 6, 7


class SlotBusy(Exception):
    """The parent could not take a slot's lock without waiting (a child is changing it)."""


class Board:
    """The scoreboard: a MAP_SHARED anonymous mapping made before the first fork, and the lock
    file whose byte `i` guards slot `i`'s word (byte `server_limit` guards the generation)."""

    def __init__(self, server_limit):
        self.server_limit = server_limit
        self.mem = mmap.mmap(-1, HEADER + RECORD * server_limit)  # MAP_SHARED | MAP_ANONYMOUS
        # One descriptor for the life of every process: closing any descriptor of this file
        # would drop all of the process's locks on it (SPEC §13.2's pitfall).
        self.lock_file = tempfile.TemporaryFile(prefix="prefork-py-slots-")
        self.mem[0:8] = struct.pack("<Q", MAGIC)
        self._put(16, server_limit)
        self._put(24, RECORD)

    # raw 8-byte fields (always whole: one pack or unpack of an aligned u64)
    def _get(self, off):
        return struct.unpack_from("<Q", self.mem, off)[0]

    def _put(self, off, value):
        struct.pack_into("<Q", self.mem, off, value & 0xFFFFFFFFFFFFFFFF)

    def field(self, slot, off):
        return self._get(HEADER + RECORD * slot + off)

    def set_field(self, slot, off, value):
        self._put(HEADER + RECORD * slot + off, value)

    def add_field(self, slot, off, n):
        self.set_field(slot, off, self.field(slot, off) + n)

    def text(self, slot, off, size):
        raw = bytes(self.mem[HEADER + RECORD * slot + off:HEADER + RECORD * slot + off + size])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def set_text(self, slot, off, size, text):
        raw = text.encode("utf-8", "replace")[:size].ljust(size, b"\0")
        start = HEADER + RECORD * slot + off
        self.mem[start:start + size] = raw

    # the per-slot lock
    def _lock(self, index, wait):
        """Takes byte `index`'s lock. `wait=False` (the parent): tries for up to 20 ms, then
        raises SlotBusy rather than block behind a child that may be stopped."""
        if wait:
            fcntl.lockf(self.lock_file, fcntl.LOCK_EX, 1, index)
            return
        deadline = time.monotonic() + 0.02
        while True:
            try:
                fcntl.lockf(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
                return
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                    if e.errno in (errno.EACCES, errno.EAGAIN):
                        raise SlotBusy(index) from None
                    raise
                time.sleep(0.0005)

    def _unlock(self, index):
        fcntl.lockf(self.lock_file, fcntl.LOCK_UN, 1, index)

    def update(self, slot, decide, wait):
        """The compare-and-swap of SPEC §3.2: under the slot's lock, `decide(word)` returns the
        new word or None (write nothing). Returns (word found, word written or None)."""
        self._lock(slot, wait)
        try:
            found = self.field(slot, R_WORD)
            new = decide(found)
            if new is not None:
                self.set_field(slot, R_WORD, new)
            return found, new
        finally:
            self._unlock(slot)

    def read_word(self, slot, wait=False):
        return self.update(slot, lambda w: None, wait)[0]

    # the running generation (SPEC §3.1): written by the parent, read by children; its bit 32
    # (DRAINING) is set while a graceful stop drains the listen queues (SPEC §7.5)
    def _generation_word(self):
        self._lock(self.server_limit, True)
        try:
            return self._get(H_GENERATION)
        finally:
            self._unlock(self.server_limit)

    def generation(self):
        return self._generation_word() & 0xFFFFFFFF

    def draining(self):
        return bool(self._generation_word() & DRAINING)

    def publish_generation(self, generation, draining=False):
        self._lock(self.server_limit, True)
        try:
            self._put(H_GENERATION, generation | (DRAINING if draining else 0))
        finally:
            self._unlock(self.server_limit)

    def snapshot(self):
        """Every slot's state (SPEC §4), read under its lock; a slot a child is changing right
        now reads as BUSY_READ (never idle, never free) until the next look."""
        states = []
        for slot in range(self.server_limit):
            try:
                d = decode(self.read_word(slot))
                states.append(d[0] if d else None)
            except SlotBusy:
                states.append(BUSY_READ)
        return states


# --- parent-side operations (SPEC §3.2) ----------------------------------------------------------

def spawn(board, slot, generation):
    """`.` -> `S` with the next incarnation; returns the born word (or None if not Dead)."""
    def decide(word):
        d = decode(word)
        if d is None or d[0] != DEAD:
            return None
        return encode(STARTING, d[1] + 1, generation)
    _, new = board.update(slot, decide, wait=False)
    return new


def reap(board, slot, born):
    """Any -> `.`, keeping the dead child's incarnation and generation (SPEC §13.6). Returns the
    state found (None if corrupt or another incarnation's)."""
    found, _ = board.update(slot, lambda w: encode(DEAD, born >> 8, born >> 32), wait=False)
    d = decode(found)
    if d is None or d[1] != (born >> 8) & INCARNATION_MASK:
        return None
    return d[0]


def mark_graceful(board, slot):
    """`S _ R W K L C` -> `G`; True if it marked."""
    def decide(word):
        d = decode(word)
        return encode(GRACEFUL, d[1], d[2]) if d and d[0] in WORKING else None
    return board.update(slot, decide, wait=False)[1] is not None


def claim_idle(board, slot):
    """The retirement claim (SPEC §3.3): `_` -> `I`; True if the parent won."""
    def decide(word):
        d = decode(word)
        return encode(IDLE_KILL, d[1], d[2]) if d and d[0] == READY else None
    try:
        return board.update(slot, decide, wait=False)[1] is not None
    except SlotBusy:
        return False  # the child is changing its state: it is not idle any more


# --- child-side operations (SPEC §3.2) -----------------------------------------------------------

class Directive(Exception):
    """The slot holds G or I (or is no longer this child's): the child must wind down."""

    def __init__(self, state):
        super().__init__(LETTERS.get(state, "?"))
        self.state = state


def child_set(board, slot, born, to):
    """Moves this child's slot to `to` if SPEC §2.3 allows it; raises Directive when the slot
    holds G or I, or belongs to another incarnation (SlotLost)."""
    incarnation = (born >> 8) & INCARNATION_MASK

    def decide(word):
        d = decode(word)
        if d is None or d[1] != incarnation:
            raise Directive(None)
        if d[0] in DIRECTIVES:
            raise Directive(d[0])
        if d[0] == to:
            return None
        if not allowed(CHILD, d[0], to):
            raise Directive(None)
        return encode(to, d[1], d[2])
    board.update(slot, decide, wait=True)


def child_check(board, slot, born):
    """Raises Directive if one is pending (SPEC §3.2 `ChildSlot::check`)."""
    d = decode(board.read_word(slot, wait=True))
    if d is None or d[1] != (born >> 8) & INCARNATION_MASK:
        raise Directive(None)
    if d[0] in DIRECTIVES:
        raise Directive(d[0])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
