//! The pool tier (CONFORMANCE.md): the process model seen from outside, through the contract's
//! flags, signals, `?auto`, `?json` and `/proc` only, so they test any implementation chosen by
//! `PREFORKD_BIN` (preforkd, the Python port, Apache through an adapter): start-up and the ramp,
//! retirement, status counts against a recount, killed children and a killed lock holder under
//! load, graceful and hard restarts, graceful stop, the stop ladder, the killed parent. The fault
//! tests print a results line (`RESULT ...`) that `tests/RESULTS.md` records.
//!
//! `PREFORK_FAULTS_LONG=1` multiplies the number of faults injected by 10.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One at a time: they count processes, time ticks and load the machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live children (zombies count as gone).
fn live_children(p: &Preforkd) -> Vec<u32> {
    live_children_of(p.pid)
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

fn scale() -> usize {
    if std::env::var_os("PREFORK_FAULTS_LONG").is_some() { 10 } else { 1 }
}

/// Two listeners, children accepting on them under the accept lock (`accept_filter = "data"`:
/// behind the gate there is no lock, SPEC.md §15).
fn two_listeners(extra: &[&str]) -> Preforkd {
    let mut args = vec!["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--accept-filter", "data"];
    args.extend_from_slice(extra);
    let p = Preforkd::start(&args);
    assert_eq!(p.addrs.len(), 2);
    p
}

/// Time until a fresh request on every listener is answered, retrying.
fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

/// Sockets `pid` has open (listeners, and an accepted connection if it holds one).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_pool_starts_at_start_servers_and_ramps_1_2_4_8_while_clients_wait() {
    let _s = serial();
    let p = Preforkd::start(&[
        // Children read the heads themselves (behind the gate, SPEC.md §15, a slow or idle
        // connection holds no child).
        "--accept-filter",
        "data",
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
    // 40 clients send the start of a request head and no more: each holds a child (reading) for
    // the head's timeout, so the pool stays short of idle children and the ramp runs. (A client
    // that sends nothing at all would not do: Apache's listeners defer accept() until data comes,
    // TCP_DEFER_ACCEPT, so such a client never reaches a child there.)
    let held: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = TcpStream::connect(p.addr()).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
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
    // Five processes exist as soon as the forks return; wait until none of them still shows `S`
    // (a starting child is neither busy nor idle, as in Apache), as a loaded machine can make it.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let auto = p.get("/server-status?auto").text();
            auto_field_in(&auto, "Scoreboard").is_some_and(|b| !b.contains('S'))
        }),
        "the children finish starting"
    );
    // The child that answered the previous probe may still be closing its connection (`C`, busy)
    // when the next probe is answered by another: the counts settle once it is back at `_`.
    let mut last = recount(&p);
    assert!(
        wait_until(Duration::from_secs(3), || {
            last = recount(&p);
            last == (1, 4, 5, 5)
        }),
        "the serving child is busy, the other four idle; every live slot is a process: \
         (busy, idle, live slots, processes) = {last:?}"
    );
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
    // Until the child has taken the SIGSTOP, a SIGTERM that arrives beside it is taken first
    // (the lower number), and the child would simply die of it.
    assert!(wait_until(Duration::from_secs(2), || is_stopped(stuck)), "the child stops");
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
    let survived = alive(stuck) && !is_zombie(stuck);
    signal(stuck, Signal::SIGKILL); // the test kills what it started, also when it fails
    assert!(status.is_some(), "the parent never exited");
    assert!(!survived, "the stopped child survived the stop");
    // SIGKILL at 9 s (SPEC §7.5), give up at 10 s.
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(11),
        "the parent exited {took:?} after SIGTERM; the ladder sends SIGKILL at 9 s"
    );
}

