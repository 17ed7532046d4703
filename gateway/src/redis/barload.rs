//! A link's chart loads: after a symbol's bars subscription is confirmed, its two bar lists
//! (1 s and 1 min) are read with `LRANGE`, a few symbols a pass of the link's loop, so the quotes
//! arriving meanwhile are taken between loads rather than after all of them. A full day's charts
//! are 86 KB a symbol (600 bars of 72 bytes, twice): read all at once after a reconnect, they
//! held a link's quotes for seconds, long enough for Redis to drop the subscriber whose output
//! buffer it had to keep (and the reconnect to load them all again).
//!
//! Until a symbol's lists are read, the bars coming on its channel are left out: each was
//! appended to its list before it was published, and the list is read after it came, so the
//! read has it. (Taken first, a bar would make the read look like a list already taken up to
//! it, and the history before it would be left out: see `mirror`.) Meanwhile `/v1/bars` refuses
//! the symbol's chart ([`ChartsLoading`]), until the gateway's index has read it in.
//!
//! While the publisher restores the lists (Redis lost bars: they go in again unpublished), a
//! list read would be part of one, and the rest would never come: lists are read only once
//! the heartbeat says no restore is under way (or none has come for [`NO_PUBLISHER`] since the
//! link connected: no publisher, nothing to wait for; those are read again after the first
//! heartbeat that says so). Before, a gateway that read them mid-restore charted a hole for
//! good.

use super::conn::Conn;
use super::replica::{BarWork, Shared};
use crate::bars::ChartsLoading;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Symbols whose lists one pass of a link's loop reads (two lists each: at most 172 KB a pass).
/// Measured (`bench redis`, a full day's charts of 5,000 symbols at 50,000 quote changes/s):
/// 1 a pass gave quotes a p99 of 19 ms while they loaded, 2 gave 20-41 ms, 4 gave 27-30 ms and 16
/// gave 82 ms; each took 2-4 s in all.
pub(super) const SYMBOLS_PER_PASS: usize = 2;

/// The symbols of one link whose lists are still to read: from when the link subscribes to
/// them, queued in the order their subscriptions were confirmed; each once. At most as many as
/// the link subscribes to. Each is in the replica's [`ChartsLoading`] from its subscription
/// until its lists are in (or the link is gone).
pub(super) struct BarLoads {
    queue: VecDeque<String>,
    /// Subscribed or confirmed, lists not read yet.
    waiting: HashSet<String>,
    /// Confirmed (in `queue`).
    queued: HashSet<String>,
    charts: ChartsLoading,
    /// What the latest heartbeat said of a restore ([`super::trust::Heartbeat::restoring`]);
    /// `None` before the first.
    restoring: Option<bool>,
    /// When the link connected (this `BarLoads` is one connection's).
    since: Instant,
    /// Read before any heartbeat came: read again after the first that says no restore is
    /// under way (a publisher that started meanwhile may have restored them).
    blind: HashSet<String>,
}

/// With no heartbeat this long after the link connected, no publisher runs: lists are read as
/// they are (heartbeats come every 250 ms).
pub(super) const NO_PUBLISHER: Duration = Duration::from_secs(2);

impl Drop for BarLoads {
    fn drop(&mut self) {
        // the link is gone: its next connection (or another node's link) reads them again
        let waiting = self.waiting.iter().map(|s| super::padded(s.as_bytes()));
        self.charts.forget(waiting);
    }
}

impl BarLoads {
    /// None waiting; each one that will is told to `charts`.
    pub(super) fn new(charts: ChartsLoading) -> BarLoads {
        BarLoads {
            queue: VecDeque::new(),
            waiting: HashSet::new(),
            queued: HashSet::new(),
            charts,
            restoring: None,
            since: Instant::now(),
            blind: HashSet::new(),
        }
    }

    /// A heartbeat said whether a restore is under way: once none is, what was read before any
    /// heartbeat came is read again.
    pub(super) fn restoring(&mut self, restoring: bool) {
        self.restoring = Some(restoring);
        if !restoring {
            for s in std::mem::take(&mut self.blind) {
                self.add(s);
            }
        }
    }

    /// Whether lists are to be read now: some wait, and no restore is under way.
    pub(super) fn reading(&self) -> bool {
        !self.queue.is_empty() && self.may_read()
    }

    fn may_read(&self) -> bool {
        match self.restoring {
            Some(r) => !r,
            None => self.since.elapsed() >= NO_PUBLISHER,
        }
    }

    /// The link subscribes to `sym`'s bars: its lists will be read once that is confirmed.
    pub(super) fn expect(&mut self, sym: &str) {
        if self.waiting.insert(sym.to_string()) {
            self.charts.waiting(super::padded(sym.as_bytes()));
        }
    }

    /// `sym`'s subscription was confirmed: its lists are to read (once, if they already are).
    pub(super) fn add(&mut self, sym: String) {
        if self.queued.insert(sym.clone()) {
            self.expect(&sym);
            self.queue.push_back(sym);
        }
    }

    /// Whether `sym`'s lists are still to read (its channel's bars are then left out).
    pub(super) fn waits(&self, sym: &str) -> bool {
        self.waiting.contains(sym)
    }

    /// Whether any symbol's lists are still to read.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next [`SYMBOLS_PER_PASS`] symbols to read now (none while a restore is under way).
    fn batch(&mut self) -> Vec<String> {
        if !self.may_read() {
            return Vec::new();
        }
        let syms = self.next(SYMBOLS_PER_PASS);
        if self.restoring.is_none() {
            self.blind.extend(syms.iter().cloned());
        }
        syms
    }

