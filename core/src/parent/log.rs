//! What the parent reports (`ParentAction::Log`): Apache's messages and codes, and their levels.

use super::{KillSignal, Phase, Pid, SlotProblem};
use crate::config::ConfigWarning;
use crate::exit::{ExitCause, ExitStatus, Stall};
use crate::policy::PolicyLog;
use crate::slot::SlotState;
use crate::time::Time;
use std::collections::BTreeMap;
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
    /// A child's slot was found damaged again after the parent had repaired it and told the child
    /// to leave: the parent kills it (SIGKILL, by the pid in its own table).
    SlotDamagedAgain {
        /// The child.
        pid: Pid,
        /// Its slot.
        slot: usize,
        /// What was wrong this time.
        problem: SlotProblem,
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
    /// An upgrade started its successor (SPEC.md §7.11).
    UpgradeStarted {
        /// The successor.
        pid: Pid,
    },
    /// The successor serves: this parent hands over and stops gracefully.
    UpgradeReady {
        /// The successor.
        pid: Pid,
    },
    /// An upgrade failed; this parent serves on as before.
    UpgradeFailed {
        /// The successor, if one was started.
        pid: Option<Pid>,
        /// What went wrong.
        why: String,
    },
    /// An upgrade asked for while one is under way, or while the server is not running.
    UpgradeIgnored {
        /// The successor already starting.
        pending: Option<Pid>,
        /// The phase.
        phase: Phase,
    },
    /// A gate started (SPEC.md §15.5).
    GateStarted {
        /// The gate.
        pid: Pid,
    },
    /// A gate could not be started; the parent tries again after [`super::GATE_RESTART_DELAY`].
    GateFailed {
        /// The gate, if one was started.
        pid: Option<Pid>,
        /// What went wrong.
        why: String,
    },
    /// A gate exited.
    GateExited {
        /// The gate.
        pid: Pid,
        /// How.
        status: ExitStatus,
        /// It was the running gate, and another one replaces it (it was not told to stop).
        replaced: bool,
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
    /// Lines of one kind that [`RepeatFilter`] held back: more than [`REPEAT_BURST`] came within
    /// [`REPEAT_WINDOW`].
    Repeated {
        /// The kind ([`ParentLog::kind`]).
        kind: &'static str,
        /// How many were not written.
        held: u32,
        /// Over how long (from the first line of the window to the summary).
        over: Duration,
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
            | ParentLog::SlotDamagedAgain { .. }
            | ParentLog::UpgradeFailed { .. }
            | ParentLog::GateFailed { .. }
            | ParentLog::GateExited { replaced: true, .. }
            | ParentLog::StillRunning { sending: KillSignal::Kill, .. } => Level::Error,
            ParentLog::StillRunning { .. }
            | ParentLog::LongLostChild { .. }
            | ParentLog::GracefulStopTimedOut { .. }
            | ParentLog::CommandIgnored { .. }
            | ParentLog::UpgradeIgnored { .. }
            | ParentLog::Repeated { .. }
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

impl ParentLog {
    /// The kind of a line that can repeat without anyone asking for it (children that exit,
    /// crash or are killed, repairs, fork failures, the policy's AH00162): [`RepeatFilter`] bounds
    /// each kind. `None` for lines that follow an operator's command or happen once (starts,
    /// restarts, stops and their ladder, configuration).
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            ParentLog::Policy(PolicyLog::SeemsBusy { .. }) => "server seems busy (AH00162)",
            ParentLog::ChildExited { cause, .. } => match cause {
                ExitCause::Voluntary(_) => "child exited",
                ExitCause::Sick(_) => "child exited sick",
                ExitCause::Fatal => return None,
                ExitCause::Code(_) => "child exited with an error code",
                ExitCause::Signal(sig) if expected_signal(*sig) => "child killed by a signal",
                ExitCause::Signal(_) => "child crashed (AH00052)",
                ExitCause::Killed(crate::exit::KillReason::Stalled(_)) => "child killed by the watchdog",
                ExitCause::Killed(crate::exit::KillReason::SlotDamaged) => "child killed for a damaged slot",
            },
            ParentLog::LongLostChild { .. } => "long lost child (AH00167)",
            ParentLog::Stalled { .. } => "stalled child",
            ParentLog::ForkFailed { .. } => "fork failed (AH00159)",
            ParentLog::CrashLoop { .. } => "crash loop",
            ParentLog::SlotRepaired { .. } => "scoreboard slot repaired",
            ParentLog::SlotDamagedAgain { .. } => "scoreboard slot damaged again",
            ParentLog::CommandIgnored { .. } => "command ignored",
            ParentLog::GateExited { replaced: true, .. } => "gate exited",
            ParentLog::GateFailed { .. } => "gate failed",
            _ => return None,
        })
    }
}

