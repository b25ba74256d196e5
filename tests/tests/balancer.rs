//! Behind a load balancer (issue 24, SPEC.md §7.10): the agent check, and Debian's HAProxy in
//! front of two preforkd. The HAProxy tests say SKIPPED where it is not installed (`.ci/run`
//! installs it).

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `preforkd -k action` for the server whose pid file is `pid_file`: its exit code and message.
fn k(action: &str, pid_file: &Path) -> (i32, String) {
    let out = Command::new(preforkd_bin()).args(["-k", action, "--pid-file"]).arg(pid_file).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `n` clients, each holding a child with a request head that is not complete.
fn hold(addr: SocketAddr, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut c = Client::connect(addr).unwrap();
            c.send(b"GET / HTTP/1.1\r\nHost: holder\r\n").unwrap();
            c
        })
        .collect()
}

fn answers(agent: SocketAddr, expected: &str) -> bool {
    wait_until(Duration::from_secs(5), || agent_check(agent).is_ok_and(|l| l == expected))
}

/// SPEC.md §7.10: "up ready N%" with N the free share of max_request_workers (held children and
/// waiting connections taken off, at least 1 %), the operator's word through -k, "drain" while a
/// graceful stop finishes, and nothing once the server is gone.
#[test]
fn the_agent_check_follows_the_pool_the_operator_and_the_stop() {
    let _s = serial();
    let dir = tempdir("agent");
    let pid_file = dir.join("preforkd.pid");
    let mut p = Preforkd::start(&[
        // Children read the heads themselves (behind the gate, SPEC.md §15, a slow or idle
        // connection holds no child).
        "--accept-filter",
        "data",
        "--agent-listen",
        "127.0.0.1:0",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--start-servers",
        "4",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "4",
        "--max-request-workers",
        "4",
    ]);
    let agent = p.agent_addr().expect("the log names the agent address");
    assert_eq!(agent_check(agent).unwrap(), "up ready 100%\n");
    let mut held = hold(p.addr(), 2);
    assert!(answers(agent, "up ready 50%\n"), "two of four held: {:?}", agent_check(agent));
    for (action, line) in [("drain", "up drain\n"), ("maint", "maint\n"), ("ready", "up ready 50%\n")] {
        let (code, msg) = k(action, &pid_file);
        assert_eq!(code, 0, "{msg}");
        assert!(msg.contains(&format!("answers agent checks as {action}")), "{msg}");
        assert_eq!(agent_check(agent).unwrap(), line, "after -k {action}");
    }
    std::fs::write(format!("{}.agent", pid_file.display()), "bogus").unwrap();
    assert_eq!(agent_check(agent).unwrap(), "up ready 50%\n", "a word that is none counts as ready");
    assert!(wait_until(Duration::from_secs(2), || p.stderr().contains("does not hold ready, drain or maint")));
    held.extend(hold(p.addr(), 3));
    assert!(answers(agent, "up ready 1%\n"), "full, one waiting: the floor: {:?}", agent_check(agent));
    p.signal(Signal::SIGWINCH);
    assert!(answers(agent, "drain\n"), "a graceful stop: {:?}", agent_check(agent));
    for h in &mut held {
        h.send(b"\r\n").unwrap();
        assert_eq!(h.read_response(false).unwrap().status, 200);
    }
    assert_eq!(p.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
    assert!(agent_check(agent).is_err(), "the agent port closes with the server");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn agent_listen_is_refused_when_it_is_not_a_tcp_address_of_its_own() {
    for (value, extra) in [("unix:/tmp/agent.sock", vec![]), ("127.0.0.1:18080", vec!["--listen", "127.0.0.1:18080"])] {
        let mut args = vec!["-t", "--agent-listen", value];
        args.extend(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{value}: {err}");
        assert!(err.contains("agent_listen") && err.contains("IP:PORT"), "{err}");
    }
}

/// Two preforkd behind HAProxy, each with its own document root (who.txt says which).
struct Farm {
    backends: Vec<Preforkd>,
    pid_files: Vec<std::path::PathBuf>,
    haproxy: Haproxy,
    frontend: SocketAddr,
    dir: std::path::PathBuf,
}

fn farm(extra: &[&str]) -> Option<Farm> {
    Haproxy::binary().or_else(|| {
        eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        None
    })?;
    let dir = tempdir("farm");
    let mut backends = vec![];
    let mut pid_files = vec![];
    for name in ["a", "b"] {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("who.txt"), name).unwrap();
        let pid_file = dir.join(format!("{name}.pid"));
        let mut args = vec![
            "--agent-listen",
            "127.0.0.1:0",
            "--document-root",
            root.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        backends.push(Preforkd::start(&args));
        pid_files.push(pid_file);
    }
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = |name: &str, p: &Preforkd| {
        let agent = p.agent_addr().unwrap();
        format!(
            "    server {name} {} weight 100 check inter 500ms agent-check agent-addr {} agent-port {} agent-inter 200ms\n",
            p.addr(),
            agent.ip(),
            agent.port()
        )
    };
    let config = format!(
        "global\n    maxconn 2000\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 20s\n    \
         timeout server 20s\n    retries 3\n    option redispatch\n    retry-on all-retryable-errors\n\
         frontend fe\n    bind {frontend}\n    default_backend be\nbackend be\n    balance roundrobin\n    \
         option http-server-close\n{}{}",
        server("a", &backends[0]),
        server("b", &backends[1])
    );
    let haproxy = Haproxy::start(&config, frontend);
    Some(Farm { backends, pid_files, haproxy, frontend, dir })
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `n` requests for who.txt through the frontend (from `threads` threads) got: answers from
/// each backend, requests that waited longer than `patience` (queued at a full backend), and the
/// failures.
#[derive(Debug, Default)]
struct Share {
    a: u64,
    b: u64,
    waited: u64,
    failures: Vec<String>,
}

fn who_answers(frontend: SocketAddr, n: usize, threads: usize, patience: Duration) -> Share {
    let share = Arc::new(Mutex::new(Share::default()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = share.clone();
            std::thread::spawn(move || {
                for _ in (t..n).step_by(threads) {
                    let got = Client::connect(frontend).and_then(|mut c| {
                        c.set_read_timeout(patience);
                        c.request("GET /who.txt HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n")
                    });
                    let mut s = share.lock().unwrap();
                    match got {
                        Ok(r) if r.status == 200 && r.text() == "a" => s.a += 1,
                        Ok(r) if r.status == 200 && r.text() == "b" => s.b += 1,
                        Ok(r) => s.failures.push(format!("status {}", r.status)),
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                            s.waited += 1
                        }
                        Err(e) => s.failures.push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    std::mem::take(&mut *share.lock().unwrap())
}

/// Issue 24: with one backend full (every child held), its agent check says 1 % and HAProxy
/// sends the new connections to the other. (`option http-server-close`: an idle connection
/// HAProxy kept to a backend would hold one of its children, docs/operations.md.)
#[test]
fn haproxy_sends_new_connections_to_the_backend_with_room() {
    let _s = serial();
    // Children read heads (`accept_filter = "data"`): the test holds them with unfinished heads.
    let pool = [
        "--accept-filter",
        "data",
        "--start-servers",
        "8",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "8",
        "--max-request-workers",
        "8",
    ];
    let Some(f) = farm(&pool) else { return };
    let both = who_answers(f.frontend, 100, 4, Duration::from_secs(5));
    assert!(both.failures.is_empty() && both.waited == 0, "{both:?}");
    assert!(both.a >= 20 && both.b >= 20, "both backends share the load when both have room: {both:?}");
    let mut held = hold(f.backends[0].addr(), 8);
    assert!(answers(f.backends[0].agent_addr().unwrap(), "up ready 1%\n"));
    std::thread::sleep(Duration::from_secs(1)); // HAProxy checks every 200 ms
    // A request HAProxy sends to the full backend waits there: counted as the full one's.
    let full = who_answers(f.frontend, 200, 4, Duration::from_secs(1));
    for h in &mut held {
        let _ = h.send(b"\r\n");
    }
    assert!(full.failures.is_empty(), "{full:?}");
    let to_full = full.a + full.waited;
    let share = full.b as f64 / (to_full + full.b) as f64;
    eprintln!(
        "RESULT balancer-full-backend: both with room a {} b {}; a full (agent 1 %): a {} (answered {}, queued {}), b {} \
         ({:.1} % to b), 0 failed",
        both.a,
        both.b,
        to_full,
        full.a,
        full.waited,
        full.b,
        share * 100.0
    );
    assert!(share >= 0.9, "the backend with room gets the new connections: {full:?}");
    drop(f);
}

/// Issue 24: under keep-alive and connection-close load through HAProxy, a rolling graceful
/// restart of both backends, a rolling binary upgrade of both (`-k upgrade`: the same binary,
/// started again on the same sockets), then a drained graceful stop of one (`-k drain`, then
/// `-k graceful-stop`): no request fails.
#[test]
fn haproxy_loses_nothing_in_a_rolling_restart_a_rolling_upgrade_and_a_drained_stop() {
    let _s = serial();
    let Some(mut f) = farm(&["--start-servers", "4", "--min-spare-servers", "2", "--max-spare-servers", "8"]) else {
        return;
    };
    let keep = Load::start(&[f.frontend], 4, Mode::KeepAlive, "/who.txt");
    let close = Load::start(&[f.frontend], 4, Mode::Close, "/who.txt");
    let progresses = || keep.progresses(200, Duration::from_secs(10)) && close.progresses(200, Duration::from_secs(10));
    assert!(progresses());
    for b in &f.backends {
        let before = b.generation();
        b.signal(Signal::SIGUSR1);
        assert!(wait_until(Duration::from_secs(5), || b.generation() == before + 1));
        assert!(progresses());
    }
    let restarted = keep.ok() + close.ok();
    let mut successors = vec![];
    for (b, pid_file) in f.backends.iter_mut().zip(&f.pid_files) {
        let (code, msg) = k("upgrade", pid_file);
        assert_eq!(code, 0, "{msg}");
        assert!(wait_until(Duration::from_secs(10), || pid_in(pid_file).is_some_and(|p| p != b.pid)), "{}", b.stderr());
        successors.push(Detached(pid_in(pid_file).unwrap()));
        assert_eq!(b.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)), "{}", b.stderr());
        assert!(progresses());
    }
    let upgraded = keep.ok() + close.ok();
    let (code, msg) = k("drain", &f.pid_files[0]);
    assert_eq!(code, 0, "{msg}");
    std::thread::sleep(Duration::from_secs(1)); // HAProxy hears "up drain" within 200 ms
    let (code, msg) = k("graceful-stop", &f.pid_files[0]);
    assert_eq!(code, 0, "{msg}");
    let stopped = successors[0].0;
    assert!(wait_until(Duration::from_secs(15), || !alive(stopped)), "the drained server stops");
    assert!(progresses());
    let (k_, c) = (keep.stop(), close.stop());
    let failures: Vec<&Failure> = k_.failures.iter().chain(&c.failures).collect();
    eprintln!(
        "RESULT balancer-rolling: requests {} (after both restarts {restarted}, after both upgrades {upgraded}), failed {}, \
         refused {}",
        k_.ok + c.ok,
        failures.len(),
        k_.refused + c.refused
    );
    assert!(failures.is_empty(), "{failures:?}\n{}", f.haproxy.log());
    assert_eq!(k_.refused + c.refused, 0);
}
