//! A small HTTP/1.1 static-file service (the `Service` `preforkd` runs in every child).
//!
//! Per connection: wait for a request (`timeout` for the first, `keep_alive_timeout` between
//! requests; an idle connection that times out is closed without a response); read the head within
//! `request_read_timeout` in all (mod_reqtimeout's `header=`: a client trickling a line a second is
//! answered 408 when it runs out) and with `timeout` for each read; parse it with `httparse`; answer;
//! log; keep the connection or close it. The slot shows `R` while reading, `W` while answering, `L`
//! while logging, `K` between requests, `C` while closing. When the parent marks the slot `G`
//! (graceful restart or stop), the request in hand is answered with `Connection: close` and the
//! connection ends: an idle keep-alive connection is never dropped under the client's feet.

pub mod cache;
pub mod conditional;
mod decide;
pub mod files;
pub mod framing;
pub mod log;
pub mod mime;
pub mod status;

use conditional::{Conditions, Precondition, RangeLimits, Ranges, Validators};
use files::{DEFAULT_PAGE, Resolved, Root};
use ipnet::IpNet;
use log::{AccessLog, Entry, LogFormat};
use mime::MimeTypes;
use prefork_core::scoreboard::SlotUpdate;
use prefork_core::slot::SlotState;
use prefork_server::NextRequest;
use prefork_server::{Connection, Service, Stream};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// The HTTP settings of `preforkd` (Apache's directives in snake_case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// `DocumentRoot`; `None` serves the built-in page.
    pub document_root: Option<PathBuf>,
    /// `KeepAlive`.
    pub keep_alive: bool,
    /// `KeepAliveTimeout`: how long an idle kept-alive connection waits for its next request.
    pub keep_alive_timeout: Duration,
    /// `MaxKeepAliveRequests`; 0 is unlimited.
    pub max_keep_alive_requests: u32,
    /// `Timeout`: the longest any single read or write may wait.
    pub timeout: Duration,
    /// mod_reqtimeout `header=`: the whole request head must arrive within this.
    pub request_read_timeout: Duration,
    /// `LimitRequestLine` (bytes): a longer request line is a 414.
    pub limit_request_line: usize,
    /// `LimitRequestFields`: more header fields is a 431.
    pub limit_request_fields: usize,
    /// `LimitRequestFieldSize` (bytes): a longer header line is a 431.
    pub limit_request_field_size: usize,
    /// `LimitRequestBody` (bytes): a longer body is a 413. Bodies are read and discarded.
    pub limit_request_body: u64,
    /// `CustomLog` file (`-` is standard output, the default); `None` logs nothing.
    pub access_log: Option<PathBuf>,
    /// `LogFormat`: common or combined.
    pub log_format: LogFormat,
    /// mod_status `SetHandler server-status` location; `None` turns the status pages off.
    pub status_path: Option<String>,
    /// OpenMetrics location; `None` turns it off.
    pub metrics_path: Option<String>,
    /// The listeners (indices in the pool's `listen` order) that serve the status and metrics
    /// pages; `None`: every listener. Elsewhere those paths are ordinary paths (404).
    pub status_listeners: Option<Vec<usize>>,
    /// The listeners a reverse proxy forwards to (`proxied_listen`): every request on them counts
    /// as forwarded.
    pub proxied_listeners: Vec<usize>,
    /// Who may read the status and metrics pages.
    pub status_allow: Vec<IpNet>,
    /// `ServerName`, shown on status pages.
    pub server_name: String,
    /// `TypesConfig`: the `mime.types` file; `None` uses only the built-in table. The default,
    /// the system's `/etc/mime.types`, falls back to the built-in table where it does not exist.
    pub types_config: Option<PathBuf>,
    /// `MaxRanges`, `MaxRangeOverlaps`, `MaxRangeReversals`.
    pub range_limits: RangeLimits,
    /// `EnableSendfile`: files above 64 KiB go out with sendfile(2) instead of one `writev` from a
    /// mapping of the file (`EnableMMAP`, always on here). Off by default, as in Apache.
    pub enable_sendfile: bool,
    /// Connections the gate holds at once (`accept_filter = "httpready"`, SPEC.md §15).
    pub accept_filter_connections: usize,
    /// mod_reqtimeout's `MinRate` (bytes per second): a head arriving at least this fast keeps
    /// its place in a full gate.
    pub request_read_min_rate: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            document_root: None,
            keep_alive: true,
            keep_alive_timeout: Duration::from_secs(5),
            max_keep_alive_requests: 100,
            timeout: Duration::from_secs(60),
            request_read_timeout: Duration::from_secs(20),
            limit_request_line: 8190,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            limit_request_body: 1 << 20,
            access_log: Some(PathBuf::from("-")),
            log_format: LogFormat::Combined,
            status_path: Some("/server-status".into()),
            metrics_path: Some("/metrics".into()),
            status_listeners: None,
            proxied_listeners: vec![],
            status_allow: vec!["127.0.0.0/8".parse().expect("net"), "::1/128".parse().expect("net")],
            server_name: "localhost".into(),
            types_config: Some(PathBuf::from(mime::SYSTEM_TYPES)),
            range_limits: RangeLimits::default(),
            enable_sendfile: false,
            accept_filter_connections: 4096,
            request_read_min_rate: 500,
        }
    }
}

