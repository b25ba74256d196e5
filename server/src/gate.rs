//! The gate process (SPEC.md §15): the core's [`prefork_core::gate::Gate`] on epoll, accept4,
//! read and `SCM_RIGHTS`.
//!
//! Two `SOCK_SEQPACKET` channels, made by the parent before anything forks:
//! * **hand-over** (gate → children): one message per complete head: a header, the bytes the
//!   gate read, and the connection's descriptor. Every gated child receives on the same end (the
//!   kernel gives each message to one child, as accept(2) gives a connection to one); the gate and
//!   the parent hold the sending end, so a child sees it hang up once every gate has exited
//!   after the parent let go of it (a stop);
//! * **give-back** (children → gate): a kept-alive connection a child let go of between requests,
//!   with the bytes of a next request it had already read (usually none).
//!
//! Everything that arrives on either channel is hostile input to its reader (the gate reads
//! clients' bytes; a child may be compromised): headers are checked, lengths bounded, extra
//! descriptors closed.

use crate::listeners::Listener;
use crate::service::{Service, Stream};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most bytes of a connection the gate holds before it hands the connection to a child
/// whatever its head looks like (the child's own limits then answer it: 414, 431).
pub const PREFIX_LIMIT: usize = 64 * 1024;
/// Every message starts with this.
const MAGIC: [u8; 4] = *b"PFG1";
const HEADER: usize = 12;
/// Socket buffer asked for on each channel: many complete heads may wait for a child.
const CHANNEL_BUFFER: usize = 4 << 20;

/// A connection on its way through a channel.
#[derive(Debug)]
pub(crate) struct Passed {
    /// The connection.
    pub(crate) fd: OwnedFd,
    /// Index of the listener it arrived on.
    pub(crate) listener: usize,
    /// Bytes read from it so far (the start of a request).
    pub(crate) bytes: Vec<u8>,
}

/// What a receive found.
#[derive(Debug)]
pub(crate) enum Received {
    /// A connection.
    Passed(Passed),
    /// Nothing now.
    Empty,
    /// A message that breaks the format (dropped, its descriptors closed).
    Invalid(&'static str),
    /// Every sender has hung up.
    Closed,
}

fn buffer(fd: &OwnedFd, send: bool) {
    let sock = socket2::SockRef::from(fd);
    // SO_SNDBUFFORCE / SO_RCVBUFFORCE need CAP_NET_ADMIN (the parent usually runs as root); else
    // the plain options, capped by the system's maximum.
    let forced = if send { libc::SO_SNDBUFFORCE } else { libc::SO_RCVBUFFORCE };
    let size = CHANNEL_BUFFER as libc::c_int;
    // SAFETY: setsockopt with a valid descriptor and a c_int value of the right size.
    let ok = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            forced,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !ok {
        let _ =
            if send { sock.set_send_buffer_size(CHANNEL_BUFFER) } else { sock.set_recv_buffer_size(CHANNEL_BUFFER) };
    }
}

fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
    buffer(&a, true);
    buffer(&b, false);
    Ok((a, b))
}

/// Both channels, as the parent holds them.
#[derive(Debug)]
pub(crate) struct Channels {
    /// Hand-over, sending end (the gate's; the parent keeps it until a stop).
    pub(crate) hand_tx: Option<OwnedFd>,
    /// Hand-over, receiving end (the children's).
    pub(crate) hand_rx: OwnedFd,
    /// Give-back, sending end (the children's).
    pub(crate) back_tx: OwnedFd,
    /// Give-back, receiving end (the gate's).
    pub(crate) back_rx: OwnedFd,
}

impl Channels {
    pub(crate) fn new() -> std::io::Result<Channels> {
        let (hand_tx, hand_rx) = pair()?;
        let (back_tx, back_rx) = pair()?;
        Ok(Channels { hand_tx: Some(hand_tx), hand_rx, back_tx, back_rx })
    }

    /// The parent lets go of the hand-over's sending end (a stop): once every gate has exited,
    /// the children see the channel hang up.
    pub(crate) fn let_go(&mut self) {
        self.hand_tx = None;
    }
}

