//! HTTP behaviour of preforkd, from the outside: files, errors, keep-alive, timeouts.

use prefork_tests::*;
use std::time::{Duration, Instant};

fn docroot() -> std::path::PathBuf {
    let base = tempdir("docs");
    let root = base.join("root");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::create_dir_all(root.join("nolist")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("style.css"), "body{}").unwrap();
    std::fs::write(root.join("data.bin"), vec![7u8; 1024]).unwrap();
    std::fs::write(root.join("dir/index.html"), "<p>dir</p>").unwrap();
    std::fs::write(base.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    root
}

#[test]
fn the_default_page_is_served_and_logged() {
    let p = Preforkd::start(&[]);
    let r = p.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("preforkd works"));
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("Content-Length").unwrap().parse::<usize>().unwrap(), r.body.len());
    assert!(r.header("Server").unwrap().starts_with("preforkd/"));
    assert!(r.header("Date").unwrap().ends_with(" GMT"));
    assert_eq!(p.get("/other").status, 404);
    assert!(wait_until(Duration::from_secs(2), || p.stdout().lines().count() >= 2));
    let log = p.stdout();
    // Children write their own lines: the order between children is not fixed.
    let first = log.lines().find(|l| l.contains("\"GET / HTTP/1.1\"")).unwrap();
    // Combined Log Format: host ident user [time] "request" status bytes "referer" "agent"
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(first.contains("] \"GET / HTTP/1.1\" 200 "), "{first}");
    assert!(first.ends_with("\"-\" \"-\""), "{first}");
}

