//! The pool tier's safety mechanisms (CONFORMANCE.md): what keeps a pool alive when its children,
//! the system or its clients misbehave, seen from outside through the contract's flags, signals,
//! the error log and `/proc` only, so that a port that leaves one out fails here instead of
//! passing the rest of the tier:
//!
//! * the crash-loop brake (SPEC.md §7.7): children that die right after they start are not forked
//!   again at the spawn rate, forever;
//! * the fork-failure pause (§7.7): a failed `fork()` pauses spawning, doubling, and the pool comes
//!   back once forks succeed;
//! * `max_connections_per_child` (§6.4, §8): a child is replaced after N connections;
//! * `graceful_shutdown_timeout` (§7.5, §8): a graceful stop with a busy child ends by then;
//! * the stall watchdog (§7.8): a stopped accept-lock holder is killed and both listeners answer
//!   within `accept_lock_timeout_ms` and a tick;
//!
//! and the optional features a port declares (`--conformance-features`): `demand` (§5.1a).
//!
//! The brake and the fork-failure tests print a results line (`RESULT ...`) for the table.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One at a time: they count processes and time ticks.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection that a child has accepted and is reading a head from, which never completes:
/// the child stays busy (`R`) until `timeout` (60 s by default).
fn unfinished_head(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: conformance\r\n").expect("part of a head");
    s
}

/// The times (since `start`) at which the error log gained a line containing `needle`, watched
/// every 20 ms for `d`.
fn log_lines_over(p: &Preforkd, needle: &str, start: Instant, d: Duration) -> Vec<Duration> {
    let mut seen = p.stderr().matches(needle).count();
    let mut at = vec![];
    while start.elapsed() < d {
        let n = p.stderr().matches(needle).count();
        at.extend(std::iter::repeat_n(start.elapsed(), n.saturating_sub(seen)));
        seen = seen.max(n);
        std::thread::sleep(Duration::from_millis(20));
    }
    at
}

