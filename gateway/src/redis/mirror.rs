//! The bars a remote gateway takes from Redis, kept in a bar log in memory that `/v1/bars` reads
//! as it reads the book's.

use book::barlog::{self, BarLogWriter};
use book::consolidate::FastMap as HashMap;

/// The bars a replica took, appended to a bar log in memory that `/v1/bars` reads as it reads the
/// book's. A symbol's list holds every venue's bars, interleaved; each venue's are a series of
/// their own here (symbol, interval, channel). Bars from the channel are appended as they come
/// (new bars, revisions, and a new session's, which start earlier than the last day's); bars
/// from reloading a list after a (re)subscription only when they come after their venue's last
/// new bar taken in the list, so a reload adds nothing twice (revisions after it come again,
/// and replace the same bars again). A bar published while its list was being loaded is in
/// the list and comes on the channel after it too: the newest bars a reload took ([`RECENT`] a
/// series) are remembered, and the channel's copy of one of them is not taken again.
pub(super) struct BarMirror {
    pub(super) log: BarLogWriter,
    pub(super) last: HashMap<Series, u64>,
    /// Per series, the newest records the last reload took, until a newer bar comes.
    pub(super) recent: HashMap<Series, Vec<[u8; barlog::RECORD]>>,
    /// Records that were not bars of the channel's or list's symbol (wrong length, another
    /// symbol or interval).
    pub(super) bad: u64,
    /// The log's length past which it is compacted.
    pub(super) compact_at: u64,
    /// Times the log was compacted.
    pub(super) compactions: u64,
}

/// The mirror's log is compacted past this (it would otherwise grow for as long as the gateway
/// runs, day after day): what a reader keeps of it, [`crate::bars::KEEP`] bars a series, stays.
pub(super) const COMPACT_AT: u64 = 256 << 20;

/// One venue's bars of a symbol at an interval: symbol, interval, channel.
type Series = ([u8; 8], u8, u16);

fn series_of(r: &barlog::BarRecord) -> Series {
    (r.symbol, r.interval_s, r.channel)
}

/// Record `b` from Redis, if it is one of `sym`'s bars (the channel or list it came from) at an
/// interval charts show, 1 or 60 s (and at `interval_s`, for a list of one). Anything else
/// there is not ours (someone else's value in our key space, a writer of another version): it
/// is counted and left out, so what a stranger writes grows nothing here.
fn ours(
    sym: &str,
    interval_s: Option<u8>,
    b: &[u8],
) -> Option<([u8; barlog::RECORD], barlog::BarRecord)> {
    let bytes = <[u8; barlog::RECORD]>::try_from(b).ok()?;
    let r = barlog::record_from_bytes(&bytes);
    let interval_ok =
        matches!(r.interval_s, 1 | 60) && interval_s.is_none_or(|i| i == r.interval_s);
    // byte for byte, padding included (another padding would be another series)
    let mut padded = [b' '; 8];
    let symbol_ok = sym.len() <= 8 && {
        padded[..sym.len()].copy_from_slice(sym.as_bytes());
        r.symbol == padded
    };
    (interval_ok && symbol_ok).then_some((bytes, r))
}

/// The newest records of a reload remembered per series: more than a list gains while it is
/// being loaded.
pub(super) const RECENT: usize = 8;

impl BarMirror {
    /// An empty mirror writing to `log`.
    pub(super) fn new(log: BarLogWriter) -> BarMirror {
        BarMirror {
            log,
            last: HashMap::default(),
            recent: HashMap::default(),
            bad: 0,
            compact_at: COMPACT_AT,
            compactions: 0,
        }
    }

    /// Flushes the log, and compacts it once it has grown past [`BarMirror::compact_at`] (then
    /// twice what is left, at least that) and past twice what it would keep of every series
    /// taken (so the first load of many full lists is not compacted for nothing).
    fn flush(&mut self) {
        let _ = self.log.flush();
        let kept = (self.last.len() * crate::bars::KEEP * barlog::RECORD) as u64;
        if self.log.len() > self.compact_at.max(2 * kept)
            && self.log.compact(crate::bars::KEEP).is_ok()
        {
            self.compactions += 1;
            self.compact_at = self.compact_at.max(2 * self.log.len());
        }
    }

