//! Files that change while they are served: whatever a server keeps (preforkd keeps small files
//! per child, revalidated on every request), a request sent after a change is complete gets the
//! new file, whole, never the old one or a mix.

use prefork_tests::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, SystemTime};

/// The body of version `v` of a file: the tag repeated, 1800 bytes whatever the version (so an
/// edit in place changes neither the size nor, with `age`, the mtime: only the ctime).
fn version(v: u64) -> Vec<u8> {
    format!("<v{v:06}>").repeat(200).into_bytes()
}

/// The version a body is, if it is one whole version.
fn whole(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let v: u64 = text.get(2..8)?.parse().ok()?;
    (body == version(v).as_slice()).then_some(v)
}

/// Sets the modification time to the same moment in the past every time (as `cp -p`, rsync or a
/// deploy tool may), so the file looks old and settled to a server that keeps files.
fn age(path: &std::path::Path) {
    let times = std::fs::FileTimes::new().set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    std::fs::File::options().write(true).open(path).unwrap().set_times(times).unwrap();
}

#[test]
fn no_stale_or_torn_file_is_served_while_files_change_under_load() {
    let base = tempdir("changes");
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (replaced, edited) = (root.join("replaced.html"), root.join("edited.html"));
    for f in [&replaced, &edited] {
        std::fs::write(f, version(0)).unwrap();
        age(f);
    }
    let p = Preforkd::start(&["--document-root", root.to_str().unwrap(), "--start-servers", "4"]);
    // `done`: the last version whose change is complete; `changing`: a change is under way.
    let done = Arc::new(AtomicU64::new(0));
    let changing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (addr, done, changing, stop) = (p.addr(), done.clone(), changing.clone(), stop.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut c = Client::connect(addr).unwrap();
                let mut checked = 0;
                while !stop.load(SeqCst) {
                    for path in ["/replaced.html", "/edited.html"] {
                        let (before, busy_before) = (done.load(SeqCst), changing.load(SeqCst));
                        let r = match c.request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")) {
                            Ok(r) => r,
                            Err(_) => {
                                c = Client::connect(addr).unwrap(); // max_keep_alive_requests
                                continue;
                            }
                        };
                        if r.status != 200 {
                            return Err(format!("client {i}: {path}: status {}", r.status));
                        }
                        let quiet = !busy_before && !changing.load(SeqCst) && done.load(SeqCst) == before;
                        match whole(&r.body) {
                            // Nothing changed while this request was on its way: exactly the
                            // current version, whole.
                            Some(v) if quiet && v != before => {
                                return Err(format!("client {i}: {path}: version {v} served, {before} is current"));
                            }
                            None if quiet => {
                                return Err(format!("client {i}: {path}: a torn body ({} bytes)", r.body.len()));
                            }
                            // A change overlapped: never older than what was complete before.
                            Some(v) if v < before => {
                                return Err(format!("client {i}: {path}: version {v} after {before} was complete"));
                            }
                            _ => {}
                        }
                        checked += 1;
                    }
                }
                Ok(checked)
            })
        })
        .collect();
    // Changes 1.2 s apart, so that each file has been settled and kept for a while before it
    // changes: replaced by a rename, and edited in place with its old mtime put back (as
    // `touch -r` or an rsync that keeps times would).
    for v in 1..=5u64 {
        std::thread::sleep(Duration::from_millis(1200));
        changing.store(true, SeqCst);
        let tmp = root.join(".replaced.tmp");
        std::fs::write(&tmp, version(v)).unwrap();
        age(&tmp);
        std::fs::rename(&tmp, &replaced).unwrap();
        std::fs::write(&edited, version(v)).unwrap();
        age(&edited);
        done.store(v, SeqCst);
        changing.store(false, SeqCst);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(total >= 10, "the clients made only {total} checked requests");
    eprintln!("{total} responses checked across 5 replacements and 5 edits in place");
    drop(p);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn version_bodies_are_recognised() {
    assert_eq!(whole(&version(3)), Some(3));
    let mut torn = version(3);
    torn[100..120].copy_from_slice(&version(4)[100..120]);
    assert_eq!(whole(&torn), None);
    assert_eq!(whole(&version(4)[..500]), None);
}
