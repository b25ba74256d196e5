//! A per-child cache of small files: their bytes and the identity of the file they came from,
//! revalidated by one `statx(2)` per request, so a kept-alive request for a cached file costs
//! three system calls (read the request, `statx`, write the answer) instead of six.
//!
//! **Never a changed file.** An entry is used only while `statx` on the same name, from the
//! document root's descriptor, reports the same file: device, inode, size, mode, and both the
//! modification and the status-change times to the nanosecond. A file replaced (rename, new
//! inode), edited in place (new mtime and ctime), touched back to an old mtime (ctime still
//! moves), made unreadable (ctime), or removed is a miss, and the request takes the normal path
//! (`openat2` beneath the root, with its 403s and 404s). A file whose mtime or ctime is less than
//! [`SETTLE`] old is not cached at all: the file system's timestamp granularity (a few
//! milliseconds) could give an edit that follows within the same tick the same times, and a file
//! that old has no such twin. The bytes are read after the identity was taken, so a write during
//! that read moves the times and the entry is a miss at its first use.
//!
//! **Large files are mapped, for one connection.** A settled file above [`MAX_FILE`] (up to
//! [`MAX_MAPPED`]) is kept as a read-only shared mapping of the file with its descriptor, revalidated
//! the same way, so the requests of a kept-alive connection for it cost `statx` and one `writev`
//! (no open, no mmap, no page faults after the first). The child drops its mappings when the
//! connection ends ([`FileCache::release_mappings`]): an idle child maps nothing. The mapping is
//! only ever read by the kernel (`writev` copies it into the socket; ranges that go out inline are
//! read with `pread` on the descriptor), so a file truncated under it makes that copy fail with
//! `EFAULT`, never a `SIGBUS` in the child.
//!
//! **Bounded**: files up to [`MAX_FILE`] bytes, at most [`MAX_BYTES`] bytes and [`MAX_ENTRIES`]
//! entries per child (so with `max_request_workers` 256 at most 256 MiB in all, and only for
//! files that are asked for); a full cache makes room by dropping entries. Each child fills its
//! own (nothing is shared, nothing is inherited: a child starts empty, and a restart's new
//! children start empty).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest file kept.
pub const MAX_FILE: u64 = 64 * 1024;
/// Bytes kept per child.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Files kept per child.
pub const MAX_ENTRIES: usize = 256;
/// Largest file mapped.
pub const MAX_MAPPED: u64 = 64 * 1024 * 1024;
/// Files mapped at once per child.
pub const MAX_MAPPINGS: usize = 16;
/// A file changed more recently than this is not kept.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What makes two looks at a name the same file, unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    /// From the metadata of the opened file.
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Was the file last changed at least [`SETTLE`] before `now`?
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(UNIX_EPOCH) else { return false };
        let latest = self.mtime.max(self.ctime);
        let latest = Duration::new(latest.0.max(0) as u64, latest.1.clamp(0, 999_999_999) as u32);
        now.checked_sub(latest).is_some_and(|age| age >= SETTLE)
    }
}

/// `statx` of `name` beneath `dir` (following symlinks, as the open did).
fn statx(dir: BorrowedFd<'_>, name: &CString) -> Option<Identity> {
    // SAFETY: an all-zero statx is a valid value to be overwritten.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, and a buffer of the right type.
    let rc = unsafe {
        libc::statx(dir.as_raw_fd(), name.as_ptr(), libc::AT_STATX_SYNC_AS_STAT, libc::STATX_BASIC_STATS, &mut st)
    };
    if rc != 0 {
        return None;
    }
    Some(Identity {
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        size: st.stx_size,
        mode: u32::from(st.stx_mode),
        mtime: (st.stx_mtime.tv_sec, i64::from(st.stx_mtime.tv_nsec)),
        ctime: (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec)),
    })
}

/// A large file kept for a connection: its descriptor and a read-only mapping of all of it.
#[derive(Debug)]
pub struct Mapped {
    /// The open file (ranges sent inline are read from it with `pread`).
    pub file: std::fs::File,
    /// The whole file, mapped. Only the kernel reads it (see the module's documentation).
    pub map: memmap2::Mmap,
}

/// What is kept of a file.
#[derive(Clone, Debug)]
pub enum Kept {
    /// A small file's bytes.
    Bytes(Rc<[u8]>),
    /// A large file's mapping.
    Mapped(Rc<Mapped>),
}

impl Kept {
    fn heap_bytes(&self) -> usize {
        match self {
            Kept::Bytes(b) => b.len(),
            Kept::Mapped(_) => 0,
        }
    }

