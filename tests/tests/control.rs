//! Operating preforkd: -k through the pid file, restarts under load, socket activation, sd_notify.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Tests in this file run one at a time: the terminal test's process group and the restart
/// tests' timings must not share the machine with each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn dash_k_signals_the_running_server_after_validating_the_configuration() {
    let _s = serial();
    let dir = tempdir("k");
    let pid_file = dir.join("preforkd.pid");
    let pf = pid_file.to_str().unwrap();
    let mut p = Preforkd::start(&["--pid-file", pf]);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), p.pid.to_string());
    let k = |action: &str, extra: &[&str]| {
        let out = Command::new(preforkd_bin()).args(["-k", action, "--pid-file", pf]).args(extra).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, msg) = k("graceful", &[]);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("SIGUSR1"), "{msg}");
    assert!(wait_until(Duration::from_secs(3), || p.generation() == 1));
    let (code, msg) = k("graceful", &["--timeout", "0"]);
    assert_eq!(code, 1, "an invalid configuration is not sent: {msg}");
    assert_eq!(p.generation(), 1);
    let (code, _) = k("restart", &[]);
    assert_eq!(code, 0);
    assert!(wait_until(Duration::from_secs(5), || p.generation() == 2));
    let (code, _) = k("stop", &[]);
    assert_eq!(code, 0);
    assert_eq!(p.wait(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)));
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    let (code, msg) = k("stop", &[]);
    assert_eq!(code, 1);
    assert!(msg.contains("cannot read the pid file"), "{msg}");
    std::fs::write(&pid_file, "999999\n").unwrap();
    let (code, msg) = k("graceful", &[]);
    assert_eq!(code, 1);
    assert!(msg.contains("stale pid file"), "{msg}");
    let out = Command::new(preforkd_bin()).args(["-k", "stop"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pid_file is configured"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn twenty_graceful_restarts_under_keep_alive_load_cost_no_request() {
    let _s = serial();
    let p = Preforkd::start(&[
        "--start-servers",
        "6",
        "--min-spare-servers",
        "4",
        "--max-spare-servers",
        "12",
        "--max-keep-alive-requests",
        "0",
    ]);
    let load = Load::start(&p.addrs, 4, Mode::KeepAlive, "/");
    assert!(load.progresses(20, Duration::from_secs(5)));
    for generation in 1..=20 {
        p.signal(Signal::SIGUSR1);
        // One restart at a time (signals of one kind coalesce): wait until it is in force.
        assert!(wait_until(Duration::from_secs(3), || p.generation() == generation), "restart {generation}");
        // And the clients get through it: requests are answered in the new generation.
        assert!(load.progresses(20, Duration::from_secs(3)), "no progress after restart {generation}");
    }
    let Totals { ok, refused, failures } = load.stop();
    assert!(
        failures.is_empty() && refused == 0,
        "{} of {} requests failed, {refused} refused: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(ok >= 400, "only {ok} requests");
    assert_eq!(p.generation(), 20);
    eprintln!("20 graceful restarts under keep-alive load: {ok} requests, 0 failed");
}

#[test]
fn a_restart_re_reads_the_configuration_file() {
    let _s = serial();
    let dir = tempdir("reload");
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("index.html"), "new site").unwrap();
    let conf = dir.join("preforkd.toml");
    std::fs::write(&conf, "listen = [\"127.0.0.1:0\"]\n").unwrap();
    let p = Preforkd::start(&["--config", conf.to_str().unwrap()]);
    assert!(p.get("/").text().contains("preforkd works"));
    // listen must stay what is bound (port 0 would mean a new port): keep it, change the site.
    std::fs::write(&conf, format!("listen = [\"{}\"]\ndocument_root = \"{}\"\n", p.addr(), docs.display())).unwrap();
    p.signal(Signal::SIGUSR1);
    assert!(wait_until(Duration::from_secs(3), || p.get("/").text() == "new site"), "{}", p.stderr());
    std::fs::write(&conf, "listen = [\"127.0.0.1:0\"]\ntimeout = -1\n").unwrap();
    p.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(3), || p.stderr().contains("restart refused")), "{}", p.stderr());
    assert_eq!(p.get("/").text(), "new site", "still running with the previous configuration");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn socket_activation_serves_on_the_inherited_socket_and_sd_notify_reports_the_lifecycle() {
    let _s = serial();
    let dir = tempdir("sd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let fd = listener.as_raw_fd();
    // As systemd does: the socket as fd 3, LISTEN_FDS=1, LISTEN_PID = the server's own pid (the
    // shell's $$ becomes preforkd's pid through exec).
    let mut p = Preforkd::start_with(&["--listen", "127.0.0.1:1"], |bin, args| {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {} {}", bin.display(), args.join(" ")))
            .env("NOTIFY_SOCKET", &notify_path);
        // SAFETY: dup2 and fcntl are async-signal-safe. Runs after the standard streams are set
        // up; fd 3 must not be close-on-exec (dup2 clears the flag, except when fd is already 3).
        unsafe {
            sh.pre_exec(move || {
                if fd != 3 && libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        sh
    });
    assert!(p.stderr().contains("socket activation: serving on 1 inherited socket(s)"), "{}", p.stderr());
    let r = request(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "served on the inherited socket");
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().starts_with("READY=1"));
    p.signal(Signal::SIGUSR1);
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert!(next().starts_with("READY=1"));
    let r = request(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "the inherited socket survives a restart");
    // A graceful stop hands the socket back (SPEC.md §7.5, `HandOver`): the service manager
    // keeps it, so it must go on taking connections for the next start (a graceful stop of a
    // socket of its own drops new SYNs instead, and would leave it so).
    p.signal(Signal::SIGWINCH);
    assert_eq!(next(), "STOPPING=1");
    assert_eq!(p.wait(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)));
    let waiting = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("the handed-back socket still takes connections");
    listener.set_nonblocking(false).unwrap();
    let (taken, _) = listener.accept().expect("the connection waits for the socket's next user");
    assert_eq!(taken.peer_addr().unwrap(), waiting.local_addr().unwrap());
    drop(listener);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn graceful_stop_answers_requests_in_flight_then_exits() {
    let _s = serial();
    let mut p = Preforkd::start(&["--start-servers", "3"]);
    let mut c = Client::connect(p.addr()).unwrap();
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().status, 200);
    p.signal(Signal::SIGWINCH);
    // Once the parent has taken the stop (its log says so after every child is marked), the
    // kept-alive connection's next request is answered, with Connection: close.
    assert!(wait_until(Duration::from_secs(3), || p.stderr().contains("graceful stop requested")), "{}", p.stderr());
    let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert_eq!(p.wait(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)));
    assert!(std::net::TcpStream::connect(p.addr()).is_err(), "refused once the listeners are closed");
}

/// In a terminal, the kernel signals the whole foreground process group: SIGWINCH when the window
/// is resized, SIGINT on Ctrl-C. A resize must not stop the server (SIGWINCH is also the graceful
/// stop signal); Ctrl-C stops it cleanly, with no child reported as killed by SIGINT.
#[test]
fn in_a_terminal_a_resize_does_not_stop_the_server_and_ctrl_c_stops_it_cleanly() {
    let _s = serial();
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let slave = pty.slave.as_raw_fd();
    let mut p = Preforkd::start_with(&[], |bin, args| {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: setsid and ioctl are async-signal-safe. A new session whose controlling
        // terminal is the pty: preforkd's process group is the terminal's foreground group.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 || libc::ioctl(slave, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    });
    let master = pty.master.as_raw_fd();
    for (rows, cols) in [(30u16, 100u16), (40, 120), (24, 80)] {
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        assert_eq!(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) }, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wait_until(Duration::from_secs(2), || p.stderr().contains("window resized")), "{}", p.stderr());
    assert_eq!(p.get("/").status, 200, "still serving after the terminal was resized");
    assert!(p.wait(Duration::from_millis(200)).is_none());
    // Ctrl-C, as typed: the line discipline turns it into SIGINT for the foreground group.
    assert_eq!(nix::unistd::write(&pty.master, b"\x03").unwrap(), 1);
    assert_eq!(p.wait(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)), "{}", p.stderr());
    let log = p.stderr();
    assert!(!log.contains("killed by signal 2"), "children must leave through the parent's stop:\n{log}");
    assert!(!log.contains("WARN"), "{log}");
}
