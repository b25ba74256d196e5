//! Stalls from the outside (SPEC.md §7.8): children that are alive but stopped (`SIGSTOP`, as a
//! debugger, a page-in storm or a dead NFS mount would leave them). The accept-lock holder stopped
//! would wedge every listener; the watchdog must kill it within `accept_lock_timeout_ms` plus a
//! tick, for every lock mechanism, and must leave everyone else alone. Each test prints a results
//! line (`RESULT ...`) that `tests/RESULTS.md` records.
//!
//! The settings make the bound short (`--accept-lock-timeout-ms 300`, a 100 ms tick):
//! `PREFORK_FAULTS_LONG=1` multiplies the rounds by 10.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scale() -> usize {
    if std::env::var_os("PREFORK_FAULTS_LONG").is_some() { 10 } else { 1 }
}

const MECHANISMS: [&str; 4] = ["fcntl", "flock", "pthread", "sysvsem"];
const WATCHDOG: Duration = Duration::from_millis(300);
const TICK: Duration = Duration::from_millis(100);
/// What the bound leaves for this machine: process wake-ups, the reap, a loaded CI runner.
const SLACK: Duration = Duration::from_millis(600);

fn two_listeners(mechanism: &str, extra: &[&str]) -> Preforkd {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        // Children accept on the listeners under the lock (behind the gate there is none).
        "--accept-filter",
        "data",
        "--accept-mutex",
        mechanism,
        "--accept-lock-timeout-ms",
        "300",
        "--maintenance-interval-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    let p = Preforkd::start(&args);
    assert_eq!(p.addrs.len(), 2);
    p
}

/// Stops the child that holds the accept lock, and makes sure it was the holder: either the
/// status page still shows it holding the lock (a stopped child cannot let go), or it is already
/// dead because the watchdog killed it while that very status request waited behind it. A child
/// that was not the holder is continued and the next one tried. Returns its pid and, when the
/// status request itself had to wait for the watchdog, how long that took.
fn stop_the_holder(p: &Preforkd, stopped: &mut Vec<u32>) -> (u32, Option<Duration>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(holder) = p.slots().into_iter().find(|s| s.holds_lock).map(|s| s.pid) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        signal(holder, Signal::SIGSTOP);
        stopped.push(holder);
        let asked = Instant::now();
        let still = p.slots().iter().any(|s| s.pid == holder && s.holds_lock);
        let waited = asked.elapsed();
        // Dead already: the watchdog killed it while the status request waited behind it (the
        // page, rendered by the next holder, may still show the dead child's last flag).
        if !alive(holder) {
            return (holder, Some(waited));
        }
        if still {
            return (holder, None);
        }
        signal(holder, Signal::SIGCONT);
    }
    panic!(
        "no child held the accept lock long enough to be stopped: {:?}\n?auto:\n{}",
        p.slots(),
        p.get("/server-status?auto").text()
    );
}

/// The pids the watchdog killed for holding the accept lock, from the error log. The log bounds
/// repeated lines (SPEC.md §7.9: ten of a kind per ten seconds), so this can be a subset; the
/// count is [`watchdog_kills`].
fn killed_holders(p: &Preforkd) -> Vec<u32> {
    p.stderr()
        .lines()
        .filter(|l| l.contains("without accepting while connections waited (accept_lock_timeout): killing it"))
        .filter_map(|l| l.split("child ").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// One request on each listener at once; the time until the last is answered (`None` if one
/// fails or takes longer than `limit`).
fn serve_both(addrs: &[SocketAddr], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let probes: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).ok()?;
                c.set_read_timeout(limit);
                let r = c.request("GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").ok()?;
                (r.status == 200).then(|| start.elapsed())
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for probe in probes {
        worst = worst.max(probe.join().ok()??);
    }
    Some(worst)
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    format!("median {:?} p90 {:?} max {:?}", at(0.5), at(0.9), at(1.0))
}

/// Children the watchdog killed for holding the accept lock, as `?json` counts them (the
/// parent's own counter).
fn watchdog_kills(p: &Preforkd) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
    json["watchdog_kills"]["accept_lock"].as_u64().expect("?json counts watchdog kills")
}

/// Some slot shows that the parent's last kill in it was for `reason` (`?json`; the slot may be
/// empty by now).
fn a_slot_shows_a_kill_for(p: &Preforkd, reason: &str) -> bool {
    let json: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
    json["slots"].as_array().into_iter().flatten().any(|s| s["killed_for"] == reason)
}

