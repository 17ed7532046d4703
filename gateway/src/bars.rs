//! Bars for charts: the bar log `book run` writes beside its quote table (`<quotes>.bars`),
//! read incrementally (only what was appended since the last read) into the latest bars of
//! each symbol, interval and venue, bounded per series; a chart's bars are the venues' merged
//! (`book::barlog::consolidate`). A new log (book restarted) is read from the start.
//!
//! The gateway reads the log on a thread of its own ([`crate::server`]), a batch at a time, so
//! a request reads little or nothing before it answers: a busy day's log is a gigabyte, and a
//! request that read it all would hold its worker (every connection on it) and answer with
//! the morning's bars as the latest. Until the index has a log's every record once, a chart
//! is refused ([`BarIndex::chart`]: loading, ask again); so is a chart still coming from
//! elsewhere ([`ChartsLoading`]: a remote gateway's lists in Redis).

use book::barlog::{self, BarRecord};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Bars kept per symbol and interval.
pub const KEEP: usize = 600;

/// Records a chart request reads on at most before it answers (well under a millisecond).
pub const READ_PER_REQUEST: usize = 4096;

/// Records the gateway's bar thread reads on at a time, the index locked (a few ms).
pub const READ_PER_REFRESH: usize = 16_384;

/// Follows a bar log: the records appended since the last read; a new log (book restarted) is
/// read from the start.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    ino: u64,
    offset: u64,
    /// The log's identity (`book::barlog::created_ns`), 0 until read or when unknown.
    log: u64,
}

impl Tail {
    /// A tail of the log at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            ino: 0,
            offset: 0,
            log: 0,
        }
    }

    /// The log's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The log being read: its identity (when it was begun, ns; 0 if unknown or none yet).
    pub fn log(&self) -> u64 {
        self.log
    }

    /// Where the next record read starts, bytes into the log (the records [`Tail::read_new`]
    /// returned end here).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The log's length now (0 when there is none).
    pub fn len_now(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Reads on from `offset` (a record's start) of the log being read: ahead, to skip records.
    pub fn seek(&mut self, offset: u64) {
        let o = offset.max(barlog::HEADER as u64);
        self.offset = o - (o - barlog::HEADER as u64) % barlog::RECORD as u64;
    }

    /// The records appended since the last call (at most 64 MiB of them), and whether the log
    /// was replaced since (everything read before belongs to an older log).
    pub fn read_new(&mut self) -> Result<(bool, Vec<BarRecord>), String> {
        self.read_new_at_most((64 << 20) / barlog::RECORD)
    }

    /// [`Tail::read_new`], at most `max` records (the rest are read next time).
    pub fn read_new_at_most(&mut self, max: usize) -> Result<(bool, Vec<BarRecord>), String> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| {
            format!(
                "no bar log at {} ({e}); bars come from `book run`",
                self.path.display()
            )
        })?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        let mut replaced = false;
        let mut other = meta.ino() != self.ino || meta.len() < self.offset;
        // a log begun again in the same file (truncated, then grown past where we were) has
        // another identity
        if !other && self.offset != 0 && self.log != 0 {
            let mut h = [0u8; 24];
            other = f.read_exact(&mut h).is_ok() && barlog::created_ns(&h) != self.log;
        }
        if other {
            replaced = self.ino != 0;
            self.ino = meta.ino();
            self.offset = 0;
        }
        if self.offset == 0 {
            // begun (or being rewritten) but its header not there yet: nothing to read yet
            if meta.len() < barlog::HEADER as u64 {
                return Ok((false, Vec::new()));
            }
            let mut h = vec![0u8; barlog::HEADER];
            f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            f.read_exact(&mut h).map_err(|e| e.to_string())?;
            if h[..8] != barlog::MAGIC
                || h[8..12] != barlog::VERSION.to_le_bytes()
                || h[12..16] != (barlog::RECORD as u32).to_le_bytes()
            {
                return Err(format!(
                    "{}: not a bar log of version {} (a book of this release rewrites it)",
                    self.path.display(),
                    barlog::VERSION
                ));
            }
            self.log = barlog::created_ns(&h);
            self.offset = barlog::HEADER as u64;
            replaced = true;
        }
        let whole = ((meta.len() - self.offset) / barlog::RECORD as u64).min(max as u64)
            * barlog::RECORD as u64;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; whole as usize];
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        self.offset += buf.len() as u64;
        Ok((
            replaced,
            buf.chunks_exact(barlog::RECORD)
                .map(barlog::record_from_bytes)
                .collect(),
        ))
    }
}

