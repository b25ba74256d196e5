//! A binary upgrade in place (SPEC.md §7.11), the server's side: the old parent starts its
//! successor (this program again, as it was started, which runs the new binary if it was
//! replaced on disk) with the listening sockets, and the successor tells it when it serves.
//!
//! What is handed over, as systemd hands sockets over (`LISTEN_FDS`), in descriptors from 3 on:
//!
//! | descriptor | what |
//! |---|---|
//! | 3 | the write end of a pipe: the successor writes `ready` on it once its pool serves |
//! | 4 … 4+n−1 | the `n` listening sockets, in the old configuration's order |
//! | 4+n | the agent-check socket, if `PREFORK_UPGRADE_AGENT=1` |
//!
//! and in the environment: `PREFORK_UPGRADE_FROM` (the old parent's pid: the hand-over is for the
//! process whose parent that is, so nothing started later takes it), `PREFORK_UPGRADE_LISTEN`
//! (the listeners' configured addresses, one per line: a configuration that still names them
//! keeps them, with port 0 too), `PREFORK_UPGRADE_AGENT` and `PREFORK_UPGRADE_SYSTEMD` (the
//! sockets came from systemd and stay its own). The successor removes the variables.

use crate::listeners::Listener;
use prefork_core::config::ListenAddr;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const READY_FD: RawFd = 3;
const FIRST_LISTENER_FD: RawFd = 4;
const FROM: &str = "PREFORK_UPGRADE_FROM";
const LISTEN: &str = "PREFORK_UPGRADE_LISTEN";
const AGENT: &str = "PREFORK_UPGRADE_AGENT";
const SYSTEMD: &str = "PREFORK_UPGRADE_SYSTEMD";

/// What an old parent handed to this process.
#[derive(Debug)]
pub struct Handoff {
    /// The listening sockets, their `configured` addresses the old configuration's.
    pub(crate) listeners: Vec<Listener>,
    /// The agent-check socket.
    pub(crate) agent: Option<OwnedFd>,
    /// Where to say `ready`.
    pub(crate) ready: OwnedFd,
    /// The sockets are systemd's (socket activation), passed on.
    pub(crate) systemd: bool,
}

impl Handoff {
    /// How many listening sockets came.
    pub fn listeners(&self) -> usize {
        self.listeners.len()
    }
}

fn our_handoff() -> Option<(usize, bool)> {
    let from: u32 = std::env::var(FROM).ok()?.parse().ok()?;
    if nix::unistd::getppid().as_raw() as u32 != from {
        return None;
    }
    let n = std::env::var(LISTEN).ok()?.lines().count();
    Some((n, std::env::var(AGENT).as_deref() == Ok("1")))
}

/// The descriptors an old parent handed to this process, if it is a successor: for a program
/// that closes what it inherited at start (keep these).
pub fn handed_fds() -> std::ops::Range<RawFd> {
    match our_handoff() {
        Some((n, agent)) => READY_FD..FIRST_LISTENER_FD + n as RawFd + RawFd::from(agent),
        None => 0..0,
    }
}

/// Takes what an old parent handed to this process, if it is a successor ([`Server::handoff`]
/// (crate::Server::handoff) runs the server on it). Call once, at start, single-threaded: the
/// variables are removed.
pub fn take_handoff() -> io::Result<Option<Handoff>> {
    let ours = our_handoff();
    let configured: Vec<String> = std::env::var(LISTEN).unwrap_or_default().lines().map(str::to_owned).collect();
    let systemd = std::env::var(SYSTEMD).as_deref() == Ok("1");
    // SAFETY: single-threaded at start-up, before any fork.
    unsafe {
        for var in [FROM, LISTEN, AGENT, SYSTEMD] {
            std::env::remove_var(var);
        }
    }
    let Some((n, agent)) = ours else { return Ok(None) };
    let adopt = |fd: RawFd| -> io::Result<OwnedFd> {
        // SAFETY: the old parent placed these descriptors here for us; nothing else owns them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        Ok(owned)
    };
    let ready = adopt(READY_FD)?;
    let mut listeners = vec![];
    for (i, text) in configured.iter().enumerate() {
        let fd = FIRST_LISTENER_FD + i as RawFd;
        let mut l = Listener::from_fd(adopt(fd)?)
            .map_err(|e| io::Error::new(e.kind(), format!("handed-over descriptor {fd}: {e}")))?;
        if let Ok(addr) = text.parse::<ListenAddr>() {
            l.configured = addr;
        }
        l.set_owned(!systemd);
        listeners.push(l);
    }
    let agent = if agent { Some(adopt(FIRST_LISTENER_FD + n as RawFd)?) } else { None };
    Ok(Some(Handoff { listeners, agent, ready, systemd }))
}

/// Says `ready` to the old parent (once the successor's pool serves); the pipe closes.
pub(crate) fn say_ready(ready: OwnedFd) {
    let _ = std::fs::File::from(ready).write_all(b"ready\n");
}

/// Starts this program again as the successor of the running parent (`pid`), handing it
/// `listeners`, `agent` and the write end of `ready`. `exe` and `args` are how this program was
/// started. The child's signal mask is cleared (the parent blocks its signals for its signalfd).
pub(crate) fn start_successor(
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
    pid: u32,
    listeners: &[Listener],
    agent: Option<RawFd>,
    ready: &OwnedFd,
    systemd: bool,
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut sources: Vec<RawFd> = vec![ready.as_raw_fd()];
    sources.extend(listeners.iter().map(|l| l.socket().as_raw_fd()));
    sources.extend(agent);
    let configured: Vec<String> = listeners.iter().map(|l| l.configured.to_string()).collect();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(FROM, pid.to_string())
        .env(LISTEN, configured.join("\n"))
        .env(AGENT, if agent.is_some() { "1" } else { "0" })
        .env(SYSTEMD, if systemd { "1" } else { "0" });
    let mut high: Vec<RawFd> = vec![-1; sources.len()];
    // SAFETY: only async-signal-safe calls (fcntl, dup2, sigprocmask) between fork and exec, on
    // descriptors this process owns, and no allocation (the buffers are made before the fork).
    unsafe {
        cmd.pre_exec(move || {
            // First above every target, so that no source is overwritten before it is moved.
            for (i, &fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the target: these survive the exec.
                if libc::dup2(fd, READY_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.spawn()
}
