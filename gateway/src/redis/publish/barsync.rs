//! Where the book's bar log stands in Redis, apart from the I/O, so that no bar goes into its
//! list twice: not when the publisher restarts, reconnects after a batch whose replies were
//! lost, or is a standby taking over with its own book's log, and none is lost when Redis
//! restarts empty.
//!
//! After each batch of bars the publisher writes `P:barlog` = `<log> <offset>`: the bar log's
//! identity (when it was begun, ns: `book::barlog::created_ns`) and the offset of its first
//! record not yet in the lists. When it (re)connects it reads that key back: if it names the log
//! being read, the records before the offset are in Redis and are skipped. What follows, or all
//! of another log (a new ring's, a standby host's book, a new day), is checked list by list
//! (below). A log without an identity (written before it had one) or no key (a fresh Redis) is
//! read from where the tail is.
//!
//! When Redis stands before what this publisher last wrote there (it restarted empty, or from
//! an older snapshot), the records it lost are read again and restored to the lists quietly:
//! appended and trimmed but not published, since the gateways that were up took them already
//! (and keep them), while one loading the lists now finds the history again.
//!
//! A node can lose its lists while the position, on another node, says nothing was lost (a
//! master of a cluster restarted empty, or a replica that lagged was promoted). So each node
//! holds a mark, `P:node:{nI}` (a key whose slot it serves): its run ID (`INFO server`) when
//! its lists were last known whole, written once every bar read went in and none is being
//! restored. After every (re)connection a node whose run ID is not the one its mark names (or
//! has none) restarted since, whether or not a publisher was running then: its lists are read
//! again from the log's start, checked, and restored ([`BarSync::restarted`]).
//!
//! The check: after every (re)connection the records read so far, and when the tail begins a
//! log the records it holds then (a standby host's publisher taking over brings its own book's
//! log, which made the same day; a publisher restarted may find its last batch appended past
//! the position it wrote), are checked list by list and venue by venue (a list holds every
//! venue's bars of its symbol, interleaved). Each list's hash `...:bars:N:newest` says, per
//! venue (field: its channel), the trading day and start of its newest bar in the list, `DAY
//! START` (written with every bar but revisions), and so does the list's last record
//! (`LINDEX -1`) when it is that venue's (its bar went in, the publisher failed before the
//! hash did); when that day is this log's, a bar of that venue that does not start after it is
//! in the list already and is skipped. A venue of another
//! day, or of none known, has every bar taken: a new day's bars start before the day before's
//! last. A trading day runs from [`book::barlog::DAY_STARTS_S`] after midnight UTC to the next.

use book::consolidate::FastMap;

/// The trading day a log was begun on (days since the epoch), if it has an identity.
pub(super) use book::barlog::day_of;

/// One venue's bars in a list: symbol, interval and the venue's channel.
pub(super) type Series = ([u8; 8], u8, u16);

/// What the tail must do after a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fix {
    /// Nothing.
    Stay,
    /// Skip ahead to this offset (Redis has what comes before).
    Skip(u64),
    /// Read again from this offset (Redis lost what comes after); the records of this log
    /// waiting to go out are dropped, as they come again.
    Restore(u64),
}

/// The state.
#[derive(Debug, Clone, Default)]
pub(super) struct BarSync {
    /// Where Redis' bars stand, as last known: the log and the offset of its first record not
    /// in the lists.
    at: Option<(u64, u64)>,
    /// Records of this log below this offset are restored, not published.
    quiet: Option<(u64, u64)>,
    /// Records of this log below this offset are checked against their lists.
    check: Option<(u64, u64)>,
    /// Per list, the start of its newest bar when that is of this log's day (None: it holds
    /// none of this day's), as Redis said.
    newest: FastMap<Series, Option<u64>>,
}

impl BarSync {
    /// Redis says its bars stand at `theirs` (after a (re)connection); the tail reads `log`
    /// (0: none yet, or one without an identity) and has read up to `read_to`.
    pub(super) fn resync(&mut self, theirs: Option<(u64, u64)>, log: u64, read_to: u64) -> Fix {
        let ours = std::mem::replace(&mut self.at, theirs);
        // the lists may have changed meanwhile
        self.newest.clear();
        // what was read may be in the lists in part (a batch whose replies were lost, bars
        // Redis kept beyond the position it had written): checked, never appended twice
        if log != 0 {
            let had = ours.map_or(0, |(_, o)| o);
            self.check = Some((log, read_to.max(had)));
        }
        let first = book::barlog::HEADER as u64;
        // how far this log went in before, and how far Redis has it now
        let had = ours.filter(|&(l, _)| l == log && log != 0).map(|(_, o)| o);
        let has = theirs
            .filter(|&(l, _)| l == log && log != 0)
            .map(|(_, o)| o);
        match (had, has) {
            (Some(o), has) if has.unwrap_or(first) < o => {
                self.quiet = Some((log, o));
                Fix::Restore(has.unwrap_or(first))
            }
            (_, Some(off)) if off > read_to => Fix::Skip(off),
            _ => Fix::Stay,
        }
    }

