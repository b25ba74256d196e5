//! The benchmark's ceiling, not a server: N forked children in a blocking `accept` loop on one
//! listener, answering every request with a fixed 1 KiB response, without parsing (a request is
//! whatever ends with an empty line; `close` anywhere in it closes the connection). No pool
//! management, no scoreboard, no logging, no timeouts. `bench/compare.sh` runs it beside
//! preforkd, Apache and nginx to show how much of the machine the kernel's connection work leaves.
//!
//! Usage: `bare_prefork ADDR [CHILDREN]` (default 8 children). It runs until killed; children die
//! with it (PR_SET_PDEATHSIG).

use nix::unistd::{ForkResult, fork};
use std::io::{Read, Write};
use std::net::TcpListener;

fn response(connection: &str) -> Vec<u8> {
    let body = vec![b'x'; 1024];
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    let mut r = head.into_bytes();
    r.extend_from_slice(&body);
    r
}

fn serve(listener: &TcpListener, keep: &[u8], closing: &[u8]) -> ! {
    let mut buf = vec![0u8; 16384];
    loop {
        let Ok((mut s, _)) = listener.accept() else { continue };
        let mut have = 0;
        'conn: loop {
            match s.read(&mut buf[have..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => have += n,
            }
            while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let close = buf[..end].windows(5).any(|w| w.eq_ignore_ascii_case(b"close"));
                if s.write_all(if close { closing } else { keep }).is_err() {
                    break 'conn;
                }
                if close {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    break 'conn;
                }
                buf.copy_within(end + 4..have, 0);
                have -= end + 4;
            }
            if have == buf.len() {
                break;
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let children: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(8);
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("bare_prefork: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    let (keep, closing) = (response("keep-alive"), response("close"));
    eprintln!("bare_prefork: {children} children on {}", listener.local_addr().unwrap());
    for _ in 0..children {
        // SAFETY: single-threaded at this point.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                serve(&listener, &keep, &closing)
            }
            Ok(ForkResult::Parent { .. }) => {}
            Err(e) => {
                eprintln!("bare_prefork: fork: {e}");
                std::process::exit(1);
            }
        }
    }
    loop {
        let _ = nix::sys::wait::wait();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
