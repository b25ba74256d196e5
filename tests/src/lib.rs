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
        if let Some(p) = std::env::var_os("PREFORKD_BIN") {
            return PathBuf::from(p);
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
            cmd.args(["build", "-q", "-p", "prefork-server", "--bin", "preforkd"]);
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

/// Pids of the direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
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
            panic!("preforkd did not start:\n{}", p.stderr());
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
        let children = children_of(self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in children {
            let _ = kill(Pid::from_raw(c as i32), Signal::SIGKILL);
        }
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
                let body: Vec<u8> = self.buf.drain(..take).collect();
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
