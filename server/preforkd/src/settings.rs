//! `preforkd`'s settings: one list of keys that is both the TOML file's schema and the command
//! line (every key `some_key` is also a flag `--some-key`), flags overriding the file. Errors say
//! where the value came from (`file:line` or `--flag`), what was given and what is allowed.

use crate::http::HttpConfig;
use crate::http::log::LogFormat;
use ipnet::IpNet;
use prefork_core::config::{ConfigWarning, ListenAddr, PoolConfig, RawPoolConfig};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty ),* $(,)?) => {
        /// Every setting, optional: from the TOML file (snake_case keys) or the command line
        /// (kebab-case flags).
        #[derive(clap::Args, serde::Deserialize, Default, Debug, Clone, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $( $(#[doc = $doc])* #[arg(long)] pub $name: Option<$ty>, )*
        }

        impl Settings {
            /// `self`'s values, and `base`'s where `self` has none.
            pub fn over(self, base: Settings) -> Settings {
                Settings { $( $name: self.$name.or(base.$name), )* }
            }

            /// The keys that have a value.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = vec![];
                $( if self.$name.is_some() { keys.push(stringify!($name)); } )*
                keys
            }
        }
    };
}

settings! {
    /// Address to listen on (repeatable): IP:PORT, [IPv6]:PORT, PORT, or unix:/path.
    listen: Vec<String>,
    /// listen(2) backlog.
    listen_backlog: i64,
    /// Children forked at start-up.
    start_servers: i64,
    /// Fewer idle children than this: spawn more (at once, or Apache's ramp: spawn_mode).
    min_spare_servers: i64,
    /// More idle children than this: retire one per second.
    max_spare_servers: i64,
    /// Most children at once.
    max_request_workers: i64,
    /// Old name of max_request_workers.
    max_clients: i64,
    /// Scoreboard size; cannot change on a restart.
    server_limit: i64,
    /// Connections a child serves before it is replaced; 0 is unlimited.
    max_connections_per_child: i64,
    /// Old name of max_connections_per_child.
    max_requests_per_child: i64,
    /// Up to this many extra connections per child, so children do not recycle together.
    max_connections_per_child_jitter: i64,
    /// Accept lock with 2+ listeners.
    accept_mutex: String,
    /// Seconds a graceful stop waits for children; 0 waits forever.
    graceful_shutdown_timeout: i64,
    /// Spare-server maintenance period in milliseconds.
    maintenance_interval_ms: i64,
    /// Milliseconds a child may hold the accept lock without accepting while connections wait
    /// before the parent kills it (a stopped, traced or stuck child would wedge every listener); 0 is off.
    accept_lock_timeout_ms: i64,
    /// How the pool grows when too few children are idle: demand (at once, as many as the waiting
    /// connections and min_spare_servers need) or ramp (Apache's 1, 2, 4 … 32 per second).
    spawn_mode: String,
    /// Most children forked in any one second (a flood of connections cannot fork-bomb the host).
    fork_rate_limit: i64,
    /// Milliseconds between looks at the accept queues with spawn_mode = demand (between the
    /// maintenance ticks; at or above maintenance_interval_ms only the ticks look).
    demand_interval_ms: i64,
    /// Linux scheduling policy of the children: batch (SCHED_BATCH: a child woken by a connection
    /// does not preempt the process running, which cuts context switches with many busy children)
    /// or other (SCHED_OTHER, as Apache's).
    child_scheduling: String,
    /// What a connection must bring before a child gets it: httpready (a complete request head:
    /// the gate, one light process, holds connections until then, and idle kept-alive connections
    /// between requests, so slow clients cannot take the children; Apache's AcceptFilter http
    /// httpready), data (its first bytes, TCP_DEFER_ACCEPT up to 30 s, Apache's AcceptFilter http
    /// data) or none (the handshake).
    accept_filter: String,
    /// Connections the gate (accept_filter = httpready) holds at once; when it is full and more
    /// wait, it sheds the longest idle connection, then the slowest request head.
    accept_filter_connections: i64,
    /// Bytes per second at which a request head still arriving keeps its place when the gate is
    /// full (mod_reqtimeout's MinRate); 0: every head keeps its place.
    request_read_min_rate: i64,
    /// Seconds one request may keep a child busy (reading it, handling it, writing the answer)
    /// before the parent kills the child; 0 is off. Not `timeout`, which bounds each single read or write.
    request_deadline: i64,
    /// User the children run as (name or #uid).
    user: String,
    /// Group the children run as (name or #gid).
    group: String,
    /// Where the parent answers a load balancer's agent check (HAProxy's agent-check):
    /// IP:PORT, [IPv6]:PORT or PORT; the answer is "up ready N%" with N the free share of
    /// max_request_workers, "up drain" or "maint" as the operator says (-k), "drain" in a graceful stop.
    agent_listen: String,
    /// Directory of files to serve.
    document_root: PathBuf,
    /// Keep connections open between requests: true or false.
    keep_alive: bool,
    /// Seconds an idle kept-alive connection waits for its next request.
    keep_alive_timeout: i64,
    /// Requests per kept-alive connection; 0 is unlimited.
    max_keep_alive_requests: i64,
    /// Seconds any single read or write may wait.
    timeout: i64,
    /// Seconds the whole request head may take to arrive (mod_reqtimeout header=).
    request_read_timeout: i64,
    /// Longest request line in bytes (longer: 414).
    limit_request_line: i64,
    /// Most request header fields (more: 431).
    limit_request_fields: i64,
    /// Longest request header line in bytes (longer: 431).
    limit_request_field_size: i64,
    /// Largest request body in bytes (larger: 413).
    limit_request_body: i64,
    /// mime.types file mapping extensions to content types (Apache's TypesConfig), "off" for the
    /// built-in table only; the default falls back to the built-in table where the file does not exist.
    types_config: PathBuf,
    /// Most byte ranges one request may ask for (more: the whole file); 0 turns ranges off.
    max_ranges: i64,
    /// Most overlapping or adjacent ranges in one request (more: the whole file).
    max_range_overlaps: i64,
    /// Most ranges out of ascending order in one request (more: the whole file).
    max_range_reversals: i64,
    /// Send files above 64 KiB with sendfile(2) (true) or with one writev from a mapping of the
    /// file, kept for the connection (false, as Apache's EnableSendfile Off and EnableMMAP On).
    enable_sendfile: bool,
    /// Access log file, "-" for standard output, "off" for none.
    access_log: PathBuf,
    /// Access log format: combined or common.
    log_format: String,
    /// Error log file.
    error_log: PathBuf,
    /// Location of the status page (?auto, ?json, ?live); "off" for none.
    status_path: String,
    /// Location of the OpenMetrics page; "off" for none.
    metrics_path: String,
    /// Serve the status and metrics pages only on these addresses (repeatable; added to listen if
    /// missing), e.g. a loopback port or a unix socket that no proxy forwards to. Then requests
    /// forwarded by a proxy may read them there; without it they never may.
    status_listen: Vec<String>,
    /// Listeners a reverse proxy forwards to (repeatable; added to listen if missing): their
    /// requests count as forwarded even without Forwarded/X-Forwarded-For (nginx adds neither by
    /// default), so they never see the status pages.
    proxied_listen: Vec<String>,
    /// Networks allowed to read status and metrics (repeatable).
    status_allow: Vec<String>,
    /// Server name shown on status pages.
    server_name: String,
    /// File holding the parent's pid while it runs (needed by -k).
    pid_file: PathBuf,
    /// Directory for the fcntl/flock lock file.
    lock_dir: PathBuf,
}

