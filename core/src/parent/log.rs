//! What the parent reports (`ParentAction::Log`): Apache's messages and codes, and their levels.

use super::{KillSignal, Phase, Pid, SlotProblem};
use crate::config::ConfigWarning;
use crate::exit::{ExitCause, ExitStatus, Stall};
use crate::policy::PolicyLog;
use crate::slot::SlotState;
use std::fmt;
use std::time::Duration;

/// Log severities, as Apache's levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something is wrong.
    Error,
    /// Something may be wrong.
    Warn,
    /// Normal but significant.
    Notice,
    /// Informational.
    Info,
}

/// Things the parent reports. [`ParentLog::apache_code`] gives Apache's code where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParentLog {
    /// AH00163: children started, serving.
    Resumed {
        /// The running generation.
        generation: u32,
    },
    /// A message of the spare-server policy (AH00161, AH00162).
    Policy(PolicyLog),
    /// A child was reaped.
    ChildExited {
        /// Its pid.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// Its generation.
        generation: u32,
        /// How it ended.
        cause: ExitCause,
    },
    /// AH00167: waitpid() reported a pid the parent does not know.
    LongLostChild {
        /// The pid.
        pid: Pid,
        /// Its status.
        status: ExitStatus,
    },
    /// AH00050: a current-generation child exited with CHILDFATAL: the server stops.
    ChildFatal {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
    },
    /// AH00166: an old-generation child exited with CHILDFATAL: ignored.
    IgnoringOldFatal {
        /// The child.
        pid: Pid,
    },
    /// AH00171: graceful restart.
    GracefulRestart {
        /// The new generation.
        generation: u32,
    },
    /// AH00173: hard restart.
    HardRestart {
        /// The new generation.
        generation: u32,
    },
    /// AH00169: stopping.
    Stopping,
    /// AH00170: graceful stop.
    GracefulStopping {
        /// graceful_shutdown_timeout, if any.
        timeout: Option<Duration>,
    },
    /// graceful_shutdown_timeout expired with children left: stopping them.
    GracefulStopTimedOut {
        /// Children still alive.
        remaining: usize,
    },
    /// AH00045 / AH00046: a child did not exit yet; sending it a signal.
    StillRunning {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// What is sent.
        sending: KillSignal,
    },
    /// AH00047: a child could not be made to exit; continuing anyway.
    GaveUp {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
    },
    /// The watchdog found a child that stopped making progress and kills it (SIGKILL).
    Stalled {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// What it did not do, for how long.
        stall: Stall,
    },
    /// AH00159: fork() failed.
    ForkFailed {
        /// The slot it was for.
        slot: usize,
        /// Why (the system's error).
        error: String,
        /// When spawning is tried again.
        retry_in: Duration,
    },
    /// Children keep dying right after start: spawning paused.
    CrashLoop {
        /// Consecutive early exits.
        early_exits: u32,
        /// How long spawning pauses.
        paused_for: Duration,
    },
    /// A slot did not match the parent's records and was rewritten.
    SlotRepaired {
        /// The slot.
        slot: usize,
        /// What was wrong.
        problem: SlotProblem,
        /// The state written.
        wrote: SlotState,
    },
    /// A command that does not apply in this phase.
    CommandIgnored {
        /// The command.
        command: &'static str,
        /// The phase.
        phase: Phase,
    },
    /// A restart's configuration had to be changed to apply (server_limit cannot change, AH00179;
    /// the limits that follow from it).
    ConfigAdjusted(ConfigWarning),
    /// A driver call that broke the driver contract (a bug in the driver; nothing was changed).
    DriverMisuse {
        /// What was wrong.
        what: String,
    },
}

impl ParentLog {
    /// Apache's log code for the same event, if it has one.
    pub fn apache_code(&self) -> Option<&'static str> {
        Some(match self {
            ParentLog::Resumed { .. } => "AH00163",
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers) => "AH00161",
            ParentLog::Policy(PolicyLog::SeemsBusy { .. }) => "AH00162",
            ParentLog::ChildExited { cause: ExitCause::Signal(sig), .. } if !expected_signal(*sig) => "AH00052",
            ParentLog::LongLostChild { .. } => "AH00167",
            ParentLog::ChildFatal { .. } => "AH00050",
            ParentLog::IgnoringOldFatal { .. } => "AH00166",
            ParentLog::GracefulRestart { .. } => "AH00171",
            ParentLog::HardRestart { .. } => "AH00173",
            ParentLog::Stopping => "AH00169",
            ParentLog::GracefulStopping { .. } => "AH00170",
            ParentLog::StillRunning { sending: KillSignal::Term, .. } => "AH00045",
            ParentLog::StillRunning { sending: KillSignal::Kill, .. } => "AH00046",
            ParentLog::GaveUp { .. } => "AH00047",
            ParentLog::ForkFailed { .. } => "AH00159",
            ParentLog::ConfigAdjusted(w) => return w.apache_code,
            _ => return None,
        })
    }

    /// The severity.
    pub fn level(&self) -> Level {
        match self {
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers)
            | ParentLog::ChildFatal { .. }
            | ParentLog::GaveUp { .. }
            | ParentLog::ForkFailed { .. }
            | ParentLog::Stalled { .. }
            | ParentLog::CrashLoop { .. }
            | ParentLog::SlotRepaired { .. }
            | ParentLog::DriverMisuse { .. }
            | ParentLog::StillRunning { sending: KillSignal::Kill, .. } => Level::Error,
            ParentLog::StillRunning { .. }
            | ParentLog::LongLostChild { .. }
            | ParentLog::GracefulStopTimedOut { .. }
            | ParentLog::CommandIgnored { .. }
            | ParentLog::ConfigAdjusted(_) => Level::Warn,
            ParentLog::ChildExited { cause, .. } => match cause {
                ExitCause::Voluntary(_) => Level::Info,
                ExitCause::Signal(sig) if expected_signal(*sig) => Level::Info,
                _ => Level::Warn,
            },
            ParentLog::Policy(PolicyLog::SeemsBusy { .. }) => Level::Info,
            _ => Level::Notice,
        }
    }
}

