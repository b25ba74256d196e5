//! Pool configuration: Apache's MPM directives in snake_case, Apache's defaults, Apache's clamps
//! (SPEC.md §8).
//!
//! [`RawPoolConfig`] is what a file or the command line gave (every key optional, integers as
//! TOML's `i64` so that a negative value reaches the validator instead of a type error).
//! [`PoolConfig::from_raw`] turns it into a [`PoolConfig`] plus a list of [`ConfigWarning`]s, one for
//! every value it had to change, or into [`ConfigErrors`] listing every value it could not accept.
//! [`PoolConfig::reload`] does the same for a restart, keeping what cannot change while the parent
//! lives (`server_limit`, which sizes the shared scoreboard).

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

mod accept_mutex;
mod listen;

pub use accept_mutex::{AcceptMutex, LockMechanism, accept_mutex_values};
pub use listen::{LISTEN_FORMS, ListenAddr};

/// `ServerLimit` default (Apache `DEFAULT_SERVER_LIMIT`).
pub const DEFAULT_SERVER_LIMIT: u32 = 256;
/// The highest `server_limit` accepted (Apache `MAX_SERVER_LIMIT`).
pub const MAX_SERVER_LIMIT: u32 = 200_000;
/// `StartServers` default.
pub const DEFAULT_START_SERVERS: u32 = 5;
/// `MinSpareServers` default.
pub const DEFAULT_MIN_SPARE_SERVERS: u32 = 5;
/// `MaxSpareServers` default.
pub const DEFAULT_MAX_SPARE_SERVERS: u32 = 10;
/// `ListenBacklog` default (Apache `DEFAULT_LISTENBACKLOG`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 511;
/// The address used when no `listen` is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The maintenance tick (Apache: one second).
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// `fork_rate_limit` default: forks per second at most, however many connections wait.
pub const DEFAULT_FORK_RATE_LIMIT: u32 = 64;
/// `demand_interval_ms` default: how often a parent in `spawn_mode = "demand"` looks at the
/// accept queues between maintenance ticks.
pub const DEFAULT_DEMAND_INTERVAL: Duration = Duration::from_millis(100);

/// How the parent grows the pool when too few children are idle (`spawn_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SpawnMode {
    /// As many children as the waiting connections and `min_spare_servers` need, at once, within
    /// `fork_rate_limit` and `max_request_workers` (not in Apache; the default).
    #[default]
    Demand,
    /// Apache's ramp: 1, 2, 4 … 32 children per maintenance tick.
    Ramp,
}

/// What a TCP listener waits for before a connection is handed to accept(2) (`accept_filter`,
/// Apache's `AcceptFilter http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AcceptFilter {
    /// A complete request head (FreeBSD's `accf_http`, which Apache asks for by default): the
    /// gate, one light process, accepts every connection, holds it until its head is complete
    /// and hands it to a child; kept-alive connections go back to it between requests when
    /// another request waits (SPEC.md §15). Also `TCP_DEFER_ACCEPT`, as `data`. A service that
    /// does not read HTTP heads runs with `data` instead (Apache on a system without
    /// `accf_http` does the same). preforkd's default; the library's is `data`.
    HttpReady,
    /// The request's first bytes (`TCP_DEFER_ACCEPT`, 30 s, as Apache's `data` on Linux): a
    /// client that connects and sends nothing takes no child until then.
    #[default]
    Data,
    /// The handshake only.
    None,
}

impl AcceptFilter {
    /// Its configuration word.
    pub fn name(self) -> &'static str {
        match self {
            AcceptFilter::HttpReady => "httpready",
            AcceptFilter::Data => "data",
            AcceptFilter::None => "none",
        }
    }
}

/// The Linux scheduling policy a child runs under (`child_scheduling`; not in Apache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChildScheduling {
    /// `SCHED_BATCH`: a child woken by a connection does not preempt the process on the CPU (the
    /// client, another child); it runs when that one blocks or its slice ends. Fewer context
    /// switches when many children are runnable (SPEC.md §7.1; the default).
    #[default]
    Batch,
    /// `SCHED_OTHER`, the parent's own policy (Apache's children run so).
    Other,
}

impl ChildScheduling {
    /// Its configuration word.
    pub fn name(self) -> &'static str {
        match self {
            ChildScheduling::Batch => "batch",
            ChildScheduling::Other => "other",
        }
    }
}

impl SpawnMode {
    /// Its configuration word.
    pub fn name(self) -> &'static str {
        match self {
            SpawnMode::Demand => "demand",
            SpawnMode::Ramp => "ramp",
        }
    }
}

