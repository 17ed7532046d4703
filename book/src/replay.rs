//! `book replay FILE`: runs a capture through the live path's arbitration and into the books.
//!
//! A pcap or pcapng is read as MoldUDP64: every flow (destination address and port) of the
//! session is a redundant line of it (the first flow seen is line A, the others line B), and
//! the capture's own timestamps drive the arbiter's timers. Nothing can be re-requested
//! offline, so a hole on every line becomes a gap, and a gap marks every instrument stale (an
//! ITCH gap can hide any message). A BinaryFILE is applied message by message.

use crate::books::{Ahead, Books};
use feed_handler::arbiter::{ArbConfig, ArbSink, Arbiter, Line};
use feed_handler::capture::{self, Capture, Item};
use feed_handler::moldudp64::{Packet, Request};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::Path;

/// What a replay did besides filling the books.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    /// Messages applied.
    pub messages: u64,
    /// Gap events (ranges lost on every line).
    pub gaps: u64,
    /// Messages lost in them.
    pub lost: u64,
    /// Datagrams of other sessions, not MoldUDP64, or not UDP.
    pub ignored: u64,
}

struct Apply<'a> {
    books: &'a mut Books,
    ahead: &'a mut Ahead,
    stats: &'a mut ReplayStats,
}

impl ArbSink for Apply<'_> {
    fn message(&mut self, _seq: u64, msg: &[u8], _recv_ns: u64, _line: Line) {
        self.ahead.push(self.books, msg);
        self.stats.messages += 1;
    }
    fn gap(&mut self, _first: u64, count: u64) {
        self.stats.gaps += 1;
        self.stats.lost += count;
        self.ahead.flush(self.books);
        self.books.set_all_stale(true);
    }
    fn request(&mut self, _req: Request) {}
}

/// Replays a capture file into `books`.
pub fn replay_file(path: &Path, books: &mut Books) -> Result<ReplayStats, String> {
    let cap = capture::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    replay_capture(cap, books).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replays an opened capture into `books`.
pub fn replay_capture(mut cap: Capture, books: &mut Books) -> Result<ReplayStats, String> {
    let mut stats = ReplayStats::default();
    // every message goes through a prefetching window (flushed before a gap and at the end)
    let mut ahead = Ahead::default();
    if let Capture::BinaryFile(r) = &mut cap {
        while let Some((_, msg)) = r.next_message().map_err(|e| e.to_string())? {
            ahead.push(books, msg);
            stats.messages += 1;
        }
        ahead.flush(books);
        return Ok(stats);
    }
    let mut arb = Arbiter::new(ArbConfig {
        recovery: false,
        ..ArbConfig::default()
    });
    let mut flows: HashMap<SocketAddrV4, Line> = HashMap::new();
    let mut last_ts = 0;
    while let Some(item) = cap.next_item().map_err(|e| e.to_string())? {
        let Item::Frame(rec) = item else { continue };
        let Ok(Some(d)) = capture::udp_in_frame(rec.linktype, rec.data) else {
            stats.ignored += 1;
            continue;
        };
        let Ok(p) = Packet::parse(d.payload) else {
            stats.ignored += 1;
            continue;
        };
        if arb.session().is_some_and(|s| s != *p.session()) {
            stats.ignored += 1;
            continue;
        }
        let n = flows.len();
        let line = *flows
            .entry(d.dst)
            .or_insert(if n == 0 { Line::A } else { Line::B });
        last_ts = last_ts.max(rec.ts_ns);
        let mut sink = Apply {
            books,
            ahead: &mut ahead,
            stats: &mut stats,
        };
        arb.on_packet(last_ts, line, d.payload, &mut sink);
        arb.poll(last_ts, &mut sink);
    }
    // Whatever is still missing at the end is lost.
    let mut sink = Apply {
        books,
        ahead: &mut ahead,
        stats: &mut stats,
    };
    arb.poll(last_ts.saturating_add(1_000_000_000), &mut sink);
    ahead.flush(books);
    Ok(stats)
}

/// The final state as `book replay --json` prints it.
pub fn to_json(books: &Books) -> serde_json::Value {
    let mut symbols = serde_json::Map::new();
    for (locate, x) in books.iter() {
        let Some(sym) = x.symbol else { continue };
        let name = sym.to_string();
        let (bid, ask) = (x.best_bid(), x.best_ask());
        symbols.insert(
            name,
            serde_json::json!({
                "locate": locate,
                "bid_px": bid.map(|b| b.0), "bid_qty": bid.map(|b| b.1.shares),
                "ask_px": ask.map(|a| a.0), "ask_qty": ask.map(|a| a.1.shares),
                "last_px": x.last.map(|l| l.px_e4), "last_qty": x.last.map(|l| l.qty),
                "volume": x.volume,
                "bid_levels": x.bids.len(), "ask_levels": x.asks.len(),
                "state": if x.state == 0 { serde_json::Value::Null } else { (x.state as char).to_string().into() },
                "stale": x.stale,
            }),
        );
    }
    serde_json::json!({ "symbols": symbols })
}
