//! Selecting the core's seeded bugs (negative tests only). The core compiles them only with its
//! `seeded-bugs` feature, which this crate's feature of the same name turns on and which only this
//! crate's own tests enable: asking for a seeded bug in any other build is a mistake, and panics.

use prefork_core::seeded::SeededBug;
use prefork_core::{ChildLoop, Parent};

/// Selects `bug` in `parent` if it is one of the parent's.
pub(crate) fn seed_parent(parent: &mut Parent, bug: Option<SeededBug>) {
    let Some(bug) = bug.filter(|&b| b.in_parent()) else { return };
    #[cfg(feature = "seeded-bugs")]
    parent.seed_bug(bug);
    #[cfg(not(feature = "seeded-bugs"))]
    panic!("seeded bug {bug:?} selected in a build without the seeded-bugs feature ({parent:?})");
}

/// Selects `bug` in `child` if it is one of the child loop's.
pub(crate) fn seed_child(child: &mut ChildLoop, bug: Option<SeededBug>) {
    let Some(bug) = bug.filter(|&b| !b.in_parent()) else { return };
    #[cfg(feature = "seeded-bugs")]
    child.seed_bug(bug);
    #[cfg(not(feature = "seeded-bugs"))]
    panic!("seeded bug {bug:?} selected in a build without the seeded-bugs feature ({child:?})");
}
