//! The access log: one line per request in the Common or Combined Log Format, appended to a
//! descriptor the parent opened with `O_APPEND`, so lines from different children never
//! interleave (each flush is one `write(2)` of whole lines).
//!
//! **Buffered per child** (Apache's `BufferedLogs On`): a line waits in the child's buffer
//! ([`BUFFER`] bytes) until its connection ends, or until the next line would not fit, so a
//! kept-alive request costs no `write` of its own. Nothing is lost on a graceful restart or stop
//! (a child leaves only between connections, with its buffer flushed), on a retirement, or on a
//! stop: the child's SIGTERM handler ([`AccessLog::flush_on_sigterm`]) writes the buffer before
//! the child dies of the signal as before. A SIGKILL (the parent's last step when a child ignores
//! SIGTERM for 9 s, or the stuck-child watchdog) loses the lines of the connection in hand, at
//! most [`BUFFER`] bytes.
//!
//! A line that cannot be written (a full disk, a removed device, a short write) is lost, and the
//! child goes on serving; it says so in the error log, with how many lines it has lost, at most once
//! a minute (so a full disk does not also fill the error log). The parent opens the file again at
//! every restart and graceful restart (a new `HttpService`), so a rotated log is let go of.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of access-log lines a child keeps before writing them (about 150 Combined lines).
pub const BUFFER: usize = 32 * 1024;

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
    /// Lines not yet written (boxed: its address is what the SIGTERM handler is given).
    pending: Box<Pending>,
    /// The line being formatted (kept: a line costs no allocation).
    line: RefCell<String>,
    /// The request time's text, formatted once a second.
    clf: RefCell<super::SecondText>,
}

/// The buffer, shared with a signal handler: `busy` is set while this process's own code changes
/// it, and a SIGTERM that comes then only sets `term`, which that code then acts on.
struct Pending {
    fd: i32,
    bytes: UnsafeCell<Box<[u8]>>,
    len: AtomicUsize,
    busy: AtomicBool,
    term: AtomicBool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("len", &self.len.load(SeqCst)).finish()
    }
}

/// See [`AccessLog::hold`].
#[derive(Debug)]
pub struct Held(std::rc::Rc<AccessLog>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.pending.release();
    }
}

/// The buffer the SIGTERM handler flushes (set by [`AccessLog::flush_on_sigterm`] in a child).
static ON_TERM: AtomicPtr<Pending> = AtomicPtr::new(std::ptr::null_mut());

