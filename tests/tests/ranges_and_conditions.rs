//! Validators, preconditions, ranges, Expect and OPTIONS (RFC 9110 §13, §14, §10.1.1, §9.3.7),
//! from the outside: raw requests, and the real clients users resume downloads with (curl, wget).

use prefork_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const SMALL: usize = 1000;
/// Larger than what preforkd sends inline with the head: the sendfile path.
const LARGE: usize = 300 * 1024;

fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// A document root with files modified an hour ago (so their validators are strong).
fn docroot() -> PathBuf {
    let root = tempdir("ranges").join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (name, body) in [
        ("small.bin", content(SMALL, 1)),
        ("large.bin", content(LARGE, 2)),
        ("picture.avif", vec![0; 10]),
        ("archive.gz", vec![0; 10]),
        ("page.html", b"<p>hi</p>".to_vec()),
    ] {
        std::fs::write(root.join(name), body).unwrap();
        age(&root.join(name));
    }
    root
}

fn age(path: &Path) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
}

fn start(root: &Path) -> Preforkd {
    Preforkd::start(&["--document-root", root.to_str().unwrap()])
}

fn get(p: &Preforkd, path: &str, headers: &str) -> Response {
    request(p.addr(), &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")).unwrap()
}

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn parts(r: &Response) -> Vec<(String, Vec<u8>)> {
    let kind = r.header("Content-Type").unwrap();
    let boundary = kind.strip_prefix("multipart/byteranges; boundary=").unwrap_or_else(|| panic!("{kind}"));
    let delimiter = format!("\r\n--{boundary}");
    let body = &r.body;
    let find =
        |from: usize, needle: &[u8]| body[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from);
    let mut out = vec![];
    let mut at = find(0, delimiter.as_bytes()).expect("a first boundary");
    assert_eq!(at, 0, "the body starts with the first boundary");
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, body.len(), "nothing after the closing boundary");
            return out;
        }
        let head_end = find(at, b"\r\n\r\n").expect("a part head") + 4;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap_or_else(|| panic!("no Content-Range in {head:?}"))
            .to_string();
        assert!(head.contains("Content-Type: application/octet-stream"), "{head:?}");
        let (first, last) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        let data = body[head_end..head_end + last - first + 1].to_vec();
        at = head_end + data.len();
        assert!(body[at..].starts_with(delimiter.as_bytes()), "a boundary after each part");
        out.push((range, data));
    }
}

