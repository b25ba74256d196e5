//! The real [`System`] of the parent process on Linux: fork, signalfd, waitpid, kill, wake pipes,
//! listeners, accept locks, accounts. Only effects live here; what to do and when is decided by
//! the core and the supervisor (`crate::supervisor`).
//!
//! ```text
//! bind listeners -> scoreboard (memfd, MAP_SHARED) -> accept lock -> pid file
//!   -> block signals, signalfd -> Supervisor::start -> Supervisor::run -> remove pid file
//! ```
//! The parent never signals itself or its process group: only the pids the core names.

use crate::agent::AgentPort;
use crate::child::{self, ChildSetup};
use crate::creds::{self, Credentials};
use crate::listeners::{self, Listener};
use crate::locks::{AcceptLock, DEFAULT_MECHANISM};
use crate::options::{Lifecycle, OnReady, Options, ServerError};
use crate::service::Service;
use crate::shm::Scoreboard;
use crate::supervisor::{Notice, Supervisor, System};
use crate::unix_ms;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use prefork_core::config::{LockMechanism, PoolConfig};
use prefork_core::driver::Platform;
use prefork_core::exit::{ExitReason, ExitStatus, KillReason};
/// The core's signal action (nix's `Signal` is the signal number).
use prefork_core::parent::Signal as SignalAction;
use prefork_core::parent::{
    KillSignal, Level, Observation, OperatorState, ParentEvent, ParentLog, RepeatFilter, Spawn,
};
use prefork_core::time::Time;
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{error, info, warn};

const HANDLED: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
    Signal::SIGWINCH,
    Signal::SIGTERM,
    Signal::SIGINT,
];

fn log_at(level: Level, message: &dyn std::fmt::Display) {
    match level {
        Level::Error => error!("{message}"),
        Level::Warn => warn!("{message}"),
        Level::Notice | Level::Info => info!("{message}"),
    }
}

/// The accept lock `config` needs with `listeners` listeners (none with one listener, or with
/// `accept_mutex = "none"`).
fn lock_for(
    config: &PoolConfig,
    listeners: usize,
    dir: &Path,
    creds: Option<&Credentials>,
) -> Result<Option<AcceptLock>, ServerError> {
    let Some(mechanism) = config.accept_mutex.mechanism(listeners, DEFAULT_MECHANISM) else { return Ok(None) };
    let ids = creds.map(|c| (c.uid.as_raw(), c.gid.as_raw()));
    AcceptLock::create(mechanism, dir, ids).map(Some).map_err(|source| ServerError::Lock {
        mechanism: mechanism.name(),
        dir: dir.to_path_buf(),
        source,
    })
}

/// The parent's resources and its view of the operating system.
pub(crate) struct Os {
    started: Instant,
    pid: Pid,
    /// Taken (and so closed) in each child right after fork().
    signals: Option<SignalFd>,
    listeners: Vec<Listener>,
    /// The listeners came from a service manager: keep them, whatever `listen` says.
    inherited: bool,
    /// Where load balancers' agent checks are answered (`agent_listen`); closed in each child.
    agent: Option<AgentPort>,
    /// The pid file (the operator's word for the balancer lives next to it).
    pid_file: Option<PathBuf>,
    /// How this program was started: what an upgrade starts again (SPEC.md §7.11).
    exe: Option<PathBuf>,
    args: Vec<std::ffi::OsString>,
    /// The successor of an upgrade under way: its pid, and the pipe it says `ready` on.
    successor: Option<(u32, Option<OwnedFd>)>,
    /// How the successor ended, if it did before it was ready (reaped with the children).
    successor_exit: Option<ExitStatus>,
    /// The successor is ready: the listeners are its now (a unix path stays; systemd hears
    /// nothing of this parent's stop).
    handed_over: bool,
    /// A successor's pipe to its old parent: `ready` goes there once the pool serves.
    ready_to: Option<OwnedFd>,
    lock: Option<AcceptLock>,
    /// Locks of earlier configurations, kept until the parent exits (old children may use them).
    retired_locks: Vec<AcceptLock>,
    lock_dir: PathBuf,
    creds: Option<Credentials>,
    /// The scoreboard the children run on (the supervisor holds it too).
    board: Rc<Scoreboard>,
    /// Each child's slot and wake pipe (write end), by pid, until it is reaped.
    children: HashMap<u32, Forked>,
    service: Box<dyn Service>,
    on_ready: Option<OnReady>,
    notify: Option<Box<dyn FnMut(Lifecycle)>>,
    /// Bounds the core's repeated log lines (SPEC.md §7.9).
    repeats: RepeatFilter,
    /// The gate's channels (`accept_filter = "httpready"`, SPEC.md §15), made before any child
    /// that needs them.
    channels: Option<crate::gate::Channels>,
    /// Gates started and not yet reaped.
    gates: Vec<u32>,
    /// The child whose watchdog kill was just logged: its kill gets a line naming its request
    /// (only then, so that line is bounded as the core's is).
    detail_for: Option<Pid32>,
}

