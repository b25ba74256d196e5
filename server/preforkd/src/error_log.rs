//! The error log (`error_log`): `tracing`'s output, to standard error or to a file that is opened
//! again at every restart and graceful restart, so that logrotate can move it away (Apache reopens
//! its logs on restart too). Until the new file is open, lines go to the old one; if it cannot be
//! opened, the old one is kept and the failure is logged there.
//!
//! The parent is single-threaded when it forks, so the mutex is never held across a fork; each
//! child inherits the file open at its birth.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The open error log file and its path (`None`: standard error).
static FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

fn open(path: &Path) -> io::Result<File> {
    File::options().append(true).create(true).open(path)
}

/// A writer that writes to the error log as it is at the moment of the write.
struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_mut() {
            Some((_, f)) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the `tracing` subscriber (level from `RUST_LOG`, default `info`), writing to `path` or
/// to standard error.
pub fn init(path: Option<&Path>) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = match path {
        Some(path) => {
            let file = open(path).map_err(|e| format!("error_log {}: {e}", path.display()))?;
            *FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((path.to_path_buf(), file));
            false
        }
        None => io::stderr().is_terminal(),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Writer).with_ansi(ansi).init();
    Ok(())
}

/// Opens the error log file again (at a restart); standard error stays as it is.
pub fn reopen() {
    let mut guard = FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((path, _)) = guard.as_ref() else { return };
    let path = path.clone();
    match open(&path) {
        Ok(file) => *guard = Some((path, file)),
        Err(e) => {
            drop(guard);
            tracing::error!(
                "error_log {}: cannot be opened again ({e}); still writing to the file open before",
                path.display()
            );
        }
    }
}
