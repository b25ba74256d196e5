//! The parent process: one thread, one loop, the core's `Parent` machine, and system calls.
//!
//! ```text
//! bind listeners -> scoreboard (memfd, MAP_SHARED) -> accept lock -> block signals, signalfd
//!   -> core.start -> loop {
//!        perform the core's actions (fork, wake, signal, close listeners, log, exit)
//!        poll(signalfd, until the core's next timeout)
//!        SIGCHLD: waitpid(WNOHANG) until nothing is left -> core.handle_child_exit
//!        SIGUSR1 / SIGHUP: reload the configuration (rejected -> keep running as is) -> restart
//!        SIGWINCH / SIGTERM / SIGINT: graceful stop / stop
//!        timeout due -> core.handle_timeout
//!      }
//! ```
//! The parent never signals itself or its process group: only the pids the core names.

use crate::child::{self, ChildSetup};
use crate::creds::{self, Credentials};
use crate::listeners::{self, Listener};
use crate::locks::{AcceptLock, Mechanism};
use crate::shm::Scoreboard;
use crate::{Lifecycle, Server, ServerError, unix_ms};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use prefork_core::config::PoolConfig;
use prefork_core::exit::{ExitReason, ExitStatus, code};
use prefork_core::parent::{Command, KillSignal, Level, Parent, ParentAction, ParentLog, Phase};
use prefork_core::time::Time;
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{error, info, warn};

const HANDLED: [Signal; 6] =
    [Signal::SIGCHLD, Signal::SIGUSR1, Signal::SIGHUP, Signal::SIGWINCH, Signal::SIGTERM, Signal::SIGINT];

fn log(l: &ParentLog) {
    let code = l.apache_code().map(|c| format!("[{c}] ")).unwrap_or_default();
    match l.level() {
        Level::Error => error!("{code}{l}"),
        Level::Warn => warn!("{code}{l}"),
        Level::Notice | Level::Info => info!("{code}{l}"),
    }
}

struct Supervisor {
    core: Parent,
    board: Scoreboard,
    listeners: Vec<Listener>,
    lock: Option<AcceptLock>,
    /// Locks of earlier configurations, kept until the parent exits (old children may use them).
    retired_locks: Vec<AcceptLock>,
    creds: Option<Credentials>,
    wakers: HashMap<u32, OwnedFd>,
    /// Taken (and so closed) in each child right after fork().
    signals: Option<SignalFd>,
    started: Instant,
    server: Server,
    pid: Pid,
    /// The listeners came from a service manager: keep them, whatever `listen` says.
    inherited: bool,
}

fn lock_for(
    cfg: &PoolConfig,
    dir: &std::path::Path,
    creds: Option<&Credentials>,
) -> Result<Option<AcceptLock>, ServerError> {
    if !cfg.lock_in_use() {
        return Ok(None);
    }
    let Some(mechanism) = Mechanism::from_config(cfg.accept_mutex) else { return Ok(None) };
    let ids = creds.map(|c| (c.uid.as_raw(), c.gid.as_raw()));
    AcceptLock::create(mechanism, dir, ids).map(Some).map_err(|source| ServerError::Lock {
        mechanism: mechanism.name(),
        dir: dir.to_path_buf(),
        source,
    })
}

