//! The `preforkd` daemon's parts that are not HTTP: settings (file and command line), `-k`
//! control through the pid file, systemd integration.

pub mod control;
pub mod settings;
pub mod systemd;