/// preforkd's `accept_filter` (the library's default is `data`: a service that does not read
/// HTTP heads cannot run behind the gate).
pub const DEFAULT_ACCEPT_FILTER: prefork_core::config::AcceptFilter = prefork_core::config::AcceptFilter::HttpReady;

/// Every setting's default as `--help` shows it. The values come from where each default lives
/// (`PoolConfig::default`, `HttpConfig::default`, the core's list of lock mechanisms); where a
/// default is a rule rather than a value, it says so in words. Every key has an entry (tested).
pub fn defaults() -> Vec<(&'static str, String)> {
    let p = PoolConfig::default();
    let h = HttpConfig::default();
    let list = |items: Vec<String>| items.join(", ");
    let secs = |d: Duration| d.as_secs().to_string();
    vec![
        ("listen", list(p.listen.iter().map(ToString::to_string).collect())),
        ("listen_backlog", p.listen_backlog.to_string()),
        ("start_servers", p.start_servers.to_string()),
        ("min_spare_servers", p.min_spare_servers.to_string()),
        ("max_spare_servers", p.max_spare_servers.to_string()),
        ("max_request_workers", "server_limit".into()),
        ("max_clients", "none".into()),
        ("server_limit", p.server_limit.to_string()),
        ("max_connections_per_child", p.max_connections_per_child.to_string()),
        ("max_requests_per_child", "none".into()),
        ("max_connections_per_child_jitter", p.max_connections_per_child_jitter.to_string()),
        ("accept_mutex", p.accept_mutex.to_string()),
        ("graceful_shutdown_timeout", secs(p.graceful_shutdown_timeout)),
        ("maintenance_interval_ms", p.maintenance_interval.as_millis().to_string()),
        ("accept_lock_timeout_ms", p.accept_lock_timeout.as_millis().to_string()),
        ("request_deadline", secs(p.request_deadline)),
        ("spawn_mode", p.spawn_mode.name().into()),
        ("fork_rate_limit", p.fork_rate_limit.to_string()),
        ("demand_interval_ms", p.demand_interval.as_millis().to_string()),
        ("child_scheduling", p.child_scheduling.name().into()),
        ("accept_filter", DEFAULT_ACCEPT_FILTER.name().into()),
        ("accept_filter_connections", h.accept_filter_connections.to_string()),
        ("request_read_min_rate", h.request_read_min_rate.to_string()),
        ("user", "none: the server's own account (nobody when started as root)".into()),
        ("group", "the user's group".into()),
        ("agent_listen", "none: off".into()),
        ("document_root", "a built-in page".into()),
        ("keep_alive", h.keep_alive.to_string()),
        ("keep_alive_timeout", secs(h.keep_alive_timeout)),
        ("max_keep_alive_requests", h.max_keep_alive_requests.to_string()),
        ("timeout", secs(h.timeout)),
        ("request_read_timeout", secs(h.request_read_timeout)),
        ("limit_request_line", h.limit_request_line.to_string()),
        ("limit_request_fields", h.limit_request_fields.to_string()),
        ("limit_request_field_size", h.limit_request_field_size.to_string()),
        ("limit_request_body", h.limit_request_body.to_string()),
        ("types_config", h.types_config.as_ref().map_or("off".into(), |p| p.display().to_string())),
        ("max_ranges", h.range_limits.max_ranges.to_string()),
        ("max_range_overlaps", h.range_limits.max_range_overlaps.to_string()),
        ("max_range_reversals", h.range_limits.max_range_reversals.to_string()),
        ("enable_sendfile", h.enable_sendfile.to_string()),
        ("access_log", h.access_log.as_ref().map_or("off".into(), |p| p.display().to_string())),
        ("log_format", h.log_format.name().into()),
        ("error_log", "standard error".into()),
        ("status_path", h.status_path.clone().unwrap_or_else(|| "off".into())),
        ("metrics_path", h.metrics_path.clone().unwrap_or_else(|| "off".into())),
        ("status_listen", "none: every listener".into()),
        ("proxied_listen", "none".into()),
        ("status_allow", list(h.status_allow.iter().map(ToString::to_string).collect())),
        ("server_name", h.server_name.clone()),
        ("pid_file", "none".into()),
        ("lock_dir", "the temp directory".into()),
    ]
}

