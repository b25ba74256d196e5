//! The scoreboard protocol: how the parent and the children read and change slot words in shared
//! memory, and the derived view the parent decides from (SPEC.md §3 and §4).
//!
//! The memory itself is abstract ([`SlotTable`] over [`AtomicWord`]s): `prefork-server` backs it with
//! atomics in a `MAP_SHARED` mapping, `prefork-model` with loom/shuttle atomics, tests with plain
//! `AtomicU64`s or `Cell`s ([`MemoryBoard`]).
//!
//! Three rules make the protocol race-free (each is an invariant in SPEC.md §9):
//! * every change of a slot word is a compare-and-swap from the exact word the writer last read, so
//!   two writers can never both succeed from the same starting word;
//! * the parent retires a child only by [`Slot::claim_idle`] (CAS `Ready -> IdleKill`), and a child
//!   takes work only by [`ChildSlot::set`]`(BusyRead)` (CAS `Ready -> BusyRead`) *before* it calls
//!   accept(): exactly one of the two wins, so a claimed child never holds a connection and a child
//!   holding a connection is never claimed;
//! * the parent's directives (`Graceful`, `IdleKill`) are never overwritten by the child: a child that
//!   finds one is told so ([`SlotUpdate`]) and winds down.

use crate::activity::{self, Activity};
use crate::atomic::{AtomicWord, Ordering};
use crate::exit::ExitReason;
use crate::slot::{Side, SlotError, SlotState, SlotWord, check_transition};
use std::fmt;

/// How many compare-and-swaps in a row a writer tries before it gives up on a slot
/// ([`SlotError::Unstable`]). In the protocol a child's CAS fails at most twice in a row (the
/// parent writes a directive, or repairs the slot, between its read and its CAS), so this many
/// failures mean something outside the protocol keeps writing the word: giving up bounds the loop
/// whatever is in shared memory.
pub const MAX_CAS_TRIES: u32 = 16;

/// The shared memory the protocol runs on: two words per slot (the slot word and the child's
/// activity word) plus the running generation.
pub trait SlotTable {
    /// The atomic cell type.
    type Word: AtomicWord;
    /// Number of slots (server_limit).
    fn slot_count(&self) -> usize;
    /// The word of slot `index` (`index < slot_count()`).
    fn slot_word(&self, index: usize) -> &Self::Word;
    /// The activity word of slot `index` (`index < slot_count()`; see [`crate::activity`]).
    fn activity_word(&self, index: usize) -> &Self::Word;
    /// The running generation, written by the parent, read by the children.
    fn generation_word(&self) -> &Self::Word;
    /// The pid word of slot `index`, if this board has one: the parent publishes the pid of the
    /// child it has there (0: none) for status pages. The protocol never reads it back (only the
    /// seeded bug `SignalPidFromBoard` does, Apache's CVE-2007-3304).
    fn pid_word(&self, index: usize) -> Option<&Self::Word> {
        let _ = index;
        None
    }

    /// Slot `index`, or [`SlotError::NoSuchSlot`].
    fn slot(&self, index: usize) -> Result<Slot<'_, Self::Word>, SlotError> {
        let slots = self.slot_count();
        if index < slots {
            Ok(Slot {
                index,
                word: self.slot_word(index),
                activity: self.activity_word(index),
                pid: self.pid_word(index),
            })
        } else {
            Err(SlotError::NoSuchSlot { slot: index, slots })
        }
    }

    /// The running generation (Acquire).
    fn running_generation(&self) -> u32 {
        self.generation_word().load(Ordering::Acquire) as u32
    }

    /// Publishes a new running generation (Release). Parent only.
    fn publish_generation(&self, generation: u32) {
        self.generation_word().store(u64::from(generation), Ordering::Release)
    }

    /// Publishes the running generation with the [`DRAINING`] bit: a graceful stop is under way,
    /// and a child marked `Graceful` serves what the listen queues hold before it leaves (SPEC.md
    /// §7.5). Parent only.
    fn publish_draining(&self, generation: u32) {
        self.generation_word().store(u64::from(generation) | DRAINING, Ordering::Release)
    }
}

/// The bit of the generation word (above the 32 bits of the generation) that the parent sets
/// while a graceful stop drains the listen queues (SPEC.md §3.5a, §7.5).
pub const DRAINING: u64 = 1 << 32;