    /// A node restarted (another run ID) while Redis' position says nothing was lost: its lists
    /// may have been, so when this publisher wrote bars of `log` (the tail has read up to
    /// `read_to`), they are read again from the start and restored to that node's lists,
    /// checked first, so what the node kept (it came back with its data) is not appended
    /// twice.
    pub(super) fn restarted(&mut self, log: u64, read_to: u64) -> Fix {
        // how far this publisher had the log in: where a restore already under way goes quiet
        // to (Redis' position was behind it), or Redis' position
        let of_log = |x: Option<(u64, u64)>| x.filter(|&(l, _)| l == log && log != 0);
        let Some((_, had)) = of_log(self.quiet).or(of_log(self.at)) else {
            return Fix::Stay;
        };
        self.quiet = Some((log, had));
        self.check = Some((log, had.max(read_to)));
        self.newest.clear();
        Fix::Restore(book::barlog::HEADER as u64)
    }

    /// The tail began reading `log` (the first, or one that replaced the last), `len_now` bytes
    /// long: when the lists were written from a log (another one, or this one by a publisher
    /// that may have appended past the position it wrote last), what it holds now is checked.
    pub(super) fn opened(&mut self, log: u64, len_now: u64) {
        self.newest.clear();
        if log != 0 && self.at.is_some() {
            self.check = Some((log, len_now));
        }
    }

    /// Whether the record at `offset` of `log` is checked against its list.
    pub(super) fn checked(&self, log: u64, offset: u64) -> bool {
        self.check
            .is_some_and(|(l, below)| l == log && offset < below)
    }

    /// Whether the newest bar of `series`' list is known (else it is asked for).
    pub(super) fn knows(&self, series: &Series) -> bool {
        self.newest.contains_key(series)
    }

    /// Redis said where `series`' newest bar in its list stands: each of `seen` is a trading
    /// day and a start (the list's hash, its last record when that is the venue's); `log` is
    /// the log read. The newest of this log's day counts; none of it: every bar goes in.
    pub(super) fn learned(&mut self, series: Series, log: u64, seen: &[(u64, u64)]) {
        let today = day_of(log);
        let newest = seen
            .iter()
            .filter(|&&(day, _)| Some(day) == today)
            .map(|&(_, start)| start)
            .max();
        self.newest.insert(series, newest);
    }

    /// What Redis said of `series`' newest bar in its list: the start of this log's day's
    /// (`Some(None)`: none); `None` when not asked yet.
    pub(super) fn newest(&self, series: &Series) -> Option<Option<u64>> {
        self.newest.get(series).copied()
    }

    /// Whether a checked bar (not a revision) starting at `start` is in `series`' list already.
    pub(super) fn in_list(&self, series: &Series, start: u64) -> bool {
        self.newest
            .get(series)
            .is_some_and(|n| n.is_some_and(|n| start <= n))
    }

    /// Whether the record at `offset` of `log` is one Redis lost, restored without a publish.
    pub(super) fn quiet(&self, log: u64, offset: u64) -> bool {
        self.quiet
            .is_some_and(|(l, below)| l == log && offset < below)
    }

    /// Whether records of `log` from `read_to` on are ones Redis lost, still to be read again
    /// and restored.
    pub(super) fn restoring(&self, log: u64, read_to: u64) -> bool {
        self.quiet
            .is_some_and(|(l, below)| l == log && read_to < below)
    }

    /// Whether the record at `offset` of `log` is in Redis already.
    pub(super) fn in_redis(&self, log: u64, offset: u64) -> bool {
        self.at
            .is_some_and(|(l, off)| l == log && log != 0 && offset < off)
    }

    /// Redis has every record of `log` before `offset`; whether that is news (to be written).
    /// Never back: while bars are restored from before it, the position stays where it was.
    pub(super) fn settled(&mut self, log: u64, offset: u64) -> bool {
        let behind = self.at.is_some_and(|(l, o)| l == log && offset < o);
        let news = log != 0 && !behind && self.at != Some((log, offset));
        if news {
            self.at = Some((log, offset));
        }
        news
    }

    /// Writing the position failed: it is written again with the next batch.
    pub(super) fn unsaved(&mut self) {
        self.at = None;
    }
}

