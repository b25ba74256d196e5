//! Static files under `document_root`, and the rule that no request path ever leaves it.
//!
//! The policy (README "Paths"):
//! * the path is percent-decoded once; a `%00` or an invalid escape is a 400;
//! * empty and `.` segments are ignored; any `..` segment, encoded or not, is a 400 (there is no
//!   legitimate reason to walk up, so there is nothing to normalise);
//! * the result is resolved with `realpath` and must still be inside the (resolved) document root:
//!   symlinks inside the root are followed, symlinks that point out of it are a 403;
//! * a directory is served as its `index.html` (a 301 adds the missing trailing slash first); a
//!   directory without one is a 403 (there are no listings).

use percent_encoding::percent_decode_str;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The resolved document root.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
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
        /// Its resolved path (for the content type).
        path: PathBuf,
    },
    /// A directory named without its trailing slash: redirect here.
    Redirect(String),
    /// The path is malformed (bad escape, NUL, `..`).
    BadRequest(&'static str),
    /// Outside the root, unreadable, or a directory without an index.
    Forbidden,
    /// Nothing there.
    NotFound,
    /// An unexpected error reading it (I/O error, too many open files …).
    Failed,
}

impl Root {
    /// The document root; it must exist and be a directory.
    pub fn new(dir: &Path) -> io::Result<Root> {
        let dir = dir
            .canonicalize()
            .map_err(|e| io::Error::new(e.kind(), format!("document_root {}: {e}", dir.display())))?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("document_root {} is not a directory", dir.display()),
            ));
        }
        Ok(Root { dir })
    }

    /// The resolved root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves the path part of a request target (no query).
    pub fn resolve(&self, raw: &str) -> Resolved {
        let Some(rest) = raw.strip_prefix('/') else { return Resolved::BadRequest("the path does not start with /") };
        let mut path = self.dir.clone();
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
                name => path.push(OsStr::from_bytes(name)),
            }
        }
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => return from_io(&e),
        };
        if !real.starts_with(&self.dir) {
            return Resolved::Forbidden; // a symlink pointing out of the root
        }
        let real = if real.is_dir() {
            if !raw.ends_with('/') {
                return Resolved::Redirect(format!("{raw}/"));
            }
            match real.join("index.html").canonicalize() {
                Ok(index) if index.starts_with(&self.dir) => index,
                Ok(_) => return Resolved::Forbidden,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Resolved::Forbidden, // no listings
                Err(e) => return from_io(&e),
            }
        } else {
            real
        };
        match File::open(&real).and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((file, meta)) if meta.is_file() => Resolved::File { file, meta, path: real },
            Ok(_) => Resolved::Forbidden, // a device, a socket, a fifo
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

fn from_io(e: &io::Error) -> Resolved {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => Resolved::NotFound,
        io::ErrorKind::PermissionDenied => Resolved::Forbidden,
        _ => Resolved::Failed,
    }
}

/// The Content-Type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "text") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("csv") => "text/csv; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
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
        let r = Root::new(&root).unwrap();
        (base, r)
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    }

    fn kind(r: Resolved) -> String {
        match r {
            Resolved::File { path, .. } => format!("file {}", path.file_name().unwrap().to_string_lossy()),
            Resolved::Redirect(to) => format!("redirect {to}"),
            Resolved::BadRequest(_) => "400".into(),
            Resolved::Forbidden => "403".into(),
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
            ("/in", "file a.txt"),
            ("/out", "403"),
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
            assert_eq!(kind(r.resolve(path)), want, "{path}");
        }
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(Path::new("x/INDEX.HTML")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
