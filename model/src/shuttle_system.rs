//! The shuttle system test (written next).
