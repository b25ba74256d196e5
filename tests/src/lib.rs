//! A harness for black-box tests of `preforkd`: it starts the binary named by `PREFORKD_BIN`
//! (default: the workspace's own, brought up to date with `cargo build`), talks to it only through its public surface
//! (flags, signals, HTTP on loopback, the logs), and kills every process it started, by pid, also
//! when a test fails. Ports come from the kernel (`--listen 127.0.0.1:0`, read back from the log).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn preforkd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PREFORKD_BIN").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.exists(), "PREFORKD_BIN={}: no such file", p.display());
            return p;
        }
        // target/<profile>/deps/<test> -> target/<profile>/preforkd
        let exe = std::env::current_exe().expect("test exe");
        let bin = exe.parent().and_then(Path::parent).expect("target dir").join("preforkd");
        // Always (re)build: cargo does nothing when it is up to date, and a stale binary would
        // test yesterday's code.
        {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = exe.to_string_lossy().contains("/release/");
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-q", "-p", "preforkd", "--bin", "preforkd"]);
            if release {
                cmd.arg("--release");
            }
            assert!(cmd.status().expect("cargo build").success(), "building preforkd failed");
        }
        assert!(bin.exists(), "{} not found: build it, or set PREFORKD_BIN", bin.display());
        bin
    })
    .clone()
}

/// Runs the binary under test with `args` to its end: exit code, standard output, standard error.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(preforkd_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A fresh temporary directory.
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "preforkd-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running preforkd.
pub struct Preforkd {
    child: Child,
    /// The parent's pid.
    pub pid: u32,
    /// The addresses it listens on, in order.
    pub addrs: Vec<SocketAddr>,
    dir: PathBuf,
}

/// Pids of the direct children of `pid` that are pool children: not the gate
/// (`accept_filter = "httpready"`, SPEC.md §15), nor a successor.
pub fn children_of(pid: u32) -> Vec<u32> {
    processes_under(pid).into_iter().filter(|&c| !is_gate(c)).collect()
}

/// Pids of every direct child of `pid` (pool children, the gate, a successor).
pub fn processes_under(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Is `pid` a gate (its process name is `prefork-gate`)?
pub fn is_gate(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "prefork-gate")
}

/// The gates among the direct children of `pid`.
pub fn gates_of(pid: u32) -> Vec<u32> {
    processes_under(pid).into_iter().filter(|&c| is_gate(c) && !is_zombie(c)).collect()
}

/// The pid holding a POSIX record lock (the fcntl accept lock), from `/proc/locks`.
pub fn posix_lock_holders() -> Vec<u32> {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"POSIX") && f.get(3) == Some(&"WRITE")).then(|| f.get(4)?.parse().ok()).flatten()
        })
        .collect()
}

/// The optional conformance features the binary under test declares (CONFORMANCE.md): the
/// lines `BIN --conformance-features` prints. A binary without the flag declares none.
pub fn declared_features() -> Vec<String> {
    static FEATURES: OnceLock<Vec<String>> = OnceLock::new();
    FEATURES
        .get_or_init(|| {
            match Command::new(preforkd_bin()).arg("--conformance-features").stdin(Stdio::null()).output() {
                Ok(out) if out.status.success() => {
                    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
                }
                _ => vec![],
            }
        })
        .clone()
}

