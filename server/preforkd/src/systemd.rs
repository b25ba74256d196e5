//! systemd integration without libsystemd: socket activation (`LISTEN_FDS`) and `sd_notify`.

use prefork_server::Listener;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// `SD_LISTEN_FDS_START`.
const FIRST_FD: i32 = 3;

/// The listening sockets systemd passed to this process, if any (`LISTEN_PID` must be our pid).
/// The variables are removed so children never see them.
pub fn listen_fds() -> io::Result<Option<Vec<Listener>>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // SAFETY: single-threaded at start-up, before any fork.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(None) };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: i32 = fds.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("LISTEN_FDS={fds:?}")))?;
    let mut listeners = vec![];
    for fd in FIRST_FD..FIRST_FD + n {
        // SAFETY: systemd passes these descriptors to us; nothing else in this process owns them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        listeners
            .push(Listener::from_fd(owned).map_err(|e| io::Error::new(e.kind(), format!("LISTEN_FDS fd {fd}: {e}")))?);
    }
    Ok(Some(listeners))
}

/// Closes every descriptor above standard error that this process inherited from whoever started
/// it, except the sockets systemd passes for socket activation (`LISTEN_FDS`, when `LISTEN_PID`
/// is this process) and what an old parent hands over in an upgrade. Call first thing, before anything is opened: what a launcher leaks (a shell's
/// pipes, a supervisor's files) would otherwise be held by every child too (SPEC.md §14.3: a child
/// holds only what it needs). Returns the descriptors closed.
pub fn close_inherited_descriptors() -> Vec<i32> {
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let passed =
        if ours { std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<i32>().ok()).unwrap_or(0) } else { 0 };
    let keep = FIRST_FD..FIRST_FD + passed.max(0);
    // What an old parent hands its successor in a binary upgrade (SPEC.md §7.11).
    let handed = prefork_server::upgrade::handed_fds();
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => return vec![],
    };
    // The directory's own descriptor was in the listing and is closed now: closing it fails.
    open.into_iter()
        .filter(|&fd| fd > 2 && !keep.contains(&fd) && !handed.contains(&fd))
        // SAFETY: nothing in this process owns these descriptors yet (called before anything is
        // opened); closing one that is not open fails harmlessly.
        .filter(|&fd| unsafe { libc::close(fd) } == 0)
        .collect()
}

/// Sends `state` to the service manager if `NOTIFY_SOCKET` is set (ignored otherwise).
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let _ = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr),
            Err(e) => Err(e),
        }
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
}

/// `CLOCK_MONOTONIC` in microseconds (for `RELOADING=1` with `MONOTONIC_USEC`).
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}