/// A scoreboard in ordinary memory: for tests, simulations and models.
#[derive(Debug, Default)]
pub struct MemoryBoard<W> {
    generation: W,
    slots: Vec<W>,
    activity: Vec<W>,
    pids: Vec<W>,
}

impl<W: AtomicWord> MemoryBoard<W> {
    /// A board of `slots` zeroed words made by `new_word` (all slots `Dead`, generation 0).
    pub fn with(slots: usize, mut new_word: impl FnMut() -> W) -> Self {
        MemoryBoard {
            generation: new_word(),
            slots: (0..slots).map(|_| new_word()).collect(),
            activity: (0..slots).map(|_| new_word()).collect(),
            pids: (0..slots).map(|_| new_word()).collect(),
        }
    }
}

impl<W: AtomicWord + Default> MemoryBoard<W> {
    /// A board of `slots` zeroed words.
    pub fn new(slots: usize) -> Self {
        Self::with(slots, W::default)
    }
}

impl<W: AtomicWord> SlotTable for MemoryBoard<W> {
    type Word = W;
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
    fn slot_word(&self, index: usize) -> &W {
        &self.slots[index]
    }
    fn activity_word(&self, index: usize) -> &W {
        &self.activity[index]
    }
    fn generation_word(&self) -> &W {
        &self.generation
    }
    fn pid_word(&self, index: usize) -> Option<&W> {
        self.pids.get(index)
    }
}

/// One slot of a [`SlotTable`], with the parent's operations on it.
#[derive(Debug)]
pub struct Slot<'a, W> {
    index: usize,
    word: &'a W,
    activity: &'a W,
    pid: Option<&'a W>,
}

// By hand: a derive would require `W: Copy`, but only a reference is copied.
impl<W> Clone for Slot<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W> Copy for Slot<'_, W> {}

/// The parent's retirement claim lost: the slot no longer holds the word the parent saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("claim of slot {slot} lost: expected {expected:?}, found raw word {found:#x}")]
pub struct ClaimLost {
    /// The slot.
    pub slot: usize,
    /// The word the claim expected.
    pub expected: SlotWord,
    /// The raw word actually found.
    pub found: u64,
}

impl<'a, W: AtomicWord> Slot<'a, W> {
    /// The slot's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Reads and decodes the word (Acquire).
    pub fn read(&self) -> Result<SlotWord, SlotError> {
        SlotWord::decode(self.word.load(Ordering::Acquire))
    }

    fn cas(&self, from: SlotWord, to: SlotWord) -> Result<(), u64> {
        self.word.compare_exchange(from.encode(), to.encode(), Ordering::AcqRel, Ordering::Acquire).map(drop)
    }

    /// Claims this `Dead` slot for a new child of `generation`, taking the next incarnation from
    /// the word in the slot. Returns the word the child is born with (state `Starting`). For tests
    /// and tools: the parent never reads a slot to spawn, it writes the word its own records
    /// give ([`Slot::install`]).
    pub fn spawn(&self, generation: u32) -> Result<SlotWord, SlotError> {
        let now = self.read()?;
        check_transition(Side::Parent, now.state, SlotState::Starting)?;
        let born = now.next_incarnation(generation);
        // No child lives in a Dead slot, so nobody else can write it; the CAS only guards against a
        // corrupted or misused table.
        self.cas(now, born).map_err(|raw| match SlotWord::decode(raw) {
            Ok(w) => SlotError::IllegalTransition { side: Side::Parent, from: w.state, to: SlotState::Starting },
            Err(e) => e,
        })?;
        self.activity.store(0, Ordering::Release); // a fresh child has done nothing yet
        Ok(born)
    }

    /// Parent: writes `born` (state `Starting`) for a new child, before fork(), whatever the slot
    /// held: the parent's own records say no child lives here, so nothing in the slot is anyone's
    /// (SPEC.md §3.4). The child's activity word starts at zero.
    pub fn install(&self, born: SlotWord) {
        self.reset(born);
    }

    /// Stores `word` and clears the activity and pid words: the slot starts afresh (a fresh
    /// child has done nothing yet; a dead holder holds nothing).
    fn reset(&self, word: SlotWord) {
        self.word.store(word.encode(), Ordering::Release);
        self.activity.store(0, Ordering::Release);
        self.publish_pid(0);
    }

