//! A restore leaves out the bars its lists would trim at once. Redis lost bars (it restarted
//! empty, a node came back from an older snapshot): the publisher reads the bar log again from
//! where Redis lost it ([`super::barsync`]), but each list keeps only its latest
//! [`KEEP`] records (`LTRIM`). Appending a busy day's log whole (about 94M bars, at the
//! 100,000 a second a restore goes in) would take a quarter of an hour, with every new bar
//! waiting behind it, to end with the 600 latest per list (`bench redis`: 21M records took
//! 283.8 s; now 28–38 s, most of it appending the 3M kept).
//!
//! So before a restore reads on, a thread reads the log backwards from its end to where the
//! restore begins and notes, per series (symbol, interval, venue), where its [`KEEP`]-th last
//! plain bar is (the cut) and the earliest start among those last ones. A record read
//! again before its series' cut is left out when those [`KEEP`] bars are sure to be appended
//! after it: they are, unless the check against the lists ([`super::barsync`]) finds some of
//! them in their list already, which it does only for a bar that does not start after the
//! venue's newest there. So the record is left out when it is not checked, or its series'
//! newest bar in the list is unknown to Redis (none of the day), or starts before the
//! earliest of those last ones. Either way, had it been appended, at least [`KEEP`] records
//! would follow it into its list (a list holds every venue's bars of its symbol and interval),
//! and the trim would have taken it out: the lists end the same, revisions included (one
//! before the cut is trimmed like a bar). Only records restored quietly are left out: a
//! record published goes to gateways that are up, whose charts fold it.
//!
//! A scan that stopped early (the log cut short under it) is good as far as it went: it read
//! from the end, so the cuts it found are right, and a series it had not seen [`KEEP`] bars
//! of has none of its records left out.

use super::barsync::Series;
use book::barlog::{BarRecord, HEADER, RECORD};
use book::consolidate::FastMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Records a list keeps (its `LTRIM`).
pub(super) use crate::bars::KEEP;

/// Series followed at most: a log with more (not a real one) has the rest appended whole.
const MAX_SERIES: usize = 1 << 20;

/// Bytes read at a time, backwards (a whole number of records).
const CHUNK: usize = RECORD * 16_384;

/// A series' last plain bars, as the backward scan found them.
#[derive(Debug, Clone, Copy)]
struct Last {
    /// Plain bars seen, up to [`KEEP`].
    seen: u16,
    /// The offset of the earliest of them (the cut, once `seen` is [`KEEP`]).
    cut: u64,
    /// The earliest start among them.
    earliest: u64,
}

/// Where each series' last [`KEEP`] plain bars of a log begin.
#[derive(Debug, Default)]
pub(super) struct Cuts {
    /// The log read (its identity).
    log: u64,
    /// Series with their cut, and those still being counted.
    last: FastMap<Series, Last>,
    /// Series whose [`KEEP`] last bars were found.
    complete: usize,
}

impl Cuts {
    /// Cuts of `log`, none known yet.
    pub(super) fn new(log: u64) -> Cuts {
        Cuts {
            log,
            ..Cuts::default()
        }
    }

    /// The record at `at`, seen going backwards (each before the ones seen so far).
    pub(super) fn saw(&mut self, at: u64, r: &BarRecord) {
        if r.revision {
            return;
        }
        let series = (r.symbol, r.interval_s, r.channel);
        let full = self.last.len() >= MAX_SERIES;
        let last = match self.last.get_mut(&series) {
            Some(l) => l,
            None if full => return,
            None => self.last.entry(series).or_insert(Last {
                seen: 0,
                cut: at,
                earliest: u64::MAX,
            }),
        };
        if usize::from(last.seen) >= KEEP {
            return;
        }
        last.seen += 1;
        last.cut = at;
        last.earliest = last.earliest.min(r.bar.start_ns);
        if usize::from(last.seen) == KEEP {
            self.complete += 1;
        }
    }

    /// For the record at `at` of `log`: when [`KEEP`] plain bars of its series follow it in
    /// the log, the earliest start among them.
    pub(super) fn before_cut(&self, log: u64, at: u64, r: &BarRecord) -> Option<u64> {
        if log != self.log || log == 0 {
            return None;
        }
        let l = self.last.get(&(r.symbol, r.interval_s, r.channel))?;
        (usize::from(l.seen) == KEEP && at < l.cut).then_some(l.earliest)
    }

    /// Series whose cut was found.
    pub(super) fn complete(&self) -> usize {
        self.complete
    }
}

