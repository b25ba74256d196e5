//! A flood of connections (as a SYN flood that completes its handshakes, or a crowd of idle
//! clients): the pool grows to `max_request_workers` and never past it, forks no faster than
//! `fork_rate_limit`, and serves again once the flood is gone.

use prefork_tests::*;
use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A connection started without waiting for it (a SYN sent; the handshake completes in the
/// kernel, or the SYN waits for room in the accept queue).
fn connect_nonblocking(addr: std::net::SocketAddr) -> Option<OwnedFd> {
    let std::net::SocketAddr::V4(v4) = addr else { return None };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(fd, (&raw const sa).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t);
        let in_progress = rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS);
        (rc == 0 || in_progress).then_some(owned)
    }
}

/// User plus system CPU time of a process (from /proc/PID/stat, in clock ticks of 10 ms).
fn parent_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_flood_of_connections_never_forks_past_max_request_workers_or_the_fork_rate_limit() {
    let p = Preforkd::start(&[
        // Children read the heads themselves (behind the gate, SPEC.md §15, a slow or idle
        // connection holds no child).
        "--accept-filter",
        "data",
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "4",
        "--max-request-workers",
        "24",
        "--server-limit",
        "24",
        "--fork-rate-limit",
        "10",
        "--request-read-timeout",
        "5",
    ]);
    // As many connections as the file-descriptor limit comfortably allows (2000 on CI), opened
    // at once; none sends a byte, so each holds a child until request_read_timeout (5 s: past the
    // 4 s watched below).
    let limit =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let n = (limit.saturating_sub(200) as usize).clamp(200, 2000);
    // The children before the flood (taken after it, the first forks may already be among them).
    let mut seen: BTreeSet<u32> = children_of(p.pid).into_iter().collect();
    let initial = seen.len();
    let started = Instant::now();
    let flood: Vec<std::os::fd::OwnedFd> = (0..n).filter_map(|_| connect_nonblocking(p.addr())).collect();
    eprintln!("{} of {n} connections started after {:?}", flood.len(), started.elapsed());
    // Watch the children for 4 s (the pool needs a little over 2 s at 10 forks per second): never more than max_request_workers; every pid seen is a fork.
    let mut most = 0;
    let mut forks_by_second: Vec<usize> = vec![0; 5];
    while started.elapsed() < Duration::from_secs(4) {
        let now = children_of(p.pid);
        most = most.max(now.len());
        for pid in now {
            if seen.insert(pid) {
                forks_by_second[(started.elapsed().as_secs() as usize).min(4)] += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("at most {most} children; forks in each second: {forks_by_second:?}");
    assert!(most <= 24, "{most} children, max_request_workers 24");
    assert_eq!(seen.len() - initial, 22, "the pool grew to max_request_workers: {} new children", seen.len() - initial);
    // fork_rate_limit 10: no window of a second has more than 10 forks, so the first second holds at most 10
    // (the children before the flood were counted before it began).
    assert!(forks_by_second[0] <= 10, "{forks_by_second:?}");
    assert!(p.stderr().contains("server reached MaxRequestWorkers setting"), "{}", p.stderr());
    // The host stays responsive: the parent did not spin (its CPU time over the flood).
    let cpu = parent_cpu(p.pid);
    eprintln!("parent CPU time so far: {cpu:?}");
    assert!(cpu < Duration::from_millis(1500), "the parent used {cpu:?} of CPU during a 4 s flood");
    // The flood leaves, with resets (SO_LINGER 0), and the pool serves again: each connection
    // left in the queue is accepted and found reset. (Closed with FINs instead, the pool served
    // again within a few ms here but not within 30 s in two CI runs, not reproduced. The likely
    // cause: a connection whose handshake the full queue held back can reach a child before the
    // client's retransmitted FIN does, and each such one holds a child up to
    // request_read_timeout, so the time depends on the kernel's retransmission timing. A failure
    // prints what the children were doing.)
    for fd in &flood {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a descriptor `flood` owns, with a properly sized value.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    drop(flood);
    let left = Instant::now();
    let served = wait_until(Duration::from_secs(30), || {
        request(p.addr(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_ok_and(|r| r.status == 200)
    });
    eprintln!("served again {:?} after the flood left", left.elapsed());
    if !served {
        for c in children_of(p.pid) {
            let state = proc_state(c).unwrap_or('?');
            let wchan = std::fs::read_to_string(format!("/proc/{c}/wchan")).unwrap_or_default();
            let fds = std::fs::read_dir(format!("/proc/{c}/fd")).map_or(0, |d| d.count());
            eprintln!("child {c}: state {state}, wchan {wchan}, {fds} fds");
        }
        if let Ok(o) = std::process::Command::new("ss").args(["-tan"]).output() {
            let port = format!(":{} ", p.addr().port());
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for l in String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains(&port)) {
                *states.entry(l.split_whitespace().next().unwrap_or("?").to_string()).or_default() += 1;
            }
            eprintln!("sockets on the port by state: {states:?}");
        }
    }
    assert!(served, "the server does not serve 30 s after the flood left:\n{}", p.stderr());
}
