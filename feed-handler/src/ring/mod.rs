//! The shared-memory ring: one writer process publishes records; any number of reader processes
//! attach by name and read them without ever slowing the writer. Layout and publish rule:
//! [`layout`]. The topology is in the types: [`RingWriter`] (one, it creates the file) and
//! [`RingReader`] (many, read-only mappings). A reader with nothing to read can sleep until the
//! writer publishes through a [`Doorbell`].

pub mod doorbell;
pub mod layout;

use core::sync::atomic::{AtomicU64, Ordering, fence};
use layout::*;
use memmap2::{Mmap, MmapMut};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub use doorbell::Doorbell;

/// Where the ring's header keeps its doorbell words.
pub const BELL: doorbell::Bell = doorbell::Bell {
    len: HEADER_SIZE,
    head: HEAD_OFFSET,
    wake: WAKE_OFFSET,
    sleepers: SLEEPERS_OFFSET,
};
pub use layout::{JournalState, Kind, Record};

/// Where ring files live unless a path is given.
pub const SHM_DIR: &str = "/dev/shm";

/// The path of the ring called `name`: itself if it contains a `/`, else `/dev/shm/<name>`.
pub fn ring_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new(SHM_DIR).join(name)
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Why a ring cannot be created or attached.
#[derive(Debug)]
pub enum RingError {
    /// The file could not be created, opened or mapped.
    Io(PathBuf, std::io::Error),
    /// The file is not a ring of this layout.
    Layout(PathBuf, String),
    /// Records `from..to` can no longer be read: the ring overwrote them before this reader
    /// read them, and the journal does not hold them (`journal` says why). The reader has
    /// moved on: its next read is at `to`.
    Lost {
        /// The ring file.
        path: PathBuf,
        /// The first record lost.
        from: u64,
        /// Where the reader goes on.
        to: u64,
        /// The journal's state (off or stopped).
        journal: JournalState,
        /// Positions below this are in the journal.
        journal_end: u64,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::Io(p, e) => write!(f, "ring {}: {e}", p.display()),
            RingError::Layout(p, s) => write!(f, "ring {}: {s}", p.display()),
            RingError::Lost {
                path,
                from,
                to,
                journal,
                journal_end,
            } => {
                let why = match journal {
                    JournalState::Off => "the feed handler keeps no journal".to_string(),
                    _ => format!("the journal stopped at record {journal_end}"),
                };
                write!(
                    f,
                    "ring {}: records {from}..{to} are lost to this reader: the ring overwrote \
                     them before it read them, and {why}; it goes on from {to}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for RingError {}

/// The atomic word at `offset` of a mapping that starts at `base`, borrowed for as long as the
/// owner of the mapping.
///
/// # Safety
/// `base` must be the start of a live mapping of more than `offset + 8` bytes owned by `_owner`,
/// and `offset` a multiple of 8.
unsafe fn word<T: ?Sized>(_owner: &T, base: *const u8, offset: usize) -> &AtomicU64 {
    // SAFETY: per the contract, the address is inside the mapping and 8-aligned (mappings are
    // page aligned); the mapping lives as long as `_owner`, which the returned borrow is tied
    // to. Shared words are only ever accessed atomically by every process.
    unsafe { &*(base.add(offset) as *const AtomicU64) }
}

/// The single writer.
#[derive(Debug)]
pub struct RingWriter {
    map: MmapMut,
    base: *const u8,
    path: PathBuf,
    mask: u64,
    head: u64,
    generation: u64,
    /// The head when sleeping readers were last looked for.
    rung: u64,
}

impl RingWriter {
    /// Creates (or replaces) the ring file with `capacity` slots (rounded up to a power of
    /// two, at least 2).
    pub fn create(path: impl AsRef<Path>, capacity: u64) -> Result<Self, RingError> {
        let path = path.as_ref().to_path_buf();
        let capacity = capacity.max(2).next_power_of_two();
        let size = HEADER_SIZE as u64 + capacity * SLOT_SIZE as u64;
        let io = |e| RingError::Io(path.clone(), e);
        // A new inode: readers still mapping an old ring keep their old file.
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(size).map_err(io)?;
        // SAFETY: the file was just created by us with this size; other processes only map it
        // read-only and the layout makes every shared word an atomic. MAP_POPULATE faults every
        // page in now, not on the writer's first lap (a fault there is a latency spike, and on a
        // virtual machine memory touched for the first time is slow).
        let mut map =
            unsafe { memmap2::MmapOptions::new().populate().map_mut(&file) }.map_err(io)?;
        map[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        map[16..24].copy_from_slice(&capacity.to_le_bytes());
        let generation = now_ns();
        map[24..32].copy_from_slice(&generation.to_le_bytes());
        map[32..36].copy_from_slice(&std::process::id().to_le_bytes());
        let base = map.as_ptr();
        let w = RingWriter {
            mask: capacity - 1,
            head: 0,
            path,
            map,
            base,
            generation,
            rung: 0,
        };
        // Every slot's stamp starts at 0, which no position's complete stamp (2p+2) matches.
        w.word(0).store(MAGIC, Ordering::Release);
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Slots.
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }
    /// The generation (creation time) written in the header.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The next position to be written.
    pub fn head(&self) -> u64 {
        self.head
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.map.len());
        // SAFETY: `base` is the start of `self.map`, which `self` owns; every offset used is a
        // multiple of 8 inside the header or a slot (the slot index is masked to the capacity).
        unsafe { word(self, self.base, offset) }
    }

    fn slot_word(&self, pos: u64, w: usize) -> &AtomicU64 {
        self.word(HEADER_SIZE + (pos & self.mask) as usize * SLOT_SIZE + w * 8)
    }

    /// Publishes one record at the next position; returns that position. Never blocks.
    #[inline]
    pub fn publish(&mut self, rec: &Record) -> u64 {
        self.publish_words(&rec.to_words())
    }

    /// Publishes a record given as its slot words (word 0, the stamp, is ignored).
    #[inline]
    pub fn publish_words(&mut self, words: &[u64; SLOT_WORDS]) -> u64 {
        let p = self.head;
        self.slot_word(p, 0).store(2 * p + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, &w) in words.iter().enumerate().skip(1) {
            self.slot_word(p, i).store(w, Ordering::Relaxed);
        }
        self.slot_word(p, 0).store(2 * p + 2, Ordering::Release);
        self.head = p + 1;
        self.word(HEAD_OFFSET).store(self.head, Ordering::Release);
        p
    }

    /// Wakes the readers sleeping in [`Doorbell::wait`], if anything was published since the
    /// last call. Call it after each batch: it costs a fence and a load while no reader sleeps,
    /// and one `futex` wake call when some do. Never waits.
    #[inline]
    pub fn wake_readers(&mut self) {
        let mut rung = self.rung;
        doorbell::ring(
            self.head,
            &mut rung,
            self.word(WAKE_OFFSET),
            self.word(SLEEPERS_OFFSET),
        );
        self.rung = rung;
    }

    /// Records that positions below `end` are in the journal file.
    pub fn set_journal_end(&mut self, end: u64) {
        self.word(JOURNAL_END_OFFSET).store(end, Ordering::Release);
    }

    /// Says whether the journal will hold what the ring drops (a new ring says
    /// [`JournalState::Writing`]). Set `journal_end` first: a reader that sees
    /// [`JournalState::Stopped`] then sees where it stopped.
    pub fn set_journal_state(&mut self, state: JournalState) {
        self.word(JOURNAL_STATE_OFFSET)
            .store(state as u64, Ordering::Release);
    }
}

// SAFETY: `base` points into `map`, which moves with the struct (the mapping itself does not
// move); the writer is used from one thread at a time (it needs `&mut self` to publish).
unsafe impl Send for RingWriter {}

impl Drop for RingWriter {
    fn drop(&mut self) {
        let _ = self.map.flush_async();
    }
}

// SAFETY: `base` points into `map`, which moves with the struct; the mapping is read-only and
// only read through atomics.
unsafe impl Send for RingReader {}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The record at the reader's position.
    Record(Record),
    /// Nothing new yet.
    Empty,
    /// The writer has lapped the reader: records from `position` on are no longer in the ring
    /// (the oldest still there is `oldest`). The reader's position is unchanged.
    Overrun {
        /// The reader's position.
        position: u64,
        /// The oldest position still in the ring.
        oldest: u64,
    },
}

/// A reader in any process.
#[derive(Debug)]
pub struct RingReader {
    map: Mmap,
    file: File,
    base: *const u8,
    path: PathBuf,
    mask: u64,
    info: HeaderInfo,
    pos: u64,
}

impl RingReader {
    /// Attaches to the ring file at `path`, positioned at the current head (new records only).
    pub fn attach(path: impl AsRef<Path>) -> Result<Self, RingError> {
        let path = path.as_ref().to_path_buf();
        let io = |e| RingError::Io(path.clone(), e);
        let file = OpenOptions::new().read(true).open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_SIZE as u64 {
            return Err(RingError::Layout(
                path,
                format!("{len} bytes is shorter than a ring header"),
            ));
        }
        // SAFETY: a read-only shared mapping; the writer changes it only through atomics (see
        // the layout), and this process never writes to it.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked above) and offset 0 is aligned.
        let magic = unsafe { word(&map, map.as_ptr(), 0) }.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(RingError::Layout(
                path,
                "not a ring (bad magic), or still being created".into(),
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().expect("8 bytes"));
        let info = HeaderInfo {
            version: u32_at(8),
            slot_size: u32_at(12),
            capacity: u64_at(16),
            generation: u64_at(24),
            writer_pid: u32_at(32),
        };
        if info.version != LAYOUT_VERSION {
            return Err(RingError::Layout(
                path,
                format!(
                    "layout version {} (this reader knows {LAYOUT_VERSION})",
                    info.version
                ),
            ));
        }
        if info.slot_size as usize != SLOT_SIZE || !info.capacity.is_power_of_two() {
            return Err(RingError::Layout(
                path,
                format!(
                    "slot size {} / capacity {} not supported",
                    info.slot_size, info.capacity
                ),
            ));
        }
        if len < HEADER_SIZE as u64 + info.capacity * SLOT_SIZE as u64 {
            return Err(RingError::Layout(
                path,
                format!(
                    "file of {len} bytes is too short for {} slots",
                    info.capacity
                ),
            ));
        }
        let base = map.as_ptr();
        let mut r = RingReader {
            mask: info.capacity - 1,
            info,
            path,
            map,
            file,
            base,
            pos: 0,
        };
        r.pos = r.head();
        Ok(r)
    }

    /// A doorbell to sleep on until the writer publishes (it maps the header read-write:
    /// the caller needs write permission on the ring file).
    pub fn doorbell(&self) -> Result<Doorbell, RingError> {
        Doorbell::open(&self.file, &self.path, BELL)
            .map_err(|e| RingError::Io(self.path.clone(), e))
    }

    /// The header.
    pub fn info(&self) -> HeaderInfo {
        self.info
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The next position this reader will read.
    pub fn position(&self) -> u64 {
        self.pos
    }
    /// Moves the reader (to replay from the journal, or to skip ahead).
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.map.len());
        // SAFETY: `base` is the start of `self.map`, which `self` owns and which attach checked
        // holds the header and every slot; offsets are multiples of 8 inside it.
        unsafe { word(self, self.base, offset) }
    }
    /// The writer's head: the next position it will write.
    pub fn head(&self) -> u64 {
        self.word(HEAD_OFFSET).load(Ordering::Acquire)
    }
    /// Readers asleep on the doorbell now (any process). It stays above 0 after a reader was
    /// killed in its sleep; the writer then makes one needless wake-up call a batch.
    pub fn sleepers(&self) -> u64 {
        self.word(SLEEPERS_OFFSET).load(Ordering::Relaxed)
    }
    /// Positions below this are in the journal.
    pub fn journal_end(&self) -> u64 {
        self.word(JOURNAL_END_OFFSET).load(Ordering::Acquire)
    }
    /// Whether the journal will hold what the ring drops.
    pub fn journal_state(&self) -> JournalState {
        JournalState::from_word(self.word(JOURNAL_STATE_OFFSET).load(Ordering::Acquire))
    }
    /// Whether the file at this reader's path is another ring now (the writer was started
    /// again: a new file, a new generation). A missing file is not (the writer stopped and
    /// its files were removed: nothing to follow yet). Two `stat` calls.
    pub fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(now), Ok(mine)) => (now.dev(), now.ino()) != (mine.dev(), mine.ino()),
            _ => false,
        }
    }
    /// The oldest position still in the ring.
    pub fn oldest(&self) -> u64 {
        self.head().saturating_sub(self.info.capacity)
    }