/// Behind the gate, how long a child idle on a kept-alive connection reads it alone before it
/// also watches the gate's channel for a waiting request (SPEC.md §15.2): most next requests come
/// sooner, and then cost one system call, as without the gate.
const KEPT_ALIVE_FIRST_LOOK: Duration = Duration::from_millis(50);

/// The `Server` header and `ServerVersion`.
pub const SERVER: &str = concat!("preforkd/", env!("CARGO_PKG_VERSION"));

/// The service.
#[derive(Debug)]
pub struct HttpService {
    cfg: HttpConfig,
    root: Option<Root>,
    mime: MimeTypes,
    access: Option<std::rc::Rc<AccessLog>>,
    buf: Vec<u8>,
    /// The response being written (head, and a small file's body with it).
    out: Vec<u8>,
    /// The connection's current `SO_RCVTIMEO`, so it is set only when it changes.
    read_timeout: Option<Duration>,
    /// When the request being answered arrived: its validators' and its `Date`'s time.
    arrived: SystemTime,
    /// Small files, revalidated by one `statx` per request ([`cache`]).
    cache: std::cell::RefCell<cache::FileCache>,
}

/// Files up to this size go out in the same write as the head; larger ones with sendfile(2).
const INLINE_BODY: u64 = 64 * 1024;

impl HttpService {
    /// Checks the document root and opens the access log (in the parent, before forking, so the
    /// children share one append descriptor and need no right to open it).
    pub fn new(cfg: HttpConfig) -> io::Result<HttpService> {
        // memmap2 caches the page size in a static on its first mapping: take it here, in the
        // parent, so that no child copies the page that static lives on (4 KiB per child).
        drop(memmap2::MmapOptions::new().len(1).map_anon());
        let root = cfg.document_root.as_deref().map(Root::new).transpose()?;
        let access =
            cfg.access_log.as_deref().map(|p| AccessLog::open(p, cfg.log_format)).transpose()?.map(std::rc::Rc::new);
        let mime = match cfg.types_config.as_deref() {
            None => MimeTypes::builtin(),
            Some(path) => match MimeTypes::load(path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound && path == std::path::Path::new(mime::SYSTEM_TYPES) => {
                    MimeTypes::builtin()
                }
                Err(e) => return Err(e),
            },
        };
        Ok(HttpService {
            cfg,
            root,
            mime,
            access,
            buf: Vec::with_capacity(8192),
            out: Vec::with_capacity(8192),
            read_timeout: None,
            arrived: SystemTime::UNIX_EPOCH,
            cache: Default::default(),
        })
    }
}

/// A parsed request head, in one piece of text: the request line as logged ("GET / HTTP/1.1"),
/// then each field's name and value (a value that is not UTF-8 has U+FFFD for the bytes that are
/// not), with the spans of each part. Two allocations per request, whatever the number of fields.
#[derive(Debug)]
struct Head {
    text: String,
    /// The method's end in `text` (it starts at 0).
    method_end: usize,
    /// The target's span in `text`.
    target: (usize, usize),
    /// The request line's end in `text`.
    line_end: usize,
    minor: u8,
    /// Each field's name and value spans in `text`.
    fields: Vec<((usize, usize), (usize, usize))>,
    /// The head's length on the wire.
    len: usize,
}

impl Head {
    /// A head from its parts: the method, the target, the minor version, the fields as they came,
    /// and its length on the wire.
    fn new<'a>(
        method: &str,
        target: &str,
        minor: u8,
        fields: impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + Clone,
        len: usize,
    ) -> Head {
        let size = method.len()
            + target.len()
            + " HTTP/1.x ".len()
            + fields.clone().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let mut text = String::with_capacity(size);
        text.push_str(method);
        let method_end = text.len();
        text.push(' ');
        text.push_str(target);
        let target = (method_end + 1, text.len());
        let _ = write!(text, " HTTP/1.{minor}");
        let line_end = text.len();
        let mut spans = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            let n = (text.len(), text.len() + name.len());
            text.push_str(name);
            let start = text.len();
            for chunk in value.utf8_chunks() {
                text.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    text.push(char::REPLACEMENT_CHARACTER);
                }
            }
            spans.push((n, (start, text.len())));
        }
        Head { text, method_end, target, line_end, minor, fields: spans, len }
    }

    fn method(&self) -> &str {
        &self.text[..self.method_end]
    }
    fn target(&self) -> &str {
        &self.text[self.target.0..self.target.1]
    }
    /// Each field's name and value, in the order they came.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.fields.iter().map(|&((n0, n1), (v0, v1))| (&self.text[n0..n1], &self.text[v0..v1]))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.fields().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
    /// Every line of a list-valued field, joined as one list (RFC 9110 §5.3).
    fn list(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut lines = self.all(name);
        let first = lines.next()?;
        let mut rest = lines.peekable();
        if rest.peek().is_none() {
            return Some(Cow::Borrowed(first));
        }
        let mut joined = first.to_string();
        for line in rest {
            joined.push_str(", ");
            joined.push_str(line);
        }
        Some(Cow::Owned(joined))
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    /// The request line as logged and shown on the status page: "GET / HTTP/1.1".
    fn request_line(&self) -> &str {
        &self.text[..self.line_end]
    }
}

