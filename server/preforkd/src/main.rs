//! `preforkd`: a preforking HTTP/1.1 static-file server with Apache's MPM prefork process model.
//!
//! With no arguments it serves a built-in page on 127.0.0.1:8080 in the foreground.

use clap::{CommandFactory, FromArgMatches, Parser};
use prefork_core::config::Checked;
use prefork_server::{Lifecycle, Reloaded, Server};
use preforkd::control::{self, Action};
use preforkd::http::HttpService;
use preforkd::settings::{self, Settings};
use preforkd::systemd;
use std::path::PathBuf;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "preforkd",
    version,
    about = "A preforking HTTP/1.1 static-file server with Apache's MPM prefork process model"
)]
struct Cli {
    /// TOML configuration file (Apache's directives in snake_case); re-read on every restart.
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, then act on the running server through pid_file (a signal, or
    /// the word its agent check answers).
    #[arg(short = 'k', value_enum, value_name = "ACTION")]
    signal: Option<Action>,
    /// Check the configuration and exit (like `apachectl configtest`).
    #[arg(short = 't', long = "check-config")]
    check: bool,
    /// Print the optional features of the conformance suite (CONFORMANCE.md) this build implements,
    /// one per line, and exit.
    #[arg(long = "conformance-features")]
    conformance_features: bool,
    #[command(flatten)]
    settings: Settings,
}

/// The optional features of CONFORMANCE.md this server implements: demand spawning (SPEC §5.1a)
/// and the gate (§15).
const CONFORMANCE_FEATURES: [&str; 2] = ["demand", "gate"];

fn fail(errors: Vec<String>) -> ! {
    for e in &errors {
        eprintln!("preforkd: {e}");
    }
    eprintln!("preforkd: the configuration has {} error(s); nothing was started", errors.len());
    std::process::exit(1)
}

/// Run as root with no `user`: the children run as `nobody` (Apache's default is a daemon
/// account too); `user = "root"` must be asked for explicitly.
fn default_user(pool: &mut prefork_core::config::PoolConfig) -> Option<&'static str> {
    if pool.user.is_none() && nix::unistd::geteuid().is_root() {
        pool.user = Some("nobody".into());
        return Some("nobody");
    }
    None
}

/// The command line: the derived flags, their defaults and the long description filled in from
/// where the defaults live (`settings::defaults`).
fn command() -> clap::Command {
    let defaults: std::collections::HashMap<_, _> = settings::defaults().into_iter().collect();
    let long_about = format!(
        "A preforking HTTP/1.1 static-file server with Apache's MPM prefork process model.\n\n\
         With no arguments it serves a built-in page on {} in the foreground.\n\
         Every setting is a key of the TOML file (--config) and a flag; flags override the file.\n\n\
         Signals: SIGUSR1 graceful restart, SIGHUP restart, SIGWINCH graceful stop, SIGTERM/SIGINT stop,\n\
         SIGUSR2 upgrade (the new binary starts on the same sockets; then the old one stops gracefully).\n\
         Status: {} (?auto, ?json) and {}, from {} by default (status_allow),\n\
         never to requests forwarded by a proxy or on proxied_listen (unless on status_listen).\n\n\
         Example configuration with every key: contrib/preforkd.toml; docs/configuration.md explains them.",
        defaults["listen"], defaults["status_path"], defaults["metrics_path"], defaults["status_allow"]
    );
    settings::with_defaults(Cli::command()).long_about(long_about)
}

fn main() {
    let stray = systemd::close_inherited_descriptors();
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    if cli.conformance_features {
        for feature in CONFORMANCE_FEATURES {
            println!("{feature}");
        }
        return;
    }
    let (merged, sources) = settings::load(cli.config.as_deref(), &cli.settings).unwrap_or_else(|e| fail(e));
    let mut resolved = settings::resolve(&merged, &sources, None).unwrap_or_else(|e| fail(e));
    if cli.check {
        for w in &resolved.warnings {
            eprintln!("preforkd: warning: {w}");
        }
        println!("Syntax OK");
        return;
    }
    if let Some(action) = cli.signal {
        match control::send(action, resolved.pid_file.as_deref()) {
            Ok(msg) => {
                eprintln!("preforkd: {msg}");
                return;
            }
            Err(e) => {
                eprintln!("preforkd: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = preforkd::error_log::init(resolved.error_log.as_deref()) {
        fail(vec![e]);
    }
    for w in &resolved.warnings {
        warn!("configuration: {w}");
    }
    if !stray.is_empty() {
        info!(
            "closed descriptors {stray:?} inherited from the process that started preforkd (children hold none of them)"
        );
    }
    if let Some(user) = default_user(&mut resolved.pool) {
        info!("running as root: children run as {user} (set user to choose; user = \"root\" to keep root)");
    }
    let service = HttpService::new(resolved.http.clone()).unwrap_or_else(|e| fail(vec![e.to_string()]));
    let inherited = systemd::listen_fds().unwrap_or_else(|e| fail(vec![e.to_string()]));
    // With socket activation the sockets are systemd's, in its order: status_listen cannot name
    // one of them.
    const NO_STATUS_LISTEN: &str = "status_listen and proxied_listen cannot be used with socket activation (the \
        listening sockets come from systemd, not from listen); give the status pages their own preforkd, or leave \
        them unset";
    let names_listeners =
        |h: &preforkd::http::HttpConfig| h.status_listeners.is_some() || !h.proxied_listeners.is_empty();
    if inherited.is_some() && names_listeners(&resolved.http) {
        fail(vec![NO_STATUS_LISTEN.to_string()]);
    }
    let handoff = prefork_server::upgrade::take_handoff().unwrap_or_else(|e| fail(vec![format!("upgrade: {e}")]));
    let activated = inherited.is_some();

    let (config_path, cli_settings) = (cli.config.clone(), cli.settings.clone());
    let mut server = Server::builder(resolved.pool.clone())
        .service(service)
        .reload(move |running| {
            // Log files are opened again at every restart, so logrotate can move them away.
            preforkd::error_log::reopen();
            let (merged, sources) = settings::load(config_path.as_deref(), &cli_settings).map_err(|e| e.join("; "))?;
            let mut r = settings::resolve(&merged, &sources, Some(running)).map_err(|e| e.join("; "))?;
            for w in &r.warnings {
                warn!("configuration: {w}");
            }
            default_user(&mut r.pool);
            if activated && names_listeners(&r.http) {
                return Err(NO_STATUS_LISTEN.to_string());
            }
            let service = HttpService::new(r.http).map_err(|e| e.to_string())?;
            Ok(Reloaded { config: Checked { value: r.pool, warnings: vec![] }, service: Some(Box::new(service)) })
        })
        .notify(|moment| match moment {
            Lifecycle::Ready => systemd::notify(&format!("READY=1\nSTATUS=serving\nMAINPID={}", std::process::id())),
            Lifecycle::Reloading => {
                systemd::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", systemd::monotonic_usec()))
            }
            Lifecycle::Stopping => systemd::notify("STOPPING=1"),
        });
    if let Some(p) = &resolved.pid_file {
        server = server.pid_file(p);
    }
    if let Some(d) = &resolved.lock_dir {
        server = server.lock_dir(d);
    }
    if let Some(listeners) = inherited {
        info!("socket activation: serving on {} inherited socket(s); listen is ignored", listeners.len());
        server = server.listeners(listeners);
    }
    if let Some(h) = handoff {
        info!("upgrade: serving on {} listening socket(s) handed over by the old server", h.listeners());
        server = server.handoff(h);
    }
    match server.run() {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(vec![e.to_string()]),
    }
}