/// Live direct children of `pid` that are pool children (zombies count as gone).
pub fn live_children_of(pid: u32) -> Vec<u32> {
    children_of(pid).into_iter().filter(|&c| !is_zombie(c)).collect()
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Is `pid` alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Polls `f` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

impl Preforkd {
    /// How long until every listener answers `GET /` with 200 again (probing each with 500 ms
    /// reads until it does), if that is within `limit`.
    pub fn serving_again_within(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        for &addr in &self.addrs {
            let ok = wait_until(limit.saturating_sub(start.elapsed()), || {
                let Ok(mut c) = Client::connect(addr) else { return false };
                c.set_read_timeout(Duration::from_millis(500));
                c.request("GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").is_ok_and(|r| r.status == 200)
            });
            if !ok {
                return None;
            }
        }
        Some(start.elapsed())
    }

    /// Starts preforkd with `args` (plus `--listen 127.0.0.1:0` unless a listen is given) and
    /// waits until it serves.
    pub fn start(args: &[&str]) -> Preforkd {
        Self::start_with(args, |bin, args| {
            let mut cmd = Command::new(bin);
            cmd.args(args);
            cmd
        })
    }

    /// As [`Preforkd::start`], with the command built by `command(binary, arguments)` (a wrapper,
    /// inherited descriptors, ...); the harness then adds the environment and the log files.
    pub fn start_with(args: &[&str], command: impl FnOnce(&Path, &[String]) -> Command) -> Preforkd {
        let dir = tempdir("run");
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !all.iter().any(|a| a == "--listen" || a.starts_with("--config") || a == "-f") {
            all.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let mut cmd = command(&preforkd_bin(), &all);
        cmd.env("RUST_LOG", "info")
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("start preforkd");
        let pid = child.id();
        let mut p = Preforkd { child, pid, addrs: vec![], dir };
        let ready = wait_until(Duration::from_secs(10), || p.stderr().contains("resuming normal operations"));
        if !ready {
            // The last line first: what a refused flag or a failed bind says, for one-line reports.
            let log = p.stderr();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            panic!("preforkd did not start: {last}\n{log}");
        }
        p.addrs = p.listening();
        p
    }

    /// The addresses from the "listening on" log line.
    fn listening(&self) -> Vec<SocketAddr> {
        let log = self.stderr();
        let line = log.lines().find(|l| l.contains("listening on ")).unwrap_or_default();
        let list = line.split("listening on ").nth(1).unwrap_or("").split(';').next().unwrap_or("");
        list.split(", ").filter_map(|a| a.trim().parse().ok()).collect()
    }

    /// The first address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The agent-check address (`agent_listen`), from the log line that names it.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        let log = self.stderr();
        let line = log.lines().rev().find(|l| l.contains("agent checks on "))?;
        line.split("agent checks on ").nth(1)?.trim().parse().ok()
    }

    /// The error log (standard error) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The access log (standard output) so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Sends a signal to the parent.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid as i32), sig).expect("signal preforkd");
    }

    /// Waits for the parent to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        request(self.addr(), &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
            .expect("request")
    }
}

impl Drop for Preforkd {
    fn drop(&mut self) {
        let children = processes_under(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_all(&children);
        if std::thread::panicking() {
            eprintln!("--- preforkd stderr ---\n{}", self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One kept-alive connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client { stream, buf: vec![] })
    }

    /// Sets how long reads wait.
    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Reads one response (`head_only`: the request was HEAD, no body follows).
    pub fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        let mut chunk = [0u8; 16384];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap_or(0);
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                self.buf.drain(..len);
                let length = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok());
                let body_len = if head_only || status == 304 { 0 } else { length.unwrap_or(usize::MAX) };
                while self.buf.len() < body_len {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        if length.is_none() {
                            break;
                        }
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body cut short"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let take = body_len.min(self.buf.len());
                let mut body: Vec<u8> = self.buf.drain(..take).collect();
                // A chunked body (another server's: the exporter's) read to the close: decoded.
                let chunked = headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case("Transfer-Encoding") && v.to_ascii_lowercase().contains("chunked")
                });
                if chunked && length.is_none() {
                    body = dechunk(&body)?;
                }
                return Ok(Response { status, headers, body });
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, raw: &str) -> std::io::Result<Response> {
        self.send(raw.as_bytes())?;
        self.read_response(raw.starts_with("HEAD "))
    }

    /// Has the server closed the connection (reads EOF within `timeout`)?
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0)) || matches!(self.stream.read(&mut b), Ok(0))
    }
}

/// The data of a complete `Transfer-Encoding: chunked` body.
pub fn dechunk(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    let mut out = vec![];
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("no chunk size line"))?;
        let size_text = std::str::from_utf8(&raw[..line_end]).map_err(|_| bad("size not text"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("size not hex"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err(bad("cut short"));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &str) -> std::io::Result<Response> {
    Client::connect(addr)?.request(raw)
}

/// Reads lines from a child's standard output until `pred` matches one (or `timeout`).
pub fn read_line_matching(out: impl Read, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = BufReader::new(out).lines();
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) if pred(&l) => return Some(l),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// What one request of a [`Load`] came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 200.
    Ok,
    /// The connection was refused (nothing listens: after a stop closed the listeners).
    Refused,
    /// Anything else: a reset, a close before the response, a timeout, a bad status.
    Failed(String),
}

/// One failed request, and when.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When the failure was seen.
    pub at: Instant,
    /// What happened.
    pub what: String,
}

