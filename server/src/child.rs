//! A child process: set-up after fork(), then the core's child loop on real system calls.
//!
//! Set-up order (each step before the next needs it):
//! 1. signals: every disposition back to default, `SIGPIPE` ignored (Rust's I/O expects EPIPE),
//!    `SIGUSR1` caught (the wake signal) but blocked except while waiting for the accept lock, the
//!    mask the parent used for its signalfd cleared;
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then a check that the parent is still the one that forked us
//!    (it may have died before the prctl): no orphans. Set again after step 4, because the kernel
//!    clears it when the credentials change;
//! 3. the accept lock's per-child set-up (flock re-opens the file) while still root;
//! 4. privileges dropped (setgid, initgroups, setuid) — a failure is `CHILDFATAL`: every child
//!    would fail the same way, so the server stops (as Apache); then `PR_SET_NO_NEW_PRIVS` (no
//!    exec can gain privileges again) and `PR_SET_DUMPABLE` 0 (no ptrace by other processes of
//!    the same user, no core dump; set after the drop, which resets it). The scoreboard's
//!    descriptor is closed (the mapping is all a child needs; SPEC.md §14 lists what a child
//!    holds);
//!    Then the scheduling policy (`child_scheduling`, SPEC.md §7.1; a failure is only logged);
//! 5. the service's `child_init`, the epoll set (the listeners, `EPOLLEXCLUSIVE` unless the accept
//!    lock is in use; the wake pipe);
//! 6. the core's `ChildLoop` until it says `Exit`; the reason goes into the slot, then `_exit`.

use crate::creds::Credentials;
use crate::listeners::Listener;
use crate::locks::{AcceptLock, LockError};
use crate::service::{Connection, Service, Status, Stream};
use crate::shm::{Scoreboard, SlotRecord};
use crate::unix_ms;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
use nix::unistd::Pid;
use prefork_core::child::{ChildAction, ChildEvent, ChildLoop};
use prefork_core::config::ChildScheduling;
use prefork_core::exit::{ExitReason, code};
use prefork_core::parent::ChildSpec;
use prefork_core::scoreboard::ChildSlot;
use prefork_core::slot::SlotWord;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{debug, error};

/// Set by the wake signal (SIGUSR1); read by the lock wait.
static WOKEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_wake(_: libc::c_int) {
    WOKEN.store(true, Ordering::Relaxed);
}

const WAKE_TOKEN: u64 = u64::MAX;
/// A child re-checks its slot at least this often even if nothing wakes it.
const WAIT_TIMEOUT_MS: u16 = 1000;

/// Everything a child needs, borrowed from the parent's (copied) memory: the one argument of the
/// child's whole life.
pub(crate) struct ChildSetup<'a> {
    pub(crate) board: &'a Scoreboard,
    pub(crate) slot: usize,
    pub(crate) born: SlotWord,
    pub(crate) listeners: &'a [Listener],
    pub(crate) lock: Option<&'a mut AcceptLock>,
    pub(crate) wake: OwnedFd,
    pub(crate) creds: Option<&'a Credentials>,
    /// What the parent's `Spawn` says the child runs with.
    pub(crate) spec: ChildSpec,
    pub(crate) service: &'a mut dyn Service,
    pub(crate) parent: Pid,
    /// A gated child's ends of the gate's channels (SPEC.md §15.5).
    pub(crate) gate: Option<crate::gate::ChildEnd>,
}

/// Leaves the process at once, without running destructors of the parent's copied state.
fn leave(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit is always safe to call; it ends the process.
    unsafe { libc::_exit(code) }
}

fn wake_mask() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    set
}