#[test]
fn static_files_have_types_lengths_dates_and_conditional_gets() {
    let root = docroot();
    let p = Preforkd::start(&["--document-root", root.to_str().unwrap()]);
    let css = p.get("/style.css");
    assert_eq!((css.status, css.header("Content-Type")), (200, Some("text/css; charset=utf-8")));
    assert_eq!(css.body, b"body{}");
    let modified = css.header("Last-Modified").unwrap().to_string();
    let again = request(
        p.addr(),
        &format!("GET /style.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {modified}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!((again.status, again.body.len()), (304, 0));
    let old = request(
        p.addr(),
        "GET /style.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(old.status, 200);
    let bin = p.get("/data.bin");
    assert_eq!((bin.header("Content-Type"), bin.body.len()), (Some("application/octet-stream"), 1024));
    assert_eq!(p.get("/").text(), "<h1>home</h1>");
    let redirect = p.get("/dir?x=1");
    assert_eq!((redirect.status, redirect.header("Location")), (301, Some("/dir/?x=1")));
    assert_eq!(p.get("/dir/").text(), "<p>dir</p>");
    let head = request(p.addr(), "HEAD /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((head.status, head.header("Content-Length"), head.body.len()), (200, Some("6"), 0));
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[test]
fn every_error_status_is_answered_and_the_pool_keeps_serving() {
    let root = docroot();
    let p = Preforkd::start(&[
        "--document-root",
        root.to_str().unwrap(),
        "--limit-request-body",
        "10",
        "--limit-request-line",
        "200",
        "--limit-request-field-size",
        "200",
        "--limit-request-fields",
        "10",
    ]);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(300));
    let long_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(300));
    let many_headers =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..20).map(|i| format!("X-{i}: y\r\n")).collect::<String>());
    let cases: Vec<(&str, String, u16)> = vec![
        ("garbage", "HELLO\r\n\r\n".into(), 400),
        ("no Host on 1.1", "GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("dot-dot", "GET /../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400),
        ("encoded dot-dot", "GET /%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400),
        ("mixed dot-dot", "GET /.%2E/secret.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400),
        ("encoded slash", "GET /dir%2f..%2f..%2fsecret.txt HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400),
        ("NUL", "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400),
        ("symlink out of the root", "GET /escape HTTP/1.1\r\nHost: x\r\n\r\n".into(), 403),
        ("directory without index", "GET /nolist/ HTTP/1.1\r\nHost: x\r\n\r\n".into(), 403),
        ("missing", "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n".into(), 404),
        ("POST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".into(), 405),
        ("body too large", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".into(), 413),
        ("URI too long", long_uri, 414),
        ("header too long", long_header, 431),
        ("too many headers", many_headers, 431),
        ("unknown method", "BREW / HTTP/1.1\r\nHost: x\r\n\r\n".into(), 501),
        // A chunked body is never read: 411 (SPEC.md §12.1.2); a coding besides chunked: 501.
        ("chunked request", "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 411),
        ("gzip-coded request", "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(), 501),
        (
            "CL and TE (smuggling)",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            400,
        ),
        (
            "two Content-Lengths",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".into(),
            400,
        ),
        ("symlink loop (an unexpected file-system error)", "GET /loop HTTP/1.1\r\nHost: x\r\n\r\n".into(), 500),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n".into(), 505),
    ];
    for (name, raw, want) in &cases {
        let r = request(p.addr(), raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, *want, "{name}: {}", r.text());
        if *want == 405 {
            assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
        }
        assert_eq!(p.get("/").status, 200, "the pool serves after {name}");
    }
    // The error log says why each 403 was given, in Apache's words.
    let log = p.stderr();
    for why in ["403 for /escape from 127.0.0.1:", "[AH00037]", "403 for /nolist/ from 127.0.0.1:", "[AH01276]"] {
        assert!(log.contains(why), "the error log does not say {why:?}:\n{log}");
    }
    // A file the children's account cannot read (as root they run as nobody).
    if nix::unistd::geteuid().is_root() {
        let private = root.join("private.txt");
        std::fs::write(&private, "secret").unwrap();
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_eq!(p.get("/private.txt").status, 403);
        assert!(
            wait_until(std::time::Duration::from_secs(2), || p.stderr().contains("[AH00132] file permissions deny")),
            "{}",
            p.stderr()
        );
    }
}

#[test]
fn raw_bytes_that_are_not_utf8_or_not_http_are_refused() {
    let p = Preforkd::start(&[]);
    for raw in [
        &b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\r\nX\x00: y\r\n\r\n",
    ] {
        let mut c = Client::connect(p.addr()).unwrap();
        c.send(raw).unwrap();
        match c.read_response(false) {
            Ok(r) => assert_eq!(r.status, 400, "{raw:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{raw:?}: closed is fine too"),
        }
        assert_eq!(p.get("/").status, 200);
    }
}

#[test]
fn a_trickling_client_is_cut_off_with_408_and_others_are_served_meanwhile() {
    let p = Preforkd::start(&["--request-read-timeout", "1", "--start-servers", "3"]);
    let mut slow = Client::connect(p.addr()).unwrap();
    slow.set_read_timeout(Duration::from_millis(50));
    let started = Instant::now();
    let trickler = std::thread::spawn(move || {
        for line in ["GET / HTTP/1.1\r\n", "Host: x\r\n", "X-A: 1\r\n", "X-B: 2\r\n", "X-C: 3\r\n", "X-D: 4\r\n"] {
            if slow.send(line.as_bytes()).is_err() {
                break;
            }
            let until = Instant::now() + Duration::from_millis(400);
            while Instant::now() < until {
                if let Ok(r) = slow.read_response(false) {
                    return Some(r.status);
                }
            }
        }
        None
    });
    assert_eq!(p.get("/").status, 200, "a normal client is served while one trickles");
    let status = trickler.join().unwrap();
    assert_eq!(status, Some(408));
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after about 1 s, not after the whole trickle");
}

#[test]
fn keep_alive_follows_the_protocol_version_the_limits_and_the_timeout() {
    let p = Preforkd::start(&["--max-keep-alive-requests", "3", "--keep-alive-timeout", "1"]);
    let mut c = Client::connect(p.addr()).unwrap();
    for i in 1..=3 {
        let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        let close = r.header("Connection") == Some("close");
        assert_eq!(close, i == 3, "request {i}: the 3rd reaches max_keep_alive_requests");
        assert_eq!(r.header("Keep-Alive"), None, "no Keep-Alive header for HTTP/1.1 (deprecated there)");
    }
    assert!(c.closed_within(Duration::from_secs(2)));
    // HTTP/1.0: closes unless asked to keep alive.
    let r = request(p.addr(), "GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    let mut c = Client::connect(p.addr()).unwrap();
    let r = c.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    assert_eq!(r.header("Keep-Alive"), Some("timeout=1, max=2"), "an HTTP/1.0 keep-alive client learns the terms");
    assert_eq!(c.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().status, 200);
    // Idle longer than keep_alive_timeout: closed without a response.
    let mut c = Client::connect(p.addr()).unwrap();
    c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)));
    assert!(t.elapsed() >= Duration::from_millis(800), "closed after the 1 s keep-alive timeout");
    // Pipelined requests are answered in order.
    let mut c = Client::connect(p.addr()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(c.read_response(false).unwrap().status, 404);
    let p2 = Preforkd::start(&["--keep-alive", "false"]);
    let mut c = Client::connect(p2.addr()).unwrap();
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().header("Connection"), Some("close"));
}
