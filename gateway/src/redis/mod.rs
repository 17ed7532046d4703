//! Quotes through Redis, for gateways far from the exchange: a publisher beside `book` writes
//! every quote change into Redis, and a gateway with `--source redis://...` keeps a local replica
//! of the quotes it serves. Redis is a single server or a Redis Cluster (sharded pub/sub).
//!
//! What is in Redis (prefix `P`, `quotes` by default; `SYM` a symbol without padding):
//!
//! ```text
//!  key      P:{SYM}        the latest quote: 8 bytes publish time (ns since the epoch, LE; strictly
//!                          increasing per publisher) + 128 bytes Quote::to_bytes (book::quotes)
//!  channel  P:{SYM}        the same bytes on every change: PUBLISH, or SPUBLISH in a cluster
//!                          (the hash tag puts the key and its channel on one node)
//!  list     P:{SYM}:bars:1, P:{SYM}:bars:60   the latest 600 closed 1 s and 1 min bars of
//!                          every venue, 72 bytes each (the book's bar log record, whose
//!                          channel is the venue), oldest first
//!  hash     P:{SYM}:bars:1:newest, P:{SYM}:bars:60:newest   per venue (field: its channel)
//!                          "DAY START": the trading day (days since the epoch) and start of
//!                          its newest bar in the list (publish::barsync)
//!  channel  P:{SYM}:bars   each bar as it is appended (a revision, flagged, replaces the bar
//!                          with its start: book::barlog::apply)
//!  hash     P:{SYM}:venues the symbol's latest quote on each venue (the book's per-venue table,
//!                          for `/v1/venues`): field the venue's channel number, value as above
//!  channel  P:{SYM}:venues the same values on every change of one venue's quote
//!  channel  P:new          SYM, the first time the publisher writes a symbol (broadcast)
//!  key      P:barlog       "LOG OFFSET": the book's bar log (when it was begun, ns) and the
//!                          offset of its first record not yet in the lists (publish::barsync)
//!  key      P:publisher    the publisher that writes (host:pid:start_ns), a lease of 1.5 s renewed
//!                          with each heartbeat: a second publisher waits until it lapses
//!  channel  P:heartbeat    "EPOCH_NS SENT_NS MAP_ID RESTORING MAP" every 250 ms (broadcast);
//!                          EPOCH_NS is when the publisher last (re)connected and began
//!                          rewriting every key, MAP_ID the slot map it writes by (cluster node
//!                          IDs hashed; 0: one server), RESTORING 1 while bar lists may lack
//!                          bars that will go in unpublished (a restore, or the check for one
//!                          after a (re)connection) and 0 otherwise, MAP that map,
//!                          `FIRST-LAST:NODE,...` (NODE a node ID hashed, hex; left out past
//!                          512 runs of slots)
//! ```
//!
//! Trust: a replica shows a quote fresh only when the quote itself is not stale, its node's link
//! is up, a heartbeat came through that link since it (re)connected and within the timeout, the
//! value arrived through that link since it (re)connected, it was published at or after the
//! heartbeat's epoch (so values left in a restarted Redis by a dead publisher never show fresh),
//! the link is the one of the node that serves the quote's slot in the replica's slot map, and
//! the publisher's latest heartbeat puts that slot on the same node (so after a failover, or
//! while slots move, a slot that changed node shows nothing fresh until the publisher has
//! written it on the new map, while the other slots stay fresh). A quote whose slot changed
//! node is confirmed again only by a value that arrives after the change.
//!
//! - [`resp`]: the wire protocol (fuzzed).
//! - [`cluster`]: addresses, hash slots, the cluster's slot map.
//! - [`conn`]: one pipelined blocking connection.
//! - [`publish`]: the publisher; its lease in `lease`, its bars in `bars` (what the replies to a
//!   bar's write decide in `barfate`; where the bar log stands in Redis, and which bars a list
//!   has already, in `barsync`, its I/O in `barpos`).
//! - [`replica`]: the gateway-side replica and its quote source; its threads in `link` (their
//!   chart loads in `barload`), its bar log in `mirror`, its trust rule in [`trust`].
//! - [`server`]: real redis-server processes for the tests and the benchmark.

