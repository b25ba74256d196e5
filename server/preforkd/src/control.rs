//! `preforkd -k graceful|restart|graceful-stop|stop|upgrade`: signal the running server through its pid
//! file, as `apachectl -k` (the configuration is validated first, by the caller).
//! `preforkd -k ready|drain|maint`: the operator's word for a load balancer's agent check
//! (SPEC.md §7.10), kept next to the pid file and read by the server at every check.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_core::parent::OperatorState;
use std::path::Path;

/// What `-k` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// SIGUSR1: new children with the new configuration; old ones finish their requests.
    Graceful,
    /// SIGHUP: stop every child, start afresh with the new configuration.
    Restart,
    /// SIGWINCH: take no new connection, answer what is in hand and queued, exit.
    GracefulStop,
    /// SIGTERM: stop now.
    Stop,
    /// SIGUSR2: start the new binary on the same listening sockets; once it serves, the old one
    /// stops gracefully (if it cannot start, the old one serves on and logs why).
    Upgrade,
    /// Agent check: in the balancer's farm, weighted by free capacity (the default).
    Ready,
    /// Agent check: no new connections from the balancer; those held go on.
    Drain,
    /// Agent check: out of the balancer's farm (maintenance).
    Maint,
}

impl Action {
    fn signal(self) -> Option<Signal> {
        match self {
            Action::Graceful => Some(Signal::SIGUSR1),
            Action::Restart => Some(Signal::SIGHUP),
            Action::GracefulStop => Some(Signal::SIGWINCH),
            Action::Stop => Some(Signal::SIGTERM),
            Action::Upgrade => Some(Signal::SIGUSR2),
            Action::Ready | Action::Drain | Action::Maint => None,
        }
    }

    fn operator(self) -> Option<OperatorState> {
        match self {
            Action::Ready => Some(OperatorState::Ready),
            Action::Drain => Some(OperatorState::Drain),
            Action::Maint => Some(OperatorState::Maint),
            _ => None,
        }
    }
}

/// Carries out `action` for the server whose pid is in `pid_file`: its signal, or the operator's
/// word for the agent check; a message for the operator either way.
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
    if let Some(state) = action.operator() {
        let file = prefork_server::agent::write_operator_state(path, state)
            .map_err(|e| format!("cannot write the agent-check word next to {}: {e}", path.display()))?;
        return Ok(format!(
            "preforkd (pid {pid}) answers agent checks as {} from its next check on ({} holds the word; \
             only with agent_listen set does a balancer ask)",
            state.name(),
            file.display()
        ));
    }
    let signal = action.signal().expect("every other action is a signal");
    kill(pid, signal).map_err(|e| format!("cannot signal {pid}: {e}"))?;
    Ok(format!("sent {signal} to preforkd (pid {pid})"))
}
