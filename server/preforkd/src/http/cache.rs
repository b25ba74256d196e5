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

/// A kept file.
#[derive(Debug)]
pub struct Cached {
    /// Its bytes.
    pub bytes: Rc<[u8]>,
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

    /// Offers the file just opened for `key` (`name` relative to the root): if it is small and
    /// settled, its bytes are read and kept. Returns them (the caller serves these bytes, which
    /// are what the identity describes), or `None` to serve from the file.
    pub fn offer(
        &mut self,
        key: &str,
        name: &Path,
        file: &std::fs::File,
        meta: &std::fs::Metadata,
        now: SystemTime,
    ) -> Option<Rc<[u8]>> {
        let identity = Identity::of(meta);
        if !meta.is_file() || meta.len() > MAX_FILE || !identity.settled(now) {
            return None;
        }
        let statx_name =
            CString::new(if name.as_os_str().is_empty() { b".".as_slice() } else { name.as_os_str().as_bytes() })
                .ok()?;
        let mut bytes = vec![0u8; meta.len() as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, 0).ok()?;
        let bytes: Rc<[u8]> = bytes.into();
        self.remove(key);
        while !self.entries.is_empty() && (self.entries.len() >= MAX_ENTRIES || self.bytes + bytes.len() > MAX_BYTES) {
            let victim = self.entries.keys().next().cloned().expect("not empty");
            self.remove(&victim);
        }
        self.bytes += bytes.len();
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        self.entries.insert(
            key.to_string(),
            Cached { bytes: bytes.clone(), modified, name: name.to_path_buf(), statx_name, identity },
        );
        Some(bytes)
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes.len();
        }
    }

    /// Files and bytes kept (for tests).
    pub fn stats(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
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
        cache.offer(&format!("/{name}"), Path::new(name), &f, &meta, now).is_some()
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
        assert_eq!(&*cache.get(root.as_fd(), "/a.html").unwrap().bytes, b"one");

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
    fn the_cache_is_bounded() {
        let d = dir("bounds");
        let later = SystemTime::now() + SETTLE + Duration::from_secs(1);
        let mut cache = FileCache::default();
        std::fs::write(d.join("big"), vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        assert!(!offer(&mut cache, &d, "big", later), "larger than MAX_FILE: not kept");
        for i in 0..(MAX_ENTRIES + 10) {
            std::fs::write(d.join(format!("f{i}")), vec![b'y'; 10_000]).unwrap();
            assert!(offer(&mut cache, &d, &format!("f{i}"), later));
            let (n, bytes) = cache.stats();
            assert!(n <= MAX_ENTRIES && bytes <= MAX_BYTES, "{n} entries, {bytes} bytes");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