mod barload;
pub mod cluster;
pub mod conn;
mod link;
pub mod mirror;
pub mod publish;
pub mod replica;
pub mod resp;
pub mod server;
pub mod tls;
pub mod trust;

use book::quotes::{Quote, SLOT};
use cluster::Topology;
use conn::Conn;
use std::net::SocketAddr;
use std::time::Duration;

/// Bytes of a value: publish time and the quote.
pub const VALUE_LEN: usize = 8 + SLOT;

/// Heartbeat interval of the publisher, ns.
pub const HEARTBEAT_NS: u64 = 250_000_000;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    /// The key (and channel) of a symbol.
    pub fn quote(&self, sym: &str) -> String {
        format!("{}:{{{sym}}}", self.prefix)
    }
    /// The symbol of a quote key or channel, if it is one.
    pub fn symbol_of<'a>(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        let rest = key
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":{")?;
        let sym = rest.strip_suffix(b"}")?;
        (!sym.is_empty() && sym.len() <= 8 && !sym.contains(&b'}')).then_some(sym)
    }
    /// The list of a symbol's latest bars of one interval (1 or 60 s).
    pub fn bars(&self, sym: &str, interval_s: u8) -> String {
        format!("{}:{{{sym}}}:bars:{interval_s}", self.prefix)
    }
    /// Per venue (field: its channel), the trading day and start of its newest bar in a
    /// symbol's list of one interval, `DAY START` (publish::barsync).
    pub fn bars_newest(&self, sym: &str, interval_s: u8) -> String {
        format!("{}:{{{sym}}}:bars:{interval_s}:newest", self.prefix)
    }
    /// The channel of a symbol's bars.
    pub fn bars_channel(&self, sym: &str) -> String {
        format!("{}:{{{sym}}}:bars", self.prefix)
    }
    /// The symbol of a bars channel, if it is one.
    pub fn symbol_of_bars<'a>(&self, ch: &'a [u8]) -> Option<&'a [u8]> {
        self.symbol_of(ch.strip_suffix(b":bars")?)
    }
    /// The hash of a symbol's quote on each venue (field: the venue's channel number) and the
    /// channel its changes go on.
    pub fn venues(&self, sym: &str) -> String {
        format!("{}:{{{sym}}}:venues", self.prefix)
    }
    /// The symbol of a venues channel, if it is one.
    pub fn symbol_of_venues<'a>(&self, ch: &'a [u8]) -> Option<&'a [u8]> {
        self.symbol_of(ch.strip_suffix(b":venues")?)
    }
    /// The pattern matching every quote key (for SCAN).
    pub fn pattern(&self) -> String {
        format!("{}:{{*}}", self.prefix)
    }
    /// New-symbol announcements.
    pub fn new_symbols(&self) -> String {
        format!("{}:new", self.prefix)
    }
    /// The venue (feed channel) names, one a line in channel order, as the feed handler beside
    /// the publisher calls them: remote gateways' `/v1/symbols` names the venues with them.
    pub fn venue_names(&self) -> String {
        format!("{}:venue-names", self.prefix)
    }
    /// Heartbeats.
    pub fn heartbeat(&self) -> String {
        format!("{}:heartbeat", self.prefix)
    }
    /// Where the book's bar log stands in Redis: `<log> <offset>` (the publisher's).
    pub fn bar_position(&self) -> String {
        format!("{}:barlog", self.prefix)
    }
    /// Node `k`'s mark: its run ID when its bar lists were last known whole
    /// (publish::barpos). The first `P:node:{nI}` whose slot the node serves (None if none
    /// is found: a node serving hardly any slots).
    pub fn node_mark(&self, topo: &Topology, k: usize) -> Option<String> {
        (0..1 << 16)
            .map(|i| format!("{}:node:{{n{i}}}", self.prefix))
            .find(|key| topo.node_of(key.as_bytes()) == k)
    }
    /// The publisher's lease: who writes under this prefix.
    pub fn lease(&self) -> String {
        format!("{}:publisher", self.prefix)
    }
}