/// Completes the help of every setting's flag: its default ([`defaults`]) and, for
/// `accept_mutex`, the accepted values (from the core's one list).
pub fn with_defaults(mut command: clap::Command) -> clap::Command {
    for (key, default) in defaults() {
        command = command.mut_arg(key, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let help = help.trim_end_matches('.');
            let values = if key == "accept_mutex" {
                format!(": {}", prefork_core::config::accept_mutex_values())
            } else {
                String::new()
            };
            arg.help(format!("{help}{values} [default: {default}]"))
        });
    }
    command
}

/// Everything `preforkd` runs with.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The pool.
    pub pool: PoolConfig,
    /// The HTTP service.
    pub http: HttpConfig,
    /// `error_log`.
    pub error_log: Option<PathBuf>,
    /// `pid_file`.
    pub pid_file: Option<PathBuf>,
    /// `lock_dir`.
    pub lock_dir: Option<PathBuf>,
    /// Values that were changed (clamps), with where they came from.
    pub warnings: Vec<String>,
}

/// Where the settings came from, to say where a bad value is.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    file: Option<(PathBuf, String)>,
    from_cli: Vec<&'static str>,
}

impl Sources {
    /// `key`'s origin: `--flag`, `file:line`, or `default`.
    pub fn origin(&self, key: &str) -> String {
        if self.from_cli.contains(&key) {
            return format!("--{}", key.replace('_', "-"));
        }
        if let Some((path, text)) = &self.file
            && let Some(line) = key_line(text, key)
        {
            return format!("{}:{line}", path.display());
        }
        "default".into()
    }
}

