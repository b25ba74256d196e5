//! Faults under load that need preforkd's own settings (the HTTP tier, CONFORMANCE.md): children
//! recycled by `max_connections_per_child`, stuck children against the restart timeouts, a
//! graceful stop bounded by `graceful_shutdown_timeout`. Each runs a real HTTP client load,
//! counts every request's outcome and prints a results line (`RESULT ...`) that
//! `tests/RESULTS.md` records. The faults every implementation must survive (killed children, the
//! killed lock holder, restarts and stops under load, the killed parent) are in `pool.rs`.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Tests in this file run one at a time: each loads the machine, and some measure recovery.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn max_connections_per_child_recycles_children_under_load_without_failures() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--start-servers",
        "4",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "8",
        "--max-connections-per-child",
        "20",
        "--max-connections-per-child-jitter",
        "10",
    ]);
    let first: BTreeSet<u32> = children_of(p.pid).into_iter().collect();
    let keep = Load::start(&p.addrs, 2, Mode::KeepAlive, "/");
    let close = Load::start(&p.addrs, 3, Mode::Close, "/");
    assert!(close.progresses(2000, Duration::from_secs(20)));
    let (k, c) = (keep.stop(), close.stop());
    let now: BTreeSet<u32> = children_of(p.pid).into_iter().collect();
    let spawned: u64 = p
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("prefork_spawned_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(first.is_disjoint(&now), "every first child was recycled: {first:?} {now:?}");
    assert!(spawned as usize > 2000 / 30, "{spawned} children forked for over 2000 connections");
    assert!(k.failures.is_empty() && c.failures.is_empty(), "{:?} {:?}", k.failures, c.failures);
    eprintln!("RESULT max-connections-per-child: requests {}, failed 0, {spawned} children forked", k.ok + c.ok);
}

/// A child stuck in a request does not hold a restart back longer than the configured timeouts:
/// a client that never finishes its head (`request_read_timeout`) and one that never reads a
/// large response (`timeout`).
#[test]
fn stuck_children_do_not_hold_a_restart_beyond_the_timeouts() {
    let _s = serial();
    let docs = tempdir("big");
    std::fs::write(docs.join("big.bin"), vec![0u8; 64 << 20]).unwrap();
    let p = Preforkd::start(&[
        // A child stuck reading needs children that read heads (behind the gate, SPEC.md §15,
        // no child ever waits for one).
        "--accept-filter",
        "data",
        "--start-servers",
        "4",
        "--document-root",
        docs.to_str().unwrap(),
        "--request-read-timeout",
        "2",
        "--timeout",
        "2",
    ]);
    // Stuck reading: a head that never ends (one header line a second).
    let mut reader = Client::connect(p.addr()).unwrap();
    reader.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Stuck writing: a 64 MiB response nobody reads.
    let mut writer = Client::connect(p.addr()).unwrap();
    writer.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let slots = p.slots();
    // The reader's head is not complete, so its slot shows no request line yet.
    let reading = slots.iter().find(|s| s.letter == 'R' && s.request.is_empty()).map(|s| s.pid);
    let writing = slots.iter().find(|s| s.letter == 'W' && s.request.contains("/big.bin")).map(|s| s.pid);
    let (Some(reading), Some(writing)) = (reading, writing) else { panic!("{slots:?}") };
    let stuck = [reading, writing];
    let t0 = Instant::now();
    p.signal(Signal::SIGUSR1);
    let trickle = std::thread::spawn(move || {
        for i in 0..10 {
            if reader.send(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(p.get("/").status, 403, "new children serve at once (this root has no index.html)");
    let mut gone_at = vec![None; stuck.len()];
    let done = wait_until(Duration::from_secs(8), || {
        for (i, &c) in stuck.iter().enumerate() {
            if gone_at[i].is_none() && !alive(c) {
                gone_at[i] = Some(t0.elapsed());
            }
        }
        gone_at.iter().all(Option::is_some)
    });
    eprintln!("stuck children gone after {gone_at:?}");
    let took = t0.elapsed();
    assert!(done, "stuck children still alive {took:?} after the restart: {:?}", p.slots());
    // The reader: request_read_timeout (2 s from its first byte), then up to 2 s of lingering
    // close while it keeps sending. The writer: `timeout` is per write, as Apache's, so it is cut
    // off 2 s after the kernel stops taking data (which trickles on for a few seconds more while
    // the socket buffers fill and the receiver collapses its queue).
    let (reader_gone, writer_gone) = (gone_at[0].unwrap(), gone_at[1].unwrap());
    assert!(reader_gone <= Duration::from_secs(5), "reader {reader_gone:?}");
    assert!(writer_gone <= Duration::from_secs(12), "writer {writer_gone:?}");
    let _ = trickle.join();
    drop(writer);
    std::fs::remove_dir_all(docs).unwrap();
    eprintln!(
        "RESULT stuck-children: gone after a graceful restart: reading {reader_gone:?}, writing {writer_gone:?} (timeouts 2 s)"
    );
}

/// A graceful stop waits for children to finish, but not longer than `graceful_shutdown_timeout`:
/// then the stuck ones are stopped as in a stop.
#[test]
fn graceful_shutdown_timeout_bounds_a_graceful_stop_held_by_a_stuck_child() {
    let _s = serial();
    let mut p =
        Preforkd::start(&["--start-servers", "2", "--graceful-shutdown-timeout", "1", "--request-read-timeout", "60"]);
    let mut stuck = Client::connect(p.addr()).unwrap();
    stuck.send(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    p.signal(Signal::SIGWINCH);
    let trickle = std::thread::spawn(move || {
        for i in 0..20 {
            if stuck.send(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let status = p.wait(Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{}", p.stderr());
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(3), "{took:?}");
    assert!(p.stderr().contains("graceful"), "{}", p.stderr());
    let _ = trickle.join();
    eprintln!(
        "RESULT graceful-shutdown-timeout: a stuck child, the parent exits {took:?} after a graceful stop (timeout 1 s)"
    );
}