pub(crate) fn run(mut server: Server) -> Result<i32, ServerError> {
    let cfg = server.config.clone();
    let (creds, note) = creds::resolve(cfg.user.as_deref(), cfg.group.as_deref()).map_err(ServerError::Credentials)?;
    if let Some(note) = note {
        info!("{note}");
    }
    let inherited = server.inherited.is_some();
    let listeners = match server.inherited.take() {
        Some(l) => l,
        None => listeners::bind_all(&cfg.listen, cfg.listen_backlog).map_err(ServerError::Bind)?,
    };
    let pid = nix::unistd::getpid();
    let board = Scoreboard::create(cfg.server_limit as usize, pid.as_raw() as u32, unix_ms())
        .map_err(ServerError::Scoreboard)?;
    let lock = lock_for(&cfg, &server.lock_dir, creds.as_ref())?;
    if let Some(path) = &server.pid_file {
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
    let on_ready = server.on_ready.take();
    let mut s = Supervisor {
        core: Parent::new(cfg.clone()),
        board,
        listeners,
        lock,
        retired_locks: vec![],
        creds,
        wakers: HashMap::new(),
        signals: Some(signals),
        started: Instant::now(),
        server,
        pid,
        inherited,
    };
    info!(
        "listening on {}; accept lock: {}",
        s.listeners.iter().map(|l| l.local.to_string()).collect::<Vec<_>>().join(", "),
        s.lock.as_ref().map_or("none", |l| l.mechanism().name())
    );
    let now = s.now();
    s.core.start(now, &s.board);
    let mut exit = s.perform();
    if let Some(f) = on_ready {
        f(&s.listeners);
    }
    s.lifecycle(Lifecycle::Ready);
    while exit.is_none() {
        exit = s.turn();
    }
    if let Some(path) = &s.server.pid_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(exit.unwrap_or(code::OK))
}

impl Supervisor {
    fn now(&self) -> Time {
        Time::from_millis(self.started.elapsed().as_millis() as u64)
    }

    /// One turn of the loop: wait for a signal or the next timeout, handle it.
    fn turn(&mut self) -> Option<i32> {
        let timeout = match self.core.poll_timeout() {
            Some(t) => {
                let ms = t.as_millis().saturating_sub(self.now().as_millis());
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::from(1000u16),
        };
        let signals = self.signals.as_ref().expect("the parent keeps its signalfd");
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => error!("poll: {e}"),
        }
        let mut pending = vec![];
        while let Ok(Some(info)) = signals.read_signal() {
            pending.push((info.ssi_signo as i32, info.ssi_code));
        }
        for (signo, code) in pending {
            let exit = match Signal::try_from(signo) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(Signal::SIGUSR1) => self.restart(true),
                Ok(Signal::SIGHUP) => self.restart(false),
                Ok(Signal::SIGWINCH) if code == libc::SI_KERNEL => {
                    // Sent by the terminal because its window was resized, not by anyone asking
                    // for a graceful stop (Apache stops here; resizing a terminal should not).
                    info!(
                        "SIGWINCH from the terminal (window resized) ignored; graceful stop: kill -WINCH {}",
                        self.pid
                    );
                    None
                }
                Ok(Signal::SIGWINCH) => self.command(Command::GracefulStop),
                Ok(Signal::SIGTERM | Signal::SIGINT) => self.command(Command::Stop),
                _ => None,
            };
            if exit.is_some() {
                return exit;
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= self.now()) {
            let now = self.now();
            self.core.handle_timeout(now, &self.board);
            return self.perform();
        }
        None
    }

    fn lifecycle(&mut self, moment: Lifecycle) {
        if let Some(f) = self.server.notify.as_mut() {
            f(moment);
        }
    }

    fn command(&mut self, command: Command) -> Option<i32> {
        let stopping = matches!(command, Command::Stop | Command::GracefulStop);
        let restarting = matches!(command, Command::GracefulRestart(_) | Command::HardRestart(_));
        if stopping && !matches!(self.core.phase(), Phase::Stopping | Phase::Draining) {
            self.lifecycle(Lifecycle::Stopping);
        }
        if restarting {
            self.lifecycle(Lifecycle::Reloading);
        }
        let now = self.now();
        self.core.handle_command(now, command, &self.board);
        let exit = self.perform();
        if restarting && self.core.phase() == Phase::Running {
            self.lifecycle(Lifecycle::Ready); // a graceful restart is in force at once
        }
        exit
    }

    /// SIGUSR1 / SIGHUP: a new configuration, or a clear refusal that changes nothing.
    fn restart(&mut self, graceful: bool) -> Option<i32> {
        let kind = if graceful { "graceful restart" } else { "restart" };
        let current = self.core.config().clone();
        let reloaded = match self.server.reload.as_mut() {
            Some(reload) => reload(&current),
            None => {
                Ok(crate::Reloaded::from(prefork_core::config::Checked { value: current.clone(), warnings: vec![] }))
            }
        };
        let reloaded = match reloaded {
            Ok(r) => r,
            Err(why) => {
                error!("{kind} refused: the new configuration is invalid: {why}; still running with the previous one");
                return None;
            }
        };
        for w in &reloaded.config.warnings {
            warn!("configuration: {w}");
        }
        let next = reloaded.config.value;
        let listeners = std::mem::take(&mut self.listeners);
        let wanted: Vec<_> =
            if self.inherited { listeners.iter().map(|l| l.configured.clone()).collect() } else { next.listen.clone() };
        match listeners::reconcile(listeners, &wanted, next.listen_backlog) {
            Ok(r) => {
                self.listeners = r.kept;
                drop(r.closed);
            }
            Err(refused) => {
                self.listeners = refused.unchanged;
                error!("{kind} refused: {}; still running with the previous configuration", refused.error);
                return None;
            }
        }
        let same_lock = self.lock.as_ref().map(|l| l.mechanism())
            == if next.lock_in_use() { Mechanism::from_config(next.accept_mutex) } else { None };
        if !same_lock {
            match lock_for(&next, &self.server.lock_dir, self.creds.as_ref()) {
                Ok(lock) => self.retired_locks.extend(std::mem::replace(&mut self.lock, lock)),
                Err(e) => {
                    error!("{kind} refused: {e}; still running with the previous configuration");
                    return None;
                }
            }
        }
        if next.user != current.user || next.group != current.group {
            match creds::resolve(next.user.as_deref(), next.group.as_deref()) {
                Ok((c, _)) => self.creds = c,
                Err(e) => {
                    error!("{kind} refused: {e}; still running with the previous configuration");
                    return None;
                }
            }
        }
        if let Some(service) = reloaded.service {
            self.server.service = service; // new children get it; old ones keep theirs
        }
        let next = Box::new(next);
        self.command(if graceful { Command::GracefulRestart(next) } else { Command::HardRestart(next) })
    }

    /// SIGCHLD: reap every exited child (signals coalesce).
    fn reap(&mut self) -> Option<i32> {
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, c)) => (pid, ExitStatus::Code(c)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!("waitpid: {e}");
                    return None;
                }
            };
            let pid = pid.as_raw() as u32;
            self.wakers.remove(&pid);
            let reported = self.core.slot_of(pid).and_then(|slot| {
                ExitReason::from_u8(self.board.record(slot).exit_reason.load(Ordering::Acquire) as u8)
            });
            let now = self.now();
            self.core.handle_child_exit(now, pid, status, reported, &self.board);
            if let Some(code) = self.perform() {
                return Some(code);
            }
        }
    }

    /// Performs every action the core asked for; `Some(code)` when the parent is done.
    fn perform(&mut self) -> Option<i32> {
        let before = self.core.phase();
        let exit = self.perform_actions();
        if before == Phase::Restarting && self.core.phase() == Phase::Running {
            self.lifecycle(Lifecycle::Ready); // a hard restart finished
        }
        exit
    }

    fn perform_actions(&mut self) -> Option<i32> {
        let header = self.board.header();
        header.spawn_rate.store(u64::from(self.core.policy().idle_spawn_rate()), Ordering::Relaxed);
        while let Some(action) = self.core.poll_action() {
            match action {
                ParentAction::Spawn { slot, born } => {
                    self.board.header().spawned_total.fetch_add(1, Ordering::Relaxed);
                    self.spawn(slot, born)
                }
                ParentAction::Wake { pid, .. } => {
                    if let Some(w) = self.wakers.get(&pid) {
                        let _ = nix::unistd::write(w, b"!"); // full pipe: already woken
                    }
                    // Interrupts a wait for the accept lock (SPEC.md §7.1).
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
                }
                ParentAction::Signal { pid, signal } => {
                    let sig = if signal == KillSignal::Term { Signal::SIGTERM } else { Signal::SIGKILL };
                    if pid as i32 != self.pid.as_raw() && pid > 1 {
                        let _ = kill(Pid::from_raw(pid as i32), sig);
                    }
                }
                ParentAction::CloseListeners => self.listeners.clear(),
                ParentAction::Log(l) => log(&l),
                ParentAction::Exit { code } => return Some(code),
            }
        }
        None
    }

    fn spawn(&mut self, slot: usize, born: prefork_core::slot::SlotWord) {
        let now = self.now();
        let (wake_r, wake_w) = match pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => {
                error!("pipe for slot {slot}: {e}");
                self.core.handle_spawn_failed(now, slot, &self.board);
                return;
            }
        };
        self.board.record(slot).prepare_for_spawn(unix_ms());
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: the parent is single-threaded (it never starts threads), so the child may run
        // ordinary code after fork().
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(wake_w);
                // Parent-only descriptors: the signalfd and the other children's wake pipes.
                self.wakers.clear();
                self.signals = None;
                let cfg = self.core.config();
                let connection_limit = cfg.connection_limit(u64::from(std::process::id()) << 16 | slot as u64);
                child::run(ChildSetup {
                    board: &self.board,
                    slot,
                    born,
                    listeners: &self.listeners,
                    lock: self.lock.as_mut(),
                    wake: wake_r,
                    creds: self.creds.as_ref(),
                    connection_limit,
                    service: &mut *self.server.service,
                    parent: self.pid,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                drop(wake_r);
                let pid = child.as_raw() as u32;
                self.board.record(slot).pid.store(u64::from(pid), Ordering::Release);
                self.wakers.insert(pid, wake_w);
                self.core.handle_spawned(slot, pid);
            }
            Err(e) => {
                error!("[AH00159] fork: unable to fork a child for slot {slot}: {e}");
                self.core.handle_spawn_failed(now, slot, &self.board);
            }
        }
    }
}
