//! `preforkd -k graceful|restart|graceful-stop|stop`: signal the running server through its pid
//! file, as `apachectl -k` (the configuration is validated first, by the caller).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;

/// What `-k` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// SIGUSR1: new children with the new configuration; old ones finish their requests.
    Graceful,
    /// SIGHUP: stop every child, start afresh with the new configuration.
    Restart,
    /// SIGWINCH: stop accepting, let children finish, exit.
    GracefulStop,
    /// SIGTERM: stop now.
    Stop,
}

impl Action {
    fn signal(self) -> Signal {
        match self {
            Action::Graceful => Signal::SIGUSR1,
            Action::Restart => Signal::SIGHUP,
            Action::GracefulStop => Signal::SIGWINCH,
            Action::Stop => Signal::SIGTERM,
        }
    }
}

/// Sends `action`'s signal to the pid in `pid_file`; a message for the operator either way.
pub fn send(action: Action, pid_file: Option<&Path>) -> Result<String, String> {
    let path = pid_file.ok_or("no pid_file is configured: set pid_file in the configuration or pass --pid-file")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the pid file {}: {e} (is preforkd running?)", path.display()))?;
    let pid: i32 =
        text.trim().parse().map_err(|_| format!("{} does not hold a pid: {:?}", path.display(), text.trim()))?;
    if pid <= 1 {
        return Err(format!("{} holds pid {pid}, which cannot be preforkd", path.display()));
    }
    let pid = Pid::from_raw(pid);
    if kill(pid, None).is_err() {
        return Err(format!("no process {pid} is running (stale pid file {}?)", path.display()));
    }
    kill(pid, action.signal()).map_err(|e| format!("cannot signal {pid}: {e}"))?;
    Ok(format!("sent {} to preforkd (pid {pid})", action.signal()))
}
