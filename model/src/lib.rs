//! `prefork-model`: loom, shuttle and explicit-state checking of `prefork-core`.
//!
//! **Not built yet** (issue 3). This crate is a workspace member so the layout is fixed from the
//! start; it contains no checker and claims none.