/// An exit status in words.
fn status_text(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("code {c}"),
        ExitStatus::Signaled(sig) => format!("signal {sig}"),
    }
}

/// Lines of one kind written per [`REPEAT_WINDOW`] before the rest are only counted.
pub const REPEAT_BURST: u32 = 10;
/// The window [`REPEAT_BURST`] counts in.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// One kind's window: since when, how many lines were written and how many held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Window {
    since: Time,
    written: u32,
    held: u32,
}

impl Window {
    /// Has the window ended at `now`?
    fn ended(&self, now: Time) -> bool {
        now.since(self.since) >= REPEAT_WINDOW
    }

    /// The line that says how many lines of `kind` were held back, if any were.
    fn summary(&self, kind: &'static str, now: Time) -> Option<ParentLog> {
        (self.held > 0).then(|| ParentLog::Repeated { kind, held: self.held, over: now.since(self.since) })
    }
}

/// Bounds repeated log lines, so a tight failure loop (children that die at once, a board that
/// is scribbled on, forks that fail) cannot fill a disk (SPEC.md §7.9). Of each
/// [`ParentLog::kind`], the first [`REPEAT_BURST`] lines of a [`REPEAT_WINDOW`] are written; the
/// rest are counted, and one [`ParentLog::Repeated`] line says how many when the window ends (at
/// the next line of that kind, or at [`RepeatFilter::flush`]). Lines of no kind always pass.
/// Pure: the driver passes the time, and writes what comes out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RepeatFilter {
    windows: BTreeMap<&'static str, Window>,
}

impl RepeatFilter {
    /// The lines to write for `line` at `now`, in order: the summary of this kind's window if it
    /// just ended with lines held back, then `line` unless it is held back.
    pub fn admit(&mut self, now: Time, line: ParentLog) -> Vec<ParentLog> {
        let Some(kind) = line.kind() else { return vec![line] };
        let mut out = Vec::new();
        let window = self.windows.entry(kind).or_insert(Window { since: now, written: 0, held: 0 });
        if window.ended(now) {
            out.extend(window.summary(kind, now));
            *window = Window { since: now, written: 0, held: 0 };
        }
        if window.written < REPEAT_BURST {
            window.written += 1;
            out.push(line);
        } else {
            window.held = window.held.saturating_add(1);
        }
        out
    }

