//! Status pages from a snapshot of the shared scoreboard: mod_status's HTML page and `?auto` text
//! (same field names and meaning, so existing parsers work), `?json`, and OpenMetrics.
//!
//! Nothing is counted here: busy, idle and graceful workers are the core's mod_status counts
//! (`ScoreboardView::worker_counts`, SPEC.md §12.5), the totals are the snapshot's; this module
//! only renders them.

use crate::http::log::civil_from_days;
use prefork_core::slot::SlotState;
use prefork_server::{ListenerInfo, PoolSnapshot};
use std::fmt::Write as _;

/// The arguments of a status page, read as mod_status reads them: each option is found anywhere
/// in the query (`?auto`, `?auto=1`, `?refresh=5&auto` all ask for the text report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    /// `auto`: the machine-readable text.
    pub auto: bool,
    /// `json` (ours).
    pub json: bool,
    /// `refresh[=N]`: a `Refresh` header of N seconds (10 when N is missing or below 1).
    pub refresh: Option<u64>,
    /// `notable`: the HTML page without the per-slot table.
    pub no_table: bool,
    /// `live` (ours): the live page ([`LIVE_PAGE`]).
    pub live: bool,
}

/// The live page: one self-contained HTML page (no external assets) that polls `?json` once a
/// second and shows the scoreboard changing, with charts of the last five minutes.
pub const LIVE_PAGE: &str = include_str!("live.html");

impl StatusQuery {
    /// Parses a query string (without the `?`).
    pub fn parse(query: &str) -> StatusQuery {
        let refresh = query.find("refresh").map(|at| {
            let after = &query[at + "refresh".len()..];
            let n = after.strip_prefix('=').map_or(0, |v| {
                let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() { 0 } else { digits.parse::<u64>().unwrap_or(u64::MAX) }
            });
            if n < 1 { 10 } else { n.min(86_400) }
        });
        StatusQuery {
            auto: query.contains("auto"),
            json: query.contains("json"),
            refresh,
            no_table: query.contains("notable"),
            live: query.contains("live"),
        }
    }
}

/// APR's `%g` as mod_status prints it: six significant digits, no trailing zeros, and no zero
/// before the point (`.01`, as Apache's `CPUSystem: .01`).
fn g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    let s = format!("{:.*}", digits.max(0) as usize, x);
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    match s.strip_prefix("0.") {
        Some(rest) => format!(".{rest}"),
        None => s.replacen("-0.", "-.", 1),
    }
}

