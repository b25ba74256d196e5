//! What an embedder writes and gets: the [`Service`] trait, the accepted [`Connection`], its
//! [`Stream`], the child's own slot ([`Status`]) and a read-only view of the pool ([`PoolView`]).

use crate::listeners::{self, Listener};
use crate::shm::{Scoreboard, SlotRecord};
use crate::view::PoolView;
use prefork_core::scoreboard::{ChildSlot, SlotUpdate};
use prefork_core::slot::SlotState;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a child does with each accepted connection.
///
/// The service value is created in the parent and copied into every child by `fork()`; each child
/// owns its copy. A child serves one connection at a time.
pub trait Service: 'static {
    /// Called once in each child, after privileges are dropped, before its first connection.
    /// An error ends the child (exit code 7, "sick"; the crash-loop brake limits retries).
    fn child_init(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Serves one connection. The slot shows `R` when this is called; set `W`, `K`, `L`, `C` with
    /// [`Status::set`] as the work goes on. When [`Status::set`] answers
    /// [`SlotUpdate::Graceful`] (a graceful restart or stop), finish the request in hand, tell
    /// the client the connection closes, and return. Errors are logged at debug level.
    ///
    /// Behind the gate (`accept_filter = "httpready"`), the bytes the gate already read come
    /// first: [`Connection::take_prefix`]; between requests, wait with
    /// [`Connection::wait_for_request`] and give an idle connection back with
    /// [`Connection::give_back`] when it says another request waits.
    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()>;

    /// The gate's settings if this service reads HTTP/1 request heads (and can so run behind the
    /// gate, `accept_filter = "httpready"`, SPEC.md §15); `None` (the default): it does not, and
    /// the server runs it with `accept_filter = "data"` instead.
    fn gate_config(&self) -> Option<prefork_core::gate::GateConfig> {
        None
    }

    /// How far the request head in `bytes` (the start of a connection's bytes) has got: called
    /// by the gate, in its own process, for services that return a [`Service::gate_config`].
    /// Malformed or too large counts as `Complete`: a child answers it.
    fn head_progress(&self, bytes: &[u8]) -> prefork_core::gate::HeadProgress {
        let _ = bytes;
        prefork_core::gate::HeadProgress::Complete
    }
}

