//! Status formats and configuration handling, from the outside.

use prefork_tests::*;

#[test]
fn server_status_auto_has_apaches_fields_and_meaning() {
    let p = Preforkd::start(&["--start-servers", "3", "--min-spare-servers", "2", "--server-name", "test.example"]);
    for _ in 0..5 {
        assert_eq!(p.get("/").status, 200);
    }
    // A request is counted just after its answer went out: the last one may still be on its way
    // into the totals when another child answers ?auto.
    let mut auto = p.get("/server-status?auto");
    let accesses = |r: &Response| auto_field_in(&r.text(), "Total Accesses").and_then(|v| v.parse::<u64>().ok());
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        auto = p.get("/server-status?auto");
        accesses(&auto).is_some_and(|n| n >= 5)
    }));
    assert_eq!(auto.header("Content-Type"), Some("text/plain; charset=utf-8"));
    let text = auto.text();
    assert_eq!(text.lines().next(), Some("test.example"));
    for name in [
        "ServerVersion",
        "ServerMPM",
        "CurrentTime",
        "RestartTime",
        "ParentServerConfigGeneration",
        "ParentServerMPMGeneration",
        "ServerUptimeSeconds",
        "Load1",
        "Total Accesses",
        "Total kBytes",
        "Uptime",
        "BusyWorkers",
        "GracefulWorkers",
        "IdleWorkers",
        "Scoreboard",
    ] {
        assert!(auto_field_in(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert_eq!(auto_field_in(&text, "ServerMPM"), Some("prefork"));
    assert!(auto_field_in(&text, "Total Accesses").unwrap().parse::<u64>().unwrap() >= 5);
    let board = auto_field_in(&text, "Scoreboard").unwrap();
    let busy: usize = auto_field_in(&text, "BusyWorkers").unwrap().parse().unwrap();
    let idle: usize = auto_field_in(&text, "IdleWorkers").unwrap().parse().unwrap();
    assert!(busy >= 1, "the child answering is busy");
    assert_eq!(board.chars().filter(|&c| c == '_').count(), idle, "IdleWorkers counts '_' (one generation)");
    assert_eq!(board.len(), 256, "one letter per slot of server_limit");
    assert!(board.chars().all(|c| "._SRWKLCGI".contains(c)), "{board}");
    // The child that answers shows W, as Apache's (it has read the request and is answering).
    assert!(board.contains('W') && !board.contains('R'), "{board}");
    for name in ["Total Duration", "CPUUser", "CPUSystem", "CPUChildrenUser", "CPUChildrenSystem", "DurationPerReq"] {
        let v = auto_field_in(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(v.parse::<f64>().is_ok_and(|x| x >= 0.0), "{name}: {v}");
    }
}

#[test]
fn status_urls_and_arguments_as_mod_status_reads_them() {
    let p = Preforkd::start(&[]);
    assert_eq!(p.get("/").status, 200);
    for path in
        ["/server-status?auto", "/server-status/?auto", "/server-status?auto=1", "/server-status?refresh=5&auto"]
    {
        let r = p.get(path);
        assert_eq!((r.status, r.header("Content-Type")), (200, Some("text/plain; charset=utf-8")), "{path}");
        assert_eq!(auto_field_in(&r.text(), "ServerMPM"), Some("prefork"), "{path}");
    }
    assert_eq!(p.get("/server-status?refresh=5&auto").header("Refresh"), Some("5"));
    assert_eq!(p.get("/server-status?refresh").header("Refresh"), Some("10"), "Apache's default");
    assert_eq!(p.get("/server-status?auto").header("Refresh"), None);
    let html = p.get("/server-status/").text();
    for line in ["Server Built:", "Server load:", "CPU Usage:", "Parent Server Config. Generation:", "<th>Dur</th><td>"]
    {
        assert!(html.contains(line), "{line} missing:\n{html}");
    }
    assert!(!p.get("/server-status?notable").text().contains("<th>Srv</th>"), "notable: no slot table");
    assert_eq!(p.get("/server-status/x").status, 404, "only the page itself, with or without its slash");
}

#[test]
fn status_json_html_and_metrics() {
    let p = Preforkd::start(&[]);
    let j: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
    assert_eq!(j["mpm"], "prefork");
    assert_eq!(j["slots"].as_array().unwrap().len(), 256);
    assert!(j["idle_workers"].as_u64().unwrap() >= 1);
    let html = p.get("/server-status").text();
    assert!(html.contains("Scoreboard Key") && html.contains("<table>"), "{html}");
    let m = p.get("/metrics");
    assert!(m.header("Content-Type").unwrap().starts_with("application/openmetrics-text"));
    let m = m.text();
    for metric in [
        "prefork_children{state=\"ready\"}",
        "prefork_requests_total",
        "prefork_wasted_wakeups_total",
        "prefork_spawn_rate",
        "prefork_listen_queue{listener=\"127.0.0.1:",
    ] {
        assert!(m.contains(metric), "{metric} missing:\n{m}");
    }
    assert!(m.ends_with("# EOF\n"));
}

/// The backquoted names in SPEC.md §12.5's `?json` bullet between `start` and `end`.
fn spec_json_keys(start: &str, end: &str) -> std::collections::BTreeSet<String> {
    let spec = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../SPEC.md")).unwrap();
    let from = spec.find(start).unwrap_or_else(|| panic!("SPEC.md has no {start:?}")) + start.len();
    let to = from + spec[from..].find(end).unwrap_or_else(|| panic!("SPEC.md has no {end:?} after {start:?}"));
    spec[from..to].split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// SPEC §12.5 lists `?json`'s keys for porters: exactly the keys preforkd sends, at the top and
/// per slot, and `slots` covers every slot of server_limit.
#[test]
fn json_keys_are_the_ones_spec_lists() {
    let p = Preforkd::start(&["--server-limit", "7", "--start-servers", "2"]);
    let j: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
    let top: std::collections::BTreeSet<String> = j.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        top,
        spec_json_keys("Its top-level keys:", "**`slots` has"),
        "?json's top-level keys against SPEC §12.5"
    );
    let slots = j["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 7, "one entry per slot of server_limit");
    let mut listed = spec_json_keys("Per slot:", "(and `invalid`");
    listed.insert("invalid".into());
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(slot["slot"], i as u64);
        let keys: std::collections::BTreeSet<String> = slot.as_object().unwrap().keys().cloned().collect();
        assert!(
            keys.is_subset(&listed) && listed.len() - keys.len() <= 1,
            "slot {i}: {keys:?} against SPEC's {listed:?}"
        );
    }
}

#[test]
fn status_pages_are_closed_to_addresses_not_allowed() {
    let p = Preforkd::start(&["--status-allow", "10.0.0.0/8"]);
    assert_eq!(p.get("/server-status?auto").status, 403);
    assert_eq!(p.get("/metrics").status, 403);
    assert_eq!(p.get("/").status, 200);
    let p = Preforkd::start(&["--status-path", "/st", "--metrics-path", "/m"]);
    assert_eq!(p.get("/st?auto").status, 200);
    assert_eq!(p.get("/m").status, 200);
    assert_eq!(p.get("/server-status").status, 404);
}

#[test]
fn configuration_errors_name_file_line_and_key_and_start_nothing() {
    let dir = tempdir("conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.join("preforkd.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nstart_servers = 2\n\nkeep_alive_timeout = 0\naccept_mutex = \"spin\"\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let shown = conf.display().to_string();
    assert!(
        err.contains(&format!("{shown}:4: keep_alive_timeout = 0 is out of range: allowed 1 to 3600 seconds")),
        "{err}"
    );
    assert!(err.contains(&format!("{shown}:5: accept_mutex = \"spin\" is not valid: allowed auto, fcntl")), "{err}");
    assert!(err.contains("2 error(s); nothing was started"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after a refused start");
    std::fs::write(&conf, "start_servers = 2\nmax_spares = 3\n").unwrap();
    let (code, _, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2") && err.contains("unknown field `max_spares`") && err.contains("max_spare_servers"),
        "{err}"
    );
    let (code, _, err) = run(&["--start-servers", "many"]);
    assert_eq!(code, 2, "clap refuses a bad flag value");
    assert!(err.contains("--start-servers"), "{err}");
    let (code, _, err) = run(&["--document-root", "/no/such/dir"]);
    assert_eq!(code, 1);
    assert!(err.contains("--document-root: document_root = \"/no/such/dir\" is not a directory"), "{err}");
    let (code, _, err) = run(&["--listen", "localhost:80"]);
    assert_eq!(code, 1);
    assert!(err.contains("--listen: listen = \"localhost:80\": not an IP address"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_says_syntax_ok_or_lists_the_problems_and_clamps_are_warnings() {
    let (code, out, _) = run(&["-t"]);
    assert_eq!((code, out.trim()), (0, "Syntax OK"));
    let (code, out, err) = run(&["-t", "--max-request-workers", "500", "--server-limit", "100"]);
    assert_eq!((code, out.trim()), (0, "Syntax OK"));
    assert!(
        err.contains("warning: --max-request-workers: max_request_workers: 500 exceeds server_limit = 100; using 100"),
        "{err}"
    );
    let (code, _, err) = run(&["-t", "--timeout", "0"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&["-t", "--user", "no-such-user-xyz", "--group", "no-such-group-xyz"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--user: user = \"no-such-user-xyz\" does not exist"), "{err}");
    assert!(err.contains("--group: group = \"no-such-group-xyz\" does not exist"), "{err}");
    let (code, _, err) = run(&["-t", "--document-root", "/no/such/dir"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("document_root = \"/no/such/dir\" is not a directory"), "{err}");
}

#[test]
fn help_lists_every_setting() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--listen",
        "--document-root",
        "--start-servers",
        "--min-spare-servers",
        "--max-spare-servers",
        "--max-request-workers",
        "--server-limit",
        "--max-connections-per-child",
        "--user",
        "--group",
        "--accept-mutex",
        "--timeout",
        "--request-read-timeout",
        "--pid-file",
        "--keep-alive-timeout",
        "--access-log",
        "--status-allow",
        "--graceful-shutdown-timeout",
        "-k",
        "--check-config",
        "--config",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}");
    }
}

/// The slot shows what its child is doing: `R` while a head arrives, `K` while a kept-alive
/// connection waits, with the request line and the client.
#[test]
fn slots_show_reading_and_keep_alive_with_the_request_line() {
    let p = Preforkd::start(&["--accept-filter", "data", "--start-servers", "4"]);
    let slots = || -> Vec<serde_json::Value> {
        let j: serde_json::Value = serde_json::from_str(&p.get("/server-status?json").text()).unwrap();
        j["slots"].as_array().unwrap().clone()
    };
    let mut kept = Client::connect(p.addr()).unwrap();
    assert_eq!(kept.request("GET /index.html?kept HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().status, 200);
    let mut reading = Client::connect(p.addr()).unwrap();
    reading.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n").unwrap(); // no empty line yet
    let seen = wait_until(std::time::Duration::from_secs(3), || {
        let s = slots();
        let k = s.iter().any(|s| {
            s["letter"] == "K"
                && s["request"] == "GET /index.html?kept HTTP/1.1"
                && s["client"].as_str().unwrap_or("").starts_with("127.0.0.1")
        });
        let r = s.iter().any(|s| s["letter"] == "R");
        k && r
    });
    assert!(seen, "{:#?}", slots().iter().filter(|s| s["letter"] != ".").collect::<Vec<_>>());
    let auto = p.get("/server-status?auto").text();
    let board = auto.lines().find_map(|l| l.strip_prefix("Scoreboard: ")).unwrap();
    assert!(board.contains('K') && board.contains('R'), "{board}");
}

/// Logs go where they are configured; a flag overrides the file.
#[test]
fn access_and_error_logs_go_to_files_and_flags_override_the_file() {
    let dir = tempdir("logs");
    let conf = dir.join("preforkd.toml");
    let (access, errors) = (dir.join("access.log"), dir.join("error.log"));
    std::fs::write(
        &conf,
        format!(
            "listen = [\"127.0.0.1:0\"]\nlog_format = \"combined\"\naccess_log = \"{}\"\nerror_log = \"{}\"\n",
            access.display(),
            errors.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(preforkd_bin())
        .args(["--config", conf.to_str().unwrap(), "--log-format", "common"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let log = || std::fs::read_to_string(&errors).unwrap_or_default();
    let up = wait_until(std::time::Duration::from_secs(10), || log().contains("resuming normal operations"));
    let addr: Option<std::net::SocketAddr> = log()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|a| a.trim().parse().ok());
    let result = std::panic::catch_unwind(|| {
        assert!(up, "{}", log());
        let addr = addr.expect("the listening address in the error log");
        let r = request(addr, "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        assert!(wait_until(std::time::Duration::from_secs(2), || std::fs::read_to_string(&access)
            .is_ok_and(|a| a.contains("\"GET / HTTP/1.1\" 200 "))));
        let line = std::fs::read_to_string(&access).unwrap();
        assert!(!line.contains("probe"), "--log-format common overrides the file's combined: {line}");
    });
    let children = children_of(pid);
    let _ = child.kill();
    let _ = child.wait();
    for c in children {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c as i32), nix::sys::signal::Signal::SIGKILL);
    }
    std::fs::remove_dir_all(dir).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// preforkd with an error log file: its pid, its address (from the log), the log's reader.
fn start_logging_to(error_log: &std::path::Path, args: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    let child = std::process::Command::new(preforkd_bin())
        .args(["--listen", "127.0.0.1:0", "--error-log", error_log.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(error_log).unwrap_or_default();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || log().contains("resuming normal operations")),
        "{}",
        log()
    );
    let addr = log()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|a| a.trim().parse().ok())
        .expect("the listening address in the error log");
    (child, addr)
}

fn stop(mut child: std::process::Child) {
    let children = children_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for c in children {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn access_log_lines_that_cannot_be_written_are_reported_and_serving_goes_on() {
    let dir = tempdir("full");
    let errors = dir.join("error.log");
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let (child, addr) = start_logging_to(&errors, &["--access-log", "/dev/full", "--start-servers", "1"]);
    let result = std::panic::catch_unwind(|| {
        let mut c = Client::connect(addr).unwrap();
        for _ in 0..3 {
            assert_eq!(c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().status, 200, "serving goes on");
        }
        drop(c); // the connection's lines are written when it ends
        let reports = || {
            std::fs::read_to_string(&errors)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("could not be written"))
                .count()
        };
        assert!(wait_until(std::time::Duration::from_secs(5), || reports() >= 1));
        let log = std::fs::read_to_string(&errors).unwrap();
        assert!(log.contains("access_log /dev/full: 3 line(s) could not be written (No space left on device"), "{log}");
        assert_eq!(reports(), 1, "three lost lines in one child, reported once (at most once a minute):\n{log}");
    });
    stop(child);
    std::fs::remove_dir_all(dir).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn logs_are_opened_again_at_a_graceful_restart_so_logrotate_works() {
    let dir = tempdir("rotate");
    let (access, errors) = (dir.join("access.log"), dir.join("error.log"));
    let (child, addr) = start_logging_to(&errors, &["--access-log", access.to_str().unwrap()]);
    let pid = child.id();
    let result = std::panic::catch_unwind(|| {
        let get = |path: &str| {
            request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).unwrap().status
        };
        assert_eq!(get("/before"), 404);
        let has = |file: &std::path::Path, text: &str| std::fs::read_to_string(file).is_ok_and(|t| t.contains(text));
        assert!(wait_until(std::time::Duration::from_secs(2), || has(&access, "GET /before ")));
        // What logrotate does: move the files away, then ask for a graceful restart.
        std::fs::rename(&access, dir.join("access.log.1")).unwrap();
        std::fs::rename(&errors, dir.join("error.log.1")).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGUSR1).unwrap();
        assert!(
            wait_until(std::time::Duration::from_secs(10), || has(&errors, "graceful restart requested")),
            "the error log is opened again and the restart logged there"
        );
        // New children write to the new access log (old ones may still finish in the old file).
        assert!(wait_until(std::time::Duration::from_secs(10), || {
            let _ = get("/after");
            has(&access, "GET /after ")
        }));
        assert!(has(&dir.join("access.log.1"), "GET /before "), "the rotated file keeps its lines");
        assert!(has(&dir.join("error.log.1"), "resuming normal operations"), "the rotated error log keeps its lines");
    });
    stop(child);
    std::fs::remove_dir_all(dir).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// One request over a unix socket: the status code.
fn unix_status(path: &std::path::Path, raw: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn status_pages_behind_a_proxy_a_listener_of_their_own_or_off() {
    // Behind a reverse proxy on this host every client is loopback: a forwarded request is not.
    let p = Preforkd::start(&[]);
    for header in [
        "Forwarded: for=203.0.113.7",
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Host: www.example.com",
        "X-Real-IP: 203.0.113.7",
        "Via: 1.1 proxy",
    ] {
        for path in ["/server-status", "/server-status?auto", "/server-status?live", "/metrics"] {
            let r =
                request(p.addr(), &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n"))
                    .unwrap();
            assert_eq!(r.status, 403, "{path} with {header}");
        }
    }
    assert_eq!(p.get("/server-status?auto").status, 200, "a direct request from this machine still reads it");
    // A listener marked as the proxy's (nginx's proxy_pass adds no forwarding header by default):
    // nothing on it reads the pages, the other listener still does.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxied = format!("127.0.0.1:{port}");
    let m = Preforkd::start(&["--listen", "127.0.0.1:0", "--proxied-listen", &proxied]);
    assert_eq!(m.addrs.len(), 2, "proxied_listen is added to listen: {:?}", m.addrs);
    let on_proxied: std::net::SocketAddr = proxied.parse().unwrap();
    for path in ["/server-status?auto", "/metrics"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(request(on_proxied, &raw).unwrap().status, 403, "{path} on the proxied listener");
        assert_eq!(request(m.addrs[0], &raw).unwrap().status, 200, "{path} on the other listener");
    }
    assert_eq!(request(on_proxied, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap().status, 200);
    drop(m);
    let (code, _, err) = run(&["-t", "--status-listen", "127.0.0.1:9", "--proxied-listen", "127.0.0.1:9"]);
    assert_eq!(code, 1);
    assert!(err.contains("--proxied-listen: proxied_listen = \"127.0.0.1:9\" is also in status_listen"), "{err}");
    // A listener of their own (here a unix socket): only there, and there also through a proxy.
    let dir = tempdir("status-listen");
    let sock = dir.join("status.sock");
    let unix = format!("unix:{}", sock.display());
    let q = Preforkd::start(&["--listen", "127.0.0.1:0", "--status-listen", &unix]);
    for path in ["/server-status", "/server-status?auto", "/metrics"] {
        assert_eq!(q.get(path).status, 404, "{path} is an ordinary path on the public listener");
        let raw =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n");
        assert_eq!(unix_status(&sock, &raw), 200, "{path} on the status listener");
    }
    assert_eq!(q.get("/").status, 200, "the public listener serves files");
    // Off.
    let off = Preforkd::start(&["--status-path", "off", "--metrics-path", "off"]);
    assert_eq!((off.get("/server-status").status, off.get("/metrics").status), (404, 404));
    drop(q);
    let _ = std::fs::remove_dir_all(dir);
}

/// Access-log lines wait in the child until its connection ends (Apache's BufferedLogs), and none
/// is lost when the server restarts gracefully or stops (the child flushes on SIGTERM). A
/// SIGKILLed child loses the lines of the connection it was serving, and only those.
#[test]
fn access_log_lines_are_buffered_per_connection_and_never_lost_on_restart_or_stop() {
    let dir = tempdir("buffered");
    let access = dir.join("access.log");
    // The kept-alive connection must stay in its child: behind the gate an idle one may go back
    // to the gate while another request waits (SPEC.md §15.2), and then outlives the restart.
    let mut p =
        Preforkd::start(&["--accept-filter", "data", "--start-servers", "3", "--access-log", access.to_str().unwrap()]);
    let lines = |tag: &str| std::fs::read_to_string(&access).unwrap_or_default().matches(tag).count();
    let get = |c: &mut Client, path: &str| c.request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();

    // Kept alive: buffered; a graceful restart closes the connection after the next answer,
    // and every line is written.
    let mut kept = Client::connect(p.addr()).unwrap();
    for i in 0..5 {
        assert_eq!(get(&mut kept, &format!("/kept-{i}")).status, 404);
    }
    assert_eq!(lines("/kept-"), 0, "a kept-alive connection's lines wait in its child");
    let generation = p.generation();
    p.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(wait_until(std::time::Duration::from_secs(5), || p.generation() > generation));
    let last = get(&mut kept, "/kept-5");
    assert_eq!(last.header("Connection"), Some("close"), "the graceful restart ends the connection");
    assert!(wait_until(std::time::Duration::from_secs(5), || lines("/kept-") == 6), "{} of 6 lines", lines("/kept-"));

    // A SIGKILLed child loses the lines of its connection in hand, and nothing else.
    let mut doomed = Client::connect(p.addr()).unwrap();
    assert_eq!(get(&mut doomed, "/doomed-0").status, 404);
    assert_eq!(get(&mut doomed, "/doomed-1").status, 404);
    let serving = p.slots().into_iter().find(|s| s.request.contains("/doomed-1")).expect("the serving child's slot");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serving.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(doomed.closed_within(std::time::Duration::from_secs(5)));
    assert_eq!(lines("/doomed-"), 0, "SIGKILL loses the buffered lines of the connection in hand");
    assert_eq!(lines("/kept-"), 6, "and nothing written before");

    // Stop (SIGTERM to the children): a kept-alive connection's lines are written first.
    let mut open = Client::connect(p.addr()).unwrap();
    for i in 0..3 {
        assert_eq!(get(&mut open, &format!("/open-{i}")).status, 404);
    }
    assert_eq!(lines("/open-"), 0);
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait(std::time::Duration::from_secs(15)).is_some(), "the server stopped");
    assert_eq!(lines("/open-"), 3, "the stopped child wrote its lines");
    let text = std::fs::read_to_string(&access).unwrap();
    assert!(text.lines().all(|l| l.starts_with("127.0.0.1 - - [") && l.ends_with('"')), "whole lines only:\n{text}");
    drop(p);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A process's scheduling policy, from field 41 of /proc/PID/stat (0 SCHED_OTHER, 3 SCHED_BATCH).
fn policy(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    stat.rsplit_once(") ")?.1.split_whitespace().nth(41 - 3)?.parse().ok()
}

#[test]
fn children_run_under_sched_batch_by_default_and_the_parent_does_not() {
    const OTHER: u32 = 0;
    const BATCH: u32 = 3;
    for (args, wanted) in [(&[][..], BATCH), (&["--child-scheduling", "other"][..], OTHER)] {
        let mut all = vec!["--start-servers", "2"];
        all.extend_from_slice(args);
        let p = Preforkd::start(&all);
        assert_eq!(p.get("/").status, 200);
        let children = children_of(p.pid);
        assert!(!children.is_empty());
        assert_eq!(policy(p.pid), Some(OTHER), "the parent keeps its policy ({args:?})");
        assert!(
            wait_until(std::time::Duration::from_secs(3), || children_of(p.pid)
                .iter()
                .all(|&c| policy(c) == Some(wanted))),
            "every child under policy {wanted} with {args:?}: {:?}",
            children_of(p.pid).iter().map(|&c| policy(c)).collect::<Vec<_>>()
        );
    }
    let (code, _, err) = run(&["-t", "--child-scheduling", "fifo"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--child-scheduling: child_scheduling = \"fifo\" is not valid: allowed batch"), "{err}");
}

#[test]
fn a_client_that_sends_nothing_takes_no_child_with_accept_filter_data() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let busy = |p: &Preforkd| {
        let auto = p.get("/server-status?auto").text();
        auto_field_in(&auto, "BusyWorkers").and_then(|v| v.parse::<usize>().ok()).unwrap_or(999)
    };
    for (filter, held) in [("data", false), ("none", true)] {
        let p = Preforkd::start(&["--start-servers", "5", "--min-spare-servers", "2", "--accept-filter", filter]);
        assert!(wait_until(Duration::from_secs(3), || busy(&p) == 1), "only the child answering ?auto is busy");
        let mut silent: Vec<std::net::TcpStream> =
            (0..3).map(|_| std::net::TcpStream::connect(p.addr()).unwrap()).collect();
        if held {
            assert!(
                wait_until(Duration::from_secs(3), || busy(&p) >= 4),
                "accept_filter none: each silent connection holds a child (R) from its handshake"
            );
        } else {
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(busy(&p), 1, "accept_filter data: a silent connection waits in the kernel, no child holds it");
        }
        for c in &mut silent {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{filter}: {answer}");
        }
    }
}
