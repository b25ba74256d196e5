//! Static files under `document_root`, and the rule that no request path ever leaves it.
//!
//! The policy (SPEC.md §12.4):
//! * the path is percent-decoded once; a `%00` or an invalid escape is a 400;
//! * empty and `.` segments are ignored; any `..` segment, encoded or not, is a 400 (there is no
//!   legitimate reason to walk up, so there is nothing to normalise);
//! * the result must still be inside the document root once symlinks are followed: symlinks inside
//!   the root are followed, symlinks that point out of it are a 403. The file is opened with
//!   `openat2(RESOLVE_BENEATH)` relative to the root's descriptor, so the kernel itself refuses any
//!   step outside, in the same system call that opens the file (no window between a check and the
//!   open). Where `openat2` refuses an absolute symlink (which it always does) or is not available
//!   (Linux < 5.6, a seccomp filter), the path is resolved with `realpath` and checked against the
//!   root, then opened, which gives the same answers;
//! * a directory is served as its `index.html` (a 301 adds the missing trailing slash first); a
//!   directory without one is a 403 (there are no listings); a file named with a trailing slash is
//!   a 404 (no path info, as Apache for static files);
//! * only regular files are served: a fifo, socket or device is a 403 (opened non-blocking, so a
//!   fifo cannot hang the child);
//! * a symlink loop, or any unexpected error (EMFILE, EIO ...), is a 500;
//! * the Content-Type comes from the name asked for, not a symlink's target (as Apache's mod_mime;
//!   see [`super::mime`]).

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use percent_encoding::percent_decode_str;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The resolved document root.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    /// The root directory, opened `O_PATH`: what `openat2` resolves beneath.
    fd: Arc<OwnedFd>,
    /// `openat2` works here (cleared on `ENOSYS`/`EPERM`).
    beneath: Arc<AtomicBool>,
}