/// The value of a quote published at `pub_ns`.
pub fn encode(pub_ns: u64, q: &Quote) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    v[..8].copy_from_slice(&pub_ns.to_le_bytes());
    v[8..].copy_from_slice(&q.to_bytes());
    v
}

/// A value back: (publish time, quote); `None` if it is not one.
pub fn decode(v: &[u8]) -> Option<(u64, Quote)> {
    if v.len() != VALUE_LEN {
        return None;
    }
    let pub_ns = u64::from_le_bytes(v[..8].try_into().ok()?);
    Some((pub_ns, Quote::from_bytes(&v[8..])?))
}

/// A symbol's 8 padded bytes.
pub fn padded(sym: &[u8]) -> [u8; 8] {
    let mut s = [b' '; 8];
    let n = sym.len().min(8);
    s[..n].copy_from_slice(&sym[..n]);
    s
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Finds out what the seeds are: a cluster (its masters and slot map) or one plain server.
pub fn discover(
    seeds: &[SocketAddr],
    timeout: Duration,
    access: &conn::Access,
) -> Result<Topology, String> {
    let mut last = String::from("no seed");
    for &seed in seeds {
        let mut c = match Conn::connect(seed, timeout, timeout, access) {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match slot_map(&mut c, timeout) {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The slot map as the node behind `c` sees it (`CLUSTER SLOTS`; one plain server owning
/// everything when it has no cluster support), asked over a connection already open.
pub fn slot_map(c: &mut Conn, timeout: Duration) -> Result<Topology, String> {
    let seed = c.addr();
    match c.call(&[b"CLUSTER", b"SLOTS"], timeout, |r| {
        Topology::from_cluster_slots(&r, seed)
    }) {
        Ok(t) => t.map_err(|e| conn::err(seed, e)),
        Err(e) if e.contains("cluster support disabled") => Ok(Topology::single(seed)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_names_parse_back() {
        let q = Quote {
            symbol: *b"AAPL    ",
            bid: Some((1_891_200, 300)),
            last: Some((1_891_300, 100)),
            volume: 12_345,
            state: b'H',
            stale: true,
            anomaly: true,
            vwap_e4: Some(1_890_000),
            bid_venue: 1,
            untrusted: 0b100,
            ..Quote::default()
        };
        // every field travels, the stale and anomaly flags included
        let v = encode(42, &q);
        assert_eq!(decode(&v), Some((42, q)));
        assert_eq!(decode(&v[..VALUE_LEN - 1]), None);
        let k = Keys::new("quotes");
        assert_eq!(k.quote("AAPL"), "quotes:{AAPL}");
        assert_eq!(k.symbol_of(b"quotes:{AAPL}"), Some(&b"AAPL"[..]));
        assert_eq!(k.symbol_of(b"quotes:new"), None);
        assert_eq!(k.symbol_of(b"other:{AAPL}"), None);
        assert_eq!(k.symbol_of(k.bars("AAPL", 60).as_bytes()), None);
        assert_eq!(k.symbol_of(k.bars_channel("AAPL").as_bytes()), None);
        assert_eq!(
            k.symbol_of_bars(k.bars_channel("AAPL").as_bytes()),
            Some(&b"AAPL"[..])
        );
        assert_eq!(k.symbol_of(k.venues("AAPL").as_bytes()), None);
        assert_eq!(k.symbol_of_bars(k.venues("AAPL").as_bytes()), None);
        assert_eq!(
            k.symbol_of_venues(k.venues("AAPL").as_bytes()),
            Some(&b"AAPL"[..])
        );
        assert_eq!(k.symbol_of_venues(k.quote("AAPL").as_bytes()), None);
        assert_eq!(padded(b"AB"), *b"AB      ");
    }
}