enum Incoming {
    /// A complete head.
    Head(Head),
    /// The client closed, or the connection idled out between requests: close quietly.
    Closed,
    /// An error to answer, then close.
    Error(u16, &'static str),
    /// Idle between requests while another request waited: given back to the gate, not closed.
    GivenBack,
}

/// A response about to be written.
struct Response {
    status: u16,
    headers: Vec<(&'static str, Cow<'static, str>)>,
    body: Body,
    close: bool,
}

enum Body {
    Empty,
    Text(String),
    Static(&'static str),
    /// `len` bytes of a file from `offset` (the whole file, or one range).
    File {
        file: Source,
        offset: u64,
        len: u64,
    },
    /// Several ranges as `multipart/byteranges`: each part's head, then its bytes; then `end`.
    Parts {
        file: Source,
        parts: Vec<Part>,
        end: String,
    },
}

/// Where a file's bytes come from: the open file, or the child's cache.
enum Source {
    File(std::fs::File),
    Cached(std::rc::Rc<[u8]>),
    Mapped(std::rc::Rc<cache::Mapped>),
}

/// `len` cached bytes from `offset`.
fn cached_part(bytes: &[u8], offset: u64, len: u64) -> io::Result<&[u8]> {
    bytes
        .get(offset as usize..(offset + len) as usize)
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "a range outside the cached file"))
}

impl Source {
    fn kept(kept: cache::Kept) -> Source {
        match kept {
            cache::Kept::Bytes(b) => Source::Cached(b),
            cache::Kept::Mapped(m) => Source::Mapped(m),
        }
    }

    /// Appends `len` bytes from `offset` to `out`; a file that shrank since its length was
    /// announced is an error (the promised Content-Length cannot be kept).
    fn read_into(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Source::File(file) => read_at(file, offset, len, out),
            // Never read through the mapping here: a truncated file would raise SIGBUS (cache.rs).
            Source::Mapped(m) => read_at(&m.file, offset, len, out),
            Source::Cached(bytes) => {
                out.extend_from_slice(cached_part(bytes, offset, len)?);
                Ok(())
            }
        }
    }

    /// Sends `first` (a head), then `len` bytes from `offset`: with `sendfile`, sendfile(2) from a
    /// file (the head with `MSG_MORE`); otherwise one `writev` of the head and the bytes, from the
    /// cache, the connection's mapping, or mappings of the file made for this answer.
    fn send(&self, stream: &mut Stream, first: &[u8], offset: u64, len: u64, sendfile: bool) -> io::Result<()> {
        match self {
            Source::File(file) if sendfile => {
                write_all_more(stream, first)?;
                send_file(stream, file, offset, len)
            }
            Source::File(file) => send_mapped(stream, first, file, offset, len),
            Source::Mapped(m) => {
                let part = cached_part(&m.map, offset, len)?;
                write_all_vectored(stream, first, part).map_err(shrank_on_efault)
            }
            Source::Cached(bytes) => write_all_vectored(stream, first, cached_part(bytes, offset, len)?),
        }
    }
}

/// One part of a `multipart/byteranges` body.
struct Part {
    head: String,
    offset: u64,
    len: u64,
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Text(t) => t.len() as u64,
            Body::Static(t) => t.len() as u64,
            Body::File { len, .. } => *len,
            Body::Parts { parts, end, .. } => {
                parts.iter().map(|p| p.head.len() as u64 + p.len).sum::<u64>() + end.len() as u64
            }
        }
    }
}

/// Headers a proxy adds (RFC 7239 `Forwarded`, the de-facto `X-Forwarded-*`, `X-Real-IP`, and
/// `Via`, RFC 9110 §7.6.3): a request carrying one came through a proxy.
const PROXY_HEADERS: [&str; 5] = ["Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP", "Via"];

/// The methods a file or a status page answers.
const ALLOW: &str = "GET, HEAD, OPTIONS";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn error(status: u16, detail: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {r}</title></head><body><h1>{status} {r}</h1><p>{detail}</p></body></html>\n",
        r = reason(status)
    );
    // The connection stays usable after an answer about the resource; not after one about a
    // request that could not be read or framed.
    let close = !matches!(status, 304 | 403 | 404 | 405 | 412 | 416);
    Response {
        status,
        headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
        body: Body::Text(body),
        close,
    }
}

impl Service for HttpService {
    fn child_init(&mut self) -> io::Result<()> {
        if let Some(access) = &self.access {
            access.flush_on_sigterm()?;
        }
        Ok(())
    }

    fn serve(&mut self, conn: &mut Connection<'_>) -> io::Result<()> {
        let result = self.serve_connection(conn);
        // The connection's mappings of large files go with it (cache.rs: an idle child maps nothing).
        self.cache.borrow_mut().release_mappings();
        // The connection's access-log lines go out when it ends (log.rs: buffered per child).
        if let Some(access) = &self.access {
            access.flush();
        }
        result
    }

    fn gate_config(&self) -> Option<prefork_core::gate::GateConfig> {
        Some(prefork_core::gate::GateConfig {
            capacity: self.cfg.accept_filter_connections,
            first_byte_timeout: self.cfg.timeout,
            request_read_timeout: self.cfg.request_read_timeout,
            keep_alive_timeout: self.cfg.keep_alive_timeout,
            min_rate: self.cfg.request_read_min_rate,
        })
    }

