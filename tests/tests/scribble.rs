//! The untrusted scoreboard, from the outside (SPEC.md §14): the whole shared memory is scribbled
//! on while clients load the server, with a hard and a graceful restart in between, as a child
//! taken over by an attacker could: random bytes, the pid of a decoy process (root, not a child) in
//! every word, all ones. The parent must never signal the decoy, never die, answer again within
//! 2 s of the last write, write at most a few dozen log lines per second of scribbling, and still
//! stop everything on SIGTERM within Apache's ladder.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long each of the three rounds scribbles.
const ROUND: Duration = Duration::from_millis(2500);
/// "A few dozen" log lines per second of scribbling, at most.
const MAX_LOG_LINES_PER_SECOND: f64 = 36.0;

/// The scoreboard of the server `pid`, mapped read-write as a child has it: its memfd, found
/// through `/proc/<pid>/fd`.
struct Board {
    base: *mut u64,
    words: usize,
}

impl Board {
    fn map(pid: u32) -> Board {
        let dir = format!("/proc/{pid}/fd");
        let path = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| {
                std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:prefork-scoreboard"))
            })
            .map(|e| e.path())
            .expect("the scoreboard's memfd");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        use std::os::fd::AsRawFd;
        // SAFETY: maps the whole file shared; the mapping outlives `file` (mmap keeps its own
        // reference) and is never unmapped while the test writes (it ends with the process).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap {}", path.display());
        Board { base: base.cast(), words: len / 8 }
    }

    /// Writes `value(i)` into every word.
    fn fill(&self, mut value: impl FnMut(usize) -> u64) {
        for i in 0..self.words {
            // SAFETY: in the mapping, aligned (the mapping is page-aligned); other processes write
            // it too, which volatile writes of whole words tolerate (what they read is garbage by
            // design).
            unsafe { self.base.add(i).write_volatile(value(i)) };
        }
    }
}

/// A process that is not a child of the server, running as root, which notes every catchable
/// signal it gets in a file (SIGKILL and SIGSTOP are seen as its death or its stopped state).
struct Decoy {
    child: Child,
    notes: PathBuf,
}

impl Decoy {
    fn start() -> Decoy {
        let notes = tempdir("decoy").join("signals");
        std::fs::write(&notes, "").unwrap();
        let script = format!(
            "for s in TERM HUP INT USR1 USR2 WINCH QUIT ALRM; do trap \"echo $s >> {n}\" $s; done; \
             while :; do sleep 0.05; done",
            n = notes.display()
        );
        let child = Command::new("sh").args(["-c", &script]).spawn().expect("sh");
        Decoy { child, notes }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Alive, not stopped, and no signal noted.
    fn untouched(&self) -> Result<(), String> {
        let notes = std::fs::read_to_string(&self.notes).unwrap_or_default();
        match proc_state(self.pid()) {
            None | Some('Z') => Err("the decoy was killed".into()),
            Some('T') => Err("the decoy was stopped".into()),
            _ if !notes.is_empty() => Err(format!("the decoy got signals: {notes:?}")),
            _ => Ok(()),
        }
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_scribbled_board_heals_signals_no_stranger_and_floods_no_log() {
    let mut p = Preforkd::start(&["--start-servers", "5"]);
    let decoy = Decoy::start();
    let board = Board::map(p.pid);
    let load = Load::start(&[p.addr()], 16, Mode::KeepAlive, "/");
    assert!(load.progresses(100, Duration::from_secs(5)), "the load runs");
    let children_before = children_of(p.pid);

    let lines_before = p.stderr().lines().count();
    let started = Instant::now();
    let mut writes = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let decoy_pid = u64::from(decoy.pid());
    for (round, then) in [(0, Some(Signal::SIGHUP)), (1, Some(Signal::SIGUSR1)), (2, None)] {
        let until = Instant::now() + ROUND;
        while Instant::now() < until {
            match writes % 3 {
                0 => board.fill(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                }),
                1 => board.fill(|_| decoy_pid),
                _ => board.fill(|_| u64::MAX),
            }
            writes += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(alive(p.pid), "round {round}: the parent died:\n{}", p.stderr());
        if let Some(sig) = then {
            p.signal(sig);
        }
    }
    let scribbled = started.elapsed();
    let lines = p.stderr().lines().count() - lines_before;
    let per_second = lines as f64 / scribbled.as_secs_f64();

    let answered = p.serving_again_within(Duration::from_secs(2));
    let t = load.stop();
    if let Err(why) = decoy.untouched() {
        panic!("{why}\n{}", p.stderr());
    }
    assert!(alive(p.pid), "the parent survived:\n{}", p.stderr());
    let tail: String = p.stderr().lines().rev().take(20).collect::<Vec<_>>().join("\n");
    let answered =
        answered.unwrap_or_else(|| panic!("not answering 2 s after the last write; last log lines:\n{tail}"));
    let stats = p.get("/server-status?json").text();
    assert!(
        per_second <= MAX_LOG_LINES_PER_SECOND,
        "{lines} log lines in {scribbled:?} of scribbling ({per_second:.1}/s):\n{}",
        p.stderr()
    );
    let json: serde_json::Value = serde_json::from_str(&stats).expect("?json after the scribbles");
    let repaired = json["board"]["slots_repaired"].as_u64().unwrap_or(0);
    assert!(repaired > 0, "the parent repaired slots: {stats}");

    // SIGTERM still stops everything within the ladder (10 s, plus slack for a loaded box).
    let children = [children_before, children_of(p.pid)].concat();
    let stop = Instant::now();
    p.signal(Signal::SIGTERM);
    let status = p.wait(Duration::from_secs(12));
    assert!(status.is_some_and(|s| s.success()), "the stop ended with {status:?}:\n{}", p.stderr());
    let stopped_in = stop.elapsed();
    assert!(children.iter().all(|&c| !alive(c) || is_zombie(c)), "children outlived the stop: {children:?}");
    eprintln!(
        "RESULT scribble: {writes} whole-board writes in {scribbled:.1?} (random, decoy pid, all ones; a hard and a graceful restart between), \
         {lines} log lines ({per_second:.1}/s), answered {answered:?} after the last write, {repaired} slot words repaired, \
         {} children killed for a damaged slot, decoy untouched, load {} ok / {} failed, SIGTERM stop in {stopped_in:?}",
        json["board"]["children_killed"],
        t.ok,
        t.failures.len()
    );
}
