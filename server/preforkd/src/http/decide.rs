//! Deciding a request, apart from doing it (hyper's `proto/h1/role.rs`): every decision about a
//! parsed request head (how its body is framed, the method, `Expect`, the target, which page
//! answers it, who may read the status pages, whether the connection stays open) is a pure
//! function here, of the head, the settings and what the connection knows (its listener, its
//! peer). The connection loop (`mod.rs`) reads, carries the plan out, and writes. Preconditions
//! and ranges are decided in `conditional.rs`, as pure.

use super::Head;
use super::{ALLOW, HttpConfig, PROXY_HEADERS, Response, canonical, error, framing};
use std::net::IpAddr;

/// What to do with a request whose head is complete.
pub(super) enum Plan<'h> {
    /// Answer at once, without reading a body (there may be one: the connection then closes).
    Refuse(Response),
    /// Read and discard `body` bytes first (after writing `100 Continue` if `continue_first`),
    /// then answer as `then` says.
    Read {
        /// The body's length (Content-Length; 0: none).
        body: u64,
        /// The client asked to be told before it sends the body (`Expect: 100-continue`).
        continue_first: bool,
        /// The answer once the body is read.
        then: Route<'h>,
    },
}

/// Which answer a request gets once its body is read (paths and queries are the head's).
pub(super) enum Route<'h> {
    /// A refusal that did not need to stop the body (its connection stays usable).
    Refuse(Response),
    /// `OPTIONS`: what the server allows.
    Options,
    /// The status or metrics page at `page`, with `query`.
    Status {
        /// The configured path it matched (`/server-status/` is `/server-status`).
        page: &'h str,
        /// The query string.
        query: &'h str,
    },
    /// A file (or the built-in page) at `path`, with `query` (kept for a redirect).
    File {
        /// The path, percent-encoded as it came.
        path: &'h str,
        /// The query string.
        query: &'h str,
    },
}

/// Plans the answer to `head`, which came on listener `listener`.
pub(super) fn plan<'h>(head: &'h Head, cfg: &HttpConfig, listener: usize) -> Plan<'h> {
    // Where the body ends, from the head alone (framing.rs); a head two readers could frame
    // differently is refused and the connection closes. Bodies: GET and HEAD have no use for one;
    // a Content-Length body is read and discarded.
    let body = match framing::frame(head.minor, head.fields()) {
        Ok(f) => f.body,
        Err(refusal) => return Plan::Refuse(error(refusal.status, refusal.why)),
    };
    if body > cfg.limit_request_body {
        return Plan::Refuse(error(413, "The request body is too large."));
    }
    let refusal = method_refusal(head.method());
    // Expect (RFC 9110 §10.1.1; ignored from HTTP/1.0 clients): a body that would be refused is
    // never asked for, the refusal goes out at once and the connection closes (its body was not
    // read); a body that will be read is asked for with 100 Continue.
    let expect = if head.minor >= 1 { head.list("Expect") } else { None };
    let continue_first = match expect.as_deref() {
        None => false,
        Some(e) if e.trim().eq_ignore_ascii_case("100-continue") => true,
        Some(_) => return Plan::Refuse(error(417, "Only \"Expect: 100-continue\" is supported.")),
    };
    if continue_first && let Some(mut r) = refusal {
        r.close = true;
        return Plan::Refuse(r);
    }
    let then = match refusal {
        Some(r) => Route::Refuse(r),
        None => route(head, cfg, listener),
    };
    Plan::Read { body, continue_first: continue_first && body > 0, then }
}

/// The methods a file or a status page answers, and what the others get.
fn method_refusal(method: &str) -> Option<Response> {
    match method {
        "GET" | "HEAD" | "OPTIONS" => None,
        "POST" | "PUT" | "DELETE" | "PATCH" | "TRACE" | "CONNECT" => {
            let mut r = error(405, "Only GET, HEAD and OPTIONS are allowed.");
            r.headers.push(("Allow", ALLOW.into()));
            Some(r)
        }
        _ => Some(error(501, "Unknown method.")),
    }
}