/// `accept_lock_timeout_ms` default: a holder is suspect only while connections wait, and a live
/// one accepts within microseconds of a connection arriving; two seconds without that is a child
/// that is stopped, traced or stuck in the kernel (SPEC.md §7.8, §8).
pub const DEFAULT_ACCEPT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest path a unix socket address can hold (`sun_path` is 108 bytes with the NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// The pool configuration as given: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPoolConfig {
    /// `Listen`: addresses to bind.
    pub listen: Option<Vec<String>>,
    /// `ListenBacklog`.
    pub listen_backlog: Option<i64>,
    /// `StartServers`.
    pub start_servers: Option<i64>,
    /// `MinSpareServers`.
    pub min_spare_servers: Option<i64>,
    /// `MaxSpareServers`.
    pub max_spare_servers: Option<i64>,
    /// `MaxRequestWorkers`.
    pub max_request_workers: Option<i64>,
    /// `MaxClients`, the pre-2.3.13 name of `MaxRequestWorkers` (accepted with a warning).
    pub max_clients: Option<i64>,
    /// `ServerLimit`.
    pub server_limit: Option<i64>,
    /// `MaxConnectionsPerChild`.
    pub max_connections_per_child: Option<i64>,
    /// `MaxRequestsPerChild`, the old name of `MaxConnectionsPerChild` (accepted with a warning).
    pub max_requests_per_child: Option<i64>,
    /// Extra connections, 0 to this many, added to each child's `max_connections_per_child` so
    /// children do not all recycle at once (not in Apache; gunicorn's `max_requests_jitter`).
    pub max_connections_per_child_jitter: Option<i64>,
    /// `Mutex <mechanism> mpm-accept`.
    pub accept_mutex: Option<String>,
    /// `GracefulShutdownTimeout`, seconds; 0 waits forever.
    pub graceful_shutdown_timeout: Option<i64>,
    /// The maintenance tick in milliseconds (Apache: fixed at 1000).
    pub maintenance_interval_ms: Option<i64>,
    /// The accept-lock watchdog, milliseconds; 0 is off (not in Apache).
    pub accept_lock_timeout_ms: Option<i64>,
    /// The per-request deadline, seconds; 0 is off (gunicorn's `timeout`; not in Apache).
    pub request_deadline: Option<i64>,
    /// `demand` or `ramp` ([`SpawnMode`]; not in Apache).
    pub spawn_mode: Option<String>,
    /// Most forks per second (not in Apache).
    pub fork_rate_limit: Option<i64>,
    /// Milliseconds between looks at the accept queues in `demand` mode (not in Apache).
    pub demand_interval_ms: Option<i64>,
    /// `batch` or `other` ([`ChildScheduling`]; not in Apache).
    pub child_scheduling: Option<String>,
    /// `httpready`, `data` or `none` ([`AcceptFilter`]; Apache's `AcceptFilter http`).
    pub accept_filter: Option<String>,
    /// `User` the children run as (name or `#uid`).
    pub user: Option<String>,
    /// `Group` the children run as (name or `#gid`).
    pub group: Option<String>,
    /// Where the parent answers a load balancer's agent check (HAProxy's `agent-check`; not in
    /// Apache): `IP:PORT`, `[IPv6]:PORT` or `PORT`; none by default (SPEC.md §7.10).
    pub agent_listen: Option<String>,
}

/// A validated pool configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolConfig {
    /// Addresses to bind, in order, without duplicates; never empty.
    pub listen: Vec<ListenAddr>,
    /// Backlog passed to listen(2).
    pub listen_backlog: u32,
    /// Children forked at start-up (at most `max_request_workers`).
    pub start_servers: u32,
    /// Fewer idle children than this: spawn more.
    pub min_spare_servers: u32,
    /// More idle children than this: retire one per tick. Always greater than `min_spare_servers`.
    pub max_spare_servers: u32,
    /// Most children alive at once; at most `server_limit`.
    pub max_request_workers: u32,
    /// Scoreboard size; fixed for the life of the parent.
    pub server_limit: u32,
    /// Connections a child serves before it exits; 0 is unlimited.
    pub max_connections_per_child: u32,
    /// Up to this many extra connections per child (see [`PoolConfig::connection_limit`]).
    pub max_connections_per_child_jitter: u32,
    /// Accept-mutex mechanism.
    pub accept_mutex: AcceptMutex,
    /// How long a graceful stop waits for children before stopping them; zero waits forever.
    pub graceful_shutdown_timeout: Duration,
    /// Period of the spare-server maintenance.
    pub maintenance_interval: Duration,
    /// A child that holds the accept lock this long without accepting while connections wait is
    /// killed (SPEC.md §7.8); zero is off.
    pub accept_lock_timeout: Duration,
    /// A child busy with one request (`R W L C`) this long is killed; zero is off.
    pub request_deadline: Duration,
    /// How the pool grows when too few children are idle.
    pub spawn_mode: SpawnMode,
    /// Most forks in any one second.
    pub fork_rate_limit: u32,
    /// How often, between ticks, a `demand` parent looks at the accept queues and forks what they
    /// need; at or above `maintenance_interval`, only the ticks look.
    pub demand_interval: Duration,
    /// The scheduling policy children run under.
    pub child_scheduling: ChildScheduling,
    /// What a TCP listener waits for before accept(2) sees a connection.
    pub accept_filter: AcceptFilter,
    /// User the children run as.
    pub user: Option<String>,
    /// Group the children run as.
    pub group: Option<String>,
    /// Where the parent answers a load balancer's agent check (SPEC.md §7.10); none: off.
    pub agent_listen: Option<std::net::SocketAddr>,
}

impl Default for PoolConfig {
    /// Apache's defaults, listening on [`DEFAULT_LISTEN`].
    fn default() -> Self {
        PoolConfig {
            listen: vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            start_servers: DEFAULT_START_SERVERS,
            min_spare_servers: DEFAULT_MIN_SPARE_SERVERS,
            max_spare_servers: DEFAULT_MAX_SPARE_SERVERS,
            max_request_workers: DEFAULT_SERVER_LIMIT,
            server_limit: DEFAULT_SERVER_LIMIT,
            max_connections_per_child: 0,
            max_connections_per_child_jitter: 0,
            accept_mutex: AcceptMutex::Auto,
            graceful_shutdown_timeout: Duration::ZERO,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            accept_lock_timeout: DEFAULT_ACCEPT_LOCK_TIMEOUT,
            request_deadline: Duration::ZERO,
            spawn_mode: SpawnMode::Demand,
            fork_rate_limit: DEFAULT_FORK_RATE_LIMIT,
            demand_interval: DEFAULT_DEMAND_INTERVAL,
            child_scheduling: ChildScheduling::Batch,
            accept_filter: AcceptFilter::Data,
            user: None,
            group: None,
            agent_listen: None,
        }
    }
}