    /// Parent: publishes the pid of the child it has in this slot (0: none), if the board has a
    /// pid word. Written from the parent's records, never read back by the protocol.
    pub fn publish_pid(&self, pid: u32) {
        if let Some(w) = self.pid {
            w.store(u64::from(pid), Ordering::Release);
        }
    }

    /// What the pid word holds now (0 without one). Untrusted: any process can write it. Only the
    /// seeded bug `SignalPidFromBoard` acts on it.
    pub fn board_pid(&self) -> u64 {
        self.pid.map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Parent: stores `word`, whatever the slot holds: a directive (`G`) or a repair, written from
    /// the parent's own records rather than from what it read. A child that races it loses nothing:
    /// its compare-and-swap from its old word fails, it reads again and finds `word`.
    pub fn put(&self, word: SlotWord) {
        self.word.store(word.encode(), Ordering::Release);
    }

    /// Parent: the child that lived here is gone (reaped, or its fork failed): stores `empty` and
    /// clears the activity word, whatever the slot held. Returns the raw word found there (which
    /// only labels the parent's log: anything may be in it).
    pub fn release(&self, empty: SlotWord) -> u64 {
        let found = self.raw();
        self.reset(empty);
        found
    }

    /// Parent: marks a working child `Graceful` (graceful restart or stop). Returns the state it
    /// replaced, or the state that made marking unnecessary (`Dead`, `Graceful`, `IdleKill`).
    pub fn mark_graceful(&self) -> Result<SlotState, SlotError> {
        for _ in 0..MAX_CAS_TRIES {
            let now = self.read()?;
            if !now.state.is_live() || now.state.is_directive() {
                return Ok(now.state);
            }
            check_transition(Side::Parent, now.state, SlotState::Graceful)?;
            if self.cas(now, now.with_state(SlotState::Graceful)).is_ok() {
                return Ok(now.state);
            }
            // The child changed its state meanwhile: read again.
        }
        Err(SlotError::Unstable { tries: MAX_CAS_TRIES })
    }

    /// Parent: claims the idle child whose word the parent saw as `idle` (state `Ready`) for
    /// retirement: one CAS `Ready -> IdleKill`. If the child has meanwhile claimed work (or anything
    /// else changed), the claim is lost and nothing is written.
    pub fn claim_idle(&self, idle: SlotWord) -> Result<SlotWord, ClaimLost> {
        let lost = |found| ClaimLost { slot: self.index, expected: idle, found };
        if idle.state != SlotState::Ready {
            return Err(lost(self.word.load(Ordering::Acquire)));
        }
        let claimed = idle.with_state(SlotState::IdleKill);
        self.cas(idle, claimed).map_err(lost)?;
        Ok(claimed)
    }

    /// Replaces the raw word `expected` with `word` by one compare-and-swap; fails with the word actually
    /// found if the slot changed since `expected`. For tests and tools (and the seeded bugs' careless
    /// and torn writes): the parent repairs by [`Slot::put`], from its records.
    pub fn repair(&self, expected: u64, word: SlotWord) -> Result<(), u64> {
        self.word.compare_exchange(expected, word.encode(), Ordering::AcqRel, Ordering::Acquire).map(drop)
    }

    /// The raw word (Acquire), for diagnostics and repairs.
    pub fn raw(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// What the slot's child last published about its work (the watchdog's evidence).
    pub fn activity(&self) -> Activity {
        Activity::read(self.activity)
    }
}

/// What a child learns when it updates its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotUpdate {
    /// The new state is written.
    Applied,
    /// The parent marked the slot `Graceful`: finish the work in hand (answer with
    /// `Connection: close`), take no new work, exit.
    Graceful,
    /// The parent claimed this idle child for retirement: take no work, exit.
    Retire,
}

/// A child's handle on its own slot: the slot, the running generation, and the word it was born with.
#[derive(Debug)]
pub struct ChildSlot<'a, W> {
    slot: Slot<'a, W>,
    generation: &'a W,
    born: SlotWord,
}

impl<W> Clone for ChildSlot<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W> Copy for ChildSlot<'_, W> {}

