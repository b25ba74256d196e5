//! Fuzz bodies for what the server reads from outside: HTTP requests, configuration files, and the
//! shared scoreboard (which any process of the same user can scribble on). The cargo-fuzz targets
//! in `fuzz/` call these; `tests/fuzz_corpus.rs` replays the committed corpora on stable. Each
//! body panics only when the code under test panics or an answer breaks its contract.

use crate::http::{HttpConfig, HttpService, status};
use prefork_core::scoreboard::ScoreboardView;
use prefork_core::time::Time;
use prefork_core::{Parent, ParentDriver, PoolConfig, RawPoolConfig, Recorder};
use prefork_server::harness::ServiceHarness;
use prefork_server::shm::{Header, Scoreboard, SlotRecord};
use prefork_server::{PoolSnapshot, Stream};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the HTTP body serves: a small document root, in a one-child pool in this process.
struct HttpFixture {
    pool: ServiceHarness,
    service: HttpService,
    _root: PathBuf,
}

thread_local! {
    static HTTP: RefCell<Option<HttpFixture>> = const { RefCell::new(None) };
}

fn http_fixture() -> HttpFixture {
    // One fixed directory (written the same way by every run), not one per process.
    let root = std::env::temp_dir().join("prefork-fuzz-root");
    let _ = std::fs::create_dir_all(root.join("dir"));
    let _ = std::fs::write(root.join("index.html"), "<p>home</p>");
    let _ = std::fs::write(root.join("a.txt"), "a");
    let _ = std::fs::write(root.join("dir/index.html"), "<p>dir</p>");
    let _ = std::fs::write(root.join("big.bin"), vec![7u8; 100_000]);
    let pool = ServiceHarness::new(2).expect("a scoreboard");
    let cfg = HttpConfig {
        document_root: Some(root.clone()),
        access_log: Some(PathBuf::from("/dev/null")),
        timeout: Duration::from_secs(1),
        request_read_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        limit_request_line: 200,
        limit_request_field_size: 200,
        limit_request_fields: 20,
        limit_request_body: 1000,
        ..HttpConfig::default()
    };
    let service = HttpService::new(cfg).expect("the HTTP service");
    HttpFixture { pool, service, _root: root }
}

/// Statuses preforkd may answer with (SPEC.md §12.1).
const STATUSES: [u16; 20] =
    [100, 200, 206, 301, 304, 400, 403, 404, 405, 408, 411, 412, 413, 414, 416, 417, 431, 500, 501, 505];

/// The whole HTTP service on one connection whose client sends `data` and then half-closes.
/// Checks that the output is a sequence of complete, well-formed HTTP/1.1 responses, each with a
/// known status and a `Content-Length` that matches its body, and nothing else.
pub fn http_request(data: &[u8]) {
    HTTP.with(|cell| {
        let mut guard = cell.borrow_mut();
        let fx = guard.get_or_insert_with(http_fixture);
        let (mut client, server) = UnixStream::pair().expect("a socket pair");
        let input = data.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&input);
            let _ = client.shutdown(std::net::Shutdown::Write);
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out);
            out
        });
        // A fresh slot for each connection, as after a work claim.
        let _ = fx.pool.serve(&mut fx.service, Stream::Unix(server), None);
        let out = writer.join().expect("the client thread");
        check_responses(data, &out);
        check_framing(data, &out);
    });
}

/// Framing oracles (SPEC.md §12.1.2) for a first request whose head httparse reads completely
/// within the fixture's limits (20 fields, lines of at most 200 bytes, CR LF line ends): two `Host`
/// lines, a `Content-Length` with anything but digits or on two lines, or any `Transfer-Encoding`,
/// must be refused (400, 411 or 501) with `Connection: close`.
fn check_framing(input: &[u8], out: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 20];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(input) else { return };
    let head = &input[..len];
    let lines_fit = head.split(|&b| b == b'\n').all(|l| l.len() <= 200);
    if !lines_fit || crate::http::framing::has_bare_lf(head) || req.version != Some(1) {
        return;
    }
    let named = |n: &str| req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
    let lengths: Vec<&[u8]> =
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Content-Length")).map(|h| h.value).collect();
    let bad_length = lengths.len() > 1 || lengths.iter().any(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit));
    if !(named("Host") > 1 || bad_length || named("Transfer-Encoding") > 0) {
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = r.parse(out) else {
        panic!("no answer to a head that must be refused, for {input:?}: {:?}", String::from_utf8_lossy(out))
    };
    let code = r.code.unwrap_or(0);
    assert!(matches!(code, 400 | 411 | 501), "a head that must be refused got {code}, for {input:?}");
    let close = r.headers.iter().any(|h| h.name.eq_ignore_ascii_case("Connection") && h.value == b"close");
    assert!(close, "a framing refusal closes the connection, for {input:?}");
}