    /// Bars from the channel (each with the symbol of the channel it came on): each is new, a
    /// revision, or a new session's, unless a reload took it just before.
    pub(super) fn take(&mut self, records: &mut Vec<(String, Vec<u8>)>) {
        for (sym, b) in records.drain(..) {
            let Some((bytes, r)) = ours(&sym, None, &b) else {
                self.bad += 1;
                continue;
            };
            let series = series_of(&r);
            if let Some(recent) = self.recent.get_mut(&series) {
                if let Some(i) = recent.iter().position(|x| *x == bytes) {
                    // in the list the reload took: here twice
                    recent.remove(i);
                    continue;
                }
                let newest = recent
                    .iter()
                    .map(|x| barlog::record_from_bytes(x).bar.start_ns)
                    .max();
                if !r.revision && newest.is_none_or(|n| r.bar.start_ns > n) {
                    // past what the reload took: the overlap is over
                    self.recent.remove(&series);
                }
            }
            self.append(r);
        }
        self.flush();
    }

    fn append(&mut self, r: barlog::BarRecord) {
        // a revision is of an older bar: a reload goes on from the newest
        if !r.revision {
            self.last.insert(series_of(&r), r.bar.start_ns);
        }
        let _ = self.log.append(r);
    }

    /// One symbol's list at one interval, oldest first, as reloaded after a (re)subscription:
    /// of each venue, only what comes after its last bar taken (all of it when none was, or it
    /// is no longer in the list).
    pub(super) fn reload(&mut self, sym: &str, interval_s: u8, list: &mut Vec<Vec<u8>>) {
        let n = list.len();
        let (records, decoded): (Vec<[u8; barlog::RECORD]>, Vec<barlog::BarRecord>) = list
            .drain(..)
            .filter_map(|b| ours(sym, Some(interval_s), &b))
            .unzip();
        self.bad += (n - records.len()) as u64;
        // per venue, where the list goes on: after the last record of its last bar taken
        let mut from: HashMap<Series, usize> = HashMap::default();
        for (i, r) in decoded.iter().enumerate().rev() {
            let series = series_of(r);
            if !r.revision
                && !from.contains_key(&series)
                && self.last.get(&series) == Some(&r.bar.start_ns)
            {
                from.insert(series, i + 1);
            }
        }
        let mut recent: HashMap<Series, Vec<[u8; barlog::RECORD]>> = HashMap::default();
        for (i, (r, b)) in decoded.iter().zip(&records).enumerate() {
            let series = series_of(r);
            if i < from.get(&series).copied().unwrap_or(0) {
                continue;
            }
            let kept = recent.entry(series).or_default();
            if kept.len() == RECENT {
                kept.remove(0);
            }
            kept.push(*b);
            self.append(*r);
        }
        self.flush();
        // the venues of this list with nothing new: no overlap to watch for
        if let Some(r) = decoded.first() {
            self.recent
                .retain(|s, _| (s.0, s.1) != (r.symbol, r.interval_s) || recent.contains_key(s));
        }
        self.recent.extend(recent);
    }
}