#[test]
fn killing_the_accept_lock_holder_never_hangs_the_pool() {
    let _s = serial();
    let kills = 100 * scale();
    // fcntl, so that /proc/locks names the holder: a stopped child is checked to hold the lock
    // before it is killed (the status page is always a moment late under load).
    let p = two_listeners(&[
        "--start-servers",
        "8",
        "--min-spare-servers",
        "5",
        "--max-spare-servers",
        "20",
        "--accept-mutex",
        "fcntl",
    ]);
    // The two listeners (and nothing accepted yet): the fewest any child holds. One child holds
    // the connection of the status request that lists them (the lowest slot's, about one time
    // in eight), and a baseline counted on it credited no killed holder with its connection.
    let idle_sockets = p.slots().iter().map(|s| sockets(s.pid)).min().expect("children");
    let load = Load::start(&p.addrs, 6, Mode::KeepAlive, "/");
    assert!(load.progresses(100, Duration::from_secs(5)));
    let mut recoveries = vec![];
    let mut with_connection = 0;
    for i in 0..kills {
        // Under load the lock moves faster than a status page: stop every idle child at once
        // (the holder is among them whenever it waits), let /proc/locks say which one holds
        // the lock, continue the others.
        let mut holder = None;
        assert!(
            wait_until(Duration::from_secs(5), || {
                let idle: Vec<u32> = p.slots().into_iter().filter(|s| s.letter == '_').map(|s| s.pid).collect();
                for &c in &idle {
                    signal(c, Signal::SIGSTOP);
                }
                let locked = posix_lock_holders();
                holder = idle.iter().copied().find(|c| locked.contains(c));
                for &c in idle.iter().filter(|&&c| Some(c) != holder) {
                    signal(c, Signal::SIGCONT);
                }
                holder.is_some()
            }),
            "kill {i}: no child was caught holding the accept lock: {:?}",
            p.slots()
        );
        let holder = holder.unwrap();
        // A holder can hold at most the one connection it has just accepted (it releases the lock
        // before it serves): count the ones that did.
        if sockets(holder) > idle_sockets {
            with_connection += 1;
        }
        signal(holder, Signal::SIGKILL);
        match p.serving_again_within(Duration::from_secs(1)) {
            Some(d) => recoveries.push(d),
            None => panic!("kill {i}: not serving on both listeners within 1 s of killing the lock holder"),
        }
    }
    assert!(load.progresses(100, Duration::from_secs(5)), "the load goes on");
    let t = load.stop();
    // Only the connection a killed holder had just accepted can fail.
    assert!(
        t.failures.len() <= with_connection,
        "{} failures, but only {with_connection} of {kills} killed holders held a connection: {:?}",
        t.failures.len(),
        t.failures
    );
    let worst = recoveries.iter().max().copied().unwrap_or_default();
    eprintln!(
        "RESULT lock-holder-kill: faults {kills} (holders verified in /proc/locks; {with_connection} held a connection), requests {}, failed {}, recovery median {:?} p99 {:?} max {worst:?}",
        t.ok + t.failures.len() as u64,
        t.failures.len(),
        percentile(recoveries.clone(), 0.5),
        percentile(recoveries, 0.99)
    );
}