/// The `run_id` of an `INFO server` reply, if it has one.
pub(super) fn run_id(info: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(info).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// `<log> <offset>`, as the position key holds it.
pub(super) fn position_text(log: u64, offset: u64) -> String {
    format!("{log} {offset}")
}

/// A venue's newest bar in a list, as the list's hash holds it: `DAY START`.
pub(super) fn newest_text(day: u64, start_ns: u64) -> String {
    format!("{day} {start_ns}")
}

/// The day and start of a venue's newest bar in a list, if the hash's value is one.
pub(super) fn parse_newest(v: &[u8]) -> Option<(u64, u64)> {
    parse_position(v)
}

/// The position key's value, if it is one.
pub(super) fn parse_position(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (l, o) = s.split_once(' ')?;
    Some((l.parse().ok()?, o.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: u64 = 1_764_417_600_000_000_000;
    const FIRST: u64 = book::barlog::HEADER as u64;
    const R: u64 = book::barlog::RECORD as u64;

    #[test]
    fn a_restarted_publisher_goes_on_where_redis_stands() {
        // nothing read yet: nothing to move, and the records before the offset are skipped
        let mut s = BarSync::default();
        assert_eq!(s.resync(Some((LOG, FIRST + 5 * R)), 0, 0), Fix::Stay);
        assert!(s.in_redis(LOG, FIRST + 4 * R));
        assert!(!s.in_redis(LOG, FIRST + 5 * R));
        // records read already: ahead to Redis' offset
        let mut s = BarSync::default();
        assert_eq!(
            s.resync(Some((LOG, FIRST + 5 * R)), LOG, FIRST + 2 * R),
            Fix::Skip(FIRST + 5 * R)
        );
        assert!(s.settled(LOG, FIRST + 7 * R));
        assert!(!s.settled(LOG, FIRST + 7 * R), "no news");
        assert!(s.in_redis(LOG, FIRST + 6 * R));
        s.unsaved();
        assert!(s.settled(LOG, FIRST + 7 * R), "written again");
    }

    #[test]
    fn what_redis_lost_is_restored_quietly() {
        let mut s = BarSync::default();
        assert_eq!(s.resync(None, LOG, FIRST), Fix::Stay, "a fresh Redis");
        assert!(s.settled(LOG, FIRST + 8 * R));
        // Redis restarted empty: from the start, quietly up to where it stood
        assert_eq!(s.resync(None, LOG, FIRST + 10 * R), Fix::Restore(FIRST));
        assert!(s.quiet(LOG, FIRST) && s.quiet(LOG, FIRST + 7 * R));
        assert!(!s.quiet(LOG, FIRST + 8 * R), "never published yet");
        assert!(!s.in_redis(LOG, FIRST));
        // restored and more: then Redis came back from an older snapshot
        assert!(s.settled(LOG, FIRST + 12 * R));
        assert_eq!(
            s.resync(Some((LOG, FIRST + 3 * R)), LOG, FIRST + 12 * R),
            Fix::Restore(FIRST + 3 * R)
        );
        assert!(s.in_redis(LOG, FIRST + 2 * R));
        assert!(s.quiet(LOG, FIRST + 11 * R) && !s.quiet(LOG, FIRST + 12 * R));
        // a reconnection to the same Redis: nothing lost, nothing to do
        assert!(s.settled(LOG, FIRST + 12 * R));
        assert_eq!(
            s.resync(Some((LOG, FIRST + 12 * R)), LOG, FIRST + 12 * R),
            Fix::Stay
        );
        // another log was read meanwhile: nothing of this one to restore
        assert_eq!(s.resync(None, LOG + 1, FIRST), Fix::Stay);
    }

    #[test]
    fn another_log_or_no_position_reads_on_as_it_is() {
        let mut s = BarSync::default();
        assert_eq!(
            s.resync(Some((LOG, FIRST + 5 * R)), LOG + 1, FIRST),
            Fix::Stay
        );
        assert!(!s.in_redis(LOG + 1, FIRST));
        let mut s = BarSync::default();
        assert_eq!(s.resync(None, LOG, FIRST), Fix::Stay);
        assert!(!s.in_redis(LOG, FIRST));
        // logs without an identity are never taken for one another
        assert_eq!(s.resync(Some((0, FIRST + 5 * R)), 0, FIRST), Fix::Stay);
        assert!(!s.in_redis(0, FIRST));
        assert!(!s.settled(0, FIRST + R));
    }

    #[test]
    fn another_log_of_the_day_is_checked_list_by_list() {
        // a standby's log, begun the same day as the one Redis has bars of
        let theirs = LOG;
        let ours = LOG + 3_600_000_000_000;
        let mut s = BarSync::default();
        assert_eq!(s.resync(Some((theirs, FIRST + 9 * R)), 0, 0), Fix::Stay);
        s.opened(ours, FIRST + 20 * R);
        assert!(s.checked(ours, FIRST) && s.checked(ours, FIRST + 19 * R));
        assert!(!s.checked(ours, FIRST + 20 * R), "new since");
        let (a, b, c): (Series, Series, Series) = (
            (*b"A       ", 1, 0),
            (*b"B       ", 1, 0),
            (*b"C       ", 60, 0),
        );
        assert!(!s.knows(&a));
        let day = day_of(ours);
        let day = day.unwrap();
        s.learned(a, ours, &[(day, 500), (day, 450)]);
        s.learned(b, ours, &[(day - 1, 500)]);
        s.learned(c, ours, &[]);
        assert!(s.knows(&a));
        assert!(s.in_list(&a, 400) && s.in_list(&a, 500) && !s.in_list(&a, 501));
        assert!(!s.in_list(&b, 400), "the day before's: every bar goes in");
        assert!(!s.in_list(&c, 400), "of no known day: every bar goes in");
        // another venue's bars in A's list are its own
        let a2: Series = (*b"A       ", 1, 2);
        assert!(!s.knows(&a2) && !s.in_list(&a2, 400));
        s.learned(a2, ours, &[(day, 300), (day - 1, 900)]);
        assert!(s.in_list(&a2, 300) && !s.in_list(&a2, 400));
        // a reconnection asks again
        s.resync(Some((ours, FIRST + 20 * R)), ours, FIRST + 20 * R);
        assert!(!s.knows(&a));
        // the same log as Redis': what follows its position is checked too (the last
        // publisher may have appended past it)
        let mut s = BarSync::default();
        s.resync(Some((ours, FIRST + 4 * R)), 0, 0);
        s.opened(ours, FIRST + 20 * R);
        assert!(s.in_redis(ours, FIRST + 3 * R));
        assert!(s.checked(ours, FIRST + 4 * R) && !s.checked(ours, FIRST + 20 * R));
        // a fresh Redis: nothing to check
        let mut s = BarSync::default();
        s.resync(None, 0, 0);
        s.opened(ours, FIRST + 20 * R);
        assert!(!s.checked(ours, FIRST));
        // the day begins at 06:00 UTC
        let midnight = 20_000 * 86_400 * 1_000_000_000;
        let h = 3_600_000_000_000;
        assert_eq!(day_of(midnight + 5 * h), day_of(midnight - 12 * h));
        assert_ne!(day_of(midnight + 5 * h), day_of(midnight + 7 * h));
        assert_eq!(day_of(0), None);
    }

    #[test]
    fn a_restarted_node_has_the_log_read_again_for_its_lists() {
        let mut s = BarSync::default();
        // nothing written of this log yet: nothing to restore
        assert_eq!(s.restarted(LOG, FIRST + 3 * R), Fix::Stay);
        s.resync(Some((LOG, FIRST + 5 * R)), LOG, FIRST + 7 * R);
        assert_eq!(s.restarted(LOG, FIRST + 7 * R), Fix::Restore(FIRST));
        // the position does not go back while the log is read again
        assert!(!s.settled(LOG, FIRST + R));
        assert!(s.in_redis(LOG, FIRST + 4 * R));
        // what Redis had goes in quietly, and everything read so far is checked first
        assert!(s.quiet(LOG, FIRST + 4 * R) && !s.quiet(LOG, FIRST + 5 * R));
        assert!(s.checked(LOG, FIRST + 6 * R) && !s.checked(LOG, FIRST + 7 * R));
        // the master holding the position came back from an older snapshot and another one
        // restarted: everything this publisher had written is restored, from the start
        let mut s = BarSync::default();
        s.resync(Some((LOG, FIRST + 5 * R)), LOG, FIRST + 5 * R);
        assert_eq!(
            s.resync(Some((LOG, FIRST + 2 * R)), LOG, FIRST + 5 * R),
            Fix::Restore(FIRST + 2 * R)
        );
        assert_eq!(s.restarted(LOG, FIRST + 5 * R), Fix::Restore(FIRST));
        assert!(s.quiet(LOG, FIRST) && s.quiet(LOG, FIRST + 4 * R) && !s.quiet(LOG, FIRST + 5 * R));
        // another log's position says nothing of this one
        let mut s = BarSync::default();
        s.resync(Some((LOG + 1, FIRST + 5 * R)), LOG, FIRST);
        assert_eq!(s.restarted(LOG, FIRST), Fix::Stay);
    }

    #[test]
    fn the_run_id_is_read_from_info() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nrun_id:5f1c9a\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info).as_deref(), Some("5f1c9a"));
        assert_eq!(run_id(b"# Server\r\nredis_version:7\r\n"), None);
        assert_eq!(run_id(b"run_id:\r\n"), None);
        assert_eq!(run_id(&[0xff, 0xfe]), None);
    }

    #[test]
    fn the_position_text_round_trips() {
        assert_eq!(
            parse_position(position_text(LOG, 4_864).as_bytes()),
            Some((LOG, 4_864))
        );
        assert_eq!(parse_position(b"nonsense"), None);
        assert_eq!(parse_position(b"1 x"), None);
    }
}