/// Fuzz target `bar_records`: bars from Redis as a remote gateway takes them, the bytes as
/// they come. `data` is ops, each a byte then records of [`barlog::RECORD`] bytes (the last
/// one cut where `data` ends). The op's bit 0: a list reloaded (its bits 5 and 6: how many
/// records) or one bar on a channel; bits 2 and 3: which symbol; bit 4: minute bars; bit 7:
/// each record is made that symbol's at that interval, so the folding is reached. After each
/// op: records that are not the symbol's are counted, every series taken is of a symbol and
/// interval it may be, the log stays within its compaction bound, and each chart reads back
/// no longer than asked.
pub fn fuzz(data: &[u8]) {
    const SYMBOLS: [&str; 3] = ["AAPL", "MSFT", "A"];
    let Ok((file, path)) = super::replica::memfd(c"fuzz-bars") else {
        return;
    };
    let Ok(log) = BarLogWriter::create_in(file) else {
        return;
    };
    let mut m = BarMirror::new(log);
    m.compact_at = (barlog::HEADER + 64 * barlog::RECORD) as u64;
    let mut charts = crate::bars::BarIndex::new(path);
    let padded = |sym: &str| {
        let mut s = [b' '; 8];
        s[..sym.len()].copy_from_slice(sym.as_bytes());
        s
    };
    let mut at = 0;
    while let Some(&op) = data.get(at) {
        at += 1;
        let sym = SYMBOLS[((op as usize >> 2) & 3) % 3];
        let interval_s = if op & 0x10 != 0 { 60 } else { 1 };
        let n = if op & 1 == 0 {
            1
        } else {
            (op as usize >> 5) & 3
        };
        let mut records = Vec::new();
        for _ in 0..n {
            let end = (at + barlog::RECORD).min(data.len());
            let mut b = data[at..end].to_vec();
            at = end;
            if op & 0x80 != 0 && b.len() == barlog::RECORD {
                let mut r = barlog::record_from_bytes(&b);
                r.symbol = padded(sym);
                r.interval_s = interval_s;
                b = r.to_bytes().to_vec();
            }
            records.push(b);
        }
        let valid = records
            .iter()
            .filter(|b| ours(sym, (op & 1 != 0).then_some(interval_s), b).is_some())
            .count();
        let bad = m.bad;
        if op & 1 == 0 {
            m.take(&mut records.into_iter().map(|b| (sym.to_string(), b)).collect());
        } else {
            m.reload(sym, interval_s, &mut records);
        }
        assert_eq!(m.bad - bad, (n - valid) as u64, "records not the symbol's");
        assert!(
            m.last.keys().chain(m.recent.keys()).all(|&(s, i, _)| {
                SYMBOLS.iter().any(|&x| padded(x) == s) && matches!(i, 1 | 60)
            }),
            "a series no channel or list may hold"
        );
        assert!(m.log.len() <= m.compact_at, "the log past its bound");
        for s in SYMBOLS {
            for i in [1, 60] {
                let got = charts.bars(padded(s), i, None, 16);
                assert!(got.is_ok_and(|b| b.len() <= 16), "a chart of {s} at {i} s");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AAPL 1-second bar's record.
    fn bar(start: u64, close: u32, revision: bool) -> Vec<u8> {
        let mut r = barlog::record_from_bytes(&[0u8; barlog::RECORD]);
        r.symbol = *b"AAPL    ";
        r.interval_s = 1;
        r.bar.start_ns = start;
        r.bar.close = close;
        r.revision = revision;
        r.to_bytes().to_vec()
    }

    /// Records from AAPL's bars channel.
    fn live(records: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
        records
            .into_iter()
            .map(|r| ("AAPL".to_string(), r))
            .collect()
    }

    /// The starts of the bars in the log at `p`.
    fn starts(p: &std::path::Path) -> Vec<u64> {
        barlog::read_all(p)
            .unwrap()
            .iter()
            .map(|r| r.bar.start_ns)
            .collect()
    }

    #[test]
    fn a_reload_adds_no_bar_twice_and_a_new_session_still_comes_through() {
        let p = std::env::temp_dir().join(format!("mirror-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create(&p).unwrap());
        let bar = |start: u64, close: u32| bar(start, close, false);
        let starts = || starts(&p);
        m.take(&mut live(vec![bar(10, 1), bar(11, 1)]));
        // a reload after a reconnect: the list's bars up to the last one taken are here already
        m.reload(
            "AAPL",
            1,
            &mut vec![bar(9, 1), bar(10, 1), bar(11, 1), bar(12, 1)],
        );
        assert_eq!(starts(), [10, 11, 12]);
        // the next day's first bar starts earlier than yesterday's last: it comes all the same,
        // and a reload of a list holding both days adds nothing twice
        m.take(&mut live(vec![bar(3, 1)]));
        m.reload(
            "AAPL",
            1,
            &mut vec![bar(11, 1), bar(12, 1), bar(3, 1), bar(4, 1)],
        );
        assert_eq!(starts(), [10, 11, 12, 3, 4]);
        // a list that no longer holds the last bar taken (trimmed past it): all of it
        m.reload("AAPL", 1, &mut vec![bar(7, 1), bar(8, 1)]);
        assert_eq!(starts(), [10, 11, 12, 3, 4, 7, 8]);
        m.take(&mut live(vec![vec![1, 2, 3]]));
        assert_eq!(m.bad, 1);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn fuzz_seeds_and_mutations() {
        feed_handler::fuzzing::seeds_and_mutations("bar_records", 3, super::fuzz);
    }

    #[test]
    fn what_is_not_the_channels_or_lists_own_bar_is_counted_and_left_out() {
        let p = std::env::temp_dir().join(format!("mirror-strange-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create(&p).unwrap());
        let with = |f: &dyn Fn(&mut barlog::BarRecord)| {
            let mut r = barlog::record_from_bytes(&bar(10, 1, false));
            f(&mut r);
            r.to_bytes().to_vec()
        };
        let msft = with(&|r| r.symbol = *b"MSFT    ");
        let interval_7 = with(&|r| r.interval_s = 7);
        // its symbol padded otherwise: it reads "AAPL" trimmed, but would be a series apart
        let newline = with(&|r| r.symbol = *b"AAPL\n   ");
        let minute = with(&|r| r.interval_s = 60);
        // on AAPL's channel: another symbol's record, an interval no chart shows, AAPL padded
        // otherwise, a cut one
        m.take(&mut live(vec![
            msft.clone(),
            interval_7.clone(),
            newline,
            vec![0; 71],
        ]));
        // AAPL's list of 1-second bars holding a minute bar and MSFT's
        m.reload("AAPL", 1, &mut vec![minute.clone(), msft.clone()]);
        assert_eq!((m.bad, m.last.len()), (6, 0));
        assert_eq!(starts(&p), Vec::<u64>::new());
        // a minute bar on the channel, and in the minute list, is AAPL's
        m.take(&mut live(vec![minute.clone()]));
        m.reload(
            "AAPL",
            60,
            &mut vec![
                minute,
                with(&|r| {
                    r.interval_s = 60;
                    r.bar.start_ns = 11;
                }),
            ],
        );
        assert_eq!((m.bad, starts(&p)), (6, vec![10, 11]));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_reload_goes_on_after_each_venues_last_bar() {
        let p = std::env::temp_dir().join(format!("mirror-venues-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create(&p).unwrap());
        let on = |channel: u16, start: u64| {
            let mut r = barlog::record_from_bytes(&bar(start, 1, false));
            r.channel = channel;
            r.to_bytes().to_vec()
        };
        // venue 1's bar 11 was published while the link was down
        m.take(&mut live(vec![on(0, 10), on(1, 10), on(0, 11)]));
        m.reload(
            "AAPL",
            1,
            &mut vec![on(0, 10), on(1, 10), on(0, 11), on(1, 11), on(0, 12)],
        );
        let got: Vec<(u16, u64)> = barlog::read_all(&p)
            .unwrap()
            .iter()
            .map(|r| (r.channel, r.bar.start_ns))
            .collect();
        // going on after the list's last bar starting at 11 (venue 1's) would miss it
        assert_eq!(got, [(0, 10), (1, 10), (0, 11), (1, 11), (0, 12)]);
        // each venue's overlap is watched apart: venue 1's copy on the channel is not taken
        // again, and venue 0's next bar is
        m.take(&mut live(vec![on(1, 11), on(0, 13)]));
        assert_eq!(barlog::read_all(&p).unwrap().len(), 6);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn the_bars_taken_stay_bounded_and_a_chart_reads_them_across_a_compaction() {
        let p = std::env::temp_dir().join(format!("mirror-compact-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create_compactable(&p).unwrap());
        m.compact_at = (barlog::HEADER + 1_000 * barlog::RECORD) as u64;
        let mut ix = crate::bars::BarIndex::new(p.clone());
        let chart = |ix: &mut crate::bars::BarIndex| -> Vec<u64> {
            ix.bars(*b"AAPL    ", 1, None, crate::bars::KEEP)
                .unwrap()
                .iter()
                .map(|r| r.bar.start_ns)
                .collect()
        };
        for k in 0..3_000u64 {
            m.take(&mut live(vec![bar(k, 1, false)]));
            if k % 700 == 0 {
                chart(&mut ix);
            }
        }
        assert!(m.compactions >= 2, "{}", m.compactions);
        assert!(m.log.len() <= m.compact_at);
        let want: Vec<u64> = (3_000 - crate::bars::KEEP as u64..3_000).collect();
        assert_eq!(chart(&mut ix), want, "a reader that was following");
        assert_eq!(
            chart(&mut crate::bars::BarIndex::new(p.clone())),
            want,
            "a new reader"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn full_lists_of_many_symbols_are_not_compacted_for_nothing() {
        let p = std::env::temp_dir().join(format!("mirror-full-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create_compactable(&p).unwrap());
        m.compact_at = (barlog::HEADER + 1_000 * barlog::RECORD) as u64;
        let list = |sym: &[u8; 8]| -> Vec<Vec<u8>> {
            (0..crate::bars::KEEP as u64)
                .map(|k| {
                    let mut r = barlog::record_from_bytes(&bar(k, 1, false));
                    r.symbol = *sym;
                    r.to_bytes().to_vec()
                })
                .collect()
        };
        for sym in [b"AAPL    ", b"MSFT    ", b"IBM     "] {
            let name = String::from_utf8_lossy(sym).trim_end().to_string();
            m.reload(&name, 1, &mut list(sym));
        }
        // 1,800 bars, past `compact_at`, all of them kept
        assert_eq!(m.compactions, 0);
        assert_eq!(
            m.log.len(),
            (barlog::HEADER + 1_800 * barlog::RECORD) as u64
        );
        // a day's bars on top, though, are
        for k in crate::bars::KEEP as u64..4_000 {
            m.take(&mut live(vec![bar(k, 1, false)]));
        }
        assert!(m.compactions >= 1);
        assert!(m.log.len() <= m.compact_at);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_bar_published_while_its_list_loads_is_taken_once() {
        let p = std::env::temp_dir().join(format!("mirror-race-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create(&p).unwrap());
        let bar = |start: u64, close: u32| bar(start, close, false);
        let starts = || starts(&p);
        // bars 2 and 3 were published after the subscription, before the list was read: the
        // list has them, and they come on the channel after it
        m.reload("AAPL", 1, &mut vec![bar(1, 1), bar(2, 1), bar(3, 1)]);
        m.take(&mut live(vec![bar(2, 1), bar(3, 1), bar(4, 1)]));
        assert_eq!(starts(), [1, 2, 3, 4]);
        assert!(m.recent.is_empty(), "the overlap is over");
        // a new session's first bar, like one the reload took but not the same, comes
        m.reload("AAPL", 1, &mut vec![bar(4, 1), bar(5, 1)]);
        m.take(&mut live(vec![bar(1, 9)]));
        assert_eq!(starts(), [1, 2, 3, 4, 5, 1]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_revision_taken_does_not_move_where_a_reload_goes_on_from() {
        let p = std::env::temp_dir().join(format!("mirror-rev-{}", std::process::id()));
        let mut m = BarMirror::new(BarLogWriter::create(&p).unwrap());
        // a rebuild revised bar 10; the link dropped; a second rebuild revised it again, and
        // bar 12 closed
        m.take(&mut live(vec![
            bar(10, 1, false),
            bar(11, 1, false),
            bar(10, 2, true),
        ]));
        m.reload(
            "AAPL",
            1,
            &mut vec![
                bar(10, 1, false),
                bar(11, 1, false),
                bar(10, 2, true),
                bar(10, 3, true),
                bar(12, 1, false),
            ],
        );
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
