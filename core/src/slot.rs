//! Scoreboard slot states, who may change them, and how a slot is encoded in shared memory
//! (SPEC.md §2 and §3).
//!
//! ```text
//!                    parent: spawn (before fork)
//!        +------+ ------------------------------> +----------+
//!        | Dead |                                 | Starting |
//!        |  .   | <-------- parent: reaped ------ |    S     |
//!        +------+   (from any live state;         +----------+
//!           ^        also when fork() fails)           | child: initialised
//!           |                                          v
//!           |   parent: claim (CAS)    +---------+  child: work claim   +---------------------+
//!           |   +--------------------- |  Ready  | -------------------> | BusyRead R          |
//!           |   |                      |    _    | <------------------- | BusyWrite W         |
//!           |   v                      +---------+  child: done, or     | Keepalive K         |
//!     +----------+                          |       accept found none   | Logging L           |
//!     | IdleKill |                          |                           | Closing C           |
//!     |    I     |                          | parent: graceful           +---------------------+
//!     +----------+                          v  restart/stop                |   child: any of
//!       child exits            +----------+ <------------------------------+   R W K L C to any
//!       (parent reaps)         | Graceful |   (also from Starting)             of R W K L C
//!                              |    G     |
//!                              +----------+  child finishes the work in hand, exits; parent reaps
//! ```
//!
//! Every arrow is a row of [`TRANSITIONS`]; anything else is an [`SlotError::IllegalTransition`].
//! `Graceful` and `IdleKill` are *directives* from the parent: a child that finds one of them in its
//! slot does not overwrite it, it winds down (see [`crate::scoreboard`]).

use std::fmt;

/// The state of one scoreboard slot, with Apache's numeric codes and mod_status letters.
///
/// The numeric order matters as it does in Apache: `Starting` and `Ready` (codes 1 and 2) are the
/// *idle* states. Code 7 (`SERVER_BUSY_DNS`) is not used by Apache 2.4 and is not a valid state here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum SlotState {
    /// `.` No process in this slot.
    Dead = 0,
    /// `S` The parent has claimed the slot and is forking a child into it.
    Starting = 1,
    /// `_` The child waits for a connection (or for the accept lock).
    Ready = 2,
    /// `R` The child is accepting a connection or reading a request.
    BusyRead = 3,
    /// `W` The child is processing a request or writing the reply.
    BusyWrite = 4,
    /// `K` The child waits for the next request on a keep-alive connection.
    Keepalive = 5,
    /// `L` The child is logging the request.
    Logging = 6,
    /// `C` The child is closing the connection.
    Closing = 8,
    /// `G` The parent asked the child to finish what it is doing and exit (graceful restart or stop).
    Graceful = 9,
    /// `I` The parent claimed this idle child for retirement; it exits without taking more work.
    IdleKill = 10,
}

use SlotState::*;

impl SlotState {
    /// Every state, in code order.
    pub const ALL: [SlotState; 10] =
        [Dead, Starting, Ready, BusyRead, BusyWrite, Keepalive, Logging, Closing, Graceful, IdleKill];

    /// The states a child shows while it serves a connection.
    pub const BUSY: [SlotState; 5] = [BusyRead, BusyWrite, Keepalive, Logging, Closing];

    /// Apache's numeric code (`SERVER_DEAD` = 0 … `SERVER_IDLE_KILL` = 10).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state with Apache's numeric code `code`.
    pub const fn from_code(code: u8) -> Option<SlotState> {
        Some(match code {
            0 => Dead,
            1 => Starting,
            2 => Ready,
            3 => BusyRead,
            4 => BusyWrite,
            5 => Keepalive,
            6 => Logging,
            8 => Closing,
            9 => Graceful,
            10 => IdleKill,
            _ => return None,
        })
    }

    /// mod_status's letter for this state.
    pub const fn letter(self) -> char {
        match self {
            Dead => '.',
            Starting => 'S',
            Ready => '_',
            BusyRead => 'R',
            BusyWrite => 'W',
            Keepalive => 'K',
            Logging => 'L',
            Closing => 'C',
            Graceful => 'G',
            IdleKill => 'I',
        }
    }

    /// The state shown by mod_status's letter `c`.
    pub fn from_letter(c: char) -> Option<SlotState> {
        SlotState::ALL.into_iter().find(|s| s.letter() == c)
    }

