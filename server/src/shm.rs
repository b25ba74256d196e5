//! The scoreboard in shared memory (SPEC.md §3): a memfd mapped `MAP_SHARED` before the first fork,
//! inherited by every child.
//!
//! Layout (all little-endian `u64` atomics, nothing else, so any bit pattern is a valid value and
//! a corrupted slot is a *wrong* value, never undefined behaviour):
//!
//! ```text
//! offset 0     Header      (128 bytes): magic "PREFORK1", layout version, server_limit, record size,
//!                           running generation (the core's generation word), parent pid,
//!                           start time, restart time, the spawn rate, children spawned,
//!                           exited and retired, watchdog kills by reason, children killed
//!                           for a damaged slot, slot words repaired: all written whole by the
//!                           parent after each step from its own memory ([`Published`])
//! offset 128   SlotRecord × server_limit (256 bytes each):
//!                word        the core's slot word (state, incarnation, generation)
//!                pid         written by the parent after fork(), and again after each step
//!                seq         seqlock of the two text fields below (child writes)
//!                connections, requests, bytes, wasted_wakeups   counters (cumulative per slot)
//!                activity    the core's activity word (holds the accept lock, lock acquisitions,
//!                            requests started: the watchdog's evidence, SPEC §3.5)
//!                started_ms, last_used_ms                       unix milliseconds
//!                exit_reason the child's `ExitReason::as_u8`, written just before it exits
//!                killed_for, killed_ms  the last kill by the parent in this slot (`KillReason::code`,
//!                            unix ms); kept when the slot is refilled, so status pages can show it
//!                client      48 bytes of text (peer address), request 80 bytes of text
//! ```
//!
//! The memfd is visible as `/proc/<parent pid>/fd/<n>` (`memfd:prefork-scoreboard`), so status
//! tools and tests can map it too ([`Scoreboard::open`]).
//!
//! Every process of the pool can write all of it (SPEC.md §14): the parent writes what it
//! publishes from its own memory and never reads it back; what children write is input, checked
//! by the core against the parent's records.

use memmap2::{MmapOptions, MmapRaw};
use nix::sys::memfd::{MFdFlags, memfd_create};
use prefork_core::activity::Activity;
use prefork_core::exit::{ExitReason, KillReason};
use prefork_core::parent::Parent;
use prefork_core::scoreboard::SlotTable;
use prefork_core::slot::{SlotError, SlotWord};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// `b"PREFORK1"` as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PREFORK1");
/// Version of this layout.
pub const LAYOUT_VERSION: u64 = 6;
/// The name of the memfd (as shown in `/proc/<pid>/fd`).
pub const MEMFD_NAME: &str = "prefork-scoreboard";
/// Bytes of the client-address text field.
pub const CLIENT_BYTES: usize = 48;
/// Bytes of the request-line text field (longer lines are cut).
pub const REQUEST_BYTES: usize = 80;

/// The header of the mapping.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU64,
    /// Number of slots.
    pub server_limit: AtomicU64,
    /// `size_of::<SlotRecord>()`.
    pub record_size: AtomicU64,
    /// The running generation (the core's generation word).
    pub generation: AtomicU64,
    /// The parent's pid.
    pub parent_pid: AtomicU64,
    /// When the parent started (unix ms).
    pub started_ms: AtomicU64,
    /// When the pool last started afresh: start or hard restart (unix ms).
    pub restarted_ms: AtomicU64,
    /// The spare-server policy's current spawn rate (1, 2, 4 … 32).
    pub spawn_rate: AtomicU64,
    /// Children forked since the parent started.
    pub spawned_total: AtomicU64,
    /// Children the watchdog killed for holding the accept lock (`Stall::AcceptLock`).
    pub killed_accept_lock: AtomicU64,
    /// Children the watchdog killed for a request past `request_deadline`.
    pub killed_request_deadline: AtomicU64,
    /// Children reaped since the parent started (every exit, whatever its cause).
    pub exited_total: AtomicU64,
    /// Of those, children that exited because the parent retired them (too many idle).
    pub retired_total: AtomicU64,
    /// Children the parent killed because their slot was damaged again after a repair.
    pub killed_slot_damaged: AtomicU64,
    /// Slot words the parent wrote back because they did not match its records.
    pub slots_repaired: AtomicU64,
    /// The gate's counters (SPEC.md §15.6), written by the gate (untrusted: shown, never acted on).
    pub gate: GateRecord,
}