    /// Mappings it holds: 0 or 1.
    fn mappings(&self) -> usize {
        usize::from(matches!(self, Kept::Mapped(_)))
    }
}

/// A kept file.
#[derive(Debug)]
pub struct Cached {
    /// What is kept.
    pub kept: Kept,
    /// Its length.
    pub len: u64,
    /// Its modification time (for `Last-Modified` and the `ETag`).
    pub modified: SystemTime,
    /// The name it was asked by, relative to the root (for the content type).
    pub name: PathBuf,
    statx_name: CString,
    identity: Identity,
}

/// The cache of one child.
#[derive(Debug, Default)]
pub struct FileCache {
    entries: HashMap<String, Cached>,
    bytes: usize,
    mappings: usize,
}

impl FileCache {
    /// The entry for request path `key`, if the file under its name is still the one kept.
    pub fn get(&mut self, dir: BorrowedFd<'_>, key: &str) -> Option<&Cached> {
        let fresh = {
            let entry = self.entries.get(key)?;
            statx(dir, &entry.statx_name) == Some(entry.identity)
        };
        if !fresh {
            self.remove(key);
            return None;
        }
        self.entries.get(key)
    }

    /// Offers the file just opened for `key` (`name` relative to the root): if it is settled and
    /// small, its bytes are read and kept; if it is settled, larger and `map` allows, it is mapped
    /// and kept with its descriptor (until [`FileCache::release_mappings`]). Returns what was kept
    /// (the caller serves that, which is what the identity describes), or gives the file back.
    pub fn offer(
        &mut self,
        key: &str,
        name: &Path,
        file: std::fs::File,
        meta: &std::fs::Metadata,
        now: SystemTime,
        map: bool,
    ) -> Result<Kept, std::fs::File> {
        let identity = Identity::of(meta);
        let small = meta.len() <= MAX_FILE;
        if !meta.is_file() || !identity.settled(now) || !(small || map && meta.len() <= MAX_MAPPED) {
            return Err(file);
        }
        let Ok(statx_name) =
            CString::new(if name.as_os_str().is_empty() { b".".as_slice() } else { name.as_os_str().as_bytes() })
        else {
            return Err(file);
        };
        let kept = if small {
            let mut bytes = vec![0u8; meta.len() as usize];
            if std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).is_err() {
                return Err(file);
            }
            Kept::Bytes(bytes.into())
        } else {
            // SAFETY: a read-only shared mapping that only the kernel reads (module documentation):
            // a change to the file under it is never seen by this process's code.
            match unsafe { memmap2::MmapOptions::new().len(meta.len() as usize).map(&file) } {
                Ok(map) => Kept::Mapped(Rc::new(Mapped { file, map })),
                Err(_) => return Err(file),
            }
        };
        self.remove(key);
        let (heap, mapped) = (kept.heap_bytes(), kept.mappings());
        while !self.entries.is_empty()
            && (self.entries.len() >= MAX_ENTRIES
                || self.bytes + heap > MAX_BYTES
                || self.mappings + mapped > MAX_MAPPINGS)
        {
            let victim = self.entries.keys().next().cloned().expect("not empty");
            self.remove(&victim);
        }
        self.bytes += heap;
        self.mappings += mapped;
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        self.entries.insert(
            key.to_string(),
            Cached { kept: kept.clone(), len: meta.len(), modified, name: name.to_path_buf(), statx_name, identity },
        );
        Ok(kept)
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.kept.heap_bytes();
            self.mappings -= old.kept.mappings();
        }
    }

    /// Drops every mapping (at the end of a connection: an idle child maps no file).
    pub fn release_mappings(&mut self) {
        if self.mappings > 0 {
            self.entries.retain(|_, c| c.kept.mappings() == 0);
            self.mappings = 0;
        }
    }

    /// Files, heap bytes and mappings kept (for tests).
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.entries.len(), self.bytes, self.mappings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("preforkd-cache-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn old(path: &Path) {
        let t = std::fs::FileTimes::new().set_modified(SystemTime::now() - Duration::from_secs(60));
        std::fs::File::options().write(true).open(path).unwrap().set_times(t).unwrap();
    }

    /// Offers `name` as a request would (opened, then offered) and says if it was kept.
    fn offer(cache: &mut FileCache, root: &Path, name: &str, now: SystemTime) -> bool {
        let f = std::fs::File::open(root.join(name)).unwrap();
        let meta = f.metadata().unwrap();
        cache.offer(&format!("/{name}"), Path::new(name), f, &meta, now, true).is_ok()
    }

    fn bytes(c: &Cached) -> &[u8] {
        match &c.kept {
            Kept::Bytes(b) => b,
            Kept::Mapped(m) => &m.map,
        }
    }

    #[test]
    fn a_kept_file_is_served_until_it_changes_in_any_way() {
        let d = dir("changes");
        let root = std::fs::File::open(&d).unwrap();
        let file = d.join("a.html");
        std::fs::write(&file, "one").unwrap();
        old(&file);
        let mut cache = FileCache::default();
        // Changed a moment ago: the ctime of the touch above is now, so it waits.
        assert!(!offer(&mut cache, &d, "a.html", SystemTime::now()), "a file changed within SETTLE is not kept");
        let later = SystemTime::now() + SETTLE + Duration::from_millis(10);
        assert!(offer(&mut cache, &d, "a.html", later));
        assert_eq!(bytes(cache.get(root.as_fd(), "/a.html").unwrap()), b"one");

        // In place, same size, and the mtime put back: the ctime still moved.
        std::fs::write(&file, "two").unwrap();
        old(&file);
        assert!(cache.get(root.as_fd(), "/a.html").is_none(), "an edit in place is a miss");
        assert!(offer(&mut cache, &d, "a.html", SystemTime::now() + SETTLE + Duration::from_millis(10)));
        // Replaced by a rename.
        let tmp = d.join("a.tmp");
        std::fs::write(&tmp, "six").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(cache.get(root.as_fd(), "/a.html").is_none(), "a replaced file is a miss");
        // Removed.
        assert!(offer(&mut cache, &d, "a.html", SystemTime::now() + SETTLE + Duration::from_millis(10)));
        std::fs::remove_file(&file).unwrap();
        assert!(cache.get(root.as_fd(), "/a.html").is_none(), "a removed file is a miss");
        assert_eq!(cache.stats().0, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_mapped_file_is_revalidated_and_a_truncated_one_is_a_miss() {
        let d = dir("mapped");
        let root = std::fs::File::open(&d).unwrap();
        let file = d.join("big.bin");
        std::fs::write(&file, vec![b'a'; 200_000]).unwrap();
        old(&file);
        let mut cache = FileCache::default();
        let later = SystemTime::now() + SETTLE + Duration::from_millis(10);
        assert!(offer(&mut cache, &d, "big.bin", later));
        let kept = cache.get(root.as_fd(), "/big.bin").expect("kept");
        assert!(matches!(kept.kept, Kept::Mapped(_)) && kept.len == 200_000);
        std::fs::File::options().write(true).open(&file).unwrap().set_len(1000).unwrap();
        assert!(cache.get(root.as_fd(), "/big.bin").is_none(), "a truncated file is a miss");
        assert_eq!(cache.stats().2, 0, "and its mapping is gone");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_cache_is_bounded() {
        let d = dir("bounds");
        let later = SystemTime::now() + SETTLE + Duration::from_secs(1);
        let mut cache = FileCache::default();
        std::fs::write(d.join("big"), vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        let f = std::fs::File::open(d.join("big")).unwrap();
        let meta = f.metadata().unwrap();
        assert!(
            cache.offer("/big", Path::new("big"), f, &meta, later, false).is_err(),
            "larger than MAX_FILE, no map: not kept"
        );
        for i in 0..(MAX_ENTRIES + 10) {
            std::fs::write(d.join(format!("f{i}")), vec![b'y'; 10_000]).unwrap();
            assert!(offer(&mut cache, &d, &format!("f{i}"), later));
            let (n, bytes, _) = cache.stats();
            assert!(n <= MAX_ENTRIES && bytes <= MAX_BYTES, "{n} entries, {bytes} bytes");
        }
        for i in 0..(MAX_MAPPINGS + 4) {
            std::fs::write(d.join(format!("m{i}")), vec![b'z'; MAX_FILE as usize + 1]).unwrap();
            assert!(offer(&mut cache, &d, &format!("m{i}"), later), "a large settled file is mapped");
            let (n, bytes, maps) = cache.stats();
            assert!(
                n <= MAX_ENTRIES && bytes <= MAX_BYTES && maps <= MAX_MAPPINGS,
                "{n} entries, {bytes} bytes, {maps} maps"
            );
        }
        assert!(cache.stats().2 > 0);
        cache.release_mappings();
        assert_eq!(cache.stats().2, 0, "no mapping outlives its connection");
        assert!(cache.stats().0 > 0, "small files stay kept");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
