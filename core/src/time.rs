//! Time as the core sees it: a monotonic millisecond count passed in by the driver.
//!
//! The core never reads a clock (SPEC.md §1). The driver picks an origin (usually the moment the
//! parent started), converts its monotonic clock to [`Time`] and passes it to every `handle_*` call.
//! Models pass whatever time they like, which makes every run reproducible.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

/// A point in time, in milliseconds since an origin chosen by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The driver's origin.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// A time `s` seconds after the origin.
    pub const fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1000))
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`; zero if `earlier` is in the future.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(millis(d)))
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Time::from_millis(u64::MAX - 1);
        assert_eq!((t + Duration::from_secs(5)).as_millis(), u64::MAX);
        assert_eq!(Time::ZERO.since(Time::from_secs(3)), Duration::ZERO);
        assert_eq!(Time::from_secs(3).since(Time::from_millis(500)), Duration::from_millis(2500));
        assert_eq!(Time::from_millis(1500).to_string(), "1.500s");
    }
}
