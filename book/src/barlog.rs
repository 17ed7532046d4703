//! The bar log: every closed 1-second and 1-minute bar, appended to a file the gateway reads for
//! charts. It is written by the conflation thread once per batch; a book restarted replays the
//! ring and journal (every trade of the day), so a restart keeps the day.
//!
//! A bar is logged once, when it closes. When a channel is rebuilt after an unrecovered gap,
//! its fresh books' bars are checked against what was logged: the ones the log lacks come after
//! the channel's newest (plain), a bar whose trades the gap had taken comes again flagged a
//! revision (it replaces the bar with its start), and the bars already logged right are not
//! logged again. [`apply`] is how a reader folds records into a series.
//!
//! A book restarted on the same ring goes on with the log it wrote before
//! ([`BarLogWriter::resume`]): the records stay, the identity stays, and the bars its catch-up
//! closes again are not logged again, so a reader (the gateway, `gateway publish`) sees the day
//! once. A new ring (the feed handler restarted: another generation) begins a new log.
//!
//! ```text
//!  offset 0    magic "ITCHBAR1" | version u32 (2) | record size u32 (72) |
//!              created_ns u64 (when this log was begun, ns since the epoch: the log's identity)
//!              | source u64 (the generation of the feed ring its bars are made from; zero when
//!              none) | zero padding to 64
//!  then        records of 72 bytes, little-endian:
//!   0          symbol [u8; 8] | channel u16 | interval_s u8 | flags u8 | trades u32 |
//!  16          start_ns u64 | open u32 | high u32 | low u32 | close u32 | volume u64 |
//!  48          first_ns u64 | last_ns u64 | day u32 | zero u32
//!              flags: bit 0 revision (replaces the bar with its start); other bits zero
//!              first_ns, last_ns: exchange time of the opening and the closing trade
//!              day: the trading day (days since the epoch, see [`day_of`]; 0 unknown)
//! ```
//!
//! Each record is one venue's bar (its feed channel). With several venues a symbol has a series
//! per venue, each folded with [`apply`]; [`consolidate`] merges them into the one series a
//! chart shows: per (day, start), the open of the venue that traded first, the close of the one
//! that traded last (the bars one series would have made of every venue's trades), the highest
//! high, the lowest low, and volumes and trades summed. Version 1
//! logs (48-byte records, without the trade times and the day) are not read: a book that finds
//! one begins a new log.

use crate::bars::Bar;
use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

/// The bar log beside a quote table: `<quotes>.bars`.
pub fn beside(quotes: &Path) -> std::path::PathBuf {
    let mut p = quotes.as_os_str().to_owned();
    p.push(".bars");
    p.into()
}

/// "ITCHBAR1".
pub const MAGIC: [u8; 8] = *b"ITCHBAR1";
/// Format version.
pub const VERSION: u32 = 2;
/// Header bytes.
pub const HEADER: usize = 64;
/// Record bytes.
pub const RECORD: usize = 72;

/// When a trading day begins, seconds after midnight UTC: 06:00, which is 01:00 or 02:00 in
/// New York, after the late session and before the early one.
pub const DAY_STARTS_S: u64 = 6 * 3_600;

/// The trading day of a wall-clock time (ns since the epoch): days since the epoch, each from
/// [`DAY_STARTS_S`] to the next; `None` for 0 (unknown).
pub fn day_of(epoch_ns: u64) -> Option<u64> {
    (epoch_ns != 0).then(|| (epoch_ns / 1_000_000_000).saturating_sub(DAY_STARTS_S) / 86_400)
}

/// The channel of a bar merged from several venues' ([`consolidate`]).
pub const ALL_VENUES: u16 = u16::MAX;

/// One logged bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRecord {
    /// Symbol, space padded.
    pub symbol: [u8; 8],
    /// Feed channel.
    pub channel: u16,
    /// 1 or 60.
    pub interval_s: u8,
    /// The bar.
    pub bar: Bar,
    /// A correction of the bar logged before with the same start (after a channel rebuild),
    /// not a new bar.
    pub revision: bool,
    /// The trading day (days since the epoch, [`day_of`] the log's creation); 0 unknown.
    pub day: u32,
}

