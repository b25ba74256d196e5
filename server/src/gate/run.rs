//! The gate process's life: set-up after fork() (as a child's: signals, no orphans, privileges
//! dropped, hardened), then the core's gate machine on epoll until it says `Exit`.
//!
//! Signals: `SIGUSR1` retire (another gate takes the listeners), `SIGWINCH` drain (a graceful
//! stop), `SIGHUP` finish (a hand-over to another server), `SIGTERM` stop now; read from a
//! signalfd in the same epoll set.

use super::{GateSetup, PREFIX_LIMIT, Passed, Received, receive, send};
use crate::creds::Credentials;
use crate::shm::GateRecord;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;
use prefork_core::exit::code;
use prefork_core::gate::{CloseReason, ConnId, Gate, GateAction, GateCounters, GateStop, HeadProgress};
use prefork_core::time::Time;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{error, warn};

const SIGNALS: u64 = u64::MAX;
const BACK: u64 = u64::MAX - 1;
const OUT: u64 = u64::MAX - 2;
const LISTENER_BASE: u64 = 1 << 62;
/// Connections accepted per listener per wake-up (the rest on the next turn: reads go on).
const ACCEPT_BURST: usize = 64;
/// The 408 the gate answers a head that did not arrive in time (Apache's text).
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 42\r\nConnection: close\r\n\r\nThe request head did not arrive in time.\r\n";
/// At most one line about shed connections per this long.
const SHED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

fn leave(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it ends the process.
    unsafe { libc::_exit(code) }
}

/// A connection the gate holds.
///
/// Its descriptor stays blocking (children read it with blocking calls and their own timeouts):
/// the gate reads and writes with `MSG_DONTWAIT` and never changes its flags. It is in the epoll
/// set only while the gate waits for more of it.
struct Held {
    fd: OwnedFd,
    listener: usize,
    bytes: Vec<u8>,
    watched: bool,
}

/// Runs a gate to its end. Never returns.
pub(crate) fn run(setup: GateSetup<'_>, creds: Option<&Credentials>, parent: Pid) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_gate(setup, creds, parent)));
    if outcome.is_err() {
        error!("the gate panicked; the parent starts another");
    }
    leave(code::CHILDSICK)
}

fn run_gate(setup: GateSetup<'_>, creds: Option<&Credentials>, parent: Pid) -> ! {
    if let Err(e) = crate::child::reset_signals() {
        error!("gate: cannot reset signals: {e}");
        leave(code::CHILDSICK);
    }
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != parent {
        leave(code::OK);
    }
    if let Some(c) = creds
        && let Err(e) = c.apply()
    {
        error!("gate: cannot run as {}: {e}", c.label);
        leave(code::CHILDSICK);
    }
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != parent {
        leave(code::OK);
    }
    if let Err(e) = crate::child::harden() {
        error!("gate: cannot harden the process: {e}");
        leave(code::CHILDSICK);
    }
    // Told apart from the children in ps and top (and by tests): /proc/PID/comm.
    let _ = nix::sys::prctl::set_name(c"prefork-gate");
    setup.board.close_descriptor_in_child();
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGWINCH, Signal::SIGUSR1, Signal::SIGHUP] {
        mask.add(s);
    }
    let signals = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            error!("gate: signalfd: {e}");
            leave(code::CHILDSICK);
        }
    };
    raise_file_limit(setup.config.capacity);
    match Loop::new(&setup, signals).and_then(|mut l| l.run()) {
        Ok(()) => leave(code::OK),
        Err(e) => {
            error!("gate: {e}");
            leave(code::CHILDSICK)
        }
    }
}

/// Every held connection is a descriptor: the soft limit goes up to what the table needs (within
/// the hard limit; a lower limit only means accept(2) fails early, and the table waits).
fn raise_file_limit(capacity: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = capacity as u64 + 256;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let to = want.min(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, to, hard).is_err() || to < want {
            warn!("gate: can hold at most {to} descriptors (RLIMIT_NOFILE); accept_filter_connections is {capacity}");
        }
    }
}

