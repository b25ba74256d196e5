//! The accept mutex (`accept_mutex`; Apache's `Mutex <mechanism> mpm-accept`): which cross-process
//! lock serialises wait+accept, and when one is used at all (SPEC.md §1.3, §8).

use super::ConfigError;
use std::fmt;
use std::str::FromStr;

/// A cross-process lock mechanism the accept mutex can use. Every one of them is released by the
/// kernel when its holder dies (SPEC.md §1.3); `posixsem` is deliberately absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMechanism {
    /// POSIX record lock (`fcntl(F_SETLKW)`) on an unlinked file.
    Fcntl,
    /// BSD `flock` on a file each child re-opens.
    Flock,
    /// Process-shared robust pthread mutex in shared memory (`EOWNERDEAD` recovery).
    Pthread,
    /// SysV semaphore with `SEM_UNDO`.
    Sysvsem,
}

impl LockMechanism {
    /// Every mechanism, in the order they are documented. The one list: configuration words,
    /// errors, benchmarks and tests all derive from it.
    pub const ALL: [LockMechanism; 4] =
        [LockMechanism::Fcntl, LockMechanism::Flock, LockMechanism::Pthread, LockMechanism::Sysvsem];

    /// Its configuration word (Apache's name for it).
    pub const fn name(self) -> &'static str {
        match self {
            LockMechanism::Fcntl => "fcntl",
            LockMechanism::Flock => "flock",
            LockMechanism::Pthread => "pthread",
            LockMechanism::Sysvsem => "sysvsem",
        }
    }

    /// The mechanism named `word`, if any.
    pub fn from_name(word: &str) -> Option<LockMechanism> {
        LockMechanism::ALL.into_iter().find(|m| m.name() == word)
    }
}

impl fmt::Display for LockMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `accept_mutex` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AcceptMutex {
    /// No lock with one listener; with several, the server's default mechanism (Apache's
    /// `default`, also accepted as a word).
    #[default]
    Auto,
    /// This mechanism, whenever a lock is used (several listeners).
    Use(LockMechanism),
    /// Never lock, even with several listeners (rely on the kernel's wake-up behaviour).
    None,
}

/// The accepted `accept_mutex` values, for errors and help texts: `auto`, every
/// [`LockMechanism::name`], `none`.
pub fn accept_mutex_values() -> String {
    let mut words = vec!["auto"];
    words.extend(LockMechanism::ALL.map(LockMechanism::name));
    words.push("none");
    words.join(", ")
}

impl AcceptMutex {
    /// Is a lock taken around wait+accept with `listeners` listeners? As Apache on Linux
    /// (`SINGLE_LISTEN_UNSERIALIZED_ACCEPT`): never with a single listener, whatever the mechanism.
    pub fn lock_in_use(self, listeners: usize) -> bool {
        listeners > 1 && self != AcceptMutex::None
    }

    /// The mechanism to use with `listeners` listeners (`None`: no lock), `auto` resolving to the
    /// driver's `default`.
    pub fn mechanism(self, listeners: usize, default: LockMechanism) -> Option<LockMechanism> {
        if !self.lock_in_use(listeners) {
            return None;
        }
        match self {
            AcceptMutex::Auto => Some(default),
            AcceptMutex::Use(m) => Some(m),
            AcceptMutex::None => None,
        }
    }

    /// The configuration word for this setting.
    pub fn as_str(self) -> &'static str {
        match self {
            AcceptMutex::Auto => "auto",
            AcceptMutex::Use(m) => m.name(),
            AcceptMutex::None => "none",
        }
    }
}

impl FromStr for AcceptMutex {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::InvalidValue {
            key: "accept_mutex",
            given: s.to_string(),
            allowed: format!("{}{why}", accept_mutex_values()),
        };
        Ok(match s {
            "auto" | "default" => AcceptMutex::Auto,
            "none" => AcceptMutex::None,
            "posixsem" | "sem" => {
                return Err(invalid(
                    " (posixsem is not offered: a child that dies holding it hangs every other child)",
                ));
            }
            word => AcceptMutex::Use(LockMechanism::from_name(word).ok_or_else(|| invalid(""))?),
        })
    }
}

impl fmt::Display for AcceptMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