/// Whether a record restored quietly is left out, given what [`Cuts::before_cut`] said of it
/// (`earliest`), whether it is checked against its list, and what Redis said of its series'
/// newest bar in the list (`Some(None)`: none of the day; `None`: not asked yet).
/// `None`: not known until the list is asked.
pub(super) fn left_out(
    earliest: Option<u64>,
    checked: bool,
    newest: Option<Option<u64>>,
) -> Option<bool> {
    let Some(earliest) = earliest else {
        return Some(false);
    };
    if !checked {
        return Some(true);
    }
    newest.map(|n| n.is_none_or(|n| n < earliest))
}

/// Reads `log` (its identity) at `path` backwards from `to` down to `from` (offsets of
/// records), as long as `stop` is not set: the cuts found. A log that is not the one named, or
/// cannot be read, gives none; one cut short under the scan gives what was read.
pub(super) fn scan(path: &Path, log: u64, from: u64, to: u64, stop: &AtomicBool) -> Cuts {
    let mut cuts = Cuts::new(log);
    let Ok(mut f) = std::fs::File::open(path) else {
        return cuts;
    };
    let mut h = [0u8; HEADER];
    if f.read_exact(&mut h).is_err() || book::barlog::created_ns(&h) != log {
        return cuts;
    }
    let first = HEADER as u64;
    let from = from.max(first);
    let whole = |o: u64| o - (o.max(first) - first) % RECORD as u64;
    let mut end = whole(to.max(from));
    let mut buf = vec![0u8; CHUNK];
    while end > from && !stop.load(Ordering::Relaxed) {
        let start = end.saturating_sub(CHUNK as u64).max(from);
        let b = &mut buf[..(end - start) as usize];
        if f.read_exact_at(b, start).is_err() {
            break;
        }
        for (k, rec) in b.chunks_exact(RECORD).enumerate().rev() {
            cuts.saw(
                start + (k * RECORD) as u64,
                &book::barlog::record_from_bytes(rec),
            );
        }
        end = start;
    }
    cuts
}

/// A scan on a thread of its own.
#[derive(Debug)]
pub(super) struct Scan {
    /// The log read.
    log: u64,
    /// When the scan began.
    pub began: std::time::Instant,
    stop: Arc<AtomicBool>,
    done: std::sync::mpsc::Receiver<Cuts>,
}