/// What a request path names.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file to send.
    File {
        /// The open file.
        file: File,
        /// Its metadata (size, mtime).
        meta: Metadata,
        /// The name it was asked by (for the content type).
        path: PathBuf,
    },
    /// A directory named without its trailing slash: redirect here.
    Redirect(String),
    /// The path is malformed (bad escape, NUL, `..`).
    BadRequest(&'static str),
    /// Outside the root, unreadable, not a regular file, or a directory without an index: why,
    /// for the error log (Apache's words and code).
    Forbidden(&'static str),
    /// Nothing there.
    NotFound,
    /// An unexpected error reading it (I/O error, too many open files …).
    Failed,
}

/// How an `openat2` beneath the root ended.
enum Beneath {
    Opened(File),
    /// Refused or unavailable: decide with `realpath` instead.
    Fallback,
    Error(io::Error),
}

impl Root {
    /// The document root; it must exist and be a directory.
    pub fn new(dir: &Path) -> io::Result<Root> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("document_root {}: {e}", dir.display()));
        let real = dir.canonicalize().map_err(context)?;
        if !real.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("document_root {} is not a directory", dir.display()),
            ));
        }
        let fd = nix::fcntl::open(&real, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| context(e.into()))?;
        Ok(Root { dir: real, fd: Arc::new(fd), beneath: Arc::new(AtomicBool::new(true)) })
    }

    /// The resolved root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root's descriptor (names beneath it are resolved from here).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves the path part of a request target (no query).
    pub fn resolve(&self, raw: &str) -> Resolved {
        let Some(rest) = raw.strip_prefix('/') else { return Resolved::BadRequest("the path does not start with /") };
        let mut rel = PathBuf::new();
        for segment in rest.split('/') {
            if !valid_escapes(segment) {
                return Resolved::BadRequest("invalid percent-encoding");
            }
            let decoded: Vec<u8> = percent_decode_str(segment).collect();
            if decoded.contains(&0) {
                return Resolved::BadRequest("NUL in the path");
            }
            if decoded.contains(&b'/') {
                return Resolved::BadRequest("an encoded / in the path");
            }
            match decoded.as_slice() {
                b"" | b"." => {}
                b".." => return Resolved::BadRequest("\"..\" in the path"),
                name => rel.push(OsStr::from_bytes(name)),
            }
        }
        if self.beneath.load(Ordering::Relaxed)
            && let Some(r) = self.resolve_beneath(raw, &rel)
        {
            return r;
        }
        self.resolve_by_realpath(raw, &rel) // what openat2 could not decide
    }

    /// `None`: `openat2` cannot decide (an absolute symlink, a step outside, not available).
    fn resolve_beneath(&self, raw: &str, rel: &Path) -> Option<Resolved> {
        let file = match self.open_beneath(rel) {
            Beneath::Opened(f) => f,
            Beneath::Fallback => return None,
            Beneath::Error(e) => return Some(from_io(&e)),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Some(from_io(&e)),
        };
        if meta.is_file() {
            // A file named as a directory ("/a.html/"): there is no path info here, as Apache.
            return Some(if raw.ends_with('/') {
                Resolved::NotFound
            } else {
                Resolved::File { file, meta, path: rel.to_path_buf() }
            });
        }
        if !meta.is_dir() {
            return Some(Resolved::Forbidden(NOT_A_FILE)); // a device, a socket, a fifo
        }
        if !raw.ends_with('/') {
            return Some(Resolved::Redirect(format!("{raw}/")));
        }
        let index = rel.join("index.html");
        Some(match self.open_beneath(&index) {
            Beneath::Opened(file) => match file.metadata() {
                Ok(meta) if meta.is_file() => Resolved::File { file, meta, path: index },
                Ok(_) => Resolved::Forbidden(NOT_A_FILE),
                Err(e) => from_io(&e),
            },
            Beneath::Fallback => return None,
            Beneath::Error(e) if e.kind() == io::ErrorKind::NotFound => Resolved::Forbidden(NO_INDEX), // no listings
            Beneath::Error(e) => from_io(&e),
        })
    }

    fn open_beneath(&self, rel: &Path) -> Beneath {
        use nix::fcntl::{OpenHow, ResolveFlag, openat2};
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        match openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => Beneath::Opened(File::from(fd)),
            // A step outside the root, or an absolute symlink (which may still end inside).
            Err(Errno::EXDEV) => Beneath::Fallback,
            // No openat2 on this kernel, or a seccomp filter forbids it: stop trying.
            Err(Errno::ENOSYS | Errno::EPERM) => {
                self.beneath.store(false, Ordering::Relaxed);
                Beneath::Fallback
            }
            Err(e) => Beneath::Error(e.into()),
        }
    }

    /// The portable way: `realpath`, a prefix check, then open (what `openat2` cannot decide).
    fn resolve_by_realpath(&self, raw: &str, rel: &Path) -> Resolved {
        let path = self.dir.join(rel);
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => return from_io(&e),
        };
        if !real.starts_with(&self.dir) {
            return Resolved::Forbidden(OUTSIDE); // a symlink pointing out of the root
        }
        let (real, name) = if real.is_dir() {
            if !raw.ends_with('/') {
                return Resolved::Redirect(format!("{raw}/"));
            }
            match real.join("index.html").canonicalize() {
                Ok(index) if index.starts_with(&self.dir) => (index, rel.join("index.html")),
                Ok(_) => return Resolved::Forbidden(OUTSIDE),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Resolved::Forbidden(NO_INDEX), // no listings
                Err(e) => return from_io(&e),
            }
        } else if raw.ends_with('/') {
            return Resolved::NotFound; // a file named as a directory
        } else {
            (real, rel.to_path_buf())
        };
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&real)
            .and_then(|f| f.metadata().map(|m| (f, m)));
        match opened {
            Ok((file, meta)) if meta.is_file() => Resolved::File { file, meta, path: name },
            Ok(_) => Resolved::Forbidden(NOT_A_FILE), // a device, a socket, a fifo
            Err(e) => from_io(&e),
        }
    }
}

