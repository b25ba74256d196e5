"""The parent (SPEC.md §7): binds the listeners, maps the board, forks and reaps children, runs
the spare-server policy once a tick, and acts on the operator's signals:

    SIGUSR1  graceful restart     SIGHUP  restart     SIGWINCH  graceful stop     SIGTERM, SIGINT  stop

Signals are read as events in the main loop through `signal.set_wakeup_fd` (SPEC §13.4), never
acted on inside a handler.
"""

import ctypes
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import time

from . import child, policy, slots
from .slots import DEAD, DIRECTIVES

CHILDSICK, CHILDFATAL = 7, 15
LADDER = ((0.0, signal.SIGTERM), (3.0, signal.SIGTERM), (5.0, signal.SIGTERM), (7.0, signal.SIGTERM),
          (9.0, signal.SIGKILL))  # SPEC §7.5; give up at 10 s
GIVE_UP = 10.0
# The signals the parent acts on (SPEC §7.1).
HANDLED = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGWINCH, signal.SIGTERM, signal.SIGINT)


def log(message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} preforkd-py: {message}", file=sys.stderr, flush=True)


# A classic BPF program for a TCP listener: drop a segment with SYN and without ACK (a client's
# first packet), keep everything else (SPEC §7.5). The filter sees the segment from its TCP header.
_SYN_FILTER = [(0x30, 0, 0, 13), (0x45, 2, 0, 0x10), (0x45, 0, 1, 0x02), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]


def stop_admitting(listener):
    """A graceful stop: take no new connection, keep what is queued (SPEC §7.5)."""
    try:
        if listener.family == socket.AF_UNIX:
            listener.listen(0)
            return
        code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _SYN_FILTER))
        prog = struct.pack("HL", len(_SYN_FILTER), ctypes.addressof(code))
        listener.setsockopt(socket.SOL_SOCKET, 26, prog)  # SO_ATTACH_FILTER; copied by the kernel
    except OSError as e:
        log(f"{address_of(listener)}: cannot stop taking connections ({e}); new ones are queued until the close")


def bind(spec, backlog, accept_filter="none"):
    """`IP:PORT`, `[IPv6]:PORT`, `PORT`, or `unix:/path` -> a listening, non-blocking socket;
    `accept_filter` "data": TCP_DEFER_ACCEPT (30 s), a connection is accepted once its first bytes came."""
    if spec.startswith("unix:"):
        path = spec[5:]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
    else:
        if spec.isdigit():
            host, port = "0.0.0.0", spec
        elif spec.startswith("["):
            host, _, port = spec[1:].partition("]:")
        else:
            host, _, port = spec.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, int(port)))
        if accept_filter == "data":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
    s.listen(backlog)
    s.setblocking(False)
    return s


def address_of(s):
    a = s.getsockname()
    if s.family == socket.AF_UNIX:
        return f"unix:{a}"
    if s.family == socket.AF_INET6:
        return f"[{a[0]}]:{a[1]}"
    return f"{a[0]}:{a[1]}"


class Child:
    def __init__(self, pid, born, spawned_at, wake_w):
        self.pid, self.born, self.spawned_at, self.wake_w = pid, born, spawned_at, wake_w


