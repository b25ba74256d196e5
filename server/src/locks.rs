//! The accept lock (SPEC.md §1.3): one cross-process lock per pool, released by the kernel when its
//! holder dies, whichever mechanism is used.
//!
//! | mechanism | how | holder dies | left behind |
//! |---|---|---|---|
//! | `fcntl` | `F_SETLKW` on a file opened `O_EXCL` and unlinked at once | the kernel drops the record lock | nothing |
//! | `flock` | `flock(LOCK_EX)` on a file each child re-opens (flock locks belong to the open file description, which fork shares) | released at exit | the file, if the parent is SIGKILLed |
//! | `pthread` | a process-shared **robust** mutex in its own `MAP_SHARED` mapping | the next locker gets `EOWNERDEAD` and makes it consistent | nothing |
//! | `sysvsem` | a SysV semaphore, `semop` with `SEM_UNDO` | the kernel undoes the holder's operation | the semaphore set, if the parent is SIGKILLed (`ipcs -s`) |
//!
//! A lock wait must end when the child is woken (SPEC.md §7.1): the child's wake signal interrupts
//! `F_SETLKW`, `flock` and `semop` (EINTR; the handler has no `SA_RESTART`), and the pthread wait
//! polls a flag between `pthread_mutex_timedlock` slices. [`AcceptLock::acquire`] returns
//! [`LockError::Interrupted`] then.

use nix::errno::Errno;
use prefork_core::config::LockMechanism;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What `accept_mutex = "auto"` uses when a lock is needed: the robust pthread mutex. Measured
/// (`cargo bench -p prefork-server --bench accept_lock`, BENCHMARKS.md): 13.6x fcntl's
/// lock+unlock rate uncontended and 20x with 4 processes competing (a futex needs no system call
/// when uncontended), and the kernel still recovers it from a dead holder (EOWNERDEAD). It is also
/// Apache 2.4's Linux default since APR 1.7.
pub const DEFAULT_MECHANISM: LockMechanism = LockMechanism::Pthread;

/// A lock operation that did not take or release the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The wait was interrupted by a wake-up (or another signal); nothing is held.
    #[error("interrupted")]
    Interrupted,
    /// The lock is broken or unusable (the child exits sick; the pool goes on).
    #[error("{op} failed: {source}")]
    Failed {
        /// The operation.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn failed(op: &'static str, e: impl Into<io::Error>) -> LockError {
    LockError::Failed { op, source: e.into() }
}

#[derive(Debug)]
enum Kind {
    Fcntl { fd: OwnedFd },
    Flock { path: PathBuf, fd: Option<File> },
    Pthread { mutex: NonNull<libc::pthread_mutex_t> },
    Sysvsem { id: libc::c_int },
}

/// The accept lock of a pool. Created by the parent before forking; each child calls
/// [`AcceptLock::child_init`] once (before dropping privileges), then acquires and releases it.
#[derive(Debug)]
pub struct AcceptLock {
    kind: Kind,
    owner: u32,
}

/// A pthread lock wait looks at the wake flag this often (pthread mutexes cannot be interrupted
/// by a signal). Longer slices cost less CPU per waiting child; a wake-up takes up to this long.
const PTHREAD_SLICE: Duration = Duration::from_millis(250);