    fn head_progress(&self, bytes: &[u8]) -> prefork_core::gate::HeadProgress {
        // Whatever a child would answer (a head, or an error status) is complete for the gate.
        match parse_head(bytes, &self.cfg) {
            Some(_) => prefork_core::gate::HeadProgress::Complete,
            None => prefork_core::gate::HeadProgress::Partial,
        }
    }
}

impl HttpService {
    fn serve_connection(&mut self, conn: &mut Connection<'_>) -> io::Result<()> {
        self.buf.clear();
        // Behind the gate, the head (and maybe more) is already here.
        self.buf = conn.take_prefix();
        if let Stream::Tcp(s) = conn.stream() {
            // As Apache: responses go out at once, not after the client's delayed ACK of a
            // previous segment (Nagle's algorithm would add ~40 ms to every kept-alive request).
            s.set_nodelay(true)?;
        }
        // Writes always wait at most `timeout`; reads wait for what the moment needs.
        conn.stream().set_write_timeout(Some(self.cfg.timeout))?;
        self.read_timeout = None;
        let mut served = 0u32;
        loop {
            let head = self.read_head(conn, served == 0)?;
            let (arrived, started) = (SystemTime::now(), Instant::now());
            self.arrived = arrived;
            // The head is in: the request is handled and answered in `W`, as Apache's (so the
            // child that serves a status page shows itself as `W`).
            let mut graceful = false;
            let (mut response, request) = match head {
                Incoming::Closed => return self.close(conn, false),
                Incoming::GivenBack => return Ok(()),
                Incoming::Error(status, why) => (error(status, why), None),
                Incoming::Head(head) => {
                    conn.status().request(head.request_line());
                    graceful = conn.status().set(SlotState::BusyWrite) == SlotUpdate::Graceful;
                    let response = self.respond(conn, &head)?;
                    (response, Some(head))
                }
            };
            served += 1;
            // Asked again just before the answer goes out: a graceful restart that came while the
            // request was handled still gets this answer its `Connection: close`.
            graceful |= conn.status().set(SlotState::BusyWrite) == SlotUpdate::Graceful;
            response.close = decide::closes(request.as_ref(), served, graceful, response.close, &self.cfg);
            let head_only = request.as_ref().is_some_and(|h| h.method() == "HEAD");
            self.out.clear();
            response_headers(&mut self.out, &response, request.as_ref(), served, arrived, &self.cfg);
            // A client gone mid-response is still logged (with what was sent), as Apache does.
            let held = self.access.as_ref().map(AccessLog::hold);
            let written = self.write(conn, response.body, head_only);
            let sent = *written.as_ref().unwrap_or(&0);
            conn.status().count_request(sent, started.elapsed());
            if let Some(access) = &self.access {
                conn.status().set(SlotState::Logging);
                access.write(&Entry {
                    host: conn.peer_addr().map(|a| a.ip()),
                    request_line: request.as_ref().map_or("-", Head::request_line),
                    status: response.status,
                    bytes: sent,
                    referer: request.as_ref().and_then(|h| h.header("Referer")),
                    user_agent: request.as_ref().and_then(|h| h.header("User-Agent")),
                    time: arrived,
                });
            }
            drop(held);
            written?;
            if response.close {
                // Unread bytes (a pipelined request, an error before the body) would make close()
                // send a reset that can destroy the response in flight: linger to drain them.
                let linger = !self.buf.is_empty() || request.is_none();
                return self.close(conn, linger);
            }
        }
    }

