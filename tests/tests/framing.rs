//! Request framing, from the outside (SPEC.md §12.1.2, RFC 9112 §2.2, §3.2, §5, §6, §7): one test per
//! rule. Behind every offending head a second request is sent on the same connection (what a
//! smuggler hides in a body a front proxy framed differently); it must never be answered: the
//! refusal closes the connection, and the access log never shows the hidden request.

use prefork_tests::*;
use std::time::Duration;

/// The request a smuggler hides behind a head; it must never be answered.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `head` (and, behind it, `body` then [`SMUGGLED`]); the answer must be `status` with
/// `Connection: close`, and nothing else may follow on the connection.
fn refused(p: &Preforkd, rule: &str, head: &str, body: &str, status: u16) {
    let mut c = Client::connect(p.addr()).unwrap();
    c.set_read_timeout(Duration::from_secs(5));
    c.send(format!("{head}{body}{SMUGGLED}").as_bytes()).unwrap();
    let r = c.read_response(false).unwrap_or_else(|e| panic!("{rule}: no answer ({e})"));
    assert_eq!(r.status, status, "{rule}: {head:?} answered {} {:?}", r.status, r.text());
    assert_eq!(r.header("Connection"), Some("close"), "{rule}: the connection closes after a framing refusal");
    assert!(c.closed_within(Duration::from_secs(3)), "{rule}: something followed the refusal");
}

/// The same request in its valid form is served, and the request behind it on the same
/// connection is answered as its own request (the body was framed, read and set aside).
fn served(p: &Preforkd, rule: &str, head: &str, body: &str) {
    let mut c = Client::connect(p.addr()).unwrap();
    c.set_read_timeout(Duration::from_secs(5));
    c.send(format!("{head}{body}GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let first = c.read_response(false).unwrap_or_else(|e| panic!("{rule}: no answer ({e})"));
    assert_eq!(first.status, 200, "{rule}: {head:?}");
    let second = c.read_response(false).unwrap_or_else(|e| panic!("{rule}: no second answer ({e})"));
    assert_eq!(second.status, 200, "{rule}: the next request is read where the body ends");
}

fn server() -> Preforkd {
    Preforkd::start(&["--start-servers", "2"])
}

fn never_answered_the_smuggled_request(p: &Preforkd) {
    std::thread::sleep(Duration::from_millis(300)); // children write their access-log lines at the end
    assert!(!p.stdout().contains("/smuggled"), "a hidden request was answered:\n{}", p.stdout());
}

#[test]
fn host_must_appear_once_and_be_a_host() {
    let p = server();
    // RFC 9112 §3.2: more than one Host field line, in any version: 400.
    refused(&p, "two Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "", 400);
    refused(&p, "two Host lines (same value)", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "", 400);
    refused(&p, "two Host lines in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "", 400);
    // A Host that is not uri-host [":" port].
    refused(&p, "Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "", 400);
    refused(&p, "Host with a bad port", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", "", 400);
    refused(&p, "Host with user info", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", "", 400);
    // No Host in HTTP/1.1.
    refused(&p, "no Host in HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "", 400);
    for host in ["a", "example.com:8080", "[::1]:80", "127.0.0.1"] {
        served(&p, host, &format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"), "");
    }
    never_answered_the_smuggled_request(&p);
}

#[test]
fn content_length_must_be_one_field_of_digits() {
    let p = server();
    // RFC 9112 §6.3: anything but 1*DIGIT is unrecoverable framing: 400 and close.
    for (rule, value) in [
        ("a plus sign", "+5"),
        ("a minus sign", "-5"),
        ("a list", "5, 5"),
        ("a space inside", "5 5"),
        ("hexadecimal", "0x5"),
        ("an overflow", "18446744073709551616"),
        ("empty", ""),
    ] {
        refused(&p, rule, &format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"), "hello", 400);
    }
    refused(
        &p,
        "two field lines",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "hello",
        400,
    );
    refused(
        &p,
        "two different lines",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "hello",
        400,
    );
    // Leading zeros are digits; the body is read and the next request follows it.
    served(&p, "leading zeros", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\n", "hello");
    served(&p, "a body on GET", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", "hello");
    never_answered_the_smuggled_request(&p);
}

#[test]
fn transfer_encoding_is_refused_and_a_chunked_body_is_never_read() {
    let p = server();
    let chunked = "5\r\nhello\r\n0\r\n\r\n";
    // CL.TE and TE.CL: both fields, in either order (RFC 9112 §6.1).
    refused(
        &p,
        "CL.TE",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n",
        chunked,
        400,
    );
    refused(
        &p,
        "TE.CL",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        chunked,
        400,
    );
    // Transfer-Encoding in HTTP/1.0 (§6.1): faulty framing.
    refused(&p, "TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", chunked, 400);
    // chunked not last, twice, or disguised (§6.3 rule 4).
    for (rule, te) in [
        ("chunked not last", "chunked, gzip"),
        ("chunked twice", "chunked, chunked"),
        ("a disguised chunked", "xchunked"),
        ("chunked with a parameter", "chunked;x=1"),
        ("an empty list", ","),
    ] {
        refused(&p, rule, &format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n"), chunked, 400);
    }
    // A coding besides chunked: not implemented.
    refused(
        &p,
        "gzip, chunked",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        chunked,
        501,
    );
    // chunked alone: 411 Length Required, and the body is never read, so no chunk-size trick
    // (a sign, an overflow, an extension with a bare LF) can frame it differently (§7.1).
    refused(&p, "chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", chunked, 411);
    for (rule, body) in [
        ("a chunk size that overflows", "10000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("a signed chunk size", "+5\r\nhello\r\n0\r\n\r\n"),
        ("a chunk extension with a bare LF", "5;x=\"a\nb\"\r\nhello\r\n0\r\n\r\n"),
        ("a bare LF after the chunk size", "5\nhello\r\n0\r\n\r\n"),
    ] {
        refused(&p, rule, "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", body, 411);
    }
    never_answered_the_smuggled_request(&p);
}

#[test]
fn malformed_field_lines_are_refused() {
    let p = server();
    // RFC 9112 §5.1: no whitespace between a field name and its colon ("Transfer-Encoding :").
    refused(&p, "space before the colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n", "hello", 400);
    // §5.2: obs-fold.
    refused(&p, "obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", "", 400);
    // §2.2: a bare LF ends a line only for some readers; a bare CR is never a line end.
    refused(
        &p,
        "a bare LF inside the head",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\nContent-Length: 5\r\n\r\n",
        "hello",
        400,
    );
    refused(&p, "bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n", "", 400);
    refused(&p, "a bare CR", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rContent-Length: 5\r\n\r\n", "hello", 400);
    refused(&p, "a NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", "", 400);
    // §2.2: an empty line before the request line is ignored.
    served(&p, "a leading empty line", "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "");
    never_answered_the_smuggled_request(&p);
}

#[test]
fn a_body_left_unread_is_never_read_as_a_request() {
    let p = Preforkd::start(&["--start-servers", "2", "--limit-request-body", "10"]);
    // Refused before its body is read (too large): the connection closes (RFC 9112 §9.3 lets a
    // server close; it must never parse the body as the next request).
    refused(
        &p,
        "a body over limit_request_body",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        &"a".repeat(100),
        413,
    );
    // Expect: 100-continue on a method that is refused: answered at once, the body never read.
    refused(
        &p,
        "a refused method that expects 100-continue",
        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        "hello",
        405,
    );
    never_answered_the_smuggled_request(&p);
}
