//! One truth for keys and defaults: the defaults `--help` shows (built from where each default
//! lives) are the ones contrib/preforkd.toml, docs/configuration.md and SPEC.md give, and every
//! key is in each of them. And what contrib/ ships works: the example configuration passes `-t`,
//! the systemd units pass `systemd-analyze verify` and do what they say when their commands are
//! run, the logrotate snippet rotates both logs without losing a line.

use prefork_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every setting `--help` lists, as the file's key (`max_spare_servers`), with the default it
/// shows, in `--help`'s order.
fn help_defaults() -> Vec<(String, String)> {
    let (code, out, err) = run(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let mut settings = vec![];
    let mut flag: Option<String> = None;
    let mut paragraph = String::new();
    let mut finish = |flag: &mut Option<String>, paragraph: &mut String| {
        if let Some(f) = flag.take()
            && let Some(start) = paragraph.find("[default: ")
        {
            let rest = &paragraph[start + "[default: ".len()..];
            // The `]` that closes `[default: `, past any brackets inside the value (`[::1]:80`).
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '[' => 1,
                        ']' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .expect("a closed [default: ...]")
                .0;
            settings.push((f.replace('-', "_"), rest[..end].to_string()));
        }
        paragraph.clear();
    };
    for line in out.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("      --") || line.starts_with("  -") {
            finish(&mut flag, &mut paragraph);
            let name = trimmed.split([' ', ',']).find_map(|w| w.strip_prefix("--")).unwrap_or("");
            flag = Some(name.to_string());
        } else {
            paragraph.push(' ');
            paragraph.push_str(trimmed);
        }
    }
    finish(&mut flag, &mut paragraph);
    let skip = ["config", "check_config", "help", "version"];
    settings.retain(|(k, _)| !skip.contains(&k.as_str()));
    assert!(settings.len() >= 40, "--help lists only {} settings with defaults: {settings:?}", settings.len());
    settings
}

/// A TOML value as `--help` writes a default: strings bare, arrays joined with ", ".
fn as_help_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(as_help_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Splits `value   # comment` at the first `#` outside a string.
fn split_comment(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return (s[..i].trim(), s[i + 1..].trim()),
            _ => {}
        }
    }
    (s.trim(), "")
}