    /// A short English name ("ready", "busy-read", …).
    pub const fn name(self) -> &'static str {
        match self {
            Dead => "dead",
            Starting => "starting",
            Ready => "ready",
            BusyRead => "busy-read",
            BusyWrite => "busy-write",
            Keepalive => "keepalive",
            Logging => "logging",
            Closing => "closing",
            Graceful => "graceful",
            IdleKill => "idle-kill",
        }
    }

    /// Counts as idle for the spare-server policy: `Starting` or `Ready` (Apache: `status <= SERVER_READY`).
    pub const fn is_idle(self) -> bool {
        matches!(self, Starting | Ready)
    }

    /// Serving a connection: one of `R W K L C`.
    pub const fn is_busy(self) -> bool {
        matches!(self, BusyRead | BusyWrite | Keepalive | Logging | Closing)
    }

    /// A process occupies the slot (every state but `Dead`).
    pub const fn is_live(self) -> bool {
        !matches!(self, Dead)
    }

    /// A directive the parent wrote that the child must obey: `Graceful` or `IdleKill`.
    pub const fn is_directive(self) -> bool {
        matches!(self, Graceful | IdleKill)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.letter(), self.name())
    }
}

/// Who writes a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The parent process (the supervisor).
    Parent,
    /// The child process that owns the slot.
    Child,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Parent => "parent",
            Side::Child => "child",
        })
    }
}

/// One row of the transition table: `side` may move a slot from any state in `from` to any state in `to`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Who makes the transition.
    pub side: Side,
    /// Source states.
    pub from: &'static [SlotState],
    /// Target states.
    pub to: &'static [SlotState],
    /// When and why it happens.
    pub why: &'static str,
}

const LIVE: &[SlotState] = &[Starting, Ready, BusyRead, BusyWrite, Keepalive, Logging, Closing, Graceful, IdleKill];
const WORKING: &[SlotState] = &[Starting, Ready, BusyRead, BusyWrite, Keepalive, Logging, Closing];

/// The complete transition table. A transition not listed here is illegal.
pub const TRANSITIONS: &[Rule] = &[
    Rule {
        side: Side::Parent,
        from: &[Dead],
        to: &[Starting],
        why: "spawn: the parent claims a free slot before fork()",
    },
    Rule {
        side: Side::Parent,
        from: LIVE,
        to: &[Dead],
        why: "the child was reaped by waitpid(), or fork() failed (from Starting)",
    },
    Rule {
        side: Side::Parent,
        from: WORKING,
        to: &[Graceful],
        why: "graceful restart or graceful stop: finish the work in hand, then exit",
    },
    Rule {
        side: Side::Parent,
        from: &[Ready],
        to: &[IdleKill],
        why: "retirement claim (compare-and-swap) by the spare-server policy",
    },
    Rule { side: Side::Child, from: &[Starting], to: &[Ready], why: "the child finished initialising" },
    Rule {
        side: Side::Child,
        from: &[Ready],
        to: &[BusyRead],
        why: "work claim (compare-and-swap) before accept(): the child is about to take a connection",
    },
    Rule {
        side: Side::Child,
        from: &SlotState::BUSY,
        to: &[Ready],
        why: "the connection is finished, or accept() found nothing (a wasted wake-up)",
    },
    Rule {
        side: Side::Child,
        from: &SlotState::BUSY,
        to: &SlotState::BUSY,
        why: "serving: reading, writing, keep-alive wait, logging, closing",
    },
];

/// Is `side` allowed to move a slot from `from` to `to`?
pub fn is_legal(side: Side, from: SlotState, to: SlotState) -> bool {
    TRANSITIONS.iter().any(|r| r.side == side && r.from.contains(&from) && r.to.contains(&to))
}

/// [`is_legal`] as a `Result`, for `?`.
pub fn check_transition(side: Side, from: SlotState, to: SlotState) -> Result<(), SlotError> {
    if is_legal(side, from, to) { Ok(()) } else { Err(SlotError::IllegalTransition { side, from, to }) }
}

