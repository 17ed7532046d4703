//! The quote table: every instrument's latest quote in shared memory, one seqlock slot each,
//! plus a change feed (which slots changed, in order) so readers (gateway processes) follow
//! changes without scanning the table.
//!
//! ```text
//!  file <name> (under /dev/shm unless a path)
//!  offset 0     magic "ITCHQTB1" | version u32 | slots u32 | feed capacity u32 | pad |
//!               generation u64 (creation time, ns) | writer pid u32
//!  offset 128   feed head: u64, next feed position (its own 64-byte line)
//!  offset 192   wake: u64, bumped by the writer before it wakes sleeping readers
//!  offset 200   sleepers: u64, readers asleep on the doorbell (the only word readers write)
//!  offset 256   slots[slots], 128 bytes each; slot i is the i-th symbol the writer saw
//!  then         feed[feed capacity]: u64 each = slot index, at position p & (capacity - 1)
//!
//!  slot (16 u64 words, each an AtomicU64):
//!   0 seq: odd while being written, even when complete (a seqlock)
//!   1 symbol (8 ASCII bytes, little-endian)      2 bid_px_e4   3 bid_qty
//!   4 ask_px_e4   5 ask_qty   6 last_px_e4   7 last_qty   8 volume
//!   9 flags: state byte (0-7) | has_bid (8) | has_ask (9) | has_last (10) | stale (11) |
//!            anomaly (12)
//!  10 exchange timestamp (ns since midnight)   11 receive timestamp (ns since the epoch)
//!  12 feed sequence   13 update counter   14 channel (0-15) | locate (16-31)
//!  15 vwap_e4 (0-31) | has_vwap (32) | bid venue (40-47) | ask venue (48-55) |
//!     untrusted venues, a bit per channel 0-7 (56-63)
//! ```
//! The consolidated table (`<ring>.quotes`) has one slot per symbol over every venue (see
//! [`crate::consolidate`]); the per-venue table (`<ring>.quotes.venues`) one per venue and
//! symbol, where the venue fields name its own channel.
//! Keyed by symbol, not by locate (locates differ per venue and per day): a later issue adds
//! per-venue tables and a consolidated one in the same layout.
//!
//! Writer: seq to odd, release fence, words, seq to even with release; then the slot index into
//! the feed and the feed head with release. Reader: seq (acquire), words, acquire fence, seq
//! again; equal and even, or retry. A reader of the feed that falls more than the feed's
//! capacity behind rescans the table. A reader with nothing new can sleep on the table's
//! doorbell until the writer publishes ([`QuoteReader::doorbell`], the rule in
//! `feed_handler::ring::doorbell`); the writer rings after each batch
//! ([`QuoteWriter::wake_readers`]).

use core::sync::atomic::{AtomicU64, Ordering, fence};
use memmap2::{Mmap, MmapMut};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// "ITCHQTB1".
pub const MAGIC: u64 = u64::from_le_bytes(*b"ITCHQTB1");
/// Layout version (2: word 15 carries VWAP, the venues of the best prices and the untrusted
/// venues; 3: the doorbell words at 192 and 200).
pub const VERSION: u32 = 3;
/// Bytes before the slots.
pub const HEADER: usize = 256;
/// Bytes per slot.
pub const SLOT: usize = 128;
const WORDS: usize = SLOT / 8;
/// Offset of the change feed's head.
pub const FEED_HEAD_OFFSET: usize = 128;
/// Offset of the doorbell's `wake` word.
pub const WAKE_OFFSET: usize = 192;
/// Offset of the doorbell's `sleepers` word.
pub const SLEEPERS_OFFSET: usize = 200;
/// Where the header keeps its doorbell words.
pub const BELL: feed_handler::ring::doorbell::Bell = feed_handler::ring::doorbell::Bell {
    len: HEADER,
    head: FEED_HEAD_OFFSET,
    wake: WAKE_OFFSET,
    sleepers: SLEEPERS_OFFSET,
};