/// What the parent keeps of a child it forked.
struct Forked {
    slot: usize,
    /// The write end of its wake pipe.
    waker: OwnedFd,
}

/// Sets `accept_filter` on every listener. A listener that refuses it is logged and serves
/// without it (each connection then reaches a child at its handshake, as with `none`).
fn set_accept_filter(listeners: &[Listener], filter: prefork_core::config::AcceptFilter) {
    for l in listeners {
        if let Err(e) = l.set_accept_filter(filter) {
            tracing::warn!("{e}; accept_filter = \"{}\" is not in force there", filter.name());
        }
    }
}

/// `accept_filter = "httpready"` needs a service that reads HTTP request heads; any other runs
/// with `data` (Apache on a system without `accf_http` does the same).
fn gate_or_data(cfg: &mut PoolConfig, service: &dyn Service) {
    if cfg.accept_filter == prefork_core::config::AcceptFilter::HttpReady && service.gate_config().is_none() {
        tracing::debug!("accept_filter = \"httpready\": this service does not read HTTP request heads; using \"data\"");
        cfg.accept_filter = prefork_core::config::AcceptFilter::Data;
    }
}

/// Runs the parent in this process (see [`crate::Server::run`]).
pub(crate) fn run(mut options: Options) -> Result<i32, ServerError> {
    let cfg = options.config.clone();
    let (creds, note) = creds::resolve(cfg.user.as_deref(), cfg.group.as_deref()).map_err(ServerError::Credentials)?;
    if let Some(note) = note {
        info!("{note}");
    }
    let mut handoff = options.handoff.take();
    let inherited = options.inherited.is_some() || handoff.as_ref().is_some_and(|h| h.systemd);
    let handed = handoff.as_mut().map(|h| std::mem::take(&mut h.listeners));
    let listeners = match (options.inherited.take(), handed) {
        (Some(l), _) => l,
        (None, Some(l)) if inherited => l,
        // A successor keeps each handed-over socket its configuration still names (nothing
        // queued there is lost), binds what is new, and lets the rest go.
        (None, Some(l)) => {
            listeners::reconcile(l, &cfg.listen, cfg.listen_backlog).map_err(|r| ServerError::Bind(r.error))?.kept
        }
        (None, None) => listeners::bind_all(&cfg.listen, cfg.listen_backlog).map_err(ServerError::Bind)?,
    };
    let mut cfg = cfg;
    gate_or_data(&mut cfg, &*options.service);
    let channels = match cfg.accept_filter {
        prefork_core::config::AcceptFilter::HttpReady => {
            Some(crate::gate::Channels::new().map_err(|e| ServerError::Gate(e.to_string()))?)
        }
        _ => None,
    };
    if inherited {
        // The core plans for the sockets there are (children poll them, the lock follows them).
        cfg.listen = listeners.iter().map(|l| l.configured.clone()).collect();
    }
    set_accept_filter(&listeners, cfg.accept_filter);
    let handed_agent = handoff.as_mut().and_then(|h| h.agent.take());
    let agent = match (cfg.agent_listen, handed_agent) {
        (None, _) => None,
        (Some(addr), Some(fd)) => {
            let a = AgentPort::adopt(fd, options.pid_file.as_deref()).map_err(ServerError::Agent)?;
            if a.local() == addr || addr.port() == 0 && a.local().ip() == addr.ip() {
                Some(a)
            } else {
                Some(AgentPort::bind(addr, options.pid_file.as_deref()).map_err(ServerError::Agent)?)
            }
        }
        (Some(addr), None) => Some(AgentPort::bind(addr, options.pid_file.as_deref()).map_err(ServerError::Agent)?),
    };
    let pid = nix::unistd::getpid();
    let board = Rc::new(
        Scoreboard::create(cfg.server_limit as usize, pid.as_raw() as u32, unix_ms())
            .map_err(ServerError::Scoreboard)?,
    );
    let lock = lock_for(&cfg, listeners.len(), &options.lock_dir, creds.as_ref())?;
    if let Some(path) = &options.pid_file {
        std::fs::write(path, format!("{pid}\n"))
            .map_err(|source| ServerError::PidFile { path: path.clone(), source })?;
    }
    let mut mask = SigSet::empty();
    for s in HANDLED {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| ServerError::Signals(e.into()))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ServerError::Signals(e.into()))?;
    info!(
        "listening on {}; accept lock: {}",
        listeners.iter().map(|l| l.local.to_string()).collect::<Vec<_>>().join(", "),
        lock.as_ref().map_or("none", |l| l.mechanism().name())
    );
    if let Some(a) = &agent {
        info!("answering load balancers' agent checks on {}", a.local());
    }
    let os = Os {
        started: Instant::now(),
        pid,
        signals: Some(signals),
        listeners,
        inherited,
        agent,
        pid_file: options.pid_file.clone(),
        exe: std::env::current_exe().ok(),
        args: std::env::args_os().skip(1).collect(),
        successor: None,
        successor_exit: None,
        handed_over: false,
        ready_to: handoff.map(|h| h.ready),
        lock,
        retired_locks: vec![],
        lock_dir: options.lock_dir,
        creds,
        board: board.clone(),
        children: HashMap::new(),
        service: options.service,
        on_ready: options.on_ready,
        notify: options.notify,
        repeats: RepeatFilter::default(),
        channels,
        gates: vec![],
        detail_for: None,
    };
    let code = Supervisor::start(cfg, board, os, options.reload).run();
    if let Some(path) = &options.pid_file {
        // Only our own: after an upgrade the file names the successor.
        if std::fs::read_to_string(path).is_ok_and(|t| t.trim() == pid.to_string()) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(code)
}