impl Pending {
    /// Writes `len` bytes of the buffer with `write(2)` only (async-signal-safe); the bytes
    /// written, or the error.
    fn write_out(&self) -> Result<usize, io::Error> {
        let len = self.len.load(SeqCst);
        // SAFETY: the bytes are read while `busy` is held by the caller (or by the interrupted
        // code's absence: the handler runs only when `busy` is clear), so no one writes them.
        let bytes = unsafe { &*self.bytes.get() };
        let mut done = 0;
        while done < len {
            // SAFETY: a valid buffer of at least `len - done` bytes from `done`.
            let n = unsafe { libc::write(self.fd, bytes[done..].as_ptr().cast(), len - done) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.len.store(0, SeqCst);
                return Err(e);
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        self.len.store(0, SeqCst);
        if done < len { Err(io::Error::other(format!("only {done} of {len} bytes written"))) } else { Ok(done) }
    }

    /// The buffer, for the code that holds `busy`.
    #[allow(clippy::mut_from_ref)]
    fn bytes_mut_while_busy(&self) -> &mut [u8] {
        debug_assert!(self.busy.load(SeqCst));
        // SAFETY: only the holder of `busy` touches the bytes (the handler leaves them alone
        // while it is held), and it holds no other reference to them meanwhile.
        unsafe { &mut *self.bytes.get() }
    }

    /// After `busy` is released: a SIGTERM that came meanwhile is acted on now.
    fn release(&self) {
        self.busy.store(false, SeqCst);
        if self.term.load(SeqCst) {
            let _ = self.write_out();
            die_of(libc::SIGTERM);
        }
    }
}

/// A SIGTERM came while this child held its log buffer (a response was going out): the writes
/// it interrupted give up, the line is buffered, and the child then flushes and dies.
pub fn stop_requested() -> bool {
    let p = ON_TERM.load(SeqCst);
    // SAFETY: set from a live, boxed `Pending` that stays for the life of the child.
    !p.is_null() && unsafe { (*p).term.load(SeqCst) }
}

/// The default action of `sig`, now (the parent sees the child killed by it, as before).
fn die_of(sig: i32) -> ! {
    // SAFETY: restoring the default disposition, unblocking (inside its own handler the signal
    // is blocked) and raising are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

extern "C" fn flush_then_die(sig: libc::c_int) {
    let p = ON_TERM.load(SeqCst);
    if p.is_null() {
        die_of(sig);
    }
    // SAFETY: set from a live, boxed `Pending` that stays for the life of the child.
    let pending = unsafe { &*p };
    if pending.busy.load(SeqCst) {
        pending.term.store(true, SeqCst); // the code holding the buffer flushes and dies
        return;
    }
    let _ = pending.write_out();
    die_of(sig)
}

/// One logged request.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Client address (no port; `-` for none, e.g. a unix-socket peer).
    pub host: Option<std::net::IpAddr>,
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
        let pending = Box::new(Pending {
            fd: out.as_raw_fd(),
            bytes: UnsafeCell::new(vec![0u8; BUFFER].into_boxed_slice()),
            len: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            term: AtomicBool::new(false),
        });
        Ok(AccessLog {
            out,
            format,
            name: path.display().to_string(),
            lost: Cell::new(0),
            reported: Cell::new(None),
            pending,
            line: RefCell::new(String::with_capacity(256)),
            clf: RefCell::new(super::SecondText::new()),
        })
    }

    /// Buffers one line (writing the buffer first if the line does not fit). A line that cannot
    /// be written is counted and reported (rate-limited), never an error: a full disk must not
    /// stop serving.
    pub fn write(&self, e: &Entry<'_>) {
        self.holding(|p| {
            let mut line = self.line.borrow_mut();
            self.format_line(e, &mut line);
            if p.len.load(SeqCst) + line.len() > BUFFER {
                self.write_pending();
            }
            let len = p.len.load(SeqCst);
            if line.len() > BUFFER {
                // Longer than the whole buffer: on its own.
                match nix::unistd::write(&self.out, line.as_bytes()) {
                    Ok(n) if n == line.len() => {}
                    Ok(n) => self.lost(1, &format!("only {n} of {} bytes written", line.len())),
                    Err(err) => self.lost(1, &err.to_string()),
                }
            } else {
                p.bytes_mut_while_busy()[len..len + line.len()].copy_from_slice(line.as_bytes());
                p.len.store(len + line.len(), SeqCst);
            }
        });
    }

    /// Runs `f` with the buffer held (`busy`), then lets go of it unless a caller further out
    /// ([`AccessLog::hold`]) still holds it.
    fn holding(&self, f: impl FnOnce(&Pending)) {
        let p = &*self.pending;
        let held_outside = p.busy.swap(true, SeqCst);
        f(p);
        if !held_outside {
            p.release();
        }
    }

    /// Holds off a SIGTERM from the moment a response starts to go out until its line is
    /// buffered (the guard's drop), so a stop never loses the line of a request that was
    /// answered; a write the SIGTERM interrupts gives up at once ([`stop_requested`]), so the
    /// stop is not delayed.
    pub fn hold(self: &std::rc::Rc<Self>) -> Held {
        self.pending.busy.store(true, SeqCst);
        Held(self.clone())
    }

    /// Writes the buffered lines (at the end of every connection).
    pub fn flush(&self) {
        if self.pending.len.load(SeqCst) > 0 {
            self.holding(|_| self.write_pending());
        }
    }

    /// In a child: a SIGTERM (the parent's stop) first writes the buffered lines, then the child
    /// dies of the signal as it would have.
    pub fn flush_on_sigterm(&self) -> io::Result<()> {
        ON_TERM.store(std::ptr::from_ref::<Pending>(&self.pending).cast_mut(), SeqCst);
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(flush_then_die),
            // No SA_RESTART: a response write the signal interrupts returns EINTR, and gives up
            // when `stop_requested` (http/mod.rs: `write_all`, `send_file`).
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler uses only atomics, write(2), signal(2), raise(3) and _exit(2).
        unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &action) }
            .map(|_| ())
            .map_err(io::Error::from)
    }

    /// Lines waiting in the buffer (for tests).
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len.load(SeqCst)
    }

    /// `busy` must be held.
    fn write_pending(&self) {
        let p = &*self.pending;
        let lines = {
            let len = p.len.load(SeqCst);
            p.bytes_mut_while_busy()[..len].iter().filter(|&&b| b == b'\n').count() as u64
        };
        if let Err(e) = p.write_out() {
            self.lost(lines, &e.to_string());
        }
    }

    /// Lines this process could not write so far.
    pub fn lost_lines(&self) -> u64 {
        self.lost.get()
    }

    fn lost(&self, lines: u64, why: &str) {
        let lost = self.lost.get() + lines;
        self.lost.set(lost);
        let now = Instant::now();
        if self.reported.get().is_none_or(|at| now.duration_since(at) >= LOSS_REPORT_EVERY) {
            self.reported.set(Some(now));
            tracing::error!(
                "access_log {}: {lines} line(s) could not be written ({why}); this child has lost {lost} line(s); \
                 serving goes on (reported at most once a minute per child)",
                self.name
            );
        }
    }

    /// Formats `e` into `line` (cleared first; a buffer kept between calls, so a line costs no
    /// allocation).
    fn format_line(&self, e: &Entry<'_>, line: &mut String) {
        use std::fmt::Write;
        line.clear();
        let _ = match e.host {
            Some(ip) => write!(line, "{ip}"),
            None => write!(line, "-"),
        };
        let mut clf = self.clf.borrow_mut();
        let time = clf.of(e.time, |text, t| {
            let _ = write!(text, "{}", ClfTime(t));
        });
        let _ = write!(line, " - - [{time}] \"{}\" {} ", Escaped(e.request_line), e.status);
        let _ = if e.bytes == 0 { write!(line, "-") } else { write!(line, "{}", e.bytes) };
        if self.format == LogFormat::Combined {
            let _ =
                write!(line, " \"{}\" \"{}\"", Escaped(e.referer.unwrap_or("-")), Escaped(e.user_agent.unwrap_or("-")));
        }
        line.push('\n');
    }
}

