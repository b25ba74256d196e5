//! The gate under random traffic (proptest, SPEC.md §15.3): connections arrive, trickle bytes,
//! complete their heads, go quiet, are given back by children, leave; time passes; the listen
//! queues fill; the server stops. An observer that knows only what the shell told the gate checks
//! every action it asks for:
//! * G1 a complete head is never closed; it is handed over;
//! * G2 a connection is shed only when the table is full and connections wait (a pressure report);
//! * G3 a shed connection was not protected (first second; a head at `request_read_min_rate`), and
//!   no idle connection that could go was passed over for a head;
//! * G4 the shell is never told to accept while the table is full.
//!
//! The negative tests seed the bug each property must catch.

use prefork_core::gate::{CloseReason, Gate, GateAction, GateConfig, GateStop, HeadProgress, SHED_GRACE};
use prefork_core::seeded::SeededBug;
use prefork_core::time::Time;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the world does next.
#[derive(Clone, Debug)]
enum Op {
    /// Time passes (ms), and the gate's deadlines are run.
    Wait(u64),
    /// A connection arrives (accepted if the gate accepts).
    Arrive,
    /// The n-th held connection sends `bytes`; `complete`: its head is then complete.
    Send(usize, u64, bool),
    /// The n-th held connection's peer leaves.
    Leave(usize),
    /// A child gives back a kept-alive connection, with `bytes` of a next head.
    GiveBack(u64, bool),
    /// Connections wait in the listen queues.
    Pressure,
    /// The hand-off channel fills up (children are all busy).
    ChannelFull,
    /// The hand-off channel has room again.
    ChannelReady,
    /// The gate is told to stop.
    Stop(GateStop),
    /// In a graceful stop, the listen queues are found empty.
    ListenersEmpty,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u64..1500).prop_map(Op::Wait),
        16 => Just(Op::Arrive),
        16 => (any::<usize>(), 0u64..2000, prop::bool::weighted(0.3)).prop_map(|(i, b, c)| Op::Send(i, b, c)),
        4 => any::<usize>().prop_map(Op::Leave),
        4 => (prop_oneof![Just(0u64), 1u64..100], any::<bool>()).prop_map(|(b, c)| Op::GiveBack(b, c)),
        16 => Just(Op::Pressure),
        4 => Just(Op::ChannelFull),
        4 => Just(Op::ChannelReady),
        1 => prop_oneof![Just(GateStop::Retire), Just(GateStop::Drain), Just(GateStop::Finish), Just(GateStop::Now)].prop_map(Op::Stop),
        2 => Just(Op::ListenersEmpty),
    ]
}

/// What the observer knows of a connection.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// When its current wait began: arrival, give-back, or first byte of a head.
    since: Time,
    bytes: u64,
    complete: bool,
}