struct Loop<'s, 'a> {
    setup: &'s GateSetup<'a>,
    gate: Gate,
    epoll: Epoll,
    signals: SignalFd,
    held: HashMap<ConnId, Held>,
    next_id: ConnId,
    started: Instant,
    /// Listeners are in the wait set (taking connections or watching for pressure).
    watching_listeners: bool,
    /// The hand-over channel is in the wait set for room.
    watching_out: bool,
    published: GateCounters,
    logged: GateCounters,
    last_log: Option<Instant>,
    /// Told to retire or stop: the record's pid and held counts are the next gate's.
    leaving: bool,
}

impl<'s, 'a> Loop<'s, 'a> {
    fn new(setup: &'s GateSetup<'a>, signals: SignalFd) -> nix::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNALS))?;
        epoll.add(&setup.back_rx, EpollEvent::new(EpollFlags::EPOLLIN, BACK))?;
        for (i, l) in setup.listeners.iter().enumerate() {
            epoll.add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_BASE + i as u64))?;
        }
        let record = &setup.board.header().gate;
        record.pid.store(u64::from(std::process::id()), Ordering::Relaxed);
        Ok(Loop {
            setup,
            gate: Gate::new(setup.config),
            epoll,
            signals,
            held: HashMap::new(),
            next_id: 1,
            started: Instant::now(),
            watching_listeners: true,
            watching_out: false,
            published: GateCounters::default(),
            logged: GateCounters::default(),
            last_log: None,
            leaving: false,
        })
    }

    fn now(&self) -> Time {
        Time::from_millis(self.started.elapsed().as_millis() as u64)
    }

    fn record(&self) -> &GateRecord {
        &self.setup.board.header().gate
    }

    fn run(&mut self) -> nix::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let now = self.now();
            let wait_ms =
                self.gate.next_deadline().map_or(1000, |d| d.as_millis().saturating_sub(now.as_millis()).min(1000));
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(wait_ms as u16)) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e),
            };
            let mut pressure = false;
            for e in &events[..n] {
                match e.data() {
                    SIGNALS => self.signals_arrived(),
                    BACK => self.take_back(),
                    OUT => {
                        self.gate.handle_handoff_ready();
                        self.watch_out(false)?;
                    }
                    t if t >= LISTENER_BASE => {
                        let i = (t - LISTENER_BASE) as usize;
                        if self.gate.accepting() {
                            self.accept(i);
                        } else {
                            pressure = true;
                        }
                    }
                    id => self.read(id),
                }
            }
            let now = self.now();
            if pressure && self.gate.wants_pressure(now) {
                self.gate.handle_pressure(now);
            }
            self.gate.handle_tick(now);
            if self.act()? {
                self.publish();
                return Ok(());
            }
            if self.gate_draining_listeners() {
                self.find_listeners_empty();
                if self.act()? {
                    self.publish();
                    return Ok(());
                }
            }
            let want = self.gate.accepting() || self.gate.wants_pressure(self.now());
            self.watch_listeners(want)?;
            self.publish();
        }
    }

    /// In a graceful stop, until the listen queues are found empty.
    fn gate_draining_listeners(&self) -> bool {
        self.leaving && self.gate.accepting()
    }

    /// Accepts what each listener still holds; when none holds anything, tells the gate.
    fn find_listeners_empty(&mut self) {
        let mut any = false;
        for i in 0..self.setup.listeners.len() {
            any |= self.accept(i);
        }
        if !any {
            self.gate.handle_listeners_empty();
        }
    }

    fn signals_arrived(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => {
                    // The next gate reads the give-back channel from now on; what this one
                    // holds goes to it there.
                    self.leaving = true;
                    let _ = self.epoll.delete(&self.setup.back_rx);
                    self.gate.handle_stop(self.now(), GateStop::Retire);
                }
                Ok(Signal::SIGWINCH) => {
                    self.leaving = true;
                    self.gate.handle_stop(self.now(), GateStop::Drain);
                }
                Ok(Signal::SIGHUP) => {
                    self.leaving = true;
                    self.gate.handle_stop(self.now(), GateStop::Finish);
                }
                Ok(Signal::SIGTERM) => {
                    self.leaving = true;
                    self.gate.handle_stop(self.now(), GateStop::Now);
                }
                _ => {}
            }
        }
        if self.leaving && self.record().pid.load(Ordering::Relaxed) == u64::from(std::process::id()) {
            self.record().pid.store(0, Ordering::Relaxed);
        }
    }

    /// Accepts up to a burst from listener `i`; did it find any?
    fn accept(&mut self, i: usize) -> bool {
        let listener = &self.setup.listeners[i];
        let mut found = false;
        for _ in 0..ACCEPT_BURST {
            if !self.gate.accepting() {
                break;
            }
            let fd = match socket2::SockRef::from(&listener.as_fd()).accept() {
                Ok((socket, _)) => OwnedFd::from(socket),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) =>
                {
                    warn!("gate: accept: {e}");
                    break;
                }
                Err(_) => continue, // ECONNABORTED and the like: the next one
            };
            found = true;
            let id = self.next_id;
            self.next_id += 1;
            if self.gate.handle_accepted(self.now(), id).is_ok() {
                self.held.insert(id, Held { fd, listener: i, bytes: Vec::new(), watched: false });
                // What came with the handshake (TCP_DEFER_ACCEPT) is usually the whole head: then
                // the connection never enters the epoll set.
                self.read(id);
            }
        }
        found
    }

    /// Reads what connection `id` has sent, and tells the gate how far its head has got.
    fn read(&mut self, id: ConnId) {
        let Some(h) = self.held.get_mut(&id) else { return };
        if !self.gate.reading(id) {
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            let room = PREFIX_LIMIT - h.bytes.len();
            if room == 0 {
                break;
            }
            let want = room.min(chunk.len());
            match nix::sys::socket::recv(h.fd.as_raw_fd(), &mut chunk[..want], MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => h.bytes.extend_from_slice(&chunk[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let progress = if h.bytes.len() >= PREFIX_LIMIT {
            HeadProgress::Complete
        } else if h.bytes.is_empty() {
            HeadProgress::Partial
        } else {
            self.setup.service.head_progress(&h.bytes)
        };
        let bytes = h.bytes.len() as u64;
        if progress == HeadProgress::Complete {
            // A complete head goes to a child even if the client closed after sending it.
            if std::mem::take(&mut h.watched) {
                let _ = self.epoll.delete(&h.fd);
            }
            let _ = self.gate.handle_read(self.now(), id, bytes, progress);
            return;
        }
        if closed {
            let _ = self.gate.handle_gone(id);
            if let Some(h) = self.held.remove(&id)
                && h.watched
            {
                let _ = self.epoll.delete(&h.fd);
            }
            return;
        }
        if !h.watched {
            if self.epoll.add(&h.fd, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, id)).is_err() {
                let _ = self.gate.handle_gone(id);
                self.held.remove(&id);
                return;
            }
            h.watched = true;
        }
        let _ = self.gate.handle_read(self.now(), id, bytes, progress);
    }

    /// Connections children gave back.
    fn take_back(&mut self) {
        loop {
            match receive(self.setup.back_rx.as_fd(), self.setup.listeners.len()) {
                Received::Passed(Passed { fd, listener, bytes }) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let progress = if bytes.is_empty() {
                        HeadProgress::Partial
                    } else if bytes.len() >= PREFIX_LIMIT {
                        HeadProgress::Complete
                    } else {
                        self.setup.service.head_progress(&bytes)
                    };
                    let n = bytes.len() as u64;
                    if self.gate.handle_returned(self.now(), id, n, progress).is_err() {
                        continue; // the gate has stopped: the connection closes
                    }
                    if progress != HeadProgress::Complete
                        && self
                            .epoll
                            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, id))
                            .is_err()
                    {
                        let _ = self.gate.handle_gone(id);
                        continue;
                    }
                    self.held.insert(id, Held { fd, listener, bytes, watched: progress != HeadProgress::Complete });
                }
                Received::Invalid(why) => warn!("gate: a child gave back {why}; dropped"),
                Received::Empty | Received::Closed => return,
            }
        }
    }

    /// Carries out what the gate asks. `true`: it is done (exit).
    fn act(&mut self) -> nix::Result<bool> {
        while let Some(action) = self.gate.poll_action() {
            match action {
                GateAction::HandOver(id) => {
                    let Some(h) = self.held.get(&id) else {
                        // Cannot happen (the table and the gate agree); never hand over nothing.
                        let _ = self.gate.handle_handed(id);
                        continue;
                    };
                    let tx = &self.setup.hand_tx;
                    match send(tx.as_fd(), h.fd.as_fd(), h.listener, &h.bytes) {
                        Ok(true) => {
                            let _ = self.gate.handle_handed(id);
                            self.held.remove(&id);
                        }
                        Ok(false) => {
                            let _ = self.gate.handle_handoff_full(id);
                            self.watch_out(true)?;
                        }
                        Err(Errno::EPIPE | Errno::ECONNRESET) => {
                            // Nobody holds the other end: the parent and every child are gone.
                            return Ok(true);
                        }
                        Err(e) => {
                            error!("gate: cannot hand a connection to the children: {e}");
                            let _ = self.gate.handle_handoff_full(id);
                            self.watch_out(true)?;
                        }
                    }
                }
                GateAction::Close(id, reason) => {
                    if let Some(h) = self.held.remove(&id) {
                        if h.watched {
                            let _ = self.epoll.delete(&h.fd);
                        }
                        if reason.answers_408() {
                            let _ = nix::sys::socket::send(
                                h.fd.as_raw_fd(),
                                REQUEST_TIMEOUT,
                                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                            );
                        }
                        if reason == CloseReason::ShedIdle || reason == CloseReason::KeepAliveTimeout {
                            let _ = nix::sys::socket::shutdown(h.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
                        }
                    }
                }
                GateAction::PassOn(id) => {
                    if let Some(h) = self.held.remove(&id) {
                        if h.watched {
                            let _ = self.epoll.delete(&h.fd);
                        }
                        if !matches!(send(self.setup.back_tx.as_fd(), h.fd.as_fd(), h.listener, &h.bytes), Ok(true)) {
                            warn!("gate: a connection could not be passed on to the next gate; it closes");
                        }
                    }
                }
                GateAction::Exit => return Ok(true),
            }
        }
        Ok(false)
    }

    fn watch_listeners(&mut self, want: bool) -> nix::Result<()> {
        if want == self.watching_listeners {
            return Ok(());
        }
        let flags = if want { EpollFlags::EPOLLIN } else { EpollFlags::empty() };
        for (i, l) in self.setup.listeners.iter().enumerate() {
            self.epoll.modify(l, &mut EpollEvent::new(flags, LISTENER_BASE + i as u64))?;
        }
        self.watching_listeners = want;
        Ok(())
    }

    fn watch_out(&mut self, want: bool) -> nix::Result<()> {
        if want == self.watching_out {
            return Ok(());
        }
        let tx = &self.setup.hand_tx;
        if want {
            self.epoll.add(tx, EpollEvent::new(EpollFlags::EPOLLOUT, OUT))?;
        } else {
            self.epoll.delete(tx)?;
        }
        self.watching_out = want;
        Ok(())
    }

    /// Adds what changed to the board's gate record, and logs shed connections (at most one
    /// line per [`SHED_LOG_EVERY`]).
    fn publish(&mut self) {
        let c = self.gate.counters();
        let p = self.published;
        let r = self.record();
        for (field, now, before) in [
            (&r.taken, c.taken, p.taken),
            (&r.handed, c.handed, p.handed),
            (&r.first_byte_timeouts, c.first_byte_timeouts, p.first_byte_timeouts),
            (&r.keep_alive_timeouts, c.keep_alive_timeouts, p.keep_alive_timeouts),
            (&r.head_timeouts, c.head_timeouts, p.head_timeouts),
            (&r.shed_idle, c.shed_idle, p.shed_idle),
            (&r.shed_slow_heads, c.shed_slow_heads, p.shed_slow_heads),
            (&r.stopping, c.stopping, p.stopping),
            (&r.passed_on, c.passed_on, p.passed_on),
        ] {
            if now > before {
                field.fetch_add(now - before, Ordering::Relaxed);
            }
        }
        if !self.leaving {
            r.held.store(self.gate.held() as u64, Ordering::Relaxed);
            r.queued.store(self.gate.queued() as u64, Ordering::Relaxed);
        }
        self.published = c;
        let shed = (c.shed_idle - self.logged.shed_idle, c.shed_slow_heads - self.logged.shed_slow_heads);
        if shed != (0, 0) && self.last_log.is_none_or(|t| t.elapsed() >= SHED_LOG_EVERY) {
            warn!(
                "gate: {} connections held, the most accept_filter_connections allows: shed {} idle and {} slow \
                 request heads{}",
                self.gate.config().capacity,
                shed.0,
                shed.1,
                self.last_log.map_or(String::new(), |t| format!(" in the last {}s", t.elapsed().as_secs()))
            );
            self.logged = c;
            self.last_log = Some(Instant::now());
        }
    }
}
