//! The explorer (docs/contributing.md: `cargo run -p prefork-model --example explorer`) serves the model on
//! loopback and answers its state API.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn explorer_serves_the_model_on_loopback() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let served = address.clone();
    // The server thread blocks forever; it ends with the test process.
    std::thread::spawn(move || prefork_model::system::serve_explorer(&served));
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(mut s) = TcpStream::connect(&address) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /.states HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "the explorer did not answer on {address}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("\"state\""), "{body}");
    assert!(body.contains("parent"), "the state shows the parent machine");
}
