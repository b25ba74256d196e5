"""The child: SPEC.md §6.2's loop, and a small HTTP/1.1 server for static files and the status
pages.

Waking a child (SPEC §7.1) is a byte on its wake pipe (for the readiness wait) plus SIGUSR1 (for
a blocked lock wait). Python retries EINTR itself (PEP 475), so the SIGUSR1 handler raises
`Woken` while the child waits for the lock, and only records the signal otherwise (SPEC §13.3).
"""

import errno
import fcntl
import os
import select
import signal
import sys
import time

from . import http, policy, slots
from .slots import BUSY_READ, READY, Directive

WAIT_TIMEOUT = 1.0  # SPEC §13.6


class Woken(Exception):
    """SIGUSR1 arrived while the child waited for the accept lock (SPEC §13.3)."""


_in_lock_wait = False


def _on_usr1(signum, frame):
    if _in_lock_wait:
        raise Woken()


def _leave(board, slot, reason, code=0):
    if reason in (slots.GRACEFUL_EXIT, slots.RETIRED, slots.MAX_CONNECTIONS) and _drain is not None:
        _drain()  # a graceful stop: serve what the listen queues hold first (SPEC §6.2, §7.5)
    if reason:
        board.set_field(slot, slots.R_EXIT_REASON, reason)
    os._exit(code)


_drain = None  # set by run(): the drain of a graceful stop


def _reason_of(directive):
    return slots.RETIRED if directive.state == slots.IDLE_KILL else (
        slots.GRACEFUL_EXIT if directive.state == slots.GRACEFUL else slots.SLOT_LOST)