/// What the gate publishes: connections it holds now, and what it did with them since the
/// parent started (the counters add up over every gate).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GateRecord {
    /// The running gate's pid (0: none).
    pub pid: AtomicU64,
    /// Connections it holds (being read, idle, or queued for a child).
    pub held: AtomicU64,
    /// Complete heads waiting for a child.
    pub queued: AtomicU64,
    /// Connections taken (accepted, or given back by a child).
    pub taken: AtomicU64,
    /// Complete heads handed to children.
    pub handed: AtomicU64,
    /// Closed: nothing sent within `timeout`.
    pub first_byte_timeouts: AtomicU64,
    /// Closed: kept alive and silent for `keep_alive_timeout`.
    pub keep_alive_timeouts: AtomicU64,
    /// 408: the head took longer than `request_read_timeout`.
    pub head_timeouts: AtomicU64,
    /// Shed under pressure: idle connections.
    pub shed_idle: AtomicU64,
    /// Shed under pressure: heads slower than `request_read_min_rate` (408).
    pub shed_slow_heads: AtomicU64,
    /// Closed because the server stopped.
    pub stopping: AtomicU64,
    /// Passed on to the next gate by a retiring one.
    pub passed_on: AtomicU64,
    /// Connections gated children took from the hand-over channel (written by the children):
    /// `handed - received` is what waits there for a child.
    pub received: AtomicU64,
}

/// One slot.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotRecord {
    /// The core's slot word.
    pub word: AtomicU64,
    /// The child's pid (0: none yet).
    pub pid: AtomicU64,
    /// Seqlock over `client` and `request` (odd while the child writes them).
    pub seq: AtomicU64,
    /// Connections served in this slot (cumulative).
    pub connections: AtomicU64,
    /// Requests served in this slot (cumulative; the service counts them).
    pub requests: AtomicU64,
    /// Bytes sent from this slot (cumulative; the service counts them).
    pub bytes: AtomicU64,
    /// Wake-ups that found nothing to accept (cumulative): the thundering-herd meter.
    pub wasted_wakeups: AtomicU64,
    /// The core's activity word ([`prefork_core::activity`]): written by the child, read by the
    /// parent's watchdog, reset by the parent at spawn and reap.
    pub activity: AtomicU64,
    /// When the current child was spawned (unix ms).
    pub started_ms: AtomicU64,
    /// When the current child last finished a connection (unix ms).
    pub last_used_ms: AtomicU64,
    /// The exiting child's [`ExitReason::as_u8`] (0: none).
    pub exit_reason: AtomicU64,
    /// The last kill by the parent in this slot: [`prefork_core::exit::KillReason::code`] (0:
    /// none).
    pub killed_for: AtomicU64,
    /// When that kill happened (unix ms).
    pub killed_ms: AtomicU64,
    /// Time spent on requests in this slot, in microseconds (cumulative; the service counts it):
    /// mod_status's `Total Duration`.
    pub duration_us: AtomicU64,
    /// How long the last request took, in microseconds (mod_status's `Req` column).
    pub last_request_us: AtomicU64,
    _reserved: [AtomicU64; 1],
    /// The peer address of the current or last connection (text, NUL-padded).
    pub client: [AtomicU64; CLIENT_BYTES / 8],
    /// The current or last request line (text, NUL-padded, cut at [`REQUEST_BYTES`]).
    pub request: [AtomicU64; REQUEST_BYTES / 8],
}

const _: () = assert!(size_of::<Header>() == 256);
const _: () = assert!(size_of::<SlotRecord>() == 256);

/// A consistent copy of one slot, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The decoded slot word, or why it is corrupt.
    pub word: Result<SlotWord, SlotError>,
    /// The child's pid (0: none).
    pub pid: u32,
    /// Cumulative counters.
    pub connections: u64,
    /// Cumulative requests.
    pub requests: u64,
    /// Cumulative bytes.
    pub bytes: u64,
    /// Cumulative wasted wake-ups.
    pub wasted_wakeups: u64,
    /// Cumulative time spent on requests (µs).
    pub duration_us: u64,
    /// The last request's time (µs).
    pub last_request_us: u64,
    /// The child holds the accept lock.
    pub holds_lock: bool,
    /// Spawn time (unix ms).
    pub started_ms: u64,
    /// Last connection finished (unix ms).
    pub last_used_ms: u64,
    /// The exit reason left by the last child, if any.
    pub exit_reason: Option<ExitReason>,
    /// The last kill by the parent in this slot (`accept_lock`, `request_deadline`,
    /// `slot_damaged`), if any.
    pub killed_for: Option<&'static str>,
    /// The raw word `killed_for` was decoded from (anything but 0–3 is out of range).
    pub killed_code: u64,
    /// When (unix ms; 0: never).
    pub killed_ms: u64,
    /// Peer address text.
    pub client: String,
    /// Request line text.
    pub request: String,
}