/// Every kill was of a stopped child: the kills counted are no more than the stopped children
/// that are gone, and every kill the log names (it may not name them all) is of a stopped child.
fn only_stopped_children_were_killed(p: &Preforkd, stopped: &[u32], mechanism: &str) {
    let kills = watchdog_kills(p);
    let gone = stopped.iter().filter(|&&c| !alive(c)).count() as u64;
    assert!(kills <= gone, "{mechanism}: {kills} kills but only {gone} stopped children are gone\n{}", p.stderr());
    let named = killed_holders(p);
    assert!(
        named.iter().all(|k| stopped.contains(k)),
        "{mechanism}: only stopped children are killed: killed {named:?}, stopped {stopped:?}\n{}",
        p.stderr()
    );
}

#[test]
fn a_stopped_lock_holder_is_killed_and_both_listeners_answer_within_the_watchdog_and_a_tick() {
    let _s = serial();
    let rounds = 20 * scale();
    for mechanism in MECHANISMS {
        let p =
            two_listeners(mechanism, &["--start-servers", "4", "--min-spare-servers", "2", "--max-spare-servers", "8"]);
        let mut times = vec![];
        let mut stopped = vec![];
        let bound = WATCHDOG + TICK + SLACK;
        for round in 0..rounds {
            let (holder, waited) = stop_the_holder(&p, &mut stopped);
            let took = match waited {
                Some(waited) => waited, // the status request was the connection that waited
                None => serve_both(&p.addrs, Duration::from_secs(5)).unwrap_or_else(|| {
                    panic!("{mechanism} round {round}: a listener did not answer with the holder {holder} stopped")
                }),
            };
            assert!(took <= bound, "{mechanism} round {round}: answered after {took:?} (bound {bound:?})");
            times.push(took);
            assert!(wait_until(Duration::from_secs(2), || !alive(holder)), "{mechanism}: the stopped holder is gone");
            // Waking it up now changes nothing: it is dead.
            signal(holder, Signal::SIGCONT);
        }
        let kills = watchdog_kills(&p);
        assert!(kills >= rounds as u64, "{mechanism}: every stopped holder was killed: {kills} kills");
        only_stopped_children_were_killed(&p, &stopped, mechanism);
        assert!(a_slot_shows_a_kill_for(&p, "accept_lock"), "{mechanism}: ?json says why: {:?}", p.slots());
        assert!(serve_both(&p.addrs, Duration::from_secs(2)).is_some(), "{mechanism}: still serving");
        eprintln!(
            "RESULT stopped-lock-holder {mechanism}: {rounds} stops, both listeners answered after {} (watchdog 300 ms + tick 100 ms)",
            summary(times)
        );
    }
}

/// Under load the lock passes from child to child faster than a status page can be read, so a
/// single stop rarely lands on the holder. Instead every idle child is stopped at once: the holder
/// is among them whenever it is waiting for connections. If one of them dies within a second, the
/// watchdog found it holding the lock; the others (idle or waiting for the lock) are continued.
/// Returns the killed holder and how long from the stops until both listeners answered (a request
/// sent on each just after the stops).
fn stop_every_idle_child(p: &Preforkd, stopped: &mut Vec<u32>) -> Option<(u32, Duration)> {
    let idle: Vec<u32> = p.slots().into_iter().filter(|s| s.letter == '_').map(|s| s.pid).collect();
    for &c in &idle {
        signal(c, Signal::SIGSTOP);
    }
    stopped.extend(&idle);
    let probe = {
        let addrs = p.addrs.clone();
        std::thread::spawn(move || serve_both(&addrs, Duration::from_secs(5)))
    };
    let mut killed = None;
    wait_until(Duration::from_secs(1), || {
        killed = idle.iter().copied().find(|&c| !alive(c));
        killed.is_some()
    });
    for &c in &idle {
        signal(c, Signal::SIGCONT);
    }
    let answered = probe.join().unwrap();
    let killed = killed?;
    let answered = answered.unwrap_or_else(|| panic!("not serving after the stopped holder {killed} was killed"));
    Some((killed, answered))
}