impl Scan {
    /// Starts scanning `log` at `path` from `from` to its end now.
    pub(super) fn start(path: &Path, log: u64, from: u64) -> Scan {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let to = std::fs::metadata(path).map_or(0, |m| m.len());
        let (p, s) = (path.to_path_buf(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("bar-cuts".into())
            .spawn(move || drop(tx.send(scan(&p, log, from, to, &s))));
        if let Err(e) = spawned {
            // no thread: the restore appends every bar
            eprintln!("gateway publish: no thread to find the bars a restore can leave out ({e})");
        }
        Scan {
            log,
            began: std::time::Instant::now(),
            stop,
            done,
        }
    }

    /// The cuts, once the scan is over (Some(empty) if its thread is gone).
    pub(super) fn done(&self) -> Option<Cuts> {
        match self.done.try_recv() {
            Ok(c) => Some(c),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Cuts::new(self.log)),
        }
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use book::barlog::BarLogWriter;

    fn bar(sym: &[u8; 8], channel: u16, start_s: u64, revision: bool) -> BarRecord {
        BarRecord {
            symbol: *sym,
            channel,
            interval_s: 1,
            bar: book::bars::Bar {
                start_ns: start_s * 1_000_000_000,
                open: 1,
                high: 1,
                low: 1,
                close: 1,
                volume: 1,
                trades: 1,
                first_ns: 0,
                last_ns: 0,
            },
            revision,
            day: 1,
        }
    }

    const A: &[u8; 8] = b"A       ";
    const B: &[u8; 8] = b"B       ";
    const R: u64 = RECORD as u64;
    const FIRST: u64 = HEADER as u64;

    /// A's bars 0..n and every third of them B's too, in one log; the records with offsets.
    fn day(n: u64) -> Vec<(u64, BarRecord)> {
        let mut recs = Vec::new();
        for s in 0..n {
            recs.push(bar(A, 0, s, false));
            if s % 3 == 0 {
                recs.push(bar(B, 0, s, false));
            }
        }
        recs.into_iter()
            .enumerate()
            .map(|(k, r)| (FIRST + k as u64 * R, r))
            .collect()
    }

    fn cuts_of(recs: &[(u64, BarRecord)], log: u64) -> Cuts {
        let mut c = Cuts::new(log);
        for (at, r) in recs.iter().rev() {
            c.saw(*at, r);
        }
        c
    }

    #[test]
    fn a_record_is_before_its_cut_when_keep_plain_bars_of_its_series_follow() {
        let recs = day(1_000);
        let c = cuts_of(&recs, 7);
        assert_eq!(c.complete(), 1, "B has 334 bars: fewer than a list keeps");
        let a: Vec<_> = recs.iter().filter(|(_, r)| r.symbol == *A).collect();
        let cut = a.len() - KEEP;
        let earliest = a[cut].1.bar.start_ns;
        assert_eq!(c.before_cut(7, a[cut - 1].0, &a[cut - 1].1), Some(earliest));
        assert_eq!(c.before_cut(7, a[0].0, &a[0].1), Some(earliest));
        assert_eq!(c.before_cut(7, a[cut].0, &a[cut].1), None, "among the last");
        let (at, b0) = recs.iter().find(|(_, r)| r.symbol == *B).unwrap();
        assert_eq!(c.before_cut(7, *at, b0), None);
        assert_eq!(c.before_cut(8, a[0].0, &a[0].1), None, "another log");
        // another venue of A is a series of its own, and revisions are not counted
        let a2 = bar(A, 2, 0, false);
        assert_eq!(c.before_cut(7, FIRST, &a2), None);
        let mut c = Cuts::new(7);
        for k in (0..2 * KEEP as u64 - 1).rev() {
            c.saw(FIRST + k * R, &bar(A, 0, k, k % 2 == 0));
        }
        assert_eq!(
            c.complete(),
            0,
            "599 plain, 600 revisions: nothing to leave out"
        );
        // a revision before the cut is trimmed like a bar
        let mut c = Cuts::new(7);
        for k in (0..=KEEP as u64).rev() {
            c.saw(FIRST + k * R, &bar(A, 0, k, false));
        }
        assert_eq!(
            c.before_cut(7, FIRST, &bar(A, 0, 0, true)),
            Some(1_000_000_000)
        );
    }

    #[test]
    fn a_checked_record_waits_for_its_list_and_goes_only_when_its_last_bars_are_new() {
        assert_eq!(left_out(None, false, None), Some(false), "not before a cut");
        assert_eq!(left_out(Some(50), false, None), Some(true), "not checked");
        assert_eq!(
            left_out(Some(50), true, None),
            None,
            "its list not asked yet"
        );
        assert_eq!(
            left_out(Some(50), true, Some(None)),
            Some(true),
            "none of the day"
        );
        assert_eq!(left_out(Some(50), true, Some(Some(49))), Some(true));
        // the list has one of the last bars already: it would not be appended again, so
        // fewer than a list keeps may follow
        assert_eq!(left_out(Some(50), true, Some(Some(50))), Some(false));
    }

    #[test]
    fn a_scan_reads_the_log_backwards_and_stops_where_it_is_told() {
        let dir = std::env::temp_dir().join(format!("bartrim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.bars");
        let mut w = BarLogWriter::create(&path).unwrap();
        let recs = day(40_000);
        for (_, r) in &recs {
            w.append(*r).unwrap();
        }
        w.flush().unwrap();
        let log = w.created_ns();
        let end = FIRST + recs.len() as u64 * R;
        let go = AtomicBool::new(false);
        // more than a chunk, and a torn record at the end is left out
        let c = scan(&path, log, FIRST, end + 5, &go);
        assert_eq!(c.complete(), 2);
        let want = cuts_of(&recs, log);
        for (at, r) in &recs {
            assert_eq!(c.before_cut(log, *at, r), want.before_cut(log, *at, r));
        }
        // from a later offset: only what follows it counts
        let late = FIRST + (recs.len() as u64 - 900) * R;
        let c = scan(&path, log, late, end, &go);
        assert_eq!(
            c.complete(),
            1,
            "A has 675 bars in the last 900 records, B 225"
        );
        // another log, a stop, or no file: no cuts
        assert_eq!(scan(&path, log + 1, FIRST, end, &go).complete(), 0);
        assert_eq!(
            scan(&path, log, FIRST, end, &AtomicBool::new(true)).complete(),
            0
        );
        assert_eq!(scan(&dir.join("none"), log, FIRST, end, &go).complete(), 0);
        // in a thread
        let s = Scan::start(&path, log, FIRST);
        assert_eq!(s.done.recv().unwrap().complete(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
