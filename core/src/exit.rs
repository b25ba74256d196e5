//! Why children exit, with which exit code, and how the parent reads it back (SPEC.md §6.4, §7.3).

use crate::slot::SlotState;
use std::fmt;
use std::time::Duration;

/// Apache's exit codes (`include/httpd.h`).
pub mod code {
    /// `APEXIT_OK`: a normal, voluntary exit.
    pub const OK: i32 = 0x0;
    /// `APEXIT_INIT`: the parent failed to initialise.
    pub const INIT: i32 = 0x2;
    /// `APEXIT_CHILDINIT`: a child failed to initialise (recoverable).
    pub const CHILDINIT: i32 = 0x3;
    /// `APEXIT_CHILDSICK`: a child hit a resource problem; the parent forks slowly again.
    pub const CHILDSICK: i32 = 0x7;
    /// `APEXIT_CHILDFATAL`: a child hit a problem every child will hit (e.g. it cannot drop
    /// privileges); a current-generation child exiting with it stops the server.
    pub const CHILDFATAL: i32 = 0xf;
}

/// Why a child decided to exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// The parent claimed it for retirement (too many idle children).
    Retired,
    /// Graceful restart or stop: its slot was marked `Graceful`, or the running generation moved on.
    Graceful,
    /// It served `max_connections_per_child` connections.
    MaxConnections,
    /// Taking or releasing the accept lock failed.
    LockFailed,
    /// Waiting for connections (poll) failed.
    WaitFailed,
    /// accept() failed with an error that is not transient (EMFILE, ENFILE, ENOBUFS, ENETDOWN …).
    AcceptFailed,
    /// Its slot was corrupted or now belongs to another child.
    SlotLost,
    /// The driver reported an event the child loop does not expect in its state (a driver bug).
    ProtocolError,
    /// The child could not set itself up to serve (its readiness wait could not be created).
    SetupFailed,
}

impl ExitReason {
    /// Every reason, in [`ExitReason::as_u8`] order.
    pub const ALL: [ExitReason; 9] = [
        ExitReason::Retired,
        ExitReason::Graceful,
        ExitReason::MaxConnections,
        ExitReason::LockFailed,
        ExitReason::WaitFailed,
        ExitReason::AcceptFailed,
        ExitReason::SlotLost,
        ExitReason::ProtocolError,
        ExitReason::SetupFailed,
    ];

    /// A reason that is part of normal operation (retired, graceful, max_connections_per_child),
    /// not trouble: the child exits with `OK` and nothing is worth a warning.
    pub const fn is_voluntary(self) -> bool {
        matches!(self, ExitReason::Retired | ExitReason::Graceful | ExitReason::MaxConnections)
    }

    /// The exit code the child exits with: `OK` for the voluntary reasons, `CHILDSICK` for trouble.
    pub const fn exit_code(self) -> i32 {
        if self.is_voluntary() { code::OK } else { code::CHILDSICK }
    }

    /// A byte for the child to leave in its shared slot record before exiting (1-based; 0 = none).
    pub const fn as_u8(self) -> u8 {
        self as u8 + 1
    }

    /// Inverse of [`ExitReason::as_u8`].
    pub fn from_u8(b: u8) -> Option<ExitReason> {
        ExitReason::ALL.get(usize::from(b).checked_sub(1)?).copied()
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::Retired => "retired (too many idle children)",
            ExitReason::Graceful => "graceful restart or stop",
            ExitReason::MaxConnections => "max_connections_per_child reached",
            ExitReason::LockFailed => "accept lock failed",
            ExitReason::WaitFailed => "waiting for connections failed",
            ExitReason::AcceptFailed => "accept() failed",
            ExitReason::SlotLost => "scoreboard slot lost",
            ExitReason::ProtocolError => "child loop protocol error",
            ExitReason::SetupFailed => "set-up failed",
        })
    }
}