/// Displays a string with quotes, backslashes and control characters escaped, as Apache does in
/// logs.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        let mut plain = 0; // start of the run of characters written as they are
        for (i, c) in s.char_indices() {
            if c == '"' || c == '\\' || c.is_control() {
                f.write_str(&s[plain..i])?;
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    c => write!(f, "\\x{:02x}", c as u32)?,
                }
                plain = i + c.len_utf8();
            }
        }
        f.write_str(&s[plain..])
    }
}

/// Displays a time as `[day/Mon/year:HH:MM:SS +0000]` contents (UTC).
struct ClfTime(SystemTime);

impl std::fmt::Display for ClfTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        write!(
            f,
            "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
            MONTHS[(m - 1) as usize],
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
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
    fn a_second_is_formatted_once_and_the_next_second_again() {
        let mut cache = super::super::SecondText::new();
        let mut calls = 0;
        let t = UNIX_EPOCH + Duration::from_millis(1_795_614_311_100);
        for (at, expect_calls) in [(t, 1), (t + Duration::from_millis(800), 1), (t + Duration::from_millis(900), 2)] {
            let text = cache
                .of(at, |text, t| {
                    calls += 1;
                    text.push_str(&ClfTime(t).to_string());
                })
                .to_string();
            assert_eq!(text, ClfTime(at).to_string());
            assert_eq!(calls, expect_calls);
        }
    }

    #[test]
    fn clf_dates() {
        assert_eq!(ClfTime(UNIX_EPOCH).to_string(), "01/Jan/1970:00:00:00 +0000");
        // 2026-11-25 13:45:11 UTC
        assert_eq!(ClfTime(UNIX_EPOCH + Duration::from_secs(1_795_614_311)).to_string(), "25/Nov/2026:13:45:11 +0000");
        assert_eq!(ClfTime(UNIX_EPOCH + Duration::from_secs(951_782_400)).to_string(), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn combined_lines_escape_what_clients_send() {
        let path = std::env::temp_dir().join(format!("prefork-access-{}", std::process::id()));
        let log = AccessLog::open(&path, LogFormat::Combined).unwrap();
        log.write(&Entry {
            host: Some([127, 0, 0, 1].into()),
            request_line: "GET /a\"b HTTP/1.1",
            status: 200,
            bytes: 0,
            referer: None,
            user_agent: Some("curl/8\u{1}"),
            time: UNIX_EPOCH,
        });
        assert!(std::fs::read_to_string(&path).unwrap().is_empty(), "buffered until flushed");
        log.flush();
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
            host: None,
            request_line: "GET / HTTP/1.1",
            status: 200,
            bytes: 1,
            referer: None,
            user_agent: None,
            time: UNIX_EPOCH,
        };
        log.write(&e);
        log.write(&e);
        assert_eq!(log.lost_lines(), 0, "still buffered");
        log.flush();
        assert_eq!(log.lost_lines(), 2);
        assert_eq!(log.buffered_bytes(), 0);
    }
}