/// contrib/preforkd.toml names every key once, set or commented out; a line whose value is not
/// the default says the real default in its comment (`default: ...`, exactly as `--help` has it).
#[test]
fn the_example_configuration_lists_every_key_with_its_real_default() {
    let defaults = help_defaults();
    let text = std::fs::read_to_string(repo().join("contrib/preforkd.toml")).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = vec![];
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start().trim_start_matches('#').trim_start();
        let Some((key, rest)) = body.split_once('=') else { continue };
        let key = key.trim();
        let Some((_, default)) = defaults.iter().find(|(k, _)| k == key) else { continue };
        *seen.entry(key.to_string()).or_default() += 1;
        let (value, comment) = split_comment(rest);
        let parsed: toml::Table = toml::from_str(&format!("v = {value}"))
            .unwrap_or_else(|e| panic!("contrib/preforkd.toml:{}: {value:?} is not a TOML value: {e}", n + 1));
        let shown = as_help_text(&parsed["v"]);
        if shown != *default && !comment.contains(&format!("default: {default}")) {
            wrong.push(format!(
                "contrib/preforkd.toml:{}: {key} = {value} is not the default ({default:?}) and its comment does not say \"default: {default}\"",
                n + 1
            ));
        }
    }
    for (key, _) in &defaults {
        match seen.get(key) {
            None => wrong.push(format!("contrib/preforkd.toml does not list {key}")),
            Some(&n) if n > 1 => wrong.push(format!("contrib/preforkd.toml lists {key} {n} times")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The example configuration is valid as shipped (its document root replaced by a flag, which
/// overrides the file, as the box may not have /var/www/html).
#[test]
fn the_example_configuration_is_valid() {
    let example = repo().join("contrib/preforkd.toml");
    let dir = tempdir("example");
    let (code, out, err) =
        run(&["-t", "--config", example.to_str().unwrap(), "--document-root", dir.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, "Syntax OK"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The rows of the markdown tables in `text` headed `| key | default |`, whose first cell names
/// settings: (key, default cell).
fn table_defaults(text: &str, keys: &[String]) -> Vec<(String, String)> {
    let mut rows = vec![];
    let (mut in_table, mut settings_table) = (false, false);
    for line in text.lines() {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            in_table = true;
            settings_table = line.replace(' ', "").starts_with("|key|default|");
            continue;
        }
        if !settings_table || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (first, default) = (cells[1], cells.get(2).copied().unwrap_or(""));
        for name in first.split('`').skip(1).step_by(2) {
            if keys.iter().any(|k| k == name) {
                rows.push((name.to_string(), default.to_string()));
            }
        }
    }
    rows
}

/// A default as prose writes it, reduced to compare: no backticks, quotes, brackets or a leading
/// `= `.
fn plain(s: &str) -> String {
    s.replace(['`', '"', '[', ']'], "").trim().trim_start_matches("= ").trim().to_string()
}

/// docs/configuration.md has a row for every key whose default is `--help`'s exactly; SPEC.md's
/// tables (§8 for the pool, §12.6 for HTTP) have every key, with a default that starts as
/// `--help`'s does (SPEC may say more: `0 (unlimited)`).
#[test]
fn docs_and_spec_give_every_key_with_the_default_of_help() {
    let defaults = help_defaults();
    let keys: Vec<String> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let mut wrong = vec![];
    for (file, exact) in [("docs/configuration.md", true), ("SPEC.md", false)] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let rows = table_defaults(&text, &keys);
        for (key, default) in &defaults {
            let head = default.split(": ").next().unwrap();
            match rows.iter().find(|(k, _)| k == key) {
                None => wrong.push(format!("{file} has no table row for {key}")),
                Some((_, cell)) if exact && plain(cell) != *default => {
                    wrong.push(format!("{file}: {key}'s default is {cell:?}, --help says {default:?}"))
                }
                Some((_, cell)) if !exact && !plain(cell).starts_with(&plain(head)) => {
                    wrong.push(format!("{file}: {key}'s default is {cell:?}, --help says {default:?}"))
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The checks above would notice a wrong default: a deliberately wrong line and row fail them.
#[test]
fn a_wrong_default_is_noticed() {
    let defaults = help_defaults();
    let keys: Vec<String> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let rows = table_defaults("| key | default |\n|---|---|\n| `start_servers` | 6 | StartServers |", &keys);
    assert!(table_defaults("| test | what |\n|---|---|\n| `start_servers` | 6 |", &keys).is_empty());
    assert_eq!(rows, vec![("start_servers".to_string(), "6".to_string())]);
    let help = &defaults.iter().find(|(k, _)| k == "start_servers").unwrap().1;
    assert_ne!(plain(&rows[0].1), *help);
    let (value, comment) = split_comment(" 6      # the default");
    assert_eq!((value, comment), ("6", "the default"));
    let (value, _) = split_comment(" \"#1000\"   # a uid");
    assert_eq!(value, "\"#1000\"");
}

// ---- contrib/systemd and contrib/logrotate, run as shipped ------------------------------------

const BIN_PATH: &str = "/usr/local/bin/preforkd";
const CONF_PATH: &str = "/etc/preforkd/preforkd.toml";

fn have(tool: &str) -> bool {
    let path = format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default());
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .env("PATH", path)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `Key=` values of a unit file (and its drop-in), in order.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
}

/// A scratch copy of what contrib/ installs, with the paths under `dir`: the configuration
/// (pid file, logs, document root), and the commands of the service unit.
struct Installed {
    dir: PathBuf,
    config: PathBuf,
    start_pre: Vec<String>,
    start: Vec<String>,
    reload: Vec<String>,
}

impl Installed {
    fn new(tag: &str) -> Installed {
        let dir = tempdir(tag);
        for sub in ["run", "log", "www"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("www/index.html"), "<h1>installed</h1>\n").unwrap();
        let d = dir.to_str().unwrap();
        let text = std::fs::read_to_string(repo().join("contrib/preforkd.toml")).unwrap();
        let unit = std::fs::read_to_string(repo().join("contrib/systemd/preforkd.service")).unwrap();
        // The unit and the configuration agree on where things are: systemd creates
        // /run/preforkd (RuntimeDirectory) and /var/log/preforkd (LogsDirectory), the
        // configuration puts the pid file and the logs there.
        assert_eq!(unit_values(&unit, "RuntimeDirectory"), ["preforkd"]);
        assert_eq!(unit_values(&unit, "LogsDirectory"), ["preforkd"]);
        for path in
            ["pid_file = \"/run/preforkd/", "access_log = \"/var/log/preforkd/", "error_log = \"/var/log/preforkd/"]
        {
            assert!(text.contains(path), "contrib/preforkd.toml has no {path}...");
        }
        let text = text
            .replace("\"/run/preforkd/", &format!("\"{d}/run/"))
            .replace("\"/var/log/preforkd/", &format!("\"{d}/log/"))
            .replace("\"/var/www/html\"", &format!("\"{d}/www\""));
        let config = dir.join("preforkd.toml");
        std::fs::write(&config, text).unwrap();
        // Installed as the docs say (a copy any account may run: the build tree may be private,
        // as a fresh clone in a 0700 temporary directory is).
        let bin = dir.join("preforkd");
        std::fs::copy(preforkd_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let command = |key: &str| -> Vec<String> {
            let line = unit_values(&unit, key).pop().unwrap_or_else(|| panic!("preforkd.service has no {key}="));
            line.split_whitespace()
                .map(|w| match w {
                    BIN_PATH => bin.to_str().unwrap().to_string(),
                    CONF_PATH => config.to_str().unwrap().to_string(),
                    other => {
                        assert!(!other.starts_with('/'), "{key}= names {other}, which the test does not install");
                        other.to_string()
                    }
                })
                .collect()
        };
        Installed {
            start_pre: command("ExecStartPre"),
            start: command("ExecStart"),
            reload: command("ExecReload"),
            dir,
            config,
        }
    }

    /// `words` as a command, run as `user` (systemd's `User=`) when given.
    fn command(&self, user: Option<&str>, words: &[String]) -> Command {
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", u, "--regid", u, "--init-groups", "--"]).args(words);
                c
            }
            None => {
                let mut c = Command::new(&words[0]);
                c.args(&words[1..]);
                c
            }
        };
        cmd.env("RUST_LOG", "info");
        cmd
    }

    fn run(&self, user: Option<&str>, words: &[String]) -> (bool, String) {
        let out = self.command(user, words).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(name)).unwrap_or_default()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process tree to kill at the end, by pid.
struct Started(u32);

impl Drop for Started {
    fn drop(&mut self) {
        let children = children_of(self.0);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
        for c in children {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Messages sent to a `NOTIFY_SOCKET`, until one contains `want` (or the time is up).
fn notified(socket: &std::os::unix::net::UnixDatagram, want: &str, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains(want) {
                return Some(msg);
            }
        }
    }
    None
}

fn free_port() -> u16 {
    // A port free on both loopbacks (the socket unit listens on IPv4 and IPv6).
    loop {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// The units pass `systemd-analyze verify` with nothing to say (the drop-in included), and the
/// service's own commands, run as systemd would (sockets from `systemd-socket-activate`, as the
/// socket unit, on loopback), start a server that reports READY=1, reload it on `systemctl
/// reload` (ExecReload), fail a reload with a broken configuration while it keeps serving, and
/// stop on the KillSignal. Both variants: the root parent whose children run as `user`, and the
/// unprivileged drop-in (`User=www-data`, emulated with setpriv). Skipped, saying so, without
/// systemd's tools.
#[test]
fn systemd_units_verify_and_work_as_shipped() {
    if !have("systemd-analyze") || !have("systemd-socket-activate") {
        eprintln!("SKIPPED: systemd-analyze and systemd-socket-activate are needed (Debian package systemd)");
        return;
    }
    // systemd-analyze verify on a copy whose ExecStart names a binary that exists.
    let units = tempdir("units");
    std::fs::create_dir_all(units.join("preforkd.service.d")).unwrap();
    let bin = preforkd_bin();
    let service = std::fs::read_to_string(repo().join("contrib/systemd/preforkd.service")).unwrap();
    std::fs::write(units.join("preforkd.service"), service.replace(BIN_PATH, bin.to_str().unwrap())).unwrap();
    std::fs::copy(repo().join("contrib/systemd/preforkd.socket"), units.join("preforkd.socket")).unwrap();
    let dropin = repo().join("contrib/systemd/preforkd.service.d/unprivileged.conf");
    std::fs::copy(&dropin, units.join("preforkd.service.d/unprivileged.conf")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args([units.join("preforkd.service"), units.join("preforkd.socket")])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    std::fs::remove_dir_all(&units).unwrap();

    let socket_unit = std::fs::read_to_string(repo().join("contrib/systemd/preforkd.socket")).unwrap();
    assert_eq!(unit_values(&socket_unit, "ListenStream"), ["0.0.0.0:80", "[::]:80"]);
    let dropin = std::fs::read_to_string(dropin).unwrap();
    let dropin_user = unit_values(&dropin, "User").pop().expect("unprivileged.conf sets User=");
    assert_eq!(unit_values(&dropin, "Requires"), ["preforkd.socket"], "without root, the socket unit binds port 80");

    let mut variants = vec![(None, "root parent")];
    if root() {
        variants.push((Some(dropin_user.as_str()), "unprivileged.conf"));
    } else {
        eprintln!("not root: only the first variant, as the current user");
    }
    for (user, label) in variants {
        let inst = Installed::new("systemd");
        if let Some(u) = user {
            // systemd creates RuntimeDirectory and LogsDirectory owned by User=.
            let account = nix::unistd::User::from_name(u).unwrap().expect("the drop-in's user exists");
            for sub in ["run", "log"] {
                nix::unistd::chown(&inst.dir.join(sub), Some(account.uid), Some(account.gid)).unwrap();
            }
        }
        let (ok, said) = inst.run(user, &inst.start_pre);
        assert!(ok && said.contains("Syntax OK"), "{label}: ExecStartPre: {said}");

        let port = free_port();
        let notify_path = inst.dir.join("notify");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        if user.is_some() {
            std::fs::set_permissions(&notify_path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        let mut activate = vec![
            "systemd-socket-activate".to_string(),
            "-l".into(),
            format!("127.0.0.1:{port}"),
            "-l".into(),
            format!("[::1]:{port}"),
            "-E".into(),
            format!("NOTIFY_SOCKET={}", notify_path.display()),
            "-E".into(),
            "RUST_LOG=info".into(),
        ];
        activate.extend(inst.start.iter().cloned());
        let mut server = inst
            .command(user, &activate)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(inst.dir.join("activate.err")).unwrap())
            .spawn()
            .unwrap();
        let started = Started(server.id());
        let said = || std::fs::read_to_string(inst.dir.join("activate.err")).unwrap_or_default();
        let pid = server.id();
        // As systemd does with a socket unit, systemd-socket-activate starts the service at the
        // first connection, which is then served.
        assert!(
            wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "{label}: systemd-socket-activate does not listen"
        );
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let r = request(addr.parse().unwrap(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let r = r.unwrap_or_else(|e| {
                panic!("{label}: {addr}: {e}; standard error:\n{}\nerror log:\n{}", said(), inst.log("error.log"))
            });
            assert_eq!((r.status, r.text().as_str()), (200, "<h1>installed</h1>\n"), "{label}: {addr}");
        }
        assert!(
            notified(&notify, "READY=1", Duration::from_secs(10)).is_some(),
            "{label}: no READY=1; error log:\n{}",
            inst.log("error.log")
        );
        assert!(inst.log("error.log").contains("socket activation"), "{label}: {}", inst.log("error.log"));
        let uid_of = |pid: u32| -> u32 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(u32::MAX)
        };
        assert!(!children_of(pid).is_empty(), "{label}: no children");
        let child_user = user.unwrap_or("www-data");
        if root() {
            let expected = nix::unistd::User::from_name(child_user).unwrap().unwrap().uid.as_raw();
            // (A child forked a moment ago may not have dropped privileges yet.)
            assert!(
                wait_until(Duration::from_secs(2), || children_of(pid).iter().all(|&c| uid_of(c) == expected)),
                "{label}: children do not run as {child_user}: {:?}",
                children_of(pid).iter().map(|&c| (c, uid_of(c))).collect::<Vec<_>>()
            );
            let parent_uid = if user.is_some() { expected } else { 0 };
            assert_eq!(uid_of(pid), parent_uid, "{label}: the parent's account");
        }
        let generation = |addr: &str| -> Option<u64> {
            let r = request(
                addr.parse().unwrap(),
                "GET /server-status?auto HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .ok()?;
            auto_field_in(&r.text(), "ParentServerConfigGeneration")?.parse().ok()
        };
        let addr = format!("127.0.0.1:{port}");
        let before = generation(&addr).expect("?auto");
        let reload: Vec<String> = inst.reload.iter().map(|w| w.replace("$MAINPID", &pid.to_string())).collect();
        let (ok, said) = inst.run(user, &reload);
        assert!(ok, "{label}: ExecReload failed: {said}");
        assert!(notified(&notify, "RELOADING=1", Duration::from_secs(5)).is_some(), "{label}: no RELOADING=1");
        assert!(notified(&notify, "READY=1", Duration::from_secs(5)).is_some(), "{label}: no READY=1 after the reload");
        assert!(
            wait_until(Duration::from_secs(5), || generation(&addr) == Some(before + 1)),
            "{label}: the reload did not restart"
        );

        // A broken configuration fails `systemctl reload`; the server keeps serving as it was.
        let good = std::fs::read_to_string(&inst.config).unwrap();
        std::fs::write(&inst.config, format!("{good}\nstart_servers = \"many\"\n")).unwrap();
        let (ok, said) = inst.run(user, &reload);
        assert!(!ok, "{label}: ExecReload accepted a broken configuration: {said}");
        assert!(said.contains("start_servers"), "{label}: the failed reload does not say why: {said}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(generation(&addr), Some(before + 1), "{label}: a refused reload restarted the server");
        std::fs::write(&inst.config, good).unwrap();

        // KillSignal=SIGTERM stops it; the access log has every request.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(notified(&notify, "STOPPING=1", Duration::from_secs(5)).is_some(), "{label}: no STOPPING=1");
        assert!(wait_until(Duration::from_secs(10), || server.try_wait().unwrap().is_some()), "{label}: did not stop");
        drop(started);
        assert!(
            inst.log("access.log").contains("\"GET / HTTP/1.1\" 200"),
            "{label}: access log: {}",
            inst.log("access.log")
        );
        assert!(
            inst.log("error.log").contains("resuming normal operations"),
            "{label}: error log: {}",
            inst.log("error.log")
        );
        eprintln!("{label}: started, served on both sockets, reloaded, refused a broken reload, stopped");
    }
}

/// contrib/logrotate/preforkd, run by logrotate on the installed paths while clients keep
/// requesting: both logs are moved away and opened again (the new files get the new lines,
/// `preforkd -k graceful` did it), and every request has exactly one line in one of the two
/// access logs.
#[test]
fn logrotate_snippet_rotates_both_logs_and_loses_no_line() {
    if !have("logrotate") {
        eprintln!("SKIPPED: logrotate is not installed (Debian package logrotate)");
        return;
    }
    let inst = Installed::new("logrotate");
    let d = inst.dir.to_str().unwrap();
    let snippet = std::fs::read_to_string(repo().join("contrib/logrotate/preforkd")).unwrap();
    assert!(snippet.contains("/var/log/preforkd/*.log"), "the snippet rotates the configuration's log directory");
    let unit = std::fs::read_to_string(repo().join("contrib/systemd/preforkd.service")).unwrap();
    let reload = unit_values(&unit, "ExecReload").pop().unwrap();
    assert!(snippet.contains(&reload), "postrotate runs the unit's ExecReload command ({reload})");
    let snippet = snippet
        .replace("/var/log/preforkd/", &format!("{d}/log/"))
        .replace(BIN_PATH, preforkd_bin().to_str().unwrap())
        .replace(CONF_PATH, inst.config.to_str().unwrap());
    let conf = inst.dir.join("logrotate.conf");
    std::fs::write(&conf, snippet).unwrap();

    let mut start = inst.start.clone();
    start.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let mut server = inst.command(None, &start).stdin(std::process::Stdio::null()).spawn().unwrap();
    let started = Started(server.id());
    let mut addr = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = inst.log("error.log");
            addr = log
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|l| l.split([',', ';']).next()?.trim().parse::<std::net::SocketAddr>().ok());
            addr.is_some() && log.contains("resuming normal operations")
        }),
        "did not start: {}",
        inst.log("error.log")
    );
    let addr = addr.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = vec![];
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                let path = format!("/?n={n}");
                let r = request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
                assert_eq!(r.map(|r| r.status).ok(), Some(200), "request {n}");
                sent.push(path);
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let state = inst.dir.join("logrotate.state");
    let logrotate = if Path::new("/usr/sbin/logrotate").exists() { "/usr/sbin/logrotate" } else { "logrotate" };
    let out = Command::new(logrotate).arg("-f").arg("-s").arg(&state).arg(&conf).output().unwrap();
    assert!(out.status.success(), "logrotate: {}", String::from_utf8_lossy(&out.stderr));
    // The new error log gets the restart's lines: the parent let go of the old one.
    assert!(
        wait_until(Duration::from_secs(10), || inst.log("error.log").contains("generation 1")),
        "the new error log gets nothing: old one ends with {:?}",
        inst.log("error.log.1").lines().last()
    );
    assert!(
        wait_until(Duration::from_secs(10), || inst.log("access.log").contains("GET /?n=")),
        "the new access log gets nothing"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = client.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (old, new) = (inst.log("access.log.1"), inst.log("access.log"));
    assert!(old.contains("GET /?n=0 "), "the rotated access log holds the first requests");
    for path in &sent {
        let needle = format!("\"GET {path} HTTP/1.1\"");
        let count = old.matches(&needle).count() + new.matches(&needle).count();
        assert_eq!(count, 1, "{path} has {count} log lines");
    }
    drop(started);
    let _ = server.wait();
    eprintln!(
        "rotated under load: {} requests, {} lines before, {} after",
        sent.len(),
        old.lines().count(),
        new.lines().count()
    );
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation other than `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every relative link in README.md and docs/ leads to a file that exists, and to a heading
/// that exists where it names one.
#[test]
fn links_in_readme_and_docs_lead_somewhere() {
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    assert!(pages.len() >= 6, "README and docs/: {pages:?}");
    let mut broken = vec![];
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let dest = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if !fragment.is_empty() {
                let headings: Vec<String> = std::fs::read_to_string(&dest)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.strip_prefix('#').map(|h| anchor(h.trim_start_matches('#'))))
                    .collect();
                if !headings.iter().any(|h| h == fragment) {
                    broken.push(format!("{}: {target}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert_eq!(anchor("Status pages and who may read them"), "status-pages-and-who-may-read-them");
    assert_eq!(anchor("Signals and `-k`"), "signals-and--k");
}