impl AcceptLock {
    /// Creates the lock. `dir` holds the lock file for fcntl/flock; `child_ids` are the uid/gid
    /// the children will run as (the SysV semaphore is given to them, as Apache does).
    pub fn create(mechanism: LockMechanism, dir: &Path, child_ids: Option<(u32, u32)>) -> io::Result<AcceptLock> {
        let owner = std::process::id();
        let kind = match mechanism {
            LockMechanism::Fcntl | LockMechanism::Flock => {
                // Unique per lock: a process may create several (tests, restarts that change mechanism).
                static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!("prefork-accept.{owner}.{n}.{}", mechanism.name()));
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("lock file {}: {e}", path.display())))?;
                if mechanism == LockMechanism::Fcntl {
                    std::fs::remove_file(&path)?;
                    Kind::Fcntl { fd: file.into() }
                } else {
                    Kind::Flock { path, fd: None }
                }
            }
            LockMechanism::Pthread => Kind::Pthread { mutex: create_robust_mutex()? },
            LockMechanism::Sysvsem => Kind::Sysvsem { id: create_semaphore(child_ids)? },
        };
        Ok(AcceptLock { kind, owner })
    }

    /// The mechanism.
    pub fn mechanism(&self) -> LockMechanism {
        match self.kind {
            Kind::Fcntl { .. } => LockMechanism::Fcntl,
            Kind::Flock { .. } => LockMechanism::Flock,
            Kind::Pthread { .. } => LockMechanism::Pthread,
            Kind::Sysvsem { .. } => LockMechanism::Sysvsem,
        }
    }

    /// Child, once after fork() and before dropping privileges: flock needs its own open file
    /// description.
    pub fn child_init(&mut self) -> io::Result<()> {
        if let Kind::Flock { path, fd } = &mut self.kind {
            *fd = Some(File::options().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path)?);
        }
        Ok(())
    }

    /// Takes the lock, waiting as long as needed unless `woken` is set (by the child's wake
    /// signal) or the wait is interrupted.
    pub fn acquire(&mut self, woken: &AtomicBool) -> Result<(), LockError> {
        let interrupted = |e: Errno, op| if e == Errno::EINTR { LockError::Interrupted } else { failed(op, e) };
        match &self.kind {
            Kind::Fcntl { fd } => {
                let fl = whole_file(libc::F_WRLCK);
                // SAFETY: a valid fd and a valid flock struct.
                let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLKW, &fl) };
                if rc == -1 { Err(interrupted(Errno::last(), "fcntl(F_SETLKW)")) } else { Ok(()) }
            }
            Kind::Flock { fd, .. } => {
                let fd = fd.as_ref().ok_or_else(|| failed("flock", io::Error::other("child_init was not called")))?;
                // SAFETY: a valid fd.
                let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) };
                if rc == -1 { Err(interrupted(Errno::last(), "flock(LOCK_EX)")) } else { Ok(()) }
            }
            Kind::Pthread { mutex } => loop {
                if woken.load(Ordering::Relaxed) {
                    return Err(LockError::Interrupted);
                }
                let deadline = realtime_after(PTHREAD_SLICE);
                // SAFETY: the mutex was initialised (process-shared, robust) before the fork and
                // lives in a mapping that outlives every user.
                match unsafe { libc::pthread_mutex_timedlock(mutex.as_ptr(), &deadline) } {
                    0 => return Ok(()),
                    libc::EOWNERDEAD => {
                        // The previous holder died holding it: the accept lock guards no data.
                        // SAFETY: we hold the mutex (EOWNERDEAD means acquired).
                        let rc = unsafe { libc::pthread_mutex_consistent(mutex.as_ptr()) };
                        return if rc == 0 {
                            Ok(())
                        } else {
                            Err(failed("pthread_mutex_consistent", Errno::from_raw(rc)))
                        };
                    }
                    libc::ETIMEDOUT | libc::EINTR => continue,
                    rc => return Err(failed("pthread_mutex_timedlock", Errno::from_raw(rc))),
                }
            },
            Kind::Sysvsem { id } => {
                let mut op = libc::sembuf { sem_num: 0, sem_op: -1, sem_flg: libc::SEM_UNDO as i16 };
                // SAFETY: a valid semaphore set id and one sembuf.
                let rc = unsafe { libc::semop(*id, &mut op, 1) };
                if rc == -1 { Err(interrupted(Errno::last(), "semop(-1)")) } else { Ok(()) }
            }
        }
    }

    /// The process holding the lock, as the kernel knows it (the parent asks; SPEC.md §7.8). It
    /// sees what a child's own flag cannot: a holder stopped between the kernel granting the lock
    /// and its next step, and a SysV semaphore the kernel completed for a waiter that is stopped.
    ///
    /// | mechanism | how |
    /// |---|---|
    /// | `fcntl` | `F_GETLK`: the pid of the lock that conflicts with a write lock |
    /// | `flock` | `/proc/locks`: the `FLOCK` line of the lock file's device and inode |
    /// | `pthread` | the robust mutex's futex word, which holds the owner's thread id |
    /// | `sysvsem` | `GETVAL` is 0: `GETPID`, the process of the last `semop` (the one that took it) |
    pub fn holder(&self) -> Option<u32> {
        match &self.kind {
            Kind::Fcntl { fd } => {
                let mut fl = whole_file(libc::F_WRLCK);
                // SAFETY: a valid descriptor and a flock structure to fill.
                let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLK, &mut fl) };
                (rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short && fl.l_pid > 0).then_some(fl.l_pid as u32)
            }
            Kind::Flock { path, .. } => flock_holder(path),
            Kind::Pthread { mutex } => {
                // SAFETY: the mutex lives in a mapping we keep for the life of the process; its
                // first word is the futex, read atomically (other processes change it).
                let futex = unsafe { &*(mutex.as_ptr() as *const std::sync::atomic::AtomicU32) };
                let tid = futex.load(Ordering::Relaxed) & FUTEX_TID_MASK;
                (tid != 0).then_some(tid)
            }
            Kind::Sysvsem { id } => {
                // SAFETY: plain SysV queries on a set we created.
                let (value, pid) = unsafe { (libc::semctl(*id, 0, libc::GETVAL), libc::semctl(*id, 0, libc::GETPID)) };
                (value == 0 && pid > 0).then_some(pid as u32)
            }
        }
    }

    /// Releases the lock (held by this process).
    pub fn release(&mut self) -> Result<(), LockError> {
        let check = |rc: libc::c_int, op| if rc == -1 { Err(failed(op, Errno::last())) } else { Ok(()) };
        match &self.kind {
            Kind::Fcntl { fd } => {
                let fl = whole_file(libc::F_UNLCK);
                // SAFETY: as in acquire.
                check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLK, &fl) }, "fcntl(F_UNLCK)")
            }
            Kind::Flock { fd, .. } => {
                let fd = fd.as_ref().ok_or_else(|| failed("flock", io::Error::other("child_init was not called")))?;
                // SAFETY: a valid fd.
                check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) }, "flock(LOCK_UN)")
            }
            Kind::Pthread { mutex } => {
                // SAFETY: we hold the mutex.
                let rc = unsafe { libc::pthread_mutex_unlock(mutex.as_ptr()) };
                if rc == 0 { Ok(()) } else { Err(failed("pthread_mutex_unlock", Errno::from_raw(rc))) }
            }
            Kind::Sysvsem { id } => {
                let mut op = libc::sembuf { sem_num: 0, sem_op: 1, sem_flg: libc::SEM_UNDO as i16 };
                // SAFETY: a valid semaphore set id and one sembuf.
                check(unsafe { libc::semop(*id, &mut op, 1) }, "semop(+1)")
            }
        }
    }
}

