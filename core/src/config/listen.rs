//! Listener addresses (`listen`; Apache's `Listen`): TCP over IPv4 or IPv6, or a unix-domain socket.

use super::{ConfigError, MAX_UNIX_PATH};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A listener address: TCP (IPv4 or IPv6) or a unix-domain socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// `127.0.0.1:8080`, `[::1]:8080`, or `8080` (meaning `0.0.0.0:8080`). Port 0 asks the kernel for one.
    Tcp(SocketAddr),
    /// `unix:/run/preforkd.sock`.
    Unix(PathBuf),
}

/// What a `listen` entry may look like; shown in errors.
pub const LISTEN_FORMS: &str =
    "IP:PORT (127.0.0.1:8080), [IPv6]:PORT ([::1]:8080), PORT (all IPv4 addresses) or unix:/path/to/socket";

impl FromStr for ListenAddr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::InvalidListen { given: s.to_string(), reason: reason.to_string() };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("the unix socket path is empty"));
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(bad(&format!("a unix socket path may have at most {MAX_UNIX_PATH} bytes")));
            }
            if path.contains('\0') {
                return Err(bad("the path contains a NUL byte"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let port = s.parse::<u16>().map_err(|_| bad("a port is 0 to 65535"))?;
            return Ok(ListenAddr::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
            bad(if s.contains(':') && !s.starts_with('[') && s.matches(':').count() > 1 {
                "an IPv6 address needs brackets: [::1]:8080"
            } else {
                "not an IP address with a port (host names are not resolved)"
            })
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}
