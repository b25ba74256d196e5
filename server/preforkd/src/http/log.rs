//! The access log: one line per request in the Common or Combined Log Format, written by the child
//! that served it with a single `write(2)` on a descriptor the parent opened with `O_APPEND`, so
//! lines from different children never interleave.
//!
//! A line that cannot be written (a full disk, a removed device, a short write) is lost, and the
//! child goes on serving; it says so in the error log, with how many lines it has lost, at most once
//! a minute (so a full disk does not also fill the error log). The parent opens the file again at
//! every restart and graceful restart (a new `HttpService`), so a rotated log is let go of.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A child reports lost access-log lines at most this often.
pub const LOSS_REPORT_EVERY: Duration = Duration::from_secs(60);

/// `log_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `%h %l %u %t "%r" %>s %b`
    Common,
    /// Common plus `"%{Referer}i" "%{User-agent}i"`.
    #[default]
    Combined,
}

impl LogFormat {
    /// Its configuration word.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Common => "common",
            LogFormat::Combined => "combined",
        }
    }
}

/// Where access log lines go.
#[derive(Debug)]
pub struct AccessLog {
    out: File,
    format: LogFormat,
    /// The path, for messages.
    name: String,
    /// Lines this process could not write.
    lost: Cell<u64>,
    /// When that was last reported.
    reported: Cell<Option<Instant>>,
}

/// One logged request.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Client address (no port).
    pub host: &'a str,
    /// The request line as received.
    pub request_line: &'a str,
    /// Status code sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// `Referer` header.
    pub referer: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// When the request arrived.
    pub time: SystemTime,
}

impl AccessLog {
    /// Opens `path` for appending (`-` is standard output).
    pub fn open(path: &Path, format: LogFormat) -> io::Result<AccessLog> {
        let out = if path == Path::new("-") {
            File::from(io::stdout().as_fd().try_clone_to_owned()?)
        } else {
            File::options()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("access_log {}: {e}", path.display())))?
        };
        Ok(AccessLog { out, format, name: path.display().to_string(), lost: Cell::new(0), reported: Cell::new(None) })
    }

    /// Writes one line. A line that cannot be written is counted and reported (rate-limited), never
    /// an error: a full disk must not stop serving.
    pub fn write(&self, e: &Entry<'_>) {
        let line = self.format_line(e);
        match (&self.out).write(line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            Ok(n) => self.lost(&format!("only {n} of {} bytes written", line.len())),
            Err(err) => self.lost(&err.to_string()),
        }
    }

    /// Lines this process could not write so far.
    pub fn lost_lines(&self) -> u64 {
        self.lost.get()
    }

    fn lost(&self, why: &str) {
        let lost = self.lost.get() + 1;
        self.lost.set(lost);
        let now = Instant::now();
        if self.reported.get().is_none_or(|at| now.duration_since(at) >= LOSS_REPORT_EVERY) {
            self.reported.set(Some(now));
            tracing::error!(
                "access_log {}: a line could not be written ({why}); this child has lost {lost} line(s); \
                 serving goes on (reported at most once a minute per child)",
                self.name
            );
        }
    }

    fn format_line(&self, e: &Entry<'_>) -> String {
        let bytes = if e.bytes == 0 { "-".to_string() } else { e.bytes.to_string() };
        let mut line =
            format!("{} - - [{}] \"{}\" {} {}", e.host, clf_time(e.time), escape(e.request_line), e.status, bytes);
        if self.format == LogFormat::Combined {
            line.push_str(&format!(
                " \"{}\" \"{}\"",
                escape(e.referer.unwrap_or("-")),
                escape(e.user_agent.unwrap_or("-"))
            ));
        }
        line.push('\n');
        line
    }
}

/// Escapes quotes, backslashes and control characters, as Apache does in logs.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `[day/Mon/year:HH:MM:SS +0000]` contents (UTC).
pub fn clf_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000", MONTHS[(m - 1) as usize], rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_dates() {
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        // 2026-11-25 13:45:11 UTC
        assert_eq!(clf_time(UNIX_EPOCH + Duration::from_secs(1_795_614_311)), "25/Nov/2026:13:45:11 +0000");
        assert_eq!(clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn combined_lines_escape_what_clients_send() {
        let path = std::env::temp_dir().join(format!("prefork-access-{}", std::process::id()));
        let log = AccessLog::open(&path, LogFormat::Combined).unwrap();
        log.write(&Entry {
            host: "127.0.0.1",
            request_line: "GET /a\"b HTTP/1.1",
            status: 200,
            bytes: 0,
            referer: None,
            user_agent: Some("curl/8\u{1}"),
            time: UNIX_EPOCH,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /a\\\"b HTTP/1.1\" 200 - \"-\" \"curl/8\\x01\"\n"
        );
        assert_eq!(log.lost_lines(), 0);
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted() {
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let log = AccessLog::open(Path::new("/dev/full"), LogFormat::Common).unwrap();
        let e = Entry {
            host: "h",
            request_line: "GET / HTTP/1.1",
            status: 200,
            bytes: 1,
            referer: None,
            user_agent: None,
            time: UNIX_EPOCH,
        };
        log.write(&e);
        log.write(&e);
        assert_eq!(log.lost_lines(), 2);
    }
}
