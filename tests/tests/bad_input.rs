//! Hostile and broken input, from the outside: slowloris, clients that vanish mid-request, path
//! traversal in every encoding, and configurations that cannot start. The pool keeps serving
//! other clients; a server that cannot start leaves nothing behind.

use prefork_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn served_within(p: &Preforkd, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let ok = wait_until(limit, || {
        let Ok(mut c) = Client::connect(p.addr()) else { return false };
        c.set_read_timeout(limit.saturating_sub(t0.elapsed()).max(Duration::from_millis(100)));
        c.request("GET / HTTP/1.1\r\nHost: normal\r\nConnection: close\r\n\r\n").is_ok_and(|r| r.status == 200)
    });
    ok.then(|| t0.elapsed())
}

/// Twice as many slowloris connections as the pool has children, each trickling one header line
/// a second and never finishing, with the children reading heads (`accept_filter = "data"`):
/// `request_read_timeout` cuts them off (408) and normal clients are served again.
#[test]
fn slowloris_is_cut_off_by_request_read_timeout_and_the_pool_serves_again() {
    slowloris("data");
}

/// The same behind the gate (preforkd's default, SPEC.md §15): normal clients are served at once,
/// while the attackers trickle; the gate cuts every attacker off at `request_read_timeout` (408).
#[test]
fn behind_the_gate_slowloris_never_holds_a_child_and_is_cut_off_by_request_read_timeout() {
    slowloris("httpready");
}

fn slowloris(filter: &str) {
    let _s = serial();
    let limit = 8;
    let gated = filter == "httpready";
    let p = Preforkd::start(&[
        "--accept-filter",
        filter,
        "--start-servers",
        "8",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "8",
        "--max-request-workers",
        "8",
        "--server-limit",
        "8",
        "--request-read-timeout",
        "2",
    ]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..2 * limit)
        .map(|i| {
            let (addr, stop) = (p.addr(), stop.clone());
            std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(addr) else { return "connect failed".to_string() };
                if c.send(b"GET / HTTP/1.1\r\nHost: loris\r\n").is_err() {
                    return "refused at once".into();
                }
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return "still open at the end".into();
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    if c.send(format!("X-{i}-{n}: y\r\n").as_bytes()).is_err() {
                        break;
                    }
                }
                match c.read_response(false) {
                    Ok(r) => format!("{}", r.status),
                    Err(_) => "closed".into(),
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Without the gate every child is taken; a normal client waits until the attackers are cut
    // off: two rounds of request_read_timeout (2 s) plus lingering close (up to 2 s) at most.
    // Behind the gate it is served at once, and the attackers run into their own deadline.
    let served = served_within(&p, Duration::from_secs(if gated { 1 } else { 12 }));
    if gated {
        std::thread::sleep(Duration::from_secs(3));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes: Vec<String> = attackers.into_iter().map(|h| h.join().unwrap()).collect();
    let served = served.unwrap_or_else(|| panic!("normal clients not served again; attackers: {outcomes:?}"));
    // Those still trickling when a normal client got through were accepted after the first
    // round was cut off; their own deadline runs.
    assert!(outcomes.iter().all(|o| o == "408" || o == "closed" || o == "still open at the end"), "{outcomes:?}");
    let cut_off = outcomes.iter().filter(|o| *o == "408").count();
    assert!(cut_off >= if gated { 2 * limit } else { limit }, "{outcomes:?}");
    assert!(served_within(&p, Duration::from_secs(1)).is_some(), "serving normally afterwards");
    eprintln!(
        "RESULT slowloris (accept_filter {filter}): {} trickling connections against {limit} children, a normal client served after {served:?}; attackers got {:?}",
        2 * limit,
        outcomes
    );
}

/// Clients that send part of a request and vanish never hold a child.
#[test]
fn clients_that_vanish_mid_request_do_not_hold_children() {
    let _s = serial();
    let p = Preforkd::start(&["--start-servers", "4", "--max-request-workers", "8", "--server-limit", "8"]);
    let pieces: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET /index.html HT",
        b"G",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a part",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];
    for round in 0..50 {
        let mut c = Client::connect(p.addr()).unwrap();
        c.send(pieces[round % pieces.len()]).unwrap();
        drop(c);
    }
    let served = served_within(&p, Duration::from_secs(1));
    assert!(served.is_some(), "a normal client is served at once");
    assert!(
        wait_until(Duration::from_secs(2), || p
            .slots()
            .iter()
            .filter(|s| s.letter == 'R' && s.request.is_empty())
            .count()
            == 0),
        "no child left reading a vanished client: {:?}",
        p.slots()
    );
    eprintln!(
        "RESULT vanishing-clients: 50 half requests then gone; a normal client served after {:?}",
        served.unwrap()
    );
}

/// Path traversal in every encoding we know of: never the file outside the root.
#[test]
fn path_traversal_in_every_encoding_never_leaves_the_root() {
    let _s = serial();
    let base = tempdir("traversal");
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), "home").unwrap();
    std::fs::write(base.join("secret"), "TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(base.join("secret"), root.join("link")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("sub/rel")).unwrap();
    std::os::unix::fs::symlink(&base, root.join("basedir")).unwrap();
    let p = Preforkd::start(&["--document-root", root.to_str().unwrap()]);
    let targets = [
        "/../secret",
        "/sub/../../secret",
        "//../secret",
        "/./../secret",
        "/%2e%2e/secret",
        "/%2E%2e/secret",
        "/.%2e/secret",
        "/%2e./secret",
        "/..%2fsecret",
        "/%2e%2e%2fsecret",
        "/sub%2f..%2f..%2fsecret",
        "/%252e%252e/secret",
        "/%c0%ae%c0%ae/secret",
        "/%c0%2e%c0%2e/secret",
        "/..%5csecret",
        "/..\\secret",
        "/..;/secret",
        "/.../secret",
        "/%00/../secret",
        "/secret%00.html",
        "/link",
        "/sub/rel",
        "/basedir/secret",
        "http://x/../secret",
        "http://x/%2e%2e/secret",
        "../secret",
        "*",
    ];
    let mut codes = std::collections::BTreeMap::new();
    for t in targets {
        let r = request(p.addr(), &format!("GET {t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{t}: {e}"),
        };
        assert!(!r.text().contains("TOP-SECRET"), "{t} leaked the file outside the root");
        assert!(matches!(r.status, 400 | 403 | 404), "{t}: {}", r.status);
        *codes.entry(r.status).or_insert(0) += 1;
        assert_eq!(p.get("/").text(), "home", "the pool serves after {t}");
    }
    std::fs::remove_dir_all(base).unwrap();
    eprintln!("RESULT traversal: {} encodings, answers {codes:?}, nothing outside the root", targets.len());
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker) && !is_zombie(*pid))
        })
        .collect()
}