pub(crate) fn reset_signals() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing the default disposition is always sound.
        let _ = unsafe { sigaction(sig, &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty())) };
    }
    // SAFETY: SIG_IGN and a handler that only stores to an atomic are async-signal-safe.
    unsafe {
        sigaction(Signal::SIGPIPE, &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()))?;
        // Ctrl-C in a terminal signals the whole foreground process group: the parent, which gets
        // it too, stops the children in order (a child killed by SIGINT would be reported as a
        // crash).
        sigaction(Signal::SIGINT, &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()))?;
        // No SA_RESTART: the wake signal must interrupt F_SETLKW, flock and semop.
        sigaction(Signal::SIGUSR1, &SigAction::new(SigHandler::Handler(on_wake), SaFlags::empty(), SigSet::empty()))?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&wake_mask()), None)
}

/// Runs a child to its end. Never returns, also when the service panics: unwinding out of here
/// would run the copy of the parent's code this process still holds (a second "parent"), so a
/// panic ends the child with `CHILDSICK` (the panic hook has already printed the message).
pub(crate) fn run(setup: ChildSetup<'_>) -> ! {
    let slot = setup.slot;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_child(setup)));
    if outcome.is_err() {
        error!("child slot {slot}: the service panicked; the child exits and the parent replaces it");
    }
    leave(code::CHILDSICK)
}

fn run_child(setup: ChildSetup<'_>) -> ! {
    let record = setup.board.record(setup.slot);
    if let Err(e) = reset_signals() {
        error!("child slot {}: cannot reset signals: {e}", setup.slot);
        leave(code::CHILDSICK);
    }
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != setup.parent {
        leave(code::OK); // the parent is already gone
    }
    let mut setup = setup;
    let slot = setup.slot;
    if let Some(lock) = setup.lock.as_deref_mut()
        && let Err(e) = lock.child_init()
    {
        error!("child slot {slot}: cannot initialise the {} accept lock: {e}", lock.mechanism().name());
        leave(code::CHILDFATAL);
    }
    if let Some(c) = setup.creds
        && let Err(e) = c.apply()
    {
        error!("child slot {slot}: cannot run as {}: {e}", c.label);
        leave(code::CHILDFATAL);
    }
    // Again after the privilege drop: the kernel clears PR_SET_PDEATHSIG when credentials change.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != setup.parent {
        leave(code::OK);
    }
    if let Err(e) = harden() {
        error!("child slot {slot}: cannot harden the process: {e}");
        leave(code::CHILDFATAL);
    }
    if let Err(e) = schedule(setup.spec.scheduling) {
        // Not fatal: the child serves as well under the parent's policy, only with more context switches.
        tracing::warn!(
            "child slot {slot}: cannot run under SCHED_{}: {e}",
            setup.spec.scheduling.name().to_uppercase()
        );
    }
    setup.board.close_descriptor_in_child();
    if let Err(e) = setup.service.child_init() {
        error!("child slot {slot}: service initialisation failed: {e}");
        leave(code::CHILDSICK);
    }
    let reason = match serve_loop(&mut setup) {
        Ok(reason) => reason,
        Err((reason, e)) => {
            error!("child slot {slot}: {e}");
            reason
        }
    };
    record.exit_reason.store(u64::from(reason.as_u8()), Ordering::Release);
    leave(reason.exit_code())
}

/// After the privilege drop: no exec can gain privileges (setuid binaries, file capabilities),
/// and the process is not dumpable (other processes of the children's user cannot ptrace it or
/// read its memory through /proc; no core dump). Every child would fail the same way, so a
/// failure is `CHILDFATAL`.
pub(crate) fn harden() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()?;
    nix::sys::prctl::set_dumpable(false)
}

