//! What the parent tells the world (SPEC.md §7.1): its lifecycle as events, in order, and the
//! order a listener may rely on (invariant I31), as a checker every driver's tests can hold the
//! stream to.

use super::Phase;
use crate::config::PoolConfig;

/// What happened, for the world to hear (a service manager, status pages, the models), in the
/// order it happened (SPEC.md §7.1). The lifecycle:
///
/// ```text
///   Ready ──> Reloading ──> Ready ──> Reloading ──> …    graceful restart: Ready at once;
///     │           │                                      hard restart: Ready once every old
///     │           │                                      child is reaped (or given up)
///     └───────────┴──> Stopping ──> (the Exit action)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParentEvent {
    /// The pool serves with generation `generation`'s configuration: after the start, when a
    /// graceful restart is in force, when a hard restart has started its new pool.
    Ready {
        /// The running generation.
        generation: u32,
        /// The configuration in force (as the parent applied it: `server_limit` stays the
        /// running one, SPEC.md §7.4).
        config: Box<PoolConfig>,
    },
    /// A restart was accepted: `generation` is the new one. `Ready` follows.
    Reloading {
        /// The new generation.
        generation: u32,
        /// SIGUSR1 (old children finish their work) rather than SIGHUP (they are stopped).
        graceful: bool,
    },
    /// A stop began (an operator's, or a fatal child's). Nothing but the `Exit` action follows.
    Stopping {
        /// SIGWINCH: the children finish their work first.
        graceful: bool,
    },
}

/// Where the event stream says the parent is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Heard {
    /// Nothing yet.
    #[default]
    Nothing,
    /// `Ready` for this generation, and nothing after it.
    Serving(u32),
    /// `Reloading` into this generation, no `Ready` yet.
    Reloading(u32),
    /// `Stopping`.
    Stopped,
}

/// An event stream that broke I31, or one that disagrees with the parent's phase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lifecycle events out of order: {0}")]
pub struct LifecycleError(pub String);

/// Checks the order of a parent's lifecycle events (I31): `Ready`, then any number of
/// `Reloading` (into the next generation) each followed by `Ready` (for that generation), and at
/// most one `Stopping`, after which nothing; and, after each input, that the stream agrees with
/// the parent: it has said `Ready` (and not `Reloading` or `Stopping` since) exactly when the pool
/// runs, `Reloading` exactly while a hard restart reclaims, `Stopping` exactly while it stops or
/// once it has stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LifecycleOrder {
    heard: Heard,
}

impl LifecycleOrder {
    /// Hears the next event.
    pub fn hear(&mut self, event: &ParentEvent) -> Result<(), LifecycleError> {
        let next = match (self.heard, event) {
            (Heard::Nothing, ParentEvent::Ready { generation, .. }) => Heard::Serving(*generation),
            (Heard::Serving(g), ParentEvent::Reloading { generation, .. }) if *generation == g.wrapping_add(1) => {
                Heard::Reloading(*generation)
            }
            (Heard::Reloading(g), ParentEvent::Ready { generation, .. }) if *generation == g => Heard::Serving(g),
            (Heard::Nothing | Heard::Serving(_) | Heard::Reloading(_), ParentEvent::Stopping { .. }) => Heard::Stopped,
            (heard, event) => return Err(LifecycleError(format!("{event:?} after {heard:?}"))),
        };
        self.heard = next;
        Ok(())
    }

    /// The generation the last `Ready` or `Reloading` named (`None`: nothing heard, or stopped).
    pub fn generation(&self) -> Option<u32> {
        match self.heard {
            Heard::Serving(g) | Heard::Reloading(g) => Some(g),
            Heard::Nothing | Heard::Stopped => None,
        }
    }

    /// Was `Reloading` the last thing heard (a hard restart reclaims, by the events)?
    pub fn reloading(&self) -> bool {
        matches!(self.heard, Heard::Reloading(_))
    }

    /// Was `Ready` the last thing heard (the pool runs, by the events)?
    pub fn serving(&self) -> bool {
        matches!(self.heard, Heard::Serving(_))
    }

    /// Does what was heard agree with the parent's `phase` (after an input)?
    pub fn agrees_with(&self, phase: Phase) -> Result<(), LifecycleError> {
        let agrees = match self.heard {
            Heard::Nothing => phase == Phase::New,
            Heard::Serving(_) => phase == Phase::Running,
            Heard::Reloading(_) => phase == Phase::Restarting,
            Heard::Stopped => matches!(phase, Phase::Draining | Phase::Stopping | Phase::Exited),
        };
        if agrees {
            Ok(())
        } else {
            Err(LifecycleError(format!("the parent is {phase:?}, the events said {:?}", self.heard)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(non_snake_case)]
    fn Ready(generation: u32) -> ParentEvent {
        ParentEvent::Ready { generation, config: Box::default() }
    }

    fn heard(events: &[ParentEvent]) -> Result<LifecycleOrder, LifecycleError> {
        let mut order = LifecycleOrder::default();
        for e in events {
            order.hear(e)?;
        }
        Ok(order)
    }

    #[test]
    fn the_order_a_listener_may_rely_on() {
        use ParentEvent::{Reloading, Stopping};
        let ok = heard(&[
            Ready(0),
            Reloading { generation: 1, graceful: true },
            Ready(1),
            Reloading { generation: 2, graceful: false },
            Stopping { graceful: false },
        ])
        .unwrap();
        assert_eq!(ok.agrees_with(Phase::Stopping), Ok(()));
        assert!(ok.agrees_with(Phase::Running).is_err());
        for bad in [
            &[Ready(0), Ready(0)][..],
            &[Reloading { generation: 1, graceful: true }],
            &[Ready(0), Reloading { generation: 2, graceful: true }],
            &[Ready(0), Reloading { generation: 1, graceful: false }, Ready(2)],
            &[Ready(0), Stopping { graceful: true }, Ready(0)],
            &[Ready(0), Stopping { graceful: true }, Stopping { graceful: false }],
        ] {
            assert!(heard(bad).is_err(), "{bad:?}");
        }
        let reloading = heard(&[Ready(0), Reloading { generation: 1, graceful: false }]).unwrap();
        assert!(reloading.reloading() && !reloading.serving());
        assert_eq!(reloading.generation(), Some(1));
        let serving = heard(&[Ready(0)]).unwrap();
        assert!(serving.serving() && !serving.reloading());
        let stopped = heard(&[Ready(0), Stopping { graceful: true }]).unwrap();
        assert!(!stopped.serving() && !stopped.reloading());
        assert_eq!(stopped.generation(), None);
        assert!(!LifecycleOrder::default().serving() && !LifecycleOrder::default().reloading());
        assert_eq!(reloading.agrees_with(Phase::Restarting), Ok(()));
        assert!(reloading.agrees_with(Phase::Running).is_err(), "Ready is still owed");
        assert_eq!(LifecycleOrder::default().agrees_with(Phase::New), Ok(()));
        assert!(heard(&[Ready(0)]).unwrap().agrees_with(Phase::Restarting).is_err());
    }
}