impl<'a, W: AtomicWord> ChildSlot<'a, W> {
    /// The handle of the child the parent spawned into slot `index` of `table` with the word `born`
    /// (the word [`Slot::spawn`] returned, which the child inherits across fork()).
    pub fn attach<T>(table: &'a T, index: usize, born: SlotWord) -> Result<Self, SlotError>
    where
        T: SlotTable<Word = W> + ?Sized,
    {
        Ok(ChildSlot { slot: table.slot(index)?, generation: table.generation_word(), born })
    }

    /// Has the running generation moved past the one this child was born in (a restart)?
    pub fn generation_changed(&self) -> bool {
        self.generation.load(Ordering::Acquire) as u32 != self.born.generation
    }

    /// Must this child drain the listen queues before it leaves? The parent has set the
    /// [`DRAINING`] bit (a graceful stop, in which nobody else will take what is queued: SPEC.md
    /// §7.5) and the slot holds a directive, `Graceful` or a retirement claim the stop came after.
    /// Whatever the child's generation: a child of an older generation still finishing may be
    /// the last one. In a graceful restart the new generation takes what is queued, so an old
    /// child leaves at once.
    pub fn drains(&self) -> bool {
        self.generation.load(Ordering::Acquire) & DRAINING != 0
            && matches!(self.check(), Ok(SlotUpdate::Graceful | SlotUpdate::Retire))
    }

    /// The slot index.
    pub fn index(&self) -> usize {
        self.slot.index
    }

    /// The word the child was born with (its generation and incarnation).
    pub fn born(&self) -> SlotWord {
        self.born
    }

    /// Reads the slot and interprets it for this child: `Applied` if no directive is pending.
    pub fn check(&self) -> Result<SlotUpdate, SlotError> {
        let now = self.read_own()?;
        Ok(match now.state {
            SlotState::Graceful => SlotUpdate::Graceful,
            SlotState::IdleKill => SlotUpdate::Retire,
            _ => SlotUpdate::Applied,
        })
    }

    /// The child got the accept lock (publishes it in its activity word).
    pub fn lock_acquired(&self) {
        activity::update(self.slot.activity, Activity::acquired);
    }

    /// The child let the accept lock go.
    pub fn lock_released(&self) {
        activity::update(self.slot.activity, Activity::released);
    }

    /// What this child has published about its work.
    pub fn activity(&self) -> Activity {
        self.slot.activity()
    }

    /// Why this child must stop taking work, if it must: the parent left a directive (`Graceful`,
    /// `IdleKill`), the running generation moved on (a restart), or the slot is no longer its own.
    /// `None`: carry on.
    pub fn directive(&self) -> Option<ExitReason> {
        match self.check() {
            Ok(SlotUpdate::Applied) if self.generation_changed() => Some(ExitReason::Graceful),
            Ok(SlotUpdate::Applied) => None,
            Ok(SlotUpdate::Graceful) => Some(ExitReason::Graceful),
            Ok(SlotUpdate::Retire) => Some(ExitReason::Retired),
            Err(_) => Some(ExitReason::SlotLost),
        }
    }

    fn read_own(&self) -> Result<SlotWord, SlotError> {
        let now = self.slot.read()?;
        if now.incarnation != self.born.incarnation {
            return Err(SlotError::NotOwner { expected: self.born.incarnation, found: now.incarnation });
        }
        Ok(now)
    }

    /// Seeded bugs only: writes `to` over whatever the slot holds, without the transition table or
    /// the compare-and-swap (what a careless child would do).
    #[cfg(feature = "seeded-bugs")]
    pub(crate) fn store_unchecked(&self, to: SlotState) {
        let raw = self.slot.raw();
        let word = self.born.with_state(to);
        let _ = self.slot.repair(raw, word);
    }

    /// Seeded bugs only: writes `to` in two stores, the state with no owner first, then the whole
    /// word (unless the slot changed meanwhile): a torn write.
    #[cfg(feature = "seeded-bugs")]
    pub(crate) fn store_torn(&self, to: SlotState) {
        let raw = self.slot.raw();
        let Ok(now) = SlotWord::decode(raw) else { return };
        if now.state.is_directive() || now.incarnation != self.born.incarnation {
            return;
        }
        let half = SlotWord { state: to, incarnation: 0, generation: 0 };
        if self.slot.repair(raw, half).is_ok() {
            let _ = self.slot.repair(half.encode(), self.born.with_state(to));
        }
    }

    /// Child: moves its slot to `to` by compare-and-swap, unless the parent has left a directive.
    ///
    /// `set(BusyRead)` from `Ready` is the *work claim*: call it before accept(). If it returns
    /// [`SlotUpdate::Retire`] or [`SlotUpdate::Graceful`], do not accept.
    ///
    /// A slot that keeps changing under the compare-and-swap (something outside the protocol
    /// writes it) is [`SlotError::Unstable`] after [`MAX_CAS_TRIES`]: the child gives up, never
    /// spins.
    pub fn set(&self, to: SlotState) -> Result<SlotUpdate, SlotError> {
        for _ in 0..MAX_CAS_TRIES {
            let now = self.read_own()?;
            match now.state {
                SlotState::Graceful => return Ok(SlotUpdate::Graceful),
                SlotState::IdleKill => return Ok(SlotUpdate::Retire),
                from => check_transition(Side::Child, from, to)?,
            }
            if now.state == to {
                return Ok(SlotUpdate::Applied);
            }
            if self.slot.cas(now, now.with_state(to)).is_ok() {
                if to == SlotState::BusyRead {
                    activity::update(self.slot.activity, Activity::request_started);
                }
                return Ok(SlotUpdate::Applied);
            }
            // The parent wrote a directive meanwhile: read again.
        }
        Err(SlotError::Unstable { tries: MAX_CAS_TRIES })
    }
}

/// Counts derived from slot states. There are no separately maintained counters anywhere in the
/// protocol: every count is a recount of a snapshot, so counts cannot drift (SPEC.md §4, invariant 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// `.` slots.
    pub dead: usize,
    /// `S` slots.
    pub starting: usize,
    /// `_` slots.
    pub ready: usize,
    /// `R W K L C` slots.
    pub busy: usize,
    /// `G` slots.
    pub graceful: usize,
    /// `I` slots.
    pub idle_kill: usize,
    /// Slots whose word could not be decoded.
    pub corrupt: usize,
}