/// Puts the child under its scheduling policy (`child_scheduling`, SPEC.md §7.1). `SCHED_BATCH`
/// needs no privilege: any process may move itself between `SCHED_OTHER` and `SCHED_BATCH`.
fn schedule(policy: ChildScheduling) -> std::io::Result<()> {
    let policy = match policy {
        ChildScheduling::Batch => libc::SCHED_BATCH,
        ChildScheduling::Other => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is this process; `param` is a valid sched_param for the call.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The child's wait set: its listeners and its wake pipe.
///
/// Without the accept lock, listeners are `EPOLLEXCLUSIVE`: a connection wakes one waiting child,
/// not all (the thundering herd). With the lock, only its holder waits, so exclusivity saves
/// nothing, and it would lose wake-ups: an exclusive wake-up stops at the first epoll set with a
/// waiter, so a connection that arrives while the holder is being woken for another listener is
/// recorded only in the holder's set; the holder accepts the other connection, and the next holder
/// would sleep beside a full queue (measured: ~0.4 s stalls with concurrent connections on two
/// listeners, found by the accept-lock watchdog, SPEC.md §7.8).
fn epoll_for(listeners: &[Listener], wake: &OwnedFd, lock_in_use: bool) -> nix::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let flags = if lock_in_use { EpollFlags::EPOLLIN } else { EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE };
    for (i, l) in listeners.iter().enumerate() {
        epoll.add(l, EpollEvent::new(flags, i as u64))?;
    }
    epoll.add(wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))?;
    Ok(epoll)
}

/// A gated child's wait set: the gate's channel (exclusive: one waiting child per connection)
/// and the wake pipe.
fn epoll_for_gate(gate: &crate::gate::ChildEnd, wake: &OwnedFd) -> nix::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(gate.receiver(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0))?;
    epoll.add(wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))?;
    Ok(epoll)
}

/// The descriptors (listeners, or a gated child's one channel) with something waiting now (a
/// hung-up channel reads as readable): their indices. A zero-timeout `poll`, which asks each
/// socket rather than an epoll set's record of past wake-ups.
fn readable_now<'f>(fds: impl IntoIterator<Item = std::os::fd::BorrowedFd<'f>>, ready: &mut Vec<usize>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds: Vec<PollFd<'_>> = fds.into_iter().map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
    if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
        ready.extend(
            fds.iter()
                .enumerate()
                .filter(|(_, f)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .map(|(i, _)| i),
        );
    }
}

/// Accept errors that mean "nothing to accept now" (Apache's `ap_unixd_accept` benign list).
fn benign(e: Errno) -> bool {
    matches!(
        e,
        Errno::EAGAIN
            | Errno::EINTR
            | Errno::ECONNABORTED
            | Errno::ECONNRESET
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH
            | Errno::EPROTO
            | Errno::EPERM
    )
}

/// Empties the wake pipe. `false` when it has hung up: every write end is closed, so the parent
/// is gone (it holds the write end until it has reaped this child).
fn drain(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => return true, // EAGAIN: emptied
        }
    }
}

/// Takes the lock with the wake signal unblocked for the duration of the wait only, so a wake-up
/// interrupts the wait but never the service's I/O.
fn acquire(lock: &mut AcceptLock) -> Result<(), LockError> {
    let mask = wake_mask();
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None); // a pending wake runs now
    let result = if WOKEN.swap(false, Ordering::Relaxed) { Err(LockError::Interrupted) } else { lock.acquire(&WOKEN) };
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    if matches!(result, Err(LockError::Interrupted)) {
        WOKEN.store(false, Ordering::Relaxed);
    }
    result
}

