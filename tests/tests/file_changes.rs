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

/// A large file is sent from a mapping (preforkd keeps it mapped for the connection): truncated
/// while a slow client is still reading it, the answer ends short and the connection closes, the
/// child goes on (no SIGBUS: only the kernel reads the mapping), and the next request gets the
/// file as it is now. Then a large file edited between two requests of one kept-alive connection
/// is served new, whole.
#[test]
fn a_large_file_truncated_while_it_is_sent_ends_that_answer_and_nothing_else() {
    use std::io::{Read, Write};
    let base = tempdir("truncated");
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let big = root.join("big.bin");
    const SIZE: usize = 16 << 20;
    std::fs::write(&big, vec![b'b'; SIZE]).unwrap();
    age(&big);
    std::thread::sleep(Duration::from_millis(1100)); // settled: its ctime is a second old
    let p = Preforkd::start(&[
        "--document-root",
        root.to_str().unwrap(),
        "--start-servers",
        "1",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
    ]);
    assert!(wait_until(Duration::from_secs(3), || children_of(p.pid).len() == 1));
    let child = children_of(p.pid)[0];
    let mut slow = std::net::TcpStream::connect(p.addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = vec![0u8; 64 * 1024];
    slow.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got[..64]));
    std::thread::sleep(Duration::from_millis(200)); // the child now waits in its send, mid-file
    std::fs::File::options().write(true).open(&big).unwrap().set_len(4096).unwrap();
    let mut rest = vec![];
    let _ = slow.read_to_end(&mut rest); // the connection ends (closed, or reset)
    let total = got.len() + rest.len();
    assert!(total < SIZE, "{total} bytes arrived of a file cut to 4096 bytes mid-answer: not short");
    assert!(alive(child), "the child survived the truncation (no SIGBUS)");
    let r = request(p.addr(), "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((r.status, r.body.len()), (200, 4096), "the file as it is now");
    assert_eq!(children_of(p.pid), vec![child], "the same child serves on");

    // Kept-alive: request, edit in place (same size, mtime put back), request again.
    std::fs::write(&big, vec![b'c'; 300_000]).unwrap();
    age(&big);
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = Client::connect(p.addr()).unwrap();
    let first = c.request("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(first.body.len() == 300_000 && first.body.iter().all(|&b| b == b'c'));
    std::fs::write(&big, vec![b'd'; 300_000]).unwrap();
    age(&big);
    let second = c.request("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(second.body.len() == 300_000 && second.body.iter().all(|&b| b == b'd'), "the edit is served at once");
    drop(p);
    std::fs::remove_dir_all(base).unwrap();
}

/// Both ways of sending a large file (a mapping, the default; sendfile with `enable_sendfile`)
/// give the same bytes, whole and by range, on kept-alive connections.
#[test]
fn large_files_are_the_same_bytes_from_a_mapping_and_with_sendfile() {
    let base = tempdir("large-ways");
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &body).unwrap();
    age(&root.join("big.bin"));
    std::thread::sleep(Duration::from_millis(1100)); // settled, so the default keeps it mapped
    for sendfile in ["false", "true"] {
        let p = Preforkd::start(&["--document-root", root.to_str().unwrap(), "--enable-sendfile", sendfile]);
        // Changed just now: not kept, so mapped 4 MiB at a time for each answer.
        std::fs::write(root.join("fresh.bin"), &body).unwrap();
        let mut c = Client::connect(p.addr()).unwrap();
        for path in ["/big.bin", "/fresh.bin", "/big.bin"] {
            let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
            assert!(r.status == 200 && r.body == body, "enable_sendfile {sendfile}: {} bytes", r.body.len());
            let r =
                c.request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=4194000-4294999\r\n\r\n")).unwrap();
            assert_eq!(r.status, 206);
            assert!(r.body == body[4_194_000..4_295_000], "enable_sendfile {sendfile}: the range's bytes");
            let r = c
                .request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,100000-199999\r\n\r\n"))
                .unwrap();
            assert_eq!(r.status, 206);
            let text = r.body.windows(10).position(|w| w == &body[0..10]).is_some();
            assert!(text && r.body.windows(1000).any(|w| w == &body[100_000..101_000]), "multipart parts");
        }
    }
    std::fs::remove_dir_all(base).unwrap();
}
