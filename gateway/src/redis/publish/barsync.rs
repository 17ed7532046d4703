//! Where the book's bar log stands in Redis, apart from the I/O, so that a publisher restarted
//! goes on where the last one stopped instead of appending the whole log to the lists again.
//!
//! After each batch of bars the publisher writes `P:barlog` = `<log> <offset>`: the bar log's
//! identity (when it was begun, ns: `book::barlog::created_ns`) and the offset of its first
//! record not yet in the lists. When it (re)connects it reads that key back: if it names the log
//! being read, the records before the offset are in Redis and are skipped. Another log (a new
//! ring's, a standby host's book, a new day), a log without an identity (written before it had
//! one) or no key (a fresh Redis) is read from where the tail is, as before: at least once.
//!
//! When Redis stands before what this publisher last wrote there (it restarted empty, or from
//! an older snapshot), the records it lost are read again and restored to the lists quietly:
//! appended and trimmed but not published, since the gateways that were up took them already
//! (and keep them), while one loading the lists now finds the history again.

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
}

impl BarSync {
    /// Redis says its bars stand at `theirs` (after a (re)connection); the tail reads `log`
    /// (0: none yet, or one without an identity) and has read up to `read_to`.
    pub(super) fn resync(&mut self, theirs: Option<(u64, u64)>, log: u64, read_to: u64) -> Fix {
        let ours = std::mem::replace(&mut self.at, theirs);
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

    /// Whether the record at `offset` of `log` is one Redis lost, restored without a publish.
    pub(super) fn quiet(&self, log: u64, offset: u64) -> bool {
        self.quiet
            .is_some_and(|(l, below)| l == log && offset < below)
    }

    /// Whether the record at `offset` of `log` is in Redis already.
    pub(super) fn in_redis(&self, log: u64, offset: u64) -> bool {
        self.at
            .is_some_and(|(l, off)| l == log && log != 0 && offset < off)
    }

    /// Redis has every record of `log` before `offset`; whether that is news (to be written).
    pub(super) fn settled(&mut self, log: u64, offset: u64) -> bool {
        let news = log != 0 && self.at != Some((log, offset));
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

/// `<log> <offset>`, as the position key holds it.
pub(super) fn position_text(log: u64, offset: u64) -> String {
    format!("{log} {offset}")
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
    fn the_position_text_round_trips() {
        assert_eq!(
            parse_position(position_text(LOG, 4_864).as_bytes()),
            Some((LOG, 4_864))
        );
        assert_eq!(parse_position(b"nonsense"), None);
        assert_eq!(parse_position(b"1 x"), None);
    }
}
