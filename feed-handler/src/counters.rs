//! Feed health counters in a shared-memory file, written by the feed handler about every
//! millisecond (never per message) and read by `feed-handler stat` (and later `/metrics`) while
//! it runs.
//!
//! ```text
//!  file <ring>.counters (under /dev/shm unless the ring is a path)
//!  offset 0    magic "ITCHCNT1" u64 | version u32 | channels u32 | updated_ns u64 | pid u32
//!  offset 128  channel 0 block (CHANNEL_BLOCK bytes), channel 1 block, ...
//!  channel block: name [u8; 32] (NUL padded), then u64 words:
//!    CHANNEL_COUNTERS (11 words), then for line a, b, recovery: LINE_COUNTERS (13 words each)
//! ```
//! Every word is an `AtomicU64`; the names below are the stable public interface (Prometheus
//! names are `itch_<name>` with `channel` and `line` labels).

use core::sync::atomic::{AtomicU64, Ordering};
use memmap2::{Mmap, MmapMut};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// "ITCHCNT1".
pub const MAGIC: u64 = u64::from_le_bytes(*b"ITCHCNT1");
/// Layout version.
pub const VERSION: u32 = 1;
/// Header bytes.
pub const HEADER: usize = 128;
/// Bytes per channel block.
pub const CHANNEL_BLOCK: usize = 512;
/// Bytes of the name at the start of a block.
pub const NAME_BYTES: usize = 32;

/// Channel counters, in block order, with one line of documentation each.
pub const CHANNEL_COUNTERS: [(&str, &str); 11] = [
    ("next_seq", "next sequence number to deliver"),
    ("delivered", "messages published to the ring, in sequence"),
    ("holes", "holes seen at the head of the stream"),
    ("rerequests", "MoldUDP64 requests sent (retries included)"),
    ("recovered", "messages delivered from re-request replies"),
    ("unrecovered", "messages declared lost (sum of gap events)"),
    ("gap_events", "gap events published"),
    ("held", "out-of-order packets waiting in the window now"),
    ("outstanding", "messages requested and not yet received now"),
    ("ring_head", "ring position of the next record"),
    ("journal_end", "records on disk in the journal"),
];

/// Line counters, in block order.
pub const LINE_COUNTERS: [(&str, &str); 13] = [
    (
        "packets",
        "valid packets of the session (data, heartbeat, end of session)",
    ),
    ("messages", "messages in them"),
    (
        "duplicates",
        "messages that another line (or an earlier copy) delivered first",
    ),
    (
        "out_of_order",
        "packets that came ahead of the next expected sequence",
    ),
    (
        "window_full",
        "out-of-order packets dropped because the window was full",
    ),
    ("malformed", "datagrams that are not valid MoldUDP64"),
    ("wrong_session", "packets of another session"),
    ("heartbeats", "heartbeat packets"),
    ("delivered", "messages this line delivered first"),
    (
        "line_gaps",
        "packets after a hole in this line's own sequence",
    ),
    (
        "socket_drops",
        "datagrams the kernel dropped for lack of socket buffer (SO_RXQ_OVFL)",
    ),
    (
        "healthy",
        "1 while the circuit breaker trusts the line, 0 when its gap rate is too high",
    ),
    (
        "gap_rate_ppm",
        "share of packets after a gap over the breaker window, parts per million",
    ),
];

/// Line names, in block order.
pub const LINES: [&str; 3] = ["a", "b", "recovery"];

const WORDS: usize = CHANNEL_COUNTERS.len() + 3 * LINE_COUNTERS.len();
const _: () = assert!(NAME_BYTES + WORDS * 8 <= CHANNEL_BLOCK);

/// Values of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelValues {
    /// Channel name.
    pub name: String,
    /// In `CHANNEL_COUNTERS` order.
    pub channel: [u64; CHANNEL_COUNTERS.len()],
    /// Per line, in `LINE_COUNTERS` order.
    pub lines: [[u64; LINE_COUNTERS.len()]; 3],
}

/// The counters path of a ring.
pub fn counters_path(ring: &Path) -> PathBuf {
    let mut s = ring.as_os_str().to_owned();
    s.push(".counters");
    PathBuf::from(s)
}

fn word_at(base: *const u8, off: usize) -> *const AtomicU64 {
    base.wrapping_add(off) as *const AtomicU64
}

/// The writer (the feed handler).
#[derive(Debug)]
pub struct CountersWriter {
    map: MmapMut,
    channels: usize,
}