#[test]
fn a_stopped_holder_under_load_costs_no_request_but_its_own() {
    let _s = serial();
    let rounds = 5 * scale();
    for mechanism in MECHANISMS {
        let p = two_listeners(
            mechanism,
            &["--start-servers", "6", "--min-spare-servers", "4", "--max-spare-servers", "10"],
        );
        let load = Load::start(&p.addrs, 4, Mode::KeepAlive, "/");
        assert!(load.progresses(50, Duration::from_secs(5)));
        let mut times = vec![];
        let mut stopped = vec![];
        let mut tries = 0;
        while times.len() < rounds {
            tries += 1;
            assert!(tries <= 20 * rounds, "{mechanism}: the holder was never among the idle children");
            let Some((holder, took)) = stop_every_idle_child(&p, &mut stopped) else {
                continue; // the holder was busy accepting at that moment: nothing wedged
            };
            times.push(took);
            assert!(wait_until(Duration::from_secs(2), || !alive(holder)), "{mechanism}: the stopped holder is gone");
            assert!(load.progresses(20, Duration::from_secs(3)), "{mechanism}: the load goes on");
        }
        let t = load.stop();
        only_stopped_children_were_killed(&p, &stopped, mechanism);
        // A child stopped right after accepting holds one connection; nothing else may fail.
        assert!(
            t.failures.len() <= rounds,
            "{mechanism}: {} failures for {rounds} stops: {:?}",
            t.failures.len(),
            t.failures
        );
        eprintln!(
            "RESULT stopped-lock-holder-under-load {mechanism}: {rounds} wedges ({tries} tries), {} requests, {} failed, both listeners answered after {}",
            t.ok + t.failures.len() as u64,
            t.failures.len(),
            summary(times)
        );
    }
}

#[test]
fn stopping_an_idle_child_or_a_kept_alive_one_kills_nothing() {
    let _s = serial();
    for mechanism in MECHANISMS {
        stop_an_idle_child_and_a_kept_alive_one(mechanism);
    }
}