/// Charts still coming from elsewhere into the log (a remote gateway's lists in Redis), by
/// symbol: a symbol's chart is refused from when its lists are to be read until the index has
/// read the log as far as they were appended, so no one is shown a chart half loaded (or an
/// empty one, at a gateway's start). At most one entry a symbol; an entry the index has read
/// past is dropped. A symbol whose chart was whole once is not refused again when its lists
/// are read again (a link reconnecting, or waiting out a restore): the chart it has stands,
/// and what the read adds goes on after it.
#[derive(Clone, Debug, Default)]
pub struct ChartsLoading(Arc<Mutex<Loading>>);

/// [`ChartsLoading`]'s state.
#[derive(Debug, Default)]
struct Loading {
    /// Symbols waiting for their lists, or read but not yet read past by the index.
    pending: HashMap<[u8; 8], u64>,
    /// Symbols whose chart was whole once (at most every symbol).
    shown: std::collections::HashSet<[u8; 8]>,
}

/// An entry of a symbol whose lists are not read yet.
const WAITING: u64 = u64::MAX;

impl ChartsLoading {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<[u8; 8], u64>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()).pending)
    }

    /// `symbol`'s lists are to be read (its chart is refused until they are in, unless it was
    /// whole once).
    pub fn waiting(&self, symbol: [u8; 8]) {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !l.shown.contains(&symbol) {
            l.pending.insert(symbol, WAITING);
        }
    }

    /// `symbol`'s lists, if it was waiting for them, are in the log up to `log_len` bytes (or
    /// could not be had: they never will be).
    pub fn loaded(&self, symbol: [u8; 8], log_len: u64) {
        self.with(|m| {
            if let Some(v) = m.get_mut(&symbol) {
                *v = log_len;
            }
        });
    }

    /// These symbols no longer wait (whoever was to read their lists is gone).
    pub fn forget(&self, symbols: impl Iterator<Item = [u8; 8]>) {
        self.with(|m| {
            for s in symbols {
                if m.get(&s) == Some(&WAITING) {
                    m.remove(&s);
                }
            }
        });
    }

    /// The log was rewritten (compacted): what was loaded is in it from its start.
    pub fn log_replaced(&self) {
        self.with(|m| m.retain(|_, v| *v == WAITING));
    }

    /// Whether an index that has read `offset` bytes of the log lacks (some of) `symbol`'s
    /// chart.
    fn lacks(&self, symbol: [u8; 8], offset: u64) -> bool {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match l.pending.get(&symbol) {
            Some(&end) if end > offset => true,
            Some(_) => {
                l.pending.remove(&symbol);
                l.shown.insert(symbol);
                false
            }
            None => false,
        }
    }

    /// Symbols waiting or not yet read past.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// True when no chart is coming.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Each venue's bars of one symbol and interval: (channel, its series, oldest first).
type Venues = Vec<(u16, VecDeque<BarRecord>)>;

/// The latest bars of every symbol: per symbol and interval, each venue's series.
#[derive(Debug)]
pub struct BarIndex {
    tail: Tail,
    series: HashMap<([u8; 8], u8), Venues>,
    /// Every record of the log being read was in once (it stays true while the log grows).
    ready: bool,
    /// Charts still coming into the log from elsewhere.
    loading: Option<ChartsLoading>,
}