impl Platform for Os {
    fn spawn(&mut self, spawn: &Spawn) -> Result<Pid32, String> {
        let &Spawn { slot, born, child: spec } = spawn;
        let (wake_r, wake_w) =
            pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("cannot create a wake pipe: {e}"))?;
        self.board.record(slot).prepare_for_spawn(unix_ms());
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: the parent is single-threaded (it never starts threads), so the child may run
        // ordinary code after fork().
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(wake_w);
                self.forget_parent_state();
                // A child keeps the children's ends only: the gate's sending end must close in
                // every child, or the channel never hangs up.
                let gate = self
                    .channels
                    .take()
                    .filter(|_| spec.gated)
                    .map(|c| crate::gate::ChildEnd::new(c.hand_rx, c.back_tx, self.listeners.len()));
                child::run(ChildSetup {
                    board: &self.board,
                    slot,
                    born,
                    listeners: &self.listeners,
                    lock: self.lock.as_mut(),
                    wake: wake_r,
                    creds: self.creds.as_ref(),
                    spec,
                    service: &mut *self.service,
                    parent: self.pid,
                    gate,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                drop(wake_r);
                let pid = child.as_raw() as u32;
                self.children.insert(pid, Forked { slot, waker: wake_w });
                Ok(pid)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn wake(&mut self, _: usize, pid: Pid32) {
        if let Some(c) = self.children.get(&pid) {
            let _ = nix::unistd::write(&c.waker, b"!"); // full pipe: already woken
        }
        // Interrupts a wait for the accept lock (SPEC.md §7.1).
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
    }

    fn signal(&mut self, &SignalAction { slot, pid, signal, reason }: &SignalAction) {
        let sig = if signal == KillSignal::Term { Signal::SIGTERM } else { Signal::SIGKILL };
        // The pid comes from the parent's own table, never from the board; still, never this
        // process, init, or a process group.
        if pid as i32 == self.pid.as_raw() || pid <= 1 || pid > i32::MAX as u32 {
            return;
        }
        if let (Some(KillReason::Stalled(stall)), true) = (reason, self.detail_for.take() == Some(pid)) {
            // The log names what the child was doing: text the child wrote, so escaped (it must
            // not forge log lines).
            let info = self.board.record(slot).info();
            error!(
                "child {pid} (slot {slot}) was killed by the watchdog ({}) while serving {:?}: {:?}",
                stall.name(),
                if info.client.is_empty() { "no client" } else { &info.client },
                info.request
            );
        }
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }

    fn observe(&mut self) -> Observation {
        let mut queues: Vec<_> = self.listeners.iter().map(Listener::depth).collect();
        if self.channels.is_some() && !self.gates.is_empty() {
            // Complete heads waiting for a child, as the gate says (untrusted: it only asks for
            // forks, which fork_rate_limit and max_request_workers bound).
            // Those in the gate's queue, and those in the channel (handed, not yet received).
            let g = &self.board.header().gate;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let queued = load(&g.queued).saturating_add(load(&g.handed).saturating_sub(load(&g.received)));
            queues.push(prefork_core::parent::QueueDepth {
                waiting: queued.min(u64::from(u16::MAX)) as u32,
                exact: true,
            });
        }
        Observation { queues, lock_holder: self.lock.as_ref().and_then(AcceptLock::holder) }
    }

    fn close_listeners(&mut self) {
        if self.handed_over {
            // The successor serves on these sockets (a unix socket's path stays), and answers
            // the agent checks.
            for l in &mut self.listeners {
                l.set_owned(false);
            }
            self.agent = None;
        }
        self.listeners.clear();
        if let Some(c) = &mut self.channels {
            c.let_go();
        }
    }

    fn start_successor(&mut self) -> Result<Pid32, String> {
        let exe = self.exe.clone().ok_or("the path of this program is unknown")?;
        let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("pipe: {e}"))?;
        let agent = self.agent.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let pid = self.pid.as_raw() as u32;
        let child =
            crate::upgrade::start_successor(&exe, &self.args, pid, &self.listeners, agent, &ready_w, self.inherited)
                .map_err(|e| format!("{}: {e}", exe.display()))?;
        drop(ready_w);
        let successor = child.id();
        self.successor = Some((successor, Some(ready_r)));
        self.successor_exit = None;
        Ok(successor)
    }

    fn stop_successor(&mut self, pid: Pid32) {
        if self.successor.as_ref().is_some_and(|(p, _)| *p == pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }

    fn start_gate(&mut self) -> Result<Pid32, String> {
        let config = self.service.gate_config().ok_or("the service does not read HTTP request heads")?;
        if self.channels.is_none() {
            self.channels = Some(crate::gate::Channels::new().map_err(|e| format!("cannot make its channels: {e}"))?);
        }
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: the parent is single-threaded (it never starts threads).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                self.forget_parent_state();
                let c = self.channels.take().expect("made above");
                let Some(hand_tx) = c.hand_tx else {
                    // The parent let go of it: the server stops; there is nothing to gate.
                    // SAFETY: _exit ends the process.
                    unsafe { libc::_exit(0) }
                };
                drop(c.hand_rx);
                crate::gate::run(
                    crate::gate::GateSetup {
                        listeners: &self.listeners,
                        hand_tx,
                        back_rx: c.back_rx,
                        back_tx: c.back_tx,
                        service: &*self.service,
                        config,
                        board: &self.board,
                    },
                    self.creds.as_ref(),
                    self.pid,
                )
            }
            Ok(ForkResult::Parent { child }) => {
                let pid = child.as_raw() as u32;
                self.gates.push(pid);
                Ok(pid)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn stop_gate(&mut self, pid: Pid32, how: prefork_core::parent::GateStop) {
        use prefork_core::parent::GateStop;
        if !self.gates.contains(&pid) {
            return;
        }
        let sig = match how {
            GateStop::Retire => Signal::SIGUSR1,
            GateStop::Drain => Signal::SIGWINCH,
            GateStop::Finish => Signal::SIGHUP,
            GateStop::Now => Signal::SIGTERM,
        };
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }

    fn drain_listeners(&mut self) {
        for l in &self.listeners {
            if let Err(e) = l.stop_admitting() {
                // The children still drain what is queued; what arrives meanwhile is queued too,
                // and reset if it is still there when the last child leaves (as before).
                tracing::warn!("{e}: new connections are still queued during the graceful stop");
            }
        }
        self.listeners.clear();
        if let Some(c) = &mut self.channels {
            // The gated children drain the channel until it hangs up: the gate, draining, holds
            // the other copy until it has handed over all it holds.
            c.let_go();
        }
    }

    fn log(&mut self, line: ParentLog) {
        if matches!(line, ParentLog::UpgradeReady { .. }) {
            // The core hands over to the successor now: its `CloseListeners` and `Stopping`
            // follow, and both must leave the sockets and the service to the successor.
            self.handed_over = true;
        }
        let now = self.now();
        for line in self.repeats.admit(now, line) {
            if let ParentLog::Stalled { pid, .. } = line {
                self.detail_for = Some(pid);
            }
            write_log(&line);
        }
    }

    fn event(&mut self, event: ParentEvent) {
        let moment = Lifecycle::from(&event);
        if moment == Lifecycle::Ready
            && let Some(f) = self.on_ready.take()
        {
            f(&self.listeners);
        }
        if moment == Lifecycle::Ready
            && let Some(pipe) = self.ready_to.take()
        {
            // A successor whose pool serves: the old parent hands over (SPEC.md §7.11).
            crate::upgrade::say_ready(pipe);
        }
        // After a hand-over the service goes on in the successor: a service manager must not
        // hear that it stops (the successor has said READY=1 with its MAINPID).
        let handed_stop = moment == Lifecycle::Stopping && self.handed_over;
        if let Some(f) = self.notify.as_mut()
            && !handed_stop
        {
            f(moment);
        }
    }
}

fn write_log(line: &ParentLog) {
    match line.apache_code() {
        Some(code) => log_at(line.level(), &format_args!("[{code}] {line}")),
        None => log_at(line.level(), line),
    }
}

/// The core's pid type (the platform's `Pid` is nix's).
type Pid32 = prefork_core::parent::Pid;

impl Os {
    /// Right after fork(), in the new process (a child or the gate): the parent-only descriptors
    /// close: the signalfd, the agent port, the successor's pipe, the other children's wake
    /// pipes, and the locks of earlier configurations (old children's; dropping one here only
    /// closes this process's descriptor: SPEC.md §14.4).
    fn forget_parent_state(&mut self) {
        self.children.clear();
        self.signals = None;
        self.agent = None;
        self.successor = None;
        self.ready_to = None;
        self.retired_locks.clear();
        self.gates.clear();
    }

    /// Reads what the successor wrote on its pipe: whether it said `ready`. At its end of file
    /// (it exited, or closed the pipe without a word) the pipe is let go; its exit is reaped.
    fn successor_said_ready(&mut self) -> bool {
        let Some((_, Some(pipe))) = &self.successor else { return false };
        let mut buf = [0u8; 16];
        match nix::unistd::read(pipe, &mut buf) {
            Ok(n) if n > 0 => buf[..n].starts_with(b"ready"),
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            _ => {
                if let Some((_, pipe)) = &mut self.successor {
                    *pipe = None;
                }
                false
            }
        }
    }
}

impl System for Os {
    fn sockets_outlive_us(&self) -> bool {
        self.inherited
    }

    fn now(&self) -> Time {
        Time::from_millis(self.started.elapsed().as_millis() as u64)
    }

    fn wait(&mut self, until: Option<Time>) -> Vec<Notice> {
        for summary in self.repeats.flush(self.now()) {
            write_log(&summary);
        }
        let timeout = match until {
            Some(t) => {
                let ms = t.as_millis().saturating_sub(self.now().as_millis());
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::from(1000u16),
        };
        let signals = self.signals.as_ref().expect("the parent keeps its signalfd");
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let agent_at = self.agent.as_ref().map(|agent| {
            fds.push(PollFd::new(agent.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let ready_at = self.successor.as_ref().and_then(|(_, r)| r.as_ref()).map(|r| {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => error!("poll: {e}"),
        }
        let fired = |at: Option<usize>| {
            at.and_then(|i| fds[i].revents()).is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        };
        let (agent_waiting, successor_spoke) = (fired(agent_at), fired(ready_at));
        drop(fds);
        let mut notices = vec![];
        while let Ok(Some(info)) = signals.read_signal() {
            let notice = match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => Notice::ChildExited,
                Ok(Signal::SIGUSR1) => Notice::Restart { graceful: true },
                Ok(Signal::SIGHUP) => Notice::Restart { graceful: false },
                Ok(Signal::SIGWINCH) if info.ssi_code == libc::SI_KERNEL => {
                    // Sent by the terminal because its window was resized, not by anyone asking
                    // for a graceful stop (Apache stops here; resizing a terminal should not).
                    info!(
                        "SIGWINCH from the terminal (window resized) ignored; graceful stop: kill -WINCH {}",
                        self.pid
                    );
                    continue;
                }
                Ok(Signal::SIGWINCH) => Notice::GracefulStop,
                Ok(Signal::SIGUSR2) => Notice::Upgrade,
                Ok(Signal::SIGTERM | Signal::SIGINT) => Notice::Stop,
                _ => continue,
            };
            notices.push(notice);
        }
        if agent_waiting {
            notices.push(Notice::AgentCheck);
        }
        if successor_spoke && self.successor_said_ready() {
            notices.push(Notice::SuccessorReady);
        }
        notices
    }

    fn successor_exited(&mut self) -> Option<ExitStatus> {
        self.successor_exit.take()
    }

    fn agent_operator(&mut self) -> OperatorState {
        self.agent.as_mut().map_or(OperatorState::Ready, AgentPort::operator)
    }

    fn answer_agent_checks(&mut self, line: &str) {
        if let Some(agent) = &self.agent {
            agent.answer(line);
        }
    }

    fn reap(&mut self) -> Option<(Pid32, ExitStatus, Option<ExitReason>)> {
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, c)) => (pid, ExitStatus::Code(c)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!("waitpid: {e}");
                    return None;
                }
            };
            let pid = pid.as_raw() as u32;
            if let Some(i) = self.gates.iter().position(|&g| g == pid) {
                // A gate: the core tells it from a child by its own records.
                self.gates.swap_remove(i);
                return Some((pid, status, None));
            }
            if self.successor.as_ref().is_some_and(|(p, _)| *p == pid) {
                // The successor of an upgrade is this process's child, not the pool's.
                self.successor = None;
                self.successor_exit = Some(status);
                continue;
            }
            // What the child says it left for (its slot record; it labels the log line only).
            let reported = self
                .children
                .remove(&pid)
                .and_then(|c| ExitReason::from_u8(self.board.record(c.slot).exit_reason.load(Ordering::Acquire) as u8));
            return Some((pid, status, reported));
        }
    }

    fn reconfigure(&mut self, current: &PoolConfig, next: &mut PoolConfig) -> Result<(), String> {
        // Everything that can fail, before anything in force changes: accounts, the lock, then
        // the listeners (whose reconcile either binds every new address or changes nothing).
        let creds = if next.user != current.user || next.group != current.group {
            Some(creds::resolve(next.user.as_deref(), next.group.as_deref())?.0)
        } else {
            None
        };
        if self.inherited {
            // The inherited sockets stay, whatever `listen` says (the core plans for them).
            next.listen = self.listeners.iter().map(|l| l.configured.clone()).collect();
        }
        gate_or_data(next, &*self.service);
        if next.accept_filter == prefork_core::config::AcceptFilter::HttpReady && self.channels.is_none() {
            self.channels = Some(crate::gate::Channels::new().map_err(|e| format!("the gate's channels: {e}"))?);
        }
        // A new agent address is bound before anything changes (and dropped if the rest fails).
        let agent = match next.agent_listen {
            Some(addr) if next.agent_listen != current.agent_listen => {
                Some(Some(AgentPort::bind(addr, self.pid_file.as_deref()).map_err(|e| e.to_string())?))
            }
            None if current.agent_listen.is_some() => Some(None),
            _ => None,
        };
        let wanted = next.listen.clone();
        let mechanism: Option<LockMechanism> = next.accept_mutex.mechanism(wanted.len(), DEFAULT_MECHANISM);
        let lock = if self.lock.as_ref().map(AcceptLock::mechanism) != mechanism {
            let ids = creds.as_ref().unwrap_or(&self.creds).as_ref();
            Some(lock_for(next, wanted.len(), &self.lock_dir, ids).map_err(|e| e.to_string())?)
        } else {
            None
        };
        match listeners::reconcile(std::mem::take(&mut self.listeners), &wanted, next.listen_backlog) {
            Ok(r) => {
                self.listeners = r.kept;
                drop(r.closed);
                set_accept_filter(&self.listeners, next.accept_filter);
            }
            Err(refused) => {
                self.listeners = refused.unchanged;
                return Err(refused.error.to_string());
            }
        }
        if let Some(lock) = lock {
            self.retired_locks.extend(std::mem::replace(&mut self.lock, lock));
        }
        if let Some(creds) = creds {
            self.creds = creds;
        }
        if let Some(agent) = agent {
            if let Some(a) = &agent {
                info!("answering load balancers' agent checks on {}", a.local());
            }
            self.agent = agent;
        }
        Ok(())
    }

    fn replace_service(&mut self, service: Box<dyn Service>) {
        self.service = service; // new children get it; old ones keep theirs
    }

    fn note(&mut self, level: Level, message: String) {
        log_at(level, &message);
    }
}
