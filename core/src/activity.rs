//! The activity word (SPEC.md §3.5): each child's second shared word, the evidence the parent's
//! stall watchdog decides from (SPEC.md §7.8).
//!
//! ```text
//!  63                      32 31                       1   0
//! +--------------------------+--------------------------+---+
//! | requests started (32)    | lock acquisitions (31)   | H |
//! +--------------------------+--------------------------+---+
//! ```
//!
//! * `H`: the child holds the accept lock. Set when the child loop learns it got the lock
//!   (`LockAcquired`), cleared when it learns the lock is released (`LockReleased`): `H` covers
//!   every moment the child really holds it, except the few instructions between the kernel
//!   granting the lock and the loop's next step.
//! * lock acquisitions: counted at each `LockAcquired` (wrapping). A holder whose count moved
//!   between two looks made progress, even if it holds the lock again.
//! * requests started: counted whenever the slot enters `R` from another state (the work claim,
//!   and each later request on a kept-alive connection; wrapping).
//!
//! Only the slot's child writes it (plain stores: one writer); the parent reads it, and resets it
//! to zero when it spawns a child into the slot and when it reaps one. A corrupted word can only
//! make the watchdog look at a child; it never changes what a child does.

use crate::atomic::{AtomicWord, Ordering};

const HELD: u64 = 1;
const LOCK_SHIFT: u32 = 1;
const LOCK_MASK: u64 = (1 << 31) - 1;
const REQUEST_SHIFT: u32 = 32;

/// A decoded activity word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Activity {
    /// The child holds the accept lock.
    pub holds_lock: bool,
    /// Lock acquisitions so far (31 bits, wrapping).
    pub lock_acquisitions: u32,
    /// Requests started so far (wrapping).
    pub requests: u32,
}

impl Activity {
    /// Unpacks a word (every bit pattern is a valid activity).
    pub fn decode(word: u64) -> Activity {
        Activity {
            holds_lock: word & HELD != 0,
            lock_acquisitions: ((word >> LOCK_SHIFT) & LOCK_MASK) as u32,
            requests: (word >> REQUEST_SHIFT) as u32,
        }
    }

    /// Packs it.
    pub fn encode(self) -> u64 {
        u64::from(self.holds_lock)
            | (u64::from(self.lock_acquisitions) & LOCK_MASK) << LOCK_SHIFT
            | u64::from(self.requests) << REQUEST_SHIFT
    }

    /// Reads `word` (Acquire).
    pub fn read<W: AtomicWord>(word: &W) -> Activity {
        Activity::decode(word.load(Ordering::Acquire))
    }

    /// The child got the lock: `H` set, one more acquisition.
    pub fn acquired(self) -> Activity {
        Activity {
            holds_lock: true,
            lock_acquisitions: self.lock_acquisitions.wrapping_add(1) & LOCK_MASK as u32,
            ..self
        }
    }

    /// The child let the lock go.
    pub fn released(self) -> Activity {
        Activity { holds_lock: false, ..self }
    }

    /// The child started a request.
    pub fn request_started(self) -> Activity {
        Activity { requests: self.requests.wrapping_add(1), ..self }
    }
}

/// The child's own update of its word: read, change, store (it is the only writer).
pub(crate) fn update<W: AtomicWord>(word: &W, change: impl FnOnce(Activity) -> Activity) {
    let next = change(Activity::read(word));
    word.store(next.encode(), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn the_word_round_trips_and_counters_wrap_in_their_own_bits() {
        let a = Activity { holds_lock: true, lock_acquisitions: (1 << 31) - 1, requests: u32::MAX };
        assert_eq!(Activity::decode(a.encode()), a);
        let b = a.acquired().request_started();
        assert_eq!(b, Activity { holds_lock: true, lock_acquisitions: 0, requests: 0 }, "wraps, no carry");
        assert_eq!(Activity::decode(u64::MAX), a, "every pattern decodes");
        let w = Cell::new(0);
        update(&w, Activity::acquired);
        update(&w, Activity::released);
        update(&w, Activity::acquired);
        assert_eq!(Activity::read(&w), Activity { holds_lock: true, lock_acquisitions: 2, requests: 0 });
    }
}