impl BarIndex {
    /// An index of the log at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        BarIndex {
            tail: Tail::new(path),
            series: HashMap::new(),
            ready: false,
            loading: None,
        }
    }

    /// Refuses charts `loading` says are still coming.
    pub fn with_loading(mut self, loading: Option<ChartsLoading>) -> Self {
        self.loading = loading;
        self
    }

    /// Reads on at most `max` records; whether every whole record the log holds now is in.
    pub fn refresh_at_most(&mut self, max: usize) -> Result<bool, String> {
        let (replaced, new) = self.tail.read_new_at_most(max)?;
        if replaced {
            self.series.clear();
            self.ready = false;
        }
        for r in new {
            // each venue's bars apart; a revision replaces the bar with its start
            // (book::barlog::apply)
            let venues = self.series.entry((r.symbol, r.interval_s)).or_default();
            let at = match venues.iter().position(|(c, _)| *c == r.channel) {
                Some(at) => at,
                None => {
                    venues.push((r.channel, VecDeque::new()));
                    venues.len() - 1
                }
            };
            barlog::apply(&mut venues[at].1, r, KEEP);
        }
        let all_in = self.tail.len_now().saturating_sub(self.tail.offset()) < barlog::RECORD as u64;
        self.ready |= all_in;
        Ok(all_in)
    }

    /// [`BarIndex::bars`] for a request: reads on at most [`READ_PER_REQUEST`] records first
    /// (the gateway's bar thread reads the rest), and refuses while the log has never been
    /// read to its end (a gateway just started on a busy day's log).
    pub fn chart(
        &mut self,
        symbol: [u8; 8],
        interval_s: u8,
        venue: Option<u16>,
        limit: usize,
    ) -> Result<Vec<BarRecord>, String> {
        self.refresh_at_most(READ_PER_REQUEST)?;
        if !self.ready {
            let mb = |b: u64| b as f64 / (1 << 20) as f64;
            return Err(format!(
                "bar history loading: {:.0} of {:.0} MB read; ask again in a moment",
                mb(self.tail.offset()),
                mb(self.tail.len_now())
            ));
        }
        if let Some(l) = &self.loading
            && l.lacks(symbol, self.tail.offset())
        {
            return Err(
                "bar history loading: this symbol's chart is still coming in; ask again in a moment"
                    .into(),
            );
        }
        Ok(self.query(symbol, interval_s, venue, limit))
    }

    /// The last `limit` bars of `symbol` at `interval_s` (1 or 60), oldest first: over every
    /// venue (merged where several have a bar of the same start), or of one venue (its
    /// channel), after reading the log on to its end as it is now, however long that takes
    /// (a request reads little: [`BarIndex::chart`]).
    pub fn bars(
        &mut self,
        symbol: [u8; 8],
        interval_s: u8,
        venue: Option<u16>,
        limit: usize,
    ) -> Result<Vec<BarRecord>, String> {
        // to the end as it is now (not on and on while it grows)
        let mut left =
            self.tail.len_now().saturating_sub(self.tail.offset()) / barlog::RECORD as u64;
        while !self.refresh_at_most(READ_PER_REFRESH)? && left > 0 {
            left = left.saturating_sub(READ_PER_REFRESH as u64);
        }
        Ok(self.query(symbol, interval_s, venue, limit))
    }

    fn query(
        &self,
        symbol: [u8; 8],
        interval_s: u8,
        venue: Option<u16>,
        limit: usize,
    ) -> Vec<BarRecord> {
        let Some(venues) = self.series.get(&(symbol, interval_s)) else {
            return Vec::new();
        };
        let series: Vec<&VecDeque<BarRecord>> = venues
            .iter()
            .filter(|(c, _)| venue.is_none_or(|v| v == *c))
            .map(|(_, s)| s)
            .collect();
        if series.is_empty() {
            return Vec::new();
        }
        barlog::consolidate(&series, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use book::barlog::BarLogWriter;

    fn rec(start_ns: u64) -> BarRecord {
        let mut r = barlog::record_from_bytes(&[0u8; barlog::RECORD]);
        r.symbol = *b"AAPL    ";
        r.interval_s = 1;
        r.bar.start_ns = start_ns;
        r
    }

    #[test]
    fn a_chart_merges_the_venues_bars_and_one_venue_is_its_own() {
        let p = std::env::temp_dir().join(format!("bar-index-{}", std::process::id()));
        let mut w = BarLogWriter::create(&p).unwrap();
        let on = |channel: u16, start: u64, volume: u64, revision: bool| BarRecord {
            channel,
            revision,
            bar: book::bars::Bar {
                volume,
                ..rec(start).bar
            },
            ..rec(start)
        };
        for r in [
            on(0, 1, 10, false),
            on(1, 1, 5, false),
            on(0, 2, 10, false),
            on(1, 3, 7, false),
            // venue 1's bar 1 revised after its rebuild: only venue 1's is replaced
            on(1, 1, 6, true),
        ] {
            w.append(r).unwrap();
        }
        w.flush().unwrap();
        let mut ix = BarIndex::new(p.clone());
        let got = |ix: &mut BarIndex, venue| -> Vec<(u64, u64)> {
            ix.bars(*b"AAPL    ", 1, venue, 10)
                .unwrap()
                .iter()
                .map(|r| (r.bar.start_ns, r.bar.volume))
                .collect()
        };
        assert_eq!(got(&mut ix, None), [(1, 16), (2, 10), (3, 7)]);
        assert_eq!(got(&mut ix, Some(1)), [(1, 6), (3, 7)]);
        assert_eq!(got(&mut ix, Some(2)), []);
        assert_eq!(ix.bars(*b"AAPL    ", 1, None, 1).unwrap().len(), 1);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_chart_still_coming_is_refused_until_the_index_has_read_it_in() {
        let p = std::env::temp_dir().join(format!("bar-coming-{}", std::process::id()));
        let mut w = BarLogWriter::create_compactable(&p).unwrap();
        w.append(rec(1)).unwrap();
        w.flush().unwrap();
        let loading = ChartsLoading::default();
        let mut ix = BarIndex::new(p.clone()).with_loading(Some(loading.clone()));
        let chart = |ix: &mut BarIndex, sym: &[u8; 8]| ix.chart(*sym, 1, None, 600);
        assert_eq!(chart(&mut ix, b"AAPL    ").unwrap().len(), 1);
        // its lists to be read: refused, though it has a bar; others are not
        loading.waiting(*b"AAPL    ");
        let e = chart(&mut ix, b"AAPL    ").unwrap_err();
        assert!(e.starts_with("bar history loading"), "{e}");
        assert!(chart(&mut ix, b"MSFT    ").is_ok());
        // read and appended: refused until the index has read as far
        for s in 2..3 * READ_PER_REQUEST as u64 {
            w.append(rec(s)).unwrap();
        }
        w.flush().unwrap();
        loading.loaded(*b"AAPL    ", w.len());
        assert!(
            chart(&mut ix, b"AAPL    ").is_err(),
            "one request's read is not all"
        );
        while !ix.refresh_at_most(READ_PER_REFRESH).unwrap() {}
        assert_eq!(chart(&mut ix, b"AAPL    ").unwrap().len(), 600);
        assert!(loading.is_empty());
        // a compaction rewrites the log: what was loaded is in it from its start
        loading.waiting(*b"AAPL    ");
        loading.loaded(*b"AAPL    ", u64::MAX - 1);
        w.compact(KEEP).unwrap();
        loading.log_replaced();
        while !ix.refresh_at_most(READ_PER_REFRESH).unwrap() {}
        assert_eq!(chart(&mut ix, b"AAPL    ").unwrap().len(), 600);
        // the one to read them gone: no longer waiting
        loading.waiting(*b"MSFT    ");
        loading.forget([*b"MSFT    "].into_iter());
        assert!(chart(&mut ix, b"MSFT    ").is_ok());
        // a chart whole once is not refused when its lists are read again (a link back, or
        // waiting out a restore): it stands, and what the read adds goes on after it
        loading.waiting(*b"AAPL    ");
        assert_eq!(chart(&mut ix, b"AAPL    ").unwrap().len(), 600);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_chart_request_reads_little_and_is_refused_until_the_log_was_read_to_its_end() {
        let p = std::env::temp_dir().join(format!("bar-chart-{}", std::process::id()));
        let mut w = BarLogWriter::create(&p).unwrap();
        let many = 3 * READ_PER_REQUEST as u64;
        let append = |w: &mut BarLogWriter, starts: std::ops::Range<u64>| {
            for s in starts {
                w.append(rec(s)).unwrap();
            }
            w.flush().unwrap();
        };
        append(&mut w, 0..many);
        let mut ix = BarIndex::new(p.clone());
        let newest = |ix: &mut BarIndex| -> Result<u64, String> {
            let b = ix.chart(*b"AAPL    ", 1, None, 1)?;
            Ok(b.last().map_or(0, |r| r.bar.start_ns))
        };
        // a request reads one batch, not the whole log: the morning's bars are not the latest
        let e = newest(&mut ix).unwrap_err();
        assert!(e.starts_with("bar history loading"), "{e}");
        // the gateway's bar thread reads the rest
        while !ix.refresh_at_most(READ_PER_REFRESH).unwrap() {}
        assert_eq!(newest(&mut ix), Ok(many - 1));
        // more than a request reads at once, appended later: answered all the same (the thread
        // catches up), never refused again for this log
        append(&mut w, many..2 * many);
        assert!(newest(&mut ix).is_ok_and(|n| n >= many - 1));
        while !ix.refresh_at_most(READ_PER_REFRESH).unwrap() {}
        assert_eq!(newest(&mut ix), Ok(2 * many - 1));
        // a log begun again is read again before a chart is answered
        let mut w = BarLogWriter::create(&p).unwrap();
        append(&mut w, 0..many);
        assert!(newest(&mut ix).is_err());
        assert_eq!(
            ix.bars(*b"AAPL    ", 1, None, 1).unwrap()[0].bar.start_ns,
            many - 1
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_log_begun_again_in_the_same_file_is_read_from_its_start() {
        let p = std::env::temp_dir().join(format!("tail-{}", std::process::id()));
        let mut w = BarLogWriter::create(&p).unwrap();
        w.append(rec(1)).unwrap();
        w.flush().unwrap();
        let mut t = Tail::new(p.clone());
        let (begun, got) = t.read_new().unwrap();
        assert!(begun && got == [rec(1)]);
        let first = t.log();
        assert_ne!(first, 0, "a log carries when it was begun");
        // the book restarted: the same file begun again (same inode), and it grew past where
        // the tail was before the tail looked
        let mut w = BarLogWriter::create(&p).unwrap();
        for s in [5, 6, 7] {
            w.append(rec(s)).unwrap();
        }
        w.flush().unwrap();
        let (begun, got) = t.read_new().unwrap();
        assert!(begun, "seen as a new log");
        assert_eq!(got, [rec(5), rec(6), rec(7)], "read from its start");
        assert_ne!(t.log(), first);
        assert_eq!(t.offset(), (barlog::HEADER + 3 * barlog::RECORD) as u64);
        // a version 1 log (from before an upgrade) is refused with its reason, not misread
        let mut v1 = std::fs::read(&p).unwrap()[..barlog::HEADER].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1[12..16].copy_from_slice(&48u32.to_le_bytes());
        v1.extend_from_slice(&[7u8; 48 * 3]);
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &v1).unwrap();
        let err = Tail::new(p.clone()).read_new().unwrap_err();
        assert!(err.contains("not a bar log of version 2"), "{err}");
        std::fs::remove_file(&p).unwrap();
    }
}