/// Flag bit of a revision.
const REVISION: u8 = 1;

impl BarRecord {
    /// The symbol without its padding.
    pub fn symbol_str(&self) -> String {
        String::from_utf8_lossy(&self.symbol).trim_end().to_string()
    }

    /// The record's bytes in the log (and in Redis).
    pub fn to_bytes(self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(&self.symbol);
        b[8..10].copy_from_slice(&self.channel.to_le_bytes());
        b[10] = self.interval_s;
        b[11] = if self.revision { REVISION } else { 0 };
        b[12..16].copy_from_slice(&self.bar.trades.to_le_bytes());
        b[16..24].copy_from_slice(&self.bar.start_ns.to_le_bytes());
        b[24..28].copy_from_slice(&self.bar.open.to_le_bytes());
        b[28..32].copy_from_slice(&self.bar.high.to_le_bytes());
        b[32..36].copy_from_slice(&self.bar.low.to_le_bytes());
        b[36..40].copy_from_slice(&self.bar.close.to_le_bytes());
        b[40..48].copy_from_slice(&self.bar.volume.to_le_bytes());
        b[48..56].copy_from_slice(&self.bar.first_ns.to_le_bytes());
        b[56..64].copy_from_slice(&self.bar.last_ns.to_le_bytes());
        b[64..68].copy_from_slice(&self.day.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> BarRecord {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        BarRecord {
            symbol: b[..8].try_into().expect("8 bytes"),
            channel: u16::from_le_bytes([b[8], b[9]]),
            interval_s: b[10],
            revision: b[11] & REVISION != 0,
            bar: Bar {
                trades: u32_at(12),
                start_ns: u64_at(16),
                open: u32_at(24),
                high: u32_at(28),
                low: u32_at(32),
                close: u32_at(36),
                volume: u64_at(40),
                first_ns: u64_at(48),
                last_ns: u64_at(56),
            },
            day: u32_at(64),
        }
    }
}

/// Appends bars.
#[derive(Debug)]
pub struct BarLogWriter {
    out: BufWriter<std::fs::File>,
    created_ns: u64,
    /// Bytes in the log, header included (written or buffered).
    len: u64,
}

/// Per series (channel, symbol, interval), the start of the last bar (not a revision) a log
/// holds: the newest of its latest session.
pub type Newest = HashMap<(u16, [u8; 8], u8), u64>;

impl BarLogWriter {
    /// Creates (replaces) the log.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::create_in(std::fs::File::create(path)?)
    }

    /// Goes on with the log at `path` when it holds bars made from the ring generation
    /// `source` (a book restarted on the same ring): a record cut short at its end is dropped,
    /// and each series' newest bar start ([`Newest`]) is returned, so the bars the catch-up
    /// closes again are not logged again (a bar that does not start after it was logged
    /// before: within a session bars come in order; a ring spanning two sessions may have some
    /// of the first one's logged again, never one lost). Otherwise (no log, another ring's,
    /// unreadable, `source` 0) begins a new one, and returns `None`.
    pub fn resume(path: &Path, source: u64) -> std::io::Result<(Self, Option<Newest>)> {
        let mut h = [0u8; HEADER];
        if source != 0
            && let Ok(f) = std::fs::File::open(path)
            && let Ok(len) = f.metadata().map(|m| m.len())
            && let mut r = std::io::BufReader::with_capacity(1 << 20, f)
            && r.read_exact(&mut h).is_ok()
            && h[..8] == MAGIC
            && u32::from_le_bytes(h[8..12].try_into().expect("4")) == VERSION
            && u64::from_le_bytes(h[24..32].try_into().expect("8")) == source
        {
            // read a record at a time: a day's log need not fit in memory
            let whole = (len - HEADER as u64) / RECORD as u64;
            let mut newest = Newest::new();
            let mut b = [0u8; RECORD];
            for _ in 0..whole {
                r.read_exact(&mut b)?;
                let rec = BarRecord::from_bytes(&b);
                // the last plain bar: the newest of the latest session
                if !rec.revision {
                    newest.insert((rec.channel, rec.symbol, rec.interval_s), rec.bar.start_ns);
                }
            }
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(HEADER as u64 + whole * RECORD as u64)?;
            let mut out = BufWriter::new(f);
            out.seek(std::io::SeekFrom::End(0))?;
            let created_ns = created_ns(&h);
            let len = HEADER as u64 + whole * RECORD as u64;
            return Ok((
                BarLogWriter {
                    out,
                    created_ns,
                    len,
                },
                Some(newest),
            ));
        }
        let f = std::fs::File::create(path)?;
        Ok((Self::begin(f, source)?, None))
    }

    /// Creates (replaces) the log at `path`, open for reading as well, so that it can be
    /// [compacted](BarLogWriter::compact).
    pub fn create_compactable(path: &Path) -> std::io::Result<Self> {
        Self::create_in(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?,
        )
    }

    /// Starts a log in `f`, a new empty file (e.g. a memfd).
    pub fn create_in(f: std::fs::File) -> std::io::Result<Self> {
        Self::begin(f, 0)
    }

    fn begin(f: std::fs::File, source: u64) -> std::io::Result<Self> {
        let mut out = BufWriter::new(f);
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
        let created_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        h[16..24].copy_from_slice(&created_ns.to_le_bytes());
        h[24..32].copy_from_slice(&source.to_le_bytes());
        out.write_all(&h)?;
        out.flush()?;
        Ok(BarLogWriter {
            out,
            created_ns,
            len: HEADER as u64,
        })
    }

    /// Bytes in the log, its header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when it holds no bar.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER as u64
    }

