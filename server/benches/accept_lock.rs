//! Accept-lock mechanisms compared, to choose what `accept_mutex = "auto"` uses.
//!
//! `cargo bench -p prefork-server --bench accept_lock`
//!
//! For each mechanism, N processes (1: uncontended, 4: contended) take and release the lock in a
//! loop for a fixed time; the total number of lock+unlock pairs is counted in shared memory.
//! Mechanisms alternate within each round; the median of the rounds is reported, as operations
//! per second and as a ratio to fcntl measured in the same run. Noisy machines make single runs
//! unreliable: only the ratios within one run mean anything.

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use prefork_core::config::LockMechanism;
use prefork_server::locks::AcceptLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const RUN: Duration = Duration::from_millis(300);
const MECHANISMS: [LockMechanism; 4] = LockMechanism::ALL;

fn shared_counter() -> &'static AtomicU64 {
    let len = std::num::NonZeroUsize::new(8).unwrap();
    // SAFETY: a fresh shared anonymous mapping, used only as one AtomicU64 (zero-filled, aligned).
    let p = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
        .expect("mmap");
    // SAFETY: page-aligned, 8 bytes, lives for the rest of the process.
    unsafe { &*(p.as_ptr() as *const AtomicU64) }
}

/// Lock+unlock pairs per second with `procs` processes competing.
fn measure(m: LockMechanism, procs: usize) -> f64 {
    let mut lock = AcceptLock::create(m, &std::env::temp_dir(), None).expect("lock");
    let counter = shared_counter();
    let start = Instant::now() + Duration::from_millis(50);
    let mut kids = vec![];
    for _ in 0..procs {
        // SAFETY: the bench is single-threaded; the child only runs the loop and _exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                lock.child_init().expect("child_init");
                let woken = AtomicBool::new(false);
                while Instant::now() < start {}
                let end = start + RUN;
                let mut n = 0u64;
                while Instant::now() < end {
                    lock.acquire(&woken).expect("acquire");
                    n += 1;
                    lock.release().expect("release");
                }
                counter.fetch_add(n, Ordering::Relaxed);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => kids.push(child),
        }
    }
    for k in kids {
        waitpid(k, None).expect("wait");
    }
    counter.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("accept-lock mechanisms: lock+unlock pairs per second, median of {ROUNDS} alternating rounds of {RUN:?}");
    println!("machine: {} CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for procs in [1, 4] {
        let mut results: Vec<Vec<f64>> = vec![vec![]; MECHANISMS.len()];
        for _ in 0..ROUNDS {
            for (i, m) in MECHANISMS.iter().enumerate() {
                results[i].push(measure(*m, procs));
            }
        }
        let medians: Vec<f64> = results.into_iter().map(median).collect();
        let base = medians[0];
        println!("\n{procs} process(es):");
        println!("  {:<8} {:>14} {:>12}", "mechanism", "pairs/s", "vs fcntl");
        for (m, v) in MECHANISMS.iter().zip(&medians) {
            println!("  {:<8} {:>14.0} {:>11.2}x", m.name(), v, v / base);
        }
    }
}