/// Which answer an allowed method gets, from the target.
fn route<'h>(head: &'h Head, cfg: &HttpConfig, listener: usize) -> Route<'h> {
    if head.target() == "*" {
        return if head.method() == "OPTIONS" {
            Route::Options
        } else {
            Route::Refuse(error(400, "The target * is only for OPTIONS."))
        };
    }
    let target = head.target();
    let target = match target.find("://") {
        // absolute-form: keep the path.
        Some(i) => target[i + 3..].find('/').map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if head.method() == "OPTIONS" {
        // As Apache: what the server allows there, whether or not a file exists.
        return if path.starts_with('/') {
            Route::Options
        } else {
            Route::Refuse(error(400, "The path does not start with /."))
        };
    }
    // `/server-status/` is `/server-status` (the form Prometheus' apache_exporter asks for).
    let page = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let is_status = cfg.status_path.as_deref() == Some(page) || cfg.metrics_path.as_deref() == Some(page);
    let served_here = cfg.status_listeners.as_ref().is_none_or(|on| on.contains(&listener));
    if is_status && served_here {
        return Route::Status { page, query };
    }
    Route::File { path, query }
}

/// May the status pages answer `head` from `peer` (`None`: a unix-domain peer, on this machine),
/// which came on `listener`? The refusal if not.
pub(super) fn status_access(
    peer: Option<IpAddr>,
    listener: usize,
    head: &Head,
    cfg: &HttpConfig,
) -> Result<(), Response> {
    let allowed = peer.is_none_or(|ip| cfg.status_allow.iter().any(|net| net.contains(&canonical(ip))));
    if !allowed {
        return Err(error(403, "The status pages are not open to this address."));
    }
    // Behind a reverse proxy on this host every client looks local: a request that says it was
    // forwarded is not, unless it came on a listener given to the status pages.
    let forwarded = cfg.proxied_listeners.contains(&listener) || PROXY_HEADERS.iter().any(|h| head.header(h).is_some());
    if cfg.status_listeners.is_none() && forwarded {
        return Err(error(
            403,
            "The status pages are not served to requests forwarded by a proxy: their client is not this \
             machine. To read them through a proxy, give them a listener of their own (status_listen).",
        ));
    }
    Ok(())
}

