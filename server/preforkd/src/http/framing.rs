//! Request framing (RFC 9112 §2.2, §3.2, §5, §6, §7; SPEC.md §12.1.2): where a request's body ends,
//! decided from its head alone, before anything is read or answered. The rules are strict, because
//! a front proxy that reads a head differently than we do can be desynchronised from us (request
//! smuggling): every head that two readers could frame differently is refused with 400 (or 411,
//! 501) and the connection closes, so nothing after it is ever read as a request.
//!
//! | rule | RFC 9112 | answer |
//! |---|---|---|
//! | a line ends with a bare LF (no CR before it) | §2.2 | 400, close |
//! | a bare CR, obs-fold, whitespace before a field's colon, a control character | §2.2, §5.1, §5.2 | 400, close (httparse refuses them) |
//! | more than one `Host` field line | §3.2 | 400, close |
//! | `Host` that is not `uri-host [":" port]` | §3.2 | 400, close |
//! | HTTP/1.1 without `Host` | §3.2 | 400, close |
//! | `Transfer-Encoding` in an HTTP/1.0 request | §6.1 | 400, close |
//! | `Transfer-Encoding` and `Content-Length` together | §6.1 | 400, close |
//! | `Transfer-Encoding` whose last coding is not `chunked`, or `chunked` twice | §6.3 (4), §6.1 | 400, close |
//! | `Transfer-Encoding` with a coding besides `chunked` (`gzip, chunked`) | §6.1 | 501, close |
//! | `Transfer-Encoding: chunked` | §6.3 (7) | 411 Length Required, close: preforkd reads no chunked body |
//! | `Content-Length` that is not one `1*DIGIT` (a sign, a list, a second field line, an overflow) | §6.3 (5) | 400, close |
//!
//! preforkd never reads a chunked body (it has no use for request bodies: GET, HEAD and OPTIONS
//! only; a `Content-Length` body is read and discarded). So the chunked rules of §7.1 (chunk sizes
//! without a sign, overflow, extensions that end at CRLF) can never frame a request differently
//! here: a chunked request is answered 411 and the connection closes before a byte of its body is
//! read.

/// How a request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// The body's length (0: none).
    pub body: u64,
}

/// A head that cannot be framed safely: the status to answer with and why. The connection
/// always closes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 411 or 501.
    pub status: u16,
    /// For the error page.
    pub why: &'static str,
}

fn refuse(status: u16, why: &'static str) -> Refusal {
    Refusal { status, why }
}