/// Signals a child normally dies of (SIGHUP 1, SIGKILL 9, SIGUSR1 10, SIGTERM 15, as Apache's
/// AH00051/AH00052 exclusions): not worth a warning. Any other signal is a crash.
pub(crate) fn expected_signal(sig: i32) -> bool {
    matches!(sig, 1 | 9 | 10 | 15)
}

impl fmt::Display for ParentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParentLog::Resumed { generation } => {
                write!(f, "configured -- resuming normal operations (generation {generation})")
            }
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers) => f.write_str(
                "server reached MaxRequestWorkers setting, consider raising the max_request_workers setting",
            ),
            ParentLog::Policy(PolicyLog::SeemsBusy { spawning, idle, total }) => write!(
                f,
                "server seems busy, (you may need to increase start_servers, or min/max_spare_servers), spawning {spawning} children, there are {idle} idle, and {total} total children"
            ),
            ParentLog::ChildExited { pid, slot, generation, cause } => {
                write!(f, "child {pid} (slot {slot}, generation {generation}) {cause}")
            }
            ParentLog::LongLostChild { pid, status } => write!(f, "long lost child came home! (pid {pid}, {status:?})"),
            ParentLog::ChildFatal { pid, slot } => write!(
                f,
                "child {pid} (slot {slot}) returned a fatal error; every child would fail the same way: shutting down"
            ),
            ParentLog::IgnoringOldFatal { pid } => {
                write!(f, "ignoring fatal error in child {pid} of a previous generation")
            }
            ParentLog::GracefulRestart { generation } => {
                write!(f, "graceful restart requested, doing restart (generation {generation})")
            }
            ParentLog::HardRestart { generation } => {
                write!(f, "restart requested: stopping children, then restarting (generation {generation})")
            }
            ParentLog::Stopping => f.write_str("stop requested, shutting down"),
            ParentLog::GracefulStopping { timeout: Some(t) } => {
                write!(f, "graceful stop requested, shutting down gracefully (children have {}s)", t.as_secs())
            }
            ParentLog::GracefulStopping { timeout: None } => {
                f.write_str("graceful stop requested, shutting down gracefully (waiting for every child)")
            }
            ParentLog::GracefulStopTimedOut { remaining } => {
                write!(f, "graceful_shutdown_timeout expired with {remaining} children left: stopping them")
            }
            ParentLog::StillRunning { pid, slot, sending } => {
                write!(f, "child process {pid} (slot {slot}) still did not exit, sending a {sending:?}")
            }
            ParentLog::GaveUp { pid, slot } => {
                write!(f, "could not make child process {pid} (slot {slot}) exit, attempting to continue anyway")
            }
            ParentLog::Stalled { pid, slot, stall } => {
                write!(f, "child {pid} (slot {slot}) {stall}: killing it (SIGKILL)")
            }
            ParentLog::ForkFailed { slot, error, retry_in } => {
                write!(f, "fork: unable to fork a child for slot {slot}: {error}; retrying in {}s", retry_in.as_secs())
            }
            ParentLog::CrashLoop { early_exits, paused_for } => write!(
                f,
                "{early_exits} children in a row died right after start; pausing spawns for {}s (check the error log of the children)",
                paused_for.as_secs()
            ),
            ParentLog::SlotRepaired { slot, problem, wrote } => {
                write!(f, "scoreboard slot {slot} was inconsistent ({problem:?}); rewrote it as {wrote}")
            }
            ParentLog::CommandIgnored { command, phase } => {
                write!(f, "{command} ignored: the server is in phase {phase:?}")
            }
            ParentLog::ConfigAdjusted(w) => write!(f, "restart configuration: {}: {}", w.key, w.message),
            ParentLog::DriverMisuse { what } => write!(f, "driver contract broken: {what}"),
        }
    }
}