/// Apache's `show_time`: " 1 day 2 hours 3 minutes 4 seconds" (zero parts left out).
fn show_time(secs: u64) -> String {
    let parts = [(secs / 86_400, "day"), (secs / 3600 % 24, "hour"), (secs / 60 % 60, "minute"), (secs % 60, "second")];
    let mut out = String::new();
    for (n, unit) in parts {
        if n > 0 {
            let _ = write!(out, " {n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    out
}

/// Apache's DEFAULT_TIME_FORMAT: "Wednesday, 25-Nov-2026 13:45:11 UTC".
fn ap_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let rem = secs % 86_400;
    format!(
        "{}, {d:02}-{}-{y} {:02}:{:02}:{:02} UTC",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// CPU time, read from `/proc` when a status page is asked for (nothing is counted per request):
/// the parent's own and its exited children's (`utime`, `stime`, `cutime`, `cstime` of
/// `/proc/<parent>/stat`), and each live child's own (`/proc/<child>/stat`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cpu {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub tick: f64,
    /// The parent: user, system, exited children's user, exited children's system (ticks).
    pub parent: [u64; 4],
    /// Per slot: the live child's user and system ticks (`None`: no child, or not readable).
    pub slots: Vec<Option<(u64, u64)>>,
    /// Per slot: the pid it shows is not what it should be: a live slot's pid is not a child of
    /// the parent (by `/proc`, not by the board), or an empty slot shows a pid. Any process of the
    /// pool can write the board; a status page shows such a pid as invalid, and reads nothing of
    /// that process.
    pub pid_invalid: Vec<bool>,
}

/// `ppid` (field 4) and `utime stime cutime cstime` (fields 14 to 17) of `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(u32, [u64; 4])> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((num(4)? as u32, [num(14)?, num(15)?, num(16)?, num(17)?]))
}

fn proc_times(pid: u32) -> Option<[u64; 4]> {
    proc_stat(pid).map(|(_, t)| t)
}

impl Cpu {
    /// Reads the parent's and every live child's CPU time; a slot's pid counts only if `/proc`
    /// says it is a child of `parent` (the board may say anything).
    pub fn read(parent: u32, snap: &PoolSnapshot) -> Cpu {
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let (slots, pid_invalid) = snap
            .slots
            .iter()
            .map(|info| match info.word {
                Ok(w) if info.pid != 0 && w.state != SlotState::Dead => match proc_stat(info.pid) {
                    Some((ppid, t)) if ppid == parent => (Some((t[0], t[1])), false),
                    _ => (None, true),
                },
                Ok(w) => (None, w.state == SlotState::Dead && info.pid != 0),
                Err(_) => (None, false),
            })
            .unzip();
        Cpu { tick, parent: proc_times(parent).unwrap_or_default(), slots, pid_invalid }
    }

    /// Is slot `i`'s pid out of range (see [`Cpu::pid_invalid`])?
    pub fn pid_is_invalid(&self, i: usize) -> bool {
        self.pid_invalid.get(i).copied().unwrap_or(false)
    }

    /// mod_status's `CPUUser`, `CPUSystem`, `CPUChildrenUser`, `CPUChildrenSystem` in seconds:
    /// the parent's and the live children's own time, and the time of the children that exited.
    pub fn seconds(&self) -> [f64; 4] {
        let (u, s) = self
            .slots
            .iter()
            .flatten()
            .fold((0u64, 0u64), |(u, s), (cu, cs)| (u.saturating_add(*cu), s.saturating_add(*cs)));
        let tick = self.ticks_per_second();
        [
            self.parent[0].saturating_add(u) as f64 / tick,
            self.parent[1].saturating_add(s) as f64 / tick,
            self.parent[2] as f64 / tick,
            self.parent[3] as f64 / tick,
        ]
    }

    /// One slot's child's CPU seconds (user + system).
    fn slot_seconds(&self, i: usize) -> Option<f64> {
        let (u, s) = self.slots.get(i).copied().flatten()?;
        Some(u.saturating_add(s) as f64 / self.ticks_per_second())
    }

    /// mod_status's CPU load: all four CPU times as a percentage of `uptime` seconds (`None`
    /// without an uptime).
    fn load_percent(&self, uptime: u64) -> Option<f64> {
        (uptime > 0).then(|| self.seconds().iter().sum::<f64>() / uptime as f64 * 100.0)
    }

    /// `tick`, or Linux's usual 100 where it was not read.
    fn ticks_per_second(&self) -> f64 {
        if self.tick > 0.0 { self.tick } else { 100.0 }
    }
}

/// Apache's `format_byte_out`: bytes in B, kB, MB or GB (one decimal above bytes).
fn human_bytes(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b < 5.0 * KB {
        format!("{bytes} B")
    } else if b < 5.0 * KB * KB {
        format!("{:.1} kB", b / KB)
    } else if b < 5.0 * KB * KB * KB {
        format!("{:.1} MB", b / KB / KB)
    } else {
        format!("{:.1} GB", b / KB / KB / KB)
    }
}

fn loadavg() -> [String; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(str::to_string);
    [it.next().unwrap_or_default(), it.next().unwrap_or_default(), it.next().unwrap_or_default()]
}

/// `?auto`: mod_status's machine-readable report, in Apache's order and formats (with
/// `ExtendedStatus On`, Apache 2.4's default when mod_status is loaded).
pub fn auto(snap: &PoolSnapshot, cpu: &Cpu, server_name: &str, version: &str) -> String {
    let (s, w) = (snap.totals(), snap.workers());
    let up = snap.uptime_s();
    let [l1, l5, l15] = loadavg();
    let mut out = String::new();
    let _ = writeln!(out, "{server_name}");
    let _ = writeln!(out, "ServerVersion: {version}");
    let _ = writeln!(out, "ServerMPM: prefork");
    let _ = writeln!(out, "Server Built: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "CurrentTime: {}", ap_time(snap.now_ms));
    let _ = writeln!(out, "RestartTime: {}", ap_time(snap.restarted_ms));
    let _ = writeln!(out, "ParentServerConfigGeneration: {}", u64::from(snap.generation()) + 1);
    let _ = writeln!(out, "ParentServerMPMGeneration: {}", snap.generation());
    let _ = writeln!(out, "ServerUptimeSeconds: {up}");
    let _ = writeln!(out, "ServerUptime:{}", show_time(up));
    let _ = writeln!(out, "Load1: {l1}\nLoad5: {l5}\nLoad15: {l15}");
    let _ = writeln!(out, "Total Accesses: {}", s.accesses);
    let _ = writeln!(out, "Total kBytes: {}", s.bytes / 1024);
    let _ = writeln!(out, "Total Duration: {}", s.duration_us / 1000);
    let [tu, ts, tcu, tcs] = cpu.seconds();
    let _ = writeln!(out, "CPUUser: {}\nCPUSystem: {}", g(tu), g(ts));
    let _ = writeln!(out, "CPUChildrenUser: {}\nCPUChildrenSystem: {}", g(tcu), g(tcs));
    if let Some(load) = cpu.load_percent(up).filter(|&l| l > 0.0) {
        let _ = writeln!(out, "CPULoad: {}", g(load));
    }
    let _ = writeln!(out, "Uptime: {up}");
    if up > 0 {
        let _ = writeln!(out, "ReqPerSec: {}", g(s.accesses as f64 / up as f64));
        let _ = writeln!(out, "BytesPerSec: {}", g(s.bytes as f64 / up as f64));
    }
    if s.accesses > 0 {
        let _ = writeln!(out, "BytesPerReq: {}", g(s.bytes as f64 / s.accesses as f64));
        let _ = writeln!(out, "DurationPerReq: {}", g(s.duration_us as f64 / 1000.0 / s.accesses as f64));
    }
    let _ = writeln!(out, "BusyWorkers: {}", w.busy);
    let _ = writeln!(out, "GracefulWorkers: {}", w.graceful);
    let _ = writeln!(out, "IdleWorkers: {}", w.idle);
    if let Some(g) = &snap.gate {
        for (key, v) in gate_fields(g) {
            let _ = writeln!(out, "{key}: {v}");
        }
    }
    let _ = writeln!(out, "Scoreboard: {}", snap.letters());
    out
}

/// The gate's counters as `?auto` names them (SPEC.md §15.6).
fn gate_fields(g: &prefork_server::GateSnapshot) -> [(&'static str, u64); 9] {
    [
        ("GateConnections", g.held),
        ("GateQueued", g.queued),
        ("GateTaken", g.counts.taken),
        ("GateHanded", g.counts.handed),
        ("GateFirstByteTimeouts", g.counts.first_byte_timeouts),
        ("GateKeepAliveTimeouts", g.counts.keep_alive_timeouts),
        ("GateHeadTimeouts", g.counts.head_timeouts),
        ("GateShedIdle", g.counts.shed_idle),
        ("GateShedSlowHeads", g.counts.shed_slow_heads),
    ]
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What the HTML page shows besides the summary (mod_status's `?notable` leaves the slot table out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HtmlOptions {
    /// Leave out the per-slot table.
    pub no_table: bool,
}

/// The HTML page, as mod_status's with `ExtendedStatus On`: the summary (version, MPM, build,
/// times, generations, uptime, load, traffic, CPU, rates, workers), the scoreboard grid (64
/// letters a line) with its key, the per-slot table and its column legend; and what Apache does
/// not have: listener queues and watchdog kills.
pub fn html(
    snap: &PoolSnapshot,
    cpu: &Cpu,
    listeners: &[ListenerInfo],
    server_name: &str,
    version: &str,
    options: HtmlOptions,
) -> String {
    let (s, w) = (snap.totals(), snap.workers());
    let up = snap.uptime_s();
    let name = html_escape(server_name);
    let [l1, l5, l15] = loadavg();
    let [tu, ts, tcu, tcs] = cpu.seconds();
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Server Status for {name}</title>\n\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}pre{{font-size:120%}}</style></head><body>\n\
         <h1>Server Status for {name}</h1>\n<p><a href=\"?live\">Live view</a> (charts of the last minutes) \
         - <a href=\"?auto\">?auto</a> - <a href=\"?json\">?json</a></p>\n<dl>\n<dt>Server Version: {}</dt>\n<dt>Server MPM: prefork</dt>\n\
         <dt>Server Built: {}</dt>\n</dl><hr /><dl>\n\
         <dt>Current Time: {}</dt>\n<dt>Restart Time: {}</dt>\n<dt>Parent Server Config. Generation: {}</dt>\n\
         <dt>Parent Server MPM Generation: {}</dt>\n<dt>Server uptime:{}</dt>\n<dt>Server load: {l1} {l5} {l15}</dt>\n\
         <dt>Total accesses: {} - Total Traffic: {} - Total Duration: {}</dt>\n",
        html_escape(version),
        env!("CARGO_PKG_VERSION"),
        ap_time(snap.now_ms),
        ap_time(snap.restarted_ms),
        u64::from(snap.generation()) + 1,
        snap.generation(),
        show_time(up),
        s.accesses,
        human_bytes(s.bytes),
        s.duration_us / 1000,
    );
    let load = cpu.load_percent(up).map_or(String::new(), |l| format!(" - {}% CPU load", g(l)));
    let _ = writeln!(out, "<dt>CPU Usage: u{} s{} cu{} cs{}{load}</dt>", g(tu), g(ts), g(tcu), g(tcs));
    if up > 0 && s.accesses > 0 {
        let _ = writeln!(
            out,
            "<dt>{} requests/sec - {}/second - {}/request - {} ms/request</dt>",
            g(s.accesses as f64 / up as f64),
            human_bytes(s.bytes / up),
            human_bytes(s.bytes / s.accesses),
            g(s.duration_us as f64 / 1000.0 / s.accesses as f64)
        );
    }
    let _ = writeln!(
        out,
        "<dt>{} requests currently being processed, {} idle workers, {} gracefully finishing</dt>\n\
         <dt>Stalled children killed: {} holding the accept lock, {} past request_deadline</dt>\n\
         <dt>Scoreboard: {} slot words repaired, {} children killed for a damaged slot</dt>\n</dl>",
        w.busy,
        w.idle,
        w.graceful,
        snap.watchdog_kills.accept_lock,
        snap.watchdog_kills.request_deadline,
        snap.slots_repaired,
        snap.killed_slot_damaged
    );
    if let Some(g) = &snap.gate {
        let _ = writeln!(
            out,
            "<p>Gate (accept_filter httpready): {} connections held, {} complete requests waiting for a child; \
             {} taken, {} handed to children; closed: {} silent, {} idle kept-alive, {} heads too slow (408), \
             shed {} idle and {} slow heads (the table was full)</p>",
            g.held,
            g.queued,
            g.counts.taken,
            g.counts.handed,
            g.counts.first_byte_timeouts,
            g.counts.keep_alive_timeouts,
            g.counts.head_timeouts,
            g.counts.shed_idle,
            g.counts.shed_slow_heads
        );
    }
    let invalid: Vec<Vec<&str>> = (0..snap.slots.len()).map(|i| invalid_fields(snap, cpu, i)).collect();
    if !snap.out_of_range.is_empty() || invalid.iter().any(|bad| !bad.is_empty()) {
        out.push_str(
            "<p><b>Some values on the scoreboard are out of range and shown as <code>?</code></b>: any child can \
             write this memory; the parent writes what it owns again at its next step.</p>\n",
        );
    }
    if !listeners.is_empty() {
        out.push_str("<table>\n<tr><th>Listener</th><th>Waiting</th><th>Backlog</th></tr>\n");
        for l in listeners {
            let waiting = if l.depth.exact { l.depth.waiting.to_string() } else { format!("&ge;{}", l.depth.waiting) };
            let backlog = l.backlog.map_or("-".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{waiting}</td><td>{backlog}</td></tr>",
                html_escape(&l.address.to_string())
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("<pre>");
    for (i, c) in snap.letters().chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push_str(
        "</pre>\n<p>Scoreboard Key:<br>\n\"<b><code>_</code></b>\" Waiting for Connection,\n\
         \"<b><code>S</code></b>\" Starting up,\n\"<b><code>R</code></b>\" Reading Request,<br>\n\
         \"<b><code>W</code></b>\" Sending Reply,\n\"<b><code>K</code></b>\" Keepalive (read),\n\
         \"<b><code>D</code></b>\" DNS Lookup,<br>\n\"<b><code>C</code></b>\" Closing connection,\n\
         \"<b><code>L</code></b>\" Logging,\n\"<b><code>G</code></b>\" Gracefully finishing,<br>\n\
         \"<b><code>I</code></b>\" Idle cleanup of worker,\n\"<b><code>.</code></b>\" Open slot with no current process</p>\n",
    );
    if options.no_table {
        out.push_str("</body></html>\n");
        return out;
    }
    out.push_str(
        "<table>\n<tr><th>Srv</th><th>PID</th><th>Conn</th><th>Acc</th><th>M</th><th>CPU</th><th>SS</th>\
         <th>Req</th><th>Dur</th><th>Slot</th><th>Wasted</th><th>Killed</th><th>Client</th><th>Request</th></tr>\n",
    );
    for (i, info) in snap.slots.iter().enumerate() {
        let Ok(w) = info.word else {
            let _ = writeln!(out, "<tr><td>{i}</td><td colspan=\"13\">damaged slot</td></tr>");
            continue;
        };
        if w.state == SlotState::Dead && info.connections == 0 && info.killed_for.is_none() {
            continue;
        }
        let shown = |field: &str, text: String| if invalid[i].contains(&field) { "?".to_string() } else { text };
        let killed = match info.killed_for {
            Some(reason) => format!("{reason}, {}s ago", snap.now_ms.saturating_sub(info.killed_ms) / 1000),
            None => "-".to_string(),
        };
        let killed = shown("killed_ms", shown("killed_for", killed));
        let ss = if info.last_used_ms == 0 {
            "-".to_string()
        } else {
            (snap.now_ms.saturating_sub(info.last_used_ms) / 1000).to_string()
        };
        let ss = shown("last_used_ms", ss);
        let cpu_s = cpu.slot_seconds(i).map_or("-".to_string(), |c| format!("{c:.2}"));
        let _ = writeln!(
            out,
            "<tr><td>{i}-{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{cpu_s}</td><td>{ss}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{killed}</td><td>{}</td><td>{}</td></tr>",
            shown("generation", w.generation.to_string()),
            shown(
                "pid",
                if info.pid == 0 || w.state == SlotState::Dead { "-".to_string() } else { info.pid.to_string() }
            ),
            info.connections,
            info.requests,
            w.state.letter(),
            info.last_request_us / 1000,
            info.duration_us / 1000,
            human_bytes(info.bytes),
            info.wasted_wakeups,
            html_escape(&info.client),
            html_escape(&info.request)
        );
    }
    out.push_str(
        "</table>\n<hr />\n<table>\n\
         <tr><th>Srv</th><td>Slot number - generation of its child</td></tr>\n\
         <tr><th>PID</th><td>OS process ID</td></tr>\n\
         <tr><th>Conn</th><td>Connections served in this slot</td></tr>\n\
         <tr><th>Acc</th><td>Requests served in this slot</td></tr>\n\
         <tr><th>M</th><td>Mode of operation (the scoreboard key above)</td></tr>\n\
         <tr><th>CPU</th><td>CPU usage of the child, seconds</td></tr>\n\
         <tr><th>SS</th><td>Seconds since the end of the most recent connection</td></tr>\n\
         <tr><th>Req</th><td>Milliseconds required to process the most recent request</td></tr>\n\
         <tr><th>Dur</th><td>Sum of milliseconds required to process all requests in this slot</td></tr>\n\
         <tr><th>Slot</th><td>Total traffic sent from this slot</td></tr>\n\
         <tr><th>Wasted</th><td>Wake-ups that found no connection to accept (the thundering-herd meter)</td></tr>\n\
         <tr><th>Killed</th><td>The last child the parent killed in this slot, and why: \
         <code>accept_lock</code> (it held the accept lock without accepting while connections waited, \
         accept_lock_timeout_ms), <code>request_deadline</code> (one request kept it busy too long) or \
         <code>slot_damaged</code> (its slot was found damaged again after a repair)</td></tr>\n\
         <tr><th>Client</th><td>Client of the current or last connection</td></tr>\n\
         <tr><th>Request</th><td>The current or last request line</td></tr>\n\
         </table>\n</body></html>\n",
    );
    out
}

/// `?json`.
pub fn json(snap: &PoolSnapshot, cpu: &Cpu, listeners: &[ListenerInfo], server_name: &str, version: &str) -> String {
    let (s, w) = (snap.totals(), snap.workers());
    let slots: Vec<serde_json::Value> = snap
        .slots
        .iter()
        .enumerate()
        .map(|(i, info)| match info.word {
            Ok(w) => {
                let mut slot = serde_json::json!({
                    "slot": i, "pid": info.pid, "generation": w.generation, "state": w.state.name(),
                    "letter": w.state.letter().to_string(), "connections": info.connections,
                    "requests": info.requests, "bytes": info.bytes, "wasted_wakeups": info.wasted_wakeups,
                    "holds_accept_lock": info.holds_lock, "started_ms": info.started_ms,
                    "last_used_ms": info.last_used_ms, "client": info.client, "request": info.request,
                    "killed_for": info.killed_for, "killed_ms": info.killed_ms,
                    "duration_us": info.duration_us, "last_request_us": info.last_request_us,
                    "cpu_seconds": cpu.slot_seconds(i),
                });
                let invalid = invalid_fields(snap, cpu, i);
                if !invalid.is_empty() {
                    slot["invalid"] = serde_json::json!(invalid);
                }
                slot
            }
            Err(_) => serde_json::json!({ "slot": i, "state": "damaged" }),
        })
        .collect();
    let [tu, ts, tcu, tcs] = cpu.seconds();
    let doc = serde_json::json!({
        "server_name": server_name, "server_version": version, "mpm": "prefork",
        "now_ms": snap.now_ms, "started_ms": snap.started_ms, "restarted_ms": snap.restarted_ms,
        "uptime_seconds": snap.uptime_s(), "generation": snap.generation(),
        "spawn_rate": snap.spawn_rate, "spawned_total": snap.spawned_total,
        "exited_total": snap.exited_total, "retired_total": snap.retired_total,
        "total_accesses": s.accesses, "total_kbytes": s.bytes / 1024, "total_connections": s.connections,
        "wasted_wakeups": s.wasted_wakeups, "total_duration_ms": s.duration_us / 1000,
        "cpu": { "user": tu, "system": ts, "children_user": tcu, "children_system": tcs },
        "busy_workers": w.busy, "idle_workers": w.idle,
        "graceful_workers": w.graceful, "scoreboard": snap.letters(),
        "watchdog_kills": {
            "accept_lock": snap.watchdog_kills.accept_lock,
            "request_deadline": snap.watchdog_kills.request_deadline,
        },
        "gate": snap.gate.map(|g| serde_json::json!({
            "pid": g.pid, "connections": g.held, "queued": g.queued, "taken": g.counts.taken, "handed": g.counts.handed,
            "closed": {
                "first_byte_timeout": g.counts.first_byte_timeouts, "keep_alive_timeout": g.counts.keep_alive_timeouts,
                "head_timeout": g.counts.head_timeouts, "shed_idle": g.counts.shed_idle, "shed_slow_head": g.counts.shed_slow_heads,
            },
        })),
        "board": {
            "slots_repaired": snap.slots_repaired,
            "children_killed": snap.killed_slot_damaged,
            "invalid": snap.out_of_range,
        },
        "listeners": listeners.iter().map(|l| serde_json::json!({
            "address": l.address.to_string(), "queue": l.depth.waiting, "queue_exact": l.depth.exact,
            "backlog": l.backlog,
        })).collect::<Vec<_>>(),
        "slots": slots,
    });
    format!("{doc}\n")
}

/// The names of slot `i`'s values that are out of range (the snapshot's checks and the pid's).
fn invalid_fields(snap: &PoolSnapshot, cpu: &Cpu, i: usize) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = snap.slots_out_of_range.get(i).cloned().unwrap_or_default();
    if cpu.pid_is_invalid(i) {
        v.insert(0, "pid");
    }
    v
}

/// OpenMetrics text.
pub fn metrics(snap: &PoolSnapshot, listeners: &[ListenerInfo]) -> String {
    let (s, w) = (snap.totals(), snap.workers());
    let mut by_state = [0usize; 11];
    let mut damaged = 0;
    for (i, _) in snap.slots.iter().enumerate() {
        match snap.view.state(i) {
            Some(st) => by_state[st.code() as usize] += 1,
            None => damaged += 1,
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
    };
    family("prefork_children", "gauge", "Scoreboard slots by state.");
    let mut lines = String::new();
    for st in SlotState::ALL {
        let _ = writeln!(lines, "prefork_children{{state=\"{}\"}} {}", st.name(), by_state[st.code() as usize]);
    }
    let _ = writeln!(lines, "prefork_children{{state=\"damaged\"}} {damaged}");
    out.push_str(&lines);
    let counters = [
        ("prefork_requests", "Requests served.", s.accesses),
        ("prefork_connections", "Connections accepted.", s.connections),
        ("prefork_bytes", "Bytes sent.", s.bytes),
        ("prefork_wasted_wakeups", "Wake-ups that found nothing to accept.", s.wasted_wakeups),
        ("prefork_spawned", "Children forked.", snap.spawned_total),
        ("prefork_exited", "Children reaped (every exit).", snap.exited_total),
        ("prefork_retired", "Children retired because too many were idle.", snap.retired_total),
        (
            "prefork_slots_repaired",
            "Scoreboard slot words the parent wrote back because they did not match its records.",
            snap.slots_repaired,
        ),
        (
            "prefork_killed_slot_damaged",
            "Children killed because their scoreboard slot was damaged again after a repair.",
            snap.killed_slot_damaged,
        ),
    ];
    let _ = writeln!(
        out,
        "# TYPE prefork_request_duration_seconds counter\n# HELP prefork_request_duration_seconds Time spent on requests.\n\
         prefork_request_duration_seconds_total {}",
        s.duration_us as f64 / 1e6
    );
    let kills =
        [("accept_lock", snap.watchdog_kills.accept_lock), ("request_deadline", snap.watchdog_kills.request_deadline)];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n# HELP {name} {help}\n{name}_total {v}");
    }
    let _ = writeln!(
        out,
        "# TYPE prefork_watchdog_kills counter\n# HELP prefork_watchdog_kills Stalled children the watchdog killed, by reason."
    );
    for (reason, v) in kills {
        let _ = writeln!(out, "prefork_watchdog_kills_total{{reason=\"{reason}\"}} {v}");
    }
    let gauges = [
        ("prefork_spawn_rate", "Current spawn rate of the spare-server policy.", snap.spawn_rate),
        ("prefork_generation", "Running generation.", u64::from(snap.generation())),
        ("prefork_uptime_seconds", "Seconds since the parent started.", snap.uptime_s()),
        ("prefork_busy_workers", "BusyWorkers as mod_status counts them.", w.busy as u64),
        ("prefork_idle_workers", "IdleWorkers as mod_status counts them.", w.idle as u64),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n# HELP {name} {help}\n{name} {v}");
    }
    if let Some(g) = &snap.gate {
        let _ = writeln!(
            out,
            "# TYPE prefork_gate_connections gauge\n# HELP prefork_gate_connections Connections the gate holds.\n\
             prefork_gate_connections {}\n\
             # TYPE prefork_gate_queued gauge\n# HELP prefork_gate_queued Complete request heads waiting for a child.\n\
             prefork_gate_queued {}\n\
             # TYPE prefork_gate_taken counter\n# HELP prefork_gate_taken Connections the gate took.\n\
             prefork_gate_taken_total {}\n\
             # TYPE prefork_gate_handed counter\n# HELP prefork_gate_handed Complete heads handed to children.\n\
             prefork_gate_handed_total {}\n\
             # TYPE prefork_gate_closed counter\n# HELP prefork_gate_closed Connections the gate closed, by reason.",
            g.held, g.queued, g.counts.taken, g.counts.handed
        );
        for (reason, v) in [
            ("first_byte_timeout", g.counts.first_byte_timeouts),
            ("keep_alive_timeout", g.counts.keep_alive_timeouts),
            ("head_timeout", g.counts.head_timeouts),
            ("shed_idle", g.counts.shed_idle),
            ("shed_slow_head", g.counts.shed_slow_heads),
        ] {
            let _ = writeln!(out, "prefork_gate_closed_total{{reason=\"{reason}\"}} {v}");
        }
    }
    let queues: Vec<(String, (u32, u32))> = listeners
        .iter()
        .filter(|l| l.depth.exact)
        .filter_map(|l| Some((l.address.to_string(), (l.depth.waiting, l.backlog?))))
        .collect();
    if !queues.is_empty() {
        let _ = writeln!(
            out,
            "# TYPE prefork_listen_queue gauge\n# HELP prefork_listen_queue Connections waiting to be accepted."
        );
        for (l, (q, _)) in &queues {
            let _ = writeln!(out, "prefork_listen_queue{{listener=\"{l}\"}} {q}");
        }
        let _ = writeln!(out, "# TYPE prefork_listen_backlog gauge\n# HELP prefork_listen_backlog The listen backlog.");
        for (l, (_, b)) in &queues {
            let _ = writeln!(out, "prefork_listen_backlog{{listener=\"{l}\"}} {b}");
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_arguments_are_found_as_mod_status_finds_them() {
        let q = StatusQuery::parse;
        assert_eq!(q(""), StatusQuery::default());
        assert!(q("auto").auto && q("auto=1").auto && q("refresh=5&auto").auto && q("x=1&auto").auto);
        assert_eq!(q("refresh=5&auto").refresh, Some(5));
        assert_eq!(q("refresh").refresh, Some(10));
        assert_eq!(q("refresh=0").refresh, Some(10));
        assert_eq!(q("refresh=x").refresh, Some(10));
        assert_eq!(q("refresh=99999999999999999999999").refresh, Some(86_400));
        assert!(q("notable").no_table && q("json").json && !q("json").auto);
    }

    #[test]
    fn traffic_in_human_units_and_cpu_from_proc() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(5119), "5119 B");
        assert_eq!(human_bytes(5120), "5.0 kB");
        assert_eq!(human_bytes(10 << 20), "10.0 MB");
        assert_eq!(human_bytes(6 << 30), "6.0 GB");
        // This process's own line: four numbers, the command name notwithstanding.
        let own = proc_times(std::process::id()).expect("/proc/<pid>/stat");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let later = proc_times(std::process::id()).unwrap();
        assert!(later[0] + later[1] >= own[0] + own[1]);
        assert_eq!(proc_times(u32::MAX), None);
    }

    /// A scribbled board renders without a panic, and without lying: a future generation or time,
    /// an unknown kill code, a pid that is not a child of the parent (by /proc), a pid in an empty
    /// slot and a header out of range are shown as invalid.
    #[test]
    fn values_out_of_range_are_shown_as_invalid() {
        use prefork_core::scoreboard::SlotTable;
        use prefork_core::slot::SlotWord;
        use prefork_server::shm::Scoreboard;
        use std::sync::atomic::Ordering;
        let board = Scoreboard::create(3, 1, 1_000).unwrap();
        board.publish_generation(2);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let future = now + 3_600_000;
        let me = std::process::id();
        let r0 = board.record(0);
        r0.word.store(SlotWord { state: SlotState::Ready, incarnation: 1, generation: 9 }.encode(), Ordering::Relaxed);
        r0.pid.store(u64::from(me), Ordering::Relaxed); // this test process: not a child of pid 1's
        r0.started_ms.store(future, Ordering::Relaxed);
        r0.killed_for.store(77, Ordering::Relaxed);
        board.record(1).word.store(0, Ordering::Relaxed);
        board.record(1).pid.store(4242, Ordering::Relaxed); // a pid in an empty slot
        board.record(1).connections.store(1, Ordering::Relaxed);
        board.header().spawn_rate.store(3, Ordering::Relaxed);
        board.header().restarted_ms.store(5, Ordering::Relaxed); // before the start
        let snap = PoolSnapshot::take(&board);
        let cpu = Cpu::read(std::os::unix::process::parent_id() + 1, &snap);
        let j: serde_json::Value = serde_json::from_str(&json(&snap, &cpu, &[], "s", "v")).unwrap();
        assert_eq!(
            j["slots"][0]["invalid"],
            serde_json::json!(["pid", "generation", "started_ms", "killed_for"]),
            "{}",
            j["slots"][0]
        );
        assert_eq!(j["slots"][1]["invalid"], serde_json::json!(["pid"]));
        assert_eq!(j["slots"][2].get("invalid"), None, "a clean slot lists nothing");
        assert_eq!(j["board"]["invalid"], serde_json::json!(["restarted_ms", "spawn_rate"]));
        assert_eq!(cpu.slot_seconds(0), None, "nothing is read of a process that is not a child");
        let page = html(&snap, &cpu, &[], "s", "v", HtmlOptions::default());
        assert!(page.contains("out of range and shown as <code>?</code>"), "{page}");
        assert!(page.contains("<tr><td>0-?</td><td>?</td>"), "{page}");
        // This process, seen from its own parent, is a valid pid.
        let cpu = Cpu::read(std::os::unix::process::parent_id(), &snap);
        assert!(!cpu.pid_is_invalid(0) && cpu.slot_seconds(0).is_some());
    }

    #[test]
    fn g_formats_like_c() {
        assert_eq!(g(0.0813333), ".0813333");
        assert_eq!(g(0.01), ".01");
        assert_eq!(g(-0.5), "-.5");
        assert_eq!(g(512.0), "512");
        assert_eq!(g(41.6), "41.6");
        assert_eq!(g(0.0), "0");
    }

    #[test]
    fn times_as_apache_prints_them() {
        assert_eq!(show_time(0), "");
        assert_eq!(show_time(123), " 2 minutes 3 seconds");
        assert_eq!(show_time(90_061), " 1 day 1 hour 1 minute 1 second");
        assert_eq!(ap_time(1_795_614_311_000), "Wednesday, 25-Nov-2026 13:45:11 UTC");
    }

    #[test]
    fn counts_follow_mod_status_and_auto_has_apaches_fields() {
        use prefork_core::scoreboard::{ChildSlot, SlotTable};
        use prefork_server::Scoreboard;
        use std::sync::atomic::Ordering;
        let board = Scoreboard::create(6, 1, 0).unwrap();
        board.publish_generation(1);
        let spawn = |i: usize, generation: u32, states: &[SlotState]| {
            let w = board.slot(i).unwrap().spawn(generation).unwrap();
            let c = ChildSlot::attach(&board, i, w).unwrap();
            for &s in states {
                c.set(s).unwrap();
            }
        };
        spawn(0, 1, &[SlotState::Ready]);
        spawn(1, 1, &[SlotState::Ready, SlotState::BusyRead, SlotState::BusyWrite]);
        spawn(2, 0, &[SlotState::Ready]); // an old generation's ready child counts busy
        spawn(3, 1, &[]);
        spawn(4, 0, &[SlotState::Ready]);
        board.slot(4).unwrap().mark_graceful().unwrap();
        board.record(1).requests.store(10, Ordering::Relaxed);
        board.record(1).bytes.store(5 * 1024, Ordering::Relaxed);
        board.record(1).duration_us.store(25_000, Ordering::Relaxed);
        board.record(3).killed_for.store(2, Ordering::Relaxed); // request_deadline
        board.record(3).killed_ms.store(1, Ordering::Relaxed);
        board.header().killed_accept_lock.store(4, Ordering::Relaxed);
        let snap = PoolSnapshot::take(&board);
        let (s, w) = (snap.totals(), snap.workers());
        assert_eq!((w.busy, w.idle, w.graceful, s.accesses), (2, 1, 1, 10));
        let cpu = Cpu {
            tick: 100.0,
            parent: [100, 50, 300, 200],
            slots: vec![Some((25, 25)), None, None, None, None, None],
            pid_invalid: vec![],
        };
        assert_eq!(cpu.seconds(), [1.25, 0.75, 3.0, 2.0]);
        let text = auto(&snap, &cpu, "localhost", "preforkd/0.1");
        for field in [
            "Total Duration: 25",
            "CPUUser: 1.25",
            "CPUSystem: .75",
            "CPUChildrenUser: 3",
            "CPUChildrenSystem: 2",
            "DurationPerReq: 2.5",
            "ServerMPM: prefork",
            "Total Accesses: 10",
            "Total kBytes: 5",
            "BusyWorkers: 2",
            "GracefulWorkers: 1",
            "IdleWorkers: 1",
            "Scoreboard: _W_SG.",
            "ParentServerMPMGeneration: 1",
            "BytesPerReq: 512",
        ] {
            assert!(text.lines().any(|l| l == field), "{field} missing in\n{text}");
        }
        assert!(text.starts_with("localhost\nServerVersion: preforkd/0.1\n"));
        // Apache's order (mod_status.c, short report with ExtendedStatus).
        let order = [
            "ServerVersion",
            "ServerMPM",
            "Server Built",
            "CurrentTime",
            "RestartTime",
            "ParentServerConfigGeneration",
            "ParentServerMPMGeneration",
            "ServerUptimeSeconds",
            "ServerUptime",
            "Load1",
            "Load5",
            "Load15",
            "Total Accesses",
            "Total kBytes",
            "Total Duration",
            "CPUUser",
            "CPUSystem",
            "CPUChildrenUser",
            "CPUChildrenSystem",
            "CPULoad",
            "Uptime",
            "ReqPerSec",
            "BytesPerSec",
            "BytesPerReq",
            "DurationPerReq",
            "BusyWorkers",
            "GracefulWorkers",
            "IdleWorkers",
            "Scoreboard",
        ];
        let keys: Vec<&str> = text.lines().skip(1).filter_map(|l| l.split_once(':').map(|(k, _)| k)).collect();
        assert!(snap.uptime_s() > 0, "the rates are printed only with an uptime");
        assert_eq!(keys, order, "{text}");
        let j: serde_json::Value = serde_json::from_str(&json(&snap, &cpu, &[], "localhost", "v")).unwrap();
        assert_eq!(j["busy_workers"], 2);
        assert_eq!(j["slots"][1]["letter"], "W");
        assert_eq!(j["slots"][3]["killed_for"], "request_deadline");
        assert_eq!(j["slots"][0]["killed_for"], serde_json::Value::Null);
        assert_eq!(j["watchdog_kills"]["accept_lock"], 4);
        let m = metrics(&snap, &[]);
        assert!(m.contains("prefork_children{state=\"graceful\"} 1") && m.ends_with("# EOF\n"), "{m}");
        assert!(m.contains("prefork_watchdog_kills_total{reason=\"accept_lock\"} 4"), "{m}");
        assert_eq!(j["total_duration_ms"], 25);
        assert_eq!(j["slots"][0]["cpu_seconds"], 0.5);
        assert_eq!(j["cpu"]["children_user"], 3.0);
        let page = html(&snap, &cpu, &[], "<x>", "v", HtmlOptions::default());
        assert!(page.contains("Server Status for &lt;x&gt;"));
        for line in [
            "<dt>Server load: ",
            "<dt>CPU Usage: u1.25 s.75 cu3 cs2 - ",
            "Total Traffic: 5.0 kB - Total Duration: 25",
            "<dt>Parent Server Config. Generation: 2</dt>",
            "<th>Req</th><td>Milliseconds required",
        ] {
            assert!(page.contains(line), "{line} missing in {page}");
        }
        let short = html(&snap, &cpu, &[], "x", "v", HtmlOptions { no_table: true });
        assert!(!short.contains("<th>Srv</th>") && short.contains("Scoreboard Key"));
        assert!(page.contains("<td>request_deadline, "), "{page}");
        assert!(page.contains("Stalled children killed: 4 holding the accept lock, 0 past request_deadline"));
    }
}