impl Counts {
    /// Adds one slot.
    pub fn add(&mut self, state: Option<SlotState>) {
        match state {
            None => self.corrupt += 1,
            Some(SlotState::Dead) => self.dead += 1,
            Some(SlotState::Starting) => self.starting += 1,
            Some(SlotState::Ready) => self.ready += 1,
            Some(SlotState::Graceful) => self.graceful += 1,
            Some(SlotState::IdleKill) => self.idle_kill += 1,
            Some(_) => self.busy += 1,
        }
    }

    /// Idle as the spare-server policy counts it: `Starting + Ready`.
    pub fn idle(&self) -> usize {
        self.starting + self.ready
    }

    /// Slots with a (decodable) process in them.
    pub fn live(&self) -> usize {
        self.starting + self.ready + self.busy + self.graceful + self.idle_kill
    }

    /// Every slot counted.
    pub fn total(&self) -> usize {
        self.live() + self.dead + self.corrupt
    }
}

/// The worker counts mod_status reports (`?auto`'s `BusyWorkers`, `IdleWorkers`,
/// `GracefulWorkers`), counted as Apache counts them (SPEC.md §12.5): a `Ready` slot of the running
/// generation is idle; `Graceful` is graceful; `Dead`, `Starting`, `IdleKill` and damaged slots are
/// not counted; everything else (`R W K L C`, and a `Ready` slot of an older generation, which will
/// never take work again) is busy. The spare-server policy counts differently ([`Counts::idle`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkerCounts {
    /// `BusyWorkers`.
    pub busy: usize,
    /// `IdleWorkers`.
    pub idle: usize,
    /// `GracefulWorkers`.
    pub graceful: usize,
}

/// A snapshot of every slot, as the parent sees it at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreboardView {
    /// The running generation at capture time.
    pub generation: u32,
    /// Each slot's decoded word, or why it could not be decoded.
    pub slots: Vec<Result<SlotWord, SlotError>>,
}

impl ScoreboardView {
    /// Reads every slot of `table` (one Acquire load each).
    pub fn capture<T: SlotTable + ?Sized>(table: &T) -> Self {
        ScoreboardView {
            generation: table.running_generation(),
            slots: (0..table.slot_count())
                .map(|i| SlotWord::decode(table.slot_word(i).load(Ordering::Acquire)))
                .collect(),
        }
    }

