//! Bars: the book's bar log followed, each new bar appended to its series' capped list and
//! published on its symbol's bars channel, its fate decided by the reply to its write
//! ([`barfate`](super::barfate)).

use super::barsync::{Fix, Series, parse_position, position_text};
use super::{Publisher, read_owed};
use crate::redis::Keys;
use crate::redis::resp::Reply;
use book::barlog::{BarRecord, RECORD};
use std::time::{Duration, Instant};

/// Bars held at most while Redis is away (48 bytes each, and where they are in the log).
pub const MAX_PENDING_BARS: usize = 1 << 20;

/// A bar read from the log, waiting to go out.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingBar {
    /// The record.
    pub rec: BarRecord,
    /// The log it is from, and its offset there.
    pub log: u64,
    pub at: u64,
    /// Restored to its list (Redis lost it), not published: the gateways that were up have it.
    pub quiet: bool,
    /// To be checked against its list first (the lists were written from another log).
    pub check: bool,
}

impl Publisher {
    /// Also publishes the bars appended to the bar log at `path` (the book's `<quotes>.bars`).
    pub fn follow_bars(&mut self, path: std::path::PathBuf) {
        self.bar_tail = Some(crate::bars::Tail::new(path));
    }

    /// Reads the bar log's new records (every 100 ms at most), leaving out the ones Redis has
    /// ([`super::barsync`]).
    fn poll_bars(&mut self) {
        let Some(t) = self.bar_tail.as_mut() else {
            return;
        };
        if Instant::now() < self.next_bar_poll {
            return;
        }
        self.next_bar_poll = Instant::now() + Duration::from_millis(100);
        // no log yet (book not started): nothing to publish
        let Ok((begun, new)) = t.read_new() else {
            return;
        };
        let log = t.log();
        if begun {
            self.bar_sync.opened(log, t.len_now());
        }
        let first = t.offset() - (new.len() * RECORD) as u64;
        for (k, rec) in new.into_iter().enumerate() {
            let at = first + (k * RECORD) as u64;
            if self.bar_sync.in_redis(log, at) {
                self.stats.bars_skipped += 1;
                continue;
            }
            if self.bars_pending.len() == MAX_PENDING_BARS {
                self.bars_pending.pop_front();
                self.stats.bars_dropped += 1;
            }
            let quiet = self.bar_sync.quiet(log, at);
            // in a cluster, only the lists of the node that lost them (the others have theirs)
            if quiet
                && let (Some(lost), Some(link)) = (self.bars_lost_on, self.link.as_ref())
                && link.topo.nodes[link.topo.node_of(bar_names(&self.keys, &rec).0.as_bytes())]
                    != lost
            {
                self.stats.bars_skipped += 1;
                continue;
            }
            let check = self.bar_sync.checked(log, at);
            self.bars_pending.push_back(PendingBar {
                rec,
                log,
                at,
                quiet,
                check,
            });
        }
    }