impl CountersWriter {
    /// Creates the file for channels named `names`.
    pub fn create(path: &Path, names: &[String]) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        f.set_len((HEADER + names.len() * CHANNEL_BLOCK) as u64)?;
        // SAFETY: a file we just created; readers map it read-only and read words atomically.
        let mut map = unsafe { MmapMut::map_mut(&f) }?;
        map[8..12].copy_from_slice(&VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&(names.len() as u32).to_le_bytes());
        map[24..28].copy_from_slice(&std::process::id().to_le_bytes());
        for (i, n) in names.iter().enumerate() {
            let b = n.as_bytes();
            let len = b.len().min(NAME_BYTES);
            map[HEADER + i * CHANNEL_BLOCK..][..len].copy_from_slice(&b[..len]);
        }
        let w = CountersWriter {
            map,
            channels: names.len(),
        };
        w.word(0).store(MAGIC, Ordering::Release);
        Ok(w)
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.map.len());
        // SAFETY: inside the mapping owned by `self` and 8-aligned (checked above; the mapping
        // is page aligned); the borrow ends with `self`.
        unsafe { &*word_at(self.map.as_ptr(), off) }
    }

    /// Stores a channel's values and the update time.
    pub fn store(&self, channel: usize, v: &ChannelValues, now_ns: u64) {
        if channel >= self.channels {
            return;
        }
        let base = HEADER + channel * CHANNEL_BLOCK + NAME_BYTES;
        for (i, x) in v.channel.iter().enumerate() {
            self.word(base + i * 8).store(*x, Ordering::Relaxed);
        }
        for (l, line) in v.lines.iter().enumerate() {
            for (i, x) in line.iter().enumerate() {
                let off = base + (CHANNEL_COUNTERS.len() + l * LINE_COUNTERS.len() + i) * 8;
                self.word(off).store(*x, Ordering::Relaxed);
            }
        }
        self.word(16).store(now_ns, Ordering::Release);
    }
}

/// A reader (`feed-handler stat`, the gateway's `/metrics`).
#[derive(Debug)]
pub struct CountersReader {
    map: Mmap,
    channels: usize,
    path: PathBuf,
    /// The file mapped: (device, inode).
    id: (u64, u64),
}

impl CountersReader {
    /// Opens the file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("{}: {e} (is the feed handler running?)", path.display()))?;
        // SAFETY: read-only shared mapping, read only through atomic loads.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| format!("{}: {e}", path.display()))?;
        if map.len() < HEADER {
            return Err(format!("{}: not a counters file", path.display()));
        }
        // SAFETY: offset 0 is inside the mapping and aligned.
        let magic = unsafe { &*word_at(map.as_ptr(), 0) }.load(Ordering::Acquire);
        let version = u32::from_le_bytes(map[8..12].try_into().expect("4"));
        let channels = u32::from_le_bytes(map[12..16].try_into().expect("4")) as usize;
        if magic != MAGIC || version != VERSION || map.len() < HEADER + channels * CHANNEL_BLOCK {
            return Err(format!(
                "{}: not a counters file of version {VERSION}",
                path.display()
            ));
        }
        use std::os::unix::fs::MetadataExt;
        let m = f
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(CountersReader {
            map,
            channels,
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    /// Whether the file at this reader's path is another one now (the feed handler started
    /// again). A missing file is not. One `stat` call.
    pub fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) != self.id)
    }

    fn load(&self, off: usize) -> u64 {
        // SAFETY: callers stay inside the header and channel blocks that `open` checked exist;
        // offsets are multiples of 8.
        unsafe { &*word_at(self.map.as_ptr(), off) }.load(Ordering::Acquire)
    }

    /// When the writer last stored, ns since the epoch.
    pub fn updated_ns(&self) -> u64 {
        self.load(16)
    }
    /// The writer's pid.
    pub fn pid(&self) -> u32 {
        u32::from_le_bytes(self.map[24..28].try_into().expect("4"))
    }

    /// Every channel's values.
    pub fn read(&self) -> Vec<ChannelValues> {
        (0..self.channels)
            .map(|c| {
                let block = HEADER + c * CHANNEL_BLOCK;
                let name_bytes = &self.map[block..block + NAME_BYTES];
                let name =
                    String::from_utf8_lossy(name_bytes.split(|&b| b == 0).next().unwrap_or(&[]))
                        .into_owned();
                let base = block + NAME_BYTES;
                let mut v = ChannelValues {
                    name,
                    ..Default::default()
                };
                for i in 0..CHANNEL_COUNTERS.len() {
                    v.channel[i] = self.load(base + i * 8);
                }
                for l in 0..3 {
                    for i in 0..LINE_COUNTERS.len() {
                        v.lines[l][i] = self.load(
                            base + (CHANNEL_COUNTERS.len() + l * LINE_COUNTERS.len() + i) * 8,
                        );
                    }
                }
                v
            })
            .collect()
    }
}

/// The circuit breaker of one line: a sliding window of one-second buckets counting packets and
/// packets that followed a hole in the line's own sequence. The line turns unhealthy when the
/// share of such packets over the window passes the threshold (with at least 20 packets in the
/// window), and healthy again when the share is back at or below half the threshold.
#[derive(Debug, Clone)]
pub struct Breaker {
    buckets: Vec<(u64, u64, u64)>,
    threshold: f64,
    healthy: bool,
    line_next: u64,
}