#[test]
fn a_thousand_random_child_kills_leave_no_stale_slot_and_no_zombie() {
    let _s = serial();
    let kills = 1000 * scale();
    let p = Preforkd::start(&[
        "--start-servers",
        "16",
        "--min-spare-servers",
        "8",
        "--max-spare-servers",
        "24",
        "--max-request-workers",
        "64",
        "--maintenance-interval-ms",
        "100",
    ]);
    let load = Load::start(&p.addrs, 4, Mode::KeepAlive, "/");
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut killed = BTreeSet::new();
    let mut with_connection = 0;
    let started = Instant::now();
    while killed.len() < kills {
        assert!(started.elapsed() < Duration::from_secs(60 * scale() as u64), "only {} kills in time", killed.len());
        let children: Vec<u32> =
            children_of(p.pid).into_iter().filter(|&c| !is_zombie(c) && !killed.contains(&c)).collect();
        if children.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = children[(rng % children.len() as u64) as usize];
        // Stopped, it cannot accept or close anything: a socket beyond the listener is a connection
        // it holds, the only thing its death can cost a client.
        signal(victim, Signal::SIGSTOP);
        if sockets(victim) > p.addrs.len() {
            with_connection += 1;
        }
        signal(victim, Signal::SIGKILL);
        killed.insert(victim);
        std::thread::sleep(Duration::from_millis(2));
    }
    let storm = started.elapsed();
    // The pool comes back by itself.
    let back = Instant::now();
    let recovered = p.serving_again_within(Duration::from_secs(10));
    assert!(recovered.is_some(), "not serving after the storm");
    assert!(
        wait_until(Duration::from_secs(10), || p.auto_field("IdleWorkers").and_then(|v| v.parse::<u32>().ok())
            >= Some(8)),
        "min_spare_servers idle children are back: {:?}",
        p.auto_field("Scoreboard")
    );
    let back = back.elapsed();
    let t = load.stop();
    // Only a connection a killed child held can fail (at most one per such child).
    assert!(
        t.failures.len() <= with_connection,
        "{} failures, but only {with_connection} of {kills} killed children held a connection",
        t.failures.len()
    );
    // The board must come to agree with /proc: every exit reaped, the board's children exactly the
    // parent's, the derived counts a recount. The pool may still retire or spawn at a tick, so
    // read until one consistent view (every read within a few milliseconds) says so.
    let mut last = String::new();
    let mut idle = 0;
    let consistent = wait_until(Duration::from_secs(5), || {
        let check = || -> Result<usize, String> {
            if !p.zombies().is_empty() {
                return Err(format!("unreaped children: {:?}", p.zombies()));
            }
            let slots = p.slots();
            let live: Vec<&SlotInfo> = slots.iter().filter(|s| s.letter != '.').collect();
            for s in &live {
                if !alive(s.pid) || parent_of(s.pid) != Some(p.pid) || killed.contains(&s.pid) {
                    return Err(format!(
                        "slot {} shows {} for pid {}, not a live child of ours",
                        s.slot, s.letter, s.pid
                    ));
                }
            }
            let mut on_board: Vec<u32> = live.iter().map(|s| s.pid).collect();
            let mut in_proc: Vec<u32> = children_of(p.pid);
            on_board.sort();
            in_proc.sort();
            if on_board != in_proc {
                return Err(format!("board {on_board:?} vs /proc {in_proc:?}"));
            }
            let auto = p.get("/server-status?auto").text();
            let field = |n: &str| auto_field_in(&auto, n).unwrap_or("0").parse::<usize>().unwrap_or(0);
            let board = auto_field_in(&auto, "Scoreboard").unwrap_or("").to_string();
            let starting = board.chars().filter(|&c| c == 'S' || c == 'I').count();
            let recount = field("BusyWorkers") + field("IdleWorkers") + field("GracefulWorkers") + starting;
            if recount != children_of(p.pid).len() || in_proc != children_of(p.pid) {
                return Err(format!("derived counts {recount} vs /proc {}: {board}", in_proc.len()));
            }
            Ok(field("IdleWorkers"))
        };
        match check() {
            Ok(n) => {
                idle = n;
                true
            }
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(consistent, "the board never agreed with /proc: {last}");
    eprintln!(
        "RESULT random-child-kills: faults {kills} in {storm:?} ({with_connection} held a connection), requests {}, failed {}, recovery {:?} to serve, {back:?} to {} idle",
        t.ok + t.failures.len() as u64,
        t.failures.len(),
        recovered.unwrap(),
        idle
    );
}

#[test]
fn graceful_restarts_under_mixed_load_lose_nothing_and_retire_old_children() {
    let _s = serial();
    let restarts = 20 * scale();
    let p = Preforkd::start(&["--start-servers", "6", "--min-spare-servers", "4", "--max-spare-servers", "12"]);
    let keep = Load::start(&p.addrs, 3, Mode::KeepAlive, "/");
    let close = Load::start(&p.addrs, 3, Mode::Close, "/");
    assert!(keep.progresses(50, Duration::from_secs(5)) && close.progresses(50, Duration::from_secs(5)));
    let mut last = 0;
    let mut old = vec![];
    for i in 1..=restarts as u64 {
        // Every child alive before the last restart is of an older generation (/proc, so the
        // check needs no per-slot status).
        old = live_children(&p);
        p.signal(Signal::SIGUSR1);
        assert!(wait_until(Duration::from_secs(3), || p.generation() == i), "generation {i}");
        let g = p.generation();
        assert!(g > last, "generations increase");
        last = g;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Old children finish what they have and leave.
    let old_gone = wait_until(Duration::from_secs(10), || old.iter().all(|&c| !alive(c) || is_zombie(c)));
    let (k, c) = (keep.stop(), close.stop());
    let failed = k.failures.len() + c.failures.len();
    eprintln!(
        "RESULT graceful-restarts: faults {restarts}, requests {}, failed {failed}, refused {}, old generations {}",
        k.ok + c.ok + failed as u64,
        k.refused + c.refused,
        if old_gone { "gone" } else { "remain" }
    );
    let whats: BTreeSet<&str> = k.failures.iter().chain(&c.failures).map(|f| f.what.as_str()).collect();
    assert!(failed == 0, "{failed} requests failed across {restarts} graceful restarts: {whats:?}");
    assert_eq!(k.refused + c.refused, 0, "listeners stay open across restarts");
    assert!(
        old_gone,
        "children of older generations remain: {:?}",
        old.iter().filter(|&&c| alive(c) && !is_zombie(c)).collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(3), || p.slots().iter().all(|s| s.letter == '.' || s.generation == last)),
        "the board shows only generation {last} once the old children are reaped"
    );
}

#[test]
fn a_graceful_stop_under_load_completes_requests_in_flight_and_queued_then_refuses() {
    let _s = serial();
    let clients = 6;
    let mut p = Preforkd::start(&["--start-servers", "6", "--min-spare-servers", "4", "--max-spare-servers", "12"]);
    let keep = Load::start(&p.addrs, clients / 2, Mode::KeepAlive, "/");
    let close = Load::start(&p.addrs, clients / 2, Mode::Close, "/");
    assert!(keep.progresses(50, Duration::from_secs(5)) && close.progresses(50, Duration::from_secs(5)));
    // A slow request in flight: its head arrives in pieces across the stop.
    let mut slow = Client::connect(p.addr()).unwrap();
    slow.send(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(keep.refused() + close.refused(), 0, "nothing is refused before the stop");
    assert!(keep.failures().is_empty() && close.failures().is_empty());
    let stop_at = Instant::now();
    p.signal(Signal::SIGWINCH);
    std::thread::sleep(Duration::from_millis(300));
    slow.send(b"X-Late: yes\r\n\r\n").unwrap();
    let r = slow.read_response(false).expect("the request in flight is answered");
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert_eq!(p.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
    let (k, c) = (keep.stop(), close.stop());
    // SPEC.md §7.5, I32: requests a child had taken complete, and so do the connections the
    // listen queues held when the stop came (the children drain them). New connections are not
    // taken from the stop on: they are refused before they send anything, never reset after.
    let failures: Vec<&Failure> = k.failures.iter().chain(&c.failures).collect();
    assert!(failures.is_empty(), "no request is lost in a graceful stop: {failures:?}");
    assert!(k.refused + c.refused > 0, "new connections are refused once the listeners close");
    assert!(std::net::TcpStream::connect(p.addr()).is_err());
    eprintln!(
        "RESULT graceful-stop: requests {}, in flight completed, {} failed, {} refused after the stop, stop took {:?}",
        k.ok + c.ok + 1,
        failures.len(),
        k.refused + c.refused,
        stop_at.elapsed()
    );
}

/// SPEC.md §7.5, I32: connections the listen queue holds when a graceful stop comes are served,
/// also when every child is busy at that moment (the children drain the queue when they finish;
/// Apache's kernel resets them). Every child is held by a request head that is not complete yet,
/// three clients wait in the queue with their requests sent, then SIGWINCH.
#[test]
fn a_graceful_stop_serves_the_connections_queued_behind_busy_children() {
    let _s = serial();
    let mut p = Preforkd::start(&[
        // Children read the heads themselves (behind the gate, SPEC.md §15, a slow or idle
        // connection holds no child).
        "--accept-filter",
        "data",
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
        "--max-request-workers",
        "2",
    ]);
    assert_eq!(p.get("/").status, 200);
    let mut holders: Vec<Client> = (0..2).map(|_| Client::connect(p.addr()).unwrap()).collect();
    for h in &mut holders {
        h.send(b"GET / HTTP/1.1\r\nHost: holder\r\n").unwrap();
    }
    // Both children take a holder (the status page cannot tell: it needs a free child).
    std::thread::sleep(Duration::from_millis(500));
    let mut queued: Vec<Client> = (0..3).map(|_| Client::connect(p.addr()).unwrap()).collect();
    for q in &mut queued {
        q.send(b"GET / HTTP/1.1\r\nHost: queued\r\n\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    p.signal(Signal::SIGWINCH);
    std::thread::sleep(Duration::from_millis(300));
    for h in &mut holders {
        h.send(b"\r\n").unwrap();
        let r = h.read_response(false).expect("a request in hand is answered");
        assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    }
    for (i, q) in queued.iter_mut().enumerate() {
        let r = q.read_response(false).unwrap_or_else(|e| panic!("queued connection {i} was not served: {e}"));
        assert_eq!((r.status, r.header("Connection")), (200, Some("close")), "queued connection {i}");
    }
    assert_eq!(p.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
    assert!(std::net::TcpStream::connect(p.addr()).is_err(), "the listener is closed at the end");
}

#[test]
fn killing_the_parent_under_load_takes_every_child_down_within_a_second() {
    let _s = serial();
    let mut p = Preforkd::start(&["--start-servers", "8", "--min-spare-servers", "4", "--max-spare-servers", "12"]);
    let load = Load::start(&p.addrs, 4, Mode::KeepAlive, "/");
    assert!(load.progresses(100, Duration::from_secs(5)));
    let children = children_of(p.pid);
    assert!(children.len() >= 8);
    p.signal(Signal::SIGKILL);
    let killed = Instant::now();
    assert!(p.wait(Duration::from_secs(2)).is_some());
    let gone = wait_until(Duration::from_secs(1), || children.iter().all(|&c| !alive(c)));
    let took = killed.elapsed();
    let _ = load.stop();
    let orphans: Vec<u32> = children.iter().copied().filter(|&c| alive(c)).collect();
    orphans.iter().for_each(|&c| signal(c, Signal::SIGKILL)); // the test kills what it started, also when it fails
    eprintln!(
        "RESULT parent-kill: {} children, {} left {took:?} after the parent's kill",
        children.len(),
        orphans.len()
    );
    assert!(gone, "children outlived the parent: {orphans:?}");
}