fn stop_an_idle_child_and_a_kept_alive_one(mechanism: &str) {
    let p =
        two_listeners(mechanism, &["--start-servers", "6", "--min-spare-servers", "4", "--max-spare-servers", "10"]);
    // A child serving a kept-alive connection, waiting for its next request (K).
    let mut kept = Client::connect(p.addrs[0]).unwrap();
    kept.set_read_timeout(Duration::from_secs(5));
    assert_eq!(kept.request("GET / HTTP/1.1\r\nHost: k\r\n\r\n").unwrap().status, 200);
    let mut in_k = None;
    assert!(wait_until(Duration::from_secs(2), || {
        in_k = p.slots().into_iter().find(|s| s.letter == 'K').map(|s| s.pid);
        in_k.is_some()
    }));
    let in_k = in_k.unwrap();
    signal(in_k, Signal::SIGSTOP);
    // An idle child that does not hold the lock: the status page can be a moment late (the lock
    // passes from child to child all the time), so the choice is checked once it is stopped, and a
    // child that turned out to hold the lock after all is continued and another one tried. Its
    // slot cannot tell everything: the kernel may grant the lock in the instant before the stop,
    // before the child could say so in its slot. Then the watchdog (which asks the kernel) rightly
    // kills it once connections wait: so each choice is kept stopped under load past the limit,
    // and a choice the watchdog killed is counted out and another one tried.
    let mut idle = None;
    for _ in 0..50 {
        let Some(c) = p.slots().into_iter().find(|s| s.letter == '_' && !s.holds_lock && alive(s.pid)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        signal(c.pid, Signal::SIGSTOP);
        if !(p.slots().iter().any(|s| s.pid == c.pid && !s.holds_lock) && alive(c.pid)) {
            signal(c.pid, Signal::SIGCONT);
            continue;
        }
        let kills = watchdog_kills(&p);
        let until = Instant::now() + WATCHDOG * 3;
        while Instant::now() < until {
            assert!(serve_both(&p.addrs, Duration::from_secs(2)).is_some(), "{mechanism}: serving goes on");
        }
        if alive(c.pid) {
            assert_eq!(
                watchdog_kills(&p),
                kills,
                "{mechanism}: a child that was not stopped was killed:\n{}",
                p.stderr()
            );
            idle = Some(c.pid);
            break;
        }
        eprintln!("{mechanism}: child {} held the lock by the kernel's word when stopped; trying another", c.pid);
    }
    let idle = idle.expect("an idle child without the lock");
    let kills_before = watchdog_kills(&p);
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < WATCHDOG * 5 {
        assert!(serve_both(&p.addrs, Duration::from_secs(2)).is_some(), "{mechanism}: serving goes on");
        served += 2;
    }
    assert_eq!(watchdog_kills(&p), kills_before, "{mechanism}: nothing was killed:\n{}", p.stderr());
    assert!(alive(in_k) && alive(idle), "both stopped children are still there");
    signal(in_k, Signal::SIGCONT);
    signal(idle, Signal::SIGCONT);
    assert_eq!(kept.request("GET / HTTP/1.1\r\nHost: k\r\n\r\n").unwrap().status, 200, "the kept-alive client goes on");
    eprintln!("RESULT stopped-idle-and-keepalive {mechanism}: {served} requests served meanwhile, 0 kills");
}

#[test]
fn a_slow_holder_that_keeps_accepting_is_never_killed() {
    let _s = serial();
    // One child, so it is the holder whenever it waits. It is stopped for 150 ms out of every
    // 300 (half the 300 ms limit at a time), while clients keep coming.
    let p = two_listeners(
        "auto",
        &["--start-servers", "1", "--min-spare-servers", "1", "--max-spare-servers", "2", "--max-request-workers", "1"],
    );
    let child = p.slots()[0].pid;
    let load = Load::start(&p.addrs, 2, Mode::Close, "/");
    let throttle_until = Instant::now() + Duration::from_secs(3);
    let mut cycles = 0;
    while Instant::now() < throttle_until {
        signal(child, Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(150));
        signal(child, Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(150));
        cycles += 1;
    }
    let t = load.stop();
    assert!(alive(child), "the slow holder was killed:\n{}", p.stderr());
    assert_eq!(watchdog_kills(&p), 0, "{}", p.stderr());
    assert!(t.ok > 0 && t.failures.is_empty(), "{} ok, failures {:?}", t.ok, t.failures);
    eprintln!("RESULT slow-holder: {cycles} stop/continue cycles of 150/150 ms, {} requests served, 0 kills", t.ok);
}

#[test]
fn a_request_past_request_deadline_is_killed_and_the_reason_shown() {
    let _s = serial();
    // A client that sends half a request head and then nothing keeps a child reading (R) for up
    // to request_read_timeout (20 s here); request_deadline (1 s) ends that child sooner.
    let p = Preforkd::start(&[
        // Children read the heads themselves (behind the gate, SPEC.md §15, a slow or idle
        // connection holds no child).
        "--accept-filter",
        "data",
        "--start-servers",
        "3",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "6",
        "--maintenance-interval-ms",
        "100",
        "--request-deadline",
        "1",
    ]);
    let mut slow = Client::connect(p.addr()).unwrap();
    slow.send(b"GET /never-finished HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut victim = None;
    assert!(wait_until(Duration::from_secs(2), || {
        victim = p.slots().into_iter().find(|s| s.letter == 'R' && s.request.is_empty()).map(|s| s.pid);
        victim.is_some()
    }));
    let victim = victim.unwrap();
    let started = Instant::now();
    // Everyone else is served meanwhile.
    while started.elapsed() < Duration::from_millis(800) {
        assert_eq!(p.get("/").status, 200);
    }
    assert!(wait_until(Duration::from_secs(3), || !alive(victim)), "the child stuck in a request is gone");
    let took = started.elapsed();
    assert!(slow.closed_within(Duration::from_secs(2)), "its connection ends with it");
    assert!(a_slot_shows_a_kill_for(&p, "request_deadline"), "?json says why: {:?}", p.slots());
    let log = p.stderr();
    assert!(log.contains(&format!("child {victim} (slot")) && log.contains("(request_deadline): killing it"), "{log}");
    let json: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
    assert_eq!(json["watchdog_kills"]["request_deadline"], 1);
    assert_eq!(json["listeners"][0]["queue_exact"], true, "{json}");
    assert!(json["listeners"][0]["queue"].is_u64() && json["listeners"][0]["backlog"].is_u64(), "{json}");
    assert!(p.get("/server-status").text().contains("request_deadline, "), "the HTML page shows it too");
    assert!(p.get("/metrics").text().contains("prefork_watchdog_kills_total{reason=\"request_deadline\"} 1"));
    eprintln!(
        "RESULT request-deadline: a child stuck reading a request head killed {took:?} after it showed R (deadline 1 s, tick 100 ms)"
    );
}