impl Breaker {
    /// A breaker over `window_s` seconds at `threshold` (a share, 0..1).
    pub fn new(window_s: u64, threshold: f64) -> Self {
        Breaker {
            buckets: vec![(u64::MAX, 0, 0); window_s.max(1) as usize],
            threshold,
            healthy: true,
            line_next: 0,
        }
    }

    /// Counts a data packet `[first, end)` of this line at `now_ns`; returns true if it came
    /// after a hole in the line's own sequence.
    pub fn on_packet(&mut self, now_ns: u64, first: u64, end: u64) -> bool {
        let gap = self.line_next != 0 && first > self.line_next;
        self.line_next = self.line_next.max(end);
        let sec = now_ns / 1_000_000_000;
        let n = self.buckets.len();
        let b = &mut self.buckets[(sec % n as u64) as usize];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        b.1 += 1;
        b.2 += gap as u64;
        self.update(sec);
        gap
    }

    fn rate_at(&self, sec: u64) -> (u64, u64) {
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 + n > sec && b.0 <= sec)
            .fold((0, 0), |a, b| (a.0 + b.1, a.1 + b.2))
    }

    fn update(&mut self, sec: u64) {
        let (packets, gaps) = self.rate_at(sec);
        let rate = if packets == 0 {
            0.0
        } else {
            gaps as f64 / packets as f64
        };
        if self.healthy && packets >= 20 && rate > self.threshold {
            self.healthy = false;
        } else if !self.healthy && rate <= self.threshold / 2.0 {
            self.healthy = true;
        }
    }

    /// Re-evaluates at `now_ns` (the window slides even with no packets).
    pub fn tick(&mut self, now_ns: u64) {
        self.update(now_ns / 1_000_000_000);
    }
    /// Whether the line is trusted.
    pub fn healthy(&self) -> bool {
        self.healthy
    }
    /// The window's gap share, parts per million.
    pub fn rate_ppm(&self, now_ns: u64) -> u64 {
        let (p, g) = self.rate_at(now_ns / 1_000_000_000);
        (g * 1_000_000).checked_div(p).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_values_are_read_back_by_name_position() {
        let p = std::env::temp_dir().join(format!("counters-{}", std::process::id()));
        let w = CountersWriter::create(&p, &["nasdaq".into(), "bx".into()]).unwrap();
        let mut v = ChannelValues::default();
        v.channel[1] = 42;
        v.lines[2][0] = 7;
        v.lines[1][12] = 99;
        w.store(1, &v, 123);
        let r = CountersReader::open(&p).unwrap();
        let got = r.read();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].name.as_str(), got[1].name.as_str()),
            ("nasdaq", "bx")
        );
        assert_eq!(
            (got[1].channel[1], got[1].lines[2][0], got[1].lines[1][12]),
            (42, 7, 99)
        );
        assert_eq!(got[0].channel[1], 0);
        assert_eq!((r.updated_ns(), r.pid()), (123, std::process::id()));
        std::fs::remove_file(&p).unwrap();
    }

    /// A feed handler started again writes a new file: a reader of the old one can tell, and
    /// a missing file is no news.
    #[test]
    fn a_reader_tells_when_the_file_was_made_again() {
        let p = std::env::temp_dir().join(format!("counters-again-{}", std::process::id()));
        let w = CountersWriter::create(&p, &["nasdaq".into()]).unwrap();
        let r = CountersReader::open(&p).unwrap();
        assert!(!r.replaced());
        drop(w);
        std::fs::remove_file(&p).unwrap();
        assert!(!r.replaced(), "gone is not replaced");
        let _w = CountersWriter::create(&p, &["nasdaq".into()]).unwrap();
        assert!(r.replaced());
        assert!(!CountersReader::open(&p).unwrap().replaced());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn breaker_trips_on_gaps_and_recovers_when_clean() {
        let mut b = Breaker::new(60, 0.05);
        let s = 1_000_000_000u64;
        let mut seq = 1;
        // 100 clean packets in the first second
        for _ in 0..100 {
            assert!(!b.on_packet(0, seq, seq + 1));
            seq += 1;
        }
        assert!(b.healthy());
        // then every 5th packet follows a hole: 20% > 5%
        for i in 0..100 {
            if i % 5 == 0 {
                seq += 3;
            }
            b.on_packet(s, seq, seq + 1);
            seq += 1;
        }
        assert!(!b.healthy());
        assert!(b.rate_ppm(s) > 50_000);
        // a clean minute later the window holds no gaps
        for _ in 0..100 {
            b.on_packet(62 * s, seq, seq + 1);
            seq += 1;
        }
        assert!(b.healthy());
        assert_eq!(b.rate_ppm(62 * s), 0);
    }
}