/// How a child ended, as waitpid() reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called exit() with this code.
    Code(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// A crash or error rather than a voluntary exit: a signal, or a non-zero code.
    pub fn is_abnormal(self) -> bool {
        self != ExitStatus::Code(code::OK)
    }
}

/// Why the parent's watchdog killed a live child (SPEC.md §7.8): it stopped making progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stall {
    /// It held the accept lock (one acquisition) this long without accepting, while connections
    /// waited on a listener (`accept_lock_timeout`).
    AcceptLock {
        /// How long the parent saw it hold the lock with connections waiting.
        held: Duration,
    },
    /// One request kept it busy this long (`request_deadline`).
    Request {
        /// How long the parent saw it busy with the same request.
        busy: Duration,
    },
}

impl Stall {
    /// A short name, for status pages and metrics: `accept_lock` or `request_deadline`.
    pub const fn name(self) -> &'static str {
        match self {
            Stall::AcceptLock { .. } => "accept_lock",
            Stall::Request { .. } => "request_deadline",
        }
    }

    /// A byte for the slot record (1-based; 0 = none), as [`ExitReason::as_u8`].
    pub const fn code(self) -> u8 {
        match self {
            Stall::AcceptLock { .. } => 1,
            Stall::Request { .. } => 2,
        }
    }
}

/// Why the parent killed a live child while the pool was running (not a stop or a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillReason {
    /// The watchdog: it stopped making progress (SPEC.md §7.8).
    Stalled(Stall),
    /// Its slot was found damaged again after the parent had repaired it and told it to leave
    /// (SPEC.md §7.6). The parent cannot tell which process wrote the slot: this child may be
    /// innocent, but a child that keeps a damaged slot cannot be trusted to see its directive.
    SlotDamaged,
}

impl KillReason {
    /// A short name, for status pages and metrics: `accept_lock`, `request_deadline` or
    /// `slot_damaged`.
    pub const fn name(self) -> &'static str {
        match self {
            KillReason::Stalled(s) => s.name(),
            KillReason::SlotDamaged => "slot_damaged",
        }
    }

    /// A byte for the slot record (1-based; 0 = none): [`Stall::code`], or 3.
    pub const fn code(self) -> u8 {
        match self {
            KillReason::Stalled(s) => s.code(),
            KillReason::SlotDamaged => 3,
        }
    }

    /// The name of the kill a [`KillReason::code`] stands for (`None` for any other byte: the
    /// field lives in shared memory).
    pub fn name_of_code(code: u8) -> Option<&'static str> {
        match code {
            1 => Some("accept_lock"),
            2 => Some("request_deadline"),
            3 => Some("slot_damaged"),
            _ => None,
        }
    }
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillReason::Stalled(stall) => write!(f, "by the watchdog: it {stall}"),
            KillReason::SlotDamaged => {
                f.write_str("by the parent: its scoreboard slot was damaged again after a repair")
            }
        }
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::AcceptLock { held } => write!(
                f,
                "held the accept lock {}.{:03}s without accepting while connections waited (accept_lock_timeout)",
                held.as_secs(),
                held.subsec_millis()
            ),
            Stall::Request { busy } => write!(
                f,
                "busy with one request for {}.{:03}s (request_deadline)",
                busy.as_secs(),
                busy.subsec_millis()
            ),
        }
    }
}

/// The parent's reading of a child's exit, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitCause {
    /// A voluntary exit with the reason the child reported (or read from its last slot state).
    Voluntary(Option<ExitReason>),
    /// Exit code `CHILDSICK`, with the child's reason if it reported one.
    Sick(Option<ExitReason>),
    /// Exit code `CHILDFATAL`.
    Fatal,
    /// Another exit code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Killed by the parent (SIGKILL) while the pool was running: the watchdog, or a slot that
    /// stayed damaged.
    Killed(KillReason),
}