/// A value that was accepted but changed. Logged at start-up and on every reload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigWarning {
    /// The key.
    pub key: &'static str,
    /// What happened, in a sentence that says what was given, what is used and why.
    pub message: String,
    /// The Apache log code for the same clamp, if Apache has one.
    pub apache_code: Option<&'static str>,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(code) = self.apache_code {
            write!(f, " [{code}]")?;
        }
        Ok(())
    }
}

/// A value that cannot be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside the range the key accepts.
    #[error("{key} = {given} is out of range: allowed {allowed}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value given.
        given: i64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// A word the key does not accept.
    #[error("{key} = {given:?} is not valid: allowed {allowed}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value given.
        given: String,
        /// What is allowed.
        allowed: String,
    },
    /// A `listen` entry that is not an address.
    #[error("listen = {given:?}: {reason}; expected {LISTEN_FORMS}")]
    InvalidListen {
        /// The entry given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same address listed twice.
    #[error("listen = {given:?} is listed twice")]
    DuplicateListen {
        /// The repeated entry.
        given: String,
    },
    /// `listen = []`.
    #[error("listen is empty: give at least one address ({LISTEN_FORMS})")]
    NoListeners,
    /// An old and a new name for the same directive, both given.
    #[error("{old} and {new} are the same setting ({old} is the old name): give only {new}")]
    BothNames {
        /// The deprecated key.
        old: &'static str,
        /// The current key.
        new: &'static str,
    },
}

impl ConfigError {
    /// The configuration key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            ConfigError::OutOfRange { key, .. } | ConfigError::InvalidValue { key, .. } => key,
            ConfigError::InvalidListen { .. } | ConfigError::DuplicateListen { .. } | ConfigError::NoListeners => {
                "listen"
            }
            ConfigError::BothNames { old, .. } => old,
        }
    }
}

/// Every problem found in one configuration (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated value and the warnings its validation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked<T> {
    /// The value to use.
    pub value: T,
    /// Every change made to what was given.
    pub warnings: Vec<ConfigWarning>,
}

#[derive(Default)]
struct Validator {
    warnings: Vec<ConfigWarning>,
    errors: Vec<ConfigError>,
}

impl Validator {
    fn warn(&mut self, key: &'static str, apache_code: Option<&'static str>, message: String) {
        self.warnings.push(ConfigWarning { key, message, apache_code });
    }

    /// An integer in `min..=max`, or an error naming the range.
    fn ranged(
        &mut self,
        key: &'static str,
        v: Option<i64>,
        default: u32,
        min: i64,
        max: i64,
        allowed: &'static str,
    ) -> u32 {
        match v {
            None => default,
            Some(given) if given < min || given > max => {
                self.errors.push(ConfigError::OutOfRange { key, given, allowed });
                default
            }
            Some(given) => given as u32,
        }
    }

    /// The value of `all` whose `name` is the setting's word (`None`: `default`), or an error
    /// naming them (`allowed`).
    fn word<T: Copy>(
        &mut self,
        key: &'static str,
        v: Option<&str>,
        default: T,
        all: &[T],
        name: fn(T) -> &'static str,
        allowed: &str,
    ) -> T {
        let Some(given) = v else { return default };
        match all.iter().copied().find(|&value| name(value) == given) {
            Some(value) => value,
            None => {
                self.errors.push(ConfigError::InvalidValue { key, given: given.to_string(), allowed: allowed.into() });
                default
            }
        }
    }

    /// An Apache count that Apache raises to 1 when it is below 1 (with a warning).
    fn at_least_one(&mut self, key: &'static str, code: &'static str, v: Option<i64>, default: u32) -> u32 {
        match v {
            Some(given) if given < 1 => {
                self.warn(key, Some(code), format!("{given} is below 1; using 1"));
                1
            }
            Some(given) if given > i64::from(u32::MAX) => {
                self.errors.push(ConfigError::OutOfRange { key, given, allowed: "1 to 4294967295" });
                default
            }
            Some(given) => given as u32,
            None => default,
        }
    }

    /// Picks the current or the deprecated name of a directive.
    fn renamed(&mut self, new: &'static str, new_v: Option<i64>, old: &'static str, old_v: Option<i64>) -> Option<i64> {
        match (new_v, old_v) {
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::BothNames { old, new });
                new_v
            }
            (None, Some(v)) => {
                self.warn(old, Some("AH00188"), format!("{old} is the old name of {new}; read it as {new} = {v}"));
                Some(v)
            }
            _ => new_v,
        }
    }

    fn account(&mut self, key: &'static str, v: &Option<String>) -> Option<String> {
        let s = v.as_ref()?;
        let reason = if s.is_empty() {
            Some("it is empty")
        } else if s.chars().any(|c| c.is_whitespace() || c == ':' || c == '\0') {
            Some("it contains white space, ':' or NUL")
        } else if let Some(id) = s.strip_prefix('#') {
            (id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.parse::<u32>().is_err())
                .then_some("'#' must be followed by a numeric id")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.errors.push(ConfigError::InvalidValue {
                    key,
                    given: s.clone(),
                    allowed: format!("a name or #id ({reason})"),
                });
                None
            }
            None => Some(s.clone()),
        }
    }
}