/// Every `%` is followed by two hex digits.
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Why a 403, as Apache's error log says it.
const PERMISSIONS: &str = "[AH00132] file permissions deny server access (the children's user cannot read it)";
const NOT_A_FILE: &str = "not a regular file (a device, socket or fifo)";
const NO_INDEX: &str = "[AH01276] no index.html in the directory, and listings are not served";
const OUTSIDE: &str = "[AH00037] a symbolic link leads out of document_root";

fn from_io(e: &io::Error) -> Resolved {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => Resolved::NotFound,
        io::ErrorKind::PermissionDenied => Resolved::Forbidden(PERMISSIONS),
        _ => Resolved::Failed,
    }
}

/// The page served when no `document_root` is configured.
pub const DEFAULT_PAGE: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>preforkd</title></head>
<body>
<h1>preforkd works</h1>
<p>This is the built-in page of <strong>preforkd</strong>, a preforking HTTP server whose process
model (Apache's MPM prefork) is model-checked. Set <code>document_root</code> to serve your files.</p>
<p>Server status: <a href=\"/server-status\">/server-status</a> (from this machine).</p>
</body>
</html>
";

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (PathBuf, Root) {
        let base = std::env::temp_dir().join(format!("prefork-files-{}-{}", std::process::id(), rand_suffix()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("dir/index.html"), "<p>").unwrap();
        std::fs::write(root.join("with space.css"), "x").unwrap();
        std::fs::write(base.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("in")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("rel.html")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../root/dir", root.join("around")).unwrap();
        std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = Root::new(&root).unwrap();
        (base, r)
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    }

    fn kind(r: Resolved) -> String {
        match r {
            Resolved::File { path, .. } => {
                format!("file {}", path.file_name().unwrap_or_else(|| OsStr::new("?")).to_string_lossy())
            }
            Resolved::Redirect(to) => format!("redirect {to}"),
            Resolved::BadRequest(_) => "400".into(),
            Resolved::Forbidden(_) => "403".into(),
            Resolved::NotFound => "404".into(),
            Resolved::Failed => "500".into(),
        }
    }

    #[test]
    fn paths_resolve_inside_the_root_and_never_outside() {
        let (base, r) = tree();
        let cases = [
            ("/a.txt", "file a.txt"),
            ("/./a.txt", "file a.txt"),
            ("//a.txt", "file a.txt"),
            ("/with%20space.css", "file with space.css"),
            ("/dir", "redirect /dir/"),
            ("/dir/", "file index.html"),
            ("/empty/", "403"),
            ("/in", "file in"),
            ("/rel.html", "file rel.html"),
            ("/out", "403"),
            ("/up", "403"),
            ("/around/", "file index.html"),
            ("/slash", "403"),
            ("/slash/etc/passwd", "403"),
            ("/fifo", "403"),
            ("/loop", "500"),
            ("/", "403"),
            ("/dir/index.html/", "404"),
            ("/missing", "404"),
            ("/a.txt/x", "404"),
            ("/../secret", "400"),
            ("/dir/../../secret", "400"),
            ("/%2e%2e/secret", "400"),
            ("/%2E%2E%2Fsecret", "400"),
            ("/.%2e/secret", "400"),
            ("/a%00.txt", "400"),
            ("/a%zz", "400"),
            ("/a%2", "400"),
            ("a.txt", "400"),
        ];
        for (path, want) in cases {
            assert_eq!(kind(r.resolve(path)), want, "{path} (openat2)");
        }
        assert!(r.beneath.load(Ordering::Relaxed), "openat2 works on this kernel");
        // The realpath way gives the same answers (what runs without openat2).
        r.beneath.store(false, Ordering::Relaxed);
        for (path, want) in cases {
            assert_eq!(kind(r.resolve(path)), want, "{path} (realpath)");
        }
        std::fs::remove_dir_all(base).unwrap();
    }
}
