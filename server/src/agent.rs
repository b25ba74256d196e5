//! The agent-check port (SPEC.md §7.10): the parent answers a load balancer's agent check
//! (HAProxy's `agent-check`) itself, with the core's [`Parent::agent_answer`]
//! (`prefork_core::parent::Parent::agent_answer`).
//!
//! The parent must never block and must never be held by a client: each wake-up accepts at most
//! [`CHECKS_PER_WAKE`] checks; each gets its line written without waiting (a check whose socket
//! cannot take a few bytes at once gets nothing) and is closed. Nothing a client sends is read
//! beyond discarding it.
//!
//! The operator's word (`preforkd -k ready|drain|maint`) is a file next to the pid file,
//! [`operator_file`], read at every check: a missing file is `ready`; anything else that is not
//! one word of [`OperatorState`] is logged (once while it lasts) and counts as `ready`.

use prefork_core::parent::OperatorState;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Most agent checks answered per wake-up of the parent.
pub const CHECKS_PER_WAKE: usize = 16;

/// The file that holds the operator's word for the balancer: `<pid_file>.agent`.
pub fn operator_file(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".agent");
    PathBuf::from(name)
}

/// Writes the operator's word for `pid_file`'s server (`preforkd -k ready|drain|maint`): a
/// temporary file renamed over the old one, so a check never reads half a word.
pub fn write_operator_state(pid_file: &Path, state: OperatorState) -> io::Result<PathBuf> {
    let path = operator_file(pid_file);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", state.name()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The parent's agent-check listener.
#[derive(Debug)]
pub(crate) struct AgentPort {
    socket: Socket,
    local: SocketAddr,
    operator_file: Option<PathBuf>,
    /// The operator file's content was not a word: said once, until it is one again.
    complained: bool,
}

impl AgentPort {
    /// Binds `addr` (TCP, non-blocking, close-on-exec); the operator's word will be read from
    /// `pid_file`'s [`operator_file`], if there is a pid file.
    pub(crate) fn bind(addr: SocketAddr, pid_file: Option<&Path>) -> io::Result<AgentPort> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("agent_listen {addr}: {e}"));
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None).map_err(context)?;
        socket.set_reuse_address(true).map_err(context)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(context)?;
        }
        socket.bind(&SockAddr::from(addr)).map_err(context)?;
        socket.listen(64).map_err(context)?;
        socket.set_nonblocking(true).map_err(context)?;
        let local = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet socket"))?;
        Ok(AgentPort { socket, local, operator_file: pid_file.map(operator_file), complained: false })
    }

    /// Serves on an agent-check socket handed over by an old parent (a binary upgrade).
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd, pid_file: Option<&Path>) -> io::Result<AgentPort> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet socket"))?;
        Ok(AgentPort { socket, local, operator_file: pid_file.map(operator_file), complained: false })
    }

    /// The address bound (the real port when port 0 was asked for).
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// The operator's word now.
    pub(crate) fn operator(&mut self) -> OperatorState {
        let Some(path) = &self.operator_file else { return OperatorState::Ready };
        let trouble = match std::fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("cannot read {}: {e}", path.display())),
            Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(OperatorState::parse) {
                Some(state) => {
                    self.complained = false;
                    return state;
                }
                None => Some(format!("{} does not hold ready, drain or maint ({} bytes)", path.display(), bytes.len())),
            },
        };
        match trouble {
            Some(what) if !std::mem::replace(&mut self.complained, true) => {
                warn!("agent check: {what}; answering as ready");
            }
            Some(_) => {}
            None => self.complained = false,
        }
        OperatorState::Ready
    }

    /// Answers the checks waiting now (at most [`CHECKS_PER_WAKE`]) with `line` and a newline.
    pub(crate) fn answer(&self, line: &str) {
        let line = format!("{line}\n");
        for _ in 0..CHECKS_PER_WAKE {
            let Ok((conn, _)) = self.socket.accept() else { return };
            // Never waits: a socket that cannot take these few bytes at once gets nothing.
            let _ = conn.send_with_flags(line.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            // What the balancer sent (HAProxy's agent-send) is discarded, so the close is a
            // clean one when it is already here.
            let mut discard = [std::mem::MaybeUninit::<u8>::uninit(); 256];
            let _ = conn.recv_with_flags(&mut discard, libc::MSG_DONTWAIT);
        }
    }
}

impl std::os::fd::AsRawFd for AgentPort {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }
}

impl AsFd for AgentPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