/// The rule that `server_limit` cannot change while the parent lives (it sizes the shared
/// scoreboard, Apache's AH00179): the warning when `given` differs from the `running` value.
fn server_limit_kept(running: u32, given: u32) -> Option<ConfigWarning> {
    (given != running).then(|| ConfigWarning {
        key: "server_limit",
        message: format!(
            "changing it from {running} to {given} needs a full stop and start (it sizes the shared scoreboard); keeping {running}"
        ),
        apache_code: Some("AH00179"),
    })
}

/// `max_request_workers` above `server_limit` (AH00180).
fn max_request_workers_clamped(max_request_workers: u32, server_limit: u32) -> Option<ConfigWarning> {
    (max_request_workers > server_limit).then(|| ConfigWarning {
        key: "max_request_workers",
        message: format!(
            "{max_request_workers} exceeds server_limit = {server_limit}; using {server_limit} (raise server_limit to allow more)"
        ),
        apache_code: Some("AH00180"),
    })
}

/// `start_servers` above `max_request_workers`.
fn start_servers_clamped(start_servers: u32, max_request_workers: u32) -> Option<ConfigWarning> {
    (start_servers > max_request_workers).then(|| ConfigWarning {
        key: "start_servers",
        message: format!(
            "{start_servers} exceeds max_request_workers = {max_request_workers}; starting {max_request_workers}"
        ),
        apache_code: None,
    })
}

impl PoolConfig {
    /// Validates a first configuration (at start-up): Apache's defaults for what is missing,
    /// Apache's clamps (each with a warning), errors for what cannot be used.
    pub fn from_raw(raw: &RawPoolConfig) -> Result<Checked<PoolConfig>, ConfigErrors> {
        Self::validate(raw, None)
    }

    /// Validates the configuration for a restart of a parent running `self`. `server_limit` sizes
    /// the shared scoreboard, so it keeps its current value (with a warning if the new one differs).
    pub fn reload(&self, raw: &RawPoolConfig) -> Result<Checked<PoolConfig>, ConfigErrors> {
        Self::validate(raw, Some(self.server_limit))
    }

    /// `next` (already validated) as a parent running `self` can apply it: `server_limit` keeps its
    /// running value, `max_request_workers` and `start_servers` are clamped to it, each change with
    /// its warning. For a configuration that did not come from [`PoolConfig::reload`] of `self`.
    pub fn restrict_to_running(&self, mut next: PoolConfig) -> Checked<PoolConfig> {
        let mut warnings = vec![];
        if let Some(kept) = server_limit_kept(self.server_limit, next.server_limit) {
            warnings.push(kept);
            next.server_limit = self.server_limit;
        }
        if let Some(clamp) = max_request_workers_clamped(next.max_request_workers, next.server_limit) {
            warnings.push(clamp);
            next.max_request_workers = next.server_limit;
        }
        if let Some(clamp) = start_servers_clamped(next.start_servers, next.max_request_workers) {
            warnings.push(clamp);
            next.start_servers = next.max_request_workers;
        }
        Checked { value: next, warnings }
    }