class Server:
    def __init__(self, cfg):
        self.cfg = cfg
        self.listeners = [bind(spec, cfg.listen_backlog, getattr(cfg, "accept_filter", "none")) for spec in cfg.listen]
        self.board = slots.Board(cfg.server_limit)
        self.accept_lock = None
        if len(self.listeners) >= 2 and cfg.accept_mutex != "none":
            # A file only this pool uses; opened once, never closed (SPEC §13.2's pitfall).
            self.accept_lock = tempfile.TemporaryFile(prefix="prefork-py-accept-")
        self.children = {}  # slot -> Child
        self.generation = 0
        self.policy = policy.SparePolicy()
        self.brake = policy.SpawnBrake()
        self.watchdog = policy.LockWatchdog(cfg.accept_lock_timeout_ms / 1000.0)
        self.remaining_to_start = 0
        self.parent_pid = os.getpid()
        self.restarted_at = time.time()
        self.credentials = cfg.credentials
        self.sig_r, self.sig_w = os.pipe()
        os.set_blocking(self.sig_r, False)
        os.set_blocking(self.sig_w, False)

    # --- in the child, right after fork (SPEC §13.5) ---------------------------------------------
    def close_in_child(self):
        for c in self.children.values():
            os.close(c.wake_w)  # or the other children's pipes never hang up
        os.close(self.sig_r)
        os.close(self.sig_w)

    def drop_privileges(self):
        if self.credentials is not None:
            uid, gid, groups = self.credentials
            os.setgid(gid)
            os.setgroups(groups)
            os.setuid(uid)
            if uid != 0:
                try:
                    os.setuid(0)
                except PermissionError:
                    pass
                else:
                    raise OSError("root could be regained after setuid")
        # Linux: die with the parent (after the privilege drop, which clears it); the wake
        # pipe's hang-up is the portable way and covers everything else.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    # --- spawn, wake, reap -------------------------------------------------------------------------
    def live(self):
        return len(self.children)

    def spawn(self, slot, generation=None):
        generation = self.generation if generation is None else generation
        born = slots.spawn(self.board, slot, generation)
        if born is None:
            return False
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.board.set_field(slot, slots.R_STARTED_MS, int(time.time() * 1000))
        self.board.set_field(slot, slots.R_EXIT_REASON, 0)
        self.board.set_field(slot, slots.R_ACTIVITY, 0)  # a dead holder never looks like one (SPEC §3.5)
        # Blocked around fork() (SPEC §13.5): a signal that reaches the new child before it has
        # reset the parent's handlers would run one there, and write into the parent's signal pipe.
        # The child unblocks once its own handlers are in place (child.run).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(wake_r)
            os.close(wake_w)
            slots.reap(self.board, slot, born)
            pause = self.brake.fork_failed(time.monotonic())
            log(f"[AH00159] fork: {e}; no spawns for {pause:g}s")
            return False
        if pid == 0:
            os.close(wake_w)
            try:
                child.run(self, slot, born, wake_r)
            finally:
                os._exit(CHILDSICK)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(wake_r)
        self.brake.fork_succeeded()
        self.board.set_field(slot, slots.R_PID, pid)
        self.children[slot] = Child(pid, born, time.monotonic(), wake_w)
        return True

    def wake(self, slot):
        c = self.children.get(slot)
        if c is None:
            return
        try:
            os.write(c.wake_w, b"w")
        except OSError:
            pass
        try:
            os.kill(c.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass

    def startup(self, n):
        """n children into the lowest dead slots below MRW (deferred while the brake holds)."""
        if not self.brake.allows(time.monotonic()):
            self.remaining_to_start = n
            return
        states = self.board.snapshot()
        mrw = self.cfg.max_request_workers
        for slot in range(mrw):
            if n == 0 or self.live() >= mrw:
                break
            if not self.brake.allows(time.monotonic()):  # a fork failed: the rest wait (SPEC §7.7)
                self.remaining_to_start = n
                break
            if slot not in self.children and states[slot] == DEAD and self.spawn(slot):
                n -= 1

    def reap(self, running=True):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s, c in self.children.items() if c.pid == pid), None)
            if slot is None:
                log(f"[AH00167] long lost child came home! (pid {pid})")
                continue
            c = self.children.pop(slot)
            os.close(c.wake_w)
            last = slots.reap(self.board, slot, c.born)
            self.board.set_field(slot, slots.R_PID, 0)
            self.board.set_field(slot, slots.R_ACTIVITY, 0)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            current = c.born >> 32 == self.generation
            now = time.monotonic()
            if code == CHILDFATAL and current and running:
                log(f"[AH00050] child pid {pid} exit signal ... CHILDFATAL: shutting down")
                self.stop(exit_code=1)
            if code == CHILDSICK:
                self.policy.on_child_sick()
            if (current and running and self.cfg.crash_loop_brake and policy.self_inflicted(code, sig)
                    and policy.is_early(now, c.spawned_at, last)):
                pause = self.brake.early_exit(now)
                if pause is not None:
                    self.policy.on_child_sick()
                    log(f"{self.brake.early_exits} children in a row died right after start; "
                        f"pausing spawns for {pause:g}s")
            if (running and self.remaining_to_start > 0 and slot < self.cfg.max_request_workers
                    and self.live() < self.cfg.max_request_workers and self.brake.allows(now)
                    and self.spawn(slot)):
                self.remaining_to_start -= 1  # graceful-restart refill (SPEC §7.3)

    # --- the tick (SPEC §7.3) ----------------------------------------------------------------------
    def tick(self):
        now = time.monotonic()
        states = self.board.snapshot()
        for slot, state in enumerate(states):
            c = self.children.get(slot)
            if c is None and state != DEAD:  # a ghost or a corrupt word: no child of ours (SPEC §7.6)
                try:
                    self.board.update(slot, lambda w: slots.encode(DEAD, slots.decode(w)[1], 0)
                                      if slots.decode(w) else 0, wait=False)
                    log(f"slot {slot}: a word without a child; repaired")
                except slots.SlotBusy:
                    pass
            elif c is not None and state in DIRECTIVES:
                self.wake(slot)  # a lost wake-up costs at most one tick
            if c is not None and policy.is_healthy(now, c.spawned_at, state) and c.born >> 32 == self.generation:
                self.brake.healthy()
        if self.remaining_to_start > 0:
            n, self.remaining_to_start = self.remaining_to_start, 0
            self.startup(n)
            return
        limits = policy.Limits(self.cfg.min_spare_servers, self.cfg.max_spare_servers, self.cfg.max_request_workers)
        decision = self.policy.tick(states, limits, self.brake.allows(now))
        if decision.log:
            log(decision.log)
        for slot in decision.spawn:
            if not self.brake.allows(time.monotonic()):
                break  # a fork failed: no more this tick (SPEC §7.7)
            if slot not in self.children:
                self.spawn(slot)
        for slot in decision.retire:
            if slot in self.children and slots.claim_idle(self.board, slot):
                self.wake(slot)
                break

    # --- the stall watchdog's accept-lock rule (SPEC §7.8) -------------------------------------------
    def lock_holder(self):
        """The pid holding the accept lock, as the kernel knows it (F_GETLK), or None."""
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            answer = fcntl.fcntl(self.accept_lock.fileno(), fcntl.F_GETLK, query)
        except OSError:
            return None
        kind, _, _, _, pid = struct.unpack("hhqqi4x", answer)
        return None if kind == fcntl.F_UNLCK else pid

    def connections_waiting(self):
        """Whether any listener has a connection in its accept queue: TCP_INFO's tcpi_unacked on a
        listening TCP socket (the queue's length), readiness with a zero timeout on a unix one."""
        for l in self.listeners:
            if l.family == socket.AF_UNIX:
                if select.select([l], [], [], 0)[0]:
                    return True
                continue
            try:
                info = l.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            except OSError:
                continue
            if len(info) >= 28 and struct.unpack_from("I", info, 24)[0] > 0:
                return True
        return False

    def watch_lock(self):
        """One look: a holder with no progress and connections waiting for the whole limit gets
        SIGKILL (SIGTERM would stay pending in a stopped child)."""
        if self.accept_lock is None or not self.watchdog.limit:
            return
        holder = self.lock_holder()
        slot = next((s for s, c in self.children.items() if c.pid == holder), None)
        if slot is None:
            holder = None
        acquisitions = policy.activity(self.board.field(slot, slots.R_ACTIVITY))[1] if slot is not None else 0
        now = time.monotonic()
        victim = self.watchdog.look(now, holder, acquisitions, holder is not None and self.connections_waiting())
        if victim is None:
            return
        log(f"Stalled: slot {slot} pid {victim} held the accept lock without progress for "
            f"{self.cfg.accept_lock_timeout_ms} ms while connections waited; killed")
        self.board.set_field(slot, slots.R_KILLED_FOR, 1)
        self.board.set_field(slot, slots.R_KILLED_AT_MS, int(time.time() * 1000))
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- commands (SPEC §7.4, §7.5) ----------------------------------------------------------------
    def graceful_restart(self):
        self.generation += 1
        self.board.publish_generation(self.generation)  # before marking (SPEC §7.4)
        log(f"[AH00171] Graceful restart requested, doing restart (generation {self.generation})")
        self.restarted_at = time.time()
        self.mark_all()
        self.policy.on_graceful_restart()
        self.remaining_to_start = min(self.cfg.start_servers, self.cfg.max_request_workers)

    def mark_all(self):
        for slot in list(self.children):
            for _ in range(50):
                try:
                    slots.mark_graceful(self.board, slot)
                    break
                except slots.SlotBusy:
                    continue
            self.wake(slot)

    def reclaim(self):
        """SIGTERM, then again at 3, 5, 7 s, SIGKILL at 9 s, give up at 10 s (SPEC §7.5)."""
        start = time.monotonic()
        step = 0
        while self.children:
            elapsed = time.monotonic() - start
            while step < len(LADDER) and elapsed >= LADDER[step][0]:
                sig = LADDER[step][1]
                if step > 0:
                    log(f"[AH0004{5 if sig == signal.SIGTERM else 6}] child processes still did not exit, "
                        f"sending a {signal.Signals(sig).name}")
                for c in self.children.values():
                    try:
                        os.kill(c.pid, sig)
                    except ProcessLookupError:
                        pass
                step += 1
            if elapsed >= GIVE_UP:
                log("[AH00047] could not make child processes exit; giving up")
                return
            self.wait_signals(0.05)
            self.reap(running=False)

    def restart(self):
        self.generation += 1
        self.board.publish_generation(self.generation)
        log(f"[AH00170] SIGHUP received.  Attempting to restart (generation {self.generation})")
        self.reclaim()
        self.restarted_at = time.time()
        # The spawn rate and the hold-off carry over, as Apache's retained data (SPEC §7.5).
        self.startup(min(self.cfg.start_servers, self.cfg.max_request_workers))
        log(f"[AH00163] configured -- resuming normal operations (generation {self.generation})")

    def close_listeners(self):
        for l in self.listeners:
            l.close()

    def stop(self, exit_code=0):
        log("[AH00169] caught SIGTERM, shutting down")
        self.close_listeners()
        self.reclaim()
        self.remove_pid_file()
        sys.exit(exit_code)

    def graceful_stop(self):
        log("[AH00492] caught SIGWINCH, shutting down gracefully")
        # SPEC §7.5: the listeners take no new connection, keep their queues for the children
        # (which drain them before they leave: the DRAINING bit, published before the marks),
        # and close when the last child lets go of them.
        for l in self.listeners:
            stop_admitting(l)
        self.close_listeners()
        self.board.publish_generation(self.generation, draining=True)
        self.remaining_to_start = 0
        self.mark_all()
        deadline = self.cfg.graceful_shutdown_timeout
        start = time.monotonic()
        while self.children:
            if deadline and time.monotonic() - start >= deadline:
                log("graceful_shutdown_timeout reached; stopping the remaining children")
                self.reclaim()
                break
            for sig in self.wait_signals(0.1):
                if sig in (signal.SIGTERM, signal.SIGINT):
                    self.reclaim()
            self.reap(running=False)
            for slot in list(self.children):
                self.wake(slot)
        self.remove_pid_file()
        sys.exit(0)

    # --- the main loop ---------------------------------------------------------------------------
    def wait_signals(self, timeout):
        try:
            ready, _, _ = select.select([self.sig_r], [], [], max(0.0, timeout))
        except InterruptedError:
            ready = [self.sig_r]
        if not ready:
            return []
        try:
            # Each signal once, lowest number first, as a signalfd hands them over (SPEC §7.1).
            return sorted(set(os.read(self.sig_r, 256)))
        except BlockingIOError:
            return []

    def remove_pid_file(self):
        if self.cfg.pid_file:
            try:
                os.unlink(self.cfg.pid_file)
            except FileNotFoundError:
                pass

    def run(self):
        for sig in HANDLED:
            signal.signal(sig, lambda *_: None)  # only the wake-up fd's byte matters
            signal.siginterrupt(sig, False)
        signal.set_wakeup_fd(self.sig_w)
        if self.cfg.pid_file:
            with open(self.cfg.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        mechanism = "fcntl" if self.accept_lock else "none"
        log("listening on " + ", ".join(address_of(l) for l in self.listeners) + f"; accept lock: {mechanism}")
        self.board.publish_generation(0)
        self.startup(min(self.cfg.start_servers, self.cfg.max_request_workers))
        log("[AH00163] configured -- resuming normal operations (generation 0)")
        interval = self.cfg.maintenance_interval_ms / 1000.0
        next_tick = time.monotonic() + interval
        while True:
            wake_at = min(next_tick, self.watchdog.next_look() or next_tick)
            for sig in self.wait_signals(wake_at - time.monotonic()):
                if sig == signal.SIGCHLD:
                    self.reap()
                elif sig == signal.SIGUSR1:
                    self.graceful_restart()
                elif sig == signal.SIGHUP:
                    self.restart()
                elif sig == signal.SIGWINCH:
                    self.graceful_stop()
                elif sig in (signal.SIGTERM, signal.SIGINT):
                    self.stop()
            self.reap()  # a lost SIGCHLD costs at most one wait
            self.watch_lock()
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + interval

