//! Where the book's bar log stands in Redis, the I/O of [`barsync`](super::barsync): reading
//! the position back after a (re)connection, writing it after each batch, and asking lists for
//! their day and newest bar before bars that may be in them already go out.

use super::Publisher;
use super::bars::PendingBar;
use super::barsync::{Fix, Series, parse_position, position_text};
use crate::redis::Keys;
use crate::redis::resp::Reply;
use book::barlog::RECORD;
use std::net::SocketAddr;
use std::time::Instant;

impl Publisher {
    /// After a (re)connection, before any bar goes out: reads where Redis' bars stand, then
    /// skips the tail ahead to there and drops what waits that Redis has, or reads again what
    /// Redis lost (restored without a publish), and marks what was read for the check. Redis
    /// not answering the key usably (a redirect, a refusal) leaves things as they are.
    pub(super) fn resync_bars(&mut self) -> Result<(), (usize, String)> {
        // the restore's bars held by list are first again, in log order, as read (and checked
        // below when they are to be)
        for p in self.regroup.drain_in_log_order().into_iter().rev() {
            self.bars_pending.push_front(p);
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        // every node's run ID, and the one its mark names: its run when its lists were last
        // known whole. Another one, or none, means it restarted since (perhaps while no
        // publisher ran), or is a replica promoted that may lag the master it replaced (the
        // mark it copied names that master's run): its lists may lack bars. A node whose mark
        // cannot be read is compared with the run ID this publisher saw last, and one new to
        // it after it knew others counts as restarted.
        let mut restarted = Vec::new();
        let knew = !self.run_ids.is_empty();
        self.marks_owed.clear();
        for (k, conn) in link.conns.iter_mut().enumerate() {
            let Some(c) = conn.as_mut() else { continue };
            let deadline = Instant::now() + self.cfg.timeout;
            let mark = self.keys.node_mark(&link.topo, k);
            c.queue(&[b"INFO", b"server"]);
            if let Some(m) = &mark {
                c.queue(&[b"GET", m.as_bytes()]);
            }
            c.flush().map_err(|e| (k, e))?;
            // refused (an ACL without INFO): not known, nothing noticed
            let id = c
                .next_by(deadline, |r| r.bytes().and_then(super::barsync::run_id))
                .map_err(|e| (k, e))?;
            // Some(the run ID it names, if any); None: refused or redirected
            let marked = match &mark {
                Some(_) => c
                    .next_by(deadline, |r| match (&r, r.error()) {
                        (_, Some(_)) => None,
                        (Reply::Bulk(None), _) => Some(None),
                        _ => Some(r.bytes().map(|b| String::from_utf8_lossy(b).into_owned())),
                    })
                    .map_err(|e| (k, e))?,
                None => None,
            };
            let addr = link.topo.nodes[k];
            let Some(id) = id else { continue };
            let was = self.run_ids.insert(addr, id.clone());
            let moved = match &marked {
                Some(m) => m.as_deref() != Some(id.as_str()),
                None => was.map_or(knew, |w| w != id),
            };
            if moved {
                restarted.push(addr);
            }
            if let Some(key) = mark
                && marked.as_ref().and_then(|m| m.as_deref()) != Some(id.as_str())
            {
                self.marks_owed.push((key, id));
            }
        }
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
        self.restarted_unread.clear();
        let mut fix = self.bar_sync.resync(theirs, log, t.offset());
        // the node that held the position lost it: its lists with it
        let mut lost = Vec::new();
        if let Fix::Restore(_) = fix {
            lost.push(node);
        }
        // other nodes that restarted may have lost theirs: their lists are checked from the
        // log's start (what they kept is not appended again), with the first one's if it is
        // being restored too
        let restarted: Vec<SocketAddr> = restarted
            .into_iter()
            .filter(|n| !lost.contains(n))
            .collect();
        if !restarted.is_empty() && log == 0 {
            // no log read yet (a publisher just started): when the tail begins one
            self.restarted_unread = restarted;
        } else if !restarted.is_empty() {
            let again = self.bar_sync.restarted(log, t.offset());
            if let Fix::Restore(_) = again {
                fix = again;
                lost.extend(restarted);
            }
        }
        match fix {
            Fix::Stay => {}
            Fix::Skip(to) => t.seek(to),
            Fix::Restore(from) => {
                restoring_note(&lost, from);
                t.seek(from);
                self.bars_pending.retain(|p| p.log != log);
                self.stats.bar_restores += 1;
                self.bars_lost_on = lost;
            }
        }
        // a restore (begun now, or going on) leaves out what its lists would trim at once
        self.scan_cuts();
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
    pub(super) fn save_bar_position(&mut self) -> Result<(), (usize, String)> {
        let Some(t) = self.bar_tail.as_ref() else {
            return Ok(());
        };
        // the restore's bars go in out of the log's order: the position stays until they are in
        if !self.regroup.is_empty() {
            return Ok(());
        }
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

    /// Once every bar read went in and none is being restored, writes the marks owed: each
    /// node's run ID, its lists whole in that run. A node that restarts while its lists are
    /// restored, or a publisher that stops then, leaves the old mark, so the next resync
    /// restores them again (checked: nothing twice).
    pub(super) fn write_marks(&mut self) -> Result<(), (usize, String)> {
        if self.marks_owed.is_empty()
            || !self.bars_pending.is_empty()
            || !self.regroup.is_empty()
            || !self.restarted_unread.is_empty()
        {
            return Ok(());
        }
        if let Some(t) = self.bar_tail.as_ref()
            && self.bar_sync.restoring(t.log(), t.offset())
        {
            return Ok(());
        }
        // every node up (nothing queued on some and left unread)
        let Some(link) = self
            .link
            .as_mut()
            .filter(|l| l.conns.iter().all(Option::is_some))
        else {
            return Ok(());
        };
        let mut asked = vec![0; link.conns.len()];
        for (key, id) in &self.marks_owed {
            let k = link.topo.node_of(key.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            c.queue(&[b"SET", key.as_bytes(), id.as_bytes()]);
            asked[k] += 1;
        }
        let deadline = Instant::now() + self.cfg.timeout;
        for (k, &n) in asked.iter().enumerate() {
            let Some(c) = link.conns[k].as_mut().filter(|_| n > 0) else {
                continue;
            };
            c.flush().map_err(|e| (k, e))?;
            for _ in 0..n {
                // refused or redirected: the next resync finds the old mark and checks the
                // node's lists again
                let why = c.next_by(deadline, |r| r.error()).map_err(|e| (k, e))?;
                if let Some(e) = why
                    && self.mark_refused.as_ref() != Some(&e)
                {
                    eprintln!("gateway publish: writing a node's mark (its run ID): {e}");
                    self.mark_refused = Some(e);
                }
            }
        }
        self.marks_owed.clear();
        Ok(())
    }

    /// The bars waiting first that are to be checked against their lists (as far as the
    /// lists of a batch's worth of series not known yet): asks each of those lists for its day
    /// and newest bar (one round trip a node), then drops the bars a list has already
    /// ([`super::barsync`]), and those a restore leaves out ([`super::bartrim`]).
    pub(super) fn check_bars(&mut self) -> Result<(), (usize, String)> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        // (before anything is queued: a question left in a buffer would take another's reply)
        if link.conns.iter().any(Option::is_none) {
            return Ok(());
        }
        let mut asked: Vec<Vec<(Series, u64)>> = vec![Vec::new(); link.conns.len()];
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for p in self.bars_pending.iter().take(CHECKED_AT_MOST) {
            if !p.check {
                break;
            }
            let series = (p.rec.symbol, p.rec.interval_s, p.rec.channel);
            if self.bar_sync.knows(&series) || seen.contains(&series) {
                n += 1;
                continue;
            }
            if seen.len() == super::bars::CHECKED_SERIES_PER_FLUSH {
                break;
            }
            seen.insert(series);
            n += 1;
            let sym = p.rec.symbol_str();
            let list = self.keys.bars(&sym, p.rec.interval_s);
            let k = link.topo.node_of(list.as_bytes());
            let c = link.conns[k].as_mut().expect("every node is up");
            c.queue(&[
                b"HGET",
                self.keys.bars_newest(&sym, p.rec.interval_s).as_bytes(),
                p.rec.channel.to_string().as_bytes(),
            ]);
            c.queue(&[b"LINDEX", list.as_bytes(), b"-1"]);
            asked[k].push((series, p.log));
        }
        if n == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.timeout;
        for (k, series) in asked.iter().enumerate() {
            if series.is_empty() {
                continue;
            }
            let c = link.conns[k].as_mut().expect("asked through it");
            c.flush().map_err(|e| (k, e))?;
            for &(s, log) in series {
                // an error reply (a redirect, a refusal) or none: not known, so the bars go in
                let newest = c
                    .next_by(deadline, |r| {
                        r.bytes().and_then(super::barsync::parse_newest)
                    })
                    .map_err(|e| (k, e))?;
                // the list's last bar, when it is this venue's (a plain one)
                let last = c
                    .next_by(deadline, |r| {
                        let b = r.bytes().filter(|b| b.len() == RECORD)?;
                        let r = book::barlog::record_from_bytes(b);
                        (r.channel == s.2 && !r.revision).then_some((r.day as u64, r.bar.start_ns))
                    })
                    .map_err(|e| (k, e))?;
                let seen: Vec<(u64, u64)> = newest.into_iter().chain(last).collect();
                self.bar_sync.learned(s, log, &seen);
            }
        }
        let front: Vec<PendingBar> = self.bars_pending.drain(..n).collect();
        for p in front.into_iter().rev() {
            let series = (p.rec.symbol, p.rec.interval_s, p.rec.channel);
            if !p.rec.revision && self.bar_sync.in_list(&series, p.rec.bar.start_ns) {
                self.stats.bars_skipped += 1;
                continue;
            }
            if p.quiet && self.left_out(p.log, p.at, &p.rec, true) == Some(true) {
                self.stats.bars_trimmed += 1;
                continue;
            }
            self.bars_pending
                .push_front(PendingBar { check: false, ..p });
        }
        Ok(())
    }
}

/// Bars checked at most a flush. Most are of lists known already, and cost no round trip: a
/// restore reads a busy day's log again, and its first reads queue up to a million bars
/// before their lists are known; checked 64 a flush, they held every bar of the restore for
/// 6 s (`bench redis`). With 8,192 a flush at most, that restore read its 21M records in under
/// 6 s, quotes between.
const CHECKED_AT_MOST: usize = 8_192;

/// For a bar (not a revision) whose log has a day: its list's hash of each venue's newest bar,
/// the field of its venue, and the value that says it is the newest (`DAY START`).
pub(super) fn newest_names(keys: &Keys, p: &PendingBar) -> Option<[String; 3]> {
    let day = super::barsync::day_of(p.log).filter(|_| !p.rec.revision)?;
    let sym = p.rec.symbol_str();
    Some([
        keys.bars_newest(&sym, p.rec.interval_s),
        p.rec.channel.to_string(),
        super::barsync::newest_text(day, p.rec.bar.start_ns),
    ])
}

/// Says that bars are being restored, to which nodes, from where in the log.
pub(super) fn restoring_note(lost: &[SocketAddr], from: u64) {
    eprintln!(
        "gateway publish: Redis may have lost bars it had (a node restarted, or a replica \
         promoted that lagged: {}): restoring what its lists lack from offset {from} of the \
         bar log",
        lost.iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}