    fn validate(raw: &RawPoolConfig, fixed_server_limit: Option<u32>) -> Result<Checked<PoolConfig>, ConfigErrors> {
        let mut v = Validator::default();
        let d = PoolConfig::default();

        // Listeners.
        let mut listen = Vec::new();
        match &raw.listen {
            None => listen = d.listen.clone(),
            Some(entries) if entries.is_empty() => v.errors.push(ConfigError::NoListeners),
            Some(entries) => {
                for entry in entries {
                    match entry.parse::<ListenAddr>() {
                        // Port 0 asks the kernel for a fresh port each time: never a duplicate.
                        Ok(a) if listen.contains(&a) && !matches!(&a, ListenAddr::Tcp(sa) if sa.port() == 0) => {
                            v.errors.push(ConfigError::DuplicateListen { given: entry.clone() })
                        }
                        Ok(a) => listen.push(a),
                        Err(e) => v.errors.push(e),
                    }
                }
            }
        }
        let listen_backlog = v.ranged("listen_backlog", raw.listen_backlog, d.listen_backlog, 1, 65535, "1 to 65535");

        // ServerLimit first: it bounds MaxRequestWorkers.
        let mut server_limit = match raw.server_limit {
            Some(given) if given > i64::from(MAX_SERVER_LIMIT) => {
                v.warn(
                    "server_limit",
                    Some("AH00175"),
                    format!(
                        "{given} exceeds the compile-time limit of {MAX_SERVER_LIMIT} servers; using {MAX_SERVER_LIMIT}"
                    ),
                );
                MAX_SERVER_LIMIT
            }
            Some(given) if given < 1 => {
                v.warn("server_limit", Some("AH00177"), format!("{given} is below 1; using 1"));
                1
            }
            Some(given) => given as u32,
            None => d.server_limit,
        };
        if let Some(fixed) = fixed_server_limit
            && let Some(kept) = server_limit_kept(fixed, server_limit)
        {
            v.warnings.push(kept);
            server_limit = fixed;
        }

        let mrw_raw = v.renamed("max_request_workers", raw.max_request_workers, "max_clients", raw.max_clients);
        let mut max_request_workers = match mrw_raw {
            // Unset: as many as the scoreboard holds (Apache: its compile-time default, then a clamp).
            None => server_limit,
            Some(_) => v.at_least_one("max_request_workers", "AH00182", mrw_raw, server_limit),
        };
        if let Some(clamp) = max_request_workers_clamped(max_request_workers, server_limit) {
            v.warnings.push(clamp);
            max_request_workers = server_limit;
        }

        let mut start_servers = v.at_least_one("start_servers", "AH00184", raw.start_servers, d.start_servers);
        if let Some(clamp) = start_servers_clamped(start_servers, max_request_workers) {
            v.warnings.push(clamp);
            start_servers = max_request_workers;
        }
        let min_spare_servers =
            v.at_least_one("min_spare_servers", "AH00186", raw.min_spare_servers, d.min_spare_servers);
        let mut max_spare_servers = match raw.max_spare_servers {
            Some(given) if given > i64::from(u32::MAX) => {
                v.errors.push(ConfigError::OutOfRange { key: "max_spare_servers", given, allowed: "0 to 4294967295" });
                d.max_spare_servers
            }
            Some(given) => given.max(0) as u32,
            None => d.max_spare_servers,
        };
        if max_spare_servers <= min_spare_servers {
            let used = min_spare_servers.saturating_add(1);
            v.warn(
                "max_spare_servers",
                None,
                format!(
                    "{} is not above min_spare_servers = {min_spare_servers}; using {used} so the pool does not thrash between spawning and retiring",
                    raw.max_spare_servers.unwrap_or(i64::from(max_spare_servers))
                ),
            );
            max_spare_servers = used;
        }

        let mcpc_raw = v.renamed(
            "max_connections_per_child",
            raw.max_connections_per_child,
            "max_requests_per_child",
            raw.max_requests_per_child,
        );
        let max_connections_per_child = match mcpc_raw {
            Some(given) if given < 0 => {
                v.warn("max_connections_per_child", None, format!("{given} is negative; using 0 (unlimited)"));
                0
            }
            other => {
                v.ranged("max_connections_per_child", other, 0, 0, i64::from(u32::MAX), "0 (unlimited) to 4294967295")
            }
        };
        let max_connections_per_child_jitter = v.ranged(
            "max_connections_per_child_jitter",
            raw.max_connections_per_child_jitter,
            0,
            0,
            i64::from(u32::MAX),
            "0 to 4294967295",
        );
        if max_connections_per_child_jitter > 0 && max_connections_per_child == 0 {
            v.warn(
                "max_connections_per_child_jitter",
                None,
                "has no effect while max_connections_per_child = 0 (unlimited)".to_string(),
            );
        }

        let accept_mutex = match &raw.accept_mutex {
            None => AcceptMutex::Auto,
            Some(s) => s.parse().unwrap_or_else(|e| {
                v.errors.push(e);
                AcceptMutex::Auto
            }),
        };
        let graceful_shutdown_timeout = Duration::from_secs(u64::from(v.ranged(
            "graceful_shutdown_timeout",
            raw.graceful_shutdown_timeout,
            0,
            0,
            i64::from(u32::MAX),
            "0 (wait forever) or more seconds",
        )));
        let maintenance_interval = Duration::from_millis(u64::from(v.ranged(
            "maintenance_interval_ms",
            raw.maintenance_interval_ms,
            1000,
            10,
            60_000,
            "10 to 60000 milliseconds",
        )));
        let accept_lock_timeout = Duration::from_millis(match raw.accept_lock_timeout_ms {
            None => DEFAULT_ACCEPT_LOCK_TIMEOUT.as_millis() as u64,
            Some(0) => 0,
            given => u64::from(v.ranged(
                "accept_lock_timeout_ms",
                given,
                DEFAULT_ACCEPT_LOCK_TIMEOUT.as_millis() as u32,
                100,
                600_000,
                "0 (off) or 100 to 600000 milliseconds",
            )),
        });
        let request_deadline = Duration::from_secs(u64::from(v.ranged(
            "request_deadline",
            raw.request_deadline,
            0,
            0,
            86_400,
            "0 (off) to 86400 seconds",
        )));
        let spawn_mode = v.word(
            "spawn_mode",
            raw.spawn_mode.as_deref(),
            SpawnMode::Demand,
            &[SpawnMode::Demand, SpawnMode::Ramp],
            SpawnMode::name,
            "demand (spawn what waiting connections need) or ramp (Apache's 1, 2, 4 … 32 per tick)",
        );
        let fork_rate_limit = v.ranged(
            "fork_rate_limit",
            raw.fork_rate_limit,
            DEFAULT_FORK_RATE_LIMIT,
            1,
            100_000,
            "1 to 100000 forks per second",
        );
        let demand_interval = Duration::from_millis(u64::from(v.ranged(
            "demand_interval_ms",
            raw.demand_interval_ms,
            DEFAULT_DEMAND_INTERVAL.as_millis() as u32,
            10,
            60_000,
            "10 to 60000 milliseconds",
        )));
        let child_scheduling = v.word(
            "child_scheduling",
            raw.child_scheduling.as_deref(),
            ChildScheduling::Batch,
            &[ChildScheduling::Batch, ChildScheduling::Other],
            ChildScheduling::name,
            "batch (SCHED_BATCH: a woken child does not preempt the running process) or other \
             (SCHED_OTHER, as Apache's children)",
        );
        let accept_filter = v.word(
            "accept_filter",
            raw.accept_filter.as_deref(),
            AcceptFilter::Data,
            &[AcceptFilter::HttpReady, AcceptFilter::Data, AcceptFilter::None],
            AcceptFilter::name,
            "httpready (the gate: a connection reaches a child once its request head is complete), data \
             (TCP_DEFER_ACCEPT: once its first bytes came) or none",
        );
        let user = v.account("user", &raw.user);
        let group = v.account("group", &raw.group);
        let agent_listen = raw.agent_listen.as_ref().and_then(|given| match given.parse::<ListenAddr>() {
            Ok(ListenAddr::Tcp(a)) if !listen.contains(&ListenAddr::Tcp(a)) || a.port() == 0 => Some(a),
            _ => {
                v.errors.push(ConfigError::InvalidValue {
                    key: "agent_listen",
                    given: given.clone(),
                    allowed: "IP:PORT, [IPv6]:PORT or PORT (HAProxy's agent check connects over TCP), an address \
                              that no listen entry uses"
                        .into(),
                });
                None
            }
        });

        if !v.errors.is_empty() {
            return Err(ConfigErrors(v.errors));
        }
        Ok(Checked {
            value: PoolConfig {
                listen,
                listen_backlog,
                start_servers,
                min_spare_servers,
                max_spare_servers,
                max_request_workers,
                server_limit,
                max_connections_per_child,
                max_connections_per_child_jitter,
                accept_mutex,
                graceful_shutdown_timeout,
                maintenance_interval,
                accept_lock_timeout,
                request_deadline,
                spawn_mode,
                fork_rate_limit,
                demand_interval,
                child_scheduling,
                accept_filter,
                user,
                group,
                agent_listen,
            },
            warnings: v.warnings,
        })
    }