/// Sends a connection down a channel. `Ok(false)`: the channel is full (nothing was sent).
pub(crate) fn send(channel: BorrowedFd<'_>, conn: BorrowedFd<'_>, listener: usize, bytes: &[u8]) -> nix::Result<bool> {
    let bytes = &bytes[..bytes.len().min(PREFIX_LIMIT)];
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&(listener as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    let iov = [IoSlice::new(&header), IoSlice::new(bytes)];
    let fds = [conn.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    match sendmsg::<()>(channel.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, None) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Receives one connection from a channel (never blocks). `listeners`: how many there are (a
/// message naming another is invalid).
pub(crate) fn receive(channel: BorrowedFd<'_>, listeners: usize) -> Received {
    let mut header = [0u8; HEADER];
    let mut body = vec![0u8; PREFIX_LIMIT];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (n, flags, fds) = {
        let mut iov = [IoSliceMut::new(&mut header), IoSliceMut::new(&mut body)];
        let msg = match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN | Errno::EINTR) => return Received::Empty,
            Err(_) => return Received::Invalid("the channel failed"),
        };
        let mut fds: Vec<OwnedFd> = vec![];
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel installed these descriptors in this process for us.
                    fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        (msg.bytes, msg.flags, fds)
    };
    if n == 0 && fds.is_empty() {
        return Received::Closed;
    }
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Received::Invalid("a message too large");
    }
    if n < HEADER || header[..4] != MAGIC {
        return Received::Invalid("a message without the header");
    }
    let listener = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if listener >= listeners {
        return Received::Invalid("a listener that does not exist");
    }
    if len != n - HEADER {
        return Received::Invalid("a length that does not match");
    }
    let mut fds = fds.into_iter();
    let Some(fd) = fds.next() else { return Received::Invalid("no connection") };
    if fds.next().is_some() {
        return Received::Invalid("more than one descriptor");
    }
    body.truncate(len);
    Received::Passed(Passed { fd, listener, bytes: body })
}

/// The stream a passed descriptor is, by its listener's kind.
pub(crate) fn stream_of(fd: OwnedFd, listener: &Listener) -> Stream {
    if listener.is_unix() {
        Stream::Unix(std::os::unix::net::UnixStream::from(fd))
    } else {
        Stream::Tcp(std::net::TcpStream::from(fd))
    }
}

/// A gated child's ends of the channels, and a connection it took early (while it idled on a
/// kept-alive one: [`crate::Connection::wait_for_request`]).
#[derive(Debug)]
pub(crate) struct ChildEnd {
    hand_rx: OwnedFd,
    back_tx: OwnedFd,
    listeners: usize,
    stash: RefCell<Option<Passed>>,
}

impl ChildEnd {
    pub(crate) fn new(hand_rx: OwnedFd, back_tx: OwnedFd, listeners: usize) -> ChildEnd {
        ChildEnd { hand_rx, back_tx, listeners, stash: RefCell::new(None) }
    }

    /// The hand-over channel (to wait on).
    pub(crate) fn receiver(&self) -> BorrowedFd<'_> {
        self.hand_rx.as_fd()
    }

    /// Does the child hold a connection it took early?
    pub(crate) fn holds_stash(&self) -> bool {
        self.stash.borrow().is_some()
    }

    /// Takes a waiting connection for later, if one is there (another child may be faster).
    pub(crate) fn take_for_later(&self) -> bool {
        if self.holds_stash() {
            return true;
        }
        loop {
            match receive(self.hand_rx.as_fd(), self.listeners) {
                Received::Passed(p) => {
                    *self.stash.borrow_mut() = Some(p);
                    return true;
                }
                Received::Invalid(why) => tracing::warn!("gate channel: dropped {why}"),
                Received::Empty | Received::Closed => return false,
            }
        }
    }

    /// The next connection: the one taken early, else one from the channel.
    pub(crate) fn next(&self) -> Received {
        if let Some(p) = self.stash.borrow_mut().take() {
            return Received::Passed(p);
        }
        receive(self.hand_rx.as_fd(), self.listeners)
    }

    /// Gives a connection back to the gate. `false`: the gate cannot take it now (its channel
    /// is full): the caller closes it.
    pub(crate) fn give_back(&self, conn: BorrowedFd<'_>, listener: usize, bytes: &[u8]) -> bool {
        matches!(send(self.back_tx.as_fd(), conn, listener, bytes), Ok(true))
    }

    /// A child about to exit gives back what it took early (a complete head must reach a child).
    pub(crate) fn return_stash(&self) {
        if let Some(p) = self.stash.borrow_mut().take()
            && !self.give_back(p.fd.as_fd(), p.listener, &p.bytes)
        {
            tracing::warn!("a request taken from the gate could not be given back; its connection closes");
        }
    }
}

/// What a gate needs, handed to it after fork().
pub(crate) struct GateSetup<'a> {
    pub(crate) listeners: &'a [Listener],
    pub(crate) hand_tx: OwnedFd,
    pub(crate) back_rx: OwnedFd,
    /// To pass what it holds on to the next gate when it retires.
    pub(crate) back_tx: OwnedFd,
    pub(crate) service: &'a dyn Service,
    pub(crate) config: prefork_core::gate::GateConfig,
    pub(crate) board: &'a crate::shm::Scoreboard,
}

pub(crate) use run::run;

mod run;