fn check_responses(input: &[u8], mut out: &[u8]) {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let len = match r.parse(out) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("not a complete response ({other:?}) for {input:?}: {:?}", String::from_utf8_lossy(out)),
        };
        let code = r.code.expect("a status");
        assert!(STATUSES.contains(&code), "status {code} for {input:?}");
        assert_eq!(r.version, Some(1), "HTTP/1.1 responses");
        let length: usize = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| std::str::from_utf8(h.value).expect("ASCII").parse().expect("a number"))
            .unwrap_or_else(|| {
                assert!(matches!(code, 100 | 304), "no Content-Length on a {code}, for {input:?}");
                0
            });
        // 304 carries no body, nor does the answer to a HEAD (possible only if the input holds a
        // HEAD: then the next response, or the end, follows at once); anything else carries its
        // whole body. A short body is a broken promise of Content-Length.
        let rest = &out[len..];
        let closes = r
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("Connection") && h.value.eq_ignore_ascii_case(b"close"));
        let head_possible = input.windows(4).any(|w| w.eq_ignore_ascii_case(b"HEAD"));
        // A 100 Continue is interim: its final response follows.
        let bodiless =
            code == 100 || code == 304 || (head_possible && (rest.is_empty() || looks_like_a_response(rest)));
        let body = if bodiless { 0 } else { length };
        assert!(
            rest.len() >= body,
            "status {code}: Content-Length {length} but {} bytes follow, for {input:?}",
            rest.len()
        );
        out = &rest[body..];
        // A response that says the connection closes is the last thing on it: nothing after it was
        // read as a request (a body framed one way by us and another way by a proxy would be).
        assert!(
            !closes || out.is_empty(),
            "status {code} said Connection: close, but {} more bytes followed, for {input:?}",
            out.len()
        );
    }
}

fn looks_like_a_response(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.1 ")
}

/// A configuration file's text, as `--config` would read it, resolved as at start-up and as a
/// reload of a running pool. Errors must be messages that say where (the file name); accepted
/// configurations must hold the clamps of SPEC.md §8.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    let cli = crate::settings::Settings::default();
    let (settings, sources) = match crate::settings::load_text(&text, path, &cli) {
        Ok(s) => s,
        Err(errors) => {
            assert!(errors.iter().all(|e| e.starts_with("fuzz.toml")), "{errors:?}");
            return;
        }
    };
    let running = PoolConfig::default();
    for against in [None, Some(&running)] {
        match crate::settings::resolve(&settings, &sources, against) {
            Ok(r) => {
                let p = &r.pool;
                assert!(p.max_request_workers <= p.server_limit && p.max_request_workers >= 1, "{p:?}");
                assert!(p.start_servers >= 1 && p.start_servers <= p.max_request_workers, "{p:?}");
                assert!(p.min_spare_servers >= 1 && p.max_spare_servers > p.min_spare_servers, "{p:?}");
                assert!(!p.listen.is_empty(), "{p:?}");
                if against.is_some() {
                    assert_eq!(p.server_limit, running.server_limit, "server_limit cannot change on a reload");
                }
            }
            Err(errors) => {
                assert!(!errors.is_empty());
                assert!(errors.iter().all(|e| !e.is_empty() && e.contains(": ")), "{errors:?}");
            }
        }
    }
}

thread_local! {
    static BOARD: RefCell<Option<Scoreboard>> = const { RefCell::new(None) };
}

const FUZZ_SLOTS: usize = 8;

fn scribble(board: &Scoreboard, data: &[u8], salt: u64) {
    let words = |i: usize| -> u64 {
        if data.is_empty() {
            return 0;
        }
        let mut w = [0u8; 8];
        for (k, b) in w.iter_mut().enumerate() {
            *b = data[(i * 8 + k) % data.len()];
        }
        u64::from_le_bytes(w) ^ salt
    };
    let h = board.header();
    for (i, w) in [&h.generation, &h.spawn_rate, &h.spawned_total, &h.started_ms, &h.restarted_ms].iter().enumerate() {
        w.store(words(i), Ordering::Relaxed);
    }
    for slot in 0..FUZZ_SLOTS {
        let r: &SlotRecord = board.record(slot);
        let base = 8 + slot * 32;
        let fields = [
            &r.word,
            &r.pid,
            &r.seq,
            &r.connections,
            &r.requests,
            &r.bytes,
            &r.wasted_wakeups,
            &r.activity,
            &r.started_ms,
            &r.last_used_ms,
            &r.exit_reason,
            &r.killed_for,
            &r.killed_ms,
        ];
        for (k, f) in fields.iter().enumerate() {
            f.store(words(base + k), Ordering::Relaxed);
        }
        for (k, f) in r.client.iter().chain(r.request.iter()).enumerate() {
            f.store(words(base + fields.len() + k), Ordering::Relaxed);
        }
    }
}