    /// Is the accept lock used with this configuration?
    pub fn lock_in_use(&self) -> bool {
        self.accept_mutex.lock_in_use(self.listen.len())
    }

    /// The connection limit for one child: `max_connections_per_child` plus a jitter in
    /// `0..=max_connections_per_child_jitter` derived from `seed` (the driver passes something that
    /// differs per child, e.g. pid and slot). 0 means unlimited.
    pub fn connection_limit(&self, seed: u64) -> u64 {
        let base = u64::from(self.max_connections_per_child);
        if base == 0 || self.max_connections_per_child_jitter == 0 {
            return base;
        }
        base + splitmix64(seed) % (u64::from(self.max_connections_per_child_jitter) + 1)
    }
}

/// A well-mixed 64-bit hash (SplitMix64), so neighbouring seeds give unrelated jitters.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: RawPoolConfig) -> Checked<PoolConfig> {
        PoolConfig::from_raw(&raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(raw: RawPoolConfig) -> Vec<ConfigError> {
        PoolConfig::from_raw(&raw).unwrap_err().0
    }

    #[test]
    fn empty_config_is_apaches_defaults_without_warnings() {
        let c = ok(RawPoolConfig::default());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = c.value;
        assert_eq!(c, PoolConfig::default());
        assert_eq!(
            (c.start_servers, c.min_spare_servers, c.max_spare_servers, c.max_request_workers, c.server_limit),
            (5, 5, 10, 256, 256)
        );
        assert_eq!((c.listen_backlog, c.max_connections_per_child), (511, 0));
        assert_eq!(c.graceful_shutdown_timeout, Duration::ZERO);
        assert_eq!(c.maintenance_interval, Duration::from_secs(1));
        assert_eq!(c.listen, vec![ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap())]);
        assert!(!c.lock_in_use());
    }

    #[test]
    fn max_request_workers_above_server_limit_is_clamped_with_apaches_warning() {
        let c = ok(RawPoolConfig { server_limit: Some(100), max_request_workers: Some(300), ..Default::default() });
        assert_eq!(c.value.max_request_workers, 100);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].apache_code, Some("AH00180"));
        assert_eq!(
            c.warnings[0].to_string(),
            "max_request_workers: 300 exceeds server_limit = 100; using 100 (raise server_limit to allow more) [AH00180]"
        );
    }

    #[test]
    fn unset_max_request_workers_follows_server_limit_silently() {
        let c = ok(RawPoolConfig { server_limit: Some(64), ..Default::default() });
        assert_eq!(c.value.max_request_workers, 64);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn server_limit_is_clamped_to_the_compile_time_cap_and_to_one() {
        let c = ok(RawPoolConfig { server_limit: Some(500_000), ..Default::default() });
        assert_eq!(c.value.server_limit, MAX_SERVER_LIMIT);
        assert_eq!(c.warnings[0].apache_code, Some("AH00175"));
        let c = ok(RawPoolConfig {
            server_limit: Some(0),
            start_servers: Some(1),
            min_spare_servers: Some(1),
            ..Default::default()
        });
        assert_eq!((c.value.server_limit, c.value.max_request_workers), (1, 1));
        assert_eq!(c.warnings[0].apache_code, Some("AH00177"));
    }

    #[test]
    fn counts_below_one_become_one_with_warnings() {
        let c = ok(RawPoolConfig {
            start_servers: Some(0),
            min_spare_servers: Some(-3),
            max_request_workers: Some(0),
            ..Default::default()
        });
        let v = &c.value;
        assert_eq!((v.start_servers, v.min_spare_servers, v.max_request_workers), (1, 1, 1));
        let codes: Vec<_> = c.warnings.iter().filter_map(|w| w.apache_code).collect();
        assert_eq!(codes, ["AH00182", "AH00184", "AH00186"]);
        assert!(c.warnings.iter().any(|w| w.message == "-3 is below 1; using 1"));
    }

    #[test]
    fn max_spare_not_above_min_spare_is_raised_to_min_plus_one() {
        for given in [Some(3), Some(5), Some(0), Some(-1)] {
            let c = ok(RawPoolConfig { min_spare_servers: Some(5), max_spare_servers: given, ..Default::default() });
            assert_eq!(c.value.max_spare_servers, 6, "{given:?}");
            assert_eq!(c.warnings.len(), 1);
            assert!(c.warnings[0].message.contains("using 6"), "{}", c.warnings[0]);
        }
        let c = ok(RawPoolConfig { min_spare_servers: Some(20), ..Default::default() });
        assert_eq!(c.value.max_spare_servers, 21, "the default 10 is raised too");
    }

    #[test]
    fn start_servers_beyond_max_request_workers_starts_only_that_many() {
        let c = ok(RawPoolConfig { start_servers: Some(50), max_request_workers: Some(8), ..Default::default() });
        assert_eq!(c.value.start_servers, 8);
        assert!(c.warnings[0].message.contains("starting 8"));
    }

    #[test]
    fn server_limit_cannot_change_on_reload() {
        let first = ok(RawPoolConfig { server_limit: Some(64), ..Default::default() }).value;
        let again = first
            .reload(&RawPoolConfig { server_limit: Some(128), max_request_workers: Some(100), ..Default::default() })
            .unwrap();
        assert_eq!(again.value.server_limit, 64);
        assert_eq!(again.value.max_request_workers, 64);
        let codes: Vec<_> = again.warnings.iter().filter_map(|w| w.apache_code).collect();
        assert_eq!(codes, ["AH00179", "AH00180"]);
        let same = first.reload(&RawPoolConfig { server_limit: Some(64), ..Default::default() }).unwrap();
        assert!(same.warnings.is_empty());
        // The same rule for a configuration that was validated on its own (what the parent applies).
        let alone = ok(RawPoolConfig { server_limit: Some(128), max_request_workers: Some(100), ..Default::default() });
        let kept = first.restrict_to_running(alone.value);
        assert_eq!((kept.value.server_limit, kept.value.max_request_workers), (64, 64));
        assert_eq!(kept.warnings, again.warnings, "the same warnings, word for word");
        assert!(first.restrict_to_running(first.clone()).warnings.is_empty());
    }

    #[test]
    fn old_directive_names_work_with_a_warning_and_conflict_when_both_given() {
        let c = ok(RawPoolConfig { max_clients: Some(50), max_requests_per_child: Some(1000), ..Default::default() });
        assert_eq!((c.value.max_request_workers, c.value.max_connections_per_child), (50, 1000));
        assert_eq!(c.warnings.len(), 2);
        let e = errors(RawPoolConfig { max_clients: Some(50), max_request_workers: Some(60), ..Default::default() });
        assert_eq!(e, [ConfigError::BothNames { old: "max_clients", new: "max_request_workers" }]);
        assert_eq!(
            e[0].to_string(),
            "max_clients and max_request_workers are the same setting (max_clients is the old name): give only max_request_workers"
        );
    }

    #[test]
    fn listen_forms_parse_and_bad_ones_explain_themselves() {
        let c = ok(RawPoolConfig {
            listen: Some(vec!["127.0.0.1:0".into(), "[::1]:8080".into(), "9000".into(), "unix:/run/p.sock".into()]),
            ..Default::default()
        });
        assert_eq!(
            c.value.listen,
            vec![
                ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
                ListenAddr::Tcp("[::1]:8080".parse().unwrap()),
                ListenAddr::Tcp("0.0.0.0:9000".parse().unwrap()),
                ListenAddr::Unix("/run/p.sock".into()),
            ]
        );
        assert!(c.value.lock_in_use(), "several listeners: the lock is used");
        let e = errors(RawPoolConfig {
            listen: Some(vec![
                "localhost:80".into(),
                "::1:80".into(),
                "70000".into(),
                "unix:".into(),
                "1.2.3.4:80".into(),
                "1.2.3.4:80".into(),
            ]),
            ..Default::default()
        });
        assert_eq!(e.len(), 5, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            format!(
                "listen = \"localhost:80\": not an IP address with a port (host names are not resolved); expected {LISTEN_FORMS}"
            )
        );
        assert!(e[1].to_string().contains("needs brackets"));
        assert!(e[2].to_string().contains("0 to 65535"));
        assert!(e[3].to_string().contains("empty"));
        assert_eq!(e[4], ConfigError::DuplicateListen { given: "1.2.3.4:80".into() });
        assert_eq!(errors(RawPoolConfig { listen: Some(vec![]), ..Default::default() }), [ConfigError::NoListeners]);
        let two_any =
            ok(RawPoolConfig { listen: Some(vec!["127.0.0.1:0".into(), "127.0.0.1:0".into()]), ..Default::default() });
        assert_eq!(two_any.value.listen.len(), 2, "port 0 twice is two kernel-chosen ports");
        let long = format!("unix:/{}", "x".repeat(MAX_UNIX_PATH));
        assert!(long.parse::<ListenAddr>().is_err());
    }

    /// SPEC.md §7.10: a TCP address of its own; off by default.
    #[test]
    fn agent_listen_is_a_tcp_address_that_no_listener_uses() {
        assert_eq!(PoolConfig::default().agent_listen, None);
        let c = ok(RawPoolConfig { agent_listen: Some("127.0.0.1:9777".into()), ..Default::default() });
        assert_eq!(c.value.agent_listen, Some("127.0.0.1:9777".parse().unwrap()));
        let c = ok(RawPoolConfig { agent_listen: Some("9777".into()), ..Default::default() });
        assert_eq!(c.value.agent_listen.map(|a| a.port()), Some(9777));
        for bad in ["unix:/run/agent.sock", "localhost:9777", "127.0.0.1:8080"] {
            let e = errors(RawPoolConfig {
                listen: Some(vec!["127.0.0.1:8080".into()]),
                agent_listen: Some(bad.into()),
                ..Default::default()
            });
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].key(), "agent_listen");
            assert!(e[0].to_string().contains("IP:PORT, [IPv6]:PORT or PORT"), "{}", e[0]);
        }
        let any = ok(RawPoolConfig {
            listen: Some(vec!["127.0.0.1:0".into()]),
            agent_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        });
        assert!(any.value.agent_listen.is_some(), "port 0 is a fresh port, never a listener's");
    }

    #[test]
    fn word_settings_read_their_names_back_and_refuse_other_words() {
        for m in [SpawnMode::Demand, SpawnMode::Ramp] {
            let c = ok(RawPoolConfig { spawn_mode: Some(m.name().into()), ..Default::default() });
            assert_eq!(c.value.spawn_mode, m);
        }
        for s in [ChildScheduling::Batch, ChildScheduling::Other] {
            let c = ok(RawPoolConfig { child_scheduling: Some(s.name().into()), ..Default::default() });
            assert_eq!(c.value.child_scheduling, s);
        }
        for f in [AcceptFilter::HttpReady, AcceptFilter::Data, AcceptFilter::None] {
            let c = ok(RawPoolConfig { accept_filter: Some(f.name().into()), ..Default::default() });
            assert_eq!(c.value.accept_filter, f);
        }
        assert_eq!((ChildScheduling::Batch.name(), AcceptFilter::Data.name()), ("batch", "data"));
        let d = PoolConfig::default();
        assert_eq!((d.child_scheduling, d.accept_filter), (ChildScheduling::Batch, AcceptFilter::Data));
        let e = errors(RawPoolConfig {
            child_scheduling: Some("fifo".into()),
            accept_filter: Some("dataready".into()),
            ..Default::default()
        });
        assert_eq!(e.len(), 2);
        assert!(e[0].to_string().starts_with("child_scheduling = \"fifo\" is not valid: allowed batch"), "{}", e[0]);
        assert!(
            e[1].to_string().starts_with("accept_filter = \"dataready\" is not valid: allowed httpready (the gate"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn accept_mutex_words_and_the_single_listener_rule() {
        let mut cases = vec![("auto", AcceptMutex::Auto), ("default", AcceptMutex::Auto), ("none", AcceptMutex::None)];
        cases.extend(LockMechanism::ALL.map(|m| (m.name(), AcceptMutex::Use(m))));
        for (word, m) in cases {
            assert_eq!(word.parse::<AcceptMutex>(), Ok(m));
            assert!(!m.lock_in_use(1), "{word}: never a lock with one listener");
            assert_eq!(m.lock_in_use(2), m != AcceptMutex::None, "{word}");
            assert_eq!(m.mechanism(1, LockMechanism::Pthread), None, "{word}");
        }
        assert_eq!(AcceptMutex::Auto.mechanism(2, LockMechanism::Flock), Some(LockMechanism::Flock));
        assert_eq!(
            AcceptMutex::Use(LockMechanism::Sysvsem).mechanism(3, LockMechanism::Flock),
            Some(LockMechanism::Sysvsem)
        );
        assert_eq!(AcceptMutex::None.mechanism(2, LockMechanism::Flock), None);
        assert_eq!(accept_mutex_values(), "auto, fcntl, flock, pthread, sysvsem, none");
        let e = "posixsem".parse::<AcceptMutex>().unwrap_err().to_string();
        assert!(e.contains("hangs"), "{e}");
        let e = "spinlock".parse::<AcceptMutex>().unwrap_err().to_string();
        assert_eq!(e, format!("accept_mutex = \"spinlock\" is not valid: allowed {}", accept_mutex_values()));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let e = errors(RawPoolConfig {
            listen_backlog: Some(0),
            graceful_shutdown_timeout: Some(-5),
            maintenance_interval_ms: Some(5),
            accept_mutex: Some("spin".into()),
            user: Some("".into()),
            group: Some("#x1".into()),
            start_servers: Some(1 << 40),
            ..Default::default()
        });
        let keys: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 7, "{keys:#?}");
        assert_eq!(keys[0], "listen_backlog = 0 is out of range: allowed 1 to 65535");
        assert!(keys.iter().any(|k| k.starts_with("graceful_shutdown_timeout = -5")));
        assert!(keys.iter().any(|k| k.starts_with("maintenance_interval_ms = 5")));
        assert!(keys.iter().any(|k| k.starts_with("user = \"\"")));
        assert!(keys.iter().any(|k| k.starts_with("group = \"#x1\"")));
        let all = ConfigErrors(e).to_string();
        assert!(all.contains("; "), "{all}");
    }

    #[test]
    fn accounts_accept_names_and_numeric_ids() {
        let c = ok(RawPoolConfig { user: Some("www-data".into()), group: Some("#33".into()), ..Default::default() });
        assert_eq!((c.value.user.as_deref(), c.value.group.as_deref()), (Some("www-data"), Some("#33")));
    }

    #[test]
    fn negative_max_connections_means_unlimited_and_jitter_spreads_limits() {
        let c = ok(RawPoolConfig { max_connections_per_child: Some(-1), ..Default::default() });
        assert_eq!(c.value.max_connections_per_child, 0);
        assert_eq!(c.value.connection_limit(42), 0);
        let c = ok(RawPoolConfig {
            max_connections_per_child: Some(1000),
            max_connections_per_child_jitter: Some(100),
            ..Default::default()
        })
        .value;
        let limits: Vec<u64> = (0..200).map(|seed| c.connection_limit(seed)).collect();
        assert!(limits.iter().all(|&l| (1000..=1100).contains(&l)));
        let distinct: std::collections::BTreeSet<_> = limits.iter().collect();
        assert!(distinct.len() > 50, "jitter should spread limits, got {} distinct", distinct.len());
        let c = ok(RawPoolConfig { max_connections_per_child_jitter: Some(5), ..Default::default() });
        assert_eq!(c.warnings.len(), 1, "jitter without a limit is pointless");
    }
}