    fn slot_word(&self, pos: u64, w: usize) -> &AtomicU64 {
        self.word(HEADER_SIZE + (pos & self.mask) as usize * SLOT_SIZE + w * 8)
    }

    /// Reads the record at the reader's position and advances past it.
    #[inline]
    pub fn read(&mut self) -> Read {
        let p = self.pos;
        let head = self.head();
        if p >= head {
            return Read::Empty;
        }
        let overrun = Read::Overrun {
            position: p,
            oldest: head.saturating_sub(self.info.capacity),
        };
        if head - p > self.info.capacity {
            return overrun;
        }
        let done = 2 * p + 2;
        if self.slot_word(p, 0).load(Ordering::Acquire) != done {
            return overrun;
        }
        let mut w = [0u64; SLOT_WORDS];
        for (i, v) in w.iter_mut().enumerate().skip(1) {
            *v = self.slot_word(p, i).load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        if self.slot_word(p, 0).load(Ordering::Relaxed) != done {
            return overrun;
        }
        match Record::from_words(p, &w) {
            Some(r) => {
                self.pos = p + 1;
                Read::Record(r)
            }
            // A complete stamp over words that are not a record cannot come from our writer.
            None => overrun,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ring-{name}-{}", std::process::id()))
    }

    #[test]
    fn header_fields_sit_at_their_documented_offsets() {
        let p = tmp("hdr");
        let mut w = RingWriter::create(&p, 5).unwrap();
        assert_eq!(w.capacity(), 8);
        w.publish(&Record::gap(1, 2, 3, 4));
        w.set_journal_end(1);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE + 8 * SLOT_SIZE);
        assert_eq!(&bytes[0..8], b"ITCHRNG1");
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            LAYOUT_VERSION
        );
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 128);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 8);
        assert_eq!(
            u32::from_le_bytes(bytes[32..36].try_into().unwrap()),
            std::process::id()
        );
        assert_eq!(
            u64::from_le_bytes(bytes[128..136].try_into().unwrap()),
            1,
            "head"
        );
        assert_eq!(
            u64::from_le_bytes(bytes[256..264].try_into().unwrap()),
            1,
            "journal_end"
        );
        assert_eq!(
            u64::from_le_bytes(bytes[264..272].try_into().unwrap()),
            JournalState::Writing as u64,
            "journal_state of a new ring"
        );
        w.set_journal_state(JournalState::Stopped);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(u64::from_le_bytes(bytes[264..272].try_into().unwrap()), 2);
        let r = RingReader::attach(&p).unwrap();
        assert_eq!(r.journal_state(), JournalState::Stopped);
        assert_eq!(
            &bytes[320..336],
            &[0u8; 16],
            "wake and sleepers: no one sleeps"
        );
        let slot0 = HEADER_SIZE;
        assert_eq!(
            u64::from_le_bytes(bytes[slot0..slot0 + 8].try_into().unwrap()),
            2,
            "stamp 2p+2"
        );
        assert_eq!(bytes[slot0 + 8], Kind::Gap as u8);
        assert_eq!(
            u64::from_le_bytes(bytes[slot0 + 16..slot0 + 24].try_into().unwrap()),
            2,
            "seq"
        );
        assert_eq!(
            u64::from_le_bytes(bytes[slot0 + 40..slot0 + 48].try_into().unwrap()),
            3,
            "gap count"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn readers_get_every_record_and_detect_being_lapped() {
        let p = tmp("lap");
        let mut w = RingWriter::create(&p, 8).unwrap();
        let mut r = RingReader::attach(&p).unwrap();
        assert_eq!(r.read(), Read::Empty);
        for s in 0..5u64 {
            w.publish(&Record::message(0, s, 0, 0, &s.to_le_bytes()).unwrap());
        }
        for s in 0..5u64 {
            let Read::Record(rec) = r.read() else {
                panic!()
            };
            assert_eq!(
                (rec.position, rec.seq, rec.data()),
                (s, s, &s.to_le_bytes()[..])
            );
        }
        assert_eq!(r.read(), Read::Empty);
        for s in 5..20u64 {
            w.publish(&Record::message(0, s, 0, 0, &[]).unwrap());
        }
        assert_eq!(
            r.read(),
            Read::Overrun {
                position: 5,
                oldest: 12
            }
        );
        assert_eq!(r.position(), 5, "an overrun does not move the reader");
        r.seek(12);
        let Read::Record(rec) = r.read() else {
            panic!()
        };
        assert_eq!(rec.seq, 12);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn attach_refuses_what_is_not_a_ring() {
        let p = tmp("bad");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(matches!(RingReader::attach(&p), Err(RingError::Layout(..))));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(RingReader::attach(&p), Err(RingError::Layout(..))));
        assert!(matches!(
            RingReader::attach(tmp("missing")),
            Err(RingError::Io(..))
        ));
        std::fs::remove_file(&p).unwrap();
    }

    fn wake_count(p: &Path) -> u64 {
        let b = std::fs::read(p).unwrap();
        u64::from_le_bytes(b[WAKE_OFFSET..WAKE_OFFSET + 8].try_into().unwrap())
    }

    #[test]
    fn the_doorbell_wakes_a_sleeping_reader_and_is_not_rung_for_nobody() {
        let p = tmp("bell");
        let mut w = RingWriter::create(&p, 8).unwrap();
        let r = RingReader::attach(&p).unwrap();
        let bell = r.doorbell().unwrap();
        let watch = r.doorbell().unwrap();
        // no one asleep: publishing and ringing leave `wake` alone (no syscall)
        w.publish(&Record::gap(1, 2, 3, 4));
        w.wake_readers();
        assert_eq!(wake_count(&p), 0);
        // the head is already past the position: no sleep at all
        assert!(!bell.wait(0, 600_000_000_000));
        assert_eq!(watch.sleepers(), 0);
        // a reader asleep at the head wakes when the writer rings, long before its timeout
        let pos = w.head();
        let sleeper = std::thread::spawn(move || bell.wait(pos, 600_000_000_000));
        while watch.sleepers() == 0 {
            std::hint::spin_loop();
        }
        assert_eq!(r.sleepers(), 1, "seen by any reader of the ring");
        w.publish(&Record::gap(1, 5, 1, 4));
        w.wake_readers();
        assert_eq!(wake_count(&p), 1);
        assert!(sleeper.join().unwrap(), "it slept, and woke");
        assert_eq!((watch.sleepers(), r.sleepers()), (0, 0));
        // nothing new since: ringing again does nothing
        w.wake_readers();
        assert_eq!(wake_count(&p), 1);
        std::fs::remove_file(&p).unwrap();
    }
}