/// Errors of the slot protocol. None of them panics; the caller decides (SPEC.md §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SlotError {
    /// The slot word holds a state code that is not one of the ten valid ones.
    #[error("slot word {raw:#018x} is corrupt: state code {code} is not one of 0-6, 8-10")]
    CorruptWord {
        /// The raw word as read.
        raw: u64,
        /// Its state byte.
        code: u8,
    },
    /// The transition is not in [`TRANSITIONS`] for this side.
    #[error("illegal transition by the {side}: {from} -> {to}")]
    IllegalTransition {
        /// Who tried.
        side: Side,
        /// State found in the slot.
        from: SlotState,
        /// State it tried to write.
        to: SlotState,
    },
    /// The child's slot now belongs to a different incarnation: it was reaped and reused, or corrupted.
    #[error("slot belongs to incarnation {found}, not to this child's incarnation {expected}")]
    NotOwner {
        /// The incarnation the child was spawned with.
        expected: u32,
        /// The incarnation found in the slot.
        found: u32,
    },
    /// The slot word kept changing under a compare-and-swap: something other than the protocol
    /// writes it (a correct parent writes a child's slot at most twice between two of its steps).
    /// The caller gives up instead of spinning.
    #[error("slot word changed under {tries} compare-and-swaps in a row: something outside the protocol writes it")]
    Unstable {
        /// Compare-and-swaps tried.
        tries: u32,
    },
    /// A slot index beyond the scoreboard.
    #[error("slot {slot} does not exist (the scoreboard has {slots} slots)")]
    NoSuchSlot {
        /// The index asked for.
        slot: usize,
        /// The number of slots (server_limit).
        slots: usize,
    },
}

/// Incarnations are 24-bit counters: they wrap.
pub const INCARNATION_MASK: u32 = 0x00ff_ffff;

/// The decoded content of one slot word.
///
/// Encoding (one 64-bit word, so a single atomic load is always a consistent read):
///
/// ```text
///  63                 32 31                8 7         0
/// +---------------------+-------------------+-----------+
/// |     generation      |    incarnation    |   state   |
/// +---------------------+-------------------+-----------+
/// ```
///
/// * `state`: Apache's code ([`SlotState::code`]).
/// * `incarnation`: bumped by the parent at every spawn into this slot (24 bits, wrapping). It names
///   the child the word belongs to, so a child can never act on a slot that was reaped and reused,
///   and the parent can tell a stale or corrupted slot from the one it wrote.
/// * `generation`: the restart generation the child was spawned in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotWord {
    /// The slot's state.
    pub state: SlotState,
    /// Which spawn into this slot the word belongs to (24 bits).
    pub incarnation: u32,
    /// The generation of the child in the slot.
    pub generation: u32,
}

impl SlotWord {
    /// A never-used slot: all bits zero, which is what a fresh shared mapping holds.
    pub const EMPTY: SlotWord = SlotWord { state: Dead, incarnation: 0, generation: 0 };

    /// Packs the word.
    pub const fn encode(self) -> u64 {
        (self.generation as u64) << 32 | ((self.incarnation & INCARNATION_MASK) as u64) << 8 | self.state.code() as u64
    }

    /// Unpacks a word; an invalid state code is [`SlotError::CorruptWord`].
    pub const fn decode(raw: u64) -> Result<SlotWord, SlotError> {
        let code = (raw & 0xff) as u8;
        match SlotState::from_code(code) {
            Some(state) => Ok(SlotWord {
                state,
                incarnation: ((raw >> 8) as u32) & INCARNATION_MASK,
                generation: (raw >> 32) as u32,
            }),
            None => Err(SlotError::CorruptWord { raw, code }),
        }
    }

    /// The same word with another state.
    pub const fn with_state(self, state: SlotState) -> SlotWord {
        SlotWord { state, ..self }
    }