/// Groups times less than 300 ms apart (one attempt to fork several children) into bursts; the
/// time each burst began.
fn bursts(times: &[Duration]) -> Vec<Duration> {
    let mut out: Vec<Duration> = vec![];
    for &t in times {
        if out.last().is_none_or(|&b| t - b >= Duration::from_millis(300)) {
            out.push(t);
        }
    }
    out
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// SPEC §7.7: three early exits in a row pause spawning for 1 s, each further one doubling it.
/// Every child the server forks is sent SIGALRM as soon as it appears (a signal nobody sends on
/// purpose: a crash, SPEC §7.3), before it can be healthy. With the brake, the forks thin out
/// (1, 2, 4, 8 s apart); without it, the policy forks at its rate every tick.
#[test]
fn children_that_die_at_start_are_braked_then_the_pool_recovers() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--accept-filter",
        "data",
        "--start-servers",
        "2",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "4",
        "--max-request-workers",
        "16",
    ]);
    let start = Instant::now();
    let window = Duration::from_secs(12);
    let mut born: BTreeMap<u32, Duration> = BTreeMap::new();
    while start.elapsed() < window {
        for c in live_children_of(p.pid) {
            if let std::collections::btree_map::Entry::Vacant(e) = born.entry(c) {
                e.insert(start.elapsed());
                signal(c, Signal::SIGALRM);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut births: Vec<Duration> = born.values().copied().collect();
    births.sort();
    let forks = bursts(&births);
    let widest = gaps(&forks).into_iter().max().unwrap_or_default();
    eprintln!(
        "RESULT crash-loop: {} children forked in {window:?} of crashing children, widest pause {widest:?}",
        births.len()
    );
    assert!(
        births.len() >= 4,
        "the server must keep trying while children crash (SPEC §7.7: a pause, not a stop): {} forks in {window:?}",
        births.len()
    );
    assert!(
        births.len() <= 10 && widest >= Duration::from_millis(1800),
        "the crash-loop brake (SPEC §7.7) must thin out the forks of children that die at start: \
         {} forks in {window:?} at {births:?}, widest pause {widest:?} (expected at most 10, and pauses growing 1, 2, 4, 8 s: one of at least 1.8 s, where the policy alone forks every tick)",
        births.len()
    );
    // Children that no longer crash: the pause in force ends (after n early exits in a row it is
    // 2^(n-3) s), a healthy child resets the brake, and the pool fills again.
    let pause = Duration::from_secs(1 << births.len().saturating_sub(3).min(6));
    assert!(
        wait_until(pause + Duration::from_secs(5), || live_children_of(p.pid).len() >= 2),
        "once children stop crashing the pool comes back within the pause in force ({pause:?}) and a few ticks \
         (children: {:?})",
        live_children_of(p.pid)
    );
    assert!(p.serving_again_within(Duration::from_secs(5)).is_some(), "and serves");
}

/// A pids cgroup of the test's own (cgroup v1's `pids` hierarchy, or v2 with the `pids`
/// controller): `pids.max` bounds how many processes its members may have, root or not, so a
/// fork beyond it fails with `EAGAIN`. Removed when dropped.
struct PidsCgroup {
    dir: PathBuf,
    procs: std::ffi::CString,
}

impl PidsCgroup {
    fn create(max: &str) -> Option<PidsCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let root = if v1.join("cgroup.procs").exists() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control")).is_ok_and(|c| c.contains("pids")) {
            v2
        } else {
            return None;
        };
        let dir = root.join(format!("prefork-conformance-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup { procs: std::ffi::CString::new(dir.join("cgroup.procs").to_str()?).ok()?, dir };
        cg.set_max(max).then_some(cg)
    }

    fn set_max(&self, max: &str) -> bool {
        std::fs::write(self.dir.join("pids.max"), max).is_ok()
    }

    /// Joins the calling process to the cgroup; for `pre_exec` (no allocation after `fork()`).
    fn join_self(procs: &std::ffi::CStr) -> std::io::Result<()> {
        let mut digits = [0u8; 12];
        let mut n = unsafe { libc::getpid() } as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let wrote = libc::write(fd, digits[i..].as_ptr().cast(), digits.len() - i);
            libc::close(fd);
            if wrote < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = self.set_max("max");
        wait_until(Duration::from_secs(5), || std::fs::remove_dir(&self.dir).is_ok());
    }
}

/// SPEC §7.7: a failed `fork()` pauses spawning for 1 s, doubling to 10 s, and logs AH00159. The
/// server runs in a pids cgroup of its own; once it is up, `pids.max` becomes 1 and its children
/// are killed, so that every fork to replace them fails; then the limit is lifted and the pool must
/// come up.
#[test]
fn a_fork_failure_pauses_spawning_and_the_pool_comes_up_when_forks_succeed() {
    let _s = serial();
    let Some(cgroup) = PidsCgroup::create("max") else {
        eprintln!(
            "skipped: the fork-failure test needs a writable pids cgroup (/sys/fs/cgroup/pids, or cgroup v2 with pids) to make fork() fail"
        );
        return;
    };
    let procs = cgroup.procs.clone();
    let p = Preforkd::start_with(
        &["--accept-filter", "data", "--start-servers", "3", "--min-spare-servers", "2", "--max-spare-servers", "4"],
        move |bin, args| {
            let mut cmd = std::process::Command::new(bin);
            cmd.args(args);
            unsafe {
                cmd.pre_exec(move || PidsCgroup::join_self(&procs));
            }
            cmd
        },
    );
    // Up (a port may fork while it starts: an interpreter's launcher); now no fork succeeds, and
    // the children are killed so that the server has to fork.
    assert!(cgroup.set_max("1"), "setting pids.max");
    for c in live_children_of(p.pid) {
        signal(c, Signal::SIGKILL);
    }
    let start = Instant::now();
    let window = Duration::from_secs(10);
    let failures = log_lines_over(&p, "AH00159", start, window);
    let tries = bursts(&failures);
    let forks = live_children_of(p.pid).len();
    eprintln!("RESULT fork-failure: {} attempts to fork in {window:?} of failing forks, at {tries:?}", tries.len());
    assert_eq!(forks, 0, "every fork fails with pids.max 1");
    assert!(
        tries.len() >= 2,
        "each failed fork logs AH00159 and the server keeps trying (SPEC §7.7): attempts at {tries:?}\n{}",
        p.stderr()
    );
    assert!(
        tries.len() <= 5 && gaps(&tries).into_iter().max().is_some_and(|g| g >= Duration::from_millis(1800)),
        "a failed fork pauses spawning for 1 s, doubling (SPEC §7.7): attempts at {tries:?} in {window:?} \
         (expected at most 5, and a pause of at least 1.8 s, where the policy alone tries every tick)"
    );
    assert!(cgroup.set_max("max"), "lifting pids.max");
    assert!(
        wait_until(Duration::from_secs(15), || live_children_of(p.pid).len() >= 2),
        "once forks succeed the pool comes up (the pause is at most 10 s): children {:?}",
        live_children_of(p.pid)
    );
    assert!(p.serving_again_within(Duration::from_secs(5)).is_some(), "and serves");
    drop(p);
}

/// SPEC §6.4, §8: a child leaves after `max_connections_per_child` connections and is replaced.
/// 30 connections one after another with a limit of 3 need at least 10 children; every child that
/// serves one is alive just before or just after it, so a look at both moments sees it.
#[test]
fn children_are_replaced_after_max_connections_per_child() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--max-connections-per-child",
        "3",
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
    ]);
    let mut seen = std::collections::BTreeSet::new();
    let connections = 30;
    for i in 0..connections {
        seen.extend(live_children_of(p.pid));
        let r = request(p.addr(), "GET / HTTP/1.1\r\nHost: conformance\r\nConnection: close\r\n\r\n");
        assert!(r.as_ref().is_ok_and(|r| r.status == 200), "connection {i}: {r:?}");
        seen.extend(live_children_of(p.pid));
    }
    assert!(
        seen.len() >= connections / 3,
        "{connections} connections with max_connections_per_child 3 need at least {} children; {} were seen",
        connections / 3,
        seen.len()
    );
    assert!(p.serving_again_within(Duration::from_secs(5)).is_some(), "the replacements serve");
}

