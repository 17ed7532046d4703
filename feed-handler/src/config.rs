//! `feed-handler run --config FILE`: the TOML configuration. Every knob, its default and its
//! unit is documented here and in `docs/configuration.md`. An invalid file is an error that
//! names the field and the problem.
//!
//! ```toml
//! ring = "itch"                 # ring name under /dev/shm, or a path
//! ring_capacity = 1048576       # slots (128 bytes each), rounded up to a power of two
//! journal = true                # also append every record to <ring>.journal
//! journal_preallocate_mb = 0    # journal space allocated at start (128 bytes a message)
//! journal_max_mb = 0            # the journal stops at this size (0: no cap)
//! journal_min_free_mb = 1024    # ... or before it leaves less free on its filesystem
//!                               # (default: 1024, or a tenth of the filesystem if less)
//! core = 1                      # pin the receive thread to this CPU (omit: not pinned)
//! idle = "busy-spin"            # busy-spin | yield | park
//! park_us = 50                  # with idle = "park": longest sleep in poll(2) while a hole
//!                               # waits for the other line or a re-request, µs
//! park_quiet_us = 1000          # with idle = "park": longest sleep when nothing waits, µs
//! batch = 64                    # datagrams per recvmmsg call
//! rcvbuf_bytes = 16777216       # SO_RCVBUF of each multicast and re-request socket
//! measure_latency = false       # histogram of wire-to-ring latency (one clock read a message)
//!
//! [[channel]]
//! name = "nasdaq"
//! id = 0                        # channel number in ring records (default: its index)
//! session = "GEN0000001"        # expected MoldUDP64 session (omit: learn from the first packet)
//! start_seq = 1                 # first sequence to deliver (omit: the first one seen)
//! line_a = { group = "239.100.1.1", port = 26400, interface = "127.0.0.1" }
//! line_b = { group = "239.100.1.2", port = 26401, interface = "127.0.0.1" }
//! rerequest = "127.0.0.1:26500" # MoldUDP64 re-request server (omit: no recovery)
//! line_wait_us = 200            # how long a hole waits for the other line
//! request_timeout_ms = 50       # how long to wait for a re-request reply
//! request_retries = 3           # retries before a range is declared lost
//! max_request = 48              # messages per request
//! max_outstanding = 10000       # messages requested and not yet received
//! window = 8192                 # out-of-order packets held
//! breaker_gap_rate = 0.05       # a line with more than this share of packets after a
//! breaker_window_s = 60         #   gap, over this window, is marked unhealthy
//! ```

use crate::arbiter::ArbConfig;
use crate::moldudp64::Session;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// How the receive thread waits when there is nothing to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Idle {
    /// Spin on the sockets (lowest latency, one core at 100%).
    BusySpin,
    /// `sched_yield` between empty polls.
    Yield,
    /// Sleep in `poll(2)` until a socket is readable or `park_us` passes.
    Park,
}

/// One multicast line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Multicast group.
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// Address of the interface to join on (127.0.0.1 for loopback).
    #[serde(default = "loopback")]
    pub interface: Ipv4Addr,
}

fn loopback() -> Ipv4Addr {
    Ipv4Addr::LOCALHOST
}

