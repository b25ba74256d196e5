//! Listening sockets: bound by the parent before the first fork, inherited by every child, kept
//! open across graceful and hard restarts, closed only when the server stops (SPEC.md §7.5).
//!
//! Every listener is non-blocking, even a single one: children wait for readiness, claim the work,
//! then accept (SPEC.md §6.2, D3), and an accept that another child won must return `EAGAIN`.

use prefork_core::config::ListenAddr;
use prefork_core::parent::QueueDepth;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// One bound listener.
#[derive(Debug)]
pub struct Listener {
    /// What was configured.
    pub configured: ListenAddr,
    /// The address actually bound (the real port when port 0 was asked for).
    pub local: ListenAddr,
    socket: Socket,
    /// Bound by us (a unix socket path is ours to remove).
    owned: bool,
}

/// How long a connection with no data waits before accept(2) sees it anyway (Apache's 30 s).
pub const DEFER_ACCEPT_SECONDS: libc::c_int = 30;

impl Listener {
    /// Binds and listens.
    pub fn bind(addr: &ListenAddr, backlog: u32) -> io::Result<Listener> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("listen {addr}: {e}"));
        let socket = match addr {
            ListenAddr::Tcp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::STREAM.cloexec(), None).map_err(context)?;
                socket.set_reuse_address(true).map_err(context)?;
                if sa.is_ipv6() {
                    socket.set_only_v6(true).map_err(context)?;
                }
                socket.bind(&SockAddr::from(*sa)).map_err(context)?;
                socket
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).map_err(context)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(context)?;
                socket.bind(&SockAddr::unix(path)?).map_err(context)?;
                socket
            }
        };
        socket.listen(backlog.min(i32::MAX as u32) as i32).map_err(context)?;
        socket.set_nonblocking(true).map_err(context)?;
        let local = match addr {
            ListenAddr::Tcp(_) => {
                ListenAddr::Tcp(socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet socket"))?)
            }
            ListenAddr::Unix(p) => ListenAddr::Unix(p.clone()),
        };
        Ok(Listener { configured: addr.clone(), local, socket, owned: true })
    }

    /// Sets what the listener waits for before accept(2) sees a connection (`accept_filter`):
    /// `TCP_DEFER_ACCEPT` of 30 s for `data`, 0 for `none`. A unix-domain listener has no such
    /// option and is left as it is.
    pub fn set_accept_filter(&self, filter: prefork_core::config::AcceptFilter) -> io::Result<()> {
        if self.is_unix() {
            return Ok(());
        }
        let seconds: libc::c_int = match filter {
            prefork_core::config::AcceptFilter::Data | prefork_core::config::AcceptFilter::HttpReady => {
                DEFER_ACCEPT_SECONDS
            }
            prefork_core::config::AcceptFilter::None => 0,
        };
        // SAFETY: a valid descriptor, and an int option value of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("listen {}: TCP_DEFER_ACCEPT: {e}", self.local)))
        }
    }

    /// A graceful stop (SPEC.md §7.5): the socket takes no new connection from now on, and keeps
    /// what its queue holds for the children, which drain it.
    ///
    /// A TCP listener gets a socket filter that drops every segment with SYN and without ACK (a
    /// client's first packet). Such a client retransmits its SYN and, once the socket is closed,
    /// is refused: before it has sent anything. Handshakes already under way complete and are
    /// queued (their ACK and data pass the filter), so the children drain them too. A unix
    /// listener's backlog is lowered to 0 instead: a client that connects now waits (or gets
    /// `EAGAIN`) until the socket closes, and is then refused.
    pub fn stop_admitting(&self) -> io::Result<()> {
        if self.inherited() {
            // Its other holder keeps it open after us: it must go on taking connections.
            return Ok(());
        }
        if self.is_unix() {
            return self.socket.listen(0);
        }
        use socket2::SockFilter;
        const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        // A filter on a TCP socket sees the segment from its TCP header: byte 13 holds the flags.
        let program = [
            SockFilter::new(LD_B_ABS, 0, 0, 13),
            SockFilter::new(JSET_K, 2, 0, 0x10), // ACK: part of a connection, keep it
            SockFilter::new(JSET_K, 0, 1, 0x02), // SYN without ACK: a new connection
            SockFilter::new(RET_K, 0, 0, 0),     // dropped
            SockFilter::new(RET_K, 0, 0, u32::MAX), // kept whole
        ];
        self.socket
            .attach_filter(&program)
            .map_err(|e| io::Error::new(e.kind(), format!("listen {}: SO_ATTACH_FILTER: {e}", self.local)))
    }

    /// A listening socket handed over by a service manager (systemd `LISTEN_FDS`). It is made
    /// non-blocking; its address is read from the socket. Such a listener never removes a unix
    /// socket path (it is not ours).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        if !socket.is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an inherited descriptor is not a listening socket",
            ));
        }
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let local = match (addr.as_socket(), addr.as_pathname()) {
            (Some(a), _) => ListenAddr::Tcp(a),
            (None, Some(p)) => ListenAddr::Unix(p.to_path_buf()),
            (None, None) => return Err(io::Error::new(io::ErrorKind::InvalidInput, "an unnamed inherited socket")),
        };
        Ok(Listener { configured: local.clone(), local, socket, owned: false })
    }

    /// Makes this process the socket's owner (a unix socket path is removed when it drops) or
    /// not (a successor of a binary upgrade, or systemd, keeps using the socket).
    pub(crate) fn set_owned(&mut self, owned: bool) {
        self.owned = owned;
    }

    /// Was the socket handed over by a service manager (systemd `LISTEN_FDS`), which keeps it
    /// open after this server exits?
    pub fn inherited(&self) -> bool {
        !self.owned
    }

    /// The socket.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Is this a unix-domain listener?
    pub fn is_unix(&self) -> bool {
        matches!(self.local, ListenAddr::Unix(_))
    }

    /// The bound TCP address, if TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self.local {
            ListenAddr::Tcp(a) => Some(a),
            ListenAddr::Unix(_) => None,
        }
    }

    /// The kernel's accept queue of a TCP listener, if it can be read (Linux `TCP_INFO` on a
    /// listening socket: `tcpi_unacked` is the current queue length, `tcpi_sacked` the backlog).
    /// `None` for unix-domain listeners.
    pub fn queue(&self) -> Option<ListenQueue> {
        use std::os::fd::AsRawFd;
        self.tcp_addr()?;
        // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut libc::tcp_info as *mut libc::c_void,
                &mut len,
            );
            (rc == 0).then_some(ListenQueue { waiting: info.tcpi_unacked, backlog: info.tcpi_sacked })
        }
    }
}