    /// The summaries of every window that has ended at `now` with lines held back (call it at
    /// every timeout, so a flood that stopped is still summed up).
    pub fn flush(&mut self, now: Time) -> Vec<ParentLog> {
        let mut out = Vec::new();
        self.windows.retain(|&kind, w| {
            if !w.ended(now) {
                return true;
            }
            out.extend(w.summary(kind, now));
            false
        });
        out
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
                write!(f, "scoreboard slot {slot} was inconsistent ({problem}); rewrote it as {wrote}")
            }
            ParentLog::SlotDamagedAgain { pid, slot, problem } => write!(
                f,
                "scoreboard slot {slot} of child {pid} was damaged again after its repair ({problem}); killing the child (SIGKILL)"
            ),
            ParentLog::CommandIgnored { command, phase } => {
                write!(f, "{command} ignored: the server is in phase {phase:?}")
            }
            ParentLog::UpgradeStarted { pid } => {
                write!(
                    f,
                    "upgrade: started the new server (pid {pid}) on the listening sockets; serving on until it is ready"
                )
            }
            ParentLog::UpgradeReady { pid } => {
                write!(f, "upgrade: the new server (pid {pid}) is ready; this one hands over and stops gracefully")
            }
            ParentLog::UpgradeFailed { pid: Some(pid), why } => {
                write!(f, "upgrade failed: {why} (pid {pid}); still serving with this binary")
            }
            ParentLog::UpgradeFailed { pid: None, why } => {
                write!(f, "upgrade failed: cannot start the new server: {why}; still serving with this binary")
            }
            ParentLog::UpgradeIgnored { pending: Some(pid), .. } => {
                write!(f, "upgrade ignored: the new server (pid {pid}) is still starting")
            }
            ParentLog::UpgradeIgnored { pending: None, phase } => {
                write!(f, "upgrade ignored: the server is in phase {phase:?}")
            }
            ParentLog::GateStarted { pid } => {
                write!(f, "gate started (pid {pid}): it holds connections until their request heads are complete")
            }
            ParentLog::GateFailed { pid: _, why } => {
                write!(f, "cannot start the gate: {why}; trying again in {}s", super::GATE_RESTART_DELAY.as_secs())
            }
            ParentLog::GateExited { pid, status, replaced: true } => write!(
                f,
                "the gate (pid {pid}) exited ({}) without being told to; the connections it held are lost; starting another",
                status_text(status)
            ),
            ParentLog::GateExited { pid, status, replaced: false } => {
                write!(f, "gate (pid {pid}) exited ({})", status_text(status))
            }
            ParentLog::ConfigAdjusted(w) => write!(f, "restart configuration: {}: {}", w.key, w.message),
            ParentLog::Repeated { kind, held, over } => write!(
                f,
                "{held} more \"{kind}\" lines in the last {}s were not written (at most {REPEAT_BURST} per {}s)",
                over.as_secs(),
                REPEAT_WINDOW.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gate that keeps dying or cannot start is a failure loop like a child's: its lines are
    /// bounded (SPEC.md §7.9); a gate told to leave exits once and is not.
    #[test]
    fn gate_failures_are_bounded_kinds_and_say_how_the_gate_ended() {
        let died = ParentLog::GateExited { pid: 7, status: ExitStatus::Signaled(9), replaced: true };
        let told = ParentLog::GateExited { pid: 7, status: ExitStatus::Code(0), replaced: false };
        let failed = ParentLog::GateFailed { pid: None, why: "no".into() };
        assert_eq!((died.kind(), failed.kind(), told.kind()), (Some("gate exited"), Some("gate failed"), None));
        assert!(died.to_string().contains("(signal 9)"), "{died}");
        assert!(told.to_string().contains("(code 0)"), "{told}");
    }

    fn exited(pid: Pid) -> ParentLog {
        ParentLog::ChildExited { pid, slot: 0, generation: 0, cause: ExitCause::Sick(None) }
    }

    #[test]
    fn a_burst_passes_the_rest_is_summed_up_once_per_window() {
        let mut f = RepeatFilter::default();
        let t0 = Time::from_secs(100);
        let mut written = 0;
        for pid in 0..1000 {
            written += f.admit(t0 + Duration::from_millis(u64::from(pid)), exited(pid)).len();
        }
        assert_eq!(written, REPEAT_BURST as usize, "1000 lines in one second: the burst only");
        // Lines of no kind always pass, and other kinds have windows of their own.
        assert_eq!(f.admit(t0, ParentLog::Stopping), [ParentLog::Stopping]);
        assert_eq!(f.admit(t0, ParentLog::CrashLoop { early_exits: 3, paused_for: Duration::from_secs(1) }).len(), 1);
        assert!(f.flush(t0 + Duration::from_secs(9)).is_empty(), "the window is still open");
        let later = t0 + REPEAT_WINDOW;
        assert_eq!(
            f.admit(later, exited(5000)),
            [
                ParentLog::Repeated { kind: "child exited sick", held: 1000 - REPEAT_BURST, over: REPEAT_WINDOW },
                exited(5000)
            ],
            "the summary comes first, then the next window begins"
        );
        assert!(f.flush(later + REPEAT_WINDOW).is_empty(), "nothing held back in the second window");
        for pid in 0..20 {
            f.admit(later + REPEAT_WINDOW, exited(pid));
        }
        let summary = f.flush(later + REPEAT_WINDOW * 2);
        assert_eq!(summary, [ParentLog::Repeated { kind: "child exited sick", held: 10, over: REPEAT_WINDOW }]);
        assert_eq!(
            summary[0].to_string(),
            "10 more \"child exited sick\" lines in the last 10s were not written (at most 10 per 10s)"
        );
    }

    /// Every line that can repeat by itself has a kind of its own: child exits by cause, and each
    /// kind of trouble.
    #[test]
    fn lines_that_repeat_by_themselves_have_kinds() {
        use crate::exit::{KillReason, Stall};
        let exit = |cause| ParentLog::ChildExited { pid: 1, slot: 0, generation: 0, cause };
        let stall = Stall::AcceptLock { held: Duration::ZERO };
        let kinds = [
            ParentLog::Policy(PolicyLog::SeemsBusy { spawning: 8, idle: 0, total: 1 }),
            exit(ExitCause::Voluntary(None)),
            exit(ExitCause::Sick(None)),
            exit(ExitCause::Code(3)),
            exit(ExitCause::Signal(15)),
            exit(ExitCause::Signal(11)),
            exit(ExitCause::Killed(KillReason::Stalled(stall))),
            exit(ExitCause::Killed(KillReason::SlotDamaged)),
            ParentLog::LongLostChild { pid: 1, status: ExitStatus::Code(0) },
            ParentLog::Stalled { pid: 1, slot: 0, stall },
            ParentLog::ForkFailed { slot: 0, error: String::new(), retry_in: Duration::ZERO },
            ParentLog::CrashLoop { early_exits: 3, paused_for: Duration::ZERO },
            ParentLog::SlotRepaired {
                slot: 0,
                problem: SlotProblem::NoChild(SlotState::Ready),
                wrote: SlotState::Dead,
            },
            ParentLog::SlotDamagedAgain { pid: 1, slot: 0, problem: SlotProblem::NoChild(SlotState::Ready) },
            ParentLog::CommandIgnored { command: "stop", phase: Phase::Stopping },
        ]
        .map(|l| l.kind().unwrap_or_else(|| panic!("{l:?} has no kind")));
        let distinct: std::collections::BTreeSet<&str> = kinds.iter().copied().collect();
        assert_eq!(distinct.len(), kinds.len(), "one kind each: {kinds:?}");
        assert_eq!(exit(ExitCause::Fatal).kind(), None, "a fatal exit stops the server: once");
        let repeated = ParentLog::Repeated { kind: "x", held: 1, over: Duration::ZERO };
        assert_eq!((repeated.level(), repeated.kind()), (Level::Warn, None));
        let again = ParentLog::SlotDamagedAgain { pid: 1, slot: 0, problem: SlotProblem::NoChild(SlotState::Ready) };
        assert_eq!(again.level(), Level::Error);
    }

    #[test]
    fn lines_that_follow_a_command_or_happen_once_are_never_held_back() {
        for line in [
            ParentLog::Resumed { generation: 1 },
            ParentLog::GracefulRestart { generation: 1 },
            ParentLog::Stopping,
            ParentLog::ChildFatal { pid: 1, slot: 0 },
            ParentLog::Policy(PolicyLog::ReachedMaxRequestWorkers),
            ParentLog::StillRunning { pid: 1, slot: 0, sending: KillSignal::Term },
        ] {
            assert_eq!(line.kind(), None, "{line}");
        }
    }
}
