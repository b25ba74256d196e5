//! Content types by file extension: Apache's `TypesConfig` (a `mime.types` file, by default the
//! system's `/etc/mime.types`), with a built-in table for what the file does not name or when
//! there is no such file.
//!
//! Types under `text/`, and JavaScript and JSON, are sent with `; charset=utf-8` (the built-in
//! table always did; Apache needs `AddDefaultCharset` for it): a browser otherwise guesses.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Where the system's table lives (Debian's `media-types` package, and most Unix systems).
pub const SYSTEM_TYPES: &str = "/etc/mime.types";

/// Extension → content type.
#[derive(Clone, Debug, Default)]
pub struct MimeTypes {
    /// From the types file, lower-case extensions; the header value to send.
    table: Arc<HashMap<String, String>>,
}

impl MimeTypes {
    /// Only the built-in table.
    pub fn builtin() -> MimeTypes {
        MimeTypes::default()
    }

    /// Reads a `mime.types` file: lines of `type ext ext …`, `#` comments.
    pub fn load(path: &Path) -> io::Result<MimeTypes> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("types_config {}: {e}", path.display())))?;
        Ok(MimeTypes::parse(&text))
    }

    /// The table in a `mime.types` text.
    pub fn parse(text: &str) -> MimeTypes {
        let mut table = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let Some(kind) = words.next() else { continue };
            if !kind.contains('/') || kind.bytes().any(|b| b.is_ascii_control()) {
                continue;
            }
            for ext in words {
                // The first mention wins, as in Apache's reading of the file.
                table.entry(ext.to_ascii_lowercase()).or_insert_with(|| with_charset(kind));
            }
        }
        MimeTypes { table: Arc::new(table) }
    }

    /// How many extensions the types file named.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the types file named none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The Content-Type for a file name.
    pub fn content_type(&self, path: &Path) -> &str {
        let Some(ext) = path.extension().and_then(OsStr::to_str) else { return DEFAULT };
        // Lower-cased only if it has to be (most names are: no allocation then).
        let ext: std::borrow::Cow<'_, str> =
            if ext.bytes().any(|b| b.is_ascii_uppercase()) { ext.to_ascii_lowercase().into() } else { ext.into() };
        match self.table.get(ext.as_ref()) {
            Some(t) => t,
            None => builtin(&ext),
        }
    }
}

/// What a file without a known extension is sent as.
pub const DEFAULT: &str = "application/octet-stream";

fn with_charset(kind: &str) -> String {
    let kind = kind.to_ascii_lowercase();
    if kind.starts_with("text/") || kind == "application/javascript" || kind == "application/json" {
        format!("{kind}; charset=utf-8")
    } else {
        kind
    }
}

/// The built-in table: the web's common types.
fn builtin(ext: &str) -> &'static str {
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json; charset=utf-8",
        "txt" | "text" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        _ => DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table() {
        let m = MimeTypes::builtin();
        assert_eq!(m.content_type(Path::new("x/INDEX.HTML")), "text/html; charset=utf-8");
        assert_eq!(m.content_type(Path::new("a.png")), "image/png");
        assert_eq!(m.content_type(Path::new("a.avif")), "image/avif");
        assert_eq!(m.content_type(Path::new("noext")), DEFAULT);
        assert_eq!(m.content_type(Path::new("a.unknown")), DEFAULT);
    }

    #[test]
    fn a_types_file_comes_first_and_the_builtin_table_fills_in() {
        let m = MimeTypes::parse(
            "# comment\napplication/x-thing\tthing THG\ntext/x-special special # trailing\n\
             image/png png\nimage/other png\nnot-a-type ext\napplication/empty\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m.content_type(Path::new("a.THING")), "application/x-thing");
        assert_eq!(m.content_type(Path::new("a.thg")), "application/x-thing");
        assert_eq!(m.content_type(Path::new("a.special")), "text/x-special; charset=utf-8");
        assert_eq!(m.content_type(Path::new("a.png")), "image/png", "first mention wins");
        assert_eq!(m.content_type(Path::new("a.ext")), DEFAULT, "a line without a type is skipped");
        assert_eq!(m.content_type(Path::new("a.css")), "text/css; charset=utf-8", "built-in fills in");
    }

    #[test]
    fn the_systems_table_when_present() {
        let Ok(m) = MimeTypes::load(Path::new(SYSTEM_TYPES)) else {
            eprintln!("skipped: no {SYSTEM_TYPES} on this machine (Debian package media-types)");
            return;
        };
        assert_eq!(m.content_type(Path::new("a.avif")), "image/avif");
        assert_eq!(m.content_type(Path::new("a.gz")), "application/gzip");
        assert_eq!(m.content_type(Path::new("a.html")), "text/html; charset=utf-8");
    }

    #[test]
    fn a_missing_types_file_says_which() {
        let e = MimeTypes::load(Path::new("/nonexistent/mime.types")).unwrap_err();
        assert!(e.to_string().starts_with("types_config /nonexistent/mime.types: "), "{e}");
    }
}
