//! Black-box tests of the `preforkd` binary. **Not built yet** (issues 5 and 6): no test here yet.
