//! The core's [`AtomicWord`] on each checker's memory.
//!
//! The core's protocol code is generic over `AtomicWord`; these adapters let loom and shuttle stand
//! in for the server's atomics in shared memory, and give the explicit-state model a board it can
//! load from and save to its state.

use prefork_core::atomic::{AtomicWord, Ordering};
use prefork_core::scoreboard::{MemoryBoard, SlotTable};
use std::cell::Cell;

/// Declares a newtype over a checker's `AtomicU64` that implements the core's [`AtomicWord`].
macro_rules! atomic_word {
    ($(#[$doc:meta])* $name:ident, $atomic:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub $atomic);

        impl AtomicWord for $name {
            fn load(&self, order: Ordering) -> u64 {
                self.0.load(order)
            }
            fn store(&self, value: u64, order: Ordering) {
                self.0.store(value, order)
            }
            fn compare_exchange(&self, current: u64, new: u64, success: Ordering, failure: Ordering) -> Result<u64, u64> {
                self.0.compare_exchange(current, new, success, failure)
            }
        }
    };
}

atomic_word!(
    /// A loom atomic: every access is a point where loom explores interleavings and weak-memory
    /// outcomes. Create only inside `loom::model`.
    LoomWord,
    loom::sync::atomic::AtomicU64
);

atomic_word!(
    /// A shuttle atomic: every access is a scheduling point (shuttle models all atomics as SeqCst).
    ShuttleWord,
    shuttle::sync::atomic::AtomicU64
);

/// A scoreboard of loom atomics (inside `loom::model` only).
pub fn loom_board(slots: usize) -> MemoryBoard<LoomWord> {
    MemoryBoard::with(slots, || LoomWord(loom::sync::atomic::AtomicU64::new(0)))
}

/// A scoreboard of shuttle atomics.
pub fn shuttle_board(slots: usize) -> MemoryBoard<ShuttleWord> {
    MemoryBoard::with(slots, || ShuttleWord(shuttle::sync::atomic::AtomicU64::new(0)))
}

/// The words of a board, as an explicit-state model keeps them in its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BoardWords {
    /// The running-generation word.
    pub generation: u64,
    /// The slot words.
    pub slots: Vec<u64>,
    /// The activity words.
    pub activity: Vec<u64>,
    /// The pid words (what the parent publishes; the protocol never reads them).
    pub pids: Vec<u64>,
}

impl BoardWords {
    /// A fresh board of `slots` slots: all zero.
    pub fn new(slots: usize) -> Self {
        BoardWords { generation: 0, slots: vec![0; slots], activity: vec![0; slots], pids: vec![0; slots] }
    }
}

/// A scoreboard of plain cells, loaded from and saved back to an explicit-state model's state.
#[derive(Debug)]
pub struct CellBoard {
    generation: Cell<u64>,
    slots: Vec<Cell<u64>>,
    activity: Vec<Cell<u64>>,
    pids: Vec<Cell<u64>>,
}

impl CellBoard {
    /// A board holding `words`.
    pub fn load(words: &BoardWords) -> Self {
        let cells = |ws: &[u64]| ws.iter().map(|&w| Cell::new(w)).collect();
        CellBoard {
            generation: Cell::new(words.generation),
            slots: cells(&words.slots),
            activity: cells(&words.activity),
            pids: cells(&words.pids),
        }
    }

    /// The words, to keep in the model's state.
    pub fn save(&self) -> BoardWords {
        let words = |cs: &[Cell<u64>]| cs.iter().map(Cell::get).collect();
        BoardWords {
            generation: self.generation.get(),
            slots: words(&self.slots),
            activity: words(&self.activity),
            pids: words(&self.pids),
        }
    }
}

impl SlotTable for CellBoard {
    type Word = Cell<u64>;
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
    fn slot_word(&self, index: usize) -> &Cell<u64> {
        &self.slots[index]
    }
    fn activity_word(&self, index: usize) -> &Cell<u64> {
        &self.activity[index]
    }
    fn generation_word(&self) -> &Cell<u64> {
        &self.generation
    }
    fn pid_word(&self, index: usize) -> Option<&Cell<u64>> {
        self.pids.get(index)
    }
}
