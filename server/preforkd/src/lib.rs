//! # preforkd
//!
//! A preforking HTTP/1.1 static-file server with Apache's MPM prefork process model: one
//! [`prefork_server::Service`] ([`http::HttpService`]) on the `prefork-server` library, plus what a
//! daemon needs around it (SPEC.md §12).
//!
//! | module | what |
//! |---|---|
//! | [`http`] | the service: requests (`httparse`), keep-alive, timeouts, limits, errors; static files and the path rule ([`http::files`]); the access log ([`http::log`]); the status pages ([`http::status`]) |
//! | [`settings`] | one list of keys that is both the TOML file's schema and the command line, with every default in one place |
//! | [`error_log`] | the error log, opened again at every restart (log rotation) |
//! | [`control`] | `-k graceful|restart|graceful-stop|stop` through the pid file |
//! | [`systemd`] | socket activation (`LISTEN_FDS`) and `sd_notify` |
//! | [`fuzzing`] | fuzz bodies for what preforkd reads from outside (the `fuzz/` targets call them) |
//!
//! The binary is `src/main.rs`.
#![warn(missing_docs)]

pub mod control;
pub mod error_log;
pub mod fuzzing;
pub mod http;
pub mod settings;
pub mod systemd;
