"""The spare-server policy (SPEC.md §5.1, Apache's ramp), the crash-loop brake (SPEC §7.7) and
the stall watchdog's accept-lock rule (SPEC §7.8).

Pure functions of plain values: no system calls, no clock (times are passed in), so the tests
check them against the SPEC's tables directly.
"""

from dataclasses import dataclass, field

from .slots import BUSY, DEAD, LIVE, READY, STARTING

MAX_SPAWN_RATE = 32          # SPEC §5.1: the ramp doubles up to 32 per tick
HOLD_OFF_AFTER_RESTART = 10  # SPEC §5.2
EARLY_EXIT_WINDOW = 2.0      # SPEC §7.3, seconds
CRASH_LOOP_THRESHOLD = 3     # SPEC §7.7
CRASH_LOOP_MAX_PAUSE = 64.0
FORK_RETRY_MAX = 10.0


@dataclass
class Limits:
    min_spare: int
    max_spare: int
    max_request_workers: int


@dataclass
class Decision:
    """What one tick decided: slots to spawn into, or retirement candidates (highest first)."""
    spawn: list = field(default_factory=list)
    retire: list = field(default_factory=list)
    log: str = ""


@dataclass
class SparePolicy:
    """SPEC §5.1's retained state."""
    idle_spawn_rate: int = 1
    hold_off: int = 0
    max_workers_reported: bool = False

    def tick(self, states, limits, spawning_allowed=True):
        """One maintenance tick on a snapshot `states` (one state per slot of server_limit;
        None = corrupt). Returns a Decision."""
        mrw = limits.max_request_workers
        below = states[:mrw]
        idle = sum(1 for s in below if s in (STARTING, READY))
        live = sum(1 for s in states if s in LIVE)  # the whole board counts against MRW (§5.3)
        budget = max(0, min(self.idle_spawn_rate, mrw - live))
        free = [i for i, s in enumerate(below) if s == DEAD][:budget]
        d = Decision()
        if idle > limits.max_spare:
            d.retire = [i for i in range(len(below) - 1, -1, -1) if below[i] == READY]
            self.idle_spawn_rate = 1
        elif idle < limits.min_spare:
            if not free:
                if not self.max_workers_reported:
                    d.log = "[AH00161] server reached MaxRequestWorkers setting, consider raising the max_request_workers setting"
                    self.max_workers_reported = True
                self.idle_spawn_rate = 1
            elif not spawning_allowed:
                pass  # held back by the brake: the rate stays as it is
            else:
                if self.idle_spawn_rate >= 8:
                    total = sum(1 for s in below if s in LIVE)
                    d.log = (f"[AH00162] server seems busy, (you may need to increase start_servers, or "
                             f"min/max_spare_servers), spawning {self.idle_spawn_rate} children, there are "
                             f"{idle} idle, and {total} total children")
                d.spawn = free
                if self.hold_off > 0:
                    self.hold_off -= 1
                else:
                    self.idle_spawn_rate = min(self.idle_spawn_rate * 2, MAX_SPAWN_RATE)
        else:
            self.idle_spawn_rate = 1
        return d

    def on_graceful_restart(self):
        self.hold_off = HOLD_OFF_AFTER_RESTART

    def on_child_sick(self):
        self.idle_spawn_rate = 1


def self_inflicted(exit_code, signal_number):
    """SPEC §7.3: a non-zero exit code, or a signal nobody sends on purpose."""
    if signal_number is not None:
        return signal_number not in (1, 9, 10, 15)  # SIGHUP, SIGKILL, SIGUSR1, SIGTERM
    return exit_code != 0


@dataclass
class SpawnBrake:
    """SPEC §7.7 and §13.6."""
    early_exits: int = 0
    fork_failures: int = 0
    paused_until: float = 0.0

    def allows(self, now):
        return now >= self.paused_until

    def _pause(self, now, seconds):
        self.paused_until = max(self.paused_until, now + seconds)

    def early_exit(self, now):
        """Counts an early exit; returns the pause (seconds) if the brake engaged."""
        self.early_exits += 1
        over = self.early_exits - CRASH_LOOP_THRESHOLD
        if over < 0:
            return None
        pause = min(float(1 << min(over, 6)), CRASH_LOOP_MAX_PAUSE)
        self._pause(now, pause)
        return pause

    def healthy(self):
        self.early_exits = 0

    def fork_failed(self, now):
        self.fork_failures += 1
        pause = min(float(1 << min(self.fork_failures - 1, 4)), FORK_RETRY_MAX)
        self._pause(now, pause)
        return pause

    def fork_succeeded(self):
        self.fork_failures = 0


def is_early(now, spawned_at, last_state):
    """SPEC §7.3: before reaching Ready, or within EARLY_EXIT_WINDOW of the spawn."""
    return last_state == STARTING or now - spawned_at < EARLY_EXIT_WINDOW


def is_healthy(now, spawned_at, state):
    """SPEC §13.6: spawned at least EARLY_EXIT_WINDOW ago and `_` or busy."""
    return now - spawned_at >= EARLY_EXIT_WINDOW and (state == READY or state in BUSY)


def activity(word):
    """SPEC §3.5's activity word: (holds the lock, lock acquisitions). Every bit pattern decodes."""
    return bool(word & 1), (word >> 1) & 0x7FFFFFFF


def acquired(word):
    """The activity word after the child took the accept lock: H set, the count one up (wrapping)."""
    held, count = activity(word)
    return (word & ~0xFFFFFFFF) | ((count + 1) & 0x7FFFFFFF) << 1 | 1


def released(word):
    return word & ~1


@dataclass
class LockWatchdog:
    """SPEC §7.8's accept-lock rule: a holder whose acquisition count has not moved while some
    listener had a connection waiting, at every look for `limit` seconds, is to be killed. Pure:
    each look passes in what the parent saw (the holder's pid or None, its count, whether a
    connection waits) and the time."""
    limit: float
    watching: tuple = None  # (pid, acquisitions, since)

    def look(self, now, holder, acquisitions, waiting):
        """The pid to kill now, or None."""
        if not self.limit or holder is None or not waiting:
            self.watching = None
            return None
        if self.watching is None or self.watching[:2] != (holder, acquisitions):
            self.watching = (holder, acquisitions, now)
            return None
        if now - self.watching[2] >= self.limit:
            self.watching = None
            return holder
        return None

    def next_look(self):
        """When the limit of the holder being watched passes (the parent looks then), or None."""
        return None if self.watching is None else self.watching[2] + self.limit