/// The 1-based line where `key` is set in a TOML text.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Reads the settings file (if any) and lays the command line over it.
pub fn load(file: Option<&Path>, cli: &Settings) -> Result<(Settings, Sources), Vec<String>> {
    match file {
        None => Ok((cli.clone(), Sources { file: None, from_cli: cli.keys() })),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
            load_text(&text, path, cli)
        }
    }
}

/// [`load`] with the file's text already read (`path` names it in messages).
pub fn load_text(text: &str, path: &Path, cli: &Settings) -> Result<(Settings, Sources), Vec<String>> {
    let parsed: Settings = toml::from_str(text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let sources = Sources { file: Some((path.to_path_buf(), text.to_string())), from_cli: cli.keys() };
    Ok((cli.clone().over(parsed), sources))
}

struct Errors<'a> {
    list: Vec<String>,
    sources: &'a Sources,
}

impl Errors<'_> {
    fn push(&mut self, key: &str, msg: String) {
        self.list.push(format!("{}: {msg}", self.sources.origin(key)));
    }

    fn seconds(&mut self, key: &'static str, v: Option<i64>, default: Duration, min: i64, max: i64) -> Duration {
        match v {
            None => default,
            Some(s) if (min..=max).contains(&s) => Duration::from_secs(s as u64),
            Some(s) => {
                self.push(key, format!("{key} = {s} is out of range: allowed {min} to {max} seconds"));
                default
            }
        }
    }

    fn count(&mut self, key: &'static str, v: Option<i64>, default: u64, min: i64, max: i64) -> u64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(&n) => n as u64,
            Some(n) => {
                self.push(key, format!("{key} = {n} is out of range: allowed {min} to {max}"));
                default
            }
        }
    }
}