/// Does the connection close after this answer? `request` is the head (`None`: it could not be
/// read, so the connection is in an unknown state), `served` the requests answered on it so far
/// with this one, `graceful` whether the parent told the child to leave, `close` whether the
/// answer itself needs the connection closed (an error about the request's framing).
pub(super) fn closes(request: Option<&Head>, served: u32, graceful: bool, close: bool, cfg: &HttpConfig) -> bool {
    let client_keeps = request.is_some_and(|h| {
        if h.minor >= 1 { !h.has_token("Connection", "close") } else { h.has_token("Connection", "keep-alive") }
    });
    let limit_reached = cfg.max_keep_alive_requests != 0 && served >= cfg.max_keep_alive_requests;
    close || graceful || !client_keeps || !cfg.keep_alive || limit_reached
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, minor: u8, headers: &[(&str, &str)]) -> Head {
        Head::new(method, target, minor, headers.iter().map(|&(n, v)| (n, v.as_bytes())), 0)
    }

    #[test]
    fn a_head_keeps_its_line_its_fields_in_order_and_replaces_bytes_that_are_not_utf8() {
        let fields: [(&str, &[u8]); 4] =
            [("Host", b"h"), ("Accept", b"a/b"), ("X-Odd", b"caf\xe9 \xff!"), ("accept", b"c/d")];
        let h = Head::new("GET", "/p?q", 0, fields.iter().copied(), 77);
        assert_eq!((h.method(), h.target(), h.minor, h.len), ("GET", "/p?q", 0, 77));
        assert_eq!(h.request_line(), "GET /p?q HTTP/1.0");
        let seen: Vec<_> = h.fields().collect();
        assert_eq!(seen, [("Host", "h"), ("Accept", "a/b"), ("X-Odd", "caf\u{fffd} \u{fffd}!"), ("accept", "c/d")]);
        assert_eq!(h.header("ACCEPT"), Some("a/b"));
        assert_eq!(h.list("Accept").as_deref(), Some("a/b, c/d"), "field lines joined, any case");
        assert!(matches!(h.list("Host"), Some(std::borrow::Cow::Borrowed("h"))), "one line is not copied");
        assert_eq!(h.list("Range"), None);
        let none = Head::new("OPTIONS", "*", 1, std::iter::empty(), 0);
        assert_eq!((none.request_line(), none.fields().count()), ("OPTIONS * HTTP/1.1", 0));
    }

    fn refused(p: Plan) -> (u16, bool) {
        match p {
            Plan::Refuse(r) => (r.status, r.close),
            Plan::Read { then: Route::Refuse(r), .. } => (r.status, r.close),
            Plan::Read { .. } => panic!("not refused"),
        }
    }

    #[test]
    fn bodies_are_framed_methods_checked_and_continue_asked_only_for_a_body_that_will_be_read() {
        let cfg = HttpConfig::default();
        let h = head("GET", "/a.txt", 1, &[("Host", "h")]);
        let get = plan(&h, &cfg, 0);
        assert!(matches!(get, Plan::Read { body: 0, continue_first: false, then: Route::File { .. } }));
        // A body that will be read (and discarded) is asked for with 100 Continue.
        let h = head("GET", "/", 1, &[("Host", "h"), ("Content-Length", "5"), ("Expect", "100-continue")]);
        assert!(matches!(plan(&h, &cfg, 0), Plan::Read { body: 5, continue_first: true, .. }));
        // No body: nothing to ask for.
        let h = head("GET", "/", 1, &[("Host", "h"), ("Expect", "100-continue")]);
        assert!(matches!(plan(&h, &cfg, 0), Plan::Read { body: 0, continue_first: false, .. }));
        // A refused method with Expect: refused at once, the body never asked for, the connection closes.
        let h = head("POST", "/", 1, &[("Host", "h"), ("Content-Length", "5"), ("Expect", "100-continue")]);
        assert_eq!(refused(plan(&h, &cfg, 0)), (405, true));
        // Without Expect the body is read, then refused, and the connection stays usable.
        let h = head("POST", "/", 1, &[("Host", "h"), ("Content-Length", "5")]);
        let p = plan(&h, &cfg, 0);
        assert!(
            matches!(&p, Plan::Read { body: 5, continue_first: false, then: Route::Refuse(r) } if r.headers.iter().any(|(n, v)| *n == "Allow" && v == ALLOW))
        );
        assert_eq!(refused(p), (405, false));
        assert_eq!(refused(plan(&head("BREW", "/", 1, &[("Host", "h")]), &cfg, 0)).0, 501);
        assert_eq!(refused(plan(&head("GET", "/", 1, &[("Host", "h"), ("Expect", "x")]), &cfg, 0)), (417, true));
        // Expect from HTTP/1.0 is ignored.
        assert!(matches!(plan(&head("GET", "/", 0, &[("Expect", "x")]), &cfg, 0), Plan::Read { .. }));
        let big = head("GET", "/", 1, &[("Host", "h"), ("Content-Length", "2000000")]);
        assert_eq!(refused(plan(&big, &cfg, 0)), (413, true));
        let two = head("GET", "/", 1, &[("Host", "h"), ("Content-Length", "1"), ("Content-Length", "1")]);
        assert_eq!(refused(plan(&two, &cfg, 0)), (400, true), "framing errors are framing.rs's");
    }

    #[test]
    fn targets_route_to_options_status_pages_or_files() {
        let cfg = HttpConfig { status_listeners: Some(vec![1]), ..HttpConfig::default() };
        // A plan borrows its head: each head lives to the end of the test.
        let to = |method: &str, target: &str, listener| {
            plan(Box::leak(Box::new(head(method, target, 1, &[("Host", "h")]))), &cfg, listener)
        };
        assert!(matches!(to("OPTIONS", "*", 0), Plan::Read { then: Route::Options, .. }));
        assert_eq!(refused(to("GET", "*", 0)).0, 400);
        assert!(matches!(to("OPTIONS", "/x", 0), Plan::Read { then: Route::Options, .. }));
        assert_eq!(refused(to("OPTIONS", "x", 0)).0, 400);
        assert!(
            matches!(to("GET", "/server-status/?auto", 1), Plan::Read { then: Route::Status { page, query }, .. } if page == "/server-status" && query == "auto")
        );
        assert!(matches!(to("GET", "/metrics", 1), Plan::Read { then: Route::Status { .. }, .. }));
        // Elsewhere the status path is an ordinary path.
        assert!(matches!(to("GET", "/server-status", 0), Plan::Read { then: Route::File { .. }, .. }));
        assert!(
            matches!(to("GET", "http://example.com/a/b?q=1", 0), Plan::Read { then: Route::File { path, query }, .. } if path == "/a/b" && query == "q=1")
        );
        assert!(
            matches!(to("GET", "http://example.com", 0), Plan::Read { then: Route::File { path, .. }, .. } if path == "/")
        );
    }

    #[test]
    fn status_pages_answer_local_clients_that_were_not_forwarded() {
        let cfg = HttpConfig::default();
        let plain = head("GET", "/server-status", 1, &[("Host", "h")]);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(status_access(Some(local), 0, &plain, &cfg).is_ok());
        assert!(status_access(None, 0, &plain, &cfg).is_ok(), "a unix-domain peer is on this machine");
        assert!(status_access(Some("::ffff:127.0.0.1".parse().unwrap()), 0, &plain, &cfg).is_ok(), "v4-mapped");
        assert_eq!(status_access(Some("192.0.2.1".parse().unwrap()), 0, &plain, &cfg).unwrap_err().status, 403);
        let forwarded = head("GET", "/server-status", 1, &[("Host", "h"), ("X-Forwarded-For", "192.0.2.1")]);
        assert_eq!(status_access(Some(local), 0, &forwarded, &cfg).unwrap_err().status, 403);
        let proxied = HttpConfig { proxied_listeners: vec![0], ..HttpConfig::default() };
        assert_eq!(status_access(Some(local), 0, &plain, &proxied).unwrap_err().status, 403);
        // On a listener of their own, forwarded requests may read them.
        let own = HttpConfig { status_listeners: Some(vec![0]), ..HttpConfig::default() };
        assert!(status_access(Some(local), 0, &forwarded, &own).is_ok());
    }

    #[test]
    fn connections_close_when_the_client_the_settings_or_the_parent_say_so() {
        let cfg = HttpConfig::default();
        let h11 = head("GET", "/", 1, &[]);
        assert!(!closes(Some(&h11), 1, false, false, &cfg), "HTTP/1.1 keeps by default");
        assert!(closes(Some(&head("GET", "/", 1, &[("Connection", "x, close")])), 1, false, false, &cfg));
        assert!(closes(Some(&head("GET", "/", 0, &[])), 1, false, false, &cfg), "HTTP/1.0 closes by default");
        assert!(!closes(Some(&head("GET", "/", 0, &[("Connection", "Keep-Alive")])), 1, false, false, &cfg));
        assert!(closes(None, 1, false, false, &cfg), "a head that could not be read");
        assert!(closes(Some(&h11), 1, true, false, &cfg), "told to leave");
        assert!(closes(Some(&h11), 1, false, true, &cfg), "the answer needs it");
        assert!(closes(Some(&h11), 100, false, false, &cfg), "max_keep_alive_requests");
        assert!(!closes(Some(&h11), 99, false, false, &cfg));
        let unlimited = HttpConfig { max_keep_alive_requests: 0, ..HttpConfig::default() };
        assert!(!closes(Some(&h11), 100_000, false, false, &unlimited));
        assert!(closes(Some(&h11), 1, false, false, &HttpConfig { keep_alive: false, ..HttpConfig::default() }));
    }
}
