//! Step through the prefork protocol by hand in stateright's explorer (a web UI).
//!
//! ```sh
//! cargo run --release -p prefork-model --example explorer            # http://127.0.0.1:3000/
//! cargo run --release -p prefork-model --example explorer 127.0.0.1:3999
//! ```
//!
//! Each state is the whole system (the parent, every child's loop, the scoreboard, the listen
//! queues, the accept lock); each action is one step: a tick, a reap, a child's next step, a crash,
//! a client connecting, or an operator command. The properties panel shows which invariants hold.

fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".to_string());
    if !address.starts_with("127.") && !address.starts_with("[::1]") && !address.starts_with("localhost") {
        eprintln!("explorer: refusing to listen on {address}: use a loopback address such as 127.0.0.1:3000");
        std::process::exit(2);
    }
    println!("stateright explorer for the prefork model: http://{address}/  (Ctrl-C to stop)");
    prefork_model::system::serve_explorer(&address);
}
