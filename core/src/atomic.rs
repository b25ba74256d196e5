//! The atomic-cell trait the shared-memory protocol is written against.
//!
//! Every piece of the protocol that touches shared memory (the slot words of the scoreboard and the
//! running generation) goes through [`AtomicWord`]. The implementations decide what the memory is:
//!
//! | implementation | used by | what it is |
//! |---|---|---|
//! | [`std::sync::atomic::AtomicU64`] | `prefork-server` | an atomic inside the `MAP_SHARED` scoreboard mapping |
//! | loom / shuttle atomics (newtypes in `prefork-model`) | the model checkers | atomics whose every access is a scheduling point |
//! | [`std::cell::Cell<u64>`] | deterministic simulations, the explicit-state explorer | one "process" at a time; orderings are irrelevant |
//!
//! Because the protocol code is generic over this trait, the checkers run the *same* code the server
//! runs, without a global `--cfg loom` switch (see SPEC.md §11).

use std::cell::Cell;
use std::sync::atomic::AtomicU64;
pub use std::sync::atomic::Ordering;

/// A 64-bit memory word that supports the operations the slot protocol needs.
///
/// Orderings follow the C++20 memory model. Implementations for single-threaded use may ignore them.
pub trait AtomicWord {
    /// Reads the word.
    fn load(&self, order: Ordering) -> u64;
    /// Writes the word.
    fn store(&self, value: u64, order: Ordering);
    /// Replaces the word with `new` if it equals `current`; returns the previous value either way
    /// (`Ok` on success, `Err(actual)` on failure). Never fails spuriously.
    fn compare_exchange(&self, current: u64, new: u64, success: Ordering, failure: Ordering) -> Result<u64, u64>;
}

impl AtomicWord for AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order)
    }
    fn compare_exchange(&self, current: u64, new: u64, success: Ordering, failure: Ordering) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
}

impl AtomicWord for Cell<u64> {
    fn load(&self, _: Ordering) -> u64 {
        self.get()
    }
    fn store(&self, value: u64, _: Ordering) {
        self.set(value)
    }
    fn compare_exchange(&self, current: u64, new: u64, _: Ordering, _: Ordering) -> Result<u64, u64> {
        let actual = self.get();
        if actual == current {
            self.set(new);
            Ok(actual)
        } else {
            Err(actual)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<W: AtomicWord>(w: &W) {
        w.store(7, Ordering::Release);
        assert_eq!(w.load(Ordering::Acquire), 7);
        assert_eq!(w.compare_exchange(7, 9, Ordering::AcqRel, Ordering::Acquire), Ok(7));
        assert_eq!(w.compare_exchange(7, 11, Ordering::AcqRel, Ordering::Acquire), Err(9));
        assert_eq!(w.load(Ordering::Acquire), 9);
    }

    #[test]
    fn std_atomic_and_cell_behave_alike() {
        exercise(&AtomicU64::new(0));
        exercise(&Cell::new(0));
    }
}