    /// The word the parent writes when it spawns into this slot (which must hold this word now).
    pub const fn next_incarnation(self, generation: u32) -> SlotWord {
        SlotWord { state: Starting, incarnation: self.incarnation.wrapping_add(1) & INCARNATION_MASK, generation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_letters_are_apaches() {
        let expected = [
            (Dead, 0, '.'),
            (Starting, 1, 'S'),
            (Ready, 2, '_'),
            (BusyRead, 3, 'R'),
            (BusyWrite, 4, 'W'),
            (Keepalive, 5, 'K'),
            (Logging, 6, 'L'),
            (Closing, 8, 'C'),
            (Graceful, 9, 'G'),
            (IdleKill, 10, 'I'),
        ];
        for (state, code, letter) in expected {
            assert_eq!(state.code(), code);
            assert_eq!(state.letter(), letter);
            assert_eq!(SlotState::from_code(code), Some(state));
            assert_eq!(SlotState::from_letter(letter), Some(state));
        }
        assert_eq!(SlotState::from_code(7), None, "SERVER_BUSY_DNS is not used");
        assert_eq!(SlotState::from_letter('D'), None);
        for code in 11..=255 {
            assert_eq!(SlotState::from_code(code), None);
        }
    }

    #[test]
    fn idle_means_status_at_most_ready_as_in_apache() {
        for s in SlotState::ALL {
            assert_eq!(s.is_idle(), s != Dead && s.code() <= Ready.code(), "{s}");
        }
    }

    #[test]
    fn busy_means_serving_a_connection() {
        let busy: String = SlotState::ALL.iter().filter(|s| s.is_busy()).map(|s| s.letter()).collect();
        assert_eq!(busy, "RWKLC");
    }

    /// The expected table, written out independently of [`TRANSITIONS`]: for each side, a row per
    /// source state listing the legal targets by letter.
    fn expected(side: Side, from: SlotState) -> &'static str {
        match (side, from) {
            (Side::Parent, Dead) => "S",
            (Side::Parent, Starting) => ".G",
            (Side::Parent, Ready) => ".GI",
            (Side::Parent, BusyRead | BusyWrite | Keepalive | Logging | Closing) => ".G",
            (Side::Parent, Graceful | IdleKill) => ".",
            (Side::Child, Starting) => "_",
            (Side::Child, Ready) => "R",
            (Side::Child, BusyRead | BusyWrite | Keepalive | Logging | Closing) => "_RWKLC",
            (Side::Child, Dead | Graceful | IdleKill) => "",
        }
    }

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        for side in [Side::Parent, Side::Child] {
            for from in SlotState::ALL {
                let legal: String =
                    SlotState::ALL.into_iter().filter(|&to| is_legal(side, from, to)).map(SlotState::letter).collect();
                let mut want: Vec<char> = expected(side, from).chars().collect();
                want.sort_by_key(|&c| SlotState::from_letter(c).unwrap());
                assert_eq!(legal, want.into_iter().collect::<String>(), "{side} from {from}");
            }
        }
    }

    #[test]
    fn illegal_transitions_are_errors_naming_side_and_states() {
        let err = check_transition(Side::Child, Ready, Dead).unwrap_err();
        assert_eq!(err, SlotError::IllegalTransition { side: Side::Child, from: Ready, to: Dead });
        assert_eq!(err.to_string(), "illegal transition by the child: _ (ready) -> . (dead)");
        assert!(check_transition(Side::Parent, BusyRead, IdleKill).is_err(), "no claim of a busy child");
        assert!(check_transition(Side::Child, IdleKill, BusyRead).is_err(), "a claimed child takes no work");
        assert!(check_transition(Side::Child, Graceful, Ready).is_err(), "G is not overwritten");
        assert!(check_transition(Side::Parent, Ready, IdleKill).is_ok());
    }

    #[test]
    fn only_the_parent_writes_dead_starting_graceful_idlekill() {
        for from in SlotState::ALL {
            for to in [Dead, Starting, Graceful, IdleKill] {
                assert!(!is_legal(Side::Child, from, to), "child {from} -> {to}");
            }
            for to in [Ready, BusyRead, BusyWrite, Keepalive, Logging, Closing] {
                assert!(!is_legal(Side::Parent, from, to), "parent {from} -> {to}");
            }
        }
    }

    #[test]
    fn word_round_trips_and_rejects_bad_state_codes() {
        let w = SlotWord { state: Keepalive, incarnation: 0xabcdef, generation: 0xdead_beef };
        assert_eq!(SlotWord::decode(w.encode()), Ok(w));
        assert_eq!(SlotWord::decode(0), Ok(SlotWord::EMPTY));
        assert_eq!(
            SlotWord::decode(0x1234_0000_0000_0007),
            Err(SlotError::CorruptWord { raw: 0x1234_0000_0000_0007, code: 7 })
        );
        assert!(SlotWord::decode(u64::MAX).is_err());
        let next = SlotWord { state: Dead, incarnation: INCARNATION_MASK, generation: 1 }.next_incarnation(2);
        assert_eq!((next.state, next.incarnation, next.generation), (Starting, 0, 2), "incarnation wraps");
    }
}