/// How [`Load`] clients use connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the connection open while the server allows (reconnect when it says close).
    KeepAlive,
    /// One request per connection (`Connection: close`).
    Close,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    failures: std::sync::Mutex<Vec<Failure>>,
}

/// A real HTTP client load: `clients` threads sending `GET path` to the addresses in turn,
/// counting every request's outcome. Clients follow the protocol: a response with
/// `Connection: close` means reconnect, which is not a failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tally: std::sync::Arc<Tally>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// What a [`Load`] saw in total.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Requests answered 200.
    pub ok: u64,
    /// Connections refused.
    pub refused: u64,
    /// Every other outcome, in order.
    pub failures: Vec<Failure>,
}

impl Load {
    /// Starts the clients.
    pub fn start(addrs: &[SocketAddr], clients: usize, mode: Mode, path: &str) -> Load {
        use std::sync::atomic::AtomicBool;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let tally = std::sync::Arc::new(Tally::default());
        let handles = (0..clients)
            .map(|i| {
                let (stop, tally) = (stop.clone(), tally.clone());
                let addrs = addrs.to_vec();
                let request = match mode {
                    Mode::KeepAlive => format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n"),
                    Mode::Close => format!("GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n"),
                };
                std::thread::spawn(move || {
                    let mut n = i;
                    let mut client: Option<Client> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if client.is_none() {
                            n += 1;
                            match Client::connect(addrs[n % addrs.len()]) {
                                Ok(c) => client = Some(c),
                                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                    tally.refused.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(5));
                                    continue;
                                }
                                Err(e) => {
                                    let what = format!("connect: {e}");
                                    tally.failures.lock().unwrap().push(Failure { at: Instant::now(), what });
                                    continue;
                                }
                            }
                        }
                        let (outcome, keep) = one(client.as_mut().expect("connected"), &request);
                        if !keep {
                            client = None;
                        }
                        match outcome {
                            Outcome::Ok => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Refused => {
                                tally.refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Failed(what) => {
                                tally.failures.lock().unwrap().push(Failure { at: Instant::now(), what });
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, handles }
    }

    /// Requests answered so far.
    pub fn ok(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.tally.refused.load(Ordering::Relaxed)
    }

    /// Failures so far.
    pub fn failures(&self) -> Vec<Failure> {
        self.tally.failures.lock().unwrap().clone()
    }

    /// Waits until `n` more requests have been answered (or `timeout`); whether they were.
    pub fn progresses(&self, n: u64, timeout: Duration) -> bool {
        let start = self.ok();
        wait_until(timeout, || self.ok() >= start + n)
    }

    /// Stops the clients; the totals.
    pub fn stop(self) -> Totals {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
        Totals {
            ok: self.tally.ok.load(Ordering::Relaxed),
            refused: self.tally.refused.load(Ordering::Relaxed),
            failures: self.tally.failures.lock().unwrap().clone(),
        }
    }
}

/// One request on an open connection; whether the connection can be used again.
fn one(c: &mut Client, request: &str) -> (Outcome, bool) {
    c.set_read_timeout(Duration::from_secs(10));
    match c.request(request) {
        Ok(r) if r.status == 200 => (Outcome::Ok, r.header("Connection") != Some("close")),
        Ok(r) => (Outcome::Failed(format!("status {}", r.status)), false),
        Err(e) => (Outcome::Failed(format!("request: {e}")), false),
    }
}

/// One slot of the scoreboard, as `?json` shows it.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    /// Slot index.
    pub slot: usize,
    /// The child's pid (0: none).
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
    /// Apache's letter.
    pub letter: char,
    /// It holds the accept lock.
    pub holds_lock: bool,
    /// The request line it shows.
    pub request: String,
    /// Why the watchdog last killed a child in this slot (`accept_lock`, `request_deadline`).
    pub killed_for: Option<String>,
}

impl Preforkd {
    /// The scoreboard through `?json` (only slots with a pid).
    pub fn slots(&self) -> Vec<SlotInfo> {
        let text = self.get("/server-status?json").text();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "?json is not JSON ({e}; CONFORMANCE.md's contract needs it): {}",
                text.chars().take(60).collect::<String>()
            )
        });
        j["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(SlotInfo {
                    slot: s["slot"].as_u64()? as usize,
                    pid: s["pid"].as_u64()? as u32,
                    generation: s["generation"].as_u64()?,
                    letter: s["letter"].as_str()?.chars().next()?,
                    holds_lock: s["holds_accept_lock"].as_bool().unwrap_or(false),
                    request: s["request"].as_str().unwrap_or("").to_string(),
                    killed_for: s["killed_for"].as_str().map(str::to_string),
                })
            })
            .filter(|s| s.pid != 0)
            .collect()
    }

    /// A `?auto` field.
    pub fn auto_field(&self, name: &str) -> Option<String> {
        // During a hard restart a child being stopped may close a connection it accepted without
        // answering (as Apache's do): ask again, a few times, before calling it an error.
        let raw = "GET /server-status?auto HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let mut last = None;
        for _ in 0..20 {
            match request(self.addr(), raw) {
                Ok(r) => return auto_field_in(&r.text(), name).map(str::to_string),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("?auto: {last:?}")
    }

    /// The running generation (`ParentServerMPMGeneration`).
    pub fn generation(&self) -> u64 {
        let g = self.auto_field("ParentServerMPMGeneration").expect("ParentServerMPMGeneration in ?auto");
        g.parse().unwrap_or_else(|e| panic!("ParentServerMPMGeneration {g:?}: {e}"))
    }

    /// The parent's direct children that are zombies (exited, not reaped).
    pub fn zombies(&self) -> Vec<u32> {
        children_of(self.pid).into_iter().filter(|&c| is_zombie(c)).collect()
    }
}

/// Field `name` of a `?auto` report (`name: value` lines).
pub fn auto_field_in<'a>(auto: &'a str, name: &str) -> Option<&'a str> {
    auto.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// Is `pid` a zombie?