    /// After a (re)connection, before any bar goes out: reads where Redis' bars stand, skips
    /// the tail ahead to there and drops what waits that Redis has. Redis not answering the
    /// key usably (a redirect, a refusal) leaves things as they are: at least once.
    fn resync_bars(&mut self) -> Result<(), (usize, String)> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let key = self.keys.bar_position();
        let k = link.topo.node_of(key.as_bytes());
        let node = link.topo.nodes[k];
        let Some(c) = link.conns[k].as_mut() else {
            return Ok(());
        };
        c.queue(&[b"GET", key.as_bytes()]);
        let deadline = Instant::now() + self.cfg.timeout;
        // the outer error is the connection's; the inner one a reply that says nothing usable
        // (a redirect, a refusal, another value)
        let got = c.flush().and_then(|()| {
            c.next_by(deadline, |r| match (&r, r.error()) {
                (_, Some(e)) => Err(e),
                (Reply::Bulk(None), _) => Ok(None),
                _ => r
                    .bytes()
                    .and_then(parse_position)
                    .map(Some)
                    .ok_or_else(|| "not a bar log position".to_string()),
            })
        });
        self.bar_synced = self.epoch_ns;
        let theirs = match got {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                eprintln!("gateway publish: GET {key}: {why}; bars go out at least once");
                return Ok(());
            }
            Err(e) => return Err((k, e)),
        };
        let Some(t) = self.bar_tail.as_mut() else {
            return Ok(());
        };
        let log = t.log();
        match self.bar_sync.resync(theirs, log, t.offset()) {
            Fix::Stay => {}
            Fix::Skip(to) => t.seek(to),
            Fix::Restore(from) => {
                eprintln!(
                    "gateway publish: Redis lost bars it had (restarted empty or from an older \
                     snapshot): restoring them to the lists from offset {from} of the bar log"
                );
                t.seek(from);
                self.bars_pending.retain(|p| p.log != log);
                self.stats.bar_restores += 1;
                // the node that held the position lost it: its lists with it
                self.bars_lost_on = Some(node);
            }
        }
        let sync = &self.bar_sync;
        let before = self.bars_pending.len();
        self.bars_pending.retain_mut(|p| {
            p.check |= sync.checked(p.log, p.at);
            !sync.in_redis(p.log, p.at)
        });
        self.stats.bars_skipped += (before - self.bars_pending.len()) as u64;
        Ok(())
    }

    /// Writes where the bar log stands in Redis when that moved: the first record still
    /// waiting, or where the tail is.
    fn save_bar_position(&mut self) -> Result<(), (usize, String)> {
        let Some(t) = self.bar_tail.as_ref() else {
            return Ok(());
        };
        let (log, at) = self
            .bars_pending
            .front()
            .map_or((t.log(), t.offset()), |p| (p.log, p.at));
        if !self.bar_sync.settled(log, at) {
            return Ok(());
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let key = self.keys.bar_position();
        let k = link.topo.node_of(key.as_bytes());
        let Some(c) = link.conns[k].as_mut() else {
            return Ok(());
        };
        let v = position_text(log, at);
        c.queue(&[b"SET", key.as_bytes(), v.as_bytes()]);
        let deadline = Instant::now() + self.cfg.timeout;
        match c
            .flush()
            .and_then(|()| c.next_by(deadline, |r| r.error().map(|e| e.to_string())))
        {
            Ok(None) => {
                self.bar_position_refused = None;
                Ok(())
            }
            // refused or redirected: written again with the next move (logged once a reason)
            Ok(Some(e)) => {
                self.bar_sync.unsaved();
                if self.bar_position_refused.as_ref() != Some(&e) {
                    eprintln!("gateway publish: SET {key}: {e}");
                    self.bar_position_refused = Some(e);
                }
                Ok(())
            }
            Err(e) => Err((k, e)),
        }
    }

    /// The bars waiting first that are to be checked against their lists (up to a batch):
    /// asks each list not known yet for its day and newest bar (one round trip a node), then
    /// drops the bars a list has already ([`super::barsync`]).
    fn check_bars(&mut self) -> Result<(), (usize, String)> {
        let n = self
            .bars_pending
            .iter()
            .take(4096)
            .take_while(|p| p.check)
            .count();
        if n == 0 {
            return Ok(());
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let mut asked: Vec<Vec<(Series, u64)>> = vec![Vec::new(); link.conns.len()];
        let mut seen = std::collections::HashSet::new();
        for p in self.bars_pending.iter().take(n) {
            let series = (p.rec.symbol, p.rec.interval_s);
            if self.bar_sync.knows(&series) || !seen.insert(series) {
                continue;
            }
            let sym = String::from_utf8_lossy(&p.rec.symbol)
                .trim_end()
                .to_string();
            let list = self.keys.bars(&sym, p.rec.interval_s);
            let k = link.topo.node_of(list.as_bytes());
            let Some(c) = link.conns[k].as_mut() else {
                return Ok(());
            };
            c.queue(&[
                b"GET",
                self.keys.bars_day(&sym, p.rec.interval_s).as_bytes(),
            ]);
            c.queue(&[b"LINDEX", list.as_bytes(), b"-1"]);
            asked[k].push((series, p.log));
        }
        let deadline = Instant::now() + self.cfg.timeout;
        for (k, series) in asked.iter().enumerate() {
            if series.is_empty() {
                continue;
            }
            let c = link.conns[k].as_mut().expect("asked through it");
            c.flush().map_err(|e| (k, e))?;
            for &(s, log) in series {
                // an error reply (a redirect, a refusal): not known, so the bars go in
                let day = c
                    .next_by(deadline, |r| {
                        r.bytes()
                            .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                    })
                    .map_err(|e| (k, e))?;
                let start = c
                    .next_by(deadline, |r| {
                        r.bytes()
                            .filter(|b| b.len() == RECORD)
                            .map(|b| book::barlog::record_from_bytes(b).bar.start_ns)
                    })
                    .map_err(|e| (k, e))?;
                self.bar_sync.learned(s, log, day, start);
            }
        }
        let front: Vec<PendingBar> = self.bars_pending.drain(..n).collect();
        for p in front.into_iter().rev() {
            let series = (p.rec.symbol, p.rec.interval_s);
            if !p.rec.revision && self.bar_sync.in_list(&series, p.rec.bar.start_ns) {
                self.stats.bars_skipped += 1;
                continue;
            }
            self.bars_pending
                .push_front(PendingBar { check: false, ..p });
        }
        Ok(())
    }

    /// Writes pending bars (when every node is up): `RPUSH` + `LTRIM` to the latest 600 of the
    /// series, and the record on the symbol's bars channel. Each bar's fate is decided by the
    /// reply to its `RPUSH` ([`barfate`](super::barfate)): appended or refused, it is done (a
    /// refusal is counted, and logged with Redis's reason); MOVED waits for the new map; ASK is
    /// appended where its list is now and published again; no reply (the node failed) waits
    /// for the node. A bar Redis appended is never appended again.
    pub(super) fn flush_bars(&mut self) {
        use super::barfate::{Aside, Cmd, Fate};
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let all_up = link.conns.iter().all(Option::is_some);
        if self.bar_synced != self.epoch_ns {
            if !all_up || self.bar_tail.is_none() {
                return;
            }
            if let Err((k, e)) = self.resync_bars() {
                self.node_failed(k, e);
                return;
            }
        }
        self.poll_bars();
        if !all_up {
            return;
        }
        if let Err((k, e)) = self.check_bars() {
            self.node_failed(k, e);
            return;
        }
        if self.bars_pending.is_empty() {
            if let Err((k, e)) = self.save_bar_position() {
                self.node_failed(k, e);
            }
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let publish: &[u8] = if link.topo.cluster {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let t = self.cfg.timeout;
        let n = self.bars_pending.len().min(4096);
        // per node, what each reply answers: (bar, command), in the order they were queued
        let mut tied: Vec<Vec<(usize, Cmd)>> = vec![Vec::new(); link.conns.len()];
        for (j, p) in self.bars_pending.iter().take(n).enumerate() {
            let (key, ch, b) = bar_names(&self.keys, &p.rec);
            let k = link.topo.node_of(key.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            c.queue(&[b"RPUSH", key.as_bytes(), &b]);
            c.queue(&[b"LTRIM", key.as_bytes(), b"-600", b"-1"]);
            tied[k].extend([(j, Cmd::Push), (j, Cmd::Trim)]);
            // the list's day, for a publisher checking it later (its reply counts as the trim's)
            if let Some((day_key, day)) = day_names(&self.keys, p) {
                c.queue(&[b"SET", day_key.as_bytes(), day.as_bytes()]);
                tied[k].push((j, Cmd::Trim));
            }
            if !p.quiet {
                c.queue(&[publish, ch.as_bytes(), &b]);
                tied[k].push((j, Cmd::Publish));
            }
        }
        let mut fate = vec![Fate::Unknown; n];
        let mut aside: Option<String> = None;
        let mut failed = None;
        for (k, conn) in link.conns.iter_mut().enumerate() {
            let c = conn.as_mut().expect("every node is up");
            // replies owed from before this batch are not the bars'
            let before = c.owed - tied[k].len();
            let read = c.flush().and_then(|()| {
                c.read_each(Instant::now() + t, |i, e| {
                    let Some(&(j, cmd)) = i.checked_sub(before).and_then(|i| tied[k].get(i)) else {
                        return;
                    };
                    match fate[j].reply(cmd, e) {
                        Aside::Nothing => {}
                        Aside::Remap(to) => self.remap = Some(to),
                        Aside::Refused(why) => drop(aside.get_or_insert(why)),
                    }
                })
            });
            if let Err(e) = read {
                failed.get_or_insert((k, e));
            }
        }
        // its slot half-moved, its list with it: appended there after ASKING, then published
        // again, so a publish follows the write
        for (f, p) in fate.iter_mut().zip(&self.bars_pending) {
            let Fate::Asked(to) = *f else { continue };
            let (key, ch, b) = bar_names(&self.keys, &p.rec);
            let Some(c) = link.ask_conn(to, t, &self.cfg.access) else {
                continue;
            };
            c.queue(&[b"ASKING"]);
            c.queue(&[b"RPUSH", key.as_bytes(), &b]);
            c.queue(&[b"ASKING"]);
            c.queue(&[b"LTRIM", key.as_bytes(), b"-600", b"-1"]);
            let mut queued = 4;
            if let Some((day_key, day)) = day_names(&self.keys, p) {
                c.queue(&[b"ASKING"]);
                c.queue(&[b"SET", day_key.as_bytes(), day.as_bytes()]);
                queued += 2;
            }
            let mut there = Fate::Unknown;
            let before = c.owed - queued;
            let read = c.flush().and_then(|()| {
                c.read_each(Instant::now() + t, |i, e| match i.checked_sub(before) {
                    Some(1) => drop(there.reply(Cmd::Push, e)),
                    Some(3 | 5) => drop(there.reply(Cmd::Trim, e)),
                    _ => {}
                })
            });
            if let Err(e) = read {
                match link.topo.index_of(to) {
                    Some(kk) => drop(failed.get_or_insert((kk, e))),
                    None => link.drop_side(to),
                }
            }
            // asked again, or moved meanwhile: it waits for the next flush or the new map
            if let Fate::Moved(to) = there {
                self.remap = Some(to);
            }
            if !there.settled() {
                continue;
            }
            *f = there;
            if p.quiet {
                continue;
            }
            let k = link.topo.node_of(key.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            c.queue(&[publish, ch.as_bytes(), &b]);
            if let Err(e) = c.flush().and_then(|()| read_owed(c, t)) {
                failed.get_or_insert((k, e));
            }
        }
        // refusals are logged with the first reason, once a batch
        let refused: Vec<(usize, &str)> = (0..n)
            .filter_map(|j| match &fate[j] {
                Fate::Refused(why) => Some((j, why.as_str())),
                _ => None,
            })
            .collect();
        if let Some(&(j, why)) = refused.first() {
            let (key, _, _) = bar_names(&self.keys, &self.bars_pending[j].rec);
            eprintln!(
                "gateway publish: Redis refused {} bars (dropped); the first, {key}: {why}",
                refused.len()
            );
        }
        if let Some(why) = aside {
            eprintln!("gateway publish: a bar was appended but its trim or publish refused: {why}");
        }
        self.stats.bars_refused += refused.len() as u64;
        // the bars not settled stay first, in order; the others are gone, never appended twice
        let mut kept = 0;
        for (j, f) in fate.iter().enumerate() {
            if !f.settled() {
                self.bars_pending.swap(kept, j);
                kept += 1;
            }
        }
        self.bars_pending.drain(kept..n);
        self.stats.bars += (n - kept) as u64 - refused.len() as u64;
        if let Some((k, e)) = failed {
            self.node_failed(k, e);
            return;
        }
        if let Err((k, e)) = self.save_bar_position() {
            self.node_failed(k, e);
        }
    }
}

/// A bar's list's day key and the day its log was begun on, when that is known.
fn day_names(keys: &Keys, p: &PendingBar) -> Option<(String, String)> {
    let day = super::barsync::day_of(p.log)?;
    let sym = String::from_utf8_lossy(&p.rec.symbol)
        .trim_end()
        .to_string();
    Some((keys.bars_day(&sym, p.rec.interval_s), day.to_string()))
}

/// A bar's list key, channel and bytes.
fn bar_names(keys: &Keys, r: &BarRecord) -> (String, String, [u8; RECORD]) {
    let sym = String::from_utf8_lossy(&r.symbol).trim_end().to_string();
    (
        keys.bars(&sym, r.interval_s),
        keys.bars_channel(&sym),
        r.to_bytes(),
    )
}