/// Does `head` (the bytes of a request head, up to and including its empty line) end a line with
/// a bare LF? httparse accepts one (RFC 9112 §2.2 lets a recipient), but a proxy that ends lines
/// only at CRLF would read `X: a\nContent-Length: 5` as one field, and we as two.
pub fn has_bare_lf(head: &[u8]) -> bool {
    head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// Is `value` a valid `Host` field value (RFC 9110 §7.2: `uri-host [ ":" port ]`, RFC 3986)? Empty
/// is valid (a target without an authority).
pub fn valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        // IP-literal: "[" ( IPv6address / IPvFuture ) "]"
        let Some((literal, after)) = rest.split_once(']') else { return false };
        let literal_ok = literal.parse::<std::net::Ipv6Addr>().is_ok()
            || (literal.starts_with(['v', 'V']) && literal.bytes().all(|b| unreserved(b) || sub_delim(b) || b == b':'));
        if !literal_ok {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    // reg-name (an IPv4 address is one too): unreserved / pct-encoded / sub-delims.
    let bytes = host.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            b if unreserved(b) || sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    port.bytes().all(|b| b.is_ascii_digit())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// `Content-Length`'s one value as 1*DIGIT (RFC 9112 §6.3): no sign, no list, no space inside,
/// no overflow. (httparse has already taken the optional whitespace around a field value off.)
pub fn content_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Frames a request from its version (`minor`: 0 or 1) and its fields, or refuses it.
pub fn frame<'a>(minor: u8, fields: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Result<Framing, Refusal> {
    let all = |name: &'static str| fields.clone().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let mut hosts = all("Host");
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(refuse(400, "A request may carry one Host field only.")),
        (Some(host), None) if !valid_host(host) => return Err(refuse(400, "The Host field is not a host name.")),
        (None, _) if minor >= 1 => return Err(refuse(400, "HTTP/1.1 requests need a Host header.")),
        _ => {}
    }
    let lengths: Vec<&str> = all("Content-Length").collect();
    let encodings: Vec<&str> = all("Transfer-Encoding").collect();
    if !encodings.is_empty() {
        if minor == 0 {
            return Err(refuse(400, "Transfer-Encoding is not defined for HTTP/1.0 requests."));
        }
        if !lengths.is_empty() {
            return Err(refuse(400, "Content-Length and Transfer-Encoding together."));
        }
        let codings: Vec<&str> =
            encodings.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|c| !c.is_empty()).collect();
        let chunked = |c: &str| c.eq_ignore_ascii_case("chunked");
        return Err(match codings.last() {
            Some(last) if chunked(last) && codings.iter().filter(|c| chunked(c)).count() == 1 => {
                if codings.len() == 1 {
                    refuse(411, "Request bodies need a Content-Length here (chunked bodies are not read).")
                } else {
                    refuse(501, "Only the chunked transfer coding is known.")
                }
            }
            _ => refuse(400, "The body's end cannot be found: chunked must be the last transfer coding, once."),
        });
    }
    match lengths.as_slice() {
        [] => Ok(Framing { body: 0 }),
        [one] => match content_length(one) {
            Some(body) => Ok(Framing { body }),
            None => Err(refuse(400, "Content-Length must be digits only.")),
        },
        _ => Err(refuse(400, "A request may carry one Content-Length field only.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(minor: u8, fields: &[(&'static str, &'static str)]) -> Result<u64, u16> {
        frame(minor, fields.iter().copied()).map(|f| f.body).map_err(|r| r.status)
    }

    const HOST: (&str, &str) = ("Host", "example.com");

    #[test]
    fn host_exactly_once_and_well_formed() {
        assert_eq!(frame_of(1, &[HOST]), Ok(0));
        assert_eq!(frame_of(1, &[HOST, ("host", "example.com")]), Err(400), "two Host lines");
        assert_eq!(frame_of(0, &[HOST, HOST]), Err(400), "in HTTP/1.0 too");
        assert_eq!(frame_of(1, &[]), Err(400), "HTTP/1.1 without Host");
        assert_eq!(frame_of(0, &[]), Ok(0), "HTTP/1.0 may leave it out");
        for good in ["a", "example.com:8080", "127.0.0.1", "[::1]", "[::1]:80", "xn--bcher-kva.example", "", "a%20b"] {
            assert!(valid_host(good), "{good:?}");
        }
        for bad in ["a b", "a/b", "a@b", "[::1", "[zz]", "[::1]x", "a:b", "a:8o", "a%2", "a\"b", "ex ample.com"] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_length_is_one_field_of_digits() {
        assert_eq!(frame_of(1, &[HOST, ("Content-Length", "39")]), Ok(39));
        assert_eq!(frame_of(1, &[HOST, ("Content-Length", "0005")]), Ok(5), "1*DIGIT allows leading zeros");
        for bad in ["+39", "-1", "3 9", "39, 39", "0x10", "", "1e3", "18446744073709551616", "٣٩"] {
            assert_eq!(frame_of(1, &[HOST, ("Content-Length", bad)]), Err(400), "{bad:?}");
        }
        assert_eq!(
            frame_of(1, &[HOST, ("Content-Length", "5"), ("Content-Length", "5")]),
            Err(400),
            "a second field line, even with the same value"
        );
        assert_eq!(content_length("18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn transfer_encoding_is_refused_and_never_framed_twice() {
        let te = |v| frame_of(1, &[HOST, ("Transfer-Encoding", v)]);
        assert_eq!(te("chunked"), Err(411), "a chunked body is not read: 411 and close");
        assert_eq!(te("Chunked"), Err(411), "codings are case-insensitive");
        assert_eq!(te("gzip, chunked"), Err(501), "a coding besides chunked");
        for bad in ["chunked, gzip", "gzip", "chunked, chunked", "identity", "", " , ", "chunked;foo=bar"] {
            assert_eq!(te(bad), Err(400), "{bad:?}: the body's end cannot be found");
        }
        assert_eq!(
            frame_of(1, &[HOST, ("Transfer-Encoding", "chunked"), ("Content-Length", "5")]),
            Err(400),
            "TE and CL together (CL.TE, TE.CL)"
        );
        assert_eq!(frame_of(0, &[HOST, ("Transfer-Encoding", "chunked")]), Err(400), "TE in HTTP/1.0");
        assert_eq!(
            frame_of(1, &[HOST, ("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]),
            Err(501),
            "field lines are one list"
        );
    }

    #[test]
    fn bare_lf_is_found_anywhere_in_a_head() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
        assert!(has_bare_lf(b"\nGET / HTTP/1.1\r\n\r\n"));
    }
}
