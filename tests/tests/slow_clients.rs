//! Slow clients cannot take the pool (issue 25, SPEC.md §15): preforkd with its defaults runs
//! behind the gate (`accept_filter = "httpready"`). A few workers, many slow connections
//! (request heads trickled, kept-alive connections left idle), and legitimate clients beside
//! them: the legitimate requests are answered; without the gate (`accept_filter = "data"`) they
//! are not. A full gate sheds the idle and the slow, never a complete request.

use prefork_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const WORKERS: &[&str] =
    &["--start-servers", "2", "--min-spare-servers", "1", "--max-spare-servers", "3", "--server-limit", "3"];

/// A connection that sends a request line and one header line, and then nothing.
fn slow_head(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").expect("send");
    s
}

/// A kept-alive connection that made one request, read the answer, and stays silent.
fn idle_kept_alive(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).expect("connect");
    c.set_read_timeout(Duration::from_secs(5));
    let r = c.request("GET / HTTP/1.1\r\nHost: idle\r\n\r\n").expect("first request");
    assert_eq!(r.status, 200);
    c
}

/// `n` legitimate requests, each on a new connection with `timeout`: how many were answered 200.
fn legitimate(addr: SocketAddr, n: usize, timeout: Duration) -> usize {
    (0..n)
        .filter(|_| {
            let Ok(mut c) = Client::connect(addr) else { return false };
            c.set_read_timeout(timeout);
            c.request("GET / HTTP/1.1\r\nHost: real\r\nConnection: close\r\n\r\n").is_ok_and(|r| r.status == 200)
        })
        .count()
}

fn auto(p: &Preforkd, name: &str) -> u64 {
    p.auto_field(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Also the conformance suite's optional feature `gate` (CONFORMANCE.md): contract flags only; the
/// gate's counters are checked where the implementation has them (preforkd's `?auto`).
#[test]
fn slow_heads_and_idle_connections_do_not_keep_requests_from_the_children() {
    let p = Preforkd::start(&[WORKERS, &["--accept-filter", "httpready"]].concat());
    let addr = p.addr();
    let _heads: Vec<TcpStream> = (0..24).map(|_| slow_head(addr)).collect();
    let _idle: Vec<Client> = (0..6).map(|_| idle_kept_alive(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let answered = legitimate(addr, 10, Duration::from_secs(2));
    assert_eq!(answered, 10, "with 3 workers, 24 slow heads and 6 idle kept-alive connections");
    if p.auto_field("GateConnections").is_none() {
        return;
    }
    assert!(auto(&p, "GateConnections") >= 24, "the gate holds the slow heads: {:?}", p.auto_field("GateConnections"));
    assert!(auto(&p, "GateHanded") >= 16, "the gate handed the complete requests over");
    assert_eq!(auto(&p, "GateShedIdle") + auto(&p, "GateShedSlowHeads"), 0, "a gate with room sheds nothing");
}

#[test]
fn without_the_gate_the_same_slow_clients_take_every_worker() {
    // The test above could fail: the same attack on accept_filter = "data" leaves no worker.
    let p = Preforkd::start(&[WORKERS, &["--access-log", "off", "--accept-filter", "data"]].concat());
    let addr = p.addr();
    assert!(gates_of(p.pid).is_empty(), "no gate runs with accept_filter = data");
    let _heads: Vec<TcpStream> = (0..24).map(|_| slow_head(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let answered = legitimate(addr, 3, Duration::from_millis(700));
    assert_eq!(answered, 0, "3 workers, each holding a slow head");
}

#[test]
fn a_full_gate_sheds_the_idle_and_the_slow_and_never_a_complete_request() {
    let p = Preforkd::start(&[WORKERS, &["--access-log", "off", "--accept-filter-connections", "8"]].concat());
    let addr = p.addr();
    // Fill the table with slow heads, and let them out of their first second.
    let heads: Vec<TcpStream> = (0..8).map(|_| slow_head(addr)).collect();
    std::thread::sleep(Duration::from_millis(1300));
    // Complete requests, many at once, while the table is full: every one is answered.
    let started = Instant::now();
    let threads: Vec<_> =
        (0..16).map(|_| std::thread::spawn(move || legitimate(addr, 1, Duration::from_secs(5)))).collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 16, "complete requests while the gate was full, in {:?}", started.elapsed());
    assert!(p.auto_field("GateConnections").is_some(), "preforkd's ?auto has the gate's counters (SPEC §15.6)");
    let shed = auto(&p, "GateShedSlowHeads");
    assert!(shed >= 1, "room was made by shedding slow heads: {:?}", p.auto_field("GateShedSlowHeads"));
    // A shed head was answered 408 before its close.
    let mut answers_408 = 0;
    for mut h in heads {
        h.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = vec![];
        let _ = h.read_to_end(&mut buf);
        answers_408 += usize::from(buf.starts_with(b"HTTP/1.1 408"));
    }
    assert_eq!(answers_408 as u64, shed, "each shed head got its 408");
    // The same counts on every page.
    let metrics = p.get("/metrics").text();
    assert!(metrics.contains(&format!("prefork_gate_closed_total{{reason=\"shed_slow_head\"}} {shed}")), "{metrics}");
    let v: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).expect("json");
    assert_eq!(v["gate"]["closed"]["shed_slow_head"].as_u64(), Some(shed));
    assert!(p.stderr().contains("slow request heads"), "shed connections are logged: {}", p.stderr());
}

#[test]
fn an_idle_kept_alive_connection_gives_its_child_up_to_a_waiting_request() {
    // One worker, held by an idle kept-alive connection: a new request is served at once (the
    // child gives the idle connection back to the gate), not after keep_alive_timeout (5 s).
    let one = ["--start-servers", "1", "--min-spare-servers", "1", "--max-spare-servers", "2", "--server-limit", "1"];
    let p = Preforkd::start(&[&one[..], &["--access-log", "off"]].concat());
    let addr = p.addr();
    let mut idle = idle_kept_alive(addr);
    let started = Instant::now();
    assert_eq!(legitimate(addr, 1, Duration::from_secs(3)), 1);
    assert!(started.elapsed() < Duration::from_secs(3), "served in {:?}", started.elapsed());
    // The idle connection was given back, not closed: it still works.
    let r = idle.request("GET / HTTP/1.1\r\nHost: idle\r\n\r\n").expect("the kept-alive connection still serves");
    assert_eq!(r.status, 200);
}

#[test]
fn a_graceful_stop_still_answers_a_head_the_gate_held_when_it_came() {
    let p = Preforkd::start(&[WORKERS, &["--access-log", "off"]].concat());
    let mut s = slow_head(p.addr());
    assert!(wait_until(Duration::from_secs(5), || auto(&p, "GateConnections") >= 1));
    p.signal(nix::sys::signal::Signal::SIGWINCH);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"Connection: close\r\n\r\n").expect("the rest of the head");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![];
    let _ = s.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer[..answer.len().min(200)]));
    let mut p = p;
    assert!(p.wait(Duration::from_secs(10)).is_some(), "the server stops once the gate and children are done");
}

#[test]
fn a_gate_that_dies_is_replaced_and_the_server_serves_on() {
    let p = Preforkd::start(&[WORKERS, &["--access-log", "off"]].concat());
    let json = p.get("/server-status?json").text();
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let gate = v["gate"]["pid"].as_u64().expect("a gate pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gate), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(p.serving_again_within(Duration::from_secs(5)).is_some(), "{}", p.stderr());
    assert!(p.stderr().contains("without being told to"), "{}", p.stderr());
}