/// Arbitrary bytes in the shared scoreboard. The status pages render whatever is there; a parent
/// whose board was scribbled on never panics, and its next maintenance tick leaves no corrupt slot
/// (I14). The same bytes as a file to open (as `Scoreboard::open_for_pid` does): a clear error or
/// a board, never a panic.
pub fn scoreboard(data: &[u8]) {
    BOARD.with(|cell| {
        let mut guard = cell.borrow_mut();
        let board = guard.get_or_insert_with(|| Scoreboard::create(FUZZ_SLOTS, 1, 0).expect("a scoreboard"));
        // Pages, over garbage.
        scribble(board, data, 0);
        let snap = PoolSnapshot::take(board);
        // CPU times at their extremes too (they come from /proc, not from the board).
        let cpu = status::Cpu {
            tick: 100.0,
            parent: [u64::MAX; 4],
            slots: vec![Some((u64::MAX, 1)); FUZZ_SLOTS],
            pid_invalid: vec![true; FUZZ_SLOTS],
        };
        let _ = status::auto(&snap, &cpu, "fuzz", "preforkd/fuzz");
        let options = status::HtmlOptions::default();
        let _ = status::html(&snap, &cpu, &[], "fuzz <&>", "preforkd/fuzz", options);
        let json = status::json(&snap, &cpu, &[], "fuzz", "preforkd/fuzz");
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "?json is JSON: {json}");
        let _ = status::metrics(&snap, &[]);
        // A parent running on a board that gets scribbled on.
        for slot in 0..FUZZ_SLOTS {
            board.record(slot).word.store(0, Ordering::Relaxed);
        }
        board.header().generation.store(0, Ordering::Relaxed);
        let pool = PoolConfig::from_raw(&RawPoolConfig {
            start_servers: Some(3),
            min_spare_servers: Some(2),
            max_spare_servers: Some(4),
            max_request_workers: Some(FUZZ_SLOTS as i64),
            server_limit: Some(FUZZ_SLOTS as i64),
            ..Default::default()
        })
        .expect("a pool")
        .value;
        let mut effects = Recorder::new(1000);
        let mut now = Time::ZERO;
        let mut parent = ParentDriver::start(Parent::new(pool), now, board, &mut effects);
        scribble(board, data, 0x5555_5555_5555_5555);
        for _ in 0..3 {
            now += Duration::from_secs(1);
            parent.handle_timeout(now, board, &mut effects);
            let view = ScoreboardView::capture(board);
            assert_eq!(view.counts().corrupt, 0, "I14: a tick repairs every slot: {}", view.letters());
        }
        // The same bytes as a board file.
        let file = tempfile_with(data);
        if let Ok(opened) = Scoreboard::open(&file) {
            let _ = opened.infos();
            let _ = status::auto(&PoolSnapshot::take(&opened), &status::Cpu::default(), "fuzz", "preforkd/fuzz");
        }
    });
}

fn tempfile_with(data: &[u8]) -> PathBuf {
    use std::os::fd::AsRawFd;
    thread_local! {
        static FILE: std::fs::File = {
            let fd = nix::sys::memfd::memfd_create("prefork-fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd");
            std::fs::File::from(fd)
        };
    }
    FILE.with(|f| {
        f.set_len(0).expect("truncate");
        f.set_len(data.len().max(size_of::<Header>()) as u64).expect("size");
        std::os::unix::fs::FileExt::write_all_at(f, data, 0).expect("write");
        PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
    })
}

#[cfg(test)]
mod tests {
    use super::{check_framing, check_responses};

    const OK_10: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";

    #[test]
    fn the_http_oracle_accepts_whole_answers_and_bodiless_heads() {
        check_responses(b"GET / HTTP/1.1\r\n\r\n", &[OK_10, b"0123456789"].concat());
        check_responses(b"HEAD / HTTP/1.1\r\n\r\n", OK_10);
        check_responses(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", &[OK_10, OK_10, b"0123456789"].concat());
    }

    #[test]
    #[should_panic(expected = "Content-Length 10 but 3 bytes follow")]
    fn the_http_oracle_rejects_a_short_body() {
        check_responses(b"GET / HTTP/1.1\r\n\r\n", &[OK_10, b"abc"].concat());
    }

    #[test]
    #[should_panic(expected = "said Connection: close, but 10 more bytes followed")]
    fn the_http_oracle_rejects_bytes_after_a_close() {
        let close = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        check_responses(b"GET / HTTP/1.1\r\n\r\n", &[&close[..], b"HTTP/1.1 2"].concat());
    }

    #[test]
    #[should_panic(expected = "a head that must be refused got 200")]
    fn the_framing_oracle_rejects_a_second_host_that_was_served() {
        check_framing(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", OK_10);
    }

    #[test]
    #[should_panic(expected = "a head that must be refused got 200")]
    fn the_framing_oracle_rejects_a_signed_content_length_that_was_read() {
        check_framing(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", OK_10);
    }

    #[test]
    #[should_panic(expected = "Content-Length 10 but 0 bytes follow")]
    fn the_http_oracle_rejects_a_missing_body_when_no_head_was_asked() {
        check_responses(b"GET / HTTP/1.1\r\n\r\n", OK_10);
    }
}
