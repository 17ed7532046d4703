//! The bars a remote gateway takes from Redis, kept in a bar log in memory that `/v1/bars` reads
//! as it reads the book's.

use book::barlog::{self, BarLogWriter};
use std::collections::HashMap;

/// The bars a replica took, appended to a bar log in memory that `/v1/bars` reads as it reads the
/// book's. Bars from the channel are appended as they come (new bars, revisions, and a new
/// session's, which start earlier than the last day's); bars from reloading a list after a
/// (re)subscription only when they come after the series' last new bar taken in the list, so a
/// reload adds nothing twice (revisions after it come again, and replace the same bars again).
pub(super) struct BarMirror {
    pub(super) log: BarLogWriter,
    pub(super) last: HashMap<([u8; 8], u8), u64>,
    /// Records that were not bars (wrong length).
    pub(super) bad: u64,
}

impl BarMirror {
    /// Bars from the channel: each is new, a revision, or a new session's.
    pub(super) fn take(&mut self, records: &mut Vec<Vec<u8>>) {
        for b in records.drain(..) {
            if b.len() != barlog::RECORD {
                self.bad += 1;
                continue;
            }
            let r = barlog::record_from_bytes(&b);
            // a revision is of an older bar: a reload goes on from the newest
            if !r.revision {
                self.last.insert((r.symbol, r.interval_s), r.bar.start_ns);
            }
            let _ = self.log.append(r);
        }
        let _ = self.log.flush();
    }

    /// One series' list, oldest first, as reloaded after a (re)subscription: only what comes
    /// after the last bar taken (all of it when none was, or it is no longer in the list).
    pub(super) fn reload(&mut self, list: &mut Vec<Vec<u8>>) {
        let bad = list.iter().filter(|b| b.len() != barlog::RECORD).count();
        self.bad += bad as u64;
        list.retain(|b| b.len() == barlog::RECORD);
        let Some(first) = list.first().map(|b| barlog::record_from_bytes(b)) else {
            return;
        };
        let from = match self.last.get(&(first.symbol, first.interval_s)) {
            Some(&last) => list
                .iter()
                .rposition(|b| {
                    let r = barlog::record_from_bytes(b);
                    !r.revision && r.bar.start_ns == last
                })
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let mut rest = list.split_off(from);
        list.clear();
        self.take(&mut rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_adds_no_bar_twice_and_a_new_session_still_comes_through() {
        let p = std::env::temp_dir().join(format!("mirror-{}", std::process::id()));
        let mut m = BarMirror {
            log: BarLogWriter::create(&p).unwrap(),
            last: HashMap::new(),
            bad: 0,
        };
        let bar = |start: u64, close: u32| {
            let mut r = barlog::record_from_bytes(&[0u8; barlog::RECORD]);
            r.symbol = *b"AAPL    ";
            r.interval_s = 1;
            r.bar.start_ns = start;
            r.bar.close = close;
            r.to_bytes().to_vec()
        };
        let starts = || -> Vec<u64> {
            barlog::read_all(&p)
                .unwrap()
                .iter()
                .map(|r| r.bar.start_ns)
                .collect()
        };
        m.take(&mut vec![bar(10, 1), bar(11, 1)]);
        // a reload after a reconnect: the list's bars up to the last one taken are here already
        m.reload(&mut vec![bar(9, 1), bar(10, 1), bar(11, 1), bar(12, 1)]);
        assert_eq!(starts(), [10, 11, 12]);
        // the next day's first bar starts earlier than yesterday's last: it comes all the same,
        // and a reload of a list holding both days adds nothing twice
        m.take(&mut vec![bar(3, 1)]);
        m.reload(&mut vec![bar(11, 1), bar(12, 1), bar(3, 1), bar(4, 1)]);
        assert_eq!(starts(), [10, 11, 12, 3, 4]);
        // a list that no longer holds the last bar taken (trimmed past it): all of it
        m.reload(&mut vec![bar(7, 1), bar(8, 1)]);
        assert_eq!(starts(), [10, 11, 12, 3, 4, 7, 8]);
        m.take(&mut vec![vec![1, 2, 3]]);
        assert_eq!(m.bad, 1);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_revision_taken_does_not_move_where_a_reload_goes_on_from() {
        let p = std::env::temp_dir().join(format!("mirror-rev-{}", std::process::id()));
        let mut m = BarMirror {
            log: BarLogWriter::create(&p).unwrap(),
            last: HashMap::new(),
            bad: 0,
        };
        let bar = |start: u64, close: u32, revision: bool| {
            let mut r = barlog::record_from_bytes(&[0u8; barlog::RECORD]);
            r.symbol = *b"AAPL    ";
            r.interval_s = 1;
            r.bar.start_ns = start;
            r.bar.close = close;
            r.revision = revision;
            r.to_bytes().to_vec()
        };
        // a rebuild revised bar 10; the link dropped; a second rebuild revised it again, and
        // bar 12 closed
        m.take(&mut vec![
            bar(10, 1, false),
            bar(11, 1, false),
            bar(10, 2, true),
        ]);
        m.reload(&mut vec![
            bar(10, 1, false),
            bar(11, 1, false),
            bar(10, 2, true),
            bar(10, 3, true),
            bar(12, 1, false),
        ]);
        let got: Vec<(u64, u32, bool)> = barlog::read_all(&p)
            .unwrap()
            .iter()
            .map(|r| (r.bar.start_ns, r.bar.close, r.revision))
            .collect();
        // what came after bar 11 (the last new bar taken) comes: the revision taken already
        // again (it replaces the same bar again), the one missed (going on after the last
        // record starting at 10 would miss it), and the new bar
        assert_eq!(
            got,
            [
                (10, 1, false),
                (11, 1, false),
                (10, 2, true),
                (10, 2, true),
                (10, 3, true),
                (12, 1, false)
            ]
        );
        std::fs::remove_file(&p).unwrap();
    }
}