/// Validates everything; on failure, every problem with its origin.
pub fn resolve(s: &Settings, sources: &Sources, running: Option<&PoolConfig>) -> Result<Resolved, Vec<String>> {
    let mut errors = Errors { list: vec![], sources };
    // status_listen and proxied_listen: their addresses are listeners too (added to listen
    // where missing).
    let mut addresses = |key: &'static str, list: &Option<Vec<String>>| -> Vec<(String, ListenAddr)> {
        let mut parsed = vec![];
        for a in list.clone().unwrap_or_default() {
            match a.parse::<ListenAddr>() {
                Ok(addr) => parsed.push((a, addr)),
                Err(e) => errors.push(key, format!("{key} = {a:?}: {e}")),
            }
        }
        parsed
    };
    let status_addrs = addresses("status_listen", &s.status_listen);
    let proxied_addrs = addresses("proxied_listen", &s.proxied_listen);
    if let Some((text, _)) = proxied_addrs.iter().find(|(_, p)| status_addrs.iter().any(|(_, a)| a == p)) {
        errors.push(
            "proxied_listen",
            format!(
                "proxied_listen = {text:?} is also in status_listen: a listener for the status pages must not be \
                 one a proxy forwards to"
            ),
        );
    }
    let listen = if status_addrs.is_empty() && proxied_addrs.is_empty() {
        s.listen.clone()
    } else {
        let mut all = s.listen.clone().unwrap_or_else(|| vec![prefork_core::config::DEFAULT_LISTEN.to_string()]);
        for (text, addr) in status_addrs.iter().chain(&proxied_addrs) {
            if !all.iter().filter_map(|a| a.parse::<ListenAddr>().ok()).any(|known| known == *addr) {
                all.push(text.clone());
            }
        }
        Some(all)
    };
    let raw = RawPoolConfig {
        listen,
        listen_backlog: s.listen_backlog,
        start_servers: s.start_servers,
        min_spare_servers: s.min_spare_servers,
        max_spare_servers: s.max_spare_servers,
        max_request_workers: s.max_request_workers,
        max_clients: s.max_clients,
        server_limit: s.server_limit,
        max_connections_per_child: s.max_connections_per_child,
        max_requests_per_child: s.max_requests_per_child,
        max_connections_per_child_jitter: s.max_connections_per_child_jitter,
        accept_mutex: s.accept_mutex.clone(),
        graceful_shutdown_timeout: s.graceful_shutdown_timeout,
        maintenance_interval_ms: s.maintenance_interval_ms,
        accept_lock_timeout_ms: s.accept_lock_timeout_ms,
        request_deadline: s.request_deadline,
        spawn_mode: s.spawn_mode.clone(),
        fork_rate_limit: s.fork_rate_limit,
        demand_interval_ms: s.demand_interval_ms,
        child_scheduling: s.child_scheduling.clone(),
        // preforkd reads HTTP request heads: it runs behind the gate unless told otherwise.
        accept_filter: s.accept_filter.clone().or_else(|| Some(DEFAULT_ACCEPT_FILTER.name().into())),
        user: s.user.clone(),
        group: s.group.clone(),
        agent_listen: s.agent_listen.clone(),
    };
    let checked = match running {
        Some(r) => r.reload(&raw),
        None => PoolConfig::from_raw(&raw),
    };
    let mut warnings = vec![];
    let pool = match checked {
        Ok(c) => {
            warnings = c.warnings.iter().map(|w: &ConfigWarning| format!("{}: {w}", sources.origin(w.key))).collect();
            Some(c.value)
        }
        Err(e) => {
            for err in e.0 {
                errors.push(err.key(), err.to_string());
            }
            None
        }
    };
    let d = HttpConfig::default();
    let log_format = match s.log_format.as_deref() {
        None => d.log_format,
        Some("combined") => LogFormat::Combined,
        Some("common") => LogFormat::Common,
        Some(other) => {
            errors.push("log_format", format!("log_format = {other:?} is not valid: allowed combined, common"));
            LogFormat::Combined
        }
    };
    let mut status_allow = vec![];
    for net in s.status_allow.clone().unwrap_or_default() {
        match net.parse::<IpNet>().or_else(|_| net.parse::<IpAddr>().map(IpNet::from)) {
            Ok(n) => status_allow.push(n),
            Err(_) => errors.push(
                "status_allow",
                format!("status_allow = {net:?} is not an address or network (like 10.0.0.0/8 or ::1)"),
            ),
        }
    }
    for (key, path) in [("status_path", &s.status_path), ("metrics_path", &s.metrics_path)] {
        if let Some(p) = path
            && p != "off"
            && (!p.starts_with('/') || p.contains(['?', '#', ' ']))
        {
            errors.push(key, format!("{key} = {p:?} must be a path starting with / (no query, no spaces), or \"off\""));
        }
    }
    let page = |given: &Option<String>, default: Option<String>| match given.as_deref() {
        None => default,
        Some("off") => None,
        Some(p) => Some(p.to_string()),
    };
    let indices = |addrs: &[(String, ListenAddr)]| -> Vec<usize> {
        let listen = pool.as_ref().map(|p| p.listen.as_slice()).unwrap_or_default();
        listen.iter().enumerate().filter(|(_, l)| addrs.iter().any(|(_, a)| a == *l)).map(|(i, _)| i).collect()
    };
    let status_listeners = (!status_addrs.is_empty()).then(|| indices(&status_addrs));
    let proxied_listeners = indices(&proxied_addrs);
    let types_config = match s.types_config.as_deref() {
        None => d.types_config.clone(),
        Some(p) if p == Path::new("off") => None,
        Some(p) => {
            if let Err(e) = std::fs::File::open(p) {
                errors
                    .push("types_config", format!("types_config = {:?} cannot be read: {e}", p.display().to_string()));
            }
            Some(p.to_path_buf())
        }
    };
    let limit = |errors: &mut Errors<'_>, key: &'static str, v: Option<i64>, d: u32| {
        errors.count(key, v, u64::from(d), 0, i64::from(u32::MAX)) as u32
    };
    let range_limits = crate::http::conditional::RangeLimits {
        max_ranges: limit(&mut errors, "max_ranges", s.max_ranges, d.range_limits.max_ranges),
        max_range_overlaps: limit(
            &mut errors,
            "max_range_overlaps",
            s.max_range_overlaps,
            d.range_limits.max_range_overlaps,
        ),
        max_range_reversals: limit(
            &mut errors,
            "max_range_reversals",
            s.max_range_reversals,
            d.range_limits.max_range_reversals,
        ),
    };
    let access_log = match s.access_log.as_deref() {
        None => d.access_log.clone(),
        Some(p) if p == Path::new("off") => None,
        Some(p) => Some(p.to_path_buf()),
    };
    let http = HttpConfig {
        document_root: s.document_root.clone(),
        keep_alive: s.keep_alive.unwrap_or(d.keep_alive),
        keep_alive_timeout: errors.seconds("keep_alive_timeout", s.keep_alive_timeout, d.keep_alive_timeout, 1, 3600),
        max_keep_alive_requests: errors.count(
            "max_keep_alive_requests",
            s.max_keep_alive_requests,
            u64::from(d.max_keep_alive_requests),
            0,
            u32::MAX as i64,
        ) as u32,
        timeout: errors.seconds("timeout", s.timeout, d.timeout, 1, 86_400),
        request_read_timeout: errors.seconds(
            "request_read_timeout",
            s.request_read_timeout,
            d.request_read_timeout,
            1,
            86_400,
        ),
        limit_request_line: errors.count(
            "limit_request_line",
            s.limit_request_line,
            d.limit_request_line as u64,
            64,
            1 << 20,
        ) as usize,
        limit_request_fields: errors.count(
            "limit_request_fields",
            s.limit_request_fields,
            d.limit_request_fields as u64,
            1,
            10_000,
        ) as usize,
        limit_request_field_size: errors.count(
            "limit_request_field_size",
            s.limit_request_field_size,
            d.limit_request_field_size as u64,
            64,
            1 << 20,
        ) as usize,
        limit_request_body: errors.count("limit_request_body", s.limit_request_body, d.limit_request_body, 0, i64::MAX),
        access_log,
        log_format,
        status_path: page(&s.status_path, d.status_path),
        metrics_path: page(&s.metrics_path, d.metrics_path),
        status_listeners,
        proxied_listeners,
        status_allow: if s.status_allow.is_some() { status_allow } else { d.status_allow },
        server_name: s.server_name.clone().unwrap_or(d.server_name),
        types_config,
        range_limits,
        enable_sendfile: s.enable_sendfile.unwrap_or(d.enable_sendfile),
        accept_filter_connections: errors.count(
            "accept_filter_connections",
            s.accept_filter_connections,
            d.accept_filter_connections as u64,
            1,
            1_000_000,
        ) as usize,
        request_read_min_rate: errors.count(
            "request_read_min_rate",
            s.request_read_min_rate,
            d.request_read_min_rate,
            0,
            1 << 30,
        ),
    };
    if let Some(root) = &http.document_root
        && !root.is_dir()
    {
        errors.push("document_root", format!("document_root = {:?} is not a directory", root.display().to_string()));
    }
    // Accounts are checked here too (not only when the children are forked), so `-t` and `-k`
    // catch a misspelt user before a restart is attempted.
    if let Some(u) = &s.user
        && !u.starts_with('#')
        && !matches!(nix::unistd::User::from_name(u), Ok(Some(_)))
    {
        errors.push("user", format!("user = {u:?} does not exist (see /etc/passwd, or use \"#uid\")"));
    }
    if let Some(g) = &s.group
        && !g.starts_with('#')
        && !matches!(nix::unistd::Group::from_name(g), Ok(Some(_)))
    {
        errors.push("group", format!("group = {g:?} does not exist (see /etc/group, or use \"#gid\")"));
    }
    if !errors.list.is_empty() {
        return Err(errors.list);
    }
    Ok(Resolved {
        pool: pool.expect("no errors"),
        http,
        error_log: s.error_log.clone(),
        pid_file: s.pid_file.clone(),
        lock_dir: s.lock_dir.clone(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("preforkd-settings-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_override_the_file_and_errors_say_where() {
        let path = file("# comment\nstart_servers = 3\n\nmax_request_workers = -4\nkeep_alive_timeout = 9999\n");
        let cli = Settings { start_servers: Some(7), timeout: Some(0), ..Default::default() };
        let (merged, sources) = load(Some(&path), &cli).unwrap();
        assert_eq!(merged.start_servers, Some(7));
        let errors = resolve(&merged, &sources, None).unwrap_err();
        let shown = path.display().to_string();
        assert!(
            errors
                .iter()
                .any(|e| e
                    == &format!("{shown}:5: keep_alive_timeout = 9999 is out of range: allowed 1 to 3600 seconds")),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.starts_with("--timeout: timeout = 0 is out of range")), "{errors:#?}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn clamps_are_warnings_with_their_origin() {
        let path = file("max_request_workers = -4\n");
        let (merged, sources) = load(Some(&path), &Settings::default()).unwrap();
        let r = resolve(&merged, &sources, None).unwrap();
        assert_eq!(r.pool.max_request_workers, 1);
        assert!(
            r.warnings.iter().any(|w| w.starts_with(&format!("{}:1: max_request_workers", path.display()))),
            "{:?}",
            r.warnings
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_their_line() {
        let path = file("start_servers = 2\nmax_spare = 3\n");
        let e = load(Some(&path), &Settings::default()).unwrap_err().join("\n");
        assert!(e.contains("line 2") && e.contains("unknown field `max_spare`"), "{e}");
        let path2 = file("keep_alive = \"yes\"\n");
        let e = load(Some(&path2), &Settings::default()).unwrap_err().join("\n");
        assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&path2).unwrap();
    }

    #[test]
    fn every_key_has_its_default_in_the_help_and_the_defaults_are_the_ones_in_force() {
        use clap::{Args, Command};
        let command = with_defaults(Settings::augment_args(Command::new("t")));
        let table = defaults();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(table.iter().any(|(k, _)| *k == id), "{id} has no default in the table");
            let help = arg.get_help().unwrap().to_string();
            assert!(help.contains("[default: "), "{id}: {help}");
        }
        assert_eq!(table.len(), command.get_arguments().count(), "one entry per key, no stale ones");
        let help =
            |id: &str| command.get_arguments().find(|a| a.get_id() == id).unwrap().get_help().unwrap().to_string();
        assert!(help("keep_alive_timeout").ends_with("[default: 5]"), "{}", help("keep_alive_timeout"));
        assert!(help("accept_mutex").contains("auto, fcntl, flock, pthread, sysvsem, none [default: auto]"));
        assert!(help("status_allow").contains("[default: 127.0.0.0/8, ::1/128]"), "{}", help("status_allow"));
        // What the help says is what a configuration without the key gets.
        let r = resolve(&Settings::default(), &Sources::default(), None).unwrap();
        assert_eq!(r.http, HttpConfig::default());
        assert_eq!(r.pool, PoolConfig { accept_filter: DEFAULT_ACCEPT_FILTER, ..PoolConfig::default() });
        assert!(help("accept_filter").ends_with("[default: httpready]"), "{}", help("accept_filter"));
    }

    #[test]
    fn defaults_are_apaches_and_the_built_in_page() {
        let r = resolve(&Settings::default(), &Sources::default(), None).unwrap();
        // Apache's, but for the gate: preforkd reads HTTP heads, so it runs behind it (SPEC.md §15).
        assert_eq!(r.pool, PoolConfig { accept_filter: DEFAULT_ACCEPT_FILTER, ..PoolConfig::default() });
        assert_eq!(r.http.document_root, None);
        assert_eq!(r.http.access_log.as_deref(), Some(Path::new("-")));
        assert!(r.warnings.is_empty());
    }
}
