//! Binary upgrade in place (issue 24, SPEC.md §7.11): `preforkd -k upgrade` starts the binary
//! again on the same listening sockets; once the new server serves, the old one stops gracefully.

use nix::sys::signal::Signal;
use prefork_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn k(bin: &Path, action: &str, pid_file: &Path) -> (i32, String) {
    let out = Command::new(bin).args(["-k", action, "--pid-file"]).arg(pid_file).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// preforkd started from its own copy in a fresh directory (a copy the test can replace, as an
/// operator installs a new binary), with a pid file beside it and `extra` flags: the directory,
/// the binary, the pid file and the server.
fn start_own_copy(tag: &str, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf, Preforkd) {
    let dir = tempdir(tag);
    let bin = dir.join("preforkd");
    std::fs::copy(preforkd_bin(), &bin).unwrap();
    let pid_file = dir.join("preforkd.pid");
    let mut args = vec!["--pid-file", pid_file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Preforkd::start_with(&args, |_, all| {
        let mut c = Command::new(&bin);
        c.args(all);
        c
    });
    (dir, bin, pid_file, server)
}

fn install(dir: &Path, contents: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join("preforkd.new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, dir.join("preforkd")).unwrap(); // as `install` does: a new inode
}

/// Under keep-alive and connection-close load: the new server takes the sockets, the old one
/// stops gracefully, and no request fails, none is refused. The pid file names the new server.
#[test]
fn an_upgrade_under_load_hands_the_sockets_over_and_loses_nothing() {
    let _s = serial();
    let (_dir, bin, pid_file, mut old) =
        start_own_copy("upgrade", &["--agent-listen", "127.0.0.1:0", "--start-servers", "4"]);
    let agent = old.agent_addr().unwrap();
    let keep = Load::start(&old.addrs, 4, Mode::KeepAlive, "/");
    let close = Load::start(&old.addrs, 4, Mode::Close, "/");
    assert!(keep.progresses(100, Duration::from_secs(5)) && close.progresses(100, Duration::from_secs(5)));
    let (code, msg) = k(&bin, "upgrade", &pid_file);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("SIGUSR2"), "{msg}");
    assert!(
        wait_until(Duration::from_secs(10), || pid_in(&pid_file).is_some_and(|p| p != old.pid)),
        "{}",
        old.stderr()
    );
    let new = Detached(pid_in(&pid_file).unwrap());
    assert_eq!(old.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)), "the old server stops gracefully");
    assert!(
        keep.progresses(200, Duration::from_secs(5)) && close.progresses(200, Duration::from_secs(5)),
        "the new one serves"
    );
    assert!(agent_weight(agent).parse::<u8>().is_ok(), "the new server answers on the agent port");
    let (kt, ct) = (keep.stop(), close.stop());
    let failures: Vec<&Failure> = kt.failures.iter().chain(&ct.failures).collect();
    eprintln!(
        "RESULT upgrade: requests {}, failed {}, refused {}; old pid {} -> new pid {}",
        kt.ok + ct.ok,
        failures.len(),
        kt.refused + ct.refused,
        old.pid,
        new.0
    );
    assert!(failures.is_empty(), "{failures:?}\n{}", old.stderr());
    assert_eq!(kt.refused + ct.refused, 0, "the sockets never closed");
    assert!(old.stderr().contains("is ready; this one hands over"), "{}", old.stderr());
    // The new server is a full server: it upgrades again, and stops.
    let (code, msg) = k(&bin, "graceful-stop", &pid_file);
    assert_eq!(code, 0, "{msg}");
    assert!(wait_until(Duration::from_secs(10), || !alive(new.0)), "the new server stops on -k graceful-stop");
}

fn agent_weight(agent: std::net::SocketAddr) -> String {
    let line = agent_check(agent).unwrap_or_default();
    line.trim().trim_start_matches("up ready ").trim_end_matches('%').to_string()
}

/// A new binary that cannot start: the old server says why and serves on, nothing is lost; a
/// good binary installed afterwards upgrades.
#[test]
fn an_upgrade_whose_new_binary_fails_leaves_the_old_server_serving() {
    let _s = serial();
    let (dir, bin, pid_file, mut old) = start_own_copy("upgrade-fails", &[]);
    let good = std::fs::read(&bin).unwrap();
    install(&dir, b"#!/bin/sh\necho 'broken build' >&2\nexit 3\n", 0o755);
    let load = Load::start(&old.addrs, 4, Mode::KeepAlive, "/");
    assert!(load.progresses(100, Duration::from_secs(5)));
    old.signal(Signal::SIGUSR2);
    assert!(wait_until(Duration::from_secs(10), || old.stderr().contains("upgrade failed")), "{}", old.stderr());
    assert!(old.stderr().contains("exited with code 3 before it was ready"), "{}", old.stderr());
    assert!(load.progresses(100, Duration::from_secs(5)), "the old server serves on");
    assert_eq!(pid_in(&pid_file), Some(old.pid));
    install(&dir, &good, 0o755);
    old.signal(Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(10), || pid_in(&pid_file).is_some_and(|p| p != old.pid)),
        "{}",
        old.stderr()
    );
    let _new = Detached(pid_in(&pid_file).unwrap());
    assert_eq!(old.wait(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
    assert!(load.progresses(100, Duration::from_secs(5)));
    let t = load.stop();
    assert!(t.failures.is_empty() && t.refused == 0, "{:?}, refused {}", t.failures, t.refused);
}