impl<F> Service for F
where
    F: FnMut(&mut Connection<'_>) -> io::Result<()> + 'static,
{
    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()> {
        self(conn)
    }
}

/// An accepted stream: TCP or unix-domain.
#[derive(Debug)]
pub enum Stream {
    /// From a TCP listener.
    Tcp(TcpStream),
    /// From a unix-domain listener.
    Unix(UnixStream),
}

impl Stream {
    /// Sets the read and write timeouts (Apache's `Timeout`).
    pub fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    /// Sets how long a read may wait (`SO_RCVTIMEO`; `None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Sets how long a write may wait (`SO_SNDTIMEO`; `None`: forever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// A second handle on the same connection (for a buffered reader beside the writer).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The child's handle on its own scoreboard slot: the only slot a service may write.
#[derive(Debug)]
pub struct Status<'a> {
    slot: ChildSlot<'a, AtomicU64>,
    record: &'a SlotRecord,
    listeners: &'a [Listener],
    released: std::cell::Cell<bool>,
}

impl<'a> Status<'a> {
    pub(crate) fn new(slot: ChildSlot<'a, AtomicU64>, record: &'a SlotRecord, listeners: &'a [Listener]) -> Self {
        Status { slot, record, listeners, released: std::cell::Cell::new(false) }
    }

    /// Shows what the child is doing: one of `BusyRead`, `BusyWrite`, `Keepalive`, `Logging`,
    /// `Closing`. Answers [`SlotUpdate::Graceful`] when the parent asked the child to finish up (a
    /// graceful restart or stop): the slot keeps showing `G`.
    ///
    /// A child that is winding down in a restart will never accept again, so it lets go of the
    /// listening sockets at once. A child in a graceful stop keeps them: it drains their queues
    /// before it leaves (SPEC.md §7.5).
    pub fn set(&self, state: SlotState) -> SlotUpdate {
        let update = match self.slot.set(state) {
            Ok(update) => update,
            // Not a busy state, or the slot was damaged: nothing to show; wind down to be safe.
            Err(_) => SlotUpdate::Graceful,
        };
        if update == SlotUpdate::Graceful && !self.released.get() && !self.slot.drains() {
            self.released.set(true);
            listeners::release_in_child(self.listeners);
        }
        update
    }

    /// Has the parent asked this child to finish up (graceful restart or stop, retirement, or a
    /// restart that moved the generation on)? The child loop's own test (`ChildSlot::directive`).
    pub fn winding_down(&self) -> bool {
        self.slot.directive().is_some()
    }

    /// Shows the current request line (cut at [`crate::shm::REQUEST_BYTES`]).
    pub fn request(&self, line: &str) {
        self.record.set_texts(None, Some(line));
    }

    /// Counts one request, the bytes sent for it and the time it took (from its first byte to
    /// its last; mod_status's `Total Duration`, `DurationPerReq` and `Req`).
    pub fn count_request(&self, bytes_sent: u64, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.record.requests.fetch_add(1, Ordering::Relaxed);
        self.record.bytes.fetch_add(bytes_sent, Ordering::Relaxed);
        self.record.duration_us.fetch_add(us, Ordering::Relaxed);
        self.record.last_request_us.store(us, Ordering::Relaxed);
    }

    /// The slot index.
    pub fn slot(&self) -> usize {
        self.slot.index()
    }
}

/// One accepted connection, handed to [`Service::serve`].
#[derive(Debug)]
pub struct Connection<'a> {
    stream: Stream,
    peer: String,
    peer_addr: Option<SocketAddr>,
    listener: usize,
    status: Status<'a>,
    pool: PoolView<'a>,
    /// Bytes the gate read before it handed the connection over.
    prefix: Vec<u8>,
    /// The gate's channel, when the child is gated: where another request can be seen waiting.
    gate: Option<&'a crate::gate::ChildEnd>,
    /// Given back to the gate (with these bytes of a next request) instead of closed.
    given_back: Option<Vec<u8>>,
}

/// What [`Connection::wait_for_request`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextRequest {
    /// Bytes (or the client's close) arrived: read them.
    Arrived,
    /// Nothing came within the time given.
    TimedOut,
    /// Another request waits for a child and this connection is idle: give it back to the gate
    /// ([`Connection::give_back`]) and return from [`Service::serve`]; the child takes the other.
    GiveBack,
}

impl<'a> Connection<'a> {
    /// A connection `stream` from `peer_addr` (`None`: a unix-domain peer) that arrived on
    /// `listener`, served in the slot `status` writes; `board` and `listeners` are the pool's.
    pub(crate) fn new(
        stream: Stream,
        peer_addr: Option<SocketAddr>,
        listener: usize,
        status: Status<'a>,
        board: &'a Scoreboard,
        listeners: &'a [Listener],
    ) -> Self {
        let peer = match (&stream, peer_addr) {
            (_, Some(a)) => a.to_string(),
            (Stream::Unix(_), None) => "unix".to_string(),
            (Stream::Tcp(s), None) => format!("fd {}", std::os::fd::AsRawFd::as_raw_fd(s)),
        };
        Connection {
            stream,
            peer,
            peer_addr,
            listener,
            status,
            pool: PoolView::new(board, listeners),
            prefix: Vec::new(),
            gate: None,
            given_back: None,
        }
    }

    /// A connection the gate handed over, with the bytes it had read.
    pub(crate) fn with_gate(mut self, prefix: Vec<u8>, gate: &'a crate::gate::ChildEnd) -> Self {
        self.prefix = prefix;
        self.gate = Some(gate);
        self
    }