impl ExitCause {
    /// Classifies an exit from the waitpid() status, the directive the parent had given the child
    /// (`IdleKill`: retired, `Graceful`), and the reason the child left in its slot record (if the
    /// driver keeps one; it labels the exit, nothing more: a child can write anything there).
    pub fn classify(status: ExitStatus, directive: Option<SlotState>, reported: Option<ExitReason>) -> ExitCause {
        match status {
            ExitStatus::Signaled(sig) => ExitCause::Signal(sig),
            ExitStatus::Code(code::OK) => ExitCause::Voluntary(reported.or(match directive {
                Some(SlotState::IdleKill) => Some(ExitReason::Retired),
                Some(SlotState::Graceful) => Some(ExitReason::Graceful),
                _ => None,
            })),
            ExitStatus::Code(code::CHILDSICK) => ExitCause::Sick(reported),
            ExitStatus::Code(code::CHILDFATAL) => ExitCause::Fatal,
            ExitStatus::Code(c) => ExitCause::Code(c),
        }
    }
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Voluntary(Some(r)) => write!(f, "exited: {r}"),
            ExitCause::Voluntary(None) => f.write_str("exited normally"),
            ExitCause::Sick(Some(r)) => write!(f, "exited sick (code 7): {r}"),
            ExitCause::Sick(None) => f.write_str("exited sick (code 7)"),
            ExitCause::Fatal => f.write_str("exited with a fatal error (code 15)"),
            ExitCause::Code(c) => write!(f, "exited with code {c}"),
            ExitCause::Signal(s) => write!(f, "killed by signal {s}"),
            ExitCause::Killed(why) => write!(f, "killed {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_reasons_round_trip_through_their_byte_and_name() {
        let stalls = [Stall::AcceptLock { held: Duration::ZERO }, Stall::Request { busy: Duration::ZERO }];
        let reasons = [KillReason::Stalled(stalls[0]), KillReason::Stalled(stalls[1]), KillReason::SlotDamaged];
        let named: Vec<(u8, &str)> = reasons.iter().map(|r| (r.code(), r.name())).collect();
        assert_eq!(named, [(1, "accept_lock"), (2, "request_deadline"), (3, "slot_damaged")]);
        for r in reasons {
            assert_eq!(KillReason::name_of_code(r.code()), Some(r.name()));
        }
        assert_eq!(KillReason::name_of_code(0), None);
        assert_eq!(KillReason::name_of_code(4), None, "any other byte is none");
    }

    #[test]
    fn reasons_round_trip_through_a_byte_and_map_to_apache_codes() {
        for r in ExitReason::ALL {
            assert_eq!(ExitReason::from_u8(r.as_u8()), Some(r));
        }
        assert_eq!(ExitReason::from_u8(0), None);
        assert_eq!(ExitReason::from_u8(200), None);
        assert_eq!(ExitReason::MaxConnections.exit_code(), 0);
        assert_eq!(ExitReason::LockFailed.exit_code(), code::CHILDSICK);
    }

    #[test]
    fn classification_uses_status_then_report_then_last_state() {
        use ExitStatus::*;
        assert_eq!(ExitCause::classify(Signaled(9), Some(SlotState::Ready), None), ExitCause::Signal(9));
        assert_eq!(
            ExitCause::classify(Code(0), Some(SlotState::IdleKill), None),
            ExitCause::Voluntary(Some(ExitReason::Retired))
        );
        assert_eq!(
            ExitCause::classify(Code(0), Some(SlotState::Graceful), Some(ExitReason::MaxConnections)),
            ExitCause::Voluntary(Some(ExitReason::MaxConnections))
        );
        assert_eq!(ExitCause::classify(Code(0), Some(SlotState::Closing), None), ExitCause::Voluntary(None));
        assert_eq!(ExitCause::classify(Code(15), None, None), ExitCause::Fatal);
        assert_eq!(ExitCause::classify(Code(3), None, None), ExitCause::Code(3));
        assert_eq!(
            ExitCause::classify(Code(7), None, Some(ExitReason::AcceptFailed)).to_string(),
            "exited sick (code 7): accept() failed"
        );
        assert!(Code(1).is_abnormal() && Signaled(11).is_abnormal() && !Code(0).is_abnormal());
    }
}