/// Starts preforkd with `args` (plus a unique marker), expecting it to refuse: the exit code,
/// and the standard error.
fn refused(args: &[&str]) -> (i32, String) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let marker = format!("marker-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut child = Command::new(preforkd_bin())
        .args(args)
        .args(["--server-name", &marker])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{args:?} did not exit: it started?");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let left = processes_with(&marker);
    for &pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(left.is_empty(), "{args:?} left processes behind: {left:?}\n{err}");
    (status.code().unwrap_or(-1), err)
}

/// Configurations that parse but cannot run, and invalid flag values: a clear message, a
/// non-zero exit, nothing left running, no port left bound.
#[test]
fn configurations_that_cannot_start_fail_clearly_and_leave_nothing_behind() {
    let _s = serial();
    let dir = tempdir("refuse");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let not_socket = dir.join("not-a-socket");
    std::fs::write(&not_socket, "keep me").unwrap();
    let unix_not_socket = format!("unix:{}", not_socket.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--listen", &taken_addr], "Address already in use"),
        (vec!["--listen", &free, "--listen", &taken_addr], "Address already in use"),
        (vec!["--listen", "127.0.0.1:0", "--pid-file", "/nonexistent/dir/p.pid"], "pid file"),
        (vec!["--listen", "127.0.0.1:0", "--access-log", "/nonexistent/dir/a.log"], "/nonexistent/dir/a.log"),
        (vec!["--listen", "127.0.0.1:0", "--error-log", "/nonexistent/dir/e.log"], "error_log /nonexistent/dir/e.log"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--accept-mutex",
                "fcntl",
                "--lock-dir",
                "/nonexistent/dir",
            ],
            "fcntl accept lock in /nonexistent/dir",
        ),
        (vec!["--listen", "unix:/nonexistent/dir/s.sock"], "unix:/nonexistent/dir/s.sock"),
        (vec!["--listen", &unix_not_socket], "exists and is not a socket"),
        (vec!["--listen", "127.0.0.1:0", "--user", "no-such-user-xyz"], "does not exist"),
        (vec!["--listen", ""], "listen"),
        (vec!["--listen", "127.0.0.1:99999"], "listen"),
        (vec!["--timeout", "soon"], "--timeout"),
        (vec!["--keep-alive", "maybe"], "--keep-alive"),
        (
            vec!["--types-config", "/nonexistent/mime.types"],
            "types_config = \"/nonexistent/mime.types\" cannot be read",
        ),
        (vec!["--max-ranges=-1"], "max_ranges = -1 is out of range"),
        (vec!["--max-request-workers", "-"], "--max-request-workers"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--config", "/nonexistent/preforkd.toml"], "/nonexistent/preforkd.toml"),
    ];
    for (args, expect) in &cases {
        let (code, err) = refused(args);
        assert_ne!(code, 0, "{args:?} started:\n{err}");
        assert!(err.contains(expect), "{args:?}: expected {expect:?} in:\n{err}");
    }
    assert_eq!(std::fs::read_to_string(&not_socket).unwrap(), "keep me", "a file at a socket path is never deleted");
    // Nothing kept the free port of the half-bound case.
    assert!(std::net::TcpListener::bind(&free).is_ok(), "{free} is still bound");
    drop(taken);
    std::fs::remove_dir_all(dir).unwrap();
    eprintln!(
        "RESULT refused-starts: {} invalid configurations and flags, each refused, nothing left behind",
        cases.len()
    );
}