    /// Reads one request head.
    fn read_head(&mut self, conn: &mut Connection<'_>, first: bool) -> io::Result<Incoming> {
        let (timeout, header_timeout) = (self.cfg.timeout, self.cfg.request_read_timeout);
        conn.status().set(if first || !self.buf.is_empty() { SlotState::BusyRead } else { SlotState::Keepalive });
        let idle_limit = if first { timeout } else { self.cfg.keep_alive_timeout };
        let mut deadline: Option<Instant> = None;
        let mut chunk = [0u8; 8192];
        let mut idle_so_far = Duration::ZERO;
        if !first && self.buf.is_empty() && conn.gated() {
            // Idle between requests, behind the gate. A kept-alive client's next request usually
            // comes within a round trip: a plain read first (one system call, as without the
            // gate); only if it is slower does the child also watch the gate's channel, where a
            // waiting request takes this child and the connection goes back to the gate
            // (SPEC.md §15.2).
            let started = Instant::now();
            self.set_read_timeout(conn, KEPT_ALIVE_FIRST_LOOK.min(idle_limit))?;
            match conn.stream().read(&mut chunk) {
                Ok(0) => return Ok(Incoming::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            idle_so_far = started.elapsed();
        }
        if !first && self.buf.is_empty() && conn.gated() {
            match conn.wait_for_request(idle_limit.saturating_sub(idle_so_far))? {
                NextRequest::Arrived => {}
                NextRequest::TimedOut => return Ok(Incoming::Closed),
                NextRequest::GiveBack => {
                    conn.give_back(&[]);
                    return Ok(Incoming::GivenBack);
                }
            }
        }
        loop {
            if !self.buf.is_empty() {
                if deadline.is_none() {
                    conn.status().set(SlotState::BusyRead);
                }
                if let Some(result) = self.parse() {
                    return Ok(result);
                }
                // Only a head that is not all here needs the clock.
                deadline = deadline.or_else(|| Some(Instant::now() + header_timeout));
            }
            let wait = match deadline {
                None => idle_limit,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Incoming::Error(408, "The request head did not arrive in time."));
                    }
                    left.min(timeout)
                }
            };
            self.set_read_timeout(conn, wait)?;
            match conn.stream().read(&mut chunk) {
                Ok(0) => return Ok(Incoming::Closed), // a client that closes mid-request gets nothing
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.buf.is_empty() {
                        return Ok(Incoming::Closed); // idle: keep-alive timeout
                    }
                    return Ok(Incoming::Error(408, "The request head did not arrive in time."));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tries to parse the buffered head: `None` if more bytes are needed.
    fn parse(&self) -> Option<Incoming> {
        parse_head(&self.buf, &self.cfg)
    }

    /// Answers a complete head (consuming it and its body from the buffer): carries out what
    /// [`decide::plan`] says.
    fn respond(&mut self, conn: &mut Connection<'_>, head: &Head) -> io::Result<Response> {
        self.buf.drain(..head.len);
        let (body, continue_first, route) = match decide::plan(head, &self.cfg, conn.listener()) {
            decide::Plan::Refuse(r) => return Ok(r),
            decide::Plan::Read { body, continue_first, then } => (body, continue_first, then),
        };
        if body > 0 {
            if continue_first {
                conn.stream().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            if !self.discard_body(conn, body)? {
                return Ok(error(400, "The request body did not arrive."));
            }
        }
        Ok(match route {
            decide::Route::Refuse(r) => r,
            decide::Route::Options => options(),
            decide::Route::Status { page, query } => self.status(conn, page, query, head),
            decide::Route::File { path, query } => self.file(path, query, head, conn.peer()),
        })
    }

    fn discard_body(&mut self, conn: &mut Connection<'_>, mut left: u64) -> io::Result<bool> {
        let take = (left as usize).min(self.buf.len());
        self.buf.drain(..take);
        left -= take as u64;
        let mut chunk = [0u8; 8192];
        self.set_read_timeout(conn, self.cfg.timeout)?;
        while left > 0 {
            match conn.stream().read(&mut chunk[..(left as usize).min(8192)]) {
                Ok(0) => return Ok(false),
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn status(&self, conn: &Connection<'_>, path: &str, query: &str, head: &Head) -> Response {
        if let Err(refused) = decide::status_access(conn.peer_addr().map(|a| a.ip()), conn.listener(), head, &self.cfg)
        {
            return refused;
        }
        let pool = conn.pool();
        let snap = pool.snapshot();
        let name = &self.cfg.server_name;
        let mut headers: Vec<(&str, Cow<str>)> = vec![("Cache-Control", "no-cache".into())];
        let (kind, body) = if self.cfg.metrics_path.as_deref() == Some(path) {
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", status::metrics(&snap, &pool.listeners()))
        } else {
            let q = status::StatusQuery::parse(query);
            if let Some(every) = q.refresh {
                headers.push(("Refresh", every.to_string().into()));
            }
            // CPU times come from /proc: read them only for the pages that show them.
            let cpu = || status::Cpu::read(std::os::unix::process::parent_id(), &snap);
            if q.auto {
                ("text/plain; charset=utf-8", status::auto(&snap, &cpu(), name, SERVER))
            } else if q.live {
                // Everything it needs is in the page: nothing may be loaded from elsewhere.
                headers.push((
                    "Content-Security-Policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
                        .into(),
                ));
                ("text/html; charset=utf-8", status::LIVE_PAGE.to_string())
            } else if q.json {
                ("application/json", status::json(&snap, &cpu(), &pool.listeners(), name, SERVER))
            } else {
                let options = status::HtmlOptions { no_table: q.no_table };
                ("text/html; charset=utf-8", status::html(&snap, &cpu(), &pool.listeners(), name, SERVER, options))
            }
        };
        headers.insert(0, ("Content-Type", kind.into()));
        Response { status: 200, headers, body: Body::Text(body), close: false }
    }

    fn file(&self, path: &str, query: &str, head: &Head, peer: &str) -> Response {
        let Some(root) = &self.root else {
            return if path == "/" || path == "/index.html" {
                Response {
                    status: 200,
                    headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
                    body: Body::Static(DEFAULT_PAGE),
                    close: false,
                }
            } else {
                error(404, "Not found.")
            };
        };
        // A kept file that is still the same file: no open, no read (cache.rs).
        if let Some(c) = self.cache.borrow_mut().get(root.fd(), path) {
            return self.file_response(Source::kept(c.kept.clone()), c.len, Some(c.modified), &c.name, head);
        }
        match root.resolve(path) {
            Resolved::File { file, meta, path: real } => {
                let map = !self.cfg.enable_sendfile;
                let source = match self.cache.borrow_mut().offer(path, &real, file, &meta, self.arrived, map) {
                    Ok(kept) => Source::kept(kept),
                    Err(file) => Source::File(file),
                };
                self.file_response(source, meta.len(), meta.modified().ok(), &real, head)
            }
            Resolved::Redirect(to) => {
                let to = if query.is_empty() { to } else { format!("{to}?{query}") };
                let mut r = error(301, "Moved here.");
                r.close = false;
                r.headers.push(("Location", to.into()));
                r
            }
            Resolved::BadRequest(why) => error(400, why),
            Resolved::Forbidden(why) => {
                tracing::info!("403 for {path} from {peer}: {why}");
                error(403, "Forbidden.")
            }
            Resolved::NotFound => error(404, "Not found."),
            Resolved::Failed => error(500, "The file could not be read."),
        }
    }

    /// A file's answer: its validators, the preconditions, then the whole file or the ranges
    /// asked for (RFC 9110 §13, §14; see [`conditional`]).
    fn file_response(
        &self,
        file: Source,
        len: u64,
        modified: Option<SystemTime>,
        name: &std::path::Path,
        head: &Head,
    ) -> Response {
        let v = Validators::for_file(len, modified, self.arrived);
        let mut headers: Vec<(&str, Cow<str>)> = Vec::with_capacity(6);
        headers.push(("ETag", v.etag.header().into()));
        if let Some(lm) = v.last_modified {
            let mut date = String::with_capacity(29); // an HTTP date's length
            let _ = write!(date, "{}", httpdate::HttpDate::from(lm));
            headers.push(("Last-Modified", date.into()));
        }
        let (im, inm, ims, ius) = (
            head.list("If-Match"),
            head.list("If-None-Match"),
            head.list("If-Modified-Since"),
            head.list("If-Unmodified-Since"),
        );
        let conditions = Conditions {
            if_match: im.as_deref(),
            if_none_match: inm.as_deref(),
            if_modified_since: ims.as_deref(),
            if_unmodified_since: ius.as_deref(),
        };
        match conditional::evaluate(&conditions, &v, true) {
            Precondition::Proceed => {}
            Precondition::NotModified => return Response { status: 304, headers, body: Body::Empty, close: false },
            Precondition::Failed => return error(412, "A precondition of the request failed."),
        }
        let limits = self.cfg.range_limits;
        headers.push(("Accept-Ranges", if limits.max_ranges == 0 { "none" } else { "bytes" }.into()));
        let kind: Cow<str> = self.mime.content_type(name).to_string().into();
        // Ranges are for GET only (RFC 9110 §14.2); a HEAD is answered as the GET without one.
        let answer = match head.list("Range") {
            Some(range) if head.method() == "GET" => {
                conditional::ranges(&range, head.list("If-Range").as_deref(), &v, len, limits)
            }
            _ => Ranges::Full,
        };
        match answer {
            Ranges::Full => {
                headers.insert(0, ("Content-Type", kind));
                Response { status: 200, headers, body: Body::File { file, offset: 0, len }, close: false }
            }
            Ranges::Unsatisfiable => {
                let mut r = error(416, "The range asked for is not in the file.");
                r.headers.push(("Content-Range", format!("bytes */{len}").into()));
                r
            }
            Ranges::Partial(ranges) if ranges.len() == 1 => {
                let (first, last) = ranges[0];
                headers.insert(0, ("Content-Type", kind));
                headers.push(("Content-Range", format!("bytes {first}-{last}/{len}").into()));
                Response {
                    status: 206,
                    headers,
                    body: Body::File { file, offset: first, len: last - first + 1 },
                    close: false,
                }
            }
            Ranges::Partial(ranges) => {
                let boundary = boundary();
                let parts = ranges
                    .iter()
                    .map(|&(first, last)| Part {
                        head: format!(
                            "\r\n--{boundary}\r\nContent-Type: {kind}\r\nContent-Range: bytes {first}-{last}/{len}\r\n\r\n"
                        ),
                        offset: first,
                        len: last - first + 1,
                    })
                    .collect();
                headers.insert(0, ("Content-Type", format!("multipart/byteranges; boundary={boundary}").into()));
                let end = format!("\r\n--{boundary}--\r\n");
                Response { status: 206, headers, body: Body::Parts { file, parts, end }, close: false }
            }
        }
    }

    /// Sets `SO_RCVTIMEO` if it changes (a kept-alive connection waits with the same value for
    /// every request: no system call).
    fn set_read_timeout(&mut self, conn: &mut Connection<'_>, d: Duration) -> io::Result<()> {
        if self.read_timeout != Some(d) {
            conn.stream().set_read_timeout(Some(d))?;
            self.read_timeout = Some(d);
        }
        Ok(())
    }

    /// Writes the head (already in `self.out`, from [`response_headers`]) and (unless HEAD) the
    /// body; returns the body bytes sent. A body of file
    /// bytes is a list of parts (a whole file or one range: one part with no part head; several
    /// ranges: each with its part head, then the closing boundary). Up to [`INLINE_BODY`] file
    /// bytes go out in the head's write; beyond, each part's bytes follow with sendfile(2), the
    /// first part's head going with the response head.
    fn write(&mut self, conn: &mut Connection<'_>, body: Body, head_only: bool) -> io::Result<u64> {
        let len = body.len();
        let out = &mut self.out;
        let (single, several);
        let file_parts: Option<(Source, &[Part], String)> = match body {
            _ if head_only => None,
            Body::Empty => None,
            Body::Text(t) => {
                out.extend_from_slice(t.as_bytes());
                None
            }
            Body::Static(t) => {
                out.extend_from_slice(t.as_bytes());
                None
            }
            Body::File { file, offset, len } => {
                single = [Part { head: String::new(), offset, len }];
                Some((file, &single, String::new()))
            }
            Body::Parts { file, parts, end } => {
                several = parts;
                Some((file, &several, end))
            }
        };
        let sendfile = self.cfg.enable_sendfile;
        let stream = conn.stream();
        match file_parts {
            None => write_all(stream, out)?,
            Some((file, parts, end)) if parts.iter().map(|p| p.len).sum::<u64>() <= INLINE_BODY => {
                for p in parts {
                    out.extend_from_slice(p.head.as_bytes());
                    file.read_into(p.offset, p.len, out)?;
                }
                out.extend_from_slice(end.as_bytes());
                write_all(stream, out)?;
            }
            Some((file, parts, end)) => {
                for p in parts {
                    out.extend_from_slice(p.head.as_bytes());
                    file.send(stream, out, p.offset, p.len, sendfile)?;
                    out.clear();
                }
                write_all(stream, end.as_bytes())?;
            }
        }
        if out.capacity() > 4 * INLINE_BODY as usize {
            *out = Vec::with_capacity(8192); // do not keep a large status page's buffer
        }
        Ok(if head_only { 0 } else { len })
    }

    fn close(&mut self, conn: &mut Connection<'_>, linger: bool) -> io::Result<()> {
        conn.status().set(SlotState::Closing);
        let stream = conn.stream();
        let _ = match stream {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
        if linger {
            // Apache's lingering close: read and drop for up to 2 s, until the client closes.
            let until = Instant::now() + Duration::from_secs(2);
            let mut sink = [0u8; 4096];
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                let _ = stream.set_read_timeout(Some(left));
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (so `127.0.0.0/8` matches `::ffff:127.0.0.1`).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Appends `len` bytes of `file` from `offset` to `out`; a file that shrank since its length was
/// announced is an error (the promised Content-Length cannot be kept).
fn read_at(file: &std::fs::File, offset: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let at = out.len();
    out.resize(at + len as usize, 0);
    file.read_exact_at(&mut out[at..], offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")
        } else {
            e
        }
    })
}

/// The answer to OPTIONS.
fn options() -> Response {
    Response { status: 200, headers: vec![("Allow", ALLOW.into())], body: Body::Empty, close: false }
}

/// A `multipart/byteranges` boundary: unique per response in this child (time and pid).
fn boundary() -> String {
    let nanos = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{nanos:016x}{:08x}", std::process::id())
}

/// Parses the head at the start of `buf`: `None` if more bytes are needed; a head, or the error
/// a child answers, once there is something to answer.
fn parse_head(buf: &[u8], cfg: &HttpConfig) -> Option<Incoming> {
    // Left uninitialised: httparse writes the ones it fills (no zeroing per request). Up to
    // `STACK_FIELDS` on the stack (the default limit is 100), more on the heap.
    const STACK_FIELDS: usize = 128;
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let headers = if cfg.limit_request_fields <= STACK_FIELDS {
        &mut stack[..cfg.limit_request_fields]
    } else {
        heap.resize_with(cfg.limit_request_fields, std::mem::MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(len)) => {
            let fields = req.headers.iter().map(|h| (h.name, h.value));
            let head = Head::new(
                req.method.unwrap_or_default(),
                req.path.unwrap_or_default(),
                req.version.unwrap_or(1),
                fields,
                len,
            );
            if let Some(e) = line_limits(&buf[..len], cfg) {
                return Some(e);
            }
            if framing::has_bare_lf(&buf[..len]) {
                return Some(Incoming::Error(400, "Every line of a request head ends with CR LF."));
            }
            Some(Incoming::Head(head))
        }
        Ok(httparse::Status::Partial) => line_limits(buf, cfg),
        Err(httparse::Error::TooManyHeaders) => Some(Incoming::Error(431, "Too many request header fields.")),
        Err(httparse::Error::Version) => Some(Incoming::Error(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")),
        Err(_) => Some(Incoming::Error(400, "The request is malformed.")),
    }
}

/// Checks `LimitRequestLine` and `LimitRequestFieldSize` on what has arrived so far.
fn line_limits(buf: &[u8], cfg: &HttpConfig) -> Option<Incoming> {
    let mut lines = buf.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    if first.len() > cfg.limit_request_line + 1 {
        return Some(Incoming::Error(414, "The request line is too long."));
    }
    let mut fields = 0;
    for line in lines {
        if line.len() > cfg.limit_request_field_size + 1 {
            return Some(Incoming::Error(431, "A request header field is too long."));
        }
        if !line.is_empty() && line != b"\r" {
            fields += 1;
        }
    }
    if fields > cfg.limit_request_fields {
        return Some(Incoming::Error(431, "Too many request header fields."));
    }
    None
}

/// A time's text, formatted once a second: the `Date` header's and the access log's.
#[derive(Debug)]
pub(crate) struct SecondText {
    /// The second last formatted (`u64::MAX`: none yet).
    second: u64,
    text: String,
}

impl SecondText {
    pub(crate) const fn new() -> SecondText {
        SecondText { second: u64::MAX, text: String::new() }
    }

    /// The text of `t`'s second: `format` writes it the first time that second is asked for.
    pub(crate) fn of(&mut self, t: SystemTime, format: impl FnOnce(&mut String, SystemTime)) -> &str {
        let second = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.second != second {
            self.text.clear();
            format(&mut self.text, t);
            self.second = second;
        }
        &self.text
    }
}

/// Appends `now` as an HTTP date (RFC 9110 §5.6.7), formatted once a second.
fn http_date(out: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static DATE: std::cell::RefCell<SecondText> = const { std::cell::RefCell::new(SecondText::new()) };
    }
    DATE.with_borrow_mut(|date| {
        let text = date.of(now, |text, t| {
            let _ = write!(text, "{}", httpdate::HttpDate::from(t));
        });
        out.extend_from_slice(text.as_bytes());
    });
}

/// Appends the response head, with the connection-management headers, to `head`.
fn response_headers(
    head: &mut Vec<u8>,
    r: &Response,
    req: Option<&Head>,
    served: u32,
    now: SystemTime,
    cfg: &HttpConfig,
) {
    use std::io::Write as _;
    let minor = req.map_or(1, |h| h.minor);
    // Always HTTP/1.1, the highest version we conform to, also to a 1.0 client (RFC 9110 §6.2,
    // as Apache); the connection rules still follow the client's version.
    let _ = write!(head, "HTTP/1.1 {} {}\r\nDate: ", r.status, reason(r.status));
    http_date(head, now);
    let _ = write!(head, "\r\nServer: {SERVER}\r\n");
    for (name, value) in &r.headers {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    if r.status != 304 {
        let _ = write!(head, "Content-Length: {}\r\n", r.body.len());
    }
    if r.close {
        head.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        // Only an HTTP/1.0 client that asked for keep-alive learns its terms (HTTP/1.1 keeps
        // connections by default, and the Keep-Alive header is deprecated there, RFC 9112 §9.3).
        head.extend_from_slice(b"Connection: keep-alive\r\n");
        let _ = write!(head, "Keep-Alive: timeout={}", cfg.keep_alive_timeout.as_secs());
        if cfg.max_keep_alive_requests != 0 {
            let _ = write!(head, ", max={}", cfg.max_keep_alive_requests - served);
        }
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// `Write::write_all`, except that it gives up once a stop was asked for while the answer went
/// out ([`log::stop_requested`]; a write the signal cuts short returns what it sent, or EINTR).
fn write_all(stream: &mut Stream, buf: &[u8]) -> io::Result<()> {
    write_all_vectored(stream, buf, &[])
}

/// [`write_all`], telling a TCP connection that more data follows at once (`MSG_MORE`): the bytes
/// wait, for at most the kernel's cork time (200 ms), for the next send to fill the segment. A unix
/// socket sends as [`write_all`] does.
fn write_all_more(stream: &mut Stream, mut buf: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    let Stream::Tcp(tcp) = stream else { return write_all(stream, buf) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(tcp);
    while !buf.is_empty() {
        if log::stop_requested() {
            return Err(stopping());
        }
        match send(fd, buf, MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the connection took no more bytes")),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`write_all`] of `a` then `b`: one writev(2) while both have bytes left, a plain write once
/// one is left.
fn write_all_vectored(stream: &mut Stream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
    let mut bufs = &mut bufs[..];
    io::IoSlice::advance_slices(&mut bufs, 0); // drops an empty `a`
    while !bufs.is_empty() {
        if log::stop_requested() {
            return Err(stopping());
        }
        let sent =
            if bufs.len() == 1 || bufs[1].is_empty() { stream.write(&bufs[0]) } else { stream.write_vectored(bufs) };
        match sent {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the connection took no more bytes")),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bytes of a large file mapped at a time when it is not kept (not settled, or too large).
const WINDOW: u64 = 4 << 20;

/// A copy out of a mapping that failed with `EFAULT`: the file shrank under it.
fn shrank_on_efault(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EFAULT) {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")
    } else {
        e
    }
}

/// Sends `head`, then `len` bytes of `file` from `offset`, from read-only mappings of the file
/// made for this answer, [`WINDOW`] bytes at a time (the head in the first `writev`).
fn send_mapped(stream: &mut Stream, head: &[u8], file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    let mut head = head;
    let (mut at, end) = (offset, offset + len);
    while at < end {
        let n = (end - at).min(WINDOW);
        // SAFETY: the mapping is read only by the kernel (writev copies it into the socket); a
        // page past a shrunken file's end fails that copy (EFAULT), it raises no signal here.
        let map = unsafe { memmap2::MmapOptions::new().offset(at).len(n as usize).map(file)? };
        write_all_vectored(stream, head, &map).map_err(shrank_on_efault)?;
        head = &[];
        at += n;
    }
    Ok(())
}

fn stopping() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the server is stopping")
}

/// Sends `n` bytes of `file` from `from` with sendfile(2). Each call waits at most the socket's send timeout
/// (`timeout`); a call that times out ends the response (`TimedOut`), so a client that stops
/// reading holds the child for `timeout`, not longer (std's copy would fall back to read/write
/// and wait again).
fn send_file(stream: &Stream, file: &std::fs::File, from: u64, n: u64) -> io::Result<()> {
    use std::os::fd::AsFd;
    let out = match stream {
        Stream::Tcp(s) => s.as_fd(),
        Stream::Unix(s) => s.as_fd(),
    };
    let mut offset = from as libc::off_t;
    let end = from + n;
    while (offset as u64) < end {
        if log::stop_requested() {
            return Err(stopping()); // as in `write_all`
        }
        let chunk = (end - offset as u64).min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile(out, file.as_fd(), Some(&mut offset), chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the client did not read within timeout"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
