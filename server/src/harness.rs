//! A [`Service`] in this process, without forking: one slot of a private scoreboard and any
//! stream (a socket pair, a loopback TCP connection). For unit tests of a service, and for the
//! fuzz bodies that feed one arbitrary bytes. The service sees what it sees in a child: a
//! [`Connection`] whose slot shows `R`, a [`crate::Status`] that answers `Graceful` after
//! [`ServiceHarness::mark_graceful`], a [`crate::PoolView`] of this board.

use crate::service::{Connection, Service, Status, Stream};
use crate::shm::{Scoreboard, SlotInfo};
use prefork_core::scoreboard::{ChildSlot, SlotTable};
use prefork_core::slot::{SlotState, SlotWord};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// A one-child pool in this process: slot 0 is the service's.
#[derive(Debug)]
pub struct ServiceHarness {
    board: Scoreboard,
    born: SlotWord,
}

impl ServiceHarness {
    /// A private scoreboard of `slots` slots (at least 1), with a child in slot 0.
    pub fn new(slots: usize) -> io::Result<ServiceHarness> {
        let board = Scoreboard::create(slots.max(1), std::process::id(), crate::unix_ms())?;
        let born = board.slot(0).and_then(|s| s.spawn(0)).map_err(io::Error::other)?;
        Ok(ServiceHarness { board, born })
    }

    /// The scoreboard (status pages read it; tests may write it to see what a page makes of it).
    pub fn board(&self) -> &Scoreboard {
        &self.board
    }

    /// Serves one connection, `stream` from `peer` (`None`: a unix-domain peer), with `service`,
    /// as a child does after its work claim: the slot shows `R` when `serve` is called (or still
    /// `G`, after [`ServiceHarness::mark_graceful`]).
    pub fn serve(&self, service: &mut dyn Service, stream: Stream, peer: Option<SocketAddr>) -> io::Result<()> {
        let record = self.board.record(0);
        let graceful = self.born.with_state(SlotState::Graceful).encode();
        if record.word.load(Ordering::Acquire) != graceful {
            record.word.store(self.born.with_state(SlotState::BusyRead).encode(), Ordering::Release);
        }
        let me = ChildSlot::attach(&self.board, 0, self.born).map_err(io::Error::other)?;
        let status = Status::new(me, self.board.record(0), &[]);
        let mut conn = Connection::new(stream, peer, 0, status, &self.board, &[]);
        service.serve(&mut conn)
    }

    /// Marks the child's slot as a graceful restart or stop does: the service's next
    /// [`Status::set`] answers `Graceful`.
    pub fn mark_graceful(&self) {
        let _ = self.board.slot(0).map(|s| s.mark_graceful());
    }

    /// What the service's slot shows now (state, counters, request line).
    pub fn slot(&self) -> SlotInfo {
        self.board.record(0).info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_core::scoreboard::SlotUpdate;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    /// A line echo that stops after the request in hand once the slot says graceful.
    fn echo(conn: &mut Connection<'_>) -> io::Result<()> {
        let mut reader = BufReader::new(conn.stream().try_clone()?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            conn.status().request(line.trim_end());
            let last = conn.status().set(SlotState::BusyWrite) == SlotUpdate::Graceful;
            conn.stream().write_all(line.as_bytes())?;
            conn.status().count_request(line.len() as u64, std::time::Duration::ZERO);
            line.clear();
            if last {
                break;
            }
        }
        Ok(())
    }

    #[test]
    fn a_service_runs_on_a_socket_pair_and_its_slot_shows_what_it_did() {
        let h = ServiceHarness::new(2).unwrap();
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"one\ntwo\n").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        h.serve(&mut echo, Stream::Unix(server), None).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut client, &mut out).unwrap();
        assert_eq!(out, "one\ntwo\n");
        let slot = h.slot();
        assert_eq!((slot.requests, slot.bytes, slot.request.as_str()), (2, 8, "two"));
        assert_eq!(slot.word.unwrap().state, SlotState::BusyWrite);
    }

    #[test]
    fn a_graceful_mark_reaches_the_service() {
        let h = ServiceHarness::new(1).unwrap();
        h.mark_graceful();
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"one\ntwo\n").unwrap();
        h.serve(&mut echo, Stream::Unix(server), None).unwrap();
        drop(client.shutdown(std::net::Shutdown::Write));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut client, &mut out).unwrap();
        assert_eq!(out, "one\n", "the request in hand is answered, then the connection ends");
        assert_eq!(h.slot().word.unwrap().state, SlotState::Graceful);
    }
}