impl Drop for AcceptLock {
    /// In the parent that created it: remove what outlives processes (the flock file, the SysV
    /// semaphore set). Children leave with `_exit` and never run this.
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        match &self.kind {
            Kind::Flock { path, .. } => {
                let _ = std::fs::remove_file(path);
            }
            Kind::Sysvsem { id } => {
                // SAFETY: removing a set we created.
                unsafe { libc::semctl(*id, 0, libc::IPC_RMID) };
            }
            // The pthread mapping stays for the life of the process (children may still be
            // exiting with it mapped; the kernel frees it with the last process).
            Kind::Pthread { .. } | Kind::Fcntl { .. } => {}
        }
    }
}

/// The owner's thread id in a robust futex word (the kernel's `FUTEX_TID_MASK`).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// The pid holding a `flock` on `path`, from `/proc/locks` (`N: FLOCK ADVISORY WRITE PID
/// MAJ:MIN:INODE ...`, device numbers in hex; waiters are the lines with `->`).
fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == wanted => pid.parse().ok(),
            _ => None,
        }
    })
}

fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; zero is a valid start (platform padding included).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

fn realtime_after(d: Duration) -> libc::timespec {
    let mut now = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, now.as_mut_ptr()) };
    // SAFETY: initialised by clock_gettime.
    let now = unsafe { now.assume_init() };
    let nanos = now.tv_nsec as u64 + d.subsec_nanos() as u64;
    libc::timespec {
        tv_sec: now.tv_sec + d.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

fn create_robust_mutex() -> io::Result<NonNull<libc::pthread_mutex_t>> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    let len = std::num::NonZeroUsize::new(size_of::<libc::pthread_mutex_t>()).expect("non-zero");
    // SAFETY: a fresh anonymous shared mapping; nothing else refers to it.
    let ptr = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
        .map_err(io::Error::from)?;
    let mutex = ptr.cast::<libc::pthread_mutex_t>();
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: standard initialisation of an attribute object and of a mutex in memory we own;
    // pthread functions return the error number instead of setting errno.
    unsafe {
        let a = attr.as_mut_ptr();
        let rcs = [
            libc::pthread_mutexattr_init(a),
            libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
            libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
            libc::pthread_mutex_init(mutex.as_ptr(), a),
        ];
        libc::pthread_mutexattr_destroy(a);
        if let Some(&rc) = rcs.iter().find(|&&rc| rc != 0) {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(mutex)
}

fn create_semaphore(child_ids: Option<(u32, u32)>) -> io::Result<libc::c_int> {
    // SAFETY: plain SysV calls on a set we create; semctl's variadic argument is an int for
    // SETVAL and a pointer to semid_ds for IPC_STAT/IPC_SET.
    unsafe {
        let id = libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600);
        if id == -1 {
            return Err(io::Error::last_os_error());
        }
        let cleanup = |e: io::Error| {
            libc::semctl(id, 0, libc::IPC_RMID);
            Err(e)
        };
        if libc::semctl(id, 0, libc::SETVAL, 1 as libc::c_int) == -1 {
            return cleanup(io::Error::last_os_error());
        }
        if let Some((uid, gid)) = child_ids {
            let mut ds: libc::semid_ds = std::mem::zeroed();
            if libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) == -1 {
                return cleanup(io::Error::last_os_error());
            }
            ds.sem_perm.uid = uid;
            ds.sem_perm.gid = gid;
            if libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) == -1 {
                return cleanup(io::Error::last_os_error());
            }
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    /// Each mechanism: a forked child takes the lock and dies holding it; the parent must then
    /// take it (the kernel released it, or EOWNERDEAD was recovered).
    #[test]
    fn the_kernel_names_the_holder_of_every_mechanism() {
        for m in LockMechanism::ALL {
            let lock = AcceptLock::create(m, &std::env::temp_dir(), None).unwrap();
            assert_eq!(lock.holder(), None, "{}: nobody holds a new lock", m.name());
            let (read, write) = nix::unistd::pipe().unwrap();
            // SAFETY: the child takes the lock, says so, and waits to be killed.
            match unsafe { fork() }.unwrap() {
                ForkResult::Child => {
                    let mut lock = lock;
                    lock.child_init().unwrap();
                    lock.acquire(&AtomicBool::new(false)).unwrap();
                    let _ = nix::unistd::write(&write, b"!");
                    std::thread::sleep(Duration::from_secs(30));
                    // SAFETY: leaving the forked child without running destructors.
                    unsafe { libc::_exit(0) };
                }
                ForkResult::Parent { child } => {
                    drop(write);
                    let mut byte = [0u8; 1];
                    assert_eq!(nix::unistd::read(&read, &mut byte).unwrap(), 1);
                    assert_eq!(lock.holder(), Some(child.as_raw() as u32), "{}", m.name());
                    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
                    waitpid(child, None).unwrap();
                    assert_eq!(lock.holder(), None, "{}: released with its holder's death", m.name());
                }
            }
        }
    }

    #[test]
    fn every_mechanism_survives_a_holder_that_dies() {
        let woken = AtomicBool::new(false);
        for m in LockMechanism::ALL {
            let mut lock = AcceptLock::create(m, &std::env::temp_dir(), None).unwrap();
            // SAFETY: the child only takes the lock and calls _exit.
            match unsafe { fork() }.unwrap() {
                ForkResult::Child => {
                    lock.child_init().unwrap();
                    lock.acquire(&AtomicBool::new(false)).unwrap();
                    // SAFETY: leaving the forked child without running destructors.
                    unsafe { libc::_exit(7) };
                }
                ForkResult::Parent { child } => {
                    assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 7));
                    lock.child_init().unwrap();
                    lock.acquire(&woken).unwrap_or_else(|e| panic!("{}: {e}", m.name()));
                    lock.release().unwrap();
                }
            }
        }
    }

    #[test]
    fn a_set_wake_flag_interrupts_a_pthread_wait() {
        let mut lock = AcceptLock::create(LockMechanism::Pthread, &std::env::temp_dir(), None).unwrap();
        lock.acquire(&AtomicBool::new(false)).unwrap();
        // The mutex is not recursive: a second acquire would wait; the flag ends the wait.
        assert!(matches!(lock.acquire(&AtomicBool::new(true)), Err(LockError::Interrupted)));
        lock.release().unwrap();
    }

    #[test]
    fn the_flock_file_is_removed_and_sysv_set_freed_when_the_parent_drops_the_lock() {
        let lock = AcceptLock::create(LockMechanism::Flock, &std::env::temp_dir(), None).unwrap();
        let Kind::Flock { path, .. } = &lock.kind else { unreachable!() };
        let path = path.clone();
        assert!(path.exists());
        drop(lock);
        assert!(!path.exists());
        let lock = AcceptLock::create(LockMechanism::Sysvsem, &std::env::temp_dir(), None).unwrap();
        let Kind::Sysvsem { id } = lock.kind else { unreachable!() };
        drop(lock);
        // SAFETY: probing a removed set id.
        assert_eq!(unsafe { libc::semctl(id, 0, libc::GETVAL) }, -1, "the set is gone");
    }
}
