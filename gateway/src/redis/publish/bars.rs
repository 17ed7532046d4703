//! Bars: the book's bar log followed, each new bar appended to its series' capped list (with
//! the other bars of that list waiting, as one run: [`regroup`](super::regroup),
//! [`runs`](super::runs)) and then published on its symbol's bars channel, its fate decided by
//! the reply to its run's push ([`barfate`](super::barfate)).

use super::Publisher;
use super::barpos::restoring_note;
use super::barsync::Fix;
use book::barlog::{BarRecord, RECORD};
use std::time::{Duration, Instant};

/// Bars a list keeps (`LTRIM KEY -600 -1`).
pub(super) const LIST_KEEP: u32 = 600;

/// Bars held at most while Redis is away (72 bytes each, and where they are in the log); the
/// log is read on only as they go out.
pub const MAX_PENDING_BARS: usize = 1 << 20;

/// How often the bar log is looked at.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Bars read from the log at most a poll: a read is done between quotes, and 262,144 records
/// took 25 ms (a quote stalled that long at each poll while a backlog was read), 4,096 take
/// about half a millisecond. After a full read the next comes with the next flush, so a
/// backlog is read at up to a few million records a second (most are skipped in a restore to
/// one node of several), half a millisecond at a time.
const READ_AT_MOST: usize = 4096;

