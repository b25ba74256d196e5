//! The pool tier's own tests (CONFORMANCE.md): the process model seen from outside, through the
//! contract's flags, signals, `?auto` and `/proc` only, so they test any implementation chosen
//! by `PREFORKD_BIN` (preforkd, the Python port). The rest of the pool tier is in `faults.rs`.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_tests::*;
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One at a time: they count processes and time ticks.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Live children (zombies count as gone).
fn live_children(p: &Preforkd) -> Vec<u32> {
    children_of(p.pid).into_iter().filter(|&c| !is_zombie(c)).collect()
}

/// Samples the number of live children every 20 ms for `d`: (time since start, count) at every change.
fn watch_children(p: &Preforkd, d: Duration) -> Vec<(Duration, usize)> {
    let start = Instant::now();
    let mut changes = vec![(Duration::ZERO, live_children(p).len())];
    while start.elapsed() < d {
        let n = live_children(p).len();
        if n != changes.last().unwrap().1 {
            changes.push((start.elapsed(), n));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    changes
}

/// Groups changes less than 400 ms apart (one tick's forks land within a few ms) and returns
/// each group's net change.
fn steps(changes: &[(Duration, usize)]) -> Vec<i64> {
    let mut out: Vec<i64> = vec![];
    let mut last_at: Option<Duration> = None;
    for w in changes.windows(2) {
        let delta = w[1].1 as i64 - w[0].1 as i64;
        match last_at {
            Some(t) if w[1].0 - t < Duration::from_millis(400) => *out.last_mut().unwrap() += delta,
            _ => out.push(delta),
        }
        last_at = Some(w[1].0);
    }
    out
}

#[test]
fn the_pool_starts_at_start_servers_and_ramps_1_2_4_8_while_clients_wait() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--spawn-mode",
        "ramp",
        "--start-servers",
        "1",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "64",
        "--max-request-workers",
        "64",
        "--server-limit",
        "64",
    ]);
    assert!(wait_until(Duration::from_secs(3), || live_children(&p).len() == 1), "start_servers 1");
    // 40 clients connect and send nothing: each holds a child (reading) for the head's timeout,
    // so the pool stays short of idle children and the ramp runs.
    let held: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(p.addr()).unwrap()).collect();
    let changes = watch_children(&p, Duration::from_millis(4600));
    let s = steps(&changes);
    eprintln!("children: {changes:?}; steps {s:?}");
    assert!(s.len() >= 4 && s[..4] == [1, 2, 4, 8], "Apache's ramp, 1, 2, 4, 8 per tick: {s:?} ({changes:?})");
    drop(held);
}

#[test]
fn an_idle_surplus_is_retired_one_child_per_tick_down_to_max_spare_servers() {
    let _s = serial();
    let p = Preforkd::start(&["--start-servers", "10", "--min-spare-servers", "1", "--max-spare-servers", "4"]);
    assert!(wait_until(Duration::from_secs(3), || live_children(&p).len() == 10), "start_servers 10");
    let mut changes = watch_children(&p, Duration::from_millis(7500));
    changes.retain(|&(t, _)| t > Duration::ZERO);
    eprintln!("children: {changes:?}");
    let counts: Vec<usize> = changes.iter().map(|&(_, n)| n).collect();
    assert_eq!(counts, vec![9, 8, 7, 6, 5, 4], "one retirement per tick, down to max_spare_servers");
    for w in changes.windows(2) {
        assert!(w[1].0 - w[0].0 >= Duration::from_millis(500), "two retirements in one tick: {changes:?}");
    }
    // ?auto says the same as /proc (the child answering it counts as busy).
    let auto = p.get("/server-status?auto").text();
    let field = |name| auto_field_in(&auto, name).and_then(|v| v.parse::<usize>().ok());
    assert_eq!((field("BusyWorkers"), field("IdleWorkers")), (Some(1), Some(3)), "{auto}");
}