    /// The next `n` symbols to read, no longer waiting.
    fn next(&mut self, n: usize) -> Vec<String> {
        let n = n.min(self.queue.len());
        let batch: Vec<String> = self.queue.drain(..n).collect();
        for s in &batch {
            self.waiting.remove(s);
            self.queued.remove(s);
        }
        batch
    }

    /// Reads the lists of the next [`SYMBOLS_PER_PASS`] symbols through `cmd` into the replica's
    /// bars. A list whose slot moved away meanwhile is left to its new node's link; one holding
    /// another type (someone else's key) is left out, and its channel's bars are taken from then
    /// on. An `Err` is the connection failing.
    pub(super) fn read_some(&mut self, cmd: &mut Conn, sh: &Shared) -> Result<(), String> {
        let syms = self.batch();
        if syms.is_empty() {
            return Ok(());
        }
        match read(cmd, sh, &syms) {
            Ok(lists) => {
                sh.take_bars(BarWork::Lists(lists, syms));
                Ok(())
            }
            Err(e) => {
                self.charts
                    .forget(syms.iter().map(|s| super::padded(s.as_bytes())));
                Err(e)
            }
        }
    }
}

/// Each of `syms`' two lists, read through `cmd`: (symbol, interval, records), oldest first.
fn read(cmd: &mut Conn, sh: &Shared, syms: &[String]) -> Result<Vec<Loaded>, String> {
    let keys = &sh.keys;
    // the latest bars of each interval, oldest first; newer ones come on the channel
    let lists: Vec<(&String, u8, String)> = syms
        .iter()
        .flat_map(|s| [1, 60].map(|i| (s, i, keys.bars(s, i))))
        .collect();
    for (_, _, key) in &lists {
        cmd.queue(&[b"LRANGE", key.as_bytes(), b"-600", b"-1"]);
    }
    cmd.flush()?;
    let deadline = Instant::now() + sh.cfg.timeout;
    let mut reloaded = Vec::with_capacity(lists.len());
    for (sym, interval_s, key) in &lists {
        cmd.next_by(deadline, |r| {
            if let Some(e) = r.error() {
                if super::cluster::redirect(&e).is_some() {
                    // moved away meanwhile: its new node loads it
                    sh.slots_moved(1);
                } else {
                    eprintln!("gateway: redis: LRANGE {key}: {e}; its bars not loaded");
                }
                return;
            }
            let list: Vec<Vec<u8>> = r
                .items()
                .unwrap_or(&[])
                .iter()
                .filter_map(|x| x.bytes().map(<[u8]>::to_vec))
                .collect();
            reloaded.push((sym.to_string(), *interval_s, list));
        })?;
    }
    Ok(reloaded)
}

/// A list read: its symbol, interval and records, oldest first.
type Loaded = (String, u8, Vec<Vec<u8>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_symbol_waits_once_in_the_order_confirmed_until_its_turn() {
        let charts = ChartsLoading::default();
        let mut b = BarLoads::new(charts.clone());
        for s in ["AAPL", "MSFT", "AAPL", "IBM", "MSFT"] {
            b.add(s.into());
        }
        assert!(b.waits("AAPL") && b.waits("IBM") && !b.waits("ZZZZ"));
        assert_eq!(b.next(2), ["AAPL", "MSFT"]);
        assert!(!b.waits("AAPL") && !b.waits("MSFT") && b.waits("IBM"));
        // confirmed again after its read (a resubscription): read again
        b.add("AAPL".into());
        assert_eq!(b.next(9), ["IBM", "AAPL"]);
        assert!(b.is_empty() && !b.waits("IBM"));
        assert!(b.next(4).is_empty());
        // each told to the charts once (taken out when their lists are in: the bars thread)
        assert_eq!(charts.len(), 3);
    }

    #[test]
    fn lists_wait_while_a_restore_is_under_way_and_blind_reads_are_read_again() {
        let charts = ChartsLoading::default();
        let mut b = BarLoads::new(charts.clone());
        b.add("AAPL".into());
        // no heartbeat yet: the publisher may be restoring
        assert!(!b.reading() && b.batch().is_empty());
        b.restoring(true);
        assert!(!b.reading() && b.batch().is_empty() && b.waits("AAPL"));
        b.restoring(false);
        assert!(b.reading());
        assert_eq!(b.batch(), ["AAPL"]);
        // a new connection with no publisher: after a while, read as they are
        let mut b = BarLoads::new(charts.clone());
        b.add("MSFT".into());
        b.since = Instant::now() - NO_PUBLISHER;
        assert_eq!(b.batch(), ["MSFT"]);
        assert!(!b.waits("MSFT"));
        // a publisher comes, restores: once it has, what was read blind is read again
        b.restoring(true);
        assert!(!b.waits("MSFT"));
        b.restoring(false);
        assert!(b.waits("MSFT") && b.reading());
        assert_eq!(b.batch(), ["MSFT"]);
        b.restoring(false);
        assert!(!b.reading(), "read again once");
    }

    #[test]
    fn a_chart_waits_from_its_subscription_and_a_link_gone_leaves_none_waiting_for_it() {
        let charts = ChartsLoading::default();
        let mut b = BarLoads::new(charts.clone());
        b.expect("AAPL");
        b.expect("MSFT");
        b.expect("IBM");
        assert!(
            b.waits("IBM") && b.is_empty(),
            "subscribed, not confirmed: nothing to read"
        );
        assert_eq!(charts.len(), 3);
        b.add("AAPL".into());
        b.add("MSFT".into());
        let read = b.next(1);
        drop(b);
        // MSFT's and IBM's reads never began; AAPL's lists are on their way to the bars thread
        assert_eq!(read, ["AAPL"]);
        assert_eq!(charts.len(), 1);
    }
}