/// Runs the ops against a gate of `capacity`; the first property broken, if any.
fn run(ops: &[Op], capacity: usize, min_rate: u64, bug: Option<SeededBug>) -> Result<(), String> {
    let cfg = GateConfig { capacity, min_rate, ..GateConfig::default() };
    let mut gate = Gate::new(cfg);
    if let Some(b) = bug {
        gate.seed_bug(b);
    }
    let mut now = Time::ZERO;
    let mut seen: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut channel_full = false;
    for op in ops {
        let mut pressure_full = false;
        match *op {
            Op::Wait(ms) => {
                now += Duration::from_millis(ms);
                gate.handle_tick(now);
            }
            Op::Arrive => {
                if gate.accepting() {
                    if gate.held() >= capacity {
                        return Err(format!("G4: accepting with {} held, capacity {capacity}", gate.held()));
                    }
                    next_id += 1;
                    gate.handle_accepted(now, next_id).map_err(|e| e.to_string())?;
                    seen.insert(next_id, Seen { since: now, bytes: 0, complete: false });
                }
            }
            Op::Send(i, bytes, complete) => {
                let reading: Vec<u64> = seen.iter().filter(|(_, s)| !s.complete).map(|(&id, _)| id).collect();
                if !reading.is_empty() {
                    let id = reading[i % reading.len()];
                    let s = seen.get_mut(&id).unwrap();
                    if s.bytes == 0 && bytes > 0 {
                        s.since = now;
                    }
                    s.bytes += bytes;
                    s.complete = complete;
                    let progress = if complete { HeadProgress::Complete } else { HeadProgress::Partial };
                    gate.handle_read(now, id, s.bytes, progress).map_err(|e| e.to_string())?;
                }
            }
            Op::Leave(i) => {
                let reading: Vec<u64> = seen.iter().filter(|(_, s)| !s.complete).map(|(&id, _)| id).collect();
                if !reading.is_empty() {
                    let id = reading[i % reading.len()];
                    seen.remove(&id);
                    gate.handle_gone(id).map_err(|e| e.to_string())?;
                }
            }
            Op::GiveBack(bytes, complete) => {
                next_id += 1;
                let complete = complete && bytes > 0;
                let progress = if complete { HeadProgress::Complete } else { HeadProgress::Partial };
                if gate.handle_returned(now, next_id, bytes, progress).is_ok() {
                    seen.insert(next_id, Seen { since: now, bytes, complete });
                }
            }
            Op::Pressure => {
                pressure_full = gate.held() >= capacity;
                gate.handle_pressure(now);
            }
            Op::ChannelFull => channel_full = true,
            Op::ChannelReady => {
                channel_full = false;
                gate.handle_handoff_ready();
            }
            Op::Stop(how) => gate.handle_stop(now, how),
            Op::ListenersEmpty => gate.handle_listeners_empty(),
        }
        while let Some(action) = gate.poll_action() {
            match action {
                GateAction::HandOver(id) => {
                    let s = seen.get(&id).ok_or(format!("hand-over of unknown connection {id}"))?;
                    if !s.complete {
                        return Err(format!("G1: connection {id} handed over before its head was complete"));
                    }
                    if channel_full {
                        gate.handle_handoff_full(id).map_err(|e| e.to_string())?;
                    } else {
                        gate.handle_handed(id).map_err(|e| e.to_string())?;
                        seen.remove(&id);
                    }
                }
                GateAction::Close(id, reason) => {
                    let s = seen.remove(&id).ok_or(format!("close of unknown connection {id}"))?;
                    if s.complete {
                        return Err(format!(
                            "G1: connection {id}, whose head was complete, closed ({})",
                            reason.name()
                        ));
                    }
                    if reason.is_shed() {
                        if !matches!(op, Op::Pressure) || !pressure_full {
                            return Err(format!(
                                "G2: connection {id} shed ({}) after {op:?} with {} of {capacity} held",
                                reason.name(),
                                seen.len() + 1
                            ));
                        }
                        if protected(s, now, min_rate) {
                            return Err(format!("G3: connection {id} shed although protected: {s:?} at {now}"));
                        }
                        let idle_left =
                            seen.values().any(|o| o.bytes == 0 && !o.complete && !protected(*o, now, min_rate));
                        if s.bytes > 0 && idle_left {
                            return Err(format!("G3: head {id} shed while an idle connection could go"));
                        }
                    }
                }
                GateAction::PassOn(id) => {
                    let s = seen.remove(&id).ok_or(format!("pass-on of unknown connection {id}"))?;
                    if s.complete {
                        return Err(format!(
                            "G1: connection {id}, whose head was complete, passed on instead of handed over"
                        ));
                    }
                }
                GateAction::Exit => {
                    if !seen.is_empty() {
                        return Err(format!("G1: the gate exits holding {} connections", seen.len()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Is the connection safe from shedding (SPEC.md §15.2)?
fn protected(s: Seen, now: Time, min_rate: u64) -> bool {
    let age = now.since(s.since);
    if age < SHED_GRACE {
        return true;
    }
    s.bytes > 0 && s.bytes.saturating_mul(1000) / (age.as_millis() as u64).max(1) >= min_rate
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..120)
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]
    #[test]
    fn the_gate_never_drops_a_complete_head_and_sheds_only_under_pressure_in_order(
        ops in ops(), capacity in 1usize..6, min_rate in prop_oneof![Just(0u64), Just(500u64), 1u64..5000],
    ) {
        run(&ops, capacity, min_rate, None).map_err(TestCaseError::fail)?;
    }
}

/// The properties must fail for `bug`, with `expected` in the failure.
fn must_catch(bug: SeededBug, expected: &str) {
    let mut runner = TestRunner::new(Config { cases: 4096, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(ops(), 1usize..6, prop_oneof![Just(500u64), 1u64..5000]), |(ops, capacity, rate)| {
        run(&ops, capacity, rate, Some(bug)).map_err(TestCaseError::fail)
    });
    let err = result.expect_err("the seeded bug went unnoticed");
    assert!(err.to_string().contains(expected), "{bug:?} was caught, but not by {expected}: {err}");
}

#[test]
fn negative_a_gate_that_sheds_with_room_is_caught() {
    must_catch(SeededBug::ShedWithRoom, "G2");
}

#[test]
fn negative_a_gate_that_sheds_complete_heads_is_caught() {
    must_catch(SeededBug::ShedCompleteHead, "G1");
}

#[test]
fn negative_a_gate_that_sheds_protected_connections_is_caught() {
    must_catch(SeededBug::ShedProtected, "G3");
}

#[test]
fn negative_a_gate_that_accepts_past_its_table_is_caught() {
    must_catch(SeededBug::AcceptPastCapacity, "G4");
}

#[test]
fn a_reason_answers_408_only_when_a_head_had_begun() {
    for r in [CloseReason::HeadTimeout, CloseReason::ShedSlowHead] {
        assert!(r.answers_408(), "{r:?}");
    }
    for r in
        [CloseReason::FirstByteTimeout, CloseReason::KeepAliveTimeout, CloseReason::ShedIdle, CloseReason::Stopping]
    {
        assert!(!r.answers_408(), "{r:?}");
    }
}