/// The quote table of a feed ring (`<ring>.quotes`), or `quotes` when given: each a name under
/// /dev/shm or a path.
pub fn table_path(ring: &str, quotes: Option<&str>) -> PathBuf {
    match quotes {
        Some(q) => feed_handler::ring::ring_path(q),
        None => {
            let mut p = feed_handler::ring::ring_path(ring).into_os_string();
            p.push(".quotes");
            PathBuf::from(p)
        }
    }
}

/// One instrument's latest quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quote {
    /// Symbol, 8 ASCII bytes space padded.
    pub symbol: [u8; 8],
    /// Best bid (price, shares).
    pub bid: Option<(u32, u64)>,
    /// Best offer.
    pub ask: Option<(u32, u64)>,
    /// Last trade.
    pub last: Option<(u32, u64)>,
    /// Volume.
    pub volume: u64,
    /// Trading state byte (0 unknown).
    pub state: u8,
    /// Cannot be trusted.
    pub stale: bool,
    /// Last trade far from its recent average.
    pub anomaly: bool,
    /// Exchange timestamp, ns since midnight.
    pub exch_ts_ns: u64,
    /// Receive timestamp, ns since the epoch.
    pub recv_ns: u64,
    /// Feed sequence of the last message applied.
    pub feed_seq: u64,
    /// Updates published.
    pub updates: u64,
    /// Feed channel.
    pub channel: u16,
    /// Stock locate on that channel.
    pub locate: u16,
    /// Volume-weighted average price of the session, Price(4).
    pub vwap_e4: Option<u32>,
    /// Channel (venue) of the best bid.
    pub bid_venue: u8,
    /// Channel (venue) of the best offer.
    pub ask_venue: u8,
    /// Venues left out of the best prices (bit per channel 0-7).
    pub untrusted: u8,
}

impl Quote {
    fn to_words(self) -> [u64; WORDS] {
        let mut w = [0u64; WORDS];
        w[1] = u64::from_le_bytes(self.symbol);
        (w[2], w[3]) = self.bid.map_or((0, 0), |(p, q)| (p as u64, q));
        (w[4], w[5]) = self.ask.map_or((0, 0), |(p, q)| (p as u64, q));
        (w[6], w[7]) = self.last.map_or((0, 0), |(p, q)| (p as u64, q));
        w[8] = self.volume;
        w[9] = self.state as u64
            | (self.bid.is_some() as u64) << 8
            | (self.ask.is_some() as u64) << 9
            | (self.last.is_some() as u64) << 10
            | (self.stale as u64) << 11
            | (self.anomaly as u64) << 12;
        w[10] = self.exch_ts_ns;
        w[11] = self.recv_ns;
        w[12] = self.feed_seq;
        w[13] = self.updates;
        w[14] = self.channel as u64 | (self.locate as u64) << 16;
        w[15] = self.vwap_e4.unwrap_or(0) as u64
            | (self.vwap_e4.is_some() as u64) << 32
            | (self.bid_venue as u64) << 40
            | (self.ask_venue as u64) << 48
            | (self.untrusted as u64) << 56;
        w
    }

    fn from_words(w: &[u64; WORDS]) -> Quote {
        let f = w[9];
        let opt = |has: bool, p: u64, q: u64| has.then_some((p as u32, q));
        Quote {
            symbol: w[1].to_le_bytes(),
            bid: opt(f & 1 << 8 != 0, w[2], w[3]),
            ask: opt(f & 1 << 9 != 0, w[4], w[5]),
            last: opt(f & 1 << 10 != 0, w[6], w[7]),
            volume: w[8],
            state: f as u8,
            stale: f & 1 << 11 != 0,
            anomaly: f & 1 << 12 != 0,
            exch_ts_ns: w[10],
            recv_ns: w[11],
            feed_seq: w[12],
            updates: w[13],
            channel: w[14] as u16,
            locate: (w[14] >> 16) as u16,
            vwap_e4: (w[15] >> 32 & 1 == 1).then_some(w[15] as u32),
            bid_venue: (w[15] >> 40) as u8,
            ask_venue: (w[15] >> 48) as u8,
            untrusted: (w[15] >> 56) as u8,
        }
    }