#[test]
fn ranges_single_suffix_open_multiple_and_unsatisfiable() {
    let root = docroot();
    let p = start(&root);
    for (name, len, seed) in [("small.bin", SMALL, 1), ("large.bin", LARGE, 2)] {
        let file = content(len, seed);
        let path = format!("/{name}");
        let whole = get(&p, &path, "");
        assert_eq!((whole.status, whole.header("Accept-Ranges")), (200, Some("bytes")), "{name}");
        assert_eq!(whole.body, file);
        for (range, first, last) in [
            ("bytes=0-99", 0, 99),
            ("bytes=100-", 100, len - 1),
            ("bytes=-10", len - 10, len - 1),
            ("bytes=10-999999999", 10, len - 1),
            ("bytes=-999999999", 0, len - 1),
        ] {
            let r = get(&p, &path, &format!("Range: {range}\r\n"));
            assert_eq!(r.status, 206, "{name} {range}: {}", r.text());
            assert_eq!(r.header("Content-Range"), Some(format!("bytes {first}-{last}/{len}").as_str()), "{range}");
            assert_eq!(r.header("Content-Length"), Some((last - first + 1).to_string().as_str()));
            assert_eq!(r.body, &file[first..=last], "{name} {range}");
            assert!(r.header("ETag").is_some());
        }
        // Several ranges: multipart/byteranges, in the order asked; overlapping ones merged.
        let r = get(&p, &path, "Range: bytes=500-599, 0-9, 5-19\r\n");
        assert_eq!(r.status, 206);
        assert_eq!(r.header("Content-Length"), Some(r.body.len().to_string().as_str()));
        let got = parts(&r);
        assert_eq!(
            got,
            vec![
                (format!("bytes 500-599/{len}"), file[500..600].to_vec()),
                (format!("bytes 0-19/{len}"), file[0..20].to_vec())
            ],
            "{name}"
        );
        // Nothing satisfiable: 416 with the length.
        let r = get(&p, &path, &format!("Range: bytes={len}-\r\n"));
        assert_eq!((r.status, r.header("Content-Range")), (416, Some(format!("bytes */{len}").as_str())));
        // Unparseable, another unit, HEAD: the whole file.
        for (method, range) in [("GET", "bytes=5-1"), ("GET", "lines=1-2"), ("HEAD", "bytes=0-9")] {
            let r = request(
                p.addr(),
                &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nRange: {range}\r\nConnection: close\r\n\r\n"),
            )
            .unwrap();
            assert_eq!(
                (r.status, r.header("Content-Length")),
                (200, Some(len.to_string().as_str())),
                "{method} {range}"
            );
        }
    }
    // Too many ranges, too many overlaps: the whole file, as Apache (MaxRanges, MaxRangeOverlaps).
    let many: Vec<String> = (0..201).map(|i| format!("{}-{}", i * 3, i * 3)).collect();
    let r = get(&p, "/small.bin", &format!("Range: bytes={}\r\n", many.join(",")));
    assert_eq!((r.status, r.body.len()), (200, SMALL));
    let overlapping = vec!["0-100"; 22].join(",");
    let r = get(&p, "/small.bin", &format!("Range: bytes={overlapping}\r\n"));
    assert_eq!((r.status, r.body.len()), (200, SMALL));
    // The limits are settings; 0 turns ranges off.
    let off = Preforkd::start(&["--document-root", root.to_str().unwrap(), "--max-ranges", "0"]);
    let r = get(&off, "/small.bin", "Range: bytes=0-9\r\n");
    assert_eq!((r.status, r.header("Accept-Ranges"), r.body.len()), (200, Some("none"), SMALL));
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[test]
fn preconditions_and_if_range_follow_rfc_9110() {
    let root = docroot();
    let p = start(&root);
    let r = get(&p, "/small.bin", "");
    let etag = r.header("ETag").unwrap().to_string();
    let modified = r.header("Last-Modified").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong tag for a file an hour old: {etag}");
    assert_eq!(etag, format!("\"{SMALL:x}-{}", &etag[etag.find('-').unwrap() + 1..]), "Apache's size-mtime form");
    let weak = format!("W/{etag}");
    let old_date = "Mon, 01 Jan 2001 00:00:00 GMT";
    let cases: Vec<(String, u16)> = vec![
        (format!("If-None-Match: {etag}"), 304),
        (format!("If-None-Match: {weak}"), 304),
        ("If-None-Match: *".into(), 304),
        ("If-None-Match: \"other\"".into(), 200),
        (format!("If-None-Match: \"other\", {etag}"), 304),
        (format!("If-Modified-Since: {modified}"), 304),
        (format!("If-Modified-Since: {old_date}"), 200),
        (format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {modified}"), 200),
        (format!("If-Match: {etag}"), 200),
        ("If-Match: *".into(), 200),
        ("If-Match: \"x\"".into(), 412),
        (format!("If-Match: {weak}"), 412),
        (format!("If-Unmodified-Since: {old_date}"), 412),
        (format!("If-Unmodified-Since: {modified}"), 200),
        (format!("If-Match: {etag}\r\nIf-Unmodified-Since: {old_date}"), 200),
        (format!("If-Match: \"x\"\r\nIf-None-Match: {etag}"), 412),
    ];
    let mut c = Client::connect(p.addr()).unwrap();
    for (headers, want) in &cases {
        let r = c.request(&format!("GET /small.bin HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n")).unwrap();
        assert_eq!(r.status, *want, "{headers}");
        if *want == 304 {
            assert_eq!((r.header("ETag"), r.body.len()), (Some(etag.as_str()), 0), "{headers}");
        }
        assert_ne!(r.header("Connection"), Some("close"), "{headers}: the connection is kept");
    }
    // If-Range: the range only while the validator still matches, strongly.
    let range = |cond: &str| get(&p, "/small.bin", &format!("Range: bytes=0-9\r\nIf-Range: {cond}\r\n")).status;
    assert_eq!(range(&etag), 206);
    assert_eq!(range(&modified), 206);
    assert_eq!(range("\"other\""), 200);
    assert_eq!(range(&weak), 200);
    assert_eq!(range(old_date), 200);
    // A file just changed: its tag is weak (as Apache: it may change again within the tick).
    std::fs::write(root.join("small.bin"), content(SMALL, 9)).unwrap();
    let r = get(&p, "/small.bin", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 200, "a changed file is sent");
    assert!(r.header("ETag").unwrap().starts_with("W/\""), "{:?}", r.header("ETag"));
    assert_eq!(range(r.header("ETag").unwrap()), 200, "a weak tag never satisfies If-Range");
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {name} is not installed (Debian package {name}; .ci/run installs it)");
    }
    found
}

#[test]
fn curl_and_wget_resume_interrupted_downloads() {
    let root = docroot();
    let p = start(&root);
    let file = content(LARGE, 2);
    let url = format!("http://{}/large.bin", p.addr());
    let out = tempdir("resume");
    let (has_curl, has_wget) = (tool("curl"), tool("wget"));
    if has_curl {
        let target = out.join("curl.bin");
        std::fs::write(&target, &file[..100_000]).unwrap();
        let run = Command::new("curl").args(["-sS", "-C", "-", "-o"]).arg(&target).arg(&url).output().unwrap();
        assert!(run.status.success(), "curl -C -: {}", String::from_utf8_lossy(&run.stderr));
        assert!(std::fs::read(&target).unwrap() == file, "curl resumed to the whole file");
        // Resuming a complete download: 416, which curl takes as done.
        let run = Command::new("curl").args(["-sS", "-C", "-", "-o"]).arg(&target).arg(&url).output().unwrap();
        assert!(run.status.success(), "curl -C - on a whole file: {}", String::from_utf8_lossy(&run.stderr));
        assert!(std::fs::read(&target).unwrap() == file);
    }
    if has_wget {
        let dir = out.join("wget");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("large.bin"), &file[..123_456]).unwrap();
        let run = Command::new("wget").args(["-q", "-c", "-P"]).arg(&dir).arg(&url).output().unwrap();
        assert!(run.status.success(), "wget -c: {}", String::from_utf8_lossy(&run.stderr));
        assert!(std::fs::read(dir.join("large.bin")).unwrap() == file, "wget continued to the whole file");
    }
    // Both asked for the rest, not the whole file again.
    let resumed = usize::from(has_curl) + usize::from(has_wget);
    assert!(wait_until(Duration::from_secs(5), || p.stdout().matches("\"GET /large.bin HTTP/1.1\" 206 ").count()
        >= resumed));
    for line in p.stdout().lines().filter(|l| l.contains(" 206 ")) {
        let rest = |done: usize| format!(" 206 {} ", LARGE - done);
        assert!(line.contains(&rest(100_000)) || line.contains(&rest(123_456)), "{line}");
    }
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[test]
fn expect_100_continue_is_answered_at_once() {
    let root = docroot();
    let p = start(&root);
    // A body that will be refused is never asked for: the 405 comes without it, then the close.
    let mut c = Client::connect(p.addr()).unwrap();
    c.set_read_timeout(Duration::from_secs(20));
    c.send(b"POST /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.header("Allow"), r.header("Connection")), (405, Some("GET, HEAD, OPTIONS"), Some("close")));
    // A body that will be read is asked for with 100 Continue.
    let mut c = Client::connect(p.addr()).unwrap();
    c.send(b"GET /page.html HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let interim = c.read_response(true).unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "<p>hi</p>"));
    // An expectation we cannot meet: 417. From an HTTP/1.0 client, Expect is ignored.
    let r = request(p.addr(), "GET /page.html HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n").unwrap();
    assert_eq!(r.status, 417);
    let r = request(p.addr(), "GET /page.html HTTP/1.0\r\nExpect: teapot\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    // curl's upload: answered without curl's wait for a 100 (made 30 s here, so a server that
    // stays silent until the body arrives would make this take 30 s).
    if tool("curl") {
        let upload = root.join("small.bin");
        let started = Instant::now();
        let run = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--expect100-timeout",
                "30",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
            ])
            .arg(format!("@{}", upload.display()))
            .arg(format!("http://{}/page.html", p.addr()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&run.stdout), "405", "{}", String::from_utf8_lossy(&run.stderr));
        assert!(started.elapsed() < Duration::from_secs(20), "curl waited for its expect timeout");
    }
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[test]
fn options_mime_types_and_a_types_file() {
    let root = docroot();
    let p = start(&root);
    for target in ["*", "/small.bin", "/nothing-here", "/server-status"] {
        let r =
            request(p.addr(), &format!("OPTIONS {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).unwrap();
        assert_eq!(
            (r.status, r.header("Allow"), r.header("Content-Length")),
            (200, Some("GET, HEAD, OPTIONS"), Some("0")),
            "{target}"
        );
    }
    assert_eq!(request(p.addr(), "GET * HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().status, 400);
    // Types from /etc/mime.types where it exists, the built-in table otherwise: these two are in both.
    assert_eq!(get(&p, "/picture.avif", "").header("Content-Type"), Some("image/avif"));
    assert_eq!(get(&p, "/archive.gz", "").header("Content-Type"), Some("application/gzip"));
    assert_eq!(get(&p, "/page.html", "").header("Content-Type"), Some("text/html; charset=utf-8"));
    // A types file of one's own (Apache's TypesConfig) comes first; the built-in table fills in.
    let types = root.parent().unwrap().join("my.types");
    std::fs::write(&types, "# mine\napplication/x-mine bin\n").unwrap();
    let mine = Preforkd::start(&["--document-root", root.to_str().unwrap(), "--types-config", types.to_str().unwrap()]);
    assert_eq!(get(&mine, "/small.bin", "").header("Content-Type"), Some("application/x-mine"));
    assert_eq!(get(&mine, "/page.html", "").header("Content-Type"), Some("text/html; charset=utf-8"));
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}