/// One feed channel (one venue): lines A and B, its session and its recovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name in counters and logs.
    pub name: String,
    /// Channel number written in ring records (default: index in the file).
    pub id: Option<u16>,
    /// Expected session.
    pub session: Option<String>,
    /// First sequence to deliver.
    pub start_seq: Option<u64>,
    /// Line A.
    pub line_a: LineConfig,
    /// Line B (optional: a single-line feed).
    pub line_b: Option<LineConfig>,
    /// Re-request server.
    pub rerequest: Option<SocketAddrV4>,
    /// µs a hole waits for the other line (default 200).
    #[serde(default = "d_line_wait")]
    pub line_wait_us: u64,
    /// ms to wait for a re-request reply (default 50).
    #[serde(default = "d_timeout")]
    pub request_timeout_ms: u64,
    /// Retries before a range is lost (default 3).
    #[serde(default = "d_retries")]
    pub request_retries: u32,
    /// Messages per request (default 48).
    #[serde(default = "d_max_request")]
    pub max_request: u16,
    /// Messages outstanding (default 10000).
    #[serde(default = "d_max_outstanding")]
    pub max_outstanding: u64,
    /// Out-of-order packets held (default 8192).
    #[serde(default = "d_window")]
    pub window: usize,
    /// Circuit breaker threshold: share of a line's packets that follow a gap (default 0.05).
    #[serde(default = "d_gap_rate")]
    pub breaker_gap_rate: f64,
    /// Circuit breaker window, seconds (default 60).
    #[serde(default = "d_breaker_window")]
    pub breaker_window_s: u64,
}

fn d_line_wait() -> u64 {
    200
}
fn d_timeout() -> u64 {
    50
}
fn d_retries() -> u32 {
    3
}
fn d_max_request() -> u16 {
    48
}
fn d_max_outstanding() -> u64 {
    10_000
}
fn d_window() -> usize {
    8192
}
fn d_gap_rate() -> f64 {
    0.05
}
fn d_breaker_window() -> u64 {
    60
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ring name or path (default "itch").
    #[serde(default = "d_ring")]
    pub ring: String,
    /// Ring slots (default 1,048,576 = 128 MiB).
    #[serde(default = "d_capacity")]
    pub ring_capacity: u64,
    /// Keep a journal (default true).
    #[serde(default = "d_true")]
    pub journal: bool,
    /// Journal space allocated at start, MiB (default 0: allocated as it grows). 128 bytes a
    /// message: 1,280 MiB holds 10M messages.
    #[serde(default)]
    pub journal_preallocate_mb: u64,
    /// The journal stops at this size, MiB (default 0: no cap but `journal_min_free_mb`); the
    /// ring goes on without it.
    #[serde(default)]
    pub journal_max_mb: u64,
    /// The journal stops rather than leave less than this free on its filesystem, MiB
    /// (default: 1,024, or a tenth of the filesystem if that is less).
    pub journal_min_free_mb: Option<u64>,
    /// CPU to pin the receive thread to.
    pub core: Option<usize>,
    /// Idle strategy (default busy-spin).
    #[serde(default = "d_idle")]
    pub idle: Idle,
    /// Longest park while a channel has timers running (a hole waiting for the other line or
    /// for a re-request reply), µs (default 50).
    #[serde(default = "d_park")]
    pub park_us: u64,
    /// Longest park when no channel has a timer running, µs (default 1,000): a quiet feed
    /// handler wakes this often (counters, stop flag) instead of every `park_us`.
    #[serde(default = "d_park_quiet")]
    pub park_quiet_us: u64,
    /// Datagrams per recvmmsg (default 64).
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// SO_RCVBUF asked for each multicast and re-request socket, bytes (default 16 MiB).
    #[serde(default = "d_rcvbuf")]
    pub rcvbuf_bytes: usize,
    /// Record wire-to-ring latency of every message in an HDR histogram (default false: costs
    /// one clock read per message; for benchmarks and diagnosis).
    #[serde(default)]
    pub measure_latency: bool,
    /// The channels.
    pub channel: Vec<ChannelConfig>,
}

fn d_ring() -> String {
    "itch".into()
}
fn d_capacity() -> u64 {
    1 << 20
}
fn d_true() -> bool {
    true
}
fn d_idle() -> Idle {
    Idle::BusySpin
}
fn d_park() -> u64 {
    50
}
fn d_park_quiet() -> u64 {
    1000
}
fn d_batch() -> usize {
    64
}
fn d_rcvbuf() -> usize {
    16 << 20
}