pub fn is_zombie(pid: u32) -> bool {
    proc_state(pid) == Some('Z')
}

/// Whether `pid` is stopped (state `T`, e.g. after SIGSTOP), from /proc.
pub fn is_stopped(pid: u32) -> bool {
    proc_state(pid) == Some('T')
}

/// `pid`'s state letter from /proc/PID/stat (`R`, `S`, `D`, `T`, `Z` …), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// `pid`'s parent, from /proc.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// One agent check (HAProxy's `agent-check`): connect, read the line, close.
pub fn agent_check(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    s.read_to_string(&mut line)?;
    Ok(line)
}

/// A free TCP port on 127.0.0.1 (bound and let go: for a program that cannot be given port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Debian's HAProxy, started in the foreground with a configuration, killed (by pid) when dropped.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    /// The binary, if installed (`.ci/run` installs it; tests without it say SKIPPED).
    pub fn binary() -> Option<PathBuf> {
        ["/usr/sbin/haproxy", "/usr/bin/haproxy"].iter().map(PathBuf::from).find(|p| p.exists())
    }

    /// Starts HAProxy on `config` (the text of an haproxy.cfg) and waits until `frontend` accepts.
    pub fn start(config: &str, frontend: SocketAddr) -> Haproxy {
        let dir = tempdir("haproxy");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let bin = Self::binary().expect("haproxy is installed");
        let check = Command::new(&bin).args(["-c", "-q", "-f"]).arg(&cfg).output().expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects the configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let h = Haproxy { child, dir };
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(frontend).is_ok()),
            "haproxy does not listen on {frontend}: {}",
            h.log()
        );
        h
    }

    /// What HAProxy printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- haproxy ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server the test did not start itself (the successor of an upgrade: its parent, the old
/// server, has exited): killed by pid, with its children, when dropped.
pub struct Detached(pub u32);

impl Drop for Detached {
    fn drop(&mut self) {
        let children = children_of(self.0);
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        kill_all(&children);
    }
}

/// SIGKILL to each of `pids` (a parent's children, listed before the parent was killed).
fn kill_all(pids: &[u32]) {
    for &c in pids {
        let _ = kill(Pid::from_raw(c as i32), Signal::SIGKILL);
    }
}

/// The pid a pid file names.
pub fn pid_in(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}