fn store_text(field: &[AtomicU64], text: &str) {
    let bytes = text.as_bytes();
    for (i, word) in field.iter().enumerate() {
        let mut chunk = [0u8; 8];
        let start = (i * 8).min(bytes.len());
        let end = (start + 8).min(bytes.len());
        chunk[..end - start].copy_from_slice(&bytes[start..end]);
        word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
    }
}

fn load_text(field: &[AtomicU64]) -> String {
    let mut bytes: Vec<u8> = field.iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl SlotRecord {
    /// Child: writes the text fields under the seqlock (single writer: the slot's child).
    pub fn set_texts(&self, client: Option<&str>, request: Option<&str>) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        if let Some(c) = client {
            store_text(&self.client, cut(c, CLIENT_BYTES));
        }
        if let Some(r) = request {
            store_text(&self.request, cut(r, REQUEST_BYTES));
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Reads the text fields consistently (retrying while the child writes; after 64 tries it
    /// returns what it has: a status page must never hang on a stuck writer).
    pub fn texts(&self) -> (String, String) {
        for _ in 0..64 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let texts = (load_text(&self.client), load_text(&self.request));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return texts;
            }
        }
        (load_text(&self.client), load_text(&self.request))
    }

    /// Parent, before fork(): fresh per-child fields for a new child in this slot.
    pub fn prepare_for_spawn(&self, now_ms: u64) {
        self.pid.store(0, Ordering::Relaxed);
        self.exit_reason.store(0, Ordering::Relaxed);
        self.started_ms.store(now_ms, Ordering::Relaxed);
        self.set_texts(Some(""), Some(""));
    }

    /// A consistent-enough copy of the slot.
    pub fn info(&self) -> SlotInfo {
        let (client, request) = self.texts();
        let killed_code = self.killed_for.load(Ordering::Relaxed);
        SlotInfo {
            word: SlotWord::decode(self.word.load(Ordering::Acquire)),
            pid: self.pid.load(Ordering::Acquire) as u32,
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            wasted_wakeups: self.wasted_wakeups.load(Ordering::Relaxed),
            duration_us: self.duration_us.load(Ordering::Relaxed),
            last_request_us: self.last_request_us.load(Ordering::Relaxed),
            holds_lock: Activity::decode(self.activity.load(Ordering::Relaxed)).holds_lock,
            started_ms: self.started_ms.load(Ordering::Relaxed),
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
            exit_reason: ExitReason::from_u8(self.exit_reason.load(Ordering::Relaxed) as u8),
            killed_for: u8::try_from(killed_code).ok().and_then(KillReason::name_of_code),
            killed_code,
            killed_ms: self.killed_ms.load(Ordering::Relaxed),
            client,
            request,
        }
    }
}

/// Everything the parent writes into the shared memory, kept in the parent's own memory and
/// written out whole after every step (SPEC.md §3.4): the board is the parent's message to the
/// children, so a scribbled header or parent-written field is put right at the next step, and
/// nothing here is ever read back from the board. The running generation and the slot words are
/// the core's (it writes them itself); this is the rest.
#[derive(Debug)]
pub struct Published {
    parent_pid: u32,
    started_ms: u64,
    /// The wall clock (unix ms) at the core's time zero.
    origin_ms: u64,
    /// Per slot: the pid of the last kill the parent's counters name, and when it was first
    /// published (unix ms): the kill time status pages show.
    killed_at: Vec<(u32, u64)>,
}

impl Published {
    /// What a parent `parent_pid` started at `started_ms` (unix) publishes into a board of `slots`
    /// slots; `origin_ms` is the wall clock at the core's time zero.
    pub fn new(slots: usize, parent_pid: u32, started_ms: u64, origin_ms: u64) -> Published {
        Published { parent_pid, started_ms, origin_ms, killed_at: vec![(0, 0); slots] }
    }

    /// Writes all of it into `board` from `parent`'s state: the header (identity, times, the
    /// policy's spawn rate, the parent's counters), and for each slot the spawn time of the child
    /// the parent has there and the slot's last kill (the core publishes the pids itself).
    /// `now_ms` stamps kills published for the first time.
    pub fn write(&mut self, board: &Scoreboard, parent: &Parent, now_ms: u64) {
        let h = board.header();
        let stats = parent.stats();
        let restarted_ms = stats.restarted_at.map_or(self.started_ms, |t| self.origin_ms + t.as_millis());
        for (word, value) in [
            (&h.magic, MAGIC),
            (&h.version, LAYOUT_VERSION),
            (&h.server_limit, board.slots as u64),
            (&h.record_size, size_of::<SlotRecord>() as u64),
            (&h.parent_pid, u64::from(self.parent_pid)),
            (&h.started_ms, self.started_ms),
            (&h.restarted_ms, restarted_ms),
            (&h.spawn_rate, u64::from(parent.policy().idle_spawn_rate())),
            (&h.spawned_total, stats.spawned),
            (&h.killed_accept_lock, stats.killed_accept_lock),
            (&h.killed_request_deadline, stats.killed_request_deadline),
            (&h.exited_total, stats.exited),
            (&h.retired_total, stats.retired),
            (&h.killed_slot_damaged, stats.killed_slot_damaged),
            (&h.slots_repaired, stats.slots_repaired),
        ] {
            word.store(value, Ordering::Relaxed);
        }
        let mut children = parent.children().peekable();
        for slot in 0..board.slots.min(self.killed_at.len()) {
            let r = board.record(slot);
            if let Some((_, c)) = children.next_if(|(s, _)| *s == slot) {
                r.started_ms.store(self.origin_ms + c.spawned_at.as_millis(), Ordering::Relaxed);
            }
            let (code, at) = match stats.last_kills.get(slot).copied().flatten() {
                Some((pid, why)) => {
                    if self.killed_at[slot].0 != pid {
                        self.killed_at[slot] = (pid, now_ms);
                    }
                    (why.code(), self.killed_at[slot].1)
                }
                None => (0, 0),
            };
            r.killed_for.store(u64::from(code), Ordering::Relaxed);
            r.killed_ms.store(at, Ordering::Relaxed);
        }
    }
}

/// Why an existing scoreboard could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("cannot map {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a prefork scoreboard of this layout.
    #[error("{path} is not a prefork scoreboard of layout {LAYOUT_VERSION}: {why}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What did not match.
        why: String,
    },
}