    /// A view of the given states (generation 0, incarnation 0): for tests and models.
    pub fn from_states(states: impl IntoIterator<Item = SlotState>) -> Self {
        ScoreboardView {
            generation: 0,
            slots: states.into_iter().map(|state| Ok(SlotWord { state, incarnation: 0, generation: 0 })).collect(),
        }
    }

    /// The state of slot `i`; `None` if the word is corrupt or `i` is out of range.
    pub fn state(&self, i: usize) -> Option<SlotState> {
        self.slots.get(i)?.as_ref().ok().map(|w| w.state)
    }

    /// Counts over every slot.
    pub fn counts(&self) -> Counts {
        self.counts_below(self.slots.len())
    }

    /// Counts over the slots below `limit` (the policy looks only below max_request_workers).
    pub fn counts_below(&self, limit: usize) -> Counts {
        let mut c = Counts::default();
        for i in 0..limit.min(self.slots.len()) {
            c.add(self.state(i));
        }
        c
    }

    /// mod_status's worker counts over every slot (see [`WorkerCounts`]).
    pub fn worker_counts(&self) -> WorkerCounts {
        let mut c = WorkerCounts::default();
        for word in self.slots.iter().flatten() {
            match word.state {
                SlotState::Ready if word.generation == self.generation => c.idle += 1,
                SlotState::Dead | SlotState::Starting | SlotState::IdleKill => {}
                SlotState::Graceful => c.graceful += 1,
                _ => c.busy += 1,
            }
        }
        c
    }

    /// One mod_status letter per slot (`?` for a corrupt word), as in `?auto`'s `Scoreboard:` line.
    pub fn letters(&self) -> String {
        (0..self.slots.len()).map(|i| self.state(i).map_or('?', SlotState::letter)).collect()
    }
}