/// Series whose lists are asked at most a flush, when bars waiting may be in them already
/// (`publish/barpos.rs`); while more wait, the publisher flushes again at once, quotes first.
/// (What a flush writes is bounded in `publish/runs.rs`.)
pub const CHECKED_SERIES_PER_FLUSH: usize = 64;

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
    /// Whether the last flush left bars it could have written (more than a flush writes): the
    /// caller flushes again without waiting for quotes.
    pub fn more_bars(&self) -> bool {
        self.more_bars
    }

    /// Whether bar lists may lack bars that will go in without a publish (the heartbeat says
    /// so, and replicas read lists only once it is over): a restore under way (its scan, its
    /// records still to read or to write), or, after a (re)connection, not yet ruled out. (A
    /// node found restarted before there is a bar log to read does not count: with no log
    /// there is nothing to restore, and the lists are what they are until the book begins one.)
    pub(super) fn bars_restoring(&self) -> bool {
        let Some(t) = self.bar_tail.as_ref() else {
            return false;
        };
        self.bar_synced != self.epoch_ns
            || self.bar_scan.is_some()
            || self.bar_sync.restoring(t.log(), t.offset())
            // (read before the bars after them: the first one waiting)
            || self.bars_pending.front().is_some_and(|p| p.quiet)
            || self.regroup.quiet() > 0
    }

    /// Also publishes the bars appended to the bar log at `path` (the book's `<quotes>.bars`).
    pub fn follow_bars(&mut self, path: std::path::PathBuf) {
        self.bar_tail = Some(crate::bars::Tail::new(path));
    }

    /// Reads the bar log's new records (every [`POLL_EVERY`] at most), leaving out the ones Redis has
    /// ([`super::barsync`]): only as many as there is room for among the bars waiting, so
    /// while Redis is away (or slow to take a whole log restored) the rest wait in the log,
    /// none dropped.
    fn poll_bars(&mut self) {
        let Some(t) = self.bar_tail.as_mut() else {
            return;
        };
        if Instant::now() < self.next_bar_poll {
            return;
        }
        self.next_bar_poll = Instant::now() + POLL_EVERY;
        // a restore waits for the scan of what it may leave out (seconds for a busy day's
        // log, against minutes to append it whole)
        if let Some(s) = &self.bar_scan {
            let Some(cuts) = s.done() else {
                return;
            };
            if cuts.complete() > 0 {
                eprintln!(
                    "gateway publish: the restore leaves out what {} series' lists would trim at \
                     once (found in {:.1} s)",
                    cuts.complete(),
                    s.began.elapsed().as_secs_f64()
                );
            }
            self.bar_cuts = Some(cuts);
            self.bar_scan = None;
        }
        let held = self.bars_pending.len() + self.regroup.len();
        // a backlog is read a window ahead of what goes in, no more ([`super::regroup`])
        let room = (self.cfg.max_pending_bars)
            .clamp(1, super::runs::REGROUP_WINDOW)
            .saturating_sub(held);
        if room == 0 {
            return;
        }
        // no log yet (book not started): nothing to publish
        let Ok((begun, new)) = t.read_new_at_most(room.min(READ_AT_MOST)) else {
            return;
        };
        if new.len() == READ_AT_MOST {
            // a backlog (most of it skipped, in a restore to one node of several): the next
            // read comes with the next flush
            self.next_bar_poll = Instant::now();
        }
        let log = t.log();
        let first = t.offset() - (new.len() * RECORD) as u64;
        if begun {
            self.bar_sync.opened(log, t.len_now());
            // nodes found restarted before a log was read: what this log put in their lists
            // is restored (checked), from its start
            let restarted = std::mem::take(&mut self.restarted_unread);
            if !restarted.is_empty()
                && let Fix::Restore(from) = self.bar_sync.restarted(log, t.offset())
            {
                restoring_note(&restarted, from);
                self.stats.bar_restores += 1;
                self.bars_lost_on = restarted;
                // read again from there once the scan of what the restore may leave out is
                // over
                t.seek(from);
                self.scan_cuts();
                return;
            }
        }
        for (k, rec) in new.into_iter().enumerate() {
            let at = first + (k * RECORD) as u64;
            // restored bars may be before the position (a node that restarted lost them)
            let quiet = self.bar_sync.quiet(log, at);
            if !quiet && self.bar_sync.in_redis(log, at) {
                self.stats.bars_skipped += 1;
                continue;
            }
            let check = self.bar_sync.checked(log, at);
            if quiet && self.left_out(log, at, &rec, check) == Some(true) {
                self.stats.bars_trimmed += 1;
                continue;
            }
            // in a cluster, only the lists of the nodes that lost them (the others have theirs)
            if quiet
                && let Some(link) = self.link.as_ref()
                && !self.bars_lost_on.is_empty()
            {
                // (one node: no key to hash, a restore reads millions of records)
                let k = match link.topo.nodes.len() {
                    1 => 0,
                    _ => link
                        .topo
                        .node_of(self.keys.bars(&rec.symbol_str(), rec.interval_s).as_bytes()),
                };
                if !self.bars_lost_on.contains(&link.topo.nodes[k]) {
                    self.stats.bars_skipped += 1;
                    continue;
                }
            }
            // not reached (read only as far as there is room), kept as the bound
            if self.bars_pending.len() >= self.cfg.max_pending_bars.max(1) {
                self.bars_pending.pop_front();
                self.stats.bars_dropped += 1;
            }
            self.bars_pending.push_back(PendingBar {
                rec,
                log,
                at,
                quiet,
                check,
            });
        }
    }

    /// When Redis lost bars and the tail is to read them again, starts the scan of what the
    /// restore may leave out ([`bartrim`](super::bartrim)): from where the tail is to the
    /// log's end. Otherwise drops what an earlier one found.
    pub(super) fn scan_cuts(&mut self) {
        self.bar_scan = None;
        self.bar_cuts = None;
        let Some(t) = self.bar_tail.as_ref() else {
            return;
        };
        if self.bar_sync.restoring(t.log(), t.offset()) {
            self.bar_scan = Some(super::bartrim::Scan::start(t.path(), t.log(), t.offset()));
        }
    }

    /// Whether a bar restored quietly (at `at` of `log`, checked against its list or not) is
    /// left out, its list trimming it at once ([`bartrim`](super::bartrim)); `None` until its
    /// list is asked.
    pub(super) fn left_out(
        &self,
        log: u64,
        at: u64,
        rec: &book::barlog::BarRecord,
        checked: bool,
    ) -> Option<bool> {
        let earliest = self
            .bar_cuts
            .as_ref()
            .and_then(|c| c.before_cut(log, at, rec));
        let newest = self
            .bar_sync
            .newest(&(rec.symbol, rec.interval_s, rec.channel));
        super::bartrim::left_out(earliest, checked, newest)
    }

    /// Writes the bars waiting (when every node is up), each list's run in one `RPUSH` with a
    /// trim to the latest 600 when it may pass them, and each bar not restored on its symbol's
    /// channel after it ([`super::runs`]). Each bar's fate is decided by the reply to its
    /// list's push ([`barfate`](super::barfate)): appended or refused, it is done (a refusal is
    /// counted, and logged with Redis's reason); MOVED waits for the new map; ASK is appended
    /// where its list is now and published again; no reply (the node failed) waits for the
    /// node. A bar Redis appended is never appended again.
    pub(super) fn flush_bars(&mut self) {
        self.more_bars = false;
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
        // the bars checked (or not to be) go to their lists' groups, in log order; the ones
        // after them are checked by a flush to come
        while self.bars_pending.front().is_some_and(|p| !p.check) {
            let p = self.bars_pending.pop_front().expect("one is first");
            self.regroup.push(p);
        }
        if !self.regroup.is_empty() {
            let wrote = self.groups_due() && self.flush_groups();
            // more to read (a backlog), to check, or to write: no wait
            self.more_bars =
                wrote || !self.bars_pending.is_empty() || Instant::now() >= self.next_bar_poll;
            return;
        }
        if !self.bars_pending.is_empty() {
            // (the check took this flush, and more are to be checked)
            self.more_bars = true;
            return;
        }
        if let Err((k, e)) = self.save_bar_position().and_then(|()| self.write_marks()) {
            self.node_failed(k, e);
        }
    }
}