/// SPEC §7.5, §8: a graceful stop waits for busy children, but no longer than
/// `graceful_shutdown_timeout`; then the rest are stopped and the parent exits.
#[test]
fn a_graceful_stop_with_a_busy_child_ends_at_graceful_shutdown_timeout() {
    let _s = serial();
    let mut p = Preforkd::start(&[
        "--accept-filter",
        "data",
        "--graceful-shutdown-timeout",
        "2",
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "4",
    ]);
    let _held = unfinished_head(p.addr());
    // The head's first bytes are in; a child has accepted it once the parent's children include
    // one whose socket count grew. Simplest from outside: give the accept a moment.
    std::thread::sleep(Duration::from_millis(500));
    let children = live_children_of(p.pid);
    let sent = Instant::now();
    p.signal(Signal::SIGWINCH);
    let status = p.wait(Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(status.is_some(), "a graceful stop with graceful_shutdown_timeout 2 did not end within 10 s");
    assert!(
        took >= Duration::from_millis(1500),
        "the graceful stop ended after {took:?}: it must wait for the busy child until graceful_shutdown_timeout (2 s)"
    );
    assert!(
        took <= Duration::from_millis(4500),
        "the graceful stop took {took:?}; graceful_shutdown_timeout is 2 s (and a tick)"
    );
    assert!(
        wait_until(Duration::from_secs(2), || children.iter().all(|&c| !alive(c))),
        "children left after the graceful stop: {:?}",
        children.iter().filter(|&&c| alive(c)).collect::<Vec<_>>()
    );
}

/// SPEC §7.8: a child stopped while it holds the accept lock, with connections waiting, is killed
/// after `accept_lock_timeout_ms`, and both listeners answer again within that and a tick.
#[test]
fn a_stopped_accept_lock_holder_is_killed_and_both_listeners_answer_within_the_watchdog_limit() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--accept-filter",
        "data",
        "--accept-mutex",
        "fcntl",
        "--accept-lock-timeout-ms",
        "1000",
        "--start-servers",
        "3",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "6",
    ]);
    assert_eq!(p.addrs.len(), 2, "two listeners");
    let mut holder = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let children = live_children_of(p.pid);
            holder = posix_lock_holders().into_iter().find(|h| children.contains(h));
            holder.is_some()
        }),
        "no child holds the fcntl accept lock (/proc/locks)"
    );
    let holder = holder.unwrap();
    signal(holder, Signal::SIGSTOP);
    // If the holder let go between the look and the stop, another child holds it: no wedge to
    // find. /proc/locks says whether the stopped child still holds it.
    let wedged = posix_lock_holders().contains(&holder);
    let served = p.serving_again_within(Duration::from_secs(8));
    let gone = wait_until(Duration::from_secs(3), || !alive(holder));
    signal(holder, Signal::SIGKILL);
    eprintln!(
        "RESULT watchdog: holder {holder} stopped (held the lock: {wedged}), both listeners served after {served:?}"
    );
    let served = served.expect("both listeners must answer again while the lock holder is stopped (SPEC §7.8)");
    assert!(served <= Duration::from_millis(3500), "both listeners answered after {served:?}; limit 1 s and a tick");
    if wedged {
        assert!(gone, "the stopped holder {holder} must be killed by the watchdog (SPEC §7.8)");
    }
}

/// Optional feature `demand` (SPEC §5.1a): while connections wait, the parent forks for them at
/// once instead of at the ramp's 1, 2, 4, 8 per tick. 12 clients hold children with unfinished
/// heads; the pool must grow to 12 within 1.5 s (the ramp needs four ticks).
#[test]
fn demand_spawning_forks_for_waiting_connections_within_a_tick() {
    let _s = serial();
    if !declared_features().iter().any(|f| f == "demand") {
        eprintln!("skipped: the binary under test does not declare the optional feature `demand`");
        return;
    }
    let p = Preforkd::start(&[
        "--accept-filter",
        "data",
        "--spawn-mode",
        "demand",
        "--start-servers",
        "1",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
        "--max-request-workers",
        "32",
    ]);
    assert!(wait_until(Duration::from_secs(3), || live_children_of(p.pid).len() <= 2));
    let sent = Instant::now();
    let _held: Vec<TcpStream> = (0..12).map(|_| unfinished_head(p.addr())).collect();
    let grew = wait_until(Duration::from_millis(1500), || live_children_of(p.pid).len() >= 12);
    eprintln!("RESULT demand: {} children {:?} after 12 clients came", live_children_of(p.pid).len(), sent.elapsed());
    assert!(grew, "12 waiting clients: the pool has {} children after 1.5 s", live_children_of(p.pid).len());
}