impl Listener {
    /// What the parent's watchdog needs to know of the accept queue (SPEC.md §7.8): the kernel's
    /// count for TCP; for a unix-domain listener (the kernel reports no count for it) whether a
    /// connection waits, from a zero-timeout poll for readiness.
    pub fn depth(&self) -> QueueDepth {
        if let Some(q) = self.queue() {
            return QueueDepth { waiting: q.waiting, exact: true };
        }
        let mut fds = [nix::poll::PollFd::new(self.as_fd(), nix::poll::PollFlags::POLLIN)];
        let readable = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && fds[0].revents().is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN));
        QueueDepth { waiting: u32::from(readable), exact: !readable }
    }
}

/// A listener's accept queue as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections waiting to be accepted.
    pub waiting: u32,
    /// The backlog the socket listens with.
    pub backlog: u32,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only the process that bound a unix socket removes its path (children never drop
        // listeners: they leave with _exit).
        if let (true, ListenAddr::Unix(path)) = (self.owned, &self.configured) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// In a child that will not accept again: drops this process's references to the listening
/// sockets. Each descriptor is replaced in place by `/dev/null` (`dup3`), so its number stays
/// valid and owned by the same `Listener` (nothing can be closed twice or reused under it), while
/// the socket itself closes once no other process holds it. Best effort: on error nothing changes.
pub(crate) fn release_in_child(listeners: &[Listener]) {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::File::open("/dev/null") else { return };
    for l in listeners {
        // SAFETY: dup3 onto a descriptor this process owns (the listener's socket), atomically
        // replacing the open file it refers to; no memory is involved.
        unsafe { libc::dup3(null.as_raw_fd(), l.socket.as_raw_fd(), libc::O_CLOEXEC) };
    }
}

/// A unix socket path left behind by a previous run is removed; anything else at that path is an
/// error (never delete a regular file because of a configuration typo).
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => {
            Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a socket", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Binds every configured address (all or nothing).
pub fn bind_all(addrs: &[ListenAddr], backlog: u32) -> io::Result<Vec<Listener>> {
    addrs.iter().map(|a| Listener::bind(a, backlog)).collect()
}

/// The listener set for a restart: the listeners of `current` that a wanted address names are kept
/// (same socket, so nothing queued is lost), new addresses are bound, the rest are returned to be
/// closed. A wanted address names a listener if it is the address that listener was configured
/// with, or, for a concrete TCP address, the address it is actually bound to (so `127.0.0.1:0`
/// followed by the port the kernel chose keeps the socket instead of failing with `EADDRINUSE`).
/// If a new address cannot be bound, `current` comes back untouched with the error (the restart is
/// refused, nothing is closed).
pub fn reconcile(current: Vec<Listener>, wanted: &[ListenAddr], backlog: u32) -> Result<Reconciled, Refused> {
    // Which current listener each wanted address keeps: exact configured matches first, then bound
    // addresses, each listener at most once.
    let mut taken = vec![false; current.len()];
    let mut keep: Vec<Option<usize>> = vec![None; wanted.len()];
    let pass =
        |keep: &mut Vec<Option<usize>>, taken: &mut Vec<bool>, names: &dyn Fn(&Listener, &ListenAddr) -> bool| {
            for (w, addr) in wanted.iter().enumerate() {
                if keep[w].is_some() {
                    continue;
                }
                if let Some(i) = (0..current.len()).find(|&i| !taken[i] && names(&current[i], addr)) {
                    taken[i] = true;
                    keep[w] = Some(i);
                }
            }
        };
    pass(&mut keep, &mut taken, &|l, a| &l.configured == a);
    pass(&mut keep, &mut taken, &|l, a| matches!(a, ListenAddr::Tcp(sa) if sa.port() != 0) && &l.local == a);
    let mut fresh = Vec::new();
    for (addr, k) in wanted.iter().zip(&keep) {
        if k.is_none() {
            match Listener::bind(addr, backlog) {
                Ok(l) => fresh.push(l),
                Err(error) => return Err(Refused { unchanged: current, error }),
            }
        }
    }
    let mut old: Vec<Option<Listener>> = current.into_iter().map(Some).collect();
    let mut fresh = fresh.into_iter();
    let next = keep
        .iter()
        .zip(wanted)
        .map(|(k, addr)| match k {
            Some(i) => {
                let mut l = old[*i].take().expect("each listener kept once");
                l.configured = addr.clone(); // what the configuration now calls it
                l
            }
            None => fresh.next().expect("bound above, in order"),
        })
        .collect();
    Ok(Reconciled { kept: next, closed: old.into_iter().flatten().collect() })
}

/// The listeners after a restart.
#[derive(Debug)]
pub struct Reconciled {
    /// In the new configuration's order.
    pub kept: Vec<Listener>,
    /// No longer configured: close them.
    pub closed: Vec<Listener>,
}

/// A restart whose listeners cannot be bound.
#[derive(Debug)]
pub struct Refused {
    /// The current listeners, untouched.
    pub unchanged: Vec<Listener>,
    /// Why.
    pub error: io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_a_real_port_and_reconcile_keeps_matching_sockets() {
        let v4: ListenAddr = "127.0.0.1:0".parse().unwrap();
        let l = bind_all(std::slice::from_ref(&v4), 16).unwrap();
        let port = l[0].tcp_addr().unwrap().port();
        assert_ne!(port, 0);
        let unix: ListenAddr =
            format!("unix:{}/prefork-test-{}.sock", std::env::temp_dir().display(), std::process::id())
                .parse()
                .unwrap();
        let Reconciled { kept, closed } = reconcile(l, &[v4.clone(), unix.clone()], 16).map_err(|r| r.error).unwrap();
        assert_eq!(kept[0].tcp_addr().unwrap().port(), port, "the same socket is kept");
        assert!(closed.is_empty());
        let Reconciled { kept, closed } =
            reconcile(kept, std::slice::from_ref(&unix), 16).map_err(|r| r.error).unwrap();
        assert_eq!((kept.len(), closed.len()), (1, 1));
        drop(kept);
        let ListenAddr::Unix(p) = unix else { unreachable!() };
        assert!(!p.exists(), "the unix socket path is removed on close");
    }

    #[test]
    fn the_port_the_kernel_chose_names_the_same_socket() {
        let any: ListenAddr = "127.0.0.1:0".parse().unwrap();
        let l = bind_all(std::slice::from_ref(&any), 16).unwrap();
        let bound = l[0].local.clone();
        let Reconciled { kept, closed } = reconcile(l, std::slice::from_ref(&bound), 16).map_err(|r| r.error).unwrap();
        assert_eq!((kept.len(), closed.len()), (1, 0));
        assert_eq!(kept[0].local, bound, "kept, not re-bound (which would fail with EADDRINUSE)");
        // Asking for both the wildcard spec and its bound port keeps one and binds a second port-0 socket.
        let Reconciled { kept, closed } = reconcile(kept, &[bound.clone(), any], 16).map_err(|r| r.error).unwrap();
        assert_eq!(kept[0].local, bound);
        assert_ne!(kept[1].local, bound);
        assert!(closed.is_empty());
    }

    #[test]
    fn a_restart_that_cannot_bind_keeps_the_current_sockets() {
        let v4: ListenAddr = "127.0.0.1:0".parse().unwrap();
        let current = bind_all(std::slice::from_ref(&v4), 16).unwrap();
        let port = current[0].tcp_addr().unwrap().port();
        let taken: ListenAddr = format!("127.0.0.1:{port}").parse().unwrap(); // already bound
        let Refused { unchanged: back, error: err } = reconcile(current, &[v4, taken], 16).unwrap_err();
        assert_eq!(back[0].tcp_addr().unwrap().port(), port, "the same socket comes back");
        assert!(err.to_string().contains("listen 127.0.0.1"), "{err}");
    }

    #[test]
    fn a_regular_file_at_a_unix_socket_path_is_not_deleted() {
        let path = std::env::temp_dir().join(format!("prefork-not-a-socket-{}", std::process::id()));
        std::fs::write(&path, "keep me").unwrap();
        let err = Listener::bind(&ListenAddr::Unix(path.clone()), 4).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_file(path).unwrap();
    }
}