def run(ctx, slot, born, wake_r):
    """Never returns. `ctx` is the parent's Server (its listeners, board, lock and settings)."""
    global _in_lock_wait
    board, cfg = ctx.board, ctx.cfg
    my_generation = born >> 32
    parent = ctx.parent_pid
    # --- after fork() (SPEC §13.5): signals, descriptors, privileges --------------------------
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # SIGTERM's default action ends the child at once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to act on (D22)
    signal.signal(signal.SIGUSR1, _on_usr1)
    signal.siginterrupt(signal.SIGUSR1, True)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    ctx.close_in_child()
    try:
        ctx.drop_privileges()
    except OSError as e:
        print(f"child slot {slot}: cannot drop privileges: {e}", flush=True, file=sys.stderr)
        os._exit(15)  # CHILDFATAL: every child would fail the same way
    if os.getppid() != parent:
        os._exit(0)
    lock = ctx.accept_lock  # None with one listener (SPEC §1.3)
    epoll = select.epoll()  # made after the fork: an inherited epoll set is shared (SPEC §13.5)
    exclusive = 0 if lock else select.EPOLLEXCLUSIVE
    for i, l in enumerate(ctx.listeners):
        epoll.register(l.fileno(), select.EPOLLIN | exclusive)
    epoll.register(wake_r, select.EPOLLIN)
    by_fd = {l.fileno(): i for i, l in enumerate(ctx.listeners)}
    cursor = 0
    served = 0
    limit = cfg.max_connections_per_child
    try:
        slots.child_set(board, slot, born, READY)
    except Directive as d:
        _leave(board, slot, _reason_of(d))

    def drain():
        """SPEC §6.2: in a graceful stop (the slot holds G or I, the DRAINING bit is set), accept on each listener in turn without waiting, without the lock, serve one request
        on each connection, and stop after a round in which every listener was empty."""
        global _drain
        _drain = None
        try:
            slots.child_check(board, slot, born)
            return
        except Directive as d:
            if d.state not in slots.DIRECTIVES or not board.draining():  # any generation (SPEC §7.5)
                return
        n, empty, i = len(ctx.listeners), 0, cursor
        while empty < n:
            l, i = ctx.listeners[i], (i + 1) % n
            try:
                conn, peer = l.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                empty += 1
                continue
            except OSError:
                _leave(board, slot, slots.ACCEPT_FAILED, 7)
            empty = 0
            board.add_field(slot, slots.R_CONNECTIONS, 1)
            conn.setblocking(True)
            http.serve(ctx, board, slot, born, conn, peer)

    global _drain
    _drain = drain

    def wound_down():
        """A directive or a new generation: the reason to leave, else None."""
        try:
            slots.child_check(board, slot, born)
        except Directive as d:
            return _reason_of(d)
        if board.generation() != my_generation:
            return slots.GRACEFUL_EXIT
        return None

    while True:
        # top
        if limit and served >= limit:
            _leave(board, slot, slots.MAX_CONNECTIONS)
        try:
            slots.child_set(board, slot, born, READY)
        except Directive as d:
            _leave(board, slot, _reason_of(d))
        if board.generation() != my_generation:
            _leave(board, slot, slots.GRACEFUL_EXIT)
        held = False
        if lock is not None:
            while not held:
                try:
                    _in_lock_wait = True
                    fcntl.lockf(lock, fcntl.LOCK_EX)
                    held = True
                    # SPEC §3.5: H and the acquisition count, the watchdog's evidence (§7.8)
                    board.set_field(slot, slots.R_ACTIVITY, policy.acquired(board.field(slot, slots.R_ACTIVITY)))
                except Woken:
                    pass
                except OSError as e:
                    print(f"child slot {slot}: accept lock: {e}", flush=True, file=sys.stderr)
                    _leave(board, slot, slots.LOCK_FAILED, 7)
                finally:
                    _in_lock_wait = False
                reason = wound_down()
                if reason:
                    if held:
                        _unlock(board, slot, lock)
                    _leave(board, slot, reason)

        def release():
            if held:
                _unlock(board, slot, lock)

        # wait
        while True:
            try:
                events = epoll.poll(WAIT_TIMEOUT)
            except OSError as e:
                release()
                _leave(board, slot, slots.WAIT_FAILED, 7)
            ready = []
            woken = not events
            for fd, _ in events:
                if fd == wake_r:
                    try:
                        data = os.read(wake_r, 64)
                    except BlockingIOError:
                        data = b"x"
                    if not data:  # hung up: the parent is gone (SPEC §13.4, §13.6)
                        os._exit(0)
                    woken = True
                else:
                    ready.append(by_fd[fd])
            if not events:
                if os.getppid() != parent:
                    os._exit(0)
                ready = [i for i, l in enumerate(ctx.listeners) if _readable(l)]
                woken = not ready
            if ready:
                break
            if woken:
                reason = wound_down()
                if reason:
                    release()
                    _leave(board, slot, reason)
        # choose round-robin from the cursor (SPEC §6.3)
        n = len(ctx.listeners)
        choice = min(ready, key=lambda i: (i - cursor) % n)
        cursor = (choice + 1) % n
        if board.generation() != my_generation:
            release()
            _leave(board, slot, slots.GRACEFUL_EXIT)
        try:
            slots.child_set(board, slot, born, BUSY_READ)  # the work claim (SPEC §3.3)
        except Directive as d:
            release()
            _leave(board, slot, _reason_of(d))
        try:
            conn, peer = ctx.listeners[choice].accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            release()
            continue  # a wasted wake-up; the top sets Ready again
        except OSError as e:
            release()
            if e.errno in (errno.EPROTO,):
                continue
            _leave(board, slot, slots.ACCEPT_FAILED, 7)
        release()
        served += 1
        board.add_field(slot, slots.R_CONNECTIONS, 1)
        conn.setblocking(True)
        http.serve(ctx, board, slot, born, conn, peer)
        board.set_field(slot, slots.R_LAST_USED_MS, int(time.time() * 1000))


def _unlock(board, slot, lock):
    fcntl.lockf(lock, fcntl.LOCK_UN)
    board.set_field(slot, slots.R_ACTIVITY, policy.released(board.field(slot, slots.R_ACTIVITY)))


def _readable(listener):
    r, _, _ = select.select([listener], [], [], 0)
    return bool(r)

