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
    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()>;
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
        Connection { stream, peer, peer_addr, listener, status, pool: PoolView::new(board, listeners) }
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