    /// Did this connection come through the gate (`accept_filter = "httpready"`)?
    pub fn gated(&self) -> bool {
        self.gate.is_some()
    }

    /// The bytes the gate already read from this connection (the start of its first request:
    /// a complete head, and maybe more), once; empty without the gate. A service must use them
    /// before what it reads from the stream.
    pub fn take_prefix(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.prefix)
    }

    /// Waits up to `timeout` for the next request's bytes on an idle connection (nothing of a
    /// next request read yet). Behind the gate, it also watches for a complete request that
    /// waits for a child: then it takes that request for this child and answers
    /// [`NextRequest::GiveBack`] (SPEC.md §15.2: an idle kept-alive connection never keeps a
    /// waiting request from a child).
    pub fn wait_for_request(&mut self, timeout: Duration) -> io::Result<NextRequest> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        /// While another child is idle, it takes what waits: look again this much later.
        const IDLE_CHILD_SLICE: Duration = Duration::from_millis(10);
        /// A request still waiting this long was not taken by the child that looks idle (it may
        /// be stopped, or its slot scribbled): step in anyway.
        const STEP_IN_AFTER: Duration = Duration::from_millis(250);
        let deadline = std::time::Instant::now() + timeout;
        let mut watch_gate = true;
        let mut waiting_since: Option<std::time::Instant> = None;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // A child told to finish up takes no new work: it answers what comes on this
            // connection (with `Connection: close`) and leaves.
            let gate = self.gate.filter(|g| watch_gate && !g.holds_stash() && !self.status.winding_down());
            let slice = if watch_gate || self.gate.is_none() { left } else { left.min(IDLE_CHILD_SLICE) };
            let ms = PollTimeout::try_from(slice.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
            let (ours, other) = {
                let mut fds = vec![PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
                if let Some(g) = gate {
                    fds.push(PollFd::new(g.receiver(), PollFlags::POLLIN));
                }
                match poll(&mut fds, ms) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let fired = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                (fired(&fds[0]), fds.get(1).is_some_and(fired))
            };
            if ours {
                return Ok(NextRequest::Arrived);
            }
            if left.is_zero() {
                return Ok(NextRequest::TimedOut);
            }
            watch_gate = true;
            if other && let Some(g) = gate {
                // An idle child takes it, without giving up a connection: this one steps in only
                // when every child is busy (the board is advisory: at worst a connection goes
                // back to the gate that need not have).
                let first_seen = *waiting_since.get_or_insert_with(std::time::Instant::now);
                if self.pool.any_idle() && first_seen.elapsed() < STEP_IN_AFTER {
                    watch_gate = false;
                } else if g.take_for_later() {
                    return Ok(NextRequest::GiveBack);
                } else {
                    waiting_since = None;
                }
            }
        }
    }

    /// Gives this idle connection back to the gate, with `unread`: bytes of a next request
    /// already read (usually none). The service then returns from [`Service::serve`] without
    /// closing it; the child passes it to the gate. Without the gate the connection just closes.
    pub fn give_back(&mut self, unread: &[u8]) {
        self.given_back = Some(unread.to_vec());
    }

    /// The connection, and what to give back, if it is to go back to the gate.
    pub(crate) fn into_given_back(self) -> Option<(Stream, usize, Vec<u8>)> {
        let bytes = self.given_back?;
        self.gate?;
        Some((self.stream, self.listener, bytes))
    }

    /// The stream.
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The peer's address as text (`ip:port`, or `unix`).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's address (`None` for unix-domain peers).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Index of the listener (in the configuration's `listen` order) it arrived on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The child's own slot: what it shows, what it counts.
    pub fn status(&self) -> &Status<'a> {
        &self.status
    }

    /// The pool, read-only: scoreboard snapshots and listener queues, for status pages.
    pub fn pool(&self) -> PoolView<'a> {
        self.pool
    }
}