    /// Rewrites the log in place with only what a reader keeps of it: each series' (symbol,
    /// interval, channel) newest `keep` bars as [`apply`] folds them, as plain records, under a
    /// new identity, so that a reader reads it again from its start. For a log that would
    /// otherwise grow for as long as its writer runs (a remote gateway's mirror of Redis'
    /// lists); the file must be open for reading too (a memfd given to [`BarLogWriter::create_in`],
    /// or [`BarLogWriter::create_compactable`]).
    pub fn compact(&mut self, keep: usize) -> std::io::Result<()> {
        self.out.flush()?;
        let f = self.out.get_mut();
        f.seek(std::io::SeekFrom::Start(0))?;
        let mut b = Vec::new();
        f.read_to_end(&mut b)?;
        let mut h: [u8; HEADER] = b
            .get(..HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| std::io::Error::other("no bar log header"))?;
        type Key = ([u8; 8], u8, u16);
        let mut order: Vec<Key> = Vec::new();
        let mut series: HashMap<Key, VecDeque<BarRecord>> = HashMap::new();
        for rec in b[HEADER..].chunks_exact(RECORD).map(BarRecord::from_bytes) {
            let key = (rec.symbol, rec.interval_s, rec.channel);
            let s = series.entry(key).or_insert_with(|| {
                order.push(key);
                VecDeque::new()
            });
            apply(s, rec, keep);
        }
        drop(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let created_ns = now.max(self.created_ns + 1);
        h[16..24].copy_from_slice(&created_ns.to_le_bytes());
        f.set_len(0)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        self.out.write_all(&h)?;
        let mut len = HEADER as u64;
        for key in &order {
            for r in &series[key] {
                self.out.write_all(
                    &BarRecord {
                        revision: false,
                        ..*r
                    }
                    .to_bytes(),
                )?;
                len += RECORD as u64;
            }
        }
        self.out.flush()?;
        self.created_ns = created_ns;
        self.len = len;
        Ok(())
    }

    /// This log's identity: when it was begun, ns since the epoch (as its header says).
    pub fn created_ns(&self) -> u64 {
        self.created_ns
    }

    /// The trading day this log was begun on (what [`BarRecord::day`] of its bars is).
    pub fn day(&self) -> u32 {
        day_of(self.created_ns).map_or(0, |d| d as u32)
    }

    /// Appends one bar (buffered until [`BarLogWriter::flush`]).
    pub fn append(&mut self, r: BarRecord) -> std::io::Result<()> {
        self.out.write_all(&r.to_bytes())?;
        self.len += RECORD as u64;
        Ok(())
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads every complete record of a log (a record being written at the end is left out).
pub fn read_all(path: &Path) -> Result<Vec<BarRecord>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < HEADER
        || b[..8] != MAGIC
        || u32::from_le_bytes(b[8..12].try_into().expect("4")) != VERSION
    {
        return Err(format!(
            "{}: not a bar log of version {VERSION}",
            path.display()
        ));
    }
    Ok(b[HEADER..]
        .chunks_exact(RECORD)
        .map(BarRecord::from_bytes)
        .collect())
}

/// A log's identity from its header: when it was begun (ns since the epoch), 0 if unknown.
pub fn created_ns(header: &[u8]) -> u64 {
    header
        .get(16..24)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Decodes one record of [`RECORD`] bytes (as found after the header).
pub fn record_from_bytes(b: &[u8]) -> BarRecord {
    BarRecord::from_bytes(b)
}

/// Folds one record into its series (oldest first, at most `keep` bars), as a reader of the log
/// does. A plain record is a new bar, or replaces the newest when it has its start (a bar logged
/// again); bars come in order within a session, and a new session's first bar, which starts
/// before the day before's last, is new too. A revision replaces the bar with its start in the
/// newest session, or goes in where its start belongs there when the session lacks it (a bar
/// the gap had taken whole, or one older than the session's first kept); one older than every
/// bar of a full series is dropped. A day before's bars are never touched.
pub fn apply(series: &mut VecDeque<BarRecord>, r: BarRecord, keep: usize) {
    let start = r.bar.start_ns;
    if r.revision {
        // back over the newest bars that start after it, within their session (going back,
        // starts fall; a rise is the day before's end): the revised one is just before them
        let mut at = series.len();
        while at > 0 {
            let prev = series[at - 1].bar.start_ns;
            if prev <= start || (at < series.len() && prev >= series[at].bar.start_ns) {
                break;
            }
            at -= 1;
        }
        match at.checked_sub(1) {
            Some(i)
                if series[i].bar.start_ns == start
                    && series.get(at).is_none_or(|b| b.bar.start_ns > start) =>
            {
                series[i] = r
            }
            // in front of every bar kept, with the series full: older than the window
            None if series.len() >= keep => {}
            _ => {
                series.insert(at, r);
                if series.len() > keep {
                    series.pop_front();
                }
            }
        }
        return;
    }
    match series.back_mut() {
        Some(b) if b.bar.start_ns == start => *b = r,
        _ => {
            if series.len() >= keep {
                series.pop_front();
            }
            series.push_back(r);
        }
    }
}

/// One bar of several venues' bars of the same day and start: the open of the venue that
/// traded first and the close of the one that traded last (trades at the same time taken in
/// channel order), the highest high, the lowest low, volumes and trades summed. Its channel is [`ALL_VENUES`] when
/// more than one bar went in. `None` for no bars.
pub fn merge(bars: &[BarRecord]) -> Option<BarRecord> {
    let (first, rest) = bars.split_first()?;
    let mut m = *first;
    let (mut open_at, mut close_at) = ((m.bar.first_ns, m.channel), (m.bar.last_ns, m.channel));
    for r in rest {
        let b = &r.bar;
        if (b.first_ns, r.channel) < open_at {
            open_at = (b.first_ns, r.channel);
            m.bar.open = b.open;
        }
        if (b.last_ns, r.channel) > close_at {
            close_at = (b.last_ns, r.channel);
            m.bar.close = b.close;
        }
        m.bar.high = m.bar.high.max(b.high);
        m.bar.low = m.bar.low.min(b.low);
        m.bar.volume = m.bar.volume.saturating_add(b.volume);
        m.bar.trades = m.bar.trades.saturating_add(b.trades);
        m.channel = ALL_VENUES;
    }
    m.bar.first_ns = open_at.0;
    m.bar.last_ns = close_at.0;
    m.revision = false;
    Some(m)
}

/// The series a chart shows from each venue's series of one symbol and interval (each oldest
/// first, as [`apply`] folds them): one bar per day and start, [`merge`]d over the venues
/// that have it, oldest first, the newest `limit` of them. One venue's series is itself.
pub fn consolidate(series: &[&VecDeque<BarRecord>], limit: usize) -> Vec<BarRecord> {
    if let [one] = series {
        return one
            .iter()
            .skip(one.len().saturating_sub(limit))
            .copied()
            .collect();
    }
    let mut all: Vec<BarRecord> = series.iter().flat_map(|s| s.iter().copied()).collect();
    all.sort_by_key(|r| (r.day, r.bar.start_ns, r.channel));
    let mut out: Vec<BarRecord> = Vec::new();
    for same in all.chunk_by(|a, b| (a.day, a.bar.start_ns) == (b.day, b.bar.start_ns)) {
        out.extend(merge(same));
    }
    out.split_off(out.len().saturating_sub(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_round_trip_and_a_cut_record_is_left_out() {
        let p = std::env::temp_dir().join(format!("barlog-{}", std::process::id()));
        let mut w = BarLogWriter::create(&p).unwrap();
        let r = BarRecord {
            symbol: *b"AAPL    ",
            channel: 2,
            interval_s: 60,
            bar: Bar {
                start_ns: 34_200_000_000_000,
                open: 1,
                high: 5,
                low: 1,
                close: 4,
                volume: 900,
                trades: 3,
                first_ns: 34_200_000_000_100,
                last_ns: 34_259_000_000_000,
            },
            revision: false,
            day: 20_421,
        };
        w.append(r).unwrap();
        w.append(BarRecord { interval_s: 1, ..r }).unwrap();
        w.append(BarRecord {
            revision: true,
            ..r
        })
        .unwrap();
        w.flush().unwrap();
        assert_eq!(
            read_all(&p).unwrap(),
            vec![
                r,
                BarRecord { interval_s: 1, ..r },
                BarRecord {
                    revision: true,
                    ..r
                }
            ]
        );
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(
            read_all(&p).unwrap(),
            vec![r, BarRecord { interval_s: 1, ..r }]
        );
        std::fs::write(&p, b"nope").unwrap();
        assert!(read_all(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_log_goes_on_for_its_own_ring_only() {
        let p = std::env::temp_dir().join(format!("barlog-resume-{}", std::process::id()));
        let (mut w, before) = BarLogWriter::resume(&p, 7).unwrap();
        assert!(before.is_none(), "no log: a new one");
        for r in [rec(10, 1, false), rec(11, 1, false), rec(10, 2, true)] {
            w.append(r).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let id = created_ns(&std::fs::read(&p).unwrap());
        // a record cut short at the end (the book died writing it)
        let mut b = std::fs::read(&p).unwrap();
        b.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&p, &b).unwrap();
        let (mut w, before) = BarLogWriter::resume(&p, 7).unwrap();
        let newest = before.expect("the same ring: gone on with");
        // the last bar that is not a revision
        assert_eq!(newest.get(&(0, *b"AAPL    ", 1)), Some(&11_000_000_000));
        w.append(rec(12, 1, false)).unwrap();
        w.flush().unwrap();
        drop(w);
        let all = read_all(&p).unwrap();
        assert_eq!(
            all.len(),
            4,
            "the cut record dropped, the new one after the others"
        );
        assert_eq!(all[3], rec(12, 1, false));
        assert_eq!(created_ns(&std::fs::read(&p).unwrap()), id);
        // another ring: a new log
        let (_w, before) = BarLogWriter::resume(&p, 8).unwrap();
        assert!(before.is_none());
        assert!(read_all(&p).unwrap().is_empty());
        assert_ne!(created_ns(&std::fs::read(&p).unwrap()), id);
        // a log of version 1 (48-byte records, this ring's) from before an upgrade: read as
        // version 2 it would be garbage, so a new log is begun
        let mut v1 = std::fs::read(&p).unwrap()[..HEADER].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1[12..16].copy_from_slice(&48u32.to_le_bytes());
        v1[24..32].copy_from_slice(&8u64.to_le_bytes());
        v1.extend_from_slice(&[7u8; 48 * 3]);
        std::fs::write(&p, &v1).unwrap();
        assert!(read_all(&p).unwrap_err().contains("version 2"));
        let (_w, before) = BarLogWriter::resume(&p, 8).unwrap();
        assert!(before.is_none(), "not gone on with");
        assert!(read_all(&p).unwrap().is_empty());
        std::fs::remove_file(&p).unwrap();
    }

    fn rec(start_s: u64, volume: u64, revision: bool) -> BarRecord {
        BarRecord {
            symbol: *b"AAPL    ",
            channel: 0,
            interval_s: 1,
            bar: Bar {
                start_ns: start_s * 1_000_000_000,
                open: 10,
                high: 10,
                low: 10,
                close: 10,
                volume,
                trades: 1,
                first_ns: start_s * 1_000_000_000,
                last_ns: start_s * 1_000_000_000,
            },
            revision,
            day: 1,
        }
    }

    fn fold(records: &[BarRecord], keep: usize) -> Vec<(u64, u64)> {
        let mut s = VecDeque::new();
        for &r in records {
            apply(&mut s, r, keep);
        }
        s.iter()
            .map(|r| (r.bar.start_ns / 1_000_000_000, r.bar.volume))
            .collect()
    }

    #[test]
    fn a_revision_replaces_its_bar_or_goes_in_where_it_belongs() {
        // new bars, a bar logged again (the newest, same start), then a new day's first bar
        let day = [rec(10, 1, false), rec(11, 1, false), rec(11, 2, false)];
        assert_eq!(fold(&day, 10), [(10, 1), (11, 2)]);
        let next_day = [&day[..], &[rec(5, 7, false)]].concat();
        assert_eq!(fold(&next_day, 10), [(10, 1), (11, 2), (5, 7)]);
        // revisions: of an older bar (replaced in place), of a bar the gap took whole (goes in
        // before the newer ones), of the newest
        let log = [
            rec(10, 1, false),
            rec(12, 1, false),
            rec(14, 1, false),
            rec(10, 3, true),
            rec(13, 4, true),
            rec(14, 5, true),
        ];
        assert_eq!(fold(&log, 10), [(10, 3), (12, 1), (13, 4), (14, 5)]);
        // a revision older than every bar of a full series is dropped; one that goes in pushes
        // the oldest out
        let full = [rec(10, 1, false), rec(12, 1, false), rec(9, 9, true)];
        assert_eq!(fold(&full, 2), [(10, 1), (12, 1)]);
        let full = [rec(10, 1, false), rec(12, 1, false), rec(11, 9, true)];
        assert_eq!(fold(&full, 2), [(11, 9), (12, 1)]);
        // into an empty series
        assert_eq!(fold(&[rec(3, 1, true)], 2), [(3, 1)]);
        // a day before's bars (10, 12, 14) are not today's (8, 13): today's revisions of 10
        // and 14 go into today's session, the one of 13 replaces today's 13
        let days = [
            rec(10, 1, false),
            rec(12, 1, false),
            rec(14, 1, false),
            rec(8, 2, false),
            rec(13, 2, false),
            rec(10, 7, true),
            rec(14, 7, true),
            rec(13, 9, true),
        ];
        assert_eq!(
            fold(&days, 20),
            [(10, 1), (12, 1), (14, 1), (8, 2), (10, 7), (13, 9), (14, 7)]
        );
        // a revision older than every bar of today goes first in today's, not into yesterday
        let first = [
            rec(10, 1, false),
            rec(14, 1, false),
            rec(12, 2, false),
            rec(10, 5, true),
        ];
        assert_eq!(fold(&first, 20), [(10, 1), (14, 1), (10, 5), (12, 2)]);
    }

    #[test]
    fn a_compacted_log_folds_to_what_its_reader_kept() {
        let p = std::env::temp_dir().join(format!("barlog-compact-{}", std::process::id()));
        let mut w = BarLogWriter::create_compactable(&p).unwrap();
        let on = |channel: u16, start: u64, volume: u64, revision: bool| BarRecord {
            channel,
            ..rec(start, volume, revision)
        };
        let mut all = Vec::new();
        // two venues of one symbol, two sessions of the first, and a revision
        for k in 1..=30 {
            all.push(on(0, k, k, false));
            all.push(on(1, k, 100 + k, false));
        }
        all.push(on(0, 25, 7, true));
        for k in 1..=5 {
            all.push(on(0, k, 1_000 + k, false));
        }
        for &r in &all {
            w.append(r).unwrap();
        }
        w.flush().unwrap();
        let fold_all = |records: &[BarRecord]| {
            let mut s: HashMap<u16, VecDeque<BarRecord>> = HashMap::new();
            for &r in records {
                apply(s.entry(r.channel).or_default(), r, 20);
            }
            s.into_iter()
                .map(|(c, s)| {
                    (
                        c,
                        s.into_iter()
                            .map(|r| (r.bar.start_ns, r.bar.volume))
                            .collect(),
                    )
                })
                .collect::<HashMap<u16, Vec<(u64, u64)>>>()
        };
        let before = fold_all(&all);
        let id = created_ns(&std::fs::read(&p).unwrap());
        let len = w.len();
        assert_eq!(len, (HEADER + all.len() * RECORD) as u64);
        w.compact(20).unwrap();
        let after = read_all(&p).unwrap();
        assert_eq!(after.len(), 40, "20 bars a series kept");
        assert_eq!(w.len(), (HEADER + 40 * RECORD) as u64);
        assert!(after.iter().all(|r| !r.revision));
        assert_eq!(fold_all(&after), before);
        assert_ne!(
            created_ns(&std::fs::read(&p).unwrap()),
            id,
            "a new identity"
        );
        // it goes on as before
        w.append(on(1, 31, 131, false)).unwrap();
        w.flush().unwrap();
        assert_eq!(read_all(&p).unwrap().len(), 41);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn venues_bars_merge_into_the_bar_of_all_their_trades() {
        let s = 1_000_000_000u64;
        let bar = |channel: u16, day: u32, start: u64, ohlc: [u32; 4], times: [u64; 2]| BarRecord {
            channel,
            day,
            bar: Bar {
                start_ns: start * s,
                open: ohlc[0],
                high: ohlc[1],
                low: ohlc[2],
                close: ohlc[3],
                volume: 100,
                trades: 2,
                first_ns: start * s + times[0],
                last_ns: start * s + times[1],
            },
            ..rec(0, 0, false)
        };
        // Nasdaq traded first, BX last
        let nasdaq = bar(0, 7, 10, [50, 60, 45, 55], [100, 500]);
        let bx = bar(1, 7, 10, [52, 70, 48, 49], [200, 900]);
        let m = merge(&[bx, nasdaq]).unwrap();
        assert_eq!(
            (m.bar.open, m.bar.high, m.bar.low, m.bar.close),
            (50, 70, 45, 49)
        );
        assert_eq!((m.bar.volume, m.bar.trades), (200, 4));
        assert_eq!(
            (m.bar.first_ns, m.bar.last_ns),
            (10 * s + 100, 10 * s + 900)
        );
        assert_eq!(m.channel, ALL_VENUES);
        assert_eq!(merge(&[nasdaq]), Some(nasdaq), "one venue's bar is itself");
        assert_eq!(merge(&[]), None);
        // the same start on another day is another bar; a venue's bars stay its own where the
        // other has none
        let a: VecDeque<BarRecord> = [nasdaq, bar(0, 8, 10, [1, 1, 1, 1], [0, 0])].into();
        let b: VecDeque<BarRecord> = [bar(1, 7, 9, [3, 3, 3, 3], [0, 0]), bx].into();
        let c = consolidate(&[&a, &b], 10);
        let got: Vec<(u32, u64, u16)> = c
            .iter()
            .map(|r| (r.day, r.bar.start_ns / s, r.channel))
            .collect();
        assert_eq!(got, [(7, 9, 1), (7, 10, ALL_VENUES), (8, 10, 0)]);
        assert_eq!(c[1], m);
        assert_eq!(consolidate(&[&a, &b], 2), c[1..].to_vec(), "the newest");
        assert_eq!(consolidate(&[&a], 1), vec![a[1]]);
    }

    proptest::proptest! {
        /// Each venue's bars, merged, are the bars one series makes of every venue's trades
        /// (trades at the same time taken in channel order).
        #[test]
        fn merged_venues_are_the_bars_of_all_their_trades(
            trades in proptest::collection::vec(
                (0u16..3, 0u64..40_000_000_000, 1u32..1_000, 1u64..500), 1..200),
        ) {
            let mut trades = trades;
            trades.sort_by_key(|&(c, t, _, _)| (t, c));
            let minute = 60_000_000_000;
            let bars = |s: &crate::bars::Series, channel: u16| -> VecDeque<BarRecord> {
                s.bars()
                    .map(|&bar| BarRecord { channel, bar, ..rec(0, 0, false) })
                    .collect()
            };
            let mut all = crate::bars::Series::new(minute / 60, 1_000);
            let mut venue: Vec<crate::bars::Series> =
                (0..3).map(|_| crate::bars::Series::new(minute / 60, 1_000)).collect();
            for &(c, t, px, q) in &trades {
                all.on_trade(t, px, q);
                venue[c as usize].on_trade(t, px, q);
            }
            let each: Vec<VecDeque<BarRecord>> =
                venue.iter().enumerate().map(|(c, s)| bars(s, c as u16)).collect();
            let refs: Vec<&VecDeque<BarRecord>> = each.iter().filter(|s| !s.is_empty()).collect();
            let got: Vec<Bar> = consolidate(&refs, 1_000).iter().map(|r| r.bar).collect();
            let want: Vec<Bar> = all.bars().copied().collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// Any records, in any order: the series stays within `keep`, and records that repeat
        /// ones already folded (a bar logged again, a revision sent twice) change nothing.
        #[test]
        fn folding_is_bounded_and_a_repeat_changes_nothing(
            recs in proptest::collection::vec((0u64..40, 0u64..5, proptest::bool::ANY), 0..60),
            keep in 1usize..12,
        ) {
            let recs: Vec<BarRecord> = recs.iter().map(|&(t, v, rev)| rec(t, v, rev)).collect();
            let mut s = VecDeque::new();
            for &r in &recs {
                apply(&mut s, r, keep);
                proptest::prop_assert!(s.len() <= keep);
            }
            // the last record again: a revision, or a plain bar that is the newest, replaces
            // itself
            if let Some(&last) = recs.last()
                && (last.revision || s.back() == Some(&last))
            {
                let before = s.clone();
                apply(&mut s, last, keep);
                proptest::prop_assert_eq!(&s, &before);
            }
        }

        /// Plain bars of one session (starts rising) fold to the newest `keep` of them, and
        /// revisions of bars kept replace exactly those.
        #[test]
        fn a_session_folds_to_itself_and_revisions_replace_in_place(
            gaps in proptest::collection::vec(1u64..4, 1..40),
            revised in proptest::collection::vec((0usize..40, 10u64..20), 0..10),
            keep in 1usize..50,
        ) {
            let mut start = 0;
            let bars: Vec<BarRecord> = gaps
                .iter()
                .map(|g| {
                    start += g;
                    rec(start, 1, false)
                })
                .collect();
            let mut s = VecDeque::new();
            for &r in &bars {
                apply(&mut s, r, keep);
            }
            let mut want: Vec<BarRecord> =
                bars[bars.len().saturating_sub(keep)..].to_vec();
            proptest::prop_assert_eq!(s.iter().copied().collect::<Vec<_>>(), want.clone());
            for &(i, v) in &revised {
                let Some(w) = want.get_mut(i) else { continue };
                let r = BarRecord {
                    revision: true,
                    bar: Bar { volume: v, ..w.bar },
                    ..*w
                };
                apply(&mut s, r, keep);
                *w = r;
            }
            proptest::prop_assert_eq!(s.into_iter().collect::<Vec<_>>(), want);
        }
    }
}