#[test]
fn status_counts_equal_a_recount_from_proc_and_a_killed_child_is_replaced() {
    let _s = serial();
    let p = Preforkd::start(&["--start-servers", "5", "--min-spare-servers", "5", "--max-spare-servers", "10"]);
    assert!(wait_until(Duration::from_secs(3), || live_children(&p).len() == 5));
    let recount = |p: &Preforkd| {
        let auto = p.get("/server-status?auto").text();
        let board = auto_field_in(&auto, "Scoreboard").unwrap_or("").to_string();
        let busy: usize = auto_field_in(&auto, "BusyWorkers").and_then(|v| v.parse().ok()).unwrap_or(999);
        let idle: usize = auto_field_in(&auto, "IdleWorkers").and_then(|v| v.parse().ok()).unwrap_or(999);
        let live = board.chars().filter(|&c| c != '.').count();
        (busy, idle, live, live_children(p).len())
    };
    let (busy, idle, live, procs) = recount(&p);
    assert_eq!((busy, live, procs), (1, 5, 5), "the serving child is busy; every live slot is a process");
    assert_eq!(idle, 4);
    let victim = live_children(&p)[2];
    let killed = Instant::now();
    signal(victim, Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let now = live_children(&p);
            now.len() == 5 && !now.contains(&victim)
        }),
        "the killed child is reaped and replaced within a tick or two"
    );
    eprintln!("RESULT respawn: a killed child replaced {:?} after the kill", killed.elapsed());
    assert!(p.zombies().is_empty(), "reaped");
    let slots = p.slots();
    assert!(slots.iter().all(|s| s.pid != victim), "no slot keeps the dead pid");
    let pids: BTreeSet<u32> = slots.iter().map(|s| s.pid).collect();
    assert_eq!(pids, live_children(&p).into_iter().collect(), "?json's pids are exactly the live children");
}

#[test]
fn a_hard_restart_replaces_every_child_and_keeps_serving() {
    let _s = serial();
    let p = Preforkd::start(&["--start-servers", "4", "--min-spare-servers", "2", "--max-spare-servers", "8"]);
    assert!(wait_until(Duration::from_secs(3), || live_children(&p).len() >= 4));
    let before: BTreeSet<u32> = live_children(&p).into_iter().collect();
    assert_eq!(p.generation(), 0);
    signal(p.pid, Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(12), || p.generation() == 1), "generation 1 after SIGHUP");
    assert!(wait_until(Duration::from_secs(3), || {
        let now: BTreeSet<u32> = live_children(&p).into_iter().collect();
        now.len() >= 4 && now.is_disjoint(&before)
    }));
    assert_eq!(p.get("/").status, 200);
}

#[test]
fn a_stop_escalates_to_sigkill_for_a_child_that_does_not_go_and_leaves_nothing() {
    let _s = serial();
    let mut p = Preforkd::start(&["--start-servers", "3", "--min-spare-servers", "1", "--max-spare-servers", "4"]);
    assert!(wait_until(Duration::from_secs(3), || live_children(&p).len() == 3));
    let children = live_children(&p);
    let stuck = children[0];
    signal(stuck, Signal::SIGSTOP); // SIGTERM stays pending in a stopped process: only SIGKILL ends it
    let stop = Instant::now();
    signal(p.pid, Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(2), || children[1..].iter().all(|&c| !alive(c) || is_zombie(c))),
        "the others leave on the first SIGTERM"
    );
    assert!(alive(stuck) && !is_zombie(stuck), "the stopped child is still there");
    let status = p.wait(Duration::from_secs(15));
    let took = stop.elapsed();
    eprintln!("RESULT stop-ladder: parent exited {took:?} after SIGTERM with a stopped child");
    assert!(status.is_some(), "the parent never exited");
    assert!(!alive(stuck) || is_zombie(stuck), "the stopped child survived the stop");
    // SIGKILL at 9 s (SPEC §7.5), give up at 10 s.
    assert!(took >= Duration::from_secs(8) && took <= Duration::from_secs(11), "{took:?}");
}