    /// The quote outside shared memory (e.g. as a Redis value): the slot's 16 words, little
    /// endian, with word 0 (the slot's seqlock) holding [`VERSION`] instead.
    pub fn to_bytes(&self) -> [u8; SLOT] {
        let mut w = self.to_words();
        w[0] = VERSION as u64;
        let mut b = [0u8; SLOT];
        for (k, v) in w.iter().enumerate() {
            b[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The quote [`Quote::to_bytes`] wrote; `None` unless `b` is exactly that long and of this
    /// version.
    pub fn from_bytes(b: &[u8]) -> Option<Quote> {
        if b.len() != SLOT {
            return None;
        }
        let mut w = [0u64; WORDS];
        for (k, v) in w.iter_mut().enumerate() {
            *v = u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().ok()?);
        }
        (w[0] == VERSION as u64).then(|| Quote::from_words(&w))
    }

    /// The symbol without padding.
    pub fn symbol_str(&self) -> String {
        String::from_utf8_lossy(&self.symbol).trim_end().to_string()
    }
}

/// # Safety
/// `base + off` must be inside a live mapping, 8-aligned, and the borrow must not outlive it.
unsafe fn word<'a>(base: *const u8, off: usize) -> &'a AtomicU64 {
    // SAFETY: per the contract.
    unsafe { &*(base.add(off) as *const AtomicU64) }
}

/// The per-venue table beside a (consolidated) quote table: `<quotes>.venues`.
pub fn venues_beside(quotes: &Path) -> PathBuf {
    let mut p = quotes.as_os_str().to_owned();
    p.push(".venues");
    p.into()
}

/// The single writer (the conflation thread).
#[derive(Debug)]
pub struct QuoteWriter {
    map: MmapMut,
    slots: usize,
    feed_cap: u64,
    feed_head: u64,
    /// The feed head when sleeping readers were last looked for.
    rung: u64,
    path: PathBuf,
}

// SAFETY: the mapping moves with the struct; it is written only through `&mut self`.
unsafe impl Send for QuoteWriter {}

impl QuoteWriter {
    /// Creates (replaces) a table of `slots` instruments and a change feed of `feed_cap`
    /// entries (rounded up to a power of two).
    pub fn create(path: &Path, slots: usize, feed_cap: u64) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Self::create_in(&f, path, slots, feed_cap)
    }

    /// Makes a table in `f`, a new empty file (e.g. a memfd, which the caller keeps open) that
    /// readers open at `path`.
    pub fn create_in(
        f: &std::fs::File,
        path: &Path,
        slots: usize,
        feed_cap: u64,
    ) -> std::io::Result<Self> {
        let feed_cap = feed_cap.max(2).next_power_of_two();
        let size = HEADER + slots * SLOT + feed_cap as usize * 8;
        f.set_len(size as u64)?;
        // SAFETY: our new file; other processes map it read-only and read words atomically.
        let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(f) }?;
        map[8..12].copy_from_slice(&VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&(slots as u32).to_le_bytes());
        map[16..20].copy_from_slice(&(feed_cap as u32).to_le_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        map[24..32].copy_from_slice(&now.to_le_bytes());
        map[32..36].copy_from_slice(&std::process::id().to_le_bytes());
        let w = QuoteWriter {
            map,
            slots,
            feed_cap,
            feed_head: 0,
            rung: 0,
            path: path.to_path_buf(),
        };
        w.w(0).store(MAGIC, Ordering::Release);
        Ok(w)
    }

    fn w(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.map.len());
        // SAFETY: inside the mapping `self` owns, 8-aligned (checked above).
        unsafe { word(self.map.as_ptr(), off) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Writes slot `i` and appends it to the change feed.
    pub fn publish(&mut self, i: usize, q: &Quote) {
        if i >= self.slots {
            return;
        }
        let base = HEADER + i * SLOT;
        let seq = self.w(base).load(Ordering::Relaxed);
        self.w(base).store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (k, v) in q.to_words().iter().enumerate().skip(1) {
            self.w(base + k * 8).store(*v, Ordering::Relaxed);
        }
        self.w(base).store(seq + 2, Ordering::Release);
        let feed = HEADER + self.slots * SLOT + (self.feed_head & (self.feed_cap - 1)) as usize * 8;
        self.w(feed).store(i as u64, Ordering::Relaxed);
        self.feed_head += 1;
        self.w(FEED_HEAD_OFFSET)
            .store(self.feed_head, Ordering::Release);
    }

    /// Wakes the readers asleep on the table's doorbell, if anything was published since the
    /// last call: once per batch of [`QuoteWriter::publish`]. A fence and a load while no reader
    /// sleeps; never waits.
    pub fn wake_readers(&mut self) {
        let mut rung = self.rung;
        feed_handler::ring::doorbell::ring(
            self.feed_head,
            &mut rung,
            self.w(WAKE_OFFSET),
            self.w(SLEEPERS_OFFSET),
        );
        self.rung = rung;
    }
}

/// A reader in any process.
#[derive(Debug)]
pub struct QuoteReader {
    map: Mmap,
    file: std::fs::File,
    slots: usize,
    feed_cap: u64,
    feed_pos: u64,
}

// SAFETY: a read-only mapping, read only through atomics.
unsafe impl Send for QuoteReader {}

/// What the change feed gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This slot changed.
    Slot(usize),
    /// Nothing new.
    Empty,
    /// The reader fell behind the feed: rescan every slot, then carry on.
    Rescan,
}

impl QuoteReader {
    /// Attaches; the change feed starts at its current head.
    pub fn attach(path: &Path) -> Result<Self, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: read-only shared mapping read through atomics only.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| format!("{}: {e}", path.display()))?;
        if map.len() < HEADER {
            return Err(format!("{}: not a quote table", path.display()));
        }
        // SAFETY: offset 0 is inside the mapping and aligned.
        let magic = unsafe { word(map.as_ptr(), 0) }.load(Ordering::Acquire);
        let version = u32::from_le_bytes(map[8..12].try_into().expect("4"));
        let slots = u32::from_le_bytes(map[12..16].try_into().expect("4")) as usize;
        let feed_cap = u32::from_le_bytes(map[16..20].try_into().expect("4")) as u64;
        if magic != MAGIC
            || version != VERSION
            || !feed_cap.is_power_of_two()
            || map.len() < HEADER + slots * SLOT + feed_cap as usize * 8
        {
            return Err(format!(
                "{}: not a quote table of version {VERSION}",
                path.display()
            ));
        }
        let mut r = QuoteReader {
            map,
            file: f,
            slots,
            feed_cap,
            feed_pos: 0,
        };
        r.feed_pos = r.feed_head();
        Ok(r)
    }

    fn w(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.map.len());
        // SAFETY: inside the mapping `self` owns (checked in attach), 8-aligned.
        unsafe { word(self.map.as_ptr(), off) }
    }

    fn feed_head(&self) -> u64 {
        self.w(FEED_HEAD_OFFSET).load(Ordering::Acquire)
    }

    /// The change feed position this reader reads next.
    pub fn position(&self) -> u64 {
        self.feed_pos
    }

    /// A doorbell to sleep on until the writer publishes more than [`QuoteReader::position`]
    /// (it maps the header read-write: the caller needs write permission on the file).
    pub fn doorbell(&self) -> std::io::Result<feed_handler::ring::Doorbell> {
        feed_handler::ring::Doorbell::open(&self.file, Path::new("quote table"), BELL)
    }

    /// Slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The process that created the table.
    pub fn writer_pid(&self) -> u32 {
        u32::from_le_bytes(self.map[32..36].try_into().expect("4"))
    }

    /// When the table was created (ns since the epoch): a new writer makes a new generation.
    pub fn generation(&self) -> u64 {
        u64::from_le_bytes(self.map[24..32].try_into().expect("8"))
    }

    /// Slot `i`, never torn (retries while the writer is in it); `None` if never written.
    pub fn read(&self, i: usize) -> Option<Quote> {
        if i >= self.slots {
            return None;
        }
        let base = HEADER + i * SLOT;
        loop {
            let s1 = self.w(base).load(Ordering::Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; WORDS];
            for (k, v) in w.iter_mut().enumerate().skip(1) {
                *v = self.w(base + k * 8).load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.w(base).load(Ordering::Relaxed) == s1 {
                return Some(Quote::from_words(&w));
            }
        }
    }

    /// The next change.
    pub fn next_change(&mut self) -> Change {
        let head = self.feed_head();
        if self.feed_pos >= head {
            return Change::Empty;
        }
        if head - self.feed_pos > self.feed_cap / 2 {
            self.feed_pos = head;
            return Change::Rescan;
        }
        let off = HEADER + self.slots * SLOT + (self.feed_pos & (self.feed_cap - 1)) as usize * 8;
        let i = self.w(off).load(Ordering::Relaxed) as usize;
        // the entry could have been overwritten since head was read: check again
        if self.feed_head() - self.feed_pos > self.feed_cap / 2 {
            self.feed_pos = self.feed_head();
            return Change::Rescan;
        }
        self.feed_pos += 1;
        Change::Slot(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_round_trip_and_the_feed_says_what_changed() {
        let p = std::env::temp_dir().join(format!("quotes-{}", std::process::id()));
        let mut w = QuoteWriter::create(&p, 10, 8).unwrap();
        let mut r = QuoteReader::attach(&p).unwrap();
        assert_eq!(r.read(3), None);
        let q = Quote {
            symbol: *b"AAPL    ",
            bid: Some((1_891_200, 300)),
            ask: Some((1_891_300, 500)),
            last: None,
            volume: 7,
            state: b'T',
            stale: true,
            anomaly: false,
            exch_ts_ns: 1,
            recv_ns: 2,
            feed_seq: 3,
            updates: 4,
            channel: 5,
            locate: 6,
            vwap_e4: Some(1_891_250),
            bid_venue: 1,
            ask_venue: 2,
            untrusted: 0b100,
        };
        w.publish(3, &q);
        assert_eq!(r.read(3), Some(q));
        assert_eq!(Quote::from_bytes(&q.to_bytes()), Some(q));
        assert_eq!(Quote::from_bytes(&q.to_bytes()[1..]), None);
        assert_eq!(r.read(3).unwrap().symbol_str(), "AAPL");
        assert_eq!(r.next_change(), Change::Slot(3));
        assert_eq!(r.next_change(), Change::Empty);
        for i in 0..6 {
            w.publish(i, &q);
        }
        assert_eq!(
            r.next_change(),
            Change::Rescan,
            "6 changes behind a feed of 8"
        );
        assert_eq!(r.next_change(), Change::Empty);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"ITCHQTB1");
        assert_eq!(
            u64::from_le_bytes(bytes[HEADER + 3 * SLOT..][..8].try_into().unwrap()) % 2,
            0,
            "even seq"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn the_doorbell_wakes_a_reader_waiting_for_changes() {
        let p = std::env::temp_dir().join(format!("quotes-bell-{}", std::process::id()));
        let mut w = QuoteWriter::create(&p, 4, 8).unwrap();
        let mut r = QuoteReader::attach(&p).unwrap();
        let wake = || {
            let b = std::fs::read(&p).unwrap();
            u64::from_le_bytes(b[WAKE_OFFSET..WAKE_OFFSET + 8].try_into().unwrap())
        };
        let bell = r.doorbell().unwrap();
        let watch = r.doorbell().unwrap();
        let q = Quote {
            symbol: *b"AAPL    ",
            ..Default::default()
        };
        // no one asleep: nothing to wake
        w.publish(0, &q);
        w.wake_readers();
        assert_eq!(wake(), 0);
        assert_eq!(r.next_change(), Change::Slot(0));
        // a reader asleep at the head wakes when the writer rings, long before its timeout
        let pos = r.position();
        let sleeper = std::thread::spawn(move || bell.wait(pos, 600_000_000_000));
        while watch.sleepers() == 0 {
            std::hint::spin_loop();
        }
        w.publish(2, &q);
        w.wake_readers();
        assert!(sleeper.join().unwrap());
        assert_eq!(wake(), 1);
        assert_eq!(watch.sleepers(), 0);
        assert_eq!(r.next_change(), Change::Slot(2));
        std::fs::remove_file(&p).unwrap();
    }
}