impl fmt::Display for ScoreboardView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen {} [{}]", self.generation, self.letters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotState::*;
    use std::cell::Cell;
    use std::sync::atomic::AtomicU64;

    fn board() -> MemoryBoard<Cell<u64>> {
        MemoryBoard::new(4)
    }

    fn born(b: &MemoryBoard<Cell<u64>>, i: usize, generation: u32) -> ChildSlot<'_, Cell<u64>> {
        let word = b.slot(i).unwrap().spawn(generation).unwrap();
        ChildSlot::attach(b, i, word).unwrap()
    }

    #[test]
    fn handles_know_their_slot_and_the_activity_word_follows_the_child() {
        let b = board();
        let me = born(&b, 2, 0);
        assert_eq!((me.index(), b.slot(2).unwrap().index()), (2, 2));
        assert_eq!(b.slot(2).unwrap().raw(), me.born().encode());
        assert_eq!(me.activity(), Activity::default());
        me.lock_acquired();
        assert_eq!(me.activity(), Activity { holds_lock: true, lock_acquisitions: 1, requests: 0 });
        me.lock_released();
        assert_eq!(b.slot(2).unwrap().activity(), Activity { holds_lock: false, lock_acquisitions: 1, requests: 0 });
        me.set(Ready).unwrap();
        // Requests are counted when the slot enters `R`, and only then.
        for (state, requests) in
            [(BusyRead, 1), (BusyWrite, 1), (Keepalive, 1), (BusyRead, 2), (Logging, 2), (Ready, 2)]
        {
            me.set(state).unwrap();
            assert_eq!(me.activity().requests, requests, "after {state:?}");
        }
    }

    #[test]
    fn spawn_only_into_dead_and_bumps_incarnation() {
        let b = board();
        let s = b.slot(1).unwrap();
        let w = s.spawn(3).unwrap();
        assert_eq!((w.state, w.incarnation, w.generation), (Starting, 1, 3));
        assert_eq!(s.spawn(3), Err(SlotError::IllegalTransition { side: Side::Parent, from: Starting, to: Starting }));
        assert_eq!(s.release(w.with_state(Dead)), w.encode());
        assert_eq!(s.spawn(4).unwrap().incarnation, 2);
        assert!(matches!(b.slot(4), Err(SlotError::NoSuchSlot { slot: 4, slots: 4 })));
    }

    #[test]
    fn child_walks_its_states_and_illegal_steps_are_errors() {
        let b = board();
        let c = born(&b, 0, 1);
        assert_eq!(c.set(Ready), Ok(SlotUpdate::Applied));
        assert_eq!(c.set(BusyRead), Ok(SlotUpdate::Applied));
        for s in [BusyWrite, Logging, Keepalive, BusyRead, BusyRead, Closing, Ready] {
            assert_eq!(c.set(s), Ok(SlotUpdate::Applied), "{s}");
        }
        assert_eq!(
            c.set(BusyWrite),
            Err(SlotError::IllegalTransition { side: Side::Child, from: Ready, to: BusyWrite })
        );
        assert!(c.set(Dead).is_err());
        assert_eq!(b.slot(0).unwrap().read().unwrap().state, Ready, "failed steps write nothing");
    }

    /// `repair` writes only over the exact word it expects, and reports the word it found.
    #[test]
    fn repair_replaces_only_the_word_it_expects() {
        let b = board();
        let c = born(&b, 1, 1);
        c.set(Ready).unwrap();
        let slot = b.slot(1).unwrap();
        let raw = slot.raw();
        let busy = SlotWord::decode(raw).unwrap().with_state(BusyRead);
        assert_eq!(slot.repair(raw ^ 1, busy), Err(raw), "another word: nothing written");
        assert_eq!(slot.read().unwrap().state, Ready);
        assert_eq!(slot.repair(raw, busy), Ok(()));
        assert_eq!(slot.read(), Ok(busy));
    }

    #[test]
    fn claim_wins_only_against_ready_and_then_the_child_cannot_take_work() {
        let b = board();
        let c = born(&b, 2, 1);
        c.set(Ready).unwrap();
        let idle = b.slot(2).unwrap().read().unwrap();
        assert!(b.slot(2).unwrap().claim_idle(idle).is_ok());
        assert_eq!(c.set(BusyRead), Ok(SlotUpdate::Retire), "work claim loses to the retirement claim");
        assert_eq!(c.check(), Ok(SlotUpdate::Retire));
        assert_eq!(b.slot(2).unwrap().read().unwrap().state, IdleKill);
    }

    #[test]
    fn child_that_claimed_work_first_cannot_be_retired() {
        let b = board();
        let c = born(&b, 2, 1);
        c.set(Ready).unwrap();
        let idle = b.slot(2).unwrap().read().unwrap(); // parent's snapshot: Ready
        assert_eq!(c.set(BusyRead), Ok(SlotUpdate::Applied)); // child claims work first
        let lost = b.slot(2).unwrap().claim_idle(idle).unwrap_err();
        assert_eq!(SlotWord::decode(lost.found).unwrap().state, BusyRead);
        // Even a claim built from the current (busy) word is refused: only Ready can be claimed.
        let now = b.slot(2).unwrap().read().unwrap();
        assert!(b.slot(2).unwrap().claim_idle(now).is_err());
        assert_eq!(b.slot(2).unwrap().read().unwrap().state, BusyRead);
    }

    #[test]
    fn aba_through_busy_back_to_ready_still_claims_an_idle_child() {
        let b = board();
        let c = born(&b, 0, 1);
        c.set(Ready).unwrap();
        let idle = b.slot(0).unwrap().read().unwrap();
        c.set(BusyRead).unwrap();
        c.set(Ready).unwrap();
        // The child is idle again at the moment of the claim: claiming it is correct.
        assert!(b.slot(0).unwrap().claim_idle(idle).is_ok());
    }

    #[test]
    fn graceful_is_a_directive_the_child_never_overwrites() {
        let b = board();
        let c = born(&b, 1, 1);
        assert_eq!(b.slot(1).unwrap().mark_graceful(), Ok(Starting));
        assert_eq!(c.set(Ready), Ok(SlotUpdate::Graceful), "a starting child learns it at once");
        let c2 = born(&b, 2, 1);
        c2.set(Ready).unwrap();
        c2.set(BusyRead).unwrap();
        c2.set(BusyWrite).unwrap();
        assert_eq!(b.slot(2).unwrap().mark_graceful(), Ok(BusyWrite));
        assert_eq!(c2.set(Logging), Ok(SlotUpdate::Graceful));
        assert_eq!(b.slot(2).unwrap().read().unwrap().state, Graceful);
        assert_eq!(b.slot(2).unwrap().mark_graceful(), Ok(Graceful), "marking twice is harmless");
        assert_eq!(b.slot(3).unwrap().mark_graceful(), Ok(Dead), "dead slots are left alone");
    }

    #[test]
    fn reaped_slot_rejects_the_dead_childs_incarnation() {
        let b = board();
        let c = born(&b, 0, 1);
        let word = c.born();
        assert_eq!(b.slot(0).unwrap().release(word.with_state(Dead)), word.encode());
        let _next = born(&b, 0, 2);
        assert_eq!(c.set(Ready), Err(SlotError::NotOwner { expected: 1, found: 2 }));
    }

    #[test]
    fn release_empties_the_slot_whatever_it_held_and_returns_it() {
        let b = board();
        let c = born(&b, 0, 1);
        c.lock_acquired();
        b.slot(0).unwrap().publish_pid(4242);
        b.slot_word(0).set(0xffff_ffff_ffff_ff07);
        let empty = SlotWord { state: Dead, incarnation: 1, generation: 0 };
        assert_eq!(b.slot(0).unwrap().release(empty), 0xffff_ffff_ffff_ff07, "what it held, for the log");
        assert_eq!(b.slot(0).unwrap().read(), Ok(empty));
        assert_eq!(b.slot(0).unwrap().activity(), Activity::default(), "a dead holder holds nothing");
        assert_eq!(b.slot(0).unwrap().board_pid(), 0);
    }

    #[test]
    fn the_pid_word_holds_what_the_parent_publishes() {
        let b = board();
        let s = b.slot(3).unwrap();
        s.publish_pid(4242);
        assert_eq!((s.board_pid(), b.pid_word(3).unwrap().get()), (4242, 4242));
        s.install(SlotWord { state: Starting, incarnation: 1, generation: 0 });
        assert_eq!(s.board_pid(), 0, "a new child has no pid until its fork returns");
    }

    #[test]
    fn view_counts_are_a_recount_of_states() {
        let v = ScoreboardView::from_states([Dead, Starting, Ready, Ready, BusyRead, Keepalive, Graceful, IdleKill]);
        let c = v.counts();
        assert_eq!((c.dead, c.starting, c.ready, c.busy, c.graceful, c.idle_kill), (1, 1, 2, 2, 1, 1));
        assert_eq!((c.idle(), c.live(), c.total()), (3, 7, 8));
        assert_eq!(v.letters(), ".S__RKGI");
        assert_eq!(v.counts_below(3).idle(), 2);
    }

    #[test]
    fn worker_counts_follow_mod_status() {
        let word = |state, generation| Ok(SlotWord { state, incarnation: 1, generation });
        let v = ScoreboardView {
            generation: 2,
            slots: vec![
                word(Ready, 2),     // idle
                word(Ready, 2),     // idle (two, so that idle and busy Ready children differ in number)
                word(Ready, 1),     // an old generation's idle child: busy, as Apache counts it
                word(BusyWrite, 2), // busy
                word(Keepalive, 1), // busy
                word(Graceful, 1),  // graceful
                word(Starting, 2),  // not counted
                word(IdleKill, 2),  // not counted
                word(Dead, 2),      // not counted
                Err(SlotError::CorruptWord { raw: 0xee, code: 0xee }),
            ],
        };
        assert_eq!(v.worker_counts(), WorkerCounts { busy: 3, idle: 2, graceful: 1 });
        assert_eq!(v.counts().idle(), 4, "the policy counts Starting and every Ready as idle");
    }

    #[test]
    fn capture_reads_shared_atomics_and_marks_corruption() {
        let b: MemoryBoard<AtomicU64> = MemoryBoard::new(3);
        b.publish_generation(5);
        let w = b.slot(0).unwrap().spawn(5).unwrap();
        let c = ChildSlot::attach(&b, 0, w).unwrap();
        c.set(Ready).unwrap();
        assert!(!c.generation_changed());
        b.publish_generation(6);
        assert!(c.generation_changed());
        b.publish_generation(5);
        b.slot_word(2).store(0xee, Ordering::Relaxed);
        let v = ScoreboardView::capture(&b);
        assert_eq!(v.generation, 5);
        assert_eq!(v.letters(), "_.?");
        assert_eq!(v.counts().corrupt, 1);
        assert_eq!(b.running_generation(), 5);
    }
}