impl Config {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        let bad = |field: String, problem: &str| Err(format!("{field}: {problem}"));
        if self.channel.is_empty() {
            return bad("channel".into(), "at least one [[channel]] is needed");
        }
        if self.ring.is_empty() {
            return bad("ring".into(), "must not be empty");
        }
        if !(2..=1 << 30).contains(&self.ring_capacity) {
            return bad("ring_capacity".into(), "must be between 2 and 2^30 slots");
        }
        if self.journal_max_mb > 0 && self.journal_preallocate_mb > self.journal_max_mb {
            return bad(
                "journal_preallocate_mb".into(),
                &format!(
                    "{} is more than journal_max_mb ({})",
                    self.journal_preallocate_mb, self.journal_max_mb
                ),
            );
        }
        for (name, mb) in [
            ("journal_preallocate_mb", self.journal_preallocate_mb),
            ("journal_max_mb", self.journal_max_mb),
            ("journal_min_free_mb", self.journal_min_free_mb.unwrap_or(0)),
        ] {
            if mb > 1 << 30 {
                return bad(name.into(), "must be at most 2^30 MiB");
            }
        }
        if !(1..=1024).contains(&self.batch) {
            return bad("batch".into(), "must be between 1 and 1024 datagrams");
        }
        // a sleep longer than this leaves the arbiter's timers and the stop flag unseen for as long
        for (name, us) in [
            ("park_us", self.park_us),
            ("park_quiet_us", self.park_quiet_us),
        ] {
            if us > 1_000_000 {
                return bad(name.into(), "must be at most 1,000,000 µs (1 s)");
            }
        }
        if let Some(core) = self.core {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            if core >= n {
                return bad(
                    "core".into(),
                    &format!("CPU {core} does not exist (this machine has {n})"),
                );
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut ports = std::collections::BTreeSet::new();
        for (i, ch) in self.channel.iter().enumerate() {
            let at = |f: &str| format!("channel[{i}] ({}).{f}", ch.name);
            if !ids.insert(ch.id.unwrap_or(i as u16)) {
                return bad(at("id"), "two channels have the same id");
            }
            if let Some(s) = &ch.session
                && Session::new(s).is_none()
            {
                return bad(
                    at("session"),
                    "a MoldUDP64 session is at most 10 characters",
                );
            }
            for (name, line) in [("line_a", Some(ch.line_a)), ("line_b", ch.line_b)] {
                let Some(l) = line else { continue };
                if !l.group.is_multicast() {
                    return bad(
                        at(&format!("{name}.group")),
                        &format!("{} is not a multicast address", l.group),
                    );
                }
                if l.port == 0 {
                    return bad(at(&format!("{name}.port")), "must not be 0");
                }
                if !ports.insert((l.group, l.port)) {
                    return bad(
                        at(&format!("{name}.port")),
                        "the same group and port are used twice",
                    );
                }
            }
            if ch.window == 0 || ch.window > 1 << 16 {
                return bad(at("window"), "must be between 1 and 65536 packets");
            }
            if ch.max_request == 0 {
                return bad(at("max_request"), "must be at least 1");
            }
            if !(0.0..=1.0).contains(&ch.breaker_gap_rate) {
                return bad(at("breaker_gap_rate"), "must be a share between 0 and 1");
            }
            // one bucket a second is allocated: a day at most
            if !(1..=86_400).contains(&ch.breaker_window_s) {
                return bad(
                    at("breaker_window_s"),
                    "must be between 1 and 86,400 seconds (a day)",
                );
            }
            // in ns they must fit the arbiter's clock arithmetic, and longer waits mean nothing
            if ch.line_wait_us > 10_000_000 {
                return bad(at("line_wait_us"), "must be at most 10,000,000 µs (10 s)");
            }
            if ch.request_timeout_ms > 3_600_000 {
                return bad(
                    at("request_timeout_ms"),
                    "must be at most 3,600,000 ms (an hour)",
                );
            }
        }
        Ok(())
    }
}

impl ChannelConfig {
    /// The arbiter's settings.
    pub fn arbiter(&self) -> ArbConfig {
        ArbConfig {
            session: self.session.as_deref().and_then(Session::new),
            start_seq: self.start_seq,
            window_slots: self.window,
            line_wait_ns: self.line_wait_us * 1000,
            recovery: self.rerequest.is_some(),
            request_timeout_ns: self.request_timeout_ms * 1_000_000,
            max_retries: self.request_retries,
            max_request: self.max_request,
            max_outstanding: self.max_outstanding,
            ..ArbConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        ring = "t"
        [[channel]]
        name = "nasdaq"
        line_a = { group = "239.100.1.1", port = 26400 }
        line_b = { group = "239.100.1.2", port = 26401, interface = "127.0.0.1" }
        rerequest = "127.0.0.1:26500"
    "#;

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            (c.ring_capacity, c.journal, c.idle, c.batch),
            (1 << 20, true, Idle::BusySpin, 64)
        );
        assert_eq!((c.journal_max_mb, c.journal_min_free_mb), (0, None));
        let ch = &c.channel[0];
        assert_eq!(
            (
                ch.line_wait_us,
                ch.request_timeout_ms,
                ch.request_retries,
                ch.window
            ),
            (200, 50, 3, 8192)
        );
        assert_eq!(ch.line_a.interface, Ipv4Addr::LOCALHOST);
        let a = ch.arbiter();
        assert!(a.recovery);
        assert_eq!(a.request_timeout_ns, 50_000_000);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("239.100.1.1", "10.0.0.1"),
                "channel[0] (nasdaq).line_a.group: 10.0.0.1 is not a multicast address",
            ),
            (
                GOOD.replace("port = 26400", "port = 0"),
                "line_a.port: must not be 0",
            ),
            (GOOD.replace("port = 26400", "port = 70000"), "port"),
            (
                GOOD.replace("ring = \"t\"", "ring = \"t\"\nidle = \"nap\""),
                "idle",
            ),
            (
                GOOD.replace("ring = \"t\"", "ring = \"t\"\nbogus = 1"),
                "bogus",
            ),
            (
                GOOD.replace(
                    "name = \"nasdaq\"",
                    "name = \"nasdaq\"\nsession = \"ELEVENCHARS\"",
                ),
                "session: a MoldUDP64 session is at most 10",
            ),
            (
                GOOD.replace("26401", "26400")
                    .replace("239.100.1.2", "239.100.1.1"),
                "used twice",
            ),
            (
                "ring = \"x\"\nchannel = []".to_string(),
                "at least one [[channel]]",
            ),
            (
                GOOD.replace("ring = \"t\"", "ring = \"t\"\ncore = 999"),
                "core: CPU 999 does not exist",
            ),
            (
                GOOD.replace(
                    "ring = \"t\"",
                    "ring = \"t\"\njournal_max_mb = 64\njournal_preallocate_mb = 128",
                ),
                "journal_preallocate_mb: 128 is more than journal_max_mb (64)",
            ),
            (
                GOOD.replace(
                    "ring = \"t\"",
                    "ring = \"t\"\njournal_min_free_mb = 9999999999",
                ),
                "journal_min_free_mb: must be at most 2^30 MiB",
            ),
            // each of these overflowed a u64 of ns, or allocated a bucket a second, unchecked
            (
                GOOD.replace(
                    "rerequest =",
                    "line_wait_us = 18446744073709551\nrerequest =",
                ),
                "line_wait_us: must be at most",
            ),
            (
                GOOD.replace(
                    "rerequest =",
                    "request_timeout_ms = 18446744073710\nrerequest =",
                ),
                "request_timeout_ms: must be at most",
            ),
            (
                GOOD.replace(
                    "rerequest =",
                    "breaker_window_s = 1000000000000\nrerequest =",
                ),
                "breaker_window_s: must be between 1 and 86,400",
            ),
            (
                GOOD.replace("ring = \"t\"", "ring = \"t\"\npark_us = 5000000"),
                "park_us: must be at most",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }
}