/// The core's child loop on real system calls, until it says `Exit`.
/// Fails with the reason to leave and what went wrong.
fn serve_loop(setup: &mut ChildSetup<'_>) -> Result<ExitReason, (ExitReason, String)> {
    let ChildSetup { board, slot, born, listeners, lock, wake, spec, service, gate, .. } = setup;
    let gate: Option<&crate::gate::ChildEnd> = gate.as_ref();
    let (board, slot, born, listeners, spec): (&Scoreboard, usize, SlotWord, &[Listener], ChildSpec) =
        (board, *slot, *born, listeners, *spec);
    let record: &SlotRecord = board.record(slot);
    let me = ChildSlot::attach(board, slot, born).map_err(|e| (ExitReason::SlotLost, format!("slot {slot}: {e}")))?;
    let wake: &OwnedFd = wake;
    let setup_failed = |what: String| (ExitReason::SetupFailed, what);
    if spec.gated != gate.is_some() {
        return Err(setup_failed(format!(
            "the parent spawned a {} child, and it has {}",
            if spec.gated { "gated" } else { "listening" },
            if gate.is_some() { "the gate's channel" } else { "no gate channel" }
        )));
    }
    if !spec.gated && (spec.listeners != listeners.len() || spec.lock_in_use != lock.is_some()) {
        return Err(setup_failed(format!(
            "the parent spawned a child for {} listener(s){}, and it has {}{}",
            spec.listeners,
            if spec.lock_in_use { " with the accept lock" } else { "" },
            listeners.len(),
            if lock.is_some() { " with the accept lock" } else { "" }
        )));
    }
    let epoll = match gate {
        Some(g) => epoll_for_gate(g, wake),
        None => epoll_for(listeners, wake, spec.lock_in_use),
    }
    .map_err(|e| setup_failed(format!("epoll: {e}")))?;
    let mut child = spec.child_loop();
    // The slot's counters are cumulative over its children; this child adds what its loop counts.
    let (connections_before, wasted_before) =
        (record.connections.load(Ordering::Relaxed), record.wasted_wakeups.load(Ordering::Relaxed));
    let publish_counts = |child: &ChildLoop| {
        record.connections.store(connections_before.wrapping_add(child.connections()), Ordering::Relaxed);
        record.wasted_wakeups.store(wasted_before.wrapping_add(child.wasted_wakeups()), Ordering::Relaxed);
    };
    let mut accepted: Option<(Stream, Option<std::net::SocketAddr>, usize)> = None;
    let mut prefix: Vec<u8> = Vec::new();
    let mut ready: Vec<usize> = Vec::with_capacity(listeners.len());
    let mut events = [EpollEvent::empty(); 16];
    let mut event = ChildEvent::Started;
    loop {
        let handled = child.handle(event, &me);
        publish_counts(&child);
        let action = match handled {
            Ok(a) => a,
            Err(e) => {
                error!("child slot {slot}: {e}");
                return Ok(ExitReason::ProtocolError);
            }
        };
        event = match action {
            ChildAction::AcquireLock => match acquire(lock.as_deref_mut().expect("lock in use")) {
                Ok(()) => ChildEvent::LockAcquired,
                Err(LockError::Interrupted) => ChildEvent::LockInterrupted,
                Err(e) => {
                    error!("child slot {slot}: accept lock: {e}");
                    ChildEvent::LockFailed
                }
            },
            ChildAction::Wait if gate.is_some_and(crate::gate::ChildEnd::holds_stash) => {
                // A request taken while the last connection idled: serve it now.
                ready.clear();
                ready.push(0);
                ChildEvent::Readable(&ready)
            }
            ChildAction::Wait => match epoll.wait(&mut events, EpollTimeout::from(WAIT_TIMEOUT_MS)) {
                Ok(n) => {
                    ready.clear();
                    let mut woken = n == 0; // timeout: look at the slot again
                    for e in &events[..n] {
                        if e.data() == WAKE_TOKEN {
                            if !drain(wake) {
                                // The parent died without its PR_SET_PDEATHSIG reaching us (a
                                // service changed credentials, which clears it): nobody will
                                // reap, retire or restart this child, and the hung-up pipe would
                                // make every wait return at once. Leave, as SIGKILL would have.
                                error!("child slot {slot}: the parent is gone; exiting");
                                leave(code::OK);
                            }
                            woken = true;
                        } else {
                            ready.push(e.data() as usize);
                        }
                    }
                    if n == 0 {
                        // A timeout: also ask the sockets themselves. An exclusive wake-up
                        // that another child's wait set absorbed is never repeated, so a
                        // connection it left behind is found here, within WAIT_TIMEOUT_MS.
                        match gate {
                            Some(g) => readable_now([g.receiver()], &mut ready),
                            None => readable_now(listeners.iter().map(AsFd::as_fd), &mut ready),
                        }
                        woken = ready.is_empty();
                    }
                    if woken { ChildEvent::Woken } else { ChildEvent::Readable(&ready) }
                }
                Err(Errno::EINTR) => ChildEvent::Woken,
                Err(e) => {
                    error!("child slot {slot}: epoll_wait: {e}");
                    ChildEvent::WaitFailed
                }
            },
            ChildAction::Accept { .. } if gate.is_some() => match gate.expect("gated").next() {
                crate::gate::Received::Passed(p) => match listeners.get(p.listener) {
                    Some(l) => {
                        let stream = crate::gate::stream_of(p.fd, l);
                        let peer = match &stream {
                            Stream::Tcp(s) => s.peer_addr().ok(),
                            Stream::Unix(_) => None,
                        };
                        accepted = Some((stream, peer, p.listener));
                        prefix = p.bytes;
                        board.header().gate.received.fetch_add(1, Ordering::Relaxed);
                        ChildEvent::Accepted
                    }
                    None => ChildEvent::AcceptEmpty,
                },
                crate::gate::Received::Empty => ChildEvent::AcceptEmpty,
                crate::gate::Received::Invalid(why) => {
                    error!("child slot {slot}: the gate's channel: dropped {why}");
                    ChildEvent::AcceptEmpty
                }
                crate::gate::Received::Closed => ChildEvent::SourceClosed,
            },
            ChildAction::Accept { listener } => match accept(&listeners[listener]) {
                Ok((stream, peer_addr)) => {
                    accepted = Some((stream, peer_addr, listener));
                    ChildEvent::Accepted
                }
                Err(e) if benign(e) => ChildEvent::AcceptEmpty,
                Err(e) => {
                    error!("child slot {slot}: accept: {e}");
                    ChildEvent::AcceptFailed
                }
            },
            ChildAction::ReleaseLock => {
                if let Err(e) = lock.as_deref_mut().expect("lock in use").release() {
                    // The lock is in an unknown state: this child must not go on.
                    error!("child slot {slot}: accept lock: {e}");
                    return Ok(ExitReason::LockFailed);
                }
                ChildEvent::LockReleased
            }
            ChildAction::Serve => {
                let (stream, peer_addr, listener) = accepted.take().expect("an accepted connection");
                let status = Status::new(me, record, listeners);
                let mut conn = Connection::new(stream, peer_addr, listener, status, board, listeners);
                if let Some(g) = gate {
                    conn = conn.with_gate(std::mem::take(&mut prefix), g);
                }
                record.set_texts(Some(conn.peer()), Some(""));
                if let Err(e) = service.serve(&mut conn) {
                    debug!("child slot {slot}: connection from {}: {e}", conn.peer());
                }
                if let (Some(g), Some((stream, listener, unread))) = (gate, conn.into_given_back())
                    && !g.give_back(stream.as_fd(), listener, &unread)
                {
                    debug!("child slot {slot}: the gate cannot take an idle connection back now; it closes");
                }
                record.last_used_ms.store(unix_ms(), Ordering::Relaxed);
                ChildEvent::ConnectionDone
            }
            ChildAction::Exit(reason) => {
                if let Some(g) = gate {
                    g.return_stash();
                }
                // The parent logs every exit with this reason (bounded against floods); a line
                // here too would double the log and escape that bound.
                debug!("child slot {slot} exiting: {reason}");
                return Ok(reason);
            }
        };
    }
}

/// accept4(2) with `SOCK_CLOEXEC`, the peer's address in the same call (no getpeername).
fn accept(listener: &Listener) -> Result<(Stream, Option<std::net::SocketAddr>), Errno> {
    let (socket, addr) = socket2::SockRef::from(&listener.as_fd())
        .accept()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let stream = crate::gate::stream_of(OwnedFd::from(socket), listener);
    let peer = if listener.is_unix() { None } else { addr.as_socket() };
    Ok((stream, peer))
}
