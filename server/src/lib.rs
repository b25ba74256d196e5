//! `prefork-server`: the thin shell that will run `prefork-core`'s machines on real processes.
//!
//! **Not built yet** (issue 4). This crate is a workspace member so the layout is fixed from the
//! start; it contains no server code and claims none.
#![forbid(unsafe_code)]