/// The scoreboard mapping.
#[derive(Debug)]
pub struct Scoreboard {
    map: MmapRaw,
    slots: usize,
    _file: File,
}

// SAFETY (for every `unsafe` below): the mapping is page-aligned and at least
// `size_of::<Header>() + slots * size_of::<SlotRecord>()` bytes long (checked when it is created
// or opened); `Header` and `SlotRecord` are `repr(C)` structs of `AtomicU64` only, for which every
// bit pattern is valid; only shared references are ever made, and every access through them is
// atomic, so concurrent writes by other processes are not data races. The mapping lives as long as
// `self`.
impl Scoreboard {
    fn len_for(slots: usize) -> usize {
        size_of::<Header>() + slots * size_of::<SlotRecord>()
    }

    /// Creates a zeroed scoreboard of `slots` slots (parent, before the first fork).
    pub fn create(slots: usize, parent_pid: u32, now_ms: u64) -> io::Result<Scoreboard> {
        let fd = memfd_create(MEMFD_NAME, MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        let file = File::from(fd);
        let len = Self::len_for(slots);
        file.set_len(len as u64)?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let board = Scoreboard { map, slots, _file: file };
        let h = board.header();
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.server_limit.store(slots as u64, Ordering::Relaxed);
        h.record_size.store(size_of::<SlotRecord>() as u64, Ordering::Relaxed);
        h.parent_pid.store(u64::from(parent_pid), Ordering::Relaxed);
        h.started_ms.store(now_ms, Ordering::Relaxed);
        h.restarted_ms.store(now_ms, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(board)
    }

    /// Maps an existing scoreboard (for tests and status tools), read-write.
    pub fn open(path: &Path) -> Result<Scoreboard, OpenError> {
        let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
        let layout = |why: String| OpenError::Layout { path: path.to_path_buf(), why };
        let file = File::options().read(true).write(true).open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len() as usize;
        if len < size_of::<Header>() {
            return Err(layout(format!("{len} bytes is too short for a header")));
        }
        let map = MmapOptions::new().len(len).map_raw(&file).map_err(io_err)?;
        let mut board = Scoreboard { map, slots: 0, _file: file };
        let h = board.header();
        let (magic, version, slots, record) = (
            h.magic.load(Ordering::Acquire),
            h.version.load(Ordering::Relaxed),
            h.server_limit.load(Ordering::Relaxed) as usize,
            h.record_size.load(Ordering::Relaxed) as usize,
        );
        if magic != MAGIC {
            return Err(layout(format!("magic {magic:#x}")));
        }
        if version != LAYOUT_VERSION || record != size_of::<SlotRecord>() {
            return Err(layout(format!("version {version}, record size {record}")));
        }
        if Self::len_for(slots) > len {
            return Err(layout(format!("{slots} slots do not fit in {len} bytes")));
        }
        board.slots = slots;
        Ok(board)
    }

    /// Finds and maps the scoreboard of the running parent `pid` through `/proc/<pid>/fd`.
    pub fn open_for_pid(pid: u32) -> Result<Scoreboard, OpenError> {
        let dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let entries = std::fs::read_dir(&dir).map_err(|source| OpenError::Io { path: dir.clone(), source })?;
        for entry in entries.flatten() {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if target.to_string_lossy().starts_with(&format!("/memfd:{MEMFD_NAME}")) {
                return Self::open(&entry.path());
            }
        }
        Err(OpenError::Layout { path: dir, why: "no scoreboard memfd among the open files".into() })
    }

    /// In a child, after fork(): closes this process's descriptor of the memfd (the mapping stays).
    /// A child needs the memory, not a handle with which to map it again or hand it on.
    pub(crate) fn close_descriptor_in_child(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: closes a descriptor this process owns. Its owner, `_file`, is never dropped in a
        // child (children leave with `_exit`), so the number is never closed twice.
        unsafe { libc::close(self._file.as_raw_fd()) };
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: see the impl comment; offset 0 holds the header.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Slot `i` (`i < slot_count()`).
    pub fn record(&self, i: usize) -> &SlotRecord {
        assert!(i < self.slots, "slot {i} of {}", self.slots);
        // SAFETY: see the impl comment; records follow the header, `i` is in range.
        unsafe { &*(self.map.as_ptr().add(size_of::<Header>()) as *const SlotRecord).add(i) }
    }

    /// Every slot's [`SlotInfo`].
    pub fn infos(&self) -> Vec<SlotInfo> {
        (0..self.slots).map(|i| self.record(i).info()).collect()
    }
}

impl SlotTable for Scoreboard {
    type Word = AtomicU64;
    fn slot_count(&self) -> usize {
        self.slots
    }
    fn slot_word(&self, index: usize) -> &AtomicU64 {
        &self.record(index).word
    }
    fn activity_word(&self, index: usize) -> &AtomicU64 {
        &self.record(index).activity
    }
    fn generation_word(&self) -> &AtomicU64 {
        &self.header().generation
    }
    fn pid_word(&self, index: usize) -> Option<&AtomicU64> {
        Some(&self.record(index).pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_core::scoreboard::{ChildSlot, ScoreboardView};
    use prefork_core::slot::SlotState;

    #[test]
    fn a_fresh_board_is_all_dead_and_reopens_through_proc() {
        let board = Scoreboard::create(4, std::process::id(), 1234).unwrap();
        assert_eq!(ScoreboardView::capture(&board).letters(), "....");
        let w = board.slot(2).unwrap().spawn(0).unwrap();
        ChildSlot::attach(&board, 2, w).unwrap().set(SlotState::Ready).unwrap();
        let again = Scoreboard::open_for_pid(std::process::id()).unwrap();
        assert_eq!(ScoreboardView::capture(&again).letters(), ".._.", "the same memory");
        assert_eq!(again.header().started_ms.load(Ordering::Relaxed), 1234);
    }

    #[test]
    fn text_fields_are_cut_and_read_back() {
        let board = Scoreboard::create(1, 1, 0).unwrap();
        let r = board.record(0);
        let long = "GET /".to_string() + &"é".repeat(100);
        r.set_texts(Some("[2001:db8::1]:54321"), Some(&long));
        let info = r.info();
        assert_eq!(info.client, "[2001:db8::1]:54321");
        assert!(info.request.len() <= REQUEST_BYTES && long.starts_with(&info.request), "{}", info.request);
        r.prepare_for_spawn(5);
        assert_eq!((r.info().request.as_str(), r.info().started_ms), ("", 5));
    }

    #[test]
    fn a_file_that_is_not_a_scoreboard_is_refused() {
        let path = std::env::temp_dir().join(format!("not-a-board-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = Scoreboard::open(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).ok();
        assert!(err.contains("not a prefork scoreboard"), "{err}");
    }
}
